/*
 * Arena allocator; see arena.h. Blocks are chained and grow geometrically
 * (4 KiB first, then up to 1 MiB), large requests get a block of their own.
 * The cap counts bytes handed out, so it bounds what a request can make us
 * allocate regardless of block slack.
 */
#include "util/arena.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 16
#define ARENA_FIRST_BLOCK 4096
#define ARENA_MAX_BLOCK (1024 * 1024)
#define ARENA_DEFAULT_CAP ((size_t)64 * 1024 * 1024)

struct arena_block {
	struct arena_block *next;
	size_t size;
	size_t used;
	_Alignas(ARENA_ALIGN) unsigned char data[];
};

struct arena {
	struct arena_block *head;
	size_t cap;
	size_t used;
	size_t next_block_size;
};

struct arena *arena_create(size_t cap_bytes)
{
	struct arena *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return NULL;
	a->cap = cap_bytes ? cap_bytes : ARENA_DEFAULT_CAP;
	a->next_block_size = ARENA_FIRST_BLOCK;
	return a;
}

void arena_destroy(struct arena *a)
{
	if (a == NULL)
		return;
	struct arena_block *b = a->head;
	while (b != NULL) {
		struct arena_block *next = b->next;
		free(b);
		b = next;
	}
	free(a);
}

static struct arena_block *block_new(size_t size)
{
	struct arena_block *b = malloc(sizeof(*b) + size);
	if (b == NULL)
		return NULL;
	b->next = NULL;
	b->size = size;
	b->used = 0;
	return b;
}

void *arena_alloc(struct arena *a, size_t size)
{
	if (a == NULL)
		return NULL;
	if (size == 0)
		size = 1;
	if (size > SIZE_MAX - ARENA_ALIGN)
		return NULL;
	size_t rounded = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	if (rounded > a->cap - a->used)
		return NULL;

	struct arena_block *b = a->head;
	if (b == NULL || b->size - b->used < rounded) {
		size_t bsize = a->next_block_size;
		if (rounded > bsize / 2) {
			/* A big request gets its own block behind the current one,
			 * so the current block's free space stays usable. */
			struct arena_block *big = block_new(rounded);
			if (big == NULL)
				return NULL;
			big->used = rounded;
			if (b != NULL) {
				big->next = b->next;
				b->next = big;
			} else {
				a->head = big;
			}
			a->used += rounded;
			return big->data;
		}
		b = block_new(bsize);
		if (b == NULL)
			return NULL;
		b->next = a->head;
		a->head = b;
		if (a->next_block_size < ARENA_MAX_BLOCK)
			a->next_block_size *= 2;
	}
	void *p = b->data + b->used;
	b->used += rounded;
	a->used += rounded;
	return p;
}

void *arena_calloc(struct arena *a, size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size)
		return NULL;
	void *p = arena_alloc(a, n * size);
	if (p != NULL)
		memset(p, 0, n * size);
	return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t len)
{
	if (s == NULL || len == SIZE_MAX)
		return NULL;
	char *p = arena_alloc(a, len + 1);
	if (p == NULL)
		return NULL;
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

char *arena_strdup(struct arena *a, const char *s)
{
	if (s == NULL)
		return NULL;
	return arena_strndup(a, s, strlen(s));
}

char *arena_vprintf(struct arena *a, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return NULL;
	char *p = arena_alloc(a, (size_t)n + 1);
	if (p == NULL)
		return NULL;
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	return p;
}

char *arena_printf(struct arena *a, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *p = arena_vprintf(a, fmt, ap);
	va_end(ap);
	return p;
}

void arena_str_init(struct arena_str *s, struct arena *a)
{
	s->a = a;
	s->data = NULL;
	s->len = 0;
	s->alloc = 0;
	s->is_failed = false;
}

/* Makes room for extra more bytes and the NUL; false (and failed) past the cap. */
static bool str_reserve(struct arena_str *s, size_t extra)
{
	if (s->is_failed)
		return false;
	if (extra > SIZE_MAX / 4 - s->len) {
		s->is_failed = true;
		return false;
	}
	size_t need = s->len + extra + 1;
	if (need <= s->alloc)
		return true;
	size_t alloc = s->alloc ? s->alloc : 64;
	while (alloc < need)
		alloc *= 2;
	char *p = arena_alloc(s->a, alloc);
	if (p == NULL) {
		s->is_failed = true;
		return false;
	}
	if (s->data != NULL)
		memcpy(p, s->data, s->len + 1);
	else
		p[0] = '\0';
	s->data = p;
	s->alloc = alloc;
	return true;
}

void arena_str_append(struct arena_str *s, const char *text)
{
	if (text == NULL) {
		s->is_failed = true;
		return;
	}
	size_t n = strlen(text);
	if (!str_reserve(s, n))
		return;
	memcpy(s->data + s->len, text, n + 1);
	s->len += n;
}

/* Formats into the room left when it fits (the usual case), so the text is formatted once. */
void arena_str_printf(struct arena_str *s, const char *fmt, ...)
{
	if (s->is_failed)
		return;
	size_t room = s->alloc - s->len;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(s->data != NULL ? s->data + s->len : NULL, s->data != NULL ? room : 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		s->is_failed = true;
		return;
	}
	if ((size_t)n < room) {
		s->len += (size_t)n;
		return;
	}
	/* did not fit: what was written past len is overwritten below */
	if (!str_reserve(s, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(s->data + s->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	s->len += (size_t)n;
}

const char *arena_str_get(const struct arena_str *s)
{
	if (s->is_failed)
		return NULL;
	return s->data ? s->data : "";
}

size_t arena_used(const struct arena *a)
{
	return a ? a->used : 0;
}

void arena_set_next_block(struct arena *a, size_t bytes)
{
	if (a != NULL && bytes >= 64 && bytes <= ARENA_MAX_BLOCK)
		a->next_block_size = bytes;
}

static void *pb_alloc(void *data, size_t size)
{
	return arena_alloc(data, size);
}

static void pb_free(void *data, void *ptr)
{
	(void)data;
	(void)ptr; /* freed with the arena */
}

ProtobufCAllocator arena_protobuf_allocator(struct arena *a)
{
	ProtobufCAllocator al = {.alloc = pb_alloc, .free = pb_free, .allocator_data = a};
	return al;
}
