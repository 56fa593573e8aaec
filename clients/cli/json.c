/*
 * JSON <-> protobuf-c transcoding (see json.h). Messages are built with
 * malloc, field by field from their descriptors, so that a partial message
 * is always valid for protobuf_c_message_free_unpacked: arrays are counted
 * only once an element is complete, and a pointer is stored only once what
 * it points to is whole.
 */
#include "json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64
/* Limits of google.protobuf.Timestamp (0001-01-01 to 9999-12-31) and Duration (10000 years). */
#define TIMESTAMP_MIN_S INT64_C(-62135596800)
#define TIMESTAMP_MAX_S INT64_C(253402300799)
#define DURATION_MAX_S INT64_C(315576000000)

/* The field path of the value being converted, for error messages. */
struct path {
	char buf[512];
	size_t len;
	int depth;
};

static size_t path_push_field(struct path *p, const char *name)
{
	size_t old = p->len;
	int n = snprintf(p->buf + p->len, sizeof(p->buf) - p->len, "%s%s", p->len > 0 ? "." : "", name);
	if (n > 0)
		p->len = p->len + (size_t)n < sizeof(p->buf) ? p->len + (size_t)n : sizeof(p->buf) - 1;
	return old;
}

static size_t path_push_index(struct path *p, size_t i)
{
	size_t old = p->len;
	int n = snprintf(p->buf + p->len, sizeof(p->buf) - p->len, "[%zu]", i);
	if (n > 0)
		p->len = p->len + (size_t)n < sizeof(p->buf) ? p->len + (size_t)n : sizeof(p->buf) - 1;
	return old;
}

static size_t path_push_key(struct path *p, const char *key)
{
	size_t old = p->len;
	int n = snprintf(p->buf + p->len, sizeof(p->buf) - p->len, "[\"%s\"]", key);
	if (n > 0)
		p->len = p->len + (size_t)n < sizeof(p->buf) ? p->len + (size_t)n : sizeof(p->buf) - 1;
	return old;
}

static void path_pop(struct path *p, size_t old)
{
	p->len = old;
	p->buf[old] = '\0';
}

/* Records "path: message" (or the message alone at the top) and returns MON_EINVAL. */
static int fail(const struct path *p, struct mon_error *err, const char *fmt, ...) MON_PRINTF(3, 4);
static int fail(const struct path *p, struct mon_error *err, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (p->len > 0)
		return mon_error_set(err, MON_EINVAL, "%s: %s", p->buf, msg);
	return mon_error_set(err, MON_EINVAL, "%s", msg);
}

static int fail_nomem(struct mon_error *err)
{
	return mon_error_set(err, MON_ENOMEM, "out of memory");
}

void json_field_name(const char *proto_name, char *buf, size_t size)
{
	size_t o = 0;
	int upper = 0;
	if (size == 0)
		return;
	for (const char *s = proto_name; *s != '\0' && o + 1 < size; s++) {
		if (*s == '_') {
			upper = 1;
			continue;
		}
		buf[o++] = upper && *s >= 'a' && *s <= 'z' ? (char)(*s - 'a' + 'A') : *s;
		upper = 0;
	}
	buf[o] = '\0';
}

/* The longest FieldMask path written; any path written reads back. */
#define FIELD_MASK_PATH_MAX 500

/* "fooBar" -> "foo_bar", for FieldMask paths. Returns -1 when it does not fit. */
static int snake_from_camel(const char *camel, size_t len, char *buf, size_t size)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		char c = camel[i];
		if (c >= 'A' && c <= 'Z') {
			if (o + 2 >= size)
				return -1;
			buf[o++] = '_';
			buf[o++] = (char)(c - 'A' + 'a');
		} else {
			if (o + 1 >= size)
				return -1;
			buf[o++] = c;
		}
	}
	buf[o] = '\0';
	return 0;
}

/* Whether text, read as a FieldMask path of JSON, is path. */
static bool mask_path_reads_back(const char *text, const char *path)
{
	char back[2 * FIELD_MASK_PATH_MAX + 1]; /* each character of a written path at most doubles */
	return snake_from_camel(text, strlen(text), back, sizeof(back)) == 0 && strcmp(back, path) == 0;
}

static int wkt_is(const ProtobufCMessageDescriptor *d, const char *short_name)
{
	return strncmp(d->name, "google.protobuf.", 16) == 0 && strcmp(d->name + 16, short_name) == 0;
}

static int is_wrapper(const ProtobufCMessageDescriptor *d)
{
	static const char *const names[] = {"DoubleValue", "FloatValue", "Int64Value",  "UInt64Value", "Int32Value",
	                                    "UInt32Value", "BoolValue",  "StringValue", "BytesValue"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (wkt_is(d, names[i]))
			return 1;
	}
	return 0;
}

/* A map<K, V> field: protoc turns it into a repeated FooEntry {key = 1; value = 2;}. */
static int is_map_field(const ProtobufCFieldDescriptor *f)
{
	if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
		return 0;
	const ProtobufCMessageDescriptor *e = f->descriptor;
	if (e->n_fields != 2 || strcmp(e->fields[0].name, "key") != 0 || e->fields[0].id != 1 ||
	    strcmp(e->fields[1].name, "value") != 0 || e->fields[1].id != 2)
		return 0;
	char expect[256];
	json_field_name(f->name, expect, sizeof(expect) - 6);
	if (expect[0] >= 'a' && expect[0] <= 'z')
		expect[0] = (char)(expect[0] - 'a' + 'A');
	size_t n = strlen(expect);
	memcpy(expect + n, "Entry", 6);
	return strcmp(e->short_name, expect) == 0;
}

static void *member(void *msg, unsigned offset)
{
	return (char *)msg + offset;
}

static const void *cmember(const void *msg, unsigned offset)
{
	return (const char *)msg + offset;
}

