/*
 * The pure parts of the audit trail (server/audit/audit.c): the peer string to an
 * inet address, the "changes" diff of before and after, the event id format
 * and the clipping of free text to valid UTF-8 of a column's length. No
 * server needed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "audit/audit.h"

static void assert_peer(const char *peer, const char *want)
{
	char ip[64];
	memset(ip, 'x', sizeof(ip));
	audit_peer_ip(peer, ip, sizeof(ip));
	if (strcmp(ip, want) != 0)
		fail_msg("peer \"%s\": got \"%s\", want \"%s\"", peer ? peer : "(null)", ip, want);
}

static void test_audit_peer_ipv4(void **state)
{
	assert_peer("ipv4:127.0.0.1:5555", "127.0.0.1");
	assert_peer("ipv4:10.1.2.3:443", "10.1.2.3");
	assert_peer("ipv4:192.168.0.1", "192.168.0.1"); /* no port */
}

static void test_audit_peer_ipv6(void **state)
{
	assert_peer("ipv6:[::1]:5555", "::1");
	assert_peer("ipv6:%5B::1%5D:5555", "::1"); /* gRPC percent-encodes the brackets */
	assert_peer("ipv6:%5b2001:db8::7%5d:50051", "2001:db8::7");
	assert_peer("ipv6:[fe80::1%25eth0]:5555", "fe80::1"); /* zone id dropped: inet has none */
	assert_peer("ipv6:[fe80::1%eth0]:5555", "fe80::1");
	assert_peer("ipv6:[::ffff:10.0.0.1]:1", "::ffff:10.0.0.1");
}

static void test_audit_peer_unix_is_this_host(void **state)
{
	assert_peer("unix:/tmp/monitord.sock", "127.0.0.1");
	assert_peer("unix-abstract:monitord", "127.0.0.1");
}

static void test_audit_peer_unknown_is_unspecified_address(void **state)
{
	assert_peer(NULL, "0.0.0.0");
	assert_peer("", "0.0.0.0");
	assert_peer("vsock:3:1234", "0.0.0.0");
	assert_peer("ipv4:not-an-address:1", "0.0.0.0");
	assert_peer("ipv4::5555", "0.0.0.0");
	assert_peer("ipv6:[::1:5555", "0.0.0.0");         /* unterminated bracket */
	assert_peer("ipv6:[1.2.3.4]:5", "0.0.0.0");       /* not IPv6 */
	assert_peer("ipv4:1.2.3.4'); DROP:1", "0.0.0.0"); /* never passed through unchecked */
}

static void test_audit_peer_small_buffer_terminates(void **state)
{
	char ip[4];
	audit_peer_ip("ipv4:127.0.0.1:1", ip, sizeof(ip));
	assert_int_equal(strlen(ip), 3);
}

static json_t *parse(const char *text)
{
	json_error_t e;
	json_t *v = json_loads(text, 0, &e);
	if (v == NULL)
		fail_msg("bad test JSON %s: %s", text, e.text);
	return v;
}

/* changes(before, after) must equal want (JSON text; NULL for a NULL result). */
static void assert_changes(const char *before, const char *after, const char *want)
{
	json_t *b = before ? parse(before) : NULL;
	json_t *a = after ? parse(after) : NULL;
	json_t *got = audit_changes(b, a);
	if (want == NULL) {
		assert_null(got);
	} else {
		json_t *w = parse(want);
		if (!json_equal(got, w)) {
			char *text = got ? json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
			fail_msg("changes(%s, %s) = %s, want %s", before ? before : "NULL", after ? after : "NULL",
			         text ? text : "NULL", want);
		}
		json_decref(w);
	}
	json_decref(got);
	json_decref(a);
	json_decref(b);
}

static void test_audit_changes_lists_differing_keys_only(void **state)
{
	assert_changes("{\"a\":1,\"b\":\"x\",\"c\":true}", "{\"a\":1,\"b\":\"y\",\"c\":true}",
	               "{\"b\":{\"from\":\"x\",\"to\":\"y\"}}");
	assert_changes("{\"a\":1}", "{\"a\":1}", "{}");
}

static void test_audit_changes_added_and_removed_keys(void **state)
{
	assert_changes("{\"a\":1,\"gone\":2}", "{\"a\":1,\"new\":[1,2]}",
	               "{\"gone\":{\"from\":2,\"to\":null},\"new\":{\"from\":null,\"to\":[1,2]}}");
}

static void test_audit_changes_nested_values_compare_whole(void **state)
{
	assert_changes("{\"o\":{\"x\":1,\"y\":2}}", "{\"o\":{\"y\":2,\"x\":1}}", "{}"); /* key order is not a change */
	assert_changes("{\"o\":{\"x\":1}}", "{\"o\":{\"x\":2}}", "{\"o\":{\"from\":{\"x\":1},\"to\":{\"x\":2}}}");
	assert_changes("{\"v\":null}", "{\"v\":0}", "{\"v\":{\"from\":null,\"to\":0}}");
	assert_changes("{\"v\":1}", "{\"v\":1.0}", "{\"v\":{\"from\":1,\"to\":1.0}}"); /* integer vs real differ */
}

