/*
 * The health prober (see prober.h): one claim thread per process takes due
 * targets from tb_service_health with FOR UPDATE SKIP LOCKED, never more
 * than the workers that are free, and hands them to a fixed set of worker
 * threads; each worker probes its target (libcurl for http and https, the
 * standard gRPC health Check for grpc://) with every retry, then records
 * the result and gives the claim back in one transaction. It owns the
 * claim columns next_probe_at, probe_claimed_by and probe_lease_until; the
 * result columns belong to the health store.
 *
 * A claim's lease covers every attempt of the probe plus a margin, so a
 * live replica always finishes before its lease ends. A result is recorded
 * only while the claim is still this replica's and the URL is the one that
 * was probed, so a replica that stalled past its lease cannot record a
 * result twice with the one that took over.
 */
#include "health/prober.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "grpc/health/v1/health.pb-c.h"
#include "health/store.h"
#include "rpc/client.h"
#include "util/clock.h"
#include "util/log.h"

#ifndef MON_VERSION
#define MON_VERSION "dev"
#endif

#define PROBE_BODY_MAX (1024 * 1024)  /* bytes of a response body read before giving up */
#define PROBE_REDIRECTS_MAX 3L        /* redirects followed */
#define PROBE_RETRY_PAUSE_MS 500      /* pause between attempts */
#define PROBE_LEASE_MARGIN_S 10       /* lease beyond the attempts: recording, scheduling */
#define PROBE_DB_TIMEOUT_MS 5000      /* recording a result, giving a claim back */
#define PROBE_ACQUIRE_TIMEOUT_MS 2000 /* waiting for a pooled connection to claim */
#define PROBE_ERROR_MAX 200           /* bytes of an error message */
#define PROBE_RETRY_MAX 10            /* retry_count above this is capped */
#define PROBE_TIMEOUT_S_MAX 3600      /* timeout above this is capped */
#define RUN_RECORD_MARGIN_MS 1000     /* deadline kept for recording a RunHealthCheck */
#define GRPC_HEALTH_CHECK "/grpc.health.v1.Health/Check"

/* A claimed target, owned by the queue and then by the worker probing it. */
struct probe_job {
	char *id;
	char *url;
	int timeout_s;
	int retry_count;
};

struct prober {
	struct db_pool *pool;
	char replica_id[96];
	char *proxy;
	int concurrency;
	int claim_interval_ms;

	pthread_mutex_t lock;
	pthread_cond_t work_cond;  /* jobs queued, or stopping */
	pthread_cond_t claim_cond; /* stopping */
	struct probe_job *queue;   /* ring of concurrency slots */
	int queue_head;
	int queue_n;
	int busy_n; /* jobs being probed */
	atomic_bool is_stopping;

	pthread_t claimer;
	bool has_claimer;
	pthread_t *workers;
	int worker_n;
};

/* What one probe found, after all its attempts. */
struct probe_outcome {
	int status;               /* Monitoring__V1__ServiceStatus */
	int32_t response_time_ms; /* < 0: no response */
	char error[PROBE_ERROR_MAX];
	const char *kind;           /* "http", "grpc" or "none" */
	long http_status;           /* 0: none */
	const char *serving_status; /* gRPC health answer, NULL: none */
	int attempt_count;
	bool is_aborted; /* the probe was interrupted (shutdown, caller gone): record nothing */
};

/* Asked between attempts and during transfers: true to give up at once. */
typedef bool (*probe_stop_fn)(void *arg);

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_code = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
	curl_init_code = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

/* Waits ms in short steps, giving up early when stop says so; returns true when stopped. */
static bool pause_or_stop(int64_t ms, probe_stop_fn stop, void *stop_arg)
{
	int64_t end = mon_now_ms() + ms;
	for (;;) {
		if (stop && stop(stop_arg))
			return true;
		int64_t left = end - mon_now_ms();
		if (left <= 0)
			return false;
		sleep_ms(left < 50 ? left : 50);
	}
}

/* ---- http(s) ---- */

struct http_transfer {
	size_t body_bytes;
	bool is_too_big;
	probe_stop_fn stop;
	void *stop_arg;
};

/* Counts and drops the body; stops the transfer past PROBE_BODY_MAX. */
static size_t http_on_body(char *data, size_t size, size_t n, void *arg)
{
	struct http_transfer *t = arg;
	(void)data;
	size_t len = size * n;
	if (t->body_bytes + len > PROBE_BODY_MAX) {
		t->is_too_big = true;
		return 0;
	}
	t->body_bytes += len;
	return len;
}

static int http_on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	struct http_transfer *t = arg;
	return t->stop && t->stop(t->stop_arg) ? 1 : 0;
}

/*
 * One http(s) attempt with the rules of docs/operations.md. Sets *is_retryable
 * when the failure may pass (no answer, or a 5xx).
 */
