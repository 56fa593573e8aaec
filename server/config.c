/*
 * monitord's configuration loader. One table lists every setting: its name
 * (the long flag without dashes, also the config-file key and, upper-cased
 * with '_', the MONITORD_ variable), its type and limits, its default as
 * text, and its help. The default goes through the same parser as every
 * other layer, so defaults, the file, the environment and flags are checked
 * alike. See config.h for the contract and docs/operations.md for the
 * settings and why their limits are what they are.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

enum setting_kind {
	KIND_LISTEN,     /* char * plus the parsed listen_addr */
	KIND_STRING,     /* char *, must not be empty */
	KIND_OPT_STRING, /* char *, "" stores NULL */
	KIND_LOG_LEVEL,  /* enum log_level */
	KIND_INT,        /* int within [min, max] */
	KIND_SIZE,       /* size_t within [min, max] */
	KIND_BOOL        /* bool */
};

struct setting {
	const char *name;
	enum setting_kind kind;
	size_t offset;
	long long min;
	long long max;
	const char *def;       /* default as text; NULL = unset */
	const char *def_shown; /* default as --help shows it, when not def */
	const char *metavar;
	const char *help;
};

#define OFF(field) offsetof(struct mon_config, field)

static const struct setting settings[] = {
        {"listen", KIND_LISTEN, OFF(listen), 0, 0, "127.0.0.1:50051", NULL, "ADDR",
         "Address to serve gRPC on: HOST:PORT, [IPV6]:PORT or unix:PATH. Port 0 "
         "picks a free port (see port-file). Plaintext is refused off loopback "
         "unless TLS is set or allow-insecure-remote is true."},
        {"database", KIND_OPT_STRING, OFF(database), 0, 0, "", "empty (embedded cluster)", "CONNINFO",
         "PostgreSQL to use: a libpq conninfo (\"host=/run/postgresql dbname=monitoring\") "
         "or a postgresql:// URL. Empty starts an embedded cluster in data-dir. "
         "DATABASE_URL is read too, below MONITORD_DATABASE."},
        {"data-dir", KIND_STRING, OFF(data_dir), 0, 0, "./.data/postgres", ".data/postgres under the working directory",
         "DIR", "Directory of the embedded PostgreSQL cluster (used when database is empty)."},
        {"port-file", KIND_OPT_STRING, OFF(port_file), 0, 0, "", "none", "FILE",
         "Once listening, write the bound address (\"127.0.0.1:PORT\") to FILE, "
         "for scripts and tests that listen on port 0."},
        {"log-level", KIND_LOG_LEVEL, OFF(log_level), 0, 0, "info", NULL, "LEVEL",
         "Lowest level logged: debug, info, warn or error."},
        {"cq-threads", KIND_INT, OFF(cq_threads), 1, 64, "2", NULL, "N",
         "gRPC completion-queue threads taking new server streams; they never block. One per core is "
         "plenty. One more thread takes every other call."},
        {"worker-threads", KIND_INT, OFF(worker_threads), 1, 1024, "8", NULL, "N",
         "Threads running blocking handler work (database calls)."},
        {"db-pool-size", KIND_INT, OFF(db_pool_size), 1, 1000, "8", NULL, "N",
         "PostgreSQL connections held by this process."},
        {"max-recv-message-bytes", KIND_SIZE, OFF(max_recv_message_bytes), 1024, 268435456, "4194304", NULL, "BYTES",
         "Largest request message accepted; larger ones get RESOURCE_EXHAUSTED."},
        {"max-send-message-bytes", KIND_SIZE, OFF(max_send_message_bytes), 1024, 268435456, "16777216", NULL, "BYTES",
         "Largest response message sent."},
        {"max-concurrent-streams", KIND_INT, OFF(max_concurrent_streams), 1, 100000, "1000", NULL, "N",
         "Concurrent calls (HTTP/2 streams) per client connection."},
        {"keepalive-min-ping-ms", KIND_INT, OFF(keepalive_min_ping_ms), 1000, 86400000, "60000", NULL, "MS",
         "Clients pinging more often than this are sent GOAWAY."},
        {"keepalive-time-ms", KIND_INT, OFF(keepalive_time_ms), 1000, 86400000, "7200000", NULL, "MS",
         "The server pings a connection idle this long."},
        {"keepalive-timeout-ms", KIND_INT, OFF(keepalive_timeout_ms), 1000, 3600000, "20000", NULL, "MS",
         "A connection whose ping is not answered within this is closed."},
        {"handshake-timeout-ms", KIND_INT, OFF(handshake_timeout_ms), 100, 300000, "10000", NULL, "MS",
         "A new connection must finish its HTTP/2 (and TLS) handshake within this."},
        {"stream-queue-max", KIND_SIZE, OFF(stream_queue_max), 1, 1000000, "1024", NULL, "N",
         "Messages buffered per server stream; a subscriber that falls further "
         "behind is told so (and can resume) instead of growing memory."},
        {"shutdown-grace-ms", KIND_INT, OFF(shutdown_grace_ms), 0, 3600000, "10000", NULL, "MS",
         "On SIGTERM/SIGINT, time given to in-flight calls before they are cancelled."},
        {"tls-cert", KIND_OPT_STRING, OFF(tls_cert), 0, 0, "", "none (plaintext)", "FILE",
         "Server certificate chain (PEM). Set together with tls-key."},
        {"tls-key", KIND_OPT_STRING, OFF(tls_key), 0, 0, "", "none", "FILE",
         "Server private key (PEM). Set together with tls-cert."},
        {"tls-client-ca", KIND_OPT_STRING, OFF(tls_client_ca), 0, 0, "", "none", "FILE",
         "CA bundle (PEM); when set, clients must present a certificate it signed (mutual TLS)."},
        {"allow-insecure-remote", KIND_BOOL, OFF(allow_insecure_remote), 0, 0, "false", NULL, "BOOL",
         "Allow plaintext on addresses other than loopback and Unix sockets."},
        {"db-statement-timeout-ms", KIND_INT, OFF(db_statement_timeout_ms), 100, 86400000, "30000", NULL, "MS",
         "statement_timeout for a call with no deadline (a call's deadline wins)."},
        {"auth", KIND_BOOL, OFF(auth), 0, 0, "true", NULL, "BOOL",
         "Require credentials (an API key or a client certificate) and check each "
         "method's role. false is for development on loopback or Unix sockets only."},
        {"auth-standard-services", KIND_BOOL, OFF(auth_standard_services), 0, 0, "false", NULL, "BOOL",
         "Also require a viewer for the standard health and reflection services "
         "(open by default, for load balancers and grpcurl)."},
        {"rate-limit-per-s", KIND_INT, OFF(rate_limit_per_s), 0, 1000000, "1000", NULL, "N",
         "Calls per second allowed to each caller (token bucket); 0 = unlimited. "
         "Past it: RESOURCE_EXHAUSTED with a retry hint."},
        {"rate-limit-burst", KIND_INT, OFF(rate_limit_burst), 0, 10000000, "2000", NULL, "N",
         "Calls a caller may make at once before the rate applies (the bucket size)."},
        {"max-streams-per-caller", KIND_INT, OFF(max_streams_per_caller), 0, 1000000, "1000", NULL, "N",
         "Open server streams (watches, exports) per caller; 0 = unlimited."},
        {"probe-concurrency", KIND_INT, OFF(probe_concurrency), 1, 256, "8", NULL, "N",
         "Health probes this process runs at once (each service with a health_check_url "
         "is probed by one replica every check_interval)."},
        {"probe-proxy", KIND_OPT_STRING, OFF(probe_proxy), 0, 0, "", "none", "URL",
         "Proxy for http(s) health probes; proxy environment variables are ignored."},
        {"probe-run-concurrency", KIND_INT, OFF(probe_run_concurrency), 1, 256, "4", NULL, "N",
         "RunHealthCheck probes this process runs at once, on threads of their own; "
         "past it: RESOURCE_EXHAUSTED with a retry hint."},
        {"probe-allow-networks", KIND_OPT_STRING, OFF(probe_allow_networks), 0, 0, "", "any address not denied",
         "CIDRS",
         "Comma-separated networks (IPv4 and IPv6 CIDR) health probes may connect to; "
         "empty allows every address not denied."},
        {"probe-deny-networks", KIND_OPT_STRING, OFF(probe_deny_networks), 0, 0, "169.254.0.0/16,fe80::/10", NULL,
         "CIDRS",
         "Comma-separated networks health probes never connect to (wins over the allow list); "
         "IPv4 networks cover their IPv4-mapped IPv6 forms. Empty denies nothing."},
        {"probe-follow-cross-host-redirects", KIND_BOOL, OFF(probe_cross_host_redirects), 0, 0, "false", NULL, "BOOL",
         "Follow an http(s) probe's redirect to another host (the new address is still checked "
         "against the networks above); a redirect within the same host is always followed."},
        {"health-check-retention-days", KIND_INT, OFF(health_check_retention_days), 1, 3650, "30", NULL, "DAYS",
         "Health check log rows older than this are removed (hourly, by one replica)."},
        {"metrics-raw-retention-days", KIND_INT, OFF(metrics_raw_retention_days), 1, 3650, "7", NULL, "DAYS",
         "Raw performance metric points are kept this long (whole daily partitions are dropped); "
         "the 5-minute and hourly rollups keep the longer history."},
        {"metrics-5min-retention-days", KIND_INT, OFF(metrics_5min_retention_days), 1, 3650, "90", NULL, "DAYS",
         "5-minute metric rollups are kept this long (weekly partitions); at least metrics-raw-retention-days."},
        {"metrics-hourly-retention-days", KIND_INT, OFF(metrics_hourly_retention_days), 1, 36500, "365", NULL, "DAYS",
         "Hourly metric rollups are kept this long (monthly partitions); at least "
         "metrics-5min-retention-days."},
        {"metrics-rollup-interval-ms", KIND_INT, OFF(metrics_rollup_interval_ms), 1000, 86400000, "10000", NULL, "MS",
         "How often one replica starts bringing the metric rollups up to date and applying retention; "
         "queries read the raw points for what the rollups do not hold yet."},
        {"metrics-replay-window-s", KIND_INT, OFF(metrics_replay_window_s), 10, 86400, "600", NULL, "SECONDS",
         "Committed metric batches stay in the ingest log this long, so a WatchMetrics "
         "subscriber that reconnects within it resumes without a gap."},
        {"alert-tick-ms", KIND_INT, OFF(alert_tick_ms), 100, 60000, "1000", NULL, "MS",
         "How often each replica looks for alert rules due for evaluation, pending alerts due to fire "
         "and alerts due to escalate (rules are also evaluated at once when a matching point is recorded)."},
        {"alert-retention-days", KIND_INT, OFF(alert_retention_days), 1, 3650, "90", NULL, "DAYS",
         "Resolved alerts, their deliveries and alert change events older than this are removed."},
        {"idempotency-retention-hours", KIND_INT, OFF(idempotency_retention_hours), 1, 8760, "24", NULL, "HOURS",
         "The outcome of a call made with an idempotency key (request_id) is kept this long; a retry with "
         "the key after that runs again."},
        {"notify-max-attempts", KIND_INT, OFF(notify_max_attempts), 1, 100, "8", NULL, "N",
         "Attempts of one notification delivery before it is dead-lettered (status failed)."},
        {"notify-timeout-ms", KIND_INT, OFF(notify_timeout_ms), 100, 600000, "10000", NULL, "MS",
         "Time allowed to one delivery attempt (webhook, Slack or PagerDuty request)."},
        {"secrets-key-file", KIND_OPT_STRING, OFF(secrets_key_file), 0, 0, "", "none", "FILE",
         "File holding the 32-byte master key (64 hex digits) that seals integration secrets such as "
         "webhook signing secrets; without it, no secret can be stored or used."},
};

