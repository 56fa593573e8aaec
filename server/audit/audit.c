/*
 * The audit trail's writers: audit_write_tx, which inserts a handler's
 * event into tb_audit_event inside the handler's own transaction, and the
 * audit writer, a thread with a bounded queue that records refused calls
 * (they have no transaction of their own). Both build the same row and
 * insert it with the same statement. This file owns the row's formatting:
 * event ids, the peer's address, the "changes" diff and the clipping of
 * free text to the columns' lengths.
 */
#include "audit/audit.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "common/text.h"
#include "util/clock.h"
#include "util/log.h"

/* Column lengths of tb_audit_event (characters), and caps on its TEXT columns. */
#define COL_EVENT_ID 50
#define COL_USER_ID 50
#define COL_USER_EMAIL 255
#define COL_USER_ROLE 50
#define COL_RESOURCE_TYPE 100
#define COL_RESOURCE_ID 100
#define COL_RESOURCE_NAME 255
#define COL_REQUEST_ID 100
#define COL_MODULE 100
#define CAP_DESCRIPTION 1000
#define CAP_FAILURE_REASON 1000
#define CAP_USER_AGENT 256
/* Bytes for n characters of UTF-8, and the terminating NUL. */
#define UTF8_BYTES(n) ((n)*4 + 1)

/* Events written per transaction by the writer thread. */
#define WRITER_BATCH 100
/* Statement timeout of the writer's transactions. */
#define WRITER_TX_TIMEOUT_MS 5000
/* Backoff between failed attempts: doubles from the first to the last. */
#define WRITER_BACKOFF_MIN_MS 100
#define WRITER_BACKOFF_MAX_MS 5000
/* A batch failing this often for a reason other than the database being away is written row by row. */
#define WRITER_BATCH_ATTEMPTS 5

static const char *const action_types[] = {"create", "read",  "update", "delete",       "execute",
                                           "export", "login", "logout", "access-denied"};
static const char *const severities[] = {"debug", "info", "warning", "error", "fatal", "critical"};

static const struct db_stmt insert_stmt = {
        .name = "audit_event_insert",
        .sql = "INSERT INTO tb_audit_event (time, event_id, user_id, user_email, user_role, action_type,"
               " resource_type, resource_id, resource_name, description, before_data, after_data, changes,"
               " outcome, failure_reason, ip_address, user_agent, request_id, module, severity, metadata)"
               " VALUES (COALESCE(to_timestamp($1::bigint / 1000.0), now()), $2, $3, $4, $5,"
               " $6::audit_action_type, $7, $8, $9, $10, $11::jsonb, $12::jsonb, $13::jsonb, $14, $15,"
               " $16::inet, $17, $18, $19, $20::severity_level, COALESCE($21::jsonb, '{}'::jsonb))",
        .param_count = 21,
};

/* ---- pure helpers ---- */

