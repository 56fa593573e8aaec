/*
 * HealthService handlers: the registry of monitored services
 * (tb_service_health), their check log (tb_health_check_log), uptime and
 * the system summary. Each handler checks its input (INVALID_ARGUMENT
 * naming the field), then runs one transaction bounded by the caller's
 * deadline. Changes write their audit event (before/after as the API shows
 * the service) and their change event (tb_service_health_event, NOTIFY
 * mon_health) in that transaction; check results go through the health
 * store, which also keeps uptime current.
 *
 * Lists use keyset paging; a page token binds the position to the filters
 * it was made for. Uptime figures come from SQL functions of
 * sql/0008_health.sql (time-weighted, docs/api.md).
 */
#include "health/service.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "audit/audit.h"
#include "common/call.h"
#include "common/json.h"
#include "common/page.h"
#include "common/parse.h"
#include "common/text.h"
#include "health/store.h"
#include "util/clock.h"
#include "util/log.h"

#define MODULE "health"
#define PAGE_TOKEN_MAX 1400
#define FUTURE_SLACK_MS (5 * 60 * 1000)
#define RETENTION_DAYS 30
#define DAY_MS INT64_C(86400000)
/* 9999-12-31T23:59:59Z: the latest time a Timestamp may hold. */

static const char *const service_types[] = {"database", "cache", "email", "storage", "api"};

/* ---- pure checks ---- */

static bool is_id_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
	       c == '-';
}

int health_check_id(const char *field, const char *id, struct mon_error *err)
{
	size_t n = id ? strlen(id) : 0;
	if (n == 0)
		return mon_error_set(err, MON_EINVAL, "%s: must be set", field);
	if (n > HEALTH_ID_MAX)
		return mon_error_set(err, MON_EINVAL, "%s: at most %d characters", field, HEALTH_ID_MAX);
	for (size_t i = 0; i < n; i++)
		if (!is_id_char(id[i]))
			return mon_error_set(err, MON_EINVAL, "%s: only letters, digits, '.', '_' and '-'", field);
	return 0;
}

int health_check_name(const char *field, const char *name, struct mon_error *err)
{
	return svc_check_text(field, name, 1, HEALTH_NAME_MAX_CHARS, HEALTH_NAME_MAX_CHARS * 4, SVC_TEXT_NO_CONTROLS,
	                      err);
}

static bool is_host_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

int health_check_url(const char *field, const char *url, struct mon_error *err)
{
	static const char *const schemes[] = {"http://", "https://", "grpc://"};
	size_t n = url ? strlen(url) : 0;
	if (n == 0)
		return 0;
	if (n > HEALTH_URL_MAX)
		return mon_error_set(err, MON_EINVAL, "%s: at most %d bytes", field, HEALTH_URL_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)url[i];
		if (c <= 0x20 || c >= 0x7f)
			return mon_error_set(err, MON_EINVAL,
			                     "%s: must not contain spaces, control or non-ASCII characters", field);
	}
	const char *rest = NULL;
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
		if (strncmp(url, schemes[i], strlen(schemes[i])) == 0)
			rest = url + strlen(schemes[i]);
	if (rest == NULL)
		return mon_error_set(err, MON_EINVAL, "%s: must start with http://, https:// or grpc://", field);
	size_t auth_n = strcspn(rest, "/?#");
	if (memchr(rest, '@', auth_n) != NULL)
		return mon_error_set(err, MON_EINVAL, "%s: must not contain user information", field);
	const char *host = rest, *port = NULL;
	size_t host_n;
	if (auth_n > 0 && rest[0] == '[') {
		const char *close = memchr(rest, ']', auth_n);
		if (close == NULL || close == rest + 1)
			return mon_error_set(err, MON_EINVAL, "%s: malformed IPv6 host", field);
		/* An IPv6 address, as inet_pton reads it (so "[:21]" is not one); no zone. */
		char addr[INET6_ADDRSTRLEN];
		struct in6_addr a6;
		size_t addr_n = (size_t)(close - rest) - 1;
		if (addr_n >= sizeof(addr))
			return mon_error_set(err, MON_EINVAL, "%s: malformed IPv6 host", field);
		memcpy(addr, rest + 1, addr_n);
		addr[addr_n] = '\0';
		if (inet_pton(AF_INET6, addr, &a6) != 1)
			return mon_error_set(err, MON_EINVAL, "%s: malformed IPv6 host", field);
		host_n = (size_t)(close - rest) + 1;
		if (host_n < auth_n) {
			if (rest[host_n] != ':')
				return mon_error_set(err, MON_EINVAL, "%s: malformed host", field);
			port = rest + host_n + 1;
		}
	} else {
		const char *colon = memchr(rest, ':', auth_n);
		host_n = colon ? (size_t)(colon - rest) : auth_n;
		port = colon ? colon + 1 : NULL;
		if (host_n == 0)
			return mon_error_set(err, MON_EINVAL, "%s: must name a host", field);
		if (host_n > 253)
			return mon_error_set(err, MON_EINVAL, "%s: host name too long", field);
		size_t label_n = 0;
		for (size_t i = 0; i < host_n; i++) {
			char c = host[i];
			if (!is_host_char(c))
				return mon_error_set(err, MON_EINVAL, "%s: host name has a character not allowed",
				                     field);
			bool is_label_edge = label_n == 0 || i + 1 == host_n || host[i + 1] == '.';
			if (c == '-' && is_label_edge)
				return mon_error_set(err, MON_EINVAL,
				                     "%s: host name labels must not start or end with '-'", field);
			if (c == '.') {
				if (label_n == 0)
					return mon_error_set(err, MON_EINVAL, "%s: host name has an empty label",
					                     field);
				label_n = 0;
			} else if (++label_n > 63) {
				return mon_error_set(err, MON_EINVAL, "%s: host name label longer than 63", field);
			}
		}
	}
	if (port != NULL) {
		size_t port_n = (size_t)(rest + auth_n - port);
		long value = 0;
		if (port_n == 0 || port_n > 5)
			return mon_error_set(err, MON_EINVAL, "%s: port must be 1 to 65535", field);
		for (size_t i = 0; i < port_n; i++) {
			if (port[i] < '0' || port[i] > '9')
				return mon_error_set(err, MON_EINVAL, "%s: port must be 1 to 65535", field);
			value = value * 10 + (port[i] - '0');
		}
		if (value < 1 || value > 65535)
			return mon_error_set(err, MON_EINVAL, "%s: port must be 1 to 65535", field);
	}
	return 0;
}

int health_check_service_type(const char *field, const char *type, struct mon_error *err)
{
	if (type == NULL || type[0] == '\0')
		return mon_error_set(err, MON_EINVAL, "%s: must be set", field);
	for (size_t i = 0; i < sizeof(service_types) / sizeof(service_types[0]); i++)
		if (strcmp(type, service_types[i]) == 0)
			return 0;
	return mon_error_set(err, MON_EINVAL, "%s: must be one of database, cache, email, storage, api", field);
}

int health_check_timing(const char *prefix, int32_t check_interval_s, int32_t timeout_s, int32_t retry_count,
                        struct mon_error *err)
{
	if (check_interval_s < HEALTH_INTERVAL_MIN_S || check_interval_s > HEALTH_INTERVAL_MAX_S)
		return mon_error_set(err, MON_EINVAL, "%scheck_interval: must be %d to %d seconds", prefix,
		                     HEALTH_INTERVAL_MIN_S, HEALTH_INTERVAL_MAX_S);
	if (timeout_s < 1 || timeout_s > HEALTH_TIMEOUT_MAX_S)
		return mon_error_set(err, MON_EINVAL, "%stimeout: must be 1 to %d seconds", prefix,
		                     HEALTH_TIMEOUT_MAX_S);
	if (timeout_s >= check_interval_s)
		return mon_error_set(err, MON_EINVAL, "%stimeout: must be below check_interval (%" PRId32 " s)", prefix,
		                     check_interval_s);
	if (retry_count < 0 || retry_count > HEALTH_RETRY_MAX)
		return mon_error_set(err, MON_EINVAL, "%sretry_count: must be 0 to %d", prefix, HEALTH_RETRY_MAX);
	return 0;
}

bool health_uptime_percent(int64_t up_ms, int64_t down_ms, double *out)
{
	if (up_ms < 0 || down_ms < 0 || up_ms + down_ms <= 0)
		return false;
	/* Hundredths of a percent, rounded half up in integers (as SQL's round(x, 2) for x >= 0). */
	int64_t total = up_ms + down_ms;
	int64_t hundredths = (up_ms * 20000 + total) / (2 * total);
	*out = (double)hundredths / 100.0;
	return true;
}

