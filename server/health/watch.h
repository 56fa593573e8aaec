/*
 * HealthService.WatchServiceHealth: the live health stream, a kind of
 * resumable event stream (stream/stream.h). The app creates its hub with
 * health_watch_kind (stream_hub_create); the handler hands each stream to
 * it. Streams start with a snapshot or resume after a sequence, with no gap
 * and no duplicate; a subscriber whose queue fills is told to resume
 * (RESUME_REQUIRED, FELL_BEHIND) and ended with RESOURCE_EXHAUSTED.
 */
#ifndef MON_SERVER_HEALTH_WATCH_H
#define MON_SERVER_HEALTH_WATCH_H

#include "monitoring/v1/health.pb-c.h"
#include "rpc/rpc.h"
#include "stream/stream.h"
#include "util/error.h"

/* The stream kind; its hub is created, drained and destroyed by the app. */
extern const struct stream_kind health_watch_kind;

/*
 * The handler, given the kind's hub (from the service's typed context):
 * validates the request and hands the stream to the hub. Errors:
 * MON_EINVAL naming the field; MON_ELIMIT past the subscriber limit;
 * MON_EUNAVAIL during shutdown.
 */
int health_watch(struct stream_hub *hub, struct rpc_ctx *ctx, const Monitoring__V1__WatchServiceHealthRequest *req,
                 struct rpc_stream *stream) MON_MUST_CHECK;

#endif
