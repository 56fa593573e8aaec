/*
 * Running statements on a borrowed connection: ad hoc queries, statements
 * prepared lazily once per connection, the deadline-bounded statement of an
 * autocommit read (db_read_run), the result wrapper that hides PGresult
 * from callers, and pg_notify. Every PGresult made here is either handed to
 * the caller inside a db_result or cleared before returning.
 */
#include "db/db_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct db_result {
	PGresult *res;
};

/* Wraps res for the caller (taking it) or clears it when out is NULL. */
static int result_hand_over(PGresult *res, struct db_result **out, struct mon_error *err)
{
	if (out == NULL) {
		PQclear(res);
		return 0;
	}
	struct db_result *r = malloc(sizeof(*r));
	if (r == NULL) {
		PQclear(res);
		return mon_error_set(err, MON_ENOMEM, "out of memory reading a database result");
	}
	r->res = res;
	*out = r;
	return 0;
}

/* Checks res, then hands it over or turns it into an error (clearing it). */
static int result_finish(struct db_conn *conn, PGresult *res, const char *what, struct db_result **out,
                         struct mon_error *err)
{
	ExecStatusType st = PQresultStatus(res);
	if (res != NULL && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK))
		return result_hand_over(res, out, err);
	int rc = db_result_error(conn, res, what, err);
	PQclear(res);
	return rc;
}

static int check_conn(struct db_conn *conn, struct mon_error *err)
{
	if (conn == NULL || conn->pg == NULL)
		return mon_error_set(err, MON_EINTERNAL, "database connection: not acquired");
	if (conn->is_copying)
		return mon_error_set(err, MON_EINTERNAL, "database connection: COPY in progress");
	return 0;
}

/* A statement to run: prepared (name set) or unnamed (sql). */
struct stmt_ref {
	const char *name;
	const char *sql;
	int param_count;
	const char *const *params;
};

static int send_stmt(PGconn *pg, const struct stmt_ref *s)
{
	if (s->name != NULL)
		return PQsendQueryPrepared(pg, s->name, s->param_count, s->params, NULL, NULL, 0);
	return PQsendQueryParams(pg, s->sql, s->param_count, NULL, s->params, NULL, NULL, 0);
}

static int prepare_once(struct db_conn *conn, const struct db_stmt *stmt, struct mon_error *err);

void db_pipeline_leave(struct db_conn *conn, bool read_sync)
{
	PGconn *pg = conn->pg;
	if (read_sync && PQstatus(pg) == CONNECTION_OK) {
		PGresult *sync = PQgetResult(pg);
		if (PQresultStatus(sync) != PGRES_PIPELINE_SYNC)
			conn->is_broken = true;
		PQclear(sync);
	}
	if (PQexitPipelineMode(pg) != 1)
		conn->is_broken = true;
}

/* Sets statement_timeout for the rest of the implicit transaction (set_config's is_local). */
static const struct db_stmt read_timeout_stmt = {
        .name = "db_read_timeout",
        .sql = "SELECT set_config('statement_timeout', $1, true)",
        .param_count = 1,
};

/*
 * Runs one statement with statement_timeout = timeout_ms, in one round trip:
 * a pipeline of set_config (local), the statement, and a single Sync. The
 * extended protocol runs everything up to a Sync in one implicit
 * transaction, and the server starts each statement's timer afresh with the
 * setting then in force, so the bound applies to this statement and ends
 * with it: the session keeps its own statement_timeout. A failed set_config
 * aborts the statement. The connection stays in blocking mode: the only
 * result that can come back before everything is sent is set_config's one
 * small row, so neither side can fill its buffers waiting for the other.
 * Returns the statement's result (NULL with *rc set when it could not run).
 */
