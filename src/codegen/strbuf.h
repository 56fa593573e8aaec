/*
 * A growable, NUL-terminated text buffer for the code generator. Every
 * buffer has a hard cap (default 64 MiB) so that a hostile or broken input
 * cannot make the generator allocate without bound. Once an append fails,
 * the buffer stays failed and later appends are ignored: emitters check
 * sb_failed once at the end instead of after every line.
 */
#ifndef MON_CODEGEN_STRBUF_H
#define MON_CODEGEN_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

#define SB_DEFAULT_CAP ((size_t)64 << 20)

struct strbuf {
	char *data; /* NUL-terminated when len > 0; NULL before the first append */
	size_t len;
	size_t alloc;
	size_t cap;  /* hard limit on len; 0 means SB_DEFAULT_CAP */
	bool failed; /* an append hit the cap or ran out of memory */
};

#define STRBUF_INIT                                                                                                    \
	{                                                                                                              \
		NULL, 0, 0, 0, false                                                                                   \
	}

void sb_append(struct strbuf *sb, const char *s);
void sb_append_n(struct strbuf *sb, const char *s, size_t n);
void sb_append_c(struct strbuf *sb, char c);
void sb_printf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The text so far ("" when empty); owned by sb. */
const char *sb_str(const struct strbuf *sb);

/* True when an append failed; the text is then incomplete. */
bool sb_failed(const struct strbuf *sb);

/*
 * Hands the text over to the caller (free with free) and resets sb.
 * Returns NULL when an append failed or memory ran out.
 */
char *sb_take(struct strbuf *sb);

/* Frees the text; sb may be reused afterwards. */
void sb_release(struct strbuf *sb);

#endif
