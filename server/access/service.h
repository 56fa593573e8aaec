/*
 * AccessService (proto/monitoring/v1/access.proto): identity
 * administration over the API: callers, their API keys and the caller's own
 * identity, each change written with its audit event in one transaction.
 */
#ifndef MON_SERVER_ACCESS_SERVICE_H
#define MON_SERVER_ACCESS_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "rpc/server.h"
#include "util/error.h"

/*
 * What AccessService's handlers work with: rpc_ctx_user() of every one of
 * them, read through access_service_of. The app owns it; pool must outlive
 * the RPC server.
 */
struct access_service {
	struct db_pool *pool;
	bool is_failing_after_write; /* test failpoint access.after_write, set by access_service_bind */
};

/* The service of an AccessService call. */
static inline const struct access_service *access_service_of(struct rpc_ctx *ctx)
{
	return rpc_ctx_user(ctx);
}

/*
 * Binds monitoring.v1.AccessService's handlers to server (before
 * rpc_server_start) with svc as their user pointer; they run on the worker
 * pool and use svc->pool for their transactions. Reads the test-only
 * environment variable MONITORD_FAILPOINTS once, here (see service.c).
 * Returns 0 or the binding's error.
 */
int access_service_bind(struct rpc_server *server, struct access_service *svc, struct mon_error *err) MON_MUST_CHECK;

/*
 * Pure checks, unit-tested. Each returns 0 or MON_EINVAL with a message
 * that starts with field.
 */

/* A new caller id: 1-50 characters of [a-z0-9._-]. */
int access_check_new_caller_id(const char *field, const char *id, struct mon_error *err) MON_MUST_CHECK;

/*
 * An e-mail address, ASCII: up to 255 bytes, one '@', a local part of
 * letters, digits and !#$%&'*+/=?^_`{|}~.- (no leading, trailing or double
 * dot), and a domain of at least two dot-separated labels of letters,
 * digits and '-' (not at a label's ends).
 */
int access_check_email(const char *field, const char *email, struct mon_error *err) MON_MUST_CHECK;

/* Free text: at most max_bytes of valid UTF-8 without control characters; empty allowed unless is_required. */
int access_check_text(const char *field, const char *text, size_t max_bytes, bool is_required,
                      struct mon_error *err) MON_MUST_CHECK;

/*
 * Page tokens (AIP-158): opaque base64url text binding a position to the
 * filters it was made for. access_page_token_make writes the token for
 * filters (any text that identifies the request's filters) and cursor
 * (the position: no '|' allowed) into out; access_page_token_read checks
 * that token was made for the same filters and copies its cursor into
 * cursor_out, or returns MON_EINVAL ("page_token: does not match the
 * request" or "page_token: malformed").
 */
#define ACCESS_PAGE_TOKEN_MAX 256
int access_page_token_make(const char *filters, const char *cursor, char out[ACCESS_PAGE_TOKEN_MAX],
                           struct mon_error *err) MON_MUST_CHECK;
int access_page_token_read(const char *token, const char *filters, char *cursor_out, size_t cursor_len,
                           struct mon_error *err) MON_MUST_CHECK;

#endif
