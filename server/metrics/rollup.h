/*
 * Maintenance of the performance metric tables, on one replica at a time
 * (pg_try_advisory_lock METRICS_ROLLUP_LOCK), from a background thread:
 *   - rollups: the 5-minute buckets named by the ingest log rows above the
 *     watermark (tb_metric_rollup_state.watermark_seq) are re-aggregated
 *     from the raw points, and their hours from the 5-minute rows; then
 *     the watermark moves. Late points are thus re-aggregated whenever
 *     they arrive within raw retention. When the log lost rows (PostgreSQL
 *     crashed: the log is UNLOGGED), every bucket within raw retention is
 *     re-aggregated;
 *   - partitions: made ahead (mon_maintain_partitions);
 *   - retention: raw points, 5-minute and hourly rollups each drop their
 *     partitions older than their own age; ingest log rows older than the
 *     replay window and below the watermark are deleted.
 */
#ifndef MON_SERVER_METRICS_ROLLUP_H
#define MON_SERVER_METRICS_ROLLUP_H

#include <stdbool.h>
#include <stdint.h>

#include "db/db.h"
#include "util/error.h"

struct metrics_maintenance_config {
	struct db_pool *pool;
	int64_t interval_ms;    /* between the starts of runs; 0: 10000 */
	int raw_retention_days; /* 0: 7 */
	int rollup_5min_days;   /* 0: 90; at least raw_retention_days */
	int rollup_hourly_days; /* 0: 365; at least rollup_5min_days */
	int replay_window_s;    /* ingest log kept for WatchMetrics resumes; 0: 600 */
};

struct metrics_maintenance_stats {
	int64_t buckets_5min;   /* 5-minute buckets re-aggregated */
	int64_t buckets_hourly; /* hourly buckets re-aggregated */
	int64_t watermark_seq;
	int partitions_dropped;
	int64_t log_rows_deleted;
	bool is_full_refresh; /* the log had lost rows */
	bool is_skipped;      /* another replica held the lock */
};

/*
 * One run now (also for tests). stats may be NULL. Returns 0 (with
 * stats->is_skipped when another replica holds the lock), MON_EINVAL for
 * bad settings, or the database's code; a run that fails part way is
 * safe to repeat.
 */
int metrics_maintenance_run(const struct metrics_maintenance_config *cfg, struct metrics_maintenance_stats *stats,
                            struct mon_error *err) MON_MUST_CHECK;

struct metrics_maintenance;

/* Starts the thread (first run shortly after start). The caller owns the job. */
int metrics_maintenance_start(const struct metrics_maintenance_config *cfg, struct metrics_maintenance **out,
                              struct mon_error *err) MON_MUST_CHECK;

/* Stops the thread, waiting for a run in progress; accepts NULL. */
void metrics_maintenance_stop(struct metrics_maintenance *job);

#endif
