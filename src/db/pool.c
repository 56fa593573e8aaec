/*
 * The connection pool: a fixed number of slots, each holding a libpq
 * connection that is opened on first use and reopened after it broke. The
 * pool owns every PGconn; a caller borrows one between db_pool_acquire and
 * db_pool_release. A mutex and a condition variable guard the slots; the
 * slow parts (connecting, health checks) run outside the lock.
 */
#include "db/db_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"

/* A transaction idle this long is ended by the server (idle_in_transaction_session_timeout). */
#define DB_IDLE_IN_TX_TIMEOUT_MS 10000
/* How long a caller with no deadline (DB_NO_DEADLINE) waits for a connection. */
#define DB_ACQUIRE_DEFAULT_MS 30000

struct db_pool {
	char *conninfo;
	char *application_name;
	char connect_timeout[16];
	int statement_timeout_ms;
	char *session_sql;
	bool is_gated_by_migrations;
	_Atomic bool is_migrated;
	int size;
	int connect_timeout_s;
	pthread_mutex_t mu;
	pthread_cond_t freed;
	struct db_conn *conns;
};

/*
 * The server's notices ("relation ... already exists, skipping") go to the
 * log at debug level instead of libpq's default, stderr, where they would
 * interleave with a command's own output.
 */
static void notice_to_log(void *arg, const char *message)
{
	(void)arg;
	char text[512];
	log_debug("msg=\"database notice\" text=\"%s\"", db_log_text(message, text, sizeof(text)));
}

/*
 * Connects without blocking past deadline_ms: PQconnectStartParams and
 * PQconnectPoll driven by poll(), since libpq's connect_timeout counts whole
 * seconds per host and ignores the caller's deadline.
 */
PGconn *db_connect(const char *conninfo, const char *const *extra_keys, const char *const *extra_values,
                   int64_t deadline_ms, struct mon_error *err)
{
	const char *keys[16];
	const char *values[16];
	int n = 0;
	keys[n] = "dbname";
	values[n++] = conninfo;
	keys[n] = "client_encoding";
	values[n++] = "UTF8";
	for (int i = 0; extra_keys != NULL && extra_keys[i] != NULL && n < 15; i++) {
		keys[n] = extra_keys[i];
		values[n++] = extra_values[i];
	}
	keys[n] = NULL;
	values[n] = NULL;

	PGconn *pg = PQconnectStartParams(keys, values, 1);
	if (pg == NULL) {
		mon_error_set(err, MON_ENOMEM, "out of memory opening a database connection");
		return NULL;
	}
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	if (PQstatus(pg) == CONNECTION_BAD)
		st = PGRES_POLLING_FAILED;
	while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
		int64_t left = deadline_ms - mon_now_ms();
		if (left <= 0) {
			log_warn("msg=\"could not connect to the database\" reason=\"timed out\"");
			PQfinish(pg);
			mon_error_set(err, MON_EUNAVAIL, "database unavailable: connection timed out");
			return NULL;
		}
		struct pollfd pfd = {.fd = PQsocket(pg), .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
		int r = poll(&pfd, 1, left > 1000 ? 1000 : (int)left);
		if (r < 0 && errno != EINTR) {
			st = PGRES_POLLING_FAILED;
			break;
		}
		if (r > 0)
			st = PQconnectPoll(pg);
	}
	if (st == PGRES_POLLING_FAILED || PQstatus(pg) != CONNECTION_OK) {
		char text[512];
		log_warn("msg=\"could not connect to the database\" reason=\"%s\"",
		         db_log_text(PQerrorMessage(pg), text, sizeof(text)));
		PQfinish(pg);
		mon_error_set(err, MON_EUNAVAIL, "database unavailable: could not connect");
		return NULL;
	}
	PQsetNoticeProcessor(pg, notice_to_log, NULL);
	return pg;
}