static void http_attempt(CURL *curl, const char *url, int timeout_ms, const char *proxy, probe_stop_fn stop,
                         void *stop_arg, struct probe_outcome *o, bool *is_retryable)
{
	struct http_transfer t = {.stop = stop, .stop_arg = stop_arg};
	*is_retryable = false;
	o->response_time_ms = -1;
	o->http_status = 0;
	o->error[0] = '\0';

	curl_easy_reset(curl);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(curl, CURLOPT_MAXREDIRS, PROBE_REDIRECTS_MAX);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_PROXY, proxy ? proxy : ""); /* "": not even from the environment */
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "monitord-prober/" MON_VERSION);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, http_on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, http_on_progress);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &t);
	curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)PROBE_BODY_MAX);

	int64_t start = mon_now_ms();
	CURLcode cc = curl_easy_perform(curl);
	int64_t elapsed = mon_now_ms() - start;
	long code = 0;
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);

	if (cc == CURLE_ABORTED_BY_CALLBACK) {
		o->is_aborted = true;
		return;
	}
	if (t.is_too_big || cc == CURLE_FILESIZE_EXCEEDED) {
		o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DEGRADED;
		o->http_status = code;
		o->response_time_ms = (int32_t)elapsed;
		snprintf(o->error, sizeof(o->error), "response larger than %d bytes", PROBE_BODY_MAX);
		return;
	}
	switch (cc) {
	case CURLE_OK: break;
	case CURLE_TOO_MANY_REDIRECTS:
		o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DEGRADED;
		o->http_status = code;
		o->response_time_ms = (int32_t)elapsed;
		snprintf(o->error, sizeof(o->error), "more than %ld redirects", PROBE_REDIRECTS_MAX);
		return;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_UNKNOWN;
		snprintf(o->error, sizeof(o->error), "cannot probe this URL: %s", curl_easy_strerror(cc));
		return;
	case CURLE_OPERATION_TIMEDOUT:
		o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DOWN;
		snprintf(o->error, sizeof(o->error), "no answer within the timeout (%d ms)", timeout_ms);
		*is_retryable = true;
		return;
	case CURLE_COULDNT_CONNECT:
		o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DOWN;
		snprintf(o->error, sizeof(o->error), "could not connect");
		*is_retryable = true;
		return;
	default:
		/* No usable answer: DNS, TLS, a dropped connection. curl's text names no host or URL. */
		o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DOWN;
		snprintf(o->error, sizeof(o->error), "%s", curl_easy_strerror(cc));
		*is_retryable = true;
		return;
	}

	o->http_status = code;
	o->response_time_ms = (int32_t)elapsed;
	if (code >= 200 && code <= 299) {
		if (elapsed * 2 < timeout_ms) {
			o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_HEALTHY;
		} else {
			o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DEGRADED;
			snprintf(o->error, sizeof(o->error), "slow answer: %" PRId64 " ms, over half the timeout",
			         elapsed);
		}
	} else if (code >= 500 && code <= 599) {
		o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DOWN;
		snprintf(o->error, sizeof(o->error), "HTTP %ld", code);
		*is_retryable = true;
	} else {
		o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DEGRADED;
		snprintf(o->error, sizeof(o->error), "HTTP %ld", code);
	}
}

/* ---- grpc:// ---- */

static const char *serving_status_name(int s)
{
	switch (s) {
	case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING: return "SERVING";
	case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING: return "NOT_SERVING";
	case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN: return "SERVICE_UNKNOWN";
	default: return "UNKNOWN";
	}
}

/*
 * Splits grpc://host:port[/service] into target and service (copies the
 * caller frees); a query or fragment belongs to neither. Returns 0 or
 * MON_EINVAL.
 */
static int grpc_url_split(const char *url, char **target_out, char **service_out)
{
	*target_out = NULL;
	*service_out = NULL;
	const char *rest = url + strlen("grpc://");
	size_t target_n = strcspn(rest, "/?#"); /* the authority, as health_check_url reads it */
	if (target_n == 0 || memchr(rest, '@', target_n) != NULL)
		return MON_EINVAL;
	const char *service = rest[target_n] == '/' ? rest + target_n + 1 : "";
	*target_out = strndup(rest, target_n);
	*service_out = strndup(service, strcspn(service, "?#"));
	if (*target_out == NULL || *service_out == NULL) {
		free(*target_out);
		free(*service_out);
		*target_out = *service_out = NULL;
		return MON_ENOMEM;
	}
	return 0;
}

