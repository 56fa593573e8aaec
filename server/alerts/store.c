/*
 * The alert store (alerts/store.h): enum labels, the transition table,
 * reading an alert as the API shows it (tb_alert joined with its rule,
 * notifications_sent and labels decoded), recording a change in the
 * change log (mon_alert_event_append, with the packed AlertChange) and
 * queueing deliveries in tb_notification_outbox. Everything here runs in
 * the caller's transaction; nothing commits or keeps state.
 */
#include "alerts/store.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "common/json.h"
#include "common/parse.h"

/* Keys longer than the column (VARCHAR(100)) hash their recipient, then the whole key. */
#define IDEMPOTENCY_KEY_MAX 100

/* ---- enum labels ---- */

struct label {
	int value;
	const char *text;
};

static const struct label status_labels[] = {{MONITORING__V1__ALERT_STATUS__ALERT_STATUS_ACTIVE, "active"},
                                             {MONITORING__V1__ALERT_STATUS__ALERT_STATUS_ACKNOWLEDGED, "acknowledged"},
                                             {MONITORING__V1__ALERT_STATUS__ALERT_STATUS_RESOLVED, "resolved"},
                                             {MONITORING__V1__ALERT_STATUS__ALERT_STATUS_SUPPRESSED, "suppressed"},
                                             {MONITORING__V1__ALERT_STATUS__ALERT_STATUS_PENDING, "pending"},
                                             {0, NULL}};

static const struct label severity_labels[] = {{MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_DEBUG, "debug"},
                                               {MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_INFO, "info"},
                                               {MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_WARNING, "warning"},
                                               {MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_ERROR, "error"},
                                               {MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_FATAL, "fatal"},
                                               {MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_CRITICAL, "critical"},
                                               {0, NULL}};

static const struct label operator_labels[] = {
        {MONITORING__V1__COMPARISON_OPERATOR__COMPARISON_OPERATOR_GT, "gt"},
        {MONITORING__V1__COMPARISON_OPERATOR__COMPARISON_OPERATOR_GTE, "gte"},
        {MONITORING__V1__COMPARISON_OPERATOR__COMPARISON_OPERATOR_LT, "lt"},
        {MONITORING__V1__COMPARISON_OPERATOR__COMPARISON_OPERATOR_LTE, "lte"},
        {MONITORING__V1__COMPARISON_OPERATOR__COMPARISON_OPERATOR_EQ, "eq"},
        {MONITORING__V1__COMPARISON_OPERATOR__COMPARISON_OPERATOR_NE, "ne"},
        {MONITORING__V1__COMPARISON_OPERATOR__COMPARISON_OPERATOR_CONTAINS, "contains"},
        {MONITORING__V1__COMPARISON_OPERATOR__COMPARISON_OPERATOR_NOT_CONTAINS, "not-contains"},
        {0, NULL}};

static const struct label channel_labels[] = {
        {MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_EMAIL, "email"},
        {MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_SLACK, "slack"},
        {MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_SMS, "sms"},
        {MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_WEBHOOK, "webhook"},
        {MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_PAGERDUTY, "pagerduty"},
        {MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_IN_APP, "in-app"},
        {0, NULL}};

static const struct label rule_status_labels[] = {
        {MONITORING__V1__ALERT_RULE_STATUS__ALERT_RULE_STATUS_ENABLED, "enabled"},
        {MONITORING__V1__ALERT_RULE_STATUS__ALERT_RULE_STATUS_DISABLED, "disabled"},
        {MONITORING__V1__ALERT_RULE_STATUS__ALERT_RULE_STATUS_TESTING, "testing"},
        {0, NULL}};

static const struct label suppression_labels[] = {
        {MONITORING__V1__SUPPRESSION_REASON__SUPPRESSION_REASON_HOURLY_CAP, "hourly-cap"},
        {MONITORING__V1__SUPPRESSION_REASON__SUPPRESSION_REASON_SUPPRESS_WINDOW, "suppress-window"},
        {MONITORING__V1__SUPPRESSION_REASON__SUPPRESSION_REASON_SILENCE, "silence"},
        {MONITORING__V1__SUPPRESSION_REASON__SUPPRESSION_REASON_RULE_TESTING, "rule-testing"},
        {0, NULL}};

static const struct label delivery_labels[] = {{MONITORING__V1__DELIVERY_STATUS__DELIVERY_STATUS_PENDING, "pending"},
                                               {MONITORING__V1__DELIVERY_STATUS__DELIVERY_STATUS_SENT, "sent"},
                                               {MONITORING__V1__DELIVERY_STATUS__DELIVERY_STATUS_RETRYING, "retrying"},
                                               {MONITORING__V1__DELIVERY_STATUS__DELIVERY_STATUS_FAILED, "failed"},
                                               {MONITORING__V1__DELIVERY_STATUS__DELIVERY_STATUS_SKIPPED, "skipped"},
                                               {0, NULL}};

static const struct label kind_labels[] = {
        {MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_CREATED, "created"},
        {MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_STATUS_CHANGED, "status-changed"},
        {MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_UPDATED, "updated"},
        {MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_DELETED, "deleted"},
        {0, NULL}};

