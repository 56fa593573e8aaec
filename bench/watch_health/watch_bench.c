/*
 * watch_bench: latency of HealthService.WatchServiceHealth. Opens S
 * streams (spread over channels of at most --streams-per-channel each,
 * below the server's max-concurrent-streams), each filtered on one service
 * of its own making, waits until every stream has its snapshot, then
 * reports W + E checks one at a time with ReportHealthCheck, alternating
 * DOWN and HEALTHY so each is a status change. For each check it waits
 * until every stream has its change, so events never queue behind each
 * other. The k-th change a stream receives is the k-th report (the service
 * is the bench's alone; the program checks that every stream saw the same
 * sequence). Latency of one delivery: arrival on the stream minus the
 * moment ReportHealthCheck returned (0 when the event came first), and
 * minus the moment the call was sent. The first W are warm-up.
 *
 * One thread per stream, blocked in rpc_cstream_next (the client runtime
 * gives every call its own completion queue); the streams share channels,
 * each on a connection of its own, and the reports go on another one.
 * Loopback only, by intent.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "monitoring/v1/health.pb-c.h"
#include "rpc/client.h"

#define CALL_TIMEOUT_MS 10000
#define DELIVERY_TIMEOUT_MS 10000
#define STREAM_STACK_BYTES (256 * 1024)

struct bench {
	const char *target;
	char auth[600];
	char service_id[64];
	int subs_n;
	int events_n; /* measured */
	int warmup_n;
	int per_channel;

	int64_t *arrive_ns; /* [(warmup_n + events_n) * subs_n] */
	int64_t *seq_of;    /* sequence of report k, as stream 0 saw it */
	atomic_int *arrived;
	atomic_int ready_n;
	atomic_int failed_n;
	atomic_int mismatch_n;
	pthread_mutex_t mu;
	pthread_cond_t cond;
};

struct stream_thread {
	struct bench *b;
	int idx;
	struct rpc_channel *ch;
	pthread_t thread;
};

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void signal_all(struct bench *b)
{
	pthread_mutex_lock(&b->mu);
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->mu);
}

static struct rpc_call_options call_options(struct bench *b, int64_t timeout_ms, const char **md)
{
	md[0] = "authorization";
	md[1] = b->auth;
	return (struct rpc_call_options){.timeout_ms = timeout_ms, .metadata = md, .metadata_pairs = 1};
}

static void *stream_main(void *arg)
{
	struct stream_thread *st = arg;
	struct bench *b = st->b;
	const char *md[2];
	struct rpc_call_options opts = call_options(b, 0, md);
	Monitoring__V1__WatchServiceHealthRequest req = MONITORING__V1__WATCH_SERVICE_HEALTH_REQUEST__INIT;
	char *ids[1] = {b->service_id};
	req.n_service_ids = 1;
	req.service_ids = ids;
	struct rpc_status status = {0};
	struct rpc_cstream *s = NULL;
	int total = b->warmup_n + b->events_n;
	int k = 0;
	bool is_ready = false;
	if (rpc_cstream_open(st->ch, "/monitoring.v1.HealthService/WatchServiceHealth", &req.base,
	                     &monitoring__v1__watch_service_health_response__descriptor, &opts, &s, &status) != 0) {
		fprintf(stderr, "watch_bench: stream %d: %d %s\n", st->idx, status.code, status.message);
		goto fail;
	}
	while (k < total) {
		ProtobufCMessage *msg = NULL;
		int rc = rpc_cstream_next(s, &msg, DELIVERY_TIMEOUT_MS * 3, &status);
		if (rc != 1) {
			fprintf(stderr, "watch_bench: stream %d ended after %d changes: %d %d %s\n", st->idx, k, rc,
			        status.code, status.message);
			goto fail;
		}
		int64_t t = now_ns();
		Monitoring__V1__WatchServiceHealthResponse *m = (Monitoring__V1__WatchServiceHealthResponse *)msg;
		if (m->event_case == MONITORING__V1__WATCH_SERVICE_HEALTH_RESPONSE__EVENT_CONTROL &&
		    m->control->kind == MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_SNAPSHOT_COMPLETE &&
		    !is_ready) {
			is_ready = true;
			atomic_fetch_add(&b->ready_n, 1);
			signal_all(b);
		} else if (m->event_case == MONITORING__V1__WATCH_SERVICE_HEALTH_RESPONSE__EVENT_CHANGE) {
			b->arrive_ns[(size_t)k * (size_t)b->subs_n + (size_t)st->idx] = t;
			if (st->idx == 0)
				b->seq_of[k] = m->sequence;
			else if (b->seq_of[k] != 0 && b->seq_of[k] != m->sequence)
				atomic_fetch_add(&b->mismatch_n, 1);
			if (atomic_fetch_add(&b->arrived[k], 1) + 1 == b->subs_n)
				signal_all(b);
			k++;
		}
		protobuf_c_message_free_unpacked(msg, NULL);
	}
	rpc_cstream_close(s);
	return NULL;
fail:
	rpc_cstream_close(s);
	atomic_fetch_add(&b->failed_n, 1);
	if (!is_ready)
		atomic_fetch_add(&b->ready_n, 1);
	signal_all(b);
	return NULL;
}

