/*
 * AlertsService.WatchAlerts: the alert change stream, a kind of resumable
 * event stream (stream/stream.h). The app creates its hub with
 * alerts_watch_kind (stream_hub_create); the handler hands each stream to
 * it. Streams start with a snapshot of the matching unresolved alerts and
 * SNAPSHOT_COMPLETE, or resume after a sequence with exactly the changes
 * missed (CURSOR_EXPIRED and a fresh snapshot when the log no longer holds
 * them); heartbeats carry the cursor; a subscriber that falls behind is
 * told to resume (RESUME_REQUIRED, FELL_BEHIND) and ended with
 * RESOURCE_EXHAUSTED.
 */
#ifndef MON_SERVER_ALERTS_WATCH_H
#define MON_SERVER_ALERTS_WATCH_H

#include "monitoring/v1/alerts.pb-c.h"
#include "rpc/rpc.h"
#include "stream/stream.h"
#include "util/error.h"

/* The stream kind; its hub is created, drained and destroyed by the app. */
extern const struct stream_kind alerts_watch_kind;

/*
 * The handler, given the kind's hub (from the service's typed context):
 * validates the request and hands the stream to the hub. Errors:
 * MON_EINVAL naming the field; MON_ELIMIT past the subscriber limit;
 * MON_EUNAVAIL during shutdown.
 */
int alerts_watch(struct stream_hub *hub, struct rpc_ctx *ctx, const Monitoring__V1__WatchAlertsRequest *req,
                 struct rpc_stream *stream) MON_MUST_CHECK;

#endif
