/*
 * The one place where project error codes (MON_E*) and gRPC status codes
 * meet. Both directions live here so the server and the client agree.
 */
#ifndef MON_RPC_STATUS_H
#define MON_RPC_STATUS_H

/* gRPC status code (0..16) for a MON_E* code; 0 for MON_OK. */
int rpc_status_from_mon(int mon_code);

/* MON_E* code for a gRPC status code; MON_OK for 0. */
int rpc_status_to_mon(int grpc_code);

/* "OK", "INVALID_ARGUMENT", ...; "UNKNOWN" for codes out of range. */
const char *rpc_status_name(int grpc_code);

#endif
