/*
 * Schema migrations: the files of sql/, embedded at build time
 * (db_migrations.c), applied in version order, each in its own transaction
 * together with its row in schema_migrations. Every transaction first takes
 * a transaction-scoped advisory lock, so replicas starting together queue
 * up, and re-reads schema_migrations under it, so each migration is applied
 * exactly once. Transaction-scoped locks also work behind PgBouncer in
 * transaction mode, where a session lock would not.
 *
 * Every process starting on a fresh database (servers, admin commands)
 * migrates first, and a server's pool stays closed to everything else
 * until its migration succeeded (is_gated_by_migrations), so no query of
 * ours runs against a schema still being built. A migration can still lose
 * a deadlock to a session outside this protocol (an older replica serving
 * during a rolling upgrade); that transaction is retried, a few times.
 */
#include "db/db_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"

/* "monitord" in ASCII, the key of the advisory lock serialising migrations. */
#define MIGRATE_LOCK_SQL "SELECT pg_advisory_xact_lock(7885647942453326948)"
#define MIGRATE_ACQUIRE_MS 30000
#define MIGRATE_RETRIES 5 /* of a transaction that lost a deadlock or a serialization conflict */

static const char create_table_sql[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                       " version integer PRIMARY KEY,"
                                       " name text NOT NULL,"
                                       " checksum text NOT NULL,"
                                       " applied_at timestamptz NOT NULL DEFAULT now())";

/* Leaves no transaction open after a failure; a connection that cannot roll back is dropped. */
static void rollback_quietly(struct db_conn *conn)
{
	if (conn->pg == NULL || PQtransactionStatus(conn->pg) == PQTRANS_IDLE)
		return;
	PGresult *res = PQexec(conn->pg, "ROLLBACK");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		conn->is_broken = true;
	PQclear(res);
}

/*
 * Checks that every applied migration this binary knows still has its
 * checksum, and warns about applied versions it does not know (a newer
 * replica migrated the database: fine for a rolling upgrade).
 */
static int verify_applied(struct db_conn *conn, struct mon_error *err)
{
	struct db_result *res = NULL;
	int rc = db_exec_command(conn, "BEGIN", "begin", err);
	if (rc != 0)
		goto out;
	rc = db_exec_command(conn, MIGRATE_LOCK_SQL, "migration lock", err);
	if (rc == 0)
		rc = db_exec_command(conn, create_table_sql, "create schema_migrations", err);
	if (rc == 0)
		rc = db_exec(conn, "SELECT version, name, checksum FROM schema_migrations ORDER BY version", 0, NULL,
		             &res, err);
	if (rc == 0)
		rc = db_exec_command(conn, "COMMIT", "commit", err);
	if (rc != 0)
		goto out;
	for (int row = 0; row < db_result_rows(res); row++) {
		long version = strtol(db_result_value(res, row, 0), NULL, 10);
		const char *name = db_result_value(res, row, 1);
		const char *checksum = db_result_value(res, row, 2);
		const struct db_migration *m = NULL;
		for (size_t i = 0; i < db_migrations_count; i++)
			if (db_migrations[i].version == version)
				m = &db_migrations[i];
		if (m == NULL) {
			log_warn("msg=\"database has a migration this binary does not know\" version=%ld name=\"%s\"",
			         version, name);
			continue;
		}
		if (strcmp(m->checksum, checksum) != 0) {
			log_error("msg=\"applied migration changed\" version=%d name=\"%s\" applied_checksum=%s "
			          "embedded_checksum=%s",
			          m->version, m->name, checksum, m->checksum);
			rc = mon_error_set(err, MON_EPRECOND,
			                   "migration %04d \"%s\" was changed after it was applied (checksum mismatch)",
			                   m->version, m->name);
			goto out;
		}
	}
out:
	db_result_free(res);
	rollback_quietly(conn);
	return rc;
}

/* Applies m unless another process did meanwhile; *applied tells which. */
static int apply_one(struct db_conn *conn, const struct db_migration *m, bool *applied, struct mon_error *err)
{
	struct db_result *res = NULL;
	char version[16];
	snprintf(version, sizeof(version), "%d", m->version);
	*applied = false;
	int rc = db_exec_command(conn, "BEGIN", "begin", err);
	if (rc == 0)
		rc = db_exec_command(conn, MIGRATE_LOCK_SQL, "migration lock", err);
	if (rc == 0) {
		const char *params[1] = {version};
		rc = db_exec(conn, "SELECT 1 FROM schema_migrations WHERE version = $1::integer", 1, params, &res, err);
	}
	if (rc != 0)
		goto out;
	if (db_result_rows(res) > 0) {
		rc = db_exec_command(conn, "COMMIT", "commit", err);
		goto out;
	}
	rc = db_exec_command(conn, m->sql, "migration", err);
	if (rc != 0) {
		log_error("msg=\"migration failed\" version=%d name=\"%s\"", m->version, m->name);
		mon_error_prefix(err, "migration failed");
		goto out;
	}
	const char *params[3] = {version, m->name, m->checksum};
	rc = db_exec(conn, "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1::integer, $2, $3)", 3,
	             params, NULL, err);
	if (rc == 0)
		rc = db_exec_command(conn, "COMMIT", "commit", err);
	if (rc == 0)
		*applied = true;
out:
	db_result_free(res);
	rollback_quietly(conn);
	return rc;
}

/* Backs off before retry attempt (1-based), spreading processes that collided. */
static void backoff(int attempt)
{
	int64_t ms = ((int64_t)20 << attempt) + mon_now_ms() % 16;
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0) {
	}
}

/*
 * One pass: verifies what was applied, then applies what was not, each
 * migration in its own transaction. Safe to run again after a failure: what
 * one pass applied, the next finds applied and skips.
 */
static int migrate_pass(struct db_conn *conn, int *applied_n, struct mon_error *err)
{
	int rc = verify_applied(conn, err);
	for (size_t i = 0; rc == 0 && i < db_migrations_count; i++) {
		bool applied = false;
		rc = apply_one(conn, &db_migrations[i], &applied, err);
		if (rc == 0 && applied) {
			(*applied_n)++;
			log_info("msg=\"migration applied\" version=%d name=\"%s\"", db_migrations[i].version,
			         db_migrations[i].name);
		}
	}
	return rc;
}

int db_migrate(struct db_pool *pool, struct mon_error *err)
{
	struct db_conn *conn = NULL;
	int rc = db_pool_acquire_ungated(pool, MIGRATE_ACQUIRE_MS, &conn, err);
	if (rc != 0)
		goto out;
	int applied_n = 0;
	/* a pass that lost a deadlock or a serialization conflict runs again */
	for (int attempt = 0;; attempt++) {
		rc = migrate_pass(conn, &applied_n, err);
		if (rc != MON_EABORTED || attempt >= MIGRATE_RETRIES || conn->is_broken)
			break;
		log_warn("msg=\"retrying migrations after a conflict\" attempt=%d", attempt + 1);
		backoff(attempt + 1);
		if (err != NULL)
			mon_error_clear(err);
	}
	if (rc != 0)
		goto out;
	log_info("msg=\"schema up to date\" applied=%d known=%zu", applied_n, db_migrations_count);
	db_pool_set_migrated(pool);
out:
	db_pool_release(pool, conn);
	return rc;
}
