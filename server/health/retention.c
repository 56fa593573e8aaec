/*
 * Retention of the health check log (see retention.h). A run holds a
 * session advisory lock on one pooled connection and deletes in batches
 * of HEALTH_RETENTION_BATCH rows, each batch its own statement, so no long
 * transaction holds locks against the writers of new checks.
 */
#include "health/retention.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/idem.h"
#include "util/log.h"

#define ACQUIRE_TIMEOUT_MS 10000
#define MAX_AGE_DAYS_MAX 3650

/* Runs one batched DELETE until it removes fewer than a batch; the rows go to *count. */
static int delete_batches(struct db_conn *conn, const char *sql, const char *days, int64_t *count,
                          struct mon_error *err)
{
	const char *params[] = {days};
	for (;;) {
		struct db_result *res = NULL;
		int rc = db_exec(conn, sql, 1, params, &res, err);
		if (rc != 0)
			return rc;
		int64_t n = db_result_affected(res);
		db_result_free(res);
		*count += n;
		if (n < HEALTH_RETENTION_BATCH)
			return 0;
	}
}

int health_retention_run(struct db_pool *pool, int64_t max_age_days, struct health_retention_stats *stats,
                         struct mon_error *err)
{
	_Static_assert(HEALTH_RETENTION_LOCK == 7206002, "the SQL below names HEALTH_RETENTION_LOCK");
	_Static_assert(HEALTH_RETENTION_BATCH == 5000, "the SQL below names HEALTH_RETENTION_BATCH");
	static const char checks_sql[] =
	        "DELETE FROM tb_health_check_log WHERE id IN (SELECT id FROM tb_health_check_log"
	        " WHERE checked_at < now() - $1::integer * interval '1 day' LIMIT 5000)";
	static const char events_sql[] =
	        "DELETE FROM tb_service_health_event WHERE seq IN (SELECT seq FROM tb_service_health_event"
	        " WHERE occurred_at < now() - $1::integer * interval '1 day' LIMIT 5000)";
	static const char rollups_sql[] =
	        "DELETE FROM tb_service_uptime_hourly WHERE (service_id, hour) IN (SELECT service_id, hour"
	        " FROM tb_service_uptime_hourly WHERE hour < now() - ($1::integer + 1) * interval '1 day' LIMIT 5000)";
	struct health_retention_stats local = {0};
	struct db_conn *conn = NULL;
	struct db_result *res = NULL;
	bool is_locked = false;
	char days[24];
	int rc = 0;
	if (stats == NULL)
		stats = &local;
	memset(stats, 0, sizeof(*stats));
	if (max_age_days < 1 || max_age_days > MAX_AGE_DAYS_MAX)
		return mon_error_set(err, MON_EINVAL, "health check retention: must be 1 to %d days", MAX_AGE_DAYS_MAX);
	snprintf(days, sizeof(days), "%" PRId64, max_age_days);
	rc = db_pool_acquire(pool, ACQUIRE_TIMEOUT_MS, &conn, err);
	if (rc != 0)
		return rc;
	rc = db_exec(conn, "SELECT pg_try_advisory_lock(7206002)", 0, NULL, &res, err);
	if (rc != 0)
		goto out;
	is_locked = strcmp(db_result_value(res, 0, 0), "t") == 0;
	if (!is_locked) {
		stats->is_skipped = true;
		goto out;
	}
	rc = delete_batches(conn, checks_sql, days, &stats->checks_deleted, err);
	if (rc == 0)
		rc = delete_batches(conn, events_sql, days, &stats->events_deleted, err);
	if (rc == 0)
		rc = delete_batches(conn, rollups_sql, days, &stats->rollups_deleted, err);
out:
	if (is_locked) {
		struct mon_error unlock_err = {0};
		if (db_exec(conn, "SELECT pg_advisory_unlock(7206002)", 0, NULL, NULL, &unlock_err) != 0)
			log_warn("msg=\"could not release the health retention lock\" error=\"%s\"", unlock_err.msg);
	}
	db_result_free(res);
	db_pool_release(pool, conn);
	return rc;
}

