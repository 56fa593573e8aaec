/* AlertsService rules, escalation policies and silences: not built yet. */
#include "services/alerts.h"

void alerts_rule_handlers(struct monitoring_v1_alerts_service_handlers *h)
{
	(void)h;
}
