/*
 * What every handler does the same way around its work: one transaction per
 * call bounded by the call's deadline, and the answer when a response
 * outgrows the call's memory cap. One copy here, so that the services
 * cannot drift apart.
 */
#ifndef MON_SERVER_COMMON_CALL_H
#define MON_SERVER_COMMON_CALL_H

#include "db/db.h"
#include "rpc/rpc.h"
#include "util/error.h"

/*
 * Runs fn in one transaction on pool, bounded by the call's remaining
 * deadline; on failure fails the call (rpc_fail) with the error and
 * returns its code.
 */
int svc_run_tx(struct rpc_ctx *ctx, struct db_pool *pool, db_tx_fn fn, void *arg) MON_MUST_CHECK;

/*
 * Like svc_run_tx for a read of one statement: fn runs it in autocommit
 * (db_read_run), one round trip, bounded by the call's remaining deadline.
 */
int svc_run_read(struct rpc_ctx *ctx, struct db_pool *pool, db_tx_fn fn, void *arg) MON_MUST_CHECK;

/* A response that outgrew the call's memory cap: MON_ENOMEM in err, or failing the call. */
int svc_fail_nomem(struct mon_error *err);
int svc_nomem(struct rpc_ctx *ctx);

#endif
