/*
 * WatchServiceHealth: the per-process hub and the handler.
 *
 * The hub owns a list of subscribers (a small struct each, holding a
 * reference on its stream) and one thread. The bus callback on "mon_health"
 * only wakes that thread; the thread reads the rows of
 * tb_service_health_event after the last sequence it dispatched, in
 * sequence order, and offers each to every ready subscriber with the
 * non-blocking rpc_stream_send. It also reads on a one-second tick while
 * anyone listens, which catches up after the bus lost its connection
 * (notifications sent meanwhile are gone) and sends heartbeats.
 *
 * A new stream is registered (not ready) first, then the handler sends the
 * snapshot or the backlog from the table on its worker thread, and then,
 * under the hub lock, marks it ready at the sequence it reached, but only
 * once the hub has not dispatched past that sequence (otherwise it reads
 * the difference from the table again). From then on the hub sends it
 * every event above that sequence: no gap, no duplicate, because sequence
 * order is commit order (store.h).
 *
 * A subscriber whose queue is full is not sent anything more: it gets
 * RESUME_REQUIRED (FELL_BEHIND) with the last sequence it was given, as
 * soon as its queue has room for it, then RESOURCE_EXHAUSTED.
 *
 * At server shutdown health_watch_hub_drain stops the fan-out for good and
 * gives every subscriber RESUME_REQUIRED (SERVER_SHUTDOWN) with its cursor
 * behind what is already queued to it (all of it is still delivered), then
 * UNAVAILABLE; a stream handed over later gets the same at once.
 */
#include "health/watch.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "health/store.h"
#include "monitoring/v1/common.pb-c.h"
#include "util/arena.h"
#include "util/log.h"

#define WATCH_IDS_MAX 1000          /* service_ids per request */
#define WATCH_BATCH_ROWS 1000       /* events read per query */
#define WATCH_TICK_MS 1000          /* catch-up read and heartbeat check while anyone listens */
#define WATCH_ENDING_TICK_MS 100    /* retry of a pending RESUME_REQUIRED */
#define WATCH_ACQUIRE_MS 2000       /* waiting for a pooled connection */
#define WATCH_CATCHUP_STALL_MS 5000 /* a catch-up send waits this long for queue room */
#define WATCH_HEARTBEAT_DEFAULT_S 30
#define WATCH_HEARTBEAT_MIN_S 5
#define WATCH_BATCH_ARENA_BYTES (64u * 1024 * 1024)

typedef Monitoring__V1__WatchServiceHealthResponse watch_msg;

struct watch_sub {
	struct health_watch_hub *hub;
	struct rpc_stream *stream;
	char **ids; /* the service_ids filter, owned; ids_n == 0 matches all */
	size_t ids_n;
	unsigned status_mask; /* bit per ServiceStatus; 0 matches all */
	bool is_every_check;  /* include_every_check: CHECKED events too */
	int64_t heartbeat_ms;

	/* Under hub->mu. */
	struct watch_sub *prev, *next;
	int refs; /* the handler's and the stream's (dropped by on_stream_close) */
	bool is_linked;
	bool is_ready;    /* the hub sends it live events */
	bool is_ending;   /* fell behind: RESUME_REQUIRED pending, nothing else is sent */
	int64_t last_seq; /* last sequence delivered or skipped as filtered: the resume cursor */
	int64_t last_send_ms;
};

struct health_watch_hub {
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
	size_t ready_n;
	size_t ending_n;
	int64_t last_seen; /* last sequence dispatched; -1 while nobody is ready */

