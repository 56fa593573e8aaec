/*
 * MetricsService: the handler table and RecordMetrics here, the queries in
 * metrics/query.c, the stream in metrics/watch.c.
 *
 * RecordMetrics validates every point before anything is written (each
 * error names points[i].field), refuses two points with the same key in
 * one batch (which would make the outcome depend on order), and writes the
 * valid points in one transaction (metrics/ingest.c). Metric points are
 * telemetry, not changes of configuration: they are not written to the
 * audit trail.
 */
#include "metrics/service.h"

#include <stdio.h>
#include <string.h>

#include "alerts/engine.h"
#include "common/call.h"
#include "metrics/ingest.h"
#include "metrics/watch.h"
#include "util/clock.h"

/* Errors kept for the response of one call; more are counted. */
#define ERRORS_MAX 10000

/* ---- duplicate keys within a batch ---- */

static uint64_t key_hash(const Monitoring__V1__MetricPoint *p)
{
	uint64_t h = 1469598103934665603ULL;
	int64_t us = p->time->seconds * 1000000 + p->time->nanos / 1000;
	for (int i = 0; i < 8; i++) {
		h ^= (uint64_t)(us >> (i * 8)) & 0xff;
		h *= 1099511628211ULL;
	}
	const char *parts[] = {p->metric_name, p->endpoint ? p->endpoint : ""};
	for (int k = 0; k < 2; k++) {
		for (const unsigned char *c = (const unsigned char *)parts[k]; *c; c++) {
			h ^= *c;
			h *= 1099511628211ULL;
		}
		h ^= 0xff; /* separator */
		h *= 1099511628211ULL;
	}
	return h;
}

static bool same_key(const Monitoring__V1__MetricPoint *a, const Monitoring__V1__MetricPoint *b)
{
	return a->time->seconds == b->time->seconds && a->time->nanos / 1000 == b->time->nanos / 1000 &&
	       strcmp(a->metric_name, b->metric_name) == 0 &&
	       strcmp(a->endpoint ? a->endpoint : "", b->endpoint ? b->endpoint : "") == 0;
}

/*
 * Marks points whose key repeats an earlier valid point's: an error on the
 * later one. is_bad[i] is true for points already rejected.
 */
static int find_duplicate_keys(struct arena *a, Monitoring__V1__MetricPoint *const *points, size_t count, bool *is_bad,
                               struct metrics_point_error *errs, size_t cap, size_t *n)
{
	size_t slots = 16;
	while (slots < count * 2)
		slots *= 2;
	int32_t *table = arena_alloc(a, slots * sizeof(*table));
	if (table == NULL)
		return MON_ENOMEM;
	memset(table, 0xff, slots * sizeof(*table)); /* -1: empty */
	for (size_t i = 0; i < count; i++) {
		if (is_bad[i])
			continue;
		size_t s = (size_t)(key_hash(points[i]) & (slots - 1));
		for (;; s = (s + 1) & (slots - 1)) {
			if (table[s] < 0) {
				table[s] = (int32_t)i;
				break;
			}
			if (same_key(points[table[s]], points[i])) {
				is_bad[i] = true;
				if (*n < cap) {
					errs[*n].index = (int32_t)i;
					errs[*n].field = "time";
					snprintf(errs[*n].message, sizeof(errs[*n].message),
					         "same key (time, metric_name, endpoint) as points[%d]", table[s]);
				}
				(*n)++;
				break;
			}
		}
	}
	return 0;
}

/* Tells the alert evaluator which metrics just got points (each name once). */
static void notify_engine(struct alerts_engine *engine, struct arena *a, Monitoring__V1__MetricPoint *const *points,
                          size_t count)
{
	if (engine == NULL)
		return;
	const char **names = arena_calloc(a, count, sizeof(*names));
	if (names == NULL)
		return; /* the periodic evaluation still sees the points */
	size_t n = 0;
	for (size_t i = 0; i < count; i++) {
		size_t j = 0;
		while (j < n && strcmp(names[j], points[i]->metric_name) != 0)
			j++;
		if (j == n)
			names[n++] = points[i]->metric_name;
	}
	alerts_engine_on_metrics(engine, names, n);
}

/* A write's counts in RecordMetrics' response. */
static void record_counts(Monitoring__V1__RecordMetricsResponse *resp, const struct metrics_write_result *wr)
{
	resp->inserted_count = wr->inserted;
	resp->updated_count = wr->updated;
	resp->duplicate_count = wr->duplicates;
	resp->sequence = wr->sequence;
}

/* RecordMetrics' idempotency key, claimed and stored in the write's own transaction (metrics_write_key). */
struct record_key {
	struct svc_idem key;
	struct arena *arena;
	Monitoring__V1__RecordMetricsResponse *resp; /* the point errors already in it */
};

static int record_key_claim_tx(struct db_conn *conn, void *arg, bool *is_replay, struct mon_error *err)
{
	struct record_key *rk = arg;
	return svc_idem_claim_tx(conn, &rk->key, rk->arena, &rk->resp->base, is_replay, err);
}

static int record_key_store_tx(struct db_conn *conn, void *arg, const struct metrics_write_result *result,
                               struct mon_error *err)
{
	struct record_key *rk = arg;
	record_counts(rk->resp, result);
	return svc_idem_store_tx(conn, &rk->key, rk->arena, &rk->resp->base, err);
}

