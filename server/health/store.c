/*
 * The health store: records check results (from HealthService.ReportHealthCheck
 * and from the prober) and the ordered change events of monitored services,
 * in the caller's transaction. It owns the writes to tb_health_check_log,
 * the derived columns of tb_service_health (status, last_check, uptime_*),
 * the hourly uptime rollup and tb_service_health_event. The uptime
 * arithmetic lives in SQL functions of sql/0008_health.sql so that it runs
 * next to the indexed log.
 */
#include "health/store.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "audit/audit.h"
#include "common/parse.h"

static const char *const status_names[] = {NULL, "healthy", "degraded", "down", "unknown"};

const char *health_status_name(int status)
{
	if (status < 1 || status > 4)
		return NULL;
	return status_names[status];
}

int health_status_parse(const char *name)
{
	for (int i = 1; i <= 4; i++)
		if (name != NULL && strcmp(name, status_names[i]) == 0)
			return i;
	return 0;
}

/*
 * Inserts one event row after taking the event lock, so that seq order is
 * commit order, and queues NOTIFY mon_health with the seq. Taken last in
 * the transaction, the lock is held only until commit.
 */
static int event_insert(struct db_conn *conn, const char *kind, const char *service_id, const char *previous_status,
                        const char *status, const char *check_id, const char *response_time, const char *error_message,
                        const char *checked_at_ms, int64_t *seq_out, struct mon_error *err)
{
	static const char lock_sql[] = "SELECT pg_advisory_xact_lock(7206001)";
	static const char insert_sql[] =
	        "INSERT INTO tb_service_health_event"
	        " (service_id, kind, previous_status, status, check_id, response_time, error_message, checked_at)"
	        " VALUES ($1, $2, $3::service_status, $4::service_status, $5::bigint, $6::integer, $7,"
	        " 'epoch'::timestamptz + $8::bigint * interval '1 millisecond') RETURNING seq";
	_Static_assert(HEALTH_EVENT_LOCK == 7206001, "lock_sql names HEALTH_EVENT_LOCK");
	struct db_result *res = NULL;
	const char *params[] = {service_id, kind,          previous_status, status,
	                        check_id,   response_time, error_message,   checked_at_ms};
	int rc = db_exec(conn, lock_sql, 0, NULL, NULL, err);
	if (rc == 0)
		rc = db_exec(conn, insert_sql, 8, params, &res, err);
	if (rc != 0)
		goto out;
	const char *seq = db_result_value(res, 0, 0);
	rc = db_notify(conn, HEALTH_NOTIFY_CHANNEL, seq, err);
	if (rc == 0 && seq_out != NULL)
		*seq_out = svc_parse_i64(seq);
out:
	db_result_free(res);
	return rc;
}

int health_event_append_tx(struct db_conn *conn, const char *kind, const char *service_id, int64_t *seq_out,
                           struct mon_error *err)
{
	if (kind == NULL ||
	    (strcmp(kind, "created") != 0 && strcmp(kind, "updated") != 0 && strcmp(kind, "deleted") != 0))
		return mon_error_set(err, MON_EINVAL, "event kind: must be created, updated or deleted");
	if (service_id == NULL || service_id[0] == '\0')
		return mon_error_set(err, MON_EINVAL, "service_id: must be set");
	return event_insert(conn, kind, service_id, NULL, NULL, NULL, NULL, NULL, NULL, seq_out, err);
}

int health_uptime_refresh_tx(struct db_conn *conn, const char *service_id, struct mon_error *err)
{
	static const char sql[] = "UPDATE tb_service_health SET"
	                          " uptime_24h = (SELECT health_uptime_percent(w.up_ms, w.down_ms)"
	                          "  FROM health_uptime_window($1, now() - interval '24 hours', now(), now()) w),"
	                          " uptime_7d = (SELECT health_uptime_percent(w.up_ms, w.down_ms)"
	                          "  FROM health_uptime_window($1, now() - interval '7 days', now(), now()) w),"
	                          " uptime_30d = (SELECT health_uptime_percent(w.up_ms, w.down_ms)"
	                          "  FROM health_uptime_window($1, now() - interval '30 days', now(), now()) w)"
	                          " WHERE id = $1";
	const char *params[] = {service_id};
	return db_exec(conn, sql, 1, params, NULL, err);
}

