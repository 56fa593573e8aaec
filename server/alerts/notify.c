/*
 * The notification worker (alerts/notify.h). A few worker threads per
 * process take due webhook, Slack and PagerDuty rows of
 * tb_notification_outbox with FOR UPDATE SKIP LOCKED, send each with
 * libcurl, and record the outcome on the row and in the alert's
 * notifications_sent in one transaction. It owns the delivery columns of
 * the outbox (status, attempt_count, the attempt times, error_message,
 * response_status_code); the alert store inserts the rows.
 *
 * Claiming counts the attempt and leases the row: next_attempt_at moves
 * past the send's timeout, so a replica that dies mid-send hands the row
 * to another when the lease ends (at-least-once; the Idempotency-Key lets
 * receivers drop repeats). The attempt count is the claim's token: a
 * result is recorded only while the row still has the count its claim
 * set, so a replica that stalled past its lease cannot overwrite the
 * result of the one that took over.
 *
 * Email and SMS rows are left pending for an external relay. A 'fired' or
 * 'escalated' row still waiting when its alert is acknowledged, resolved
 * or suppressed is skipped, not sent (docs/api.md, Notifications).
 */
#include "alerts/notify.h"

#include <inttypes.h>
#include <stdarg.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

#include "alerts/store.h"
#include "crypto/seal.h"
#include "util/clock.h"
#include "util/log.h"

#ifndef MON_VERSION
#define MON_VERSION "dev"
#endif

#define NOTIFY_WORKERS 4               /* threads sending per process */
#define NOTIFY_BATCH 1                 /* rows a worker claims at a time: each lease covers one send */
#define NOTIFY_POLL_MS 1000            /* wait between polls without a NOTIFY */
#define NOTIFY_LEASE_MARGIN_MS 15000   /* lease beyond the send's timeout: recording */
#define NOTIFY_DB_TIMEOUT_MS 5000      /* claiming, recording */
#define NOTIFY_ACQUIRE_TIMEOUT_MS 2000 /* waiting for a pooled connection */
#define NOTIFY_BACKOFF_BASE_MS 2000    /* first retry after 1-2 s, then doubling */
#define NOTIFY_BACKOFF_MAX_MS 3600000  /* no retry waits longer than an hour */
#define NOTIFY_SKIP_BATCH "100"        /* rows skipped per pass */
#define NOTIFY_ERROR_MAX 300           /* bytes of an error message */
#define NOTIFY_TEXT_MAX 3000           /* characters of a Slack or PagerDuty text */
#define NOTIFY_RESPONSE_MAX 65536      /* bytes of a response body read (and dropped) */
#define NOTIFY_PAGERDUTY_URL "https://events.pagerduty.com/v2/enqueue"
#define NOTIFY_USER_AGENT "monitord-notifier/" MON_VERSION

struct notifier {
	struct notify_config cfg;
	struct seal_key *key; /* NULL: no secrets-key-file */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool is_stopping;
	bool is_claim_failing; /* the last claim failed: logged once until one succeeds */
	uint64_t wake_gen;     /* bumped by each NOTIFY */
	pthread_t threads[NOTIFY_WORKERS];
	int thread_n;
};

/* A claimed row, owned by the worker that claimed it. */
struct delivery {
	char *id;
	char *alert_id;
	char *channel;
	char *recipient;
	char *trigger;
	int level;
	int attempt; /* attempt_count after the claim: the claim's token */
	char *key;   /* idempotency key */
	char *payload;
};

/* What a send produced. */
struct outcome {
	bool is_sent;
	bool is_permanent; /* fail now, no retry */
	long http_status;  /* 0: no HTTP answer */
	long retry_after_s;
	int elapsed_ms;
	char integration_id[64]; /* "" when none was found */
	char url[512];
	char error[NOTIFY_ERROR_MAX];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_code = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
	curl_init_code = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void set_error(struct outcome *o, bool is_permanent, const char *fmt, ...) MON_PRINTF(3, 4);
static void set_error(struct outcome *o, bool is_permanent, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(o->error, sizeof(o->error), fmt, ap);
	va_end(ap);
	o->is_permanent = is_permanent;
	o->is_sent = false;
}

static void delivery_free(struct delivery *d)
{
	if (d == NULL)
		return;
	free(d->id);
	free(d->alert_id);
	free(d->channel);
	free(d->recipient);
	free(d->trigger);
	free(d->key);
	free(d->payload);
	memset(d, 0, sizeof(*d));
}

/* ---- waking ---- */

static void on_notify(const char *channel, const char *payload, void *arg)
{
	struct notifier *n = arg;
	pthread_mutex_lock(&n->mu);
	n->wake_gen++;
	pthread_cond_broadcast(&n->cv);
	pthread_mutex_unlock(&n->mu);
}

/* Waits up to NOTIFY_POLL_MS unless a NOTIFY came since *seen; false when stopping. */
static bool wait_for_work(struct notifier *n, uint64_t *seen)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += NOTIFY_POLL_MS / 1000;
	until.tv_nsec += (long)(NOTIFY_POLL_MS % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&n->mu);
	while (!n->is_stopping && n->wake_gen == *seen)
		if (pthread_cond_timedwait(&n->cv, &n->mu, &until) != 0)
			break;
	*seen = n->wake_gen;
	bool is_running = !n->is_stopping;
	pthread_mutex_unlock(&n->mu);
	return is_running;
}