#define SETTING_COUNT (sizeof(settings) / sizeof(settings[0]))
_Static_assert(SETTING_COUNT == MON_CONFIG_SETTING_COUNT, "MON_CONFIG_SETTING_COUNT must match the table");

#define LINE_MAX_BYTES 4096
#define VALUE_SHOWN_MAX 200 /* bytes of a bad value quoted in a message */

/* ---- small helpers ---- */

/* Compares a setting name with text[0..len), treating '-' and '_' alike. */
static bool name_equals(const char *name, const char *text, size_t len)
{
	size_t i = 0;
	for (; i < len && name[i] != '\0'; i++) {
		char a = name[i] == '_' ? '-' : name[i];
		char b = text[i] == '_' ? '-' : text[i];
		if (a != b)
			return false;
	}
	return i == len && name[i] == '\0';
}

static const struct setting *find_setting(const char *text, size_t len)
{
	for (size_t i = 0; i < SETTING_COUNT; i++) {
		if (name_equals(settings[i].name, text, len))
			return &settings[i];
	}
	return NULL;
}

static size_t setting_index(const struct setting *s)
{
	return (size_t)(s - settings);
}

/* "max-concurrent-streams" -> "MONITORD_MAX_CONCURRENT_STREAMS" */
static void env_name_of(const char *name, char *buf, size_t buf_len)
{
	int n = snprintf(buf, buf_len, "MONITORD_%s", name);
	if (n < 0)
		return;
	for (char *p = buf; *p != '\0'; p++) {
		if (*p == '-')
			*p = '_';
		else
			*p = (char)toupper((unsigned char)*p);
	}
}

