/*
 * What the RPC runtime's string check (src/rpc/validate.c) costs next to
 * the decoding it precedes: a RecordMetrics batch of 5000 points with the
 * fields an agent sends (time, name, endpoint, method, status, counts,
 * latencies, three tags), serialized
 * once, then checked and decoded (into an arena, as the server does) many
 * times. Prints microseconds per batch
 * for each, and the ratio. No server, no database.
 *
 *   validate_bench [iterations]      (default 200)
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "monitoring/v1/metrics.pb-c.h"
#include "rpc/validate.h"
#include "util/arena.h"

#define POINTS 5000

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
	long iterations = argc > 1 ? strtol(argv[1], NULL, 10) : 200;
	if (iterations <= 0)
		iterations = 200;
	static Monitoring__V1__MetricPoint pts[POINTS];
	static Monitoring__V1__MetricPoint *pp[POINTS];
	static Monitoring__V1__MetricPoint__TagsEntry tags[POINTS][3];
	static Monitoring__V1__MetricPoint__TagsEntry *tp[POINTS][3];
	static char endpoints[POINTS][48];
	Google__Protobuf__Timestamp when = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	when.seconds = 1796000000;
	Google__Protobuf__Int32Value status = GOOGLE__PROTOBUF__INT32_VALUE__INIT;
	status.value = 200;
	Google__Protobuf__DoubleValue lat[6];
	for (int k = 0; k < 6; k++) {
		google__protobuf__double_value__init(&lat[k]);
		lat[k].value = 1.5 * (k + 1);
	}
	static const char *const keys[3] = {"region", "host", "version"};
	static const char *const values[3] = {"eu-west-1", "api-7f9c4d-x2k8p", "2026.12.1"};
	for (int i = 0; i < POINTS; i++) {
		monitoring__v1__metric_point__init(&pts[i]);
		snprintf(endpoints[i], sizeof(endpoints[i]), "/api/v2/orders/%d/items", i % 100);
		pts[i].metric_name = "http.server.latency";
		pts[i].endpoint = endpoints[i];
		pts[i].method = "GET";
		pts[i].request_count = 100;
		pts[i].time = &when;
		pts[i].status_code = &status;
		pts[i].min = &lat[0];
		pts[i].p50 = &lat[1];
		pts[i].p95 = &lat[2];
		pts[i].p99 = &lat[3];
		pts[i].max = &lat[4];
		pts[i].mean = &lat[5];
		for (int k = 0; k < 3; k++) {
			monitoring__v1__metric_point__tags_entry__init(&tags[i][k]);
			tags[i][k].key = (char *)keys[k];
			tags[i][k].value = (char *)values[k];
			tp[i][k] = &tags[i][k];
		}
		pts[i].n_tags = 3;
		pts[i].tags = tp[i];
		pp[i] = &pts[i];
	}
	Monitoring__V1__RecordMetricsRequest req = MONITORING__V1__RECORD_METRICS_REQUEST__INIT;
	req.n_points = POINTS;
	req.points = pp;
	size_t len = protobuf_c_message_get_packed_size(&req.base);
	uint8_t *wire = malloc(len);
	if (wire == NULL)
		return 1;
	protobuf_c_message_pack(&req.base, wire);

	struct mon_error err;
	double t0 = now_us();
	for (long i = 0; i < iterations; i++) {
		if (rpc_validate_request(req.base.descriptor, wire, len, &err) != 0) {
			fprintf(stderr, "validate_bench: refused: %s\n", err.msg);
			return 1;
		}
	}
	double check_us = (now_us() - t0) / (double)iterations;
	t0 = now_us();
	for (long i = 0; i < iterations; i++) {
		/* As the server decodes: into a per-call arena. */
		struct arena *a = arena_create(64u << 20);
		ProtobufCAllocator alloc = arena_protobuf_allocator(a);
		ProtobufCMessage *m =
		        a != NULL ? protobuf_c_message_unpack(req.base.descriptor, &alloc, len, wire) : NULL;
		arena_destroy(a);
		if (m == NULL)
			return 1;
	}
	double decode_us = (now_us() - t0) / (double)iterations;
	printf("%d points, %zu bytes: check %.0f us, decode %.0f us per batch (check = %.0f%% of decode)\n", POINTS,
	       len, check_us, decode_us, 100.0 * check_us / decode_us);
	free(wire);
	return 0;
}