static bool is_stopping(struct notifier *n)
{
	pthread_mutex_lock(&n->mu);
	bool s = n->is_stopping;
	pthread_mutex_unlock(&n->mu);
	return s;
}

/* ---- skipping stale deliveries ---- */

struct skip_tx {
	int skipped;
};

/*
 * Marks skipped the due 'fired' and 'escalated' rows (any channel, the
 * relay's too) whose alert is no longer firing, and refreshes those
 * alerts' notifications_sent. The alerts are locked first (those another
 * transaction holds are left to the next pass): the refresh reads every
 * outbox row of the alert, so two transactions recording deliveries of
 * one alert must not refresh it from the same snapshot.
 */
static int skip_fn(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char sql[] =
	        "WITH s AS (SELECT o.id, a.status::text AS alert_status FROM tb_notification_outbox o"
	        " JOIN tb_alert a ON a.id = o.alert_id"
	        " WHERE o.status IN ('pending', 'retrying') AND o.next_attempt_at <= now()"
	        " AND o.trigger IN ('fired', 'escalated') AND a.status IN ('acknowledged', 'resolved', 'suppressed')"
	        " ORDER BY o.next_attempt_at LIMIT " NOTIFY_SKIP_BATCH " FOR UPDATE OF o, a SKIP LOCKED)"
	        " UPDATE tb_notification_outbox o SET status = 'skipped',"
	        " error_message = 'not sent: the alert was ' || s.alert_status || ' first'"
	        " FROM s WHERE o.id = s.id RETURNING o.alert_id";
	struct skip_tx *t = arg;
	struct db_result *res = NULL;
	t->skipped = 0;
	int rc = db_exec(conn, sql, 0, NULL, &res, err);
	if (rc != 0)
		return rc;
	int rows = db_result_rows(res);
	for (int i = 0; i < rows && rc == 0; i++) {
		const char *alert_id = db_result_value(res, i, 0);
		bool is_repeat = false;
		for (int k = 0; k < i && !is_repeat; k++)
			is_repeat = strcmp(db_result_value(res, k, 0), alert_id) == 0;
		if (!is_repeat)
			rc = alerts_deliveries_sync_tx(conn, alert_id, err);
	}
	t->skipped = rows;
	db_result_free(res);
	return rc;
}

/* ---- claiming ---- */

static char *dup_or_null(const char *s, bool *is_ok)
{
	char *d = strdup(s);
	if (d == NULL)
		*is_ok = false;
	return d;
}

