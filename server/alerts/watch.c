/*
 * WatchAlerts: the per-process hub and the handler.
 *
 * The hub owns a list of subscribers (a small struct each, holding a
 * reference on its stream) and one thread. The bus callback on "mon_alerts"
 * only wakes that thread; the thread reads the rows of tb_alert_event after
 * the last sequence it dispatched, in sequence order, and offers each to
 * every ready subscriber with the non-blocking rpc_stream_send_packed (the
 * event is packed once). It also reads on a one-second tick while anyone
 * listens, which catches up after the bus lost its connection
 * (notifications sent meanwhile are gone) and sends heartbeats.
 *
 * A new stream is registered (not ready) first, then the handler sends the
 * snapshot or the backlog from the table on its worker thread, and then,
 * under the hub lock, marks it ready at the sequence it reached, but only
 * once the hub has not dispatched past that sequence (otherwise it reads
 * the difference from the table again). From then on the hub sends it
 * every event above that sequence: no gap, no duplicate, because sequence
 * order is commit order (mon_alert_event_append holds the change-log lock
 * to commit). The snapshot and its cursor come from one REPEATABLE READ
 * transaction, so the snapshot reflects exactly the changes up to it.
 *
 * A subscriber whose queue is full is not sent anything more: it gets
 * RESUME_REQUIRED (FELL_BEHIND) with the last sequence it was given, as
 * soon as its queue has room for it, then RESOURCE_EXHAUSTED.
 *
 * At server shutdown alerts_watch_hub_drain stops the fan-out for good and
 * gives every subscriber RESUME_REQUIRED (SERVER_SHUTDOWN) with its cursor
 * behind what is already queued to it (all of it is still delivered), then
 * UNAVAILABLE; a stream handed over later gets the same at once.
 */
#include "alerts/watch.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alerts/store.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "monitoring/v1/common.pb-c.h"
#include "util/arena.h"
#include "util/log.h"

#define WATCH_IDS_MAX 1000          /* alert_rule_ids per request */
#define WATCH_SUBS_MAX 20000        /* subscribers per process */
#define WATCH_BATCH_ROWS 1000       /* events read per query */
#define WATCH_TICK_MS 1000          /* catch-up read and heartbeat check while anyone listens */
#define WATCH_ENDING_TICK_MS 100    /* retry of a pending RESUME_REQUIRED */
#define WATCH_ACQUIRE_MS 2000       /* waiting for a pooled connection */
#define WATCH_CATCHUP_STALL_MS 5000 /* a catch-up send waits this long for queue room */
#define WATCH_HEARTBEAT_DEFAULT_S 30
#define WATCH_HEARTBEAT_MIN_S 5
#define WATCH_BATCH_ARENA_BYTES (64u * 1024 * 1024)
#define WATCH_ROW_ARENA_BYTES (16u * 1024 * 1024) /* one snapshot alert */

typedef Monitoring__V1__WatchAlertsResponse watch_msg;

/*
 * One stream. Kept small (about 100 bytes and the filter's rule ids): an
 * idle subscriber costs this and the runtime's stream, nothing more.
 */
struct watch_sub {
	struct alerts_watch_hub *hub;
	struct rpc_stream *stream;
	char **rule_ids; /* the alert_rule_ids filter, owned; rule_ids_n == 0 matches all */
	uint32_t rule_ids_n;
	uint32_t heartbeat_ms;
	uint8_t status_mask;   /* bit per AlertStatus; 0 matches all */
	uint8_t severity_mask; /* bit per SeverityLevel; 0 matches all */
	bool is_excluding_updates;

	/* Under hub->mu. */
	bool is_linked;
	bool is_ready;  /* the hub sends it live events */
	bool is_ending; /* fell behind: RESUME_REQUIRED pending, nothing else is sent */
	int refs;       /* the handler's and the stream's (dropped by on_stream_close) */
	struct watch_sub *prev, *next;
	int64_t last_seq; /* last sequence delivered or skipped as filtered: the resume cursor */
	int64_t last_send_ms;
};

struct alerts_watch_hub {
	struct db_pool *pool;
	pthread_t thread;
	bool has_thread;
	bool is_failing; /* hub thread only: the last read failed (logged once per outage) */

	pthread_mutex_t mu; /* guards everything below and the subscribers' shared fields */
	pthread_cond_t cond;
	bool is_woken;
	bool should_stop;
	bool is_draining; /* server shutdown: nobody is made ready or sent anything more */
	struct watch_sub *subs;
	size_t subs_n;
	size_t ready_n;
	size_t ending_n;
	int64_t last_seen; /* last sequence dispatched; -1 while nobody is ready */

	/*
	 * Fan-out of one event: the targets, and a second thread that sends to
	 * the odd-numbered ones while the hub thread sends to the even ones
	 * (as the health watch does: both threads write on every connection).
	 */
	struct watch_sub **targets;
	int *results;
	size_t targets_cap;
	pthread_t fan_thread;
	bool has_fan_thread;
	pthread_mutex_t fan_mu;
	pthread_cond_t fan_cond;
	bool fan_has_job, fan_done, fan_stop;
	size_t fan_n;
	struct rpc_packed *fan_packed;
};

/* Below this many targets one thread sends them all. */
#define FAN_SPLIT_MIN 64

/* The process's hub: the handler has no other way to find it. */
static _Atomic(struct alerts_watch_hub *) the_hub;

static const struct db_stmt events_stmt = {
        .name = "alerts_watch_events",
        .sql = "SELECT seq, alert_id, alert_rule_id, kind, status::text, previous_status::text, severity::text,"
               " actor, (extract(epoch FROM changed_at) * 1000)::bigint, encode(payload, 'hex')"
               " FROM tb_alert_event WHERE seq > $1::bigint ORDER BY seq LIMIT 1000",
        .param_count = 1,
};

/*
 * The retained log and the last sequence handed out (rolled back or not):
 * a cursor above the latter is not from this database.
 */
