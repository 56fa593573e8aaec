/*
 * Maintenance of the performance metric tables (see rollup.h). A run holds
 * the session advisory lock METRICS_ROLLUP_LOCK on one pooled connection
 * and, on that connection:
 *   1. makes partitions ahead (mon_maintain_partitions);
 *   2. lists the dirty 5-minute buckets: those named by the ingest log rows
 *      above the watermark, or, when tb_metric_ingest_log_intact has no row
 *      (the log was emptied by a crash, or this is the first run), every
 *      bucket within raw retention (listed without scanning the points);
 *   3. re-aggregates them set-based, one time range per transaction
 *      (runs of dirty buckets within 3 hours each): one INSERT ...
 *      SELECT ... GROUP BY makes the range's 5-minute rows from the raw
 *      points and deletes those left without points, a second makes the
 *      hours touching the range from the 5-minute rows (sums and counts,
 *      so hourly averages are exact), then both summed over endpoints
 *      (tb_performance_metric_*_by_name); a full rebuild goes in ascending time
 *      and records its progress (tb_metric_rollup_progress, which queries
 *      read through mon_metric_rollup_valid_before); the last transaction
 *      moves the watermark (and marks the log intact);
 *   4. applies retention: drops whole partitions past each table's age,
 *      deletes old rows parked in DEFAULT partitions and ingest log rows
 *      that are aggregated and older than the replay window, in batches.
 * The thread does steps 1 and 4's partition work at most once a minute
 * (HOUSEKEEPING_INTERVAL_MS), not every run: they are needed daily at
 * most, and cost more than an idle rollup pass (pg_partman's maintenance).
 * Buckets older than raw retention are never re-aggregated: their points
 * may be gone already, and their rollups are then the only record. The
 * session runs with lock_timeout 1s, so a partition to make or drop never
 * queues the table's queries behind a long one; the next run tries again.
 */
#include "metrics/rollup.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics/ingest.h"
#include "util/clock.h"
#include "util/log.h"

#define ACQUIRE_TIMEOUT_MS 10000
#define HELPER_ACQUIRE_TIMEOUT_MS 200 /* a second connection for a rebuild, if one is free soon */
#define DEFAULT_INTERVAL_MS 10000
#define DEFAULT_RAW_DAYS 7
#define DEFAULT_5MIN_DAYS 90
#define DEFAULT_HOURLY_DAYS 365
#define DEFAULT_REPLAY_WINDOW_S 600
#define RETENTION_DAYS_MAX 36500
#define BUCKET_S 300
#define HOUR_S 3600
#define CHUNK_SPAN_S (3 * HOUR_S) /* time range re-aggregated per transaction, at most, within a UTC day */
#define REBUILD_WORKERS 2         /* connections re-aggregating the days of a full rebuild at once */
#define GAP_BUCKETS 12            /* clean buckets between dirty ones taken into one range, at most */
#define DELETE_BATCH 5000         /* rows per retention DELETE */
#define FIRST_RUN_DELAY_MS 1000
#define MIN_WAIT_MS 100                /* between the end of a run and the start of the next, at least */
#define HOUSEKEEPING_INTERVAL_MS 60000 /* the thread makes and drops partitions at most this often */

/* The effective settings of a run. */
struct run_settings {
	int raw_days;
	int rollup_5min_days;
	int rollup_hourly_days;
	int replay_window_s;
};

static int settings_of(const struct metrics_maintenance_config *cfg, struct run_settings *out, struct mon_error *err)
{
	if (cfg == NULL || cfg->pool == NULL)
		return mon_error_set(err, MON_EINVAL, "metric maintenance: no database pool");
	out->raw_days = cfg->raw_retention_days > 0 ? cfg->raw_retention_days : DEFAULT_RAW_DAYS;
	out->rollup_5min_days = cfg->rollup_5min_days > 0 ? cfg->rollup_5min_days : DEFAULT_5MIN_DAYS;
	out->rollup_hourly_days = cfg->rollup_hourly_days > 0 ? cfg->rollup_hourly_days : DEFAULT_HOURLY_DAYS;
	out->replay_window_s = cfg->replay_window_s > 0 ? cfg->replay_window_s : DEFAULT_REPLAY_WINDOW_S;
	if (out->raw_days > RETENTION_DAYS_MAX || out->rollup_5min_days > RETENTION_DAYS_MAX ||
	    out->rollup_hourly_days > RETENTION_DAYS_MAX)
		return mon_error_set(err, MON_EINVAL, "metric retention: at most %d days", RETENTION_DAYS_MAX);
	/* Hours are rebuilt from 5-minute rows, and 5-minute rows from points, for buckets within raw retention. */
	if (out->rollup_5min_days < out->raw_days)
		return mon_error_set(err, MON_EINVAL,
		                     "metric 5-minute retention: must be at least the raw retention (%d days)",
		                     out->raw_days);
	if (out->rollup_hourly_days < out->rollup_5min_days)
		return mon_error_set(err, MON_EINVAL,
		                     "metric hourly retention: must be at least the 5-minute retention (%d days)",
		                     out->rollup_5min_days);
	return 0;
}

/* Runs sql and reads the first column of its one row as an integer into *out (0 when NULL). */
static int query_int(struct db_conn *conn, const char *sql, int param_count, const char *const *params, int64_t *out,
                     struct mon_error *err)
{
	struct db_result *res = NULL;
	int rc = db_exec(conn, sql, param_count, params, &res, err);
	if (rc != 0)
		return rc;
	if (db_result_rows(res) != 1) {
		rc = mon_error_set(err, MON_EINTERNAL, "metric maintenance: expected one row");
		goto out;
	}
	*out = db_result_is_null(res, 0, 0) ? 0 : strtoll(db_result_value(res, 0, 0), NULL, 10);
out:
	db_result_free(res);
	return rc;
}

