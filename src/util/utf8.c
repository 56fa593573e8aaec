/* The UTF-8 checker (see utf8.h). */
#include "util/utf8.h"

#include <stdbool.h>
#include <string.h>

size_t utf8_decode(const unsigned char *p, size_t len, uint32_t *cp)
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

/*
 * Whether all eight bytes of v are in 0x20-0x7e. With no high bit set, no
 * lane carries into the next: adding 0x60 sets a lane's high bit exactly
 * when it is >= 0x20, adding 0x01 exactly when it is 0x7f.
 */
static bool is_printable_ascii8(uint64_t v)
{
	const uint64_t high = 0x8080808080808080ULL;
	return (v & high) == 0 && ((v + 0x6060606060606060ULL) & high) == high &&
	       ((v + 0x0101010101010101ULL) & high) == 0;
}

static bool is_refused_control(uint32_t cp, unsigned flags)
{
	if ((flags & UTF8_NO_C0) && (cp < 0x20 || cp == 0x7f))
		return true;
	return (flags & UTF8_NO_C1) && cp >= 0x80 && cp <= 0x9f;
}

enum utf8_result utf8_scan(const char *text, size_t len, unsigned flags, size_t *chars_out, size_t *bad_at)
{
	const unsigned char *p = (const unsigned char *)text;
	size_t chars = 0;
	for (size_t i = 0; i < len; chars++) {
		/* Printable ASCII, the common case, needs no decoding: eight bytes at a time, then one. */
		while (len - i >= 8) {
			uint64_t v;
			memcpy(&v, p + i, 8);
			if (!is_printable_ascii8(v))
				break;
			i += 8;
			chars += 8;
		}
		if (i >= len)
			break;
		if (p[i] >= 0x20 && p[i] < 0x7f) {
			i++;
			continue;
		}
		uint32_t cp = 0;
		size_t n = utf8_decode(p + i, len - i, &cp);
		enum utf8_result bad = n == 0 ? UTF8_INVALID : is_refused_control(cp, flags) ? UTF8_CONTROL : UTF8_OK;
		if (bad != UTF8_OK) {
			if (bad_at != NULL)
				*bad_at = i;
			return bad;
		}
		i += n;
	}
	if (chars_out != NULL)
		*chars_out = chars;
	return UTF8_OK;
}
