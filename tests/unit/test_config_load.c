/*
 * Unit tests of monitord's configuration loader (server/config.c): the
 * defaults, precedence across the four layers (default < file < environment
 * < flags), the config-file syntax and each of its errors, environment and
 * flag errors, combinations that are refused, booleans, --help, and the
 * redacted description logged at startup. Every test passes its own
 * environment array, so the process environment never leaks in.
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "server/config.h"

#define ARGV(...) ((char *[]){"monitord", __VA_ARGS__, NULL})
#define ENVP(...) ((char *[]){__VA_ARGS__, NULL})
#define NO_ARGS ((char *[]){"monitord", NULL})
#define NO_ENV ((char *[]){NULL})

static int load(char **argv, char **envp, struct mon_config *cfg, struct mon_error *err)
{
	int argc = 0;
	while (argv[argc] != NULL)
		argc++;
	mon_error_clear(err);
	return mon_config_load(argc, argv, envp, cfg, err);
}

/* Writes text to a new temporary file; path gets its name (unlink it after). */
static void write_temp(const char *text, char *path, size_t path_len)
{
	const char *dir = getenv("TMPDIR");
	snprintf(path, path_len, "%s/monitord-config-XXXXXX", dir != NULL && dir[0] != '\0' ? dir : "/tmp");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	FILE *f = fdopen(fd, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* Loads a config file made of text plus the given extra args; expects failure; returns the message. */
static void expect_file_error(const char *text, const char *want_in_msg)
{
	char path[256];
	char flag[300];
	struct mon_config cfg;
	struct mon_error err;
	write_temp(text, path, sizeof(path));
	snprintf(flag, sizeof(flag), "--config=%s", path);
	int rc = load(ARGV(flag), NO_ENV, &cfg, &err);
	if (rc == 0 || strstr(err.msg, want_in_msg) == NULL || strstr(err.msg, path) == NULL)
		print_error("got rc=%d msg \"%s\", wanted \"%s\" and the path\n", rc, err.msg, want_in_msg);
	assert_int_equal(rc, MON_EINVAL);
	assert_non_null(strstr(err.msg, want_in_msg));
	assert_non_null(strstr(err.msg, path));
	assert_null(cfg.listen);
	unlink(path);
}

static void expect_error(char **argv, char **envp, const char *want_in_msg)
{
	struct mon_config cfg;
	struct mon_error err;
	int rc = load(argv, envp, &cfg, &err);
	if (rc == 0 || strstr(err.msg, want_in_msg) == NULL)
		print_error("got rc=%d msg \"%s\", wanted \"%s\"\n", rc, err.msg, want_in_msg);
	assert_int_equal(rc, MON_EINVAL);
	assert_non_null(strstr(err.msg, want_in_msg));
	assert_null(cfg.listen);
	assert_null(cfg.data_dir);
}

static void test_config_defaults(void **state)
{
	struct mon_config cfg;
	struct mon_error err;
	assert_int_equal(load(NO_ARGS, NO_ENV, &cfg, &err), 0);
	assert_string_equal(cfg.listen, "127.0.0.1:50051");
	assert_string_equal(cfg.listen_addr.host, "127.0.0.1");
	assert_int_equal(cfg.listen_addr.port, 50051);
	assert_true(cfg.listen_addr.is_loopback);
	assert_null(cfg.database);
	assert_null(cfg.port_file);
	assert_int_equal(cfg.log_level, LOG_INFO);
	assert_int_equal(cfg.cq_threads, 2);
	assert_int_equal(cfg.worker_threads, 8);
	assert_int_equal(cfg.db_pool_size, 8);
	assert_int_equal(cfg.max_recv_message_bytes, 4194304);
	assert_int_equal(cfg.max_send_message_bytes, 16777216);
	assert_int_equal(cfg.max_concurrent_streams, 1000);
	assert_int_equal(cfg.keepalive_min_ping_ms, 60000);
	assert_int_equal(cfg.keepalive_time_ms, 7200000);
	assert_int_equal(cfg.keepalive_timeout_ms, 20000);
	assert_int_equal(cfg.handshake_timeout_ms, 10000);
	assert_int_equal(cfg.stream_queue_max, 1024);
	assert_int_equal(cfg.shutdown_grace_ms, 10000);
	assert_null(cfg.tls_cert);
	assert_null(cfg.tls_key);
	assert_null(cfg.tls_client_ca);
	assert_false(cfg.allow_insecure_remote);
	assert_int_equal(cfg.db_statement_timeout_ms, 30000);
	assert_null(cfg.config_file);
	assert_false(cfg.show_help);
	assert_false(cfg.show_version);
	assert_int_equal(cfg.warning_count, 0);
	for (size_t i = 0; i < MON_CONFIG_SETTING_COUNT; i++)
		assert_int_equal(cfg.origin[i].source, MON_CONFIG_SRC_DEFAULT);

	char cwd[4096];
	char want[4200];
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	snprintf(want, sizeof(want), "%s%s.data/postgres", cwd, strcmp(cwd, "/") == 0 ? "" : "/");
	assert_string_equal(cfg.data_dir, want);
	mon_config_free(&cfg);
	mon_config_free(&cfg); /* a freed struct is zeroed and may be freed again */
	mon_config_free(NULL);
}

/* Each layer overrides the ones below it, setting by setting. */
static void test_config_precedence_four_layers(void **state)
{
	char path[256];
	write_temp("# all four layers\n"
	           "cq-threads = 3\n"
	           "worker-threads = 3\n"
	           "db-pool-size = 3\n"
	           "log-level = warn\n",
	           path, sizeof(path));
	char flag[300];
	snprintf(flag, sizeof(flag), "--config=%s", path);
	struct mon_config cfg;
	struct mon_error err;
	int rc = load(ARGV(flag, "--db-pool-size", "5", "--stream-queue-max=77"),
	              ENVP("MONITORD_WORKER_THREADS=4", "MONITORD_DB_POOL_SIZE=4", "MONITORD_SHUTDOWN_GRACE_MS=1234",
	                   "UNRELATED=1"),
	              &cfg, &err);
	assert_int_equal(rc, 0);
	assert_string_equal(cfg.config_file, path);

	/* default only */
	assert_int_equal(cfg.max_concurrent_streams, 1000);
	assert_int_equal(mon_config_origin_of(&cfg, "max-concurrent-streams")->source, MON_CONFIG_SRC_DEFAULT);
	/* file over default */
	assert_int_equal(cfg.cq_threads, 3);
	assert_int_equal(cfg.log_level, LOG_WARN);
	assert_int_equal(mon_config_origin_of(&cfg, "cq-threads")->source, MON_CONFIG_SRC_FILE);
	assert_int_equal(mon_config_origin_of(&cfg, "cq-threads")->line, 2);
	/* environment over file */
	assert_int_equal(cfg.worker_threads, 4);
	assert_int_equal(mon_config_origin_of(&cfg, "worker_threads")->source, MON_CONFIG_SRC_ENV);
	assert_string_equal(mon_config_origin_of(&cfg, "worker-threads")->env_name, "MONITORD_WORKER_THREADS");
	/* environment over default */
	assert_int_equal(cfg.shutdown_grace_ms, 1234);
	/* flag over environment over file */
	assert_int_equal(cfg.db_pool_size, 5);
	assert_int_equal(mon_config_origin_of(&cfg, "db-pool-size")->source, MON_CONFIG_SRC_FLAG);
	/* flag over default */
	assert_int_equal(cfg.stream_queue_max, 77);
	assert_null(mon_config_origin_of(&cfg, "no-such-setting"));
	mon_config_free(&cfg);
	unlink(path);
}

static void test_config_database_url_below_monitord_database(void **state)
{
	char path[256];
	write_temp("database = host=/from/file dbname=x\n", path, sizeof(path));
	char flag[300];
	snprintf(flag, sizeof(flag), "--config=%s", path);
	struct mon_config cfg;
	struct mon_error err;

	/* DATABASE_URL beats the file. */
	assert_int_equal(load(ARGV(flag), ENVP("DATABASE_URL=postgresql://u@h/db"), &cfg, &err), 0);
	assert_string_equal(cfg.database, "postgresql://u@h/db");
	assert_string_equal(mon_config_origin_of(&cfg, "database")->env_name, "DATABASE_URL");
	mon_config_free(&cfg);

	/* MONITORD_DATABASE beats DATABASE_URL, whatever the order in the environment. */
	assert_int_equal(
	        load(ARGV(flag), ENVP("MONITORD_DATABASE=host=/m", "DATABASE_URL=postgresql://u@h/db"), &cfg, &err), 0);
	assert_string_equal(cfg.database, "host=/m");
	assert_string_equal(mon_config_origin_of(&cfg, "database")->env_name, "MONITORD_DATABASE");
	mon_config_free(&cfg);

	/* The flag beats both; an empty flag value means the embedded cluster. */
	assert_int_equal(
	        load(ARGV(flag, "--database="), ENVP("MONITORD_DATABASE=host=/m", "DATABASE_URL=x"), &cfg, &err), 0);
	assert_null(cfg.database);
	assert_int_equal(mon_config_origin_of(&cfg, "database")->source, MON_CONFIG_SRC_FLAG);
	mon_config_free(&cfg);
	unlink(path);
}

static void test_config_file_chosen_by_flag_or_env(void **state)
{
	char a[256];
	char b[256];
	write_temp("cq-threads = 5\n", a, sizeof(a));
	write_temp("cq-threads = 6\n", b, sizeof(b));
	char env_a[300];
	char flag_b[300];
	snprintf(env_a, sizeof(env_a), "MONITORD_CONFIG=%s", a);
	snprintf(flag_b, sizeof(flag_b), "--config=%s", b);
	struct mon_config cfg;
	struct mon_error err;

	assert_int_equal(load(NO_ARGS, ENVP(env_a), &cfg, &err), 0);
	assert_int_equal(cfg.cq_threads, 5);
	assert_string_equal(cfg.config_file, a);
	mon_config_free(&cfg);

	assert_int_equal(load(ARGV(flag_b), ENVP(env_a), &cfg, &err), 0);
	assert_int_equal(cfg.cq_threads, 6);
	mon_config_free(&cfg);

	assert_int_equal(load(ARGV("--config", b), ENVP(env_a), &cfg, &err), 0);
	assert_int_equal(cfg.cq_threads, 6);
	mon_config_free(&cfg);

	/* An empty --config reads no file at all. */
	assert_int_equal(load(ARGV("--config="), ENVP(env_a), &cfg, &err), 0);
	assert_int_equal(cfg.cq_threads, 2);
	assert_null(cfg.config_file);
	mon_config_free(&cfg);
	unlink(a);
	unlink(b);
}

static void test_config_file_syntax(void **state)
{
	char path[256];
	write_temp("\n"
	           "   # indented comment\n"
	           "listen=unix:/run/monitord.sock\r\n"
	           "data_dir = /var/lib/monitord/pg   # trailing comment\n"
	           "database = \"host=/run/postgresql password='a # b' dbname=mon\"  # quoted\n"
	           "port-file = \"\"\n"
	           "\tlog_level\t=\tDEBUG\n"
	           "tls-cert = /etc/monitord/pass#word.pem\n"
	           "tls-key = \"/etc/monitord/key \\\"x\\\".pem\"\n"
	           "allow-insecure-remote = yes\n"
	           "max-recv-message-bytes = 1024",
	           path, sizeof(path));
	char flag[300];
	snprintf(flag, sizeof(flag), "--config=%s", path);
	struct mon_config cfg;
	struct mon_error err;
	assert_int_equal(load(ARGV(flag), NO_ENV, &cfg, &err), 0);
	assert_string_equal(cfg.listen, "unix:/run/monitord.sock");
	assert_true(cfg.listen_addr.is_unix);
	assert_string_equal(cfg.data_dir, "/var/lib/monitord/pg");
	assert_string_equal(cfg.database, "host=/run/postgresql password='a # b' dbname=mon");
	assert_null(cfg.port_file);
	assert_int_equal(cfg.log_level, LOG_DEBUG);
	assert_string_equal(cfg.tls_cert, "/etc/monitord/pass#word.pem");
	assert_string_equal(cfg.tls_key, "/etc/monitord/key \"x\".pem");
	assert_true(cfg.allow_insecure_remote);
	assert_int_equal(cfg.max_recv_message_bytes, 1024);
	assert_int_equal(mon_config_origin_of(&cfg, "max-recv-message-bytes")->line, 11);
	mon_config_free(&cfg);
	unlink(path);
}

static void test_config_file_errors(void **state)
{
	expect_file_error("cq-threads = 2\nlisten_port = 1\n", ":2: unknown setting \"listen_port\"");
	expect_file_error("\n\ncq-threads = 0\n", ":3: cq-threads: must be between 1 and 64, got \"0\"");
	expect_file_error("cq-threads = 2\n# x\ncq_threads = 3\n", ":3: cq-threads: set twice (first on line 1)");
	expect_file_error("listen 127.0.0.1:1\n", ":1: expected \"key = value\", got \"listen 127.0.0.1:1\"");
	expect_file_error("= 3\n", ":1: expected \"key = value\"");
	expect_file_error("database = \"host=x\n", ":1: database: unterminated quoted value");
	expect_file_error("database = \"host=x\" dbname=y\n", ":1: database: unexpected text after the quoted value");
	expect_file_error("config = /etc/other.conf\n", ":1: config: cannot be set inside a config file");
	expect_file_error("allow-insecure-remote = maybe\n",
	                  ":1: allow-insecure-remote: must be true or false (also 1/0, yes/no, on/off), got \"maybe\"");
	expect_file_error("log-level = verbose\n",
	                  ":1: log-level: must be debug, info, warn or error, got \"verbose\"");
	expect_file_error("data-dir =\n", ":1: data-dir: must not be empty");
	expect_file_error("listen = 127.0.0.1\n", ":1: listen: missing port");
	expect_file_error("keepalive-time-ms = 2h\n",
	                  ":1: keepalive-time-ms: must be an integer between 1000 and 86400000, got \"2h\"");

	char *long_line = malloc(5000);
	assert_non_null(long_line);
	memset(long_line, 'a', 4999);
	long_line[4999] = '\0';
	memcpy(long_line, "database = ", 11);
	expect_file_error(long_line, ":1: line longer than 4096 bytes");
	free(long_line);

	expect_error(ARGV("--config", "/nonexistent/monitord.conf"), NO_ENV,
	             "config file \"/nonexistent/monitord.conf\": No such file or directory");
	expect_error(NO_ARGS, ENVP("MONITORD_CONFIG=/nonexistent/m.conf"), "config file \"/nonexistent/m.conf\"");
}

static void test_config_env_errors_and_warnings(void **state)
{
	expect_error(NO_ARGS, ENVP("MONITORD_CQ_THREADS=many"),
	             "environment variable MONITORD_CQ_THREADS: cq-threads: must be an integer between 1 and 64, got "
	             "\"many\"");
	expect_error(NO_ARGS, ENVP("MONITORD_LISTEN=localhost"), "environment variable MONITORD_LISTEN: listen:");
	expect_error(
	        NO_ARGS, ENVP("MONITORD_ALLOW_INSECURE_REMOTE=2"),
	        "environment variable MONITORD_ALLOW_INSECURE_REMOTE: allow-insecure-remote: must be true or false");

	struct mon_config cfg;
	struct mon_error err;
	/* Empty variables count as unset; unknown MONITORD_ variables are reported, not fatal. */
	assert_int_equal(
	        load(NO_ARGS, ENVP("MONITORD_LISTEN=", "MONITORD_LISTN=0.0.0.0:1", "MONITORD_CONFIG="), &cfg, &err), 0);
	assert_string_equal(cfg.listen, "127.0.0.1:50051");
	assert_int_equal(cfg.warning_count, 1);
	assert_string_equal(cfg.warnings[0], "unknown environment variable MONITORD_LISTN ignored");
	mon_config_free(&cfg);
}

static void test_config_flag_forms(void **state)
{
	struct mon_config cfg;
	struct mon_error err;
	assert_int_equal(load(ARGV("--listen", "[::1]:0", "--port-file=/tmp/p", "--allow-insecure-remote",
	                           "--log_level", "error", "--data-dir", "rel/dir"),
	                      NO_ENV, &cfg, &err),
	                 0);
	assert_string_equal(cfg.listen, "[::1]:0");
	assert_true(cfg.listen_addr.is_ipv6);
	assert_int_equal(cfg.listen_addr.port, 0);
	assert_string_equal(cfg.port_file, "/tmp/p");
	assert_true(cfg.allow_insecure_remote);
	assert_int_equal(cfg.log_level, LOG_ERROR);
	assert_true(cfg.data_dir[0] == '/');
	size_t n = strlen(cfg.data_dir);
	assert_true(n > 8 && strcmp(cfg.data_dir + n - 8, "/rel/dir") == 0);
	mon_config_free(&cfg);

	/* A boolean flag takes an optional following word, or =word. */
	assert_int_equal(load(ARGV("--allow-insecure-remote", "off", "--cq-threads", "1"), NO_ENV, &cfg, &err), 0);
	assert_false(cfg.allow_insecure_remote);
	assert_int_equal(cfg.cq_threads, 1);
	mon_config_free(&cfg);
	assert_int_equal(load(ARGV("--allow-insecure-remote=No"), ENVP("MONITORD_ALLOW_INSECURE_REMOTE=1"), &cfg, &err),
	                 0);
	assert_false(cfg.allow_insecure_remote);
	mon_config_free(&cfg);
}

static void test_config_flag_errors(void **state)
{
	expect_error(ARGV("--max-concurrent-streams", "0"), NO_ENV,
	             "command line: max-concurrent-streams: must be between 1 and 100000, got \"0\"");
	expect_error(ARGV("--max-concurrent-streams=100001"), NO_ENV,
	             "max-concurrent-streams: must be between 1 and 100000, got \"100001\"");
	expect_error(ARGV("--listne", "x"), NO_ENV, "unknown option \"--listne\" (see --help)");
	expect_error(ARGV("--listne=x"), NO_ENV, "unknown option \"--listne\" (see --help)");
	expect_error(ARGV("--listen"), NO_ENV, "--listen: missing value");
	expect_error(ARGV("--listen", "--cq-threads", "2"), NO_ENV, "--listen: missing value");
	expect_error(ARGV("--config"), NO_ENV, "--config: missing value");
	expect_error(ARGV("serve"), NO_ENV, "unexpected argument \"serve\" (see --help)");
	expect_error(ARGV("-v"), NO_ENV, "unexpected argument \"-v\"");
	expect_error(ARGV("--"), NO_ENV, "unexpected argument \"--\"");
	expect_error(ARGV("--cq-threads=2", "--cq_threads", "3"), NO_ENV, "--cq-threads: given twice");
	expect_error(ARGV("--config=a", "--config=b"), NO_ENV, "--config: given twice");
	/* A bad value in a flag is reported even when a lower layer was fine. */
	expect_error(ARGV("--worker-threads", "0"), ENVP("MONITORD_WORKER_THREADS=3"),
	             "worker-threads: must be between 1 and 1024, got \"0\"");
}

static void test_config_integer_values(void **state)
{
	static const char *const bad[] = {"", " 5", "5 ", "+5", "0x10", "1e3", "5.0", "99999999999999999999", "-"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char flag[64];
		snprintf(flag, sizeof(flag), "--db-pool-size=%s", bad[i]);
		expect_error(ARGV(flag), NO_ENV, "db-pool-size: must be an integer between 1 and 1000");
	}
	expect_error(ARGV("--db-pool-size=-1"), NO_ENV, "db-pool-size: must be between 1 and 1000, got \"-1\"");
	expect_error(ARGV("--max-recv-message-bytes=268435457"), NO_ENV,
	             "max-recv-message-bytes: must be between 1024 and 268435456");
	expect_error(ARGV("--handshake-timeout-ms=99"), NO_ENV, "handshake-timeout-ms: must be between 100 and 300000");

	struct mon_config cfg;
	struct mon_error err;
	assert_int_equal(load(ARGV("--db-pool-size=1000", "--shutdown-grace-ms=0", "--max-send-message-bytes=268435456",
	                           "--keepalive-time-ms=86400000"),
	                      NO_ENV, &cfg, &err),
	                 0);
	assert_int_equal(cfg.db_pool_size, 1000);
	assert_int_equal(cfg.shutdown_grace_ms, 0);
	assert_int_equal(cfg.max_send_message_bytes, 268435456);
	assert_int_equal(cfg.keepalive_time_ms, 86400000);
	mon_config_free(&cfg);
}

static void test_config_tls_and_remote_rules(void **state)
{
	expect_error(ARGV("--tls-cert", "/c.pem"), NO_ENV,
	             "tls-cert and tls-key must be set together (only tls-cert is set, by --tls-cert)");
	expect_error(NO_ARGS, ENVP("MONITORD_TLS_KEY=/k.pem"),
	             "tls-cert and tls-key must be set together (only tls-key is set, by MONITORD_TLS_KEY)");
	expect_error(ARGV("--tls-client-ca", "/ca.pem"), NO_ENV, "tls-client-ca: needs tls-cert and tls-key");
	expect_error(ARGV("--listen", "0.0.0.0:50051"), NO_ENV,
	             "listen: plaintext on non-loopback address \"0.0.0.0:50051\" is refused");
	expect_error(ARGV("--listen", "[::]:1"), NO_ENV, "plaintext on non-loopback address");
	expect_error(ARGV("--listen", "monitor.example.com:1"), NO_ENV, "plaintext on non-loopback address");

	struct mon_config cfg;
	struct mon_error err;
	assert_int_equal(load(ARGV("--listen", "0.0.0.0:50051", "--allow-insecure-remote"), NO_ENV, &cfg, &err), 0);
	mon_config_free(&cfg);
	assert_int_equal(load(ARGV("--listen", "0.0.0.0:50051", "--tls-cert", "/c.pem", "--tls-key", "/k.pem",
	                           "--tls-client-ca", "/ca.pem"),
	                      NO_ENV, &cfg, &err),
	                 0);
	assert_string_equal(cfg.tls_cert, "/c.pem");
	assert_string_equal(cfg.tls_key, "/k.pem");
	assert_string_equal(cfg.tls_client_ca, "/ca.pem");
	mon_config_free(&cfg);
	assert_int_equal(load(ARGV("--listen", "unix:/tmp/m.sock"), NO_ENV, &cfg, &err), 0);
	mon_config_free(&cfg);
	assert_int_equal(load(ARGV("--listen", "localhost:0"), NO_ENV, &cfg, &err), 0);
	mon_config_free(&cfg);
}

/* Metric retention tiers: defaults, and each tier at least as long as the one below it. */
static void test_config_metrics_retention_tiers(void **state)
{
	struct mon_config cfg;
	struct mon_error err;
	assert_int_equal(load(NO_ARGS, NO_ENV, &cfg, &err), 0);
	assert_int_equal(cfg.metrics_raw_retention_days, 7);
	assert_int_equal(cfg.metrics_5min_retention_days, 90);
	assert_int_equal(cfg.metrics_hourly_retention_days, 365);
	assert_int_equal(cfg.metrics_rollup_interval_ms, 10000);
	assert_int_equal(cfg.metrics_replay_window_s, 600);
	mon_config_free(&cfg);
	expect_error(ARGV("--metrics-raw-retention-days=100"), NO_ENV,
	             "metrics-5min-retention-days: must be at least metrics-raw-retention-days (100), got 90");
	expect_error(ARGV("--metrics-5min-retention-days=400"), NO_ENV,
	             "metrics-hourly-retention-days: must be at least metrics-5min-retention-days (400), got 365");
	expect_error(ARGV("--metrics-rollup-interval-ms=999"), NO_ENV,
	             "metrics-rollup-interval-ms: must be between 1000 and 86400000");
	assert_int_equal(load(ARGV("--metrics-raw-retention-days=30", "--metrics-5min-retention-days=30",
	                           "--metrics-hourly-retention-days=30"),
	                      NO_ENV, &cfg, &err),
	                 0);
	assert_int_equal(cfg.metrics_hourly_retention_days, 30);
	mon_config_free(&cfg);
}

static void test_config_booleans(void **state)
{
	static const char *const yes[] = {"true", "TRUE", "True", "1", "yes", "YES", "on", "On"};
	static const char *const no[] = {"false", "FALSE", "0", "no", "No", "off", "OFF"};
	static const char *const bad[] = {"", "2", "y", "n", "t", "f", "enabled", "true ", " yes", "-1"};
	struct mon_error err;
	bool v = false;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		v = false;
		assert_int_equal(mon_config_parse_bool("x", yes[i], &v, &err), 0);
		assert_true(v);
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		v = true;
		assert_int_equal(mon_config_parse_bool("x", no[i], &v, &err), 0);
		assert_false(v);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = true;
		mon_error_clear(&err);
		assert_int_equal(mon_config_parse_bool("allow-insecure-remote", bad[i], &v, &err), MON_EINVAL);
		assert_true(v);
		assert_non_null(strstr(err.msg, "allow-insecure-remote: must be true or false"));
	}
	assert_int_equal(mon_config_parse_bool("x", "no", &v, NULL), 0);
	assert_int_equal(mon_config_parse_bool("x", "nope", &v, NULL), MON_EINVAL);
}

static void test_config_help_and_version(void **state)
{
	struct mon_config cfg;
	struct mon_error err;
	/* Help wins over anything else on the line, even errors. */
	assert_int_equal(load(ARGV("--cq-threads=0", "--help"), ENVP("MONITORD_CONFIG=/nonexistent"), &cfg, &err), 0);
	assert_true(cfg.show_help);
	assert_null(cfg.listen);
	mon_config_free(&cfg);
	assert_int_equal(load(ARGV("-h"), NO_ENV, &cfg, &err), 0);
	assert_true(cfg.show_help);
	mon_config_free(&cfg);
	assert_int_equal(load(ARGV("--version"), NO_ENV, &cfg, &err), 0);
	assert_true(cfg.show_version);
	assert_false(cfg.show_help);
	mon_config_free(&cfg);
}

/* Every setting, as --help and the example config must name them. */
static const char *const setting_names[] = {
        "listen",
        "database",
        "data-dir",
        "port-file",
        "log-level",
        "cq-threads",
        "worker-threads",
        "db-pool-size",
        "max-recv-message-bytes",
        "max-send-message-bytes",
        "max-concurrent-streams",
        "keepalive-min-ping-ms",
        "keepalive-time-ms",
        "keepalive-timeout-ms",
        "handshake-timeout-ms",
        "stream-queue-max",
        "shutdown-grace-ms",
        "tls-cert",
        "tls-key",
        "tls-client-ca",
        "allow-insecure-remote",
        "db-statement-timeout-ms",
        "auth",
        "auth-standard-services",
        "rate-limit-per-s",
        "rate-limit-burst",
        "max-streams-per-caller",
        "probe-concurrency",
        "probe-proxy",
        "probe-run-concurrency",
        "probe-allow-networks",
        "probe-deny-networks",
        "probe-follow-cross-host-redirects",
        "health-check-retention-days",
        "metrics-raw-retention-days",
        "metrics-5min-retention-days",
        "metrics-hourly-retention-days",
        "metrics-rollup-interval-ms",
        "metrics-replay-window-s",
        "alert-tick-ms",
        "alert-retention-days",
        "idempotency-retention-hours",
        "notify-max-attempts",
        "notify-timeout-ms",
        "secrets-key-file",
};

static void test_config_help_lists_every_setting(void **state)
{
	const char *const *names = setting_names;
	assert_int_equal(sizeof(setting_names) / sizeof(setting_names[0]), MON_CONFIG_SETTING_COUNT);
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	assert_non_null(f);
	mon_config_print_help(f, "monitord");
	assert_int_equal(fclose(f), 0);
	assert_non_null(strstr(text, "Usage: monitord [OPTIONS]"));
	assert_non_null(strstr(text, "--help"));
	assert_non_null(strstr(text, "--version"));
	assert_non_null(strstr(text, "--config FILE"));
	assert_non_null(strstr(text, "MONITORD_CONFIG"));
	assert_non_null(strstr(text, "DATABASE_URL"));
	for (size_t i = 0; i < sizeof(setting_names) / sizeof(setting_names[0]); i++) {
		char flag[64];
		char env[64];
		snprintf(flag, sizeof(flag), "\n  --%s ", names[i]);
		snprintf(env, sizeof(env), "env: MONITORD_");
		size_t at = strlen(env);
		for (const char *p = names[i]; *p != '\0' && at + 1 < sizeof(env); p++)
			env[at++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
		env[at] = '\0';
		if (strstr(text, flag) == NULL || strstr(text, env) == NULL)
			print_error("help lacks %s or %s\n", flag, env);
		assert_non_null(strstr(text, flag));
		assert_non_null(strstr(text, env));
	}
	assert_non_null(strstr(text, "default: 127.0.0.1:50051"));
	assert_non_null(strstr(text, "default: 1000 (range 1 to 100000)"));
	/* Lines fit a terminal. */
	for (char *line = text; *line != '\0';) {
		size_t line_len = strcspn(line, "\n");
		assert_true(line_len <= 79);
		line += line_len + (line[line_len] == '\n');
	}
	free(text);
}

static void test_config_describe_redacts_and_names_sources(void **state)
{
	char path[256];
	write_temp("\ncq-threads = 4\n", path, sizeof(path));
	char flag[300];
	snprintf(flag, sizeof(flag), "--config=%s", path);
	struct mon_config cfg;
	struct mon_error err;
	assert_int_equal(load(ARGV(flag, "--log-level=debug"),
	                      ENVP("MONITORD_DATABASE=host=/pg user=mon password='s3cr et' dbname=mon"), &cfg, &err),
	                 0);
	char *d = mon_config_describe(&cfg);
	assert_non_null(d);
	assert_null(strstr(d, "s3cr"));
	assert_non_null(strstr(d, "database=\"host=/pg user=mon password=*** dbname=mon\""));
	assert_non_null(strstr(d, "listen=127.0.0.1:50051"));
	assert_non_null(strstr(d, "cq-threads=4"));
	assert_non_null(strstr(d, "log-level=debug"));
	assert_non_null(strstr(d, "allow-insecure-remote=false"));
	assert_non_null(strstr(d, "max-send-message-bytes=16777216"));
	assert_non_null(strstr(d, "port-file=\"\""));
	assert_non_null(strstr(d, " sources=\""));
	assert_non_null(strstr(d, "database:env(MONITORD_DATABASE)"));
	assert_non_null(strstr(d, "log-level:flag"));
	assert_non_null(strstr(d, "cq-threads:file(line 2)"));
	assert_null(strstr(d, "listen:"));
	free(d);
	mon_config_free(&cfg);
	unlink(path);
}

/* docs/configuration.example loads as is and shows every setting. */
static void test_config_example_file_is_valid(void **state)
{
	char flag[4200];
	snprintf(flag, sizeof(flag), "--config=%s", MON_CONFIG_EXAMPLE);
	struct mon_config cfg;
	struct mon_error err;
	int rc = load(ARGV(flag), NO_ENV, &cfg, &err);
	if (rc != 0)
		print_error("%s\n", err.msg);
	assert_int_equal(rc, 0);
	assert_string_equal(cfg.listen, "0.0.0.0:50051");
	assert_non_null(cfg.tls_cert);
	assert_non_null(cfg.database);
	assert_int_equal(cfg.worker_threads, 16);

	FILE *f = fopen(MON_CONFIG_EXAMPLE, "r");
	assert_non_null(f);
	char text[16384];
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	for (size_t i = 0; i < MON_CONFIG_SETTING_COUNT; i++) {
		const char *const *names = setting_names;
		char line[80];
		snprintf(line, sizeof(line), "\n%s = ", names[i]);
		char commented[80];
		snprintf(commented, sizeof(commented), "\n# %s = ", names[i]);
		if (strstr(text, line) == NULL && strstr(text, commented) == NULL)
			print_error("the example lacks %s\n", names[i]);
		assert_true(strstr(text, line) != NULL || strstr(text, commented) != NULL);
	}
	mon_config_free(&cfg);
}

static void expect_redacted(const char *in, const char *want)
{
	char buf[512];
	mon_config_redact_conninfo(in, buf, sizeof(buf));
	if (strcmp(buf, want) != 0)
		print_error("redact(%s) = %s, want %s\n", in, buf, want);
	assert_string_equal(buf, want);
}

static void test_config_redact_conninfo(void **state)
{
	expect_redacted("host=/pg dbname=mon", "host=/pg dbname=mon");
	expect_redacted("host=/pg password=hunter2 dbname=mon", "host=/pg password=*** dbname=mon");
	expect_redacted("password = 'a b\\' c' user=x", "password = *** user=x");
	expect_redacted("password='unterminated", "password=***");
	expect_redacted("host=x garbage", "host=x garbage ***");
	expect_redacted("postgresql://user:pw@db.example:5432/mon?sslmode=require",
	                "postgresql://user:***@db.example:5432/mon?sslmode=require");
	expect_redacted("postgres://user@db/mon", "postgres://user@db/mon");
	expect_redacted("postgresql://db/mon?user=u&password=p&sslmode=disable",
	                "postgresql://db/mon?user=u&password=***&sslmode=disable");
	expect_redacted("postgresql://u:p%40ss@h", "postgresql://u:***@h");
	expect_redacted("postgresql:///mon?host=/run/postgresql", "postgresql:///mon?host=/run/postgresql");
	char small[8];
	mon_config_redact_conninfo("host=/a/long/path", small, sizeof(small));
	assert_string_equal(small, "host=/a");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_config_defaults),
	        cmocka_unit_test(test_config_precedence_four_layers),
	        cmocka_unit_test(test_config_database_url_below_monitord_database),
	        cmocka_unit_test(test_config_file_chosen_by_flag_or_env),
	        cmocka_unit_test(test_config_file_syntax),
	        cmocka_unit_test(test_config_file_errors),
	        cmocka_unit_test(test_config_env_errors_and_warnings),
	        cmocka_unit_test(test_config_flag_forms),
	        cmocka_unit_test(test_config_flag_errors),
	        cmocka_unit_test(test_config_integer_values),
	        cmocka_unit_test(test_config_tls_and_remote_rules),
	        cmocka_unit_test(test_config_metrics_retention_tiers),
	        cmocka_unit_test(test_config_booleans),
	        cmocka_unit_test(test_config_help_and_version),
	        cmocka_unit_test(test_config_help_lists_every_setting),
	        cmocka_unit_test(test_config_describe_redacts_and_names_sources),
	        cmocka_unit_test(test_config_redact_conninfo),
	        cmocka_unit_test(test_config_example_file_is_valid),
	};
	return cmocka_run_group_tests_name("config_load", tests, NULL, NULL);
}
