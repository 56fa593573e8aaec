/* Page sizes, page tokens and key cursors of the List RPCs (see page.h). */
#include "common/page.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/call.h"

int svc_page_size(int32_t requested, int def, int max, int *out, struct mon_error *err)
{
	if (requested < 0)
		return mon_error_set(err, MON_EINVAL, "page_size: must not be negative");
	*out = requested == 0 ? def : requested > max ? max : requested;
	return 0;
}

/* 16 hex digits naming the filters a token was made for. */
static void filters_digest(const char *filters, char out[17])
{
	unsigned char h[16];
	crypto_generichash(h, sizeof(h), (const unsigned char *)filters, strlen(filters), NULL, 0);
	sodium_bin2hex(out, 17, h, 8);
}

int svc_page_token_make(const char *filters, const char *cursor, char *out, size_t out_len, struct mon_error *err)
{
	char digest[17];
	if (out_len > 0)
		out[0] = '\0';
	if (strchr(cursor, '|') != NULL)
		return mon_error_set(err, MON_EINTERNAL, "page cursor contains '|'");
	filters_digest(filters, digest);
	size_t plain_len = strlen(cursor) + 19; /* "1|" digest "|" cursor */
	if (sodium_base64_ENCODED_LEN(plain_len, sodium_base64_VARIANT_URLSAFE_NO_PADDING) > out_len)
		return mon_error_set(err, MON_EINTERNAL, "page token too long");
	char *plain = malloc(plain_len + 1);
	if (plain == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory making a page token");
	snprintf(plain, plain_len + 1, "1|%s|%s", digest, cursor);
	sodium_bin2base64(out, out_len, (const unsigned char *)plain, plain_len,
	                  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	free(plain);
	return 0;
}

int svc_page_token_read(const char *token, const char *filters, char *cursor_out, size_t cursor_len,
                        struct mon_error *err)
{
	size_t token_len = strlen(token), n = 0;
	char digest[17];
	/* base64 decodes to at most 3 bytes per 4 characters */
	size_t cap = token_len / 4 * 3 + 3;
	unsigned char *plain = malloc(cap + 1);
	if (plain == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory reading a page token");
	int rc = 0;
	if (sodium_base642bin(plain, cap, token, token_len, NULL, &n, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) !=
	    0) {
		rc = mon_error_set(err, MON_EINVAL, "page_token: malformed");
		goto out;
	}
	plain[n] = '\0';
	const char *text = (const char *)plain;
	if (n < 20 || memchr(plain, '\0', n) != NULL || strncmp(text, "1|", 2) != 0 || text[18] != '|') {
		rc = mon_error_set(err, MON_EINVAL, "page_token: malformed");
		goto out;
	}
	filters_digest(filters, digest);
	if (memcmp(text + 2, digest, 16) != 0) {
		rc = mon_error_set(err, MON_EINVAL, "page_token: does not match the request");
		goto out;
	}
	if (strlen(text + 19) >= cursor_len) {
		rc = mon_error_set(err, MON_EINVAL, "page_token: malformed");
		goto out;
	}
	snprintf(cursor_out, cursor_len, "%s", text + 19);
out:
	free(plain);
	return rc;
}

int svc_page_token_make_in(struct arena *a, const char *filters, const char *cursor, size_t token_max, char **out,
                           struct mon_error *err)
{
	*out = arena_alloc(a, token_max);
	if (*out == NULL)
		return svc_fail_nomem(err);
	return svc_page_token_make(filters, cursor, *out, token_max, err);
}

int svc_page_token_read_in(struct arena *a, const char *token, const char *filters, size_t token_max, char **cursor_out,
                           struct mon_error *err)
{
	/* The cursor is shorter than its base64 token, so the token's length bounds it. */
	size_t len = strlen(token) + 1;
	if (len > token_max)
		return mon_error_set(err, MON_EINVAL, "page_token: malformed");
	*cursor_out = arena_alloc(a, len);
	if (*cursor_out == NULL)
		return svc_fail_nomem(err);
	return svc_page_token_read(token, filters, *cursor_out, len, err);
}

char *svc_key_cursor_make(struct arena *a, const char *key, const char *id)
{
	size_t n = strlen(key), id_n = strlen(id);
	char *cursor = arena_alloc(a, n * 2 + id_n + 2);
	if (cursor == NULL)
		return NULL;
	sodium_bin2hex(cursor, n * 2 + 1, (const unsigned char *)key, n);
	snprintf(cursor + n * 2, id_n + 2, ",%s", id);
	return cursor;
}

int svc_key_cursor_read(struct arena *a, const char *cursor, size_t key_max, const char **key_out, const char **id_out,
                        struct mon_error *err)
{
	const char *comma = strchr(cursor, ',');
	size_t hex_n = comma ? (size_t)(comma - cursor) : 0;
	if (comma == NULL || hex_n % 2 != 0 || (key_max > 0 && hex_n / 2 > key_max))
		return mon_error_set(err, MON_EINVAL, "page_token: malformed");
	char *key = arena_alloc(a, hex_n / 2 + 1);
	size_t bin_n = 0;
	if (key == NULL)
		return svc_fail_nomem(err);
	if (sodium_hex2bin((unsigned char *)key, hex_n / 2 + 1, cursor, hex_n, NULL, &bin_n, NULL) != 0 ||
	    bin_n != hex_n / 2 || memchr(key, '\0', bin_n) != NULL)
		return mon_error_set(err, MON_EINVAL, "page_token: malformed");
	key[bin_n] = '\0';
	*key_out = key;
	*id_out = arena_strdup(a, comma + 1);
	return *id_out ? 0 : svc_fail_nomem(err);
}

int svc_key_token_make(struct arena *a, const char *filters, const char *key, const char *id, size_t token_max,
                       char **out, struct mon_error *err)
{
	char *cursor = svc_key_cursor_make(a, key, id);
	if (cursor == NULL)
		return svc_fail_nomem(err);
	return svc_page_token_make_in(a, filters, cursor, token_max, out, err);
}

int svc_key_token_read(struct arena *a, const char *token, const char *filters, size_t token_max, size_t key_max,
                       const char **key_out, const char **id_out, struct mon_error *err)
{
	char *cursor = NULL;
	int rc = svc_page_token_read_in(a, token, filters, token_max, &cursor, err);
	if (rc == 0)
		rc = svc_key_cursor_read(a, cursor, key_max, key_out, id_out, err);
	return rc;
}
