/*
 * Secret sealing (src/crypto/seal.c): a sealed secret opens with the same
 * key and context only; the text format; tampering, truncation and
 * malformed texts are refused; key files are read strictly; a key ring
 * seals with its newest version and opens every version it holds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "crypto/seal.h"

static const struct seal_context ctx_secret = {"tb_integration_health", "webhook_secret", "int-1"};

static struct seal_key *key_of(unsigned char fill, uint32_t version)
{
	unsigned char bytes[SEAL_KEY_BYTES];
	memset(bytes, fill, sizeof(bytes));
	struct seal_key *k = NULL;
	struct mon_error err = {0};
	assert_int_equal(seal_key_from_bytes(bytes, version, &k, &err), 0);
	return k;
}

static char *seal_str(const struct seal_key *k, const struct seal_context *ctx, const char *s)
{
	char *out = NULL;
	struct mon_error err = {0};
	assert_int_equal(seal_text(k, ctx, (const unsigned char *)s, strlen(s), &out, &err), 0);
	return out;
}

static int open_str(const struct seal_key *k, const struct seal_context *ctx, const char *sealed, char *buf,
                    size_t buf_len)
{
	unsigned char *plain = NULL;
	size_t n = 0;
	struct mon_error err = {0};
	int rc = seal_open(k, ctx, sealed, &plain, &n, &err);
	if (rc == 0) {
		assert_true(n < buf_len);
		memcpy(buf, plain, n + 1);
		seal_plain_free(plain);
	} else {
		assert_null(plain);
		assert_true(err.msg[0] != '\0');
	}
	return rc;
}

static void test_seal_round_trip(void **state)
{
	struct seal_key *k = key_of(7, 1);
	char *sealed = seal_str(k, &ctx_secret, "whsec-correct-horse");
	assert_int_equal(strncmp(sealed, "v1:", 3), 0);
	assert_null(strstr(sealed, "correct-horse"));
	char buf[64];
	assert_int_equal(open_str(k, &ctx_secret, sealed, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "whsec-correct-horse");
	/* A fresh nonce each time: sealing twice gives two texts. */
	char *again = seal_str(k, &ctx_secret, "whsec-correct-horse");
	assert_string_not_equal(sealed, again);
	free(again);
	free(sealed);
	/* Empty secrets seal too. */
	sealed = seal_str(k, &ctx_secret, "");
	assert_int_equal(open_str(k, &ctx_secret, sealed, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
	free(sealed);
	seal_key_free(k);
}

static void test_seal_bound_to_context(void **state)
{
	struct seal_key *k = key_of(7, 1);
	char *sealed = seal_str(k, &ctx_secret, "s3cret");
	char buf[64];
	struct seal_context other_row = {"tb_integration_health", "webhook_secret", "int-2"};
	struct seal_context other_col = {"tb_integration_health", "authentication", "int-1"};
	struct seal_context other_table = {"tb_other", "webhook_secret", "int-1"};
	/* Length-prefixed parts: moving characters between them changes the data. */
	struct seal_context shifted = {"tb_integration_health", "webhook_secretint", "-1"};
	assert_int_equal(open_str(k, &other_row, sealed, buf, sizeof(buf)), MON_EPRECOND);
	assert_int_equal(open_str(k, &other_col, sealed, buf, sizeof(buf)), MON_EPRECOND);
	assert_int_equal(open_str(k, &other_table, sealed, buf, sizeof(buf)), MON_EPRECOND);
	assert_int_equal(open_str(k, &shifted, sealed, buf, sizeof(buf)), MON_EPRECOND);
	struct seal_key *other_key = key_of(8, 1);
	assert_int_equal(open_str(other_key, &ctx_secret, sealed, buf, sizeof(buf)), MON_EPRECOND);
	/* A version-2 key does not open a version-1 text, even with the same bytes. */
	struct seal_key *v2 = key_of(7, 2);
	assert_int_equal(open_str(v2, &ctx_secret, sealed, buf, sizeof(buf)), MON_EPRECOND);
	char *sealed2 = seal_str(v2, &ctx_secret, "s3cret");
	assert_int_equal(strncmp(sealed2, "v2:", 3), 0);
	/* Relabelled as version 1, it does not open under the version-1 key: the version is authenticated. */
	sealed2[1] = '1';
	assert_int_equal(open_str(k, &ctx_secret, sealed2, buf, sizeof(buf)), MON_EPRECOND);
	free(sealed2);
	seal_key_free(v2);
	seal_key_free(other_key);
	free(sealed);
	seal_key_free(k);
}

static void test_seal_tampered_and_malformed(void **state)
{
	struct seal_key *k = key_of(9, 1);
	char *sealed = seal_str(k, &ctx_secret, "abcdefgh");
	char buf[64];
	/* Flip one ciphertext character (keeping it base64). */
	char *bad = strdup(sealed);
	size_t last = strlen(bad) - 3; /* before any padding */
	bad[last] = bad[last] == 'A' ? 'B' : 'A';
	assert_int_equal(open_str(k, &ctx_secret, bad, buf, sizeof(buf)), MON_EPRECOND);
	free(bad);
	const char *malformed[] = {"",         "v1",      "v1:",          "x1:AAAA:AAAA",      "v:AAAA:AAAA",
	                           "v0:A:A",   "v1:AAAA", "v1:!!!!:AAAA", "v1:AAAA:AAAA:AAAA", "v12345678901:AAAA:AAAA",
	                           "plaintext"};
	for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
		int rc = open_str(k, &ctx_secret, malformed[i], buf, sizeof(buf));
		if (rc != MON_EINVAL)
			fail_msg("\"%s\": got %d, want MON_EINVAL", malformed[i], rc);
	}
	/* Truncated ciphertext: shorter than the tag. */
	char *cut = strdup(sealed);
	char *colon = strrchr(cut, ':');
	memcpy(colon + 1, "AAAA", 5);
	assert_int_equal(open_str(k, &ctx_secret, cut, buf, sizeof(buf)), MON_EINVAL);
	free(cut);
	/* Missing context parts are refused. */
	struct seal_context no_row = {"tb_integration_health", "webhook_secret", ""};
	unsigned char *plain = NULL;
	size_t n = 0;
	assert_int_equal(seal_open(k, &no_row, sealed, &plain, &n, NULL), MON_EINVAL);
	char *out = NULL;
	assert_int_equal(seal_text(k, &no_row, (const unsigned char *)"x", 1, &out, NULL), MON_EINVAL);
	assert_null(out);
	free(sealed);
	seal_key_free(k);
}

