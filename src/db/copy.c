/*
 * Bulk loading with COPY ... FROM STDIN in text format. Rows are escaped
 * into a per-connection buffer (db_copy_format_row, pure and unit-tested)
 * and sent with PQputCopyData whenever the buffer holds a chunk's worth, so
 * a batch of many small rows costs few writes. The buffer has a hard cap.
 */
#include "db/db_internal.h"

#include <stdlib.h>
#include <string.h>

#include "util/log.h"

int db_buf_reserve(struct db_buf *buf, size_t extra)
{
	if (extra > buf->max || buf->len > buf->max - extra)
		return MON_ELIMIT;
	size_t need = buf->len + extra;
	if (need <= buf->cap)
		return 0;
	size_t cap = buf->cap ? buf->cap : 4096;
	while (cap < need)
		cap = cap > buf->max / 2 ? buf->max : cap * 2;
	char *p = realloc(buf->data, cap);
	if (p == NULL)
		return MON_ENOMEM;
	buf->data = p;
	buf->cap = cap;
	return 0;
}

void db_buf_free(struct db_buf *buf)
{
	free(buf->data);
	buf->data = NULL;
	buf->len = 0;
	buf->cap = 0;
}

/* Bytes value takes once escaped. */
static size_t escaped_len(const char *value)
{
	size_t n = 0;
	for (const char *p = value; *p; p++)
		n += (*p == '\\' || *p == '\t' || *p == '\n' || *p == '\r') ? 2 : 1;
	return n;
}

int db_copy_format_row(struct db_buf *buf, int value_count, const char *const *values, struct mon_error *err)
{
	if (value_count <= 0)
		return mon_error_set(err, MON_EINVAL, "copy row: needs at least one value");
	size_t need = 0;
	for (int i = 0; i < value_count; i++) {
		size_t n = values[i] == NULL ? 2 : escaped_len(values[i]);
		if (n > buf->max - need - 1)
			return mon_error_set(err, MON_ELIMIT, "copy row: larger than %zu bytes", buf->max);
		need += n + 1; /* and the tab or newline after it */
	}
	int rc = db_buf_reserve(buf, need);
	if (rc == MON_ELIMIT)
		return mon_error_set(err, rc, "copy row: larger than %zu bytes", buf->max);
	if (rc != 0)
		return mon_error_set(err, rc, "out of memory buffering a copy row");

	char *o = buf->data + buf->len;
	for (int i = 0; i < value_count; i++) {
		if (values[i] == NULL) {
			*o++ = '\\';
			*o++ = 'N';
		} else {
			for (const char *p = values[i]; *p; p++) {
				switch (*p) {
				case '\\':
					*o++ = '\\';
					*o++ = '\\';
					break;
				case '\t':
					*o++ = '\\';
					*o++ = 't';
					break;
				case '\n':
					*o++ = '\\';
					*o++ = 'n';
					break;
				case '\r':
					*o++ = '\\';
					*o++ = 'r';
					break;
				default: *o++ = *p; break;
				}
			}
		}
		*o++ = i + 1 < value_count ? '\t' : '\n';
	}
	buf->len = (size_t)(o - buf->data);
	return 0;
}

/* Ends a COPY that cannot finish, so the connection can be reused. */
static void copy_abort(struct db_conn *conn, const char *reason)
{
	conn->is_copying = false;
	conn->copy_buf.len = 0;
	if (PQputCopyEnd(conn->pg, reason) != 1) {
		conn->is_broken = true;
		return;
	}
	PGresult *res;
	while ((res = PQgetResult(conn->pg)) != NULL)
		PQclear(res);
}

static int copy_flush(struct db_conn *conn, struct mon_error *err)
{
	if (conn->copy_buf.len == 0)
		return 0;
	if (PQputCopyData(conn->pg, conn->copy_buf.data, (int)conn->copy_buf.len) != 1) {
		int rc = db_result_error(conn, NULL, "copy data", err);
		copy_abort(conn, "could not send data");
		return rc;
	}
	conn->copy_buf.len = 0;
	return 0;
}

int db_copy_begin(struct db_conn *conn, const char *copy_sql, struct mon_error *err)
{
	if (conn == NULL || conn->pg == NULL)
		return mon_error_set(err, MON_EINTERNAL, "database connection: not acquired");
	if (conn->is_copying)
		return mon_error_set(err, MON_EINTERNAL, "database connection: COPY already in progress");
	if (conn->is_reading)
		return mon_error_set(err, MON_EINTERNAL, "copy: not allowed in an autocommit read");
	PGresult *res = PQexec(conn->pg, copy_sql);
	int rc = 0;
	if (PQresultStatus(res) != PGRES_COPY_IN) {
		if (PQresultStatus(res) == PGRES_FATAL_ERROR || res == NULL)
			rc = db_result_error(conn, res, "copy", err);
		else
			rc = mon_error_set(err, MON_EINTERNAL, "copy: statement is not COPY FROM STDIN");
		goto out;
	}
	conn->is_copying = true;
	conn->copy_rows = 0;
	conn->copy_buf.len = 0;
	conn->copy_buf.max = DB_COPY_ROW_MAX;
out:
	PQclear(res);
	/* a statement that was not a COPY at all (e.g. COPY TO) leaves the connection busy */
	if (rc != 0 && conn->pg != NULL && PQtransactionStatus(conn->pg) == PQTRANS_ACTIVE)
		conn->is_broken = true;
	return rc;
}

int db_copy_row(struct db_conn *conn, int value_count, const char *const *values, struct mon_error *err)
{
	if (conn == NULL || !conn->is_copying)
		return mon_error_set(err, MON_EINTERNAL, "copy: no COPY in progress");
	int rc = db_copy_format_row(&conn->copy_buf, value_count, values, err);
	if (rc != 0) {
		copy_abort(conn, "row rejected by the client");
		return rc;
	}
	conn->copy_rows++;
	if (conn->copy_buf.len >= DB_COPY_CHUNK)
		return copy_flush(conn, err);
	return 0;
}

int db_copy_end(struct db_conn *conn, int64_t *rows_out, struct mon_error *err)
{
	if (rows_out != NULL)
		*rows_out = 0;
	if (conn == NULL || !conn->is_copying)
		return mon_error_set(err, MON_EINTERNAL, "copy: no COPY in progress");
	int rc = copy_flush(conn, err);
	if (rc != 0)
		return rc;
	conn->is_copying = false;
	if (PQputCopyEnd(conn->pg, NULL) != 1) {
		rc = db_result_error(conn, NULL, "copy end", err);
		conn->is_broken = true;
		return rc;
	}
	PGresult *res;
	int64_t rows = 0;
	while ((res = PQgetResult(conn->pg)) != NULL) {
		if (rc == 0 && PQresultStatus(res) == PGRES_COMMAND_OK) {
			const char *t = PQcmdTuples(res);
			rows = (t && *t) ? strtoll(t, NULL, 10) : conn->copy_rows;
		} else if (rc == 0) {
			rc = db_result_error(conn, res, "copy", err);
		}
		PQclear(res);
	}
	/* keep the buffer for the next COPY on this connection unless it grew large */
	if (conn->copy_buf.cap > DB_COPY_CHUNK * 2)
		db_buf_free(&conn->copy_buf);
	if (rc == 0 && rows_out != NULL)
		*rows_out = rows;
	return rc;
}
