/*
 * AlertsService: alert rules (tb_alert_rule), escalation policies
 * (tb_escalation_policy) and silences (tb_silence). Each handler checks
 * its input (INVALID_ARGUMENT naming the field), then runs one transaction
 * bounded by the caller's deadline. A change writes its audit event in
 * that transaction; a rule change also resets the rule's
 * next_evaluation_at and NOTIFYs ALERTS_RULES_CHANNEL with its id, so every
 * replica's evaluator reloads it; alert changes it causes (a disabled rule
 * resolving its alerts, a deleted rule's alerts, a silence suppressing
 * alerts) are recorded through the alert store as the last statements.
 *
 * Lists use keyset paging; a page token binds the position to the filters
 * it was made for.
 */

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "alerts/rule.h"
#include "alerts/service.h"
#include "alerts/store.h"
#include "audit/audit.h"
#include "common/call.h"
#include "common/page.h"
#include "common/parse.h"
#include "util/clock.h"

#define MODULE "alerts"
#define PAGE_TOKEN_MAX 1400
#define RULES_MAX 10000
#define POLICIES_MAX 1000
#define POLICY_LEVELS_MAX 10
#define SILENCE_RULES_MAX 100
#define SILENCE_AHEAD_MAX_MS (INT64_C(90) * 86400 * 1000)
#define NOTE_MAX_CHARS 10000
#define DEFAULT_DURATION_MIN 5
#define DEFAULT_INTERVAL_S 60
#define DEFAULT_SUPPRESS_S 300
#define DEFAULT_HOURLY_CAP 10

#define COUNT_OF(x) (sizeof(x) / sizeof((x)[0]))

/* ---- the call ---- */

struct call {
	struct rpc_ctx *ctx;
	struct arena *arena;
	struct db_pool *pool;
	const char *actor; /* the caller's id, "anonymous" without one */
};

static void call_init(struct call *c, struct rpc_ctx *ctx)
{
	const struct rpc_identity *who = rpc_ctx_identity(ctx);
	c->ctx = ctx;
	c->arena = rpc_ctx_arena(ctx);
	c->pool = alerts_service_of(ctx)->pool;
	c->actor = who != NULL && who->caller_id[0] != '\0' ? arena_strdup(c->arena, who->caller_id) : NULL;
	if (c->actor == NULL)
		c->actor = "anonymous";
}

/* One transaction bounded by the call's deadline (svc_run_tx). */
static int run_tx(struct call *c, db_tx_fn fn, void *arg)
{
	return svc_run_tx(c->ctx, c->pool, fn, arg);
}

/* A new id: prefix and 16 hex digits of randomness, in the arena. */
static char *new_id(struct arena *a, const char *prefix)
{
	unsigned char rnd[8];
	char hex[17];
	randombytes_buf(rnd, sizeof(rnd));
	sodium_bin2hex(hex, sizeof(hex), rnd, sizeof(rnd));
	return arena_printf(a, "%s%s", prefix, hex);
}

/* Writes the change's audit event (module "alerts"). */
static int write_audit(struct db_conn *conn, const struct call *c, const char *action, const char *type, const char *id,
                       const char *name, const char *description, json_t *before, json_t *after, struct mon_error *err)
{
	struct audit_event ev = {.action = action,
	                         .resource_type = type,
	                         .resource_id = id,
	                         .resource_name = name,
	                         .description = description,
	                         .before = before,
	                         .after = after,
	                         .module = MODULE};
	return audit_write_tx(conn, c->ctx, &ev, err);
}

/*
 * The key cursor of a page token made for filters, with an id as
 * alerts_check_id accepts; MON_EINVAL "page_token: ..." when malformed.
 */
static int token_read_key(struct arena *a, const char *token, const char *filters, const char **key_out,
                          const char **id_out, struct mon_error *err)
{
	int rc = svc_key_token_read(a, token, filters, PAGE_TOKEN_MAX, 0, key_out, id_out, err);
	if (rc == 0 && alerts_check_id("page_token", *id_out, NULL) != 0)
		rc = mon_error_set(err, MON_EINVAL, "page_token: malformed");
	return rc;
}

/* ---- update masks ---- */

struct mask_spec {
	const char *const *writable;
	size_t writable_n;
	const char *const *output_only;
	size_t output_only_n;
	const char *refused; /* a path refused with its own message, or NULL */
	const char *refused_why;
};

/* Reads an update mask: has[i] for each writable path named; refuses the rest naming it. */
static int read_mask(const Google__Protobuf__FieldMask *mask, const struct mask_spec *spec, bool *has,
                     struct mon_error *err)
{
	if (mask == NULL || mask->n_paths == 0)
		return mon_error_set(err, MON_EINVAL, "update_mask: must name at least one field");
	for (size_t i = 0; i < mask->n_paths; i++) {
		const char *p = mask->paths[i] ? mask->paths[i] : "";
		bool is_known = false;
		for (size_t k = 0; k < spec->writable_n; k++)
			if (strcmp(p, spec->writable[k]) == 0) {
				has[k] = true;
				is_known = true;
			}
		if (is_known)
			continue;
		if (spec->refused != NULL && strcmp(p, spec->refused) == 0)
			return mon_error_set(err, MON_EINVAL, "update_mask: \"%s\" %s", p, spec->refused_why);
		for (size_t k = 0; k < spec->output_only_n; k++)
			if (strcmp(p, spec->output_only[k]) == 0)
				return mon_error_set(err, MON_EINVAL, "update_mask: \"%s\" is output only", p);
		char clipped[64];
		audit_clip_text(p, 40, clipped, sizeof(clipped));
		return mon_error_set(err, MON_EINVAL, "update_mask: unknown field \"%s\"", clipped);
	}
	return 0;
}

/* ---- enum filters ---- */

/*
 * The labels of enum values as a JSON array text ("[\"enabled\"]", NULL
 * when n is 0); UNSPECIFIED or unknown values are MON_EINVAL naming
 * field[i].
 */
static int labels_json(struct arena *a, const char *field, const int *values, size_t n, const char *(*label)(int v),
                       const char **out, struct mon_error *err)
{
	*out = NULL;
	if (n == 0)
		return 0;
	json_t *arr = json_array();
	if (arr == NULL)
		return svc_fail_nomem(err);
	for (size_t i = 0; i < n; i++) {
		const char *l = values[i] == 0 ? NULL : label(values[i]);
		if (l == NULL) {
			json_decref(arr);
			return mon_error_set(err, MON_EINVAL, "%s[%zu]: must be a known value, not UNSPECIFIED", field,
			                     i);
		}
		json_array_append_new(arr, json_string(l));
	}
	char *text = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	*out = text ? arena_strdup(a, text) : NULL;
	free(text);
	return *out ? 0 : svc_fail_nomem(err);
}

static const char *rule_status_label_of(int v)
{
	return alerts_rule_status_label((Monitoring__V1__AlertRuleStatus)v);
}

static const char *severity_label_of(int v)
{
	return alerts_severity_label((Monitoring__V1__SeverityLevel)v);
}

/* A JSON text of the strings, NULL when n is 0. */
static const char *strings_json(struct arena *a, char *const *items, size_t n)
{
	if (n == 0)
		return NULL;
	json_t *arr = json_array();
	for (size_t i = 0; arr != NULL && i < n; i++)
		json_array_append_new(arr, json_string(items[i] ? items[i] : ""));
	char *text = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
	json_decref(arr);
	char *out = text ? arena_strdup(a, text) : NULL;
	free(text);
	return out;
}

/* A JSON object text of map entries (key, value), "{}" when empty; NULL when out of memory. */
static const char *map_json(struct arena *a, size_t n, const char *(*key)(const void *e, size_t i),
                            const char *(*value)(const void *e, size_t i), const void *entries)
{
	json_t *o = json_object();
	for (size_t i = 0; o != NULL && i < n; i++)
		json_object_set_new(o, key(entries, i), json_string(value(entries, i)));
	char *text = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(o);
	char *out = text ? arena_strdup(a, text) : NULL;
	free(text);
	return out;
}

static const char *text_or_empty(const char *s)
{
	return s ? s : "";
}

static char *json_text(struct arena *a, json_t *j)
{
	char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	char *out = text ? arena_strdup(a, text) : NULL;
	free(text);
	return out;
}

/* ======================================================================
 * Rules
 * ====================================================================== */

#define RULE_PARAM_N 21

/* The columns of r as statement parameters $1..$21 (insert order); false when out of memory. */
static bool rule_params(struct arena *a, const Monitoring__V1__AlertRule *r, const char *created_by,
                        const char *params[RULE_PARAM_N])
{
	json_t *scope = alerts_rule_scope_json(r), *recipients = alerts_recipients_to_json(r->notification_recipients),
	       *tags = json_object();
	for (size_t i = 0; tags != NULL && i < r->n_tags; i++)
		json_object_set_new(tags, r->tags[i]->key, json_string(r->tags[i]->value));
	struct arena_str channels;
	arena_str_init(&channels, a);
	arena_str_append(&channels, "{");
	for (size_t i = 0; i < r->n_notification_channels; i++) {
		arena_str_append(&channels, i ? "," : "");
		arena_str_append(&channels, alerts_channel_label(r->notification_channels[i])); /* NULL fails it */
	}
	arena_str_append(&channels, "}");
	params[0] = r->id;
	params[1] = r->name;
	params[2] = r->description && r->description[0] ? r->description : NULL;
	params[3] = alerts_severity_label(r->severity);
	params[4] = alerts_rule_status_label(r->status);
	params[5] = r->metric_name;
	params[6] = alerts_operator_label(r->comparison_operator);
	params[7] = arena_printf(a, "%.4f", r->threshold);
	params[8] =
	        arena_printf(a, "%" PRId32, r->duration_minutes ? r->duration_minutes->value : DEFAULT_DURATION_MIN);
	params[9] = arena_printf(a, "%" PRId32, r->evaluation_interval);
	params[10] = json_text(a, scope);
	params[11] = arena_str_get(&channels);
	params[12] = json_text(a, recipients);
	params[13] = r->notification_template && r->notification_template[0] ? r->notification_template : NULL;
	params[14] = r->auto_resolve == NULL || r->auto_resolve->value ? "true" : "false";
	params[15] = r->suppress_duration ? arena_printf(a, "%" PRId32, r->suppress_duration->value) : NULL;
	params[16] = r->max_alerts_per_hour ? arena_printf(a, "%" PRId32, r->max_alerts_per_hour->value) : NULL;
	params[17] = r->escalation_policy_id && r->escalation_policy_id[0] ? r->escalation_policy_id : NULL;
	params[18] = r->escalation_delay ? arena_printf(a, "%" PRId32, r->escalation_delay->value) : NULL;
	params[19] = json_text(a, tags);
	params[20] = created_by;
	json_decref(scope);
	json_decref(recipients);
	json_decref(tags);
	return params[7] && params[8] && params[9] && params[10] && params[11] && params[12] && params[19] &&
	       (r->suppress_duration == NULL || params[15]) && (r->max_alerts_per_hour == NULL || params[16]) &&
	       (r->escalation_delay == NULL || params[18]);
}

