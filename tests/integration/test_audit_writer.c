/*
 * The audit trail against a real database: audit_write_tx inserts its row
 * in the caller's transaction (and vanishes with it), and the writer of
 * refused calls records them, keeps them while the database is away,
 * counts what its bounded queue cannot hold and records a summary of it.
 */
#include "test_db_common.h"

#include "audit/audit.h"

static struct test_db tdb;
static struct db_pool *pool;

static int setup(void **state)
{
	struct mon_error err = {0};
	test_db_create(&tdb, "audit");
	pool = test_db_pool(tdb.conninfo, 4);
	if (db_migrate(pool, &err) != 0)
		fail_msg("db_migrate: %s", err.msg);
	return 0;
}

static int teardown(void **state)
{
	db_pool_destroy(pool);
	test_db_drop(&tdb);
	return 0;
}

struct write_arg {
	const struct audit_event *ev;
	int fail_after; /* returned after the write when non-zero */
};

static int write_fn(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct write_arg *a = arg;
	int rc = audit_write_tx(conn, NULL, a->ev, err);
	if (rc == 0 && a->fail_after != 0)
		rc = mon_error_set(err, a->fail_after, "forced failure");
	return rc;
}

static void test_audit_write_tx_inserts_in_the_transaction(void **state)
{
	struct mon_error err = {0};
	json_t *before = json_pack("{s:s, s:s, s:i}", "id", "k1", "description", "old", "n", 1);
	json_t *after = json_pack("{s:s, s:s, s:i}", "id", "k1", "description", "new", "n", 1);
	struct audit_event ev = {.action = "update",
	                         .resource_type = "api-key",
	                         .resource_id = "k1",
	                         .description = "changed the description of API key \"k1\"",
	                         .before = before,
	                         .after = after,
	                         .module = "access"};
	struct write_arg a = {.ev = &ev};
	assert_int_equal(db_tx_run(pool, 5000, write_fn, &a, &err), 0);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_audit_event WHERE resource_id = 'k1'"
	                                     " AND user_id = 'system' AND user_role = 'none' AND outcome = 'success'"
	                                     " AND action_type = 'update' AND ip_address = '127.0.0.1'"
	                                     " AND event_id LIKE 'AUD-%' AND severity = 'info' AND module = 'access'"
	                                     " AND changes = '{\"description\": {\"from\": \"old\", \"to\": \"new\"}}'"
	                                     " AND before_data->>'description' = 'old'"
	                                     " AND after_data->>'description' = 'new'"),
	                 1);
	json_decref(before);
	json_decref(after);
}

static void test_audit_write_tx_rolls_back_with_the_transaction(void **state)
{
	struct mon_error err = {0};
	struct audit_event ev = {.action = "create",
	                         .resource_type = "api-key",
	                         .resource_id = "k2",
	                         .description = "created API key \"k2\"",
	                         .module = "access"};
	struct write_arg a = {.ev = &ev, .fail_after = MON_EINTERNAL};
	assert_int_equal(db_tx_run(pool, 5000, write_fn, &a, &err), MON_EINTERNAL);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_audit_event WHERE resource_id = 'k2'"), 0);
}

static void test_audit_write_tx_refuses_bad_events(void **state)
{
	struct mon_error err = {0};
	struct audit_event ev = {.action = "frobnicate", .resource_type = "api-key", .description = "x"};
	struct write_arg a = {.ev = &ev};
	assert_int_equal(db_tx_run(pool, 5000, write_fn, &a, &err), MON_EINVAL);
	ev.action = "create";
	ev.description = "";
	assert_int_equal(db_tx_run(pool, 5000, write_fn, &a, &err), MON_EINVAL);
	ev.description = "x";
	ev.severity = "loud";
	assert_int_equal(db_tx_run(pool, 5000, write_fn, &a, &err), MON_EINVAL);
}

static void test_audit_write_tx_clips_hostile_text(void **state)
{
	struct mon_error err = {0};
	char long_id[300];
	memset(long_id, 'r', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	struct audit_event ev = {.action = "create",
	                         .resource_type = "thing",
	                         .resource_id = long_id,
	                         .resource_name = "bad \xff utf-8",
	                         .description = "clipped"};
	struct write_arg a = {.ev = &ev};
	assert_int_equal(db_tx_run(pool, 5000, write_fn, &a, &err), 0);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_audit_event WHERE resource_type = 'thing'"
	                                     " AND length(resource_id) = 100 AND resource_name = 'bad ? utf-8'"),
	                 1);
}

