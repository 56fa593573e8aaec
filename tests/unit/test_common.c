/*
 * What every service uses (server/common/): the UTF-8 checker and the text
 * field check on it, integers of database text, timestamps, page sizes,
 * page tokens and key cursors, idempotency keys (which field, validation,
 * the digest of a request without its key). No server needed.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/idem.h"
#include "common/json.h"
#include "common/page.h"
#include "common/parse.h"
#include "common/text.h"
#include "mon_services.h"
#include "monitoring/v1/alerts.pb-c.h"
#include "monitoring/v1/audit.pb-c.h"
#include "monitoring/v1/errors.pb-c.h"

static size_t decode(const char *s, size_t len, uint32_t *cp)
{
	return utf8_decode((const unsigned char *)s, len, cp);
}

static void test_common_utf8_valid_1_to_4_bytes(void **state)
{
	(void)state;
	uint32_t cp = 0;
	assert_int_equal(decode("A", 1, &cp), 1);
	assert_int_equal(cp, 0x41);
	assert_int_equal(decode("\x7f", 1, &cp), 1);
	assert_int_equal(decode("\xc2\x80", 2, &cp), 2); /* U+0080, the lowest 2-byte */
	assert_int_equal(cp, 0x80);
	assert_int_equal(decode("\xc3\xa9", 2, &cp), 2); /* é */
	assert_int_equal(cp, 0xe9);
	assert_int_equal(decode("\xe0\xa0\x80", 3, &cp), 3); /* U+0800, the lowest 3-byte */
	assert_int_equal(decode("\xe2\x82\xac", 3, &cp), 3); /* € */
	assert_int_equal(cp, 0x20ac);
	assert_int_equal(decode("\xed\x9f\xbf", 3, &cp), 3);     /* U+D7FF, just below the surrogates */
	assert_int_equal(decode("\xee\x80\x80", 3, &cp), 3);     /* U+E000, just above them */
	assert_int_equal(decode("\xf0\x90\x80\x80", 4, &cp), 4); /* U+10000 */
	assert_int_equal(decode("\xf0\x9f\x98\x80", 4, &cp), 4); /* 😀 */
	assert_int_equal(cp, 0x1f600);
	assert_int_equal(decode("\xf4\x8f\xbf\xbf", 4, &cp), 4); /* U+10FFFF */
	assert_int_equal(cp, 0x10ffff);
	size_t chars = 0;
	const char *mixed = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
	assert_int_equal(utf8_scan(mixed, strlen(mixed), 0, &chars, NULL), UTF8_OK);
	assert_int_equal(chars, 4);
}

static void test_common_utf8_refuses_overlong(void **state)
{
	(void)state;
	assert_int_equal(decode("\xc0\xaf", 2, NULL), 0);         /* '/' in 2 bytes */
	assert_int_equal(decode("\xc1\xbf", 2, NULL), 0);         /* U+007F in 2 bytes */
	assert_int_equal(decode("\xc0\x80", 2, NULL), 0);         /* NUL in 2 bytes (modified UTF-8) */
	assert_int_equal(decode("\xe0\x80\xaf", 3, NULL), 0);     /* '/' in 3 bytes */
	assert_int_equal(decode("\xe0\x9f\xbf", 3, NULL), 0);     /* U+07FF in 3 bytes */
	assert_int_equal(decode("\xf0\x80\x80\xaf", 4, NULL), 0); /* '/' in 4 bytes */
	assert_int_equal(decode("\xf0\x8f\xbf\xbf", 4, NULL), 0); /* U+FFFF in 4 bytes */
}

static void test_common_utf8_refuses_surrogates(void **state)
{
	(void)state;
	assert_int_equal(decode("\xed\xa0\x80", 3, NULL), 0); /* U+D800 */
	assert_int_equal(decode("\xed\xaf\xbf", 3, NULL), 0); /* U+DBFF */
	assert_int_equal(decode("\xed\xb0\x80", 3, NULL), 0); /* U+DC00 */
	assert_int_equal(decode("\xed\xbf\xbf", 3, NULL), 0); /* U+DFFF */
	/* A pair encoded as two 3-byte sequences (CESU-8) is not UTF-8 either. */
	const char *cesu = "\xed\xa0\xbd\xed\xb8\x80";
	assert_int_equal(utf8_scan(cesu, strlen(cesu), 0, NULL, NULL), UTF8_INVALID);
}

