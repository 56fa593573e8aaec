/*
 * The embedded cluster: a private PostgreSQL 15 that monitord starts in a
 * data folder of its own, for single-machine installs and development. The
 * folder is the cluster's data directory and also holds its Unix socket; no
 * TCP port is opened. initdb runs once (PG_VERSION marks a cluster), a stale
 * postmaster.pid left by a crash does not prevent the next start, and the
 * database "monitord" is created when missing. When monitord runs as root,
 * initdb and pg_ctl run as the postgres user (PostgreSQL refuses root).
 * Settings are durable: monitord.conf, rewritten at every start and
 * included at the end of postgresql.conf (so it wins over earlier lines),
 * sets fsync, synchronous_commit and full_page_writes on, with our own
 * socket settings.
 */
#include "db/db_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"

#define EMB_DEFAULT_BINDIR "/usr/lib/postgresql/15/bin"
#define EMB_SOCKET_NAME "/.s.PGSQL.5432"
#define EMB_READY_TIMEOUT_MS 60000
#define EMB_OUTPUT_MAX 2048

struct db_embedded {
	char data_dir[PATH_MAX];
	char bindir[PATH_MAX];
	bool is_root;
	uid_t uid;
	gid_t gid;
};

int db_conninfo_quote(const char *value, char *out, size_t out_len, struct mon_error *err)
{
	size_t o = 0;
	if (out_len < 3)
		goto too_long;
	out[o++] = '\'';
	for (const char *p = value; *p; p++) {
		if (*p == '\\' || *p == '\'') {
			if (o + 1 >= out_len)
				goto too_long;
			out[o++] = '\\';
		}
		if (o + 1 >= out_len)
			goto too_long;
		out[o++] = *p;
	}
	if (o + 2 > out_len)
		goto too_long;
	out[o++] = '\'';
	out[o] = '\0';
	return 0;
too_long:
	if (out_len > 0)
		out[0] = '\0';
	return mon_error_set(err, MON_ELIMIT, "conninfo: longer than %zu bytes", out_len);
}

/* Turns newlines into spaces and double quotes into single ones so tool output fits one log value. */
static void one_line(char *s)
{
	for (char *p = s; *p; p++) {
		if (*p == '\n' || *p == '\r')
			*p = ' ';
		else if (*p == '"')
			*p = '\'';
	}
}

/*
 * Runs argv (argv[0] a full path) as the cluster's user, output captured
 * into out. Returns the exit status, or -1 when it could not run. The
 * child only makes async-signal-safe calls between fork and exec, and
 * closes every inherited descriptor (a postmaster must not keep monitord's
 * sockets open).
 */