static const char *label_of(const struct label *t, int value)
{
	for (; t->text != NULL; t++)
		if (t->value == value)
			return t->text;
	return NULL;
}

static int value_of(const struct label *t, const char *text)
{
	if (text == NULL)
		return 0;
	for (; t->text != NULL; t++)
		if (strcmp(t->text, text) == 0)
			return t->value;
	return 0;
}

const char *alerts_status_label(Monitoring__V1__AlertStatus s)
{
	return label_of(status_labels, (int)s);
}

const char *alerts_severity_label(Monitoring__V1__SeverityLevel s)
{
	return label_of(severity_labels, (int)s);
}

const char *alerts_operator_label(Monitoring__V1__ComparisonOperator op)
{
	return label_of(operator_labels, (int)op);
}

const char *alerts_channel_label(Monitoring__V1__NotificationChannel c)
{
	return label_of(channel_labels, (int)c);
}

const char *alerts_rule_status_label(Monitoring__V1__AlertRuleStatus s)
{
	return label_of(rule_status_labels, (int)s);
}

const char *alerts_suppression_label(Monitoring__V1__SuppressionReason r)
{
	return label_of(suppression_labels, (int)r);
}

const char *alerts_delivery_status_label(Monitoring__V1__DeliveryStatus s)
{
	return label_of(delivery_labels, (int)s);
}

const char *alerts_change_kind_label(Monitoring__V1__AlertChangeKind k)
{
	return label_of(kind_labels, (int)k);
}

Monitoring__V1__AlertStatus alerts_status_from_label(const char *label)
{
	return (Monitoring__V1__AlertStatus)value_of(status_labels, label);
}

Monitoring__V1__SeverityLevel alerts_severity_from_label(const char *label)
{
	return (Monitoring__V1__SeverityLevel)value_of(severity_labels, label);
}

Monitoring__V1__ComparisonOperator alerts_operator_from_label(const char *label)
{
	return (Monitoring__V1__ComparisonOperator)value_of(operator_labels, label);
}

Monitoring__V1__NotificationChannel alerts_channel_from_label(const char *label)
{
	return (Monitoring__V1__NotificationChannel)value_of(channel_labels, label);
}

Monitoring__V1__AlertRuleStatus alerts_rule_status_from_label(const char *label)
{
	return (Monitoring__V1__AlertRuleStatus)value_of(rule_status_labels, label);
}

Monitoring__V1__SuppressionReason alerts_suppression_from_label(const char *label)
{
	return (Monitoring__V1__SuppressionReason)value_of(suppression_labels, label);
}

Monitoring__V1__DeliveryStatus alerts_delivery_status_from_label(const char *label)
{
	return (Monitoring__V1__DeliveryStatus)value_of(delivery_labels, label);
}

int alerts_severity_rank(Monitoring__V1__SeverityLevel s)
{
	switch (s) {
	case MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_CRITICAL: return 1;
	case MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_FATAL: return 2;
	case MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_ERROR: return 3;
	case MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_WARNING: return 4;
	default: return 5;
	}
}

/* ---- transitions ---- */

bool alerts_transition_allowed(Monitoring__V1__AlertStatus from, Monitoring__V1__AlertStatus to)
{
	enum {
		ACTIVE = MONITORING__V1__ALERT_STATUS__ALERT_STATUS_ACTIVE,
		ACKNOWLEDGED = MONITORING__V1__ALERT_STATUS__ALERT_STATUS_ACKNOWLEDGED,
		RESOLVED = MONITORING__V1__ALERT_STATUS__ALERT_STATUS_RESOLVED,
		SUPPRESSED = MONITORING__V1__ALERT_STATUS__ALERT_STATUS_SUPPRESSED,
		PENDING = MONITORING__V1__ALERT_STATUS__ALERT_STATUS_PENDING,
	};
	int t = (int)to;
	switch ((int)from) {
	case PENDING: return t == ACTIVE || t == SUPPRESSED || t == RESOLVED;
	case ACTIVE: return t == ACKNOWLEDGED || t == RESOLVED || t == SUPPRESSED;
	case SUPPRESSED: return t == ACTIVE || t == ACKNOWLEDGED || t == RESOLVED;
	case ACKNOWLEDGED: return t == RESOLVED;
	default: return false;
	}
}

/* ---- reading ---- */

const char alerts_select_sql[] = "SELECT " ALERTS_SELECT_LIST_SQL ALERTS_FROM_SQL;

/* A nullable microseconds column as a Timestamp: NULL when SQL NULL; *is_ok false when out of memory. */
static Google__Protobuf__Timestamp *ts_col(struct arena *a, const struct db_result *res, int row, int col, bool *is_ok)
{
	if (db_result_is_null(res, row, col))
		return NULL;
	Google__Protobuf__Timestamp *ts = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, row, col)));
	if (ts == NULL)
		*is_ok = false;
	return ts;
}

