-- MetricsService storage beyond the data model's table:
--   * tb_performance_metric.metric_type (the data model defines the enum
--     only; the API carries a type per point);
--   * the ingest log: one row per committed RecordMetrics batch, with the
--     batch's sequence (the WatchMetrics cursor), the 5-minute buckets it
--     touched (what the rollup job re-aggregates) and the points themselves
--     (what every replica's WatchMetrics hub fans out);
--   * the 5-minute and hourly rollups again, now partitioned by bucket so
--     that retention drops partitions, and with the sums and counts behind
--     each average so that hourly and daily buckets are exact averages of
--     the raw points, not averages of averages;
--   * the rollup job's watermark.

ALTER TABLE tb_performance_metric ADD COLUMN metric_type metric_type NOT NULL DEFAULT 'gauge';

-- The ingest sequence is a logged sequence of its own: the log below is
-- UNLOGGED and emptied by a crash of PostgreSQL, but cursors must never go
-- backwards, so the numbers must survive it.
CREATE SEQUENCE seq_metric_ingest;

-- UNLOGGED: the log is a short replay buffer and a list of dirty buckets,
-- not a record; writing it costs no WAL on the ingest path. After a crash
-- of PostgreSQL it is empty: WatchMetrics answers an older cursor with a
-- gap, and the rollup job re-aggregates the whole raw retention.
CREATE UNLOGGED TABLE tb_metric_ingest_log (
  seq                 BIGINT PRIMARY KEY,
  committed_at        TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
  point_count         INTEGER NOT NULL,
  min_time            TIMESTAMPTZ NOT NULL,
  max_time            TIMESTAMPTZ NOT NULL,
  buckets             TIMESTAMPTZ[] NOT NULL, -- distinct 5-minute bucket starts of the points
  payload             BYTEA NOT NULL          -- monitoring.v1.MetricBatch of the points as stored
);

-- Payloads are already compact protobuf: store them out of line without
-- spending CPU on TOAST compression in the ingest transaction.
ALTER TABLE tb_metric_ingest_log ALTER COLUMN payload SET STORAGE EXTERNAL;

CREATE INDEX idx_metric_ingest_log_committed ON tb_metric_ingest_log(committed_at);

-- The last statement of every ingest transaction: takes the ingest lock,
-- numbers the batch and logs it, and wakes every replica's hub. The lock is
-- held until commit, so batches commit in sequence order and a reader that
-- sees sequence N sees every committed batch below it; only this short tail
-- is serialised, the rows themselves are written before it.
CREATE FUNCTION mon_metrics_commit(p_count integer, p_min timestamptz, p_max timestamptz,
                                   p_buckets timestamptz[], p_payload bytea)
RETURNS bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
  v_seq bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(7206010);
  v_seq := nextval('seq_metric_ingest');
  INSERT INTO tb_metric_ingest_log (seq, point_count, min_time, max_time, buckets, payload)
  VALUES (v_seq, p_count, p_min, p_max, p_buckets, p_payload);
  PERFORM pg_notify('mon_metrics', v_seq::text);
  RETURN v_seq;
END
$fn$;

-- The rollups of 0005 were never written by any release; they are made
-- again as partitioned tables (5-minute: weekly partitions, kept 90 days;
-- hourly: monthly partitions, kept 1 year) with the seed's columns plus:
--   data_points            raw points in the bucket
--   p50_sum, p50_n, ...    sum and count of the non-NULL values behind
--                          each average (avg = sum / n)
DROP TABLE tb_performance_metric_5min;
DROP TABLE tb_performance_metric_hourly;

CREATE TABLE tb_performance_metric_5min (
  bucket              TIMESTAMPTZ NOT NULL,
  metric_name         VARCHAR(100) NOT NULL,
  endpoint            VARCHAR(500) NOT NULL DEFAULT '',
  avg_p50             NUMERIC,
  avg_p95             NUMERIC,
  avg_p99             NUMERIC,
  total_requests      BIGINT NOT NULL DEFAULT 0,
  total_errors        BIGINT NOT NULL DEFAULT 0,
  avg_error_rate      NUMERIC,
  data_points         BIGINT NOT NULL DEFAULT 0,
  p50_sum             NUMERIC,
  p50_n               BIGINT NOT NULL DEFAULT 0,
  p95_sum             NUMERIC,
  p95_n               BIGINT NOT NULL DEFAULT 0,
  p99_sum             NUMERIC,
  p99_n               BIGINT NOT NULL DEFAULT 0,
  error_rate_sum      NUMERIC,
  error_rate_n        BIGINT NOT NULL DEFAULT 0,
  CONSTRAINT tb_performance_metric_5min_pkey PRIMARY KEY (bucket, metric_name, endpoint)
) PARTITION BY RANGE (bucket);

CREATE INDEX idx_performance_metric_5min_endpoint ON tb_performance_metric_5min(endpoint, bucket DESC);
CREATE INDEX idx_performance_metric_5min_name ON tb_performance_metric_5min(metric_name, bucket DESC);
CREATE TABLE tb_performance_metric_5min_default PARTITION OF tb_performance_metric_5min DEFAULT;

CREATE TABLE tb_performance_metric_hourly (LIKE tb_performance_metric_5min INCLUDING DEFAULTS,
  CONSTRAINT tb_performance_metric_hourly_pkey PRIMARY KEY (bucket, metric_name, endpoint)
) PARTITION BY RANGE (bucket);

CREATE INDEX idx_performance_metric_hourly_endpoint ON tb_performance_metric_hourly(endpoint, bucket DESC);
CREATE INDEX idx_performance_metric_hourly_name ON tb_performance_metric_hourly(metric_name, bucket DESC);
CREATE TABLE tb_performance_metric_hourly_default PARTITION OF tb_performance_metric_hourly DEFAULT;

SELECT mon_ensure_partitions('tb_performance_metric_5min', interval '7 days', 2);
SELECT mon_ensure_partitions('tb_performance_metric_hourly', interval '1 month', 2);

-- The rollup job's state (one row): every batch up to watermark_seq is
-- aggregated. Only the replica holding advisory lock 7206011 refreshes.
CREATE TABLE tb_metric_rollup_state (
  id                  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
  watermark_seq       BIGINT NOT NULL DEFAULT 0,
  refreshed_at        TIMESTAMPTZ
);
INSERT INTO tb_metric_rollup_state DEFAULT VALUES;

-- Partitions of the rollups are made ahead by the maintenance function too.
CREATE OR REPLACE FUNCTION mon_maintain_partitions()
RETURNS integer
LANGUAGE plpgsql
AS $fn$
DECLARE
  v_created integer := 0;
BEGIN
  IF NOT (EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
          AND NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'tb_performance_metric'::regclass)) THEN
    v_created := v_created + mon_ensure_partitions('tb_performance_metric', interval '1 day', 14);
    v_created := v_created + mon_ensure_partitions('tb_error_instance', interval '7 days', 4);
    v_created := v_created + mon_ensure_partitions('tb_audit_event', interval '1 month', 3);
    v_created := v_created + mon_ensure_partitions('tb_user_activity', interval '7 days', 4);
  END IF;
  v_created := v_created + mon_ensure_partitions('tb_performance_metric_5min', interval '7 days', 2);
  v_created := v_created + mon_ensure_partitions('tb_performance_metric_hourly', interval '1 month', 2);
  RETURN v_created;
END
$fn$;
