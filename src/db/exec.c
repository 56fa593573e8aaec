/*
 * Running statements on a borrowed connection: ad hoc queries, statements
 * prepared lazily once per connection, the result wrapper that hides
 * PGresult from callers, and pg_notify. Every PGresult made here is either
 * handed to the caller inside a db_result or cleared before returning.
 */
#include "db/db_internal.h"

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

int db_exec(struct db_conn *conn, const char *sql, int param_count, const char *const *params, struct db_result **out,
            struct mon_error *err)
{
	if (out != NULL)
		*out = NULL;
	int rc = check_conn(conn, err);
	if (rc != 0)
		return rc;
	PGresult *res = PQexecParams(conn->pg, sql, param_count, NULL, params, NULL, NULL, 0);
	return result_finish(conn, res, "query", out, err);
}

int db_exec_command(struct db_conn *conn, const char *sql, const char *what, struct mon_error *err)
{
	int rc = check_conn(conn, err);
	if (rc != 0)
		return rc;
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
 * Prepares stmt on first use on this connection. Names are few (one per
 * statement of the program), so a linear search is cheaper than a table.
 */
int db_exec_stmt(struct db_conn *conn, const struct db_stmt *stmt, const char *const *params, struct db_result **out,
                 struct mon_error *err)
{
	if (out != NULL)
		*out = NULL;
	int rc = check_conn(conn, err);
	if (rc != 0)
		return rc;
	if (!is_prepared(conn, stmt->name)) {
		PGresult *res = PQprepare(conn->pg, stmt->name, stmt->sql, stmt->param_count, NULL);
		rc = result_finish(conn, res, stmt->name, NULL, err);
		if (rc != 0)
			return rc;
		rc = remember_prepared(conn, stmt->name, err);
		if (rc != 0) {
			conn->is_broken = true; /* prepared but not remembered: start afresh */
			return rc;
		}
	}
	PGresult *res = PQexecPrepared(conn->pg, stmt->name, stmt->param_count, params, NULL, NULL, 0);
	return result_finish(conn, res, stmt->name, out, err);
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
