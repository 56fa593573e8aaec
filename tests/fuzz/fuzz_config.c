/*
 * Fuzz target: monitord's configuration (server/config.c). The first byte
 * picks what the rest is:
 *   0  a config file (--config, read from an in-memory file)
 *   1  command-line arguments, separated by NUL bytes
 *   2  environment entries ("NAME=value"), separated by NUL bytes
 *   3  a listen address, which when accepted must format and parse back
 *   4  a conninfo to redact, whose password must not survive redaction
 * A loaded configuration is described (the startup log line) and freed.
 * Flags and environment that name a config file are skipped: they would
 * open whatever file they name.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "server/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_PARTS 64

/* Splits text (len bytes, NUL-terminated after them) at NULs into parts, after the fixed ones. */
static size_t split(char *text, size_t len, char **parts, size_t n)
{
	for (size_t i = 0; i <= len && n < MAX_PARTS; i += strlen(text + i) + 1)
		parts[n++] = text + i;
	parts[n] = NULL;
	return n;
}

/* Whether a part names the config file: flags and environment must not open whatever file they name. */
static bool names_config(char **parts)
{
	for (size_t i = 0; parts[i] != NULL; i++)
		if (strcasestr(parts[i], "config") != NULL)
			return true;
	return false;
}

static void load(int argc, char **argv, char **envp)
{
	if (names_config(argv + 1) || names_config(envp))
		return;
	struct mon_config cfg;
	struct mon_error err;
	if (mon_config_load(argc, argv, envp, &cfg, &err) != 0)
		return;
	free(mon_config_describe(&cfg));
	mon_config_free(&cfg);
}

static void listen_round_trip(const char *text)
{
	struct mon_listen_addr addr, again;
	struct mon_error err;
	char buf[1024];
	if (mon_listen_addr_parse(text, &addr, &err) != 0)
		return;
	if (mon_listen_addr_format(&addr, addr.port, buf, sizeof(buf)) != 0)
		return; /* too long for buf */
	if (mon_listen_addr_parse(buf, &again, &err) != 0 || again.port != addr.port)
		abort();
}

/* Whether text is "key=value" pairs split by single spaces: keys [a-z_]+, non-empty values without quotes, \\, = or
 * blanks. */
static bool is_plain_conninfo(const char *text)
{
	const char *p = text;
	while (*p != '\0') {
		size_t key_n = strspn(p, "abcdefghijklmnopqrstuvwxyz_");
		if (key_n == 0 || p[key_n] != '=')
			return false;
		p += key_n + 1;
		size_t value_n = strcspn(p, " \t\n\v\f\r'\\=");
		if (value_n == 0)
			return false; /* "k= v": libpq reads v as k's value */
		p += value_n;
		if (*p == ' ' && p[1] != '\0')
			p++;
		else if (*p != '\0')
			return false;
	}
	return p != text;
}

/*
 * Redacts text; when it is a plain key/value conninfo whose password value
 * (6 or more bytes) appears nowhere else in it, the value must be gone.
 */
static void redact(const char *text)
{
	char out[4096];
	mon_config_redact_conninfo(text, out, sizeof(out));
	if (!is_plain_conninfo(text))
		return;
	const char *p = strstr(text, "password=");
	if (p == NULL || (p != text && p[-1] != ' '))
		return;
	p += strlen("password=");
	size_t n = strcspn(p, " ");
	char secret[64];
	if (n < 6 || n >= sizeof(secret))
		return;
	memcpy(secret, p, n);
	secret[n] = '\0';
	if (strstr(text, secret) == p && strstr(p + 1, secret) == NULL && strstr(out, secret) != NULL)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0 || size > 16384)
		return 0;
	char *text = malloc(size);
	if (text == NULL)
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	char *parts[MAX_PARTS + 1];
	char *no_env[] = {NULL};
	switch (data[0] % 5) {
	case 0: {
		int fd = memfd_create("monitord.conf", 0);
		if (fd < 0)
			break;
		if (write(fd, text, size - 1) == (ssize_t)(size - 1)) {
			char path[64];
			snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
			char *argv[] = {"monitord", "--config", path, NULL};
			struct mon_config cfg;
			struct mon_error err;
			if (mon_config_load(3, argv, no_env, &cfg, &err) == 0) {
				free(mon_config_describe(&cfg));
				mon_config_free(&cfg);
			}
		}
		close(fd);
		break;
	}
	case 1: {
		parts[0] = "monitord";
		size_t n = split(text, size - 1, parts, 1);
		load((int)n, parts, no_env);
		break;
	}
	case 2: {
		split(text, size - 1, parts, 0);
		char *argv[] = {"monitord", NULL};
		load(1, argv, parts);
		break;
	}
	case 3: listen_round_trip(text); break;
	default: redact(text); break;
	}
	free(text);
	return 0;
}
