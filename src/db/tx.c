/*
 * The transaction helper every service uses: one connection, BEGIN, a
 * statement_timeout taken from the caller's remaining deadline, the
 * caller's function, COMMIT (or ROLLBACK), and a bounded retry of
 * serialization failures and deadlocks. Nothing is acknowledged before
 * COMMIT has succeeded. A connection lost during COMMIT leaves the outcome
 * unknown to us: the transaction's id, read in COMMIT's round trip, is then
 * looked up on another connection (pg_xact_status), and a commit that
 * cannot be resolved is reported as such (MON_EINDOUBT), never as a
 * failure safe to retry.
 *
 * Its sibling for reads of one statement, db_read_run, skips BEGIN and
 * COMMIT: the statement runs in autocommit, which for a single statement is
 * the same snapshot and atomicity in one round trip instead of three. It
 * keeps the deadline: the statement carries its own statement_timeout (see
 * exec_bounded in exec.c).
 */
#include "db/db_internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "util/log.h"

#define TX_RETRIES 3

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0) {
	}
}

/* What COMMIT left to resolve when the connection broke during it. */
struct commit_state {
	bool is_in_doubt;  /* the connection broke before COMMIT's answer */
	bool is_xid_known; /* the transaction's id (or that it had none) arrived first */
	char xid[24];      /* the id, "" when the transaction had none (it wrote nothing) */
};

/*
 * COMMIT, in the same round trip as pg_current_xact_id_if_assigned(): a
 * pipeline of the two, with a Flush request between them so that the server
 * sends the transaction's id before it starts to commit. If the connection
 * breaks before COMMIT is answered, cs says so and which id to ask about
 * (see resolve_in_doubt); the id is read only here, so a transaction that
 * wrote nothing is not given one. COMMIT of a transaction that already
 * failed answers "ROLLBACK" without an error; that happens when fn ignored a
 * failed statement and returned 0.
 */
static int commit(struct db_conn *conn, struct commit_state *cs, struct mon_error *err)
{
	PGconn *pg = conn->pg;
	PGresult *id_res = NULL, *res = NULL;
	int rc = 0;
	if (PQtransactionStatus(pg) == PQTRANS_INERROR) {
		log_error("msg=\"transaction rolled back at commit: a failed statement was ignored\"");
		return mon_error_set(err, MON_EINTERNAL, "transaction rolled back after a failed statement");
	}
	if (PQenterPipelineMode(pg) != 1) {
		conn->is_broken = true;
		return mon_error_set(err, MON_EINTERNAL, "database connection: cannot enter pipeline mode");
	}
	bool is_sent =
	        PQsendQueryParams(pg, "SELECT pg_current_xact_id_if_assigned()", 0, NULL, NULL, NULL, NULL, 0) == 1 &&
	        PQsendFlushRequest(pg) == 1 && PQsendQueryParams(pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) == 1 &&
	        PQpipelineSync(pg) == 1;
	/* each statement's results end with NULL, then the Sync's own result; stop at a broken connection */
	for (int i = 0; is_sent && i < 2 && PQstatus(pg) == CONNECTION_OK; i++) {
		PGresult *r;
		while ((r = PQgetResult(pg)) != NULL) {
			if (i == 0 && id_res == NULL)
				id_res = r;
			else if (i == 1 && res == NULL)
				res = r;
			else
				PQclear(r);
		}
	}
	db_pipeline_leave(conn, is_sent);

	if (PQresultStatus(id_res) == PGRES_TUPLES_OK && PQntuples(id_res) == 1) {
		cs->is_xid_known = true;
		snprintf(cs->xid, sizeof(cs->xid), "%s", PQgetisnull(id_res, 0, 0) ? "" : PQgetvalue(id_res, 0, 0));
	}
	if (PQresultStatus(res) == PGRES_COMMAND_OK) {
		if (strcmp(PQcmdStatus(res), "ROLLBACK") == 0) {
			log_error("msg=\"transaction rolled back at commit: a failed statement was ignored\"");
			rc = mon_error_set(err, MON_EINTERNAL, "transaction rolled back after a failed statement");
		}
		goto out;
	}
	if (PQstatus(pg) != CONNECTION_OK || !is_sent) {
		cs->is_in_doubt = true;
		conn->is_broken = true;
	}
	/* COMMIT's error, else the id query's (COMMIT then did not run), else the connection's */
	const PGresult *failed = res;
	if (PQresultStatus(res) != PGRES_FATAL_ERROR && id_res != NULL && PQresultStatus(id_res) != PGRES_TUPLES_OK)
		failed = id_res;
	rc = db_result_error(conn, failed, "commit", err);
out:
	PQclear(id_res);
	PQclear(res);
	return rc;
}

static void rollback(struct db_conn *conn)
{
	if (conn->pg == NULL || conn->is_broken)
		return;
	if (PQtransactionStatus(conn->pg) == PQTRANS_IDLE)
		return;
	PGresult *res = PQexec(conn->pg, "ROLLBACK");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		conn->is_broken = true;
	PQclear(res);
}

