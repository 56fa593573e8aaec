/*
 * WatchMetrics: the live metrics stream as a batching kind of resumable
 * event stream (stream/stream.h). The stream module reads the ingest log
 * (tb_metric_ingest_log, numbered in commit order, see
 * sql/0009_metrics.sql), hands a new stream its backlog and then the live
 * commits with no gap and no repeat, and runs the timers; this file keeps
 * each subscriber's state: its filters and its batcher.
 *
 * A log row is one committed batch (a monitoring.v1.MetricBatch of the
 * points as stored), decoded once per read and shared by every
 * subscriber. A subscriber keeps the matching points it has not sent yet
 * (or, when downsampling, one aggregate per series and interval) in
 * memory of its own, capped at WATCH_PENDING_BATCHES times
 * max_batch_points points (at least WATCH_PENDING_MIN) and
 * WATCH_PENDING_BYTES bytes, on top of the stream's bounded queue. When
 * the stream's queue is full the points wait there; a point that does not
 * fit under the cap is counted instead of kept: a gap opens, and from then
 * on every matching raw point goes into it (aggregates already open still
 * take theirs) until the pending points and then the MetricGap
 * (FELL_BEHIND, count and time range) have been sent. A live stream that
 * is slow is never ended. During its backlog a stream whose queue is full
 * waits for room (the stream module parks it until its writes complete),
 * so a replay loses nothing to a slow reader.
 *
 * Every message carries a resume cursor: the highest sequence such that
 * every matching point of the commits up to it was sent or announced by a
 * gap. A commit split over several batches is thus covered only by its
 * last one (earlier ones carry the cursor before it, so consecutive
 * batches may share a sequence), and resuming never loses a point (it may
 * repeat some). Commits gone from the log before they were read (pruned,
 * or lost with the UNLOGGED log in a crash of PostgreSQL) are announced as
 * a gap of unknown size, never skipped.
 *
 * At server shutdown every subscriber gets its pending points (as far as
 * the queue takes them), RESUME_REQUIRED (SERVER_SHUTDOWN) with the cursor
 * of what was queued, then UNAVAILABLE. Open downsampling intervals are
 * not sent half full: the cursor stays before them and a resumed stream
 * rebuilds them.
 */
#include "metrics/watch.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "common/parse.h"
#include "metrics/ingest.h"
#include "monitoring/v1/common.pb-c.h"
#include "stream/stream.h"
#include "util/arena.h"
#include "util/clock.h"
#include "util/log.h"

#define WATCH_BATCH_DEFAULT 500        /* max_batch_points when 0 */
#define WATCH_BATCH_MAX 10000          /* max_batch_points allowed */
#define WATCH_DELAY_DEFAULT_MS 1000    /* max_batch_delay when absent */
#define WATCH_DELAY_MAX_MS 60000       /* max_batch_delay allowed */
#define WATCH_PENDING_BATCHES 10       /* pending points per subscriber: this many batches... */
#define WATCH_PENDING_MIN 1000         /* ...but at least this many */
#define WATCH_PENDING_BYTES (8u << 20) /* and at most this much memory */
#define WATCH_MESSAGE_BYTES (4u << 20) /* a batch is cut short rather than exceed this */
#define WATCH_FILTER_MAX 1000          /* entries per filter list */
#define WATCH_SUBS_MAX 10000           /* subscribers per process */
#define WATCH_HEARTBEAT_DEFAULT_S 30
#define WATCH_HEARTBEAT_MIN_S 1
#define WATCH_DOWNSAMPLE_MIN_MS 1000
#define WATCH_DOWNSAMPLE_MAX_MS 3600000
#define WATCH_READ_ROWS "256"      /* log rows per read... */
#define WATCH_READ_BYTES "8388608" /* ...and payload bytes (at least one row) */
#define WATCH_READ_ARENA_BYTES (256u << 20)

typedef Monitoring__V1__WatchMetricsResponse watch_msg;
typedef Monitoring__V1__MetricPoint metric_point;

/* Values of a point that downsampling aggregates. */
enum { ST_P50, ST_P95, ST_P99, ST_MEAN, ST_MIN, ST_MAX, ST_ERROR_RATE, ST_THROUGHPUT, ST_REQUESTS, ST_ERRORS, ST_N };
#define ST_DOUBLES 8 /* the first ST_DOUBLES are DoubleValue fields */

struct stat_acc {
	int64_t n;
	double sum, min, max, last;
	int64_t last_us; /* time of the point last came from */
};

/* One open aggregate: a series (every label of a point) in one interval. */
struct agg {
	struct agg *next; /* hash chain */
	uint64_t hash;
	int64_t bucket_us;    /* interval start */
	int64_t first_seq;    /* lowest commit that contributed */
	int64_t emit_wall_ms; /* sent once the wall clock passes this */
	int64_t points_n;
	int64_t min_us, max_us;
	size_t bytes;
	const char *metric_name, *endpoint, *method;
	bool has_status;
	int32_t status_code;
	int metric_type;
	int64_t type_us;
	size_t tags_n;
	const char **tag_keys, **tag_values;
	struct stat_acc st[ST_N];
};

struct watch_sub {
	struct rpc_stream *stream; /* set when the stream module starts it */

	/* The request, validated; owned (strings in filter_arena). */
	struct arena *filter_arena;
	char **names, **endpoints, **methods; /* names and endpoints sorted */
	size_t names_n, endpoints_n, methods_n;
	int32_t *statuses;
	size_t statuses_n;
	const char **tag_keys, **tag_values;
	size_t tags_n;
	size_t max_points;
	size_t cap_points;
	int64_t delay_ms;
	int64_t heartbeat_ms;
	int64_t downsample_ms; /* 0: raw points */
	int aggregation;

	/* The batcher: its stream module owner's (the catch-up thread, then the hub's senders). */
	int64_t processed_seq; /* last commit offered */
	int64_t sent_cursor;   /* sequence of the last message sent */
	int64_t last_send_ms;
	bool is_blocked; /* the last send found the queue full */
	struct arena *pend_arena;
	metric_point **pend; /* points to send, [pend_head, pend_n) */
	int64_t *pend_seq;   /* the lowest commit behind each */
	size_t pend_head, pend_n, pend_alloc;
	int64_t pend_since_ms; /* when the oldest pending point arrived */
	bool has_gap;          /* points are being skipped; the gap is not sent yet */
	int64_t gap_count;     /* -1: unknown */
	int64_t gap_first_seq;
	int64_t gap_min_us, gap_max_us;
	bool is_gap_lost;  /* the gap covers commits gone from the log: no start time, reason UNSPECIFIED */
	struct agg **aggs; /* hash table of open aggregates */
	size_t aggs_size, aggs_n, aggs_bytes;
	int64_t aggs_min_seq; /* lowest first_seq among them */
	int64_t next_emit_wall_ms;
};

/* The log rows of one read, decoded in one arena. */
struct log_row {
	int64_t seq;
	int64_t min_us, max_us;
	Monitoring__V1__MetricBatch *batch; /* NULL when the payload could not be decoded */
};

/*
 * Rows after $1, at most WATCH_READ_ROWS and about WATCH_READ_BYTES of
 * payload (always at least one), each with the oldest retained sequence,
 * in one snapshot; no rows after $1: one row of NULLs but the last column.
 */