void audit_clip_text(const char *in, size_t max_chars, char *out, size_t out_len)
{
	size_t o = 0, chars = 0;
	if (out_len == 0)
		return;
	const unsigned char *p = (const unsigned char *)(in ? in : "");
	const unsigned char *end = p + strlen((const char *)p);
	while (p < end && chars < max_chars) {
		size_t n = utf8_decode(p, (size_t)(end - p), NULL);
		if (n == 0) {
			if (o + 1 >= out_len)
				break;
			out[o++] = '?';
			p++;
		} else {
			if (o + n >= out_len)
				break;
			memcpy(out + o, p, n);
			o += n;
			p += n;
		}
		chars++;
	}
	out[o] = '\0';
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes in into out (gRPC escapes the brackets of IPv6 peers); a malformed escape is kept as is. */
static void percent_decode(const char *in, char *out, size_t out_len)
{
	size_t o = 0;
	for (size_t i = 0; in[i] != '\0' && o + 1 < out_len; i++) {
		int hi = in[i] == '%' ? hex_value(in[i + 1]) : -1;
		int lo = hi >= 0 ? hex_value(in[i + 2]) : -1;
		if (lo >= 0 && (hi != 0 || lo != 0)) {
			out[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			out[o++] = in[i];
		}
	}
	out[o] = '\0';
}

void audit_peer_ip(const char *peer, char *out, size_t out_len)
{
	char buf[128];
	unsigned char addr[sizeof(struct in6_addr)];
	const char *fallback = "0.0.0.0";
	if (out_len == 0)
		return;
	if (peer == NULL)
		goto out;
	if (strncmp(peer, "unix:", 5) == 0 || strncmp(peer, "unix-abstract:", 14) == 0) {
		fallback = "127.0.0.1";
		goto out;
	}
	if (strncmp(peer, "ipv4:", 5) == 0) {
		const char *host = peer + 5;
		const char *colon = strrchr(host, ':');
		size_t len = colon ? (size_t)(colon - host) : strlen(host);
		if (len == 0 || len >= sizeof(buf))
			goto out;
		memcpy(buf, host, len);
		buf[len] = '\0';
		if (inet_pton(AF_INET, buf, addr) != 1)
			goto out;
		snprintf(out, out_len, "%s", buf);
		return;
	}
	if (strncmp(peer, "ipv6:", 5) == 0) {
		char host[128];
		percent_decode(peer + 5, host, sizeof(host));
		const char *start = host, *end;
		if (host[0] == '[') {
			start = host + 1;
			end = strchr(start, ']');
		} else {
			end = strrchr(host, ':'); /* no brackets: only "addr:port" is meaningful if at all */
			if (end == NULL)
				end = host + strlen(host);
		}
		if (end == NULL)
			goto out;
		const char *zone = memchr(start, '%', (size_t)(end - start));
		if (zone != NULL)
			end = zone;
		size_t len = (size_t)(end - start);
		if (len == 0 || len >= sizeof(buf))
			goto out;
		memcpy(buf, start, len);
		buf[len] = '\0';
		if (inet_pton(AF_INET6, buf, addr) != 1)
			goto out;
		snprintf(out, out_len, "%s", buf);
		return;
	}
out:
	snprintf(out, out_len, "%s", fallback);
}

json_t *audit_changes(const json_t *before, const json_t *after)
{
	if (before == NULL && after == NULL)
		return NULL;
	json_t *changes = json_object();
	if (changes == NULL)
		return NULL;
	const json_t *b = json_is_object(before) ? before : NULL;
	const json_t *a = json_is_object(after) ? after : NULL;
	const char *key;
	json_t *value;
	/* json_object_foreach takes a non-const object; neither object is changed. */
	if (b != NULL) {
		json_object_foreach((json_t *)b, key, value)
		{
			json_t *to = a ? json_object_get(a, key) : NULL;
			if (to != NULL && json_equal(value, to))
				continue;
			json_t *pair = json_pack("{s:O, s:O}", "from", value, "to", to ? to : json_null());
			if (pair == NULL || json_object_set_new(changes, key, pair) != 0)
				goto fail;
		}
	}
	if (a != NULL) {
		json_object_foreach((json_t *)a, key, value)
		{
			if (b != NULL && json_object_get(b, key) != NULL)
				continue; /* present in both: handled above */
			json_t *pair = json_pack("{s:o, s:O}", "from", json_null(), "to", value);
			if (pair == NULL || json_object_set_new(changes, key, pair) != 0)
				goto fail;
		}
	}
	return changes;
fail:
	json_decref(changes);
	return NULL;
}

void audit_format_event_id(int64_t time_ms, const unsigned char random[8], char out[AUDIT_EVENT_ID_LEN + 1])
{
	uint64_t r = 0;
	for (int i = 0; i < 8; i++)
		r = (r << 8) | random[i];
	snprintf(out, AUDIT_EVENT_ID_LEN + 1, "AUD-%012" PRIx64 "-%016" PRIx64,
	         (uint64_t)time_ms & UINT64_C(0xffffffffffff), r);
}

/* ---- rows ---- */

/* One tb_audit_event row, as text parameters; empty nullable text is SQL NULL. */
struct row {
	int64_t time_ms; /* 0: the transaction's now() */
	char event_id[AUDIT_EVENT_ID_LEN + 1];
	char user_id[UTF8_BYTES(COL_USER_ID)];
	char user_email[UTF8_BYTES(COL_USER_EMAIL)];
	char user_role[UTF8_BYTES(COL_USER_ROLE)];
	char action[16];
	char resource_type[UTF8_BYTES(COL_RESOURCE_TYPE)];
	char resource_id[UTF8_BYTES(COL_RESOURCE_ID)];
	char resource_name[UTF8_BYTES(COL_RESOURCE_NAME)];
	char description[UTF8_BYTES(CAP_DESCRIPTION)];
	char outcome[8];
	char failure_reason[UTF8_BYTES(CAP_FAILURE_REASON)];
	char ip[64];
	char user_agent[UTF8_BYTES(CAP_USER_AGENT)];
	char request_id[UTF8_BYTES(COL_REQUEST_ID)];
	char module[UTF8_BYTES(COL_MODULE)];
	char severity[16];
	char *before; /* JSON text, malloc'd by jansson; NULL is SQL NULL */
	char *after;
	char *changes;
	char *metadata;
};

static void row_free_json(struct row *r)
{
	free(r->before);
	free(r->after);
	free(r->changes);
	free(r->metadata);
	r->before = r->after = r->changes = r->metadata = NULL;
}

static const char *nullable(const char *s)
{
	return s[0] != '\0' ? s : NULL;
}

static int insert_row(struct db_conn *conn, const struct row *r, struct mon_error *err)
{
	char time_buf[24];
	snprintf(time_buf, sizeof(time_buf), "%" PRId64, r->time_ms);
	const char *params[21] = {
	        r->time_ms > 0 ? time_buf : NULL,
	        r->event_id,
	        r->user_id,
	        r->user_email,
	        r->user_role,
	        r->action,
	        r->resource_type,
	        nullable(r->resource_id),
	        nullable(r->resource_name),
	        r->description,
	        r->before,
	        r->after,
	        r->changes,
	        r->outcome,
	        nullable(r->failure_reason),
	        r->ip,
	        nullable(r->user_agent),
	        nullable(r->request_id),
	        nullable(r->module),
	        r->severity,
	        r->metadata,
	};
	return db_exec_stmt(conn, &insert_stmt, params, NULL, err);
}

static bool is_one_of(const char *s, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s, list[i]) == 0)
			return true;
	return false;
}

