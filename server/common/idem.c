/*
 * Idempotency keys (see idem.h). The key row lives in tb_idempotency_key
 * (sql/0013_idempotency_keys.sql) and is written only in the transaction
 * of the change it stands for: a call that fails rolls its row back with
 * its change, and a call that commits commits its outcome with it, so no
 * outcome is ever stored for a change that did not happen, nor the
 * reverse.
 */
#include "common/idem.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "common/parse.h"
#include "common/text.h"

#define PRUNE_ACQUIRE_TIMEOUT_MS 10000

static int nomem(struct mon_error *err)
{
	return mon_error_set(err, MON_ENOMEM, "idempotency key: the call's memory cap was reached");
}

int svc_idem_check_key(const char *field, const char *key, struct mon_error *err)
{
	return svc_check_text(field, key, 0, SVC_IDEM_KEY_MAX_BYTES, SVC_IDEM_KEY_MAX_BYTES, SVC_TEXT_NO_CONTROLS, err);
}

int svc_idem_digest(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *field, struct arena *a,
                    unsigned char digest[SVC_IDEM_DIGEST_BYTES], struct mon_error *err)
{
	ProtobufCMessage *copy = arena_alloc(a, msg->descriptor->sizeof_message);
	if (copy == NULL)
		return nomem(err);
	if (field != NULL)
		rpc_idem_copy_with_key(copy, msg, field, "");
	else
		memcpy(copy, msg, msg->descriptor->sizeof_message);
	size_t len = protobuf_c_message_get_packed_size(copy);
	uint8_t *buf = arena_alloc(a, len ? len : 1);
	if (buf == NULL)
		return nomem(err);
	protobuf_c_message_pack(copy, buf);
	crypto_generichash(digest, SVC_IDEM_DIGEST_BYTES, buf, len, NULL, 0);
	return 0;
}

/* The hex text of n bytes, in a (bytea's decode(..., 'hex') reads it). */
static char *hex_of(struct arena *a, const unsigned char *bytes, size_t n)
{
	char *hex = arena_alloc(a, 2 * n + 1);
	if (hex != NULL)
		sodium_bin2hex(hex, 2 * n + 1, bytes, n);
	return hex;
}

/* Unpacks the hex text of a stored response into resp (a shallow copy of a message unpacked into a). */
static int unpack_stored(struct arena *a, const char *hex, ProtobufCMessage *resp, struct mon_error *err)
{
	size_t len = 0;
	uint8_t *bytes = svc_hex_decode(a, hex, &len);
	if (bytes == NULL) /* the text is encode(response, 'hex'): only the arena's cap fails it */
		return nomem(err);
	ProtobufCAllocator alloc = arena_protobuf_allocator(a);
	ProtobufCMessage *m = protobuf_c_message_unpack(resp->descriptor, &alloc, len, bytes);
	if (m == NULL)
		return mon_error_set(err, MON_EINTERNAL, "stored outcome of the idempotency key is corrupt");
	memcpy(resp, m, resp->descriptor->sizeof_message);
	return 0;
}

int svc_idem_lookup_tx(struct db_conn *conn, const struct svc_idem *k, struct arena *a, ProtobufCMessage *resp,
                       bool *is_found, struct mon_error *err)
{
	static const char read_sql[] =
	        "SELECT request_digest = decode($4, 'hex'), encode(response, 'hex') FROM tb_idempotency_key"
	        " WHERE caller_id = $1 AND method = $2 AND idempotency_key = $3";
	struct db_result *res = NULL;
	*is_found = false;
	char *digest_hex = hex_of(a, k->digest, SVC_IDEM_DIGEST_BYTES);
	if (digest_hex == NULL)
		return nomem(err);
	const char *params[] = {k->caller_id, k->method, k->key, digest_hex};
	int rc = db_exec(conn, read_sql, 4, params, &res, err);
	if (rc != 0)
		return rc;
	if (db_result_rows(res) != 1)
		goto out;
	if (strcmp(db_result_value(res, 0, 0), "t") != 0) {
		rc = mon_error_set(err, MON_EINVAL,
		                   "%s: this key was already used by this caller for a different %s request; use a "
		                   "new key for a new request",
		                   k->field, strrchr(k->method, '/') ? strrchr(k->method, '/') + 1 : k->method);
		goto out;
	}
	if (db_result_is_null(res, 0, 1)) {
		rc = mon_error_set(err, MON_EINTERNAL, "%s: the key's committed row has no outcome", k->field);
		goto out;
	}
	if ((rc = unpack_stored(a, db_result_value(res, 0, 1), resp, err)) == 0)
		*is_found = true;
out:
	db_result_free(res);
	return rc;
}

