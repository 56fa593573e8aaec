/*
 * ingest_bench: metric points per second committed into
 * tb_performance_metric three ways, with the same concurrency and the same
 * rows, in alternating rounds:
 *
 *   rpc     MetricsService.RecordMetrics through libmonitoring's generated
 *           stub: C clients, each on a connection of its own, each sending
 *           B batches of P points (a batch is acknowledged once committed);
 *   copy    the same batches loaded by libpq COPY straight into the table,
 *           one COPY (one transaction) per batch, C connections;
 *   insert  single-row INSERTs in autocommit, C connections, fewer rows.
 *
 * Every point has a key of its own (timestamps a microsecond apart, within
 * the last minutes), so every mode inserts new rows. With --watch N, a
 * last set of rpc rounds runs with N WatchMetrics subscribers (filtered on
 * the bench's metric name) and reports the points per second they receive.
 * Prints per-round numbers, medians, and the ratio rpc/copy.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <monitoring/monitoring.h>

#define METRIC_NAME "bench.http.latency"
#define CALL_TIMEOUT_MS 60000
#define MAX_CLIENTS 64
#define MAX_ROUNDS 50
#define MAX_SUBSCRIBERS 1000
#define SUBSCRIBERS_PER_CHANNEL 50

enum mode { MODE_RPC, MODE_COPY, MODE_INSERT, MODE_STAGED, MODE_STAGED_LOG, MODE_N };
static const char *const MODE_NAME[MODE_N] = {"RecordMetrics", "COPY", "INSERT", "COPY+stage", "COPY+stage+log"};
static const char *const MODE_FLAG[MODE_N] = {"rpc", "copy", "insert", "staged", "staged-log"};

struct bench {
	const char *target;
	const char *token;
	const char *database;
	int clients_n;
	int batches_n; /* per client and round */
	int batch_points;
	int insert_rows; /* per client and round */
	int rounds_n;
	int watch_n; /* subscribers in the watch rounds; 0: none */
	int watch_rounds_n;
	bool is_mode_on[MODE_N];

	int64_t base_us;      /* epoch microseconds of the first point */
	atomic_llong next_us; /* next free timestamp offset */
	double rate[MODE_N][MAX_ROUNDS];
	double p50_ms[MODE_N][MAX_ROUNDS]; /* per batch (per row for INSERT) */
	double p99_ms[MODE_N][MAX_ROUNDS];
	double last_p50_ms, last_p99_ms; /* of the latest round */
};

struct worker {
	struct bench *b;
	enum mode mode;
	int idx;
	pthread_t thread;
	int64_t first_us; /* this worker's timestamps: first_us + k */
	long long points_n;
	int failed;
	char error[600];
	mon_client *client; /* rpc */
	PGconn *pg;         /* copy, insert */
	int64_t *lat_ns;    /* per batch (per row for INSERT) */
	size_t lat_n;
};

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, c = *(const int64_t *)y;
	return (a > c) - (a < c);
}

static int64_t epoch_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The values of point k of worker idx: what every mode writes. */
struct values {
	int64_t time_us;
	char endpoint[64];
	double p50, p95, p99, mean, min, max, throughput;
	int status_code, request_count, error_count;
};

static void values_of(int idx, int64_t time_us, long long k, struct values *v)
{
	v->time_us = time_us;
	snprintf(v->endpoint, sizeof(v->endpoint), "/api/bench/%d", idx);
	double base = 10.0 + (double)(k % 50);
	v->min = base / 2;
	v->p50 = base;
	v->mean = base + 1.5;
	v->p95 = base * 2;
	v->p99 = base * 3;
	v->max = base * 4;
	v->throughput = 100.0 + (double)(k % 7);
	v->status_code = 200;
	v->request_count = 1000;
	v->error_count = (int)(k % 5);
}

static void fail(struct worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct worker *w, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(w->error, sizeof(w->error), fmt, ap);
	va_end(ap);
	w->failed = 1;
}

/* --- rpc --------------------------------------------------------------------- */

/* One RecordMetricsRequest's worth of messages, reused across batches. */
struct rpc_batch {
	Monitoring__V1__MetricPoint *points;
	Monitoring__V1__MetricPoint **ptrs;
	Google__Protobuf__Timestamp *ts;
	Google__Protobuf__DoubleValue *dv; /* 7 per point */
	Google__Protobuf__Int32Value *status;
	Monitoring__V1__MetricPoint__TagsEntry *tags; /* 2 per point */
	Monitoring__V1__MetricPoint__TagsEntry **tag_ptrs;
	char (*endpoint)[64];
};

