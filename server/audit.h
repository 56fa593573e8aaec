/*
 * The audit trail (tb_audit_event). Every mutating RPC writes its event
 * with audit_write_tx inside the transaction that makes the change, so a
 * change without its event cannot exist. Refused calls are recorded by the
 * audit writer thread (action access-denied, outcome failure), since they
 * have no transaction of their own.
 *
 * Events never contain secrets or API keys: before/after data are built by
 * the handlers from what the API shows (secrets as has_* flags).
 */
#ifndef MON_SERVER_AUDIT_H
#define MON_SERVER_AUDIT_H

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
 * values differ between before and after) in conn's current transaction.
 */
int audit_write_tx(struct db_conn *conn, struct rpc_ctx *ctx, const struct audit_event *ev,
                   struct mon_error *err) MON_MUST_CHECK;

struct audit_writer;

/* A background writer for refused calls, with a bounded queue. */
int audit_writer_create(struct db_pool *pool, struct audit_writer **out, struct mon_error *err) MON_MUST_CHECK;
void audit_writer_destroy(struct audit_writer *w); /* writes what is queued, then stops */

/* An rpc_deny_fn: arg is the writer. Never blocks; counts what it must drop past the queue bound. */
void audit_on_deny(void *arg, const struct rpc_auth_request *req, const struct rpc_identity *who, int code,
                   const char *message);

#endif