int svc_idem_claim_tx(struct db_conn *conn, const struct svc_idem *k, struct arena *a, ProtobufCMessage *resp,
                      bool *is_replay, struct mon_error *err)
{
	static const char claim_sql[] =
	        "INSERT INTO tb_idempotency_key (caller_id, method, idempotency_key, request_digest)"
	        " VALUES ($1, $2, $3, decode($4, 'hex')) ON CONFLICT DO NOTHING RETURNING 1";
	struct db_result *res = NULL;
	*is_replay = false;
	char *digest_hex = hex_of(a, k->digest, SVC_IDEM_DIGEST_BYTES);
	if (digest_hex == NULL)
		return nomem(err);
	const char *params[] = {k->caller_id, k->method, k->key, digest_hex};
	/* A concurrent duplicate's uncommitted row makes this wait until that transaction ends. */
	int rc = db_exec(conn, claim_sql, 4, params, &res, err);
	if (rc != 0)
		return rc;
	bool is_claimed = db_result_rows(res) == 1;
	db_result_free(res);
	if (is_claimed)
		return 0;
	if ((rc = svc_idem_lookup_tx(conn, k, a, resp, is_replay, err)) != 0)
		return rc;
	if (!*is_replay) /* pruned between the two statements: the retry claims it afresh */
		return mon_error_set(err, MON_EUNAVAIL, "%s: the key's stored outcome was being pruned; retry",
		                     k->field);
	return 0;
}

int svc_idem_store_tx(struct db_conn *conn, const struct svc_idem *k, struct arena *a, const ProtobufCMessage *resp,
                      struct mon_error *err)
{
	static const char store_sql[] = "UPDATE tb_idempotency_key SET response = decode($4, 'hex')"
	                                " WHERE caller_id = $1 AND method = $2 AND idempotency_key = $3";
	size_t len = protobuf_c_message_get_packed_size(resp);
	uint8_t *buf = arena_alloc(a, len ? len : 1);
	if (buf == NULL)
		return nomem(err);
	protobuf_c_message_pack(resp, buf);
	char *hex = hex_of(a, buf, len);
	if (hex == NULL)
		return nomem(err);
	const char *params[] = {k->caller_id, k->method, k->key, hex};
	struct db_result *res = NULL;
	int rc = db_exec(conn, store_sql, 4, params, &res, err);
	if (rc == 0 && db_result_affected(res) != 1)
		rc = mon_error_set(err, MON_EINTERNAL, "%s: the key's row was not claimed", k->field);
	db_result_free(res);
	return rc;
}

int svc_idem_prune(struct db_pool *pool, int64_t retention_hours, int64_t *deleted, struct mon_error *err)
{
	static const char prune_sql[] =
	        "DELETE FROM tb_idempotency_key WHERE (caller_id, method, idempotency_key) IN"
	        " (SELECT caller_id, method, idempotency_key FROM tb_idempotency_key"
	        " WHERE created_at < now() - $1::integer * interval '1 hour' LIMIT $2::integer)";
	int64_t local = 0;
	if (deleted == NULL)
		deleted = &local;
	*deleted = 0;
	if (retention_hours < 1 || retention_hours > SVC_IDEM_RETENTION_HOURS_MAX)
		return mon_error_set(err, MON_EINVAL, "idempotency-retention-hours: must be 1 to %d",
		                     SVC_IDEM_RETENTION_HOURS_MAX);
	char hours[24], batch[16];
	snprintf(hours, sizeof(hours), "%" PRId64, retention_hours);
	snprintf(batch, sizeof(batch), "%d", SVC_IDEM_PRUNE_BATCH);
	const char *params[] = {hours, batch};
	struct db_conn *conn = NULL;
	int rc = db_pool_acquire(pool, PRUNE_ACQUIRE_TIMEOUT_MS, &conn, err);
	if (rc != 0)
		return rc;
	for (;;) {
		struct db_result *res = NULL;
		if ((rc = db_exec(conn, prune_sql, 2, params, &res, err)) != 0)
			break;
		int64_t n = db_result_affected(res);
		db_result_free(res);
		*deleted += n;
		if (n < SVC_IDEM_PRUNE_BATCH)
			break;
	}
	db_pool_release(pool, conn);
	return rc;
}
