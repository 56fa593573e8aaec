/*
 * Metric maintenance (server/metrics/rollup.c) against the throwaway
 * cluster. Batches are written as the ingest path writes them: raw rows,
 * then mon_metrics_commit with the batch's 5-minute buckets, in one
 * transaction. The rollups are checked against the data model's continuous
 * aggregates (AVG, SUM grouped by time bucket, metric_name, endpoint)
 * computed directly on the raw rows, value for value and scale for scale.
 */
#include "test_db_common.h"

#include <pthread.h>

#include "metrics/rollup.h"

static struct test_db tdb;
static struct db_pool *pool;
static PGconn *pg; /* for multi-statement scripts */

static const struct metrics_maintenance_config defaults = {0}; /* pool set in group_setup */
static struct metrics_maintenance_config cfg;

/* Runs a script (several statements allowed), failing the test on error. */
static void sql(const char *script)
{
	PGresult *res = PQexec(pg, script);
	bool is_ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
	PQclear(res);
	if (!is_ok) {
		char msg[512];
		snprintf(msg, sizeof(msg), "%s", PQerrorMessage(pg));
		if (PQtransactionStatus(pg) != PQTRANS_IDLE)
			PQclear(PQexec(pg, "ROLLBACK"));
		fail_msg("%.300s: %s", script, msg);
	}
}

/*
 * Writes the rows of select_rows (columns time, metric_name, endpoint, p50,
 * p95, p99, request_count, error_count, error_rate) as one batch.
 */
static void record(const char *select_rows)
{
	char script[8192];
	snprintf(script, sizeof(script),
	         "BEGIN;"
	         " CREATE TEMP TABLE batch ON COMMIT DROP AS %s;"
	         " INSERT INTO tb_performance_metric (time, metric_name, endpoint, p50, p95, p99, request_count,"
	         "  error_count, error_rate) SELECT * FROM batch ON CONFLICT (time, metric_name, endpoint) DO UPDATE"
	         "  SET p50 = EXCLUDED.p50, p95 = EXCLUDED.p95, p99 = EXCLUDED.p99, request_count ="
	         "  EXCLUDED.request_count, error_count = EXCLUDED.error_count, error_rate = EXCLUDED.error_rate;"
	         " SELECT mon_metrics_commit((SELECT count(*)::integer FROM batch), (SELECT min(time) FROM batch),"
	         "  (SELECT max(time) FROM batch), (SELECT array_agg(DISTINCT date_bin('5 minutes', time,"
	         "  TIMESTAMPTZ 'epoch')) FROM batch), '\\x0a00'::bytea);"
	         " COMMIT",
	         select_rows);
	sql(script);
}

/* 30 hours of one point a minute of three series, with NULLs, ending `end_ago` before now. */
static void record_history(int first_minute, int last_minute)
{
	char rows[2048];
	snprintf(rows, sizeof(rows),
	         "SELECT date_bin('1 minute', now() - interval '30 hours', TIMESTAMPTZ 'epoch') + g * interval"
	         " '1 minute' AS time, v.n::varchar(100) AS metric_name, v.e::varchar(500) AS endpoint,"
	         " CASE WHEN g %% 7 = 0 THEN NULL ELSE round((10 + (g * 37 %% 101) / 3.0)::numeric, 2) END AS p50,"
	         " round((50 + g %% 13 * 1.37 + length(v.e))::numeric, 2) AS p95,"
	         " CASE WHEN g %% 11 = 0 THEN NULL ELSE round((90 + g %% 17 * 2.11)::numeric, 2) END AS p99,"
	         " (g * 13) %% 1000 AS request_count, g %% 9 AS error_count,"
	         " CASE WHEN g %% 5 = 0 THEN NULL ELSE round(((g %% 9) * 100.0 / 997)::numeric, 2) END AS error_rate"
	         " FROM generate_series(%d, %d) g, (VALUES ('api.latency', '/orders'), ('api.latency', '/users'),"
	         " ('db.query', '')) v(n, e)",
	         first_minute, last_minute);
	record(rows);
}

/*
 * Rows (bucket, metric_name, endpoint) where the rollup table and the
 * seed's aggregate of the raw points within raw retention disagree, in
 * presence or in any value (compared as text, so scales must match too).
 */
