#!/usr/bin/env bash
# Benchmark of the read path: HealthService/GetService of one service under
# h2load against the same SELECT run by pgbench with prepared statements, on
# the same throwaway PostgreSQL (scripts/pgtmp.sh) and the same machine.
# Rounds alternate the order of the two loads; each round prints both rates,
# their ratio and the load average, and the end the median ratio. See
# docs/benchmarks.md ("Read path: GetService against pgbench").
#
# Usage: bench/read_path/run.sh [options]
#   -b, --build-dir DIR   release build tree to configure and build
#                         (default: build-bench)
#       --no-build        use the monitord already in the build tree
#       --monitord PATH   monitord binary to measure (implies --no-build)
#   -r, --rounds N        measured rounds (default 5, at most 50)
#   -T, --seconds N       seconds per load and round (default 10, at most 120)
#       --monitord-arg A  one more argument for monitord (repeatable)
#       --keep            keep the work directory (cluster, logs, reports)
#
# monitord runs with --log-level warn and no rate limit; h2load opens 8
# connections with 4 streams each (-c 8 -m 4 -t 1) and pgbench 8 clients on
# 2 threads (-M prepared -c 8 -j 2). Everything listens on 127.0.0.1 or a
# Unix socket only.

set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD_DIR=$REPO/build-bench
DO_BUILD=1
MONITORD=""
ROUNDS=5
SECONDS_PER_RUN=10
WARMUP_S=3
KEEP=0
MONITORD_EXTRA=()
SERVICE_ID=bench-read-path
METHOD_PATH=/monitoring.v1.HealthService/GetService

die() { echo "read_path: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	case "$1" in
	-b | --build-dir) BUILD_DIR=$(realpath -m "$2"); shift 2 ;;
	--no-build) DO_BUILD=0; shift ;;
	--monitord) MONITORD=$(realpath -m "$2"); DO_BUILD=0; shift 2 ;;
	-r | --rounds) ROUNDS=$2; shift 2 ;;
	-T | --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
	--monitord-arg) MONITORD_EXTRA+=("$2"); shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) die "unknown option \"$1\" (see --help)" ;;
	esac
done
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 50 ] || die "rounds: 1 to 50"
[[ "$SECONDS_PER_RUN" =~ ^[0-9]+$ ]] && [ "$SECONDS_PER_RUN" -ge 1 ] && [ "$SECONDS_PER_RUN" -le 120 ] ||
	die "seconds: 1 to 120"
command -v h2load >/dev/null || die "h2load not found (Debian package nghttp2-client)"
command -v pgbench >/dev/null || die "pgbench not found (Debian package postgresql-15 or postgresql-contrib)"
/usr/bin/python3 -c 'import grpc' 2>/dev/null || die "python3-grpcio not found (checks the answer with a real client)"

if [ "$DO_BUILD" = 1 ]; then
	echo "== building (release) in $BUILD_DIR" >&2
	cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DMON_SANITIZE=OFF -DMON_WERROR=OFF \
		-DMON_BUILD_TESTS=OFF -DMON_BUILD_BENCH=ON >/dev/null
	cmake --build "$BUILD_DIR" -j"$(nproc)" --target monitord >/dev/null
fi
[ -n "$MONITORD" ] || MONITORD=$BUILD_DIR/bin/monitord
[ -x "$MONITORD" ] || die "no monitord at \"$MONITORD\""

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
bench_work read-path-bench

DB=$("$REPO/scripts/pgtmp.sh" start "$WORK/pg")

"$MONITORD" --listen 127.0.0.1:0 --port-file "$WORK/port" --database "$DB" --log-level warn \
	--rate-limit-per-s 0 "${MONITORD_EXTRA[@]}" >"$WORK/monitord.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 600); do
	[ -s "$WORK/port" ] && break
	kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/monitord.log" >&2; die "monitord exited"; }
	sleep 0.1
