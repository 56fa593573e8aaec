/*
 * The transaction helper every service uses: one connection, BEGIN, a
 * statement_timeout taken from the caller's remaining deadline, the
 * caller's function, COMMIT (or ROLLBACK), and a bounded retry of
 * serialization failures and deadlocks. Nothing is acknowledged before
 * COMMIT has succeeded.
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

/*
 * COMMIT of a transaction that already failed answers "ROLLBACK" without an
 * error; that happens when fn ignored a failed statement and returned 0.
 */
static int commit(struct db_conn *conn, struct mon_error *err)
{
	PGresult *res = PQexec(conn->pg, "COMMIT");
	int rc = 0;
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		rc = db_result_error(conn, res, "commit", err);
		goto out;
	}
	if (strcmp(PQcmdStatus(res), "ROLLBACK") == 0) {
		log_error("msg=\"transaction rolled back at commit: a failed statement was ignored\"");
		rc = mon_error_set(err, MON_EINTERNAL, "transaction rolled back after a failed statement");
	}
out:
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
		rc = commit(conn, err);
	if (rc != 0) {
		*is_retryable = conn->had_retryable && rc == MON_EABORTED;
		rollback(conn);
	}
out:
	if (conn != NULL)
		db_pool_release(pool, conn);
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