static void test_common_utf8_refuses_above_10ffff(void **state)
{
	(void)state;
	assert_int_equal(decode("\xf4\x90\x80\x80", 4, NULL), 0); /* U+110000 */
	assert_int_equal(decode("\xf5\x80\x80\x80", 4, NULL), 0);
	assert_int_equal(decode("\xf7\xbf\xbf\xbf", 4, NULL), 0);     /* U+1FFFFF */
	assert_int_equal(decode("\xf8\x88\x80\x80\x80", 5, NULL), 0); /* old 5-byte form */
	assert_int_equal(decode("\xff", 1, NULL), 0);
}

static void test_common_utf8_refuses_nul_and_stray_bytes(void **state)
{
	(void)state;
	assert_int_equal(decode("", 1, NULL), 0); /* the NUL byte itself */
	assert_int_equal(utf8_scan("a\0b", 3, 0, NULL, NULL), UTF8_INVALID);
	assert_int_equal(decode("\x80", 1, NULL), 0); /* a continuation byte alone */
	assert_int_equal(decode("\xbf", 1, NULL), 0);
	assert_int_equal(decode("\xc3\x41", 2, NULL), 0); /* a lead byte then ASCII */
}

static void test_common_utf8_refuses_truncated(void **state)
{
	(void)state;
	assert_int_equal(decode("\xc3", 1, NULL), 0);
	assert_int_equal(decode("\xe2\x82", 2, NULL), 0);
	assert_int_equal(decode("\xf0\x9f\x98", 3, NULL), 0);
	/* len cuts a sequence that the bytes after it would complete. */
	assert_int_equal(decode("\xe2\x82\xac", 2, NULL), 0);
	assert_int_equal(utf8_scan("ok\xe2\x82", 4, 0, NULL, NULL), UTF8_INVALID);
	/* In a C string the terminator stops a cut sequence. */
	assert_int_equal(decode("\xf0\x9f", 4, NULL), 0);
}

static void test_common_utf8_controls_by_flag(void **state)
{
	(void)state;
	assert_int_equal(utf8_scan("a\tb", 3, 0, NULL, NULL), UTF8_OK);
	assert_int_equal(utf8_scan("a\tb", 3, SVC_TEXT_NO_C0, NULL, NULL), UTF8_CONTROL);
	assert_int_equal(utf8_scan("del\x7f", 4, SVC_TEXT_NO_C0, NULL, NULL), UTF8_CONTROL);
	assert_int_equal(utf8_scan("c1\xc2\x85", 4, SVC_TEXT_NO_C0, NULL, NULL), UTF8_OK); /* U+0085 */
	assert_int_equal(utf8_scan("c1\xc2\x85", 4, SVC_TEXT_NO_CONTROLS, NULL, NULL), UTF8_CONTROL);
	/* The first problem wins: invalid before control, control before invalid. */
	assert_int_equal(utf8_scan("\xff\t", 2, SVC_TEXT_NO_C0, NULL, NULL), UTF8_INVALID);
	assert_int_equal(utf8_scan("\t\xff", 2, SVC_TEXT_NO_C0, NULL, NULL), UTF8_CONTROL);
}

/* Every position of a long string, so the eight-bytes-at-a-time path is checked at each lane. */
static void test_common_utf8_finds_each_position(void **state)
{
	(void)state;
	char buf[40];
	for (size_t len = 1; len <= sizeof(buf); len++) {
		memset(buf, 'x', len);
		size_t chars = 0, bad_at = 99;
		assert_int_equal(utf8_scan(buf, len, UTF8_NO_CONTROLS, &chars, &bad_at), UTF8_OK);
		assert_int_equal(chars, len);
		for (size_t at = 0; at < len; at++) {
			static const char bad[] = {'\0', '\x80', '\xff', '\x7f', '\x1f', '\n'};
			for (size_t k = 0; k < sizeof(bad); k++) {
				memset(buf, '~', len);
				buf[at] = bad[k];
				bad_at = 99;
				enum utf8_result want = k < 3 ? UTF8_INVALID : UTF8_CONTROL;
				assert_int_equal(utf8_scan(buf, len, UTF8_NO_C0, NULL, &bad_at), want);
				assert_int_equal(bad_at, at);
				if (k >= 3) {
					assert_int_equal(utf8_scan(buf, len, 0, &chars, NULL), UTF8_OK);
					assert_int_equal(chars, len);
				}
			}
		}
		/* A 2-byte character at the end of a run: counted once. */
		memset(buf, ' ', len);
		if (len >= 2) {
			buf[len - 2] = '\xc3';
			buf[len - 1] = '\xa9';
			assert_int_equal(utf8_scan(buf, len, UTF8_NO_CONTROLS, &chars, NULL), UTF8_OK);
			assert_int_equal(chars, len - 1);
		}
	}
}