/* A text column in the arena ("" for NULL); *is_ok false when out of memory. */
static char *text_col(struct arena *a, const struct db_result *res, int row, int col, bool *is_ok)
{
	char *s = arena_strdup(a, db_result_value(res, row, col));
	if (s == NULL)
		*is_ok = false;
	return s;
}

/*
 * "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+hh:mm|-hh:mm)" (or with a space for
 * the T, as PostgreSQL writes) to microseconds since the epoch. False when
 * it does not parse.
 */
bool alerts_parse_time_us(const char *text, int64_t *out)
{
	int year, mon, day, hour, min, sec, n = 0;
	if (text == NULL ||
	    sscanf(text, "%4d-%2d-%2d%*1[T ]%2d:%2d:%2d%n", &year, &mon, &day, &hour, &min, &sec, &n) != 6 || n == 0)
		return false;
	const char *p = text + n;
	int64_t frac_us = 0;
	if (*p == '.') {
		int64_t scale = 100000;
		p++;
		if (*p < '0' || *p > '9')
			return false;
		for (; *p >= '0' && *p <= '9'; p++) {
			frac_us += (*p - '0') * scale;
			scale /= 10;
		}
	}
	int64_t offset_s = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p == '-' ? -1 : 1, oh = 0, om = 0, m = 0;
		p++;
		if (sscanf(p, "%2d%n", &oh, &m) != 1)
			return false;
		p += m;
		if (*p == ':')
			p++;
		if (*p >= '0' && *p <= '9') {
			if (sscanf(p, "%2d%n", &om, &m) != 1)
				return false;
			p += m;
		}
		offset_s = sign * (oh * 3600 + om * 60);
	} else {
		return false;
	}
	if (*p != '\0' || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
		return false;
	struct tm tm = {0};
	tm.tm_year = year - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = day;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	time_t t = timegm(&tm);
	*out = ((int64_t)t - offset_s) * 1000000 + frac_us;
	return true;
}

static Google__Protobuf__Timestamp *json_ts(struct arena *a, const json_t *obj, const char *key, bool *is_ok)
{
	int64_t us;
	const char *text = json_string_value(json_object_get(obj, key));
	if (text == NULL || !alerts_parse_time_us(text, &us))
		return NULL;
	Google__Protobuf__Timestamp *ts = svc_ts_from_us(a, us);
	if (ts == NULL)
		*is_ok = false;
	return ts;
}

static char *json_str(struct arena *a, const json_t *obj, const char *key, bool *is_ok)
{
	const char *text = json_string_value(json_object_get(obj, key));
	char *s = arena_strdup(a, text ? text : "");
	if (s == NULL)
		*is_ok = false;
	return s;
}

/* One element of notifications_sent (store.h) as a message; NULL when out of memory. */
static Monitoring__V1__NotificationDelivery *delivery_from_json(struct arena *a, const json_t *o)
{
	bool is_ok = true;
	Monitoring__V1__NotificationDelivery *d = arena_alloc(a, sizeof(*d));
	if (d == NULL)
		return NULL;
	monitoring__v1__notification_delivery__init(d);
	d->id = json_str(a, o, "id", &is_ok);
	d->channel = alerts_channel_from_label(json_string_value(json_object_get(o, "channel")));
	d->recipient = json_str(a, o, "recipient", &is_ok);
	d->status = alerts_delivery_status_from_label(json_string_value(json_object_get(o, "status")));
	d->attempt_count = (int32_t)json_integer_value(json_object_get(o, "attempt_count"));
	d->created_at = json_ts(a, o, "created_at", &is_ok);
	d->last_attempt_at = json_ts(a, o, "last_attempt_at", &is_ok);
	d->next_attempt_at = json_ts(a, o, "next_attempt_at", &is_ok);
	d->delivered_at = json_ts(a, o, "delivered_at", &is_ok);
	d->error_message = json_str(a, o, "error_message", &is_ok);
	json_t *code = json_object_get(o, "response_status_code");
	if (json_is_integer(code)) {
		d->response_status_code = arena_alloc(a, sizeof(*d->response_status_code));
		if (d->response_status_code == NULL)
			return NULL;
		google__protobuf__int32_value__init(d->response_status_code);
		d->response_status_code->value = (int32_t)json_integer_value(code);
	}
	d->idempotency_key = json_str(a, o, "idempotency_key", &is_ok);
	d->escalation_level = (int32_t)json_integer_value(json_object_get(o, "escalation_level"));
	d->trigger = json_str(a, o, "trigger", &is_ok);
	return is_ok ? d : NULL;
}

