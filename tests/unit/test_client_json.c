/*
 * Tests of monctl's JSON <-> protobuf transcoder (clients/cli/json.c):
 * round trips through the wire format, field names, enums, 64-bit integers,
 * bytes, maps, oneofs, every well-known type, and errors that name the
 * field. Uses test_client_json.proto and grpc.health.v1 from the API build.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "grpc/health/v1/health.pb-c.h"
#include "json.h"
#include "test_client_json.pb-c.h"

typedef Monctl__Test__Everything Everything;

/* Parses text into a message of type desc; fails the test on error. */
static ProtobufCMessage *from_text(const char *text, const ProtobufCMessageDescriptor *desc)
{
	json_error_t jerr;
	json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);
	assert_non_null(j);
	ProtobufCMessage *m = NULL;
	struct mon_error err = {.code = 0};
	int rc = json_to_message(j, desc, &m, &err);
	json_decref(j);
	if (rc != MON_OK)
		fail_msg("json_to_message: %s", err.msg);
	return m;
}

/* The error json_to_message gives for text. */
static const char *error_of(const char *text, const ProtobufCMessageDescriptor *desc)
{
	static struct mon_error err;
	json_error_t jerr;
	json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);
	assert_non_null(j);
	ProtobufCMessage *m = NULL;
	err.code = 0;
	err.msg[0] = '\0';
	int rc = json_to_message(j, desc, &m, &err);
	json_decref(j);
	assert_int_equal(rc, MON_EINVAL);
	assert_null(m);
	return err.msg;
}

/* Packs m, unpacks it again and prints it: the JSON a server's reply would give. */
static char *wire_round_trip(const ProtobufCMessage *m, unsigned flags)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(len + 1);
	assert_non_null(buf);
	assert_int_equal(protobuf_c_message_pack(m, buf), len);
	ProtobufCMessage *back = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
	free(buf);
	assert_non_null(back);
	json_t *j = NULL;
	struct mon_error err = {.code = 0};
	if (json_from_message(back, flags, &j, &err) != MON_OK)
		fail_msg("json_from_message: %s", err.msg);
	protobuf_c_message_free_unpacked(back, NULL);
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_DUMP_NUMBERS);
	json_decref(j);
	return s;
}

static void assert_round_trip(const char *in, const char *expect)
{
	ProtobufCMessage *m = from_text(in, &monctl__test__everything__descriptor);
	char *out = wire_round_trip(m, 0);
	protobuf_c_message_free_unpacked(m, NULL);
	if (strcmp(out, expect) != 0)
		fail_msg("round trip of %s\n  gave %s\n  want %s", in, out, expect);
	free(out);
}

static void test_client_json_scalars(void **state)
{
	(void)state;
	const char *in =
	        "{\"i32\":-5,\"i64\":\"-9007199254740993\",\"u32\":4294967295,\"u64\":\"18446744073709551615\","
	        "\"s32\":-7,\"f64\":12,\"flt\":0.1,\"dbl\":2.5,\"flag\":true,\"text\":\"h\\u00e9\",\"blob\":\"AAEC/"
	        "w==\","
	        "\"color\":\"COLOR_GREEN\"}";
	assert_round_trip(
	        in, "{\"i32\":-5,\"i64\":\"-9007199254740993\",\"u32\":4294967295,\"u64\":\"18446744073709551615\","
	            "\"s32\":-7,\"f64\":\"12\",\"flt\":0.1,\"dbl\":2.5,\"flag\":true,\"text\":\"h\xc3\xa9\","
	            "\"blob\":\"AAEC/w==\",\"color\":\"COLOR_GREEN\"}");
	Everything *e = (Everything *)from_text(in, &monctl__test__everything__descriptor);
	assert_int_equal(e->i64, INT64_C(-9007199254740993));
	assert_true(e->u64 == UINT64_MAX);
	assert_int_equal(e->blob.len, 4);
	assert_int_equal(e->blob.data[3], 0xff);
	protobuf_c_message_free_unpacked(&e->base, NULL);

	/* Numbers as strings, enums by number, URL-safe base64 without padding, special floats. */
	assert_round_trip(
	        "{\"i32\":\"12\",\"i64\":7,\"color\":1,\"blob\":\"AAEC_w\",\"dbl\":\"NaN\",\"flt\":\"-Infinity\"}",
	        "{\"i32\":12,\"i64\":\"7\",\"flt\":\"-Infinity\",\"dbl\":\"NaN\",\"blob\":\"AAEC/w==\","
	        "\"color\":\"COLOR_RED\"}");
	/* An enum number the descriptor does not know stays a number. */
	assert_round_trip("{\"color\":7}", "{\"color\":7}");
	/* Defaults are omitted; null means the default. */
	assert_round_trip("{\"i32\":0,\"text\":\"\",\"flag\":false,\"inner\":null,\"numbers\":[]}", "{}");
}

