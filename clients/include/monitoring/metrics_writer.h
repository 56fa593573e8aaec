/*
 * libmonitoring's batching metrics writer: buffers MetricPoints added by
 * any number of threads and records them with MetricsService.RecordMetrics
 * from a background thread, in batches of up to max_batch_points, sent when
 * a batch is full, when its oldest point has waited max_delay_ms, or on
 * mon_metrics_writer_flush.
 *
 * Delivery: a batch that fails with UNAVAILABLE, DEADLINE_EXCEEDED or
 * RESOURCE_EXHAUSTED is sent again, the same points in the same order,
 * after an exponential backoff with jitter, until it succeeds or
 * retry_timeout_ms has passed. RecordMetrics is idempotent (a point is keyed
 * by time, metric_name and endpoint; a repeat replaces the stored point), so
 * a batch that was committed but whose reply was lost is counted as
 * duplicates, never stored twice. Batches are sent one at a time, in the
 * order their points were added, and a batch ends before a point whose key
 * it already holds (the server refuses a key twice in one request), so a
 * later point with the same key always replaces an earlier one. Points that cannot be recorded (invalid points,
 * permission denied, retries exhausted, writer closed first) are counted and handed to the error callback; nothing is
 * dropped silently.
 *
 * Backpressure: the buffer holds at most max_buffered_points (queued and in
 * flight). When it is full mon_metrics_writer_add blocks until the
 * background thread frees room, for at most add_timeout_ms, then fails with
 * RESOURCE_EXHAUSTED.
 *
 *   mon_metrics_writer *w = NULL;
 *   mon_metrics_writer_options o = {0};   // all defaults
 *   if (mon_metrics_writer_create(client, &o, &w, &st) != 0) ...
 *   Monitoring__V1__MetricPoint p = MONITORING__V1__METRIC_POINT__INIT;
 *   ... fill p ...
 *   mon_metrics_writer_add(w, &p, &st);   // p stays the caller's
 *   mon_metrics_writer_close(w, 10000, &st);
 */
#ifndef MONITORING_METRICS_WRITER_H
#define MONITORING_METRICS_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include <monitoring/client.h>
#include <monitoring/v1/metrics.pb-c.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mon_metrics_writer mon_metrics_writer;

/* Largest batch RecordMetrics accepts. */
#define MON_METRICS_WRITER_MAX_BATCH_POINTS 5000

/*
 * Points the writer could not record, given to the error callback. The
 * pointers are valid only during the callback.
 */
typedef struct mon_metrics_writer_failure {
	/*
	 * Why: INVALID_ARGUMENT (points refused by the server; errors says
	 * which fields), PERMISSION_DENIED, UNAUTHENTICATED, the last status
	 * of a batch whose retries ran out, or CANCELLED for points still
	 * buffered when the writer was closed.
	 */
	int code;
	const char *message;
	/* The points not recorded, as sent (or as they would have been). */
	const Monitoring__V1__MetricPoint *const *points;
	size_t points_n;
	/*
	 * The server's errors, one per invalid field; index is into points
	 * above. Empty unless code is INVALID_ARGUMENT.
	 */
	const Monitoring__V1__PointError *const *errors;
	size_t errors_n;
} mon_metrics_writer_failure;

/*
 * Called on the writer's background thread once per batch (or part of a
 * batch) that could not be recorded. It must return quickly and must not
 * call the writer's functions (the writer waits for it).
 */
typedef void (*mon_metrics_writer_error_fn)(void *user_data, const mon_metrics_writer_failure *failure);

