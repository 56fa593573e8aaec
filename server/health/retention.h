/*
 * Retention of the health check log: removes tb_health_check_log rows,
 * tb_service_health_event rows and hourly uptime rollups older than a
 * maximum age (default 30 days), in bounded batches, on one replica at a
 * time (pg_try_advisory_lock), from a background thread or on demand. The
 * thread also prunes the stored outcomes of idempotency keys.
 */
#ifndef MON_SERVER_HEALTH_RETENTION_H
#define MON_SERVER_HEALTH_RETENTION_H

#include <stdbool.h>
#include <stdint.h>

#include "db/db.h"
#include "util/error.h"

#define HEALTH_RETENTION_LOCK 7206002 /* advisory lock key: one replica runs retention at a time */
#define HEALTH_RETENTION_DAYS_DEFAULT 30
#define HEALTH_RETENTION_BATCH 5000 /* rows deleted per statement */

struct health_retention_stats {
	int64_t checks_deleted;
	int64_t events_deleted;
	int64_t rollups_deleted;
	bool is_skipped; /* another replica held the lock: nothing was done */
};

/*
 * Deletes what is older than max_age_days (>= 1) now. Returns 0 (with
 * stats->is_skipped when another replica is running it), MON_EINVAL for a
 * bad age, or the database's code. stats may be NULL.
 */
int health_retention_run(struct db_pool *pool, int64_t max_age_days, struct health_retention_stats *stats,
                         struct mon_error *err) MON_MUST_CHECK;

struct health_retention;

/*
 * Starts the thread that runs health_retention_run every interval_s
 * seconds (0: 3600), the first time shortly after start, and with it the
 * pruning of idempotency keys older than idempotency_hours (svc_idem_prune
 * in common/idem.h; 0: none). The caller owns the job; pool must outlive
 * it. MON_EINVAL for a bad age, MON_ENOMEM or MON_EINTERNAL (thread).
 */
int health_retention_start(struct db_pool *pool, int64_t max_age_days, int64_t idempotency_hours, int64_t interval_s,
                           struct health_retention **out, struct mon_error *err) MON_MUST_CHECK;

/* Stops the thread (waiting for a run in progress to end) and frees the job; accepts NULL. */
void health_retention_stop(struct health_retention *job);

#endif
