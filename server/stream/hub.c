/*
 * The resumable event stream hub (stream.h): subscribers, the live
 * fan-out, the catch-up of new streams, heartbeats, the fell-behind and
 * shutdown controls.
 *
 * Who owns a subscriber. Each holds two references: the stream's close
 * callback's, dropped when the stream is over, and its owner's. The owner
 * is exactly one of: the catch-up queue (hub->jobs), the stream's armed
 * writable callback (a parked catch-up), the hand-over inbox
 * (hub->inbox), or the hub thread's live array. Only the owner reads or
 * writes the subscriber's state and cursor, so none of that needs a lock;
 * ownership moves through hub->mu, which guards nothing but the two queues
 * and the flags, and is never held while sending. The close callback only
 * sets is_closed and drops its reference; the owner notices and lets go.
 * A subscriber holds a reference on its stream until it is freed, so a
 * closed stream stays valid for whoever still sends to it.
 *
 * Catch-up (hub->catchup_thread). A new stream is queued as a job. The job
 * checks the cursor, reads the snapshot or a page of the log after the
 * cursor (holding a pooled connection only for that read), packs it, and
 * sends as much as the stream's queue takes. When the queue is full it
 * arms rpc_stream_on_writable and lets go: the stream's write completions
 * queue the job again. A full page queues the job again at the back (so
 * many catching-up streams take turns); a short page ends the backlog and
 * the subscriber goes to the inbox. Pages are shared: streams that resume
 * from the same sequence reuse the page the last job read.
 *
 * Hand-over. The hub thread takes the inbox before each read. A subscriber
 * whose cursor is at or past the last sequence the hub dispatched joins
 * the live array and gets every event after its cursor; one whose cursor
 * is behind goes back to the catch-up queue to read the difference. Since
 * sequence order is commit order (each kind numbers its events under a
 * lock held to commit), that is neither a gap nor a repeat.
 *
 * Live fan-out (hub->thread, with hub->fan_thread taking every other
 * subscriber when there are many). The hub thread reads pages after the
 * last sequence dispatched, woken by the kind's NOTIFY and every second,
 * packs each event once and offers the bytes to every matching live
 * subscriber with the non-blocking rpc_stream_send_packed. A subscriber
 * whose queue is full leaves the live array for the catch-up queue in the
 * ending state: RESUME_REQUIRED (FELL_BEHIND) with its cursor as soon as
 * its queue has room, then RESOURCE_EXHAUSTED.
 */
#include "stream/stream.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "google/protobuf/timestamp.pb-c.h"
#include "util/clock.h"
#include "util/log.h"

#define HUB_TICK_MS 1000       /* catch-up read and heartbeat check while anyone listens */
#define HUB_BATCH_TICK_MS 50   /* batching subscribers' timers while anything is held */
#define HUB_READ_SLICE_MS 200  /* reading at most this long between timers */
#define HUB_ACQUIRE_MS 2000    /* waiting for a pooled connection */
#define HUB_DRAIN_WAIT_MS 3000 /* stream_hub_drain waits this long for the threads' step */
#define PAGE_ARENA_BYTES (64u << 20)
#define PAGE_SHORT_REUSE_MS 50 /* a short page is reused this long; a full one while cached */
#define CHECK_REUSE_MS 50      /* a cursor check's answer is reused this long for the same cursor */
#define FAN_SPLIT_MIN 64       /* below this many live subscribers one thread sends them all */

enum sub_state {
	SUB_START,   /* new: cursor check, snapshot or backlog */
	SUB_BACKLOG, /* reads the page after its cursor */
	SUB_PUMP,    /* sends its page */
	SUB_LIVE,    /* in the inbox or the live array */
	SUB_ENDING,  /* fell behind: RESUME_REQUIRED pending */
};

/* The events of one read (or a snapshot), packed once, shared by reference. */
struct page_item {
	int64_t seq;
	const void *data; /* the kind's, for matching; NULL goes to everyone */
	struct rpc_packed *packed;
	bool is_advancing; /* delivering it moves the cursor to seq */
};

struct page {
	atomic_int refs;
	struct arena *arena;
	int64_t after;      /* log pages: read after this sequence */
	int64_t end_cursor; /* the cursor once every item is delivered */
	int64_t lo;         /* the oldest sequence the log held at the read (0: empty or not known) */
	int64_t read_ms;
	bool is_full; /* a log page of page_rows events: more may follow */
	size_t n;
	struct page_item *items;
};

struct stream_sub {
	struct stream_hub *hub;
	struct rpc_stream *stream;
	void *filter;
	int64_t heartbeat_ms;
	atomic_int refs;
	atomic_bool is_closed;

	/* The owner's (see the file comment). */
	enum sub_state state;
	bool has_cursor;  /* cursor is a valid resume point */
	bool is_woken;    /* queued by its writable callback */
	bool has_pending; /* batching: its state holds something */
	int64_t cursor;   /* last sequence queued or skipped as filtered */
	int64_t resume_after;
	int64_t bounce_seen;    /* the hub's position when it sent sub back to read the difference */
	bool is_forced_expired; /* the difference is gone from the log: start over with a snapshot */
	struct page *page;      /* SUB_PUMP */
	size_t next;
	int64_t last_send_ms;
	struct stream_sub *qnext;
};

struct stream_hub {
	const struct stream_kind *kind;
	struct db_pool *pool;
	atomic_size_t subs_n;

	pthread_mutex_t mu; /* the flags, the inbox and the jobs; never held while sending */
	pthread_cond_t hub_cond, job_cond, ack_cond;
	bool should_stop, is_draining, is_woken;
	bool is_hub_acked, is_jobs_acked;
	struct stream_sub *inbox, *inbox_tail;
	struct stream_sub *jobs, *jobs_tail;

	/* The hub thread's. */
	pthread_t thread;
	bool has_thread;
	struct stream_sub **live;
	size_t live_n, live_cap;
	int64_t last_seen; /* last sequence dispatched; -1 while nobody is live */
	int64_t last_tick_ms;
	bool has_pending; /* a batching subscriber holds something: its timers run often */
	bool is_failing;

