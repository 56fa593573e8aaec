/*
 * libmonitoring: the C client of monitord.
 *
 * A mon_client is a connection to one monitord (plaintext, TLS or mTLS).
 * Typed stubs for every RPC are generated from the API (one header per
 * service, included by <monitoring/monitoring.h>); they use the generic
 * calls declared here. No gRPC type appears in this API.
 *
 * Messages are protobuf-c structs. A response returned by a stub belongs to
 * the caller, who frees it with mon_message_free. Requests stay the
 * caller's; the library only reads them during the call.
 *
 * Return values: 0 on success; a negative code on failure, with the
 * mon_status (when given) holding the gRPC status code and message, which
 * are what to branch on. Failures seen on the client side (a file that cannot
 * be read, bad options, a reply that cannot be decoded) are reported with the
 * gRPC code a client reports for them (INVALID_ARGUMENT, INTERNAL, ...).
 *
 * Threads: a mon_client may be shared by any number of threads, calls run
 * concurrently. A mon_stream belongs to one thread at a time. The library
 * initialises gRPC itself, once per open client.
 */
#ifndef MONITORING_CLIENT_H
#define MONITORING_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MON_BUILDING_LIBRARY)
#define MON_API __attribute__((visibility("default")))
#else
#define MON_API
#endif

typedef struct mon_client mon_client;
typedef struct mon_stream mon_stream;

/* Outcome of a call: a gRPC status code (0 is OK) and the server's message. */
typedef struct mon_status {
	int code;
	char message[512];
} mon_status;

typedef struct mon_client_options {
	const char *target;        /* "127.0.0.1:50051" or "unix:/path"; required */
	const char *tls_ca_file;   /* PEM file: use TLS and trust this CA; NULL for plaintext */
	const char *tls_cert_file; /* client certificate for mutual TLS (with tls_key_file) */
	const char *tls_key_file;
	const char *api_key;        /* sent as "authorization: Bearer <key>" when set */
	int64_t default_timeout_ms; /* deadline for calls whose options set none; 0: 30000 */
	const char *authority;      /* overrides :authority and the name checked in the server's
	                               certificate (connecting by address to "monitord.internal"); may be NULL */
} mon_client_options;

typedef struct mon_call_options {
	int64_t timeout_ms;     /* unary: 0 the client's default, < 0 none; streams: 0 none */
	const char *request_id; /* sent as x-request-id when set */
} mon_call_options;

/*
 * Connects lazily to opts->target (nothing is sent before the first call).
 * Reads the TLS files now. Returns 0 and *out, or a negative code with
 * status (may be NULL) saying what was wrong, naming the option or file.
 * The options are copied: opts may be freed after the call. The caller owns
 * *out and frees it with mon_client_close.
 */
MON_API int mon_client_open(const mon_client_options *opts, mon_client **out, mon_status *status);

/*
 * Sets the fields of opts whose variable is set and not empty:
 * MONITORD_TARGET, MONITORD_API_KEY, MONITORD_TLS_CA, MONITORD_TLS_CERT,
 * MONITORD_TLS_KEY. Other fields are left as they are, so a caller zeroes
 * opts first and overrides from its own flags after. The strings point into
 * the environment: do not free them, and copy them before changing it.
 */
MON_API void mon_client_options_from_env(mon_client_options *opts);

/* Closes the connection and frees client; accepts NULL. Its streams must be closed first. */
MON_API void mon_client_close(mon_client *client);

/*
 * Generic unary call used by the generated stubs: sends req to method path
 * ("/monitoring.v1.AlertsService/ListAlerts") with the client's api key and
 * opts->request_id as metadata, and on success stores the reply, decoded
 * with resp_desc, in *resp (free with mon_message_free; resp may be NULL to
 * discard it). opts may be NULL. Returns 0 or a negative code, *resp then
 * NULL; status (may be NULL) gets the gRPC status either way.
 *
 * Retries (docs/client.md): a state-changing call's request has an
 * idempotency key field (request_id, or idempotency_key where request_id
 * means something else). When the caller left it empty, the library sets a
 * fresh random UUID on a copy of req (req itself is not changed). A call
 * with a key that fails with UNAVAILABLE, or with UNKNOWN and a message
 * starting "outcome unknown", is sent again with the same key: at most 4
 * attempts, 100 ms to 2 s apart (doubling, jittered), all within the
 * call's deadline. The server answers a retry of a call that happened with
 * its first outcome. Reads and calls without a key are never retried.
 */
MON_API int mon_call_unary(mon_client *client, const char *path, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                           const mon_call_options *opts, mon_status *status);

/*
 * Generic server-streaming call: sends req to method path and returns the
 * open stream in *out (owned by the caller, freed with mon_stream_close).
 * The deadline in opts, if any, bounds the whole stream; 0 means none for
 * streams. A server that cannot be reached fails here (UNAVAILABLE).
 * Returns 0 or a negative code with status (may be NULL) filled.
 */
MON_API int mon_stream_open(mon_client *client, const char *path, const ProtobufCMessage *req,
                            const ProtobufCMessageDescriptor *resp_desc, const mon_call_options *opts, mon_stream **out,
                            mon_status *status);

/*
 * Returned by mon_stream_next when wait_ms passed with no message. It is
 * distinct from every failure, including a stream whose own deadline passed
 * (that one ends the stream with DEADLINE_EXCEEDED).
 */
#define MON_STREAM_TIMEOUT (-100)

/*
 * Waits up to wait_ms (< 0: no limit; 0: only poll) for the next message.
 * Returns 1 and *msg (free with mon_message_free; msg may be NULL to
 * discard it), 0 when the server ended the stream with OK,
 * MON_STREAM_TIMEOUT when wait_ms passed (the stream stays open and no
 * message is lost), or another negative code with status (may be NULL)
 * filled when the stream failed. Once the stream has ended, further calls
 * return the same outcome.
 */
MON_API int mon_stream_next(mon_stream *stream, ProtobufCMessage **msg, int64_t wait_ms, mon_status *status);

/* Cancels the stream if still open and frees it; accepts NULL. */
MON_API void mon_stream_close(mon_stream *stream);

/* Frees a message returned by this library; accepts NULL. */
MON_API void mon_message_free(ProtobufCMessage *msg);

/* "OK", "INVALID_ARGUMENT", ... for a gRPC status code; "UNKNOWN" when out of range. Never NULL. */
MON_API const char *mon_status_code_name(int code);

#ifdef __cplusplus
}
#endif

#endif