/* RFC 3339 in UTC with microseconds. New reference. */
static json_t *json_time_us(int64_t us)
{
	time_t s = (time_t)(us / 1000000);
	struct tm tm;
	char date[32], text[48];
	if (gmtime_r(&s, &tm) == NULL || strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		return json_null();
	snprintf(text, sizeof(text), "%s.%06dZ", date, (int)(us % 1000000));
	return json_string(text);
}

/* ---- google.protobuf.Struct <-> JSON ---- */

/* A Struct as compact JSON text in the arena, at most HEALTH_JSON_MAX bytes; MON_EINVAL naming field. */
static int struct_text(struct arena *a, const char *field, const Google__Protobuf__Struct *s, const char **out,
                       struct mon_error *err)
{
	struct mon_error inner = {0};
	json_t *obj = svc_struct_to_json(s, &inner);
	if (obj == NULL)
		return mon_error_set(err, inner.code ? inner.code : MON_ENOMEM, "%s: %s", field,
		                     inner.msg[0] ? inner.msg : "out of memory");
	char *text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(obj);
	if (text == NULL) /* not bad text: the RPC runtime refused that before the handler ran */
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	int rc = 0;
	if (strlen(text) > HEALTH_JSON_MAX)
		rc = mon_error_set(err, MON_EINVAL, "%s: at most %d bytes as JSON", field, HEALTH_JSON_MAX);
	else if ((*out = arena_strdup(a, text)) == NULL)
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
	free(text);
	return rc;
}

/* A jsonb text from the database as a Struct (NULL text or a non-object: NULL, *is_ok true). */
static Google__Protobuf__Struct *struct_from_text(struct arena *a, const char *text, bool *is_ok)
{
	*is_ok = true;
	if (text == NULL || text[0] == '\0')
		return NULL;
	json_t *obj = json_loads(text, JSON_DECODE_ANY, NULL);
	if (!json_is_object(obj)) {
		json_decref(obj);
		return NULL;
	}
	Google__Protobuf__Struct *s = svc_struct_from_json(a, obj);
	json_decref(obj);
	*is_ok = s != NULL;
	return s;
}

/* ---- the call ---- */

struct call {
	struct rpc_ctx *ctx;
	struct arena *arena;
	struct db_pool *pool;
	const struct netpolicy *probe_policy; /* NULL: health_check_url not checked against it */
};

static void call_init(struct call *c, struct rpc_ctx *ctx)
{
	c->ctx = ctx;
	c->arena = rpc_ctx_arena(ctx);
	c->pool = health_service_of(ctx)->pool;
	c->probe_policy = health_service_of(ctx)->probe_policy;
}

/* One transaction bounded by the call's deadline (svc_run_tx). */
static int run_tx(struct call *c, db_tx_fn fn, void *arg)
{
	return svc_run_tx(c->ctx, c->pool, fn, arg);
}

/* ---- services ---- */

/* Columns 0-15 of a service, in the order svc_msg and svc_json read them. */
#define SERVICE_COLUMNS                                                                                                \
	"s.id, s.name, coalesce(s.description, ''), s.service_type, s.status::text,"                                   \
	" (extract(epoch FROM s.last_check) * 1000000)::bigint, coalesce(s.health_check_url, ''), s.check_interval,"   \
	" s.timeout, s.retry_count, s.metrics::text, s.uptime_24h::float8, s.uptime_7d::float8,"                       \
	" s.uptime_30d::float8, (extract(epoch FROM s.created_at) * 1000000)::bigint,"                                 \
	" (extract(epoch FROM s.updated_at) * 1000000)::bigint"
#define SERVICE_COLUMN_N 16

/* The service of row (columns from col) as a message in the arena; NULL when out of memory. */
static Monitoring__V1__MonitoredService *svc_msg(struct arena *a, const struct db_result *res, int row, int col)
{
	bool is_ok = true;
	Monitoring__V1__MonitoredService *m = arena_alloc(a, sizeof(*m));
	Google__Protobuf__Int32Value *retry = arena_alloc(a, sizeof(*retry));
	if (m == NULL || retry == NULL)
		return NULL;
	monitoring__v1__monitored_service__init(m);
	google__protobuf__int32_value__init(retry);
	m->id = arena_strdup(a, db_result_value(res, row, col + 0));
	m->name = arena_strdup(a, db_result_value(res, row, col + 1));
	m->description = arena_strdup(a, db_result_value(res, row, col + 2));
	m->service_type = arena_strdup(a, db_result_value(res, row, col + 3));
	m->status = (Monitoring__V1__ServiceStatus)health_status_parse(db_result_value(res, row, col + 4));
	m->last_check = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, row, col + 5)));
	m->health_check_url = arena_strdup(a, db_result_value(res, row, col + 6));
	m->check_interval = (int32_t)svc_parse_i64(db_result_value(res, row, col + 7));
	m->timeout = (int32_t)svc_parse_i64(db_result_value(res, row, col + 8));
	retry->value = (int32_t)svc_parse_i64(db_result_value(res, row, col + 9));
	m->retry_count = retry;
	m->metrics = struct_from_text(a, db_result_value(res, row, col + 10), &is_ok);
	m->uptime_24h = svc_double_from_col(a, res, row, col + 11, &is_ok);
	m->uptime_7d = svc_double_from_col(a, res, row, col + 12, &is_ok);
	m->uptime_30d = svc_double_from_col(a, res, row, col + 13, &is_ok);
	m->created_at = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, row, col + 14)));
	m->updated_at = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, row, col + 15)));
	if (!is_ok || m->id == NULL || m->name == NULL || m->description == NULL || m->service_type == NULL ||
	    m->last_check == NULL || m->health_check_url == NULL || m->created_at == NULL || m->updated_at == NULL)
		return NULL;
	return m;
}

static json_t *json_uptime(const struct db_result *res, int row, int col)
{
	if (db_result_is_null(res, row, col))
		return json_null();
	return json_real(strtod(db_result_value(res, row, col), NULL));
}

/* The service of row as the API shows it, for audit events. New reference, NULL when out of memory. */
static json_t *svc_json(const struct db_result *res, int row)
{
	json_t *metrics = json_loads(db_result_value(res, row, 10), 0, NULL);
	return json_pack(
	        "{s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o}", "id",
	        db_result_value(res, row, 0), "name", db_result_value(res, row, 1), "description",
	        db_result_value(res, row, 2), "service_type", db_result_value(res, row, 3), "status",
	        db_result_value(res, row, 4), "last_check", json_time_us(svc_parse_i64(db_result_value(res, row, 5))),
	        "health_check_url", db_result_value(res, row, 6), "check_interval",
	        (json_int_t)svc_parse_i64(db_result_value(res, row, 7)), "timeout",
	        (json_int_t)svc_parse_i64(db_result_value(res, row, 8)), "retry_count",
	        (json_int_t)svc_parse_i64(db_result_value(res, row, 9)), "metrics", metrics ? metrics : json_object(),
	        "uptime_24h", json_uptime(res, row, 11), "uptime_7d", json_uptime(res, row, 12), "uptime_30d",
	        json_uptime(res, row, 13), "created_at", json_time_us(svc_parse_i64(db_result_value(res, row, 14))),
	        "updated_at", json_time_us(svc_parse_i64(db_result_value(res, row, 15))));
}

/* Reads one service (locked FOR UPDATE when is_locking) into *out; MON_ENOTFOUND when absent. */
static int svc_select(struct db_conn *conn, const char *id, bool is_locking, struct db_result **out,
                      struct mon_error *err)
{
	static const struct db_stmt plain = {
	        .name = "health_service_get",
	        .sql = "SELECT " SERVICE_COLUMNS " FROM tb_service_health s WHERE s.id = $1",
	        .param_count = 1,
	};
	static const char locking_sql[] =
	        "SELECT " SERVICE_COLUMNS " FROM tb_service_health s WHERE s.id = $1 FOR UPDATE";
	const char *params[] = {id};
	int rc = is_locking ? db_exec(conn, locking_sql, 1, params, out, err)
	                    : db_exec_stmt(conn, &plain, params, out, err);
	if (rc == 0 && db_result_rows(*out) != 1) {
		db_result_free(*out);
		*out = NULL;
		rc = mon_error_set(err, MON_ENOTFOUND, "service \"%s\": not found", id);
	}
	return rc;
}

int health_service_read_tx(struct db_conn *conn, struct arena *a, const char *id,
                           Monitoring__V1__MonitoredService **out, struct mon_error *err)
{
	struct db_result *res = NULL;
	int rc = svc_select(conn, id, false, &res, err);
	if (rc == 0 && (*out = svc_msg(a, res, 0, 0)) == NULL)
		rc = svc_fail_nomem(err);
	db_result_free(res);
	return rc;
}