static long rollup_mismatches(const char *table, const char *width)
{
	char q[4096];
	snprintf(
	        q, sizeof(q),
	        "WITH raw AS (SELECT date_bin('%s', time, TIMESTAMPTZ 'epoch') AS bucket, metric_name, endpoint,"
	        "  AVG(p50) AS avg_p50, AVG(p95) AS avg_p95, AVG(p99) AS avg_p99, SUM(request_count) AS total_requests,"
	        "  SUM(error_count) AS total_errors, AVG(error_rate) AS avg_error_rate FROM tb_performance_metric"
	        "  WHERE time >= date_bin('%s', now() - interval '7 days', TIMESTAMPTZ 'epoch') + interval '%s'"
	        "  GROUP BY 1, 2, 3),"
	        " r AS (SELECT * FROM %s WHERE bucket >= date_bin('%s', now() - interval '7 days',"
	        "  TIMESTAMPTZ 'epoch') + interval '%s')"
	        " SELECT count(*) FROM raw FULL JOIN r ON r.bucket = raw.bucket AND r.metric_name = raw.metric_name"
	        "  AND r.endpoint = raw.endpoint"
	        " WHERE raw.bucket IS NULL OR r.bucket IS NULL"
	        "  OR r.avg_p50::text IS DISTINCT FROM raw.avg_p50::text"
	        "  OR r.avg_p95::text IS DISTINCT FROM raw.avg_p95::text"
	        "  OR r.avg_p99::text IS DISTINCT FROM raw.avg_p99::text"
	        "  OR r.total_requests::text IS DISTINCT FROM raw.total_requests::text"
	        "  OR r.total_errors::text IS DISTINCT FROM raw.total_errors::text"
	        "  OR r.avg_error_rate::text IS DISTINCT FROM raw.avg_error_rate::text",
	        width, width, width, table, width, width);
	return test_db_count(pool, q);
}

/* Rows where a rollup summed over endpoints and the sum of the per-endpoint rollup disagree, in presence or value. */
static long by_name_mismatches(const char *table)
{
	char q[2048];
	snprintf(
	        q, sizeof(q),
	        "WITH e AS (SELECT bucket, metric_name, sum(data_points) AS data_points, sum(total_requests) AS tr,"
	        "  sum(total_errors) AS te, sum(p50_sum) AS p50_sum, sum(p50_n) AS p50_n, sum(p95_sum) AS p95_sum,"
	        "  sum(p95_n) AS p95_n, sum(p99_sum) AS p99_sum, sum(p99_n) AS p99_n, sum(error_rate_sum) AS ers,"
	        "  sum(error_rate_n) AS ern FROM %s GROUP BY 1, 2)"
	        " SELECT count(*) FROM e FULL JOIN %s_by_name n ON n.bucket = e.bucket AND n.metric_name = e.metric_name"
	        " WHERE e.bucket IS NULL OR n.bucket IS NULL OR (n.data_points, n.total_requests, n.total_errors,"
	        "  n.p50_sum, n.p50_n, n.p95_sum, n.p95_n, n.p99_sum, n.p99_n, n.error_rate_sum, n.error_rate_n)"
	        "  IS DISTINCT FROM (e.data_points, e.tr, e.te, e.p50_sum, e.p50_n, e.p95_sum, e.p95_n, e.p99_sum,"
	        "  e.p99_n, e.ers, e.ern)",
	        table, table);
	return test_db_count(pool, q);
}

static void assert_rollups_match(void)
{
	assert_int_equal(rollup_mismatches("tb_performance_metric_5min", "5 minutes"), 0);
	assert_int_equal(rollup_mismatches("tb_performance_metric_hourly", "1 hour"), 0);
	assert_int_equal(by_name_mismatches("tb_performance_metric_5min"), 0);
	assert_int_equal(by_name_mismatches("tb_performance_metric_hourly"), 0);
}

static int64_t watermark(void)
{
	return test_db_count(pool, "SELECT watermark_seq FROM tb_metric_rollup_state");
}

static int64_t last_seq(void)
{
	return test_db_count(pool, "SELECT coalesce(max(seq), 0) FROM tb_metric_ingest_log");
}

static void run(struct metrics_maintenance_stats *stats)
{
	struct mon_error err = {0};
	if (metrics_maintenance_run(&cfg, stats, &err) != 0)
		fail_msg("metrics_maintenance_run: %s", err.msg);
	assert_false(stats->is_skipped);
}

/* Empty tables, an intact log and the watermark at the last batch. */
static void reset(void)
{
	struct metrics_maintenance_stats stats;
	sql("TRUNCATE tb_performance_metric, tb_performance_metric_5min, tb_performance_metric_hourly,"
	    " tb_performance_metric_5min_by_name, tb_performance_metric_hourly_by_name,"
	    " tb_metric_ingest_log, tb_metric_ingest_log_intact;"
	    " INSERT INTO tb_metric_ingest_log_intact DEFAULT VALUES");
	run(&stats);
	assert_false(stats.is_full_refresh);
	assert_int_equal(stats.buckets_5min, 0);
}

