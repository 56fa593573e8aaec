/*
 * Logging to stderr; see log.h. Each line is formatted into a bounded
 * buffer and appended whole to the shared buffer (or, with no writer
 * thread, written with one write()), so lines from threads never mix. The
 * writer thread owns stderr: a caller never waits for it.
 */
#include "util/log.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"

static _Atomic int current_level = LOG_INFO;

#define LOG_BUF_CAP (1024 * 1024)
#define LOG_FLUSH_AT (64 * 1024)
#define LOG_FLUSH_MS 50
#define LOG_STOP_WAIT_MS 2000 /* log_stop's bound on writing out what is buffered */
#define LOG_POLL_MS 100       /* the writer's wait for stderr to take more, between checks for a stop */
#define LOG_CHUNK 4096        /* PIPE_BUF: a write this size to a pipe poll() called writable does not block */

/*
 * Callers append to buf under lock and never wait: a line that does not fit
 * is counted in dropped. The writer thread swaps buf with spare, writes
 * spare out without the lock, then a line saying how many were dropped.
 */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake; /* to the writer: there is urgent work, or stop */
	pthread_cond_t done; /* to log_stop: the writer has finished */
	char *buf;
	size_t len;
	char *spare;
	uint64_t dropped;
	bool is_running;
	bool is_urgent;
	bool is_writing; /* the writer is writing a batch (without the lock) */
	bool is_done;
	bool is_abandoned; /* stderr took nothing by log_stop's deadline: later lines are dropped */
	bool stop;
	pthread_t thread;
} lb = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

/* Monotonic ms after which the writer stops writing (set by log_stop); 0: none. */
static _Atomic int64_t stop_deadline_ms;

/* The CLOCK_REALTIME time ms from now, for pthread_cond_timedwait. */
static struct timespec realtime_after_ms(int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

/* Blocking write of everything: before log_start and after log_stop, when there is no writer. */
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

/*
 * The writer's write: waits for stderr to take the bytes, in steps, so that
 * once log_stop's deadline has passed it gives up instead of blocking for
 * ever on a pipe nobody reads. False when it gave up.
 */
static bool write_out(const char *p, size_t n)
{
	while (n > 0) {
		int64_t deadline = atomic_load(&stop_deadline_ms);
		if (deadline != 0 && mon_now_ms() >= deadline)
			return false;
		struct pollfd pfd = {.fd = STDERR_FILENO, .events = POLLOUT};
		int r = poll(&pfd, 1, LOG_POLL_MS);
		if (r < 0 && errno != EINTR)
			return false;
		if (r <= 0)
			continue;
		if (pfd.revents & (POLLERR | POLLNVAL))
			return false;
		ssize_t w = write(STDERR_FILENO, p, n < LOG_CHUNK ? n : LOG_CHUNK);
		if (w < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (w <= 0)
			return false; /* nowhere to log to */
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* Formats "ts=... level=... " into line; returns its length, or -1. */
static int format_prefix(enum log_level level, char *line, size_t cap)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, cap, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s ", tm.tm_year + 1900,
	                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
	                 names[level & 3]);
	return n < 0 || (size_t)n >= cap ? -1 : n;
}

static void *writer_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lb.lock);
	for (;;) {
		if (!lb.stop && !lb.is_urgent && lb.len < LOG_FLUSH_AT) {
			struct timespec ts = realtime_after_ms(LOG_FLUSH_MS);
			pthread_cond_timedwait(&lb.wake, &lb.lock, &ts);
		}
		bool is_stopping = lb.stop;
		if (lb.len == 0 && lb.dropped == 0) {
			if (is_stopping)
				break;
			continue;
		}
		char *out = lb.buf;
		size_t n = lb.len;
		uint64_t dropped = lb.dropped;
		lb.buf = lb.spare;
		lb.spare = out;
		lb.len = 0;
		lb.dropped = 0;
		lb.is_urgent = false;
		lb.is_writing = true;
		pthread_mutex_unlock(&lb.lock);

		/* the lines dropped came after this batch and before the next one */
		bool is_written = write_out(out, n);
		if (is_written && dropped > 0) {
			char line[256];
			int k = format_prefix(LOG_WARN, line, sizeof(line));
			if (k > 0) {
				int m = snprintf(
				        line + k, sizeof(line) - (size_t)k,
				        "msg=\"log lines dropped: stderr was not read fast enough\" dropped=%llu\n",
				        (unsigned long long)dropped);
				if (m > 0 && (size_t)m < sizeof(line) - (size_t)k)
					is_written = write_out(line, (size_t)(k + m));
			}
		}
		pthread_mutex_lock(&lb.lock);
		lb.is_writing = false;
		if (!is_written && is_stopping) {
			lb.is_abandoned = true; /* stderr takes nothing: later lines would block, so they are dropped */
			break;
		}
	}
	lb.is_done = true;
	pthread_cond_broadcast(&lb.done);
	pthread_mutex_unlock(&lb.lock);
	return NULL;
}

