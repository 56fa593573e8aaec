/*
 * Performance metric ingest: validation of RecordMetrics points and the
 * write path (see ingest.h). Values are rounded here as the columns store
 * them (2 decimals, microsecond times), so that the points the stream
 * publishes are the points the table holds.
 */
#include "metrics/ingest.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "common/call.h"
#include "common/parse.h"
#include "common/text.h"
#include "util/clock.h"

const char metrics_session_sql[] =
        "CREATE TEMP TABLE IF NOT EXISTS mon_metric_stage ("
        "time timestamptz, metric_name text, endpoint text, method text, status_code integer, "
        "p50 numeric, p95 numeric, p99 numeric, mean numeric, min numeric, max numeric, "
        "request_count integer, error_count integer, error_rate numeric, throughput numeric, "
        "tags jsonb, metric_type text) ON COMMIT DELETE ROWS";

#define COLS                                                                                                           \
	"time, metric_name, endpoint, method, status_code, p50, p95, p99, mean, min, max, "                            \
	"request_count, error_count, error_rate, throughput, tags, metric_type"

/*
 * The insert: new keys go in, existing keys are left alone and counted by
 * the caller (count of the batch minus rows returned). Rows go in key order
 * (byte order of the names: any fixed order will do) so that two batches
 * sharing keys lock them in the same order instead of deadlocking.
 */
static const struct db_stmt insert_stmt = {
        .name = "metrics_insert_keys",
        .sql = "INSERT INTO tb_performance_metric (" COLS ") "
               "SELECT time, metric_name, endpoint, method, status_code, p50, p95, p99, mean, min, max, "
               "request_count, error_count, error_rate, throughput, tags, metric_type::metric_type "
               "FROM mon_metric_stage ORDER BY time, metric_name COLLATE \"C\", endpoint COLLATE \"C\" "
               "ON CONFLICT (time, metric_name, endpoint) DO NOTHING "
               "RETURNING (extract(epoch FROM time) * 1000000)::bigint, metric_name, endpoint",
        .param_count = 0,
};

/*
 * Only when some keys existed (a retry, or a replacement): the stored rows
 * whose values differ take the new ones; identical ones are duplicates and
 * are not touched. The staging table is analysed first so that the join
 * probes the primary key of the few partitions concerned instead of
 * scanning them.
 */
static const struct db_stmt update_stmt = {
        .name = "metrics_update_keys",
        .sql = "UPDATE tb_performance_metric t SET method = s.method, status_code = s.status_code, p50 = s.p50, "
               "p95 = s.p95, p99 = s.p99, mean = s.mean, min = s.min, max = s.max, "
               "request_count = s.request_count, error_count = s.error_count, error_rate = s.error_rate, "
               "throughput = s.throughput, tags = s.tags, metric_type = s.metric_type::metric_type "
               "FROM mon_metric_stage s "
               "WHERE t.time = s.time AND t.metric_name = s.metric_name AND t.endpoint = s.endpoint "
               "AND (t.method, t.status_code, t.p50, t.p95, t.p99, t.mean, t.min, t.max, t.request_count, "
               "t.error_count, t.error_rate, t.throughput, t.tags, t.metric_type) IS DISTINCT FROM "
               "(s.method, s.status_code, s.p50, s.p95, s.p99, s.mean, s.min, s.max, s.request_count, "
               "s.error_count, s.error_rate, s.throughput, s.tags, s.metric_type::metric_type) "
               "RETURNING (extract(epoch FROM t.time) * 1000000)::bigint, t.metric_name, t.endpoint",
        .param_count = 0,
};

static const struct db_stmt commit_stmt = {
        .name = "metrics_commit",
        .sql = "SELECT mon_metrics_commit($1::integer, $2::timestamptz, $3::timestamptz, $4::timestamptz[], "
               "$5::bytea)",
        .param_count = 5,
};

static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"};
static const char *const type_labels[] = {"gauge", "counter", "gauge", "histogram", "summary"};

/* ---- validation ---- */

static void add_error(struct metrics_point_error *errs, size_t cap, size_t *n, int32_t index, const char *field,
                      const char *fmt, ...) MON_PRINTF(6, 7);

static void add_error(struct metrics_point_error *errs, size_t cap, size_t *n, int32_t index, const char *field,
                      const char *fmt, ...)
{
	if (*n < cap) {
		struct metrics_point_error *e = &errs[*n];
		e->index = index;
		e->field = field;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->message, sizeof(e->message), fmt, ap);
		va_end(ap);
	}
	(*n)++;
}

static bool is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
	       c == ':' || c == '-';
}

