/*
 * db_tx_run against a real server: commit, rollback on error leaves
 * nothing, the caller's deadline becomes a statement_timeout
 * (MON_EDEADLINE), a deadline already passed (timeout 0 or negative) is
 * MON_EDEADLINE at once without running the function or taking a
 * connection, serialization failures are retried, a failed statement the
 * function ignored does not turn into a silent success, and a connection
 * lost during COMMIT is resolved with pg_xact_status (committed, aborted,
 * or reported as an unknown outcome, never as a plain retryable failure).
 */
#include "test_db_common.h"

#include "db/db_internal.h"

#include <pthread.h>

static struct test_db tdb;
static struct db_pool *pool;

static int setup(void **state)
{
	test_db_create(&tdb, "tx");
	pool = test_db_pool(tdb.conninfo, 4);
	test_db_exec(pool, "CREATE TABLE item (id text PRIMARY KEY, n integer NOT NULL DEFAULT 0)");
	return 0;
}

static int teardown(void **state)
{
	db_pool_destroy(pool);
	test_db_drop(&tdb);
	return 0;
}

static int insert_two(struct db_conn *c, void *arg, struct mon_error *err)
{
	const char *const *ids = arg;
	int rc = db_exec(c, "INSERT INTO item (id) VALUES ($1)", 1, &ids[0], NULL, err);
	if (rc == 0)
		rc = db_exec(c, "INSERT INTO item (id) VALUES ($1)", 1, &ids[1], NULL, err);
	return rc;
}

static void test_db_tx_commits(void **state)
{
	struct mon_error err = {0};
	const char *ids[2] = {"a", "b"};
	assert_int_equal(db_tx_run(pool, 5000, insert_two, ids, &err), 0);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM item WHERE id IN ('a', 'b')"), 2);
	test_db_exec(pool, "DELETE FROM item");
}

static void test_db_tx_rollback_leaves_nothing(void **state)
{
	struct mon_error err = {0};
	/* the second insert violates the primary key: the first must vanish too */
	const char *ids[2] = {"x", "x"};
	assert_int_equal(db_tx_run(pool, 5000, insert_two, ids, &err), MON_EEXIST);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM item"), 0);
}

static int fail_after_insert(struct db_conn *c, void *arg, struct mon_error *err)
{
	const char *id = "y";
	int rc = db_exec(c, "INSERT INTO item (id) VALUES ($1)", 1, &id, NULL, err);
	if (rc != 0)
		return rc;
	return mon_error_set(err, MON_EPRECOND, "illegal transition");
}

static void test_db_tx_function_error_rolls_back(void **state)
{
	struct mon_error err = {0};
	assert_int_equal(db_tx_run(pool, DB_NO_DEADLINE, fail_after_insert, NULL, &err), MON_EPRECOND);
	assert_string_equal(err.msg, "illegal transition");
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM item"), 0);
}

static int sleep_long(struct db_conn *c, void *arg, struct mon_error *err)
{
	return db_exec(c, "SELECT pg_sleep(5)", 0, NULL, NULL, err);
}

static void test_db_tx_statement_timeout_is_deadline(void **state)
{
	struct mon_error err = {0};
	int64_t t0 = db_now_ms_for_tests();
	assert_int_equal(db_tx_run(pool, 300, sleep_long, NULL, &err), MON_EDEADLINE);
	int64_t took = db_now_ms_for_tests() - t0;
	assert_true(took < 2000);
	/* the connection is fine afterwards and the timeout did not leak into it */
	for (int i = 0; i < 4; i++) {
		char v[32];
		test_db_scalar(pool, "SHOW statement_timeout", v, sizeof(v));
		assert_string_equal(v, "0");
	}
}

static int ignore_failure(struct db_conn *c, void *arg, struct mon_error *err)
{
	const char *id = "z";
	if (db_exec(c, "INSERT INTO item (id) VALUES ($1)", 1, &id, NULL, err) != 0)
		return -1;
	struct mon_error ignored = {0};
	if (db_exec(c, "SELECT 1/0", 0, NULL, NULL, &ignored) == 0)
		return -1;
	return 0; /* wrongly reports success */
}

