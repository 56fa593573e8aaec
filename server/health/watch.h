/*
 * HealthService.WatchServiceHealth: the live health stream. One hub per
 * process LISTENs on "mon_health" (server/health/store.h), reads the new
 * rows of tb_service_health_event on its own thread and fans each out to
 * the matching subscribers; a subscriber is a small struct and the
 * stream's bounded queue, never a thread. Streams start with a snapshot or
 * resume after a sequence, with no gap and no duplicate; a subscriber
 * whose queue fills is told to resume (RESUME_REQUIRED, FELL_BEHIND) and
 * ended with RESOURCE_EXHAUSTED.
 */
#ifndef MON_SERVER_HEALTH_WATCH_H
#define MON_SERVER_HEALTH_WATCH_H

#include "db/db.h"
#include "monitoring/v1/health.pb-c.h"
#include "rpc/rpc.h"
#include "util/error.h"

struct health_watch_hub;

/*
 * Creates the process's hub: subscribes to "mon_health" on bus (before or
 * after db_bus_start) and starts the hub thread, which reads events with
 * connections from pool. pool and bus must outlive the hub. Only one hub
 * may exist at a time (MON_EPRECOND otherwise): health_watch finds it
 * without a user pointer. The caller owns *out.
 */
int health_watch_hub_create(struct db_pool *pool, struct db_bus *bus, struct health_watch_hub **out,
                            struct mon_error *err) MON_MUST_CHECK;

/*
 * Stops the hub thread and frees the hub; accepts NULL. Call it after
 * rpc_server_destroy (stream close callbacks use the hub until then) and
 * after db_bus_destroy (the bus callback points at the hub), before
 * db_pool_destroy.
 */
void health_watch_hub_destroy(struct health_watch_hub *hub);

/*
 * Server shutdown, for rpc_server_on_shutdown (arg is the hub): stops the
 * fan-out for good, then tells every live subscriber where to resume
 * (RESUME_REQUIRED, SERVER_SHUTDOWN, the cursor of what was queued to it,
 * all of which is still sent) and ends its stream with UNAVAILABLE. A
 * stream handed to the hub afterwards gets the same at once; one still in
 * its snapshot or backlog is ended by the server. Does not block.
 */
void health_watch_hub_drain(void *arg);

/*
 * The WatchServiceHealth handler (worker pool: it reads the snapshot or
 * the backlog, then hands the stream to the hub and returns 0). Errors:
 * MON_EINVAL naming the field (negative resume_after_sequence, UNSPECIFIED
 * in statuses, too many service_ids); MON_EUNAVAIL when the hub is not
 * running or the database is down.
 */
int health_watch(struct rpc_ctx *ctx, const Monitoring__V1__WatchServiceHealthRequest *req,
                 struct rpc_stream *stream) MON_MUST_CHECK;

#endif