static void init_sodium(void)
{
	if (sodium_init() < 0)
		log_error("msg=\"could not initialise libsodium\"");
}

static void random_bytes(unsigned char *buf, size_t n)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, init_sodium);
	randombytes_buf(buf, n);
}

static void new_event_id(int64_t time_ms, char out[AUDIT_EVENT_ID_LEN + 1])
{
	unsigned char rnd[8];
	random_bytes(rnd, sizeof(rnd));
	audit_format_event_id(time_ms, rnd, out);
}

/* JSON text of v (compact, keys in insertion order), or NULL for NULL; *out is malloc'd. */
static int dump_json(const json_t *v, char **out, struct mon_error *err)
{
	*out = NULL;
	if (v == NULL)
		return 0;
	*out = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if (*out == NULL)
		return mon_error_set(err, MON_ENOMEM, "audit event: could not encode before/after data");
	return 0;
}

/* {"auth_method": ..., "key_id": ...} for the metadata column, as JSON text; *out is malloc'd. */
static int metadata_json(const char *auth_method, const char *key_id, const char *status, char **out,
                         struct mon_error *err)
{
	json_t *m = json_object();
	int rc = 0;
	if (m == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "audit event: out of memory");
		goto out;
	}
	if ((auth_method && auth_method[0] && json_object_set_new(m, "auth_method", json_string(auth_method)) != 0) ||
	    (key_id && key_id[0] && json_object_set_new(m, "key_id", json_string(key_id)) != 0) ||
	    (status && json_object_set_new(m, "status", json_string(status)) != 0)) {
		rc = mon_error_set(err, MON_ENOMEM, "audit event: out of memory");
		goto out;
	}
	rc = dump_json(m, out, err);
