/*
 * The pure parts of server/access/identity.c: the API key format (a good token
 * round-trips; a wrong prefix, a bad key id, bad base64 and a secret of the
 * wrong length are each refused as MON_EUNAUTH), role names, and the
 * stored hash, which is never the secret itself.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "access/identity.h"

static const char *const good_id = "0123456789abcdef";

static void make_token(char token[IDENTITY_TOKEN_MAX], unsigned char secret[32])
{
	struct mon_error err = {0};
	randombytes_buf(secret, 32);
	assert_int_equal(identity_token_format(good_id, secret, token, &err), 0);
}

static void expect_refused(const char *token)
{
	char id[IDENTITY_KEY_ID_LEN + 1];
	unsigned char secret[32];
	struct mon_error err = {0};
	assert_int_equal(identity_token_parse(token, id, secret, &err), MON_EUNAUTH);
	assert_int_equal(err.code, MON_EUNAUTH);
	assert_true(strncmp(err.msg, "malformed API key", 17) == 0);
	/* The message never repeats the token. */
	if (token != NULL && strlen(token) > 8)
		assert_null(strstr(err.msg, token));
}

static void test_identity_token_round_trip(void **state)
{
	char token[IDENTITY_TOKEN_MAX];
	unsigned char secret[32], parsed[32];
	char id[IDENTITY_KEY_ID_LEN + 1];
	struct mon_error err = {0};
	make_token(token, secret);
	assert_int_equal(strlen(token), 3 + 16 + 1 + 43);
	assert_memory_equal(token, "mk_0123456789abcdef_", 20);
	assert_int_equal(identity_token_parse(token, id, parsed, &err), 0);
	assert_string_equal(id, good_id);
	assert_memory_equal(parsed, secret, 32);
}

static void test_identity_token_secret_with_separator_chars(void **state)
{
	/* base64url uses '_' and '-': the secret may contain the separator. */
	unsigned char secret[32];
	memset(secret, 0xff, sizeof(secret)); /* "____...": all underscores */
	char token[IDENTITY_TOKEN_MAX];
	unsigned char parsed[32];
	char id[IDENTITY_KEY_ID_LEN + 1];
	struct mon_error err = {0};
	assert_int_equal(identity_token_format(good_id, secret, token, &err), 0);
	assert_int_equal(identity_token_parse(token, id, parsed, &err), 0);
	assert_memory_equal(parsed, secret, 32);
}

static void test_identity_token_wrong_prefix(void **state)
{
	char token[IDENTITY_TOKEN_MAX];
	unsigned char secret[32];
	make_token(token, secret);
	token[0] = 'x';
	expect_refused(token);
	make_token(token, secret);
	token[2] = '-';
	expect_refused(token);
	expect_refused("Bearer mk_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
	expect_refused("");
	expect_refused(NULL);
}

static void test_identity_token_bad_key_id(void **state)
{
	char token[IDENTITY_TOKEN_MAX];
	unsigned char secret[32];
	make_token(token, secret);
	/* Too short: 15 hex digits. */
	char shorter[IDENTITY_TOKEN_MAX * 2];
	snprintf(shorter, sizeof(shorter), "mk_0123456789abcde_%s", token + 20);
	expect_refused(shorter);
	/* Too long: 17 hex digits. */
	char longer[IDENTITY_TOKEN_MAX * 2];
	snprintf(longer, sizeof(longer), "mk_0123456789abcdef0_%s", token + 20);
	expect_refused(longer);
	/* Not hex, and uppercase hex. */
	make_token(token, secret);
	token[5] = 'g';
	expect_refused(token);
	make_token(token, secret);
	token[5] = 'A';
	expect_refused(token);
}

static void test_identity_token_bad_base64(void **state)
{
	char token[IDENTITY_TOKEN_MAX];
	unsigned char secret[32];
	make_token(token, secret);
	token[25] = '+'; /* standard base64, not base64url */
	expect_refused(token);
	make_token(token, secret);
	token[30] = '=';
	expect_refused(token);
	make_token(token, secret);
	token[40] = '!';
	expect_refused(token);
}

static void test_identity_token_wrong_secret_length(void **state)
{
	char token[IDENTITY_TOKEN_MAX];
	unsigned char secret[32];
	make_token(token, secret);
	char longer[IDENTITY_TOKEN_MAX * 2];
	snprintf(longer, sizeof(longer), "%sA", token);
	expect_refused(longer);
	token[strlen(token) - 1] = '\0';
	expect_refused(token);
	/* 31 bytes, correctly encoded. */
	char b64[64];
	sodium_bin2base64(b64, sizeof(b64), secret, 31, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char short_secret[IDENTITY_TOKEN_MAX * 2];
	snprintf(short_secret, sizeof(short_secret), "mk_%s_%s", good_id, b64);
	expect_refused(short_secret);
	/* A token longer than any buffer. */
	char huge[512];
	memset(huge, 'a', sizeof(huge) - 1);
	huge[sizeof(huge) - 1] = '\0';
	memcpy(huge, "mk_", 3);
	expect_refused(huge);
}

static void test_identity_role_parse(void **state)
{
	enum rpc_role role = RPC_ROLE_NONE;
	assert_int_equal(identity_role_parse("viewer", &role), 0);
	assert_int_equal(role, RPC_ROLE_VIEWER);
	assert_int_equal(identity_role_parse("editor", &role), 0);
	assert_int_equal(role, RPC_ROLE_EDITOR);
	assert_int_equal(identity_role_parse("admin", &role), 0);
	assert_int_equal(role, RPC_ROLE_ADMIN);
	assert_int_equal(identity_role_parse("Admin", &role), MON_EINVAL);
	assert_int_equal(identity_role_parse("none", &role), MON_EINVAL);
	assert_int_equal(identity_role_parse("", &role), MON_EINVAL);
	assert_int_equal(identity_role_parse(NULL, &role), MON_EINVAL);
}

static void test_identity_hash_is_not_the_secret(void **state)
{
	for (int i = 0; i < 64; i++) {
		unsigned char secret[32], hash[32], again[32], expect[32];
		randombytes_buf(secret, sizeof(secret));
		identity_secret_hash(secret, hash);
		assert_memory_not_equal(hash, secret, 32);
		/* Deterministic, and BLAKE2b-256 without a key. */
		identity_secret_hash(secret, again);
		assert_memory_equal(hash, again, 32);
		crypto_generichash(expect, sizeof(expect), secret, sizeof(secret), NULL, 0);
		assert_memory_equal(hash, expect, 32);
	}
	/* Even an all-zero secret does not hash to itself. */
	unsigned char zero[32] = {0}, hash[32];
	identity_secret_hash(zero, hash);
	assert_memory_not_equal(hash, zero, 32);
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_identity_token_round_trip),
	        cmocka_unit_test(test_identity_token_secret_with_separator_chars),
	        cmocka_unit_test(test_identity_token_wrong_prefix),
	        cmocka_unit_test(test_identity_token_bad_key_id),
	        cmocka_unit_test(test_identity_token_bad_base64),
	        cmocka_unit_test(test_identity_token_wrong_secret_length),
	        cmocka_unit_test(test_identity_role_parse),
	        cmocka_unit_test(test_identity_hash_is_not_the_secret),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