static size_t type_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32: return 4;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64: return 8;
	case PROTOBUF_C_TYPE_FLOAT: return sizeof(float);
	case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
	case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_ENUM: return sizeof(int);
	case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
	}
	return 0;
}

/* ---- base64 (RFC 4648; standard and URL-safe alphabets accepted) ---- */

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* Decodes s into a malloc'ed buffer (*out, *out_len). Returns 0, -1 on bad input, -2 out of memory. */
static int b64_decode(const char *s, size_t len, uint8_t **out, size_t *out_len)
{
	while (len > 0 && s[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return -1;
	uint8_t *buf = malloc(len / 4 * 3 + 3);
	if (buf == NULL)
		return -2;
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64_value(s[i]);
		if (v < 0) {
			free(buf);
			return -1;
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[o++] = (uint8_t)(acc >> bits);
		}
	}
	*out = buf;
	*out_len = o;
	return 0;
}

static char *b64_encode(const uint8_t *data, size_t len)
{
	char *out = malloc((len + 2) / 3 * 4 + 1);
	if (out == NULL)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)data[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)data[i + 1] << 8;
		if (i + 2 < len)
			v |= data[i + 2];
		out[o++] = b64_chars[(v >> 18) & 63];
		out[o++] = b64_chars[(v >> 12) & 63];
		out[o++] = i + 1 < len ? b64_chars[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? b64_chars[v & 63] : '=';
	}
	out[o] = '\0';
	return out;
}

/* ---- calendar (proleptic Gregorian, days since 1970-01-01) ---- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* Reads exactly n digits at *s. Returns -1 when they are not there. */
static int64_t digits(const char **s, int n)
{
	int64_t v = 0;
	for (int i = 0; i < n; i++) {
		char c = (*s)[i];
		if (c < '0' || c > '9')
			return -1;
		v = v * 10 + (c - '0');
	}
	*s += n;
	return v;
}

/* Reads ".fffffffff" (1 to 9 digits) as nanoseconds; no fraction gives 0. Returns -1 on bad input. */
static int32_t fraction_nanos(const char **s)
{
	if (**s != '.')
		return 0;
	(*s)++;
	int32_t nanos = 0;
	int n = 0;
	while (**s >= '0' && **s <= '9') {
		if (n == 9)
			return -1;
		nanos = nanos * 10 + (**s - '0');
		(*s)++;
		n++;
	}
	if (n == 0)
		return -1;
	for (; n < 9; n++)
		nanos *= 10;
	return nanos;
}

/* RFC 3339: "2024-05-01T12:30:00Z", "2024-05-01T12:30:00.5+02:00". */
static int parse_rfc3339(const char *s, int64_t *seconds, int32_t *nanos)
{
	int64_t y = digits(&s, 4);
	if (y < 0 || *s++ != '-')
		return -1;
	int64_t mo = digits(&s, 2);
	if (mo < 1 || mo > 12 || *s++ != '-')
		return -1;
	int64_t d = digits(&s, 2);
	if (d < 1 || d > 31 || (*s != 'T' && *s != 't'))
		return -1;
	s++;
	int64_t h = digits(&s, 2);
	if (h < 0 || h > 23 || *s++ != ':')
		return -1;
	int64_t mi = digits(&s, 2);
	if (mi < 0 || mi > 59 || *s++ != ':')
		return -1;
	int64_t sec = digits(&s, 2);
	if (sec < 0 || sec > 60)
		return -1;
	int32_t ns = fraction_nanos(&s);
	if (ns < 0)
		return -1;
	int64_t offset_s = 0;
	if (*s == 'Z' || *s == 'z') {
		s++;
	} else if (*s == '+' || *s == '-') {
		int sign = *s == '-' ? -1 : 1;
		s++;
		int64_t oh = digits(&s, 2);
		if (oh < 0 || oh > 23 || *s++ != ':')
			return -1;
		int64_t om = digits(&s, 2);
		if (om < 0 || om > 59)
			return -1;
		offset_s = sign * (oh * 3600 + om * 60);
	} else {
		return -1;
	}
	if (*s != '\0')
		return -1;
	/* Reject dates that do not exist (2023-02-30). */
	int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
	int64_t cy;
	unsigned cm, cd;
	civil_from_days(days, &cy, &cm, &cd);
	if (cy != y || cm != (unsigned)mo || cd != (unsigned)d)
		return -1;
	if (sec == 60)
		sec = 59; /* a leap second, smeared as protobuf does */
	*seconds = days * 86400 + h * 3600 + mi * 60 + sec - offset_s;
	*nanos = ns;
	if (*seconds < TIMESTAMP_MIN_S || *seconds > TIMESTAMP_MAX_S)
		return -1;
	return 0;
}

/* Formats nanos as "", ".123", ".123456" or ".123456789" (the shortest of the three that is exact). */
static void format_fraction(int32_t nanos, char *buf, size_t size)
{
	if (nanos == 0)
		snprintf(buf, size, "%s", "");
	else if (nanos % 1000000 == 0)
		snprintf(buf, size, ".%03d", nanos / 1000000);
	else if (nanos % 1000 == 0)
		snprintf(buf, size, ".%06d", nanos / 1000);
	else
		snprintf(buf, size, ".%09d", nanos);
}

/* "1.5s", "-0.25s", "3s". */
static int parse_duration(const char *s, int64_t *seconds, int32_t *nanos)
{
	int negative = 0;
	if (*s == '-') {
		negative = 1;
		s++;
	}
	if (*s < '0' || *s > '9')
		return -1;
	int64_t secs = 0;
	while (*s >= '0' && *s <= '9') {
		secs = secs * 10 + (*s - '0');
		if (secs > DURATION_MAX_S)
			return -1;
		s++;
	}
	int32_t ns = fraction_nanos(&s);
	if (ns < 0 || *s != 's' || s[1] != '\0')
		return -1;
	*seconds = negative ? -secs : secs;
	*nanos = negative ? -ns : ns;
	return 0;
}

