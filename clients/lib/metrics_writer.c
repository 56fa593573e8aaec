/*
 * The batching metrics writer (<monitoring/metrics_writer.h>). It owns a
 * bounded FIFO of points, each kept as its serialised bytes, and one
 * background thread that takes batches off its head and records them with
 * RecordMetrics, retrying on its own (the library's retries of a keyed
 * call are not stacked under its own). A batch is the concatenation of its
 * points framed as field 1 of RecordMetricsRequest, so that the request is
 * decoded once from that buffer instead of copying every point message.
 *
 * Points are numbered in the order they are added; the thread resolves
 * them (recorded or given up) in that order, so "every point added before
 * flush" is "done_n reaches the count at the call".
 */
#include "monitoring/metrics_writer.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client_call.h"
#include "monitoring/v1/metrics.mon-client.h"
#include "rpc/idem.h"
#include "util/clock.h"
#include "util/error.h"

#define DEFAULT_BATCH_POINTS 1000
#define DEFAULT_BATCH_BYTES ((size_t)4000000)
#define DEFAULT_DELAY_MS 1000
#define DEFAULT_BUFFERED_POINTS ((size_t)100000)
#define DEFAULT_CALL_TIMEOUT_MS 10000
#define DEFAULT_RETRY_TIMEOUT_MS 60000
#define DEFAULT_RETRY_INITIAL_MS 100
#define DEFAULT_RETRY_MAX_MS 5000
/* A buffer of more points than this is a mistake, not a setting. */
#define MAX_BUFFERED_POINTS ((size_t)100000000)

/* gRPC status codes. */
#define ST_OK 0
#define ST_CANCELLED 1
#define ST_INVALID_ARGUMENT 3
#define ST_DEADLINE_EXCEEDED 4
#define ST_RESOURCE_EXHAUSTED 8
#define ST_FAILED_PRECONDITION 9
#define ST_UNAVAILABLE 14

/* The framing of one point in a RecordMetricsRequest: field 1, length-delimited. */
#define POINT_TAG 0x0a
/* allow_partial = true: field 3, varint 1. */
static const uint8_t ALLOW_PARTIAL[2] = {0x18, 0x01};

struct entry {
	uint8_t *data; /* the point's serialised bytes, framed (tag, length, bytes) */
	size_t len;
	int64_t added_ms;
	uint64_t key_hash; /* of (time, metric_name, endpoint); never 0 */
};

struct mon_metrics_writer {
	mon_client *client;
	mon_metrics_writer_options opts;
	char request_prefix[40];
	uint64_t rand_state;

	pthread_mutex_t mu;
	pthread_cond_t wake; /* the thread: points, flush, close */
	pthread_cond_t room; /* adders: the buffer has room */
	pthread_cond_t done; /* flushers and close: points resolved */
	pthread_t thread;
	bool has_thread;

	struct entry *ring;          /* capacity opts.max_buffered_points */
	struct entry *batch_entries; /* the thread's batch, max_batch_points */
	uint64_t *batch_keys;        /* key hashes of the batch being taken (open addressing) */
	size_t batch_keys_cap;       /* a power of two, at least twice max_batch_points */
	size_t head;
	size_t queued_n; /* in the ring, not yet taken */
	size_t queued_bytes;
	size_t in_flight_n;

	uint64_t added_n;    /* points added */
	uint64_t taken_n;    /* points taken into a batch */
	uint64_t done_n;     /* points resolved */
	uint64_t flush_upto; /* send partial batches until taken_n reaches this */
	uint64_t failed_end; /* one past the number of the last point given up */
	bool is_closing;
	bool is_aborting; /* close timed out: give up what is left */

	mon_metrics_writer_stats stats;
	int fail_code;          /* code of the last points given up */
	char fail_message[256]; /* and its message */
};

static void status_set(mon_status *status, int code, const char *fmt, ...) MON_PRINTF(3, 4);

static void status_set(mon_status *status, int code, const char *fmt, ...)
{
	if (status == NULL)
		return;
	status->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(status->message, sizeof(status->message), fmt, ap);
	va_end(ap);
}

/* Waits on cond until the monotonic time at_ms; returns ETIMEDOUT once it passed. */
static int cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mu, int64_t at_ms)
{
	struct timespec ts = {.tv_sec = (time_t)(at_ms / 1000), .tv_nsec = (long)(at_ms % 1000) * 1000000};
	return pthread_cond_timedwait(cond, mu, &ts);
}

