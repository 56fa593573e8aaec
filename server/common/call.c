/* The transaction (or single read) of a call and the out-of-memory answers (see call.h). */
#include "common/call.h"

/* svc_run_tx and svc_run_read: run (db_tx_run or db_read_run) bounded by the call's deadline. */
static int run_bounded(struct rpc_ctx *ctx, struct db_pool *pool,
                       int (*run)(struct db_pool *, int64_t, db_tx_fn, void *, struct mon_error *), db_tx_fn fn,
                       void *arg)
{
	struct mon_error err = {0};
	int64_t left_ms = rpc_ctx_remaining_ms(ctx);
	if (left_ms <= 0)
		return rpc_fail(ctx, MON_EDEADLINE, "deadline exceeded before the transaction started");
	int rc = run(pool, left_ms, fn, arg, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg[0] ? err.msg : mon_error_name(rc));
	return 0;
}

int svc_run_tx(struct rpc_ctx *ctx, struct db_pool *pool, db_tx_fn fn, void *arg)
{
	return run_bounded(ctx, pool, db_tx_run, fn, arg);
}

int svc_run_read(struct rpc_ctx *ctx, struct db_pool *pool, db_tx_fn fn, void *arg)
{
	return run_bounded(ctx, pool, db_read_run, fn, arg);
}

int svc_fail_nomem(struct mon_error *err)
{
	return mon_error_set(err, MON_ENOMEM, "response larger than the call's memory cap");
}

int svc_nomem(struct rpc_ctx *ctx)
{
	return rpc_fail(ctx, MON_ENOMEM, "response larger than the call's memory cap");
}
