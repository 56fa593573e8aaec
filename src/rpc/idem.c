/* Idempotency keys on both sides of a call (see idem.h). */
#include "rpc/idem.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#define GRPC_CODE_UNKNOWN 2
#define GRPC_CODE_UNAVAILABLE 14

const ProtobufCFieldDescriptor *rpc_idem_key_field(const ProtobufCMessageDescriptor *desc)
{
	if (desc == NULL)
		return NULL;
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(desc, "idempotency_key");
	if (f == NULL)
		f = protobuf_c_message_descriptor_get_field_by_name(desc, "request_id");
	if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
		return NULL;
	return f;
}

const char *rpc_idem_key(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *field)
{
	if (msg == NULL || field == NULL)
		return "";
	const char *key = *(const char *const *)(const void *)((const char *)msg + field->offset);
	return key ? key : "";
}

void rpc_idem_copy_with_key(ProtobufCMessage *copy, const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *field,
                            const char *key)
{
	memcpy(copy, msg, msg->descriptor->sizeof_message);
	*(const char **)(void *)((char *)copy + field->offset) = key;
}

int rpc_idem_new_key(char out[RPC_IDEM_UUID_LEN])
{
	uint8_t b[16];
	size_t got = 0;
	while (got < sizeof(b)) {
		ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	snprintf(out, RPC_IDEM_UUID_LEN, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
	         b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
	return 0;
}

bool rpc_idem_is_retryable(int grpc_code, const char *message)
{
	static const char unknown_prefix[] = "outcome unknown";
	if (grpc_code == GRPC_CODE_UNAVAILABLE)
		return true;
	return grpc_code == GRPC_CODE_UNKNOWN && message != NULL &&
	       strncmp(message, unknown_prefix, sizeof(unknown_prefix) - 1) == 0;
}
