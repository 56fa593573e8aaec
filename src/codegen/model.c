/*
 * Builds the generator's model from a CodeGeneratorRequest (see model.h):
 * indexes every message type of every file, reads leading comments from
 * source_code_info, and computes every name the emitters print.
 */
#include "model.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "comment.h"
#include "naming.h"

/* Field number of (pb_c_file) in FileOptions and of c_package inside it (protobuf-c.proto). */
#define PB_C_FILE_FIELD 1019
#define PB_C_C_PACKAGE_FIELD 6

/* source_code_info path elements: FileDescriptorProto.service, ServiceDescriptorProto.method. */
#define PATH_FILE_SERVICE 6
#define PATH_SERVICE_METHOD 2

/* Takes ownership of s (which may be NULL: out of memory) and returns it. */
static char *keep(struct cg_model *m, char *s)
{
	if (s == NULL)
		return NULL;
	if (m->owned_count == m->owned_alloc) {
		size_t n = m->owned_alloc ? m->owned_alloc * 2 : 64;
		char **p = realloc(m->owned, n * sizeof(*p));
		if (p == NULL) {
			free(s);
			return NULL;
		}
		m->owned = p;
		m->owned_alloc = n;
	}
	m->owned[m->owned_count++] = s;
	return s;
}

static char *keep_sb(struct cg_model *m, struct strbuf *sb)
{
	return keep(m, sb_take(sb));
}

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	*v = 0;
	for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;
		*v |= (uint64_t)(b & 0x7F) << shift;
		if (!(b & 0x80))
			return true;
	}
	return false;
}

/*
 * Finds string field `field` in a serialized message. Returns true and the
 * bytes when found (the last occurrence wins, as protobuf merges them).
 */
static bool find_string_field(const uint8_t *p, size_t len, uint32_t field, const uint8_t **out, size_t *out_len)
{
	const uint8_t *end = p + len;
	bool found = false;

	while (p < end) {
		uint64_t key, n;
		if (!read_varint(&p, end, &key))
			return found;
		switch (key & 7) {
		case 0:
			if (!read_varint(&p, end, &n))
				return found;
			break;
		case 1:
			if (end - p < 8)
				return found;
			p += 8;
			break;
		case 2:
			if (!read_varint(&p, end, &n) || n > (uint64_t)(end - p))
				return found;
			if ((key >> 3) == field) {
				*out = p;
				*out_len = (size_t)n;
				found = true;
			}
			p += n;
			break;
		case 5:
			if (end - p < 4)
				return found;
			p += 4;
			break;
		default: return found;
		}
	}
	return found;
}