static long wait_count(struct db_pool *p, const char *sql, long want, int timeout_ms)
{
	long n = -1;
	int64_t until = db_now_ms_for_tests() + timeout_ms;
	do {
		n = test_db_count(p, sql);
		if (n >= want)
			break;
		test_sleep_ms(50);
	} while (db_now_ms_for_tests() < until);
	return n;
}

static void test_audit_writer_records_refusals(void **state)
{
	struct audit_writer *w = NULL;
	struct mon_error err = {0};
	assert_int_equal(audit_writer_create(pool, &w, &err), 0);
	struct rpc_auth_request req = {.method = "/monitoring.v1.AccessService/CreateCaller",
	                               .min_role = RPC_ROLE_ADMIN,
	                               .bearer_token = "mk_0123456789abcdef_SECRETSECRETSECRET",
	                               .peer = "ipv6:%5B::1%5D:40000",
	                               .user_agent = "grpc-python/1.0",
	                               .request_id = "req-deny-1"};
	audit_on_deny(w, &req, NULL, MON_EUNAUTH, "API key revoked");
	struct rpc_identity who = {.caller_id = "viewer-1",
	                           .email = "v@example.com",
	                           .role = RPC_ROLE_VIEWER,
	                           .auth_method = "api-key",
	                           .key_id = "fedcba9876543210"};
	req.request_id = "req-deny-2";
	req.bearer_token = NULL;
	audit_on_deny(w, &req, &who, MON_EPERM, "CreateCaller requires the admin role");
	assert_int_equal(
	        wait_count(pool, "SELECT count(*) FROM tb_audit_event WHERE request_id LIKE 'req-deny-%'", 2, 5000), 2);
	assert_int_equal(
	        test_db_count(pool,
	                      "SELECT count(*) FROM tb_audit_event WHERE request_id = 'req-deny-1'"
	                      " AND user_id = 'anonymous' AND user_role = 'none' AND action_type = 'access-denied'"
	                      " AND outcome = 'failure' AND failure_reason = 'API key revoked'"
	                      " AND resource_type = 'rpc-method'"
	                      " AND resource_id = '/monitoring.v1.AccessService/CreateCaller'"
	                      " AND ip_address = '::1' AND user_agent = 'grpc-python/1.0'"
	                      " AND metadata->>'key_id' = '0123456789abcdef'"
	                      " AND metadata->>'status' = 'UNAUTHENTICATED' AND severity = 'warning'"),
	        1);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_audit_event WHERE request_id = 'req-deny-2'"
	                                     " AND user_id = 'viewer-1' AND user_email = 'v@example.com'"
	                                     " AND user_role = 'viewer' AND metadata->>'key_id' = 'fedcba9876543210'"
	                                     " AND metadata->>'status' = 'PERMISSION_DENIED'"),
	                 1);
	/* Only the public key id is kept, never the secret part of the token. */
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_audit_event t WHERE t::text LIKE '%SECRET%'"), 0);
	audit_writer_destroy(w);
}

/*
 * A writer whose database does not exist yet: events wait in the bounded
 * queue, drops are counted, and once the database appears every queued
 * event and one summary of the drops are written.
 */