/* Writes the change's audit event (module "health", resource "service"). */
static int write_event(struct db_conn *conn, const struct call *c, const char *action, const char *id, const char *name,
                       const char *description, json_t *before, json_t *after, struct mon_error *err)
{
	struct audit_event ev = {.action = action,
	                         .resource_type = "service",
	                         .resource_id = id,
	                         .resource_name = name,
	                         .description = description,
	                         .before = before,
	                         .after = after,
	                         .module = MODULE};
	return audit_write_tx(conn, c->ctx, &ev, err);
}

/* ---- checks ---- */

/* Columns 0-6 of a check; 6 is checked_at in microseconds (also the page cursor). */
#define CHECK_COLUMNS                                                                                                  \
	"l.id, l.service_id, l.status::text, l.response_time, coalesce(l.error_message, ''), l.details::text,"         \
	" (extract(epoch FROM l.checked_at) * 1000000)::bigint"

static Monitoring__V1__HealthCheck *check_msg(struct arena *a, const struct db_result *res, int row, int col)
{
	bool is_ok = true;
	Monitoring__V1__HealthCheck *m = arena_alloc(a, sizeof(*m));
	if (m == NULL)
		return NULL;
	monitoring__v1__health_check__init(m);
	m->id = svc_parse_i64(db_result_value(res, row, col + 0));
	m->service_id = arena_strdup(a, db_result_value(res, row, col + 1));
	m->status = (Monitoring__V1__ServiceStatus)health_status_parse(db_result_value(res, row, col + 2));
	if (!db_result_is_null(res, row, col + 3)) {
		m->response_time = arena_alloc(a, sizeof(*m->response_time));
		if (m->response_time == NULL)
			return NULL;
		google__protobuf__int32_value__init(m->response_time);
		m->response_time->value = (int32_t)svc_parse_i64(db_result_value(res, row, col + 3));
	}
	m->error_message = arena_strdup(a, db_result_value(res, row, col + 4));
	m->details = struct_from_text(a, db_result_value(res, row, col + 5), &is_ok);
	m->checked_at = svc_ts_from_us(a, svc_parse_i64(db_result_value(res, row, col + 6)));
	if (!is_ok || m->service_id == NULL || m->error_message == NULL || m->checked_at == NULL)
		return NULL;
	return m;
}

/* ---- CreateService ---- */

struct svc_fields {
	const char *id;
	const char *name;
	const char *description; /* "" is NULL */
	const char *service_type;
	const char *url; /* "" is NULL */
	int32_t check_interval_s;
	int32_t timeout_s;
	int32_t retry_count;
	const char *metrics_json; /* never NULL */
};

struct create_op {
	const struct call *call;
	struct svc_fields f;
	Monitoring__V1__MonitoredService *out;
};

static void fields_params(const struct svc_fields *f, char num[3][16], const char *params[9])
{
	snprintf(num[0], 16, "%" PRId32, f->check_interval_s);
	snprintf(num[1], 16, "%" PRId32, f->timeout_s);
	snprintf(num[2], 16, "%" PRId32, f->retry_count);
	params[0] = f->id;
	params[1] = f->name;
	params[2] = f->description[0] ? f->description : NULL;
	params[3] = f->service_type;
	params[4] = f->url[0] ? f->url : NULL;
	params[5] = num[0];
	params[6] = num[1];
	params[7] = num[2];
	params[8] = f->metrics_json;
}

static int create_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char count_sql[] = "SELECT count(*) >= $1::integer FROM tb_service_health";
	static const char insert_sql[] =
	        "INSERT INTO tb_service_health (id, name, description, service_type, health_check_url,"
	        " check_interval, timeout, retry_count, metrics)"
	        " VALUES ($1, $2, $3, $4, $5, $6::integer, $7::integer, $8::integer, $9::jsonb)";
	_Static_assert(HEALTH_SERVICES_MAX == 10000, "message below names the limit");
	struct create_op *op = arg;
	struct db_result *res = NULL;
	json_t *after = NULL;
	char num[3][16], limit[16];
	const char *params[9];
	snprintf(limit, sizeof(limit), "%d", HEALTH_SERVICES_MAX);
	const char *count_params[] = {limit};
	int rc = db_exec(conn, count_sql, 1, count_params, &res, err);
	if (rc != 0)
		goto out;
	if (strcmp(db_result_value(res, 0, 0), "t") == 0) {
		rc = mon_error_set(err, MON_ELIMIT, "monitored services: limit of %d reached", HEALTH_SERVICES_MAX);
		goto out;
	}
	db_result_free(res);
	res = NULL;
	fields_params(&op->f, num, params);
	rc = db_exec(conn, insert_sql, 9, params, NULL, err);
	if (rc == MON_EEXIST)
		rc = mon_error_set(err, MON_EEXIST, "service.id: \"%s\" already exists", op->f.id);
	if (rc == 0)
		rc = svc_select(conn, op->f.id, false, &res, err);
	if (rc != 0)
		goto out;
	after = svc_json(res, 0);
	op->out = svc_msg(op->call->arena, res, 0, 0);
	if (after == NULL || op->out == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	const char *what = arena_printf(op->call->arena, "created monitored service \"%s\"", op->f.id);
	if (what == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = write_event(conn, op->call, "create", op->f.id, op->f.name, what, NULL, after, err);
	if (rc == 0)
		rc = health_event_append_tx(conn, "created", op->f.id, NULL, err);
out:
	json_decref(after);
	db_result_free(res);
	return rc;
}

/*
 * MON_EINVAL naming field when url (already checked by health_check_url)
 * names its host by an IP address that policy denies. A host name passes:
 * its addresses are known, and checked, only when it is probed.
 */
static int check_url_policy(const char *field, const char *url, const struct netpolicy *policy, struct mon_error *err)
{
	const char *rest = url ? strstr(url, "://") : NULL;
	if (policy == NULL || rest == NULL)
		return 0;
	rest += 3;
	size_t auth_n = strcspn(rest, "/?#");
	size_t host_n = auth_n;
	if (rest[0] == '[') {
		const char *close = memchr(rest, ']', auth_n);
		host_n = close ? (size_t)(close - rest) + 1 : auth_n;
	} else {
		const char *colon = memchr(rest, ':', auth_n);
		host_n = colon ? (size_t)(colon - rest) : auth_n;
	}
	char host[256];
	if (host_n == 0 || host_n >= sizeof(host))
		return 0;
	memcpy(host, rest, host_n);
	host[host_n] = '\0';
	bool is_literal = false;
	if (!netpolicy_allows_host_literal(policy, host, &is_literal))
		return mon_error_set(err, MON_EINVAL,
		                     "%s: the address %s is denied by the server's probe network policy", field, host);
	return 0;
}

/* Checks the writable fields named by has[] (all on Create) of m; prefix "service.". */
static int check_service_fields(struct arena *a, const struct netpolicy *policy,
                                const Monitoring__V1__MonitoredService *m, const bool has[8], struct svc_fields *f,
                                struct mon_error *err)
{
	int rc = 0;
	if (has[0]) {
		rc = health_check_name("service.name", m->name, err);
		f->name = m->name;
	}
	if (rc == 0 && has[1]) {
		f->description = m->description ? m->description : "";
		rc = svc_check_text("service.description", f->description, 0, SIZE_MAX, HEALTH_DESCRIPTION_MAX,
		                    SVC_TEXT_NO_CONTROLS, err);
	}
	if (rc == 0 && has[2]) {
		rc = health_check_service_type("service.service_type", m->service_type, err);
		f->service_type = m->service_type;
	}
	if (rc == 0 && has[3]) {
		f->url = m->health_check_url ? m->health_check_url : "";
		rc = health_check_url("service.health_check_url", f->url, err);
		if (rc == 0)
			rc = check_url_policy("service.health_check_url", f->url, policy, err);
	}
	if (rc == 0 && has[4])
		f->check_interval_s = m->check_interval;
	if (rc == 0 && has[5])
		f->timeout_s = m->timeout;
	if (rc == 0 && has[6])
		f->retry_count = m->retry_count ? m->retry_count->value : HEALTH_RETRY_DEFAULT;
	if (rc == 0 && has[7]) {
		if (m->metrics == NULL)
			f->metrics_json = "{}";
		else
			rc = struct_text(a, "service.metrics", m->metrics, &f->metrics_json, err);
	}
	return rc;
}

/* create_service's response from its op (svc_reply_fn). */
static int create_service_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	(void)err;
	const struct create_op *op = arg;
	Monitoring__V1__CreateServiceResponse *resp = (Monitoring__V1__CreateServiceResponse *)(void *)msg;
	resp->service = op->out;
	return 0;
}

