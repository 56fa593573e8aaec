/*
 * Unit tests of the listen-address parser and formatter in server/config.c:
 * the accepted forms (HOST:PORT, [IPV6]:PORT, unix:PATH), loopback
 * detection (which decides whether plaintext is allowed), and each
 * malformed address's message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "server/config.h"

static struct mon_listen_addr parse_ok(const char *text)
{
	struct mon_listen_addr a;
	struct mon_error err;
	mon_error_clear(&err);
	int rc = mon_listen_addr_parse(text, &a, &err);
	if (rc != 0)
		print_error("parse(%s): %s\n", text, err.msg);
	assert_int_equal(rc, 0);
	return a;
}

static void parse_bad(const char *text, const char *want_in_msg)
{
	struct mon_listen_addr a;
	struct mon_error err;
	mon_error_clear(&err);
	int rc = mon_listen_addr_parse(text, &a, &err);
	if (rc == 0 || strstr(err.msg, want_in_msg) == NULL)
		print_error("parse(%s): rc=%d msg \"%s\", wanted \"%s\"\n", text, rc, err.msg, want_in_msg);
	assert_int_equal(rc, MON_EINVAL);
	assert_int_equal(err.code, MON_EINVAL);
	assert_non_null(strstr(err.msg, "listen: "));
	assert_non_null(strstr(err.msg, want_in_msg));
}

static void test_config_listen_ipv4(void **state)
{
	struct mon_listen_addr a = parse_ok("127.0.0.1:50051");
	assert_string_equal(a.host, "127.0.0.1");
	assert_int_equal(a.port, 50051);
	assert_true(a.is_loopback);
	assert_false(a.is_unix);
	assert_false(a.is_ipv6);

	a = parse_ok("127.45.6.7:0");
	assert_true(a.is_loopback);
	assert_int_equal(a.port, 0);
	a = parse_ok("0.0.0.0:65535");
	assert_false(a.is_loopback);
	assert_int_equal(a.port, 65535);
	a = parse_ok("10.1.2.3:443");
	assert_false(a.is_loopback);
	a = parse_ok("128.0.0.1:1");
	assert_false(a.is_loopback);
}

static void test_config_listen_ipv6(void **state)
{
	struct mon_listen_addr a = parse_ok("[::1]:50051");
	assert_string_equal(a.host, "::1");
	assert_true(a.is_ipv6);
	assert_true(a.is_loopback);
	assert_int_equal(a.port, 50051);

	a = parse_ok("[::]:0");
	assert_false(a.is_loopback);
	a = parse_ok("[::ffff:127.0.0.1]:1");
	assert_true(a.is_loopback);
	a = parse_ok("[::ffff:10.0.0.1]:1");
	assert_false(a.is_loopback);
	a = parse_ok("[2001:db8::5]:8443");
	assert_false(a.is_loopback);
	a = parse_ok("[fe80::1%eth0]:80");
	assert_string_equal(a.host, "fe80::1%eth0");
	assert_false(a.is_loopback);
}

static void test_config_listen_host_names(void **state)
{
	struct mon_listen_addr a = parse_ok("localhost:9000");
	assert_string_equal(a.host, "localhost");
	assert_true(a.is_loopback);
	a = parse_ok("LocalHost:9000");
	assert_true(a.is_loopback);
	/* Only the literal name counts: no name resolution happens here. */
	a = parse_ok("monitor-1.internal.example:9000");
	assert_false(a.is_loopback);
	assert_false(a.is_ipv6);
	a = parse_ok("localhost.example:1");
	assert_false(a.is_loopback);
}

