/*
 * monitord's configuration: every setting with its default, and the loader
 * that layers built-in defaults < config file < environment < command-line
 * flags into one validated struct mon_config. It also parses listen
 * addresses, prints --help, and describes the effective configuration (with
 * where each value came from, secrets redacted) for the startup log line.
 * docs/operations.md documents each setting, its limits and why.
 */
#ifndef MON_SERVER_CONFIG_H
#define MON_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "util/error.h"
#include "util/log.h"

/* Number of settings (the table in config.c has one row per setting). */
#define MON_CONFIG_SETTING_COUNT 45

/* At most this many warnings are kept (unknown MONITORD_* variables). */
#define MON_CONFIG_WARNING_MAX 8

/* Where a setting's effective value came from, lowest precedence first. */
enum mon_config_source {
	MON_CONFIG_SRC_DEFAULT = 0,
	MON_CONFIG_SRC_FILE = 1,
	MON_CONFIG_SRC_ENV = 2,
	MON_CONFIG_SRC_FLAG = 3
};

struct mon_config_origin {
	enum mon_config_source source;
	int line;          /* MON_CONFIG_SRC_FILE: line in config_file */
	char env_name[64]; /* MON_CONFIG_SRC_ENV: the variable read */
};

/* A parsed listen address (see mon_listen_addr_parse). */
struct mon_listen_addr {
	bool is_unix;     /* unix:PATH; path is set, host empty, port -1 */
	bool is_ipv6;     /* host is an IPv6 literal (written in brackets) */
	bool is_loopback; /* 127.0.0.0/8, ::1, ::ffff:127.x.y.z or "localhost" */
	char host[256];   /* without brackets */
	int port;         /* 0..65535; 0 means pick a free port */
	char path[108];   /* Unix socket path (sun_path holds 108 bytes) */
};

/*
 * The effective configuration. Strings are owned by the struct (freed by
 * mon_config_free). Optional strings are NULL when unset or set to "".
 */
struct mon_config {
	char *listen;                       /* listen: "127.0.0.1:50051", "[::1]:0", "unix:/path" */
	struct mon_listen_addr listen_addr; /* listen, parsed */
	char *database;                     /* database: conninfo or URL; NULL = embedded cluster */
	char *data_dir;                     /* data-dir: embedded cluster directory, made absolute */
	char *port_file;                    /* port-file: write "host:port" there once listening; NULL = don't */
	enum log_level log_level;           /* log-level: default LOG_INFO */
	int cq_threads;                     /* cq-threads: default 2 */
	int worker_threads;                 /* worker-threads: default 8 */
	int db_pool_size;                   /* db-pool-size: default 8 */
	size_t max_recv_message_bytes;      /* max-recv-message-bytes: default 4 MiB */
	size_t max_send_message_bytes;      /* max-send-message-bytes: default 16 MiB */
	int max_concurrent_streams;         /* max-concurrent-streams: per connection, default 1000 */
	int keepalive_min_ping_ms;          /* keepalive-min-ping-ms: default 60000 */
	int keepalive_time_ms;              /* keepalive-time-ms: default 7200000 */
	int keepalive_timeout_ms;           /* keepalive-timeout-ms: default 20000 */
	int handshake_timeout_ms;           /* handshake-timeout-ms: default 10000 */
	size_t stream_queue_max;            /* stream-queue-max: messages per stream, default 1024 */
	int shutdown_grace_ms;              /* shutdown-grace-ms: default 10000 */
	char *tls_cert;                     /* tls-cert: PEM file path; NULL = plaintext */
	char *tls_key;                      /* tls-key: PEM file path; set together with tls_cert */
	char *tls_client_ca;                /* tls-client-ca: PEM file path; set = mutual TLS */
	bool allow_insecure_remote;         /* allow-insecure-remote: plaintext off loopback, default false */
	int db_statement_timeout_ms;        /* db-statement-timeout-ms: default 30000 */
	bool auth;                          /* auth: require credentials and check roles, default true */
	bool auth_standard_services;        /* auth-standard-services: health/reflection need a viewer */
	int rate_limit_per_s;               /* rate-limit-per-s: per caller, 0 = unlimited, default 1000 */
	int rate_limit_burst;               /* rate-limit-burst: default 2000 */
	int max_streams_per_caller;         /* max-streams-per-caller: 0 = unlimited, default 1000 */
	int probe_concurrency;              /* probe-concurrency: probes at once, default 8 */
	char *probe_proxy;                  /* probe-proxy: proxy URL for http(s) probes; NULL = none */
	int probe_run_concurrency;          /* probe-run-concurrency: RunHealthCheck probes at once, default 4 */
	char *probe_allow_networks;         /* probe-allow-networks: CIDR list; NULL = any address not denied */
	char *probe_deny_networks;          /* probe-deny-networks: CIDR list; NULL = none; default link-local */
	bool probe_cross_host_redirects;    /* probe-follow-cross-host-redirects: default false */
	int health_check_retention_days;    /* health-check-retention-days: default 30 */
	int metrics_raw_retention_days;     /* metrics-raw-retention-days: default 7 */
	int metrics_5min_retention_days;    /* metrics-5min-retention-days: default 90 */
	int metrics_hourly_retention_days;  /* metrics-hourly-retention-days: default 365 */
	int metrics_rollup_interval_ms;     /* metrics-rollup-interval-ms: default 10000 */
	int metrics_replay_window_s;        /* metrics-replay-window-s: default 600 */
	int alert_tick_ms;                  /* alert-tick-ms: default 1000 */
	int alert_retention_days;           /* alert-retention-days: default 90 */
	int idempotency_retention_hours;    /* idempotency-retention-hours: default 24 */
	int notify_max_attempts;            /* notify-max-attempts: default 8 */
	int notify_timeout_ms;              /* notify-timeout-ms: default 10000 */
	char *secrets_key_file;             /* secrets-key-file: NULL = none */

