/*
 * Alert rules as stored and as shown (alerts/rule.h): the row of
 * tb_alert_rule read into an AlertRule, the JSON shapes of its scope and
 * notification_recipients columns, and the validation of a whole rule.
 *
 * The scope column holds what selects the rule's value, under the proto's
 * field names: {"endpoints": [...], "methods": [...], "status_codes": [...],
 * "tags": {...}, "group_by": [...], "statistic": "p95", "aggregation":
 * "avg", "text_match": {"field": "endpoint", "substring": "/v2/"}}; empty
 * lists and UNSPECIFIED values are left out.
 */
#include "alerts/rule.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alerts/store.h"
#include "common/parse.h"
#include "common/text.h"

#define JSON_TEXT_MAX (1024 * 1024)
#define EMAIL_MAX 254
#define SLACK_CHANNEL_MAX 80
#define TAG_KEY_MAX 100   /* bytes, as a metric point's tag key */
#define TAG_VALUE_MAX 500 /* bytes, as a metric point's tag value */
#define ENDPOINT_MAX 500  /* characters, as a metric point's endpoint */
#define METHOD_MAX 10     /* characters, as a metric point's method */
#define METRIC_NAME_MAX 100

static const char *const statistic_labels[] = {NULL,  "p50",           "p95",         "p99",        "mean",      "min",
                                               "max", "request_count", "error_count", "error_rate", "throughput"};
static const char *const aggregation_labels[] = {NULL, "avg", "sum", "min", "max", "count", "last"};

#define COUNT_OF(x) (sizeof(x) / sizeof((x)[0]))

const char *alerts_statistic_label(Monitoring__V1__MetricStatistic s)
{
	return (size_t)s < COUNT_OF(statistic_labels) ? statistic_labels[s] : NULL;
}

const char *alerts_aggregation_label(Monitoring__V1__Aggregation g)
{
	return (size_t)g < COUNT_OF(aggregation_labels) ? aggregation_labels[g] : NULL;
}

static int label_index(const char *const *labels, size_t n, const char *label)
{
	for (size_t i = 1; label != NULL && i < n; i++)
		if (strcmp(labels[i], label) == 0)
			return (int)i;
	return 0;
}

/* ---- pure checks ---- */

static bool is_id_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
	       c == '-';
}

int alerts_check_id(const char *field, const char *id, struct mon_error *err)
{
	size_t n = id ? strlen(id) : 0;
	if (n == 0)
		return mon_error_set(err, MON_EINVAL, "%s: must be set", field);
	if (n > ALERTS_ID_MAX)
		return mon_error_set(err, MON_EINVAL, "%s: at most %d characters", field, ALERTS_ID_MAX);
	for (size_t i = 0; i < n; i++)
		if (!is_id_char(id[i]))
			return mon_error_set(err, MON_EINVAL, "%s: only letters, digits, '.', '_' and '-'", field);
	return 0;
}

int alerts_check_text(const char *field, const char *text, size_t min_chars, size_t max_chars, struct mon_error *err)
{
	return svc_check_text(field, text, min_chars, max_chars, 0, SVC_TEXT_NO_CONTROLS, err);
}

static int check_metric_name(const char *field, const char *name, struct mon_error *err)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0)
		return mon_error_set(err, MON_EINVAL, "%s: must be set", field);
	if (n > METRIC_NAME_MAX)
		return mon_error_set(err, MON_EINVAL, "%s: at most %d characters", field, METRIC_NAME_MAX);
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '.' || c == ':' || c == '-'))
			return mon_error_set(err, MON_EINVAL, "%s: only letters, digits and _ . : - are allowed",
			                     field);
	}
	return 0;
}

/* A label of group_by or text_match.field: endpoint, method, status_code or tags.<key>. */
static int check_label(const char *field, const char *label, struct mon_error *err)
{
	static const char *const plain[] = {"endpoint", "method", "status_code"};
	const char *l = label ? label : "";
	for (size_t i = 0; i < COUNT_OF(plain); i++)
		if (strcmp(l, plain[i]) == 0)
			return 0;
	if (strncmp(l, "tags.", 5) != 0)
		return mon_error_set(err, MON_EINVAL, "%s: must be endpoint, method, status_code or tags.<key>", field);
	return svc_check_text(field, l + 5, 1, TAG_KEY_MAX, TAG_KEY_MAX, SVC_TEXT_NO_CONTROLS, err);
}

