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
#include <netdb.h>
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
#include "health/netpolicy.h"
#include "common/call.h"
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
#define RUN_PUSHBACK_MS 1000          /* retry hint when probe-run-concurrency is reached */
#define POLICY_DENIED_MSG "denied by the probe network policy (probe-allow-networks, probe-deny-networks)"
#define GRPC_HEALTH_CHECK "/grpc.health.v1.Health/Check"

/* A claimed target, owned by the queue and then by the worker probing it. */
struct probe_job {
	char *id;
	char *url;
	int timeout_s;
	int retry_count;
};

struct run_job;

struct prober {
	struct db_pool *pool;
	char replica_id[96];
	char *proxy;
	int concurrency;
	int claim_interval_ms;
	struct netpolicy policy;        /* immutable after start */
	bool is_cross_host_redirect_ok; /* probe-follow-cross-host-redirects */
	int run_concurrency;            /* RunHealthCheck probes at once */

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

	/* RunHealthCheck: its own threads and a ring of run_concurrency slots, under lock. */
	pthread_cond_t run_cond; /* runs queued, or stopping */
	struct run_job **run_queue;
	int run_head;
	int run_queued_n;
	int run_n; /* runs admitted and not finished: queued plus probing */
	pthread_t *runners;
	int runner_n;
};

static void *runner_main(void *arg);

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
	bool is_denied;  /* the network policy refused every address of the target */
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
	const struct netpolicy *policy;
	int denied_n; /* addresses the policy refused */
	int opened_n; /* sockets opened (addresses the policy allowed) */
};

/*
 * libcurl asks here for every socket it connects, with the address it is
 * about to connect to, after resolving: the policy judges that very address,
 * so a name that resolves differently between a check and the connection
 * (DNS rebinding) gains nothing. A refused address makes curl try the next
 * one; when all are refused the transfer fails to connect.
 */
static curl_socket_t http_open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *addr)
{
	struct http_transfer *t = arg;
	if (purpose != CURLSOCKTYPE_IPCXN ||
	    !netpolicy_allows_sockaddr(t->policy, &addr->addr, (size_t)addr->addrlen)) {
		t->denied_n++;
		return CURL_SOCKET_BAD;
	}
	curl_socket_t fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
	if (fd != CURL_SOCKET_BAD)
		t->opened_n++;
	return fd;
}

/* The host of an absolute URL, lowercase, into buf; false when it has none. */
static bool url_host(const char *url, char *buf, size_t len)
{
	CURLU *u = curl_url();
	char *host = NULL;
	bool ok = u != NULL && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	          curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK;
	if (ok) {
		int n = snprintf(buf, len, "%s", host);
		ok = n > 0 && (size_t)n < len;
		for (char *c = buf; ok && *c; c++)
			*c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
	}
	curl_free(host);
	curl_url_cleanup(u);
	return ok;
}

/* Whether url's host is an IP literal the policy refuses (judged before any connection). */
static bool url_host_denied(const struct netpolicy *policy, const char *url)
{
	char host[256];
	bool is_literal = false;
	if (!url_host(url, host, sizeof(host)))
		return false; /* curl reports the malformed URL */
	return !netpolicy_allows_host_literal(policy, host, &is_literal);
}

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
 * when the failure may pass (no answer, or a 5xx). Redirects are followed
 * here rather than by libcurl, so that each hop's host is compared with
 * the previous one and every connection passes the policy.
 */