/*
 * What a rule refers to must exist: its escalation policy and its webhook
 * and PagerDuty integrations (MON_ENOTFOUND naming the field).
 */
static int check_references_tx(struct db_conn *conn, struct arena *a, const Monitoring__V1__AlertRule *r,
                               bool has_policy, bool has_recipients, struct mon_error *err)
{
	static const char policy_sql[] = "SELECT 1 FROM tb_escalation_policy WHERE id = $1";
	static const char webhook_sql[] =
	        "SELECT x FROM jsonb_array_elements_text($1::jsonb) WITH ORDINALITY AS t(x, n) WHERE NOT EXISTS"
	        " (SELECT 1 FROM tb_integration_health i WHERE i.id = x AND i.integration_type = 'webhook')"
	        " ORDER BY n LIMIT 1";
	static const char pagerduty_sql[] =
	        "SELECT x FROM jsonb_array_elements_text($1::jsonb) WITH ORDINALITY AS t(x, n) WHERE NOT EXISTS"
	        " (SELECT 1 FROM tb_integration_health i WHERE i.id = x) ORDER BY n LIMIT 1";
	struct db_result *res = NULL;
	int rc = 0;
	if (has_policy && r->escalation_policy_id != NULL && r->escalation_policy_id[0] != '\0') {
		const char *params[] = {r->escalation_policy_id};
		rc = db_exec(conn, policy_sql, 1, params, &res, err);
		if (rc == 0 && db_result_rows(res) == 0)
			rc = mon_error_set(err, MON_ENOTFOUND, "rule.escalation_policy_id: no escalation policy \"%s\"",
			                   r->escalation_policy_id);
		db_result_free(res);
		res = NULL;
		if (rc != 0)
			return rc;
	}
	const Monitoring__V1__NotificationRecipients *rec = r->notification_recipients;
	if (rec == NULL || !has_recipients)
		return 0;
	for (int k = 0; k < 2 && rc == 0; k++) {
		const char *list =
		        k == 0 ? strings_json(a, rec->webhook_integration_ids, rec->n_webhook_integration_ids)
		               : strings_json(a, rec->pagerduty_integration_ids, rec->n_pagerduty_integration_ids);
		if (list == NULL)
			continue;
		const char *params[] = {list};
		rc = db_exec(conn, k == 0 ? webhook_sql : pagerduty_sql, 1, params, &res, err);
		if (rc == 0 && db_result_rows(res) > 0)
			rc = mon_error_set(err, MON_ENOTFOUND,
			                   "rule.notification_recipients.%s: no %s integration \"%s\"",
			                   k == 0 ? "webhook_integration_ids" : "pagerduty_integration_ids",
			                   k == 0 ? "webhook" : "such", db_result_value(res, 0, 0));
		db_result_free(res);
		res = NULL;
	}
	return rc;
}

static int read_rule_back(struct db_conn *conn, const struct call *c, const char *id, Monitoring__V1__AlertRule **out,
                          json_t **json_out, struct mon_error *err)
{
	int rc = alerts_rule_read_tx(conn, c->arena, id, false, out, err);
	if (rc == 0 && json_out != NULL && (*json_out = alerts_rule_json(*out)) == NULL)
		rc = svc_fail_nomem(err);
	return rc;
}

/* ---- CreateAlertRule ---- */

struct rule_op {
	const struct call *call;
	Monitoring__V1__AlertRule *rule; /* the new values (merged on update) */
	bool has[32];                    /* update: the paths named */
	bool is_force;
	Monitoring__V1__AlertRuleStatus status;
	const char *note;
	Monitoring__V1__AlertRule *out;
	int64_t count;
};

static int create_rule_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char count_sql[] = "SELECT count(*) FROM tb_alert_rule";
	static const char insert_sql[] =
	        "INSERT INTO tb_alert_rule (id, name, description, severity, status, metric_name, comparison_operator,"
	        " threshold, duration_minutes, evaluation_interval, scope, notification_channels,"
	        " notification_recipients, notification_template, auto_resolve, suppress_duration, max_alerts_per_hour,"
	        " escalation_policy_id, escalation_delay, tags, created_by, next_evaluation_at)"
	        " VALUES ($1, $2, $3, $4::severity_level, $5::alert_rule_status, $6, $7::comparison_operator,"
	        " $8::numeric, $9::integer, $10::integer, $11::jsonb, $12::text[], $13::jsonb, $14, $15::boolean,"
	        " $16::integer, $17::integer, $18, $19::integer, $20::jsonb, $21, now())";
	struct rule_op *op = arg;
	const struct call *c = op->call;
	struct db_result *res = NULL;
	json_t *after = NULL;
	const char *params[RULE_PARAM_N];
	int rc = db_exec(conn, count_sql, 0, NULL, &res, err);
	if (rc != 0)
		goto out;
	if (svc_parse_i64(db_result_value(res, 0, 0)) >= RULES_MAX) {
		rc = mon_error_set(err, MON_ELIMIT, "alert rules: limit of %d reached", RULES_MAX);
		goto out;
	}
	rc = check_references_tx(conn, c->arena, op->rule, true, true, err);
	if (rc != 0)
		goto out;
	if (!rule_params(c->arena, op->rule, c->actor, params)) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = db_exec(conn, insert_sql, RULE_PARAM_N, params, NULL, err);
	if (rc == MON_EEXIST)
		rc = mon_error_set(err, MON_EEXIST, "rule.id: \"%s\" already exists", op->rule->id);
	if (rc == 0)
		rc = read_rule_back(conn, c, op->rule->id, &op->out, &after, err);
	if (rc != 0)
		goto out;
	char *what = arena_printf(c->arena, "created alert rule \"%s\"", op->rule->id);
	rc = write_audit(conn, c, "create", "alert-rule", op->rule->id, op->rule->name,
	                 what ? what : "created alert rule", NULL, after, err);
	if (rc == 0)
		rc = db_notify(conn, ALERTS_RULES_CHANNEL, op->rule->id, err);
out:
	json_decref(after);
	db_result_free(res);
	return rc;
}

static Google__Protobuf__Int32Value *int32_default(struct arena *a, Google__Protobuf__Int32Value *v, int32_t def)
{
	if (v != NULL)
		return v;
	Google__Protobuf__Int32Value *d = arena_alloc(a, sizeof(*d));
	if (d != NULL) {
		google__protobuf__int32_value__init(d);
		d->value = def;
	}
	return d;
}

static Google__Protobuf__BoolValue *bool_default(struct arena *a, Google__Protobuf__BoolValue *v, bool def)
{
	if (v != NULL)
		return v;
	Google__Protobuf__BoolValue *d = arena_alloc(a, sizeof(*d));
	if (d != NULL) {
		google__protobuf__bool_value__init(d);
		d->value = def;
	}
	return d;
}

/* create_alert_rule's response from its op (svc_reply_fn). */
static int create_alert_rule_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	(void)err;
	const struct rule_op *op = arg;
	Monitoring__V1__CreateAlertRuleResponse *resp = (Monitoring__V1__CreateAlertRuleResponse *)(void *)msg;
	resp->rule = op->out;
	return 0;
}

