/*
 * `monitord admin ...`: the command line that manages callers and API keys
 * on the server host, talking to the database directly, and seals
 * integration secrets (seal-secret, which needs no database). It owns the
 * argument parsing of its subcommands, the choice of database (configured,
 * or the embedded cluster, started and stopped only when no server has it
 * running), and the audit rows of its changes: each change and its
 * tb_audit_event row (user "local-admin", ip 127.0.0.1, module
 * "admin-cli") are made in one transaction. A created token goes to stdout
 * alone; everything else a subcommand says goes to stderr, except the
 * listing and one-line confirmations.
 */
#include "admin.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "config.h"
#include "crypto/seal.h"
#include "db/db.h"
#include "access/identity.h"
#include "util/clock.h"
#include "util/log.h"

#define ADMIN_MAX_OPTS 8
#define ADMIN_CFG_ARGS_MAX 64
#define ADMIN_LIST_MAX 10000
#define ADMIN_TX_TIMEOUT_MS 30000
#define ADMIN_EXPIRES_DAYS_MAX 3650
#define ADMIN_WEBHOOK_SECRET_MAX 255 /* characters of tb_integration_health.webhook_secret */
#define ADMIN_USER_AGENT "monitord-admin/" MON_VERSION

/* ---- subcommands and their options ---- */

struct admin_args {
	const char *id;
	const char *email;
	const char *role;
	const char *team;
	const char *cert_subject;
	const char *caller;
	const char *description;
	const char *expires_in_days;
	const char *at;
	const char *positional; /* KEY_ID */
	const char *integration;
	const char *column;
	const char *secrets_key_file; /* the server option, set after loading the configuration */
};

struct admin_opt {
	const char *name; /* without "--" */
	size_t offset;    /* of the const char * in struct admin_args */
	bool is_required;
};

#define ARG(field) offsetof(struct admin_args, field)

struct admin_cmd {
	const char *name;
	const char *usage;
	const char *help;
	struct admin_opt opts[ADMIN_MAX_OPTS];
	const char *positional; /* name shown in messages, NULL: none */
	int (*run)(struct db_pool *pool, const struct admin_args *a, struct mon_error *err);
};

static int run_create_caller(struct db_pool *pool, const struct admin_args *a, struct mon_error *err);
static int run_create_key(struct db_pool *pool, const struct admin_args *a, struct mon_error *err);
static int run_bootstrap(struct db_pool *pool, const struct admin_args *a, struct mon_error *err);
static int run_list_keys(struct db_pool *pool, const struct admin_args *a, struct mon_error *err);
static int run_revoke_key(struct db_pool *pool, const struct admin_args *a, struct mon_error *err);
static int run_expire_key(struct db_pool *pool, const struct admin_args *a, struct mon_error *err);
static int run_seal_secret(struct db_pool *pool, const struct admin_args *a, struct mon_error *err);

static const struct admin_cmd commands[] = {
        {"create-caller",
         "--id ID --email EMAIL --role viewer|editor|admin [--team TEAM] [--cert-subject CN]",
         "Creates a caller. With --cert-subject, a client certificate whose common name is CN\n"
         "authenticates as this caller (when the server checks client certificates).\n",
         {{"id", ARG(id), true},
          {"email", ARG(email), true},
          {"role", ARG(role), true},
          {"team", ARG(team), false},
          {"cert-subject", ARG(cert_subject), false}},
         NULL,
         run_create_caller},
        {"create-key",
         "--caller ID [--description TEXT] [--expires-in-days N]",
         "Creates an API key for a caller and prints it on stdout, once: it is stored only as a\n"
         "hash and cannot be shown again. The key id (its public name) is printed on stderr.\n",
         {{"caller", ARG(caller), true},
          {"description", ARG(description), false},
          {"expires-in-days", ARG(expires_in_days), false}},
         NULL,
         run_create_key},
        {"bootstrap",
         "--email EMAIL",
         "Creates the first admin: caller \"admin\" with role admin, and an API key for it,\n"
         "printed on stdout once. Refuses when an active admin caller exists already.\n",
         {{"email", ARG(email), true}},
         NULL,
         run_bootstrap},
        {"list-keys",
         "[--caller ID]",
         "Lists API keys (never their secrets): id, caller, status, creation, expiry, last use\n"
         "(recorded about once a minute) and description.\n",
         {{"caller", ARG(caller), false}},
         NULL,
         run_list_keys},
        {"revoke-key",
         "KEY_ID",
         "Revokes an API key now. Running servers stop accepting it within a second or so\n"
         "(they reload on the change's notification, and every 60 s).\n",
         {{NULL, 0, false}},
         "KEY_ID",
         run_revoke_key},
        {"expire-key",
         "KEY_ID --at RFC3339|now",
         "Sets when an API key expires: an RFC 3339 instant (2030-01-31T00:00:00Z) or \"now\".\n",
         {{"at", ARG(at), true}},
         "KEY_ID",
         run_expire_key},
        {"seal-secret",
         "--integration ID --column webhook_secret|authentication",
         "Reads a secret on stdin (one trailing newline dropped) and prints it sealed with the\n"
         "master key of --secrets-key-file, for that column of that integration's row in\n"
         "tb_integration_health; the sealed text opens nowhere else. For authentication the\n"
         "secret is a JSON object (PagerDuty: {\"routing_key\": \"...\"}), stored as a JSON\n"
         "string: authentication = to_jsonb('<sealed>'::text). Touches no database.\n",
         {{"integration", ARG(integration), true}, {"column", ARG(column), true}},
         NULL,
         run_seal_secret},
};