static const struct db_stmt rows_stmt = {
        .name = "metrics_watch_rows",
        .sql = "SELECT r.seq, (extract(epoch FROM r.min_time) * 1000000)::bigint,"
               " (extract(epoch FROM r.max_time) * 1000000)::bigint, encode(r.payload, 'hex'), coalesce(m.lo, 0)"
               " FROM (SELECT min(seq) AS lo FROM tb_metric_ingest_log) m LEFT JOIN"
               " (SELECT l.*, sum(octet_length(payload)) OVER (ORDER BY seq) - octet_length(payload) AS before"
               " FROM (SELECT seq, min_time, max_time, payload FROM tb_metric_ingest_log WHERE seq > $1::bigint"
               " ORDER BY seq LIMIT " WATCH_READ_ROWS ") l) r"
               " ON r.before < " WATCH_READ_BYTES " ORDER BY r.seq",
        .param_count = 1,
};

/*
 * The current sequence, taken after every commit in flight has ended (the
 * shared lock waits for mon_metrics_commit's exclusive one), and the oldest
 * retained row.
 */
static const struct db_stmt lock_stmt = {
        .name = "metrics_watch_lock",
        .sql = "SELECT pg_advisory_xact_lock_shared($1::bigint)",
        .param_count = 1,
};
static const struct db_stmt bounds_stmt = {
        .name = "metrics_watch_bounds",
        .sql = "SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END, coalesce(l.lo, 0),"
               " coalesce((extract(epoch FROM l.oldest) * 1000000)::bigint, 0)"
               " FROM seq_metric_ingest s,"
               " (SELECT min(seq) AS lo, min(committed_at) AS oldest FROM tb_metric_ingest_log) l",
        .param_count = 0,
};

/* ---- small helpers ---- */

static int64_t wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int64_t point_us(const metric_point *p)
{
	if (p->time == NULL)
		return 0;
	return p->time->seconds * 1000000 + p->time->nanos / 1000;
}

static Google__Protobuf__Timestamp *timestamp_from_us(struct arena *a, int64_t us)
{
	Google__Protobuf__Timestamp *t = arena_alloc(a, sizeof(*t));
	if (t == NULL)
		return NULL;
	google__protobuf__timestamp__init(t);
	t->seconds = floor_div(us, 1000000);
	t->nanos = (int32_t)((us - t->seconds * 1000000) * 1000);
	return t;
}

/* A Duration as milliseconds; false when it is not a valid Duration. */
static bool duration_ms(const Google__Protobuf__Duration *d, int64_t *out)
{
	if (d->nanos <= -1000000000 || d->nanos >= 1000000000 || (d->seconds > 0 && d->nanos < 0) ||
	    (d->seconds < 0 && d->nanos > 0) || d->seconds > 315576000000 || d->seconds < -315576000000)
		return false;
	*out = d->seconds * 1000 + d->nanos / 1000000;
	return true;
}

/* ---- filters ---- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool in_sorted(char **list, size_t n, const char *s)
{
	return bsearch(&s, list, n, sizeof(*list), cmp_str) != NULL;
}

static const char *point_tag(const metric_point *p, const char *key)
{
	for (size_t i = 0; i < p->n_tags; i++)
		if (p->tags[i]->key && strcmp(p->tags[i]->key, key) == 0)
			return p->tags[i]->value ? p->tags[i]->value : "";
	return NULL;
}

static bool point_matches(const struct watch_sub *sub, const metric_point *p)
{
	if (sub->names_n > 0 && !in_sorted(sub->names, sub->names_n, p->metric_name ? p->metric_name : ""))
		return false;
	if (sub->endpoints_n > 0 && !in_sorted(sub->endpoints, sub->endpoints_n, p->endpoint ? p->endpoint : ""))
		return false;
	if (sub->methods_n > 0) {
		bool is_found = false;
		for (size_t i = 0; i < sub->methods_n && !is_found; i++)
			is_found = strcmp(sub->methods[i], p->method ? p->method : "") == 0;
		if (!is_found)
			return false;
	}
	if (sub->statuses_n > 0) {
		bool is_found = false;
		for (size_t i = 0; i < sub->statuses_n && !is_found; i++)
			is_found = p->status_code != NULL && p->status_code->value == sub->statuses[i];
		if (!is_found)
			return false;
	}
	for (size_t i = 0; i < sub->tags_n; i++) {
		const char *v = point_tag(p, sub->tag_keys[i]);
		if (v == NULL || strcmp(v, sub->tag_values[i]) != 0)
			return false;
	}
	return true;
}

/* ---- pending points ---- */

static Google__Protobuf__DoubleValue *copy_double(struct arena *a, const Google__Protobuf__DoubleValue *v, bool *is_ok)
{
	if (v == NULL)
		return NULL;
	Google__Protobuf__DoubleValue *d = arena_alloc(a, sizeof(*d));
	if (d == NULL) {
		*is_ok = false;
		return NULL;
	}
	google__protobuf__double_value__init(d);
	d->value = v->value;
	return d;
}

static char *copy_str(struct arena *a, const char *s, bool *is_ok)
{
	char *d = arena_strdup(a, s ? s : "");
	if (d == NULL)
		*is_ok = false;
	return d;
}

/* A deep copy of p in a; NULL past the arena's cap. */
static metric_point *point_copy(struct arena *a, const metric_point *p)
{
	metric_point *d = arena_alloc(a, sizeof(*d));
	if (d == NULL)
		return NULL;
	monitoring__v1__metric_point__init(d);
	bool is_ok = true;
	if (p->time != NULL) {
		d->time = timestamp_from_us(a, 0);
		if (d->time == NULL)
			return NULL;
		d->time->seconds = p->time->seconds;
		d->time->nanos = p->time->nanos;
	}
	d->metric_name = copy_str(a, p->metric_name, &is_ok);
	d->endpoint = copy_str(a, p->endpoint, &is_ok);
	d->method = copy_str(a, p->method, &is_ok);
	if (p->status_code != NULL) {
		d->status_code = arena_alloc(a, sizeof(*d->status_code));
		if (d->status_code == NULL)
			return NULL;
		google__protobuf__int32_value__init(d->status_code);
		d->status_code->value = p->status_code->value;
	}
	d->p50 = copy_double(a, p->p50, &is_ok);
	d->p95 = copy_double(a, p->p95, &is_ok);
	d->p99 = copy_double(a, p->p99, &is_ok);
	d->mean = copy_double(a, p->mean, &is_ok);
	d->min = copy_double(a, p->min, &is_ok);
	d->max = copy_double(a, p->max, &is_ok);
	d->error_rate = copy_double(a, p->error_rate, &is_ok);
	d->throughput = copy_double(a, p->throughput, &is_ok);
	d->request_count = p->request_count;
	d->error_count = p->error_count;
	d->metric_type = p->metric_type;
	if (p->n_tags > 0) {
		d->tags = arena_calloc(a, p->n_tags, sizeof(*d->tags));
		if (d->tags == NULL)
			return NULL;
		for (size_t i = 0; i < p->n_tags; i++) {
			Monitoring__V1__MetricPoint__TagsEntry *e = arena_alloc(a, sizeof(*e));
			if (e == NULL)
				return NULL;
			monitoring__v1__metric_point__tags_entry__init(e);
			e->key = copy_str(a, p->tags[i]->key, &is_ok);
			e->value = copy_str(a, p->tags[i]->value, &is_ok);
			d->tags[i] = e;
		}
		d->n_tags = p->n_tags;
	}
	return is_ok ? d : NULL;
}

static size_t pend_live(const struct watch_sub *sub)
{
	return sub->pend_n - sub->pend_head;
}

/* Points held: pending ones and open aggregates; what the cap counts. */
static size_t held_points(const struct watch_sub *sub)
{
	return pend_live(sub) + sub->aggs_n;
}