static int run_tool(const struct db_embedded *emb, char *const argv[], char *out, size_t out_len)
{
	int fds[2];
	out[0] = '\0';
	if (pipe(fds) != 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull >= 0)
			dup2(devnull, STDIN_FILENO);
		dup2(fds[1], STDOUT_FILENO);
		dup2(fds[1], STDERR_FILENO);
		if (close_range(3, ~0U, 0) != 0)
			for (int fd = 3; fd < 1024; fd++)
				close(fd);
		if (emb->is_root) {
			gid_t g = emb->gid;
			if (setgroups(1, &g) != 0 || setgid(emb->gid) != 0 || setuid(emb->uid) != 0)
				_exit(126);
		}
		if (chdir("/") != 0)
			_exit(126);
		execv(argv[0], argv);
		_exit(127);
	}
	close(fds[1]);
	size_t len = 0;
	for (;;) {
		char chunk[512];
		ssize_t n = read(fds[0], chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		size_t take = (size_t)n;
		if (take > out_len - 1 - len)
			take = out_len - 1 - len;
		memcpy(out + len, chunk, take);
		len += take;
	}
	out[len] = '\0';
	close(fds[0]);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -1;
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int path_join(char *out, size_t out_len, const char *dir, const char *name, struct mon_error *err)
{
	int n = snprintf(out, out_len, "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= out_len)
		return mon_error_set(err, MON_EINVAL, "data dir: path too long");
	return 0;
}

/* mkdir -p; the last component gets mode 0700 as PostgreSQL requires. */
static int make_dirs(const char *path, struct mon_error *err)
{
	char tmp[PATH_MAX];
	size_t len = strlen(path);
	if (len == 0 || len >= sizeof(tmp))
		return mon_error_set(err, MON_EINVAL, "data dir: path too long");
	memcpy(tmp, path, len + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
			return mon_error_set(err, MON_EPRECOND, "data dir: could not create \"%s\": %s", tmp,
			                     strerror(errno));
		*p = '/';
	}
	if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
		return mon_error_set(err, MON_EPRECOND, "data dir: could not create \"%s\": %s", tmp, strerror(errno));
	return 0;
}

/* Gives others search permission on every parent so the postgres user can reach the data dir. */
static void make_parents_traversable(const char *dir)
{
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof(tmp), "%s", dir);
	for (;;) {
		char *slash = strrchr(tmp, '/');
		if (slash == NULL || slash == tmp)
			break;
		*slash = '\0';
		struct stat st;
		if (stat(tmp, &st) == 0 && (st.st_mode & S_IXOTH) == 0) {
			if (chmod(tmp, st.st_mode | S_IXOTH) == 0)
				log_info("msg=\"made a parent of the data dir traversable\" dir=\"%s\"", tmp);
		}
	}
}

/* Writes content to dir/name, owned by the cluster's user. */
static int write_owned_file(const struct db_embedded *emb, const char *name, const char *content, bool append,
                            struct mon_error *err)
{
	char path[PATH_MAX];
	int rc = path_join(path, sizeof(path), emb->data_dir, name, err);
	if (rc != 0)
		return rc;
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0600);
	if (fd < 0)
		return mon_error_set(err, MON_EPRECOND, "could not write \"%s\": %s", path, strerror(errno));
	size_t len = strlen(content);
	ssize_t w = write(fd, content, len);
	bool is_ok = w == (ssize_t)len;
	if (emb->is_root && fchown(fd, emb->uid, emb->gid) != 0)
		is_ok = false;
	if (close(fd) != 0)
		is_ok = false;
	if (!is_ok)
		return mon_error_set(err, MON_EPRECOND, "could not write \"%s\"", path);
	return 0;
}

static bool file_contains(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return false;
	char line[1024];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f) != NULL)
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

/* Our settings: rewritten at every start, so a moved data dir keeps working. */
static int write_settings(const struct db_embedded *emb, struct mon_error *err)
{
	char conf[PATH_MAX * 2 + 512];
	size_t o = 0;
	o += (size_t)snprintf(conf + o, sizeof(conf) - o,
	                      "# Written by monitord at every start of its embedded cluster; edits are lost.\n"
	                      "# Durable: an acknowledged write survives a crash.\n"
	                      "fsync = on\n"
	                      "synchronous_commit = on\n"
	                      "full_page_writes = on\n"
	                      "listen_addresses = ''\n"
	                      "unix_socket_directories = '");
	for (const char *p = emb->data_dir; *p && o + 3 < sizeof(conf); p++) {
		if (*p == '\'')
			conf[o++] = '\'';
		conf[o++] = *p;
	}
	snprintf(conf + o, sizeof(conf) - o, "'\n");
	int rc = write_owned_file(emb, "monitord.conf", conf, false, err);
	if (rc != 0)
		return rc;
	char main_conf[PATH_MAX];
	rc = path_join(main_conf, sizeof(main_conf), emb->data_dir, "postgresql.conf", err);
	if (rc != 0)
		return rc;
	if (!file_contains(main_conf, "include_if_exists = 'monitord.conf'"))
		rc = write_owned_file(emb, "postgresql.conf", "\ninclude_if_exists = 'monitord.conf'\n", true, err);
	return rc;
}