static int group_setup(void **state)
{
	(void)state;
	struct mon_error err = {0};
	test_db_create(&tdb, "metrics_rollup");
	pool = test_db_pool(tdb.conninfo, 4);
	if (db_migrate(pool, &err) != 0)
		fail_msg("db_migrate: %s", err.msg);
	pg = PQconnectdb(tdb.conninfo);
	if (PQstatus(pg) != CONNECTION_OK)
		fail_msg("connect: %s", PQerrorMessage(pg));
	cfg = defaults;
	cfg.pool = pool;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	PQfinish(pg);
	db_pool_destroy(pool);
	test_db_drop(&tdb);
	return 0;
}

static void test_metrics_rollup_equals_seed_aggregates(void **state)
{
	(void)state;
	struct metrics_maintenance_stats stats;
	/* The first run ever: no intact log yet, so everything is aggregated (nothing here). */
	run(&stats);
	assert_true(stats.is_full_refresh);
	run(&stats);
	assert_false(stats.is_full_refresh);
	assert_int_equal(stats.buckets_5min, 0);

	record_history(0, 599);
	record_history(600, 1199);
	record_history(1200, 1799);
	long buckets = test_db_count(pool, "SELECT count(DISTINCT date_bin('5 minutes', time, TIMESTAMPTZ 'epoch'))"
	                                   " FROM tb_performance_metric");
	long hours = test_db_count(pool, "SELECT count(DISTINCT date_bin('1 hour', time, TIMESTAMPTZ 'epoch'))"
	                                 " FROM tb_performance_metric");
	assert_true(buckets >= 360);
	run(&stats);
	assert_false(stats.is_full_refresh);
	assert_int_equal(stats.buckets_5min, buckets);
	assert_int_equal(stats.buckets_hourly, hours);
	assert_int_equal(stats.watermark_seq, last_seq());
	assert_int_equal(watermark(), last_seq());
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_performance_metric_5min"), 3 * buckets);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_performance_metric_hourly"), 3 * hours);
	assert_rollups_match();
	/* The sums and counts behind the averages. */
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_performance_metric_5min"
	                                     " WHERE avg_p50 IS DISTINCT FROM p50_sum / nullif(p50_n, 0)"
	                                     " OR data_points <> (SELECT count(*) FROM tb_performance_metric m"
	                                     "  WHERE m.metric_name = tb_performance_metric_5min.metric_name"
	                                     "  AND m.endpoint = tb_performance_metric_5min.endpoint"
	                                     "  AND m.time >= bucket AND m.time < bucket + interval '5 minutes')"),
	                 0);

	/* Nothing new: nothing done, the watermark stays. */
	int64_t mark = watermark();
	run(&stats);
	assert_int_equal(stats.buckets_5min, 0);
	assert_int_equal(stats.watermark_seq, mark);
}

/* Hourly averages are the averages of the raw points, not averages of the 5-minute averages. */
static void test_metrics_rollup_hourly_is_exact(void **state)
{
	(void)state;
	struct metrics_maintenance_stats stats;
	reset();
	/* One bucket with 4 points of p50 = 1, one with a single point of p50 = 10 in the same hour. */
	record("SELECT date_bin('1 hour', now() - interval '3 hours', TIMESTAMPTZ 'epoch') + g * interval '1 minute'"
	       " AS time, 'exact'::varchar(100) AS metric_name, ''::varchar(500) AS endpoint, 1.00::numeric AS p50,"
	       " NULL::numeric AS p95, NULL::numeric AS p99, 1 AS request_count, 0 AS error_count,"
	       " NULL::numeric AS error_rate FROM generate_series(0, 3) g"
	       " UNION ALL SELECT date_bin('1 hour', now() - interval '3 hours', TIMESTAMPTZ 'epoch') + interval"
	       " '10 minutes', 'exact', '', 10.00, NULL, NULL, 1, 0, NULL");
	run(&stats);
	assert_int_equal(stats.buckets_5min, 2);
	assert_int_equal(stats.buckets_hourly, 1);
	char avg[64];
	test_db_scalar(pool, "SELECT avg_p50 FROM tb_performance_metric_hourly WHERE metric_name = 'exact'", avg,
	               sizeof(avg));
	assert_float_equal(strtod(avg, NULL), 14.0 / 5.0, 1e-12); /* not (1 + 10) / 2 */
	test_db_scalar(pool,
	               "SELECT avg_p95 IS NULL AND p95_n = 0 AND data_points = 5 FROM"
	               " tb_performance_metric_hourly WHERE metric_name = 'exact'",
	               avg, sizeof(avg));
	assert_string_equal(avg, "t");
	assert_rollups_match();
}

