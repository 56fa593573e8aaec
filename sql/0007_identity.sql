-- Callers and their credentials (server/identity.c). A caller has an id, an
-- email, a team and a role, and may be mapped to a client-certificate
-- subject. API keys belong to a caller; only BLAKE2b-256 of a key's secret
-- is stored (32 bytes), never the secret or the token, so reading these
-- tables gives nothing that authenticates. Every change publishes NOTIFY
-- mon_identity so each replica reloads its in-memory copy.

CREATE TYPE caller_role AS ENUM ('viewer', 'editor', 'admin');

CREATE TABLE tb_caller (
  id                  VARCHAR(50) PRIMARY KEY,
  email               VARCHAR(255) NOT NULL,
  team                VARCHAR(100) NOT NULL DEFAULT '',
  role                caller_role NOT NULL,
  cert_subject        VARCHAR(255) UNIQUE, -- client certificate common name; NULL: none
  created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  disabled_at         TIMESTAMPTZ, -- NULL: active
  CONSTRAINT tb_caller_id_not_empty CHECK (id <> ''),
  CONSTRAINT tb_caller_cert_subject_not_empty CHECK (cert_subject IS NULL OR cert_subject <> '')
);

CREATE INDEX idx_caller_role ON tb_caller(role);
CREATE INDEX idx_caller_team ON tb_caller(team);

CREATE TABLE tb_api_key (
  id                  VARCHAR(32) PRIMARY KEY, -- public key id (16 lowercase hex characters)
  caller_id           VARCHAR(50) NOT NULL REFERENCES tb_caller(id),
  secret_hash         BYTEA NOT NULL,          -- BLAKE2b-256 of the secret
  description         TEXT NOT NULL DEFAULT '',
  created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  expires_at          TIMESTAMPTZ,             -- NULL: never
  revoked_at          TIMESTAMPTZ,             -- NULL: not revoked
  last_used_at        TIMESTAMPTZ,             -- kept approximately (at most once a minute)
  CONSTRAINT tb_api_key_id_format CHECK (id ~ '^[0-9a-f]{16}$'),
  CONSTRAINT tb_api_key_secret_hash_length CHECK (length(secret_hash) = 32)
);

CREATE INDEX idx_api_key_caller ON tb_api_key(caller_id, created_at);
-- The servers load keys not revoked, and revoked ones only for a week (so
-- the log can still say "revoked" rather than "unknown").
CREATE INDEX idx_api_key_revoked ON tb_api_key(revoked_at);
