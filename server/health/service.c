/*
 * HealthService: the handler table assembled from its parts (see
 * health/service.h), and RunHealthCheck, which hands the call to the
 * service's prober.
 */
#include "health/service.h"

#include <sodium.h>

static int run_health_check(struct rpc_ctx *ctx, const Monitoring__V1__RunHealthCheckRequest *req,
                            Monitoring__V1__RunHealthCheckResponse *resp)
{
	return prober_run_check(health_service_of(ctx)->prober, ctx, req, resp);
}

int health_service_bind(struct rpc_server *server, struct health_service *svc, struct mon_error *err)
{
	struct monitoring_v1_health_service_handlers handlers = {
	        .run_health_check = run_health_check,
	        .watch_service_health = health_watch,
	};
	health_registry_handlers(&handlers);
	if (sodium_init() < 0)
		return mon_error_set(err, MON_EINTERNAL, "libsodium could not be initialised");
	return monitoring_v1_health_service_bind(server, &handlers, svc, 0, err);
}