static const struct db_stmt bounds_stmt = {
        .name = "alerts_watch_bounds",
        .sql = "SELECT coalesce(min(seq), 0), coalesce(max(seq), 0),"
               " (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM seq_alert_event)"
               " FROM tb_alert_event",
        .param_count = 0,
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t parse_i64(const char *text)
{
	char *end = NULL;
	errno = 0;
	long long v = strtoll(text, &end, 10);
	if (errno != 0 || end == text)
		return 0;
	return (int64_t)v;
}

static Google__Protobuf__Timestamp *timestamp_from_ms(struct arena *a, int64_t ms)
{
	Google__Protobuf__Timestamp *t = arena_alloc(a, sizeof(*t));
	if (t == NULL)
		return NULL;
	google__protobuf__timestamp__init(t);
	int64_t s = ms / 1000, rem = ms % 1000;
	if (rem < 0) {
		s--;
		rem += 1000;
	}
	t->seconds = s;
	t->nanos = (int32_t)(rem * 1000000);
	return t;
}

static Google__Protobuf__Timestamp *timestamp_now(struct arena *a)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return timestamp_from_ms(a, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* A control message in the arena; NULL past its cap. */
static watch_msg *control_msg(struct arena *a, int kind, int64_t cursor, int reason, const char *message)
{
	watch_msg *m = arena_alloc(a, sizeof(*m));
	Monitoring__V1__StreamControl *c = arena_alloc(a, sizeof(*c));
	if (m == NULL || c == NULL)
		return NULL;
	monitoring__v1__watch_alerts_response__init(m);
	monitoring__v1__stream_control__init(c);
	c->kind = kind;
	c->resume_after_sequence = cursor;
	c->reason = reason;
	c->message = arena_strdup(a, message ? message : "");
	c->server_time = timestamp_now(a);
	if (c->message == NULL || c->server_time == NULL)
		return NULL;
	m->sequence = cursor;
	m->event_case = MONITORING__V1__WATCH_ALERTS_RESPONSE__EVENT_CONTROL;
	m->control = c;
	return m;
}

/* ---- events ---- */

struct watch_event {
	int64_t seq;
	const char *rule_id;
	uint8_t status, previous_status, severity; /* AlertStatus, AlertStatus, SeverityLevel */
	bool is_update;
	watch_msg *msg;
};

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes hex text into bytes in the arena; false when malformed or past the cap. */
static bool hex_decode(struct arena *a, const char *hex, uint8_t **out, size_t *len_out)
{
	size_t n = strlen(hex);
	if (n % 2 != 0)
		return false;
	uint8_t *buf = arena_alloc(a, n / 2 + 1);
	if (buf == NULL)
		return false;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		buf[i] = (uint8_t)(hi << 4 | lo);
	}
	*out = buf;
	*len_out = n / 2;
	return true;
}

static Monitoring__V1__AlertChangeKind kind_from_text(const char *text)
{
	if (strcmp(text, "created") == 0)
		return MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_CREATED;
	if (strcmp(text, "status-changed") == 0)
		return MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_STATUS_CHANGED;
	if (strcmp(text, "updated") == 0)
		return MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_UPDATED;
	if (strcmp(text, "deleted") == 0)
		return MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_DELETED;
	return MONITORING__V1__ALERT_CHANGE_KIND__ALERT_CHANGE_KIND_UNSPECIFIED;
}

/*
 * The change of row i: its stored payload, or, when that does not decode
 * (a writer bug), what the row's columns say, so the sequence is still
 * delivered. NULL past the arena's cap.
 */
static Monitoring__V1__AlertChange *change_from_row(struct arena *a, const struct db_result *res, int i, int64_t seq,
                                                    const struct watch_event *ev)
{
	uint8_t *bytes = NULL;
	size_t len = 0;
	Monitoring__V1__AlertChange *ch = NULL;
	if (hex_decode(a, db_result_value(res, i, 9), &bytes, &len)) {
		ProtobufCAllocator alloc = arena_protobuf_allocator(a);
		ch = monitoring__v1__alert_change__unpack(&alloc, len, bytes);
	}
	if (ch == NULL) {
		log_error("msg=\"alerts watch: undecodable payload, sending the change's columns\" seq=%" PRId64, seq);
		ch = arena_alloc(a, sizeof(*ch));
		if (ch == NULL)
			return NULL;
		monitoring__v1__alert_change__init(ch);
		ch->kind = kind_from_text(db_result_value(res, i, 3));
		ch->previous_status = ev->previous_status;
		ch->actor = arena_strdup(a, db_result_value(res, i, 7));
		ch->changed_at = timestamp_from_ms(a, parse_i64(db_result_value(res, i, 8)));
		if (ch->actor == NULL || ch->changed_at == NULL)
			return NULL;
	}
	if (ch->alert == NULL) {
		ch->alert = arena_alloc(a, sizeof(*ch->alert));
		if (ch->alert == NULL)
			return NULL;
		monitoring__v1__alert__init(ch->alert);
		ch->alert->id = arena_strdup(a, db_result_value(res, i, 1));
		ch->alert->alert_rule_id = arena_strdup(a, ev->rule_id);
		ch->alert->status = ev->status;
		ch->alert->severity = ev->severity;
		if (ch->alert->id == NULL || ch->alert->alert_rule_id == NULL)
			return NULL;
	}
	ch->alert->sequence = seq; /* stored as 0: the sequence is only known at append */
	return ch;
}

/*
 * Decodes the rows of events_stmt into n events and their messages, all in
 * a (strings are copied, so the result may be freed). MON_ENOMEM past the
 * arena's cap.
 */
static int events_decode(const struct db_result *res, struct arena *a, struct watch_event **out, int *n_out)
{
	int n = db_result_rows(res);
	struct watch_event *ev = arena_calloc(a, n > 0 ? (size_t)n : 1, sizeof(*ev));
	if (ev == NULL)
		return MON_ENOMEM;
	for (int i = 0; i < n; i++) {
		ev[i].seq = parse_i64(db_result_value(res, i, 0));
		ev[i].rule_id = arena_strdup(a, db_result_value(res, i, 2));
		ev[i].is_update = strcmp(db_result_value(res, i, 3), "updated") == 0;
		ev[i].status = (uint8_t)alerts_status_from_label(db_result_value(res, i, 4));
		ev[i].previous_status = db_result_is_null(res, i, 5)
		                                ? 0
		                                : (uint8_t)alerts_status_from_label(db_result_value(res, i, 5));
		ev[i].severity = (uint8_t)alerts_severity_from_label(db_result_value(res, i, 6));
		watch_msg *m = arena_alloc(a, sizeof(*m));
		if (ev[i].rule_id == NULL || m == NULL)
			return MON_ENOMEM;
		monitoring__v1__watch_alerts_response__init(m);
		m->change = change_from_row(a, res, i, ev[i].seq, &ev[i]);
		if (m->change == NULL)
			return MON_ENOMEM;
		m->sequence = ev[i].seq;
		m->event_case = MONITORING__V1__WATCH_ALERTS_RESPONSE__EVENT_CHANGE;
		ev[i].msg = m;
	}
	*out = ev;
	*n_out = n;
	return 0;
}

/* Reads up to WATCH_BATCH_ROWS events after seq; the caller frees *out. */
static int events_read(struct db_conn *conn, int64_t after, struct db_result **out, struct mon_error *err)
{
	char after_text[24];
	snprintf(after_text, sizeof(after_text), "%" PRId64, after);
	const char *params[1] = {after_text};
	return db_exec_stmt(conn, &events_stmt, params, out, err);
}

static bool mask_has(unsigned mask, unsigned value)
{
	return value < 8 && (mask & (1u << value)) != 0;
}

static bool rule_matches(const struct watch_sub *sub, const char *rule_id)
{
	if (sub->rule_ids_n == 0)
		return true;
	for (uint32_t i = 0; i < sub->rule_ids_n; i++)
		if (strcmp(sub->rule_ids[i], rule_id) == 0)
			return true;
	return false;
}

/*
 * Whether sub sees ev: its rule and severity match, and its status filter
 * holds the new or the previous status (an alert leaving the filtered set
 * is shown leaving).
 */
static bool event_matches(const struct watch_sub *sub, const struct watch_event *ev)
{
	if (ev->is_update && sub->is_excluding_updates)
		return false;
	if (sub->severity_mask != 0 && !mask_has(sub->severity_mask, ev->severity))
		return false;
	if (sub->status_mask != 0 && !mask_has(sub->status_mask, ev->status) &&
	    !mask_has(sub->status_mask, ev->previous_status))
		return false;
	return rule_matches(sub, ev->rule_id);
}

/* ---- subscribers ---- */

static void sub_free(struct watch_sub *sub)
{
	if (sub == NULL)
		return;
	for (uint32_t i = 0; i < sub->rule_ids_n; i++)
		free(sub->rule_ids[i]);
	free(sub->rule_ids);
	free(sub);
}

/* Drops one reference; the last frees the subscriber. Takes hub->mu. */
static void sub_unref(struct watch_sub *sub)
{
	struct alerts_watch_hub *hub = sub->hub;
	pthread_mutex_lock(&hub->mu);
	bool is_last = --sub->refs == 0;
	pthread_mutex_unlock(&hub->mu);
	if (is_last)
		sub_free(sub);
}

static void unlink_locked(struct alerts_watch_hub *hub, struct watch_sub *sub)
{
	if (!sub->is_linked)
		return;
	if (sub->prev)
		sub->prev->next = sub->next;
	else
		hub->subs = sub->next;
	if (sub->next)
		sub->next->prev = sub->prev;
	sub->prev = sub->next = NULL;
	sub->is_linked = false;
	hub->subs_n--;
	if (sub->is_ready)
		hub->ready_n--;
	if (sub->is_ending)
		hub->ending_n--;
	sub->is_ready = false;
	sub->is_ending = false;
}

/* The stream is over (any reason): forget the subscriber. Runs on a completion-queue thread. */
static void on_stream_close(struct rpc_stream *stream, void *arg)
{
	struct watch_sub *sub = arg;
	pthread_mutex_lock(&sub->hub->mu);
	unlink_locked(sub->hub, sub);
	pthread_mutex_unlock(&sub->hub->mu);
	rpc_stream_release(stream);
	sub_unref(sub);
}

/*
 * Tries to queue RESUME_REQUIRED (FELL_BEHIND) for an ending subscriber and,
 * once it is queued, ends the stream with RESOURCE_EXHAUSTED. Under hub->mu.
 */
static void try_end_locked(struct alerts_watch_hub *hub, struct watch_sub *sub)
{
	char text[160];
	snprintf(text, sizeof(text), "fell behind: stream queue full; resume with resume_after_sequence %" PRId64,
	         sub->last_seq);
	struct arena *a = arena_create(4096);
	watch_msg *m =
	        a ? control_msg(a, MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_RESUME_REQUIRED,
	                        sub->last_seq, MONITORING__V1__STREAM_END_REASON__STREAM_END_REASON_FELL_BEHIND, text)
	          : NULL;
	int rc = m ? rpc_stream_send(sub->stream, &m->base) : MON_ENOMEM;
	arena_destroy(a);
	if (rc == MON_ELIMIT)
		return; /* still full: retried on the next tick */
	rpc_stream_finish(sub->stream, MON_ELIMIT, text);
	sub->is_ending = false;
	hub->ending_n--;
	sub->is_ready = false;
	hub->ready_n--;
}

/*
 * Server shutdown: queues RESUME_REQUIRED (SERVER_SHUTDOWN) with cursor, the
 * last sequence queued to sub or skipped as filtered, and ends the stream
 * with UNAVAILABLE once what is queued is sent. When the queue has no room
 * for the control the stream is left to the server, which drops its queue
 * and ends it at once (a client that stopped reading must not hold up the
 * shutdown): the client resumes after the last sequence it got. Under
 * hub->mu.
 */
static void end_for_shutdown_locked(struct alerts_watch_hub *hub, struct watch_sub *sub, int64_t cursor)
{
	static const char text[] = "server is shutting down; resume from the cursor";
	struct arena *a = arena_create(4096);
	watch_msg *m =
	        a ? control_msg(a, MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_RESUME_REQUIRED, cursor,
	                        MONITORING__V1__STREAM_END_REASON__STREAM_END_REASON_SERVER_SHUTDOWN, text)
	          : NULL;
	if (m != NULL && rpc_stream_send(sub->stream, &m->base) == 0)
		rpc_stream_finish(sub->stream, MON_EUNAVAIL, text);
	else
		log_debug("msg=\"alerts watch: no room for the shutdown notice; the server ends the stream\"");
	arena_destroy(a);
	if (sub->is_ready)
		hub->ready_n--;
	if (sub->is_ending)
		hub->ending_n--;
	sub->is_ready = false;
	sub->is_ending = false;
}

void alerts_watch_hub_drain(void *arg)
{
	struct alerts_watch_hub *hub = arg;
	pthread_mutex_lock(&hub->mu);
	hub->is_draining = true;
	for (struct watch_sub *sub = hub->subs; sub; sub = sub->next)
		if (sub->is_ready || sub->is_ending)
			end_for_shutdown_locked(hub, sub, sub->last_seq);
	pthread_mutex_unlock(&hub->mu);
}

static void fall_behind_locked(struct alerts_watch_hub *hub, struct watch_sub *sub)
{
	log_info("msg=\"alerts watch subscriber fell behind\" resume_after_sequence=%" PRId64 " peer=\"%s\"",
	         sub->last_seq, rpc_ctx_peer(rpc_stream_ctx(sub->stream)));
	sub->is_ending = true;
	hub->ending_n++;
	try_end_locked(hub, sub);
}

/*
 * Sends packed to targets first, first + step, ... below n, recording each
 * result. No lock needed: streams are thread-safe.
 */
static void fan_send(struct alerts_watch_hub *hub, struct rpc_packed *packed, size_t first, size_t step, size_t n)
{
	for (size_t i = first; i < n; i += step)
		hub->results[i] = rpc_stream_send_packed(hub->targets[i]->stream, packed);
}

static void *fan_main(void *arg)
{
	struct alerts_watch_hub *hub = arg;
	pthread_mutex_lock(&hub->fan_mu);
	for (;;) {
		while (!hub->fan_has_job && !hub->fan_stop)
			pthread_cond_wait(&hub->fan_cond, &hub->fan_mu);
		if (hub->fan_stop)
			break;
		hub->fan_has_job = false;
		size_t n = hub->fan_n;
		struct rpc_packed *packed = hub->fan_packed;
		pthread_mutex_unlock(&hub->fan_mu);
		fan_send(hub, packed, 1, 2, n);
		pthread_mutex_lock(&hub->fan_mu);
		hub->fan_done = true;
		pthread_cond_broadcast(&hub->fan_cond);
	}
	pthread_mutex_unlock(&hub->fan_mu);
	return NULL;
}

/*
 * Offers ev to every ready subscriber that has not had it. Under hub->mu,
 * which keeps every target's stream alive until the sends are done (close
 * callbacks take it before releasing their stream).
 */
static void dispatch_locked(struct alerts_watch_hub *hub, const struct watch_event *ev, int64_t now)
{
	size_t n = 0;
	for (struct watch_sub *sub = hub->subs; sub; sub = sub->next) {
		if (!sub->is_ready || sub->is_ending || ev->seq <= sub->last_seq)
			continue;
		if (!event_matches(sub, ev)) {
			sub->last_seq = ev->seq;
			continue;
		}
		if (n == hub->targets_cap) {
			size_t cap = hub->targets_cap ? hub->targets_cap * 2 : 256;
			struct watch_sub **t = realloc(hub->targets, cap * sizeof(*t));
			if (t != NULL)
				hub->targets = t;
			int *r = realloc(hub->results, cap * sizeof(*r));
			if (r != NULL)
				hub->results = r;
			if (t == NULL || r == NULL)
				break; /* the rest get it on the next read: last_seq is unchanged */
			hub->targets_cap = cap;
		}
		hub->targets[n++] = sub;
	}
	struct rpc_packed *packed = NULL; /* serialised once, for every subscriber */
	if (n > 0 && rpc_packed_create(&ev->msg->base, &packed) != 0) {
		/* Out of memory: the targets cannot have this change, so they resume before it. */
		log_error("msg=\"alerts watch: could not pack change\" seq=%" PRId64, ev->seq);
		for (size_t i = 0; i < n; i++)
			fall_behind_locked(hub, hub->targets[i]);
		n = 0;
	}
	if (n >= FAN_SPLIT_MIN && hub->has_fan_thread) {
		pthread_mutex_lock(&hub->fan_mu);
		hub->fan_n = n;
		hub->fan_packed = packed;
		hub->fan_done = false;
		hub->fan_has_job = true;
		pthread_cond_broadcast(&hub->fan_cond);
		pthread_mutex_unlock(&hub->fan_mu);
		fan_send(hub, packed, 0, 2, n);
		pthread_mutex_lock(&hub->fan_mu);
		while (!hub->fan_done)
			pthread_cond_wait(&hub->fan_cond, &hub->fan_mu);
		pthread_mutex_unlock(&hub->fan_mu);
	} else if (n > 0) {
		fan_send(hub, packed, 0, 1, n);
	}
	for (size_t i = 0; i < n; i++) {
		struct watch_sub *sub = hub->targets[i];
		int rc = hub->results[i];
		if (rc == MON_ELIMIT) {
			fall_behind_locked(hub, sub);
			continue;
		}
		if (rc != 0)
			continue; /* ending: on_stream_close unlinks it */
		sub->last_send_ms = now;
		sub->last_seq = ev->seq;
	}
	rpc_packed_release(packed);
	if (ev->seq > hub->last_seen)
		hub->last_seen = ev->seq;
}

/* Heartbeats for subscribers idle past their interval, and pending ends. Under hub->mu. */
static void tick_locked(struct alerts_watch_hub *hub, int64_t now)
{
	struct arena *a = NULL;
	for (struct watch_sub *sub = hub->subs; sub; sub = sub->next) {
		if (sub->is_ending) {
			try_end_locked(hub, sub);
			continue;
		}
		if (!sub->is_ready || now - sub->last_send_ms < (int64_t)sub->heartbeat_ms)
			continue;
		if (a == NULL && (a = arena_create(4096)) == NULL)
			return;
		watch_msg *m = control_msg(a, MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_HEARTBEAT,
		                           sub->last_seq, 0, NULL);
		if (m == NULL)
			break;
		int rc = rpc_stream_send(sub->stream, &m->base);
		if (rc == MON_ELIMIT)
			fall_behind_locked(hub, sub);
		else if (rc == 0)
			sub->last_send_ms = now;
		arena_destroy(a); /* a heartbeat is small: one arena each keeps the tick's memory flat */
		a = NULL;
	}
	arena_destroy(a);
}

/*
 * Reads every event after hub->last_seen and dispatches it, in batches.
 * Runs on the hub thread only, which alone advances last_seen once set.
 */
static void hub_catch_up(struct alerts_watch_hub *hub)
{
	struct db_conn *conn = NULL;
	struct mon_error err = {0};
	for (;;) {
		pthread_mutex_lock(&hub->mu);
		int64_t after = hub->ready_n > 0 ? hub->last_seen : -1;
		pthread_mutex_unlock(&hub->mu);
		if (after < 0)
			break;
		struct db_result *res = NULL;
		if ((conn == NULL && db_pool_acquire(hub->pool, WATCH_ACQUIRE_MS, &conn, &err) != 0) ||
		    events_read(conn, after, &res, &err) != 0) {
			if (!hub->is_failing)
				log_warn("msg=\"alerts watch could not read changes, retrying every second\" "
				         "error=\"%s\"",
				         err.msg);
			hub->is_failing = true;
			break;
		}
		if (hub->is_failing)
			log_info("msg=\"alerts watch reads changes again\"");
		hub->is_failing = false;
		struct arena *a = arena_create(WATCH_BATCH_ARENA_BYTES);
		struct watch_event *ev = NULL;
		int n = 0;
		int rc = a ? events_decode(res, a, &ev, &n) : MON_ENOMEM;
		db_result_free(res);
		if (rc != 0) {
			log_error("msg=\"alerts watch: out of memory decoding changes\"");
			arena_destroy(a);
			break;
		}
		int64_t now = now_ms();
		pthread_mutex_lock(&hub->mu);
		for (int i = 0; i < n; i++)
			dispatch_locked(hub, &ev[i], now);
		pthread_mutex_unlock(&hub->mu);
		arena_destroy(a);
		if (n < WATCH_BATCH_ROWS)
			break;
	}
	if (conn != NULL)
		db_pool_release(hub->pool, conn);
}

static void *hub_main(void *arg)
{
	struct alerts_watch_hub *hub = arg;
	pthread_mutex_lock(&hub->mu);
	while (!hub->should_stop) {
		if (!hub->is_woken) {
			int wait_ms = hub->ending_n > 0 ? WATCH_ENDING_TICK_MS : WATCH_TICK_MS;
			struct timespec ts;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += wait_ms / 1000;
			ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&hub->cond, &hub->mu, &ts);
			if (hub->should_stop)
				break;
		}
		hub->is_woken = false;
		pthread_mutex_unlock(&hub->mu);

		hub_catch_up(hub);

		pthread_mutex_lock(&hub->mu);
		tick_locked(hub, now_ms());
		if (hub->ready_n == 0)
			hub->last_seen = -1; /* nobody to serve: the next subscriber sets it */
	}
	pthread_mutex_unlock(&hub->mu);
	return NULL;
}

