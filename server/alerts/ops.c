/*
 * AlertsService alert operations (alerts/service.h): GetAlert, ListAlerts,
 * AcknowledgeAlert, ResolveAlert, EscalateAlert, ListAlertNotifications
 * and GetAlertStatistics. Each handler checks its input (INVALID_ARGUMENT
 * naming the field), then runs one transaction bounded by the caller's
 * deadline. A change locks the alert, checks the transition
 * (FAILED_PRECONDITION otherwise), writes the alert, queues or skips its
 * deliveries, writes its audit event and, last, records the change in the
 * change log (alerts_record_change_tx), so WatchAlerts, the notifier and
 * the audit trail see it together or not at all.
 *
 * Lists use keyset paging; a page token binds the position to the filters
 * and order it was made for.
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "alerts/service.h"
#include "alerts/store.h"
#include "audit/audit.h"
#include "common/call.h"
#include "common/page.h"
#include "common/parse.h"
#include "common/text.h"

#define MODULE "alerts"
#define PAGE_TOKEN_MAX 1400
#define ACTOR_MAX_CHARS 50 /* acknowledged_by, resolved_by: VARCHAR(50) */
#define STATS_WINDOW_DAYS_TEXT "30"

#define ST_ACTIVE MONITORING__V1__ALERT_STATUS__ALERT_STATUS_ACTIVE
#define ST_ACKNOWLEDGED MONITORING__V1__ALERT_STATUS__ALERT_STATUS_ACKNOWLEDGED
#define ST_RESOLVED MONITORING__V1__ALERT_STATUS__ALERT_STATUS_RESOLVED
#define ST_SUPPRESSED MONITORING__V1__ALERT_STATUS__ALERT_STATUS_SUPPRESSED
#define ST_PENDING MONITORING__V1__ALERT_STATUS__ALERT_STATUS_PENDING

/* The "most severe first" rank of the data model's active-alerts query. */
#define SEVERITY_RANK                                                                                                  \
	"CASE a.severity WHEN 'critical' THEN 1 WHEN 'fatal' THEN 2 WHEN 'error' THEN 3 WHEN 'warning' THEN 4"         \
	" ELSE 5 END"
/* Microseconds since the epoch (a text parameter) as a timestamptz, exactly. */
#define AT_US(p) "('epoch'::timestamptz + " p "::bigint * interval '1 microsecond')"

/* ---- the call ---- */

struct call {
	struct rpc_ctx *ctx;
	struct arena *arena;
	struct db_pool *pool;
	char actor[ACTOR_MAX_CHARS * 4 + 1]; /* the caller's id, "anonymous" without one */
};

static void call_init(struct call *c, struct rpc_ctx *ctx)
{
	c->ctx = ctx;
	c->arena = rpc_ctx_arena(ctx);
	c->pool = alerts_service_of(ctx)->pool;
	const struct rpc_identity *who = rpc_ctx_identity(ctx);
	audit_clip_text(who != NULL && who->caller_id[0] ? who->caller_id : "anonymous", ACTOR_MAX_CHARS, c->actor,
	                sizeof(c->actor));
}

/* One transaction bounded by the call's deadline (svc_run_tx). */
static int run_tx(struct call *c, db_tx_fn fn, void *arg)
{
	return svc_run_tx(c->ctx, c->pool, fn, arg);
}

/* An id field: set, at most 50 bytes (longer ids cannot exist: they are NOT_FOUND at once). */
static int check_id(struct rpc_ctx *ctx, const char *field, const char *id)
{
	if (id == NULL || id[0] == '\0')
		return rpc_fail(ctx, MON_EINVAL, "%s: must be set", field);
	return 0;
}

/*
 * Cursors are "<n1>,<n2>,<hex of the id>": two integers (a rank or count
 * and microseconds, or 0) and the last id, hex-encoded so any id fits.
 */
static char *cursor_make(struct arena *a, int64_t n1, int64_t n2, const char *id)
{
	size_t len = strlen(id);
	char *hex = arena_alloc(a, 2 * len + 1);
	if (hex == NULL)
		return NULL;
	sodium_bin2hex(hex, 2 * len + 1, (const unsigned char *)id, len);
	return arena_printf(a, "%" PRId64 ",%" PRId64 ",%s", n1, n2, hex);
}

static int cursor_read(struct arena *a, const char *cursor, int64_t *n1, int64_t *n2, char **id_out,
                       struct mon_error *err)
{
	char *end = NULL;
	*n1 = strtoll(cursor, &end, 10);
	if (end == cursor || *end != ',')
		return mon_error_set(err, MON_EINVAL, "page_token: malformed");
	const char *p = end + 1;
	*n2 = strtoll(p, &end, 10);
	if (end == p || *end != ',')
		return mon_error_set(err, MON_EINVAL, "page_token: malformed");
	const char *hex = end + 1;
	size_t hex_len = strlen(hex), bin_len = 0;
	char *id = arena_alloc(a, hex_len / 2 + 1);
	if (id == NULL)
		return svc_fail_nomem(err);
	if (hex_len == 0 || hex_len % 2 != 0 ||
	    sodium_hex2bin((unsigned char *)id, hex_len / 2, hex, hex_len, NULL, &bin_len, NULL) != 0 ||
	    bin_len != hex_len / 2 || memchr(id, '\0', bin_len) != NULL)
		return mon_error_set(err, MON_EINVAL, "page_token: malformed");
	id[bin_len] = '\0';
	*id_out = id;
	return 0;
}

/* ---- filters ---- */

/* A PostgreSQL array literal of enum labels ({a,b}); NULL for no values. MON_EINVAL naming field. */
static int labels_literal(struct arena *a, const char *field, const int *values, size_t n, const char *(*label_of)(int),
                          const char **out, struct mon_error *err)
{
	*out = NULL;
	if (n == 0)
		return 0;
	struct arena_str text;
	arena_str_init(&text, a);
	arena_str_append(&text, "{");
	for (size_t i = 0; i < n; i++) {
		const char *l = label_of(values[i]);
		if (l == NULL)
			return mon_error_set(err, MON_EINVAL, "%s[%zu]: %s", field, i,
			                     values[i] == 0 ? "UNSPECIFIED is not allowed" : "unknown value");
		arena_str_printf(&text, "%s%s", i ? "," : "", l);
	}
	arena_str_append(&text, "}");
	*out = arena_str_get(&text);
	return *out ? 0 : svc_fail_nomem(err);
}

