/*
 * Numbers and times as the services read them: integers and doubles from
 * database text columns, google.protobuf.Timestamp to and from epoch units. The clocks
 * themselves are in util/clock.h.
 */
#ifndef MON_SERVER_COMMON_PARSE_H
#define MON_SERVER_COMMON_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "util/arena.h"
#include "util/error.h"

/* The latest time the API accepts: 9999-12-31T23:59:59Z. */
#define SVC_TIMESTAMP_SECONDS_MAX INT64_C(253402300799)

/*
 * The decimal integer text starts with (a database column's text): 0 for
 * NULL or text that does not start with one; clamped to INT64_MIN or
 * INT64_MAX when out of range.
 */
int64_t svc_parse_i64(const char *text);

/* A timestamp to milliseconds since the epoch; MON_EINVAL naming field when out of range. */
int svc_time_ms(const char *field, const Google__Protobuf__Timestamp *ts, int64_t *out,
                struct mon_error *err) MON_MUST_CHECK;

/* Microseconds since the epoch (before it too) to a Timestamp allocated in a; NULL when a is full. */
Google__Protobuf__Timestamp *svc_ts_from_us(struct arena *a, int64_t us);

/*
 * A numeric column of res as a DoubleValue allocated in a: NULL for SQL NULL
 * or col < 0 (no such column); NULL with *is_ok set to false when a is full.
 */
Google__Protobuf__DoubleValue *svc_double_from_col(struct arena *a, const struct db_result *res, int row, int col,
                                                   bool *is_ok);

/*
 * Hex text (a bytea column read as encode(col, 'hex')) decoded into bytes
 * in a; *len_out gets their count. NULL when the text is not hex or past
 * the arena's cap.
 */
uint8_t *svc_hex_decode(struct arena *a, const char *hex, size_t *len_out);

#endif
