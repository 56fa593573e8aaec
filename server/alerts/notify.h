/*
 * The notification worker: delivers tb_notification_outbox rows (written
 * by the alert store in the transaction of the alert change). Each replica
 * runs one; due rows are claimed with FOR UPDATE SKIP LOCKED, so a
 * delivery is attempted by one replica at a time. Webhooks are POSTed
 * (libcurl) with a JSON body, an HMAC-SHA256 signature over the timestamp
 * and the body (the integration's sealed webhook secret) and an
 * Idempotency-Key header; Slack and PagerDuty get their own payload
 * formats; email and SMS stay in the outbox for a relay. Failures are
 * retried with exponential backoff and jitter up to notify-max-attempts,
 * then dead-lettered (status failed). Every outcome is recorded on the
 * outbox row and in the alert's notifications_sent.
 */
#ifndef MON_SERVER_ALERTS_NOTIFY_H
#define MON_SERVER_ALERTS_NOTIFY_H

#include "db/db.h"
#include "util/error.h"

struct notify_config {
	struct db_pool *pool;
	struct db_bus *bus;           /* NOTIFY "mon_alerts" wakes the worker early */
	int max_attempts;             /* notify-max-attempts */
	int timeout_ms;               /* notify-timeout-ms */
	const char *secrets_key_file; /* secrets-key-file; NULL: secrets cannot be opened */
};

struct notifier;

int notifier_start(const struct notify_config *cfg, struct notifier **out, struct mon_error *err) MON_MUST_CHECK;

/* Stops (waiting for attempts in flight) and frees; accepts NULL. */
void notifier_stop(struct notifier *n);

#endif
