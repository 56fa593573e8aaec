#!/bin/sh
# A throwaway PostgreSQL 15 cluster for tests and local development.
#
#   pgtmp.sh start DIR   initialise DIR/data if needed, start the server and
#                        print its conninfo ("host=DIR user=postgres dbname=postgres")
#   pgtmp.sh stop DIR    stop the server (-m immediate); nothing to do is fine
#
# The server listens only on a Unix socket in DIR (no TCP port, so clusters in
# different folders never clash), trusts local connections and runs with
# fsync=off and synchronous_commit=off: it is for tests, never for data that
# matters. With PGTMP_DURABLE=1 in the environment when the cluster is first
# initialised, it keeps PostgreSQL's durable defaults instead (fsync,
# synchronous_commit and full_page_writes on), for tests that crash the
# server and count what survived. Both commands are
# idempotent: starting a running cluster reuses it, a cluster left behind by
# an earlier run (even with a stale postmaster.pid) is reused or restarted.
# As root the PostgreSQL binaries run as the postgres user.
set -eu

PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}

usage() {
	echo "usage: $0 start|stop DIR" >&2
	exit 2
}

[ $# -eq 2 ] || usage
cmd=$1
dir=$2
case "$dir" in
/*) ;;
*) dir=$(pwd)/$dir ;;
esac
data=$dir/data

is_root() { [ "$(id -u)" -eq 0 ]; }

as_pg() {
	if is_root; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# Lets the postgres user reach DIR: every parent gets search permission for
# others (mktemp -d makes 0700 folders).
make_traversable() {
	d=$1
	while [ "$d" != "/" ] && [ -n "$d" ]; do
		chmod o+x "$d" 2>/dev/null || true
		d=$(dirname "$d")
	done
}

is_running() {
	[ -f "$data/PG_VERSION" ] && as_pg "$PG_BINDIR/pg_ctl" -D "$data" status >/dev/null 2>&1
}

answers() {
	as_pg "$PG_BINDIR/pg_isready" -q -h "$dir" -U postgres -d postgres -t 2 >/dev/null 2>&1
}

# A live (not zombie) postgres process: a postmaster killed in a crash stays
# a zombie until reaped, and pg_ctl status still counts it as running.
is_live_postgres() {
	pid=$1
	[ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
	state=$(sed 's/.*) //' "/proc/$pid/stat" | cut -c1)
	[ "$state" != Z ] && [ "$state" != X ] || return 1
	[ "$(cut -c1-8 "/proc/$pid/comm" 2>/dev/null)" = postgres ]
}

postmaster_pid() {
	head -n 1 "$data/postmaster.pid" 2>/dev/null || true
}

conninfo() {
	echo "host=$dir user=postgres dbname=postgres"
}

start() {
	mkdir -p "$dir"
	if is_root; then
		make_traversable "$dir"
		chown postgres:postgres "$dir"
	fi
	if [ ! -f "$data/PG_VERSION" ]; then
		rm -rf "$data"
		as_pg mkdir -m 0700 "$data"
		as_pg "$PG_BINDIR/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C \
			--no-sync --no-instructions >"$dir/initdb.log" 2>&1 || {
			cat "$dir/initdb.log" >&2
			exit 1
		}
		if [ "${PGTMP_DURABLE:-0}" = 1 ]; then
			durability="fsync = on
synchronous_commit = on
full_page_writes = on"
		else
			durability="fsync = off
synchronous_commit = off
full_page_writes = off"
		fi
		as_pg sh -c "cat >>'$data/postgresql.conf'" <<CONF

# throwaway cluster settings (scripts/pgtmp.sh)
listen_addresses = ''
unix_socket_directories = '$dir'
$durability
max_connections = 300
shared_buffers = 32MB
log_min_messages = warning
CONF
	fi
	if is_running; then
		if answers; then
			conninfo
			return 0
		fi
		# A postmaster.pid naming a process that does not answer: a server
		# still starting or stuck (stop it), a zombie, or a reused pid.
		if is_live_postgres "$(postmaster_pid)"; then
			as_pg "$PG_BINDIR/pg_ctl" -D "$data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
		fi
	fi
	if [ -f "$data/postmaster.pid" ] && ! is_live_postgres "$(postmaster_pid)"; then
		rm -f "$data/postmaster.pid" "$dir/.s.PGSQL.5432.lock"
	fi
	as_pg "$PG_BINDIR/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start >/dev/null || {
		tail -n 20 "$dir/server.log" >&2 || true
		exit 1
	}
	conninfo
}

stop() {
	if is_running && is_live_postgres "$(postmaster_pid)"; then
		# A server already going down (crashed, or stopped by someone else)
		# may be gone before pg_ctl finds it: that is a success too.
		if ! as_pg "$PG_BINDIR/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null 2>&1; then
			if is_running && is_live_postgres "$(postmaster_pid)"; then
				echo "pgtmp.sh: could not stop the server in $dir" >&2
				return 1
			fi
		fi
	fi
	return 0
}

case "$cmd" in
start) start ;;
stop) stop ;;
*) usage ;;
esac
