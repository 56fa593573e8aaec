/*
 * Text fields of requests: the one UTF-8 checker of the server and the
 * field check built on it. Well-formed UTF-8 here is RFC 3629's: no
 * overlong encoding, no surrogate (U+D800-U+DFFF), nothing above U+10FFFF,
 * no sequence cut short, and no NUL (PostgreSQL's text cannot hold one).
 * Which control characters a field refuses is the caller's choice.
 */
#ifndef MON_SERVER_COMMON_TEXT_H
#define MON_SERVER_COMMON_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

/* Controls a field refuses (flags of svc_utf8_scan and svc_check_text). */
#define SVC_TEXT_NO_C0 1u                                      /* U+0000-U+001F and U+007F */
#define SVC_TEXT_NO_C1 2u                                      /* U+0080-U+009F */
#define SVC_TEXT_NO_CONTROLS (SVC_TEXT_NO_C0 | SVC_TEXT_NO_C1) /* both */

/*
 * The length (1-4) of the well-formed UTF-8 sequence at p, of which len
 * bytes are readable, with its code point in *cp (may be NULL); 0 when p
 * does not start one: a NUL, a stray continuation byte, a byte that never
 * starts a sequence, an overlong encoding, a surrogate, a code point above
 * U+10FFFF, or a sequence that len cuts short. Reads bytes in order and
 * stops at the first that does not fit.
 */
size_t svc_utf8_decode(const unsigned char *p, size_t len, uint32_t *cp);

enum svc_utf8_result {
	SVC_UTF8_OK = 0,
	SVC_UTF8_INVALID, /* not well-formed UTF-8 */
	SVC_UTF8_CONTROL, /* well-formed, but with a control character flags refuse */
};

/*
 * Checks the len bytes at text (which need not be NUL-terminated) and stops
 * at the first problem. On SVC_UTF8_OK the number of characters goes to
 * *chars_out (may be NULL).
 */
enum svc_utf8_result svc_utf8_scan(const char *text, size_t len, unsigned flags, size_t *chars_out);

/*
 * A text field: text (NULL is "") of min_chars..max_chars characters, at
 * most max_bytes bytes (0: no byte limit), well-formed UTF-8 without the
 * controls flags refuse. MON_EINVAL with a message that starts with field
 * otherwise: "must be set" (empty while min_chars > 0), "at most N bytes",
 * "must be valid UTF-8", "must not contain control characters", "at least
 * N characters", "at most N characters".
 */
int svc_check_text(const char *field, const char *text, size_t min_chars, size_t max_chars, size_t max_bytes,
                   unsigned flags, struct mon_error *err) MON_MUST_CHECK;

#endif