static uint64_t rand_next(uint64_t *state)
{
	/* xorshift64*: enough to spread retries of many writers. */
	uint64_t x = *state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 2685821657736338717ull;
}

static size_t varint_len(size_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static size_t varint_put(uint8_t *out, size_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		out[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	out[n++] = (uint8_t)v;
	return n;
}

static int options_check(const mon_metrics_writer_options *in, mon_metrics_writer_options *o, mon_status *status)
{
	*o = in != NULL ? *in : (mon_metrics_writer_options){0};
	if (o->max_batch_points < 0 || o->max_batch_points > MON_METRICS_WRITER_MAX_BATCH_POINTS) {
		status_set(status, ST_INVALID_ARGUMENT, "max_batch_points: must be between 1 and %d (0: %d)",
		           MON_METRICS_WRITER_MAX_BATCH_POINTS, DEFAULT_BATCH_POINTS);
		return MON_EINVAL;
	}
	if (o->max_batch_points == 0)
		o->max_batch_points = DEFAULT_BATCH_POINTS;
	if (o->max_batch_bytes == 0)
		o->max_batch_bytes = DEFAULT_BATCH_BYTES;
	if (o->max_batch_bytes < 1024) {
		status_set(status, ST_INVALID_ARGUMENT, "max_batch_bytes: must be at least 1024");
		return MON_EINVAL;
	}
	if (o->max_delay_ms < 0) {
		status_set(status, ST_INVALID_ARGUMENT, "max_delay_ms: must not be negative");
		return MON_EINVAL;
	}
	if (o->max_delay_ms == 0)
		o->max_delay_ms = DEFAULT_DELAY_MS;
	if (o->max_buffered_points == 0)
		o->max_buffered_points = DEFAULT_BUFFERED_POINTS > (size_t)o->max_batch_points
		                                 ? DEFAULT_BUFFERED_POINTS
		                                 : (size_t)o->max_batch_points;
	if (o->max_buffered_points < (size_t)o->max_batch_points || o->max_buffered_points > MAX_BUFFERED_POINTS) {
		status_set(status, ST_INVALID_ARGUMENT,
		           "max_buffered_points: must be between max_batch_points (%d) and %zu", o->max_batch_points,
		           MAX_BUFFERED_POINTS);
		return MON_EINVAL;
	}
	if (o->call_timeout_ms < 0) {
		status_set(status, ST_INVALID_ARGUMENT, "call_timeout_ms: must not be negative");
		return MON_EINVAL;
	}
	if (o->call_timeout_ms == 0)
		o->call_timeout_ms = DEFAULT_CALL_TIMEOUT_MS;
	if (o->retry_timeout_ms == 0)
		o->retry_timeout_ms = DEFAULT_RETRY_TIMEOUT_MS;
	if (o->retry_initial_ms < 0 || o->retry_max_ms < 0) {
		status_set(status, ST_INVALID_ARGUMENT, "retry_initial_ms, retry_max_ms: must not be negative");
		return MON_EINVAL;
	}
	if (o->retry_initial_ms == 0)
		o->retry_initial_ms = DEFAULT_RETRY_INITIAL_MS;
	if (o->retry_max_ms == 0)
		o->retry_max_ms = DEFAULT_RETRY_MAX_MS;
	if (o->retry_max_ms < o->retry_initial_ms)
		o->retry_max_ms = o->retry_initial_ms;
	return MON_OK;
}

/* --- batches ------------------------------------------------------------- */

/* A batch being sent: entries taken off the ring (owned here) and their request. */
struct batch {
	struct entry *entries; /* the writer's batch_entries array */
	size_t n;
	uint64_t first; /* number of the first point */
	size_t bytes;
	Monitoring__V1__RecordMetricsRequest *req;
	char request_id[64];
};

static void batch_release(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		free(b->entries[i].data);
		b->entries[i].data = NULL;
	}
	if (b->req != NULL)
		protobuf_c_message_free_unpacked(&b->req->base, NULL);
	b->req = NULL;
	b->n = 0;
	b->bytes = 0;
}

/*
 * Adds h to the batch's key set; false when it is there already. A key
 * repeated in one request is refused by the server, so a batch ends before
 * a point whose key it already holds, and that point goes, and replaces the
 * earlier one, in the next batch. (Two different keys with the same hash
 * only end a batch early.)
 */
static bool batch_key_add(mon_metrics_writer *w, uint64_t h)
{
	size_t mask = w->batch_keys_cap - 1;
	for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
		if (w->batch_keys[i] == 0) {
			w->batch_keys[i] = h;
			return true;
		}
		if (w->batch_keys[i] == h)
			return false;
	}
}