/* A latency, throughput or rate value: finite, >= 0, at most max. */
static void check_value(const Google__Protobuf__DoubleValue *v, const char *field, double max, int32_t index,
                        struct metrics_point_error *errs, size_t cap, size_t *n)
{
	if (v == NULL)
		return;
	if (!isfinite(v->value))
		add_error(errs, cap, n, index, field, "must be a finite number");
	else if (v->value < 0)
		add_error(errs, cap, n, index, field, "must be >= 0");
	else if (v->value > max)
		add_error(errs, cap, n, index, field, "must be <= %.2f", max);
}

int metrics_check_point(const Monitoring__V1__MetricPoint *p, int32_t index, int64_t now_ms, int64_t oldest_ms,
                        struct metrics_point_error *errs, size_t cap, size_t *n)
{
	size_t before = *n;
	if (p->time == NULL) {
		add_error(errs, cap, n, index, "time", "required");
	} else {
		struct mon_error e = {0};
		int64_t ms = 0;
		if (svc_time_ms("time", p->time, &ms, &e) != 0)
			add_error(errs, cap, n, index, "time", "not a valid timestamp");
		else if (ms > now_ms + (int64_t)METRICS_FUTURE_MAX_S * 1000)
			add_error(errs, cap, n, index, "time", "more than %d seconds in the future",
			          METRICS_FUTURE_MAX_S);
		else if (ms < oldest_ms)
			add_error(errs, cap, n, index, "time",
			          "older than the raw retention allows (%" PRId64 " days less an hour)",
			          (now_ms - oldest_ms + 3600000) / 86400000);
	}

	const char *name = p->metric_name ? p->metric_name : "";
	size_t name_len = strlen(name);
	if (name_len == 0) {
		add_error(errs, cap, n, index, "metric_name", "required");
	} else if (name_len > METRICS_NAME_MAX) {
		add_error(errs, cap, n, index, "metric_name", "longer than %d characters", METRICS_NAME_MAX);
	} else {
		for (size_t i = 0; i < name_len; i++) {
			if (!is_name_char(name[i])) {
				add_error(errs, cap, n, index, "metric_name",
				          "only letters, digits and _ . : - are allowed (offset %zu)", i);
				break;
			}
		}
	}

	if (p->endpoint != NULL && p->endpoint[0] != '\0') {
		size_t chars = 0;
		if (utf8_scan(p->endpoint, strlen(p->endpoint), SVC_TEXT_NO_C0, &chars, NULL) != UTF8_OK)
			add_error(errs, cap, n, index, "endpoint", "must be UTF-8 text without control characters");
		else if (chars > METRICS_ENDPOINT_MAX)
			add_error(errs, cap, n, index, "endpoint", "longer than %d characters", METRICS_ENDPOINT_MAX);
	}

	if (p->method != NULL && p->method[0] != '\0') {
		bool is_known = false;
		for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
			is_known = is_known || strcmp(p->method, methods[i]) == 0;
		if (!is_known)
			add_error(errs, cap, n, index, "method",
			          "must be one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS");
	}

	if (p->status_code != NULL && (p->status_code->value < 100 || p->status_code->value > 599))
		add_error(errs, cap, n, index, "status_code", "must be 100-599");

	/* Latencies: each valid, then in order min <= p50 <= p95 <= p99 <= max among those present. */
	const Google__Protobuf__DoubleValue *order[] = {p->min, p->p50, p->p95, p->p99, p->max};
	static const char *const order_names[] = {"min", "p50", "p95", "p99", "max"};
	size_t bad_before = *n;
	for (size_t i = 0; i < 5; i++)
		check_value(order[i], order_names[i], METRICS_DECIMAL_MAX, index, errs, cap, n);
	check_value(p->mean, "mean", METRICS_DECIMAL_MAX, index, errs, cap, n);
	if (*n == bad_before) {
		int last = -1;
		for (int i = 0; i < 5; i++) {
			if (order[i] == NULL)
				continue;
			if (last >= 0 && order[i]->value < order[last]->value) {
				add_error(errs, cap, n, index, order_names[i], "must be >= %s (%g < %g)",
				          order_names[last], order[i]->value, order[last]->value);
			}
			last = i;
		}
		if (p->mean != NULL && p->min != NULL && p->mean->value < p->min->value)
			add_error(errs, cap, n, index, "mean", "must be >= min (%g < %g)", p->mean->value,
			          p->min->value);
		if (p->mean != NULL && p->max != NULL && p->mean->value > p->max->value)
			add_error(errs, cap, n, index, "mean", "must be <= max (%g > %g)", p->mean->value,
			          p->max->value);
	}