/* Claims up to NOTIFY_BATCH due rows into out; returns how many (0 on error, logged). */
static int claim(struct notifier *n, struct delivery *out)
{
	static const char sql[] =
	        "UPDATE tb_notification_outbox o SET attempt_count = o.attempt_count + 1, last_attempt_at = now(),"
	        " next_attempt_at = now() + $1::bigint * interval '1 millisecond'"
	        " FROM (SELECT id FROM tb_notification_outbox WHERE status IN ('pending', 'retrying')"
	        " AND channel IN ('webhook', 'slack', 'pagerduty') AND next_attempt_at <= now()"
	        " AND NOT (trigger IN ('fired', 'escalated') AND EXISTS (SELECT 1 FROM tb_alert a"
	        " WHERE a.id = alert_id AND a.status IN ('acknowledged', 'resolved', 'suppressed')))"
	        " ORDER BY next_attempt_at LIMIT $2::integer FOR UPDATE SKIP LOCKED) c"
	        " WHERE o.id = c.id RETURNING o.id, o.alert_id, o.channel::text, o.recipient, o.trigger,"
	        " o.escalation_level, o.attempt_count, o.idempotency_key, o.payload::text";
	struct mon_error err = {0};
	struct db_conn *conn = NULL;
	struct db_result *res = NULL;
	char lease[32], limit[16];
	snprintf(lease, sizeof(lease), "%d", n->cfg.timeout_ms + NOTIFY_LEASE_MARGIN_MS);
	snprintf(limit, sizeof(limit), "%d", NOTIFY_BATCH);
	const char *params[] = {lease, limit};
	int got = 0;
	bool is_failing = db_pool_acquire(n->cfg.pool, NOTIFY_ACQUIRE_TIMEOUT_MS, &conn, &err) != 0 ||
	                  db_exec(conn, sql, 2, params, &res, &err) != 0;
	pthread_mutex_lock(&n->mu);
	bool was_failing = n->is_claim_failing;
	n->is_claim_failing = is_failing;
	pthread_mutex_unlock(&n->mu);
	if (is_failing && !was_failing)
		log_warn("msg=\"could not claim notification deliveries, retrying every second\" error=\"%s\"",
		         err.msg);
	else if (!is_failing && was_failing)
		log_info("msg=\"claiming notification deliveries again\"");
	if (is_failing)
		goto out;
	for (int i = 0; i < db_result_rows(res) && i < NOTIFY_BATCH; i++) {
		bool is_ok = true;
		struct delivery *d = &out[got];
		d->id = dup_or_null(db_result_value(res, i, 0), &is_ok);
		d->alert_id = dup_or_null(db_result_value(res, i, 1), &is_ok);
		d->channel = dup_or_null(db_result_value(res, i, 2), &is_ok);
		d->recipient = dup_or_null(db_result_value(res, i, 3), &is_ok);
		d->trigger = dup_or_null(db_result_value(res, i, 4), &is_ok);
		d->level = (int)strtol(db_result_value(res, i, 5), NULL, 10);
		d->attempt = (int)strtol(db_result_value(res, i, 6), NULL, 10);
		d->key = dup_or_null(db_result_value(res, i, 7), &is_ok);
		d->payload = dup_or_null(db_result_value(res, i, 8), &is_ok);
		if (!is_ok) {
			/* Left leased: the row is claimed again when the lease ends. */
			log_warn("msg=\"out of memory claiming a notification delivery\" delivery_id=\"%s\"",
			         db_result_value(res, i, 0));
			delivery_free(d);
			continue;
		}
		got++;
	}
out:
	db_result_free(res);
	if (conn != NULL)
		db_pool_release(n->cfg.pool, conn);
	return got;
}

/* ---- integrations ---- */

/* What a delivery needs of its integration; strings malloc'd. */
struct target {
	char *id;
	char *url;
	char *sealed;   /* webhook_secret, or the authentication JSON's sealed text */
	bool is_direct; /* Slack: the recipient named the integration itself */
};

static void target_free(struct target *t)
{
	free(t->id);
	free(t->url);
	free(t->sealed);
	memset(t, 0, sizeof(*t));
}

/*
 * Finds the integration of d: for webhook and pagerduty the recipient is
 * its id; for Slack the recipient is a channel name (see docs/api.md). A
 * missing or inactive integration is a permanent failure.
 */
static int find_target(struct notifier *n, const struct delivery *d, struct target *t, struct outcome *o)
{
	static const char by_id_sql[] =
	        "SELECT id, coalesce(nullif(webhook_url, ''), endpoint_url), webhook_secret,"
	        " CASE WHEN jsonb_typeof(authentication) = 'string' THEN authentication #>> '{}' END,"
	        " authentication IS NOT NULL, is_active, integration_type::text"
	        " FROM tb_integration_health WHERE id = $1";
	static const char slack_sql[] =
	        "SELECT id, coalesce(nullif(webhook_url, ''), endpoint_url), id = $1 FROM tb_integration_health"
	        " WHERE is_active AND (id = $1 OR (integration_type = 'webhook'"
	        " AND (settings->>'slack_channel' = $1 OR settings->>'slack_default' = 'true')))"
	        " ORDER BY CASE WHEN id = $1 THEN 0 WHEN settings->>'slack_channel' = $1 THEN 1 ELSE 2 END, id LIMIT 1";
	struct mon_error err = {0};
	struct db_conn *conn = NULL;
	struct db_result *res = NULL;
	bool is_slack = strcmp(d->channel, "slack") == 0;
	bool is_pd = strcmp(d->channel, "pagerduty") == 0;
	const char *params[] = {d->recipient};
	int rc = -1;
	if (db_pool_acquire(n->cfg.pool, NOTIFY_ACQUIRE_TIMEOUT_MS, &conn, &err) != 0 ||
	    db_exec(conn, is_slack ? slack_sql : by_id_sql, 1, params, &res, &err) != 0) {
		set_error(o, false, "could not read the integration: %s", err.msg);
		goto out;
	}
	if (db_result_rows(res) != 1) {
		if (is_slack)
			set_error(o, true,
			          "no active integration posts to Slack channel \"%s\" (settings slack_channel or "
			          "slack_default)",
			          d->recipient);
		else
			set_error(o, true, "integration \"%s\" does not exist", d->recipient);
		goto out;
	}
	snprintf(o->integration_id, sizeof(o->integration_id), "%s", db_result_value(res, 0, 0));
	if (!is_slack && strcmp(db_result_value(res, 0, 5), "t") != 0) {
		set_error(o, true, "integration \"%s\" is not active", d->recipient);
		goto out;
	}
	const char *url = db_result_is_null(res, 0, 1) ? NULL : db_result_value(res, 0, 1);
	if (is_pd && url == NULL)
		url = NOTIFY_PAGERDUTY_URL;
	if (url == NULL || url[0] == '\0') {
		set_error(o, true, "integration \"%s\" has no webhook_url or endpoint_url", o->integration_id);
		goto out;
	}
	snprintf(o->url, sizeof(o->url), "%s", url);
	t->id = strdup(db_result_value(res, 0, 0));
	t->url = strdup(url);
	if (is_slack) {
		t->is_direct = strcmp(db_result_value(res, 0, 2), "t") == 0;
	} else if (is_pd) {
		if (db_result_is_null(res, 0, 3)) {
			set_error(o, true, "integration \"%s\": %s", o->integration_id,
			          strcmp(db_result_value(res, 0, 4), "t") == 0
			                  ? "authentication is not sealed (store it with monitord admin seal-secret)"
			                  : "no authentication with a routing_key");
			goto out;
		}
		t->sealed = strdup(db_result_value(res, 0, 3));
	} else if (!db_result_is_null(res, 0, 2) && db_result_value(res, 0, 2)[0] != '\0') {
		t->sealed = strdup(db_result_value(res, 0, 2));
	} else {
		set_error(o, true, "integration \"%s\" has no webhook_secret to sign with", o->integration_id);
		goto out;
	}
	if (t->id == NULL || t->url == NULL || (!is_slack && t->sealed == NULL)) {
		set_error(o, false, "out of memory");
		goto out;
	}
	rc = 0;
out:
	db_result_free(res);
	if (conn != NULL)
		db_pool_release(n->cfg.pool, conn);
	return rc;
}

