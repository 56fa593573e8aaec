/* AlertsService: the handler table assembled from its parts (alerts/service.h). */
#include "alerts/service.h"

#include "alerts/engine.h"
#include "alerts/watch.h"

int alerts_service_bind(struct rpc_server *server, struct db_pool *pool, struct mon_error *err)
{
	struct monitoring_v1_alerts_service_handlers handlers = {
	        .preview_alert_rule = alerts_preview_rule,
	        .watch_alerts = alerts_watch,
	};
	alerts_rule_handlers(&handlers);
	alerts_alert_handlers(&handlers);
	return monitoring_v1_alerts_service_bind(server, &handlers, pool, 0, err);
}
