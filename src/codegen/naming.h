/*
 * Naming rules of the code generator. The rules that name protoc-c's own
 * symbols (struct types, descriptors, header names) reproduce protoc-c
 * 1.4.1 exactly, because generated tables refer to those symbols by name;
 * the rules for our own symbols (server prefix, client stub names) are built
 * on the same primitives so that both read alike.
 *
 * Every function is pure: it returns a new string that the caller owns and
 * frees with free(), or NULL when out of memory.
 *
 * protoc-c's rules, for reference (identifiers are ASCII):
 *   CamelToLower  upper-case letters become lower case, preceded by '_'
 *                 unless the previous character was upper case too (so
 *                 "GetURL" -> "get_url", "HTTPRequest2" -> "httprequest2",
 *                 "A1b2C3" -> "a1b2_c3"); other characters are kept.
 *   CamelToUpper  the same, upper-casing instead.
 *   ToCamel       drops every '_' and upper-cases the character after it and
 *                 the first character ("foo_bar" -> "FooBar"); others kept.
 *   FullNameTo*   splits a dotted name, skips empty pieces, converts each
 *                 piece and joins them with "__".
 */
#ifndef MON_CODEGEN_NAMING_H
#define MON_CODEGEN_NAMING_H

/* protoc-c's CamelToLower: "GetURL" -> "get_url". */
char *naming_camel_to_lower(const char *name);

/* protoc-c's CamelToUpper: "GetURL" -> "GET_URL". */
char *naming_camel_to_upper(const char *name);

/* protoc-c's ToCamel: "foo_bar" -> "FooBar", "v1" -> "V1". */
char *naming_to_camel(const char *name);

/* The C type name: "foo_bar.v1.Outer.Inner" -> "FooBar__V1__Outer__Inner". */
char *naming_full_name_to_c(const char *full_name);

/* The lower-case symbol stem: "foo_bar.v1.HTTPRequest2" -> "foo_bar__v1__httprequest2". */
char *naming_full_name_to_lower(const char *full_name);

/* The upper-case macro stem: "foo_bar.v1.HTTPRequest2" -> "FOO_BAR__V1__HTTPREQUEST2". */
char *naming_full_name_to_upper(const char *full_name);

/* The message descriptor symbol: "foo_bar.v1.HTTPRequest2" -> "foo_bar__v1__httprequest2__descriptor". */
char *naming_message_descriptor(const char *full_name);

/*
 * The name protoc-c feeds to the FullNameTo* rules for a type declared in
 * a file with package `package` and the protobuf-c file option
 * `c_package` (NULL when unset): the package part is replaced by c_package.
 * full_name may start with a '.' (as in descriptor type references); the
 * result never does.
 */
char *naming_c_full_name(const char *full_name, const char *package, const char *c_package);

/* The file name without its ".proto" (or ".protodevel") suffix, as protoc-c's StripProto. */
char *naming_strip_proto(const char *file_name);

/*
 * The server-side prefix of a service: the package with dots turned into
 * '_', then '_' and CamelToLower(service): ("grpc.health.v1", "Health") ->
 * "grpc_health_v1_health". An empty package gives just the service part.
 */
char *naming_server_prefix(const char *package, const char *service);

/* The client stub prefix of a service: "AlertsService" -> "mon_alerts_service". */
char *naming_client_prefix(const char *service);

/*
 * An include guard for a generated file: "MON_GEN_" and the file name
 * upper-cased, every character that is not a letter or digit made '_':
 * "grpc/health/v1/health.mon-server.h" -> "MON_GEN_GRPC_HEALTH_V1_HEALTH_MON_SERVER_H".
 */
char *naming_include_guard(const char *file_name);

#endif
