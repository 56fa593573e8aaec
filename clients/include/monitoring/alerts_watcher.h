/*
 * libmonitoring's alert subscriber: follows AlertsService.WatchAlerts on a
 * background thread and hands every event (snapshot, change, control) to a
 * callback, reconnecting by itself when the stream breaks.
 *
 * Resuming: the watcher keeps a cursor, the last resume point the server
 * gave it: the sequence of every change event and the resume_after_sequence
 * of every SNAPSHOT_COMPLETE, HEARTBEAT and RESUME_REQUIRED control. When
 * the stream fails with UNAVAILABLE (a restarted or draining server, a
 * broken connection), with RESOURCE_EXHAUSTED after a RESUME_REQUIRED
 * control (the subscriber fell behind), or ends after RESUME_REQUIRED, the
 * watcher opens it again with resume_after_sequence set to the cursor,
 * after an exponential backoff with jitter, so the server replays exactly
 * the changes missed meanwhile. A change whose sequence is not above the
 * cursor is never delivered twice. Other failures (PERMISSION_DENIED,
 * INVALID_ARGUMENT, ...) stop the watcher and are reported once.
 *
 *   mon_alerts_watcher *w = NULL;
 *   Monitoring__V1__WatchAlertsRequest f = MONITORING__V1__WATCH_ALERTS_REQUEST__INIT;
 *   mon_alerts_watcher_options o = {.on_event = on_event, .on_event_data = app};
 *   if (mon_alerts_watcher_open(client, &f, &o, &w, &st) != 0) ...
 *   ... events arrive on the watcher's thread ...
 *   int64_t cursor = mon_alerts_watcher_cursor(w);   // store it to resume later
 *   mon_alerts_watcher_close(w);
 */
#ifndef MONITORING_ALERTS_WATCHER_H
#define MONITORING_ALERTS_WATCHER_H

#include <stdint.h>

#include <monitoring/client.h>
#include <monitoring/v1/alerts.pb-c.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mon_alerts_watcher mon_alerts_watcher;

/* What an event passed to the callback is. */
typedef enum mon_alerts_watcher_event_kind {
	/*
	 * A stream was opened. resume_after_sequence is what it resumes from;
	 * 0 means a fresh snapshot follows, so an application that was
	 * building a snapshot starts over.
	 */
	MON_ALERTS_WATCHER_CONNECTED = 1,
	/* One unresolved alert of a snapshot (response->snapshot). */
	MON_ALERTS_WATCHER_SNAPSHOT = 2,
	/* A change (response->change); response->sequence is its sequence. */
	MON_ALERTS_WATCHER_CHANGE = 3,
	/*
	 * A control (response->control). After CURSOR_EXPIRED a fresh
	 * snapshot follows: the application drops what it knew.
	 */
	MON_ALERTS_WATCHER_CONTROL = 4,
	/* The stream broke; code and message say why; the watcher reconnects in retry_in_ms. */
	MON_ALERTS_WATCHER_DISCONNECTED = 5,
	/* The watcher gave up (code and message say why); no event follows. */
	MON_ALERTS_WATCHER_STOPPED = 6
} mon_alerts_watcher_event_kind;

/* An event; its pointers are valid only during the callback. */
typedef struct mon_alerts_watcher_event {
	mon_alerts_watcher_event_kind kind;
	/* The server's message (SNAPSHOT, CHANGE, CONTROL); NULL otherwise. */
	const Monitoring__V1__WatchAlertsResponse *response;
	/* The cursor once this event is taken into account. */
	int64_t cursor;
	/* CONNECTED: the resume point sent (0: snapshot). */
	int64_t resume_after_sequence;
	/* DISCONNECTED, STOPPED: gRPC status code and message. */
	int code;
	const char *message;
	/* DISCONNECTED: wait before the next attempt. */
	int64_t retry_in_ms;
} mon_alerts_watcher_event;

/*
 * Called on the watcher's thread, once per event, in stream order. It must
 * not call mon_alerts_watcher_close (the watcher waits for it); a slow
 * callback delays the stream, and a server ends a stream that falls too far
 * behind (the watcher then resumes it).
 */
typedef void (*mon_alerts_watcher_fn)(void *user_data, const mon_alerts_watcher_event *event);

typedef struct mon_alerts_watcher_options {
	mon_alerts_watcher_fn on_event; /* required */
	void *on_event_data;
	int64_t retry_initial_ms; /* first backoff; 0: 100. Each failed attempt doubles it, up to */
	int64_t retry_max_ms;     /* 0: 10000. The wait is drawn between half and all of it. */
	int64_t retry_timeout_ms; /* give up when no stream has delivered anything for this long
	                             while reconnecting; 0: never */
	const char *request_id;   /* sent as x-request-id on every attempt; may be NULL */
} mon_alerts_watcher_options;

/* Counters since the watcher was opened. */
typedef struct mon_alerts_watcher_stats {
	uint64_t snapshots;          /* snapshot events delivered */
	uint64_t changes;            /* change events delivered */
	uint64_t controls;           /* control events delivered */
	uint64_t connects;           /* streams opened (the first one included) */
	uint64_t disconnects;        /* streams that broke and were retried */
	uint64_t duplicates_dropped; /* changes at or below the cursor, not delivered */
	int64_t cursor;              /* the resume point now */
	int is_connected;            /* 1 while a stream is open */
	int last_error_code;         /* gRPC code of the last failure; 0 if none */
} mon_alerts_watcher_stats;

/*
 * Starts watching through client (which must outlive the watcher) with the
 * filters of request, copied (its resume_after_sequence is the first
 * cursor: 0 starts with a snapshot). opts is copied; on_event is required.
 * Returns 0 and *out (the caller's; free with mon_alerts_watcher_close),
 * or a negative code with status (may be NULL): INVALID_ARGUMENT naming
 * the bad argument, RESOURCE_EXHAUSTED when out of memory or threads. The
 * first stream is opened on the background thread: its failures arrive as
 * events.
 */
MON_API int mon_alerts_watcher_open(mon_client *client, const Monitoring__V1__WatchAlertsRequest *request,
                                    const mon_alerts_watcher_options *opts, mon_alerts_watcher **out,
                                    mon_status *status);

/* The cursor: the sequence to resume from later (0 before the first resume point). */
MON_API int64_t mon_alerts_watcher_cursor(mon_alerts_watcher *watcher);

/* Copies the counters into *out. */
MON_API void mon_alerts_watcher_stats_get(mon_alerts_watcher *watcher, mon_alerts_watcher_stats *out);

/*
 * Waits up to timeout_ms (< 0: no limit) for the watcher to stop by
 * itself. Returns 0 while it is still running, or 1 once it has stopped,
 * with status (may be NULL) holding the reason (the STOPPED event's).
 */
MON_API int mon_alerts_watcher_wait(mon_alerts_watcher *watcher, int64_t timeout_ms, mon_status *status);

/*
 * Stops the background thread (cancelling the open stream; the callback is
 * not called after this returns) and frees the watcher. Accepts NULL. No
 * other call on the watcher may be running or made once close has begun.
 */
MON_API void mon_alerts_watcher_close(mon_alerts_watcher *watcher);

#ifdef __cplusplus
}
#endif

#endif