static PGresult *exec_bounded(struct db_conn *conn, const struct stmt_ref *s, int64_t timeout_ms, int *rc,
                              struct mon_error *err)
{
	PGconn *pg = conn->pg;
	char ms[24];
	snprintf(ms, sizeof(ms), "%" PRId64, timeout_ms);
	const char *timeout_params[] = {ms};
	struct stmt_ref set = {.name = read_timeout_stmt.name, .param_count = 1, .params = timeout_params};
	*rc = prepare_once(conn, &read_timeout_stmt, err);
	if (*rc != 0)
		return NULL;
	if (PQenterPipelineMode(pg) != 1) {
		conn->is_broken = true;
		*rc = mon_error_set(err, MON_EINTERNAL, "database connection: cannot enter pipeline mode");
		return NULL;
	}
	PGresult *set_failed = NULL; /* set_config's result when it failed */
	PGresult *res = NULL;
	bool is_sent = send_stmt(pg, &set) == 1 && send_stmt(pg, s) == 1 && PQpipelineSync(pg) == 1;
	if (is_sent) {
		/* each statement's results end with NULL; then the Sync's own result */
		for (int i = 0; i < 2; i++) {
			PGresult *r;
			while ((r = PQgetResult(pg)) != NULL) {
				if (i == 0 && set_failed == NULL && PQresultStatus(r) != PGRES_TUPLES_OK)
					set_failed = r;
				else if (i == 1 && res == NULL)
					res = r;
				else
					PQclear(r);
			}
		}
	}
	db_pipeline_leave(conn, is_sent);
	if (!is_sent || set_failed != NULL) {
		*rc = db_result_error(conn, set_failed, "read timeout", err);
		PQclear(set_failed);
		PQclear(res);
		return NULL;
	}
	return res;
}

/*
 * Runs s and finishes its result (see result_finish). Inside db_read_run
 * with a deadline, through exec_bounded; otherwise one PQexec* call under
 * the session's or the enclosing transaction's statement_timeout.
 */
static int run_stmt(struct db_conn *conn, const struct stmt_ref *s, const char *what, struct db_result **out,
                    struct mon_error *err)
{
	int64_t timeout_ms = 0;
	int rc = db_read_gate(conn, &timeout_ms, err);
	if (rc != 0)
		return rc;
	PGresult *res;
	if (timeout_ms > 0) {
		res = exec_bounded(conn, s, timeout_ms, &rc, err);
		if (res == NULL && rc != 0)
			return rc;
	} else if (s->name != NULL) {
		res = PQexecPrepared(conn->pg, s->name, s->param_count, s->params, NULL, NULL, 0);
	} else {
		res = PQexecParams(conn->pg, s->sql, s->param_count, NULL, s->params, NULL, NULL, 0);
	}
	return result_finish(conn, res, what, out, err);
}

int db_exec(struct db_conn *conn, const char *sql, int param_count, const char *const *params, struct db_result **out,
            struct mon_error *err)
{
	if (out != NULL)
		*out = NULL;
	int rc = check_conn(conn, err);
	if (rc != 0)
		return rc;
	struct stmt_ref s = {.sql = sql, .param_count = param_count, .params = params};
	return run_stmt(conn, &s, "query", out, err);
}

int db_exec_command(struct db_conn *conn, const char *sql, const char *what, struct mon_error *err)
{
	int rc = check_conn(conn, err);
	if (rc != 0)
		return rc;
	if (conn->is_reading)
		return mon_error_set(err, MON_EINTERNAL, "%s: not allowed in an autocommit read", what);
	PGresult *res = PQexec(conn->pg, sql);
	return result_finish(conn, res, what, NULL, err);
}

static bool is_prepared(const struct db_conn *conn, const char *name)
{
	for (size_t i = 0; i < conn->prepared_n; i++)
		if (strcmp(conn->prepared[i], name) == 0)
			return true;
	return false;
}