static int check_tags(const char *field, Monitoring__V1__AlertRule__TagsEntry *const *tags, size_t n,
                      struct mon_error *err)
{
	char name[400];
	if (n > ALERTS_RULE_TAGS_MAX)
		return mon_error_set(err, MON_EINVAL, "%s: at most %d tags", field, ALERTS_RULE_TAGS_MAX);
	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "%.200s.key", field);
		int rc = svc_check_text(name, tags[i]->key, 1, TAG_KEY_MAX, TAG_KEY_MAX, SVC_TEXT_NO_CONTROLS, err);
		if (rc != 0)
			return rc;
		snprintf(name, sizeof(name), "%.200s[%.100s]", field, tags[i]->key);
		rc = svc_check_text(name, tags[i]->value, 0, TAG_VALUE_MAX, TAG_VALUE_MAX, SVC_TEXT_NO_CONTROLS, err);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int check_scope_tags(const char *field, Monitoring__V1__AlertScope__TagsEntry *const *tags, size_t n,
                            struct mon_error *err)
{
	char name[400];
	if (n > ALERTS_RULE_TAGS_MAX)
		return mon_error_set(err, MON_EINVAL, "%s: at most %d tags", field, ALERTS_RULE_TAGS_MAX);
	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "%.200s.key", field);
		int rc = svc_check_text(name, tags[i]->key, 1, TAG_KEY_MAX, TAG_KEY_MAX, SVC_TEXT_NO_CONTROLS, err);
		if (rc != 0)
			return rc;
		snprintf(name, sizeof(name), "%.200s[%.100s]", field, tags[i]->key);
		rc = svc_check_text(name, tags[i]->value, 0, TAG_VALUE_MAX, TAG_VALUE_MAX, SVC_TEXT_NO_CONTROLS, err);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int check_scope(const char *prefix, const Monitoring__V1__AlertScope *s, struct mon_error *err)
{
	char field[200];
	int rc = 0;
	if (s == NULL)
		return 0;
	if (s->n_endpoints > ALERTS_RULE_SCOPE_VALUES_MAX)
		return mon_error_set(err, MON_EINVAL, "%sscope.endpoints: at most %d entries", prefix,
		                     ALERTS_RULE_SCOPE_VALUES_MAX);
	for (size_t i = 0; rc == 0 && i < s->n_endpoints; i++) {
		snprintf(field, sizeof(field), "%sscope.endpoints[%zu]", prefix, i);
		rc = svc_check_text(field, s->endpoints[i], 1, ENDPOINT_MAX, 0, SVC_TEXT_NO_CONTROLS, err);
	}
	if (rc == 0 && s->n_methods > ALERTS_RULE_SCOPE_VALUES_MAX)
		return mon_error_set(err, MON_EINVAL, "%sscope.methods: at most %d entries", prefix,
		                     ALERTS_RULE_SCOPE_VALUES_MAX);
	for (size_t i = 0; rc == 0 && i < s->n_methods; i++) {
		snprintf(field, sizeof(field), "%sscope.methods[%zu]", prefix, i);
		rc = svc_check_text(field, s->methods[i], 1, METHOD_MAX, 0, SVC_TEXT_NO_CONTROLS, err);
	}
	if (rc == 0 && s->n_status_codes > ALERTS_RULE_SCOPE_VALUES_MAX)
		return mon_error_set(err, MON_EINVAL, "%sscope.status_codes: at most %d entries", prefix,
		                     ALERTS_RULE_SCOPE_VALUES_MAX);
	for (size_t i = 0; rc == 0 && i < s->n_status_codes; i++)
		if (s->status_codes[i] < 100 || s->status_codes[i] > 599)
			rc = mon_error_set(err, MON_EINVAL, "%sscope.status_codes[%zu]: must be 100-599", prefix, i);
	if (rc == 0) {
		snprintf(field, sizeof(field), "%sscope.tags", prefix);
		rc = check_scope_tags(field, s->tags, s->n_tags, err);
	}
	if (rc == 0 && s->n_group_by > ALERTS_RULE_GROUP_BY_MAX)
		return mon_error_set(err, MON_EINVAL, "%sscope.group_by: at most %d keys", prefix,
		                     ALERTS_RULE_GROUP_BY_MAX);
	for (size_t i = 0; rc == 0 && i < s->n_group_by; i++) {
		snprintf(field, sizeof(field), "%sscope.group_by[%zu]", prefix, i);
		rc = check_label(field, s->group_by[i], err);
		for (size_t k = 0; rc == 0 && k < i; k++)
			if (strcmp(s->group_by[i], s->group_by[k]) == 0)
				rc = mon_error_set(err, MON_EINVAL, "%s: \"%.100s\" listed twice", field,
				                   s->group_by[i]);
	}
	return rc;
}

static bool is_email(const char *s)
{
	const char *at = strchr(s, '@');
	if (at == NULL || at == s || at[1] == '\0' || strchr(at + 1, '@') != NULL || strchr(at + 1, '.') == NULL)
		return false;
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f)
			return false;
	return true;
}

