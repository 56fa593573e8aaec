-- The health store (server/health/store.c): the prober's claims on
-- tb_service_health, the ordered change log of monitored services that
-- WatchServiceHealth resumes from, and the hourly uptime rollup that keeps
-- uptime_24h, uptime_7d and uptime_30d current with bounded queries.
--
-- Uptime is time-weighted: each check's status holds from its checked_at
-- until the service's next check (the latest one until now). HEALTHY and
-- DEGRADED time is up, DOWN time is down, UNKNOWN time and time before the
-- first check are left out of the denominator. tb_service_uptime_hourly
-- holds, per service and UTC hour, the up and down milliseconds of the
-- closed intervals between consecutive checks, the number of checks and
-- the transitions into DOWN; health_uptime_window() adds the partial hours
-- at a window's edges and the open interval after the latest check from
-- the log itself, so every window is exact.

ALTER TABLE tb_service_health
  ADD COLUMN next_probe_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  ADD COLUMN probe_claimed_by  VARCHAR(100),
  ADD COLUMN probe_lease_until TIMESTAMPTZ;

CREATE INDEX idx_service_health_next_probe ON tb_service_health(next_probe_at)
  WHERE health_check_url IS NOT NULL;
CREATE INDEX idx_service_health_name ON tb_service_health(name, id);

-- Neighbours of a check in (checked_at, id) order, for the rollup.
CREATE INDEX idx_health_check_service_order ON tb_health_check_log(service_id, checked_at, id);

-- Changes of monitored services, in commit order (writers take
-- pg_advisory_xact_lock(7206001) before inserting). kind is one of
-- 'created', 'updated', 'deleted', 'status_changed' and 'checked' (a check
-- that left the status as it was). No foreign key: a deleted service's
-- events stay for subscribers that resume.
CREATE TABLE tb_service_health_event (
  seq                 BIGSERIAL PRIMARY KEY,
  service_id          VARCHAR(50) NOT NULL,
  kind                VARCHAR(20) NOT NULL DEFAULT 'status_changed'
                      CHECK (kind IN ('created', 'updated', 'deleted', 'status_changed', 'checked')),
  previous_status     service_status,
  status              service_status,
  check_id            BIGINT,
  checked_at          TIMESTAMPTZ,
  occurred_at         TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  response_time       INTEGER,
  error_message       TEXT
);

CREATE INDEX idx_service_health_event_service ON tb_service_health_event(service_id, seq);
CREATE INDEX idx_service_health_event_occurred ON tb_service_health_event(occurred_at);

CREATE TABLE tb_service_uptime_hourly (
  service_id          VARCHAR(50) NOT NULL REFERENCES tb_service_health(id) ON DELETE CASCADE,
  hour                TIMESTAMPTZ NOT NULL,
  up_ms               BIGINT NOT NULL DEFAULT 0,
  down_ms             BIGINT NOT NULL DEFAULT 0,
  check_count         INTEGER NOT NULL DEFAULT 0,
  incident_count      INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (service_id, hour)
);

CREATE INDEX idx_service_uptime_hourly_hour ON tb_service_uptime_hourly(hour);

-- The UTC hour that holds t.
CREATE FUNCTION health_hour(t TIMESTAMPTZ) RETURNS TIMESTAMPTZ
LANGUAGE sql IMMUTABLE AS $$
  SELECT to_timestamp(floor(extract(epoch FROM t) / 3600) * 3600)
$$;

-- Adds sign times [p_from, p_to) in status p_status to the service's
-- hourly rollup. Hours older than 32 days are never read and are skipped.
CREATE FUNCTION health_uptime_add(p_service VARCHAR, p_from TIMESTAMPTZ, p_to TIMESTAMPTZ,
                                  p_status service_status, p_sign INTEGER) RETURNS VOID
LANGUAGE sql AS $$
  INSERT INTO tb_service_uptime_hourly AS u (service_id, hour, up_ms, down_ms)
  SELECT p_service, s.h,
         CASE WHEN p_status IN ('healthy', 'degraded') THEN p_sign * s.ms ELSE 0 END,
         CASE WHEN p_status = 'down' THEN p_sign * s.ms ELSE 0 END
  FROM (SELECT h, (extract(epoch FROM least(h + interval '1 hour', p_to)
                                      - greatest(h, p_from)) * 1000)::bigint AS ms
        FROM generate_series(health_hour(greatest(p_from, now() - interval '32 days')),
                             p_to, interval '1 hour') AS h) s
  WHERE p_status IN ('healthy', 'degraded', 'down') AND p_to > p_from AND s.ms > 0
  ON CONFLICT (service_id, hour) DO UPDATE
    SET up_ms = u.up_ms + EXCLUDED.up_ms, down_ms = u.down_ms + EXCLUDED.down_ms