static int create_alert_rule(struct rpc_ctx *ctx, const Monitoring__V1__CreateAlertRuleRequest *req,
                             Monitoring__V1__CreateAlertRuleResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (req->rule == NULL)
		return rpc_fail(ctx, MON_EINVAL, "rule: must be set");
	Monitoring__V1__AlertRule *r = arena_alloc(c.arena, sizeof(*r));
	if (r == NULL)
		return svc_nomem(ctx);
	*r = *req->rule;
	if (req->initial_status != MONITORING__V1__ALERT_RULE_STATUS__ALERT_RULE_STATUS_UNSPECIFIED &&
	    alerts_rule_status_label(req->initial_status) == NULL)
		return rpc_fail(ctx, MON_EINVAL, "initial_status: unknown value %d", (int)req->initial_status);
	r->status = req->initial_status ? req->initial_status
	                                : MONITORING__V1__ALERT_RULE_STATUS__ALERT_RULE_STATUS_ENABLED;
	if (r->severity == MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_UNSPECIFIED)
		r->severity = MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_WARNING;
	if (r->evaluation_interval == 0)
		r->evaluation_interval = DEFAULT_INTERVAL_S;
	r->duration_minutes = int32_default(c.arena, r->duration_minutes, DEFAULT_DURATION_MIN);
	r->suppress_duration = int32_default(c.arena, r->suppress_duration, DEFAULT_SUPPRESS_S);
	r->max_alerts_per_hour = int32_default(c.arena, r->max_alerts_per_hour, DEFAULT_HOURLY_CAP);
	r->auto_resolve = bool_default(c.arena, r->auto_resolve, true);
	if (r->duration_minutes == NULL || r->suppress_duration == NULL || r->max_alerts_per_hour == NULL ||
	    r->auto_resolve == NULL)
		return svc_nomem(ctx);
	if (r->id == NULL || r->id[0] == '\0')
		if ((r->id = new_id(c.arena, "rule-")) == NULL)
			return svc_nomem(ctx);
	if (alerts_rule_check("rule.", r, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	struct rule_op op = {.call = &c, .rule = r};
	(void)resp; /* filled by create_alert_rule_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.pool, create_rule_tx, create_alert_rule_reply, &op);
}

/* ---- GetAlertRule ---- */

static int get_rule_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct rule_op *op = arg;
	return alerts_rule_read_tx(conn, op->call->arena, op->rule->id, false, &op->out, err);
}

static int get_alert_rule(struct rpc_ctx *ctx, const Monitoring__V1__GetAlertRuleRequest *req,
                          Monitoring__V1__GetAlertRuleResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (alerts_check_id("rule_id", req->rule_id, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	Monitoring__V1__AlertRule key = MONITORING__V1__ALERT_RULE__INIT;
	key.id = req->rule_id;
	struct rule_op op = {.call = &c, .rule = &key};
	int rc = svc_run_read(ctx, c.pool, get_rule_tx, &op);
	if (rc != 0)
		return rc;
	resp->rule = op.out;
	return 0;
}

/* ---- ListAlertRules ---- */

struct list_rules_op {
	const struct call *call;
	const char *statuses, *severities, *metric_names, *tags, *created_by; /* JSON texts or NULL */
	const char *after_name, *after_id;
	int page_size;
	const char *filters;
	Monitoring__V1__ListAlertRulesResponse *resp;
};

#define RULES_WHERE                                                                                                    \
	" WHERE ($1::jsonb IS NULL OR r.status::text IN (SELECT jsonb_array_elements_text($1::jsonb)))"                \
	" AND ($2::jsonb IS NULL OR r.severity::text IN (SELECT jsonb_array_elements_text($2::jsonb)))"                \
	" AND ($3::jsonb IS NULL OR r.metric_name IN (SELECT jsonb_array_elements_text($3::jsonb)))"                   \
	" AND ($4::jsonb IS NULL OR coalesce(r.tags, '{}') @> $4::jsonb)"                                              \
	" AND ($5::text IS NULL OR r.created_by = $5)"

static int list_rules_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct list_rules_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	char limit[16];
	snprintf(limit, sizeof(limit), "%d", op->page_size + 1);
	char *sql = arena_printf(a,
	                         "%s" RULES_WHERE " AND ($6::text IS NULL OR (r.name, r.id) > ($6, $7))"
	                         " ORDER BY r.name, r.id LIMIT $8::integer",
	                         alerts_rule_select_sql);
	if (sql == NULL)
		return svc_fail_nomem(err);
	const char *params[] = {op->statuses,   op->severities, op->metric_names, op->tags,
	                        op->created_by, op->after_name, op->after_id,     limit};
	int rc = db_exec(conn, sql, 8, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res);
	int shown = rows > op->page_size ? op->page_size : rows;
	op->resp->rules = shown > 0 ? arena_calloc(a, (size_t)shown, sizeof(*op->resp->rules)) : NULL;
	if (shown > 0 && op->resp->rules == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	for (int i = 0; i < shown && rc == 0; i++)
		rc = alerts_rule_from_row(a, res, i, &op->resp->rules[i], err);
	if (rc != 0)
		goto out;
	op->resp->n_rules = (size_t)shown;
	op->resp->next_page_token = "";
	if (rows > op->page_size) {
		Monitoring__V1__AlertRule *last = op->resp->rules[shown - 1];
		rc = svc_key_token_make(a, op->filters, last->name, last->id, PAGE_TOKEN_MAX,
		                        &op->resp->next_page_token, err);
		if (rc != 0)
			goto out;
	}
	db_result_free(res);
	res = NULL;
	rc = db_exec(conn, "SELECT count(*) FROM tb_alert_rule r" RULES_WHERE, 5, params, &res, err);
	if (rc == 0)
		op->resp->total_size = (int32_t)svc_parse_i64(db_result_value(res, 0, 0));
out:
	db_result_free(res);
	return rc;
}

static const char *rule_tag_key(const void *e, size_t i)
{
	return ((Monitoring__V1__ListAlertRulesRequest__TagsEntry *const *)e)[i]->key;
}

static const char *rule_tag_value(const void *e, size_t i)
{
	return ((Monitoring__V1__ListAlertRulesRequest__TagsEntry *const *)e)[i]->value;
}

static int list_alert_rules(struct rpc_ctx *ctx, const Monitoring__V1__ListAlertRulesRequest *req,
                            Monitoring__V1__ListAlertRulesResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct list_rules_op op = {.call = &c, .resp = resp};
	int rc = svc_page_size(req->page_size, 50, 500, &op.page_size, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	rc = labels_json(c.arena, "statuses", (const int *)req->statuses, req->n_statuses, rule_status_label_of,
	                 &op.statuses, &err);
	if (rc == 0)
		rc = labels_json(c.arena, "severities", (const int *)req->severities, req->n_severities,
		                 severity_label_of, &op.severities, &err);
	for (size_t i = 0; rc == 0 && i < req->n_metric_names; i++) {
		char field[48];
		snprintf(field, sizeof(field), "metric_names[%zu]", i);
		rc = alerts_check_text(field, req->metric_names[i], 1, 100, &err);
	}
	for (size_t i = 0; rc == 0 && i < req->n_tags; i++) {
		char field[48];
		snprintf(field, sizeof(field), "tags[%zu]", i);
		rc = alerts_check_text(field, req->tags[i]->key, 1, 100, &err);
	}
	if (rc == 0 && req->created_by != NULL && req->created_by[0] != '\0')
		rc = alerts_check_text("created_by", req->created_by, 1, ALERTS_ID_MAX, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	op.metric_names = strings_json(c.arena, req->metric_names, req->n_metric_names);
	op.tags = req->n_tags ? map_json(c.arena, req->n_tags, rule_tag_key, rule_tag_value, req->tags) : NULL;
	op.created_by = req->created_by && req->created_by[0] ? req->created_by : NULL;
	if ((req->n_metric_names && op.metric_names == NULL) || (req->n_tags && op.tags == NULL))
		return svc_nomem(ctx);
	op.filters =
	        arena_printf(c.arena, "rules|%s|%s|%s|%s|%s", text_or_empty(op.statuses), text_or_empty(op.severities),
	                     text_or_empty(op.metric_names), text_or_empty(op.tags), text_or_empty(op.created_by));
	if (op.filters == NULL)
		return svc_nomem(ctx);
	if (req->page_token != NULL && req->page_token[0] != '\0' &&
	    token_read_key(c.arena, req->page_token, op.filters, &op.after_name, &op.after_id, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	return run_tx(&c, list_rules_tx, &op);
}

/* ---- UpdateAlertRule ---- */

enum rule_path {
	P_NAME,
	P_DESCRIPTION,
	P_SEVERITY,
	P_METRIC_NAME,
	P_OPERATOR,
	P_THRESHOLD,
	P_DURATION,
	P_INTERVAL,
	P_SCOPE,
	P_CHANNELS,
	P_RECIPIENTS,
	P_TEMPLATE,
	P_AUTO_RESOLVE,
	P_SUPPRESS,
	P_HOURLY_CAP,
	P_POLICY,
	P_ESCALATION_DELAY,
	P_TAGS,
	P_STATISTIC,
	P_AGGREGATION,
	P_TEXT_MATCH,
	P_RULE_N
};

static const char *const rule_writable[P_RULE_N] = {"name",
                                                    "description",
                                                    "severity",
                                                    "metric_name",
                                                    "comparison_operator",
                                                    "threshold",
                                                    "duration_minutes",
                                                    "evaluation_interval",
                                                    "scope",
                                                    "notification_channels",
                                                    "notification_recipients",
                                                    "notification_template",
                                                    "auto_resolve",
                                                    "suppress_duration",
                                                    "max_alerts_per_hour",
                                                    "escalation_policy_id",
                                                    "escalation_delay",
                                                    "tags",
                                                    "statistic",
                                                    "aggregation",
                                                    "text_match"};
static const char *const rule_output_only[] = {"id", "created_by", "created_at", "updated_at", "last_triggered"};

/* Copies the masked fields of in over r (the stored rule), with the defaults of columns that cannot be NULL. */
static bool merge_rule(struct arena *a, Monitoring__V1__AlertRule *r, const Monitoring__V1__AlertRule *in,
                       const bool *has)
{
	if (has[P_NAME])
		r->name = in->name;
	if (has[P_DESCRIPTION])
		r->description = in->description;
	if (has[P_SEVERITY])
		r->severity = in->severity ? in->severity : MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_WARNING;
	if (has[P_METRIC_NAME])
		r->metric_name = in->metric_name;
	if (has[P_OPERATOR])
		r->comparison_operator = in->comparison_operator;
	if (has[P_THRESHOLD])
		r->threshold = in->threshold;
	if (has[P_DURATION] &&
	    (r->duration_minutes = int32_default(a, in->duration_minutes, DEFAULT_DURATION_MIN)) == NULL)
		return false;
	if (has[P_INTERVAL])
		r->evaluation_interval = in->evaluation_interval;
	if (has[P_SCOPE])
		r->scope = in->scope;
	if (has[P_CHANNELS]) {
		r->notification_channels = in->notification_channels;
		r->n_notification_channels = in->n_notification_channels;
	}
	if (has[P_RECIPIENTS])
		r->notification_recipients = in->notification_recipients;
	if (has[P_TEMPLATE])
		r->notification_template = in->notification_template;
	if (has[P_AUTO_RESOLVE] && (r->auto_resolve = bool_default(a, in->auto_resolve, true)) == NULL)
		return false;
	if (has[P_SUPPRESS])
		r->suppress_duration = in->suppress_duration;
	if (has[P_HOURLY_CAP])
		r->max_alerts_per_hour = in->max_alerts_per_hour;
	if (has[P_POLICY])
		r->escalation_policy_id = in->escalation_policy_id;
	if (has[P_ESCALATION_DELAY])
		r->escalation_delay = in->escalation_delay;
	if (has[P_TAGS]) {
		r->tags = in->tags;
		r->n_tags = in->n_tags;
	}
	if (has[P_STATISTIC])
		r->statistic = in->statistic;
	if (has[P_AGGREGATION])
		r->aggregation = in->aggregation;
	if (has[P_TEXT_MATCH])
		r->text_match = in->text_match;
	return true;
}

static int update_rule_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char update_sql[] =
	        "UPDATE tb_alert_rule SET name = $2, description = $3, severity = $4::severity_level,"
	        " metric_name = $6, comparison_operator = $7::comparison_operator, threshold = $8::numeric,"
	        " duration_minutes = $9::integer, evaluation_interval = $10::integer, scope = $11::jsonb,"
	        " notification_channels = $12::text[], notification_recipients = $13::jsonb,"
	        " notification_template = $14, auto_resolve = $15::boolean, suppress_duration = $16::integer,"
	        " max_alerts_per_hour = $17::integer, escalation_policy_id = $18, escalation_delay = $19::integer,"
	        " tags = $20::jsonb, updated_at = now(), next_evaluation_at = now()"
	        " WHERE id = $1 AND $5::text IS NOT NULL AND $21::text IS NOT NULL";
	struct rule_op *op = arg;
	const struct call *c = op->call;
	Monitoring__V1__AlertRule *cur = NULL;
	json_t *before = NULL, *after = NULL;
	const char *params[RULE_PARAM_N];
	int rc = alerts_rule_read_tx(conn, c->arena, op->rule->id, true, &cur, err);
	if (rc != 0)
		goto out;
	if ((before = alerts_rule_json(cur)) == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	if (!merge_rule(c->arena, cur, op->rule, op->has)) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = alerts_rule_check("rule.", cur, err);
	if (rc == 0)
		rc = check_references_tx(conn, c->arena, cur, op->has[P_POLICY], op->has[P_RECIPIENTS], err);
	if (rc != 0)
		goto out;
	if (!rule_params(c->arena, cur, cur->created_by, params)) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = db_exec(conn, update_sql, RULE_PARAM_N, params, NULL, err);
	if (rc == 0)
		rc = read_rule_back(conn, c, cur->id, &op->out, &after, err);
	if (rc != 0)
		goto out;
	struct arena_str what_text;
	arena_str_init(&what_text, c->arena);
	arena_str_printf(&what_text, "changed alert rule \"%s\": ", cur->id);
	for (size_t k = 0, n = 0; k < P_RULE_N; k++) {
		if (op->has[k])
			arena_str_printf(&what_text, "%s%s", n++ ? ", " : "", rule_writable[k]);
	}
	const char *what = arena_str_get(&what_text);
	rc = write_audit(conn, c, "update", "alert-rule", cur->id, op->out->name, what ? what : "changed alert rule",
	                 before, after, err);
	if (rc == 0)
		rc = db_notify(conn, ALERTS_RULES_CHANNEL, cur->id, err);
out:
	json_decref(before);
	json_decref(after);
	return rc;
}

/* update_alert_rule's response from its op (svc_reply_fn). */
static int update_alert_rule_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	(void)err;
	const struct rule_op *op = arg;
	Monitoring__V1__UpdateAlertRuleResponse *resp = (Monitoring__V1__UpdateAlertRuleResponse *)(void *)msg;
	resp->rule = op->out;
	return 0;
}

static int update_alert_rule(struct rpc_ctx *ctx, const Monitoring__V1__UpdateAlertRuleRequest *req,
                             Monitoring__V1__UpdateAlertRuleResponse *resp)
{
	static const struct mask_spec spec = {
	        .writable = rule_writable,
	        .writable_n = P_RULE_N,
	        .output_only = rule_output_only,
	        .output_only_n = COUNT_OF(rule_output_only),
	        .refused = "status",
	        .refused_why = "is changed with SetAlertRuleStatus",
	};
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (req->rule == NULL)
		return rpc_fail(ctx, MON_EINVAL, "rule: must be set");
	struct rule_op op = {.call = &c, .rule = req->rule};
	int rc = alerts_check_id("rule.id", req->rule->id, &err);
	if (rc == 0)
		rc = read_mask(req->update_mask, &spec, op.has, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	(void)resp; /* filled by update_alert_rule_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.pool, update_rule_tx, update_alert_rule_reply, &op);
}

/* ---- DeleteAlertRule ---- */

static int delete_rule_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char alerts_sql[] =
	        "SELECT id, status::text, severity::text FROM tb_alert WHERE alert_rule_id = $1"
	        " ORDER BY created_at, id FOR UPDATE";
	struct rule_op *op = arg;
	const struct call *c = op->call;
	Monitoring__V1__AlertRule *cur = NULL;
	struct db_result *res = NULL;
	json_t *before = NULL;
	const char *params[] = {op->rule->id};
	int rc = alerts_rule_read_tx(conn, c->arena, op->rule->id, true, &cur, err);
	if (rc == 0)
		rc = db_exec(conn, alerts_sql, 1, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res), open_n = 0;
	for (int i = 0; i < rows; i++)
		if (strcmp(db_result_value(res, i, 1), "resolved") != 0)
			open_n++;
	if (open_n > 0 && !op->is_force) {
		rc = mon_error_set(
		        err, MON_EPRECOND,
		        "alert rule \"%s\" has %d unresolved alerts; resolve them or set force to delete them", cur->id,
		        open_n);
		goto out;
	}
	rc = db_exec(conn, "DELETE FROM tb_alert_rule WHERE id = $1", 1, params, NULL, err);
	if (rc != 0)
		goto out;
	op->count = rows;
	if ((before = alerts_rule_json(cur)) == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	char *what = arena_printf(c->arena, "deleted alert rule \"%s\" and its %d alerts (%d unresolved)", cur->id,
	                          rows, open_n);
	rc = write_audit(conn, c, "delete", "alert-rule", cur->id, cur->name, what ? what : "deleted alert rule",
	                 before, NULL, err);
	if (rc == 0)
		rc = db_notify(conn, ALERTS_RULES_CHANNEL, cur->id, err);
	for (int i = 0; i < rows && rc == 0; i++)
		rc = alerts_record_delete_tx(conn, c->arena, db_result_value(res, i, 0), cur->id,
		                             alerts_status_from_label(db_result_value(res, i, 1)),
		                             alerts_severity_from_label(db_result_value(res, i, 2)), c->actor, err);
out:
	json_decref(before);
	db_result_free(res);
	return rc;
}

/* delete_alert_rule's response from its op (svc_reply_fn). */
static int delete_alert_rule_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	(void)err;
	const struct rule_op *op = arg;
	Monitoring__V1__DeleteAlertRuleResponse *resp = (Monitoring__V1__DeleteAlertRuleResponse *)(void *)msg;
	resp->deleted_alert_count = op->count;
	return 0;
}

static int delete_alert_rule(struct rpc_ctx *ctx, const Monitoring__V1__DeleteAlertRuleRequest *req,
                             Monitoring__V1__DeleteAlertRuleResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (alerts_check_id("rule_id", req->rule_id, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	Monitoring__V1__AlertRule key = MONITORING__V1__ALERT_RULE__INIT;
	key.id = req->rule_id;
	struct rule_op op = {.call = &c, .rule = &key, .is_force = req->force};
	(void)resp; /* filled by delete_alert_rule_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.pool, delete_rule_tx, delete_alert_rule_reply, &op);
}

/* ---- SetAlertRuleStatus ---- */

static int set_status_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char status_sql[] = "UPDATE tb_alert_rule SET status = $2::alert_rule_status, updated_at = now(),"
	                                 " next_evaluation_at = now() WHERE id = $1";
	static const char resolve_sql[] =
	        "WITH open AS (SELECT id, status FROM tb_alert WHERE alert_rule_id = $1 AND status <> 'resolved'"
	        " ORDER BY created_at, id FOR UPDATE)"
	        " UPDATE tb_alert a SET status = 'resolved', resolved_at = now(), resolved_by = $2,"
	        " resolution_note = 'rule disabled', next_escalation_at = NULL, updated_at = now()"
	        " FROM open WHERE a.id = open.id RETURNING a.id, open.status::text";
	struct rule_op *op = arg;
	const struct call *c = op->call;
	Monitoring__V1__AlertRule *cur = NULL;
	struct db_result *res = NULL;
	json_t *before = NULL, *after = NULL;
	int rc = alerts_rule_read_tx(conn, c->arena, op->rule->id, true, &cur, err);
	if (rc != 0)
		goto out;
	if (cur->status == op->status) {
		rc = mon_error_set(err, MON_EPRECOND, "alert rule \"%s\" is already %s", cur->id,
		                   alerts_rule_status_label(op->status));
		goto out;
	}
	const char *params[] = {cur->id, alerts_rule_status_label(op->status)};
	rc = db_exec(conn, status_sql, 2, params, NULL, err);
	if (rc == 0 && op->status == MONITORING__V1__ALERT_RULE_STATUS__ALERT_RULE_STATUS_DISABLED) {
		const char *rparams[] = {cur->id, c->actor};
		rc = db_exec(conn, resolve_sql, 2, rparams, &res, err);
		if (rc == 0)
			op->count = db_result_rows(res);
	}
	if (rc == 0)
		rc = read_rule_back(conn, c, cur->id, &op->out, &after, err);
	if (rc != 0)
		goto out;
	if ((before = alerts_rule_json(cur)) == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	char *what = arena_printf(c->arena, "set alert rule \"%s\" %s (was %s; %" PRId64 " alerts resolved)%s%s",
	                          cur->id, alerts_rule_status_label(op->status), alerts_rule_status_label(cur->status),
	                          op->count, op->note[0] ? ": " : "", op->note);
	rc = write_audit(conn, c, "execute", "alert-rule", cur->id, cur->name, what ? what : "set alert rule status",
	                 before, after, err);
	if (rc == 0)
		rc = db_notify(conn, ALERTS_RULES_CHANNEL, cur->id, err);
	for (int i = 0; res != NULL && i < db_result_rows(res) && rc == 0; i++)
		rc = alerts_record_change_tx(conn, c->arena, db_result_value(res, i, 0),
		                             MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_STATUS_CHANGED,
		                             alerts_status_from_label(db_result_value(res, i, 1)), c->actor, NULL, NULL,
		                             err);
out:
	json_decref(before);
	json_decref(after);
	db_result_free(res);
	return rc;
}

/* set_alert_rule_status's response from its op (svc_reply_fn). */
static int set_alert_rule_status_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	(void)err;
	const struct rule_op *op = arg;
	Monitoring__V1__SetAlertRuleStatusResponse *resp = (Monitoring__V1__SetAlertRuleStatusResponse *)(void *)msg;
	resp->rule = op->out;
	resp->resolved_alert_count = (int32_t)op->count;
	return 0;
}

static int set_alert_rule_status(struct rpc_ctx *ctx, const Monitoring__V1__SetAlertRuleStatusRequest *req,
                                 Monitoring__V1__SetAlertRuleStatusResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (alerts_check_id("rule_id", req->rule_id, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	if (req->status == MONITORING__V1__ALERT_RULE_STATUS__ALERT_RULE_STATUS_UNSPECIFIED ||
	    alerts_rule_status_label(req->status) == NULL)
		return rpc_fail(ctx, MON_EINVAL, "status: must be ENABLED, DISABLED or TESTING");
	if (alerts_check_text("note", req->note, 0, NOTE_MAX_CHARS, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	Monitoring__V1__AlertRule key = MONITORING__V1__ALERT_RULE__INIT;
	key.id = req->rule_id;
	struct rule_op op = {.call = &c, .rule = &key, .status = req->status, .note = text_or_empty(req->note)};
	(void)resp; /* filled by set_alert_rule_status_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.pool, set_status_tx, set_alert_rule_status_reply, &op);
}

/* ======================================================================
 * Escalation policies
 * ====================================================================== */

#define POLICY_COLUMNS                                                                                                 \
	"p.id, p.name, coalesce(p.description, ''), p.levels::text, p.is_repeat_last_level, p.created_by,"             \
	" (extract(epoch FROM p.created_at) * 1000000)::bigint, (extract(epoch FROM p.updated_at) * 1000000)::bigint"

static json_t *levels_json(Monitoring__V1__EscalationLevel *const *levels, size_t n)
{
	json_t *arr = json_array();
	for (size_t i = 0; arr != NULL && i < n; i++) {
		const Monitoring__V1__EscalationLevel *l = levels[i];
		json_t *channels = json_array();
		for (size_t k = 0; channels != NULL && k < l->n_channels; k++)
			json_array_append_new(channels, json_string(alerts_channel_label(l->channels[k])));
		json_t *level = json_pack("{s:i, s:o, s:o}", "delay_minutes", (int)l->delay_minutes, "channels",
		                          channels ? channels : json_null(), "recipients",
		                          alerts_recipients_to_json(l->recipients));
		if (level == NULL || json_array_append_new(arr, level) != 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

/* The policy of row as a message in the arena; NULL when out of memory. */
static Monitoring__V1__EscalationPolicy *policy_msg(struct arena *a, const struct db_result *res, int row)
{
	Monitoring__V1__EscalationPolicy *p = arena_alloc(a, sizeof(*p));
	if (p == NULL)
		return NULL;
	monitoring__v1__escalation_policy__init(p);
	p->id = arena_strdup(a, db_result_value(res, row, 0));
	p->name = arena_strdup(a, db_result_value(res, row, 1));
	p->description = arena_strdup(a, db_result_value(res, row, 2));
	p->is_repeat_last_level = strcmp(db_result_value(res, row, 4), "t") == 0;
	p->created_by = arena_strdup(a, db_result_value(res, row, 5));
	p->created_at = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, row, 6)));
	p->updated_at = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, row, 7)));
	json_t *levels = json_loads(db_result_value(res, row, 3), 0, NULL);
	bool is_ok = p->id && p->name && p->description && p->created_by && p->created_at && p->updated_at;
	size_t n = json_is_array(levels) ? json_array_size(levels) : 0;
	p->levels = n ? arena_calloc(a, n, sizeof(*p->levels)) : NULL;
	if (n && p->levels == NULL)
		is_ok = false;
	for (size_t i = 0; is_ok && i < n; i++) {
		const json_t *j = json_array_get(levels, i), *channels = json_object_get(j, "channels");
		Monitoring__V1__EscalationLevel *l = arena_alloc(a, sizeof(*l));
		if (l == NULL) {
			is_ok = false;
			break;
		}
		monitoring__v1__escalation_level__init(l);
		l->delay_minutes = (int32_t)json_integer_value(json_object_get(j, "delay_minutes"));
		size_t cn = json_is_array(channels) ? json_array_size(channels) : 0;
		l->channels = cn ? arena_calloc(a, cn, sizeof(*l->channels)) : NULL;
		for (size_t k = 0; l->channels != NULL && k < cn; k++) {
			Monitoring__V1__NotificationChannel ch =
			        alerts_channel_from_label(json_string_value(json_array_get(channels, k)));
			if (ch != MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_UNSPECIFIED)
				l->channels[l->n_channels++] = ch;
		}
		if ((cn && l->channels == NULL) ||
		    alerts_recipients_from_json(a, json_object_get(j, "recipients"), &l->recipients, NULL) != 0)
			is_ok = false;
		p->levels[p->n_levels++] = l;
	}
	json_decref(levels);
	return is_ok ? p : NULL;
}

static json_t *policy_json(const Monitoring__V1__EscalationPolicy *p)
{
	return json_pack("{s:s, s:s, s:s, s:o, s:b, s:s}", "id", text_or_empty(p->id), "name", text_or_empty(p->name),
	                 "description", text_or_empty(p->description), "levels", levels_json(p->levels, p->n_levels),
	                 "is_repeat_last_level", (int)p->is_repeat_last_level, "created_by",
	                 text_or_empty(p->created_by));
}

static int policy_read_tx(struct db_conn *conn, struct arena *a, const char *id, bool for_update,
                          Monitoring__V1__EscalationPolicy **out, struct mon_error *err)
{
	const char *params[] = {id};
	struct db_result *res = NULL;
	int rc = db_exec(conn,
	                 for_update ? "SELECT " POLICY_COLUMNS " FROM tb_escalation_policy p WHERE p.id = $1 FOR UPDATE"
	                            : "SELECT " POLICY_COLUMNS " FROM tb_escalation_policy p WHERE p.id = $1",
	                 1, params, &res, err);
	if (rc == 0 && db_result_rows(res) != 1)
		rc = mon_error_set(err, MON_ENOTFOUND, "policy_id: no escalation policy \"%.50s\"", id);
	if (rc == 0 && (*out = policy_msg(a, res, 0)) == NULL)
		rc = svc_fail_nomem(err);
	db_result_free(res);
	return rc;
}

/* Checks the writable fields of a policy (prefix "policy."). */
static int check_policy(const Monitoring__V1__EscalationPolicy *p, struct mon_error *err)
{
	int rc = alerts_check_text("policy.name", p->name, 1, 200, err);
	if (rc == 0)
		rc = alerts_check_text("policy.description", p->description, 0, NOTE_MAX_CHARS, err);
	if (rc != 0)
		return rc;
	if (p->n_levels == 0)
		return mon_error_set(err, MON_EINVAL, "policy.levels: at least one level");
	if (p->n_levels > POLICY_LEVELS_MAX)
		return mon_error_set(err, MON_EINVAL, "policy.levels: at most %d levels", POLICY_LEVELS_MAX);
	for (size_t i = 0; i < p->n_levels; i++) {
		const Monitoring__V1__EscalationLevel *l = p->levels[i];
		char prefix[48];
		snprintf(prefix, sizeof(prefix), "policy.levels[%zu].", i);
		if (l->delay_minutes < 1 || l->delay_minutes > ALERTS_RULE_ESCALATION_DELAY_MAX_MIN)
			return mon_error_set(err, MON_EINVAL, "%sdelay_minutes: must be 1-%d", prefix,
			                     ALERTS_RULE_ESCALATION_DELAY_MAX_MIN);
		if (l->n_channels == 0)
			return mon_error_set(err, MON_EINVAL, "%schannels: at least one channel", prefix);
		rc = alerts_recipients_check(prefix, "channels", l->channels, l->n_channels, "recipients",
		                             l->recipients, err);
		if (rc != 0)
			return rc;
	}
	return 0;
}

struct policy_op {
	const struct call *call;
	Monitoring__V1__EscalationPolicy *policy;
	bool has[4];
	Monitoring__V1__EscalationPolicy *out;
	const char *after_name, *after_id, *filters;
	int page_size;
	Monitoring__V1__ListEscalationPoliciesResponse *list;
};

static int create_policy_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char insert_sql[] =
	        "INSERT INTO tb_escalation_policy (id, name, description, levels,"
	        " is_repeat_last_level, created_by) VALUES ($1, $2, $3, $4::jsonb, $5::boolean, $6)";
	struct policy_op *op = arg;
	const struct call *c = op->call;
	const Monitoring__V1__EscalationPolicy *p = op->policy;
	struct db_result *res = NULL;
	json_t *after = NULL;
	int rc = db_exec(conn, "SELECT count(*) FROM tb_escalation_policy", 0, NULL, &res, err);
	if (rc != 0)
		goto out;
	if (svc_parse_i64(db_result_value(res, 0, 0)) >= POLICIES_MAX) {
		rc = mon_error_set(err, MON_ELIMIT, "escalation policies: limit of %d reached", POLICIES_MAX);
		goto out;
	}
	json_t *levels = levels_json(p->levels, p->n_levels);
	const char *params[] = {p->id,
	                        p->name,
	                        p->description && p->description[0] ? p->description : NULL,
	                        json_text(c->arena, levels),
	                        p->is_repeat_last_level ? "true" : "false",
	                        c->actor};
	json_decref(levels);
	if (params[3] == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = db_exec(conn, insert_sql, 6, params, NULL, err);
	if (rc == MON_EEXIST)
		rc = mon_error_set(err, MON_EEXIST, "policy.id: \"%s\" already exists", p->id);
	if (rc == 0)
		rc = policy_read_tx(conn, c->arena, p->id, false, &op->out, err);
	if (rc != 0)
		goto out;
	if ((after = policy_json(op->out)) == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	char *what = arena_printf(c->arena, "created escalation policy \"%s\"", p->id);
	rc = write_audit(conn, c, "create", "escalation-policy", p->id, p->name,
	                 what ? what : "created escalation policy", NULL, after, err);
out:
	json_decref(after);
	db_result_free(res);
	return rc;
}

/* create_escalation_policy's response from its op (svc_reply_fn). */
static int create_escalation_policy_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	(void)err;
	const struct policy_op *op = arg;
	Monitoring__V1__CreateEscalationPolicyResponse *resp =
	        (Monitoring__V1__CreateEscalationPolicyResponse *)(void *)msg;
	resp->policy = op->out;
	return 0;
}

static int create_escalation_policy(struct rpc_ctx *ctx, const Monitoring__V1__CreateEscalationPolicyRequest *req,
                                    Monitoring__V1__CreateEscalationPolicyResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (req->policy == NULL)
		return rpc_fail(ctx, MON_EINVAL, "policy: must be set");
	Monitoring__V1__EscalationPolicy *p = arena_alloc(c.arena, sizeof(*p));
	if (p == NULL)
		return svc_nomem(ctx);
	*p = *req->policy;
	int rc = 0;
	if (p->id == NULL || p->id[0] == '\0') {
		if ((p->id = new_id(c.arena, "esc-")) == NULL)
			return svc_nomem(ctx);
	} else {
		rc = alerts_check_id("policy.id", p->id, &err);
	}
	if (rc == 0)
		rc = check_policy(p, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	struct policy_op op = {.call = &c, .policy = p};
	(void)resp; /* filled by create_escalation_policy_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.pool, create_policy_tx, create_escalation_policy_reply, &op);
}

static int get_policy_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct policy_op *op = arg;
	return policy_read_tx(conn, op->call->arena, op->policy->id, false, &op->out, err);
}

static int get_escalation_policy(struct rpc_ctx *ctx, const Monitoring__V1__GetEscalationPolicyRequest *req,
                                 Monitoring__V1__GetEscalationPolicyResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (alerts_check_id("policy_id", req->policy_id, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	Monitoring__V1__EscalationPolicy key = MONITORING__V1__ESCALATION_POLICY__INIT;
	key.id = req->policy_id;
	struct policy_op op = {.call = &c, .policy = &key};
	int rc = svc_run_read(ctx, c.pool, get_policy_tx, &op);
	if (rc != 0)
		return rc;
	resp->policy = op.out;
	return 0;
}

static int list_policies_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char sql[] = "SELECT " POLICY_COLUMNS " FROM tb_escalation_policy p"
	                          " WHERE ($1::text IS NULL OR (p.name, p.id) > ($1, $2)) ORDER BY p.name, p.id"
	                          " LIMIT $3::integer";
	struct policy_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	char limit[16];
	snprintf(limit, sizeof(limit), "%d", op->page_size + 1);
	const char *params[] = {op->after_name, op->after_id, limit};
	int rc = db_exec(conn, sql, 3, params, &res, err);
	if (rc != 0)
		return rc;
	int rows = db_result_rows(res);
	int shown = rows > op->page_size ? op->page_size : rows;
	op->list->policies = shown ? arena_calloc(a, (size_t)shown, sizeof(*op->list->policies)) : NULL;
	if (shown && op->list->policies == NULL)
		rc = svc_fail_nomem(err);
	for (int i = 0; rc == 0 && i < shown; i++)
		if ((op->list->policies[i] = policy_msg(a, res, i)) == NULL)
			rc = svc_fail_nomem(err);
	if (rc == 0) {
		op->list->n_policies = (size_t)shown;
		op->list->next_page_token = "";
		if (rows > op->page_size)
			rc = svc_key_token_make(a, op->filters, op->list->policies[shown - 1]->name,
			                        op->list->policies[shown - 1]->id, PAGE_TOKEN_MAX,
			                        &op->list->next_page_token, err);
	}
	db_result_free(res);
	return rc;
}

static int list_escalation_policies(struct rpc_ctx *ctx, const Monitoring__V1__ListEscalationPoliciesRequest *req,
                                    Monitoring__V1__ListEscalationPoliciesResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct policy_op op = {.call = &c, .list = resp, .filters = "policies"};
	int rc = svc_page_size(req->page_size, 50, 500, &op.page_size, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	if (req->page_token != NULL && req->page_token[0] != '\0' &&
	    token_read_key(c.arena, req->page_token, op.filters, &op.after_name, &op.after_id, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	return run_tx(&c, list_policies_tx, &op);
}

static const char *const policy_writable[4] = {"name", "description", "levels", "is_repeat_last_level"};
static const char *const policy_output_only[] = {"id", "created_by", "created_at", "updated_at"};

static int update_policy_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char sql[] = "UPDATE tb_escalation_policy SET name = $2, description = $3, levels = $4::jsonb,"
	                          " is_repeat_last_level = $5::boolean, updated_at = now() WHERE id = $1";
	struct policy_op *op = arg;
	const struct call *c = op->call;
	Monitoring__V1__EscalationPolicy *cur = NULL;
	json_t *before = NULL, *after = NULL;
	int rc = policy_read_tx(conn, c->arena, op->policy->id, true, &cur, err);
	if (rc != 0)
		goto out;
	if ((before = policy_json(cur)) == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	if (op->has[0])
		cur->name = op->policy->name;
	if (op->has[1])
		cur->description = op->policy->description;
	if (op->has[2]) {
		cur->levels = op->policy->levels;
		cur->n_levels = op->policy->n_levels;
	}
	if (op->has[3])
		cur->is_repeat_last_level = op->policy->is_repeat_last_level;
	rc = check_policy(cur, err);
	if (rc != 0)
		goto out;
	json_t *levels = levels_json(cur->levels, cur->n_levels);
	const char *params[] = {cur->id, cur->name, cur->description && cur->description[0] ? cur->description : NULL,
	                        json_text(c->arena, levels), cur->is_repeat_last_level ? "true" : "false"};
	json_decref(levels);
	if (params[3] == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = db_exec(conn, sql, 5, params, NULL, err);
	if (rc == 0)
		rc = policy_read_tx(conn, c->arena, cur->id, false, &op->out, err);
	if (rc != 0)
		goto out;
	if ((after = policy_json(op->out)) == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	char *what = arena_printf(c->arena, "changed escalation policy \"%s\"", cur->id);
	rc = write_audit(conn, c, "update", "escalation-policy", cur->id, op->out->name,
	                 what ? what : "changed escalation policy", before, after, err);
out:
	json_decref(before);
	json_decref(after);
	return rc;
}

/* update_escalation_policy's response from its op (svc_reply_fn). */
static int update_escalation_policy_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	(void)err;
	const struct policy_op *op = arg;
	Monitoring__V1__UpdateEscalationPolicyResponse *resp =
	        (Monitoring__V1__UpdateEscalationPolicyResponse *)(void *)msg;
	resp->policy = op->out;
	return 0;
}

static int update_escalation_policy(struct rpc_ctx *ctx, const Monitoring__V1__UpdateEscalationPolicyRequest *req,
                                    Monitoring__V1__UpdateEscalationPolicyResponse *resp)
{
	static const struct mask_spec spec = {.writable = policy_writable,
	                                      .writable_n = COUNT_OF(policy_writable),
	                                      .output_only = policy_output_only,
	                                      .output_only_n = COUNT_OF(policy_output_only)};
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (req->policy == NULL)
		return rpc_fail(ctx, MON_EINVAL, "policy: must be set");
	struct policy_op op = {.call = &c, .policy = req->policy};
	int rc = alerts_check_id("policy.id", req->policy->id, &err);
	if (rc == 0)
		rc = read_mask(req->update_mask, &spec, op.has, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	(void)resp; /* filled by update_escalation_policy_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.pool, update_policy_tx, update_escalation_policy_reply, &op);
}

static int delete_policy_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char used_sql[] = "SELECT id, name FROM tb_alert_rule WHERE escalation_policy_id = $1"
	                               " ORDER BY name, id LIMIT 1";
	struct policy_op *op = arg;
	const struct call *c = op->call;
	Monitoring__V1__EscalationPolicy *cur = NULL;
	struct db_result *res = NULL;
	json_t *before = NULL;
	const char *params[] = {op->policy->id};
	int rc = policy_read_tx(conn, c->arena, op->policy->id, true, &cur, err);
	if (rc == 0)
		rc = db_exec(conn, used_sql, 1, params, &res, err);
	if (rc != 0)
		goto out;
	if (db_result_rows(res) > 0) {
		rc = mon_error_set(err, MON_EPRECOND, "escalation policy \"%s\" is used by alert rule \"%s\" (%.100s)",
		                   cur->id, db_result_value(res, 0, 0), db_result_value(res, 0, 1));
		goto out;
	}
	rc = db_exec(conn, "DELETE FROM tb_escalation_policy WHERE id = $1", 1, params, NULL, err);
	if (rc != 0)
		goto out;
	if ((before = policy_json(cur)) == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	char *what = arena_printf(c->arena, "deleted escalation policy \"%s\"", cur->id);
	rc = write_audit(conn, c, "delete", "escalation-policy", cur->id, cur->name,
	                 what ? what : "deleted escalation policy", before, NULL, err);
out:
	json_decref(before);
	db_result_free(res);
	return rc;
}

static int delete_escalation_policy(struct rpc_ctx *ctx, const Monitoring__V1__DeleteEscalationPolicyRequest *req,
                                    Monitoring__V1__DeleteEscalationPolicyResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	(void)resp;
	call_init(&c, ctx);
	if (alerts_check_id("policy_id", req->policy_id, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	Monitoring__V1__EscalationPolicy key = MONITORING__V1__ESCALATION_POLICY__INIT;
	key.id = req->policy_id;
	struct policy_op op = {.call = &c, .policy = &key};
	return svc_run_change(ctx, c.pool, delete_policy_tx, NULL, &op);
}

/* ======================================================================
 * Silences
 * ====================================================================== */

#define SILENCE_STATE_SQL                                                                                              \
	"CASE WHEN s.expired_by IS NOT NULL OR s.ends_at <= now() THEN 'expired'"                                      \
	" WHEN s.starts_at > now() THEN 'scheduled' ELSE 'active' END"
#define SILENCE_COLUMNS                                                                                                \
	"s.id, array_to_json(s.alert_rule_ids)::text, array_to_json(s.severities)::text, s.tags::text,"                \
	" (extract(epoch FROM s.starts_at) * 1000000)::bigint, (extract(epoch FROM s.ends_at) * 1000000)::bigint,"     \
	" s.comment, s.created_by, (extract(epoch FROM s.created_at) * 1000000)::bigint,"                              \
	" coalesce(s.expired_by, ''), " SILENCE_STATE_SQL
/* An alert (a) of rule r matched by silence s. */
#define SILENCE_MATCH_SQL                                                                                              \
	"(cardinality(s.alert_rule_ids) = 0 OR a.alert_rule_id = ANY(s.alert_rule_ids))"                               \
	" AND (cardinality(s.severities) = 0 OR a.severity = ANY(s.severities))"                                       \
	" AND coalesce(r.tags, '{}') @> s.tags"

static Monitoring__V1__SilenceState silence_state_of(const char *label)
{
	if (strcmp(label, "scheduled") == 0)
		return MONITORING__V1__SILENCE_STATE__SILENCE_STATE_SCHEDULED;
	if (strcmp(label, "active") == 0)
		return MONITORING__V1__SILENCE_STATE__SILENCE_STATE_ACTIVE;
	return MONITORING__V1__SILENCE_STATE__SILENCE_STATE_EXPIRED;
}

static Monitoring__V1__Silence *silence_msg(struct arena *a, const struct db_result *res, int row)
{
	Monitoring__V1__Silence *s = arena_alloc(a, sizeof(*s));
	if (s == NULL)
		return NULL;
	monitoring__v1__silence__init(s);
	s->id = arena_strdup(a, db_result_value(res, row, 0));
	json_t *ids = json_loads(db_result_value(res, row, 1), 0, NULL),
	       *sevs = json_loads(db_result_value(res, row, 2), 0, NULL),
	       *tags = json_loads(db_result_value(res, row, 3), 0, NULL);
	bool is_ok = s->id != NULL;
	size_t n = json_is_array(ids) ? json_array_size(ids) : 0;
	s->alert_rule_ids = n ? arena_calloc(a, n, sizeof(char *)) : NULL;
	for (size_t i = 0; s->alert_rule_ids && i < n; i++)
		if ((s->alert_rule_ids[s->n_alert_rule_ids++] =
		             arena_strdup(a, text_or_empty(json_string_value(json_array_get(ids, i))))) == NULL)
			is_ok = false;
	n = json_is_array(sevs) ? json_array_size(sevs) : 0;
	s->severities = n ? arena_calloc(a, n, sizeof(*s->severities)) : NULL;
	for (size_t i = 0; s->severities && i < n; i++)
		s->severities[s->n_severities++] =
		        alerts_severity_from_label(json_string_value(json_array_get(sevs, i)));
	n = json_is_object(tags) ? json_object_size(tags) : 0;
	s->tags = n ? arena_calloc(a, n, sizeof(*s->tags)) : NULL;
	if (n && s->tags != NULL) {
		const char *key;
		json_t *value;
		json_object_foreach(tags, key, value)
		{
			Monitoring__V1__Silence__TagsEntry *e = arena_alloc(a, sizeof(*e));
			if (e == NULL) {
				is_ok = false;
				break;
			}
			monitoring__v1__silence__tags_entry__init(e);
			e->key = arena_strdup(a, key);
			e->value = arena_strdup(a, text_or_empty(json_string_value(value)));
			s->tags[s->n_tags++] = e;
		}
	}
	json_decref(ids);
	json_decref(sevs);
	json_decref(tags);
	s->starts_at = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, row, 4)));
	s->ends_at = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, row, 5)));
	s->comment = arena_strdup(a, db_result_value(res, row, 6));
	s->created_by = arena_strdup(a, db_result_value(res, row, 7));
	s->created_at = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, row, 8)));
	s->expired_by = arena_strdup(a, db_result_value(res, row, 9));
	s->state = silence_state_of(db_result_value(res, row, 10));
	if (!is_ok || s->starts_at == NULL || s->ends_at == NULL || s->comment == NULL || s->created_by == NULL ||
	    s->created_at == NULL || s->expired_by == NULL)
		return NULL;
	return s;
}

static int64_t ts_ms(const Google__Protobuf__Timestamp *ts)
{
	return ts ? (int64_t)ts->seconds * 1000 + ts->nanos / 1000000 : 0;
}

static json_t *silence_json(const Monitoring__V1__Silence *s)
{
	json_t *ids = json_array(), *sevs = json_array(), *tags = json_object();
	for (size_t i = 0; ids && i < s->n_alert_rule_ids; i++)
		json_array_append_new(ids, json_string(s->alert_rule_ids[i]));
	for (size_t i = 0; sevs && i < s->n_severities; i++)
		json_array_append_new(sevs, json_string(text_or_empty(alerts_severity_label(s->severities[i]))));
	for (size_t i = 0; tags && i < s->n_tags; i++)
		json_object_set_new(tags, s->tags[i]->key, json_string(s->tags[i]->value));
	return json_pack("{s:s, s:o, s:o, s:o, s:I, s:I, s:s, s:s, s:s}", "id", text_or_empty(s->id), "alert_rule_ids",
	                 ids ? ids : json_null(), "severities", sevs ? sevs : json_null(), "tags",
	                 tags ? tags : json_null(), "starts_at_ms", (json_int_t)ts_ms(s->starts_at), "ends_at_ms",
	                 (json_int_t)ts_ms(s->ends_at), "comment", text_or_empty(s->comment), "created_by",
	                 text_or_empty(s->created_by), "expired_by", text_or_empty(s->expired_by));
}

static int silence_read_tx(struct db_conn *conn, struct arena *a, const char *id, bool for_update,
                           Monitoring__V1__Silence **out, struct mon_error *err)
{
	const char *params[] = {id};
	struct db_result *res = NULL;
	int rc = db_exec(conn,
	                 for_update ? "SELECT " SILENCE_COLUMNS " FROM tb_silence s WHERE s.id = $1 FOR UPDATE"
	                            : "SELECT " SILENCE_COLUMNS " FROM tb_silence s WHERE s.id = $1",
	                 1, params, &res, err);
	if (rc == 0 && db_result_rows(res) != 1)
		rc = mon_error_set(err, MON_ENOTFOUND, "silence_id: no silence \"%.50s\"", id);
	if (rc == 0 && (*out = silence_msg(a, res, 0)) == NULL)
		rc = svc_fail_nomem(err);
	db_result_free(res);
	return rc;
}

struct silence_op {
	const struct call *call;
	Monitoring__V1__Silence *silence;
	const char *rule_ids_json, *severities_literal, *tags_json;
	int64_t starts_ms, ends_ms;
	Monitoring__V1__Silence *out;
	int64_t count;
	/* list */
	const char *states_json, *rule_id, *after_expired, *after_key, *after_id, *filters;
	int page_size;
	Monitoring__V1__ListSilencesResponse *list;
};

static int create_silence_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char missing_sql[] =
	        "SELECT x FROM jsonb_array_elements_text($1::jsonb) WITH ORDINALITY AS t(x, n)"
	        " WHERE NOT EXISTS (SELECT 1 FROM tb_alert_rule r WHERE r.id = x) ORDER BY n LIMIT 1";
	static const char insert_sql[] =
	        "INSERT INTO tb_silence (id, alert_rule_ids, severities, tags, starts_at, ends_at, comment, created_by)"
	        " VALUES ($1, ARRAY(SELECT jsonb_array_elements_text(coalesce($2::jsonb, '[]'))),"
	        " $3::severity_level[], $4::jsonb, to_timestamp($5::float8 / 1000), to_timestamp($6::float8 / 1000),"
	        " $7, $8)";
	static const char suppress_sql[] =
	        "WITH hit AS (SELECT a.id FROM tb_alert a JOIN tb_alert_rule r ON r.id = a.alert_rule_id,"
	        " tb_silence s WHERE s.id = $1 AND s.starts_at <= now() AND s.ends_at > now()"
	        " AND a.status = 'active' AND " SILENCE_MATCH_SQL " ORDER BY a.created_at, a.id FOR UPDATE OF a)"
	        " UPDATE tb_alert a SET status = 'suppressed', suppression_reason = 'silence', silence_id = $1,"
	        " next_escalation_at = NULL, updated_at = now() FROM hit WHERE a.id = hit.id RETURNING a.id";
	struct silence_op *op = arg;
	const struct call *c = op->call;
	struct db_result *res = NULL, *hits = NULL;
	json_t *after = NULL;
	int rc = 0;
	if (op->rule_ids_json != NULL) {
		const char *params[] = {op->rule_ids_json};
		rc = db_exec(conn, missing_sql, 1, params, &res, err);
		if (rc == 0 && db_result_rows(res) > 0) {
			size_t i = 0;
			while (i < op->silence->n_alert_rule_ids &&
			       strcmp(op->silence->alert_rule_ids[i], db_result_value(res, 0, 0)) != 0)
				i++;
			rc = mon_error_set(err, MON_ENOTFOUND, "silence.alert_rule_ids[%zu]: no alert rule \"%s\"", i,
			                   db_result_value(res, 0, 0));
		}
		if (rc != 0)
			goto out;
	}
	char starts[32], ends[32];
	snprintf(starts, sizeof(starts), "%" PRId64, op->starts_ms);
	snprintf(ends, sizeof(ends), "%" PRId64, op->ends_ms);
	const char *params[] = {
	        op->silence->id,      op->rule_ids_json, op->severities_literal, op->tags_json, starts, ends,
	        op->silence->comment, c->actor};
	rc = db_exec(conn, insert_sql, 8, params, NULL, err);
	if (rc == MON_EEXIST)
		rc = mon_error_set(err, MON_EEXIST, "silence.id: already exists");
	if (rc == 0)
		rc = db_exec(conn, suppress_sql, 1, params, &hits, err);
	if (rc == 0)
		rc = silence_read_tx(conn, c->arena, op->silence->id, false, &op->out, err);
	if (rc != 0)
		goto out;
	op->count = db_result_rows(hits);
	if ((after = silence_json(op->out)) == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	char *what = arena_printf(c->arena, "created silence \"%s\" (%" PRId64 " alerts suppressed)", op->silence->id,
	                          op->count);
	rc = write_audit(conn, c, "create", "silence", op->silence->id, NULL, what ? what : "created silence", NULL,
	                 after, err);
	for (int i = 0; rc == 0 && i < db_result_rows(hits); i++)
		rc = alerts_record_change_tx(conn, c->arena, db_result_value(hits, i, 0),
		                             MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_STATUS_CHANGED,
		                             MONITORING__V1__ALERT_STATUS__ALERT_STATUS_ACTIVE, c->actor, NULL, NULL,
		                             err);
out:
	json_decref(after);
	db_result_free(res);
	db_result_free(hits);
	return rc;
}

static const char *silence_tag_key(const void *e, size_t i)
{
	return ((Monitoring__V1__Silence__TagsEntry *const *)e)[i]->key;
}

static const char *silence_tag_value(const void *e, size_t i)
{
	return ((Monitoring__V1__Silence__TagsEntry *const *)e)[i]->value;
}

/* Checks a new silence and fills op's parameters; MON_EINVAL naming the field. */
static int check_silence(struct arena *a, const Monitoring__V1__Silence *s, struct silence_op *op,
                         struct mon_error *err)
{
	char field[64];
	int rc = 0;
	if (s->n_alert_rule_ids == 0 && s->n_severities == 0 && s->n_tags == 0)
		return mon_error_set(err, MON_EINVAL,
		                     "silence: at least one matcher is required (alert_rule_ids, severities or tags)");
	if (s->n_alert_rule_ids > SILENCE_RULES_MAX)
		return mon_error_set(err, MON_EINVAL, "silence.alert_rule_ids: at most %d", SILENCE_RULES_MAX);
	for (size_t i = 0; rc == 0 && i < s->n_alert_rule_ids; i++) {
		snprintf(field, sizeof(field), "silence.alert_rule_ids[%zu]", i);
		rc = alerts_check_id(field, s->alert_rule_ids[i], err);
	}
	struct arena_str sev;
	arena_str_init(&sev, a);
	arena_str_append(&sev, "{");
	for (size_t i = 0, n = 0; rc == 0 && i < s->n_severities; i++) {
		const char *l = s->severities[i] ? alerts_severity_label(s->severities[i]) : NULL;
		if (l == NULL)
			return mon_error_set(err, MON_EINVAL, "silence.severities[%zu]: must be a known severity", i);
		bool is_repeat = false;
		for (size_t k = 0; k < i; k++)
			is_repeat = is_repeat || s->severities[k] == s->severities[i];
		if (!is_repeat)
			arena_str_printf(&sev, "%s%s", n++ ? "," : "", l);
	}
	if (rc == 0 && s->n_tags > ALERTS_RULE_TAGS_MAX)
		return mon_error_set(err, MON_EINVAL, "silence.tags: at most %d tags", ALERTS_RULE_TAGS_MAX);
	for (size_t i = 0; rc == 0 && i < s->n_tags; i++) {
		rc = alerts_check_text("silence.tags.key", s->tags[i]->key, 1, 100, err);
		if (rc == 0)
			rc = alerts_check_text("silence.tags.value", s->tags[i]->value, 0, 500, err);
	}
	if (rc == 0)
		rc = alerts_check_text("silence.comment", s->comment, 1, NOTE_MAX_CHARS, err);
	if (rc != 0)
		return rc;
	int64_t now = mon_wall_ms();
	op->starts_ms = now;
	if (s->starts_at != NULL && (rc = svc_time_ms("silence.starts_at", s->starts_at, &op->starts_ms, err)) != 0)
		return rc;
	if (s->ends_at == NULL)
		return mon_error_set(err, MON_EINVAL, "silence.ends_at: must be set");
	if ((rc = svc_time_ms("silence.ends_at", s->ends_at, &op->ends_ms, err)) != 0)
		return rc;
	if (op->ends_ms <= op->starts_ms)
		return mon_error_set(err, MON_EINVAL, "silence.ends_at: must be after starts_at");
	if (op->ends_ms <= now)
		return mon_error_set(err, MON_EINVAL, "silence.ends_at: must be in the future");
	if (op->ends_ms > now + SILENCE_AHEAD_MAX_MS)
		return mon_error_set(err, MON_EINVAL, "silence.ends_at: at most 90 days ahead");
	arena_str_append(&sev, "}");
	op->severities_literal = arena_str_get(&sev);
	op->rule_ids_json = strings_json(a, s->alert_rule_ids, s->n_alert_rule_ids);
	op->tags_json = map_json(a, s->n_tags, silence_tag_key, silence_tag_value, s->tags);
	if (op->severities_literal == NULL || op->tags_json == NULL || (s->n_alert_rule_ids && !op->rule_ids_json))
		return svc_fail_nomem(err);
	return 0;
}

/* create_silence's response from its op (svc_reply_fn). */
static int create_silence_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	(void)err;
	const struct silence_op *op = arg;
	Monitoring__V1__CreateSilenceResponse *resp = (Monitoring__V1__CreateSilenceResponse *)(void *)msg;
	resp->silence = op->out;
	resp->suppressed_alert_count = (int32_t)op->count;
	return 0;
}

static int create_silence(struct rpc_ctx *ctx, const Monitoring__V1__CreateSilenceRequest *req,
                          Monitoring__V1__CreateSilenceResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (req->silence == NULL)
		return rpc_fail(ctx, MON_EINVAL, "silence: must be set");
	Monitoring__V1__Silence *s = arena_alloc(c.arena, sizeof(*s));
	if (s == NULL)
		return svc_nomem(ctx);
	*s = *req->silence;
	if ((s->id = new_id(c.arena, "sil-")) == NULL)
		return svc_nomem(ctx);
	struct silence_op op = {.call = &c, .silence = s};
	if (check_silence(c.arena, s, &op, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	(void)resp; /* filled by create_silence_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.pool, create_silence_tx, create_silence_reply, &op);
}

static int get_silence_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct silence_op *op = arg;
	return silence_read_tx(conn, op->call->arena, op->silence->id, false, &op->out, err);
}

static int get_silence(struct rpc_ctx *ctx, const Monitoring__V1__GetSilenceRequest *req,
                       Monitoring__V1__GetSilenceResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (alerts_check_id("silence_id", req->silence_id, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	Monitoring__V1__Silence key = MONITORING__V1__SILENCE__INIT;
	key.id = req->silence_id;
	struct silence_op op = {.call = &c, .silence = &key};
	int rc = svc_run_read(ctx, c.pool, get_silence_tx, &op);
	if (rc != 0)
		return rc;
	resp->silence = op.out;
	return 0;
}

static int list_silences_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	/* Scheduled and active ones first (is_expired 0), each part by end time; the cursor is all three keys. */
	static const char sql[] =
	        "SELECT * FROM (SELECT " SILENCE_COLUMNS ", (" SILENCE_STATE_SQL " = 'expired')::integer AS is_expired,"
	        " (extract(epoch FROM s.ends_at) * 1000000)::bigint AS ends_us FROM tb_silence s"
	        " WHERE (" SILENCE_STATE_SQL ") IN (SELECT jsonb_array_elements_text($1::jsonb))"
	        " AND ($2::text IS NULL OR $2 = ANY(s.alert_rule_ids))) x"
	        " WHERE ($3::text IS NULL OR (x.is_expired, x.ends_us, x.id) > ($3::integer, $4::bigint, $5))"
	        " ORDER BY x.is_expired, x.ends_us, x.id LIMIT $6::integer";
	struct silence_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	char limit[16];
	snprintf(limit, sizeof(limit), "%d", op->page_size + 1);
	const char *params[] = {op->states_json, op->rule_id, op->after_expired, op->after_key, op->after_id, limit};
	int rc = db_exec(conn, sql, 6, params, &res, err);
	if (rc != 0)
		return rc;
	int rows = db_result_rows(res);
	int shown = rows > op->page_size ? op->page_size : rows;
	op->list->silences = shown ? arena_calloc(a, (size_t)shown, sizeof(*op->list->silences)) : NULL;
	if (shown && op->list->silences == NULL)
		rc = svc_fail_nomem(err);
	for (int i = 0; rc == 0 && i < shown; i++)
		if ((op->list->silences[i] = silence_msg(a, res, i)) == NULL)
			rc = svc_fail_nomem(err);
	if (rc == 0) {
		op->list->n_silences = (size_t)shown;
		op->list->next_page_token = "";
		if (rows > op->page_size) {
			char *key = arena_printf(a, "%s:%s", db_result_value(res, shown - 1, 11),
			                         db_result_value(res, shown - 1, 12));
			rc = key ? svc_key_token_make(a, op->filters, key, db_result_value(res, shown - 1, 0),
			                              PAGE_TOKEN_MAX, &op->list->next_page_token, err)
			         : svc_fail_nomem(err);
		}
	}
	db_result_free(res);
	return rc;
}

static int list_silences(struct rpc_ctx *ctx, const Monitoring__V1__ListSilencesRequest *req,
                         Monitoring__V1__ListSilencesResponse *resp)
{
	static const char *const state_labels[] = {NULL, "scheduled", "active", "expired"};
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct silence_op op = {.call = &c, .list = resp};
	int rc = svc_page_size(req->page_size, 50, 500, &op.page_size, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	bool has[4] = {false, false, false, false};
	for (size_t i = 0; i < req->n_states; i++) {
		if ((int)req->states[i] < 1 || (int)req->states[i] > 3)
			return rpc_fail(ctx, MON_EINVAL, "states[%zu]: must be SCHEDULED, ACTIVE or EXPIRED", i);
		has[req->states[i]] = true;
	}
	if (req->n_states == 0)
		has[1] = has[2] = true;
	struct arena_str states;
	arena_str_init(&states, c.arena);
	arena_str_append(&states, "[");
	for (int k = 1, n = 0; k <= 3; k++) {
		if (has[k])
			arena_str_printf(&states, "%s\"%s\"", n++ ? "," : "", state_labels[k]);
	}
	arena_str_append(&states, "]");
	op.states_json = arena_str_get(&states);
	if (req->alert_rule_id != NULL && req->alert_rule_id[0] != '\0') {
		if (alerts_check_id("alert_rule_id", req->alert_rule_id, &err) != 0)
			return rpc_fail(ctx, err.code, "%s", err.msg);
		op.rule_id = req->alert_rule_id;
	}
	op.filters = op.states_json ? arena_printf(c.arena, "silences|%s|%s", op.states_json, text_or_empty(op.rule_id))
	                            : NULL;
	if (op.filters == NULL || op.states_json == NULL)
		return svc_nomem(ctx);
	if (req->page_token != NULL && req->page_token[0] != '\0') {
		if (token_read_key(c.arena, req->page_token, op.filters, &op.after_key, &op.after_id, &err) != 0)
			return rpc_fail(ctx, err.code, "%s", err.msg);
		char *end = NULL;
		if ((op.after_key[0] != '0' && op.after_key[0] != '1') || op.after_key[1] != ':')
			return rpc_fail(ctx, MON_EINVAL, "page_token: malformed");
		op.after_expired = op.after_key[0] == '1' ? "1" : "0";
		op.after_key += 2;
		(void)strtoll(op.after_key, &end, 10);
		if (op.after_key[0] == '\0' || end == NULL || *end != '\0')
			return rpc_fail(ctx, MON_EINVAL, "page_token: malformed");
	}
	return run_tx(&c, list_silences_tx, &op);
}

static int delete_silence_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char expire_sql[] =
	        "UPDATE tb_silence SET starts_at = least(starts_at, now() - interval '1 millisecond'),"
	        " ends_at = now(), expired_by = $2 WHERE id = $1";
	/*
	 * Alerts it muted return to ACTIVE, escalating again from now, unless
	 * another silence in effect matches them: those move to it (the one
	 * ending last).
	 */
	static const char release_sql[] =
	        "WITH hit AS (SELECT a.id, (SELECT s.id FROM tb_silence s WHERE s.id <> $1 AND s.expired_by IS NULL"
	        " AND s.starts_at <= now() AND s.ends_at > now() AND " SILENCE_MATCH_SQL
	        " ORDER BY s.ends_at DESC, s.id LIMIT 1) AS other,"
	        " CASE WHEN r.escalation_policy_id IS NOT NULL THEN now() + coalesce(r.escalation_delay,"
	        " (SELECT (p.levels->0->>'delay_minutes')::integer FROM tb_escalation_policy p"
	        " WHERE p.id = r.escalation_policy_id)) * interval '1 minute' END AS next_escalation"
	        " FROM tb_alert a JOIN tb_alert_rule r ON r.id = a.alert_rule_id"
	        " WHERE a.silence_id = $1 AND a.status = 'suppressed' ORDER BY a.created_at, a.id FOR UPDATE OF a)"
	        " UPDATE tb_alert a SET status = CASE WHEN hit.other IS NULL THEN 'active' ELSE 'suppressed' END"
	        "::alert_status, suppression_reason = CASE WHEN hit.other IS NULL THEN NULL ELSE 'silence' END,"
	        " silence_id = hit.other, next_escalation_at = CASE WHEN hit.other IS NULL THEN hit.next_escalation"
	        " END, updated_at = now() FROM hit WHERE a.id = hit.id RETURNING a.id, hit.other IS NULL";
	struct silence_op *op = arg;
	const struct call *c = op->call;
	Monitoring__V1__Silence *cur = NULL;
	struct db_result *hits = NULL;
	json_t *before = NULL, *after = NULL;
	int rc = silence_read_tx(conn, c->arena, op->silence->id, true, &cur, err);
	if (rc != 0)
		goto out;
	if (cur->state == MONITORING__V1__SILENCE_STATE__SILENCE_STATE_EXPIRED) {
		rc = mon_error_set(err, MON_EPRECOND, "silence \"%s\" has already expired", cur->id);
		goto out;
	}
	const char *params[] = {cur->id, c->actor};
	rc = db_exec(conn, expire_sql, 2, params, NULL, err);
	if (rc == 0)
		rc = db_exec(conn, release_sql, 1, params, &hits, err);
	if (rc == 0)
		rc = silence_read_tx(conn, c->arena, cur->id, false, &op->out, err);
	if (rc != 0)
		goto out;
	before = silence_json(cur);
	after = silence_json(op->out);
	if (before == NULL || after == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	int active_n = 0;
	for (int i = 0; i < db_result_rows(hits); i++)
		if (strcmp(db_result_value(hits, i, 1), "t") == 0)
			active_n++;
	char *what = arena_printf(c->arena, "ended silence \"%s\" (%d alerts active again)", cur->id, active_n);
	rc = write_audit(conn, c, "delete", "silence", cur->id, NULL, what ? what : "ended silence", before, after,
	                 err);
	for (int i = 0; rc == 0 && i < db_result_rows(hits); i++) {
		bool is_active = strcmp(db_result_value(hits, i, 1), "t") == 0;
		rc = alerts_record_change_tx(
		        conn, c->arena, db_result_value(hits, i, 0),
		        is_active ? MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_STATUS_CHANGED
		                  : MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_UPDATED,
		        MONITORING__V1__ALERT_STATUS__ALERT_STATUS_SUPPRESSED, c->actor, NULL, NULL, err);
	}
out:
	json_decref(before);
	json_decref(after);
	db_result_free(hits);
	return rc;
}

/* delete_silence's response from its op (svc_reply_fn). */
static int delete_silence_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	(void)err;
	const struct silence_op *op = arg;
	Monitoring__V1__DeleteSilenceResponse *resp = (Monitoring__V1__DeleteSilenceResponse *)(void *)msg;
	resp->silence = op->out;
	return 0;
}

static int delete_silence(struct rpc_ctx *ctx, const Monitoring__V1__DeleteSilenceRequest *req,
                          Monitoring__V1__DeleteSilenceResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (alerts_check_id("silence_id", req->silence_id, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	Monitoring__V1__Silence key = MONITORING__V1__SILENCE__INIT;
	key.id = req->silence_id;
	struct silence_op op = {.call = &c, .silence = &key};
	(void)resp; /* filled by delete_silence_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.pool, delete_silence_tx, delete_silence_reply, &op);
}

/* ---- the handler table ---- */

void alerts_rule_handlers(struct monitoring_v1_alerts_service_handlers *h)
{
	h->create_alert_rule = create_alert_rule;
	h->get_alert_rule = get_alert_rule;
	h->list_alert_rules = list_alert_rules;
	h->update_alert_rule = update_alert_rule;
	h->delete_alert_rule = delete_alert_rule;
	h->set_alert_rule_status = set_alert_rule_status;
	h->create_escalation_policy = create_escalation_policy;
	h->get_escalation_policy = get_escalation_policy;
	h->list_escalation_policies = list_escalation_policies;
	h->update_escalation_policy = update_escalation_policy;
	h->delete_escalation_policy = delete_escalation_policy;
	h->create_silence = create_silence;
	h->get_silence = get_silence;
	h->list_silences = list_silences;
	h->delete_silence = delete_silence;
}
