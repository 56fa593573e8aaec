/*
 * Migrations against a real server: applied once and idempotent, safe when
 * two replicas start together, a gated pool closed to everything else
 * until migrated, refused when an applied file changed, and
 * the resulting schema holds every table, enum and partition of the data
 * model.
 */
#include "test_db_common.h"

#include <pthread.h>

#include "db/db_internal.h"

static struct test_db tdb;

static int setup(void **state)
{
	test_db_create(&tdb, "migrate");
	return 0;
}

static int teardown(void **state)
{
	test_db_drop(&tdb);
	return 0;
}

static void test_db_migrate_applies_once(void **state)
{
	struct db_pool *pool = test_db_pool(tdb.conninfo, 2);
	struct mon_error err = {0};
	assert_int_equal(db_migrate(pool, &err), 0);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM schema_migrations"), (long)db_migrations_count);
	char before[64];
	test_db_scalar(pool, "SELECT max(applied_at)::text FROM schema_migrations", before, sizeof(before));

	/* a second run (a restart) applies nothing */
	assert_int_equal(db_migrate(pool, &err), 0);
	char after[64];
	test_db_scalar(pool, "SELECT max(applied_at)::text FROM schema_migrations", after, sizeof(after));
	assert_string_equal(before, after);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM schema_migrations"), (long)db_migrations_count);
	db_pool_destroy(pool);
}

static void test_db_migrate_seed_schema_exists(void **state)
{
	struct db_pool *pool = test_db_pool(tdb.conninfo, 2);
	struct mon_error err = {0};
	assert_int_equal(db_migrate(pool, &err), 0);
	static const char *const tables[] = {"tb_service_health",
	                                     "tb_health_check_log",
	                                     "tb_performance_metric",
	                                     "tb_error_log",
	                                     "tb_error_instance",
	                                     "tb_audit_event",
	                                     "tb_alert_rule",
	                                     "tb_alert",
	                                     "tb_dashboard",
	                                     "tb_widget",
	                                     "tb_integration_health",
	                                     "tb_integration_event",
	                                     "tb_user_activity",
	                                     "tb_user_session",
	                                     "tb_performance_metric_5min",
	                                     "tb_performance_metric_hourly",
	                                     "tb_user_activity_hourly",
	                                     "tb_stream_event"};
	for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
		char sql[256];
		snprintf(sql, sizeof(sql),
		         "SELECT count(*) FROM pg_class WHERE relname = '%s' AND relkind IN ('r', 'p')", tables[i]);
		if (test_db_count(pool, sql) != 1)
			fail_msg("table %s is missing", tables[i]);
	}
	/* the twelve enums with the seed's values in the seed's order (alert_status gains 'pending' at the end, 0011)
	 */
	char labels[2048];
	test_db_scalar(
	        pool,
	        "SELECT string_agg(t.typname || '=' || (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)"
	        " FROM pg_enum e WHERE e.enumtypid = t.oid), ' ' ORDER BY t.typname)"
	        " FROM pg_type t WHERE t.typtype = 'e' AND t.typnamespace = 'public'::regnamespace",
	        labels, sizeof(labels));
	assert_string_equal(
	        labels,
	        "alert_rule_status=enabled,disabled,testing "
	        "alert_status=active,acknowledged,resolved,suppressed,pending "
	        "audit_action_type=create,read,update,delete,execute,export,login,logout,access-denied "
	        "caller_role=viewer,editor,admin "
	        "comparison_operator=gt,gte,lt,lte,eq,ne,contains,not-contains "
	        "dashboard_visibility=private,team,organization,public "
	        "error_status=new,acknowledged,in-progress,resolved,ignored "
	        "integration_type=payment-gateway,email-service,cloud-storage,auth-provider,analytics,erp-system,"
	        "sms-service,webhook "
	        "metric_type=counter,gauge,histogram,summary "
	        "notification_channel=email,slack,sms,webhook,pagerduty,in-app "
	        "service_status=healthy,degraded,down,unknown "
	        "severity_level=debug,info,warning,error,fatal,critical "
	        "widget_type=time-series,counter,gauge,table,pie-chart,bar-chart,heatmap,alert-list,custom-query");

	/* the time-series tables are partitioned and take rows for now and for the past */
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM pg_partitioned_table pt JOIN pg_class c ON "
	                                     "c.oid = pt.partrelid WHERE c.relname IN ('tb_performance_metric', "
	                                     "'tb_error_instance', 'tb_audit_event', 'tb_user_activity')"),
	                 4);
	assert_true(test_db_count(pool, "SELECT count(*) FROM pg_inherits WHERE inhparent = "
	                                "'tb_performance_metric'::regclass") > 7);
	test_db_exec(pool, "INSERT INTO tb_performance_metric (time, metric_name, endpoint, request_count) VALUES "
	                   "(now(), 'latency', '/api/a', 3), ('2001-01-01T00:00:00Z', 'latency', '', 1)");
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_performance_metric"), 2);
	test_db_exec(pool, "SELECT mon_maintain_partitions()");
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM tb_performance_metric"), 2);
	/* every seed index is there */
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM pg_class WHERE relkind IN ('i', 'I') AND relname IN "
	                                     "('idx_audit_event_changes', 'idx_error_log_context', "
	                                     "'idx_health_check_retention', 'idx_user_session_retention', "
	                                     "'idx_performance_metric_tags', 'idx_alert_rule_tags')"),
	                 6);
	db_pool_destroy(pool);
}

