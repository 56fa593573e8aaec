/* Unit tests for the pure parts of the RPC runtime: status mapping and the wire reader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "rpc/status.h"
#include "rpc/wire.h"
#include "util/error.h"

static void test_rpc_status_maps_every_code_both_ways(void **state)
{
	(void)state;
	static const struct {
		int mon;
		int grpc;
	} map[] = {
	        {MON_OK, 0},        {MON_EINVAL, 3},   {MON_ENOTFOUND, 5},  {MON_EEXIST, 6},    {MON_EPRECOND, 9},
	        {MON_EPERM, 7},     {MON_EUNAUTH, 16}, {MON_ELIMIT, 8},     {MON_EUNAVAIL, 14}, {MON_EDEADLINE, 4},
	        {MON_EABORTED, 10}, {MON_EUNIMPL, 12}, {MON_ECANCELLED, 1},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		assert_int_equal(rpc_status_from_mon(map[i].mon), map[i].grpc);
		assert_int_equal(rpc_status_to_mon(map[i].grpc), map[i].mon);
	}
	/* Our own failures are INTERNAL, never UNKNOWN. */
	assert_int_equal(rpc_status_from_mon(MON_EINTERNAL), 13);
	assert_int_equal(rpc_status_from_mon(-999), 13);
	assert_int_equal(rpc_status_from_mon(MON_ENOMEM), 8);
	/* UNKNOWN is kept for a change whose outcome is in doubt. */
	assert_int_equal(rpc_status_from_mon(MON_EINDOUBT), 2);
	assert_string_equal(rpc_status_name(3), "INVALID_ARGUMENT");
	assert_string_equal(rpc_status_name(16), "UNAUTHENTICATED");
	assert_string_equal(rpc_status_name(17), "UNKNOWN");
	assert_string_equal(rpc_status_name(-1), "UNKNOWN");
}

static void test_rpc_wire_reads_fields(void **state)
{
	(void)state;
	/* field 1 varint 150, field 2 "hi", field 3 fixed32, field 4 fixed64 */
	const unsigned char msg[] = {0x08, 0x96, 0x01, 0x12, 0x02, 'h', 'i', 0x1d, 1, 0, 0,
	                             0,    0x21, 2,    0,    0,    0,   0,   0,    0, 0};
	struct wire_reader r = {msg, msg + sizeof(msg)};
	struct wire_field f;
	assert_int_equal(wire_next(&r, &f), 1);
	assert_int_equal(f.number, 1);
	assert_int_equal(f.value, 150);
	assert_int_equal(wire_next(&r, &f), 1);
	assert_int_equal(f.type, WIRE_LEN);
	assert_int_equal(f.len, 2);
	assert_memory_equal(f.data, "hi", 2);
	assert_int_equal(wire_next(&r, &f), 1);
	assert_int_equal(f.value, 1);
	assert_int_equal(wire_next(&r, &f), 1);
	assert_int_equal(f.value, 2);
	assert_int_equal(wire_next(&r, &f), 0);
}

static void test_rpc_wire_rejects_malformed(void **state)
{
	(void)state;
	const unsigned char truncated_len[] = {0x12, 0x05, 'a'};
	const unsigned char truncated_varint[] = {0x08, 0x80};
	const unsigned char field_zero[] = {0x00, 0x01};
	const unsigned char group[] = {0x0b};
	const unsigned char overlong[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
	const unsigned char huge_len[] = {0x12, 0xff, 0xff, 0xff, 0xff, 0x0f};
	const struct {
		const unsigned char *p;
		size_t n;
	} cases[] = {
	        {truncated_len, sizeof(truncated_len)}, {truncated_varint, sizeof(truncated_varint)},
	        {field_zero, sizeof(field_zero)},       {group, sizeof(group)},
	        {overlong, sizeof(overlong)},           {huge_len, sizeof(huge_len)},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct wire_reader r = {cases[i].p, cases[i].p + cases[i].n};
		struct wire_field f;
		int rc;
		while ((rc = wire_next(&r, &f)) > 0)
			;
		assert_int_equal(rc, MON_EINVAL);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rpc_status_maps_every_code_both_ways),
	        cmocka_unit_test(test_rpc_wire_reads_fields),
	        cmocka_unit_test(test_rpc_wire_rejects_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
