/*
 * libmonitoring's client object (<monitoring/client.h>) over the RPC
 * runtime's client side (src/rpc/client.h): reads the TLS files, holds the
 * credentials sent with every call and the default deadline, and turns the
 * runtime's statuses into the public ones. A state-changing call gets an
 * idempotency key when its caller set none, and is retried with that key
 * when the server was unavailable or could not tell the outcome. A
 * mon_client owns its channel and its copies of the options.
 */
#include "monitoring/client.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client_call.h"
#include "rpc/client.h"
#include "rpc/idem.h"
#include "rpc/status.h"
#include "util/clock.h"
#include "util/error.h"

#define DEFAULT_TIMEOUT_MS 30000
#define MAX_PEM_BYTES ((size_t)1 << 20)
#define MAX_API_KEY_BYTES 4096
#define MAX_REQUEST_ID_BYTES 256
/*
 * Retries of a call with an idempotency key: at most this many attempts in
 * all, with a backoff doubling from RETRY_INITIAL_MS to RETRY_MAX_MS, all
 * within the call's own deadline.
 */
#define RETRY_MAX_ATTEMPTS 4
#define RETRY_INITIAL_MS 100
#define RETRY_MAX_MS 2000

/* gRPC status codes used for failures seen in the library itself. */
#define STATUS_INVALID_ARGUMENT 3
#define STATUS_RESOURCE_EXHAUSTED 8

struct mon_client {
	struct rpc_channel *channel;
	char *authorization; /* "Bearer <key>", or NULL */
	int64_t default_timeout_ms;
};

struct mon_stream {
	struct rpc_cstream *cs;
};

static void status_set(mon_status *status, int code, const char *message)
{
	if (status == NULL)
		return;
	status->code = code;
	snprintf(status->message, sizeof(status->message), "%s", message != NULL ? message : "");
}

static void status_from_rpc(mon_status *status, const struct rpc_status *st)
{
	status_set(status, st->code, st->message);
}

/*
 * Reads a whole PEM file into a NUL-terminated string owned by the caller
 * (*out, free()). option names the option in error messages.
 */