struct migrate_thread {
	const char *conninfo;
	int rc;
	struct mon_error err;
};

static void *migrate_main(void *arg)
{
	struct migrate_thread *t = arg;
	struct db_pool *pool = test_db_pool(t->conninfo, 1);
	t->rc = db_migrate(pool, &t->err);
	db_pool_destroy(pool);
	return NULL;
}

static void test_db_migrate_concurrent_replicas(void **state)
{
	struct test_db fresh;
	test_db_create(&fresh, "migrate_race");
	struct migrate_thread t[3];
	pthread_t th[3];
	for (int i = 0; i < 3; i++) {
		t[i] = (struct migrate_thread){.conninfo = fresh.conninfo};
		assert_int_equal(pthread_create(&th[i], NULL, migrate_main, &t[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		if (t[i].rc != 0)
			fail_msg("replica %d: %s", i, t[i].err.msg);
	}
	struct db_pool *pool = test_db_pool(fresh.conninfo, 1);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM schema_migrations"), (long)db_migrations_count);
	assert_int_equal(test_db_count(pool, "SELECT count(DISTINCT version) FROM schema_migrations"),
	                 (long)db_migrations_count);
	db_pool_destroy(pool);
	test_db_drop(&fresh);
}

static int noop_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	(void)conn;
	(void)arg;
	(void)err;
	return 0;
}

static void test_db_migrate_gates_the_pool(void **state)
{
	struct test_db fresh;
	test_db_create(&fresh, "migrate_gate");
	struct db_config cfg = {.conninfo = fresh.conninfo, .pool_size = 2, .is_gated_by_migrations = true};
	struct db_pool *pool = NULL;
	struct mon_error err = {0};
	assert_int_equal(db_pool_create(&cfg, &pool, &err), 0);
	/* nothing but the migration reaches a schema still being built */
	struct db_conn *conn = NULL;
	assert_int_equal(db_pool_acquire(pool, 5000, &conn, &err), MON_EUNAVAIL);
	assert_null(conn);
	assert_int_equal(db_tx_run(pool, 5000, noop_tx, NULL, &err), MON_EUNAVAIL);
	assert_int_equal(db_migrate(pool, &err), 0);
	assert_int_equal(db_tx_run(pool, 5000, noop_tx, NULL, &err), 0);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM schema_migrations"), (long)db_migrations_count);
	db_pool_destroy(pool);
	test_db_drop(&fresh);
}

static void test_db_migrate_refuses_changed_checksum(void **state)
{
	struct test_db fresh;
	test_db_create(&fresh, "migrate_sum");
	struct db_pool *pool = test_db_pool(fresh.conninfo, 1);
	struct mon_error err = {0};
	assert_int_equal(db_migrate(pool, &err), 0);
	test_db_exec(pool, "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 3");
	assert_int_equal(db_migrate(pool, &err), MON_EPRECOND);
	assert_non_null(strstr(err.msg, "core_tables"));
	db_pool_destroy(pool);
	test_db_drop(&fresh);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_db_migrate_applies_once),
	        cmocka_unit_test(test_db_migrate_seed_schema_exists),
	        cmocka_unit_test(test_db_migrate_concurrent_replicas),
	        cmocka_unit_test(test_db_migrate_gates_the_pool),
	        cmocka_unit_test(test_db_migrate_refuses_changed_checksum),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
