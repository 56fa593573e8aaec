/*
 * Unit tests of the alert store's pure parts (server/alerts/store.c): every
 * label maps back to its value, the transition table is exactly the one of
 * alerts.proto, times of notifications_sent parse with any offset, the
 * text forms of the channels and recipients columns decode, the outbox
 * payload carries the documented keys, and ids have their shape.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "alerts/store.h"

#define ST(x) MONITORING__V1__ALERT_STATUS__ALERT_STATUS_##x

static void test_alerts_store_labels(void **state)
{
	(void)state;
	for (int v = 1; v <= 5; v++) {
		const char *l = alerts_status_label((Monitoring__V1__AlertStatus)v);
		assert_non_null(l);
		assert_int_equal(alerts_status_from_label(l), v);
	}
	for (int v = 1; v <= 6; v++) {
		assert_int_equal(alerts_severity_from_label(alerts_severity_label((Monitoring__V1__SeverityLevel)v)),
		                 v);
		assert_int_equal(
		        alerts_channel_from_label(alerts_channel_label((Monitoring__V1__NotificationChannel)v)), v);
	}
	for (int v = 1; v <= 8; v++)
		assert_int_equal(
		        alerts_operator_from_label(alerts_operator_label((Monitoring__V1__ComparisonOperator)v)), v);
	for (int v = 1; v <= 3; v++)
		assert_int_equal(
		        alerts_rule_status_from_label(alerts_rule_status_label((Monitoring__V1__AlertRuleStatus)v)), v);
	for (int v = 1; v <= 4; v++)
		assert_int_equal(
		        alerts_suppression_from_label(alerts_suppression_label((Monitoring__V1__SuppressionReason)v)),
		        v);
	for (int v = 1; v <= 5; v++)
		assert_int_equal(alerts_delivery_status_from_label(
		                         alerts_delivery_status_label((Monitoring__V1__DeliveryStatus)v)),
		                 v);
	assert_string_equal(alerts_channel_label(MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_IN_APP),
	                    "in-app");
	assert_string_equal(
	        alerts_operator_label(MONITORING__V1__COMPARISON_OPERATOR__COMPARISON_OPERATOR_NOT_CONTAINS),
	        "not-contains");
	assert_string_equal(alerts_suppression_label(MONITORING__V1__SUPPRESSION_REASON__SUPPRESSION_REASON_HOURLY_CAP),
	                    "hourly-cap");
	assert_null(alerts_status_label((Monitoring__V1__AlertStatus)0));
	assert_null(alerts_status_label((Monitoring__V1__AlertStatus)99));
	assert_int_equal(alerts_status_from_label("nope"), 0);
	assert_int_equal(alerts_status_from_label(NULL), 0);
	assert_int_equal(alerts_severity_rank(MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_CRITICAL), 1);
	assert_int_equal(alerts_severity_rank(MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_WARNING), 4);
	assert_int_equal(alerts_severity_rank(MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_DEBUG), 5);
}

static void test_alerts_store_transitions(void **state)
{
	(void)state;
	/* the table of alerts.proto; everything else is refused */
	static const int legal[][2] = {
	        {ST(PENDING), ST(ACTIVE)},        {ST(PENDING), ST(SUPPRESSED)},      {ST(PENDING), ST(RESOLVED)},
	        {ST(ACTIVE), ST(ACKNOWLEDGED)},   {ST(ACTIVE), ST(RESOLVED)},         {ST(ACTIVE), ST(SUPPRESSED)},
	        {ST(SUPPRESSED), ST(ACTIVE)},     {ST(SUPPRESSED), ST(ACKNOWLEDGED)}, {ST(SUPPRESSED), ST(RESOLVED)},
	        {ST(ACKNOWLEDGED), ST(RESOLVED)},
	};
	int allowed_n = 0;
	for (int from = 0; from <= 6; from++) {
		for (int to = 0; to <= 6; to++) {
			bool is_legal = false;
			for (size_t i = 0; i < sizeof(legal) / sizeof(legal[0]); i++)
				is_legal = is_legal || (legal[i][0] == from && legal[i][1] == to);
			assert_int_equal(alerts_transition_allowed((Monitoring__V1__AlertStatus)from,
			                                           (Monitoring__V1__AlertStatus)to),
			                 is_legal);
			allowed_n += is_legal;
		}
	}
	assert_int_equal(allowed_n, 10);
}

