/*
 * Resumable event streams: the one module behind every Watch* RPC whose
 * events are rows of a sequence-numbered log in PostgreSQL (WatchAlerts,
 * WatchServiceHealth, and the next ones). A stream kind supplies only its
 * event type: how to read and decode a page of the log, how a subscriber's
 * filter matches an event, its snapshot, and how to wrap a StreamControl
 * in its response message. The module does the rest, the same way for
 * every kind:
 *
 * - a hub per kind reads the log after the last sequence it dispatched,
 *   woken by the kind's NOTIFY channel and by a one-second tick (which
 *   catches up after the bus lost its connection), packs each event once
 *   and shares the bytes among every matching subscriber;
 * - a new stream starts with a snapshot (or resumes after a sequence with
 *   exactly the events it missed, or gets CURSOR_EXPIRED and a snapshot),
 *   then is handed to the hub with no gap and no repeat;
 * - heartbeats carry the cursor; a subscriber whose queue fills gets
 *   RESUME_REQUIRED (FELL_BEHIND) and RESOURCE_EXHAUSTED; server shutdown
 *   sends RESUME_REQUIRED (SERVER_SHUTDOWN) and UNAVAILABLE.
 *
 * Threads: handlers (worker pool) only validate and hand the stream over.
 * Snapshots and backlogs are read by the hub's catch-up thread a page at a
 * time and sent as far as the stream's queue takes them; the rest waits
 * for the stream's own write completions (rpc_stream_on_writable), so no
 * thread sleeps and no database connection is held while a client reads.
 * Completion-queue callbacks (stream close, writable) never take a lock
 * that the fan-out holds while sending.
 */
#ifndef MON_SERVER_STREAM_STREAM_H
#define MON_SERVER_STREAM_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "monitoring/v1/common.pb-c.h"
#include "rpc/rpc.h"
#include "util/arena.h"
#include "util/error.h"

/* One event of a log, or one item of a snapshot, decoded by its kind. */
struct stream_event {
	int64_t seq;           /* the log's sequence (0 for snapshot items) */
	const void *data;      /* what the kind's matches() reads; NULL: every subscriber gets it */
	ProtobufCMessage *msg; /* what a subscriber receives */
};

struct stream_batching;

/* What a stream kind supplies. Every callback runs on the hub's threads, never on a completion queue. */
struct stream_kind {
	const char *name;        /* in log lines: "alerts" */
	const char *channel;     /* the NOTIFY channel that says the log grew */
	size_t subs_max;         /* streams per process */
	int page_rows;           /* a read of at least this many events may have more behind it (1: read until empty) */
	size_t page_arena_bytes; /* cap of a page's decoded events; 0: 64 MiB */

	/*
	 * Reads up to page_rows events with seq > after, in sequence order,
	 * decoding them into a (which outlives the events). *out and *n_out
	 * get the events, *lo_out the oldest sequence the log holds (0 when
	 * empty or not known). A read that stops at a byte budget before
	 * page_rows events must set page_rows to 1.
	 */
	int (*read)(struct db_conn *conn, int64_t after, struct arena *a, struct stream_event **out, size_t *n_out,
	            int64_t *lo_out, struct mon_error *err);

	/* Whether a subscriber with filter wants the event whose data is given. */
	bool (*matches)(const void *filter, const void *data);

	/*
	 * True in *out when the events after cursor cannot all be replayed
	 * (retention removed some, or the cursor was never handed out).
	 */
	int (*cursor_is_expired)(struct db_conn *conn, int64_t cursor, bool *out, struct mon_error *err);

	/*
	 * The current state matching filter, from one snapshot of the
	 * database, and the log's high-water mark in that same snapshot: every
	 * event up to *mark is reflected in the items, none after it. Bounded
	 * by timeout_ms, the stream's remaining deadline (DB_NO_DEADLINE: none;
	 * the kind caps it with its own bound).
	 */
	int (*snapshot)(struct db_pool *pool, int64_t timeout_ms, const void *filter, struct arena *a,
	                struct stream_event **out, size_t *n_out, int64_t *mark, struct mon_error *err);

	/*
	 * The stream's response message: it must have an int64 `sequence` and
	 * a StreamControl `control` field (the module builds its controls with
	 * them, sequence = the control's cursor).
	 */
	const ProtobufCMessageDescriptor *response;

	/* Frees a filter handed to stream_open; accepts NULL. */
	void (*filter_free)(void *filter);

	/*
	 * Optional: subscribers that batch what they receive (WatchMetrics).
	 * Their filter is their state; events are offered to it one by one
	 * rather than sent, and it sends on its own (never waiting). With
	 * batching, snapshot, cursor_is_expired and matches are not used,
	 * and a slow subscriber is never ended: its state announces what it
	 * could not keep.
	 */
	const struct stream_batching *batching;
};

struct stream_batching {
	/*
	 * The start of a stream: *cursor gets the sequence to read after
	 * (resume_after checked against the log, or the current end for 0);
	 * may send a first message (the queue is empty). Bounded by timeout_ms
	 * as snapshot is.
	 */
	int (*start)(struct db_pool *pool, int64_t timeout_ms, void *state, struct rpc_stream *s, int64_t resume_after,
	             int64_t *cursor, struct mon_error *err);

	/*
	 * A page follows whose first event is first_seq (after the position
	 * `after`; lo is the oldest sequence the log holds, 0 when empty): the
	 * state announces what is missing before first_seq when it is gone
	 * from the log, and its position moves to first_seq - 1.
	 */
	void (*page)(void *state, int64_t after, int64_t first_seq, int64_t lo, int64_t now_ms);

	/* Takes one event (ignored when not past the position). MON_ELIMIT: a send found the queue full. */
	int (*offer)(void *state, const struct stream_event *ev, int64_t now_ms);