/* ---- JSON -> message ---- */

static int message_from_json(const json_t *j, const ProtobufCMessageDescriptor *d, ProtobufCMessage **out,
                             struct path *p, struct mon_error *err);

static const char *json_type_name(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER:
	case JSON_REAL: return "a number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	case JSON_NULL: return "null";
	}
	return "?";
}

/* A signed integer in [min, max] from a JSON number or a decimal string. */
static int parse_signed(const json_t *j, int64_t min, int64_t max, int64_t *out, struct path *p, struct mon_error *err)
{
	int64_t v;
	if (json_is_integer(j)) {
		v = (int64_t)json_integer_value(j);
	} else if (json_is_real(j)) {
		double r = json_real_value(j);
		if (r != floor(r) || r < -9223372036854775808.0 || r >= 9223372036854775808.0)
			return fail(p, err, "expected an integer, got %g", r);
		v = (int64_t)r;
	} else if (json_is_string(j)) {
		const char *s = json_string_value(j);
		char *end = NULL;
		errno = 0;
		long long ll = strtoll(s, &end, 10);
		if (s[0] == '\0' || *end != '\0' || errno == ERANGE || s[0] == ' ' || s[0] == '+')
			return fail(p, err, "expected an integer, got \"%s\"", s);
		v = ll;
	} else {
		return fail(p, err, "expected an integer, got %s", json_type_name(j));
	}
	if (v < min || v > max)
		return fail(p, err, "%" PRId64 " is out of range", v);
	*out = v;
	return MON_OK;
}

static int parse_unsigned(const json_t *j, uint64_t max, uint64_t *out, struct path *p, struct mon_error *err)
{
	uint64_t v;
	if (json_is_integer(j)) {
		json_int_t i = json_integer_value(j);
		if (i < 0)
			return fail(p, err, "%lld is out of range", (long long)i);
		v = (uint64_t)i;
	} else if (json_is_real(j)) {
		double r = json_real_value(j);
		if (r != floor(r) || r < 0 || r >= 18446744073709551616.0)
			return fail(p, err, "expected an unsigned integer, got %g", r);
		v = (uint64_t)r;
	} else if (json_is_string(j)) {
		const char *s = json_string_value(j);
		char *end = NULL;
		errno = 0;
		unsigned long long ull = strtoull(s, &end, 10);
		if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno == ERANGE)
			return fail(p, err, "expected an unsigned integer, got \"%s\"", s);
		v = ull;
	} else {
		return fail(p, err, "expected an unsigned integer, got %s", json_type_name(j));
	}
	if (v > max)
		return fail(p, err, "%" PRIu64 " is out of range", v);
	*out = v;
	return MON_OK;
}

static int parse_double(const json_t *j, double *out, struct path *p, struct mon_error *err)
{
	if (json_is_number(j)) {
		*out = json_number_value(j);
		return MON_OK;
	}
	if (json_is_string(j)) {
		const char *s = json_string_value(j);
		if (strcmp(s, "NaN") == 0) {
			*out = NAN;
			return MON_OK;
		}
		if (strcmp(s, "Infinity") == 0) {
			*out = INFINITY;
			return MON_OK;
		}
		if (strcmp(s, "-Infinity") == 0) {
			*out = -INFINITY;
			return MON_OK;
		}
		char *end = NULL;
		double v = strtod(s, &end);
		if (s[0] != '\0' && *end == '\0' && isfinite(v)) {
			*out = v;
			return MON_OK;
		}
		return fail(p, err, "expected a number, got \"%s\"", s);
	}
	return fail(p, err, "expected a number, got %s", json_type_name(j));
}

/*
 * Converts j to one value of type (t, desc) stored at slot, which holds a
 * zero or default value. On failure slot is left as it was.
 */
static int value_from_json(const json_t *j, ProtobufCType t, const void *desc, void *slot, struct path *p,
                           struct mon_error *err)
{
	int64_t i;
	uint64_t u;
	double dv;
	int rc;

	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		if ((rc = parse_signed(j, INT32_MIN, INT32_MAX, &i, p, err)) != MON_OK)
			return rc;
		*(int32_t *)slot = (int32_t)i;
		return MON_OK;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		if ((rc = parse_signed(j, INT64_MIN, INT64_MAX, &i, p, err)) != MON_OK)
			return rc;
		*(int64_t *)slot = i;
		return MON_OK;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		if ((rc = parse_unsigned(j, UINT32_MAX, &u, p, err)) != MON_OK)
			return rc;
		*(uint32_t *)slot = (uint32_t)u;
		return MON_OK;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		if ((rc = parse_unsigned(j, UINT64_MAX, &u, p, err)) != MON_OK)
			return rc;
		*(uint64_t *)slot = u;
		return MON_OK;
	case PROTOBUF_C_TYPE_FLOAT:
		if ((rc = parse_double(j, &dv, p, err)) != MON_OK)
			return rc;
		if (isfinite(dv) && fabs(dv) > 3.4028234663852886e38)
			return fail(p, err, "%g is out of range for a float", dv);
		*(float *)slot = (float)dv;
		return MON_OK;
	case PROTOBUF_C_TYPE_DOUBLE:
		if ((rc = parse_double(j, &dv, p, err)) != MON_OK)
			return rc;
		*(double *)slot = dv;
		return MON_OK;
	case PROTOBUF_C_TYPE_BOOL:
		if (!json_is_boolean(j))
			return fail(p, err, "expected true or false, got %s", json_type_name(j));
		*(protobuf_c_boolean *)slot = json_is_true(j);
		return MON_OK;
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *ed = desc;
		if (json_is_null(j) && strcmp(ed->name, "google.protobuf.NullValue") == 0) {
			*(int *)slot = 0;
			return MON_OK;
		}
		if (json_is_string(j)) {
			const ProtobufCEnumValue *ev =
			        protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(j));
			if (ev == NULL)
				return fail(p, err, "unknown %s value \"%s\"", ed->name, json_string_value(j));
			*(int *)slot = ev->value;
			return MON_OK;
		}
		if ((rc = parse_signed(j, INT32_MIN, INT32_MAX, &i, p, err)) != MON_OK)
			return fail(p, err, "expected a %s name or number, got %s", ed->name, json_type_name(j));
		*(int *)slot = (int)i;
		return MON_OK;
	}
	case PROTOBUF_C_TYPE_STRING: {
		if (!json_is_string(j))
			return fail(p, err, "expected a string, got %s", json_type_name(j));
		size_t n = json_string_length(j);
		const char *s = json_string_value(j);
		if (memchr(s, '\0', n) != NULL)
			return fail(p, err, "a string may not contain NUL");
		char *copy = malloc(n + 1);
		if (copy == NULL)
			return fail_nomem(err);
		memcpy(copy, s, n + 1);
		*(char **)slot = copy;
		return MON_OK;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		if (!json_is_string(j))
			return fail(p, err, "expected base64 in a string, got %s", json_type_name(j));
		uint8_t *data = NULL;
		size_t len = 0;
		rc = b64_decode(json_string_value(j), json_string_length(j), &data, &len);
		if (rc == -2)
			return fail_nomem(err);
		if (rc != 0)
			return fail(p, err, "invalid base64");
		ProtobufCBinaryData *b = slot;
		b->data = data;
		b->len = len;
		return MON_OK;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		ProtobufCMessage *m = NULL;
		if ((rc = message_from_json(j, desc, &m, p, err)) != MON_OK)
			return rc;
		*(ProtobufCMessage **)slot = m;
		return MON_OK;
	}
	}
	return fail(p, err, "unsupported field type");
}