static void test_client_json_names(void **state)
{
	(void)state;
	assert_round_trip("{\"snake_case_name\":\"a\"}", "{\"snakeCaseName\":\"a\"}");
	assert_round_trip("{\"snakeCaseName\":\"b\"}", "{\"snakeCaseName\":\"b\"}");
	assert_string_equal(
	        error_of("{\"snakeCaseName\":\"a\",\"snake_case_name\":\"b\"}", &monctl__test__everything__descriptor),
	        "snake_case_name: given twice (as \"snake_case_name\" and its other name)");
	char buf[64];
	json_field_name("page_size", buf, sizeof(buf));
	assert_string_equal(buf, "pageSize");
	json_field_name("a_b_c1_d", buf, sizeof(buf));
	assert_string_equal(buf, "aBC1D");
}

static void test_client_json_composites(void **state)
{
	(void)state;
	assert_round_trip("{\"inner\":{\"name\":\"x\",\"count\":2},\"numbers\":[1,2,3],\"words\":[\"a\",\"b\"],"
	                  "\"inners\":[{\"name\":\"p\"},{}],\"colors\":[\"COLOR_RED\",2]}",
	                  "{\"inner\":{\"name\":\"x\",\"count\":2},\"numbers\":[1,2,3],\"words\":[\"a\",\"b\"],"
	                  "\"inners\":[{\"name\":\"p\"},{}],\"colors\":[\"COLOR_RED\",\"COLOR_GREEN\"]}");
	assert_round_trip("{\"counters\":{\"a\":1,\"b\":\"-2\"},\"byId\":{\"7\":{\"name\":\"seven\"},\"-1\":{}}}",
	                  "{\"counters\":{\"a\":\"1\",\"b\":\"-2\"},\"byId\":{\"7\":{\"name\":\"seven\"},\"-1\":{}}}");
	/* Oneofs: the set member is printed even when it holds its default. */
	assert_round_trip("{\"choiceNumber\":\"0\"}", "{\"choiceNumber\":\"0\"}");
	assert_round_trip("{\"choiceInner\":{\"count\":1}}", "{\"choiceInner\":{\"count\":1}}");
	assert_round_trip("{\"choiceText\":\"t\",\"choiceInner\":null}", "{\"choiceText\":\"t\"}");
}

static void test_client_json_timestamp(void **state)
{
	(void)state;
	Everything *e = (Everything *)from_text("{\"at\":\"2024-05-01T12:30:00.5+02:00\"}",
	                                        &monctl__test__everything__descriptor);
	assert_non_null(e->at);
	assert_int_equal(e->at->seconds, 1714559400);
	assert_int_equal(e->at->nanos, 500000000);
	protobuf_c_message_free_unpacked(&e->base, NULL);

	assert_round_trip("{\"at\":\"2024-05-01T12:30:00.5+02:00\"}", "{\"at\":\"2024-05-01T10:30:00.500Z\"}");
	assert_round_trip("{\"at\":\"1970-01-01T00:00:00Z\"}", "{\"at\":\"1970-01-01T00:00:00Z\"}");
	assert_round_trip("{\"at\":\"1969-12-31T23:59:59.000001Z\"}", "{\"at\":\"1969-12-31T23:59:59.000001Z\"}");
	assert_round_trip("{\"at\":\"0001-01-01T00:00:00Z\"}", "{\"at\":\"0001-01-01T00:00:00Z\"}");
	assert_round_trip("{\"at\":\"9999-12-31T23:59:59.999999999Z\"}", "{\"at\":\"9999-12-31T23:59:59.999999999Z\"}");
	assert_round_trip("{\"times\":[\"2000-02-29T00:00:00Z\"]}", "{\"times\":[\"2000-02-29T00:00:00Z\"]}");
	assert_string_equal(error_of("{\"at\":\"2023-02-29T00:00:00Z\"}", &monctl__test__everything__descriptor),
	                    "at: expected an RFC 3339 time such as \"2024-05-01T12:30:00Z\"");
	assert_string_equal(error_of("{\"at\":\"2024-05-01 12:30:00\"}", &monctl__test__everything__descriptor),
	                    "at: expected an RFC 3339 time such as \"2024-05-01T12:30:00Z\"");
	assert_string_equal(error_of("{\"times\":[\"2024-05-01T00:00:00Z\",5]}", &monctl__test__everything__descriptor),
	                    "times[1]: expected an RFC 3339 time such as \"2024-05-01T12:30:00Z\"");
}