/* The notifications_sent, metadata and labels columns of row; MON_ENOMEM only (bad JSON reads as empty). */
static int decode_json_columns(struct arena *a, const struct db_result *res, int row, Monitoring__V1__Alert *m,
                               struct mon_error *err)
{
	int rc = 0;
	json_t *sent = json_loads(db_result_value(res, row, 13), JSON_DECODE_ANY, NULL);
	json_t *meta = json_loads(db_result_value(res, row, 14), JSON_DECODE_ANY, NULL);
	json_t *labels = json_loads(db_result_value(res, row, 24), JSON_DECODE_ANY, NULL);
	size_t n = json_is_array(sent) ? json_array_size(sent) : 0;
	if (n > 0) {
		m->notifications_sent = arena_calloc(a, n, sizeof(*m->notifications_sent));
		if (m->notifications_sent == NULL) {
			rc = mon_error_set(err, MON_ENOMEM, "response larger than the call's memory cap");
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			const json_t *o = json_array_get(sent, i);
			if (!json_is_object(o))
				continue;
			Monitoring__V1__NotificationDelivery *d = delivery_from_json(a, o);
			if (d == NULL) {
				rc = mon_error_set(err, MON_ENOMEM, "response larger than the call's memory cap");
				goto out;
			}
			m->notifications_sent[m->n_notifications_sent++] = d;
		}
	}
	if (json_is_object(meta) && (m->metadata = svc_struct_from_json(a, meta)) == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "response larger than the call's memory cap");
		goto out;
	}
	n = json_is_object(labels) ? json_object_size(labels) : 0;
	if (n > 0) {
		m->labels = arena_calloc(a, n, sizeof(*m->labels));
		if (m->labels == NULL) {
			rc = mon_error_set(err, MON_ENOMEM, "response larger than the call's memory cap");
			goto out;
		}
		const char *key;
		json_t *value;
		json_object_foreach(labels, key, value)
		{
			Monitoring__V1__Alert__LabelsEntry *e = arena_alloc(a, sizeof(*e));
			char *dumped = json_is_string(value) ? NULL : json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
			if (e != NULL) {
				monitoring__v1__alert__labels_entry__init(e);
				e->key = arena_strdup(a, key);
				e->value = arena_strdup(a, json_is_string(value) ? json_string_value(value)
				                                                 : (dumped ? dumped : ""));
			}
			free(dumped);
			if (e == NULL || e->key == NULL || e->value == NULL) {
				rc = mon_error_set(err, MON_ENOMEM, "response larger than the call's memory cap");
				goto out;
			}
			m->labels[m->n_labels++] = e;
		}
	}
out:
	json_decref(sent);
	json_decref(meta);
	json_decref(labels);
	return rc;
}

int alerts_from_row(struct arena *a, const struct db_result *res, int row, Monitoring__V1__Alert **out,
                    struct mon_error *err)
{
	bool is_ok = true;
	Monitoring__V1__Alert *m = arena_alloc(a, sizeof(*m));
	if (m == NULL)
		return mon_error_set(err, MON_ENOMEM, "response larger than the call's memory cap");
	monitoring__v1__alert__init(m);
	m->id = text_col(a, res, row, 0, &is_ok);
	m->alert_rule_id = text_col(a, res, row, 1, &is_ok);
	m->status = alerts_status_from_label(db_result_value(res, row, 2));
	m->severity = alerts_severity_from_label(db_result_value(res, row, 3));
	m->message = text_col(a, res, row, 4, &is_ok);
	m->current_value = strtod(db_result_value(res, row, 5), NULL);
	m->threshold = strtod(db_result_value(res, row, 6), NULL);
	m->triggered_at = ts_col(a, res, row, 7, &is_ok);
	m->acknowledged_at = ts_col(a, res, row, 8, &is_ok);
	m->acknowledged_by = text_col(a, res, row, 9, &is_ok);
	m->acknowledgment_note = text_col(a, res, row, 10, &is_ok);
	m->resolved_at = ts_col(a, res, row, 11, &is_ok);
	m->resolution_note = text_col(a, res, row, 12, &is_ok);
	m->created_at = ts_col(a, res, row, 15, &is_ok);
	m->updated_at = ts_col(a, res, row, 16, &is_ok);
	m->rule_name = text_col(a, res, row, 17, &is_ok);
	m->metric_name = text_col(a, res, row, 18, &is_ok);
	m->suppression_reason = alerts_suppression_from_label(db_result_value(res, row, 19));
	m->silence_id = text_col(a, res, row, 20, &is_ok);
	m->resolved_by = text_col(a, res, row, 21, &is_ok);
	m->escalation_level = (int32_t)svc_parse_i64(db_result_value(res, row, 22));
	m->escalated_at = ts_col(a, res, row, 23, &is_ok);
	m->sequence = svc_parse_i64(db_result_value(res, row, 25));
	if (!is_ok)
		return mon_error_set(err, MON_ENOMEM, "response larger than the call's memory cap");
	int rc = decode_json_columns(a, res, row, m, err);
	if (rc != 0)
		return rc;
	*out = m;
	return 0;
}