static void test_alerts_store_times(void **state)
{
	(void)state;
	int64_t us = 0;
	assert_true(alerts_parse_time_us("2026-11-25T18:30:00.123456Z", &us));
	assert_int_equal(us, INT64_C(1795631400123456));
	assert_true(alerts_parse_time_us("2026-11-25 19:30:00.123456+01:00", &us));
	assert_int_equal(us, INT64_C(1795631400123456));
	assert_true(alerts_parse_time_us("2026-11-25T18:30:00-00", &us));
	assert_int_equal(us, INT64_C(1795631400000000));
	assert_true(alerts_parse_time_us("1970-01-01T00:00:00.5Z", &us));
	assert_int_equal(us, 500000);
	assert_false(alerts_parse_time_us("2026-11-25T18:30:00", &us));
	assert_false(alerts_parse_time_us("2026-13-25T18:30:00Z", &us));
	assert_false(alerts_parse_time_us("yesterday", &us));
	assert_false(alerts_parse_time_us(NULL, &us));
}

static void test_alerts_store_columns(void **state)
{
	(void)state;
	struct arena *a = arena_create(0);
	struct mon_error err = {0};
	Monitoring__V1__NotificationChannel *ch = NULL;
	size_t n = 0;
	assert_int_equal(alerts_channels_from_text(a, "{email,slack,\"in-app\",bogus,webhook}", &ch, &n, &err), 0);
	assert_int_equal(n, 4);
	assert_int_equal(ch[0], MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_EMAIL);
	assert_int_equal(ch[2], MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_IN_APP);
	assert_int_equal(ch[3], MONITORING__V1__NOTIFICATION_CHANNEL__NOTIFICATION_CHANNEL_WEBHOOK);
	assert_int_equal(alerts_channels_from_text(a, "{}", &ch, &n, &err), 0);
	assert_int_equal(n, 0);

	Monitoring__V1__NotificationRecipients *r = NULL;
	assert_int_equal(alerts_recipients_from_text(
	                         a,
	                         "{\"emails\": [\"a@x.io\", 7, \"b@x.io\"], \"slack_channels\": [\"#ops\"], \"x\": 1}",
	                         &r, &err),
	                 0);
	assert_int_equal(r->n_emails, 2);
	assert_string_equal(r->emails[1], "b@x.io");
	assert_int_equal(r->n_slack_channels, 1);
	assert_int_equal(r->n_phone_numbers, 0);
	assert_int_equal(alerts_recipients_from_text(a, "not json", &r, &err), 0);
	assert_int_equal(r->n_emails, 0);
	arena_destroy(a);
}

static void test_alerts_store_payload(void **state)
{
	(void)state;
	Monitoring__V1__Alert alert = MONITORING__V1__ALERT__INIT;
	Monitoring__V1__Alert__LabelsEntry label = MONITORING__V1__ALERT__LABELS_ENTRY__INIT;
	Monitoring__V1__Alert__LabelsEntry *labels[] = {&label};
	Google__Protobuf__Timestamp at = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	at.seconds = 1795631400;
	label.key = "endpoint";
	label.value = "/api/orders";
	alert.id = "alt-1";
	alert.alert_rule_id = "rule-1";
	alert.rule_name = "High latency";
	alert.metric_name = "api.latency";
	alert.status = ST(ACTIVE);
	alert.severity = MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_CRITICAL;
	alert.message = "p95 above 500";
	alert.current_value = 612.5;
	alert.threshold = 500;
	alert.triggered_at = &at;
	alert.n_labels = 1;
	alert.labels = labels;
	json_t *j = alerts_payload_json(&alert, "escalated", 2);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "id")), "alt-1");
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "rule"), "name")), "High latency");
	assert_string_equal(json_string_value(json_object_get(j, "status")), "active");
	assert_string_equal(json_string_value(json_object_get(j, "severity")), "critical");
	assert_true(json_real_value(json_object_get(j, "value")) == 612.5);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "labels"), "endpoint")),
	                    "/api/orders");
	assert_string_equal(json_string_value(json_object_get(j, "triggered_at")), "2026-11-25T18:30:00.000000Z");
	assert_string_equal(json_string_value(json_object_get(j, "trigger")), "escalated");
	assert_int_equal(json_integer_value(json_object_get(j, "level")), 2);
	json_decref(j);
}

static void test_alerts_store_ids(void **state)
{
	(void)state;
	char a[32], b[32];
	alerts_new_id(NULL, a, sizeof(a));
	alerts_new_id("ntf-", b, sizeof(b));
	assert_int_equal(strlen(a), 20);
	assert_int_equal(strncmp(a, "alt-", 4), 0);
	assert_int_equal(strncmp(b, "ntf-", 4), 0);
	assert_int_equal(strspn(a + 4, "0123456789abcdef"), 16);
	assert_string_not_equal(a + 4, b + 4);
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_alerts_store_labels),  cmocka_unit_test(test_alerts_store_transitions),
	        cmocka_unit_test(test_alerts_store_times),   cmocka_unit_test(test_alerts_store_columns),
	        cmocka_unit_test(test_alerts_store_payload), cmocka_unit_test(test_alerts_store_ids),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
