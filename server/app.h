/*
 * The running monitord: configuration, database pool, event bus, RPC server
 * and the background database monitor. Service handlers receive the app as
 * their user pointer (rpc_ctx_user).
 */
#ifndef MON_SERVER_APP_H
#define MON_SERVER_APP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "audit/audit.h"
#include "config.h"
#include "alerts/engine.h"
#include "alerts/notify.h"
#include "alerts/watch.h"
#include "health/prober.h"
#include "health/retention.h"
#include "health/watch.h"
#include "metrics/rollup.h"
#include "metrics/watch.h"
#include "access/identity.h"
#include "db/db.h"
#include "rpc/server.h"

struct app {
	struct mon_config cfg;
	struct db_embedded *embedded;
	char conninfo[1024];
	struct db_pool *pool;
	struct db_bus *bus;
	struct identity_store *identity;
	struct audit_writer *audit;
	struct prober *prober;
	struct health_watch_hub *health_hub;
	struct health_retention *health_retention;
	struct metrics_watch_hub *metrics_hub;
	struct metrics_maintenance *metrics_maintenance;
	struct alerts_watch_hub *alerts_hub;
	struct alerts_engine *alerts_engine;
	struct notifier *notifier;
	struct rpc_server *rpc;

	/* The database monitor: applies migrations, then follows reachability. */
	pthread_t monitor;
	bool has_monitor;
	pthread_mutex_t monitor_lock;
	pthread_cond_t monitor_cond;
	bool monitor_stop;
	atomic_bool db_ready; /* migrations applied and the last ping answered */
	atomic_bool migrated;
};

/*
 * Binds every monitoring.v1 service (methods not built yet answer
 * UNIMPLEMENTED) and, when the auth setting is on, turns on authentication
 * with the identity store and the audit writer of refused calls.
 */
int app_bind_services(struct app *app, struct mon_error *err) MON_MUST_CHECK;

/* Starts and stops the database monitor thread. */
int app_monitor_start(struct app *app, struct mon_error *err) MON_MUST_CHECK;
void app_monitor_stop(struct app *app);

#endif