#define COMMAND_COUNT (sizeof(commands) / sizeof(commands[0]))

static void print_usage(FILE *f)
{
	fprintf(f, "Usage: monitord admin COMMAND [OPTIONS] [SERVER OPTIONS]\n\n"
	           "Manages callers and API keys in monitord's database, from the server host, and\n"
	           "seals integration secrets.\n\n"
	           "Commands:\n");
	for (size_t i = 0; i < COMMAND_COUNT; i++)
		fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].usage);
	fprintf(f, "\nServer options (--config, --database, --data-dir, --log-level, ...) and their\n"
	           "MONITORD_* variables are read as by the server, so the command reaches the same\n"
	           "database. Run \"monitord admin COMMAND --help\" for a command's details.\n");
}

static void print_command_help(FILE *f, const struct admin_cmd *c)
{
	fprintf(f, "Usage: monitord admin %s %s [SERVER OPTIONS]\n\n%s", c->name, c->usage, c->help);
	fprintf(f, "\nServer options (--config, --database, --data-dir, ...) are read as by the server;\n"
	           "see \"monitord --help\". Every change is recorded in the audit trail (module admin-cli).\n");
}

static const char **arg_slot(struct admin_args *a, size_t offset)
{
	return (const char **)((char *)a + offset);
}

static const struct admin_opt *find_opt(const struct admin_cmd *c, const char *name, size_t len)
{
	for (size_t i = 0; i < ADMIN_MAX_OPTS && c->opts[i].name != NULL; i++)
		if (strlen(c->opts[i].name) == len && strncmp(c->opts[i].name, name, len) == 0)
			return &c->opts[i];
	return NULL;
}

/*
 * Splits argv[3..] into the command's options (into *a) and the server's
 * (into cfg_argv, after a program name, for mon_config_load). Returns 0,
 * 1 when --help was given (help printed), or MON_EINVAL.
 */
static int parse_args(const struct admin_cmd *c, int argc, char **argv, struct admin_args *a, char **cfg_argv,
                      int *cfg_argc, struct mon_error *err)
{
	*cfg_argc = 0;
	cfg_argv[(*cfg_argc)++] = argv[0];
	for (int i = 3; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			print_command_help(stdout, c);
			return 1;
		}
		if (strncmp(arg, "--", 2) != 0) {
			if (c->positional == NULL || a->positional != NULL)
				return mon_error_set(err, MON_EINVAL, "unexpected argument \"%s\"", arg);
			a->positional = arg;
			continue;
		}
		const char *name = arg + 2;
		const char *eq = strchr(name, '=');
		size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
		const struct admin_opt *o = find_opt(c, name, len);
		if (o != NULL) {
			const char **slot = arg_slot(a, o->offset);
			if (*slot != NULL)
				return mon_error_set(err, MON_EINVAL, "--%s: given twice", o->name);
			if (eq != NULL)
				*slot = eq + 1;
			else if (i + 1 < argc)
				*slot = argv[++i];
			else
				return mon_error_set(err, MON_EINVAL, "--%s: missing value", o->name);
			continue;
		}
		/* A server option, and its value when it is the next argument. */
		if (*cfg_argc + 2 >= ADMIN_CFG_ARGS_MAX)
			return mon_error_set(err, MON_EINVAL, "too many options");
		cfg_argv[(*cfg_argc)++] = argv[i];
		if (eq == NULL && i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
			cfg_argv[(*cfg_argc)++] = argv[++i];
	}
	cfg_argv[*cfg_argc] = NULL;
	for (size_t i = 0; i < ADMIN_MAX_OPTS && c->opts[i].name != NULL; i++)
		if (c->opts[i].is_required && *arg_slot(a, c->opts[i].offset) == NULL)
			return mon_error_set(err, MON_EINVAL, "--%s: required", c->opts[i].name);
	if (c->positional != NULL && a->positional == NULL)
		return mon_error_set(err, MON_EINVAL, "%s: required", c->positional);
	return 0;
}

