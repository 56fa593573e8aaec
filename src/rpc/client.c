/*
 * Client side of the RPC runtime over gRPC core: channels (plaintext, TLS,
 * mutual TLS), unary calls and server-streaming calls. Every call gets its
 * own pluck completion queue, so calls on one channel never wait on each
 * other and a channel can be shared by threads. This file owns the channel's
 * share of gRPC's global initialisation (one grpc_init per open channel).
 */
#include "rpc/client.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/status.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "rpc/status.h"

#define DEFAULT_MAX_RECV_BYTES ((size_t)16 * 1024 * 1024)
#define MAX_METADATA_PAIRS 64

/* Tags of the batches of one call. Each call has its own queue, so a small
 * constant is enough to tell them apart. */
#define TAG_UNARY ((void *)1)
#define TAG_SEND ((void *)2)
#define TAG_RECV ((void *)3)
#define TAG_STATUS ((void *)4)

struct rpc_channel {
	grpc_channel *channel;
};

struct rpc_cstream {
	grpc_call *call;
	grpc_completion_queue *cq;
	const ProtobufCMessageDescriptor *resp_desc;
	grpc_metadata_array initial_md;
	grpc_metadata_array trailing_md;
	grpc_status_code code;
	grpc_slice details;
	const char *error_string; /* gpr_malloc'ed by gRPC, may be NULL */
	grpc_byte_buffer *recv_buf;
	bool has_asked_initial_md; /* RECV_INITIAL_METADATA already started */
	bool is_recv_pending;      /* a RECV_MESSAGE batch is in flight */
	bool is_status_pending;    /* the RECV_STATUS batch was not plucked yet */
	bool is_done;              /* final_rc and final_status hold the outcome */
	int final_rc;
	struct rpc_status final_status;
};

/* Metadata to send, copied into slices owned by this struct. */
struct send_metadata {
	grpc_metadata items[MAX_METADATA_PAIRS];
	size_t count;
};

static void status_set(struct rpc_status *status, int code, const char *message)
{
	if (status == NULL)
		return;
	status->code = code;
	size_t len = message != NULL ? strnlen(message, sizeof(status->message) - 1) : 0;
	if (len > 0)
		memcpy(status->message, message, len);
	status->message[len] = '\0';
}

/* Fills status from what the server (or gRPC, for transport failures) said. */
static void status_from_call(struct rpc_status *status, grpc_status_code code, grpc_slice details,
                             const char *error_string)
{
	if (status == NULL)
		return;
	status->code = (int)code;
	size_t len = GRPC_SLICE_LENGTH(details);
	if (len == 0 && code != GRPC_STATUS_OK && error_string != NULL) {
		status_set(status, (int)code, error_string);
		return;
	}
	if (len > sizeof(status->message) - 1)
		len = sizeof(status->message) - 1;
	if (len > 0)
		memcpy(status->message, GRPC_SLICE_START_PTR(details), len);
	status->message[len] = '\0';
}

/* Records a failure detected on this side and returns its MON_E* code. */
static int fail_local(struct rpc_status *status, int grpc_code, const char *message)
{
	status_set(status, grpc_code, message);
	return rpc_status_to_mon(grpc_code);
}

