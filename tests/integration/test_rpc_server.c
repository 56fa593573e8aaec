/*
 * The RPC runtime under real load: an in-process server with a test service
 * of blocking and streaming handlers, called over loopback by the client
 * runtime, with a real PostgreSQL behind the blocking ones. Checks what
 * the domain services rely on: blocking handlers never stall the transport,
 * the caller's deadline reaches the database as a statement timeout,
 * cancellation reaches handlers, a unary call handed to another thread
 * frees its worker and is answered from there, streams are bounded and
 * ordered, and shutdown finishes unary calls, lets a shutdown callback have
 * a stream's last word and ends the other streams with UNAVAILABLE.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>

#include "db/db.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc/client.h"
#include "rpc/method.h"
#include "rpc/server.h"

#define WORKERS 4
#define QUEUE_MAX 16

typedef Grpc__Health__V1__HealthCheckRequest Req;
typedef Grpc__Health__V1__HealthCheckResponse Resp;

static struct db_pool *pool;
static struct rpc_server *server;
static struct rpc_channel *channel;
static char target[64];

/* Gate that blocking handlers wait on, to hold every worker busy. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static atomic_int gate_waiting;
static atomic_int cancel_seen;
static atomic_int hold_closed;
static _Atomic(struct rpc_stream *) drain_stream; /* a "drain" stream, for the shutdown callback */
static pthread_mutex_t later_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t later_cond = PTHREAD_COND_INITIALIZER;
static bool later_open;
static atomic_int later_waiting;
static atomic_int drain_refused;

static int sleep_sql(struct db_conn *conn, void *arg, struct mon_error *err)
{
	const char *params[] = {arg};
	return db_exec(conn, "SELECT pg_sleep($1::float8 / 1000)", 1, params, NULL, err);
}

struct later_job {
	struct rpc_ctx *ctx;
	Resp *resp;
	bool is_fail;
};

/* A thread of the test's own that answers a deferred call once the test opens its gate. */
static void *later_main(void *arg)
{
	struct later_job *j = arg;
	pthread_mutex_lock(&later_lock);
	atomic_fetch_add(&later_waiting, 1);
	while (!later_open)
		pthread_cond_wait(&later_cond, &later_lock);
	pthread_mutex_unlock(&later_lock);
	struct rpc_ctx *ctx = j->ctx;
	int rc = 0;
	if (j->is_fail)
		rc = rpc_fail(ctx, MON_EINVAL, "service: answered later, with an error");
	else
		j->resp->status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	rpc_reply_finish(ctx, rc); /* j lived in the call's arena: not used after this */
	return NULL;
}

/* Unary, on a worker: "db:<ms>" sleeps in PostgreSQL under the caller's deadline,
 * "gate" waits for the test to open the gate, "cancel" polls until cancelled. */
static int h_block(struct rpc_ctx *ctx, const Req *req, Resp *resp)
{
	const char *what = req->service;
	if (strncmp(what, "db:", 3) == 0) {
		int rc = db_tx_run(pool, rpc_ctx_remaining_ms(ctx), sleep_sql, (void *)(what + 3), rpc_ctx_error(ctx));
		if (rc != 0)
			return rc;
	} else if (strcmp(what, "gate") == 0) {
		pthread_mutex_lock(&gate_lock);
		atomic_fetch_add(&gate_waiting, 1);
		while (!gate_open)
			pthread_cond_wait(&gate_cond, &gate_lock);
		pthread_mutex_unlock(&gate_lock);
	} else if (strcmp(what, "cancel") == 0) {
		for (int i = 0; i < 1000 && !rpc_ctx_is_cancelled(ctx); i++)
			usleep(10000);
		if (rpc_ctx_is_cancelled(ctx))
			atomic_fetch_add(&cancel_seen, 1);
		if (rpc_ctx_remaining_ms(ctx) <= 0)
			return rpc_fail(ctx, MON_EDEADLINE, "deadline exceeded");
		return rpc_fail(ctx, MON_ECANCELLED, "cancelled");
	} else if (strcmp(what, "later") == 0 || strcmp(what, "later-fail") == 0) {
		struct later_job *j = arena_calloc(rpc_ctx_arena(ctx), 1, sizeof(*j));
		if (j == NULL)
			return rpc_fail(ctx, MON_ENOMEM, "out of memory");
		*j = (struct later_job){.ctx = ctx, .resp = resp, .is_fail = strcmp(what, "later-fail") == 0};
		pthread_t t;
		rpc_reply_later(ctx);
		if (pthread_create(&t, NULL, later_main, j) != 0) {
			rpc_fail(ctx, MON_EINTERNAL, "no thread");
			rpc_reply_finish(ctx, MON_EINTERNAL);
			return RPC_REPLY_LATER;
		}
		pthread_detach(t);
		return RPC_REPLY_LATER;
	} else if (strcmp(what, "bad") == 0) {
		return rpc_fail(ctx, MON_EINVAL, "service: must not be \"bad\"");
	} else if (strcmp(what, "who") == 0) {
		const struct rpc_identity *id = rpc_ctx_identity(ctx);
		return rpc_fail(ctx, MON_EINVAL, "caller=%s role=%s", id ? id->caller_id : "-",
		                id ? rpc_role_name(id->role) : "-");
	} else if (strcmp(what, "busy") == 0) {
		if (rpc_ctx_add_trailer(ctx, "grpc-retry-pushback-ms", "250") != 0 ||
		    rpc_ctx_add_trailer(ctx, "Bad Key", "x") != MON_EINVAL)
			return rpc_fail(ctx, MON_EINTERNAL, "trailer refused");
		return rpc_fail(ctx, MON_ELIMIT, "rate cap: 10 per second");
	}
	resp->status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	return 0;
}