/*
 * Moves points from the head of the ring into b: up to max_batch_points
 * whose framed size fits max_batch_bytes (always at least one), stopping
 * before a key the batch already holds. Called with the lock held and
 * queued_n > 0.
 */
static void batch_take(mon_metrics_writer *w, struct batch *b)
{
	size_t cap = w->opts.max_buffered_points;
	b->n = 0;
	b->bytes = 0;
	b->first = w->taken_n;
	memset(w->batch_keys, 0, w->batch_keys_cap * sizeof(*w->batch_keys));
	while (w->queued_n > 0 && b->n < (size_t)w->opts.max_batch_points) {
		struct entry *e = &w->ring[w->head];
		if (b->n > 0 && b->bytes + e->len > w->opts.max_batch_bytes)
			break;
		if (!batch_key_add(w, e->key_hash))
			break;
		b->entries[b->n++] = *e;
		b->bytes += e->len;
		e->data = NULL;
		w->head = (w->head + 1) % cap;
		w->queued_n--;
		w->queued_bytes -= e->len;
	}
	w->taken_n += b->n;
	w->in_flight_n += b->n;
}

/*
 * Builds b->req from the framed points (and allow_partial unless atomic)
 * with one decode. Called without the lock.
 */
static int batch_build(mon_metrics_writer *w, struct batch *b)
{
	size_t len = b->bytes + sizeof(ALLOW_PARTIAL);
	uint8_t *buf = malloc(len);
	if (buf == NULL)
		return MON_ENOMEM;
	size_t off = 0;
	for (size_t i = 0; i < b->n; i++) {
		memcpy(buf + off, b->entries[i].data, b->entries[i].len);
		off += b->entries[i].len;
	}
	if (!w->opts.is_atomic) {
		memcpy(buf + off, ALLOW_PARTIAL, sizeof(ALLOW_PARTIAL));
		off += sizeof(ALLOW_PARTIAL);
	}
	b->req = (Monitoring__V1__RecordMetricsRequest *)protobuf_c_message_unpack(
	        &monitoring__v1__record_metrics_request__descriptor, NULL, off, buf);
	free(buf);
	if (b->req == NULL)
		return MON_ENOMEM;
	/*
	 * One idempotency key per batch, kept on every retry: a retry of a batch
	 * that was stored answers the first counts (freed with the request).
	 */
	char key[RPC_IDEM_UUID_LEN];
	if (rpc_idem_new_key(key) == 0 && (b->req->request_id = strdup(key)) == NULL)
		return MON_ENOMEM;
	return MON_OK;
}

/* One RecordMetrics attempt: batch_send retries it, with the writer's options and counters. */
static int record_metrics_once(mon_client *client, const Monitoring__V1__RecordMetricsRequest *req,
                               Monitoring__V1__RecordMetricsResponse **resp, const mon_call_options *opts,
                               mon_status *status)
{
	ProtobufCMessage *msg = NULL;
	int rc = client_call_unary(client, "/monitoring.v1.MetricsService/RecordMetrics", &req->base,
	                           &monitoring__v1__record_metrics_response__descriptor, &msg, opts, false, status);
	*resp = (Monitoring__V1__RecordMetricsResponse *)(void *)msg;
	return rc;
}

static bool is_retryable(int code)
{
	return code == ST_UNAVAILABLE || code == ST_DEADLINE_EXCEEDED || code == ST_RESOURCE_EXHAUSTED;
}

/*
 * Hands points of b to the callback and counts them as given up. idx lists
 * the indexes in b of the points (NULL: all of them); errors (may be NULL)
 * have their index rewritten to index into the list. Called without the lock.
 */
