/*
 * Fuzz target: page tokens and key cursors (server/common/page.c). A page
 * token is a client's to send back and only hashed, not signed, so its
 * bytes and the cursor inside are untrusted. The input is split at the
 * first NUL into a token (or cursor) and filters text:
 * - read as a token for those filters, then as a key cursor;
 * - made into a token and a key token, which must read back to what went in.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/page.h"
#include "util/arena.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096 || sodium_init() < 0)
		return 0;
	char *text = malloc(size + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	const char *filters = text + strlen(text) < text + size ? text + strlen(text) + 1 : "";
	struct arena *a = arena_create(1u << 20);
	if (a == NULL) {
		free(text);
		return 0;
	}
	struct mon_error err;
	char cursor[512];
	if (svc_page_token_read(text, filters, cursor, sizeof(cursor), &err) == 0 && strlen(cursor) >= sizeof(cursor))
		abort();
	char *cur = NULL;
	if (svc_page_token_read_in(a, text, filters, 1024, &cur, &err) == 0 && strlen(cur) >= strlen(text))
		abort(); /* a cursor is shorter than its token */
	const char *key = NULL, *id = NULL;
	if (svc_key_cursor_read(a, text, 0, &key, &id, &err) == 0 && (key == NULL || id == NULL))
		abort();
	if (svc_key_cursor_read(a, text, 16, &key, &id, &err) == 0 && strlen(key) > 16)
		abort();
	if (svc_key_token_read(a, text, filters, 1024, 64, &key, &id, &err) == 0 && strlen(key) > 64)
		abort();

	/* What is made reads back the same. */
	char token[4096];
	if (strchr(text, '|') == NULL && svc_page_token_make(filters, text, token, sizeof(token), &err) == 0) {
		if (svc_page_token_read(token, filters, cursor, sizeof(cursor), &err) == 0 && strcmp(cursor, text) != 0)
			abort();
	}
	char *ktok = NULL;
	if (svc_key_token_make(a, filters, text, filters, 4096, &ktok, &err) == 0) {
		if (svc_key_token_read(a, ktok, filters, 4096, 0, &key, &id, &err) != 0 || strcmp(key, text) != 0 ||
		    strcmp(id, filters) != 0)
			abort();
	}
	arena_destroy(a);
	free(text);
	return 0;
}