$$;

-- Adds sign checks and incidents to the hour holding p_at.
CREATE FUNCTION health_uptime_count(p_service VARCHAR, p_at TIMESTAMPTZ, p_checks INTEGER,
                                    p_incidents INTEGER) RETURNS VOID
LANGUAGE sql AS $$
  INSERT INTO tb_service_uptime_hourly AS u (service_id, hour, check_count, incident_count)
  SELECT p_service, health_hour(p_at), p_checks, p_incidents
  WHERE p_at >= now() - interval '32 days' AND (p_checks <> 0 OR p_incidents <> 0)
  ON CONFLICT (service_id, hour) DO UPDATE
    SET check_count = u.check_count + EXCLUDED.check_count,
        incident_count = u.incident_count + EXCLUDED.incident_count
$$;

-- Time-weighted figures of [p_start, p_end) computed from the log alone:
-- for short ranges (the edges of a window). Intervals run from each check
-- to the next one, the latest to p_now.
CREATE FUNCTION health_uptime_raw(p_service VARCHAR, p_start TIMESTAMPTZ, p_end TIMESTAMPTZ,
                                  p_now TIMESTAMPTZ,
                                  OUT up_ms BIGINT, OUT down_ms BIGINT,
                                  OUT check_count INTEGER, OUT incident_count INTEGER)
LANGUAGE sql STABLE AS $$
  WITH rows AS (
    (SELECT checked_at, id, status FROM tb_health_check_log
     WHERE service_id = p_service AND checked_at < p_start
     ORDER BY checked_at DESC, id DESC LIMIT 1)
    UNION ALL
    (SELECT checked_at, id, status FROM tb_health_check_log
     WHERE service_id = p_service AND checked_at >= p_start AND checked_at < p_end)
    UNION ALL
    (SELECT checked_at, id, status FROM tb_health_check_log
     WHERE service_id = p_service AND checked_at >= p_end
     ORDER BY checked_at, id LIMIT 1)
  ), spans AS (
    SELECT checked_at, status,
           lag(status) OVER w AS prev_status,
           greatest(checked_at, p_start) AS a,
           least(coalesce(lead(checked_at) OVER w, greatest(p_now, checked_at)), p_end) AS b
    FROM rows WINDOW w AS (ORDER BY checked_at, id)
  )
  SELECT coalesce(sum(CASE WHEN status IN ('healthy', 'degraded') AND b > a
                      THEN (extract(epoch FROM b - a) * 1000)::bigint END), 0)::bigint,
         coalesce(sum(CASE WHEN status = 'down' AND b > a
                      THEN (extract(epoch FROM b - a) * 1000)::bigint END), 0)::bigint,
         count(*) FILTER (WHERE checked_at >= p_start AND checked_at < p_end)::integer,
         count(*) FILTER (WHERE checked_at >= p_start AND checked_at < p_end AND status = 'down'
                          AND prev_status IS DISTINCT FROM 'down')::integer
  FROM spans
$$;

-- Time-weighted figures of the window [p_start, p_end): whole UTC hours
-- from the rollup plus the open interval after the latest check, the
-- partial hours at the edges from the log. Reads at most two hours of
-- checks and 24 * days rollup rows.
CREATE FUNCTION health_uptime_window(p_service VARCHAR, p_start TIMESTAMPTZ, p_end TIMESTAMPTZ,
                                     p_now TIMESTAMPTZ,
                                     OUT up_ms BIGINT, OUT down_ms BIGINT,
                                     OUT check_count INTEGER, OUT incident_count INTEGER)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  h_start TIMESTAMPTZ := health_hour(p_start);
  h_end TIMESTAMPTZ := health_hour(p_end);
  r RECORD;
  last_at TIMESTAMPTZ;
  last_status service_status;
  tail_ms BIGINT;
