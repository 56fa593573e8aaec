/*
 * Paging as every List RPC of monitoring.v1 does it (AIP-158): the page
 * size a request asks for, within the RPC's default and maximum, and page
 * tokens: opaque text that binds a position (the cursor) to the filters the
 * token was made for, so a token cannot be replayed against another query.
 */
#ifndef MON_SERVER_COMMON_PAGE_H
#define MON_SERVER_COMMON_PAGE_H

#include <stddef.h>
#include <stdint.h>

#include "util/arena.h"
#include "util/error.h"

/*
 * The page size to use for requested: def when 0, max when above max, else
 * requested. MON_EINVAL "page_size: must not be negative" below 0.
 */
int svc_page_size(int32_t requested, int def, int max, int *out, struct mon_error *err) MON_MUST_CHECK;

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

/*
 * The same with the text in the call's arena a: a token of at most
 * token_max bytes (NUL included) goes to *out; a token longer than that is
 * "page_token: malformed", and its cursor goes to *cursor_out. MON_ENOMEM
 * ("response larger than the call's memory cap") when a is full.
 */
int svc_page_token_make_in(struct arena *a, const char *filters, const char *cursor, size_t token_max, char **out,
                           struct mon_error *err) MON_MUST_CHECK;
int svc_page_token_read_in(struct arena *a, const char *token, const char *filters, size_t token_max, char **cursor_out,
                           struct mon_error *err) MON_MUST_CHECK;

/*
 * A cursor that orders by a text key, then an id: "<hex of key>,<id>" (hex,
 * so the key may hold any byte, ',' and '|' included). svc_key_cursor_make
 * returns it in a (NULL when a is full); svc_key_cursor_read splits cursor
 * into a (a key of at most key_max bytes; 0: any), or returns MON_EINVAL
 * "page_token: malformed". The caller checks the id as its domain wants.
 */
char *svc_key_cursor_make(struct arena *a, const char *key, const char *id);
int svc_key_cursor_read(struct arena *a, const char *cursor, size_t key_max, const char **key_out, const char **id_out,
                        struct mon_error *err) MON_MUST_CHECK;

/*
 * A page token over a key cursor, in a: svc_key_token_make makes the token
 * for filters, key and id; svc_key_token_read reads one back (a key of at
 * most key_max bytes; 0: any). Errors as svc_page_token_*_in and
 * svc_key_cursor_read; the caller checks the id as its domain wants.
 */
int svc_key_token_make(struct arena *a, const char *filters, const char *key, const char *id, size_t token_max,
                       char **out, struct mon_error *err) MON_MUST_CHECK;
int svc_key_token_read(struct arena *a, const char *token, const char *filters, size_t token_max, size_t key_max,
                       const char **key_out, const char **id_out, struct mon_error *err) MON_MUST_CHECK;

#endif
