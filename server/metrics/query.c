/*
 * MetricsService queries: stored points (ListMetricPoints), metric names
 * (ListMetricNames), time series (QueryMetrics) and the data model's three
 * performance queries (GetPerformanceSummary, ListSlowestEndpoints,
 * GetPerformanceTrend). Also the reading of a stored point's row into a
 * MetricPoint, which the stream shares.
 *
 * Each handler checks its input (INVALID_ARGUMENT naming the field), then
 * runs one read transaction bounded by the caller's deadline. The SQL is
 * built from fixed fragments only: every value the caller sends, tag keys
 * included, travels as a parameter. Series and points come from the raw
 * table, or from the 5-minute and hourly rollups of sql/0009_metrics.sql
 * when those answer the query exactly (their sums and counts make coarser
 * averages exact). Page tokens carry the clock reading of the first page,
 * so that later pages of a window relative to "now" see the same window.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "common/call.h"
#include "common/page.h"
#include "common/parse.h"
#include "common/text.h"
#include "metrics/ingest.h"
#include "metrics/service.h"
#include "util/clock.h"

#define PAGE_TOKEN_MAX                                                                                                 \
	4096 /* a cursor holds a metric name and an endpoint of up to 500 four-byte characters, in base64 */
#define MINUTE_MS INT64_C(60000)
#define HOUR_MS INT64_C(3600000)
#define DAY_MS INT64_C(86400000)
#define FILTER_VALUES_MAX 100      /* values per repeated filter field */
#define GROUP_BY_MAX 8             /* group_by keys */
#define SERIES_MAX 1000            /* series per QueryMetrics */
#define MAX_POINTS_DEFAULT 1000    /* points per series */
#define MAX_POINTS_CAP 10000       /* points per series */
#define RESPONSE_POINTS_MAX 100000 /* points per QueryMetrics response; a page holds fewer series beyond */
#define TREND_BUCKETS_MAX 10000    /* buckets per GetPerformanceTrend */
#define TAG_KEYS_MAX 100           /* tag keys listed per metric name */

static char *ms_text(struct arena *a, int64_t ms)
{
	return arena_printf(a, "%" PRId64, ms);
}

/* Floor and ceiling of ms to a multiple of width_ms (epoch-aligned buckets). */
static int64_t floor_to(int64_t ms, int64_t width_ms)
{
	int64_t q = ms / width_ms;
	if (ms % width_ms != 0 && ms < 0)
		q--;
	return q * width_ms;
}

static int64_t ceil_to(int64_t ms, int64_t width_ms)
{
	int64_t f = floor_to(ms, width_ms);
	return f == ms ? f : f + width_ms;
}

