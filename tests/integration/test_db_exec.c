/*
 * The pool and statement execution against a real server: parameters and
 * NULLs, results, statements prepared once per connection, the pool's
 * bounded wait, and how server errors come back as project codes with no
 * SQL in the message.
 */
#include "test_db_common.h"

static struct test_db tdb;
static struct db_pool *pool;

static int setup(void **state)
{
	test_db_create(&tdb, "exec");
	pool = test_db_pool(tdb.conninfo, 2);
	test_db_exec(pool, "CREATE TABLE parent (id text PRIMARY KEY, n integer CHECK (n >= 0))");
	test_db_exec(pool, "CREATE TABLE child (id text PRIMARY KEY, parent_id text NOT NULL REFERENCES parent(id))");
	return 0;
}

static int teardown(void **state)
{
	db_pool_destroy(pool);
	test_db_drop(&tdb);
	return 0;
}

static void test_db_exec_params_and_results(void **state)
{
	struct db_conn *c = NULL;
	struct db_result *res = NULL;
	struct mon_error err = {0};
	assert_int_equal(db_pool_acquire(pool, 1000, &c, &err), 0);
	const char *params[3] = {"it's \"quoted\"", NULL, "42"};
	assert_int_equal(db_exec(c, "SELECT $1::text AS a, $2::text AS b, $3::int + 1 AS c", 3, params, &res, &err), 0);
	assert_int_equal(db_result_rows(res), 1);
	assert_int_equal(db_result_cols(res), 3);
	assert_int_equal(db_result_col(res, "c"), 2);
	assert_int_equal(db_result_col(res, "nope"), -1);
	assert_string_equal(db_result_value(res, 0, 0), "it's \"quoted\"");
	assert_true(db_result_is_null(res, 0, 1));
	assert_string_equal(db_result_value(res, 0, 1), "");
	assert_false(db_result_is_null(res, 0, 2));
	assert_string_equal(db_result_value(res, 0, 2), "43");
	/* out of range reads are harmless */
	assert_string_equal(db_result_value(res, 5, 0), "");
	assert_true(db_result_is_null(res, 0, 9));
	db_result_free(res);

	const char *ins[2] = {"p1", "1"};
	assert_int_equal(db_exec(c, "INSERT INTO parent VALUES ($1, $2::int)", 2, ins, &res, &err), 0);
	assert_int_equal(db_result_affected(res), 1);
	db_result_free(res);
	assert_int_equal(db_exec(c, "DELETE FROM parent", 0, NULL, NULL, &err), 0);
	db_pool_release(pool, c);
}

static void test_db_exec_prepared_statements(void **state)
{
	static const struct db_stmt stmt = {.name = "test_add", .sql = "SELECT $1::int + $2::int", .param_count = 2};
	struct mon_error err = {0};
	struct db_conn *a = NULL;
	struct db_conn *b = NULL;
	/* both connections of the pool, each preparing on first use */
	assert_int_equal(db_pool_acquire(pool, 1000, &a, &err), 0);
	assert_int_equal(db_pool_acquire(pool, 1000, &b, &err), 0);
	for (int i = 0; i < 3; i++) {
		struct db_conn *c = (i % 2) ? b : a;
		struct db_result *res = NULL;
		char x[8];
		snprintf(x, sizeof(x), "%d", i);
		const char *params[2] = {x, "10"};
		assert_int_equal(db_exec_stmt(c, &stmt, params, &res, &err), 0);
		char want[8];
		snprintf(want, sizeof(want), "%d", i + 10);
		assert_string_equal(db_result_value(res, 0, 0), want);
		db_result_free(res);
	}
	struct db_result *res = NULL;
	assert_int_equal(
	        db_exec(a, "SELECT count(*) FROM pg_prepared_statements WHERE name = 'test_add'", 0, NULL, &res, &err),
	        0);
	assert_string_equal(db_result_value(res, 0, 0), "1");
	db_result_free(res);
	db_pool_release(pool, a);
	db_pool_release(pool, b);
}