static int remember_prepared(struct db_conn *conn, const char *name, struct mon_error *err)
{
	if (conn->prepared_n == conn->prepared_cap) {
		size_t cap = conn->prepared_cap ? conn->prepared_cap * 2 : 32;
		char **p = realloc(conn->prepared, cap * sizeof(*p));
		if (p == NULL)
			return mon_error_set(err, MON_ENOMEM, "out of memory preparing a statement");
		conn->prepared = p;
		conn->prepared_cap = cap;
	}
	char *copy = strdup(name);
	if (copy == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory preparing a statement");
	conn->prepared[conn->prepared_n++] = copy;
	return 0;
}

/*
 * Prepares stmt on this connection unless it already is. Names are few (one
 * per statement of the program), so a linear search is cheaper than a
 * table.
 */
static int prepare_once(struct db_conn *conn, const struct db_stmt *stmt, struct mon_error *err)
{
	if (is_prepared(conn, stmt->name))
		return 0;
	PGresult *res = PQprepare(conn->pg, stmt->name, stmt->sql, stmt->param_count, NULL);
	int rc = result_finish(conn, res, stmt->name, NULL, err);
	if (rc != 0)
		return rc;
	rc = remember_prepared(conn, stmt->name, err);
	if (rc != 0)
		conn->is_broken = true; /* prepared but not remembered: start afresh */
	return rc;
}

/* Prepares stmt on first use on this connection, then runs it. */
int db_exec_stmt(struct db_conn *conn, const struct db_stmt *stmt, const char *const *params, struct db_result **out,
                 struct mon_error *err)
{
	if (out != NULL)
		*out = NULL;
	int rc = check_conn(conn, err);
	if (rc == 0)
		rc = prepare_once(conn, stmt, err);
	if (rc != 0)
		return rc;
	struct stmt_ref s = {.name = stmt->name, .param_count = stmt->param_count, .params = params};
	return run_stmt(conn, &s, stmt->name, out, err);
}

int db_result_rows(const struct db_result *res)
{
	return res ? PQntuples(res->res) : 0;
}

int db_result_cols(const struct db_result *res)
{
	return res ? PQnfields(res->res) : 0;
}

int db_result_col(const struct db_result *res, const char *name)
{
	if (res == NULL || name == NULL)
		return -1;
	int n = PQnfields(res->res);
	for (int i = 0; i < n; i++)
		if (strcmp(PQfname(res->res, i), name) == 0)
			return i;
	return -1;
}

static bool in_range(const struct db_result *res, int row, int col)
{
	return res != NULL && row >= 0 && col >= 0 && row < PQntuples(res->res) && col < PQnfields(res->res);
}

const char *db_result_value(const struct db_result *res, int row, int col)
{
	if (!in_range(res, row, col))
		return "";
	return PQgetvalue(res->res, row, col);
}

bool db_result_is_null(const struct db_result *res, int row, int col)
{
	if (!in_range(res, row, col))
		return true;
	return PQgetisnull(res->res, row, col) != 0;
}

int64_t db_result_affected(const struct db_result *res)
{
	if (res == NULL)
		return 0;
	const char *t = PQcmdTuples(res->res);
	if (t == NULL || t[0] == '\0')
		return 0;
	char *end = NULL;
	long long v = strtoll(t, &end, 10);
	return (end != t) ? (int64_t)v : 0;
}

void db_result_free(struct db_result *res)
{
	if (res == NULL)
		return;
	PQclear(res->res);
	free(res);
}

/* pg_notify refuses payloads of 8000 bytes or more. */
#define NOTIFY_PAYLOAD_MAX 7999

int db_notify(struct db_conn *conn, const char *channel, const char *payload, struct mon_error *err)
{
	if (channel == NULL || channel[0] == '\0' || strlen(channel) > 63)
		return mon_error_set(err, MON_EINVAL, "notify channel: must be 1 to 63 bytes");
	if (payload == NULL)
		payload = "";
	if (strlen(payload) > NOTIFY_PAYLOAD_MAX)
		return mon_error_set(err, MON_ELIMIT, "notify payload: at most %d bytes", NOTIFY_PAYLOAD_MAX);
	const char *params[2] = {channel, payload};
	return db_exec(conn, "SELECT pg_notify($1, $2)", 2, params, NULL, err);
}
