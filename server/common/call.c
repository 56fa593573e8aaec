/* The transaction of a call and the out-of-memory answers (see call.h). */
#include "common/call.h"

int svc_run_tx(struct rpc_ctx *ctx, struct db_pool *pool, db_tx_fn fn, void *arg)
{
	struct mon_error err = {0};
	int64_t left_ms = rpc_ctx_remaining_ms(ctx);
	if (left_ms <= 0)
		return rpc_fail(ctx, MON_EDEADLINE, "deadline exceeded before the transaction started");
	int rc = db_tx_run(pool, left_ms, fn, arg, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg[0] ? err.msg : mon_error_name(rc));
	return 0;
}

int svc_fail_nomem(struct mon_error *err)
{
	return mon_error_set(err, MON_ENOMEM, "response larger than the call's memory cap");
}

int svc_nomem(struct rpc_ctx *ctx)
{
	return rpc_fail(ctx, MON_ENOMEM, "response larger than the call's memory cap");
}