	/*
	 * Fan-out of one event: the targets, and a second thread that sends to
	 * the odd-numbered ones while the hub thread sends to the even ones
	 * (sending is the cost: one gRPC batch per stream). Alternating rather
	 * than halving puts both threads on every connection: a send that
	 * finds the connection busy writing for the other thread goes out in
	 * that thread's next write, so fewer writes carry the event (about 550
	 * instead of 750 for 1000 streams on two connections).
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
static _Atomic(struct health_watch_hub *) the_hub;

static const struct db_stmt events_stmt = {
        .name = "health_watch_events",
        .sql = "SELECT e.seq, e.service_id, e.previous_status::text, e.status::text,"
               " (extract(epoch FROM e.checked_at) * 1000)::bigint,"
               " (extract(epoch FROM e.occurred_at) * 1000)::bigint,"
               " e.response_time, e.error_message, s.name, s.service_type, e.kind, e.check_id"
               " FROM tb_service_health_event e LEFT JOIN tb_service_health s ON s.id = e.service_id"
               " WHERE e.seq > $1::bigint ORDER BY e.seq LIMIT 1000",
        .param_count = 1,
};

/* One statement, so the services and the high-water mark come from one snapshot. */
static const struct db_stmt snapshot_stmt = {
        .name = "health_watch_snapshot",
        .sql = "WITH m AS (SELECT coalesce(max(seq), 0) AS mark FROM tb_service_health_event),"
               " last AS (SELECT service_id, max(seq) AS seq FROM tb_service_health_event GROUP BY service_id)"
               " SELECT m.mark, s.id, s.name, s.description, s.service_type, s.status::text,"
               " (extract(epoch FROM s.last_check) * 1000)::bigint, s.health_check_url, s.check_interval,"
               " s.timeout, s.retry_count, s.uptime_24h, s.uptime_7d, s.uptime_30d,"
               " (extract(epoch FROM s.created_at) * 1000)::bigint,"
               " (extract(epoch FROM s.updated_at) * 1000)::bigint, coalesce(last.seq, 0)"
               " FROM m LEFT JOIN tb_service_health s ON true LEFT JOIN last ON last.service_id = s.id"
               " ORDER BY s.name, s.id",
        .param_count = 0,
};

static const struct db_stmt bounds_stmt = {
        .name = "health_watch_bounds",
        .sql = "SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) FROM tb_service_health_event",
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

static int status_from_text(const char *text)
{
	if (strcmp(text, "healthy") == 0)
		return MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_HEALTHY;
	if (strcmp(text, "degraded") == 0)
		return MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DEGRADED;
	if (strcmp(text, "down") == 0)
		return MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DOWN;
	if (strcmp(text, "unknown") == 0)
		return MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_UNKNOWN;
	return MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_UNSPECIFIED;
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

static Google__Protobuf__DoubleValue *double_value(struct arena *a, const struct db_result *res, int row, int col)
{
	if (db_result_is_null(res, row, col))
		return NULL;
	Google__Protobuf__DoubleValue *v = arena_alloc(a, sizeof(*v));
	if (v == NULL)
		return NULL;
	google__protobuf__double_value__init(v);
	v->value = strtod(db_result_value(res, row, col), NULL);
	return v;
}

/* A text column as a message string in the arena ("" for NULL); NULL past the arena's cap. */
static char *text_value(struct arena *a, const struct db_result *res, int row, int col)
{
	return arena_strdup(a, db_result_value(res, row, col));
}

/* A control message in the arena; NULL past its cap. */
static watch_msg *control_msg(struct arena *a, int kind, int64_t cursor, int reason, const char *message)
{
	watch_msg *m = arena_alloc(a, sizeof(*m));
	Monitoring__V1__StreamControl *c = arena_alloc(a, sizeof(*c));
	if (m == NULL || c == NULL)
		return NULL;
	monitoring__v1__watch_service_health_response__init(m);
	monitoring__v1__stream_control__init(c);
	c->kind = kind;
	c->resume_after_sequence = cursor;
	c->reason = reason;
	c->message = arena_strdup(a, message ? message : "");
	c->server_time = timestamp_now(a);
	if (c->message == NULL || c->server_time == NULL)
		return NULL;
	m->sequence = cursor;
	m->event_case = MONITORING__V1__WATCH_SERVICE_HEALTH_RESPONSE__EVENT_CONTROL;
	m->control = c;
	return m;
}

/* ---- events ---- */

static int kind_from_text(const char *text)
{
	if (strcmp(text, "status_changed") == 0)
		return MONITORING__V1__SERVICE_CHANGE_KIND__SERVICE_CHANGE_KIND_STATUS_CHANGED;
	if (strcmp(text, "checked") == 0)
		return MONITORING__V1__SERVICE_CHANGE_KIND__SERVICE_CHANGE_KIND_CHECKED;
	if (strcmp(text, "created") == 0)
		return MONITORING__V1__SERVICE_CHANGE_KIND__SERVICE_CHANGE_KIND_CREATED;
	if (strcmp(text, "updated") == 0)
		return MONITORING__V1__SERVICE_CHANGE_KIND__SERVICE_CHANGE_KIND_UPDATED;
	if (strcmp(text, "deleted") == 0)
		return MONITORING__V1__SERVICE_CHANGE_KIND__SERVICE_CHANGE_KIND_DELETED;
	return MONITORING__V1__SERVICE_CHANGE_KIND__SERVICE_CHANGE_KIND_UNSPECIFIED;
}

struct watch_event {
	int64_t seq;
	int kind; /* a ServiceChangeKind */
	const char *service_id;
	int status;
	int previous_status;
	watch_msg *msg;
};

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
		watch_msg *m = arena_alloc(a, sizeof(*m));
		Monitoring__V1__ServiceHealthChange *ch = arena_alloc(a, sizeof(*ch));
		Monitoring__V1__MonitoredService *svc = arena_alloc(a, sizeof(*svc));
		Monitoring__V1__HealthCheck *chk = arena_alloc(a, sizeof(*chk));
		if (m == NULL || ch == NULL || svc == NULL || chk == NULL)
			return MON_ENOMEM;
		monitoring__v1__watch_service_health_response__init(m);
		monitoring__v1__service_health_change__init(ch);
		monitoring__v1__monitored_service__init(svc);
		monitoring__v1__health_check__init(chk);

		ev[i].seq = parse_i64(db_result_value(res, i, 0));
		ev[i].kind = kind_from_text(db_result_value(res, i, 10));
		ev[i].previous_status = db_result_is_null(res, i, 2) ? 0 : status_from_text(db_result_value(res, i, 2));
		ev[i].status = db_result_is_null(res, i, 3) ? 0 : status_from_text(db_result_value(res, i, 3));
		svc->id = text_value(a, res, i, 1);
		if (svc->id == NULL)
			return MON_ENOMEM;
		if (ev[i].kind != MONITORING__V1__SERVICE_CHANGE_KIND__SERVICE_CHANGE_KIND_DELETED) {
			svc->name = text_value(a, res, i, 8);
			svc->service_type = text_value(a, res, i, 9);
			svc->status = ev[i].status;
			if (svc->name == NULL || svc->service_type == NULL)
				return MON_ENOMEM;
		}
		bool has_check =
		        ev[i].kind == MONITORING__V1__SERVICE_CHANGE_KIND__SERVICE_CHANGE_KIND_STATUS_CHANGED ||
		        ev[i].kind == MONITORING__V1__SERVICE_CHANGE_KIND__SERVICE_CHANGE_KIND_CHECKED;
		if (has_check) {
			if (!db_result_is_null(res, i, 4)) {
				svc->last_check = timestamp_from_ms(a, parse_i64(db_result_value(res, i, 4)));
				if (svc->last_check == NULL)
					return MON_ENOMEM;
			}
			chk->id = parse_i64(db_result_value(res, i, 11));
			chk->service_id = svc->id;
			chk->status = ev[i].status;
			chk->error_message = text_value(a, res, i, 7);
			chk->checked_at = svc->last_check;
			if (chk->error_message == NULL)
				return MON_ENOMEM;
			if (!db_result_is_null(res, i, 6)) {
				chk->response_time = arena_alloc(a, sizeof(*chk->response_time));
				if (chk->response_time == NULL)
					return MON_ENOMEM;
				google__protobuf__int32_value__init(chk->response_time);
				chk->response_time->value = (int32_t)parse_i64(db_result_value(res, i, 6));
			}
			ch->check = chk;
		}
		ch->kind = ev[i].kind;
		ch->service = svc;
		ch->previous_status = ev[i].previous_status;
		ch->changed_at = timestamp_from_ms(a, parse_i64(db_result_value(res, i, 5)));
		if (ch->changed_at == NULL)
			return MON_ENOMEM;
		m->sequence = ev[i].seq;
		m->event_case = MONITORING__V1__WATCH_SERVICE_HEALTH_RESPONSE__EVENT_CHANGE;
		m->change = ch;
		ev[i].service_id = svc->id;
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

static bool sub_matches(const struct watch_sub *sub, const char *service_id, int status, int previous_status)
{
	if (sub->status_mask != 0 && (sub->status_mask & (1u << status)) == 0 &&
	    (sub->status_mask & (1u << previous_status)) == 0)
		return false;
	if (sub->ids_n == 0)
		return true;
	for (size_t i = 0; i < sub->ids_n; i++)
		if (strcmp(sub->ids[i], service_id) == 0)
			return true;
	return false;
}

static bool event_matches(const struct watch_sub *sub, const struct watch_event *ev)
{
	if (ev->kind == MONITORING__V1__SERVICE_CHANGE_KIND__SERVICE_CHANGE_KIND_CHECKED && !sub->is_every_check)
		return false;
	return sub_matches(sub, ev->service_id, ev->status, ev->previous_status);
}

/* ---- subscribers ---- */

static void sub_free(struct watch_sub *sub)
{
	if (sub == NULL)
		return;
	for (size_t i = 0; i < sub->ids_n; i++)
		free(sub->ids[i]);
	free(sub->ids);
	free(sub);
}

/* Drops one reference; the last frees the subscriber. Takes hub->mu. */
static void sub_unref(struct watch_sub *sub)
{
	struct health_watch_hub *hub = sub->hub;
	pthread_mutex_lock(&hub->mu);
	bool is_last = --sub->refs == 0;
	pthread_mutex_unlock(&hub->mu);
	if (is_last)
		sub_free(sub);
}

static void unlink_locked(struct health_watch_hub *hub, struct watch_sub *sub)
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
static void try_end_locked(struct health_watch_hub *hub, struct watch_sub *sub)
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
static void end_for_shutdown_locked(struct health_watch_hub *hub, struct watch_sub *sub, int64_t cursor)
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
		log_debug("msg=\"health watch: no room for the shutdown notice; the server ends the stream\"");
	arena_destroy(a);
	if (sub->is_ready)
		hub->ready_n--;
	if (sub->is_ending)
		hub->ending_n--;
	sub->is_ready = false;
	sub->is_ending = false;
}

void health_watch_hub_drain(void *arg)
{
	struct health_watch_hub *hub = arg;
	pthread_mutex_lock(&hub->mu);
	hub->is_draining = true;
	for (struct watch_sub *sub = hub->subs; sub; sub = sub->next)
		if (sub->is_ready || sub->is_ending)
			end_for_shutdown_locked(hub, sub, sub->last_seq);
	pthread_mutex_unlock(&hub->mu);
}

static void fall_behind_locked(struct health_watch_hub *hub, struct watch_sub *sub)
{
	log_info("msg=\"health watch subscriber fell behind\" resume_after_sequence=%" PRId64 " peer=\"%s\"",
	         sub->last_seq, rpc_ctx_peer(rpc_stream_ctx(sub->stream)));
	sub->is_ending = true;
	hub->ending_n++;
	try_end_locked(hub, sub);
}

/*
 * Sends packed to targets first, first + step, ... below n, recording each
 * result. No lock needed: streams are thread-safe.
 */
static void fan_send(struct health_watch_hub *hub, struct rpc_packed *packed, size_t first, size_t step, size_t n)
{
	for (size_t i = first; i < n; i += step)
		hub->results[i] = rpc_stream_send_packed(hub->targets[i]->stream, packed);
}

static void *fan_main(void *arg)
{
	struct health_watch_hub *hub = arg;
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
static void dispatch_locked(struct health_watch_hub *hub, const struct watch_event *ev, int64_t now)
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
			int *r = realloc(hub->results, cap * sizeof(*r));
			if (t != NULL)
				hub->targets = t;
			if (r != NULL)
				hub->results = r;
			if (t == NULL || r == NULL)
				break; /* the rest get it on the next read: last_seq is unchanged */
			hub->targets_cap = cap;
		}
		hub->targets[n++] = sub;
	}
	struct rpc_packed *packed = NULL; /* serialised once, for every subscriber */
	if (n > 0 && rpc_packed_create(&ev->msg->base, &packed) != 0)
		n = 0;
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
static void tick_locked(struct health_watch_hub *hub, int64_t now)
{
	struct arena *a = NULL;
	for (struct watch_sub *sub = hub->subs; sub; sub = sub->next) {
		if (sub->is_ending) {
			try_end_locked(hub, sub);
			continue;
		}
		if (!sub->is_ready || now - sub->last_send_ms < sub->heartbeat_ms)
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
	}
	arena_destroy(a);
}

/*
 * Reads every event after hub->last_seen and dispatches it, in batches.
 * Runs on the hub thread only, which alone advances last_seen once set.
 */
static void hub_catch_up(struct health_watch_hub *hub)
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
				log_warn("msg=\"health watch could not read events, retrying every second\" "
				         "error=\"%s\"",
				         err.msg);
			hub->is_failing = true;
			break;
		}
		if (hub->is_failing)
			log_info("msg=\"health watch reads events again\"");
		hub->is_failing = false;
		struct arena *a = arena_create(WATCH_BATCH_ARENA_BYTES);
		struct watch_event *ev = NULL;
		int n = 0;
		int rc = a ? events_decode(res, a, &ev, &n) : MON_ENOMEM;
		db_result_free(res);
		if (rc != 0) {
			log_error("msg=\"health watch: out of memory decoding events\"");
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
	struct health_watch_hub *hub = arg;
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
	struct health_watch_hub *hub = arg;
	pthread_mutex_lock(&hub->mu);
	hub->is_woken = true;
	pthread_cond_signal(&hub->cond);
	pthread_mutex_unlock(&hub->mu);
}

