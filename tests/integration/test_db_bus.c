/*
 * The LISTEN/NOTIFY bus: an event is delivered after its transaction
 * commits and never after a rollback, two buses (two replicas) both
 * receive it, channels are case-sensitive and may be subscribed after
 * start, and a bus whose connection is killed reconnects, LISTENs again
 * and calls the reconnect callback.
 */
#include "test_db_common.h"

#include <pthread.h>

static struct test_db tdb;
static struct db_pool *pool;

struct inbox {
	pthread_mutex_t mu;
	int count;
	char last_channel[64];
	char last_payload[256];
	int reconnects;
};

static void on_event(const char *channel, const char *payload, void *arg)
{
	struct inbox *in = arg;
	pthread_mutex_lock(&in->mu);
	in->count++;
	snprintf(in->last_channel, sizeof(in->last_channel), "%s", channel);
	snprintf(in->last_payload, sizeof(in->last_payload), "%s", payload);
	pthread_mutex_unlock(&in->mu);
}

static void on_reconnect(void *arg)
{
	struct inbox *in = arg;
	pthread_mutex_lock(&in->mu);
	in->reconnects++;
	pthread_mutex_unlock(&in->mu);
}

static int inbox_count(struct inbox *in)
{
	pthread_mutex_lock(&in->mu);
	int n = in->count;
	pthread_mutex_unlock(&in->mu);
	return n;
}

/* Waits up to ms for in->count to reach want. */
static bool wait_count(struct inbox *in, int want, int ms)
{
	for (int waited = 0; waited < ms; waited += 10) {
		if (inbox_count(in) >= want)
			return true;
		test_sleep_ms(10);
	}
	return inbox_count(in) >= want;
}

static bool wait_connected(struct db_bus *bus)
{
	for (int i = 0; i < 500 && !db_bus_is_connected(bus); i++)
		test_sleep_ms(10);
	return db_bus_is_connected(bus);
}

static struct db_bus *start_bus(const char *channel, struct inbox *in)
{
	struct db_bus *bus = NULL;
	struct mon_error err = {0};
	pthread_mutex_init(&in->mu, NULL);
	assert_int_equal(db_bus_create(tdb.conninfo, &bus, &err), 0);
	assert_int_equal(db_bus_subscribe(bus, channel, on_event, in, &err), 0);
	db_bus_on_reconnect(bus, on_reconnect, in);
	assert_int_equal(db_bus_start(bus, &err), 0);
	assert_true(wait_connected(bus));
	return bus;
}

static int setup(void **state)
{
	test_db_create(&tdb, "bus");
	pool = test_db_pool(tdb.conninfo, 2);
	return 0;
}

static int teardown(void **state)
{
	db_pool_destroy(pool);
	test_db_drop(&tdb);
	return 0;
}

struct publish {
	const char *channel;
	const char *payload;
	bool should_fail;
};

static int publish_fn(struct db_conn *c, void *arg, struct mon_error *err)
{
	struct publish *p = arg;
	int rc = db_notify(c, p->channel, p->payload, err);
	if (rc == 0 && p->should_fail)
		rc = mon_error_set(err, MON_EPRECOND, "rolled back on purpose");
	return rc;
}

static void test_db_bus_delivers_after_commit_not_after_rollback(void **state)
{
	struct inbox in = {0};
	struct db_bus *bus = start_bus("alerts", &in);
	struct mon_error err = {0};

	struct publish rolled_back = {"alerts", "never", true};
	assert_int_equal(db_tx_run(pool, 5000, publish_fn, &rolled_back, &err), MON_EPRECOND);
	struct publish committed = {"alerts", "{\"seq\":1}", false};
	assert_int_equal(db_tx_run(pool, 5000, publish_fn, &committed, &err), 0);
	assert_true(wait_count(&in, 1, 3000));
	test_sleep_ms(200); /* nothing else arrives */
	assert_int_equal(inbox_count(&in), 1);
	assert_string_equal(in.last_channel, "alerts");
	assert_string_equal(in.last_payload, "{\"seq\":1}");

	/* other channels, including one differing in case only, are not ours */
	struct publish other = {"Alerts", "x", false};
	assert_int_equal(db_tx_run(pool, 5000, publish_fn, &other, &err), 0);
	test_sleep_ms(200);
	assert_int_equal(inbox_count(&in), 1);
	db_bus_destroy(bus);
}

static void test_db_bus_two_replicas_both_receive(void **state)
{
	struct inbox a = {0};
	struct inbox b = {0};
	struct db_bus *bus_a = start_bus("health", &a);
	struct db_bus *bus_b = start_bus("health", &b);
	struct mon_error err = {0};
	for (int i = 0; i < 5; i++) {
		struct publish p = {"health", "changed", false};
		assert_int_equal(db_tx_run(pool, 5000, publish_fn, &p, &err), 0);
	}
	assert_true(wait_count(&a, 5, 3000));
	assert_true(wait_count(&b, 5, 3000));
	db_bus_destroy(bus_a);
	db_bus_destroy(bus_b);
}

static void test_db_bus_subscribe_after_start(void **state)
{
	struct inbox first = {0};
	struct inbox late = {0};
	pthread_mutex_init(&late.mu, NULL);
	struct db_bus *bus = start_bus("first", &first);
	struct mon_error err = {0};
	assert_int_equal(db_bus_subscribe(bus, "Late Channel", on_event, &late, &err), 0);
	test_sleep_ms(300); /* the bus LISTENs within one poll slice */
	struct publish p = {"Late Channel", "hello", false};
	assert_int_equal(db_tx_run(pool, 5000, publish_fn, &p, &err), 0);
	assert_true(wait_count(&late, 1, 3000));
	assert_string_equal(late.last_payload, "hello");
	assert_int_equal(inbox_count(&first), 0);
	db_bus_destroy(bus);
}

static void test_db_bus_reconnects_after_connection_loss(void **state)
{
	struct inbox in = {0};
	struct db_bus *bus = start_bus("metrics", &in);
	/* kill the bus's backend as an administrator would */
	test_db_exec(pool, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
	                   "WHERE application_name = 'monitord-bus' AND datname = current_database()");
	bool reconnected = false;
	for (int i = 0; i < 500 && !reconnected; i++) {
		pthread_mutex_lock(&in.mu);
		reconnected = in.reconnects > 0;
		pthread_mutex_unlock(&in.mu);
		if (!reconnected)
			test_sleep_ms(10);
	}
	assert_true(reconnected);
	assert_true(wait_connected(bus));
	struct mon_error err = {0};
	struct publish p = {"metrics", "after", false};
	assert_int_equal(db_tx_run(pool, 5000, publish_fn, &p, &err), 0);
	assert_true(wait_count(&in, 1, 3000));
	assert_string_equal(in.last_payload, "after");

	/* destroy is prompt */
	int64_t t0 = db_now_ms_for_tests();
	db_bus_destroy(bus);
	assert_true(db_now_ms_for_tests() - t0 < 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_db_bus_delivers_after_commit_not_after_rollback),
	        cmocka_unit_test(test_db_bus_two_replicas_both_receive),
	        cmocka_unit_test(test_db_bus_subscribe_after_start),
	        cmocka_unit_test(test_db_bus_reconnects_after_connection_loss),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
