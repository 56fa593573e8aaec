/*
 * Server reflection (grpc.reflection.v1 and v1alpha, the same on the wire)
 * from the FileDescriptorSet embedded at build time. At start the set is
 * indexed once: each file's serialized FileDescriptorProto (a slice of the
 * embedded bytes, sent as is), its dependencies, and every fully qualified
 * symbol (services, methods, messages, enums, nested types, extensions)
 * mapped to its file. Handlers never block: they run inline.
 */
#include <stdlib.h>
#include <string.h>

#include "grpc/reflection/v1/reflection.mon-server.h"
#include "grpc/reflection/v1alpha/reflection.mon-server.h"
#include "rpc/internal.h"
#include "rpc/wire.h"
#include "util/log.h"

struct refl_file {
	char *name;
	const unsigned char *bytes;
	size_t len;
	size_t dep_count;
	char **deps;
};

struct refl_symbol {
	char *name;
	size_t file;
};

struct rpc_reflection {
	struct refl_file *files;
	size_t file_count;
	struct refl_symbol *symbols;
	size_t symbol_count, symbol_cap;
	char **services;
	size_t service_count;
};

static char *join_name(const char *scope, const char *name, size_t name_len)
{
	size_t slen = strlen(scope);
	char *s = malloc(slen + name_len + 2);
	if (s == NULL)
		return NULL;
	size_t off = 0;
	if (slen) {
		memcpy(s, scope, slen);
		s[slen] = '.';
		off = slen + 1;
	}
	memcpy(s + off, name, name_len);
	s[off + name_len] = '\0';
	return s;
}

static int add_symbol(struct rpc_reflection *r, char *name, size_t file)
{
	if (name == NULL)
		return MON_ENOMEM;
	if (r->symbol_count == r->symbol_cap) {
		size_t cap = r->symbol_cap ? r->symbol_cap * 2 : 256;
		struct refl_symbol *n = realloc(r->symbols, cap * sizeof(*n));
		if (n == NULL) {
			free(name);
			return MON_ENOMEM;
		}
		r->symbols = n;
		r->symbol_cap = cap;
	}
	r->symbols[r->symbol_count++] = (struct refl_symbol){name, file};
	return 0;
}

/* Finds field 1 (name) of a descriptor message. */
static int descriptor_name(const unsigned char *p, size_t len, const char **name, size_t *name_len)
{
	struct wire_reader rd = {p, p + len};
	struct wire_field f;
	int rc;
	while ((rc = wire_next(&rd, &f)) > 0) {
		if (f.number == 1 && f.type == WIRE_LEN) {
			*name = (const char *)f.data;
			*name_len = f.len;
			return 0;
		}
	}
	return MON_EINVAL;
}

/* Indexes a DescriptorProto (message) and what is nested in it. */
static int index_message(struct rpc_reflection *r, const char *scope, const unsigned char *p, size_t len, size_t file,
                         int depth)
{
	const char *name;
	size_t nlen;
	if (depth > 32 || descriptor_name(p, len, &name, &nlen) != 0)
		return MON_EINVAL;
	char *full = join_name(scope, name, nlen);
	if (full == NULL)
		return MON_ENOMEM;
	char *copy = strdup(full);
	int rc = add_symbol(r, copy, file);
	struct wire_reader rd = {p, p + len};
	struct wire_field f;
	while (rc == 0 && (rc = wire_next(&rd, &f)) > 0) {
		rc = 0;
		if (f.type != WIRE_LEN)
			continue;
		if (f.number == 3) { /* nested_type */
			rc = index_message(r, full, f.data, f.len, file, depth + 1);
		} else if (f.number == 4 || f.number == 6) { /* enum_type, extension */
			const char *en;
			size_t enl;
			if (descriptor_name(f.data, f.len, &en, &enl) == 0)
				rc = add_symbol(r, join_name(full, en, enl), file);
		}
	}
	free(full);
	return rc < 0 ? rc : 0;
}

