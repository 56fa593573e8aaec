/*
 * What a service handler sees of an RPC: the call context (arena, deadline,
 * metadata, peer, request id, error) and, for streaming methods, the stream
 * it writes messages to. Handlers never see gRPC types; only src/rpc/
 * includes grpc/grpc.h.
 *
 * Threads: blocking handlers run on the worker pool; handlers bound with
 * RPC_BIND_INLINE run on a completion-queue thread and must never block.
 */
#ifndef MON_RPC_RPC_H
#define MON_RPC_RPC_H

#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "util/arena.h"
#include "util/error.h"

struct rpc_ctx;
struct rpc_stream;

/* The call's arena: the request lives in it, the response and scratch go in it. */
struct arena *rpc_ctx_arena(struct rpc_ctx *ctx);

/* The call's error slot; rpc_fail fills it. */
struct mon_error *rpc_ctx_error(struct rpc_ctx *ctx);

/* Milliseconds left before the caller's deadline; INT64_MAX when it set none, <= 0 when past. */
int64_t rpc_ctx_remaining_ms(const struct rpc_ctx *ctx);

/* True once the caller cancelled, timed out or went away. */
bool rpc_ctx_is_cancelled(const struct rpc_ctx *ctx);

/*
 * The first value of request metadata key (lowercase), NUL-terminated and
 * owned by the call's arena; NULL when absent. Binary (-bin) keys are not
 * returned by this function.
 */
const char *rpc_ctx_metadata(struct rpc_ctx *ctx, const char *key);

/* The caller's address as gRPC reports it ("ipv4:127.0.0.1:5555"). Owned by the call. */
const char *rpc_ctx_peer(const struct rpc_ctx *ctx);

/* The request id: the caller's x-request-id metadata when valid, else one generated. */
const char *rpc_ctx_request_id(const struct rpc_ctx *ctx);

/* The full method path, "/monitoring.v1.AlertsService/ListAlerts". */
const char *rpc_ctx_method(const struct rpc_ctx *ctx);

/*
 * The call's decoded request (in the call's arena), and for a unary method
 * the response message the handler fills (NULL for streams). Both are the
 * handler's own arguments; these let a shared helper (an idempotency key's
 * lookup and replay) reach them through their descriptors.
 */
const ProtobufCMessage *rpc_ctx_request(const struct rpc_ctx *ctx);
ProtobufCMessage *rpc_ctx_response(struct rpc_ctx *ctx);

/* Roles, in increasing power; a method declares the least it needs. */
enum rpc_role { RPC_ROLE_NONE = 0, RPC_ROLE_VIEWER = 1, RPC_ROLE_EDITOR = 2, RPC_ROLE_ADMIN = 3 };

/* Who is calling, as the server's authenticator established it. */
struct rpc_identity {
	char caller_id[64];
	char email[256];
	char team[128];
	enum rpc_role role;
	char auth_method[16]; /* "api-key", "certificate" or "" (anonymous) */
	char key_id[40];      /* the API key's public id, when auth_method is "api-key" */
};

/*
 * The caller's identity, or NULL when the method is open and the caller
 * presented no credentials. Owned by the call.
 */
const struct rpc_identity *rpc_ctx_identity(const struct rpc_ctx *ctx);

/* "viewer", "editor", "admin" or "none". */
const char *rpc_role_name(enum rpc_role role);

/* The user pointer given when the service was bound. */
void *rpc_ctx_user(const struct rpc_ctx *ctx);

/*
 * Records the call's failure (code is a MON_E* value) and returns code:
 * `return rpc_fail(ctx, MON_EINVAL, "threshold: must be finite");`.
 * The message goes to the caller verbatim: never put SQL or secrets in it.
 */
int rpc_fail(struct rpc_ctx *ctx, int code, const char *fmt, ...) MON_PRINTF(3, 4);

/*
 * Adds trailing metadata sent with the call's final status (for example
 * "grpc-retry-pushback-ms" with RESOURCE_EXHAUSTED). Key and value are
 * copied into the call's arena. At most RPC_MAX_TRAILERS per call; returns
 * MON_ELIMIT past that, MON_EINVAL for a key that is not lowercase
 * [a-z0-9-_.] or a value with control characters.
 */
#define RPC_MAX_TRAILERS 4
int rpc_ctx_add_trailer(struct rpc_ctx *ctx, const char *key, const char *value) MON_MUST_CHECK;

