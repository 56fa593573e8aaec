/* Unit tests for the arena allocator and error helpers (src/util). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/arena.h"
#include "util/error.h"

static void test_arena_alignment_and_reuse(void **state)
{
	(void)state;
	struct arena *a = arena_create(0);
	assert_non_null(a);
	for (size_t i = 1; i < 200; i++) {
		void *p = arena_alloc(a, i);
		assert_non_null(p);
		assert_int_equal((uintptr_t)p % 16, 0);
		memset(p, 0xab, i);
	}
	arena_destroy(a);
	arena_destroy(NULL);
}

static void test_arena_cap_is_hard(void **state)
{
	(void)state;
	struct arena *a = arena_create(1024);
	assert_non_null(arena_alloc(a, 1000));
	assert_null(arena_alloc(a, 100));      /* 1008 + 112 > 1024 */
	assert_non_null(arena_alloc(a, 16));   /* still room for this */
	assert_null(arena_alloc(a, SIZE_MAX)); /* overflow is refused, not wrapped */
	assert_null(arena_calloc(a, SIZE_MAX / 2, 4));
	assert_true(arena_used(a) <= 1024);
	arena_destroy(a);
}

static void test_arena_big_blocks_and_strings(void **state)
{
	(void)state;
	struct arena *a = arena_create(0);
	char *small = arena_strdup(a, "hello");
	char *big = arena_alloc(a, 3 * 1024 * 1024);
	assert_non_null(big);
	memset(big, 1, 3 * 1024 * 1024);
	char *after = arena_printf(a, "%s-%d", small, 42);
	assert_string_equal(after, "hello-42");
	assert_string_equal(arena_strndup(a, "abcdef", 3), "abc");
	assert_null(arena_strdup(a, NULL));
	arena_destroy(a);
}

static void test_arena_str_grows_without_truncating(void **state)
{
	(void)state;
	struct arena *a = arena_create(0);
	struct arena_str s;
	arena_str_init(&s, a);
	assert_string_equal(arena_str_get(&s), "");
	/* Far past any fixed buffer a list literal used to be built in. */
	arena_str_append(&s, "{");
	for (int i = 0; i < 5000; i++)
		arena_str_printf(&s, "%s%d", i ? "," : "", i);
	arena_str_append(&s, "}");
	const char *text = arena_str_get(&s);
	assert_non_null(text);
	assert_int_equal(strlen(text), s.len);
	/* every number in order: a piece formatted across a growth is whole */
	const char *p = text + 1;
	for (int i = 0; i < 5000; i++) {
		char *end = NULL;
		assert_int_equal(strtol(p, &end, 10), i);
		assert_int_equal(*end, i < 4999 ? ',' : '}');
		p = end + 1;
	}
	assert_int_equal(*p, '\0');
	arena_destroy(a);
}

static void test_arena_str_failure_sticks(void **state)
{
	(void)state;
	struct arena *a = arena_create(1024);
	struct arena_str s;
	arena_str_init(&s, a);
	arena_str_append(&s, "start ");
	for (int i = 0; i < 200; i++)
		arena_str_printf(&s, "item-%d ", i); /* passes the 1 KiB cap */
	assert_true(s.is_failed);
	assert_null(arena_str_get(&s));
	arena_str_append(&s, "x"); /* later appends do nothing */
	assert_null(arena_str_get(&s));
	arena_destroy(a);

	a = arena_create(0);
	arena_str_init(&s, a);
	arena_str_append(&s, "a");
	arena_str_append(&s, NULL); /* a NULL piece (a failed arena_printf) fails the whole */
	arena_str_append(&s, "b");
	assert_null(arena_str_get(&s));
	arena_destroy(a);
}

static void test_arena_protobuf_allocator(void **state)
{
	(void)state;
	struct arena *a = arena_create(0);
	ProtobufCAllocator al = arena_protobuf_allocator(a);
	void *p = al.alloc(al.allocator_data, 100);
	assert_non_null(p);
	al.free(al.allocator_data, p); /* no-op: freed with the arena */
	arena_destroy(a);
}

static void test_error_set_prefix_and_names(void **state)
{
	(void)state;
	struct mon_error err = {0};
	assert_int_equal(mon_error_set(&err, MON_EINVAL, "must be %s", "finite"), MON_EINVAL);
	mon_error_prefix(&err, "threshold");
	assert_string_equal(err.msg, "threshold: must be finite");
	assert_int_equal(mon_error_set(NULL, MON_ENOTFOUND, "x"), MON_ENOTFOUND);
	/* A long message keeps the prefix and is truncated at the tail. */
	char longmsg[700];
	memset(longmsg, 'x', sizeof(longmsg) - 1);
	longmsg[sizeof(longmsg) - 1] = '\0';
	mon_error_set(&err, MON_EINVAL, "%s", longmsg);
	mon_error_prefix(&err, "field");
	assert_memory_equal(err.msg, "field: xxx", 10);
	assert_int_equal(strlen(err.msg), sizeof(err.msg) - 1);
	mon_error_clear(&err);
	assert_int_equal(err.code, 0);
	assert_string_equal(err.msg, "");
	assert_string_equal(mon_error_name(MON_EUNAVAIL), "EUNAVAIL");
	assert_string_equal(mon_error_name(12345), "EUNKNOWN");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_arena_alignment_and_reuse),
	        cmocka_unit_test(test_arena_cap_is_hard),
	        cmocka_unit_test(test_arena_big_blocks_and_strings),
	        cmocka_unit_test(test_arena_protobuf_allocator),
	        cmocka_unit_test(test_error_set_prefix_and_names),
	        cmocka_unit_test(test_arena_str_grows_without_truncating),
	        cmocka_unit_test(test_arena_str_failure_sticks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
