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
 * previous_status, status, checked_at, occurred_at, response_time, error_message).
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
};

struct health_check_outcome {
	int64_t log_id;
	int previous_status;
	int status;
	int64_t event_seq; /* 0 when the status did not change */
};

/*
 * Records r in conn's transaction as described above; with ctx (may be
 * NULL for the prober) the audit event of a reported check is written too.
 * MON_ENOTFOUND when the service does not exist, MON_EINVAL for a bad status.
 */
int health_record_check_tx(struct db_conn *conn, struct rpc_ctx *ctx, const struct health_check_result *r,
                           struct health_check_outcome *out, struct mon_error *err) MON_MUST_CHECK;

#endif
