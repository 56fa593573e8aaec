/*
 * A minimal protobuf wire-format reader for the few places that walk
 * serialized messages without generated code: the reflection index over the
 * embedded descriptor set, and the string check of every request
 * (validate.c), which runs on untrusted bytes. Bounds-checked: it never
 * reads past end, and rejects malformed input instead of guessing.
 */
#ifndef MON_RPC_WIRE_H
#define MON_RPC_WIRE_H

#include <stddef.h>
#include <stdint.h>

enum wire_type { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

struct wire_reader {
	const unsigned char *p;
	const unsigned char *end;
};

struct wire_field {
	uint32_t number;
	enum wire_type type;
	uint64_t value;            /* VARINT, I64, I32 */
	const unsigned char *data; /* LEN: points into the input */
	size_t len;
};

/*
 * Reads the next field. Returns 1 with *f filled, 0 at the end of input,
 * or a negative MON_E* code (MON_EINVAL) on malformed input.
 */
int wire_next(struct wire_reader *r, struct wire_field *f);

/* Reads a varint; returns bytes consumed, 0 when malformed or truncated. */
size_t wire_varint(const unsigned char *p, const unsigned char *end, uint64_t *out);

#endif