static void http_attempt(CURL *curl, const char *url, int timeout_ms, const struct prober *p, probe_stop_fn stop,
                         void *stop_arg, struct probe_outcome *o, bool *is_retryable)
{
	struct http_transfer t = {.stop = stop, .stop_arg = stop_arg, .policy = &p->policy};
	*is_retryable = false;
	o->response_time_ms = -1;
	o->http_status = 0;
	o->error[0] = '\0';

	curl_easy_reset(curl);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_PROXY, p->proxy ? p->proxy : ""); /* "": not even from the environment */
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "monitord-prober/" MON_VERSION);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, http_on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, http_on_progress);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &t);
	curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)PROBE_BODY_MAX);
	curl_easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, http_open_socket);
	curl_easy_setopt(curl, CURLOPT_OPENSOCKETDATA, &t);

	int64_t start = mon_now_ms();
	CURLcode cc = CURLE_OK;
	long code = 0;
	char *hop_url = strdup(url); /* the URL of this hop; later hops' come from Location */
	char *next_url = NULL;
	bool is_cross_host = false;
	int redirect_n = 0;
	for (;;) {
		if (hop_url == NULL) {
			cc = CURLE_OUT_OF_MEMORY;
			break;
		}
		if (url_host_denied(&p->policy, hop_url)) {
			t.denied_n++;
			cc = CURLE_COULDNT_CONNECT;
			break;
		}
		int64_t left_ms = timeout_ms - (mon_now_ms() - start);
		if (left_ms < 1) {
			cc = CURLE_OPERATION_TIMEDOUT;
			break;
		}
		t.body_bytes = 0;
		curl_easy_setopt(curl, CURLOPT_URL, hop_url);
		curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)left_ms);
		curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long)left_ms);
		cc = curl_easy_perform(curl);
		code = 0;
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
		char *location = NULL;
		if (cc != CURLE_OK || code < 300 || code > 399 ||
		    curl_easy_getinfo(curl, CURLINFO_REDIRECT_URL, &location) != CURLE_OK || location == NULL)
			break;
		if (redirect_n == PROBE_REDIRECTS_MAX) {
			cc = CURLE_TOO_MANY_REDIRECTS;
			break;
		}
		char from[256], to[256];
		if (!url_host(hop_url, from, sizeof(from)) || !url_host(location, to, sizeof(to)) ||
		    strcmp(from, to) != 0) {
			if (!p->is_cross_host_redirect_ok) {
				is_cross_host = true;
				break;
			}
		}
		next_url = strdup(location); /* curl's copy dies with the next transfer */
		free(hop_url);
		hop_url = next_url;
		redirect_n++;
	}
	free(hop_url);
	int64_t elapsed = mon_now_ms() - start;

	if (cc == CURLE_ABORTED_BY_CALLBACK) {
		o->is_aborted = true;
		return;
	}
	if (cc == CURLE_COULDNT_CONNECT && t.denied_n > 0 && t.opened_n == 0) {
		o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_UNKNOWN;
		o->is_denied = true;
		snprintf(o->error, sizeof(o->error), "cannot probe this URL: its address is %s", POLICY_DENIED_MSG);
		return;
	}
	if (is_cross_host) {
		o->status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DEGRADED;
		o->http_status = code;
		o->response_time_ms = (int32_t)elapsed;
		snprintf(o->error, sizeof(o->error),
		         "HTTP %ld: redirect to another host not followed (probe-follow-cross-host-redirects)", code);
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

int prober_grpc_url_split(const char *url, char **target_out, char **service_out)
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

/*
 * Resolves target ("host:port", "[v6]:port"; no port: 443) and picks its
 * first address the policy allows, as a gRPC target that names the address
 * itself ("ipv4:a.b.c.d:port", "ipv6:[x::y]:port"), so the channel connects
 * to the address that was checked and resolves nothing of its own. Returns
 * 0, MON_EPERM when the policy refuses every address, MON_ENOTFOUND when the
 * name does not resolve, MON_EINVAL for a malformed target.
 */
static int grpc_checked_target(const struct netpolicy *policy, const char *target, char *out, size_t out_len)
{
	char host[256], port[16] = "443";
	const char *colon;
	size_t host_n;
	if (target[0] == '[') {
		const char *close = strchr(target, ']');
		if (close == NULL)
			return MON_EINVAL;
		host_n = (size_t)(close - target - 1);
		if (host_n >= sizeof(host))
			return MON_EINVAL;
		memcpy(host, target + 1, host_n);
		colon = close[1] == ':' ? close + 1 : NULL;
		if (close[1] != '\0' && colon == NULL)
			return MON_EINVAL;
	} else {
		colon = strrchr(target, ':');
		host_n = colon ? (size_t)(colon - target) : strlen(target);
		if (host_n >= sizeof(host))
			return MON_EINVAL;
		memcpy(host, target, host_n);
	}
	host[host_n] = '\0';
	if (colon != NULL) {
		int n = snprintf(port, sizeof(port), "%s", colon + 1);
		if (n <= 0 || (size_t)n >= sizeof(port))
			return MON_EINVAL;
	}
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (getaddrinfo(host, port, &hints, &res) != 0)
		return MON_ENOTFOUND;
	int rc = MON_EPERM;
	for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		if (!netpolicy_allows_sockaddr(policy, ai->ai_addr, (size_t)ai->ai_addrlen))
			continue;
		char numeric[64];
		if (getnameinfo(ai->ai_addr, ai->ai_addrlen, numeric, sizeof(numeric), NULL, 0, NI_NUMERICHOST) != 0)
			continue;
		int n = ai->ai_family == AF_INET6 ? snprintf(out, out_len, "ipv6:[%s]:%s", numeric, port)
		                                  : snprintf(out, out_len, "ipv4:%s:%s", numeric, port);
		rc = n > 0 && (size_t)n < out_len ? 0 : MON_EINVAL;
		break;
	}
	freeaddrinfo(res);
	return rc;
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
static void probe_run(const char *url, int timeout_s, int retry_count, int64_t deadline_ms, const struct prober *p,
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
		if (prober_grpc_url_split(url, &target, &service) != 0) {
			snprintf(o->error, sizeof(o->error),
			         "cannot probe this URL: expected grpc://host:port[/service]");
			goto out;
		}
		char checked[320];
		int crc = grpc_checked_target(&p->policy, target, checked, sizeof(checked));
		if (crc == MON_EPERM) {
			o->is_denied = true;
			snprintf(o->error, sizeof(o->error), "cannot probe this URL: its address is %s",
			         POLICY_DENIED_MSG);
			goto out;
		}
		if (crc != 0) {
			o->status = crc == MON_ENOTFOUND ? MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DOWN
			                                 : MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_UNKNOWN;
			snprintf(o->error, sizeof(o->error), "%s",
			         crc == MON_ENOTFOUND ? "could not resolve the host"
			                              : "cannot probe this URL: expected grpc://host:port[/service]");
			goto out;
		}
		cc.target = checked;
		cc.authority = target; /* the name the service expects, not the address */
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
			http_attempt(curl, url, timeout_ms, p, stop, stop_arg, o, &is_retryable);
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
	probe_run(j->url, j->timeout_s, j->retry_count, 0, p, prober_is_stopping, p, &o);
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
	int run_concurrency = cfg->run_concurrency == 0 ? PROBER_RUN_CONCURRENCY_DEFAULT : cfg->run_concurrency;
	if (run_concurrency < 1 || run_concurrency > PROBER_CONCURRENCY_MAX)
		return mon_error_set(err, MON_EINVAL, "probe-run-concurrency: must be 1 to %d", PROBER_CONCURRENCY_MAX);
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
	p->run_concurrency = run_concurrency;
	p->is_cross_host_redirect_ok = cfg->follow_cross_host_redirects;
	p->claim_interval_ms = cfg->claim_interval_ms ? cfg->claim_interval_ms : PROBER_CLAIM_INTERVAL_MS_DEFAULT;
	if (cfg->replica_id)
		snprintf(p->replica_id, sizeof(p->replica_id), "%s", cfg->replica_id);
	else
		make_replica_id(p->replica_id, sizeof(p->replica_id));
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work_cond, NULL);
	pthread_cond_init(&p->claim_cond, NULL);
	pthread_cond_init(&p->run_cond, NULL);
	atomic_init(&p->is_stopping, false);
	rc = netpolicy_init(&p->policy, cfg->allow_networks, cfg->deny_networks, err);
	if (rc != 0)
		goto out;
	p->queue = calloc((size_t)concurrency, sizeof(*p->queue));
	p->workers = calloc((size_t)concurrency, sizeof(*p->workers));
	p->run_queue = calloc((size_t)run_concurrency, sizeof(*p->run_queue));
	p->runners = calloc((size_t)run_concurrency, sizeof(*p->runners));
	p->proxy = cfg->proxy && cfg->proxy[0] ? strdup(cfg->proxy) : NULL;
	if (p->queue == NULL || p->workers == NULL || p->run_queue == NULL || p->runners == NULL ||
	    (cfg->proxy && cfg->proxy[0] && p->proxy == NULL)) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < run_concurrency; i++) {
		if (pthread_create(&p->runners[i], NULL, runner_main, p) != 0) {
			rc = mon_error_set(err, MON_EINTERNAL, "could not start a health check thread");
			goto out;
		}
		p->runner_n++;
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
	log_info("msg=\"health prober started\" replica=\"%s\" concurrency=%d run_concurrency=%d claim_interval_ms=%d "
	         "proxy=%s allow_networks=%zu deny_networks=%zu cross_host_redirects=%s",
	         p->replica_id, p->concurrency, p->run_concurrency, p->claim_interval_ms, p->proxy ? "set" : "none",
	         p->policy.allow_n, p->policy.deny_n, p->is_cross_host_redirect_ok ? "followed" : "not followed");
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
	pthread_cond_broadcast(&p->run_cond);
	pthread_mutex_unlock(&p->lock);
	if (p->has_claimer)
		pthread_join(p->claimer, NULL);
	for (int i = 0; i < p->worker_n; i++)
		pthread_join(p->workers[i], NULL);
	/* The run threads answer every RunHealthCheck still queued or probing before they end. */
	for (int i = 0; i < p->runner_n; i++)
		pthread_join(p->runners[i], NULL);
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
	pthread_cond_destroy(&p->run_cond);
	free(p->queue);
	free(p->workers);
	free(p->run_queue);
	free(p->runners);
	free(p->proxy);
	free(p);
}

