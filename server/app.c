/*
 * The app: starts every part of monitord in dependency order (app_start),
 * wires the services into the RPC server with their typed contexts, and
 * stops everything in the one order that is safe (app_stop). Also the
 * database monitor that drives the standard health service: every
 * monitoring.v1 service is NOT_SERVING until the migrations are applied,
 * and again whenever the database stops answering; SERVING once it answers
 * again. RPCs meanwhile get UNAVAILABLE from the data layer, and the pool
 * reconnects by itself.
 */
#include "app.h"

#include <string.h>
#include <time.h>

#include "metrics/ingest.h"
#include "mon_descriptor_set.h"
#include "mon_services.h"
#include "rpc/method.h"
#include "util/log.h"

#define MONITOR_INTERVAL_MS 1000
#define PING_TIMEOUT_MS 2000

static bool is_monitoring_service(const struct rpc_service_desc *d)
{
	return strncmp(d->name, "monitoring.", 11) == 0;
}

static int app_authenticate(void *arg, const struct rpc_auth_request *req, struct rpc_identity *out,
                            struct mon_error *err)
{
	struct app *app = arg;
	return identity_authenticate(app->identity, req, out, err);
}

static void app_on_deny(void *arg, const struct rpc_auth_request *req, const struct rpc_identity *who, int code,
                        const char *message)
{
	struct app *app = arg;
	audit_on_deny(app->audit, req, who, code, message);
}

int app_bind_services(struct app *app, struct mon_error *err)
{
	app->access_svc = (struct access_service){.pool = app->pool};
	app->health_svc =
	        (struct health_service){.pool = app->pool, .prober = app->prober, .watch_hub = app->health_hub};
	app->metrics_svc = (struct metrics_service){
	        .pool = app->pool,
	        .alerts_engine = app->alerts_engine,
	        .watch_hub = app->metrics_hub,
	        .raw_retention_days = app->cfg.metrics_raw_retention_days,
	        .rollup_5min_days = app->cfg.metrics_5min_retention_days,
	        .rollup_hourly_days = app->cfg.metrics_hourly_retention_days,
	};
	app->alerts_svc =
	        (struct alerts_service){.pool = app->pool, .engine = app->alerts_engine, .watch_hub = app->alerts_hub};
	int rc = access_service_bind(app->rpc, &app->access_svc, err);
	if (rc == 0)
		rc = health_service_bind(app->rpc, &app->health_svc, err);
	if (rc == 0)
		rc = metrics_service_bind(app->rpc, &app->metrics_svc, err);
	if (rc == 0)
		rc = alerts_service_bind(app->rpc, &app->alerts_svc, err);
	if (rc != 0)
		return rc;
	for (size_t i = 0; i < mon_all_services_count; i++) {
		const struct rpc_service_desc *d = mon_all_services[i];
		if (!is_monitoring_service(d) || strcmp(d->name, "monitoring.v1.AccessService") == 0 ||
		    strcmp(d->name, "monitoring.v1.HealthService") == 0 ||
		    strcmp(d->name, "monitoring.v1.MetricsService") == 0 ||
		    strcmp(d->name, "monitoring.v1.AlertsService") == 0)
			continue; /* built above; the runtime serves the standard services itself */
		rc = rpc_server_bind(app->rpc, d, NULL, NULL, 0, err);
		if (rc != 0)
			return rc;
	}
	if (!app->cfg.auth) {
		log_warn("msg=\"authentication is off (auth = false): every caller is anonymous and no role is "
		         "checked\"");
		return 0;
	}
	struct rpc_auth_config ac = {
	        .authenticate = app_authenticate,
	        .on_deny = app_on_deny,
	        .arg = app,
	        .protect_standard = app->cfg.auth_standard_services,
	        .rate_per_s = app->cfg.rate_limit_per_s,
	        .rate_burst = app->cfg.rate_limit_burst,
	        .max_streams_per_caller = app->cfg.max_streams_per_caller,
	};
	rpc_server_set_auth(app->rpc, &ac);
	return 0;
}

static void set_health(struct app *app, enum rpc_health_status status)
{
	log_info("msg=\"health of the server and every monitoring.v1 service\" status=%s",
	         status == RPC_HEALTH_SERVING ? "SERVING" : "NOT_SERVING");
	rpc_health_set(app->rpc, "", status);
	for (size_t i = 0; i < mon_all_services_count; i++)
		if (is_monitoring_service(mon_all_services[i]))
			rpc_health_set(app->rpc, mon_all_services[i]->name, status);
}