	if (p->request_count < 0)
		add_error(errs, cap, n, index, "request_count", "must be >= 0");
	if (p->error_count < 0)
		add_error(errs, cap, n, index, "error_count", "must be >= 0");
	else if (p->request_count >= 0 && p->error_count > p->request_count)
		add_error(errs, cap, n, index, "error_count", "must be <= request_count (%d > %d)", p->error_count,
		          p->request_count);
	check_value(p->error_rate, "error_rate", 100.0, index, errs, cap, n);
	check_value(p->throughput, "throughput", METRICS_DECIMAL_MAX, index, errs, cap, n);

	if (p->n_tags > METRICS_TAGS_MAX)
		add_error(errs, cap, n, index, "tags", "more than %d keys", METRICS_TAGS_MAX);
	for (size_t i = 0; i < p->n_tags; i++) {
		const char *k = p->tags[i]->key ? p->tags[i]->key : "";
		const char *v = p->tags[i]->value ? p->tags[i]->value : "";
		if (k[0] == '\0') {
			add_error(errs, cap, n, index, "tags", "a key is empty");
			break;
		}
		if (strlen(k) > METRICS_TAG_KEY_MAX || utf8_scan(k, strlen(k), SVC_TEXT_NO_C0, NULL, NULL) != UTF8_OK) {
			add_error(errs, cap, n, index, "tags", "key \"%.40s\": must be UTF-8 text of at most %d bytes",
			          k, METRICS_TAG_KEY_MAX);
			break;
		}
		if (strlen(v) > METRICS_TAG_VALUE_MAX ||
		    utf8_scan(v, strlen(v), SVC_TEXT_NO_C0, NULL, NULL) != UTF8_OK) {
			add_error(errs, cap, n, index, "tags",
			          "value of \"%.40s\": must be UTF-8 text of at most %d bytes", k,
			          METRICS_TAG_VALUE_MAX);
			break;
		}
	}

	if ((int)p->metric_type < 0 || (size_t)p->metric_type >= sizeof(type_labels) / sizeof(type_labels[0]))
		add_error(errs, cap, n, index, "metric_type", "unknown value %d", (int)p->metric_type);
	return (int)(*n - before);
}

/* ---- encoding ---- */

/* Microseconds since the epoch of a valid timestamp (nanoseconds truncated, as the column stores them). */
static int64_t time_us(const Google__Protobuf__Timestamp *t)
{
	return t->seconds * 1000000 + t->nanos / 1000;
}

/*
 * The COPY text of a batch is 17 values times up to 5000 points, so the
 * formatting below avoids printf: digits are written by hand, and the date
 * part of a timestamp is formatted once per distinct second.
 */

/* Writes the decimal digits of v (>= 0) ending just before end; returns the first. */
static char *digits_before(char *end, uint64_t v, int min_digits)
{
	char *p = end;
	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
		min_digits--;
	} while (v != 0 || min_digits > 0);
	return p;
}

static char *format_int(struct arena *a, int64_t v)
{
	char buf[24];
	char *end = buf + sizeof(buf);
	char *p = digits_before(end, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, 1);
	if (v < 0)
		*--p = '-';
	return arena_strndup(a, p, (size_t)(end - p));
}

struct time_cache {
	int64_t second; /* INT64_MIN: empty */
	char date[32];  /* "YYYY-MM-DD HH:MM:SS" (19 bytes used) */
};

static char *format_time(struct arena *a, struct time_cache *tc, int64_t us)
{
	int64_t sec = us >= 0 ? us / 1000000 : (us - 999999) / 1000000;
	int64_t frac = us - sec * 1000000;
	if (tc->second != sec) {
		time_t t = (time_t)sec;
		struct tm tm;
		if (gmtime_r(&t, &tm) == NULL)
			return NULL;
		snprintf(tc->date, sizeof(tc->date), "%04u-%02u-%02u %02u:%02u:%02u",
		         (unsigned)(tm.tm_year + 1900) % 10000, (unsigned)(tm.tm_mon + 1) % 100,
		         (unsigned)tm.tm_mday % 100, (unsigned)tm.tm_hour % 100, (unsigned)tm.tm_min % 100,
		         (unsigned)tm.tm_sec % 100);
		tc->second = sec;
	}
	char *out = arena_alloc(a, 19 + 7 + 3 + 1);
	if (out == NULL)
		return NULL;
	memcpy(out, tc->date, 19);
	out[19] = '.';
	digits_before(out + 26, (uint64_t)frac, 6);
	memcpy(out + 26, "+00", 4);
	return out;
}

