/*
 * The batching metrics writer (<monitoring/metrics_writer.h>) against a
 * real monitord on a database of its own: batches sent when full and when
 * their oldest point has waited max_delay_ms, retries across a server
 * restart without a duplicate row, idempotent re-sends counted as
 * duplicates, invalid points reported to the callback (partial and atomic
 * batches), a full buffer, and points abandoned at close. The rows are
 * checked in PostgreSQL directly.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <monitoring/metrics_writer.h>
#include <monitoring/monitoring.h>

#include "test_db_common.h"

#define ST_OK 0
#define ST_CANCELLED 1
#define ST_INVALID_ARGUMENT 3
#define ST_RESOURCE_EXHAUSTED 8
#define ST_UNAUTHENTICATED 16

static struct test_db g_db;
static char g_workdir[256];
static char g_port_file[300];
static char g_target[64];
static char g_key[256];
static pid_t g_server = -1;
static mon_client *g_client;

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static const char *monitord_path(void)
{
	static char path[512];
	const char *build = getenv("MON_BUILD_DIR");
	snprintf(path, sizeof(path), "%s/bin/monitord", build != NULL ? build : "build");
	return path;
}

/* Starts monitord on listen ("127.0.0.1:0" the first time, then the same port). */
static void server_start(const char *listen)
{
	unlink(g_port_file);
	char log_path[320];
	snprintf(log_path, sizeof(log_path), "%s/monitord.log", g_workdir);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		FILE *log = freopen(log_path, "a", stdout);
		if (log != NULL)
			dup2(fileno(stdout), 2);
		execl(monitord_path(), "monitord", "--listen", listen, "--port-file", g_port_file, "--database",
		      g_db.conninfo, "--log-level", "warn", (char *)NULL);
		_exit(127);
	}
	g_server = pid;
	int64_t deadline = mono_ms() + 60000;
	for (;;) {
		FILE *f = fopen(g_port_file, "r");
		if (f != NULL) {
			char buf[64] = {0};
			size_t n = fread(buf, 1, sizeof(buf) - 1, f);
			fclose(f);
			if (n > 0 && buf[n - 1] == '\n')
				buf[n - 1] = '\0';
			if (n > 0) {
				snprintf(g_target, sizeof(g_target), "%s", buf);
				return;
			}
		}
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid)
			fail_msg("monitord exited while starting (see %s)", log_path);
		if (mono_ms() > deadline)
			fail_msg("monitord did not start within 60 s");
		sleep_ms(20);
	}
}

static void server_stop(void)
{
	if (g_server <= 0)
		return;
	kill(g_server, SIGTERM);
	int st = 0;
	waitpid(g_server, &st, 0);
	g_server = -1;
}

/* Runs a query returning one integer. */
static long long sql_int(const char *fmt, ...) MON_PRINTF(1, 2);

static long long sql_int(const char *fmt, ...)
{
	char sql[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	PGconn *pg = PQconnectdb(g_db.conninfo);
	if (PQstatus(pg) != CONNECTION_OK)
		fail_msg("connect: %s", PQerrorMessage(pg));
	PGresult *res = PQexec(pg, sql);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		fail_msg("%s: %s", sql, PQerrorMessage(pg));
	long long v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	PQfinish(pg);
	return v;
}

static void client_open(void)
{
	mon_client_options o = {.target = g_target, .api_key = g_key};
	mon_status st;
	if (mon_client_open(&o, &g_client, &st) != 0)
		fail_msg("mon_client_open: %s", st.message);
}

/* An editor key: `monitord admin bootstrap`, then wait until the server knows it. */
static void make_key(void)
{
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "%s admin bootstrap --email writer@example.com --database '%s' 2>/dev/null",
	         monitord_path(), g_db.conninfo);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	char line[256];
	g_key[0] = '\0';
	while (fgets(line, sizeof(line), p) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] != '\0')
			snprintf(g_key, sizeof(g_key), "%s", line);
	}
	assert_int_equal(pclose(p), 0);
	assert_true(g_key[0] != '\0');
	client_open();
	int64_t deadline = mono_ms() + 30000;
	for (;;) {
		Monitoring__V1__GetCallerIdentityRequest req = MONITORING__V1__GET_CALLER_IDENTITY_REQUEST__INIT;
		Monitoring__V1__GetCallerIdentityResponse *resp = NULL;
		mon_status st;
		if (mon_access_service_get_caller_identity(g_client, &req, &resp, NULL, &st) == 0) {
			mon_message_free(&resp->base);
			return;
		}
		if (st.code != ST_UNAUTHENTICATED || mono_ms() > deadline)
			fail_msg("GetCallerIdentity: %s: %s", mon_status_code_name(st.code), st.message);
		sleep_ms(50);
	}
}