/* One gRPC health attempt with the rules of docs/operations.md. */
static void grpc_attempt(struct rpc_channel *ch, const char *service, int timeout_ms, struct probe_outcome *o,
                         bool *is_retryable)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)service;
	struct rpc_call_options opts = {.timeout_ms = timeout_ms};
	struct rpc_status st = {0};
	ProtobufCMessage *resp = NULL;
	*is_retryable = false;
	o->response_time_ms = -1;
	o->serving_status = NULL;
	o->error[0] = '\0';

	int64_t start = mon_now_ms();
	int rc = rpc_unary_call(ch, GRPC_HEALTH_CHECK, &req.base, &grpc__health__v1__health_check_response__descriptor,
	                        &resp, &opts, &st);
	int64_t elapsed = mon_now_ms() - start;
	if (rc == 0) {
		const Grpc__Health__V1__HealthCheckResponse *r = (const Grpc__Health__V1__HealthCheckResponse *)resp;
		o->response_time_ms = (int32_t)elapsed;
		o->serving_status = serving_status_name(r->status);
		if (r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING) {
			if (elapsed * 2 < timeout_ms) {
				o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_HEALTHY;
			} else {
				o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DEGRADED;
				snprintf(o->error, sizeof(o->error),
				         "slow answer: %" PRId64 " ms, over half the timeout", elapsed);
			}
		} else if (r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING) {
			o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DOWN;
			snprintf(o->error, sizeof(o->error), "NOT_SERVING");
			*is_retryable = true;
		} else {
			o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DEGRADED;
			snprintf(o->error, sizeof(o->error), "%s", o->serving_status);
		}
		protobuf_c_message_free_unpacked(resp, NULL);
		return;
	}
	switch (st.code) {
	case 4: /* DEADLINE_EXCEEDED */
		o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DOWN;
		snprintf(o->error, sizeof(o->error), "no answer within the timeout (%d ms)", timeout_ms);
		*is_retryable = true;
		break;
	case 14: /* UNAVAILABLE: could not connect, or the connection broke */
		o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DOWN;
		snprintf(o->error, sizeof(o->error), "could not connect (UNAVAILABLE)");
		*is_retryable = true;
		break;
	case 5: /* NOT_FOUND: the server does not know the service name */
		o->response_time_ms = (int32_t)elapsed;
		o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DEGRADED;
		snprintf(o->error, sizeof(o->error), "SERVICE_UNKNOWN (NOT_FOUND)");
		break;
	default:
		/* The server answered, but not with a health status (no health service, refused). */
		o->response_time_ms = (int32_t)elapsed;
		o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DEGRADED;
		snprintf(o->error, sizeof(o->error), "health check failed with gRPC status %d", st.code);
		break;
	}
}

/* ---- one probe, every attempt ---- */

/*
 * Probes url with timeout_s and up to retry_count retries, as long as
 * deadline_ms (monotonic, 0: none) leaves room for a whole attempt. Fills
 * *o; o->is_aborted when stop interrupted it.
 */
static void probe_run(const char *url, int timeout_s, int retry_count, int64_t deadline_ms, const char *proxy,
                      probe_stop_fn stop, void *stop_arg, struct probe_outcome *o)
{
	memset(o, 0, sizeof(*o));
	o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_UNKNOWN;
	o->response_time_ms = -1;
	o->kind = "none";
	if (timeout_s < 1)
		timeout_s = 1;
	if (timeout_s > PROBE_TIMEOUT_S_MAX)
		timeout_s = PROBE_TIMEOUT_S_MAX;
	if (retry_count < 0)
		retry_count = 0;
	if (retry_count > PROBE_RETRY_MAX)
		retry_count = PROBE_RETRY_MAX;
	int timeout_ms = timeout_s * 1000;

	CURL *curl = NULL;
	struct rpc_channel *ch = NULL;
	char *target = NULL, *service = NULL;
	bool is_http = strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0;
	bool is_grpc = strncmp(url, "grpc://", 7) == 0;
	if (is_http) {
		o->kind = "http";
		pthread_once(&curl_once, curl_init_once);
		curl = curl_init_code == CURLE_OK ? curl_easy_init() : NULL;
		if (curl == NULL) {
			snprintf(o->error, sizeof(o->error), "could not set up the http client");
			goto out;
		}
	} else if (is_grpc) {
		o->kind = "grpc";
		struct mon_error err = {0};
		struct rpc_channel_config cc = {0};
		if (grpc_url_split(url, &target, &service) != 0) {
			snprintf(o->error, sizeof(o->error),
			         "cannot probe this URL: expected grpc://host:port[/service]");
			goto out;
		}
		cc.target = target;
		if (rpc_channel_open(&cc, &ch, &err) != 0) {
			snprintf(o->error, sizeof(o->error), "cannot probe this URL: %.150s", err.msg);
			goto out;
		}
	} else {
		snprintf(o->error, sizeof(o->error), "cannot probe this URL: only http, https and grpc are probed");
		goto out;
	}

	bool had_failure = false;
	for (int attempt = 0; attempt <= retry_count; attempt++) {
		if (attempt > 0) {
			if (deadline_ms > 0 && mon_now_ms() + PROBE_RETRY_PAUSE_MS + timeout_ms > deadline_ms)
				break; /* no room for another whole attempt */
			if (pause_or_stop(PROBE_RETRY_PAUSE_MS, stop, stop_arg)) {
				o->is_aborted = true;
				break;
			}
		}
		bool is_retryable = false;
		o->attempt_count = attempt + 1;
		if (is_http)
			http_attempt(curl, url, timeout_ms, proxy, stop, stop_arg, o, &is_retryable);
		else
			grpc_attempt(ch, service, timeout_ms, o, &is_retryable);
		if (o->is_aborted || (stop && stop(stop_arg))) {
			o->is_aborted = true;
			break;
		}
		if (!is_retryable)
			break;
		had_failure = true;
	}
	/* A service that answers well only after a retry is flapping: degraded at best. */
	if (!o->is_aborted && had_failure && o->status == MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_HEALTHY) {
		o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DEGRADED;
		snprintf(o->error, sizeof(o->error), "healthy only after %d attempts", o->attempt_count);
	}
out:
	if (curl)
		curl_easy_cleanup(curl);
	rpc_channel_close(ch);
	free(target);
	free(service);
}

