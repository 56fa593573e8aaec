/*
 * Tests of libmonitoring's public API (<monitoring/monitoring.h>), linked
 * against the shared library as an application would be, and run against a
 * python3-grpcio health server: option checks, the api key and request id
 * metadata, unary calls, streams with wait timeouts, and the environment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <monitoring/monitoring.h>

#include "grpc/health/v1/health.pb-c.h"
#include "test_client_server.h"

#define CHECK_PATH "/grpc.health.v1.Health/Check"
#define WATCH_PATH "/grpc.health.v1.Health/Watch"

static struct test_server g_server;

static int group_setup(void **state)
{
	(void)state;
	return test_server_start(&g_server);
}

static int group_teardown(void **state)
{
	(void)state;
	test_server_stop(&g_server);
	return 0;
}

static mon_client *open_client(const char *api_key)
{
	mon_client_options opts = {.target = g_server.target, .api_key = api_key};
	mon_client *c = NULL;
	mon_status st;
	assert_int_equal(mon_client_open(&opts, &c, &st), 0);
	assert_non_null(c);
	return c;
}

static int check(mon_client *c, const char *service, const mon_call_options *opts,
                 Grpc__Health__V1__HealthCheckResponse **resp, mon_status *st)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)service;
	ProtobufCMessage *m = NULL;
	int rc = mon_call_unary(c, CHECK_PATH, &req.base, &grpc__health__v1__health_check_response__descriptor, &m,
	                        opts, st);
	*resp = (Grpc__Health__V1__HealthCheckResponse *)m;
	return rc;
}

static void test_client_lib_open_errors(void **state)
{
	(void)state;
	mon_client *c = NULL;
	mon_status st;
	mon_client_options none = {.target = NULL};
	assert_true(mon_client_open(&none, &c, &st) < 0);
	assert_int_equal(st.code, 3);
	assert_string_equal(st.message, "target: required");

	mon_client_options missing = {.target = "127.0.0.1:1", .tls_ca_file = "/nonexistent/ca.pem"};
	assert_true(mon_client_open(&missing, &c, &st) < 0);
	assert_null(c);
	assert_non_null(strstr(st.message, "tls_ca_file: could not open \"/nonexistent/ca.pem\""));

	mon_client_options not_pem = {.target = "127.0.0.1:1", .tls_ca_file = MON_TEST_HEALTH_SERVER};
	assert_true(mon_client_open(&not_pem, &c, &st) < 0);
	assert_non_null(strstr(st.message, "is not a PEM file"));

	mon_client_options half = {.target = "127.0.0.1:1", .tls_cert_file = "a.pem"};
	assert_true(mon_client_open(&half, &c, &st) < 0);
	assert_non_null(strstr(st.message, "tls_key_file"));

	mon_client_options bad_key = {.target = "127.0.0.1:1", .api_key = "two words"};
	assert_true(mon_client_open(&bad_key, &c, &st) < 0);
	assert_non_null(strstr(st.message, "api_key"));
}

static void test_client_lib_unary(void **state)
{
	(void)state;
	mon_client *c = open_client(NULL);
	Grpc__Health__V1__HealthCheckResponse *resp = NULL;
	mon_status st;
	assert_int_equal(check(c, "", NULL, &resp, &st), 0);
	assert_int_equal(st.code, 0);
	assert_int_equal(resp->status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
	mon_message_free(&resp->base);

	assert_true(check(c, "nope", NULL, &resp, &st) < 0);
	assert_null(resp);
	assert_string_equal(mon_status_code_name(st.code), "NOT_FOUND");
	assert_string_equal(st.message, "unknown service nope");

	/* A reply the caller does not want is freed by the library. */
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	assert_int_equal(mon_call_unary(c, CHECK_PATH, &req.base, &grpc__health__v1__health_check_response__descriptor,
	                                NULL, NULL, NULL),
	                 0);
	mon_client_close(c);
}

static void test_client_lib_metadata(void **state)
{
	(void)state;
	mon_client *c = open_client("k-123");
	mon_call_options opts = {.request_id = "req-7"};
	Grpc__Health__V1__HealthCheckResponse *resp = NULL;
	mon_status st;
	assert_true(check(c, "echo-md", &opts, &resp, &st) < 0);
	assert_string_equal(st.message, "authorization=Bearer k-123 x-request-id=req-7");
	mon_client_close(c);

	c = open_client(NULL);
	assert_true(check(c, "echo-md", NULL, &resp, &st) < 0);
	assert_string_equal(st.message, "authorization= x-request-id=");
	mon_client_close(c);
}