/* Opens an integration secret (seal.h); *plain is released with seal_plain_free. */
static int open_secret(struct notifier *n, const char *integration_id, const char *column, const char *sealed,
                       unsigned char **plain, size_t *plain_len, struct outcome *o)
{
	struct mon_error err = {0};
	if (n->key == NULL) {
		set_error(o, true, "no secrets-key-file is configured: the %s of integration \"%s\" cannot be opened",
		          column, integration_id);
		return -1;
	}
	const struct seal_context ctx = {"tb_integration_health", column, integration_id};
	if (seal_open(n->key, &ctx, sealed, plain, plain_len, &err) != 0) {
		set_error(o, true, "could not open the %s of integration \"%s\": %s", column, integration_id, err.msg);
		return -1;
	}
	return 0;
}

/* ---- payloads ---- */

static const char *jstr(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s != NULL ? s : "";
}

static void upper(char *dst, size_t dst_len, const char *s)
{
	size_t i = 0;
	for (; s[i] != '\0' && i + 1 < dst_len; i++)
		dst[i] = (s[i] >= 'a' && s[i] <= 'z') ? (char)(s[i] - 'a' + 'A') : s[i];
	dst[i] = '\0';
}

/* A one-line title: "Alert fired: [CRITICAL] rule name". */
static void title_of(const struct delivery *d, const json_t *alert, char *out, size_t out_len)
{
	char sev[32];
	upper(sev, sizeof(sev), jstr(alert, "severity"));
	const char *rule = jstr(json_object_get(alert, "rule"), "name");
	const char *what = strcmp(d->trigger, "resolved") == 0    ? "Alert resolved"
	                   : strcmp(d->trigger, "escalated") == 0 ? "Alert escalated"
	                   : strcmp(d->trigger, "test") == 0      ? "Test notification"
	                                                          : "Alert fired";
	if (strcmp(d->trigger, "escalated") == 0)
		snprintf(out, out_len, "%s (level %d): [%s] %s", what, d->level, sev,
		         rule[0] ? rule : jstr(alert, "id"));
	else
		snprintf(out, out_len, "%s: [%s] %s", what, sev, rule[0] ? rule : jstr(alert, "id"));
}

/* Slack's mrkdwn escaping of &, < and >, cut at NOTIFY_TEXT_MAX bytes. */
static void slack_escape(char *out, size_t out_len, const char *s)
{
	size_t w = 0;
	size_t cap = out_len < NOTIFY_TEXT_MAX ? out_len : NOTIFY_TEXT_MAX;
	for (; *s != '\0'; s++) {
		const char *rep = *s == '&' ? "&amp;" : *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : NULL;
		size_t len = rep != NULL ? strlen(rep) : 1;
		if (w + len + 1 > cap)
			break;
		if (rep != NULL)
			memcpy(out + w, rep, len);
		else
			out[w] = *s;
		w += len;
	}
	out[w] = '\0';
}

