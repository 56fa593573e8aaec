/*
 * Tests of the client runtime (src/rpc/client.c) against a python3-grpcio
 * health server: unary calls, metadata, deadlines, unreachable servers,
 * server streams (end, failure, wait timeouts without loss, cancellation,
 * stream deadlines) and a channel shared by threads.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc/client.h"
#include "rpc/status.h"
#include "test_client_server.h"

#define CHECK_PATH "/grpc.health.v1.Health/Check"
#define WATCH_PATH "/grpc.health.v1.Health/Watch"

static struct test_server g_server;

struct fixture {
	struct rpc_channel *ch;
};

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

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct rpc_channel_config cfg = {.target = g_server.target};
	struct mon_error err;
	if (f == NULL || rpc_channel_open(&cfg, &f->ch, &err) != MON_OK)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	rpc_channel_close(f->ch);
	free(f);
	return 0;
}

static int check(struct rpc_channel *ch, const char *service, const struct rpc_call_options *opts,
                 Grpc__Health__V1__HealthCheckResponse **resp, struct rpc_status *status)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)service;
	ProtobufCMessage *out = NULL;
	int rc = rpc_unary_call(ch, CHECK_PATH, &req.base, &grpc__health__v1__health_check_response__descriptor, &out,
	                        opts, status);
	*resp = (Grpc__Health__V1__HealthCheckResponse *)out;
	return rc;
}

static struct rpc_cstream *watch(struct rpc_channel *ch, const char *service, int64_t timeout_ms)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)service;
	struct rpc_call_options opts = {.timeout_ms = timeout_ms};
	struct rpc_cstream *s = NULL;
	struct rpc_status st;
	int rc = rpc_cstream_open(ch, WATCH_PATH, &req.base, &grpc__health__v1__health_check_response__descriptor,
	                          &opts, &s, &st);
	assert_int_equal(rc, MON_OK);
	assert_non_null(s);
	return s;
}

static void test_client_unary_ok(void **state)
{
	struct fixture *f = *state;
	Grpc__Health__V1__HealthCheckResponse *resp = NULL;
	struct rpc_status st;
	assert_int_equal(check(f->ch, "", NULL, &resp, &st), MON_OK);
	assert_int_equal(st.code, 0);
	assert_non_null(resp);
	assert_int_equal(resp->status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
	protobuf_c_message_free_unpacked(&resp->base, NULL);

	assert_int_equal(check(f->ch, "down", NULL, &resp, &st), MON_OK);
	assert_int_equal(resp->status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void test_client_unary_error_status(void **state)
{
	struct fixture *f = *state;
	Grpc__Health__V1__HealthCheckResponse *resp = NULL;
	struct rpc_status st;
	assert_int_equal(check(f->ch, "nope", NULL, &resp, &st), MON_ENOTFOUND);
	assert_null(resp);
	assert_int_equal(st.code, 5);
	assert_string_equal(st.message, "unknown service nope");
}

static void test_client_unary_metadata(void **state)
{
	struct fixture *f = *state;
	const char *md[] = {"authorization", "Bearer k1", "x-request-id", "req-42"};
	struct rpc_call_options opts = {.timeout_ms = 5000, .metadata = md, .metadata_pairs = 2};
	Grpc__Health__V1__HealthCheckResponse *resp = NULL;
	struct rpc_status st;
	assert_int_equal(check(f->ch, "echo-md", &opts, &resp, &st), MON_EPRECOND);
	assert_string_equal(st.message, "authorization=Bearer k1 x-request-id=req-42");

	const char *bad[] = {"Bad Key", "v"};
	struct rpc_call_options bad_opts = {.metadata = bad, .metadata_pairs = 1};
	assert_int_equal(check(f->ch, "", &bad_opts, &resp, &st), MON_EINVAL);
	assert_int_equal(st.code, 3);
	assert_null(resp);
}

static void test_client_unary_deadline(void **state)
{
	struct fixture *f = *state;
	struct rpc_call_options opts = {.timeout_ms = 200};
	Grpc__Health__V1__HealthCheckResponse *resp = NULL;
	struct rpc_status st;
	assert_int_equal(check(f->ch, "slow", &opts, &resp, &st), MON_EDEADLINE);
	assert_int_equal(st.code, 4);
	assert_null(resp);
}

static void test_client_unary_unavailable(void **state)
{
	(void)state;
	/* Port 1 on loopback: nothing listens there. */
	struct rpc_channel_config cfg = {.target = "127.0.0.1:1"};
	struct rpc_channel *ch = NULL;
	struct mon_error err;
	assert_int_equal(rpc_channel_open(&cfg, &ch, &err), MON_OK);
	struct rpc_call_options opts = {.timeout_ms = 5000};
	Grpc__Health__V1__HealthCheckResponse *resp = NULL;
	struct rpc_status st;
	assert_int_equal(check(ch, "", &opts, &resp, &st), MON_EUNAVAIL);
	assert_int_equal(st.code, 14);
	assert_true(st.message[0] != '\0');

	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	struct rpc_cstream *s = NULL;
	assert_int_equal(rpc_cstream_open(ch, WATCH_PATH, &req.base,
	                                  &grpc__health__v1__health_check_response__descriptor, &opts, &s, &st),
	                 MON_EUNAVAIL);
	assert_null(s);
	rpc_channel_close(ch);
}

