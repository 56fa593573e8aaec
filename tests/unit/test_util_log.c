/*
 * The logger with stderr a pipe: a caller never blocks on a pipe nobody
 * reads, lines that do not fit are dropped and counted, the count is
 * written once the pipe is read again, in order, an error is out at once
 * when nothing is queued, and log_stop returns even when stderr never
 * takes anything.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"

#define LINES 20000 /* about 3 MiB: three times the buffer, fifty times the pipe */

static int saved_stderr = -1;

/* Makes stderr the write end of a new pipe; returns the read end. */
static int stderr_to_pipe(void)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	saved_stderr = dup(STDERR_FILENO);
	assert_true(saved_stderr >= 0);
	assert_true(dup2(fds[1], STDERR_FILENO) >= 0);
	close(fds[1]);
	return fds[0];
}

static void stderr_restore(void)
{
	assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
	close(saved_stderr);
	saved_stderr = -1;
}

struct drain {
	int fd;
	char *text;
	size_t len;
};

static void *drain_main(void *arg)
{
	struct drain *d = arg;
	size_t cap = 1 << 20;
	d->text = malloc(cap);
	for (;;) {
		if (d->len + 65536 + 1 > cap) {
			cap *= 2;
			d->text = realloc(d->text, cap);
		}
		ssize_t n = read(d->fd, d->text + d->len, 65536);
		if (n <= 0)
			break;
		d->len += (size_t)n;
	}
	d->text[d->len] = '\0';
	return NULL;
}

static void test_util_log_full_pipe_drops_and_counts(void **state)
{
	(void)state;
	int rfd = stderr_to_pipe();
	log_set_level(LOG_INFO);
	assert_int_equal(log_start(), 0);
	/* nobody reads the pipe: every call must still return */
	for (int i = 0; i < LINES; i++) {
		if (i % 1000 == 999)
			log_warn("msg=\"filler\" seq=%d pad=\"%0100d\"", i, 0);
		else
			log_info("msg=\"filler\" seq=%d pad=\"%0100d\"", i, 0);
	}
	/* (no assertion while stderr is the unread pipe: cmocka would block writing its message there) */

	/* now read it: what was kept comes out, then how much was not */
	struct drain d = {.fd = rfd};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, drain_main, &d), 0);
	log_stop();
	stderr_restore(); /* closes the last write end: the reader sees the end */
	pthread_join(th, NULL);
	close(rfd);

	/*
	 * Every line kept, in order, and each run of dropped lines replaced by
	 * one notice in its place, counting exactly that run: kept plus
	 * dropped is everything.
	 */
	int kept = 0, last_seq = -1, notices = 0;
	unsigned long long dropped = 0, pending = 0;
	char *p = d.text;
	while (*p != '\0') {
		char *end = strchr(p, '\n');
		assert_non_null(end);
		*end = '\0';
		assert_non_null(strstr(p, "ts="));
		const char *seq = strstr(p, " seq=");
		const char *notice = strstr(p, " dropped=");
		if (seq != NULL) {
			long long n = strtoll(seq + 5, NULL, 10);
			assert_int_equal(n, last_seq + 1 + (long long)pending); /* a gap only where a notice says */
			last_seq = (int)n;
			pending = 0;
			kept++;
		} else if (notice != NULL) {
			assert_non_null(strstr(p, "level=warn"));
			unsigned long long n = strtoull(notice + 9, NULL, 10);
			assert_true(n > 0);
			pending += n;
			dropped += n;
			notices++;
		}
		p = end + 1;
	}
	free(d.text);
	assert_int_equal(last_seq + 1 + (long long)pending, LINES);
	assert_true(notices >= 1);
	assert_true(kept > 0);
	assert_true(dropped > 0);
	assert_int_equal((unsigned long long)kept + dropped, LINES);
}

static void test_util_log_error_written_at_once(void **state)
{
	(void)state;
	int rfd = stderr_to_pipe();
	assert_int_equal(log_start(), 0);
	log_error("msg=\"about to crash\"");
	/* already in the pipe when log_error returns: a crash right after it cannot lose it */
	assert_int_equal(fcntl(rfd, F_SETFL, O_NONBLOCK), 0);
	char buf[512];
	ssize_t n = read(rfd, buf, sizeof(buf) - 1);
	log_stop();
	stderr_restore();
	close(rfd);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "level=error msg=\"about to crash\""));
}

static void test_util_log_stop_with_unread_pipe_returns(void **state)
{
	(void)state;
	int rfd = stderr_to_pipe();
	assert_int_equal(log_start(), 0);
	for (int i = 0; i < LINES; i++)
		log_error("msg=\"filler\" seq=%d pad=\"%0100d\"", i, 0);
	log_stop();                     /* gives up on the pipe after its bounded wait */
	log_info("msg=\"after stop\""); /* and a later line does not block either */
	stderr_restore();
	close(rfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_util_log_full_pipe_drops_and_counts),
	        cmocka_unit_test(test_util_log_error_written_at_once),
	        cmocka_unit_test(test_util_log_stop_with_unread_pipe_returns), /* last: it may leave the logger off */
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