/* Moves the unsent points into a fresh arena, so sent ones stop counting against the byte cap. */
static void pend_compact(struct watch_sub *sub)
{
	size_t live = pend_live(sub);
	if (live == 0) {
		arena_destroy(sub->pend_arena);
		sub->pend_arena = NULL;
		sub->pend_head = sub->pend_n = 0;
		return;
	}
	if (sub->pend_head == 0)
		return;
	struct arena *a = arena_create(WATCH_PENDING_BYTES);
	if (a == NULL)
		return;
	for (size_t i = 0; i < live; i++) {
		metric_point *p = point_copy(a, sub->pend[sub->pend_head + i]);
		if (p == NULL) { /* cannot happen: the live points fitted before */
			arena_destroy(a);
			return;
		}
		sub->pend[i] = p;
		sub->pend_seq[i] = sub->pend_seq[sub->pend_head + i];
	}
	arena_destroy(sub->pend_arena);
	sub->pend_arena = a;
	sub->pend_head = 0;
	sub->pend_n = live;
}

/* Appends p (already in sub->pend_arena) to the pending list; false when the list cannot grow. */
static bool pend_push(struct watch_sub *sub, metric_point *p, int64_t seq, int64_t now)
{
	if (sub->pend_n == sub->pend_alloc) {
		if (sub->pend_head > 0) {
			memmove(sub->pend, sub->pend + sub->pend_head, pend_live(sub) * sizeof(*sub->pend));
			memmove(sub->pend_seq, sub->pend_seq + sub->pend_head, pend_live(sub) * sizeof(*sub->pend_seq));
			sub->pend_n -= sub->pend_head;
			sub->pend_head = 0;
		} else {
			size_t cap = sub->pend_alloc ? sub->pend_alloc * 2 : 256;
			metric_point **np = realloc(sub->pend, cap * sizeof(*np));
			if (np == NULL)
				return false;
			sub->pend = np;
			int64_t *ns = realloc(sub->pend_seq, cap * sizeof(*ns));
			if (ns == NULL)
				return false;
			sub->pend_seq = ns;
			sub->pend_alloc = cap;
		}
	}
	if (pend_live(sub) == 0)
		sub->pend_since_ms = now;
	sub->pend[sub->pend_n] = p;
	sub->pend_seq[sub->pend_n] = seq;
	sub->pend_n++;
	return true;
}

/* Keeps a copy of p to send; false when the subscriber's caps do not allow it. */
static bool pend_add(struct watch_sub *sub, const metric_point *p, int64_t seq, int64_t now)
{
	if (held_points(sub) >= sub->cap_points)
		return false;
	for (int attempt = 0; attempt < 2; attempt++) {
		if (sub->pend_arena == NULL && (sub->pend_arena = arena_create(WATCH_PENDING_BYTES)) == NULL)
			return false;
		if (arena_used(sub->pend_arena) + sub->aggs_bytes < WATCH_PENDING_BYTES) {
			metric_point *c = point_copy(sub->pend_arena, p);
			if (c != NULL)
				return pend_push(sub, c, seq, now);
		}
		if (sub->pend_head == 0)
			return false;
		pend_compact(sub);
	}
	return false;
}

/* Counts skipped points into the open gap (count -1: unknown). */
static void gap_add(struct watch_sub *sub, int64_t count, int64_t seq, int64_t min_us, int64_t max_us)
{
	if (!sub->has_gap) {
		sub->has_gap = true;
		sub->gap_count = 0;
		sub->gap_first_seq = seq;
		sub->gap_min_us = min_us;
		sub->gap_max_us = max_us;
		sub->is_gap_lost = false;
	}
	if (count < 0 || sub->gap_count < 0)
		sub->gap_count = -1;
	else
		sub->gap_count += count;
	if (min_us < sub->gap_min_us)
		sub->gap_min_us = min_us;
	if (max_us > sub->gap_max_us)
		sub->gap_max_us = max_us;
}

/*
 * The commits after sub->processed_seq up to through_seq are gone from the
 * log (pruned, or lost with it in a crash of PostgreSQL) before sub read
 * them: nobody knows how many matching points they held, nor their times.
 */
static void gap_lost(struct watch_sub *sub, int64_t through_seq, int64_t end_us)
{
	if (through_seq <= sub->processed_seq)
		return;
	gap_add(sub, -1, sub->processed_seq + 1, end_us - 1, end_us - 1);
	sub->is_gap_lost = true;
	sub->processed_seq = through_seq;
}

/* ---- downsampling ---- */

static uint64_t fnv(uint64_t h, const char *s)
{
	for (const unsigned char *c = (const unsigned char *)(s ? s : ""); *c; c++)
		h = (h ^ *c) * 1099511628211u;
	return (h ^ 0xff) * 1099511628211u;
}

/* The series of a point (every label; tags as a set) in the interval starting at bucket_us. */
static uint64_t series_hash(const metric_point *p, int64_t bucket_us)
{
	uint64_t h = 1469598103934665603u;
	h = fnv(h, p->metric_name);
	h = fnv(h, p->endpoint);
	h = fnv(h, p->method);
	h = (h ^ (p->status_code ? (uint64_t)(uint32_t)p->status_code->value + 1 : 0)) * 1099511628211u;
	uint64_t tags = 0;
	for (size_t i = 0; i < p->n_tags; i++)
		tags += fnv(fnv(1469598103934665603u, p->tags[i]->key), p->tags[i]->value);
	h = (h ^ tags) * 1099511628211u;
	return (h ^ (uint64_t)bucket_us) * 1099511628211u;
}