int alerts_read_tx(struct db_conn *conn, struct arena *a, const char *id, bool for_update, Monitoring__V1__Alert **out,
                   struct mon_error *err)
{
	static const char plain_sql[] = "SELECT " ALERTS_SELECT_LIST_SQL ALERTS_FROM_SQL " WHERE a.id = $1";
	static const char locking_sql[] =
	        "SELECT " ALERTS_SELECT_LIST_SQL ALERTS_FROM_SQL " WHERE a.id = $1 FOR UPDATE OF a";
	const char *params[] = {id};
	struct db_result *res = NULL;
	int rc = db_exec(conn, for_update ? locking_sql : plain_sql, 1, params, &res, err);
	if (rc != 0)
		return rc;
	if (db_result_rows(res) != 1)
		rc = mon_error_set(err, MON_ENOTFOUND, "alert_id: no alert \"%s\"", id);
	else
		rc = alerts_from_row(a, res, 0, out, err);
	db_result_free(res);
	return rc;
}

/* ---- the change log ---- */

/* Packs msg into the arena as a bytea hex literal ("\x..."). */
static int bytea_hex(struct arena *a, const ProtobufCMessage *msg, const char **out, struct mon_error *err)
{
	size_t n = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = arena_alloc(a, n ? n : 1);
	char *hex = arena_alloc(a, 2 * n + 3);
	if (buf == NULL || hex == NULL)
		return mon_error_set(err, MON_ENOMEM, "alert change larger than the call's memory cap");
	protobuf_c_message_pack(msg, buf);
	hex[0] = '\\';
	hex[1] = 'x';
	sodium_bin2hex(hex + 2, 2 * n + 1, buf, n);
	*out = hex;
	return 0;
}

static int append_event(struct db_conn *conn, struct arena *a, const Monitoring__V1__AlertChange *change,
                        const char *id, const char *rule_id, const char *status, const char *severity, int64_t *seq_out,
                        struct mon_error *err)
{
	static const char sql[] = "SELECT mon_alert_event_append($1, $2, $3, $4::alert_status, $5::alert_status,"
	                          " $6::severity_level, $7, $8::bytea)";
	const char *payload = NULL;
	int rc = bytea_hex(a, &change->base, &payload, err);
	if (rc != 0)
		return rc;
	const char *kind = alerts_change_kind_label(change->kind);
	const char *previous = alerts_status_label(change->previous_status);
	const char *actor = change->actor && change->actor[0] ? change->actor : NULL;
	if (kind == NULL || status == NULL || severity == NULL)
		return mon_error_set(err, MON_EINTERNAL, "alert change of alert \"%s\" has no kind, status or severity",
		                     id);
	const char *params[] = {id, rule_id, kind, status, previous, severity, actor, payload};
	struct db_result *res = NULL;
	rc = db_exec(conn, sql, 8, params, &res, err);
	if (rc != 0)
		return rc;
	if (db_result_rows(res) != 1)
		rc = mon_error_set(err, MON_EINTERNAL, "change log append returned no sequence");
	else if (seq_out != NULL)
		*seq_out = svc_parse_i64(db_result_value(res, 0, 0));
	db_result_free(res);
	return rc;
}

static int64_t wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int alerts_record_change_tx(struct db_conn *conn, struct arena *a, const char *id, Monitoring__V1__AlertChangeKind kind,
                            Monitoring__V1__AlertStatus previous, const char *actor, int64_t *seq_out,
                            Monitoring__V1__Alert **alert_out, struct mon_error *err)
{
	Monitoring__V1__Alert *alert = NULL;
	int rc = alerts_read_tx(conn, a, id, false, &alert, err);
	if (rc != 0)
		return rc;
	Monitoring__V1__AlertChange change = MONITORING__V1__ALERT_CHANGE__INIT;
	change.kind = kind;
	change.alert = alert;
	change.previous_status = previous;
	change.actor = (char *)(actor ? actor : "");
	change.changed_at = svc_ts_from_us(a, wall_us());
	if (change.changed_at == NULL)
		return mon_error_set(err, MON_ENOMEM, "alert change larger than the call's memory cap");
	alert->sequence = 0; /* the payload's sequence is the event's seq */
	int64_t seq = 0;
	rc = append_event(conn, a, &change, alert->id, alert->alert_rule_id, alerts_status_label(alert->status),
	                  alerts_severity_label(alert->severity), &seq, err);
	if (rc != 0)
		return rc;
	alert->sequence = seq;
	if (seq_out != NULL)
		*seq_out = seq;
	if (alert_out != NULL)
		*alert_out = alert;
	return 0;
}

int alerts_record_delete_tx(struct db_conn *conn, struct arena *a, const char *id, const char *rule_id,
                            Monitoring__V1__AlertStatus previous, Monitoring__V1__SeverityLevel severity,
                            const char *actor, struct mon_error *err)
{
	Monitoring__V1__Alert alert = MONITORING__V1__ALERT__INIT;
	alert.id = (char *)id;
	alert.alert_rule_id = (char *)rule_id;
	Monitoring__V1__AlertChange change = MONITORING__V1__ALERT_CHANGE__INIT;
	change.kind = MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_DELETED;
	change.alert = &alert;
	change.previous_status = previous;
	change.actor = (char *)(actor ? actor : "");
	change.changed_at = svc_ts_from_us(a, wall_us());
	if (change.changed_at == NULL)
		return mon_error_set(err, MON_ENOMEM, "alert change larger than the call's memory cap");
	/* tb_alert_event.status cannot be NULL: a deletion keeps the status the alert had. */
	return append_event(conn, a, &change, id, rule_id, alerts_status_label(previous),
	                    alerts_severity_label(severity), NULL, err);
}

