/*
 * COPY FROM STDIN round trips: awkward values (backslashes, tabs, newlines,
 * carriage returns, the text "\N", UTF-8) and NULLs come back exactly;
 * batches larger than one chunk arrive whole; a bad row fails the COPY with
 * a project code and leaves the connection usable.
 */
#include "test_db_common.h"

static struct test_db tdb;
static struct db_pool *pool;

static int setup(void **state)
{
	test_db_create(&tdb, "copy");
	pool = test_db_pool(tdb.conninfo, 2);
	test_db_exec(pool, "CREATE TABLE t (id integer PRIMARY KEY, a text, b text)");
	return 0;
}

static int teardown(void **state)
{
	db_pool_destroy(pool);
	test_db_drop(&tdb);
	return 0;
}

static void test_db_copy_round_trip_escaping_and_nulls(void **state)
{
	static const char *const values[][2] = {
	        {"plain", ""}, {"back\\slash", "tab\there"},        {"new\nline", "cr\rhere"},
	        {"\\N", NULL}, {NULL, "h\xc3\xa9llo \xe2\x82\xac"}, {"\\\t\n\r\\\\", "end\\"},
	};
	size_t n = sizeof(values) / sizeof(values[0]);
	struct db_conn *c = NULL;
	struct mon_error err = {0};
	assert_int_equal(db_pool_acquire(pool, 1000, &c, &err), 0);
	assert_int_equal(db_copy_begin(c, "COPY t (id, a, b) FROM STDIN", &err), 0);
	for (size_t i = 0; i < n; i++) {
		char id[16];
		snprintf(id, sizeof(id), "%zu", i);
		const char *row[3] = {id, values[i][0], values[i][1]};
		assert_int_equal(db_copy_row(c, 3, row, &err), 0);
	}
	int64_t rows = 0;
	assert_int_equal(db_copy_end(c, &rows, &err), 0);
	assert_int_equal(rows, (int64_t)n);

	struct db_result *res = NULL;
	assert_int_equal(db_exec(c, "SELECT a, b FROM t ORDER BY id", 0, NULL, &res, &err), 0);
	assert_int_equal(db_result_rows(res), (int)n);
	for (size_t i = 0; i < n; i++) {
		for (int col = 0; col < 2; col++) {
			const char *want = values[i][col];
			if (want == NULL) {
				assert_true(db_result_is_null(res, (int)i, col));
			} else {
				assert_false(db_result_is_null(res, (int)i, col));
				assert_string_equal(db_result_value(res, (int)i, col), want);
			}
		}
	}
	db_result_free(res);
	assert_int_equal(db_exec(c, "DELETE FROM t", 0, NULL, NULL, &err), 0);
	db_pool_release(pool, c);
}

static void test_db_copy_many_rows_in_chunks(void **state)
{
	struct db_conn *c = NULL;
	struct mon_error err = {0};
	char pad[201];
	memset(pad, 'p', 200);
	pad[200] = '\0';
	assert_int_equal(db_pool_acquire(pool, 1000, &c, &err), 0);
	assert_int_equal(db_copy_begin(c, "COPY t (id, a, b) FROM STDIN", &err), 0);
	for (int i = 0; i < 20000; i++) {
		char id[16];
		snprintf(id, sizeof(id), "%d", i);
		const char *row[3] = {id, pad, (i % 3) ? "x\ty" : NULL};
		assert_int_equal(db_copy_row(c, 3, row, &err), 0);
	}
	int64_t rows = 0;
	assert_int_equal(db_copy_end(c, &rows, &err), 0);
	assert_int_equal(rows, 20000);
	db_pool_release(pool, c);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM t WHERE b IS NULL"), 6667);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM t WHERE b = E'x\\ty'"), 13333);
	test_db_exec(pool, "DELETE FROM t");
}

static void test_db_copy_bad_row_fails_cleanly(void **state)
{
	struct db_conn *c = NULL;
	struct mon_error err = {0};
	assert_int_equal(db_pool_acquire(pool, 1000, &c, &err), 0);
	assert_int_equal(db_copy_begin(c, "COPY t (id, a, b) FROM STDIN", &err), 0);
	const char *good[3] = {"1", "a", "b"};
	const char *bad[3] = {"not-a-number", "a", "b"};
	assert_int_equal(db_copy_row(c, 3, good, &err), 0);
	assert_int_equal(db_copy_row(c, 3, bad, &err), 0); /* buffered: the server sees it at the end */
	assert_int_equal(db_copy_end(c, NULL, &err), MON_EINVAL);
	assert_null(strstr(err.msg, "not-a-number"));
	/* a duplicate key inside one COPY */
	assert_int_equal(db_copy_begin(c, "COPY t (id, a, b) FROM STDIN", &err), 0);
	assert_int_equal(db_copy_row(c, 3, good, &err), 0);
	assert_int_equal(db_copy_row(c, 3, good, &err), 0);
	assert_int_equal(db_copy_end(c, NULL, &err), MON_EEXIST);
	/* the connection is still usable and nothing was stored */
	struct db_result *res = NULL;
	assert_int_equal(db_exec(c, "SELECT count(*) FROM t", 0, NULL, &res, &err), 0);
	assert_string_equal(db_result_value(res, 0, 0), "0");
	db_result_free(res);
	/* COPY calls out of order are refused */
	assert_int_equal(db_copy_row(c, 3, good, &err), MON_EINTERNAL);
	assert_int_equal(db_copy_end(c, NULL, &err), MON_EINTERNAL);
	assert_int_equal(db_copy_begin(c, "COPY no_such_table FROM STDIN", &err), MON_EINTERNAL);
	db_pool_release(pool, c);
}

static int copy_in_tx(struct db_conn *c, void *arg, struct mon_error *err)
{
	int rc = db_copy_begin(c, "COPY t (id, a, b) FROM STDIN", err);
	for (int i = 0; rc == 0 && i < 3; i++) {
		char id[8];
		snprintf(id, sizeof(id), "%d", 100 + i);
		const char *row[3] = {id, "in", "tx"};
		rc = db_copy_row(c, 3, row, err);
	}
	if (rc == 0)
		rc = db_copy_end(c, NULL, err);
	if (rc == 0 && arg != NULL)
		rc = mon_error_set(err, MON_EPRECOND, "changed my mind");
	return rc;
}

static void test_db_copy_inside_transaction(void **state)
{
	struct mon_error err = {0};
	assert_int_equal(db_tx_run(pool, 5000, copy_in_tx, "abort", &err), MON_EPRECOND);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM t"), 0);
	assert_int_equal(db_tx_run(pool, 5000, copy_in_tx, NULL, &err), 0);
	assert_int_equal(test_db_count(pool, "SELECT count(*) FROM t"), 3);
	test_db_exec(pool, "DELETE FROM t");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_db_copy_round_trip_escaping_and_nulls),
	        cmocka_unit_test(test_db_copy_many_rows_in_chunks),
	        cmocka_unit_test(test_db_copy_bad_row_fails_cleanly),
	        cmocka_unit_test(test_db_copy_inside_transaction),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