static bool streq(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

static bool agg_is_series(const struct agg *g, const metric_point *p, int64_t bucket_us)
{
	if (g->bucket_us != bucket_us || !streq(g->metric_name, p->metric_name) || !streq(g->endpoint, p->endpoint) ||
	    !streq(g->method, p->method) || g->has_status != (p->status_code != NULL) ||
	    (g->has_status && g->status_code != p->status_code->value) || g->tags_n != p->n_tags)
		return false;
	for (size_t i = 0; i < g->tags_n; i++) {
		const char *v = point_tag(p, g->tag_keys[i]);
		if (v == NULL || !streq(v, g->tag_values[i]))
			return false;
	}
	return true;
}

/* A new aggregate for p's series, labels copied into one allocation; NULL when out of memory. */
static struct agg *agg_new(const metric_point *p)
{
	size_t n_name = strlen(p->metric_name ? p->metric_name : "") + 1;
	size_t n_ep = strlen(p->endpoint ? p->endpoint : "") + 1;
	size_t n_m = strlen(p->method ? p->method : "") + 1;
	size_t bytes = sizeof(struct agg) + 2 * p->n_tags * sizeof(char *) + n_name + n_ep + n_m;
	for (size_t i = 0; i < p->n_tags; i++)
		bytes += strlen(p->tags[i]->key ? p->tags[i]->key : "") +
		         strlen(p->tags[i]->value ? p->tags[i]->value : "") + 2;
	struct agg *g = calloc(1, bytes);
	if (g == NULL)
		return NULL;
	g->bytes = bytes;
	char *at = (char *)(g + 1);
	g->tag_keys = (const char **)(void *)at;
	at += p->n_tags * sizeof(char *);
	g->tag_values = (const char **)(void *)at;
	at += p->n_tags * sizeof(char *);
#define AGG_COPY(dst, src)                                                                                             \
	do {                                                                                                           \
		const char *s_ = (src) ? (src) : "";                                                                   \
		size_t n_ = strlen(s_) + 1;                                                                            \
		memcpy(at, s_, n_);                                                                                    \
		(dst) = at;                                                                                            \
		at += n_;                                                                                              \
	} while (0)
	AGG_COPY(g->metric_name, p->metric_name);
	AGG_COPY(g->endpoint, p->endpoint);
	AGG_COPY(g->method, p->method);
	for (size_t i = 0; i < p->n_tags; i++) {
		AGG_COPY(g->tag_keys[i], p->tags[i]->key);
		AGG_COPY(g->tag_values[i], p->tags[i]->value);
	}
#undef AGG_COPY
	g->tags_n = p->n_tags;
	g->has_status = p->status_code != NULL;
	g->status_code = g->has_status ? p->status_code->value : 0;
	g->type_us = INT64_MIN;
	for (int i = 0; i < ST_N; i++)
		g->st[i].last_us = INT64_MIN;
	return g;
}

static const Google__Protobuf__DoubleValue *point_double(const metric_point *p, int i)
{
	switch (i) {
	case ST_P50: return p->p50;
	case ST_P95: return p->p95;
	case ST_P99: return p->p99;
	case ST_MEAN: return p->mean;
	case ST_MIN: return p->min;
	case ST_MAX: return p->max;
	case ST_ERROR_RATE: return p->error_rate;
	case ST_THROUGHPUT: return p->throughput;
	default: return NULL;
	}
}

static void stat_add(struct stat_acc *s, double v, int64_t t_us)
{
	if (s->n == 0 || v < s->min)
		s->min = v;
	if (s->n == 0 || v > s->max)
		s->max = v;
	s->sum += v;
	s->n++;
	if (t_us >= s->last_us) {
		s->last = v;
		s->last_us = t_us;
	}
}

static void agg_fold(struct agg *g, const metric_point *p, int64_t t_us)
{
	for (int i = 0; i < ST_DOUBLES; i++) {
		const Google__Protobuf__DoubleValue *v = point_double(p, i);
		if (v != NULL)
			stat_add(&g->st[i], v->value, t_us);
	}
	stat_add(&g->st[ST_REQUESTS], p->request_count, t_us);
	stat_add(&g->st[ST_ERRORS], p->error_count, t_us);
	if (t_us >= g->type_us) {
		g->metric_type = p->metric_type;
		g->type_us = t_us;
	}
	if (g->points_n == 0 || t_us < g->min_us)
		g->min_us = t_us;
	if (g->points_n == 0 || t_us > g->max_us)
		g->max_us = t_us;
	g->points_n++;
}

/* Folds p into its series' aggregate, opening one; false when the caps do not allow a new one. */
static bool agg_add(struct watch_sub *sub, const metric_point *p, int64_t seq, int64_t wall_ms)
{
	int64_t t_us = point_us(p);
	int64_t iv_us = sub->downsample_ms * 1000;
	int64_t bucket_us = floor_div(t_us, iv_us) * iv_us;
	uint64_t h = series_hash(p, bucket_us);
	if (sub->aggs_size > 0) {
		for (struct agg *g = sub->aggs[h & (sub->aggs_size - 1)]; g; g = g->next) {
			if (g->hash == h && agg_is_series(g, p, bucket_us)) {
				agg_fold(g, p, t_us);
				return true;
			}
		}
	}
	if (held_points(sub) >= sub->cap_points)
		return false;
	if (sub->aggs_n >= sub->aggs_size / 2) {
		size_t size = sub->aggs_size ? sub->aggs_size * 2 : 64;
		struct agg **t = calloc(size, sizeof(*t));
		if (t == NULL)
			return false;
		for (size_t i = 0; i < sub->aggs_size; i++) {
			for (struct agg *g = sub->aggs[i], *nx; g; g = nx) {
				nx = g->next;
				g->next = t[g->hash & (size - 1)];
				t[g->hash & (size - 1)] = g;
			}
		}
		free(sub->aggs);
		sub->aggs = t;
		sub->aggs_size = size;
	}
	struct agg *g = agg_new(p);
	if (g == NULL)
		return false;
	size_t used = sub->pend_arena ? arena_used(sub->pend_arena) : 0;
	if (used + sub->aggs_bytes + g->bytes > WATCH_PENDING_BYTES) {
		free(g);
		return false;
	}
	g->hash = h;
	g->bucket_us = bucket_us;
	g->first_seq = seq;
	/* Sent when the interval is over plus max_batch_delay for late points; a late interval waits as long. */
	int64_t end_ms = floor_div(bucket_us + iv_us, 1000);
	g->emit_wall_ms = (end_ms > wall_ms ? end_ms : wall_ms) + sub->delay_ms;
	agg_fold(g, p, t_us);
	g->next = sub->aggs[h & (sub->aggs_size - 1)];
	sub->aggs[h & (sub->aggs_size - 1)] = g;
	if (sub->aggs_n == 0 || seq < sub->aggs_min_seq)
		sub->aggs_min_seq = seq;
	if (sub->aggs_n == 0 || g->emit_wall_ms < sub->next_emit_wall_ms)
		sub->next_emit_wall_ms = g->emit_wall_ms;
	sub->aggs_n++;
	sub->aggs_bytes += g->bytes;
	return true;
}

static double stat_value(const struct stat_acc *s, int aggregation, bool is_count)
{
	switch (aggregation) {
	case MONITORING__V1__AGGREGATION__AGGREGATION_SUM: return s->sum;
	case MONITORING__V1__AGGREGATION__AGGREGATION_MIN: return s->min;
	case MONITORING__V1__AGGREGATION__AGGREGATION_MAX: return s->max;
	case MONITORING__V1__AGGREGATION__AGGREGATION_COUNT: return (double)s->n;
	case MONITORING__V1__AGGREGATION__AGGREGATION_LAST: return s->last;
	case MONITORING__V1__AGGREGATION__AGGREGATION_AVG: return s->sum / (double)s->n;
	default: return is_count ? s->sum : s->sum / (double)s->n; /* the natural aggregation */
	}
}

static int32_t clamp_i32(double v)
{
	if (!(v > -2147483648.0))
		return v != v ? 0 : INT32_MIN;
	if (v > 2147483647.0)
		return INT32_MAX;
	return (int32_t)(v < 0 ? v - 0.5 : v + 0.5); /* rounded half away from zero */
}

/* The aggregate as a downsampled point in a; NULL past the arena's cap. */
static metric_point *agg_point(struct arena *a, const struct agg *g, int aggregation)
{
	metric_point *d = arena_alloc(a, sizeof(*d));
	if (d == NULL)
		return NULL;
	monitoring__v1__metric_point__init(d);
	bool is_ok = true;
	d->time = timestamp_from_us(a, g->bucket_us);
	d->metric_name = copy_str(a, g->metric_name, &is_ok);
	d->endpoint = copy_str(a, g->endpoint, &is_ok);
	d->method = copy_str(a, g->method, &is_ok);
	if (d->time == NULL || !is_ok)
		return NULL;
	if (g->has_status) {
		d->status_code = arena_alloc(a, sizeof(*d->status_code));
		if (d->status_code == NULL)
			return NULL;
		google__protobuf__int32_value__init(d->status_code);
		d->status_code->value = g->status_code;
	}
	Google__Protobuf__DoubleValue **fields[ST_DOUBLES] = {&d->p50, &d->p95, &d->p99,        &d->mean,
	                                                      &d->min, &d->max, &d->error_rate, &d->throughput};
	for (int i = 0; i < ST_DOUBLES; i++) {
		if (g->st[i].n == 0)
			continue;
		Google__Protobuf__DoubleValue *v = arena_alloc(a, sizeof(*v));
		if (v == NULL)
			return NULL;
		google__protobuf__double_value__init(v);
		v->value = stat_value(&g->st[i], aggregation, false);
		if (i == ST_ERROR_RATE && aggregation == MONITORING__V1__AGGREGATION__AGGREGATION_UNSPECIFIED &&
		    g->st[ST_REQUESTS].sum > 0)
			v->value = g->st[ST_ERRORS].sum / g->st[ST_REQUESTS].sum * 100.0;
		*fields[i] = v;
	}
	d->request_count = clamp_i32(stat_value(&g->st[ST_REQUESTS], aggregation, true));
	d->error_count = clamp_i32(stat_value(&g->st[ST_ERRORS], aggregation, true));
	d->metric_type = g->metric_type;
	if (g->tags_n > 0) {
		d->tags = arena_calloc(a, g->tags_n, sizeof(*d->tags));
		if (d->tags == NULL)
			return NULL;
		for (size_t i = 0; i < g->tags_n; i++) {
			Monitoring__V1__MetricPoint__TagsEntry *e = arena_alloc(a, sizeof(*e));
			if (e == NULL)
				return NULL;
			monitoring__v1__metric_point__tags_entry__init(e);
			e->key = copy_str(a, g->tag_keys[i], &is_ok);
			e->value = copy_str(a, g->tag_values[i], &is_ok);
			d->tags[i] = e;
		}
		d->n_tags = g->tags_n;
	}
	return is_ok ? d : NULL;
}

static int cmp_agg(const void *a, const void *b)
{
	const struct agg *x = *(struct agg *const *)a, *y = *(struct agg *const *)b;
	if (x->bucket_us != y->bucket_us)
		return x->bucket_us < y->bucket_us ? -1 : 1;
	if (x->first_seq != y->first_seq)
		return x->first_seq < y->first_seq ? -1 : 1;
	return 0;
}

/*
 * Moves the aggregates whose interval is over into the pending points, in
 * interval order. One that cannot be kept is counted into the gap.
 */
static void aggs_close_due(struct watch_sub *sub, int64_t wall_ms, int64_t now)
{
	if (sub->aggs_n == 0 || wall_ms < sub->next_emit_wall_ms)
		return;
	struct agg **due = malloc(sub->aggs_n * sizeof(*due));
	if (due == NULL)
		return;
	size_t n = 0;
	int64_t min_seq = INT64_MAX, next_emit = INT64_MAX;
	for (size_t i = 0; i < sub->aggs_size; i++) {
		struct agg **link = &sub->aggs[i];
		while (*link) {
			struct agg *g = *link;
			if (g->emit_wall_ms <= wall_ms) {
				*link = g->next;
				due[n++] = g;
				continue;
			}
			if (g->first_seq < min_seq)
				min_seq = g->first_seq;
			if (g->emit_wall_ms < next_emit)
				next_emit = g->emit_wall_ms;
			link = &g->next;
		}
	}
	qsort(due, n, sizeof(*due), cmp_agg);
	for (size_t i = 0; i < n; i++) {
		struct agg *g = due[i];
		sub->aggs_n--;
		sub->aggs_bytes -= g->bytes;
		metric_point *p = NULL;
		for (int attempt = 0; attempt < 2 && p == NULL; attempt++) {
			if (sub->pend_arena == NULL && (sub->pend_arena = arena_create(WATCH_PENDING_BYTES)) == NULL)
				break;
			p = agg_point(sub->pend_arena, g, sub->aggregation);
			if (p == NULL && sub->pend_head > 0)
				pend_compact(sub);
		}
		if (p == NULL || !pend_push(sub, p, g->first_seq, now))
			gap_add(sub, g->points_n, g->first_seq, g->min_us, g->max_us);
		free(g);
	}
	free(due);
	sub->aggs_min_seq = min_seq;
	sub->next_emit_wall_ms = next_emit;
}

static void aggs_free(struct watch_sub *sub)
{
	for (size_t i = 0; i < sub->aggs_size; i++) {
		for (struct agg *g = sub->aggs[i], *nx; g; g = nx) {
			nx = g->next;
			free(g);
		}
	}
	free(sub->aggs);
	sub->aggs = NULL;
	sub->aggs_size = sub->aggs_n = sub->aggs_bytes = 0;
}

/* ---- sending ---- */

/*
 * The resume cursor once the points before pend[from] are sent: the last
 * commit all of whose matching points are sent, or announced by a gap
 * (unless the gap is still unsent and has_unsent_gap).
 */
static int64_t sub_cursor(const struct watch_sub *sub, size_t from, bool has_unsent_gap)
{
	int64_t c = sub->processed_seq;
	for (size_t i = from; i < sub->pend_n; i++)
		if (sub->pend_seq[i] - 1 < c)
			c = sub->pend_seq[i] - 1;
	if (sub->aggs_n > 0 && sub->aggs_min_seq - 1 < c)
		c = sub->aggs_min_seq - 1;
	if (has_unsent_gap && sub->has_gap && sub->gap_first_seq - 1 < c)
		c = sub->gap_first_seq - 1;
	return c < sub->sent_cursor ? sub->sent_cursor : c;
}

/* How many of the first k pending points fit in one message of WATCH_MESSAGE_BYTES (at least one). */
static size_t batch_fit(const struct watch_sub *sub, size_t k)
{
	size_t bytes = 64; /* the envelope */
	for (size_t i = 0; i < k; i++) {
		bytes += monitoring__v1__metric_point__get_packed_size(sub->pend[sub->pend_head + i]) + 6;
		if (bytes > WATCH_MESSAGE_BYTES)
			return i > 0 ? i : 1;
	}
	return k;
}

static int send_batch(struct watch_sub *sub, size_t from, size_t n, int64_t cursor)
{
	Monitoring__V1__MetricBatch b = MONITORING__V1__METRIC_BATCH__INIT;
	b.points = &sub->pend[from];
	b.n_points = n;
	b.is_downsampled = sub->downsample_ms > 0;
	watch_msg m = MONITORING__V1__WATCH_METRICS_RESPONSE__INIT;
	m.sequence = cursor;
	m.event_case = MONITORING__V1__WATCH_METRICS_RESPONSE__EVENT_BATCH;
	m.batch = &b;
	return rpc_stream_send(sub->stream, &m.base);
}

/* A gap message; count -1 is unknown; min_us > max_us leaves the range's start absent. */
static int send_gap(struct rpc_stream *stream, int64_t cursor, int64_t count, int64_t min_us, int64_t end_us,
                    int reason)
{
	struct arena *a = arena_create(4096);
	if (a == NULL)
		return MON_ENOMEM;
	Monitoring__V1__TimeRange tr = MONITORING__V1__TIME_RANGE__INIT;
	tr.start_time = min_us < end_us ? timestamp_from_us(a, min_us) : NULL;
	tr.end_time = timestamp_from_us(a, end_us);
	Monitoring__V1__MetricGap g = MONITORING__V1__METRIC_GAP__INIT;
	g.skipped_count = count;
	g.time_range = &tr;
	g.reason = reason;
	watch_msg m = MONITORING__V1__WATCH_METRICS_RESPONSE__INIT;
	m.sequence = cursor;
	m.event_case = MONITORING__V1__WATCH_METRICS_RESPONSE__EVENT_GAP;
	m.gap = &g;
	int rc = tr.end_time == NULL ? MON_ENOMEM : rpc_stream_send(stream, &m.base);
	arena_destroy(a);
	return rc;
}

enum flush_mode {
	FLUSH_FULL, /* full batches only (in the middle of a commit) */
	FLUSH_DUE,  /* and the rest once max_batch_delay is up or a gap waits behind it, then the gap */
	FLUSH_ALL,  /* everything now (end of a replay) */
};

/*
 * Sends the pending points as mode says, then the gap, if any. Stops at
 * the first refused send (is_blocked), keeping what was not sent.
 */
static void sub_flush(struct watch_sub *sub, int64_t now, enum flush_mode mode)
{
	int rc = 0;
	sub->is_blocked = false;
	while (pend_live(sub) > 0) {
		size_t live = pend_live(sub);
		bool is_due = mode == FLUSH_ALL || (mode == FLUSH_DUE && (sub->has_gap || sub->delay_ms == 0 ||
		                                                          now - sub->pend_since_ms >= sub->delay_ms));
		if (live < sub->max_points && !is_due)
			break;
		size_t k = batch_fit(sub, live < sub->max_points ? live : sub->max_points);
		int64_t cursor = sub_cursor(sub, sub->pend_head + k, true);
		rc = send_batch(sub, sub->pend_head, k, cursor);
		if (rc != 0)
			break;
		sub->pend_head += k;
		sub->sent_cursor = cursor;
		sub->last_send_ms = now;
	}
	if (pend_live(sub) == 0 || sub->pend_head > pend_live(sub))
		pend_compact(sub);
	if (rc == 0 && mode != FLUSH_FULL && pend_live(sub) == 0 && sub->has_gap) {
		int64_t cursor = sub_cursor(sub, sub->pend_n, false);
		rc = send_gap(sub->stream, cursor, sub->gap_count, sub->is_gap_lost ? INT64_MAX : sub->gap_min_us,
		              sub->gap_max_us + 1,
		              sub->is_gap_lost ? MONITORING__V1__STREAM_END_REASON__STREAM_END_REASON_UNSPECIFIED
		                               : MONITORING__V1__STREAM_END_REASON__STREAM_END_REASON_FELL_BEHIND);
		if (rc == 0) {
			log_info("msg=\"metrics watch subscriber fell behind\" skipped_count=%" PRId64
			         " sequence=%" PRId64 " peer=\"%s\"",
			         sub->gap_count, cursor, rpc_ctx_peer(rpc_stream_ctx(sub->stream)));
			sub->has_gap = false;
			sub->sent_cursor = cursor;
			sub->last_send_ms = now;
		}
	}
	sub->is_blocked = rc == MON_ELIMIT;
}

/* Offers the points of one commit to sub, sending full batches as they fill. */
static void sub_offer(struct watch_sub *sub, const struct log_row *row, int64_t now, int64_t wall_ms)
{
	if (row->seq <= sub->processed_seq)
		return;
	if (row->batch == NULL) {
		gap_add(sub, -1, row->seq, row->min_us, row->max_us);
	} else {
		for (size_t i = 0; i < row->batch->n_points; i++) {
			const metric_point *p = row->batch->points[i];
			if (!point_matches(sub, p))
				continue;
			int64_t t_us = point_us(p);
			bool is_kept = false;
			if (sub->downsample_ms > 0)
				is_kept =
				        agg_add(sub, p, row->seq, wall_ms); /* aggregates stay in order behind a gap */
			else if (!sub->has_gap)
				is_kept = pend_add(sub, p, row->seq, now);
			if (!is_kept)
				gap_add(sub, 1, row->seq, t_us, t_us);
			else if (pend_live(sub) > sub->max_points && !sub->is_blocked)
				sub_flush(sub, now,
				          FLUSH_FULL); /* the commit's last batch waits for its end, to cover it */
		}
	}
	sub->processed_seq = row->seq;
}

/* Timers of one subscriber: intervals that closed, batches that are due, a heartbeat. */
static void sub_tick(struct watch_sub *sub, int64_t now, int64_t wall_ms)
{
	aggs_close_due(sub, wall_ms, now);
	sub_flush(sub, now, FLUSH_DUE);
	if (pend_live(sub) == 0 && !sub->has_gap && now - sub->last_send_ms >= sub->heartbeat_ms) {
		int64_t cursor = sub_cursor(sub, sub->pend_n, false);
		if (stream_send_control(&metrics_watch_kind, sub->stream,
		                        MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_HEARTBEAT, cursor, 0,
		                        NULL) == 0) {
			sub->sent_cursor = cursor;
			sub->last_send_ms = now;
		}
	}
}

static bool sub_has_pending(const struct watch_sub *sub)
{
	return pend_live(sub) > 0 || sub->aggs_n > 0 || sub->has_gap;
}

static void sub_free(struct watch_sub *sub)
{
	if (sub == NULL)
		return;
	arena_destroy(sub->filter_arena);
	arena_destroy(sub->pend_arena);
	free(sub->pend);
	free(sub->pend_seq);
	aggs_free(sub);
	free(sub);
}

/* ---- reading the log ---- */

/*
 * Reads the rows after seq into *rows (n in *n_out), decoded in a, and the
 * oldest sequence the log holds into *lo_out (0: the log is empty), in one
 * snapshot. A payload that does not decode is logged and left NULL.
 * MON_ENOMEM past the arena's cap; db errors as db_exec_stmt.
 */
static int rows_read(struct db_conn *conn, int64_t after, struct arena *a, struct log_row **rows, int *n_out,
                     int64_t *lo_out, struct mon_error *err)
{
	char after_text[24];
	snprintf(after_text, sizeof(after_text), "%" PRId64, after);
	const char *params[] = {after_text};
	struct db_result *res = NULL;
	int rc = db_exec_stmt(conn, &rows_stmt, params, &res, err);
	if (rc != 0)
		return rc;
	int n = db_result_rows(res);
	*lo_out = n > 0 ? svc_parse_i64(db_result_value(res, 0, 4)) : 0;
	if (n == 1 && db_result_is_null(res, 0, 0))
		n = 0; /* nothing after `after`: the row only carries the oldest sequence */
	struct log_row *r = arena_calloc(a, n > 0 ? (size_t)n : 1, sizeof(*r));
	if (r == NULL) {
		db_result_free(res);
		return mon_error_set(err, MON_ENOMEM, "out of memory reading the ingest log");
	}
	ProtobufCAllocator alloc = arena_protobuf_allocator(a);
	for (int i = 0; i < n; i++) {
		r[i].seq = svc_parse_i64(db_result_value(res, i, 0));
		r[i].min_us = svc_parse_i64(db_result_value(res, i, 1));
		r[i].max_us = svc_parse_i64(db_result_value(res, i, 2));
		size_t len = 0;
		uint8_t *bytes = svc_hex_decode(a, db_result_value(res, i, 3), &len);
		r[i].batch = bytes ? monitoring__v1__metric_batch__unpack(&alloc, len, bytes) : NULL;
		if (r[i].batch == NULL)
			log_error("msg=\"metrics watch could not decode an ingest log payload; its points are "
			          "announced as a gap\" sequence=%" PRId64,
			          r[i].seq);
	}
	db_result_free(res);
	*rows = r;
	*n_out = n;
	return 0;
}

/* ---- the handler ---- */

/* Copies list (n strings) into the filter arena; sorted when is_sorted. Validates with field's name. */
static int copy_list(struct rpc_ctx *ctx, struct watch_sub *sub, const char *field, char **list, size_t n,
                     bool may_be_empty, bool is_sorted, char ***out)
{
	if (n > WATCH_FILTER_MAX)
		return rpc_fail(ctx, MON_EINVAL, "filter.%s: at most %d entries", field, WATCH_FILTER_MAX);
	if (n == 0)
		return 0;
	char **copy = arena_calloc(sub->filter_arena, n, sizeof(*copy));
	if (copy == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "filter: too large");
	for (size_t i = 0; i < n; i++) {
		if (!may_be_empty && list[i][0] == '\0')
			return rpc_fail(ctx, MON_EINVAL, "filter.%s[%zu]: must not be empty", field, i);
		copy[i] = arena_strdup(sub->filter_arena, list[i]);
		if (copy[i] == NULL)
			return rpc_fail(ctx, MON_ENOMEM, "filter: too large");
	}
	if (is_sorted)
		qsort(copy, n, sizeof(*copy), cmp_str);
	*out = copy;
	return 0;
}

/* Validates the request into sub. Errors name the field. */
static int sub_configure(struct rpc_ctx *ctx, struct watch_sub *sub, const Monitoring__V1__WatchMetricsRequest *req)
{
	if (req->resume_after_sequence < 0)
		return rpc_fail(ctx, MON_EINVAL, "resume_after_sequence: must not be negative");
	if (req->max_batch_points < 0 || req->max_batch_points > WATCH_BATCH_MAX)
		return rpc_fail(ctx, MON_EINVAL, "max_batch_points: must be between 0 and %d", WATCH_BATCH_MAX);
	sub->max_points = req->max_batch_points == 0 ? WATCH_BATCH_DEFAULT : (size_t)req->max_batch_points;
	sub->cap_points = sub->max_points * WATCH_PENDING_BATCHES;
	if (sub->cap_points < WATCH_PENDING_MIN)
		sub->cap_points = WATCH_PENDING_MIN;
	sub->delay_ms = WATCH_DELAY_DEFAULT_MS;
	if (req->max_batch_delay != NULL && (!duration_ms(req->max_batch_delay, &sub->delay_ms) || sub->delay_ms < 0 ||
	                                     sub->delay_ms > WATCH_DELAY_MAX_MS))
		return rpc_fail(ctx, MON_EINVAL, "max_batch_delay: must be between 0s and %ds",
		                WATCH_DELAY_MAX_MS / 1000);
	if (req->heartbeat_interval < 0)
		return rpc_fail(ctx, MON_EINVAL, "heartbeat_interval: must not be negative");
	sub->heartbeat_ms =
	        stream_heartbeat_ms(req->heartbeat_interval, WATCH_HEARTBEAT_DEFAULT_S, WATCH_HEARTBEAT_MIN_S);
	if (req->downsample_interval != NULL &&
	    (!duration_ms(req->downsample_interval, &sub->downsample_ms) ||
	     sub->downsample_ms < WATCH_DOWNSAMPLE_MIN_MS || sub->downsample_ms > WATCH_DOWNSAMPLE_MAX_MS))
		return rpc_fail(ctx, MON_EINVAL, "downsample_interval: must be between 1s and 1h");
	int agg = req->downsample_aggregation;
	if (agg < MONITORING__V1__AGGREGATION__AGGREGATION_UNSPECIFIED ||
	    agg > MONITORING__V1__AGGREGATION__AGGREGATION_LAST)
		return rpc_fail(ctx, MON_EINVAL, "downsample_aggregation: unknown value %d", agg);
	if (agg != MONITORING__V1__AGGREGATION__AGGREGATION_UNSPECIFIED && sub->downsample_ms == 0)
		return rpc_fail(ctx, MON_EINVAL, "downsample_aggregation: needs downsample_interval");
	sub->aggregation = agg;

	const Monitoring__V1__MetricFilter *f = req->filter;
	if (f == NULL)
		return 0;
	sub->filter_arena = arena_create(16u << 20);
	if (sub->filter_arena == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "out of memory");
	int rc = copy_list(ctx, sub, "metric_names", f->metric_names, f->n_metric_names, false, true, &sub->names);
	if (rc == 0)
		rc = copy_list(ctx, sub, "endpoints", f->endpoints, f->n_endpoints, true, true, &sub->endpoints);
	if (rc == 0)
		rc = copy_list(ctx, sub, "methods", f->methods, f->n_methods, true, false, &sub->methods);
	if (rc != 0)
		return rc;
	sub->names_n = f->n_metric_names;
	sub->endpoints_n = f->n_endpoints;
	sub->methods_n = f->n_methods;
	if (f->n_status_codes > WATCH_FILTER_MAX)
		return rpc_fail(ctx, MON_EINVAL, "filter.status_codes: at most %d entries", WATCH_FILTER_MAX);
	if (f->n_status_codes > 0) {
		sub->statuses = arena_calloc(sub->filter_arena, f->n_status_codes, sizeof(*sub->statuses));
		if (sub->statuses == NULL)
			return rpc_fail(ctx, MON_ENOMEM, "filter: too large");
		for (size_t i = 0; i < f->n_status_codes; i++) {
			if (f->status_codes[i] < 100 || f->status_codes[i] > 599)
				return rpc_fail(ctx, MON_EINVAL,
				                "filter.status_codes[%zu]: must be between 100 and 599", i);
			sub->statuses[i] = f->status_codes[i];
		}
		sub->statuses_n = f->n_status_codes;
	}
	if (f->n_tags > METRICS_TAGS_MAX)
		return rpc_fail(ctx, MON_EINVAL, "filter.tags: at most %d keys", METRICS_TAGS_MAX);
	if (f->n_tags > 0) {
		sub->tag_keys = arena_calloc(sub->filter_arena, f->n_tags, sizeof(*sub->tag_keys));
		sub->tag_values = arena_calloc(sub->filter_arena, f->n_tags, sizeof(*sub->tag_values));
		if (sub->tag_keys == NULL || sub->tag_values == NULL)
			return rpc_fail(ctx, MON_ENOMEM, "filter: too large");
		for (size_t i = 0; i < f->n_tags; i++) {
			const char *k = f->tags[i]->key ? f->tags[i]->key : "";
			if (k[0] == '\0')
				return rpc_fail(ctx, MON_EINVAL, "filter.tags: a key must not be empty");
			sub->tag_keys[i] = arena_strdup(sub->filter_arena, k);
			sub->tag_values[i] =
			        arena_strdup(sub->filter_arena, f->tags[i]->value ? f->tags[i]->value : "");
			if (sub->tag_keys[i] == NULL || sub->tag_values[i] == NULL)
				return rpc_fail(ctx, MON_ENOMEM, "filter: too large");
		}
		sub->tags_n = f->n_tags;
	}
	return 0;
}

struct log_bounds {
	int64_t current; /* the last sequence handed out, every commit up to it ended */
	int64_t lo;      /* the oldest retained row; 0 when the log is empty */
	int64_t oldest_us;
};

static int bounds_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct log_bounds *b = arg;
	char lock_text[24];
	snprintf(lock_text, sizeof(lock_text), "%d", METRICS_INGEST_LOCK);
	const char *params[] = {lock_text};
	int rc = db_exec_stmt(conn, &lock_stmt, params, NULL, err);
	struct db_result *res = NULL;
	if (rc == 0)
		rc = db_exec_stmt(conn, &bounds_stmt, NULL, &res, err);
	if (rc != 0)
		return rc;
	b->current = svc_parse_i64(db_result_value(res, 0, 0));
	b->lo = svc_parse_i64(db_result_value(res, 0, 1));
	b->oldest_us = svc_parse_i64(db_result_value(res, 0, 2));
	db_result_free(res);
	return 0;
}

