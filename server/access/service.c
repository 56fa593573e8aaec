/*
 * AccessService handlers: callers, API keys and the caller's own identity.
 * Each handler checks its input (INVALID_ARGUMENT naming the field), then
 * decides what the caller may do beyond the role the method declares (a
 * viewer or an editor manages only its own keys: PERMISSION_DENIED or, for
 * a key named by id, NOT_FOUND), then runs one transaction with the call's
 * deadline that makes the change through identity.c and writes its audit
 * event with audit_write_tx, so the change and its event commit together
 * or not at all. Before/after data are the resources as the API shows
 * them; the token of a new key goes to the response only, never to an
 * event, a log line or an error.
 *
 * Callers are read here with their updated_at, which identity.c does not
 * report, and listed with keyset paging; changes to a caller's fields and
 * to a key's description are made here too (with NOTIFY mon_identity, as
 * identity.c does), since identity.c has no function for them.
 *
 * Without authentication (a server where rpc_server_set_auth was not
 * called) every call is anonymous and no role is checked; the handlers
 * then treat the anonymous caller as an administrator without an identity
 * of its own, like the RPC layer does.
 *
 * Test-only failpoint: when the environment variable MONITORD_FAILPOINTS
 * contains "access.after_write" at bind time, every mutating handler fails
 * with INTERNAL after writing its change and audit event, inside the
 * transaction, so that tests can check that both roll back together.
 */
#include "access/service.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "access/identity.h"
#include "audit/audit.h"
#include "common/call.h"
#include "common/page.h"
#include "common/parse.h"
#include "common/text.h"
#include "monitoring/v1/access.mon-server.h"
#include "util/clock.h"
#include "util/log.h"

#define MODULE "access"
#define PAGE_SIZE_DEFAULT 50
#define PAGE_SIZE_MAX 500
#define CALLER_ID_MAX 50
#define EMAIL_MAX 255
#define TEAM_MAX 100
#define CERT_SUBJECT_MAX 255
#define DESCRIPTION_MAX 255
/* 9999-12-31T23:59:59Z: the latest time a Timestamp may hold. */

/* ---- pure checks ---- */

static bool is_lower_id_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

int access_check_new_caller_id(const char *field, const char *id, struct mon_error *err)
{
	size_t n = id ? strlen(id) : 0;
	if (n == 0)
		return mon_error_set(err, MON_EINVAL, "%s: must be set", field);
	if (n > CALLER_ID_MAX)
		return mon_error_set(err, MON_EINVAL, "%s: at most %d characters", field, CALLER_ID_MAX);
	for (size_t i = 0; i < n; i++)
		if (!is_lower_id_char(id[i]))
			return mon_error_set(err, MON_EINVAL, "%s: only lowercase letters, digits, '.', '_' and '-'",
			                     field);
	return 0;
}

/*
 * An existing caller's id, as identity.c accepts them (the command line may
 * have made ids with capitals or '@'): a malformed one cannot exist.
 */
static int check_caller_ref(const char *field, const char *id, struct mon_error *err)
{
	size_t n = id ? strlen(id) : 0;
	if (n == 0)
		return mon_error_set(err, MON_EINVAL, "%s: must be set", field);
	if (n > CALLER_ID_MAX)
		return mon_error_set(err, MON_EINVAL, "%s: at most %d characters", field, CALLER_ID_MAX);
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!(is_lower_id_char(c) || (c >= 'A' && c <= 'Z') || c == '@'))
			return mon_error_set(err, MON_EINVAL, "%s: only letters, digits, '.', '_', '-' and '@'", field);
	}
	return 0;
}

static bool is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int access_check_email(const char *field, const char *email, struct mon_error *err)
{
	size_t n = email ? strlen(email) : 0;
	if (n == 0)
		return mon_error_set(err, MON_EINVAL, "%s: must be set", field);
	if (n > EMAIL_MAX)
		return mon_error_set(err, MON_EINVAL, "%s: at most %d characters", field, EMAIL_MAX);
	const char *at = strchr(email, '@');
	if (at == NULL || strchr(at + 1, '@') != NULL)
		return mon_error_set(err, MON_EINVAL, "%s: must be one address, local@domain", field);
	size_t local_n = (size_t)(at - email);
	if (local_n == 0 || local_n > 64)
		return mon_error_set(err, MON_EINVAL, "%s: the part before '@' must be 1 to 64 characters", field);
	for (size_t i = 0; i < local_n; i++) {
		char c = email[i];
		if (c == '.') {
			if (i == 0 || i + 1 == local_n || email[i + 1] == '.')
				return mon_error_set(err, MON_EINVAL, "%s: misplaced '.' before '@'", field);
		} else if (!is_alnum(c) && strchr("!#$%&'*+/=?^_`{|}~-", c) == NULL) {
			return mon_error_set(err, MON_EINVAL, "%s: character not allowed in an address", field);
		}
	}
	const char *domain = at + 1;
	size_t labels = 0, label_n = 0;
	for (const char *p = domain;; p++) {
		if (*p == '.' || *p == '\0') {
			if (label_n == 0 || label_n > 63 || p[-1] == '-')
				return mon_error_set(err, MON_EINVAL, "%s: the domain is not a host name", field);
			labels++;
			label_n = 0;
			if (*p == '\0')
				break;
		} else if (is_alnum(*p) || (*p == '-' && label_n > 0)) {
			label_n++;
		} else {
			return mon_error_set(err, MON_EINVAL, "%s: the domain is not a host name", field);
		}
	}
	if (labels < 2)
		return mon_error_set(err, MON_EINVAL, "%s: the domain needs a dot (example.com)", field);
	return 0;
}

int access_check_text(const char *field, const char *text, size_t max_bytes, bool is_required, struct mon_error *err)
{
	return svc_check_text(field, text, is_required ? 1 : 0, SIZE_MAX, max_bytes, SVC_TEXT_NO_C0, err);
}

/* ---- page tokens ---- */

/* 16 hex characters identifying filters. */
int access_page_token_make(const char *filters, const char *cursor, char out[ACCESS_PAGE_TOKEN_MAX],
                           struct mon_error *err)
{
	return svc_page_token_make(filters, cursor, out, ACCESS_PAGE_TOKEN_MAX, err);
}

int access_page_token_read(const char *token, const char *filters, char *cursor_out, size_t cursor_len,
                           struct mon_error *err)
{
	if (strlen(token) >= ACCESS_PAGE_TOKEN_MAX)
		return mon_error_set(err, MON_EINVAL, "page_token: malformed");
	return svc_page_token_read(token, filters, cursor_out, cursor_len, err);
}

/* ---- the call ---- */

