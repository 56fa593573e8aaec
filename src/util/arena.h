/*
 * Arena allocator: one per RPC call (and per other short-lived unit of work).
 * Allocations are bump-pointer from chained blocks and are freed all at once
 * by arena_destroy. Every arena has a hard cap; an allocation past it
 * returns NULL, so a hostile request cannot grow memory without bound.
 */
#ifndef MON_UTIL_ARENA_H
#define MON_UTIL_ARENA_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "util/error.h"

struct arena;

/*
 * Creates an arena whose total allocations may not exceed cap_bytes
 * (0 means 64 MiB). Returns NULL when out of memory. The caller owns the
 * arena and frees it with arena_destroy.
 */
struct arena *arena_create(size_t cap_bytes);

/* Frees every block of the arena; accepts NULL. */
void arena_destroy(struct arena *a);

/* Returns size bytes aligned to 16, or NULL past the cap. Memory is owned by the arena. */
void *arena_alloc(struct arena *a, size_t size);

/* As arena_alloc, zero-filled; n * size is checked for overflow. */
void *arena_calloc(struct arena *a, size_t n, size_t size);

/* Copies s (NULL gives NULL) into the arena. */
char *arena_strdup(struct arena *a, const char *s);

/* Copies len bytes of s and a terminating NUL into the arena. */
char *arena_strndup(struct arena *a, const char *s, size_t len);

/* Formats into a string owned by the arena; NULL past the cap. */
char *arena_printf(struct arena *a, const char *fmt, ...) MON_PRINTF(2, 3);
char *arena_vprintf(struct arena *a, const char *fmt, va_list ap) MON_PRINTF(2, 0);

/*
 * A string grown in an arena, for SQL fragments, array literals and
 * messages built piece by piece: no fixed buffer, so nothing is truncated.
 * An append that would pass the arena's cap fails and the failure sticks;
 * later appends do nothing and arena_str_get gives NULL, so one check at
 * the end catches it and a half-built text is never used. Growth doubles,
 * and each outgrown copy stays in the arena: at most about four times the
 * final length.
 */
struct arena_str {
	struct arena *a;
	char *data; /* NUL-terminated; NULL before the first append */
	size_t len;
	size_t alloc;
	bool is_failed;
};

/* Starts an empty string in a. */
void arena_str_init(struct arena_str *s, struct arena *a);

/* Appends text (NULL fails the string: nothing built from a NULL is ever used). */
void arena_str_append(struct arena_str *s, const char *text);

/* Appends formatted text. */
void arena_str_printf(struct arena_str *s, const char *fmt, ...) MON_PRINTF(2, 3);

/* The text ("" when nothing was appended), owned by the arena; NULL when an append failed. */
const char *arena_str_get(const struct arena_str *s);

/* Bytes handed out so far (what counts against the cap). */
size_t arena_used(const struct arena *a);

/*
 * Size of the next block the arena takes from malloc (default: 4 KiB for
 * the first, doubling up to 1 MiB). A smaller first block suits arenas that
 * live long and hold little, such as those of open streams.
 */
void arena_set_next_block(struct arena *a, size_t bytes);

/*
 * A protobuf-c allocator that allocates from the arena and never frees, for
 * unpacking a request or building a response that dies with the arena.
 */
ProtobufCAllocator arena_protobuf_allocator(struct arena *a);

#endif