static void test_common_check_text_messages(void **state)
{
	(void)state;
	struct mon_error err = {0};
	assert_int_equal(svc_check_text("note", NULL, 0, 10, 0, 0, &err), 0);
	assert_int_equal(svc_check_text("note", "", 1, 10, 0, 0, &err), MON_EINVAL);
	assert_string_equal(err.msg, "note: must be set");
	assert_int_equal(svc_check_text("note", "\xc3\xa9\xc3\xa9", 0, 2, 0, 0, &err), 0); /* characters, not bytes */
	assert_int_equal(svc_check_text("note", "abc", 0, 2, 0, 0, &err), MON_EINVAL);
	assert_string_equal(err.msg, "note: at most 2 characters");
	assert_int_equal(svc_check_text("note", "ab", 3, 10, 0, 0, &err), MON_EINVAL);
	assert_string_equal(err.msg, "note: at least 3 characters");
	assert_int_equal(svc_check_text("note", "\xc3\xa9\xc3\xa9", 0, 10, 3, 0, &err), MON_EINVAL);
	assert_string_equal(err.msg, "note: at most 3 bytes");
	assert_int_equal(svc_check_text("note", "\xed\xa0\x80", 0, 10, 0, 0, &err), MON_EINVAL);
	assert_string_equal(err.msg, "note: must be valid UTF-8");
	assert_int_equal(svc_check_text("note", "a\nb", 0, 10, 0, SVC_TEXT_NO_CONTROLS, &err), MON_EINVAL);
	assert_string_equal(err.msg, "note: must not contain control characters");
}

static void test_common_parse_i64(void **state)
{
	(void)state;
	assert_int_equal(svc_parse_i64("0"), 0);
	assert_int_equal(svc_parse_i64("42"), 42);
	assert_int_equal(svc_parse_i64("-17"), -17);
	assert_true(svc_parse_i64("9223372036854775807") == INT64_MAX);
	assert_true(svc_parse_i64("-9223372036854775808") == INT64_MIN);
	assert_true(svc_parse_i64("99999999999999999999") == INT64_MAX); /* clamped */
	assert_int_equal(svc_parse_i64("12abc"), 12);                    /* the leading number */
	assert_int_equal(svc_parse_i64(""), 0);
	assert_int_equal(svc_parse_i64("abc"), 0);
	assert_int_equal(svc_parse_i64(NULL), 0);
}

static void test_common_hex_decode(void **state)
{
	(void)state;
	struct arena *a = arena_create(0);
	size_t len = 99;
	const uint8_t *b = svc_hex_decode(a, "00ff7Fa0", &len);
	assert_non_null(b);
	assert_int_equal(len, 4);
	assert_memory_equal(b, "\x00\xff\x7f\xa0", 4);
	assert_non_null(svc_hex_decode(a, "", &len));
	assert_int_equal(len, 0);
	assert_null(svc_hex_decode(a, "abc", &len)); /* odd length */
	assert_null(svc_hex_decode(a, "0g", &len));
	assert_null(svc_hex_decode(a, "00 1", &len));
	arena_destroy(a);
}