/* Bus thread: must not block, so it only wakes the hub thread. */
static void on_notify(const char *channel, const char *payload, void *arg)
{
	(void)channel;
	(void)payload;
	struct alerts_watch_hub *hub = arg;
	pthread_mutex_lock(&hub->mu);
	hub->is_woken = true;
	pthread_cond_signal(&hub->cond);
	pthread_mutex_unlock(&hub->mu);
}

int alerts_watch_hub_create(struct db_pool *pool, struct db_bus *bus, struct alerts_watch_hub **out,
                            struct mon_error *err)
{
	*out = NULL;
	struct alerts_watch_hub *hub = calloc(1, sizeof(*hub));
	if (hub == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory creating the alerts watch");
	hub->pool = pool;
	hub->last_seen = -1;
	pthread_mutex_init(&hub->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&hub->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&hub->fan_mu, NULL);
	pthread_cond_init(&hub->fan_cond, NULL);

	struct alerts_watch_hub *none = NULL;
	if (!atomic_compare_exchange_strong(&the_hub, &none, hub)) {
		alerts_watch_hub_destroy(hub);
		return mon_error_set(err, MON_EPRECOND, "alerts watch: a hub already exists in this process");
	}
	int rc = db_bus_subscribe(bus, ALERTS_NOTIFY_CHANNEL, on_notify, hub, err);
	if (rc != 0) {
		alerts_watch_hub_destroy(hub);
		return rc;
	}
	if (pthread_create(&hub->thread, NULL, hub_main, hub) != 0) {
		alerts_watch_hub_destroy(hub);
		return mon_error_set(err, MON_ENOMEM, "could not start the alerts watch thread");
	}
	hub->has_thread = true;
	/* Without the second sender the hub still works, sending alone. */
	hub->has_fan_thread = pthread_create(&hub->fan_thread, NULL, fan_main, hub) == 0;
	*out = hub;
	return 0;
}

void alerts_watch_hub_destroy(struct alerts_watch_hub *hub)
{
	if (hub == NULL)
		return;
	if (hub->has_thread) {
		pthread_mutex_lock(&hub->mu);
		hub->should_stop = true;
		pthread_cond_signal(&hub->cond);
		pthread_mutex_unlock(&hub->mu);
		pthread_join(hub->thread, NULL);
	}
	if (hub->has_fan_thread) {
		pthread_mutex_lock(&hub->fan_mu);
		hub->fan_stop = true;
		pthread_cond_broadcast(&hub->fan_cond);
		pthread_mutex_unlock(&hub->fan_mu);
		pthread_join(hub->fan_thread, NULL);
	}
	free(hub->targets);
	free(hub->results);
	struct alerts_watch_hub *self = hub;
	atomic_compare_exchange_strong(&the_hub, &self, NULL);
	/* The server is gone, so every close callback has run and the list is empty. */
	if (hub->subs != NULL)
		log_error("msg=\"alerts watch destroyed with subscribers left\"");
	pthread_cond_destroy(&hub->cond);
	pthread_mutex_destroy(&hub->mu);
	pthread_cond_destroy(&hub->fan_cond);
	pthread_mutex_destroy(&hub->fan_mu);
	free(hub);
}

/* ---- the handler ---- */

/* Queues msg, waiting a bounded time for room: catch-up runs on a worker thread. */
static int send_catch_up(struct rpc_stream *stream, const watch_msg *msg)
{
	int64_t start = now_ms();
	for (;;) {
		int rc = rpc_stream_send(stream, &msg->base);
		if (rc != MON_ELIMIT || now_ms() - start >= WATCH_CATCHUP_STALL_MS)
			return rc;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 2 * 1000000L};
		nanosleep(&ts, NULL);
	}
}

