/*
 * The resuming alert subscriber (<monitoring/alerts_watcher.h>). It owns a
 * private copy of the WatchAlertsRequest, the cursor and one background
 * thread that opens WatchAlerts with the generated stub, reads it, hands
 * events to the callback and, when the stream breaks in a way a resume
 * repairs, waits out a jittered backoff and opens it again from the cursor.
 *
 * The thread polls the stream in short waits so that close is noticed
 * promptly without touching the stream from another thread (a stream
 * belongs to one thread at a time).
 */
#include "monitoring/alerts_watcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "monitoring/v1/alerts.mon-client.h"
#include "util/clock.h"
#include "util/error.h"

#define DEFAULT_RETRY_INITIAL_MS 100
#define DEFAULT_RETRY_MAX_MS 10000
/* How long one read waits before the thread looks at is_closing again. */
#define POLL_MS 100
/* The longest request copy accepted (filters of a few thousand rule ids). */
#define MAX_REQUEST_BYTES ((size_t)1 << 20)

/* gRPC status codes. */
#define ST_OK 0
#define ST_INVALID_ARGUMENT 3
#define ST_RESOURCE_EXHAUSTED 8
#define ST_UNAVAILABLE 14

struct mon_alerts_watcher {
	mon_client *client;
	mon_alerts_watcher_options opts;
	char *request_id;                        /* copy of opts.request_id, or NULL */
	Monitoring__V1__WatchAlertsRequest *req; /* our copy; resume_after_sequence is rewritten */
	uint64_t rand_state;

	pthread_mutex_t mu;
	pthread_cond_t wake;    /* the thread: close */
	pthread_cond_t stopped; /* waiters: the thread stopped by itself */
	pthread_t thread;
	bool has_thread;
	bool is_closing;
	bool is_stopped;
	int stop_code;
	char stop_message[512];

	mon_alerts_watcher_stats stats; /* stats.cursor is the cursor */
};

static void status_set(mon_status *status, int code, const char *fmt, ...) MON_PRINTF(3, 4);

static void status_set(mon_status *status, int code, const char *fmt, ...)
{
	if (status == NULL)
		return;
	status->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(status->message, sizeof(status->message), fmt, ap);
	va_end(ap);
}

/* Waits on cond until the monotonic time at_ms; returns ETIMEDOUT once it passed. */
static int cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mu, int64_t at_ms)
{
	struct timespec ts = {.tv_sec = (time_t)(at_ms / 1000), .tv_nsec = (long)(at_ms % 1000) * 1000000};
	return pthread_cond_timedwait(cond, mu, &ts);
}

static uint64_t rand_next(uint64_t *state)
{
	/* xorshift64*: enough to spread the reconnects of many subscribers. */
	uint64_t x = *state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 2685821657736338717ull;
}

static void emit(mon_alerts_watcher *w, mon_alerts_watcher_event *ev)
{
	pthread_mutex_lock(&w->mu);
	ev->cursor = w->stats.cursor;
	pthread_mutex_unlock(&w->mu);
	w->opts.on_event(w->opts.on_event_data, ev);
}

/*
 * Takes one message into account (cursor, counters) and delivers it,
 * unless it is a change already delivered. Sets *is_resume_required when
 * the server announced the end of the stream.
 */