static json_t *webhook_body(const struct delivery *d, json_t *alert)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:O}", "type", "alert.notification", "delivery_id", d->id,
	                 "idempotency_key", d->key, "trigger", d->trigger, "escalation_level", d->level, "channel",
	                 d->channel, "alert", alert);
}

static json_t *slack_body(const struct delivery *d, const json_t *alert, const struct target *t)
{
	char title[512], title_esc[1024], msg[NOTIFY_TEXT_MAX], context[1024], context_esc[2048], text[4096];
	title_of(d, alert, title, sizeof(title));
	slack_escape(title_esc, sizeof(title_esc), title);
	slack_escape(msg, sizeof(msg), jstr(alert, "message"));
	snprintf(context, sizeof(context), "alert %s | metric %s = %g (threshold %g) | status %s", jstr(alert, "id"),
	         jstr(json_object_get(alert, "rule"), "metric_name"),
	         json_number_value(json_object_get(alert, "value")),
	         json_number_value(json_object_get(alert, "threshold")), jstr(alert, "status"));
	slack_escape(context_esc, sizeof(context_esc), context);
	snprintf(text, sizeof(text), "%s%s%s", title_esc, msg[0] ? ": " : "", msg);
	char section[NOTIFY_TEXT_MAX + 1100];
	snprintf(section, sizeof(section), "*%s*%s%s", title_esc, msg[0] ? "\n" : "", msg);
	json_t *body = json_pack("{s:s, s:[{s:s, s:{s:s, s:s}}, {s:s, s:[{s:s, s:s}]}]}", "text", text, "blocks",
	                         "type", "section", "text", "type", "mrkdwn", "text", section, "type", "context",
	                         "elements", "type", "mrkdwn", "text", context_esc);
	if (body != NULL && !t->is_direct)
		json_object_set_new(body, "channel", json_string(d->recipient));
	return body;
}

/* PagerDuty's severities are critical, error, warning and info. */
static const char *pagerduty_severity(const char *s)
{
	if (strcmp(s, "critical") == 0 || strcmp(s, "fatal") == 0)
		return "critical";
	if (strcmp(s, "error") == 0 || strcmp(s, "warning") == 0)
		return s;
	return "info";
}

static json_t *pagerduty_body(const struct delivery *d, json_t *alert, const char *routing_key)
{
	bool is_resolve = strcmp(d->trigger, "resolved") == 0;
	json_t *body =
	        json_pack("{s:s, s:s, s:s, s:s}", "routing_key", routing_key, "event_action",
	                  is_resolve ? "resolve" : "trigger", "dedup_key", jstr(alert, "id"), "client", "monitord");
	if (body == NULL || is_resolve)
		return body;
	char title[512], summary[1024];
	title_of(d, alert, title, sizeof(title));
	const char *msg = jstr(alert, "message");
	snprintf(summary, sizeof(summary), "%s%s%s", title, msg[0] ? ": " : "", msg);
	const char *metric = jstr(json_object_get(alert, "rule"), "metric_name");
	json_t *payload = json_pack("{s:s, s:s, s:s, s:s, s:O}", "summary", summary, "severity",
	                            pagerduty_severity(jstr(alert, "severity")), "source", "monitord", "component",
	                            metric, "custom_details", alert);
	if (payload == NULL) {
		json_decref(body);
		return NULL;
	}
	const char *ts = jstr(alert, "triggered_at");
	if (ts[0] != '\0')
		json_object_set_new(payload, "timestamp", json_string(ts));
	json_object_set_new(body, "payload", payload);
	return body;
}

/* ---- sending ---- */

/* Aborts a send when the notifier stops, so shutdown does not wait for a slow receiver. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	return is_stopping(arg) ? 1 : 0;
}

static size_t drop_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	size_t *seen = arg;
	*seen += size * nmemb;
	return *seen > NOTIFY_RESPONSE_MAX ? 0 : size * nmemb;
}

/*
 * POSTs body to url with the delivery's headers; signs with secret when
 * given (X-Monitord-Signature: v1=hex(HMAC-SHA256(secret, timestamp "."
 * body))). Classifies the answer into o.
 */
