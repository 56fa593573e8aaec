/* AlertsService alert operations: not built yet. */
#include "services/alerts.h"

void alerts_alert_handlers(struct monitoring_v1_alerts_service_handlers *h)
{
	(void)h;
}
