-- The seed's continuous aggregates as ordinary rollup tables, with the
-- seed's columns, maintained by monitord (upserts of whole buckets
-- recomputed from tb_performance_metric and tb_user_activity). Their keys
-- make a bucket's refresh an idempotent INSERT ... ON CONFLICT DO UPDATE.
-- Retention: 5-minute rollups 90 days, hourly ones 1 year (seed 1.3).

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
  CONSTRAINT tb_performance_metric_5min_pkey PRIMARY KEY (bucket, metric_name, endpoint)
);

CREATE INDEX idx_performance_metric_5min_endpoint ON tb_performance_metric_5min(endpoint, bucket DESC);
CREATE INDEX idx_performance_metric_5min_name ON tb_performance_metric_5min(metric_name, bucket DESC);

CREATE TABLE tb_performance_metric_hourly (
  bucket              TIMESTAMPTZ NOT NULL,
  metric_name         VARCHAR(100) NOT NULL,
  endpoint            VARCHAR(500) NOT NULL DEFAULT '',
  avg_p50             NUMERIC,
  avg_p95             NUMERIC,
  avg_p99             NUMERIC,
  total_requests      BIGINT NOT NULL DEFAULT 0,
  total_errors        BIGINT NOT NULL DEFAULT 0,
  avg_error_rate      NUMERIC,
  CONSTRAINT tb_performance_metric_hourly_pkey PRIMARY KEY (bucket, metric_name, endpoint)
);

CREATE INDEX idx_performance_metric_hourly_endpoint ON tb_performance_metric_hourly(endpoint, bucket DESC);
CREATE INDEX idx_performance_metric_hourly_name ON tb_performance_metric_hourly(metric_name, bucket DESC);

-- module and feature are nullable in tb_user_activity; NULLS NOT DISTINCT
-- (PostgreSQL 15) keeps one row per group all the same.
CREATE TABLE tb_user_activity_hourly (
  bucket              TIMESTAMPTZ NOT NULL,
  module              VARCHAR(100),
  feature             VARCHAR(100),
  activity_type       VARCHAR(50) NOT NULL,
  unique_users        BIGINT NOT NULL DEFAULT 0,
  total_activities    BIGINT NOT NULL DEFAULT 0,
  avg_duration        NUMERIC,
  CONSTRAINT tb_user_activity_hourly_key UNIQUE NULLS NOT DISTINCT (bucket, module, feature, activity_type)
);

CREATE INDEX idx_user_activity_hourly_bucket ON tb_user_activity_hourly(bucket DESC);