/*
 * A value rounded to the column's 2 decimals (to nearest, halves away from
 * zero, of the double as given), as text, and the stored value back into
 * *v. Values are validated: finite, 0 to 99999999.99. *is_oom is set when
 * memory runs out.
 */
static char *round2(struct arena *a, Google__Protobuf__DoubleValue **v, bool *is_oom)
{
	if (*v == NULL)
		return NULL;
	int64_t cents = llround((*v)->value * 100.0);
	char buf[24];
	char *end = buf + sizeof(buf);
	char *p = digits_before(end, (uint64_t)(cents % 100), 2);
	*--p = '.';
	p = digits_before(p, (uint64_t)(cents / 100), 1);
	char *text = arena_strndup(a, p, (size_t)(end - p));
	Google__Protobuf__DoubleValue *copy = arena_alloc(a, sizeof(*copy));
	if (text == NULL || copy == NULL) {
		*is_oom = true;
		return NULL;
	}
	google__protobuf__double_value__init(copy);
	copy->value = (double)cents / 100.0;
	*v = copy;
	return text;
}

/* Appends s as a JSON string. */
static int append_json_string(struct arena *a, char **buf, size_t *len, size_t *cap, const char *s)
{
	size_t need = *len + strlen(s) * 6 + 3;
	if (need > *cap) {
		size_t ncap = need * 2;
		char *nb = arena_alloc(a, ncap);
		if (nb == NULL)
			return MON_ENOMEM;
		memcpy(nb, *buf, *len);
		*buf = nb;
		*cap = ncap;
	}
	char *o = *buf + *len;
	*o++ = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\') {
			*o++ = '\\';
			*o++ = (char)*p;
		} else if (*p < 0x20 || *p == 0x7f) {
			static const char hex[] = "0123456789abcdef";
			memcpy(o, "\\u00", 4);
			o[4] = hex[*p >> 4];
			o[5] = hex[*p & 0xf];
			o += 6;
		} else {
			*o++ = (char)*p;
		}
	}
	*o++ = '"';
	*len = (size_t)(o - *buf);
	return 0;
}

static char *tags_json(struct arena *a, const Monitoring__V1__MetricPoint *p)
{
	size_t cap = 64, len = 0;
	char *buf = arena_alloc(a, cap);
	if (buf == NULL)
		return NULL;
	buf[len++] = '{';
	for (size_t i = 0; i < p->n_tags; i++) {
		if (i > 0)
			buf[len++] = ',';
		if (append_json_string(a, &buf, &len, &cap, p->tags[i]->key ? p->tags[i]->key : "") != 0)
			return NULL;
		buf[len++] = ':';
		if (append_json_string(a, &buf, &len, &cap, p->tags[i]->value ? p->tags[i]->value : "") != 0)
			return NULL;
	}
	if (len + 2 > cap) {
		char *nb = arena_alloc(a, len + 2);
		if (nb == NULL)
			return NULL;
		memcpy(nb, buf, len);
		buf = nb;
	}
	buf[len++] = '}';
	buf[len] = '\0';
	return buf;
}

/* One point as COPY values and as the stored point (a shallow copy with rounded values). */
struct row {
	const char *v[17];
	Monitoring__V1__MetricPoint stored;
	bool is_changed; /* staging path: inserted or updated (published) */
};

