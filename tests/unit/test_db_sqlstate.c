/*
 * The SQLSTATE -> MON_E* mapping, the messages that go with it (never SQL),
 * and conninfo quoting. No server needed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "db/db_internal.h"

static void test_db_sqlstate_table(void **state)
{
	static const struct {
		const char *sqlstate;
		int code;
	} cases[] = {
	        {"08006", MON_EUNAVAIL},  {"08001", MON_EUNAVAIL},  {"57P01", MON_EUNAVAIL},  {"57P02", MON_EUNAVAIL},
	        {"57P03", MON_EUNAVAIL},  {"53300", MON_EUNAVAIL},  {"25006", MON_EUNAVAIL},  {"57014", MON_EDEADLINE},
	        {"23505", MON_EEXIST},    {"23503", MON_ENOTFOUND}, {"23514", MON_EINVAL},    {"23502", MON_EINVAL},
	        {"22P02", MON_EINVAL},    {"22001", MON_EINVAL},    {"22003", MON_EINVAL},    {"40001", MON_EABORTED},
	        {"40P01", MON_EABORTED},  {"42P01", MON_EINTERNAL}, {"42601", MON_EINTERNAL}, {"XX000", MON_EINTERNAL},
	        {"23P01", MON_EINTERNAL}, {"", MON_EINTERNAL},      {"4000", MON_EINTERNAL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = db_sqlstate_code(cases[i].sqlstate, false);
		if (got != cases[i].code)
			fail_msg("%s: got %s, want %s", cases[i].sqlstate, mon_error_name(got),
			         mon_error_name(cases[i].code));
	}
}

static void test_db_sqlstate_lost_connection_is_unavailable(void **state)
{
	assert_int_equal(db_sqlstate_code(NULL, true), MON_EUNAVAIL);
	assert_int_equal(db_sqlstate_code("23505", true), MON_EUNAVAIL);
	assert_int_equal(db_sqlstate_code(NULL, false), MON_EINTERNAL);
}

static void test_db_sqlstate_retryable(void **state)
{
	assert_true(db_sqlstate_is_retryable("40001"));
	assert_true(db_sqlstate_is_retryable("40P01"));
	assert_false(db_sqlstate_is_retryable("40002"));
	assert_false(db_sqlstate_is_retryable(NULL));
}

static void test_db_sqlstate_messages_carry_no_sql(void **state)
{
	for (int code = MON_ERR_MIN_ + 1; code <= 0; code++) {
		const char *msg = db_code_message(code);
		assert_non_null(msg);
		assert_null(strstr(msg, "SELECT"));
		assert_null(strstr(msg, "INSERT"));
		assert_null(strstr(msg, "tb_"));
	}
	assert_string_equal(db_code_message(MON_EUNAVAIL), "database unavailable");
}

static void test_db_sqlstate_conninfo_quote(void **state)
{
	char out[64];
	struct mon_error err = {0};
	assert_int_equal(db_conninfo_quote("/tmp/a b", out, sizeof(out), &err), 0);
	assert_string_equal(out, "'/tmp/a b'");
	assert_int_equal(db_conninfo_quote("it's\\x", out, sizeof(out), &err), 0);
	assert_string_equal(out, "'it\\'s\\\\x'");
	assert_int_equal(db_conninfo_quote("", out, sizeof(out), &err), 0);
	assert_string_equal(out, "''");
	char tiny[7];
	assert_int_equal(db_conninfo_quote("abcd", tiny, sizeof(tiny), &err), 0); /* fits exactly */
	assert_string_equal(tiny, "'abcd'");
	assert_int_equal(db_conninfo_quote("abcde", tiny, sizeof(tiny), &err), MON_ELIMIT);
	assert_string_equal(tiny, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_db_sqlstate_table),
	        cmocka_unit_test(test_db_sqlstate_lost_connection_is_unavailable),
	        cmocka_unit_test(test_db_sqlstate_retryable),
	        cmocka_unit_test(test_db_sqlstate_messages_carry_no_sql),
	        cmocka_unit_test(test_db_sqlstate_conninfo_quote),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
