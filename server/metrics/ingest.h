/*
 * Performance metric ingest: the validation of RecordMetrics points and the
 * write path. A batch is written in one transaction: its rows, in key order,
 * are COPYed straight into tb_performance_metric under a savepoint; when a
 * key exists (a retry or a replacement) that COPY fails, the savepoint
 * undoes it, and the rows go through a per-connection temporary staging
 * table instead: INSERT ... ON CONFLICT (time, metric_name, endpoint) DO
 * NOTHING, then one UPDATE of the stored rows whose values differ. Then the
 * batch is numbered and logged by mon_metrics_commit (sql/0009_metrics.sql):
 * the sequence WatchMetrics delivers it under, the 5-minute buckets the
 * rollup job re-aggregates, and the points every replica's hub fans out.
 * The NOTIFY "mon_metrics" with the sequence as payload wakes the hubs.
 * A batch whose points are all duplicates (a retry of a committed batch)
 * changes nothing and is not published again; one that partly repeats
 * stored points publishes only the points it inserted or changed.
 */
#ifndef MON_SERVER_METRICS_INGEST_H
#define MON_SERVER_METRICS_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "monitoring/v1/metrics.pb-c.h"
#include "util/arena.h"
#include "util/error.h"

#define METRICS_BATCH_MAX 5000          /* points per RecordMetrics */
#define METRICS_NAME_MAX 100            /* characters of metric_name, [A-Za-z0-9_.:-] */
#define METRICS_ENDPOINT_MAX 500        /* characters of endpoint */
#define METRICS_TAGS_MAX 32             /* keys per point */
#define METRICS_TAG_KEY_MAX 100         /* bytes of a tag key */
#define METRICS_TAG_VALUE_MAX 500       /* bytes of a tag value */
#define METRICS_FUTURE_MAX_S 300        /* a point may be this far in the future */
#define METRICS_RAW_RETENTION_DAYS 7    /* default raw retention; older points are refused */
#define METRICS_DECIMAL_MAX 99999999.99 /* DECIMAL(10,2) columns */
#define METRICS_NOTIFY_CHANNEL "mon_metrics"
#define METRICS_INGEST_LOCK 7206010 /* advisory lock of mon_metrics_commit */
#define METRICS_ROLLUP_LOCK 7206011 /* advisory lock of the rollup and retention job */

/* One validation error: points[index].field: message. */
struct metrics_point_error {
	int32_t index;
	const char *field;
	char message[160];
};

/*
 * Checks one point (pure, unit-tested). now_ms is the wall clock,
 * oldest_ms the oldest accepted time (now minus raw retention). Appends
 * one error per bad field to errs (capacity cap, count *n; further
 * errors are counted, not stored) and returns the number of errors of
 * this point.
 */
int metrics_check_point(const Monitoring__V1__MetricPoint *p, int32_t index, int64_t now_ms, int64_t oldest_ms,
                        struct metrics_point_error *errs, size_t cap, size_t *n);

/* The outcome of a write. */
struct metrics_write_result {
	int32_t inserted;
	int32_t updated;
	int32_t duplicates;
	int64_t sequence; /* 0 when nothing changed (every point a duplicate): nothing is published */
	bool is_replay;   /* an idempotency key's stored outcome answers: nothing was written */
};

/*
 * An idempotency key's part in a write (RecordMetrics): claimed first in
 * the write's transaction, its outcome stored last, before COMMIT.
 */
struct metrics_write_key {
	/* Claims the key; *is_replay: a committed outcome answers and nothing is written. */
	int (*claim_tx)(struct db_conn *conn, void *arg, bool *is_replay, struct mon_error *err);
	/* Stores the outcome of the write (result). */
	int (*store_tx)(struct db_conn *conn, void *arg, const struct metrics_write_result *result,
	                struct mon_error *err);
	void *arg;
};

/*
 * Writes points (already valid, count >= 1, no two with the same key) in
 * one transaction within timeout_ms, with scratch memory from a; the result is known only once the
 * transaction committed. key (may be NULL): the call's idempotency key. MON_EUNAVAIL / MON_EDEADLINE / MON_EINVAL from
 * the database.
 */
int metrics_write(struct db_pool *pool, struct arena *a, int64_t timeout_ms, Monitoring__V1__MetricPoint *const *points,
                  size_t count, const struct metrics_write_key *key, struct metrics_write_result *out,
                  struct mon_error *err) MON_MUST_CHECK;

/*
 * What every pooled connection of monitord runs once (db_config.session_sql):
 * the temporary staging table of metrics_write, emptied at each commit.
 */
extern const char metrics_session_sql[];

/*
 * Reads a stored point's row (columns named as tb_performance_metric's:
 * time as epoch microseconds in "time_us", tags as JSON text, metric_type
 * as its enum label) into a MetricPoint allocated in a. Shared by the
 * queries and the stream.
 */
int metrics_point_from_row(struct arena *a, const struct db_result *res, int row, Monitoring__V1__MetricPoint **out,
                           struct mon_error *err) MON_MUST_CHECK;

/* A metric_type enum label of the database to the API's; UNSPECIFIED for one it does not know. */
Monitoring__V1__MetricType metrics_type_from_label(const char *label);

#endif
