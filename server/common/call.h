/*
 * What every handler does the same way around its work: one transaction per
 * call bounded by the call's deadline, and the answer when a response
 * outgrows the call's memory cap. One copy here, so that the services
 * cannot drift apart.
 */
#ifndef MON_SERVER_COMMON_CALL_H
#define MON_SERVER_COMMON_CALL_H

#include <stdbool.h>

#include "common/idem.h"
#include "db/db.h"
#include "rpc/rpc.h"
#include "util/error.h"

/*
 * Runs fn in one transaction on pool, bounded by the call's remaining
 * deadline; on failure fails the call (rpc_fail) with the error and
 * returns its code. For reads of more than one statement: a handler that
 * changes state uses svc_run_change, or its request's idempotency key
 * would be ignored.
 */
int svc_run_tx(struct rpc_ctx *ctx, struct db_pool *pool, db_tx_fn fn, void *arg) MON_MUST_CHECK;

/*
 * Fills the call's response (resp, the handler's own response message)
 * from what fn left in arg. Runs inside the transaction, after fn
 * succeeded, and may run again when the transaction is retried. NULL for
 * a response with no fields.
 */
typedef int (*svc_reply_fn)(void *arg, ProtobufCMessage *resp, struct mon_error *err);

/*
 * svc_run_tx for an RPC that creates or changes state, with its
 * idempotency key (AIP-155; common/idem.h). When the request carries a
 * non-empty key (its request_id or idempotency_key field, found through
 * the request's descriptor), the transaction first claims the key for
 * (caller, method, key): a retry of a committed call gets that call's
 * response back and nothing runs; otherwise fn and reply run and the
 * response is stored with a digest of the request before COMMIT. A key
 * reused with a different request fails with INVALID_ARGUMENT naming the
 * field. A failed call stores nothing: its retry runs again. Without a key
 * it is svc_run_tx followed by reply. The handler returns after it without
 * touching its response: reply (or the replay) has filled it.
 */
int svc_run_change(struct rpc_ctx *ctx, struct db_pool *pool, db_tx_fn fn, svc_reply_fn reply,
                   void *arg) MON_MUST_CHECK;

/*
 * Clears, in a shallow copy of a response, the fields that must never be
 * stored (a secret shown once): the stored outcome of an idempotency key
 * is the response without them, so a replay answers without them too.
 */
typedef void (*svc_redact_fn)(ProtobufCMessage *copy);

/* svc_run_change whose stored outcome goes through redact first. */
int svc_run_change_redacted(struct rpc_ctx *ctx, struct db_pool *pool, db_tx_fn fn, svc_reply_fn reply,
                            svc_redact_fn redact, void *arg) MON_MUST_CHECK;

/*
 * The request's idempotency key, for a handler whose transaction is its
 * own (it calls svc_idem_claim_tx first in it and svc_idem_store_tx last):
 * *has_key false when the request carries none; a key that is too long or
 * not UTF-8 fails the call (INVALID_ARGUMENT naming the field).
 */
int svc_change_key(struct rpc_ctx *ctx, struct svc_idem *out, bool *has_key) MON_MUST_CHECK;

/*
 * For a handler with slow work before its change that a replay should not
 * repeat (RunHealthCheck's probe): when the request's key already has a
 * committed outcome, fills the call's response with it and sets
 * *is_replay; the handler then returns 0 at once. Otherwise (no key, or
 * none stored yet) *is_replay is false and the handler goes on to
 * svc_run_change, which claims the key as usual. A key reused with a
 * different request fails the call.
 */
int svc_replay_early(struct rpc_ctx *ctx, struct db_pool *pool, bool *is_replay) MON_MUST_CHECK;

/*
 * Like svc_run_tx for a read of one statement: fn runs it in autocommit
 * (db_read_run), one round trip, bounded by the call's remaining deadline.
 */
int svc_run_read(struct rpc_ctx *ctx, struct db_pool *pool, db_tx_fn fn, void *arg) MON_MUST_CHECK;

/* A response that outgrew the call's memory cap: MON_ENOMEM in err, or failing the call. */
int svc_fail_nomem(struct mon_error *err);
int svc_nomem(struct rpc_ctx *ctx);

#endif
