/* Mapping between MON_E* codes and gRPC status codes; see status.h. */
#include "rpc/status.h"

#include <grpc/status.h>

#include "util/error.h"

int rpc_status_from_mon(int mon_code)
{
	switch (mon_code) {
	case MON_OK: return GRPC_STATUS_OK;
	case MON_EINVAL: return GRPC_STATUS_INVALID_ARGUMENT;
	case MON_ENOTFOUND: return GRPC_STATUS_NOT_FOUND;
	case MON_EEXIST: return GRPC_STATUS_ALREADY_EXISTS;
	case MON_EPRECOND: return GRPC_STATUS_FAILED_PRECONDITION;
	case MON_EPERM: return GRPC_STATUS_PERMISSION_DENIED;
	case MON_EUNAUTH: return GRPC_STATUS_UNAUTHENTICATED;
	case MON_ELIMIT: return GRPC_STATUS_RESOURCE_EXHAUSTED;
	case MON_EUNAVAIL: return GRPC_STATUS_UNAVAILABLE;
	case MON_EDEADLINE: return GRPC_STATUS_DEADLINE_EXCEEDED;
	case MON_EABORTED: return GRPC_STATUS_ABORTED;
	case MON_EUNIMPL: return GRPC_STATUS_UNIMPLEMENTED;
	case MON_ECANCELLED: return GRPC_STATUS_CANCELLED;
	case MON_ENOMEM: return GRPC_STATUS_RESOURCE_EXHAUSTED;
	case MON_EINDOUBT: return GRPC_STATUS_UNKNOWN;
	default: return GRPC_STATUS_INTERNAL;
	}
}

int rpc_status_to_mon(int grpc_code)
{
	switch (grpc_code) {
	case GRPC_STATUS_OK: return MON_OK;
	case GRPC_STATUS_CANCELLED: return MON_ECANCELLED;
	case GRPC_STATUS_INVALID_ARGUMENT:
	case GRPC_STATUS_OUT_OF_RANGE: return MON_EINVAL;
	case GRPC_STATUS_DEADLINE_EXCEEDED: return MON_EDEADLINE;
	case GRPC_STATUS_NOT_FOUND: return MON_ENOTFOUND;
	case GRPC_STATUS_ALREADY_EXISTS: return MON_EEXIST;
	case GRPC_STATUS_PERMISSION_DENIED: return MON_EPERM;
	case GRPC_STATUS_RESOURCE_EXHAUSTED: return MON_ELIMIT;
	case GRPC_STATUS_FAILED_PRECONDITION: return MON_EPRECOND;
	case GRPC_STATUS_ABORTED: return MON_EABORTED;
	case GRPC_STATUS_UNIMPLEMENTED: return MON_EUNIMPL;
	case GRPC_STATUS_UNAVAILABLE: return MON_EUNAVAIL;
	case GRPC_STATUS_UNAUTHENTICATED: return MON_EUNAUTH;
	default: return MON_EINTERNAL;
	}
}

const char *rpc_status_name(int grpc_code)
{
	static const char *const names[] = {
	        "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
	        "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	        "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
	        "DATA_LOSS", "UNAUTHENTICATED",
	};
	if (grpc_code < 0 || grpc_code >= (int)(sizeof(names) / sizeof(names[0])))
		return "UNKNOWN";
	return names[grpc_code];
}