/* Text as unpadded base64url (no ',' or '|'), in the arena. */
static char *b64_text(struct arena *a, const char *text)
{
	size_t n = strlen(text);
	size_t len = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char *out = arena_alloc(a, len);
	if (out == NULL)
		return NULL;
	sodium_bin2base64(out, len, (const unsigned char *)text, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return out;
}

/* The text of b64 (n bytes) into the arena; NULL when malformed or holding a NUL. */
static char *b64_decode(struct arena *a, const char *b64, size_t n)
{
	char *out = arena_alloc(a, n + 1);
	size_t bin_n = 0;
	if (out == NULL)
		return NULL;
	if (sodium_base642bin((unsigned char *)out, n, b64, n, NULL, &bin_n, NULL,
	                      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
	    memchr(out, '\0', bin_n) != NULL)
		return NULL;
	out[bin_n] = '\0';
	return out;
}

/* Splits cursor (modified in place) at ','; exactly want fields or false. */
static bool split_cursor(char *cursor, char **fields, int want)
{
	int n = 0;
	char *p = cursor;
	while (n < want) {
		fields[n++] = p;
		char *comma = strchr(p, ',');
		if (comma == NULL)
			break;
		*comma = '\0';
		p = comma + 1;
	}
	return n == want && strchr(fields[want - 1], ',') == NULL;
}

static bool is_int_text(const char *p, bool is_signed)
{
	if (is_signed && *p == '-')
		p++;
	size_t n = strlen(p);
	if (n == 0 || n > 18)
		return false;
	for (size_t i = 0; i < n; i++)
		if (p[i] < '0' || p[i] > '9')
			return false;
	return true;
}

/* A clock reading of a page token: milliseconds since the epoch up to 9999-12-31. */
static bool is_clock_text(const char *p)
{
	return is_int_text(p, false) && svc_parse_i64(p) <= SVC_TIMESTAMP_SECONDS_MAX * 1000;
}

/*
 * A time range to [start, end) in milliseconds: end absent is now_ms, start
 * absent is end minus default_ms; start after end is MON_EINVAL.
 */
static int read_range(const Monitoring__V1__TimeRange *tr, int64_t now_ms, int64_t default_ms, int64_t *start_ms,
                      int64_t *end_ms, struct mon_error *err)
{
	*end_ms = now_ms;
	if (tr != NULL && tr->end_time != NULL) {
		int rc = svc_time_ms("time_range.end_time", tr->end_time, end_ms, err);
		if (rc != 0)
			return rc;
	}
	*start_ms = *end_ms - default_ms;
	if (tr != NULL && tr->start_time != NULL) {
		int rc = svc_time_ms("time_range.start_time", tr->start_time, start_ms, err);
		if (rc != 0)
			return rc;
	}
	if (*start_ms > *end_ms)
		return mon_error_set(err, MON_EINVAL, "time_range: start_time is after end_time");
	return 0;
}

/* ---- the call ---- */

struct call {
	struct rpc_ctx *ctx;
	struct arena *arena;
	const struct metrics_service *svc;
	struct db_pool *pool;
};

static void call_init(struct call *c, struct rpc_ctx *ctx)
{
	c->ctx = ctx;
	c->arena = rpc_ctx_arena(ctx);
	c->svc = metrics_service_of(ctx);
	c->pool = c->svc->pool;
}

/* One transaction bounded by the call's deadline (svc_run_tx). */
static int run_tx(struct call *c, db_tx_fn fn, void *arg)
{
	return svc_run_tx(c->ctx, c->pool, fn, arg);
}

/* ---- filters ---- */

/*
 * A MetricFilter as SQL parameters (NULL where the field is empty): text[]
 * literals of metric names, endpoints and methods, an integer[] literal of
 * status codes and a jsonb object of tags; and a canonical JSON text of it
 * for page tokens.
 */
struct filter {
	const char *names;
	const char *endpoints;
	const char *methods;
	const char *status_codes;
	const char *tags;
	bool has_raw_only; /* methods, status codes or tags: not in the rollups */
	json_t *canon;     /* owned */
};

/* An SQL array literal of strings, each double-quoted and escaped, in the arena. */
static char *array_literal(struct arena *a, char *const *values, size_t n)
{
	size_t cap = 3;
	for (size_t i = 0; i < n; i++)
		cap += strlen(values[i]) * 2 + 3;
	char *text = arena_alloc(a, cap);
	if (text == NULL)
		return NULL;
	size_t k = 0;
	text[k++] = '{';
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			text[k++] = ',';
		text[k++] = '"';
		for (const char *p = values[i]; *p; p++) {
			if (*p == '"' || *p == '\\')
				text[k++] = '\\';
			text[k++] = *p;
		}
		text[k++] = '"';
	}
	text[k++] = '}';
	text[k] = '\0';
	return text;
}

static json_t *json_strings(char *const *values, size_t n)
{
	json_t *arr = json_array();
	for (size_t i = 0; arr != NULL && i < n; i++)
		json_array_append_new(arr, json_string(values[i]));
	return arr;
}

static void filter_free(struct filter *f)
{
	json_decref(f->canon);
	f->canon = NULL;
}

/* Checks m (may be NULL) and fills f; MON_EINVAL naming "filter.<field>[i]". */
static int filter_read(struct arena *a, const Monitoring__V1__MetricFilter *m, struct filter *f, struct mon_error *err)
{
	char field[64];
	static const Monitoring__V1__MetricFilter empty = MONITORING__V1__METRIC_FILTER__INIT;
	memset(f, 0, sizeof(*f));
	f->canon = json_array();
	if (f->canon == NULL)
		return svc_fail_nomem(err);
	if (m == NULL)
		m = &empty; /* an absent filter and an empty one make the same page tokens */
	struct {
		const char *name;
		size_t n;
	} lists[] = {{"metric_names", m->n_metric_names},
	             {"endpoints", m->n_endpoints},
	             {"methods", m->n_methods},
	             {"status_codes", m->n_status_codes}};
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		if (lists[i].n > FILTER_VALUES_MAX)
			return mon_error_set(err, MON_EINVAL, "filter.%s: at most %d values", lists[i].name,
			                     FILTER_VALUES_MAX);
	if (m->n_tags > METRICS_TAGS_MAX)
		return mon_error_set(err, MON_EINVAL, "filter.tags: at most %d keys", METRICS_TAGS_MAX);
	for (size_t i = 0; i < m->n_metric_names; i++) {
		snprintf(field, sizeof(field), "filter.metric_names[%zu]", i);
		int rc = svc_check_text(field, m->metric_names[i], 1, METRICS_NAME_MAX, 0, 0, err);
		if (rc != 0)
			return rc;
	}
	for (size_t i = 0; i < m->n_endpoints; i++) {
		snprintf(field, sizeof(field), "filter.endpoints[%zu]", i);
		int rc = svc_check_text(field, m->endpoints[i], 0, METRICS_ENDPOINT_MAX, 0, 0, err);
		if (rc != 0)
			return rc;
	}
	for (size_t i = 0; i < m->n_methods; i++) {
		snprintf(field, sizeof(field), "filter.methods[%zu]", i);
		int rc = svc_check_text(field, m->methods[i], 1, 10, 0, 0, err);
		if (rc != 0)
			return rc;
	}
	for (size_t i = 0; i < m->n_status_codes; i++)
		if (m->status_codes[i] < 100 || m->status_codes[i] > 599)
			return mon_error_set(err, MON_EINVAL, "filter.status_codes[%zu]: must be 100 to 599", i);
	json_t *tags = json_object();
	if (tags == NULL)
		return svc_fail_nomem(err);
	for (size_t i = 0; i < m->n_tags; i++) {
		const char *key = m->tags[i]->key ? m->tags[i]->key : "";
		const char *value = m->tags[i]->value ? m->tags[i]->value : "";
		snprintf(field, sizeof(field), "filter.tags[\"%.20s\"]", key);
		int rc = key[0] == '\0' ? mon_error_set(err, MON_EINVAL, "filter.tags: keys must not be empty") : 0;
		if (rc == 0 && strlen(key) > METRICS_TAG_KEY_MAX)
			rc = mon_error_set(err, MON_EINVAL, "filter.tags: keys of at most %d bytes",
			                   METRICS_TAG_KEY_MAX);
		if (rc == 0)
			rc = svc_check_text("filter.tags", key, 1, METRICS_TAG_KEY_MAX, 0, 0, err);
		if (rc == 0 && strlen(value) > METRICS_TAG_VALUE_MAX)
			rc = mon_error_set(err, MON_EINVAL, "%s: at most %d bytes", field, METRICS_TAG_VALUE_MAX);
		if (rc == 0)
			rc = svc_check_text(field, value, 0, METRICS_TAG_VALUE_MAX, 0, 0, err);
		if (rc != 0) {
			json_decref(tags);
			return rc;
		}
		json_object_set_new(tags, key, json_string(value));
	}
	struct arena_str codes;
	arena_str_init(&codes, a);
	arena_str_append(&codes, "{");
	for (size_t i = 0; i < m->n_status_codes; i++)
		arena_str_printf(&codes, "%s%" PRId32, i ? "," : "", m->status_codes[i]);
	arena_str_append(&codes, "}");
	json_t *codes_json = json_array();
	for (size_t i = 0; codes_json != NULL && i < m->n_status_codes; i++)
		json_array_append_new(codes_json, json_integer(m->status_codes[i]));
	f->names = m->n_metric_names ? array_literal(a, m->metric_names, m->n_metric_names) : NULL;
	f->endpoints = m->n_endpoints ? array_literal(a, m->endpoints, m->n_endpoints) : NULL;
	f->methods = m->n_methods ? array_literal(a, m->methods, m->n_methods) : NULL;
	f->status_codes = m->n_status_codes ? arena_str_get(&codes) : NULL;
	char *tags_text = m->n_tags ? json_dumps(tags, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	f->tags = tags_text ? arena_strdup(a, tags_text) : NULL;
	free(tags_text);
	f->has_raw_only = m->n_methods > 0 || m->n_status_codes > 0 || m->n_tags > 0;
	json_array_append_new(f->canon, json_strings(m->metric_names, m->n_metric_names));
	json_array_append_new(f->canon, json_strings(m->endpoints, m->n_endpoints));
	json_array_append_new(f->canon, json_strings(m->methods, m->n_methods));
	json_array_append_new(f->canon, codes_json);
	json_array_append_new(f->canon, tags);
	if ((m->n_metric_names && f->names == NULL) || (m->n_endpoints && f->endpoints == NULL) ||
	    (m->n_methods && f->methods == NULL) || (m->n_status_codes && f->status_codes == NULL) ||
	    (m->n_tags && f->tags == NULL))
		return svc_fail_nomem(err);
	return 0;
}

/*
 * The SQL condition of a filter over tb_performance_metric, its five
 * parameters numbered a to e. Literal text joined at compile time: it is
 * formatted into queries as is, and can never be NULL or cut short.
 */
#define FILTER_SQL(a, b, c, d, e)                                                                                      \
	"($" #a "::text[] IS NULL OR metric_name = ANY($" #a "::text[]))"                                              \
	" AND ($" #b "::text[] IS NULL OR endpoint = ANY($" #b "::text[]))"                                            \
	" AND ($" #c "::text[] IS NULL OR method = ANY($" #c "::text[]))"                                              \
	" AND ($" #d "::integer[] IS NULL OR status_code = ANY($" #d "::integer[]))"                                   \
	" AND ($" #e "::jsonb IS NULL OR tags @> $" #e "::jsonb)"

/* The same over a rollup table, which has metric names and endpoints only (the others must be NULL). */
#define FILTER_ROLLUP_SQL(a, b, c, d, e)                                                                               \
	"($" #a "::text[] IS NULL OR metric_name = ANY($" #a "::text[]))"                                              \
	" AND ($" #b "::text[] IS NULL OR endpoint = ANY($" #b "::text[]))"                                            \
	" AND $" #c "::text[] IS NULL AND $" #d "::integer[] IS NULL AND $" #e "::jsonb IS NULL"

static void filter_params(const struct filter *f, const char **params)
{
	params[0] = f->names;
	params[1] = f->endpoints;
	params[2] = f->methods;
	params[3] = f->status_codes;
	params[4] = f->tags;
}

/* The canonical text of a request for its page tokens: kind, extra fields, then the filter. */
static char *filters_text(struct arena *a, const char *kind, json_t *extra, const struct filter *f)
{
	json_t *all = json_pack("[s,O,O]", kind, extra, f->canon);
	char *text = all ? json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	char *out = text ? arena_strdup(a, text) : NULL;
	free(text);
	json_decref(all);
	return out;
}

/* ---- rollups, and raw points in their shape ---- */

/*
 * The columns of a rollup row that queries aggregate. Rows of either rollup
 * and rows made from raw points (raw_rollup_sql) have them alike, so that a
 * query adds up stored buckets and raw points in one GROUP BY: sums and
 * counts make every average exact, whichever rows it combines.
 */
#define ROLLUP_ROW_COLUMNS                                                                                             \
	"avg_p50, avg_p95, avg_p99, data_points, total_requests, total_errors, p50_sum, p50_n, p95_sum, p95_n,"        \
	" p99_sum, p99_n, error_rate_sum, error_rate_n"

/*
 * Rows of table (a rollup) whose buckets start in [lo_ms, hi_ms), passing
 * filter_sql (metric names and endpoints only); columns bucket,
 * metric_name, endpoint, then ROLLUP_ROW_COLUMNS.
 */
static char *stored_rollup_sql(struct arena *a, const char *table, int64_t lo_ms, int64_t hi_ms, const char *filter_sql)
{
	return arena_printf(a,
	                    "SELECT bucket, metric_name, endpoint, " ROLLUP_ROW_COLUMNS " FROM %s"
	                    " WHERE bucket >= 'epoch'::timestamptz + %" PRId64 " * interval '1 millisecond'"
	                    " AND bucket < 'epoch'::timestamptz + %" PRId64 " * interval '1 millisecond' AND %s",
	                    table, lo_ms, hi_ms, filter_sql);
}

/*
 * The raw points of [lo_ms, hi_ms) passing filter_sql, aggregated as the
 * rollup job aggregates them into buckets of width_ms: the same columns as
 * stored_rollup_sql.
 */
static char *raw_rollup_sql(struct arena *a, int64_t width_ms, int64_t lo_ms, int64_t hi_ms, const char *filter_sql)
{
	return arena_printf(
	        a,
	        "SELECT date_bin(interval '%" PRId64 " seconds', time, timestamptz '1970-01-01 00:00:00+00') AS bucket,"
	        " metric_name, endpoint, avg(p50) AS avg_p50, avg(p95) AS avg_p95, avg(p99) AS avg_p99,"
	        " count(*) AS data_points, sum(request_count)::bigint AS total_requests,"
	        " sum(error_count)::bigint AS total_errors, sum(p50) AS p50_sum, count(p50) AS p50_n, sum(p95) AS p95_sum,"
	        " count(p95) AS p95_n, sum(p99) AS p99_sum, count(p99) AS p99_n, sum(error_rate) AS error_rate_sum,"
	        " count(error_rate) AS error_rate_n FROM tb_performance_metric"
	        " WHERE time >= 'epoch'::timestamptz + %" PRId64 " * interval '1 millisecond'"
	        " AND time < 'epoch'::timestamptz + %" PRId64 " * interval '1 millisecond' AND %s GROUP BY 1, 2, 3",
	        width_ms / 1000, lo_ms, hi_ms, filter_sql);
}

/*
 * The first instant (ms) from which the rollups may be behind the raw
 * points (mon_metric_rollup_valid_before, sql/0014): a full rebuild not yet
 * there, or batches not yet aggregated. INT64_MAX when none.
 */
static int rollup_valid_before(struct db_conn *conn, const struct metrics_service *svc, int64_t *out_ms,
                               struct mon_error *err)
{
	struct db_result *res = NULL;
	char days[16];
	snprintf(days, sizeof(days), "%d", svc->raw_retention_days);
	const char *params[] = {days};
	int rc = db_exec(conn,
	                 "SELECT (extract(epoch FROM v) * 1000)::bigint FROM (SELECT mon_metric_rollup_valid_before("
	                 "date_bin('5 minutes', now() - $1::integer * interval '1 day', TIMESTAMPTZ 'epoch')) AS v) s"
	                 " WHERE v < 'infinity'",
	                 1, params, &res, err);
	if (rc != 0)
		return rc;
	*out_ms = db_result_rows(res) == 1 && !db_result_is_null(res, 0, 0) ? svc_parse_i64(db_result_value(res, 0, 0))
	                                                                    : INT64_MAX;
	db_result_free(res);
	return 0;
}

/*
 * The start of a read of several statements: one snapshot for all of them
 * (points keep arriving), and, when the rollups may answer, the first
 * instant from which they may be behind (rollup_valid_before; INT64_MAX
 * otherwise).
 */
static int read_snapshot(struct db_conn *conn, const struct metrics_service *svc, bool can_use_rollup,
                         int64_t *valid_ms, struct mon_error *err)
{
	*valid_ms = INT64_MAX;
	int rc = db_exec(conn, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", 0, NULL, NULL, err);
	if (rc == 0 && can_use_rollup)
		rc = rollup_valid_before(conn, svc, valid_ms, err);
	return rc;
}

/*
 * Rows in the rollup shape covering exactly [start_ms, end_ms): hourly
 * rows for the whole hours, 5-minute rows for the whole 5-minute buckets
 * at either side, raw points for the partial buckets at the edges, and raw
 * points from valid_ms on (where the rollups may be behind).
 */
static char *exact_rollup_rows_sql(struct arena *a, int64_t start_ms, int64_t end_ms, int64_t valid_ms,
                                   const char *filter_sql)
{
	const int64_t five = 5 * MINUTE_MS;
	int64_t s5 = ceil_to(start_ms, five);
	int64_t e5 = floor_to(end_ms < valid_ms ? end_ms : valid_ms, five);
	if (e5 <= s5)
		s5 = e5 = end_ms; /* no whole bucket: every point from the raw table */
	int64_t h1 = ceil_to(s5, HOUR_MS) < e5 ? ceil_to(s5, HOUR_MS) : e5;
	int64_t h2 = floor_to(e5, HOUR_MS) > h1 ? floor_to(e5, HOUR_MS) : h1;
	char *parts[] = {
	        raw_rollup_sql(a, five, start_ms, s5, filter_sql),
	        stored_rollup_sql(a, "tb_performance_metric_5min", s5, h1, filter_sql),
	        stored_rollup_sql(a, "tb_performance_metric_hourly", h1, h2, filter_sql),
	        stored_rollup_sql(a, "tb_performance_metric_5min", h2, e5, filter_sql),
	        raw_rollup_sql(a, five, e5, end_ms, filter_sql),
	};
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		if (parts[i] == NULL)
			return NULL;
	return arena_printf(a, "%s UNION ALL %s UNION ALL %s UNION ALL %s UNION ALL %s", parts[0], parts[1], parts[2],
	                    parts[3], parts[4]);
}

/* ---- a stored point ---- */

#define POINT_COLUMNS                                                                                                  \
	"(extract(epoch FROM time) * 1000000)::bigint AS time_us, metric_name, endpoint, method, status_code, p50,"    \
	" p95, p99, mean, min, max, request_count, error_count, error_rate, throughput, tags::text AS tags,"           \
	" metric_type::text AS metric_type"

/* ---- ListMetricPoints ---- */

struct points_op {
	struct call *call;
	struct filter f;
	const char *start_ms, *end_ms;
	const char *after_us, *after_name, *after_endpoint; /* NULL: first page */
	int64_t now_ms;
	int page_size;
	const char *filters;
	Monitoring__V1__ListMetricPointsResponse *resp;
};

static int points_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct points_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	const char *sql = arena_printf(
	        a,
	        "SELECT " POINT_COLUMNS " FROM tb_performance_metric"
	        " WHERE time >= 'epoch'::timestamptz + $1::bigint * interval '1 millisecond'"
	        " AND time < 'epoch'::timestamptz + $2::bigint * interval '1 millisecond' AND %s"
	        " AND ($8::bigint IS NULL OR (time <= 'epoch'::timestamptz + $8::bigint * interval '1 microsecond'"
	        " AND (time < 'epoch'::timestamptz + $8::bigint * interval '1 microsecond'"
	        " OR (metric_name, endpoint) > ($9::text, $10::text))))"
	        " ORDER BY time DESC, metric_name, endpoint LIMIT $11::integer",
	        FILTER_SQL(3, 4, 5, 6, 7));
	char *limit = arena_printf(a, "%d", op->page_size + 1);
	if (sql == NULL || limit == NULL)
		return svc_fail_nomem(err);
	const char *params[11] = {op->start_ms, op->end_ms};
	filter_params(&op->f, params + 2);
	params[7] = op->after_us;
	params[8] = op->after_name;
	params[9] = op->after_endpoint;
	params[10] = limit;
	int rc = db_exec(conn, sql, 11, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res);
	int shown = rows > op->page_size ? op->page_size : rows;
	Monitoring__V1__ListMetricPointsResponse *r = op->resp;
	r->points = shown > 0 ? arena_calloc(a, (size_t)shown, sizeof(*r->points)) : NULL;
	if (shown > 0 && r->points == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	for (int i = 0; i < shown && rc == 0; i++)
		rc = metrics_point_from_row(a, res, i, &r->points[i], err);
	if (rc != 0)
		goto out;
	r->n_points = (size_t)shown;
	r->next_page_token = "";
	if (rows > op->page_size) {
		char *name = b64_text(a, db_result_value(res, shown - 1, 1));
		char *endpoint = b64_text(a, db_result_value(res, shown - 1, 2));
		char *cursor = name && endpoint ? arena_printf(a, "%" PRId64 ",%s,%s,%s", op->now_ms,
		                                               db_result_value(res, shown - 1, 0), name, endpoint)
		                                : NULL;
		rc = cursor ? svc_page_token_make_in(a, op->filters, cursor, PAGE_TOKEN_MAX, &r->next_page_token, err)
		            : svc_fail_nomem(err);
	}
out:
	db_result_free(res);
	return rc;
}

/* ListMetricPoints (viewer): stored points in [start, end), newest first, then by name and endpoint. */
static int list_metric_points(struct rpc_ctx *ctx, const Monitoring__V1__ListMetricPointsRequest *req,
                              Monitoring__V1__ListMetricPointsResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct points_op op = {.call = &c, .resp = resp, .now_ms = mon_wall_ms()};
	char *cursor = NULL;
	char *fields[4];
	int64_t start_ms, end_ms;
	const Monitoring__V1__TimeRange *tr = req->time_range;
	int rc = svc_page_size(req->page_size, 500, 5000, &op.page_size, &err);
	if (rc == 0)
		rc = filter_read(c.arena, req->filter, &op.f, &err);
	if (rc != 0)
		goto out;
	json_t *extra = json_pack("[s,s]", tr && tr->start_time ? "start" : "-", tr && tr->end_time ? "end" : "-");
	if (tr != NULL && tr->start_time != NULL)
		json_array_append_new(
		        extra, json_pack("[I,i]", (json_int_t)tr->start_time->seconds, (int)tr->start_time->nanos));
	if (tr != NULL && tr->end_time != NULL)
		json_array_append_new(extra,
		                      json_pack("[I,i]", (json_int_t)tr->end_time->seconds, (int)tr->end_time->nanos));
	op.filters = filters_text(c.arena, "points", extra, &op.f);
	json_decref(extra);
	if (op.filters == NULL) {
		rc = svc_fail_nomem(&err);
		goto out;
	}
	if (req->page_token != NULL && req->page_token[0] != '\0') {
		rc = svc_page_token_read_in(c.arena, req->page_token, op.filters, PAGE_TOKEN_MAX, &cursor, &err);
		if (rc != 0)
			goto out;
		if (!split_cursor(cursor, fields, 4) || !is_clock_text(fields[0]) || !is_int_text(fields[1], true) ||
		    (op.after_name = b64_decode(c.arena, fields[2], strlen(fields[2]))) == NULL ||
		    (op.after_endpoint = b64_decode(c.arena, fields[3], strlen(fields[3]))) == NULL) {
			rc = mon_error_set(&err, MON_EINVAL, "page_token: malformed");
			goto out;
		}
		op.now_ms = svc_parse_i64(fields[0]);
		op.after_us = fields[1];
	}
	rc = read_range(tr, op.now_ms, HOUR_MS, &start_ms, &end_ms, &err);
	if (rc != 0)
		goto out;
	op.start_ms = ms_text(c.arena, start_ms);
	op.end_ms = ms_text(c.arena, end_ms);
	if (op.start_ms == NULL || op.end_ms == NULL) {
		rc = svc_fail_nomem(&err);
		goto out;
	}
	filter_free(&op.f);
	return run_tx(&c, points_tx, &op);
out:
	filter_free(&op.f);
	return rpc_fail(ctx, rc, "%s", err.msg);
}

/* ---- ListMetricNames ---- */

struct names_op {
	struct call *call;
	const char *prefix;
	const char *after; /* NULL: first page */
	int page_size;
	const char *filters;
	Monitoring__V1__ListMetricNamesResponse *resp;
};

static int names_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	/*
	 * Distinct names by a skip scan of the name index (one probe per
	 * name), then each name's figures from the same index.
	 */
	static const char sql[] =
	        "WITH RECURSIVE names(n) AS ("
	        " (SELECT metric_name::text FROM tb_performance_metric WHERE ($1::text IS NULL OR metric_name > $1)"
	        " ORDER BY metric_name LIMIT 1)"
	        " UNION ALL"
	        " SELECT (SELECT metric_name::text FROM tb_performance_metric WHERE metric_name > names.n"
	        " ORDER BY metric_name LIMIT 1) FROM names WHERE names.n IS NOT NULL)"
	        " SELECT x.n, l.metric_type::text, (extract(epoch FROM f.first) * 1000000)::bigint,"
	        " (extract(epoch FROM l.time) * 1000000)::bigint, d.endpoint_count,"
	        " array_to_json(k.tag_keys)::text"
	        " FROM (SELECT n FROM names WHERE n IS NOT NULL AND starts_with(n, $2) LIMIT $3::integer) x"
	        " CROSS JOIN LATERAL (SELECT p.time, p.metric_type FROM tb_performance_metric p"
	        " WHERE p.metric_name = x.n ORDER BY p.time DESC, p.endpoint LIMIT 1) l"
	        " CROSS JOIN LATERAL (SELECT min(p.time) AS first FROM tb_performance_metric p"
	        " WHERE p.metric_name = x.n) f"
	        " CROSS JOIN LATERAL (SELECT count(DISTINCT p.endpoint) FILTER (WHERE p.endpoint <> '') AS "
	        "endpoint_count"
	        " FROM tb_performance_metric p WHERE p.metric_name = x.n AND p.time >= now() - interval '24 hours') d"
	        " CROSS JOIN LATERAL (SELECT coalesce(array_agg(t.key ORDER BY t.key), '{}') AS tag_keys FROM"
	        " (SELECT DISTINCT jsonb_object_keys(p.tags) AS key FROM tb_performance_metric p"
	        " WHERE p.metric_name = x.n AND p.time >= now() - interval '24 hours'"
	        " AND jsonb_typeof(p.tags) = 'object' ORDER BY 1 LIMIT 100) t) k"
	        " ORDER BY x.n";
	_Static_assert(TAG_KEYS_MAX == 100, "the query above names the limit");
	struct names_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	char limit[16];
	snprintf(limit, sizeof(limit), "%d", op->page_size + 1);
	const char *params[] = {op->after, op->prefix, limit};
	int rc = db_exec(conn, sql, 3, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res);
	int shown = rows > op->page_size ? op->page_size : rows;
	Monitoring__V1__ListMetricNamesResponse *r = op->resp;
	r->metrics = shown > 0 ? arena_calloc(a, (size_t)shown, sizeof(*r->metrics)) : NULL;
	if (shown > 0 && r->metrics == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	for (int i = 0; i < shown; i++) {
		Monitoring__V1__MetricDescriptor *d = arena_alloc(a, sizeof(*d));
		if (d == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		monitoring__v1__metric_descriptor__init(d);
		d->metric_name = arena_strdup(a, db_result_value(res, i, 0));
		d->metric_type = metrics_type_from_label(db_result_value(res, i, 1));
		d->first_seen = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, i, 2)));
		d->last_seen = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, i, 3)));
		d->endpoint_count = (int32_t)svc_parse_i64(db_result_value(res, i, 4));
		json_t *keys = json_loads(db_result_value(res, i, 5), 0, NULL);
		size_t n = json_array_size(keys);
		d->tag_keys = n ? arena_calloc(a, n, sizeof(*d->tag_keys)) : NULL;
		for (size_t k = 0; d->tag_keys != NULL && k < n; k++)
			if ((d->tag_keys[d->n_tag_keys] =
			             arena_strdup(a, json_string_value(json_array_get(keys, k)))) != NULL)
				d->n_tag_keys++;
		json_decref(keys);
		if (d->metric_name == NULL || d->first_seen == NULL || d->last_seen == NULL || d->n_tag_keys != n) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		r->metrics[i] = d;
	}
	r->n_metrics = (size_t)shown;
	r->next_page_token = "";
	if (rows > op->page_size) {
		char *cursor = b64_text(a, db_result_value(res, shown - 1, 0));
		rc = cursor ? svc_page_token_make_in(a, op->filters, cursor, PAGE_TOKEN_MAX, &r->next_page_token, err)
		            : svc_fail_nomem(err);
	}