struct health_retention {
	struct db_pool *pool;
	int64_t max_age_days;
	int64_t idempotency_hours; /* 0: keys are not pruned here */
	int64_t interval_s;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool is_stopping;
};

static void *retention_main(void *arg)
{
	struct health_retention *job = arg;
	int64_t wait_s = 5; /* the first run, shortly after start */
	pthread_mutex_lock(&job->lock);
	for (;;) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += (time_t)wait_s;
		while (!job->is_stopping)
			if (pthread_cond_timedwait(&job->cond, &job->lock, &until) == ETIMEDOUT)
				break;
		if (job->is_stopping)
			break;
		pthread_mutex_unlock(&job->lock);
		struct health_retention_stats stats;
		struct mon_error err = {0};
		int rc = health_retention_run(job->pool, job->max_age_days, &stats, &err);
		if (rc != 0)
			log_warn("msg=\"health check retention failed\" error=\"%s\"", err.msg);
		else if (stats.checks_deleted > 0 || stats.events_deleted > 0)
			log_info("msg=\"health check retention\" checks_deleted=%" PRId64 " events_deleted=%" PRId64
			         " max_age_days=%" PRId64,
			         stats.checks_deleted, stats.events_deleted, job->max_age_days);
		int64_t keys_deleted = 0;
		if (job->idempotency_hours > 0 &&
		    svc_idem_prune(job->pool, job->idempotency_hours, &keys_deleted, &err) != 0)
			log_warn("msg=\"idempotency key retention failed\" error=\"%s\"", err.msg);
		else if (keys_deleted > 0)
			log_info("msg=\"idempotency key retention\" keys_deleted=%" PRId64 " max_age_hours=%" PRId64,
			         keys_deleted, job->idempotency_hours);
		pthread_mutex_lock(&job->lock);
		wait_s = job->interval_s;
	}
	pthread_mutex_unlock(&job->lock);
	return NULL;
}

int health_retention_start(struct db_pool *pool, int64_t max_age_days, int64_t idempotency_hours, int64_t interval_s,
                           struct health_retention **out, struct mon_error *err)
{
	*out = NULL;
	if (max_age_days < 1 || max_age_days > MAX_AGE_DAYS_MAX)
		return mon_error_set(err, MON_EINVAL, "health check retention: must be 1 to %d days", MAX_AGE_DAYS_MAX);
	if (interval_s < 0)
		return mon_error_set(err, MON_EINVAL, "health retention interval: must not be negative");
	if (idempotency_hours < 0 || idempotency_hours > SVC_IDEM_RETENTION_HOURS_MAX)
		return mon_error_set(err, MON_EINVAL, "idempotency-retention-hours: must be 1 to %d",
		                     SVC_IDEM_RETENTION_HOURS_MAX);
	struct health_retention *job = calloc(1, sizeof(*job));
	if (job == NULL)
		return mon_error_set(err, MON_ENOMEM, "out of memory");
	job->pool = pool;
	job->max_age_days = max_age_days;
	job->idempotency_hours = idempotency_hours;
	job->interval_s = interval_s == 0 ? 3600 : interval_s;
	pthread_mutex_init(&job->lock, NULL);
	pthread_cond_init(&job->cond, NULL);
	if (pthread_create(&job->thread, NULL, retention_main, job) != 0) {
		pthread_mutex_destroy(&job->lock);
		pthread_cond_destroy(&job->cond);
		free(job);
		return mon_error_set(err, MON_EINTERNAL, "could not start the health retention thread");
	}
	*out = job;
	return 0;
}

void health_retention_stop(struct health_retention *job)
{
	if (job == NULL)
		return;
	pthread_mutex_lock(&job->lock);
	job->is_stopping = true;
	pthread_cond_broadcast(&job->cond);
	pthread_mutex_unlock(&job->lock);
	pthread_join(job->thread, NULL);
	pthread_mutex_destroy(&job->lock);
	pthread_cond_destroy(&job->cond);
	free(job);
}