/* The outcome's details as a JSON object (the check log's details column). */
static void outcome_details_json(const struct probe_outcome *o, char *buf, size_t len)
{
	int n = snprintf(buf, len, "{\"probe\":\"%s\",\"attempt_count\":%d", o->kind, o->attempt_count);
	if (o->http_status > 0 && n > 0 && (size_t)n < len)
		n += snprintf(buf + n, len - (size_t)n, ",\"http_status\":%ld", o->http_status);
	if (o->serving_status && n > 0 && (size_t)n < len)
		n += snprintf(buf + n, len - (size_t)n, ",\"serving_status\":\"%s\"", o->serving_status);
	if (n > 0 && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n, "}");
}

static void outcome_to_result(const struct probe_outcome *o, const char *service_id, char *details, size_t details_len,
                              struct health_check_result *r)
{
	outcome_details_json(o, details, details_len);
	memset(r, 0, sizeof(*r));
	r->service_id = service_id;
	r->status = o->status;
	r->response_time_ms = o->response_time_ms;
	r->error_message = o->error[0] ? o->error : NULL;
	r->details_json = details;
	/* The probe's own time, to the millisecond, as a reported check carries it. */
	r->checked_at_ms = mon_wall_ms();
	r->source = "probe";
}

/* ---- claims ---- */

static const struct db_stmt claim_stmt = {
        .name = "prober_claim",
        .sql = "UPDATE tb_service_health s"
               "   SET probe_claimed_by = $1,"
               "       probe_lease_until = now() + make_interval(secs =>"
               "           LEAST(GREATEST(s.timeout, 1), 3600) * (LEAST(GREATEST(s.retry_count, 0), 10) + 1)"
               "           + LEAST(GREATEST(s.retry_count, 0), 10) * 0.5 + 10),"
               "       next_probe_at = now() + make_interval(secs => GREATEST(s.check_interval, 1))"
               " WHERE s.id IN (SELECT id FROM tb_service_health"
               "                 WHERE health_check_url IS NOT NULL AND health_check_url <> ''"
               "                   AND next_probe_at <= now()"
               "                   AND (probe_lease_until IS NULL OR probe_lease_until < now())"
               "                 ORDER BY next_probe_at"
               "                 LIMIT $2"
               "                 FOR UPDATE SKIP LOCKED)"
               " RETURNING s.id, s.health_check_url, s.timeout, s.retry_count",
        .param_count = 2,
};

/* Gives a claim back unprobed, so any replica probes the target at once. */
static const char *const unclaim_sql = "UPDATE tb_service_health"
                                       "   SET probe_claimed_by = NULL, probe_lease_until = NULL, next_probe_at = now()"
                                       " WHERE id = $1 AND probe_claimed_by = $2";

static void job_free(struct probe_job *j)
{
	free(j->id);
	free(j->url);
	j->id = j->url = NULL;
}

static void unclaim(struct prober *p, const struct probe_job *j)
{
	struct db_conn *conn = NULL;
	struct mon_error err = {0};
	const char *params[2] = {j->id, p->replica_id};
	if (db_pool_acquire(p->pool, PROBE_ACQUIRE_TIMEOUT_MS, &conn, &err) != 0 ||
	    db_exec(conn, unclaim_sql, 2, params, NULL, &err) != 0)
		log_warn("msg=\"could not give back a probe claim; it expires with its lease\" service_id=\"%s\" "
		         "error=\"%s\"",
		         j->id, err.msg);
	if (conn)
		db_pool_release(p->pool, conn);
}

static int parse_int(const char *s, int fallback)
{
	char *end = NULL;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < INT32_MIN || v > INT32_MAX)
		return fallback;
	return (int)v;
}

/* Claims up to want due targets into the queue; returns how many, or a negative code. */
static int claim_batch(struct prober *p, int want, struct mon_error *err)
{
	struct db_conn *conn = NULL;
	struct db_result *res = NULL;
	char limit[16];
	snprintf(limit, sizeof(limit), "%d", want);
	const char *params[2] = {p->replica_id, limit};
	int rc = db_pool_acquire(p->pool, PROBE_ACQUIRE_TIMEOUT_MS, &conn, err);
	if (rc != 0)
		goto out;
	rc = db_exec_stmt(conn, &claim_stmt, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res);
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < rows; i++) {
		struct probe_job j = {
		        .id = strdup(db_result_value(res, i, 0)),
		        .url = strdup(db_result_value(res, i, 1)),
		        .timeout_s = parse_int(db_result_value(res, i, 2), 30),
		        .retry_count = parse_int(db_result_value(res, i, 3), 0),
		};
		if (j.id == NULL || j.url == NULL || p->queue_n >= p->concurrency) {
			/* Out of memory (or a full queue, which cannot happen): the lease frees it later. */
			job_free(&j);
			continue;
		}
		p->queue[(p->queue_head + p->queue_n) % p->concurrency] = j;
		p->queue_n++;
	}
	pthread_cond_broadcast(&p->work_cond);
	pthread_mutex_unlock(&p->lock);
	rc = rows;
out:
	db_result_free(res);
	if (conn)
		db_pool_release(p->pool, conn);
	return rc;
}