/* Server streaming, on a worker: "count:<n>" sends n numbered messages and
 * finishes; "flood" sends without waiting until the queue is full, then ends
 * the stream with RESOURCE_EXHAUSTED; "hold" keeps the stream open. */
static void on_hold_close(struct rpc_stream *s, void *arg)
{
	atomic_fetch_add(&hold_closed, 1);
	rpc_stream_release(s);
}

static void on_drain_close(struct rpc_stream *s, void *arg)
{
	rpc_stream_release(s);
}

/*
 * Shutdown callback: the owner of the "drain" stream queues three
 * SERVICE_UNKNOWN messages and finishes it with a status of its own.
 */
static void drain_on_shutdown(void *arg)
{
	struct rpc_stream *s = atomic_exchange(&drain_stream, NULL);
	if (s == NULL)
		return;
	Resp msg = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	msg.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
	for (int i = 0; i < 3; i++)
		if (rpc_stream_send(s, &msg.base) != 0)
			atomic_fetch_add(&drain_refused, 1);
	rpc_stream_finish(s, MON_EUNAVAIL, "drained: resume after 3");
	rpc_stream_release(s);
}

/*
 * "locked": a sender thread sends while holding owner_lock, which the
 * stream's close callback takes too, until the stream is over. A close
 * callback run inside a send's completion, on the sender's thread, would
 * deadlock it.
 */
static pthread_mutex_t owner_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int locked_closed, locked_sent;
static pthread_t locked_thread;
static char locked_close_thread[16]; /* the name of the thread the close callback ran on */

static void on_locked_close(struct rpc_stream *s, void *arg)
{
	(void)arg;
	pthread_getname_np(pthread_self(), locked_close_thread, sizeof(locked_close_thread));
	pthread_mutex_lock(&owner_lock);
	atomic_store(&locked_closed, 1);
	pthread_mutex_unlock(&owner_lock);
	rpc_stream_release(s);
}

static void *locked_sender(void *arg)
{
	struct rpc_stream *s = arg;
	Resp msg = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	pthread_mutex_lock(&owner_lock);
	for (int i = 0; i < 200000; i++) {
		int rc = rpc_stream_send(s, &msg.base);
		if (rc == MON_ELIMIT)
			usleep(1000); /* still holding the lock */
		else if (rc != 0)
			break;
		else
			atomic_fetch_add(&locked_sent, 1);
	}
	pthread_mutex_unlock(&owner_lock);
	rpc_stream_release(s);
	return NULL;
}