out:
	db_result_free(res);
	return rc;
}

/* ListMetricNames (viewer): names of the stored points, by name, optionally by prefix. */
static int list_metric_names(struct rpc_ctx *ctx, const Monitoring__V1__ListMetricNamesRequest *req,
                             Monitoring__V1__ListMetricNamesResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct names_op op = {.call = &c, .resp = resp, .prefix = req->name_prefix ? req->name_prefix : ""};
	int rc = svc_page_size(req->page_size, 100, 1000, &op.page_size, &err);
	if (rc == 0)
		rc = svc_check_text("name_prefix", op.prefix, 0, METRICS_NAME_MAX, 0, 0, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	char *prefix64 = b64_text(c.arena, op.prefix);
	op.filters = prefix64 ? arena_printf(c.arena, "names|%s", prefix64) : NULL;
	if (op.filters == NULL)
		return svc_nomem(ctx);
	if (req->page_token != NULL && req->page_token[0] != '\0') {
		char *cursor = NULL;
		if (svc_page_token_read_in(c.arena, req->page_token, op.filters, PAGE_TOKEN_MAX, &cursor, &err) != 0)
			return rpc_fail(ctx, err.code, "%s", err.msg);
		if ((op.after = b64_decode(c.arena, cursor, strlen(cursor))) == NULL || op.after[0] == '\0')
			return rpc_fail(ctx, MON_EINVAL, "page_token: malformed");
	}
	return run_tx(&c, names_tx, &op);
}

/* ---- GetPerformanceSummary ---- */

struct summary_op {
	struct call *call;
	struct filter f;
	int64_t start_ms, end_ms;
	int limit;
	Monitoring__V1__GetPerformanceSummaryResponse *resp;
};

static int summary_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct summary_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	/*
	 * The data model's "API performance summary", with data_points and
	 * total_requests told apart. Without methods, status codes or tags in
	 * the filter, from the rollups for whole buckets and the raw points
	 * for the edges (exact_rollup_rows_sql): the same sums and counts, so
	 * the same answer as the raw points alone, at the cost of the buckets
	 * rather than the points.
	 */
	const char *sql;
	if (op->f.has_raw_only) {
		sql = arena_printf(
		        a,
		        "SELECT endpoint, count(*), coalesce(sum(request_count), 0), round(avg(p50), 2)::float8,"
		        " round(avg(p95), 2)::float8, round(avg(p99), 2)::float8,"
		        " round(avg(error_rate), 2)::float8, coalesce(sum(error_count), 0)"
		        " FROM tb_performance_metric"
		        " WHERE time >= 'epoch'::timestamptz + $1::bigint * interval '1 millisecond'"
		        " AND time < 'epoch'::timestamptz + $2::bigint * interval '1 millisecond'"
		        " AND endpoint <> '' AND %s"
		        " GROUP BY endpoint ORDER BY 3 DESC, 2 DESC, endpoint LIMIT $8::integer",
		        FILTER_SQL(3, 4, 5, 6, 7));
	} else {
		int64_t valid_ms = INT64_MAX;
		int rc = read_snapshot(conn, op->call->svc, true, &valid_ms, err);
		/*
		 * Tens of thousands of rollup rows at most: starting parallel
		 * workers costs more than they save (measured: 45 ms serial
		 * against 60-90 ms with two workers, 1158 endpoints, 2 CPUs).
		 */
		if (rc == 0)
			rc = db_exec(conn, "SET LOCAL max_parallel_workers_per_gather = 0", 0, NULL, NULL, err);
		if (rc != 0)
			return rc;
		char *rows_sql = exact_rollup_rows_sql(a, op->start_ms, op->end_ms, valid_ms,
		                                       "endpoint <> '' AND " FILTER_ROLLUP_SQL(3, 4, 5, 6, 7));
		sql = rows_sql ? arena_printf(a,
		                              "SELECT endpoint, sum(data_points), coalesce(sum(total_requests), 0),"
		                              " round(sum(p50_sum) / nullif(sum(p50_n), 0), 2)::float8,"
		                              " round(sum(p95_sum) / nullif(sum(p95_n), 0), 2)::float8,"
		                              " round(sum(p99_sum) / nullif(sum(p99_n), 0), 2)::float8,"
		                              " round(sum(error_rate_sum) / nullif(sum(error_rate_n), 0), 2)::float8,"
		                              " coalesce(sum(total_errors), 0)"
		                              " FROM (%s) u" /* the window is in the parts; $1 and $2 typed only */
		                              " WHERE $1::bigint IS NOT NULL AND $2::bigint IS NOT NULL"
		                              " GROUP BY endpoint ORDER BY 3 DESC, 2 DESC, endpoint LIMIT $8::integer",
		                              rows_sql)
		               : NULL;
	}
	char *start = ms_text(a, op->start_ms), *end = ms_text(a, op->end_ms),
	     *limit = arena_printf(a, "%d", op->limit);
	if (sql == NULL || start == NULL || end == NULL || limit == NULL)
		return svc_fail_nomem(err);
	const char *params[8] = {start, end};
	filter_params(&op->f, params + 2);
	params[7] = limit;
	int rc = db_exec(conn, sql, 8, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res);
	Monitoring__V1__GetPerformanceSummaryResponse *r = op->resp;
	r->endpoints = rows > 0 ? arena_calloc(a, (size_t)rows, sizeof(*r->endpoints)) : NULL;
	Monitoring__V1__TimeRange *tr = arena_alloc(a, sizeof(*tr));
	if ((rows > 0 && r->endpoints == NULL) || tr == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	monitoring__v1__time_range__init(tr);
	tr->start_time = svc_ts_from_us(a, op->start_ms * 1000);
	tr->end_time = svc_ts_from_us(a, op->end_ms * 1000);
	r->time_range = tr;
	bool is_ok = tr->start_time != NULL && tr->end_time != NULL;
	for (int i = 0; i < rows && is_ok; i++) {
		Monitoring__V1__EndpointPerformance *e = arena_alloc(a, sizeof(*e));
		if (e == NULL) {
			is_ok = false;
			break;
		}
		monitoring__v1__endpoint_performance__init(e);
		e->endpoint = arena_strdup(a, db_result_value(res, i, 0));
		e->data_points = svc_parse_i64(db_result_value(res, i, 1));
		e->total_requests = svc_parse_i64(db_result_value(res, i, 2));
		e->avg_p50 = svc_double_from_col(a, res, i, 3, &is_ok);
		e->avg_p95 = svc_double_from_col(a, res, i, 4, &is_ok);
		e->avg_p99 = svc_double_from_col(a, res, i, 5, &is_ok);
		e->avg_error_rate = svc_double_from_col(a, res, i, 6, &is_ok);
		e->total_errors = svc_parse_i64(db_result_value(res, i, 7));
		is_ok = is_ok && e->endpoint != NULL;
		r->endpoints[i] = e;
	}
	if (!is_ok) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	r->n_endpoints = (size_t)rows;
out:
	db_result_free(res);
	return rc;
}

/* GetPerformanceSummary (viewer): per endpoint over [start, end), default the last 24 hours. */
static int get_performance_summary(struct rpc_ctx *ctx, const Monitoring__V1__GetPerformanceSummaryRequest *req,
                                   Monitoring__V1__GetPerformanceSummaryResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct summary_op op = {.call = &c, .resp = resp};
	int rc = read_range(req->time_range, mon_wall_ms(), DAY_MS, &op.start_ms, &op.end_ms, &err);
	if (rc == 0 && (req->limit < 0 || req->limit > 1000))
		rc = mon_error_set(&err, MON_EINVAL, "limit: must be 0 to 1000");
	if (rc == 0)
		rc = filter_read(c.arena, req->filter, &op.f, &err);
	filter_free(&op.f);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	op.limit = req->limit == 0 ? 20 : req->limit;
	return run_tx(&c, summary_tx, &op);
}

/* ---- ListSlowestEndpoints ---- */

struct slowest_op {
	struct call *call;
	struct filter f;
	int64_t now_ms;
	const char *start_ms, *end_ms;
	const char *threshold;
	const char *after_avg, *after_endpoint; /* NULL: first page */
	int page_size;
	const char *filters;
	Monitoring__V1__ListSlowestEndpointsResponse *resp;
};

static int slowest_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct slowest_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	/* The data model's "slowest endpoints", paged by (avg_p95 descending, endpoint). */
	const char *sql = arena_printf(
	        a,
	        "SELECT endpoint, avg(p95)::float8, max(p99)::float8, count(*), round(avg(error_rate), 2)::float8,"
	        " avg(p95)::text"
	        " FROM tb_performance_metric"
	        " WHERE time >= 'epoch'::timestamptz + $1::bigint * interval '1 millisecond'"
	        " AND time < 'epoch'::timestamptz + $2::bigint * interval '1 millisecond'"
	        " AND p95 > $8::numeric AND %s"
	        " GROUP BY endpoint"
	        " HAVING $9::numeric IS NULL OR avg(p95) < $9::numeric OR (avg(p95) = $9::numeric AND endpoint > $10)"
	        " ORDER BY avg(p95) DESC, endpoint LIMIT $11::integer",
	        FILTER_SQL(3, 4, 5, 6, 7));
	char *limit = arena_printf(a, "%d", op->page_size + 1);
	if (sql == NULL || limit == NULL)
		return svc_fail_nomem(err);
	const char *params[11] = {op->start_ms, op->end_ms};
	filter_params(&op->f, params + 2);
	params[7] = op->threshold;
	params[8] = op->after_avg;
	params[9] = op->after_endpoint;
	params[10] = limit;
	int rc = db_exec(conn, sql, 11, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res);
	int shown = rows > op->page_size ? op->page_size : rows;
	Monitoring__V1__ListSlowestEndpointsResponse *r = op->resp;
	r->endpoints = shown > 0 ? arena_calloc(a, (size_t)shown, sizeof(*r->endpoints)) : NULL;
	bool is_ok = shown == 0 || r->endpoints != NULL;
	for (int i = 0; i < shown && is_ok; i++) {
		Monitoring__V1__SlowEndpoint *e = arena_alloc(a, sizeof(*e));
		if (e == NULL) {
			is_ok = false;
			break;
		}
		monitoring__v1__slow_endpoint__init(e);
		e->endpoint = arena_strdup(a, db_result_value(res, i, 0));
		e->avg_p95 = strtod(db_result_value(res, i, 1), NULL);
		e->max_p99 = svc_double_from_col(a, res, i, 2, &is_ok);
		e->data_points = svc_parse_i64(db_result_value(res, i, 3));
		e->avg_error_rate = svc_double_from_col(a, res, i, 4, &is_ok);
		is_ok = is_ok && e->endpoint != NULL;
		r->endpoints[i] = e;
	}
	if (!is_ok) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	r->n_endpoints = (size_t)shown;
	r->next_page_token = "";
	if (rows > op->page_size) {
		char *endpoint = b64_text(a, db_result_value(res, shown - 1, 0));
		char *cursor = endpoint ? arena_printf(a, "%" PRId64 ",%s,%s", op->now_ms,
		                                       db_result_value(res, shown - 1, 5), endpoint)
		                        : NULL;
		rc = cursor ? svc_page_token_make_in(a, op->filters, cursor, PAGE_TOKEN_MAX, &r->next_page_token, err)
		            : svc_fail_nomem(err);
	}
out:
	db_result_free(res);
	return rc;
}

