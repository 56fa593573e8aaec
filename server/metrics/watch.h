/*
 * MetricsService.WatchMetrics: the live metrics stream, a batching kind of
 * resumable event stream (stream/stream.h). The app creates its hub with
 * metrics_watch_kind (stream_hub_create); the handler hands each stream to
 * it. Subscribers get the points of the ingest log's commits in batches
 * (max_batch_points, max_batch_delay), optionally downsampled per series
 * and interval; one whose bounded buffer is full drops points and is told
 * so by a MetricGap with the count and time range of what it missed.
 * resume_after_sequence replays what the log still holds, or answers with
 * a gap when the cursor is older than the log.
 */
#ifndef MON_SERVER_METRICS_WATCH_H
#define MON_SERVER_METRICS_WATCH_H

#include "monitoring/v1/metrics.pb-c.h"
#include "rpc/rpc.h"
#include "stream/stream.h"
#include "util/error.h"

/* The stream kind; its hub is created, drained and destroyed by the app. */
extern const struct stream_kind metrics_watch_kind;

/*
 * The handler, given the kind's hub (from the service's typed context):
 * validates the request and hands the stream to the hub. Errors:
 * MON_EINVAL naming the field; MON_ELIMIT past the subscriber limit;
 * MON_EUNAVAIL during shutdown.
 */
int metrics_watch(struct stream_hub *hub, struct rpc_ctx *ctx, const Monitoring__V1__WatchMetricsRequest *req,
                  struct rpc_stream *stream) MON_MUST_CHECK;

#endif