typedef struct mon_metrics_writer_options {
	int max_batch_points;                 /* points per RecordMetrics; 0: 1000; at most 5000 */
	size_t max_batch_bytes;               /* serialised points per request; 0: 4000000 (below the
	                                         server's 4 MiB message limit) */
	int64_t max_delay_ms;                 /* longest a point waits for its batch to fill; 0: 1000 */
	size_t max_buffered_points;           /* points queued and in flight; 0: 100000; at least
	                                         max_batch_points */
	int64_t add_timeout_ms;               /* how long _add waits for room when the buffer is full:
	                                         0 as long as it takes, > 0 at most that long, < 0 not at all */
	int64_t call_timeout_ms;              /* deadline of one RecordMetrics attempt; 0: 10000 */
	int64_t retry_timeout_ms;             /* how long a batch is retried, from its first attempt,
	                                         before its points are given up; 0: 60000; < 0 forever */
	int64_t retry_initial_ms;             /* first backoff; 0: 100. Each retry doubles it, up to */
	int64_t retry_max_ms;                 /* 0: 5000. The wait is drawn between half and all of it. */
	int is_atomic;                        /* 1: one invalid point fails its whole batch (RecordMetrics'
	                                         default); 0 (default): valid points are written
	                                         (allow_partial) and only the invalid ones reported, since
	                                         the writer, not the caller, chose the batch */
	mon_metrics_writer_error_fn on_error; /* may be NULL: failures are then only counted */
	void *on_error_data;
} mon_metrics_writer_options;

/* Counters since the writer was created. */
typedef struct mon_metrics_writer_stats {
	uint64_t points_added;    /* accepted by _add */
	uint64_t points_sent;     /* acknowledged by the server: inserted + updated + duplicate */
	uint64_t points_failed;   /* given up and reported to the callback */
	uint64_t points_retried;  /* points sent again (a batch of 1000 retried twice: 2000) */
	uint64_t points_inserted; /* the server's counts, summed over replies */
	uint64_t points_updated;
	uint64_t points_duplicate;
	uint64_t batches_sent;    /* RecordMetrics calls that succeeded */
	uint64_t batches_failed;  /* batches whose points were given up */
	uint64_t retries;         /* RecordMetrics attempts after a first one failed */
	uint64_t points_buffered; /* now: queued plus in flight */
	int last_error_code;      /* gRPC code of the last failed attempt; 0 if none */
} mon_metrics_writer_stats;

/*
 * Creates a writer that sends through client (which must outlive the
 * writer) and starts its background thread. opts may be NULL (defaults);
 * it is copied. Returns 0 and *out (the caller's; free with
 * mon_metrics_writer_close) or a negative code with status (may be NULL)
 * naming the bad option (INVALID_ARGUMENT) or RESOURCE_EXHAUSTED when out
 * of memory.
 */
MON_API int mon_metrics_writer_create(mon_client *client, const mon_metrics_writer_options *opts,
                                      mon_metrics_writer **out, mon_status *status);

/*
 * Copies point into the buffer (the point stays the caller's) and returns
 * 0; the point is sent later. Any number of threads may add concurrently.
 * Fails with a negative code and status: INVALID_ARGUMENT for a NULL point
 * or one larger than max_batch_bytes, RESOURCE_EXHAUSTED when the buffer
 * stayed full for add_timeout_ms ("metrics writer buffer full: 100000
 * points buffered"), FAILED_PRECONDITION once the writer is closing. The
 * server validates the point; its verdict reaches the error callback.
 */
MON_API int mon_metrics_writer_add(mon_metrics_writer *writer, const Monitoring__V1__MetricPoint *point,
                                   mon_status *status);

/*
 * Sends every point added before the call, without waiting for the batch
 * to fill, and waits until each has been recorded or given up, for at most
 * timeout_ms (< 0: no limit). Returns 0 when all of them were recorded;
 * otherwise a negative code with status: DEADLINE_EXCEEDED when time ran
 * out (the points stay buffered and will still be sent), or the code of
 * the last failure when some were given up (the callback has them).
 */
MON_API int mon_metrics_writer_flush(mon_metrics_writer *writer, int64_t timeout_ms, mon_status *status);

/* Copies the counters into *out. */
MON_API void mon_metrics_writer_stats_get(mon_metrics_writer *writer, mon_metrics_writer_stats *out);

/*
 * Flushes (as mon_metrics_writer_flush, waiting at most timeout_ms, < 0 no
 * limit), stops the background thread and frees the writer. Points still
 * not recorded when time runs out are abandoned (the attempt in flight
 * ends within call_timeout_ms) and reported to the callback with
 * CANCELLED. Returns 0 when every point added was recorded, else a negative
 * code with status saying how many were not. Accepts NULL (returns 0). No
 * other call on the writer may be running or made once close has begun.
 */
MON_API int mon_metrics_writer_close(mon_metrics_writer *writer, int64_t timeout_ms, mon_status *status);

#ifdef __cplusplus
}
#endif

#endif
