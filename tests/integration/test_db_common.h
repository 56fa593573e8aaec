/*
 * Helpers shared by the data layer's integration tests: each test program
 * makes its own database on the throwaway cluster named by
 * MON_TEST_DATABASE (so test programs can run in parallel) and drops it at
 * the end. Header-only: every test is one .c file.
 */
#ifndef MON_TESTS_DB_COMMON_H
#define MON_TESTS_DB_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "db/db.h"

struct test_db {
	char admin[1024];    /* conninfo of the cluster's postgres database */
	char conninfo[1100]; /* conninfo of the test's own database */
	char name[64];
};

/* Runs one admin statement; fails the test on error. */
static inline void test_db_admin(const char *admin, const char *sql)
{
	PGconn *pg = PQconnectdb(admin);
	if (PQstatus(pg) != CONNECTION_OK)
		fail_msg("cannot connect to the test cluster: %s", PQerrorMessage(pg));
	PGresult *res = PQexec(pg, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		fail_msg("%s: %s", sql, PQerrorMessage(pg));
	PQclear(res);
	PQfinish(pg);
}

/* Creates database db_test_<tag>_<pid> on the test cluster. */
static inline void test_db_create(struct test_db *t, const char *tag)
{
	const char *base = getenv("MON_TEST_DATABASE");
	if (base == NULL)
		fail_msg("MON_TEST_DATABASE is not set (run through ctest)");
	snprintf(t->admin, sizeof(t->admin), "%s", base);
	snprintf(t->name, sizeof(t->name), "db_test_%s_%ld", tag, (long)getpid());
	snprintf(t->conninfo, sizeof(t->conninfo), "%s dbname=%s", base, t->name);
	char sql[256];
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", t->name);
	test_db_admin(t->admin, sql);
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", t->name);
	test_db_admin(t->admin, sql);
}

static inline void test_db_drop(struct test_db *t)
{
	char sql[256];
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", t->name);
	test_db_admin(t->admin, sql);
}

static inline struct db_pool *test_db_pool(const char *conninfo, int size)
{
	struct db_config cfg = {.conninfo = conninfo, .pool_size = size, .connect_timeout_s = 5};
	struct db_pool *pool = NULL;
	struct mon_error err = {0};
	if (db_pool_create(&cfg, &pool, &err) != 0)
		fail_msg("db_pool_create: %s", err.msg);
	return pool;
}

/* Runs sql on a pooled connection, failing the test on error. */
static inline void test_db_exec(struct db_pool *pool, const char *sql)
{
	struct db_conn *c = NULL;
	struct mon_error err = {0};
	if (db_pool_acquire(pool, 5000, &c, &err) != 0)
		fail_msg("acquire: %s", err.msg);
	if (db_exec(c, sql, 0, NULL, NULL, &err) != 0)
		fail_msg("%s: %s", sql, err.msg);
	db_pool_release(pool, c);
}

/* The first value of the first row of sql, copied into out. */
static inline void test_db_scalar(struct db_pool *pool, const char *sql, char *out, size_t out_len)
{
	struct db_conn *c = NULL;
	struct db_result *res = NULL;
	struct mon_error err = {0};
	if (db_pool_acquire(pool, 5000, &c, &err) != 0)
		fail_msg("acquire: %s", err.msg);
	if (db_exec(c, sql, 0, NULL, &res, &err) != 0)
		fail_msg("%s: %s", sql, err.msg);
	if (db_result_rows(res) < 1)
		fail_msg("%s: no rows", sql);
	snprintf(out, out_len, "%s", db_result_value(res, 0, 0));
	db_result_free(res);
	db_pool_release(pool, c);
}

static inline long test_db_count(struct db_pool *pool, const char *sql)
{
	char buf[64];
	test_db_scalar(pool, sql, buf, sizeof(buf));
	return strtol(buf, NULL, 10);
}

/* Messages of kind ("Sync", "Parse", ...) the client sent, in a PQtrace file written with PQTRACE_SUPPRESS_TIMESTAMPS.
 */
static inline int test_db_sent_count(FILE *trace, const char *kind)
{
	char line[512];
	int n = 0;
	rewind(trace);
	while (fgets(line, sizeof(line), trace) != NULL) {
		char *p = strchr(line, '\t');
		if (line[0] != 'F' || p == NULL || (p = strchr(p + 1, '\t')) == NULL)
			continue;
		if (strncmp(p + 1, kind, strlen(kind)) == 0)
			n++;
	}
	return n;
}

static inline int64_t db_now_ms_for_tests(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void test_sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

#endif