/* The value of NAME in a "NAME=value" array, or NULL. */
static const char *env_get(char **envp, const char *name)
{
	size_t len = strlen(name);
	for (char **e = envp; e != NULL && *e != NULL; e++) {
		if (strncmp(*e, name, len) == 0 && (*e)[len] == '=')
			return *e + len + 1;
	}
	return NULL;
}

static bool ascii_case_equal(const char *a, const char *b)
{
	for (; *a != '\0' && *b != '\0'; a++, b++) {
		if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
			return false;
	}
	return *a == *b;
}

/*
 * Parses a whole decimal integer (optional '-', digits only, no spaces).
 * Returns false when text is not one or does not fit a long long.
 */
static bool parse_integer(const char *text, long long *out)
{
	const char *p = text;
	if (*p == '-')
		p++;
	if (!isdigit((unsigned char)*p))
		return false;
	errno = 0;
	char *end = NULL;
	long long v = strtoll(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0')
		return false;
	*out = v;
	return true;
}

int mon_config_parse_bool(const char *setting_name, const char *text, bool *out, struct mon_error *err)
{
	static const char *const yes[] = {"true", "1", "yes", "on"};
	static const char *const no[] = {"false", "0", "no", "off"};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (ascii_case_equal(text, yes[i])) {
			*out = true;
			return 0;
		}
		if (ascii_case_equal(text, no[i])) {
			*out = false;
			return 0;
		}
	}
	return mon_error_set(err, MON_EINVAL, "%s: must be true or false (also 1/0, yes/no, on/off), got \"%.*s\"",
	                     setting_name, VALUE_SHOWN_MAX, text);
}

static bool is_bool_word(const char *text)
{
	bool ignored;
	return mon_config_parse_bool("", text, &ignored, NULL) == 0;
}

/* ---- listen addresses ---- */

static bool host_name_is_valid(const char *host, size_t len)
{
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)host[i];
		if (!isalnum(c) && c != '-' && c != '.')
			return false;
	}
	return true;
}

static bool ipv4_is_loopback(const struct in_addr *a)
{
	return (ntohl(a->s_addr) >> 24) == 127;
}

static bool ipv6_is_loopback(const struct in6_addr *a)
{
	static const unsigned char mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (IN6_IS_ADDR_LOOPBACK(a))
		return true;
	return memcmp(a->s6_addr, mapped_prefix, sizeof(mapped_prefix)) == 0 && a->s6_addr[12] == 127;
}

static int listen_error(struct mon_error *err, const char *text, const char *why)
{
	return mon_error_set(err, MON_EINVAL, "listen: %s, got \"%.*s\" (expected HOST:PORT, [IPV6]:PORT or unix:PATH)",
	                     why, VALUE_SHOWN_MAX, text);
}

int mon_listen_addr_parse(const char *text, struct mon_listen_addr *out, struct mon_error *err)
{
	memset(out, 0, sizeof(*out));
	if (strncmp(text, "unix:", 5) == 0) {
		const char *path = text + 5;
		/* gRPC spells absolute paths unix:/p and unix:///p alike. */
		if (strncmp(path, "//", 2) == 0) {
			if (path[2] != '/')
				return listen_error(err, text, "a unix:// address needs an absolute path");
			path += 2;
		}
		size_t len = strlen(path);
		if (len == 0)
			return listen_error(err, text, "missing socket path");
		if (len >= sizeof(out->path))
			return mon_error_set(err, MON_EINVAL,
			                     "listen: socket path must be shorter than %zu bytes, got %zu",
			                     sizeof(out->path), len);
		memcpy(out->path, path, len + 1);
		out->is_unix = true;
		out->port = -1;
		return 0;
	}

	const char *host = text;
	size_t host_len = 0;
	const char *port_text = NULL;
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (close == NULL)
			return listen_error(err, text, "missing ']'");
		host = text + 1;
		host_len = (size_t)(close - host);
		if (close[1] != ':')
			return listen_error(err, text, "missing port");
		port_text = close + 2;
		out->is_ipv6 = true;
	} else {
		if (strstr(text, "://") != NULL)
			return listen_error(err, text, "unsupported scheme (only unix: is accepted)");
		const char *colon = strrchr(text, ':');
		if (colon == NULL)
			return listen_error(err, text, "missing port");
		if (memchr(text, ':', (size_t)(colon - text)) != NULL)
			return listen_error(err, text, "IPv6 addresses must be written in brackets");
		host_len = (size_t)(colon - text);
		port_text = colon + 1;
	}
	if (host_len == 0)
		return listen_error(err, text, "missing host");
	if (host_len >= sizeof(out->host))
		return listen_error(err, text, "host too long");
	memcpy(out->host, host, host_len);
	out->host[host_len] = '\0';

	long long port = -1;
	if (!parse_integer(port_text, &port) || port_text[0] == '-' || port > 65535)
		return mon_error_set(err, MON_EINVAL, "listen: port must be between 0 and 65535, got \"%.*s\"",
		                     VALUE_SHOWN_MAX, port_text);
	out->port = (int)port;

	if (out->is_ipv6) {
		/* A zone ("fe80::1%eth0") is kept in host; only the address is checked. */
		char addr_only[sizeof(out->host)];
		size_t addr_len = strcspn(out->host, "%");
		memcpy(addr_only, out->host, addr_len);
		addr_only[addr_len] = '\0';
		struct in6_addr a6;
		if (inet_pton(AF_INET6, addr_only, &a6) != 1)
			return listen_error(err, text, "not an IPv6 address");
		out->is_loopback = ipv6_is_loopback(&a6);
		return 0;
	}
	struct in_addr a4;
	if (inet_pton(AF_INET, out->host, &a4) == 1) {
		out->is_loopback = ipv4_is_loopback(&a4);
		return 0;
	}
	if (!host_name_is_valid(out->host, host_len))
		return listen_error(err, text, "not an IPv4 address or host name");
	out->is_loopback = ascii_case_equal(out->host, "localhost");
	return 0;
}