/* Copies the request's filters into sub (which owns them). */
static int sub_filters(struct rpc_ctx *ctx, struct watch_sub *sub, const Monitoring__V1__WatchAlertsRequest *req)
{
	if (req->resume_after_sequence < 0)
		return rpc_fail(ctx, MON_EINVAL, "resume_after_sequence: must not be negative");
	for (size_t i = 0; i < req->n_statuses; i++) {
		int s = req->statuses[i];
		if (s <= MONITORING__V1__ALERT_STATUS__ALERT_STATUS_UNSPECIFIED ||
		    s > MONITORING__V1__ALERT_STATUS__ALERT_STATUS_PENDING)
			return rpc_fail(ctx, MON_EINVAL,
			                "statuses[%zu]: must be ACTIVE, ACKNOWLEDGED, RESOLVED, SUPPRESSED or PENDING",
			                i);
		sub->status_mask |= (uint8_t)(1u << s);
	}
	for (size_t i = 0; i < req->n_severities; i++) {
		int s = req->severities[i];
		if (s <= MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_UNSPECIFIED ||
		    s > MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_CRITICAL)
			return rpc_fail(ctx, MON_EINVAL,
			                "severities[%zu]: must be DEBUG, INFO, WARNING, ERROR, FATAL or CRITICAL", i);
		sub->severity_mask |= (uint8_t)(1u << s);
	}
	if (req->n_alert_rule_ids > WATCH_IDS_MAX)
		return rpc_fail(ctx, MON_EINVAL, "alert_rule_ids: at most %d", WATCH_IDS_MAX);
	for (size_t i = 0; i < req->n_alert_rule_ids; i++)
		if (req->alert_rule_ids[i][0] == '\0')
			return rpc_fail(ctx, MON_EINVAL, "alert_rule_ids[%zu]: must not be empty", i);
	if (req->heartbeat_interval < 0)
		return rpc_fail(ctx, MON_EINVAL, "heartbeat_interval: must not be negative");
	int hb = req->heartbeat_interval == 0 ? WATCH_HEARTBEAT_DEFAULT_S : req->heartbeat_interval;
	if (hb < WATCH_HEARTBEAT_MIN_S)
		hb = WATCH_HEARTBEAT_MIN_S;
	if (hb > 86400)
		hb = 86400; /* a day: keeps the milliseconds in 32 bits */
	sub->heartbeat_ms = (uint32_t)hb * 1000u;
	sub->is_excluding_updates = req->exclude_updates;
	if (req->n_alert_rule_ids > 0) {
		sub->rule_ids = calloc(req->n_alert_rule_ids, sizeof(*sub->rule_ids));
		if (sub->rule_ids == NULL)
			return rpc_fail(ctx, MON_ENOMEM, "out of memory");
		for (size_t i = 0; i < req->n_alert_rule_ids; i++) {
			sub->rule_ids[sub->rule_ids_n] = strdup(req->alert_rule_ids[i]);
			if (sub->rule_ids[sub->rule_ids_n] == NULL)
				return rpc_fail(ctx, MON_ENOMEM, "out of memory");
			sub->rule_ids_n++;
		}
	}
	return 0;
}

