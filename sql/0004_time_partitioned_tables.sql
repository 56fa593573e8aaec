-- The four time-series tables of the data model, partitioned by time:
-- tb_performance_metric (daily), tb_error_instance (weekly), tb_audit_event
-- (monthly) and tb_user_activity (weekly).
--
-- How they are partitioned depends on what the server offers, decided once
-- here and recorded in the setting monitord.partitioning for this
-- transaction:
--   timescaledb  the extension is already created in this database (it
--                needs shared_preload_libraries, so we never create it):
--                plain tables turned into hypertables;
--   partman      pg_partman is available and we may create it: native
--                partitions that pg_partman maintains;
--   native       otherwise: native declarative partitions, a DEFAULT
--                partition, and mon_ensure_partitions (0002) to make the
--                partitions ahead of time.
-- Either way a unique key must contain the time column, which changes two
-- keys of the seed (see docs/database.md):
--   tb_error_instance  PRIMARY KEY (id)     -> PRIMARY KEY (occurred_at, id)
--   tb_audit_event     UNIQUE (event_id)    -> UNIQUE (event_id, time)
-- and tb_performance_metric.endpoint, part of its primary key, is NOT NULL
-- (as the key already implied) with '' meaning "no endpoint".

DO $mode$
DECLARE
  v_mode text := 'native';
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    v_mode := 'timescaledb';
  ELSIF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_partman') THEN
    BEGIN
      CREATE SCHEMA IF NOT EXISTS partman;
      CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman;
      v_mode := 'partman';
    EXCEPTION WHEN insufficient_privilege OR feature_not_supported OR undefined_file THEN
      RAISE NOTICE 'pg_partman is available but cannot be created here (%); using native partitioning', SQLERRM;
    END;
  END IF;
  PERFORM set_config('monitord.partitioning', v_mode, true);
  RAISE NOTICE 'time-series tables use % partitioning', v_mode;
END
$mode$;

