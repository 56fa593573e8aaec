/*
 * The gRPC server core: accepting calls on one completion queue per thread,
 * decoding requests into the call's arena, running handlers (inline or on
 * the worker pool), sending replies and stream messages, and shutting down
 * gracefully. Owns every grpc_call and everything hanging off it.
 *
 * Life of a call: request_call completes (TAG_REQUEST) -> RECV_CLOSE_ON_SERVER
 * starts alone (TAG_CLOSE) and SEND_INITIAL_METADATA + RECV_MESSAGE start
 * together (TAG_RECV) -> the handler runs -> SEND_MESSAGE(s) (TAG_SEND) and
 * SEND_STATUS_FROM_SERVER (TAG_STATUS). A call's batches are decided under
 * its lock and started just after it (call_unlock).
 *
 * Where completions run. A call's arrival comes on a queue thread's queue.
 * The batches of unary and server-streaming calls then complete on callback
 * queues (CALLBACK_CQS of them, calls spread over them in turn): gRPC runs
 * the completion where the batch completed, mostly at the end of the
 * grpc_call_start_batch that started it, so a stream's send completes on
 * the thread that sent, with no queue thread woken per message. Owner
 * callbacks (a stream's close and writable callbacks) never run there:
 * the callbacks thread runs them (owner_callbacks_locked), since the thread
 * that started a batch may hold locks of its own. Other calls (client and
 * bidi streams, unknown methods) complete on their queue thread's queue.
 */
#include "rpc/internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "rpc/status.h"
#include "rpc/validate.h"
#include "util/log.h"

/* Generic requests (unknown methods) and registered ones per method, per queue. */
#define GENERIC_REQUESTS_PER_CQ 8
#define REQUESTS_PER_METHOD_INLINE 32
#define REQUESTS_PER_METHOD 2
#define STREAM_ARENA_FIRST_BLOCK 1024 /* first arena block of a streaming call */
/*
 * Callback queues unary and server-streaming calls are spread over. gRPC
 * (as packaged, with its debug checks) scans a queue's outstanding batches
 * on every completion, and every open stream keeps one outstanding: many
 * queues keep that scan short.
 */
#define CALLBACK_CQS 64

static void call_release(struct rpc_call *c);
static void call_unlock(struct rpc_call *c);
static void request_new_call(struct cq_thread *cqt);
static void on_recv(struct rpc_call *c, bool ok);
static void request_registered_call(struct cq_thread *cqt, const struct bound_method *bm);
static void tag_run(grpc_completion_queue_functor *fn, int ok);

void rpc_server_config_defaults(struct rpc_server_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->listen_addr = "127.0.0.1:50051";
	cfg->cq_threads = 2;
	cfg->worker_threads = 8;
	cfg->max_recv_message_bytes = 4u * 1024 * 1024;
	cfg->max_send_message_bytes = 16u * 1024 * 1024;
	cfg->max_concurrent_streams = 1000;
	cfg->keepalive_min_ping_ms = 60000;
	cfg->keepalive_time_ms = 7200000;
	cfg->keepalive_timeout_ms = 20000;
	cfg->handshake_timeout_ms = 10000;
	cfg->stream_queue_max = 1024;
	cfg->stream_queue_max_bytes = 8u * 1024 * 1024;
	cfg->call_arena_cap_bytes = 64u * 1024 * 1024;
	cfg->max_workers_queue = 10000;
}

/* ---- gRPC's own log lines go through our logger ---- */

static void grpc_log_bridge(gpr_log_func_args *args)
{
	enum log_level lvl = LOG_INFO;
	if (args->severity == GPR_LOG_SEVERITY_ERROR)
		lvl = LOG_ERROR;
	else if (args->severity == GPR_LOG_SEVERITY_DEBUG)
		lvl = LOG_DEBUG;
	log_write(lvl, "msg=\"grpc: %s\" file=%s:%d", args->message, args->file, args->line);
}

/* ---- method table ---- */

static int method_cmp(const void *a, const void *b)
{
	const struct bound_method *x = a, *y = b;
	return strcmp(x->method->path, y->method->path);
}

int rpc_server_bind(struct rpc_server *server, const struct rpc_service_desc *desc, const rpc_any_fn *fns, void *user,
                    unsigned flags, struct mon_error *err)
{
	if (server->started)
		return mon_error_set(err, MON_EPRECOND, "service \"%s\": bind before the server starts", desc->name);
	for (size_t i = 0; i < desc->method_count; i++) {
		if (server->method_count == server->method_cap) {
			size_t cap = server->method_cap ? server->method_cap * 2 : 64;
			struct bound_method *m = realloc(server->methods, cap * sizeof(*m));
			if (m == NULL)
				return mon_error_set(err, MON_ENOMEM, "out of memory binding \"%s\"", desc->name);
			server->methods = m;
			server->method_cap = cap;
		}
		for (size_t j = 0; j < server->method_count; j++)
			if (strcmp(server->methods[j].method->path, desc->methods[i].path) == 0)
				return mon_error_set(err, MON_EEXIST, "method \"%s\" bound twice",
				                     desc->methods[i].path);
		server->methods[server->method_count++] = (struct bound_method){
		        .method = &desc->methods[i],
		        .fn = fns ? fns[i] : NULL,
		        .user = user,
		        .flags = flags,
		};
	}
	return 0;
}

static const struct bound_method *method_find(struct rpc_server *server, grpc_slice path)
{
	char buf[512];
	size_t len = GRPC_SLICE_LENGTH(path);
	if (len >= sizeof(buf))
		return NULL;
	memcpy(buf, GRPC_SLICE_START_PTR(path), len);
	buf[len] = '\0';
	struct rpc_method key_method = {.path = buf};
	struct bound_method key = {.method = &key_method};
	return bsearch(&key, server->methods, server->method_count, sizeof(key), method_cmp);
}

/* ---- context accessors ---- */

struct arena *rpc_ctx_arena(struct rpc_ctx *ctx)
{
	return ctx->arena;
}

struct mon_error *rpc_ctx_error(struct rpc_ctx *ctx)
{
	return &ctx->err;
}