int mon_listen_addr_format(const struct mon_listen_addr *addr, int port, char *buf, size_t buf_len)
{
	int n;
	if (addr->is_unix) /* a path that starts with "//" needs the unix:// form to read back */
		n = snprintf(buf, buf_len, "unix:%s%s", strncmp(addr->path, "//", 2) == 0 ? "//" : "", addr->path);
	else if (addr->is_ipv6)
		n = snprintf(buf, buf_len, "[%s]:%d", addr->host, port);
	else
		n = snprintf(buf, buf_len, "%s:%d", addr->host, port);
	if (n < 0 || (size_t)n >= buf_len)
		return MON_ENOMEM;
	return 0;
}

/* ---- conninfo redaction ---- */

struct outbuf {
	char *buf;
	size_t len;
	size_t cap;
};

static void out_put(struct outbuf *o, const char *s, size_t n)
{
	if (o->cap == 0)
		return;
	size_t room = o->cap - 1 - o->len;
	if (n > room)
		n = room;
	memcpy(o->buf + o->len, s, n);
	o->len += n;
	o->buf[o->len] = '\0';
}

static void out_puts(struct outbuf *o, const char *s)
{
	out_put(o, s, strlen(s));
}

static void redact_url(const char *u, struct outbuf *o)
{
	const char *auth = strstr(u, "://") + 3;
	out_put(o, u, (size_t)(auth - u));
	size_t auth_len = strcspn(auth, "/?");
	const char *at = NULL;
	for (const char *p = auth; p < auth + auth_len; p++) {
		if (*p == '@')
			at = p;
	}
	if (at != NULL) {
		const char *colon = memchr(auth, ':', (size_t)(at - auth));
		if (colon != NULL) {
			out_put(o, auth, (size_t)(colon - auth) + 1);
			out_puts(o, "***");
			out_put(o, at, (size_t)(auth + auth_len - at));
		} else {
			out_put(o, auth, auth_len);
		}
	} else {
		out_put(o, auth, auth_len);
	}
	const char *p = auth + auth_len;
	size_t path_len = strcspn(p, "?");
	out_put(o, p, path_len);
	p += path_len;
	if (*p == '\0')
		return;
	out_put(o, p, 1); /* '?' */
	p++;
	while (*p != '\0') {
		size_t param_len = strcspn(p, "&");
		if (param_len >= 9 && strncmp(p, "password=", 9) == 0) {
			out_puts(o, "password=***");
		} else {
			out_put(o, p, param_len);
		}
		p += param_len;
		if (*p == '&') {
			out_put(o, p, 1);
			p++;
		}
	}
}

/* Key/value conninfo, following libpq's conninfo_parse rules. */
static void redact_keyword_value(const char *s, struct outbuf *o)
{
	const char *p = s;
	while (*p != '\0') {
		const char *ws = p;
		while (isspace((unsigned char)*p))
			p++;
		out_put(o, ws, (size_t)(p - ws));
		if (*p == '\0')
			return;
		const char *key = p;
		while (*p != '\0' && *p != '=' && !isspace((unsigned char)*p))
			p++;
		size_t key_len = (size_t)(p - key);
		bool is_password = key_len == 8 && strncmp(key, "password", 8) == 0;
		while (isspace((unsigned char)*p))
			p++;
		if (*p != '=') {
			/* Malformed: show nothing more than what is certainly not a secret. */
			out_put(o, key, key_len);
			out_puts(o, " ***");
			return;
		}
		p++;
		while (isspace((unsigned char)*p))
			p++;
		out_put(o, key, (size_t)(p - key));
		const char *val = p;
		if (*p == '\'') {
			p++;
			while (*p != '\0' && *p != '\'') {
				if (*p == '\\' && p[1] != '\0')
					p++;
				p++;
			}
			if (*p == '\'')
				p++;
		} else {
			while (*p != '\0' && !isspace((unsigned char)*p)) {
				if (*p == '\\' && p[1] != '\0')
					p++;
				p++;
			}
		}
		if (is_password)
			out_puts(o, "***");
		else
			out_put(o, val, (size_t)(p - val));
	}
}

void mon_config_redact_conninfo(const char *conninfo, char *buf, size_t buf_len)
{
	struct outbuf o = {buf, 0, buf_len};
	if (buf_len == 0)
		return;
	buf[0] = '\0';
	if (conninfo == NULL)
		return;
	if (strncmp(conninfo, "postgresql://", 13) == 0 || strncmp(conninfo, "postgres://", 11) == 0)
		redact_url(conninfo, &o);
	else
		redact_keyword_value(conninfo, &o);
}

/* ---- setting values ---- */

static char **string_field(struct mon_config *cfg, const struct setting *s)
{
	return (char **)((char *)cfg + s->offset);
}

/*
 * Parses text as setting s and stores it in cfg, replacing (and freeing) the
 * previous value. Errors (MON_EINVAL, MON_ENOMEM) name the setting; cfg is
 * unchanged on error.
 */
