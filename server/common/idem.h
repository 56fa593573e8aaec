/*
 * Idempotency keys (AIP-155) of state-changing calls on the server: the
 * key's validation, the digest of a request without its key, the claim and
 * the stored outcome of a key, and their pruning. Which field is the key
 * is found through the message descriptor (rpc_idem_key_field in
 * rpc/idem.h, shared with the client library), so no RPC names its own.
 * svc_run_change (common/call.h) uses these to claim a key in the
 * transaction of the change and to answer a retry with the first outcome.
 */
#ifndef MON_SERVER_COMMON_IDEM_H
#define MON_SERVER_COMMON_IDEM_H

#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "db/db.h"
#include "rpc/idem.h"
#include "util/arena.h"
#include "util/error.h"

#define SVC_IDEM_KEY_MAX_BYTES 128        /* a UUID is 36 */
#define SVC_IDEM_DIGEST_BYTES 32          /* BLAKE2b-256 */
#define SVC_IDEM_RETENTION_HOURS_MAX 8760 /* a year */
#define SVC_IDEM_PRUNE_BATCH 5000         /* rows deleted per statement */

/*
 * A key: at most SVC_IDEM_KEY_MAX_BYTES bytes of well-formed UTF-8 without
 * control characters. MON_EINVAL with a message that starts with field
 * otherwise.
 */
int svc_idem_check_key(const char *field, const char *key, struct mon_error *err) MON_MUST_CHECK;

/*
 * The digest of msg serialised with field (its key) cleared, so that a
 * retry with the same key and the same request digests alike and a
 * different request does not. msg is not changed (a shallow copy in a is
 * serialised). MON_ENOMEM when a cannot hold the copy.
 */
int svc_idem_digest(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *field, struct arena *a,
                    unsigned char digest[SVC_IDEM_DIGEST_BYTES], struct mon_error *err) MON_MUST_CHECK;

/* A call's key, as svc_run_change claims it. */
struct svc_idem {
	const char *caller_id; /* "" for an anonymous caller */
	const char *method;    /* the full method path */
	const char *field;     /* the key field's name, for messages */
	const char *key;
	unsigned char digest[SVC_IDEM_DIGEST_BYTES];
};

/*
 * Claims k's row in the transaction of conn. When no row exists, inserts
 * it (a concurrent duplicate waits on it until this transaction ends) and
 * sets *is_replay false: run the change, then svc_idem_store_tx. When a
 * committed row exists with the same digest, unpacks its response into
 * resp (allocated from a) and sets *is_replay true: change nothing. A
 * different digest: MON_EINVAL naming k->field.
 */
int svc_idem_claim_tx(struct db_conn *conn, const struct svc_idem *k, struct arena *a, ProtobufCMessage *resp,
                      bool *is_replay, struct mon_error *err) MON_MUST_CHECK;

/*
 * Reads k's committed outcome, if any, in one statement (a read: it takes
 * no lock and does not wait for a duplicate in flight). Found with the same
 * digest: unpacks it into resp and sets *is_found. A different digest:
 * MON_EINVAL naming k->field. No row: *is_found false.
 */
int svc_idem_lookup_tx(struct db_conn *conn, const struct svc_idem *k, struct arena *a, ProtobufCMessage *resp,
                       bool *is_found, struct mon_error *err) MON_MUST_CHECK;

/* Stores resp serialised in k's row claimed in this transaction (before COMMIT). */
int svc_idem_store_tx(struct db_conn *conn, const struct svc_idem *k, struct arena *a, const ProtobufCMessage *resp,
                      struct mon_error *err) MON_MUST_CHECK;

/*
 * Deletes stored outcomes older than retention_hours (>= 1) on a pooled
 * connection, in batches of SVC_IDEM_PRUNE_BATCH rows, each its own
 * statement; the count goes to *deleted (may be NULL). After that a retry
 * with a pruned key runs again. Replicas may run it at once (one deletes,
 * the others find nothing). Returns 0, MON_EINVAL for a bad retention, or
 * the database's code.
 */
int svc_idem_prune(struct db_pool *pool, int64_t retention_hours, int64_t *deleted,
                   struct mon_error *err) MON_MUST_CHECK;

#endif