static void post(struct notifier *n, CURL *curl, const struct delivery *d, const char *url, const char *body,
                 const unsigned char *secret, size_t secret_len, struct outcome *o)
{
	struct curl_slist *headers = NULL;
	char line[256];
	bool is_ok = true;
#define HEADER(...)                                                                                                    \
	do {                                                                                                           \
		snprintf(line, sizeof(line), __VA_ARGS__);                                                             \
		struct curl_slist *h_ = curl_slist_append(headers, line);                                              \
		if (h_ == NULL)                                                                                        \
			is_ok = false;                                                                                 \
		else                                                                                                   \
			headers = h_;                                                                                  \
	} while (0)
	HEADER("Content-Type: application/json");
	HEADER("Idempotency-Key: %s", d->key);
	HEADER("X-Monitord-Delivery: %s", d->id);
	HEADER("X-Monitord-Attempt: %d", d->attempt);
	if (secret != NULL) {
		char ts[32];
		snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
		crypto_auth_hmacsha256_state st;
		unsigned char mac[crypto_auth_hmacsha256_BYTES];
		char hex[2 * crypto_auth_hmacsha256_BYTES + 1];
		crypto_auth_hmacsha256_init(&st, secret, secret_len);
		crypto_auth_hmacsha256_update(&st, (const unsigned char *)ts, strlen(ts));
		crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
		crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, strlen(body));
		crypto_auth_hmacsha256_final(&st, mac);
		sodium_memzero(&st, sizeof(st));
		sodium_bin2hex(hex, sizeof(hex), mac, sizeof(mac));
		HEADER("X-Monitord-Timestamp: %s", ts);
		HEADER("X-Monitord-Signature: v1=%s", hex);
	}
#undef HEADER
	if (!is_ok) {
		set_error(o, false, "out of memory");
		curl_slist_free_all(headers);
		return;
	}
	size_t seen = 0;
	curl_easy_reset(curl);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)n->cfg.timeout_ms);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)n->cfg.timeout_ms);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, NOTIFY_USER_AGENT);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, drop_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &seen);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, n);
	int64_t start = mon_now_ms();
	CURLcode cc = curl_easy_perform(curl);
	o->elapsed_ms = (int)(mon_now_ms() - start);
	long code = 0;
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
	curl_off_t retry_after = 0;
	if (curl_easy_getinfo(curl, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK && retry_after > 0)
		o->retry_after_s = (long)retry_after;
	curl_slist_free_all(headers);
	o->http_status = code;
	if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && code >= 200)) {
		bool is_bad_url = cc == CURLE_UNSUPPORTED_PROTOCOL || cc == CURLE_URL_MALFORMAT;
		o->http_status = 0;
		if (cc == CURLE_ABORTED_BY_CALLBACK)
			set_error(o, false, "interrupted by the server's shutdown");
		else
			set_error(o, is_bad_url, "could not reach the receiver: %s", curl_easy_strerror(cc));
		return;
	}
	if (code >= 200 && code < 300) {
		o->is_sent = true;
		o->error[0] = '\0';
		return;
	}
	bool is_transient = code == 408 || code == 429 || code >= 500;
	set_error(o, !is_transient, "HTTP %ld from receiver", code);
}

/* Renders and sends one claimed delivery. */
static void deliver(struct notifier *n, CURL *curl, const struct delivery *d, struct outcome *o)
{
	struct target t = {0};
	unsigned char *secret = NULL;
	size_t secret_len = 0;
	json_t *alert = NULL, *body = NULL, *auth = NULL;
	char *text = NULL;
	memset(o, 0, sizeof(*o));
	if (curl == NULL) {
		set_error(o, false, "could not start an HTTP client");
		goto out;
	}
	alert = json_loads(d->payload, 0, NULL);
	if (!json_is_object(alert)) {
		set_error(o, true, "the outbox payload is not a JSON object");
		goto out;
	}
	if (find_target(n, d, &t, o) != 0)
		goto out;
	if (strcmp(d->channel, "webhook") == 0) {
		if (open_secret(n, t.id, "webhook_secret", t.sealed, &secret, &secret_len, o) != 0)
			goto out;
		body = webhook_body(d, alert);
	} else if (strcmp(d->channel, "slack") == 0) {
		body = slack_body(d, alert, &t);
	} else {
		if (open_secret(n, t.id, "authentication", t.sealed, &secret, &secret_len, o) != 0)
			goto out;
		auth = json_loads((const char *)secret, 0, NULL);
		const char *routing_key = json_string_value(json_object_get(auth, "routing_key"));
		if (routing_key == NULL || routing_key[0] == '\0') {
			set_error(o, true, "integration \"%s\": authentication has no routing_key", t.id);
			goto out;
		}
		body = pagerduty_body(d, alert, routing_key);
		/* The routing key is in the body now; the body is freed below. */
		seal_plain_free(secret);
		secret = NULL;
	}
	if (body == NULL || (text = json_dumps(body, JSON_COMPACT)) == NULL) {
		set_error(o, false, "out of memory");
		goto out;
	}
	post(n, curl, d, t.url, text, secret, secret_len, o);
out:
	if (text != NULL) {
		sodium_memzero(text, strlen(text));
		free(text);
	}
	json_decref(body);
	json_decref(auth);
	json_decref(alert);
	seal_plain_free(secret);
	target_free(&t);
}

