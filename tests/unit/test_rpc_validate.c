/*
 * The request string check of the RPC runtime (src/rpc/validate.c): each
 * kind of bad text refused wherever the string sits, with the field path
 * the API speaks, and what it must let through (clean text, bytes fields,
 * input the decoder refuses on its own).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "monitoring/v1/health.pb-c.h"
#include "monitoring/v1/metrics.pb-c.h"
#include "rpc/validate.h"
#include "util/utf8.h"

/* The placeholder each test puts where the bad bytes go; packed, it is replaced in place. */
#define MARK "@@@@"

struct packed {
	uint8_t buf[65536];
	size_t len;
};

/* Packs msg, then swaps the first MARK for bad (of the same length, 4 bytes). */
static void pack_with(const ProtobufCMessage *msg, const char *bad, struct packed *out)
{
	out->len = protobuf_c_message_pack(msg, out->buf);
	assert_true(out->len < sizeof(out->buf));
	if (bad == NULL)
		return;
	for (size_t i = 0; i + 4 <= out->len; i++) {
		if (memcmp(out->buf + i, MARK, 4) == 0) {
			memcpy(out->buf + i, bad, 4);
			return;
		}
	}
	fail_msg("placeholder not found");
}

static int check(const ProtobufCMessageDescriptor *d, const struct packed *p, struct mon_error *err)
{
	mon_error_clear(err);
	return rpc_validate_request(d, p->buf, p->len, err);
}

/* Four kinds of bad text, each 4 bytes: invalid byte, overlong '/', a surrogate, a NUL. */
static const char *const bad_texts[] = {"a\xff"
                                        "bc",
                                        "a\xc0\xaf"
                                        "b",
                                        "\xed\xa0\x80z", "ab\0c"};
static const size_t bad_at[] = {1, 1, 0, 2};

static void test_rpc_validate_nested_repeated_and_map(void **state)
{
	(void)state;
	Monitoring__V1__MetricPoint pts[4];
	Monitoring__V1__MetricPoint *pp[4];
	Monitoring__V1__MetricPoint__TagsEntry tag;
	Monitoring__V1__MetricPoint__TagsEntry *tags[1] = {&tag};
	for (int i = 0; i < 4; i++) {
		monitoring__v1__metric_point__init(&pts[i]);
		pts[i].metric_name = "api.latency";
		pts[i].endpoint = "/v1/x";
		pp[i] = &pts[i];
	}
	monitoring__v1__metric_point__tags_entry__init(&tag);
	Monitoring__V1__RecordMetricsRequest req = MONITORING__V1__RECORD_METRICS_REQUEST__INIT;
	req.n_points = 4;
	req.points = pp;
	struct packed p;
	struct mon_error err;

	pack_with(&req.base, NULL, &p);
	assert_int_equal(check(req.base.descriptor, &p, &err), 0);

	pts[3].endpoint = MARK;
	for (size_t k = 0; k < 4; k++) {
		pack_with(&req.base, bad_texts[k], &p);
		assert_int_equal(check(req.base.descriptor, &p, &err), MON_EINVAL);
		char want[128];
		snprintf(want, sizeof(want), "points[3].endpoint: %s (byte %zu)",
		         k == 3 ? "must not contain NUL" : "must be valid UTF-8", bad_at[k]);
		assert_string_equal(err.msg, want);
		assert_int_equal(err.code, MON_EINVAL);
	}
	pts[3].endpoint = "/v1/x";

	pts[1].n_tags = 1;
	pts[1].tags = tags;
	tag.key = "env";
	tag.value = MARK;
	pack_with(&req.base, bad_texts[0], &p);
	assert_int_equal(check(req.base.descriptor, &p, &err), MON_EINVAL);
	assert_string_equal(err.msg, "points[1].tags[\"env\"]: must be valid UTF-8 (byte 1)");

	tag.key = MARK;
	tag.value = "prod";
	pack_with(&req.base, bad_texts[0], &p);
	assert_int_equal(check(req.base.descriptor, &p, &err), MON_EINVAL);
	assert_string_equal(err.msg, "points[1].tags[\"a\\xffbc\"]: key must be valid UTF-8 (byte 1)");
}

