/*
 * monitord: loads the configuration, reads the TLS files, starts every part
 * of the server (app_start: the embedded PostgreSQL when no database is
 * configured, the gRPC server with every service, the background jobs),
 * and stops them all in order (app_stop) on SIGINT or SIGTERM.
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
#include "config.h"
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

	/* Every part, in dependency order; app_stop stops them in the one safe order (app.c says why). */
	int port = 0;
	struct app_tls app_tls = {.cert_pem = tls_cert, .key_pem = tls_key, .client_ca_pem = tls_ca};
	if (app_start(&app, &app_tls, &port) != 0)
		goto out;
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
	app_stop(&app);
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
