/*
 * The alert store: what every part of AlertsService shares about tb_alert
 * (sql/0003_core_tables.sql, sql/0012_alerts.sql): labels of enums, the
 * legal status transitions, reading an alert as the API shows it, and the
 * two things every transaction that changes an alert must do before it
 * commits: queue its notification deliveries (tb_notification_outbox) and
 * record the change (tb_alert_event through mon_alert_event_append, the
 * LAST statement of the transaction: it takes the change-log lock, held
 * to commit, and NOTIFYs "mon_alerts" with the sequence).
 */
#ifndef MON_SERVER_ALERTS_STORE_H
#define MON_SERVER_ALERTS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "monitoring/v1/alerts.pb-c.h"
#include "util/arena.h"
#include "util/error.h"

#define ALERTS_NOTIFY_CHANNEL "mon_alerts"
#define ALERTS_EVENT_LOCK 7206020 /* advisory lock of mon_alert_event_append */
#define ALERTS_NOTE_MAX_CHARS 10000

/* Column labels of the enums ("active", "pending", "critical", "gt", "in-app" ...); NULL when unknown. */
const char *alerts_status_label(Monitoring__V1__AlertStatus s);
const char *alerts_severity_label(Monitoring__V1__SeverityLevel s);
const char *alerts_operator_label(Monitoring__V1__ComparisonOperator op);
const char *alerts_channel_label(Monitoring__V1__NotificationChannel c);
const char *alerts_rule_status_label(Monitoring__V1__AlertRuleStatus s);
const char *alerts_suppression_label(Monitoring__V1__SuppressionReason r); /* "hourly-cap" ... */
/* And back; 0 (UNSPECIFIED) when unknown. */
Monitoring__V1__AlertStatus alerts_status_from_label(const char *label);
Monitoring__V1__SeverityLevel alerts_severity_from_label(const char *label);
Monitoring__V1__ComparisonOperator alerts_operator_from_label(const char *label);
Monitoring__V1__NotificationChannel alerts_channel_from_label(const char *label);
Monitoring__V1__AlertRuleStatus alerts_rule_status_from_label(const char *label);
Monitoring__V1__SuppressionReason alerts_suppression_from_label(const char *label);

/* Whether from -> to is legal (the table in alerts.proto). Pure. */
bool alerts_transition_allowed(Monitoring__V1__AlertStatus from, Monitoring__V1__AlertStatus to);

/*
 * The select list and FROM clause of an alert as the API shows it (tb_alert
 * a JOIN tb_alert_rule r), to which callers append WHERE / ORDER BY, and
 * the conversion of one of its rows (notifications_sent included).
 */
extern const char alerts_select_sql[];
int alerts_from_row(struct arena *a, const struct db_result *res, int row, Monitoring__V1__Alert **out,
                    struct mon_error *err) MON_MUST_CHECK;

/*
 * Reads alert id in conn's transaction (FOR UPDATE OF the alert row when
 * for_update). MON_ENOTFOUND "alert_id: no alert <id>" when absent.
 */
int alerts_read_tx(struct db_conn *conn, struct arena *a, const char *id, bool for_update, Monitoring__V1__Alert **out,
                   struct mon_error *err) MON_MUST_CHECK;

/*
 * Records a change of alert id, already written to tb_alert in conn's
 * transaction: re-reads it, packs an AlertChange (kind, previous status,
 * actor NULL for the evaluator, changed_at now) and appends it. Must be the
 * last statement before COMMIT. *seq_out and *alert_out (the alert after
 * the change, with its sequence) may be NULL.
 */
int alerts_record_change_tx(struct db_conn *conn, struct arena *a, const char *id, Monitoring__V1__AlertChangeKind kind,
                            Monitoring__V1__AlertStatus previous, const char *actor, int64_t *seq_out,
                            Monitoring__V1__Alert **alert_out, struct mon_error *err) MON_MUST_CHECK;

/*
 * Records the deletion of an alert (its row is gone or going with its
 * rule): an event of kind DELETED with only id and alert_rule_id. Same
 * rule: last statement before COMMIT (several may follow each other).
 */
int alerts_record_delete_tx(struct db_conn *conn, struct arena *a, const char *id, const char *rule_id,
                            Monitoring__V1__AlertStatus previous, Monitoring__V1__SeverityLevel severity,
                            const char *actor, struct mon_error *err) MON_MUST_CHECK;

/*
 * Queues one delivery per (channel, recipient) of recipients for the
 * channels listed, for alert (as read in this transaction), in conn's
 * transaction: trigger is "fired", "escalated", "resolved" or "test";
 * level 0 is the rule's own channels. IN_APP is the stream and queues
 * nothing. The idempotency key is "<alert id>:<trigger>:<level>:<channel>:
 * <recipient>", so queueing twice inserts once. *queued (may be NULL)
 * receives the deliveries queued, allocated in a, *queued_n their number.
 */
int alerts_outbox_enqueue_tx(struct db_conn *conn, struct arena *a, const Monitoring__V1__Alert *alert,
                             const char *trigger, int level, const Monitoring__V1__NotificationChannel *channels,
                             size_t channel_n, const Monitoring__V1__NotificationRecipients *recipients,
                             Monitoring__V1__NotificationDelivery ***queued, size_t *queued_n,
                             struct mon_error *err) MON_MUST_CHECK;

/* An alert id: "alt-" and 16 hex digits of randomness, written into out (at least 24 bytes). */
void alerts_new_id(const char *prefix, char *out, size_t out_len);

#endif