static void test_audit_changes_creation_and_deletion(void **state)
{
	assert_changes(NULL, "{\"id\":\"k1\",\"n\":1}",
	               "{\"id\":{\"from\":null,\"to\":\"k1\"},\"n\":{\"from\":null,\"to\":1}}");
	assert_changes("{\"id\":\"k1\"}", NULL, "{\"id\":{\"from\":\"k1\",\"to\":null}}");
	assert_changes(NULL, NULL, NULL);
	assert_changes("[1]", "{\"a\":1}", "{\"a\":{\"from\":null,\"to\":1}}"); /* a non-object counts as {} */
}

static void test_audit_event_id_format(void **state)
{
	const unsigned char rnd[8] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
	char id[AUDIT_EVENT_ID_LEN + 1];
	audit_format_event_id(1735689600000LL, rnd, id); /* 2025-01-01T00:00:00Z */
	assert_string_equal(id, "AUD-01941f297c00-0123456789abcdef");
	assert_int_equal(strlen(id), AUDIT_EVENT_ID_LEN);
	assert_true(AUDIT_EVENT_ID_LEN <= 50); /* tb_audit_event.event_id is VARCHAR(50) */
}

static void test_audit_event_id_sorts_by_time(void **state)
{
	const unsigned char hi[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	const unsigned char lo[8] = {0};
	char a[AUDIT_EVENT_ID_LEN + 1], b[AUDIT_EVENT_ID_LEN + 1];
	audit_format_event_id(1000, hi, a);
	audit_format_event_id(1001, lo, b);
	assert_true(strcmp(a, b) < 0);
	audit_format_event_id(0, lo, a);
	assert_string_equal(a, "AUD-000000000000-0000000000000000");
}

static void assert_clip(const char *in, size_t max_chars, size_t out_len, const char *want)
{
	char out[64];
	assert_true(out_len <= sizeof(out));
	audit_clip_text(in, max_chars, out, out_len);
	if (strcmp(out, want) != 0)
		fail_msg("clip(\"%s\", %zu, %zu) = \"%s\", want \"%s\"", in ? in : "(null)", max_chars, out_len, out,
		         want);
}

static void test_audit_clip_counts_characters_not_bytes(void **state)
{
	assert_clip("abcdef", 3, 64, "abc");
	assert_clip("h\xc3\xa9llo", 2, 64, "h\xc3\xa9"); /* "hé": two characters, three bytes */
	assert_clip("\xe2\x82\xac\xe2\x82\xac", 1, 64, "\xe2\x82\xac");
	assert_clip(NULL, 10, 64, "");
}

static void test_audit_clip_never_splits_a_character(void **state)
{
	assert_clip("a\xe2\x82\xac", 10, 4, "a"); /* the euro sign needs 3 bytes + NUL: left out whole */
	assert_clip("a\xe2\x82\xac", 10, 5, "a\xe2\x82\xac");
}

static void test_audit_clip_replaces_invalid_utf8(void **state)
{
	assert_clip("a\xff"
	            "b",
	            10, 64, "a?b");
	assert_clip("\xc3", 10, 64, "?");                            /* truncated sequence */
	assert_clip("\xc0\xaf", 10, 64, "??");                       /* overlong */
	assert_clip("\xed\xa0\x80", 10, 64, "???");                  /* surrogate */
	assert_clip("\xf4\x90\x80\x80", 10, 64, "????");             /* above U+10FFFF */
	assert_clip("\xf0\x9f\x98\x80", 10, 64, "\xf0\x9f\x98\x80"); /* a valid 4-byte character */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_audit_peer_ipv4),
	        cmocka_unit_test(test_audit_peer_ipv6),
	        cmocka_unit_test(test_audit_peer_unix_is_this_host),
	        cmocka_unit_test(test_audit_peer_unknown_is_unspecified_address),
	        cmocka_unit_test(test_audit_peer_small_buffer_terminates),
	        cmocka_unit_test(test_audit_changes_lists_differing_keys_only),
	        cmocka_unit_test(test_audit_changes_added_and_removed_keys),
	        cmocka_unit_test(test_audit_changes_nested_values_compare_whole),
	        cmocka_unit_test(test_audit_changes_creation_and_deletion),
	        cmocka_unit_test(test_audit_event_id_format),
	        cmocka_unit_test(test_audit_event_id_sorts_by_time),
	        cmocka_unit_test(test_audit_clip_counts_characters_not_bytes),
	        cmocka_unit_test(test_audit_clip_never_splits_a_character),
	        cmocka_unit_test(test_audit_clip_replaces_invalid_utf8),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