/* ---- time ---- */

static bool take_digits(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		char ch = (*p)[i];
		if (ch < '0' || ch > '9')
			return false;
		v = v * 10 + (ch - '0');
	}
	*p += n;
	*out = v;
	return true;
}

static bool take_char(const char **p, const char *allowed)
{
	if (**p == '\0' || strchr(allowed, **p) == NULL)
		return false;
	(*p)++;
	return true;
}

int admin_parse_time(const char *text, int64_t now_ms, int64_t *out_ms, struct mon_error *err)
{
	static const char *const form = "must be \"now\" or RFC 3339, like 2030-01-31T00:00:00Z";
	if (text != NULL && strcmp(text, "now") == 0) {
		*out_ms = now_ms;
		return 0;
	}
	const char *p = text != NULL ? text : "";
	int year, mon, day, hour, min, sec, off_h = 0, off_m = 0, sign = 0;
	int frac_ms = 0;
	if (!take_digits(&p, 4, &year) || !take_char(&p, "-") || !take_digits(&p, 2, &mon) || !take_char(&p, "-") ||
	    !take_digits(&p, 2, &day) || !take_char(&p, "Tt ") || !take_digits(&p, 2, &hour) || !take_char(&p, ":") ||
	    !take_digits(&p, 2, &min) || !take_char(&p, ":") || !take_digits(&p, 2, &sec))
		return mon_error_set(err, MON_EINVAL, "time: %s", form);
	if (*p == '.') {
		p++;
		int n = 0;
		for (; *p >= '0' && *p <= '9'; p++, n++)
			if (n < 3)
				frac_ms = frac_ms * 10 + (*p - '0');
		if (n == 0)
			return mon_error_set(err, MON_EINVAL, "time: %s", form);
		for (; n < 3; n++)
			frac_ms *= 10;
	}
	if (take_char(&p, "Zz")) {
		sign = 0;
	} else if (*p == '+' || *p == '-') {
		sign = *p == '+' ? 1 : -1;
		p++;
		if (!take_digits(&p, 2, &off_h) || !take_char(&p, ":") || !take_digits(&p, 2, &off_m) || off_h > 23 ||
		    off_m > 59)
			return mon_error_set(err, MON_EINVAL, "time: %s", form);
	} else {
		return mon_error_set(err, MON_EINVAL, "time: %s (the offset, Z or +HH:MM, is required)", form);
	}
	if (*p != '\0')
		return mon_error_set(err, MON_EINVAL, "time: %s", form);
	if (year < 1970 || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
		return mon_error_set(err, MON_EINVAL, "time: out of range");
	struct tm tm = {.tm_year = year - 1900,
	                .tm_mon = mon - 1,
	                .tm_mday = day,
	                .tm_hour = hour,
	                .tm_min = min,
	                .tm_sec = sec == 60 ? 59 : sec};
	time_t t = timegm(&tm);
	if (t == (time_t)-1 || tm.tm_mday != day || tm.tm_mon != mon - 1)
		return mon_error_set(err, MON_EINVAL, "time: no such date");
	int64_t ms = (int64_t)t * 1000 + frac_ms - (int64_t)sign * ((int64_t)off_h * 3600 + off_m * 60) * 1000;
	if (ms <= 0)
		return mon_error_set(err, MON_EINVAL, "time: must be after 1970-01-01T00:00:00Z");
	*out_ms = ms;
	return 0;
}

void admin_format_time(int64_t ms, char *buf, size_t buf_len)
{
	if (ms == 0) {
		snprintf(buf, buf_len, "-");
		return;
	}
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL || strftime(buf, buf_len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, buf_len, "%" PRId64, ms);
}

/* ---- audit ---- */

/* A resource as the audit trail shows it (never a secret or its hash); NULL when absent. */
static const char *const caller_json_sql =
        "SELECT jsonb_build_object('id', id, 'email', email, 'team', team, 'role', role, 'cert_subject', "
        "cert_subject, 'disabled_at', disabled_at)::text FROM tb_caller WHERE id = $1";
static const char *const key_json_sql =
        "SELECT jsonb_build_object('id', id, 'caller_id', caller_id, 'description', description, 'created_at', "
        "created_at, 'expires_at', expires_at, 'revoked_at', revoked_at)::text FROM tb_api_key WHERE id = $1";

/* Reads a resource's audit view into *out (malloc'd, NULL when absent). */
static int resource_json(struct db_conn *conn, const char *type, const char *id, char **out, struct mon_error *err)
{
	struct db_result *res = NULL;
	*out = NULL;
	const char *params[] = {id};
	int rc = db_exec(conn, strcmp(type, "caller") == 0 ? caller_json_sql : key_json_sql, 1, params, &res, err);
	if (rc != 0)
		goto out;
	if (db_result_rows(res) == 1) {
		*out = strdup(db_result_value(res, 0, 0));
		if (*out == NULL)
			rc = mon_error_set(err, MON_ENOMEM, "out of memory");
	}
out:
	db_result_free(res);
	return rc;
}

struct audit_change {
	const char *action; /* audit_action_type */
	const char *type;   /* "caller" or "api-key" */
	const char *id;
	const char *name; /* resource_name, may be NULL */
	const char *description;
	const char *before; /* JSON text, NULL for creations */
};

static void os_user(char *buf, size_t buf_len)
{
	struct passwd pw;
	struct passwd *found = NULL;
	char scratch[1024];
	if (getpwuid_r(geteuid(), &pw, scratch, sizeof(scratch), &found) == 0 && found != NULL)
		snprintf(buf, buf_len, "%s", pw.pw_name);
	else
		snprintf(buf, buf_len, "uid %ld", (long)geteuid());
}

/*
 * Inserts the audit row of a change in conn's transaction: the resource as
 * it is now is the after data, "changes" the top-level keys that differ.
 */
static int audit_insert(struct db_conn *conn, const struct audit_change *ch, struct mon_error *err)
{
	char *after = NULL;
	unsigned char rnd[8];
	char rnd_hex[sizeof(rnd) * 2 + 1];
	char event_id[64];
	char user[128];
	int rc = resource_json(conn, ch->type, ch->id, &after, err);
	if (rc != 0)
		goto out;
	randombytes_buf(rnd, sizeof(rnd));
	sodium_bin2hex(rnd_hex, sizeof(rnd_hex), rnd, sizeof(rnd));
	snprintf(event_id, sizeof(event_id), "AUD-%012" PRIx64 "-%s", (uint64_t)mon_wall_ms(), rnd_hex);
	os_user(user, sizeof(user));
	const char *params[] = {event_id,        ch->action, ch->type, ch->id, ch->name,
	                        ch->description, ch->before, after,    user,   ADMIN_USER_AGENT};
	rc = db_exec(
	        conn,
	        "WITH d AS (SELECT $7::jsonb AS b, $8::jsonb AS a) "
	        "INSERT INTO tb_audit_event (event_id, user_id, user_email, user_role, action_type, resource_type, "
	        "resource_id, resource_name, description, before_data, after_data, changes, outcome, ip_address, "
	        "user_agent, module, severity, metadata) "
	        "SELECT $1, 'local-admin', '', 'admin', $2::audit_action_type, $3, $4, $5, $6, d.b, d.a, "
	        "(SELECT coalesce(jsonb_object_agg(k, jsonb_build_object('from', d.b -> k, 'to', d.a -> k)), '{}') "
	        "FROM jsonb_object_keys(coalesce(d.b, '{}') || coalesce(d.a, '{}')) AS k "
	        "WHERE coalesce(d.b -> k, 'null') IS DISTINCT FROM coalesce(d.a -> k, 'null')), "
	        "'success', '127.0.0.1', $10, 'admin-cli', 'info', "
	        "jsonb_build_object('os_user', $9::text, 'auth_method', 'server-host') FROM d",
	        10, params, NULL, err);
out:
	free(after);
	return rc;
}

/* ---- the subcommands, each one transaction ---- */

static int create_caller_fn(struct db_conn *conn, void *arg, struct mon_error *err)
{
	const struct identity_caller *c = arg;
	int rc = identity_caller_create_tx(conn, c, err);
	if (rc != 0)
		return rc;
	struct audit_change ch = {"create", "caller", c->id, c->email, "caller created from the server host", NULL};
	return audit_insert(conn, &ch, err);
}

static int run_create_caller(struct db_pool *pool, const struct admin_args *a, struct mon_error *err)
{
	struct identity_caller c = {0};
	if (identity_role_parse(a->role, &c.role) != 0)
		return mon_error_set(err, MON_EINVAL, "--role: must be viewer, editor or admin");
	if (strlen(a->id) >= sizeof(c.id) || strlen(a->email) >= sizeof(c.email) ||
	    (a->team && strlen(a->team) >= sizeof(c.team)) ||
	    (a->cert_subject && strlen(a->cert_subject) >= sizeof(c.cert_subject)))
		return mon_error_set(err, MON_EINVAL, "a value is too long (id 50, email 255, team 100, subject 255)");
	snprintf(c.id, sizeof(c.id), "%s", a->id);
	snprintf(c.email, sizeof(c.email), "%s", a->email);
	snprintf(c.team, sizeof(c.team), "%s", a->team ? a->team : "");
	snprintf(c.cert_subject, sizeof(c.cert_subject), "%s", a->cert_subject ? a->cert_subject : "");
	int rc = db_tx_run(pool, ADMIN_TX_TIMEOUT_MS, create_caller_fn, &c, err);
	if (rc == 0)
		printf("created caller \"%s\" (role %s)\n", c.id, a->role);
	return rc;
}

struct key_tx {
	const char *caller_id;
	const char *description;
	int64_t expires_at_ms;
	const char *email; /* bootstrap */
	char *token;       /* IDENTITY_TOKEN_MAX bytes of sodium_malloc memory */
	struct identity_key info;
};

static int create_key_fn(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct key_tx *k = arg;
	int rc = identity_key_create_tx(conn, k->caller_id, k->description, k->expires_at_ms, k->token, &k->info, err);
	if (rc != 0)
		return rc;
	struct audit_change ch = {
	        "create", "api-key", k->info.id, k->info.description, "API key created from the server host", NULL};
	return audit_insert(conn, &ch, err);
}

static int bootstrap_fn(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct key_tx *k = arg;
	int rc = identity_bootstrap_tx(conn, k->email, k->token, &k->info, err);
	if (rc != 0)
		return rc;
	struct audit_change caller = {"create", "caller", "admin", k->email, "first admin created (bootstrap)", NULL};
	rc = audit_insert(conn, &caller, err);
	if (rc != 0)
		return rc;
	struct audit_change key = {
	        "create", "api-key", k->info.id, k->info.description, "API key of the first admin created (bootstrap)",
	        NULL};
	return audit_insert(conn, &key, err);
}

/* Runs fn (create_key_fn or bootstrap_fn) and prints the token alone on stdout. */
static int run_key_tx(struct db_pool *pool, db_tx_fn fn, struct key_tx *k, struct mon_error *err)
{
	int rc = 0;
	if (sodium_init() < 0)
		return mon_error_set(err, MON_EINTERNAL, "libsodium could not be initialised");
	k->token = sodium_malloc(IDENTITY_TOKEN_MAX);
	if (k->token == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of secure memory");
	rc = db_tx_run(pool, ADMIN_TX_TIMEOUT_MS, fn, k, err);
	if (rc != 0)
		goto out;
	char expires[40];
	admin_format_time(k->info.expires_at_ms, expires, sizeof(expires));
	fprintf(stderr, "created API key %s for caller \"%s\" (expires: %s)\n", k->info.id, k->info.caller_id,
	        k->info.expires_at_ms != 0 ? expires : "never");
	fprintf(stderr, "the key is shown once, below; store it now, it cannot be shown again\n");
	fflush(stderr);
	if (printf("%s\n", k->token) < 0 || fflush(stdout) != 0)
		rc = mon_error_set(err, MON_EINTERNAL, "could not write the key to stdout; revoke key %s", k->info.id);
out:
	sodium_free(k->token); /* wipes it */
	k->token = NULL;
	return rc;
}

static int run_create_key(struct db_pool *pool, const struct admin_args *a, struct mon_error *err)
{
	struct key_tx k = {.caller_id = a->caller, .description = a->description ? a->description : ""};
	if (a->expires_in_days != NULL) {
		char *end = NULL;
		errno = 0;
		long days = strtol(a->expires_in_days, &end, 10);
		if (errno != 0 || end == a->expires_in_days || *end != '\0' || days < 1 ||
		    days > ADMIN_EXPIRES_DAYS_MAX)
			return mon_error_set(err, MON_EINVAL, "--expires-in-days: must be a whole number from 1 to %d",
			                     ADMIN_EXPIRES_DAYS_MAX);
		k.expires_at_ms = mon_wall_ms() + (int64_t)days * 86400 * 1000;
	}
	return run_key_tx(pool, create_key_fn, &k, err);
}

static int run_bootstrap(struct db_pool *pool, const struct admin_args *a, struct mon_error *err)
{
	struct key_tx k = {.email = a->email};
	int rc = run_key_tx(pool, bootstrap_fn, &k, err);
	if (rc == MON_EEXIST && err != NULL) {
		char why[sizeof(err->msg)];
		snprintf(why, sizeof(why), "%s", err->msg);
		mon_error_set(err, MON_EEXIST,
		              "%s; to give an existing admin a new key, run \"monitord admin create-key --caller ID\"",
		              why);
	}
	return rc;
}

struct list_tx {
	const char *caller_id;
	struct identity_key *keys;
	size_t count;
};

static int list_fn(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct list_tx *l = arg;
	free(l->keys);
	l->keys = NULL;
	return identity_key_list_tx(conn, l->caller_id, ADMIN_LIST_MAX, &l->keys, &l->count, err);
}

static int run_list_keys(struct db_pool *pool, const struct admin_args *a, struct mon_error *err)
{
	struct list_tx l = {.caller_id = a->caller};
	int rc = db_tx_run(pool, ADMIN_TX_TIMEOUT_MS, list_fn, &l, err);
	if (rc != 0)
		goto out;
	int64_t now = mon_wall_ms();
	printf("%-16s  %-20s  %-7s  %-20s  %-20s  %-20s  %s\n", "KEY ID", "CALLER", "STATUS", "CREATED", "EXPIRES",
	       "LAST USED", "DESCRIPTION");
	for (size_t i = 0; i < l.count; i++) {
		const struct identity_key *k = &l.keys[i];
		char created[40], expires[40], used[40];
		admin_format_time(k->created_at_ms, created, sizeof(created));
		admin_format_time(k->expires_at_ms, expires, sizeof(expires));
		admin_format_time(k->last_used_at_ms, used, sizeof(used));
		const char *status = k->revoked_at_ms != 0                                ? "revoked"
		                     : (k->expires_at_ms != 0 && k->expires_at_ms <= now) ? "expired"
		                                                                          : "active";
		printf("%-16s  %-20s  %-7s  %-20s  %-20s  %-20s  %s\n", k->id, k->caller_id, status, created, expires,
		       used, k->description);
	}
out:
	free(l.keys);
	return rc;
}

struct key_change_tx {
	const char *key_id;
	bool is_revoke;
	int64_t expires_at_ms;
};

static int key_change_fn(struct db_conn *conn, void *arg, struct mon_error *err)
{
	struct key_change_tx *c = arg;
	char *before = NULL;
	int rc = resource_json(conn, "api-key", c->key_id, &before, err);
	if (rc != 0)
		goto out;
	if (c->is_revoke)
		rc = identity_key_revoke_tx(conn, c->key_id, err);
	else
		rc = identity_key_set_expiry_tx(conn, c->key_id, c->expires_at_ms, err);
	if (rc != 0)
		goto out;
	struct audit_change ch = {"update",
	                          "api-key",
	                          c->key_id,
	                          NULL,
	                          c->is_revoke ? "API key revoked from the server host"
	                                       : "API key expiry set from the server host",
	                          before};
	rc = audit_insert(conn, &ch, err);
out:
	free(before);
	return rc;
}

static int run_revoke_key(struct db_pool *pool, const struct admin_args *a, struct mon_error *err)
{
	struct key_change_tx c = {.key_id = a->positional, .is_revoke = true};
	int rc = db_tx_run(pool, ADMIN_TX_TIMEOUT_MS, key_change_fn, &c, err);
	if (rc == 0)
		printf("revoked API key %s\n", c.key_id);
	return rc;
}

static int run_expire_key(struct db_pool *pool, const struct admin_args *a, struct mon_error *err)
{
	struct key_change_tx c = {.key_id = a->positional};
	int rc = admin_parse_time(a->at, mon_wall_ms(), &c.expires_at_ms, err);
	if (rc != 0) {
		mon_error_prefix(err, "--at");
		return rc;
	}
	rc = db_tx_run(pool, ADMIN_TX_TIMEOUT_MS, key_change_fn, &c, err);
	if (rc == 0) {
		char at[40];
		admin_format_time(c.expires_at_ms, at, sizeof(at));
		printf("API key %s expires at %s\n", c.key_id, at);
	}
	return rc;
}

/* ---- sealing a secret (no database) ---- */

/*
 * seal-secret: stdin, at most SEAL_PLAIN_MAX bytes, one trailing newline
 * dropped, sealed for (tb_integration_health, column, integration) and
 * printed on stdout. The plaintext stays in sodium_malloc memory.
 */
static int run_seal_secret(struct db_pool *pool, const struct admin_args *a, struct mon_error *err)
{
	struct seal_key *key = NULL;
	unsigned char *plain = NULL;
	char *sealed = NULL;
	int rc = 0;
	bool is_auth = strcmp(a->column, "authentication") == 0;
	if (!is_auth && strcmp(a->column, "webhook_secret") != 0)
		return mon_error_set(err, MON_EINVAL, "--column: must be webhook_secret or authentication");
	if (a->integration[0] == '\0' || strlen(a->integration) > 50)
		return mon_error_set(err, MON_EINVAL, "--integration: must be 1-50 characters");
	if (a->secrets_key_file == NULL || a->secrets_key_file[0] == '\0')
		return mon_error_set(err, MON_EINVAL, "--secrets-key-file: required to seal");
	if ((rc = seal_key_load(a->secrets_key_file, &key, err)) != 0)
		return rc;
	plain = sodium_malloc(SEAL_PLAIN_MAX + 2);
	if (plain == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory");
		goto out;
	}
	size_t n = fread(plain, 1, SEAL_PLAIN_MAX + 2, stdin);
	if (n > 0 && plain[n - 1] == '\n')
		n--;
	if (n > 0 && plain[n - 1] == '\r')
		n--;
	if (n > SEAL_PLAIN_MAX) {
		rc = mon_error_set(err, MON_EINVAL, "secret: longer than %d bytes", SEAL_PLAIN_MAX);
		goto out;
	}
	if (n == 0) {
		rc = mon_error_set(err, MON_EINVAL, "secret: empty (give it on stdin)");
		goto out;
	}
	if (is_auth) {
		json_t *j = json_loadb((const char *)plain, n, 0, NULL);
		bool is_object = json_is_object(j);
		json_decref(j);
		if (!is_object) {
			rc = mon_error_set(err, MON_EINVAL, "secret: authentication must be a JSON object");
			goto out;
		}
	}
	const struct seal_context ctx = {"tb_integration_health", a->column, a->integration};
	if ((rc = seal_text(key, &ctx, plain, n, &sealed, err)) != 0)
		goto out;
	if (!is_auth && strlen(sealed) > ADMIN_WEBHOOK_SECRET_MAX) {
		rc = mon_error_set(err, MON_EINVAL,
		                   "secret: sealed it takes %zu characters, more than webhook_secret's %d (use a "
		                   "shorter secret)",
		                   strlen(sealed), ADMIN_WEBHOOK_SECRET_MAX);
		goto out;
	}
	printf("%s\n", sealed);
out:
	free(sealed);
	seal_plain_free(plain);
	seal_key_free(key);
	return rc;
}

/* ---- the database ---- */

/*
 * Whether a postmaster runs on data_dir: its postmaster.pid names a live
 * process. Then the server (or another admin command) owns the cluster and
 * we only connect to it.
 */
static bool embedded_is_running(const char *data_dir)
{
	char path[PATH_MAX];
	char line[64] = "";
	int n = snprintf(path, sizeof(path), "%s/postmaster.pid", data_dir);
	if (n < 0 || (size_t)n >= sizeof(path))
		return false;
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return false;
	if (fgets(line, sizeof(line), f) == NULL)
		line[0] = '\0';
	fclose(f);
	char *end = NULL;
	long pid = strtol(line, &end, 10);
	if (end == line || pid <= 0)
		return false;
	return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* The conninfo of a running embedded cluster (as db_embedded_start writes it). */
static int embedded_conninfo(const char *data_dir, char *out, size_t out_len, struct mon_error *err)
{
	char real[PATH_MAX];
	if (realpath(data_dir, real) == NULL)
		return mon_error_set(err, MON_EPRECOND, "data dir \"%s\": %s", data_dir, strerror(errno));
	size_t o = 0;
	int n = snprintf(out, out_len, "host='");
	if (n < 0 || (size_t)n >= out_len)
		goto too_long;
	o = (size_t)n;
	for (const char *p = real; *p; p++) {
		if (o + 3 >= out_len)
			goto too_long;
		if (*p == '\\' || *p == '\'')
			out[o++] = '\\';
		out[o++] = *p;
	}
	n = snprintf(out + o, out_len - o, "' user=postgres dbname=monitord");
	if (n < 0 || (size_t)n >= out_len - o)
		goto too_long;
	return 0;
too_long:
	return mon_error_set(err, MON_EINVAL, "data dir: path too long");
}

int admin_main(int argc, char **argv)
{
	struct mon_config cfg;
	struct mon_error err = {0};
	struct admin_args args = {0};
	char *cfg_argv[ADMIN_CFG_ARGS_MAX + 1];
	int cfg_argc = 0;
	struct db_embedded *emb = NULL;
	struct db_pool *pool = NULL;
	char conninfo[4096];
	int status = 1;
	memset(&cfg, 0, sizeof(cfg));

	if (argc < 3 || strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0 || strcmp(argv[2], "help") == 0) {
		print_usage(argc < 3 ? stderr : stdout);
		return argc < 3 ? 2 : 0;
	}
	const struct admin_cmd *cmd = NULL;
	for (size_t i = 0; i < COMMAND_COUNT; i++)
		if (strcmp(argv[2], commands[i].name) == 0)
			cmd = &commands[i];
	if (cmd == NULL) {
		fprintf(stderr, "monitord admin: unknown command \"%s\"\n", argv[2]);
		print_usage(stderr);
		return 2;
	}
	int rc = parse_args(cmd, argc, argv, &args, cfg_argv, &cfg_argc, &err);
	if (rc == 1)
		return 0;
	if (rc == 0)
		rc = mon_config_load(cfg_argc, cfg_argv, NULL, &cfg, &err);
	if (rc != 0) {
		fprintf(stderr, "monitord admin %s: %s\n", cmd->name, err.msg);
		fprintf(stderr, "Try \"monitord admin %s --help\".\n", cmd->name);
		return 2;
	}
	/* Quiet unless asked: the server's info lines would bury the answer. */
	const struct mon_config_origin *lvl = mon_config_origin_of(&cfg, "log-level");
	log_set_level(lvl != NULL && lvl->source != MON_CONFIG_SRC_DEFAULT ? cfg.log_level : LOG_WARN);

	args.secrets_key_file = cfg.secrets_key_file;
	if (cmd->run == run_seal_secret) { /* needs no database */
		rc = cmd->run(NULL, &args, &err);
		if (rc == 0)
			status = 0;
		goto out;
	}
	const char *db = cfg.database;
	if (db == NULL) {
		if (embedded_is_running(cfg.data_dir)) {
			rc = embedded_conninfo(cfg.data_dir, conninfo, sizeof(conninfo), &err);
		} else {
			rc = db_embedded_start(cfg.data_dir, &emb, conninfo, sizeof(conninfo), &err);
			if (rc != 0)
				mon_error_prefix(&err, "embedded PostgreSQL");
		}
		if (rc != 0)
			goto out;
		db = conninfo;
	}
	struct db_config dbc = {
	        .conninfo = db,
	        .pool_size = 2,
	        .connect_timeout_s = 5,
	        .application_name = "monitord-admin",
	        .statement_timeout_ms = cfg.db_statement_timeout_ms,
	};
	rc = db_pool_create(&dbc, &pool, &err);
	if (rc == 0)
		rc = db_migrate(pool, &err);
	if (rc == 0)
		rc = cmd->run(pool, &args, &err);
	if (rc == 0)
		status = 0;
out:
	if (rc != 0)
		fprintf(stderr, "monitord admin %s: %s\n", cmd->name, err.msg);
	db_pool_destroy(pool);
	db_embedded_stop(emb);
	mon_config_free(&cfg);
	return status;
}
