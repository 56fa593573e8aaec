/*
 * Unit tests of HealthService's pure checks (server/health/services_api.c) and
 * the status names of the health store: each refusal is MON_EINVAL with a
 * message that starts with the field; uptime percent rounds to 2 decimals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "health/store.h"
#include "health/service.h"

static void assert_refused(int rc, const struct mon_error *err, const char *field)
{
	assert_int_equal(rc, MON_EINVAL);
	assert_int_equal(strncmp(err->msg, field, strlen(field)), 0);
}

static void test_health_id(void **state)
{
	(void)state;
	struct mon_error err = {0};
	char long_id[52];
	memset(long_id, 'a', 51);
	long_id[51] = '\0';
	assert_int_equal(health_check_id("service.id", "svc-0f.A_9", &err), 0);
	assert_int_equal(health_check_id("service.id", long_id + 1, &err), 0);
	assert_refused(health_check_id("service.id", long_id, &err), &err, "service.id");
	assert_refused(health_check_id("service.id", "", &err), &err, "service.id");
	assert_refused(health_check_id("service.id", NULL, &err), &err, "service.id");
	assert_refused(health_check_id("service_id", "a b", &err), &err, "service_id");
	assert_refused(health_check_id("service_id", "a/b", &err), &err, "service_id");
	assert_refused(health_check_id("service_id", "caf\xc3\xa9", &err), &err, "service_id");
}

static void test_health_name(void **state)
{
	(void)state;
	struct mon_error err = {0};
	char name[400];
	/* 100 two-byte characters are fine; 101 are not. */
	for (int i = 0; i < 101; i++)
		memcpy(name + 2 * i, "\xc3\xa9", 2);
	name[202] = '\0';
	assert_refused(health_check_name("service.name", name, &err), &err, "service.name");
	name[200] = '\0';
	assert_int_equal(health_check_name("service.name", name, &err), 0);
	assert_int_equal(strlen(name), 200);
	assert_int_equal(health_check_name("service.name", "Orders DB (primary)", &err), 0);
	assert_refused(health_check_name("service.name", "", &err), &err, "service.name");
	assert_refused(health_check_name("service.name", "a\nb", &err), &err, "service.name");
	assert_refused(health_check_name("service.name", "bad \xff byte", &err), &err, "service.name");
	assert_refused(health_check_name("service.name", "overlong \xc0\xaf", &err), &err, "service.name");
	assert_refused(health_check_name("service.name", "surrogate \xed\xa0\x80", &err), &err, "service.name");
	assert_refused(health_check_name("service.name", "cut \xe2\x82", &err), &err, "service.name");
}

static void test_health_url(void **state)
{
	(void)state;
	static const char *const good[] = {
	        "",
	        "http://example.com",
	        "https://db.internal:8443/health?full=1",
	        "grpc://10.0.0.7:50051",
	        "grpc://orders.svc.cluster.local:443/orders.v1.Orders",
	        "http://[::1]:8080/healthz",
	        "http://[fe80::1]",
	        "http://[::ffff:10.0.0.1]:80",
	        "http://localhost:1/",
	        "https://example.com#frag",
	};
	static const char *const bad[] = {
	        "ftp://example.com",
	        "HTTP://example.com",
	        "example.com",
	        "http://",
	        "http:///path",
	        "http://:80",
	        "http://exa mple.com",
	        "http://user@example.com",
	        "http://user:secret@example.com/",
	        "http://example.com:0",
	        "http://example.com:65536",
	        "http://example.com:",
	        "http://example.com:8o",
	        "http://-example.com",
	        "http://example-.com",
	        "http://a..b",
	        "http://.a",
	        "http://exa_mple.com",
	        "http://[::1",
	        "http://[]:80",
	        "http://[::g]",
	        "http://[::1]x",
	        "https://[:21]:8443/", /* hex and colons, but no IPv6 address (found by fuzzing) */
	        "http://[1:2:3:4:5:6:7:8:9]",
	        "http://[::1.2.3]",
	        "http://caf\xc3\xa9.com",
	        "http://example.com/\x01",
	};
	struct mon_error err = {0};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (health_check_url("service.health_check_url", good[i], &err) != 0)
			fail_msg("refused %s: %s", good[i], err.msg);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = health_check_url("service.health_check_url", bad[i], &err);
		if (rc != MON_EINVAL)
			fail_msg("accepted %s", bad[i]);
		assert_refused(rc, &err, "service.health_check_url");
	}
	char long_url[520] = "http://example.com/";
	memset(long_url + 19, 'p', 482);
	long_url[501] = '\0';
	assert_refused(health_check_url("u", long_url, &err), &err, "u");
	long_url[500] = '\0';
	assert_int_equal(health_check_url("u", long_url, &err), 0);
	/* Labels longer than 63 characters are not host names. */
	char long_label[80] = "http://";
	memset(long_label + 7, 'b', 64);
	long_label[71] = '\0';
	assert_refused(health_check_url("u", long_label, &err), &err, "u");
}