/* Sets one singular field of msg (presence flag or oneof case included). */
static int singular_from_json(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, const json_t *j, struct path *p,
                              struct mon_error *err)
{
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
		uint32_t *oneof_case = member(msg, f->quantifier_offset);
		if (*oneof_case != 0 && *oneof_case != f->id) {
			const ProtobufCFieldDescriptor *other =
			        protobuf_c_message_descriptor_get_field(msg->descriptor, *oneof_case);
			return fail(p, err, "only one of a oneof may be set; \"%s\" is set already",
			            other != NULL ? other->name : "?");
		}
	}
	int rc = value_from_json(j, f->type, f->descriptor, member(msg, f->offset), p, err);
	if (rc != MON_OK)
		return rc;
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
		*(uint32_t *)member(msg, f->quantifier_offset) = f->id;
	else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
	         f->type != PROTOBUF_C_TYPE_MESSAGE)
		*(protobuf_c_boolean *)member(msg, f->quantifier_offset) = 1;
	return MON_OK;
}

static int field_from_json(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, const json_t *j, struct path *p,
                           struct mon_error *err);

/* Parses a map key (JSON object keys are strings) into the entry's key field. */
static int map_key_from_string(ProtobufCMessage *entry, const char *key, struct path *p, struct mon_error *err)
{
	const ProtobufCFieldDescriptor *kf = &entry->descriptor->fields[0];
	int rc;
	if (kf->type == PROTOBUF_C_TYPE_BOOL) {
		if (strcmp(key, "true") != 0 && strcmp(key, "false") != 0)
			return fail(p, err, "map key must be true or false");
		json_t *b = json_boolean(strcmp(key, "true") == 0);
		rc = value_from_json(b, kf->type, kf->descriptor, member(entry, kf->offset), p, err);
		json_decref(b);
		return rc;
	}
	json_t *s = json_string(key);
	if (s == NULL)
		return fail_nomem(err);
	rc = value_from_json(s, kf->type, kf->descriptor, member(entry, kf->offset), p, err);
	json_decref(s);
	return rc;
}

static int repeated_from_json(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, const json_t *j, struct path *p,
                              struct mon_error *err)
{
	int is_map = is_map_field(f);
	size_t count;
	if (is_map) {
		if (!json_is_object(j))
			return fail(p, err, "expected an object (a map), got %s", json_type_name(j));
		count = json_object_size(j);
	} else {
		if (!json_is_array(j))
			return fail(p, err, "expected an array, got %s", json_type_name(j));
		count = json_array_size(j);
	}
	if (count == 0)
		return MON_OK;
	size_t esize = type_size(f->type);
	void *arr = calloc(count, esize);
	if (arr == NULL)
		return fail_nomem(err);
	size_t *n = member(msg, f->quantifier_offset);
	*(void **)member(msg, f->offset) = arr;
	*n = 0;

	if (is_map) {
		const char *key;
		json_t *value;
		json_object_foreach((json_t *)j, key, value)
		{
			size_t old = path_push_key(p, key);
			const ProtobufCMessageDescriptor *ed = f->descriptor;
			ProtobufCMessage *entry = calloc(1, ed->sizeof_message);
			if (entry == NULL)
				return fail_nomem(err);
			protobuf_c_message_init(ed, entry);
			int rc = map_key_from_string(entry, key, p, err);
			if (rc == MON_OK)
				rc = field_from_json(entry, &ed->fields[1], value, p, err);
			if (rc != MON_OK) {
				protobuf_c_message_free_unpacked(entry, NULL);
				return rc;
			}
			((ProtobufCMessage **)arr)[*n] = entry;
			(*n)++;
			path_pop(p, old);
		}
		return MON_OK;
	}
	for (size_t i = 0; i < count; i++) {
		size_t old = path_push_index(p, i);
		const json_t *e = json_array_get(j, i);
		if (json_is_null(e) && !(f->type == PROTOBUF_C_TYPE_MESSAGE &&
		                         wkt_is((const ProtobufCMessageDescriptor *)f->descriptor, "Value")))
			return fail(p, err, "null is not allowed in a list");
		int rc = value_from_json(e, f->type, f->descriptor, (char *)arr + i * esize, p, err);
		if (rc != MON_OK)
			return rc;
		(*n)++;
		path_pop(p, old);
	}
	return MON_OK;
}