static int set_value(struct mon_config *cfg, const struct setting *s, const char *text, struct mon_error *err)
{
	void *field = (char *)cfg + s->offset;
	switch (s->kind) {
	case KIND_LISTEN: {
		struct mon_listen_addr addr;
		int rc = mon_listen_addr_parse(text, &addr, err);
		if (rc != 0)
			return rc;
		char *copy = strdup(text);
		if (copy == NULL)
			return mon_error_set(err, MON_ENOMEM, "%s: out of memory", s->name);
		free(cfg->listen);
		cfg->listen = copy;
		cfg->listen_addr = addr;
		return 0;
	}
	case KIND_STRING:
	case KIND_OPT_STRING: {
		if (strlen(text) >= LINE_MAX_BYTES)
			return mon_error_set(err, MON_EINVAL, "%s: must be shorter than %d bytes", s->name,
			                     LINE_MAX_BYTES);
		if (text[0] == '\0' && s->kind == KIND_STRING)
			return mon_error_set(err, MON_EINVAL, "%s: must not be empty", s->name);
		char *copy = NULL;
		if (text[0] != '\0') {
			copy = strdup(text);
			if (copy == NULL)
				return mon_error_set(err, MON_ENOMEM, "%s: out of memory", s->name);
		}
		char **slot = string_field(cfg, s);
		free(*slot);
		*slot = copy;
		return 0;
	}
	case KIND_LOG_LEVEL: {
		static const char *const names[] = {"debug", "info", "warn", "error"};
		static const enum log_level levels[] = {LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR};
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			if (ascii_case_equal(text, names[i])) {
				*(enum log_level *)field = levels[i];
				return 0;
			}
		}
		return mon_error_set(err, MON_EINVAL, "%s: must be debug, info, warn or error, got \"%.*s\"", s->name,
		                     VALUE_SHOWN_MAX, text);
	}
	case KIND_INT:
	case KIND_SIZE: {
		long long v = 0;
		if (!parse_integer(text, &v))
			return mon_error_set(err, MON_EINVAL,
			                     "%s: must be an integer between %lld and %lld, got \"%.*s\"", s->name,
			                     s->min, s->max, VALUE_SHOWN_MAX, text);
		if (v < s->min || v > s->max)
			return mon_error_set(err, MON_EINVAL, "%s: must be between %lld and %lld, got \"%.*s\"",
			                     s->name, s->min, s->max, VALUE_SHOWN_MAX, text);
		if (s->kind == KIND_INT)
			*(int *)field = (int)v;
		else
			*(size_t *)field = (size_t)v;
		return 0;
	}
	case KIND_BOOL: return mon_config_parse_bool(s->name, text, (bool *)field, err);
	}
	return mon_error_set(err, MON_EINTERNAL, "%s: unknown setting kind", s->name);
}

static int apply(struct mon_config *cfg, const struct setting *s, const char *text, enum mon_config_source source,
                 int line, const char *env_name, struct mon_error *err)
{
	int rc = set_value(cfg, s, text, err);
	if (rc != 0)
		return rc;
	struct mon_config_origin *o = &cfg->origin[setting_index(s)];
	memset(o, 0, sizeof(*o));
	o->source = source;
	o->line = line;
	if (env_name != NULL)
		snprintf(o->env_name, sizeof(o->env_name), "%s", env_name);
	return 0;
}

/* ---- the config file ---- */

/*
 * Splits one config-file line in place. Sets *key (NULL for a blank or
 * comment line) and *value. Returns 0, or MON_EINVAL with a message (without
 * the file:line prefix).
 */
static int split_line(char *line, char **key, char **value, struct mon_error *err)
{
	*key = NULL;
	*value = NULL;
	size_t len = strlen(line);
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		line[--len] = '\0';
	char *p = line;
	while (isspace((unsigned char)*p))
		p++;
	if (*p == '\0' || *p == '#')
		return 0;
	char *k = p;
	while (isalnum((unsigned char)*p) || *p == '-' || *p == '_')
		p++;
	char *key_end = p;
	while (*p == ' ' || *p == '\t')
		p++;
	if (key_end == k || *p != '=')
		return mon_error_set(err, MON_EINVAL, "expected \"key = value\", got \"%.*s\"", VALUE_SHOWN_MAX, k);
	*key_end = '\0';
	p++;
	while (*p == ' ' || *p == '\t')
		p++;

	char *v = p;
	if (*p == '"') {
		/* Quoted: \" and \\ are escapes; a comment may follow. */
		char *dst = p;
		p++;
		while (*p != '\0' && *p != '"') {
			if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
				p++;
			*dst++ = *p++;
		}
		if (*p != '"')
			return mon_error_set(err, MON_EINVAL, "%s: unterminated quoted value", k);
		p++;
		*dst = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p != '\0' && *p != '#')
			return mon_error_set(err, MON_EINVAL, "%s: unexpected text after the quoted value", k);
	} else {
		/* Unquoted: a '#' at the start or after a blank begins a comment. */
		char *end = p;
		while (*end != '\0') {
			if (*end == '#' && (end == v || end[-1] == ' ' || end[-1] == '\t'))
				break;
			end++;
		}
		while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		*end = '\0';
	}
	*key = k;
	*value = v;
	return 0;
}

