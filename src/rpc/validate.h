/*
 * The check every request passes before it is decoded for its handler:
 * each string field, wherever it sits (nested messages, repeated fields,
 * oneofs, map keys and values, google.protobuf wrappers, Struct and Value
 * contents), must be well-formed UTF-8 without NUL (util/utf8.h), and
 * messages may nest only so deep. protobuf-c checks neither, and a handler
 * cannot see a NUL at all: the decoded string ends there.
 */
#ifndef MON_RPC_VALIDATE_H
#define MON_RPC_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "util/error.h"

/* Deepest message nesting a request may have (protobuf's own default). */
#define RPC_VALIDATE_MAX_DEPTH 100

/*
 * Walks the len bytes at data, a serialized desc, by desc. Returns 0 when
 * every string field is acceptable, or MON_EINVAL with a message naming the
 * field by its request path and the problem: `rule.name: must be valid
 * UTF-8 (byte 3)`, `points[3].endpoint: must not contain NUL (byte 0)`,
 * `tags["env"]: ...`, and MON_EINVAL when messages nest deeper than
 * RPC_VALIDATE_MAX_DEPTH. bytes fields and unknown fields are not looked
 * at. Input that is not well-formed protobuf is left for the decoder to
 * refuse: the walk stops there and returns 0. Reads only within data, uses
 * no heap, and costs one pass over the bytes.
 */
int rpc_validate_request(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                         struct mon_error *err) MON_MUST_CHECK;

#endif
