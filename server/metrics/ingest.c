/* Performance metric ingest (being written). */
#include "metrics/ingest.h"

int metrics_check_point(const Monitoring__V1__MetricPoint *p, int32_t index, int64_t now_ms, int64_t oldest_ms,
                        struct metrics_point_error *errs, size_t cap, size_t *n)
{
	(void)p;
	(void)index;
	(void)now_ms;
	(void)oldest_ms;
	(void)errs;
	(void)cap;
	(void)n;
	return 0;
}

int metrics_write(struct db_pool *pool, int64_t timeout_ms, Monitoring__V1__MetricPoint *const *points, size_t count,
                  struct metrics_write_result *out, struct mon_error *err)
{
	(void)pool;
	(void)timeout_ms;
	(void)points;
	(void)count;
	(void)out;
	return mon_error_set(err, MON_EUNIMPL, "RecordMetrics is not built yet");
}