static int make_conninfo(const struct db_embedded *emb, const char *dbname, char *out, size_t out_len,
                         struct mon_error *err)
{
	char host[PATH_MAX + 64];
	int rc = db_conninfo_quote(emb->data_dir, host, sizeof(host), err);
	if (rc != 0)
		return rc;
	int n = snprintf(out, out_len, "host=%s user=postgres dbname=%s", host, dbname);
	if (n < 0 || (size_t)n >= out_len)
		return mon_error_set(err, MON_ELIMIT, "conninfo: longer than %zu bytes", out_len);
	return 0;
}

/* Waits until the server accepts connections; false at the timeout. */
static bool wait_ready(const char *conninfo, int64_t timeout_ms)
{
	int64_t deadline = mon_now_ms() + timeout_ms;
	for (;;) {
		if (PQping(conninfo) == PQPING_OK)
			return true;
		if (mon_now_ms() >= deadline)
			return false;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 50 * 1000000L};
		nanosleep(&ts, NULL);
	}
}

/* The pid in postmaster.pid, or 0. */
static long read_postmaster_pid(const struct db_embedded *emb)
{
	char path[PATH_MAX];
	if (path_join(path, sizeof(path), emb->data_dir, "postmaster.pid", NULL) != 0)
		return 0;
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	char line[64] = "";
	long pid = 0;
	if (fgets(line, sizeof(line), f) != NULL)
		pid = strtol(line, NULL, 10);
	fclose(f);
	return pid;
}

/*
 * Whether pid is a live postgres process. A zombie does not count: a
 * postmaster killed by a crash stays one until its parent reaps it, and
 * some container init processes never do.
 */
static bool pid_is_postgres(long pid)
{
	char path[64];
	char stat[256] = "";
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return false;
	if (fgets(stat, sizeof(stat), f) == NULL)
		stat[0] = '\0';
	fclose(f);
	/* "pid (comm) state ..." */
	const char *open = strchr(stat, '(');
	const char *close = strrchr(stat, ')');
	if (open == NULL || close == NULL || close[1] != ' ')
		return false;
	if (close[2] == 'Z' || close[2] == 'X')
		return false;
	return strncmp(open + 1, "postgres", 8) == 0;
}

static void remove_stale_lock_files(const struct db_embedded *emb)
{
	char path[PATH_MAX];
	if (path_join(path, sizeof(path), emb->data_dir, "postmaster.pid", NULL) == 0 && unlink(path) == 0)
		log_warn("msg=\"removed a stale postmaster.pid\" dir=\"%s\"", emb->data_dir);
	if (path_join(path, sizeof(path), emb->data_dir, &EMB_SOCKET_NAME[1], NULL) == 0) {
		char lock[PATH_MAX + 8];
		snprintf(lock, sizeof(lock), "%s.lock", path);
		unlink(lock);
	}
}

static int create_database(const char *admin_conninfo, struct mon_error *err)
{
	int rc = 0;
	PGconn *pg = db_connect(admin_conninfo, NULL, NULL, mon_now_ms() + 10000, err);
	PGresult *res = NULL;
	if (pg == NULL)
		return err != NULL ? err->code : MON_EUNAVAIL;
	res = PQexec(pg, "SELECT 1 FROM pg_database WHERE datname = 'monitord'");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		rc = mon_error_set(err, MON_EUNAVAIL, "embedded database: could not list databases");
		goto out;
	}
	if (PQntuples(res) > 0)
		goto out;
	PQclear(res);
	res = PQexec(pg, "CREATE DATABASE monitord");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (state != NULL && strcmp(state, "42P04") == 0)
			goto out; /* created by another process meanwhile */
		char text[512];
		log_error("msg=\"could not create database\" name=monitord reason=\"%s\"",
		          db_log_text(PQerrorMessage(pg), text, sizeof(text)));
		rc = mon_error_set(err, MON_EINTERNAL, "embedded database: could not create database \"monitord\"");
		goto out;
	}
	log_info("msg=\"created database\" name=monitord");
out:
	PQclear(res);
	PQfinish(pg);
	return rc;
}