/* Sends the matching events after *cursor from the table, advancing *cursor past each. */
static int send_backlog(struct rpc_ctx *ctx, struct db_conn *conn, struct watch_sub *sub, int64_t *cursor)
{
	for (;;) {
		struct db_result *res = NULL;
		int rc = events_read(conn, *cursor, &res, rpc_ctx_error(ctx));
		if (rc != 0)
			return rc;
		struct arena *a = arena_create(WATCH_BATCH_ARENA_BYTES);
		struct watch_event *ev = NULL;
		int n = 0;
		rc = a ? events_decode(res, a, &ev, &n) : MON_ENOMEM;
		db_result_free(res);
		for (int i = 0; rc == 0 && i < n; i++) {
			if (event_matches(sub, &ev[i])) {
				rc = send_catch_up(sub->stream, ev[i].msg);
				if (rc != 0)
					break;
			}
			*cursor = ev[i].seq;
		}
		arena_destroy(a);
		if (rc == MON_ELIMIT)
			return rpc_fail(ctx, MON_ELIMIT,
			                "fell behind during the replay; resume with resume_after_sequence %" PRId64,
			                *cursor);
		if (rc != 0)
			return rc == MON_ENOMEM ? rpc_fail(ctx, rc, "out of memory") : rc;
		if (n < WATCH_BATCH_ROWS)
			return 0;
	}
}