done
[ -s "$WORK/port" ] || { cat "$WORK/monitord.log" >&2; die "monitord did not start"; }
TARGET=$(head -n 1 "$WORK/port")
[[ "$TARGET" == 127.0.0.1:* ]] || die "monitord listens on \"$TARGET\", not loopback"
TOKEN=$("$MONITORD" admin bootstrap --email bench@example.com --database "$DB" 2>"$WORK/bootstrap.log" | tail -n 1)
[ -n "$TOKEN" ] || { cat "$WORK/bootstrap.log" >&2; die "admin bootstrap failed"; }

# The one row every call reads (monitord has migrated the schema by now: it
# writes the port file after its migrations). No health_check_url, so the
# prober leaves it alone and every answer is the same.
psql -X -q -v ON_ERROR_STOP=1 "$DB" -c "INSERT INTO tb_service_health (id, name, description, service_type,
	status, health_check_url, metrics, uptime_24h, uptime_7d, uptime_30d)
	VALUES ('$SERVICE_ID', 'Read path benchmark', 'one row read by every call', 'api', 'healthy',
	NULL, '{\"region\": \"local\", \"replicas\": 2}', 99.95, 99.9, 99.5)" >/dev/null

# The statement GetService runs (SERVICE_COLUMNS and svc_select in
# server/health/services_api.c), with the id as a parameter, as pgbench's
# prepared mode sends it.
cat >"$WORK/get_service.sql" <<'SQL'
SELECT s.id, s.name, coalesce(s.description, ''), s.service_type, s.status::text, (extract(epoch FROM s.last_check) * 1000000)::bigint, coalesce(s.health_check_url, ''), s.check_interval, s.timeout, s.retry_count, s.metrics::text, s.uptime_24h::float8, s.uptime_7d::float8, s.uptime_30d::float8, (extract(epoch FROM s.created_at) * 1000000)::bigint, (extract(epoch FROM s.updated_at) * 1000000)::bigint FROM tb_service_health s WHERE s.id = :id;
SQL

# One call with a real gRPC client: status OK and the service in the
# answer; its length is what every call of a run must receive. A new key
# works once the identity store has reloaded, so this retries for a while.
RESP_LEN=$(/usr/bin/python3 - "$TARGET" "$METHOD_PATH" "$TOKEN" "$SERVICE_ID" <<'PY'
import sys, time
import grpc
addr, method, token, sid = sys.argv[1:5]
req = b"\x0a" + bytes([len(sid)]) + sid.encode()
deadline = time.monotonic() + 30
with grpc.insecure_channel(addr) as ch:
    call = ch.unary_unary(method)
    while True:
        try:
            reply = call(req, timeout=5, metadata=(("authorization", "Bearer " + token),))
            break
        except grpc.RpcError as e:
            if time.monotonic() > deadline:
                sys.exit("GetService: %s: %s" % (e.code().name, e.details()))
            time.sleep(0.2)
if sid.encode() not in reply:
    sys.exit("GetService: the answer does not carry the service")
print(len(reply))
PY
) || die "GetService does not answer"

# The gRPC frame h2load posts: flag 0, length (4 bytes big endian), then
# GetServiceRequest{service_id} (field 1, length-delimited).
BODY=$WORK/get_service.body
/usr/bin/python3 -c '
import struct, sys
sid = sys.argv[1].encode()
msg = b"\x0a" + bytes([len(sid)]) + sid
sys.stdout.buffer.write(b"\x00" + struct.pack(">I", len(msg)) + msg)' "$SERVICE_ID" >"$BODY"

