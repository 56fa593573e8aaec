/*
 * MetricsService queries: not built yet; every handler left NULL answers
 * UNIMPLEMENTED.
 */
#include "services/metrics.h"

void metrics_query_handlers(struct monitoring_v1_metrics_service_handlers *h)
{
	(void)h;
}
