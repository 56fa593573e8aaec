/*
 * WatchAlerts: the alert change stream as a kind of resumable event
 * stream (stream/stream.h). This file supplies only what is particular to
 * alerts: the change log (tb_alert_event, numbered under the change-log
 * lock held to commit, see alerts/store.h) and how a page of it decodes,
 * the request's filters and how they match a change, the snapshot of the
 * unresolved alerts with its cursor from one REPEATABLE READ transaction,
 * and the cursor check against retention. Fan-out, hand-over, heartbeats,
 * the fell-behind and shutdown controls are the stream module's.
 *
 * A change matches when its rule and severity match the filters and the
 * status filter holds its new or its previous status (an alert leaving
 * the filtered set is shown leaving).
 */
#include "alerts/watch.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alerts/store.h"
#include "common/parse.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "monitoring/v1/common.pb-c.h"
#include "stream/stream.h"
#include "util/arena.h"
#include "util/log.h"

#define WATCH_IDS_MAX 1000      /* alert_rule_ids per request */
#define WATCH_SUBS_MAX 20000    /* subscribers per process */
#define WATCH_BATCH_ROWS 1000   /* events read per query */
#define WATCH_SNAPSHOT_MS 30000 /* the snapshot transaction's bound */

typedef Monitoring__V1__WatchAlertsResponse watch_msg;

/* A subscriber's filters. Small: an idle subscriber costs this and the stream module's struct. */
struct watch_filter {
	struct stream_ids rule_ids; /* the alert_rule_ids filter */
	uint8_t status_mask;        /* bit per AlertStatus; 0 matches all */
	uint8_t severity_mask;      /* bit per SeverityLevel; 0 matches all */
	bool is_excluding_updates;
};

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

/* ---- events ---- */

struct watch_event {
	int64_t seq;
	const char *rule_id;
	uint8_t status, previous_status, severity; /* AlertStatus, AlertStatus, SeverityLevel */
	bool is_update;
};

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
	size_t len = 0;
	Monitoring__V1__AlertChange *ch = NULL;
	uint8_t *bytes = svc_hex_decode(a, db_result_value(res, i, 9), &len);
	if (bytes != NULL) {
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
		ch->changed_at = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, i, 8)) * 1000);
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

/* stream_row_decode_fn: row i of events_stmt as a change and its message, in a (strings are copied). */
static int event_decode(const struct db_result *res, int i, struct arena *a, struct stream_event *out)
{
	struct watch_event *ev = arena_alloc(a, sizeof(*ev));
	watch_msg *m = arena_alloc(a, sizeof(*m));
	if (ev == NULL || m == NULL)
		return MON_ENOMEM;
	ev->seq = svc_parse_i64(db_result_value(res, i, 0));
	ev->rule_id = arena_strdup(a, db_result_value(res, i, 2));
	ev->is_update = strcmp(db_result_value(res, i, 3), "updated") == 0;
	ev->status = (uint8_t)alerts_status_from_label(db_result_value(res, i, 4));
	ev->previous_status =
	        db_result_is_null(res, i, 5) ? 0 : (uint8_t)alerts_status_from_label(db_result_value(res, i, 5));
	ev->severity = (uint8_t)alerts_severity_from_label(db_result_value(res, i, 6));
	if (ev->rule_id == NULL)
		return MON_ENOMEM;
	monitoring__v1__watch_alerts_response__init(m);
	m->change = change_from_row(a, res, i, ev->seq, ev);
	if (m->change == NULL)
		return MON_ENOMEM;
	m->sequence = ev->seq;
	m->event_case = MONITORING__V1__WATCH_ALERTS_RESPONSE__EVENT_CHANGE;
	*out = (struct stream_event){.seq = ev->seq, .data = ev, .msg = &m->base};
	return 0;
}

static bool mask_has(unsigned mask, unsigned value)
{
	return value < 8 && (mask & (1u << value)) != 0;
}