int64_t rpc_ctx_remaining_ms(const struct rpc_ctx *ctx)
{
	if (gpr_time_cmp(ctx->deadline, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0)
		return INT64_MAX;
	gpr_timespec left = gpr_time_sub(ctx->deadline, gpr_now(GPR_CLOCK_MONOTONIC));
	return (int64_t)left.tv_sec * 1000 + left.tv_nsec / 1000000;
}

bool rpc_ctx_is_cancelled(const struct rpc_ctx *ctx)
{
	if (atomic_load(&ctx->call->cancelled))
		return true;
	return rpc_ctx_remaining_ms(ctx) <= 0;
}

const char *rpc_ctx_metadata(struct rpc_ctx *ctx, const char *key)
{
	grpc_metadata_array *md = &ctx->call->request_md;
	size_t klen = strlen(key);
	if (klen > 4 && strcmp(key + klen - 4, "-bin") == 0)
		return NULL;
	for (size_t i = 0; i < md->count; i++) {
		grpc_slice k = md->metadata[i].key;
		if (GRPC_SLICE_LENGTH(k) == klen && memcmp(GRPC_SLICE_START_PTR(k), key, klen) == 0) {
			grpc_slice v = md->metadata[i].value;
			return arena_strndup(ctx->arena, (const char *)GRPC_SLICE_START_PTR(v), GRPC_SLICE_LENGTH(v));
		}
	}
	return NULL;
}

const char *rpc_ctx_peer(const struct rpc_ctx *ctx)
{
	/* Asked for lazily: most calls never need it, and it costs an allocation. */
	struct rpc_call *c = ctx->call;
	pthread_mutex_lock(&c->lock);
	if (c->ctx.peer == NULL && c->call != NULL)
		c->ctx.peer = grpc_call_get_peer(c->call);
	call_unlock(c);
	return ctx->peer ? ctx->peer : "unknown";
}

const char *rpc_ctx_request_id(const struct rpc_ctx *ctx)
{
	return ctx->request_id;
}

const char *rpc_ctx_method(const struct rpc_ctx *ctx)
{
	return ctx->method;
}

const ProtobufCMessage *rpc_ctx_request(const struct rpc_ctx *ctx)
{
	return ctx->request;
}

ProtobufCMessage *rpc_ctx_response(struct rpc_ctx *ctx)
{
	return ctx->response;
}

void *rpc_ctx_user(const struct rpc_ctx *ctx)
{
	return ctx->user;
}

int rpc_ctx_add_trailer(struct rpc_ctx *ctx, const char *key, const char *value)
{
	if (key == NULL || key[0] == '\0' || value == NULL)
		return MON_EINVAL;
	for (const char *k = key; *k; k++)
		if (!((*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') || *k == '-' || *k == '_' || *k == '.'))
			return MON_EINVAL;
	for (const char *v = value; *v; v++)
		if ((unsigned char)*v < 0x20 || (unsigned char)*v > 0x7e)
			return MON_EINVAL;
	/* The status may be sent by another thread: trailers change under the call lock. */
	int rc = 0;
	pthread_mutex_lock(&ctx->call->lock);
	if (ctx->trailer_count >= RPC_MAX_TRAILERS || ctx->call->status_started) {
		rc = MON_ELIMIT;
		goto out;
	}
	if (ctx->trailers == NULL)
		ctx->trailers = arena_calloc(ctx->call_arena, RPC_MAX_TRAILERS, sizeof(*ctx->trailers));
	char *k = arena_strdup(ctx->call_arena, key);
	char *v = arena_strdup(ctx->call_arena, value);
	if (ctx->trailers == NULL || k == NULL || v == NULL) {
		rc = MON_ENOMEM;
		goto out;
	}
	/* Static slices over arena memory: valid until the call is freed. */
	ctx->trailers[ctx->trailer_count].key = grpc_slice_from_static_string(k);
	ctx->trailers[ctx->trailer_count].value = grpc_slice_from_static_string(v);
	ctx->trailer_count++;
out:
	pthread_mutex_unlock(&ctx->call->lock);
	return rc;
}

int rpc_fail(struct rpc_ctx *ctx, int code, const char *fmt, ...)
{
	ctx->err.code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ctx->err.msg, sizeof(ctx->err.msg), fmt, ap);
	va_end(ap);
	return code;
}

const struct rpc_identity *rpc_ctx_identity(const struct rpc_ctx *ctx)
{
	return ctx->has_identity ? &ctx->identity : NULL;
}

const char *rpc_role_name(enum rpc_role role)
{
	switch (role) {
	case RPC_ROLE_VIEWER: return "viewer";
	case RPC_ROLE_EDITOR: return "editor";
	case RPC_ROLE_ADMIN: return "admin";
	default: return "none";
	}
}

/* ---- authentication, roles and per-caller limits ---- */

void rpc_server_set_auth(struct rpc_server *server, const struct rpc_auth_config *cfg)
{
	server->auth = *cfg;
	if (server->auth.rate_per_s > 0 && server->auth.rate_burst < 1)
		server->auth.rate_burst = server->auth.rate_per_s < 1 ? 1 : server->auth.rate_per_s;
	server->has_auth = cfg->authenticate != NULL;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Lock held: the limit entry of a caller, made on first use; NULL when out of memory. */
static struct caller_limit *limit_get_locked(struct rpc_server *srv, const char *caller_id)
{
	unsigned h = 5381;
	for (const char *p = caller_id; *p; p++)
		h = h * 33 + (unsigned char)*p;
	struct caller_limit **slot = &srv->limits[h % 256];
	for (struct caller_limit *l = *slot; l; l = l->next)
		if (strcmp(l->caller_id, caller_id) == 0)
			return l;
	struct caller_limit *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return NULL;
	snprintf(l->caller_id, sizeof(l->caller_id), "%s", caller_id);
	l->tokens = srv->auth.rate_burst;
	l->refilled_at_s = now_s();
	l->next = *slot;
	*slot = l;
	return l;
}

/* The verified client certificate's common name, copied into the arena; NULL when none. */
static const char *cert_subject(struct rpc_call *c)
{
	grpc_auth_context *actx = grpc_call_auth_context(c->call);
	if (actx == NULL)
		return NULL;
	const char *out = NULL;
	grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(actx, GRPC_X509_CN_PROPERTY_NAME);
	const grpc_auth_property *prop = grpc_auth_property_iterator_next(&it);
	if (prop != NULL && prop->value != NULL)
		out = arena_strndup(c->ctx.arena, prop->value, prop->value_length);
	grpc_auth_context_release(actx);
	return out;
}

/* The bearer token of "authorization: Bearer <token>", in the arena; NULL when none. */
static const char *bearer_token(struct rpc_ctx *ctx)
{
	const char *h = rpc_ctx_metadata(ctx, "authorization");
	if (h == NULL || strncasecmp(h, "bearer ", 7) != 0)
		return NULL;
	h += 7;
	while (*h == ' ')
		h++;
	return *h ? h : NULL;
}

/*
 * Decides whether the call may go on: authenticates the caller when the
 * method needs a role (or credentials came anyway), checks the role, the
 * rate and the stream cap. Returns 0, or a MON_E* code with msg filled;
 * *denied_req is then what the deny hook must hear of. Runs before the call
 * lock is taken.
 */
static int authorize(struct rpc_call *c, struct rpc_auth_request *areq, char *msg, size_t msg_len)
{
	struct rpc_server *srv = c->server;
	struct rpc_ctx *ctx = &c->ctx;
	int needed = c->bm ? c->bm->method->min_role : RPC_ROLE_VIEWER;
	if (needed == RPC_ROLE_NONE && srv->auth.protect_standard)
		needed = RPC_ROLE_VIEWER;
	if (needed == RPC_ROLE_NONE)
		return 0;

	*areq = (struct rpc_auth_request){
	        .method = ctx->method,
	        .min_role = needed,
	        .bearer_token = bearer_token(ctx),
	        .peer = rpc_ctx_peer(ctx),
	        .user_agent = rpc_ctx_metadata(ctx, "user-agent"),
	        .request_id = ctx->request_id,
	};
	if (areq->bearer_token == NULL)
		areq->cert_subject = cert_subject(c);

	struct mon_error err = {0};
	int arc = srv->auth.authenticate(srv->auth.arg, areq, &ctx->identity, &err);
	if (arc != 0) {
		snprintf(msg, msg_len, "%s", err.msg[0] ? err.msg : "authentication failed");
		/* Credentials that cannot be checked yet are not refused: retryable. */
		return arc == MON_EUNAVAIL ? MON_EUNAVAIL : MON_EUNAUTH;
	}
	ctx->has_identity = true;
	if ((int)ctx->identity.role < needed) {
		snprintf(msg, msg_len, "%s requires the %s role; caller \"%s\" has %s", ctx->method + 1,
		         rpc_role_name((enum rpc_role)needed), ctx->identity.caller_id,
		         rpc_role_name(ctx->identity.role));
		return MON_EPERM;
	}

	if (srv->auth.rate_per_s <= 0 &&
	    (srv->auth.max_streams_per_caller <= 0 || c->bm == NULL || c->bm->method->kind == RPC_UNARY))
		return 0;
	int rc = 0;
	long pushback_ms = 0;
	pthread_mutex_lock(&srv->limits_lock);
	struct caller_limit *l = limit_get_locked(srv, ctx->identity.caller_id);
	if (l != NULL && srv->auth.rate_per_s > 0) {
		double t = now_s();
		l->tokens += (t - l->refilled_at_s) * srv->auth.rate_per_s;
		if (l->tokens > srv->auth.rate_burst)
			l->tokens = srv->auth.rate_burst;
		l->refilled_at_s = t;
		if (l->tokens < 1) {
			pushback_ms = (long)((1 - l->tokens) / srv->auth.rate_per_s * 1000) + 1;
			snprintf(msg, msg_len,
			         "rate limit: %g calls per second per caller (rate-limit-per-s); retry in %ld ms",
			         srv->auth.rate_per_s, pushback_ms);
			rc = MON_ELIMIT;
		} else {
			l->tokens -= 1;
		}
	}
	if (rc == 0 && l != NULL && srv->auth.max_streams_per_caller > 0 && c->bm != NULL &&
	    c->bm->method->kind != RPC_UNARY) {
		if (l->open_streams >= srv->auth.max_streams_per_caller) {
			snprintf(msg, msg_len, "stream limit: %d open streams per caller (max-streams-per-caller)",
			         srv->auth.max_streams_per_caller);
			rc = MON_ELIMIT;
		} else {
			l->open_streams++;
			c->counted_stream = l;
		}
	}
	pthread_mutex_unlock(&srv->limits_lock);
	if (pushback_ms > 0) {
		char v[32];
		snprintf(v, sizeof(v), "%ld", pushback_ms);
		if (rpc_ctx_add_trailer(ctx, "grpc-retry-pushback-ms", v) != 0)
			log_warn("msg=\"could not add the retry hint\"");
	}
	return rc;
}

/* ---- request ids ---- */

static bool request_id_valid(const char *s, size_t len)
{
	if (len == 0 || len > 63)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch < 0x21 || ch > 0x7e)
			return false;
	}
	return true;
}

static void request_id_generate(char *out, size_t out_len)
{
	static _Thread_local uint64_t state;
	if (state == 0) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		state = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^
		        (uint64_t)(uintptr_t)&state;
	}
	/* xorshift64*: ids must be unique enough to correlate logs, not secret. */
	state ^= state >> 12;
	state ^= state << 25;
	state ^= state >> 27;
	uint64_t v = state * 2685821657736338717ULL;
	snprintf(out, out_len, "%016" PRIx64, v);
}

/* ---- batches ---- */

/*
 * Batches are started after the call's lock is let go, never under it: on
 * a callback queue (server streams) gRPC may run the completion of a batch,
 * or of another call's, at the end of grpc_call_start_batch on the thread
 * that started it, and the completion takes the call's lock. A locked
 * section records its batches here (start_batch_locked, counted as
 * pending at once) and call_unlock starts them in order. A thread holds at
 * most one call's lock at a time, so the list is that call's.
 */
#define DEFERRED_BATCHES_MAX 8

struct deferred_batch {
	struct rpc_call *c;
	grpc_op ops[4];
	size_t n;
	struct rpc_tag *tag;
};

static _Thread_local struct deferred_batch deferred[DEFERRED_BATCHES_MAX];
static _Thread_local size_t deferred_n;

/* A batch gRPC refused: a bug of ours. Ends the call rather than leave it waiting forever. */
static void batch_refused(struct rpc_call *c, grpc_call_error e)
{
	log_error("msg=\"could not start batch\" method=%s error=%d", c->ctx.method ? c->ctx.method : "?", e);
	grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "internal error", NULL);
	pthread_mutex_lock(&c->lock);
	c->pending--;
	bool done = c->pending == 0 && c->close_received;
	call_unlock(c);
	if (done)
		call_release(c);
}

/*
 * Starts the recorded batches in order. A started batch's completion may
 * have freed its call by the time grpc_call_start_batch returns: nothing
 * here touches the call after a successful start.
 */