static void test_client_json_duration(void **state)
{
	(void)state;
	Everything *e = (Everything *)from_text("{\"took\":\"-1.25s\"}", &monctl__test__everything__descriptor);
	assert_int_equal(e->took->seconds, -1);
	assert_int_equal(e->took->nanos, -250000000);
	protobuf_c_message_free_unpacked(&e->base, NULL);
	assert_round_trip("{\"took\":\"1.5s\"}", "{\"took\":\"1.500s\"}");
	assert_round_trip("{\"took\":\"-0.000000001s\"}", "{\"took\":\"-0.000000001s\"}");
	assert_round_trip("{\"took\":\"3s\"}", "{\"took\":\"3s\"}");
	assert_string_equal(error_of("{\"took\":\"90m\"}", &monctl__test__everything__descriptor),
	                    "took: expected a duration in seconds such as \"1.5s\"");
}

static void test_client_json_field_mask(void **state)
{
	(void)state;
	Everything *e = (Everything *)from_text("{\"updateMask\":\"displayName,labels.teamName,x\"}",
	                                        &monctl__test__everything__descriptor);
	assert_int_equal(e->update_mask->n_paths, 3);
	assert_string_equal(e->update_mask->paths[0], "display_name");
	assert_string_equal(e->update_mask->paths[1], "labels.team_name");
	assert_string_equal(e->update_mask->paths[2], "x");
	protobuf_c_message_free_unpacked(&e->base, NULL);
	assert_round_trip("{\"update_mask\":\"displayName,labels.teamName\"}",
	                  "{\"updateMask\":\"displayName,labels.teamName\"}");
	assert_string_equal(error_of("{\"updateMask\":\"a,,b\"}", &monctl__test__everything__descriptor),
	                    "updateMask: invalid field mask path \"\"");

	/* A mask the JSON form cannot carry is not printed as another one (found by fuzzing). */
	static const char *const unprintable[] = {"", "a,b", "Ab", "_Ab"};
	for (size_t i = 0; i < sizeof(unprintable) / sizeof(unprintable[0]); i++) {
		Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
		char *paths[2] = {"name", (char *)unprintable[i]};
		mask.n_paths = 2;
		mask.paths = paths;
		Everything msg = MONCTL__TEST__EVERYTHING__INIT;
		msg.update_mask = &mask;
		json_t *j = NULL;
		struct mon_error err = {0};
		assert_int_equal(json_from_message(&msg.base, 0, &j, &err), MON_EINVAL);
		assert_null(j);
		assert_non_null(strstr(err.msg, "cannot be written in JSON"));
	}
	/* A path whose camelCase would read back as another is written as in the .proto. */
	Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
	char *paths[3] = {"display_name", "uptime_24h", "x_"};
	mask.n_paths = 3;
	mask.paths = paths;
	Everything msg = MONCTL__TEST__EVERYTHING__INIT;
	msg.update_mask = &mask;
	json_t *j = NULL;
	struct mon_error err = {0};
	assert_int_equal(json_from_message(&msg.base, 0, &j, &err), MON_OK);
	assert_string_equal(json_string_value(json_object_get(j, "updateMask")), "displayName,uptime_24h,x_");
	ProtobufCMessage *back = NULL;
	assert_int_equal(json_to_message(j, &monctl__test__everything__descriptor, &back, &err), MON_OK);
	const Everything *b = (const Everything *)back;
	assert_int_equal(b->update_mask->n_paths, 3);
	for (size_t i = 0; i < 3; i++)
		assert_string_equal(b->update_mask->paths[i], paths[i]);
	protobuf_c_message_free_unpacked(back, NULL);
	json_decref(j);
}

static void test_client_json_wrappers(void **state)
{
	(void)state;
	assert_round_trip(
	        "{\"maybeI64\":\"5\",\"maybeText\":\"\",\"maybeFlag\":false,\"maybeBlob\":\"AA==\",\"maybeDbl\":0}",
	        "{\"maybeI64\":\"5\",\"maybeText\":\"\",\"maybeFlag\":false,\"maybeBlob\":\"AA==\",\"maybeDbl\":0}");
	Everything *e = (Everything *)from_text("{\"maybeFlag\":false}", &monctl__test__everything__descriptor);
	assert_non_null(e->maybe_flag);
	assert_false(e->maybe_flag->value);
	assert_null(e->maybe_text);
	protobuf_c_message_free_unpacked(&e->base, NULL);
	assert_string_equal(error_of("{\"maybeI64\":{\"value\":1}}", &monctl__test__everything__descriptor),
	                    "maybeI64: expected an integer, got an object");
}