/* A late point re-aggregates its old bucket and hour on the next run; old rollups stay untouched. */
static void test_metrics_rollup_late_points(void **state)
{
	(void)state;
	struct metrics_maintenance_stats stats;
	reset();
	record_history(0, 1799);
	run(&stats);
	assert_rollups_match();
	int64_t before = watermark();

	/* A new point in a bucket 20 hours old with points already, and a new series in it. */
	record("SELECT date_bin('5 minutes', now() - interval '20 hours', TIMESTAMPTZ 'epoch') + interval '30 seconds'"
	       " AS time, v.n::varchar(100) AS metric_name, v.e::varchar(500) AS endpoint, 500.25::numeric AS p50,"
	       " 600.50::numeric AS p95, 700.75::numeric AS p99, 42 AS request_count, 4 AS error_count,"
	       " 9.52::numeric AS error_rate FROM (VALUES ('api.latency', '/orders'), ('late.series', '/x')) v(n, e)");
	/* A changed point (same key, new values) in a recent bucket. */
	record("SELECT time, metric_name, endpoint, p50 + 100 AS p50, p95, p99, request_count + 1000 AS"
	       " request_count, error_count, error_rate FROM tb_performance_metric WHERE metric_name = 'db.query' AND "
	       "time = (SELECT max(time)"
	       " FROM tb_performance_metric WHERE metric_name = 'db.query')");
	assert_true(rollup_mismatches("tb_performance_metric_5min", "5 minutes") > 0);
	run(&stats);
	assert_int_equal(stats.buckets_5min, 2);
	assert_int_equal(stats.buckets_hourly, 2);
	assert_true(stats.watermark_seq > before);
	assert_int_equal(watermark(), last_seq());
	assert_rollups_match();
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_performance_metric_hourly"
	                                     " WHERE metric_name = 'late.series'"),
	                 1);

	/* Points gone from a logged bucket: its rollup rows go too. */
	sql("BEGIN;"
	    " DELETE FROM tb_performance_metric WHERE metric_name = 'late.series';"
	    " SELECT mon_metrics_commit(0, now(), now(), ARRAY[date_bin('5 minutes', now() - interval '20 hours',"
	    "  TIMESTAMPTZ 'epoch')], '\\x'::bytea);"
	    " COMMIT");
	run(&stats);
	assert_int_equal(stats.buckets_5min, 1);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_performance_metric_5min"
	                                     " WHERE metric_name = 'late.series'"),
	                 0);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_performance_metric_hourly"
	                                     " WHERE metric_name = 'late.series'"),
	                 0);
	assert_rollups_match();

	/* A bucket past raw retention is never re-aggregated: its rollups are all that is left. */
	sql("INSERT INTO tb_performance_metric_5min (bucket, metric_name, endpoint, total_requests, data_points)"
	    " VALUES (date_bin('5 minutes', now() - interval '30 days', TIMESTAMPTZ 'epoch'), 'old', '', 7, 1);"
	    "INSERT INTO tb_performance_metric_hourly (bucket, metric_name, endpoint, total_requests, data_points)"
	    " VALUES (date_bin('1 hour', now() - interval '30 days', TIMESTAMPTZ 'epoch'), 'old', '', 7, 1);"
	    "BEGIN;"
	    " SELECT mon_metrics_commit(0, now(), now(), ARRAY[date_bin('5 minutes', now() - interval '30 days',"
	    "  TIMESTAMPTZ 'epoch')], '\\x'::bytea);"
	    " COMMIT");
	run(&stats);
	assert_int_equal(stats.buckets_5min, 0);
	assert_int_equal(watermark(), last_seq());
	assert_int_equal(
	        test_db_count(pool, "SELECT count(*) FROM tb_performance_metric_5min WHERE metric_name = 'old'"), 1);
	assert_int_equal(
	        test_db_count(pool, "SELECT count(*) FROM tb_performance_metric_hourly WHERE metric_name = 'old'"), 1);
}

/*
 * A crash of PostgreSQL empties the UNLOGGED ingest log (and the intact
 * mark with it) while the points of the lost batches are committed: the
 * next run re-aggregates every bucket within raw retention.
 */
