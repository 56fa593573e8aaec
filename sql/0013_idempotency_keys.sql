-- Idempotency keys (AIP-155): the outcome of a state-changing call made
-- with a client-chosen key, so that a retry with the same key returns the
-- first outcome instead of changing anything again.
--   * One row per (caller, method, key): the call claims the row in the
--     same transaction as its change, so concurrent duplicates wait on the
--     primary key and a failed call leaves no row (its retry runs again).
--   * request_digest: BLAKE2b-256 of the request serialised without the
--     key, to refuse a key reused with a different request.
--   * response: the serialised response message, stored before COMMIT.
--   * Pruned by the retention job after idempotency-retention-hours.
CREATE TABLE tb_idempotency_key (
  caller_id        TEXT NOT NULL,          -- '' for an anonymous caller
  method           TEXT NOT NULL,          -- "/monitoring.v1.AlertsService/AcknowledgeAlert"
  idempotency_key  TEXT NOT NULL,
  request_digest   BYTEA NOT NULL,
  response         BYTEA,                  -- NULL only inside the claiming transaction
  created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (caller_id, method, idempotency_key)
);

CREATE INDEX idx_idempotency_key_created ON tb_idempotency_key(created_at);
