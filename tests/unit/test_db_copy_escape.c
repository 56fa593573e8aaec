/*
 * COPY text-format rows: escaping of backslash, tab, newline and carriage
 * return, NULL as \N, and the buffer's hard cap. No server needed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "db/db_internal.h"

static void expect_row(int n, const char *const *values, const char *want)
{
	struct db_buf buf = {.max = 1 << 20};
	struct mon_error err = {0};
	assert_int_equal(db_copy_format_row(&buf, n, values, &err), 0);
	assert_int_equal(buf.len, strlen(want));
	assert_memory_equal(buf.data, want, buf.len);
	db_buf_free(&buf);
}

static void test_db_copy_escape_plain_values(void **state)
{
	const char *v[] = {"a", "bc", ""};
	expect_row(3, v, "a\tbc\t\n");
}

static void test_db_copy_escape_special_characters(void **state)
{
	const char *v[] = {"back\\slash", "tab\there", "new\nline", "cr\rhere"};
	expect_row(4, v, "back\\\\slash\ttab\\there\tnew\\nline\tcr\\rhere\n");
}

static void test_db_copy_escape_null_and_literal_backslash_n(void **state)
{
	/* SQL NULL is \N; the two characters backslash and N are not */
	const char *v[] = {NULL, "\\N", "N"};
	expect_row(3, v, "\\N\t\\\\N\tN\n");
}

static void test_db_copy_escape_utf8_untouched(void **state)
{
	const char *v[] = {"h\xc3\xa9llo \xe2\x82\xac"};
	expect_row(1, v, "h\xc3\xa9llo \xe2\x82\xac\n");
}

static void test_db_copy_escape_rows_append(void **state)
{
	struct db_buf buf = {.max = 1 << 20};
	struct mon_error err = {0};
	const char *a[] = {"1", "x"};
	const char *b[] = {"2", NULL};
	assert_int_equal(db_copy_format_row(&buf, 2, a, &err), 0);
	assert_int_equal(db_copy_format_row(&buf, 2, b, &err), 0);
	assert_int_equal(buf.len, strlen("1\tx\n2\t\\N\n"));
	assert_memory_equal(buf.data, "1\tx\n2\t\\N\n", buf.len);
	db_buf_free(&buf);
}

static void test_db_copy_escape_cap_enforced(void **state)
{
	struct db_buf buf = {.max = 16};
	struct mon_error err = {0};
	const char *small[] = {"0123456"};
	assert_int_equal(db_copy_format_row(&buf, 1, small, &err), 0);
	size_t len = buf.len;
	/* 8 characters, escaped to 16 bytes plus a newline: over the cap */
	const char *big[] = {"\t\t\t\t\t\t\t\t"};
	assert_int_equal(db_copy_format_row(&buf, 1, big, &err), MON_ELIMIT);
	assert_int_equal(err.code, MON_ELIMIT);
	assert_int_equal(buf.len, len); /* untouched */
	assert_int_equal(db_copy_format_row(&buf, 0, big, &err), MON_EINVAL);
	db_buf_free(&buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_db_copy_escape_plain_values),
	        cmocka_unit_test(test_db_copy_escape_special_characters),
	        cmocka_unit_test(test_db_copy_escape_null_and_literal_backslash_n),
	        cmocka_unit_test(test_db_copy_escape_utf8_untouched),
	        cmocka_unit_test(test_db_copy_escape_rows_append),
	        cmocka_unit_test(test_db_copy_escape_cap_enforced),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