/* The check as the API shows it, for the audit event. New reference, NULL when out of memory. */
static json_t *check_json(const struct health_check_result *r, const struct health_check_outcome *o)
{
	json_t *details = NULL;
	if (r->details_json != NULL)
		details = json_loads(r->details_json, 0, NULL);
	char at[48], date[32];
	time_t secs = (time_t)(o->checked_at_ms / 1000);
	struct tm tm;
	if (gmtime_r(&secs, &tm) == NULL || strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		date[0] = '\0';
	snprintf(at, sizeof(at), "%s.%03dZ", date, (int)(o->checked_at_ms % 1000));
	json_t *j =
	        json_pack("{s:I, s:s, s:s, s:o, s:s, s:o, s:s, s:s}", "id", (json_int_t)o->log_id, "service_id",
	                  r->service_id, "status", health_status_name(r->status), "response_time",
	                  r->response_time_ms >= 0 ? json_integer(r->response_time_ms) : json_null(), "error_message",
	                  r->error_message ? r->error_message : "", "details", details ? details : json_null(),
	                  "checked_at", at, "source", r->source ? r->source : "report");
	return j;
}

static int write_audit(struct db_conn *conn, struct rpc_ctx *ctx, const struct health_check_result *r,
                       const struct health_check_outcome *o, struct mon_error *err)
{
	char id[32], what[200];
	json_t *after = check_json(r, o);
	json_t *before = json_pack("{s:s}", "service_status", health_status_name(o->previous_status));
	int rc = 0;
	if (after == NULL || before == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	if (json_object_set_new(after, "service_status", json_string(health_status_name(o->status))) != 0) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	snprintf(id, sizeof(id), "%" PRId64, o->log_id);
	int what_n = snprintf(what, sizeof(what), "recorded a %s check of service \"%s\"",
	                      health_status_name(r->status), r->service_id);
	if (what_n < 0 || (size_t)what_n >= sizeof(what)) {
		rc = mon_error_set(err, MON_EINVAL, "service_id: too long");
		goto out;
	}
	struct audit_event ev = {.action = "create",
	                         .resource_type = "health-check",
	                         .resource_id = id,
	                         .resource_name = r->service_id,
	                         .description = what,
	                         .before = before,
	                         .after = after,
	                         .module = "health"};
	rc = audit_write_tx(conn, ctx, &ev, err);
out:
	json_decref(before);
	json_decref(after);
	return rc;
}

int health_record_check_tx(struct db_conn *conn, struct rpc_ctx *ctx, const struct health_check_result *r,
                           struct health_check_outcome *out, struct mon_error *err)
{
	static const char lock_sql[] = "SELECT status::text FROM tb_service_health WHERE id = $1 FOR UPDATE";
	static const char insert_sql[] = "INSERT INTO tb_health_check_log"
	                                 " (service_id, status, response_time, error_message, details, checked_at)"
	                                 " VALUES ($1, $2::service_status, $3::integer, $4, $5::jsonb,"
	                                 " coalesce('epoch'::timestamptz + $6::bigint * interval '1 millisecond',"
	                                 " date_trunc('milliseconds', now())))"
	                                 " RETURNING id, floor(extract(epoch FROM checked_at) * 1000)::bigint";
	/* The insert trigger has folded the check into the uptime rollup (sql/0008_health.sql). */
	static const char latest_q[] = "SELECT NOT EXISTS (SELECT 1 FROM tb_health_check_log n, tb_health_check_log me"
	                               " WHERE me.id = $2::bigint AND n.service_id = $1"
	                               " AND (n.checked_at, n.id) > (me.checked_at, me.id))";
	static const char latest_sql[] =
	        "UPDATE tb_service_health SET status = $2::service_status,"
	        " last_check = 'epoch'::timestamptz + $3::bigint * interval '1 millisecond',"
	        " updated_at = CASE WHEN status <> $2::service_status THEN now() ELSE updated_at END,"
	        " metrics = coalesce($4::jsonb, metrics) WHERE id = $1";
	static const char metrics_sql[] = "UPDATE tb_service_health SET metrics = $2::jsonb WHERE id = $1";
	struct db_result *res = NULL;
	char response_time[16], checked_at[24], log_id[24];
	const char *status = r != NULL ? health_status_name(r->status) : NULL;
	int rc = 0;
	memset(out, 0, sizeof(*out));
	if (r == NULL || r->service_id == NULL || r->service_id[0] == '\0')
		return mon_error_set(err, MON_EINVAL, "service_id: must be set");
	if (status == NULL)
		return mon_error_set(err, MON_EINVAL, "status: must be HEALTHY, DEGRADED, DOWN or UNKNOWN");
	snprintf(response_time, sizeof(response_time), "%" PRId32, r->response_time_ms);
	snprintf(checked_at, sizeof(checked_at), "%" PRId64, r->checked_at_ms);

	const char *lock_params[] = {r->service_id};
	rc = db_exec(conn, lock_sql, 1, lock_params, &res, err);
	if (rc != 0)
		goto out;
	if (db_result_rows(res) != 1) {
		rc = mon_error_set(err, MON_ENOTFOUND, "service \"%s\": not found", r->service_id);
		goto out;
	}
	out->previous_status = health_status_parse(db_result_value(res, 0, 0));
	out->status = out->previous_status;
	db_result_free(res);
	res = NULL;

	const char *insert_params[] = {r->service_id,
	                               status,
	                               r->response_time_ms >= 0 ? response_time : NULL,
	                               r->error_message != NULL && r->error_message[0] != '\0' ? r->error_message
	                                                                                       : NULL,
	                               r->details_json,
	                               r->checked_at_ms != 0 ? checked_at : NULL};
	rc = db_exec(conn, insert_sql, 6, insert_params, &res, err);
	if (rc != 0)
		goto out;
	out->log_id = svc_parse_i64(db_result_value(res, 0, 0));
	out->checked_at_ms = svc_parse_i64(db_result_value(res, 0, 1));
	db_result_free(res);
	res = NULL;
	snprintf(log_id, sizeof(log_id), "%" PRId64, out->log_id);
	snprintf(checked_at, sizeof(checked_at), "%" PRId64, out->checked_at_ms);

	const char *latest_params[] = {r->service_id, log_id};
	rc = db_exec(conn, latest_q, 2, latest_params, &res, err);
	if (rc != 0)
		goto out;
	bool is_latest = strcmp(db_result_value(res, 0, 0), "t") == 0;
	db_result_free(res);
	res = NULL;

	if (is_latest) {
		const char *params[] = {r->service_id, status, checked_at, r->metrics_json};
		rc = db_exec(conn, latest_sql, 4, params, NULL, err);
		out->status = r->status;
	} else if (r->metrics_json != NULL) {
		const char *params[] = {r->service_id, r->metrics_json};
		rc = db_exec(conn, metrics_sql, 2, params, NULL, err);
	}
	if (rc == 0)
		rc = health_uptime_refresh_tx(conn, r->service_id, err);
	if (rc == 0 && ctx != NULL)
		rc = write_audit(conn, ctx, r, out, err);
	if (rc != 0)
		goto out;

	bool is_changed = out->status != out->previous_status;
	rc = event_insert(conn, is_changed ? "status_changed" : "checked", r->service_id,
	                  health_status_name(out->previous_status), health_status_name(out->status), log_id,
	                  r->response_time_ms >= 0 ? response_time : NULL,
	                  r->error_message != NULL && r->error_message[0] != '\0' ? r->error_message : NULL, checked_at,
	                  is_changed ? &out->event_seq : &out->checked_seq, err);
out:
	db_result_free(res);
	return rc;
}
