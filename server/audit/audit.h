/*
 * The audit trail (tb_audit_event). Every mutating RPC writes its event
 * with audit_write_tx inside the transaction that makes the change, so a
 * change without its event cannot exist. Refused calls are recorded by the
 * audit writer thread (action access-denied, outcome failure), since they
 * have no transaction of their own.
 *
 * Events never contain secrets or API keys: before/after data are built by
 * the handlers from what the API shows (secrets as has_* flags).
 *
 * Who and where: user_id, user_email and user_role come from the call's
 * identity ("anonymous", "", "none" without one); ip_address from the
 * peer (audit_peer_ip); user_agent from the "user-agent" metadata;
 * request_id from the call. Free text is cut to its column's length on a
 * character boundary, and bytes that are not UTF-8 become '?', so an
 * event is never refused for what a client sent.
 */
#ifndef MON_SERVER_AUDIT_AUDIT_H
#define MON_SERVER_AUDIT_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "db/db.h"
#include "rpc/rpc.h"
#include "rpc/server.h"
#include "util/error.h"

struct audit_event {
	const char *action;        /* audit_action_type: "create", "update", "delete", "execute", ... */
	const char *resource_type; /* "api-key", "caller", "service", ... */
	const char *resource_id;
	const char *resource_name; /* may be NULL */
	const char *description;   /* one sentence, no secrets */
	json_t *before;            /* borrowed; NULL for creations */
	json_t *after;             /* borrowed; NULL for deletions */
	const char *module;        /* the service: "access", "health", ... */
	const char *severity;      /* severity_level; NULL: "info" */
};

/*
 * Inserts the event (event id, time, caller identity from ctx, ip from the
 * peer, user agent, request id, and "changes": the top-level keys whose
 * values differ between before and after) in conn's current transaction,
 * with outcome "success". The metadata column records how the caller
 * authenticated and with which key id (never the key).
 *
 * ctx may be NULL for an action of the server itself or of its command line
 * on the server host (monitord admin bootstrap): the user is then "system",
 * role "none", ip 127.0.0.1, no user agent or request id.
 *
 * Errors: MON_EINVAL when action, resource_type or description is missing
 * or action is not an audit_action_type; MON_ENOMEM; the database's codes
 * (db.h). The caller's transaction must then be rolled back, which
 * db_tx_run does when its function returns the code.
 */
int audit_write_tx(struct db_conn *conn, struct rpc_ctx *ctx, const struct audit_event *ev,
                   struct mon_error *err) MON_MUST_CHECK;

/*
 * The writer of refused calls. audit_on_deny copies what it needs from the
 * refused call into a bounded queue and returns; a thread inserts the
 * queued events in batches (action access-denied, outcome failure,
 * resource_type "rpc-method", resource_id the method path, module "auth",
 * severity warning, failure_reason the refusal's message, time the moment
 * of the refusal). While the database is down it keeps the queue and
 * retries with backoff, so memory stays bounded by the queue. Past the
 * bound it counts what it drops, logs the count and records one summary
 * event ("N refused calls not recorded individually"): nothing vanishes
 * without a trace.
 */
#define AUDIT_QUEUE_MAX 10000
/* How long audit_writer_destroy keeps trying to write what is queued. */
#define AUDIT_DRAIN_TIMEOUT_MS 10000

struct audit_writer;

/* Creates the writer and starts its thread; the caller owns it. MON_ENOMEM or MON_EINTERNAL (thread). */
int audit_writer_create(struct db_pool *pool, struct audit_writer **out, struct mon_error *err) MON_MUST_CHECK;

/*
 * As audit_writer_create with another queue bound and drain timeout (for
 * tests). queue_max >= 1, drain_timeout_ms >= 0.
 */
int audit_writer_create_with(struct db_pool *pool, size_t queue_max, int drain_timeout_ms, struct audit_writer **out,
                             struct mon_error *err) MON_MUST_CHECK;

/*
 * Stops taking events, writes what is queued (and the summary of drops),
 * retrying for up to the drain timeout while the database is down, then
 * stops the thread and frees the writer; what it could not write is
 * counted in an error log line. Accepts NULL. Destroy the RPC server first:
 * audit_on_deny must not run during or after this call.
 */
void audit_writer_destroy(struct audit_writer *w);

/* An rpc_deny_fn: arg is the writer. Never blocks; counts what it must drop past the queue bound. */
void audit_on_deny(void *arg, const struct rpc_auth_request *req, const struct rpc_identity *who, int code,
                   const char *message);

struct audit_writer_stats {
	size_t queued;         /* events waiting to be written, in the queue and in the batch being written */
	uint64_t written;      /* events inserted (summary events included) */
	uint64_t dropped;      /* refused calls not queued because the queue was full */
	uint64_t write_errors; /* failed attempts to write a batch (each is retried) */
};

/* A snapshot of the writer's counters; thread-safe. */
void audit_writer_get_stats(struct audit_writer *w, struct audit_writer_stats *out);

/*
 * Pure helpers, unit-tested.
 *
 * The IP address of a gRPC peer string, for the inet column:
 * "ipv4:10.0.0.7:5555" gives "10.0.0.7"; "ipv6:[::1]:5555" (or with the
 * brackets percent-encoded, "ipv6:%5B::1%5D:5555") gives "::1", without a
 * zone id ("fe80::1%eth0" gives "fe80::1"). A Unix socket peer ("unix:...",
 * "unix-abstract:...") is on this host and gives "127.0.0.1". Anything else
 * (NULL, unknown schemes, an address that does not parse) gives "0.0.0.0",
 * as the column cannot be NULL. Always writes a NUL-terminated address;
 * out_len must be at least 46 (INET6_ADDRSTRLEN).
 */
void audit_peer_ip(const char *peer, char *out, size_t out_len);

/*
 * The "changes" of an event: an object with, for each top-level key whose
 * value differs between before and after (json_equal), {"from": before's
 * value or null, "to": after's value or null}. A NULL or non-object before
 * or after counts as {} (so a creation lists every field of after). Returns
 * a new reference (an empty object when nothing differs), NULL when both
 * are NULL or on allocation failure.
 */
json_t *audit_changes(const json_t *before, const json_t *after);

/*
 * An event id: "AUD-", the time in milliseconds since the epoch as 12
 * lowercase hex digits, "-", and 8 random bytes as 16 lowercase hex digits
 * (33 characters; ids sort by time to the millisecond).
 */
#define AUDIT_EVENT_ID_LEN 33
void audit_format_event_id(int64_t time_ms, const unsigned char random[8], char out[AUDIT_EVENT_ID_LEN + 1]);

/*
 * Copies in to out as valid UTF-8 of at most max_chars characters (and
 * out_len - 1 bytes), cut on a character boundary; each byte that does not
 * start a valid UTF-8 sequence becomes '?'. NULL in gives "".
 */
void audit_clip_text(const char *in, size_t max_chars, char *out, size_t out_len);

#endif
