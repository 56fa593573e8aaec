/*
 * Fuzz target: the protobuf wire reader used to index descriptor sets. It
 * must stop at the end of input or report malformed input, never read past it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "rpc/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void walk(const uint8_t *p, size_t n, int depth)
{
	struct wire_reader r = {p, p + n};
	struct wire_field f;
	while (wire_next(&r, &f) > 0) {
		if (f.type == WIRE_LEN) {
			if (f.data < p || f.data + f.len > p + n)
				abort();
			if (depth < 8)
				walk(f.data, f.len, depth + 1);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	walk(data, size, 0);
	return 0;
}
