/*
 * Text fields of requests: the field check built on the one UTF-8 checker
 * (util/utf8.h). The RPC runtime has already refused any string field that
 * is not well-formed UTF-8 or holds a NUL before a handler runs; this check
 * adds what a field allows: its length, and which control characters.
 */
#ifndef MON_SERVER_COMMON_TEXT_H
#define MON_SERVER_COMMON_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"
#include "util/utf8.h"

/* Controls a field refuses (flags of svc_check_text; see util/utf8.h). */
#define SVC_TEXT_NO_C0 UTF8_NO_C0             /* U+0000-U+001F and U+007F */
#define SVC_TEXT_NO_C1 UTF8_NO_C1             /* U+0080-U+009F */
#define SVC_TEXT_NO_CONTROLS UTF8_NO_CONTROLS /* both */

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