static void test_db_exec_pool_wait_is_bounded(void **state)
{
	struct mon_error err = {0};
	struct db_conn *a = NULL;
	struct db_conn *b = NULL;
	struct db_conn *c = NULL;
	assert_int_equal(db_pool_acquire(pool, 1000, &a, &err), 0);
	assert_int_equal(db_pool_acquire(pool, 1000, &b, &err), 0);
	int64_t t0 = db_now_ms_for_tests();
	assert_int_equal(db_pool_acquire(pool, 200, &c, &err), MON_ELIMIT);
	int64_t waited = db_now_ms_for_tests() - t0;
	assert_true(waited >= 190 && waited < 2000);
	assert_null(c);
	assert_non_null(strstr(err.msg, "2"));
	db_pool_release(pool, b);
	assert_int_equal(db_pool_acquire(pool, 200, &c, &err), 0);
	db_pool_release(pool, c);
	db_pool_release(pool, a);
	assert_int_equal(db_pool_ping(pool, 1000, &err), 0);
}

static void expect_code(const char *sql, int code)
{
	struct db_conn *c = NULL;
	struct mon_error err = {0};
	assert_int_equal(db_pool_acquire(pool, 1000, &c, &err), 0);
	int rc = db_exec(c, sql, 0, NULL, NULL, &err);
	if (rc != code)
		fail_msg("%s: got %s (%s), want %s", sql, mon_error_name(rc), err.msg, mon_error_name(code));
	assert_int_equal(err.code, code);
	/* the message never quotes SQL or data */
	assert_null(strstr(err.msg, "INSERT"));
	assert_null(strstr(err.msg, "SELECT"));
	assert_null(strstr(err.msg, "secret-value"));
	db_pool_release(pool, c);
}

static void test_db_exec_errors_map_to_codes(void **state)
{
	test_db_exec(pool, "INSERT INTO parent VALUES ('dup', 1)");
	expect_code("INSERT INTO parent VALUES ('dup', 2)", MON_EEXIST);
	expect_code("INSERT INTO child VALUES ('c1', 'secret-value')", MON_ENOTFOUND);
	expect_code("INSERT INTO parent VALUES ('neg', -1)", MON_EINVAL);
	expect_code("SELECT 'secret-value'::int", MON_EINVAL);
	expect_code("INSERT INTO parent VALUES (NULL, 1)", MON_EINVAL);
	expect_code("SELECT * FROM no_such_table", MON_EINTERNAL);
	expect_code("SET statement_timeout = 50; SELECT pg_sleep(1)", MON_EINTERNAL); /* two statements refused */
	test_db_exec(pool, "DELETE FROM parent");
}

static void test_db_exec_connection_killed_is_unavailable_then_replaced(void **state)
{
	struct db_conn *c = NULL;
	struct mon_error err = {0};
	assert_int_equal(db_pool_acquire(pool, 1000, &c, &err), 0);
	/* the server ends this very backend: admin shutdown, 57P01 */
	int rc = db_exec(c, "SELECT pg_terminate_backend(pg_backend_pid())", 0, NULL, NULL, &err);
	assert_int_equal(rc, MON_EUNAVAIL);
	db_pool_release(pool, c);
	/* the broken connection is replaced on the next acquire */
	for (int i = 0; i < 4; i++)
		assert_int_equal(db_pool_ping(pool, 1000, &err), 0);
}

static void test_db_exec_notify_payload_limits(void **state)
{
	struct db_conn *c = NULL;
	struct mon_error err = {0};
	assert_int_equal(db_pool_acquire(pool, 1000, &c, &err), 0);
	assert_int_equal(db_notify(c, "", "x", &err), MON_EINVAL);
	char *big = malloc(9000);
	memset(big, 'x', 8999);
	big[8999] = '\0';
	assert_int_equal(db_notify(c, "chan", big, &err), MON_ELIMIT);
	free(big);
	assert_int_equal(db_notify(c, "chan", "ok", &err), 0);
	db_pool_release(pool, c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_db_exec_params_and_results),
	        cmocka_unit_test(test_db_exec_prepared_statements),
	        cmocka_unit_test(test_db_exec_pool_wait_is_bounded),
	        cmocka_unit_test(test_db_exec_errors_map_to_codes),
	        cmocka_unit_test(test_db_exec_connection_killed_is_unavailable_then_replaced),
	        cmocka_unit_test(test_db_exec_notify_payload_limits),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
