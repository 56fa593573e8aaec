/*
 * The health store: the one path by which a check result enters, whether a
 * caller reported it (HealthService.ReportHealthCheck) or the prober
 * measured it. In the caller's transaction it appends the check to
 * tb_health_check_log, updates the service's status, last_check and
 * updated_at, and, when the status changed, appends an event to
 * tb_service_health_event (whose seq is the resume cursor of
 * WatchServiceHealth) and queues NOTIFY "mon_health" with that seq, so
 * every replica hears of it after commit.
 *
 * Event order: writers of tb_service_health_event take
 * pg_advisory_xact_lock(HEALTH_EVENT_LOCK) before inserting, so seq order
 * is commit order and a subscriber resuming after seq N misses nothing.
 *
 * Schema added by this module's migration (0008): tb_service_health gets
 * next_probe_at, probe_claimed_by and probe_lease_until (the prober's
 * claims); tb_service_health_event(seq BIGSERIAL PRIMARY KEY, service_id,
 * kind, previous_status, status, check_id, checked_at, occurred_at,
 * response_time, error_message). kind is 'status_changed', 'checked' (a
 * check that left the status as it was), 'created', 'updated' or
 * 'deleted'; every recorded check writes one event of the first two kinds.
 *
 * A check older than the service's latest one (reported late) is logged and
 * counted in uptime but leaves status and last_check alone. The service's
 * uptime_24h, uptime_7d and uptime_30d are recomputed in the same
 * transaction (time-weighted, see sql/0008_health.sql and docs/api.md).
 */
#ifndef MON_SERVER_HEALTH_STORE_H
#define MON_SERVER_HEALTH_STORE_H

#include <stdint.h>

#include "db/db.h"
#include "rpc/rpc.h"
#include "util/error.h"

#define HEALTH_EVENT_LOCK 7206001 /* advisory lock key of the event writers */
#define HEALTH_NOTIFY_CHANNEL "mon_health"

/* A check result. status is a Monitoring__V1__ServiceStatus value other than UNSPECIFIED. */
struct health_check_result {
	const char *service_id;
	int status;
	int32_t response_time_ms;  /* < 0: not measured */
	const char *error_message; /* NULL: none */
	const char *details_json;  /* a JSON object, or NULL */
	int64_t checked_at_ms;     /* 0: now */
	const char *source;        /* "report" or "probe" */
	const char *metrics_json;  /* a JSON object replacing the service's metrics, or NULL to keep them */
};

struct health_check_outcome {
	int64_t log_id;
	int previous_status;
	int status;
	int64_t event_seq;     /* 0 when the status did not change */
	int64_t checked_seq;   /* the 'checked' event's seq when the status did not change, else 0 */
	int64_t checked_at_ms; /* the stored check's time */
};

/*
 * Records r in conn's transaction as described above; with ctx (may be
 * NULL for the prober) the audit event of a reported check is written too.
 * MON_ENOTFOUND when the service does not exist, MON_EINVAL for a bad status.
 */
int health_record_check_tx(struct db_conn *conn, struct rpc_ctx *ctx, const struct health_check_result *r,
                           struct health_check_outcome *out, struct mon_error *err) MON_MUST_CHECK;

/* Service status names of the SQL enum, by Monitoring__V1__ServiceStatus value; NULL when out of range. */
const char *health_status_name(int status);

/* The Monitoring__V1__ServiceStatus value of an SQL service_status name; 0 when unknown. */
int health_status_parse(const char *name);

/*
 * Appends a 'created', 'updated' or 'deleted' event of service_id in conn's
 * transaction (taking the event lock) and queues its NOTIFY; the seq goes
 * to *seq_out (may be NULL).
 */
int health_event_append_tx(struct db_conn *conn, const char *kind, const char *service_id, int64_t *seq_out,
                           struct mon_error *err) MON_MUST_CHECK;

/*
 * Recomputes and stores service_id's uptime_24h, uptime_7d and uptime_30d
 * as of now in conn's transaction.
 */
int health_uptime_refresh_tx(struct db_conn *conn, const char *service_id, struct mon_error *err) MON_MUST_CHECK;

#endif