/* Waits up to ms or until stop is requested; returns true when stopping. */
static bool monitor_wait(struct app *app, int ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&app->monitor_lock);
	while (!app->monitor_stop) {
		if (pthread_cond_timedwait(&app->monitor_cond, &app->monitor_lock, &ts) != 0)
			break;
	}
	bool stop = app->monitor_stop;
	pthread_mutex_unlock(&app->monitor_lock);
	return stop;
}

static void *monitor_main(void *arg)
{
	struct app *app = arg;
	bool logged_once = false;
	do {
		struct mon_error err = {0};
		if (!db_pool_is_migrated(app->pool)) {
			if (db_migrate(app->pool, &err) == 0) {
				/*
				 * The keys are loaded before the services say SERVING: a
				 * caller that waited for SERVING must not have its valid
				 * key refused. A failed load is retried by the store.
				 */
				if (app->identity && identity_store_reload(app->identity, &err) != 0) {
					log_warn("msg=\"could not load callers and keys yet\" error=\"%s\"", err.msg);
					identity_store_request_reload(app->identity);
				}
				log_info("msg=\"database schema is up to date\"");
				if (db_pool_check_durability(app->pool, PING_TIMEOUT_MS, &err) != 0)
					log_info(
					        "msg=\"could not read the database's durability settings\" error=\"%s\"",
					        err.msg);
			} else {
				if (!logged_once)
					log_warn("msg=\"could not apply migrations, retrying\" error=\"%s\"", err.msg);
				logged_once = true;
				if (err.code == MON_EPRECOND)
					log_error("msg=\"migrations refused: %s\"", err.msg);
				continue;
			}
		}
		int rc = db_pool_ping(app->pool, PING_TIMEOUT_MS, &err);
		bool up = rc == 0 || rc == MON_ELIMIT; /* a busy pool is not a down database */
		bool was = atomic_exchange(&app->db_ready, up);
		if (up != was || !logged_once) {
			if (up)
				log_info("msg=\"database is reachable\"");
			else
				log_warn("msg=\"database is unreachable\" error=\"%s\"", err.msg);
			set_health(app, up ? RPC_HEALTH_SERVING : RPC_HEALTH_NOT_SERVING);
		}
		logged_once = true;
	} while (!monitor_wait(app, MONITOR_INTERVAL_MS));
	return NULL;
}

int app_monitor_start(struct app *app, struct mon_error *err)
{
	pthread_mutex_init(&app->monitor_lock, NULL);
	pthread_cond_init(&app->monitor_cond, NULL);
	atomic_init(&app->db_ready, false);
	set_health(app, RPC_HEALTH_NOT_SERVING);
	if (pthread_create(&app->monitor, NULL, monitor_main, app) != 0)
		return mon_error_set(err, MON_EINTERNAL, "could not start the database monitor");
	app->has_monitor = true;
	return 0;
}

void app_monitor_stop(struct app *app)
{
	if (!app->has_monitor)
		return;
	pthread_mutex_lock(&app->monitor_lock);
	app->monitor_stop = true;
	pthread_cond_broadcast(&app->monitor_cond);
	pthread_mutex_unlock(&app->monitor_lock);
	pthread_join(app->monitor, NULL);
	app->has_monitor = false;
	pthread_mutex_destroy(&app->monitor_lock);
	pthread_cond_destroy(&app->monitor_cond);
}

/* ---- start and stop ---- */

/* The database: the configured one, or the embedded cluster; then the pool and the bus. */
static int start_database(struct app *app)
{
	struct mon_error err = {0};
	const char *conninfo = app->cfg.database;
	if (conninfo == NULL) {
		log_info("msg=\"no database configured, starting the embedded PostgreSQL\" data_dir=\"%s\"",
		         app->cfg.data_dir);
		if (db_embedded_start(app->cfg.data_dir, &app->embedded, app->conninfo, sizeof(app->conninfo), &err) !=
		    0) {
			log_error("msg=\"could not start the embedded PostgreSQL: %s\"", err.msg);
			return err.code ? err.code : MON_EINTERNAL;
		}
		conninfo = app->conninfo;
	}
	struct db_config dbc = {
	        .conninfo = conninfo,
	        .pool_size = app->cfg.db_pool_size,
	        .connect_timeout_s = 5,
	        .application_name = "monitord",
	        .session_sql = metrics_session_sql,
	        .statement_timeout_ms = app->cfg.db_statement_timeout_ms,
	        .is_gated_by_migrations = true, /* the parts started below wait for the monitor's migration */
	};
	if (db_pool_create(&dbc, &app->pool, &err) != 0) {
		log_error("msg=\"database: %s\"", err.msg);
		return err.code ? err.code : MON_EINTERNAL;
	}
	if (db_bus_create(conninfo, &app->bus, &err) != 0) {
		log_error("msg=\"%s\"", err.msg);
		return err.code ? err.code : MON_EINTERNAL;
	}
	return 0;
}