static bool is_e164(const char *s)
{
	size_t n = strlen(s);
	if (n < 8 || n > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9')
		return false;
	for (size_t i = 1; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

enum list_kind { LIST_EMAIL, LIST_SLACK, LIST_PHONE, LIST_ID };

static int check_list(const char *prefix, const char *name, char *const *items, size_t n, enum list_kind kind,
                      struct mon_error *err)
{
	char field[200];
	if (n > ALERTS_RECIPIENTS_MAX)
		return mon_error_set(err, MON_EINVAL, "%s.%s: at most %d entries", prefix, name, ALERTS_RECIPIENTS_MAX);
	for (size_t i = 0; i < n; i++) {
		const char *v = items[i] ? items[i] : "";
		int rc = 0;
		snprintf(field, sizeof(field), "%s.%s[%zu]", prefix, name, i);
		switch (kind) {
		case LIST_EMAIL:
			rc = svc_check_text(field, v, 3, EMAIL_MAX, EMAIL_MAX, SVC_TEXT_NO_CONTROLS, err);
			if (rc == 0 && !is_email(v))
				rc = mon_error_set(err, MON_EINVAL, "%s: not an e-mail address", field);
			break;
		case LIST_SLACK:
			rc = svc_check_text(field, v, 1, SLACK_CHANNEL_MAX, 0, SVC_TEXT_NO_CONTROLS, err);
			if (rc == 0 && strpbrk(v, " \t") != NULL)
				rc = mon_error_set(err, MON_EINVAL, "%s: must not contain spaces", field);
			break;
		case LIST_PHONE:
			if (!is_e164(v))
				rc = mon_error_set(err, MON_EINVAL, "%s: must be an E.164 number (+ and 7-15 digits)",
				                   field);
			break;
		case LIST_ID: rc = alerts_check_id(field, v, err); break;
		}
		if (rc != 0)
			return rc;
		for (size_t k = 0; k < i; k++)
			if (items[k] != NULL && strcmp(items[k], v) == 0)
				return mon_error_set(err, MON_EINVAL, "%s: listed twice", field);
	}
	return 0;
}

int alerts_recipients_check(const char *prefix, const char *channels_field,
                            const Monitoring__V1__NotificationChannel *channels, size_t channel_n,
                            const char *recipients_field, const Monitoring__V1__NotificationRecipients *recipients,
                            struct mon_error *err)
{
	static const Monitoring__V1__NotificationRecipients none = MONITORING__V1__NOTIFICATION_RECIPIENTS__INIT;
	const Monitoring__V1__NotificationRecipients *r = recipients ? recipients : &none;
	char rp[160];
	snprintf(rp, sizeof(rp), "%s%s", prefix, recipients_field);
	int rc = check_list(rp, "emails", r->emails, r->n_emails, LIST_EMAIL, err);
	if (rc == 0)
		rc = check_list(rp, "slack_channels", r->slack_channels, r->n_slack_channels, LIST_SLACK, err);
	if (rc == 0)
		rc = check_list(rp, "phone_numbers", r->phone_numbers, r->n_phone_numbers, LIST_PHONE, err);
	if (rc == 0)
		rc = check_list(rp, "webhook_integration_ids", r->webhook_integration_ids, r->n_webhook_integration_ids,
		                LIST_ID, err);
	if (rc == 0)
		rc = check_list(rp, "pagerduty_integration_ids", r->pagerduty_integration_ids,
		                r->n_pagerduty_integration_ids, LIST_ID, err);
	if (rc == 0)
		rc = check_list(rp, "user_ids", r->user_ids, r->n_user_ids, LIST_ID, err);
	if (rc == 0)
		rc = check_list(rp, "team_ids", r->team_ids, r->n_team_ids, LIST_ID, err);
	if (rc != 0)
		return rc;
	if (channel_n > 6)
		return mon_error_set(err, MON_EINVAL, "%s%s: at most 6 channels", prefix, channels_field);
	for (size_t i = 0; i < channel_n; i++) {
		Monitoring__V1__NotificationChannel c = channels[i];
		const char *need = NULL;
		bool has = false;
		if (c == MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_UNSPECIFIED || (int)c < 0 ||
		    (int)c > 6)
			return mon_error_set(err, MON_EINVAL, "%s%s[%zu]: must be a known channel, not UNSPECIFIED",
			                     prefix, channels_field, i);
		for (size_t k = 0; k < i; k++)
			if (channels[k] == c)
				return mon_error_set(err, MON_EINVAL, "%s%s[%zu]: listed twice", prefix, channels_field,
				                     i);
		switch (c) {
		case MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_EMAIL:
			has = r->n_emails > 0;
			need = "emails";
			break;
		case MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_SLACK:
			has = r->n_slack_channels > 0;
			need = "slack_channels";
			break;
		case MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_SMS:
			has = r->n_phone_numbers > 0;
			need = "phone_numbers";
			break;
		case MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_WEBHOOK:
			has = r->n_webhook_integration_ids > 0;
			need = "webhook_integration_ids";
			break;
		case MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_PAGERDUTY:
			has = r->n_pagerduty_integration_ids > 0;
			need = "pagerduty_integration_ids";
			break;
		default:
			has = r->n_user_ids > 0 || r->n_team_ids > 0;
			need = "user_ids or team_ids";
			break;
		}
		if (!has)
			return mon_error_set(err, MON_EINVAL, "%s.%s: required for channel %s (%s%s[%zu])", rp, need,
			                     alerts_channel_label(c), prefix, channels_field, i);
	}
	return 0;
}

static bool is_text_operator(Monitoring__V1__ComparisonOperator op)
{
	return op == MONITORING__V1__COMPARISON_OPERATOR__COMPARISON_OPERATOR_CONTAINS ||
	       op == MONITORING__V1__COMPARISON_OPERATOR__COMPARISON_OPERATOR_NOT_CONTAINS;
}

int alerts_rule_check(const char *prefix, const Monitoring__V1__AlertRule *r, struct mon_error *err)
{
	char field[200];
	int rc;
	/* "rule" and "rule." both give "rule.name: ..." */
	char p[64];
	size_t prefix_n = prefix ? strlen(prefix) : 0;
	snprintf(p, sizeof(p), "%.60s%s", prefix ? prefix : "", prefix_n > 0 && prefix[prefix_n - 1] != '.' ? "." : "");
	if (r == NULL)
		return mon_error_set(err, MON_EINVAL, "rule: must be set");
	if (r->id != NULL && r->id[0] != '\0') {
		snprintf(field, sizeof(field), "%sid", p);
		if ((rc = alerts_check_id(field, r->id, err)) != 0)
			return rc;
	}
	snprintf(field, sizeof(field), "%sname", p);
	if ((rc = svc_check_text(field, r->name, 1, ALERTS_RULE_NAME_MAX_CHARS, 0, SVC_TEXT_NO_CONTROLS, err)) != 0)
		return rc;
	snprintf(field, sizeof(field), "%sdescription", p);
	if ((rc = svc_check_text(field, r->description, 0, ALERTS_RULE_DESCRIPTION_MAX_CHARS, 0, SVC_TEXT_NO_CONTROLS,
	                         err)) != 0)
		return rc;
	if (alerts_severity_label(r->severity) == NULL)
		return mon_error_set(err, MON_EINVAL, "%sseverity: must be a known severity", p);
	snprintf(field, sizeof(field), "%smetric_name", p);
	if ((rc = check_metric_name(field, r->metric_name, err)) != 0)
		return rc;
	if (r->statistic == MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_UNSPECIFIED)
		return mon_error_set(err, MON_EINVAL, "%sstatistic: must be set (P50, P95, ERROR_RATE ...)", p);
	if (alerts_statistic_label(r->statistic) == NULL)
		return mon_error_set(err, MON_EINVAL, "%sstatistic: unknown value %d", p, (int)r->statistic);
	if ((int)r->aggregation < 0 || (size_t)r->aggregation >= COUNT_OF(aggregation_labels))
		return mon_error_set(err, MON_EINVAL, "%saggregation: unknown value %d", p, (int)r->aggregation);
	if (r->comparison_operator == MONITORING__V1__COMPARISON_OPERATOR__COMPARISON_OPERATOR_UNSPECIFIED)
		return mon_error_set(err, MON_EINVAL, "%scomparison_operator: must be set, not UNSPECIFIED", p);
	if (alerts_operator_label(r->comparison_operator) == NULL)
		return mon_error_set(err, MON_EINVAL, "%scomparison_operator: unknown value %d", p,
		                     (int)r->comparison_operator);
	if (!isfinite(r->threshold))
		return mon_error_set(err, MON_EINVAL, "%sthreshold: must be finite", p);
	if (fabs(r->threshold) > ALERTS_RULE_THRESHOLD_MAX)
		return mon_error_set(err, MON_EINVAL, "%sthreshold: must be within +-99999999999.9999", p);
	if (is_text_operator(r->comparison_operator)) {
		const Monitoring__V1__TextMatch *t = r->text_match;
		if (r->threshold < 0 || r->threshold != floor(r->threshold))
			return mon_error_set(err, MON_EINVAL,
			                     "%sthreshold: a whole number of points >= 0 for CONTAINS and NOT_CONTAINS",
			                     p);
		if (r->aggregation != MONITORING__V1__AGGREGATION__AGGREGATION_UNSPECIFIED &&
		    r->aggregation != MONITORING__V1__AGGREGATION__AGGREGATION_COUNT)
			return mon_error_set(
			        err, MON_EINVAL,
			        "%saggregation: CONTAINS and NOT_CONTAINS count points (UNSPECIFIED or COUNT)", p);
		if (t == NULL)
			return mon_error_set(err, MON_EINVAL, "%stext_match: required for CONTAINS and NOT_CONTAINS",
			                     p);
		snprintf(field, sizeof(field), "%stext_match.field", p);
		if ((rc = check_label(field, t->field, err)) != 0)
			return rc;
		snprintf(field, sizeof(field), "%stext_match.substring", p);
		if ((rc = svc_check_text(field, t->substring, 1, ALERTS_RULE_SUBSTRING_MAX_CHARS, 0,
		                         SVC_TEXT_NO_CONTROLS, err)) != 0)
			return rc;
	} else if (r->text_match != NULL) {
		return mon_error_set(err, MON_EINVAL, "%stext_match: only for CONTAINS and NOT_CONTAINS", p);
	}
	if (r->duration_minutes != NULL &&
	    (r->duration_minutes->value < 0 || r->duration_minutes->value > ALERTS_RULE_DURATION_MAX_MIN))
		return mon_error_set(err, MON_EINVAL, "%sduration_minutes: must be 0-%d", p,
		                     ALERTS_RULE_DURATION_MAX_MIN);
	if (r->evaluation_interval < ALERTS_RULE_INTERVAL_MIN_S || r->evaluation_interval > ALERTS_RULE_INTERVAL_MAX_S)
		return mon_error_set(err, MON_EINVAL, "%sevaluation_interval: must be %d-%d seconds", p,
		                     ALERTS_RULE_INTERVAL_MIN_S, ALERTS_RULE_INTERVAL_MAX_S);
	if ((rc = check_scope(p, r->scope, err)) != 0)
		return rc;
	if ((rc = alerts_recipients_check(p, "notification_channels", r->notification_channels,
	                                  r->n_notification_channels, "notification_recipients",
	                                  r->notification_recipients, err)) != 0)
		return rc;
	snprintf(field, sizeof(field), "%snotification_template", p);
	if ((rc = svc_check_text(field, r->notification_template, 0, ALERTS_RULE_TEMPLATE_MAX_CHARS, 0,
	                         SVC_TEXT_NO_CONTROLS, err)) != 0)
		return rc;
	if (r->suppress_duration != NULL &&
	    (r->suppress_duration->value < 0 || r->suppress_duration->value > ALERTS_RULE_SUPPRESS_MAX_S))
		return mon_error_set(err, MON_EINVAL, "%ssuppress_duration: must be 0-%d seconds", p,
		                     ALERTS_RULE_SUPPRESS_MAX_S);
	if (r->max_alerts_per_hour != NULL &&
	    (r->max_alerts_per_hour->value < 1 || r->max_alerts_per_hour->value > ALERTS_RULE_HOURLY_CAP_MAX))
		return mon_error_set(err, MON_EINVAL, "%smax_alerts_per_hour: must be 1-%d", p,
		                     ALERTS_RULE_HOURLY_CAP_MAX);
	bool has_policy = r->escalation_policy_id != NULL && r->escalation_policy_id[0] != '\0';
	if (has_policy) {
		snprintf(field, sizeof(field), "%sescalation_policy_id", p);
		if ((rc = alerts_check_id(field, r->escalation_policy_id, err)) != 0)
			return rc;
	}
	if (r->escalation_delay != NULL) {
		if (!has_policy)
			return mon_error_set(err, MON_EINVAL, "%sescalation_delay: needs escalation_policy_id", p);
		if (r->escalation_delay->value < 1 || r->escalation_delay->value > ALERTS_RULE_ESCALATION_DELAY_MAX_MIN)
			return mon_error_set(err, MON_EINVAL, "%sescalation_delay: must be 1-%d minutes", p,
			                     ALERTS_RULE_ESCALATION_DELAY_MAX_MIN);
	}
	snprintf(field, sizeof(field), "%stags", p);
	return check_tags(field, r->tags, r->n_tags, err);
}

/* ---- JSON ---- */

static json_t *string_array(char *const *items, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a != NULL && i < n; i++)
		if (json_array_append_new(a, json_string(items[i] ? items[i] : "")) != 0) {
			json_decref(a);
			return NULL;
		}
	return a;
}

/* Sets key to an array of items unless n is 0; false when out of memory. */
static bool set_list(json_t *obj, const char *key, char *const *items, size_t n)
{
	return n == 0 || json_object_set_new(obj, key, string_array(items, n)) == 0;
}

json_t *alerts_recipients_to_json(const Monitoring__V1__NotificationRecipients *r)
{
	json_t *o = json_object();
	if (o == NULL || r == NULL)
		return o;
	if (set_list(o, "emails", r->emails, r->n_emails) &&
	    set_list(o, "slack_channels", r->slack_channels, r->n_slack_channels) &&
	    set_list(o, "phone_numbers", r->phone_numbers, r->n_phone_numbers) &&
	    set_list(o, "webhook_integration_ids", r->webhook_integration_ids, r->n_webhook_integration_ids) &&
	    set_list(o, "pagerduty_integration_ids", r->pagerduty_integration_ids, r->n_pagerduty_integration_ids) &&
	    set_list(o, "user_ids", r->user_ids, r->n_user_ids) && set_list(o, "team_ids", r->team_ids, r->n_team_ids))
		return o;
	json_decref(o);
	return NULL;
}

/* The strings of array key of obj (absent or not an array: none), in a. */
static int read_list(struct arena *a, const json_t *obj, const char *key, char ***out, size_t *n)
{
	const json_t *arr = json_object_get(obj, key);
	*out = NULL;
	*n = 0;
	if (!json_is_array(arr) || json_array_size(arr) == 0)
		return 0;
	*out = arena_calloc(a, json_array_size(arr), sizeof(**out));
	if (*out == NULL)
		return MON_ENOMEM;
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const json_t *v = json_array_get(arr, i);
		if (!json_is_string(v))
			continue;
		if (((*out)[*n] = arena_strdup(a, json_string_value(v))) == NULL)
			return MON_ENOMEM;
		(*n)++;
	}
	return 0;
}

int alerts_recipients_from_json(struct arena *a, const json_t *j, Monitoring__V1__NotificationRecipients **out,
                                struct mon_error *err)
{
	Monitoring__V1__NotificationRecipients *r = arena_alloc(a, sizeof(*r));
	if (r == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	monitoring__v1__notification_recipients__init(r);
	int rc = 0;
	if (json_is_object(j)) {
		rc = read_list(a, j, "emails", &r->emails, &r->n_emails);
		if (rc == 0)
			rc = read_list(a, j, "slack_channels", &r->slack_channels, &r->n_slack_channels);
		if (rc == 0)
			rc = read_list(a, j, "phone_numbers", &r->phone_numbers, &r->n_phone_numbers);
		if (rc == 0)
			rc = read_list(a, j, "webhook_integration_ids", &r->webhook_integration_ids,
			               &r->n_webhook_integration_ids);
		if (rc == 0)
			rc = read_list(a, j, "pagerduty_integration_ids", &r->pagerduty_integration_ids,
			               &r->n_pagerduty_integration_ids);
		if (rc == 0)
			rc = read_list(a, j, "user_ids", &r->user_ids, &r->n_user_ids);
		if (rc == 0)
			rc = read_list(a, j, "team_ids", &r->team_ids, &r->n_team_ids);
	}
	if (rc != 0)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	*out = r;
	return 0;
}

json_t *alerts_rule_scope_json(const Monitoring__V1__AlertRule *r)
{
	json_t *o = json_object();
	const Monitoring__V1__AlertScope *s = r->scope;
	bool is_ok = o != NULL;
	if (is_ok && s != NULL) {
		is_ok = set_list(o, "endpoints", s->endpoints, s->n_endpoints) &&
		        set_list(o, "methods", s->methods, s->n_methods) &&
		        set_list(o, "group_by", s->group_by, s->n_group_by);
		if (is_ok && s->n_status_codes > 0) {
			json_t *codes = json_array();
			for (size_t i = 0; codes != NULL && i < s->n_status_codes; i++)
				if (json_array_append_new(codes, json_integer(s->status_codes[i])) != 0) {
					json_decref(codes);
					codes = NULL;
				}
			is_ok = json_object_set_new(o, "status_codes", codes) == 0;
		}
		if (is_ok && s->n_tags > 0) {
			json_t *tags = json_object();
			for (size_t i = 0; tags != NULL && i < s->n_tags; i++)
				if (json_object_set_new(tags, s->tags[i]->key, json_string(s->tags[i]->value)) != 0) {
					json_decref(tags);
					tags = NULL;
				}
			is_ok = json_object_set_new(o, "tags", tags) == 0;
		}
	}
	const char *stat = alerts_statistic_label(r->statistic), *agg = alerts_aggregation_label(r->aggregation);
	if (is_ok && stat != NULL)
		is_ok = json_object_set_new(o, "statistic", json_string(stat)) == 0;
	if (is_ok && agg != NULL)
		is_ok = json_object_set_new(o, "aggregation", json_string(agg)) == 0;
	if (is_ok && r->text_match != NULL)
		is_ok = json_object_set_new(o, "text_match",
		                            json_pack("{s:s, s:s}", "field",
		                                      r->text_match->field ? r->text_match->field : "", "substring",
		                                      r->text_match->substring ? r->text_match->substring : "")) == 0;
	if (!is_ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *tags_json(Monitoring__V1__AlertRule__TagsEntry *const *tags, size_t n)
{
	json_t *o = json_object();
	for (size_t i = 0; o != NULL && i < n; i++)
		if (json_object_set_new(o, tags[i]->key, json_string(tags[i]->value)) != 0) {
			json_decref(o);
			return NULL;
		}
	return o;
}

static json_t *wrapped_int(const Google__Protobuf__Int32Value *v)
{
	return v ? json_integer(v->value) : json_null();
}

static json_t *time_json(const Google__Protobuf__Timestamp *ts)
{
	if (ts == NULL)
		return json_null();
	return json_integer((json_int_t)ts->seconds * 1000 + ts->nanos / 1000000);
}

json_t *alerts_rule_json(const Monitoring__V1__AlertRule *r)
{
	json_t *channels = json_array();
	for (size_t i = 0; channels != NULL && i < r->n_notification_channels; i++) {
		const char *l = alerts_channel_label(r->notification_channels[i]);
		if (json_array_append_new(channels, json_string(l ? l : "")) != 0) {
			json_decref(channels);
			channels = NULL;
		}
	}
	json_t *scope = alerts_rule_scope_json(r), *recipients = alerts_recipients_to_json(r->notification_recipients),
	       *tags = tags_json(r->tags, r->n_tags);
	if (channels == NULL || scope == NULL || recipients == NULL || tags == NULL) {
		json_decref(channels);
		json_decref(scope);
		json_decref(recipients);
		json_decref(tags);
		return NULL;
	}
	const char *sev = alerts_severity_label(r->severity), *st = alerts_rule_status_label(r->status),
	           *op = alerts_operator_label(r->comparison_operator);
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:f, s:o, s:i, s:o, s:o, s:o, s:s, s:o, s:o, s:o, s:s, "
	                 "s:o, s:o, s:s, s:o, s:o, s:o}",
	                 "id", r->id ? r->id : "", "name", r->name ? r->name : "", "description",
	                 r->description ? r->description : "", "severity", sev ? sev : "", "status", st ? st : "",
	                 "metric_name", r->metric_name ? r->metric_name : "", "comparison_operator", op ? op : "",
	                 "threshold", r->threshold, "duration_minutes", wrapped_int(r->duration_minutes),
	                 "evaluation_interval", (int)r->evaluation_interval, "scope", scope, "notification_channels",
	                 channels, "notification_recipients", recipients, "notification_template",
	                 r->notification_template ? r->notification_template : "", "auto_resolve",
	                 r->auto_resolve ? json_boolean(r->auto_resolve->value) : json_null(), "suppress_duration",
	                 wrapped_int(r->suppress_duration), "max_alerts_per_hour", wrapped_int(r->max_alerts_per_hour),
	                 "escalation_policy_id", r->escalation_policy_id ? r->escalation_policy_id : "",
	                 "escalation_delay", wrapped_int(r->escalation_delay), "tags", tags, "created_by",
	                 r->created_by ? r->created_by : "", "created_at_ms", time_json(r->created_at), "updated_at_ms",
	                 time_json(r->updated_at), "last_triggered_ms", time_json(r->last_triggered));
}

/* ---- the row ---- */

const char alerts_rule_select_sql[] =
        "SELECT r.id, r.name, coalesce(r.description, '') AS description, r.severity::text AS severity,"
        " r.status::text AS status, r.metric_name, r.comparison_operator::text AS comparison_operator,"
        " r.threshold::text AS threshold, r.duration_minutes, r.evaluation_interval,"
        " coalesce(r.scope, '{}')::text AS scope,"
        " array_to_json(r.notification_channels)::text AS notification_channels,"
        " r.notification_recipients::text AS notification_recipients,"
        " coalesce(r.notification_template, '') AS notification_template, r.auto_resolve, r.suppress_duration,"
        " r.max_alerts_per_hour, coalesce(r.escalation_policy_id, '') AS escalation_policy_id, r.escalation_delay,"
        " coalesce(r.tags, '{}')::text AS tags, r.created_by,"
        " (extract(epoch FROM r.created_at) * 1000000)::bigint AS created_at_us,"
        " (extract(epoch FROM r.updated_at) * 1000000)::bigint AS updated_at_us,"
        " (extract(epoch FROM r.last_triggered) * 1000000)::bigint AS last_triggered_us"
        " FROM tb_alert_rule r";

struct row {
	struct arena *a;
	const struct db_result *res;
	int row;
	bool is_ok;
};

static int col_of(struct row *r, const char *name)
{
	int c = db_result_col(r->res, name);
	if (c < 0)
		r->is_ok = false;
	return c;
}

static const char *text_of(struct row *r, const char *name)
{
	int c = col_of(r, name);
	if (c < 0)
		return "";
	char *s = arena_strdup(r->a, db_result_value(r->res, r->row, c));
	if (s == NULL) {
		r->is_ok = false;
		return "";
	}
	return s;
}

static bool is_null(struct row *r, const char *name)
{
	int c = col_of(r, name);
	return c < 0 || db_result_is_null(r->res, r->row, c);
}

static int64_t int_of(struct row *r, const char *name)
{
	int c = col_of(r, name);
	return c < 0 ? 0 : strtoll(db_result_value(r->res, r->row, c), NULL, 10);
}

static Google__Protobuf__Int32Value *int32_value_of(struct row *r, const char *name)
{
	if (is_null(r, name))
		return NULL;
	Google__Protobuf__Int32Value *v = arena_alloc(r->a, sizeof(*v));
	if (v == NULL) {
		r->is_ok = false;
		return NULL;
	}
	google__protobuf__int32_value__init(v);
	v->value = (int32_t)int_of(r, name);
	return v;
}

static Google__Protobuf__Timestamp *time_of(struct row *r, const char *name)
{
	if (is_null(r, name))
		return NULL;
	Google__Protobuf__Timestamp *ts = svc_ts_from_us(r->a, int_of(r, name));
	if (ts == NULL)
		r->is_ok = false;
	return ts;
}

static json_t *json_of(struct row *r, const char *name)
{
	int c = col_of(r, name);
	if (c < 0 || db_result_is_null(r->res, r->row, c))
		return NULL;
	const char *text = db_result_value(r->res, r->row, c);
	if (strlen(text) > JSON_TEXT_MAX)
		return NULL;
	return json_loads(text, JSON_REJECT_DUPLICATES, NULL);
}

static char *arena_json_string(struct row *r, const json_t *v)
{
	char *s = arena_strdup(r->a, json_is_string(v) ? json_string_value(v) : "");
	if (s == NULL)
		r->is_ok = false;
	return s;
}

static Monitoring__V1__AlertScope *scope_of(struct row *r, const json_t *j)
{
	Monitoring__V1__AlertScope *s = arena_alloc(r->a, sizeof(*s));
	if (s == NULL) {
		r->is_ok = false;
		return NULL;
	}
	monitoring__v1__alert_scope__init(s);
	if (!json_is_object(j))
		return s;
	if (read_list(r->a, j, "endpoints", &s->endpoints, &s->n_endpoints) != 0 ||
	    read_list(r->a, j, "methods", &s->methods, &s->n_methods) != 0 ||
	    read_list(r->a, j, "group_by", &s->group_by, &s->n_group_by) != 0)
		r->is_ok = false;
	const json_t *codes = json_object_get(j, "status_codes");
	if (json_is_array(codes) && json_array_size(codes) > 0) {
		s->status_codes = arena_calloc(r->a, json_array_size(codes), sizeof(*s->status_codes));
		if (s->status_codes == NULL)
			r->is_ok = false;
		for (size_t i = 0; s->status_codes != NULL && i < json_array_size(codes); i++)
			if (json_is_integer(json_array_get(codes, i)))
				s->status_codes[s->n_status_codes++] =
				        (int32_t)json_integer_value(json_array_get(codes, i));
	}
	const json_t *tags = json_object_get(j, "tags");
	if (json_is_object(tags) && json_object_size(tags) > 0) {
		s->tags = arena_calloc(r->a, json_object_size(tags), sizeof(*s->tags));
		if (s->tags == NULL)
			r->is_ok = false;
		const char *key;
		const json_t *value;
		json_object_foreach((json_t *)tags, key, value)
		{
			if (s->tags == NULL)
				break;
			Monitoring__V1__AlertScope__TagsEntry *e = arena_alloc(r->a, sizeof(*e));
			if (e == NULL) {
				r->is_ok = false;
				break;
			}
			monitoring__v1__alert_scope__tags_entry__init(e);
			e->key = arena_strdup(r->a, key);
			e->value = arena_json_string(r, value);
			if (e->key == NULL)
				r->is_ok = false;
			s->tags[s->n_tags++] = e;
		}
	}
	return s;
}

static void rule_tags_of(struct row *r, const json_t *j, Monitoring__V1__AlertRule *m)
{
	if (!json_is_object(j) || json_object_size(j) == 0)
		return;
	m->tags = arena_calloc(r->a, json_object_size(j), sizeof(*m->tags));
	if (m->tags == NULL) {
		r->is_ok = false;
		return;
	}
	const char *key;
	const json_t *value;
	json_object_foreach((json_t *)j, key, value)
	{
		Monitoring__V1__AlertRule__TagsEntry *e = arena_alloc(r->a, sizeof(*e));
		if (e == NULL) {
			r->is_ok = false;
			return;
		}
		monitoring__v1__alert_rule__tags_entry__init(e);
		e->key = arena_strdup(r->a, key);
		e->value = arena_json_string(r, value);
		if (e->key == NULL)
			r->is_ok = false;
		m->tags[m->n_tags++] = e;
	}
}

int alerts_rule_from_row(struct arena *a, const struct db_result *res, int row, Monitoring__V1__AlertRule **out,
                         struct mon_error *err)
{
	struct row r = {.a = a, .res = res, .row = row, .is_ok = true};
	Monitoring__V1__AlertRule *m = arena_alloc(a, sizeof(*m));
	if (m == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	monitoring__v1__alert_rule__init(m);
	m->id = (char *)text_of(&r, "id");
	m->name = (char *)text_of(&r, "name");
	m->description = (char *)text_of(&r, "description");
	m->severity = alerts_severity_from_label(text_of(&r, "severity"));
	m->status = alerts_rule_status_from_label(text_of(&r, "status"));
	m->metric_name = (char *)text_of(&r, "metric_name");
	m->comparison_operator = alerts_operator_from_label(text_of(&r, "comparison_operator"));
	m->threshold = strtod(text_of(&r, "threshold"), NULL);
	m->duration_minutes = int32_value_of(&r, "duration_minutes");
	m->evaluation_interval = (int32_t)int_of(&r, "evaluation_interval");
	m->notification_template = (char *)text_of(&r, "notification_template");
	if (!is_null(&r, "auto_resolve")) {
		m->auto_resolve = arena_alloc(a, sizeof(*m->auto_resolve));
		if (m->auto_resolve == NULL)
			return mon_error_set(err, MON_ENOMEM, "out of memory");
		google__protobuf__bool_value__init(m->auto_resolve);
		m->auto_resolve->value = strcmp(text_of(&r, "auto_resolve"), "t") == 0;
	}
	m->suppress_duration = int32_value_of(&r, "suppress_duration");
	m->max_alerts_per_hour = int32_value_of(&r, "max_alerts_per_hour");
	m->escalation_policy_id = (char *)text_of(&r, "escalation_policy_id");
	m->escalation_delay = int32_value_of(&r, "escalation_delay");
	m->created_by = (char *)text_of(&r, "created_by");
	m->created_at = time_of(&r, "created_at_us");
	m->updated_at = time_of(&r, "updated_at_us");
	m->last_triggered = time_of(&r, "last_triggered_us");

	json_t *scope = json_of(&r, "scope"), *channels = json_of(&r, "notification_channels"),
	       *recipients = json_of(&r, "notification_recipients"), *tags = json_of(&r, "tags");
	m->scope = scope_of(&r, scope);
	const json_t *stat = json_object_get(scope, "statistic"), *agg = json_object_get(scope, "aggregation"),
	             *tm = json_object_get(scope, "text_match");
	m->statistic = (Monitoring__V1__MetricStatistic)label_index(statistic_labels, COUNT_OF(statistic_labels),
	                                                            json_string_value(stat));
	m->aggregation = (Monitoring__V1__Aggregation)label_index(aggregation_labels, COUNT_OF(aggregation_labels),
	                                                          json_string_value(agg));
	if (json_is_object(tm)) {
		m->text_match = arena_alloc(a, sizeof(*m->text_match));
		if (m->text_match != NULL) {
			monitoring__v1__text_match__init(m->text_match);
			m->text_match->field = arena_json_string(&r, json_object_get(tm, "field"));
			m->text_match->substring = arena_json_string(&r, json_object_get(tm, "substring"));
		} else {
			r.is_ok = false;
		}
	}
	if (json_is_array(channels) && json_array_size(channels) > 0) {
		m->notification_channels =
		        arena_calloc(a, json_array_size(channels), sizeof(*m->notification_channels));
		if (m->notification_channels == NULL)
			r.is_ok = false;
		for (size_t i = 0; m->notification_channels != NULL && i < json_array_size(channels); i++) {
			Monitoring__V1__NotificationChannel c =
			        alerts_channel_from_label(json_string_value(json_array_get(channels, i)));
			if (c != MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_UNSPECIFIED)
				m->notification_channels[m->n_notification_channels++] = c;
		}
	}
	if (alerts_recipients_from_json(a, recipients, &m->notification_recipients, NULL) != 0)
		r.is_ok = false;
	rule_tags_of(&r, tags, m);
	json_decref(scope);
	json_decref(channels);
	json_decref(recipients);
	json_decref(tags);
	if (!r.is_ok)
		return mon_error_set(err, MON_ENOMEM, "alert rule row: out of memory or a column missing");
	*out = m;
	return 0;
}

int alerts_rule_read_tx(struct db_conn *conn, struct arena *a, const char *id, bool for_update,
                        Monitoring__V1__AlertRule **out, struct mon_error *err)
{
	char sql[sizeof(alerts_rule_select_sql) + 64];
	int sql_n = snprintf(sql, sizeof(sql), "%s WHERE r.id = $1%s", alerts_rule_select_sql,
	                     for_update ? " FOR NO KEY UPDATE OF r" : "");
	if (sql_n < 0 || (size_t)sql_n >= sizeof(sql))
		return mon_error_set(err, MON_EINTERNAL, "alert rule query: text too long");
	const char *params[] = {id};
	struct db_result *res = NULL;
	int rc = db_exec(conn, sql, 1, params, &res, err);
	if (rc != 0)
		return rc;
	if (db_result_rows(res) != 1) {
		char clipped[64];
		snprintf(clipped, sizeof(clipped), "%.50s", id ? id : "");
		rc = mon_error_set(err, MON_ENOTFOUND, "rule_id: no alert rule \"%s\"", clipped);
	} else {
		rc = alerts_rule_from_row(a, res, 0, out, err);
	}
	db_result_free(res);
	return rc;
}
