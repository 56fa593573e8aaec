/* Numbers of database text and timestamps (see parse.h). */
#include "common/parse.h"

#include <stdlib.h>

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
