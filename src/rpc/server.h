/*
 * The gRPC server: listening, completion-queue threads, the worker pool for
 * blocking handlers, limits, graceful shutdown, and the standard health and
 * reflection services.
 */
#ifndef MON_RPC_SERVER_H
#define MON_RPC_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpc/rpc.h"
#include "util/error.h"

struct rpc_server;

struct rpc_server_config {
	const char *listen_addr; /* "127.0.0.1:50051", "[::1]:0", "unix:/path" */
	int cq_threads; /* completion-queue threads taking new server streams (default 2); one more takes every other
	                   call */
	int worker_threads;            /* blocking handler threads (default 8) */
	size_t max_recv_message_bytes; /* default 4 MiB */
	size_t max_send_message_bytes; /* default 16 MiB */
	int max_concurrent_streams;    /* per HTTP/2 connection, default 1000 */
	int keepalive_min_ping_ms;     /* clients pinging faster are told GOAWAY, default 60000 */
	int keepalive_time_ms;         /* server pings idle connections, default 7200000 */
	int keepalive_timeout_ms;      /* and drops them after no answer, default 20000 */
	int handshake_timeout_ms;      /* default 10000 */
	size_t stream_queue_max;       /* messages queued per server stream, default 1024 */
	size_t stream_queue_max_bytes; /* bytes queued per server stream, default 8 MiB */
	size_t call_arena_cap_bytes;   /* per-call memory cap, default 64 MiB */
	int max_workers_queue;         /* queued blocking calls before RESOURCE_EXHAUSTED, default 10000 */
	/* TLS: all NULL for plaintext. */
	const char *tls_cert_pem;
	const char *tls_key_pem;
	const char *tls_client_ca_pem;       /* set: clients must present a certificate signed by it */
	const unsigned char *descriptor_set; /* FileDescriptorSet for reflection (may be NULL) */
	size_t descriptor_set_len;
};

/* Fills cfg with the defaults listed above. */
void rpc_server_config_defaults(struct rpc_server_config *cfg);

/*
 * Creates a server (and initialises gRPC). Bind services with rpc_server_bind
 * before rpc_server_start. The caller owns the server.
 */
int rpc_server_create(const struct rpc_server_config *cfg, struct rpc_server **out,
                      struct mon_error *err) MON_MUST_CHECK;

/* Binds the listen address and starts the threads. *bound_port gets the port (useful with port 0). */
int rpc_server_start(struct rpc_server *server, int *bound_port, struct mon_error *err) MON_MUST_CHECK;

/*
 * Graceful shutdown: stop accepting calls, run the shutdown callbacks (see
 * rpc_server_on_shutdown), let in-flight unary calls finish (up to
 * grace_ms), end open streams with UNAVAILABLE, then cancel whatever is
 * left. A stream already finished (rpc_stream_finish, by a callback or
 * before) keeps its queued messages: they and its status are sent within
 * grace_ms. Every other open stream has its queued messages dropped and
 * ends with UNAVAILABLE at once. Safe to call once, from any thread but the
 * server's own.
 */
void rpc_server_shutdown(struct rpc_server *server, int grace_ms);

/*
 * Registers fn(arg) to run at the start of rpc_server_shutdown, after the
 * server stopped accepting calls and before it ends the open streams, in
 * registration order, on the thread calling rpc_server_shutdown. The place
 * for a subscriber list to send its streams a last message (where to resume)
 * and finish them itself. fn must not block for long. Register before
 * rpc_server_start. Returns 0, or MON_ELIMIT past RPC_SHUTDOWN_HOOKS_MAX.
 */
#define RPC_SHUTDOWN_HOOKS_MAX 8
int rpc_server_on_shutdown(struct rpc_server *server, void (*fn)(void *arg), void *arg) MON_MUST_CHECK;

/*
 * Frees the server after rpc_server_shutdown (or if never started); accepts
 * NULL. Stream close callbacks may still run inside this call (not all of
 * them have run when rpc_server_shutdown returns), so subscriber lists must
 * stay valid until it returns, and nothing may hold a stream afterwards.
 */
void rpc_server_destroy(struct rpc_server *server);

/*
 * Authentication and authorization, checked in one place for every call
 * before its handler runs.
 *
 * What the runtime knows of a call when it asks who is calling.
 */
struct rpc_auth_request {
	const char *method;       /* full path */
	int min_role;             /* enum rpc_role the method declares */
	const char *bearer_token; /* from "authorization: Bearer <token>", NULL if none */
	const char *cert_subject; /* verified client certificate's common name, NULL if none */
	const char *peer;         /* "ipv4:127.0.0.1:5555" */
	const char *user_agent;   /* may be NULL */
	const char *request_id;
};

/*
 * Establishes the caller from req into *out: 0, or MON_EUNAUTH with a
 * message (missing, malformed, unknown, expired or revoked credentials),
 * or MON_EUNAVAIL when credentials cannot be checked yet (the call gets
 * UNAVAILABLE, retryable, and is not reported as a refusal). Runs on a
 * queue thread: it must not block (use an in-memory cache).
 */
typedef int (*rpc_auth_fn)(void *arg, const struct rpc_auth_request *req, struct rpc_identity *out,
                           struct mon_error *err);

/*
 * Told of every refused call (UNAUTHENTICATED, PERMISSION_DENIED, and the
 * per-caller limits), for the audit trail. who is NULL when the caller is
 * unknown. Runs on a queue thread: it must not block (queue the work).
 */
typedef void (*rpc_deny_fn)(void *arg, const struct rpc_auth_request *req, const struct rpc_identity *who, int code,
                            const char *message);

struct rpc_auth_config {
	rpc_auth_fn authenticate;
	rpc_deny_fn on_deny; /* may be NULL */
	void *arg;
	bool protect_standard;      /* health and reflection need a viewer too (default: open) */
	double rate_per_s;          /* per caller; 0 = unlimited */
	double rate_burst;          /* bucket size; 0 = rate_per_s */
	int max_streams_per_caller; /* open server streams; 0 = unlimited */
};

/*
 * Turns authentication on (before rpc_server_start). Without it every call
 * is anonymous and methods' roles are not checked.
 */
void rpc_server_set_auth(struct rpc_server *server, const struct rpc_auth_config *cfg);

/* Standard grpc.health.v1 statuses. */
enum rpc_health_status { RPC_HEALTH_UNKNOWN = 0, RPC_HEALTH_SERVING = 1, RPC_HEALTH_NOT_SERVING = 2 };

/*
 * Declares a service name to the standard health service ("" is the whole
 * server) and sets its status; Watch subscribers get the change.
 * Names never declared answer NOT_FOUND (Check) or SERVICE_UNKNOWN (Watch).
 */
void rpc_health_set(struct rpc_server *server, const char *service, enum rpc_health_status status);

/* Sets every declared name at once (the database went away or came back). */
void rpc_health_set_all(struct rpc_server *server, enum rpc_health_status status);

#endif
