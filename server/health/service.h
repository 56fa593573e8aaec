/*
 * HealthService (proto/monitoring/v1/health.proto): the registry of
 * monitored services, their check log, uptime and the system summary
 * (health/services_api.c). Check results go through the health store
 * (health/store.h); every change is written with its audit event and its
 * change event in one transaction. RunHealthCheck asks the prober
 * (health/prober.h) and WatchServiceHealth is the stream
 * (health/watch.h); health/service.c binds them all.
 */
#ifndef MON_SERVER_HEALTH_SERVICE_H
#define MON_SERVER_HEALTH_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "health/prober.h"
#include "health/watch.h"
#include "monitoring/v1/health.mon-server.h"
#include "rpc/server.h"
#include "util/arena.h"
#include "util/error.h"

/*
 * What HealthService's handlers work with: rpc_ctx_user() of every one of
 * them, read through health_service_of. The app owns it; every member must
 * outlive the RPC server.
 */
struct health_service {
	struct db_pool *pool;
	struct prober *prober;        /* RunHealthCheck's; NULL: it answers UNAVAILABLE */
	struct stream_hub *watch_hub; /* the Watch stream's hub */
	/* The prober's network policy (prober_policy); NULL: URLs are not checked against it. */
	const struct netpolicy *probe_policy;
};

/* The service of a HealthService call. */
static inline const struct health_service *health_service_of(struct rpc_ctx *ctx)
{
	return rpc_ctx_user(ctx);
}

/*
 * Binds monitoring.v1.HealthService to server (before rpc_server_start)
 * with svc as every handler's user pointer. svc->prober may be set later,
 * before rpc_server_start. Returns 0 or the binding's error.
 */
int health_service_bind(struct rpc_server *server, struct health_service *svc, struct mon_error *err) MON_MUST_CHECK;

/* Fills the handlers of health/services_api.c into h: the registry, checks, uptime and summary RPCs. */
void health_registry_handlers(struct monitoring_v1_health_service_handlers *h);

/*
 * Reads service id in conn's transaction as the API shows it, allocated in
 * a. MON_ENOTFOUND when absent. For the prober and the stream.
 */
int health_service_read_tx(struct db_conn *conn, struct arena *a, const char *id,
                           Monitoring__V1__MonitoredService **out, struct mon_error *err) MON_MUST_CHECK;

/* Limits of a monitored service, as validated. */
#define HEALTH_ID_MAX 50
#define HEALTH_NAME_MAX_CHARS 100
#define HEALTH_DESCRIPTION_MAX 4096 /* bytes */
#define HEALTH_URL_MAX 500
#define HEALTH_INTERVAL_MIN_S 10
#define HEALTH_INTERVAL_MAX_S 86400
#define HEALTH_INTERVAL_DEFAULT_S 300
#define HEALTH_TIMEOUT_MAX_S 3600
#define HEALTH_TIMEOUT_DEFAULT_S 30
#define HEALTH_RETRY_MAX 10
#define HEALTH_RETRY_DEFAULT 3
#define HEALTH_SERVICES_MAX 10000
#define HEALTH_ERROR_MESSAGE_MAX 4096 /* bytes */
#define HEALTH_JSON_MAX 65536         /* bytes of a metrics or details object */

/*
 * Pure checks, unit-tested. Each returns 0 or MON_EINVAL with a message
 * that starts with field.
 */

/* A service id: 1-50 characters of [A-Za-z0-9._-]. */
int health_check_id(const char *field, const char *id, struct mon_error *err) MON_MUST_CHECK;

/* A name: 1-100 characters of valid UTF-8 without control characters. */
int health_check_name(const char *field, const char *name, struct mon_error *err) MON_MUST_CHECK;

/*
 * A health check URL: http://, https:// or grpc://, then a host (a DNS
 * name, an IPv4 address or a bracketed IPv6 address), an optional port
 * 1-65535 and an optional path; no user info, no spaces or control
 * characters; at most 500 bytes. Empty is allowed (no URL).
 */
int health_check_url(const char *field, const char *url, struct mon_error *err) MON_MUST_CHECK;

/* A service_type of the closed list: database, cache, email, storage, api. */
int health_check_service_type(const char *field, const char *type, struct mon_error *err) MON_MUST_CHECK;

/*
 * Check timing: check_interval 10-86400 s, timeout 1-3600 s and below
 * check_interval, retry_count 0-10. Messages name check_interval, timeout
 * or retry_count after prefix ("service.").
 */
int health_check_timing(const char *prefix, int32_t check_interval_s, int32_t timeout_s, int32_t retry_count,
                        struct mon_error *err) MON_MUST_CHECK;

/*
 * Uptime of known time, percent rounded to 2 decimals: up / (up + down).
 * Returns false (no value) when up + down is 0.
 */
bool health_uptime_percent(int64_t up_ms, int64_t down_ms, double *out);

#endif