int health_watch_hub_create(struct db_pool *pool, struct db_bus *bus, struct health_watch_hub **out,
                            struct mon_error *err)
{
	*out = NULL;
	struct health_watch_hub *hub = calloc(1, sizeof(*hub));
	if (hub == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory creating the health watch");
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

	struct health_watch_hub *none = NULL;
	if (!atomic_compare_exchange_strong(&the_hub, &none, hub)) {
		health_watch_hub_destroy(hub);
		return mon_error_set(err, MON_EPRECOND, "health watch: a hub already exists in this process");
	}
	int rc = db_bus_subscribe(bus, HEALTH_NOTIFY_CHANNEL, on_notify, hub, err);
	if (rc != 0) {
		health_watch_hub_destroy(hub);
		return rc;
	}
	if (pthread_create(&hub->thread, NULL, hub_main, hub) != 0) {
		health_watch_hub_destroy(hub);
		return mon_error_set(err, MON_ENOMEM, "could not start the health watch thread");
	}
	hub->has_thread = true;
	/* Without the second sender the hub still works, sending alone. */
	hub->has_fan_thread = pthread_create(&hub->fan_thread, NULL, fan_main, hub) == 0;
	*out = hub;
	return 0;
}

void health_watch_hub_destroy(struct health_watch_hub *hub)
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
	struct health_watch_hub *self = hub;
	atomic_compare_exchange_strong(&the_hub, &self, NULL);
	/* The server is gone, so every close callback has run and the list is empty. */
	if (hub->subs != NULL)
		log_error("msg=\"health watch destroyed with subscribers left\"");
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
static int sub_filters(struct rpc_ctx *ctx, struct watch_sub *sub, const Monitoring__V1__WatchServiceHealthRequest *req)
{
	if (req->resume_after_sequence < 0)
		return rpc_fail(ctx, MON_EINVAL, "resume_after_sequence: must not be negative");
	if (req->n_service_ids > WATCH_IDS_MAX)
		return rpc_fail(ctx, MON_EINVAL, "service_ids: at most %d", WATCH_IDS_MAX);
	for (size_t i = 0; i < req->n_statuses; i++) {
		int s = req->statuses[i];
		if (s <= MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_UNSPECIFIED ||
		    s > MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_UNKNOWN)
			return rpc_fail(ctx, MON_EINVAL, "statuses[%zu]: must be HEALTHY, DEGRADED, DOWN or UNKNOWN",
			                i);
		sub->status_mask |= 1u << s;
	}
	sub->is_every_check = req->include_every_check;
	if (req->heartbeat_interval < 0)
		return rpc_fail(ctx, MON_EINVAL, "heartbeat_interval: must not be negative");
	int hb = req->heartbeat_interval == 0 ? WATCH_HEARTBEAT_DEFAULT_S : req->heartbeat_interval;
	sub->heartbeat_ms = (int64_t)(hb < WATCH_HEARTBEAT_MIN_S ? WATCH_HEARTBEAT_MIN_S : hb) * 1000;
	if (req->n_service_ids > 0) {
		sub->ids = calloc(req->n_service_ids, sizeof(*sub->ids));
		if (sub->ids == NULL)
			return rpc_fail(ctx, MON_ENOMEM, "out of memory");
		for (size_t i = 0; i < req->n_service_ids; i++) {
			if (req->service_ids[i][0] == '\0')
				return rpc_fail(ctx, MON_EINVAL, "service_ids[%zu]: must not be empty", i);
			sub->ids[sub->ids_n] = strdup(req->service_ids[i]);
			if (sub->ids[sub->ids_n] == NULL)
				return rpc_fail(ctx, MON_ENOMEM, "out of memory");
			sub->ids_n++;
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

/* Sends the matching services and SNAPSHOT_COMPLETE; *cursor gets the snapshot's high-water mark. */
static int send_snapshot(struct rpc_ctx *ctx, struct db_conn *conn, struct watch_sub *sub, int64_t *cursor)
{
	struct arena *a = rpc_ctx_arena(ctx);
	struct db_result *res = NULL;
	int rc = db_exec_stmt(conn, &snapshot_stmt, NULL, &res, rpc_ctx_error(ctx));
	if (rc != 0)
		return rc;
	int n = db_result_rows(res);
	int64_t mark = n > 0 ? parse_i64(db_result_value(res, 0, 0)) : 0;
	for (int i = 0; i < n && rc == 0; i++) {
		if (db_result_is_null(res, i, 1))
			continue; /* no services at all */
		const char *id = db_result_value(res, i, 1);
		int status = status_from_text(db_result_value(res, i, 5));
		if (!sub_matches(sub, id, status, status))
			continue;
		watch_msg m = MONITORING__V1__WATCH_SERVICE_HEALTH_RESPONSE__INIT;
		Monitoring__V1__MonitoredService svc = MONITORING__V1__MONITORED_SERVICE__INIT;
		Google__Protobuf__Int32Value retry = GOOGLE__PROTOBUF__INT32_VALUE__INIT;
		/* Strings point into the result, which outlives the send (it packs at once). */
		svc.id = (char *)id;
		svc.name = (char *)db_result_value(res, i, 2);
		svc.description = (char *)db_result_value(res, i, 3);
		svc.service_type = (char *)db_result_value(res, i, 4);
		svc.status = status;
		svc.last_check = timestamp_from_ms(a, parse_i64(db_result_value(res, i, 6)));
		svc.health_check_url = (char *)db_result_value(res, i, 7);
		svc.check_interval = (int32_t)parse_i64(db_result_value(res, i, 8));
		svc.timeout = (int32_t)parse_i64(db_result_value(res, i, 9));
		retry.value = (int32_t)parse_i64(db_result_value(res, i, 10));
		svc.retry_count = &retry;
		svc.uptime_24h = double_value(a, res, i, 11);
		svc.uptime_7d = double_value(a, res, i, 12);
		svc.uptime_30d = double_value(a, res, i, 13);
		svc.created_at = timestamp_from_ms(a, parse_i64(db_result_value(res, i, 14)));
		svc.updated_at = timestamp_from_ms(a, parse_i64(db_result_value(res, i, 15)));
		if (svc.last_check == NULL || svc.created_at == NULL || svc.updated_at == NULL) {
			rc = rpc_fail(ctx, MON_ENOMEM, "snapshot too large for the call's memory limit");
			break;
		}
		m.sequence = parse_i64(db_result_value(res, i, 16));
		m.event_case = MONITORING__V1__WATCH_SERVICE_HEALTH_RESPONSE__EVENT_SNAPSHOT;
		m.snapshot = &svc;
		rc = send_catch_up(sub->stream, &m);
		if (rc == MON_ELIMIT)
			rc = rpc_fail(ctx, MON_ELIMIT, "fell behind during the snapshot; retry the call");
	}
	db_result_free(res);
	if (rc != 0)
		return rc;
	watch_msg *done = control_msg(a, MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_SNAPSHOT_COMPLETE,
	                              mark, 0, NULL);
	if (done == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "out of memory");
	rc = send_catch_up(sub->stream, done);
	if (rc == MON_ELIMIT)
		return rpc_fail(ctx, MON_ELIMIT, "fell behind during the snapshot; retry the call");
	if (rc == 0)
		*cursor = mark;
	return rc;
}

/* True when no event after cursor can be replayed: retention removed some, or the cursor is unknown. */
static int cursor_is_expired(struct rpc_ctx *ctx, struct db_conn *conn, int64_t cursor, bool *out)
{
	struct db_result *res = NULL;
	int rc = db_exec_stmt(conn, &bounds_stmt, NULL, &res, rpc_ctx_error(ctx));
	if (rc != 0)
		return rc;
	int64_t lo = parse_i64(db_result_value(res, 0, 0));
	int64_t hi = parse_i64(db_result_value(res, 0, 1));
	db_result_free(res);
	*out = hi == 0 ? cursor > 0 : (cursor < lo - 1 || cursor > hi);
	return 0;
}

int health_watch(struct rpc_ctx *ctx, const Monitoring__V1__WatchServiceHealthRequest *req, struct rpc_stream *stream)
{
	struct health_watch_hub *hub = atomic_load(&the_hub);
	if (hub == NULL)
		return rpc_fail(ctx, MON_EUNAVAIL, "health watch is not running; retry later");
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
	sub->refs = 2;
	pthread_mutex_lock(&hub->mu);
	sub->next = hub->subs;
	if (hub->subs)
		hub->subs->prev = sub;
	hub->subs = sub;
	sub->is_linked = true;
	pthread_mutex_unlock(&hub->mu);
	rpc_stream_retain(stream);
	rpc_stream_on_close(stream, on_stream_close, sub); /* may run at once if the caller already left */

	struct db_conn *conn = NULL;
	rc = db_pool_acquire(hub->pool, WATCH_ACQUIRE_MS, &conn, rpc_ctx_error(ctx));
	if (rc != 0)
		goto out;
	int64_t cursor = req->resume_after_sequence;
	if (cursor > 0) {
		bool is_expired = false;
		rc = cursor_is_expired(ctx, conn, cursor, &is_expired);
		if (rc != 0)
			goto out;
		if (is_expired) {
			watch_msg *m = control_msg(
			        rpc_ctx_arena(ctx),
			        MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_CURSOR_EXPIRED, cursor, 0,
			        "the cursor is older than the retained change log; a snapshot follows");
			rc = m ? send_catch_up(stream, m) : rpc_fail(ctx, MON_ENOMEM, "out of memory");
			if (rc != 0)
				goto out;
			cursor = 0;
		}
	}
	rc = cursor == 0 ? send_snapshot(ctx, conn, sub, &cursor) : send_backlog(ctx, conn, sub, &cursor);
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
		rc = send_backlog(ctx, conn, sub, &cursor);
	}
out:
	if (conn != NULL)
		db_pool_release(hub->pool, conn);
	if (rc == MON_ECANCELLED)
		rc = 0; /* the caller left; the runtime has ended the stream */
	sub_unref(sub);
	return rc;
}