static int h_stream(struct rpc_ctx *ctx, const Req *req, struct rpc_stream *stream)
{
	const char *what = req->service;
	Resp msg = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	if (strncmp(what, "count:", 6) == 0) {
		long n = strtol(what + 6, NULL, 10);
		for (long i = 0; i < n; i++) {
			msg.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)(i % 3);
			int rc = rpc_stream_send_wait(stream, &msg.base);
			if (rc != 0)
				return rc;
		}
		rpc_stream_finish(stream, 0, NULL);
		return 0;
	}
	if (strcmp(what, "flood") == 0) {
		for (int i = 0; i < 1000000; i++) {
			int rc = rpc_stream_send(stream, &msg.base);
			if (rc == MON_ELIMIT)
				return rpc_fail(ctx, MON_ELIMIT, "subscriber fell behind after %d messages; resume", i);
			if (rc != 0)
				return rc;
		}
		return rpc_fail(ctx, MON_EINTERNAL, "queue never filled");
	}
	if (strcmp(what, "hold") == 0) {
		rpc_stream_retain(stream);
		rpc_stream_on_close(stream, on_hold_close, NULL);
		return rpc_stream_send(stream, &msg.base);
	}
	if (strcmp(what, "locked") == 0) {
		rpc_stream_retain(stream); /* the close callback's */
		rpc_stream_on_close(stream, on_locked_close, NULL);
		rpc_stream_retain(stream); /* the sender's */
		if (pthread_create(&locked_thread, NULL, locked_sender, stream) != 0) {
			rpc_stream_release(stream);
			return rpc_fail(ctx, MON_EINTERNAL, "no thread");
		}
		return 0;
	}
	if (strcmp(what, "drain") == 0) {
		rpc_stream_retain(stream); /* the close callback's */
		rpc_stream_on_close(stream, on_drain_close, NULL);
		rpc_stream_retain(stream); /* the shutdown callback's */
		atomic_store(&drain_stream, stream);
		return rpc_stream_send(stream, &msg.base);
	}
	return rpc_fail(ctx, MON_EINVAL, "service: unknown stream mode");
}

static int tramp_unary(struct rpc_ctx *ctx, rpc_any_fn fn, const ProtobufCMessage *req, void *out)
{
	return ((int (*)(struct rpc_ctx *, const Req *, Resp *))fn)(ctx, (const Req *)req, out);
}

static int tramp_stream(struct rpc_ctx *ctx, rpc_any_fn fn, const ProtobufCMessage *req, void *out)
{
	return ((int (*)(struct rpc_ctx *, const Req *, struct rpc_stream *))fn)(ctx, (const Req *)req, out);
}

static const struct rpc_method test_methods[] = {
        {"/test.Runtime/Block", "Block", "Blocks.", RPC_UNARY, &grpc__health__v1__health_check_request__descriptor,
         &grpc__health__v1__health_check_response__descriptor, tramp_unary, 0},
        {"/test.Runtime/Stream", "Stream", "Streams.", RPC_SERVER_STREAMING,
         &grpc__health__v1__health_check_request__descriptor, &grpc__health__v1__health_check_response__descriptor,
         tramp_stream, 0},
        {"/test.Runtime/Missing", "Missing", "Does something not built yet.", RPC_UNARY,
         &grpc__health__v1__health_check_request__descriptor, &grpc__health__v1__health_check_response__descriptor,
         tramp_unary, 0},
};
static const struct rpc_service_desc test_desc = {"test.Runtime", 3, test_methods};

/* The same handlers behind roles, for the authorization tests. */
static const struct rpc_method secured_methods[] = {
        {"/test.Secured/Read", "Read", "Reads.", RPC_UNARY, &grpc__health__v1__health_check_request__descriptor,
         &grpc__health__v1__health_check_response__descriptor, tramp_unary, RPC_ROLE_VIEWER},
        {"/test.Secured/Write", "Write", "Writes.", RPC_UNARY, &grpc__health__v1__health_check_request__descriptor,
         &grpc__health__v1__health_check_response__descriptor, tramp_unary, RPC_ROLE_EDITOR},
        {"/test.Secured/Watch", "Watch", "Watches.", RPC_SERVER_STREAMING,
         &grpc__health__v1__health_check_request__descriptor, &grpc__health__v1__health_check_response__descriptor,
         tramp_stream, RPC_ROLE_VIEWER},
};
static const struct rpc_service_desc secured_desc = {"test.Secured", 3, secured_methods};

static atomic_int denials;
static atomic_int last_denial_code;

/* Tokens "viewer-1", "editor-1" and "limited-1" stand for callers; anything else is refused. */
static int fake_authenticate(void *arg, const struct rpc_auth_request *req, struct rpc_identity *out,
                             struct mon_error *err)
{
	const char *t = req->bearer_token;
	if (t == NULL)
		return mon_error_set(err, MON_EUNAUTH, "missing credentials");
	memset(out, 0, sizeof(*out));
	if (strcmp(t, "viewer-1") == 0 || strcmp(t, "limited-1") == 0)
		out->role = RPC_ROLE_VIEWER;
	else if (strcmp(t, "editor-1") == 0)
		out->role = RPC_ROLE_EDITOR;
	else
		return mon_error_set(err, MON_EUNAUTH, "invalid or expired API key");
	snprintf(out->caller_id, sizeof(out->caller_id), "%s", t);
	snprintf(out->auth_method, sizeof(out->auth_method), "api-key");
	return 0;
}