static void message_handle(mon_alerts_watcher *w, const Monitoring__V1__WatchAlertsResponse *m,
                           bool *is_resume_required)
{
	mon_alerts_watcher_event ev = {.response = m};
	bool is_duplicate = false;

	pthread_mutex_lock(&w->mu);
	switch (m->event_case) {
	case MONITORING__V1__WATCH_ALERTS_RESPONSE__EVENT_SNAPSHOT:
		ev.kind = MON_ALERTS_WATCHER_SNAPSHOT;
		w->stats.snapshots++;
		break;
	case MONITORING__V1__WATCH_ALERTS_RESPONSE__EVENT_CHANGE:
		ev.kind = MON_ALERTS_WATCHER_CHANGE;
		if (m->sequence <= w->stats.cursor) {
			is_duplicate = true;
			w->stats.duplicates_dropped++;
		} else {
			w->stats.cursor = m->sequence;
			w->stats.changes++;
		}
		break;
	case MONITORING__V1__WATCH_ALERTS_RESPONSE__EVENT_CONTROL: {
		const Monitoring__V1__StreamControl *c = m->control;
		ev.kind = MON_ALERTS_WATCHER_CONTROL;
		w->stats.controls++;
		if (c == NULL)
			break;
		switch (c->kind) {
		case MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_SNAPSHOT_COMPLETE:
			/* A fresh snapshot's cursor stands, whatever came before it. */
			w->stats.cursor = c->resume_after_sequence;
			break;
		case MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_RESUME_REQUIRED:
			*is_resume_required = true;
			/* fall through */
		case MONITORING__V1__STREAM_CONTROL_KIND__STREAM_CONTROL_KIND_HEARTBEAT:
			if (c->resume_after_sequence > w->stats.cursor)
				w->stats.cursor = c->resume_after_sequence;
			break;
		default:
			/* CURSOR_EXPIRED: the cursor moves with the SNAPSHOT_COMPLETE that follows. */
			break;
		}
		break;
	}
	default: is_duplicate = true; break; /* nothing we know: skip it */
	}
	ev.cursor = w->stats.cursor;
	pthread_mutex_unlock(&w->mu);
	if (!is_duplicate)
		w->opts.on_event(w->opts.on_event_data, &ev);
}

/*
 * Whether a stream that ended with code (OK: ended by the server) is
 * resumed: yes for UNAVAILABLE, and for a server that announced the end
 * with RESUME_REQUIRED (then it ends with RESOURCE_EXHAUSTED, UNAVAILABLE
 * or OK). A WatchAlerts stream does not end with OK otherwise; it is
 * resumed too, since resuming loses nothing.
 */
static bool is_resumable(int code, bool is_resume_required)
{
	if (code == ST_UNAVAILABLE || code == ST_OK)
		return true;
	return is_resume_required && code == ST_RESOURCE_EXHAUSTED;
}

/*
 * After a failure: either stops the watcher (not resumable, or retrying
 * for longer than retry_timeout_ms) or reports DISCONNECTED and waits out
 * the backoff. Returns false when the thread should end.
 */
static bool failure_handle(mon_alerts_watcher *w, int code, const char *message, bool is_resume_required,
                           int64_t *backoff_ms, int64_t last_ok_ms)
{
	mon_alerts_watcher_event ev = {.code = code, .message = message};
	int64_t wait_ms = *backoff_ms / 2 + (int64_t)(rand_next(&w->rand_state) % (uint64_t)(*backoff_ms / 2 + 1));
	bool is_given_up =
	        !is_resumable(code, is_resume_required) ||
	        (w->opts.retry_timeout_ms > 0 && mon_now_ms() + wait_ms - last_ok_ms > w->opts.retry_timeout_ms);

	pthread_mutex_lock(&w->mu);
	w->stats.last_error_code = code;
	bool is_closing = w->is_closing;
	pthread_mutex_unlock(&w->mu);
	if (is_closing)
		return false;
	if (is_given_up) {
		ev.kind = MON_ALERTS_WATCHER_STOPPED;
		emit(w, &ev);
		pthread_mutex_lock(&w->mu);
		w->is_stopped = true;
		w->stop_code = code;
		snprintf(w->stop_message, sizeof(w->stop_message), "%s", message);
		pthread_cond_broadcast(&w->stopped);
		pthread_mutex_unlock(&w->mu);
		return false;
	}
	ev.kind = MON_ALERTS_WATCHER_DISCONNECTED;
	ev.retry_in_ms = wait_ms;
	emit(w, &ev);

	int64_t retry_at = mon_now_ms() + wait_ms;
	pthread_mutex_lock(&w->mu);
	w->stats.disconnects++;
	while (!w->is_closing && cond_wait_until(&w->wake, &w->mu, retry_at) != ETIMEDOUT)
		;
	is_closing = w->is_closing;
	pthread_mutex_unlock(&w->mu);
	if (*backoff_ms < w->opts.retry_max_ms)
		*backoff_ms = *backoff_ms * 2 < w->opts.retry_max_ms ? *backoff_ms * 2 : w->opts.retry_max_ms;
	return !is_closing;
}

static bool closing(mon_alerts_watcher *w)
{
	pthread_mutex_lock(&w->mu);
	bool is_closing = w->is_closing;
	pthread_mutex_unlock(&w->mu);
	return is_closing;
}