static void *claimer_main(void *arg)
{
	struct prober *p = arg;
	bool is_failing = false;
	while (!atomic_load(&p->is_stopping)) {
		pthread_mutex_lock(&p->lock);
		int free_n = p->concurrency - p->queue_n - p->busy_n;
		pthread_mutex_unlock(&p->lock);
		if (free_n > 0) {
			struct mon_error err = {0};
			int rc = claim_batch(p, free_n, &err);
			if (rc < 0 && !is_failing)
				log_warn("msg=\"could not claim health probes, retrying\" error=\"%s\"", err.msg);
			else if (rc >= 0 && is_failing)
				log_info("msg=\"claiming health probes again\"");
			is_failing = rc < 0;
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += p->claim_interval_ms / 1000;
		ts.tv_nsec += (long)(p->claim_interval_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&p->lock);
		if (!atomic_load(&p->is_stopping))
			pthread_cond_timedwait(&p->claim_cond, &p->lock, &ts);
		pthread_mutex_unlock(&p->lock);
	}
	return NULL;
}

/* ---- recording ---- */

struct record_arg {
	const struct health_check_result *result;
	struct rpc_ctx *ctx;     /* RunHealthCheck: audit it and read the service back */
	const char *claimed_by;  /* a claimed probe: record only while the claim holds */
	const char *claimed_url; /* ... and the URL is still the one probed */
	bool is_dropped;         /* the claim was lost: nothing recorded */
	struct health_check_outcome outcome;
	Monitoring__V1__MonitoredService *service; /* RunHealthCheck: the service after the check */
	int64_t checked_at_ms;                     /* wall clock of the recorded check */
};

static int read_service_tx(struct db_conn *conn, struct record_arg *a, struct mon_error *err);

static int record_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct record_arg *a = arg;
	struct db_result *res = NULL;
	int rc = 0;
	a->is_dropped = false;
	if (a->claimed_by) {
		const char *params[3] = {a->result->service_id, a->claimed_by, a->claimed_url};
		rc = db_exec(conn,
		             "SELECT 1 FROM tb_service_health WHERE id = $1 AND probe_claimed_by = $2"
		             " AND health_check_url = $3 FOR UPDATE",
		             3, params, &res, err);
		if (rc != 0)
			goto out;
		if (db_result_rows(res) == 0) {
			a->is_dropped = true;
			goto out;
		}
	}
	rc = health_record_check_tx(conn, a->ctx, a->result, &a->outcome, err);
	if (rc != 0)
		goto out;
	if (a->claimed_by) {
		const char *params[2] = {a->result->service_id, a->claimed_by};
		rc = db_exec(conn,
		             "UPDATE tb_service_health SET probe_claimed_by = NULL, probe_lease_until = NULL"
		             " WHERE id = $1 AND probe_claimed_by = $2",
		             2, params, NULL, err);
		if (rc != 0)
			goto out;
	}
	if (a->ctx)
		rc = read_service_tx(conn, a, err);
out:
	db_result_free(res);
	return rc;
}

/* ---- workers ---- */

static bool prober_is_stopping(void *arg)
{
	struct prober *p = arg;
	return atomic_load(&p->is_stopping);
}

static void probe_job_run(struct prober *p, struct probe_job *j)
{
	struct probe_outcome o;
	probe_run(j->url, j->timeout_s, j->retry_count, 0, p->proxy, prober_is_stopping, p, &o);
	if (o.is_aborted) {
		unclaim(p, j);
		return;
	}
	char details[256];
	struct health_check_result r;
	outcome_to_result(&o, j->id, details, sizeof(details), &r);
	struct record_arg a = {.result = &r, .claimed_by = p->replica_id, .claimed_url = j->url};
	struct mon_error err = {0};
	if (db_tx_run(p->pool, PROBE_DB_TIMEOUT_MS, record_tx, &a, &err) != 0) {
		if (err.code == MON_ENOTFOUND) /* deleted while probed */
			return;
		log_warn("msg=\"could not record a health probe\" service_id=\"%s\" error=\"%s\"", j->id, err.msg);
		return;
	}
	if (a.is_dropped)
		log_info("msg=\"health probe result dropped: the claim was lost or the URL changed\" service_id=\"%s\"",
		         j->id);
	else
		log_debug("msg=\"health probe\" service_id=\"%s\" status=%d attempts=%d response_time_ms=%d", j->id,
		          o.status, o.attempt_count, (int)o.response_time_ms);
}

static void *worker_main(void *arg)
{
	struct prober *p = arg;
	for (;;) {
		pthread_mutex_lock(&p->lock);
		while (p->queue_n == 0 && !atomic_load(&p->is_stopping))
			pthread_cond_wait(&p->work_cond, &p->lock);
		if (atomic_load(&p->is_stopping)) {
			pthread_mutex_unlock(&p->lock);
			return NULL;
		}
		struct probe_job j = p->queue[p->queue_head];
		p->queue_head = (p->queue_head + 1) % p->concurrency;
		p->queue_n--;
		p->busy_n++;
		pthread_mutex_unlock(&p->lock);

		probe_job_run(p, &j);
		job_free(&j);

		pthread_mutex_lock(&p->lock);
		p->busy_n--;
		pthread_mutex_unlock(&p->lock);
	}
}

/* ---- start and stop ---- */

static void make_replica_id(char *buf, size_t len)
{
	char host[64] = "";
	if (gethostname(host, sizeof(host) - 1) != 0)
		snprintf(host, sizeof(host), "host");
	host[sizeof(host) - 1] = '\0';
	uint32_t rnd = 0;
	if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		rnd = (uint32_t)mon_now_ms();
	snprintf(buf, len, "%s/%ld/%08" PRIx32, host, (long)getpid(), rnd);
}