static void fake_deny(void *arg, const struct rpc_auth_request *req, const struct rpc_identity *who, int code,
                      const char *message)
{
	atomic_fetch_add(&denials, 1);
	atomic_store(&last_denial_code, code);
}

static int call_block(const char *what, int64_t timeout_ms, struct rpc_status *st)
{
	Req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)what;
	ProtobufCMessage *resp = NULL;
	struct rpc_call_options opts = {.timeout_ms = timeout_ms};
	int rc = rpc_unary_call(channel, "/test.Runtime/Block", &req.base,
	                        &grpc__health__v1__health_check_response__descriptor, &resp, &opts, st);
	if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
	return rc;
}

static int call_as(struct rpc_channel *ch, const char *path, const char *token, const char *what, struct rpc_status *st)
{
	Req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)what;
	ProtobufCMessage *resp = NULL;
	char bearer[64];
	snprintf(bearer, sizeof(bearer), "Bearer %s", token ? token : "");
	const char *md[] = {"authorization", bearer};
	struct rpc_call_options opts = {
	        .timeout_ms = 5000, .metadata = token ? md : NULL, .metadata_pairs = token ? 1 : 0};
	int rc = rpc_unary_call(ch, path, &req.base, &grpc__health__v1__health_check_response__descriptor, &resp, &opts,
	                        st);
	if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
	return rc;
}

static int health_check(struct rpc_status *st)
{
	Req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	ProtobufCMessage *resp = NULL;
	struct rpc_call_options opts = {.timeout_ms = 5000};
	int rc = rpc_unary_call(channel, "/grpc.health.v1.Health/Check", &req.base,
	                        &grpc__health__v1__health_check_response__descriptor, &resp, &opts, st);
	if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
	return rc;
}

static void start_server(void)
{
	struct mon_error err = {0};
	struct rpc_server_config cfg;
	rpc_server_config_defaults(&cfg);
	cfg.listen_addr = "127.0.0.1:0";
	cfg.worker_threads = WORKERS;
	cfg.stream_queue_max = QUEUE_MAX;
	assert_int_equal(rpc_server_create(&cfg, &server, &err), 0);
	rpc_any_fn fns[] = {(rpc_any_fn)h_block, (rpc_any_fn)h_stream, NULL};
	assert_int_equal(rpc_server_bind(server, &test_desc, fns, NULL, 0, &err), 0);
	assert_int_equal(rpc_server_on_shutdown(server, drain_on_shutdown, NULL), 0);
	rpc_health_set(server, "", RPC_HEALTH_SERVING);
	int port = 0;
	assert_int_equal(rpc_server_start(server, &port, &err), 0);
	assert_true(port > 0);
	snprintf(target, sizeof(target), "127.0.0.1:%d", port);
	struct rpc_channel_config cc = {.target = target};
	assert_int_equal(rpc_channel_open(&cc, &channel, &err), 0);
}

static void stop_server(void)
{
	rpc_channel_close(channel);
	channel = NULL;
	rpc_server_shutdown(server, 5000);
	rpc_server_destroy(server);
	server = NULL;
}

static int setup(void **state)
{
	const char *base = getenv("MON_TEST_DATABASE");
	if (base == NULL)
		return -1;
	struct db_config dc = {.conninfo = base, .pool_size = 8};
	struct mon_error err = {0};
	if (db_pool_create(&dc, &pool, &err) != 0)
		return -1;
	start_server();
	return 0;
}

static int teardown(void **state)
{
	if (server)
		stop_server();
	db_pool_destroy(pool);
	return 0;
}

static void *gate_caller(void *arg)
{
	struct rpc_status st = {0};
	int rc = call_block("gate", 30000, &st);
	return (void *)(intptr_t)rc;
}

static void test_rpc_blocking_handlers_do_not_stall_the_transport(void **state)
{
	pthread_t callers[WORKERS];
	atomic_store(&gate_waiting, 0);
	gate_open = false;
	/* Fill every worker with a call blocked on the gate. */
	for (int i = 0; i < WORKERS; i++)
		pthread_create(&callers[i], NULL, gate_caller, NULL);
	for (int i = 0; i < 500 && atomic_load(&gate_waiting) < WORKERS; i++)
		usleep(10000);
	assert_int_equal(atomic_load(&gate_waiting), WORKERS);
	/* Every worker is blocked, and the (inline) health service still answers. */
	struct rpc_status st = {0};
	assert_int_equal(health_check(&st), 0);
	assert_int_equal(st.code, 0);
	pthread_mutex_lock(&gate_lock);
	gate_open = true;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
	for (int i = 0; i < WORKERS; i++) {
		void *rc = NULL;
		pthread_join(callers[i], &rc);
		assert_int_equal((intptr_t)rc, 0);
	}
}

