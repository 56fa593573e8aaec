/*
 * db_read_run against a real server: the statement runs outside any
 * transaction block in one round trip (with and without a deadline), the
 * deadline becomes that statement's statement_timeout (MON_EDEADLINE) and
 * never the session's, errors keep their codes, and a read that tries a
 * second statement is refused.
 */
#include "test_db_common.h"

#include "db/db_internal.h"

static struct test_db tdb;
static struct db_pool *pool; /* one connection: every read and check shares it */

static int setup(void **state)
{
	test_db_create(&tdb, "read");
	pool = test_db_pool(tdb.conninfo, 1);
	test_db_exec(pool, "CREATE TABLE item (id text PRIMARY KEY, n integer NOT NULL)");
	test_db_exec(pool, "INSERT INTO item VALUES ('a', 1), ('b', 2)");
	return 0;
}

static int teardown(void **state)
{
	db_pool_destroy(pool);
	test_db_drop(&tdb);
	return 0;
}

static const struct db_stmt item_get = {
        .name = "test_item_get",
        .sql = "SELECT n, current_setting('statement_timeout') FROM item WHERE id = $1",
        .param_count = 1,
};

struct item_read {
	const char *id;
	bool was_idle;    /* no transaction open when fn started */
	long n;           /* -1: no row */
	char timeout[32]; /* statement_timeout the statement ran with */
	FILE *trace;      /* libpq's protocol trace of the statement, when set */
};

static int read_item(struct db_conn *c, void *arg, struct mon_error *err)
{
	struct item_read *r = arg;
	struct db_result *res = NULL;
	r->was_idle = PQtransactionStatus(c->pg) == PQTRANS_IDLE;
	if (r->trace != NULL) {
		PQtrace(c->pg, r->trace);
		PQsetTraceFlags(c->pg, PQTRACE_SUPPRESS_TIMESTAMPS);
	}
	int rc = db_exec_stmt(c, &item_get, &r->id, &res, err);
	if (r->trace != NULL)
		PQuntrace(c->pg);
	if (rc != 0)
		return rc;
	r->n = db_result_rows(res) == 1 ? strtol(db_result_value(res, 0, 0), NULL, 10) : -1;
	snprintf(r->timeout, sizeof(r->timeout), "%s", db_result_value(res, 0, 1));
	db_result_free(res);
	return 0;
}

/* Messages of one kind the client sent in a libpq trace ("F\t<len>\t<kind>"). */
static void test_db_read_autocommit_one_round_trip(void **state)
{
	struct mon_error err = {0};
	/* warm up: the statements are prepared on first use */
	struct item_read r = {.id = "a"};
	assert_int_equal(db_read_run(pool, 5000, read_item, &r, &err), 0);
	assert_int_equal(db_read_run(pool, DB_NO_DEADLINE, read_item, &r, &err), 0);

	int64_t timeouts[] = {DB_NO_DEADLINE, 5000};
	for (size_t i = 0; i < 2; i++) {
		FILE *trace = tmpfile();
		assert_non_null(trace);
		struct item_read t = {.id = "b", .trace = trace};
		assert_int_equal(db_read_run(pool, timeouts[i], read_item, &t, &err), 0);
		assert_true(t.was_idle);
		assert_int_equal(t.n, 2);
		/* one Sync: a single round trip, with the timeout in it when bounded */
		assert_int_equal(test_db_sent_count(trace, "Sync"), 1);
		assert_int_equal(test_db_sent_count(trace, "Parse"), 0);
		assert_int_equal(test_db_sent_count(trace, "Query"), 0);
		assert_int_equal(test_db_sent_count(trace, "Execute"), timeouts[i] != DB_NO_DEADLINE ? 2 : 1);
		fclose(trace);
	}
	/* a missing row is the caller's to judge */
	struct item_read none = {.id = "zz"};
	assert_int_equal(db_read_run(pool, 5000, read_item, &none, &err), 0);
	assert_int_equal(none.n, -1);
}