/*
 * How long to try to reach the database to resolve an in-doubt commit when
 * the caller has no deadline, and how often to ask again while the
 * transaction is still "in progress" (its backend finishing the commit).
 */
#define TX_RESOLVE_DEFAULT_MS 5000
#define TX_RESOLVE_POLLS 4

int db_tx_resolve(struct db_pool *pool, int64_t deadline_ms, const char *xid, const struct mon_error *cause,
                  struct mon_error *err)
{
	const char *status = "not asked";
	char seen[24] = "";
	int64_t until = deadline_ms != INT64_MAX ? deadline_ms : mon_now_ms() + TX_RESOLVE_DEFAULT_MS;
	for (int attempt = 0;; attempt++) {
		int64_t left = until - mon_now_ms();
		if (left <= 0)
			break;
		struct db_conn *conn = NULL;
		struct db_result *res = NULL;
		struct mon_error e = {0};
		int rc = db_pool_acquire(pool, left, &conn, &e);
		if (rc == 0)
			rc = db_exec(conn, "SELECT pg_xact_status($1::xid8)", 1, &xid, &res, &e);
		db_pool_release(pool, conn);
		if (rc != 0) {
			status = "could not ask";
			break;
		}
		snprintf(seen, sizeof(seen), "%s",
		         db_result_is_null(res, 0, 0) ? "unknown" : db_result_value(res, 0, 0));
		db_result_free(res);
		status = seen;
		if (strcmp(seen, "committed") == 0) {
			log_info("msg=\"commit outcome resolved\" xid=%s status=committed", xid);
			mon_error_clear(err);
			return 0;
		}
		if (strcmp(seen, "aborted") == 0) {
			log_info("msg=\"commit outcome resolved\" xid=%s status=aborted", xid);
			if (err != NULL && cause != NULL && err != cause)
				*err = *cause;
			return cause != NULL ? cause->code : MON_EUNAVAIL;
		}
		if (strcmp(seen, "in progress") != 0 || attempt + 1 >= TX_RESOLVE_POLLS)
			break;
		int64_t pause = (int64_t)10 << attempt;
		if (mon_now_ms() + pause >= until)
			break;
		sleep_ms(pause);
	}
	log_warn("msg=\"commit outcome unknown\" xid=%s status=\"%s\"", xid, status);
	return mon_error_set(err, MON_EINDOUBT, "outcome unknown: the database connection was lost during commit");
}

/*
 * After a connection lost during COMMIT (cs->is_in_doubt): rc and err hold
 * the connection's error. A transaction that had no id wrote nothing: that
 * error stands (retryable). Otherwise the outcome is asked on another
 * connection (db_tx_resolve); without the id it cannot be, and the outcome
 * is unknown.
 */
static int resolve_in_doubt(struct db_pool *pool, int64_t deadline_ms, const struct commit_state *cs, int rc,
                            struct mon_error *err)
{
	if (cs->is_xid_known && cs->xid[0] == '\0')
		return rc;
	if (!cs->is_xid_known) {
		log_warn("msg=\"commit outcome unknown\" status=\"no transaction id\"");
		return mon_error_set(err, MON_EINDOUBT,
		                     "outcome unknown: the database connection was lost during commit");
	}
	struct mon_error cause = {.code = rc};
	if (err != NULL)
		cause = *err;
	cause.code = rc;
	return db_tx_resolve(pool, deadline_ms, cs->xid, &cause, err);
}

int db_read_gate(struct db_conn *conn, int64_t *timeout_ms, struct mon_error *err)
{
	*timeout_ms = 0;
	if (!conn->is_reading)
		return 0;
	if (conn->read_statements++ > 0)
		return mon_error_set(err, MON_EINTERNAL, "an autocommit read ran a second statement");
	if (conn->read_deadline_ms == 0)
		return 0;
	int64_t left = conn->read_deadline_ms - mon_now_ms();
	if (left <= 0)
		return mon_error_set(err, MON_EDEADLINE, "deadline exceeded before the statement started");
	*timeout_ms = left > DB_TIMEOUT_MAX_MS ? DB_TIMEOUT_MAX_MS : left;
	return 0;
}

/* Runs fn as an autocommit read on conn (see db_read_run). */
static int read_on(struct db_conn *conn, bool is_bounded, int64_t deadline, db_tx_fn fn, void *arg,
                   struct mon_error *err)
{
	conn->is_reading = true;
	conn->read_statements = 0;
	conn->read_deadline_ms = is_bounded ? deadline : 0;
	int rc = fn(conn, arg, err);
	conn->is_reading = false;
	if (rc == 0 && PQtransactionStatus(conn->pg) != PQTRANS_IDLE) {
		log_error("msg=\"autocommit read left a transaction open\"");
		conn->is_broken = true;
		rc = mon_error_set(err, MON_EINTERNAL, "autocommit read left a transaction open");
	}
	return rc;
}

/*
 * One attempt: returns fn's or the database's code; *is_retryable tells
 * whether a retry may help. is_read: fn runs as an autocommit read instead
 * of inside BEGIN ... COMMIT.
 */
