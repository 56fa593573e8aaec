/* The transaction (or single read) of a call and the out-of-memory answers (see call.h). */
#include "common/call.h"

#include <string.h>

#include "common/idem.h"

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

struct change {
	struct rpc_ctx *ctx;
	db_tx_fn fn;
	svc_reply_fn reply;
	svc_redact_fn redact;
	void *arg;
	ProtobufCMessage *resp;
	const struct svc_idem *key; /* NULL: the request has no key */
};

/* The change's transaction: claim the key (replay a committed outcome), run, reply, store the outcome. */
static int change_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct change *ch = arg;
	struct arena *a = rpc_ctx_arena(ch->ctx);
	bool is_replay = false;
	int rc = 0;
	if (ch->key != NULL && (rc = svc_idem_claim_tx(conn, ch->key, a, ch->resp, &is_replay, err)) != 0)
		return rc;
	if (is_replay)
		return 0;
	if ((rc = ch->fn(conn, ch->arg, err)) != 0)
		return rc;
	if (ch->resp != NULL && ch->reply != NULL) {
		/* A retried transaction fills the response again from scratch. */
		ch->resp->descriptor->message_init(ch->resp);
		if ((rc = ch->reply(ch->arg, ch->resp, err)) != 0)
			return rc;
	}
	if (ch->key == NULL)
		return 0;
	const ProtobufCMessage *stored = ch->resp;
	if (ch->redact != NULL) {
		size_t size = ch->resp->descriptor->sizeof_message;
		ProtobufCMessage *copy = arena_alloc(a, size);
		if (copy == NULL)
			return svc_fail_nomem(err);
		memcpy(copy, ch->resp, size);
		ch->redact(copy);
		stored = copy;
	}
	return svc_idem_store_tx(conn, ch->key, a, stored, err);
}

int svc_run_change(struct rpc_ctx *ctx, struct db_pool *pool, db_tx_fn fn, svc_reply_fn reply, void *arg)
{
	return svc_run_change_redacted(ctx, pool, fn, reply, NULL, arg);
}

int svc_run_change_redacted(struct rpc_ctx *ctx, struct db_pool *pool, db_tx_fn fn, svc_reply_fn reply,
                            svc_redact_fn redact, void *arg)
{
	struct change ch = {
	        .ctx = ctx, .fn = fn, .reply = reply, .redact = redact, .arg = arg, .resp = rpc_ctx_response(ctx)};
	struct svc_idem key;
	bool has_key = false;
	int rc = svc_change_key(ctx, &key, &has_key);
	if (rc != 0)
		return rc;
	if (has_key)
		ch.key = &key;
	return run_bounded(ctx, pool, db_tx_run, change_tx, &ch);
}

int svc_change_key(struct rpc_ctx *ctx, struct svc_idem *out, bool *has_key)
{
	*has_key = false;
	const ProtobufCMessage *req = rpc_ctx_request(ctx);
	const ProtobufCFieldDescriptor *field = req ? rpc_idem_key_field(req->descriptor) : NULL;
	const char *text = rpc_idem_key(req, field);
	if (text[0] == '\0' || rpc_ctx_response(ctx) == NULL)
		return 0;
	struct mon_error err = {0};
	if (svc_idem_check_key(field->name, text, &err) != 0 ||
	    svc_idem_digest(req, field, rpc_ctx_arena(ctx), out->digest, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	const struct rpc_identity *who = rpc_ctx_identity(ctx);
	out->caller_id = who != NULL ? who->caller_id : "";
	out->method = rpc_ctx_method(ctx);
	out->field = field->name;
	out->key = text;
	*has_key = true;
	return 0;
}

struct early {
	struct rpc_ctx *ctx;
	const struct svc_idem *key;
	bool is_found;
};

static int early_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct early *e = arg;
	return svc_idem_lookup_tx(conn, e->key, rpc_ctx_arena(e->ctx), rpc_ctx_response(e->ctx), &e->is_found, err);
}

int svc_replay_early(struct rpc_ctx *ctx, struct db_pool *pool, bool *is_replay)
{
	struct svc_idem key;
	bool has_key = false;
	*is_replay = false;
	int rc = svc_change_key(ctx, &key, &has_key);
	if (rc != 0 || !has_key)
		return rc;
	struct early e = {.ctx = ctx, .key = &key};
	if ((rc = svc_run_read(ctx, pool, early_tx, &e)) != 0)
		return rc;
	*is_replay = e.is_found;
	return 0;
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