static void *later_caller(void *arg)
{
	struct rpc_status st = {0};
	int rc = call_block((const char *)arg, 30000, &st);
	if (rc == MON_EINVAL && strstr(st.message, "answered later, with an error") == NULL)
		rc = MON_EINTERNAL;
	return (void *)(intptr_t)rc;
}

/* A handler that hands its call to another thread frees its worker at once; that thread answers. */
static void test_rpc_unary_reply_from_another_thread(void **state)
{
	enum { CALLS = WORKERS * 2 + 1 };
	pthread_t callers[CALLS];
	atomic_store(&later_waiting, 0);
	later_open = false;
	for (int i = 0; i < CALLS; i++)
		pthread_create(&callers[i], NULL, later_caller, (void *)(i == 0 ? "later-fail" : "later"));
	/* More calls are waiting than there are workers: none holds one. */
	for (int i = 0; i < 1000 && atomic_load(&later_waiting) < CALLS; i++)
		usleep(10000);
	assert_int_equal(atomic_load(&later_waiting), CALLS);
	struct rpc_status st = {0};
	assert_int_equal(call_block("", 5000, &st), 0);
	pthread_mutex_lock(&later_lock);
	later_open = true;
	pthread_cond_broadcast(&later_cond);
	pthread_mutex_unlock(&later_lock);
	for (int i = 0; i < CALLS; i++) {
		void *rc = NULL;
		pthread_join(callers[i], &rc);
		assert_int_equal((intptr_t)rc, i == 0 ? MON_EINVAL : 0);
	}
}

static void test_rpc_deadline_reaches_the_database(void **state)
{
	struct rpc_status st = {0};
	/* A 5 s query under a 300 ms deadline is cancelled by PostgreSQL. */
	int rc = call_block("db:5000", 300, &st);
	assert_int_equal(rc, MON_EDEADLINE);
	assert_int_equal(st.code, 4);
	/* The pool connection came back usable: a short query succeeds. */
	assert_int_equal(call_block("db:1", 5000, &st), 0);
}

static void test_db_session_statement_timeout_without_deadline(void **state)
{
	/* A call without a deadline still gets the pool's statement timeout. */
	struct db_pool *p = NULL;
	struct db_config dc = {.conninfo = getenv("MON_TEST_DATABASE"), .pool_size = 1, .statement_timeout_ms = 200};
	struct mon_error err = {0};
	assert_int_equal(db_pool_create(&dc, &p, &err), 0);
	assert_int_equal(db_tx_run(p, DB_NO_DEADLINE, sleep_sql, "3000", &err), MON_EDEADLINE);
	assert_int_equal(db_tx_run(p, DB_NO_DEADLINE, sleep_sql, "1", &err), 0);
	db_pool_destroy(p);
}

static void test_rpc_handler_errors_and_unimplemented(void **state)
{
	struct rpc_status st = {0};
	assert_int_equal(call_block("bad", 5000, &st), MON_EINVAL);
	assert_int_equal(st.code, 3);
	assert_string_equal(st.message, "service: must not be \"bad\"");
	assert_int_equal(call_block("busy", 5000, &st), MON_ELIMIT);
	assert_int_equal(st.code, 8);
	assert_string_equal(st.message, "rate cap: 10 per second");

	Req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	ProtobufCMessage *resp = NULL;
	struct rpc_call_options opts = {.timeout_ms = 5000};
	assert_int_equal(rpc_unary_call(channel, "/test.Runtime/Missing", &req.base,
	                                &grpc__health__v1__health_check_response__descriptor, &resp, &opts, &st),
	                 MON_EUNIMPL);
	assert_string_equal(st.message, "test.Runtime/Missing is not implemented yet: Does something not built yet.");
}

static void test_rpc_cancellation_reaches_the_handler(void **state)
{
	atomic_store(&cancel_seen, 0);
	struct rpc_status st = {0};
	/* The client gives up after 200 ms; the handler must notice. */
	assert_int_equal(call_block("cancel", 200, &st), MON_EDEADLINE);
	for (int i = 0; i < 300 && atomic_load(&cancel_seen) == 0; i++)
		usleep(10000);
	assert_int_equal(atomic_load(&cancel_seen), 1);
}

