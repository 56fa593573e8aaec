/*
 * The alert evaluator (alerts/engine.h). Two threads: the event thread
 * evaluates the rules on metrics that RecordMetrics just committed points
 * of (found through an in-memory map from metric name to rule ids, reloaded
 * on NOTIFY "mon_alert_rules" and every CACHE_REFRESH_MS), and the tick
 * thread claims the rules due for their periodic evaluation, escalates
 * unacknowledged alerts and, on one replica at a time, applies the alert
 * history retention. Each evaluation is one transaction that locks its
 * rule's row, so the two paths and the replicas never evaluate one rule at
 * the same time. The engine owns no alert state: everything it decides is
 * written to tb_alert in that transaction.
 */
#include "alerts/engine.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "alerts/rule.h"
#include "alerts/store.h"
#include "common/call.h"
#include "common/parse.h"
#include "util/arena.h"
#include "util/clock.h"
#include "util/log.h"

#define ST(x) MONITORING__V1__ALERT_STATUS__ALERT_STATUS_##x
#define OP(x) MONITORING__V1__COMPARISON_OPERATOR__COMPARISON_OPERATOR_##x
#define STAT(x) MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_##x
#define AGG(x) MONITORING__V1__AGGREGATION__AGGREGATION_##x
#define WHY(x) MONITORING__V1__SUPPRESSION_REASON__SUPPRESSION_REASON_##x
#define RULE_ST(x) MONITORING__V1__ALERT_RULE_STATUS__ALERT_RULE_STATUS_##x
#define KIND(x) MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_##x

#define CLAIM_BATCH 100            /* rules claimed by one tick */
#define ESCALATE_BATCH 50          /* alerts escalated by one tick */
#define RETENTION_LOCK 7206021     /* advisory lock of the alert history retention */
#define RETENTION_BATCH 5000       /* rows per DELETE statement */
#define RETENTION_EVERY_MS 3600000 /* between retention runs of one replica */
#define CACHE_REFRESH_MS 30000     /* the rule map is reloaded at least this often */
#define PENDING_NAMES_MAX 1024     /* metric names queued for the event thread */
#define EVAL_ARENA_CAP (8u << 20)  /* memory of one evaluation */
#define GROUPS_MAX 1000            /* scope groups of one rule */
#define TX_TIMEOUT_MS 10000
#define ACQUIRE_TIMEOUT_MS 10000
#define SQL_MAX 8192
#define PARAMS_MAX 48
#define VALUE_MAX 99999999999.9999 /* DECIMAL(15,4) */
#define RESOLVED_NOTE "auto-resolved: condition cleared"

/* ---- the value of a rule over its window, per scope group ---- */

struct group {
	char *labels;     /* jsonb text of the group's labels ("{}" without group_by) */
	const char *key;  /* group_key: labels, or "" without group_by */
	int64_t sample_n; /* points in the window */
	bool has_value;   /* false: the window holds no value of the statistic */
	double value;
	bool is_met;
};

struct sql {
	char text[SQL_MAX];
	size_t len;
	bool is_full;
	const char *params[PARAMS_MAX];
	int param_n;
};

static void sql_add(struct sql *q, const char *fmt, ...) MON_PRINTF(2, 3);
static void sql_add(struct sql *q, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(q->text + q->len, sizeof(q->text) - q->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(q->text) - q->len)
		q->is_full = true;
	else
		q->len += (size_t)n;
}

/* Adds a parameter; returns its number ($n), 0 when there are too many. */
static int sql_param(struct sql *q, const char *value)
{
	if (q->param_n >= PARAMS_MAX) {
		q->is_full = true;
		return 0;
	}
	q->params[q->param_n++] = value;
	return q->param_n;
}

/* Room for any int as text, sign and NUL included. */
#define INT_TEXT_MAX 12

/* v as text in buf, which the caller keeps as long as the text is used: no arena, so never NULL. */
static const char *int_text(char buf[INT_TEXT_MAX], int v)
{
	int n = snprintf(buf, INT_TEXT_MAX, "%d", v);
	return n > 0 && n < INT_TEXT_MAX ? buf : "0"; /* cannot happen: an int fits */
}

/* int_text of an optional Int32Value: NULL (SQL NULL) when unset. */
static const char *opt_int_text(char buf[INT_TEXT_MAX], const Google__Protobuf__Int32Value *v)
{
	return v ? int_text(buf, v->value) : NULL;
}

/*
 * The SQL expression of a label ("endpoint", "method", "status_code",
 * "tags.<key>"); NULL when unknown, and also when out of memory with
 * *is_nomem set.
 */
static const char *label_expr(struct arena *a, struct sql *q, const char *label, bool *is_nomem)
{
	*is_nomem = false;
	if (strcmp(label, "endpoint") == 0)
		return "endpoint";
	if (strcmp(label, "method") == 0)
		return "COALESCE(method, '')";
	if (strcmp(label, "status_code") == 0)
		return "COALESCE(status_code::text, '')";
	if (strncmp(label, "tags.", 5) == 0 && label[5] != '\0') {
		const char *e = arena_printf(a, "COALESCE(tags->>$%d::text, '')", sql_param(q, label + 5));
		*is_nomem = e == NULL;
		return e;
	}
	return NULL;
}

static const char *statistic_column(Monitoring__V1__MetricStatistic s)
{
	switch (s) {
	case STAT(P50): return "p50";
	case STAT(P95): return "p95";
	case STAT(P99): return "p99";
	case STAT(MEAN): return "mean";
	case STAT(MIN): return "min";
	case STAT(MAX): return "max";
	case STAT(REQUEST_COUNT): return "request_count";
	case STAT(ERROR_COUNT): return "error_count";
	case STAT(ERROR_RATE): return "error_rate";
	case STAT(THROUGHPUT): return "throughput";
	default: return NULL;
	}
}

static bool is_text_operator(Monitoring__V1__ComparisonOperator op)
{
	return op == OP(CONTAINS) || op == OP(NOT_CONTAINS);
}

/* The aggregate of a window: `statistic` combined with `aggregation` (allocated in a); MON_EINVAL naming the field. */
static int value_expr(struct arena *a, struct sql *q, const Monitoring__V1__AlertRule *r, const char **out,
                      struct mon_error *err)
{
	const char *v = NULL;
	if (is_text_operator(r->comparison_operator)) {
		if (r->text_match == NULL || r->text_match->field == NULL || r->text_match->substring == NULL)
			return mon_error_set(err, MON_EINVAL,
			                     "rule.text_match: required for CONTAINS and NOT_CONTAINS");
		bool is_nomem = false;
		const char *field = label_expr(a, q, r->text_match->field, &is_nomem);
		if (is_nomem)
			return mon_error_set(err, MON_ENOMEM, "out of memory");
		if (field == NULL)
			return mon_error_set(err, MON_EINVAL, "rule.text_match.field: unknown label \"%s\"",
			                     r->text_match->field);
		v = arena_printf(a, "count(*) FILTER (WHERE strpos(%s, $%d::text) > 0)", field,
		                 sql_param(q, r->text_match->substring));
		goto out;
	}
	const char *col = statistic_column(r->statistic);
	if (col == NULL)
		return mon_error_set(err, MON_EINVAL, "rule.statistic: must be set");
	bool is_count = r->statistic == STAT(REQUEST_COUNT) || r->statistic == STAT(ERROR_COUNT);
	switch (r->aggregation) {
	case AGG(AVG): v = arena_printf(a, "avg(%s)", col); break;
	case AGG(SUM): v = arena_printf(a, "sum(%s)", col); break;
	case AGG(MIN): v = arena_printf(a, "min(%s)", col); break;
	case AGG(MAX): v = arena_printf(a, "max(%s)", col); break;
	case AGG(COUNT): v = arena_printf(a, "count(%s)", col); break;
	case AGG(LAST):
		v = arena_printf(a, "(array_agg(%s ORDER BY time DESC) FILTER (WHERE %s IS NOT NULL))[1]", col, col);
		break;
	default:
		if (r->statistic == STAT(ERROR_RATE))
			v = "COALESCE(CASE WHEN sum(request_count) > 0 THEN sum(error_count)::float8 / "
			    "sum(request_count) * 100 END, avg(error_rate))";
		else
			v = arena_printf(a, is_count ? "sum(%s)" : "avg(%s)", col);
	}
out:
	if (v == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	*out = v;
	return 0;
}

/* A JSON array of strings as text, allocated in a. */
static char *json_strings(struct arena *a, char *const *items, size_t n)
{
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, json_string(items[i] ? items[i] : ""));
	char *text = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	char *out = text ? arena_strdup(a, text) : NULL;
	free(text);
	return out;
}

/* Tags (map entries: key, value) as a JSON object text, allocated in a. */
static char *json_tags(struct arena *a, char *const *keys, char *const *values, size_t n)
{
	json_t *obj = json_object();
	for (size_t i = 0; i < n; i++)
		json_object_set_new(obj, keys[i], json_string(values[i] ? values[i] : ""));
	char *text = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	char *out = text ? arena_strdup(a, text) : NULL;
	free(text);
	return out;
}

/* The keys and values of protobuf-c map entries, as two arrays allocated in a; NULL when out of memory. */
#define MAP_SPLIT(a, entries, n, keys, values)                                                                         \
	do {                                                                                                           \
		(keys) = arena_calloc((a), (n) ? (n) : 1, sizeof(char *));                                             \
		(values) = arena_calloc((a), (n) ? (n) : 1, sizeof(char *));                                           \
		for (size_t m_ = 0; (keys) && (values) && m_ < (n); m_++) {                                            \
			(keys)[m_] = (entries)[m_]->key;                                                               \
			(values)[m_] = (entries)[m_]->value;                                                           \
		}                                                                                                      \
	} while (0)

