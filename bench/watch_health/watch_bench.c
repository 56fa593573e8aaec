/*
 * watch_bench: latency of HealthService.WatchServiceHealth. Opens S
 * streams (spread over channels of at most --streams-per-channel each,
 * below the server's max-concurrent-streams), each filtered on one service
 * of its own making, waits until every stream has its snapshot, then
 * reports W + E checks one at a time with ReportHealthCheck, alternating
 * DOWN and HEALTHY so each is a status change. For each check it waits
 * until every stream has its change, so events never queue behind each
 * other. The k-th change a stream receives must be the k-th report: after
 * the run the program checks, for every stream, that its k-th change
 * carries the check id ReportHealthCheck returned for report k and that
 * sequences strictly increase (the service is the bench's alone). Latency
 * of one delivery: arrival on the stream minus the moment ReportHealthCheck
 * returned (0 when the event came first), and minus the moment the call
 * was sent. The first W are warm-up.
 *
 * Two clients for the streams, chosen with --client:
 *
 *   cq (default): every stream's call lives on one of --pollers completion
 *   queues (default 1), each drained by one thread, which time-stamps a
 *   message when its completion comes off the queue. This keeps the
 *   client's CPU use small next to the server's on a shared machine. It
 *   drives the calls with gRPC core directly: the client runtime gives
 *   every call a queue of its own, which needs a thread per stream.
 *
 *   cb: as cq, but every stream's call lives on one of 64 callback queues:
 *   gRPC runs a message's completion where it was read (a poller, or one
 *   of gRPC's own threads), and the pollers only drive the connections.
 *   gRPC as packaged checks each completion against its queue's list of
 *   outstanding batches, two per stream here, which the cq client pays on
 *   every message.
 *
 *   threads: one thread per stream, blocked in rpc_cstream_next on the
 *   client runtime (a completion queue per call). With 1000 streams this
 *   client takes more CPU than the server; kept to compare with earlier
 *   figures.
 *
 * The reports always go through the client runtime (rpc_unary_call) on a
 * channel of their own. Loopback only, by intent.
 *
 * Fan-out figures (docs/benchmarks.md, "Resumable streams: fan-out to
 * 10,000 subscribers"):
 *
 *   --server-pid PID: the server's CPU time (utime + stime from
 *   /proc/PID/stat) over the measured events, divided by the deliveries
 *   in them, and its VmRSS before the streams open and once every one
 *   has its snapshot (memory per idle subscriber).
 *
 *   --interval-ms MS: the measured reports are MS apart (one event per
 *   second with 1000) instead of back to back.
 *
 *   --backlog N: before the streams open, N checks are reported, and every
 *   stream resumes from the sequence before them (resume_after_sequence),
 *   so the server replays N changes to each at once. While they catch up,
 *   a probe thread calls grpc.health.v1.Health/Check one call after
 *   another on a channel of its own and records each call's latency. A
 *   stream is ready once it has the whole backlog.
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

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "monitoring/v1/health.pb-c.h"
#include "rpc/client.h"

#define CALL_TIMEOUT_MS 10000
#define DELIVERY_TIMEOUT_MS 10000
#define STREAM_STACK_BYTES (256 * 1024)
#define POLLERS_MAX 8
#define CALLBACK_CQS 64 /* --client cb */
#define WATCH_PATH "/monitoring.v1.HealthService/WatchServiceHealth"

struct bench {
	const char *target;
	char auth[600];
	char service_id[64];
	int subs_n;
	int events_n; /* measured */
	int warmup_n;
	int per_channel;
	int backlog_n;        /* --backlog: changes each stream replays before it is ready */
	int64_t resume_after; /* the sequence the streams resume after (0: a snapshot) */
	long server_pid;      /* --server-pid: CPU and memory figures; 0 for none */
	int interval_ms;      /* --interval-ms: between measured reports */