int db_pool_create(const struct db_config *cfg, struct db_pool **out, struct mon_error *err)
{
	int rc = 0;
	struct db_pool *pool = NULL;
	*out = NULL;
	if (cfg == NULL || cfg->conninfo == NULL) {
		rc = mon_error_set(err, MON_EINVAL, "database conninfo: must be set");
		goto out;
	}
	char *parse_err = NULL;
	PQconninfoOption *opts = PQconninfoParse(cfg->conninfo, &parse_err);
	if (opts == NULL) {
		/* parse_err may quote the conninfo, which can hold a password */
		PQfreemem(parse_err);
		rc = mon_error_set(err, MON_EINVAL, "database conninfo: cannot be parsed");
		goto out;
	}
	PQconninfoFree(opts);

	pool = calloc(1, sizeof(*pool));
	if (pool == NULL) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory creating the database pool");
		goto out;
	}
	pool->size = cfg->pool_size > 0 ? cfg->pool_size : 8;
	pool->connect_timeout_s = cfg->connect_timeout_s > 0 ? cfg->connect_timeout_s : 5;
	pool->statement_timeout_ms = cfg->statement_timeout_ms > 0 ? cfg->statement_timeout_ms : 0;
	snprintf(pool->connect_timeout, sizeof(pool->connect_timeout), "%d", pool->connect_timeout_s);
	pool->conninfo = strdup(cfg->conninfo);
	pool->application_name = strdup(cfg->application_name ? cfg->application_name : "monitord");
	pool->session_sql = cfg->session_sql ? strdup(cfg->session_sql) : NULL;
	pool->is_gated_by_migrations = cfg->is_gated_by_migrations;
	atomic_init(&pool->is_migrated, false);
	pool->conns = calloc((size_t)pool->size, sizeof(*pool->conns));
	if (pool->conninfo == NULL || pool->application_name == NULL || pool->conns == NULL ||
	    (cfg->session_sql != NULL && pool->session_sql == NULL)) {
		rc = mon_error_set(err, MON_ENOMEM, "out of memory creating the database pool");
		goto out;
	}
	for (int i = 0; i < pool->size; i++)
		pool->conns[i].pool = pool;
	pthread_mutex_init(&pool->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&pool->freed, &ca);
	pthread_condattr_destroy(&ca);
	*out = pool;
	pool = NULL;
out:
	if (pool != NULL) {
		free(pool->conninfo);
		free(pool->application_name);
		free(pool->session_sql);
		free(pool->conns);
		free(pool);
	}
	return rc;
}

/* Closes a slot's connection and forgets what was prepared on it. */
static void conn_close(struct db_conn *c)
{
	if (c->pg != NULL)
		PQfinish(c->pg);
	c->pg = NULL;
	for (size_t i = 0; i < c->prepared_n; i++)
		free(c->prepared[i]);
	free(c->prepared);
	c->prepared = NULL;
	c->prepared_n = 0;
	c->prepared_cap = 0;
	db_buf_free(&c->copy_buf);
	c->is_broken = false;
	c->is_copying = false;
}

void db_pool_destroy(struct db_pool *pool)
{
	if (pool == NULL)
		return;
	for (int i = 0; i < pool->size; i++) {
		if (pool->conns[i].is_in_use)
			log_error("msg=\"database pool destroyed with a connection in use\"");
		conn_close(&pool->conns[i]);
	}
	pthread_cond_destroy(&pool->freed);
	pthread_mutex_destroy(&pool->mu);
	free(pool->conns);
	free(pool->conninfo);
	free(pool->application_name);
	free(pool->session_sql);
	free(pool);
}

/*
 * An idle connection whose server went away (restart, admin shutdown,
 * network) has usually been told so: its socket is readable. Reading it
 * here lets acquire replace the connection instead of failing the caller's
 * first query.
 */
