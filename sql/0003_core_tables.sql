-- The ten tables of the data model that are not time-series: services and
-- their check log, alert rules and alerts, dashboards and widgets,
-- integrations and their events, user sessions, and error groups.
--
-- Differences from the seed (docs/database.md explains each):
--   * every TIMESTAMP is TIMESTAMPTZ (the server stores UTC instants);
--   * the seed's retention indexes with NOW() in their predicate cannot be
--     built (index predicates must be immutable) and are plain indexes on
--     the same column, which serve the retention DELETEs just as well;
--   * tb_error_log holds one row per error group and is a normal table
--     (its occurrences, tb_error_instance, are the time-series part), with
--     a unique index on error_hash so concurrent reports upsert one group.

CREATE TABLE tb_service_health (
  id                  VARCHAR(50) PRIMARY KEY,
  name                VARCHAR(100) NOT NULL,
  description         TEXT,
  service_type        VARCHAR(50) NOT NULL, -- 'database', 'cache', 'email', 'storage', 'api'
  status              service_status NOT NULL DEFAULT 'unknown',
  last_check          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  health_check_url    VARCHAR(500),
  check_interval      INTEGER NOT NULL DEFAULT 300, -- seconds
  timeout             INTEGER NOT NULL DEFAULT 30,  -- seconds
  retry_count         INTEGER NOT NULL DEFAULT 3,
  metrics             JSONB NOT NULL DEFAULT '{}',
  uptime_24h          DECIMAL(5,2),
  uptime_7d           DECIMAL(5,2),
  uptime_30d          DECIMAL(5,2),
  created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at          TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_service_health_status ON tb_service_health(status);
CREATE INDEX idx_service_health_type ON tb_service_health(service_type);
CREATE INDEX idx_service_health_last_check ON tb_service_health(last_check DESC);

CREATE TABLE tb_health_check_log (
  id                  BIGSERIAL PRIMARY KEY,
  service_id          VARCHAR(50) NOT NULL REFERENCES tb_service_health(id) ON DELETE CASCADE,
  status              service_status NOT NULL,
  response_time       INTEGER, -- milliseconds
  error_message       TEXT,
  details             JSONB,
  checked_at          TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_health_check_service ON tb_health_check_log(service_id, checked_at DESC);
CREATE INDEX idx_health_check_status ON tb_health_check_log(status, checked_at DESC);
-- retention (30 days): the seed's partial index on NOW() cannot be built
CREATE INDEX idx_health_check_retention ON tb_health_check_log(checked_at);

CREATE TABLE tb_alert_rule (
  id                  VARCHAR(50) PRIMARY KEY,
  name                VARCHAR(200) NOT NULL,
  description         TEXT,
  severity            severity_level NOT NULL DEFAULT 'warning',
  status              alert_rule_status NOT NULL DEFAULT 'enabled',
  metric_name         VARCHAR(100) NOT NULL,
  comparison_operator comparison_operator NOT NULL,
  threshold           DECIMAL(15,4) NOT NULL,
  duration_minutes    INTEGER NOT NULL DEFAULT 5,
  evaluation_interval INTEGER NOT NULL DEFAULT 60, -- seconds
  scope               JSONB DEFAULT '{}', -- filters for applying the rule
  notification_channels TEXT[] NOT NULL DEFAULT '{}',
  notification_recipients JSONB NOT NULL DEFAULT '{}',
  notification_template VARCHAR(50),
  auto_resolve        BOOLEAN NOT NULL DEFAULT TRUE,
  suppress_duration   INTEGER DEFAULT 300, -- seconds
  max_alerts_per_hour INTEGER DEFAULT 10,
  escalation_policy_id VARCHAR(50),
  escalation_delay    INTEGER, -- minutes
  tags                JSONB DEFAULT '{}',
  created_by          VARCHAR(50) NOT NULL,
  created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  last_triggered      TIMESTAMPTZ
);

CREATE INDEX idx_alert_rule_status ON tb_alert_rule(status);
CREATE INDEX idx_alert_rule_metric ON tb_alert_rule(metric_name);
CREATE INDEX idx_alert_rule_severity ON tb_alert_rule(severity);
CREATE INDEX idx_alert_rule_created_by ON tb_alert_rule(created_by);
CREATE INDEX idx_alert_rule_tags ON tb_alert_rule USING GIN (tags);

CREATE TABLE tb_alert (
  id                  VARCHAR(50) PRIMARY KEY,
  alert_rule_id       VARCHAR(50) NOT NULL REFERENCES tb_alert_rule(id) ON DELETE CASCADE,
  status              alert_status NOT NULL DEFAULT 'active',
  severity            severity_level NOT NULL,
  message             TEXT NOT NULL,
  current_value       DECIMAL(15,4) NOT NULL,
  threshold           DECIMAL(15,4) NOT NULL,
  triggered_at        TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  acknowledged_at     TIMESTAMPTZ,
  acknowledged_by     VARCHAR(50),
  acknowledgment_note TEXT,
  resolved_at         TIMESTAMPTZ,
  resolution_note     TEXT,
  notifications_sent  JSONB DEFAULT '[]',
  metadata            JSONB DEFAULT '{}',
  created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at          TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_alert_rule ON tb_alert(alert_rule_id, triggered_at DESC);
CREATE INDEX idx_alert_status ON tb_alert(status, triggered_at DESC);
CREATE INDEX idx_alert_severity ON tb_alert(severity, triggered_at DESC);
CREATE INDEX idx_alert_acknowledged_by ON tb_alert(acknowledged_by);

CREATE TABLE tb_dashboard (
  id                  VARCHAR(50) PRIMARY KEY,
  name                VARCHAR(200) NOT NULL,
  description         TEXT,
  visibility          dashboard_visibility NOT NULL DEFAULT 'private',
  owner_id            VARCHAR(50) NOT NULL,
  team_id             VARCHAR(50),
  layout              JSONB NOT NULL DEFAULT '[]', -- grid layout configuration
  variables           JSONB DEFAULT '{}', -- dashboard-level variables
  auto_refresh        BOOLEAN NOT NULL DEFAULT TRUE,
  refresh_interval    INTEGER DEFAULT 30, -- seconds
  default_time_range  VARCHAR(20) DEFAULT '24h',
  theme               VARCHAR(20) DEFAULT 'light',
  tags                TEXT[] DEFAULT '{}',
  is_template         BOOLEAN NOT NULL DEFAULT FALSE,
  created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at          TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_dashboard_owner ON tb_dashboard(owner_id);
CREATE INDEX idx_dashboard_team ON tb_dashboard(team_id);
CREATE INDEX idx_dashboard_visibility ON tb_dashboard(visibility);
CREATE INDEX idx_dashboard_template ON tb_dashboard(is_template);

CREATE TABLE tb_widget (
  id                  VARCHAR(50) PRIMARY KEY,
  dashboard_id        VARCHAR(50) NOT NULL REFERENCES tb_dashboard(id) ON DELETE CASCADE,
  title               VARCHAR(200) NOT NULL,
  widget_type         widget_type NOT NULL,
  position            JSONB NOT NULL, -- {x, y, w, h}
  data_source         VARCHAR(100) NOT NULL,
  metric_name         VARCHAR(100),
  query               TEXT, -- custom query description for custom-query widgets
  aggregation         VARCHAR(50), -- 'sum', 'avg', 'min', 'max', 'count'
  time_range          VARCHAR(20), -- '1h', '24h', '7d', 'custom'
  filters             JSONB DEFAULT '{}',
  visualization       JSONB NOT NULL DEFAULT '{}', -- chart config, colors, etc.
  refresh_interval    INTEGER, -- seconds, null = use dashboard default
  created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at          TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_widget_dashboard ON tb_widget(dashboard_id);
CREATE INDEX idx_widget_type ON tb_widget(widget_type);

CREATE TABLE tb_integration_health (
  id                  VARCHAR(50) PRIMARY KEY,
  name                VARCHAR(100) NOT NULL,
  integration_type    integration_type NOT NULL,
  status              service_status NOT NULL DEFAULT 'unknown',
  endpoint_url        VARCHAR(500),
  api_version         VARCHAR(20),
  last_check          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  last_success        TIMESTAMPTZ,
  configured_at       TIMESTAMPTZ NOT NULL,
  success_rate_24h    DECIMAL(5,2),
  avg_response_time   INTEGER, -- milliseconds
  rate_limit_quota    INTEGER,
  rate_limit_remaining INTEGER,
  rate_limit_reset    TIMESTAMPTZ,
  error_count_24h     INTEGER DEFAULT 0,
  webhook_url         VARCHAR(500),
  webhook_secret      VARCHAR(255), -- sealed by the server, never plaintext
  authentication      JSONB, -- sealed by the server, never plaintext
  settings            JSONB DEFAULT '{}',
  is_active           BOOLEAN NOT NULL DEFAULT TRUE,
  created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at          TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_integration_type ON tb_integration_health(integration_type);
CREATE INDEX idx_integration_status ON tb_integration_health(status);
CREATE INDEX idx_integration_active ON tb_integration_health(is_active);

CREATE TABLE tb_integration_event (
  id                  BIGSERIAL PRIMARY KEY,
  integration_id      VARCHAR(50) NOT NULL REFERENCES tb_integration_health(id) ON DELETE CASCADE,
  event_type          VARCHAR(50) NOT NULL, -- 'api-call', 'webhook-delivery', 'error'
  direction           VARCHAR(10) NOT NULL, -- 'outbound', 'inbound'
  endpoint            VARCHAR(500),
  method              VARCHAR(10),
  status_code         INTEGER,
  success             BOOLEAN NOT NULL,
  response_time       INTEGER, -- milliseconds
  request_payload     JSONB,
  response_payload    JSONB,
  error_message       TEXT,
  retry_count         INTEGER DEFAULT 0,
  occurred_at         TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_integration_event_integration ON tb_integration_event(integration_id, occurred_at DESC);
CREATE INDEX idx_integration_event_success ON tb_integration_event(success, occurred_at DESC);
CREATE INDEX idx_integration_event_type ON tb_integration_event(event_type, occurred_at DESC);
-- retention (30 days): the seed's partial index on NOW() cannot be built
CREATE INDEX idx_integration_event_retention ON tb_integration_event(occurred_at);

CREATE TABLE tb_user_session (
  id                  VARCHAR(100) PRIMARY KEY,
  user_id             VARCHAR(50) NOT NULL,
  started_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  ended_at            TIMESTAMPTZ,
  duration            INTEGER, -- seconds
  page_views          INTEGER DEFAULT 0,
  actions             INTEGER DEFAULT 0,
  device_type         VARCHAR(50),
  browser             VARCHAR(100),
  os                  VARCHAR(100),
  ip_address          INET,
  metadata            JSONB DEFAULT '{}'
);

CREATE INDEX idx_user_session_user ON tb_user_session(user_id, started_at DESC);
CREATE INDEX idx_user_session_started ON tb_user_session(started_at DESC);
-- retention (90 days after the end): the seed's partial index on NOW() cannot be built
CREATE INDEX idx_user_session_retention ON tb_user_session(ended_at);

-- One row per error group (fingerprint). Mutable (status, counts,
-- last_seen), so not partitioned; its occurrences are.
CREATE TABLE tb_error_log (
  id                  VARCHAR(50) PRIMARY KEY,
  time                TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  error_hash          VARCHAR(64) NOT NULL, -- fingerprint grouping similar errors
  message             TEXT NOT NULL,
  error_type          VARCHAR(100) NOT NULL,
  severity            severity_level NOT NULL DEFAULT 'error',
  stack_trace         TEXT,
  file_path           VARCHAR(500),
  line_number         INTEGER,
  function_name       VARCHAR(200),
  user_id             VARCHAR(50),
  session_id          VARCHAR(100),
  request_id          VARCHAR(100),
  endpoint            VARCHAR(500),
  method              VARCHAR(10),
  status_code         INTEGER,
  user_agent          TEXT,
  ip_address          INET,
  environment         VARCHAR(50) DEFAULT 'production',
  context             JSONB DEFAULT '{}',
  breadcrumbs         JSONB DEFAULT '[]',
  first_seen          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  last_seen           TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  occurrence_count    INTEGER NOT NULL DEFAULT 1,
  affected_users      INTEGER NOT NULL DEFAULT 1,
  status              error_status NOT NULL DEFAULT 'new',
  assigned_to         VARCHAR(50),
  resolution_note     TEXT,
  resolved_at         TIMESTAMPTZ
);

CREATE UNIQUE INDEX uq_error_log_error_hash ON tb_error_log(error_hash);
CREATE INDEX idx_error_log_hash ON tb_error_log(error_hash, time DESC);
CREATE INDEX idx_error_log_severity ON tb_error_log(severity, time DESC);
CREATE INDEX idx_error_log_status ON tb_error_log(status, time DESC);
CREATE INDEX idx_error_log_user ON tb_error_log(user_id, time DESC);
CREATE INDEX idx_error_log_endpoint ON tb_error_log(endpoint, time DESC);
CREATE INDEX idx_error_log_type ON tb_error_log(error_type, time DESC);
CREATE INDEX idx_error_log_context ON tb_error_log USING GIN (context);
-- retention (90 days without an occurrence)
CREATE INDEX idx_error_log_last_seen ON tb_error_log(last_seen);