static int tx_attempt(struct db_pool *pool, bool is_read, bool is_bounded, int64_t deadline, db_tx_fn fn, void *arg,
                      bool *is_retryable, struct mon_error *err)
{
	struct db_conn *conn = NULL;
	struct commit_state cs = {0};
	int rc = 0;
	*is_retryable = false;
	int64_t left = is_bounded ? deadline - mon_now_ms() : DB_NO_DEADLINE;
	if (left <= 0) {
		rc = mon_error_set(err, MON_EDEADLINE, "deadline exceeded before the transaction started");
		goto out;
	}
	rc = db_pool_acquire(pool, left, &conn, err);
	if (rc == MON_ELIMIT && is_bounded && mon_now_ms() >= deadline) {
		/* the wait for a connection ended with the caller's deadline */
		rc = mon_error_set(err, MON_EDEADLINE, "deadline exceeded waiting for a database connection");
		goto out;
	}
	if (rc != 0)
		goto out;
	if (is_read) {
		rc = read_on(conn, is_bounded, deadline, fn, arg, err);
		*is_retryable = rc == MON_EABORTED && conn->had_retryable;
		goto out;
	}

	char begin[96];
	if (is_bounded) {
		left = deadline - mon_now_ms();
		if (left <= 0) {
			rc = mon_error_set(err, MON_EDEADLINE, "deadline exceeded before the transaction started");
			goto out;
		}
		if (left > DB_TIMEOUT_MAX_MS)
			left = DB_TIMEOUT_MAX_MS;
		snprintf(begin, sizeof(begin), "BEGIN; SET LOCAL statement_timeout = %lld", (long long)left);
	} else {
		snprintf(begin, sizeof(begin), "BEGIN");
	}
	rc = db_exec_command(conn, begin, "begin", err);
	if (rc != 0)
		goto out;

	rc = fn(conn, arg, err);
	if (rc == 0 && conn->is_copying) {
		log_error("msg=\"transaction function returned inside a COPY\"");
		conn->is_broken = true;
		rc = mon_error_set(err, MON_EINTERNAL, "transaction ended inside a COPY");
	}
	if (rc == 0)
		rc = commit(conn, &cs, err);
	if (rc != 0) {
		*is_retryable = conn->had_retryable && rc == MON_EABORTED;
		rollback(conn);
	}
out:
	if (conn != NULL)
		db_pool_release(pool, conn);
	if (cs.is_in_doubt)
		rc = resolve_in_doubt(pool, is_bounded ? deadline : INT64_MAX, &cs, rc, err);
	return rc;
}

/* db_tx_run and db_read_run: attempts, with the retries of serialization failures. */
static int run_attempts(struct db_pool *pool, bool is_read, int64_t timeout_ms, db_tx_fn fn, void *arg,
                        struct mon_error *err)
{
	/* <= 0 is a deadline that has passed, not "none": fn does not run */
	if (timeout_ms <= 0)
		return mon_error_set(err, MON_EDEADLINE, "deadline exceeded before the transaction started");
	bool is_bounded = timeout_ms != DB_NO_DEADLINE;
	int64_t deadline = is_bounded ? mon_now_ms() + timeout_ms : INT64_MAX;
	int rc = 0;
	for (int attempt = 0;; attempt++) {
		bool is_retryable = false;
		rc = tx_attempt(pool, is_read, is_bounded, deadline, fn, arg, &is_retryable, err);
		if (rc == 0 || !is_retryable || attempt >= TX_RETRIES)
			break;
		/* spread the retries of transactions that collided */
		int64_t backoff = ((int64_t)5 << attempt) + mon_now_ms() % 8;
		if (is_bounded && mon_now_ms() + backoff >= deadline)
			break;
		log_info("msg=\"retrying transaction\" attempt=%d", attempt + 1);
		sleep_ms(backoff);
		if (err != NULL)
			mon_error_clear(err);
	}
	return rc;
}

int db_tx_run(struct db_pool *pool, int64_t timeout_ms, db_tx_fn fn, void *arg, struct mon_error *err)
{
	return run_attempts(pool, false, timeout_ms, fn, arg, err);
}

int db_read_run(struct db_pool *pool, int64_t timeout_ms, db_tx_fn fn, void *arg, struct mon_error *err)
{
	return run_attempts(pool, true, timeout_ms, fn, arg, err);
}

/* fn of db_flush_wal: a WAL record in a transaction that has an id (transactional = true assigns one). */
static int flush_wal_fn(struct db_conn *conn, void *arg, struct mon_error *err)
{
	(void)arg;
	return db_exec(conn, "SELECT pg_logical_emit_message(true, 'monitord', '')", 0, NULL, NULL, err);
}

/*
 * PostgreSQL flushes the WAL at commit only for a transaction that has an id
 * and wrote WAL (RecordTransactionCommit), and then through its own commit
 * record. A logical decoding message is such a write that needs no table,
 * no lock and no privilege, at any wal_level. It runs as one autocommit
 * statement, as db_read_run's are, although it writes: that is all the
 * flush needs, in one round trip.
 */
int db_flush_wal(struct db_pool *pool, int64_t timeout_ms, struct mon_error *err)
{
	return run_attempts(pool, true, timeout_ms, flush_wal_fn, NULL, err);
}
