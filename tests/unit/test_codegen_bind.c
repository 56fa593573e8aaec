/*
 * Unit tests of the code protoc-gen-mon generated for the API (mon_proto):
 * the grpc.health.v1 method table, its trampolines and bind function (with
 * rpc_server_bind replaced by a stub that records what it was given), the
 * health client stubs (with the client library's generic calls replaced
 * likewise), the service index and the embedded descriptor set.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <cmocka.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/health/v1/health.mon-client.h"
#include "grpc/health/v1/health.mon-server.h"
#include "grpc/reflection/v1/reflection.mon-server.h"
#include "mon_descriptor_set.h"
#include "mon_services.h"

/* ---- a stand-in for the RPC runtime's rpc_server_bind ---- */

static struct {
	int calls;
	struct rpc_server *server;
	const struct rpc_service_desc *desc;
	rpc_any_fn fns[8];
	bool fns_null;
	void *user;
	unsigned flags;
} bound;

int rpc_server_bind(struct rpc_server *server, const struct rpc_service_desc *desc, const rpc_any_fn *fns, void *user,
                    unsigned flags, struct mon_error *err)
{
	(void)err;
	bound.calls++;
	bound.server = server;
	bound.desc = desc;
	bound.fns_null = fns == NULL;
	for (size_t i = 0; fns != NULL && i < desc->method_count && i < 8; i++)
		bound.fns[i] = fns[i];
	bound.user = user;
	bound.flags = flags;
	return 0;
}

/* ---- typed handlers that record their calls ---- */

static struct {
	const char *which;
	struct rpc_ctx *ctx;
	const void *req;
	void *out;
} called;

static int check_handler(struct rpc_ctx *ctx, const Grpc__Health__V1__HealthCheckRequest *req,
                         Grpc__Health__V1__HealthCheckResponse *resp)
{
	called.which = "check";
	called.ctx = ctx;
	called.req = req;
	called.out = resp;
	resp->status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	return 0;
}

static int watch_handler(struct rpc_ctx *ctx, const Grpc__Health__V1__HealthCheckRequest *req,
                         struct rpc_stream *stream)
{
	called.which = "watch";
	called.ctx = ctx;
	called.req = req;
	called.out = stream;
	return -7;
}

static int setup(void **state)
{
	(void)state;
	memset(&bound, 0, sizeof(bound));
	memset(&called, 0, sizeof(called));
	return 0;
}

static void test_codegen_health_table(void **state)
{
	const struct rpc_service_desc *d = &grpc_health_v1_health_desc;
	(void)state;

	assert_string_equal(d->name, "grpc.health.v1.Health");
	assert_int_equal(d->method_count, 2);

	assert_string_equal(d->methods[0].path, "/grpc.health.v1.Health/Check");
	assert_string_equal(d->methods[0].name, "Check");
	assert_int_equal(d->methods[0].kind, RPC_UNARY);
	assert_ptr_equal(d->methods[0].input, &grpc__health__v1__health_check_request__descriptor);
	assert_ptr_equal(d->methods[0].output, &grpc__health__v1__health_check_response__descriptor);
	assert_string_equal(d->methods[0].summary,
	                    "If the requested service is unknown, the call will fail with status NOT_FOUND.");

	assert_string_equal(d->methods[1].path, "/grpc.health.v1.Health/Watch");
	assert_string_equal(d->methods[1].name, "Watch");
	assert_int_equal(d->methods[1].kind, RPC_SERVER_STREAMING);
	assert_ptr_equal(d->methods[1].input, &grpc__health__v1__health_check_request__descriptor);
	assert_ptr_equal(d->methods[1].output, &grpc__health__v1__health_check_response__descriptor);
	assert_string_equal(d->methods[1].summary, "Performs a watch for the serving status of the requested service.");
}