static void test_metrics_rollup_lost_log_full_refresh(void **state)
{
	(void)state;
	struct metrics_maintenance_stats stats;
	reset();
	record_history(0, 899);
	run(&stats);
	assert_rollups_match();
	int64_t mark = watermark();

	/* Batches committed before the crash, their log rows lost with it. */
	record_history(900, 1799);
	record("SELECT now() - interval '1 day' AS time, 'lost.metric'::varchar(100) AS metric_name,"
	       " '/l'::varchar(500) AS endpoint, 3.50::numeric AS p50, NULL::numeric AS p95, NULL::numeric AS p99,"
	       " 5 AS request_count, 1 AS error_count, 20.00::numeric AS error_rate");
	/* A rollup row whose points are gone, within raw retention. */
	sql("INSERT INTO tb_performance_metric_5min (bucket, metric_name, endpoint, total_requests, data_points)"
	    " VALUES (date_bin('5 minutes', now() - interval '3 days', TIMESTAMPTZ 'epoch'), 'ghost', '', 1, 1)");
	/* The crash: unlogged tables come back empty, the logged sequence jumps ahead. */
	sql("TRUNCATE tb_metric_ingest_log, tb_metric_ingest_log_intact;"
	    " SELECT setval('seq_metric_ingest', (SELECT last_value FROM seq_metric_ingest) + 32)");
	assert_true(rollup_mismatches("tb_performance_metric_5min", "5 minutes") > 0);

	run(&stats);
	assert_true(stats.is_full_refresh);
	assert_true(stats.buckets_5min >= 7 * 288); /* every bucket within raw retention */
	assert_true(stats.buckets_5min <= 7 * 288 + 2);
	assert_true(stats.buckets_hourly >= 7 * 24);
	assert_true(stats.buckets_hourly <= 7 * 24 + 2);
	assert_int_equal(stats.watermark_seq, mark);
	assert_rollups_match();
	/* Done: the log is marked whole again and the rebuild's progress is cleared. */
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_metric_ingest_log_intact"), 1);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_metric_rollup_progress"), 0);
	assert_int_equal(
	        test_db_count(pool, "SELECT count(*) FROM tb_performance_metric_5min WHERE metric_name = 'ghost'"), 0);
	assert_int_equal(
	        test_db_count(pool,
	                      "SELECT count(*) FROM tb_performance_metric_5min WHERE metric_name = 'lost.metric'"),
	        1);

	/* The log is trusted again: the next run has nothing to do, new batches go the usual way. */
	run(&stats);
	assert_false(stats.is_full_refresh);
	assert_int_equal(stats.buckets_5min, 0);
	record("SELECT now() - interval '10 minutes' AS time, 'after.crash'::varchar(100) AS metric_name,"
	       " ''::varchar(500) AS endpoint, 1.25::numeric AS p50, NULL::numeric AS p95, NULL::numeric AS p99,"
	       " 1 AS request_count, 0 AS error_count, NULL::numeric AS error_rate");
	assert_true(last_seq() > mark + 32);
	run(&stats);
	assert_false(stats.is_full_refresh);
	assert_int_equal(stats.buckets_5min, 1);
	assert_int_equal(watermark(), last_seq());
	assert_rollups_match();
}

/* Runs scripts/pgtmp.sh CMD DIR, failing the test when it fails. */
static void pgtmp(const char *cmd, const char *dir)
{
	char line[2048];
	snprintf(line, sizeof(line), "'%s/scripts/pgtmp.sh' %s '%s' >/dev/null", getenv("MON_SOURCE_DIR"), cmd, dir);
	if (system(line) != 0)
		fail_msg("%s failed", line);
}

/*
 * The same with a real crash, on a cluster of its own (the shared one
 * serves other tests): an immediate stop makes the restart run crash
 * recovery, which empties the UNLOGGED log and the intact mark.
 */
static void test_metrics_rollup_after_a_real_crash(void **state)
{
	(void)state;
	struct metrics_maintenance_stats stats;
	struct mon_error err = {0};
	if (getenv("MON_SOURCE_DIR") == NULL || getenv("MON_BUILD_DIR") == NULL)
		skip();
	char dir[1024];
	char conninfo[1200];
	snprintf(dir, sizeof(dir), "%s/tests/pg-rollup-crash", getenv("MON_BUILD_DIR"));
	snprintf(conninfo, sizeof(conninfo), "host=%s user=postgres dbname=postgres", dir);
	struct db_pool *shared_pool = pool;
	PGconn *shared_pg = pg;
	pgtmp("start", dir);
	test_db_admin(conninfo, "DROP DATABASE IF EXISTS rollup_crash WITH (FORCE)");
	test_db_admin(conninfo, "CREATE DATABASE rollup_crash");
	snprintf(conninfo, sizeof(conninfo), "host=%s user=postgres dbname=rollup_crash", dir);
	pool = test_db_pool(conninfo, 2);
	cfg.pool = pool;
	pg = PQconnectdb(conninfo);
	assert_int_equal(PQstatus(pg), CONNECTION_OK);
	if (db_migrate(pool, &err) != 0)
		fail_msg("db_migrate: %s", err.msg);
	sql("SET synchronous_commit = on");
	run(&stats);
	record_history(0, 599);
	run(&stats);
	assert_false(stats.is_full_refresh);
	int64_t mark = watermark();
	record_history(600, 1199); /* committed, then lost from the log */
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_metric_ingest_log WHERE seq > (SELECT"
	                                     " watermark_seq FROM tb_metric_rollup_state)"),
	                 1);
	PQfinish(pg);
	db_pool_destroy(pool);

	pgtmp("stop", dir);
	pgtmp("start", dir);
	pool = test_db_pool(conninfo, 2);
	cfg.pool = pool;
	pg = PQconnectdb(conninfo);
	assert_int_equal(PQstatus(pg), CONNECTION_OK);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_metric_ingest_log"), 0);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_performance_metric"), 3 * 1200);
	assert_true(rollup_mismatches("tb_performance_metric_5min", "5 minutes") > 0);
	run(&stats);
	assert_true(stats.is_full_refresh);
	assert_true(stats.watermark_seq >= mark);
	assert_rollups_match();
	run(&stats);
	assert_false(stats.is_full_refresh);

	PQfinish(pg);
	db_pool_destroy(pool);
	pgtmp("stop", dir);
	pool = shared_pool;
	pg = shared_pg;
	cfg.pool = pool;
}