	/* Per delivery, indexed [k * subs_n + stream] for k < warmup_n + events_n. */
	int64_t *arrive_ns;
	int64_t *seq;
	int64_t *check_id;
	int64_t *report_check_id; /* [k]: the id ReportHealthCheck returned */
	atomic_int *arrived;      /* [k]: streams that have change k */
	atomic_int ready_n;
	atomic_int failed_n;
	pthread_mutex_t mu;
	pthread_cond_t cond;
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

static void fill_watch_request(struct bench *b, Monitoring__V1__WatchServiceHealthRequest *req, char **ids)
{
	monitoring__v1__watch_service_health_request__init(req);
	ids[0] = b->service_id;
	req->n_service_ids = 1;
	req->service_ids = ids;
	req->resume_after_sequence = b->resume_after;
}

/*
 * Records one message of stream idx that arrived at t. *k counts the
 * changes the stream has had, from -backlog_n; *is_ready whether it had its
 * snapshot, or its whole backlog (*k reached 0).
 */
static void on_message(struct bench *b, int idx, const Monitoring__V1__WatchServiceHealthResponse *m, int64_t t, int *k,
                       bool *is_ready)
{
	if (m->event_case == MONITORING__V1__WATCH_SERVICE_HEALTH_RESPONSE__EVENT_CONTROL &&
	    m->control->kind == MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_SNAPSHOT_COMPLETE &&
	    !*is_ready) {
		*is_ready = true;
		atomic_fetch_add(&b->ready_n, 1);
		signal_all(b);
	} else if (m->event_case == MONITORING__V1__WATCH_SERVICE_HEALTH_RESPONSE__EVENT_CHANGE && *k < 0) {
		if (++*k == 0) {
			*is_ready = true;
			atomic_fetch_add(&b->ready_n, 1);
			signal_all(b);
		}
	} else if (m->event_case == MONITORING__V1__WATCH_SERVICE_HEALTH_RESPONSE__EVENT_CHANGE &&
	           *k < b->warmup_n + b->events_n) {
		size_t at = (size_t)*k * (size_t)b->subs_n + (size_t)idx;
		b->arrive_ns[at] = t;
		b->seq[at] = m->sequence;
		b->check_id[at] = m->change->check != NULL ? m->change->check->id : -1;
		if (atomic_fetch_add(&b->arrived[*k], 1) + 1 == b->subs_n)
			signal_all(b);
		(*k)++;
	}
}

static void stream_failed(struct bench *b, bool is_ready)
{
	atomic_fetch_add(&b->failed_n, 1);
	if (!is_ready)
		atomic_fetch_add(&b->ready_n, 1);
	signal_all(b);
}

/* ---- client "threads": a thread per stream on the client runtime ---- */

struct stream_thread {
	struct bench *b;
	int idx;
	struct rpc_channel *ch;
	pthread_t thread;
};

static void *stream_main(void *arg)
{
	struct stream_thread *st = arg;
	struct bench *b = st->b;
	const char *md[2];
	struct rpc_call_options opts = call_options(b, 0, md);
	Monitoring__V1__WatchServiceHealthRequest req;
	char *ids[1];
	fill_watch_request(b, &req, ids);
	struct rpc_status status = {0};
	struct rpc_cstream *s = NULL;
	int total = b->warmup_n + b->events_n;
	int k = -b->backlog_n;
	bool is_ready = false;
	if (rpc_cstream_open(st->ch, WATCH_PATH, &req.base, &monitoring__v1__watch_service_health_response__descriptor,
	                     &opts, &s, &status) != 0) {
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
		on_message(b, st->idx, (Monitoring__V1__WatchServiceHealthResponse *)msg, t, &k, &is_ready);
		protobuf_c_message_free_unpacked(msg, NULL);
	}
	rpc_cstream_close(s);
	return NULL;
fail:
	rpc_cstream_close(s);
	stream_failed(b, is_ready);
	return NULL;
}

static int start_threads_client(struct bench *b)
{
	int channels_n = (b->subs_n + b->per_channel - 1) / b->per_channel;
	struct rpc_channel **chans = calloc((size_t)channels_n, sizeof(*chans));
	struct stream_thread *threads = calloc((size_t)b->subs_n, sizeof(*threads));
	if (chans == NULL || threads == NULL) {
		fprintf(stderr, "watch_bench: out of memory\n");
		return -1;
	}
	struct mon_error err = {0};
	for (int i = 0; i < channels_n; i++) {
		/*
		 * gRPC core shares one connection among channels with equal
		 * arguments; a distinct receive limit per channel gives each its
		 * own connection, so no connection carries more streams than the
		 * server's max-concurrent-streams.
		 */
		struct rpc_channel_config cc = {.target = b->target, .max_recv_message_bytes = (16u << 20) + (size_t)i};
		if (rpc_channel_open(&cc, &chans[i], &err) != 0) {
			fprintf(stderr, "watch_bench: %s\n", err.msg);
			return -1;
		}
	}
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, STREAM_STACK_BYTES);
	for (int i = 0; i < b->subs_n; i++) {
		threads[i] = (struct stream_thread){.b = b, .idx = i, .ch = chans[i / b->per_channel]};
		if (pthread_create(&threads[i].thread, &attr, stream_main, &threads[i]) != 0) {
			fprintf(stderr, "watch_bench: could not start stream thread %d\n", i);
			return -1;
		}
	}
	/* The threads end by themselves after the last change; the process exits without joining. */
	return 0;
}