/* Reads path and applies its settings. Errors are prefixed "path:line". */
static int load_file(struct mon_config *cfg, const char *path, struct mon_error *err)
{
	int rc = 0;
	int first_line[SETTING_COUNT] = {0};
	char line[LINE_MAX_BYTES + 2];
	int lineno = 0;
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		rc = mon_error_set(err, MON_EINVAL, "config file \"%s\": %s", path, strerror(errno));
		goto out;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		size_t len = strlen(line);
		if (len > LINE_MAX_BYTES && line[len - 1] != '\n') {
			rc = mon_error_set(err, MON_EINVAL, "%s:%d: line longer than %d bytes", path, lineno,
			                   LINE_MAX_BYTES);
			goto out;
		}
		char *key = NULL;
		char *value = NULL;
		rc = split_line(line, &key, &value, err);
		if (rc == 0 && key == NULL)
			continue;
		if (rc == 0) {
			const struct setting *s = find_setting(key, strlen(key));
			if (s == NULL && name_equals("config", key, strlen(key))) {
				rc = mon_error_set(err, MON_EINVAL, "config: cannot be set inside a config file");
			} else if (s == NULL) {
				rc = mon_error_set(err, MON_EINVAL, "unknown setting \"%.*s\"", VALUE_SHOWN_MAX, key);
			} else if (first_line[setting_index(s)] != 0) {
				rc = mon_error_set(err, MON_EINVAL, "%s: set twice (first on line %d)", s->name,
				                   first_line[setting_index(s)]);
			} else {
				first_line[setting_index(s)] = lineno;
				rc = apply(cfg, s, value, MON_CONFIG_SRC_FILE, lineno, NULL, err);
			}
		}
		if (rc != 0) {
			char where[LINE_MAX_BYTES];
			snprintf(where, sizeof(where), "%s:%d", path, lineno);
			mon_error_prefix(err, where);
			goto out;
		}
	}
	if (ferror(f))
		rc = mon_error_set(err, MON_EINVAL, "config file \"%s\": read error", path);
out:
	if (f != NULL)
		fclose(f);
	return rc;
}

/* ---- environment ---- */

/* Records "unknown environment variable NAME ignored" (up to MON_CONFIG_WARNING_MAX). */
static int warn_unknown_env(struct mon_config *cfg, const char *name)
{
	if (cfg->warning_count >= MON_CONFIG_WARNING_MAX)
		return 0;
	char msg[256];
	snprintf(msg, sizeof(msg), "unknown environment variable %s ignored", name);
	char *copy = strdup(msg);
	if (copy == NULL)
		return MON_ENOMEM;
	cfg->warnings[cfg->warning_count++] = copy;
	return 0;
}

static int load_env(struct mon_config *cfg, char **envp, struct mon_error *err)
{
	char name[64];
	const struct setting *db = find_setting("database", 8);
	const char *url = env_get(envp, "DATABASE_URL");
	if (url != NULL && url[0] != '\0') {
		int rc = apply(cfg, db, url, MON_CONFIG_SRC_ENV, 0, "DATABASE_URL", err);
		if (rc != 0) {
			mon_error_prefix(err, "environment variable DATABASE_URL");
			return rc;
		}
	}
	for (size_t i = 0; i < SETTING_COUNT; i++) {
		env_name_of(settings[i].name, name, sizeof(name));
		const char *v = env_get(envp, name);
		if (v == NULL || v[0] == '\0')
			continue;
		int rc = apply(cfg, &settings[i], v, MON_CONFIG_SRC_ENV, 0, name, err);
		if (rc != 0) {
			char where[96];
			snprintf(where, sizeof(where), "environment variable %s", name);
			mon_error_prefix(err, where);
			return rc;
		}
	}
	/* A misspelt variable would otherwise be silently ignored. */
	for (char **e = envp; e != NULL && *e != NULL; e++) {
		if (strncmp(*e, "MONITORD_", 9) != 0)
			continue;
		size_t name_len = strcspn(*e, "=");
		if (name_len >= sizeof(name))
			name_len = sizeof(name) - 1;
		memcpy(name, *e, name_len);
		name[name_len] = '\0';
		bool known = strcmp(name, "MONITORD_CONFIG") == 0;
		for (size_t i = 0; i < SETTING_COUNT && !known; i++) {
			char expect[64];
			env_name_of(settings[i].name, expect, sizeof(expect));
			known = strcmp(name, expect) == 0;
		}
		if (!known && warn_unknown_env(cfg, name) != 0)
			return mon_error_set(err, MON_ENOMEM, "out of memory");
	}
	return 0;
}

/* ---- command line ---- */

struct flag {
	const struct setting *setting;
	const char *value;
};

/*
 * Splits argv into settings and values (flags[i] for each setting given)
 * and the --config value. Values are checked later, when applied.
 */
static int parse_argv(int argc, char **argv, struct flag *flags, size_t *flag_count, const char **config_path,
                      struct mon_error *err)
{
	bool config_seen = false;
	bool seen[SETTING_COUNT] = {false};
	*flag_count = 0;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
			return mon_error_set(err, MON_EINVAL, "unexpected argument \"%.*s\" (see --help)",
			                     VALUE_SHOWN_MAX, arg);
		const char *name = arg + 2;
		const char *eq = strchr(name, '=');
		size_t name_len = eq != NULL ? (size_t)(eq - name) : strlen(name);
		const struct setting *s = find_setting(name, name_len);
		bool is_config = s == NULL && name_equals("config", name, name_len);
		if (s == NULL && !is_config)
			return mon_error_set(err, MON_EINVAL, "unknown option \"--%.*s\" (see --help)", (int)name_len,
			                     name);
		const char *shown = is_config ? "config" : s->name;
		const char *value = NULL;
		if (eq != NULL) {
			value = eq + 1;
		} else if (s != NULL && s->kind == KIND_BOOL) {
			/* A bare boolean flag means true; an explicit word may follow. */
			value = "true";
			if (i + 1 < argc && is_bool_word(argv[i + 1]))
				value = argv[++i];
		} else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
			value = argv[++i];
		} else {
			return mon_error_set(err, MON_EINVAL, "--%s: missing value", shown);
		}
		if (is_config) {
			if (config_seen)
				return mon_error_set(err, MON_EINVAL, "--config: given twice");
			config_seen = true;
			*config_path = value;
			continue;
		}
		if (seen[setting_index(s)])
			return mon_error_set(err, MON_EINVAL, "--%s: given twice", s->name);
		seen[setting_index(s)] = true;
		flags[*flag_count].setting = s;
		flags[*flag_count].value = value;
		(*flag_count)++;
	}
	return 0;
}

/* ---- after every layer ---- */

