/*
 * Fuzz target: how a watch stream takes its resume cursor (server/stream/).
 * Resume cursors travel as int64 fields of the Watch*Request messages, so
 * the untrusted part is the request: the first byte picks WatchAlerts,
 * WatchServiceHealth or WatchMetrics, the rest is its request, checked and
 * decoded as the RPC runtime does. Then what the stream does with the
 * cursor and heartbeat before any database work: the heartbeat period must
 * stay within 5 s..1 day, and the StreamControl that hands the cursor back
 * (RESUME_REQUIRED and friends) must encode and decode to the same cursor.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "monitoring/v1/alerts.pb-c.h"
#include "monitoring/v1/health.pb-c.h"
#include "monitoring/v1/metrics.pb-c.h"
#include "rpc/validate.h"
#include "stream/stream.h"
#include "util/arena.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int64_t int64_field(const ProtobufCMessage *m, const char *name)
{
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
	if (f == NULL)
		abort();
	int64_t v;
	memcpy(&v, (const char *)m + f->offset, sizeof(v));
	return v;
}

static int32_t int32_field(const ProtobufCMessage *m, const char *name)
{
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
	if (f == NULL)
		abort();
	int32_t v;
	memcpy(&v, (const char *)m + f->offset, sizeof(v));
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const ProtobufCMessageDescriptor *const requests[] = {
	        &monitoring__v1__watch_alerts_request__descriptor,
	        &monitoring__v1__watch_service_health_request__descriptor,
	        &monitoring__v1__watch_metrics_request__descriptor,
	};
	static const ProtobufCMessageDescriptor *const responses[] = {
	        &monitoring__v1__watch_alerts_response__descriptor,
	        &monitoring__v1__watch_service_health_response__descriptor,
	        &monitoring__v1__watch_metrics_response__descriptor,
	};
	if (size == 0)
		return 0;
	size_t pick = data[0] % 3;
	struct mon_error err;
	if (rpc_validate_request(requests[pick], data + 1, size - 1, &err) != 0)
		return 0;
	struct arena *a = arena_create(1u << 20);
	if (a == NULL)
		return 0;
	ProtobufCAllocator alloc = arena_protobuf_allocator(a);
	ProtobufCMessage *req = protobuf_c_message_unpack(requests[pick], &alloc, size - 1, data + 1);
	if (req == NULL)
		goto out;
	int64_t cursor = int64_field(req, "resume_after_sequence");
	int32_t heartbeat_s = int32_field(req, "heartbeat_interval");
	if (cursor < 0 || heartbeat_s < 0)
		goto out; /* refused by stream_watch */
	int64_t heartbeat_ms = stream_heartbeat_ms(heartbeat_s, 30, 5);
	if (heartbeat_ms < 5000 || heartbeat_ms > 86400000)
		abort();

	struct stream_kind kind = {.name = "fuzz", .response = responses[pick]};
	int ctl_kind = (int)(size % 6), reason = (int)(cursor & 7);
	ProtobufCMessage *m = stream_control_msg(&kind, a, ctl_kind, cursor, reason, "resume after the cursor");
	if (m == NULL)
		goto out;
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = arena_alloc(a, len + 1);
	if (buf == NULL || protobuf_c_message_pack(m, buf) != len)
		abort();
	ProtobufCMessage *back = protobuf_c_message_unpack(responses[pick], &alloc, len, buf);
	if (back == NULL || int64_field(back, "sequence") != cursor)
		abort();
	const ProtobufCFieldDescriptor *cf =
	        protobuf_c_message_descriptor_get_field_by_name(back->descriptor, "control");
	const Monitoring__V1__StreamControl *ctl = NULL;
	memcpy(&ctl, (const char *)back + cf->offset, sizeof(ctl));
	if (ctl == NULL || ctl->resume_after_sequence != cursor || (int)ctl->kind != ctl_kind)
		abort();
out:
	arena_destroy(a);
	return 0;
}