BEGIN
  IF h_start < p_start THEN
    h_start := h_start + interval '1 hour';
  END IF;
  IF h_start >= h_end THEN
    SELECT * INTO r FROM health_uptime_raw(p_service, p_start, p_end, p_now);
    up_ms := r.up_ms; down_ms := r.down_ms;
    check_count := r.check_count; incident_count := r.incident_count;
    RETURN;
  END IF;
  SELECT coalesce(sum(u.up_ms), 0)::bigint, coalesce(sum(u.down_ms), 0)::bigint,
         coalesce(sum(u.check_count), 0)::integer, coalesce(sum(u.incident_count), 0)::integer
    INTO up_ms, down_ms, check_count, incident_count
    FROM tb_service_uptime_hourly u
    WHERE u.service_id = p_service AND u.hour >= h_start AND u.hour < h_end;
  -- The latest check's status holds until p_now; the rollup has only closed intervals.
  SELECT l.checked_at, l.status INTO last_at, last_status FROM tb_health_check_log l
    WHERE l.service_id = p_service ORDER BY l.checked_at DESC, l.id DESC LIMIT 1;
  IF last_at IS NOT NULL THEN
    tail_ms := greatest(0, (extract(epoch FROM least(p_now, h_end) - greatest(last_at, h_start)) * 1000)::bigint);
    IF last_status IN ('healthy', 'degraded') THEN
      up_ms := up_ms + tail_ms;
    ELSIF last_status = 'down' THEN
      down_ms := down_ms + tail_ms;
    END IF;
  END IF;
  SELECT * INTO r FROM health_uptime_raw(p_service, p_start, h_start, p_now);
  up_ms := up_ms + r.up_ms; down_ms := down_ms + r.down_ms;
  check_count := check_count + r.check_count; incident_count := incident_count + r.incident_count;
  SELECT * INTO r FROM health_uptime_raw(p_service, h_end, p_end, p_now);
  up_ms := up_ms + r.up_ms; down_ms := down_ms + r.down_ms;
  check_count := check_count + r.check_count; incident_count := incident_count + r.incident_count;
END
$$;

-- Percent up of known time, 2 decimals; NULL when nothing is known.
CREATE FUNCTION health_uptime_percent(p_up BIGINT, p_down BIGINT) RETURNS NUMERIC
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN p_up + p_down > 0 THEN round(p_up * 100.0 / (p_up + p_down), 2) END
$$;

-- Folds a new check (row p_id, not yet visible) into the hourly rollup:
-- the check takes over the interval up to its successor from its
-- predecessor, or closes its predecessor's open interval when it is the
-- latest. Returns true when the check is the service's latest (by
-- checked_at, then id). Callers hold the service row's lock.
CREATE FUNCTION health_uptime_record(p_service VARCHAR, p_id BIGINT, p_at TIMESTAMPTZ,
                                     p_status service_status) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
  prev RECORD;
  nxt RECORD;
  has_prev BOOLEAN;
  has_next BOOLEAN;
  was_incident INTEGER := 0;
  is_incident INTEGER := 0;
BEGIN
  SELECT l.checked_at, l.status INTO prev FROM tb_health_check_log l
    WHERE l.service_id = p_service AND (l.checked_at, l.id) < (p_at, p_id)
    ORDER BY l.checked_at DESC, l.id DESC LIMIT 1;
  has_prev := FOUND;
  SELECT l.checked_at, l.status INTO nxt FROM tb_health_check_log l
    WHERE l.service_id = p_service AND (l.checked_at, l.id) > (p_at, p_id)
    ORDER BY l.checked_at, l.id LIMIT 1;
  has_next := FOUND;
  PERFORM health_uptime_count(p_service, p_at, 1,
    CASE WHEN p_status = 'down' AND (NOT has_prev OR prev.status <> 'down') THEN 1 ELSE 0 END);
  IF has_next THEN
    IF has_prev THEN
      PERFORM health_uptime_add(p_service, p_at, nxt.checked_at, prev.status, -1);
    END IF;
    PERFORM health_uptime_add(p_service, p_at, nxt.checked_at, p_status, 1);
    IF nxt.status = 'down' AND (NOT has_prev OR prev.status <> 'down') THEN
      was_incident := 1;
    END IF;
    IF nxt.status = 'down' AND p_status <> 'down' THEN
      is_incident := 1;
    END IF;
    PERFORM health_uptime_count(p_service, nxt.checked_at, 0, is_incident - was_incident);
  ELSIF has_prev THEN
    PERFORM health_uptime_add(p_service, prev.checked_at, p_at, prev.status, 1);
  END IF;
  RETURN NOT has_next;
END
$$;

-- Every insert into the log folds the check into the rollup, whoever
-- writes it (the store, COPY, an operator's psql). BEFORE, so that rows
-- inserted earlier by the same statement are visible and the new one is
-- not yet. Rows deleted by hand are not taken out of the rollup (retention
-- removes whole hours of both).
CREATE FUNCTION health_check_log_rollup() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM tb_service_health WHERE id = NEW.service_id FOR UPDATE;
  PERFORM health_uptime_record(NEW.service_id, NEW.id, NEW.checked_at, NEW.status);
  RETURN NEW;
END
$$;

CREATE TRIGGER trg_health_check_log_rollup BEFORE INSERT ON tb_health_check_log
  FOR EACH ROW EXECUTE FUNCTION health_check_log_rollup();