/* Everything that listens on the bus subscribes before db_bus_start; then the audit writer. */
static int start_listeners(struct app *app, struct mon_error *err)
{
	int rc = identity_store_create(app->pool, app->bus, &app->identity, err);
	if (rc == 0)
		rc = stream_hub_create(&health_watch_kind, app->pool, app->bus, &app->health_hub, err);
	if (rc == 0)
		rc = stream_hub_create(&metrics_watch_kind, app->pool, app->bus, &app->metrics_hub, err);
	if (rc == 0)
		rc = stream_hub_create(&alerts_watch_kind, app->pool, app->bus, &app->alerts_hub, err);
	if (rc == 0)
		rc = alerts_engine_start(
		        &(struct alerts_engine_config){.pool = app->pool,
		                                       .bus = app->bus,
		                                       .tick_ms = app->cfg.alert_tick_ms,
		                                       .retention_days = app->cfg.alert_retention_days},
		        &app->alerts_engine, err);
	if (rc == 0)
		rc = notifier_start(&(struct notify_config){.pool = app->pool,
		                                            .bus = app->bus,
		                                            .max_attempts = app->cfg.notify_max_attempts,
		                                            .timeout_ms = app->cfg.notify_timeout_ms,
		                                            .secrets_key_file = app->cfg.secrets_key_file},
		                    &app->notifier, err);
	if (rc == 0)
		rc = db_bus_start(app->bus, err);
	if (rc == 0)
		rc = audit_writer_create(app->pool, &app->audit, err);
	return rc;
}

/* The RPC server with every service bound, the database monitor and the watch hubs' shutdown hooks. */
static int start_rpc(struct app *app, const struct app_tls *tls, struct mon_error *err)
{
	struct rpc_server_config rc;
	rpc_server_config_defaults(&rc);
	rc.listen_addr = app->cfg.listen;
	rc.cq_threads = app->cfg.cq_threads;
	rc.worker_threads = app->cfg.worker_threads;
	rc.max_recv_message_bytes = app->cfg.max_recv_message_bytes;
	rc.max_send_message_bytes = app->cfg.max_send_message_bytes;
	rc.max_concurrent_streams = app->cfg.max_concurrent_streams;
	rc.keepalive_min_ping_ms = app->cfg.keepalive_min_ping_ms;
	rc.keepalive_time_ms = app->cfg.keepalive_time_ms;
	rc.keepalive_timeout_ms = app->cfg.keepalive_timeout_ms;
	rc.handshake_timeout_ms = app->cfg.handshake_timeout_ms;
	rc.stream_queue_max = app->cfg.stream_queue_max;
	rc.tls_cert_pem = tls->cert_pem;
	rc.tls_key_pem = tls->key_pem;
	rc.tls_client_ca_pem = tls->client_ca_pem;
	rc.descriptor_set = mon_descriptor_set;
	rc.descriptor_set_len = mon_descriptor_set_len;
	int r = rpc_server_create(&rc, &app->rpc, err);
	if (r == 0)
		r = app_bind_services(app, err);
	if (r == 0)
		r = app_monitor_start(app, err);
	if (r != 0)
		return r;
	/* At shutdown the watch hubs tell their streams where to resume, before the server ends them. */
	if (rpc_server_on_shutdown(app->rpc, stream_hub_drain, app->health_hub) != 0 ||
	    rpc_server_on_shutdown(app->rpc, stream_hub_drain, app->metrics_hub) != 0 ||
	    rpc_server_on_shutdown(app->rpc, stream_hub_drain, app->alerts_hub) != 0)
		return mon_error_set(err, MON_EINTERNAL, "could not register the watch streams' shutdown");
	return 0;
}