/*
 * Whether sub sees ev: its rule and severity match, and its status filter
 * holds the new or the previous status (an alert leaving the filtered set
 * is shown leaving).
 */
static bool event_matches(const struct watch_filter *sub, const struct watch_event *ev)
{
	if (ev->is_update && sub->is_excluding_updates)
		return false;
	if (sub->severity_mask != 0 && !mask_has(sub->severity_mask, ev->severity))
		return false;
	if (sub->status_mask != 0 && !mask_has(sub->status_mask, ev->status) &&
	    !mask_has(sub->status_mask, ev->previous_status))
		return false;
	return stream_ids_has(&sub->rule_ids, ev->rule_id);
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
	const struct watch_filter *sub;
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
	const struct watch_filter *sub = r->sub;
	db_result_free(r->alerts); /* a retried transaction starts over */
	r->alerts = NULL;
	int rc = db_exec(conn, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", 0, NULL, NULL, err);
	if (rc != 0)
		return rc;
	struct db_result *res = NULL;
	rc = db_exec(conn, "SELECT coalesce(max(seq), 0) FROM tb_alert_event", 0, NULL, &res, err);
	if (rc != 0)
		return rc;
	r->mark = svc_parse_i64(db_result_value(res, 0, 0));
	db_result_free(res);

	const char *params[3];
	int param_n = 0;
	char *statuses = NULL, *severities = NULL, *rules = NULL;
	if (sub->status_mask != 0 && (statuses = mask_literal(r->a, sub->status_mask, status_label)) == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	if (sub->severity_mask != 0 && (severities = mask_literal(r->a, sub->severity_mask, severity_label)) == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	if (sub->rule_ids.n > 0 && (rules = array_literal(r->a, sub->rule_ids.ids, sub->rule_ids.n)) == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	struct arena_str text;
	arena_str_init(&text, r->a);
	arena_str_append(&text, alerts_select_sql);
	arena_str_append(&text, " WHERE a.status <> 'resolved'");
	if (statuses) {
		params[param_n++] = statuses;
		arena_str_printf(&text, " AND a.status::text = ANY($%d::text[])", param_n);
	}
	if (severities) {
		params[param_n++] = severities;
		arena_str_printf(&text, " AND a.severity::text = ANY($%d::text[])", param_n);
	}
	if (rules) {
		params[param_n++] = rules;
		arena_str_printf(&text, " AND a.alert_rule_id = ANY($%d::text[])", param_n);
	}
	arena_str_append(&text, " ORDER BY a.triggered_at, a.id");
	const char *sql = arena_str_get(&text);
	if (sql == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	return db_exec(conn, sql, param_n, params, &r->alerts, err);
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

/* stream_kind.snapshot: the matching unresolved alerts and the change log's mark, in one snapshot. */
static int kind_snapshot(struct db_pool *pool, int64_t timeout_ms, const void *filter, struct arena *a,
                         struct stream_event **out, size_t *n_out, int64_t *mark, struct mon_error *err)
{
	struct snapshot_read r = {.sub = filter, .a = a};
	int rc = db_tx_run(pool, timeout_ms < WATCH_SNAPSHOT_MS ? timeout_ms : WATCH_SNAPSHOT_MS, snapshot_tx, &r, err);
	if (rc != 0)
		goto out;
	int n = db_result_rows(r.alerts);
	struct stream_event *items = arena_calloc(a, n > 0 ? (size_t)n : 1, sizeof(*items));
	if (items == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "snapshot too large for the stream's memory limit");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		Monitoring__V1__Alert *alert = NULL;
		watch_msg *m = arena_alloc(a, sizeof(*m));
		if (m == NULL) {
			rc = mon_error_set(err, MON_ENOMEM, "snapshot too large for the stream's memory limit");
			goto out;
		}
		rc = alerts_from_row(a, r.alerts, i, &alert, err);
		if (rc != 0)
			goto out;
		monitoring__v1__watch_alerts_response__init(m);
		m->sequence = alert->sequence;
		m->event_case = MONITORING__V1__WATCH_ALERTS_RESPONSE__EVENT_SNAPSHOT;
		m->snapshot = alert;
		items[i] = (struct stream_event){.seq = alert->sequence, .msg = &m->base};
	}
	*out = items;
	*n_out = (size_t)n;
	*mark = r.mark;
out:
	db_result_free(r.alerts);
	return rc;
}

/*
 * stream_kind.cursor_is_expired: true when the changes after cursor cannot
 * all be replayed: retention removed some (the oldest retained change is
 * past cursor + 1, or the log is empty with changes handed out after
 * cursor), or the cursor was never handed out by this database. A change
 * rolled back right after cursor and then pruned with it looks the same:
 * that client gets a snapshot it did not strictly need, never a gap.
 */
static int kind_cursor_is_expired(struct db_conn *conn, int64_t cursor, bool *out, struct mon_error *err)
{
	struct db_result *res = NULL;
	int rc = db_exec_stmt(conn, &bounds_stmt, NULL, &res, err);
	if (rc != 0)
		return rc;
	int64_t lo = svc_parse_i64(db_result_value(res, 0, 0));
	int64_t hi = svc_parse_i64(db_result_value(res, 0, 1));
	int64_t issued = svc_parse_i64(db_result_value(res, 0, 2));
	db_result_free(res);
	if (cursor > issued)
		*out = true;
	else if (hi == 0)
		*out = cursor < issued;
	else
		*out = cursor < lo - 1;
	return 0;
}

/* stream_kind.filter_free, and the handler's on a refused request. */
static void kind_filter_free(void *filter)
{
	struct watch_filter *f = filter;
	if (f != NULL)
		stream_ids_free(&f->rule_ids);
	free(f);
}

const struct stream_kind alerts_watch_kind = {
        .name = "alerts",
        .channel = ALERTS_NOTIFY_CHANNEL,
        .subs_max = WATCH_SUBS_MAX,
        .page_rows = WATCH_BATCH_ROWS,
        .read = kind_read,
        .matches = kind_matches,
        .cursor_is_expired = kind_cursor_is_expired,
        .snapshot = kind_snapshot,
        .response = &monitoring__v1__watch_alerts_response__descriptor,
        .filter_free = kind_filter_free,
};

/* ---- the handler ---- */

/* The request's filters, validated, in a new filter (the caller owns *out). */
static int filter_from_request(struct rpc_ctx *ctx, const Monitoring__V1__WatchAlertsRequest *req,
                               struct watch_filter **out)
{
	struct watch_filter *sub = calloc(1, sizeof(*sub));
	*out = sub;
	if (sub == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "out of memory");
	unsigned statuses = 0, severities = 0;
	int rc = stream_enum_mask(ctx, "statuses", (const int *)req->statuses, req->n_statuses,
	                          MONITORING__V1__ALERT_STATUS__ALERT_STATUS_PENDING,
	                          "ACTIVE, ACKNOWLEDGED, RESOLVED, SUPPRESSED or PENDING", &statuses);
	if (rc == 0)
		rc = stream_enum_mask(ctx, "severities", (const int *)req->severities, req->n_severities,
		                      MONITORING__V1__SEVERITY_LEVEL__SEVERITY_LEVEL_CRITICAL,
		                      "DEBUG, INFO, WARNING, ERROR, FATAL or CRITICAL", &severities);
	if (rc != 0)
		return rc;
	sub->status_mask = (uint8_t)statuses;
	sub->severity_mask = (uint8_t)severities;
	sub->is_excluding_updates = req->exclude_updates;
	return stream_ids_copy(ctx, "alert_rule_ids", req->alert_rule_ids, req->n_alert_rule_ids, WATCH_IDS_MAX,
	                       &sub->rule_ids);
}

int alerts_watch(struct stream_hub *hub, struct rpc_ctx *ctx, const Monitoring__V1__WatchAlertsRequest *req,
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
