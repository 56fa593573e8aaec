/*
 * The alert evaluator. Rules are evaluated:
 *   - at once when RecordMetrics commits points of a metric some enabled
 *     or testing rule watches (alerts_engine_on_metrics, from the replica
 *     that committed them);
 *   - every evaluation_interval seconds (the tick: each replica claims due
 *     rules with FOR UPDATE SKIP LOCKED on tb_alert_rule.next_evaluation_at,
 *     so each rule is evaluated by one replica at a time and a dead
 *     replica's rules fall due for the others), which also fires PENDING
 *     alerts whose duration has passed, resolves cleared ones and escalates
 *     unacknowledged ones.
 * An evaluation locks the rule's row (FOR NO KEY UPDATE) and runs in one
 * transaction: the value over the window, the alert transition, its
 * deliveries and its change event. State is only in PostgreSQL.
 */
#ifndef MON_SERVER_ALERTS_ENGINE_H
#define MON_SERVER_ALERTS_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "monitoring/v1/alerts.pb-c.h"
#include "rpc/rpc.h"
#include "util/error.h"

struct alerts_engine_config {
	struct db_pool *pool;
	struct db_bus *bus; /* rule changes (NOTIFY) refresh the engine's rule cache */
	int tick_ms;        /* alert-tick-ms */
	int retention_days; /* alert-retention-days */
};

struct alerts_engine;

/* Starts the engine's thread(s). One engine per process (alerts_engine_on_metrics finds it). */
int alerts_engine_start(const struct alerts_engine_config *cfg, struct alerts_engine **out,
                        struct mon_error *err) MON_MUST_CHECK;

/* Stops and frees; accepts NULL. Before db_bus_destroy's callers go and before db_pool_destroy. */
void alerts_engine_stop(struct alerts_engine *e);

/*
 * Points of these metric names were just committed: evaluate the rules on
 * them now. Never blocks on the database (queues work for the engine's
 * thread); a no-op without an engine.
 */
void alerts_engine_on_metrics(const char *const *metric_names, size_t n);

/* The PreviewAlertRule handler. */
int alerts_preview_rule(struct rpc_ctx *ctx, const Monitoring__V1__PreviewAlertRuleRequest *req,
                        Monitoring__V1__PreviewAlertRuleResponse *resp) MON_MUST_CHECK;

#endif
