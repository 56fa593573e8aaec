/*
 * The running monitord: configuration, database pool, event bus, every
 * service and background part, the RPC server and the database monitor.
 * The app creates each part (app_start) and stops them all in one order
 * (app_stop). Each service's handlers get their service's context (struct
 * alerts_service, ...) as their user pointer, never the app.
 */
#ifndef MON_SERVER_APP_H
#define MON_SERVER_APP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "access/identity.h"
#include "access/service.h"
#include "alerts/engine.h"
#include "alerts/notify.h"
#include "alerts/service.h"
#include "alerts/watch.h"
#include "audit/audit.h"
#include "config.h"
#include "db/db.h"
#include "health/prober.h"
#include "health/retention.h"
#include "health/service.h"
#include "health/watch.h"
#include "metrics/rollup.h"
#include "metrics/service.h"
#include "metrics/watch.h"
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
	struct stream_hub *health_hub;
	struct health_retention *health_retention;
	struct stream_hub *metrics_hub;
	struct metrics_maintenance *metrics_maintenance;
	struct stream_hub *alerts_hub;
	struct alerts_engine *alerts_engine;
	struct notifier *notifier;
	struct rpc_server *rpc;

	/* The user pointers of the services' handlers, filled by app_start. */
	struct access_service access_svc;
	struct health_service health_svc;
	struct metrics_service metrics_svc;
	struct alerts_service alerts_svc;

	/* The database monitor: applies migrations, then follows reachability. */
	pthread_t monitor;
	bool has_monitor;
	pthread_mutex_t monitor_lock;
	pthread_cond_t monitor_cond;
	bool monitor_stop;
	atomic_bool db_ready; /* migrations applied and the last ping answered */
};

/* PEM texts of the server's TLS (all NULL: plaintext), read by the caller. */
struct app_tls {
	const char *cert_pem;
	const char *key_pem;
	const char *client_ca_pem; /* NULL: no client certificates asked for */
};

/*
 * Starts every part of app (app->cfg loaded): the database (the embedded
 * cluster when none is configured), pool and bus, the identity store, the
 * watch hubs, the alert evaluator and notifier, the audit writer, the RPC
 * server with every service, the database monitor, the prober, health
 * retention and metrics maintenance, then starts serving; the bound port
 * goes to *port_out. On failure logs why and returns non-zero; app_stop
 * then stops what did start.
 */
int app_start(struct app *app, const struct app_tls *tls, int *port_out) MON_MUST_CHECK;

/*
 * Stops and frees every part app_start started, in the one order that is
 * safe (see app.c), each call accepting a part that never started.
 */
void app_stop(struct app *app);

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