int prober_start(const struct prober_config *cfg, struct prober **out, struct mon_error *err)
{
	*out = NULL;
	if (cfg->pool == NULL)
		return mon_error_set(err, MON_EINVAL, "prober: pool must be set");
	int concurrency = cfg->concurrency == 0 ? PROBER_CONCURRENCY_DEFAULT : cfg->concurrency;
	if (concurrency < 1 || concurrency > PROBER_CONCURRENCY_MAX)
		return mon_error_set(err, MON_EINVAL, "probe-concurrency: must be 1 to %d", PROBER_CONCURRENCY_MAX);
	if (cfg->claim_interval_ms < 0)
		return mon_error_set(err, MON_EINVAL, "prober: claim_interval_ms must not be negative");
	if (cfg->replica_id && (cfg->replica_id[0] == '\0' || strlen(cfg->replica_id) >= 96))
		return mon_error_set(err, MON_EINVAL, "prober: replica_id must be 1 to 95 characters");
	pthread_once(&curl_once, curl_init_once);
	if (curl_init_code != CURLE_OK)
		return mon_error_set(err, MON_EINTERNAL, "could not initialise libcurl: %s",
		                     curl_easy_strerror(curl_init_code));

	int rc = 0;
	struct prober *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	p->pool = cfg->pool;
	p->concurrency = concurrency;
	p->claim_interval_ms = cfg->claim_interval_ms ? cfg->claim_interval_ms : PROBER_CLAIM_INTERVAL_MS_DEFAULT;
	if (cfg->replica_id)
		snprintf(p->replica_id, sizeof(p->replica_id), "%s", cfg->replica_id);
	else
		make_replica_id(p->replica_id, sizeof(p->replica_id));
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work_cond, NULL);
	pthread_cond_init(&p->claim_cond, NULL);
	atomic_init(&p->is_stopping, false);
	p->queue = calloc((size_t)concurrency, sizeof(*p->queue));
	p->workers = calloc((size_t)concurrency, sizeof(*p->workers));
	p->proxy = cfg->proxy && cfg->proxy[0] ? strdup(cfg->proxy) : NULL;
	if (p->queue == NULL || p->workers == NULL || (cfg->proxy && cfg->proxy[0] && p->proxy == NULL)) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < concurrency; i++) {
		if (pthread_create(&p->workers[i], NULL, worker_main, p) != 0) {
			rc = mon_error_set(err, MON_EINTERNAL, "could not start a health probe worker");
			goto out;
		}
		p->worker_n++;
	}
	if (pthread_create(&p->claimer, NULL, claimer_main, p) != 0) {
		rc = mon_error_set(err, MON_EINTERNAL, "could not start the health prober");
		goto out;
	}
	p->has_claimer = true;
	log_info("msg=\"health prober started\" replica=\"%s\" concurrency=%d claim_interval_ms=%d proxy=%s",
	         p->replica_id, p->concurrency, p->claim_interval_ms, p->proxy ? "set" : "none");
	*out = p;
	p = NULL;
out:
	prober_stop(p);
	return rc;
}

void prober_stop(struct prober *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	atomic_store(&p->is_stopping, true);
	pthread_cond_broadcast(&p->work_cond);
	pthread_cond_broadcast(&p->claim_cond);
	pthread_mutex_unlock(&p->lock);
	if (p->has_claimer)
		pthread_join(p->claimer, NULL);
	for (int i = 0; i < p->worker_n; i++)
		pthread_join(p->workers[i], NULL);
	/* Claims queued but never started go back at once. */
	for (int i = 0; i < p->queue_n; i++) {
		struct probe_job *j = &p->queue[(p->queue_head + i) % p->concurrency];
		unclaim(p, j);
		job_free(j);
	}
	if (p->has_claimer)
		log_info("msg=\"health prober stopped\" replica=\"%s\"", p->replica_id);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->work_cond);
	pthread_cond_destroy(&p->claim_cond);
	free(p->queue);
	free(p->workers);
	free(p->proxy);
	free(p);
}

/* ---- RunHealthCheck ---- */

static int status_from_text(const char *s)
{
	if (strcmp(s, "healthy") == 0)
		return MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_HEALTHY;
	if (strcmp(s, "degraded") == 0)
		return MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DEGRADED;
	if (strcmp(s, "down") == 0)
		return MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DOWN;
	return MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_UNKNOWN;
}

static Google__Protobuf__Timestamp *timestamp_ms(struct arena *a, const char *ms_text)
{
	char *end = NULL;
	long long ms = strtoll(ms_text, &end, 10);
	Google__Protobuf__Timestamp *ts = arena_calloc(a, 1, sizeof(*ts));
	if (ts == NULL || end == ms_text)
		return NULL;
	google__protobuf__timestamp__init(ts);
	long long sec = ms / 1000, rem = ms % 1000;
	if (rem < 0) {
		rem += 1000;
		sec--;
	}
	ts->seconds = sec;
	ts->nanos = (int32_t)(rem * 1000000);
	return ts;
}

