/*
 * Unit tests of the alert rule's pure parts (server/alerts/rule.c): a valid
 * rule passes, each broken field is refused with a message that starts with
 * its name, recipients must cover their channels, and the scope and
 * recipients columns have the documented JSON shape and read back.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "alerts/rule.h"

#define OP(x) MONITORING__V1__COMPARISON_OPERATOR__COMPARISON_OPERATOR_##x
#define CH(x) MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_##x

/* A valid rule to break one field of; strings are static. */
static void base_rule(Monitoring__V1__AlertRule *r)
{
	monitoring__v1__alert_rule__init(r);
	r->name = "p95 of orders";
	r->metric_name = "http_request";
	r->severity = MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_ERROR;
	r->statistic = MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_P95;
	r->comparison_operator = OP(GT);
	r->threshold = 800;
	r->evaluation_interval = 60;
}

/* Asserts that r is refused and the message starts with field. */
static void assert_refused(const Monitoring__V1__AlertRule *r, const char *field)
{
	struct mon_error err = {0};
	assert_int_equal(alerts_rule_check("rule.", r, &err), MON_EINVAL);
	if (strncmp(err.msg, field, strlen(field)) != 0)
		fail_msg("\"%s\" does not name %s", err.msg, field);
}

static void test_alerts_rule_valid(void **state)
{
	(void)state;
	Monitoring__V1__AlertRule r;
	struct mon_error err = {0};
	base_rule(&r);
	assert_int_equal(alerts_rule_check("rule.", &r, &err), 0);
	/* "rule" without the dot names fields the same way. */
	r.name = "";
	assert_int_equal(alerts_rule_check("rule", &r, &err), MON_EINVAL);
	assert_string_equal(err.msg, "rule.name: must be set");
}

static void test_alerts_rule_fields(void **state)
{
	(void)state;
	Monitoring__V1__AlertRule r;
	Monitoring__V1__TextMatch tm = MONITORING__V1__TEXT_MATCH__INIT;
	Google__Protobuf__Int32Value v = GOOGLE__PROTOBUF__INT32_VALUE__INIT;

	base_rule(&r);
	r.metric_name = "bad name";
	assert_refused(&r, "rule.metric_name");
	base_rule(&r);
	r.statistic = MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_UNSPECIFIED;
	assert_refused(&r, "rule.statistic");
	base_rule(&r);
	r.comparison_operator = OP(UNSPECIFIED);
	assert_refused(&r, "rule.comparison_operator");
	base_rule(&r);
	r.threshold = NAN;
	assert_refused(&r, "rule.threshold");
	r.threshold = 1e11;
	assert_refused(&r, "rule.threshold");
	r.threshold = 99999999999.9999;
	struct mon_error err = {0};
	assert_int_equal(alerts_rule_check("rule.", &r, &err), 0);

	/* Text operators: text_match required, a whole count, COUNT or no aggregation. */
	base_rule(&r);
	r.comparison_operator = OP(CONTAINS);
	r.threshold = 2;
	assert_refused(&r, "rule.text_match");
	tm.field = "tags.region";
	tm.substring = "eu";
	r.text_match = &tm;
	assert_int_equal(alerts_rule_check("rule.", &r, &err), 0);
	r.threshold = 2.5;
	assert_refused(&r, "rule.threshold");
	r.threshold = 0;
	r.aggregation = MONITORING__V1__AGGREGATION__AGGREGATION_MAX;
	assert_refused(&r, "rule.aggregation");
	r.aggregation = MONITORING__V1__AGGREGATION__AGGREGATION_COUNT;
	tm.field = "host";
	assert_refused(&r, "rule.text_match.field");
	tm.field = "status_code";
	tm.substring = "";
	assert_refused(&r, "rule.text_match.substring");
	base_rule(&r);
	tm.substring = "5";
	r.text_match = &tm;
	assert_refused(&r, "rule.text_match");

	base_rule(&r);
	r.evaluation_interval = 9;
	assert_refused(&r, "rule.evaluation_interval");
	base_rule(&r);
	v.value = 1441;
	r.duration_minutes = &v;
	assert_refused(&r, "rule.duration_minutes");
	base_rule(&r);
	v.value = -1;
	r.suppress_duration = &v;
	assert_refused(&r, "rule.suppress_duration");
	base_rule(&r);
	v.value = 0;
	r.max_alerts_per_hour = &v;
	assert_refused(&r, "rule.max_alerts_per_hour");
	base_rule(&r);
	v.value = 10;
	r.escalation_delay = &v;
	assert_refused(&r, "rule.escalation_delay");
}