/* Waits until pred(b, arg) or timeout_ms; false on timeout or when a stream failed. */
static bool wait_for(struct bench *b, bool (*pred)(struct bench *, int), int arg, int64_t timeout_ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (timeout_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	bool ok = true;
	pthread_mutex_lock(&b->mu);
	while (!pred(b, arg) && atomic_load(&b->failed_n) == 0)
		if (pthread_cond_timedwait(&b->cond, &b->mu, &ts) != 0) {
			ok = pred(b, arg);
			break;
		}
	pthread_mutex_unlock(&b->mu);
	return ok && atomic_load(&b->failed_n) == 0;
}

static bool all_ready(struct bench *b, int unused)
{
	(void)unused;
	return atomic_load(&b->ready_n) == b->subs_n;
}

static bool all_arrived(struct bench *b, int k)
{
	return atomic_load(&b->arrived[k]) == b->subs_n;
}

static int cmp_i64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, c = *(const int64_t *)y;
	return (a > c) - (a < c);
}

static void print_stats(const char *what, int64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_i64);
	size_t p50 = n / 2, p99 = (n * 99) / 100, p999 = (n * 999) / 1000;
	printf("%-22s n=%zu p50=%.3f ms p99=%.3f ms p99.9=%.3f ms max=%.3f ms\n", what, n, v[p50] / 1e6,
	       v[p99 < n ? p99 : n - 1] / 1e6, v[p999 < n ? p999 : n - 1] / 1e6, v[n - 1] / 1e6);
}

static int create_service(struct bench *b, struct rpc_channel *ch)
{
	const char *md[2];
	struct rpc_call_options opts = call_options(b, CALL_TIMEOUT_MS, md);
	Monitoring__V1__CreateServiceRequest req = MONITORING__V1__CREATE_SERVICE_REQUEST__INIT;
	Monitoring__V1__MonitoredService svc = MONITORING__V1__MONITORED_SERVICE__INIT;
	svc.id = b->service_id;
	svc.name = b->service_id;
	svc.service_type = "api";
	req.service = &svc;
	ProtobufCMessage *resp = NULL;
	struct rpc_status status = {0};
	int rc = rpc_unary_call(ch, "/monitoring.v1.HealthService/CreateService", &req.base,
	                        &monitoring__v1__create_service_response__descriptor, &resp, &opts, &status);
	if (rc != 0)
		fprintf(stderr, "watch_bench: CreateService: %d %s\n", status.code, status.message);
	if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
	return rc;
}

static int report(struct bench *b, struct rpc_channel *ch, int k)
{
	const char *md[2];
	struct rpc_call_options opts = call_options(b, CALL_TIMEOUT_MS, md);
	Monitoring__V1__ReportHealthCheckRequest req = MONITORING__V1__REPORT_HEALTH_CHECK_REQUEST__INIT;
	Monitoring__V1__HealthCheck check = MONITORING__V1__HEALTH_CHECK__INIT;
	check.service_id = b->service_id;
	check.status = k % 2 == 0 ? MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DOWN
	                          : MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_HEALTHY;
	req.check = &check;
	ProtobufCMessage *resp = NULL;
	struct rpc_status status = {0};
	int rc = rpc_unary_call(ch, "/monitoring.v1.HealthService/ReportHealthCheck", &req.base,
	                        &monitoring__v1__report_health_check_response__descriptor, &resp, &opts, &status);
	if (rc != 0)
		fprintf(stderr, "watch_bench: ReportHealthCheck: %d %s\n", status.code, status.message);
	if (resp)
		protobuf_c_message_free_unpacked(resp, NULL);
	return rc;
}

static void usage(void)
{
	fprintf(stderr, "usage: watch_bench --target HOST:PORT --token API_KEY [--subscribers N] [--events N]\n"
	                "                   [--warmup N] [--streams-per-channel N]\n");
	exit(2);
}