/* Finds who runs the cluster and where the binaries are. */
static int embedded_setup(struct db_embedded *emb, const char *data_dir, struct mon_error *err)
{
	const char *bindir = getenv("MON_PG_BINDIR");
	if (bindir == NULL || bindir[0] == '\0')
		bindir = EMB_DEFAULT_BINDIR;
	if (snprintf(emb->bindir, sizeof(emb->bindir), "%s", bindir) >= (int)sizeof(emb->bindir))
		return mon_error_set(err, MON_EINVAL, "PostgreSQL bindir: path too long");
	char probe[PATH_MAX];
	int rc = path_join(probe, sizeof(probe), emb->bindir, "pg_ctl", err);
	if (rc != 0)
		return rc;
	if (access(probe, X_OK) != 0)
		return mon_error_set(err, MON_EPRECOND, "PostgreSQL 15 binaries not found in \"%s\"", emb->bindir);

	rc = make_dirs(data_dir, err);
	if (rc != 0)
		return rc;
	if (realpath(data_dir, emb->data_dir) == NULL)
		return mon_error_set(err, MON_EPRECOND, "data dir \"%s\": %s", data_dir, strerror(errno));
	if (strlen(emb->data_dir) + strlen(EMB_SOCKET_NAME) >= 108)
		return mon_error_set(err, MON_EINVAL, "data dir: path too long for a Unix socket (at most %zu bytes)",
		                     107 - strlen(EMB_SOCKET_NAME));

	emb->is_root = geteuid() == 0;
	emb->uid = geteuid();
	emb->gid = getegid();
	if (emb->is_root) {
		struct passwd pw;
		struct passwd *found = NULL;
		char buf[4096];
		if (getpwnam_r("postgres", &pw, buf, sizeof(buf), &found) != 0 || found == NULL)
			return mon_error_set(err, MON_EPRECOND,
			                     "running as root needs a \"postgres\" user to run the embedded cluster");
		emb->uid = pw.pw_uid;
		emb->gid = pw.pw_gid;
		make_parents_traversable(emb->data_dir);
		if (chown(emb->data_dir, emb->uid, emb->gid) != 0)
			return mon_error_set(err, MON_EPRECOND, "data dir: could not hand it to postgres: %s",
			                     strerror(errno));
	}
	if (chmod(emb->data_dir, 0700) != 0)
		return mon_error_set(err, MON_EPRECOND, "data dir: %s", strerror(errno));
	return 0;
}

static int embedded_initdb(struct db_embedded *emb, struct mon_error *err)
{
	char path[PATH_MAX];
	char tool[PATH_MAX];
	char out[EMB_OUTPUT_MAX];
	int rc = path_join(path, sizeof(path), emb->data_dir, "PG_VERSION", err);
	if (rc != 0)
		return rc;
	if (access(path, F_OK) == 0)
		return 0;
	rc = path_join(tool, sizeof(tool), emb->bindir, "initdb", err);
	if (rc != 0)
		return rc;
	char *argv[] = {tool,    "-D", emb->data_dir, "-U",         "postgres",          "-A",
	                "trust", "-E", "UTF8",        "--locale=C", "--no-instructions", NULL};
	log_info("msg=\"initialising the embedded cluster\" dir=\"%s\"", emb->data_dir);
	int status = run_tool(emb, argv, out, sizeof(out));
	if (status != 0) {
		one_line(out);
		log_error("msg=\"initdb failed\" status=%d output=\"%s\"", status, out);
		return mon_error_set(err, MON_EINTERNAL, "embedded cluster: initdb failed (status %d)", status);
	}
	return 0;
}

/*
 * Decides whether a server is already running on the data dir: reuses a
 * live one, clears a postmaster.pid whose process is gone or is no longer
 * a postgres. *is_running tells whether a usable server is up.
 */
