/*
 * WatchServiceHealth: the health change stream as a kind of resumable
 * event stream (stream/stream.h). This file supplies only what is
 * particular to health: the change log (tb_service_health_event, numbered
 * in commit order, see health/store.h) and how a page of it decodes, the
 * request's filters and how they match a change, the snapshot of the
 * services with the log's mark from one statement, and the cursor check
 * against retention. Fan-out, hand-over, heartbeats, the fell-behind and
 * shutdown controls are the stream module's.
 */
#include "health/watch.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "common/parse.h"
#include "health/store.h"
#include "monitoring/v1/common.pb-c.h"
#include "stream/stream.h"
#include "util/arena.h"
#include "util/log.h"

#define WATCH_IDS_MAX 1000      /* service_ids per request */
#define WATCH_SUBS_MAX 20000    /* subscribers per process */
#define WATCH_BATCH_ROWS 1000   /* events read per query */
#define WATCH_SNAPSHOT_MS 30000 /* the snapshot statement's bound */

typedef Monitoring__V1__WatchServiceHealthResponse watch_msg;

/* A subscriber's filters. */
struct watch_filter {
	struct stream_ids ids; /* the service_ids filter */
	unsigned status_mask;  /* bit per ServiceStatus; 0 matches all */
	bool is_every_check;   /* include_every_check: CHECKED events too */
};

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

/* A text column as a message string in the arena ("" for NULL); NULL past the arena's cap. */
static char *text_value(struct arena *a, const struct db_result *res, int row, int col)
{
	return arena_strdup(a, db_result_value(res, row, col));
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
};

/* stream_row_decode_fn: row i of events_stmt as a change and its message, in a (strings are copied). */
static int event_decode(const struct db_result *res, int i, struct arena *a, struct stream_event *out)
{
	struct watch_event *ev = arena_alloc(a, sizeof(*ev));
	watch_msg *m = arena_alloc(a, sizeof(*m));
	Monitoring__V1__ServiceHealthChange *ch = arena_alloc(a, sizeof(*ch));
	Monitoring__V1__MonitoredService *svc = arena_alloc(a, sizeof(*svc));
	Monitoring__V1__HealthCheck *chk = arena_alloc(a, sizeof(*chk));
	if (ev == NULL || m == NULL || ch == NULL || svc == NULL || chk == NULL)
		return MON_ENOMEM;
	monitoring__v1__watch_service_health_response__init(m);
	monitoring__v1__service_health_change__init(ch);
	monitoring__v1__monitored_service__init(svc);
	monitoring__v1__health_check__init(chk);

	ev->seq = svc_parse_i64(db_result_value(res, i, 0));
	ev->kind = kind_from_text(db_result_value(res, i, 10));
	ev->previous_status = db_result_is_null(res, i, 2) ? 0 : status_from_text(db_result_value(res, i, 2));
	ev->status = db_result_is_null(res, i, 3) ? 0 : status_from_text(db_result_value(res, i, 3));
	svc->id = text_value(a, res, i, 1);
	if (svc->id == NULL)
		return MON_ENOMEM;
	if (ev->kind != MONITORING__V1__SERVICE_CHANGE_KIND__SERVICE_CHANGE_KIND_DELETED) {
		svc->name = text_value(a, res, i, 8);
		svc->service_type = text_value(a, res, i, 9);
		svc->status = ev->status;
		if (svc->name == NULL || svc->service_type == NULL)
			return MON_ENOMEM;
	}
	bool has_check = ev->kind == MONITORING__V1__SERVICE_CHANGE_KIND__SERVICE_CHANGE_KIND_STATUS_CHANGED ||
	                 ev->kind == MONITORING__V1__SERVICE_CHANGE_KIND__SERVICE_CHANGE_KIND_CHECKED;
	if (has_check) {
		if (!db_result_is_null(res, i, 4)) {
			svc->last_check = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, i, 4)) * 1000);
			if (svc->last_check == NULL)
				return MON_ENOMEM;
		}
		chk->id = svc_parse_i64(db_result_value(res, i, 11));
		chk->service_id = svc->id;
		chk->status = ev->status;
		chk->error_message = text_value(a, res, i, 7);
		chk->checked_at = svc->last_check;
		if (chk->error_message == NULL)
			return MON_ENOMEM;
		if (!db_result_is_null(res, i, 6)) {
			chk->response_time = arena_alloc(a, sizeof(*chk->response_time));
			if (chk->response_time == NULL)
				return MON_ENOMEM;
			google__protobuf__int32_value__init(chk->response_time);
			chk->response_time->value = (int32_t)svc_parse_i64(db_result_value(res, i, 6));
		}
		ch->check = chk;
	}
	ch->kind = ev->kind;
	ch->service = svc;
	ch->previous_status = ev->previous_status;
	ch->changed_at = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, i, 5)) * 1000);
	if (ch->changed_at == NULL)
		return MON_ENOMEM;
	m->sequence = ev->seq;
	m->event_case = MONITORING__V1__WATCH_SERVICE_HEALTH_RESPONSE__EVENT_CHANGE;
	m->change = ch;
	ev->service_id = svc->id;
	*out = (struct stream_event){.seq = ev->seq, .data = ev, .msg = &m->base};
	return 0;
}