static const char *status_label_int(int v)
{
	return alerts_status_label((Monitoring__V1__AlertStatus)v);
}

static const char *severity_label_int(int v)
{
	return alerts_severity_label((Monitoring__V1__SeverityLevel)v);
}

static const char *rule_status_label_int(int v)
{
	return alerts_rule_status_label((Monitoring__V1__AlertRuleStatus)v);
}

static const char *delivery_label_int(int v)
{
	return alerts_delivery_status_label((Monitoring__V1__DeliveryStatus)v);
}

/* Enum arrays of protobuf-c are arrays of the enum type, which has the size of an int. */
_Static_assert(sizeof(Monitoring__V1__AlertStatus) == sizeof(int), "enum arrays read as int arrays");

/* A JSON array of strings (for "= ANY" through jsonb); NULL for none. */
static int strings_json(struct arena *a, const char *field, char *const *values, size_t n, const char **out,
                        struct mon_error *err)
{
	*out = NULL;
	if (n == 0)
		return 0;
	json_t *arr = json_array();
	for (size_t i = 0; arr != NULL && i < n; i++) {
		if (values[i] == NULL || values[i][0] == '\0') {
			json_decref(arr);
			return mon_error_set(err, MON_EINVAL, "%s[%zu]: must not be empty", field, i);
		}
		if (json_array_append_new(arr, json_string(values[i])) != 0) {
			/* not bad text: the RPC runtime refused that before the handler ran */
			json_decref(arr);
			return svc_fail_nomem(err);
		}
	}
	char *text = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
	json_decref(arr);
	if (text == NULL)
		return svc_fail_nomem(err);
	*out = arena_strdup(a, text);
	free(text);
	return *out ? 0 : svc_fail_nomem(err);
}

/* A time range as microsecond texts (NULL when absent); MON_EINVAL naming the field. */
static int time_range_us(struct arena *a, const char *field, const Monitoring__V1__TimeRange *tr, const char **start,
                         const char **end, int64_t *start_ms, int64_t *end_ms, struct mon_error *err)
{
	*start = *end = NULL;
	*start_ms = *end_ms = 0;
	if (tr == NULL)
		return 0;
	char name[64];
	int rc = 0;
	if (tr->start_time != NULL) {
		snprintf(name, sizeof(name), "%s.start_time", field);
		if ((rc = svc_time_ms(name, tr->start_time, start_ms, err)) != 0)
			return rc;
		*start = arena_printf(a, "%" PRId64, *start_ms * 1000 + tr->start_time->nanos / 1000 % 1000);
	}
	if (tr->end_time != NULL) {
		snprintf(name, sizeof(name), "%s.end_time", field);
		if ((rc = svc_time_ms(name, tr->end_time, end_ms, err)) != 0)
			return rc;
		*end = arena_printf(a, "%" PRId64, *end_ms * 1000 + tr->end_time->nanos / 1000 % 1000);
	}
	if ((tr->start_time != NULL && *start == NULL) || (tr->end_time != NULL && *end == NULL))
		return svc_fail_nomem(err);
	if (*start != NULL && *end != NULL && svc_parse_i64(*start) > svc_parse_i64(*end))
		return mon_error_set(err, MON_EINVAL, "%s: start_time must not be after end_time", field);
	return 0;
}

/* ---- audit ---- */

/* What an audit event shows of an alert. New reference (NULL when out of memory). */
static json_t *alert_json(const Monitoring__V1__Alert *m)
{
	const char *status = alerts_status_label(m->status);
	return json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:s?, s:s?, s:i}", "id", m->id, "alert_rule_id", m->alert_rule_id,
	                 "status", status ? status : "", "acknowledged_by",
	                 m->acknowledged_by && m->acknowledged_by[0] ? m->acknowledged_by : NULL, "acknowledgment_note",
	                 m->acknowledgment_note && m->acknowledgment_note[0] ? m->acknowledgment_note : NULL,
	                 "resolved_by", m->resolved_by && m->resolved_by[0] ? m->resolved_by : NULL, "resolution_note",
	                 m->resolution_note && m->resolution_note[0] ? m->resolution_note : NULL, "escalation_level",
	                 (int)m->escalation_level);
}

/* Writes the change's audit event (module "alerts", resource "alert", action "execute"). */
static int write_audit(struct db_conn *conn, const struct call *c, const Monitoring__V1__Alert *before,
                       const Monitoring__V1__Alert *after, const char *description, const char *note,
                       struct mon_error *err)
{
	json_t *b = alert_json(before), *af = alert_json(after);
	if (af != NULL && note != NULL && note[0] != '\0')
		json_object_set_new(af, "note", json_string(note));
	int rc;
	if (b == NULL || af == NULL) {
		rc = svc_fail_nomem(err);
	} else {
		struct audit_event ev = {.action = "execute",
		                         .resource_type = "alert",
		                         .resource_id = after->id,
		                         .resource_name = after->rule_name,
		                         .description = description,
		                         .before = b,
		                         .after = af,
		                         .module = MODULE,
		                         .severity = alerts_severity_label(after->severity)};
		rc = audit_write_tx(conn, c->ctx, &ev, err);
	}
	json_decref(b);
	json_decref(af);
	return rc;
}

/* ---- GetAlert ---- */

struct get_op {
	const struct call *call;
	const char *id;
	Monitoring__V1__Alert *out;
};

static int get_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct get_op *op = arg;
	return alerts_read_tx(conn, op->call->arena, op->id, false, &op->out, err);
}

static int get_alert(struct rpc_ctx *ctx, const Monitoring__V1__GetAlertRequest *req,
                     Monitoring__V1__GetAlertResponse *resp)
{
	struct call c;
	call_init(&c, ctx);
	int rc = check_id(ctx, "alert_id", req->alert_id);
	if (rc != 0)
		return rc;
	struct get_op op = {.call = &c, .id = req->alert_id};
	if ((rc = svc_run_read(ctx, c.pool, get_tx, &op)) != 0)
		return rc;
	resp->alert = op.out;
	return 0;
}

