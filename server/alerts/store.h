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

#include <jansson.h>

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

/* Delivery states ("pending", "sent", "retrying", "failed", "skipped") and change kinds ("created", "status-changed",
 * ...). */
const char *alerts_delivery_status_label(Monitoring__V1__DeliveryStatus s);
Monitoring__V1__DeliveryStatus alerts_delivery_status_from_label(const char *label);
const char *alerts_change_kind_label(Monitoring__V1__AlertChangeKind k);

/* The data model's "most severe first" rank: critical 1, fatal 2, error 3, warning 4, others 5. */
int alerts_severity_rank(Monitoring__V1__SeverityLevel s);

/* Whether from -> to is legal (the table in alerts.proto). Pure. */
bool alerts_transition_allowed(Monitoring__V1__AlertStatus from, Monitoring__V1__AlertStatus to);

/*
 * The select list and FROM clause of an alert as the API shows it (tb_alert
 * a JOIN tb_alert_rule r), to which callers append WHERE / ORDER BY, and
 * the conversion of one of its rows (notifications_sent included).
 */
#define ALERTS_SELECT_COLUMN_N 26 /* columns 0-25; callers may select more after them */
extern const char alerts_select_sql[];
/* Its parts, for callers that select more columns: SELECT list, ", more", FROM, WHERE ... */
/* Microseconds since the epoch of a timestamptz column; NULL for NULL and for +-infinity. */
#define ALERTS_US_SQL(col) "(CASE WHEN isfinite(" col ") THEN (extract(epoch FROM " col ") * 1000000)::bigint END)"
/* A few columns a line: the formatter cannot lay out literals mixed with macro calls. */
/* clang-format off */
#define ALERTS_SELECT_LIST_SQL \
	"a.id, a.alert_rule_id, a.status::text, a.severity::text, a.message, a.current_value::float8," \
	" a.threshold::float8, " ALERTS_US_SQL("a.triggered_at") ", " ALERTS_US_SQL("a.acknowledged_at") "," \
	" a.acknowledged_by, a.acknowledgment_note, " ALERTS_US_SQL("a.resolved_at") ", a.resolution_note," \
	" a.notifications_sent::text, a.metadata::text, " \
	ALERTS_US_SQL("a.created_at") ", " ALERTS_US_SQL("a.updated_at") "," \
	" r.name, r.metric_name, a.suppression_reason, a.silence_id, a.resolved_by, a.escalation_level," \
	" " ALERTS_US_SQL("a.escalated_at") ", a.labels::text, a.sequence"
/* clang-format on */
#define ALERTS_FROM_SQL " FROM tb_alert a JOIN tb_alert_rule r ON r.id = a.alert_rule_id"
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
 * nothing; a channel listed twice counts once. The idempotency key is
 * "<alert id>:<trigger>:<level>:<channel>:<recipient>" (channel as its
 * label), so queueing twice inserts once; past the column's 100 bytes the
 * recipient becomes "h" and 32 hex digits of its BLAKE2b hash, and if
 * still too long the key is "k" and the hash of the whole key. Refreshes
 * notifications_sent (alerts_deliveries_sync_tx) when something was
 * queued. *queued (may be NULL)
 * receives the deliveries queued, allocated in a, *queued_n their number.
 */
int alerts_outbox_enqueue_tx(struct db_conn *conn, struct arena *a, const Monitoring__V1__Alert *alert,
                             const char *trigger, int level, const Monitoring__V1__NotificationChannel *channels,
                             size_t channel_n, const Monitoring__V1__NotificationRecipients *recipients,
                             Monitoring__V1__NotificationDelivery ***queued, size_t *queued_n,
                             struct mon_error *err) MON_MUST_CHECK;

/*
 * Deliveries as the API shows them: the select list and FROM clause of
 * tb_notification_outbox o (append WHERE / ORDER BY), and one row as a
 * message.
 */
extern const char alerts_delivery_select_sql[];
#define ALERTS_DELIVERY_COLUMN_N 14
/* clang-format off */
#define ALERTS_DELIVERY_LIST_SQL \
	"o.id, o.channel::text, o.recipient, o.status, o.attempt_count, " \
	ALERTS_US_SQL("o.created_at") ", " ALERTS_US_SQL("o.last_attempt_at") ", " ALERTS_US_SQL("o.next_attempt_at") "," \
	" " ALERTS_US_SQL("o.delivered_at") ", o.error_message, o.response_status_code, o.idempotency_key," \
	" o.escalation_level, o.trigger"
/* clang-format on */
int alerts_delivery_from_row(struct arena *a, const struct db_result *res, int row,
                             Monitoring__V1__NotificationDelivery **out, struct mon_error *err) MON_MUST_CHECK;

/*
 * Rewrites tb_alert.notifications_sent of alert_id from its outbox rows:
 * the latest ALERTS_SENT_SUMMARY_MAX deliveries, oldest first, each
 * {"id", "channel", "recipient", "status", "attempt_count", "created_at",
 * "last_attempt_at", "next_attempt_at", "delivered_at", "error_message",
 * "response_status_code", "idempotency_key", "escalation_level",
 * "trigger"} with enum labels as in the outbox and times in RFC 3339 UTC
 * (absent keys are NULL). alerts_outbox_enqueue_tx calls it; whoever
 * changes an outbox row's status calls it too, in the same transaction.
 */
#define ALERTS_SENT_SUMMARY_MAX 50
#define ALERTS_SENT_SUMMARY_MAX_TEXT "50"
int alerts_deliveries_sync_tx(struct db_conn *conn, const char *alert_id, struct mon_error *err) MON_MUST_CHECK;

/*
 * The outbox payload of alert (a neutral JSON body the notifier renders
 * per channel): {"id", "rule": {"id", "name", "metric_name"}, "status",
 * "severity", "message", "value", "threshold", "labels", "triggered_at",
 * "trigger", "level"} and "resolved_at" once resolved. New reference, NULL
 * when out of memory.
 */
json_t *alerts_payload_json(const Monitoring__V1__Alert *alert, const char *trigger, int level);

/*
 * A notification_recipients jsonb text ({"emails": [...], "slack_channels":
 * [...], ...}, the proto's field names; other keys and non-strings are
 * ignored, NULL or bad JSON is empty) and a notification_channels text[]
 * in PostgreSQL's text form ({email,"in-app"}; unknown labels are
 * skipped) as messages in the arena. MON_ENOMEM only.
 */
int alerts_recipients_from_text(struct arena *a, const char *text, Monitoring__V1__NotificationRecipients **out,
                                struct mon_error *err) MON_MUST_CHECK;
int alerts_channels_from_text(struct arena *a, const char *text, Monitoring__V1__NotificationChannel **out,
                              size_t *n_out, struct mon_error *err) MON_MUST_CHECK;

/*
 * "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+hh:mm|-hh:mm)" (a space for the T as
 * PostgreSQL writes it) to microseconds since the epoch; false when it does
 * not parse. Pure.
 */
bool alerts_parse_time_us(const char *text, int64_t *out);

/*
 * An id: prefix ("alt-" for alerts; NULL means "alt-") and 16 hex digits
 * of randomness, written into out (at least 24 bytes for a 4-character
 * prefix).
 */
void alerts_new_id(const char *prefix, char *out, size_t out_len);

#endif