static bool sub_matches(const struct watch_filter *sub, const char *service_id, int status, int previous_status)
{
	if (sub->status_mask != 0 && (sub->status_mask & (1u << status)) == 0 &&
	    (sub->status_mask & (1u << previous_status)) == 0)
		return false;
	return stream_ids_has(&sub->ids, service_id);
}

static bool event_matches(const struct watch_filter *sub, const struct watch_event *ev)
{
	if (ev->kind == MONITORING__V1__SERVICE_CHANGE_KIND__SERVICE_CHANGE_KIND_CHECKED && !sub->is_every_check)
		return false;
	return sub_matches(sub, ev->service_id, ev->status, ev->previous_status);
}

/* ---- the stream kind ---- */

/* stream_kind.read: a page of changes after `after`, decoded into a. */
static int kind_read(struct db_conn *conn, int64_t after, struct arena *a, struct stream_event **out, size_t *n_out,
                     int64_t *lo_out, struct mon_error *err)
{
	*lo_out = 0; /* not needed: a cursor is checked against retention at the start */
	return stream_read_rows(conn, &events_stmt, after, a, event_decode, out, n_out, err);
}

static bool kind_matches(const void *filter, const void *data)
{
	return event_matches(filter, data);
}

/* One snapshot row as a WatchServiceHealthResponse in a; NULL past its cap. */
static watch_msg *snapshot_item(struct arena *a, const struct db_result *res, int i, int status)
{
	watch_msg *m = arena_alloc(a, sizeof(*m));
	Monitoring__V1__MonitoredService *svc = arena_alloc(a, sizeof(*svc));
	Google__Protobuf__Int32Value *retry = arena_alloc(a, sizeof(*retry));
	if (m == NULL || svc == NULL || retry == NULL)
		return NULL;
	monitoring__v1__watch_service_health_response__init(m);
	monitoring__v1__monitored_service__init(svc);
	google__protobuf__int32_value__init(retry);
	svc->id = text_value(a, res, i, 1);
	svc->name = text_value(a, res, i, 2);
	svc->description = text_value(a, res, i, 3);
	svc->service_type = text_value(a, res, i, 4);
	svc->status = status;
	svc->last_check = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, i, 6)) * 1000);
	svc->health_check_url = text_value(a, res, i, 7);
	svc->check_interval = (int32_t)svc_parse_i64(db_result_value(res, i, 8));
	svc->timeout = (int32_t)svc_parse_i64(db_result_value(res, i, 9));
	retry->value = (int32_t)svc_parse_i64(db_result_value(res, i, 10));
	svc->retry_count = retry;
	bool is_ok = true;
	svc->uptime_24h = svc_double_from_col(a, res, i, 11, &is_ok);
	svc->uptime_7d = svc_double_from_col(a, res, i, 12, &is_ok);
	svc->uptime_30d = svc_double_from_col(a, res, i, 13, &is_ok);
	svc->created_at = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, i, 14)) * 1000);
	svc->updated_at = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, i, 15)) * 1000);
	if (!is_ok || svc->id == NULL || svc->name == NULL || svc->description == NULL || svc->service_type == NULL ||
	    svc->health_check_url == NULL || svc->last_check == NULL || svc->created_at == NULL ||
	    svc->updated_at == NULL)
		return NULL;
	m->sequence = svc_parse_i64(db_result_value(res, i, 16));
	m->event_case = MONITORING__V1__WATCH_SERVICE_HEALTH_RESPONSE__EVENT_SNAPSHOT;
	m->snapshot = svc;
	return m;
}

/* fn of db_read_run: the snapshot statement; its result goes to *arg. */
static int snapshot_read(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct db_result **res = arg;
	db_result_free(*res); /* a retried read starts afresh */
	*res = NULL;
	return db_exec_stmt(conn, &snapshot_stmt, NULL, res, err);
}