static int index_service(struct rpc_reflection *r, const char *pkg, const unsigned char *p, size_t len, size_t file)
{
	const char *name;
	size_t nlen;
	if (descriptor_name(p, len, &name, &nlen) != 0)
		return MON_EINVAL;
	char *full = join_name(pkg, name, nlen);
	if (full == NULL)
		return MON_ENOMEM;
	char **svcs = realloc(r->services, (r->service_count + 1) * sizeof(*svcs));
	if (svcs == NULL) {
		free(full);
		return MON_ENOMEM;
	}
	r->services = svcs;
	r->services[r->service_count++] = strdup(full);
	int rc = add_symbol(r, strdup(full), file);
	struct wire_reader rd = {p, p + len};
	struct wire_field f;
	while (rc == 0 && (rc = wire_next(&rd, &f)) > 0) {
		rc = 0;
		if (f.number == 2 && f.type == WIRE_LEN) {
			const char *mn;
			size_t mnl;
			if (descriptor_name(f.data, f.len, &mn, &mnl) == 0)
				rc = add_symbol(r, join_name(full, mn, mnl), file);
		}
	}
	free(full);
	return rc < 0 ? rc : 0;
}

static int index_file(struct rpc_reflection *r, size_t idx)
{
	struct refl_file *rf = &r->files[idx];
	char pkg[256] = "";
	struct wire_reader rd = {rf->bytes, rf->bytes + rf->len};
	struct wire_field f;
	int rc;
	/* First pass: name, package, dependencies. */
	while ((rc = wire_next(&rd, &f)) > 0) {
		if (f.type != WIRE_LEN)
			continue;
		if (f.number == 1) {
			rf->name = strndup((const char *)f.data, f.len);
		} else if (f.number == 2 && f.len < sizeof(pkg)) {
			memcpy(pkg, f.data, f.len);
			pkg[f.len] = '\0';
		} else if (f.number == 3) {
			char **deps = realloc(rf->deps, (rf->dep_count + 1) * sizeof(*deps));
			if (deps == NULL)
				return MON_ENOMEM;
			rf->deps = deps;
			rf->deps[rf->dep_count++] = strndup((const char *)f.data, f.len);
		}
	}
	if (rc < 0 || rf->name == NULL)
		return MON_EINVAL;
	/* Second pass: symbols. */
	rd = (struct wire_reader){rf->bytes, rf->bytes + rf->len};
	while ((rc = wire_next(&rd, &f)) > 0) {
		rc = 0;
		if (f.type != WIRE_LEN)
			continue;
		if (f.number == 4) {
			rc = index_message(r, pkg, f.data, f.len, idx, 0);
		} else if (f.number == 5 || f.number == 7) {
			const char *en;
			size_t enl;
			if (descriptor_name(f.data, f.len, &en, &enl) == 0)
				rc = add_symbol(r, join_name(pkg, en, enl), idx);
		} else if (f.number == 6) {
			rc = index_service(r, pkg, f.data, f.len, idx);
		}
		if (rc < 0)
			return rc;
	}
	return rc < 0 ? rc : 0;
}

static int symbol_cmp(const void *a, const void *b)
{
	return strcmp(((const struct refl_symbol *)a)->name, ((const struct refl_symbol *)b)->name);
}

static long file_find(const struct rpc_reflection *r, const char *name)
{
	for (size_t i = 0; i < r->file_count; i++)
		if (strcmp(r->files[i].name, name) == 0)
			return (long)i;
	return -1;
}

/* Appends file idx and, before it, its transitive dependencies, each once. */
static void collect_files(const struct rpc_reflection *r, size_t idx, bool *seen, size_t *order, size_t *n, int depth)
{
	if (seen[idx] || depth > 64)
		return;
	seen[idx] = true;
	const struct refl_file *f = &r->files[idx];
	for (size_t i = 0; i < f->dep_count; i++) {
		long d = file_find(r, f->deps[i]);
		if (d >= 0)
			collect_files(r, (size_t)d, seen, order, n, depth + 1);
	}
	order[(*n)++] = idx;
}

static void set_error(struct arena *a, Grpc__Reflection__V1__ServerReflectionResponse *resp, int grpc_code,
                      const char *msg)
{
	Grpc__Reflection__V1__ErrorResponse *e = arena_alloc(a, sizeof(*e));
	if (e == NULL)
		return;
	grpc__reflection__v1__error_response__init(e);
	e->error_code = grpc_code;
	e->error_message = arena_strdup(a, msg);
	resp->message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
	resp->error_response = e;
}