out:
	json_decref(m);
	return rc;
}

int audit_write_tx(struct db_conn *conn, struct rpc_ctx *ctx, const struct audit_event *ev, struct mon_error *err)
{
	struct row *r = NULL;
	json_t *changes = NULL;
	int rc = 0;
	if (ev == NULL || ev->action == NULL || ev->resource_type == NULL || ev->resource_type[0] == '\0' ||
	    ev->description == NULL || ev->description[0] == '\0') {
		rc = mon_error_set(err, MON_EINVAL, "audit event: action, resource_type and description are required");
		goto out;
	}
	if (!is_one_of(ev->action, action_types, sizeof(action_types) / sizeof(action_types[0]))) {
		rc = mon_error_set(err, MON_EINVAL, "audit event: action \"%s\" is not an audit action type",
		                   ev->action);
		goto out;
	}
	const char *severity = ev->severity ? ev->severity : "info";
	if (!is_one_of(severity, severities, sizeof(severities) / sizeof(severities[0]))) {
		rc = mon_error_set(err, MON_EINVAL, "audit event: severity \"%s\" is not a severity level", severity);
		goto out;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "audit event: out of memory");
		goto out;
	}

	new_event_id(mon_wall_ms(), r->event_id);
	const struct rpc_identity *who = ctx ? rpc_ctx_identity(ctx) : NULL;
	if (ctx == NULL) {
		audit_clip_text("system", COL_USER_ID, r->user_id, sizeof(r->user_id));
		audit_clip_text("none", COL_USER_ROLE, r->user_role, sizeof(r->user_role));
		snprintf(r->ip, sizeof(r->ip), "127.0.0.1");
	} else {
		audit_clip_text(who ? who->caller_id : "anonymous", COL_USER_ID, r->user_id, sizeof(r->user_id));
		audit_clip_text(who ? who->email : "", COL_USER_EMAIL, r->user_email, sizeof(r->user_email));
		audit_clip_text(who ? rpc_role_name(who->role) : "none", COL_USER_ROLE, r->user_role,
		                sizeof(r->user_role));
		audit_peer_ip(rpc_ctx_peer(ctx), r->ip, sizeof(r->ip));
		audit_clip_text(rpc_ctx_metadata(ctx, "user-agent"), CAP_USER_AGENT, r->user_agent,
		                sizeof(r->user_agent));
		audit_clip_text(rpc_ctx_request_id(ctx), COL_REQUEST_ID, r->request_id, sizeof(r->request_id));
	}
	snprintf(r->action, sizeof(r->action), "%s", ev->action);
	snprintf(r->severity, sizeof(r->severity), "%s", severity);
	snprintf(r->outcome, sizeof(r->outcome), "success");
	audit_clip_text(ev->resource_type, COL_RESOURCE_TYPE, r->resource_type, sizeof(r->resource_type));
	audit_clip_text(ev->resource_id, COL_RESOURCE_ID, r->resource_id, sizeof(r->resource_id));
	audit_clip_text(ev->resource_name, COL_RESOURCE_NAME, r->resource_name, sizeof(r->resource_name));
	audit_clip_text(ev->description, CAP_DESCRIPTION, r->description, sizeof(r->description));
	audit_clip_text(ev->module, COL_MODULE, r->module, sizeof(r->module));

	if (ev->before != NULL || ev->after != NULL) {
		changes = audit_changes(ev->before, ev->after);
		if (changes == NULL) {
			rc = mon_error_set(err, MON_ENOMEM, "audit event: out of memory");
			goto out;
		}
	}
	rc = dump_json(ev->before, &r->before, err);
	if (rc == 0)
		rc = dump_json(ev->after, &r->after, err);
	if (rc == 0)
		rc = dump_json(changes, &r->changes, err);
	if (rc == 0)
		rc = metadata_json(who ? who->auth_method : NULL, who ? who->key_id : NULL, NULL, &r->metadata, err);
	if (rc != 0)
		goto out;
	rc = insert_row(conn, r, err);
	if (rc != 0)
		mon_error_prefix(err, "audit event");
