#!/usr/bin/env bash
# Benchmark of WatchServiceHealth delivery latency (bench/watch_health/watch_bench.c):
# a throwaway PostgreSQL, one monitord on 127.0.0.1 (no per-caller stream or
# rate limit: every stream is one caller), an admin key, then
# watch_bench once per subscriber count. See docs/benchmarks.md.
#
# Usage: bench/watch_health/run.sh [options]
#   -b, --build-dir DIR     release build tree to configure and build
#                           (default: build-bench; no sanitizers)
#       --monitord PATH     monitord binary (default: BUILD/bin/monitord)
#   -s, --subscribers "N.." subscriber counts (default "1 1000")
#   -e, --events N          measured events per run (default 1000)
#       --client cq|cb|threads the benchmark's stream client (default cq: many
#                           streams per completion queue; cb: streams on 64
#                           callback queues; threads: a thread per stream on
#                           the client runtime, as before)
#       --pollers N         completion-queue threads of the cq client (default 1)
#       --interval-ms MS    measured reports MS apart (default 0: back to back)
#       --backlog N         streams resume N changes back and catch up first,
#                           with Health/Check latency measured meanwhile
#       --fanout            the fan-out figures of docs/benchmarks.md ("Resumable
#                           streams: fan-out to 10,000 subscribers"): 10000
#                           subscribers, 200 events back to back (server CPU per
#                           delivered message, memory per idle subscriber); 10000
#                           subscribers, 60 events one a second (latency); 5000
#                           subscribers catching up 200 changes (Health/Check)
#       --keep              keep the work directory (server log, cluster)
#
# Everything listens on and talks to 127.0.0.1 or a Unix socket only.

set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD_DIR=$REPO/build-bench
MONITORD=""
SUBSCRIBERS="1 1000"
EVENTS=1000
KEEP=0
INTERVAL_MS=0
BACKLOG=0
FANOUT=0
CLIENT=cq
POLLERS=1
while [ $# -gt 0 ]; do
	case "$1" in
	-b | --build-dir) BUILD_DIR=$(realpath -m "$2"); shift 2 ;;
	--monitord) MONITORD=$(realpath "$2"); shift 2 ;;
	-s | --subscribers) SUBSCRIBERS=$2; shift 2 ;;
	-e | --events) EVENTS=$2; shift 2 ;;
	--client) CLIENT=$2; shift 2 ;;
	--pollers) POLLERS=$2; shift 2 ;;
	--interval-ms) INTERVAL_MS=$2; shift 2 ;;
	--backlog) BACKLOG=$2; shift 2 ;;
	--fanout) FANOUT=1; shift ;;
	--keep) KEEP=1; shift ;;
	*) sed -n '2,27p' "$0" >&2; exit 2 ;;
	esac
done

echo "== building (release) in $BUILD_DIR"
cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DMON_SANITIZE=OFF >/dev/null
if [ -n "$MONITORD" ]; then
	cmake --build "$BUILD_DIR" -j"$(nproc)" --target mon_rpc_client mon_proto mon_util >/dev/null
else
	cmake --build "$BUILD_DIR" -j"$(nproc)" --target monitord mon_rpc_client mon_proto mon_util >/dev/null
fi
MONITORD=${MONITORD:-$BUILD_DIR/bin/monitord}
BENCH=$BUILD_DIR/bin/watch_bench
# shellcheck disable=SC2046
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wformat=2 -Wvla -Werror -I"$REPO/src" -I"$BUILD_DIR/gen" -o "$BENCH" "$REPO/bench/watch_health/watch_bench.c" \
	"$BUILD_DIR/src/rpc/libmon_rpc_client.a" "$BUILD_DIR/proto/libmon_proto.a" "$BUILD_DIR/src/util/libmon_util.a" \
	$(pkg-config --libs grpc libprotobuf-c) -lpthread

WORK=$(mktemp -d /tmp/watch-bench.XXXXXX)
chmod 755 "$WORK"
SERVER_PID=""
cleanup() {
	if [ -n "$SERVER_PID" ]; then
		kill -TERM "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	"$REPO/scripts/pgtmp.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
	if [ "$KEEP" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

mkdir -p "$WORK/pg"
chmod 755 "$WORK/pg"
DB=$("$REPO/scripts/pgtmp.sh" start "$WORK/pg")
"$MONITORD" --listen 127.0.0.1:0 --port-file "$WORK/port" --database "$DB" --log-level warn \
	--max-streams-per-caller 0 --rate-limit-per-s 0 >"$WORK/monitord.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 600); do [ -s "$WORK/port" ] && break; sleep 0.1; done
TARGET=$(cat "$WORK/port")
TOKEN=$("$MONITORD" admin bootstrap --email bench@example.com --database "$DB" 2>/dev/null | tail -n 1)

echo "== machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
	"$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr)"
echo "== monitord $("$MONITORD" --version | awk '{print $2}') at $TARGET, PostgreSQL on a Unix socket"
# run SUBSCRIBERS EVENTS INTERVAL_MS BACKLOG
run() {
	echo "== $1 subscriber(s), $2 events $3 ms apart, backlog $4, load average $(cut -d' ' -f1-3 /proc/loadavg)"
	"$BENCH" --target "$TARGET" --token "$TOKEN" --subscribers "$1" --events "$2" --interval-ms "$3" \
		--backlog "$4" --client "$CLIENT" --pollers "$POLLERS" --server-pid "$SERVER_PID"
}
if [ "$FANOUT" = 1 ]; then
	run 10000 200 0 0
	run 10000 60 1000 0
	run 5000 20 0 200
else
	for s in $SUBSCRIBERS; do
		run "$s" "$EVENTS" "$INTERVAL_MS" "$BACKLOG"
	done
fi
