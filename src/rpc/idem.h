/*
 * Idempotency keys (AIP-155) as both sides of a call see them: which field
 * of a request message is its key (found through the descriptor), a fresh
 * random key, and which failures a client may retry with its key. The
 * server claims and replays keys in server/common/idem.c; the client
 * library sets a key on every state-changing call (clients/lib/client.c).
 */
#ifndef MON_RPC_IDEM_H
#define MON_RPC_IDEM_H

#include <stdbool.h>

#include <protobuf-c/protobuf-c.h>

#define RPC_IDEM_UUID_LEN 37 /* a UUID's 36 characters and the NUL */

/*
 * The idempotency key field of a request message type: a singular string
 * field named "idempotency_key" (the name used where the message already
 * has a request_id of another meaning, as ReportErrorRequest), else one
 * named "request_id"; NULL when the type has neither. Only state-changing
 * requests have one, with one exception that callers must respect:
 * SearchAuditEventsRequest's request_id is a filter, and a read never asks.
 */
const ProtobufCFieldDescriptor *rpc_idem_key_field(const ProtobufCMessageDescriptor *desc);

/* The key msg carries in field (from rpc_idem_key_field); "" when unset or either is NULL. */
const char *rpc_idem_key(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *field);

/*
 * Fills copy (sizeof_message bytes of msg's type) with a shallow copy of
 * msg whose field (from rpc_idem_key_field, not NULL) holds key: to send
 * or digest a request with another key without changing the caller's.
 * key is not copied and must outlive copy.
 */
void rpc_idem_copy_with_key(ProtobufCMessage *copy, const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *field,
                            const char *key);

/* A fresh random UUID (version 4) in out. 0, or -1 when the system has no randomness to give. */
int rpc_idem_new_key(char out[RPC_IDEM_UUID_LEN]);

/*
 * Whether a failed call may be sent again with the same key: UNAVAILABLE
 * (nothing or everything happened; the key tells which), or UNKNOWN with a
 * message starting "outcome unknown" (the server could not tell whether
 * its commit happened). Without a key neither is safe to retry.
 */
bool rpc_idem_is_retryable(int grpc_code, const char *message);

#endif