static void test_common_times(void **state)
{
	(void)state;
	struct mon_error err = {0};
	int64_t ms = 0;
	Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	ts.seconds = 1735689600;
	ts.nanos = 123456789;
	assert_int_equal(svc_time_ms("time", &ts, &ms, &err), 0);
	assert_true(ms == INT64_C(1735689600123));
	ts.nanos = -1;
	assert_int_equal(svc_time_ms("time", &ts, &ms, &err), MON_EINVAL);
	assert_string_equal(err.msg, "time: not a valid time");
	ts.nanos = 0;
	ts.seconds = SVC_TIMESTAMP_SECONDS_MAX + 1;
	assert_int_equal(svc_time_ms("time", &ts, &ms, &err), MON_EINVAL);

	struct arena *a = arena_create(0);
	Google__Protobuf__Timestamp *out = NULL;
	assert_non_null(out = svc_ts_from_us(a, -1));
	assert_int_equal(out->seconds, -1);
	assert_int_equal(out->nanos, 999999000);
	assert_non_null(out = svc_ts_from_us(a, INT64_C(1735689600123456)));
	assert_int_equal(out->seconds, 1735689600);
	assert_int_equal(out->nanos, 123456000);
	arena_destroy(a);
}

static void test_common_page_size(void **state)
{
	(void)state;
	struct mon_error err = {0};
	int n = -1;
	assert_int_equal(svc_page_size(0, 50, 500, &n, &err), 0);
	assert_int_equal(n, 50);
	assert_int_equal(svc_page_size(1, 50, 500, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(svc_page_size(500, 50, 500, &n, &err), 0);
	assert_int_equal(n, 500);
	assert_int_equal(svc_page_size(501, 50, 500, &n, &err), 0);
	assert_int_equal(n, 500);
	assert_int_equal(svc_page_size(INT32_MAX, 100, 1000, &n, &err), 0);
	assert_int_equal(n, 1000);
	assert_int_equal(svc_page_size(-1, 50, 500, &n, &err), MON_EINVAL);
	assert_string_equal(err.msg, "page_size: must not be negative");
}

static void test_common_page_token_in_arena(void **state)
{
	(void)state;
	struct mon_error err = {0};
	struct arena *a = arena_create(0);
	char *token = NULL, *cursor = NULL;
	assert_int_equal(svc_page_token_make_in(a, "alerts|active", "17,42,abc", 1400, &token, &err), 0);
	assert_int_equal(svc_page_token_read_in(a, token, "alerts|active", 1400, &cursor, &err), 0);
	assert_string_equal(cursor, "17,42,abc");
	assert_int_equal(svc_page_token_read_in(a, token, "alerts|resolved", 1400, &cursor, &err), MON_EINVAL);
	assert_string_equal(err.msg, "page_token: does not match the request");
	assert_int_equal(svc_page_token_read_in(a, token, "alerts|active", strlen(token), &cursor, &err), MON_EINVAL);
	assert_string_equal(err.msg, "page_token: malformed");

	/* Key cursors hold any key, ',' and '|' included. */
	char *kc = svc_key_cursor_make(a, "name, with|odd", "id-1");
	assert_non_null(kc);
	assert_null(strchr(kc, '|'));
	const char *key = NULL, *id = NULL;
	assert_int_equal(svc_key_cursor_read(a, kc, 0, &key, &id, &err), 0);
	assert_string_equal(key, "name, with|odd");
	assert_string_equal(id, "id-1");
	assert_int_equal(svc_key_cursor_read(a, kc, 4, &key, &id, &err), MON_EINVAL); /* key too long */
	const char *bad[] = {"no-comma", "abc,id", "zz,id", "00,id"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(svc_key_cursor_read(a, bad[i], 0, &key, &id, &err), MON_EINVAL);
		assert_string_equal(err.msg, "page_token: malformed");
	}

	/* The longest cursor a token holds reads back (found by fuzzing: tokens of 2048+ characters were refused). */
	char long_cursor[2048 - 20];
	memset(long_cursor, 'c', sizeof(long_cursor) - 1);
	long_cursor[sizeof(long_cursor) - 1] = '\0';
	assert_int_equal(svc_page_token_make_in(a, "q", long_cursor, 2800, &token, &err), 0);
	assert_true(strlen(token) > 2048);
	assert_int_equal(svc_page_token_read_in(a, token, "q", 2800, &cursor, &err), 0);
	assert_string_equal(cursor, long_cursor);
	/* The token's size is bounded by token_max alone: base64 of 2119 bytes is 2826 characters. */
	char too_long[2100 + 1];
	memset(too_long, 'c', sizeof(too_long) - 1);
	too_long[sizeof(too_long) - 1] = '\0';
	assert_int_equal(svc_page_token_make_in(a, "q", too_long, 2800, &token, &err), MON_EINTERNAL);
	assert_int_equal(svc_page_token_make_in(a, "q", too_long, 4096, &token, &err), 0);
	assert_int_equal(svc_page_token_read_in(a, token, "q", 4096, &cursor, &err), 0);
	assert_string_equal(cursor, too_long);
	arena_destroy(a);
}

/* JSON -> Struct -> JSON keeps every kind of value; nesting past the limit is refused both ways. */
static void test_common_struct_json_round_trip(void **state)
{
	(void)state;
	const char *text = "{\"a\": 1, \"b\": 2.5, \"c\": \"x\", \"d\": true, \"e\": null, \"f\": [1, {\"g\": []}]}";
	json_t *in = json_loads(text, 0, NULL);
	assert_non_null(in);
	struct arena *a = arena_create(0);
	Google__Protobuf__Struct *s = svc_struct_from_json(a, in);
	assert_non_null(s);
	assert_int_equal(s->n_fields, 6);
	struct mon_error err = {0};
	json_t *out = svc_struct_to_json(s, &err);
	assert_non_null(out);
	assert_true(json_equal(in, out));
	json_decref(out);

	json_t *deep = json_object(), *cur = deep;
	for (int i = 0; i < SVC_JSON_DEPTH_MAX + 1; i++) {
		json_t *next = json_object();
		json_object_set_new(cur, "k", next);
		cur = next;
	}
	assert_null(svc_struct_from_json(a, deep));
	json_decref(deep);

	Google__Protobuf__Value nan = GOOGLE__PROTOBUF__VALUE__INIT;
	nan.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
	nan.number_value = NAN;
	Google__Protobuf__Struct__FieldsEntry e = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	e.key = "n";
	e.value = &nan;
	Google__Protobuf__Struct__FieldsEntry *fields[] = {&e};
	Google__Protobuf__Struct bad = GOOGLE__PROTOBUF__STRUCT__INIT;
	bad.n_fields = 1;
	bad.fields = fields;
	assert_null(svc_struct_to_json(&bad, &err));
	assert_int_equal(err.code, MON_EINVAL);
	json_decref(in);
	arena_destroy(a);
}

/* ---- idempotency keys ---- */

static void test_common_idem_key_field(void **state)
{
	(void)state;
	const ProtobufCFieldDescriptor *f = rpc_idem_key_field(&monitoring__v1__acknowledge_alert_request__descriptor);
	assert_non_null(f);
	assert_string_equal(f->name, "request_id");
	/* Where request_id already means the request id of another call, the key is idempotency_key. */
	f = rpc_idem_key_field(&monitoring__v1__report_error_request__descriptor);
	assert_non_null(f);
	assert_string_equal(f->name, "idempotency_key");
	f = rpc_idem_key_field(&monitoring__v1__record_audit_event_request__descriptor);
	assert_non_null(f);
	assert_string_equal(f->name, "idempotency_key");
	assert_null(rpc_idem_key_field(&monitoring__v1__get_alert_request__descriptor));
	assert_null(rpc_idem_key_field(NULL));
}

/* A method that only reads, by its name; every other method changes state. */
static bool is_read(const char *name)
{
	static const char *const prefixes[] = {"Get",    "List",   "Search",  "Query",   "Watch",
	                                       "Export", "Verify", "Preview", "Evaluate"};
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	return false;
}

static void test_common_idem_every_change_has_a_key(void **state)
{
	(void)state;
	size_t changes = 0;
	for (size_t s = 0; s < mon_all_services_count; s++) {
		const struct rpc_service_desc *d = mon_all_services[s];
		if (strncmp(d->name, "monitoring.v1.", 14) != 0)
			continue;
		for (size_t m = 0; m < d->method_count; m++) {
			const struct rpc_method *rm = &d->methods[m];
			const ProtobufCFieldDescriptor *f = rpc_idem_key_field(rm->input);
			if (is_read(rm->name)) {
				/* SearchAuditEvents' request_id is a filter: reads never look for a key. */
				continue;
			}
			if (f == NULL)
				fail_msg("%s/%s changes state and its request has no idempotency key", d->name,
				         rm->name);
			assert_int_equal(rm->kind, RPC_UNARY);
			changes++;
		}
	}
	assert_true(changes >= 57); /* as many as the seven services had when keys were added */
}

static void test_common_idem_check_key(void **state)
{
	(void)state;
	struct mon_error err = {0};
	char key[SVC_IDEM_KEY_MAX_BYTES + 2];
	memset(key, 'k', sizeof(key));
	key[SVC_IDEM_KEY_MAX_BYTES] = '\0';
	assert_int_equal(svc_idem_check_key("request_id", key, &err), 0);
	assert_int_equal(svc_idem_check_key("request_id", "3b241101-e2bb-4255-8caf-4136c566a962", &err), 0);
	key[SVC_IDEM_KEY_MAX_BYTES] = 'k';
	key[SVC_IDEM_KEY_MAX_BYTES + 1] = '\0';
	assert_int_equal(svc_idem_check_key("request_id", key, &err), MON_EINVAL);
	assert_non_null(strstr(err.msg, "request_id: at most 128 bytes"));
	assert_int_equal(svc_idem_check_key("idempotency_key", "bad \xff", &err), MON_EINVAL);
	assert_non_null(strstr(err.msg, "idempotency_key: must be valid UTF-8"));
	assert_int_equal(svc_idem_check_key("request_id", "tab\there", &err), MON_EINVAL);
	assert_non_null(strstr(err.msg, "request_id:"));
}

static void test_common_idem_digest_ignores_only_the_key(void **state)
{
	(void)state;
	struct arena *a = arena_create(4096);
	assert_non_null(a);
	struct mon_error err = {0};
	const ProtobufCFieldDescriptor *f = rpc_idem_key_field(&monitoring__v1__acknowledge_alert_request__descriptor);
	Monitoring__V1__AcknowledgeAlertRequest r1 = MONITORING__V1__ACKNOWLEDGE_ALERT_REQUEST__INIT;
	r1.alert_id = "alt-1";
	r1.note = "on it";
	r1.request_id = "key-1";
	Monitoring__V1__AcknowledgeAlertRequest r2 = r1;
	r2.request_id = "key-2";
	Monitoring__V1__AcknowledgeAlertRequest r3 = r1;
	r3.note = "on it!";
	unsigned char d1[SVC_IDEM_DIGEST_BYTES], d2[SVC_IDEM_DIGEST_BYTES], d3[SVC_IDEM_DIGEST_BYTES];
	assert_int_equal(svc_idem_digest(&r1.base, f, a, d1, &err), 0);
	assert_int_equal(svc_idem_digest(&r2.base, f, a, d2, &err), 0);
	assert_int_equal(svc_idem_digest(&r3.base, f, a, d3, &err), 0);
	assert_memory_equal(d1, d2, sizeof(d1));
	assert_memory_not_equal(d1, d3, sizeof(d1));
	assert_string_equal(r1.request_id, "key-1"); /* the request is not changed */
	assert_string_equal(rpc_idem_key(&r1.base, f), "key-1");
	Monitoring__V1__AcknowledgeAlertRequest empty = MONITORING__V1__ACKNOWLEDGE_ALERT_REQUEST__INIT;
	assert_string_equal(rpc_idem_key(&empty.base, f), "");
	arena_destroy(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_common_utf8_valid_1_to_4_bytes),
	        cmocka_unit_test(test_common_utf8_refuses_overlong),
	        cmocka_unit_test(test_common_utf8_refuses_surrogates),
	        cmocka_unit_test(test_common_utf8_refuses_above_10ffff),
	        cmocka_unit_test(test_common_utf8_refuses_nul_and_stray_bytes),
	        cmocka_unit_test(test_common_utf8_refuses_truncated),
	        cmocka_unit_test(test_common_utf8_controls_by_flag),
	        cmocka_unit_test(test_common_utf8_finds_each_position),
	        cmocka_unit_test(test_common_check_text_messages),
	        cmocka_unit_test(test_common_parse_i64),
	        cmocka_unit_test(test_common_hex_decode),
	        cmocka_unit_test(test_common_times),
	        cmocka_unit_test(test_common_page_size),
	        cmocka_unit_test(test_common_page_token_in_arena),
	        cmocka_unit_test(test_common_struct_json_round_trip),
	        cmocka_unit_test(test_common_idem_key_field),
	        cmocka_unit_test(test_common_idem_every_change_has_a_key),
	        cmocka_unit_test(test_common_idem_check_key),
	        cmocka_unit_test(test_common_idem_digest_ignores_only_the_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