static int rpc_batch_init(struct rpc_batch *rb, int n)
{
	rb->points = calloc((size_t)n, sizeof(*rb->points));
	rb->ptrs = calloc((size_t)n, sizeof(*rb->ptrs));
	rb->ts = calloc((size_t)n, sizeof(*rb->ts));
	rb->dv = calloc((size_t)n * 7, sizeof(*rb->dv));
	rb->status = calloc((size_t)n, sizeof(*rb->status));
	rb->tags = calloc((size_t)n * 2, sizeof(*rb->tags));
	rb->tag_ptrs = calloc((size_t)n * 2, sizeof(*rb->tag_ptrs));
	rb->endpoint = calloc((size_t)n, sizeof(*rb->endpoint));
	return rb->points && rb->ptrs && rb->ts && rb->dv && rb->status && rb->tags && rb->tag_ptrs && rb->endpoint
	               ? 0
	               : -1;
}

static void rpc_batch_free(struct rpc_batch *rb)
{
	free(rb->points);
	free(rb->ptrs);
	free(rb->ts);
	free(rb->dv);
	free(rb->status);
	free(rb->tags);
	free(rb->tag_ptrs);
	free(rb->endpoint);
}

static char g_host_tag[MAX_CLIENTS][16];

static void rpc_point_fill(struct rpc_batch *rb, int i, int idx, int64_t time_us, long long k)
{
	struct values v;
	values_of(idx, time_us, k, &v);
	Monitoring__V1__MetricPoint init = MONITORING__V1__METRIC_POINT__INIT;
	Monitoring__V1__MetricPoint *p = &rb->points[i];
	*p = init;
	Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	rb->ts[i] = ts;
	rb->ts[i].seconds = time_us / 1000000;
	rb->ts[i].nanos = (int32_t)(time_us % 1000000) * 1000;
	p->time = &rb->ts[i];
	p->metric_name = METRIC_NAME;
	snprintf(rb->endpoint[i], sizeof(rb->endpoint[i]), "%s", v.endpoint);
	p->endpoint = rb->endpoint[i];
	p->method = "GET";
	Google__Protobuf__Int32Value iv = GOOGLE__PROTOBUF__INT32_VALUE__INIT;
	rb->status[i] = iv;
	rb->status[i].value = v.status_code;
	p->status_code = &rb->status[i];
	double vals[7] = {v.p50, v.p95, v.p99, v.mean, v.min, v.max, v.throughput};
	Google__Protobuf__DoubleValue **fields[7] = {&p->p50, &p->p95, &p->p99,       &p->mean,
	                                             &p->min, &p->max, &p->throughput};
	for (int f = 0; f < 7; f++) {
		Google__Protobuf__DoubleValue dv = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT;
		rb->dv[i * 7 + f] = dv;
		rb->dv[i * 7 + f].value = vals[f];
		*fields[f] = &rb->dv[i * 7 + f];
	}
	p->request_count = v.request_count;
	p->error_count = v.error_count;
	Monitoring__V1__MetricPoint__TagsEntry te = MONITORING__V1__METRIC_POINT__TAGS_ENTRY__INIT;
	rb->tags[i * 2] = te;
	rb->tags[i * 2].key = "region";
	rb->tags[i * 2].value = "eu-west";
	rb->tags[i * 2 + 1] = te;
	rb->tags[i * 2 + 1].key = "host";
	rb->tags[i * 2 + 1].value = g_host_tag[idx];
	rb->tag_ptrs[i * 2] = &rb->tags[i * 2];
	rb->tag_ptrs[i * 2 + 1] = &rb->tags[i * 2 + 1];
	p->n_tags = 2;
	p->tags = &rb->tag_ptrs[i * 2];
	p->metric_type = MONITORING__V1__METRIC_TYPE__METRIC_TYPE_GAUGE;
	rb->ptrs[i] = p;
}

static void rpc_run(struct worker *w)
{
	struct bench *b = w->b;
	struct rpc_batch rb;
	if (rpc_batch_init(&rb, b->batch_points) != 0) {
		fail(w, "out of memory");
		return;
	}
	long long k = 0;
	for (int batch = 0; batch < b->batches_n && !w->failed; batch++) {
		for (int i = 0; i < b->batch_points; i++, k++)
			rpc_point_fill(&rb, i, w->idx, w->first_us + k, k);
		Monitoring__V1__RecordMetricsRequest req = MONITORING__V1__RECORD_METRICS_REQUEST__INIT;
		req.n_points = (size_t)b->batch_points;
		req.points = rb.ptrs;
		Monitoring__V1__RecordMetricsResponse *resp = NULL;
		mon_call_options co = {.timeout_ms = CALL_TIMEOUT_MS};
		mon_status st;
		int64_t t0 = now_ns();
		int rc = mon_metrics_service_record_metrics(w->client, &req, &resp, &co, &st);
		w->lat_ns[w->lat_n++] = now_ns() - t0;
		if (rc != 0) {
			fail(w, "RecordMetrics: %s: %s", mon_status_code_name(st.code), st.message);
			break;
		}
		if (resp->inserted_count != b->batch_points)
			fail(w, "RecordMetrics: %d inserted, %d updated, %d duplicate of %d", resp->inserted_count,
			     resp->updated_count, resp->duplicate_count, b->batch_points);
		w->points_n += resp->inserted_count;
		mon_message_free(&resp->base);
	}
	rpc_batch_free(&rb);
}

