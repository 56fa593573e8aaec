/*
 * Unit tests of protoc-gen-mon on src/codegen/testdata/codegen_test/
 * odd_names.proto, whose names exercise protoc-c's naming rules (see the
 * fixture). The generated tables and stubs are compiled here, with our
 * warning flags, against protoc-c's own output for the same files: a name
 * that differs from protoc-c's does not compile or link. The tests then
 * check the tables, trampolines for every kind of method, the method
 * without a comment, the service without methods, and the client stubs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "codegen_test/index.h"
#include "codegen_test/odd_names.mon-client.h"
#include "codegen_test/odd_names.mon-server.h"

/* ---- stand-ins for the RPC runtime and the client library ---- */

static const struct rpc_service_desc *bound_desc;
static rpc_any_fn bound_fns[8];
static bool bound_fns_null;

int rpc_server_bind(struct rpc_server *server, const struct rpc_service_desc *desc, const rpc_any_fn *fns, void *user,
                    unsigned flags, struct mon_error *err)
{
	(void)server;
	(void)user;
	(void)flags;
	(void)err;
	bound_desc = desc;
	bound_fns_null = fns == NULL;
	for (size_t i = 0; fns != NULL && i < desc->method_count && i < 8; i++)
		bound_fns[i] = fns[i];
	return 0;
}

static const char *client_path;
static const ProtobufCMessageDescriptor *client_desc;

int mon_call_unary(mon_client *c, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, const mon_call_options *opts,
                   mon_status *status)
{
	(void)c;
	(void)req;
	(void)opts;
	(void)status;
	client_path = path;
	client_desc = resp_desc;
	*resp = NULL;
	return -8;
}

int mon_stream_open(mon_client *c, const char *path, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, const mon_call_options *opts, mon_stream **out,
                    mon_status *status)
{
	(void)c;
	(void)req;
	(void)opts;
	(void)status;
	client_path = path;
	client_desc = resp_desc;
	*out = NULL;
	return 0;
}

int mon_stream_next(mon_stream *stream, ProtobufCMessage **msg, int64_t wait_ms, mon_status *status)
{
	(void)stream;
	(void)wait_ms;
	(void)status;
	*msg = NULL;
	return 0;
}

void mon_message_free(ProtobufCMessage *msg)
{
	(void)msg;
}

/* ---- typed handlers: one per kind ---- */

static const char *called;

static int get_url(struct rpc_ctx *ctx, const FooBar__V1__HTTPRequest2 *req, FooBar__V1__Outer__Inner *resp)
{
	(void)ctx;
	called = "get_url";
	resp->name = req->url;
	return 0;
}

static int stream2_things(struct rpc_ctx *ctx, const FooBar__V1__A1b2C3 *req, struct rpc_stream *stream)
{
	(void)ctx;
	(void)req;
	(void)stream;
	called = "stream2_things";
	return 1;
}

static int upload(struct rpc_ctx *ctx, const FooBar__V1__Lead *req, struct rpc_stream *stream)
{
	(void)ctx;
	(void)req;
	(void)stream;
	called = "upload";
	return 2;
}

static int chat(struct rpc_ctx *ctx, const Google__Protobuf__Timestamp *req, struct rpc_stream *stream)
{
	(void)ctx;
	(void)stream;
	called = "chat";
	return (int)req->seconds;
}

static int stamp(struct rpc_ctx *ctx, const Google__Protobuf__Timestamp *req, Zz__Yy__M__N *resp)
{
	(void)ctx;
	called = "stamp";
	resp->v = (int32_t)req->nanos;
	return 0;
}