static void *watcher_main(void *arg)
{
	mon_alerts_watcher *w = arg;
	int64_t backoff_ms = w->opts.retry_initial_ms;
	int64_t last_ok_ms = mon_now_ms();
	mon_call_options co = {.timeout_ms = 0, .request_id = w->request_id};

	while (!closing(w)) {
		mon_stream *stream = NULL;
		mon_status st = {0};
		bool is_resume_required = false;

		pthread_mutex_lock(&w->mu);
		w->req->resume_after_sequence = w->stats.cursor;
		pthread_mutex_unlock(&w->mu);
		if (mon_alerts_service_watch_alerts_open(w->client, w->req, &co, &stream, &st) != 0) {
			if (!failure_handle(w, st.code, st.message, false, &backoff_ms, last_ok_ms))
				break;
			continue;
		}
		pthread_mutex_lock(&w->mu);
		w->stats.connects++;
		w->stats.is_connected = 1;
		pthread_mutex_unlock(&w->mu);
		mon_alerts_watcher_event ev = {.kind = MON_ALERTS_WATCHER_CONNECTED,
		                               .resume_after_sequence = w->req->resume_after_sequence};
		emit(w, &ev);

		for (;;) {
			if (closing(w)) {
				st.code = ST_OK;
				break;
			}
			Monitoring__V1__WatchAlertsResponse *m = NULL;
			int n = mon_alerts_service_watch_alerts_next(stream, &m, POLL_MS, &st);
			if (n == MON_STREAM_TIMEOUT)
				continue;
			if (n == 1) {
				message_handle(w, m, &is_resume_required);
				mon_message_free(&m->base);
				backoff_ms = w->opts.retry_initial_ms;
				last_ok_ms = mon_now_ms();
				continue;
			}
			if (n == 0)
				status_set(&st, ST_OK, "%s", "stream ended by the server");
			break;
		}
		mon_stream_close(stream);
		pthread_mutex_lock(&w->mu);
		w->stats.is_connected = 0;
		pthread_mutex_unlock(&w->mu);
		if (!failure_handle(w, st.code, st.message, is_resume_required, &backoff_ms, last_ok_ms))
			break;
	}
	return NULL;
}

/* Copies req (by packing and unpacking it) into *out. */
static int request_copy(const Monitoring__V1__WatchAlertsRequest *req, Monitoring__V1__WatchAlertsRequest **out,
                        mon_status *status)
{
	size_t len = protobuf_c_message_get_packed_size(&req->base);
	if (len > MAX_REQUEST_BYTES) {
		status_set(status, ST_INVALID_ARGUMENT, "request: %zu bytes serialised, more than %zu", len,
		           MAX_REQUEST_BYTES);
		return MON_EINVAL;
	}
	uint8_t *buf = malloc(len > 0 ? len : 1);
	if (buf == NULL) {
		status_set(status, ST_RESOURCE_EXHAUSTED, "out of memory");
		return MON_ENOMEM;
	}
	protobuf_c_message_pack(&req->base, buf);
	*out = monitoring__v1__watch_alerts_request__unpack(NULL, len, buf);
	free(buf);
	if (*out == NULL) {
		status_set(status, ST_RESOURCE_EXHAUSTED, "out of memory");
		return MON_ENOMEM;
	}
	return MON_OK;
}

static void watcher_free(mon_alerts_watcher *w)
{
	if (w->req != NULL)
		monitoring__v1__watch_alerts_request__free_unpacked(w->req, NULL);
	free(w->request_id);
	free(w);
}

/* --- public API ------------------------------------------------------------ */