static bool conn_looks_alive(struct db_conn *c)
{
	if (c->pg == NULL || PQstatus(c->pg) != CONNECTION_OK)
		return false;
	struct pollfd pfd = {.fd = PQsocket(c->pg), .events = POLLIN};
	int r = poll(&pfd, 1, 0);
	if (r == 0)
		return true;
	if (r < 0)
		return errno == EINTR;
	if (PQconsumeInput(c->pg) == 0 || PQstatus(c->pg) != CONNECTION_OK)
		return false;
	/* stray notifications on a pool connection are dropped */
	PGnotify *n;
	while ((n = PQnotifies(c->pg)) != NULL)
		PQfreemem(n);
	return true;
}

static struct timespec deadline_timespec(int64_t deadline_mono_ms)
{
	struct timespec ts = {.tv_sec = deadline_mono_ms / 1000, .tv_nsec = (deadline_mono_ms % 1000) * 1000000};
	return ts;
}

void db_pool_set_migrated(struct db_pool *pool)
{
	atomic_store(&pool->is_migrated, true);
}

bool db_pool_is_migrated(struct db_pool *pool)
{
	return atomic_load(&pool->is_migrated);
}

int db_pool_acquire(struct db_pool *pool, int64_t timeout_ms, struct db_conn **out, struct mon_error *err)
{
	*out = NULL;
	if (pool->is_gated_by_migrations && !atomic_load(&pool->is_migrated))
		return mon_error_set(err, MON_EUNAVAIL, "database schema not migrated yet");
	return db_pool_acquire_ungated(pool, timeout_ms, out, err);
}

int db_pool_acquire_ungated(struct db_pool *pool, int64_t timeout_ms, struct db_conn **out, struct mon_error *err)
{
	int rc = 0;
	struct db_conn *c = NULL;
	*out = NULL;
	/* a deadline that has passed takes no connection: the caller is told at once */
	if (timeout_ms <= 0)
		return mon_error_set(err, MON_EDEADLINE, "deadline exceeded before a database connection was taken");
	if (timeout_ms == DB_NO_DEADLINE)
		timeout_ms = DB_ACQUIRE_DEFAULT_MS;
	int64_t deadline = mon_now_ms() + timeout_ms;

	pthread_mutex_lock(&pool->mu);
	for (;;) {
		struct db_conn *idle_closed = NULL;
		for (int i = 0; i < pool->size; i++) {
			struct db_conn *s = &pool->conns[i];
			if (s->is_in_use)
				continue;
			if (s->pg != NULL) {
				c = s;
				break;
			}
			if (idle_closed == NULL)
				idle_closed = s;
		}
		if (c == NULL)
			c = idle_closed;
		if (c != NULL)
			break;
		if (mon_now_ms() >= deadline)
			break;
		struct timespec ts = deadline_timespec(deadline);
		int w = pthread_cond_timedwait(&pool->freed, &pool->mu, &ts);
		if (w != 0 && w != ETIMEDOUT && w != EINTR)
			break;
	}
	if (c != NULL)
		c->is_in_use = true;
	pthread_mutex_unlock(&pool->mu);
	if (c == NULL) {
		rc = mon_error_set(err, MON_ELIMIT, "database pool: all %d connections busy", pool->size);
		goto out;
	}

	if (c->pg != NULL && !conn_looks_alive(c)) {
		log_info("msg=\"replacing a broken database connection\"");
		conn_close(c);
	}
	if (c->pg == NULL) {
		int64_t connect_deadline = mon_now_ms() + (int64_t)pool->connect_timeout_s * 1000;
		if (deadline < connect_deadline)
			connect_deadline = deadline;
		if (connect_deadline <= mon_now_ms()) {
			/* a free slot but no time left to connect it */
			db_pool_release(pool, c);
			c = NULL;
			rc = mon_error_set(err, MON_EDEADLINE,
			                   "deadline exceeded before a database connection was opened");
			goto out;
		}
		static const char *const keys[] = {"application_name", "connect_timeout", "keepalives",
		                                   "keepalives_idle", NULL};
		const char *values[] = {pool->application_name, pool->connect_timeout, "1", "30", NULL};
		c->pg = db_connect(pool->conninfo, keys, values, connect_deadline, err);
		if (c->pg == NULL) {
			rc = err != NULL ? err->code : MON_EUNAVAIL;
			db_pool_release(pool, c);
			c = NULL;
			goto out;
		}
		{
			/*
			 * The session defaults: transactions with a deadline SET LOCAL a
			 * shorter statement timeout; a transaction left idle (a replica
			 * stalled or cut off between two statements) is ended by the
			 * server, so the locks it holds (e.g. the metric ingest lock) are
			 * not held for ever.
			 */
			char timeout_sql[160];
			snprintf(timeout_sql, sizeof(timeout_sql),
			         "SET statement_timeout = %d; SET idle_in_transaction_session_timeout = %d",
			         pool->statement_timeout_ms, DB_IDLE_IN_TX_TIMEOUT_MS);
			bool ok = true;
			const char *setup[] = {timeout_sql, pool->session_sql};
			for (size_t i = 0; i < sizeof(setup) / sizeof(setup[0]) && ok; i++) {
				if (setup[i] == NULL)
					continue;
				PGresult *r = PQexec(c->pg, setup[i]);
				ok = PQresultStatus(r) == PGRES_COMMAND_OK;
				PQclear(r);
			}
			if (!ok) {
				c->is_broken = true;
				db_pool_release(pool, c);
				c = NULL;
				rc = mon_error_set(err, MON_EUNAVAIL, "database: could not configure the session");
				goto out;
			}
		}
	}
	c->had_retryable = false;
	*out = c;
out:
	return rc;
}