/* Opens /test.Runtime/Stream in mode (see h_stream); timeout_ms 0: none. */
static struct rpc_cstream *open_stream(const char *mode, int timeout_ms)
{
	Req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)mode;
	struct rpc_cstream *s = NULL;
	struct rpc_status st = {0};
	struct rpc_call_options opts = {.timeout_ms = timeout_ms};
	assert_int_equal(rpc_cstream_open(channel, "/test.Runtime/Stream", &req.base,
	                                  &grpc__health__v1__health_check_response__descriptor,
	                                  timeout_ms > 0 ? &opts : NULL, &s, &st),
	                 0);
	return s;
}

/* Reads n messages from s, each within 10 s. */
static void read_messages(struct rpc_cstream *s, int n)
{
	struct rpc_status st = {0};
	ProtobufCMessage *m = NULL;
	for (int i = 0; i < n; i++) {
		assert_int_equal(rpc_cstream_next(s, &m, 10000, &st), 1);
		protobuf_c_message_free_unpacked(m, NULL);
	}
}

/* Polls flag until it is set or timeout_ms passes; its value. */
static int wait_for_flag(atomic_int *flag, int timeout_ms)
{
	for (int i = 0; i < timeout_ms / 10 && atomic_load(flag) == 0; i++)
		usleep(10000);
	return atomic_load(flag);
}

static void test_rpc_stream_delivers_in_order(void **state)
{
	struct rpc_cstream *s = open_stream("count:5000", 60000);
	struct rpc_status st = {0};
	int n = 0;
	ProtobufCMessage *m = NULL;
	int rc;
	while ((rc = rpc_cstream_next(s, &m, 10000, &st)) == 1) {
		Resp *r = (Resp *)m;
		assert_int_equal((int)r->status, n % 3);
		n++;
		protobuf_c_message_free_unpacked(m, NULL);
	}
	assert_int_equal(rc, 0);
	assert_int_equal(n, 5000);
	rpc_cstream_close(s);
}

static void test_rpc_slow_subscriber_is_ended_not_buffered(void **state)
{
	struct rpc_cstream *s = open_stream("flood", 60000);
	struct rpc_status st = {0};
	int n = 0, rc;
	ProtobufCMessage *m = NULL;
	while ((rc = rpc_cstream_next(s, &m, 10000, &st)) == 1) {
		n++;
		protobuf_c_message_free_unpacked(m, NULL);
	}
	assert_int_equal(rc, MON_ELIMIT);
	assert_int_equal(st.code, 8);
	assert_non_null(strstr(st.message, "fell behind"));
	assert_true(n < 1000000);
	rpc_cstream_close(s);
}

static void test_rpc_cancelled_stream_runs_close_callback(void **state)
{
	atomic_store(&hold_closed, 0);
	struct rpc_cstream *s = open_stream("hold", 0);
	read_messages(s, 1);
	rpc_cstream_close(s);
	assert_int_equal(wait_for_flag(&hold_closed, 5000), 1);
}

/*
 * Owner callbacks run on the runtime's callbacks thread, never inside a
 * completion: that may run on a thread that sends while holding the
 * owner's locks.
 */
static void test_rpc_close_callback_runs_on_the_callbacks_thread(void **state)
{
	atomic_store(&locked_closed, 0);
	atomic_store(&locked_sent, 0);
	struct rpc_cstream *s = open_stream("locked", 0);
	read_messages(s, 100);
	rpc_cstream_close(s); /* cancels the stream while the sender still sends */
	assert_int_equal(wait_for_flag(&locked_closed, 10000), 1);
	assert_string_equal(locked_close_thread, "rpc-callbacks");
	assert_int_equal(pthread_join(locked_thread, NULL), 0);
	assert_true(atomic_load(&locked_sent) >= 100);
}

struct bg_call {
	pthread_t t;
	int rc;
	struct rpc_status st;
};

static void *bg_db_call(void *arg)
{
	struct bg_call *b = arg;
	b->rc = call_block("db:700", 30000, &b->st);
	return NULL;
}