/* A sorted list of 5-minute bucket starts (epoch seconds), capped. */
struct bucket_list {
	int64_t *v;
	size_t n;
	size_t cap;
};

/*
 * Reads the buckets query's rows (epoch seconds, ascending) into list. More
 * rows than its cap is MON_ENOMEM: the queries bound buckets to raw
 * retention, so that means a bug, not data.
 */
static int read_buckets(struct db_conn *conn, const char *sql, int param_count, const char *const *params,
                        struct bucket_list *list, struct mon_error *err)
{
	struct db_result *res = NULL;
	int rc = db_exec(conn, sql, param_count, params, &res, err);
	if (rc != 0)
		return rc;
	size_t rows = (size_t)db_result_rows(res);
	if (rows > list->cap) {
		rc = mon_error_set(err, MON_ENOMEM, "metric rollup: %zu dirty buckets, more than the cap of %zu", rows,
		                   list->cap);
		goto out;
	}
	for (size_t i = 0; i < rows; i++)
		list->v[i] = strtoll(db_result_value(res, (int)i, 0), NULL, 10);
	list->n = rows;
out:
	db_result_free(res);
	return rc;
}

static int64_t floor_div(int64_t a, int64_t b)
{
	return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/*
 * The statements of one chunk, set-based over a whole time range: $1 and
 * $2 are the range [lo, hi) in epoch seconds, whole 5-minute buckets. The
 * 5-minute rows are the seed's continuous aggregate (AVG, SUM grouped by
 * bucket, metric_name, endpoint) plus the sums and counts behind each
 * average (the averages are sum / count: exactly what AVG computes); a row
 * changes only when its sums do. Rows of the range left without points are
 * deleted by the same statement (an anti-join against the aggregate). The
 * hourly rows add up the 5-minute sums and counts of the hours touching the
 * range, the same way.
 */
#define ROLLUP_COLUMNS                                                                                                 \
	"bucket, metric_name, endpoint, avg_p50, avg_p95, avg_p99, total_requests, total_errors, avg_error_rate,"      \
	" data_points, p50_sum, p50_n, p95_sum, p95_n, p99_sum, p99_n, error_rate_sum, error_rate_n"
#define ROLLUP_VALUES                                                                                                  \
	"bucket, metric_name, endpoint, p50_sum / nullif(p50_n, 0), p95_sum / nullif(p95_n, 0),"                       \
	" p99_sum / nullif(p99_n, 0), total_requests, total_errors, error_rate_sum / nullif(error_rate_n, 0),"         \
	" data_points, p50_sum, p50_n, p95_sum, p95_n, p99_sum, p99_n, error_rate_sum, error_rate_n"
#define ROLLUP_UPSERT                                                                                                  \
	" ON CONFLICT (bucket, metric_name, endpoint) DO UPDATE SET avg_p50 = EXCLUDED.avg_p50,"                       \
	" avg_p95 = EXCLUDED.avg_p95, avg_p99 = EXCLUDED.avg_p99, total_requests = EXCLUDED.total_requests,"           \
	" total_errors = EXCLUDED.total_errors, avg_error_rate = EXCLUDED.avg_error_rate,"                             \
	" data_points = EXCLUDED.data_points, p50_sum = EXCLUDED.p50_sum, p50_n = EXCLUDED.p50_n,"                     \
	" p95_sum = EXCLUDED.p95_sum, p95_n = EXCLUDED.p95_n, p99_sum = EXCLUDED.p99_sum, p99_n = EXCLUDED.p99_n,"     \
	" error_rate_sum = EXCLUDED.error_rate_sum, error_rate_n = EXCLUDED.error_rate_n"                              \
	" WHERE (r.data_points, r.total_requests, r.total_errors, r.p50_sum, r.p50_n, r.p95_sum, r.p95_n,"             \
	" r.p99_sum, r.p99_n, r.error_rate_sum, r.error_rate_n) IS DISTINCT FROM (EXCLUDED.data_points,"               \
	" EXCLUDED.total_requests, EXCLUDED.total_errors, EXCLUDED.p50_sum, EXCLUDED.p50_n, EXCLUDED.p95_sum,"         \
	" EXCLUDED.p95_n, EXCLUDED.p99_sum, EXCLUDED.p99_n, EXCLUDED.error_rate_sum, EXCLUDED.error_rate_n)"

static const char rebuild_5min_sql[] =
        "WITH a AS MATERIALIZED (SELECT date_bin('5 minutes', time, TIMESTAMPTZ 'epoch') AS bucket, metric_name,"
        "  endpoint, sum(request_count) AS total_requests, sum(error_count) AS total_errors, count(*) AS data_points,"
        "  sum(p50) AS p50_sum, count(p50) AS p50_n, sum(p95) AS p95_sum, count(p95) AS p95_n, sum(p99) AS p99_sum,"
        "  count(p99) AS p99_n, sum(error_rate) AS error_rate_sum, count(error_rate) AS error_rate_n"
        "  FROM tb_performance_metric WHERE time >= to_timestamp($1::bigint) AND time < to_timestamp($2::bigint)"
        "  GROUP BY 1, 2, 3),"
        " up AS (INSERT INTO tb_performance_metric_5min AS r (" ROLLUP_COLUMNS ") SELECT " ROLLUP_VALUES
        "  FROM a" ROLLUP_UPSERT ")"
        " DELETE FROM tb_performance_metric_5min d"
        " WHERE d.bucket >= to_timestamp($1::bigint) AND d.bucket < to_timestamp($2::bigint)"
        "  AND NOT EXISTS (SELECT 1 FROM a WHERE a.bucket = d.bucket AND a.metric_name = d.metric_name"
        "  AND a.endpoint = d.endpoint)";

static const char rebuild_hourly_sql[] =
        "WITH a AS MATERIALIZED (SELECT date_bin('1 hour', bucket, TIMESTAMPTZ 'epoch') AS bucket, metric_name,"
        "  endpoint, sum(total_requests) AS total_requests, sum(total_errors) AS total_errors,"
        "  sum(data_points) AS data_points, sum(p50_sum) AS p50_sum, sum(p50_n) AS p50_n, sum(p95_sum) AS p95_sum,"
        "  sum(p95_n) AS p95_n, sum(p99_sum) AS p99_sum, sum(p99_n) AS p99_n, sum(error_rate_sum) AS error_rate_sum,"
        "  sum(error_rate_n) AS error_rate_n FROM tb_performance_metric_5min"
        "  WHERE bucket >= to_timestamp($1::bigint) AND bucket < to_timestamp($2::bigint) GROUP BY 1, 2, 3),"
        " up AS (INSERT INTO tb_performance_metric_hourly AS r (" ROLLUP_COLUMNS ") SELECT " ROLLUP_VALUES
        "  FROM a" ROLLUP_UPSERT ")"
        " DELETE FROM tb_performance_metric_hourly d"
        " WHERE d.bucket >= to_timestamp($1::bigint) AND d.bucket < to_timestamp($2::bigint)"
        "  AND NOT EXISTS (SELECT 1 FROM a WHERE a.bucket = d.bucket AND a.metric_name = d.metric_name"
        "  AND a.endpoint = d.endpoint)";

/*
 * The rollups summed over endpoints (sql/0014): the 5-minute ones from the
 * per-endpoint 5-minute rows of the range, the hourly ones from the
 * 5-minute ones of the hours touching it; upserts that leave unchanged rows
 * alone, and rows left without points deleted, as above. %s: the target
 * table, the source table, the bucket width.
 */
#define BY_NAME_COLUMNS                                                                                                \
	"bucket, metric_name, data_points, total_requests, total_errors, p50_sum, p50_n, p95_sum, p95_n, p99_sum,"     \
	" p99_n, error_rate_sum, error_rate_n"
#define BY_NAME_SQL(target, source, width)                                                                               \
	"WITH a AS MATERIALIZED (SELECT date_bin('" width "', bucket, TIMESTAMPTZ 'epoch') AS bucket, metric_name,"      \
	"  sum(data_points) AS data_points, sum(total_requests) AS total_requests, sum(total_errors) AS total_errors,"   \
	"  sum(p50_sum) AS p50_sum, sum(p50_n) AS p50_n, sum(p95_sum) AS p95_sum, sum(p95_n) AS p95_n,"                  \
	"  sum(p99_sum) AS p99_sum, sum(p99_n) AS p99_n, sum(error_rate_sum) AS error_rate_sum,"                         \
	"  sum(error_rate_n) AS error_rate_n FROM " source                                                               \
	"  WHERE bucket >= to_timestamp($1::bigint) AND bucket < to_timestamp($2::bigint) GROUP BY 1, 2),"               \
	" up AS (INSERT INTO " target " AS r (" BY_NAME_COLUMNS ") SELECT " BY_NAME_COLUMNS " FROM a"                    \
	"  ON CONFLICT (bucket, metric_name) DO UPDATE SET data_points = EXCLUDED.data_points,"                          \
	"  total_requests = EXCLUDED.total_requests, total_errors = EXCLUDED.total_errors,"                              \
	"  p50_sum = EXCLUDED.p50_sum, p50_n = EXCLUDED.p50_n, p95_sum = EXCLUDED.p95_sum, p95_n = EXCLUDED.p95_n,"      \
	"  p99_sum = EXCLUDED.p99_sum, p99_n = EXCLUDED.p99_n, error_rate_sum = EXCLUDED.error_rate_sum,"                \
	"  error_rate_n = EXCLUDED.error_rate_n"                                                                         \
	"  WHERE (r.data_points, r.total_requests, r.total_errors, r.p50_sum, r.p50_n, r.p95_sum, r.p95_n, r.p99_sum,"   \
	"  r.p99_n, r.error_rate_sum, r.error_rate_n) IS DISTINCT FROM (EXCLUDED.data_points, EXCLUDED.total_requests,"  \
	"  EXCLUDED.total_errors, EXCLUDED.p50_sum, EXCLUDED.p50_n, EXCLUDED.p95_sum, EXCLUDED.p95_n, EXCLUDED.p99_sum," \
	"  EXCLUDED.p99_n, EXCLUDED.error_rate_sum, EXCLUDED.error_rate_n))"                                             \
	" DELETE FROM " target " d WHERE d.bucket >= to_timestamp($1::bigint) AND d.bucket < to_timestamp($2::bigint)"   \
	"  AND NOT EXISTS (SELECT 1 FROM a WHERE a.bucket = d.bucket AND a.metric_name = d.metric_name)"

static const char rebuild_5min_by_name_sql[] =
        BY_NAME_SQL("tb_performance_metric_5min_by_name", "tb_performance_metric_5min", "5 minutes");
static const char rebuild_hourly_by_name_sql[] =
        BY_NAME_SQL("tb_performance_metric_hourly_by_name", "tb_performance_metric_5min_by_name", "1 hour");

/*
 * Re-aggregates the 5-minute buckets of [lo, hi) (epoch seconds, lo < hi,
 * or lo == hi for none) and the hours touching them in one transaction.
 * When watermark >= 0 the same transaction moves the watermark there, and
 * with mark_intact records the log as whole. With is_full (a full rebuild,
 * in ascending time) it records that every bucket before hi is rebuilt.
 */
static int run_chunk(struct db_conn *conn, int64_t lo, int64_t hi, int64_t watermark, bool mark_intact, bool is_full,
                     struct mon_error *err)
{
	char lo_text[24], hi_text[24], hour_lo[24], hour_hi[24];
	snprintf(lo_text, sizeof(lo_text), "%" PRId64, lo);
	snprintf(hi_text, sizeof(hi_text), "%" PRId64, hi);
	snprintf(hour_lo, sizeof(hour_lo), "%" PRId64, floor_div(lo, HOUR_S) * HOUR_S);
	snprintf(hour_hi, sizeof(hour_hi), "%" PRId64, -floor_div(-hi, HOUR_S) * HOUR_S);
	const char *params[] = {lo_text, hi_text};
	const char *hour_params[] = {hour_lo, hour_hi};

	int rc = db_exec(conn, "BEGIN", 0, NULL, NULL, err);
	if (rc != 0)
		return rc;
	if (lo < hi) {
		rc = db_exec(conn, rebuild_5min_sql, 2, params, NULL, err);
		if (rc == 0)
			rc = db_exec(conn, rebuild_hourly_sql, 2, hour_params, NULL, err);
		if (rc == 0)
			rc = db_exec(conn, rebuild_5min_by_name_sql, 2, params, NULL, err);
		if (rc == 0)
			rc = db_exec(conn, rebuild_hourly_by_name_sql, 2, hour_params, NULL, err);
		if (rc == 0 && is_full)
			rc = db_exec(
			        conn,
			        "INSERT INTO tb_metric_rollup_progress (rebuilt_before) VALUES (to_timestamp($1::bigint))"
			        " ON CONFLICT (id) DO UPDATE SET rebuilt_before = EXCLUDED.rebuilt_before",
			        1, params + 1, NULL, err);
		if (rc != 0)
			goto out;
	}
	if (watermark >= 0) {
		char mark[24];
		snprintf(mark, sizeof(mark), "%" PRId64, watermark);
		const char *wparams[] = {mark};
		rc = db_exec(conn, "UPDATE tb_metric_rollup_state SET watermark_seq = $1::bigint, refreshed_at = now()",
		             1, wparams, NULL, err);
		if (rc == 0 && mark_intact)
			rc = db_exec(conn,
			             "INSERT INTO tb_metric_ingest_log_intact DEFAULT VALUES ON CONFLICT (id) DO UPDATE"
			             " SET since = now()",
			             0, NULL, NULL, err);
		if (rc == 0 && mark_intact)
			rc = db_exec(conn, "DELETE FROM tb_metric_rollup_progress", 0, NULL, NULL, err);
		if (rc != 0)
			goto out;
	}
	rc = db_exec(conn, "COMMIT", 0, NULL, NULL, err);
out:
	if (rc != 0) {
		struct mon_error ignored = {0};
		if (db_exec(conn, "ROLLBACK", 0, NULL, NULL, &ignored) != 0)
			log_debug("msg=\"metric rollup rollback failed\" error=\"%s\"", ignored.msg);
	}
	return rc;
}

/*
 * The next chunk of the sorted bucket list from index i: the range [*lo,
 * *hi) from list->v[i], taking in later buckets while the gap before each
 * is at most GAP_BUCKETS (re-aggregating a clean bucket is harmless and
 * cheaper than another statement) and the range stays within one multiple
 * of CHUNK_SPAN_S since the epoch (3 hours): it never spans two daily
 * partitions of the raw table, nor an hour with the next chunk, and its
 * statements stay well within the session's statement timeout (30 s by
 * default) at thousands of points a second per hour. Returns the index
 * after the chunk.
 */
static size_t next_chunk(const struct bucket_list *list, size_t i, int64_t *lo, int64_t *hi)
{
	*lo = list->v[i];
	*hi = list->v[i] + BUCKET_S;
	int64_t span_end = (floor_div(*lo, CHUNK_SPAN_S) + 1) * CHUNK_SPAN_S;
	size_t j = i + 1;
	while (j < list->n && list->v[j] - *hi <= GAP_BUCKETS * BUCKET_S && list->v[j] < span_end) {
		*hi = list->v[j] + BUCKET_S;
		j++;
	}
	return j;
}

/*
 * A full rebuild's ranges (whole 3-hour spans, so that no two share an hour),
 * re-aggregated by REBUILD_WORKERS connections at once: each takes the next
 * range not yet taken. Progress (tb_metric_rollup_progress) moves to the
 * end of the ranges done from the first on without a gap, so that it never
 * claims a range still being rebuilt.
 */
struct rebuild {
	struct db_pool *pool;
	const atomic_bool *stop;
	const int64_t *lo, *hi;
	bool *is_done;
	size_t n;
	pthread_mutex_t lock;
	size_t next;   /* the next range to take */
	size_t done_n; /* ranges done from the first on */
	int rc;        /* the first failure */
	struct mon_error err;
};

static void rebuild_work(struct rebuild *rb, struct db_conn *conn)
{
	for (;;) {
		pthread_mutex_lock(&rb->lock);
		bool is_over = rb->rc != 0 || rb->next >= rb->n || (rb->stop != NULL && atomic_load(rb->stop));
		size_t i = rb->next;
		if (!is_over)
			rb->next++;
		pthread_mutex_unlock(&rb->lock);
		if (is_over)
			return;
		struct mon_error e = {0};
		int rc = run_chunk(conn, rb->lo[i], rb->hi[i], -1, false, false, &e);
		pthread_mutex_lock(&rb->lock);
		if (rc == 0) {
			size_t before = rb->done_n;
			rb->is_done[i] = true;
			while (rb->done_n < rb->n && rb->is_done[rb->done_n])
				rb->done_n++;
			if (rb->done_n > before) {
				char mark[24];
				snprintf(mark, sizeof(mark), "%" PRId64, rb->hi[rb->done_n - 1]);
				const char *params[] = {mark};
				rc = db_exec(conn,
				             "INSERT INTO tb_metric_rollup_progress (rebuilt_before) VALUES"
				             " (to_timestamp($1::bigint)) ON CONFLICT (id) DO UPDATE"
				             " SET rebuilt_before = EXCLUDED.rebuilt_before",
				             1, params, NULL, &e);
			}
		}
		if (rc != 0 && rb->rc == 0) {
			rb->rc = rc;
			rb->err = e;
		}
		pthread_mutex_unlock(&rb->lock);
		if (rc != 0)
			return;
	}
}

static void *rebuild_helper_main(void *arg)
{
	struct rebuild *rb = arg;
	struct db_conn *conn = NULL;
	struct mon_error err = {0};
	/* no second connection to be had: the first worker does every range */
	if (db_pool_acquire(rb->pool, HELPER_ACQUIRE_TIMEOUT_MS, &conn, &err) != 0) {
		log_debug("msg=\"metric rebuild helper without a connection\" error=\"%s\"", err.msg);
		return NULL;
	}
	/* as on the job's own connection: never queue behind a lock for long (run_once) */
	if (db_exec(conn, "SET lock_timeout = '1s'", 0, NULL, NULL, &err) == 0) {
		rebuild_work(rb, conn);
		if (db_exec(conn, "RESET lock_timeout", 0, NULL, NULL, &err) != 0)
			log_debug("msg=\"could not reset lock_timeout\" error=\"%s\"", err.msg);
	}
	db_pool_release(rb->pool, conn);
	return NULL;
}

/* Re-aggregates the n ranges [lo[i], hi[i]) with up to REBUILD_WORKERS connections, conn one of them. */
static int rebuild_ranges(struct db_pool *pool, struct db_conn *conn, const atomic_bool *stop, const int64_t *lo,
                          const int64_t *hi, size_t n, struct mon_error *err)
{
	struct rebuild rb = {.pool = pool, .stop = stop, .lo = lo, .hi = hi, .n = n};
	pthread_t helpers[REBUILD_WORKERS - 1];
	size_t helper_n = 0;
	rb.is_done = calloc(n ? n : 1, sizeof(*rb.is_done));
	if (rb.is_done == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	pthread_mutex_init(&rb.lock, NULL);
	for (size_t i = 0; i < REBUILD_WORKERS - 1 && i + 1 < n && pool != NULL; i++)
		if (pthread_create(&helpers[helper_n], NULL, rebuild_helper_main, &rb) == 0)
			helper_n++;
	rebuild_work(&rb, conn);
	for (size_t i = 0; i < helper_n; i++)
		pthread_join(helpers[i], NULL);
	pthread_mutex_destroy(&rb.lock);
	free(rb.is_done);
	if (rb.rc != 0) {
		if (err != NULL)
			*err = rb.err;
		return rb.rc;
	}
	if (rb.done_n < n)
		return MON_ECANCELLED; /* stopping: the watermark stays; the next run starts again */
	return 0;
}

/*
 * Brings the rollups up to date (steps 2 and 3 of the file comment).
 * cutoff is the first 5-minute bucket within raw retention (epoch s).
 */
static int refresh_rollups(struct db_pool *pool, struct db_conn *conn, const struct run_settings *rs,
                           const atomic_bool *stop, int64_t cutoff, struct metrics_maintenance_stats *stats,
                           struct mon_error *err)
{
	static const char state_sql[] = "SELECT watermark_seq FROM tb_metric_rollup_state";
	static const char intact_sql[] = "SELECT count(*) FROM tb_metric_ingest_log_intact";
	/* Batches commit in sequence order (mon_metrics_commit), so the rows seen are every batch up to their max. */
	static const char target_sql[] = "SELECT greatest($1::bigint, max(seq)) FROM tb_metric_ingest_log";
	static const char log_buckets_sql[] =
	        "SELECT extract(epoch FROM b)::bigint FROM (SELECT DISTINCT date_bin('5 minutes', u, TIMESTAMPTZ"
	        " 'epoch') AS b FROM tb_metric_ingest_log l, unnest(l.buckets) u WHERE l.seq > $1::bigint AND l.seq <="
	        " $2::bigint) d WHERE b >= to_timestamp($3::bigint) AND b < now() + interval '1 day' ORDER BY 1";
	/* Every bucket up to now without scanning the points; the few future ones from the points. */
	static const char all_buckets_sql[] =
	        "SELECT extract(epoch FROM b)::bigint FROM ("
	        " SELECT generate_series(to_timestamp($1::bigint), now(), interval '5 minutes') AS b"
	        " UNION SELECT date_bin('5 minutes', time, TIMESTAMPTZ 'epoch') FROM tb_performance_metric"
	        "  WHERE time >= greatest(now(), to_timestamp($1::bigint)) AND time < now() + interval '1 day'"
	        " UNION SELECT bucket FROM tb_performance_metric_5min"
	        "  WHERE bucket >= to_timestamp($1::bigint) AND bucket < now() + interval '1 day'"
	        " UNION SELECT bucket FROM tb_performance_metric_hourly"
	        "  WHERE bucket >= to_timestamp($1::bigint) AND bucket < now() + interval '1 day') d ORDER BY 1";
	struct bucket_list list = {0};
	int64_t watermark = 0;
	int64_t intact = 0;
	int64_t target = 0;
	char wm_text[24];
	char target_text[24];
	char cutoff_text[24];
	int rc = query_int(conn, state_sql, 0, NULL, &watermark, err);
	if (rc == 0)
		rc = query_int(conn, intact_sql, 0, NULL, &intact, err);
	if (rc != 0)
		return rc;
	snprintf(wm_text, sizeof(wm_text), "%" PRId64, watermark);
	snprintf(cutoff_text, sizeof(cutoff_text), "%" PRId64, cutoff);
	const char *target_params[] = {wm_text};
	rc = query_int(conn, target_sql, 1, target_params, &target, err);
	if (rc != 0)
		return rc;
	snprintf(target_text, sizeof(target_text), "%" PRId64, target);
	stats->is_full_refresh = intact == 0;
	stats->watermark_seq = watermark;
	if (intact != 0 && target == watermark)
		return 0; /* nothing new */

	/* raw retention plus a day of future buckets, plus slack */
	list.cap = (size_t)(rs->raw_days + 2) * (86400 / BUCKET_S) + 64;
	list.v = malloc(list.cap * sizeof(*list.v));
	if (list.v == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	if (stats->is_full_refresh) {
		const char *params[] = {cutoff_text};
		rc = read_buckets(conn, all_buckets_sql, 1, params, &list, err);
	} else {
		const char *params[] = {wm_text, target_text, cutoff_text};
		rc = read_buckets(conn, log_buckets_sql, 3, params, &list, err);
	}
	if (rc != 0)
		goto out;

	if (stats->is_full_refresh) {
		/* progress of an earlier rebuild says nothing about what the log lost since */
		rc = db_exec(conn, "DELETE FROM tb_metric_rollup_progress", 0, NULL, NULL, err);
		if (rc != 0)
			goto out;
	}
	if (stats->is_full_refresh && list.n > 0) {
		/* whole days on several connections, then the watermark and the intact mark */
		int64_t *ranges = malloc(2 * (list.n + 1) * sizeof(*ranges));
		size_t n = 0;
		if (ranges == NULL) {
			rc = mon_error_set(err, MON_ENOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < list.n; n++)
			i = next_chunk(&list, i, &ranges[n], &ranges[list.n + 1 + n]);
		rc = rebuild_ranges(pool, conn, stop, ranges, ranges + list.n + 1, n, err);
		free(ranges);
		if (rc == MON_ECANCELLED) {
			rc = 0;
			goto out;
		}
		if (rc == 0)
			rc = run_chunk(conn, 0, 0, target, true, false, err);
		if (rc != 0)
			goto out;
		stats->buckets_5min = (int64_t)list.n;
		for (size_t j = 0; j < list.n; j++)
			if (j == 0 || floor_div(list.v[j], HOUR_S) != floor_div(list.v[j - 1], HOUR_S))
				stats->buckets_hourly++;
		stats->watermark_seq = target;
		goto out;
	}
	size_t i = 0;
	do {
		int64_t lo = 0, hi = 0;
		size_t end = list.n > 0 ? next_chunk(&list, i, &lo, &hi) : 0;
		if (stop != NULL && atomic_load(stop))
			goto out; /* stopping: the watermark stays; the next run redoes these buckets */
		bool is_last = end == list.n;
		rc = run_chunk(conn, lo, hi, is_last ? target : -1, is_last && stats->is_full_refresh,
		               stats->is_full_refresh, err);
		if (rc != 0)
			goto out;
		stats->buckets_5min += (int64_t)(end - i);
		for (size_t j = i; j < end; j++)
			if (j == 0 || floor_div(list.v[j], HOUR_S) != floor_div(list.v[j - 1], HOUR_S))
				stats->buckets_hourly++;
		i = end;
	} while (i < list.n);
	stats->watermark_seq = target;
out:
	free(list.v);
	return rc;
}

/* Repeats a bounded DELETE (one integer result: rows deleted) until it deletes less than a batch. */
static int delete_batches(struct db_conn *conn, const char *sql, int param_count, const char *const *params,
                          int64_t *count, struct mon_error *err)
{
	for (;;) {
		int64_t n = 0;
		int rc = query_int(conn, sql, param_count, params, &n, err);
		if (rc != 0)
			return rc;
		*count += n;
		if (n < DELETE_BATCH)
			return 0;
	}
}

/*
 * Retention of the three tables (step 4 of the file comment): whole
 * partitions, then old DEFAULT rows. raw_cutoff is the first bucket within
 * raw retention (epoch s).
 */
static int drop_old_partitions(struct db_conn *conn, const struct run_settings *rs, int64_t raw_cutoff,
                               struct metrics_maintenance_stats *stats, int64_t *default_rows, struct mon_error *err)
{
	_Static_assert(DELETE_BATCH == 5000, "the SQL below names DELETE_BATCH");
	static const char cutoffs_sql[] = "SELECT extract(epoch FROM now() - $1::integer * interval '1 day')::bigint,"
	                                  " extract(epoch FROM now() - $2::integer * interval '1 day')::bigint";
	static const char drop_sql[] = "SELECT mon_retention_drop_before($1::regclass, to_timestamp($2::bigint))";
	static const char default_sql[] =
	        "SELECT mon_delete_default_before($1::regclass, to_timestamp($2::bigint), 5000)";
	static const char *const tables[] = {"tb_performance_metric", "tb_performance_metric_5min",
	                                     "tb_performance_metric_hourly"};
	struct db_result *res = NULL;
	char days_5min[16];
	char days_hourly[16];
	char cut[3][24];
	snprintf(days_5min, sizeof(days_5min), "%d", rs->rollup_5min_days);
	snprintf(days_hourly, sizeof(days_hourly), "%d", rs->rollup_hourly_days);
	const char *cut_params[] = {days_5min, days_hourly};
	int rc = db_exec(conn, cutoffs_sql, 2, cut_params, &res, err);
	if (rc != 0)
		return rc;
	snprintf(cut[0], sizeof(cut[0]), "%" PRId64, raw_cutoff);
	snprintf(cut[1], sizeof(cut[1]), "%s", db_result_value(res, 0, 0));
	snprintf(cut[2], sizeof(cut[2]), "%s", db_result_value(res, 0, 1));
	db_result_free(res);

	for (size_t t = 0; t < 3; t++) {
		const char *params[] = {tables[t], cut[t]};
		int64_t dropped = 0;
		rc = query_int(conn, drop_sql, 2, params, &dropped, err);
		if (rc == 0)
			rc = delete_batches(conn, default_sql, 2, params, default_rows, err);
		if (rc != 0)
			return rc;
		stats->partitions_dropped += (int)dropped;
	}
	/* the rollups summed over endpoints are not partitioned: their old rows, a batch at a time */
	static const char *const by_name[] = {
	        "WITH gone AS (DELETE FROM tb_performance_metric_5min_by_name WHERE ctid = ANY (ARRAY(SELECT ctid"
	        " FROM tb_performance_metric_5min_by_name WHERE bucket < to_timestamp($1::bigint) LIMIT 5000))"
	        " RETURNING 1) SELECT count(*) FROM gone",
	        "WITH gone AS (DELETE FROM tb_performance_metric_hourly_by_name WHERE ctid = ANY (ARRAY(SELECT ctid"
	        " FROM tb_performance_metric_hourly_by_name WHERE bucket < to_timestamp($1::bigint) LIMIT 5000))"
	        " RETURNING 1) SELECT count(*) FROM gone"};
	for (size_t t = 0; t < 2; t++) {
		const char *params[] = {cut[t + 1]};
		rc = delete_batches(conn, by_name[t], 1, params, default_rows, err);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* Deletes the ingest log rows at or below the watermark and older than the replay window. */
static int prune_log(struct db_conn *conn, const struct run_settings *rs, struct metrics_maintenance_stats *stats,
                     struct mon_error *err)
{
	_Static_assert(DELETE_BATCH == 5000, "the SQL below names DELETE_BATCH");
	static const char log_sql[] =
	        "WITH gone AS (DELETE FROM tb_metric_ingest_log WHERE seq = ANY (ARRAY(SELECT seq"
	        " FROM tb_metric_ingest_log WHERE seq <= $1::bigint AND committed_at < now() - $2::integer *"
	        " interval '1 second' ORDER BY seq LIMIT 5000)) RETURNING 1) SELECT count(*) FROM gone";
	char wm[24];
	char window[16];
	snprintf(wm, sizeof(wm), "%" PRId64, stats->watermark_seq);
	snprintf(window, sizeof(window), "%d", rs->replay_window_s);
	const char *log_params[] = {wm, window};
	return delete_batches(conn, log_sql, 2, log_params, &stats->log_rows_deleted, err);
}

/*
 * One run; with is_housekeeping it also makes partitions ahead and drops
 * old ones (the thread does that once a minute, not every run).
 */
static int run_once(const struct metrics_maintenance_config *cfg, const atomic_bool *stop, bool is_housekeeping,
                    struct metrics_maintenance_stats *stats, struct mon_error *err)
{
	_Static_assert(METRICS_ROLLUP_LOCK == 7206011, "the SQL below names METRICS_ROLLUP_LOCK");
	struct metrics_maintenance_stats local = {0};
	struct run_settings rs = {0};
	struct db_conn *conn = NULL;
	struct db_result *res = NULL;
	bool is_locked = false;
	bool is_lock_timeout_set = false;
	int64_t created = 0;
	int64_t cutoff = 0;
	int64_t default_rows = 0;
	int64_t started_ms = mon_now_ms();
	if (stats == NULL)
		stats = &local;
	memset(stats, 0, sizeof(*stats));
	int rc = settings_of(cfg, &rs, err);
	if (rc != 0)
		return rc;
	rc = db_pool_acquire(cfg->pool, ACQUIRE_TIMEOUT_MS, &conn, err);
	if (rc != 0)
		return rc;
	rc = db_exec(conn, "SELECT pg_try_advisory_lock(7206011)", 0, NULL, &res, err);
	if (rc != 0)
		goto out;
	is_locked = strcmp(db_result_value(res, 0, 0), "t") == 0;
	db_result_free(res);
	res = NULL;
	if (!is_locked) {
		stats->is_skipped = true;
		goto out;
	}

	/*
	 * Making or dropping a partition locks its parent exclusively, and while
	 * that lock is awaited every new query on the table queues behind it:
	 * give up quickly instead (the next run tries again).
	 */
	rc = db_exec(conn, "SET lock_timeout = '1s'", 0, NULL, NULL, err);
	if (rc != 0)
		goto out;
	is_lock_timeout_set = true;
	if (is_housekeeping)
		rc = query_int(conn, "SELECT mon_maintain_partitions()", 0, NULL, &created, err);
	if (rc == MON_EUNAVAIL)
		goto out;
	if (rc != 0) {
		/* new rows go to the DEFAULT partitions meanwhile: the rollups need not wait */
		log_warn("msg=\"could not make metric partitions ahead\" error=\"%s\"", err != NULL ? err->msg : "");
		rc = 0;
	}
	char days[16];
	snprintf(days, sizeof(days), "%d", rs.raw_days);
	const char *days_params[] = {days};
	rc = query_int(conn,
	               "SELECT extract(epoch FROM date_bin('5 minutes', now() - $1::integer * interval '1 day',"
	               " TIMESTAMPTZ 'epoch'))::bigint",
	               1, days_params, &cutoff, err);
	if (rc == 0)
		rc = refresh_rollups(cfg->pool, conn, &rs, stop, cutoff, stats, err);
	if (rc == 0)
		rc = prune_log(conn, &rs, stats, err);
	if (rc == 0 && is_housekeeping)
		rc = drop_old_partitions(conn, &rs, cutoff, stats, &default_rows, err);
	if (rc != 0)
		goto out;
	if (stats->buckets_5min > 0 || stats->is_full_refresh || stats->partitions_dropped > 0 ||
	    stats->log_rows_deleted > 0 || created > 0 || default_rows > 0)
		log_info("msg=\"metric maintenance\" buckets_5min=%" PRId64 " buckets_hourly=%" PRId64
		         " watermark_seq=%" PRId64 " full_refresh=%s partitions_created=%" PRId64
		         " partitions_dropped=%d default_rows_deleted=%" PRId64 " log_rows_deleted=%" PRId64
		         " duration_ms=%" PRId64,
		         stats->buckets_5min, stats->buckets_hourly, stats->watermark_seq,
		         stats->is_full_refresh ? "true" : "false", created, stats->partitions_dropped, default_rows,
		         stats->log_rows_deleted, mon_now_ms() - started_ms);
out:
	if (is_lock_timeout_set) {
		struct mon_error reset_err = {0};
		if (db_exec(conn, "RESET lock_timeout", 0, NULL, NULL, &reset_err) != 0)
			log_debug("msg=\"could not reset lock_timeout\" error=\"%s\"", reset_err.msg);
	}
	if (is_locked) {
		struct mon_error unlock_err = {0};
		if (db_exec(conn, "SELECT pg_advisory_unlock(7206011)", 0, NULL, NULL, &unlock_err) != 0)
			log_warn("msg=\"could not release the metric maintenance lock\" error=\"%s\"", unlock_err.msg);
	}
	db_pool_release(cfg->pool, conn);
	return rc;
}

int metrics_maintenance_run(const struct metrics_maintenance_config *cfg, struct metrics_maintenance_stats *stats,
                            struct mon_error *err)
{
	return run_once(cfg, NULL, true, stats, err);
}

struct metrics_maintenance {
	struct metrics_maintenance_config cfg;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	atomic_bool is_stopping; /* also read by a run in progress, between its transactions */
};

static void *maintenance_main(void *arg)
{
	struct metrics_maintenance *job = arg;
	int64_t wait_ms = FIRST_RUN_DELAY_MS;
	int64_t housekept_ms = 0;
	bool has_housekept = false;
	pthread_mutex_lock(&job->lock);
	for (;;) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += (time_t)(wait_ms / 1000);
		until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		while (!atomic_load(&job->is_stopping))
			if (pthread_cond_timedwait(&job->cond, &job->lock, &until) == ETIMEDOUT)
				break;
		if (atomic_load(&job->is_stopping))
			break;
		pthread_mutex_unlock(&job->lock);
		struct mon_error err = {0};
		int64_t started_ms = mon_now_ms();
		bool is_housekeeping = !has_housekept || started_ms - housekept_ms >= HOUSEKEEPING_INTERVAL_MS;
		if (run_once(&job->cfg, &job->is_stopping, is_housekeeping, NULL, &err) != 0) {
			log_warn("msg=\"metric maintenance failed\" error=\"%s\"", err.msg);
		} else if (is_housekeeping) {
			/* also when another replica held the lock: it does the housekeeping then */
			has_housekept = true;
			housekept_ms = started_ms;
		}
		pthread_mutex_lock(&job->lock);
		/*
		 * Runs start every interval, not an interval after the last one
		 * ended: under heavy ingest a run re-aggregating the current
		 * bucket takes seconds, and waiting a whole interval after it
		 * would add that much to the rollups' lag. A run longer than the
		 * interval is followed by the next at once (MIN_WAIT_MS apart).
		 */
		wait_ms = job->cfg.interval_ms - (mon_now_ms() - started_ms);
		if (wait_ms < MIN_WAIT_MS)
			wait_ms = MIN_WAIT_MS;
	}
	pthread_mutex_unlock(&job->lock);
	return NULL;
}

int metrics_maintenance_start(const struct metrics_maintenance_config *cfg, struct metrics_maintenance **out,
                              struct mon_error *err)
{
	struct run_settings rs = {0};
	*out = NULL;
	int rc = settings_of(cfg, &rs, err);
	if (rc != 0)
		return rc;
	if (cfg->interval_ms < 0)
		return mon_error_set(err, MON_EINVAL, "metric maintenance interval: must not be negative");
	struct metrics_maintenance *job = calloc(1, sizeof(*job));
	if (job == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	job->cfg = *cfg;
	if (job->cfg.interval_ms == 0)
		job->cfg.interval_ms = DEFAULT_INTERVAL_MS;
	pthread_mutex_init(&job->lock, NULL);
	pthread_cond_init(&job->cond, NULL);
	if (pthread_create(&job->thread, NULL, maintenance_main, job) != 0) {
		pthread_mutex_destroy(&job->lock);
		pthread_cond_destroy(&job->cond);
		free(job);
		return mon_error_set(err, MON_EINTERNAL, "could not start the metric maintenance thread");
	}
	*out = job;
	return 0;
}

void metrics_maintenance_stop(struct metrics_maintenance *job)
{
	if (job == NULL)
		return;
	pthread_mutex_lock(&job->lock);
	atomic_store(&job->is_stopping, true);
	pthread_cond_broadcast(&job->cond);
	pthread_mutex_unlock(&job->lock);
	pthread_join(job->thread, NULL);
	pthread_mutex_destroy(&job->lock);
	pthread_cond_destroy(&job->cond);
	free(job);
}