	/* The second sender: takes the odd-numbered live subscribers of a page. */
	pthread_t fan_thread;
	bool has_fan_thread;
	pthread_mutex_t fan_mu;
	pthread_cond_t fan_cond;
	bool fan_has_job, fan_done, fan_stop;
	const struct page *fan_page;
	int64_t fan_now;

	/* The catch-up thread's. */
	pthread_t catchup_thread;
	bool has_catchup_thread;
	struct page *cache;
	bool is_catchup_failing;
	/* The last cursor check: streams that resume together mostly resume from the same cursor. */
	int64_t checked_cursor, checked_ms;
	bool is_checked_expired;
};

/* ---- controls ---- */

/* A StreamControl in a with the server's time; NULL past a's cap. */
static Monitoring__V1__StreamControl *stream_control_new(struct arena *a, int kind, int64_t cursor, int reason,
                                                         const char *message)
{
	Monitoring__V1__StreamControl *c = arena_alloc(a, sizeof(*c));
	Google__Protobuf__Timestamp *t = arena_alloc(a, sizeof(*t));
	if (c == NULL || t == NULL)
		return NULL;
	monitoring__v1__stream_control__init(c);
	google__protobuf__timestamp__init(t);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	t->seconds = ts.tv_sec;
	t->nanos = (int32_t)ts.tv_nsec;
	c->kind = kind;
	c->resume_after_sequence = cursor;
	c->reason = reason;
	c->message = arena_strdup(a, message ? message : "");
	c->server_time = t;
	return c->message ? c : NULL;
}

int64_t stream_heartbeat_ms(int32_t requested_s, int default_s, int min_s)
{
	int64_t s = requested_s == 0 ? default_s : requested_s;
	if (s < min_s)
		s = min_s;
	if (s > 86400)
		s = 86400;
	return s * 1000;
}