/* A numeric's text as PostgreSQL writes it: digits with at most one '.', at most 64 characters. */
static bool is_numeric_text(const char *p)
{
	size_t n = strlen(p), dots = 0;
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '.')
			dots++;
		else if ((p[i] < '0' || p[i] > '9') && !(i == 0 && p[i] == '-'))
			return false;
	}
	return dots <= 1;
}

/* ListSlowestEndpoints (viewer): endpoints by the mean p95 of their points above the threshold. */
static int list_slowest_endpoints(struct rpc_ctx *ctx, const Monitoring__V1__ListSlowestEndpointsRequest *req,
                                  Monitoring__V1__ListSlowestEndpointsResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct slowest_op op = {.call = &c, .resp = resp, .now_ms = mon_wall_ms()};
	const Monitoring__V1__TimeRange *tr = req->time_range;
	double threshold = req->p95_threshold_ms ? req->p95_threshold_ms->value : 1000.0;
	char *fields[3];
	int64_t start_ms, end_ms;
	int rc = 0;
	if (!isfinite(threshold))
		rc = mon_error_set(&err, MON_EINVAL, "p95_threshold_ms: must be finite");
	else if (threshold < 0)
		rc = mon_error_set(&err, MON_EINVAL, "p95_threshold_ms: must not be negative");
	if (rc == 0)
		rc = svc_page_size(req->page_size, 50, 500, &op.page_size, &err);
	if (rc == 0)
		rc = filter_read(c.arena, req->filter, &op.f, &err);
	if (rc != 0)
		goto out;
	op.threshold = arena_printf(c.arena, "%.17g", threshold);
	json_t *extra = json_pack("[f]", threshold);
	if (tr != NULL && tr->start_time != NULL)
		json_array_append_new(
		        extra, json_pack("[I,i]", (json_int_t)tr->start_time->seconds, (int)tr->start_time->nanos));
	else
		json_array_append_new(extra, json_string("-"));
	if (tr != NULL && tr->end_time != NULL)
		json_array_append_new(extra,
		                      json_pack("[I,i]", (json_int_t)tr->end_time->seconds, (int)tr->end_time->nanos));
	else
		json_array_append_new(extra, json_string("-"));
	op.filters = filters_text(c.arena, "slowest", extra, &op.f);
	json_decref(extra);
	if (op.filters == NULL || op.threshold == NULL) {
		rc = svc_fail_nomem(&err);
		goto out;
	}
	if (req->page_token != NULL && req->page_token[0] != '\0') {
		char *cursor = NULL;
		rc = svc_page_token_read_in(c.arena, req->page_token, op.filters, PAGE_TOKEN_MAX, &cursor, &err);
		if (rc != 0)
			goto out;
		if (!split_cursor(cursor, fields, 3) || !is_clock_text(fields[0]) || !is_numeric_text(fields[1]) ||
		    (op.after_endpoint = b64_decode(c.arena, fields[2], strlen(fields[2]))) == NULL) {
			rc = mon_error_set(&err, MON_EINVAL, "page_token: malformed");
			goto out;
		}
		op.now_ms = svc_parse_i64(fields[0]);
		op.after_avg = fields[1];
	}
	rc = read_range(tr, op.now_ms, DAY_MS, &start_ms, &end_ms, &err);
	if (rc != 0)
		goto out;
	op.start_ms = ms_text(c.arena, start_ms);
	op.end_ms = ms_text(c.arena, end_ms);
	if (op.start_ms == NULL || op.end_ms == NULL) {
		rc = svc_fail_nomem(&err);
		goto out;
	}
	filter_free(&op.f);
	return run_tx(&c, slowest_tx, &op);
out:
	filter_free(&op.f);
	return rpc_fail(ctx, rc, "%s", err.msg);
}

/* ---- GetPerformanceTrend ---- */

struct trend_op {
	struct call *call;
	struct filter f;
	const char *endpoint;
	bool by_metric;          /* one bucket per metric_name as well (the seed's rows) */
	int64_t row_width_ms;    /* the stored buckets (5 minutes or 1 hour) */
	int64_t bucket_width_ms; /* the buckets returned */
	int64_t lo_ms, hi_ms;    /* stored buckets starting in [lo, hi) */
	Monitoring__V1__GetPerformanceTrendResponse *resp;
};

