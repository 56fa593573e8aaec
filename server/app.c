/*
 * Wiring of the services into the RPC server and the database monitor that
 * drives the standard health service: every monitoring.v1 service is
 * NOT_SERVING until the migrations are applied, and again whenever the
 * database stops answering; SERVING once it answers again. RPCs meanwhile
 * get UNAVAILABLE from the data layer, and the pool reconnects by itself.
 */
#include "app.h"

#include <string.h>
#include <time.h>

#include "mon_services.h"
#include "access/service.h"
#include "alerts/service.h"
#include "health/service.h"
#include "metrics/service.h"
#include "metrics/watch.h"
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
	int rc = access_service_bind(app->rpc, app->pool, err);
	if (rc != 0)
		return rc;
	struct health_service_extra health_extra = {
	        .run_health_check = health_run_check,
	        .watch_service_health = health_watch,
	};
	rc = health_service_bind(app->rpc, app->pool, &health_extra, err);
	if (rc != 0)
		return rc;
	struct metrics_service_extra metrics_extra = {
	        .watch_metrics = metrics_watch,
	        .raw_retention_days = app->cfg.metrics_raw_retention_days,
	        .rollup_5min_days = app->cfg.metrics_5min_retention_days,
	        .rollup_hourly_days = app->cfg.metrics_hourly_retention_days,
	};
	rc = metrics_service_bind(app->rpc, app->pool, &metrics_extra, err);
	if (rc != 0)
		return rc;
	rc = alerts_service_bind(app->rpc, app->pool, err);
	if (rc != 0)
		return rc;
	for (size_t i = 0; i < mon_all_services_count; i++) {
		const struct rpc_service_desc *d = mon_all_services[i];
		if (!is_monitoring_service(d) || strcmp(d->name, "monitoring.v1.AccessService") == 0 ||
		    strcmp(d->name, "monitoring.v1.HealthService") == 0 ||
		    strcmp(d->name, "monitoring.v1.MetricsService") == 0 ||
		    strcmp(d->name, "monitoring.v1.AlertsService") == 0)
			continue; /* built above; the runtime serves the standard services itself */
		rc = rpc_server_bind(app->rpc, d, NULL, app, 0, err);
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
		if (!atomic_load(&app->migrated)) {
			if (db_migrate(app->pool, &err) == 0) {
				atomic_store(&app->migrated, true);
				if (app->identity)
					identity_store_request_reload(app->identity);
				log_info("msg=\"database schema is up to date\"");
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
	atomic_init(&app->migrated, false);
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
