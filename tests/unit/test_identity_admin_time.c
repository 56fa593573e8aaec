/*
 * The instants `monitord admin expire-key --at` accepts: "now" and RFC 3339
 * with Z or an offset and an optional fraction; anything else, and dates
 * that do not exist, are refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "admin.h"

static int64_t parse(const char *text)
{
	int64_t ms = -1;
	struct mon_error err = {0};
	if (admin_parse_time(text, 42, &ms, &err) != 0)
		fail_msg("\"%s\": %s", text, err.msg);
	return ms;
}

static void refused(const char *text)
{
	int64_t ms = -1;
	struct mon_error err = {0};
	assert_int_equal(admin_parse_time(text, 42, &ms, &err), MON_EINVAL);
	assert_int_equal(ms, -1);
}

static void test_identity_admin_time_accepts(void **state)
{
	assert_int_equal(parse("now"), 42);
	assert_int_equal(parse("2030-01-31T00:00:00Z"), INT64_C(1896048000000));
	assert_int_equal(parse("2030-01-31t00:00:00z"), INT64_C(1896048000000));
	assert_int_equal(parse("2030-01-31T01:00:00+01:00"), INT64_C(1896048000000));
	assert_int_equal(parse("2030-01-30T19:30:00-04:30"), INT64_C(1896048000000));
	assert_int_equal(parse("2030-01-31T00:00:00.5Z"), INT64_C(1896048000500));
	assert_int_equal(parse("2030-01-31T00:00:00.123456Z"), INT64_C(1896048000123));
	assert_int_equal(parse("2024-02-29T12:00:00Z"), INT64_C(1709208000000));
}

static void test_identity_admin_time_refuses(void **state)
{
	refused("");
	refused(NULL);
	refused("tomorrow");
	refused("2030-01-31");
	refused("2030-01-31T00:00:00");   /* no offset */
	refused("2030-01-31T00:00Z");     /* no seconds */
	refused("2030-01-31T00:00:00.Z"); /* empty fraction */
	refused("2030-01-31T00:00:00Zjunk");
	refused("2030-13-01T00:00:00Z");
	refused("2030-02-30T00:00:00Z"); /* no such date */
	refused("2023-02-29T00:00:00Z");
	refused("2030-01-31T24:00:00Z");
	refused("2030-01-31T00:00:00+24:00");
	refused("1969-12-31T23:59:59Z");
}

static void test_identity_admin_time_format(void **state)
{
	char buf[40];
	admin_format_time(INT64_C(1896048000123), buf, sizeof(buf));
	assert_string_equal(buf, "2030-01-31T00:00:00Z");
	admin_format_time(0, buf, sizeof(buf));
	assert_string_equal(buf, "-");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_identity_admin_time_accepts),
	        cmocka_unit_test(test_identity_admin_time_refuses),
	        cmocka_unit_test(test_identity_admin_time_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
