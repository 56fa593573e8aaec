/*
 * The generator's text buffer: appends with a hard cap and a sticky failure
 * flag (see strbuf.h).
 */
#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool grow(struct strbuf *sb, size_t extra)
{
	size_t cap = sb->cap ? sb->cap : SB_DEFAULT_CAP;

	if (sb->failed)
		return false;
	if (extra > cap || sb->len > cap - extra) {
		sb->failed = true;
		return false;
	}
	size_t need = sb->len + extra + 1;
	if (need <= sb->alloc)
		return true;
	size_t n = sb->alloc ? sb->alloc : 256;
	while (n < need)
		n *= 2;
	char *p = realloc(sb->data, n);
	if (p == NULL) {
		sb->failed = true;
		return false;
	}
	sb->data = p;
	sb->alloc = n;
	return true;
}

void sb_append_n(struct strbuf *sb, const char *s, size_t n)
{
	if (!grow(sb, n))
		return;
	memcpy(sb->data + sb->len, s, n);
	sb->len += n;
	sb->data[sb->len] = '\0';
}

void sb_append(struct strbuf *sb, const char *s)
{
	sb_append_n(sb, s, strlen(s));
}

void sb_append_c(struct strbuf *sb, char c)
{
	sb_append_n(sb, &c, 1);
}

void sb_printf(struct strbuf *sb, const char *fmt, ...)
{
	va_list ap;
	char small[256];

	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0) {
		sb->failed = true;
		return;
	}
	if ((size_t)n < sizeof(small)) {
		sb_append_n(sb, small, (size_t)n);
		return;
	}
	if (!grow(sb, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	sb->len += (size_t)n;
}

const char *sb_str(const struct strbuf *sb)
{
	return sb->data ? sb->data : "";
}

bool sb_failed(const struct strbuf *sb)
{
	return sb->failed;
}

char *sb_take(struct strbuf *sb)
{
	char *s = NULL;

	if (!sb->failed) {
		s = sb->data ? sb->data : calloc(1, 1);
		sb->data = NULL;
	}
	sb_release(sb);
	return s;
}

void sb_release(struct strbuf *sb)
{
	free(sb->data);
	sb->data = NULL;
	sb->len = 0;
	sb->alloc = 0;
	sb->failed = false;
}