static int encode_row(struct arena *a, struct time_cache *tc, const Monitoring__V1__MetricPoint *p, struct row *r,
                      struct mon_error *err)
{
	r->stored = *p;
	Monitoring__V1__MetricPoint *s = &r->stored;
	Google__Protobuf__Timestamp *t = arena_alloc(a, sizeof(*t));
	if (t == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory encoding points");
	google__protobuf__timestamp__init(t);
	t->seconds = p->time->seconds;
	t->nanos = p->time->nanos / 1000 * 1000;
	s->time = t;
	if (s->error_rate == NULL && p->request_count > 0) {
		Google__Protobuf__DoubleValue *rate = arena_alloc(a, sizeof(*rate));
		if (rate == NULL)
			return mon_error_set(err, MON_ENOMEM, "out of memory encoding points");
		google__protobuf__double_value__init(rate);
		rate->value = (double)p->error_count * 100.0 / (double)p->request_count;
		s->error_rate = rate;
	}
	if (s->metric_type == MONITORING__V1__METRIC_TYPE__METRIC_TYPE_UNSPECIFIED)
		s->metric_type = MONITORING__V1__METRIC_TYPE__METRIC_TYPE_GAUGE;
	if (s->endpoint == NULL)
		s->endpoint = "";
	char *sc = NULL;
	if (p->status_code != NULL)
		sc = format_int(a, p->status_code->value);
	bool is_oom = false;
	r->v[0] = format_time(a, tc, time_us(p->time));
	r->v[1] = p->metric_name;
	r->v[2] = s->endpoint;
	r->v[3] = p->method != NULL && p->method[0] != '\0' ? p->method : NULL;
	r->v[4] = sc;
	r->v[5] = round2(a, &s->p50, &is_oom);
	r->v[6] = round2(a, &s->p95, &is_oom);
	r->v[7] = round2(a, &s->p99, &is_oom);
	r->v[8] = round2(a, &s->mean, &is_oom);
	r->v[9] = round2(a, &s->min, &is_oom);
	r->v[10] = round2(a, &s->max, &is_oom);
	r->v[11] = format_int(a, p->request_count);
	r->v[12] = format_int(a, p->error_count);
	r->v[13] = round2(a, &s->error_rate, &is_oom);
	r->v[14] = round2(a, &s->throughput, &is_oom);
	r->v[15] = tags_json(a, p);
	r->v[16] = type_labels[s->metric_type];
	if (is_oom || r->v[0] == NULL || r->v[11] == NULL || r->v[12] == NULL || r->v[15] == NULL ||
	    (p->status_code != NULL && sc == NULL))
		return mon_error_set(err, MON_ENOMEM, "out of memory encoding points");
	return 0;
}

/* ---- the transaction ---- */

struct write_op {
	struct arena *arena;
	struct row *rows;
	struct row **sorted; /* rows in key order */
	size_t count;
	const char *params[5];
	const struct metrics_write_key *key; /* NULL: no idempotency key */
	struct metrics_write_result result;
};

/*
 * The parameters of mon_metrics_commit for the rows published: all of them,
 * or (only_changed) those the staging path inserted or updated, in the
 * batch's order: count, first and last time, the 5-minute buckets touched
 * and the packed MetricBatch (hex bytea).
 */
static int publish_params(struct arena *a, struct row *rows, size_t count, bool only_changed, const char *params[5],
                          struct mon_error *err)
{
	struct time_cache tc = {.second = INT64_MIN};
	Monitoring__V1__MetricPoint **stored = arena_calloc(a, count, sizeof(*stored));
	int64_t *buckets = arena_calloc(a, count, sizeof(*buckets));
	if (stored == NULL || buckets == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory encoding the batch");
	int64_t min_us = INT64_MAX, max_us = INT64_MIN;
	size_t n = 0, bucket_n = 0;
	for (size_t i = 0; i < count; i++) {
		if (only_changed && !rows[i].is_changed)
			continue;
		stored[n++] = &rows[i].stored;
		int64_t us = time_us(rows[i].stored.time);
		min_us = us < min_us ? us : min_us;
		max_us = us > max_us ? us : max_us;
		/* distinct 5-minute bucket starts; batches usually touch one or two */
		int64_t b = us >= 0 ? us / 300000000 : (us - 299999999) / 300000000;
		size_t j = 0;
		while (j < bucket_n && buckets[j] != b)
			j++;
		if (j == bucket_n)
			buckets[bucket_n++] = b;
	}
	if (n == 0)
		return mon_error_set(err, MON_EINTERNAL, "no changed point to publish");

	struct arena_str barr_text;
	arena_str_init(&barr_text, a);
	arena_str_append(&barr_text, "{");
	for (size_t j = 0; j < bucket_n; j++) {
		char *t = format_time(a, &tc, buckets[j] * 300000000);
		if (t == NULL)
			return mon_error_set(err, MON_ENOMEM, "out of memory encoding the batch");
		arena_str_printf(&barr_text, "%s\"%s\"", j ? "," : "", t);
	}
	arena_str_append(&barr_text, "}");
	const char *barr = arena_str_get(&barr_text);
	if (barr == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory encoding the batch");

	Monitoring__V1__MetricBatch batch = MONITORING__V1__METRIC_BATCH__INIT;
	batch.n_points = n;
	batch.points = stored;
	size_t packed_len = monitoring__v1__metric_batch__get_packed_size(&batch);
	uint8_t *packed = arena_alloc(a, packed_len ? packed_len : 1);
	char *hex = arena_alloc(a, packed_len * 2 + 3);
	if (packed == NULL || hex == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory encoding the batch");
	monitoring__v1__metric_batch__pack(&batch, packed);
	hex[0] = '\\';
	hex[1] = 'x';
	sodium_bin2hex(hex + 2, packed_len * 2 + 1, packed, packed_len);

	params[0] = format_int(a, (int64_t)n);
	params[1] = format_time(a, &tc, min_us);
	params[2] = format_time(a, &tc, max_us);
	params[3] = barr;
	params[4] = hex;
	if (params[0] == NULL || params[1] == NULL || params[2] == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory encoding the batch");
	return 0;
}

/* Marks the rows whose keys res returned (epoch microseconds, metric_name, endpoint) as changed. */
static void mark_changed(struct write_op *op, const struct db_result *res)
{
	for (int r = 0; r < db_result_rows(res); r++) {
		int64_t us = strtoll(db_result_value(res, r, 0), NULL, 10);
		const char *name = db_result_value(res, r, 1);
		const char *endpoint = db_result_value(res, r, 2);
		size_t lo = 0, hi = op->count;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			const Monitoring__V1__MetricPoint *p = &op->sorted[mid]->stored;
			int64_t pus = time_us(p->time);
			int c = pus != us ? (pus < us ? -1 : 1) : strcmp(p->metric_name, name);
			if (c == 0)
				c = strcmp(p->endpoint, endpoint);
			if (c == 0) {
				op->sorted[mid]->is_changed = true;
				break;
			}
			if (c < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
	}
}

/*
 * The common case, new keys only: COPY straight into the table, as cheap as
 * any loader can be. A key that exists (a retry, a replacement) fails the
 * COPY with a unique violation; the savepoint undoes it and the batch takes
 * the staging path. Rows go in key order, so two batches sharing keys wait
 * for each other instead of deadlocking; should they deadlock all the same,
 * the loser also falls back.
 */
static int copy_direct(struct db_conn *conn, struct write_op *op, bool *is_done, struct mon_error *err)
{
	*is_done = false;
	int rc = db_exec(conn, "SET LOCAL synchronous_commit = off", 0, NULL, NULL, err); /* see flush_commit */
	if (rc == 0)
		rc = db_exec(conn, "SAVEPOINT metrics_direct", 0, NULL, NULL, err);
	if (rc != 0)
		return rc;
	rc = db_copy_begin(conn, "COPY tb_performance_metric (" COLS ") FROM STDIN", err);
	for (size_t i = 0; rc == 0 && i < op->count; i++)
		rc = db_copy_row(conn, 17, op->sorted[i]->v, err);
	if (rc == 0)
		rc = db_copy_end(conn, NULL, err);
	if (rc == 0) {
		*is_done = true;
		return 0;
	}
	if (rc != MON_EEXIST && rc != MON_EABORTED)
		return rc;
	mon_error_clear(err);
	return db_exec(conn, "ROLLBACK TO SAVEPOINT metrics_direct", 0, NULL, NULL, err);
}

static int write_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct write_op *op = arg;
	struct db_result *res = NULL;
	bool is_direct = false;
	op->result = (struct metrics_write_result){0};
	if (op->key != NULL) {
		/* First, so that a concurrent duplicate waits here, before the ingest lock. */
		int rc = op->key->claim_tx(conn, op->key->arg, &op->result.is_replay, err);
		if (rc != 0 || op->result.is_replay)
			return rc;
	}
	int rc = copy_direct(conn, op, &is_direct, err);
	if (rc != 0)
		return rc;
	int64_t inserted = (int64_t)op->count;
	int64_t updated = 0;
	if (is_direct)
		goto publish;
	rc = db_copy_begin(conn, "COPY mon_metric_stage (" COLS ") FROM STDIN", err);
	for (size_t i = 0; rc == 0 && i < op->count; i++)
		rc = db_copy_row(conn, 17, op->rows[i].v, err);
	if (rc == 0)
		rc = db_copy_end(conn, NULL, err);
	if (rc == 0)
		rc = db_exec_stmt(conn, &insert_stmt, NULL, &res, err);
	if (rc != 0)
		goto out;
	for (size_t i = 0; i < op->count; i++)
		op->rows[i].is_changed = false; /* a retried transaction starts afresh */
	inserted = db_result_rows(res);
	mark_changed(op, res);
	db_result_free(res);
	res = NULL;
	if (inserted < (int64_t)op->count) {
		rc = db_exec(conn, "ANALYZE mon_metric_stage", 0, NULL, NULL, err);
		if (rc == 0)
			rc = db_exec_stmt(conn, &update_stmt, NULL, &res, err);
		if (rc != 0)
			goto out;
		updated = db_result_rows(res);
		mark_changed(op, res);
		db_result_free(res);
		res = NULL;
	}
publish:;
	int64_t written = inserted + updated;
	op->result.inserted = (int32_t)inserted;
	op->result.updated = (int32_t)updated;
	op->result.duplicates = (int32_t)((int64_t)op->count - written);
	op->result.sequence = 0;
	if (written == 0)
		goto out; /* a retry of a stored batch: nothing changed, nothing to publish */
	const char *changed_params[5];
	const char *const *params = op->params;
	if (!is_direct) {
		/* publish only what changed: unchanged points were published when they were stored */
		rc = publish_params(op->arena, op->rows, op->count, true, changed_params, err);
		if (rc != 0)
			goto out;
		params = changed_params;
	}
	rc = db_exec_stmt(conn, &commit_stmt, params, &res, err);
	if (rc != 0)
		goto out;
	op->result.sequence = strtoll(db_result_value(res, 0, 0), NULL, 10);
out:
	db_result_free(res);
	if (rc == 0 && op->key != NULL)
		rc = op->key->store_tx(conn, op->key->arg, &op->result, err);
	return rc;
}

/*
 * The batch's transaction commits asynchronously (synchronous_commit off),
 * so the ingest lock it holds to COMMIT is not held through the WAL flush:
 * concurrent batches then share flushes as plain COPYs do. Before the call
 * is answered, db_flush_wal commits synchronously and so flushes the WAL
 * through the batch's commit record: an acknowledged batch is durable. It
 * runs after every successful batch, a batch of duplicates only included:
 * the attempt that stored them may have committed and failed before its own
 * flush, and its retry must not be acknowledged while the points are still
 * volatile. If the flush fails, the caller is told so and retries (a batch
 * is idempotent). Until the flush, readers may see the batch (WatchMetrics
 * may deliver it) before it is durable; a PostgreSQL crash in that window
 * loses it, and its writer, never told it was stored, sends it again.
 * deadline_ms: monotonic deadline, INT64_MAX for none; a deadline already
 * past fails with MON_EDEADLINE, never runs unbounded.
 */
static int flush_commit(struct db_pool *pool, int64_t deadline_ms, struct mon_error *err)
{
	int64_t timeout_ms = DB_NO_DEADLINE;
	if (deadline_ms != INT64_MAX) {
		timeout_ms = deadline_ms - mon_now_ms();
		if (timeout_ms <= 0)
			return mon_error_set(err, MON_EDEADLINE, "deadline exceeded before the batch was flushed");
	}
	return db_flush_wal(pool, timeout_ms, err);
}

static int row_key_cmp(const void *pa, const void *pb)
{
	const struct row *a = *(const struct row *const *)pa;
	const struct row *b = *(const struct row *const *)pb;
	int64_t ta = time_us(a->stored.time), tb = time_us(b->stored.time);
	if (ta != tb)
		return ta < tb ? -1 : 1;
	int c = strcmp(a->stored.metric_name, b->stored.metric_name);
	return c != 0 ? c : strcmp(a->stored.endpoint, b->stored.endpoint);
}

int metrics_write(struct db_pool *pool, struct arena *a, int64_t timeout_ms, Monitoring__V1__MetricPoint *const *points,
                  size_t count, const struct metrics_write_key *key, struct metrics_write_result *out,
                  struct mon_error *err)
{
	struct write_op op = {.arena = a, .count = count, .key = key};
	op.rows = arena_calloc(a, count, sizeof(*op.rows));
	op.sorted = arena_calloc(a, count, sizeof(*op.sorted));
	if (op.rows == NULL || op.sorted == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory encoding points");
	struct time_cache tc = {.second = INT64_MIN};
	for (size_t i = 0; i < count; i++) {
		int rc = encode_row(a, &tc, points[i], &op.rows[i], err);
		if (rc != 0)
			return rc;
		op.sorted[i] = &op.rows[i];
	}
	qsort(op.sorted, count, sizeof(*op.sorted), row_key_cmp);
	int rc = publish_params(a, op.rows, count, false, op.params, err);
	if (rc != 0)
		return rc;
	bool is_bounded = timeout_ms > 0 && timeout_ms != INT64_MAX;
	int64_t deadline_ms = is_bounded ? mon_now_ms() + timeout_ms : INT64_MAX;
	rc = db_tx_run(pool, timeout_ms, write_tx, &op, err);
	if (rc == 0)
		rc = flush_commit(pool, deadline_ms, err);
	if (rc == 0)
		*out = op.result;
	return rc;
}

/* ---- a stored point ---- */

Monitoring__V1__MetricType metrics_type_from_label(const char *label)
{
	if (strcmp(label, "counter") == 0)
		return MONITORING__V1__METRIC_TYPE__METRIC_TYPE_COUNTER;
	if (strcmp(label, "gauge") == 0)
		return MONITORING__V1__METRIC_TYPE__METRIC_TYPE_GAUGE;
	if (strcmp(label, "histogram") == 0)
		return MONITORING__V1__METRIC_TYPE__METRIC_TYPE_HISTOGRAM;
	if (strcmp(label, "summary") == 0)
		return MONITORING__V1__METRIC_TYPE__METRIC_TYPE_SUMMARY;
	return MONITORING__V1__METRIC_TYPE__METRIC_TYPE_UNSPECIFIED;
}

/* The tags of a jsonb object text as map entries; values that are not strings appear as JSON text. */
static int tags_from_text(struct arena *a, const char *text, Monitoring__V1__MetricPoint *m, struct mon_error *err)
{
	if (text == NULL || text[0] == '\0')
		return 0;
	json_t *obj = json_loads(text, JSON_DECODE_ANY, NULL);
	if (!json_is_object(obj)) {
		json_decref(obj);
		return 0;
	}
	int rc = 0;
	size_t n = json_object_size(obj), i = 0;
	m->tags = n ? arena_calloc(a, n, sizeof(*m->tags)) : NULL;
	if (n && m->tags == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	const char *key;
	json_t *value;
	json_object_foreach(obj, key, value)
	{
		Monitoring__V1__MetricPoint__TagsEntry *e = arena_alloc(a, sizeof(*e));
		if (e == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		monitoring__v1__metric_point__tags_entry__init(e);
		e->key = arena_strdup(a, key);
		if (json_is_string(value)) {
			e->value = arena_strdup(a, json_string_value(value));
		} else {
			char *dumped = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
			e->value = arena_strdup(a, dumped ? dumped : "");
			free(dumped);
		}
		if (e->key == NULL || e->value == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		m->tags[i++] = e;
	}
	m->n_tags = i;
out:
	json_decref(obj);
	return rc;
}

int metrics_point_from_row(struct arena *a, const struct db_result *res, int row, Monitoring__V1__MetricPoint **out,
                           struct mon_error *err)
{
	static const char *const doubles[] = {"p50", "p95", "p99", "mean", "min", "max", "error_rate", "throughput"};
	bool is_ok = true;
	Monitoring__V1__MetricPoint *m = arena_alloc(a, sizeof(*m));
	if (m == NULL)
		return svc_fail_nomem(err);
	monitoring__v1__metric_point__init(m);
	int time_col = db_result_col(res, "time_us");
	int name_col = db_result_col(res, "metric_name");
	if (time_col < 0 || name_col < 0)
		return mon_error_set(err, MON_EINTERNAL, "metric point row without time_us or metric_name");
	m->time = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, row, time_col)));
	m->metric_name = arena_strdup(a, db_result_value(res, row, name_col));
	int col = db_result_col(res, "endpoint");
	m->endpoint = arena_strdup(a, col >= 0 ? db_result_value(res, row, col) : "");
	col = db_result_col(res, "method");
	m->method = arena_strdup(a, col >= 0 ? db_result_value(res, row, col) : "");
	col = db_result_col(res, "status_code");
	if (col >= 0 && !db_result_is_null(res, row, col)) {
		m->status_code = arena_alloc(a, sizeof(*m->status_code));
		if (m->status_code == NULL)
			return svc_fail_nomem(err);
		google__protobuf__int32_value__init(m->status_code);
		m->status_code->value = (int32_t)svc_parse_i64(db_result_value(res, row, col));
	}
	Google__Protobuf__DoubleValue **slots[] = {&m->p50, &m->p95, &m->p99,        &m->mean,
	                                           &m->min, &m->max, &m->error_rate, &m->throughput};
	for (size_t i = 0; i < sizeof(doubles) / sizeof(doubles[0]); i++)
		*slots[i] = svc_double_from_col(a, res, row, db_result_col(res, doubles[i]), &is_ok);
	col = db_result_col(res, "request_count");
	m->request_count = col >= 0 ? (int32_t)svc_parse_i64(db_result_value(res, row, col)) : 0;
	col = db_result_col(res, "error_count");
	m->error_count = col >= 0 ? (int32_t)svc_parse_i64(db_result_value(res, row, col)) : 0;
	col = db_result_col(res, "metric_type");
	m->metric_type = col >= 0 ? metrics_type_from_label(db_result_value(res, row, col))
	                          : MONITORING__V1__METRIC_TYPE__METRIC_TYPE_GAUGE;
	if (!is_ok || m->time == NULL || m->metric_name == NULL || m->endpoint == NULL || m->method == NULL)
		return svc_fail_nomem(err);
	col = db_result_col(res, "tags");
	if (col >= 0 && !db_result_is_null(res, row, col)) {
		int rc = tags_from_text(a, db_result_value(res, row, col), m, err);
		if (rc != 0)
			return rc;
	}
	*out = m;
	return 0;
}
