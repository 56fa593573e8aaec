/*
 * libmonitoring: the C client of monitord.
 *
 * A mon_client is a connection to one monitord (plaintext, TLS or mTLS).
 * Typed stubs for every RPC are generated from the API (one header per
 * service, included by <monitoring/monitoring.h>); they use the generic
 * calls declared here. No gRPC type appears in this API.
 *
 * Messages are protobuf-c structs. A response returned by a stub belongs to
 * the caller, who frees it with mon_message_free.
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
	const char *target;       /* "127.0.0.1:50051" or "unix:/path"; required */
	const char *tls_ca_file;  /* PEM file: use TLS and trust this CA; NULL for plaintext */
	const char *tls_cert_file;/* client certificate for mutual TLS (with tls_key_file) */
	const char *tls_key_file;
	const char *api_key;      /* sent as "authorization: Bearer <key>" when set */
	int64_t default_timeout_ms; /* deadline for calls whose options set none; 0: 30000 */
} mon_client_options;

typedef struct mon_call_options {
	int64_t timeout_ms;             /* 0: the client's default */
	const char *request_id;         /* sent as x-request-id when set */
} mon_call_options;

/*
 * Connects lazily to opts->target. Returns 0 and *out, or a negative code
 * with status->message saying what was wrong. Free with mon_client_close.
 */
MON_API int mon_client_open(const mon_client_options *opts, mon_client **out, mon_status *status);

/* Fills opts from MONITORD_TARGET, MONITORD_API_KEY, MONITORD_TLS_CA, MONITORD_TLS_CERT, MONITORD_TLS_KEY. */
MON_API void mon_client_options_from_env(mon_client_options *opts);

/* Closes the connection; accepts NULL. Streams must be closed first. */
MON_API void mon_client_close(mon_client *client);

/*
 * Generic unary call used by the generated stubs: sends req to method path
 * ("/monitoring.v1.AlertsService/ListAlerts") and on success stores the
 * reply in *resp (free with mon_message_free). Returns 0 or a negative code;
 * status (may be NULL) gets the gRPC status either way.
 */
MON_API int mon_call_unary(mon_client *client, const char *path, const ProtobufCMessage *req,
			   const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
			   const mon_call_options *opts, mon_status *status);

/*
 * Generic server-streaming call: opens the stream (the deadline in opts, if
 * any, bounds the whole stream; 0 means none for streams).
 */
MON_API int mon_stream_open(mon_client *client, const char *path, const ProtobufCMessage *req,
			    const ProtobufCMessageDescriptor *resp_desc, const mon_call_options *opts,
			    mon_stream **out, mon_status *status);

/*
 * Waits up to wait_ms (< 0: no limit) for the next message. Returns 1 and
 * *msg (free with mon_message_free), 0 when the server ended the stream with
 * OK, MON_STREAM_TIMEOUT when wait_ms passed (the stream stays open), or
 * another negative code with status filled when the stream failed.
 */
#define MON_STREAM_TIMEOUT (-9)
MON_API int mon_stream_next(mon_stream *stream, ProtobufCMessage **msg, int64_t wait_ms, mon_status *status);

/* Cancels the stream if still open and frees it; accepts NULL. */
MON_API void mon_stream_close(mon_stream *stream);

/* Frees a message returned by this library; accepts NULL. */
MON_API void mon_message_free(ProtobufCMessage *msg);

/* "OK", "INVALID_ARGUMENT", ... for a gRPC status code. */
MON_API const char *mon_status_code_name(int code);

#ifdef __cplusplus
}
#endif

#endif