static int trend_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct trend_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	const char *sql;
	const char *table = op->row_width_ms == HOUR_MS ? "tb_performance_metric_hourly" : "tb_performance_metric_5min";
	int64_t bucket_s = op->bucket_width_ms / 1000;
	/* per metric as well: metric_name is the last column, so the others keep their places */
	const char *by = op->by_metric ? ", metric_name" : "";
	if (op->f.has_raw_only) {
		/* Methods, status codes or tags: the rollups do not keep them, so from the raw points. */
		sql = arena_printf(
		        a,
		        "SELECT (extract(epoch FROM b) * 1000000)::bigint, endpoint, avg(p50)::float8, "
		        "avg(p95)::float8,"
		        " avg(p99)::float8, sum(request_count), sum(error_count),"
		        " round(sum(error_count)::numeric / nullif(sum(request_count), 0) * 100, 2)::float8%s"
		        " FROM (SELECT date_bin(interval '%" PRId64
		        " seconds', time, timestamptz '1970-01-01 00:00:00+00') AS b, *"
		        " FROM tb_performance_metric"
		        " WHERE time >= 'epoch'::timestamptz + $1::bigint * interval '1 millisecond'"
		        " AND time < 'epoch'::timestamptz + $2::bigint * interval '1 millisecond'"
		        " AND ($3 = '' OR endpoint = $3) AND %s) s"
		        " GROUP BY b, endpoint%s ORDER BY b DESC, endpoint%s LIMIT $9::integer",
		        by, bucket_s, FILTER_SQL(4, 5, 6, 7, 8), by, by);
	} else {
		/*
		 * The data model's "performance trend" from the rollup. One row
		 * per bucket and endpoint gives its own averages (the seed's
		 * query); several rows (several metrics, or the hours of a day)
		 * combine exactly through their sums and counts. Buckets from
		 * where the rollups may be behind (a rebuild under way, batches
		 * not yet aggregated) come from the raw points, aggregated the
		 * same way.
		 */
		int64_t valid_ms = INT64_MAX;
		int rc = read_snapshot(conn, op->call->svc, true, &valid_ms, err);
		if (rc != 0)
			return rc;
		int64_t valid_row = valid_ms == INT64_MAX ? INT64_MAX : floor_to(valid_ms, op->row_width_ms);
		int64_t mid = op->hi_ms < valid_row ? op->hi_ms : valid_row;
		if (mid < op->lo_ms)
			mid = op->lo_ms;
		const char *filter = "($3 = '' OR endpoint = $3) AND " FILTER_ROLLUP_SQL(4, 5, 6, 7, 8);
		char *stored = stored_rollup_sql(a, table, op->lo_ms, mid, filter);
		char *raw = raw_rollup_sql(a, op->row_width_ms, ceil_to(mid, op->row_width_ms),
		                           mid < op->hi_ms ? ceil_to(op->hi_ms, op->row_width_ms)
		                                           : ceil_to(mid, op->row_width_ms),
		                           filter);
		sql = stored && raw
		              ? arena_printf(
		                        a,
		                        "SELECT (extract(epoch FROM b) * 1000000)::bigint, endpoint,"
		                        " (CASE WHEN count(*) = 1 THEN min(avg_p50) ELSE sum(p50_sum) / nullif(sum(p50_n), 0)"
		                        " END)::float8,"
		                        " (CASE WHEN count(*) = 1 THEN min(avg_p95) ELSE sum(p95_sum) / nullif(sum(p95_n), 0)"
		                        " END)::float8,"
		                        " (CASE WHEN count(*) = 1 THEN min(avg_p99) ELSE sum(p99_sum) / nullif(sum(p99_n), 0)"
		                        " END)::float8,"
		                        " sum(total_requests), sum(total_errors),"
		                        " round(sum(total_errors)::numeric / nullif(sum(total_requests), 0) * 100, 2)::float8%s"
		                        " FROM (SELECT date_bin(interval '%" PRId64
		                        " seconds', bucket, timestamptz '1970-01-01 00:00:00+00') AS b, *"
		                        " FROM (%s UNION ALL %s) u) s"
		                        " WHERE $1::bigint IS NOT NULL AND $2::bigint IS NOT NULL" /* the range is in
		                                                                                      the parts */
		                        " GROUP BY b, endpoint%s ORDER BY b DESC, endpoint%s LIMIT $9::integer",
		                        by, bucket_s, stored, raw, by, by)
		              : NULL;
	}
	char *lo = ms_text(a, op->lo_ms), *hi = ms_text(a, op->hi_ms);
	char *limit = arena_printf(a, "%d", TREND_BUCKETS_MAX + 1);
	if (sql == NULL || lo == NULL || hi == NULL || limit == NULL)
		return svc_fail_nomem(err);
	const char *params[9] = {lo, hi, op->endpoint};
	filter_params(&op->f, params + 3);
	params[8] = limit;
	int rc = db_exec(conn, sql, 9, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res);
	if (rows > TREND_BUCKETS_MAX) {
		rc = mon_error_set(err, MON_ELIMIT,
		                   "buckets: more than %d (the limit per response); name an endpoint, narrow "
		                   "time_range or use a coarser granularity",
		                   TREND_BUCKETS_MAX);
		goto out;
	}
	Monitoring__V1__GetPerformanceTrendResponse *r = op->resp;
	r->buckets = rows > 0 ? arena_calloc(a, (size_t)rows, sizeof(*r->buckets)) : NULL;
	bool is_ok = rows == 0 || r->buckets != NULL;
	for (int i = 0; i < rows && is_ok; i++) {
		Monitoring__V1__PerformanceTrendBucket *b = arena_alloc(a, sizeof(*b));
		if (b == NULL) {
			is_ok = false;
			break;
		}
		monitoring__v1__performance_trend_bucket__init(b);
		b->bucket = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, i, 0)));
		b->endpoint = arena_strdup(a, db_result_value(res, i, 1));
		b->avg_p50 = svc_double_from_col(a, res, i, 2, &is_ok);
		b->avg_p95 = svc_double_from_col(a, res, i, 3, &is_ok);
		b->avg_p99 = svc_double_from_col(a, res, i, 4, &is_ok);
		b->total_requests = svc_parse_i64(db_result_value(res, i, 5));
		b->total_errors = svc_parse_i64(db_result_value(res, i, 6));
		b->error_rate_percent = svc_double_from_col(a, res, i, 7, &is_ok);
		if (op->by_metric) {
			b->metric_name = arena_strdup(a, db_result_value(res, i, 8));
			is_ok = is_ok && b->metric_name != NULL;
		}
		is_ok = is_ok && b->bucket != NULL && b->endpoint != NULL;
		r->buckets[i] = b;
	}
	if (!is_ok) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	r->n_buckets = (size_t)rows;
out:
	db_result_free(res);
	return rc;
}

/* GetPerformanceTrend (viewer): buckets of the rollups (default hourly, the last 7 days), newest first. */
static int get_performance_trend(struct rpc_ctx *ctx, const Monitoring__V1__GetPerformanceTrendRequest *req,
                                 Monitoring__V1__GetPerformanceTrendResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct trend_op op = {.call = &c,
	                      .resp = resp,
	                      .endpoint = req->endpoint ? req->endpoint : "",
	                      .by_metric = req->group_by_metric_name};
	int64_t start_ms, end_ms;
	int rc = read_range(req->time_range, mon_wall_ms(), 7 * DAY_MS, &start_ms, &end_ms, &err);
	if (rc == 0)
		rc = svc_check_text("endpoint", op.endpoint, 0, METRICS_ENDPOINT_MAX, 0, 0, &err);
	if (rc == 0) {
		switch (req->granularity) {
		case MONITORING__V1__GRANULARITY__GRANULARITY_UNSPECIFIED:
		case MONITORING__V1__GRANULARITY__GRANULARITY_AUTO:
		case MONITORING__V1__GRANULARITY__GRANULARITY_ONE_HOUR:
			resp->granularity = MONITORING__V1__GRANULARITY__GRANULARITY_ONE_HOUR;
			op.row_width_ms = op.bucket_width_ms = HOUR_MS;
			break;
		case MONITORING__V1__GRANULARITY__GRANULARITY_FIVE_MINUTES:
			resp->granularity = req->granularity;
			op.row_width_ms = op.bucket_width_ms = 5 * MINUTE_MS;
			break;
		case MONITORING__V1__GRANULARITY__GRANULARITY_ONE_DAY:
			resp->granularity = req->granularity;
			op.row_width_ms = HOUR_MS;
			op.bucket_width_ms = DAY_MS;
			break;
		case MONITORING__V1__GRANULARITY__GRANULARITY_RAW:
			rc = mon_error_set(&err, MON_EINVAL,
			                   "granularity: RAW is not a trend; use FIVE_MINUTES, ONE_HOUR or ONE_DAY");
			break;
		default:
			rc = mon_error_set(&err, MON_EINVAL, "granularity: unknown value %d", (int)req->granularity);
			break;
		}
	}
	if (rc == 0)
		rc = filter_read(c.arena, req->filter, &op.f, &err);
	if (rc != 0) {
		filter_free(&op.f);
		return rpc_fail(ctx, rc, "%s", err.msg);
	}
	/* Stored buckets that start in [start, end): for raw points, those of [ceil(start), ceil(end)). */
	op.lo_ms = op.f.has_raw_only ? ceil_to(start_ms, op.row_width_ms) : start_ms;
	op.hi_ms = op.f.has_raw_only ? ceil_to(end_ms, op.row_width_ms) : end_ms;
	filter_free(&op.f);
	return run_tx(&c, trend_tx, &op);
}

/* ---- QueryMetrics ---- */

/* What a statistic reads: its raw column and, when the rollups keep it, their sum and count columns. */
struct stat_info {
	const char *name;       /* as in messages: "P95" */
	const char *column;     /* of tb_performance_metric */
	bool is_count;          /* natural aggregation SUM (otherwise AVG) */
	const char *rollup_sum; /* NULL: not in the rollups */
	const char *rollup_n;
};

static const struct stat_info stat_infos[] = {
        [MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_P50] = {"P50", "p50", false, "p50_sum", "p50_n"},
        [MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_P95] = {"P95", "p95", false, "p95_sum", "p95_n"},
        [MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_P99] = {"P99", "p99", false, "p99_sum", "p99_n"},
        [MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_MEAN] = {"MEAN", "mean", false, NULL, NULL},
        [MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_MIN] = {"MIN", "min", false, NULL, NULL},
        [MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_MAX] = {"MAX", "max", false, NULL, NULL},
        [MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_REQUEST_COUNT] = {"REQUEST_COUNT", "request_count", true,
                                                                              "total_requests", "data_points"},
        [MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_ERROR_COUNT] = {"ERROR_COUNT", "error_count", true,
                                                                            "total_errors", "data_points"},
        [MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_ERROR_RATE] = {"ERROR_RATE", "error_rate", false,
                                                                           "error_rate_sum", "error_rate_n"},
        [MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_THROUGHPUT] = {"THROUGHPUT", "throughput", false, NULL,
                                                                           NULL},
};
#define STAT_MAX MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_THROUGHPUT

/* The SQL aggregate of statistic st under agg over the raw points; NULL when out of memory. */
static char *raw_stat_sql(struct arena *a, int st, Monitoring__V1__Aggregation agg)
{
	const char *c = stat_infos[st].column;
	if (st == MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_ERROR_RATE &&
	    agg == MONITORING__V1__AGGREGATION__AGGREGATION_AVG)
		return arena_strdup(a, "sum(error_count)::numeric / nullif(sum(request_count), 0) * 100");
	switch (agg) {
	case MONITORING__V1__AGGREGATION__AGGREGATION_SUM: return arena_printf(a, "sum(%s)", c);
	case MONITORING__V1__AGGREGATION__AGGREGATION_MIN: return arena_printf(a, "min(%s)", c);
	case MONITORING__V1__AGGREGATION__AGGREGATION_MAX: return arena_printf(a, "max(%s)", c);
	case MONITORING__V1__AGGREGATION__AGGREGATION_COUNT: return arena_printf(a, "count(%s)", c);
	case MONITORING__V1__AGGREGATION__AGGREGATION_LAST:
		return arena_printf(a, "(array_agg(%s ORDER BY time DESC, endpoint) FILTER (WHERE %s IS NOT NULL))[1]",
		                    c, c);
	default: return arena_printf(a, "avg(%s)", c);
	}
}

/* The same over a rollup table; NULL when the rollups cannot answer it (or out of memory). */
static char *rollup_stat_sql(struct arena *a, int st, Monitoring__V1__Aggregation agg)
{
	const struct stat_info *s = &stat_infos[st];
	if (s->rollup_sum == NULL)
		return NULL;
	switch (agg) {
	case MONITORING__V1__AGGREGATION__AGGREGATION_SUM: return arena_printf(a, "sum(%s)", s->rollup_sum);
	case MONITORING__V1__AGGREGATION__AGGREGATION_COUNT: return arena_printf(a, "sum(%s)", s->rollup_n);
	case MONITORING__V1__AGGREGATION__AGGREGATION_AVG:
		if (st == MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_ERROR_RATE)
			return arena_strdup(a, "sum(total_errors)::numeric / nullif(sum(total_requests), 0) * 100");
		return arena_printf(a, "sum(%s)::numeric / nullif(sum(%s), 0)", s->rollup_sum, s->rollup_n);
	default: return NULL;
	}
}

