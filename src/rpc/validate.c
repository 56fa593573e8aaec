/*
 * String fields of requests, checked on the wire before decoding (see
 * validate.h). The walk follows the message descriptors over the
 * serialized bytes rather than over the decoded message because protobuf-c
 * keeps no length for a string: a NUL inside one would be invisible after
 * decoding. It keeps a stack of where it is (message, field, offset of the
 * field's tag) and only on a finding turns that stack into the field path
 * the API speaks: `points[3].tags["env"]`, `service.metadata["owner"][2]`.
 * Repeated indexes are counted then, by rescanning the message, so a clean
 * request costs one pass and no bookkeeping.
 */
#include "rpc/validate.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "rpc/wire.h"
#include "util/utf8.h"

#define MON_STR_(x) #x
#define MON_STR(x) MON_STR_(x)

struct frame {
	const ProtobufCMessageDescriptor *desc; /* the message walked at this depth */
	const uint8_t *start;                   /* its bytes */
	const uint8_t *end;
	const ProtobufCFieldDescriptor *field; /* the field being looked at */
	const uint8_t *field_at;               /* where that field's tag starts */
};

struct walk {
	struct frame frames[RPC_VALIDATE_MAX_DEPTH + 1];
	struct mon_error *err;
};

/* A bounded string builder for the message; what does not fit whole is left out, so no character is cut. */
struct out {
	char *buf;
	size_t cap;
	size_t len;
	bool is_full;
};

static void out_add(struct out *o, const char *s, size_t n)
{
	if (o->is_full || o->len + n >= o->cap) {
		o->is_full = true;
		return;
	}
	memcpy(o->buf + o->len, s, n);
	o->len += n;
	o->buf[o->len] = '\0';
}

static void out_str(struct out *o, const char *s)
{
	out_add(o, s, strlen(s));
}

static bool is_named(const ProtobufCMessageDescriptor *d, const char *name)
{
	return d != NULL && strcmp(d->name, name) == 0;
}

/* protobuf-c marks no map entry as such: protoc makes it a nested "<Name>Entry" of key = 1 and value = 2. */
static bool is_map_entry(const ProtobufCMessageDescriptor *d)
{
	size_t n = d != NULL ? strlen(d->short_name) : 0;
	return n > 5 && strcmp(d->short_name + n - 5, "Entry") == 0 && d->n_fields == 2 && d->fields[0].id == 1 &&
	       strcmp(d->fields[0].name, "key") == 0 && d->fields[1].id == 2 && strcmp(d->fields[1].name, "value") == 0;
}

static bool is_map_field(const ProtobufCFieldDescriptor *f)
{
	return f->label == PROTOBUF_C_LABEL_REPEATED && f->type == PROTOBUF_C_TYPE_MESSAGE &&
	       is_map_entry(f->descriptor);
}

/* How many times field number occurs in [start, at): the index of the occurrence at `at`. */
static size_t occurrence_index(const uint8_t *start, const uint8_t *at, uint32_t number)
{
	struct wire_reader r = {start, at};
	struct wire_field f;
	size_t n = 0;
	while (wire_next(&r, &f) > 0)
		n += f.number == number;
	return n;
}

/* A map key as the path shows it: ["text"] with unprintable bytes as \xNN, or [123]. */
static void out_map_key(struct out *o, const struct frame *entry)
{
	const ProtobufCFieldDescriptor *kf = &entry->desc->fields[0];
	struct wire_reader r = {entry->start, entry->end};
	struct wire_field f;
	bool is_found = false;
	struct wire_field key = {0};
	while (wire_next(&r, &f) > 0) {
		if (f.number == 1) {
			key = f; /* the last one wins, as when decoding */
			is_found = true;
		}
	}
	char tmp[32];
	if (kf->type == PROTOBUF_C_TYPE_STRING) {
		out_str(o, "[\"");
		size_t shown = key.len < 64 ? key.len : 64;
		for (size_t i = 0; is_found && i < shown;) {
			size_t n = utf8_decode(key.data + i, key.len - i, NULL);
			if (n == 1 &&
			    (key.data[i] < 0x20 || key.data[i] == 0x7f || key.data[i] == '"' || key.data[i] == '\\'))
				n = 0;
			if (n == 0) {
				snprintf(tmp, sizeof(tmp), "\\x%02x", key.data[i]);
				out_str(o, tmp);
				i++;
			} else {
				out_add(o, (const char *)key.data + i, n);
				i += n;
			}
		}
		out_str(o, key.len > shown ? "...\"]" : "\"]");
		return;
	}
	uint64_t v = is_found ? key.value : 0;
	switch (kf->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_SFIXED64: snprintf(tmp, sizeof(tmp), "[%lld]", (long long)(int64_t)v); break;
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SINT64:
		snprintf(tmp, sizeof(tmp), "[%lld]", (long long)((v >> 1) ^ (~(v & 1) + 1)));
		break;
	case PROTOBUF_C_TYPE_BOOL: snprintf(tmp, sizeof(tmp), "[%s]", v ? "true" : "false"); break;
	default: snprintf(tmp, sizeof(tmp), "[%llu]", (unsigned long long)v); break;
	}
	out_str(o, tmp);
}

