/*
 * libmonitoring's idempotency keys and retries, linked against the shared
 * library as an application would be, against a fake AlertsService in
 * python3-grpcio (test_client_retry_server.py): a state-changing call
 * without a key gets a UUIDv4 and keeps it on its retries, a caller's key
 * is kept, UNAVAILABLE and "outcome unknown" are retried a bounded number
 * of times, another UNKNOWN and reads are not retried; the metrics writer,
 * which retries on its own, is not retried underneath as well.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <monitoring/metrics_writer.h>
#include <monitoring/monitoring.h>

#include "test_client_server.h"

static struct test_server g_server;
static mon_client *g_client;

static int group_setup(void **state)
{
	(void)state;
	if (test_server_start(&g_server) != 0)
		return -1;
	mon_client_options opts = {.target = g_server.target};
	mon_status st;
	return mon_client_open(&opts, &g_client, &st);
}

static int group_teardown(void **state)
{
	(void)state;
	mon_client_close(g_client);
	test_server_stop(&g_server);
	return 0;
}

static int acknowledge(const char *alert_id, const char *key, Monitoring__V1__AcknowledgeAlertResponse **resp,
                       mon_status *st)
{
	Monitoring__V1__AcknowledgeAlertRequest req = MONITORING__V1__ACKNOWLEDGE_ALERT_REQUEST__INIT;
	req.alert_id = (char *)alert_id;
	if (key != NULL)
		req.request_id = (char *)key;
	const char *before = req.request_id;
	int rc = mon_alerts_service_acknowledge_alert(g_client, &req, resp, NULL, st);
	assert_ptr_equal(req.request_id, before); /* the caller's request is not changed */
	return rc;
}

static void test_client_retry_sets_a_key_and_keeps_it(void **state)
{
	(void)state;
	Monitoring__V1__AcknowledgeAlertResponse *resp = NULL;
	mon_status st;
	assert_int_equal(acknowledge("flaky:2", NULL, &resp, &st), 0);
	/* "<uuid> attempts=3": three attempts with one key, a version 4 UUID */
	const char *note = resp->alert->acknowledgment_note;
	assert_int_equal(strlen(note), 36 + strlen(" attempts=3"));
	assert_string_equal(note + 36, " attempts=3");
	assert_int_equal(note[8], '-');
	assert_int_equal(note[14], '4');
	mon_message_free(&resp->base);

	/* Another call gets another key. */
	char first[37];
	assert_int_equal(acknowledge("flaky:0", NULL, &resp, &st), 0);
	memcpy(first, resp->alert->acknowledgment_note, 36);
	first[36] = '\0';
	mon_message_free(&resp->base);
	assert_int_equal(acknowledge("flaky:0", NULL, &resp, &st), 0);
	assert_memory_not_equal(first, resp->alert->acknowledgment_note, 36);
	mon_message_free(&resp->base);
}

static void test_client_retry_keeps_the_callers_key(void **state)
{
	(void)state;
	Monitoring__V1__AcknowledgeAlertResponse *resp = NULL;
	mon_status st;
	assert_int_equal(acknowledge("flaky:1", "my-key", &resp, &st), 0);
	assert_string_equal(resp->alert->acknowledgment_note, "my-key attempts=2");
	mon_message_free(&resp->base);
	assert_int_equal(acknowledge("unknown:1", "key-2", &resp, &st), 0);
	assert_string_equal(resp->alert->acknowledgment_note, "key-2 attempts=2");
	mon_message_free(&resp->base);
}

static void test_client_retry_is_bounded(void **state)
{
	(void)state;
	Monitoring__V1__AcknowledgeAlertResponse *resp = NULL;
	mon_status st;
	assert_int_not_equal(acknowledge("flaky:9", "key-3", &resp, &st), 0);
	assert_null(resp);
	assert_int_equal(st.code, 14);
	assert_non_null(strstr(st.message, "(attempt 4)"));
}

static void test_client_retry_not_other_failures_nor_reads(void **state)
{
	(void)state;
	Monitoring__V1__AcknowledgeAlertResponse *resp = NULL;
	mon_status st;
	assert_int_not_equal(acknowledge("other", "key-4", &resp, &st), 0);
	assert_int_equal(st.code, 2);
	assert_non_null(strstr(st.message, "(attempt 1)"));

	Monitoring__V1__GetAlertRequest get = MONITORING__V1__GET_ALERT_REQUEST__INIT;
	get.alert_id = "flaky";
	Monitoring__V1__GetAlertResponse *got = NULL;
	assert_int_not_equal(mon_alerts_service_get_alert(g_client, &get, &got, NULL, &st), 0);
	assert_int_equal(st.code, 14);
	assert_non_null(strstr(st.message, "(attempt 1)"));
}

struct writer_failure {
	int code;
	char message[600];
};

static void on_writer_error(void *data, const mon_metrics_writer_failure *f)
{
	struct writer_failure *out = data;
	out->code = f->code;
	snprintf(out->message, sizeof(out->message), "%s", f->message);
}

static void test_client_retry_not_under_the_metrics_writer(void **state)
{
	(void)state;
	struct writer_failure failure = {0};
	mon_metrics_writer_options o = {.max_delay_ms = 10,
	                                .retry_timeout_ms = 400,
	                                .retry_initial_ms = 20,
	                                .retry_max_ms = 40,
	                                .on_error = on_writer_error,
	                                .on_error_data = &failure};
	mon_metrics_writer *w = NULL;
	mon_status st;
	assert_int_equal(mon_metrics_writer_create(g_client, &o, &w, &st), 0);
	Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	ts.seconds = 1700000000;
	Monitoring__V1__MetricPoint p = MONITORING__V1__METRIC_POINT__INIT;
	p.metric_name = "http_request";
	p.time = &ts;
	assert_int_equal(mon_metrics_writer_add(w, &p, &st), 0);
	assert_int_not_equal(mon_metrics_writer_flush(w, 10000, &st), 0); /* given up */
	mon_metrics_writer_stats s;
	mon_metrics_writer_stats_get(w, &s);
	assert_int_not_equal(mon_metrics_writer_close(w, 10000, &st), 0);

	/* "retries exhausted after N attempts: database unavailable (attempt N)": one server attempt per writer attempt
	 */
	assert_int_equal(failure.code, 14);
	int writer_n = 0, server_n = 0;
	assert_int_equal(sscanf(failure.message,
	                        "retries exhausted after %d attempts: database unavailable (attempt %d)", &writer_n,
	                        &server_n),
	                 2);
	assert_true(writer_n > 1);
	assert_int_equal(server_n, writer_n);
	assert_int_equal(s.retries, (uint64_t)writer_n - 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_client_retry_sets_a_key_and_keeps_it),
	        cmocka_unit_test(test_client_retry_keeps_the_callers_key),
	        cmocka_unit_test(test_client_retry_is_bounded),
	        cmocka_unit_test(test_client_retry_not_other_failures_nor_reads),
	        cmocka_unit_test(test_client_retry_not_under_the_metrics_writer),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