static int setup_all(void **state)
{
	(void)state;
	snprintf(g_workdir, sizeof(g_workdir), "/tmp/mon-mwriter-%ld", (long)getpid());
	mkdir(g_workdir, 0755);
	snprintf(g_port_file, sizeof(g_port_file), "%s/port", g_workdir);
	test_db_create(&g_db, "mwriter");
	server_start("127.0.0.1:0");
	make_key();
	return 0;
}

static int teardown_all(void **state)
{
	(void)state;
	mon_client_close(g_client);
	server_stop();
	test_db_drop(&g_db);
	return 0;
}

/* --- points ---------------------------------------------------------------- */

/* A point of metric name at now - 120 s + i ms (distinct keys for i < 120000). */
struct point_buf {
	Monitoring__V1__MetricPoint p;
	Google__Protobuf__Timestamp ts;
	Google__Protobuf__DoubleValue p95;
	char name[64];
};

static int64_t g_base_s;

static void point_make(struct point_buf *b, const char *name, int i, double p95)
{
	Monitoring__V1__MetricPoint p = MONITORING__V1__METRIC_POINT__INIT;
	Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	Google__Protobuf__DoubleValue dv = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT;
	if (g_base_s == 0)
		g_base_s = (int64_t)time(NULL) - 120;
	b->p = p;
	b->ts = ts;
	b->p95 = dv;
	snprintf(b->name, sizeof(b->name), "%s", name);
	b->ts.seconds = g_base_s + i / 1000;
	b->ts.nanos = (i % 1000) * 1000000;
	b->p95.value = p95;
	b->p.time = &b->ts;
	b->p.metric_name = b->name;
	b->p.endpoint = "/api/writer";
	b->p.method = "GET";
	b->p.p95 = &b->p95;
	b->p.request_count = 10;
	b->p.error_count = 1;
}

static void add_points(mon_metrics_writer *w, const char *name, int from, int n)
{
	for (int i = from; i < from + n; i++) {
		struct point_buf b;
		point_make(&b, name, i, 12.5);
		mon_status st;
		if (mon_metrics_writer_add(w, &b.p, &st) != 0)
			fail_msg("add %d: %s: %s", i, mon_status_code_name(st.code), st.message);
	}
}

static long long rows_of(const char *name)
{
	return sql_int("SELECT count(*) FROM tb_performance_metric WHERE metric_name = '%s'", name);
}

static void wait_stats(mon_metrics_writer *w, uint64_t sent, int64_t timeout_ms, mon_metrics_writer_stats *out)
{
	int64_t deadline = mono_ms() + timeout_ms;
	for (;;) {
		mon_metrics_writer_stats_get(w, out);
		if (out->points_sent >= sent || mono_ms() > deadline)
			return;
		sleep_ms(10);
	}
}

/* What the error callback saw. */
struct failures {
	pthread_mutex_t mu;
	int calls;
	int code;
	size_t points_n;
	size_t errors_n;
	char field[64];
	int32_t error_index;
	double first_p95;
};

static void on_error(void *data, const mon_metrics_writer_failure *f)
{
	struct failures *fs = data;
	pthread_mutex_lock(&fs->mu);
	fs->calls++;
	fs->code = f->code;
	fs->points_n += f->points_n;
	fs->errors_n += f->errors_n;
	if (f->errors_n > 0) {
		snprintf(fs->field, sizeof(fs->field), "%s", f->errors[0]->field);
		fs->error_index = f->errors[0]->index;
	}
	if (f->points_n > 0 && f->points[0]->p95 != NULL)
		fs->first_p95 = f->points[0]->p95->value;
	pthread_mutex_unlock(&fs->mu);
}

/* --- tests ----------------------------------------------------------------- */

