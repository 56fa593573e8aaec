/*
 * The emitters: each appends one generated file's text to a buffer. Output
 * problems (out of memory, the size cap) show as sb_failed on the buffer;
 * the caller checks once.
 *
 * Generated files, for a file F.proto that declares services:
 *   F.mon-server.h/.c   typed handler typedefs, handler struct, method table
 *                       and bind function per service (emit_server_*)
 *   F.mon-client.h/.c   client stubs for unary and server-streaming methods
 *                       (emit_client_*)
 * and, once per run when asked:
 *   <index>.h/.c        mon_all_services: every service of every file
 *   <dset>.h/.c         mon_descriptor_set: the FileDescriptorSet of every
 *                       file in the request, for server reflection
 */
#ifndef MON_CODEGEN_EMIT_H
#define MON_CODEGEN_EMIT_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "strbuf.h"

/* Appends "#ifndef G\n#define G\n" for the include guard G of file_name. */
void emit_include_guard(struct strbuf *out, const char *file_name);

void emit_server_header(const struct cg_file *f, struct strbuf *out);
void emit_server_source(const struct cg_file *f, struct strbuf *out);

void emit_client_header(const struct cg_file *f, struct strbuf *out);
void emit_client_source(const struct cg_file *f, struct strbuf *out);

/* index_stem is the path of the index without extension ("mon_services"). */
void emit_index_header(const struct cg_model *m, const char *index_stem, struct strbuf *out);
void emit_index_source(const struct cg_model *m, const char *index_stem, struct strbuf *out);

/* The descriptor set files; bytes/len is the serialized FileDescriptorSet. */
void emit_descriptor_set_header(const char *stem, struct strbuf *out);
void emit_descriptor_set_source(const char *stem, const uint8_t *bytes, size_t len, struct strbuf *out);

#endif
