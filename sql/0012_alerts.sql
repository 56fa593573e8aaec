-- AlertsService storage beyond the data model's tb_alert_rule and tb_alert:
--   * evaluation bookkeeping on rules (when each is next due: the periodic
--     tick claims due rules with FOR UPDATE SKIP LOCKED, so each rule is
--     evaluated by one replica at a time and a dead replica's rules fall
--     due again for the others);
--   * the columns of an alert that the API has and the data model has not
--     (scope group, suppression reason, escalation state, the sequence of
--     its last change), and at most one open alert per rule and group;
--   * tb_alert_event: the ordered, durable change log WatchAlerts snapshots
--     and resumes from, numbered in commit order;
--   * tb_notification_outbox: deliveries written in the transaction of the
--     alert change that causes them, sent by a worker;
--   * escalation policies and silences (their own tables).

ALTER TABLE tb_alert_rule
  ADD COLUMN next_evaluation_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  ADD COLUMN last_evaluated_at TIMESTAMPTZ;

CREATE INDEX idx_alert_rule_due ON tb_alert_rule(next_evaluation_at) WHERE status <> 'disabled';

ALTER TABLE tb_alert
  ADD COLUMN group_key TEXT NOT NULL DEFAULT '',        -- canonical text of labels ('' without group_by)
  ADD COLUMN labels JSONB NOT NULL DEFAULT '{}',        -- the scope group's labels
  ADD COLUMN suppression_reason VARCHAR(30),            -- hourly-cap, suppress-window, silence, rule-testing
  ADD COLUMN silence_id VARCHAR(50),
  ADD COLUMN resolved_by VARCHAR(50),                   -- NULL: the evaluator
  ADD COLUMN escalation_level INTEGER NOT NULL DEFAULT 0,
  ADD COLUMN escalated_at TIMESTAMPTZ,
  ADD COLUMN next_escalation_at TIMESTAMPTZ,            -- NULL: nothing to escalate
  ADD COLUMN condition_since TIMESTAMPTZ,               -- PENDING: when the condition first held
  ADD COLUMN last_notified_at TIMESTAMPTZ,
  ADD COLUMN sequence BIGINT NOT NULL DEFAULT 0;        -- seq of its latest tb_alert_event

-- One open alert per rule and scope group: the evaluator raises a new one
-- only after the previous one is resolved.
CREATE UNIQUE INDEX idx_alert_open_group ON tb_alert(alert_rule_id, group_key) WHERE status <> 'resolved';
CREATE INDEX idx_alert_escalation ON tb_alert(next_escalation_at) WHERE next_escalation_at IS NOT NULL;
-- retention (90 days of alert history)
CREATE INDEX idx_alert_triggered ON tb_alert(triggered_at);

-- Every change of an alert, in commit order. Written only through
-- mon_alert_event_append, the last statement of the transaction that
-- changed the alert: it takes advisory lock 7206020 (held to commit), so
-- sequence order is commit order and a reader that sees seq N sees every
-- committed change below it.
CREATE SEQUENCE seq_alert_event;

CREATE TABLE tb_alert_event (
  seq                 BIGINT PRIMARY KEY,
  alert_id            VARCHAR(50) NOT NULL,
  alert_rule_id       VARCHAR(50) NOT NULL,
  kind                VARCHAR(20) NOT NULL,  -- created, status-changed, updated, deleted
  status              alert_status NOT NULL,
  previous_status     alert_status,
  severity            severity_level NOT NULL,
  actor               VARCHAR(50),           -- NULL: the evaluator
  changed_at          TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
  payload             BYTEA NOT NULL         -- monitoring.v1.AlertChange (alert.sequence left 0: it is seq)
);

CREATE INDEX idx_alert_event_changed ON tb_alert_event(changed_at);

CREATE FUNCTION mon_alert_event_append(p_alert_id text, p_rule_id text, p_kind text, p_status alert_status,
                                       p_previous alert_status, p_severity severity_level, p_actor text,
                                       p_payload bytea)
RETURNS bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
  v_seq bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(7206020);
  v_seq := nextval('seq_alert_event');
  INSERT INTO tb_alert_event (seq, alert_id, alert_rule_id, kind, status, previous_status, severity, actor, payload)
  VALUES (v_seq, p_alert_id, p_rule_id, p_kind, p_status, p_previous, p_severity, p_actor, p_payload);
  UPDATE tb_alert SET sequence = v_seq WHERE id = p_alert_id;
  PERFORM pg_notify('mon_alerts', v_seq::text);
  RETURN v_seq;
END
$fn$;

-- Deliveries. One row per (alert, channel, recipient, trigger, level),
-- inserted in the alert change's transaction; the worker claims due rows
-- with FOR UPDATE SKIP LOCKED, sends, and records the outcome here and in
-- tb_alert.notifications_sent. idempotency_key is sent with every attempt.
CREATE TABLE tb_notification_outbox (
  id                  VARCHAR(50) PRIMARY KEY,
  alert_id            VARCHAR(50) NOT NULL REFERENCES tb_alert(id) ON DELETE CASCADE,
  channel             notification_channel NOT NULL,
  recipient           VARCHAR(500) NOT NULL,
  trigger             VARCHAR(20) NOT NULL,            -- fired, escalated, resolved, test
  escalation_level    INTEGER NOT NULL DEFAULT 0,
  status              VARCHAR(20) NOT NULL DEFAULT 'pending', -- pending, sent, retrying, failed, skipped
  attempt_count       INTEGER NOT NULL DEFAULT 0,
  idempotency_key     VARCHAR(100) NOT NULL UNIQUE,
  payload             JSONB NOT NULL,                  -- the message as the channel receives it
  created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  last_attempt_at     TIMESTAMPTZ,
  next_attempt_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  delivered_at        TIMESTAMPTZ,
  error_message       TEXT,
  response_status_code INTEGER
);

CREATE INDEX idx_notification_outbox_due ON tb_notification_outbox(next_attempt_at)
  WHERE status IN ('pending', 'retrying');
CREATE INDEX idx_notification_outbox_alert ON tb_notification_outbox(alert_id, created_at);

CREATE TABLE tb_escalation_policy (
  id                  VARCHAR(50) PRIMARY KEY,
  name                VARCHAR(200) NOT NULL,
  description         TEXT,
  levels              JSONB NOT NULL,                  -- [{delay_minutes, channels[], recipients{}}]
  is_repeat_last_level BOOLEAN NOT NULL DEFAULT FALSE,
  created_by          VARCHAR(50) NOT NULL,
  created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at          TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- A rule's policy cannot be deleted under it.
ALTER TABLE tb_alert_rule ADD CONSTRAINT fk_alert_rule_escalation_policy
  FOREIGN KEY (escalation_policy_id) REFERENCES tb_escalation_policy(id);

CREATE TABLE tb_silence (
  id                  VARCHAR(50) PRIMARY KEY,
  alert_rule_ids      TEXT[] NOT NULL DEFAULT '{}',
  severities          severity_level[] NOT NULL DEFAULT '{}',
  tags                JSONB NOT NULL DEFAULT '{}',
  starts_at           TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  ends_at             TIMESTAMPTZ NOT NULL,
  comment             TEXT NOT NULL,
  created_by          VARCHAR(50) NOT NULL,
  created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  expired_by          VARCHAR(50),
  CONSTRAINT tb_silence_times CHECK (ends_at > starts_at)
);

CREATE INDEX idx_silence_ends ON tb_silence(ends_at);