static void test_metrics_rollup_one_replica_at_a_time(void **state)
{
	(void)state;
	struct metrics_maintenance_stats stats;
	struct mon_error err = {0};
	reset();
	record_history(0, 59);
	int64_t mark = watermark();
	PGconn *other = PQconnectdb(tdb.conninfo);
	assert_int_equal(PQstatus(other), CONNECTION_OK);
	PGresult *res = PQexec(other, "SELECT pg_advisory_lock(7206011)");
	assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
	PQclear(res);
	assert_int_equal(metrics_maintenance_run(&cfg, &stats, &err), 0);
	assert_true(stats.is_skipped);
	assert_int_equal(stats.buckets_5min, 0);
	assert_int_equal(watermark(), mark);
	res = PQexec(other, "SELECT pg_advisory_unlock(7206011)");
	assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
	PQclear(res);
	PQfinish(other);
	run(&stats);
	assert_true(stats.buckets_5min > 0);
	assert_int_equal(watermark(), last_seq());
	assert_rollups_match();
}

/*
 * A long query holding a table makes the job give up making its partitions
 * (after lock_timeout) instead of queueing every other query behind its
 * lock; the rollups are done all the same, the partition on a later run.
 */
static void test_metrics_rollup_does_not_queue_behind_long_queries(void **state)
{
	(void)state;
	struct metrics_maintenance_stats stats;
	reset();
	char part[128];
	test_db_scalar(
	        pool,
	        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent ="
	        " 'tb_performance_metric_hourly'::regclass AND c.relname <> 'tb_performance_metric_hourly_default'"
	        " ORDER BY c.relname DESC LIMIT 1",
	        part, sizeof(part));
	char q[256];
	snprintf(q, sizeof(q), "DROP TABLE %s", part);
	sql(q);
	snprintf(q, sizeof(q), "SELECT to_regclass('%s') IS NOT NULL", part);
	record_history(0, 59);
	PGconn *other = PQconnectdb(tdb.conninfo);
	assert_int_equal(PQstatus(other), CONNECTION_OK);
	PGresult *res = PQexec(other, "BEGIN; LOCK TABLE tb_performance_metric_hourly IN ACCESS SHARE MODE");
	assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
	PQclear(res);
	int64_t started = db_now_ms_for_tests();
	run(&stats);
	assert_true(db_now_ms_for_tests() - started < 10000);
	assert_true(stats.buckets_5min > 0);
	assert_int_equal(watermark(), last_seq());
	char is_there[8];
	test_db_scalar(pool, q, is_there, sizeof(is_there));
	assert_string_equal(is_there, "f");
	res = PQexec(other, "COMMIT");
	PQclear(res);
	PQfinish(other);
	run(&stats);
	test_db_scalar(pool, q, is_there, sizeof(is_there));
	assert_string_equal(is_there, "t");
	assert_rollups_match();
}

struct racer {
	struct metrics_maintenance_stats stats;
	int rc;
};

static void *race(void *arg)
{
	struct racer *r = arg;
	struct mon_error err = {0};
	r->rc = metrics_maintenance_run(&cfg, &r->stats, &err);
	return NULL;
}

