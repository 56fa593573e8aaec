/*
 * JSON <-> protobuf-c transcoding for monctl, generic over
 * ProtobufCMessageDescriptor and following the proto3 JSON mapping:
 * lowerCamelCase names on output (lowerCamelCase and the proto names both
 * accepted on input), enums by name (or number), 64-bit integers as
 * strings, bytes as base64, repeated fields and maps, nested messages,
 * oneofs, and the well-known types Timestamp (RFC 3339), Duration ("1.5s"),
 * FieldMask ("a.b,c"), the wrappers (plain values), Struct, Value,
 * ListValue and Empty. google.protobuf.Any is not supported.
 *
 * Errors name the field by its path ("filter.severity: unknown enum value
 * \"LOUD\"").
 */
#ifndef MON_CLI_JSON_H
#define MON_CLI_JSON_H

#include <stdbool.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "util/error.h"

/*
 * Flags for json_dumps of converted messages. 16 significant digits print
 * 0.1 as 0.1 rather than 0.10000000000000001, and are exact for every value
 * that has a decimal form of 16 digits or fewer (all typed-in ones); a
 * computed double may lose its last bit.
 */
#define JSON_DUMP_NUMBERS JSON_REAL_PRECISION(16)

enum json_print_flags {
	/* Also print fields that hold their default value (0, "", false, empty lists). */
	JSON_PRINT_DEFAULTS = 1u << 0
};

/*
 * Builds a message of type desc from json (an object, or for well-known
 * types whatever JSON they map to). On success *out belongs to the caller,
 * who frees it with protobuf_c_message_free_unpacked(*out, NULL). Returns
 * MON_EINVAL with err naming the field on bad input, MON_ENOMEM when out of
 * memory; *out is then NULL.
 */
int json_to_message(const json_t *json, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
                    struct mon_error *err) MON_MUST_CHECK;

/*
 * Converts msg to JSON. On success *out is a new reference owned by the
 * caller (json_decref). Returns MON_ENOMEM when out of memory, MON_EINVAL
 * for a message that cannot be represented (a Timestamp out of range).
 */
int json_from_message(const ProtobufCMessage *msg, unsigned flags, json_t **out, struct mon_error *err) MON_MUST_CHECK;

/* The proto3 JSON name of a proto field name: "page_size" -> "pageSize". Writes at most size bytes. */
void json_field_name(const char *proto_name, char *buf, size_t size);

#endif
