/*
 * Unit tests of the prober's network policy (server/health/netpolicy.c):
 * CIDR parsing and its errors, IPv4 and IPv6 matching, the default
 * link-local deny list with its IPv4-mapped forms, deny winning over
 * allow, and host literals in URLs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "health/netpolicy.h"

static struct netpolicy policy(const char *allow, const char *deny)
{
	struct netpolicy p;
	struct mon_error err;
	mon_error_clear(&err);
	int rc = netpolicy_init(&p, allow, deny, &err);
	if (rc != 0)
		print_error("netpolicy_init(%s, %s): %s\n", allow ? allow : "NULL", deny ? deny : "NULL", err.msg);
	assert_int_equal(rc, 0);
	return p;
}

/* Whether p allows the address text, through a sockaddr as the prober sees it. */
static bool allows(const struct netpolicy *p, const char *text)
{
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
	memset(&in, 0, sizeof(in));
	memset(&in6, 0, sizeof(in6));
	if (inet_pton(AF_INET, text, &in.sin_addr) == 1) {
		in.sin_family = AF_INET;
		return netpolicy_allows_sockaddr(p, (const struct sockaddr *)&in, sizeof(in));
	}
	assert_int_equal(inet_pton(AF_INET6, text, &in6.sin6_addr), 1);
	in6.sin6_family = AF_INET6;
	return netpolicy_allows_sockaddr(p, (const struct sockaddr *)&in6, sizeof(in6));
}

static void test_health_netpolicy_default_denies_link_local(void **state)
{
	(void)state;
	struct netpolicy p = policy(NULL, NULL);
	assert_false(allows(&p, "169.254.169.254"));
	assert_false(allows(&p, "169.254.0.1"));
	assert_false(allows(&p, "::ffff:169.254.169.254"));
	assert_false(allows(&p, "fe80::1"));
	assert_false(allows(&p, "febf:ffff::1"));
	assert_true(allows(&p, "169.255.0.1"));
	assert_true(allows(&p, "169.253.255.255"));
	assert_true(allows(&p, "fec0::1"));
	assert_true(allows(&p, "127.0.0.1"));
	assert_true(allows(&p, "::1"));
	assert_true(allows(&p, "10.1.2.3"));
	assert_true(allows(&p, "2001:db8::1"));
}

static void test_health_netpolicy_empty_deny_list_allows_all(void **state)
{
	(void)state;
	struct netpolicy p = policy("", "");
	assert_true(allows(&p, "169.254.169.254"));
	assert_true(allows(&p, "fe80::1"));
}

static void test_health_netpolicy_allow_list_and_deny_wins(void **state)
{
	(void)state;
	struct netpolicy p = policy(" 10.0.0.0/8 , 2001:db8::/32,192.0.2.7", "10.9.0.0/16");
	assert_true(allows(&p, "10.0.0.1"));
	assert_true(allows(&p, "10.255.255.255"));
	assert_true(allows(&p, "::ffff:10.1.1.1"));
	assert_false(allows(&p, "10.9.1.1")); /* in both: deny wins */
	assert_false(allows(&p, "::ffff:10.9.1.1"));
	assert_true(allows(&p, "192.0.2.7"));
	assert_false(allows(&p, "192.0.2.8"));
	assert_true(allows(&p, "2001:db8:ffff::1"));
	assert_false(allows(&p, "2001:db9::1"));
	assert_false(allows(&p, "11.0.0.1"));
	assert_false(allows(&p, "127.0.0.1"));
}

static void test_health_netpolicy_loopback_denied(void **state)
{
	(void)state;
	struct netpolicy p = policy(NULL, "127.0.0.0/8,::1/128");
	assert_false(allows(&p, "127.0.0.1"));
	assert_false(allows(&p, "127.255.0.9"));
	assert_false(allows(&p, "::ffff:127.0.0.1"));
	assert_false(allows(&p, "::1"));
	assert_true(allows(&p, "128.0.0.1"));
	/* An IPv6 listing of a mapped range covers the plain IPv4 form too. */
	struct netpolicy q = policy(NULL, "::ffff:192.168.0.0/112");
	assert_false(allows(&q, "192.168.3.4"));
	assert_true(allows(&q, "192.169.0.1"));
}