MON_API int mon_alerts_watcher_open(mon_client *client, const Monitoring__V1__WatchAlertsRequest *request,
                                    const mon_alerts_watcher_options *opts, mon_alerts_watcher **out,
                                    mon_status *status)
{
	int rc = MON_OK;
	mon_alerts_watcher *w = NULL;
	pthread_condattr_t ca;

	status_set(status, ST_OK, "%s", "");
	if (out == NULL || client == NULL || request == NULL || opts == NULL || opts->on_event == NULL) {
		status_set(status, ST_INVALID_ARGUMENT,
		           "mon_alerts_watcher_open: client, request, opts, opts->on_event and out are required");
		return MON_EINVAL;
	}
	*out = NULL;
	if (request->resume_after_sequence < 0) {
		status_set(status, ST_INVALID_ARGUMENT, "resume_after_sequence: must not be negative");
		return MON_EINVAL;
	}
	if (opts->retry_initial_ms < 0 || opts->retry_max_ms < 0 || opts->retry_timeout_ms < 0) {
		status_set(status, ST_INVALID_ARGUMENT,
		           "retry_initial_ms, retry_max_ms, retry_timeout_ms: must not be negative");
		return MON_EINVAL;
	}
	w = calloc(1, sizeof(*w));
	if (w == NULL) {
		status_set(status, ST_RESOURCE_EXHAUSTED, "out of memory");
		return MON_ENOMEM;
	}
	w->client = client;
	w->opts = *opts;
	if (w->opts.retry_initial_ms == 0)
		w->opts.retry_initial_ms = DEFAULT_RETRY_INITIAL_MS;
	if (w->opts.retry_max_ms == 0)
		w->opts.retry_max_ms = DEFAULT_RETRY_MAX_MS;
	if (w->opts.retry_max_ms < w->opts.retry_initial_ms)
		w->opts.retry_max_ms = w->opts.retry_initial_ms;
	if (opts->request_id != NULL && (w->request_id = strdup(opts->request_id)) == NULL) {
		status_set(status, ST_RESOURCE_EXHAUSTED, "out of memory");
		rc = MON_ENOMEM;
		goto fail;
	}
	w->opts.request_id = NULL;
	if ((rc = request_copy(request, &w->req, status)) != MON_OK)
		goto fail;
	w->stats.cursor = request->resume_after_sequence;

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	w->rand_state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^
	                (uint64_t)(uintptr_t)w;
	if (w->rand_state == 0)
		w->rand_state = 0x9e3779b97f4a7c15ull;

	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->wake, &ca);
	pthread_cond_init(&w->stopped, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&w->thread, NULL, watcher_main, w) != 0) {
		status_set(status, ST_RESOURCE_EXHAUSTED, "could not start the watcher thread: %s", strerror(errno));
		pthread_cond_destroy(&w->wake);
		pthread_cond_destroy(&w->stopped);
		pthread_mutex_destroy(&w->mu);
		rc = MON_ENOMEM;
		goto fail;
	}
	w->has_thread = true;
	*out = w;
	return MON_OK;
fail:
	watcher_free(w);
	return rc;
}

MON_API int64_t mon_alerts_watcher_cursor(mon_alerts_watcher *w)
{
	if (w == NULL)
		return 0;
	pthread_mutex_lock(&w->mu);
	int64_t cursor = w->stats.cursor;
	pthread_mutex_unlock(&w->mu);
	return cursor;
}

MON_API void mon_alerts_watcher_stats_get(mon_alerts_watcher *w, mon_alerts_watcher_stats *out)
{
	if (out == NULL)
		return;
	memset(out, 0, sizeof(*out));
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	*out = w->stats;
	pthread_mutex_unlock(&w->mu);
}

MON_API int mon_alerts_watcher_wait(mon_alerts_watcher *w, int64_t timeout_ms, mon_status *status)
{
	if (w == NULL) {
		status_set(status, ST_INVALID_ARGUMENT, "mon_alerts_watcher_wait: NULL watcher");
		return 1;
	}
	int64_t until_ms = mon_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	pthread_mutex_lock(&w->mu);
	while (!w->is_stopped) {
		if (timeout_ms < 0)
			pthread_cond_wait(&w->stopped, &w->mu);
		else if (cond_wait_until(&w->stopped, &w->mu, until_ms) == ETIMEDOUT)
			break;
	}
	bool is_stopped = w->is_stopped;
	if (is_stopped)
		status_set(status, w->stop_code, "%s", w->stop_message);
	else
		status_set(status, ST_OK, "%s", "");
	pthread_mutex_unlock(&w->mu);
	return is_stopped ? 1 : 0;
}

MON_API void mon_alerts_watcher_close(mon_alerts_watcher *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	w->is_closing = true;
	pthread_cond_broadcast(&w->wake);
	pthread_mutex_unlock(&w->mu);
	if (w->has_thread)
		pthread_join(w->thread, NULL);
	pthread_cond_destroy(&w->wake);
	pthread_cond_destroy(&w->stopped);
	pthread_mutex_destroy(&w->mu);
	watcher_free(w);
}
