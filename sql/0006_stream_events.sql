-- Durable event sequences for the resumable streams (WatchAlerts,
-- WatchServiceHealth): every event a stream publishes is a row here,
-- written in the transaction that made the change, and its seq is the
-- resume cursor a subscriber sends back. NOTIFY only wakes the replicas;
-- this table is what they read.
--
-- Writers of one stream take pg_advisory_xact_lock(hashtext(stream)) before
-- inserting, so that within a stream seq order is commit order and a reader
-- that saw seq N never later finds a smaller seq committed behind it.

CREATE TABLE tb_stream_event (
  seq                 BIGSERIAL PRIMARY KEY,
  stream              VARCHAR(50) NOT NULL, -- 'alerts', 'service-health'
  payload             JSONB NOT NULL,
  created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX idx_stream_event_stream ON tb_stream_event(stream, seq);
-- retention (90 days, as alert history)
CREATE INDEX idx_stream_event_created ON tb_stream_event(created_at);
