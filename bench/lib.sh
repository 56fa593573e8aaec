# shellcheck shell=bash
# Shared by the bench/*/run.sh scripts (sourced): a work directory with a
# throwaway PostgreSQL in $WORK/pg and at most one monitord ($SERVER_PID),
# both stopped on exit; the directory is removed unless KEEP=1. Needs REPO.

# bench_work NAME: WORK, a new directory /tmp/NAME.XXXXXX, cleaned up on exit.
bench_work() {
	WORK=$(mktemp -d "/tmp/$1.XXXXXX")
	chmod 755 "$WORK"
	SERVER_PID=""
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
}

# bench_stop_monitord: SIGTERM, up to 30 s for the graceful stop, then SIGKILL.
bench_stop_monitord() {
	[ -n "$SERVER_PID" ] || return 0
	kill -TERM "$SERVER_PID" 2>/dev/null || true
	for _ in $(seq 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$SERVER_PID" 2>/dev/null; then
		echo "monitord (pid $SERVER_PID) did not stop within 30 s of SIGTERM; killing it" >&2
		kill -KILL "$SERVER_PID" 2>/dev/null || true
	fi
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=""
}

bench_cleanup() {
	bench_stop_monitord
	"$REPO/scripts/pgtmp.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
	if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