static void test_config_listen_unix(void **state)
{
	struct mon_listen_addr a = parse_ok("unix:/run/monitord/grpc.sock");
	assert_true(a.is_unix);
	assert_false(a.is_loopback);
	assert_string_equal(a.path, "/run/monitord/grpc.sock");
	assert_string_equal(a.host, "");
	assert_int_equal(a.port, -1);
	a = parse_ok("unix:///tmp/x.sock");
	assert_string_equal(a.path, "/tmp/x.sock");
	a = parse_ok("unix:relative.sock");
	assert_string_equal(a.path, "relative.sock");

	char long_path[200];
	memset(long_path, 'p', sizeof(long_path) - 1);
	long_path[sizeof(long_path) - 1] = '\0';
	memcpy(long_path, "unix:/", 6);
	parse_bad(long_path, "socket path must be shorter than 108 bytes");
	char fits[5 + 107 + 1];
	memset(fits, 'p', sizeof(fits) - 1);
	fits[sizeof(fits) - 1] = '\0';
	memcpy(fits, "unix:/", 6);
	a = parse_ok(fits);
	assert_int_equal(strlen(a.path), 107);
}

static void test_config_listen_errors(void **state)
{
	parse_bad("", "missing port");
	parse_bad("127.0.0.1", "missing port");
	parse_bad("localhost", "missing port");
	parse_bad(":50051", "missing host");
	parse_bad("127.0.0.1:", "port must be between 0 and 65535, got \"\"");
	parse_bad("127.0.0.1:65536", "port must be between 0 and 65535, got \"65536\"");
	parse_bad("127.0.0.1:-1", "port must be between 0 and 65535, got \"-1\"");
	parse_bad("127.0.0.1:http", "port must be between 0 and 65535, got \"http\"");
	parse_bad("127.0.0.1:80x", "got \"80x\"");
	parse_bad("127.0.0.1: 80", "got \" 80\"");
	parse_bad("::1:50051", "IPv6 addresses must be written in brackets");
	parse_bad("[::1:50051", "missing ']'");
	parse_bad("[::1]50051", "missing port");
	parse_bad("[::1]", "missing port");
	parse_bad("[]:1", "missing host");
	parse_bad("[127.0.0.1]:1", "not an IPv6 address");
	parse_bad("[zz::1]:1", "not an IPv6 address");
	parse_bad("bad_host:1", "not an IPv4 address or host name");
	parse_bad("two words:1", "not an IPv4 address or host name");
	parse_bad("unix:", "missing socket path");
	parse_bad("unix://relative", "a unix:// address needs an absolute path");
	parse_bad("tcp://127.0.0.1:1", "unsupported scheme");
	parse_bad("dns:///host:1", "unsupported scheme");
}

static void test_config_listen_format(void **state)
{
	char buf[160];
	struct mon_listen_addr a = parse_ok("127.0.0.1:0");
	assert_int_equal(mon_listen_addr_format(&a, 40123, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "127.0.0.1:40123");
	a = parse_ok("[::1]:0");
	assert_int_equal(mon_listen_addr_format(&a, 7, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "[::1]:7");
	a = parse_ok("unix:/tmp/s");
	assert_int_equal(mon_listen_addr_format(&a, 0, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "unix:/tmp/s");
	/* A path that starts with "//" (found by fuzzing): formatted, it must parse back to itself. */
	a = parse_ok("unix:////run/s");
	assert_string_equal(a.path, "//run/s");
	assert_int_equal(mon_listen_addr_format(&a, 0, buf, sizeof(buf)), 0);
	struct mon_listen_addr again = parse_ok(buf);
	assert_string_equal(again.path, "//run/s");
	a = parse_ok("localhost:1");
	assert_int_equal(mon_listen_addr_format(&a, 65535, buf, 15), MON_ENOMEM);
	assert_int_equal(mon_listen_addr_format(&a, 65535, buf, 16), 0);
	assert_string_equal(buf, "localhost:65535");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_config_listen_ipv4),       cmocka_unit_test(test_config_listen_ipv6),
	        cmocka_unit_test(test_config_listen_host_names), cmocka_unit_test(test_config_listen_unix),
	        cmocka_unit_test(test_config_listen_errors),     cmocka_unit_test(test_config_listen_format),
	};
	return cmocka_run_group_tests_name("config_listen", tests, NULL, NULL);
}
