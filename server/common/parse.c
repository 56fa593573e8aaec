/* Numbers of database text and timestamps (see parse.h). */
#include "common/parse.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

int64_t svc_parse_i64(const char *text)
{
	if (text == NULL)
		return 0;
	return (int64_t)strtoll(text, NULL, 10);
}

int svc_time_ms(const char *field, const Google__Protobuf__Timestamp *ts, int64_t *out, struct mon_error *err)
{
	if (ts->nanos < 0 || ts->nanos > 999999999 || ts->seconds < 0 || ts->seconds > SVC_TIMESTAMP_SECONDS_MAX)
		return mon_error_set(err, MON_EINVAL, "%s: not a valid time", field);
	*out = ts->seconds * 1000 + ts->nanos / 1000000;
	return 0;
}

Google__Protobuf__Timestamp *svc_ts_from_us(struct arena *a, int64_t us)
{
	Google__Protobuf__Timestamp *ts = arena_alloc(a, sizeof(*ts));
	if (ts == NULL)
		return NULL;
	google__protobuf__timestamp__init(ts);
	ts->seconds = us / 1000000;
	int64_t rem = us % 1000000;
	if (rem < 0) {
		ts->seconds -= 1;
		rem += 1000000;
	}
	ts->nanos = (int32_t)(rem * 1000);
	return ts;
}

Google__Protobuf__DoubleValue *svc_double_from_col(struct arena *a, const struct db_result *res, int row, int col,
                                                   bool *is_ok)
{
	if (col < 0 || db_result_is_null(res, row, col))
		return NULL;
	Google__Protobuf__DoubleValue *v = arena_alloc(a, sizeof(*v));
	if (v == NULL) {
		*is_ok = false;
		return NULL;
	}
	google__protobuf__double_value__init(v);
	v->value = strtod(db_result_value(res, row, col), NULL);
	return v;
}

uint8_t *svc_hex_decode(struct arena *a, const char *hex, size_t *len_out)
{
	size_t n = strlen(hex), bin_n = 0;
	if (n % 2 != 0)
		return NULL;
	uint8_t *out = arena_alloc(a, n / 2 + 1);
	if (out == NULL || sodium_hex2bin(out, n / 2 + 1, hex, n, NULL, &bin_n, NULL) != 0)
		return NULL;
	*len_out = bin_n;
	return out;
}