/*
 * A unary reply given later, from another thread. A unary handler that hands
 * its work to threads of its own (so that slow work does not hold a worker
 * of the shared pool) calls rpc_reply_later and returns RPC_REPLY_LATER;
 * the worker is free at once. The call, its context, arena, request and
 * the response message the handler was given stay valid, and the call stays
 * open, until its new owner calls rpc_reply_finish exactly once, from any
 * thread: code 0 sends the response as filled by then, a negative code the
 * failure recorded with rpc_fail (as a handler's return would). Only one
 * thread may use the context at a time. A call the client cancelled or
 * timed out (rpc_ctx_is_cancelled) still needs its rpc_reply_finish, which
 * then sends nothing. At server shutdown such a call is treated as any
 * in-flight unary call: it gets the grace period, then it is cancelled; its
 * owner must finish it before rpc_server_destroy.
 */
#define RPC_REPLY_LATER 1
void rpc_reply_later(struct rpc_ctx *ctx);
void rpc_reply_finish(struct rpc_ctx *ctx, int code);

/*
 * Server streams. A server-streaming handler receives a stream and either
 * finishes it before returning or hands it to something that will (a
 * subscriber list): in that case it takes a reference with rpc_stream_retain.
 * A handler that returns a negative code ends the stream with that error,
 * after the messages already queued.
 *
 * All stream functions are thread-safe.
 */

/* The context of the call the stream belongs to; lives as long as the stream. */
struct rpc_ctx *rpc_stream_ctx(struct rpc_stream *s);

/*
 * Serialises msg now (the caller keeps ownership of msg) and queues it for
 * sending. Never blocks. Returns MON_ELIMIT when the stream's queue is full
 * (the subscriber is too slow: end it with a resume hint, or wait for
 * rpc_stream_on_writable), MON_ECANCELLED when the stream has ended,
 * MON_ENOMEM on allocation failure or when msg is larger than the server's
 * max_send_message_bytes (it can never be sent).
 */
int rpc_stream_send(struct rpc_stream *s, const ProtobufCMessage *msg) MON_MUST_CHECK;

/*
 * As rpc_stream_send, but waits while the queue is full, until there is room,
 * the stream ends (MON_ECANCELLED) or the deadline passes (MON_EDEADLINE).
 * For bulk streams (exports) produced on a worker thread, never on a
 * completion-queue thread.
 */
int rpc_stream_send_wait(struct rpc_stream *s, const ProtobufCMessage *msg) MON_MUST_CHECK;

/*
 * A message serialised once for sending on many streams (fan-out of one
 * event to every subscriber): rpc_packed_create packs msg (the caller keeps
 * msg); rpc_stream_send_packed queues it on a stream as rpc_stream_send
 * would, sharing the bytes; rpc_packed_release drops the creator's
 * reference (streams keep theirs until sent). Thread-safe.
 */
struct rpc_packed;
int rpc_packed_create(const ProtobufCMessage *msg, struct rpc_packed **out) MON_MUST_CHECK;
void rpc_packed_release(struct rpc_packed *p);
int rpc_stream_send_packed(struct rpc_stream *s, const struct rpc_packed *p) MON_MUST_CHECK;

/*
 * Ends the stream once the queued messages are sent, with status code (0 or
 * a MON_E* value) and message (may be NULL). Later calls are ignored. At
 * server shutdown a finished stream still gets its queued messages (within
 * the grace period), while an unfinished one has them dropped and ends with
 * UNAVAILABLE: a subscriber list that must tell its streams where to resume
 * sends that and finishes them from a shutdown callback
 * (rpc_server_on_shutdown in rpc/server.h).
 */
void rpc_stream_finish(struct rpc_stream *s, int code, const char *message);

/* Number of messages queued and not yet handed to the transport. */
size_t rpc_stream_queued(struct rpc_stream *s);

/* True once the stream has ended or is ending (finish, cancel, shutdown). */
bool rpc_stream_is_closed(struct rpc_stream *s);

/*
 * Registers a callback run exactly once when the stream is over for any
 * reason (finished, cancelled by the client, server shutdown), so a
 * subscriber can unlink itself. Runs on the runtime's callbacks thread (or
 * at once on the calling thread when the stream is already over), never
 * inside a send, so it may take locks its owner holds while sending; it
 * must not block. Only one callback per stream; set it before retaining.
 */
void rpc_stream_on_close(struct rpc_stream *s, void (*cb)(struct rpc_stream *s, void *arg), void *arg);

/*
 * Arms a one-shot callback run when the stream's queue has drained to half
 * its message and byte limits, or when the stream is over (check
 * rpc_stream_is_closed in the callback). A producer that got MON_ELIMIT
 * parks and resumes from the callback instead of sleeping. Runs on the
 * runtime's callbacks thread with no lock held (it must not block), or at
 * once on the calling thread when the queue already has that room or the
 * stream is over. One callback armed at a time: arming again replaces it.
 */
void rpc_stream_on_writable(struct rpc_stream *s, void (*cb)(struct rpc_stream *s, void *arg), void *arg);

/* Reference counting for holders other than the runtime. */
void rpc_stream_retain(struct rpc_stream *s);
void rpc_stream_release(struct rpc_stream *s);

#endif