struct call {
	struct rpc_ctx *ctx;
	struct arena *arena;
	const struct access_service *svc;
	const struct rpc_identity *who; /* NULL: anonymous, on a server without authentication */
	bool is_admin;
};

static void call_init(struct call *c, struct rpc_ctx *ctx)
{
	c->ctx = ctx;
	c->arena = rpc_ctx_arena(ctx);
	c->svc = access_service_of(ctx);
	c->who = rpc_ctx_identity(ctx);
	c->is_admin = c->who == NULL || c->who->role >= RPC_ROLE_ADMIN;
}

/* True when the call is made by caller_id itself. */
static bool is_self(const struct call *c, const char *caller_id)
{
	return c->who != NULL && strcmp(c->who->caller_id, caller_id) == 0;
}

/* One transaction bounded by the call's deadline (svc_run_tx). */
static int run_tx(struct call *c, db_tx_fn fn, void *arg)
{
	return svc_run_tx(c->ctx, c->svc->pool, fn, arg);
}

/* The test-only failpoint, after a change and its audit event are written. */
static int failpoint_after_write(const struct call *c, struct mon_error *err)
{
	if (!c->svc->is_failing_after_write)
		return 0;
	return mon_error_set(err, MON_EINTERNAL, "failpoint access.after_write: failing after the write");
}

/* ---- times ---- */

static Google__Protobuf__Timestamp *ts_new(struct arena *a, int64_t ms)
{
	if (ms == 0)
		return NULL;
	Google__Protobuf__Timestamp *ts = arena_alloc(a, sizeof(*ts));
	if (ts == NULL)
		return NULL;
	google__protobuf__timestamp__init(ts);
	ts->seconds = ms / 1000;
	ts->nanos = (int32_t)(ms % 1000) * 1000000;
	return ts;
}

/* A timestamp to milliseconds; MON_EINVAL naming field when out of range. */
/* RFC 3339 in UTC with milliseconds, or JSON null for 0. New reference. */
static json_t *json_time(int64_t ms)
{
	if (ms == 0)
		return json_null();
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	char date[32], text[48];
	if (gmtime_r(&s, &tm) == NULL || strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		return json_null();
	snprintf(text, sizeof(text), "%s.%03dZ", date, (int)(ms % 1000));
	return json_string(text);
}

/* ---- callers ---- */

struct caller_row {
	struct identity_caller c;
	int64_t updated_at_ms;
};

/* SQL text is joined at compile time (literal concatenation): no buffer, nothing to truncate. */
#define CALLER_COLUMNS_SQL                                                                                             \
	"SELECT id, email, team, role::text, coalesce(cert_subject, ''),"                                              \
	" floor(extract(epoch FROM created_at) * 1000)::bigint,"                                                       \
	" floor(extract(epoch FROM updated_at) * 1000)::bigint,"                                                       \
	" floor(extract(epoch FROM disabled_at) * 1000)::bigint"                                                       \
	" FROM tb_caller "
#define CALLERS_WHERE_SQL                                                                                              \
	"WHERE ($1::text[] IS NULL OR role::text = ANY($1::text[])) AND ($2 = '' OR team = $2)"                        \
	" AND ($3::boolean OR disabled_at IS NULL)"

static void caller_from_result(const struct db_result *res, int row, struct caller_row *out)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->c.id, sizeof(out->c.id), "%s", db_result_value(res, row, 0));
	snprintf(out->c.email, sizeof(out->c.email), "%s", db_result_value(res, row, 1));
	snprintf(out->c.team, sizeof(out->c.team), "%s", db_result_value(res, row, 2));
	if (identity_role_parse(db_result_value(res, row, 3), &out->c.role) != 0)
		out->c.role = RPC_ROLE_NONE;
	snprintf(out->c.cert_subject, sizeof(out->c.cert_subject), "%s", db_result_value(res, row, 4));
	out->c.created_at_ms = svc_parse_i64(db_result_value(res, row, 5));
	out->updated_at_ms = svc_parse_i64(db_result_value(res, row, 6));
	out->c.disabled_at_ms = svc_parse_i64(db_result_value(res, row, 7));
}

/* Reads one caller (locked FOR UPDATE when is_locking); MON_ENOTFOUND when absent. */
static int caller_read(struct db_conn *conn, const char *id, bool is_locking, struct caller_row *out,
                       struct mon_error *err)
{
	struct db_result *res = NULL;
	const char *sql =
	        is_locking ? CALLER_COLUMNS_SQL "WHERE id = $1 FOR UPDATE" : CALLER_COLUMNS_SQL "WHERE id = $1";
	const char *params[] = {id};
	int rc = db_exec(conn, sql, 1, params, &res, err);
	if (rc != 0)
		goto out;
	if (db_result_rows(res) != 1) {
		rc = mon_error_set(err, MON_ENOTFOUND, "caller \"%s\": not found", id);
		goto out;
	}
	caller_from_result(res, 0, out);
out:
	db_result_free(res);
	return rc;
}

/* The caller as the API shows it, for audit events. New reference, NULL when out of memory. */
static json_t *caller_json(const struct caller_row *r)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o}", "id", r->c.id, "email", r->c.email, "team",
	                 r->c.team, "role", rpc_role_name(r->c.role), "cert_subject", r->c.cert_subject, "created_at",
	                 json_time(r->c.created_at_ms), "updated_at", json_time(r->updated_at_ms), "disabled_at",
	                 json_time(r->c.disabled_at_ms));
}

static Monitoring__V1__Caller *caller_msg(struct arena *a, const struct caller_row *r)
{
	Monitoring__V1__Caller *m = arena_alloc(a, sizeof(*m));
	if (m == NULL)
		return NULL;
	monitoring__v1__caller__init(m);
	m->id = arena_strdup(a, r->c.id);
	m->email = arena_strdup(a, r->c.email);
	m->team = arena_strdup(a, r->c.team);
	m->role = (Monitoring__V1__CallerRole)r->c.role;
	m->cert_subject = arena_strdup(a, r->c.cert_subject);
	m->created_at = ts_new(a, r->c.created_at_ms);
	m->updated_at = ts_new(a, r->updated_at_ms);
	m->disabled_at = ts_new(a, r->c.disabled_at_ms);
	if (m->id == NULL || m->email == NULL || m->team == NULL || m->cert_subject == NULL ||
	    (r->c.created_at_ms != 0 && m->created_at == NULL) || (r->updated_at_ms != 0 && m->updated_at == NULL) ||
	    (r->c.disabled_at_ms != 0 && m->disabled_at == NULL))
		return NULL;
	return m;
}

/* ---- keys ---- */

