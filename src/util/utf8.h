/*
 * The one UTF-8 checker of the project. Well-formed UTF-8 here is RFC
 * 3629's: no overlong encoding, no surrogate (U+D800-U+DFFF), nothing above
 * U+10FFFF, no sequence cut short, and no NUL (PostgreSQL's text cannot hold
 * one). The RPC runtime checks every string field of every request with it
 * (src/rpc/validate.c); services build their field checks on it
 * (server/common/text.h). Which control characters are refused is the
 * caller's choice.
 */
#ifndef MON_UTIL_UTF8_H
#define MON_UTIL_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Controls a caller refuses (flags of utf8_scan). */
#define UTF8_NO_C0 1u                              /* U+0000-U+001F and U+007F */
#define UTF8_NO_C1 2u                              /* U+0080-U+009F */
#define UTF8_NO_CONTROLS (UTF8_NO_C0 | UTF8_NO_C1) /* both */

/*
 * The length (1-4) of the well-formed UTF-8 sequence at p, of which len
 * bytes are readable, with its code point in *cp (may be NULL); 0 when p
 * does not start one: a NUL, a stray continuation byte, a byte that never
 * starts a sequence, an overlong encoding, a surrogate, a code point above
 * U+10FFFF, or a sequence that len cuts short. Reads bytes in order and
 * stops at the first that does not fit.
 */
size_t utf8_decode(const unsigned char *p, size_t len, uint32_t *cp);

enum utf8_result {
	UTF8_OK = 0,
	UTF8_INVALID, /* not well-formed UTF-8 (a NUL included) */
	UTF8_CONTROL, /* well-formed, but with a control character flags refuse */
};

/*
 * Checks the len bytes at text (which need not be NUL-terminated) and stops
 * at the first problem, whose byte offset goes to *bad_at (may be NULL). On
 * UTF8_OK the number of characters goes to *chars_out (may be NULL).
 */
enum utf8_result utf8_scan(const char *text, size_t len, unsigned flags, size_t *chars_out, size_t *bad_at);

#endif