/*
 * The path of the field being looked at in frames[0..depth]. The standard
 * wrappers are spoken of as their value: a StringValue is its field, a
 * Struct is indexed by key, a ListValue by position, a Value is what it
 * holds. *is_key tells whether the field is a map key itself.
 */
static void out_path(struct out *o, const struct frame *frames, size_t depth, bool *is_key)
{
	*is_key = false;
	for (size_t i = 0; i <= depth; i++) {
		const struct frame *fr = &frames[i];
		const ProtobufCFieldDescriptor *f = fr->field;
		if (is_map_entry(fr->desc)) {
			out_map_key(o, fr);
			*is_key = i == depth && f->id == 1;
			continue;
		}
		if (is_named(fr->desc, "google.protobuf.StringValue") || is_named(fr->desc, "google.protobuf.Value") ||
		    is_named(fr->desc, "google.protobuf.Struct"))
			continue;
		if (!is_named(fr->desc, "google.protobuf.ListValue")) {
			if (o->len > 0)
				out_str(o, ".");
			out_str(o, f->name);
		}
		if (f->label == PROTOBUF_C_LABEL_REPEATED && !is_map_field(f)) {
			char tmp[32];
			snprintf(tmp, sizeof(tmp), "[%zu]", occurrence_index(fr->start, fr->field_at, (uint32_t)f->id));
			out_str(o, tmp);
		}
	}
	if (o->len == 0) /* a bare wrapper: name its field */
		out_str(o, frames[depth].field->name);
}

/*
 * MON_EINVAL with "<path of the field at depth>: <problem>" in the error.
 * A path too long for the message ends in "..." and the problem is kept.
 */
static int report(struct walk *w, size_t depth, const char *problem, size_t byte, bool has_byte)
{
	if (w->err == NULL)
		return MON_EINVAL;
	char path[sizeof(w->err->msg) - 128];
	struct out o = {path, sizeof(path), 0, false};
	path[0] = '\0';
	bool is_key = false;
	out_path(&o, w->frames, depth, &is_key);
	char where[32] = "";
	if (has_byte)
		snprintf(where, sizeof(where), " (byte %zu)", byte);
	snprintf(w->err->msg, sizeof(w->err->msg), "%s%s: %s%s%s", path, o.is_full ? "..." : "", is_key ? "key " : "",
	         problem, where);
	w->err->code = MON_EINVAL;
	return MON_EINVAL;
}

static int check_string(struct walk *w, size_t depth, const uint8_t *p, size_t len)
{
	size_t bad_at = 0;
	if (utf8_scan((const char *)p, len, 0, NULL, &bad_at) == UTF8_OK)
		return 0;
	return report(w, depth, p[bad_at] == 0 ? "must not contain NUL" : "must be valid UTF-8", bad_at, true);
}

/* A message with neither text nor messages inside (Timestamp, DoubleValue ...) has nothing to check. */
static bool is_plain(const ProtobufCMessageDescriptor *d)
{
	for (unsigned i = 0; i < d->n_fields; i++) {
		if (d->fields[i].type == PROTOBUF_C_TYPE_STRING || d->fields[i].type == PROTOBUF_C_TYPE_MESSAGE)
			return false;
	}
	return true;
}

static int walk_message(struct walk *w, size_t depth, const ProtobufCMessageDescriptor *desc, const uint8_t *start,
                        const uint8_t *end)
{
	struct frame *fr = &w->frames[depth];
	fr->desc = desc;
	fr->start = start;
	fr->end = end;
	struct wire_reader r = {start, end};
	for (;;) {
		const uint8_t *at = r.p;
		struct wire_field f;
		if (wire_next(&r, &f) <= 0)
			return 0; /* the end, or malformed: the decoder refuses that */
		if (f.type != WIRE_LEN)
			continue;
		const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field(desc, f.number);
		if (fd == NULL)
			continue;
		fr->field = fd;
		fr->field_at = at;
		int rc = 0;
		if (fd->type == PROTOBUF_C_TYPE_STRING) {
			rc = check_string(w, depth, f.data, f.len);
		} else if (fd->type == PROTOBUF_C_TYPE_MESSAGE && !is_plain(fd->descriptor)) {
			if (depth + 1 > RPC_VALIDATE_MAX_DEPTH)
				return report(w, depth,
				              "messages nested deeper than " MON_STR(RPC_VALIDATE_MAX_DEPTH) " levels",
				              0, false);
			rc = walk_message(w, depth + 1, fd->descriptor, f.data, f.data + f.len);
		}
		if (rc < 0)
			return rc;
	}
}

int rpc_validate_request(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len, struct mon_error *err)
{
	if (len == 0 || is_plain(desc))
		return 0; /* as for a nested message: no string can be inside */
	struct walk w;
	w.err = err;
	return walk_message(&w, 0, desc, data, data + len);
}