static void report_failure(mon_metrics_writer *w, struct batch *b, int code, const char *message, const size_t *idx,
                           size_t idx_n, Monitoring__V1__PointError **errors, size_t errors_n)
{
	size_t n = idx != NULL ? idx_n : b->n;
	uint64_t last = idx != NULL ? (idx_n > 0 ? b->first + idx[idx_n - 1] : b->first) : b->first + b->n - 1;

	if (w->opts.on_error != NULL && n > 0) {
		const Monitoring__V1__MetricPoint **points = calloc(n, sizeof(*points));
		if (points != NULL && b->req != NULL) {
			for (size_t i = 0; i < n; i++)
				points[i] = b->req->points[idx != NULL ? idx[i] : i];
		}
		/*
		 * Point the errors at the listed points (idx is sorted); errors
		 * naming a point not listed are moved past errors_n, so that the
		 * reply still frees them.
		 */
		size_t kept = 0;
		for (size_t e = 0; e < errors_n && idx != NULL; e++) {
			size_t lo = 0, hi = idx_n;
			while (lo < hi) {
				size_t mid = (lo + hi) / 2;
				if (idx[mid] < (size_t)errors[e]->index)
					lo = mid + 1;
				else
					hi = mid;
			}
			if (errors[e]->index < 0 || lo >= idx_n || idx[lo] != (size_t)errors[e]->index)
				continue;
			errors[e]->index = (int32_t)lo;
			Monitoring__V1__PointError *t = errors[kept];
			errors[kept++] = errors[e];
			errors[e] = t;
		}
		errors_n = idx != NULL && points != NULL && b->req != NULL ? kept : 0;
		mon_metrics_writer_failure f = {
		        .code = code,
		        .message = message,
		        .points = points != NULL && b->req != NULL ? points : NULL,
		        .points_n = points != NULL && b->req != NULL ? n : 0,
		        .errors = (const Monitoring__V1__PointError *const *)errors,
		        .errors_n = errors_n,
		};
		w->opts.on_error(w->opts.on_error_data, &f);
		free(points);
	}
	pthread_mutex_lock(&w->mu);
	w->stats.points_failed += n;
	if (n > 0 && last + 1 > w->failed_end)
		w->failed_end = last + 1;
	w->fail_code = code;
	snprintf(w->fail_message, sizeof(w->fail_message), "%s", message);
	pthread_mutex_unlock(&w->mu);
}

static int size_cmp(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	return (x > y) - (x < y);
}

/* Reports the points the server rejected in an OK reply (allow_partial). */
static void report_rejected(mon_metrics_writer *w, struct batch *b, Monitoring__V1__RecordMetricsResponse *resp)
{
	size_t *idx = calloc(resp->n_errors + 1, sizeof(*idx));
	size_t idx_n = 0;
	if (idx == NULL) {
		pthread_mutex_lock(&w->mu);
		w->stats.points_failed += (uint64_t)resp->rejected_count;
		w->failed_end = b->first + b->n;
		w->fail_code = ST_INVALID_ARGUMENT;
		snprintf(w->fail_message, sizeof(w->fail_message), "points rejected (out of memory to list them)");
		pthread_mutex_unlock(&w->mu);
		return;
	}
	for (size_t i = 0; i < resp->n_errors; i++) {
		int32_t k = resp->errors[i]->index;
		if (k >= 0 && (size_t)k < b->n)
			idx[idx_n++] = (size_t)k;
	}
	qsort(idx, idx_n, sizeof(*idx), size_cmp);
	size_t u = 0;
	for (size_t i = 0; i < idx_n; i++)
		if (u == 0 || idx[u - 1] != idx[i])
			idx[u++] = idx[i];
	char msg[256];
	snprintf(msg, sizeof(msg), "%d of %zu points rejected (first: points[%d].%s: %s)", resp->rejected_count, b->n,
	         resp->n_errors > 0 ? resp->errors[0]->index : 0,
	         resp->n_errors > 0 && resp->errors[0]->field != NULL ? resp->errors[0]->field : "?",
	         resp->n_errors > 0 && resp->errors[0]->message != NULL ? resp->errors[0]->message : "?");
	report_failure(w, b, ST_INVALID_ARGUMENT, msg, idx, u, resp->errors, resp->n_errors);
	free(idx);
}

/*
 * After an atomic batch was refused with INVALID_ARGUMENT: asks the server
 * for every error (validate_only) so the callback can see them all, and
 * reports the whole batch.
 */
