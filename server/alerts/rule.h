/*
 * Alert rules as stored (tb_alert_rule, with statistic, aggregation and
 * text_match kept in its scope column) and as the API shows them: the
 * shared reading and validation used by the rule RPCs
 * (services/alert_rules.c) and the evaluator (alerts/engine.c).
 * Every change of a rule NOTIFYs ALERTS_RULES_CHANNEL with the rule id, so
 * each replica's evaluator refreshes its cache.
 */
#ifndef MON_SERVER_ALERTS_RULE_H
#define MON_SERVER_ALERTS_RULE_H

#include <stdbool.h>

#include "db/db.h"
#include "monitoring/v1/alerts.pb-c.h"
#include "util/arena.h"
#include "util/error.h"

#define ALERTS_RULES_CHANNEL "mon_alert_rules"

/* The select list and FROM clause of a rule (append WHERE ...), and the conversion of one of its rows. */
extern const char alerts_rule_select_sql[];
int alerts_rule_from_row(struct arena *a, const struct db_result *res, int row, Monitoring__V1__AlertRule **out,
                         struct mon_error *err) MON_MUST_CHECK;

/* Reads rule id in conn's transaction (FOR NO KEY UPDATE when for_update); MON_ENOTFOUND naming rule_id. */
int alerts_rule_read_tx(struct db_conn *conn, struct arena *a, const char *id, bool for_update,
                        Monitoring__V1__AlertRule **out, struct mon_error *err) MON_MUST_CHECK;

/*
 * Validates a whole rule as CreateAlertRule takes it (defaults applied
 * first by the caller); errors are MON_EINVAL with a message starting with
 * prefix and the field ("rule.threshold: must be finite"). Pure.
 */
int alerts_rule_check(const char *prefix, const Monitoring__V1__AlertRule *r, struct mon_error *err) MON_MUST_CHECK;

#endif