static void test_codegen_odd_table(void **state)
{
	const struct rpc_service_desc *d = &foo_bar_v1_httpservice_v2_desc;
	(void)state;

	assert_string_equal(d->name, "foo_bar.v1.HTTPService_v2");
	assert_int_equal(d->method_count, 6);
	static const struct {
		const char *path;
		enum rpc_kind kind;
		const ProtobufCMessageDescriptor *in, *out;
		const char *summary;
	} want[6] = {
	        {"/foo_bar.v1.HTTPService_v2/GetURL", RPC_UNARY, &foo_bar__v1__httprequest2__descriptor,
	         &foo_bar__v1__outer__inner__descriptor, "Gets a URL."},
	        {"/foo_bar.v1.HTTPService_v2/Stream2Things", RPC_SERVER_STREAMING, &foo_bar__v1__a1b2_c3__descriptor,
	         &foo_bar__v1__outer__inner__deep__er__descriptor,
	         "Streams \"quoted\" \\ things?\? */ e.g. deep ones, forever"},
	        {"/foo_bar.v1.HTTPService_v2/get_thing", RPC_UNARY, &foo_bar__v1__foo__bar__descriptor,
	         &foo_bar__v1__foo_bar__descriptor, ""},
	        {"/foo_bar.v1.HTTPService_v2/Upload", RPC_CLIENT_STREAMING, &foo_bar__v1____lead__descriptor,
	         &foo_bar__v1__lower_case_msg__descriptor, "Uploads many."},
	        {"/foo_bar.v1.HTTPService_v2/Chat", RPC_BIDI_STREAMING, &google__protobuf__timestamp__descriptor,
	         &foo_bar__v1__httprequest2__descriptor, "Talks both ways."},
	        {"/foo_bar.v1.HTTPService_v2/Stamp", RPC_UNARY, &google__protobuf__timestamp__descriptor,
	         &zz__yy__m__n__descriptor, "Stamps a type whose C name comes from c_package."},
	};
	for (size_t i = 0; i < 6; i++) {
		assert_string_equal(d->methods[i].path, want[i].path);
		assert_int_equal(d->methods[i].kind, want[i].kind);
		assert_ptr_equal(d->methods[i].input, want[i].in);
		assert_ptr_equal(d->methods[i].output, want[i].out);
		assert_string_equal(d->methods[i].summary, want[i].summary);
	}
	/* protoc-c's descriptors agree on which message they describe. */
	assert_string_equal(foo_bar__v1__outer__inner__deep__er__descriptor.name, "foo_bar.v1.Outer.Inner.Deep_Er");
	assert_string_equal(zz__yy__m__n__descriptor.name, "a.b.M.N");

	const struct rpc_service_desc *e = &foo_bar_v1_empty__service_desc;
	assert_string_equal(e->name, "foo_bar.v1.Empty_Service");
	assert_int_equal(e->method_count, 0);
	assert_null(e->methods);

	assert_int_equal(mon_all_services_count, 2);
	assert_ptr_equal(mon_all_services[0], d);
	assert_ptr_equal(mon_all_services[1], e);
}