static int pem_read(const char *option, const char *path, char **out, struct mon_error *err)
{
	int rc = MON_OK;
	FILE *f = NULL;
	char *buf = NULL;
	size_t len = 0;

	*out = NULL;
	f = fopen(path, "rb");
	if (f == NULL) {
		rc = mon_error_set(err, MON_EINVAL, "%s: could not open \"%s\": %s", option, path, strerror(errno));
		goto out;
	}
	buf = malloc(MAX_PEM_BYTES + 1);
	if (buf == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	len = fread(buf, 1, MAX_PEM_BYTES + 1, f);
	if (ferror(f)) {
		rc = mon_error_set(err, MON_EINVAL, "%s: could not read \"%s\": %s", option, path, strerror(errno));
		goto out;
	}
	if (len > MAX_PEM_BYTES) {
		rc = mon_error_set(err, MON_EINVAL, "%s: \"%s\" is larger than 1 MiB", option, path);
		goto out;
	}
	buf[len] = '\0';
	if (len == 0 || memchr(buf, '\0', len) != NULL || strstr(buf, "-----BEGIN ") == NULL) {
		rc = mon_error_set(err, MON_EINVAL, "%s: \"%s\" is not a PEM file", option, path);
		goto out;
	}
	*out = buf;
	buf = NULL;
out:
	if (f != NULL)
		fclose(f);
	free(buf);
	return rc;
}

static bool is_set(const char *s)
{
	return s != NULL && s[0] != '\0';
}

MON_API int mon_client_open(const mon_client_options *opts, mon_client **out, mon_status *status)
{
	int rc = MON_OK;
	struct mon_error err = {.code = MON_OK};
	mon_client *c = NULL;
	char *ca = NULL, *cert = NULL, *key = NULL;

	status_set(status, 0, NULL);
	if (out == NULL) {
		rc = mon_error_set(&err, MON_EINVAL, "out: NULL");
		goto out;
	}
	*out = NULL;
	if (opts == NULL || !is_set(opts->target)) {
		rc = mon_error_set(&err, MON_EINVAL, "target: required");
		goto out;
	}
	if (is_set(opts->tls_cert_file) != is_set(opts->tls_key_file)) {
		rc = mon_error_set(&err, MON_EINVAL,
		                   "tls_cert_file, tls_key_file: set both for mutual TLS, or neither");
		goto out;
	}
	if (is_set(opts->tls_cert_file) && !is_set(opts->tls_ca_file)) {
		rc = mon_error_set(&err, MON_EINVAL, "tls_ca_file: required with a client certificate");
		goto out;
	}
	if (opts->default_timeout_ms < 0) {
		rc = mon_error_set(&err, MON_EINVAL, "default_timeout_ms: must not be negative");
		goto out;
	}
	if (is_set(opts->api_key)) {
		size_t klen = strnlen(opts->api_key, MAX_API_KEY_BYTES + 1);
		if (klen > MAX_API_KEY_BYTES) {
			rc = mon_error_set(&err, MON_EINVAL, "api_key: longer than %d bytes", MAX_API_KEY_BYTES);
			goto out;
		}
		for (size_t i = 0; i < klen; i++) {
			unsigned char ch = (unsigned char)opts->api_key[i];
			if (ch <= 0x20 || ch > 0x7e) {
				rc = mon_error_set(&err, MON_EINVAL, "api_key: must be printable ASCII without spaces");
				goto out;
			}
		}
	}
	if (is_set(opts->tls_ca_file) && (rc = pem_read("tls_ca_file", opts->tls_ca_file, &ca, &err)) != MON_OK)
		goto out;
	if (is_set(opts->tls_cert_file) && (rc = pem_read("tls_cert_file", opts->tls_cert_file, &cert, &err)) != MON_OK)
		goto out;
	if (is_set(opts->tls_key_file) && (rc = pem_read("tls_key_file", opts->tls_key_file, &key, &err)) != MON_OK)
		goto out;

	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		rc = mon_error_set(&err, MON_ENOMEM, "out of memory");
		goto out;
	}
	c->default_timeout_ms = opts->default_timeout_ms > 0 ? opts->default_timeout_ms : DEFAULT_TIMEOUT_MS;
	if (is_set(opts->api_key)) {
		size_t n = strlen(opts->api_key) + sizeof("Bearer ");
		c->authorization = malloc(n);
		if (c->authorization == NULL) {
			rc = mon_error_set(&err, MON_ENOMEM, "out of memory");
			goto out;
		}
		snprintf(c->authorization, n, "Bearer %s", opts->api_key);
	}
	struct rpc_channel_config cfg = {
	        .target = opts->target,
	        .tls_ca_pem = ca,
	        .tls_cert_pem = cert,
	        .tls_key_pem = key,
	        .authority = is_set(opts->authority) ? opts->authority : NULL,
	};
	rc = rpc_channel_open(&cfg, &c->channel, &err);
	if (rc != MON_OK)
		goto out;
	*out = c;
	c = NULL;
out:
	if (rc != MON_OK)
		status_set(status, rc == MON_ENOMEM ? STATUS_RESOURCE_EXHAUSTED : STATUS_INVALID_ARGUMENT, err.msg);
	mon_client_close(c);
	free(ca);
	free(cert);
	if (key != NULL) {
		/* The private key should not linger in freed memory. */
		volatile char *p = key;
		while (*p != '\0')
			*p++ = '\0';
		free(key);
	}
	return rc;
}

MON_API void mon_client_options_from_env(mon_client_options *opts)
{
	static const struct {
		const char *name;
		size_t offset;
	} vars[] = {
	        {"MONITORD_TARGET", offsetof(mon_client_options, target)},
	        {"MONITORD_API_KEY", offsetof(mon_client_options, api_key)},
	        {"MONITORD_TLS_CA", offsetof(mon_client_options, tls_ca_file)},
	        {"MONITORD_TLS_CERT", offsetof(mon_client_options, tls_cert_file)},
	        {"MONITORD_TLS_KEY", offsetof(mon_client_options, tls_key_file)},
	};
	if (opts == NULL)
		return;
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		const char *v = getenv(vars[i].name);
		if (is_set(v))
			*(const char **)((char *)opts + vars[i].offset) = v;
	}
}