/* ---- the stream kind ---- */

#define WATCH_BOUNDS_MS 10000 /* the start's transaction bound */

/* stream_kind.read: log rows after `after` (their batches decoded into a) and the oldest retained sequence. */
static int kind_read(struct db_conn *conn, int64_t after, struct arena *a, struct stream_event **out, size_t *n_out,
                     int64_t *lo_out, struct mon_error *err)
{
	struct log_row *rows = NULL;
	int n = 0;
	int rc = rows_read(conn, after, a, &rows, &n, lo_out, err);
	if (rc != 0)
		return rc;
	struct stream_event *ev = arena_calloc(a, n > 0 ? (size_t)n : 1, sizeof(*ev));
	if (ev == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory reading the ingest log");
	for (int i = 0; i < n; i++)
		ev[i] = (struct stream_event){.seq = rows[i].seq, .data = &rows[i]};
	*out = ev;
	*n_out = (size_t)n;
	return 0;
}

/*
 * stream_batching.start: the cursor to read after. 0 starts at the log's
 * current end; a cursor older than the log (or unknown to it) gets a gap
 * of unknown size, since what was lost cannot be counted, and restarts at
 * the oldest retained commit.
 */
static int kind_start(struct db_pool *pool, int64_t timeout_ms, void *state, struct rpc_stream *s, int64_t resume_after,
                      int64_t *cursor_out, struct mon_error *err)
{
	struct watch_sub *sub = state;
	sub->stream = s;
	struct log_bounds b = {0};
	int rc = db_tx_run(pool, timeout_ms < WATCH_BOUNDS_MS ? timeout_ms : WATCH_BOUNDS_MS, bounds_tx, &b, err);
	if (rc != 0)
		return rc;
	int64_t cursor = resume_after;
	if (cursor == 0) {
		cursor = b.current;
	} else if (cursor > b.current || (b.lo > 0 && cursor < b.lo - 1) || (b.lo == 0 && cursor < b.current)) {
		int64_t restart = b.lo > 0 ? b.lo - 1 : b.current;
		int64_t end_us = b.lo > 0 ? b.oldest_us : wall_us();
		rc = send_gap(s, restart, -1, end_us, end_us,
		              MONITORING__V1__STREAM_END_REASON__STREAM_END_REASON_UNSPECIFIED);
		if (rc != 0)
			return mon_error_set(err, rc, "could not start the stream");
		cursor = restart;
	}
	sub->processed_seq = sub->sent_cursor = cursor;
	sub->last_send_ms = INT64_MIN / 2; /* never: the first tick sends a heartbeat with the cursor */
	*cursor_out = cursor;
	return 0;
}

/*
 * stream_batching.page: the commits between `after` and first_seq are
 * missing. When the log still holds a row at or below `after` nothing
 * after it was removed (the log is pruned from its oldest rows and emptied
 * by a crash of PostgreSQL), so they are batches rolled back. Otherwise
 * they may be gone and are announced as a gap of unknown size: at worst an
 * unknown gap that was in fact empty, never a silent loss.
 */
static void kind_page(void *state, int64_t after, int64_t first_seq, int64_t lo, int64_t now)
{
	struct watch_sub *sub = state;
	bool is_lost = first_seq > after + 1 && !(lo > 0 && lo <= after);
	if (is_lost && first_seq - 1 > sub->processed_seq) {
		/* A warning for the first subscriber that meets a loss, at most once a second: not one per stream. */
		static _Atomic int64_t last_warned_ms;
		int64_t warned = atomic_load(&last_warned_ms);
		bool is_warning = now - warned >= 1000 && atomic_compare_exchange_strong(&last_warned_ms, &warned, now);
		log_write(
		        is_warning ? LOG_WARN : LOG_DEBUG,
		        "msg=\"metrics watch: ingest log rows were pruned or lost before they were read; announced as a "
		        "gap\" after_sequence=%" PRId64 " through_sequence=%" PRId64 " oldest_sequence=%" PRId64
		        " peer=\"%s\"",
		        sub->processed_seq, first_seq - 1, lo, rpc_ctx_peer(rpc_stream_ctx(sub->stream)));
		/* Announced at once, so that the points that follow are sent, not counted into it. */
		gap_lost(sub, first_seq - 1, wall_us());
		sub_flush(sub, now, FLUSH_DUE);
	}
	if (sub->processed_seq < first_seq - 1)
		sub->processed_seq = first_seq - 1;
}

static int kind_offer(void *state, const struct stream_event *ev, int64_t now)
{
	struct watch_sub *sub = state;
	sub_offer(sub, ev->data, now, wall_us() / 1000);
	return sub->is_blocked ? MON_ELIMIT : 0;
}

static int kind_tick(void *state, int64_t now, bool is_final, bool *has_pending)
{
	struct watch_sub *sub = state;
	int64_t wall_ms = wall_us() / 1000;
	if (is_final) {
		aggs_close_due(sub, wall_ms, now);
		sub_flush(sub, now, FLUSH_ALL);
	} else {
		sub_tick(sub, now, wall_ms);
	}
	*has_pending = sub_has_pending(sub) || now - sub->last_send_ms >= sub->heartbeat_ms;
	return sub->is_blocked ? MON_ELIMIT : 0;
}

static int64_t kind_position(const void *state)
{
	const struct watch_sub *sub = state;
	return sub->processed_seq;
}

/*
 * Server shutdown: sends sub's pending points and gap as far as its queue
 * takes them, then RESUME_REQUIRED (SERVER_SHUTDOWN) with the cursor of
 * what is queued (before any point still pending, open aggregate or unsent
 * gap), and ends the stream with UNAVAILABLE once the queue is sent. When
 * the queue has no room for the control the stream is left to the server,
 * which drops its queue and ends it at once: every message's sequence is a
 * cursor too.
 */
static void kind_shutdown(void *state)
{
	static const char text[] = "server is shutting down; resume from the cursor";
	struct watch_sub *sub = state;
	sub_flush(sub, mon_now_ms(), FLUSH_ALL);
	int64_t cursor = sub_cursor(sub, sub->pend_head, true);
	if (stream_send_control(&metrics_watch_kind, sub->stream,
	                        MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_RESUME_REQUIRED, cursor,
	                        MONITORING__V1__STREAM_END_REASON__STREAM_END_REASON_SERVER_SHUTDOWN, text) == 0) {
		sub->sent_cursor = cursor;
		rpc_stream_finish(sub->stream, MON_EUNAVAIL, text);
	} else {
		log_debug("msg=\"metrics watch: no room for the shutdown notice; the server ends the stream\"");
	}
}

static void kind_filter_free(void *state)
{
	sub_free(state);
}

static const struct stream_batching metrics_batching = {
        .start = kind_start,
        .page = kind_page,
        .offer = kind_offer,
        .tick = kind_tick,
        .position = kind_position,
        .shutdown = kind_shutdown,
};

const struct stream_kind metrics_watch_kind = {
        .name = "metrics",
        .channel = METRICS_NOTIFY_CHANNEL,
        .subs_max = WATCH_SUBS_MAX,
        .page_rows = 1, /* reads stop at a byte budget: read on until none is left */
        .page_arena_bytes = WATCH_READ_ARENA_BYTES,
        .read = kind_read,
        .response = &monitoring__v1__watch_metrics_response__descriptor,
        .filter_free = kind_filter_free,
        .batching = &metrics_batching,
};

/* ---- the handler ---- */

int metrics_watch(struct stream_hub *hub, struct rpc_ctx *ctx, const Monitoring__V1__WatchMetricsRequest *req,
                  struct rpc_stream *stream)
{
	struct watch_sub *sub = calloc(1, sizeof(*sub));
	if (sub == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "out of memory");
	int rc = sub_configure(ctx, sub, req);
	if (rc != 0) {
		sub_free(sub);
		return rc;
	}
	rc = stream_open(hub, stream, sub, sub->heartbeat_ms, req->resume_after_sequence, rpc_ctx_error(ctx));
	return rc; /* on failure the message is in the call's error slot */
}
