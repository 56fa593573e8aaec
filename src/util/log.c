/*
 * Logging to stderr; see log.h. Each line is formatted into a bounded
 * buffer and written with one write() (or appended whole to the shared
 * buffer) so lines from threads never mix.
 */
#include "util/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static _Atomic int current_level = LOG_INFO;

#define LOG_BUF_CAP (1024 * 1024)
#define LOG_FLUSH_AT (64 * 1024)
#define LOG_FLUSH_MS 50

static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake; /* to the flusher: there is work, or stop */
	pthread_cond_t room; /* to writers: the buffer was emptied */
	char *buf;
	size_t len;
	bool is_running;
	bool stop;
	pthread_t thread;
} lb = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .room = PTHREAD_COND_INITIALIZER};

static void write_all(const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(STDERR_FILENO, p, n);
		if (w <= 0)
			return; /* nowhere to log to */
		p += w;
		n -= (size_t)w;
	}
}

/* Lock held: writes the buffer out. */
static void flush_locked(void)
{
	if (lb.len > 0) {
		write_all(lb.buf, lb.len);
		lb.len = 0;
		pthread_cond_broadcast(&lb.room);
	}
}

static void *flusher_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lb.lock);
	while (!lb.stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += LOG_FLUSH_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&lb.wake, &lb.lock, &ts);
		flush_locked();
	}
	flush_locked();
	pthread_mutex_unlock(&lb.lock);
	return NULL;
}

int log_start(void)
{
	pthread_mutex_lock(&lb.lock);
	int rc = 0;
	if (!lb.is_running) {
		lb.buf = malloc(LOG_BUF_CAP);
		lb.stop = false;
		if (lb.buf == NULL || pthread_create(&lb.thread, NULL, flusher_main, NULL) != 0) {
			free(lb.buf);
			lb.buf = NULL;
			rc = MON_ENOMEM;
		} else {
			lb.is_running = true;
		}
	}
	pthread_mutex_unlock(&lb.lock);
	return rc;
}

void log_stop(void)
{
	pthread_mutex_lock(&lb.lock);
	if (!lb.is_running) {
		pthread_mutex_unlock(&lb.lock);
		return;
	}
	lb.stop = true;
	pthread_cond_signal(&lb.wake);
	pthread_mutex_unlock(&lb.lock);
	pthread_join(lb.thread, NULL);
	pthread_mutex_lock(&lb.lock);
	flush_locked();
	lb.is_running = false;
	free(lb.buf);
	lb.buf = NULL;
	pthread_mutex_unlock(&lb.lock);
}

/* Hands one formatted line to the buffer or to stderr. */
static void emit(enum log_level level, const char *line, size_t len)
{
	pthread_mutex_lock(&lb.lock);
	if (!lb.is_running || level >= LOG_WARN) {
		flush_locked(); /* keep the order of lines */
		write_all(line, len);
		pthread_mutex_unlock(&lb.lock);
		return;
	}
	while (lb.is_running && lb.len + len > LOG_BUF_CAP)
		pthread_cond_wait(&lb.room, &lb.lock);
	if (!lb.is_running) {
		write_all(line, len);
	} else {
		memcpy(lb.buf + lb.len, line, len);
		lb.len += len;
		if (lb.len >= LOG_FLUSH_AT)
			pthread_cond_signal(&lb.wake);
	}
	pthread_mutex_unlock(&lb.lock);
}

void log_set_level(enum log_level level)
{
	atomic_store(&current_level, (int)level);
}

enum log_level log_get_level(void)
{
	return (enum log_level)atomic_load(&current_level);
}

int log_level_parse(const char *name)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	if (name == NULL)
		return -1;
	for (int i = 0; i < 4; i++)
		if (strcasecmp(name, names[i]) == 0)
			return i;
	if (strcasecmp(name, "warning") == 0)
		return LOG_WARN;
	return -1;
}

void log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	if ((int)level < atomic_load(&current_level))
		return;
	char line[4096];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s ", tm.tm_year + 1900,
	                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
	                 names[level & 3]);
	if (n < 0)
		return;
	size_t len = (size_t)n;
	int m = vsnprintf(line + len, sizeof(line) - len - 1, fmt, ap);
	if (m < 0)
		return;
	len += (size_t)m;
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2; /* truncated: keep the newline */
	line[len++] = '\n';
	emit(level, line, len);
}

void log_write(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vwrite(level, fmt, ap);
	va_end(ap);
}