/* ---- recording ---- */

/* Milliseconds until the retry after attempt (1-based): doubling, capped, with jitter in [d/2, d). */
static int64_t backoff_ms(int attempt, long retry_after_s)
{
	int64_t d = NOTIFY_BACKOFF_BASE_MS;
	for (int i = 1; i < attempt && d < NOTIFY_BACKOFF_MAX_MS; i++)
		d *= 2;
	if (d > NOTIFY_BACKOFF_MAX_MS)
		d = NOTIFY_BACKOFF_MAX_MS;
	int64_t wait = d / 2 + (int64_t)randombytes_uniform((uint32_t)(d / 2));
	if (retry_after_s > 0 && retry_after_s * 1000 > wait)
		wait = retry_after_s * 1000 > NOTIFY_BACKOFF_MAX_MS ? NOTIFY_BACKOFF_MAX_MS : retry_after_s * 1000;
	return wait;
}

struct record_tx {
	const struct delivery *d;
	const struct outcome *o;
	const char *status;
	int64_t retry_ms;
	bool is_recorded;
};

static int record_fn(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char sql[] =
	        "UPDATE tb_notification_outbox SET status = $3::text,"
	        " delivered_at = CASE WHEN $3::text = 'sent' THEN now() END,"
	        " next_attempt_at = CASE WHEN $3::text = 'retrying' THEN now() + $4::bigint * interval '1 millisecond'"
	        " ELSE now() END,"
	        " error_message = $5::text, response_status_code = $6::integer"
	        " WHERE id = $1 AND attempt_count = $2::integer AND status IN ('pending', 'retrying')";
	static const char event_sql[] =
	        "INSERT INTO tb_integration_event (integration_id, event_type, direction, endpoint, method, "
	        "status_code,"
	        " success, response_time, error_message, retry_count)"
	        " VALUES ($1, 'webhook-delivery', 'outbound', $2, 'POST', $3::integer, $4::boolean, $5::integer, $6,"
	        " $7::integer)";
	static const char lock_sql[] = "SELECT 1 FROM tb_alert WHERE id = $1 FOR UPDATE";
	struct record_tx *r = arg;
	const struct delivery *d = r->d;
	const struct outcome *o = r->o;
	char attempt[16], retry[32], code[16], elapsed[16], retries[16];
	snprintf(attempt, sizeof(attempt), "%d", d->attempt);
	snprintf(retry, sizeof(retry), "%" PRId64, r->retry_ms);
	snprintf(code, sizeof(code), "%ld", o->http_status);
	snprintf(elapsed, sizeof(elapsed), "%d", o->elapsed_ms);
	snprintf(retries, sizeof(retries), "%d", d->attempt - 1);
	const char *params[] = {
	        d->id, attempt, r->status, retry, o->is_sent ? NULL : o->error, o->http_status > 0 ? code : NULL};
	struct db_result *res = NULL;
	r->is_recorded = false;
	/* The alert first: recordings of one alert's deliveries refresh its notifications_sent in turn. */
	const char *lock_params[] = {d->alert_id};
	int rc = db_exec(conn, lock_sql, 1, lock_params, NULL, err);
	if (rc != 0)
		return rc;
	rc = db_exec(conn, sql, 6, params, &res, err);
	if (rc != 0)
		return rc;
	r->is_recorded = db_result_affected(res) == 1;
	db_result_free(res);
	if (!r->is_recorded)
		return 0;
	if (o->integration_id[0] != '\0' && o->url[0] != '\0') {
		const char *ev[] = {o->integration_id,
		                    o->url,
		                    o->http_status > 0 ? code : NULL,
		                    o->is_sent ? "true" : "false",
		                    elapsed,
		                    o->is_sent ? NULL : o->error,
		                    retries};
		if ((rc = db_exec(conn, event_sql, 7, ev, NULL, err)) != 0)
			return rc;
	}
	return alerts_deliveries_sync_tx(conn, d->alert_id, err);
}

static void record(struct notifier *n, const struct delivery *d, const struct outcome *o)
{
	struct record_tx r = {.d = d, .o = o};
	if (o->is_sent)
		r.status = "sent";
	else if (o->is_permanent || d->attempt >= n->cfg.max_attempts)
		r.status = "failed";
	else {
		r.status = "retrying";
		r.retry_ms = backoff_ms(d->attempt, o->retry_after_s);
	}
	struct mon_error err = {0};
	if (db_tx_run(n->cfg.pool, NOTIFY_DB_TIMEOUT_MS, record_fn, &r, &err) != 0) {
		log_warn("msg=\"could not record a notification delivery; it is sent again when its lease ends\" "
		         "delivery_id=\"%s\" error=\"%s\"",
		         d->id, err.msg);
		return;
	}
	if (!r.is_recorded)
		log_info("msg=\"notification result dropped: the claim was lost\" delivery_id=\"%s\"", d->id);
	else if (o->is_sent)
		log_info("msg=\"notification sent\" delivery_id=\"%s\" alert_id=\"%s\" channel=%s attempt=%d", d->id,
		         d->alert_id, d->channel, d->attempt);
	else
		log_warn("msg=\"notification not sent\" delivery_id=\"%s\" alert_id=\"%s\" channel=%s attempt=%d "
		         "status=%s error=\"%s\"",
		         d->id, d->alert_id, d->channel, d->attempt, r.status, o->error);
}