static void test_rpc_shutdown_finishes_unary_and_ends_streams(void **state)
{
	/* A held stream and an in-flight unary call when shutdown starts. */
	atomic_store(&hold_closed, 0);
	struct rpc_cstream *s = open_stream("hold", 0);
	read_messages(s, 1);
	/* And a stream whose owner finishes it from a shutdown callback. */
	struct rpc_cstream *ds = open_stream("drain", 0);
	read_messages(ds, 1);
	struct rpc_status st = {0};
	ProtobufCMessage *m = NULL;

	struct bg_call b = {0};
	pthread_create(&b.t, NULL, bg_db_call, &b);
	usleep(200000); /* let the call reach the database */
	rpc_server_shutdown(server, 10000);
	pthread_join(b.t, NULL);
	assert_int_equal(b.rc, 0); /* finished, not cut off */

	int rc = rpc_cstream_next(s, &m, 10000, &st);
	assert_int_equal(rc, MON_EUNAVAIL);
	assert_int_equal(st.code, 14);
	assert_int_equal(atomic_load(&hold_closed), 1);
	rpc_cstream_close(s);

	/* The callback's messages were kept, not dropped, and its status was sent. */
	assert_int_equal(atomic_load(&drain_refused), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(rpc_cstream_next(ds, &m, 10000, &st), 1);
		assert_int_equal((int)((Resp *)m)->status,
		                 GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN);
		protobuf_c_message_free_unpacked(m, NULL);
	}
	assert_int_equal(rpc_cstream_next(ds, &m, 10000, &st), MON_EUNAVAIL);
	assert_int_equal(st.code, 14);
	assert_string_equal(st.message, "drained: resume after 3");
	rpc_cstream_close(ds);
	rpc_channel_close(channel);
	channel = NULL;
	rpc_server_destroy(server);
	server = NULL;
}

static void test_rpc_roles_limits_and_denials(void **state)
{
	struct mon_error err = {0};
	struct rpc_server *srv = NULL;
	struct rpc_server_config cfg;
	rpc_server_config_defaults(&cfg);
	cfg.listen_addr = "127.0.0.1:0";
	cfg.worker_threads = 2;
	assert_int_equal(rpc_server_create(&cfg, &srv, &err), 0);
	rpc_any_fn fns[] = {(rpc_any_fn)h_block, (rpc_any_fn)h_block, (rpc_any_fn)h_stream};
	assert_int_equal(rpc_server_bind(srv, &secured_desc, fns, NULL, 0, &err), 0);
	rpc_health_set(srv, "", RPC_HEALTH_SERVING);
	struct rpc_auth_config ac = {
	        .authenticate = fake_authenticate,
	        .on_deny = fake_deny,
	        .rate_per_s = 0.001, /* the bucket never refills during the test */
	        .rate_burst = 1000,
	        .max_streams_per_caller = 2,
	};
	rpc_server_set_auth(srv, &ac);
	int port = 0;
	assert_int_equal(rpc_server_start(srv, &port, &err), 0);
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	struct rpc_channel *ch = NULL;
	struct rpc_channel_config cc = {.target = addr};
	assert_int_equal(rpc_channel_open(&cc, &ch, &err), 0);
	struct rpc_status st = {0};

	/* No credentials, bad credentials: UNAUTHENTICATED, and the deny hook hears of it. */
	atomic_store(&denials, 0);
	assert_int_equal(call_as(ch, "/test.Secured/Read", NULL, "", &st), MON_EUNAUTH);
	assert_string_equal(st.message, "missing credentials");
	assert_int_equal(call_as(ch, "/test.Secured/Read", "nope", "", &st), MON_EUNAUTH);
	/* The hook runs right after the status is handed to gRPC: the client may see the status first. */
	for (int i = 0; i < 500 && atomic_load(&denials) < 2; i++)
		usleep(10000);
	assert_int_equal(atomic_load(&denials), 2);
	assert_int_equal(atomic_load(&last_denial_code), MON_EUNAUTH);

	/* A viewer reads but may not write; the handler sees who called. */
	assert_int_equal(call_as(ch, "/test.Secured/Read", "viewer-1", "", &st), 0);
	assert_int_equal(call_as(ch, "/test.Secured/Read", "viewer-1", "who", &st), MON_EINVAL);
	assert_string_equal(st.message, "caller=viewer-1 role=viewer");
	assert_int_equal(call_as(ch, "/test.Secured/Write", "viewer-1", "", &st), MON_EPERM);
	assert_string_equal(st.message, "test.Secured/Write requires the editor role; caller \"viewer-1\" has viewer");
	for (int i = 0; i < 500 && atomic_load(&denials) < 3; i++)
		usleep(10000);
	assert_int_equal(atomic_load(&last_denial_code), MON_EPERM);
	assert_int_equal(call_as(ch, "/test.Secured/Write", "editor-1", "", &st), 0);

	/* The standard health service stays open. */
	assert_int_equal(call_as(ch, "/grpc.health.v1.Health/Check", NULL, "", &st), 0);

	/* The stream cap: two open streams per caller, the third refused until one closes. */
	struct rpc_cstream *streams[3] = {0};
	Req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = "hold";
	const char *md[] = {"authorization", "Bearer limited-1"};
	struct rpc_call_options opts = {.metadata = md, .metadata_pairs = 1};
	ProtobufCMessage *m = NULL;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(rpc_cstream_open(ch, "/test.Secured/Watch", &req.base,
		                                  &grpc__health__v1__health_check_response__descriptor, &opts,
		                                  &streams[i], &st),
		                 0);
		int rc = rpc_cstream_next(streams[i], &m, 10000, &st);
		if (i < 2) {
			assert_int_equal(rc, 1);
			protobuf_c_message_free_unpacked(m, NULL);
		} else {
			assert_int_equal(rc, MON_ELIMIT);
			assert_non_null(strstr(st.message, "max-streams-per-caller"));
		}
	}
	rpc_cstream_close(streams[2]);
	atomic_store(&hold_closed, 0);
	rpc_cstream_close(streams[0]);
	for (int i = 0; i < 500 && atomic_load(&hold_closed) == 0; i++)
		usleep(10000);
	assert_int_equal(rpc_cstream_open(ch, "/test.Secured/Watch", &req.base,
	                                  &grpc__health__v1__health_check_response__descriptor, &opts, &streams[0],
	                                  &st),
	                 0);
	assert_int_equal(rpc_cstream_next(streams[0], &m, 10000, &st), 1);
	protobuf_c_message_free_unpacked(m, NULL);
	rpc_cstream_close(streams[0]);
	rpc_cstream_close(streams[1]);

	rpc_channel_close(ch);
	rpc_server_shutdown(srv, 5000);
	rpc_server_destroy(srv);
}