int log_start(void)
{
	pthread_mutex_lock(&lb.lock);
	int rc = 0;
	if (!lb.is_running && !lb.is_abandoned) {
		lb.buf = malloc(LOG_BUF_CAP);
		lb.spare = malloc(LOG_BUF_CAP);
		lb.len = 0;
		lb.dropped = 0;
		lb.stop = false;
		lb.is_urgent = false;
		lb.is_done = false;
		atomic_store(&stop_deadline_ms, 0);
		if (lb.buf == NULL || lb.spare == NULL || pthread_create(&lb.thread, NULL, writer_main, NULL) != 0) {
			free(lb.buf);
			free(lb.spare);
			lb.buf = lb.spare = NULL;
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
	int64_t deadline = mon_now_ms() + LOG_STOP_WAIT_MS;
	atomic_store(&stop_deadline_ms, deadline);
	lb.stop = true;
	pthread_cond_signal(&lb.wake);
	/* the writer gives up at the deadline; it notices within LOG_POLL_MS, hence the margin */
	struct timespec ts = realtime_after_ms(LOG_STOP_WAIT_MS + 5 * LOG_POLL_MS);
	while (!lb.is_done)
		if (pthread_cond_timedwait(&lb.done, &lb.lock, &ts) == ETIMEDOUT)
			break;
	bool is_done = lb.is_done;
	lb.is_running = false;
	if (!is_done)
		lb.is_abandoned = true; /* its write never returned: it keeps its buffers */
	pthread_mutex_unlock(&lb.lock);
	if (!is_done) {
		pthread_detach(lb.thread);
		return;
	}
	pthread_join(lb.thread, NULL);
	pthread_mutex_lock(&lb.lock);
	free(lb.buf);
	free(lb.spare);
	lb.buf = lb.spare = NULL;
	lb.len = 0;
	pthread_mutex_unlock(&lb.lock);
}

/*
 * Writes line now if stderr can take it without waiting (a pipe with room:
 * a write of at most PIPE_BUF bytes then neither blocks nor splits), so an
 * error is out before a crash that might follow it. False when it cannot.
 */
static bool write_now(const char *line, size_t len)
{
	struct pollfd pfd = {.fd = STDERR_FILENO, .events = POLLOUT};
	if (poll(&pfd, 1, 0) != 1 || (pfd.revents & (POLLERR | POLLNVAL | POLLHUP)) != 0)
		return false;
	return write(STDERR_FILENO, line, len) == (ssize_t)len;
}

/*
 * Hands one formatted line to the buffer, never waiting for stderr while
 * the writer runs: a line that does not fit is dropped and counted.
 * Warnings and errors wake the writer at once; an error is written at once
 * when nothing is queued before it and stderr has room.
 */
static void emit(enum log_level level, const char *line, size_t len)
{
	pthread_mutex_lock(&lb.lock);
	if (!lb.is_running) {
		if (!lb.is_abandoned)
			write_all(line, len); /* no writer (yet, or any more): straight to stderr */
		pthread_mutex_unlock(&lb.lock);
		return;
	}
	if (level >= LOG_ERROR && !lb.is_writing && lb.len == 0 && lb.dropped == 0 && len <= LOG_CHUNK &&
	    write_now(line, len)) {
		pthread_mutex_unlock(&lb.lock); /* out at once, in order: nothing is buffered or being written */
		return;
	}
	if (lb.dropped > 0 || lb.len + len > LOG_BUF_CAP) {
		lb.dropped++; /* once dropping, until the writer takes the buffer: one gap, where the notice goes */
	} else {
		memcpy(lb.buf + lb.len, line, len);
		lb.len += len;
	}
	if (level >= LOG_WARN && !lb.is_urgent) {
		lb.is_urgent = true;
		pthread_cond_signal(&lb.wake);
	} else if (lb.len >= LOG_FLUSH_AT) {
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
	if ((int)level < atomic_load(&current_level))
		return;
	char line[4096];
	int n = format_prefix(level, line, sizeof(line));
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