static void batches_flush(void)
{
	while (deferred_n > 0) {
		struct deferred_batch b = deferred[0];
		deferred_n--;
		memmove(&deferred[0], &deferred[1], deferred_n * sizeof(deferred[0]));
		grpc_call_error e = grpc_call_start_batch(b.c->call, b.ops, b.n, b.tag, NULL);
		if (e != GRPC_CALL_OK)
			batch_refused(b.c, e);
	}
}

/*
 * Lets the call's lock go and starts the batches its section recorded. A
 * started batch may complete, and end the call, before this returns: a
 * caller that touches the call afterwards holds a reference of its own
 * (a worker's, a stream owner's, on_request's).
 */
static void call_unlock(struct rpc_call *c)
{
	pthread_mutex_unlock(&c->lock);
	if (deferred_n > 0)
		batches_flush();
}

/* Call lock held: records the batch, started by call_unlock. */
static void start_batch_locked(struct rpc_call *c, const grpc_op *ops, size_t n, struct rpc_tag *tag)
{
	if (deferred_n == DEFERRED_BATCHES_MAX || n > sizeof(deferred[0].ops) / sizeof(deferred[0].ops[0])) {
		/* cannot happen: a section starts at most three batches */
		log_error("msg=\"too many batches in one section\" method=%s", c->ctx.method ? c->ctx.method : "?");
		grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "internal error", NULL);
		return;
	}
	struct deferred_batch *b = &deferred[deferred_n++];
	b->c = c;
	memcpy(b->ops, ops, n * sizeof(*ops));
	b->n = n;
	b->tag = tag;
	c->pending++;
}

/* Starts RECV_CLOSE_ON_SERVER alone. */
static void start_close_locked(struct rpc_call *c)
{
	c->close_in_status = false;
	grpc_op op;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	op.data.recv_close_on_server.cancelled = &c->close_cancelled;
	start_batch_locked(c, &op, 1, &c->t_close);
}

/* Adds SEND_INITIAL_METADATA to ops if not sent yet; returns ops used. */
static size_t add_initial_md_locked(struct rpc_call *c, grpc_op *ops)
{
	if (c->initial_md_sent)
		return 0;
	c->initial_md_sent = true;
	memset(ops, 0, sizeof(*ops));
	ops->op = GRPC_OP_SEND_INITIAL_METADATA;
	ops->data.send_initial_metadata.count = 1;
	ops->data.send_initial_metadata.metadata = c->initial_md;
	return 1;
}

/* Starts the final status batch (with an optional last message). */
static void send_status_locked(struct rpc_call *c, int mon_code, const char *message, grpc_byte_buffer *msg)
{
	if (c->status_started || c->close_received) {
		if (msg)
			grpc_byte_buffer_destroy(msg);
		if (!c->status_started)
			c->final_code = GRPC_STATUS_CANCELLED;
		return;
	}
	c->status_started = true;
	c->final_code = rpc_status_from_mon(mon_code);
	grpc_op ops[4];
	size_t n = add_initial_md_locked(c, ops);
	if (msg) {
		memset(&ops[n], 0, sizeof(ops[n]));
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n].data.send_message.send_message = msg;
		c->send_buf = msg;
		n++;
	}
	if (message && message[0]) {
		c->status_details = grpc_slice_from_copied_string(message);
		c->has_status_details = true;
	}
	memset(&ops[n], 0, sizeof(ops[n]));
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = (grpc_status_code)c->final_code;
	ops[n].data.send_status_from_server.status_details = c->has_status_details ? &c->status_details : NULL;
	ops[n].data.send_status_from_server.trailing_metadata_count = c->ctx.trailer_count;
	ops[n].data.send_status_from_server.trailing_metadata = c->ctx.trailer_count ? c->ctx.trailers : NULL;
	n++;
	if (c->close_in_status) {
		memset(&ops[n], 0, sizeof(ops[n]));
		ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
		ops[n].data.recv_close_on_server.cancelled = &c->close_cancelled;
		n++;
	}
	start_batch_locked(c, ops, n, &c->t_status);
}

/* Client and bidi streams: starts the next RECV_MESSAGE unless the call is ending. */
static void recv_next_locked(struct rpc_call *c)
{
	c->recv_deferred = false;
	if (c->close_received || c->status_started || c->finish_requested)
		return;
	grpc_op op;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &c->recv_buf;
	start_batch_locked(c, &op, 1, &c->t_recv);
}

/* Starts SEND_MESSAGE of bytes (a reference it takes over). Call lock held, no send in flight. */
static void start_send_locked(struct rpc_call *c, grpc_slice bytes)
{
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&bytes, 1);
	grpc_slice_unref(bytes);
	grpc_op ops[2];
	size_t n = add_initial_md_locked(c, ops);
	memset(&ops[n], 0, sizeof(ops[n]));
	ops[n].op = GRPC_OP_SEND_MESSAGE;
	ops[n].data.send_message.send_message = bb;
	n++;
	c->send_buf = bb;
	c->send_in_flight = true;
	start_batch_locked(c, ops, n, &c->t_send);
}

static void send_next_locked(struct rpc_call *c)
{
	if (c->send_in_flight || c->status_started || c->close_received)
		return;
	struct send_node *node = c->q_head;
	if (node == NULL) {
		if (c->finish_requested)
			send_status_locked(c, c->fin_code, c->fin_msg ? c->fin_msg : "", NULL);
		return;
	}
	c->q_head = node->next;
	if (c->q_head == NULL)
		c->q_tail = NULL;
	c->q_len--;
	c->q_bytes -= GRPC_SLICE_LENGTH(node->bytes);
	grpc_slice bytes = node->bytes;
	free(node);
	pthread_cond_broadcast(&c->drained);
	start_send_locked(c, bytes);
}

static void queue_free_locked(struct rpc_call *c)
{
	while (c->q_head) {
		struct send_node *n = c->q_head;
		c->q_head = n->next;
		grpc_slice_unref(n->bytes);
		free(n);
	}
	c->q_tail = NULL;
	c->q_len = 0;
	c->q_bytes = 0;
}

/* Packs msg into a new byte buffer; NULL when the message is too big. */
static grpc_byte_buffer *pack_message(struct rpc_server *srv, const ProtobufCMessage *msg, int *code)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	if (len > srv->cfg.max_send_message_bytes) {
		*code = MON_ELIMIT;
		return NULL;
	}
	grpc_slice s = grpc_slice_malloc(len);
	protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	return bb;
}

/* ---- live streams list (for shutdown) ---- */

/* Lists an open stream; false once shutdown has ended the streams. */
static bool live_add(struct rpc_call *c)
{
	struct rpc_server *srv = c->server;
	pthread_mutex_lock(&srv->live_lock);
	if (srv->live_closed) {
		pthread_mutex_unlock(&srv->live_lock);
		return false;
	}
	c->live_prev = NULL;
	c->live_next = srv->live_head;
	if (srv->live_head)
		srv->live_head->live_prev = c;
	srv->live_head = c;
	c->in_live_list = true;
	pthread_mutex_unlock(&srv->live_lock);
	return true;
}

static void live_remove(struct rpc_call *c)
{
	struct rpc_server *srv = c->server;
	pthread_mutex_lock(&srv->live_lock);
	if (c->in_live_list) {
		if (c->live_prev)
			c->live_prev->live_next = c->live_next;
		else
			srv->live_head = c->live_next;
		if (c->live_next)
			c->live_next->live_prev = c->live_prev;
		c->in_live_list = false;
	}
	pthread_mutex_unlock(&srv->live_lock);
}

/* ---- streams ---- */

struct rpc_ctx *rpc_stream_ctx(struct rpc_stream *s)
{
	return &stream_call(s)->ctx;
}

struct rpc_packed {
	grpc_slice bytes;
};

int rpc_packed_create(const ProtobufCMessage *msg, struct rpc_packed **out)
{
	*out = NULL;
	struct rpc_packed *p = malloc(sizeof(*p));
	if (p == NULL)
		return MON_ENOMEM;
	size_t len = protobuf_c_message_get_packed_size(msg);
	p->bytes = grpc_slice_malloc(len);
	protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(p->bytes));
	*out = p;
	return 0;
}

void rpc_packed_release(struct rpc_packed *p)
{
	if (p == NULL)
		return;
	grpc_slice_unref(p->bytes);
	free(p);
}

/* Queues bytes (a reference the queue takes over) on the stream; see rpc_stream_send. */
static int stream_enqueue_slice(struct rpc_call *c, grpc_slice bytes, bool wait)
{
	size_t len = GRPC_SLICE_LENGTH(bytes);
	if (len > c->server->cfg.max_send_message_bytes) {
		grpc_slice_unref(bytes);
		return MON_ENOMEM; /* over the hard cap: it can never be sent (MON_ELIMIT says "wait for room") */
	}
	int rc = 0;
	pthread_mutex_lock(&c->lock);
	for (;;) {
		if (c->close_received || c->finish_requested || c->status_started) {
			rc = MON_ECANCELLED;
			break;
		}
		if (c->q_len < c->server->cfg.stream_queue_max &&
		    (c->q_len == 0 || c->q_bytes + len <= c->server->cfg.stream_queue_max_bytes))
			break;
		if (!wait) {
			rc = MON_ELIMIT;
			break;
		}
		int64_t left = rpc_ctx_remaining_ms(&c->ctx);
		if (left <= 0) {
			rc = MON_EDEADLINE;
			break;
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		int64_t step_ms = left < 1000 ? left : 1000;
		ts.tv_sec += step_ms / 1000;
		ts.tv_nsec += (step_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->drained, &c->lock, &ts);
	}
	if (rc == 0 && c->q_head == NULL && !c->send_in_flight) {
		start_send_locked(c, bytes); /* nothing ahead of it: no queue node */
	} else if (rc == 0) {
		struct send_node *node = malloc(sizeof(*node));
		if (node == NULL) {
			rc = MON_ENOMEM;
		} else {
			*node = (struct send_node){.next = NULL, .bytes = bytes};
			if (c->q_tail)
				c->q_tail->next = node;
			else
				c->q_head = node;
			c->q_tail = node;
			c->q_len++;
			c->q_bytes += len;
		}
	}
	call_unlock(c);
	if (rc != 0)
		grpc_slice_unref(bytes);
	return rc;
}

static int stream_enqueue(struct rpc_call *c, const ProtobufCMessage *msg, bool wait)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	if (len > c->server->cfg.max_send_message_bytes)
		return MON_ENOMEM;
	grpc_slice bytes = grpc_slice_malloc(len);
	protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(bytes));
	return stream_enqueue_slice(c, bytes, wait);
}