/* ---- the workers ---- */

static void *worker_main(void *arg)
{
	struct notifier *n = arg;
	CURL *curl = curl_init_code == CURLE_OK ? curl_easy_init() : NULL;
	uint64_t seen = 0;
	bool is_first = true;
	for (;;) {
		if (!is_first && !wait_for_work(n, &seen))
			break;
		is_first = false;
		/* Stale rows first (the claim passes them over), then drain while rows come back. */
		struct skip_tx s = {0};
		struct mon_error err = {0};
		if (db_tx_run(n->cfg.pool, NOTIFY_DB_TIMEOUT_MS, skip_fn, &s, &err) != 0)
			/* A database that is down is reported once, by the claim. */
			log_debug("msg=\"could not skip stale notification deliveries\" error=\"%s\"", err.msg);
		for (;;) {
			if (is_stopping(n))
				goto out;
			struct delivery batch[NOTIFY_BATCH];
			memset(batch, 0, sizeof(batch));
			int got = claim(n, batch);
			for (int i = 0; i < got; i++) {
				struct outcome o;
				deliver(n, curl, &batch[i], &o);
				record(n, &batch[i], &o);
				delivery_free(&batch[i]);
			}
			if (got == 0)
				break;
		}
	}
out:
	if (curl != NULL)
		curl_easy_cleanup(curl);
	return NULL;
}

int notifier_start(const struct notify_config *cfg, struct notifier **out, struct mon_error *err)
{
	*out = NULL;
	struct notifier *n = calloc(1, sizeof(*n));
	if (n == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	n->cfg = *cfg;
	if (n->cfg.max_attempts < 1)
		n->cfg.max_attempts = 1;
	if (n->cfg.timeout_ms < 100)
		n->cfg.timeout_ms = 100;
	pthread_mutex_init(&n->mu, NULL);
	pthread_cond_init(&n->cv, NULL);
	int rc = 0;
	if (cfg->secrets_key_file != NULL && cfg->secrets_key_file[0] != '\0' &&
	    (rc = seal_key_load(cfg->secrets_key_file, &n->key, err)) != 0)
		goto fail;
	n->cfg.secrets_key_file = NULL; /* not kept: the caller owns the string */
	if (sodium_init() < 0) {        /* randombytes for the jitter */
		rc = mon_error_set(err, MON_EINTERNAL, "notifier: could not initialise libsodium");
		goto fail;
	}
	pthread_once(&curl_once, curl_init_once);
	if (curl_init_code != CURLE_OK) {
		rc = mon_error_set(err, MON_EINTERNAL, "notifier: could not initialise libcurl: %s",
		                   curl_easy_strerror(curl_init_code));
		goto fail;
	}
	if (cfg->bus != NULL && (rc = db_bus_subscribe(cfg->bus, ALERTS_NOTIFY_CHANNEL, on_notify, n, err)) != 0)
		goto fail;
	for (int i = 0; i < NOTIFY_WORKERS; i++) {
		if (pthread_create(&n->threads[i], NULL, worker_main, n) != 0) {
			notifier_stop(n);
			return mon_error_set(err, MON_EINTERNAL, "notifier: could not start a thread");
		}
		n->thread_n++;
	}
	log_info("msg=\"notifier started\" workers=%d max_attempts=%d timeout_ms=%d secrets=%s", n->thread_n,
	         n->cfg.max_attempts, n->cfg.timeout_ms, n->key != NULL ? "yes" : "no");
	*out = n;
	return 0;
fail:
	seal_key_free(n->key);
	pthread_cond_destroy(&n->cv);
	pthread_mutex_destroy(&n->mu);
	free(n);
	return rc;
}

void notifier_stop(struct notifier *n)
{
	if (n == NULL)
		return;
	pthread_mutex_lock(&n->mu);
	n->is_stopping = true;
	pthread_cond_broadcast(&n->cv);
	pthread_mutex_unlock(&n->mu);
	for (int i = 0; i < n->thread_n; i++)
		pthread_join(n->threads[i], NULL);
	seal_key_free(n->key);
	pthread_cond_destroy(&n->cv);
	pthread_mutex_destroy(&n->mu);
	free(n);
}