MON_API void mon_client_close(mon_client *client)
{
	if (client == NULL)
		return;
	rpc_channel_close(client->channel);
	free(client->authorization);
	free(client);
}

/*
 * Builds the runtime's call options: deadline and metadata. md must hold 4
 * entries and stay alive for the call.
 */
static int call_options(const mon_client *client, const mon_call_options *opts, bool is_stream, const char **md,
                        struct rpc_call_options *out, mon_status *status)
{
	size_t pairs = 0;
	int64_t timeout_ms = opts != NULL ? opts->timeout_ms : 0;

	if (timeout_ms == 0 && !is_stream)
		timeout_ms = client->default_timeout_ms;
	if (client->authorization != NULL) {
		md[2 * pairs] = "authorization";
		md[2 * pairs + 1] = client->authorization;
		pairs++;
	}
	if (opts != NULL && is_set(opts->request_id)) {
		if (strnlen(opts->request_id, MAX_REQUEST_ID_BYTES + 1) > MAX_REQUEST_ID_BYTES) {
			status_set(status, STATUS_INVALID_ARGUMENT, "request_id: longer than 256 bytes");
			return MON_EINVAL;
		}
		md[2 * pairs] = "x-request-id";
		md[2 * pairs + 1] = opts->request_id;
		pairs++;
	}
	out->timeout_ms = timeout_ms;
	out->metadata = pairs > 0 ? md : NULL;
	out->metadata_pairs = pairs;
	return MON_OK;
}