int rpc_stream_send(struct rpc_stream *s, const ProtobufCMessage *msg)
{
	return stream_enqueue(stream_call(s), msg, false);
}

int rpc_stream_send_wait(struct rpc_stream *s, const ProtobufCMessage *msg)
{
	return stream_enqueue(stream_call(s), msg, true);
}

int rpc_stream_send_packed(struct rpc_stream *s, const struct rpc_packed *p)
{
	/* Slices are reference counted: every stream shares the one buffer. */
	return stream_enqueue_slice(stream_call(s), grpc_slice_ref(p->bytes), false);
}

void rpc_stream_finish(struct rpc_stream *s, int code, const char *message)
{
	struct rpc_call *c = stream_call(s);
	pthread_mutex_lock(&c->lock);
	if (!c->finish_requested && !c->status_started) {
		c->finish_requested = true;
		c->fin_code = code;
		/* Kept off the call struct, which every idle stream carries: allocated only when finishing. */
		c->fin_msg = message && message[0] ? strndup(message, 511) : NULL;
		send_next_locked(c);
	}
	pthread_cond_broadcast(&c->drained);
	call_unlock(c);
}

size_t rpc_stream_queued(struct rpc_stream *s)
{
	struct rpc_call *c = stream_call(s);
	pthread_mutex_lock(&c->lock);
	size_t n = c->q_len;
	call_unlock(c);
	return n;
}

bool rpc_stream_is_closed(struct rpc_stream *s)
{
	struct rpc_call *c = stream_call(s);
	pthread_mutex_lock(&c->lock);
	bool closed = c->close_received || c->finish_requested || c->status_started;
	call_unlock(c);
	return closed;
}

void rpc_stream_on_close(struct rpc_stream *s, void (*cb)(struct rpc_stream *s, void *arg), void *arg)
{
	struct rpc_call *c = stream_call(s);
	bool run_now = false;
	pthread_mutex_lock(&c->lock);
	if (c->close_received && !c->on_close_ran) {
		c->on_close_ran = true;
		run_now = true;
	} else {
		c->on_close = cb;
		c->on_close_arg = arg;
	}
	call_unlock(c);
	if (run_now)
		cb(s, arg);
}

/* True when the queue has drained to half its limits, so a parked producer may go on. Under c->lock. */
static bool has_room_locked(const struct rpc_call *c)
{
	return c->q_len <= c->server->cfg.stream_queue_max / 2 &&
	       c->q_bytes <= c->server->cfg.stream_queue_max_bytes / 2;
}

/* Takes the armed writable callback when it is due. Under c->lock; the caller runs it unlocked. */
static bool take_writable_locked(struct rpc_call *c, void (**cb)(struct rpc_stream *, void *), void **arg)
{
	if (c->on_writable == NULL)
		return false;
	bool is_over = c->close_received || c->status_started || c->finish_requested;
	if (!is_over && !has_room_locked(c))
		return false;
	*cb = c->on_writable;
	*arg = c->on_writable_arg;
	c->on_writable = NULL;
	c->on_writable_arg = NULL;
	return true;
}

void rpc_stream_on_writable(struct rpc_stream *s, void (*cb)(struct rpc_stream *s, void *arg), void *arg)
{
	struct rpc_call *c = stream_call(s);
	void (*run)(struct rpc_stream *, void *) = NULL;
	void *run_arg = NULL;
	pthread_mutex_lock(&c->lock);
	c->on_writable = cb;
	c->on_writable_arg = arg;
	bool is_due = take_writable_locked(c, &run, &run_arg);
	call_unlock(c);
	if (is_due)
		run(s, run_arg);
}

void rpc_stream_retain(struct rpc_stream *s)
{
	struct rpc_call *c = stream_call(s);
	pthread_mutex_lock(&c->lock);
	c->refs++;
	call_unlock(c);
}

void rpc_stream_release(struct rpc_stream *s)
{
	call_release(stream_call(s));
}

/* ---- call lifetime ---- */

static void call_log(struct rpc_call *c)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	double ms = (double)(now.tv_sec - c->started.tv_sec) * 1e3 + (double)(now.tv_nsec - c->started.tv_nsec) / 1e6;
	enum log_level lvl = LOG_INFO;
	if (c->final_code == GRPC_STATUS_INTERNAL || c->final_code == GRPC_STATUS_UNKNOWN ||
	    c->final_code == GRPC_STATUS_DATA_LOSS)
		lvl = LOG_ERROR;
	if (lvl < log_get_level())
		return;
	const char *method = c->ctx.method ? c->ctx.method : "?";
	if (c->final_code != GRPC_STATUS_OK && c->has_status_details) {
		char detail[256];
		size_t dl = GRPC_SLICE_LENGTH(c->status_details);
		if (dl >= sizeof(detail))
			dl = sizeof(detail) - 1;
		memcpy(detail, GRPC_SLICE_START_PTR(c->status_details), dl);
		detail[dl] = '\0';
		for (size_t i = 0; i < dl; i++)
			if (detail[i] == '"' || detail[i] == '\n')
				detail[i] = '\'';
		log_write(lvl, "msg=rpc method=%s code=%s duration_ms=%.3f peer=%s request_id=%s error=\"%s\"", method,
		          rpc_status_name(c->final_code), ms, rpc_ctx_peer(&c->ctx), c->ctx.request_id, detail);
	} else {
		log_write(lvl, "msg=rpc method=%s code=%s duration_ms=%.3f peer=%s request_id=%s", method,
		          rpc_status_name(c->final_code), ms, rpc_ctx_peer(&c->ctx), c->ctx.request_id);
	}
}

static void call_free(struct rpc_call *c)
{
	live_remove(c);
	if (c->ctx.method)
		call_log(c);
	queue_free_locked(c);
	if (c->recv_buf)
		grpc_byte_buffer_destroy(c->recv_buf);
	if (c->send_buf)
		grpc_byte_buffer_destroy(c->send_buf);
	if (c->has_status_details)
		grpc_slice_unref(c->status_details);
	grpc_slice_unref(c->request_id_slice);
	if (c->call)
		grpc_call_unref(c->call);
	grpc_call_details_destroy(&c->details);
	grpc_metadata_array_destroy(&c->request_md);
	if (c->ctx.peer)
		gpr_free(c->ctx.peer);
	free(c->fin_msg);
	arena_destroy(c->ctx.arena);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->drained);
	free(c);
}

static void call_release(struct rpc_call *c)
{
	pthread_mutex_lock(&c->lock);
	int refs = --c->refs;
	call_unlock(c);
	if (refs == 0)
		call_free(c);
}

static struct rpc_call *call_new(struct cq_thread *cqt)
{
	struct rpc_call *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->server = cqt->server;
	c->cqt = cqt;
	c->refs = 1;
	struct rpc_tag *tags[] = {&c->t_request, &c->t_close, &c->t_recv, &c->t_send, &c->t_status, &c->t_initial};
	enum tag_kind kinds[] = {TAG_REQUEST, TAG_CLOSE, TAG_RECV, TAG_SEND, TAG_STATUS, TAG_INITIAL};
	for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
		*tags[i] =
		        (struct rpc_tag){.fn = {.functor_run = tag_run, .inlineable = 1}, .kind = kinds[i], .call = c};
	c->request_id_slice = grpc_empty_slice();
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->drained, NULL);
	grpc_call_details_init(&c->details);
	grpc_metadata_array_init(&c->request_md);
	atomic_init(&c->cancelled, false);
	return c;
}

static void request_new_call(struct cq_thread *cqt)
{
	struct rpc_server *srv = cqt->server;
	if (atomic_load(&srv->shutting_down))
		return;
	struct rpc_call *c = call_new(cqt);
	if (c == NULL) {
		log_error("msg=\"out of memory accepting a call\"");
		return;
	}
	grpc_call_error e = grpc_server_request_call(srv->server, &c->call, &c->details, &c->request_md, cqt->cq,
	                                             cqt->cq, &c->t_request);
	if (e != GRPC_CALL_OK) {
		log_error("msg=\"could not request a call\" error=%d", e);
		call_free(c);
	}
}

/*
 * Asks for the next call of a registered method. Unary and server-streaming
 * calls arrive with their request message, which saves a batch per call.
 */