ProtobufCMessage *stream_control_msg(const struct stream_kind *kind, struct arena *a, int ctl_kind, int64_t cursor,
                                     int reason, const char *message)
{
	const ProtobufCMessageDescriptor *d = kind->response;
	const ProtobufCFieldDescriptor *seq = protobuf_c_message_descriptor_get_field_by_name(d, "sequence");
	const ProtobufCFieldDescriptor *ctl_field = protobuf_c_message_descriptor_get_field_by_name(d, "control");
	Monitoring__V1__StreamControl *ctl = stream_control_new(a, ctl_kind, cursor, reason, message);
	ProtobufCMessage *m = arena_alloc(a, d->sizeof_message);
	if (seq == NULL || ctl_field == NULL || ctl == NULL || m == NULL)
		return NULL;
	d->message_init(m);
	char *base = (char *)m;
	*(int64_t *)(void *)(base + seq->offset) = cursor;
	*(Monitoring__V1__StreamControl **)(void *)(base + ctl_field->offset) = ctl;
	if (ctl_field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
		*(uint32_t *)(void *)(base + ctl_field->quantifier_offset) = ctl_field->id;
	return m;
}

int stream_send_control(const struct stream_kind *kind, struct rpc_stream *s, int ctl_kind, int64_t cursor, int reason,
                        const char *message)
{
	struct arena *a = arena_create(4096);
	if (a == NULL)
		return MON_ENOMEM;
	ProtobufCMessage *m = stream_control_msg(kind, a, ctl_kind, cursor, reason, message);
	int rc = m ? rpc_stream_send(s, m) : MON_ENOMEM;
	arena_destroy(a);
	return rc;
}

/* Sends the control (kind, cursor, reason, message) on sub's stream without waiting. */
static int send_control(struct stream_sub *sub, int kind, int64_t cursor, int reason, const char *message)
{
	return stream_send_control(sub->hub->kind, sub->stream, kind, cursor, reason, message);
}

int stream_ids_copy(struct rpc_ctx *ctx, const char *field, char *const *ids, size_t n, size_t max,
                    struct stream_ids *out)
{
	*out = (struct stream_ids){0};
	if (n > max)
		return rpc_fail(ctx, MON_EINVAL, "%s: at most %zu", field, max);
	for (size_t i = 0; i < n; i++)
		if (ids[i][0] == '\0')
			return rpc_fail(ctx, MON_EINVAL, "%s[%zu]: must not be empty", field, i);
	if (n == 0)
		return 0;
	out->ids = calloc(n, sizeof(*out->ids));
	if (out->ids == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		out->ids[out->n] = strdup(ids[i]);
		if (out->ids[out->n] == NULL)
			return rpc_fail(ctx, MON_ENOMEM, "out of memory");
		out->n++;
	}
	return 0;
}

bool stream_ids_has(const struct stream_ids *set, const char *id)
{
	if (set->n == 0)
		return true;
	for (size_t i = 0; i < set->n; i++)
		if (strcmp(set->ids[i], id) == 0)
			return true;
	return false;
}

void stream_ids_free(struct stream_ids *set)
{
	for (size_t i = 0; i < set->n; i++)
		free(set->ids[i]);
	free(set->ids);
	*set = (struct stream_ids){0};
}

int stream_read_rows(struct db_conn *conn, const struct db_stmt *stmt, int64_t after, struct arena *a,
                     stream_row_decode_fn decode, struct stream_event **out, size_t *n_out, struct mon_error *err)
{
	char after_text[24];
	snprintf(after_text, sizeof(after_text), "%" PRId64, after);
	const char *params[1] = {after_text};
	struct db_result *res = NULL;
	int rc = db_exec_stmt(conn, stmt, params, &res, err);
	if (rc != 0)
		return rc;
	int n = db_result_rows(res);
	struct stream_event *ev = arena_calloc(a, n > 0 ? (size_t)n : 1, sizeof(*ev));
	for (int i = 0; ev != NULL && i < n; i++)
		if (decode(res, i, a, &ev[i]) != 0)
			ev = NULL;
	db_result_free(res);
	if (ev == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory decoding a page of the change log");
	*out = ev;
	*n_out = (size_t)n;
	return 0;
}

/* ---- pages ---- */

static void page_release(struct page *p)
{
	if (p == NULL || atomic_fetch_sub(&p->refs, 1) != 1)
		return;
	for (size_t i = 0; i < p->n; i++)
		rpc_packed_release(p->items[i].packed);
	free(p->items);
	arena_destroy(p->arena);
	free(p);
}

/* A page of the n events ev (decoded in a, which the page takes). */
static int page_make(struct arena *a, const struct stream_event *ev, size_t n, bool is_advancing, struct page **out)
{
	*out = NULL;
	struct page *p = calloc(1, sizeof(*p));
	if (p == NULL || (n > 0 && (p->items = calloc(n, sizeof(*p->items))) == NULL)) {
		free(p);
		arena_destroy(a);
		return MON_ENOMEM;
	}
	atomic_init(&p->refs, 1);
	p->arena = a;
	p->read_ms = mon_now_ms();
	for (size_t i = 0; i < n; i++) {
		struct page_item *it = &p->items[p->n];
		if (ev[i].msg != NULL && rpc_packed_create(ev[i].msg, &it->packed) != 0) {
			page_release(p);
			return MON_ENOMEM;
		}
		it->seq = ev[i].seq;
		it->data = ev[i].data;
		it->is_advancing = is_advancing;
		p->n++;
	}
	*out = p;
	return 0;
}

/* Reads and packs the page after `after` with a connection from the pool. */
static int page_read(struct stream_hub *hub, int64_t after, struct page **out, struct mon_error *err)
{
	*out = NULL;
	struct arena *a = arena_create(hub->kind->page_arena_bytes ? hub->kind->page_arena_bytes : PAGE_ARENA_BYTES);
	if (a == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	struct db_conn *conn = NULL;
	struct stream_event *ev = NULL;
	size_t n = 0;
	int64_t lo = 0;
	int rc = db_pool_acquire(hub->pool, HUB_ACQUIRE_MS, &conn, err);
	if (rc == 0) {
		rc = hub->kind->read(conn, after, a, &ev, &n, &lo, err);
		db_pool_release(hub->pool, conn);
	}
	if (rc != 0) {
		arena_destroy(a);
		return rc;
	}
	struct page *p = NULL;
	rc = page_make(a, ev, n, true, &p);
	if (rc != 0)
		return mon_error_set(err, rc, "out of memory");
	p->after = after;
	p->lo = lo;
	p->end_cursor = n > 0 ? p->items[n - 1].seq : after;
	p->is_full = n >= (size_t)hub->kind->page_rows;
	*out = p;
	return 0;
}

/* ---- subscribers ---- */

static void sub_unref(struct stream_sub *sub)
{
	if (atomic_fetch_sub(&sub->refs, 1) != 1)
		return;
	struct stream_hub *hub = sub->hub;
	page_release(sub->page);
	hub->kind->filter_free(sub->filter);
	rpc_stream_release(sub->stream);
	atomic_fetch_sub(&hub->subs_n, 1);
	free(sub);
}

/* The stream is over (any reason). The runtime's callbacks thread: atomics only. */
static void on_stream_close(struct rpc_stream *stream, void *arg)
{
	(void)stream;
	struct stream_sub *sub = arg;
	atomic_store(&sub->is_closed, true);
	sub_unref(sub);
}

static void queue_push(struct stream_sub **head, struct stream_sub **tail, struct stream_sub *sub)
{
	sub->qnext = NULL;
	if (*tail)
		(*tail)->qnext = sub;
	else
		*head = sub;
	*tail = sub;
}

/* Gives sub to the catch-up thread. */
static void job_push(struct stream_hub *hub, struct stream_sub *sub)
{
	pthread_mutex_lock(&hub->mu);
	queue_push(&hub->jobs, &hub->jobs_tail, sub);
	pthread_cond_signal(&hub->job_cond);
	pthread_mutex_unlock(&hub->mu);
}

/* The stream's queue has room again or the stream is over. The runtime's callbacks thread: never blocks. */
static void on_writable(struct rpc_stream *stream, void *arg)
{
	(void)stream;
	struct stream_sub *sub = arg;
	sub->is_woken = true;
	job_push(sub->hub, sub);
}

/* Gives sub to the hub thread for the hand-over. */
static void inbox_push(struct stream_hub *hub, struct stream_sub *sub)
{
	sub->state = SUB_LIVE;
	pthread_mutex_lock(&hub->mu);
	queue_push(&hub->inbox, &hub->inbox_tail, sub);
	hub->is_woken = true;
	pthread_cond_signal(&hub->hub_cond);
	pthread_mutex_unlock(&hub->mu);
}

/*
 * Server shutdown: RESUME_REQUIRED (SERVER_SHUTDOWN) with sub's cursor,
 * then UNAVAILABLE once what is queued is sent. A subscriber with no
 * cursor yet (in its snapshot), or whose queue has no room for the
 * control, is left to the server, which ends it at once: the client
 * resumes after the last sequence it got.
 */
static void end_for_shutdown(struct stream_sub *sub)
{
	static const char text[] = "server is shutting down; resume from the cursor";
	if (!sub->has_cursor || atomic_load(&sub->is_closed))
		return;
	if (sub->hub->kind->batching != NULL) {
		sub->hub->kind->batching->shutdown(sub->filter);
		return;
	}
	if (send_control(sub, MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_RESUME_REQUIRED, sub->cursor,
	                 MONITORING__V1__STREAM_END_REASON__STREAM_END_REASON_SERVER_SHUTDOWN, text) == 0)
		rpc_stream_finish(sub->stream, MON_EUNAVAIL, text);
	else
		log_debug("msg=\"%s watch: no room for the shutdown notice; the server ends the stream\"",
		          sub->hub->kind->name);
}

/* Ends sub's stream with err (a catch-up read failed) and lets it go. */
static void fail_sub(struct stream_sub *sub, const struct mon_error *err)
{
	if (rpc_ctx_remaining_ms(rpc_stream_ctx(sub->stream)) <= 0) {
		/* whatever stopped the step (e.g. no connection free), the caller's deadline ended it */
		rpc_stream_finish(sub->stream, MON_EDEADLINE, "deadline exceeded before the stream caught up");
		sub_unref(sub);
		return;
	}
	rpc_stream_finish(sub->stream, err->code ? err->code : MON_EINTERNAL, err->msg);
	sub_unref(sub);
}

/* cap_ms, or less when the stream's deadline is nearer (<= 0 once it has passed). */
static int64_t sub_timeout_ms(const struct stream_sub *sub, int64_t cap_ms)
{
	int64_t left = rpc_ctx_remaining_ms(rpc_stream_ctx(sub->stream));
	return left < cap_ms ? left : cap_ms;
}

/* ---- catch-up ---- */

/*
 * The cached page after `after` when it may be reused, or a new read (then
 * cached). A short page may be older than what the hub has since seen, so
 * is_short_reusable is false for a subscriber the hub sent back to read
 * the difference: an empty page read before those events committed would
 * otherwise pass for "nothing there".
 */
static int catchup_page(struct stream_hub *hub, int64_t after, bool is_short_reusable, struct page **out,
                        struct mon_error *err)
{
	struct page *c = hub->cache;
	if (c != NULL && c->after == after &&
	    (c->is_full || (is_short_reusable && mon_now_ms() - c->read_ms < PAGE_SHORT_REUSE_MS))) {
		atomic_fetch_add(&c->refs, 1);
		*out = c;
		return 0;
	}
	int rc = page_read(hub, after, out, err);
	if (rc != 0)
		return rc;
	page_release(hub->cache);
	hub->cache = *out;
	atomic_fetch_add(&(*out)->refs, 1);
	return 0;
}

/*
 * The kind's cursor check with a pooled connection (catch-up thread only).
 * is_reusable: an answer for the same cursor from the last CHECK_REUSE_MS
 * will do (a stream's start: thousands reconnecting at once make one
 * query); a recheck after something may have changed passes false.
 */
static int cursor_check(struct stream_hub *hub, int64_t timeout_ms, int64_t cursor, bool is_reusable, bool *is_expired,
                        struct mon_error *err)
{
	int64_t now = mon_now_ms();
	if (is_reusable && hub->checked_ms > 0 && cursor == hub->checked_cursor &&
	    now - hub->checked_ms < CHECK_REUSE_MS) {
		*is_expired = hub->is_checked_expired;
		return 0;
	}
	struct db_conn *conn = NULL;
	int rc = db_pool_acquire(hub->pool, timeout_ms, &conn, err);
	if (rc != 0)
		return rc;
	rc = hub->kind->cursor_is_expired(conn, cursor, is_expired, err);
	db_pool_release(hub->pool, conn);
	if (rc == 0) {
		hub->checked_cursor = cursor;
		hub->checked_ms = now;
		hub->is_checked_expired = *is_expired;
	}
	return rc;
}

/*
 * The start of a stream: CURSOR_EXPIRED and a snapshot when the cursor
 * cannot be replayed, the snapshot when there is none, else the backlog.
 */
static int catchup_start(struct stream_sub *sub, struct mon_error *err)
{
	struct stream_hub *hub = sub->hub;
	const struct stream_kind *kind = hub->kind;
	if (kind->batching != NULL) {
		int rc = kind->batching->start(hub->pool, sub_timeout_ms(sub, DB_NO_DEADLINE), sub->filter, sub->stream,
		                               sub->resume_after, &sub->cursor, err);
		if (rc != 0)
			return rc;
		sub->has_cursor = true;
		sub->state = SUB_BACKLOG;
		return 0;
	}
	bool is_expired = sub->is_forced_expired;
	sub->is_forced_expired = false;
	if (sub->resume_after > 0 && !is_expired) {
		int rc = cursor_check(hub, sub_timeout_ms(sub, HUB_ACQUIRE_MS), sub->resume_after, true, &is_expired,
		                      err);
		if (rc != 0)
			return rc;
		if (!is_expired) {
			sub->cursor = sub->resume_after;
			sub->has_cursor = true;
			sub->state = SUB_BACKLOG;
			return 0;
		}
	}
	struct arena *a = arena_create(PAGE_ARENA_BYTES);
	if (a == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	struct stream_event *items = NULL;
	size_t n = 0;
	int64_t mark = 0;
	int rc = kind->snapshot(hub->pool, sub_timeout_ms(sub, DB_NO_DEADLINE), sub->filter, a, &items, &n, &mark, err);
	if (rc != 0) {
		arena_destroy(a);
		return rc;
	}
	/* [CURSOR_EXPIRED] items... SNAPSHOT_COMPLETE, in one page. */
	struct stream_event *all = arena_calloc(a, n + 2, sizeof(*all));
	if (all == NULL) {
		arena_destroy(a);
		return mon_error_set(err, MON_ENOMEM, "snapshot too large for the stream's memory limit");
	}
	size_t k = 0;
	if (is_expired) {
		all[k++].msg = stream_control_msg(
		        kind, a, MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_CURSOR_EXPIRED,
		        sub->resume_after, 0, "the cursor is older than the retained change log; a snapshot follows");
	}
	for (size_t i = 0; i < n; i++)
		all[k++] = (struct stream_event){.seq = items[i].seq, .msg = items[i].msg};
	all[k++].msg = stream_control_msg(
	        kind, a, MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_SNAPSHOT_COMPLETE, mark, 0, NULL);
	for (size_t i = 0; i < k; i++)
		if (all[i].msg == NULL) {
			arena_destroy(a);
			return mon_error_set(err, MON_ENOMEM, "snapshot too large for the stream's memory limit");
		}
	struct page *p = NULL;
	rc = page_make(a, all, k, false, &p);
	if (rc != 0)
		return mon_error_set(err, rc, "out of memory");
	p->end_cursor = mark;
	sub->page = p;
	sub->next = 0;
	sub->state = SUB_PUMP;
	return 0;
}

/* Parks sub until its stream's queue has room again (the writable callback then owns it and queues it). */
static int park(struct stream_sub *sub)
{
	rpc_stream_on_writable(sub->stream, on_writable, sub);
	return 0; /* catchup_pump's "parked" */
}

/*
 * Batching kinds: offers sub's page from where it stopped; at the end of
 * the backlog (a page that is not full) flushes everything held. Returns
 * as catchup_pump.
 */
static int catchup_offer(struct stream_sub *sub)
{
	const struct stream_batching *b = sub->hub->kind->batching;
	const struct page *p = sub->page;
	int64_t now = mon_now_ms();
	bool has_pending = false;
	if (sub->is_woken) {
		sub->is_woken = false;
		if (b->tick(sub->filter, now, false, &has_pending) == MON_ELIMIT)
			return park(sub);
	}
	if (sub->next == 0 && p->n > 0)
		b->page(sub->filter, p->after, p->items[0].seq, p->lo, now);
	while (sub->next < p->n) {
		const struct page_item *it = &p->items[sub->next++];
		struct stream_event ev = {.seq = it->seq, .data = it->data};
		int rc = b->offer(sub->filter, &ev, now);
		sub->cursor = b->position(sub->filter);
		if (rc == MON_ELIMIT)
			return park(sub);
	}
	if (!p->is_full && b->tick(sub->filter, now, true, &has_pending) == MON_ELIMIT)
		return park(sub);
	sub->cursor = b->position(sub->filter);
	return 1;
}

/*
 * Sends sub's page from where it stopped. Returns 1 when the page is done,
 * 0 when sub is parked on its writable callback (the callback owns it
 * now), or a negative error with err set (MON_ECANCELLED: the stream is
 * over).
 */
static int catchup_pump(struct stream_sub *sub, struct mon_error *err)
{
	const struct stream_kind *kind = sub->hub->kind;
	if (kind->batching != NULL)
		return catchup_offer(sub);
	struct page *p = sub->page;
	sub->is_woken = false;
	while (sub->next < p->n) {
		const struct page_item *it = &p->items[sub->next];
		if (it->data == NULL || kind->matches(sub->filter, it->data)) {
			int rc = rpc_stream_send_packed(sub->stream, it->packed);
			if (rc == MON_ELIMIT)
				return park(sub);
			if (rc == MON_ENOMEM)
				return mon_error_set(
				        err, MON_ELIMIT,
				        "an event is larger than the stream's message limit, or memory ran out");
			if (rc != 0)
				return mon_error_set(err, rc, "stream ended");
			sub->last_send_ms = mon_now_ms();
		}
		if (it->is_advancing)
			sub->cursor = it->seq;
		sub->next++;
	}
	sub->cursor = p->end_cursor;
	sub->has_cursor = true;
	return 1;
}

/* RESUME_REQUIRED (FELL_BEHIND) once the queue has room, then RESOURCE_EXHAUSTED; lets sub go. */
static void catchup_end(struct stream_sub *sub)
{
	char text[160];
	snprintf(text, sizeof(text), "fell behind: stream queue full; resume with resume_after_sequence %" PRId64,
	         sub->cursor);
	int rc = send_control(sub, MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_RESUME_REQUIRED,
	                      sub->cursor, MONITORING__V1__STREAM_END_REASON__STREAM_END_REASON_FELL_BEHIND, text);
	if (rc == MON_ELIMIT) {
		park(sub);
		return;
	}
	rpc_stream_finish(sub->stream, MON_ELIMIT, text);
	sub_unref(sub);
}

/*
 * A backlog read found nothing after sub's cursor though the hub is past
 * it (bounce_seen). Either the sequences between were rolled back or never
 * had a row, and then the hub's position is sub's and it goes live; or
 * retention removed them meanwhile, and then it starts over with
 * CURSOR_EXPIRED and a snapshot. Takes sub.
 */
static void catchup_past_empty(struct stream_hub *hub, struct stream_sub *sub)
{
	struct mon_error err = {0};
	bool is_expired = false;
	/* a fresh answer: retention may have run since sub's start was checked */
	if (cursor_check(hub, sub_timeout_ms(sub, HUB_ACQUIRE_MS), sub->cursor, false, &is_expired, &err) != 0) {
		fail_sub(sub, &err);
		return;
	}
	if (is_expired) {
		sub->is_forced_expired = true;
		sub->resume_after = sub->cursor;
		sub->has_cursor = false; /* a new snapshot follows: no resume point until it is sent */
		sub->state = SUB_START;
		job_push(hub, sub);
		return;
	}
	sub->cursor = sub->bounce_seen;
	sub->bounce_seen = 0;
	inbox_push(hub, sub);
}

/* One step of sub's catch-up; sub is owned by the caller, which hands it on or lets it go. */
static void catchup_step(struct stream_hub *hub, struct stream_sub *sub, bool is_draining)
{
	struct mon_error err = {0};
	if (atomic_load(&sub->is_closed)) {
		sub_unref(sub);
		return;
	}
	if (is_draining) {
		end_for_shutdown(sub);
		sub_unref(sub);
		return;
	}
	if (sub->state == SUB_ENDING) {
		catchup_end(sub);
		return;
	}
	if ((sub->state == SUB_START || sub->state == SUB_BACKLOG) &&
	    rpc_ctx_remaining_ms(rpc_stream_ctx(sub->stream)) <= 0) {
		/* the caller's deadline passed while the stream waited: no read for it */
		mon_error_set(&err, MON_EDEADLINE, "deadline exceeded before the stream caught up");
		fail_sub(sub, &err);
		return;
	}
	if (sub->state == SUB_START && catchup_start(sub, &err) != 0) {
		fail_sub(sub, &err);
		return;
	}
	if (sub->state == SUB_BACKLOG) {
		struct page *p = NULL;
		if (catchup_page(hub, sub->cursor, sub->bounce_seen <= sub->cursor, &p, &err) != 0) {
			if (!hub->is_catchup_failing)
				log_warn("msg=\"%s watch could not read the backlog\" error=\"%s\"", hub->kind->name,
				         err.msg);
			hub->is_catchup_failing = true;
			fail_sub(sub, &err);
			return;
		}
		hub->is_catchup_failing = false;
		if (p->n == 0 && sub->bounce_seen > sub->cursor) {
			/*
			 * The hub is past our cursor, and nothing after it is in the log:
			 * the sequences up to the hub's position were rolled back (or
			 * never had a row), or retention removed them meanwhile.
			 */
			if (hub->kind->batching == NULL) {
				page_release(p);
				catchup_past_empty(hub, sub);
				return;
			}
			/* A batching kind announces what is gone (a gap) and moves on. */
			hub->kind->batching->page(sub->filter, sub->cursor, sub->bounce_seen + 1, p->lo, mon_now_ms());
			sub->cursor = hub->kind->batching->position(sub->filter);
		}
		sub->bounce_seen = 0;
		sub->page = p;
		sub->next = 0;
		sub->state = SUB_PUMP;
	}
	int rc = catchup_pump(sub, &err);
	if (rc == 0)
		return; /* parked */
	if (rc < 0) {
		if (rc == MON_ECANCELLED)
			sub_unref(sub);
		else
			fail_sub(sub, &err);
		return;
	}
	bool is_full = sub->page->is_full;
	page_release(sub->page);
	sub->page = NULL;
	if (is_full) {
		sub->state = SUB_BACKLOG;
		job_push(hub, sub); /* at the back: streams catching up take turns */
	} else {
		inbox_push(hub, sub);
	}
}

static void *catchup_main(void *arg)
{
	struct stream_hub *hub = arg;
	pthread_mutex_lock(&hub->mu);
	for (;;) {
		while (hub->jobs == NULL && !hub->should_stop && !(hub->is_draining && !hub->is_jobs_acked))
			pthread_cond_wait(&hub->job_cond, &hub->mu);
		if (hub->should_stop)
			break;
		if (hub->is_draining && !hub->is_jobs_acked) {
			hub->is_jobs_acked = true;
			pthread_cond_broadcast(&hub->ack_cond);
		}
		struct stream_sub *sub = hub->jobs;
		if (sub == NULL)
			continue;
		hub->jobs = sub->qnext;
		if (hub->jobs == NULL)
			hub->jobs_tail = NULL;
		bool is_draining = hub->is_draining;
		pthread_mutex_unlock(&hub->mu);
		catchup_step(hub, sub, is_draining);
		pthread_mutex_lock(&hub->mu);
	}
	pthread_mutex_unlock(&hub->mu);
	return NULL;
}

/* ---- live fan-out ---- */

/* Offers the page to live subscribers first, first + step, ... (each thread its own). */
static void fan_page(struct stream_hub *hub, const struct page *p, size_t first, size_t step, int64_t now)
{
	const struct stream_kind *kind = hub->kind;
	const struct stream_batching *b = kind->batching;
	for (size_t k = first; k < hub->live_n && b != NULL; k += step) {
		struct stream_sub *sub = hub->live[k];
		b->page(sub->filter, p->after, p->items[0].seq, p->lo, now);
		for (size_t i = 0; i < p->n; i++) {
			struct stream_event ev = {.seq = p->items[i].seq, .data = p->items[i].data};
			if (ev.seq > sub->cursor)
				(void)b->offer(sub->filter, &ev,
				               now); /* a full queue: the state counts what it drops */
		}
		(void)b->tick(sub->filter, now, false, &sub->has_pending);
		sub->cursor = b->position(sub->filter);
	}
	for (size_t k = first; k < hub->live_n && b == NULL; k += step) {
		struct stream_sub *sub = hub->live[k];
		for (size_t i = 0; i < p->n && sub->state == SUB_LIVE; i++) {
			const struct page_item *it = &p->items[i];
			if (it->seq <= sub->cursor)
				continue;
			if (it->data == NULL || kind->matches(sub->filter, it->data)) {
				int rc = rpc_stream_send_packed(sub->stream, it->packed);
				if (rc == MON_ELIMIT) {
					sub->state = SUB_ENDING; /* leaves the array at the next compaction */
					break;
				}
				if (rc != 0)
					break; /* ending: its close callback marks it */
				sub->last_send_ms = now;
			}
			sub->cursor = it->seq;
		}
	}
}

static void *fan_main(void *arg)
{
	struct stream_hub *hub = arg;
	pthread_mutex_lock(&hub->fan_mu);
	for (;;) {
		while (!hub->fan_has_job && !hub->fan_stop)
			pthread_cond_wait(&hub->fan_cond, &hub->fan_mu);
		if (hub->fan_stop)
			break;
		hub->fan_has_job = false;
		const struct page *p = hub->fan_page;
		int64_t now = hub->fan_now;
		pthread_mutex_unlock(&hub->fan_mu);
		fan_page(hub, p, 1, 2, now);
		pthread_mutex_lock(&hub->fan_mu);
		hub->fan_done = true;
		pthread_cond_broadcast(&hub->fan_cond);
	}
	pthread_mutex_unlock(&hub->fan_mu);
	return NULL;
}

static void dispatch(struct stream_hub *hub, const struct page *p)
{
	int64_t now = mon_now_ms();
	if (hub->live_n >= FAN_SPLIT_MIN && hub->has_fan_thread) {
		pthread_mutex_lock(&hub->fan_mu);
		hub->fan_page = p;
		hub->fan_now = now;
		hub->fan_done = false;
		hub->fan_has_job = true;
		pthread_cond_broadcast(&hub->fan_cond);
		pthread_mutex_unlock(&hub->fan_mu);
		fan_page(hub, p, 0, 2, now);
		pthread_mutex_lock(&hub->fan_mu);
		while (!hub->fan_done)
			pthread_cond_wait(&hub->fan_cond, &hub->fan_mu);
		pthread_mutex_unlock(&hub->fan_mu);
	} else {
		fan_page(hub, p, 0, 1, now);
	}
	if (p->end_cursor > hub->last_seen)
		hub->last_seen = p->end_cursor;
}

/* Drops closed subscribers from the live array and hands those that fell behind to the catch-up thread. */
static void compact(struct stream_hub *hub)
{
	size_t k = 0;
	hub->has_pending = false;
	for (size_t i = 0; i < hub->live_n; i++) {
		struct stream_sub *sub = hub->live[i];
		if (atomic_load(&sub->is_closed)) {
			sub_unref(sub);
		} else if (sub->state == SUB_ENDING) {
			log_info("msg=\"%s watch subscriber fell behind\" resume_after_sequence=%" PRId64
			         " peer=\"%s\"",
			         hub->kind->name, sub->cursor, rpc_ctx_peer(rpc_stream_ctx(sub->stream)));
			job_push(hub, sub);
		} else {
			hub->has_pending |= sub->has_pending;
			hub->live[k++] = sub;
		}
	}
	hub->live_n = k;
}

/* Takes the inbox's subscribers live, or back to the catch-up when the hub is past their cursor. */
static void admit(struct stream_hub *hub, struct stream_sub *list)
{
	int64_t now = mon_now_ms();
	while (list != NULL) {
		struct stream_sub *sub = list;
		list = sub->qnext;
		sub->qnext = NULL;
		if (atomic_load(&sub->is_closed)) {
			sub_unref(sub);
			continue;
		}
		if (hub->live_n == 0 && hub->last_seen < 0)
			hub->last_seen = sub->cursor;
		if (sub->cursor < hub->last_seen) {
			sub->bounce_seen = hub->last_seen;
			sub->state = SUB_BACKLOG;
			job_push(hub, sub);
			continue;
		}
		if (hub->live_n == hub->live_cap) {
			size_t cap = hub->live_cap ? hub->live_cap * 2 : 256;
			struct stream_sub **l = realloc(hub->live, cap * sizeof(*l));
			if (l == NULL) {
				sub->state = SUB_BACKLOG; /* out of memory: tried again after a read */
				job_push(hub, sub);
				continue;
			}
			hub->live = l;
			hub->live_cap = cap;
		}
		sub->state = SUB_LIVE;
		sub->last_send_ms = now;
		sub->has_pending = hub->kind->batching != NULL;
		hub->has_pending |= sub->has_pending;
		hub->live[hub->live_n++] = sub;
	}
}

/* Reads every event after last_seen and dispatches it, page by page. */
static void hub_read(struct stream_hub *hub)
{
	int64_t start = mon_now_ms();
	while (hub->live_n > 0) {
		if (mon_now_ms() - start >= HUB_READ_SLICE_MS) {
			/* A steady stream of events must not hold off the timers: tick, then come back. */
			pthread_mutex_lock(&hub->mu);
			hub->is_woken = true;
			pthread_mutex_unlock(&hub->mu);
			return;
		}
		struct mon_error err = {0};
		struct page *p = NULL;
		if (page_read(hub, hub->last_seen, &p, &err) != 0) {
			if (!hub->is_failing)
				log_warn("msg=\"%s watch could not read events, retrying every second\" error=\"%s\"",
				         hub->kind->name, err.msg);
			hub->is_failing = true;
			return;
		}
		if (hub->is_failing)
			log_info("msg=\"%s watch reads events again\"", hub->kind->name);
		hub->is_failing = false;
		if (p->n > 0)
			dispatch(hub, p);
		bool is_full = p->is_full;
		page_release(p);
		compact(hub);
		if (!is_full)
			return;
	}
}

/* Heartbeats for live subscribers silent past their interval (batching kinds: their timers). */
static void heartbeats(struct stream_hub *hub, int64_t now)
{
	const struct stream_batching *b = hub->kind->batching;
	for (size_t i = 0; i < hub->live_n && b != NULL; i++) {
		struct stream_sub *sub = hub->live[i];
		if (!atomic_load(&sub->is_closed)) {
			(void)b->tick(sub->filter, now, false, &sub->has_pending);
			sub->cursor = b->position(sub->filter);
		}
	}
	for (size_t i = 0; i < hub->live_n && b == NULL; i++) {
		struct stream_sub *sub = hub->live[i];
		if (sub->state != SUB_LIVE || now - sub->last_send_ms < sub->heartbeat_ms ||
		    atomic_load(&sub->is_closed))
			continue;
		int rc = send_control(sub, MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_HEARTBEAT,
		                      sub->cursor, 0, NULL);
		if (rc == MON_ELIMIT)
			sub->state = SUB_ENDING;
		else if (rc == 0)
			sub->last_send_ms = now;
	}
	compact(hub);
}

static void *hub_main(void *arg)
{
	struct stream_hub *hub = arg;
	pthread_mutex_lock(&hub->mu);
	while (!hub->should_stop) {
		if (!hub->is_woken && !(hub->is_draining && !hub->is_hub_acked)) {
			int64_t wait_ms = hub->has_pending ? HUB_BATCH_TICK_MS : HUB_TICK_MS;
			struct timespec ts;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += (time_t)(wait_ms / 1000);
			ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&hub->hub_cond, &hub->mu, &ts);
			if (hub->should_stop)
				break;
		}
		hub->is_woken = false;
		struct stream_sub *inbox = hub->inbox;
		hub->inbox = hub->inbox_tail = NULL;
		bool is_draining = hub->is_draining;
		pthread_mutex_unlock(&hub->mu);

		if (is_draining) {
			/* Every live subscriber and every one handed over from now on: where to resume. */
			for (size_t i = 0; i < hub->live_n; i++) {
				end_for_shutdown(hub->live[i]);
				sub_unref(hub->live[i]);
			}
			hub->live_n = 0;
			while (inbox != NULL) {
				struct stream_sub *sub = inbox;
				inbox = sub->qnext;
				end_for_shutdown(sub);
				sub_unref(sub);
			}
			pthread_mutex_lock(&hub->mu);
			hub->is_hub_acked = true;
			pthread_cond_broadcast(&hub->ack_cond);
			continue;
		}
		admit(hub, inbox);
		hub_read(hub);
		int64_t now = mon_now_ms();
		if (now - hub->last_tick_ms >= (hub->has_pending ? HUB_BATCH_TICK_MS : HUB_TICK_MS)) {
			hub->last_tick_ms = now;
			heartbeats(hub, now);
		}
		if (hub->live_n == 0)
			hub->last_seen = -1; /* nobody to serve: the next subscriber sets it */
		pthread_mutex_lock(&hub->mu);
	}
	pthread_mutex_unlock(&hub->mu);
	return NULL;
}

/* Bus thread: must not block, so it only wakes the hub thread. */
static void on_notify(const char *channel, const char *payload, void *arg)
{
	(void)channel;
	(void)payload;
	struct stream_hub *hub = arg;
	pthread_mutex_lock(&hub->mu);
	hub->is_woken = true;
	pthread_cond_signal(&hub->hub_cond);
	pthread_mutex_unlock(&hub->mu);
}

/* ---- the hub ---- */

int stream_hub_create(const struct stream_kind *kind, struct db_pool *pool, struct db_bus *bus, struct stream_hub **out,
                      struct mon_error *err)
{
	*out = NULL;
	struct stream_hub *hub = calloc(1, sizeof(*hub));
	if (hub == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory creating the %s watch", kind->name);
	hub->kind = kind;
	hub->pool = pool;
	hub->last_seen = -1;
	atomic_init(&hub->subs_n, 0);
	pthread_mutex_init(&hub->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&hub->hub_cond, &ca);
	pthread_cond_init(&hub->ack_cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&hub->job_cond, NULL);
	pthread_mutex_init(&hub->fan_mu, NULL);
	pthread_cond_init(&hub->fan_cond, NULL);

	int rc = db_bus_subscribe(bus, kind->channel, on_notify, hub, err);
	if (rc != 0) {
		stream_hub_destroy(hub);
		return rc;
	}
	if (pthread_create(&hub->thread, NULL, hub_main, hub) != 0) {
		stream_hub_destroy(hub);
		return mon_error_set(err, MON_ENOMEM, "could not start the %s watch thread", kind->name);
	}
	hub->has_thread = true;
	if (pthread_create(&hub->catchup_thread, NULL, catchup_main, hub) != 0) {
		stream_hub_destroy(hub);
		return mon_error_set(err, MON_ENOMEM, "could not start the %s watch catch-up thread", kind->name);
	}
	hub->has_catchup_thread = true;
	/* Without the second sender the hub still works, sending alone. */
	hub->has_fan_thread = pthread_create(&hub->fan_thread, NULL, fan_main, hub) == 0;
	*out = hub;
	return 0;
}

void stream_hub_drain(void *arg)
{
	struct stream_hub *hub = arg;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += HUB_DRAIN_WAIT_MS / 1000;
	pthread_mutex_lock(&hub->mu);
	hub->is_draining = true;
	hub->is_woken = true;
	pthread_cond_signal(&hub->hub_cond);
	pthread_cond_signal(&hub->job_cond);
	while ((hub->has_thread && !hub->is_hub_acked) || (hub->has_catchup_thread && !hub->is_jobs_acked))
		if (pthread_cond_timedwait(&hub->ack_cond, &hub->mu, &ts) != 0)
			break;
	pthread_mutex_unlock(&hub->mu);
}

static void drop_queue(struct stream_sub *list)
{
	while (list != NULL) {
		struct stream_sub *sub = list;
		list = sub->qnext;
		sub_unref(sub);
	}
}

void stream_hub_destroy(struct stream_hub *hub)
{
	if (hub == NULL)
		return;
	pthread_mutex_lock(&hub->mu);
	hub->should_stop = true;
	pthread_cond_broadcast(&hub->hub_cond);
	pthread_cond_broadcast(&hub->job_cond);
	pthread_mutex_unlock(&hub->mu);
	if (hub->has_thread)
		pthread_join(hub->thread, NULL);
	if (hub->has_catchup_thread)
		pthread_join(hub->catchup_thread, NULL);
	if (hub->has_fan_thread) {
		pthread_mutex_lock(&hub->fan_mu);
		hub->fan_stop = true;
		pthread_cond_broadcast(&hub->fan_cond);
		pthread_mutex_unlock(&hub->fan_mu);
		pthread_join(hub->fan_thread, NULL);
	}
	/* The server is gone: every stream is closed, every writable callback has run. */
	for (size_t i = 0; i < hub->live_n; i++)
		sub_unref(hub->live[i]);
	drop_queue(hub->inbox);
	drop_queue(hub->jobs);
	free(hub->live);
	page_release(hub->cache);
	if (atomic_load(&hub->subs_n) != 0)
		log_error("msg=\"%s watch destroyed with subscribers left\" count=%zu", hub->kind->name,
		          atomic_load(&hub->subs_n));
	pthread_cond_destroy(&hub->hub_cond);
	pthread_cond_destroy(&hub->job_cond);
	pthread_cond_destroy(&hub->ack_cond);
	pthread_mutex_destroy(&hub->mu);
	pthread_cond_destroy(&hub->fan_cond);
	pthread_mutex_destroy(&hub->fan_mu);
	free(hub);
}

int stream_open(struct stream_hub *hub, struct rpc_stream *stream, void *filter, int64_t heartbeat_ms,
                int64_t resume_after, struct mon_error *err)
{
	pthread_mutex_lock(&hub->mu);
	bool is_draining = hub->is_draining;
	pthread_mutex_unlock(&hub->mu);
	if (is_draining) {
		hub->kind->filter_free(filter);
		return mon_error_set(err, MON_EUNAVAIL, "server is shutting down; retry on another server");
	}
	if (atomic_fetch_add(&hub->subs_n, 1) >= hub->kind->subs_max) {
		atomic_fetch_sub(&hub->subs_n, 1);
		hub->kind->filter_free(filter);
		return mon_error_set(err, MON_ELIMIT,
		                     "subscribers: at most %zu %s watch streams per server; retry later",
		                     hub->kind->subs_max, hub->kind->name);
	}
	struct stream_sub *sub = calloc(1, sizeof(*sub));
	if (sub == NULL) {
		atomic_fetch_sub(&hub->subs_n, 1);
		hub->kind->filter_free(filter);
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	}
	sub->hub = hub;
	sub->stream = stream;
	sub->filter = filter;
	sub->heartbeat_ms = heartbeat_ms;
	sub->resume_after = resume_after;
	sub->state = SUB_START;
	atomic_init(&sub->refs, 2); /* the close callback's and the owner's */
	atomic_init(&sub->is_closed, false);
	rpc_stream_retain(stream);
	rpc_stream_on_close(stream, on_stream_close, sub); /* may run at once if the caller already left */
	job_push(hub, sub);
	return 0;
}

int stream_watch(struct stream_hub *hub, struct rpc_ctx *ctx, struct rpc_stream *stream, void *filter,
                 int64_t resume_after, int32_t heartbeat_s)
{
	if (resume_after < 0 || heartbeat_s < 0) {
		hub->kind->filter_free(filter);
		return rpc_fail(ctx, MON_EINVAL, "%s: must not be negative",
		                resume_after < 0 ? "resume_after_sequence" : "heartbeat_interval");
	}
	return stream_open(hub, stream, filter, stream_heartbeat_ms(heartbeat_s, 30, 5), resume_after,
	                   rpc_ctx_error(ctx)); /* on failure the message is in the call's error slot */
}

int stream_enum_mask(struct rpc_ctx *ctx, const char *field, const int *values, size_t n, int max, const char *allowed,
                     unsigned *mask)
{
	for (size_t i = 0; i < n; i++) {
		if (values[i] < 1 || values[i] > max || values[i] > 31)
			return rpc_fail(ctx, MON_EINVAL, "%s[%zu]: must be %s", field, i, allowed);
		*mask |= 1u << values[i];
	}
	return 0;
}
