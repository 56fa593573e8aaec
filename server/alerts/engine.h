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

/*
 * Starts the engine's threads. The caller owns *out and hands it to whoever
 * reports new points (alerts_engine_on_metrics); stop it with
 * alerts_engine_stop once none of them can call any more.
 */
int alerts_engine_start(const struct alerts_engine_config *cfg, struct alerts_engine **out,
                        struct mon_error *err) MON_MUST_CHECK;

/* Stops and frees; accepts NULL. Before db_bus_destroy's callers go and before db_pool_destroy. */
void alerts_engine_stop(struct alerts_engine *e);

/*
 * Points of these metric names were just committed: e evaluates the rules
 * on them now. Never blocks on the database (queues work for the engine's
 * thread); a no-op when e is NULL.
 */
void alerts_engine_on_metrics(struct alerts_engine *e, const char *const *metric_names, size_t n);

/*
 * PreviewAlertRule's work for the call ctx: evaluates req's rule (stored or
 * given) at req->as_of in one transaction on pool that changes nothing,
 * and fills resp. Fails the call with the error (and
 * returns its code) otherwise.
 */
int alerts_engine_preview(struct rpc_ctx *ctx, struct db_pool *pool, const Monitoring__V1__PreviewAlertRuleRequest *req,
                          Monitoring__V1__PreviewAlertRuleResponse *resp) MON_MUST_CHECK;

#endif
