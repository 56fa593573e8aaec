/*
 * Fuzz target: request bytes as every method of every service would take
 * them (the string check of src/rpc/validate.c, then protobuf-c into a
 * capped call arena: the server's exact path), then re-encoded. Untrusted
 * bytes must never crash or overrun the arena cap, and a request the check
 * passes holds only well-formed UTF-8 in its string fields.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mon_services.h"
#include "rpc/method.h"
#include "rpc/validate.h"
#include "util/arena.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	/* The first byte picks the method, the rest is the request. */
	size_t total = 0;
	for (size_t i = 0; i < mon_all_services_count; i++)
		total += mon_all_services[i]->method_count;
	size_t pick = data[0] % total;
	const struct rpc_method *m = NULL;
	for (size_t i = 0; i < mon_all_services_count && m == NULL; i++) {
		if (pick < mon_all_services[i]->method_count)
			m = &mon_all_services[i]->methods[pick];
		else
			pick -= mon_all_services[i]->method_count;
	}
	struct mon_error err;
	bool is_refused = rpc_validate_request(m->input, data + 1, size - 1, &err) != 0;
	if (is_refused && (err.code != MON_EINVAL || strstr(err.msg, ": ") == NULL))
		abort(); /* a refusal always names a field */
	struct arena *a = arena_create(1024 * 1024);
	if (a == NULL)
		return 0;
	ProtobufCAllocator alloc = arena_protobuf_allocator(a);
	ProtobufCMessage *msg = is_refused ? NULL : protobuf_c_message_unpack(m->input, &alloc, size - 1, data + 1);
	if (msg != NULL) {
		size_t len = protobuf_c_message_get_packed_size(msg);
		uint8_t *out = arena_alloc(a, len ? len : 1);
		if (out != NULL && protobuf_c_message_pack(msg, out) != len)
			abort();
	}
	arena_destroy(a);
	return 0;
}
