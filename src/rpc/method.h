/*
 * The method tables that the code generator (src/codegen) emits for every
 * service in proto/, and the binding call that registers a table with a
 * server. Generated code includes this header; services normally use the
 * typed <package>_<service>_bind() wrappers instead.
 */
#ifndef MON_RPC_METHOD_H
#define MON_RPC_METHOD_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "rpc/rpc.h"

struct rpc_server;

enum rpc_kind { RPC_UNARY = 0, RPC_SERVER_STREAMING = 1, RPC_CLIENT_STREAMING = 2, RPC_BIDI_STREAMING = 3 };

/* Any handler, stored untyped; the method's trampoline casts it back. */
typedef void (*rpc_any_fn)(void);

/*
 * Calls a typed handler. For unary methods out is the response message
 * (initialised, in the call's arena); for streaming methods it is the
 * struct rpc_stream. For client and bidi streaming the trampoline runs once
 * per received message.
 */
typedef int (*rpc_trampoline_fn)(struct rpc_ctx *ctx, rpc_any_fn fn, const ProtobufCMessage *req, void *out);

struct rpc_method {
	const char *path;    /* "/monitoring.v1.AlertsService/ListAlerts" */
	const char *name;    /* "ListAlerts" */
	const char *summary; /* first sentence of the method's proto comment, or "" */
	enum rpc_kind kind;
	const ProtobufCMessageDescriptor *input;
	const ProtobufCMessageDescriptor *output;
	rpc_trampoline_fn trampoline;
	int min_role; /* enum rpc_role: the least role a caller needs; 0 = open to anyone */
};

struct rpc_service_desc {
	const char *name; /* "monitoring.v1.AlertsService" */
	size_t method_count;
	const struct rpc_method *methods;
};

enum rpc_bind_flags {
	/* Handlers never block: run them on the completion-queue thread. */
	RPC_BIND_INLINE = 1u << 0
};

/*
 * Registers every method of desc with the server. fns holds one handler per
 * method, in desc order; a NULL handler answers UNIMPLEMENTED naming the
 * method's capability. user is handed to handlers through rpc_ctx_user.
 * Must be called before rpc_server_start.
 */
int rpc_server_bind(struct rpc_server *server, const struct rpc_service_desc *desc, const rpc_any_fn *fns, void *user,
                    unsigned flags, struct mon_error *err) MON_MUST_CHECK;

#endif