/* Two runs at once (as from two replicas): each bucket is aggregated by one of them, the result is right. */
static void test_metrics_rollup_concurrent_runs(void **state)
{
	(void)state;
	reset();
	record_history(0, 1799);
	struct racer a = {0};
	struct racer b = {0};
	pthread_t ta;
	pthread_t tb;
	assert_int_equal(pthread_create(&ta, NULL, race, &a), 0);
	assert_int_equal(pthread_create(&tb, NULL, race, &b), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	assert_int_equal(a.rc, 0);
	assert_int_equal(b.rc, 0);
	long buckets = test_db_count(pool, "SELECT count(DISTINCT date_bin('5 minutes', time, TIMESTAMPTZ 'epoch'))"
	                                   " FROM tb_performance_metric");
	/* either one skipped, or they ran one after the other and the second found nothing */
	assert_int_equal(a.stats.buckets_5min + b.stats.buckets_5min, buckets);
	assert_int_equal(watermark(), last_seq());
	assert_rollups_match();
}

/* Old partitions of each table are dropped at its own age; newer data stays. */
static void test_metrics_rollup_retention(void **state)
{
	(void)state;
	struct metrics_maintenance_stats stats;
	reset();
	record_history(0, 59);
	/* where pg_partman manages the raw table, an old partition is made its way (it parses the names) */
	sql("DO $$ BEGIN"
	    " IF to_regclass('partman.part_config') IS NOT NULL AND EXISTS (SELECT 1 FROM partman.part_config"
	    "  WHERE parent_table = 'public.tb_performance_metric') THEN"
	    "  PERFORM partman.create_partition_time('public.tb_performance_metric', ARRAY[now() - interval '20 "
	    "days']);"
	    " ELSE"
	    "  PERFORM mon_create_partition('tb_performance_metric', mon_partition_start(now() - interval '20 days',"
	    "   interval '1 day'), interval '1 day');"
	    " END IF; END $$;"
	    "INSERT INTO tb_performance_metric (time, metric_name, endpoint) VALUES (now() - interval '20 days', "
	    "'old', '');"
	    "INSERT INTO tb_performance_metric (time, metric_name, endpoint) VALUES (now() - interval '6 days', "
	    "'kept', '');"
	    "SELECT mon_create_partition('tb_performance_metric_5min', mon_partition_start(now() - interval '120 days',"
	    "  interval '7 days'), interval '7 days');"
	    "INSERT INTO tb_performance_metric_5min (bucket, metric_name, endpoint) VALUES"
	    " (date_bin('5 minutes', now() - interval '120 days', TIMESTAMPTZ 'epoch'), 'old', ''),"
	    " (date_bin('5 minutes', now() - interval '20 days', TIMESTAMPTZ 'epoch'), 'kept', '');"
	    "SELECT mon_create_partition('tb_performance_metric_hourly', mon_partition_start(now() - interval '400 "
	    "days',"
	    "  interval '1 month'), interval '1 month');"
	    "INSERT INTO tb_performance_metric_hourly (bucket, metric_name, endpoint) VALUES"
	    " (date_bin('1 hour', now() - interval '400 days', TIMESTAMPTZ 'epoch'), 'old', ''),"
	    " (date_bin('1 hour', now() - interval '100 days', TIMESTAMPTZ 'epoch'), 'kept', '')");
	char name[3][128];
	test_db_scalar(pool, "SELECT tableoid::regclass FROM tb_performance_metric WHERE metric_name = 'old'", name[0],
	               sizeof(name[0]));
	test_db_scalar(pool, "SELECT tableoid::regclass FROM tb_performance_metric_5min WHERE metric_name = 'old'",
	               name[1], sizeof(name[1]));
	test_db_scalar(pool, "SELECT tableoid::regclass FROM tb_performance_metric_hourly WHERE metric_name = 'old'",
	               name[2], sizeof(name[2]));
	for (int i = 0; i < 3; i++)
		assert_null(strstr(name[i], "default"));

	run(&stats);
	assert_int_equal(stats.partitions_dropped, 3);
	static const char *const tables[] = {"tb_performance_metric", "tb_performance_metric_5min",
	                                     "tb_performance_metric_hourly"};
	for (int i = 0; i < 3; i++) {
		char q[512];
		snprintf(q, sizeof(q), "SELECT to_regclass('%s') IS NULL", name[i]);
		char is_gone[8];
		test_db_scalar(pool, q, is_gone, sizeof(is_gone));
		assert_string_equal(is_gone, "t");
		snprintf(q, sizeof(q), "SELECT count(*) FROM %s WHERE metric_name = 'old'", tables[i]);
		assert_int_equal(test_db_count(pool, q), 0);
		snprintf(q, sizeof(q), "SELECT count(*) FROM %s WHERE metric_name = 'kept'", tables[i]);
		assert_int_equal(test_db_count(pool, q), 1);
	}
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_performance_metric WHERE metric_name <> 'kept'"),
	                 3 * 60);
	/* A second run finds nothing more to drop. */
	run(&stats);
	assert_int_equal(stats.partitions_dropped, 0);

	/* Old rows parked in a DEFAULT partition go in bounded batches. */
	sql("INSERT INTO tb_performance_metric_default (time, metric_name, endpoint)"
	    " SELECT now() - interval '30 days' - g * interval '1 second', 'parked', '' FROM generate_series(1, 7) g");
	assert_int_equal(test_db_count(pool, "SELECT mon_delete_default_before('tb_performance_metric',"
	                                     " now() - interval '7 days', 5)"),
	                 5);
	assert_int_equal(test_db_count(pool, "SELECT mon_delete_default_before('tb_performance_metric',"
	                                     " now() - interval '7 days', 5)"),
	                 2);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_performance_metric WHERE metric_name = 'parked'"),
	                 0);
}