static void test_health_netpolicy_odd_prefixes(void **state)
{
	(void)state;
	struct netpolicy p = policy(NULL, "100.64.0.0/10,0.0.0.0/32");
	assert_false(allows(&p, "100.64.0.1"));
	assert_false(allows(&p, "100.127.255.255"));
	assert_true(allows(&p, "100.128.0.0"));
	assert_true(allows(&p, "100.63.255.255"));
	assert_false(allows(&p, "0.0.0.0"));
	struct netpolicy all4 = policy(NULL, "0.0.0.0/0");
	assert_false(allows(&all4, "203.0.113.9"));
	assert_true(allows(&all4, "2001:db8::1"));
	struct netpolicy all = policy(NULL, "::/0");
	assert_false(allows(&all, "203.0.113.9"));
	assert_false(allows(&all, "2001:db8::1"));
}

static void parse_bad(const char *text, const char *want_in_msg)
{
	struct netpolicy_net nets[NETPOLICY_NETWORKS_MAX];
	size_t n = 0;
	struct mon_error err;
	mon_error_clear(&err);
	int rc = netpolicy_parse_list("probe-deny-networks", text, nets, &n, &err);
	if (rc == 0 || strstr(err.msg, want_in_msg) == NULL)
		print_error("parse(%s): rc=%d msg \"%s\", wanted \"%s\"\n", text, rc, err.msg, want_in_msg);
	assert_int_equal(rc, MON_EINVAL);
	assert_non_null(strstr(err.msg, "probe-deny-networks: "));
	assert_non_null(strstr(err.msg, want_in_msg));
}

static void test_health_netpolicy_parse_errors(void **state)
{
	(void)state;
	parse_bad("10.0.0.0/33", "at most 32");
	parse_bad("fe80::/129", "at most 128");
	parse_bad("10.1.0.0/8", "bits set past");
	parse_bad("fe80::1/10", "bits set past");
	parse_bad("10.0.0.0/", "bad prefix");
	parse_bad("10.0.0.0/-1", "bad prefix");
	parse_bad("10.0.0.0/8x", "bad prefix");
	parse_bad("example.com", "not an IPv4 or IPv6");
	parse_bad("10.0.0.0/8,,fe80::/10", "empty item");
	parse_bad("0123456789012345678901234567890123456789012345678901234567890123456789", "not a network");
	char many[NETPOLICY_NETWORKS_MAX * 16 + 32] = "";
	size_t len = 0;
	for (int i = 0; i <= NETPOLICY_NETWORKS_MAX; i++) {
		int n = snprintf(many + len, sizeof(many) - len, "%s10.0.%d.0/24", i ? "," : "", i);
		assert_true(n > 0 && (size_t)n < sizeof(many) - len);
		len += (size_t)n;
	}
	parse_bad(many, "at most 64 networks");
}

static void test_health_netpolicy_host_literals(void **state)
{
	(void)state;
	struct netpolicy p = policy(NULL, "127.0.0.0/8,::1/128");
	bool is_literal = false;
	assert_false(netpolicy_allows_host_literal(&p, "127.0.0.1", &is_literal));
	assert_true(is_literal);
	assert_false(netpolicy_allows_host_literal(&p, "[::1]", &is_literal));
	assert_true(is_literal);
	assert_false(netpolicy_allows_host_literal(&p, "[::ffff:127.0.0.2]", &is_literal));
	assert_true(is_literal);
	assert_true(netpolicy_allows_host_literal(&p, "10.0.0.1", &is_literal));
	assert_true(is_literal);
	assert_true(netpolicy_allows_host_literal(&p, "localhost", &is_literal));
	assert_false(is_literal);
	struct netpolicy d = policy(NULL, NULL);
	assert_false(netpolicy_allows_host_literal(&d, "[fe80::1%25eth0]", &is_literal));
	assert_true(is_literal);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_health_netpolicy_default_denies_link_local),
	        cmocka_unit_test(test_health_netpolicy_empty_deny_list_allows_all),
	        cmocka_unit_test(test_health_netpolicy_allow_list_and_deny_wins),
	        cmocka_unit_test(test_health_netpolicy_loopback_denied),
	        cmocka_unit_test(test_health_netpolicy_odd_prefixes),
	        cmocka_unit_test(test_health_netpolicy_parse_errors),
	        cmocka_unit_test(test_health_netpolicy_host_literals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
