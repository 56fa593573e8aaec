/* Page tokens and timestamps shared by the services; see common.h. */
#include "services/common.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

/* 16 hex digits naming the filters a token was made for. */
static void filters_digest(const char *filters, char out[17])
{
	unsigned char h[16];
	crypto_generichash(h, sizeof(h), (const unsigned char *)filters, strlen(filters), NULL, 0);
	sodium_bin2hex(out, 17, h, 8);
}

int svc_page_token_make(const char *filters, const char *cursor, char *out, size_t out_len, struct mon_error *err)
{
	char plain[2048];
	char digest[17];
	if (out_len > 0)
		out[0] = '\0';
	if (strchr(cursor, '|') != NULL)
		return mon_error_set(err, MON_EINTERNAL, "page cursor contains '|'");
	filters_digest(filters, digest);
	int n = snprintf(plain, sizeof(plain), "1|%s|%s", digest, cursor);
	if (n < 0 || (size_t)n >= sizeof(plain) ||
	    sodium_base64_ENCODED_LEN((size_t)n, sodium_base64_VARIANT_URLSAFE_NO_PADDING) > out_len)
		return mon_error_set(err, MON_EINTERNAL, "page token too long");
	sodium_bin2base64(out, out_len, (const unsigned char *)plain, (size_t)n,
	                  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return 0;
}

int svc_page_token_read(const char *token, const char *filters, char *cursor_out, size_t cursor_len,
                        struct mon_error *err)
{
	unsigned char plain[2048];
	size_t n = 0;
	char digest[17];
	if (strlen(token) >= sizeof(plain) ||
	    sodium_base642bin(plain, sizeof(plain) - 1, token, strlen(token), NULL, &n, NULL,
	                      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
		return mon_error_set(err, MON_EINVAL, "page_token: malformed");
	plain[n] = '\0';
	const char *text = (const char *)plain;
	if (n < 20 || memchr(plain, '\0', n) != NULL || strncmp(text, "1|", 2) != 0 || text[18] != '|')
		return mon_error_set(err, MON_EINVAL, "page_token: malformed");
	filters_digest(filters, digest);
	if (memcmp(text + 2, digest, 16) != 0)
		return mon_error_set(err, MON_EINVAL, "page_token: does not match the request");
	if (strlen(text + 19) >= cursor_len)
		return mon_error_set(err, MON_EINVAL, "page_token: malformed");
	snprintf(cursor_out, cursor_len, "%s", text + 19);
	return 0;
}

int svc_time_ms(const char *field, const Google__Protobuf__Timestamp *ts, int64_t *out, struct mon_error *err)
{
	if (ts->nanos < 0 || ts->nanos > 999999999 || ts->seconds < 0 || ts->seconds > SVC_TIMESTAMP_SECONDS_MAX)
		return mon_error_set(err, MON_EINVAL, "%s: not a valid time", field);
	*out = ts->seconds * 1000 + ts->nanos / 1000000;
	return 0;
}

int64_t svc_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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