static void test_alerts_rule_recipients(void **state)
{
	(void)state;
	struct mon_error err = {0};
	Monitoring__V1__NotificationRecipients rec = MONITORING__V1__NOTIFICATION_RECIPIENTS__INIT;
	Monitoring__V1__NotificationChannel channels[] = {CH(EMAIL), CH(IN_APP)};
	char *emails[] = {"oncall@example.com"};
	char *teams[] = {"payments"};
	char *phones[] = {"+14155550100", "0800-123"};
	assert_int_equal(alerts_recipients_check("rule.", "notification_channels", channels, 2,
	                                         "notification_recipients", &rec, &err),
	                 MON_EINVAL);
	assert_non_null(strstr(err.msg, "rule.notification_recipients.emails: required for channel email"));
	rec.emails = emails;
	rec.n_emails = 1;
	assert_int_equal(alerts_recipients_check("rule.", "notification_channels", channels, 2,
	                                         "notification_recipients", &rec, &err),
	                 MON_EINVAL);
	assert_non_null(strstr(err.msg, "user_ids or team_ids"));
	rec.team_ids = teams;
	rec.n_team_ids = 1;
	assert_int_equal(alerts_recipients_check("rule.", "notification_channels", channels, 2,
	                                         "notification_recipients", &rec, &err),
	                 0);
	rec.phone_numbers = phones;
	rec.n_phone_numbers = 2;
	assert_int_equal(alerts_recipients_check("rule.", "notification_channels", channels, 2,
	                                         "notification_recipients", &rec, &err),
	                 MON_EINVAL);
	assert_string_equal(err.msg, "rule.notification_recipients.phone_numbers[1]: must be an E.164 number (+ and "
	                             "7-15 digits)");

	/* JSON: only the non-empty lists, read back the same. */
	rec.n_phone_numbers = 1;
	json_t *j = alerts_recipients_to_json(&rec);
	char *text = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
	assert_string_equal(text, "{\"emails\":[\"oncall@example.com\"],\"phone_numbers\":[\"+14155550100\"],"
	                          "\"team_ids\":[\"payments\"]}");
	struct arena *a = arena_create(0);
	Monitoring__V1__NotificationRecipients *back = NULL;
	assert_int_equal(alerts_recipients_from_json(a, j, &back, &err), 0);
	assert_int_equal(back->n_emails, 1);
	assert_string_equal(back->phone_numbers[0], "+14155550100");
	assert_int_equal(back->n_slack_channels, 0);
	free(text);
	json_decref(j);
	arena_destroy(a);
}

static void test_alerts_rule_scope_json(void **state)
{
	(void)state;
	Monitoring__V1__AlertRule r;
	Monitoring__V1__AlertScope sc = MONITORING__V1__ALERT_SCOPE__INIT;
	Monitoring__V1__TextMatch tm = MONITORING__V1__TEXT_MATCH__INIT;
	char *endpoints[] = {"/api/orders"};
	char *group_by[] = {"endpoint"};
	int32_t codes[] = {500};
	base_rule(&r);
	sc.endpoints = endpoints;
	sc.n_endpoints = 1;
	sc.group_by = group_by;
	sc.n_group_by = 1;
	sc.status_codes = codes;
	sc.n_status_codes = 1;
	r.scope = &sc;
	r.comparison_operator = OP(NOT_CONTAINS);
	r.aggregation = MONITORING__V1__AGGREGATION__AGGREGATION_COUNT;
	tm.field = "endpoint";
	tm.substring = "/v2/";
	r.text_match = &tm;
	json_t *j = alerts_rule_scope_json(&r);
	char *text = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
	assert_string_equal(text, "{\"aggregation\":\"count\",\"endpoints\":[\"/api/orders\"],\"group_by\":["
	                          "\"endpoint\"],\"statistic\":\"p95\",\"status_codes\":[500],\"text_match\":{"
	                          "\"field\":\"endpoint\",\"substring\":\"/v2/\"}}");
	free(text);
	json_decref(j);
	base_rule(&r);
	j = alerts_rule_scope_json(&r);
	text = json_dumps(j, JSON_COMPACT);
	assert_string_equal(text, "{\"statistic\":\"p95\"}");
	free(text);
	json_decref(j);
	assert_string_equal(alerts_statistic_label(MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_ERROR_RATE),
	                    "error_rate");
	assert_null(alerts_aggregation_label(MONITORING__V1__AGGREGATION__AGGREGATION_UNSPECIFIED));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_alerts_rule_valid),
	        cmocka_unit_test(test_alerts_rule_fields),
	        cmocka_unit_test(test_alerts_rule_recipients),
	        cmocka_unit_test(test_alerts_rule_scope_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