/* --- copy and insert ---------------------------------------------------------- */

static void time_text(int64_t us, char *buf, size_t size)
{
	time_t s = (time_t)(us / 1000000);
	struct tm tm;
	gmtime_r(&s, &tm);
	char head[32];
	strftime(head, sizeof(head), "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(buf, size, "%s.%06d+00", head, (int)(us % 1000000));
}

#define COLUMNS                                                                                                        \
	"time, metric_name, endpoint, method, status_code, p50, p95, p99, mean, min, max, request_count, "             \
	"error_count, "                                                                                                \
	"error_rate, throughput, tags, metric_type"

/* One row as COPY text (tab separated, newline ended). Returns its length. */
static int copy_row(char *buf, size_t size, int idx, int64_t time_us, long long k)
{
	struct values v;
	char when[64];
	values_of(idx, time_us, k, &v);
	time_text(time_us, when, sizeof(when));
	return snprintf(buf, size,
	                "%s\t" METRIC_NAME "\t%s\tGET\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%d\t%.2f\t%.2f\t"
	                "{\"host\": \"%s\", \"region\": \"eu-west\"}\tgauge\n",
	                when, v.endpoint, v.status_code, v.p50, v.p95, v.p99, v.mean, v.min, v.max, v.request_count,
	                v.error_count, 100.0 * v.error_count / v.request_count, v.throughput, g_host_tag[idx]);
}

static void copy_run(struct worker *w)
{
	struct bench *b = w->b;
	size_t cap = (size_t)b->batch_points * 400;
	char *buf = malloc(cap);
	if (buf == NULL) {
		fail(w, "out of memory");
		return;
	}
	long long k = 0;
	for (int batch = 0; batch < b->batches_n && !w->failed; batch++) {
		size_t len = 0;
		for (int i = 0; i < b->batch_points; i++, k++)
			len += (size_t)copy_row(buf + len, cap - len, w->idx, w->first_us + k, k);
		int64_t t0 = now_ns();
		PGresult *res = PQexec(w->pg, "COPY tb_performance_metric (" COLUMNS ") FROM STDIN");
		if (PQresultStatus(res) != PGRES_COPY_IN) {
			fail(w, "COPY: %s", PQerrorMessage(w->pg));
			PQclear(res);
			break;
		}
		PQclear(res);
		if (PQputCopyData(w->pg, buf, (int)len) != 1 || PQputCopyEnd(w->pg, NULL) != 1) {
			fail(w, "COPY data: %s", PQerrorMessage(w->pg));
			break;
		}
		while ((res = PQgetResult(w->pg)) != NULL) {
			if (PQresultStatus(res) != PGRES_COMMAND_OK)
				fail(w, "COPY: %s", PQerrorMessage(w->pg));
			PQclear(res);
		}
		w->lat_ns[w->lat_n++] = now_ns() - t0;
		w->points_n += b->batch_points;
	}
	free(buf);
}

static void insert_run(struct worker *w)
{
	struct bench *b = w->b;
	PGresult *res = PQprepare(w->pg, "ins",
	                          "INSERT INTO tb_performance_metric (" COLUMNS ") VALUES ($1, '" METRIC_NAME
	                          "', $2, 'GET', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'gauge')",
	                          0, NULL);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		fail(w, "prepare: %s", PQerrorMessage(w->pg));
		PQclear(res);
		return;
	}
	PQclear(res);
	for (long long k = 0; k < b->insert_rows && !w->failed; k++) {
		struct values v;
		values_of(w->idx, w->first_us + k, k, &v);
		char t[64], sc[16], f[9][32], rc[16], ec[16], tags[96];
		time_text(v.time_us, t, sizeof(t));
		snprintf(sc, sizeof(sc), "%d", v.status_code);
		double d[9] = {v.p50,       v.p95, v.p99, v.mean,
		               v.min,       v.max, 0,     100.0 * v.error_count / v.request_count,
		               v.throughput};
		for (int i = 0; i < 9; i++)
			snprintf(f[i], sizeof(f[i]), "%.2f", d[i]);
		snprintf(rc, sizeof(rc), "%d", v.request_count);
		snprintf(ec, sizeof(ec), "%d", v.error_count);
		snprintf(tags, sizeof(tags), "{\"host\": \"%s\", \"region\": \"eu-west\"}", g_host_tag[w->idx]);
		const char *params[14] = {t,    v.endpoint, sc, f[0], f[1], f[2], f[3],
		                          f[4], f[5],       rc, ec,   f[7], f[8], tags};
		int64_t t0 = now_ns();
		res = PQexecPrepared(w->pg, "ins", 14, params, NULL, NULL, 0);
		w->lat_ns[w->lat_n++] = now_ns() - t0;
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			fail(w, "INSERT: %s", PQerrorMessage(w->pg));
		PQclear(res);
		w->points_n++;
	}
}

