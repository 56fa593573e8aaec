/* UTF-8 and text fields (see text.h). */
#include "common/text.h"

#include <stdbool.h>
#include <string.h>

size_t svc_utf8_decode(const unsigned char *p, size_t len, uint32_t *cp)
{
	if (len == 0 || p[0] == 0x00)
		return 0;
	unsigned c = p[0];
	size_t n;
	uint32_t v;
	/* The lowest second byte of each length rules out overlongs; U+D800-DFFF and past U+10FFFF are checked below.
	 */
	if (c < 0x80) {
		n = 1;
		v = c;
	} else if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		v = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		v = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		v = c & 0x07;
	} else {
		return 0; /* a continuation byte, C0/C1 (always overlong) or F5-FF (past U+10FFFF) */
	}
	for (size_t k = 1; k < n; k++) {
		if (k >= len || (p[k] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (p[k] & 0x3f);
	}
	if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000) || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	if (cp != NULL)
		*cp = v;
	return n;
}

static bool is_refused_control(uint32_t cp, unsigned flags)
{
	if ((flags & SVC_TEXT_NO_C0) && (cp < 0x20 || cp == 0x7f))
		return true;
	return (flags & SVC_TEXT_NO_C1) && cp >= 0x80 && cp <= 0x9f;
}

enum svc_utf8_result svc_utf8_scan(const char *text, size_t len, unsigned flags, size_t *chars_out)
{
	const unsigned char *p = (const unsigned char *)text;
	size_t chars = 0;
	for (size_t i = 0; i < len; chars++) {
		uint32_t cp = 0;
		size_t n = svc_utf8_decode(p + i, len - i, &cp);
		if (n == 0)
			return SVC_UTF8_INVALID;
		if (is_refused_control(cp, flags))
			return SVC_UTF8_CONTROL;
		i += n;
	}
	if (chars_out != NULL)
		*chars_out = chars;
	return SVC_UTF8_OK;
}

int svc_check_text(const char *field, const char *text, size_t min_chars, size_t max_chars, size_t max_bytes,
                   unsigned flags, struct mon_error *err)
{
	const char *t = text ? text : "";
	size_t n = strlen(t), chars = 0;
	if (n == 0 && min_chars > 0)
		return mon_error_set(err, MON_EINVAL, "%s: must be set", field);
	if (max_bytes > 0 && n > max_bytes)
		return mon_error_set(err, MON_EINVAL, "%s: at most %zu bytes", field, max_bytes);
	switch (svc_utf8_scan(t, n, flags, &chars)) {
	case SVC_UTF8_OK: break;
	case SVC_UTF8_INVALID: return mon_error_set(err, MON_EINVAL, "%s: must be valid UTF-8", field);
	case SVC_UTF8_CONTROL: return mon_error_set(err, MON_EINVAL, "%s: must not contain control characters", field);
	}
	if (chars < min_chars)
		return mon_error_set(err, MON_EINVAL, "%s: at least %zu characters", field, min_chars);
	if (chars > max_chars)
		return mon_error_set(err, MON_EINVAL, "%s: at most %zu characters", field, max_chars);
	return 0;
}