static gpr_timespec deadline_after_ms(int64_t ms)
{
	if (ms < 0)
		return gpr_inf_future(GPR_CLOCK_MONOTONIC);
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

static void send_metadata_free(struct send_metadata *md)
{
	for (size_t i = 0; i < md->count; i++) {
		grpc_slice_unref(md->items[i].key);
		grpc_slice_unref(md->items[i].value);
	}
	md->count = 0;
}

/* gRPC's rules for metadata: lowercase keys of [0-9a-z-_.]; printable ASCII values (unless the key ends in -bin). */
static bool metadata_key_is_valid(const char *key)
{
	if (key[0] == '\0' || key[0] == ':')
		return false;
	for (const char *p = key; *p != '\0'; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

static bool metadata_value_is_valid(const char *key, const char *value)
{
	size_t klen = strlen(key);
	if (klen > 4 && strcmp(key + klen - 4, "-bin") == 0)
		return true;
	for (const char *p = value; *p != '\0'; p++) {
		if (*p < 0x20 || *p > 0x7e)
			return false;
	}
	return true;
}

/* Copies the key/value pairs of opts into md; md must be freed with send_metadata_free either way. */
static int send_metadata_build(const struct rpc_call_options *opts, struct send_metadata *md, struct rpc_status *status)
{
	md->count = 0;
	if (opts == NULL || opts->metadata_pairs == 0)
		return MON_OK;
	if (opts->metadata == NULL)
		return fail_local(status, GRPC_STATUS_INVALID_ARGUMENT, "metadata: pairs given without an array");
	if (opts->metadata_pairs > MAX_METADATA_PAIRS)
		return fail_local(status, GRPC_STATUS_INVALID_ARGUMENT, "metadata: too many pairs (limit 64)");
	for (size_t i = 0; i < opts->metadata_pairs; i++) {
		const char *key = opts->metadata[2 * i];
		const char *value = opts->metadata[2 * i + 1];
		if (key == NULL || value == NULL)
			return fail_local(status, GRPC_STATUS_INVALID_ARGUMENT, "metadata: NULL key or value");
		if (!metadata_key_is_valid(key) || !metadata_value_is_valid(key, value)) {
			char msg[160];
			snprintf(msg, sizeof(msg), "metadata: invalid key or value for \"%.100s\"", key);
			return fail_local(status, GRPC_STATUS_INVALID_ARGUMENT, msg);
		}
		grpc_metadata *m = &md->items[md->count];
		memset(m, 0, sizeof(*m));
		m->key = grpc_slice_from_copied_string(key);
		m->value = grpc_slice_from_copied_string(value);
		md->count++;
	}
	return MON_OK;
}

/* Serialises msg into a new byte buffer owned by the caller (*out). */
static int message_pack(const ProtobufCMessage *msg, grpc_byte_buffer **out, struct rpc_status *status)
{
	*out = NULL;
	if (msg == NULL)
		return fail_local(status, GRPC_STATUS_INVALID_ARGUMENT, "request: NULL message");
	size_t len = protobuf_c_message_get_packed_size(msg);
	grpc_slice slice = grpc_slice_malloc(len);
	size_t packed = protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
	if (packed != len) {
		grpc_slice_unref(slice);
		return fail_local(status, GRPC_STATUS_INTERNAL, "request: could not serialise message");
	}
	*out = grpc_raw_byte_buffer_create(&slice, 1);
	grpc_slice_unref(slice);
	return MON_OK;
}

/*
 * Decodes a received buffer with protobuf-c's default allocator. The caller
 * owns *out (protobuf_c_message_free_unpacked) and still owns buf.
 */
static int message_unpack(grpc_byte_buffer *buf, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
                          struct rpc_status *status)
{
	*out = NULL;
	grpc_byte_buffer_reader reader;
	if (!grpc_byte_buffer_reader_init(&reader, buf))
		return fail_local(status, GRPC_STATUS_INTERNAL, "response: could not read message");
	grpc_slice slice = grpc_byte_buffer_reader_readall(&reader);
	grpc_byte_buffer_reader_destroy(&reader);
	ProtobufCMessage *msg =
	        protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(slice), GRPC_SLICE_START_PTR(slice));
	grpc_slice_unref(slice);
	if (msg == NULL)
		return fail_local(status, GRPC_STATUS_INTERNAL, "response: could not decode message");
	*out = msg;
	return MON_OK;
}

/* Creates a call on cq; returns NULL only when gRPC refuses (it normally never does). */
static grpc_call *call_create(struct rpc_channel *ch, grpc_completion_queue *cq, const char *path, int64_t timeout_ms)
{
	gpr_timespec deadline = timeout_ms > 0 ? deadline_after_ms(timeout_ms) : gpr_inf_future(GPR_CLOCK_MONOTONIC);
	grpc_slice method = grpc_slice_from_copied_string(path);
	grpc_call *call =
	        grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL, deadline, NULL);
	grpc_slice_unref(method);
	return call;
}

/* Shuts down and frees a pluck queue whose events have all been plucked; accepts NULL. */
static void queue_destroy(grpc_completion_queue *cq)
{
	if (cq == NULL)
		return;
	grpc_completion_queue_shutdown(cq);
	grpc_completion_queue_destroy(cq);
}

static int start_error(grpc_call_error e, struct rpc_status *status)
{
	if (e == GRPC_CALL_ERROR_INVALID_METADATA)
		return fail_local(status, GRPC_STATUS_INVALID_ARGUMENT, "metadata: invalid key or value");
	char msg[128];
	snprintf(msg, sizeof(msg), "could not start call: %s", grpc_call_error_to_string(e));
	return fail_local(status, GRPC_STATUS_INTERNAL, msg);
}

int rpc_channel_open(const struct rpc_channel_config *cfg, struct rpc_channel **out, struct mon_error *err)
{
	int rc = MON_OK;
	struct rpc_channel *ch = NULL;
	grpc_channel_credentials *creds = NULL;
	bool has_init = false;

	*out = NULL;
	if (cfg == NULL || cfg->target == NULL || cfg->target[0] == '\0') {
		rc = mon_error_set(err, MON_EINVAL, "target: required");
		goto out;
	}
	if ((cfg->tls_cert_pem == NULL) != (cfg->tls_key_pem == NULL)) {
		rc = mon_error_set(err, MON_EINVAL,
		                   "tls: a client certificate needs its key and a key its certificate");
		goto out;
	}
	if (cfg->tls_cert_pem != NULL && cfg->tls_ca_pem == NULL) {
		rc = mon_error_set(err, MON_EINVAL, "tls: a client certificate needs a CA to verify the server");
		goto out;
	}
	ch = calloc(1, sizeof(*ch));
	if (ch == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	grpc_init();
	has_init = true;

	if (cfg->tls_ca_pem != NULL) {
		grpc_ssl_pem_key_cert_pair pair = {.private_key = cfg->tls_key_pem, .cert_chain = cfg->tls_cert_pem};
		creds = grpc_ssl_credentials_create(cfg->tls_ca_pem, cfg->tls_cert_pem != NULL ? &pair : NULL, NULL,
		                                    NULL);
	} else {
		creds = grpc_insecure_credentials_create();
	}
	if (creds == NULL) {
		rc = mon_error_set(err, MON_EINVAL, "tls: could not create credentials");
		goto out;
	}

	size_t max_recv = cfg->max_recv_message_bytes != 0 ? cfg->max_recv_message_bytes : DEFAULT_MAX_RECV_BYTES;
	if (max_recv > INT_MAX)
		max_recv = INT_MAX;
	grpc_arg args[3];
	size_t nargs = 0;
	args[nargs].type = GRPC_ARG_INTEGER;
	args[nargs].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[nargs].value.integer = (int)max_recv;
	nargs++;
	if (cfg->authority != NULL && cfg->authority[0] != '\0') {
		args[nargs].type = GRPC_ARG_STRING;
		args[nargs].key = (char *)GRPC_ARG_DEFAULT_AUTHORITY;
		args[nargs].value.string = (char *)cfg->authority;
		nargs++;
		if (cfg->tls_ca_pem != NULL) {
			args[nargs].type = GRPC_ARG_STRING;
			args[nargs].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
			args[nargs].value.string = (char *)cfg->authority;
			nargs++;
		}
	}
	grpc_channel_args chargs = {.num_args = nargs, .args = args};
	ch->channel = grpc_channel_create(cfg->target, creds, &chargs);
	if (ch->channel == NULL) {
		rc = mon_error_set(err, MON_EINVAL, "target: could not create a channel to \"%s\"", cfg->target);
		goto out;
	}
	*out = ch;
	ch = NULL;
out:
	if (creds != NULL)
		grpc_channel_credentials_release(creds);
	if (ch != NULL) {
		free(ch);
		if (has_init)
			grpc_shutdown();
	}
	return rc;
}

void rpc_channel_close(struct rpc_channel *ch)
{
	if (ch == NULL)
		return;
	grpc_channel_destroy(ch->channel);
	free(ch);
	grpc_shutdown();
}

int rpc_unary_call(struct rpc_channel *ch, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp_out,
                   const struct rpc_call_options *opts, struct rpc_status *status)
{
	int rc = MON_OK;
	grpc_completion_queue *cq = NULL;
	grpc_call *call = NULL;
	grpc_byte_buffer *send_buf = NULL;
	grpc_byte_buffer *recv_buf = NULL;
	struct send_metadata md = {.count = 0};
	grpc_metadata_array initial_md;
	grpc_metadata_array trailing_md;
	grpc_status_code code = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice();
	const char *error_string = NULL;

	grpc_metadata_array_init(&initial_md);
	grpc_metadata_array_init(&trailing_md);
	*resp_out = NULL;
	status_set(status, GRPC_STATUS_OK, NULL);
	if (ch == NULL || path == NULL || resp_desc == NULL) {
		rc = fail_local(status, GRPC_STATUS_INVALID_ARGUMENT, "call: NULL channel, path or response type");
		goto out;
	}
	rc = message_pack(req, &send_buf, status);
	if (rc != MON_OK)
		goto out;
	rc = send_metadata_build(opts, &md, status);
	if (rc != MON_OK)
		goto out;

	cq = grpc_completion_queue_create_for_pluck(NULL);
	call = call_create(ch, cq, path, opts != NULL ? opts->timeout_ms : 0);
	if (call == NULL) {
		rc = fail_local(status, GRPC_STATUS_INTERNAL, "could not create call");
		goto out;
	}

	grpc_op ops[6];
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].data.send_initial_metadata.count = md.count;
	ops[0].data.send_initial_metadata.metadata = md.count > 0 ? md.items : NULL;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send_buf;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &recv_buf;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
	ops[5].data.recv_status_on_client.status = &code;
	ops[5].data.recv_status_on_client.status_details = &details;
	ops[5].data.recv_status_on_client.error_string = &error_string;
	grpc_call_error e = grpc_call_start_batch(call, ops, 6, TAG_UNARY, NULL);
	if (e != GRPC_CALL_OK) {
		rc = start_error(e, status);
		goto out;
	}
	/* The call's deadline bounds this wait; gRPC always completes the batch. */
	(void)grpc_completion_queue_pluck(cq, TAG_UNARY, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);

	status_from_call(status, code, details, error_string);
	if (code != GRPC_STATUS_OK) {
		rc = rpc_status_to_mon((int)code);
		goto out;
	}
	if (recv_buf == NULL) {
		rc = fail_local(status, GRPC_STATUS_INTERNAL, "response: server sent no message");
		goto out;
	}
	rc = message_unpack(recv_buf, resp_desc, resp_out, status);
out:
	if (call != NULL)
		grpc_call_unref(call);
	queue_destroy(cq);
	if (send_buf != NULL)
		grpc_byte_buffer_destroy(send_buf);
	if (recv_buf != NULL)
		grpc_byte_buffer_destroy(recv_buf);
	send_metadata_free(&md);
	grpc_metadata_array_destroy(&initial_md);
	grpc_metadata_array_destroy(&trailing_md);
	grpc_slice_unref(details);
	if (error_string != NULL)
		gpr_free((void *)error_string);
	return rc;
}

/*
 * Waits for the RECV_STATUS batch (the read side has ended or the call was
 * cancelled, so it is due) and records the stream's final outcome.
 */
static int cstream_finish(struct rpc_cstream *s, struct rpc_status *status)
{
	if (s->is_status_pending) {
		(void)grpc_completion_queue_pluck(s->cq, TAG_STATUS, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		s->is_status_pending = false;
	}
	if (!s->is_done) {
		status_from_call(&s->final_status, s->code, s->details, s->error_string);
		s->final_rc = s->code == GRPC_STATUS_OK ? 0 : rpc_status_to_mon((int)s->code);
		s->is_done = true;
	}
	if (status != NULL)
		*status = s->final_status;
	return s->final_rc;
}

/* Ends the stream on a failure seen on this side: cancels the call and records (code, message). */
static int cstream_fail(struct rpc_cstream *s, int grpc_code, const char *message, struct rpc_status *status)
{
	if (!s->is_done) {
		grpc_call_cancel(s->call, NULL);
		s->final_rc = fail_local(&s->final_status, grpc_code, message);
		s->is_done = true;
	}
	if (s->is_recv_pending) {
		(void)grpc_completion_queue_pluck(s->cq, TAG_RECV, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		s->is_recv_pending = false;
	}
	return cstream_finish(s, status);
}

int rpc_cstream_open(struct rpc_channel *ch, const char *path, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp_desc, const struct rpc_call_options *opts,
                     struct rpc_cstream **out, struct rpc_status *status)
{
	int rc = MON_OK;
	struct rpc_cstream *s = NULL;
	grpc_byte_buffer *send_buf = NULL;
	struct send_metadata md = {.count = 0};

	*out = NULL;
	status_set(status, GRPC_STATUS_OK, NULL);
	if (ch == NULL || path == NULL || resp_desc == NULL) {
		rc = fail_local(status, GRPC_STATUS_INVALID_ARGUMENT, "call: NULL channel, path or response type");
		goto out;
	}
	rc = message_pack(req, &send_buf, status);
	if (rc != MON_OK)
		goto out;
	rc = send_metadata_build(opts, &md, status);
	if (rc != MON_OK)
		goto out;
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		rc = fail_local(status, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	s->resp_desc = resp_desc;
	s->details = grpc_empty_slice();
	s->code = GRPC_STATUS_UNKNOWN;
	grpc_metadata_array_init(&s->initial_md);
	grpc_metadata_array_init(&s->trailing_md);
	s->cq = grpc_completion_queue_create_for_pluck(NULL);
	s->call = call_create(ch, s->cq, path, opts != NULL ? opts->timeout_ms : 0);
	if (s->call == NULL) {
		rc = fail_local(status, GRPC_STATUS_INTERNAL, "could not create call");
		goto out;
	}

	grpc_op ops[3];
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
	ops[0].data.recv_status_on_client.status = &s->code;
	ops[0].data.recv_status_on_client.status_details = &s->details;
	ops[0].data.recv_status_on_client.error_string = &s->error_string;
	grpc_call_error e = grpc_call_start_batch(s->call, ops, 1, TAG_STATUS, NULL);
	if (e != GRPC_CALL_OK) {
		rc = start_error(e, status);
		goto out;
	}
	s->is_status_pending = true;

	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].data.send_initial_metadata.count = md.count;
	ops[0].data.send_initial_metadata.metadata = md.count > 0 ? md.items : NULL;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send_buf;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	e = grpc_call_start_batch(s->call, ops, 3, TAG_SEND, NULL);
	if (e != GRPC_CALL_OK) {
		rc = start_error(e, status);
		goto out;
	}
	/* Waits until the request is handed to the transport (or the call failed,
	 * for example when the server cannot be reached); the metadata and the
	 * request buffer must live until then. */
	grpc_event ev = grpc_completion_queue_pluck(s->cq, TAG_SEND, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
	if (!ev.success) {
		rc = cstream_finish(s, status);
		if (rc == MON_OK)
			rc = fail_local(status, GRPC_STATUS_INTERNAL, "could not send request");
		goto out;
	}
	*out = s;
	s = NULL;
out:
	if (s != NULL)
		rpc_cstream_close(s);
	if (send_buf != NULL)
		grpc_byte_buffer_destroy(send_buf);
	send_metadata_free(&md);
	return rc;
}

int rpc_cstream_next(struct rpc_cstream *s, ProtobufCMessage **msg_out, int64_t wait_ms, struct rpc_status *status)
{
	*msg_out = NULL;
	status_set(status, GRPC_STATUS_OK, NULL);
	if (s == NULL)
		return fail_local(status, GRPC_STATUS_INVALID_ARGUMENT, "stream: NULL");
	if (s->is_done)
		return cstream_finish(s, status);

	if (!s->is_recv_pending) {
		grpc_op ops[2];
		size_t n = 0;
		memset(ops, 0, sizeof(ops));
		if (!s->has_asked_initial_md) {
			ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
			ops[n].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
			n++;
		}
		ops[n].op = GRPC_OP_RECV_MESSAGE;
		ops[n].data.recv_message.recv_message = &s->recv_buf;
		n++;
		grpc_call_error e = grpc_call_start_batch(s->call, ops, n, TAG_RECV, NULL);
		if (e != GRPC_CALL_OK) {
			struct rpc_status local;
			(void)start_error(e, &local);
			return cstream_fail(s, local.code, local.message, status);
		}
		s->has_asked_initial_md = true;
		s->is_recv_pending = true;
	}

	/* On a timeout the RECV_MESSAGE batch stays in flight: the next call
	 * waits for the same batch, so no message is lost. */
	grpc_event ev = grpc_completion_queue_pluck(s->cq, TAG_RECV, deadline_after_ms(wait_ms), NULL);
	if (ev.type == GRPC_QUEUE_TIMEOUT)
		return RPC_CSTREAM_TIMEOUT;
	s->is_recv_pending = false;

	if (s->recv_buf == NULL)
		return cstream_finish(s, status);

	struct rpc_status local;
	int rc = message_unpack(s->recv_buf, s->resp_desc, msg_out, &local);
	grpc_byte_buffer_destroy(s->recv_buf);
	s->recv_buf = NULL;
	if (rc != MON_OK)
		return cstream_fail(s, local.code, local.message, status);
	return 1;
}

void rpc_cstream_close(struct rpc_cstream *s)
{
	if (s == NULL)
		return;
	if (s->call != NULL) {
		if (s->is_status_pending)
			grpc_call_cancel(s->call, NULL);
		if (s->is_recv_pending)
			(void)grpc_completion_queue_pluck(s->cq, TAG_RECV, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		if (s->is_status_pending)
			(void)grpc_completion_queue_pluck(s->cq, TAG_STATUS, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		grpc_call_unref(s->call);
	}
	queue_destroy(s->cq);
	if (s->recv_buf != NULL)
		grpc_byte_buffer_destroy(s->recv_buf);
	grpc_metadata_array_destroy(&s->initial_md);
	grpc_metadata_array_destroy(&s->trailing_md);
	grpc_slice_unref(s->details);
	if (s->error_string != NULL)
		gpr_free((void *)s->error_string);
	free(s);
}