static void report_invalid_batch(mon_metrics_writer *w, struct batch *b, const mon_status *st)
{
	Monitoring__V1__RecordMetricsResponse *resp = NULL;
	size_t *idx = NULL;
	if (b->req != NULL && w->opts.on_error != NULL) {
		b->req->validate_only = 1;
		mon_call_options co = {.timeout_ms = w->opts.call_timeout_ms, .request_id = b->request_id};
		mon_status vst;
		if (mon_metrics_service_record_metrics(w->client, b->req, &resp, &co, &vst) != 0)
			resp = NULL;
		b->req->validate_only = 0;
		idx = calloc(b->n, sizeof(*idx));
	}
	if (idx != NULL) {
		for (size_t i = 0; i < b->n; i++)
			idx[i] = i;
		report_failure(w, b, st->code, st->message, idx, b->n, resp != NULL ? resp->errors : NULL,
		               resp != NULL ? resp->n_errors : 0);
	} else {
		report_failure(w, b, st->code, st->message, NULL, 0, NULL, 0);
	}
	free(idx);
	if (resp != NULL)
		mon_message_free(&resp->base);
}

/*
 * Sends b until it is recorded, fails for good, its retries run out or the
 * writer is aborted; counts and reports the outcome. Called without the lock.
 */
static void batch_send(mon_metrics_writer *w, struct batch *b)
{
	int64_t started_ms = mon_now_ms();
	int64_t backoff_ms = w->opts.retry_initial_ms;
	mon_status st = {0};

	if (batch_build(w, b) != MON_OK) {
		report_failure(w, b, ST_RESOURCE_EXHAUSTED, "metrics writer: out of memory building a batch", NULL, 0,
		               NULL, 0);
		return;
	}
	for (int attempt = 0;; attempt++) {
		Monitoring__V1__RecordMetricsResponse *resp = NULL;
		mon_call_options co = {.timeout_ms = w->opts.call_timeout_ms, .request_id = b->request_id};
		int rc = record_metrics_once(w->client, b->req, &resp, &co, &st);
		if (rc == 0) {
			pthread_mutex_lock(&w->mu);
			w->stats.batches_sent++;
			w->stats.points_inserted += (uint64_t)resp->inserted_count;
			w->stats.points_updated += (uint64_t)resp->updated_count;
			w->stats.points_duplicate += (uint64_t)resp->duplicate_count;
			w->stats.points_sent += (uint64_t)resp->inserted_count + (uint64_t)resp->updated_count +
			                        (uint64_t)resp->duplicate_count;
			pthread_mutex_unlock(&w->mu);
			if (resp->rejected_count > 0)
				report_rejected(w, b, resp);
			mon_message_free(&resp->base);
			return;
		}
		pthread_mutex_lock(&w->mu);
		w->stats.last_error_code = st.code;
		bool is_aborting = w->is_aborting;
		pthread_mutex_unlock(&w->mu);

		if (!is_retryable(st.code)) {
			if (st.code == ST_INVALID_ARGUMENT)
				report_invalid_batch(w, b, &st);
			else
				report_failure(w, b, st.code, st.message, NULL, 0, NULL, 0);
			break;
		}
		/* Equal jitter: between half and all of the backoff. */
		int64_t wait_ms =
		        backoff_ms / 2 + (int64_t)(rand_next(&w->rand_state) % (uint64_t)(backoff_ms / 2 + 1));
		int64_t retry_at = mon_now_ms() + wait_ms;
		if (is_aborting || (w->opts.retry_timeout_ms > 0 && retry_at - started_ms > w->opts.retry_timeout_ms)) {
			char msg[600];
			snprintf(msg, sizeof(msg), "%s after %d attempts: %s",
			         is_aborting ? "writer closed" : "retries exhausted", attempt + 1, st.message);
			report_failure(w, b, is_aborting ? ST_CANCELLED : st.code, msg, NULL, 0, NULL, 0);
			break;
		}
		pthread_mutex_lock(&w->mu);
		while (!w->is_aborting && cond_wait_until(&w->wake, &w->mu, retry_at) != ETIMEDOUT)
			;
		w->stats.retries++;
		w->stats.points_retried += b->n;
		pthread_mutex_unlock(&w->mu);
		if (backoff_ms < w->opts.retry_max_ms)
			backoff_ms = backoff_ms * 2 < w->opts.retry_max_ms ? backoff_ms * 2 : w->opts.retry_max_ms;
	}
	pthread_mutex_lock(&w->mu);
	w->stats.batches_failed++;
	pthread_mutex_unlock(&w->mu);
}