/* CreateService (editor, declared): id generated when empty; defaults for 0 intervals and absent retry_count. */
static int create_service(struct rpc_ctx *ctx, const Monitoring__V1__CreateServiceRequest *req,
                          Monitoring__V1__CreateServiceResponse *resp)
{
	static const bool all[8] = {true, true, true, true, true, true, true, true};
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	const Monitoring__V1__MonitoredService *m = req->service;
	if (m == NULL)
		return rpc_fail(ctx, MON_EINVAL, "service: must be set");
	struct create_op op = {.call = &c};
	int rc = 0;
	if (m->id != NULL && m->id[0] != '\0') {
		rc = health_check_id("service.id", m->id, &err);
		op.f.id = m->id;
	} else {
		unsigned char rnd[8];
		char hex[17];
		randombytes_buf(rnd, sizeof(rnd));
		sodium_bin2hex(hex, sizeof(hex), rnd, sizeof(rnd));
		op.f.id = arena_printf(c.arena, "svc-%s", hex);
		if (op.f.id == NULL)
			return svc_nomem(ctx);
	}
	if (rc == 0)
		rc = check_service_fields(c.arena, c.probe_policy, m, all, &op.f, &err);
	if (rc == 0) {
		if (op.f.check_interval_s == 0)
			op.f.check_interval_s = HEALTH_INTERVAL_DEFAULT_S;
		if (op.f.timeout_s == 0)
			op.f.timeout_s = op.f.check_interval_s > HEALTH_TIMEOUT_DEFAULT_S ? HEALTH_TIMEOUT_DEFAULT_S
			                                                                  : op.f.check_interval_s - 1;
		rc = health_check_timing("service.", op.f.check_interval_s, op.f.timeout_s, op.f.retry_count, &err);
	}
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	(void)resp; /* filled by create_service_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.pool, create_tx, create_service_reply, &op);
}

/* ---- GetService ---- */

struct get_op {
	const struct call *call;
	const char *id;
	Monitoring__V1__MonitoredService *out;
};

static int get_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct get_op *op = arg;
	return health_service_read_tx(conn, op->call->arena, op->id, &op->out, err);
}

static int get_service(struct rpc_ctx *ctx, const Monitoring__V1__GetServiceRequest *req,
                       Monitoring__V1__GetServiceResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (health_check_id("service_id", req->service_id, &err) != 0)
		return rpc_fail(ctx, MON_EINVAL, "%s", err.msg);
	struct get_op op = {.call = &c, .id = req->service_id};
	int rc = svc_run_read(ctx, c.pool, get_tx, &op);
	if (rc != 0)
		return rc;
	resp->service = op.out;
	return 0;
}

/* ---- filters shared by the lists ---- */

/*
 * The statuses of a filter as an SQL array literal ("{healthy,down}", in
 * enum order, NULL when empty); UNSPECIFIED or unknown values are MON_EINVAL
 * naming field[i].
 */
static int statuses_literal(struct arena *a, const char *field, const Monitoring__V1__ServiceStatus *statuses, size_t n,
                            const char **out, struct mon_error *err)
{
	bool has[5] = {false, false, false, false, false};
	*out = NULL;
	for (size_t i = 0; i < n; i++) {
		if (statuses[i] == MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_UNSPECIFIED)
			return mon_error_set(err, MON_EINVAL, "%s[%zu]: must not be UNSPECIFIED", field, i);
		if (health_status_name((int)statuses[i]) == NULL)
			return mon_error_set(err, MON_EINVAL, "%s[%zu]: unknown status %d", field, i, (int)statuses[i]);
		has[statuses[i]] = true;
	}
	if (n == 0)
		return 0;
	struct arena_str text;
	arena_str_init(&text, a);
	arena_str_append(&text, "{");
	for (int s = 1, k = 0; s <= 4; s++) {
		if (has[s])
			arena_str_printf(&text, "%s%s", k++ ? "," : "", health_status_name(s));
	}
	arena_str_append(&text, "}");
	*out = arena_str_get(&text);
	return *out ? 0 : mon_error_set(err, MON_ENOMEM, "out of memory");
}

/* The service types of a filter as an SQL array literal (closed list, sorted), NULL when empty. */
static int types_literal(struct arena *a, const char *field, char *const *types, size_t n, const char **out,
                         struct mon_error *err)
{
	enum { TYPE_N = sizeof(service_types) / sizeof(service_types[0]) };
	bool has[TYPE_N] = {false};
	*out = NULL;
	for (size_t i = 0; i < n; i++) {
		char name[48];
		snprintf(name, sizeof(name), "%s[%zu]", field, i);
		int rc = health_check_service_type(name, types[i], err);
		if (rc != 0)
			return rc;
		for (size_t t = 0; t < TYPE_N; t++)
			if (strcmp(types[i], service_types[t]) == 0)
				has[t] = true;
	}
	if (n == 0)
		return 0;
	struct arena_str text;
	arena_str_init(&text, a);
	arena_str_append(&text, "{");
	for (size_t t = 0, k = 0; t < TYPE_N; t++) {
		if (has[t])
			arena_str_printf(&text, "%s%s", k++ ? "," : "", service_types[t]);
	}
	arena_str_append(&text, "}");
	*out = arena_str_get(&text);
	return *out ? 0 : mon_error_set(err, MON_ENOMEM, "out of memory");
}

/*
 * The position of a services page in token: the last name and id, split
 * into the arena; MON_EINVAL "page_token: ..." when malformed.
 */
static int read_name_token(struct arena *a, const char *token, const char *filters, const char **name_out,
                           const char **id_out, struct mon_error *err)
{
	int rc =
	        svc_key_token_read(a, token, filters, PAGE_TOKEN_MAX, HEALTH_NAME_MAX_CHARS * 4, name_out, id_out, err);
	if (rc == 0 && health_check_id("page_token", *id_out, NULL) != 0)
		rc = mon_error_set(err, MON_EINVAL, "page_token: malformed");
	return rc;
}

/* ---- ListServices ---- */

struct list_op {
	struct call *call;
	const char *statuses; /* array literal or NULL */
	const char *types;    /* array literal or NULL */
	const char *after_name;
	const char *after_id; /* NULL: first page */
	int page_size;
	const char *filters;
	Monitoring__V1__ListServicesResponse *resp;
};

static int list_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
#define LIST_WHERE_SQL                                                                                                 \
	" WHERE ($1::service_status[] IS NULL OR s.status = ANY($1::service_status[]))"                                \
	" AND ($2::text[] IS NULL OR s.service_type = ANY($2::text[]))"
	static const char page_sql[] = "SELECT " SERVICE_COLUMNS " FROM tb_service_health s" LIST_WHERE_SQL
	                               " AND ($3::text IS NULL OR (s.name, s.id) > ($3, $4))"
	                               " ORDER BY s.name, s.id LIMIT $5::integer";
	static const char count_sql[] = "SELECT count(*) FROM tb_service_health s" LIST_WHERE_SQL;