const char *cg_file_c_package(struct cg_model *m, const Google__Protobuf__FileDescriptorProto *f)
{
	const Google__Protobuf__FileOptions *opts = f->options;
	const uint8_t *s = NULL;
	size_t s_len = 0;
	bool found = false;

	if (opts == NULL)
		return NULL;
	for (unsigned i = 0; i < opts->base.n_unknown_fields; i++) {
		const ProtobufCMessageUnknownField *u = &opts->base.unknown_fields[i];
		if (u->tag != PB_C_FILE_FIELD || u->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
			continue;
		/* protobuf-c keeps the length prefix in an unknown field's data. */
		const uint8_t *p = u->data, *end = u->data + u->len;
		uint64_t n;
		if (!read_varint(&p, end, &n) || n != (uint64_t)(end - p))
			continue;
		if (find_string_field(p, (size_t)n, PB_C_C_PACKAGE_FIELD, &s, &s_len))
			found = true;
	}
	if (!found)
		return NULL;
	struct strbuf sb = STRBUF_INIT;
	sb_append(&sb, "");
	sb_append_n(&sb, (const char *)s, s_len);
	return keep_sb(m, &sb);
}

static size_t count_messages(const Google__Protobuf__DescriptorProto *const *msgs, size_t n)
{
	size_t total = n;

	for (size_t i = 0; i < n; i++)
		total += count_messages((const Google__Protobuf__DescriptorProto *const *)msgs[i]->nested_type,
		                        msgs[i]->n_nested_type);
	return total;
}

struct type_scope {
	struct cg_model *m;
	const char *file;
	const char *package;
	const char *c_package;
};

static int add_messages(const struct type_scope *sc, const char *parent, Google__Protobuf__DescriptorProto *const *msgs,
                        size_t n)
{
	struct cg_model *m = sc->m;

	for (size_t i = 0; i < n; i++) {
		struct strbuf sb = STRBUF_INIT;
		if (parent[0])
			sb_printf(&sb, "%s.%s", parent, msgs[i]->name);
		else
			sb_append(&sb, msgs[i]->name);
		char *full = keep_sb(m, &sb);
		if (full == NULL)
			return -1;
		char *c_full = naming_c_full_name(full, sc->package, sc->c_package);
		if (c_full == NULL)
			return -1;
		struct cg_type *t = &m->types[m->type_count++];
		t->full_name = full;
		t->file = sc->file;
		t->c_name = keep(m, naming_full_name_to_c(c_full));
		t->descriptor = keep(m, naming_message_descriptor(c_full));
		free(c_full);
		if (t->c_name == NULL || t->descriptor == NULL)
			return -1;
		if (add_messages(sc, full, msgs[i]->nested_type, msgs[i]->n_nested_type) != 0)
			return -1;
	}
	return 0;
}

static const struct cg_type *find_type(const struct cg_model *m, const char *ref)
{
	if (ref == NULL)
		return NULL;
	if (*ref == '.')
		ref++;
	for (size_t i = 0; i < m->type_count; i++)
		if (strcmp(m->types[i].full_name, ref) == 0)
			return &m->types[i];
	return NULL;
}

/* The leading comment at path in f's source_code_info, or NULL. */
static const char *leading_comment(const Google__Protobuf__FileDescriptorProto *f, const int32_t *path, size_t path_n)
{
	const Google__Protobuf__SourceCodeInfo *sci = f->source_code_info;

	if (sci == NULL)
		return NULL;
	for (size_t i = 0; i < sci->n_location; i++) {
		const Google__Protobuf__SourceCodeInfo__Location *loc = sci->location[i];
		if (loc->n_path == path_n && memcmp(loc->path, path, path_n * sizeof(*path)) == 0)
			return comment_is_blank(loc->leading_comments) ? NULL : loc->leading_comments;
	}
	return NULL;
}

static bool is_listed(const Google__Protobuf__Compiler__CodeGeneratorRequest *req, const char *name)
{
	for (size_t i = 0; i < req->n_file_to_generate; i++)
		if (strcmp(req->file_to_generate[i], name) == 0)
			return true;
	return false;
}

static int build_method(struct cg_model *m, const Google__Protobuf__FileDescriptorProto *f, size_t s_idx,
                        const struct cg_service *svc, size_t m_idx, struct cg_method *out, struct strbuf *err)
{
	const Google__Protobuf__MethodDescriptorProto *md = f->service[s_idx]->method[m_idx];
	int32_t path[4] = {PATH_FILE_SERVICE, (int32_t)s_idx, PATH_SERVICE_METHOD, (int32_t)m_idx};
	struct strbuf sb = STRBUF_INIT;

	out->name = md->name;
	out->snake = keep(m, naming_camel_to_lower(md->name));
	sb_printf(&sb, "/%s/%s", svc->full_name, md->name);
	out->path = keep_sb(m, &sb);
	out->comment = leading_comment(f, path, 4);
	out->summary = keep(m, comment_summary(out->comment));
	if (out->snake == NULL || out->path == NULL || out->summary == NULL) {
		sb_append(err, "out of memory");
		return -1;
	}
	/*
	 * The API's methods must declare who may call them: the RPC layer
	 * enforces the role from the generated table, so a method without one
	 * would be a hole. Other packages (the standard gRPC services) are open.
	 */
	out->min_role = comment_role(out->comment);
	bool is_api = f->package != NULL && strncmp(f->package, "monitoring.", 11) == 0;
	if (out->min_role < 0 || (is_api && out->min_role == 0)) {
		sb_printf(err,
		          "%s: method %s.%s: its comment must declare \"Role: viewer\", \"Role: editor\" or \"Role: "
		          "admin\"",
		          f->name, svc->full_name, md->name);
		return -1;
	}
	bool cs = md->has_client_streaming && md->client_streaming;
	bool ss = md->has_server_streaming && md->server_streaming;
	out->kind = cs ? (ss ? CG_BIDI_STREAMING : CG_CLIENT_STREAMING) : (ss ? CG_SERVER_STREAMING : CG_UNARY);
	out->in = find_type(m, md->input_type);
	out->out = find_type(m, md->output_type);
	if (out->in == NULL || out->out == NULL) {
		sb_printf(err, "%s: method %s.%s: unknown message type \"%s\"", f->name, svc->full_name, md->name,
		          out->in == NULL ? md->input_type : md->output_type);
		return -1;
	}
	return 0;
}

static int build_service(struct cg_model *m, const Google__Protobuf__FileDescriptorProto *f, size_t s_idx,
                         struct cg_service *svc, struct strbuf *err)
{
	const Google__Protobuf__ServiceDescriptorProto *sd = f->service[s_idx];
	int32_t path[2] = {PATH_FILE_SERVICE, (int32_t)s_idx};
	struct strbuf sb = STRBUF_INIT;
	const char *pkg = f->package ? f->package : "";

	svc->name = sd->name;
	if (pkg[0])
		sb_printf(&sb, "%s.%s", pkg, sd->name);
	else
		sb_append(&sb, sd->name);
	svc->full_name = keep_sb(m, &sb);
	svc->prefix = keep(m, naming_server_prefix(pkg, sd->name));
	svc->client_prefix = keep(m, naming_client_prefix(sd->name));
	svc->comment = leading_comment(f, path, 2);
	svc->method_count = sd->n_method;
	svc->methods = calloc(sd->n_method ? sd->n_method : 1, sizeof(*svc->methods));
	if (svc->full_name == NULL || svc->prefix == NULL || svc->client_prefix == NULL || svc->methods == NULL) {
		sb_append(err, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < sd->n_method; i++) {
		if (build_method(m, f, s_idx, svc, i, &svc->methods[i], err) != 0)
			return -1;
		/* Two methods whose C names clash would make uncompilable code. */
		for (size_t j = 0; j < i; j++) {
			if (strcmp(svc->methods[i].snake, svc->methods[j].snake) == 0) {
				sb_printf(err, "%s: methods %s and %s of %s both become \"%s\" in C", f->name,
				          svc->methods[j].name, svc->methods[i].name, svc->full_name,
				          svc->methods[i].snake);
				return -1;
			}
		}
	}
	return 0;
}

int cg_model_build(const Google__Protobuf__Compiler__CodeGeneratorRequest *req, struct cg_model *m, struct strbuf *err)
{
	size_t types = 0;

	memset(m, 0, sizeof(*m));
	for (size_t i = 0; i < req->n_proto_file; i++)
		types += count_messages(
		        (const Google__Protobuf__DescriptorProto *const *)req->proto_file[i]->message_type,
		        req->proto_file[i]->n_message_type);
	m->types = calloc(types ? types : 1, sizeof(*m->types));
	m->files = calloc(req->n_proto_file ? req->n_proto_file : 1, sizeof(*m->files));
	if (m->types == NULL || m->files == NULL)
		goto oom;

	for (size_t i = 0; i < req->n_proto_file; i++) {
		const Google__Protobuf__FileDescriptorProto *f = req->proto_file[i];
		struct type_scope sc = {m, f->name, f->package ? f->package : "", cg_file_c_package(m, f)};
		if (add_messages(&sc, sc.package, f->message_type, f->n_message_type) != 0)
			goto oom;
	}

	m->file_count = req->n_proto_file;
	for (size_t i = 0; i < req->n_proto_file; i++) {
		const Google__Protobuf__FileDescriptorProto *f = req->proto_file[i];
		struct cg_file *cf = &m->files[i];
		cf->proto = f;
		cf->stem = keep(m, naming_strip_proto(f->name));
		cf->is_generated = is_listed(req, f->name);
		if (cf->stem == NULL)
			goto oom;
		if (!cf->is_generated)
			continue;
		cf->services = calloc(f->n_service ? f->n_service : 1, sizeof(*cf->services));
		if (cf->services == NULL)
			goto oom;
		cf->service_count = f->n_service;
		for (size_t s = 0; s < f->n_service; s++)
			if (build_service(m, f, s, &cf->services[s], err) != 0)
				return -1;
	}
	return 0;
oom:
	sb_append(err, "out of memory");
	return -1;
}

void cg_model_free(struct cg_model *m)
{
	for (size_t i = 0; i < m->file_count; i++) {
		for (size_t s = 0; s < m->files[i].service_count; s++)
			free(m->files[i].services[s].methods);
		free(m->files[i].services);
	}
	free(m->files);
	free(m->types);
	for (size_t i = 0; i < m->owned_count; i++)
		free(m->owned[i]);
	free(m->owned);
	memset(m, 0, sizeof(*m));
}

bool cg_method_has_client_stub(const struct cg_method *method)
{
	return method->kind == CG_UNARY || method->kind == CG_SERVER_STREAMING;
}

size_t cg_file_client_stub_count(const struct cg_file *file)
{
	size_t n = 0;

	for (size_t s = 0; s < file->service_count; s++)
		for (size_t i = 0; i < file->services[s].method_count; i++)
			n += cg_method_has_client_stub(&file->services[s].methods[i]);
	return n;
}