/*
 * The server's SQL path without the RPC, to see where RecordMetrics spends
 * its time: per batch, one transaction that COPYs the rows into a temporary
 * staging table like the server's and moves them with its INSERT ...
 * SELECT ... ON CONFLICT DO NOTHING; for MODE_STAGED_LOG it also stores the
 * batch once more as a bytea payload (160 bytes a point, about its
 * protobuf size) in a log table of the bench's own, out of line and
 * uncompressed as the server's ingest log, and sends a NOTIFY.
 */
static int exec_ok(PGconn *pg, const char *sql)
{
	PGresult *res = PQexec(pg, sql);
	int ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
	PQclear(res);
	return ok ? 0 : -1;
}

static void staged_run(struct worker *w)
{
	struct bench *b = w->b;
	size_t cap = (size_t)b->batch_points * 400;
	char *buf = malloc(cap);
	size_t payload_len = (size_t)b->batch_points * 160;
	char *payload = malloc(payload_len);
	if (buf == NULL || payload == NULL) {
		fail(w, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < payload_len; i++)
		payload[i] = (char)((i * 2654435761u) >> 13);
	if (exec_ok(w->pg, "CREATE TEMP TABLE IF NOT EXISTS bench_stage (time timestamptz, metric_name text, "
	                   "endpoint text, method text, status_code integer, p50 numeric, p95 numeric, p99 numeric, "
	                   "mean numeric, min numeric, max numeric, request_count integer, error_count integer, "
	                   "error_rate numeric, throughput numeric, tags jsonb, metric_type text) "
	                   "ON COMMIT DELETE ROWS") != 0) {
		fail(w, "staging table: %s", PQerrorMessage(w->pg));
		goto out;
	}
	long long k = 0;
	for (int batch = 0; batch < b->batches_n && !w->failed; batch++) {
		size_t len = 0;
		for (int i = 0; i < b->batch_points; i++, k++)
			len += (size_t)copy_row(buf + len, cap - len, w->idx, w->first_us + k, k);
		int64_t t0 = now_ns();
		if (exec_ok(w->pg, "BEGIN") != 0) {
			fail(w, "BEGIN: %s", PQerrorMessage(w->pg));
			break;
		}
		PGresult *res = PQexec(w->pg, "COPY bench_stage (" COLUMNS ") FROM STDIN");
		int ok = PQresultStatus(res) == PGRES_COPY_IN;
		PQclear(res);
		if (!ok || PQputCopyData(w->pg, buf, (int)len) != 1 || PQputCopyEnd(w->pg, NULL) != 1) {
			fail(w, "COPY: %s", PQerrorMessage(w->pg));
			break;
		}
		while ((res = PQgetResult(w->pg)) != NULL) {
			if (PQresultStatus(res) != PGRES_COMMAND_OK)
				fail(w, "COPY: %s", PQerrorMessage(w->pg));
			PQclear(res);
		}
		if (exec_ok(w->pg,
		            "WITH ins AS (INSERT INTO tb_performance_metric (" COLUMNS ") "
		            "SELECT time, metric_name, endpoint, method, status_code, p50, p95, p99, mean, min, max, "
		            "request_count, error_count, error_rate, throughput, tags, metric_type::metric_type "
		            "FROM bench_stage ORDER BY time, metric_name COLLATE \"C\", endpoint COLLATE \"C\" "
		            "ON CONFLICT (time, metric_name, endpoint) DO NOTHING RETURNING 1) "
		            "SELECT count(*) FROM ins") != 0) {
			fail(w, "INSERT: %s", PQerrorMessage(w->pg));
			break;
		}
		if (w->mode == MODE_STAGED_LOG) {
			char count[16];
			snprintf(count, sizeof(count), "%d", b->batch_points);
			const char *params[2] = {count, payload};
			int lens[2] = {0, (int)payload_len};
			int formats[2] = {0, 1};
			res = PQexecParams(
			        w->pg,
			        "WITH l AS (INSERT INTO bench_ingest_log (point_count, payload) VALUES ($1, $2) "
			        "RETURNING seq) SELECT pg_notify('bench_ingest', seq::text) FROM l",
			        2, NULL, params, lens, formats, 0);
			ok = PQresultStatus(res) == PGRES_TUPLES_OK;
			PQclear(res);
			if (!ok) {
				fail(w, "log: %s", PQerrorMessage(w->pg));
				break;
			}
		}
		if (exec_ok(w->pg, "COMMIT") != 0) {
			fail(w, "COMMIT: %s", PQerrorMessage(w->pg));
			break;
		}
		w->lat_ns[w->lat_n++] = now_ns() - t0;
		w->points_n += b->batch_points;
	}
out:
	free(buf);
	free(payload);
}

/* --- rounds ------------------------------------------------------------------- */

static pthread_barrier_t g_start;

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	pthread_barrier_wait(&g_start);
	switch (w->mode) {
	case MODE_RPC: rpc_run(w); break;
	case MODE_COPY: copy_run(w); break;
	case MODE_INSERT: insert_run(w); break;
	case MODE_STAGED:
	case MODE_STAGED_LOG: staged_run(w); break;
	default: break;
	}
	return NULL;
}