#undef LIST_WHERE_SQL
	struct list_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	char limit[16];
	snprintf(limit, sizeof(limit), "%d", op->page_size + 1);
	const char *params[] = {op->statuses, op->types, op->after_name, op->after_id, limit};
	int rc = db_exec(conn, page_sql, 5, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res);
	int shown = rows > op->page_size ? op->page_size : rows;
	op->resp->services = shown > 0 ? arena_calloc(a, (size_t)shown, sizeof(*op->resp->services)) : NULL;
	if (shown > 0 && op->resp->services == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	for (int i = 0; i < shown; i++)
		if ((op->resp->services[i] = svc_msg(a, res, i, 0)) == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
	op->resp->n_services = (size_t)shown;
	op->resp->next_page_token = "";
	if (rows > op->page_size) {
		rc = svc_key_token_make(a, op->filters, db_result_value(res, shown - 1, 1),
		                        db_result_value(res, shown - 1, 0), PAGE_TOKEN_MAX, &op->resp->next_page_token,
		                        err);
		if (rc != 0)
			goto out;
	}
	db_result_free(res);
	res = NULL;
	rc = db_exec(conn, count_sql, 2, params, &res, err);
	if (rc == 0)
		op->resp->total_size = (int32_t)svc_parse_i64(db_result_value(res, 0, 0));
out:
	db_result_free(res);
	return rc;
}

/* ListServices (viewer): by name then id; the page token binds the statuses and types. */
static int list_services(struct rpc_ctx *ctx, const Monitoring__V1__ListServicesRequest *req,
                         Monitoring__V1__ListServicesResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct list_op op = {.call = &c, .resp = resp};
	int rc = svc_page_size(req->page_size, 50, 500, &op.page_size, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	rc = statuses_literal(c.arena, "statuses", req->statuses, req->n_statuses, &op.statuses, &err);
	if (rc == 0)
		rc = types_literal(c.arena, "service_types", req->service_types, req->n_service_types, &op.types, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	op.filters = arena_printf(c.arena, "services|%s|%s", op.statuses ? op.statuses : "", op.types ? op.types : "");
	if (op.filters == NULL)
		return svc_nomem(ctx);
	if (req->page_token != NULL && req->page_token[0] != '\0') {
		if (read_name_token(c.arena, req->page_token, op.filters, &op.after_name, &op.after_id, &err) != 0)
			return rpc_fail(ctx, err.code, "%s", err.msg);
	}
	return run_tx(&c, list_tx, &op);
}

/* ---- UpdateService ---- */

static const char *const writable_paths[8] = {"name",           "description", "service_type", "health_check_url",
                                              "check_interval", "timeout",     "retry_count",  "metrics"};
static const char *const output_only_paths[] = {"id",        "status",     "last_check", "uptime_24h",
                                                "uptime_7d", "uptime_30d", "created_at", "updated_at"};

/* Reads an update mask: each path writable (has[i] set) or refused naming it. */
static int read_mask(const Google__Protobuf__FieldMask *mask, bool has[8], struct mon_error *err)
{
	if (mask == NULL || mask->n_paths == 0)
		return mon_error_set(err, MON_EINVAL, "update_mask: must name at least one field");
	for (size_t i = 0; i < mask->n_paths; i++) {
		const char *p = mask->paths[i] ? mask->paths[i] : "";
		bool is_known = false;
		for (size_t k = 0; k < 8; k++)
			if (strcmp(p, writable_paths[k]) == 0) {
				has[k] = true;
				is_known = true;
			}
		for (size_t k = 0; !is_known && k < sizeof(output_only_paths) / sizeof(output_only_paths[0]); k++)
			if (strcmp(p, output_only_paths[k]) == 0)
				return mon_error_set(err, MON_EINVAL, "update_mask: \"%s\" is output only", p);
		if (!is_known) {
			char clipped[64];
			audit_clip_text(p, 40, clipped, sizeof(clipped));
			return mon_error_set(err, MON_EINVAL, "update_mask: unknown field \"%s\"", clipped);
		}
	}
	return 0;
}

struct update_op {
	const struct call *call;
	const Monitoring__V1__MonitoredService *in;
	bool has[8];
	Monitoring__V1__MonitoredService *out;
};

static int update_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char update_sql[] =
	        "UPDATE tb_service_health SET name = $2, description = $3, service_type = $4, health_check_url = "
	        "$5::varchar,"
	        " check_interval = $6::integer, timeout = $7::integer, retry_count = $8::integer, metrics = $9::jsonb,"
	        " updated_at = now(),"
	        " next_probe_at = CASE WHEN health_check_url IS DISTINCT FROM $5::varchar OR check_interval <> "
	        "$6::integer"
	        " THEN now() ELSE next_probe_at END WHERE id = $1";
	struct update_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *before_res = NULL, *after_res = NULL;
	json_t *before = NULL, *after = NULL;
	char num[3][16];
	const char *params[9];
	int rc = svc_select(conn, op->in->id, true, &before_res, err);
	if (rc != 0)
		goto out;
	struct svc_fields f = {
	        .id = op->in->id,
	        .name = arena_strdup(a, db_result_value(before_res, 0, 1)),
	        .description = arena_strdup(a, db_result_value(before_res, 0, 2)),
	        .service_type = arena_strdup(a, db_result_value(before_res, 0, 3)),
	        .url = arena_strdup(a, db_result_value(before_res, 0, 6)),
	        .check_interval_s = (int32_t)svc_parse_i64(db_result_value(before_res, 0, 7)),
	        .timeout_s = (int32_t)svc_parse_i64(db_result_value(before_res, 0, 8)),
	        .retry_count = (int32_t)svc_parse_i64(db_result_value(before_res, 0, 9)),
	        .metrics_json = arena_strdup(a, db_result_value(before_res, 0, 10)),
	};
	if (f.name == NULL || f.description == NULL || f.service_type == NULL || f.url == NULL ||
	    f.metrics_json == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = check_service_fields(a, op->call->probe_policy, op->in, op->has, &f, err);
	if (rc == 0 && (op->has[4] || op->has[5] || op->has[6]))
		rc = health_check_timing("service.", f.check_interval_s, f.timeout_s, f.retry_count, err);
	if (rc != 0)
		goto out;
	fields_params(&f, num, params);
	rc = db_exec(conn, update_sql, 9, params, NULL, err);
	if (rc == 0)
		rc = svc_select(conn, f.id, false, &after_res, err);
	if (rc != 0)
		goto out;
	before = svc_json(before_res, 0);
	after = svc_json(after_res, 0);
	op->out = svc_msg(a, after_res, 0, 0);
	if (before == NULL || after == NULL || op->out == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	struct arena_str what_text;
	arena_str_init(&what_text, a);
	arena_str_printf(&what_text, "changed monitored service \"%s\": ", f.id);
	for (size_t k = 0, n = 0; k < 8; k++) {
		if (op->has[k])
			arena_str_printf(&what_text, "%s%s", n++ ? ", " : "", writable_paths[k]);
	}
	const char *what = arena_str_get(&what_text);
	if (what == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = write_event(conn, op->call, "update", f.id, f.name, what, before, after, err);
	if (rc == 0)
		rc = health_event_append_tx(conn, "updated", f.id, NULL, err);
out:
	json_decref(before);
	json_decref(after);
	db_result_free(before_res);
	db_result_free(after_res);
	return rc;
}

/* update_service's response from its op (svc_reply_fn). */
static int update_service_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	(void)err;
	const struct update_op *op = arg;
	Monitoring__V1__UpdateServiceResponse *resp = (Monitoring__V1__UpdateServiceResponse *)(void *)msg;
	resp->service = op->out;
	return 0;
}

/* UpdateService (editor, declared): the fields in update_mask; timing is checked on the merged values. */
static int update_service(struct rpc_ctx *ctx, const Monitoring__V1__UpdateServiceRequest *req,
                          Monitoring__V1__UpdateServiceResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (req->service == NULL)
		return rpc_fail(ctx, MON_EINVAL, "service: must be set");
	struct update_op op = {.call = &c, .in = req->service};
	int rc = health_check_id("service.id", req->service->id, &err);
	if (rc == 0)
		rc = read_mask(req->update_mask, op.has, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	(void)resp; /* filled by update_service_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.pool, update_tx, update_service_reply, &op);
}

/* ---- DeleteService ---- */

struct delete_op {
	const struct call *call;
	const char *id;
	int64_t check_count;
};

static int delete_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct delete_op *op = arg;
	struct db_result *res = NULL, *count = NULL;
	json_t *before = NULL;
	const char *params[] = {op->id};
	int rc = svc_select(conn, op->id, true, &res, err);
	if (rc == 0)
		rc = db_exec(conn, "SELECT count(*) FROM tb_health_check_log WHERE service_id = $1", 1, params, &count,
		             err);
	if (rc == 0)
		rc = db_exec(conn, "DELETE FROM tb_service_health WHERE id = $1", 1, params, NULL, err);
	if (rc != 0)
		goto out;
	op->check_count = svc_parse_i64(db_result_value(count, 0, 0));
	before = svc_json(res, 0);
	if (before == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	const char *what = arena_printf(op->call->arena, "deleted monitored service \"%s\" and its %" PRId64 " checks",
	                                op->id, op->check_count);
	if (what == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	rc = write_event(conn, op->call, "delete", op->id, db_result_value(res, 0, 1), what, before, NULL, err);
	if (rc == 0)
		rc = health_event_append_tx(conn, "deleted", op->id, NULL, err);
out:
	json_decref(before);
	db_result_free(res);
	db_result_free(count);
	return rc;
}

/* delete_service's response from its op (svc_reply_fn). */
static int delete_service_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	(void)err;
	const struct delete_op *op = arg;
	Monitoring__V1__DeleteServiceResponse *resp = (Monitoring__V1__DeleteServiceResponse *)(void *)msg;
	resp->deleted_check_count = op->check_count;
	return 0;
}

/* DeleteService (editor, declared): the service, its check log and rollups (foreign keys cascade). */
static int delete_service(struct rpc_ctx *ctx, const Monitoring__V1__DeleteServiceRequest *req,
                          Monitoring__V1__DeleteServiceResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	if (health_check_id("service_id", req->service_id, &err) != 0)
		return rpc_fail(ctx, MON_EINVAL, "%s", err.msg);
	struct delete_op op = {.call = &c, .id = req->service_id};
	(void)resp; /* filled by delete_service_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.pool, delete_tx, delete_service_reply, &op);
}

/* ---- ReportHealthCheck ---- */

struct report_op {
	const struct call *call;
	struct health_check_result r;
	struct health_check_outcome outcome;
	Monitoring__V1__HealthCheck *check;
	Monitoring__V1__MonitoredService *service;
};

static int report_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char check_sql[] = "SELECT " CHECK_COLUMNS " FROM tb_health_check_log l WHERE l.id = $1";
	struct report_op *op = arg;
	struct db_result *res = NULL;
	char id[24];
	int rc = health_record_check_tx(conn, op->call->ctx, &op->r, &op->outcome, err);
	if (rc != 0)
		return rc;
	snprintf(id, sizeof(id), "%" PRId64, op->outcome.log_id);
	const char *params[] = {id};
	rc = db_exec(conn, check_sql, 1, params, &res, err);
	if (rc == 0 && (op->check = check_msg(op->call->arena, res, 0, 0)) == NULL)
		rc = svc_fail_nomem(err);
	if (rc == 0)
		rc = health_service_read_tx(conn, op->call->arena, op->r.service_id, &op->service, err);
	db_result_free(res);
	return rc;
}

/* report_health_check's response from its op (svc_reply_fn). */
static int report_health_check_reply(void *arg, ProtobufCMessage *msg, struct mon_error *err)
{
	(void)err;
	const struct report_op *op = arg;
	Monitoring__V1__ReportHealthCheckResponse *resp = (Monitoring__V1__ReportHealthCheckResponse *)(void *)msg;
	resp->check = op->check;
	resp->service = op->service;
	resp->is_status_changed = op->outcome.status != op->outcome.previous_status;
	resp->previous_status = (Monitoring__V1__ServiceStatus)op->outcome.previous_status;
	return 0;
}

/* ReportHealthCheck (editor, declared): one check through the health store. */
static int report_health_check(struct rpc_ctx *ctx, const Monitoring__V1__ReportHealthCheckRequest *req,
                               Monitoring__V1__ReportHealthCheckResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	const Monitoring__V1__HealthCheck *k = req->check;
	if (k == NULL)
		return rpc_fail(ctx, MON_EINVAL, "check: must be set");
	struct report_op op = {.call = &c};
	op.r.service_id = k->service_id;
	op.r.status = (int)k->status;
	op.r.response_time_ms = -1;
	op.r.source = "report";
	int rc = health_check_id("check.service_id", k->service_id, &err);
	if (rc == 0 && k->status == MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_UNSPECIFIED)
		rc = mon_error_set(&err, MON_EINVAL, "check.status: must not be UNSPECIFIED");
	if (rc == 0 && health_status_name((int)k->status) == NULL)
		rc = mon_error_set(&err, MON_EINVAL, "check.status: unknown status %d", (int)k->status);
	if (rc == 0 && k->response_time != NULL) {
		if (k->response_time->value < 0)
			rc = mon_error_set(&err, MON_EINVAL, "check.response_time: must not be negative");
		op.r.response_time_ms = k->response_time->value;
	}
	if (rc == 0 && k->error_message != NULL && k->error_message[0] != '\0') {
		rc = svc_check_text("check.error_message", k->error_message, 0, SIZE_MAX, HEALTH_ERROR_MESSAGE_MAX,
		                    SVC_TEXT_NO_CONTROLS, &err);
		op.r.error_message = k->error_message;
	}
	if (rc == 0 && k->details != NULL)
		rc = struct_text(c.arena, "check.details", k->details, &op.r.details_json, &err);
	if (rc == 0 && req->service_metrics != NULL)
		rc = struct_text(c.arena, "service_metrics", req->service_metrics, &op.r.metrics_json, &err);
	if (rc == 0 && k->checked_at != NULL) {
		rc = svc_time_ms("check.checked_at", k->checked_at, &op.r.checked_at_ms, &err);
		if (rc == 0 && op.r.checked_at_ms > mon_wall_ms() + FUTURE_SLACK_MS)
			rc = mon_error_set(&err, MON_EINVAL, "check.checked_at: more than 5 minutes in the future");
		if (rc == 0 && op.r.checked_at_ms == 0)
			rc = mon_error_set(&err, MON_EINVAL, "check.checked_at: not a valid time");
	}
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	(void)resp; /* filled by report_health_check_reply or by the replay of an idempotency key */
	return svc_run_change(ctx, c.pool, report_tx, report_health_check_reply, &op);
}

/* ---- ListHealthChecks ---- */

struct checks_op {
	struct call *call;
	const char *id;
	const char *start_ms;
	const char *end_ms;
	const char *statuses;
	const char *after_us; /* NULL: first page */
	const char *after_id;
	int page_size;
	const char *filters;
	Monitoring__V1__ListHealthChecksResponse *resp;
};

static int checks_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char sql[] = "SELECT " CHECK_COLUMNS " FROM tb_health_check_log l WHERE l.service_id = $1"
	                          " AND l.checked_at >= 'epoch'::timestamptz + $2::bigint * interval '1 millisecond'"
	                          " AND l.checked_at < 'epoch'::timestamptz + $3::bigint * interval '1 millisecond'"
	                          " AND ($4::service_status[] IS NULL OR l.status = ANY($4::service_status[]))"
	                          " AND ($5::bigint IS NULL OR (l.checked_at, l.id) <"
	                          " ('epoch'::timestamptz + $5::bigint * interval '1 microsecond', $6::bigint))"
	                          " ORDER BY l.checked_at DESC, l.id DESC LIMIT $7::integer";
	struct checks_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	char limit[16];
	const char *exist_params[] = {op->id};
	int rc = db_exec(conn, "SELECT 1 FROM tb_service_health WHERE id = $1", 1, exist_params, &res, err);
	if (rc != 0)
		goto out;
	if (db_result_rows(res) != 1) {
		rc = mon_error_set(err, MON_ENOTFOUND, "service \"%s\": not found", op->id);
		goto out;
	}
	db_result_free(res);
	res = NULL;
	snprintf(limit, sizeof(limit), "%d", op->page_size + 1);
	const char *params[] = {op->id, op->start_ms, op->end_ms, op->statuses, op->after_us, op->after_id, limit};
	rc = db_exec(conn, sql, 7, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res);
	int shown = rows > op->page_size ? op->page_size : rows;
	op->resp->checks = shown > 0 ? arena_calloc(a, (size_t)shown, sizeof(*op->resp->checks)) : NULL;
	if (shown > 0 && op->resp->checks == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	for (int i = 0; i < shown; i++)
		if ((op->resp->checks[i] = check_msg(a, res, i, 0)) == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
	op->resp->n_checks = (size_t)shown;
	op->resp->next_page_token = "";
	if (rows > op->page_size) {
		char cursor[64];
		snprintf(cursor, sizeof(cursor), "%s,%s", db_result_value(res, shown - 1, 6),
		         db_result_value(res, shown - 1, 0));
		rc = svc_page_token_make_in(a, op->filters, cursor, PAGE_TOKEN_MAX, &op->resp->next_page_token, err);
	}
out:
	db_result_free(res);
	return rc;
}

static bool is_digits(const char *p, size_t n, bool is_signed)
{
	if (n == 0)
		return false;
	if (is_signed && p[0] == '-') {
		p++;
		n--;
	}
	if (n == 0 || n > 19)
		return false;
	for (size_t i = 0; i < n; i++)
		if (p[i] < '0' || p[i] > '9')
			return false;
	return true;
}

/*
 * A time range to [start, end) in milliseconds: end absent is now, start
 * absent is end minus default_ms; start after end is MON_EINVAL.
 */
static int read_range(const char *field, const Monitoring__V1__TimeRange *tr, int64_t now_ms, int64_t default_ms,
                      int64_t *start_ms, int64_t *end_ms, struct mon_error *err)
{
	char name[64];
	*end_ms = now_ms;
	if (tr != NULL && tr->end_time != NULL) {
		snprintf(name, sizeof(name), "%s.end_time", field);
		int rc = svc_time_ms(name, tr->end_time, end_ms, err);
		if (rc != 0)
			return rc;
	}
	*start_ms = *end_ms - default_ms;
	if (tr != NULL && tr->start_time != NULL) {
		snprintf(name, sizeof(name), "%s.start_time", field);
		int rc = svc_time_ms(name, tr->start_time, start_ms, err);
		if (rc != 0)
			return rc;
	}
	if (*start_ms > *end_ms)
		return mon_error_set(err, MON_EINVAL, "%s: start_time is after end_time", field);
	return 0;
}

/* ListHealthChecks (viewer): one service's checks, newest first, by time range and status. */
static int list_health_checks(struct rpc_ctx *ctx, const Monitoring__V1__ListHealthChecksRequest *req,
                              Monitoring__V1__ListHealthChecksResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct checks_op op = {.call = &c, .id = req->service_id, .resp = resp};
	int64_t start_ms, end_ms;
	int rc = health_check_id("service_id", req->service_id, &err);
	if (rc == 0)
		rc = read_range("time_range", req->time_range, mon_wall_ms(), DAY_MS, &start_ms, &end_ms, &err);
	if (rc == 0)
		rc = statuses_literal(c.arena, "statuses", req->statuses, req->n_statuses, &op.statuses, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	rc = svc_page_size(req->page_size, 100, 1000, &op.page_size, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	op.start_ms = arena_printf(c.arena, "%" PRId64, start_ms);
	op.end_ms = arena_printf(c.arena, "%" PRId64, end_ms);
	if (op.start_ms == NULL || op.end_ms == NULL) /* never formatted below as NULL */
		return svc_nomem(ctx);
	/* Absent bounds stay "now" in the filters: later pages continue below the cursor. */
	const Monitoring__V1__TimeRange *tr = req->time_range;
	op.filters =
	        arena_printf(c.arena, "checks|%s|%s|%s|%s", req->service_id, tr && tr->start_time ? op.start_ms : "-",
	                     tr && tr->end_time ? op.end_ms : "now", op.statuses ? op.statuses : "");
	if (op.start_ms == NULL || op.end_ms == NULL || op.filters == NULL)
		return svc_nomem(ctx);
	if (req->page_token != NULL && req->page_token[0] != '\0') {
		char *cursor = NULL;
		if (svc_page_token_read_in(c.arena, req->page_token, op.filters, PAGE_TOKEN_MAX, &cursor, &err) != 0)
			return rpc_fail(ctx, err.code, "%s", err.msg);
		char *comma = strchr(cursor, ',');
		if (comma == NULL || !is_digits(cursor, (size_t)(comma - cursor), true) ||
		    !is_digits(comma + 1, strlen(comma + 1), false))
			return rpc_fail(ctx, MON_EINVAL, "page_token: malformed");
		*comma = '\0';
		op.after_us = cursor;
		op.after_id = comma + 1;
	}
	return run_tx(&c, checks_tx, &op);
}

/* ---- GetSystemHealthSummary ---- */

struct summary_op {
	const char *types;
	Monitoring__V1__GetSystemHealthSummaryResponse *resp;
	struct arena *arena;
};

static int summary_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	/* The data model's "overall system health status" query, with UNKNOWN counted too. */
	static const char sql[] = "SELECT count(*), count(*) FILTER (WHERE status = 'healthy'),"
	                          " count(*) FILTER (WHERE status = 'degraded'),"
	                          " count(*) FILTER (WHERE status = 'down'),"
	                          " count(*) FILTER (WHERE status = 'unknown'),"
	                          " round(avg(uptime_24h), 2)::float8,"
	                          " (extract(epoch FROM now()) * 1000000)::bigint"
	                          " FROM tb_service_health"
	                          " WHERE ($1::text[] IS NULL OR service_type = ANY($1::text[]))";
	struct summary_op *op = arg;
	struct db_result *res = NULL;
	const char *params[] = {op->types};
	int rc = db_exec(conn, sql, 1, params, &res, err);
	if (rc != 0)
		goto out;
	Monitoring__V1__GetSystemHealthSummaryResponse *r = op->resp;
	bool is_ok = true;
	r->total_services = (int32_t)svc_parse_i64(db_result_value(res, 0, 0));
	r->healthy_count = (int32_t)svc_parse_i64(db_result_value(res, 0, 1));
	r->degraded_count = (int32_t)svc_parse_i64(db_result_value(res, 0, 2));
	r->down_count = (int32_t)svc_parse_i64(db_result_value(res, 0, 3));
	r->unknown_count = (int32_t)svc_parse_i64(db_result_value(res, 0, 4));
	r->avg_uptime_24h = svc_double_from_col(op->arena, res, 0, 5, &is_ok);
	r->computed_at = svc_ts_from_us(op->arena, svc_parse_i64(db_result_value(res, 0, 6)));
	if (!is_ok || r->computed_at == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	if (r->down_count > 0)
		r->overall_status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DOWN;
	else if (r->degraded_count > 0)
		r->overall_status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_DEGRADED;
	else if (r->unknown_count > 0 || r->total_services == 0)
		r->overall_status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_UNKNOWN;
	else
		r->overall_status = MONITORING__V1__SERVICE_STATUS__SERVICE_STATUS_HEALTHY;
out:
	db_result_free(res);
	return rc;
}

static int get_system_health_summary(struct rpc_ctx *ctx, const Monitoring__V1__GetSystemHealthSummaryRequest *req,
                                     Monitoring__V1__GetSystemHealthSummaryResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct summary_op op = {.resp = resp, .arena = c.arena};
	if (types_literal(c.arena, "service_types", req->service_types, req->n_service_types, &op.types, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	return run_tx(&c, summary_tx, &op);
}

/* ---- ListServicesWithRecentChecks ---- */

struct recent_op {
	struct call *call;
	const char *statuses;
	const char *after_name;
	const char *after_id;
	int page_size;
	int check_count;
	const char *filters;
	Monitoring__V1__ListServicesWithRecentChecksResponse *resp;
};

/* An SQL text[] literal of ids (charset-checked ids need no escaping; others are quoted). */
static char *ids_literal(struct arena *a, const struct db_result *res, int rows)
{
	size_t cap = 3;
	for (int i = 0; i < rows; i++)
		cap += strlen(db_result_value(res, i, 0)) * 2 + 4;
	char *text = arena_alloc(a, cap);
	if (text == NULL)
		return NULL;
	size_t n = 0;
	text[n++] = '{';
	for (int i = 0; i < rows; i++) {
		if (i > 0)
			text[n++] = ',';
		text[n++] = '"';
		for (const char *p = db_result_value(res, i, 0); *p; p++) {
			if (*p == '"' || *p == '\\')
				text[n++] = '\\';
			text[n++] = *p;
		}
		text[n++] = '"';
	}
	text[n++] = '}';
	text[n] = '\0';
	return text;
}

static int recent_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	static const char page_sql[] = "SELECT " SERVICE_COLUMNS " FROM tb_service_health s"
	                               " WHERE ($1::service_status[] IS NULL OR s.status = ANY($1::service_status[]))"
	                               " AND ($2::text IS NULL OR (s.name, s.id) > ($2, $3))"
	                               " ORDER BY s.name, s.id LIMIT $4::integer";
	/* The data model's "service health with recent checks" query, for one page of services. */
	static const char checks_sql[] =
	        "SELECT s.id, " CHECK_COLUMNS " FROM unnest($1::text[]) AS s(id)"
	        " CROSS JOIN LATERAL (SELECT * FROM tb_health_check_log c WHERE c.service_id = s.id"
	        " ORDER BY c.checked_at DESC, c.id DESC LIMIT $2::integer) l"
	        " ORDER BY s.id, l.checked_at DESC, l.id DESC";
	struct recent_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *res = NULL, *checks = NULL;
	char limit[16], per[16];
	snprintf(limit, sizeof(limit), "%d", op->page_size + 1);
	snprintf(per, sizeof(per), "%d", op->check_count);
	const char *params[] = {op->statuses, op->after_name, op->after_id, limit};
	int rc = db_exec(conn, page_sql, 4, params, &res, err);
	if (rc != 0)
		goto out;
	int rows = db_result_rows(res);
	int shown = rows > op->page_size ? op->page_size : rows;
	Monitoring__V1__ListServicesWithRecentChecksResponse *r = op->resp;
	r->services = shown > 0 ? arena_calloc(a, (size_t)shown, sizeof(*r->services)) : NULL;
	if (shown > 0 && r->services == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	for (int i = 0; i < shown; i++) {
		Monitoring__V1__ServiceWithRecentChecks *item = arena_alloc(a, sizeof(*item));
		if (item == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		monitoring__v1__service_with_recent_checks__init(item);
		item->service = svc_msg(a, res, i, 0);
		if (item->service == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		r->services[i] = item;
	}
	r->n_services = (size_t)shown;
	r->next_page_token = "";
	if (shown > 0 && op->check_count > 0) {
		const char *ids = ids_literal(a, res, shown);
		if (ids == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		const char *check_params[] = {ids, per};
		rc = db_exec(conn, checks_sql, 2, check_params, &checks, err);
		if (rc != 0)
			goto out;
		int check_rows = db_result_rows(checks);
		for (int i = 0; i < shown; i++) {
			Monitoring__V1__ServiceWithRecentChecks *item = r->services[i];
			item->recent_checks = arena_calloc(a, (size_t)op->check_count, sizeof(*item->recent_checks));
			if (item->recent_checks == NULL) {
				rc = svc_fail_nomem(err);
				goto out;
			}
			for (int k = 0; k < check_rows; k++) {
				if (strcmp(db_result_value(checks, k, 0), item->service->id) != 0 ||
				    item->n_recent_checks >= (size_t)op->check_count)
					continue;
				Monitoring__V1__HealthCheck *m = check_msg(a, checks, k, 1);
				if (m == NULL) {
					rc = svc_fail_nomem(err);
					goto out;
				}
				item->recent_checks[item->n_recent_checks++] = m;
			}
		}
	}
	if (rows > op->page_size)
		rc = svc_key_token_make(a, op->filters, db_result_value(res, shown - 1, 1),
		                        db_result_value(res, shown - 1, 0), PAGE_TOKEN_MAX, &r->next_page_token, err);
out:
	db_result_free(res);
	db_result_free(checks);
	return rc;
}

static int list_services_with_recent_checks(struct rpc_ctx *ctx,
                                            const Monitoring__V1__ListServicesWithRecentChecksRequest *req,
                                            Monitoring__V1__ListServicesWithRecentChecksResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct recent_op op = {.call = &c, .resp = resp};
	if (req->recent_check_count < 0 || req->recent_check_count > 100)
		return rpc_fail(ctx, MON_EINVAL, "recent_check_count: must be 0 to 100");
	op.check_count = req->recent_check_count == 0 ? 10 : req->recent_check_count;
	int rc = svc_page_size(req->page_size, 50, 200, &op.page_size, &err);
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	if (statuses_literal(c.arena, "statuses", req->statuses, req->n_statuses, &op.statuses, &err) != 0)
		return rpc_fail(ctx, err.code, "%s", err.msg);
	op.filters = arena_printf(c.arena, "recent|%s", op.statuses ? op.statuses : "");
	if (op.filters == NULL)
		return svc_nomem(ctx);
	if (req->page_token != NULL && req->page_token[0] != '\0') {
		if (read_name_token(c.arena, req->page_token, op.filters, &op.after_name, &op.after_id, &err) != 0)
			return rpc_fail(ctx, err.code, "%s", err.msg);
	}
	return run_tx(&c, recent_tx, &op);
}

/* ---- GetServiceUptime ---- */

struct uptime_op {
	struct call *call;
	const char *id;
	int64_t now_ms;
	bool has_custom;
	int64_t custom_start_ms, custom_end_ms;
	Monitoring__V1__GetServiceUptimeResponse *resp;
};

static int window_tx(struct db_conn *conn, struct arena *a, const char *id, const char *label, int64_t start_ms,
                     int64_t end_ms, int64_t now_ms, Monitoring__V1__UptimeWindow **out, struct mon_error *err)
{
	static const char sql[] = "SELECT up_ms, down_ms, check_count, incident_count FROM health_uptime_window($1,"
	                          " 'epoch'::timestamptz + $2::bigint * interval '1 millisecond',"
	                          " 'epoch'::timestamptz + $3::bigint * interval '1 millisecond',"
	                          " 'epoch'::timestamptz + $4::bigint * interval '1 millisecond')";
	struct db_result *res = NULL;
	char start[24], end[24], now[24];
	snprintf(start, sizeof(start), "%" PRId64, start_ms);
	snprintf(end, sizeof(end), "%" PRId64, end_ms);
	snprintf(now, sizeof(now), "%" PRId64, now_ms);
	const char *params[] = {id, start, end, now};
	int rc = db_exec(conn, sql, 4, params, &res, err);
	if (rc != 0)
		goto out;
	Monitoring__V1__UptimeWindow *w = arena_alloc(a, sizeof(*w));
	Monitoring__V1__TimeRange *tr = arena_alloc(a, sizeof(*tr));
	if (w == NULL || tr == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	monitoring__v1__uptime_window__init(w);
	monitoring__v1__time_range__init(tr);
	tr->start_time = svc_ts_from_us(a, start_ms * 1000);
	tr->end_time = svc_ts_from_us(a, end_ms * 1000);
	w->window = (char *)label;
	w->time_range = tr;
	int64_t up_ms = svc_parse_i64(db_result_value(res, 0, 0));
	int64_t down_ms = svc_parse_i64(db_result_value(res, 0, 1));
	w->up_seconds = up_ms / 1000;
	w->down_seconds = down_ms / 1000;
	w->unknown_seconds = (end_ms - start_ms) / 1000 - w->up_seconds - w->down_seconds;
	if (w->unknown_seconds < 0)
		w->unknown_seconds = 0;
	w->check_count = (int32_t)svc_parse_i64(db_result_value(res, 0, 2));
	w->incident_count = (int32_t)svc_parse_i64(db_result_value(res, 0, 3));
	double percent;
	if (health_uptime_percent(up_ms, down_ms, &percent)) {
		w->uptime_percent = arena_alloc(a, sizeof(*w->uptime_percent));
		if (w->uptime_percent == NULL) {
			rc = svc_fail_nomem(err);
			goto out;
		}
		google__protobuf__double_value__init(w->uptime_percent);
		w->uptime_percent->value = percent;
	}
	if (tr->start_time == NULL || tr->end_time == NULL) {
		rc = svc_fail_nomem(err);
		goto out;
	}
	*out = w;
out:
	db_result_free(res);
	return rc;
}

static int uptime_tx(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct uptime_op *op = arg;
	struct arena *a = op->call->arena;
	struct db_result *res = NULL;
	const char *params[] = {op->id};
	int rc = db_exec(conn, "SELECT 1 FROM tb_service_health WHERE id = $1", 1, params, &res, err);
	if (rc != 0)
		goto out;
	if (db_result_rows(res) != 1) {
		rc = mon_error_set(err, MON_ENOTFOUND, "service \"%s\": not found", op->id);
		goto out;
	}
	Monitoring__V1__GetServiceUptimeResponse *r = op->resp;
	r->service_id = (char *)op->id;
	rc = window_tx(conn, a, op->id, "24h", op->now_ms - DAY_MS, op->now_ms, op->now_ms, &r->uptime_24h, err);
	if (rc == 0)
		rc = window_tx(conn, a, op->id, "7d", op->now_ms - 7 * DAY_MS, op->now_ms, op->now_ms, &r->uptime_7d,
		               err);
	if (rc == 0)
		rc = window_tx(conn, a, op->id, "30d", op->now_ms - 30 * DAY_MS, op->now_ms, op->now_ms, &r->uptime_30d,
		               err);
	if (rc == 0 && op->has_custom)
		rc = window_tx(conn, a, op->id, "custom", op->custom_start_ms, op->custom_end_ms, op->now_ms,
		               &r->custom, err);
out:
	db_result_free(res);
	return rc;
}

/*
 * GetServiceUptime (viewer): the three windows and an optional custom one
 * (absent start: 24 hours before its end; absent end: now), which must lie
 * within the check log's retention and not be empty.
 */
static int get_service_uptime(struct rpc_ctx *ctx, const Monitoring__V1__GetServiceUptimeRequest *req,
                              Monitoring__V1__GetServiceUptimeResponse *resp)
{
	struct call c;
	struct mon_error err = {0};
	call_init(&c, ctx);
	struct uptime_op op = {.call = &c, .id = req->service_id, .now_ms = mon_wall_ms(), .resp = resp};
	int rc = health_check_id("service_id", req->service_id, &err);
	if (rc == 0 && req->custom_range != NULL) {
		op.has_custom = true;
		rc = read_range("custom_range", req->custom_range, op.now_ms, DAY_MS, &op.custom_start_ms,
		                &op.custom_end_ms, &err);
		if (rc == 0 && op.custom_start_ms == op.custom_end_ms)
			rc = mon_error_set(&err, MON_EINVAL, "custom_range: must not be empty");
		if (rc == 0 && op.custom_start_ms < op.now_ms - RETENTION_DAYS * DAY_MS)
			rc = mon_error_set(
			        &err, MON_EINVAL,
			        "custom_range.start_time: must be within the last %d days (check log retention)",
			        RETENTION_DAYS);
		if (rc == 0 && op.custom_end_ms > op.now_ms + FUTURE_SLACK_MS)
			rc = mon_error_set(&err, MON_EINVAL, "custom_range.end_time: must not be in the future");
	}
	if (rc != 0)
		return rpc_fail(ctx, rc, "%s", err.msg);
	return run_tx(&c, uptime_tx, &op);
}

void health_registry_handlers(struct monitoring_v1_health_service_handlers *h)
{
	h->create_service = create_service;
	h->get_service = get_service;
	h->list_services = list_services;
	h->update_service = update_service;
	h->delete_service = delete_service;
	h->report_health_check = report_health_check;
	h->list_health_checks = list_health_checks;
	h->get_system_health_summary = get_system_health_summary;
	h->list_services_with_recent_checks = list_services_with_recent_checks;
	h->get_service_uptime = get_service_uptime;
}
