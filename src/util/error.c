/* Error struct helpers; see error.h. */
#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int mon_error_set(struct mon_error *err, int code, const char *fmt, ...)
{
	if (err == NULL)
		return code;
	err->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

void mon_error_prefix(struct mon_error *err, const char *prefix)
{
	if (err == NULL || prefix == NULL || prefix[0] == '\0')
		return;
	size_t plen = strlen(prefix);
	size_t mlen = strnlen(err->msg, sizeof(err->msg) - 1);
	if (plen + 2 >= sizeof(err->msg))
		return;
	/* Shift the message right, truncating its tail, then write the prefix. */
	if (plen + 2 + mlen >= sizeof(err->msg))
		mlen = sizeof(err->msg) - 1 - plen - 2;
	memmove(err->msg + plen + 2, err->msg, mlen);
	err->msg[plen + 2 + mlen] = '\0';
	memcpy(err->msg, prefix, plen);
	err->msg[plen] = ':';
	err->msg[plen + 1] = ' ';
}

void mon_error_clear(struct mon_error *err)
{
	if (err == NULL)
		return;
	err->code = MON_OK;
	err->msg[0] = '\0';
}

const char *mon_error_name(int code)
{
	switch (code) {
	case MON_OK: return "OK";
	case MON_EINVAL: return "EINVAL";
	case MON_ENOTFOUND: return "ENOTFOUND";
	case MON_EEXIST: return "EEXIST";
	case MON_EPRECOND: return "EPRECOND";
	case MON_EPERM: return "EPERM";
	case MON_EUNAUTH: return "EUNAUTH";
	case MON_ELIMIT: return "ELIMIT";
	case MON_EUNAVAIL: return "EUNAVAIL";
	case MON_EDEADLINE: return "EDEADLINE";
	case MON_EABORTED: return "EABORTED";
	case MON_EUNIMPL: return "EUNIMPL";
	case MON_ECANCELLED: return "ECANCELLED";
	case MON_ENOMEM: return "ENOMEM";
	case MON_EINTERNAL: return "EINTERNAL";
	case MON_EINDOUBT: return "EINDOUBT";
	default: return "EUNKNOWN";
	}
}
