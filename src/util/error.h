/*
 * Project error codes and the error struct that carries a message with them.
 * Every function that can fail returns 0 or one of the negative MON_E* codes
 * and, when given a struct mon_error, fills it with a message for the caller.
 * The RPC layer maps these codes to gRPC status codes in one place
 * (src/rpc/status.c).
 */
#ifndef MON_UTIL_ERROR_H
#define MON_UTIL_ERROR_H

#include <stddef.h>

#define MON_MUST_CHECK __attribute__((warn_unused_result))
#define MON_PRINTF(fmt_idx, arg_idx) __attribute__((format(printf, fmt_idx, arg_idx)))

enum mon_err {
	MON_OK = 0,
	MON_EINVAL = -1,      /* bad input; message names the field */
	MON_ENOTFOUND = -2,   /* the named resource does not exist */
	MON_EEXIST = -3,      /* the resource already exists */
	MON_EPRECOND = -4,    /* illegal state transition */
	MON_EPERM = -5,       /* caller lacks the role */
	MON_EUNAUTH = -6,     /* caller not authenticated */
	MON_ELIMIT = -7,      /* a limit was hit; message names it */
	MON_EUNAVAIL = -8,    /* database or dependency down; safe to retry */
	MON_EDEADLINE = -9,   /* the caller's deadline passed */
	MON_EABORTED = -10,   /* concurrency conflict (stale version) */
	MON_EUNIMPL = -11,    /* capability not implemented */
	MON_ECANCELLED = -12, /* the caller went away */
	MON_ENOMEM = -13,     /* allocation failed or a hard cap was hit */
	MON_EINTERNAL = -14,  /* a bug or an unexpected failure on our side */
	MON_EINDOUBT = -15,   /* a change's outcome is unknown (connection lost during COMMIT) */
	MON_ERR_MIN_ = -16
};

struct mon_error {
	int code;
	char msg[512];
};

/*
 * Records code and a formatted message in err (which may be NULL) and
 * returns code, so a caller can write `return mon_error_set(err, ...)`.
 */
int mon_error_set(struct mon_error *err, int code, const char *fmt, ...) MON_PRINTF(3, 4);

/* Prefixes err's message with "prefix: " (for example a field path). */
void mon_error_prefix(struct mon_error *err, const char *prefix);

/* Resets err to MON_OK with an empty message; err may be NULL. */
void mon_error_clear(struct mon_error *err);

/* A short constant name for a code ("EINVAL"), never NULL. */
const char *mon_error_name(int code);

#endif
