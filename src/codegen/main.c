/*
 * protoc-gen-mon: the protoc plugin that generates monitord's typed server
 * tables, the client library's typed stubs, the service index and the
 * descriptor set (see emit.h for the files). protoc writes a
 * CodeGeneratorRequest to stdin and reads a CodeGeneratorResponse from
 * stdout:
 *
 *   protoc --plugin=protoc-gen-mon=PATH \
 *          --mon_out=index=mon_services,descriptor_set=mon_descriptor_set:DIR ...
 *
 * Parameters (comma-separated, all optional):
 *   index=STEM           also write STEM.h/.c with mon_all_services
 *   descriptor_set=STEM  also write STEM.h/.c with mon_descriptor_set
 * STEM is a relative path without extension.
 *
 * Problems with the protos (an unknown type, clashing names, a bad
 * parameter) go back to protoc in the response's error field; problems with
 * the plugin's own input or output exit with status 1.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emit.h"
#include "model.h"
#include "strbuf.h"

#include "google/protobuf/compiler/plugin.pb-c.h"
#include "google/protobuf/descriptor.pb-c.h"

/* A request carries every imported descriptor; ours are well under this. */
#define MAX_REQUEST_BYTES ((size_t)256 << 20)

/* CodeGeneratorResponse.Feature.FEATURE_PROTO3_OPTIONAL: we ignore fields, so any are fine. */
#define FEATURE_PROTO3_OPTIONAL 1

struct params {
	char *index_stem;          /* NULL: no index */
	char *descriptor_set_stem; /* NULL: no descriptor set */
};

struct output {
	Google__Protobuf__Compiler__CodeGeneratorResponse__File **files;
	size_t count;
	size_t alloc;
};

static bool is_valid_stem(const char *s)
{
	if (*s == '\0' || *s == '/')
		return false;
	for (const char *p = s; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '-' || c == '/' || c == '.'))
			return false;
	}
	return strstr(s, "..") == NULL;
}

static int parse_params(const char *param, struct params *out, struct strbuf *err)
{
	const char *p = param ? param : "";

	while (*p) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', n);
		char **slot = NULL;
		if (eq != NULL && (size_t)(eq - p) == strlen("index") && strncmp(p, "index", 5) == 0)
			slot = &out->index_stem;
		else if (eq != NULL && (size_t)(eq - p) == strlen("descriptor_set") &&
		         strncmp(p, "descriptor_set", 14) == 0)
			slot = &out->descriptor_set_stem;
		if (slot == NULL) {
			sb_printf(err,
			          "protoc-gen-mon: unknown parameter \"%.*s\" (known: index=STEM, descriptor_set=STEM)",
			          (int)n, p);
			return -1;
		}
		size_t vn = n - (size_t)(eq + 1 - p);
		free(*slot);
		*slot = malloc(vn + 1);
		if (*slot == NULL) {
			sb_append(err, "out of memory");
			return -1;
		}
		memcpy(*slot, eq + 1, vn);
		(*slot)[vn] = '\0';
		if (!is_valid_stem(*slot)) {
			sb_printf(
			        err,
			        "protoc-gen-mon: parameter \"%.*s\": not a relative path of letters, digits, \"_-./\"",
			        (int)n, p);
			return -1;
		}
		p += n;
		if (*p == ',')
			p++;
	}
	return 0;
}

/* Adds a generated file named "<a><b>" whose text is taken from sb. */
static int add_file(struct output *o, const char *a, const char *b, struct strbuf *sb)
{
	struct strbuf name = STRBUF_INIT;
	Google__Protobuf__Compiler__CodeGeneratorResponse__File *f = NULL;

	sb_printf(&name, "%s%s", a, b);
	if (o->count == o->alloc) {
		size_t n = o->alloc ? o->alloc * 2 : 16;
		void *p = realloc(o->files, n * sizeof(*o->files));
		if (p == NULL)
			goto fail;
		o->files = p;
		o->alloc = n;
	}
	f = malloc(sizeof(*f));
	if (f == NULL)
		goto fail;
	google__protobuf__compiler__code_generator_response__file__init(f);
	f->name = sb_take(&name);
	f->content = sb_take(sb);
	if (f->name == NULL || f->content == NULL)
		goto fail;
	o->files[o->count++] = f;
	return 0;
fail:
	if (f != NULL) {
		free(f->name);
		free(f->content);
		free(f);
	}
	sb_release(&name);
	sb_release(sb);
	return -1;
}

/*
 * Serializes every file of the request as a FileDescriptorSet, without
 * source_code_info (detached from the request while packing, then put
 * back). Returns the bytes (free with free) or NULL when out of memory.
 */
static uint8_t *pack_descriptor_set(Google__Protobuf__Compiler__CodeGeneratorRequest *req, size_t *len)
{
	Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
	Google__Protobuf__SourceCodeInfo **saved = calloc(req->n_proto_file ? req->n_proto_file : 1, sizeof(*saved));
	uint8_t *buf = NULL;

	if (saved == NULL)
		return NULL;
	set.n_file = req->n_proto_file;
	set.file = req->proto_file;
	for (size_t i = 0; i < req->n_proto_file; i++) {
		saved[i] = req->proto_file[i]->source_code_info;
		req->proto_file[i]->source_code_info = NULL;
	}
	*len = protobuf_c_message_get_packed_size(&set.base);
	buf = malloc(*len ? *len : 1);
	if (buf != NULL)
		protobuf_c_message_pack(&set.base, buf);
	for (size_t i = 0; i < req->n_proto_file; i++)
		req->proto_file[i]->source_code_info = saved[i];
	free(saved);
	return buf;
}