static long parse_count(const char *name, const char *text, long lo, long hi)
{
	char *end = NULL;
	long v = strtol(text, &end, 10);
	if (end == text || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "watch_bench: %s: must be %ld to %ld\n", name, lo, hi);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	struct bench b = {.subs_n = 1, .events_n = 1000, .warmup_n = 20, .per_channel = 500};
	const char *token = NULL;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--target") == 0)
			b.target = argv[i + 1];
		else if (strcmp(argv[i], "--token") == 0)
			token = argv[i + 1];
		else if (strcmp(argv[i], "--subscribers") == 0)
			b.subs_n = (int)parse_count("--subscribers", argv[i + 1], 1, 100000);
		else if (strcmp(argv[i], "--events") == 0)
			b.events_n = (int)parse_count("--events", argv[i + 1], 1, 1000000);
		else if (strcmp(argv[i], "--warmup") == 0)
			b.warmup_n = (int)parse_count("--warmup", argv[i + 1], 0, 100000);
		else if (strcmp(argv[i], "--streams-per-channel") == 0)
			b.per_channel = (int)parse_count("--streams-per-channel", argv[i + 1], 1, 100000);
		else
			usage();
	}
	if (b.target == NULL || token == NULL || argc % 2 == 0)
		usage();
	snprintf(b.auth, sizeof(b.auth), "Bearer %s", token);
	snprintf(b.service_id, sizeof(b.service_id), "bench-watch-%ld-%ld", (long)getpid(), (long)time(NULL));
	int total = b.warmup_n + b.events_n;
	int channels_n = (b.subs_n + b.per_channel - 1) / b.per_channel;
	b.arrive_ns = calloc((size_t)total * (size_t)b.subs_n, sizeof(*b.arrive_ns));
	b.seq_of = calloc((size_t)total, sizeof(*b.seq_of));
	b.arrived = calloc((size_t)total, sizeof(*b.arrived));
	int64_t *sent_ns = calloc((size_t)total, sizeof(*sent_ns));
	int64_t *returned_ns = calloc((size_t)total, sizeof(*returned_ns));
	struct rpc_channel **chans = calloc((size_t)channels_n + 1, sizeof(*chans));
	struct stream_thread *threads = calloc((size_t)b.subs_n, sizeof(*threads));
	if (!b.arrive_ns || !b.seq_of || !b.arrived || !sent_ns || !returned_ns || !chans || !threads) {
		fprintf(stderr, "watch_bench: out of memory\n");
		return 1;
	}
	pthread_mutex_init(&b.mu, NULL);
	pthread_cond_init(&b.cond, NULL);

	struct mon_error err = {0};
	for (int i = 0; i <= channels_n; i++) { /* the last one carries the reports */
		/*
		 * gRPC core shares one connection among channels with equal
		 * arguments; a distinct receive limit per channel gives each its
		 * own connection, so no connection carries more streams than the
		 * server's max-concurrent-streams.
		 */
		struct rpc_channel_config cc = {.target = b.target, .max_recv_message_bytes = (16u << 20) + (size_t)i};
		if (rpc_channel_open(&cc, &chans[i], &err) != 0) {
			fprintf(stderr, "watch_bench: %s\n", err.msg);
			return 1;
		}
	}
	struct rpc_channel *unary = chans[channels_n];
	if (create_service(&b, unary) != 0)
		return 1;

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, STREAM_STACK_BYTES);
	int started = 0;
	for (int i = 0; i < b.subs_n; i++) {
		threads[i] = (struct stream_thread){.b = &b, .idx = i, .ch = chans[i / b.per_channel]};
		if (pthread_create(&threads[i].thread, &attr, stream_main, &threads[i]) != 0) {
			fprintf(stderr, "watch_bench: could not start stream thread %d\n", i);
			return 1;
		}
		started++;
	}
	int rc = 1;
	if (!wait_for(&b, all_ready, 0, 120000)) {
		fprintf(stderr, "watch_bench: streams not ready (%d of %d, %d failed)\n", atomic_load(&b.ready_n),
		        b.subs_n, atomic_load(&b.failed_n));
		goto out;
	}
	for (int k = 0; k < total; k++) {
		sent_ns[k] = now_ns();
		if (report(&b, unary, k) != 0)
			goto out;
		returned_ns[k] = now_ns();
		if (!wait_for(&b, all_arrived, k, DELIVERY_TIMEOUT_MS)) {
			fprintf(stderr, "watch_bench: event %d reached %d of %d streams\n", k,
			        atomic_load(&b.arrived[k]), b.subs_n);
			goto out;
		}
	}
	size_t n = (size_t)b.events_n * (size_t)b.subs_n;
	int64_t *from_return = malloc(n * sizeof(*from_return));
	int64_t *from_send = malloc(n * sizeof(*from_send));
	if (from_return == NULL || from_send == NULL) {
		fprintf(stderr, "watch_bench: out of memory\n");
		goto out;
	}
	size_t early = 0, j = 0;
	for (int k = b.warmup_n; k < total; k++)
		for (int i = 0; i < b.subs_n; i++, j++) {
			int64_t t = b.arrive_ns[(size_t)k * (size_t)b.subs_n + (size_t)i];
			from_send[j] = t - sent_ns[k];
			from_return[j] = t - returned_ns[k];
			if (from_return[j] < 0) {
				from_return[j] = 0;
				early++;
			}
		}
	printf("subscribers=%d channels=%d events=%d warmup=%d deliveries=%zu seq_mismatches=%d\n", b.subs_n,
	       channels_n, b.events_n, b.warmup_n, n, atomic_load(&b.mismatch_n));
	print_stats("from Report return", from_return, n);
	printf("%-22s %zu of %zu deliveries (counted as 0)\n", "arrived before return", early, n);
	print_stats("from Report send", from_send, n);
	free(from_return);
	free(from_send);
	rc = atomic_load(&b.mismatch_n) == 0 ? 0 : 1;
	for (int i = 0; i < started; i++)
		pthread_join(threads[i].thread, NULL);
out:
	/* A failed run leaves threads blocked in rpc_cstream_next: exit without tearing gRPC down. */
	fflush(stdout);
	fflush(stderr);
	_exit(rc);
}
