/*
 * Unit tests of the code generator's naming rules (src/codegen/naming.c).
 *
 * The expected protoc-c names below were checked by hand against what
 * protoc-c 1.4.1 (Debian 12's protobuf-c-compiler) emits for
 * src/codegen/testdata/codegen_test/odd_names.proto and c_package.proto.
 * test_codegen_odd_names checks the same rules mechanically, by compiling
 * generated tables against protoc-c's output for those files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "naming.h"

/* Calls fn(arg), checks the result against want and frees it. */
#define CHECK1(fn, arg, want)                                                                                          \
	do {                                                                                                           \
		char *got_ = fn(arg);                                                                                  \
		assert_non_null(got_);                                                                                 \
		assert_string_equal(got_, (want));                                                                     \
		free(got_);                                                                                            \
	} while (0)

#define CHECK2(fn, a, b, want)                                                                                         \
	do {                                                                                                           \
		char *got_ = fn(a, b);                                                                                 \
		assert_non_null(got_);                                                                                 \
		assert_string_equal(got_, (want));                                                                     \
		free(got_);                                                                                            \
	} while (0)

static void test_codegen_camel_to_lower(void **state)
{
	(void)state;
	CHECK1(naming_camel_to_lower, "GetURL", "get_url");
	CHECK1(naming_camel_to_lower, "HTTPRequest2", "httprequest2");
	CHECK1(naming_camel_to_lower, "ListAlerts", "list_alerts");
	CHECK1(naming_camel_to_lower, "A1b2C3", "a1b2_c3"); /* a digit resets the run of capitals */
	CHECK1(naming_camel_to_lower, "Stream2Things", "stream2_things");
	CHECK1(naming_camel_to_lower, "Foo_Bar", "foo__bar"); /* '_' then a capital: two underscores */
	CHECK1(naming_camel_to_lower, "fooBAR", "foo_bar");
	CHECK1(naming_camel_to_lower, "_Lead", "__lead");
	CHECK1(naming_camel_to_lower, "Trail_", "trail_");
	CHECK1(naming_camel_to_lower, "Deep_Er", "deep__er");
	CHECK1(naming_camel_to_lower, "lower_case_msg", "lower_case_msg");
	CHECK1(naming_camel_to_lower, "HTTPService_v2", "httpservice_v2");
	CHECK1(naming_camel_to_lower, "ABCDef", "abcdef");
	CHECK1(naming_camel_to_lower, "get_thing", "get_thing");
	CHECK1(naming_camel_to_lower, "", "");
}

static void test_codegen_camel_to_upper(void **state)
{
	(void)state;
	CHECK1(naming_camel_to_upper, "GetURL", "GET_URL");
	CHECK1(naming_camel_to_upper, "CodeGeneratorRequest", "CODE_GENERATOR_REQUEST");
	CHECK1(naming_camel_to_upper, "A1b2C3", "A1B2_C3");
}

static void test_codegen_to_camel(void **state)
{
	(void)state;
	CHECK1(naming_to_camel, "foo_bar", "FooBar");
	CHECK1(naming_to_camel, "v1", "V1");
	CHECK1(naming_to_camel, "v1alpha", "V1alpha");
	CHECK1(naming_to_camel, "Deep_Er", "DeepEr");
	CHECK1(naming_to_camel, "_Lead", "Lead");
	CHECK1(naming_to_camel, "Trail_", "Trail");
	CHECK1(naming_to_camel, "fooBAR", "FooBAR");
	CHECK1(naming_to_camel, "lower_case_msg", "LowerCaseMsg");
	CHECK1(naming_to_camel, "a__b", "AB");
}