	/*
	 * Timers: batches due (every one when is_final), closed intervals,
	 * heartbeats. MON_ELIMIT when a send found the queue full; *has_pending
	 * says whether anything is still held.
	 */
	int (*tick)(void *state, int64_t now_ms, bool is_final, bool *has_pending);

	/* The last sequence offered. */
	int64_t (*position)(const void *state);

	/* Server shutdown: what is held, as far as the queue takes it, then RESUME_REQUIRED and UNAVAILABLE. */
	void (*shutdown)(void *state);
};

struct stream_hub;

/*
 * Creates the hub of kind (which must outlive it): subscribes to
 * kind->channel on bus (before or after db_bus_start) and starts its
 * threads, which read with connections from pool. The caller owns *out.
 */
int stream_hub_create(const struct stream_kind *kind, struct db_pool *pool, struct db_bus *bus, struct stream_hub **out,
                      struct mon_error *err) MON_MUST_CHECK;

/*
 * Server shutdown, for rpc_server_on_shutdown (arg is the hub): stops the
 * fan-out and the catch-up for good, then tells every subscriber that has
 * a cursor where to resume (RESUME_REQUIRED, SERVER_SHUTDOWN, behind what
 * is already queued to it, all of which is still sent) and ends its
 * stream with UNAVAILABLE. One whose queue has no room for that, or that
 * is still in its snapshot, is left to the server, which ends it. A
 * stream opened afterwards is ended the same way at once. Waits only for
 * the hub's threads to finish the step they are in.
 */
void stream_hub_drain(void *arg);

/*
 * Stops the hub's threads and frees it; accepts NULL. Call it after
 * rpc_server_destroy and db_bus_destroy, before db_pool_destroy.
 */
void stream_hub_destroy(struct stream_hub *hub);

/*
 * Hands stream to the hub (from the Watch handler, after validating the
 * request): the hub sends the snapshot when resume_after is 0, or the
 * events after it, then live events; heartbeats every heartbeat_ms of
 * silence. Takes filter in every case (kind->filter_free frees it).
 * Returns 0 once the hub holds the stream (the handler then returns 0 and
 * the hub ends the stream), MON_ELIMIT past kind->subs_max and MON_EUNAVAIL
 * during shutdown, with a message in err.
 */
int stream_open(struct stream_hub *hub, struct rpc_stream *stream, void *filter, int64_t heartbeat_ms,
                int64_t resume_after, struct mon_error *err) MON_MUST_CHECK;

/*
 * kind's response message carrying a StreamControl (kind, cursor, reason,
 * message: NULL for none), built in a; NULL past a's cap.
 */
ProtobufCMessage *stream_control_msg(const struct stream_kind *kind, struct arena *a, int ctl_kind, int64_t cursor,
                                     int reason, const char *message);

/* Sends that control on s without waiting (rpc_stream_send's returns). */
int stream_send_control(const struct stream_kind *kind, struct rpc_stream *s, int ctl_kind, int64_t cursor, int reason,
                        const char *message) MON_MUST_CHECK;

/*
 * Decodes row of res (a page of a change log) into *ev, in a: its seq,
 * the data matches() reads and the message. MON_ENOMEM past a's cap.
 */
typedef int (*stream_row_decode_fn)(const struct db_result *res, int row, struct arena *a, struct stream_event *ev);

/*
 * A stream_kind.read for a log read by one statement: runs stmt with the
 * sequence to read after as its only parameter ($1, rows in sequence
 * order) and decodes each row with decode, into a. *out and *n_out get
 * the events. MON_ENOMEM past a's cap; db errors as db_exec_stmt.
 */
int stream_read_rows(struct db_conn *conn, const struct db_stmt *stmt, int64_t after, struct arena *a,
                     stream_row_decode_fn decode, struct stream_event **out, size_t *n_out,
                     struct mon_error *err) MON_MUST_CHECK;

/*
 * A list of ids a Watch request filters on (alert_rule_ids, service_ids),
 * copied and owned. stream_ids_copy validates them with field's name (at
 * most max, none empty) and fails the call (rpc_fail) otherwise.
 */
struct stream_ids {
	char **ids;
	size_t n; /* 0 matches every id */
};
int stream_ids_copy(struct rpc_ctx *ctx, const char *field, char *const *ids, size_t n, size_t max,
                    struct stream_ids *out) MON_MUST_CHECK;
bool stream_ids_has(const struct stream_ids *set, const char *id);
void stream_ids_free(struct stream_ids *set);

/*
 * A repeated enum filter as a bit mask: each of the n values must be 1 to
 * max (UNSPECIFIED and unknown values are refused with field[i] and
 * allowed, "must be ..." text, failing the call); bit v of *mask is set
 * for value v. max is at most 31. The values are protobuf-c's enum array,
 * passed as ints.
 */
int stream_enum_mask(struct rpc_ctx *ctx, const char *field, const int *values, size_t n, int max, const char *allowed,
                     unsigned *mask) MON_MUST_CHECK;

/*
 * The end of a Watch handler that validated its filters: checks the
 * request's resume_after_sequence and heartbeat_interval (neither
 * negative; a heartbeat of 0 means 30 s, at least 5 s), then stream_open.
 * Takes filter in every case. Fails the call naming the field; returns 0
 * once the hub holds the stream.
 */
int stream_watch(struct stream_hub *hub, struct rpc_ctx *ctx, struct rpc_stream *stream, void *filter,
                 int64_t resume_after, int32_t heartbeat_s) MON_MUST_CHECK;

/* The heartbeat interval of a Watch request: default_s when 0, at least min_s, at most a day. */
int64_t stream_heartbeat_ms(int32_t requested_s, int default_s, int min_s);

#endif
