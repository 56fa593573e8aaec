/*
 * Secret sealing: integration secrets (webhook signing secrets, the
 * authentication JSON) are stored sealed, never in plaintext. A secret is
 * encrypted with XChaCha20-Poly1305-IETF (libsodium) under the master key
 * read from the secrets-key-file, with associated data that binds the
 * ciphertext to its table, column, row id and key version: a sealed value
 * copied to another row or column does not open.
 *
 * Text format: "v<key version>:<base64 nonce>:<base64 ciphertext>", for
 * example "v1:0jXy...:Jm3q...". The key file is a key ring: one key per
 * line, "<version> <64 hex digits>" (or a single bare "<64 hex digits>",
 * which is version 1; "#" starts a comment). The highest version seals;
 * every version in the file opens what it sealed, so a key is rotated by
 * adding a line, re-sealing the stored secrets, then dropping the old line.
 */
#ifndef MON_CRYPTO_SEAL_H
#define MON_CRYPTO_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

#define SEAL_KEY_BYTES 32
#define SEAL_PLAIN_MAX 8192 /* bytes of a secret */
#define SEAL_KEYS_MAX 16    /* versions in a key file */

/* The master key, in sodium_malloc memory (guarded, locked, wiped on free). */
struct seal_key;

/* Where a sealed value lives; all three are part of the associated data. */
struct seal_context {
	const char *table;  /* "tb_integration_health" */
	const char *column; /* "webhook_secret", "authentication" */
	const char *row_id; /* the integration's id */
};

/*
 * Reads the master key ring from path (format above). The caller owns *out
 * (seal_key_free). MON_EINVAL names the file, the line and what is wrong
 * with it; never prints key material.
 */
int seal_key_load(const char *path, struct seal_key **out, struct mon_error *err) MON_MUST_CHECK;

/* A key from raw bytes (tests, key rotation); version >= 1. The caller owns *out. */
int seal_key_from_bytes(const unsigned char bytes[SEAL_KEY_BYTES], uint32_t version, struct seal_key **out,
                        struct mon_error *err) MON_MUST_CHECK;

/* The version that seals: the highest in the ring. */
uint32_t seal_key_version(const struct seal_key *key);

/* Wipes and frees; accepts NULL. */
void seal_key_free(struct seal_key *key);

/*
 * Seals plain_len bytes (at most SEAL_PLAIN_MAX) for ctx. *out receives a
 * NUL-terminated text in the format above, malloc'd: the caller frees it.
 */
int seal_text(const struct seal_key *key, const struct seal_context *ctx, const unsigned char *plain, size_t plain_len,
              char **out, struct mon_error *err) MON_MUST_CHECK;

/*
 * Opens a sealed text for ctx. *plain_out receives the secret followed by a
 * NUL (not counted in *plain_len), in sodium_malloc memory: the caller
 * releases it with seal_plain_free. MON_EINVAL when the text is malformed;
 * MON_EPRECOND when it was sealed under a key version the ring lacks, or
 * does not open (wrong key, or sealed for another row, column or table).
 */
int seal_open(const struct seal_key *key, const struct seal_context *ctx, const char *sealed, unsigned char **plain_out,
              size_t *plain_len, struct mon_error *err) MON_MUST_CHECK;

/* Wipes and frees an opened secret; accepts NULL. */
void seal_plain_free(unsigned char *plain);

#endif