/* A batch goes as soon as it holds max_batch_points, long before max_delay_ms. */
static void test_metrics_writer_flushes_on_size(void **state)
{
	(void)state;
	mon_metrics_writer_options o = {.max_batch_points = 100, .max_delay_ms = 60000};
	mon_metrics_writer *w = NULL;
	mon_status st;
	assert_int_equal(mon_metrics_writer_create(g_client, &o, &w, &st), 0);
	add_points(w, "mw_size", 0, 250);
	mon_metrics_writer_stats s;
	wait_stats(w, 200, 10000, &s);
	assert_int_equal(s.points_sent, 200);
	assert_int_equal(s.batches_sent, 2);
	sleep_ms(300);
	mon_metrics_writer_stats_get(w, &s);
	assert_int_equal(s.points_sent, 200); /* the last 50 wait for more or for their delay */
	assert_int_equal(s.points_buffered, 50);
	assert_int_equal(rows_of("mw_size"), 200);
	assert_int_equal(mon_metrics_writer_flush(w, 10000, &st), 0);
	mon_metrics_writer_stats_get(w, &s);
	assert_int_equal(s.points_sent, 250);
	assert_int_equal(s.points_inserted, 250);
	assert_int_equal(s.batches_sent, 3);
	assert_int_equal(rows_of("mw_size"), 250);
	assert_int_equal(mon_metrics_writer_close(w, 10000, &st), 0);
}

/* A batch that does not fill goes when its first point has waited max_delay_ms. */
static void test_metrics_writer_flushes_on_time(void **state)
{
	(void)state;
	mon_metrics_writer_options o = {.max_batch_points = 1000, .max_delay_ms = 400};
	mon_metrics_writer *w = NULL;
	mon_status st;
	assert_int_equal(mon_metrics_writer_create(g_client, &o, &w, &st), 0);
	int64_t t0 = mono_ms();
	add_points(w, "mw_time", 0, 10);
	mon_metrics_writer_stats s;
	sleep_ms(200);
	mon_metrics_writer_stats_get(w, &s);
	assert_int_equal(s.points_sent, 0);
	wait_stats(w, 10, 5000, &s);
	int64_t took = mono_ms() - t0;
	assert_int_equal(s.points_sent, 10);
	assert_int_equal(s.batches_sent, 1);
	assert_true(took >= 400);
	assert_true(took < 3000);
	assert_int_equal(rows_of("mw_time"), 10);
	assert_int_equal(mon_metrics_writer_close(w, 10000, &st), 0);
}

/*
 * The server goes away with points buffered and in flight: the writer
 * retries the same batches until it is back, every point is stored once.
 */
static void test_metrics_writer_retries_across_restart(void **state)
{
	(void)state;
	mon_metrics_writer_options o = {.max_batch_points = 500,
	                                .max_delay_ms = 100,
	                                .retry_initial_ms = 50,
	                                .retry_max_ms = 500,
	                                .call_timeout_ms = 3000};
	mon_metrics_writer *w = NULL;
	mon_status st;
	assert_int_equal(mon_metrics_writer_create(g_client, &o, &w, &st), 0);
	add_points(w, "mw_restart", 0, 1000);
	assert_int_equal(mon_metrics_writer_flush(w, 10000, &st), 0);

	char listen[64];
	snprintf(listen, sizeof(listen), "%s", g_target);
	server_stop();
	add_points(w, "mw_restart", 1000, 3000);
	sleep_ms(1500); /* several attempts fail with UNAVAILABLE */
	mon_metrics_writer_stats s;
	mon_metrics_writer_stats_get(w, &s);
	assert_true(s.retries >= 1);
	assert_int_equal(s.points_sent, 1000);
	server_start(listen);
	/* Re-sent batches of points recorded before the stop count as duplicates. */
	add_points(w, "mw_restart", 500, 500);
	if (mon_metrics_writer_flush(w, 60000, &st) != 0)
		fail_msg("flush: %s: %s", mon_status_code_name(st.code), st.message);
	mon_metrics_writer_stats_get(w, &s);
	assert_int_equal(s.points_failed, 0);
	assert_int_equal(s.points_sent, 4500);
	assert_int_equal(s.points_inserted, 4000);
	assert_int_equal(s.points_duplicate, 500);
	assert_true(s.points_retried >= 500);
	assert_int_equal(rows_of("mw_restart"), 4000);
	assert_int_equal(sql_int("SELECT count(*) FROM (SELECT DISTINCT time, endpoint FROM tb_performance_metric"
	                         " WHERE metric_name = 'mw_restart') d"),
	                 4000);
	assert_int_equal(mon_metrics_writer_close(w, 10000, &st), 0);
}

