/*
 * Inside libmonitoring only: the unary call of mon_call_unary, for a caller
 * in the library that retries on its own terms (the metrics writer, with
 * its backoff, retry budget and counters) and so must not have the call
 * retried underneath it as well.
 */
#ifndef MON_CLIENTS_LIB_CLIENT_CALL_H
#define MON_CLIENTS_LIB_CLIENT_CALL_H

#include <stdbool.h>

#include "monitoring/client.h"

/*
 * mon_call_unary; when is_retried is false a keyed call is made once, its
 * failure returned as it came (the key is still set when the request has
 * none).
 */
int client_call_unary(mon_client *client, const char *path, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                      const mon_call_options *opts, bool is_retried, mon_status *status);

#endif