static void test_seal_size_cap(void **state)
{
	struct seal_key *k = key_of(1, 1);
	unsigned char *big = calloc(1, SEAL_PLAIN_MAX + 1);
	char *out = NULL;
	struct mon_error err = {0};
	assert_int_equal(seal_text(k, &ctx_secret, big, SEAL_PLAIN_MAX + 1, &out, &err), MON_EINVAL);
	assert_int_equal(seal_text(k, &ctx_secret, big, SEAL_PLAIN_MAX, &out, &err), 0);
	unsigned char *plain = NULL;
	size_t n = 0;
	assert_int_equal(seal_open(k, &ctx_secret, out, &plain, &n, &err), 0);
	assert_int_equal(n, SEAL_PLAIN_MAX);
	seal_plain_free(plain);
	free(out);
	free(big);
	seal_key_free(k);
}

static char *write_temp(const char *content)
{
	char *path = strdup("/tmp/test_seal_keyXXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
	return path;
}

static void test_seal_key_file(void **state)
{
	const char *hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
	char content[80];
	snprintf(content, sizeof(content), "%s\n", hex);
	char *path = write_temp(content);
	struct seal_key *k = NULL;
	struct mon_error err = {0};
	assert_int_equal(seal_key_load(path, &k, &err), 0);
	unlink(path);
	free(path);
	/* The same bytes given directly make a key that opens what it sealed. */
	unsigned char bytes[SEAL_KEY_BYTES];
	for (int i = 0; i < SEAL_KEY_BYTES; i++)
		bytes[i] = (unsigned char)i;
	struct seal_key *same = NULL;
	assert_int_equal(seal_key_from_bytes(bytes, 1, &same, &err), 0);
	char *sealed = seal_str(k, &ctx_secret, "from-file");
	char buf[32];
	assert_int_equal(open_str(same, &ctx_secret, sealed, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "from-file");
	free(sealed);
	seal_key_free(same);
	seal_key_free(k);

	const char *bad[] = {"", "0011", "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
	                     "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f00\n",
	                     "000102030405060708090a0b0c0d0e0f 101112131415161718191a1b1c1d1e1f\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		path = write_temp(bad[i]);
		k = NULL;
		assert_int_equal(seal_key_load(path, &k, &err), MON_EINVAL);
		assert_null(k);
		assert_non_null(strstr(err.msg, path));
		unlink(path);
		free(path);
	}
	assert_int_equal(seal_key_load("/nonexistent/monitord.key", &k, &err), MON_EINVAL);
}

static void test_seal_key_ring(void **state)
{
	const char *hex1 = "0101010101010101010101010101010101010101010101010101010101010101";
	const char *hex2 = "0202020202020202020202020202020202020202020202020202020202020202";
	unsigned char b1[SEAL_KEY_BYTES];
	memset(b1, 1, sizeof(b1));
	struct seal_key *old = NULL;
	struct mon_error err = {0};
	assert_int_equal(seal_key_from_bytes(b1, 1, &old, &err), 0);
	char *sealed_v1 = seal_str(old, &ctx_secret, "old-secret");

	/* Version 2 added: it seals, and version 1 still opens what it sealed. */
	char content[512];
	snprintf(content, sizeof(content), "# rotated\n1 %s\n\n  2\t%s  \n", hex1, hex2);
	char *path = write_temp(content);
	struct seal_key *ring = NULL;
	assert_int_equal(seal_key_load(path, &ring, &err), 0);
	unlink(path);
	free(path);
	assert_int_equal(seal_key_version(ring), 2);
	char buf[64];
	assert_int_equal(open_str(ring, &ctx_secret, sealed_v1, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "old-secret");
	char *sealed_v2 = seal_str(ring, &ctx_secret, "new-secret");
	assert_int_equal(strncmp(sealed_v2, "v2:", 3), 0);
	assert_int_equal(open_str(ring, &ctx_secret, sealed_v2, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "new-secret");
	/* The old key alone cannot open version 2; once version 1 is dropped, its texts do not open. */
	assert_int_equal(open_str(old, &ctx_secret, sealed_v2, buf, sizeof(buf)), MON_EPRECOND);
	snprintf(content, sizeof(content), "2 %s\n", hex2);
	path = write_temp(content);
	struct seal_key *only2 = NULL;
	assert_int_equal(seal_key_load(path, &only2, &err), 0);
	unlink(path);
	free(path);
	assert_int_equal(open_str(only2, &ctx_secret, sealed_v1, buf, sizeof(buf)), MON_EPRECOND);
	assert_int_equal(open_str(only2, &ctx_secret, sealed_v2, buf, sizeof(buf)), 0);

	/* Refused: a version twice, a bare key among versioned ones, version 0, no key at all. */
	char twice[256], mixed[256], zero[128];
	snprintf(twice, sizeof(twice), "1 %s\n1 %s\n", hex1, hex2);
	snprintf(mixed, sizeof(mixed), "%s\n2 %s\n", hex1, hex2);
	snprintf(zero, sizeof(zero), "0 %s\n", hex1);
	const char *bad[] = {twice, mixed, zero, "# nothing here\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		path = write_temp(bad[i]);
		struct seal_key *k = NULL;
		if (seal_key_load(path, &k, &err) != MON_EINVAL)
			fail_msg("key file %zu loaded", i);
		assert_null(k);
		assert_null(strstr(err.msg, "0101")); /* never key material */
		unlink(path);
		free(path);
	}
	free(sealed_v1);
	free(sealed_v2);
	seal_key_free(only2);
	seal_key_free(ring);
	seal_key_free(old);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_seal_round_trip),
	        cmocka_unit_test(test_seal_bound_to_context),
	        cmocka_unit_test(test_seal_tampered_and_malformed),
	        cmocka_unit_test(test_seal_size_cap),
	        cmocka_unit_test(test_seal_key_file),
	        cmocka_unit_test(test_seal_key_ring),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