/* Appends to buf a PostgreSQL array literal of the strings (quoted, backslash-escaped). */
static char *array_literal(struct arena *a, char *const *items, size_t n)
{
	size_t len = 3;
	for (size_t i = 0; i < n; i++)
		len += 2 * strlen(items[i]) + 3;
	char *buf = arena_alloc(a, len);
	if (buf == NULL)
		return NULL;
	size_t k = 0;
	buf[k++] = '{';
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			buf[k++] = ',';
		buf[k++] = '"';
		for (const char *p = items[i]; *p; p++) {
			if (*p == '"' || *p == '\\')
				buf[k++] = '\\';
			buf[k++] = *p;
		}
		buf[k++] = '"';
	}
	buf[k++] = '}';
	buf[k] = '\0';
	return buf;
}

/* The labels of the bits of mask, through label_of, as an array literal. */
static char *mask_literal(struct arena *a, unsigned mask, const char *(*label_of)(int))
{
	char *labels[8];
	size_t n = 0;
	for (int v = 1; v < 8; v++) {
		if (!mask_has(mask, (unsigned)v))
			continue;
		const char *l = label_of(v);
		if (l != NULL)
			labels[n++] = (char *)l;
	}
	return array_literal(a, labels, n);
}

static const char *status_label(int v)
{
	return alerts_status_label((Monitoring__V1__AlertStatus)v);
}