/* An invalid point in a partial batch: the others are stored, it reaches the callback with its error. */
static void test_metrics_writer_reports_invalid_point(void **state)
{
	(void)state;
	struct failures fs = {.mu = PTHREAD_MUTEX_INITIALIZER};
	mon_metrics_writer_options o = {.max_batch_points = 100, .on_error = on_error, .on_error_data = &fs};
	mon_metrics_writer *w = NULL;
	mon_status st;
	assert_int_equal(mon_metrics_writer_create(g_client, &o, &w, &st), 0);
	add_points(w, "mw_invalid", 0, 5);
	struct point_buf b;
	point_make(&b, "mw_invalid", 5, -1.0);
	assert_int_equal(mon_metrics_writer_add(w, &b.p, &st), 0);
	add_points(w, "mw_invalid", 6, 4);
	assert_int_not_equal(mon_metrics_writer_flush(w, 10000, &st), 0);
	assert_int_equal(st.code, ST_INVALID_ARGUMENT);
	assert_int_equal(fs.calls, 1);
	assert_int_equal(fs.code, ST_INVALID_ARGUMENT);
	assert_int_equal(fs.points_n, 1);
	assert_true(fs.errors_n >= 1);
	assert_string_equal(fs.field, "p95");
	assert_int_equal(fs.error_index, 0);
	assert_true(fs.first_p95 < 0);
	mon_metrics_writer_stats s;
	mon_metrics_writer_stats_get(w, &s);
	assert_int_equal(s.points_sent, 9);
	assert_int_equal(s.points_failed, 1);
	assert_int_equal(rows_of("mw_invalid"), 9);
	/* Later points are not affected. */
	add_points(w, "mw_invalid", 10, 3);
	assert_int_equal(mon_metrics_writer_flush(w, 10000, &st), 0);
	assert_int_not_equal(mon_metrics_writer_close(w, 10000, &st), 0); /* 1 point was not recorded */
	assert_int_equal(rows_of("mw_invalid"), 12);
}

/* An atomic batch with an invalid point: nothing stored, the whole batch reported with every error. */
static void test_metrics_writer_atomic_batch(void **state)
{
	(void)state;
	struct failures fs = {.mu = PTHREAD_MUTEX_INITIALIZER};
	mon_metrics_writer_options o = {
	        .max_batch_points = 100, .is_atomic = 1, .on_error = on_error, .on_error_data = &fs};
	mon_metrics_writer *w = NULL;
	mon_status st;
	assert_int_equal(mon_metrics_writer_create(g_client, &o, &w, &st), 0);
	add_points(w, "mw_atomic", 0, 3);
	struct point_buf b;
	point_make(&b, "mw_atomic", 3, -2.0);
	assert_int_equal(mon_metrics_writer_add(w, &b.p, &st), 0);
	assert_int_not_equal(mon_metrics_writer_flush(w, 10000, &st), 0);
	assert_int_equal(fs.calls, 1);
	assert_int_equal(fs.code, ST_INVALID_ARGUMENT);
	assert_int_equal(fs.points_n, 4);
	assert_true(fs.errors_n >= 1);
	assert_string_equal(fs.field, "p95");
	assert_int_equal(fs.error_index, 3);
	assert_int_equal(rows_of("mw_atomic"), 0);
	assert_int_not_equal(mon_metrics_writer_close(w, 10000, &st), 0);
}

