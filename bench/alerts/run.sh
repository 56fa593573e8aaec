#!/usr/bin/env bash
# Benchmark of alert delivery (bench/alerts/alerts_bench.c): a throwaway
# PostgreSQL, a release monitord on 127.0.0.1 with a secrets key, an admin
# key and a webhook integration whose URL is the bench's loopback receiver,
# then alerts_bench once per idle subscriber count (latency from the
# RecordMetrics call that crosses the threshold to the alert on WatchAlerts,
# server memory per idle subscriber) and once more with the rule notifying
# the webhook (commit to POST received). See docs/benchmarks.md ("Alert
# delivery").
#
# Usage: bench/alerts/run.sh [options]
#   -b, --build-dir DIR     release build tree to configure and build
#                           (default: build-bench; -DMON_BUILD_BENCH=ON)
#       --no-build          use the binaries already in the build tree
#   -s, --idle "N.."        idle subscriber counts (default "1 1000 10000"; the
#                           server takes at most 20,000 WatchAlerts streams,
#                           the measuring one included)
#   -a, --alerts N          measured alerts per run (default 1000)
#       --no-webhook        skip the webhook run
#       --keep              keep the work directory (server log, cluster)
#
# Everything listens on and talks to 127.0.0.1 or a Unix socket only.

set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD_DIR=$REPO/build-bench
DO_BUILD=1
IDLE="1 1000 10000"
ALERTS=1000
WEBHOOK=1
KEEP=0
while [ $# -gt 0 ]; do
	case "$1" in
	-b | --build-dir) BUILD_DIR=$(realpath -m "$2"); shift 2 ;;
	--no-build) DO_BUILD=0; shift ;;
	-s | --idle) IDLE=$2; shift 2 ;;
	-a | --alerts) ALERTS=$2; shift 2 ;;
	--no-webhook) WEBHOOK=0; shift ;;
	--keep) KEEP=1; shift ;;
	*) sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
	esac
done

if [ "$DO_BUILD" = 1 ]; then
	echo "== building (release) in $BUILD_DIR" >&2
	cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DMON_SANITIZE=OFF -DMON_WERROR=OFF \
		-DMON_BUILD_TESTS=OFF -DMON_BUILD_BENCH=ON >/dev/null
	cmake --build "$BUILD_DIR" -j"$(nproc)" --target monitord alerts_bench >/dev/null
fi
MONITORD=$BUILD_DIR/bin/monitord
BENCH=$BUILD_DIR/bin/alerts_bench
[ -x "$MONITORD" ] && [ -x "$BENCH" ] || { echo "run.sh: build $MONITORD and $BENCH first" >&2; exit 1; }

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
bench_work alerts-bench

mkdir -p "$WORK/pg"
chmod 755 "$WORK/pg"
DB=$("$REPO/scripts/pgtmp.sh" start "$WORK/pg")

# The master key that seals the webhook's signing secret, and a free port
# for the bench's receiver.
KEY=$WORK/master.key
(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$KEY")
HOOK_ID=bench-webhook
HOOK_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SEALED=$(printf 'bench-signing-secret' | "$MONITORD" admin seal-secret --integration "$HOOK_ID" \
	--column webhook_secret --secrets-key-file "$KEY")

# A fresh monitord for every run, so that each starts from the same memory.
start_server() {
	rm -f "$WORK/port"
	"$MONITORD" --listen 127.0.0.1:0 --port-file "$WORK/port" --database "$DB" --log-level warn \
		--max-streams-per-caller 0 --rate-limit-per-s 0 --secrets-key-file "$KEY" >>"$WORK/monitord.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 600); do [ -s "$WORK/port" ] && break; sleep 0.1; done
	[ -s "$WORK/port" ] || { cat "$WORK/monitord.log" >&2; exit 1; }
	TARGET=$(cat "$WORK/port")
	sleep 1 # settle: first loads of the rule and identity caches
}

start_server # applies the migrations; the first run uses it
TOKEN=$("$MONITORD" admin bootstrap --email bench@example.com --database "$DB" 2>/dev/null | tail -n 1)
psql -X -q -v ON_ERROR_STOP=1 "$DB" -c "INSERT INTO tb_integration_health (id, name, integration_type,
	configured_at, webhook_url, webhook_secret) VALUES ('$HOOK_ID', 'bench receiver', 'webhook', now(),
	'http://127.0.0.1:$HOOK_PORT/hook', '$SEALED')"
sleep 1 # the server's identity store reloads the new key

echo "== machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
	"$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr)"
echo "== monitord $("$MONITORD" --version | awk '{print $2}') (working tree at" \
	"$(git -C "$REPO" rev-parse --short HEAD)), a fresh one per run, PostgreSQL on a Unix socket"
FAILED=0
for s in $IDLE; do
	[ -n "$SERVER_PID" ] || start_server
	echo "== $s idle subscriber(s) + 1 measuring, $ALERTS alerts, load average $(cut -d' ' -f1-3 /proc/loadavg)"
	"$BENCH" --target "$TARGET" --token "$TOKEN" --idle "$s" --alerts "$ALERTS" --server-pid "$SERVER_PID" ||
		{ echo "== run failed"; FAILED=1; }
	bench_stop_monitord
done
if [ "$WEBHOOK" = 1 ]; then
	[ -n "$SERVER_PID" ] || start_server
	echo "== webhook: 0 idle subscribers + 1 measuring, $ALERTS alerts notifying 127.0.0.1:$HOOK_PORT," \
		"load average $(cut -d' ' -f1-3 /proc/loadavg)"
	"$BENCH" --target "$TARGET" --token "$TOKEN" --alerts "$ALERTS" --server-pid "$SERVER_PID" \
		--webhook-integration "$HOOK_ID" --webhook-port "$HOOK_PORT" || { echo "== run failed"; FAILED=1; }
	bench_stop_monitord
fi
exit $FAILED