const struct netpolicy *prober_policy(const struct prober *p)
{
	return p ? &p->policy : NULL;
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

struct target_read {
	const char *id;
	struct run_target *t;
};

/* fn of db_read_run: the one statement reading the target. */
static int target_read_fn(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct target_read *r = arg;
	struct db_result *res = NULL;
	const char *params[1] = {r->id};
	int rc = db_exec(
	        conn,
	        "SELECT coalesce(health_check_url, ''), timeout, retry_count FROM tb_service_health WHERE id = $1", 1,
	        params, &res, err);
	if (rc != 0)
		goto out;
	if (db_result_rows(res) == 0) {
		rc = mon_error_set(err, MON_ENOTFOUND, "service_id: no service \"%s\"", r->id);
		goto out;
	}
	struct run_target *t = r->t;
	int url_n = snprintf(t->url, sizeof(t->url), "%s", db_result_value(res, 0, 0));
	if (url_n < 0 || (size_t)url_n >= sizeof(t->url)) { /* never probe a cut URL */
		rc = mon_error_set(err, MON_EPRECOND, "health_check_url: longer than %zu bytes", sizeof(t->url) - 1);
		goto out;
	}
	t->has_url = t->url[0] != '\0';
	t->timeout_s = parse_int(db_result_value(res, 0, 1), 30);
	t->retry_count = parse_int(db_result_value(res, 0, 2), 0);
out:
	db_result_free(res);
	return rc;
}

/* Reads the target as one autocommit read bounded by timeout_ms (the call's deadline, see db_read_run). */
static int read_target(struct db_pool *pool, int64_t timeout_ms, const char *id, struct run_target *t,
                       struct mon_error *err)
{
	struct target_read r = {.id = id, .t = t};
	return db_read_run(pool, timeout_ms, target_read_fn, &r, err);
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

/* RunHealthCheck's record of its probe, and its response (svc_run_change). */
struct run_record {
	struct record_arg a;
	const struct probe_outcome *o;
	const char *service_id;
	struct arena *arena;
};

static int run_record_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct run_record *rr = arg;
	return record_tx(conn, &rr->a, err);
}

static int run_record_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	const struct run_record *rr = arg;
	const struct probe_outcome *o = rr->o;
	struct arena *ar = rr->arena;
	Monitoring__V1__RunHealthCheckResponse *resp = (Monitoring__V1__RunHealthCheckResponse *)(void *)msg;
	Monitoring__V1__HealthCheck *c = arena_calloc(ar, 1, sizeof(*c));
	if (c == NULL)
		return svc_fail_nomem(err);
	monitoring__v1__health_check__init(c);
	c->id = rr->a.outcome.log_id;
	c->service_id = (char *)rr->service_id;
	c->status = o->status;
	if (o->response_time_ms >= 0) {
		c->response_time = arena_calloc(ar, 1, sizeof(*c->response_time));
		if (c->response_time == NULL)
			return svc_fail_nomem(err);
		google__protobuf__int32_value__init(c->response_time);
		c->response_time->value = o->response_time_ms;
	}
	c->error_message = arena_strdup(ar, o->error);
	c->details = details_struct(ar, o);
	if (rr->a.checked_at_ms > 0) {
		char ms[24];
		snprintf(ms, sizeof(ms), "%" PRId64, rr->a.checked_at_ms);
		c->checked_at = timestamp_ms(ar, ms);
	}
	if (c->error_message == NULL || c->details == NULL)
		return svc_fail_nomem(err);
	resp->check = c;
	resp->service = rr->a.service;
	resp->attempt_count = o->attempt_count;
	return 0;
}