enum source { SOURCE_RAW, SOURCE_5MIN, SOURCE_HOURLY };

struct group {
	char **keys;
	int64_t raw_points; /* distinct times (RAW) */
	char hash[17];
	int row_first, row_end; /* rows of the page's data query */
};

struct query_op {
	struct call *call;
	struct filter f;
	int64_t now_ms, start_ms, end_ms;
	int stat_n;
	int stats[STAT_MAX];
	Monitoring__V1__Aggregation aggs[STAT_MAX]; /* resolved */
	int group_by_n;
	char **group_by;          /* as requested */
	int key_of[GROUP_BY_MAX]; /* key column of each group_by entry (0: metric_name) */
	const char *key_sql[GROUP_BY_MAX + 1];
	int key_n;
	const char *tag_keys[GROUP_BY_MAX];
	int tag_n;
	bool is_auto;
	bool can_use_rollup;              /* the filter, group_by and statistics allow it */
	Monitoring__V1__Granularity gran; /* fixed, or from the page token; AUTO otherwise */
	int max_points;
	int page_size;
	const char *cursor_hash; /* NULL: first page */
	int cursor_group, cursor_stat;
	const char *filters;
	/* resolved in the transaction */
	enum source source;
	int64_t width_ms; /* 0: RAW */
	int64_t lo_ms, hi_ms;
	int64_t valid_ms; /* rollup buckets from here on come from the raw points (rollup_valid_before) */
	struct group *groups;
	int group_n;
	Monitoring__V1__QueryMetricsResponse *resp;
};

static int64_t gran_width_ms(Monitoring__V1__Granularity g)
{
	switch (g) {
	case MONITORING__V1__GRANULARITY__GRANULARITY_FIVE_MINUTES: return 5 * MINUTE_MS;
	case MONITORING__V1__GRANULARITY__GRANULARITY_ONE_HOUR: return HOUR_MS;
	case MONITORING__V1__GRANULARITY__GRANULARITY_ONE_DAY: return DAY_MS;
	default: return 0;
	}
}

static const char *gran_name(Monitoring__V1__Granularity g)
{
	switch (g) {
	case MONITORING__V1__GRANULARITY__GRANULARITY_RAW: return "RAW";
	case MONITORING__V1__GRANULARITY__GRANULARITY_FIVE_MINUTES: return "FIVE_MINUTES";
	case MONITORING__V1__GRANULARITY__GRANULARITY_ONE_HOUR: return "ONE_HOUR";
	case MONITORING__V1__GRANULARITY__GRANULARITY_ONE_DAY: return "ONE_DAY";
	default: return "AUTO";
	}
}

/* Buckets of width_ms that [start, end) touches. */
static int64_t bucket_count(int64_t start_ms, int64_t end_ms, int64_t width_ms)
{
	return (ceil_to(end_ms, width_ms) - floor_to(start_ms, width_ms)) / width_ms;
}

/* Fixes granularity g: the source table, the bucket width and the range read. */
static void query_resolve(struct query_op *op, Monitoring__V1__Granularity g)
{
	op->gran = g;
	op->width_ms = gran_width_ms(g);
	if (g == MONITORING__V1__GRANULARITY__GRANULARITY_RAW) {
		op->source = SOURCE_RAW;
		op->lo_ms = op->start_ms;
		op->hi_ms = op->end_ms;
		return;
	}
	op->lo_ms = floor_to(op->start_ms, op->width_ms);
	op->hi_ms = ceil_to(op->end_ms, op->width_ms);
	if (!op->can_use_rollup)
		op->source = SOURCE_RAW;
	else
		op->source = g == MONITORING__V1__GRANULARITY__GRANULARITY_FIVE_MINUTES ? SOURCE_5MIN : SOURCE_HOURLY;
}

/*
 * The inner SELECT of a query: the key columns k0.., the bucket b and the
 * source's columns, of the rows in [lo, hi) that pass the filter.
 */
static char *query_inner_sql(struct arena *a, const struct query_op *op)
{
	char *keys = arena_strdup(a, "");
	for (int k = 0; keys != NULL && k < op->key_n; k++)
		keys = arena_printf(a, "%s%s AS k%d, ", keys, op->key_sql[k], k);
	if (keys == NULL)
		return NULL;
	const char *origin = "timestamptz '1970-01-01 00:00:00+00'";
	if (op->source == SOURCE_RAW) {
		char *bucket = op->width_ms == 0 ? arena_strdup(a, "time")
		                                 : arena_printf(a, "date_bin(interval '%" PRId64 " seconds', time, %s)",
		                                                op->width_ms / 1000, origin);
		return bucket ? arena_printf(
		                        a,
		                        "SELECT %s%s AS b, * FROM tb_performance_metric"
		                        " WHERE time >= 'epoch'::timestamptz + $1::bigint * interval '1 millisecond'"
		                        " AND time < 'epoch'::timestamptz + $2::bigint * interval '1 millisecond'"
		                        " AND %s",
		                        keys, bucket, FILTER_SQL(3, 4, 5, 6, 7))
		              : NULL;
	}
	/*
	 * Stored buckets up to where the rollups may be behind (valid_ms), the
	 * raw points aggregated into buckets of the same width from there.
	 */
	int64_t row_ms = op->source == SOURCE_5MIN ? 5 * MINUTE_MS : HOUR_MS;
	int64_t mid = op->valid_ms == INT64_MAX ? op->hi_ms : floor_to(op->valid_ms, row_ms);
	mid = mid < op->lo_ms ? op->lo_ms : mid > op->hi_ms ? op->hi_ms : mid;
	const char *filter = FILTER_ROLLUP_SQL(3, 4, 5, 6, 7);
	char *stored;
	if (op->key_n == 1 && op->f.endpoints == NULL) {
		/* every endpoint of each metric: the rollups summed over endpoints, a row per bucket and metric */
		stored = arena_printf(
		        a,
		        "SELECT bucket, metric_name, ''::varchar AS endpoint, NULL::numeric AS avg_p50,"
		        " NULL::numeric AS avg_p95, NULL::numeric AS avg_p99, data_points, total_requests, total_errors,"
		        " p50_sum, p50_n, p95_sum, p95_n, p99_sum, p99_n, error_rate_sum, error_rate_n FROM %s"
		        " WHERE bucket >= 'epoch'::timestamptz + %" PRId64 " * interval '1 millisecond'"
		        " AND bucket < 'epoch'::timestamptz + %" PRId64 " * interval '1 millisecond'"
		        " AND ($3::text[] IS NULL OR metric_name = ANY($3::text[])) AND $4::text[] IS NULL"
		        " AND $5::text[] IS NULL AND $6::integer[] IS NULL AND $7::jsonb IS NULL",
		        op->source == SOURCE_5MIN ? "tb_performance_metric_5min_by_name"
		                                  : "tb_performance_metric_hourly_by_name",
		        op->lo_ms, mid);
	} else {
		stored = stored_rollup_sql(
		        a, op->source == SOURCE_5MIN ? "tb_performance_metric_5min" : "tb_performance_metric_hourly",
		        op->lo_ms, mid, filter);
	}
	char *raw = raw_rollup_sql(a, row_ms, mid, op->hi_ms, filter);
	char *bucket = op->width_ms == DAY_MS
	                       ? arena_printf(a, "date_bin(interval '86400 seconds', bucket, %s)", origin)
	                       : arena_strdup(a, "bucket");
	return bucket && stored && raw ? arena_printf(a,
	                                              "SELECT %s%s AS b, * FROM (%s UNION ALL %s) u"
	                                              " WHERE $1::bigint IS NOT NULL AND $2::bigint IS NOT NULL",
	                                              keys, bucket, stored, raw)
	                               : NULL;
}

/* "k0, k1, ..." */
static char *key_list(struct arena *a, int key_n)
{
	char *list = arena_strdup(a, "k0");
	for (int k = 1; list != NULL && k < key_n; k++)
		list = arena_printf(a, "%s, k%d", list, k);
	return list;
}

/* Parameters $1.. of a query: range, filter, tag keys, then extra ones. */
static int query_params(struct arena *a, const struct query_op *op, const char **params, char **lo, char **hi)
{
	*lo = ms_text(a, op->lo_ms);
	*hi = ms_text(a, op->hi_ms);
	if (*lo == NULL || *hi == NULL)
		return MON_ENOMEM;
	params[0] = *lo;
	params[1] = *hi;
	filter_params(&op->f, params + 2);
	for (int t = 0; t < op->tag_n; t++)
		params[7 + t] = op->tag_keys[t];
	return 0;
}

/*
 * Reads the groups (series keys) of the current resolution in key order
 * into op->groups: MON_ELIMIT when they make more than SERIES_MAX series.
 */