static void test_db_read_deadline_is_statement_timeout(void **state)
{
	struct mon_error err = {0};
	struct item_read r = {.id = "a"};
	assert_int_equal(db_read_run(pool, 5000, read_item, &r, &err), 0);
	/* the server shows whole seconds as "5s", the rest as "4998ms" */
	char *unit = NULL;
	long ms = strtol(r.timeout, &unit, 10);
	if (strcmp(unit, "s") == 0)
		ms *= 1000;
	else
		assert_string_equal(unit, "ms");
	assert_true(ms > 4000 && ms <= 5000);
	/* no deadline: the session's default, which the bounded read left alone */
	assert_int_equal(db_read_run(pool, DB_NO_DEADLINE, read_item, &r, &err), 0);
	assert_string_equal(r.timeout, "0");
}

static int sleep_long(struct db_conn *c, void *arg, struct mon_error *err)
{
	return db_exec(c, "SELECT pg_sleep(5)", 0, NULL, NULL, err);
}

static void test_db_read_deadline_cancels(void **state)
{
	struct mon_error err = {0};
	int64_t t0 = db_now_ms_for_tests();
	assert_int_equal(db_read_run(pool, 300, sleep_long, NULL, &err), MON_EDEADLINE);
	assert_true(db_now_ms_for_tests() - t0 < 2000);
	assert_null(strstr(err.msg, "pg_sleep"));
	/* the same connection goes on, with the session's timeout */
	char v[32];
	test_db_scalar(pool, "SHOW statement_timeout", v, sizeof(v));
	assert_string_equal(v, "0");
	struct item_read r = {.id = "a"};
	assert_int_equal(db_read_run(pool, DB_NO_DEADLINE, read_item, &r, &err), 0);
	assert_int_equal(r.n, 1);
}

static int bad_input(struct db_conn *c, void *arg, struct mon_error *err)
{
	return db_exec(c, "SELECT 'x'::integer", 0, NULL, NULL, err);
}

static int own_error(struct db_conn *c, void *arg, struct mon_error *err)
{
	return mon_error_set(err, MON_EPRECOND, "not in this state");
}

static void test_db_read_errors_keep_codes(void **state)
{
	struct mon_error err = {0};
	assert_int_equal(db_read_run(pool, 5000, bad_input, NULL, &err), MON_EINVAL);
	assert_int_equal(db_read_run(pool, DB_NO_DEADLINE, bad_input, NULL, &err), MON_EINVAL);
	char v[32];
	test_db_scalar(pool, "SHOW statement_timeout", v, sizeof(v));
	assert_string_equal(v, "0");
	/* a function's own error passes through */
	assert_int_equal(db_read_run(pool, 5000, own_error, NULL, &err), MON_EPRECOND);
	assert_string_equal(err.msg, "not in this state");
}

static int two_statements(struct db_conn *c, void *arg, struct mon_error *err)
{
	int rc = db_exec(c, "SELECT 1", 0, NULL, NULL, err);
	if (rc == 0)
		rc = db_exec(c, "SELECT 2", 0, NULL, NULL, err);
	return rc;
}

static int a_command(struct db_conn *c, void *arg, struct mon_error *err)
{
	return db_exec_command(c, "SET statement_timeout = 1", "set", err);
}

static void test_db_read_refuses_second_statement(void **state)
{
	struct mon_error err = {0};
	assert_int_equal(db_read_run(pool, 5000, two_statements, NULL, &err), MON_EINTERNAL);
	assert_int_equal(db_read_run(pool, DB_NO_DEADLINE, two_statements, NULL, &err), MON_EINTERNAL);
	assert_int_equal(db_read_run(pool, DB_NO_DEADLINE, a_command, NULL, &err), MON_EINTERNAL);
	char v[32];
	test_db_scalar(pool, "SHOW statement_timeout", v, sizeof(v));
	assert_string_equal(v, "0");
	/* outside a read the same function is fine */
	assert_int_equal(db_tx_run(pool, 5000, two_statements, NULL, &err), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_db_read_autocommit_one_round_trip),
	        cmocka_unit_test(test_db_read_deadline_is_statement_timeout),
	        cmocka_unit_test(test_db_read_deadline_cancels),
	        cmocka_unit_test(test_db_read_errors_keep_codes),
	        cmocka_unit_test(test_db_read_refuses_second_statement),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
