/*
 * AlertsService (proto/monitoring/v1/alerts.proto). The handlers live in
 * several files, each filling its part of the handler table:
 *   alerts/service.c    the table, PreviewAlertRule (over alerts/engine.c)
 *                       and WatchAlerts (alerts/watch.c);
 *   alerts/rules_api.c  rules, escalation policies, silences;
 *   alerts/ops.c        alerts: get, list, acknowledge, resolve, escalate,
 *                       deliveries, statistics.
 */
#ifndef MON_SERVER_ALERTS_SERVICE_H
#define MON_SERVER_ALERTS_SERVICE_H

#include "alerts/engine.h"
#include "alerts/watch.h"
#include "db/db.h"
#include "monitoring/v1/alerts.mon-server.h"
#include "rpc/server.h"
#include "util/error.h"

/*
 * What AlertsService's handlers work with: rpc_ctx_user() of every one of
 * them, read through alerts_service_of. The app owns it; every member must
 * outlive the RPC server.
 */
struct alerts_service {
	struct db_pool *pool;
	struct alerts_engine *engine; /* the evaluator (PreviewAlertRule shares its rules' logic) */
	struct stream_hub *watch_hub; /* the Watch stream's hub */
};

/* The service of an AlertsService call. */
static inline const struct alerts_service *alerts_service_of(struct rpc_ctx *ctx)
{
	return rpc_ctx_user(ctx);
}

/* Binds monitoring.v1.AlertsService (before rpc_server_start) with svc as every handler's user pointer. */
int alerts_service_bind(struct rpc_server *server, struct alerts_service *svc, struct mon_error *err) MON_MUST_CHECK;

/* Fill their handlers into h (NULL members answer UNIMPLEMENTED). */
void alerts_rule_handlers(struct monitoring_v1_alerts_service_handlers *h);
void alerts_alert_handlers(struct monitoring_v1_alerts_service_handlers *h);

#endif
