/*
 * AlertsService (proto/monitoring/v1/alerts.proto). The handlers live in
 * several files, each filling its part of the handler table:
 *   alerts/rules_api.c  rules, escalation policies, silences;
 *   alerts/ops.c      alerts: get, list, acknowledge, resolve,
 *                           escalate, deliveries, statistics;
 *   alerts/engine.c         PreviewAlertRule (the evaluator);
 *   alerts/watch.c          WatchAlerts.
 * rpc_ctx_user() of every handler is the db_pool.
 */
#ifndef MON_SERVER_ALERTS_SERVICE_H
#define MON_SERVER_ALERTS_SERVICE_H

#include "db/db.h"
#include "monitoring/v1/alerts.mon-server.h"
#include "rpc/server.h"
#include "util/error.h"

/* Binds monitoring.v1.AlertsService (before rpc_server_start); pool must outlive the server. */
int alerts_service_bind(struct rpc_server *server, struct db_pool *pool, struct mon_error *err) MON_MUST_CHECK;

/* Fill their handlers into h (NULL members answer UNIMPLEMENTED). */
void alerts_rule_handlers(struct monitoring_v1_alerts_service_handlers *h);
void alerts_alert_handlers(struct monitoring_v1_alerts_service_handlers *h);

#endif