static const char *severity_label(int v)
{
	return alerts_severity_label((Monitoring__V1__SeverityLevel)v);
}

/* What the snapshot transaction reads: the cursor and the matching unresolved alerts. */
struct snapshot_read {
	const struct watch_sub *sub;
	struct arena *a;
	int64_t mark;
	struct db_result *alerts; /* owned; freed by the caller */
};

/*
 * The snapshot's two reads, in one REPEATABLE READ snapshot: the highest
 * sequence, and the unresolved alerts matching the filters (which reflect
 * exactly the changes up to it, since an alert and its change commit
 * together).
 */
static int snapshot_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct snapshot_read *r = arg;
	const struct watch_sub *sub = r->sub;
	db_result_free(r->alerts); /* a retried transaction starts over */
	r->alerts = NULL;
	int rc = db_exec(conn, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", 0, NULL, NULL, err);
	if (rc != 0)
		return rc;
	struct db_result *res = NULL;
	rc = db_exec(conn, "SELECT coalesce(max(seq), 0) FROM tb_alert_event", 0, NULL, &res, err);
	if (rc != 0)
		return rc;
	r->mark = parse_i64(db_result_value(res, 0, 0));
	db_result_free(res);

	const char *params[3];
	int param_n = 0;
	char *statuses = NULL, *severities = NULL, *rules = NULL;
	if (sub->status_mask != 0 && (statuses = mask_literal(r->a, sub->status_mask, status_label)) == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	if (sub->severity_mask != 0 && (severities = mask_literal(r->a, sub->severity_mask, severity_label)) == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	if (sub->rule_ids_n > 0 && (rules = array_literal(r->a, sub->rule_ids, sub->rule_ids_n)) == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	char cond_status[64] = "", cond_severity[64] = "", cond_rules[64] = "";
	if (statuses) {
		params[param_n++] = statuses;
		snprintf(cond_status, sizeof(cond_status), " AND a.status::text = ANY($%d::text[])", param_n);
	}
	if (severities) {
		params[param_n++] = severities;
		snprintf(cond_severity, sizeof(cond_severity), " AND a.severity::text = ANY($%d::text[])", param_n);
	}
	if (rules) {
		params[param_n++] = rules;
		snprintf(cond_rules, sizeof(cond_rules), " AND a.alert_rule_id = ANY($%d::text[])", param_n);
	}
	char *sql = arena_printf(r->a, "%s WHERE a.status <> 'resolved'%s%s%s ORDER BY a.triggered_at, a.id",
	                         alerts_select_sql, cond_status, cond_severity, cond_rules);
	if (sql == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	return db_exec(conn, sql, param_n, params, &r->alerts, err);
}

/*
 * Sends the matching unresolved alerts and SNAPSHOT_COMPLETE; *cursor gets
 * the snapshot's cursor. Scratch goes to a, not the call's arena, which
 * lives as long as the stream.
 */
static int send_snapshot(struct rpc_ctx *ctx, struct watch_sub *sub, struct arena *a, int64_t *cursor)
{
	struct snapshot_read r = {.sub = sub, .a = a};
	int rc = db_tx_run(sub->hub->pool, rpc_ctx_remaining_ms(ctx), snapshot_tx, &r, rpc_ctx_error(ctx));
	if (rc != 0)
		goto out;
	int n = db_result_rows(r.alerts);
	for (int i = 0; i < n && rc == 0; i++) {
		struct arena *row_a = arena_create(WATCH_ROW_ARENA_BYTES); /* one alert at a time */
		Monitoring__V1__Alert *alert = NULL;
		rc = row_a ? alerts_from_row(row_a, r.alerts, i, &alert, rpc_ctx_error(ctx))
		           : rpc_fail(ctx, MON_ENOMEM, "out of memory");
		if (rc == 0) {
			watch_msg m = MONITORING__V1__WATCH_ALERTS_RESPONSE__INIT;
			m.sequence = alert->sequence;
			m.event_case = MONITORING__V1__WATCH_ALERTS_RESPONSE__EVENT_SNAPSHOT;
			m.snapshot = alert;
			rc = send_catch_up(sub->stream, &m);
			if (rc == MON_ELIMIT)
				rc = rpc_fail(ctx, MON_ELIMIT, "fell behind during the snapshot; retry the call");
		}
		arena_destroy(row_a);
	}
	if (rc != 0)
		goto out;
	watch_msg *done = control_msg(a, MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_SNAPSHOT_COMPLETE,
	                              r.mark, 0, NULL);
	if (done == NULL) {
		rc = rpc_fail(ctx, MON_ENOMEM, "out of memory");
		goto out;
	}
	rc = send_catch_up(sub->stream, done);
	if (rc == MON_ELIMIT)
		rc = rpc_fail(ctx, MON_ELIMIT, "fell behind during the snapshot; retry the call");
	if (rc == 0)
		*cursor = r.mark;
out:
	db_result_free(r.alerts);
	return rc;
}

/*
 * True when the changes after cursor cannot all be replayed: retention
 * removed some (the oldest retained change is past cursor + 1, or the log
 * is empty with changes handed out after cursor), or the cursor was never
 * handed out by this database. A change rolled back right after cursor
 * and then pruned with it looks the same: that client gets a snapshot it
 * did not strictly need, never a gap.
 */
static int cursor_is_expired(struct rpc_ctx *ctx, struct db_conn *conn, int64_t cursor, bool *out)
{
	struct db_result *res = NULL;
	int rc = db_exec_stmt(conn, &bounds_stmt, NULL, &res, rpc_ctx_error(ctx));
	if (rc != 0)
		return rc;
	int64_t lo = parse_i64(db_result_value(res, 0, 0));
	int64_t hi = parse_i64(db_result_value(res, 0, 1));
	int64_t issued = parse_i64(db_result_value(res, 0, 2));
	db_result_free(res);
	if (cursor > issued)
		*out = true;
	else if (hi == 0)
		*out = cursor < issued;
	else
		*out = cursor < lo - 1;
	return 0;
}

int alerts_watch(struct rpc_ctx *ctx, const Monitoring__V1__WatchAlertsRequest *req, struct rpc_stream *stream)
{
	struct alerts_watch_hub *hub = atomic_load(&the_hub);
	if (hub == NULL)
		return rpc_fail(ctx, MON_EUNAVAIL, "alerts watch is not running; retry later");
	struct watch_sub *sub = calloc(1, sizeof(*sub));
	if (sub == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "out of memory");
	sub->hub = hub;
	sub->stream = stream;
	int rc = sub_filters(ctx, sub, req);
	if (rc != 0) {
		sub_free(sub);
		return rc;
	}

	/* Registered before the catch-up reads, so the hub keeps its place (see the file comment). */
	pthread_mutex_lock(&hub->mu);
	bool is_full = hub->subs_n >= WATCH_SUBS_MAX;
	if (!is_full) {
		sub->refs = 2;
		sub->next = hub->subs;
		if (hub->subs)
			hub->subs->prev = sub;
		hub->subs = sub;
		sub->is_linked = true;
		hub->subs_n++;
	}
	pthread_mutex_unlock(&hub->mu);
	if (is_full) {
		sub_free(sub);
		return rpc_fail(ctx, MON_ELIMIT, "subscribers: at most %d WatchAlerts streams per server; retry later",
		                WATCH_SUBS_MAX);
	}
	rpc_stream_retain(stream);
	rpc_stream_on_close(stream, on_stream_close, sub); /* may run at once if the caller already left */

	struct db_conn *conn = NULL;
	/* Scratch of the start, freed before the stream idles (the call's arena stays with it). */
	struct arena *scratch = arena_create(0);
	if (scratch == NULL) {
		rc = rpc_fail(ctx, MON_ENOMEM, "out of memory");
		goto out;
	}
	int64_t cursor = req->resume_after_sequence;
	if (cursor > 0) {
		rc = db_pool_acquire(hub->pool, WATCH_ACQUIRE_MS, &conn, rpc_ctx_error(ctx));
		if (rc != 0)
			goto out;
		bool is_expired = false;
		rc = cursor_is_expired(ctx, conn, cursor, &is_expired);
		if (rc != 0)
			goto out;
		if (is_expired) {
			watch_msg *m = control_msg(
			        scratch, MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_CURSOR_EXPIRED,
			        cursor, 0, "the cursor is older than the retained change log; a snapshot follows");
			rc = m ? send_catch_up(stream, m) : rpc_fail(ctx, MON_ENOMEM, "out of memory");
			if (rc != 0)
				goto out;
			cursor = 0;
		}
	}
	if (cursor == 0) {
		if (conn != NULL) /* the snapshot takes its own, in a transaction */
			db_pool_release(hub->pool, conn);
		conn = NULL;
		rc = send_snapshot(ctx, sub, scratch, &cursor);
	} else {
		rc = send_backlog(ctx, conn, sub, &cursor);
	}
	/* Hand over to the hub once it has not dispatched past our cursor; else read the difference. */
	while (rc == 0) {
		pthread_mutex_lock(&hub->mu);
		bool is_handed = !sub->is_linked; /* closed meanwhile: nothing to hand over */
		if (sub->is_linked && hub->is_draining) {
			end_for_shutdown_locked(hub, sub, cursor); /* the server is stopping */
			is_handed = true;
		} else if (sub->is_linked && (hub->last_seen < 0 || hub->last_seen <= cursor)) {
			if (hub->last_seen < 0)
				hub->last_seen = cursor;
			sub->last_seq = cursor;
			sub->last_send_ms = now_ms();
			sub->is_ready = true;
			hub->ready_n++;
			is_handed = true;
		}
		pthread_mutex_unlock(&hub->mu);
		if (is_handed)
			break;
		if (conn == NULL && (rc = db_pool_acquire(hub->pool, WATCH_ACQUIRE_MS, &conn, rpc_ctx_error(ctx))) != 0)
			break;
		rc = send_backlog(ctx, conn, sub, &cursor);
	}
out:
	arena_destroy(scratch);
	if (conn != NULL)
		db_pool_release(hub->pool, conn);
	if (rc == MON_ECANCELLED)
		rc = 0; /* the caller left; the runtime has ended the stream */
	sub_unref(sub);
	return rc;
}
