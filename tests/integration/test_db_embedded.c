/*
 * The embedded cluster: first start runs initdb and creates the database
 * "monitord"; later starts reuse the data; a crash (SIGKILL of the
 * postmaster) or a postmaster.pid naming some other live process does not
 * prevent the next start; settings are durable and no TCP port is opened.
 */
#include "test_db_common.h"

#include <signal.h>
#include <sys/stat.h>

static char dir[64];
static char data_dir[96];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/mon_db_emb_XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(data_dir, sizeof(data_dir), "%s/data", dir);
	return 0;
}

static int teardown(void **state)
{
	char line[128];
	snprintf(line, sizeof(line), "rm -rf '%s'", dir);
	return system(line) == 0 ? 0 : -1;
}

static struct db_embedded *start(char *conninfo, size_t len)
{
	struct db_embedded *emb = NULL;
	struct mon_error err = {0};
	int rc = db_embedded_start(data_dir, &emb, conninfo, len, &err);
	if (rc != 0)
		fail_msg("db_embedded_start: %s", err.msg);
	return emb;
}

static long postmaster_pid(void)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/postmaster.pid", data_dir);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	long pid = 0;
	if (fscanf(f, "%ld", &pid) != 1)
		pid = 0;
	fclose(f);
	return pid;
}

static void test_db_embedded_start_stop_restart(void **state)
{
	char conninfo[512];
	struct db_embedded *emb = start(conninfo, sizeof(conninfo));
	assert_non_null(strstr(conninfo, "dbname=monitord"));
	struct db_pool *pool = test_db_pool(conninfo, 1);
	char v[128];
	test_db_scalar(pool, "SELECT current_database()", v, sizeof(v));
	assert_string_equal(v, "monitord");
	test_db_scalar(pool, "SHOW fsync", v, sizeof(v));
	assert_string_equal(v, "on");
	test_db_scalar(pool, "SHOW synchronous_commit", v, sizeof(v));
	assert_string_equal(v, "on");
	test_db_scalar(pool, "SHOW full_page_writes", v, sizeof(v));
	assert_string_equal(v, "on");
	test_db_scalar(pool, "SHOW listen_addresses", v, sizeof(v));
	assert_string_equal(v, "");
	struct mon_error err = {0};
	assert_int_equal(db_migrate(pool, &err), 0);
	test_db_exec(pool, "CREATE TABLE kept (v text)");
	test_db_exec(pool, "INSERT INTO kept VALUES ('durable')");
	db_pool_destroy(pool);
	db_embedded_stop(emb);
	assert_int_equal(postmaster_pid(), 0);

	/* a second start reuses the cluster: no initdb, data still there */
	emb = start(conninfo, sizeof(conninfo));
	pool = test_db_pool(conninfo, 1);
	test_db_scalar(pool, "SELECT v FROM kept", v, sizeof(v));
	assert_string_equal(v, "durable");
	db_pool_destroy(pool);

	/* starting while it already runs reuses the running server */
	struct db_embedded *again = start(conninfo, sizeof(conninfo));
	db_embedded_stop(again);
	free(emb); /* stopped through "again": same cluster */
}

static void test_db_embedded_survives_crash_and_stale_pid(void **state)
{
	char conninfo[512];
	struct db_embedded *emb = start(conninfo, sizeof(conninfo));
	long pid = postmaster_pid();
	assert_true(pid > 0);
	assert_int_equal(kill((pid_t)pid, SIGKILL), 0);
	/* wait for the postmaster's children to notice and exit */
	test_sleep_ms(1500);
	free(emb);

	emb = start(conninfo, sizeof(conninfo));
	struct db_pool *pool = test_db_pool(conninfo, 1);
	char v[64];
	test_db_scalar(pool, "SELECT v FROM kept", v, sizeof(v));
	assert_string_equal(v, "durable");
	db_pool_destroy(pool);
	db_embedded_stop(emb);

	/* a postmaster.pid naming a live process that is not a postgres (pid reuse after a reboot) */
	char path[128];
	snprintf(path, sizeof(path), "%s/postmaster.pid", data_dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "%ld\n%s\n", (long)getpid(), data_dir);
	fclose(f);
	emb = start(conninfo, sizeof(conninfo));
	pool = test_db_pool(conninfo, 1);
	test_db_scalar(pool, "SELECT v FROM kept", v, sizeof(v));
	assert_string_equal(v, "durable");
	db_pool_destroy(pool);
	db_embedded_stop(emb);
}

static void test_db_embedded_rejects_bad_data_dir(void **state)
{
	struct db_embedded *emb = NULL;
	struct mon_error err = {0};
	char conninfo[256];
	assert_int_equal(db_embedded_start("", &emb, conninfo, sizeof(conninfo), &err), MON_EINVAL);
	char longdir[200];
	memset(longdir, 'a', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[1] = 't';
	longdir[2] = 'm';
	longdir[3] = 'p';
	longdir[4] = '/';
	longdir[sizeof(longdir) - 1] = '\0';
	assert_int_equal(db_embedded_start(longdir, &emb, conninfo, sizeof(conninfo), &err), MON_EINVAL);
	rmdir(longdir);
	assert_null(emb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_db_embedded_start_stop_restart),
	        cmocka_unit_test(test_db_embedded_survives_crash_and_stale_pid),
	        cmocka_unit_test(test_db_embedded_rejects_bad_data_dir),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