static void test_codegen_health_bind_and_trampolines(void **state)
{
	struct grpc_health_v1_health_handlers h = {.check = check_handler, .watch = watch_handler};
	struct rpc_server *server = (struct rpc_server *)(void *)&bound;
	char ctx_storage[8], stream_storage[8];
	struct rpc_ctx *ctx = (struct rpc_ctx *)(void *)ctx_storage;
	struct rpc_stream *stream = (struct rpc_stream *)(void *)stream_storage;
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	int user;
	(void)state;

	assert_int_equal(grpc_health_v1_health_bind(server, &h, &user, RPC_BIND_INLINE, NULL), 0);
	assert_int_equal(bound.calls, 1);
	assert_ptr_equal(bound.server, server);
	assert_ptr_equal(bound.desc, &grpc_health_v1_health_desc);
	assert_false(bound.fns_null);
	assert_ptr_equal(bound.user, &user);
	assert_int_equal(bound.flags, RPC_BIND_INLINE);

	/* The unary trampoline calls Check with the request and response. */
	const struct rpc_method *m = &bound.desc->methods[0];
	assert_int_equal(m->trampoline(ctx, bound.fns[0], &req.base, &resp), 0);
	assert_string_equal(called.which, "check");
	assert_ptr_equal(called.ctx, ctx);
	assert_ptr_equal(called.req, &req);
	assert_ptr_equal(called.out, &resp);
	assert_int_equal(resp.status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);

	/* The streaming trampoline calls Watch with the stream, and passes its code back. */
	m = &bound.desc->methods[1];
	assert_int_equal(m->trampoline(ctx, bound.fns[1], &req.base, stream), -7);
	assert_string_equal(called.which, "watch");
	assert_ptr_equal(called.req, &req);
	assert_ptr_equal(called.out, stream);
}

static void test_codegen_health_bind_unimplemented(void **state)
{
	struct grpc_health_v1_health_handlers only_check = {.check = check_handler};
	(void)state;

	/* No handlers: every slot is NULL, which the runtime answers UNIMPLEMENTED. */
	assert_int_equal(grpc_health_v1_health_bind(NULL, NULL, NULL, 0, NULL), 0);
	assert_int_equal(bound.calls, 1);
	assert_false(bound.fns_null);
	assert_null(bound.fns[0]);
	assert_null(bound.fns[1]);

	assert_int_equal(grpc_health_v1_health_bind(NULL, &only_check, NULL, 0, NULL), 0);
	assert_non_null(bound.fns[0]);
	assert_null(bound.fns[1]);
}

static bool has_service(const char *name)
{
	for (size_t i = 0; i < mon_all_services_count; i++)
		if (strcmp(mon_all_services[i]->name, name) == 0)
			return true;
	return false;
}