/* ---- deliveries ---- */

const char alerts_delivery_select_sql[] = "SELECT " ALERTS_DELIVERY_LIST_SQL " FROM tb_notification_outbox o";

int alerts_delivery_from_row(struct arena *a, const struct db_result *res, int row,
                             Monitoring__V1__NotificationDelivery **out, struct mon_error *err)
{
	bool is_ok = true;
	Monitoring__V1__NotificationDelivery *d = arena_alloc(a, sizeof(*d));
	if (d == NULL)
		return mon_error_set(err, MON_ENOMEM, "response larger than the call's memory cap");
	monitoring__v1__notification_delivery__init(d);
	d->id = text_col(a, res, row, 0, &is_ok);
	d->channel = alerts_channel_from_label(db_result_value(res, row, 1));
	d->recipient = text_col(a, res, row, 2, &is_ok);
	d->status = alerts_delivery_status_from_label(db_result_value(res, row, 3));
	d->attempt_count = (int32_t)svc_parse_i64(db_result_value(res, row, 4));
	d->created_at = ts_col(a, res, row, 5, &is_ok);
	d->last_attempt_at = ts_col(a, res, row, 6, &is_ok);
	/* next_attempt_at only means something while a retry is due */
	if (d->status == MONITORING__V1__DELIVERY_STATUS__DELIVERY_STATUS_RETRYING ||
	    d->status == MONITORING__V1__DELIVERY_STATUS__DELIVERY_STATUS_PENDING)
		d->next_attempt_at = ts_col(a, res, row, 7, &is_ok);
	d->delivered_at = ts_col(a, res, row, 8, &is_ok);
	d->error_message = text_col(a, res, row, 9, &is_ok);
	if (!db_result_is_null(res, row, 10)) {
		d->response_status_code = arena_alloc(a, sizeof(*d->response_status_code));
		if (d->response_status_code == NULL)
			return mon_error_set(err, MON_ENOMEM, "response larger than the call's memory cap");
		google__protobuf__int32_value__init(d->response_status_code);
		d->response_status_code->value = (int32_t)svc_parse_i64(db_result_value(res, row, 10));
	}
	d->idempotency_key = text_col(a, res, row, 11, &is_ok);
	d->escalation_level = (int32_t)svc_parse_i64(db_result_value(res, row, 12));
	d->trigger = text_col(a, res, row, 13, &is_ok);
	if (!is_ok)
		return mon_error_set(err, MON_ENOMEM, "response larger than the call's memory cap");
	*out = d;
	return 0;
}

int alerts_deliveries_sync_tx(struct db_conn *conn, const char *alert_id, struct mon_error *err)
{
	/* Times as RFC 3339 in UTC whatever the session's TimeZone. */
#define JTIME(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
	/* The formatter cannot lay out literals mixed with macro calls. */
	/* clang-format off */
	static const char sql[] =
	        "UPDATE tb_alert SET notifications_sent = coalesce((SELECT jsonb_agg(d.j ORDER BY d.created_at, d.id)"
	        " FROM (SELECT o.id, o.created_at, jsonb_strip_nulls(jsonb_build_object('id', o.id, 'channel', o.channel,"
	        " 'recipient', o.recipient, 'status', o.status, 'attempt_count', o.attempt_count,"
	        " 'created_at', " JTIME("o.created_at") ", 'last_attempt_at', " JTIME("o.last_attempt_at") ","
	        " 'next_attempt_at', CASE WHEN o.status IN ('pending', 'retrying') THEN " JTIME("o.next_attempt_at") " END,"
	        " 'delivered_at', " JTIME("o.delivered_at") ", 'error_message', o.error_message,"
	        " 'response_status_code', o.response_status_code, 'idempotency_key', o.idempotency_key,"
	        " 'escalation_level', o.escalation_level, 'trigger', o.trigger)) AS j"
	        " FROM tb_notification_outbox o WHERE o.alert_id = $1"
	        " ORDER BY o.created_at DESC, o.id DESC LIMIT " ALERTS_SENT_SUMMARY_MAX_TEXT ") d), '[]'::jsonb)"
	        " WHERE id = $1";
	/* clang-format on */
#undef JTIME
	const char *params[] = {alert_id};
	return db_exec(conn, sql, 1, params, NULL, err);
}

/* The recipients of channel c in r, and their number. */
static char **channel_recipients(const Monitoring__V1__NotificationRecipients *r, Monitoring__V1__NotificationChannel c,
                                 size_t *n)
{
	*n = 0;
	if (r == NULL)
		return NULL;
	switch (c) {
	case MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_EMAIL: *n = r->n_emails; return r->emails;
	case MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_SLACK:
		*n = r->n_slack_channels;
		return r->slack_channels;
	case MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_SMS:
		*n = r->n_phone_numbers;
		return r->phone_numbers;
	case MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_WEBHOOK:
		*n = r->n_webhook_integration_ids;
		return r->webhook_integration_ids;
	case MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_PAGERDUTY:
		*n = r->n_pagerduty_integration_ids;
		return r->pagerduty_integration_ids;
	default: return NULL;
	}
}