static bool values_equal(double v, double t)
{
	return fabs(v - t) < 0.00005;
}

static bool condition_holds(const Monitoring__V1__AlertRule *r, double v)
{
	double t = r->threshold;
	switch (r->comparison_operator) {
	case OP(GT): return v > t && !values_equal(v, t);
	case OP(GTE): return v > t || values_equal(v, t);
	case OP(LT): return v < t && !values_equal(v, t);
	case OP(LTE): return v < t || values_equal(v, t);
	case OP(EQ): return values_equal(v, t);
	case OP(NE): return !values_equal(v, t);
	case OP(CONTAINS): return v >= (t < 1 ? 1 : t);
	case OP(NOT_CONTAINS): return v < (t < 1 ? 1 : t);
	default: return false;
	}
}

/*
 * Reads the value of rule r per scope group over the window ending at
 * as_of_s (seconds since the epoch; NULL: now, and no upper bound), in
 * conn's transaction. Only groups with points are returned, ordered by
 * their labels; at most GROUPS_MAX. Arrays are allocated in a.
 */
static int read_groups(struct db_conn *conn, struct arena *a, const Monitoring__V1__AlertRule *r, const char *as_of_s,
                       struct group **out, size_t *out_n, struct mon_error *err)
{
	struct sql *q = arena_calloc(a, 1, sizeof(*q));
	if (q == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	int interval_s = r->evaluation_interval > 0 ? r->evaluation_interval : 60;
	const Monitoring__V1__AlertScope *sc = r->scope;
	size_t group_by_n = sc ? sc->n_group_by : 0;
	sql_param(q, r->metric_name);
	sql_param(q, as_of_s);
	sql_param(q, arena_printf(a, "%d", interval_s));
	/* The labels of each group: jsonb_build_object(label, expr, ...). */
	const char *labels = "'{}'::jsonb";
	if (group_by_n > 0) {
		struct arena_str list;
		arena_str_init(&list, a);
		arena_str_append(&list, "jsonb_build_object(");
		for (size_t i = 0; i < group_by_n; i++) {
			bool is_nomem = false;
			const char *expr = label_expr(a, q, sc->group_by[i], &is_nomem);
			if (is_nomem)
				return mon_error_set(err, MON_ENOMEM, "out of memory");
			if (expr == NULL)
				return mon_error_set(err, MON_EINVAL, "rule.scope.group_by[%zu]: unknown label \"%s\"",
				                     i, sc->group_by[i]);
			arena_str_printf(&list, "%s$%d::text, %s", i ? ", " : "", sql_param(q, sc->group_by[i]), expr);
		}
		arena_str_append(&list, ")");
		labels = arena_str_get(&list);
		if (labels == NULL)
			return mon_error_set(err, MON_ENOMEM, "out of memory");
	}
	const char *value = NULL;
	int rc = value_expr(a, q, r, &value, err);
	if (rc != 0)
		return rc;
	sql_add(q,
	        "SELECT labels::text, n, value FROM (SELECT %s AS labels, count(*) AS n, (%s)::float8 AS value"
	        " FROM tb_performance_metric WHERE metric_name = $1"
	        " AND time >= COALESCE(to_timestamp($2::float8), now()) - $3::integer * interval '1 second'"
	        " AND ($2::float8 IS NULL OR time < to_timestamp($2::float8))",
	        labels, value);
	if (sc && sc->n_endpoints > 0)
		sql_add(q, " AND endpoint = ANY(ARRAY(SELECT jsonb_array_elements_text($%d::jsonb)))",
		        sql_param(q, json_strings(a, sc->endpoints, sc->n_endpoints)));
	if (sc && sc->n_methods > 0)
		sql_add(q, " AND method = ANY(ARRAY(SELECT jsonb_array_elements_text($%d::jsonb)))",
		        sql_param(q, json_strings(a, sc->methods, sc->n_methods)));
	if (sc && sc->n_status_codes > 0) {
		struct arena_str list;
		arena_str_init(&list, a);
		arena_str_append(&list, "{");
		for (size_t i = 0; i < sc->n_status_codes; i++)
			arena_str_printf(&list, "%s%d", i ? "," : "", (int)sc->status_codes[i]);
		arena_str_append(&list, "}");
		if (arena_str_get(&list) == NULL)
			return mon_error_set(err, MON_ENOMEM, "out of memory");
		sql_add(q, " AND status_code = ANY($%d::integer[])", sql_param(q, arena_str_get(&list)));
	}
	if (sc && sc->n_tags > 0) {
		char **keys, **values;
		MAP_SPLIT(a, sc->tags, sc->n_tags, keys, values);
		if (keys == NULL || values == NULL)
			return mon_error_set(err, MON_ENOMEM, "out of memory");
		sql_add(q, " AND tags @> $%d::jsonb", sql_param(q, json_tags(a, keys, values, sc->n_tags)));
	}
	sql_add(q, " GROUP BY 1) g ORDER BY 1 LIMIT %d", GROUPS_MAX);
	if (q->is_full)
		return mon_error_set(err, MON_EINVAL, "rule.scope: too many values");
	for (int i = 0; i < q->param_n; i++)
		if (q->params[i] == NULL && i != 1)
			return mon_error_set(err, MON_ENOMEM, "out of memory");

	struct db_result *res = NULL;
	/*
	 * Prepared once per connection and shape of query (the scope's values
	 * are parameters, so rules of one shape share it): planning the window
	 * over the partitions costs more than running it.
	 */
	uint64_t h = 1469598103934665603ULL;
	for (const unsigned char *c = (const unsigned char *)q->text; *c; c++) {
		h ^= *c;
		h *= 1099511628211ULL;
	}
	char name[40];
	snprintf(name, sizeof(name), "alerts_engine_g%016" PRIx64, h);
	const struct db_stmt stmt = {.name = name, .sql = q->text, .param_count = q->param_n};
	rc = db_exec_stmt(conn, &stmt, q->params, &res, err);
	if (rc != 0)
		return rc;
	int rows = db_result_rows(res);
	if (rows >= GROUPS_MAX)
		log_warn("msg=\"alert rule has too many scope groups, only the first by labels are evaluated\""
		         " rule_id=\"%s\" groups_max=%d",
		         r->id && r->id[0] ? r->id : "(inline)", GROUPS_MAX);
	struct group *groups = arena_calloc(a, rows > 0 ? (size_t)rows : 1, sizeof(*groups));
	if (groups == NULL) {
		db_result_free(res);
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	}
	for (int i = 0; i < rows; i++) {
		struct group *g = &groups[i];
		g->labels = arena_strdup(a, db_result_value(res, i, 0));
		g->key = group_by_n > 0 ? g->labels : "";
		g->sample_n = strtoll(db_result_value(res, i, 1), NULL, 10);
		g->has_value = !db_result_is_null(res, i, 2);
		if (g->has_value) {
			g->value = strtod(db_result_value(res, i, 2), NULL);
			if (!isfinite(g->value))
				g->has_value = false;
		}
		if (g->has_value) {
			if (g->value > VALUE_MAX)
				g->value = VALUE_MAX;
			if (g->value < -VALUE_MAX)
				g->value = -VALUE_MAX;
			g->is_met = condition_holds(r, g->value);
		}
		if (g->labels == NULL) {
			db_result_free(res);
			return mon_error_set(err, MON_ENOMEM, "out of memory");
		}
	}
	db_result_free(res);
	*out = groups;
	*out_n = (size_t)rows;
	return 0;
}

/* ---- the alert side of an evaluation ---- */

/* The rule's pending period; absent only on inline rules before defaults, where it means 5. */
static int duration_minutes(const Monitoring__V1__AlertRule *r)
{
	return r->duration_minutes ? r->duration_minutes->value : 5;
}

struct open_alert {
	char *id;
	Monitoring__V1__AlertStatus status;
	char *group_key;
	bool is_due; /* PENDING for at least duration_minutes */
	double value;
	Monitoring__V1__SuppressionReason reason; /* of a SUPPRESSED alert */
};

/* Executes sql prepared once per connection under name (the evaluator's fixed statements). */
static int exec_prepared(struct db_conn *conn, const char *name, const char *sql, int param_n,
                         const char *const *params, struct db_result **out, struct mon_error *err)
{
	const struct db_stmt stmt = {.name = name, .sql = sql, .param_count = param_n};
	return db_exec_stmt(conn, &stmt, params, out, err);
}

/* The rule's unresolved alerts, locked (FOR UPDATE) when for_update. */
static int read_open_alerts(struct db_conn *conn, struct arena *a, const Monitoring__V1__AlertRule *r, bool for_update,
                            struct open_alert **out, size_t *out_n, struct mon_error *err)
{
	static const char sql_lock[] =
	        "SELECT id, status::text, group_key, condition_since <= now() - $2::integer * interval '1 minute',"
	        " current_value::float8, suppression_reason FROM tb_alert WHERE alert_rule_id = $1"
	        " AND status <> 'resolved' FOR UPDATE";
	static const char sql_read[] =
	        "SELECT id, status::text, group_key, condition_since <= now() - $2::integer * interval '1 minute',"
	        " current_value::float8, suppression_reason FROM tb_alert WHERE alert_rule_id = $1"
	        " AND status <> 'resolved'";
	char minutes[INT_TEXT_MAX];
	const char *params[] = {r->id, int_text(minutes, duration_minutes(r))};
	struct db_result *res = NULL;
	*out = NULL;
	*out_n = 0;
	int rc = exec_prepared(conn, for_update ? "alerts_engine_open_lock" : "alerts_engine_open",
	                       for_update ? sql_lock : sql_read, 2, params, &res, err);
	if (rc != 0)
		return rc;
	int rows = db_result_rows(res);
	struct open_alert *alerts = arena_calloc(a, rows > 0 ? (size_t)rows : 1, sizeof(*alerts));
	if (alerts == NULL) {
		db_result_free(res);
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	}
	for (int i = 0; i < rows; i++) {
		alerts[i].id = arena_strdup(a, db_result_value(res, i, 0));
		alerts[i].status = alerts_status_from_label(db_result_value(res, i, 1));
		alerts[i].group_key = arena_strdup(a, db_result_value(res, i, 2));
		alerts[i].is_due = strcmp(db_result_value(res, i, 3), "t") == 0;
		alerts[i].value = strtod(db_result_value(res, i, 4), NULL);
		alerts[i].reason = alerts_suppression_from_label(db_result_value(res, i, 5));
		if (alerts[i].id == NULL || alerts[i].group_key == NULL) {
			db_result_free(res);
			return mon_error_set(err, MON_ENOMEM, "out of memory");
		}
	}
	db_result_free(res);
	*out = alerts;
	*out_n = (size_t)rows;
	return 0;
}

/*
 * What an alert of rule r for group_key becomes when it fires: ACTIVE, or
 * SUPPRESSED with the first reason that applies (the rule is testing, a
 * silence matches, the rule's hourly cap is reached, a notification of the
 * same rule and group is inside suppress_duration). *silence_id is set
 * (allocated in a) for SILENCE.
 */
static int fire_status(struct db_conn *conn, struct arena *a, const Monitoring__V1__AlertRule *r, const char *group_key,
                       Monitoring__V1__AlertStatus *status, Monitoring__V1__SuppressionReason *reason,
                       char **silence_id, struct mon_error *err)
{
	/* The three checks in one round trip: the silence, the hourly cap ($4), the window ($6 seconds). */
	static const char sql[] =
	        "SELECT (SELECT id FROM tb_silence WHERE starts_at <= now() AND ends_at > now()"
	        "   AND (cardinality(alert_rule_ids) = 0 OR $1::text = ANY(alert_rule_ids))"
	        "   AND (cardinality(severities) = 0 OR $2::severity_level = ANY(severities))"
	        "   AND $3::jsonb @> tags AND (cardinality(alert_rule_ids) > 0 OR cardinality(severities) > 0"
	        "   OR tags <> '{}'::jsonb) ORDER BY ends_at DESC, id LIMIT 1),"
	        " $4::integer IS NOT NULL AND (SELECT count(*) FROM tb_alert WHERE alert_rule_id = $1::text"
	        "   AND triggered_at > now() - interval '1 hour' AND metadata ? 'fired_at') >= $4::integer,"
	        " $6::integer > 0 AND EXISTS (SELECT 1 FROM tb_alert WHERE alert_rule_id = $1::text"
	        "   AND group_key = $5::text AND last_notified_at > now() - $6::integer * interval '1 second')";
	*status = ST(SUPPRESSED);
	*silence_id = NULL;
	if (r->status == RULE_ST(TESTING)) {
		*reason = WHY(RULE_TESTING);
		return 0;
	}
	const char *severity = alerts_severity_label(r->severity);
	char **keys, **values;
	MAP_SPLIT(a, r->tags, r->n_tags, keys, values);
	if (keys == NULL || values == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	char per_hour[INT_TEXT_MAX], suppress[INT_TEXT_MAX];
	const char *params[] = {
	        r->id ? r->id : "",
	        severity ? severity : "warning",
	        json_tags(a, keys, values, r->n_tags),
	        opt_int_text(per_hour, r->max_alerts_per_hour),
	        group_key,
	        opt_int_text(suppress, r->suppress_duration),
	};
	if (params[2] == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	struct db_result *res = NULL;
	int rc = exec_prepared(conn, "alerts_engine_fire_status", sql, 6, params, &res, err);
	if (rc != 0)
		return rc;
	if (!db_result_is_null(res, 0, 0)) {
		*reason = WHY(SILENCE);
		*silence_id = arena_strdup(a, db_result_value(res, 0, 0));
		if (*silence_id == NULL)
			rc = mon_error_set(err, MON_ENOMEM, "out of memory");
	} else if (strcmp(db_result_value(res, 0, 1), "t") == 0)
		*reason = WHY(HOURLY_CAP);
	else if (strcmp(db_result_value(res, 0, 2), "t") == 0)
		*reason = WHY(SUPPRESS_WINDOW);
	else {
		*status = ST(ACTIVE);
		*reason = WHY(UNSPECIFIED);
	}
	db_result_free(res);
	return rc;
}

static const char *operator_symbol(Monitoring__V1__ComparisonOperator op)
{
	switch (op) {
	case OP(GT): return ">";
	case OP(GTE): return ">=";
	case OP(LT): return "<";
	case OP(LTE): return "<=";
	case OP(EQ): return "=";
	case OP(NE): return "!=";
	case OP(CONTAINS): return "contains";
	case OP(NOT_CONTAINS): return "does not contain";
	default: return "?";
	}
}

static char *alert_message(struct arena *a, const Monitoring__V1__AlertRule *r, const struct group *g)
{
	const char *stat =
	        is_text_operator(r->comparison_operator) ? "matching points" : statistic_column(r->statistic);
	char *m = arena_printf(a, "%s: %s of %s is %.4f (%s %.4f)", r->name, stat ? stat : "value", r->metric_name,
	                       g->value, operator_symbol(r->comparison_operator), r->threshold);
	if (m && g->key[0])
		m = arena_printf(a, "%s %s", m, g->labels);
	return m;
}

struct change {
	const char *alert_id;
	Monitoring__V1__AlertChangeKind kind;
	Monitoring__V1__AlertStatus previous;
};

/* One evaluation of a stored rule (the transaction of evaluate_rule). */
struct eval {
	const char *rule_id;
	struct arena *a;
	struct change *changes;
	size_t change_n;
	size_t change_cap;
	int fired_n;
	int resolved_n;
};

static int add_change(struct eval *ev, const char *id, Monitoring__V1__AlertChangeKind kind,
                      Monitoring__V1__AlertStatus previous, struct mon_error *err)
{
	if (ev->change_n == ev->change_cap) {
		size_t cap = ev->change_cap ? ev->change_cap * 2 : 16;
		struct change *c = arena_alloc(ev->a, cap * sizeof(*c));
		if (c == NULL)
			return mon_error_set(err, MON_ENOMEM, "out of memory");
		if (ev->change_n)
			memcpy(c, ev->changes, ev->change_n * sizeof(*c));
		ev->changes = c;
		ev->change_cap = cap;
	}
	ev->changes[ev->change_n++] = (struct change){id, kind, previous};
	return 0;
}

static const char *fmt_value(struct arena *a, double v)
{
	return arena_printf(a, "%.4f", v);
}

/* Queues the rule's own deliveries (level 0) of alert id for trigger. */
static int notify_rule(struct db_conn *conn, struct arena *a, const Monitoring__V1__AlertRule *r, const char *id,
                       const char *trigger, struct mon_error *err)
{
	if (r->n_notification_channels == 0 || r->notification_recipients == NULL)
		return 0;
	Monitoring__V1__Alert *alert = NULL;
	int rc = alerts_read_tx(conn, a, id, false, &alert, err);
	if (rc != 0)
		return rc;
	return alerts_outbox_enqueue_tx(conn, a, alert, trigger, 0, r->notification_channels,
	                                r->n_notification_channels, r->notification_recipients, NULL, NULL, err);
}

/* Fires alert id (PENDING, just written or due): ACTIVE and notifying, or SUPPRESSED with a reason. */
static int fire(struct db_conn *conn, struct eval *ev, const Monitoring__V1__AlertRule *r, const char *id,
                const struct group *g, struct mon_error *err)
{
	static const char sql[] =
	        "UPDATE tb_alert SET status = $2::alert_status, suppression_reason = $3, silence_id = $4,"
	        " triggered_at = now(), current_value = $5::numeric, message = $6,"
	        " metadata = COALESCE(metadata, '{}'::jsonb) || jsonb_build_object('fired_at', now()),"
	        " last_notified_at = CASE WHEN $7::boolean THEN now() ELSE last_notified_at END,"
	        " next_escalation_at = CASE WHEN $7::boolean AND $8::text IS NOT NULL THEN now() +"
	        "   COALESCE($9::integer, (SELECT (levels->0->>'delay_minutes')::integer FROM tb_escalation_policy"
	        "   WHERE id = $8::text)) * interval '1 minute' END,"
	        " updated_at = now() WHERE id = $1";
	struct arena *a = ev->a;
	Monitoring__V1__AlertStatus status;
	Monitoring__V1__SuppressionReason reason;
	char *silence_id = NULL;
	int rc = fire_status(conn, a, r, g->key, &status, &reason, &silence_id, err);
	if (rc != 0)
		return rc;
	bool is_active = status == ST(ACTIVE);
	const char *policy = r->escalation_policy_id && r->escalation_policy_id[0] ? r->escalation_policy_id : NULL;
	char delay[INT_TEXT_MAX];
	const char *params[] = {id,
	                        alerts_status_label(status),
	                        is_active ? NULL : alerts_suppression_label(reason),
	                        silence_id,
	                        fmt_value(a, g->value),
	                        alert_message(a, r, g),
	                        is_active ? "true" : "false",
	                        policy,
	                        opt_int_text(delay, r->escalation_delay)};
	if (params[4] == NULL || params[5] == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	rc = exec_prepared(conn, "alerts_engine_fire", sql, 9, params, NULL, err);
	if (rc == 0 && is_active)
		rc = notify_rule(conn, a, r, id, "fired", err);
	if (rc == 0)
		ev->fired_n++;
	return rc;
}

/* Raises a new alert for group g: PENDING, or fired at once when duration_minutes is 0. */
static int raise_alert(struct db_conn *conn, struct eval *ev, const Monitoring__V1__AlertRule *r, const struct group *g,
                       struct mon_error *err)
{
	/* $9 the status: 'pending', or fired at once; $12 whether it notifies. */
	static const char sql[] =
	        "INSERT INTO tb_alert (id, alert_rule_id, status, severity, message, current_value, threshold,"
	        " triggered_at, condition_since, group_key, labels, metadata, suppression_reason, silence_id,"
	        " last_notified_at, next_escalation_at)"
	        " VALUES ($1, $2, $9::alert_status, $3::severity_level, $4, $5::numeric, $6::numeric, now(), now(), $7,"
	        " $8::jsonb, jsonb_build_object('labels', $8::jsonb) || CASE WHEN $9::alert_status <> 'pending'"
	        " THEN jsonb_build_object('fired_at', now()) ELSE '{}'::jsonb END, $10, $11,"
	        " CASE WHEN $12::boolean THEN now() END,"
	        " CASE WHEN $12::boolean AND $13::text IS NOT NULL THEN now() +"
	        "   COALESCE($14::integer, (SELECT (levels->0->>'delay_minutes')::integer FROM tb_escalation_policy"
	        "   WHERE id = $13::text)) * interval '1 minute' END)";
	struct arena *a = ev->a;
	char *id = arena_alloc(a, 32);
	if (id == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	alerts_new_id("alt-", id, 32);
	Monitoring__V1__AlertStatus status = ST(PENDING);
	Monitoring__V1__SuppressionReason reason = WHY(UNSPECIFIED);
	char *silence_id = NULL;
	bool is_firing = duration_minutes(r) == 0;
	int rc = 0;
	if (is_firing)
		rc = fire_status(conn, a, r, g->key, &status, &reason, &silence_id, err);
	if (rc != 0)
		return rc;
	bool is_active = status == ST(ACTIVE);
	const char *severity = alerts_severity_label(r->severity);
	const char *policy = r->escalation_policy_id && r->escalation_policy_id[0] ? r->escalation_policy_id : NULL;
	char delay[INT_TEXT_MAX];
	const char *params[] = {id,
	                        r->id,
	                        severity ? severity : "warning",
	                        alert_message(a, r, g),
	                        fmt_value(a, g->value),
	                        fmt_value(a, r->threshold),
	                        g->key,
	                        g->labels,
	                        alerts_status_label(status),
	                        status == ST(SUPPRESSED) ? alerts_suppression_label(reason) : NULL,
	                        silence_id,
	                        is_active ? "true" : "false",
	                        policy,
	                        opt_int_text(delay, r->escalation_delay)};
	if (params[3] == NULL || params[4] == NULL || params[5] == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	rc = exec_prepared(conn, "alerts_engine_raise", sql, 14, params, NULL, err);
	if (rc == 0 && is_active)
		rc = notify_rule(conn, a, r, id, "fired", err);
	if (rc == 0 && is_firing)
		ev->fired_n++;
	if (rc == 0)
		rc = add_change(ev, id, KIND(CREATED), ST(UNSPECIFIED), err);
	return rc;
}

static int resolve_alert(struct db_conn *conn, struct eval *ev, const Monitoring__V1__AlertRule *r,
                         const struct open_alert *o, const struct group *g, struct mon_error *err)
{
	static const char sql[] =
	        "UPDATE tb_alert SET status = 'resolved', resolved_at = now(), resolution_note = $2, resolved_by = "
	        "NULL,"
	        " current_value = $3::numeric, next_escalation_at = NULL, updated_at = now() WHERE id = $1";
	const char *params[] = {o->id, RESOLVED_NOTE, fmt_value(ev->a, g->value)};
	if (params[2] == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	int rc = exec_prepared(conn, "alerts_engine_resolve", sql, 3, params, NULL, err);
	/* Those told it fired are told it resolved; a PENDING or SUPPRESSED alert told nobody. */
	if (rc == 0 && (o->status == ST(ACTIVE) || o->status == ST(ACKNOWLEDGED)) && r->status != RULE_ST(TESTING))
		rc = notify_rule(conn, ev->a, r, o->id, "resolved", err);
	if (rc == 0) {
		ev->resolved_n++;
		rc = add_change(ev, o->id, KIND(STATUS_CHANGED), o->status, err);
	}
	return rc;
}

static int refresh_value(struct db_conn *conn, struct eval *ev, const struct open_alert *o, const struct group *g,
                         struct mon_error *err)
{
	if (values_equal(o->value, g->value))
		return 0;
	const char *params[] = {o->id, fmt_value(ev->a, g->value)};
	if (params[1] == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	int rc = exec_prepared(conn, "alerts_engine_value",
	                       "UPDATE tb_alert SET current_value = $2::numeric, updated_at = now() WHERE id = $1", 2,
	                       params, NULL, err);
	if (rc == 0)
		rc = add_change(ev, o->id, KIND(UPDATED), o->status, err);
	return rc;
}

/*
 * An alert SUPPRESSED by a silence or because its rule was testing, whose
 * condition still holds once neither applies, becomes ACTIVE and notifies
 * as if it had just fired (its triggered_at stays).
 */
static int maybe_activate(struct db_conn *conn, struct eval *ev, const Monitoring__V1__AlertRule *r,
                          const struct open_alert *o, const struct group *g, bool *is_done, struct mon_error *err)
{
	static const char sql[] =
	        "UPDATE tb_alert SET status = 'active', suppression_reason = NULL, silence_id = NULL,"
	        " current_value = $2::numeric, last_notified_at = now(),"
	        " next_escalation_at = CASE WHEN $3::text IS NOT NULL THEN now() + COALESCE($4::integer,"
	        "   (SELECT (levels->0->>'delay_minutes')::integer FROM tb_escalation_policy WHERE id = $3::text))"
	        "   * interval '1 minute' END,"
	        " updated_at = now() WHERE id = $1";
	*is_done = false;
	if (o->status != ST(SUPPRESSED) || (o->reason != WHY(SILENCE) && o->reason != WHY(RULE_TESTING)))
		return 0;
	Monitoring__V1__AlertStatus status;
	Monitoring__V1__SuppressionReason reason;
	char *silence_id = NULL;
	int rc = fire_status(conn, ev->a, r, g->key, &status, &reason, &silence_id, err);
	if (rc != 0 || reason == WHY(SILENCE) || reason == WHY(RULE_TESTING))
		return rc; /* still muted */
	const char *policy = r->escalation_policy_id && r->escalation_policy_id[0] ? r->escalation_policy_id : NULL;
	char delay[INT_TEXT_MAX];
	const char *params[] = {o->id, fmt_value(ev->a, g->value), policy, opt_int_text(delay, r->escalation_delay)};
	if (params[1] == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	rc = exec_prepared(conn, "alerts_engine_activate", sql, 4, params, NULL, err);
	if (rc == 0)
		rc = notify_rule(conn, ev->a, r, o->id, "fired", err);
	if (rc == 0)
		rc = add_change(ev, o->id, KIND(STATUS_CHANGED), o->status, err);
	if (rc == 0) {
		ev->fired_n++;
		*is_done = true;
	}
	return rc;
}

static struct open_alert *find_open(struct open_alert *alerts, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(alerts[i].group_key, key) == 0)
			return &alerts[i];
	return NULL;
}

/* The transaction of one evaluation (db_tx_fn; safe to re-run). */
static int evaluate_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct eval *ev = arg;
	struct arena *a = ev->a;
	ev->change_n = 0;
	ev->fired_n = 0;
	ev->resolved_n = 0;
	Monitoring__V1__AlertRule *r = NULL;
	int rc = alerts_rule_read_tx(conn, a, ev->rule_id, true, &r, err);
	if (rc == MON_ENOTFOUND)
		return 0; /* deleted meanwhile */
	if (rc != 0)
		return rc;
	if (r->status == RULE_ST(DISABLED))
		return 0;
	struct group *groups = NULL;
	size_t group_n = 0;
	struct open_alert *open = NULL;
	size_t open_n = 0;
	rc = read_groups(conn, a, r, NULL, &groups, &group_n, err);
	if (rc == 0)
		rc = read_open_alerts(conn, a, r, true, &open, &open_n, err);
	if (rc != 0)
		return rc;
	bool is_auto_resolve = r->auto_resolve == NULL || r->auto_resolve->value;
	for (size_t i = 0; i < group_n && rc == 0; i++) {
		const struct group *g = &groups[i];
		if (!g->has_value)
			continue; /* no data: nothing changes */
		struct open_alert *o = find_open(open, open_n, g->key);
		if (g->is_met) {
			if (o == NULL)
				rc = raise_alert(conn, ev, r, g, err);
			else if (o->status == ST(PENDING) && o->is_due) {
				rc = fire(conn, ev, r, o->id, g, err);
				if (rc == 0)
					rc = add_change(ev, o->id, KIND(STATUS_CHANGED), o->status, err);
			} else {
				bool is_activated = false;
				rc = maybe_activate(conn, ev, r, o, g, &is_activated, err);
				if (rc == 0 && !is_activated)
					rc = refresh_value(conn, ev, o, g, err);
			}
		} else if (o != NULL) {
			if (o->status == ST(PENDING) || is_auto_resolve)
				rc = resolve_alert(conn, ev, r, o, g, err);
			else
				rc = refresh_value(conn, ev, o, g, err);
		}
	}
	if (rc != 0)
		return rc;
	const char *params[] = {r->id, ev->fired_n > 0 ? "true" : "false"};
	rc = exec_prepared(conn, "alerts_engine_evaluated",
	                   "UPDATE tb_alert_rule SET last_evaluated_at = now(),"
	                   " last_triggered = CASE WHEN $2::boolean THEN now() ELSE last_triggered END WHERE id = $1",
	                   2, params, NULL, err);
	/* The change events go last: the first takes the change-log lock, held to commit. */
	for (size_t i = 0; i < ev->change_n && rc == 0; i++)
		rc = alerts_record_change_tx(conn, a, ev->changes[i].alert_id, ev->changes[i].kind,
		                             ev->changes[i].previous, NULL, NULL, NULL, err);
	return rc;
}

/* ---- escalation ---- */

/* A level of an escalation policy (tb_escalation_policy.levels[i]) as channels and recipients. */
static int parse_level(struct arena *a, json_t *level, Monitoring__V1__NotificationChannel **channels,
                       size_t *channel_n, Monitoring__V1__NotificationRecipients **recipients)
{
	static const char *const keys[] = {
	        "emails",   "slack_channels", "phone_numbers", "webhook_integration_ids", "pagerduty_integration_ids",
	        "user_ids", "team_ids"};
	static const char *const camel[] = {
	        "emails",  "slackChannels", "phoneNumbers", "webhookIntegrationIds", "pagerdutyIntegrationIds",
	        "userIds", "teamIds"};
	Monitoring__V1__NotificationRecipients *rec = arena_calloc(a, 1, sizeof(*rec));
	if (rec == NULL)
		return MON_ENOMEM;
	monitoring__v1__notification_recipients__init(rec);
	json_t *chs = json_object_get(level, "channels");
	size_t n = json_is_array(chs) ? json_array_size(chs) : 0;
	Monitoring__V1__NotificationChannel *out = arena_calloc(a, n ? n : 1, sizeof(*out));
	if (out == NULL)
		return MON_ENOMEM;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		json_t *c = json_array_get(chs, i);
		Monitoring__V1__NotificationChannel ch = 0;
		if (json_is_string(c)) {
			ch = alerts_channel_from_label(json_string_value(c));
			if (ch == 0) {
				const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(
				        &monitoring__v1__notification_channel__descriptor, json_string_value(c));
				ch = ev ? (Monitoring__V1__NotificationChannel)ev->value : 0;
			}
		} else if (json_is_integer(c))
			ch = (Monitoring__V1__NotificationChannel)json_integer_value(c);
		if (ch != 0)
			out[k++] = ch;
	}
	json_t *rj = json_object_get(level, "recipients");
	size_t *counts[] = {&rec->n_emails,
	                    &rec->n_slack_channels,
	                    &rec->n_phone_numbers,
	                    &rec->n_webhook_integration_ids,
	                    &rec->n_pagerduty_integration_ids,
	                    &rec->n_user_ids,
	                    &rec->n_team_ids};
	char ***lists[] = {&rec->emails,
	                   &rec->slack_channels,
	                   &rec->phone_numbers,
	                   &rec->webhook_integration_ids,
	                   &rec->pagerduty_integration_ids,
	                   &rec->user_ids,
	                   &rec->team_ids};
	for (size_t f = 0; f < sizeof(keys) / sizeof(keys[0]) && json_is_object(rj); f++) {
		json_t *arr = json_object_get(rj, keys[f]);
		if (arr == NULL)
			arr = json_object_get(rj, camel[f]);
		size_t m = json_is_array(arr) ? json_array_size(arr) : 0;
		if (m == 0)
			continue;
		char **items = arena_calloc(a, m, sizeof(*items));
		if (items == NULL)
			return MON_ENOMEM;
		size_t j = 0;
		for (size_t i = 0; i < m; i++)
			if (json_is_string(json_array_get(arr, i)))
				items[j++] = arena_strdup(a, json_string_value(json_array_get(arr, i)));
		*lists[f] = items;
		*counts[f] = j;
	}
	*channels = out;
	*channel_n = k;
	*recipients = rec;
	return 0;
}

static int level_delay(json_t *levels, size_t i)
{
	json_t *d = json_object_get(json_array_get(levels, i), "delay_minutes");
	if (d == NULL)
		d = json_object_get(json_array_get(levels, i), "delayMinutes");
	int v = json_is_integer(d) ? (int)json_integer_value(d) : 0;
	return v < 1 ? 1 : v;
}

struct escalation {
	const char *alert_id;
	struct arena *a;
	bool is_escalated;
};

/*
 * Escalates one due alert while it is still due and ACTIVE (db_tx_fn): an
 * acknowledged one needs nobody, a suppressed one pages nobody (it
 * escalates when it is active again).
 */
static int escalate_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char read_sql[] =
	        "SELECT a.status::text, a.escalation_level, p.levels::text, p.is_repeat_last_level FROM tb_alert a"
	        " JOIN tb_alert_rule r ON r.id = a.alert_rule_id"
	        " LEFT JOIN tb_escalation_policy p ON p.id = r.escalation_policy_id"
	        " WHERE a.id = $1 AND a.next_escalation_at <= now() AND a.status = 'active'"
	        " FOR UPDATE OF a SKIP LOCKED";
	static const char update_sql[] =
	        "UPDATE tb_alert SET escalation_level = $2::integer, escalated_at = now(),"
	        " next_escalation_at = now() + $3::integer * interval '1 minute', updated_at = now() WHERE id = $1";
	struct escalation *es = arg;
	struct arena *a = es->a;
	struct db_result *res = NULL;
	json_t *levels = NULL;
	es->is_escalated = false;
	const char *params[] = {es->alert_id};
	int rc = db_exec(conn, read_sql, 1, params, &res, err);
	if (rc != 0)
		return rc;
	if (db_result_rows(res) == 0)
		goto out; /* acknowledged, resolved or taken by another replica */
	Monitoring__V1__AlertStatus previous = alerts_status_from_label(db_result_value(res, 0, 0));
	int level = (int)strtol(db_result_value(res, 0, 1), NULL, 10);
	bool is_repeat = strcmp(db_result_value(res, 0, 3), "t") == 0;
	if (!db_result_is_null(res, 0, 2))
		levels = json_loads(db_result_value(res, 0, 2), 0, NULL);
	size_t level_n = json_is_array(levels) ? json_array_size(levels) : 0;
	if (level_n == 0 || ((size_t)level >= level_n && !is_repeat)) {
		/* Nothing (more) to escalate to. */
		rc = db_exec(conn, "UPDATE tb_alert SET next_escalation_at = NULL WHERE id = $1", 1, params, NULL, err);
		goto out;
	}
	size_t at = (size_t)level < level_n ? (size_t)level : level_n - 1;
	Monitoring__V1__NotificationChannel *channels = NULL;
	size_t channel_n = 0;
	Monitoring__V1__NotificationRecipients *recipients = NULL;
	if (parse_level(a, json_array_get(levels, at), &channels, &channel_n, &recipients) != 0) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	/* The next level's delay, or the last one's again when it repeats; no next escalation otherwise. */
	const char *next = NULL;
	char next_text[INT_TEXT_MAX], level_text[INT_TEXT_MAX];
	if ((size_t)level + 1 < level_n)
		next = int_text(next_text, level_delay(levels, (size_t)level + 1));
	else if (is_repeat)
		next = int_text(next_text, level_delay(levels, level_n - 1));
	const char *update_params[] = {es->alert_id, int_text(level_text, level + 1), next};
	rc = db_exec(conn, update_sql, 3, update_params, NULL, err);
	Monitoring__V1__Alert *alert = NULL;
	if (rc == 0)
		rc = alerts_read_tx(conn, a, es->alert_id, false, &alert, err);
	if (rc == 0 && channel_n > 0)
		rc = alerts_outbox_enqueue_tx(conn, a, alert, "escalated", level + 1, channels, channel_n, recipients,
		                              NULL, NULL, err);
	if (rc == 0)
		rc = alerts_record_change_tx(conn, a, es->alert_id, KIND(UPDATED), previous, NULL, NULL, NULL, err);
	if (rc == 0)
		es->is_escalated = true;
out:
	json_decref(levels);
	db_result_free(res);
	return rc;
}

/* ---- the engine ---- */

struct cached_rule {
	char *id;
	char *metric_name;
};

struct alerts_engine {
	struct db_pool *pool;
	int tick_ms;
	int retention_days;
	pthread_t event_thread;
	pthread_t tick_thread;
	bool has_event_thread;
	bool has_tick_thread;
	bool is_tick_failing; /* the tick thread's: warn once per streak of failures */

	pthread_mutex_t mu; /* guards everything below */
	pthread_cond_t event_cond;
	pthread_cond_t tick_cond;
	bool is_stopping;
	bool is_cache_stale;
	bool is_everything_dirty;  /* the queue overflowed: evaluate every cached rule */
	struct cached_rule *rules; /* sorted by metric_name (strcmp) */
	size_t rule_n;
	char *pending[PENDING_NAMES_MAX]; /* metric names with new points, malloc'd */
	size_t pending_n;
};

static void free_rules(struct cached_rule *rules, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(rules[i].id);
		free(rules[i].metric_name);
	}
	free(rules);
}

static int rule_cmp(const void *x, const void *y)
{
	const struct cached_rule *a = x, *b = y;
	int c = strcmp(a->metric_name, b->metric_name);
	return c ? c : strcmp(a->id, b->id);
}

/* Index of the first cached rule on metric name, or rule_n. Under mu. */
static size_t rules_lower_bound(const struct alerts_engine *e, const char *name)
{
	size_t lo = 0, hi = e->rule_n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(e->rules[mid].metric_name, name) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Reloads the map from metric name to the ids of the rules evaluated on it. */
static int reload_rules(struct alerts_engine *e, struct mon_error *err)
{
	struct db_conn *conn = NULL;
	struct db_result *res = NULL;
	struct cached_rule *rules = NULL;
	size_t n = 0;
	int rc = db_pool_acquire(e->pool, ACQUIRE_TIMEOUT_MS, &conn, err);
	if (rc != 0)
		return rc;
	rc = db_exec(conn, "SELECT id, metric_name FROM tb_alert_rule WHERE status <> 'disabled'", 0, NULL, &res, err);
	db_pool_release(e->pool, conn);
	if (rc != 0)
		return rc;
	int rows = db_result_rows(res);
	rules = calloc(rows > 0 ? (size_t)rows : 1, sizeof(*rules));
	if (rules == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory loading alert rules");
		goto out;
	}
	for (; n < (size_t)rows; n++) {
		rules[n].id = strdup(db_result_value(res, (int)n, 0));
		rules[n].metric_name = strdup(db_result_value(res, (int)n, 1));
		if (rules[n].id == NULL || rules[n].metric_name == NULL) {
			n++;
			rc = mon_error_set(err, MON_ENOMEM, "out of memory loading alert rules");
			goto out;
		}
	}
	qsort(rules, n, sizeof(*rules), rule_cmp);
	pthread_mutex_lock(&e->mu);
	struct cached_rule *old = e->rules;
	size_t old_n = e->rule_n;
	e->rules = rules;
	e->rule_n = n;
	pthread_mutex_unlock(&e->mu);
	rules = old;
	n = old_n;
out:
	free_rules(rules, n);
	db_result_free(res);
	return rc;
}

/* Evaluates one rule in its own transaction; errors are logged. */
static double elapsed_ms(const struct timespec *since)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - since->tv_sec) * 1e3 + (double)(now.tv_nsec - since->tv_nsec) / 1e6;
}

static void evaluate_rule(struct alerts_engine *e, const char *rule_id)
{
	struct timespec started;
	clock_gettime(CLOCK_MONOTONIC, &started);
	struct eval ev = {.rule_id = rule_id, .a = arena_create(EVAL_ARENA_CAP)};
	struct mon_error err = {0};
	if (ev.a == NULL) {
		log_warn("msg=\"could not evaluate alert rule\" rule_id=\"%s\" error=\"out of memory\"", rule_id);
		return;
	}
	int rc = db_tx_run(e->pool, TX_TIMEOUT_MS, evaluate_tx, &ev, &err);
	if (rc != 0)
		log_warn("msg=\"could not evaluate alert rule\" rule_id=\"%s\" error=\"%s\"", rule_id, err.msg);
	else if (ev.fired_n > 0 || ev.resolved_n > 0)
		log_info("msg=\"alert rule evaluated\" rule_id=\"%s\" fired=%d resolved=%d duration_ms=%.1f", rule_id,
		         ev.fired_n, ev.resolved_n, elapsed_ms(&started));
	arena_destroy(ev.a);
}

/* Copies the ids of the cached rules on these metrics (all of them when every is set). Under no lock. */
static char **rules_for_names(struct alerts_engine *e, char *const *names, size_t name_n, bool every, size_t *out_n)
{
	pthread_mutex_lock(&e->mu);
	size_t cap = 0;
	if (every)
		cap = e->rule_n;
	else
		for (size_t i = 0; i < name_n; i++)
			for (size_t j = rules_lower_bound(e, names[i]);
			     j < e->rule_n && strcmp(e->rules[j].metric_name, names[i]) == 0; j++)
				cap++;
	char **ids = calloc(cap ? cap : 1, sizeof(*ids));
	size_t n = 0;
	if (ids != NULL) {
		if (every)
			for (size_t j = 0; j < e->rule_n; j++)
				ids[n++] = strdup(e->rules[j].id);
		else
			for (size_t i = 0; i < name_n; i++)
				for (size_t j = rules_lower_bound(e, names[i]);
				     j < e->rule_n && strcmp(e->rules[j].metric_name, names[i]) == 0; j++)
					ids[n++] = strdup(e->rules[j].id);
	}
	pthread_mutex_unlock(&e->mu);
	*out_n = n;
	return ids;
}

static void deadline_in(struct timespec *ts, int64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)(ms / 1000);
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* The event thread: evaluates the rules on metrics with new points, and keeps the rule map fresh. */
static void *event_main(void *arg)
{
	struct alerts_engine *e = arg;
	int64_t loaded_at = 0;
	bool is_loaded = false;
	bool is_load_failing = false; /* warn once per streak of failures */
	for (;;) {
		pthread_mutex_lock(&e->mu);
		struct timespec until;
		deadline_in(&until, CACHE_REFRESH_MS);
		while (!e->is_stopping && e->pending_n == 0 && !e->is_cache_stale && !e->is_everything_dirty &&
		       is_loaded && mon_now_ms() - loaded_at < CACHE_REFRESH_MS)
			if (pthread_cond_timedwait(&e->event_cond, &e->mu, &until) == ETIMEDOUT)
				break;
		if (e->is_stopping) {
			pthread_mutex_unlock(&e->mu);
			break;
		}
		bool is_stale = e->is_cache_stale || !is_loaded || mon_now_ms() - loaded_at >= CACHE_REFRESH_MS;
		bool every = e->is_everything_dirty;
		e->is_cache_stale = false;
		e->is_everything_dirty = false;
		char *names[PENDING_NAMES_MAX];
		size_t name_n = e->pending_n;
		memcpy(names, e->pending, name_n * sizeof(names[0]));
		e->pending_n = 0;
		pthread_mutex_unlock(&e->mu);

		if (is_stale) {
			struct mon_error err = {0};
			if (reload_rules(e, &err) != 0) {
				if (!is_load_failing)
					log_warn("msg=\"could not load alert rules, retrying\" error=\"%s\"", err.msg);
				is_load_failing = true;
				pthread_mutex_lock(&e->mu);
				e->is_cache_stale = true;
				pthread_mutex_unlock(&e->mu);
				/* Points still queue their metric names; retry after a pause. */
				struct timespec pause = {.tv_sec = 0, .tv_nsec = 200000000L};
				nanosleep(&pause, NULL);
			} else {
				if (is_load_failing)
					log_info("msg=\"alert rules loaded again\"");
				is_load_failing = false;
				is_loaded = true;
				loaded_at = mon_now_ms();
			}
		}
		size_t id_n = 0;
		char **ids = rules_for_names(e, names, name_n, every, &id_n);
		for (size_t i = 0; i < name_n; i++)
			free(names[i]);
		for (size_t i = 0; ids && i < id_n; i++) {
			if (ids[i])
				evaluate_rule(e, ids[i]);
			free(ids[i]);
		}
		free(ids);
	}
	return NULL;
}

/* Claims the rules due for their periodic evaluation and evaluates them; returns how many, -1 when the claim failed. */
static int tick_rules(struct alerts_engine *e)
{
	_Static_assert(CLAIM_BATCH == 100, "the SQL below names CLAIM_BATCH");
	static const char sql[] =
	        "UPDATE tb_alert_rule r SET next_evaluation_at = now() + r.evaluation_interval * interval '1 second'"
	        " WHERE r.id IN (SELECT id FROM tb_alert_rule WHERE status <> 'disabled' AND next_evaluation_at <= "
	        "now()"
	        " ORDER BY next_evaluation_at FOR UPDATE SKIP LOCKED LIMIT 100) RETURNING r.id";
	struct mon_error err = {0};
	struct db_conn *conn = NULL;
	struct db_result *res = NULL;
	if (db_pool_acquire(e->pool, ACQUIRE_TIMEOUT_MS, &conn, &err) != 0 ||
	    db_exec(conn, sql, 0, NULL, &res, &err) != 0) {
		if (conn)
			db_pool_release(e->pool, conn);
		if (!e->is_tick_failing)
			log_warn("msg=\"could not claim due alert rules, retrying\" error=\"%s\"", err.msg);
		e->is_tick_failing = true;
		return -1;
	}
	db_pool_release(e->pool, conn);
	if (e->is_tick_failing)
		log_info("msg=\"alert rules claimed again\"");
	e->is_tick_failing = false;
	int n = db_result_rows(res);
	for (int i = 0; i < n; i++) {
		pthread_mutex_lock(&e->mu);
		bool is_stopping = e->is_stopping;
		pthread_mutex_unlock(&e->mu);
		if (is_stopping)
			break;
		evaluate_rule(e, db_result_value(res, i, 0));
	}
	db_result_free(res);
	return n;
}

/* Escalates the alerts whose next_escalation_at has passed. */
static void tick_escalations(struct alerts_engine *e)
{
	_Static_assert(ESCALATE_BATCH == 50, "the SQL below names ESCALATE_BATCH");
	static const char sql[] = "SELECT id FROM tb_alert WHERE next_escalation_at <= now()"
	                          " AND status = 'active' ORDER BY next_escalation_at LIMIT 50";
	struct mon_error err = {0};
	struct db_conn *conn = NULL;
	struct db_result *res = NULL;
	if (db_pool_acquire(e->pool, ACQUIRE_TIMEOUT_MS, &conn, &err) != 0 ||
	    db_exec(conn, sql, 0, NULL, &res, &err) != 0) {
		if (conn)
			db_pool_release(e->pool, conn);
		if (!e->is_tick_failing)
			log_warn("msg=\"could not read alerts due to escalate\" error=\"%s\"", err.msg);
		return;
	}
	db_pool_release(e->pool, conn);
	for (int i = 0; i < db_result_rows(res); i++) {
		struct escalation es = {.alert_id = db_result_value(res, i, 0), .a = arena_create(EVAL_ARENA_CAP)};
		if (es.a == NULL)
			break;
		if (db_tx_run(e->pool, TX_TIMEOUT_MS, escalate_tx, &es, &err) != 0)
			log_warn("msg=\"could not escalate alert\" alert_id=\"%s\" error=\"%s\"", es.alert_id, err.msg);
		else if (es.is_escalated)
			log_info("msg=\"alert escalated\" alert_id=\"%s\"", es.alert_id);
		arena_destroy(es.a);
	}
	db_result_free(res);
}

/* Runs one batched DELETE until it removes fewer than a batch; adds the rows to *count. */
static int delete_batches(struct db_conn *conn, const char *sql, const char *days, int64_t *count,
                          struct mon_error *err)
{
	const char *params[] = {days};
	for (;;) {
		struct db_result *res = NULL;
		int rc = db_exec(conn, sql, 1, params, &res, err);
		if (rc != 0)
			return rc;
		int64_t n = db_result_affected(res);
		db_result_free(res);
		*count += n;
		if (n < RETENTION_BATCH)
			return 0;
	}
}

/* Alert history retention, on the one replica holding RETENTION_LOCK. */
static void run_retention(struct alerts_engine *e)
{
	_Static_assert(RETENTION_LOCK == 7206021, "the SQL below names RETENTION_LOCK");
	_Static_assert(RETENTION_BATCH == 5000, "the SQL below names RETENTION_BATCH");
	static const char alerts_sql[] =
	        "DELETE FROM tb_alert WHERE id IN (SELECT id FROM tb_alert WHERE status = 'resolved'"
	        " AND resolved_at < now() - $1::integer * interval '1 day' LIMIT 5000)";
	static const char events_sql[] =
	        "DELETE FROM tb_alert_event WHERE seq IN (SELECT seq FROM tb_alert_event"
	        " WHERE changed_at < now() - $1::integer * interval '1 day' ORDER BY seq LIMIT 5000)";
	struct mon_error err = {0};
	struct db_conn *conn = NULL;
	struct db_result *res = NULL;
	bool is_locked = false;
	int64_t alerts_n = 0, events_n = 0;
	char days[16];
	snprintf(days, sizeof(days), "%d", e->retention_days);
	int rc = db_pool_acquire(e->pool, ACQUIRE_TIMEOUT_MS, &conn, &err);
	if (rc != 0)
		goto out;
	rc = db_exec(conn, "SELECT pg_try_advisory_lock(7206021)", 0, NULL, &res, &err);
	if (rc != 0)
		goto out;
	is_locked = strcmp(db_result_value(res, 0, 0), "t") == 0;
	if (!is_locked)
		goto out;
	rc = delete_batches(conn, alerts_sql, days, &alerts_n, &err);
	if (rc == 0)
		rc = delete_batches(conn, events_sql, days, &events_n, &err);
	if (rc == 0 && (alerts_n > 0 || events_n > 0))
		log_info("msg=\"alert retention\" alerts_deleted=%" PRId64 " events_deleted=%" PRId64
		         " max_age_days=%d",
		         alerts_n, events_n, e->retention_days);
out:
	if (rc != 0)
		log_warn("msg=\"alert retention failed\" error=\"%s\"", err.msg);
	if (is_locked) {
		struct mon_error unlock_err = {0};
		if (db_exec(conn, "SELECT pg_advisory_unlock(7206021)", 0, NULL, NULL, &unlock_err) != 0)
			log_warn("msg=\"could not release the alert retention lock\" error=\"%s\"", unlock_err.msg);
	}
	db_result_free(res);
	if (conn)
		db_pool_release(e->pool, conn);
}

/* The tick thread: due rules, due escalations, retention. */
static void *tick_main(void *arg)
{
	struct alerts_engine *e = arg;
	int64_t retention_at = mon_now_ms() + 5000; /* the first run shortly after start */
	pthread_mutex_lock(&e->mu);
	while (!e->is_stopping) {
		pthread_mutex_unlock(&e->mu);
		int claimed = tick_rules(e);
		if (claimed >= 0)
			tick_escalations(e);
		if (mon_now_ms() >= retention_at) {
			run_retention(e);
			retention_at = mon_now_ms() + RETENTION_EVERY_MS;
		}
		pthread_mutex_lock(&e->mu);
		if (claimed >= CLAIM_BATCH)
			continue; /* more are due */
		struct timespec until;
		deadline_in(&until, e->tick_ms);
		while (!e->is_stopping)
			if (pthread_cond_timedwait(&e->tick_cond, &e->mu, &until) == ETIMEDOUT)
				break;
	}
	pthread_mutex_unlock(&e->mu);
	return NULL;
}

static void on_rules_changed(const char *channel, const char *payload, void *arg)
{
	(void)channel;
	(void)payload;
	struct alerts_engine *e = arg;
	pthread_mutex_lock(&e->mu);
	e->is_cache_stale = true;
	pthread_cond_signal(&e->event_cond);
	pthread_mutex_unlock(&e->mu);
}

int alerts_engine_start(const struct alerts_engine_config *cfg, struct alerts_engine **out, struct mon_error *err)
{
	*out = NULL;
	struct alerts_engine *e = calloc(1, sizeof(*e));
	if (e == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	e->pool = cfg->pool;
	e->tick_ms = cfg->tick_ms > 0 ? cfg->tick_ms : 1000;
	e->retention_days = cfg->retention_days > 0 ? cfg->retention_days : 90;
	e->is_cache_stale = true;
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->event_cond, &attr);
	pthread_cond_init(&e->tick_cond, &attr);
	pthread_condattr_destroy(&attr);
	int rc = 0;
	if (cfg->bus != NULL) {
		rc = db_bus_subscribe(cfg->bus, ALERTS_RULES_CHANNEL, on_rules_changed, e, err);
		if (rc != 0)
			goto fail;
	}
	if (pthread_create(&e->event_thread, NULL, event_main, e) != 0) {
		rc = mon_error_set(err, MON_EINTERNAL, "could not start the alert evaluator thread");
		goto fail;
	}
	e->has_event_thread = true;
	if (pthread_create(&e->tick_thread, NULL, tick_main, e) != 0) {
		rc = mon_error_set(err, MON_EINTERNAL, "could not start the alert tick thread");
		goto fail;
	}
	e->has_tick_thread = true;
	*out = e;
	return 0;
fail:
	alerts_engine_stop(e);
	return rc;
}

void alerts_engine_stop(struct alerts_engine *e)
{
	if (e == NULL)
		return;
	pthread_mutex_lock(&e->mu);
	e->is_stopping = true;
	pthread_cond_broadcast(&e->event_cond);
	pthread_cond_broadcast(&e->tick_cond);
	pthread_mutex_unlock(&e->mu);
	if (e->has_event_thread)
		pthread_join(e->event_thread, NULL);
	if (e->has_tick_thread)
		pthread_join(e->tick_thread, NULL);
	for (size_t i = 0; i < e->pending_n; i++)
		free(e->pending[i]);
	free_rules(e->rules, e->rule_n);
	pthread_cond_destroy(&e->event_cond);
	pthread_cond_destroy(&e->tick_cond);
	pthread_mutex_destroy(&e->mu);
	free(e);
}

void alerts_engine_on_metrics(struct alerts_engine *e, const char *const *metric_names, size_t n)
{
	if (e == NULL || n == 0)
		return;
	bool is_queued = false;
	pthread_mutex_lock(&e->mu);
	for (size_t i = 0; i < n; i++) {
		const char *name = metric_names[i];
		if (name == NULL)
			continue;
		/* Only names some rule watches (all of them while the map is being reloaded). */
		size_t at = rules_lower_bound(e, name);
		if (!e->is_cache_stale && (at >= e->rule_n || strcmp(e->rules[at].metric_name, name) != 0))
			continue;
		bool is_dup = false;
		for (size_t j = 0; j < e->pending_n && !is_dup; j++)
			is_dup = strcmp(e->pending[j], name) == 0;
		if (is_dup)
			continue;
		char *copy = e->pending_n < PENDING_NAMES_MAX ? strdup(name) : NULL;
		if (copy == NULL)
			e->is_everything_dirty = true;
		else
			e->pending[e->pending_n++] = copy;
		is_queued = true;
	}
	if (is_queued)
		pthread_cond_signal(&e->event_cond);
	pthread_mutex_unlock(&e->mu);
}

/* ---- PreviewAlertRule ---- */

struct preview {
	const Monitoring__V1__PreviewAlertRuleRequest *req;
	Monitoring__V1__PreviewAlertRuleResponse *resp;
	struct arena *a;
	Monitoring__V1__AlertRule *rule; /* inline, with defaults; or read */
	const char *as_of_s;
	int interval_s; /* the rule's evaluation_interval */
};

static int labels_entries(struct arena *a, const char *labels, Monitoring__V1__RuleEvaluation *ev)
{
	json_t *obj = json_loads(labels, 0, NULL);
	size_t n = json_is_object(obj) ? json_object_size(obj) : 0;
	ev->labels = arena_calloc(a, n ? n : 1, sizeof(*ev->labels));
	if (ev->labels == NULL) {
		json_decref(obj);
		return MON_ENOMEM;
	}
	const char *key;
	json_t *value;
	size_t i = 0;
	json_object_foreach(obj, key, value)
	{
		Monitoring__V1__RuleEvaluation__LabelsEntry *entry = arena_calloc(a, 1, sizeof(*entry));
		if (entry == NULL)
			break;
		monitoring__v1__rule_evaluation__labels_entry__init(entry);
		entry->key = arena_strdup(a, key);
		entry->value = arena_strdup(a, json_is_string(value) ? json_string_value(value) : "");
		ev->labels[i++] = entry;
	}
	ev->n_labels = i;
	json_decref(obj);
	return i == n ? 0 : MON_ENOMEM;
}

/* What an alert for group g would be now; o is its open alert, if any. */
static int would_be(struct db_conn *conn, struct arena *a, const Monitoring__V1__AlertRule *r, const struct group *g,
                    const struct open_alert *o, Monitoring__V1__RuleEvaluation *ev, struct mon_error *err)
{
	bool is_auto_resolve = r->auto_resolve == NULL || r->auto_resolve->value;
	/* By default the open alert stays as it is (no alert: UNSPECIFIED). */
	ev->would_be_status = o ? o->status : ST(UNSPECIFIED);
	ev->would_be_suppression_reason = o && o->status == ST(SUPPRESSED) ? o->reason : WHY(UNSPECIFIED);
	if (!g->has_value)
		return 0;
	if (!g->is_met) {
		if (o != NULL && (o->status == ST(PENDING) || is_auto_resolve)) {
			ev->would_be_status = ST(RESOLVED);
			ev->would_be_suppression_reason = WHY(UNSPECIFIED);
		}
		return 0;
	}
	bool is_muted = o != NULL && o->status == ST(SUPPRESSED) &&
	                (o->reason == WHY(SILENCE) || o->reason == WHY(RULE_TESTING));
	if (o != NULL && !(o->status == ST(PENDING) && o->is_due) && !is_muted)
		return 0;
	if (o == NULL && duration_minutes(r) > 0) {
		ev->would_be_status = ST(PENDING);
		return 0;
	}
	Monitoring__V1__AlertStatus status;
	Monitoring__V1__SuppressionReason reason;
	char *silence_id = NULL;
	int rc = fire_status(conn, a, r, g->key, &status, &reason, &silence_id, err);
	if (rc != 0)
		return rc;
	if (is_muted && reason != WHY(SILENCE) && reason != WHY(RULE_TESTING)) {
		status = ST(ACTIVE); /* unmuted: the cap and the window apply to new alerts only */
		reason = WHY(UNSPECIFIED);
	}
	ev->would_be_status = status;
	ev->would_be_suppression_reason = reason;
	return 0;
}

static int preview_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct preview *p = arg;
	struct arena *a = p->a;
	Monitoring__V1__AlertRule *r = p->rule;
	int rc;
	if (r == NULL) {
		rc = alerts_rule_read_tx(conn, a, p->req->rule_id, false, &r, err);
		if (rc != 0)
			return rc;
	}
	struct group *groups = NULL;
	size_t group_n = 0;
	struct open_alert *open = NULL;
	size_t open_n = 0;
	rc = read_groups(conn, a, r, p->as_of_s, &groups, &group_n, err);
	if (rc == 0 && r->id && r->id[0] && p->rule == NULL)
		rc = read_open_alerts(conn, a, r, false, &open, &open_n, err);
	if (rc != 0)
		return rc;
	p->interval_s = r->evaluation_interval > 0 ? r->evaluation_interval : 60;
	bool has_group_by = r->scope && r->scope->n_group_by > 0;
	static struct group empty = {.labels = "{}", .key = ""};
	size_t n = group_n == 0 && !has_group_by ? 1 : group_n;
	Monitoring__V1__RuleEvaluation **evs = arena_calloc(a, n ? n : 1, sizeof(*evs));
	if (evs == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const struct group *g = group_n ? &groups[i] : &empty;
		Monitoring__V1__RuleEvaluation *ev = arena_calloc(a, 1, sizeof(*ev));
		if (ev == NULL)
			return mon_error_set(err, MON_ENOMEM, "out of memory");
		monitoring__v1__rule_evaluation__init(ev);
		if (labels_entries(a, has_group_by ? g->labels : "{}", ev) != 0)
			return mon_error_set(err, MON_ENOMEM, "out of memory");
		if (g->has_value) {
			Google__Protobuf__DoubleValue *v = arena_calloc(a, 1, sizeof(*v));
			if (v == NULL)
				return mon_error_set(err, MON_ENOMEM, "out of memory");
			google__protobuf__double_value__init(v);
			v->value = g->value;
			ev->current_value = v;
		}
		ev->is_condition_met = g->has_value && g->is_met;
		ev->sample_count = g->sample_n;
		rc = would_be(conn, a, r, g, find_open(open, open_n, g->key), ev, err);
		if (rc != 0)
			return rc;
		evs[i] = ev;
	}
	p->resp->evaluations = evs;
	p->resp->n_evaluations = n;
	return 0;
}

static int64_t floor_div(int64_t x, int64_t y)
{
	int64_t q = x / y;
	return (x % y != 0 && (x < 0) != (y < 0)) ? q - 1 : q;
}

/* A copy of an inline rule with CreateAlertRule's defaults applied, allocated in a. */
static Monitoring__V1__AlertRule *rule_with_defaults(struct arena *a, const Monitoring__V1__AlertRule *in)
{
	Monitoring__V1__AlertRule *r = arena_alloc(a, sizeof(*r));
	if (r == NULL)
		return NULL;
	*r = *in;
	r->id = (char *)"";
	r->status = RULE_ST(ENABLED);
	if (r->severity == 0)
		r->severity = MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_WARNING;
	if (r->evaluation_interval == 0)
		r->evaluation_interval = 60;
	Google__Protobuf__Int32Value *w[3] = {NULL, NULL, NULL};
	for (int i = 0; i < 3; i++) {
		w[i] = arena_calloc(a, 1, sizeof(*w[i]));
		if (w[i] == NULL)
			return NULL;
		google__protobuf__int32_value__init(w[i]);
	}
	if (r->duration_minutes == NULL) {
		w[0]->value = 5;
		r->duration_minutes = w[0];
	}
	if (r->suppress_duration == NULL) {
		w[1]->value = 300;
		r->suppress_duration = w[1];
	}
	if (r->max_alerts_per_hour == NULL) {
		w[2]->value = 10;
		r->max_alerts_per_hour = w[2];
	}
	return r;
}

int alerts_engine_preview(struct rpc_ctx *ctx, struct db_pool *pool, const Monitoring__V1__PreviewAlertRuleRequest *req,
                          Monitoring__V1__PreviewAlertRuleResponse *resp)
{
	struct arena *a = rpc_ctx_arena(ctx);
	struct mon_error err = {0};
	struct preview p = {.req = req, .resp = resp, .a = a};
	switch (req->target_case) {
	case MONITORING__V1__PREVIEW_ALERT_RULE_REQUEST__TARGET_RULE_ID:
		if (req->rule_id == NULL || req->rule_id[0] == '\0')
			return rpc_fail(ctx, MON_EINVAL, "rule_id: must not be empty");
		break;
	case MONITORING__V1__PREVIEW_ALERT_RULE_REQUEST__TARGET_RULE:
		p.rule = rule_with_defaults(a, req->rule);
		if (p.rule == NULL)
			return rpc_fail(ctx, MON_ENOMEM, "out of memory");
		if (alerts_rule_check("rule.", p.rule, &err) != 0)
			return rpc_fail(ctx, err.code, "%s", err.msg);
		break;
	default: return rpc_fail(ctx, MON_EINVAL, "rule_id or rule: one is required");
	}
	int64_t as_of_ms = mon_wall_ms();
	if (req->as_of != NULL && svc_time_ms("as_of", req->as_of, &as_of_ms, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	p.as_of_s = arena_printf(a, "%.3f", (double)as_of_ms / 1000.0);
	if (p.as_of_s == NULL) /* NULL would mean "now" to the query */
		return rpc_fail(ctx, MON_ENOMEM, "out of memory");
	int rc = svc_run_tx(ctx, pool, preview_tx, &p);
	if (rc != 0)
		return rc;
	/* The window: as_of minus the rule's interval, to as_of. */
	Monitoring__V1__TimeRange *window = arena_calloc(a, 1, sizeof(*window));
	Google__Protobuf__Timestamp *start = arena_calloc(a, 1, sizeof(*start));
	Google__Protobuf__Timestamp *end = arena_calloc(a, 1, sizeof(*end));
	if (window == NULL || start == NULL || end == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "out of memory");
	monitoring__v1__time_range__init(window);
	google__protobuf__timestamp__init(start);
	google__protobuf__timestamp__init(end);
	int64_t start_ms = as_of_ms - (int64_t)p.interval_s * 1000;
	end->seconds = floor_div(as_of_ms, 1000);
	end->nanos = (int32_t)(as_of_ms - end->seconds * 1000) * 1000000;
	start->seconds = floor_div(start_ms, 1000);
	start->nanos = (int32_t)(start_ms - start->seconds * 1000) * 1000000;
	window->start_time = start;
	window->end_time = end;
	resp->window = window;
	return 0;
}
