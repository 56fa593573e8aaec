/*
 * Test helper: runs the python3-grpcio health server
 * (test_client_health_server.py) as a child process on a loopback port, so
 * the client runtime is tested against an independent gRPC implementation.
 */
#ifndef MON_TEST_CLIENT_SERVER_H
#define MON_TEST_CLIENT_SERVER_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MON_TEST_HEALTH_SERVER
#error "MON_TEST_HEALTH_SERVER must name test_client_health_server.py"
#endif

struct test_server {
	pid_t pid;
	int stdin_fd; /* closing it stops the server */
	char target[64];
};

/* Starts the server and waits for its port. Returns 0, or -1 when it could not start. */
static int test_server_start(struct test_server *ts)
{
	int in_pipe[2], out_pipe[2];
	if (pipe(in_pipe) != 0)
		return -1;
	if (pipe(out_pipe) != 0) {
		close(in_pipe[0]);
		close(in_pipe[1]);
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		dup2(in_pipe[0], 0);
		dup2(out_pipe[1], 1);
		close(in_pipe[0]);
		close(in_pipe[1]);
		close(out_pipe[0]);
		close(out_pipe[1]);
		execl("/usr/bin/python3", "/usr/bin/python3", MON_TEST_HEALTH_SERVER, (char *)NULL);
		_exit(127);
	}
	close(in_pipe[0]);
	close(out_pipe[1]);
	char line[32];
	size_t len = 0;
	while (len < sizeof(line) - 1) {
		ssize_t n = read(out_pipe[0], line + len, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || line[len] == '\n')
			break;
		len++;
	}
	line[len] = '\0';
	close(out_pipe[0]);
	char *end = NULL;
	long port = strtol(line, &end, 10);
	if (len == 0 || end == line || port <= 0 || port > 65535) {
		close(in_pipe[1]);
		waitpid(pid, NULL, 0);
		return -1;
	}
	ts->pid = pid;
	ts->stdin_fd = in_pipe[1];
	snprintf(ts->target, sizeof(ts->target), "127.0.0.1:%ld", port);
	return 0;
}

static void test_server_stop(struct test_server *ts)
{
	if (ts->pid <= 0)
		return;
	close(ts->stdin_fd);
	int st;
	for (int i = 0; i < 50; i++) {
		if (waitpid(ts->pid, &st, WNOHANG) == ts->pid) {
			ts->pid = 0;
			return;
		}
		usleep(100 * 1000);
	}
	kill(ts->pid, SIGKILL);
	waitpid(ts->pid, &st, 0);
	ts->pid = 0;
}

#endif
