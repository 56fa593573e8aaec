/*
 * The database going away and coming back, on a private cluster this test
 * starts and stops with scripts/pgtmp.sh: while it is down the pool answers
 * MON_EUNAVAIL promptly (never hangs, never MON_EINTERNAL), and once it is
 * back the same pool and bus recover without being recreated.
 */
#include "test_db_common.h"

#include <pthread.h>

static char dir[64];
static char conninfo[256];

static void pgtmp(const char *cmd)
{
	const char *src = getenv("MON_SOURCE_DIR");
	if (src == NULL)
		fail_msg("MON_SOURCE_DIR is not set (run through ctest)");
	char line[1024];
	snprintf(line, sizeof(line), "'%s/scripts/pgtmp.sh' %s '%s/pg' >/dev/null", src, cmd, dir);
	if (system(line) != 0)
		fail_msg("pgtmp.sh %s failed", cmd);
}

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/mon_db_unavail_XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	pgtmp("start");
	snprintf(conninfo, sizeof(conninfo), "host=%s/pg user=postgres dbname=postgres", dir);
	return 0;
}

static int teardown(void **state)
{
	pgtmp("stop");
	char line[128];
	snprintf(line, sizeof(line), "rm -rf '%s'", dir);
	return system(line) == 0 ? 0 : -1;
}

static int reconnects;
static pthread_mutex_t reconnects_mu = PTHREAD_MUTEX_INITIALIZER;

static void on_reconnect(void *arg)
{
	pthread_mutex_lock(&reconnects_mu);
	reconnects++;
	pthread_mutex_unlock(&reconnects_mu);
}

static void on_event(const char *channel, const char *payload, void *arg)
{
}

static int noop_tx(struct db_conn *c, void *arg, struct mon_error *err)
{
	return db_exec(c, "SELECT 1", 0, NULL, NULL, err);
}

static void test_db_unavailable_while_down_then_recovers(void **state)
{
	struct db_pool *pool = test_db_pool(conninfo, 2);
	struct mon_error err = {0};
	struct db_bus *bus = NULL;
	assert_int_equal(db_bus_create(conninfo, &bus, &err), 0);
	assert_int_equal(db_bus_subscribe(bus, "x", on_event, NULL, &err), 0);
	db_bus_on_reconnect(bus, on_reconnect, NULL);
	assert_int_equal(db_bus_start(bus, &err), 0);

	/* warm up both connections */
	struct db_conn *a = NULL;
	struct db_conn *b = NULL;
	assert_int_equal(db_pool_acquire(pool, 2000, &a, &err), 0);
	assert_int_equal(db_pool_acquire(pool, 2000, &b, &err), 0);
	db_pool_release(pool, a);
	db_pool_release(pool, b);
	for (int i = 0; i < 300 && !db_bus_is_connected(bus); i++)
		test_sleep_ms(10);
	assert_true(db_bus_is_connected(bus));

	pgtmp("stop");
	for (int i = 0; i < 3; i++) {
		int64_t t0 = db_now_ms_for_tests();
		assert_int_equal(db_pool_ping(pool, 1000, &err), MON_EUNAVAIL);
		assert_true(db_now_ms_for_tests() - t0 < 3000);
		assert_null(strstr(err.msg, "SELECT"));
	}
	assert_int_equal(db_tx_run(pool, 1000, noop_tx, NULL, &err), MON_EUNAVAIL);
	assert_int_equal(db_read_run(pool, 1000, noop_tx, NULL, &err), MON_EUNAVAIL);
	assert_int_equal(db_read_run(pool, DB_NO_DEADLINE, noop_tx, NULL, &err), MON_EUNAVAIL);
	for (int i = 0; i < 300 && db_bus_is_connected(bus); i++)
		test_sleep_ms(10);
	assert_false(db_bus_is_connected(bus));

	pgtmp("start");
	int rc = -1;
	for (int i = 0; i < 50 && rc != 0; i++) {
		rc = db_pool_ping(pool, 1000, &err);
		if (rc != 0)
			test_sleep_ms(100);
	}
	assert_int_equal(rc, 0);
	assert_int_equal(db_tx_run(pool, 1000, noop_tx, NULL, &err), 0);
	assert_int_equal(db_read_run(pool, 1000, noop_tx, NULL, &err), 0);
	/* the bus backs off up to 5 s between attempts */
	bool reconnected = false;
	for (int i = 0; i < 800 && !reconnected; i++) {
		pthread_mutex_lock(&reconnects_mu);
		reconnected = reconnects > 0;
		pthread_mutex_unlock(&reconnects_mu);
		if (!reconnected)
			test_sleep_ms(10);
	}
	assert_true(reconnected);
	assert_true(db_bus_is_connected(bus));
	db_bus_destroy(bus);
	db_pool_destroy(pool);
}

static void test_db_unavailable_pool_create_while_down(void **state)
{
	pgtmp("stop");
	/* creating a pool needs no server; using it says unavailable */
	struct db_pool *pool = test_db_pool(conninfo, 1);
	struct mon_error err = {0};
	assert_int_equal(db_pool_ping(pool, 500, &err), MON_EUNAVAIL);
	assert_int_equal(db_migrate(pool, &err), MON_EUNAVAIL);
	pgtmp("start");
	assert_int_equal(db_pool_ping(pool, 2000, &err), 0);
	db_pool_destroy(pool);

	/* a conninfo that cannot be parsed is refused up front, without echoing it */
	struct db_config cfg = {.conninfo = "host=x password='secret"};
	struct db_pool *bad = NULL;
	assert_int_equal(db_pool_create(&cfg, &bad, &err), MON_EINVAL);
	assert_null(bad);
	assert_null(strstr(err.msg, "secret"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_db_unavailable_while_down_then_recovers),
	        cmocka_unit_test(test_db_unavailable_pool_create_while_down),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
