/*
 * MetricsService.WatchMetrics: the live metrics stream. One hub per
 * process LISTENs on "mon_metrics" (metrics/ingest.h), reads the new rows
 * of tb_metric_ingest_log in sequence order on its own thread (a payload is
 * a monitoring.v1.MetricBatch of the batch's points as stored) and hands
 * the matching points of each to every subscriber's batcher. Subscribers
 * get points in batches (max_batch_points, max_batch_delay), optionally
 * downsampled per series and interval; one whose bounded buffer is full
 * drops points and is told so by a MetricGap with the count and time range
 * of what it missed. resume_after_sequence replays what the log still
 * holds, or answers with a gap when the cursor is older than the log.
 */
#ifndef MON_SERVER_METRICS_WATCH_H
#define MON_SERVER_METRICS_WATCH_H

#include "db/db.h"
#include "monitoring/v1/metrics.pb-c.h"
#include "rpc/rpc.h"
#include "util/error.h"

struct metrics_watch_hub;

/*
 * Creates the process's hub: subscribes to "mon_metrics" on bus (before
 * db_bus_start) and starts its thread, which reads the log with
 * connections from pool. pool and bus must outlive the hub. One hub per
 * process (MON_EPRECOND otherwise): metrics_watch finds it without a user
 * pointer. The caller owns *out.
 */
int metrics_watch_hub_create(struct db_pool *pool, struct db_bus *bus, struct metrics_watch_hub **out,
                             struct mon_error *err) MON_MUST_CHECK;

/*
 * Stops the hub and frees it; accepts NULL. Call it after
 * rpc_server_destroy and db_bus_destroy, before db_pool_destroy.
 */
void metrics_watch_hub_destroy(struct metrics_watch_hub *hub);

/*
 * Server shutdown, for rpc_server_on_shutdown (arg is the hub): stops the
 * hub's sending for good, then gives every live subscriber its pending
 * points (as far as its queue takes them), RESUME_REQUIRED
 * (SERVER_SHUTDOWN) with the cursor of what was queued to it, and ends its
 * stream with UNAVAILABLE. A stream handed to the hub afterwards gets the
 * same at once; one still replaying is ended by the server. Does not block.
 */
void metrics_watch_hub_drain(void *arg);

/* The WatchMetrics handler. Errors: MON_EINVAL naming the field; MON_EUNAVAIL when the hub is not running. */
int metrics_watch(struct rpc_ctx *ctx, const Monitoring__V1__WatchMetricsRequest *req,
                  struct rpc_stream *stream) MON_MUST_CHECK;

#endif
