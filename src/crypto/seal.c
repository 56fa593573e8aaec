/*
 * Secret sealing (crypto/seal.h): the master key, and sealing and opening
 * of secrets as text with XChaCha20-Poly1305-IETF. Key bytes and opened
 * secrets live only in sodium_malloc memory, wiped when freed.
 */
#include "crypto/seal.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define SEAL_AD_LABEL "monitord-seal"
#define SEAL_KEY_FILE_MAX 4096           /* bytes of the key file */
#define SEAL_VERSION_MAX 999999          /* six digits */
#define SEAL_VERSION_IMPLICIT UINT32_MAX /* a bare key: version 1 */
#define SEAL_VERSION_DIGITS_MAX 9        /* "v" and at most 9 digits */
#define SEAL_NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define SEAL_TAG_BYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
#define SEAL_B64 sodium_base64_VARIANT_ORIGINAL

struct seal_key {
	int n;
	int seal_at; /* index of the highest version: the one that seals */
	uint32_t versions[SEAL_KEYS_MAX];
	unsigned char bytes[SEAL_KEYS_MAX][SEAL_KEY_BYTES];
};

static int sodium_ready(struct mon_error *err)
{
	if (sodium_init() < 0)
		return mon_error_set(err, MON_EINTERNAL, "could not initialise libsodium");
	return 0;
}

/* Adds a version to the ring; MON_EINVAL when it is there already or the ring is full. */
static int ring_add(struct seal_key *k, uint32_t version, const unsigned char bytes[SEAL_KEY_BYTES],
                    struct mon_error *err)
{
	for (int i = 0; i < k->n; i++)
		if (k->versions[i] == version)
			return mon_error_set(err, MON_EINVAL, "key version %u given twice", (unsigned)version);
	if (k->n == SEAL_KEYS_MAX)
		return mon_error_set(err, MON_EINVAL, "more than %d keys", SEAL_KEYS_MAX);
	k->versions[k->n] = version;
	memcpy(k->bytes[k->n], bytes, SEAL_KEY_BYTES);
	if (k->n == 0 || version > k->versions[k->seal_at])
		k->seal_at = k->n;
	k->n++;
	return 0;
}

