/*
 * AlertsService: the handler table assembled from its parts (see
 * alerts/service.h), PreviewAlertRule, which hands the call to the
 * evaluator with the service's pool, and WatchAlerts, which hands the
 * stream to the service's watch hub.
 */
#include "alerts/service.h"

static int preview_alert_rule(struct rpc_ctx *ctx, const Monitoring__V1__PreviewAlertRuleRequest *req,
                              Monitoring__V1__PreviewAlertRuleResponse *resp)
{
	return alerts_engine_preview(ctx, alerts_service_of(ctx)->pool, req, resp);
}

static int watch_alerts(struct rpc_ctx *ctx, const Monitoring__V1__WatchAlertsRequest *req, struct rpc_stream *stream)
{
	return alerts_watch(alerts_service_of(ctx)->watch_hub, ctx, req, stream);
}

int alerts_service_bind(struct rpc_server *server, struct alerts_service *svc, struct mon_error *err)
{
	struct monitoring_v1_alerts_service_handlers handlers = {
	        .preview_alert_rule = preview_alert_rule,
	        .watch_alerts = watch_alerts,
	};
	alerts_rule_handlers(&handlers);
	alerts_alert_handlers(&handlers);
	return monitoring_v1_alerts_service_bind(server, &handlers, svc, 0, err);
}