/* Struct, Value and ListValue are spoken of as JSON: by key and position. */
static void test_rpc_validate_struct_paths(void **state)
{
	(void)state;
	Google__Protobuf__Value leaf = GOOGLE__PROTOBUF__VALUE__INIT;
	leaf.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	leaf.string_value = MARK;
	Google__Protobuf__Struct__FieldsEntry inner_e = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	inner_e.key = "b";
	inner_e.value = &leaf;
	Google__Protobuf__Struct__FieldsEntry *inner_es[1] = {&inner_e};
	Google__Protobuf__Struct inner = GOOGLE__PROTOBUF__STRUCT__INIT;
	inner.n_fields = 1;
	inner.fields = inner_es;
	Google__Protobuf__Value v0 = GOOGLE__PROTOBUF__VALUE__INIT, v1 = GOOGLE__PROTOBUF__VALUE__INIT;
	v0.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	v0.string_value = "fine";
	v1.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
	v1.struct_value = &inner;
	Google__Protobuf__Value *items[2] = {&v0, &v1};
	Google__Protobuf__ListValue list = GOOGLE__PROTOBUF__LIST_VALUE__INIT;
	list.n_values = 2;
	list.values = items;
	Google__Protobuf__Value lv = GOOGLE__PROTOBUF__VALUE__INIT;
	lv.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
	lv.list_value = &list;
	Google__Protobuf__Struct__FieldsEntry outer_e = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	outer_e.key = "owners";
	outer_e.value = &lv;
	Google__Protobuf__Struct__FieldsEntry *outer_es[1] = {&outer_e};
	Google__Protobuf__Struct metrics = GOOGLE__PROTOBUF__STRUCT__INIT;
	metrics.n_fields = 1;
	metrics.fields = outer_es;
	Monitoring__V1__ReportHealthCheckRequest req = MONITORING__V1__REPORT_HEALTH_CHECK_REQUEST__INIT;
	req.service_metrics = &metrics;

	struct packed p;
	struct mon_error err;
	pack_with(&req.base, bad_texts[2], &p);
	assert_int_equal(check(req.base.descriptor, &p, &err), MON_EINVAL);
	assert_string_equal(err.msg, "service_metrics[\"owners\"][1][\"b\"]: must be valid UTF-8 (byte 0)");
}

/* A StringValue is its field; a BytesValue holds bytes, which are not text. */
static void test_rpc_validate_wrappers_and_bytes(void **state)
{
	(void)state;
	Google__Protobuf__StringValue sv = GOOGLE__PROTOBUF__STRING_VALUE__INIT;
	sv.value = MARK;
	struct packed p;
	struct mon_error err;
	pack_with(&sv.base, bad_texts[3], &p);
	assert_int_equal(check(sv.base.descriptor, &p, &err), MON_EINVAL);
	assert_string_equal(err.msg, "value: must not contain NUL (byte 2)");

	Google__Protobuf__BytesValue bv = GOOGLE__PROTOBUF__BYTES_VALUE__INIT;
	bv.value.data = (uint8_t *)"\xff\x00\xc0\xaf";
	bv.value.len = 4;
	pack_with(&bv.base, NULL, &p);
	assert_int_equal(check(bv.base.descriptor, &p, &err), 0);
}

/* Nesting past the bound is refused by name, before the decoder recurses into it. */
static void test_rpc_validate_depth_bound(void **state)
{
	(void)state;
	/* Value{list_value{values: Value{list_value{...}}}}: two messages a level. */
	enum { LEVELS = RPC_VALIDATE_MAX_DEPTH };
	Google__Protobuf__Value *vals = calloc(LEVELS, sizeof(*vals));
	Google__Protobuf__ListValue *lists = calloc(LEVELS, sizeof(*lists));
	Google__Protobuf__Value **ptrs = calloc(LEVELS, sizeof(*ptrs));
	assert_non_null(vals);
	assert_non_null(lists);
	assert_non_null(ptrs);
	for (int i = 0; i < LEVELS; i++) {
		google__protobuf__value__init(&vals[i]);
		google__protobuf__list_value__init(&lists[i]);
		vals[i].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
		vals[i].list_value = &lists[i];
		if (i + 1 < LEVELS) {
			ptrs[i] = &vals[i + 1];
			lists[i].n_values = 1;
			lists[i].values = &ptrs[i];
		}
	}
	struct packed p;
	struct mon_error err;
	pack_with(&vals[0].base, NULL, &p);
	assert_int_equal(check(vals[0].base.descriptor, &p, &err), MON_EINVAL);
	assert_non_null(strstr(err.msg, "messages nested deeper than 100 levels"));

	/* Half as deep is fine. */
	lists[LEVELS / 2 - 1].n_values = 0;
	pack_with(&vals[0].base, NULL, &p);
	assert_int_equal(check(vals[0].base.descriptor, &p, &err), 0);
	free(vals);
	free(lists);
	free(ptrs);
}