static void test_codegen_full_names(void **state)
{
	(void)state;
	/* Struct names (FullNameToC). */
	CHECK1(naming_full_name_to_c, "foo_bar.v1.HTTPRequest2", "FooBar__V1__HTTPRequest2");
	CHECK1(naming_full_name_to_c, "foo_bar.v1.Outer.Inner", "FooBar__V1__Outer__Inner");
	CHECK1(naming_full_name_to_c, "foo_bar.v1.Outer.Inner.Deep_Er", "FooBar__V1__Outer__Inner__DeepEr");
	CHECK1(naming_full_name_to_c, "foo_bar.v1.Foo_Bar", "FooBar__V1__FooBar");
	CHECK1(naming_full_name_to_c, "foo_bar.v1.fooBAR", "FooBar__V1__FooBAR");
	CHECK1(naming_full_name_to_c, "foo_bar.v1._Lead", "FooBar__V1__Lead");
	CHECK1(naming_full_name_to_c, "grpc.health.v1.HealthCheckRequest", "Grpc__Health__V1__HealthCheckRequest");
	CHECK1(naming_full_name_to_c, ".leading..dots.", "Leading__Dots"); /* empty pieces are skipped */

	/* Symbol stems (FullNameToLower) and macro stems (FullNameToUpper). */
	CHECK1(naming_full_name_to_lower, "foo_bar.v1.HTTPRequest2", "foo_bar__v1__httprequest2");
	CHECK1(naming_full_name_to_lower, "foo_bar.v1.Outer.Inner.Deep_Er", "foo_bar__v1__outer__inner__deep__er");
	CHECK1(naming_full_name_to_lower, "foo_bar.v1.Foo_Bar", "foo_bar__v1__foo__bar");
	CHECK1(naming_full_name_to_lower, "foo_bar.v1.fooBAR", "foo_bar__v1__foo_bar");
	CHECK1(naming_full_name_to_lower, "foo_bar.v1._Lead", "foo_bar__v1____lead");
	CHECK1(naming_full_name_to_lower, "foo_bar.v1.Trail_", "foo_bar__v1__trail_");
	CHECK1(naming_full_name_to_upper, "google.protobuf.compiler.CodeGeneratorRequest",
	       "GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_REQUEST");

	CHECK1(naming_message_descriptor, "foo_bar.v1.HTTPRequest2", "foo_bar__v1__httprequest2__descriptor");
	CHECK1(naming_message_descriptor, "foo_bar.v1.A1b2C3", "foo_bar__v1__a1b2_c3__descriptor");
	CHECK1(naming_message_descriptor, "google.protobuf.Timestamp", "google__protobuf__timestamp__descriptor");
}

static void test_codegen_c_package(void **state)
{
	char *s;

	(void)state;
	/* No c_package: the name itself, without a leading dot. */
	s = naming_c_full_name(".a.b.M.N", "a.b", NULL);
	assert_string_equal(s, "a.b.M.N");
	free(s);
	/* c_package replaces the package: protoc-c names a.b.M.N Zz__Yy__M__N. */
	s = naming_c_full_name(".a.b.M.N", "a.b", "zz.yy");
	assert_string_equal(s, "zz.yy.M.N");
	char *c = naming_full_name_to_c(s);
	assert_string_equal(c, "Zz__Yy__M__N");
	free(c);
	c = naming_message_descriptor(s);
	assert_string_equal(c, "zz__yy__m__n__descriptor");
	free(c);
	free(s);
	/* A package that only prefixes the name's first piece is not stripped. */
	s = naming_c_full_name("a.bc.M", "a.b", "zz");
	assert_string_equal(s, "zz.a.bc.M");
	free(s);
}

static void test_codegen_file_names(void **state)
{
	(void)state;
	CHECK1(naming_strip_proto, "monitoring/v1/alerts.proto", "monitoring/v1/alerts");
	CHECK1(naming_strip_proto, "old/thing.protodevel", "old/thing");
	CHECK1(naming_strip_proto, "no_suffix", "no_suffix");
	CHECK1(naming_strip_proto, "x.proto.proto", "x.proto");
	CHECK1(naming_include_guard, "grpc/health/v1/health.mon-server.h",
	       "MON_GEN_GRPC_HEALTH_V1_HEALTH_MON_SERVER_H");
	CHECK1(naming_include_guard, "mon_services.h", "MON_GEN_MON_SERVICES_H");
}

static void test_codegen_prefixes(void **state)
{
	(void)state;
	CHECK2(naming_server_prefix, "monitoring.v1", "AlertsService", "monitoring_v1_alerts_service");
	CHECK2(naming_server_prefix, "grpc.health.v1", "Health", "grpc_health_v1_health");
	CHECK2(naming_server_prefix, "grpc.reflection.v1alpha", "ServerReflection",
	       "grpc_reflection_v1alpha_server_reflection");
	CHECK2(naming_server_prefix, "foo_bar.v1", "HTTPService_v2", "foo_bar_v1_httpservice_v2");
	CHECK2(naming_server_prefix, "", "Health", "health");
	CHECK2(naming_server_prefix, NULL, "Health", "health");

	CHECK1(naming_client_prefix, "AlertsService", "mon_alerts_service");
	CHECK1(naming_client_prefix, "Health", "mon_health");
	CHECK1(naming_client_prefix, "HTTPService_v2", "mon_httpservice_v2");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_codegen_camel_to_lower), cmocka_unit_test(test_codegen_camel_to_upper),
	        cmocka_unit_test(test_codegen_to_camel),       cmocka_unit_test(test_codegen_full_names),
	        cmocka_unit_test(test_codegen_c_package),      cmocka_unit_test(test_codegen_file_names),
	        cmocka_unit_test(test_codegen_prefixes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