/* --- the background thread ----------------------------------------------- */

/* Whether the head of the queue should go now; with the lock held and queued_n > 0. */
static bool is_batch_due(const mon_metrics_writer *w, int64_t *due_ms)
{
	*due_ms = w->ring[w->head].added_ms + w->opts.max_delay_ms;
	return w->queued_n >= (size_t)w->opts.max_batch_points || w->queued_bytes >= w->opts.max_batch_bytes ||
	       w->taken_n < w->flush_upto || w->is_closing || mon_now_ms() >= *due_ms;
}

static void *writer_main(void *arg)
{
	mon_metrics_writer *w = arg;
	struct batch b = {0};
	uint64_t batch_no = 0;

	b.entries = w->batch_entries;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		if (w->queued_n == 0) {
			if (w->is_closing)
				break;
			pthread_cond_wait(&w->wake, &w->mu);
			continue;
		}
		int64_t due_ms;
		if (!is_batch_due(w, &due_ms)) {
			cond_wait_until(&w->wake, &w->mu, due_ms);
			continue;
		}
		batch_take(w, &b);
		bool is_aborting = w->is_aborting;
		pthread_mutex_unlock(&w->mu);

		snprintf(b.request_id, sizeof(b.request_id), "%s-%" PRIu64, w->request_prefix, ++batch_no);
		if (is_aborting) {
			if (batch_build(w, &b) != MON_OK)
				b.req = NULL;
			report_failure(w, &b, ST_CANCELLED, "writer closed before the points were sent", NULL, 0, NULL,
			               0);
		} else {
			batch_send(w, &b);
		}
		size_t n = b.n;
		batch_release(&b);

		pthread_mutex_lock(&w->mu);
		w->in_flight_n -= n;
		w->done_n += n;
		pthread_cond_broadcast(&w->room);
		pthread_cond_broadcast(&w->done);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* FNV-1a of a point's key: time, metric_name, endpoint. */
static uint64_t key_hash(const Monitoring__V1__MetricPoint *p)
{
	uint64_t h = 1469598103934665603ull;
	int64_t sec = p->time != NULL ? p->time->seconds : 0;
	int32_t nanos = p->time != NULL ? p->time->nanos : 0;
	uint8_t t[12];
	memcpy(t, &sec, sizeof(sec));
	memcpy(t + 8, &nanos, sizeof(nanos));
	for (size_t i = 0; i < sizeof(t); i++)
		h = (h ^ t[i]) * 1099511628211ull;
	const char *parts[2] = {p->metric_name != NULL ? p->metric_name : "", p->endpoint != NULL ? p->endpoint : ""};
	for (int k = 0; k < 2; k++) {
		for (const char *c = parts[k]; *c != '\0'; c++)
			h = (h ^ (uint8_t)*c) * 1099511628211ull;
		h = (h ^ 0xffu) * 1099511628211ull; /* separator: ("ab", "c") is not ("a", "bc") */
	}
	return h != 0 ? h : 1;
}

/* --- public API ------------------------------------------------------------ */

MON_API int mon_metrics_writer_create(mon_client *client, const mon_metrics_writer_options *opts,
                                      mon_metrics_writer **out, mon_status *status)
{
	int rc = MON_OK;
	mon_metrics_writer *w = NULL;
	pthread_condattr_t ca;

	status_set(status, ST_OK, "%s", "");
	if (out == NULL || client == NULL) {
		status_set(status, ST_INVALID_ARGUMENT, "mon_metrics_writer_create: NULL client or out");
		return MON_EINVAL;
	}
	*out = NULL;
	w = calloc(1, sizeof(*w));
	if (w == NULL) {
		status_set(status, ST_RESOURCE_EXHAUSTED, "out of memory");
		return MON_ENOMEM;
	}
	if ((rc = options_check(opts, &w->opts, status)) != MON_OK) {
		free(w);
		return rc;
	}
	w->client = client;
	w->ring = calloc(w->opts.max_buffered_points, sizeof(*w->ring));
	w->batch_entries = calloc((size_t)w->opts.max_batch_points, sizeof(*w->batch_entries));
	w->batch_keys_cap = 16;
	while (w->batch_keys_cap < 2 * (size_t)w->opts.max_batch_points)
		w->batch_keys_cap *= 2;
	w->batch_keys = calloc(w->batch_keys_cap, sizeof(*w->batch_keys));
	if (w->ring == NULL || w->batch_entries == NULL || w->batch_keys == NULL) {
		free(w->batch_keys);
		status_set(status, ST_RESOURCE_EXHAUSTED, "out of memory for %zu buffered points",
		           w->opts.max_buffered_points);
		free(w->ring);
		free(w->batch_entries);
		free(w);
		return MON_ENOMEM;
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	w->rand_state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^
	                (uint64_t)(uintptr_t)w;
	if (w->rand_state == 0)
		w->rand_state = 0x9e3779b97f4a7c15ull;
	snprintf(w->request_prefix, sizeof(w->request_prefix), "metrics-writer-%08" PRIx32,
	         (uint32_t)(rand_next(&w->rand_state) >> 32));

	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->wake, &ca);
	pthread_cond_init(&w->room, &ca);
	pthread_cond_init(&w->done, &ca);
	pthread_condattr_destroy(&ca);

	if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
		status_set(status, ST_RESOURCE_EXHAUSTED, "could not start the writer thread: %s", strerror(errno));
		rc = MON_ENOMEM;
		goto fail;
	}
	w->has_thread = true;
	*out = w;
	return MON_OK;
fail:
	pthread_cond_destroy(&w->wake);
	pthread_cond_destroy(&w->room);
	pthread_cond_destroy(&w->done);
	pthread_mutex_destroy(&w->mu);
	free(w->ring);
	free(w->batch_entries);
	free(w->batch_keys);
	free(w);
	return rc;
}