/* A path longer than the message keeps the problem, and no character is cut in two. */
static void test_rpc_validate_long_path(void **state)
{
	(void)state;
	enum { LEVELS = 20 };
	static Google__Protobuf__Struct structs[LEVELS];
	static Google__Protobuf__Struct__FieldsEntry entries[LEVELS];
	static Google__Protobuf__Struct__FieldsEntry *entry_ptrs[LEVELS];
	static Google__Protobuf__Value values[LEVELS];
	/* 15 characters, 30 bytes: a cut at any byte but an even one would split a character. */
	static char key[] =
	        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	        "\xc3\xa9\xc3\xa9";
	for (int i = 0; i < LEVELS; i++) {
		google__protobuf__struct__init(&structs[i]);
		google__protobuf__struct__fields_entry__init(&entries[i]);
		google__protobuf__value__init(&values[i]);
		entries[i].key = key;
		entries[i].value = &values[i];
		entry_ptrs[i] = &entries[i];
		structs[i].n_fields = 1;
		structs[i].fields = &entry_ptrs[i];
		if (i + 1 < LEVELS) {
			values[i].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
			values[i].struct_value = &structs[i + 1];
		} else {
			values[i].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
			values[i].string_value = MARK;
		}
	}
	Monitoring__V1__ReportHealthCheckRequest req = MONITORING__V1__REPORT_HEALTH_CHECK_REQUEST__INIT;
	req.service_metrics = &structs[0];
	struct packed p;
	struct mon_error err;
	pack_with(&req.base, bad_texts[1], &p);
	assert_int_equal(check(req.base.descriptor, &p, &err), MON_EINVAL);
	size_t n = strlen(err.msg);
	const char *tail = "...: must be valid UTF-8 (byte 1)";
	assert_true(n > strlen(tail));
	assert_string_equal(err.msg + n - strlen(tail), tail);
	assert_int_equal(strncmp(err.msg, "service_metrics[\"", 17), 0);
	assert_int_equal(utf8_scan(err.msg, n, 0, NULL, NULL), UTF8_OK);
}

/* Malformed input is the decoder's to refuse; the walk stops without reading past it. */
static void test_rpc_validate_leaves_malformed_to_decoder(void **state)
{
	(void)state;
	struct mon_error err;
	/* points: a length past the end; then a truncated varint. */
	static const uint8_t cut[] = {0x0a, 0x7f, 0x12, 0x03};
	assert_int_equal(
	        rpc_validate_request(&monitoring__v1__record_metrics_request__descriptor, cut, sizeof(cut), &err), 0);
	static const uint8_t varint[] = {0x10, 0xff};
	assert_int_equal(
	        rpc_validate_request(&monitoring__v1__record_metrics_request__descriptor, varint, sizeof(varint), &err),
	        0);
	assert_int_equal(rpc_validate_request(&monitoring__v1__record_metrics_request__descriptor, NULL, 0, &err), 0);
	/* An unknown field holding bad bytes is not looked at (the decoder ignores it too). */
	static const uint8_t unknown[] = {0xfa, 0x07, 0x01, 0xff};
	assert_int_equal(rpc_validate_request(&monitoring__v1__record_metrics_request__descriptor, unknown,
	                                      sizeof(unknown), &err),
	                 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rpc_validate_nested_repeated_and_map),
	        cmocka_unit_test(test_rpc_validate_struct_paths),
	        cmocka_unit_test(test_rpc_validate_wrappers_and_bytes),
	        cmocka_unit_test(test_rpc_validate_depth_bound),
	        cmocka_unit_test(test_rpc_validate_long_path),
	        cmocka_unit_test(test_rpc_validate_leaves_malformed_to_decoder),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