static void key_from_result(const struct db_result *res, int row, struct identity_key *out)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->id, sizeof(out->id), "%s", db_result_value(res, row, 0));
	snprintf(out->caller_id, sizeof(out->caller_id), "%s", db_result_value(res, row, 1));
	snprintf(out->description, sizeof(out->description), "%s", db_result_value(res, row, 2));
	out->created_at_ms = svc_parse_i64(db_result_value(res, row, 3));
	out->expires_at_ms = svc_parse_i64(db_result_value(res, row, 4));
	out->revoked_at_ms = svc_parse_i64(db_result_value(res, row, 5));
	out->last_used_at_ms = svc_parse_i64(db_result_value(res, row, 6));
}

/* The key as the API shows it (never the secret), for audit events. New reference, NULL when out of memory. */
static json_t *key_json(const struct identity_key *k)
{
	return json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o}", "id", k->id, "caller_id", k->caller_id, "description",
	                 k->description, "created_at", json_time(k->created_at_ms), "expires_at",
	                 json_time(k->expires_at_ms), "revoked_at", json_time(k->revoked_at_ms), "last_used_at",
	                 json_time(k->last_used_at_ms));
}

static Monitoring__V1__ApiKey *key_msg(struct arena *a, const struct identity_key *k)
{
	Monitoring__V1__ApiKey *m = arena_alloc(a, sizeof(*m));
	if (m == NULL)
		return NULL;
	monitoring__v1__api_key__init(m);
	m->id = arena_strdup(a, k->id);
	m->caller_id = arena_strdup(a, k->caller_id);
	m->description = arena_strdup(a, k->description);
	m->created_at = ts_new(a, k->created_at_ms);
	m->expires_at = ts_new(a, k->expires_at_ms);
	m->revoked_at = ts_new(a, k->revoked_at_ms);
	m->last_used_at = ts_new(a, k->last_used_at_ms);
	if (m->id == NULL || m->caller_id == NULL || m->description == NULL ||
	    (k->created_at_ms != 0 && m->created_at == NULL) || (k->expires_at_ms != 0 && m->expires_at == NULL) ||
	    (k->revoked_at_ms != 0 && m->revoked_at == NULL) || (k->last_used_at_ms != 0 && m->last_used_at == NULL))
		return NULL;
	return m;
}

static int check_key_id(const char *field, const char *id, struct mon_error *err)
{
	size_t n = id ? strlen(id) : 0;
	if (n == 0)
		return mon_error_set(err, MON_EINVAL, "%s: must be set", field);
	if (n != IDENTITY_KEY_ID_LEN)
		return mon_error_set(err, MON_EINVAL, "%s: must be %d lowercase hex characters", field,
		                     IDENTITY_KEY_ID_LEN);
	for (size_t i = 0; i < n; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return mon_error_set(err, MON_EINVAL, "%s: must be %d lowercase hex characters", field,
			                     IDENTITY_KEY_ID_LEN);
	return 0;
}

/*
 * Reads a key the caller may manage: its own, or any for an admin. Another
 * caller's key is NOT_FOUND for a non-admin, so key ids cannot be probed.
 */
static int key_read_owned(struct db_conn *conn, const struct call *c, const char *key_id, struct identity_key *out,
                          struct mon_error *err)
{
	int rc = identity_key_get_tx(conn, key_id, out, err);
	if (rc == 0 && !c->is_admin && !is_self(c, out->caller_id))
		rc = mon_error_set(err, MON_ENOTFOUND, "API key \"%s\": not found", key_id);
	return rc;
}

/* ---- writing an event ---- */

/* Writes the change's audit event (module "access") in conn's transaction, then honours the failpoint. */
static int write_event(struct db_conn *conn, const struct call *c, const char *action, const char *resource_type,
                       const char *resource_id, const char *resource_name, const char *description, json_t *before,
                       json_t *after, struct mon_error *err)
{
	struct audit_event ev = {.action = action,
	                         .resource_type = resource_type,
	                         .resource_id = resource_id,
	                         .resource_name = resource_name,
	                         .description = description,
	                         .before = before,
	                         .after = after,
	                         .module = MODULE};
	int rc = audit_write_tx(conn, c->ctx, &ev, err);
	if (rc == 0)
		rc = failpoint_after_write(c, err);
	return rc;
}

/* ---- GetCallerIdentity ---- */

struct get_caller_op {
	const char *caller_id;
	struct caller_row row;
};

static int get_caller_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct get_caller_op *op = arg;
	return caller_read(conn, op->caller_id, false, &op->row, err);
}

/* GetCallerIdentity: the caller from the database as it is now, with how this call authenticated. */
static int get_caller_identity(struct rpc_ctx *ctx, const Monitoring__V1__GetCallerIdentityRequest *req,
                               Monitoring__V1__GetCallerIdentityResponse *resp)
{
	struct call c;
	call_init(&c, ctx);
	(void)req;
	if (c.who == NULL)
		return rpc_fail(ctx, MON_EUNAUTH,
		                "the call carries no credentials (the server runs without authentication)");
	struct get_caller_op op = {.caller_id = c.who->caller_id};
	int rc = svc_run_read(ctx, c.svc->pool, get_caller_tx, &op);
	if (rc != 0)
		return rc;
	resp->caller = caller_msg(c.arena, &op.row);
	if (strcmp(c.who->auth_method, "api-key") == 0) {
		resp->auth_method = MONITORING__V1__AUTH_METHOD__AUTH_METHOD_API_KEY;
		resp->key_id = arena_strdup(c.arena, c.who->key_id);
	} else if (strcmp(c.who->auth_method, "certificate") == 0) {
		resp->auth_method = MONITORING__V1__AUTH_METHOD__AUTH_METHOD_CERTIFICATE;
	}
	if (resp->caller == NULL || resp->key_id == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "response larger than the call's memory cap");
	return 0;
}

/* ---- CreateCaller ---- */

struct create_caller_op {
	const struct call *call;
	struct identity_caller in;
	struct caller_row row;
};