static void describe_origin(const struct mon_config *cfg, const struct setting *s, char *buf, size_t buf_len)
{
	const struct mon_config_origin *o = &cfg->origin[setting_index(s)];
	switch (o->source) {
	case MON_CONFIG_SRC_DEFAULT: snprintf(buf, buf_len, "default"); break;
	case MON_CONFIG_SRC_FILE: snprintf(buf, buf_len, "%s:%d", cfg->config_file, o->line); break;
	case MON_CONFIG_SRC_ENV: snprintf(buf, buf_len, "%s", o->env_name); break;
	case MON_CONFIG_SRC_FLAG: snprintf(buf, buf_len, "--%s", s->name); break;
	}
}

/* Makes data_dir absolute: libpq treats only an absolute host as a socket directory. */
static int absolutize_data_dir(struct mon_config *cfg, struct mon_error *err)
{
	if (cfg->data_dir[0] == '/')
		return 0;
	char cwd[PATH_MAX];
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		return mon_error_set(err, MON_EINVAL, "data-dir: cannot resolve \"%s\": %s", cfg->data_dir,
		                     strerror(errno));
	const char *rel = cfg->data_dir;
	while (rel[0] == '.' && rel[1] == '/') {
		rel += 2;
		while (*rel == '/')
			rel++;
	}
	size_t need = strlen(cwd) + 1 + strlen(rel) + 1;
	char *abs = malloc(need);
	if (abs == NULL)
		return mon_error_set(err, MON_ENOMEM, "data-dir: out of memory");
	const char *sep = (strcmp(cwd, "/") == 0 || rel[0] == '\0') ? "" : "/";
	snprintf(abs, need, "%s%s%s", cwd, sep, rel);
	free(cfg->data_dir);
	cfg->data_dir = abs;
	return 0;
}

static int check_combinations(struct mon_config *cfg, struct mon_error *err)
{
	char where[LINE_MAX_BYTES];
	if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
		const char *name = cfg->tls_cert != NULL ? "tls-cert" : "tls-key";
		const struct setting *set = find_setting(name, strlen(name));
		describe_origin(cfg, set, where, sizeof(where));
		return mon_error_set(err, MON_EINVAL,
		                     "tls-cert and tls-key must be set together (only %s is set, by %s)", set->name,
		                     where);
	}
	if (cfg->metrics_5min_retention_days < cfg->metrics_raw_retention_days)
		return mon_error_set(
		        err, MON_EINVAL,
		        "metrics-5min-retention-days: must be at least metrics-raw-retention-days (%d), got %d",
		        cfg->metrics_raw_retention_days, cfg->metrics_5min_retention_days);
	if (cfg->metrics_hourly_retention_days < cfg->metrics_5min_retention_days)
		return mon_error_set(
		        err, MON_EINVAL,
		        "metrics-hourly-retention-days: must be at least metrics-5min-retention-days (%d), "
		        "got %d",
		        cfg->metrics_5min_retention_days, cfg->metrics_hourly_retention_days);
	if (cfg->tls_client_ca != NULL && cfg->tls_cert == NULL)
		return mon_error_set(err, MON_EINVAL, "tls-client-ca: needs tls-cert and tls-key (mutual TLS is TLS)");
	const struct mon_listen_addr *a = &cfg->listen_addr;
	if (!cfg->auth && !a->is_unix && !a->is_loopback && !cfg->allow_insecure_remote)
		return mon_error_set(err, MON_EINVAL,
		                     "auth: false is allowed only on loopback or Unix sockets (listen is \"%s\"), "
		                     "unless allow-insecure-remote = true",
		                     cfg->listen);
	if (cfg->tls_cert == NULL && !a->is_unix && !a->is_loopback && !cfg->allow_insecure_remote)
		return mon_error_set(err, MON_EINVAL,
		                     "listen: plaintext on non-loopback address \"%s\" is refused; set tls-cert and "
		                     "tls-key, or allow-insecure-remote = true",
		                     cfg->listen);
	return 0;
}

/* ---- public ---- */

int mon_config_load(int argc, char **argv, char **envp, struct mon_config *out, struct mon_error *err)
{
	int rc = 0;
	struct flag *flags = NULL;
	size_t flag_count = 0;
	const char *config_path = NULL;

	memset(out, 0, sizeof(*out));
	if (envp == NULL)
		envp = environ;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			out->show_help = true;
			return 0;
		}
		if (strcmp(argv[i], "--version") == 0) {
			out->show_version = true;
			return 0;
		}
	}

	for (size_t i = 0; i < SETTING_COUNT; i++) {
		if (settings[i].def == NULL)
			continue;
		rc = apply(out, &settings[i], settings[i].def, MON_CONFIG_SRC_DEFAULT, 0, NULL, err);
		if (rc != 0) {
			rc = mon_error_set(err, MON_EINTERNAL, "default of %s does not parse", settings[i].name);
			goto out;
		}
	}

	flags = calloc((size_t)(argc > 0 ? argc : 1), sizeof(*flags));
	if (flags == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	rc = parse_argv(argc, argv, flags, &flag_count, &config_path, err);
	if (rc != 0)
		goto out;

	if (config_path == NULL)
		config_path = env_get(envp, "MONITORD_CONFIG");
	if (config_path != NULL && config_path[0] != '\0') {
		out->config_file = strdup(config_path);
		if (out->config_file == NULL) {
			rc = mon_error_set(err, MON_ENOMEM, "out of memory");
			goto out;
		}
		rc = load_file(out, config_path, err);
		if (rc != 0)
			goto out;
	}

	rc = load_env(out, envp, err);
	if (rc != 0)
		goto out;

	for (size_t i = 0; i < flag_count; i++) {
		rc = apply(out, flags[i].setting, flags[i].value, MON_CONFIG_SRC_FLAG, 0, NULL, err);
		if (rc != 0) {
			mon_error_prefix(err, "command line");
			goto out;
		}
	}

	rc = absolutize_data_dir(out, err);
	if (rc != 0)
		goto out;
	rc = check_combinations(out, err);
out:
	free(flags);
	if (rc != 0)
		mon_config_free(out);
	return rc;
}

