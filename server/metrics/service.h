/*
 * MetricsService (proto/monitoring/v1/metrics.proto): performance metric
 * ingest (RecordMetrics, metrics/service.c over metrics/ingest.h), the
 * stored-point queries and the data model's performance queries
 * (metrics/query.c) and the live stream (WatchMetrics, metrics/watch.h).
 * The user activity and session RPCs of the same service are not built yet
 * and answer UNIMPLEMENTED.
 */
#ifndef MON_SERVER_METRICS_SERVICE_H
#define MON_SERVER_METRICS_SERVICE_H

#include "alerts/engine.h"
#include "db/db.h"
#include "metrics/watch.h"
#include "monitoring/v1/metrics.mon-server.h"
#include "rpc/server.h"
#include "util/error.h"

/*
 * What MetricsService's handlers work with: rpc_ctx_user() of every one of
 * them, read through metrics_service_of. The app owns it; every member must
 * outlive the RPC server.
 */
struct metrics_service {
	struct db_pool *pool;
	struct alerts_engine *alerts_engine; /* told which metrics got points; NULL: nobody is */
	struct stream_hub *watch_hub;        /* the Watch stream's hub */
	int raw_retention_days; /* metrics-raw-retention-days: RecordMetrics refuses older points, RAW cannot reach
	                           further; 0: METRICS_RAW_RETENTION_DAYS */
	int rollup_5min_days;   /* metrics-5min-retention-days: AUTO picks no rollup beyond it; 0: 90 */
	int rollup_hourly_days; /* metrics-hourly-retention-days; 0: 365 */
};

/* The service of a MetricsService call. */
static inline const struct metrics_service *metrics_service_of(struct rpc_ctx *ctx)
{
	return rpc_ctx_user(ctx);
}

/*
 * Binds monitoring.v1.MetricsService to server (before rpc_server_start)
 * with svc as every handler's user pointer; fills in svc's retention
 * defaults. Returns 0 or the binding's error.
 */
int metrics_service_bind(struct rpc_server *server, struct metrics_service *svc, struct mon_error *err) MON_MUST_CHECK;

/*
 * Fills the query handlers of metrics/query.c into h: ListMetricPoints,
 * ListMetricNames, QueryMetrics, GetPerformanceSummary,
 * ListSlowestEndpoints and GetPerformanceTrend.
 */
void metrics_query_handlers(struct monitoring_v1_metrics_service_handlers *h);

#endif