/* Creates the caller, reads it back with its times and writes the "create" event. */
static int create_caller_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct create_caller_op *op = arg;
	json_t *after = NULL;
	int rc = identity_caller_create_tx(conn, &op->in, err);
	if (rc == 0)
		rc = caller_read(conn, op->in.id, false, &op->row, err);
	if (rc != 0)
		goto out;
	after = caller_json(&op->row);
	if (after == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	const char *what = arena_printf(op->call->arena, "created caller \"%s\" with role %s", op->row.c.id,
	                                rpc_role_name(op->row.c.role));
	if (what == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = write_event(conn, op->call, "create", "caller", op->row.c.id, op->row.c.email, what, NULL, after, err);
out:
	json_decref(after);
	return rc;
}

static int check_role(const char *field, Monitoring__V1__CallerRole role, struct mon_error *err)
{
	if (role == MONITORING__V1__CALLER_ROLE__CALLER_ROLE_UNSPECIFIED)
		return mon_error_set(err, MON_EINVAL, "%s: must not be UNSPECIFIED", field);
	if (role < MONITORING__V1__CALLER_ROLE__CALLER_ROLE_VIEWER ||
	    role > MONITORING__V1__CALLER_ROLE__CALLER_ROLE_ADMIN)
		return mon_error_set(err, MON_EINVAL, "%s: unknown role %d", field, (int)role);
	return 0;
}

/* Checks the writable fields of a caller message; prefix names it in messages ("caller"). */
static int check_caller_fields(const Monitoring__V1__Caller *m, bool has_email, bool has_team, bool has_role,
                               bool has_cert, struct mon_error *err)
{
	int rc = 0;
	if (has_email)
		rc = access_check_email("caller.email", m->email, err);
	if (rc == 0 && has_team)
		rc = access_check_text("caller.team", m->team, TEAM_MAX, false, err);
	if (rc == 0 && has_role)
		rc = check_role("caller.role", m->role, err);
	if (rc == 0 && has_cert)
		rc = access_check_text("caller.cert_subject", m->cert_subject, CERT_SUBJECT_MAX, false, err);
	return rc;
}

/* create_caller's response from its op (svc_reply_fn). */
static int create_caller_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	const struct create_caller_op *op = arg;
	const struct call *c = op->call;
	Monitoring__V1__CreateCallerResponse *resp = (Monitoring__V1__CreateCallerResponse *)(void *)msg;
	resp->caller = caller_msg(c->arena, &op->row);
	if (resp->caller == NULL)
		return svc_fail_nomem(err);
	return 0;
}

