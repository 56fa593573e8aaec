/*
 * The data layer: a libpq connection pool, prepared statements, a
 * transaction helper, COPY, the LISTEN/NOTIFY bus, migrations and the
 * embedded PostgreSQL cluster. Only src/db/ includes libpq-fe.h; services use
 * these functions and never see a PGconn or PGresult.
 *
 * Errors: a lost or unreachable database is MON_EUNAVAIL (safe to retry), a
 * statement cancelled by its timeout MON_EDEADLINE, a unique violation
 * MON_EEXIST, a foreign-key violation MON_ENOTFOUND, check or
 * invalid-text violations MON_EINVAL, serialization failures and deadlocks
 * MON_EABORTED (db_tx_run retries those itself). Messages never carry SQL.
 */
#ifndef MON_DB_DB_H
#define MON_DB_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

struct db_pool;
struct db_conn;
struct db_result;
struct db_bus;
struct db_embedded;

/*
 * The timeout_ms of a caller that has no deadline (the RPC layer's
 * remaining time of a call without one is the same value). Any other
 * timeout_ms is a deadline, and one that is <= 0 has passed: the call fails
 * with MON_EDEADLINE at once, before it takes a connection.
 */
#define DB_NO_DEADLINE INT64_MAX

struct db_config {
	const char *conninfo;         /* libpq conninfo string or postgresql:// URL */
	int pool_size;                /* connections, default 8 */
	int connect_timeout_s;        /* default 5 */
	const char *application_name; /* default "monitord" */
	int statement_timeout_ms;     /* session default for statements run without a caller deadline; 0: none */
	const char *session_sql;      /* run on every new connection before its first use (e.g. temporary
	                                 tables); must not depend on the migrations; NULL: none */
	bool is_gated_by_migrations;  /* db_pool_acquire answers MON_EUNAVAIL until db_migrate has succeeded on
	                                 this pool, so nothing else touches a schema still being built */
};

/*
 * Creates a pool. Connections are opened lazily and re-opened after a
 * failure, so this succeeds even while the database is down (it validates
 * the conninfo syntax only). The caller owns the pool.
 */
int db_pool_create(const struct db_config *cfg, struct db_pool **out, struct mon_error *err) MON_MUST_CHECK;

/* Closes every connection and frees the pool; accepts NULL. Connections must have been released. */
void db_pool_destroy(struct db_pool *pool);

/*
 * Takes a connection, waiting up to timeout_ms for one to be free
 * (MON_ELIMIT naming the pool size when none frees up in time; MON_EUNAVAIL
 * when the database cannot be reached, or, on a pool gated by migrations,
 * until they are applied). timeout_ms <= 0 fails at once with
 * MON_EDEADLINE; DB_NO_DEADLINE waits up to 30 s. A connection opened for
 * the caller is opened within the same time. Give it back with
 * db_pool_release.
 */
int db_pool_acquire(struct db_pool *pool, int64_t timeout_ms, struct db_conn **out,
                    struct mon_error *err) MON_MUST_CHECK;

/* Returns a connection; a broken one is closed and replaced later. */
void db_pool_release(struct db_pool *pool, struct db_conn *conn);

/* Whether db_migrate has succeeded on this pool (the gate of is_gated_by_migrations is open). */
bool db_pool_is_migrated(struct db_pool *pool);

/* Runs a trivial query on a pooled connection: 0 when the database answers. */
int db_pool_ping(struct db_pool *pool, int64_t timeout_ms, struct mon_error *err) MON_MUST_CHECK;

/*
 * Reads, on a pooled connection (so with the role's and database's own
 * settings), the settings without which an acknowledged commit does not
 * survive a crash, and logs a warning for each one off: fsync,
 * synchronous_commit, full_page_writes. Returns 0 once checked, or the
 * error that kept it from asking.
 */
int db_pool_check_durability(struct db_pool *pool, int64_t timeout_ms, struct mon_error *err) MON_MUST_CHECK;

/* A statement prepared once per connection, on first use, under its name. */
struct db_stmt {
	const char *name; /* unique, e.g. "alerts_get" */
	const char *sql;  /* with $1..$n placeholders */
	int param_count;
};

/*
 * Executes sql (or the prepared stmt) with text parameters (NULL entries are
 * SQL NULL). *out, when out is not NULL, receives the result, which the caller
 * frees with db_result_free; with out NULL the result is discarded.
 */
int db_exec(struct db_conn *conn, const char *sql, int param_count, const char *const *params, struct db_result **out,
            struct mon_error *err) MON_MUST_CHECK;
int db_exec_stmt(struct db_conn *conn, const struct db_stmt *stmt, const char *const *params, struct db_result **out,
                 struct mon_error *err) MON_MUST_CHECK;

int db_result_rows(const struct db_result *res);
int db_result_cols(const struct db_result *res);
/* Column index by name, -1 when absent. */
int db_result_col(const struct db_result *res, const char *name);
/* Text value; "" for NULL (check db_result_is_null). Owned by the result. */
const char *db_result_value(const struct db_result *res, int row, int col);
bool db_result_is_null(const struct db_result *res, int row, int col);
/* Rows affected by INSERT/UPDATE/DELETE. */
int64_t db_result_affected(const struct db_result *res);
void db_result_free(struct db_result *res);