static json_t *json_time(const Google__Protobuf__Timestamp *ts)
{
	if (ts == NULL)
		return json_null();
	time_t s = (time_t)ts->seconds;
	struct tm tm;
	char date[32], text[48];
	if (gmtime_r(&s, &tm) == NULL || strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		return json_null();
	snprintf(text, sizeof(text), "%s.%06dZ", date, (int)(ts->nanos / 1000));
	return json_string(text);
}

json_t *alerts_payload_json(const Monitoring__V1__Alert *alert, const char *trigger, int level)
{
	json_t *labels = json_object();
	for (size_t i = 0; labels != NULL && i < alert->n_labels; i++)
		json_object_set_new(labels, alert->labels[i]->key, json_string(alert->labels[i]->value));
	const char *status = alerts_status_label(alert->status);
	const char *severity = alerts_severity_label(alert->severity);
	json_t *j = json_pack(
	        "{s:s, s:{s:s, s:s, s:s}, s:s, s:s, s:s, s:f, s:f, s:o, s:o, s:s, s:i}", "id", alert->id, "rule", "id",
	        alert->alert_rule_id, "name", alert->rule_name ? alert->rule_name : "", "metric_name",
	        alert->metric_name ? alert->metric_name : "", "status", status ? status : "", "severity",
	        severity ? severity : "", "message", alert->message ? alert->message : "", "value",
	        isfinite(alert->current_value) ? alert->current_value : 0.0, "threshold",
	        isfinite(alert->threshold) ? alert->threshold : 0.0, "labels", labels ? labels : json_object(),
	        "triggered_at", json_time(alert->triggered_at), "trigger", trigger, "level", level);
	if (j != NULL && alert->resolved_at != NULL)
		json_object_set_new(j, "resolved_at", json_time(alert->resolved_at));
	return j;
}

/* The idempotency key of a delivery (store.h), at most IDEMPOTENCY_KEY_MAX bytes, in the arena. */
static char *idempotency_key(struct arena *a, const char *alert_id, const char *trigger, int level, const char *channel,
                             const char *recipient)
{
	char *key = arena_printf(a, "%s:%s:%d:%s:%s", alert_id, trigger, level, channel, recipient);
	if (key == NULL || strlen(key) <= IDEMPOTENCY_KEY_MAX)
		return key;
	unsigned char hash[16];
	char hex[33];
	crypto_generichash(hash, sizeof(hash), (const unsigned char *)recipient, strlen(recipient), NULL, 0);
	sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
	char *shorter = arena_printf(a, "%s:%s:%d:%s:h%s", alert_id, trigger, level, channel, hex);
	if (shorter == NULL || strlen(shorter) <= IDEMPOTENCY_KEY_MAX)
		return shorter;
	crypto_generichash(hash, sizeof(hash), (const unsigned char *)key, strlen(key), NULL, 0);
	sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
	return arena_printf(a, "k%s", hex);
}

int alerts_outbox_enqueue_tx(struct db_conn *conn, struct arena *a, const Monitoring__V1__Alert *alert,
                             const char *trigger, int level, const Monitoring__V1__NotificationChannel *channels,
                             size_t channel_n, const Monitoring__V1__NotificationRecipients *recipients,
                             Monitoring__V1__NotificationDelivery ***queued, size_t *queued_n, struct mon_error *err)
{
	static const char sql[] =
	        "INSERT INTO tb_notification_outbox AS o (id, alert_id, channel, recipient, trigger, escalation_level,"
	        " idempotency_key, payload) VALUES ($1, $2, $3::notification_channel, $4, $5, $6::integer, $7, "
	        "$8::jsonb)"
	        " ON CONFLICT (idempotency_key) DO NOTHING RETURNING " ALERTS_DELIVERY_LIST_SQL;
	int rc = 0;
	char *payload = NULL;
	size_t total = 0, done = 0;
	if (queued != NULL)
		*queued = NULL;
	if (queued_n != NULL)
		*queued_n = 0;
	for (size_t i = 0; i < channel_n; i++) {
		size_t n;
		(void)channel_recipients(recipients, channels[i], &n);
		total += n;
	}
	if (total == 0)
		return 0;
	Monitoring__V1__NotificationDelivery **list = arena_calloc(a, total, sizeof(*list));
	json_t *body = alerts_payload_json(alert, trigger, level);
	if (list == NULL || body == NULL || (payload = json_dumps(body, JSON_COMPACT)) == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory queueing deliveries");
		goto out;
	}
	char level_text[16];
	snprintf(level_text, sizeof(level_text), "%d", level);
	for (size_t i = 0; i < channel_n; i++) {
		const char *label = alerts_channel_label(channels[i]);
		bool is_repeat = false;
		for (size_t k = 0; k < i; k++)
			is_repeat = is_repeat || channels[k] == channels[i];
		size_t n;
		char **to = channel_recipients(recipients, channels[i], &n);
		if (label == NULL || is_repeat)
			continue;
		for (size_t k = 0; k < n; k++) {
			if (to[k] == NULL || to[k][0] == '\0')
				continue;
			char id[32];
			alerts_new_id("ntf-", id, sizeof(id));
			char *key = idempotency_key(a, alert->id, trigger, level, label, to[k]);
			if (key == NULL) {
				rc = mon_error_set(err, MON_ENOMEM, "out of memory queueing deliveries");
				goto out;
			}
			const char *params[] = {id, alert->id, label, to[k], trigger, level_text, key, payload};
			struct db_result *res = NULL;
			rc = db_exec(conn, sql, 8, params, &res, err);
			if (rc != 0)
				goto out;
			if (db_result_rows(res) == 1 && done < total)
				rc = alerts_delivery_from_row(a, res, 0, &list[done++], err);
			db_result_free(res);
			if (rc != 0)
				goto out;
		}
	}
	if (done > 0 && (rc = alerts_deliveries_sync_tx(conn, alert->id, err)) != 0)
		goto out;
	if (queued != NULL)
		*queued = list;
	if (queued_n != NULL)
		*queued_n = done;
out:
	free(payload);
	json_decref(body);
	return rc;
}

/* ---- recipients ---- */

static int strings_from_json(struct arena *a, const json_t *arr, char ***out, size_t *n_out)
{
	size_t n = json_is_array(arr) ? json_array_size(arr) : 0, k = 0;
	*out = NULL;
	*n_out = 0;
	if (n == 0)
		return 0;
	char **list = arena_calloc(a, n, sizeof(*list));
	if (list == NULL)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(arr, i));
		if (s == NULL)
			continue;
		if ((list[k++] = arena_strdup(a, s)) == NULL)
			return -1;
	}
	*out = list;
	*n_out = k;
	return 0;
}