/* Runs one round of mode; returns points per second or a negative value on failure. */
static double round_run(struct bench *b, enum mode mode)
{
	struct worker ws[MAX_CLIENTS];
	long long per = mode == MODE_INSERT ? b->insert_rows : (long long)b->batches_n * b->batch_points;
	memset(ws, 0, sizeof(ws));
	for (int i = 0; i < b->clients_n; i++) {
		struct worker *w = &ws[i];
		w->b = b;
		w->mode = mode;
		w->idx = i;
		w->first_us = b->base_us + atomic_fetch_add(&b->next_us, per);
		w->lat_ns = calloc((size_t)(mode == MODE_INSERT ? b->insert_rows : b->batches_n), sizeof(*w->lat_ns));
		if (w->lat_ns == NULL)
			return -1;
		if (mode == MODE_RPC) {
			mon_client_options o = {.target = b->target, .api_key = b->token};
			mon_status st;
			if (mon_client_open(&o, &w->client, &st) != 0) {
				fprintf(stderr, "ingest_bench: client: %s\n", st.message);
				return -1;
			}
		} else {
			w->pg = PQconnectdb(b->database);
			if (PQstatus(w->pg) != CONNECTION_OK) {
				fprintf(stderr, "ingest_bench: connect: %s", PQerrorMessage(w->pg));
				return -1;
			}
		}
	}
	pthread_barrier_init(&g_start, NULL, (unsigned)b->clients_n + 1);
	for (int i = 0; i < b->clients_n; i++)
		pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
	pthread_barrier_wait(&g_start);
	int64_t t0 = now_ns();
	for (int i = 0; i < b->clients_n; i++)
		pthread_join(ws[i].thread, NULL);
	int64_t elapsed = now_ns() - t0;
	pthread_barrier_destroy(&g_start);
	long long total = 0;
	int failed = 0;
	size_t lat_n = 0;
	for (int i = 0; i < b->clients_n; i++)
		lat_n += ws[i].lat_n;
	int64_t *lat = calloc(lat_n + 1, sizeof(*lat));
	if (lat != NULL) {
		size_t k = 0;
		for (int i = 0; i < b->clients_n; i++)
			for (size_t j = 0; j < ws[i].lat_n; j++)
				lat[k++] = ws[i].lat_ns[j];
		qsort(lat, lat_n, sizeof(*lat), cmp_i64);
		b->last_p50_ms = lat_n > 0 ? (double)lat[lat_n / 2] / 1e6 : 0;
		b->last_p99_ms =
		        lat_n > 0 ? (double)lat[(lat_n * 99) / 100 < lat_n ? (lat_n * 99) / 100 : lat_n - 1] / 1e6 : 0;
		free(lat);
	}
	for (int i = 0; i < b->clients_n; i++) {
		free(ws[i].lat_ns);
		total += ws[i].points_n;
		if (ws[i].failed) {
			fprintf(stderr, "ingest_bench: %s client %d: %s\n", MODE_NAME[mode], i, ws[i].error);
			failed = 1;
		}
		mon_client_close(ws[i].client);
		if (ws[i].pg != NULL)
			PQfinish(ws[i].pg);
	}
	return failed ? -1 : (double)total * 1e9 / (double)elapsed;
}

/* --- watch -------------------------------------------------------------------- */

struct subscriber {
	struct bench *b;
	mon_client *client;
	mon_stream *stream;
	pthread_t thread;
	atomic_llong points_n;
	atomic_llong gap_points_n;
	atomic_llong last_ns; /* arrival of the latest batch */
	atomic_int is_stopping;
	int failed;
	char error[600];
};

static void *subscriber_main(void *arg)
{
	struct subscriber *s = arg;
	while (!atomic_load(&s->is_stopping)) {
		Monitoring__V1__WatchMetricsResponse *ev = NULL;
		mon_status st;
		int rc = mon_metrics_service_watch_metrics_next(s->stream, &ev, 200, &st);
		if (rc == MON_STREAM_TIMEOUT)
			continue;
		if (rc != 1) {
			if (!atomic_load(&s->is_stopping)) {
				snprintf(s->error, sizeof(s->error), "%s: %s", mon_status_code_name(st.code),
				         st.message);
				s->failed = 1;
			}
			break;
		}
		if (ev->event_case == MONITORING__V1__WATCH_METRICS_RESPONSE__EVENT_BATCH) {
			atomic_fetch_add(&s->points_n, (long long)ev->batch->n_points);
			atomic_store(&s->last_ns, now_ns());
		} else if (ev->event_case == MONITORING__V1__WATCH_METRICS_RESPONSE__EVENT_GAP &&
		           ev->gap->skipped_count > 0)
			atomic_fetch_add(&s->gap_points_n, ev->gap->skipped_count);
		mon_message_free(&ev->base);
	}
	return NULL;
}