out:
	if (r != NULL)
		row_free_json(r);
	free(r);
	json_decref(changes);
	return rc;
}

/* ---- the writer of refused calls ---- */

/* What audit_on_deny keeps of a refused call: copies, since the request's pointers die with the call. */
struct deny_item {
	struct deny_item *next;
	int64_t time_ms;
	int code;
	char method[256];
	char user_id[64];
	char user_email[256];
	char user_role[16];
	char auth_method[16];
	char key_id[40];
	char ip[64];
	char user_agent[256];
	char request_id[UTF8_BYTES(COL_REQUEST_ID)];
	char message[256];
};

struct audit_writer {
	struct db_pool *pool;
	size_t queue_max;
	int drain_timeout_ms;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* under lock */
	struct deny_item *head, *tail;
	size_t queued;
	size_t in_batch;
	uint64_t dropped_pending; /* drops not yet recorded in a summary event */
	uint64_t dropped_total;
	uint64_t written;
	uint64_t write_errors;
	bool is_stopping;
	int64_t drain_deadline_ms; /* monotonic; set when stopping */
};

static const char *status_name(int code)
{
	switch (code) {
	case MON_EUNAUTH: return "UNAUTHENTICATED";
	case MON_EPERM: return "PERMISSION_DENIED";
	case MON_ELIMIT: return "RESOURCE_EXHAUSTED";
	default: return mon_error_name(code);
	}
}

/*
 * The public key id of a bearer token shaped "mk_<16 hex>_...", so a row
 * can say which key was refused (expired, revoked); "" otherwise. Only the
 * id, which is public, is ever copied, never the secret.
 */
