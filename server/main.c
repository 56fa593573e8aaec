/*
 * monitord: loads the configuration, starts the embedded PostgreSQL when no
 * database is configured, starts the gRPC server with every service, and
 * shuts everything down in order on SIGINT or SIGTERM.
 *
 * Signals are blocked before any thread starts and taken with sigwait() in
 * main, so no handler code runs inside gRPC or libpq.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin.h"
#include "app.h"
#include "metrics/ingest.h"
#include "config.h"
#include "mon_descriptor_set.h"
#include "util/log.h"

#define PEM_MAX_BYTES (1024 * 1024)

/* Reads a whole PEM file into a NUL-terminated string the caller frees. */
static int read_pem(const char *setting, const char *path, char **out, struct mon_error *err)
{
	*out = NULL;
	int rc = 0;
	char *buf = NULL;
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return mon_error_set(err, MON_EINVAL, "%s: could not open \"%s\": %s", setting, path, strerror(errno));
	buf = malloc(PEM_MAX_BYTES + 1);
	if (buf == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	size_t n = fread(buf, 1, PEM_MAX_BYTES + 1, f);
	if (ferror(f) || n > PEM_MAX_BYTES || n == 0) {
		rc = mon_error_set(err, MON_EINVAL, "%s: \"%s\" is unreadable, empty or larger than 1 MiB", setting,
		                   path);
		goto out;
	}
	buf[n] = '\0';
	*out = buf;
	buf = NULL;
out:
	free(buf);
	fclose(f);
	return rc;
}

static int write_port_file(const char *path, const char *addr, struct mon_error *err)
{
	char tmp[4096];
	int n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return mon_error_set(err, MON_EINVAL, "port-file: path too long");
	FILE *f = fopen(tmp, "w");
	if (f == NULL)
		return mon_error_set(err, MON_EINVAL, "port-file: could not write \"%s\": %s", path, strerror(errno));
	fprintf(f, "%s\n", addr);
	if (fclose(f) != 0 || rename(tmp, path) != 0)
		return mon_error_set(err, MON_EINVAL, "port-file: could not write \"%s\": %s", path, strerror(errno));
	return 0;
}

int main(int argc, char **argv)
{
	struct app app;
	struct mon_error err = {0};
	char *tls_cert = NULL, *tls_key = NULL, *tls_ca = NULL;
	int exit_code = 1;
	memset(&app, 0, sizeof(app));

	/* `monitord admin ...` manages callers and keys on the server host, then exits. */
	if (argc >= 2 && strcmp(argv[1], "admin") == 0)
		return admin_main(argc, argv);

	if (mon_config_load(argc, argv, NULL, &app.cfg, &err) != 0) {
		fprintf(stderr, "monitord: %s\n", err.msg);
		fprintf(stderr, "Try \"monitord --help\".\n");
		return 2;
	}
	if (app.cfg.show_help) {
		mon_config_print_help(stdout, "monitord");
		mon_config_free(&app.cfg);
		return 0;
	}
	if (app.cfg.show_version) {
		printf("monitord %s\n", MON_VERSION);
		mon_config_free(&app.cfg);
		return 0;
	}
	log_set_level(app.cfg.log_level);

	/* Block the signals we wait for before any thread exists. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (log_start() != 0)
		fprintf(stderr, "monitord: logging unbuffered (out of memory)\n");

	char *described = mon_config_describe(&app.cfg);
	log_info("msg=\"starting monitord\" version=%s %s", MON_VERSION, described ? described : "");
	free(described);
	for (size_t i = 0; i < app.cfg.warning_count; i++)
		log_warn("msg=\"%s\"", app.cfg.warnings[i]);

	bool tls = app.cfg.tls_cert != NULL;
	if (!tls && !app.cfg.listen_addr.is_unix && !app.cfg.listen_addr.is_loopback) {
		if (!app.cfg.allow_insecure_remote) {
			log_error("msg=\"refusing plaintext on a non-loopback address; configure tls-cert and tls-key, "
			          "or set allow-insecure-remote\" listen=\"%s\"",
			          app.cfg.listen);
			goto out;
		}
		log_warn("msg=\"serving plaintext on a non-loopback address (allow-insecure-remote)\" listen=\"%s\"",
		         app.cfg.listen);
	}
	if (tls) {
		if (read_pem("tls-cert", app.cfg.tls_cert, &tls_cert, &err) != 0 ||
		    read_pem("tls-key", app.cfg.tls_key, &tls_key, &err) != 0 ||
		    (app.cfg.tls_client_ca && read_pem("tls-client-ca", app.cfg.tls_client_ca, &tls_ca, &err) != 0)) {
			log_error("msg=\"%s\"", err.msg);
			goto out;
		}
	}

	/* The database: configured, or the embedded cluster. */
	const char *conninfo = app.cfg.database;
	if (conninfo == NULL) {
		log_info("msg=\"no database configured, starting the embedded PostgreSQL\" data_dir=\"%s\"",
		         app.cfg.data_dir);
		if (db_embedded_start(app.cfg.data_dir, &app.embedded, app.conninfo, sizeof(app.conninfo), &err) != 0) {
			log_error("msg=\"could not start the embedded PostgreSQL: %s\"", err.msg);
			goto out;
		}
		conninfo = app.conninfo;
	}
	struct db_config dbc = {
	        .conninfo = conninfo,
	        .pool_size = app.cfg.db_pool_size,
	        .connect_timeout_s = 5,
	        .application_name = "monitord",
	        .session_sql = metrics_session_sql,
	        .statement_timeout_ms = app.cfg.db_statement_timeout_ms,
	};
	if (db_pool_create(&dbc, &app.pool, &err) != 0) {
		log_error("msg=\"database: %s\"", err.msg);
		goto out;
	}
	if (db_bus_create(conninfo, &app.bus, &err) != 0 ||
	    identity_store_create(app.pool, app.bus, &app.identity, &err) != 0 ||
	    health_watch_hub_create(app.pool, app.bus, &app.health_hub, &err) != 0 ||
	    metrics_watch_hub_create(app.pool, app.bus, &app.metrics_hub, &err) != 0 ||
	    alerts_watch_hub_create(app.pool, app.bus, &app.alerts_hub, &err) != 0 ||
	    alerts_engine_start(&(struct alerts_engine_config){.pool = app.pool,
	                                                       .bus = app.bus,
	                                                       .tick_ms = app.cfg.alert_tick_ms,
	                                                       .retention_days = app.cfg.alert_retention_days},
	                        &app.alerts_engine, &err) != 0 ||
	    notifier_start(&(struct notify_config){.pool = app.pool,
	                                           .bus = app.bus,
	                                           .max_attempts = app.cfg.notify_max_attempts,
	                                           .timeout_ms = app.cfg.notify_timeout_ms,
	                                           .secrets_key_file = app.cfg.secrets_key_file},
	                   &app.notifier, &err) != 0 ||
	    db_bus_start(app.bus, &err) != 0 || audit_writer_create(app.pool, &app.audit, &err) != 0) {
		log_error("msg=\"%s\"", err.msg);
		goto out;
	}

	/* The RPC server. */
	struct rpc_server_config rc;
	rpc_server_config_defaults(&rc);
	rc.listen_addr = app.cfg.listen;
	rc.cq_threads = app.cfg.cq_threads;
	rc.worker_threads = app.cfg.worker_threads;
	rc.max_recv_message_bytes = app.cfg.max_recv_message_bytes;
	rc.max_send_message_bytes = app.cfg.max_send_message_bytes;
	rc.max_concurrent_streams = app.cfg.max_concurrent_streams;
	rc.keepalive_min_ping_ms = app.cfg.keepalive_min_ping_ms;
	rc.keepalive_time_ms = app.cfg.keepalive_time_ms;
	rc.keepalive_timeout_ms = app.cfg.keepalive_timeout_ms;
	rc.handshake_timeout_ms = app.cfg.handshake_timeout_ms;
	rc.stream_queue_max = app.cfg.stream_queue_max;
	rc.tls_cert_pem = tls_cert;
	rc.tls_key_pem = tls_key;
	rc.tls_client_ca_pem = tls_ca;
	rc.descriptor_set = mon_descriptor_set;
	rc.descriptor_set_len = mon_descriptor_set_len;
	if (rpc_server_create(&rc, &app.rpc, &err) != 0 || app_bind_services(&app, &err) != 0 ||
	    app_monitor_start(&app, &err) != 0) {
		log_error("msg=\"%s\"", err.msg);
		goto out;
	}
	/* At shutdown the watch hubs tell their streams where to resume, before the server ends them. */
	if (rpc_server_on_shutdown(app.rpc, health_watch_hub_drain, app.health_hub) != 0 ||
	    rpc_server_on_shutdown(app.rpc, metrics_watch_hub_drain, app.metrics_hub) != 0 ||
	    rpc_server_on_shutdown(app.rpc, alerts_watch_hub_drain, app.alerts_hub) != 0) {
		log_error("msg=\"could not register the watch streams' shutdown\"");
		goto out;
	}
	struct prober_config pc = {
	        .pool = app.pool,
	        .concurrency = app.cfg.probe_concurrency,
	        .proxy = app.cfg.probe_proxy,
	};
	struct metrics_maintenance_config mc = {
	        .pool = app.pool,
	        .interval_ms = app.cfg.metrics_rollup_interval_ms,
	        .raw_retention_days = app.cfg.metrics_raw_retention_days,
	        .rollup_5min_days = app.cfg.metrics_5min_retention_days,
	        .rollup_hourly_days = app.cfg.metrics_hourly_retention_days,
	        .replay_window_s = app.cfg.metrics_replay_window_s,
	};
	if (prober_start(&pc, &app.prober, &err) != 0 ||
	    health_retention_start(app.pool, app.cfg.health_check_retention_days, 3600, &app.health_retention, &err) !=
	            0 ||
	    metrics_maintenance_start(&mc, &app.metrics_maintenance, &err) != 0) {
		log_error("msg=\"%s\"", err.msg);
		goto out;
	}
	int port = 0;
	if (rpc_server_start(app.rpc, &port, &err) != 0) {
		log_error("msg=\"%s\"", err.msg);
		goto out;
	}
	char bound[512];
	if (mon_listen_addr_format(&app.cfg.listen_addr, port, bound, sizeof(bound)) != 0)
		snprintf(bound, sizeof(bound), "%s", app.cfg.listen);
	log_info("msg=\"listening\" address=%s tls=%s mtls=%s", bound, tls ? "on" : "off", tls_ca ? "on" : "off");
	if (app.cfg.port_file && write_port_file(app.cfg.port_file, bound, &err) != 0) {
		log_error("msg=\"%s\"", err.msg);
		goto out;
	}

	int sig = 0;
	sigwait(&sigs, &sig);
	log_info("msg=\"shutting down\" signal=%s grace_ms=%d", sig == SIGINT ? "SIGINT" : "SIGTERM",
	         app.cfg.shutdown_grace_ms);
	exit_code = 0;

out:
	if (app.rpc)
		rpc_server_shutdown(app.rpc, app.cfg.shutdown_grace_ms);
	app_monitor_stop(&app);
	prober_stop(app.prober); /* after the RPC server: RunHealthCheck uses it */
	health_retention_stop(app.health_retention);
	metrics_maintenance_stop(app.metrics_maintenance);
	rpc_server_destroy(app.rpc);
	db_bus_destroy(app.bus);
	health_watch_hub_destroy(app.health_hub); /* after the server and the bus, which call into it */
	metrics_watch_hub_destroy(app.metrics_hub);
	alerts_engine_stop(app.alerts_engine); /* after the server (RecordMetrics calls it) and the bus */
	notifier_stop(app.notifier);
	alerts_watch_hub_destroy(app.alerts_hub);
	identity_store_destroy(app.identity);
	audit_writer_destroy(app.audit); /* writes the refusals still queued */
	db_pool_destroy(app.pool);
	if (app.embedded) {
		log_info("msg=\"stopping the embedded PostgreSQL\"");
		db_embedded_stop(app.embedded);
	}
	if (app.cfg.port_file && exit_code == 0)
		unlink(app.cfg.port_file);
	free(tls_cert);
	if (tls_key) {
		memset(tls_key, 0, strlen(tls_key));
		free(tls_key);
	}
	free(tls_ca);
	if (exit_code == 0)
		log_info("msg=\"stopped\"");
	mon_config_free(&app.cfg);
	log_stop();
	return exit_code;
}