/*
 * One rpc round with n subscribers; prints ingest points/s and what the
 * subscribers received. Returns 0, or -1 when WatchMetrics cannot be opened.
 */
static int watch_round(struct bench *b, int n, int round)
{
	struct subscriber *subs = calloc((size_t)n, sizeof(*subs));
	mon_client *clients[MAX_SUBSCRIBERS / SUBSCRIBERS_PER_CHANNEL + 1] = {0};
	int rc = 0;
	char *names[1] = {METRIC_NAME};
	Monitoring__V1__MetricFilter filter = MONITORING__V1__METRIC_FILTER__INIT;
	filter.n_metric_names = 1;
	filter.metric_names = names;
	Monitoring__V1__WatchMetricsRequest req = MONITORING__V1__WATCH_METRICS_REQUEST__INIT;
	req.filter = &filter;
	req.max_batch_points = 10000;
	Google__Protobuf__Duration delay = GOOGLE__PROTOBUF__DURATION__INIT;
	delay.nanos = 100 * 1000000; /* batches leave at most 100 ms after their first point */
	req.max_batch_delay = &delay;
	int opened = 0;
	for (int i = 0; i < n; i++) {
		int c = i / SUBSCRIBERS_PER_CHANNEL;
		mon_status st;
		if (clients[c] == NULL) {
			mon_client_options o = {.target = b->target, .api_key = b->token};
			if (mon_client_open(&o, &clients[c], &st) != 0) {
				fprintf(stderr, "ingest_bench: client: %s\n", st.message);
				rc = -1;
				goto out;
			}
		}
		subs[i].b = b;
		/* A server still busy with the previous round may be slow to accept: retry for 30 s. */
		int orc = -1;
		for (int attempt = 0; attempt < 30 && orc != 0; attempt++) {
			orc = mon_metrics_service_watch_metrics_open(clients[c], &req, NULL, &subs[i].stream, &st);
			if (orc != 0 && st.code == 14 /* UNAVAILABLE */)
				sleep(1);
			else
				break;
		}
		if (orc != 0) {
			printf("WatchMetrics with %d subscribers: not measured: %s: %s\n", n,
			       mon_status_code_name(st.code), st.message);
			rc = -1;
			goto out;
		}
		opened++;
	}
	for (int i = 0; i < n; i++)
		pthread_create(&subs[i].thread, NULL, subscriber_main, &subs[i]);
	/* The streams are open once the call is on the wire; give the server a moment to register them. */
	usleep(500000);
	int64_t t0 = now_ns();
	double rate = round_run(b, MODE_RPC);
	int64_t ingest_ns = now_ns() - t0;
	/* Let the last batches arrive: until all did, or nothing came for 5 s (at most 120 s). */
	long long want = (long long)n * b->clients_n * b->batches_n * b->batch_points;
	long long last = -1;
	int64_t quiet_since = now_ns();
	for (int64_t until = now_ns() + 120 * 1000000000LL; now_ns() < until;) {
		long long sum = 0;
		for (int i = 0; i < n; i++)
			sum += atomic_load(&subs[i].points_n) + atomic_load(&subs[i].gap_points_n);
		if (sum >= want)
			break;
		if (sum != last) {
			last = sum;
			quiet_since = now_ns();
		} else if (now_ns() - quiet_since > 5 * 1000000000LL) {
			break;
		}
		usleep(50000);
	}
	int64_t last_ns = t0;
	for (int i = 0; i < n; i++) {
		atomic_store(&subs[i].is_stopping, 1);
		if (atomic_load(&subs[i].last_ns) > last_ns)
			last_ns = atomic_load(&subs[i].last_ns);
	}
	int64_t deliver_ns = last_ns - t0;
	long long got = 0, gaps = 0, min_got = -1;
	int failed = 0;
	for (int i = 0; i < n; i++) {
		pthread_join(subs[i].thread, NULL);
		long long g = atomic_load(&subs[i].points_n);
		got += g;
		gaps += atomic_load(&subs[i].gap_points_n);
		if (min_got < 0 || g < min_got)
			min_got = g;
		if (subs[i].failed && failed++ == 0)
			fprintf(stderr, "ingest_bench: subscriber %d: %s\n", i, subs[i].error);
	}
	long long sent = (long long)b->clients_n * b->batches_n * b->batch_points;
	printf("watch round %d, %d subscriber(s): ingest %.0f points/s; delivered %lld of %lld points per subscriber "
	       "(min %lld), skipped in gaps %lld; %.0f points/s per subscriber, %.0f points/s in all "
	       "(over %.2f s of ingest, %.2f s until the last delivery)%s\n",
	       round, n, rate, n > 0 ? got / n : 0, sent, min_got, gaps, (double)got / n * 1e9 / (double)deliver_ns,
	       (double)got * 1e9 / (double)deliver_ns, ingest_ns / 1e9, deliver_ns / 1e9,
	       failed ? " (some streams failed)" : "");
	fflush(stdout);
out:
	for (int i = 0; i < opened; i++)
		mon_stream_close(subs[i].stream);
	for (size_t c = 0; c < sizeof(clients) / sizeof(clients[0]); c++)
		mon_client_close(clients[c]);
	free(subs);
	return rc;
}

