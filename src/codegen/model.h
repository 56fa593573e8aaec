/*
 * What the emitters generate from: the services and methods of the files
 * protoc asked for, each with every name already worked out (protoc-c's
 * type and descriptor names, our prefixes, paths, summaries), plus an index
 * of every message type in the request so that methods can name types from
 * imported files.
 *
 * The model borrows from the CodeGeneratorRequest (names, comments, file
 * descriptors), which must outlive it, and owns every string it computed.
 */
#ifndef MON_CODEGEN_MODEL_H
#define MON_CODEGEN_MODEL_H

#include <stdbool.h>
#include <stddef.h>

#include "google/protobuf/compiler/plugin.pb-c.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "strbuf.h"

/* The same values as enum rpc_kind in src/rpc/method.h. */
enum cg_kind { CG_UNARY = 0, CG_SERVER_STREAMING = 1, CG_CLIENT_STREAMING = 2, CG_BIDI_STREAMING = 3 };

struct cg_type {
	const char *full_name; /* "foo.v1.Outer.Inner", no leading dot (borrowed) */
	const char *file;      /* the .proto that declares it (borrowed) */
	char *c_name;          /* protoc-c's struct name: "Foo__V1__Outer__Inner" */
	char *descriptor;      /* protoc-c's descriptor: "foo__v1__outer__inner__descriptor" */
};

struct cg_method {
	const char *name;    /* "ListAlerts" (borrowed) */
	char *snake;         /* "list_alerts" */
	char *path;          /* "/monitoring.v1.AlertsService/ListAlerts" */
	const char *comment; /* leading comment or NULL (borrowed) */
	char *summary;       /* first sentence of comment, unescaped; "" when none */
	int min_role;        /* from "Role: ..." in the comment: 0 none, 1 viewer, 2 editor, 3 admin */
	enum cg_kind kind;
	const struct cg_type *in;
	const struct cg_type *out;
};

struct cg_service {
	const char *name;    /* "AlertsService" (borrowed) */
	char *full_name;     /* "monitoring.v1.AlertsService" */
	char *prefix;        /* server prefix: "monitoring_v1_alerts_service" */
	char *client_prefix; /* client prefix: "mon_alerts_service" */
	const char *comment; /* leading comment or NULL (borrowed) */
	size_t method_count;
	struct cg_method *methods;
};

struct cg_file {
	const Google__Protobuf__FileDescriptorProto *proto; /* borrowed */
	char *stem;                                         /* "monitoring/v1/alerts": the name without ".proto" */
	bool is_generated;                                  /* listed in file_to_generate */
	size_t service_count;
	struct cg_service *services;
};

struct cg_model {
	size_t file_count; /* every file of the request, dependencies first */
	struct cg_file *files;
	size_t type_count;
	struct cg_type *types;
	/* Every string the model computed, freed by cg_model_free. */
	char **owned;
	size_t owned_count;
	size_t owned_alloc;
};

/*
 * Builds the model of req into m (zeroed by the call). Returns 0, or -1
 * with a message in err (a type that cannot be found, two methods whose C
 * names clash, out of memory). m must be freed with cg_model_free either way.
 */
int cg_model_build(const Google__Protobuf__Compiler__CodeGeneratorRequest *req, struct cg_model *m, struct strbuf *err)
        __attribute__((warn_unused_result));

/* Frees what the model owns; accepts a zeroed or partly built model. */
void cg_model_free(struct cg_model *m);

/* The protobuf-c file option c_package of f (option (pb_c_file).c_package), or NULL. Owned by m. */
const char *cg_file_c_package(struct cg_model *m, const Google__Protobuf__FileDescriptorProto *f);

/* True when the method has a client stub (unary or server streaming). */
bool cg_method_has_client_stub(const struct cg_method *method);

/* The number of methods of the file that have client stubs. */
size_t cg_file_client_stub_count(const struct cg_file *file);

#endif