/* A RunHealthCheck handed to the run threads; lives in the call's arena until rpc_reply_finish. */
struct run_job {
	struct rpc_ctx *ctx;
	const Monitoring__V1__RunHealthCheckRequest *req;
	struct run_target t;
	int64_t deadline; /* monotonic ms for the attempts; 0: none */
};

/* Takes one of the run_concurrency slots; false when all are taken or the prober is stopping. */
static bool run_admit(struct prober *p)
{
	bool ok = false;
	pthread_mutex_lock(&p->lock);
	if (!atomic_load(&p->is_stopping) && p->run_n < p->run_concurrency) {
		p->run_n++;
		ok = true;
	}
	pthread_mutex_unlock(&p->lock);
	return ok;
}

static void run_release(struct prober *p)
{
	pthread_mutex_lock(&p->lock);
	p->run_n--;
	pthread_mutex_unlock(&p->lock);
}

/* Queues an admitted run for the run threads (there is always a slot: the queue has run_concurrency). */
static void run_enqueue(struct prober *p, struct run_job *j)
{
	pthread_mutex_lock(&p->lock);
	p->run_queue[(p->run_head + p->run_queued_n) % p->run_concurrency] = j;
	p->run_queued_n++;
	pthread_cond_signal(&p->run_cond);
	pthread_mutex_unlock(&p->lock);
}