/* With the server down, a full buffer fails add at once (add_timeout_ms < 0), and close abandons the rest. */
static void test_metrics_writer_full_buffer_and_close(void **state)
{
	(void)state;
	struct failures fs = {.mu = PTHREAD_MUTEX_INITIALIZER};
	mon_metrics_writer_options o = {.max_batch_points = 10,
	                                .max_buffered_points = 20,
	                                .add_timeout_ms = -1,
	                                .max_delay_ms = 10,
	                                .retry_initial_ms = 20,
	                                .retry_max_ms = 100,
	                                .call_timeout_ms = 1000,
	                                .on_error = on_error,
	                                .on_error_data = &fs};
	char listen[64];
	snprintf(listen, sizeof(listen), "%s", g_target);
	server_stop();
	mon_metrics_writer *w = NULL;
	mon_status st;
	assert_int_equal(mon_metrics_writer_create(g_client, &o, &w, &st), 0);
	add_points(w, "mw_full", 0, 20);
	struct point_buf b;
	point_make(&b, "mw_full", 20, 1.0);
	assert_int_not_equal(mon_metrics_writer_add(w, &b.p, &st), 0);
	assert_int_equal(st.code, ST_RESOURCE_EXHAUSTED);
	assert_non_null(strstr(st.message, "buffer full"));
	int64_t t0 = mono_ms();
	assert_int_not_equal(mon_metrics_writer_close(w, 300, &st), 0);
	assert_int_equal(st.code, ST_CANCELLED);
	assert_true(mono_ms() - t0 < 5000);
	assert_int_equal(fs.points_n, 20);
	assert_int_equal(fs.code, ST_CANCELLED);
	server_start(listen);
	assert_int_equal(rows_of("mw_full"), 0);
}

/* The same key twice in a row: two batches, the later value is stored (inserted, then updated). */
static void test_metrics_writer_same_key_replaces(void **state)
{
	(void)state;
	mon_metrics_writer_options o = {.max_batch_points = 100, .max_delay_ms = 100};
	mon_metrics_writer *w = NULL;
	mon_status st;
	assert_int_equal(mon_metrics_writer_create(g_client, &o, &w, &st), 0);
	add_points(w, "mw_samekey", 0, 3);
	struct point_buf b;
	point_make(&b, "mw_samekey", 1, 99.5);
	assert_int_equal(mon_metrics_writer_add(w, &b.p, &st), 0);
	if (mon_metrics_writer_flush(w, 10000, &st) != 0)
		fail_msg("flush: %s: %s", mon_status_code_name(st.code), st.message);
	mon_metrics_writer_stats s;
	mon_metrics_writer_stats_get(w, &s);
	assert_int_equal(s.batches_sent, 2);
	assert_int_equal(s.points_inserted, 3);
	assert_int_equal(s.points_updated, 1);
	assert_int_equal(s.points_failed, 0);
	assert_int_equal(rows_of("mw_samekey"), 3);
	assert_int_equal(sql_int("SELECT count(*) FROM tb_performance_metric WHERE metric_name = 'mw_samekey'"
	                         " AND p95 = 99.5"),
	                 1);
	assert_int_equal(mon_metrics_writer_close(w, 10000, &st), 0);
}

static void test_metrics_writer_bad_options(void **state)
{
	(void)state;
	mon_metrics_writer *w = NULL;
	mon_status st;
	mon_metrics_writer_options o = {.max_batch_points = 5001};
	assert_int_not_equal(mon_metrics_writer_create(g_client, &o, &w, &st), 0);
	assert_int_equal(st.code, ST_INVALID_ARGUMENT);
	assert_non_null(strstr(st.message, "max_batch_points"));
	o = (mon_metrics_writer_options){.max_batch_points = 100, .max_buffered_points = 50};
	assert_int_not_equal(mon_metrics_writer_create(g_client, &o, &w, &st), 0);
	assert_non_null(strstr(st.message, "max_buffered_points"));
	assert_null(w);
	assert_int_equal(mon_metrics_writer_close(NULL, 0, &st), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_metrics_writer_bad_options),
	        cmocka_unit_test(test_metrics_writer_flushes_on_size),
	        cmocka_unit_test(test_metrics_writer_flushes_on_time),
	        cmocka_unit_test(test_metrics_writer_retries_across_restart),
	        cmocka_unit_test(test_metrics_writer_reports_invalid_point),
	        cmocka_unit_test(test_metrics_writer_atomic_batch),
	        cmocka_unit_test(test_metrics_writer_same_key_replaces),
	        cmocka_unit_test(test_metrics_writer_full_buffer_and_close),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