/* CreateCaller (admin, declared): a new caller; its event is "create" on resource "caller". */
static int create_caller(struct rpc_ctx *ctx, const Monitoring__V1__CreateCallerRequest *req,
                         Monitoring__V1__CreateCallerResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	const Monitoring__V1__Caller *m = req->caller;
	if (m == NULL)
		return rpc_fail(ctx, MON_EINVAL, "caller: must be set");
	int rc = access_check_new_caller_id("caller.id", m->id, &err);
	if (rc == 0)
		rc = check_caller_fields(m, true, true, true, true, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	struct create_caller_op op = {.call = &c};
	snprintf(op.in.id, sizeof(op.in.id), "%s", m->id);
	snprintf(op.in.email, sizeof(op.in.email), "%s", m->email);
	snprintf(op.in.team, sizeof(op.in.team), "%s", m->team);
	op.in.role = (enum rpc_role)m->role;
	snprintf(op.in.cert_subject, sizeof(op.in.cert_subject), "%s", m->cert_subject);
	(void)resp; /* filled by create_caller_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.svc->pool, create_caller_tx, create_caller_reply, &op);
}

/* ---- GetCaller ---- */

/* GetCaller (admin, declared): one caller, disabled ones included. */
static int get_caller(struct rpc_ctx *ctx, const Monitoring__V1__GetCallerRequest *req,
                      Monitoring__V1__GetCallerResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (check_caller_ref("caller_id", req->caller_id, &err) != 0)
		return rpc_fail(ctx, MON_EINVAL, "%s", err.msg);
	struct get_caller_op op = {.caller_id = req->caller_id};
	int rc = svc_run_read(ctx, c.svc->pool, get_caller_tx, &op);
	if (rc != 0)
		return rc;
	resp->caller = caller_msg(c.arena, &op.row);
	if (resp->caller == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "response larger than the call's memory cap");
	return 0;
}

/* ---- ListCallers ---- */

struct list_callers_op {
	struct call *call;
	const char *roles; /* array literal "{viewer,admin}", NULL for all */
	const char *team;  /* "" for all */
	bool show_disabled;
	const char *after; /* cursor: the last id of the previous page, "" for the first */
	int page_size;
	const char *filters; /* for the page token */
	Monitoring__V1__ListCallersResponse *resp;
};

/* One page of callers into op->resp (in the call's arena), with the next page token and the total. */
static int list_callers_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct list_callers_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	char limit[16];
	snprintf(limit, sizeof(limit), "%d", op->page_size + 1);
	const char *params[] = {op->roles, op->team, op->show_disabled ? "true" : "false", op->after, limit};
	int rc = db_exec(conn,
	                 CALLER_COLUMNS_SQL CALLERS_WHERE_SQL " AND ($4 = '' OR id > $4) ORDER BY id LIMIT $5::integer",
	                 5, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res);
	int shown = rows > op->page_size ? op->page_size : rows;
	op->resp->n_callers = 0;
	op->resp->callers = shown > 0 ? arena_calloc(a, (size_t)shown, sizeof(*op->resp->callers)) : NULL;
	if (shown > 0 && op->resp->callers == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	struct caller_row row;
	for (int i = 0; i < shown; i++) {
		caller_from_result(res, i, &row);
		op->resp->callers[i] = caller_msg(a, &row);
		if (op->resp->callers[i] == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
	}
	op->resp->n_callers = (size_t)shown;
	op->resp->next_page_token = "";
	if (rows > op->page_size) {
		char token[ACCESS_PAGE_TOKEN_MAX];
		rc = access_page_token_make(op->filters, row.c.id, token, err);
		if (rc != 0)
			goto out;
		op->resp->next_page_token = arena_strdup(a, token);
		if (op->resp->next_page_token == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
	}
	db_result_free(res);
	res = NULL;
	rc = db_exec(conn, "SELECT count(*) FROM tb_caller " CALLERS_WHERE_SQL, 3, params, &res, err);
	if (rc != 0)
		goto out;
	op->resp->total_size = (int32_t)svc_parse_i64(db_result_value(res, 0, 0));
out:
	db_result_free(res);
	return rc;
}

/*
 * ListCallers (admin, declared): callers by id, a page at a time; the page
 * token binds the roles, team and show_disabled it was made for.
 */
static int list_callers(struct rpc_ctx *ctx, const Monitoring__V1__ListCallersRequest *req,
                        Monitoring__V1__ListCallersResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct list_callers_op op = {.call = &c, .team = req->team ? req->team : "", .resp = resp};
	int rc = svc_page_size(req->page_size, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, &op.page_size, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	if (access_check_text("team", op.team, TEAM_MAX, false, &err) != 0)
		return rpc_fail(ctx, MON_EINVAL, "%s", err.msg);
	bool has_role[4] = {false, false, false, false};
	for (size_t i = 0; i < req->n_roles; i++) {
		char field[32];
		snprintf(field, sizeof(field), "roles[%zu]", i);
		if (check_role(field, req->roles[i], &err) != 0)
			return rpc_fail(ctx, MON_EINVAL, "%s", err.msg);
		has_role[req->roles[i]] = true;
	}
	if (req->n_roles > 0) {
		/* A text[] literal of the roles asked for: "{viewer,admin}". */
		static const char *const names[] = {"", "viewer", "editor", "admin"};
		struct arena_str roles;
		arena_str_init(&roles, c.arena);
		arena_str_append(&roles, "{");
		for (int r = 1, n = 0; r <= 3; r++) {
			if (has_role[r])
				arena_str_printf(&roles, "%s%s", n++ ? "," : "", names[r]);
		}
		arena_str_append(&roles, "}");
		op.roles = arena_str_get(&roles);
		if (op.roles == NULL)
			return rpc_fail(ctx, MON_ENOMEM, "response larger than the call's memory cap");
	}
	op.show_disabled = req->show_disabled;
	op.filters = arena_printf(c.arena, "callers|%s|%d|%s", op.roles ? op.roles : "", op.show_disabled, op.team);
	if (op.filters == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "response larger than the call's memory cap");
	op.after = "";
	if (req->page_token != NULL && req->page_token[0] != '\0') {
		char *cursor = arena_alloc(c.arena, 64);
		if (cursor == NULL)
			return rpc_fail(ctx, MON_ENOMEM, "response larger than the call's memory cap");
		if (access_page_token_read(req->page_token, op.filters, cursor, 64, &err) != 0)
			return rpc_fail(ctx, MON_EINVAL, "%s", err.msg);
		op.after = cursor;
	}
	return run_tx(&c, list_callers_tx, &op);
}

/* ---- UpdateCaller ---- */

struct update_caller_op {
	const struct call *call;
	const Monitoring__V1__Caller *in;
	bool has_email, has_team, has_role, has_cert;
	struct caller_row before;
	struct caller_row after;
};

/* Locks the caller, applies the mask's fields, reloads it and writes the "update" event. */
static int update_caller_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct update_caller_op *op = arg;
	const struct call *c = op->call;
	json_t *before = NULL, *after = NULL;
	struct db_result *res = NULL;
	int rc = caller_read(conn, op->in->id, true, &op->before, err);
	if (rc != 0)
		goto out;
	if (op->before.c.disabled_at_ms != 0) {
		rc = mon_error_set(err, MON_EPRECOND, "caller \"%s\" is disabled", op->before.c.id);
		goto out;
	}
	enum rpc_role role = op->has_role ? (enum rpc_role)op->in->role : op->before.c.role;
	if (is_self(c, op->before.c.id) && role < op->before.c.role) {
		rc = mon_error_set(err, MON_EPRECOND, "caller.role: an administrator cannot lower its own role");
		goto out;
	}
	const char *params[] = {op->before.c.id, op->has_email ? op->in->email : op->before.c.email,
	                        op->has_team ? op->in->team : op->before.c.team, rpc_role_name(role),
	                        op->has_cert ? op->in->cert_subject : op->before.c.cert_subject};
	rc = db_exec(
	        conn,
	        "UPDATE tb_caller SET email = $2, team = $3, role = $4::caller_role, cert_subject = NULLIF($5, ''),"
	        " updated_at = now() WHERE id = $1",
	        5, params, &res, err);
	if (rc == MON_EEXIST)
		rc = mon_error_set(err, MON_EEXIST, "caller.cert_subject: already mapped to another caller");
	if (rc == 0)
		rc = db_notify(conn, "mon_identity", op->before.c.id, err);
	if (rc == 0)
		rc = caller_read(conn, op->before.c.id, false, &op->after, err);
	if (rc != 0)
		goto out;
	before = caller_json(&op->before);
	after = caller_json(&op->after);
	if (before == NULL || after == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	const bool has[4] = {op->has_email, op->has_team, op->has_role, op->has_cert};
	static const char *const paths[4] = {"email", "team", "role", "cert_subject"};
	struct arena_str what_text;
	arena_str_init(&what_text, op->call->arena);
	arena_str_printf(&what_text, "changed caller \"%s\": ", op->before.c.id);
	for (int k = 0, n = 0; k < 4; k++) {
		if (has[k])
			arena_str_printf(&what_text, "%s%s", n++ ? ", " : "", paths[k]);
	}
	const char *what = arena_str_get(&what_text);
	if (what == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = write_event(conn, c, "update", "caller", op->after.c.id, op->after.c.email, what, before, after, err);
out:
	json_decref(before);
	json_decref(after);
	db_result_free(res);
	return rc;
}

/*
 * Reads update_mask against the writable paths (names) and the output-only
 * ones; sets has[i] for each writable path named. MON_EINVAL when the mask
 * is empty or names an unknown or output-only path.
 */
static int read_mask(const Google__Protobuf__FieldMask *mask, const char *const *names, bool *has, size_t count,
                     const char *const *output_only, size_t output_only_count, struct mon_error *err)
{
	if (mask == NULL || mask->n_paths == 0)
		return mon_error_set(err, MON_EINVAL, "update_mask: must name at least one field");
	for (size_t i = 0; i < mask->n_paths; i++) {
		const char *p = mask->paths[i];
		bool is_known = false;
		for (size_t j = 0; j < count; j++) {
			if (strcmp(p, names[j]) == 0) {
				has[j] = true;
				is_known = true;
			}
		}
		if (is_known)
			continue;
		for (size_t j = 0; j < output_only_count; j++)
			if (strcmp(p, output_only[j]) == 0)
				return mon_error_set(err, MON_EINVAL, "update_mask: \"%s\" cannot be changed here", p);
		char shown[64];
		audit_clip_text(p, 40, shown, sizeof(shown));
		return mon_error_set(err, MON_EINVAL, "update_mask: unknown path \"%s\"", shown);
	}
	return 0;
}

/* update_caller's response from its op (svc_reply_fn). */
static int update_caller_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	const struct update_caller_op *op = arg;
	const struct call *c = op->call;
	Monitoring__V1__UpdateCallerResponse *resp = (Monitoring__V1__UpdateCallerResponse *)(void *)msg;
	resp->caller = caller_msg(c->arena, &op->after);
	if (resp->caller == NULL)
		return svc_fail_nomem(err);
	return 0;
}

/*
 * UpdateCaller (admin, declared): the mask's fields; an administrator may
 * not lower its own role, and a disabled caller cannot be changed.
 */
static int update_caller(struct rpc_ctx *ctx, const Monitoring__V1__UpdateCallerRequest *req,
                         Monitoring__V1__UpdateCallerResponse *resp)
{
	static const char *const writable[] = {"email", "team", "role", "cert_subject"};
	static const char *const output_only[] = {"id", "created_at", "updated_at", "disabled_at"};
	struct call c;
	struct mon_error err = {0};
	bool has[4] = {false, false, false, false};
	call_init(&c, ctx);
	if (req->caller == NULL)
		return rpc_fail(ctx, MON_EINVAL, "caller: must be set");
	int rc = check_caller_ref("caller.id", req->caller->id, &err);
	if (rc == 0)
		rc = read_mask(req->update_mask, writable, has, 4, output_only, 4, &err);
	if (rc == 0)
		rc = check_caller_fields(req->caller, has[0], has[1], has[2], has[3], &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	struct update_caller_op op = {.call = &c,
	                              .in = req->caller,
	                              .has_email = has[0],
	                              .has_team = has[1],
	                              .has_role = has[2],
	                              .has_cert = has[3]};
	(void)resp; /* filled by update_caller_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.svc->pool, update_caller_tx, update_caller_reply, &op);
}

/* ---- DisableCaller ---- */

struct disable_caller_op {
	const struct call *call;
	const char *caller_id;
	struct caller_row before;
	struct caller_row after;
};

/* Locks the caller, refuses a disabled one, disables it and writes the "execute" event. */
static int disable_caller_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct disable_caller_op *op = arg;
	json_t *before = NULL, *after = NULL;
	int rc = caller_read(conn, op->caller_id, true, &op->before, err);
	if (rc != 0)
		goto out;
	if (op->before.c.disabled_at_ms != 0) {
		rc = mon_error_set(err, MON_EPRECOND, "caller \"%s\" is already disabled", op->caller_id);
		goto out;
	}
	rc = identity_caller_set_disabled_tx(conn, op->caller_id, true, err);
	if (rc == 0)
		rc = caller_read(conn, op->caller_id, false, &op->after, err);
	if (rc != 0)
		goto out;
	before = caller_json(&op->before);
	after = caller_json(&op->after);
	if (before == NULL || after == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	const char *what = arena_printf(op->call->arena, "disabled caller \"%s\"", op->caller_id);
	if (what == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = write_event(conn, op->call, "execute", "caller", op->after.c.id, op->after.c.email, what, before, after,
	                 err);
out:
	json_decref(before);
	json_decref(after);
	return rc;
}

/* disable_caller's response from its op (svc_reply_fn). */
static int disable_caller_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	const struct disable_caller_op *op = arg;
	const struct call *c = op->call;
	Monitoring__V1__DisableCallerResponse *resp = (Monitoring__V1__DisableCallerResponse *)(void *)msg;
	resp->caller = caller_msg(c->arena, &op->after);
	if (resp->caller == NULL)
		return svc_fail_nomem(err);
	return 0;
}

/* DisableCaller (admin, declared): never oneself; the event is "execute" on the caller. */
static int disable_caller(struct rpc_ctx *ctx, const Monitoring__V1__DisableCallerRequest *req,
                          Monitoring__V1__DisableCallerResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (check_caller_ref("caller_id", req->caller_id, &err) != 0)
		return rpc_fail(ctx, MON_EINVAL, "%s", err.msg);
	if (is_self(&c, req->caller_id))
		return rpc_fail(ctx, MON_EPRECOND, "caller_id: an administrator cannot disable itself");
	struct disable_caller_op op = {.call = &c, .caller_id = req->caller_id};
	(void)resp; /* filled by disable_caller_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.svc->pool, disable_caller_tx, disable_caller_reply, &op);
}

/* ---- CreateApiKey ---- */

struct create_key_op {
	const struct call *call;
	const char *caller_id;
	const char *description;
	int64_t expires_at_ms;
	char token[IDENTITY_TOKEN_MAX]; /* the secret: wiped after the response has its copy */
	struct identity_key key;
};

/* Creates the key (the token lands in op->token) and writes the "create" event, without the token. */
static int create_key_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct create_key_op *op = arg;
	json_t *after = NULL;
	int rc = identity_key_create_tx(conn, op->caller_id, op->description, op->expires_at_ms, op->token, &op->key,
	                                err);
	if (rc != 0)
		goto out;
	after = key_json(&op->key);
	if (after == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	const char *what = arena_printf(op->call->arena, "created API key \"%s\" for caller \"%s\"", op->key.id,
	                                op->key.caller_id);
	if (what == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = write_event(conn, op->call, "create", "api-key", op->key.id, op->key.caller_id, what, NULL, after, err);
out:
	json_decref(after);
	return rc;
}

/* create_api_key's response from its op (svc_reply_fn). */
static int create_api_key_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	const struct create_key_op *op = arg;
	Monitoring__V1__CreateApiKeyResponse *resp = (Monitoring__V1__CreateApiKeyResponse *)(void *)msg;
	resp->api_key = key_msg(op->call->arena, &op->key);
	resp->token = arena_strdup(op->call->arena, op->token);
	if (resp->api_key == NULL || resp->token == NULL)
		return svc_fail_nomem(err);
	return 0;
}

/*
 * The token is shown once and only its hash is kept: the stored outcome of
 * an idempotency key holds the key without it (svc_redact_fn).
 */
static void create_api_key_redact(ProtobufCMessage *copy)
{
	((Monitoring__V1__CreateApiKeyResponse *)(void *)copy)->token = (char *)"";
}

/*
 * CreateApiKey (viewer, declared): for oneself, or for anyone when admin.
 * The token is copied into the response and wiped here; nothing else sees it.
 */
static int create_api_key(struct rpc_ctx *ctx, const Monitoring__V1__CreateApiKeyRequest *req,
                          Monitoring__V1__CreateApiKeyResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct create_key_op op = {.call = &c, .description = req->description ? req->description : ""};
	const char *target = req->caller_id != NULL && req->caller_id[0] != '\0' ? req->caller_id : NULL;
	int rc = 0;
	if (target != NULL) {
		rc = check_caller_ref("caller_id", target, &err);
	} else if (c.who != NULL) {
		target = c.who->caller_id;
	} else {
		rc = mon_error_set(&err, MON_EINVAL, "caller_id: required when the call carries no credentials");
	}
	if (rc == 0)
		rc = access_check_text("description", op.description, DESCRIPTION_MAX, false, &err);
	if (rc == 0 && req->expires_at != NULL) {
		rc = svc_time_ms("expires_at", req->expires_at, &op.expires_at_ms, &err);
		if (rc == 0 && op.expires_at_ms <= mon_wall_ms())
			rc = mon_error_set(&err, MON_EINVAL, "expires_at: must be in the future");
	}
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	if (!c.is_admin && !is_self(&c, target))
		return rpc_fail(ctx, MON_EPERM, "caller_id: only an admin may create keys for another caller");
	op.caller_id = target;
	(void)resp; /* filled by create_api_key_reply or by the replay of an idempotency key */
	rc = svc_run_change_redacted(ctx, c.svc->pool, create_key_tx, create_api_key_reply, create_api_key_redact, &op);
	sodium_memzero(op.token, sizeof(op.token));
	return rc;
}

/* ---- ListApiKeys ---- */

struct list_keys_op {
	struct call *call;
	const char *caller_id; /* NULL: every caller's */
	bool show_revoked;
	const char *after_us; /* cursor: created_at in microseconds of the last key shown, NULL for the first page */
	const char *after_id;
	int page_size;
	const char *filters;
	Monitoring__V1__ListApiKeysResponse *resp;
};

/* One page of keys into op->resp (in the call's arena), with the next page token. */
static int list_keys_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct list_keys_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	char limit[16];
	snprintf(limit, sizeof(limit), "%d", op->page_size + 1);
	static const char sql[] = "SELECT id, caller_id, description,"
	                          " floor(extract(epoch FROM created_at) * 1000)::bigint,"
	                          " floor(extract(epoch FROM expires_at) * 1000)::bigint,"
	                          " floor(extract(epoch FROM revoked_at) * 1000)::bigint,"
	                          " floor(extract(epoch FROM last_used_at) * 1000)::bigint,"
	                          " (extract(epoch FROM created_at) * 1000000)::bigint"
	                          " FROM tb_api_key"
	                          " WHERE ($1::text IS NULL OR caller_id = $1) AND ($2::boolean OR revoked_at IS NULL)"
	                          " AND ($3::bigint IS NULL OR (created_at, id) >"
	                          " ('epoch'::timestamptz + $3::bigint * interval '1 microsecond', $4))"
	                          " ORDER BY created_at, id LIMIT $5::integer";
	const char *params[] = {op->caller_id, op->show_revoked ? "true" : "false", op->after_us, op->after_id, limit};
	int rc = db_exec(conn, sql, 5, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res);
	int shown = rows > op->page_size ? op->page_size : rows;
	op->resp->n_api_keys = 0;
	op->resp->api_keys = shown > 0 ? arena_calloc(a, (size_t)shown, sizeof(*op->resp->api_keys)) : NULL;
	if (shown > 0 && op->resp->api_keys == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	struct identity_key key;
	for (int i = 0; i < shown; i++) {
		key_from_result(res, i, &key);
		op->resp->api_keys[i] = key_msg(a, &key);
		if (op->resp->api_keys[i] == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
	}
	op->resp->n_api_keys = (size_t)shown;
	op->resp->next_page_token = "";
	if (rows > op->page_size) {
		char cursor[64], token[ACCESS_PAGE_TOKEN_MAX];
		snprintf(cursor, sizeof(cursor), "%s,%s", db_result_value(res, shown - 1, 7), key.id);
		rc = access_page_token_make(op->filters, cursor, token, err);
		if (rc != 0)
			goto out;
		op->resp->next_page_token = arena_strdup(a, token);
		if (op->resp->next_page_token == NULL)
			rc = svc_fail_nomem(err);
	}
out:
	db_result_free(res);
	return rc;
}

/* Splits a key list cursor "<created_at us>,<key id>" into the arena; MON_EINVAL when malformed. */
static int read_key_cursor(struct arena *a, const char *cursor, const char **us_out, const char **id_out)
{
	const char *comma = strchr(cursor, ',');
	if (comma == NULL || comma == cursor || strlen(comma + 1) != IDENTITY_KEY_ID_LEN)
		return MON_EINVAL;
	for (const char *p = cursor; p < comma; p++)
		if (*p < '0' || *p > '9')
			return MON_EINVAL;
	if (check_key_id("page_token", comma + 1, NULL) != 0)
		return MON_EINVAL;
	*us_out = arena_strndup(a, cursor, (size_t)(comma - cursor));
	*id_out = arena_strdup(a, comma + 1);
	return *us_out != NULL && *id_out != NULL ? 0 : MON_ENOMEM;
}

/* ListApiKeys (viewer, declared): one's own keys, or, for an admin, anyone's or one caller's. */
static int list_api_keys(struct rpc_ctx *ctx, const Monitoring__V1__ListApiKeysRequest *req,
                         Monitoring__V1__ListApiKeysResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct list_keys_op op = {.call = &c, .show_revoked = req->show_revoked, .resp = resp};
	int rc = svc_page_size(req->page_size, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, &op.page_size, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	if (req->caller_id != NULL && req->caller_id[0] != '\0') {
		if (check_caller_ref("caller_id", req->caller_id, &err) != 0)
			return rpc_fail(ctx, MON_EINVAL, "%s", err.msg);
		if (!c.is_admin && !is_self(&c, req->caller_id))
			return rpc_fail(ctx, MON_EPERM, "caller_id: only an admin may list another caller's keys");
		op.caller_id = req->caller_id;
	} else if (!c.is_admin) {
		op.caller_id = c.who->caller_id;
	}
	op.filters = arena_printf(c.arena, "keys|%s|%d", op.caller_id ? op.caller_id : "*", op.show_revoked);
	if (op.filters == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "response larger than the call's memory cap");
	if (req->page_token != NULL && req->page_token[0] != '\0') {
		char cursor[64];
		if (access_page_token_read(req->page_token, op.filters, cursor, sizeof(cursor), &err) != 0)
			return rpc_fail(ctx, MON_EINVAL, "%s", err.msg);
		rc = read_key_cursor(c.arena, cursor, &op.after_us, &op.after_id);
		if (rc != 0)
			return rpc_fail(ctx, rc, "%s", rc == MON_EINVAL ? "page_token: malformed" : "out of memory");
	}
	return run_tx(&c, list_keys_tx, &op);
}

/* ---- RevokeApiKey ---- */

struct revoke_key_op {
	const struct call *call;
	const char *key_id;
	struct identity_key before;
	struct identity_key after;
};

/* Checks ownership, revokes (FAILED_PRECONDITION when already revoked) and writes the event. */
static int revoke_key_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct revoke_key_op *op = arg;
	json_t *before = NULL, *after = NULL;
	int rc = key_read_owned(conn, op->call, op->key_id, &op->before, err);
	if (rc == 0)
		rc = identity_key_revoke_tx(conn, op->key_id, err);
	if (rc == 0)
		rc = identity_key_get_tx(conn, op->key_id, &op->after, err);
	if (rc != 0)
		goto out;
	before = key_json(&op->before);
	after = key_json(&op->after);
	if (before == NULL || after == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	const char *what = arena_printf(op->call->arena, "revoked API key \"%s\" of caller \"%s\"", op->after.id,
	                                op->after.caller_id);
	if (what == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = write_event(conn, op->call, "execute", "api-key", op->after.id, op->after.caller_id, what, before, after,
	                 err);
out:
	json_decref(before);
	json_decref(after);
	return rc;
}

/* revoke_api_key's response from its op (svc_reply_fn). */
static int revoke_api_key_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	const struct revoke_key_op *op = arg;
	const struct call *c = op->call;
	Monitoring__V1__RevokeApiKeyResponse *resp = (Monitoring__V1__RevokeApiKeyResponse *)(void *)msg;
	resp->api_key = key_msg(c->arena, &op->after);
	if (resp->api_key == NULL)
		return svc_fail_nomem(err);
	return 0;
}

/* RevokeApiKey (viewer, declared): one's own key, or any for an admin; the event is "execute". */
static int revoke_api_key(struct rpc_ctx *ctx, const Monitoring__V1__RevokeApiKeyRequest *req,
                          Monitoring__V1__RevokeApiKeyResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (check_key_id("key_id", req->key_id, &err) != 0)
		return rpc_fail(ctx, MON_EINVAL, "%s", err.msg);
	struct revoke_key_op op = {.call = &c, .key_id = req->key_id};
	(void)resp; /* filled by revoke_api_key_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.svc->pool, revoke_key_tx, revoke_api_key_reply, &op);
}

/* ---- UpdateApiKey ---- */

struct update_key_op {
	const struct call *call;
	const char *key_id;
	bool has_description, has_expires_at;
	const char *description;
	int64_t expires_at_ms; /* 0: never */
	struct identity_key before;
	struct identity_key after;
};

/* Checks ownership and state, applies the mask's fields, reloads the key and writes the "update" event. */
static int update_key_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct update_key_op *op = arg;
	json_t *before = NULL, *after = NULL;
	int rc = key_read_owned(conn, op->call, op->key_id, &op->before, err);
	if (rc == 0 && op->before.revoked_at_ms != 0)
		rc = mon_error_set(err, MON_EPRECOND, "API key \"%s\" is revoked", op->key_id);
	if (rc == 0 && op->has_expires_at)
		rc = identity_key_set_expiry_tx(conn, op->key_id, op->expires_at_ms, err);
	if (rc == 0 && op->has_description) {
		const char *params[] = {op->key_id, op->description};
		rc = db_exec(conn, "UPDATE tb_api_key SET description = $2 WHERE id = $1", 2, params, NULL, err);
		if (rc == 0)
			rc = db_notify(conn, "mon_identity", op->key_id, err);
	}
	if (rc == 0)
		rc = identity_key_get_tx(conn, op->key_id, &op->after, err);
	if (rc != 0)
		goto out;
	before = key_json(&op->before);
	after = key_json(&op->after);
	if (before == NULL || after == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	const char *what = arena_printf(op->call->arena, "changed API key \"%s\" of caller \"%s\": %s%s%s",
	                                op->after.id, op->after.caller_id, op->has_description ? "description" : "",
	                                op->has_description && op->has_expires_at ? ", " : "",
	                                op->has_expires_at ? "expires_at" : "");
	if (what == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = write_event(conn, op->call, "update", "api-key", op->after.id, op->after.caller_id, what, before, after,
	                 err);
out:
	json_decref(before);
	json_decref(after);
	return rc;
}

/* update_api_key's response from its op (svc_reply_fn). */
static int update_api_key_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	const struct update_key_op *op = arg;
	const struct call *c = op->call;
	Monitoring__V1__UpdateApiKeyResponse *resp = (Monitoring__V1__UpdateApiKeyResponse *)(void *)msg;
	resp->api_key = key_msg(c->arena, &op->after);
	if (resp->api_key == NULL)
		return svc_fail_nomem(err);
	return 0;
}

/* UpdateApiKey (viewer, declared): description and expiry of one's own key, or any for an admin. */
static int update_api_key(struct rpc_ctx *ctx, const Monitoring__V1__UpdateApiKeyRequest *req,
                          Monitoring__V1__UpdateApiKeyResponse *resp)
{
	static const char *const writable[] = {"description", "expires_at"};
	static const char *const output_only[] = {"id", "caller_id", "created_at", "revoked_at", "last_used_at"};
	struct call c;
	struct mon_error err = {0};
	bool has[2] = {false, false};
	call_init(&c, ctx);
	const Monitoring__V1__ApiKey *k = req->api_key;
	if (k == NULL)
		return rpc_fail(ctx, MON_EINVAL, "api_key: must be set");
	struct update_key_op op = {.call = &c, .key_id = k->id, .description = k->description ? k->description : ""};
	int rc = check_key_id("api_key.id", k->id, &err);
	if (rc == 0)
		rc = read_mask(req->update_mask, writable, has, 2, output_only, 5, &err);
	if (rc == 0 && has[0])
		rc = access_check_text("api_key.description", op.description, DESCRIPTION_MAX, false, &err);
	if (rc == 0 && has[1] && k->expires_at != NULL) {
		rc = svc_time_ms("api_key.expires_at", k->expires_at, &op.expires_at_ms, &err);
		if (rc == 0 && op.expires_at_ms <= mon_wall_ms())
			rc = mon_error_set(&err, MON_EINVAL, "api_key.expires_at: must be in the future");
	}
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	op.has_description = has[0];
	op.has_expires_at = has[1];
	(void)resp; /* filled by update_api_key_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.svc->pool, update_key_tx, update_api_key_reply, &op);
}

/* ---- binding ---- */

int access_service_bind(struct rpc_server *server, struct access_service *svc, struct mon_error *err)
{
	static const struct monitoring_v1_access_service_handlers handlers = {
	        .get_caller_identity = get_caller_identity,
	        .create_caller = create_caller,
	        .get_caller = get_caller,
	        .list_callers = list_callers,
	        .update_caller = update_caller,
	        .disable_caller = disable_caller,
	        .create_api_key = create_api_key,
	        .list_api_keys = list_api_keys,
	        .revoke_api_key = revoke_api_key,
	        .update_api_key = update_api_key,
	};
	if (sodium_init() < 0)
		return mon_error_set(err, MON_EINTERNAL, "libsodium could not be initialised");
	const char *failpoints = getenv("MONITORD_FAILPOINTS");
	svc->is_failing_after_write = failpoints != NULL && strstr(failpoints, "access.after_write") != NULL;
	if (svc->is_failing_after_write)
		log_warn("msg=\"test failpoint on: every AccessService change fails after its write\" "
		         "failpoint=access.after_write");
	return monitoring_v1_access_service_bind(server, &handlers, svc, 0, err);
}