static void test_rpc_rate_limit_answers_resource_exhausted(void **state)
{
	struct mon_error err = {0};
	struct rpc_server *srv = NULL;
	struct rpc_server_config cfg;
	rpc_server_config_defaults(&cfg);
	cfg.listen_addr = "127.0.0.1:0";
	assert_int_equal(rpc_server_create(&cfg, &srv, &err), 0);
	rpc_any_fn fns[] = {(rpc_any_fn)h_block, (rpc_any_fn)h_block, (rpc_any_fn)h_stream};
	assert_int_equal(rpc_server_bind(srv, &secured_desc, fns, NULL, 0, &err), 0);
	struct rpc_auth_config ac = {.authenticate = fake_authenticate, .rate_per_s = 0.001, .rate_burst = 3};
	rpc_server_set_auth(srv, &ac);
	int port = 0;
	assert_int_equal(rpc_server_start(srv, &port, &err), 0);
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	struct rpc_channel *ch = NULL;
	struct rpc_channel_config cc = {.target = addr};
	assert_int_equal(rpc_channel_open(&cc, &ch, &err), 0);
	struct rpc_status st = {0};
	for (int i = 0; i < 3; i++)
		assert_int_equal(call_as(ch, "/test.Secured/Read", "viewer-1", "", &st), 0);
	assert_int_equal(call_as(ch, "/test.Secured/Read", "viewer-1", "", &st), MON_ELIMIT);
	assert_non_null(strstr(st.message, "rate-limit-per-s"));
	/* Another caller has a bucket of its own. */
	assert_int_equal(call_as(ch, "/test.Secured/Read", "editor-1", "", &st), 0);
	rpc_channel_close(ch);
	rpc_server_shutdown(srv, 5000);
	rpc_server_destroy(srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rpc_blocking_handlers_do_not_stall_the_transport),
	        cmocka_unit_test(test_rpc_unary_reply_from_another_thread),
	        cmocka_unit_test(test_rpc_deadline_reaches_the_database),
	        cmocka_unit_test(test_db_session_statement_timeout_without_deadline),
	        cmocka_unit_test(test_rpc_handler_errors_and_unimplemented),
	        cmocka_unit_test(test_rpc_cancellation_reaches_the_handler),
	        cmocka_unit_test(test_rpc_stream_delivers_in_order),
	        cmocka_unit_test(test_rpc_slow_subscriber_is_ended_not_buffered),
	        cmocka_unit_test(test_rpc_cancelled_stream_runs_close_callback),
	        cmocka_unit_test(test_rpc_close_callback_runs_on_the_callbacks_thread),
	        cmocka_unit_test(test_rpc_roles_limits_and_denials),
	        cmocka_unit_test(test_rpc_rate_limit_answers_resource_exhausted),
	        cmocka_unit_test(test_rpc_shutdown_finishes_unary_and_ends_streams),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