static Google__Protobuf__DoubleValue *double_or_null(struct arena *a, const struct db_result *res, int col)
{
	if (db_result_is_null(res, 0, col))
		return NULL;
	Google__Protobuf__DoubleValue *v = arena_calloc(a, 1, sizeof(*v));
	if (v == NULL)
		return NULL;
	google__protobuf__double_value__init(v);
	v->value = strtod(db_result_value(res, 0, col), NULL);
	return v;
}

/* Reads the service after the check into a->service (the call's arena), in the recording transaction. */
static int read_service_tx(struct db_conn *conn, struct record_arg *a, struct mon_error *err)
{
	struct arena *ar = rpc_ctx_arena(a->ctx);
	struct db_result *res = NULL;
	const char *params[2] = {a->result->service_id, NULL};
	char log_id[24];
	snprintf(log_id, sizeof(log_id), "%" PRId64, a->outcome.log_id);
	params[1] = log_id;
	int rc = db_exec(conn,
	                 "SELECT s.id, s.name, coalesce(s.description, ''), s.service_type, s.status::text,"
	                 " (extract(epoch FROM s.last_check) * 1000)::bigint, coalesce(s.health_check_url, ''),"
	                 " s.check_interval, s.timeout, s.retry_count, s.uptime_24h::float8, s.uptime_7d::float8,"
	                 " s.uptime_30d::float8, (extract(epoch FROM s.created_at) * 1000)::bigint,"
	                 " (extract(epoch FROM s.updated_at) * 1000)::bigint,"
	                 " (SELECT (extract(epoch FROM l.checked_at) * 1000)::bigint FROM tb_health_check_log l"
	                 "   WHERE l.id = $2::bigint)"
	                 " FROM tb_service_health s WHERE s.id = $1",
	                 2, params, &res, err);
	if (rc != 0)
		goto out;
	if (db_result_rows(res) != 1) {
		rc = mon_error_set(err, MON_ENOTFOUND, "service_id: no such service");
		goto out;
	}
	Monitoring__V1__MonitoredService *s = arena_calloc(ar, 1, sizeof(*s));
	Google__Protobuf__Int32Value *retries = arena_calloc(ar, 1, sizeof(*retries));
	if (s == NULL || retries == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	monitoring__v1__monitored_service__init(s);
	google__protobuf__int32_value__init(retries);
	s->id = arena_strdup(ar, db_result_value(res, 0, 0));
	s->name = arena_strdup(ar, db_result_value(res, 0, 1));
	s->description = arena_strdup(ar, db_result_value(res, 0, 2));
	s->service_type = arena_strdup(ar, db_result_value(res, 0, 3));
	s->status = status_from_text(db_result_value(res, 0, 4));
	s->last_check = timestamp_ms(ar, db_result_value(res, 0, 5));
	s->health_check_url = arena_strdup(ar, db_result_value(res, 0, 6));
	s->check_interval = parse_int(db_result_value(res, 0, 7), 0);
	s->timeout = parse_int(db_result_value(res, 0, 8), 0);
	retries->value = parse_int(db_result_value(res, 0, 9), 0);
	s->retry_count = retries;
	s->uptime_24h = double_or_null(ar, res, 10);
	s->uptime_7d = double_or_null(ar, res, 11);
	s->uptime_30d = double_or_null(ar, res, 12);
	s->created_at = timestamp_ms(ar, db_result_value(res, 0, 13));
	s->updated_at = timestamp_ms(ar, db_result_value(res, 0, 14));
	if (s->id == NULL || s->name == NULL || s->description == NULL || s->service_type == NULL ||
	    s->health_check_url == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	a->service = s;
	a->checked_at_ms = db_result_is_null(res, 0, 15) ? 0 : strtoll(db_result_value(res, 0, 15), NULL, 10);
out:
	db_result_free(res);
	return rc;
}

/* The service's probe settings, for RunHealthCheck. */
struct run_target {
	char url[512];
	int timeout_s;
	int retry_count;
	bool has_url;
};

static int read_target(struct db_pool *pool, int64_t timeout_ms, const char *id, struct run_target *t,
                       struct mon_error *err)
{
	struct db_conn *conn = NULL;
	struct db_result *res = NULL;
	const char *params[1] = {id};
	int rc = db_pool_acquire(pool, timeout_ms, &conn, err);
	if (rc != 0)
		goto out;
	rc = db_exec(conn,
	             "SELECT coalesce(health_check_url, ''), timeout, retry_count FROM tb_service_health WHERE id = $1",
	             1, params, &res, err);
	if (rc != 0)
		goto out;
	if (db_result_rows(res) == 0) {
		rc = mon_error_set(err, MON_ENOTFOUND, "service_id: no service \"%s\"", id);
		goto out;
	}
	snprintf(t->url, sizeof(t->url), "%s", db_result_value(res, 0, 0));
	t->has_url = t->url[0] != '\0';
	t->timeout_s = parse_int(db_result_value(res, 0, 1), 30);
	t->retry_count = parse_int(db_result_value(res, 0, 2), 0);
out:
	db_result_free(res);
	if (conn)
		db_pool_release(pool, conn);
	return rc;
}

struct run_stop {
	struct rpc_ctx *ctx;
	struct prober *p;
};

static bool run_is_stopping(void *arg)
{
	struct run_stop *s = arg;
	return rpc_ctx_is_cancelled(s->ctx) || atomic_load(&s->p->is_stopping);
}

/* A google.protobuf.Struct of the outcome's details, in the arena; NULL when out of memory. */
static Google__Protobuf__Struct *details_struct(struct arena *a, const struct probe_outcome *o)
{
	Google__Protobuf__Struct *st = arena_calloc(a, 1, sizeof(*st));
	Google__Protobuf__Struct__FieldsEntry **fields = arena_calloc(a, 4, sizeof(*fields));
	if (st == NULL || fields == NULL)
		return NULL;
	google__protobuf__struct__init(st);
	st->fields = fields;
	const char *keys[4] = {"probe", "attempt_count", "http_status", "serving_status"};
	for (int i = 0; i < 4; i++) {
		if ((i == 2 && o->http_status <= 0) || (i == 3 && o->serving_status == NULL))
			continue;
		Google__Protobuf__Struct__FieldsEntry *e = arena_calloc(a, 1, sizeof(*e));
		Google__Protobuf__Value *v = arena_calloc(a, 1, sizeof(*v));
		if (e == NULL || v == NULL)
			return NULL;
		google__protobuf__struct__fields_entry__init(e);
		google__protobuf__value__init(v);
		e->key = (char *)keys[i];
		e->value = v;
		if (i == 0 || i == 3) {
			v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
			v->string_value = (char *)(i == 0 ? o->kind : o->serving_status);
		} else {
			v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
			v->number_value = i == 1 ? (double)o->attempt_count : (double)o->http_status;
		}
		st->fields[st->n_fields++] = e;
	}
	return st;
}

int prober_run_check(struct prober *p, struct rpc_ctx *ctx, const Monitoring__V1__RunHealthCheckRequest *req,
                     Monitoring__V1__RunHealthCheckResponse *resp)
{
	struct arena *ar = rpc_ctx_arena(ctx);
	struct mon_error err = {0};
	if (req->service_id == NULL || req->service_id[0] == '\0')
		return rpc_fail(ctx, MON_EINVAL, "service_id: must be set");
	if (strlen(req->service_id) > 50)
		return rpc_fail(ctx, MON_ENOTFOUND, "service_id: no such service");
	if (p == NULL)
		return rpc_fail(ctx, MON_EUNAVAIL, "the health prober is not running");

	int64_t remaining = rpc_ctx_remaining_ms(ctx);
	struct run_target t = {0};
	int rc = read_target(p->pool, remaining < PROBE_DB_TIMEOUT_MS ? remaining : PROBE_DB_TIMEOUT_MS,
	                     req->service_id, &t, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg[0] ? err.msg : mon_error_name(rc));
	if (!t.has_url)
		return rpc_fail(ctx, MON_EPRECOND, "service \"%s\" has no health_check_url", req->service_id);

	remaining = rpc_ctx_remaining_ms(ctx);
	int64_t need_ms = (int64_t)(t.timeout_s < 1 ? 1 : t.timeout_s) * 1000;
	if (remaining != INT64_MAX && remaining < need_ms + RUN_RECORD_MARGIN_MS)
		return rpc_fail(ctx, MON_EDEADLINE,
		                "deadline: shorter than the service's timeout (%d s) plus %d ms to record the check",
		                t.timeout_s, RUN_RECORD_MARGIN_MS);
	int64_t deadline = remaining == INT64_MAX ? 0 : mon_now_ms() + remaining - RUN_RECORD_MARGIN_MS;

	struct run_stop stop = {.ctx = ctx, .p = p};
	struct probe_outcome o;
	probe_run(t.url, t.timeout_s, t.retry_count, deadline, p->proxy, run_is_stopping, &stop, &o);
	if (o.is_aborted)
		return rpc_fail(ctx, rpc_ctx_is_cancelled(ctx) ? MON_ECANCELLED : MON_EUNAVAIL,
		                "the health check was interrupted");

	char details[256];
	struct health_check_result r;
	outcome_to_result(&o, req->service_id, details, sizeof(details), &r);
	struct record_arg a = {.result = &r, .ctx = ctx};
	rc = db_tx_run(p->pool, rpc_ctx_remaining_ms(ctx), record_tx, &a, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg[0] ? err.msg : mon_error_name(rc));

	Monitoring__V1__HealthCheck *c = arena_calloc(ar, 1, sizeof(*c));
	if (c == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "out of memory");
	monitoring__v1__health_check__init(c);
	c->id = a.outcome.log_id;
	c->service_id = req->service_id;
	c->status = o.status;
	if (o.response_time_ms >= 0) {
		c->response_time = arena_calloc(ar, 1, sizeof(*c->response_time));
		if (c->response_time == NULL)
			return rpc_fail(ctx, MON_ENOMEM, "out of memory");
		google__protobuf__int32_value__init(c->response_time);
		c->response_time->value = o.response_time_ms;
	}
	c->error_message = arena_strdup(ar, o.error);
	c->details = details_struct(ar, &o);
	if (a.checked_at_ms > 0) {
		char ms[24];
		snprintf(ms, sizeof(ms), "%" PRId64, a.checked_at_ms);
		c->checked_at = timestamp_ms(ar, ms);
	}
	if (c->error_message == NULL || c->details == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "out of memory");
	resp->check = c;
	resp->service = a.service;
	resp->attempt_count = o.attempt_count;
	return 0;
}
