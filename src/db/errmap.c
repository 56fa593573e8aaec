/*
 * The one place where PostgreSQL errors become project error codes. The
 * mapping itself (db_sqlstate_code) is pure so unit tests can check it
 * without a server; db_result_error applies it to a libpq result, logs the
 * server's own message (which may quote SQL or data) and gives the caller a
 * message that never does.
 */
#include "db/db_internal.h"

#include <string.h>

#include "util/log.h"

static bool has_class(const char *sqlstate, const char *cls)
{
	return sqlstate[0] == cls[0] && sqlstate[1] == cls[1];
}

/*
 * SQLSTATE -> MON_E*. Beyond the table in db.h: 57P02 (crash shutdown),
 * 57P03 (cannot connect now), 53300 (too many connections) and 25006 (read
 * only transaction, i.e. we reached a standby after a failover) are
 * MON_EUNAVAIL since retrying later is right for all of them; 23502
 * (not-null violation) is MON_EINVAL because a missing required value is
 * the caller's to fix.
 */
int db_sqlstate_code(const char *sqlstate, bool is_connection_bad)
{
	if (is_connection_bad)
		return MON_EUNAVAIL;
	if (sqlstate == NULL || strlen(sqlstate) != 5)
		return MON_EINTERNAL;
	if (has_class(sqlstate, "08"))
		return MON_EUNAVAIL;
	if (strcmp(sqlstate, "57P01") == 0 || strcmp(sqlstate, "57P02") == 0 || strcmp(sqlstate, "57P03") == 0 ||
	    strcmp(sqlstate, "53300") == 0 || strcmp(sqlstate, "25006") == 0)
		return MON_EUNAVAIL;
	if (strcmp(sqlstate, "57014") == 0)
		return MON_EDEADLINE;
	if (strcmp(sqlstate, "23505") == 0)
		return MON_EEXIST;
	if (strcmp(sqlstate, "23503") == 0)
		return MON_ENOTFOUND;
	if (strcmp(sqlstate, "23514") == 0 || strcmp(sqlstate, "23502") == 0 || has_class(sqlstate, "22"))
		return MON_EINVAL;
	if (db_sqlstate_is_retryable(sqlstate))
		return MON_EABORTED;
	return MON_EINTERNAL;
}

bool db_sqlstate_is_retryable(const char *sqlstate)
{
	return sqlstate != NULL && (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0);
}

const char *db_code_message(int code)
{
	switch (code) {
	case MON_EUNAVAIL: return "database unavailable";
	case MON_EDEADLINE: return "database statement cancelled: deadline exceeded";
	case MON_EEXIST: return "already exists";
	case MON_ENOTFOUND: return "referenced resource does not exist";
	case MON_EINVAL: return "value rejected by the database";
	case MON_EABORTED: return "concurrent update conflict, retry";
	default: return "internal database error";
	}
}

const char *db_log_text(const char *msg, char *out, size_t out_len)
{
	size_t o = 0;
	if (out_len == 0)
		return out;
	for (const char *p = msg ? msg : ""; *p && *p != '\n' && o + 1 < out_len; p++)
		out[o++] = *p == '"' ? '\'' : *p;
	out[o] = '\0';
	return out;
}

int db_result_error(struct db_conn *conn, const PGresult *res, const char *what, struct mon_error *err)
{
	bool is_bad = conn->pg == NULL || PQstatus(conn->pg) == CONNECTION_BAD;
	const char *sqlstate = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *primary = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *constraint = res != NULL ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;
	int code = db_sqlstate_code(sqlstate, is_bad);

	if (primary == NULL && conn->pg != NULL)
		primary = PQerrorMessage(conn->pg);
	if (primary == NULL)
		primary = "no message";
	char text[512];
	log_warn("msg=\"database error\" op=\"%s\" sqlstate=%s code=%s server_msg=\"%s\"", what ? what : "query",
	         sqlstate ? sqlstate : "none", mon_error_name(code), db_log_text(primary, text, sizeof(text)));

	if (is_bad)
		conn->is_broken = true;
	if (db_sqlstate_is_retryable(sqlstate))
		conn->had_retryable = true;
	if (constraint != NULL && (code == MON_EEXIST || code == MON_ENOTFOUND || code == MON_EINVAL))
		return mon_error_set(err, code, "%s (constraint \"%s\")", db_code_message(code), constraint);
	return mon_error_set(err, code, "%s", db_code_message(code));
}
