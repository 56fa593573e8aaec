/* Text fields (see text.h). */
#include "common/text.h"

#include <string.h>

int svc_check_text(const char *field, const char *text, size_t min_chars, size_t max_chars, size_t max_bytes,
                   unsigned flags, struct mon_error *err)
{
	const char *t = text ? text : "";
	size_t n = strlen(t), chars = 0;
	if (n == 0 && min_chars > 0)
		return mon_error_set(err, MON_EINVAL, "%s: must be set", field);
	if (max_bytes > 0 && n > max_bytes)
		return mon_error_set(err, MON_EINVAL, "%s: at most %zu bytes", field, max_bytes);
	switch (utf8_scan(t, n, flags, &chars, NULL)) {
	case UTF8_OK: break;
	case UTF8_INVALID: return mon_error_set(err, MON_EINVAL, "%s: must be valid UTF-8", field);
	case UTF8_CONTROL: return mon_error_set(err, MON_EINVAL, "%s: must not contain control characters", field);
	}
	if (chars < min_chars)
		return mon_error_set(err, MON_EINVAL, "%s: at least %zu characters", field, min_chars);
	if (chars > max_chars)
		return mon_error_set(err, MON_EINVAL, "%s: at most %zu characters", field, max_chars);
	return 0;
}