static void token_key_id(const char *token, char out[40])
{
	out[0] = '\0';
	if (token == NULL || strncmp(token, "mk_", 3) != 0)
		return;
	const char *id = token + 3;
	for (int i = 0; i < 16; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return;
	if (id[16] != '_')
		return;
	memcpy(out, id, 16);
	out[16] = '\0';
}

void audit_on_deny(void *arg, const struct rpc_auth_request *req, const struct rpc_identity *who, int code,
                   const char *message)
{
	struct audit_writer *w = arg;
	if (w == NULL || req == NULL)
		return;
	struct deny_item *it = malloc(sizeof(*it));
	if (it != NULL) {
		it->next = NULL;
		it->time_ms = mon_wall_ms();
		it->code = code;
		audit_clip_text(req->method, COL_RESOURCE_ID, it->method, sizeof(it->method));
		audit_clip_text(who ? who->caller_id : "anonymous", COL_USER_ID, it->user_id, sizeof(it->user_id));
		audit_clip_text(who ? who->email : "", COL_USER_EMAIL, it->user_email, sizeof(it->user_email));
		snprintf(it->user_role, sizeof(it->user_role), "%s", who ? rpc_role_name(who->role) : "none");
		if (who != NULL) {
			audit_clip_text(who->auth_method, sizeof(it->auth_method) - 1, it->auth_method,
			                sizeof(it->auth_method));
			audit_clip_text(who->key_id, sizeof(it->key_id) - 1, it->key_id, sizeof(it->key_id));
		} else {
			it->auth_method[0] = '\0';
			token_key_id(req->bearer_token, it->key_id);
		}
		audit_peer_ip(req->peer, it->ip, sizeof(it->ip));
		audit_clip_text(req->user_agent, CAP_USER_AGENT, it->user_agent, sizeof(it->user_agent));
		audit_clip_text(req->request_id, COL_REQUEST_ID, it->request_id, sizeof(it->request_id));
		audit_clip_text(message, CAP_FAILURE_REASON, it->message, sizeof(it->message));
	}
	pthread_mutex_lock(&w->lock);
	if (it == NULL || w->is_stopping || w->queued + w->in_batch >= w->queue_max) {
		w->dropped_pending++;
		w->dropped_total++;
	} else {
		if (w->tail != NULL)
			w->tail->next = it;
		else
			w->head = it;
		w->tail = it;
		w->queued++;
		it = NULL;
	}
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	free(it);
}

static void deny_row(const struct deny_item *it, struct row *r)
{
	memset(r, 0, sizeof(*r));
	r->time_ms = it->time_ms;
	new_event_id(it->time_ms, r->event_id);
	audit_clip_text(it->user_id, COL_USER_ID, r->user_id, sizeof(r->user_id));
	audit_clip_text(it->user_email, COL_USER_EMAIL, r->user_email, sizeof(r->user_email));
	audit_clip_text(it->user_role, COL_USER_ROLE, r->user_role, sizeof(r->user_role));
	snprintf(r->action, sizeof(r->action), "access-denied");
	snprintf(r->resource_type, sizeof(r->resource_type), "rpc-method");
	audit_clip_text(it->method, COL_RESOURCE_ID, r->resource_id, sizeof(r->resource_id));
	snprintf(r->description, sizeof(r->description), "refused a call to %s (%s)", r->resource_id,
	         status_name(it->code));
	snprintf(r->outcome, sizeof(r->outcome), "failure");
	audit_clip_text(it->message, CAP_FAILURE_REASON, r->failure_reason, sizeof(r->failure_reason));
	snprintf(r->ip, sizeof(r->ip), "%s", it->ip);
	audit_clip_text(it->user_agent, CAP_USER_AGENT, r->user_agent, sizeof(r->user_agent));
	audit_clip_text(it->request_id, COL_REQUEST_ID, r->request_id, sizeof(r->request_id));
	snprintf(r->module, sizeof(r->module), "auth");
	snprintf(r->severity, sizeof(r->severity), "warning");
}

static void summary_row(uint64_t dropped, size_t queue_max, struct row *r)
{
	memset(r, 0, sizeof(*r));
	r->time_ms = mon_wall_ms();
	new_event_id(r->time_ms, r->event_id);
	snprintf(r->user_id, sizeof(r->user_id), "system");
	snprintf(r->user_role, sizeof(r->user_role), "none");
	snprintf(r->action, sizeof(r->action), "access-denied");
	snprintf(r->resource_type, sizeof(r->resource_type), "rpc-method");
	snprintf(r->description, sizeof(r->description), "%" PRIu64 " refused calls not recorded individually",
	         dropped);
	snprintf(r->outcome, sizeof(r->outcome), "failure");
	snprintf(r->failure_reason, sizeof(r->failure_reason),
	         "the queue of refused calls was full (%zu events) or out of memory", queue_max);
	snprintf(r->ip, sizeof(r->ip), "127.0.0.1");
	snprintf(r->module, sizeof(r->module), "auth");
	snprintf(r->severity, sizeof(r->severity), "warning");
}

/* A batch being written: items (may be empty) and the drop summary (0: none). */
struct batch {
	struct deny_item *items;
	size_t item_count;
	uint64_t summary_dropped;
	size_t queue_max;
	struct row row; /* scratch */
};

static int write_item(struct db_conn *conn, struct row *r, const struct deny_item *it, struct mon_error *err)
{
	deny_row(it, r);
	int rc = metadata_json(it->auth_method, it->key_id, status_name(it->code), &r->metadata, err);
	if (rc == 0)
		rc = insert_row(conn, r, err);
	row_free_json(r);
	return rc;
}

static int batch_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct batch *b = arg;
	for (const struct deny_item *it = b->items; it != NULL; it = it->next) {
		int rc = write_item(conn, &b->row, it, err);
		if (rc != 0)
			return rc;
	}
	if (b->summary_dropped > 0) {
		summary_row(b->summary_dropped, b->queue_max, &b->row);
		return insert_row(conn, &b->row, err);
	}
	return 0;
}

