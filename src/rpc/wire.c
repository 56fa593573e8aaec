/* Protobuf wire-format reader; see wire.h. */
#include "rpc/wire.h"

#include "util/error.h"

size_t wire_varint(const unsigned char *p, const unsigned char *end, uint64_t *out)
{
	uint64_t v = 0;
	for (size_t i = 0; i < 10; i++) {
		if (p + i >= end)
			return 0;
		uint64_t b = p[i];
		if (i == 9 && b > 1)
			return 0; /* more than 64 bits */
		v |= (b & 0x7f) << (7 * i);
		if ((b & 0x80) == 0) {
			*out = v;
			return i + 1;
		}
	}
	return 0;
}

int wire_next(struct wire_reader *r, struct wire_field *f)
{
	if (r->p >= r->end)
		return 0;
	uint64_t key;
	size_t n = wire_varint(r->p, r->end, &key);
	if (n == 0)
		return MON_EINVAL;
	r->p += n;
	uint64_t number = key >> 3;
	if (number == 0 || number > 536870911u)
		return MON_EINVAL;
	f->number = (uint32_t)number;
	f->type = (enum wire_type)(key & 7);
	f->data = NULL;
	f->len = 0;
	f->value = 0;
	switch (f->type) {
	case WIRE_VARINT:
		n = wire_varint(r->p, r->end, &f->value);
		if (n == 0)
			return MON_EINVAL;
		r->p += n;
		return 1;
	case WIRE_I64:
		if (r->end - r->p < 8)
			return MON_EINVAL;
		for (int i = 7; i >= 0; i--)
			f->value = (f->value << 8) | r->p[i];
		r->p += 8;
		return 1;
	case WIRE_I32:
		if (r->end - r->p < 4)
			return MON_EINVAL;
		for (int i = 3; i >= 0; i--)
			f->value = (f->value << 8) | r->p[i];
		r->p += 4;
		return 1;
	case WIRE_LEN: {
		uint64_t len;
		n = wire_varint(r->p, r->end, &len);
		if (n == 0)
			return MON_EINVAL;
		r->p += n;
		if (len > (uint64_t)(r->end - r->p))
			return MON_EINVAL;
		f->data = r->p;
		f->len = (size_t)len;
		r->p += len;
		return 1;
	}
	default: return MON_EINVAL; /* groups (3, 4) are not used by descriptors */
	}
}