/*
 * The handler, on a worker of the shared pool: checks the request, takes a
 * run slot (RESOURCE_EXHAUSTED when probe-run-concurrency are in flight),
 * reads the target and hands the probe to the prober's run threads, which
 * answer the call (rpc_reply_finish). The worker never waits on a probe.
 */
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
	if (rpc_ctx_remaining_ms(ctx) <= 0)
		return rpc_fail(ctx, MON_EDEADLINE, "deadline exceeded before the health check started");
	/* A retry of a recorded check answers it without probing again (and without taking a slot). */
	bool is_replay = false;
	int rc = svc_replay_early(ctx, p->pool, &is_replay);
	if (rc != 0 || is_replay)
		return rc;
	if (!run_admit(p)) {
		if (atomic_load(&p->is_stopping))
			return rpc_fail(ctx, MON_EUNAVAIL, "the health prober is stopping");
		char pushback[24];
		snprintf(pushback, sizeof(pushback), "%d", RUN_PUSHBACK_MS);
		if (rpc_ctx_add_trailer(ctx, "grpc-retry-pushback-ms", pushback) != 0)
			log_debug("msg=\"could not add the retry hint\"");
		return rpc_fail(ctx, MON_ELIMIT,
		                "probe-run-concurrency: %d health checks already running in this process; retry later",
		                p->run_concurrency);
	}

	int64_t remaining = rpc_ctx_remaining_ms(ctx);
	if (remaining <= 0) {
		rc = rpc_fail(ctx, MON_EDEADLINE, "deadline exceeded before the health check started");
		goto fail;
	}
	struct run_target t = {0};
	rc = read_target(p->pool, remaining < PROBE_DB_TIMEOUT_MS ? remaining : PROBE_DB_TIMEOUT_MS, req->service_id,
	                 &t, &err);
	if (rc != 0) {
		rc = rpc_fail(ctx, rc, "%s", err.msg[0] ? err.msg : mon_error_name(rc));
		goto fail;
	}
	if (!t.has_url) {
		rc = rpc_fail(ctx, MON_EPRECOND, "service \"%s\" has no health_check_url", req->service_id);
		goto fail;
	}

	remaining = rpc_ctx_remaining_ms(ctx);
	int64_t need_ms = (int64_t)(t.timeout_s < 1 ? 1 : t.timeout_s) * 1000;
	if (remaining != INT64_MAX && remaining < need_ms + RUN_RECORD_MARGIN_MS) {
		rc = rpc_fail(ctx, MON_EDEADLINE,
		              "deadline: shorter than the service's timeout (%d s) plus %d ms to record the check",
		              t.timeout_s, RUN_RECORD_MARGIN_MS);
		goto fail;
	}
	struct run_job *j = arena_calloc(ar, 1, sizeof(*j));
	if (j == NULL) {
		rc = rpc_fail(ctx, MON_ENOMEM, "out of memory");
		goto fail;
	}
	*j = (struct run_job){.ctx = ctx, .req = req, .t = t};
	j->deadline = remaining == INT64_MAX ? 0 : mon_now_ms() + remaining - RUN_RECORD_MARGIN_MS;
	rpc_reply_later(ctx);
	run_enqueue(p, j);
	return RPC_REPLY_LATER;