static void test_client_channel_config_errors(void **state)
{
	(void)state;
	struct rpc_channel *ch = NULL;
	struct mon_error err;
	struct rpc_channel_config none = {.target = NULL};
	assert_int_equal(rpc_channel_open(&none, &ch, &err), MON_EINVAL);
	assert_string_equal(err.msg, "target: required");
	struct rpc_channel_config half = {.target = "127.0.0.1:1", .tls_ca_pem = "x", .tls_cert_pem = "y"};
	assert_int_equal(rpc_channel_open(&half, &ch, &err), MON_EINVAL);
	assert_null(ch);
}

static void test_client_stream_ends_ok(void **state)
{
	struct fixture *f = *state;
	struct rpc_cstream *s = watch(f->ch, "count:5", 0);
	struct rpc_status st;
	ProtobufCMessage *msg = NULL;
	for (int i = 0; i < 5; i++) {
		assert_int_equal(rpc_cstream_next(s, &msg, -1, &st), 1);
		Grpc__Health__V1__HealthCheckResponse *r = (Grpc__Health__V1__HealthCheckResponse *)msg;
		assert_int_equal(r->status, i % 2 == 0 ? 1 : 2);
		protobuf_c_message_free_unpacked(msg, NULL);
	}
	assert_int_equal(rpc_cstream_next(s, &msg, -1, &st), 0);
	assert_null(msg);
	assert_int_equal(st.code, 0);
	/* Asking again gives the same outcome. */
	assert_int_equal(rpc_cstream_next(s, &msg, 10, &st), 0);
	rpc_cstream_close(s);
}

static void test_client_stream_fails(void **state)
{
	struct fixture *f = *state;
	struct rpc_cstream *s = watch(f->ch, "fail:2", 0);
	struct rpc_status st;
	ProtobufCMessage *msg = NULL;
	for (int i = 0; i < 2; i++) {
		assert_int_equal(rpc_cstream_next(s, &msg, -1, &st), 1);
		protobuf_c_message_free_unpacked(msg, NULL);
	}
	assert_int_equal(rpc_cstream_next(s, &msg, -1, &st), MON_EABORTED);
	assert_int_equal(st.code, 10);
	assert_string_equal(st.message, "failed after 2");
	rpc_cstream_close(s);
}

static void test_client_stream_wait_timeout_loses_nothing(void **state)
{
	struct fixture *f = *state;
	struct rpc_cstream *s = watch(f->ch, "gap:600", 0);
	struct rpc_status st;
	ProtobufCMessage *msg = NULL;
	assert_int_equal(rpc_cstream_next(s, &msg, -1, &st), 1);
	protobuf_c_message_free_unpacked(msg, NULL);
	int timeouts = 0;
	int rc;
	while ((rc = rpc_cstream_next(s, &msg, 50, &st)) == RPC_CSTREAM_TIMEOUT)
		timeouts++;
	assert_int_equal(rc, 1);
	assert_true(timeouts >= 3);
	assert_int_equal(((Grpc__Health__V1__HealthCheckResponse *)msg)->status, 2);
	protobuf_c_message_free_unpacked(msg, NULL);
	assert_int_equal(rpc_cstream_next(s, &msg, -1, &st), 0);
	rpc_cstream_close(s);
}

static void test_client_stream_close_cancels(void **state)
{
	struct fixture *f = *state;
	struct rpc_cstream *s = watch(f->ch, "hold", 0);
	struct rpc_status st;
	ProtobufCMessage *msg = NULL;
	assert_int_equal(rpc_cstream_next(s, &msg, -1, &st), 1);
	protobuf_c_message_free_unpacked(msg, NULL);
	assert_int_equal(rpc_cstream_next(s, &msg, 100, &st), RPC_CSTREAM_TIMEOUT);
	assert_null(msg);
	/* Closed with a RECV_MESSAGE batch in flight. */
	rpc_cstream_close(s);

	/* Closed before reading anything. */
	s = watch(f->ch, "hold", 0);
	rpc_cstream_close(s);
}

static void test_client_stream_deadline_is_not_a_wait_timeout(void **state)
{
	struct fixture *f = *state;
	struct rpc_cstream *s = watch(f->ch, "hold", 300);
	struct rpc_status st;
	ProtobufCMessage *msg = NULL;
	assert_int_equal(rpc_cstream_next(s, &msg, -1, &st), 1);
	protobuf_c_message_free_unpacked(msg, NULL);
	assert_int_equal(rpc_cstream_next(s, &msg, -1, &st), MON_EDEADLINE);
	assert_int_equal(st.code, 4);
	rpc_cstream_close(s);
}

static void *hammer(void *arg)
{
	struct rpc_channel *ch = arg;
	for (int i = 0; i < 40; i++) {
		Grpc__Health__V1__HealthCheckResponse *resp = NULL;
		struct rpc_status st;
		if (check(ch, "", NULL, &resp, &st) != MON_OK || resp == NULL)
			return (void *)1;
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	return NULL;
}

static void test_client_channel_shared_by_threads(void **state)
{
	struct fixture *f = *state;
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, hammer, f->ch), 0);
	for (int i = 0; i < 4; i++) {
		void *ret = NULL;
		pthread_join(th[i], &ret);
		assert_null(ret);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_client_unary_ok, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_client_unary_error_status, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_client_unary_metadata, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_client_unary_deadline, setup, teardown),
	        cmocka_unit_test(test_client_unary_unavailable),
	        cmocka_unit_test(test_client_channel_config_errors),
	        cmocka_unit_test_setup_teardown(test_client_stream_ends_ok, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_client_stream_fails, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_client_stream_wait_timeout_loses_nothing, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_client_stream_close_cancels, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_client_stream_deadline_is_not_a_wait_timeout, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_client_channel_shared_by_threads, setup, teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
