/*
 * google.protobuf.Struct and JSON (jansson): the free-form jsonb columns of
 * every service are Structs over the API. One copy of the conversion both
 * ways, with one nesting limit.
 */
#ifndef MON_SERVER_COMMON_JSON_H
#define MON_SERVER_COMMON_JSON_H

#include <jansson.h>

#include "google/protobuf/struct.pb-c.h"
#include "util/arena.h"
#include "util/error.h"

/* Objects and arrays nest at most this deep, both ways. */
#define SVC_JSON_DEPTH_MAX 32

/*
 * The JSON object obj as a Struct in a (strings copied). NULL past the
 * arena's cap or SVC_JSON_DEPTH_MAX.
 */
Google__Protobuf__Struct *svc_struct_from_json(struct arena *a, const json_t *obj);

/*
 * s as a new JSON object (the caller decrefs it); a NULL s is an empty
 * object. NULL with MON_EINVAL in err for a number that is not finite or
 * nesting past SVC_JSON_DEPTH_MAX, MON_ENOMEM when out of memory. Integral
 * numbers within 2^53 become JSON integers.
 */
json_t *svc_struct_to_json(const Google__Protobuf__Struct *s, struct mon_error *err);

#endif