static int query_groups(struct db_conn *conn, struct query_op *op, struct mon_error *err)
{
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	const char *params[8 + GROUP_BY_MAX];
	char *lo, *hi;
	int limit_n = SERIES_MAX / op->stat_n + 1;
	char *inner = query_inner_sql(a, op), *keys = key_list(a, op->key_n);
	char *sql = inner && keys ? arena_printf(a,
	                                         "SELECT %s, count(*) FROM (SELECT DISTINCT %s, b FROM (%s) s0) s"
	                                         " GROUP BY %s ORDER BY %s LIMIT $%d::integer",
	                                         keys, keys, inner, keys, keys, 8 + op->tag_n)
	                          : NULL;
	char *limit = arena_printf(a, "%d", limit_n);
	if (sql == NULL || limit == NULL || query_params(a, op, params, &lo, &hi) != 0)
		return svc_fail_nomem(err);
	params[7 + op->tag_n] = limit;
	int rc = db_exec(conn, sql, 8 + op->tag_n, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res);
	if (rows * op->stat_n > SERIES_MAX) {
		rc = mon_error_set(err, MON_ELIMIT,
		                   "series: the query makes more than %d series (the limit); add filters, fewer "
		                   "statistics or fewer group_by keys",
		                   SERIES_MAX);
		goto out;
	}
	op->groups = rows ? arena_calloc(a, (size_t)rows, sizeof(*op->groups)) : NULL;
	if (rows && op->groups == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	for (int i = 0; i < rows; i++) {
		struct group *g = &op->groups[i];
		g->keys = arena_calloc(a, (size_t)op->key_n, sizeof(*g->keys));
		if (g->keys == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		crypto_generichash_state st;
		unsigned char h[8];
		crypto_generichash_init(&st, NULL, 0, sizeof(h));
		for (int k = 0; k < op->key_n; k++) {
			g->keys[k] = arena_strdup(a, db_result_value(res, i, k));
			if (g->keys[k] == NULL) {
				rc = svc_fail_nomem(err);
				goto out;
			}
			crypto_generichash_update(&st, (const unsigned char *)g->keys[k], strlen(g->keys[k]) + 1);
		}
		crypto_generichash_final(&st, h, sizeof(h));
		sodium_bin2hex(g->hash, sizeof(g->hash), h, sizeof(h));
		g->raw_points = svc_parse_i64(db_result_value(res, i, op->key_n));
	}
	op->group_n = rows;
out:
	db_result_free(res);
	return rc;
}

static int64_t max_raw_points(const struct query_op *op)
{
	int64_t m = 0;
	for (int i = 0; i < op->group_n; i++)
		if (op->groups[i].raw_points > m)
			m = op->groups[i].raw_points;
	return m;
}

/*
 * Whether RAW surely gives more than max_points points to a series: the
 * series (metric name and endpoint) of the latest point that the query
 * reads has more points than that in the range. With group_by keys among
 * metric_name and endpoint only, each series lies in one group and its
 * points have distinct times (the primary key), so the group has at least
 * as many. Reads at most max_points + 1 points of one series, where the
 * full check reads every point in the range; false says nothing.
 */
static int raw_surely_too_many(struct db_conn *conn, struct query_op *op, bool *out, struct mon_error *err)
{
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	*out = false;
	/*
	 * Not with methods, status codes or tags in the filter either: finding
	 * the latest matching point could then walk back through many others.
	 */
	if (op->f.has_raw_only || op->key_n > 2 || (op->key_n == 2 && strcmp(op->key_sql[1], "endpoint::text") != 0))
		return 0;
	const char *params[8];
	char *lo, *hi;
	char *limit = arena_printf(a, "%d", op->max_points + 1);
	if (limit == NULL || query_params(a, op, params, &lo, &hi) != 0)
		return svc_fail_nomem(err);
	params[7] = limit;
	/* clang-format off */
	static const char sql[] =
	        "SELECT count(*) FROM (SELECT 1 FROM tb_performance_metric"
	        " WHERE (metric_name, endpoint) = (SELECT metric_name, endpoint FROM tb_performance_metric"
	        "  WHERE time >= 'epoch'::timestamptz + $1::bigint * interval '1 millisecond'"
	        "  AND time < 'epoch'::timestamptz + $2::bigint * interval '1 millisecond'"
	        "  AND " FILTER_SQL(3, 4, 5, 6, 7) " ORDER BY time DESC LIMIT 1)"
	        " AND time >= 'epoch'::timestamptz + $1::bigint * interval '1 millisecond'"
	        " AND time < 'epoch'::timestamptz + $2::bigint * interval '1 millisecond'"
	        " AND " FILTER_SQL(3, 4, 5, 6, 7) " LIMIT $8::integer) x";
	/* clang-format on */
	int rc = db_exec(conn, sql, 8, params, &res, err);
	if (rc != 0)
		return rc;
	*out = svc_parse_i64(db_result_value(res, 0, 0)) > op->max_points;
	db_result_free(res);
	return 0;
}

/* Picks AUTO's granularity (op->gran AUTO) or checks a fixed one, and reads the groups. */
static int query_plan(struct db_conn *conn, struct query_op *op, struct mon_error *err)
{
	static const Monitoring__V1__Granularity coarser[] = {MONITORING__V1__GRANULARITY__GRANULARITY_FIVE_MINUTES,
	                                                      MONITORING__V1__GRANULARITY__GRANULARITY_ONE_HOUR,
	                                                      MONITORING__V1__GRANULARITY__GRANULARITY_ONE_DAY};
	const struct metrics_service *svc = op->call->svc;
	const int64_t retention_ms[] = {(int64_t)svc->rollup_5min_days * DAY_MS,
	                                (int64_t)svc->rollup_hourly_days * DAY_MS, INT64_MAX};
	int rc;
	if (op->gran == MONITORING__V1__GRANULARITY__GRANULARITY_AUTO) {
		if (op->start_ms >= op->now_ms - (int64_t)svc->raw_retention_days * DAY_MS) {
			bool is_too_many = false;
			query_resolve(op, MONITORING__V1__GRANULARITY__GRANULARITY_RAW);
			rc = raw_surely_too_many(conn, op, &is_too_many, err);
			if (rc == 0 && !is_too_many)
				rc = query_groups(conn, op, err);
			if (rc != 0 || (!is_too_many && max_raw_points(op) <= op->max_points))
				return rc;
		}
		for (size_t i = 0; i < sizeof(coarser) / sizeof(coarser[0]); i++) {
			int64_t w = gran_width_ms(coarser[i]);
			if ((retention_ms[i] == INT64_MAX || op->start_ms >= op->now_ms - retention_ms[i]) &&
			    bucket_count(op->start_ms, op->end_ms, w) <= op->max_points) {
				query_resolve(op, coarser[i]);
				return query_groups(conn, op, err);
			}
		}
		return mon_error_set(err, MON_ELIMIT,
		                     "max_points: the time range needs %" PRId64
		                     " daily points per series, more than max_points %d",
		                     bucket_count(op->start_ms, op->end_ms, DAY_MS), op->max_points);
	}
	query_resolve(op, op->gran);
	if (op->width_ms > 0 && bucket_count(op->start_ms, op->end_ms, op->width_ms) > op->max_points)
		return mon_error_set(err, MON_ELIMIT,
		                     "max_points: %s gives %" PRId64 " points per series, more than max_points %d;"
		                     " use a coarser granularity or a shorter time_range",
		                     gran_name(op->gran), bucket_count(op->start_ms, op->end_ms, op->width_ms),
		                     op->max_points);
	rc = query_groups(conn, op, err);
	if (rc == 0 && op->width_ms == 0 && max_raw_points(op) > op->max_points)
		rc = mon_error_set(err, MON_ELIMIT,
		                   "max_points: a series has %" PRId64 " raw points, more than max_points %d;"
		                   " use a coarser granularity or a shorter time_range",
		                   max_raw_points(op), op->max_points);
	return rc;
}

/* Key array literal of group g, for the page's bounds. */
static char *group_keys_literal(struct arena *a, const struct query_op *op, const struct group *g)
{
	return array_literal(a, g->keys, (size_t)op->key_n);
}

static bool row_is_group(const struct db_result *res, int row, const struct query_op *op, const struct group *g)
{
	for (int k = 0; k < op->key_n; k++)
		if (strcmp(db_result_value(res, row, k), g->keys[k]) != 0)
			return false;
	return true;
}

static int query_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct query_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	Monitoring__V1__QueryMetricsResponse *r = op->resp;
	/* one snapshot: the groups and the rows read after them must agree while points keep arriving */
	int rc = read_snapshot(conn, op->call->svc, op->can_use_rollup, &op->valid_ms, err);
	if (rc == 0)
		rc = query_plan(conn, op, err);
	if (rc != 0)
		return rc;
	r->granularity = op->gran;
	r->bucket_width = arena_alloc(a, sizeof(*r->bucket_width));
	if (r->bucket_width == NULL)
		return svc_fail_nomem(err);
	google__protobuf__duration__init(r->bucket_width);
	r->bucket_width->seconds = op->width_ms / 1000;
	r->next_page_token = "";

	/* Where this page starts, in series (group * stat_n + stat). */
	int64_t pos = 0, total = (int64_t)op->group_n * op->stat_n;
	if (op->cursor_hash != NULL) {
		pos = (int64_t)op->cursor_group * op->stat_n;
		for (int i = 0; i < op->group_n; i++)
			if (strcmp(op->groups[i].hash, op->cursor_hash) == 0) {
				pos = (int64_t)i * op->stat_n + op->cursor_stat;
				break;
			}
	}
	if (pos >= total)
		return 0;
	/* The page: page_size series, fewer when their points would pass RESPONSE_POINTS_MAX. */
	int64_t bucket_n = op->width_ms ? (op->hi_ms - op->lo_ms) / op->width_ms : 0;
	int64_t end = pos, points = 0;
	while (end < total && end - pos < op->page_size) {
		const struct group *g = &op->groups[end / op->stat_n];
		int64_t n = op->width_ms ? bucket_n : g->raw_points;
		if (end > pos && points + n > RESPONSE_POINTS_MAX)
			break;
		points += n;
		end++;
	}
	int g_first = (int)(pos / op->stat_n), g_last = (int)((end - 1) / op->stat_n);

	/* The page's values, one row per group and non-empty bucket. */
	const char *params[10 + GROUP_BY_MAX];
	char *lo, *hi;
	char *inner = query_inner_sql(a, op), *keys = key_list(a, op->key_n);
	char *values = arena_strdup(a, "");
	for (int s = 0; values != NULL && s < op->stat_n; s++) {
		char *v = op->source == SOURCE_RAW ? raw_stat_sql(a, op->stats[s], op->aggs[s])
		                                   : rollup_stat_sql(a, op->stats[s], op->aggs[s]);
		values = v ? arena_printf(a, "%s, (%s)::float8", values, v) : NULL;
	}
	char *arr = arena_strdup(a, "ARRAY[k0");
	for (int k = 1; arr != NULL && k < op->key_n; k++)
		arr = arena_printf(a, "%s, k%d", arr, k);
	/*
	 * The page's groups by their key bounds; a page of every group needs
	 * none (and the planner estimates the rows better without them).
	 */
	char *bounds = NULL;
	if (arr != NULL && g_first == 0 && g_last == op->group_n - 1)
		bounds = arena_printf(a, "$%d::text[] IS NOT NULL AND $%d::text[] IS NOT NULL", 8 + op->tag_n,
		                      9 + op->tag_n);
	else if (arr != NULL)
		bounds = arena_printf(a, "%s] >= $%d::text[] AND %s] <= $%d::text[]", arr, 8 + op->tag_n, arr,
		                      9 + op->tag_n);
	char *sql = inner && keys && values && bounds
	                    ? arena_printf(a,
	                                   "SELECT %s, (extract(epoch FROM b) * 1000000)::bigint, %s%s"
	                                   " FROM (%s) s WHERE %s GROUP BY %s, b ORDER BY %s, b",
	                                   keys, op->source == SOURCE_RAW ? "count(*)" : "sum(data_points)", values,
	                                   inner, bounds, keys, keys)
	                    : NULL;
	if (sql == NULL || query_params(a, op, params, &lo, &hi) != 0)
		return svc_fail_nomem(err);
	params[7 + op->tag_n] = group_keys_literal(a, op, &op->groups[g_first]);
	params[8 + op->tag_n] = group_keys_literal(a, op, &op->groups[g_last]);
	if (params[7 + op->tag_n] == NULL || params[8 + op->tag_n] == NULL)
		return svc_fail_nomem(err);
	rc = db_exec(conn, sql, 9 + op->tag_n, params, &res, err);
	if (rc != 0)
		goto out;

	/* Rows to groups: both in key order. row_end 0: no row yet. */
	int rows = db_result_rows(res), gi = g_first;
	for (int i = g_first; i <= g_last; i++)
		op->groups[i].row_first = op->groups[i].row_end = 0;
	for (int row = 0; row < rows; row++) {
		while (gi <= g_last && !row_is_group(res, row, op, &op->groups[gi]))
			gi++;
		if (gi > g_last)
			break;
		if (op->groups[gi].row_end == 0)
			op->groups[gi].row_first = row;
		op->groups[gi].row_end = row + 1;
	}

	/* Bucket times, shared by every series. */
	Google__Protobuf__Timestamp **times = NULL;
	if (op->width_ms > 0) {
		times = arena_calloc(a, (size_t)(bucket_n ? bucket_n : 1), sizeof(*times));
		for (int64_t i = 0; times != NULL && i < bucket_n; i++)
			if ((times[i] = svc_ts_from_us(a, (op->lo_ms + i * op->width_ms) * 1000)) == NULL)
				times = NULL;
		if (times == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
	}
	r->series = arena_calloc(a, (size_t)(end - pos), sizeof(*r->series));
	if (r->series == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	int time_col = op->key_n, count_col = op->key_n + 1;
	for (int64_t p = pos; p < end; p++) {
		const struct group *g = &op->groups[p / op->stat_n];
		int s = (int)(p % op->stat_n), value_col = op->key_n + 2 + s;
		Monitoring__V1__TimeSeries *ts = arena_alloc(a, sizeof(*ts));
		if (ts == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		monitoring__v1__time_series__init(ts);
		ts->metric_name = g->keys[0];
		ts->statistic = (Monitoring__V1__MetricStatistic)op->stats[s];
		ts->aggregation = op->aggs[s];
		ts->labels = op->group_by_n ? arena_calloc(a, (size_t)op->group_by_n, sizeof(*ts->labels)) : NULL;
		for (int k = 0; k < op->group_by_n; k++) {
			Monitoring__V1__TimeSeries__LabelsEntry *e = ts->labels ? arena_alloc(a, sizeof(*e)) : NULL;
			if (e == NULL) {
				rc = svc_fail_nomem(err);
				goto out;
			}
			monitoring__v1__time_series__labels_entry__init(e);
			e->key = op->group_by[k];
			e->value = g->keys[op->key_of[k]];
			ts->labels[ts->n_labels++] = e;
		}
		int row_n = g->row_end - g->row_first;
		int64_t n = op->width_ms ? bucket_n : row_n;
		Monitoring__V1__TimeSeriesPoint *pts = n ? arena_calloc(a, (size_t)n, sizeof(*pts)) : NULL;
		ts->points = n ? arena_calloc(a, (size_t)n, sizeof(*ts->points)) : NULL;
		if (n && (pts == NULL || ts->points == NULL)) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		for (int64_t i = 0; i < n; i++) {
			monitoring__v1__time_series_point__init(&pts[i]);
			pts[i].time = times ? times[i] : NULL;
			ts->points[i] = &pts[i];
		}
		ts->n_points = (size_t)n;
		bool is_ok = true;
		for (int row = g->row_first; row < g->row_end; row++) {
			int64_t us = svc_parse_i64(db_result_value(res, row, time_col));
			int64_t i = row - g->row_first;
			if (op->width_ms > 0) {
				i = (us / 1000 - op->lo_ms) / op->width_ms;
				if (i < 0 || i >= n)
					continue;
			} else if ((pts[i].time = svc_ts_from_us(a, us)) == NULL) {
				is_ok = false;
			}
			pts[i].sample_count = svc_parse_i64(db_result_value(res, row, count_col));
			pts[i].value = svc_double_from_col(a, res, row, value_col, &is_ok);
		}
		if (!is_ok) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		r->series[r->n_series++] = ts;
	}
	if (end < total) {
		const struct group *g = &op->groups[(end - 1) / op->stat_n];
		char *cursor = arena_printf(a, "%" PRId64 ",%d,%s,%d,%d", op->now_ms, (int)op->gran, g->hash,
		                            (int)((end - 1) / op->stat_n), (int)((end - 1) % op->stat_n) + 1);
		rc = cursor ? svc_page_token_make_in(a, op->filters, cursor, PAGE_TOKEN_MAX, &r->next_page_token, err)
		            : svc_fail_nomem(err);
	}
out:
	db_result_free(res);
	return rc;
}

/* Checks statistics and aggregation into op; MON_EINVAL naming the field. */
static int query_read_stats(const Monitoring__V1__QueryMetricsRequest *req, struct query_op *op, struct mon_error *err)
{
	if (req->n_statistics == 0)
		return mon_error_set(err, MON_EINVAL, "statistics: required (one series per statistic and group)");
	if ((int)req->aggregation < 0 || req->aggregation > MONITORING__V1__AGGREGATION__AGGREGATION_LAST)
		return mon_error_set(err, MON_EINVAL, "aggregation: unknown value %d", (int)req->aggregation);
	for (size_t i = 0; i < req->n_statistics; i++) {
		int st = (int)req->statistics[i];
		if (st == MONITORING__V1__METRIC_STATISTIC__METRIC_STATISTIC_UNSPECIFIED)
			return mon_error_set(err, MON_EINVAL, "statistics[%zu]: must not be UNSPECIFIED", i);
		if (st < 0 || st > STAT_MAX)
			return mon_error_set(err, MON_EINVAL, "statistics[%zu]: unknown value %d", i, st);
		for (int k = 0; k < op->stat_n; k++)
			if (op->stats[k] == st)
				return mon_error_set(err, MON_EINVAL, "statistics[%zu]: %s listed twice", i,
				                     stat_infos[st].name);
		Monitoring__V1__Aggregation agg = req->aggregation;
		if (agg == MONITORING__V1__AGGREGATION__AGGREGATION_UNSPECIFIED)
			agg = stat_infos[st].is_count ? MONITORING__V1__AGGREGATION__AGGREGATION_SUM
			                              : MONITORING__V1__AGGREGATION__AGGREGATION_AVG;
		op->stats[op->stat_n] = st;
		op->aggs[op->stat_n] = agg;
		op->stat_n++;
	}
	return 0;
}

/* Checks group_by into op's key columns; MON_EINVAL naming group_by[i]. */
static int query_read_group_by(struct arena *a, const Monitoring__V1__QueryMetricsRequest *req, struct query_op *op,
                               struct mon_error *err)
{
	static const char *const plain[] = {"metric_name", "endpoint", "method", "status_code"};
	static const char *const plain_sql[] = {"metric_name::text", "endpoint::text", "coalesce(method, '')::text",
	                                        "coalesce(status_code::text, '')"};
	if (req->n_group_by > GROUP_BY_MAX)
		return mon_error_set(err, MON_EINVAL, "group_by: at most %d keys", GROUP_BY_MAX);
	op->key_sql[0] = plain_sql[0];
	op->key_n = 1;
	op->group_by = req->group_by;
	op->group_by_n = (int)req->n_group_by;
	for (size_t i = 0; i < req->n_group_by; i++) {
		const char *key = req->group_by[i] ? req->group_by[i] : "";
		char field[32];
		snprintf(field, sizeof(field), "group_by[%zu]", i);
		for (size_t k = 0; k < i; k++)
			if (strcmp(key, req->group_by[k]) == 0)
				return mon_error_set(err, MON_EINVAL, "%s: \"%.40s\" listed twice", field, key);
		bool is_plain = false;
		for (size_t k = 0; k < sizeof(plain) / sizeof(plain[0]); k++) {
			if (strcmp(key, plain[k]) != 0)
				continue;
			is_plain = true;
			if (k == 0) {
				op->key_of[i] = 0;
			} else {
				op->key_of[i] = op->key_n;
				op->key_sql[op->key_n++] = plain_sql[k];
			}
			if (k >= 2)
				op->can_use_rollup = false;
		}
		if (is_plain)
			continue;
		if (strncmp(key, "tags.", 5) != 0)
			return mon_error_set(
			        err, MON_EINVAL,
			        "%s: unknown key; use metric_name, endpoint, method, status_code or tags.<key>", field);
		int rc = svc_check_text(field, key + 5, 1, METRICS_TAG_KEY_MAX, 0, 0, err);
		if (rc == 0 && strlen(key + 5) > METRICS_TAG_KEY_MAX)
			rc = mon_error_set(err, MON_EINVAL, "%s: tag keys of at most %d bytes", field,
			                   METRICS_TAG_KEY_MAX);
		if (rc != 0)
			return rc;
		op->tag_keys[op->tag_n] = key + 5;
		op->key_of[i] = op->key_n;
		op->key_sql[op->key_n] = arena_printf(a, "coalesce(tags ->> $%d, '')", 8 + op->tag_n);
		if (op->key_sql[op->key_n] == NULL)
			return svc_fail_nomem(err);
		op->key_n++;
		op->tag_n++;
		op->can_use_rollup = false;
	}
	return 0;
}

static int query_read_cursor(struct arena *a, const char *token, struct query_op *op, struct mon_error *err)
{
	char *cursor = NULL, *fields[5];
	int rc = svc_page_token_read_in(a, token, op->filters, PAGE_TOKEN_MAX, &cursor, err);
	if (rc != 0)
		return rc;
	if (!split_cursor(cursor, fields, 5) || !is_clock_text(fields[0]) || !is_int_text(fields[1], false) ||
	    strlen(fields[2]) != 16 || !is_int_text(fields[3], false) || !is_int_text(fields[4], false))
		return mon_error_set(err, MON_EINVAL, "page_token: malformed");
	int64_t gran = svc_parse_i64(fields[1]), group = svc_parse_i64(fields[3]), stat = svc_parse_i64(fields[4]);
	if (gran < MONITORING__V1__GRANULARITY__GRANULARITY_RAW ||
	    gran > MONITORING__V1__GRANULARITY__GRANULARITY_ONE_DAY || (!op->is_auto && gran != op->gran) ||
	    group >= SERIES_MAX || stat > op->stat_n)
		return mon_error_set(err, MON_EINVAL, "page_token: malformed");
	op->now_ms = svc_parse_i64(fields[0]);
	op->gran = (Monitoring__V1__Granularity)gran;
	op->cursor_hash = fields[2];
	op->cursor_group = (int)group;
	op->cursor_stat = (int)stat;
	return 0;
}

/* QueryMetrics (viewer): series per statistic and group, in buckets of the granularity (docs/api.md). */
static int query_metrics(struct rpc_ctx *ctx, const Monitoring__V1__QueryMetricsRequest *req,
                         Monitoring__V1__QueryMetricsResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct query_op op = {.call = &c, .resp = resp, .now_ms = mon_wall_ms(), .can_use_rollup = true};
	const Monitoring__V1__TimeRange *tr = req->time_range;
	json_t *extra = NULL;
	int rc = query_read_stats(req, &op, &err);
	if (rc == 0) {
		switch (req->granularity) {
		case MONITORING__V1__GRANULARITY__GRANULARITY_UNSPECIFIED:
		case MONITORING__V1__GRANULARITY__GRANULARITY_AUTO:
			op.is_auto = true;
			op.gran = MONITORING__V1__GRANULARITY__GRANULARITY_AUTO;
			break;
		case MONITORING__V1__GRANULARITY__GRANULARITY_RAW:
		case MONITORING__V1__GRANULARITY__GRANULARITY_FIVE_MINUTES:
		case MONITORING__V1__GRANULARITY__GRANULARITY_ONE_HOUR:
		case MONITORING__V1__GRANULARITY__GRANULARITY_ONE_DAY: op.gran = req->granularity; break;
		default: rc = mon_error_set(&err, MON_EINVAL, "granularity: unknown value %d", (int)req->granularity);
		}
	}
	if (rc == 0)
		rc = query_read_group_by(c.arena, req, &op, &err);
	if (rc == 0 && req->max_points < 0)
		rc = mon_error_set(&err, MON_EINVAL, "max_points: must not be negative");
	if (rc == 0)
		rc = svc_page_size(req->page_size, 100, SERIES_MAX, &op.page_size, &err);
	if (rc == 0)
		rc = filter_read(c.arena, req->filter, &op.f, &err);
	if (rc != 0)
		goto out;
	op.max_points = req->max_points == 0               ? MAX_POINTS_DEFAULT
	                : req->max_points > MAX_POINTS_CAP ? MAX_POINTS_CAP
	                                                   : req->max_points;
	if (op.f.has_raw_only)
		op.can_use_rollup = false;
	for (int s = 0; s < op.stat_n && op.can_use_rollup; s++)
		if (stat_infos[op.stats[s]].rollup_sum == NULL ||
		    (op.aggs[s] != MONITORING__V1__AGGREGATION__AGGREGATION_AVG &&
		     op.aggs[s] != MONITORING__V1__AGGREGATION__AGGREGATION_SUM &&
		     op.aggs[s] != MONITORING__V1__AGGREGATION__AGGREGATION_COUNT))
			op.can_use_rollup = false;

	extra = json_array();
	json_array_append_new(extra, tr && tr->start_time ? json_pack("[I,i]", (json_int_t)tr->start_time->seconds,
	                                                              (int)tr->start_time->nanos)
	                                                  : json_string("-"));
	json_array_append_new(extra, tr && tr->end_time ? json_pack("[I,i]", (json_int_t)tr->end_time->seconds,
	                                                            (int)tr->end_time->nanos)
	                                                : json_string("-"));
	for (int s = 0; s < op.stat_n; s++)
		json_array_append_new(extra, json_integer(op.stats[s]));
	json_array_append_new(extra, json_integer(req->granularity));
	json_array_append_new(extra, json_integer(req->aggregation));
	json_array_append_new(extra, json_strings(req->group_by, req->n_group_by));
	json_array_append_new(extra, json_integer(op.max_points));
	op.filters = filters_text(c.arena, "query", extra, &op.f);
	if (op.filters == NULL) {
		rc = svc_fail_nomem(&err);
		goto out;
	}
	if (req->page_token != NULL && req->page_token[0] != '\0') {
		rc = query_read_cursor(c.arena, req->page_token, &op, &err);
		if (rc != 0)
			goto out;
	}
	rc = read_range(tr, op.now_ms, HOUR_MS, &op.start_ms, &op.end_ms, &err);
	if (rc == 0 && op.gran == MONITORING__V1__GRANULARITY__GRANULARITY_RAW &&
	    op.start_ms < op.now_ms - (int64_t)c.svc->raw_retention_days * DAY_MS)
		rc = mon_error_set(&err, MON_EINVAL,
		                   "granularity: RAW reaches back %d days (raw retention) and time_range.start_time "
		                   "is older; use FIVE_MINUTES or coarser",
		                   c.svc->raw_retention_days);
	if (rc != 0)
		goto out;
	json_decref(extra);
	filter_free(&op.f);
	return run_tx(&c, query_tx, &op);
out:
	json_decref(extra);
	filter_free(&op.f);
	return rpc_fail(ctx, rc, "%s", err.msg);
}

void metrics_query_handlers(struct monitoring_v1_metrics_service_handlers *h)
{
	h->list_metric_points = list_metric_points;
	h->list_metric_names = list_metric_names;
	h->query_metrics = query_metrics;
	h->get_performance_summary = get_performance_summary;
	h->list_slowest_endpoints = list_slowest_endpoints;
	h->get_performance_trend = get_performance_trend;
}
