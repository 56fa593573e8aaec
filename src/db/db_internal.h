/*
 * What the files of src/db/ share and nobody else sees: the connection and
 * pool structs, the growable byte buffer used by COPY, the pure helpers
 * (SQLSTATE mapping, COPY escaping, conninfo quoting) that unit tests call
 * directly, and the embedded migrations table generated at build time.
 */
#ifndef MON_DB_DB_INTERNAL_H
#define MON_DB_DB_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "db/db.h"
#include "util/clock.h"
#include "util/error.h"

/* Hard cap of one COPY row (and so of the COPY buffer): 64 MiB. */
#define DB_COPY_ROW_MAX ((size_t)64 << 20)
/* The COPY buffer is sent to the server whenever it holds this much. */
#define DB_COPY_CHUNK ((size_t)256 << 10)

struct db_buf {
	char *data;
	size_t len;
	size_t cap;
	size_t max; /* hard cap: growing past it fails */
};

struct db_conn {
	PGconn *pg;
	struct db_pool *pool;
	bool is_in_use;
	bool is_broken;           /* close it at release time */
	bool had_retryable;       /* a statement failed with 40001/40P01 */
	bool is_copying;          /* between db_copy_begin and db_copy_end */
	bool is_reading;          /* inside db_read_run: one statement, autocommit */
	int read_statements;      /* statements started in the current db_read_run */
	int64_t read_deadline_ms; /* db_read_run's deadline (monotonic), 0: the session's timeout */
	char **prepared;          /* names prepared on this connection */
	size_t prepared_n;
	size_t prepared_cap;
	struct db_buf copy_buf;
	int64_t copy_rows;
};

/*
 * Opens a connection with conninfo (string or URL) plus the extra keyword
 * pairs (NULL-terminated, may be NULL), giving up at deadline_ms on the
 * monotonic clock. Returns the connection or NULL with err filled
 * (MON_EUNAVAIL, or MON_EDEADLINE when the deadline passed).
 */
PGconn *db_connect(const char *conninfo, const char *const *extra_keys, const char *const *extra_values,
                   int64_t deadline_ms, struct mon_error *err);

/* db_pool_acquire past the migrations gate: for db_migrate itself. */
int db_pool_acquire_ungated(struct db_pool *pool, int64_t timeout_ms, struct db_conn **out, struct mon_error *err);

/* Opens the migrations gate of a pool created with is_gated_by_migrations (db_migrate, on success). */
void db_pool_set_migrated(struct db_pool *pool);

/*
 * Maps a SQLSTATE (NULL when the server sent none) and whether the
 * connection is gone to a MON_E* code. Pure; see db.h for the table.
 */
int db_sqlstate_code(const char *sqlstate, bool is_connection_bad);

/* True for the SQLSTATEs db_tx_run retries (40001, 40P01). */
bool db_sqlstate_is_retryable(const char *sqlstate);

/* The caller-facing text for a code from db_sqlstate_code; never SQL. */
const char *db_code_message(int code);

/*
 * Turns a failed result (res may be NULL) on conn into an error: logs the
 * server's message at warn level, marks the connection broken when it is
 * gone, fills err with a message free of SQL and returns the code. Does not
 * clear res.
 */
int db_result_error(struct db_conn *conn, const PGresult *res, const char *what, struct mon_error *err);

/*
 * Ends a pipeline whose statements' results were read: with read_sync (the
 * Sync was sent), reads the Sync's own result first; leaves pipeline mode.
 * Anything unexpected marks conn broken.
 */
void db_pipeline_leave(struct db_conn *conn, bool read_sync);

/*
 * Copies the first line of a server or libpq message into out for a log
 * line: double quotes become single quotes so logfmt values stay intact.
 * Returns out.
 */
const char *db_log_text(const char *msg, char *out, size_t out_len);

/*
 * The hook db_exec and db_exec_stmt call before they send a statement: 0
 * outside db_read_run; inside it, refuses a second statement (MON_EINTERNAL:
 * the read would not be one atomic snapshot) and a deadline already past
 * (MON_EDEADLINE), and sets *timeout_ms to the statement_timeout the
 * statement must run with (0: the session's, nothing to send).
 */
int db_read_gate(struct db_conn *conn, int64_t *timeout_ms, struct mon_error *err) MON_MUST_CHECK;

/*
 * The outcome of transaction xid (text of an xid8) whose connection broke
 * during COMMIT, asked on another pooled connection with pg_xact_status: 0
 * when it committed; cause's code and message when it aborted (the usual,
 * retryable error); MON_EINDOUBT, with a message starting "outcome unknown:
 * ", when it is still in progress after a few short waits, too old to know,
 * or the database cannot be asked before deadline_ms (monotonic; INT64_MAX:
 * a few seconds). db_tx_run calls it; tests call it directly.
 */
int db_tx_resolve(struct db_pool *pool, int64_t deadline_ms, const char *xid, const struct mon_error *cause,
                  struct mon_error *err) MON_MUST_CHECK;

/* statement_timeout is an int of milliseconds on the server. */
#define DB_TIMEOUT_MAX_MS 2147483647LL

/* Runs a command that returns no rows (simple protocol, may hold several statements). */
int db_exec_command(struct db_conn *conn, const char *sql, const char *what, struct mon_error *err) MON_MUST_CHECK;

/* Buffer helpers; a buffer starts zeroed with max set. */
int db_buf_reserve(struct db_buf *buf, size_t extra) MON_MUST_CHECK;
void db_buf_free(struct db_buf *buf);

/*
 * Appends one row in COPY text format to buf: values separated by tabs,
 * ended by a newline, NULL entries written as \N, and backslash, tab,
 * newline and carriage return escaped. MON_ELIMIT past buf->max (buf is then
 * left as it was).
 */
int db_copy_format_row(struct db_buf *buf, int value_count, const char *const *values,
                       struct mon_error *err) MON_MUST_CHECK;

/*
 * Writes value into out as a libpq conninfo value: single-quoted, with
 * backslash and quote escaped. MON_ELIMIT when out is too small.
 */
int db_conninfo_quote(const char *value, char *out, size_t out_len, struct mon_error *err) MON_MUST_CHECK;

/* The migrations embedded from sql/ (generated file db_migrations.c). */
struct db_migration {
	int version;
	const char *name;
	const char *checksum; /* SHA-256 of the file, hex */
	const char *sql;
};
extern const struct db_migration db_migrations[];
extern const size_t db_migrations_count;

#endif
