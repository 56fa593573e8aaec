/*
 * Alert rules as stored (tb_alert_rule, with statistic, aggregation and
 * text_match kept in its scope column) and as the API shows them: the
 * shared reading and validation used by the rule RPCs
 * (alerts/rules_api.c) and the evaluator (alerts/engine.c).
 * Every change of a rule NOTIFYs ALERTS_RULES_CHANNEL with the rule id, so
 * each replica's evaluator refreshes its cache.
 */
#ifndef MON_SERVER_ALERTS_RULE_H
#define MON_SERVER_ALERTS_RULE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

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
 * prefix and the field ("rule.threshold: must be finite"; a '.' is added
 * after a prefix without one, so "rule" works as "rule."). Pure.
 */
int alerts_rule_check(const char *prefix, const Monitoring__V1__AlertRule *r, struct mon_error *err) MON_MUST_CHECK;

/* Limits of a rule, as alerts_rule_check enforces them (docs/api.md, "Rules"). */
#define ALERTS_RULE_NAME_MAX_CHARS 200
#define ALERTS_RULE_DESCRIPTION_MAX_CHARS 10000
#define ALERTS_RULE_THRESHOLD_MAX 99999999999.9999 /* DECIMAL(15,4) */
#define ALERTS_RULE_DURATION_MAX_MIN 1440
#define ALERTS_RULE_INTERVAL_MIN_S 10
#define ALERTS_RULE_INTERVAL_MAX_S 3600
#define ALERTS_RULE_SUPPRESS_MAX_S 604800
#define ALERTS_RULE_HOURLY_CAP_MAX 3600
#define ALERTS_RULE_ESCALATION_DELAY_MAX_MIN 10080
#define ALERTS_RULE_TEMPLATE_MAX_CHARS 50
#define ALERTS_RULE_SUBSTRING_MAX_CHARS 200
#define ALERTS_RULE_GROUP_BY_MAX 8
#define ALERTS_RULE_TAGS_MAX 32
#define ALERTS_RULE_SCOPE_VALUES_MAX 100 /* entries of each scope list */
#define ALERTS_RECIPIENTS_MAX 50         /* entries of each recipients list */
#define ALERTS_ID_MAX 50                 /* characters of an id: [A-Za-z0-9._-] */

/* Labels of the statistic and the aggregation in the scope JSON ("p95", "error_rate"; "avg" ...); NULL when unknown. */
const char *alerts_statistic_label(Monitoring__V1__MetricStatistic s);
const char *alerts_aggregation_label(Monitoring__V1__Aggregation g);

/*
 * Text of min_chars..max_chars characters of valid UTF-8 without control
 * characters (NULL is ""); MON_EINVAL naming field ("must be set" when
 * empty and min_chars > 0). Pure.
 */
int alerts_check_text(const char *field, const char *text, size_t min_chars, size_t max_chars,
                      struct mon_error *err) MON_MUST_CHECK;

/* An id of the API: 1-50 characters of [A-Za-z0-9._-]; MON_EINVAL naming field. Pure. */
int alerts_check_id(const char *field, const char *id, struct mon_error *err) MON_MUST_CHECK;

/*
 * Checks recipients (each list at most 50 well-formed entries) and that
 * every channel listed has a recipient; messages name prefix and the field
 * ("rule.notification_recipients.emails[0]: ..."): channels are
 * "<prefix><channels_field>[i]", recipients "<prefix><recipients_field>".
 * recipients may be NULL (none). Pure.
 */
int alerts_recipients_check(const char *prefix, const char *channels_field,
                            const Monitoring__V1__NotificationChannel *channels, size_t channel_n,
                            const char *recipients_field, const Monitoring__V1__NotificationRecipients *recipients,
                            struct mon_error *err) MON_MUST_CHECK;

/*
 * NotificationRecipients as stored (notification_recipients, a policy
 * level's "recipients"): an object with the non-empty lists of the message
 * under the proto field names ({"emails": [...], "user_ids": [...]}).
 * to_json returns a new reference (NULL r gives {}), NULL when out of
 * memory; from_json allocates in a and ignores unknown keys.
 */
json_t *alerts_recipients_to_json(const Monitoring__V1__NotificationRecipients *r);
int alerts_recipients_from_json(struct arena *a, const json_t *j, Monitoring__V1__NotificationRecipients **out,
                                struct mon_error *err) MON_MUST_CHECK;

/*
 * The scope column of a rule: AlertScope's non-empty fields under their
 * proto names, plus "statistic", "aggregation" (labels, absent when
 * UNSPECIFIED) and "text_match" ({"field", "substring"}, absent when
 * unset). New reference, NULL when out of memory.
 */
json_t *alerts_rule_scope_json(const Monitoring__V1__AlertRule *r);

/* The rule as the API shows it, as JSON (audit events); new reference, NULL when out of memory. */
json_t *alerts_rule_json(const Monitoring__V1__AlertRule *r);

#endif