static void test_audit_writer_waits_for_the_database_and_summarises_drops(void **state)
{
	struct test_db late;
	struct mon_error err = {0};
	snprintf(late.admin, sizeof(late.admin), "%s", tdb.admin);
	snprintf(late.name, sizeof(late.name), "db_test_audit_late_%ld", (long)getpid());
	snprintf(late.conninfo, sizeof(late.conninfo), "%s dbname=%s", tdb.admin, late.name);
	char sql[256];
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", late.name);
	test_db_admin(late.admin, sql);

	struct db_pool *late_pool = test_db_pool(late.conninfo, 2);
	struct audit_writer *w = NULL;
	assert_int_equal(audit_writer_create_with(late_pool, 5, 20000, &w, &err), 0);
	struct rpc_auth_request req = {.method = "/monitoring.v1.HealthService/CreateService",
	                               .peer = "ipv4:10.0.0.9:1234",
	                               .request_id = "req-late"};
	for (int i = 0; i < 8; i++)
		audit_on_deny(w, &req, NULL, MON_EUNAUTH, "no credentials");
	struct audit_writer_stats st;
	audit_writer_get_stats(w, &st);
	assert_int_equal(st.queued, 5);
	assert_int_equal(st.dropped, 3);

	int64_t until = db_now_ms_for_tests() + 10000;
	do {
		audit_writer_get_stats(w, &st);
		test_sleep_ms(50);
	} while (st.write_errors == 0 && db_now_ms_for_tests() < until);
	assert_true(st.write_errors > 0);
	assert_int_equal(st.written, 0);

	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", late.name);
	test_db_admin(late.admin, sql);
	struct db_pool *migrate_pool = test_db_pool(late.conninfo, 1);
	if (db_migrate(migrate_pool, &err) != 0)
		fail_msg("db_migrate: %s", err.msg);

	assert_int_equal(wait_count(migrate_pool, "SELECT count(*) FROM tb_audit_event", 6, 15000), 6);
	assert_int_equal(test_db_count(migrate_pool, "SELECT count(*) FROM tb_audit_event WHERE request_id = 'req-late'"
	                                             " AND ip_address = '10.0.0.9'"),
	                 5);
	assert_int_equal(test_db_count(migrate_pool, "SELECT count(*) FROM tb_audit_event WHERE user_id = 'system'"
	                                             " AND action_type = 'access-denied' AND outcome = 'failure'"
	                                             " AND description = '3 refused calls not recorded individually'"),
	                 1);
	audit_writer_get_stats(w, &st);
	assert_int_equal(st.written, 6);
	assert_int_equal(st.queued, 0);
	audit_writer_destroy(w);
	db_pool_destroy(migrate_pool);
	db_pool_destroy(late_pool);
	test_db_drop(&late);
}

/* audit_writer_destroy writes what is still queued before it returns. */
static void test_audit_writer_destroy_drains(void **state)
{
	struct audit_writer *w = NULL;
	struct mon_error err = {0};
	assert_int_equal(audit_writer_create(pool, &w, &err), 0);
	struct rpc_auth_request req = {.method = "/monitoring.v1.AlertsService/CreateAlertRule",
	                               .peer = "unix:/tmp/x.sock",
	                               .request_id = "req-drain"};
	for (int i = 0; i < 500; i++)
		audit_on_deny(w, &req, NULL, MON_EPERM, "denied");
	audit_writer_destroy(w);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_audit_event WHERE request_id = 'req-drain'"
	                                     " AND ip_address = '127.0.0.1'"),
	                 500);
}

/* With the database gone for good, destroy gives up after its drain timeout instead of hanging. */
static void test_audit_writer_destroy_gives_up_after_timeout(void **state)
{
	struct mon_error err = {0};
	struct db_pool *nowhere = test_db_pool("host=/nonexistent-directory dbname=x connect_timeout=1", 1);
	struct audit_writer *w = NULL;
	assert_int_equal(audit_writer_create_with(nowhere, 10, 500, &w, &err), 0);
	struct rpc_auth_request req = {.method = "/x.Y/Z", .peer = "ipv4:1.2.3.4:5"};
	audit_on_deny(w, &req, NULL, MON_EUNAUTH, "no credentials");
	int64_t start = db_now_ms_for_tests();
	audit_writer_destroy(w);
	assert_true(db_now_ms_for_tests() - start < 8000);
	db_pool_destroy(nowhere);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_audit_write_tx_inserts_in_the_transaction),
	        cmocka_unit_test(test_audit_write_tx_rolls_back_with_the_transaction),
	        cmocka_unit_test(test_audit_write_tx_refuses_bad_events),
	        cmocka_unit_test(test_audit_write_tx_clips_hostile_text),
	        cmocka_unit_test(test_audit_writer_records_refusals),
	        cmocka_unit_test(test_audit_writer_waits_for_the_database_and_summarises_drops),
	        cmocka_unit_test(test_audit_writer_destroy_drains),
	        cmocka_unit_test(test_audit_writer_destroy_gives_up_after_timeout),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