/* Log rows go once aggregated and older than the replay window; recent ones stay for resumes. */
static void test_metrics_rollup_prunes_log(void **state)
{
	(void)state;
	struct metrics_maintenance_stats stats;
	reset();
	sql("DELETE FROM tb_metric_ingest_log");
	for (int i = 0; i < 5; i++)
		record_history(i * 10, i * 10 + 9);
	int64_t last = last_seq();
	run(&stats);
	assert_int_equal(stats.log_rows_deleted, 0);
	assert_int_equal(watermark(), last);
	sql("UPDATE tb_metric_ingest_log SET committed_at = now() - interval '11 minutes'"
	    " WHERE seq < (SELECT max(seq) FROM tb_metric_ingest_log)");
	run(&stats);
	assert_int_equal(stats.log_rows_deleted, 4);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_metric_ingest_log"), 1);
	/* A shorter window removes the rest once they are older than it. */
	sql("UPDATE tb_metric_ingest_log SET committed_at = now() - interval '2 minutes'");
	cfg.replay_window_s = 60;
	run(&stats);
	cfg.replay_window_s = 0;
	assert_int_equal(stats.log_rows_deleted, 1);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_metric_ingest_log"), 0);
	/* The log is empty but whole: no full refresh. */
	run(&stats);
	assert_false(stats.is_full_refresh);
}

static void test_metrics_rollup_refuses_bad_settings(void **state)
{
	(void)state;
	struct mon_error err = {0};
	struct metrics_maintenance *job = NULL;
	struct metrics_maintenance_config bad = cfg;
	bad.raw_retention_days = 30;
	bad.rollup_5min_days = 10;
	assert_int_equal(metrics_maintenance_run(&bad, NULL, &err), MON_EINVAL);
	bad = cfg;
	bad.rollup_5min_days = 400;
	bad.rollup_hourly_days = 365;
	assert_int_equal(metrics_maintenance_run(&bad, NULL, &err), MON_EINVAL);
	bad = cfg;
	bad.pool = NULL;
	assert_int_equal(metrics_maintenance_run(&bad, NULL, &err), MON_EINVAL);
	bad = cfg;
	bad.interval_ms = -1;
	assert_int_equal(metrics_maintenance_start(&bad, &job, &err), MON_EINVAL);
	assert_null(job);
}

static void test_metrics_rollup_job_starts_and_stops(void **state)
{
	(void)state;
	struct mon_error err = {0};
	struct metrics_maintenance *job = NULL;
	reset();
	record_history(0, 29);
	struct metrics_maintenance_config c = cfg;
	c.interval_ms = 200;
	assert_int_equal(metrics_maintenance_start(&c, &job, &err), 0);
	int64_t deadline = db_now_ms_for_tests() + 15000;
	while (watermark() != last_seq() && db_now_ms_for_tests() < deadline)
		test_sleep_ms(100);
	assert_int_equal(watermark(), last_seq());
	record_history(30, 59);
	deadline = db_now_ms_for_tests() + 15000;
	while (watermark() != last_seq() && db_now_ms_for_tests() < deadline)
		test_sleep_ms(100);
	assert_int_equal(watermark(), last_seq());
	metrics_maintenance_stop(job);
	assert_rollups_match();
	metrics_maintenance_stop(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_metrics_rollup_equals_seed_aggregates),
	        cmocka_unit_test(test_metrics_rollup_hourly_is_exact),
	        cmocka_unit_test(test_metrics_rollup_late_points),
	        cmocka_unit_test(test_metrics_rollup_lost_log_full_refresh),
	        cmocka_unit_test(test_metrics_rollup_after_a_real_crash),
	        cmocka_unit_test(test_metrics_rollup_one_replica_at_a_time),
	        cmocka_unit_test(test_metrics_rollup_concurrent_runs),
	        cmocka_unit_test(test_metrics_rollup_does_not_queue_behind_long_queries),
	        cmocka_unit_test(test_metrics_rollup_retention),
	        cmocka_unit_test(test_metrics_rollup_prunes_log),
	        cmocka_unit_test(test_metrics_rollup_refuses_bad_settings),
	        cmocka_unit_test(test_metrics_rollup_job_starts_and_stops),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