/*
 * Runs fn inside BEGIN ... COMMIT on a pooled connection, with
 * statement_timeout set from timeout_ms (the caller's remaining deadline;
 * DB_NO_DEADLINE: the server default). timeout_ms <= 0 is a deadline that
 * has passed: MON_EDEADLINE at once, fn is not run and no connection is
 * taken; a deadline that passes while waiting for a connection is
 * MON_EDEADLINE too. Rolls back when fn returns
 * non-zero or COMMIT fails; retries serialization failures and deadlocks up
 * to 3 times (fn must be safe to re-run). Returns fn's code or a db code.
 * When the connection breaks during COMMIT, the outcome is asked on another
 * connection: 0 if the transaction committed, MON_EUNAVAIL if it aborted,
 * MON_EINDOUBT ("outcome unknown: ...") if that cannot be found out.
 */
typedef int (*db_tx_fn)(struct db_conn *conn, void *arg, struct mon_error *err);
int db_tx_run(struct db_pool *pool, int64_t timeout_ms, db_tx_fn fn, void *arg, struct mon_error *err) MON_MUST_CHECK;

/*
 * Runs fn on a pooled connection as an autocommit read: no BEGIN or COMMIT,
 * so its statement is one round trip. fn must run at most one statement
 * (db_exec or db_exec_stmt), and a read-only one: a second statement fails
 * with MON_EINTERNAL, since two would not read one snapshot (use db_tx_run
 * with REPEATABLE READ for that), and so does db_exec_command. The
 * statement is bounded by timeout_ms like db_tx_run's (DB_NO_DEADLINE: the
 * server default; <= 0: MON_EDEADLINE at once, fn not run), sent with it in the same round trip; it is
 * cancelled with MON_EDEADLINE when the time is up. Serialization failures
 * are retried as db_tx_run does. Returns fn's code or a db code.
 */
int db_read_run(struct db_pool *pool, int64_t timeout_ms, db_tx_fn fn, void *arg, struct mon_error *err) MON_MUST_CHECK;

/*
 * Flushes the WAL through every commit record written before it, in one
 * round trip of one synchronous commit: a transaction committed earlier with
 * synchronous_commit off is durable once this returns 0. Bounded by
 * timeout_ms like db_read_run. Returns 0 or a db code.
 */
int db_flush_wal(struct db_pool *pool, int64_t timeout_ms, struct mon_error *err) MON_MUST_CHECK;

/*
 * COPY FROM STDIN in text format: db_copy_begin with the COPY statement,
 * db_copy_row per row (NULL values are written as \N; others are escaped),
 * db_copy_end to finish (rows copied in *rows_out, may be NULL). Rows are
 * buffered and sent in large chunks.
 */
int db_copy_begin(struct db_conn *conn, const char *copy_sql, struct mon_error *err) MON_MUST_CHECK;
int db_copy_row(struct db_conn *conn, int value_count, const char *const *values, struct mon_error *err) MON_MUST_CHECK;
int db_copy_end(struct db_conn *conn, int64_t *rows_out, struct mon_error *err) MON_MUST_CHECK;

/* Queues pg_notify(channel, payload) in the current transaction: delivered to every listener at commit. */
int db_notify(struct db_conn *conn, const char *channel, const char *payload, struct mon_error *err) MON_MUST_CHECK;

/*
 * The LISTEN/NOTIFY bus: one dedicated connection and thread per process
 * that LISTENs on the subscribed channels and calls the callbacks (on the
 * bus thread: they must not block). After a lost connection it reconnects,
 * LISTENs again and calls the reconnect callback, since events may have
 * been missed meanwhile (subscribers then catch up from the tables).
 */
typedef void (*db_bus_fn)(const char *channel, const char *payload, void *arg);
int db_bus_create(const char *conninfo, struct db_bus **out, struct mon_error *err) MON_MUST_CHECK;
int db_bus_subscribe(struct db_bus *bus, const char *channel, db_bus_fn fn, void *arg,
                     struct mon_error *err) MON_MUST_CHECK;
void db_bus_on_reconnect(struct db_bus *bus, void (*fn)(void *arg), void *arg);
/* Starts the bus thread after the subscriptions are made. */
int db_bus_start(struct db_bus *bus, struct mon_error *err) MON_MUST_CHECK;
bool db_bus_is_connected(struct db_bus *bus);
void db_bus_destroy(struct db_bus *bus);

/*
 * Applies the migrations embedded from sql/ that the database has not
 * recorded yet, in order, each in its own transaction, under an advisory
 * lock so replicas starting together apply each exactly once. Refuses to
 * start (MON_EPRECOND) when an applied migration's checksum changed.
 */
int db_migrate(struct db_pool *pool, struct mon_error *err) MON_MUST_CHECK;

/*
 * The embedded cluster: initialises data_dir once (initdb), starts a
 * private PostgreSQL 15 listening only on a Unix socket inside data_dir, and
 * writes its conninfo to conninfo_out. When run as root, the PostgreSQL
 * binaries run as the postgres user. db_embedded_stop stops the cluster.
 */
int db_embedded_start(const char *data_dir, struct db_embedded **out, char *conninfo_out, size_t conninfo_len,
                      struct mon_error *err) MON_MUST_CHECK;
void db_embedded_stop(struct db_embedded *emb);

#endif