	char *config_file; /* the config file read, NULL when none */
	bool show_help;    /* -h/--help was given: print help, exit 0 */
	bool show_version; /* --version was given: print the version, exit 0 */
	/* Non-fatal findings for the log (unknown MONITORD_* variables). */
	char *warnings[MON_CONFIG_WARNING_MAX];
	size_t warning_count;
	/* Per setting, in the order of the settings table (see mon_config_origin_of). */
	struct mon_config_origin origin[MON_CONFIG_SETTING_COUNT];
};

/*
 * Loads the configuration into *out from, in increasing precedence: the
 * built-in defaults, the config file (--config FILE, else MONITORD_CONFIG),
 * the environment (MONITORD_<SETTING>, and DATABASE_URL below
 * MONITORD_DATABASE) and the flags in argv (argv[0] is the program name;
 * `--key value` or `--key=value`). envp is a NULL-terminated "NAME=value"
 * array; NULL means the process environment. Empty environment variables are
 * treated as unset.
 *
 * When -h/--help or --version is given, returns 0 with out->show_help or
 * out->show_version set and nothing else loaded. On error returns MON_EINVAL
 * (a bad flag, file line or value; the message names the setting and where
 * the value came from) or MON_ENOMEM, and *out holds nothing to free. On
 * success the caller owns *out and frees it with mon_config_free.
 */
int mon_config_load(int argc, char **argv, char **envp, struct mon_config *out, struct mon_error *err) MON_MUST_CHECK;

/* Frees the strings *cfg owns and zeroes it; accepts NULL and a zeroed struct. */
void mon_config_free(struct mon_config *cfg);

/* Prints the --help text (usage, every setting, its default and variable) to f. */
void mon_config_print_help(FILE *f, const char *prog);

/*
 * Describes the effective configuration as logfmt pairs, one per setting
 * (`listen=127.0.0.1:50051 database=... cq-threads=4 ...`) followed by
 * `sources="cq-threads:flag listen:env(MONITORD_LISTEN) ..."` naming the
 * origin of each value that is not a default. Passwords in the database
 * conninfo are shown as "***". Returns a string the caller frees with free(),
 * or NULL when out of memory.
 */
char *mon_config_describe(const struct mon_config *cfg);

/*
 * The origin of a setting by name ("cq-threads" or "cq_threads"); NULL when
 * no such setting exists. The pointer is into cfg.
 */
const struct mon_config_origin *mon_config_origin_of(const struct mon_config *cfg, const char *name);

/*
 * Parses a listen address: HOST:PORT (HOST an IPv4 literal or a host name),
 * [IPV6]:PORT, or unix:PATH (also unix:///abs/path). A pure function: no
 * name resolution. Returns 0 or MON_EINVAL with a message naming "listen".
 */
int mon_listen_addr_parse(const char *text, struct mon_listen_addr *out, struct mon_error *err) MON_MUST_CHECK;

/*
 * Writes addr as "host:port", "[v6]:port" or "unix:PATH" into buf, with port
 * replacing addr->port (pass the bound port after listening on port 0).
 * Returns 0, or MON_ENOMEM when buf is too small.
 */
int mon_listen_addr_format(const struct mon_listen_addr *addr, int port, char *buf, size_t buf_len) MON_MUST_CHECK;

/*
 * Parses a boolean: true/false, 1/0, yes/no, on/off (any case). Returns 0 and
 * sets *out, or MON_EINVAL naming setting_name.
 */
int mon_config_parse_bool(const char *setting_name, const char *text, bool *out, struct mon_error *err) MON_MUST_CHECK;

/*
 * Copies conninfo into buf (NUL-terminated, truncated to buf_len) with any
 * password replaced by "***": the password=... keyword of a key/value
 * conninfo, and both the user:password@ part and a password= parameter of a
 * postgresql:// URL.
 */
void mon_config_redact_conninfo(const char *conninfo, char *buf, size_t buf_len);

#endif