MON_API int mon_metrics_writer_add(mon_metrics_writer *w, const Monitoring__V1__MetricPoint *point, mon_status *status)
{
	int rc = MON_OK;
	uint8_t *data = NULL;

	if (w == NULL || point == NULL) {
		status_set(status, ST_INVALID_ARGUMENT, "mon_metrics_writer_add: NULL writer or point");
		return MON_EINVAL;
	}
	uint64_t hash = key_hash(point);
	size_t plen = protobuf_c_message_get_packed_size(&point->base);
	size_t len = 1 + varint_len(plen) + plen;
	if (len > w->opts.max_batch_bytes) {
		status_set(status, ST_INVALID_ARGUMENT, "point: %zu bytes serialised, more than max_batch_bytes (%zu)",
		           plen, w->opts.max_batch_bytes);
		return MON_EINVAL;
	}
	data = malloc(len);
	if (data == NULL) {
		status_set(status, ST_RESOURCE_EXHAUSTED, "out of memory");
		return MON_ENOMEM;
	}
	size_t off = 0;
	data[off++] = POINT_TAG;
	off += varint_put(data + off, plen);
	protobuf_c_message_pack(&point->base, data + off);

	int64_t give_up_ms = w->opts.add_timeout_ms > 0 ? mon_now_ms() + w->opts.add_timeout_ms : 0;
	size_t cap = w->opts.max_buffered_points;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		if (w->is_closing) {
			status_set(status, ST_FAILED_PRECONDITION, "metrics writer is closing");
			rc = MON_EPRECOND;
			goto out;
		}
		if (w->queued_n + w->in_flight_n < cap)
			break;
		if (w->opts.add_timeout_ms < 0 ||
		    (w->opts.add_timeout_ms > 0 && cond_wait_until(&w->room, &w->mu, give_up_ms) == ETIMEDOUT &&
		     w->queued_n + w->in_flight_n >= cap)) {
			status_set(status, ST_RESOURCE_EXHAUSTED,
			           "metrics writer buffer full: %zu points buffered (max_buffered_points)", cap);
			rc = MON_ELIMIT;
			goto out;
		}
		if (w->opts.add_timeout_ms == 0)
			pthread_cond_wait(&w->room, &w->mu);
	}
	struct entry *e = &w->ring[(w->head + w->queued_n) % cap];
	e->data = data;
	e->len = len;
	e->added_ms = mon_now_ms();
	e->key_hash = hash;
	data = NULL;
	w->queued_n++;
	w->queued_bytes += len;
	w->added_n++;
	w->stats.points_added++;
	/* The thread sleeps until the first point's delay: wake it for the first point and a full batch. */
	if (w->queued_n == 1 || w->queued_n == (size_t)w->opts.max_batch_points ||
	    w->queued_bytes >= w->opts.max_batch_bytes)
		pthread_cond_signal(&w->wake);
	status_set(status, ST_OK, "%s", "");