/* ---- client "cq": many streams per completion queue, gRPC core directly ---- */

enum cq_op { CQ_SEND, CQ_RECV, CQ_STATUS };

struct cq_stream;

struct cq_tag {
	grpc_completion_queue_functor fn; /* first: on a callback queue the tag is the functor */
	struct cq_stream *s;
	enum cq_op op;
};

/* One stream. Only its queue's poller touches it once the stream is open. */
struct cq_stream {
	struct bench *b;
	int idx;
	grpc_call *call;
	struct cq_tag t_send, t_recv, t_status;
	grpc_byte_buffer *send_buf;
	grpc_byte_buffer *recv_buf;
	grpc_metadata_array initial_md;
	grpc_metadata_array trailing_md;
	grpc_status_code code;
	grpc_slice details;
	int k;
	bool is_ready;
	bool is_over; /* failed or had every change */
};

struct poller {
	grpc_completion_queue *cq;
	pthread_t thread;
	atomic_bool *should_stop;
};

static atomic_bool cq_should_stop;

static void cq_stream_fail(struct cq_stream *s, const char *why)
{
	if (s->is_over)
		return;
	s->is_over = true;
	char details[256] = "";
	size_t len = GRPC_SLICE_LENGTH(s->details);
	if (len >= sizeof(details))
		len = sizeof(details) - 1;
	memcpy(details, GRPC_SLICE_START_PTR(s->details), len);
	details[len] = '\0';
	fprintf(stderr, "watch_bench: stream %d ended after %d changes: %s (status %d %s)\n", s->idx, s->k, why,
	        (int)s->code, details);
	stream_failed(s->b, s->is_ready);
}

/* Starts the next RECV_MESSAGE (with RECV_INITIAL_METADATA the first time). */
static bool cq_stream_recv(struct cq_stream *s, bool is_first)
{
	grpc_op ops[2];
	size_t n = 0;
	memset(ops, 0, sizeof(ops));
	if (is_first) {
		ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
		ops[n].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
		n++;
	}
	ops[n].op = GRPC_OP_RECV_MESSAGE;
	ops[n].data.recv_message.recv_message = &s->recv_buf;
	n++;
	return grpc_call_start_batch(s->call, ops, n, &s->t_recv, NULL) == GRPC_CALL_OK;
}

/* A message (or the end of the read side) arrived on s. On the poller's thread. */
static void cq_stream_on_recv(struct cq_stream *s, bool ok)
{
	int64_t t = now_ns();
	if (!ok || s->recv_buf == NULL) {
		cq_stream_fail(s, "read side ended");
		return;
	}
	grpc_byte_buffer_reader reader;
	ProtobufCMessage *msg = NULL;
	if (grpc_byte_buffer_reader_init(&reader, s->recv_buf)) {
		grpc_slice slice = grpc_byte_buffer_reader_readall(&reader);
		grpc_byte_buffer_reader_destroy(&reader);
		msg = protobuf_c_message_unpack(&monitoring__v1__watch_service_health_response__descriptor, NULL,
		                                GRPC_SLICE_LENGTH(slice), GRPC_SLICE_START_PTR(slice));
		grpc_slice_unref(slice);
	}
	grpc_byte_buffer_destroy(s->recv_buf);
	s->recv_buf = NULL;
	if (msg == NULL) {
		cq_stream_fail(s, "undecodable message");
		return;
	}
	on_message(s->b, s->idx, (Monitoring__V1__WatchServiceHealthResponse *)msg, t, &s->k, &s->is_ready);
	protobuf_c_message_free_unpacked(msg, NULL);
	if (s->k == s->b->warmup_n + s->b->events_n) {
		s->is_over = true; /* every change is in: nothing more to read */
		return;
	}
	if (!cq_stream_recv(s, false))
		cq_stream_fail(s, "could not start a read");
}