static int embedded_check_running(struct db_embedded *emb, const char *admin_conninfo, bool *is_running,
                                  struct mon_error *err)
{
	char tool[PATH_MAX];
	char out[EMB_OUTPUT_MAX];
	*is_running = false;
	int rc = path_join(tool, sizeof(tool), emb->bindir, "pg_ctl", err);
	if (rc != 0)
		return rc;
	char *argv[] = {tool, "-D", emb->data_dir, "status", NULL};
	int status = run_tool(emb, argv, out, sizeof(out));
	long pid = read_postmaster_pid(emb);
	if (status != 0) {
		if (pid != 0)
			remove_stale_lock_files(emb);
		return 0;
	}
	if (pid != 0 && !pid_is_postgres(pid)) {
		remove_stale_lock_files(emb);
		return 0;
	}
	if (wait_ready(admin_conninfo, EMB_READY_TIMEOUT_MS)) {
		log_info("msg=\"embedded cluster already running\" pid=%ld", pid);
		*is_running = true;
		return 0;
	}
	return mon_error_set(err, MON_EUNAVAIL,
	                     "embedded cluster: a postmaster (pid %ld) holds the data dir but does not answer", pid);
}

int db_embedded_start(const char *data_dir, struct db_embedded **out, char *conninfo_out, size_t conninfo_len,
                      struct mon_error *err)
{
	int rc = 0;
	char admin[PATH_MAX + 128];
	char tool[PATH_MAX];
	char log_path[PATH_MAX];
	char output[EMB_OUTPUT_MAX];
	struct db_embedded *emb = NULL;
	*out = NULL;
	if (data_dir == NULL || data_dir[0] == '\0') {
		rc = mon_error_set(err, MON_EINVAL, "data dir: must be set");
		goto out;
	}
	emb = calloc(1, sizeof(*emb));
	if (emb == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory starting the embedded cluster");
		goto out;
	}
	rc = embedded_setup(emb, data_dir, err);
	if (rc == 0)
		rc = embedded_initdb(emb, err);
	if (rc == 0)
		rc = write_settings(emb, err);
	if (rc == 0)
		rc = make_conninfo(emb, "postgres", admin, sizeof(admin), err);
	if (rc != 0)
		goto out;
	bool is_running = false;
	rc = embedded_check_running(emb, admin, &is_running, err);
	if (rc != 0)
		goto out;
	if (!is_running) {
		rc = path_join(tool, sizeof(tool), emb->bindir, "pg_ctl", err);
		if (rc == 0)
			rc = path_join(log_path, sizeof(log_path), emb->data_dir, "postgres.log", err);
		if (rc != 0)
			goto out;
		char *argv[] = {tool, "-D", emb->data_dir, "-l", log_path, "-w", "-t", "120", "start", NULL};
		int status = run_tool(emb, argv, output, sizeof(output));
		if (status != 0) {
			one_line(output);
			log_error("msg=\"could not start the embedded cluster\" status=%d output=\"%s\" log=\"%s\"",
			          status, output, log_path);
			rc = mon_error_set(err, MON_EUNAVAIL, "embedded cluster: could not start (see %s)", log_path);
			goto out;
		}
		if (!wait_ready(admin, EMB_READY_TIMEOUT_MS)) {
			rc = mon_error_set(err, MON_EUNAVAIL, "embedded cluster: not ready after %d s",
			                   EMB_READY_TIMEOUT_MS / 1000);
			goto out;
		}
		log_info("msg=\"embedded cluster started\" dir=\"%s\"", emb->data_dir);
	}
	rc = create_database(admin, err);
	if (rc == 0)
		rc = make_conninfo(emb, "monitord", conninfo_out, conninfo_len, err);
	if (rc != 0)
		goto out;
	*out = emb;
	emb = NULL;
out:
	free(emb);
	return rc;
}

void db_embedded_stop(struct db_embedded *emb)
{
	if (emb == NULL)
		return;
	char tool[PATH_MAX];
	char output[EMB_OUTPUT_MAX];
	if (path_join(tool, sizeof(tool), emb->bindir, "pg_ctl", NULL) == 0) {
		char *argv[] = {tool, "-D", emb->data_dir, "-m", "fast", "-w", "-t", "60", "stop", NULL};
		int status = run_tool(emb, argv, output, sizeof(output));
		if (status != 0) {
			one_line(output);
			log_warn("msg=\"could not stop the embedded cluster\" status=%d output=\"%s\"", status, output);
		} else {
			log_info("msg=\"embedded cluster stopped\" dir=\"%s\"", emb->data_dir);
		}
	}
	free(emb);
}