static int set_files(struct rpc_reflection *r, struct arena *a, Grpc__Reflection__V1__ServerReflectionResponse *resp,
                     size_t idx)
{
	bool *seen = arena_calloc(a, r->file_count, sizeof(bool));
	size_t *order = arena_calloc(a, r->file_count, sizeof(size_t));
	Grpc__Reflection__V1__FileDescriptorResponse *fd = arena_alloc(a, sizeof(*fd));
	if (seen == NULL || order == NULL || fd == NULL)
		return MON_ENOMEM;
	size_t n = 0;
	collect_files(r, idx, seen, order, &n, 0);
	grpc__reflection__v1__file_descriptor_response__init(fd);
	fd->file_descriptor_proto = arena_calloc(a, n, sizeof(ProtobufCBinaryData));
	if (fd->file_descriptor_proto == NULL)
		return MON_ENOMEM;
	/* The requested file first, then its dependencies. */
	fd->file_descriptor_proto[0] = (ProtobufCBinaryData){r->files[idx].len, (uint8_t *)r->files[idx].bytes};
	size_t k = 1;
	for (size_t i = 0; i + 1 < n; i++)
		fd->file_descriptor_proto[k++] =
		        (ProtobufCBinaryData){r->files[order[i]].len, (uint8_t *)r->files[order[i]].bytes};
	fd->n_file_descriptor_proto = k;
	resp->message_response_case =
	        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
	resp->file_descriptor_response = fd;
	return 0;
}

static long symbol_file(const struct rpc_reflection *r, const char *sym)
{
	struct refl_symbol key = {(char *)sym, 0};
	const struct refl_symbol *s = bsearch(&key, r->symbols, r->symbol_count, sizeof(key), symbol_cmp);
	return s ? (long)s->file : -1;
}

/* Answers one reflection request; resp is sent on the stream. */
static int answer(struct rpc_ctx *ctx, const Grpc__Reflection__V1__ServerReflectionRequest *req,
                  struct rpc_stream *stream)
{
	struct rpc_server *server = rpc_ctx_user(ctx);
	struct rpc_reflection *r = server->reflection;
	struct arena *a = rpc_ctx_arena(ctx);
	Grpc__Reflection__V1__ServerReflectionResponse resp = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
	resp.valid_host = req->host ? req->host : "";
	resp.original_request = (Grpc__Reflection__V1__ServerReflectionRequest *)req;

	switch (req->message_request_case) {
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES: {
		Grpc__Reflection__V1__ListServiceResponse *ls = arena_alloc(a, sizeof(*ls));
		Grpc__Reflection__V1__ServiceResponse **items = arena_calloc(a, r->service_count, sizeof(*items));
		if (ls == NULL || (items == NULL && r->service_count))
			return rpc_fail(ctx, MON_ENOMEM, "out of memory");
		grpc__reflection__v1__list_service_response__init(ls);
		for (size_t i = 0; i < r->service_count; i++) {
			items[i] = arena_alloc(a, sizeof(**items));
			if (items[i] == NULL)
				return rpc_fail(ctx, MON_ENOMEM, "out of memory");
			grpc__reflection__v1__service_response__init(items[i]);
			items[i]->name = r->services[i];
		}
		ls->n_service = r->service_count;
		ls->service = items;
		resp.message_response_case =
		        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
		resp.list_services_response = ls;
		break;
	}
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME: {
		long idx = file_find(r, req->file_by_filename);
		if (idx < 0)
			set_error(a, &resp, 5, "file not found");
		else if (set_files(r, a, &resp, (size_t)idx) != 0)
			return rpc_fail(ctx, MON_ENOMEM, "out of memory");
		break;
	}
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL: {
		long idx = symbol_file(r, req->file_containing_symbol);
		if (idx < 0)
			set_error(a, &resp, 5, "symbol not found");
		else if (set_files(r, a, &resp, (size_t)idx) != 0)
			return rpc_fail(ctx, MON_ENOMEM, "out of memory");
		break;
	}
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE: {
		if (symbol_file(r, req->all_extension_numbers_of_type) < 0) {
			set_error(a, &resp, 5, "type not found");
			break;
		}
		/* The API declares no extensions: the list is empty. */
		Grpc__Reflection__V1__ExtensionNumberResponse *en = arena_alloc(a, sizeof(*en));
		if (en == NULL)
			return rpc_fail(ctx, MON_ENOMEM, "out of memory");
		grpc__reflection__v1__extension_number_response__init(en);
		en->base_type_name = req->all_extension_numbers_of_type;
		resp.message_response_case =
		        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
		resp.all_extension_numbers_response = en;
		break;
	}
	case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
		set_error(a, &resp, 5, "extension not found");
		break;
	default: set_error(a, &resp, 3, "message_request: not set or not supported"); break;
	}
	int rc = rpc_stream_send(stream, &resp.base);
	if (rc == MON_ELIMIT)
		return rpc_fail(ctx, MON_ELIMIT, "too many unread reflection responses (stream-queue-max)");
	return 0;
}