static void request_registered_call(struct cq_thread *cqt, const struct bound_method *bm)
{
	struct rpc_server *srv = cqt->server;
	if (atomic_load(&srv->shutting_down))
		return;
	struct rpc_call *c = call_new(cqt);
	if (c == NULL) {
		log_error("msg=\"out of memory accepting a call\"");
		return;
	}
	c->reg = bm;
	bool has_payload = bm->method->kind == RPC_UNARY || bm->method->kind == RPC_SERVER_STREAMING;
	/* A server stream's or unary call's batches complete on a callback queue, its arrival on cqt's. */
	grpc_completion_queue *bound = cqt->cq;
	if ((bm->method->kind == RPC_SERVER_STREAMING || bm->method->kind == RPC_UNARY) && srv->cb_cq_count > 0)
		bound = srv->cb_cqs[atomic_fetch_add(&srv->cb_cq_next, 1) % (unsigned)srv->cb_cq_count];
	grpc_call_error e = grpc_server_request_registered_call(srv->server, bm->registered, &c->call, &c->reg_deadline,
	                                                        &c->request_md, has_payload ? &c->recv_buf : NULL,
	                                                        bound, cqt->cq, &c->t_request);
	if (e != GRPC_CALL_OK) {
		log_error("msg=\"could not request a call\" method=%s error=%d", bm->method->path, e);
		call_free(c);
	}
}

/* ---- running handlers ---- */

/* Sends a unary call's answer: resp (filled) when rc is 0, else the failure in the call's error slot. */
static void unary_reply(struct rpc_call *c, int rc, const ProtobufCMessage *resp)
{
	const struct rpc_method *m = c->bm->method;
	struct rpc_ctx *ctx = &c->ctx;
	grpc_byte_buffer *bb = NULL;
	if (rc == 0 && (bb = pack_message(c->server, resp, &rc)) == NULL)
		rpc_fail(ctx, rc, "response exceeds max-send-message-bytes (%zu)",
		         c->server->cfg.max_send_message_bytes);
	if (rc < 0 && ctx->err.code == 0)
		rpc_fail(ctx, rc, "%s failed", m->name);
	if (rc < 0 && ctx->err.msg[0] == '\0')
		snprintf(ctx->err.msg, sizeof(ctx->err.msg), "%s failed", m->name);
	pthread_mutex_lock(&c->lock);
	send_status_locked(c, rc < 0 ? rc : 0, rc < 0 ? ctx->err.msg : NULL, bb);
	call_unlock(c);
}

void rpc_reply_later(struct rpc_ctx *ctx)
{
	struct rpc_call *c = ctx->call;
	pthread_mutex_lock(&c->lock);
	c->refs++;
	call_unlock(c);
}

void rpc_reply_finish(struct rpc_ctx *ctx, int code)
{
	struct rpc_call *c = ctx->call;
	unary_reply(c, code < 0 ? code : 0, ctx->response);
	call_release(c);
}

static void run_handler(struct rpc_call *c, const ProtobufCMessage *req)
{
	const struct bound_method *bm = c->bm;
	const struct rpc_method *m = bm->method;
	struct rpc_ctx *ctx = &c->ctx;
	mon_error_clear(&ctx->err);
	ctx->request = req;

	if (m->kind == RPC_UNARY) {
		int rc;
		ProtobufCMessage *resp = NULL;
		if (rpc_ctx_is_cancelled(ctx)) {
			rc = atomic_load(&c->cancelled)
			             ? MON_ECANCELLED
			             : rpc_fail(ctx, MON_EDEADLINE, "deadline exceeded before the call started");
		} else {
			resp = arena_alloc(ctx->arena, m->output->sizeof_message);
			if (resp == NULL) {
				rc = rpc_fail(ctx, MON_ENOMEM, "request too large: per-call memory limit reached");
			} else {
				m->output->message_init(resp);
				ctx->response = resp;
				rc = m->trampoline(ctx, bm->fn, req, resp);
				/* Another thread owns the call now (rpc_reply_later): touch nothing. */
				if (rc == RPC_REPLY_LATER)
					return;
			}
		}
		unary_reply(c, rc, resp);
		return;
	}

	/*
	 * Streaming: the stream stays open until finished or cancelled. One
	 * that arrived past its deadline is answered as a unary call is, before
	 * its handler reads anything.
	 */
	int rc = 0;
	if (rpc_ctx_is_cancelled(ctx))
		rc = atomic_load(&c->cancelled)
		             ? MON_ECANCELLED
		             : rpc_fail(ctx, MON_EDEADLINE, "deadline exceeded before the call started");
	else
		rc = m->trampoline(ctx, bm->fn, req, call_stream(c));
	if (rc < 0) {
		if (ctx->err.msg[0] == '\0')
			snprintf(ctx->err.msg, sizeof(ctx->err.msg), "%s failed", m->name);
		rpc_stream_finish(call_stream(c), rc, ctx->err.msg);
	}
}

/* Decodes the received message and runs the handler; call holds a ref for us. */
static void dispatch_message(struct rpc_call *c)
{
	const struct rpc_method *m = c->bm->method;
	struct rpc_ctx *ctx = &c->ctx;
	grpc_byte_buffer *bb = c->recv_buf;
	c->recv_buf = NULL;
	bool is_client_stream = m->kind == RPC_CLIENT_STREAMING || m->kind == RPC_BIDI_STREAMING;
	struct arena *msg_arena = NULL;
	if (is_client_stream) {
		/* Each message of a long stream gets scratch of its own, freed after it. */
		msg_arena = arena_create(c->server->cfg.call_arena_cap_bytes);
		if (msg_arena != NULL)
			ctx->arena = msg_arena;
	}

	grpc_byte_buffer_reader reader;
	ProtobufCMessage *req = NULL;
	bool is_refused = false;
	if (grpc_byte_buffer_reader_init(&reader, bb)) {
		grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
		grpc_byte_buffer_reader_destroy(&reader);
		/* Every string field is checked before decoding hides a NUL in it (see validate.h). */
		is_refused = rpc_validate_request(m->input, GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all),
		                                  &ctx->err) < 0;
		if (!is_refused) {
			ProtobufCAllocator alloc = arena_protobuf_allocator(ctx->arena);
			req = protobuf_c_message_unpack(m->input, &alloc, GRPC_SLICE_LENGTH(all),
			                                GRPC_SLICE_START_PTR(all));
		}
		grpc_slice_unref(all);
	}
	grpc_byte_buffer_destroy(bb);

	if (req == NULL) {
		if (!is_refused)
			rpc_fail(ctx, MON_EINVAL, "request could not be decoded as %s", m->input->name);
		pthread_mutex_lock(&c->lock);
		send_status_locked(c, MON_EINVAL, ctx->err.msg, NULL);
		pthread_cond_broadcast(&c->drained);
		call_unlock(c);
		goto out;
	}
	run_handler(c, req);

	/*
	 * Client and bidi streams read the next message once this one is
	 * handled and its answers are sent: a client that writes without
	 * reading cannot make us queue answers without bound.
	 */
	if (is_client_stream) {
		pthread_mutex_lock(&c->lock);
		if (c->q_head || c->send_in_flight)
			c->recv_deferred = true;
		else
			recv_next_locked(c);
		call_unlock(c);
	}
out:
	if (msg_arena != NULL) {
		ctx->arena = ctx->call_arena;
		arena_destroy(msg_arena);
	}
}

/* ---- call queues (the worker pool, the callbacks thread) ---- */

static void call_queue_init(struct call_queue *q, int link, size_t max)
{
	memset(q, 0, sizeof(*q));
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	q->link = link;
	q->max = max;
}

static void call_queue_destroy(struct call_queue *q)
{
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->cond);
}

/* Appends c; false when the queue is at its limit. */
static bool call_queue_push(struct call_queue *q, struct rpc_call *c)
{
	pthread_mutex_lock(&q->lock);
	if (q->max > 0 && q->len >= q->max) {
		pthread_mutex_unlock(&q->lock);
		return false;
	}
	c->queue_next[q->link] = NULL;
	if (q->tail)
		q->tail->queue_next[q->link] = c;
	else
		q->head = c;
	q->tail = c;
	q->len++;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return true;
}

/* The next call, waiting for one; NULL once the queue is stopped and empty. */
static struct rpc_call *call_queue_pop(struct call_queue *q)
{
	pthread_mutex_lock(&q->lock);
	while (q->head == NULL && !q->stop)
		pthread_cond_wait(&q->cond, &q->lock);
	struct rpc_call *c = q->head;
	if (c != NULL) {
		q->head = c->queue_next[q->link];
		if (q->head == NULL)
			q->tail = NULL;
		q->len--;
	}
	pthread_mutex_unlock(&q->lock);
	return c;
}