static const ProtobufCFieldDescriptor *field_by_json_key(const ProtobufCMessageDescriptor *d, const char *key)
{
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		char jname[256];
		json_field_name(f->name, jname, sizeof(jname));
		if (strcmp(key, jname) == 0 || strcmp(key, f->name) == 0)
			return f;
	}
	return NULL;
}

static int field_from_json(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, const json_t *j, struct path *p,
                           struct mon_error *err)
{
	/* null means "the default", except for google.protobuf.Value, where it is a value. */
	if (json_is_null(j) &&
	    !(f->type == PROTOBUF_C_TYPE_MESSAGE &&
	      wkt_is((const ProtobufCMessageDescriptor *)f->descriptor, "Value")) &&
	    !(f->type == PROTOBUF_C_TYPE_ENUM &&
	      strcmp(((const ProtobufCEnumDescriptor *)f->descriptor)->name, "google.protobuf.NullValue") == 0))
		return MON_OK;
	if (f->label == PROTOBUF_C_LABEL_REPEATED)
		return repeated_from_json(msg, f, j, p, err);
	return singular_from_json(msg, f, j, p, err);
}

static int field_by_name_from_json(ProtobufCMessage *msg, const char *name, const json_t *j, struct path *p,
                                   struct mon_error *err)
{
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, name);
	if (f == NULL)
		return fail(p, err, "%s has no field \"%s\"", msg->descriptor->name, name);
	return singular_from_json(msg, f, j, p, err);
}

static void set_int64(ProtobufCMessage *msg, const char *name, int64_t v)
{
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, name);
	if (f != NULL)
		*(int64_t *)member(msg, f->offset) = v;
}

static void set_int32(ProtobufCMessage *msg, const char *name, int32_t v)
{
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, name);
	if (f != NULL)
		*(int32_t *)member(msg, f->offset) = v;
}

/* The well-known types whose JSON form is not an object of their fields. */
static int wkt_from_json(ProtobufCMessage *msg, const json_t *j, struct path *p, struct mon_error *err, int *handled)
{
	const ProtobufCMessageDescriptor *d = msg->descriptor;
	*handled = 1;
	if (wkt_is(d, "Timestamp")) {
		int64_t s;
		int32_t ns;
		if (!json_is_string(j) || parse_rfc3339(json_string_value(j), &s, &ns) != 0)
			return fail(p, err, "expected an RFC 3339 time such as \"2024-05-01T12:30:00Z\"");
		set_int64(msg, "seconds", s);
		set_int32(msg, "nanos", ns);
		return MON_OK;
	}
	if (wkt_is(d, "Duration")) {
		int64_t s;
		int32_t ns;
		if (!json_is_string(j) || parse_duration(json_string_value(j), &s, &ns) != 0)
			return fail(p, err, "expected a duration in seconds such as \"1.5s\"");
		set_int64(msg, "seconds", s);
		set_int32(msg, "nanos", ns);
		return MON_OK;
	}
	if (wkt_is(d, "FieldMask")) {
		if (!json_is_string(j))
			return fail(p, err, "expected a field mask such as \"name,labels.team\"");
		const char *s = json_string_value(j);
		json_t *paths = json_array();
		if (paths == NULL)
			return fail_nomem(err);
		while (*s != '\0') {
			const char *comma = strchr(s, ',');
			size_t len = comma != NULL ? (size_t)(comma - s) : strlen(s);
			char snake[2 * FIELD_MASK_PATH_MAX + 1]; /* each character of a printed path at most doubles */
			if (len == 0 || snake_from_camel(s, len, snake, sizeof(snake)) != 0 ||
			    json_array_append_new(paths, json_string(snake)) != 0) {
				json_decref(paths);
				return fail(p, err, "invalid field mask path \"%.*s\"", (int)len, s);
			}
			s += len;
			if (*s == ',')
				s++;
		}
		int rc = repeated_from_json(msg, protobuf_c_message_descriptor_get_field_by_name(d, "paths"), paths, p,
		                            err);
		json_decref(paths);
		return rc;
	}
	if (is_wrapper(d))
		return field_by_name_from_json(msg, "value", j, p, err);
	if (wkt_is(d, "Struct")) {
		if (!json_is_object(j))
			return fail(p, err, "expected an object, got %s", json_type_name(j));
		return repeated_from_json(msg, protobuf_c_message_descriptor_get_field_by_name(d, "fields"), j, p, err);
	}
	if (wkt_is(d, "ListValue")) {
		if (!json_is_array(j))
			return fail(p, err, "expected an array, got %s", json_type_name(j));
		const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, "values");
		return repeated_from_json(msg, f, j, p, err);
	}
	if (wkt_is(d, "Value")) {
		switch (json_typeof(j)) {
		case JSON_NULL: return field_by_name_from_json(msg, "null_value", j, p, err);
		case JSON_INTEGER:
		case JSON_REAL: return field_by_name_from_json(msg, "number_value", j, p, err);
		case JSON_STRING: return field_by_name_from_json(msg, "string_value", j, p, err);
		case JSON_TRUE:
		case JSON_FALSE: return field_by_name_from_json(msg, "bool_value", j, p, err);
		case JSON_OBJECT: return field_by_name_from_json(msg, "struct_value", j, p, err);
		case JSON_ARRAY: return field_by_name_from_json(msg, "list_value", j, p, err);
		}
	}
	if (wkt_is(d, "Any"))
		return fail(p, err, "google.protobuf.Any is not supported");
	*handled = 0;
	return MON_OK;
}