/* One item alone in its own transaction (after a batch kept failing). */
static int single_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct batch *b = arg;
	return write_item(conn, &b->row, b->items, err);
}

static bool is_transient(int code)
{
	return code == MON_EUNAVAIL || code == MON_ELIMIT || code == MON_EDEADLINE || code == MON_EABORTED ||
	       code == MON_ECANCELLED;
}

/* Sleeps up to ms, waking early when stopping starts; call with the lock held. */
static void wait_locked(struct audit_writer *w, int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&w->cond, &w->lock, &ts);
}

/* True once stopping and past the drain deadline: give up on what is left. */
static bool is_past_drain_locked(const struct audit_writer *w)
{
	return w->is_stopping && mon_now_ms() >= w->drain_deadline_ms;
}

/*
 * Writes b, retrying with backoff while the database is away. Returns the
 * number of events written; *lost_out counts events given up on (past the
 * drain deadline, or rows the database refuses for good).
 */
static uint64_t write_batch(struct audit_writer *w, struct batch *b, uint64_t *lost_out)
{
	int64_t backoff_ms = WRITER_BACKOFF_MIN_MS;
	int failures = 0;
	bool has_logged = false;
	uint64_t total = b->item_count + (b->summary_dropped > 0 ? 1 : 0);
	*lost_out = 0;
	for (;;) {
		struct mon_error err = {0};
		int rc = db_tx_run(w->pool, WRITER_TX_TIMEOUT_MS, batch_tx, b, &err);
		if (rc == 0) {
			if (has_logged)
				log_info("msg=\"audit writer: refused calls recorded again\" events=%" PRIu64, total);
			return total;
		}
		pthread_mutex_lock(&w->lock);
		w->write_errors++;
		if (is_past_drain_locked(w)) {
			pthread_mutex_unlock(&w->lock);
			*lost_out = total;
			return 0;
		}
		if (!has_logged)
			log_warn("msg=\"audit writer: could not record refused calls, retrying\" events=%" PRIu64
			         " error=\"%s\"",
			         total, err.msg);
		has_logged = true;
		if (!is_transient(rc) && ++failures >= WRITER_BATCH_ATTEMPTS) {
			pthread_mutex_unlock(&w->lock);
			break;
		}
		wait_locked(w, backoff_ms);
		pthread_mutex_unlock(&w->lock);
		backoff_ms = backoff_ms * 2 > WRITER_BACKOFF_MAX_MS ? WRITER_BACKOFF_MAX_MS : backoff_ms * 2;
	}

	/* The batch keeps failing for a reason of its own: write row by row, giving up on rows refused for good. */
	uint64_t written = 0;
	struct deny_item *all = b->items;
	for (struct deny_item *it = all; it != NULL; it = it->next) {
		struct deny_item *next = it->next;
		it->next = NULL;
		b->items = it;
		struct mon_error err = {0};
		int rc = db_tx_run(w->pool, WRITER_TX_TIMEOUT_MS, single_tx, b, &err);
		it->next = next;
		if (rc == 0) {
			written++;
		} else {
			log_error("msg=\"audit writer: could not record a refused call\" method=\"%s\" error=\"%s\"",
			          it->method, err.msg);
			(*lost_out)++;
		}
	}
	b->items = all;
	if (b->summary_dropped > 0) {
		log_error(
		        "msg=\"audit writer: could not record the summary of dropped refused calls\" dropped=%" PRIu64,
		        b->summary_dropped);
		(*lost_out)++;
	}
	return written;
}

