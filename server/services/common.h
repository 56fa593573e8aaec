/*
 * What every service of monitoring.v1 does the same way: page tokens
 * (AIP-158: opaque, tied to the filters they were made for) and the
 * conversion of google.protobuf.Timestamp to milliseconds. One copy here,
 * so that the services cannot drift apart.
 */
#ifndef MON_SERVER_SERVICES_COMMON_H
#define MON_SERVER_SERVICES_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "rpc/rpc.h"
#include "util/error.h"

/* The latest time the API accepts: 9999-12-31T23:59:59Z. */
#define SVC_TIMESTAMP_SECONDS_MAX INT64_C(253402300799)

/*
 * A page token is "1|<16 hex digits of BLAKE2b of filters>|<cursor>" in
 * unpadded base64url. svc_page_token_make writes the token for filters (any
 * text that identifies the request's filters) and cursor (no '|') into out
 * (out_len bytes, NUL included); MON_EINTERNAL when it does not fit.
 * svc_page_token_read checks that token was made for the same filters and
 * copies its cursor into cursor_out; MON_EINVAL "page_token: malformed" or
 * "page_token: does not match the request" otherwise.
 */
int svc_page_token_make(const char *filters, const char *cursor, char *out, size_t out_len,
                        struct mon_error *err) MON_MUST_CHECK;
int svc_page_token_read(const char *token, const char *filters, char *cursor_out, size_t cursor_len,
                        struct mon_error *err) MON_MUST_CHECK;

/* A timestamp to milliseconds since the epoch; MON_EINVAL naming field when out of range. */
int svc_time_ms(const char *field, const Google__Protobuf__Timestamp *ts, int64_t *out,
                struct mon_error *err) MON_MUST_CHECK;

/* The wall clock in milliseconds since the epoch. */
int64_t svc_wall_ms(void);

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