static int message_from_json(const json_t *j, const ProtobufCMessageDescriptor *d, ProtobufCMessage **out,
                             struct path *p, struct mon_error *err)
{
	int rc = MON_OK;
	ProtobufCMessage *msg = NULL;
	unsigned char *seen = NULL;

	*out = NULL;
	if (p->depth >= MAX_DEPTH) {
		rc = fail(p, err, "nested more than %d levels deep", MAX_DEPTH);
		goto out;
	}
	p->depth++;
	msg = calloc(1, d->sizeof_message);
	if (msg == NULL) {
		rc = fail_nomem(err);
		goto out;
	}
	protobuf_c_message_init(d, msg);

	int handled = 0;
	rc = wkt_from_json(msg, j, p, err, &handled);
	if (rc != MON_OK || handled)
		goto out;

	if (!json_is_object(j)) {
		rc = fail(p, err, "expected an object (%s), got %s", d->name, json_type_name(j));
		goto out;
	}
	seen = calloc(d->n_fields > 0 ? d->n_fields : 1, 1);
	if (seen == NULL) {
		rc = fail_nomem(err);
		goto out;
	}
	const char *key;
	json_t *value;
	json_object_foreach((json_t *)j, key, value)
	{
		const ProtobufCFieldDescriptor *f = field_by_json_key(d, key);
		size_t old = path_push_field(p, key);
		if (f == NULL) {
			path_pop(p, old);
			rc = fail(p, err, "unknown field \"%s\" in %s", key, d->name);
			goto out;
		}
		size_t idx = (size_t)(f - d->fields);
		if (seen[idx]) {
			rc = fail(p, err, "given twice (as \"%s\" and its other name)", key);
			goto out;
		}
		seen[idx] = 1;
		rc = field_from_json(msg, f, value, p, err);
		if (rc != MON_OK)
			goto out;
		path_pop(p, old);
	}
out:
	if (rc == MON_OK) {
		p->depth--;
		*out = msg;
	} else if (msg != NULL) {
		protobuf_c_message_free_unpacked(msg, NULL);
	}
	free(seen);
	return rc;
}

int json_to_message(const json_t *json, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
                    struct mon_error *err)
{
	struct path p = {.len = 0, .depth = 0};
	p.buf[0] = '\0';
	return message_from_json(json, desc, out, &p, err);
}

/* ---- message -> JSON ---- */

static int message_to_json(const ProtobufCMessage *msg, unsigned flags, json_t **out, struct path *p,
                           struct mon_error *err);

static json_t *float_to_json(double v, int is_float)
{
	if (isnan(v))
		return json_string("NaN");
	if (isinf(v))
		return json_string(v > 0 ? "Infinity" : "-Infinity");
	if (is_float) {
		/* The shortest decimal that reads back as the same float, not float's double expansion. */
		char buf[32];
		snprintf(buf, sizeof(buf), "%.9g", v);
		for (int prec = 6; prec < 9; prec++) {
			char tmp[32];
			snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
			if ((float)strtod(tmp, NULL) == (float)v) {
				memcpy(buf, tmp, sizeof(buf));
				break;
			}
		}
		v = strtod(buf, NULL);
	}
	if (v == floor(v) && fabs(v) < 9007199254740992.0)
		return json_integer((json_int_t)v);
	return json_real(v);
}

static int value_to_json(ProtobufCType t, const void *desc, const void *slot, unsigned flags, json_t **out,
                         struct path *p, struct mon_error *err)
{
	char buf[32];
	json_t *v = NULL;

	switch (t) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32: v = json_integer(*(const int32_t *)slot); break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32: v = json_integer((json_int_t) * (const uint32_t *)slot); break;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		snprintf(buf, sizeof(buf), "%" PRId64, *(const int64_t *)slot);
		v = json_string(buf);
		break;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		snprintf(buf, sizeof(buf), "%" PRIu64, *(const uint64_t *)slot);
		v = json_string(buf);
		break;
	case PROTOBUF_C_TYPE_FLOAT: v = float_to_json(*(const float *)slot, 1); break;
	case PROTOBUF_C_TYPE_DOUBLE: v = float_to_json(*(const double *)slot, 0); break;
	case PROTOBUF_C_TYPE_BOOL: v = json_boolean(*(const protobuf_c_boolean *)slot); break;
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *ed = desc;
		int value = *(const int *)slot;
		if (strcmp(ed->name, "google.protobuf.NullValue") == 0) {
			v = json_null();
			break;
		}
		const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(ed, value);
		v = ev != NULL ? json_string(ev->name) : json_integer(value);
		break;
	}
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)slot;
		v = json_string(s != NULL ? s : "");
		if (v == NULL)
			return fail(p, err, "string is not valid UTF-8");
		break;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *b = slot;
		char *s = b64_encode(b->data, b->len);
		if (s == NULL)
			return fail_nomem(err);
		v = json_string(s);
		free(s);
		break;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *m = *(ProtobufCMessage *const *)slot;
		if (m == NULL) {
			v = json_null();
			break;
		}
		return message_to_json(m, flags, out, p, err);
	}
	}
	if (v == NULL)
		return fail_nomem(err);
	*out = v;
	return MON_OK;
}

static int is_default_value(const ProtobufCFieldDescriptor *f, const void *slot)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32: return *(const uint32_t *)slot == 0;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64: return *(const uint64_t *)slot == 0;
	case PROTOBUF_C_TYPE_FLOAT: return *(const float *)slot == 0 && !signbit(*(const float *)slot);
	case PROTOBUF_C_TYPE_DOUBLE: return *(const double *)slot == 0 && !signbit(*(const double *)slot);
	case PROTOBUF_C_TYPE_BOOL: return !*(const protobuf_c_boolean *)slot;
	case PROTOBUF_C_TYPE_ENUM: return *(const int *)slot == 0;
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)slot;
		return s == NULL || s[0] == '\0';
	}
	case PROTOBUF_C_TYPE_BYTES: return ((const ProtobufCBinaryData *)slot)->len == 0;
	case PROTOBUF_C_TYPE_MESSAGE: return *(ProtobufCMessage *const *)slot == NULL;
	}
	return 0;
}