-- CREATE TABLE for a time-series table: a hypertable starts as a plain
-- table, native partitioning needs the PARTITION BY clause.
CREATE FUNCTION pg_temp.mon_create_time_table(p_ddl text, p_key text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
  IF current_setting('monitord.partitioning') = 'timescaledb' THEN
    EXECUTE p_ddl;
  ELSE
    EXECUTE p_ddl || format(' PARTITION BY RANGE (%I)', p_key);
  END IF;
END
$fn$;

SELECT pg_temp.mon_create_time_table($ddl$
CREATE TABLE tb_performance_metric (
  time                TIMESTAMPTZ NOT NULL,
  metric_name         VARCHAR(100) NOT NULL,
  endpoint            VARCHAR(500) NOT NULL DEFAULT '',
  method              VARCHAR(10), -- GET, POST, PUT, DELETE
  status_code         INTEGER,
  p50                 DECIMAL(10,2), -- milliseconds
  p95                 DECIMAL(10,2),
  p99                 DECIMAL(10,2),
  mean                DECIMAL(10,2),
  min                 DECIMAL(10,2),
  max                 DECIMAL(10,2),
  request_count       INTEGER NOT NULL DEFAULT 0,
  error_count         INTEGER NOT NULL DEFAULT 0,
  error_rate          DECIMAL(5,2), -- percentage
  throughput          DECIMAL(10,2), -- requests per second
  tags                JSONB DEFAULT '{}',
  CONSTRAINT tb_performance_metric_pkey PRIMARY KEY (time, metric_name, endpoint)
)$ddl$, 'time');

CREATE INDEX idx_performance_metric_endpoint ON tb_performance_metric(endpoint, time DESC);
CREATE INDEX idx_performance_metric_name ON tb_performance_metric(metric_name, time DESC);
CREATE INDEX idx_performance_metric_tags ON tb_performance_metric USING GIN (tags);

SELECT pg_temp.mon_create_time_table($ddl$
CREATE TABLE tb_error_instance (
  id                  BIGSERIAL,
  error_id            VARCHAR(50) NOT NULL REFERENCES tb_error_log(id) ON DELETE CASCADE,
  occurred_at         TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  user_id             VARCHAR(50),
  session_id          VARCHAR(100),
  request_id          VARCHAR(100),
  context             JSONB DEFAULT '{}',
  stack_trace         TEXT,
  breadcrumbs         JSONB DEFAULT '[]',
  CONSTRAINT tb_error_instance_pkey PRIMARY KEY (occurred_at, id)
)$ddl$, 'occurred_at');

CREATE INDEX idx_error_instance_error ON tb_error_instance(error_id, occurred_at DESC);
CREATE INDEX idx_error_instance_user ON tb_error_instance(user_id, occurred_at DESC);
-- retention (30 days) drops whole partitions; this index serves ad hoc deletes
CREATE INDEX idx_error_instance_retention ON tb_error_instance(occurred_at);

SELECT pg_temp.mon_create_time_table($ddl$
CREATE TABLE tb_audit_event (
  id                  BIGSERIAL,
  time                TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  event_id            VARCHAR(50) NOT NULL,
  user_id             VARCHAR(50) NOT NULL,
  user_email          VARCHAR(255) NOT NULL,
  user_role           VARCHAR(50) NOT NULL,
  action_type         audit_action_type NOT NULL,
  resource_type       VARCHAR(100) NOT NULL,
  resource_id         VARCHAR(100),
  resource_name       VARCHAR(255),
  description         TEXT NOT NULL,
  before_data         JSONB,
  after_data          JSONB,
  changes             JSONB, -- specific fields that changed
  outcome             VARCHAR(20) NOT NULL DEFAULT 'success', -- 'success', 'failure'
  failure_reason      TEXT,
  ip_address          INET NOT NULL,
  user_agent          TEXT,
  session_id          VARCHAR(100),
  request_id          VARCHAR(100),
  module              VARCHAR(100),
  severity            severity_level NOT NULL DEFAULT 'info',
  metadata            JSONB DEFAULT '{}',
  CONSTRAINT tb_audit_event_pkey PRIMARY KEY (time, id),
  CONSTRAINT tb_audit_event_event_id_key UNIQUE (event_id, time)
)$ddl$, 'time');

CREATE INDEX idx_audit_event_user ON tb_audit_event(user_id, time DESC);
CREATE INDEX idx_audit_event_action ON tb_audit_event(action_type, time DESC);
CREATE INDEX idx_audit_event_resource ON tb_audit_event(resource_type, resource_id, time DESC);
CREATE INDEX idx_audit_event_outcome ON tb_audit_event(outcome, time DESC);
CREATE INDEX idx_audit_event_module ON tb_audit_event(module, time DESC);
CREATE INDEX idx_audit_event_event_id ON tb_audit_event(event_id);
CREATE INDEX idx_audit_event_session ON tb_audit_event(session_id, time DESC);
CREATE INDEX idx_audit_event_changes ON tb_audit_event USING GIN (changes);

SELECT pg_temp.mon_create_time_table($ddl$
CREATE TABLE tb_user_activity (
  id                  BIGSERIAL,
  time                TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  user_id             VARCHAR(50) NOT NULL,
  session_id          VARCHAR(100) NOT NULL,
  activity_type       VARCHAR(50) NOT NULL, -- 'page-view', 'action', 'feature-use'
  module              VARCHAR(100),
  feature             VARCHAR(100),
  page_url            VARCHAR(500),
  action              VARCHAR(100),
  duration            INTEGER, -- seconds spent
  metadata            JSONB DEFAULT '{}',
  device_type         VARCHAR(50), -- 'desktop', 'mobile', 'tablet'
  browser             VARCHAR(100),
  os                  VARCHAR(100),
  ip_address          INET,
  CONSTRAINT tb_user_activity_pkey PRIMARY KEY (time, id)
)$ddl$, 'time');

CREATE INDEX idx_user_activity_user ON tb_user_activity(user_id, time DESC);
CREATE INDEX idx_user_activity_session ON tb_user_activity(session_id, time DESC);
CREATE INDEX idx_user_activity_type ON tb_user_activity(activity_type, time DESC);
CREATE INDEX idx_user_activity_module ON tb_user_activity(module, time DESC);
CREATE INDEX idx_user_activity_feature ON tb_user_activity(feature, time DESC);

-- The partitions themselves.
DO $parts$
DECLARE
  v_mode text := current_setting('monitord.partitioning');
  v_table record;
BEGIN
  FOR v_table IN
    SELECT * FROM (VALUES
      ('tb_performance_metric', 'time',        interval '1 day',   'daily',   14),
      ('tb_error_instance',     'occurred_at', interval '7 days',  'weekly',  4),
      ('tb_audit_event',        'time',        interval '1 month', 'monthly', 3),
      ('tb_user_activity',      'time',        interval '7 days',  'weekly',  4)
    ) AS t(name, key, step, partman_step, ahead)
  LOOP
    IF v_mode = 'timescaledb' THEN
      EXECUTE 'SELECT create_hypertable($1::regclass, $2::name, chunk_time_interval => $3)'
        USING v_table.name, v_table.key, v_table.step;
    ELSIF v_mode = 'partman' THEN
      EXECUTE 'SELECT partman.create_parent(p_parent_table => $1, p_control => $2, p_type => ''native'', '
              'p_interval => $3, p_premake => $4)'
        USING current_schema() || '.' || v_table.name, v_table.key, v_table.partman_step, v_table.ahead;
    ELSE
      EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', v_table.name || '_default', v_table.name);
      PERFORM mon_ensure_partitions(v_table.name::regclass, v_table.step, v_table.ahead);
    END IF;
  END LOOP;
END
$parts$;

-- What the maintenance job runs (any replica, any time): partitions for the
-- coming periods of every time-series table, with the intervals above.
-- Returns how many partitions were created.
CREATE FUNCTION mon_maintain_partitions()
RETURNS integer
LANGUAGE plpgsql
AS $fn$
DECLARE
  v_created integer := 0;
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
     AND NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'tb_performance_metric'::regclass) THEN
    RETURN 0; -- hypertables make their chunks themselves
  END IF;
  v_created := v_created + mon_ensure_partitions('tb_performance_metric', interval '1 day', 14);
  v_created := v_created + mon_ensure_partitions('tb_error_instance', interval '7 days', 4);
  v_created := v_created + mon_ensure_partitions('tb_audit_event', interval '1 month', 3);
  v_created := v_created + mon_ensure_partitions('tb_user_activity', interval '7 days', 4);
  RETURN v_created;
END
$fn$;