/* stream_kind.snapshot: the matching services and the log's mark, from one statement. */
static int kind_snapshot(struct db_pool *pool, int64_t timeout_ms, const void *filter, struct arena *a,
                         struct stream_event **out, size_t *n_out, int64_t *mark, struct mon_error *err)
{
	struct db_result *res = NULL;
	int rc = db_read_run(pool, timeout_ms < WATCH_SNAPSHOT_MS ? timeout_ms : WATCH_SNAPSHOT_MS, snapshot_read, &res,
	                     err);
	if (rc != 0) {
		db_result_free(res);
		return rc;
	}
	int n = db_result_rows(res);
	struct stream_event *items = arena_calloc(a, n > 0 ? (size_t)n : 1, sizeof(*items));
	if (items == NULL) {
		db_result_free(res);
		return mon_error_set(err, MON_ENOMEM, "snapshot too large for the stream's memory limit");
	}
	*mark = n > 0 ? svc_parse_i64(db_result_value(res, 0, 0)) : 0;
	size_t k = 0;
	for (int i = 0; i < n; i++) {
		if (db_result_is_null(res, i, 1))
			continue; /* no services at all */
		int status = status_from_text(db_result_value(res, i, 5));
		if (!sub_matches(filter, db_result_value(res, i, 1), status, status))
			continue;
		watch_msg *m = snapshot_item(a, res, i, status);
		if (m == NULL) {
			db_result_free(res);
			return mon_error_set(err, MON_ENOMEM, "snapshot too large for the stream's memory limit");
		}
		items[k++] = (struct stream_event){.seq = m->sequence, .msg = &m->base};
	}
	db_result_free(res);
	*out = items;
	*n_out = k;
	return 0;
}

/* stream_kind.cursor_is_expired: no event after cursor can be replayed (retention), or the cursor is unknown. */
static int kind_cursor_is_expired(struct db_conn *conn, int64_t cursor, bool *out, struct mon_error *err)
{
	struct db_result *res = NULL;
	int rc = db_exec_stmt(conn, &bounds_stmt, NULL, &res, err);
	if (rc != 0)
		return rc;
	int64_t lo = svc_parse_i64(db_result_value(res, 0, 0));
	int64_t hi = svc_parse_i64(db_result_value(res, 0, 1));
	db_result_free(res);
	*out = hi == 0 ? cursor > 0 : (cursor < lo - 1 || cursor > hi);
	return 0;
}

/* stream_kind.filter_free, and the handler's on a refused request. */
static void kind_filter_free(void *filter)
{
	struct watch_filter *f = filter;
	if (f != NULL)
		stream_ids_free(&f->ids);
	free(f);
}

const struct stream_kind health_watch_kind = {
        .name = "health",
        .channel = HEALTH_NOTIFY_CHANNEL,
        .subs_max = WATCH_SUBS_MAX,
        .page_rows = WATCH_BATCH_ROWS,
        .read = kind_read,
        .matches = kind_matches,
        .cursor_is_expired = kind_cursor_is_expired,
        .snapshot = kind_snapshot,
        .response = &monitoring__v1__watch_service_health_response__descriptor,
        .filter_free = kind_filter_free,
};

/* ---- the handler ---- */

/* The request's filters, validated, in a new filter (the caller owns *out). */
static int filter_from_request(struct rpc_ctx *ctx, const Monitoring__V1__WatchServiceHealthRequest *req,
                               struct watch_filter **out)
{
	struct watch_filter *sub = calloc(1, sizeof(*sub));
	*out = sub;
	if (sub == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "out of memory");
	int rc = stream_enum_mask(ctx, "statuses", (const int *)req->statuses, req->n_statuses,
	                          MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_UNKNOWN,
	                          "HEALTHY, DEGRADED, DOWN or UNKNOWN", &sub->status_mask);
	if (rc != 0)
		return rc;
	sub->is_every_check = req->include_every_check;
	return stream_ids_copy(ctx, "service_ids", req->service_ids, req->n_service_ids, WATCH_IDS_MAX, &sub->ids);
}

int health_watch(struct stream_hub *hub, struct rpc_ctx *ctx, const Monitoring__V1__WatchServiceHealthRequest *req,
                 struct rpc_stream *stream)
{
	struct watch_filter *filter = NULL;
	int rc = filter_from_request(ctx, req, &filter);
	if (rc != 0) {
		kind_filter_free(filter);
		return rc;
	}
	return stream_watch(hub, ctx, stream, filter, req->resume_after_sequence, req->heartbeat_interval);
}