static int generate(Google__Protobuf__Compiler__CodeGeneratorRequest *req, struct output *o, struct strbuf *err)
{
	struct params params = {NULL, NULL};
	struct cg_model m;
	struct strbuf sb = STRBUF_INIT;
	int rc = -1;

	memset(&m, 0, sizeof(m));
	if (parse_params(req->parameter, &params, err) != 0)
		goto out;
	if (cg_model_build(req, &m, err) != 0)
		goto out;

	for (size_t i = 0; i < m.file_count; i++) {
		const struct cg_file *f = &m.files[i];
		if (!f->is_generated || f->service_count == 0)
			continue;
		emit_server_header(f, &sb);
		if (add_file(o, f->stem, ".mon-server.h", &sb) != 0)
			goto oom;
		emit_server_source(f, &sb);
		if (add_file(o, f->stem, ".mon-server.c", &sb) != 0)
			goto oom;
		emit_client_header(f, &sb);
		if (add_file(o, f->stem, ".mon-client.h", &sb) != 0)
			goto oom;
		emit_client_source(f, &sb);
		if (add_file(o, f->stem, ".mon-client.c", &sb) != 0)
			goto oom;
	}
	if (params.index_stem != NULL) {
		emit_index_header(&m, params.index_stem, &sb);
		if (add_file(o, params.index_stem, ".h", &sb) != 0)
			goto oom;
		emit_index_source(&m, params.index_stem, &sb);
		if (add_file(o, params.index_stem, ".c", &sb) != 0)
			goto oom;
	}
	if (params.descriptor_set_stem != NULL) {
		size_t len = 0;
		uint8_t *bytes = pack_descriptor_set(req, &len);
		if (bytes == NULL)
			goto oom;
		emit_descriptor_set_header(params.descriptor_set_stem, &sb);
		if (add_file(o, params.descriptor_set_stem, ".h", &sb) != 0) {
			free(bytes);
			goto oom;
		}
		emit_descriptor_set_source(params.descriptor_set_stem, bytes, len, &sb);
		free(bytes);
		if (add_file(o, params.descriptor_set_stem, ".c", &sb) != 0)
			goto oom;
	}
	rc = 0;
	goto out;
oom:
	sb_append(err, "protoc-gen-mon: out of memory or generated file too large");
out:
	sb_release(&sb);
	cg_model_free(&m);
	free(params.index_stem);
	free(params.descriptor_set_stem);
	return rc;
}

static uint8_t *read_all(FILE *in, size_t *len)
{
	size_t alloc = 1 << 16;
	uint8_t *buf = malloc(alloc);

	*len = 0;
	while (buf != NULL) {
		if (*len == alloc) {
			if (alloc >= MAX_REQUEST_BYTES) {
				fprintf(stderr, "protoc-gen-mon: request larger than %zu bytes\n", MAX_REQUEST_BYTES);
				break;
			}
			uint8_t *p = realloc(buf, alloc * 2);
			if (p == NULL)
				break;
			buf = p;
			alloc *= 2;
		}
		size_t n = fread(buf + *len, 1, alloc - *len, in);
		*len += n;
		if (n == 0) {
			if (ferror(in))
				break;
			return buf;
		}
	}
	free(buf);
	return NULL;
}

int main(void)
{
	Google__Protobuf__Compiler__CodeGeneratorResponse resp =
	        GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__INIT;
	Google__Protobuf__Compiler__CodeGeneratorRequest *req = NULL;
	struct output o = {NULL, 0, 0};
	struct strbuf err = STRBUF_INIT;
	uint8_t *in = NULL, *out = NULL;
	size_t in_len = 0;
	int status = 1;

	in = read_all(stdin, &in_len);
	if (in == NULL) {
		fprintf(stderr, "protoc-gen-mon: could not read the request from stdin\n");
		goto out;
	}
	req = google__protobuf__compiler__code_generator_request__unpack(NULL, in_len, in);
	if (req == NULL) {
		fprintf(stderr, "protoc-gen-mon: stdin is not a CodeGeneratorRequest\n");
		goto out;
	}

	resp.has_supported_features = 1;
	resp.supported_features = FEATURE_PROTO3_OPTIONAL;
	if (generate(req, &o, &err) != 0) {
		resp.error = (char *)(sb_failed(&err) ? "protoc-gen-mon: out of memory" : sb_str(&err));
	} else {
		resp.n_file = o.count;
		resp.file = o.files;
	}

	size_t out_len = google__protobuf__compiler__code_generator_response__get_packed_size(&resp);
	out = malloc(out_len ? out_len : 1);
	if (out == NULL) {
		fprintf(stderr, "protoc-gen-mon: out of memory\n");
		goto out;
	}
	google__protobuf__compiler__code_generator_response__pack(&resp, out);
	if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout) != 0) {
		fprintf(stderr, "protoc-gen-mon: could not write the response to stdout\n");
		goto out;
	}
	status = 0;
out:
	for (size_t i = 0; i < o.count; i++) {
		free(o.files[i]->name);
		free(o.files[i]->content);
		free(o.files[i]);
	}
	free(o.files);
	sb_release(&err);
	google__protobuf__compiler__code_generator_request__free_unpacked(req, NULL);
	free(in);
	free(out);
	return status;
}