void db_pool_release(struct db_pool *pool, struct db_conn *conn)
{
	if (conn == NULL)
		return;
	if (conn->pg != NULL && !conn->is_broken) {
		PGTransactionStatusType ts = PQtransactionStatus(conn->pg);
		if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
			/* a caller that forgot to finish its transaction */
			PGresult *r = PQexec(conn->pg, "ROLLBACK");
			if (PQresultStatus(r) != PGRES_COMMAND_OK)
				conn->is_broken = true;
			PQclear(r);
		} else if (ts != PQTRANS_IDLE) {
			conn->is_broken = true; /* mid-COPY or mid-query: not reusable */
		}
	}
	if (conn->is_broken || (conn->pg != NULL && PQstatus(conn->pg) != CONNECTION_OK))
		conn_close(conn);
	pthread_mutex_lock(&pool->mu);
	conn->is_in_use = false;
	pthread_cond_signal(&pool->freed);
	pthread_mutex_unlock(&pool->mu);
}

int db_pool_ping(struct db_pool *pool, int64_t timeout_ms, struct mon_error *err)
{
	struct db_conn *c = NULL;
	int rc = db_pool_acquire(pool, timeout_ms, &c, err);
	if (rc != 0)
		goto out;
	rc = db_exec(c, "SELECT 1", 0, NULL, NULL, err);
out:
	db_pool_release(pool, c);
	return rc;
}

int db_pool_check_durability(struct db_pool *pool, int64_t timeout_ms, struct mon_error *err)
{
	static const char *const why[] = {
	        "fsync is off: a crash of the operating system can lose or corrupt acknowledged writes",
	        "synchronous_commit is off: a crash of PostgreSQL loses the writes acknowledged just before it",
	        "full_page_writes is off: a crash of the operating system can leave torn pages"};
	struct db_conn *c = NULL;
	struct db_result *res = NULL;
	int rc = db_pool_acquire(pool, timeout_ms, &c, err);
	if (rc != 0)
		goto out;
	rc = db_exec(c,
	             "SELECT current_setting('fsync'), current_setting('synchronous_commit'), "
	             "current_setting('full_page_writes')",
	             0, NULL, &res, err);
	if (rc != 0)
		goto out;
	for (int i = 0; i < 3; i++) {
		if (strcmp(db_result_value(res, 0, i), "off") == 0)
			log_warn("msg=\"the database is not crash-safe: %s\"", why[i]);
	}
out:
	db_result_free(res);
	db_pool_release(pool, c);
	return rc;
}