# h2load_run SECONDS PREFIX: prints calls/s; fails unless every finished
# call got HTTP 200 and one message of the expected length (the calls still
# in flight when the time is up may have received part of theirs).
h2load_run() {
	local secs=$1 prefix=$2
	h2load -c 8 -m 4 -t 1 -D "$secs" \
		--header 'content-type: application/grpc' --header 'te: trailers' \
		--header "authorization: Bearer $TOKEN" \
		-d "$BODY" "http://$TARGET$METHOD_PATH" >"$prefix.out" 2>&1 ||
		{ cat "$prefix.out" >&2; die "h2load failed"; }
	local started done_n ok ok2xx data rps
	started=$(sed -n 's/^requests: .* \([0-9]*\) started.*/\1/p' "$prefix.out")
	done_n=$(sed -n 's/^requests: .* \([0-9]*\) done.*/\1/p' "$prefix.out")
	ok=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$prefix.out")
	ok2xx=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' "$prefix.out")
	data=$(sed -n 's/^traffic: .*(\([0-9]*\)) data.*/\1/p' "$prefix.out")
	rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' "$prefix.out")
	if [ -z "$ok" ] || [ "$ok" = 0 ] || [ "$ok" != "$done_n" ] || [ "$ok2xx" != "$ok" ] ||
		[ "$data" -lt "$((ok * (5 + RESP_LEN)))" ] || [ "$data" -gt "$((started * (5 + RESP_LEN)))" ]; then
		cat "$prefix.out" >&2
		die "h2load: $ok of $done_n calls succeeded, $ok2xx 2xx, $data response bytes" \
			"(want $((ok * (5 + RESP_LEN))) to $((started * (5 + RESP_LEN))))"
	fi
	echo "$rps"
}

# pgbench_run SECONDS PREFIX: prints transactions (= statements) per second.
pgbench_run() {
	local secs=$1 prefix=$2
	pgbench -n -M prepared -c 8 -j 2 -T "$secs" -D id="$SERVICE_ID" -f "$WORK/get_service.sql" "$DB" \
		>"$prefix.out" 2>&1 || { cat "$prefix.out" >&2; die "pgbench failed"; }
	grep -q '^number of failed transactions: 0 ' "$prefix.out" ||
		grep -q '^number of failed transactions: 0$' "$prefix.out" || { cat "$prefix.out" >&2; die "pgbench: failed transactions"; }
	sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$prefix.out"
}

echo "== machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(uname -sr)"
echo "== PostgreSQL $(psql -X -A -t "$DB" -c 'SHOW server_version'), monitord $("$MONITORD" --version | awk '{print $2}')" \
	"($MONITORD) at $TARGET, answer $RESP_LEN bytes"
echo "== h2load -c 8 -m 4 -t 1 -D $SECONDS_PER_RUN; pgbench -M prepared -c 8 -j 2 -T $SECONDS_PER_RUN; $ROUNDS rounds"
echo "== warm-up ($WARMUP_S s each)"
h2load_run "$WARMUP_S" "$WORK/warmup-h2load" >/dev/null
pgbench_run "$WARMUP_S" "$WORK/warmup-pgbench" >/dev/null

RESULTS=$WORK/results.tsv
: >"$RESULTS"
printf '%-6s %-10s %12s %12s %7s  %s\n' round order "GetService/s" "pgbench/s" ratio "load avg (1 5 15 min)"
for round in $(seq "$ROUNDS"); do
	load=$(cut -d' ' -f1-3 /proc/loadavg)
	if [ $((round % 2)) = 1 ]; then
		order="rpc,sql"
		rpc=$(h2load_run "$SECONDS_PER_RUN" "$WORK/r$round-h2load")
		sql=$(pgbench_run "$SECONDS_PER_RUN" "$WORK/r$round-pgbench")
	else
		order="sql,rpc"
		sql=$(pgbench_run "$SECONDS_PER_RUN" "$WORK/r$round-pgbench")
		rpc=$(h2load_run "$SECONDS_PER_RUN" "$WORK/r$round-h2load")
	fi
	ratio=$(awk -v a="$rpc" -v b="$sql" 'BEGIN { printf "%.3f", a / b }')
	printf '%s\t%s\t%s\t%s\n' "$round" "$rpc" "$sql" "$ratio" >>"$RESULTS"
	printf '%-6s %-10s %12.0f %12.0f %7s  %s\n' "$round" "$order" "$rpc" "$sql" "$ratio" "$load"
done

median() {
	cut -f"$1" "$RESULTS" | sort -g | awk '{ v[NR] = $1 }
		END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
printf '== medians: GetService %.0f/s, pgbench %.0f/s, ratio of the medians %.3f, median ratio %.3f\n' \
	"$(median 2)" "$(median 3)" "$(awk -v a="$(median 2)" -v b="$(median 3)" 'BEGIN { print a / b }')" "$(median 4)"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