/* --- main ----------------------------------------------------------------------- */

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, c = *(const double *)y;
	return (a > c) - (a < c);
}

static double median(const double *v, int n)
{
	double s[MAX_ROUNDS];
	memcpy(s, v, (size_t)n * sizeof(*v));
	qsort(s, (size_t)n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static int int_arg(const char *name, const char *s, int min, int max)
{
	char *end = NULL;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (end == s || *end != '\0' || errno != 0 || v < min || v > max) {
		fprintf(stderr, "ingest_bench: %s: expected %d to %d\n", name, min, max);
		exit(2);
	}
	return (int)v;
}

int main(int argc, char **argv)
{
	struct bench b = {.clients_n = 4,
	                  .batches_n = 25,
	                  .batch_points = 1000,
	                  .insert_rows = 2000,
	                  .rounds_n = 3,
	                  .watch_rounds_n = 1};
	b.is_mode_on[MODE_RPC] = b.is_mode_on[MODE_COPY] = b.is_mode_on[MODE_INSERT] = true;
	int watch_counts[8];
	int watch_count_n = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v == NULL) {
			fprintf(stderr, "ingest_bench: %s: missing value\n", a);
			return 2;
		}
		i++;
		if (strcmp(a, "--target") == 0)
			b.target = v;
		else if (strcmp(a, "--token") == 0)
			b.token = v;
		else if (strcmp(a, "--database") == 0)
			b.database = v;
		else if (strcmp(a, "--clients") == 0)
			b.clients_n = int_arg(a, v, 1, MAX_CLIENTS);
		else if (strcmp(a, "--batches") == 0)
			b.batches_n = int_arg(a, v, 1, 1000000);
		else if (strcmp(a, "--batch-points") == 0)
			b.batch_points = int_arg(a, v, 1, 5000);
		else if (strcmp(a, "--insert-rows") == 0)
			b.insert_rows = int_arg(a, v, 1, 10000000);
		else if (strcmp(a, "--rounds") == 0)
			b.rounds_n = int_arg(a, v, 0, MAX_ROUNDS);
		else if (strcmp(a, "--watch") == 0 && watch_count_n < 8)
			watch_counts[watch_count_n++] = int_arg(a, v, 1, MAX_SUBSCRIBERS);
		else if (strcmp(a, "--modes") == 0) {
			memset(b.is_mode_on, 0, sizeof(b.is_mode_on));
			char list[128];
			snprintf(list, sizeof(list), "%s", v);
			for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok != NULL;
			     tok = strtok_r(NULL, ",", &save)) {
				int found = 0;
				for (int m = 0; m < MODE_N; m++)
					if (strcmp(tok, MODE_FLAG[m]) == 0) {
						b.is_mode_on[m] = true;
						found = 1;
					}
				if (!found) {
					fprintf(stderr, "ingest_bench: --modes: unknown mode \"%s\"\n", tok);
					return 2;
				}
			}
			/* rpc alone: RecordMetrics as a load (bench/metrics_scale), no ratios */
			bool is_rpc_only = b.is_mode_on[MODE_RPC] && !b.is_mode_on[MODE_COPY] &&
			                   !b.is_mode_on[MODE_INSERT] && !b.is_mode_on[MODE_STAGED] &&
			                   !b.is_mode_on[MODE_STAGED_LOG];
			if (!is_rpc_only &&
			    (!b.is_mode_on[MODE_RPC] || !b.is_mode_on[MODE_COPY] || !b.is_mode_on[MODE_INSERT])) {
				fprintf(stderr,
				        "ingest_bench: --modes: rpc alone, or rpc, copy and insert with others\n");
				return 2;
			}
		} else if (strcmp(a, "--watch-rounds") == 0)
			b.watch_rounds_n = int_arg(a, v, 1, MAX_ROUNDS);
		else {
			fprintf(stderr,
			        "usage: ingest_bench --target HOST:PORT --token KEY --database CONNINFO [--clients N]\n"
			        "       [--batches N] [--batch-points N] [--insert-rows N] [--rounds N]\n"
			        "       [--watch SUBSCRIBERS]... [--watch-rounds N]\n"
			        "       [--modes rpc | rpc,copy,insert[,staged][,staged-log]]\n");
			return 2;
		}
	}
	if (b.target == NULL || b.token == NULL || b.database == NULL) {
		fprintf(stderr, "ingest_bench: --target, --token and --database are required\n");
		return 2;
	}
	for (int i = 0; i < MAX_CLIENTS; i++)
		snprintf(g_host_tag[i], sizeof(g_host_tag[i]), "host-%02d", i);
	/* All points fall in the 4 minutes before now, a microsecond apart. */
	long long total_us =
	        (long long)b.rounds_n * b.clients_n * (4LL * b.batches_n * b.batch_points + b.insert_rows) +
	        (long long)b.watch_rounds_n * watch_count_n * b.clients_n * b.batches_n * b.batch_points;
	if (total_us > 200LL * 1000000) {
		fprintf(stderr,
		        "ingest_bench: more than 200 million points: they would not fit in the accepted window\n");
		return 2;
	}
	b.base_us = epoch_us() - 240LL * 1000000;
	atomic_init(&b.next_us, 0);

	if (b.is_mode_on[MODE_STAGED_LOG]) {
		/* The log of MODE_STAGED_LOG, made once (concurrent CREATE IF NOT EXISTS can collide). */
		PGconn *pg = PQconnectdb(b.database);
		if (PQstatus(pg) != CONNECTION_OK ||
		    exec_ok(pg, "CREATE TABLE IF NOT EXISTS bench_ingest_log "
		                "(seq bigserial PRIMARY KEY, point_count integer, payload bytea)") != 0 ||
		    exec_ok(pg, "ALTER TABLE bench_ingest_log ALTER payload SET STORAGE EXTERNAL") != 0) {
			fprintf(stderr, "ingest_bench: bench_ingest_log: %s", PQerrorMessage(pg));
			PQfinish(pg);
			return 1;
		}
		PQfinish(pg);
	}
	printf("%d clients; RecordMetrics and COPY: %d batches of %d points per client and round; INSERT: %d rows "
	       "per client and round; %d rounds\n",
	       b.clients_n, b.batches_n, b.batch_points, b.insert_rows, b.rounds_n);
	fflush(stdout);
	for (int r = 0; r < b.rounds_n; r++) {
		enum mode order[MODE_N];
		for (int m = 0; m < MODE_N; m++)
			order[m] = r % 2 == 0 ? (enum mode)m : (enum mode)(MODE_N - 1 - m);
		for (int m = 0; m < MODE_N; m++) {
			if (!b.is_mode_on[order[m]])
				continue;
			double rate = round_run(&b, order[m]);
			if (rate < 0)
				return 1;
			b.rate[order[m]][r] = rate;
			b.p50_ms[order[m]][r] = b.last_p50_ms;
			b.p99_ms[order[m]][r] = b.last_p99_ms;
			printf("round %d %-13s %10.0f points/s, %s p50 %.2f ms p99 %.2f ms\n", r + 1,
			       MODE_NAME[order[m]], rate, order[m] == MODE_INSERT ? "row" : "batch", b.last_p50_ms,
			       b.last_p99_ms);
			fflush(stdout);
		}
	}
	if (b.rounds_n == 0)
		goto watch;
	printf("\n| mode | points/s (median) | call p50 ms | call p99 ms | points/s per round |\n"
	       "|---|---:|---:|---:|---|\n");
	for (int m = 0; m < MODE_N; m++) {
		if (!b.is_mode_on[m])
			continue;
		printf("| %s | %.0f | %.2f | %.2f |", MODE_NAME[m], median(b.rate[m], b.rounds_n),
		       median(b.p50_ms[m], b.rounds_n), median(b.p99_ms[m], b.rounds_n));
		for (int r = 0; r < b.rounds_n; r++)
			printf(" %.0f", b.rate[m][r]);
		printf(" |\n");
	}
	if (!b.is_mode_on[MODE_COPY])
		goto watch;
	double ratios[MAX_ROUNDS];
	for (int r = 0; r < b.rounds_n; r++)
		ratios[r] = b.rate[MODE_RPC][r] / b.rate[MODE_COPY][r];
	printf("\nratio RecordMetrics/COPY: %.2f (ratio of medians), %.2f (median of per-round ratios); goal >= 0.70\n",
	       median(b.rate[MODE_RPC], b.rounds_n) / median(b.rate[MODE_COPY], b.rounds_n),
	       median(ratios, b.rounds_n));
	for (int m = MODE_STAGED; m < MODE_N; m++)
		if (b.is_mode_on[m])
			printf("ratio %s/COPY: %.2f (ratio of medians)\n", MODE_NAME[m],
			       median(b.rate[m], b.rounds_n) / median(b.rate[MODE_COPY], b.rounds_n));
	printf("ratio RecordMetrics/INSERT: %.1f\n\n",
	       median(b.rate[MODE_RPC], b.rounds_n) / median(b.rate[MODE_INSERT], b.rounds_n));
	fflush(stdout);
watch:
	for (int i = 0; i < watch_count_n; i++)
		for (int r = 0; r < b.watch_rounds_n; r++)
			if (watch_round(&b, watch_counts[i], r + 1) != 0)
				break;
	return 0;
}
