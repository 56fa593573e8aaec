/*
 * Callers and their credentials: API keys (random, shown once, stored only
 * as a hash) and client-certificate subjects, each mapped to a caller with
 * an id, an email, a team and a role. The store keeps every active key and
 * certificate mapping in memory, so authenticating a call never blocks; it
 * reloads after any change (NOTIFY on channel "mon_identity", from any
 * replica) and every 60 s as a safety net.
 *
 * API key format: "mk_<key id>_<secret>": the key id (16 lowercase hex
 * characters) is public and names the key in lists and audit rows; the
 * secret is 32 random bytes in unpadded base64url. Only BLAKE2b-256 of the
 * secret is stored (a fast hash is right for 256-bit random secrets: there
 * is nothing to brute-force), compared in constant time.
 */
#ifndef MON_SERVER_ACCESS_IDENTITY_H
#define MON_SERVER_ACCESS_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "rpc/server.h"
#include "util/error.h"

#define IDENTITY_TOKEN_MAX 96
#define IDENTITY_KEY_ID_LEN 16

struct identity_store;

struct identity_caller {
	char id[64];
	char email[256];
	char team[128];
	enum rpc_role role;
	char cert_subject[256]; /* "" when none */
	int64_t created_at_ms;
	int64_t disabled_at_ms; /* 0 when active */
};

struct identity_key {
	char id[IDENTITY_KEY_ID_LEN + 1];
	char caller_id[64];
	char description[256];
	int64_t created_at_ms;
	int64_t expires_at_ms;   /* 0: never */
	int64_t revoked_at_ms;   /* 0: not revoked */
	int64_t last_used_at_ms; /* 0: never used (kept approximately) */
};

/*
 * Creates the store and starts its reload thread, which loads it at once
 * (an unreachable database or a schema not migrated yet is not an error:
 * it retries every few seconds until it loads; until then every credential
 * is refused). Never blocks on the database. Subscribes to channel
 * "mon_identity" on bus and takes the bus's reconnect callback (the bus has
 * one). bus may be NULL (then only the periodic reload runs). The caller
 * owns the store; MON_ENOMEM or MON_EINTERNAL (thread) on failure.
 */
int identity_store_create(struct db_pool *pool, struct db_bus *bus, struct identity_store **out,
                          struct mon_error *err) MON_MUST_CHECK;

/*
 * Stops the reload thread and frees the store; accepts NULL. The bus has
 * no unsubscribe: destroy the bus (db_bus_destroy) first, and the RPC
 * server too, since both call into the store.
 */
void identity_store_destroy(struct identity_store *store);

/*
 * Reloads from the database now and waits for it (also done on NOTIFY, at
 * bus reconnection and every 60 s). On failure the previous contents stay.
 */
int identity_store_reload(struct identity_store *store, struct mon_error *err) MON_MUST_CHECK;

/* Asks the reload thread to reload soon; never blocks (for example after migrations). */
void identity_store_request_reload(struct identity_store *store);

/* True once a load has succeeded. */
bool identity_store_is_loaded(struct identity_store *store);

/* An rpc_auth_fn: arg is the store. Never blocks. */
int identity_authenticate(void *arg, const struct rpc_auth_request *req, struct rpc_identity *out,
                          struct mon_error *err);

/*
 * Changes, each inside the caller's transaction (conn from db_tx_run), each
 * publishing NOTIFY mon_identity so every replica reloads after commit.
 * Inputs are checked (MON_EINVAL naming the field); an unknown caller or
 * key is MON_ENOTFOUND; the database's own errors are passed on (db.h).
 */
int identity_caller_create_tx(struct db_conn *conn, const struct identity_caller *caller,
                              struct mon_error *err) MON_MUST_CHECK;
int identity_caller_get_tx(struct db_conn *conn, const char *caller_id, struct identity_caller *out,
                           struct mon_error *err) MON_MUST_CHECK;

/*
 * Creates a key for caller_id. The token (the only time the secret exists
 * outside the caller's hands) is written to token_out; info_out describes
 * the key. Never log or audit the token.
 */
int identity_key_create_tx(struct db_conn *conn, const char *caller_id, const char *description, int64_t expires_at_ms,
                           char token_out[IDENTITY_TOKEN_MAX], struct identity_key *info_out,
                           struct mon_error *err) MON_MUST_CHECK;
int identity_key_get_tx(struct db_conn *conn, const char *key_id, struct identity_key *out,
                        struct mon_error *err) MON_MUST_CHECK;
/*
 * The keys of caller_id (NULL: of every caller), oldest first, at most max
 * (MON_ELIMIT beyond, with nothing returned). *out is a malloc'd array the
 * caller frees with free() (NULL when *count_out is 0).
 */
int identity_key_list_tx(struct db_conn *conn, const char *caller_id, size_t max, struct identity_key **out,
                         size_t *count_out, struct mon_error *err) MON_MUST_CHECK;
/* Disables (true: now) or re-enables (false) a caller; MON_ENOTFOUND when unknown. */
int identity_caller_set_disabled_tx(struct db_conn *conn, const char *caller_id, bool is_disabled,
                                    struct mon_error *err) MON_MUST_CHECK;
/*
 * The first admin: creates caller "admin" (role admin, email) and a key for
 * it, as identity_caller_create_tx and identity_key_create_tx do, unless an
 * active admin caller exists already (MON_EEXIST, message naming it) or
 * the id "admin" is taken (MON_EEXIST). Serialized against concurrent
 * bootstraps with a transaction-level advisory lock.
 */
int identity_bootstrap_tx(struct db_conn *conn, const char *email, char token_out[IDENTITY_TOKEN_MAX],
                          struct identity_key *info_out, struct mon_error *err) MON_MUST_CHECK;
/* Revokes now (MON_EPRECOND if already revoked). */
int identity_key_revoke_tx(struct db_conn *conn, const char *key_id, struct mon_error *err) MON_MUST_CHECK;
/* Sets or clears (0) the expiry. */
int identity_key_set_expiry_tx(struct db_conn *conn, const char *key_id, int64_t expires_at_ms,
                               struct mon_error *err) MON_MUST_CHECK;

/* Pure helpers, unit-tested. */
/* Splits "mk_<id>_<secret>" into its parts; MON_EUNAUTH when malformed. */
int identity_token_parse(const char *token, char key_id[IDENTITY_KEY_ID_LEN + 1], unsigned char secret[32],
                         struct mon_error *err) MON_MUST_CHECK;
/* "viewer" / "editor" / "admin" to a role; MON_EINVAL otherwise. */
int identity_role_parse(const char *name, enum rpc_role *out) MON_MUST_CHECK;
/* Writes "mk_<key_id>_<secret in base64url>" to token_out (key_id must be 16 lowercase hex characters). */
int identity_token_format(const char *key_id, const unsigned char secret[32], char token_out[IDENTITY_TOKEN_MAX],
                          struct mon_error *err) MON_MUST_CHECK;
/* The stored form of a secret: BLAKE2b-256 of its 32 bytes. */
void identity_secret_hash(const unsigned char secret[32], unsigned char hash_out[32]);

#endif