int seal_key_from_bytes(const unsigned char bytes[SEAL_KEY_BYTES], uint32_t version, struct seal_key **out,
                        struct mon_error *err)
{
	*out = NULL;
	int rc = sodium_ready(err);
	if (rc != 0)
		return rc;
	if (version < 1 || version > SEAL_VERSION_MAX)
		return mon_error_set(err, MON_EINVAL, "key version: must be 1-%d", SEAL_VERSION_MAX);
	struct seal_key *k = sodium_malloc(sizeof(*k));
	if (k == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	memset(k, 0, sizeof(*k));
	if ((rc = ring_add(k, version, bytes, err)) != 0) {
		sodium_free(k);
		return rc;
	}
	*out = k;
	return 0;
}

uint32_t seal_key_version(const struct seal_key *key)
{
	return key->versions[key->seal_at];
}

/*
 * One line of the key file (without its newline, NUL-terminated, in
 * sodium_malloc memory): "" or a "#" comment (*version_out 0), "<64 hex>"
 * (*version_out SEAL_VERSION_IMPLICIT) or "<version> <64 hex>". -1 when
 * malformed.
 */
static int parse_line(char *line, uint32_t *version_out, unsigned char raw[SEAL_KEY_BYTES])
{
	*version_out = 0;
	while (*line == ' ' || *line == '\t')
		line++;
	size_t len = strlen(line);
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r'))
		line[--len] = '\0';
	if (len == 0 || line[0] == '#')
		return 0;
	uint32_t version = SEAL_VERSION_IMPLICIT;
	const char *hex = line;
	const char *sp = strpbrk(line, " \t");
	if (sp != NULL) {
		uint32_t v = 0;
		for (const char *p = line; p < sp; p++) {
			if (*p < '0' || *p > '9' || p - line >= 6)
				return -1;
			v = v * 10 + (uint32_t)(*p - '0');
		}
		if (v < 1)
			return -1;
		version = v;
		hex = sp;
		while (*hex == ' ' || *hex == '\t')
			hex++;
	}
	size_t hex_len = strlen(hex);
	size_t raw_len = 0;
	const char *end = NULL;
	if (hex_len != 2 * SEAL_KEY_BYTES ||
	    sodium_hex2bin(raw, SEAL_KEY_BYTES, hex, hex_len, NULL, &raw_len, &end) != 0 || raw_len != SEAL_KEY_BYTES ||
	    end != hex + hex_len)
		return -1;
	*version_out = version;
	return 0;
}

int seal_key_load(const char *path, struct seal_key **out, struct mon_error *err)
{
	char *text = NULL;
	unsigned char *raw = NULL;
	struct seal_key *k = NULL;
	FILE *f = NULL;
	int rc = 0;
	*out = NULL;
	if ((rc = sodium_ready(err)) != 0)
		return rc;
	text = sodium_malloc(SEAL_KEY_FILE_MAX + 1);
	raw = sodium_malloc(SEAL_KEY_BYTES);
	k = sodium_malloc(sizeof(*k));
	if (text == NULL || raw == NULL || k == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	memset(k, 0, sizeof(*k));
	f = fopen(path, "rb");
	if (f == NULL) {
		rc = mon_error_set(err, MON_EINVAL, "secrets key file \"%s\": %s", path, strerror(errno));
		goto out;
	}
	size_t n = fread(text, 1, SEAL_KEY_FILE_MAX + 1, f);
	if (ferror(f) || n > SEAL_KEY_FILE_MAX) {
		rc = mon_error_set(err, MON_EINVAL, "secrets key file \"%s\": %s", path,
		                   ferror(f) ? "could not read it" : "too large");
		goto out;
	}
	text[n] = '\0';
	if (strlen(text) != n) {
		rc = mon_error_set(err, MON_EINVAL, "secrets key file \"%s\": not text", path);
		goto out;
	}
	bool has_implicit = false;
	int line_no = 0;
	for (char *line = text; line != NULL;) {
		char *nl = strchr(line, '\n');
		if (nl != NULL)
			*nl = '\0';
		line_no++;
		uint32_t version = 0;
		if (parse_line(line, &version, raw) != 0) {
			rc = mon_error_set(err, MON_EINVAL,
			                   "secrets key file \"%s\", line %d: must be 64 hex digits (32 bytes), "
			                   "optionally after a key version and a space",
			                   path, line_no);
			goto out;
		}
		if (version == SEAL_VERSION_IMPLICIT) {
			has_implicit = true;
			version = 1;
		}
		if (version != 0 && (rc = ring_add(k, version, raw, err)) != 0) {
			char where[PATH_MAX + 64];
			snprintf(where, sizeof(where), "secrets key file \"%s\", line %d", path, line_no);
			mon_error_prefix(err, where);
			goto out;
		}
		line = nl != NULL ? nl + 1 : NULL;
	}
	if (k->n == 0) {
		rc = mon_error_set(err, MON_EINVAL, "secrets key file \"%s\": holds no key", path);
		goto out;
	}
	if (has_implicit && k->n > 1) {
		rc = mon_error_set(err, MON_EINVAL,
		                   "secrets key file \"%s\": with several keys, each line names its version", path);
		goto out;
	}
	*out = k;
	k = NULL;
out:
	if (f != NULL)
		fclose(f);
	sodium_free(text);
	sodium_free(raw);
	if (k != NULL)
		sodium_free(k);
	return rc;
}

void seal_key_free(struct seal_key *key)
{
	if (key != NULL)
		sodium_free(key);
}

void seal_plain_free(unsigned char *plain)
{
	if (plain != NULL)
		sodium_free(plain);
}

static void put_part(unsigned char **p, const char *s)
{
	size_t len = s != NULL ? strlen(s) : 0;
	(*p)[0] = (unsigned char)(len >> 24);
	(*p)[1] = (unsigned char)(len >> 16);
	(*p)[2] = (unsigned char)(len >> 8);
	(*p)[3] = (unsigned char)len;
	*p += 4;
	if (len > 0)
		memcpy(*p, s, len);
	*p += len;
}

/*
 * The associated data: a label, the key version and the three context
 * strings, each preceded by its length (so no two contexts make the same
 * bytes). Malloc'd into *out; the caller frees it.
 */
static int make_ad(const struct seal_context *ctx, uint32_t version, unsigned char **out, size_t *out_len,
                   struct mon_error *err)
{
	char ver[16];
	snprintf(ver, sizeof(ver), "v%u", (unsigned)version);
	const char *parts[] = {SEAL_AD_LABEL, ver, ctx->table, ctx->column, ctx->row_id};
	size_t len = 0;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		len += 4 + (parts[i] != NULL ? strlen(parts[i]) : 0);
	unsigned char *ad = malloc(len);
	if (ad == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	unsigned char *p = ad;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		put_part(&p, parts[i]);
	*out = ad;
	*out_len = len;
	return 0;
}

static int check_context(const struct seal_context *ctx, struct mon_error *err)
{
	if (ctx == NULL || ctx->table == NULL || ctx->table[0] == '\0' || ctx->column == NULL ||
	    ctx->column[0] == '\0' || ctx->row_id == NULL || ctx->row_id[0] == '\0')
		return mon_error_set(err, MON_EINVAL, "sealing context: table, column and row id are required");
	return 0;
}

int seal_text(const struct seal_key *key, const struct seal_context *ctx, const unsigned char *plain, size_t plain_len,
              char **out, struct mon_error *err)
{
	unsigned char *ad = NULL;
	unsigned char *ct = NULL;
	char *text = NULL;
	size_t ad_len = 0;
	int rc;
	*out = NULL;
	if ((rc = check_context(ctx, err)) != 0)
		return rc;
	if (plain_len > SEAL_PLAIN_MAX)
		return mon_error_set(err, MON_EINVAL, "secret: longer than %d bytes", SEAL_PLAIN_MAX);
	uint32_t version = key->versions[key->seal_at];
	if ((rc = make_ad(ctx, version, &ad, &ad_len, err)) != 0)
		return rc;
	unsigned char nonce[SEAL_NONCE_BYTES];
	randombytes_buf(nonce, sizeof(nonce));
	size_t ct_cap = plain_len + SEAL_TAG_BYTES;
	ct = malloc(ct_cap);
	size_t nonce_b64 = sodium_base64_ENCODED_LEN(sizeof(nonce), SEAL_B64);
	size_t ct_b64 = sodium_base64_ENCODED_LEN(ct_cap, SEAL_B64);
	size_t text_cap = 2 + SEAL_VERSION_DIGITS_MAX + nonce_b64 + ct_b64 + 2;
	text = malloc(text_cap);
	if (ct == NULL || text == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	unsigned long long ct_len = 0;
	crypto_aead_xchacha20poly1305_ietf_encrypt(ct, &ct_len, plain, plain_len, ad, ad_len, NULL, nonce,
	                                           key->bytes[key->seal_at]);
	int head = snprintf(text, text_cap, "v%u:", (unsigned)version);
	size_t pos = (size_t)head;
	sodium_bin2base64(text + pos, text_cap - pos, nonce, sizeof(nonce), SEAL_B64);
	pos += strlen(text + pos);
	text[pos++] = ':';
	sodium_bin2base64(text + pos, text_cap - pos, ct, (size_t)ct_len, SEAL_B64);
	*out = text;
	text = NULL;
out:
	free(ad);
	free(ct);
	free(text);
	return rc;
}

/* Parses "v<digits>:" at the start of s; *rest points after the colon. */
static bool parse_version(const char *s, uint32_t *version, const char **rest)
{
	if (s[0] != 'v')
		return false;
	uint32_t v = 0;
	size_t i = 1;
	for (; s[i] >= '0' && s[i] <= '9'; i++) {
		if (i > SEAL_VERSION_DIGITS_MAX)
			return false;
		v = v * 10 + (uint32_t)(s[i] - '0');
	}
	if (i == 1 || s[i] != ':' || v == 0)
		return false;
	*version = v;
	*rest = s + i + 1;
	return true;
}

int seal_open(const struct seal_key *key, const struct seal_context *ctx, const char *sealed, unsigned char **plain_out,
              size_t *plain_len, struct mon_error *err)
{
	unsigned char *ad = NULL;
	unsigned char *ct = NULL;
	unsigned char *plain = NULL;
	size_t ad_len = 0;
	int rc;
	*plain_out = NULL;
	*plain_len = 0;
	if ((rc = check_context(ctx, err)) != 0)
		return rc;
	uint32_t version = 0;
	const char *rest = NULL;
	const char *colon = NULL;
	if (sealed == NULL || !parse_version(sealed, &version, &rest) || (colon = strchr(rest, ':')) == NULL)
		return mon_error_set(err, MON_EINVAL,
		                     "sealed secret: not in the format v<version>:<nonce>:<ciphertext>");
	int at = -1;
	for (int i = 0; i < key->n && at < 0; i++)
		if (key->versions[i] == version)
			at = i;
	if (at < 0)
		return mon_error_set(err, MON_EPRECOND,
		                     "sealed secret: sealed under key version %u, which the key file lacks",
		                     (unsigned)version);
	unsigned char nonce[SEAL_NONCE_BYTES];
	size_t nonce_len = 0;
	const char *end = NULL;
	if (sodium_base642bin(nonce, sizeof(nonce), rest, (size_t)(colon - rest), NULL, &nonce_len, &end, SEAL_B64) !=
	            0 ||
	    nonce_len != sizeof(nonce) || end != colon)
		return mon_error_set(err, MON_EINVAL, "sealed secret: bad nonce");
	const char *ct_text = colon + 1;
	size_t ct_text_len = strlen(ct_text);
	size_t ct_cap = ct_text_len / 4 * 3 + 3;
	if (ct_cap > SEAL_PLAIN_MAX + SEAL_TAG_BYTES + 3)
		return mon_error_set(err, MON_EINVAL, "sealed secret: too long");
	ct = malloc(ct_cap);
	if (ct == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	size_t ct_len = 0;
	if (sodium_base642bin(ct, ct_cap, ct_text, ct_text_len, NULL, &ct_len, &end, SEAL_B64) != 0 ||
	    end != ct_text + ct_text_len || ct_len < SEAL_TAG_BYTES) {
		rc = mon_error_set(err, MON_EINVAL, "sealed secret: bad ciphertext");
		goto out;
	}
	if ((rc = make_ad(ctx, version, &ad, &ad_len, err)) != 0)
		goto out;
	plain = sodium_malloc(ct_len - SEAL_TAG_BYTES + 1);
	if (plain == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	unsigned long long n = 0;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, &n, NULL, ct, ct_len, ad, ad_len, nonce,
	                                               key->bytes[at]) != 0) {
		rc = mon_error_set(err, MON_EPRECOND,
		                   "sealed secret: does not open (another key, or sealed for another row or column)");
		goto out;
	}
	plain[n] = '\0';
	*plain_out = plain;
	*plain_len = (size_t)n;
	plain = NULL;
out:
	free(ad);
	free(ct);
	seal_plain_free(plain);
	return rc;
}