/* A map key as the string JSON object keys must be. */
static int map_key_to_string(const ProtobufCMessage *entry, char *buf, size_t size)
{
	const ProtobufCFieldDescriptor *kf = &entry->descriptor->fields[0];
	const void *slot = cmember(entry, kf->offset);
	switch (kf->type) {
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)slot;
		snprintf(buf, size, "%s", s != NULL ? s : "");
		return strlen(s != NULL ? s : "") < size ? 0 : -1;
	}
	case PROTOBUF_C_TYPE_BOOL:
		snprintf(buf, size, "%s", *(const protobuf_c_boolean *)slot ? "true" : "false");
		return 0;
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32: snprintf(buf, size, "%" PRId32, *(const int32_t *)slot); return 0;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32: snprintf(buf, size, "%" PRIu32, *(const uint32_t *)slot); return 0;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64: snprintf(buf, size, "%" PRId64, *(const int64_t *)slot); return 0;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64: snprintf(buf, size, "%" PRIu64, *(const uint64_t *)slot); return 0;
	default: return -1;
	}
}

static int repeated_to_json(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, unsigned flags,
                            json_t **out, struct path *p, struct mon_error *err)
{
	size_t n = *(const size_t *)cmember(msg, f->quantifier_offset);
	const char *arr = *(char *const *)cmember(msg, f->offset);
	size_t esize = type_size(f->type);
	int is_map = is_map_field(f);
	json_t *result = is_map ? json_object() : json_array();
	if (result == NULL)
		return fail_nomem(err);
	for (size_t i = 0; i < n; i++) {
		json_t *v = NULL;
		int rc;
		if (is_map) {
			const ProtobufCMessage *entry = ((ProtobufCMessage *const *)(const void *)arr)[i];
			const ProtobufCFieldDescriptor *vf = &entry->descriptor->fields[1];
			char key[1024];
			if (map_key_to_string(entry, key, sizeof(key)) != 0) {
				json_decref(result);
				return fail(p, err, "map key too long");
			}
			size_t old = path_push_key(p, key);
			rc = value_to_json(vf->type, vf->descriptor, cmember(entry, vf->offset), flags, &v, p, err);
			if (rc == MON_OK && json_object_set_new(result, key, v) != 0)
				rc = fail(p, err, "map key is not valid UTF-8");
			path_pop(p, old);
		} else {
			size_t old = path_push_index(p, i);
			rc = value_to_json(f->type, f->descriptor, arr + i * esize, flags, &v, p, err);
			if (rc == MON_OK && json_array_append_new(result, v) != 0)
				rc = fail_nomem(err);
			path_pop(p, old);
		}
		if (rc != MON_OK) {
			json_decref(result);
			return rc;
		}
	}
	*out = result;
	return MON_OK;
}

static const void *field_slot(const ProtobufCMessage *msg, const char *name, ProtobufCType *type)
{
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, name);
	if (f == NULL)
		return NULL;
	if (type != NULL)
		*type = f->type;
	return cmember(msg, f->offset);
}

static int64_t get_int64(const ProtobufCMessage *msg, const char *name)
{
	const void *s = field_slot(msg, name, NULL);
	return s != NULL ? *(const int64_t *)s : 0;
}

static int32_t get_int32(const ProtobufCMessage *msg, const char *name)
{
	const void *s = field_slot(msg, name, NULL);
	return s != NULL ? *(const int32_t *)s : 0;
}

