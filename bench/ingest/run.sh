#!/usr/bin/env bash
# Benchmark of metric ingest (bench/ingest/ingest_bench.c): a PostgreSQL 15
# of its own at durable defaults (fsync, synchronous_commit and
# full_page_writes on), a release monitord on it, an admin key, then
# ingest_bench: points per second committed through RecordMetrics, through
# libpq COPY and through single-row INSERTs, same concurrency, alternating
# rounds, and WatchMetrics deliveries to 1 and 100 subscribers during
# ingest. See docs/benchmarks.md ("Metric ingest").
#
# Usage: bench/ingest/run.sh [options] [-- ingest_bench options]
#   -b, --build-dir DIR   release build tree to configure and build
#                         (default: build-bench; -DMON_BUILD_BENCH=ON)
#       --no-build        use the binaries already in the build tree
#       --commit REV      build that commit (git archive into
#                         /tmp/ingest-bench-src-SHA, built in its build/
#                         unless -b is given) rather than the working tree
#       --keep            keep the work directory (cluster, server log)
#   Options after -- go to ingest_bench (defaults: --clients 4 --batches 25
#   --batch-points 1000 --insert-rows 2000 --rounds 5
#   --modes rpc,copy,insert,staged,staged-log --watch 1 --watch 100
#   --watch-rounds 2).
#
# Everything listens on 127.0.0.1 or a Unix socket only.

set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD_DIR=$REPO/build-bench
DO_BUILD=1
KEEP=0
COMMIT=""
BUILD_DIR_SET=0
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
BENCH_ARGS=()
while [ $# -gt 0 ]; do
	case "$1" in
	-b | --build-dir) BUILD_DIR=$(realpath -m "$2"); BUILD_DIR_SET=1; shift 2 ;;
	--no-build) DO_BUILD=0; shift ;;
	--commit) COMMIT=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	--) shift; BENCH_ARGS=("$@"); break ;;
	*) sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
	esac
done
[ ${#BENCH_ARGS[@]} -gt 0 ] || BENCH_ARGS=(--clients 4 --batches 25 --batch-points 1000 --insert-rows 2000
	--rounds 5 --modes rpc,copy,insert,staged,staged-log --watch 1 --watch 100 --watch-rounds 2)

SRC=$REPO
SRC_DESC="working tree at $(git -C "$REPO" rev-parse --short HEAD)"
if [ -n "$COMMIT" ]; then
	sha=$(git -C "$REPO" rev-parse --short "$COMMIT")
	SRC=/tmp/ingest-bench-src-$sha
	if [ ! -f "$SRC/CMakeLists.txt" ]; then
		mkdir -p "$SRC"
		git -C "$REPO" archive "$sha" | tar -x -C "$SRC"
	fi
	SRC_DESC="commit $sha"
	[ "$BUILD_DIR_SET" = 1 ] || BUILD_DIR=$SRC/build
fi
[ "$DO_BUILD" = 1 ] || [ -n "$COMMIT" ] || SRC_DESC="binaries already in $BUILD_DIR"
if [ "$DO_BUILD" = 1 ]; then
	echo "== building (release) $SRC_DESC in $BUILD_DIR" >&2
	cmake -S "$SRC" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DMON_SANITIZE=OFF -DMON_WERROR=OFF \
		-DMON_BUILD_TESTS=OFF -DMON_BUILD_BENCH=ON >/dev/null
	cmake --build "$BUILD_DIR" -j"$(nproc)" --target monitord ingest_bench >/dev/null
fi
MONITORD=$BUILD_DIR/bin/monitord
BENCH=$BUILD_DIR/bin/ingest_bench
[ -x "$MONITORD" ] && [ -x "$BENCH" ] || { echo "run.sh: build $MONITORD and $BENCH first" >&2; exit 1; }

WORK=$(mktemp -d /tmp/ingest-bench.XXXXXX)
chmod 755 "$WORK"
PGDIR=$WORK/pg
SERVER_PID=""
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
	if [ -n "$SERVER_PID" ]; then
		kill -TERM "$SERVER_PID" 2>/dev/null || true
		for _ in $(seq 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$SERVER_PID" 2>/dev/null; then
			echo "run.sh: monitord (pid $SERVER_PID) did not stop within 30 s of SIGTERM; killing it" >&2
			kill -KILL "$SERVER_PID" 2>/dev/null || true
		fi
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	as_pg "$PG_BINDIR/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 || true
	if [ "$KEEP" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# PostgreSQL at its durable defaults: only where it listens and how many
# connections it takes are set (fsync, synchronous_commit, full_page_writes
# and wal_sync_method stay as initdb leaves them).
mkdir -p "$PGDIR"
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$PGDIR"; fi
as_pg mkdir -m 0700 "$PGDIR/data"
as_pg "$PG_BINDIR/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 --locale=C --no-instructions \
	>"$WORK/initdb.log" 2>&1 || { cat "$WORK/initdb.log" >&2; exit 1; }
as_pg sh -c "cat >>'$PGDIR/data/postgresql.conf'" <<CONF

# bench/ingest/run.sh: durable defaults; only the socket and connections set
listen_addresses = ''
unix_socket_directories = '$PGDIR'
max_connections = 300
log_min_messages = warning
CONF
as_pg "$PG_BINDIR/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -t 60 start >/dev/null
DB="host=$PGDIR user=postgres dbname=postgres"
settings=$(psql -X -A -t "$DB" -c "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
	WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method', 'shared_buffers',
	               'max_wal_size', 'checkpoint_timeout')")

"$MONITORD" --listen 127.0.0.1:0 --port-file "$WORK/port" --database "$DB" --log-level warn \
	--max-streams-per-caller 0 >"$WORK/monitord.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 600); do [ -s "$WORK/port" ] && break; sleep 0.1; done
[ -s "$WORK/port" ] || { cat "$WORK/monitord.log" >&2; exit 1; }
TARGET=$(cat "$WORK/port")
TOKEN=$("$MONITORD" admin bootstrap --email bench@example.com --database "$DB" 2>/dev/null | tail -n 1)
sleep 1 # the server's identity store reloads the new key

echo "== machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
	"$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr)," \
	"data on $(df -T "$PGDIR" | awk 'NR == 2 {print $2}')"
echo "== PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}'): $settings"
echo "== monitord $("$MONITORD" --version | awk '{print $2}') ($SRC_DESC) at $TARGET"
echo "== ingest_bench ${BENCH_ARGS[*]}"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$BENCH" --target "$TARGET" --token "$TOKEN" --database "$DB" "${BENCH_ARGS[@]}"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== rows: $(psql -X -A -t "$DB" -c "SELECT count(*) FROM tb_performance_metric")"