int alerts_recipients_from_text(struct arena *a, const char *text, Monitoring__V1__NotificationRecipients **out,
                                struct mon_error *err)
{
	Monitoring__V1__NotificationRecipients *r = arena_alloc(a, sizeof(*r));
	if (r == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	monitoring__v1__notification_recipients__init(r);
	json_t *j = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
	int bad = 0;
	if (json_is_object(j)) {
		bad |= strings_from_json(a, json_object_get(j, "emails"), &r->emails, &r->n_emails);
		bad |= strings_from_json(a, json_object_get(j, "slack_channels"), &r->slack_channels,
		                         &r->n_slack_channels);
		bad |= strings_from_json(a, json_object_get(j, "phone_numbers"), &r->phone_numbers,
		                         &r->n_phone_numbers);
		bad |= strings_from_json(a, json_object_get(j, "webhook_integration_ids"), &r->webhook_integration_ids,
		                         &r->n_webhook_integration_ids);
		bad |= strings_from_json(a, json_object_get(j, "pagerduty_integration_ids"),
		                         &r->pagerduty_integration_ids, &r->n_pagerduty_integration_ids);
		bad |= strings_from_json(a, json_object_get(j, "user_ids"), &r->user_ids, &r->n_user_ids);
		bad |= strings_from_json(a, json_object_get(j, "team_ids"), &r->team_ids, &r->n_team_ids);
	}
	json_decref(j);
	if (bad)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	*out = r;
	return 0;
}

int alerts_channels_from_text(struct arena *a, const char *text, Monitoring__V1__NotificationChannel **out,
                              size_t *n_out, struct mon_error *err)
{
	/* PostgreSQL's text form of text[]: {email,slack,"in-app"} */
	size_t cap = 1;
	for (const char *p = text ? text : ""; *p; p++)
		cap += *p == ',';
	*out = arena_calloc(a, cap, sizeof(**out));
	*n_out = 0;
	if (*out == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	const char *p = text ? text : "";
	if (*p == '{')
		p++;
	while (*p != '\0' && *p != '}') {
		char item[32];
		size_t len = 0;
		bool is_quoted = *p == '"';
		if (is_quoted)
			p++;
		while (*p != '\0' && (is_quoted ? *p != '"' : (*p != ',' && *p != '}'))) {
			if (len + 1 < sizeof(item))
				item[len++] = *p;
			p++;
		}
		if (is_quoted && *p == '"')
			p++;
		item[len] = '\0';
		Monitoring__V1__NotificationChannel c = alerts_channel_from_label(item);
		if (c != 0 && *n_out < cap)
			(*out)[(*n_out)++] = c;
		if (*p == ',')
			p++;
	}
	return 0;
}

/* ---- ids ---- */

void alerts_new_id(const char *prefix, char *out, size_t out_len)
{
	unsigned char rnd[8];
	char hex[17];
	randombytes_buf(rnd, sizeof(rnd));
	sodium_bin2hex(hex, sizeof(hex), rnd, sizeof(rnd));
	snprintf(out, out_len, "%s%s", prefix ? prefix : "alt-", hex);
}