/* One completion of stream s's batch tag (on a poller, or where gRPC completed it). */
static void cq_event(struct cq_tag *tag, bool ok)
{
	struct cq_stream *s = tag->s;
	switch (tag->op) {
	case CQ_SEND:
		grpc_byte_buffer_destroy(s->send_buf);
		s->send_buf = NULL;
		if (!ok)
			cq_stream_fail(s, "could not send the request");
		break;
	case CQ_RECV: cq_stream_on_recv(s, ok); break;
	case CQ_STATUS:
		if (!s->is_over)
			cq_stream_fail(s, "the server ended the stream");
		break;
	}
}

static void cq_functor_run(grpc_completion_queue_functor *fn, int ok)
{
	cq_event((struct cq_tag *)(void *)fn, ok != 0);
}

static void cq_shutdown_run(grpc_completion_queue_functor *fn, int ok)
{
	(void)fn;
	(void)ok;
}

static void *poller_main(void *arg)
{
	struct poller *p = arg;
	while (!atomic_load(p->should_stop)) {
		gpr_timespec deadline =
		        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(200, GPR_TIMESPAN));
		grpc_event ev = grpc_completion_queue_next(p->cq, deadline, NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type == GRPC_OP_COMPLETE)
			cq_event(ev.tag, ev.success != 0);
	}
	return NULL;
}

/*
 * Opens stream s on channel ch and queue cq: the status batch, then the
 * request (metadata, message, half-close), then the first read. All three
 * batches start here, before the poller can see anything of this call.
 */
static int cq_stream_open(struct cq_stream *s, grpc_channel *ch, grpc_completion_queue *cq, grpc_metadata *md,
                          const grpc_slice *request)
{
	s->t_send = (struct cq_tag){{cq_functor_run, 1, 0, NULL}, s, CQ_SEND};
	s->t_recv = (struct cq_tag){{cq_functor_run, 1, 0, NULL}, s, CQ_RECV};
	s->t_status = (struct cq_tag){{cq_functor_run, 1, 0, NULL}, s, CQ_STATUS};
	s->details = grpc_empty_slice();
	grpc_metadata_array_init(&s->initial_md);
	grpc_metadata_array_init(&s->trailing_md);
	grpc_slice method = grpc_slice_from_static_string(WATCH_PATH);
	s->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
	                                   gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	if (s->call == NULL)
		return -1;

	grpc_op ops[3];
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
	ops[0].data.recv_status_on_client.status = &s->code;
	ops[0].data.recv_status_on_client.status_details = &s->details;
	if (grpc_call_start_batch(s->call, ops, 1, &s->t_status, NULL) != GRPC_CALL_OK)
		return -1;

	grpc_slice copy = grpc_slice_ref(*request);
	s->send_buf = grpc_raw_byte_buffer_create(&copy, 1);
	grpc_slice_unref(copy);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].data.send_initial_metadata.count = 1;
	ops[0].data.send_initial_metadata.metadata = md;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = s->send_buf;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	if (grpc_call_start_batch(s->call, ops, 3, &s->t_send, NULL) != GRPC_CALL_OK)
		return -1;
	return cq_stream_recv(s, true) ? 0 : -1;
}