static void free_items(struct deny_item *it)
{
	while (it != NULL) {
		struct deny_item *next = it->next;
		free(it);
		it = next;
	}
}

static void *writer_main(void *arg)
{
	struct audit_writer *w = arg;
	struct batch *b = calloc(1, sizeof(*b));
	pthread_mutex_lock(&w->lock);
	for (;;) {
		while (w->head == NULL && w->dropped_pending == 0 && !w->is_stopping)
			pthread_cond_wait(&w->cond, &w->lock);
		if (w->head == NULL && w->dropped_pending == 0)
			break; /* stopping and nothing left */
		if (b == NULL || is_past_drain_locked(w)) {
			size_t lost = w->queued;
			free_items(w->head);
			w->head = w->tail = NULL;
			w->queued = 0;
			log_error("msg=\"audit writer: refused calls not recorded at shutdown\" events=%zu "
			          "dropped=%" PRIu64,
			          lost, w->dropped_pending);
			w->dropped_pending = 0;
			break;
		}
		b->items = w->head;
		b->item_count = 0;
		struct deny_item *last = NULL;
		for (struct deny_item *it = w->head; it != NULL && b->item_count < WRITER_BATCH; it = it->next) {
			last = it;
			b->item_count++;
		}
		if (last != NULL) {
			w->head = last->next;
			if (w->head == NULL)
				w->tail = NULL;
			last->next = NULL;
		} else {
			b->items = NULL;
		}
		w->queued -= b->item_count;
		w->in_batch = b->item_count;
		b->summary_dropped = w->dropped_pending;
		b->queue_max = w->queue_max;
		w->dropped_pending = 0;
		pthread_mutex_unlock(&w->lock);

		if (b->summary_dropped > 0)
			log_warn("msg=\"audit writer: queue of refused calls full, recording a summary\" "
			         "dropped=%" PRIu64 " queue_max=%zu",
			         b->summary_dropped, b->queue_max);
		uint64_t lost = 0;
		uint64_t written = write_batch(w, b, &lost);
		if (lost > 0)
			log_error("msg=\"audit writer: events not recorded\" events=%" PRIu64, lost);
		free_items(b->items);
		b->items = NULL;

		pthread_mutex_lock(&w->lock);
		w->in_batch = 0;
		w->written += written;
	}
	pthread_mutex_unlock(&w->lock);
	free(b);
	return NULL;
}

int audit_writer_create_with(struct db_pool *pool, size_t queue_max, int drain_timeout_ms, struct audit_writer **out,
                             struct mon_error *err)
{
	*out = NULL;
	if (queue_max < 1 || drain_timeout_ms < 0)
		return mon_error_set(err, MON_EINVAL, "audit writer: queue_max must be >= 1 and drain timeout >= 0");
	struct audit_writer *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return mon_error_set(err, MON_ENOMEM, "audit writer: out of memory");
	w->pool = pool;
	w->queue_max = queue_max;
	w->drain_timeout_ms = drain_timeout_ms;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
		pthread_mutex_destroy(&w->lock);
		pthread_cond_destroy(&w->cond);
		free(w);
		return mon_error_set(err, MON_EINTERNAL, "audit writer: could not start its thread");
	}
	*out = w;
	return 0;
}

int audit_writer_create(struct db_pool *pool, struct audit_writer **out, struct mon_error *err)
{
	return audit_writer_create_with(pool, AUDIT_QUEUE_MAX, AUDIT_DRAIN_TIMEOUT_MS, out, err);
}

void audit_writer_destroy(struct audit_writer *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->lock);
	w->is_stopping = true;
	w->drain_deadline_ms = mon_now_ms() + w->drain_timeout_ms;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	free_items(w->head);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w);
}

void audit_writer_get_stats(struct audit_writer *w, struct audit_writer_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->lock);
	out->queued = w->queued + w->in_batch;
	out->written = w->written;
	out->dropped = w->dropped_total;
	out->write_errors = w->write_errors;
	pthread_mutex_unlock(&w->lock);
}