static void test_db_tx_ignored_failure_is_not_success(void **state)
{
	struct mon_error err = {0};
	assert_int_equal(db_tx_run(pool, 5000, ignore_failure, NULL, &err), MON_EINTERNAL);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM item"), 0);
}

/* Increments item 'ctr' under SERIALIZABLE: concurrent runs conflict with 40001. */
static int serializable_increment(struct db_conn *c, void *arg, struct mon_error *err)
{
	int *attempts = arg;
	__atomic_add_fetch(attempts, 1, __ATOMIC_SEQ_CST);
	int rc = db_exec(c, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", 0, NULL, NULL, err);
	if (rc == 0)
		rc = db_exec(c, "SELECT n FROM item WHERE id = 'ctr'", 0, NULL, NULL, err);
	if (rc == 0)
		rc = db_exec(c, "SELECT pg_sleep(0.05)", 0, NULL, NULL, err);
	if (rc == 0)
		rc = db_exec(c, "UPDATE item SET n = n + 1 WHERE id = 'ctr'", 0, NULL, NULL, err);
	return rc;
}

struct inc_thread {
	int *attempts;
	int rc;
};

static int count_runs(struct db_conn *c, void *arg, struct mon_error *err)
{
	(void)c;
	(void)err;
	(*(int *)arg)++;
	return 0;
}

static void test_db_tx_expired_deadline_fails_at_once(void **state)
{
	/*
	 * Every connection is held, so a call that waited for one (as a
	 * timeout of 0 once meant "no deadline") would end in MON_ELIMIT after
	 * the default wait instead of MON_EDEADLINE at once.
	 */
	struct db_conn *held[4] = {0};
	struct mon_error err = {0};
	for (int i = 0; i < 4; i++)
		assert_int_equal(db_pool_acquire(pool, 5000, &held[i], &err), 0);
	const int64_t expired[] = {0, -1, -30000, INT64_MIN};
	int runs = 0;
	for (size_t i = 0; i < sizeof(expired) / sizeof(expired[0]); i++) {
		mon_error_clear(&err);
		assert_int_equal(db_tx_run(pool, expired[i], count_runs, &runs, &err), MON_EDEADLINE);
		assert_int_equal(err.code, MON_EDEADLINE);
		mon_error_clear(&err);
		assert_int_equal(db_read_run(pool, expired[i], count_runs, &runs, &err), MON_EDEADLINE);
		struct db_conn *c = NULL;
		assert_int_equal(db_pool_acquire(pool, expired[i], &c, &err), MON_EDEADLINE);
		assert_null(c);
	}
	assert_int_equal(runs, 0);
	/* a short deadline that passes while waiting for a connection is a deadline too, not "pool busy" */
	assert_int_equal(db_tx_run(pool, 20, count_runs, &runs, &err), MON_EDEADLINE);
	assert_int_equal(runs, 0);
	for (int i = 0; i < 4; i++)
		db_pool_release(pool, held[i]);
	/* and the connections are all usable again */
	assert_int_equal(db_tx_run(pool, DB_NO_DEADLINE, count_runs, &runs, &err), 0);
	assert_int_equal(db_read_run(pool, 5000, count_runs, &runs, &err), 0);
	assert_int_equal(runs, 2);
}

static void *inc_main(void *arg)
{
	struct inc_thread *t = arg;
	struct mon_error err = {0};
	t->rc = db_tx_run(pool, 10000, serializable_increment, t->attempts, &err);
	return NULL;
}

static void test_db_tx_serialization_failure_retried(void **state)
{
	test_db_exec(pool, "INSERT INTO item (id, n) VALUES ('ctr', 0)");
	int attempts = 0;
	struct inc_thread t[2] = {{.attempts = &attempts}, {.attempts = &attempts}};
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, inc_main, &t[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(t[0].rc, 0);
	assert_int_equal(t[1].rc, 0);
	assert_int_equal(test_db_count(pool, "SELECT n FROM item WHERE id = 'ctr'"), 2);
	assert_true(attempts >= 3); /* one of them ran again */
	test_db_exec(pool, "DELETE FROM item");
}

/*
 * A deferred constraint trigger fires inside COMMIT; this one terminates its
 * own backend there, so the connection breaks during COMMIT and the
 * transaction aborts.
 */
static const char kill_at_commit_sql[] =
        "CREATE TABLE doomed (id text PRIMARY KEY);"
        "CREATE FUNCTION kill_self() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(10); RETURN NULL; END $$;"
        "CREATE CONSTRAINT TRIGGER doomed_kill AFTER INSERT ON doomed DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION kill_self()";

static int insert_doomed(struct db_conn *c, void *arg, struct mon_error *err)
{
	const char *id = arg;
	return db_exec(c, "INSERT INTO doomed (id) VALUES ($1)", 1, &id, NULL, err);
}

static void test_db_tx_commit_lost_and_aborted_is_retryable(void **state)
{
	test_db_exec(pool, "DROP TABLE IF EXISTS doomed");
	test_db_exec(pool, "DROP FUNCTION IF EXISTS kill_self");
	struct db_conn *c = NULL;
	struct mon_error err = {0};
	assert_int_equal(db_pool_acquire(pool, 5000, &c, &err), 0);
	assert_int_equal(db_exec_command(c, kill_at_commit_sql, "setup", &err), 0);
	db_pool_release(pool, c);

	assert_int_equal(db_tx_run(pool, 5000, insert_doomed, "d1", &err), MON_EUNAVAIL);
	assert_null(strstr(err.msg, "outcome unknown"));
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM doomed"), 0);
	/* without a deadline too */
	mon_error_clear(&err);
	assert_int_equal(db_tx_run(pool, DB_NO_DEADLINE, insert_doomed, "d2", &err), MON_EUNAVAIL);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM doomed"), 0);
	test_db_exec(pool, "DROP TABLE doomed");
}

struct xid_out {
	char xid[32];
};

static int insert_and_read_xid(struct db_conn *c, void *arg, struct mon_error *err)
{
	struct xid_out *out = arg;
	struct db_result *res = NULL;
	int rc = db_exec(c, "INSERT INTO item (id) VALUES ('resolved') RETURNING pg_current_xact_id()::text", 0, NULL,
	                 &res, err);
	if (rc == 0)
		snprintf(out->xid, sizeof(out->xid), "%s", db_result_value(res, 0, 0));
	db_result_free(res);
	return rc;
}

static const struct mon_error lost_cause = {.code = MON_EUNAVAIL, .msg = "database unavailable"};

/* The case a test cannot provoke through COMMIT: the commit happened, its answer was lost. */
static void test_db_tx_resolve_committed_is_success(void **state)
{
	struct xid_out out = {{0}};
	struct mon_error err = {0};
	assert_int_equal(db_tx_run(pool, 5000, insert_and_read_xid, &out, &err), 0);
	mon_error_set(&err, MON_EUNAVAIL, "left over");
	assert_int_equal(db_tx_resolve(pool, db_now_ms_for_tests() + 5000, out.xid, &lost_cause, &err), 0);
	assert_int_equal(err.code, 0);
	test_db_exec(pool, "DELETE FROM item");
}

static void test_db_tx_resolve_aborted_is_the_cause(void **state)
{
	PGconn *pg = PQconnectdb(tdb.conninfo);
	assert_int_equal(PQstatus(pg), CONNECTION_OK);
	PGresult *r = PQexec(pg, "BEGIN; INSERT INTO item (id) VALUES ('gone'); SELECT pg_current_xact_id()::text");
	assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
	char xid[32];
	snprintf(xid, sizeof(xid), "%s", PQgetvalue(r, 0, 0));
	PQclear(r);

	/* still open: in progress, which is not an answer */
	struct mon_error err = {0};
	assert_int_equal(db_tx_resolve(pool, db_now_ms_for_tests() + 5000, xid, &lost_cause, &err), MON_EINDOUBT);
	assert_int_equal(strncmp(err.msg, "outcome unknown: ", 17), 0);

	r = PQexec(pg, "ROLLBACK");
	PQclear(r);
	PQfinish(pg);
	mon_error_clear(&err);
	assert_int_equal(db_tx_resolve(pool, db_now_ms_for_tests() + 5000, xid, &lost_cause, &err), MON_EUNAVAIL);
	assert_string_equal(err.msg, "database unavailable");
}

static void test_db_tx_resolve_unreachable_is_in_doubt(void **state)
{
	struct db_config cfg = {.conninfo = "host=/nonexistent-socket-dir user=postgres dbname=postgres",
	                        .pool_size = 1,
	                        .connect_timeout_s = 2};
	struct db_pool *dead = NULL;
	struct mon_error err = {0};
	assert_int_equal(db_pool_create(&cfg, &dead, &err), 0);
	assert_int_equal(db_tx_resolve(dead, db_now_ms_for_tests() + 2000, "1000", &lost_cause, &err), MON_EINDOUBT);
	assert_int_equal(strncmp(err.msg, "outcome unknown: ", 17), 0);
	/* an expired deadline does not ask at all */
	assert_int_equal(db_tx_resolve(pool, db_now_ms_for_tests() - 1, "1000", &lost_cause, &err), MON_EINDOUBT);
	db_pool_destroy(dead);
}

/* fn that inserts id (NULL: only reads) and traces what the connection sends from then on: the commit. */
struct traced_tx {
	const char *id;
	FILE *trace;
	PGconn *pg;
};

static int insert_then_trace(struct db_conn *c, void *arg, struct mon_error *err)
{
	struct traced_tx *t = arg;
	int rc = t->id != NULL ? db_exec(c, "INSERT INTO item (id) VALUES ($1)", 1, &t->id, NULL, err)
	                       : db_exec(c, "SELECT count(*) FROM item", 0, NULL, NULL, err);
	t->pg = c->pg;
	PQtrace(c->pg, t->trace);
	PQsetTraceFlags(c->pg, PQTRACE_SUPPRESS_TIMESTAMPS);
	return rc;
}

/* COMMIT and the transaction id query before it are one round trip: one pipeline, one Sync. */
static void test_db_tx_commit_is_one_round_trip(void **state)
{
	const char *ids[] = {"traced", NULL};
	for (size_t i = 0; i < 2; i++) {
		struct traced_tx t = {.id = ids[i], .trace = tmpfile()};
		struct mon_error err = {0};
		assert_non_null(t.trace);
		assert_int_equal(db_tx_run(pool, 5000, insert_then_trace, &t, &err), 0);
		/* untrace the connection before the file goes: take them all to find it */
		struct db_conn *held[4] = {0};
		bool is_untraced = false;
		for (int k = 0; k < 4; k++) {
			assert_int_equal(db_pool_acquire(pool, 5000, &held[k], &err), 0);
			if (held[k]->pg == t.pg) {
				PQuntrace(t.pg);
				is_untraced = true;
			}
		}
		for (int k = 0; k < 4; k++)
			db_pool_release(pool, held[k]);
		assert_true(is_untraced);
		assert_int_equal(test_db_sent_count(t.trace, "Sync"), 1);
		assert_int_equal(test_db_sent_count(t.trace, "Flush"), 1);
		assert_int_equal(test_db_sent_count(t.trace, "Execute"), 2);
		assert_int_equal(test_db_sent_count(t.trace, "Query"), 0);
		fclose(t.trace);
	}
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM item WHERE id = 'traced'"), 1);
	test_db_exec(pool, "DELETE FROM item");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_db_tx_commits),
	        cmocka_unit_test(test_db_tx_rollback_leaves_nothing),
	        cmocka_unit_test(test_db_tx_function_error_rolls_back),
	        cmocka_unit_test(test_db_tx_statement_timeout_is_deadline),
	        cmocka_unit_test(test_db_tx_expired_deadline_fails_at_once),
	        cmocka_unit_test(test_db_tx_ignored_failure_is_not_success),
	        cmocka_unit_test(test_db_tx_serialization_failure_retried),
	        cmocka_unit_test(test_db_tx_commit_is_one_round_trip),
	        cmocka_unit_test(test_db_tx_commit_lost_and_aborted_is_retryable),
	        cmocka_unit_test(test_db_tx_resolve_committed_is_success),
	        cmocka_unit_test(test_db_tx_resolve_aborted_is_the_cause),
	        cmocka_unit_test(test_db_tx_resolve_unreachable_is_in_doubt),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