/* Sleeps ms milliseconds (a retry's backoff), resuming after signals. */
static void sleep_ms(int64_t ms)
{
	struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* A backoff between half and all of base_ms (equal jitter), from the key's random bytes and the attempt. */
static int64_t jittered(int64_t base_ms, const char *key, int attempt)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a over the key and the attempt */
	for (const char *p = key; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	h = (h ^ (uint64_t)attempt) * 1099511628211ull;
	return base_ms / 2 + (int64_t)(h % (uint64_t)(base_ms / 2 + 1));
}

int client_call_unary(mon_client *client, const char *path, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                      const mon_call_options *opts, bool is_retried, mon_status *status)
{
	const char *md[4];
	struct rpc_call_options ropts;
	struct rpc_status st;
	ProtobufCMessage *msg = NULL;
	ProtobufCMessage *keyed = NULL; /* a shallow copy of req carrying the key the library chose */
	char key[RPC_IDEM_UUID_LEN];

	if (resp != NULL)
		*resp = NULL;
	if (client == NULL || path == NULL || req == NULL || resp_desc == NULL) {
		status_set(status, STATUS_INVALID_ARGUMENT,
		           "mon_call_unary: NULL client, path, request or response type");
		return MON_EINVAL;
	}
	int rc = call_options(client, opts, false, md, &ropts, status);
	if (rc != MON_OK)
		return rc;
	/*
	 * A state-changing call (its request has an idempotency key field) gets
	 * a fresh key when the caller set none, and keeps it on every retry, so
	 * a retry of a call that did happen answers its first outcome.
	 */
	const ProtobufCFieldDescriptor *key_field = rpc_idem_key_field(req->descriptor);
	const char *key_text = rpc_idem_key(req, key_field);
	if (key_field != NULL && key_text[0] == '\0' && rpc_idem_new_key(key) == 0) {
		keyed = malloc(req->descriptor->sizeof_message);
		if (keyed == NULL) {
			status_set(status, STATUS_RESOURCE_EXHAUSTED, "out of memory");
			return MON_ENOMEM;
		}
		rpc_idem_copy_with_key(keyed, req, key_field, key);
		req = keyed;
		key_text = key;
	}
	bool has_key = key_text[0] != '\0';
	int64_t deadline_ms = ropts.timeout_ms > 0 ? mon_now_ms() + ropts.timeout_ms : INT64_MAX;
	int64_t backoff_ms = RETRY_INITIAL_MS;
	for (int attempt = 1;; attempt++) {
		rc = rpc_unary_call(client->channel, path, req, resp_desc, &msg, &ropts, &st);
		if (rc == MON_OK || !has_key || !is_retried || attempt >= RETRY_MAX_ATTEMPTS ||
		    !rpc_idem_is_retryable(st.code, st.message))
			break;
		int64_t wait_ms = jittered(backoff_ms, key_text, attempt);
		int64_t now_ms = mon_now_ms();
		if (deadline_ms != INT64_MAX && now_ms + wait_ms >= deadline_ms)
			break; /* no time left for another attempt: the last failure answers */
		sleep_ms(wait_ms);
		if (deadline_ms != INT64_MAX)
			ropts.timeout_ms = deadline_ms - mon_now_ms() > 1 ? deadline_ms - mon_now_ms() : 1;
		backoff_ms = backoff_ms * 2 < RETRY_MAX_MS ? backoff_ms * 2 : RETRY_MAX_MS;
	}
	free(keyed);
	status_from_rpc(status, &st);
	if (resp != NULL)
		*resp = msg;
	else
		mon_message_free(msg);
	return rc;
}

MON_API int mon_call_unary(mon_client *client, const char *path, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                           const mon_call_options *opts, mon_status *status)
{
	return client_call_unary(client, path, req, resp_desc, resp, opts, true, status);
}

MON_API int mon_stream_open(mon_client *client, const char *path, const ProtobufCMessage *req,
                            const ProtobufCMessageDescriptor *resp_desc, const mon_call_options *opts, mon_stream **out,
                            mon_status *status)
{
	int rc = MON_OK;
	const char *md[4];
	struct rpc_call_options ropts;
	struct rpc_status st;
	mon_stream *s = NULL;

	if (out == NULL || client == NULL || path == NULL || req == NULL || resp_desc == NULL) {
		status_set(status, STATUS_INVALID_ARGUMENT,
		           "mon_stream_open: NULL client, path, request, response type or out");
		rc = MON_EINVAL;
		goto out;
	}
	*out = NULL;
	rc = call_options(client, opts, true, md, &ropts, status);
	if (rc != MON_OK)
		goto out;
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		status_set(status, STATUS_RESOURCE_EXHAUSTED, "out of memory");
		rc = MON_ENOMEM;
		goto out;
	}
	rc = rpc_cstream_open(client->channel, path, req, resp_desc, &ropts, &s->cs, &st);
	status_from_rpc(status, &st);
	if (rc != MON_OK)
		goto out;
	*out = s;
	s = NULL;
out:
	mon_stream_close(s);
	return rc;
}

MON_API int mon_stream_next(mon_stream *stream, ProtobufCMessage **msg, int64_t wait_ms, mon_status *status)
{
	struct rpc_status st;
	ProtobufCMessage *m = NULL;

	if (msg != NULL)
		*msg = NULL;
	if (stream == NULL) {
		status_set(status, STATUS_INVALID_ARGUMENT, "mon_stream_next: NULL stream");
		return MON_EINVAL;
	}
	int rc = rpc_cstream_next(stream->cs, &m, wait_ms, &st);
	if (rc == RPC_CSTREAM_TIMEOUT) {
		status_set(status, 0, NULL);
		return MON_STREAM_TIMEOUT;
	}
	status_from_rpc(status, &st);
	if (msg != NULL)
		*msg = m;
	else
		mon_message_free(m);
	return rc;
}

MON_API void mon_stream_close(mon_stream *stream)
{
	if (stream == NULL)
		return;
	rpc_cstream_close(stream->cs);
	free(stream);
}

MON_API void mon_message_free(ProtobufCMessage *msg)
{
	if (msg != NULL)
		protobuf_c_message_free_unpacked(msg, NULL);
}

MON_API const char *mon_status_code_name(int code)
{
	return rpc_status_name(code);
}