/* ---- ListAlerts ---- */

struct list_op {
	const struct call *call;
	const char *statuses, *severities, *rule_ids, *start, *end, *acked_by;
	Monitoring__V1__AlertOrder order;
	int page_size;
	const char *filters;
	bool has_cursor;
	char rank[24], at_us[24];
	const char *after_id;
	Monitoring__V1__ListAlertsResponse *resp;
};

/* $1-$6 filters, $7-$9 cursor (rank, triggered_at µs, id), $10 limit. */
#define LIST_WHERE                                                                                                     \
	" WHERE a.status = ANY($1::alert_status[])"                                                                    \
	" AND ($2::severity_level[] IS NULL OR a.severity = ANY($2::severity_level[]))"                                \
	" AND ($3::jsonb IS NULL OR a.alert_rule_id IN (SELECT jsonb_array_elements_text($3::jsonb)))"                 \
	" AND ($4::bigint IS NULL OR a.triggered_at >= " AT_US(                                                        \
	        "$4") ")"                                                                                              \
	              " AND ($5::bigint IS NULL OR a.triggered_at < " AT_US(                                           \
	                      "$5") ")"                                                                                \
	                            " AND ($6::text IS NULL OR a.acknowledged_by = $6)"

static int list_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char severity_sql[] =
	        "SELECT " ALERTS_SELECT_LIST_SQL ALERTS_FROM_SQL LIST_WHERE
	        " AND ($7::integer IS NULL OR " SEVERITY_RANK " > $7::integer OR (" SEVERITY_RANK " = $7::integer"
	        " AND (a.triggered_at < " AT_US("$8") " OR (a.triggered_at = " AT_US(
	                "$8") " AND a.id < $9))))"
	                      " ORDER BY " SEVERITY_RANK ", a.triggered_at DESC, a.id DESC LIMIT $10::integer";
	static const char newest_sql[] =
	        "SELECT " ALERTS_SELECT_LIST_SQL ALERTS_FROM_SQL LIST_WHERE
	        " AND ($7::integer IS NULL OR a.triggered_at < " AT_US(
	                "$8") " OR"
	                      " (a.triggered_at = " AT_US(
	                              "$8") " AND a.id < $9))"
	                                    " ORDER BY a.triggered_at DESC, a.id DESC LIMIT $10::integer";
	static const char oldest_sql[] =
	        "SELECT " ALERTS_SELECT_LIST_SQL ALERTS_FROM_SQL LIST_WHERE
	        " AND ($7::integer IS NULL OR a.triggered_at > " AT_US(
	                "$8") " OR"
	                      " (a.triggered_at = " AT_US("$8") " AND a.id > $9))"
	                                                        " ORDER BY a.triggered_at, a.id LIMIT $10::integer";
	static const char count_sql[] = "SELECT count(*)" ALERTS_FROM_SQL LIST_WHERE;
	struct list_op *op = arg;
	struct arena *a = op->call->arena;
	Monitoring__V1__ListAlertsResponse *resp = op->resp;
	const char *sql = op->order == MONITORING__V1__ALERT_ORDER__ALERT_ORDER_NEWEST   ? newest_sql
	                  : op->order == MONITORING__V1__ALERT_ORDER__ALERT_ORDER_OLDEST ? oldest_sql
	                                                                                 : severity_sql;
	char limit[16];
	snprintf(limit, sizeof(limit), "%d", op->page_size + 1);
	const char *params[] = {op->statuses,
	                        op->severities,
	                        op->rule_ids,
	                        op->start,
	                        op->end,
	                        op->acked_by,
	                        op->has_cursor ? op->rank : NULL,
	                        op->has_cursor ? op->at_us : NULL,
	                        op->has_cursor ? op->after_id : NULL,
	                        limit};
	struct db_result *res = NULL;
	int rc = db_exec(conn, sql, 10, params, &res, err);
	if (rc != 0)
		return rc;
	int rows = db_result_rows(res);
	int shown = rows > op->page_size ? op->page_size : rows;
	resp->alerts = shown > 0 ? arena_calloc(a, (size_t)shown, sizeof(*resp->alerts)) : NULL;
	if (shown > 0 && resp->alerts == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	for (int i = 0; i < shown; i++) {
		if ((rc = alerts_from_row(a, res, i, &resp->alerts[i], err)) != 0)
			goto out;
		resp->n_alerts++;
	}
	resp->next_page_token = "";
	if (rows > op->page_size) {
		const Monitoring__V1__Alert *last = resp->alerts[shown - 1];
		int64_t us = last->triggered_at
		                     ? last->triggered_at->seconds * 1000000 + last->triggered_at->nanos / 1000
		                     : 0;
		char *cursor = cursor_make(a, alerts_severity_rank(last->severity), us, last->id);
		if (cursor == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		if ((rc = svc_page_token_make_in(a, op->filters, cursor, PAGE_TOKEN_MAX, &resp->next_page_token,
		                                 err)) != 0)
			goto out;
	}
	db_result_free(res);
	res = NULL;
	if ((rc = db_exec(conn, count_sql, 6, params, &res, err)) == 0)
		resp->total_size = (int32_t)svc_parse_i64(db_result_value(res, 0, 0));
out:
	db_result_free(res);
	return rc;
}

static int list_alerts(struct rpc_ctx *ctx, const Monitoring__V1__ListAlertsRequest *req,
                       Monitoring__V1__ListAlertsResponse *resp)
{
	static const int default_statuses[] = {ST_ACTIVE, ST_ACKNOWLEDGED, ST_SUPPRESSED};
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct list_op op = {.call = &c, .resp = resp};
	int rc = svc_page_size(req->page_size, 50, 500, &op.page_size, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	int64_t start_ms, end_ms;
	if (req->n_statuses > 0)
		rc = labels_literal(c.arena, "statuses", (const int *)req->statuses, req->n_statuses, status_label_int,
		                    &op.statuses, &err);
	else
		rc = labels_literal(c.arena, "statuses", default_statuses, 3, status_label_int, &op.statuses, &err);
	if (rc == 0)
		rc = labels_literal(c.arena, "severities", (const int *)req->severities, req->n_severities,
		                    severity_label_int, &op.severities, &err);
	if (rc == 0)
		rc = strings_json(c.arena, "alert_rule_ids", req->alert_rule_ids, req->n_alert_rule_ids, &op.rule_ids,
		                  &err);
	if (rc == 0)
		rc = time_range_us(c.arena, "time_range", req->time_range, &op.start, &op.end, &start_ms, &end_ms,
		                   &err);
	if (rc == 0 && req->order_by != MONITORING__V1__ALERT_ORDER__ALERT_ORDER_UNSPECIFIED &&
	    req->order_by != MONITORING__V1__ALERT_ORDER__ALERT_ORDER_SEVERITY_THEN_NEWEST &&
	    req->order_by != MONITORING__V1__ALERT_ORDER__ALERT_ORDER_NEWEST &&
	    req->order_by != MONITORING__V1__ALERT_ORDER__ALERT_ORDER_OLDEST)
		rc = mon_error_set(&err, MON_EINVAL, "order_by: unknown value %d", (int)req->order_by);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	op.order = req->order_by == MONITORING__V1__ALERT_ORDER__ALERT_ORDER_UNSPECIFIED
	                   ? MONITORING__V1__ALERT_ORDER__ALERT_ORDER_SEVERITY_THEN_NEWEST
	                   : req->order_by;
	op.acked_by = req->acknowledged_by && req->acknowledged_by[0] ? req->acknowledged_by : NULL;
	op.filters =
	        arena_printf(c.arena, "alerts|%s|%s|%s|%s|%s|%s|%d", op.statuses, op.severities ? op.severities : "",
	                     op.rule_ids ? op.rule_ids : "", op.start ? op.start : "", op.end ? op.end : "",
	                     op.acked_by ? op.acked_by : "", (int)op.order);
	if (op.filters == NULL)
		return svc_nomem(ctx);
	if (req->page_token != NULL && req->page_token[0] != '\0') {
		char *cursor = NULL, *id = NULL;
		int64_t rank, us;
		if (svc_page_token_read_in(c.arena, req->page_token, op.filters, PAGE_TOKEN_MAX, &cursor, &err) != 0 ||
		    cursor_read(c.arena, cursor, &rank, &us, &id, &err) != 0)
			return rpc_fail(ctx, err.code, "%s", err.msg);
		snprintf(op.rank, sizeof(op.rank), "%" PRId64, rank);
		snprintf(op.at_us, sizeof(op.at_us), "%" PRId64, us);
		op.after_id = id;
		op.has_cursor = true;
	}
	return run_tx(&c, list_tx, &op);
}

/* ---- changes ---- */

/* The rule columns a change needs. */
struct rule_info {
	char *status; /* alert_rule_status label */
	char *policy_id;
	Monitoring__V1__NotificationChannel *channels;
	size_t channel_n;
	Monitoring__V1__NotificationRecipients *recipients;
};

static int rule_info_read(struct db_conn *conn, struct arena *a, const char *rule_id, struct rule_info *out,
                          struct mon_error *err)
{
	static const char sql[] =
	        "SELECT status::text, coalesce(escalation_policy_id, ''), notification_channels::text,"
	        " notification_recipients::text FROM tb_alert_rule WHERE id = $1";
	const char *params[] = {rule_id};
	struct db_result *res = NULL;
	int rc = db_exec(conn, sql, 1, params, &res, err);
	if (rc != 0)
		return rc;
	if (db_result_rows(res) != 1) {
		rc = mon_error_set(err, MON_ENOTFOUND, "alert_rule_id: no rule \"%s\"", rule_id);
		goto out;
	}
	out->status = arena_strdup(a, db_result_value(res, 0, 0));
	out->policy_id = arena_strdup(a, db_result_value(res, 0, 1));
	if (out->status == NULL || out->policy_id == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = alerts_channels_from_text(a, db_result_value(res, 0, 2), &out->channels, &out->channel_n, err);
	if (rc == 0)
		rc = alerts_recipients_from_text(a, db_result_value(res, 0, 3), &out->recipients, err);
out:
	db_result_free(res);
	return rc;
}

/* Marks the alert's deliveries not yet sent as skipped (of trigger_a or trigger_b), refreshing the summary. */
static int skip_pending(struct db_conn *conn, const char *alert_id, const char *trigger_a, const char *trigger_b,
                        struct mon_error *err)
{
	static const char sql[] = "UPDATE tb_notification_outbox SET status = 'skipped', next_attempt_at = now()"
	                          " WHERE alert_id = $1 AND status IN ('pending', 'retrying') AND trigger IN ($2, $3)";
	const char *params[] = {alert_id, trigger_a, trigger_b};
	struct db_result *res = NULL;
	int rc = db_exec(conn, sql, 3, params, &res, err);
	int64_t n = rc == 0 ? db_result_affected(res) : 0;
	db_result_free(res);
	if (rc == 0 && n > 0)
		rc = alerts_deliveries_sync_tx(conn, alert_id, err);
	return rc;
}

enum change_kind { CHANGE_ACK, CHANGE_RESOLVE, CHANGE_ESCALATE };

struct change_op {
	const struct call *call;
	enum change_kind kind;
	const char *id;
	const char *note;
	Monitoring__V1__Alert *out;
	Monitoring__V1__NotificationDelivery **queued;
	size_t queued_n;
};

static int precondition(const Monitoring__V1__Alert *m, const char *what, const char *allowed, struct mon_error *err)
{
	const char *status = alerts_status_label(m->status);
	return mon_error_set(err, MON_EPRECOND, "alert \"%s\" is %s: only %s can be %s", m->id,
	                     status ? status : "unknown", allowed, what);
}

static int acknowledge_tx(struct db_conn *conn, struct change_op *op, const Monitoring__V1__Alert *before,
                          struct mon_error *err)
{
	static const char sql[] =
	        "UPDATE tb_alert SET status = 'acknowledged', acknowledged_at = now(),"
	        " acknowledged_by = $2, acknowledgment_note = nullif($3, ''), next_escalation_at = NULL,"
	        " suppression_reason = NULL, silence_id = NULL, updated_at = now() WHERE id = $1";
	if (!alerts_transition_allowed(before->status, ST_ACKNOWLEDGED))
		return precondition(before, "acknowledged", "an active or suppressed alert", err);
	const char *params[] = {op->id, op->call->actor, op->note};
	int rc = db_exec(conn, sql, 3, params, NULL, err);
	if (rc == 0)
		rc = skip_pending(conn, op->id, "fired", "escalated", err);
	return rc;
}

static int resolve_tx(struct db_conn *conn, struct change_op *op, const Monitoring__V1__Alert *before,
                      struct mon_error *err)
{
	static const char sql[] = "UPDATE tb_alert SET status = 'resolved', resolved_at = now(), resolved_by = $2,"
	                          " resolution_note = nullif($3, ''), next_escalation_at = NULL,"
	                          " suppression_reason = NULL, silence_id = NULL, updated_at = now() WHERE id = $1";
	struct arena *a = op->call->arena;
	/* PENDING -> RESOLVED is the evaluator's alone (the condition cleared before the alert fired). */
	if (before->status == ST_PENDING || !alerts_transition_allowed(before->status, ST_RESOLVED))
		return precondition(before, "resolved", "an active, suppressed or acknowledged alert", err);
	const char *params[] = {op->id, op->call->actor, op->note};
	int rc = db_exec(conn, sql, 3, params, NULL, err);
	if (rc == 0)
		rc = skip_pending(conn, op->id, "fired", "escalated", err);
	struct rule_info rule = {0};
	if (rc == 0)
		rc = rule_info_read(conn, a, before->alert_rule_id, &rule, err);
	/* Those told it fired are told it resolved (as the evaluator does); SUPPRESSED told nobody. */
	bool was_told = before->status == ST_ACTIVE || before->status == ST_ACKNOWLEDGED;
	if (rc != 0 || !was_told || strcmp(rule.status, "testing") == 0)
		return rc;
	Monitoring__V1__Alert *now = NULL;
	rc = alerts_read_tx(conn, a, op->id, false, &now, err);
	if (rc == 0)
		rc = alerts_outbox_enqueue_tx(conn, a, now, "resolved", 0, rule.channels, rule.channel_n,
		                              rule.recipients, &op->queued, &op->queued_n, err);
	return rc;
}

/* Level number `level` (1-based) of a policy's levels JSON: its delay, channels and recipients. */
static int policy_level(struct arena *a, const json_t *levels, size_t level, int64_t *delay_min,
                        Monitoring__V1__NotificationChannel **channels, size_t *channel_n,
                        Monitoring__V1__NotificationRecipients **recipients, struct mon_error *err)
{
	const json_t *l = json_array_get(levels, level - 1);
	json_t *chans = json_object_get(l, "channels");
	size_t n = json_array_size(chans);
	*delay_min = json_integer_value(json_object_get(l, "delay_minutes"));
	*channel_n = 0;
	*channels = arena_calloc(a, n ? n : 1, sizeof(**channels));
	if (*channels == NULL)
		return svc_fail_nomem(err);
	for (size_t i = 0; i < n; i++) {
		json_t *c = json_array_get(chans, i);
		Monitoring__V1__NotificationChannel ch =
		        json_is_string(c)    ? alerts_channel_from_label(json_string_value(c))
		        : json_is_integer(c) ? (Monitoring__V1__NotificationChannel)json_integer_value(c)
		                             : MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_UNSPECIFIED;
		if (alerts_channel_label(ch) != NULL)
			(*channels)[(*channel_n)++] = ch;
	}
	char *text = json_dumps(json_object_get(l, "recipients"), JSON_COMPACT | JSON_ENCODE_ANY);
	int rc = alerts_recipients_from_text(a, text, recipients, err);
	free(text);
	return rc;
}

static int escalate_tx(struct db_conn *conn, struct change_op *op, const Monitoring__V1__Alert *before,
                       struct mon_error *err)
{
	static const char policy_sql[] = "SELECT levels::text, is_repeat_last_level FROM tb_escalation_policy"
	                                 " WHERE id = $1";
	static const char update_sql[] = "UPDATE tb_alert SET escalation_level = $2::integer, escalated_at = now(),"
	                                 " next_escalation_at = CASE WHEN $3::bigint IS NULL THEN NULL"
	                                 " ELSE now() + $3::bigint * interval '1 minute' END, updated_at = now()"
	                                 " WHERE id = $1";
	struct arena *a = op->call->arena;
	if (before->status != ST_ACTIVE && before->status != ST_SUPPRESSED)
		return precondition(before, "escalated", "an active or suppressed alert", err);
	struct rule_info rule = {0};
	int rc = rule_info_read(conn, a, before->alert_rule_id, &rule, err);
	if (rc != 0)
		return rc;
	if (rule.policy_id[0] == '\0')
		return mon_error_set(err, MON_EPRECOND, "alert \"%s\": rule \"%s\" has no escalation policy", op->id,
		                     before->alert_rule_id);
	const char *params[] = {rule.policy_id};
	struct db_result *res = NULL;
	json_t *levels = NULL;
	if ((rc = db_exec(conn, policy_sql, 1, params, &res, err)) != 0)
		return rc;
	if (db_result_rows(res) != 1) {
		rc = mon_error_set(err, MON_EPRECOND, "alert \"%s\": escalation policy \"%s\" no longer exists", op->id,
		                   rule.policy_id);
		goto out;
	}
	levels = json_loads(db_result_value(res, 0, 0), JSON_DECODE_ANY, NULL);
	bool is_repeat = strcmp(db_result_value(res, 0, 1), "t") == 0;
	size_t level_n = json_is_array(levels) ? json_array_size(levels) : 0;
	size_t next = (size_t)(before->escalation_level < 0 ? 0 : before->escalation_level) + 1;
	if (next > level_n) {
		rc = mon_error_set(err, MON_EPRECOND,
		                   "alert \"%s\" is at the last level (%zu) of escalation policy \"%s\"", op->id,
		                   level_n, rule.policy_id);
		goto out;
	}
	int64_t delay_min = 0, next_delay_min = 0;
	Monitoring__V1__NotificationChannel *channels = NULL, *unused_channels = NULL;
	size_t channel_n = 0, unused_n = 0;
	Monitoring__V1__NotificationRecipients *recipients = NULL, *unused_recipients = NULL;
	if ((rc = policy_level(a, levels, next, &delay_min, &channels, &channel_n, &recipients, err)) != 0)
		goto out;
	/* The next automatic escalation: the following level's delay, or this one's when the last repeats. */
	bool has_next = next < level_n || is_repeat;
	if (next < level_n) {
		rc = policy_level(a, levels, next + 1, &next_delay_min, &unused_channels, &unused_n, &unused_recipients,
		                  err);
		if (rc != 0)
			goto out;
	} else {
		next_delay_min = delay_min;
	}
	if (next_delay_min < 1)
		next_delay_min = 1;
	char level_text[16], delay_text[24];
	snprintf(level_text, sizeof(level_text), "%zu", next);
	snprintf(delay_text, sizeof(delay_text), "%" PRId64, next_delay_min);
	const char *uparams[] = {op->id, level_text, has_next ? delay_text : NULL};
	if ((rc = db_exec(conn, update_sql, 3, uparams, NULL, err)) != 0)
		goto out;
	if (strcmp(rule.status, "testing") != 0) {
		Monitoring__V1__Alert *now = NULL;
		rc = alerts_read_tx(conn, a, op->id, false, &now, err);
		if (rc == 0)
			rc = alerts_outbox_enqueue_tx(conn, a, now, "escalated", (int)next, channels, channel_n,
			                              recipients, &op->queued, &op->queued_n, err);
	}
out:
	json_decref(levels);
	db_result_free(res);
	return rc;
}

static int change_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct change_op *op = arg;
	struct arena *a = op->call->arena;
	Monitoring__V1__Alert *before = NULL, *after = NULL;
	op->queued = NULL;
	op->queued_n = 0;
	int rc = alerts_read_tx(conn, a, op->id, true, &before, err);
	if (rc != 0)
		return rc;
	const char *what = NULL;
	switch (op->kind) {
	case CHANGE_ACK:
		rc = acknowledge_tx(conn, op, before, err);
		what = "acknowledged";
		break;
	case CHANGE_RESOLVE:
		rc = resolve_tx(conn, op, before, err);
		what = "resolved";
		break;
	case CHANGE_ESCALATE:
		rc = escalate_tx(conn, op, before, err);
		what = "escalated";
		break;
	}
	if (rc != 0)
		return rc;
	if ((rc = alerts_read_tx(conn, a, op->id, false, &after, err)) != 0)
		return rc;
	char *description = arena_printf(a, "%s alert \"%s\" of rule \"%s\"", what, op->id, before->alert_rule_id);
	if (description == NULL)
		return svc_fail_nomem(err);
	if (op->kind == CHANGE_ESCALATE) {
		char *more = arena_printf(a, "%s to level %d", description, (int)after->escalation_level);
		if (more == NULL)
			return svc_fail_nomem(err);
		description = more;
	}
	description[0] = (char)(description[0] - 'a' + 'A');
	if ((rc = write_audit(conn, op->call, before, after, description, op->note, err)) != 0)
		return rc;
	Monitoring__V1__AlertChangeKind kind =
	        op->kind == CHANGE_ESCALATE ? MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_UPDATED
	                                    : MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_STATUS_CHANGED;
	return alerts_record_change_tx(conn, a, op->id, kind, before->status, op->call->actor, NULL, &op->out, err);
}

/* The response of AcknowledgeAlert and ResolveAlert: the alert after the change (svc_reply_fn). */
static int reply_alert(void *arg, ProtobufCMessage *resp, struct mon_error *err)
{
	(void)err;
	const struct change_op *op = arg;
	if (resp->descriptor == &monitoring__v1__acknowledge_alert_response__descriptor)
		((Monitoring__V1__AcknowledgeAlertResponse *)(void *)resp)->alert = op->out;
	else
		((Monitoring__V1__ResolveAlertResponse *)(void *)resp)->alert = op->out;
	return 0;
}

static int reply_escalated(void *arg, ProtobufCMessage *resp, struct mon_error *err)
{
	(void)err;
	const struct change_op *op = arg;
	Monitoring__V1__EscalateAlertResponse *r = (Monitoring__V1__EscalateAlertResponse *)(void *)resp;
	r->alert = op->out;
	r->queued = op->queued;
	r->n_queued = op->queued_n;
	return 0;
}

static int run_change(struct rpc_ctx *ctx, enum change_kind kind, const char *id, const char *note,
                      struct change_op *op, struct call *c)
{
	struct mon_error err = {0};
	call_init(c, ctx);
	int rc = check_id(ctx, "alert_id", id);
	if (rc != 0)
		return rc;
	if (svc_check_text("note", note, 0, ALERTS_NOTE_MAX_CHARS, 0, 0, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	*op = (struct change_op){.call = c, .kind = kind, .id = id, .note = note ? note : ""};
	return svc_run_change(ctx, c->pool, change_tx, kind == CHANGE_ESCALATE ? reply_escalated : reply_alert, op);
}

static int acknowledge_alert(struct rpc_ctx *ctx, const Monitoring__V1__AcknowledgeAlertRequest *req,
                             Monitoring__V1__AcknowledgeAlertResponse *resp)
{
	struct call c;
	struct change_op op;
	(void)resp; /* filled by reply_alert, or by the replay of an idempotency key */
	return run_change(ctx, CHANGE_ACK, req->alert_id, req->note, &op, &c);
}

static int resolve_alert(struct rpc_ctx *ctx, const Monitoring__V1__ResolveAlertRequest *req,
                         Monitoring__V1__ResolveAlertResponse *resp)
{
	struct call c;
	struct change_op op;
	(void)resp; /* filled by reply_alert, or by the replay of an idempotency key */
	return run_change(ctx, CHANGE_RESOLVE, req->alert_id, req->note, &op, &c);
}

static int escalate_alert(struct rpc_ctx *ctx, const Monitoring__V1__EscalateAlertRequest *req,
                          Monitoring__V1__EscalateAlertResponse *resp)
{
	struct call c;
	struct change_op op;
	(void)resp; /* filled by reply_escalated, or by the replay of an idempotency key */
	return run_change(ctx, CHANGE_ESCALATE, req->alert_id, req->note, &op, &c);
}

/* ---- ListAlertNotifications ---- */

struct deliveries_op {
	const struct call *call;
	const char *id, *statuses, *filters;
	int page_size;
	bool has_cursor;
	char at_us[24];
	const char *after_id;
	Monitoring__V1__ListAlertNotificationsResponse *resp;
};

static int deliveries_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char exists_sql[] = "SELECT 1 FROM tb_alert WHERE id = $1";
	static const char sql[] =
	        "SELECT " ALERTS_DELIVERY_LIST_SQL " FROM tb_notification_outbox o WHERE o.alert_id = $1"
	        " AND ($2::text[] IS NULL OR o.status = ANY($2::text[]))"
	        " AND ($3::bigint IS NULL OR o.created_at > " AT_US(
	                "$3") " OR"
	                      " (o.created_at = " AT_US("$3") " AND o.id > $4))"
	                                                      " ORDER BY o.created_at, o.id LIMIT $5::integer";
	struct deliveries_op *op = arg;
	struct arena *a = op->call->arena;
	Monitoring__V1__ListAlertNotificationsResponse *resp = op->resp;
	const char *eparams[] = {op->id};
	struct db_result *res = NULL;
	int rc = db_exec(conn, exists_sql, 1, eparams, &res, err);
	if (rc != 0)
		return rc;
	if (db_result_rows(res) != 1) {
		rc = mon_error_set(err, MON_ENOTFOUND, "alert_id: no alert \"%s\"", op->id);
		goto out;
	}
	db_result_free(res);
	res = NULL;
	char limit[16];
	snprintf(limit, sizeof(limit), "%d", op->page_size + 1);
	const char *params[] = {op->id, op->statuses, op->has_cursor ? op->at_us : NULL,
	                        op->has_cursor ? op->after_id : NULL, limit};
	if ((rc = db_exec(conn, sql, 5, params, &res, err)) != 0)
		goto out;
	int rows = db_result_rows(res);
	int shown = rows > op->page_size ? op->page_size : rows;
	resp->deliveries = shown > 0 ? arena_calloc(a, (size_t)shown, sizeof(*resp->deliveries)) : NULL;
	if (shown > 0 && resp->deliveries == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	for (int i = 0; i < shown; i++) {
		if ((rc = alerts_delivery_from_row(a, res, i, &resp->deliveries[i], err)) != 0)
			goto out;
		resp->n_deliveries++;
	}
	resp->next_page_token = "";
	if (rows > op->page_size) {
		char *cursor = cursor_make(a, 0, svc_parse_i64(db_result_value(res, shown - 1, 5)),
		                           resp->deliveries[shown - 1]->id);
		if (cursor == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		rc = svc_page_token_make_in(a, op->filters, cursor, PAGE_TOKEN_MAX, &resp->next_page_token, err);
	}
out:
	db_result_free(res);
	return rc;
}

static int list_alert_notifications(struct rpc_ctx *ctx, const Monitoring__V1__ListAlertNotificationsRequest *req,
                                    Monitoring__V1__ListAlertNotificationsResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct deliveries_op op = {.call = &c, .id = req->alert_id, .resp = resp};
	int rc = check_id(ctx, "alert_id", req->alert_id);
	if (rc != 0)
		return rc;
	if (svc_page_size(req->page_size, 100, 1000, &op.page_size, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	if (labels_literal(c.arena, "statuses", (const int *)req->statuses, req->n_statuses, delivery_label_int,
	                   &op.statuses, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	op.filters = arena_printf(c.arena, "deliveries|%s|%s", req->alert_id, op.statuses ? op.statuses : "");
	if (op.filters == NULL)
		return svc_nomem(ctx);
	if (req->page_token != NULL && req->page_token[0] != '\0') {
		char *cursor = NULL, *id = NULL;
		int64_t zero, us;
		if (svc_page_token_read_in(c.arena, req->page_token, op.filters, PAGE_TOKEN_MAX, &cursor, &err) != 0 ||
		    cursor_read(c.arena, cursor, &zero, &us, &id, &err) != 0)
			return rpc_fail(ctx, err.code, "%s", err.msg);
		snprintf(op.at_us, sizeof(op.at_us), "%" PRId64, us);
		op.after_id = id;
		op.has_cursor = true;
	}
	return run_tx(&c, deliveries_tx, &op);
}

/* ---- GetAlertStatistics ---- */

struct stats_op {
	const struct call *call;
	const char *start, *end, *rule_statuses, *filters;
	int page_size;
	bool has_cursor;
	char total[24];
	const char *after_id;
	Monitoring__V1__GetAlertStatisticsResponse *resp;
};

static int stats_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	/*
	 * The data model's "alert statistics by rule", with the window as
	 * parameters (start absent: 30 days before end, or before NOW() as in
	 * the data model; end absent: no upper bound) and an id tie-break.
	 */
	static const char sql[] =
	        "SELECT s.id, s.name, s.status, s.total_alerts, s.active_alerts, s.resolved_alerts,"
	        " " ALERTS_US_SQL(
	                "s.last_triggered") ", s.avg_resolution_time_minutes::float8"
	                                    " FROM (SELECT ar.id, ar.name, ar.status::text AS status, COUNT(a.id) AS "
	                                    "total_alerts,"
	                                    " COUNT(a.id) FILTER (WHERE a.status = 'active') AS active_alerts,"
	                                    " COUNT(a.id) FILTER (WHERE a.status = 'resolved') AS resolved_alerts,"
	                                    " MAX(a.triggered_at) AS last_triggered,"
	                                    " ROUND(AVG(EXTRACT(EPOCH FROM (a.resolved_at - a.triggered_at)) / 60), 2) "
	                                    "AS avg_resolution_time_minutes"
	                                    " FROM tb_alert_rule ar LEFT JOIN tb_alert a ON ar.id = a.alert_rule_id"
	                                    " AND a.triggered_at >= coalesce(" AT_US("$1") ", coalesce(" AT_US(
	                                            "$2") ", NOW())"
	                                                  " - INTERVAL '" STATS_WINDOW_DAYS_TEXT " days')"
	                                                  " AND ($2::bigint IS NULL OR a.triggered_at < " AT_US(
	                                                          "$2") ")"
	                                                                " WHERE ($3::alert_rule_status[] IS NULL OR "
	                                                                "ar.status = ANY($3::alert_rule_status[]))"
	                                                                " GROUP BY ar.id, ar.name, ar.status) s"
	                                                                " WHERE ($4::bigint IS NULL OR s.total_alerts "
	                                                                "< $4::bigint OR (s.total_alerts = $4::bigint "
	                                                                "AND s.id > $5))"
	                                                                " ORDER BY s.total_alerts DESC, s.id LIMIT "
	                                                                "$6::integer";
	struct stats_op *op = arg;
	struct arena *a = op->call->arena;
	Monitoring__V1__GetAlertStatisticsResponse *resp = op->resp;
	char limit[16];
	snprintf(limit, sizeof(limit), "%d", op->page_size + 1);
	const char *params[] = {op->start,
	                        op->end,
	                        op->rule_statuses,
	                        op->has_cursor ? op->total : NULL,
	                        op->has_cursor ? op->after_id : NULL,
	                        limit};
	struct db_result *res = NULL;
	int rc = db_exec(conn, sql, 6, params, &res, err);
	if (rc != 0)
		return rc;
	int rows = db_result_rows(res);
	int shown = rows > op->page_size ? op->page_size : rows;
	resp->rules = shown > 0 ? arena_calloc(a, (size_t)shown, sizeof(*resp->rules)) : NULL;
	if (shown > 0 && resp->rules == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	for (int i = 0; i < shown; i++) {
		Monitoring__V1__AlertRuleStatistics *s = arena_alloc(a, sizeof(*s));
		if (s == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		monitoring__v1__alert_rule_statistics__init(s);
		s->id = arena_strdup(a, db_result_value(res, i, 0));
		s->name = arena_strdup(a, db_result_value(res, i, 1));
		s->status = alerts_rule_status_from_label(db_result_value(res, i, 2));
		s->total_alerts = svc_parse_i64(db_result_value(res, i, 3));
		s->active_alerts = svc_parse_i64(db_result_value(res, i, 4));
		s->resolved_alerts = svc_parse_i64(db_result_value(res, i, 5));
		if (!db_result_is_null(res, i, 6) &&
		    (s->last_triggered = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, i, 6)))) == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		if (!db_result_is_null(res, i, 7)) {
			s->avg_resolution_time_minutes = arena_alloc(a, sizeof(*s->avg_resolution_time_minutes));
			if (s->avg_resolution_time_minutes == NULL) {
				rc = svc_fail_nomem(err);
				goto out;
			}
			google__protobuf__double_value__init(s->avg_resolution_time_minutes);
			s->avg_resolution_time_minutes->value = strtod(db_result_value(res, i, 7), NULL);
		}
		if (s->id == NULL || s->name == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		resp->rules[resp->n_rules++] = s;
	}
	resp->next_page_token = "";
	if (rows > op->page_size) {
		const Monitoring__V1__AlertRuleStatistics *last = resp->rules[shown - 1];
		char *cursor = cursor_make(a, last->total_alerts, 0, last->id);
		if (cursor == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		rc = svc_page_token_make_in(a, op->filters, cursor, PAGE_TOKEN_MAX, &resp->next_page_token, err);
	}
out:
	db_result_free(res);
	return rc;
}

static int get_alert_statistics(struct rpc_ctx *ctx, const Monitoring__V1__GetAlertStatisticsRequest *req,
                                Monitoring__V1__GetAlertStatisticsResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct stats_op op = {.call = &c, .resp = resp};
	int rc = svc_page_size(req->page_size, 50, 500, &op.page_size, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	int64_t start_ms, end_ms;
	rc = time_range_us(c.arena, "time_range", req->time_range, &op.start, &op.end, &start_ms, &end_ms, &err);
	if (rc == 0)
		rc = labels_literal(c.arena, "rule_statuses", (const int *)req->rule_statuses, req->n_rule_statuses,
		                    rule_status_label_int, &op.rule_statuses, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	/*
	 * Without a start the window moves with the clock; the token then
	 * binds the other filters only, and the order by count may shift
	 * between pages as new alerts arrive (as any keyset over live data).
	 */
	op.filters = arena_printf(c.arena, "stats|%s|%s|%s", op.start ? op.start : "", op.end ? op.end : "",
	                          op.rule_statuses ? op.rule_statuses : "");
	if (op.filters == NULL)
		return svc_nomem(ctx);
	if (req->page_token != NULL && req->page_token[0] != '\0') {
		char *cursor = NULL, *id = NULL;
		int64_t total, zero;
		if (svc_page_token_read_in(c.arena, req->page_token, op.filters, PAGE_TOKEN_MAX, &cursor, &err) != 0 ||
		    cursor_read(c.arena, cursor, &total, &zero, &id, &err) != 0)
			return rpc_fail(ctx, err.code, "%s", err.msg);
		snprintf(op.total, sizeof(op.total), "%" PRId64, total);
		op.after_id = id;
		op.has_cursor = true;
	}
	return run_tx(&c, stats_tx, &op);
}

void alerts_alert_handlers(struct monitoring_v1_alerts_service_handlers *h)
{
	h->get_alert = get_alert;
	h->list_alerts = list_alerts;
	h->acknowledge_alert = acknowledge_alert;
	h->resolve_alert = resolve_alert;
	h->escalate_alert = escalate_alert;
	h->list_alert_notifications = list_alert_notifications;
	h->get_alert_statistics = get_alert_statistics;
}
