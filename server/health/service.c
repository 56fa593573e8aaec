/*
 * HealthService: the handler table assembled from its parts (see
 * health/service.h), RunHealthCheck, which hands the call to the
 * service's prober, and WatchServiceHealth, which hands the stream to the
 * service's watch hub.
 */
#include "health/service.h"

#include <sodium.h>

static int run_health_check(struct rpc_ctx *ctx, const Monitoring__V1__RunHealthCheckRequest *req,
                            Monitoring__V1__RunHealthCheckResponse *resp)
{
	return prober_run_check(health_service_of(ctx)->prober, ctx, req, resp);
}

static int watch_service_health(struct rpc_ctx *ctx, const Monitoring__V1__WatchServiceHealthRequest *req,
                                struct rpc_stream *stream)
{
	return health_watch(health_service_of(ctx)->watch_hub, ctx, req, stream);
}

int health_service_bind(struct rpc_server *server, struct health_service *svc, struct mon_error *err)
{
	struct monitoring_v1_health_service_handlers handlers = {
	        .run_health_check = run_health_check,
	        .watch_service_health = watch_service_health,
	};
	health_registry_handlers(&handlers);
	if (sodium_init() < 0)
		return mon_error_set(err, MON_EINTERNAL, "libsodium could not be initialised");
	return monitoring_v1_health_service_bind(server, &handlers, svc, 0, err);
}
