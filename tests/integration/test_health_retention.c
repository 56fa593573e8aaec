/*
 * Retention of the health check log (server/health/retention.c) against the
 * throwaway cluster: old checks, change events and uptime rollups go, recent
 * ones stay, batches of more than one statement finish, a run is skipped
 * while another replica holds the lock, bad ages are refused, and the
 * background job starts and stops. The job also prunes the stored outcomes
 * of idempotency keys (svc_idem_prune, server/common/idem.c).
 */
#include "test_db_common.h"

#include "common/idem.h"
#include "health/retention.h"

static struct test_db tdb;
static struct db_pool *pool;

static int group_setup(void **state)
{
	(void)state;
	struct mon_error err = {0};
	test_db_create(&tdb, "health_retention");
	pool = test_db_pool(tdb.conninfo, 4);
	if (db_migrate(pool, &err) != 0)
		fail_msg("db_migrate: %s", err.msg);
	test_db_exec(pool, "INSERT INTO tb_service_health (id, name, service_type) VALUES ('svc-a', 'A', 'api'),"
	                   " ('svc-b', 'B', 'database')");
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	db_pool_destroy(pool);
	test_db_drop(&tdb);
	return 0;
}

/* 6,000 checks of svc-a older than 40 days (more than a batch), and some recent ones of both services. */
static void fill(void)
{
	test_db_exec(pool, "DELETE FROM tb_health_check_log");
	test_db_exec(pool, "DELETE FROM tb_service_health_event");
	test_db_exec(pool, "INSERT INTO tb_health_check_log (service_id, status, checked_at)"
	                   " SELECT 'svc-a', 'healthy', now() - interval '40 days' - g * interval '1 second'"
	                   " FROM generate_series(1, 6000) g");
	test_db_exec(pool, "INSERT INTO tb_health_check_log (service_id, status, checked_at)"
	                   " SELECT s, 'down', now() - g * interval '1 day' FROM generate_series(0, 29) g,"
	                   " unnest(ARRAY['svc-a', 'svc-b']) s");
	test_db_exec(pool, "INSERT INTO tb_service_health_event (service_id, kind, occurred_at) VALUES"
	                   " ('svc-a', 'checked', now() - interval '31 days'), ('svc-a', 'checked', now())");
	test_db_exec(pool, "INSERT INTO tb_service_uptime_hourly (service_id, hour, up_ms) VALUES"
	                   " ('svc-b', health_hour(now() - interval '45 days'), 1000)");
}

static void test_health_retention_removes_old_rows_only(void **state)
{
	(void)state;
	struct mon_error err = {0};
	struct health_retention_stats stats;
	fill();
	long recent = test_db_count(pool, "SELECT count(*) FROM tb_health_check_log WHERE checked_at >= now() - "
	                                  "interval '30 days'");
	assert_int_equal(recent, 60);
	assert_int_equal(health_retention_run(pool, 30, &stats, &err), 0);
	assert_false(stats.is_skipped);
	assert_int_equal(stats.checks_deleted, 6000);
	assert_int_equal(stats.events_deleted, 1);
	assert_true(stats.rollups_deleted >= 1);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_health_check_log"), 60);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_health_check_log WHERE checked_at < now() - "
	                                     "interval '30 days'"),
	                 0);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_service_health_event"), 1);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_service_uptime_hourly WHERE hour < now() - "
	                                     "interval '31 days'"),
	                 0);
	/* A shorter age removes more, a second run finds nothing. */
	assert_int_equal(health_retention_run(pool, 7, &stats, &err), 0);
	assert_int_equal(stats.checks_deleted, 2 * 23);
	assert_int_equal(health_retention_run(pool, 7, &stats, &err), 0);
	assert_int_equal(stats.checks_deleted, 0);
}