static int start_cq_client(struct bench *b, int pollers_n, int callback_cqs_n)
{
	static grpc_completion_queue_functor shutdown_fn = {cq_shutdown_run, 1, 0, NULL};
	grpc_completion_queue **cb_cqs = NULL;
	static grpc_metadata md; /* lives as long as the process: the send batches point at it */
	int channels_n = (b->subs_n + b->per_channel - 1) / b->per_channel;
	grpc_channel **chans = calloc((size_t)channels_n, sizeof(*chans));
	struct cq_stream *streams = calloc((size_t)b->subs_n, sizeof(*streams));
	struct poller *pollers = calloc((size_t)pollers_n, sizeof(*pollers));
	if (chans == NULL || streams == NULL || pollers == NULL) {
		fprintf(stderr, "watch_bench: out of memory\n");
		return -1;
	}
	grpc_init();
	grpc_channel_credentials *creds = grpc_insecure_credentials_create();
	for (int i = 0; i < channels_n; i++) {
		/* A distinct receive limit per channel: a connection each (see start_threads_client). */
		grpc_arg arg = {.type = GRPC_ARG_INTEGER,
		                .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
		                .value.integer = (16 << 20) + i};
		grpc_channel_args args = {.num_args = 1, .args = &arg};
		chans[i] = grpc_channel_create(b->target, creds, &args);
		if (chans[i] == NULL) {
			fprintf(stderr, "watch_bench: could not create a channel to \"%s\"\n", b->target);
			return -1;
		}
	}
	grpc_channel_credentials_release(creds);

	md.key = grpc_slice_from_static_string("authorization");
	md.value = grpc_slice_from_static_string(b->auth);
	Monitoring__V1__WatchServiceHealthRequest req;
	char *ids[1];
	fill_watch_request(b, &req, ids);
	grpc_slice request = grpc_slice_malloc(protobuf_c_message_get_packed_size(&req.base));
	protobuf_c_message_pack(&req.base, GRPC_SLICE_START_PTR(request));

	for (int i = 0; i < pollers_n; i++) {
		pollers[i].cq = grpc_completion_queue_create_for_next(NULL);
		pollers[i].should_stop = &cq_should_stop;
		if (pthread_create(&pollers[i].thread, NULL, poller_main, &pollers[i]) != 0) {
			fprintf(stderr, "watch_bench: could not start poller %d\n", i);
			return -1;
		}
	}
	if (callback_cqs_n > 0) {
		cb_cqs = calloc((size_t)callback_cqs_n, sizeof(*cb_cqs));
		if (cb_cqs == NULL) {
			fprintf(stderr, "watch_bench: out of memory\n");
			return -1;
		}
		for (int i = 0; i < callback_cqs_n; i++)
			cb_cqs[i] = grpc_completion_queue_create_for_callback(&shutdown_fn, NULL);
	}
	for (int i = 0; i < b->subs_n; i++) {
		streams[i].b = b;
		streams[i].idx = i;
		streams[i].k = -b->backlog_n;
		grpc_completion_queue *cq = cb_cqs ? cb_cqs[i % callback_cqs_n] : pollers[i % pollers_n].cq;
		if (cq_stream_open(&streams[i], chans[i / b->per_channel], cq, &md, &request) != 0) {
			fprintf(stderr, "watch_bench: could not open stream %d\n", i);
			return -1;
		}
	}
	grpc_slice_unref(request);
	/* The process exits without tearing the calls down (see main). */
	return 0;
}

/* ---- the run ---- */

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

/* Reports check k; *check_id gets the id of the stored check. */
static int report(struct bench *b, struct rpc_channel *ch, int k, int64_t *check_id)
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
	if (resp) {
		Monitoring__V1__ReportHealthCheckResponse *r = (Monitoring__V1__ReportHealthCheckResponse *)resp;
		*check_id = r->check != NULL ? r->check->id : -1;
		if (!r->is_status_changed) {
			fprintf(stderr, "watch_bench: report %d did not change the status\n", k);
			rc = -1;
		}
		protobuf_c_message_free_unpacked(resp, NULL);
	}
	return rc;
}

/*
 * Every stream's k-th change must carry report k's check id, and its
 * sequences must strictly increase. Returns the number of deliveries that
 * break either rule (printing the first).
 */
static size_t check_order(struct bench *b, int total)
{
	size_t bad = 0;
	for (int k = 0; k < total; k++)
		for (int i = 0; i < b->subs_n; i++) {
			size_t at = (size_t)k * (size_t)b->subs_n + (size_t)i;
			bool is_ok = b->check_id[at] == b->report_check_id[k] &&
			             (k == 0 || b->seq[at] > b->seq[at - (size_t)b->subs_n]);
			if (!is_ok && bad++ == 0)
				fprintf(stderr,
				        "watch_bench: stream %d change %d: check id %" PRId64 " (report: %" PRId64
				        "), sequence %" PRId64 "\n",
				        i, k, b->check_id[at], b->report_check_id[k], b->seq[at]);
		}
	return bad;
}