static void test_health_service_type(void **state)
{
	(void)state;
	struct mon_error err = {0};
	static const char *const types[] = {"database", "cache", "email", "storage", "api"};
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(health_check_service_type("service.service_type", types[i], &err), 0);
	assert_refused(health_check_service_type("service.service_type", "queue", &err), &err, "service.service_type");
	assert_refused(health_check_service_type("service.service_type", "API", &err), &err, "service.service_type");
	assert_refused(health_check_service_type("service.service_type", "", &err), &err, "service.service_type");
	assert_refused(health_check_service_type("t", NULL, &err), &err, "t");
}

static void test_health_timing(void **state)
{
	(void)state;
	struct mon_error err = {0};
	assert_int_equal(health_check_timing("service.", 300, 30, 3, &err), 0);
	assert_int_equal(health_check_timing("service.", 10, 9, 0, &err), 0);
	assert_int_equal(health_check_timing("service.", 86400, 3600, 10, &err), 0);
	assert_refused(health_check_timing("service.", 9, 5, 3, &err), &err, "service.check_interval");
	assert_refused(health_check_timing("service.", 86401, 5, 3, &err), &err, "service.check_interval");
	assert_refused(health_check_timing("service.", 60, 0, 3, &err), &err, "service.timeout");
	assert_refused(health_check_timing("service.", 60, 60, 3, &err), &err, "service.timeout");
	assert_refused(health_check_timing("service.", 60, 61, 3, &err), &err, "service.timeout");
	assert_refused(health_check_timing("service.", 86400, 3601, 3, &err), &err, "service.timeout");
	assert_refused(health_check_timing("service.", 60, 30, -1, &err), &err, "service.retry_count");
	assert_refused(health_check_timing("service.", 60, 30, 11, &err), &err, "service.retry_count");
}

static void test_health_uptime_percent(void **state)
{
	(void)state;
	double p = -1;
	assert_false(health_uptime_percent(0, 0, &p));
	assert_true(health_uptime_percent(1, 0, &p));
	assert_true(p == 100.0);
	assert_true(health_uptime_percent(0, 5, &p));
	assert_true(p == 0.0);
	assert_true(health_uptime_percent(7 * 3600000LL, 17 * 3600000LL, &p));
	assert_true(p == 29.17); /* 29.1666... */
	assert_true(health_uptime_percent(1, 2, &p));
	assert_true(p == 33.33);
	assert_true(health_uptime_percent(2, 1, &p));
	assert_true(p == 66.67);
	assert_true(health_uptime_percent(1, 7, &p)); /* 12.5 exactly */
	assert_true(p == 12.5);
	assert_true(health_uptime_percent(1, 79999, &p)); /* 0.00125 rounds half up to 0.00 */
	assert_true(p == 0.0);
	assert_true(health_uptime_percent(1, 7999, &p)); /* 0.0125 rounds half up to 0.01 */
	assert_true(p == 0.01);
	/* Thirty days of milliseconds do not overflow. */
	assert_true(health_uptime_percent(30LL * 86400000, 1, &p));
	assert_true(p == 100.0);
	assert_false(health_uptime_percent(-1, 5, &p));
}

static void test_health_status_names(void **state)
{
	(void)state;
	assert_string_equal(health_status_name(1), "healthy");
	assert_string_equal(health_status_name(2), "degraded");
	assert_string_equal(health_status_name(3), "down");
	assert_string_equal(health_status_name(4), "unknown");
	assert_null(health_status_name(0));
	assert_null(health_status_name(5));
	for (int s = 1; s <= 4; s++)
		assert_int_equal(health_status_parse(health_status_name(s)), s);
	assert_int_equal(health_status_parse("up"), 0);
	assert_int_equal(health_status_parse(NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_health_id),           cmocka_unit_test(test_health_name),
	        cmocka_unit_test(test_health_url),          cmocka_unit_test(test_health_service_type),
	        cmocka_unit_test(test_health_timing),       cmocka_unit_test(test_health_uptime_percent),
	        cmocka_unit_test(test_health_status_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