static int record_metrics(struct rpc_ctx *ctx, const Monitoring__V1__RecordMetricsRequest *req,
                          Monitoring__V1__RecordMetricsResponse *resp)
{
	const struct metrics_service *svc = metrics_service_of(ctx);
	struct arena *a = rpc_ctx_arena(ctx);
	if (req->validate_only && req->allow_partial)
		return rpc_fail(ctx, MON_EINVAL, "allow_partial: cannot be combined with validate_only");
	if (req->n_points == 0)
		return rpc_fail(ctx, MON_EINVAL, "points: must not be empty");
	if (req->n_points > METRICS_BATCH_MAX)
		return rpc_fail(ctx, MON_ELIMIT, "points: %zu points exceed the limit of %d per batch", req->n_points,
		                METRICS_BATCH_MAX);

	size_t count = req->n_points;
	size_t cap = ERRORS_MAX;
	struct metrics_point_error *errs = arena_alloc(a, cap * sizeof(*errs));
	bool *is_bad = arena_calloc(a, count, sizeof(*is_bad));
	if (errs == NULL || is_bad == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "out of memory validating the batch");
	int64_t now_ms = mon_wall_ms();
	/*
	 * An hour short of raw retention: the rollup job re-aggregates a point's
	 * bucket only while it is within retention, and this leaves it an hour
	 * to do so.
	 */
	int64_t oldest_ms = now_ms - (int64_t)svc->raw_retention_days * 86400 * 1000 + 3600 * 1000;
	size_t n = 0;
	for (size_t i = 0; i < count; i++)
		is_bad[i] = metrics_check_point(req->points[i], (int32_t)i, now_ms, oldest_ms, errs, cap, &n) > 0;
	if (find_duplicate_keys(a, req->points, count, is_bad, errs, cap, &n) != 0)
		return rpc_fail(ctx, MON_ENOMEM, "out of memory validating the batch");

	size_t rejected = 0;
	for (size_t i = 0; i < count; i++)
		rejected += is_bad[i];
	if (n > 0 && !req->validate_only && !req->allow_partial) {
		const struct metrics_point_error *e = &errs[0];
		for (size_t i = 1; i < (n < cap ? n : cap); i++)
			if (errs[i].index < e->index)
				e = &errs[i];
		if (n == 1)
			return rpc_fail(ctx, MON_EINVAL, "points[%d].%s: %s", e->index, e->field, e->message);
		return rpc_fail(ctx, MON_EINVAL,
		                "points[%d].%s: %s (and %zu more errors in %zu points; validate_only lists them all)",
		                e->index, e->field, e->message, n - 1, rejected);
	}

	size_t stored_n = n < cap ? n : cap;
	resp->n_errors = stored_n;
	resp->errors = arena_calloc(a, stored_n ? stored_n : 1, sizeof(*resp->errors));
	Monitoring__V1__PointError *pe = arena_calloc(a, stored_n ? stored_n : 1, sizeof(*pe));
	if (resp->errors == NULL || pe == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "out of memory answering");
	for (size_t i = 0; i < stored_n; i++) {
		monitoring__v1__point_error__init(&pe[i]);
		pe[i].index = errs[i].index;
		pe[i].field = (char *)errs[i].field;
		pe[i].message = errs[i].message;
		resp->errors[i] = &pe[i];
	}
	resp->rejected_count = (int32_t)rejected;
	if (req->validate_only || rejected == count)
		return 0;

	Monitoring__V1__MetricPoint **valid = req->points;
	if (rejected > 0) {
		valid = arena_calloc(a, count - rejected, sizeof(*valid));
		if (valid == NULL)
			return rpc_fail(ctx, MON_ENOMEM, "out of memory answering");
		size_t k = 0;
		for (size_t i = 0; i < count; i++)
			if (!is_bad[i])
				valid[k++] = req->points[i];
	}
	struct record_key rk = {.arena = a, .resp = resp};
	bool has_key = false;
	int rc = svc_change_key(ctx, &rk.key, &has_key);
	if (rc != 0)
		return rc;
	const struct metrics_write_key wk = {
	        .claim_tx = record_key_claim_tx, .store_tx = record_key_store_tx, .arg = &rk};
	struct metrics_write_result wr = {0};
	struct mon_error err = {0};
	rc = metrics_write(svc->pool, a, rpc_ctx_remaining_ms(ctx), valid, count - rejected, has_key ? &wk : NULL, &wr,
	                   &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	if (wr.is_replay)
		return 0; /* resp is the first call's response */
	if (wr.sequence > 0)
		notify_engine(svc->alerts_engine, a, valid, count - rejected);
	record_counts(resp, &wr);
	return 0;
}

static int watch_metrics(struct rpc_ctx *ctx, const Monitoring__V1__WatchMetricsRequest *req, struct rpc_stream *stream)
{
	return metrics_watch(metrics_service_of(ctx)->watch_hub, ctx, req, stream);
}

int metrics_service_bind(struct rpc_server *server, struct metrics_service *svc, struct mon_error *err)
{
	struct monitoring_v1_metrics_service_handlers handlers = {
	        .record_metrics = record_metrics,
	        .watch_metrics = watch_metrics,
	};
	if (svc->raw_retention_days <= 0)
		svc->raw_retention_days = METRICS_RAW_RETENTION_DAYS;
	if (svc->rollup_5min_days <= 0)
		svc->rollup_5min_days = 90;
	if (svc->rollup_hourly_days <= 0)
		svc->rollup_hourly_days = 365;
	metrics_query_handlers(&handlers);
	return monitoring_v1_metrics_service_bind(server, &handlers, svc, 0, err);
}
