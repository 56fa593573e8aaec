/*
 * MetricsService (proto/monitoring/v1/metrics.proto): performance metric
 * ingest (RecordMetrics, metrics/ingest.h), the stored-point queries and
 * the data model's performance queries (metrics/query.c) and the
 * live stream (WatchMetrics, metrics/watch.h). The user activity and
 * session RPCs of the same service are not built yet and answer
 * UNIMPLEMENTED.
 */
#ifndef MON_SERVER_METRICS_SERVICE_H
#define MON_SERVER_METRICS_SERVICE_H

#include "db/db.h"
#include "monitoring/v1/metrics.mon-server.h"
#include "rpc/server.h"
#include "util/error.h"

/* Handlers made by other modules; NULL members answer UNIMPLEMENTED. */
struct metrics_service_extra {
	monitoring_v1_metrics_service_watch_metrics_fn watch_metrics;
	int raw_retention_days; /* metrics-raw-retention-days; 0: METRICS_RAW_RETENTION_DAYS */
	int rollup_5min_days;   /* metrics-5min-retention-days; 0: 90 */
	int rollup_hourly_days; /* metrics-hourly-retention-days; 0: 365 */
};

/*
 * Raw retention in days as bound (the setting metrics-raw-retention-days):
 * RecordMetrics refuses older points and RAW queries cannot reach further.
 */
int metrics_raw_retention_days(void);
/* The rollups' retention in days as bound: QueryMetrics' AUTO does not pick a rollup beyond it. */
int metrics_5min_retention_days(void);
int metrics_hourly_retention_days(void);

/*
 * Binds monitoring.v1.MetricsService to server (before rpc_server_start).
 * rpc_ctx_user() of every handler, extra ones included, is pool, which
 * must outlive the server.
 */
int metrics_service_bind(struct rpc_server *server, struct db_pool *pool, const struct metrics_service_extra *extra,
                         struct mon_error *err) MON_MUST_CHECK;

/*
 * Fills the query handlers of metrics/query.c into h:
 * ListMetricPoints, ListMetricNames, QueryMetrics, GetPerformanceSummary,
 * ListSlowestEndpoints and GetPerformanceTrend. Their user pointer is the
 * db_pool.
 */
void metrics_query_handlers(struct monitoring_v1_metrics_service_handlers *h);

#endif