static void test_health_retention_one_replica_at_a_time(void **state)
{
	(void)state;
	struct mon_error err = {0};
	struct health_retention_stats stats;
	fill();
	PGconn *other = PQconnectdb(tdb.conninfo);
	assert_int_equal(PQstatus(other), CONNECTION_OK);
	PGresult *res = PQexec(other, "SELECT pg_advisory_lock(7206002)");
	assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
	PQclear(res);
	assert_int_equal(health_retention_run(pool, 30, &stats, &err), 0);
	assert_true(stats.is_skipped);
	assert_int_equal(stats.checks_deleted, 0);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_health_check_log"), 6060);
	/* Released explicitly: a closed connection's backend lets go of it only when it has exited. */
	res = PQexec(other, "SELECT pg_advisory_unlock(7206002)");
	assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
	PQclear(res);
	PQfinish(other);
	assert_int_equal(health_retention_run(pool, 30, &stats, &err), 0);
	assert_false(stats.is_skipped);
	assert_int_equal(stats.checks_deleted, 6000);
}

static void test_health_retention_refuses_bad_ages(void **state)
{
	(void)state;
	struct mon_error err = {0};
	struct health_retention *job = NULL;
	assert_int_equal(health_retention_run(pool, 0, NULL, &err), MON_EINVAL);
	assert_int_equal(health_retention_run(pool, -3, NULL, &err), MON_EINVAL);
	assert_int_equal(health_retention_start(pool, 0, 0, 60, &job, &err), MON_EINVAL);
	assert_null(job);
}

/* Two stored outcomes of idempotency keys: one 25 hours old, one new. */
static void fill_keys(void)
{
	test_db_exec(pool, "DELETE FROM tb_idempotency_key");
	test_db_exec(pool,
	             "INSERT INTO tb_idempotency_key (caller_id, method, idempotency_key, request_digest, response,"
	             " created_at) VALUES ('admin', '/m', 'old', '\\x00', '\\x', now() - interval '25 hours'),"
	             " ('admin', '/m', 'new', '\\x00', '\\x', now())");
}

static void test_health_retention_prunes_idempotency_keys(void **state)
{
	(void)state;
	struct mon_error err = {0};
	int64_t deleted = -1;
	fill_keys();
	assert_int_equal(svc_idem_prune(pool, 24, &deleted, &err), 0);
	assert_int_equal(deleted, 1);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_idempotency_key WHERE idempotency_key = 'new'"),
	                 1);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_idempotency_key"), 1);
	/* More than one batch of SVC_IDEM_PRUNE_BATCH rows: every batch runs. */
	test_db_exec(pool,
	             "INSERT INTO tb_idempotency_key (caller_id, method, idempotency_key, request_digest, response,"
	             " created_at) SELECT 'admin', '/m', 'old-' || i, '\\x00', '\\x', now() - interval '25 hours'"
	             " FROM generate_series(1, 5001) AS i");
	assert_int_equal(svc_idem_prune(pool, 24, &deleted, &err), 0);
	assert_int_equal(deleted, 5001);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_idempotency_key"), 1);
	assert_int_equal(svc_idem_prune(pool, 0, NULL, &err), MON_EINVAL);
	assert_non_null(strstr(err.msg, "idempotency-retention-hours"));
}

static void test_health_retention_job_starts_and_stops(void **state)
{
	(void)state;
	struct mon_error err = {0};
	struct health_retention *job = NULL;
	fill();
	fill_keys();
	assert_int_equal(health_retention_start(pool, 30, 24, 1, &job, &err), 0);
	/*
	 * The first run comes a few seconds after start; a loaded machine may
	 * take much longer, so the wait is generous. The job is stopped before
	 * the assertion, so that a failure does not leave its thread running.
	 */
	long left = -1, keys = -1;
	for (int i = 0; i < 900 && (left != 60 || keys != 1); i++) {
		test_sleep_ms(100);
		left = test_db_count(pool, "SELECT count(*) FROM tb_health_check_log");
		keys = test_db_count(pool, "SELECT count(*) FROM tb_idempotency_key");
	}
	health_retention_stop(job);
	assert_int_equal(left, 60);
	assert_int_equal(keys, 1);
	health_retention_stop(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_health_retention_removes_old_rows_only),
	        cmocka_unit_test(test_health_retention_one_replica_at_a_time),
	        cmocka_unit_test(test_health_retention_refuses_bad_ages),
	        cmocka_unit_test(test_health_retention_prunes_idempotency_keys),
	        cmocka_unit_test(test_health_retention_job_starts_and_stops),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