static int reflect_v1(struct rpc_ctx *ctx, const Grpc__Reflection__V1__ServerReflectionRequest *req,
                      struct rpc_stream *stream)
{
	return answer(ctx, req, stream);
}

/* v1alpha is v1 under another name: convert the request through its bytes. */
static int reflect_v1alpha(struct rpc_ctx *ctx, const Grpc__Reflection__V1alpha__ServerReflectionRequest *req,
                           struct rpc_stream *stream)
{
	struct arena *a = rpc_ctx_arena(ctx);
	size_t len = protobuf_c_message_get_packed_size(&req->base);
	uint8_t *buf = arena_alloc(a, len);
	if (buf == NULL)
		return rpc_fail(ctx, MON_ENOMEM, "out of memory");
	protobuf_c_message_pack(&req->base, buf);
	ProtobufCAllocator alloc = arena_protobuf_allocator(a);
	Grpc__Reflection__V1__ServerReflectionRequest *v1 =
	        grpc__reflection__v1__server_reflection_request__unpack(&alloc, len, buf);
	if (v1 == NULL)
		return rpc_fail(ctx, MON_EINVAL, "request could not be decoded");
	return answer(ctx, v1, stream);
}

int rpc_reflection_init(struct rpc_server *server, const unsigned char *set, size_t set_len, struct mon_error *err)
{
	struct rpc_reflection *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	server->reflection = r;
	int rc = 0;
	if (set != NULL) {
		struct wire_reader rd = {set, set + set_len};
		struct wire_field f;
		while ((rc = wire_next(&rd, &f)) > 0) {
			if (f.number != 1 || f.type != WIRE_LEN)
				continue;
			struct refl_file *files = realloc(r->files, (r->file_count + 1) * sizeof(*files));
			if (files == NULL)
				return mon_error_set(err, MON_ENOMEM, "out of memory");
			r->files = files;
			r->files[r->file_count] = (struct refl_file){.bytes = f.data, .len = f.len};
			r->file_count++;
			rc = index_file(r, r->file_count - 1);
			if (rc < 0)
				break;
		}
		if (rc < 0)
			return mon_error_set(err, MON_EINVAL, "embedded descriptor set is corrupt");
		qsort(r->symbols, r->symbol_count, sizeof(r->symbols[0]), symbol_cmp);
	}
	struct grpc_reflection_v1_server_reflection_handlers h1 = {.server_reflection_info = reflect_v1};
	struct grpc_reflection_v1alpha_server_reflection_handlers h2 = {.server_reflection_info = reflect_v1alpha};
	rc = grpc_reflection_v1_server_reflection_bind(server, &h1, server, RPC_BIND_INLINE, err);
	if (rc == 0)
		rc = grpc_reflection_v1alpha_server_reflection_bind(server, &h2, server, RPC_BIND_INLINE, err);
	return rc;
}

void rpc_reflection_free(struct rpc_server *server)
{
	struct rpc_reflection *r = server->reflection;
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->file_count; i++) {
		free(r->files[i].name);
		for (size_t j = 0; j < r->files[i].dep_count; j++)
			free(r->files[i].deps[j]);
		free(r->files[i].deps);
	}
	free(r->files);
	for (size_t i = 0; i < r->symbol_count; i++)
		free(r->symbols[i].name);
	free(r->symbols);
	for (size_t i = 0; i < r->service_count; i++)
		free(r->services[i]);
	free(r->services);
	free(r);
	server->reflection = NULL;
}