static void test_codegen_odd_trampolines(void **state)
{
	struct foo_bar_v1_httpservice_v2_handlers h = {
	        .get_url = get_url,
	        .stream2_things = stream2_things,
	        .upload = upload,
	        .chat = chat,
	        .stamp = stamp,
	};
	char storage[8];
	struct rpc_ctx *ctx = (struct rpc_ctx *)(void *)storage;
	struct rpc_stream *stream = (struct rpc_stream *)(void *)storage;
	(void)state;

	assert_int_equal(foo_bar_v1_httpservice_v2_bind(NULL, &h, NULL, 0, NULL), 0);
	assert_ptr_equal(bound_desc, &foo_bar_v1_httpservice_v2_desc);
	const struct rpc_method *m = bound_desc->methods;

	FooBar__V1__HTTPRequest2 url_req = FOO_BAR__V1__HTTPREQUEST2__INIT;
	FooBar__V1__Outer__Inner inner = FOO_BAR__V1__OUTER__INNER__INIT;
	url_req.url = (char *)"https://example.test/";
	assert_int_equal(m[0].trampoline(ctx, bound_fns[0], &url_req.base, &inner), 0);
	assert_string_equal(called, "get_url");
	assert_string_equal(inner.name, "https://example.test/");

	FooBar__V1__A1b2C3 things = FOO_BAR__V1__A1B2_C3__INIT;
	assert_int_equal(m[1].trampoline(ctx, bound_fns[1], &things.base, stream), 1);
	assert_string_equal(called, "stream2_things");

	/* get_thing has no handler. */
	assert_null(bound_fns[2]);

	FooBar__V1__Lead lead = FOO_BAR__V1____LEAD__INIT;
	assert_int_equal(m[3].trampoline(ctx, bound_fns[3], &lead.base, stream), 2);
	assert_string_equal(called, "upload");

	Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	ts.seconds = 42;
	ts.nanos = 7;
	assert_int_equal(m[4].trampoline(ctx, bound_fns[4], &ts.base, stream), 42);
	assert_string_equal(called, "chat");

	Zz__Yy__M__N n = ZZ__YY__M__N__INIT;
	assert_int_equal(m[5].trampoline(ctx, bound_fns[5], &ts.base, &n), 0);
	assert_string_equal(called, "stamp");
	assert_int_equal(n.v, 7);

	/* A service without methods binds with no handler array. CamelToLower
	 * turns "Empty_Service" into "empty__service", as protoc-c would. */
	struct foo_bar_v1_empty__service_handlers none = {0};
	assert_int_equal(foo_bar_v1_empty__service_bind(NULL, &none, NULL, 0, NULL), 0);
	assert_ptr_equal(bound_desc, &foo_bar_v1_empty__service_desc);
	assert_true(bound_fns_null);
}

static void test_codegen_odd_client_stubs(void **state)
{
	FooBar__V1__HTTPRequest2 req = FOO_BAR__V1__HTTPREQUEST2__INIT;
	FooBar__V1__Outer__Inner *inner = (FooBar__V1__Outer__Inner *)&req; /* must be overwritten */
	mon_stream *stream = NULL;
	(void)state;

	/* The call's code comes back, and *resp is NULL on failure. */
	assert_int_equal(mon_httpservice_v2_get_url(NULL, &req, &inner, NULL, NULL), -8);
	assert_null(inner);
	assert_string_equal(client_path, "/foo_bar.v1.HTTPService_v2/GetURL");
	assert_ptr_equal(client_desc, &foo_bar__v1__outer__inner__descriptor);

	FooBar__V1__A1b2C3 things = FOO_BAR__V1__A1B2_C3__INIT;
	FooBar__V1__Outer__Inner__DeepEr *deep = NULL;
	assert_int_equal(mon_httpservice_v2_stream2_things_open(NULL, &things, NULL, &stream, NULL), 0);
	assert_string_equal(client_path, "/foo_bar.v1.HTTPService_v2/Stream2Things");
	assert_ptr_equal(client_desc, &foo_bar__v1__outer__inner__deep__er__descriptor);
	assert_int_equal(mon_httpservice_v2_stream2_things_next(stream, &deep, 0, NULL), 0);
	assert_null(deep);

	FooBar__V1__FooBar fb = FOO_BAR__V1__FOO__BAR__INIT;
	FooBar__V1__FooBAR *out = NULL;
	assert_int_equal(mon_httpservice_v2_get_thing(NULL, &fb, &out, NULL, NULL), -8);
	assert_string_equal(client_path, "/foo_bar.v1.HTTPService_v2/get_thing");

	Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	Zz__Yy__M__N *n = NULL;
	assert_int_equal(mon_httpservice_v2_stamp(NULL, &ts, &n, NULL, NULL), -8);
	assert_ptr_equal(client_desc, &zz__yy__m__n__descriptor);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_codegen_odd_table),
	        cmocka_unit_test(test_codegen_odd_trampolines),
	        cmocka_unit_test(test_codegen_odd_client_stubs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