static void test_client_json_struct_value_list(void **state)
{
	(void)state;
	assert_round_trip("{\"details\":{\"a\":1,\"b\":[true,null,\"s\",{\"c\":{}}],\"d\":null,\"e\":2.5}}",
	                  "{\"details\":{\"a\":1,\"b\":[true,null,\"s\",{\"c\":{}}],\"d\":null,\"e\":2.5}}");
	assert_round_trip("{\"anything\":null}", "{\"anything\":null}");
	assert_round_trip("{\"anything\":[1,\"x\"]}", "{\"anything\":[1,\"x\"]}");
	assert_round_trip("{\"anything\":{\"k\":false}}", "{\"anything\":{\"k\":false}}");
	assert_round_trip("{\"list\":[{},[],\"z\"]}", "{\"list\":[{},[],\"z\"]}");
	assert_round_trip("{\"nothing\":{}}", "{\"nothing\":{}}");
	assert_string_equal(error_of("{\"details\":[1]}", &monctl__test__everything__descriptor),
	                    "details: expected an object, got an array");
	assert_string_equal(error_of("{\"nothing\":{\"x\":1}}", &monctl__test__everything__descriptor),
	                    "nothing: unknown field \"x\" in google.protobuf.Empty");
}

static void test_client_json_errors_name_the_field(void **state)
{
	(void)state;
	const ProtobufCMessageDescriptor *d = &monctl__test__everything__descriptor;
	assert_string_equal(error_of("{\"bogus\":1}", d), "unknown field \"bogus\" in monctl.test.Everything");
	assert_string_equal(error_of("{\"inner\":{\"nope\":1}}", d),
	                    "inner: unknown field \"nope\" in monctl.test.Inner");
	assert_string_equal(error_of("{\"inners\":[{},{\"count\":\"x\"}]}", d),
	                    "inners[1].count: expected an integer, got \"x\"");
	assert_string_equal(error_of("{\"color\":\"BLUE\"}", d), "color: unknown monctl.test.Color value \"BLUE\"");
	assert_string_equal(error_of("{\"i32\":3000000000}", d), "i32: 3000000000 is out of range");
	assert_string_equal(error_of("{\"u32\":-1}", d), "u32: -1 is out of range");
	assert_string_equal(error_of("{\"i32\":1.5}", d), "i32: expected an integer, got 1.5");
	assert_string_equal(error_of("{\"flag\":\"yes\"}", d), "flag: expected true or false, got a string");
	assert_string_equal(error_of("{\"blob\":\"***\"}", d), "blob: invalid base64");
	assert_string_equal(error_of("{\"numbers\":{}}", d), "numbers: expected an array, got an object");
	assert_string_equal(error_of("{\"words\":[\"a\",null]}", d), "words[1]: null is not allowed in a list");
	assert_string_equal(error_of("{\"counters\":{\"a\":\"x\"}}", d),
	                    "counters[\"a\"]: expected an integer, got \"x\"");
	assert_string_equal(error_of("{\"byId\":{\"seven\":{}}}", d),
	                    "byId[\"seven\"]: expected an integer, got \"seven\"");
	assert_string_equal(error_of("{\"choiceText\":\"a\",\"choiceNumber\":1}", d),
	                    "choiceNumber: only one of a oneof may be set; \"choice_text\" is set already");
	assert_string_equal(error_of("[1]", d), "expected an object (monctl.test.Everything), got an array");
}

static void test_client_json_health_messages(void **state)
{
	(void)state;
	ProtobufCMessage *m = from_text("{\"service\":\"db\"}", &grpc__health__v1__health_check_request__descriptor);
	assert_string_equal(((Grpc__Health__V1__HealthCheckRequest *)m)->service, "db");
	protobuf_c_message_free_unpacked(m, NULL);

	Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	r.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
	char *s = wire_round_trip(&r.base, 0);
	assert_string_equal(s, "{\"status\":\"NOT_SERVING\"}");
	free(s);
	r.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__UNKNOWN;
	s = wire_round_trip(&r.base, 0);
	assert_string_equal(s, "{}");
	free(s);
	s = wire_round_trip(&r.base, JSON_PRINT_DEFAULTS);
	assert_string_equal(s, "{\"status\":\"UNKNOWN\"}");
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_client_json_scalars),
	        cmocka_unit_test(test_client_json_names),
	        cmocka_unit_test(test_client_json_composites),
	        cmocka_unit_test(test_client_json_timestamp),
	        cmocka_unit_test(test_client_json_duration),
	        cmocka_unit_test(test_client_json_field_mask),
	        cmocka_unit_test(test_client_json_wrappers),
	        cmocka_unit_test(test_client_json_struct_value_list),
	        cmocka_unit_test(test_client_json_errors_name_the_field),
	        cmocka_unit_test(test_client_json_health_messages),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
