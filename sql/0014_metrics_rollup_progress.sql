-- What queries need to know which rollup buckets they may trust, and the
-- progress of a full rebuild (server/metrics/rollup.c, docs/database.md):
--   * tb_metric_rollup_progress: one row, moved by every transaction of a
--     full rebuild (which re-aggregates raw retention in ascending time):
--     every 5-minute bucket before rebuilt_before is rebuilt. UNLOGGED like
--     the ingest log and tb_metric_ingest_log_intact, so that the crash
--     recovery that empties those empties it too;
--   * mon_metric_rollup_valid_before(raw cutoff): the first instant from
--     which the rollups may be behind the raw points. Queries read rollup
--     buckets that end at or before it and raw points from it on;
--   * the rollups summed over endpoints (one row per bucket and metric).

CREATE UNLOGGED TABLE tb_metric_rollup_progress (
  id                  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
  rebuilt_before      TIMESTAMPTZ NOT NULL
);

-- With the log whole (a row in tb_metric_ingest_log_intact): the earliest
-- point of the batches above the watermark (their buckets are not yet
-- re-aggregated), or infinity. Without it (a full rebuild is due or under
-- way): raw retention's first bucket p_raw_cutoff, or the progress of the
-- rebuild past it, and never beyond the batches above the watermark.
-- Reads one row of each state table and the log above the watermark (its
-- primary key): a few rows. STABLE: one answer per statement.
CREATE FUNCTION mon_metric_rollup_valid_before(p_raw_cutoff timestamptz)
RETURNS timestamptz
LANGUAGE sql
STABLE
AS $fn$
  SELECT least(
    CASE WHEN EXISTS (SELECT 1 FROM tb_metric_ingest_log_intact) THEN timestamptz 'infinity'
         ELSE greatest(p_raw_cutoff, (SELECT rebuilt_before FROM tb_metric_rollup_progress)) END,
    (SELECT min(l.min_time) FROM tb_metric_ingest_log l
      WHERE l.seq > (SELECT watermark_seq FROM tb_metric_rollup_state)))
$fn$;

-- The 5-minute and hourly rollups again, summed over endpoints: one row per
-- bucket and metric name, with the same sums and counts (so the same exact
-- averages). A query over every endpoint of a metric (QueryMetrics without
-- an endpoint filter or group) reads these, whose size follows the metrics
-- and the buckets, not the endpoints. Made by the rollup job from the
-- per-endpoint 5-minute rows in the same transaction; small enough to stay
-- unpartitioned (retention deletes old rows in batches).
CREATE TABLE tb_performance_metric_5min_by_name (
  bucket              TIMESTAMPTZ NOT NULL,
  metric_name         VARCHAR(100) NOT NULL,
  data_points         BIGINT NOT NULL DEFAULT 0,
  total_requests      BIGINT NOT NULL DEFAULT 0,
  total_errors        BIGINT NOT NULL DEFAULT 0,
  p50_sum             NUMERIC,
  p50_n               BIGINT NOT NULL DEFAULT 0,
  p95_sum             NUMERIC,
  p95_n               BIGINT NOT NULL DEFAULT 0,
  p99_sum             NUMERIC,
  p99_n               BIGINT NOT NULL DEFAULT 0,
  error_rate_sum      NUMERIC,
  error_rate_n        BIGINT NOT NULL DEFAULT 0,
  CONSTRAINT tb_performance_metric_5min_by_name_pkey PRIMARY KEY (bucket, metric_name)
);
CREATE INDEX idx_performance_metric_5min_by_name_name ON tb_performance_metric_5min_by_name(metric_name, bucket);

CREATE TABLE tb_performance_metric_hourly_by_name (LIKE tb_performance_metric_5min_by_name INCLUDING DEFAULTS,
  CONSTRAINT tb_performance_metric_hourly_by_name_pkey PRIMARY KEY (bucket, metric_name)
);
CREATE INDEX idx_performance_metric_hourly_by_name_name ON tb_performance_metric_hourly_by_name(metric_name, bucket);

-- Filled once from the per-endpoint rollups as they stand; the job keeps
-- them current from here on.
INSERT INTO tb_performance_metric_5min_by_name
SELECT bucket, metric_name, sum(data_points), sum(total_requests), sum(total_errors), sum(p50_sum), sum(p50_n),
       sum(p95_sum), sum(p95_n), sum(p99_sum), sum(p99_n), sum(error_rate_sum), sum(error_rate_n)
  FROM tb_performance_metric_5min GROUP BY 1, 2;
INSERT INTO tb_performance_metric_hourly_by_name
SELECT bucket, metric_name, sum(data_points), sum(total_requests), sum(total_errors), sum(p50_sum), sum(p50_n),
       sum(p95_sum), sum(p95_n), sum(p99_sum), sum(p99_n), sum(error_rate_sum), sum(error_rate_n)
  FROM tb_performance_metric_hourly GROUP BY 1, 2;
