/*
 * AlertsService.WatchAlerts: one hub per process LISTENs on "mon_alerts"
 * (alerts/store.h), reads new tb_alert_event rows in sequence order on its
 * own thread and fans each out to matching subscribers (a small struct and
 * the stream's bounded queue each, never a thread). Streams start with a
 * snapshot of the matching unresolved alerts and SNAPSHOT_COMPLETE, or
 * resume after a sequence with exactly the changes missed (CURSOR_EXPIRED
 * and a fresh snapshot when the log no longer holds them); heartbeats
 * carry the cursor; a subscriber that falls behind is told to resume
 * (RESUME_REQUIRED, FELL_BEHIND) and ended with RESOURCE_EXHAUSTED.
 */
#ifndef MON_SERVER_ALERTS_WATCH_H
#define MON_SERVER_ALERTS_WATCH_H

#include "db/db.h"
#include "monitoring/v1/alerts.pb-c.h"
#include "rpc/rpc.h"
#include "util/error.h"

struct alerts_watch_hub;

/* Creates the process's hub (before db_bus_start); one per process. */
int alerts_watch_hub_create(struct db_pool *pool, struct db_bus *bus, struct alerts_watch_hub **out,
                            struct mon_error *err) MON_MUST_CHECK;

/* After rpc_server_destroy and db_bus_destroy, before db_pool_destroy; accepts NULL. */
void alerts_watch_hub_destroy(struct alerts_watch_hub *hub);

/*
 * Server shutdown, for rpc_server_on_shutdown (arg is the hub): stops the
 * fan-out for good, then tells every live subscriber where to resume
 * (RESUME_REQUIRED, SERVER_SHUTDOWN, the cursor of what was queued to it,
 * all of which is still sent) and ends its stream with UNAVAILABLE. A
 * stream handed to the hub afterwards gets the same at once; one still in
 * its snapshot or replay is ended by the server. Does not block.
 */
void alerts_watch_hub_drain(void *arg);

/* The WatchAlerts handler. */
int alerts_watch(struct rpc_ctx *ctx, const Monitoring__V1__WatchAlertsRequest *req,
                 struct rpc_stream *stream) MON_MUST_CHECK;

#endif
