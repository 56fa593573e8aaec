/*
 * AccessService's pure checks (server/access/service.c): new caller ids,
 * e-mail addresses, free text, and the page tokens that bind a position to
 * the filters they were made for. No server needed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "access/service.h"

static void test_access_caller_id_charset(void **state)
{
	struct mon_error err = {0};
	assert_int_equal(access_check_new_caller_id("caller.id", "ops-bot.v2_prod", &err), 0);
	assert_int_equal(access_check_new_caller_id("caller.id", "a", &err), 0);
	const char *bad[] = {"", "Upper", "with space", "at@sign", "slash/", "\xc3\xa9t\xc3\xa9"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(access_check_new_caller_id("caller.id", bad[i], &err), MON_EINVAL);
		assert_true(strncmp(err.msg, "caller.id: ", 11) == 0);
	}
	assert_int_equal(access_check_new_caller_id("caller.id", NULL, &err), MON_EINVAL);
}

static void test_access_caller_id_length(void **state)
{
	struct mon_error err = {0};
	char id[52];
	memset(id, 'x', 50);
	id[50] = '\0';
	assert_int_equal(access_check_new_caller_id("caller.id", id, &err), 0);
	id[50] = 'x';
	id[51] = '\0';
	assert_int_equal(access_check_new_caller_id("caller.id", id, &err), MON_EINVAL);
	assert_non_null(strstr(err.msg, "50"));
}

static void test_access_email_accepts_addresses(void **state)
{
	struct mon_error err = {0};
	const char *good[] = {"a@example.com", "first.last+tag@sub.example.co.uk", "o'brien@example.org",
	                      "x_y-z@a-b.example", "1@2.io"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (access_check_email("caller.email", good[i], &err) != 0)
			fail_msg("\"%s\" refused: %s", good[i], err.msg);
}

static void test_access_email_refuses_non_addresses(void **state)
{
	struct mon_error err = {0};
	const char *bad[] = {"",
	                     "plain",
	                     "@example.com",
	                     "a@",
	                     "a@b@example.com",
	                     "a@localhost",
	                     "a@example..com",
	                     "a@-example.com",
	                     "a@example-.com",
	                     "a@.example.com",
	                     "a@example.com.",
	                     ".a@example.com",
	                     "a.@example.com",
	                     "a..b@example.com",
	                     "a b@example.com",
	                     "a@exa mple.com",
	                     "a\n@example.com",
	                     "\"quoted\"@example.com",
	                     "a@ex_ample.com"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (access_check_email("caller.email", bad[i], &err) != MON_EINVAL)
			fail_msg("\"%s\" accepted", bad[i]);
		assert_true(strncmp(err.msg, "caller.email: ", 14) == 0);
	}
	char long_local[80];
	memset(long_local, 'l', 65);
	memcpy(long_local + 65, "@example.com", 13);
	assert_int_equal(access_check_email("caller.email", long_local, &err), MON_EINVAL);
}

static void test_access_text(void **state)
{
	struct mon_error err = {0};
	assert_int_equal(access_check_text("description", "", 10, false, &err), 0);
	assert_int_equal(access_check_text("description", NULL, 10, false, &err), 0);
	assert_int_equal(access_check_text("description", "", 10, true, &err), MON_EINVAL);
	assert_int_equal(access_check_text("description", "d\xc3\xa9ploiements", 20, false, &err), 0);
	assert_int_equal(access_check_text("description", "0123456789a", 10, false, &err), MON_EINVAL);
	assert_string_equal(err.msg, "description: at most 10 bytes");
	assert_int_equal(access_check_text("description", "tab\there", 20, false, &err), MON_EINVAL);
	assert_int_equal(access_check_text("description", "del\x7f", 20, false, &err), MON_EINVAL);
	assert_int_equal(access_check_text("description", "bad \xff byte", 20, false, &err), MON_EINVAL);
	assert_string_equal(err.msg, "description: must be valid UTF-8");
}

static void test_access_page_token_round_trip(void **state)
{
	struct mon_error err = {0};
	char token[ACCESS_PAGE_TOKEN_MAX];
	char cursor[64];
	assert_int_equal(access_page_token_make("keys|alice|0", "1735689600123456,0123456789abcdef", token, &err), 0);
	assert_null(strchr(token, '|'));     /* opaque: the cursor is not readable as is */
	assert_null(strstr(token, "alice")); /* nor the filters */
	assert_int_equal(access_page_token_read(token, "keys|alice|0", cursor, sizeof(cursor), &err), 0);
	assert_string_equal(cursor, "1735689600123456,0123456789abcdef");
}

static void test_access_page_token_bound_to_filters(void **state)
{
	struct mon_error err = {0};
	char token[ACCESS_PAGE_TOKEN_MAX];
	char cursor[64];
	assert_int_equal(access_page_token_make("callers||0|ops", "bob", token, &err), 0);
	assert_int_equal(access_page_token_read(token, "callers||1|ops", cursor, sizeof(cursor), &err), MON_EINVAL);
	assert_string_equal(err.msg, "page_token: does not match the request");
}

static void test_access_page_token_malformed(void **state)
{
	struct mon_error err = {0};
	char token[ACCESS_PAGE_TOKEN_MAX];
	char cursor[8];
	const char *bad[] = {"!!!", "bm90IGEgdG9rZW4", "MXxzaG9ydA"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(access_page_token_read(bad[i], "f", cursor, sizeof(cursor), &err), MON_EINVAL);
		assert_string_equal(err.msg, "page_token: malformed");
	}
	/* A cursor longer than the caller's buffer is refused, not cut. */
	assert_int_equal(access_page_token_make("f", "a-cursor-too-long", token, &err), 0);
	assert_int_equal(access_page_token_read(token, "f", cursor, sizeof(cursor), &err), MON_EINVAL);
	/* '|' separates the parts: a cursor may not hold one. */
	assert_int_not_equal(access_page_token_make("f", "a|b", token, &err), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_access_caller_id_charset),
	        cmocka_unit_test(test_access_caller_id_length),
	        cmocka_unit_test(test_access_email_accepts_addresses),
	        cmocka_unit_test(test_access_email_refuses_non_addresses),
	        cmocka_unit_test(test_access_text),
	        cmocka_unit_test(test_access_page_token_round_trip),
	        cmocka_unit_test(test_access_page_token_bound_to_filters),
	        cmocka_unit_test(test_access_page_token_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