static int wkt_to_json(const ProtobufCMessage *msg, unsigned flags, json_t **out, struct path *p, struct mon_error *err,
                       int *handled)
{
	const ProtobufCMessageDescriptor *d = msg->descriptor;
	char buf[128], frac[16];
	*handled = 1;
	if (wkt_is(d, "Timestamp")) {
		int64_t s = get_int64(msg, "seconds");
		int32_t ns = get_int32(msg, "nanos");
		if (s < TIMESTAMP_MIN_S || s > TIMESTAMP_MAX_S || ns < 0 || ns > 999999999)
			return fail(p, err, "timestamp out of range (%" PRId64 "s, %" PRId32 "ns)", s, ns);
		int64_t days = s >= 0 ? s / 86400 : (s - 86399) / 86400;
		int64_t rem = s - days * 86400;
		int64_t y;
		unsigned m, dd;
		civil_from_days(days, &y, &m, &dd);
		format_fraction(ns, frac, sizeof(frac));
		snprintf(buf, sizeof(buf), "%04" PRId64 "-%02u-%02uT%02d:%02d:%02d%sZ", y, m, dd, (int)(rem / 3600),
		         (int)(rem / 60 % 60), (int)(rem % 60), frac);
		*out = json_string(buf);
		return *out != NULL ? MON_OK : fail_nomem(err);
	}
	if (wkt_is(d, "Duration")) {
		int64_t s = get_int64(msg, "seconds");
		int32_t ns = get_int32(msg, "nanos");
		if (s < -DURATION_MAX_S || s > DURATION_MAX_S || ns < -999999999 || ns > 999999999 ||
		    (s > 0 && ns < 0) || (s < 0 && ns > 0))
			return fail(p, err, "duration out of range (%" PRId64 "s, %" PRId32 "ns)", s, ns);
		int negative = s < 0 || ns < 0;
		format_fraction(ns < 0 ? -ns : ns, frac, sizeof(frac));
		snprintf(buf, sizeof(buf), "%s%" PRId64 "%ss", negative ? "-" : "", s < 0 ? -s : s, frac);
		*out = json_string(buf);
		return *out != NULL ? MON_OK : fail_nomem(err);
	}
	if (wkt_is(d, "FieldMask")) {
		const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, "paths");
		size_t n = *(const size_t *)cmember(msg, f->quantifier_offset);
		char *const *paths = *(char **const *)cmember(msg, f->offset);
		size_t cap = 1;
		for (size_t i = 0; i < n; i++)
			cap += strlen(paths[i]) + 1;
		char *joined = malloc(cap);
		if (joined == NULL)
			return fail_nomem(err);
		size_t o = 0;
		for (size_t i = 0; i < n; i++) {
			/*
			 * The JSON form joins lowerCamelCase paths with ','. A path whose
			 * camelCase does not read back as itself ("uptime_24h", "x_") is
			 * written as in the .proto, which reads back unless it has
			 * capitals; one that fits neither ("", "a,b", "Ab") is refused
			 * rather than written as another mask.
			 */
			const char *path = paths[i];
			size_t len = strlen(path);
			if (len == 0 || len > FIELD_MASK_PATH_MAX || strchr(path, ',') != NULL) {
				free(joined);
				return fail(p, err, "field mask path \"%.40s\" cannot be written in JSON", path);
			}
			if (i > 0)
				joined[o++] = ',';
			json_field_name(path, joined + o, cap - o);
			if (!mask_path_reads_back(joined + o, path)) {
				memcpy(joined + o, path, len + 1);
				if (!mask_path_reads_back(path, path)) {
					free(joined);
					return fail(p, err, "field mask path \"%.40s\" cannot be written in JSON",
					            path);
				}
			}
			o += strlen(joined + o);
		}
		joined[o] = '\0';
		*out = json_string(joined);
		free(joined);
		return *out != NULL ? MON_OK : fail_nomem(err);
	}
	if (is_wrapper(d)) {
		const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, "value");
		return value_to_json(f->type, f->descriptor, cmember(msg, f->offset), flags, out, p, err);
	}
	if (wkt_is(d, "Struct"))
		return repeated_to_json(msg, protobuf_c_message_descriptor_get_field_by_name(d, "fields"), flags, out,
		                        p, err);
	if (wkt_is(d, "ListValue"))
		return repeated_to_json(msg, protobuf_c_message_descriptor_get_field_by_name(d, "values"), flags, out,
		                        p, err);
	if (wkt_is(d, "Value")) {
		uint32_t kind = 0;
		const ProtobufCFieldDescriptor *first = &d->fields[0];
		kind = *(const uint32_t *)cmember(msg, first->quantifier_offset);
		const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, kind);
		if (f == NULL) {
			*out = json_null();
			return MON_OK;
		}
		return value_to_json(f->type, f->descriptor, cmember(msg, f->offset), flags, out, p, err);
	}
	if (wkt_is(d, "Any")) {
		/* No type registry here: show the type and the raw bytes. */
		ProtobufCType t;
		const void *url = field_slot(msg, "type_url", &t);
		const void *value = field_slot(msg, "value", &t);
		json_t *o = json_object();
		char *b64 = value != NULL ? b64_encode(((const ProtobufCBinaryData *)value)->data,
		                                       ((const ProtobufCBinaryData *)value)->len)
		                          : NULL;
		if (o == NULL || b64 == NULL ||
		    json_object_set_new(o, "@type", json_string(url != NULL ? *(char *const *)url : "")) != 0 ||
		    json_object_set_new(o, "value", json_string(b64)) != 0) {
			json_decref(o);
			free(b64);
			return fail_nomem(err);
		}
		free(b64);
		*out = o;
		return MON_OK;
	}
	*handled = 0;
	return MON_OK;
}

static int message_to_json(const ProtobufCMessage *msg, unsigned flags, json_t **out, struct path *p,
                           struct mon_error *err)
{
	const ProtobufCMessageDescriptor *d = msg->descriptor;
	int handled = 0;
	int rc;

	if (p->depth >= MAX_DEPTH)
		return fail(p, err, "nested more than %d levels deep", MAX_DEPTH);
	p->depth++;
	rc = wkt_to_json(msg, flags, out, p, err, &handled);
	if (rc != MON_OK || handled) {
		p->depth--;
		return rc;
	}
	json_t *obj = json_object();
	if (obj == NULL)
		return fail_nomem(err);
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		char jname[256];
		json_t *v = NULL;
		json_field_name(f->name, jname, sizeof(jname));
		size_t old = path_push_field(p, jname);
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)cmember(msg, f->quantifier_offset);
			if (n == 0 && !(flags & JSON_PRINT_DEFAULTS)) {
				path_pop(p, old);
				continue;
			}
			rc = repeated_to_json(msg, f, flags, &v, p, err);
		} else {
			const void *slot = cmember(msg, f->offset);
			if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
				if (*(const uint32_t *)cmember(msg, f->quantifier_offset) != f->id) {
					path_pop(p, old);
					continue;
				}
			} else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
			           f->type != PROTOBUF_C_TYPE_MESSAGE) {
				if (!*(const protobuf_c_boolean *)cmember(msg, f->quantifier_offset)) {
					path_pop(p, old);
					continue;
				}
			} else if (is_default_value(f, slot) &&
			           (!(flags & JSON_PRINT_DEFAULTS) || f->type == PROTOBUF_C_TYPE_MESSAGE)) {
				path_pop(p, old);
				continue;
			}
			rc = value_to_json(f->type, f->descriptor, slot, flags, &v, p, err);
		}
		if (rc == MON_OK && json_object_set_new(obj, jname, v) != 0)
			rc = fail_nomem(err);
		if (rc != MON_OK) {
			json_decref(obj);
			return rc;
		}
		path_pop(p, old);
	}
	p->depth--;
	*out = obj;
	return MON_OK;
}

int json_from_message(const ProtobufCMessage *msg, unsigned flags, json_t **out, struct mon_error *err)
{
	struct path p = {.len = 0, .depth = 0};
	p.buf[0] = '\0';
	*out = NULL;
	return message_to_json(msg, flags, out, &p, err);
}