/* ---- fan-out figures ---- */

/* The server's VmRSS in kB and CPU time (utime + stime) in seconds; -1 where unreadable. */
static void server_usage(long pid, long *rss_kb, double *cpu_s)
{
	char path[64], buf[1024];
	*rss_kb = -1;
	*cpu_s = -1;
	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	FILE *f = fopen(path, "r");
	while (f != NULL && fgets(buf, sizeof(buf), f) != NULL)
		if (sscanf(buf, "VmRSS: %ld kB", rss_kb) == 1)
			break;
	if (f != NULL)
		fclose(f);
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	f = fopen(path, "r");
	size_t len = f != NULL ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	if (f != NULL)
		fclose(f);
	buf[len] = '\0';
	const char *after_name = strrchr(buf, ')'); /* the command name may hold spaces */
	unsigned long utime = 0, stime = 0;
	if (after_name != NULL &&
	    sscanf(after_name + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) == 2)
		*cpu_s = (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* Health/Check one call after another (a millisecond apart) until told to stop, on a channel of its own. */
struct probe {
	struct rpc_channel *ch;
	pthread_t thread;
	atomic_bool should_stop;
	int64_t *latency_ns;
	size_t n, cap, failed_n;
};

static void *probe_main(void *arg)
{
	struct probe *p = arg;
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	struct rpc_call_options opts = {.timeout_ms = CALL_TIMEOUT_MS};
	struct timespec gap = {.tv_sec = 0, .tv_nsec = 1000000};
	while (!atomic_load(&p->should_stop) && p->n < p->cap) {
		ProtobufCMessage *resp = NULL;
		struct rpc_status status = {0};
		int64_t t0 = now_ns();
		int rc = rpc_unary_call(p->ch, "/grpc.health.v1.Health/Check", &req.base,
		                        &grpc__health__v1__health_check_response__descriptor, &resp, &opts, &status);
		int64_t t1 = now_ns();
		if (resp != NULL)
			protobuf_c_message_free_unpacked(resp, NULL);
		if (rc == 0)
			p->latency_ns[p->n++] = t1 - t0;
		else
			p->failed_n++;
		nanosleep(&gap, NULL);
	}
	return NULL;
}

/*
 * --backlog: the sequence the streams resume after (the log's mark in a
 * snapshot of the service), then backlog_n reports after it.
 */
static int make_backlog(struct bench *b, struct rpc_channel *ch)
{
	const char *md[2];
	struct rpc_call_options opts = call_options(b, CALL_TIMEOUT_MS, md);
	Monitoring__V1__WatchServiceHealthRequest req;
	char *ids[1];
	fill_watch_request(b, &req, ids);
	struct rpc_status status = {0};
	struct rpc_cstream *s = NULL;
	int64_t mark = -1;
	if (rpc_cstream_open(ch, WATCH_PATH, &req.base, &monitoring__v1__watch_service_health_response__descriptor,
	                     &opts, &s, &status) == 0) {
		ProtobufCMessage *msg = NULL;
		while (mark < 0 && rpc_cstream_next(s, &msg, CALL_TIMEOUT_MS, &status) == 1) {
			Monitoring__V1__WatchServiceHealthResponse *m =
			        (Monitoring__V1__WatchServiceHealthResponse *)msg;
			if (m->event_case == MONITORING__V1__WATCH_SERVICE_HEALTH_RESPONSE__EVENT_CONTROL &&
			    m->control->kind ==
			            MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_SNAPSHOT_COMPLETE)
				mark = m->control->resume_after_sequence;
			protobuf_c_message_free_unpacked(msg, NULL);
		}
	}
	rpc_cstream_close(s);
	if (mark < 0) {
		fprintf(stderr, "watch_bench: no snapshot mark for the backlog: %d %s\n", status.code, status.message);
		return -1;
	}
	for (int k = 0; k < b->backlog_n; k++) {
		int64_t check_id = 0;
		if (report(b, ch, k, &check_id) != 0)
			return -1;
	}
	b->resume_after = mark;
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: watch_bench --target HOST:PORT --token API_KEY [--subscribers N] [--events N]\n"
	                "                   [--warmup N] [--streams-per-channel N] [--client cq|cb|threads]\n"
	                "                   [--pollers N] [--server-pid PID] [--interval-ms MS] [--backlog N]\n");
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
	const char *client = "cq";
	int pollers_n = 1;
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
		else if (strcmp(argv[i], "--client") == 0)
			client = argv[i + 1];
		else if (strcmp(argv[i], "--pollers") == 0)
			pollers_n = (int)parse_count("--pollers", argv[i + 1], 1, POLLERS_MAX);
		else if (strcmp(argv[i], "--server-pid") == 0)
			b.server_pid = parse_count("--server-pid", argv[i + 1], 1, 1L << 30);
		else if (strcmp(argv[i], "--interval-ms") == 0)
			b.interval_ms = (int)parse_count("--interval-ms", argv[i + 1], 0, 60000);
		else if (strcmp(argv[i], "--backlog") == 0)
			b.backlog_n = (int)parse_count("--backlog", argv[i + 1], 0, 100000);
		else
			usage();
	}
	bool is_cb = strcmp(client, "cb") == 0;
	bool is_cq = is_cb || strcmp(client, "cq") == 0;
	if (b.target == NULL || token == NULL || argc % 2 == 0 || (!is_cq && strcmp(client, "threads") != 0))
		usage();
	snprintf(b.auth, sizeof(b.auth), "Bearer %s", token);
	snprintf(b.service_id, sizeof(b.service_id), "bench-watch-%ld-%ld", (long)getpid(), (long)time(NULL));
	int total = b.warmup_n + b.events_n;
	size_t cells = (size_t)total * (size_t)b.subs_n;
	b.arrive_ns = calloc(cells, sizeof(*b.arrive_ns));
	b.seq = calloc(cells, sizeof(*b.seq));
	b.check_id = calloc(cells, sizeof(*b.check_id));
	b.report_check_id = calloc((size_t)total, sizeof(*b.report_check_id));
	b.arrived = calloc((size_t)total, sizeof(*b.arrived));
	int64_t *sent_ns = calloc((size_t)total, sizeof(*sent_ns));
	int64_t *returned_ns = calloc((size_t)total, sizeof(*returned_ns));
	if (!b.arrive_ns || !b.seq || !b.check_id || !b.report_check_id || !b.arrived || !sent_ns || !returned_ns) {
		fprintf(stderr, "watch_bench: out of memory\n");
		return 1;
	}
	pthread_mutex_init(&b.mu, NULL);
	pthread_cond_init(&b.cond, NULL);

	int rc = 1;
	struct mon_error err = {0};
	struct rpc_channel *unary = NULL;
	/* A receive limit no stream channel has: a connection of its own for the reports. */
	struct rpc_channel_config cc = {.target = b.target, .max_recv_message_bytes = (16u << 20) - 1};
	if (rpc_channel_open(&cc, &unary, &err) != 0) {
		fprintf(stderr, "watch_bench: %s\n", err.msg);
		goto out;
	}
	if (create_service(&b, unary) != 0)
		goto out;
	if (b.backlog_n > 0 && make_backlog(&b, unary) != 0)
		goto out;
	long rss0 = -1, rss1 = -1, rss_unused = -1;
	double cpu0 = -1, cpu1 = -1, cpu_unused = -1;
	if (b.server_pid > 0)
		server_usage(b.server_pid, &rss0, &cpu_unused);
	/* --backlog: Health/Check latency while the streams catch up, on a connection of its own. */
	struct probe probe = {.cap = 1000000};
	struct rpc_channel_config pc = {.target = b.target, .max_recv_message_bytes = (16u << 20) - 2};
	bool has_probe = false;
	if (b.backlog_n > 0) {
		probe.latency_ns = calloc(probe.cap, sizeof(*probe.latency_ns));
		if (probe.latency_ns == NULL || rpc_channel_open(&pc, &probe.ch, &err) != 0 ||
		    pthread_create(&probe.thread, NULL, probe_main, &probe) != 0) {
			fprintf(stderr, "watch_bench: could not start the Health/Check probe\n");
			goto out;
		}
		has_probe = true;
	}
	int64_t ready_start_ns = now_ns();
	if ((is_cq ? start_cq_client(&b, pollers_n, is_cb ? CALLBACK_CQS : 0) : start_threads_client(&b)) != 0)
		goto out;
	bool is_ready = wait_for(&b, all_ready, 0, b.backlog_n > 0 ? 600000 : 120000);
	int64_t ready_ns = now_ns() - ready_start_ns;
	if (has_probe) {
		atomic_store(&probe.should_stop, true);
		pthread_join(probe.thread, NULL);
	}
	if (!is_ready) {
		fprintf(stderr, "watch_bench: streams not ready (%d of %d, %d failed)\n", atomic_load(&b.ready_n),
		        b.subs_n, atomic_load(&b.failed_n));
		goto out;
	}
	if (b.server_pid > 0)
		server_usage(b.server_pid, &rss1, &cpu_unused);
	int64_t phase_start_ns = 0, phase_ns = 0;
	for (int k = 0; k < total; k++) {
		if (k == b.warmup_n && b.server_pid > 0) {
			server_usage(b.server_pid, &rss_unused, &cpu0);
			phase_start_ns = now_ns();
		}
		sent_ns[k] = now_ns();
		if (report(&b, unary, b.backlog_n + k, &b.report_check_id[k]) != 0)
			goto out;
		returned_ns[k] = now_ns();
		if (!wait_for(&b, all_arrived, k, DELIVERY_TIMEOUT_MS)) {
			fprintf(stderr, "watch_bench: event %d reached %d of %d streams\n", k,
			        atomic_load(&b.arrived[k]), b.subs_n);
			goto out;
		}
		if (b.interval_ms > 0 && k + 1 < total) {
			int64_t next_ns = sent_ns[k] + (int64_t)b.interval_ms * 1000000;
			struct timespec at = {.tv_sec = next_ns / 1000000000, .tv_nsec = next_ns % 1000000000};
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) != 0) {
			}
		}
	}
	if (b.server_pid > 0) {
		server_usage(b.server_pid, &rss_unused, &cpu1);
		phase_ns = now_ns() - phase_start_ns;
	}
	size_t out_of_order = check_order(&b, total);
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
	printf("client=%s", client);
	if (is_cq)
		printf(" pollers=%d", pollers_n);
	printf(" subscribers=%d channels=%d events=%d warmup=%d deliveries=%zu out_of_order=%zu\n", b.subs_n,
	       (b.subs_n + b.per_channel - 1) / b.per_channel, b.events_n, b.warmup_n, n, out_of_order);
	print_stats("from Report return", from_return, n);
	printf("%-22s %zu of %zu deliveries (counted as 0)\n", "arrived before return", early, n);
	print_stats("from Report send", from_send, n);
	if (b.backlog_n > 0) {
		printf("backlog: %d changes to each of %d streams (resume_after_sequence %" PRId64
		       "), all caught up in %.1f s\n",
		       b.backlog_n, b.subs_n, b.resume_after, ready_ns / 1e9);
		if (probe.n > 0)
			print_stats("Health/Check probe", probe.latency_ns, probe.n);
		printf("%-22s %zu failed\n", "Health/Check probe", probe.failed_n);
	}
	if (b.server_pid > 0 && cpu1 >= 0 && cpu0 >= 0) {
		printf("server CPU: %.2f s over the %d measured events (%.1f s, %.0f%% of a core): %.2f us per "
		       "delivered message\n",
		       cpu1 - cpu0, b.events_n, phase_ns / 1e9, 100.0 * (cpu1 - cpu0) / (phase_ns / 1e9),
		       (cpu1 - cpu0) * 1e6 / (double)n);
		printf("server RSS: %ld kB before the streams, %ld kB once all were ready", rss0, rss1);
		if (b.backlog_n == 0)
			printf(": %.1f kB per idle subscriber", (double)(rss1 - rss0) / b.subs_n);
		printf("\n");
	}
	free(from_return);
	free(from_send);
	rc = out_of_order == 0 ? 0 : 1;
out:
	/* Streams may still be open (and threads blocked on them): exit without tearing gRPC down. */
	fflush(stdout);
	fflush(stderr);
	_exit(rc);
}