fail:
	run_release(p);
	return rc;
}

/* On a run thread: probes j's target, records the check and fills the response; 0 or rpc_fail's code. */
static int run_check_probe(struct prober *p, struct run_job *j)
{
	struct rpc_ctx *ctx = j->ctx;
	const Monitoring__V1__RunHealthCheckRequest *req = j->req;
	const struct run_target t = j->t;
	int64_t deadline = j->deadline;
	struct arena *ar = rpc_ctx_arena(ctx);

	struct run_stop stop = {.ctx = ctx, .p = p};
	struct probe_outcome o;
	probe_run(t.url, t.timeout_s, t.retry_count, deadline, p, run_is_stopping, &stop, &o);
	if (o.is_aborted)
		return rpc_fail(ctx, rpc_ctx_is_cancelled(ctx) ? MON_ECANCELLED : MON_EUNAVAIL,
		                "the health check was interrupted");

	char details[256];
	struct health_check_result r;
	outcome_to_result(&o, req->service_id, details, sizeof(details), &r);
	struct run_record rr = {.a = {.result = &r, .ctx = ctx}, .o = &o, .service_id = req->service_id, .arena = ar};
	/*
	 * A duplicate in flight probed too, but only the first to commit records: the other answers its outcome.
	 * The response (rpc_ctx_response) is filled by run_record_reply or by the replay of an idempotency key.
	 */
	return svc_run_change(ctx, p->pool, run_record_tx, run_record_reply, &rr);
}

static void *runner_main(void *arg)
{
	struct prober *p = arg;
	for (;;) {
		pthread_mutex_lock(&p->lock);
		while (p->run_queued_n == 0 && !atomic_load(&p->is_stopping))
			pthread_cond_wait(&p->run_cond, &p->lock);
		if (p->run_queued_n == 0) { /* stopping, and every run admitted is answered */
			pthread_mutex_unlock(&p->lock);
			return NULL;
		}
		struct run_job *j = p->run_queue[p->run_head];
		p->run_head = (p->run_head + 1) % p->run_concurrency;
		p->run_queued_n--;
		pthread_mutex_unlock(&p->lock);

		struct rpc_ctx *ctx = j->ctx; /* j dies with the call's arena at rpc_reply_finish */
		int rc = atomic_load(&p->is_stopping) ? rpc_fail(ctx, MON_EUNAVAIL, "the health prober is stopping")
		                                      : run_check_probe(p, j);
		/* The slot is free before the caller hears back: a caller that asks again at once finds it free. */
		run_release(p);
		rpc_reply_finish(ctx, rc);
	}
}