/* Its threads take what is queued, then leave. */
static void call_queue_stop(struct call_queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->stop = true;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

static void *worker_main(void *arg)
{
	struct rpc_server *srv = arg;
	pthread_setname_np(pthread_self(), "rpc-worker");
	for (struct rpc_call *c; (c = call_queue_pop(&srv->work)) != NULL;) {
		dispatch_message(c);
		call_release(c);
	}
	return NULL;
}

/* ---- completion handling (queue thread) ---- */

static void call_accept(struct rpc_call *c);

static void on_request(struct rpc_call *c, bool ok)
{
	if (!ok) {
		/* Server shutting down: the call never existed. */
		c->call = NULL;
		call_free(c);
		return;
	}
	/*
	 * A reference of our own while we accept it: a batch started here may
	 * complete, and end the call, before grpc_call_start_batch returns.
	 * Nothing else knows the call yet, so no lock.
	 */
	c->refs++;
	call_accept(c);
	call_release(c);
}

/* Authenticates the call, starts its first batches and hands it to its handler. */
static void call_accept(struct rpc_call *c)
{
	struct rpc_server *srv = c->server;
	if (c->reg)
		request_registered_call(c->cqt, c->reg);
	else
		request_new_call(c->cqt);
	clock_gettime(CLOCK_MONOTONIC, &c->started);

	struct rpc_ctx *ctx = &c->ctx;
	ctx->call = c;
	ctx->arena = arena_create(srv->cfg.call_arena_cap_bytes);
	ctx->call_arena = ctx->arena;
	ctx->deadline = gpr_convert_clock_type(c->reg ? c->reg_deadline : c->details.deadline, GPR_CLOCK_MONOTONIC);
	c->bm = c->reg ? c->reg : method_find(srv, c->details.method);
	if (c->bm) {
		ctx->user = c->bm->user;
		ctx->method = c->bm->method->path;
		/* a stream's arena lives as long as the stream and holds little more than its request */
		if (c->bm->method->kind != RPC_UNARY)
			arena_set_next_block(ctx->arena, STREAM_ARENA_FIRST_BLOCK);
	} else {
		ctx->method = arena_strndup(ctx->arena, (const char *)GRPC_SLICE_START_PTR(c->details.method),
		                            GRPC_SLICE_LENGTH(c->details.method));
		if (ctx->method == NULL)
			ctx->method = "?";
	}

	bool have_id = false;
	for (size_t i = 0; i < c->request_md.count; i++) {
		grpc_slice k = c->request_md.metadata[i].key;
		if (grpc_slice_str_cmp(k, "x-request-id") == 0) {
			grpc_slice v = c->request_md.metadata[i].value;
			size_t len = GRPC_SLICE_LENGTH(v);
			if (request_id_valid((const char *)GRPC_SLICE_START_PTR(v), len)) {
				memcpy(ctx->request_id, GRPC_SLICE_START_PTR(v), len);
				ctx->request_id[len] = '\0';
				have_id = true;
			}
			break;
		}
	}
	if (!have_id)
		request_id_generate(ctx->request_id, sizeof(ctx->request_id));
	/* with the per-call line at its end, tells which calls were answered and which are still running */
	log_debug("msg=\"rpc started\" method=%s request_id=%s", ctx->method, ctx->request_id);
	c->request_id_slice = grpc_slice_from_copied_string(ctx->request_id);
	c->initial_md[0].key = grpc_slice_from_static_string("x-request-id");
	c->initial_md[0].value = c->request_id_slice;

	int denied = 0;
	char denied_msg[512] = "";
	struct rpc_auth_request areq;
	if (srv->has_auth && ctx->arena != NULL)
		denied = authorize(c, &areq, denied_msg, sizeof(denied_msg));

	/* Streams go on the live list first: lock order is live_lock, then a call's lock. */
	bool is_listed = true;
	bool has_message = false;
	if (denied == 0 && c->bm && c->bm->fn && c->bm->method->kind != RPC_UNARY)
		is_listed = live_add(c);

	pthread_mutex_lock(&c->lock);
	/*
	 * Calls answered at once (unknown, unimplemented) or by an inline unary
	 * handler need no early notice of cancellation: their RECV_CLOSE rides
	 * with the status batch, one completion less per call.
	 */
	c->close_in_status = c->bm == NULL || c->bm->fn == NULL ||
	                     (c->bm->method->kind == RPC_UNARY && (c->bm->flags & RPC_BIND_INLINE));
	if (!c->close_in_status)
		start_close_locked(c);

	if (ctx->arena == NULL) {
		send_status_locked(c, MON_ENOMEM, "server out of memory", NULL);
	} else if (denied != 0) {
		send_status_locked(c, denied, denied_msg, NULL);
	} else if (c->bm == NULL) {
		char msg[600];
		snprintf(msg, sizeof(msg), "unknown method %s", ctx->method);
		send_status_locked(c, MON_EUNIMPL, msg, NULL);
	} else if (c->bm->fn == NULL) {
		const struct rpc_method *m = c->bm->method;
		char msg[600];
		if (m->summary && m->summary[0])
			snprintf(msg, sizeof(msg), "%s is not implemented yet: %s", m->path + 1, m->summary);
		else
			snprintf(msg, sizeof(msg), "%s is not implemented yet", m->path + 1);
		send_status_locked(c, MON_EUNIMPL, msg, NULL);
	} else if (!is_listed) {
		send_status_locked(c, MON_EUNAVAIL, "server is shutting down; reconnect and resume", NULL);
	} else if (c->reg && (c->bm->method->kind == RPC_UNARY || c->bm->method->kind == RPC_SERVER_STREAMING)) {
		/* The request came with the call. A stream's headers go out now. */
		if (c->bm->method->kind == RPC_SERVER_STREAMING) {
			grpc_op ops[1];
			if (add_initial_md_locked(c, ops) == 1)
				start_batch_locked(c, ops, 1, &c->t_initial);
		}
		has_message = true;
	} else {
		grpc_op ops[2];
		size_t n = add_initial_md_locked(c, ops);
		memset(&ops[n], 0, sizeof(ops[n]));
		ops[n].op = GRPC_OP_RECV_MESSAGE;
		ops[n].data.recv_message.recv_message = &c->recv_buf;
		n++;
		start_batch_locked(c, ops, n, &c->t_recv);
	}
	call_unlock(c);
	if (denied != 0) {
		if (srv->auth.on_deny && denied != MON_EUNAVAIL) /* not checkable yet is no refusal */
			srv->auth.on_deny(srv->auth.arg, &areq, ctx->has_identity ? &ctx->identity : NULL, denied,
			                  denied_msg);
		return; /* a request message that came with the call is freed with it */
	}
	if (has_message)
		on_recv(c, true);
}

static void on_recv(struct rpc_call *c, bool ok)
{
	struct rpc_server *srv = c->server;
	if (!ok || c->recv_buf == NULL) {
		/* No (more) message: the client half-closed or the call failed. */
		pthread_mutex_lock(&c->lock);
		enum rpc_kind kind = c->bm->method->kind;
		if (kind == RPC_CLIENT_STREAMING || kind == RPC_BIDI_STREAMING) {
			if (ok && !c->finish_requested) {
				c->finish_requested = true;
				c->fin_code = 0;
				send_next_locked(c);
			}
		} else if (ok) {
			send_status_locked(c, MON_EINVAL, "request message missing", NULL);
		} else if (c->close_in_status && !c->status_started) {
			start_close_locked(c); /* the call failed: learn how, and end it */
		}
		call_unlock(c);
		return;
	}
	if (c->bm->flags & RPC_BIND_INLINE) {
		dispatch_message(c);
		return;
	}
	pthread_mutex_lock(&c->lock);
	c->refs++;
	call_unlock(c);
	if (!call_queue_push(&srv->work, c)) {
		grpc_byte_buffer_destroy(c->recv_buf);
		c->recv_buf = NULL;
		pthread_mutex_lock(&c->lock);
		c->refs--;
		char msg[128];
		snprintf(msg, sizeof(msg), "server busy: %d calls already queued (max-workers-queue)",
		         srv->cfg.max_workers_queue);
		send_status_locked(c, MON_ELIMIT, msg, NULL);
		call_unlock(c);
	}
}

/*
 * Hands the owner's callbacks that are due (the writable one, and the
 * close one when is_closing) to the callbacks thread. A completion may run
 * on any thread that started a batch, whatever locks that thread holds, so
 * owner code never runs there. Call lock held.
 */
static void owner_callbacks_locked(struct rpc_call *c, bool is_closing)
{
	void (*wcb)(struct rpc_stream *, void *) = NULL;
	void *wcb_arg = NULL;
	if (take_writable_locked(c, &wcb, &wcb_arg)) {
		c->writable_due = wcb;
		c->writable_due_arg = wcb_arg;
	}
	if (is_closing && !c->on_close_ran && c->on_close) {
		c->on_close_ran = true;
		c->close_due = true;
	}
	if ((c->writable_due == NULL && !c->close_due) || c->in_cb_queue)
		return;
	c->in_cb_queue = true;
	c->refs++;
	(void)call_queue_push(&c->server->callbacks, c); /* no limit: never refused */
}

/* Runs one queued call's due owner callbacks, then drops the queue's reference. */
static void owner_callbacks_run(struct rpc_call *c)
{
	pthread_mutex_lock(&c->lock);
	void (*wcb)(struct rpc_stream *, void *) = c->writable_due;
	void *wcb_arg = c->writable_due_arg;
	bool is_close_due = c->close_due;
	c->writable_due = NULL;
	c->writable_due_arg = NULL;
	c->close_due = false;
	c->in_cb_queue = false;
	call_unlock(c);
	if (wcb)
		wcb(call_stream(c), wcb_arg);
	if (is_close_due)
		c->on_close(call_stream(c), c->on_close_arg);
	call_release(c);
}

static void *cb_main(void *arg)
{
	struct rpc_server *srv = arg;
	pthread_setname_np(pthread_self(), "rpc-callbacks");
	for (struct rpc_call *c; (c = call_queue_pop(&srv->callbacks)) != NULL;)
		owner_callbacks_run(c);
	return NULL;
}

/* A message went out (or the call failed); true when that was the call's last batch (see handle_tag). */
static bool on_send(struct rpc_call *c, bool ok)
{
	pthread_mutex_lock(&c->lock);
	c->send_in_flight = false;
	if (c->send_buf) {
		grpc_byte_buffer_destroy(c->send_buf);
		c->send_buf = NULL;
	}
	if (!ok) {
		/* The client is gone; what is queued will never be sent. */
		queue_free_locked(c);
		atomic_store(&c->cancelled, true);
	} else {
		send_next_locked(c);
		if (c->recv_deferred && c->q_head == NULL && !c->send_in_flight)
			recv_next_locked(c);
	}
	owner_callbacks_locked(c, false);
	pthread_cond_broadcast(&c->drained);
	c->pending--; /* the runtime's accounting, in the same section: one lock per message */
	bool done = c->pending == 0 && c->close_received;
	call_unlock(c);
	return done;
}

static void on_status(struct rpc_call *c, bool ok)
{
	pthread_mutex_lock(&c->lock);
	if (c->send_buf) {
		grpc_byte_buffer_destroy(c->send_buf);
		c->send_buf = NULL;
	}
	call_unlock(c);
}

static void on_close(struct rpc_call *c, bool ok)
{
	pthread_mutex_lock(&c->lock);
	c->close_received = true;
	if (c->close_cancelled || !ok) {
		atomic_store(&c->cancelled, true);
		if (!c->status_started)
			c->final_code = GRPC_STATUS_CANCELLED;
	}
	queue_free_locked(c);
	if (c->counted_stream) {
		struct caller_limit *l = c->counted_stream;
		c->counted_stream = NULL;
		pthread_mutex_lock(&c->server->limits_lock);
		l->open_streams--;
		pthread_mutex_unlock(&c->server->limits_lock);
	}
	owner_callbacks_locked(c, true);
	pthread_cond_broadcast(&c->drained);
	call_unlock(c);
	live_remove(c);
}

static void handle_tag(struct rpc_tag *tag, bool ok)
{
	struct rpc_call *c = tag->call;
	if (tag->kind == TAG_REQUEST) {
		on_request(c, ok);
		return;
	}
	switch (tag->kind) {
	case TAG_RECV: on_recv(c, ok); break;
	case TAG_SEND:
		if (on_send(c, ok))
			call_release(c);
		return;
	case TAG_INITIAL: break;
	case TAG_STATUS:
		on_status(c, ok);
		if (c->close_in_status)
			on_close(c, ok);
		break;
	case TAG_CLOSE: on_close(c, ok); break;
	default: break;
	}
	/* The runtime's reference goes once the call is over on the wire. */
	pthread_mutex_lock(&c->lock);
	c->pending--;
	bool done = c->pending == 0 && c->close_received;
	call_unlock(c);
	if (done)
		call_release(c);
}

static void handle_event(grpc_event ev)
{
	handle_tag(ev.tag, ev.success != 0);
}

/* A batch of a call on a callback queue completed: run where gRPC completed it. */
static void tag_run(grpc_completion_queue_functor *fn, int ok)
{
	handle_tag((struct rpc_tag *)(void *)fn, ok != 0);
}

static void *cq_main(void *arg)
{
	struct cq_thread *cqt = arg;
	pthread_setname_np(pthread_self(), "rpc-queue");
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(cqt->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			return NULL;
		if (ev.type == GRPC_OP_COMPLETE)
			handle_event(ev);
	}
}

/* ---- server lifecycle ---- */

/* A stream callback queue has shut down (every batch on it completed). */
static void cb_cq_shut(grpc_completion_queue_functor *fn, int ok)
{
	(void)ok;
	struct cb_cq_shutdown *sd = (struct cb_cq_shutdown *)(void *)fn;
	pthread_mutex_lock(&sd->lock);
	sd->done++;
	pthread_cond_broadcast(&sd->cond);
	pthread_mutex_unlock(&sd->lock);
}

int rpc_server_create(const struct rpc_server_config *cfg, struct rpc_server **out, struct mon_error *err)
{
	*out = NULL;
	if (cfg->cq_threads < 1 || cfg->cq_threads > 64)
		return mon_error_set(err, MON_EINVAL, "cq-threads: must be between 1 and 64");
	if (cfg->worker_threads < 1 || cfg->worker_threads > 1024)
		return mon_error_set(err, MON_EINVAL, "worker-threads: must be between 1 and 1024");
	if (cfg->max_recv_message_bytes == 0 || cfg->max_recv_message_bytes > INT32_MAX)
		return mon_error_set(err, MON_EINVAL, "max-recv-message-bytes: out of range");
	if (cfg->max_send_message_bytes == 0 || cfg->max_send_message_bytes > INT32_MAX)
		return mon_error_set(err, MON_EINVAL, "max-send-message-bytes: out of range");
	if (cfg->stream_queue_max == 0)
		return mon_error_set(err, MON_EINVAL, "stream-queue-max: must be positive");

	struct rpc_server *srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	srv->cfg = *cfg;
	srv->listen_addr = strdup(cfg->listen_addr ? cfg->listen_addr : "127.0.0.1:50051");
	srv->cfg.listen_addr = srv->listen_addr;
	if (srv->cfg.max_workers_queue <= 0)
		srv->cfg.max_workers_queue = 10000;
	call_queue_init(&srv->work, QUEUE_WORK, (size_t)srv->cfg.max_workers_queue);
	call_queue_init(&srv->callbacks, QUEUE_CALLBACKS, 0);
	pthread_mutex_init(&srv->live_lock, NULL);
	pthread_mutex_init(&srv->limits_lock, NULL);
	pthread_mutex_init(&srv->cb_cq_shutdown.lock, NULL);
	pthread_cond_init(&srv->cb_cq_shutdown.cond, NULL);
	srv->cb_cq_shutdown.fn.functor_run = cb_cq_shut;
	atomic_init(&srv->shutting_down, false);
	atomic_init(&srv->cb_cq_next, 0);

	gpr_set_log_function(grpc_log_bridge);
	gpr_set_log_verbosity(GPR_LOG_SEVERITY_ERROR);
	grpc_init();

	grpc_arg args[] = {
	        {.type = GRPC_ARG_INTEGER,
	         .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
	         .value.integer = (int)cfg->max_recv_message_bytes},
	        {.type = GRPC_ARG_INTEGER,
	         .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
	         .value.integer = (int)cfg->max_send_message_bytes},
	        {.type = GRPC_ARG_INTEGER,
	         .key = GRPC_ARG_MAX_CONCURRENT_STREAMS,
	         .value.integer = cfg->max_concurrent_streams},
	        {.type = GRPC_ARG_INTEGER,
	         .key = GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
	         .value.integer = cfg->keepalive_min_ping_ms},
	        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_HTTP2_MAX_PING_STRIKES, .value.integer = 2},
	        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIME_MS, .value.integer = cfg->keepalive_time_ms},
	        {.type = GRPC_ARG_INTEGER,
	         .key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
	         .value.integer = cfg->keepalive_timeout_ms},
	        {.type = GRPC_ARG_INTEGER,
	         .key = GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
	         .value.integer = cfg->handshake_timeout_ms},
	};
	grpc_channel_args chargs = {.num_args = sizeof(args) / sizeof(args[0]), .args = args};
	srv->server = grpc_server_create(&chargs, NULL);

	srv->cq_count = cfg->cq_threads + 1; /* the stream queues, then the calls queue */
	srv->cqs = calloc((size_t)srv->cq_count, sizeof(*srv->cqs));
	if (srv->cqs == NULL) {
		rpc_server_destroy(srv);
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	}
	for (int i = 0; i < srv->cq_count; i++) {
		srv->cqs[i].server = srv;
		srv->cqs[i].cq = grpc_completion_queue_create_for_next(NULL);
		grpc_server_register_completion_queue(srv->server, srv->cqs[i].cq, NULL);
	}
	srv->cb_cq_count = CALLBACK_CQS;
	srv->cb_cqs = calloc((size_t)srv->cb_cq_count, sizeof(*srv->cb_cqs));
	if (srv->cb_cqs == NULL) {
		rpc_server_destroy(srv);
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	}
	for (int i = 0; i < srv->cb_cq_count; i++)
		srv->cb_cqs[i] = grpc_completion_queue_create_for_callback(&srv->cb_cq_shutdown.fn, NULL);
	srv->shutdown_cq = grpc_completion_queue_create_for_pluck(NULL);
	grpc_server_register_completion_queue(srv->server, srv->shutdown_cq, NULL);

	int rc = rpc_health_init(srv, err);
	if (rc == 0)
		rc = rpc_reflection_init(srv, cfg->descriptor_set, cfg->descriptor_set_len, err);
	if (rc != 0) {
		rpc_server_destroy(srv);
		return rc;
	}
	*out = srv;
	return 0;
}