out:
	pthread_mutex_unlock(&w->mu);
	free(data);
	return rc;
}

/*
 * Waits, with the lock held, until the points numbered below target are
 * resolved, for at most timeout_ms (< 0: no limit). Returns false on timeout.
 */
static bool wait_resolved(mon_metrics_writer *w, uint64_t target, int64_t timeout_ms)
{
	int64_t until_ms = mon_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	if (w->flush_upto < target)
		w->flush_upto = target;
	pthread_cond_signal(&w->wake);
	while (w->done_n < target) {
		if (timeout_ms < 0)
			pthread_cond_wait(&w->done, &w->mu);
		else if (cond_wait_until(&w->done, &w->mu, until_ms) == ETIMEDOUT && w->done_n < target)
			return false;
	}
	return true;
}

MON_API int mon_metrics_writer_flush(mon_metrics_writer *w, int64_t timeout_ms, mon_status *status)
{
	int rc = MON_OK;
	if (w == NULL) {
		status_set(status, ST_INVALID_ARGUMENT, "mon_metrics_writer_flush: NULL writer");
		return MON_EINVAL;
	}
	pthread_mutex_lock(&w->mu);
	uint64_t from = w->done_n, target = w->added_n;
	if (!wait_resolved(w, target, timeout_ms)) {
		status_set(status, ST_DEADLINE_EXCEEDED,
		           "flush: %" PRIu64 " of %" PRIu64 " points still buffered after %" PRId64 " ms",
		           target - w->done_n, target - from, timeout_ms);
		rc = MON_EDEADLINE;
	} else if (w->failed_end > from) {
		status_set(status, w->fail_code, "flush: some points were not recorded (last: %s: %s)",
		           mon_status_code_name(w->fail_code), w->fail_message);
		rc = MON_EINVAL;
	} else {
		status_set(status, ST_OK, "%s", "");
	}
	pthread_mutex_unlock(&w->mu);
	return rc;
}

MON_API void mon_metrics_writer_stats_get(mon_metrics_writer *w, mon_metrics_writer_stats *out)
{
	if (out == NULL)
		return;
	memset(out, 0, sizeof(*out));
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	*out = w->stats;
	out->points_buffered = w->queued_n + w->in_flight_n;
	pthread_mutex_unlock(&w->mu);
}

MON_API int mon_metrics_writer_close(mon_metrics_writer *w, int64_t timeout_ms, mon_status *status)
{
	int rc = MON_OK;
	if (w == NULL) {
		status_set(status, ST_OK, "%s", "");
		return MON_OK;
	}
	pthread_mutex_lock(&w->mu);
	w->is_closing = true;
	pthread_cond_broadcast(&w->room); /* adders waiting for room give up */
	if (!wait_resolved(w, w->added_n, timeout_ms)) {
		w->is_aborting = true;
		pthread_cond_broadcast(&w->wake);
	}
	pthread_mutex_unlock(&w->mu);
	if (w->has_thread)
		pthread_join(w->thread, NULL);

	if (w->stats.points_failed > 0) {
		status_set(status, w->fail_code, "%" PRIu64 " of %" PRIu64 " points were not recorded (last: %s: %s)",
		           w->stats.points_failed, w->stats.points_added, mon_status_code_name(w->fail_code),
		           w->fail_message);
		rc = w->fail_code == ST_CANCELLED ? MON_ECANCELLED : MON_EINVAL;
	} else {
		status_set(status, ST_OK, "%s", "");
	}
	for (size_t i = 0; i < w->queued_n; i++)
		free(w->ring[(w->head + i) % w->opts.max_buffered_points].data);
	free(w->ring);
	free(w->batch_entries);
	free(w->batch_keys);
	pthread_cond_destroy(&w->wake);
	pthread_cond_destroy(&w->room);
	pthread_cond_destroy(&w->done);
	pthread_mutex_destroy(&w->mu);
	free(w);
	return rc;
}