void mon_config_free(struct mon_config *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < SETTING_COUNT; i++) {
		const struct setting *s = &settings[i];
		if (s->kind == KIND_LISTEN || s->kind == KIND_STRING || s->kind == KIND_OPT_STRING)
			free(*string_field(cfg, s));
	}
	free(cfg->config_file);
	for (size_t i = 0; i < cfg->warning_count && i < MON_CONFIG_WARNING_MAX; i++)
		free(cfg->warnings[i]);
	memset(cfg, 0, sizeof(*cfg));
}

const struct mon_config_origin *mon_config_origin_of(const struct mon_config *cfg, const char *name)
{
	const struct setting *s = find_setting(name, strlen(name));
	return s != NULL ? &cfg->origin[setting_index(s)] : NULL;
}

/* Prints text wrapped at 79 columns, each line indented by indent spaces. */
static void print_wrapped(FILE *f, const char *text, int indent)
{
	const int width = 79;
	int col = 0;
	const char *p = text;
	while (*p != '\0') {
		while (*p == ' ')
			p++;
		size_t word = strcspn(p, " ");
		if (word == 0)
			break;
		if (col > 0 && col + 1 + (int)word > width) {
			fputc('\n', f);
			col = 0;
		}
		if (col == 0) {
			fprintf(f, "%*s", indent, "");
			col = indent;
		} else {
			fputc(' ', f);
			col++;
		}
		fwrite(p, 1, word, f);
		col += (int)word;
		p += word;
	}
	if (col > 0)
		fputc('\n', f);
}

void mon_config_print_help(FILE *f, const char *prog)
{
	fprintf(f, "Usage: %s [OPTIONS]\n\n", prog != NULL ? prog : "monitord");
	print_wrapped(f,
	              "monitord serves the monitoring API over gRPC, backed by PostgreSQL. Each setting comes from, "
	              "in increasing precedence: its built-in default, the config file, the environment "
	              "(MONITORD_<SETTING>, upper case with '_'), then the command line (--setting VALUE or "
	              "--setting=VALUE).",
	              0);
	fputs("\nOptions:\n"
	      "  -h, --help\n"
	      "      Print this help and exit.\n"
	      "  --version\n"
	      "      Print the version and exit.\n"
	      "  --config FILE\n",
	      f);
	print_wrapped(f,
	              "Read settings from FILE: \"setting = value\" lines, '#' comments, names as below without "
	              "the dashes ('-' or '_'). Unknown names, bad values and repeated names are errors.",
	              6);
	fputs("      env: MONITORD_CONFIG\n", f);
	char env[64];
	for (size_t i = 0; i < SETTING_COUNT; i++) {
		const struct setting *s = &settings[i];
		fprintf(f, "  --%s %s\n", s->name, s->metavar);
		print_wrapped(f, s->help, 6);
		fprintf(f, "      default: %s", s->def_shown != NULL ? s->def_shown : s->def);
		if (s->kind == KIND_INT || s->kind == KIND_SIZE)
			fprintf(f, " (range %lld to %lld)", s->min, s->max);
		env_name_of(s->name, env, sizeof(env));
		fprintf(f, "\n      env: %s%s\n", env,
		        strcmp(s->name, "database") == 0 ? ", or DATABASE_URL below it" : "");
	}
}

/* Writes v as a logfmt value: bare when it can be, else quoted with \" and \\ escapes. */
static void put_logfmt_value(FILE *f, const char *v)
{
	bool bare = v[0] != '\0';
	for (const char *p = v; *p != '\0' && bare; p++) {
		unsigned char c = (unsigned char)*p;
		bare = c > ' ' && c != '"' && c != '=' && c != '\\' && c < 0x7f;
	}
	if (bare) {
		fputs(v, f);
		return;
	}
	fputc('"', f);
	for (const char *p = v; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '"' || c == '\\')
			fputc('\\', f);
		if (c < ' ' || c == 0x7f)
			fputc('?', f);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void put_setting_value(FILE *f, const struct mon_config *cfg, const struct setting *s)
{
	const void *field = (const char *)cfg + s->offset;
	char num[32];
	switch (s->kind) {
	case KIND_LISTEN:
	case KIND_STRING:
	case KIND_OPT_STRING: {
		const char *v = *(char *const *)field;
		if (v != NULL && strcmp(s->name, "database") == 0) {
			char redacted[LINE_MAX_BYTES];
			mon_config_redact_conninfo(v, redacted, sizeof(redacted));
			put_logfmt_value(f, redacted);
		} else {
			put_logfmt_value(f, v != NULL ? v : "");
		}
		return;
	}
	case KIND_LOG_LEVEL: {
		static const char *const names[] = {"debug", "info", "warn", "error"};
		enum log_level l = *(const enum log_level *)field;
		fputs((int)l >= 0 && (int)l < 4 ? names[l] : "?", f);
		return;
	}
	case KIND_INT:
		snprintf(num, sizeof(num), "%d", *(const int *)field);
		fputs(num, f);
		return;
	case KIND_SIZE:
		snprintf(num, sizeof(num), "%zu", *(const size_t *)field);
		fputs(num, f);
		return;
	case KIND_BOOL: fputs(*(const bool *)field ? "true" : "false", f); return;
	}
}

char *mon_config_describe(const struct mon_config *cfg)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (f == NULL)
		return NULL;
	fputs("config=", f);
	put_logfmt_value(f, cfg->config_file != NULL ? cfg->config_file : "");
	for (size_t i = 0; i < SETTING_COUNT; i++) {
		fprintf(f, " %s=", settings[i].name);
		put_setting_value(f, cfg, &settings[i]);
	}
	fputs(" sources=\"", f);
	bool first = true;
	for (size_t i = 0; i < SETTING_COUNT; i++) {
		const struct mon_config_origin *o = &cfg->origin[i];
		if (o->source == MON_CONFIG_SRC_DEFAULT)
			continue;
		fprintf(f, "%s%s:", first ? "" : " ", settings[i].name);
		first = false;
		if (o->source == MON_CONFIG_SRC_FILE)
			fprintf(f, "file(line %d)", o->line);
		else if (o->source == MON_CONFIG_SRC_ENV)
			fprintf(f, "env(%s)", o->env_name);
		else
			fputs("flag", f);
	}
	fputc('"', f);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}