static grpc_server_credentials *make_credentials(const struct rpc_server_config *cfg, struct mon_error *err)
{
	if (cfg->tls_cert_pem == NULL)
		return grpc_insecure_server_credentials_create();
	grpc_ssl_pem_key_cert_pair pair = {.private_key = cfg->tls_key_pem, .cert_chain = cfg->tls_cert_pem};
	grpc_ssl_client_certificate_request_type req =
	        cfg->tls_client_ca_pem ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
	                               : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
	grpc_server_credentials *creds =
	        grpc_ssl_server_credentials_create_ex(cfg->tls_client_ca_pem, &pair, 1, req, NULL);
	if (creds == NULL)
		mon_error_set(err, MON_EINVAL, "tls-cert: could not load the certificate and key");
	return creds;
}

int rpc_server_start(struct rpc_server *srv, int *bound_port, struct mon_error *err)
{
	qsort(srv->methods, srv->method_count, sizeof(srv->methods[0]), method_cmp);
	/*
	 * Implemented methods are registered with gRPC: their calls come with
	 * the request message. Unimplemented and unknown ones arrive through
	 * the generic request and are answered at once.
	 */
	for (size_t i = 0; i < srv->method_count; i++) {
		struct bound_method *bm = &srv->methods[i];
		if (bm->fn == NULL)
			continue;
		enum rpc_kind kind = bm->method->kind;
		bool has_payload = kind == RPC_UNARY || kind == RPC_SERVER_STREAMING;
		bm->registered = grpc_server_register_method(
		        srv->server, bm->method->path, NULL,
		        has_payload ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER : GRPC_SRM_PAYLOAD_NONE, 0);
		if (bm->registered == NULL)
			return mon_error_set(err, MON_EINTERNAL, "could not register method \"%s\"", bm->method->path);
	}
	grpc_server_credentials *creds = make_credentials(&srv->cfg, err);
	if (creds == NULL)
		return err ? err->code : MON_EINVAL;
	int port = grpc_server_add_http2_port(srv->server, srv->listen_addr, creds);
	grpc_server_credentials_release(creds);
	if (port == 0)
		return mon_error_set(err, MON_EINVAL, "listen: could not bind \"%s\" (address in use or invalid)",
		                     srv->listen_addr);
	if (bound_port)
		*bound_port = port;
	grpc_server_start(srv->server);
	srv->started = true;

	if (pthread_create(&srv->cb_thread, NULL, cb_main, srv) != 0)
		return mon_error_set(err, MON_EINTERNAL, "could not start the callbacks thread: %s", strerror(errno));
	srv->has_cb_thread = true;
	srv->workers = calloc((size_t)srv->cfg.worker_threads, sizeof(pthread_t));
	if (srv->workers == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	for (int i = 0; i < srv->cfg.worker_threads; i++) {
		if (pthread_create(&srv->workers[i], NULL, worker_main, srv) != 0)
			return mon_error_set(err, MON_EINTERNAL, "could not start worker thread: %s", strerror(errno));
		srv->worker_count++;
	}
	/*
	 * Server streams arrive on their own queues, every other call on the
	 * last one: a queue thread never polls for new input while its queue
	 * holds completions, and thousands of streams opening at once (a
	 * reconnect) fill theirs. Unary calls, the standard health and
	 * reflection services and unknown methods arrive on a queue that
	 * streams never fill, so they are read and answered meanwhile.
	 */
	for (int i = 0; i < srv->cq_count; i++) {
		bool is_calls_queue = i == srv->cq_count - 1;
		for (int j = 0; is_calls_queue && j < GENERIC_REQUESTS_PER_CQ; j++)
			request_new_call(&srv->cqs[i]);
		for (size_t k = 0; k < srv->method_count; k++) {
			const struct bound_method *bm = &srv->methods[k];
			if (bm->registered == NULL || (bm->method->kind == RPC_SERVER_STREAMING) == is_calls_queue)
				continue;
			int n = (bm->flags & RPC_BIND_INLINE) ? REQUESTS_PER_METHOD_INLINE : REQUESTS_PER_METHOD;
			for (int j = 0; j < n; j++)
				request_registered_call(&srv->cqs[i], bm);
		}
		if (pthread_create(&srv->cqs[i].thread, NULL, cq_main, &srv->cqs[i]) != 0)
			return mon_error_set(err, MON_EINTERNAL, "could not start queue thread: %s", strerror(errno));
		srv->cqs[i].has_thread = true;
	}
	return 0;
}

int rpc_server_on_shutdown(struct rpc_server *srv, void (*fn)(void *arg), void *arg)
{
	if (srv->shutdown_hook_count >= RPC_SHUTDOWN_HOOKS_MAX)
		return MON_ELIMIT;
	srv->shutdown_hooks[srv->shutdown_hook_count++] = (struct shutdown_hook){.fn = fn, .arg = arg};
	return 0;
}

/*
 * Ends every open server stream with UNAVAILABLE so clients reconnect
 * elsewhere, and refuses streams accepted from now on. Messages still queued
 * are dropped (a client that stopped reading must not hold up shutdown), and
 * a stream with a message stuck in flight is cancelled outright. A stream
 * already finished (its owner's last word, such as where to resume) is left
 * to send what it queued: the grace period bounds it, and its timeout
 * cancels whatever is still stuck.
 */
static void end_live_streams(struct rpc_server *srv)
{
	static const char msg[] = "server is shutting down; reconnect and resume";
	pthread_mutex_lock(&srv->live_lock);
	srv->live_closed = true;
	size_t n = 0;
	for (struct rpc_call *c = srv->live_head; c; c = c->live_next)
		n++;
	struct rpc_call **todo = calloc(n ? n : 1, sizeof(*todo));
	size_t k = 0;
	for (struct rpc_call *c = srv->live_head; c && todo; c = c->live_next) {
		pthread_mutex_lock(&c->lock);
		c->refs++;
		call_unlock(c);
		todo[k++] = c;
	}
	pthread_mutex_unlock(&srv->live_lock);
	if (todo == NULL) {
		log_error("msg=\"out of memory ending streams; they will be cancelled\"");
		return;
	}
	for (size_t i = 0; i < k; i++) {
		struct rpc_call *c = todo[i];
		pthread_mutex_lock(&c->lock);
		bool is_finishing = c->finish_requested || c->status_started;
		bool is_stuck = false;
		if (!is_finishing) {
			queue_free_locked(c);
			is_stuck = c->send_in_flight && !c->close_received;
			pthread_cond_broadcast(&c->drained);
		}
		call_unlock(c);
		if (is_stuck)
			grpc_call_cancel_with_status(c->call, GRPC_STATUS_UNAVAILABLE, msg, NULL);
		if (!is_finishing)
			rpc_stream_finish(call_stream(c), MON_EUNAVAIL, msg);
		call_release(c);
	}
	free(todo);
}

void rpc_server_shutdown(struct rpc_server *srv, int grace_ms)
{
	if (srv == NULL || !srv->started || atomic_exchange(&srv->shutting_down, true))
		return;
	static int shutdown_tag;
	grpc_server_shutdown_and_notify(srv->server, srv->shutdown_cq, &shutdown_tag);
	rpc_health_set_all(srv, RPC_HEALTH_NOT_SERVING);
	for (int i = 0; i < srv->shutdown_hook_count; i++)
		srv->shutdown_hooks[i].fn(srv->shutdown_hooks[i].arg);
	end_live_streams(srv);

	gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(grace_ms, GPR_TIMESPAN));
	grpc_event ev = grpc_completion_queue_pluck(srv->shutdown_cq, &shutdown_tag, deadline, NULL);
	if (ev.type == GRPC_QUEUE_TIMEOUT) {
		log_warn("msg=\"grace period over, cancelling remaining calls\" grace_ms=%d", grace_ms);
		grpc_server_cancel_all_calls(srv->server);
		grpc_completion_queue_pluck(srv->shutdown_cq, &shutdown_tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	}

	call_queue_stop(&srv->work);
	for (int i = 0; i < srv->worker_count; i++)
		pthread_join(srv->workers[i], NULL);
	srv->worker_count = 0;
}

void rpc_server_destroy(struct rpc_server *srv)
{
	if (srv == NULL)
		return;
	if (srv->server) {
		if (srv->started && !atomic_load(&srv->shutting_down))
			rpc_server_shutdown(srv, 0);
		grpc_server_destroy(srv->server);
	}
	for (int i = 0; srv->cqs && i < srv->cq_count; i++) {
		grpc_completion_queue_shutdown(srv->cqs[i].cq);
		if (srv->cqs[i].has_thread) {
			pthread_join(srv->cqs[i].thread, NULL);
		} else {
			for (;;) {
				grpc_event ev = grpc_completion_queue_next(srv->cqs[i].cq,
				                                           gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
				if (ev.type == GRPC_QUEUE_SHUTDOWN)
					break;
				if (ev.type == GRPC_OP_COMPLETE)
					handle_event(ev);
			}
		}
		grpc_completion_queue_destroy(srv->cqs[i].cq);
	}
	for (int i = 0; srv->cb_cqs && i < srv->cb_cq_count; i++)
		if (srv->cb_cqs[i])
			grpc_completion_queue_shutdown(srv->cb_cqs[i]);
	pthread_mutex_lock(&srv->cb_cq_shutdown.lock);
	for (int want = 0; srv->cb_cqs && want < srv->cb_cq_count; want++)
		if (srv->cb_cqs[want] == NULL)
			srv->cb_cq_shutdown.done++; /* never made */
	while (srv->cb_cqs && srv->cb_cq_shutdown.done < srv->cb_cq_count)
		pthread_cond_wait(&srv->cb_cq_shutdown.cond, &srv->cb_cq_shutdown.lock);
	pthread_mutex_unlock(&srv->cb_cq_shutdown.lock);
	for (int i = 0; srv->cb_cqs && i < srv->cb_cq_count; i++)
		if (srv->cb_cqs[i])
			grpc_completion_queue_destroy(srv->cb_cqs[i]);
	if (srv->has_cb_thread) {
		call_queue_stop(&srv->callbacks);
		pthread_join(srv->cb_thread, NULL);
	}
	if (srv->shutdown_cq) {
		grpc_completion_queue_shutdown(srv->shutdown_cq);
		while (grpc_completion_queue_pluck(srv->shutdown_cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
		               .type != GRPC_QUEUE_SHUTDOWN)
			;
		grpc_completion_queue_destroy(srv->shutdown_cq);
	}
	rpc_reflection_free(srv);
	rpc_health_free(srv);
	free(srv->cqs);
	free(srv->cb_cqs);
	free(srv->workers);
	free(srv->methods);
	free(srv->listen_addr);
	call_queue_destroy(&srv->work);
	call_queue_destroy(&srv->callbacks);
	pthread_mutex_destroy(&srv->live_lock);
	for (size_t i = 0; i < 256; i++) {
		while (srv->limits[i]) {
			struct caller_limit *l = srv->limits[i];
			srv->limits[i] = l->next;
			free(l);
		}
	}
	pthread_mutex_destroy(&srv->limits_lock);
	pthread_mutex_destroy(&srv->cb_cq_shutdown.lock);
	pthread_cond_destroy(&srv->cb_cq_shutdown.cond);
	free(srv);
	grpc_shutdown();
}