/*
 * The background jobs: the prober (which RunHealthCheck also uses), health
 * retention (which also prunes idempotency keys), metrics maintenance.
 */
static int start_jobs(struct app *app, struct mon_error *err)
{
	struct prober_config pc = {
	        .pool = app->pool,
	        .concurrency = app->cfg.probe_concurrency,
	        .proxy = app->cfg.probe_proxy,
	        .run_concurrency = app->cfg.probe_run_concurrency,
	        .allow_networks = app->cfg.probe_allow_networks,
	        .deny_networks = app->cfg.probe_deny_networks ? app->cfg.probe_deny_networks : "", /* "": none */
	        .follow_cross_host_redirects = app->cfg.probe_cross_host_redirects,
	};
	struct metrics_maintenance_config mc = {
	        .pool = app->pool,
	        .interval_ms = app->cfg.metrics_rollup_interval_ms,
	        .raw_retention_days = app->cfg.metrics_raw_retention_days,
	        .rollup_5min_days = app->cfg.metrics_5min_retention_days,
	        .rollup_hourly_days = app->cfg.metrics_hourly_retention_days,
	        .replay_window_s = app->cfg.metrics_replay_window_s,
	};
	int rc = prober_start(&pc, &app->prober, err);
	if (rc == 0) {
		app->health_svc.prober = app->prober; /* before rpc_server_start: no call can read it yet */
		app->health_svc.probe_policy = prober_policy(app->prober);
	}
	if (rc == 0)
		rc = health_retention_start(app->pool, app->cfg.health_check_retention_days,
		                            app->cfg.idempotency_retention_hours, 3600, &app->health_retention, err);
	if (rc == 0)
		rc = metrics_maintenance_start(&mc, &app->metrics_maintenance, err);
	return rc;
}

int app_start(struct app *app, const struct app_tls *tls, int *port_out)
{
	struct mon_error err = {0};
	int rc = start_database(app);
	if (rc != 0)
		return rc;
	rc = start_listeners(app, &err);
	if (rc == 0)
		rc = start_rpc(app, tls, &err);
	if (rc == 0)
		rc = start_jobs(app, &err);
	if (rc == 0)
		rc = rpc_server_start(app->rpc, port_out, &err);
	if (rc != 0)
		log_error("msg=\"%s\"", err.msg);
	return rc;
}

/*
 * The stop order, each step for a reason:
 *  1. the RPC server shuts down first: no new call, in-flight unary calls
 *     finish (within the grace), the watch hubs' drain hooks tell streams
 *     where to resume, and open streams end;
 *  2. the database monitor, which sets the server's health status;
 *  3. the prober after the server's shutdown, since RunHealthCheck uses it;
 *     then the other background jobs, which nothing else calls;
 *  4. the server is freed: stream close callbacks into the hubs may run
 *     until rpc_server_destroy returns;
 *  5. the bus, whose callbacks point into the hubs, the engine and the
 *     identity store: after it nothing calls them from outside;
 *  6. the health and metrics hubs (after the server and the bus); the alert
 *     evaluator (RecordMetrics fed it until the server went) and the
 *     notifier; the alerts hub; the identity store;
 *  7. the audit writer, which writes the refusals still queued, so after
 *     everything that could refuse a call;
 *  8. the pool, which every part above used, and last the embedded
 *     PostgreSQL under it.
 */
void app_stop(struct app *app)
{
	if (app->rpc)
		rpc_server_shutdown(app->rpc, app->cfg.shutdown_grace_ms);
	app_monitor_stop(app);
	prober_stop(app->prober);
	app->prober = NULL;
	app->health_svc.prober = NULL;
	app->health_svc.probe_policy = NULL;
	health_retention_stop(app->health_retention);
	metrics_maintenance_stop(app->metrics_maintenance);
	rpc_server_destroy(app->rpc);
	app->rpc = NULL;
	db_bus_destroy(app->bus);
	stream_hub_destroy(app->health_hub);
	stream_hub_destroy(app->metrics_hub);
	alerts_engine_stop(app->alerts_engine);
	notifier_stop(app->notifier);
	stream_hub_destroy(app->alerts_hub);
	identity_store_destroy(app->identity);
	audit_writer_destroy(app->audit);
	db_pool_destroy(app->pool);
	if (app->embedded) {
		log_info("msg=\"stopping the embedded PostgreSQL\"");
		db_embedded_stop(app->embedded);
	}
}