static void test_codegen_service_index(void **state)
{
	char path[512];
	(void)state;

	assert_true(has_service("grpc.health.v1.Health"));
	assert_true(has_service("grpc.reflection.v1.ServerReflection"));
	assert_true(has_service("grpc.reflection.v1alpha.ServerReflection"));
	for (size_t i = 0; i < mon_all_services_count; i++) {
		const struct rpc_service_desc *d = mon_all_services[i];
		assert_non_null(d);
		for (size_t j = 0; j < d->method_count; j++) {
			const struct rpc_method *m = &d->methods[j];
			snprintf(path, sizeof(path), "/%s/%s", d->name, m->name);
			assert_string_equal(m->path, path);
			assert_non_null(m->summary);
			assert_non_null(m->input);
			assert_non_null(m->output);
			assert_non_null(m->trampoline);
			assert_in_range(m->kind, RPC_UNARY, RPC_BIDI_STREAMING);
			assert_int_equal(m->input->magic, PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC);
		}
		/* Each service appears once. */
		for (size_t k = 0; k < i; k++)
			assert_string_not_equal(mon_all_services[k]->name, d->name);
	}
	const struct rpc_service_desc *r = &grpc_reflection_v1_server_reflection_desc;
	assert_int_equal(r->method_count, 1);
	assert_int_equal(r->methods[0].kind, RPC_BIDI_STREAMING);
	assert_string_equal(r->methods[0].path, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
}

static ssize_t file_index(const Google__Protobuf__FileDescriptorSet *set, const char *name)
{
	for (size_t i = 0; i < set->n_file; i++)
		if (strcmp(set->file[i]->name, name) == 0)
			return (ssize_t)i;
	return -1;
}

static void test_codegen_descriptor_set(void **state)
{
	(void)state;
	Google__Protobuf__FileDescriptorSet *set =
	        google__protobuf__file_descriptor_set__unpack(NULL, mon_descriptor_set_len, mon_descriptor_set);
	assert_non_null(set);

	assert_true(file_index(set, "grpc/health/v1/health.proto") >= 0);
	assert_true(file_index(set, "grpc/reflection/v1/reflection.proto") >= 0);
	assert_true(file_index(set, "grpc/reflection/v1alpha/reflection.proto") >= 0);
	assert_true(file_index(set, "google/protobuf/timestamp.proto") >= 0);
	for (size_t i = 0; i < set->n_file; i++) {
		const Google__Protobuf__FileDescriptorProto *f = set->file[i];
		/* No source info, and every dependency comes earlier in the set. */
		assert_null(f->source_code_info);
		for (size_t d = 0; d < f->n_dependency; d++) {
			ssize_t at = file_index(set, f->dependency[d]);
			assert_true(at >= 0);
			assert_true((size_t)at < i);
		}
		/* No file twice. */
		assert_int_equal(file_index(set, f->name), (ssize_t)i);
	}
	google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
}

/* ---- stand-ins for the client library's generic calls ---- */

static struct {
	const char *path;
	const ProtobufCMessage *req;
	const ProtobufCMessageDescriptor *desc;
	ProtobufCMessage *reply; /* what the next call hands back */
	int freed;
} client;

int mon_call_unary(mon_client *c, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, const mon_call_options *opts,
                   mon_status *status)
{
	(void)c;
	(void)opts;
	(void)status;
	client.path = path;
	client.req = req;
	client.desc = resp_desc;
	*resp = client.reply;
	return 0;
}

int mon_stream_open(mon_client *c, const char *path, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, const mon_call_options *opts, mon_stream **out,
                    mon_status *status)
{
	(void)c;
	(void)opts;
	(void)status;
	client.path = path;
	client.req = req;
	client.desc = resp_desc;
	*out = (mon_stream *)(void *)&client;
	return 0;
}

int mon_stream_next(mon_stream *stream, ProtobufCMessage **msg, int64_t wait_ms, mon_status *status)
{
	(void)stream;
	(void)wait_ms;
	(void)status;
	*msg = client.reply;
	return 1;
}

void mon_message_free(ProtobufCMessage *msg)
{
	(void)msg;
	client.freed++;
}

static void test_codegen_health_client_stubs(void **state)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	Grpc__Health__V1__HealthCheckResponse reply = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	Grpc__Health__V1__HealthCheckRequest wrong = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	Grpc__Health__V1__HealthCheckResponse *resp = NULL;
	mon_stream *stream = NULL;
	mon_status status = {0, ""};
	(void)state;

	memset(&client, 0, sizeof(client));
	client.reply = &reply.base;
	assert_int_equal(mon_health_check(NULL, &req, &resp, NULL, &status), 0);
	assert_string_equal(client.path, "/grpc.health.v1.Health/Check");
	assert_ptr_equal(client.req, &req.base);
	assert_ptr_equal(client.desc, &grpc__health__v1__health_check_response__descriptor);
	assert_ptr_equal(resp, &reply);

	assert_int_equal(mon_health_watch_open(NULL, &req, NULL, &stream, &status), 0);
	assert_string_equal(client.path, "/grpc.health.v1.Health/Watch");
	assert_ptr_equal(client.desc, &grpc__health__v1__health_check_response__descriptor);
	assert_int_equal(mon_health_watch_next(stream, &resp, 10, &status), 1);
	assert_ptr_equal(resp, &reply);

	/* A message of another type (a stream opened for another method) is refused and freed. */
	client.reply = &wrong.base;
	assert_int_equal(mon_health_watch_next(stream, &resp, 10, &status), -1);
	assert_null(resp);
	assert_int_equal(client.freed, 1);
	assert_int_equal(status.code, 3);
	assert_non_null(strstr(status.message, "mon_health_watch_open"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup(test_codegen_health_table, setup),
	        cmocka_unit_test_setup(test_codegen_health_bind_and_trampolines, setup),
	        cmocka_unit_test_setup(test_codegen_health_bind_unimplemented, setup),
	        cmocka_unit_test_setup(test_codegen_service_index, setup),
	        cmocka_unit_test_setup(test_codegen_descriptor_set, setup),
	        cmocka_unit_test_setup(test_codegen_health_client_stubs, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