static void test_client_lib_default_deadline(void **state)
{
	(void)state;
	mon_client_options o = {.target = g_server.target, .default_timeout_ms = 200};
	mon_client *c = NULL;
	mon_status st;
	assert_int_equal(mon_client_open(&o, &c, &st), 0);
	Grpc__Health__V1__HealthCheckResponse *resp = NULL;
	assert_true(check(c, "slow", NULL, &resp, &st) < 0);
	assert_string_equal(mon_status_code_name(st.code), "DEADLINE_EXCEEDED");
	/* A per-call timeout overrides the default. */
	mon_call_options longer = {.timeout_ms = 10000};
	assert_int_equal(check(c, "slow", &longer, &resp, &st), 0);
	mon_message_free(&resp->base);
	mon_client_close(c);
}

static void test_client_lib_stream(void **state)
{
	(void)state;
	mon_client *c = open_client(NULL);
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = "gap:400";
	mon_stream *s = NULL;
	mon_status st;
	assert_int_equal(mon_stream_open(c, WATCH_PATH, &req.base, &grpc__health__v1__health_check_response__descriptor,
	                                 NULL, &s, &st),
	                 0);
	ProtobufCMessage *m = NULL;
	int got = 0, timeouts = 0, rc;
	while ((rc = mon_stream_next(s, &m, 50, &st)) != 0) {
		if (rc == MON_STREAM_TIMEOUT) {
			timeouts++;
			continue;
		}
		assert_int_equal(rc, 1);
		got++;
		mon_message_free(m);
	}
	assert_int_equal(got, 2);
	assert_true(timeouts >= 2);
	assert_int_equal(st.code, 0);
	mon_stream_close(s);

	/* A stream that fails reports the server's status. */
	req.service = "fail:1";
	assert_int_equal(mon_stream_open(c, WATCH_PATH, &req.base, &grpc__health__v1__health_check_response__descriptor,
	                                 NULL, &s, &st),
	                 0);
	assert_int_equal(mon_stream_next(s, NULL, -1, &st), 1);
	rc = mon_stream_next(s, &m, -1, &st);
	assert_true(rc < 0 && rc != MON_STREAM_TIMEOUT);
	assert_string_equal(mon_status_code_name(st.code), "ABORTED");
	mon_stream_close(s);

	/* A stream deadline is a failure, not a wait timeout. */
	req.service = "hold";
	mon_call_options short_opts = {.timeout_ms = 300};
	assert_int_equal(mon_stream_open(c, WATCH_PATH, &req.base, &grpc__health__v1__health_check_response__descriptor,
	                                 &short_opts, &s, &st),
	                 0);
	assert_int_equal(mon_stream_next(s, NULL, -1, &st), 1);
	rc = mon_stream_next(s, &m, -1, &st);
	assert_true(rc < 0 && rc != MON_STREAM_TIMEOUT);
	assert_string_equal(mon_status_code_name(st.code), "DEADLINE_EXCEEDED");
	mon_stream_close(s);
	mon_client_close(c);
}

static void test_client_lib_options_from_env(void **state)
{
	(void)state;
	setenv("MONITORD_TARGET", "10.0.0.1:7000", 1);
	setenv("MONITORD_API_KEY", "env-key", 1);
	setenv("MONITORD_TLS_CA", "/etc/ca.pem", 1);
	setenv("MONITORD_TLS_CERT", "", 1);
	unsetenv("MONITORD_TLS_KEY");
	mon_client_options o = {.tls_cert_file = "keep.pem", .tls_key_file = "keep.key"};
	mon_client_options_from_env(&o);
	assert_string_equal(o.target, "10.0.0.1:7000");
	assert_string_equal(o.api_key, "env-key");
	assert_string_equal(o.tls_ca_file, "/etc/ca.pem");
	assert_string_equal(o.tls_cert_file, "keep.pem");
	assert_string_equal(o.tls_key_file, "keep.key");
	mon_client_options_from_env(NULL);
}

static void test_client_lib_status_names(void **state)
{
	(void)state;
	assert_string_equal(mon_status_code_name(0), "OK");
	assert_string_equal(mon_status_code_name(16), "UNAUTHENTICATED");
	assert_string_equal(mon_status_code_name(99), "UNKNOWN");
	mon_message_free(NULL);
	mon_stream_close(NULL);
	mon_client_close(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_client_lib_open_errors),  cmocka_unit_test(test_client_lib_unary),
	        cmocka_unit_test(test_client_lib_metadata),     cmocka_unit_test(test_client_lib_default_deadline),
	        cmocka_unit_test(test_client_lib_stream),       cmocka_unit_test(test_client_lib_options_from_env),
	        cmocka_unit_test(test_client_lib_status_names),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
