/*
 * Client side of the RPC runtime: channels, unary calls and server-streaming
 * calls over gRPC core, with deadlines, metadata and TLS. The public client
 * library (clients/) wraps this; nothing here is exported.
 *
 * Threads: a channel may be shared by any number of threads (every call has
 * its own completion queue). A stream belongs to one thread at a time:
 * rpc_cstream_next and rpc_cstream_close must not run concurrently on it.
 * Every channel holds one reference on gRPC's global state (grpc_init), so
 * the library needs no separate initialisation.
 */
#ifndef MON_RPC_CLIENT_H
#define MON_RPC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "util/error.h"

struct rpc_channel;
struct rpc_cstream;

struct rpc_channel_config {
	const char *target;       /* "127.0.0.1:50051", "unix:/path" */
	const char *tls_ca_pem;   /* NULL: plaintext */
	const char *tls_cert_pem; /* client certificate for mTLS (with key) */
	const char *tls_key_pem;
	const char *authority;         /* override :authority / TLS name (may be NULL) */
	size_t max_recv_message_bytes; /* 0: 16 MiB */
};

struct rpc_call_options {
	int64_t timeout_ms;          /* <= 0: no deadline */
	const char *const *metadata; /* key, value, key, value ...; may be NULL */
	size_t metadata_pairs;
};

/*
 * Outcome of a call. code is the gRPC status code (0 OK ... 16), message
 * the server's status message. Functions also return a MON_E* code mapped
 * from it (0 on OK).
 */
struct rpc_status {
	int code;
	char message[512];
};

/*
 * Opens a channel to cfg->target; connects lazily on the first call. PEM
 * strings are copied. Returns MON_EINVAL naming the bad field. The caller
 * owns *out and frees it with rpc_channel_close once its streams are closed.
 */
int rpc_channel_open(const struct rpc_channel_config *cfg, struct rpc_channel **out,
                     struct mon_error *err) MON_MUST_CHECK;

/* Destroys the channel (calls still in flight are cancelled); accepts NULL. */
void rpc_channel_close(struct rpc_channel *ch);

/*
 * Sends req to path and waits for the reply. On success *resp_out is a
 * message unpacked with protobuf-c's default allocator: the caller frees it
 * with protobuf_c_message_free_unpacked. Returns 0, or the MON_E* code
 * mapped from the gRPC status; status (may be NULL) is filled either way,
 * with failures seen on this side (bad metadata, undecodable reply) given
 * the gRPC code a client library reports for them.
 */
int rpc_unary_call(struct rpc_channel *ch, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp_out,
                   const struct rpc_call_options *opts, struct rpc_status *status) MON_MUST_CHECK;

/*
 * Starts a server-streaming call: sends req and half-closes, waiting until
 * the request is handed to the transport. A server that cannot be reached
 * fails here (UNAVAILABLE) rather than at the first rpc_cstream_next. The
 * call deadline (opts->timeout_ms > 0) bounds the whole stream. The caller
 * owns *out and frees it with rpc_cstream_close.
 */
int rpc_cstream_open(struct rpc_channel *ch, const char *path, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp_desc, const struct rpc_call_options *opts,
                     struct rpc_cstream **out, struct rpc_status *status) MON_MUST_CHECK;

/*
 * Returned by rpc_cstream_next when wait_ms passed with no message. Not a
 * MON_E* code, so it cannot be mistaken for a stream that failed with
 * DEADLINE_EXCEEDED (MON_EDEADLINE).
 */
#define RPC_CSTREAM_TIMEOUT (-100)

/*
 * Waits up to wait_ms (< 0: forever, bounded by the call deadline; 0: only
 * poll) for the next message. Returns 1 with *msg_out (freed by the caller
 * with protobuf_c_message_free_unpacked), 0 when the stream ended with OK,
 * RPC_CSTREAM_TIMEOUT when wait_ms passed with nothing (the stream stays
 * usable and no message is lost), or a negative MON_E* code with status
 * filled when the stream failed. Once the stream has ended, every further
 * call returns the same outcome again.
 */
int rpc_cstream_next(struct rpc_cstream *s, ProtobufCMessage **msg_out, int64_t wait_ms,
                     struct rpc_status *status) MON_MUST_CHECK;

/* Cancels the call if still open and frees the stream; accepts NULL. */
void rpc_cstream_close(struct rpc_cstream *s);

#endif
