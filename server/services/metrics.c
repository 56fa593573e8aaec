/*
 * MetricsService: RecordMetrics here, the queries in metrics_query.c, the
 * stream in metrics/watch.c.
 */
#include "services/metrics.h"

#include "metrics/ingest.h"

int metrics_service_bind(struct rpc_server *server, struct db_pool *pool, const struct metrics_service_extra *extra,
                         struct mon_error *err)
{
	struct monitoring_v1_metrics_service_handlers handlers = {
	        .watch_metrics = extra ? extra->watch_metrics : NULL,
	};
	metrics_query_handlers(&handlers);
	return monitoring_v1_metrics_service_bind(server, &handlers, pool, 0, err);
}
