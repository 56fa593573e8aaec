/*
 * Fuzz target: monctl's JSON transcoding (clients/cli/json.c), both ways it
 * meets untrusted bytes. The first byte picks a message type of the API
 * (every request and response of every service, and MetricPoint, the line
 * format of `monctl metrics write`); the second picks the direction:
 * - JSON text, as typed by an operator or piped in: parsed as monctl does,
 *   converted to the message; what converts must print, and what prints
 *   must convert back;
 * - protobuf bytes, as a server answers: decoded and printed as JSON.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "json.h"
#include "mon_services.h"
#include "monitoring/v1/metrics.pb-c.h"
#include "rpc/method.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const ProtobufCMessageDescriptor *pick_type(uint8_t b)
{
	size_t total = 1;
	for (size_t i = 0; i < mon_all_services_count; i++)
		total += mon_all_services[i]->method_count * 2;
	size_t pick = b % total;
	if (pick == 0)
		return &monitoring__v1__metric_point__descriptor;
	pick--;
	for (size_t i = 0; i < mon_all_services_count; i++) {
		const struct rpc_service_desc *s = mon_all_services[i];
		if (pick < s->method_count * 2)
			return pick % 2 ? s->methods[pick / 2].output : s->methods[pick / 2].input;
		pick -= s->method_count * 2;
	}
	return &monitoring__v1__metric_point__descriptor;
}

/* Prints msg, and reads what it printed back as a message of the same type. */
static void print_and_read_back(const ProtobufCMessage *msg, unsigned flags)
{
	json_t *j = NULL;
	struct mon_error err;
	if (json_from_message(msg, flags, &j, &err) != 0)
		return; /* a value JSON cannot show (a Timestamp out of range) */
	char *text = json_dumps(j, JSON_DUMP_NUMBERS | JSON_COMPACT);
	free(text);
	ProtobufCMessage *back = NULL;
	if (json_to_message(j, msg->descriptor, &back, &err) != 0)
		abort(); /* monctl printed what it cannot read */
	protobuf_c_message_free_unpacked(back, NULL);
	json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2 || size > 65536)
		return 0;
	const ProtobufCMessageDescriptor *desc = pick_type(data[0]);
	struct mon_error err;
	if (data[1] & 1) {
		ProtobufCMessage *msg = protobuf_c_message_unpack(desc, NULL, size - 2, data + 2);
		if (msg == NULL)
			return 0;
		print_and_read_back(msg, (data[1] & 2) ? JSON_PRINT_DEFAULTS : 0);
		protobuf_c_message_free_unpacked(msg, NULL);
		return 0;
	}
	json_error_t jerr;
	json_t *j = json_loadb((const char *)data + 2, size - 2, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (j == NULL)
		return 0;
	ProtobufCMessage *msg = NULL;
	if (json_to_message(j, desc, &msg, &err) == 0) {
		print_and_read_back(msg, (data[1] & 2) ? JSON_PRINT_DEFAULTS : 0);
		protobuf_c_message_free_unpacked(msg, NULL);
	}
	json_decref(j);
	return 0;
}
