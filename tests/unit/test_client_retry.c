/*
 * libmonitoring's idempotency keys and retries, linked against the shared
 * library as an application would be, against a fake AlertsService in
 * python3-grpcio (test_client_retry_server.py): a state-changing call
 * without a key gets a UUIDv4 and keeps it on its retries, a caller's key
 * is kept, UNAVAILABLE and "outcome unknown" are retried a bounded number
 * of times, another UNKNOWN and reads are not retried.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

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

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_client_retry_sets_a_key_and_keeps_it),
	        cmocka_unit_test(test_client_retry_keeps_the_callers_key),
	        cmocka_unit_test(test_client_retry_is_bounded),
	        cmocka_unit_test(test_client_retry_not_other_failures_nor_reads),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
