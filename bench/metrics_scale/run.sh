#!/usr/bin/env bash
# Scale benchmark of the metric rollups and the long-range queries: for each
# size, points generated in SQL (6 days ending now, one point a minute per
# endpoint, as many endpoints as the size needs), a full rollup rebuild by
# monitord's own maintenance job (timed from its log line), then each query
# timed over real gRPC (bench/metrics_scale/query.py, median of N runs):
# QueryMetrics over 6 days at AUTO (P95), QueryMetrics over 1 hour at RAW,
# GetPerformanceSummary over 24 hours and GetPerformanceTrend over 24 hours.
# Then, optionally, RecordMetrics flat out (bench/ingest's ingest_bench,
# rpc mode) with the rollup lag sampled every second. See
# docs/benchmarks.md ("Metrics at scale").
#
# Usage: bench/metrics_scale/run.sh [options]
#   -b, --build-dir DIR   release build tree to configure and build
#                         (default: build-bench; -DMON_BUILD_BENCH=ON)
#       --no-build        use the binaries already in the build tree
#   -s, --sizes LIST      millions of points, comma-separated (default 1,10,30)
#   -r, --runs N          timed calls per query (default 7)
#       --sustain-batches N  then RecordMetrics flat out: ingest_bench, rpc
#                         mode, one round of 4 clients x N batches x 1000
#                         points, monitord restarted with the default rollup
#                         interval (10 s), the rollup lag sampled every
#                         second (default 0: none)
#       --keep            keep the work directory (cluster, server log)
#
# PostgreSQL is scripts/pgtmp.sh's throwaway cluster (fsync off) with
# shared_buffers 1GB and work_mem 64MB. monitord runs the rollup job every
# second (--metrics-rollup-interval-ms 1000). Everything listens on
# 127.0.0.1 or a Unix socket only.

set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BUILD_DIR=$REPO/build-bench
DO_BUILD=1
SIZES=1,10,30
RUNS=7
SUSTAIN_BATCHES=0
KEEP=0
die() { echo "metrics_scale: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
	case "$1" in
	-b | --build-dir) BUILD_DIR=$(realpath -m "$2"); shift 2 ;;
	--no-build) DO_BUILD=0; shift ;;
	-s | --sizes) SIZES=$2; shift 2 ;;
	-r | --runs) RUNS=$2; shift 2 ;;
	--sustain-batches) SUSTAIN_BATCHES=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) die "unknown option \"$1\" (see --help)" ;;
	esac
done
[[ "$SIZES" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "sizes: comma-separated whole millions"
[[ "$RUNS" =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] && [ "$RUNS" -le 100 ] || die "runs: 1 to 100"
[[ "$SUSTAIN_BATCHES" =~ ^[0-9]+$ ]] || die "sustain-batches: a number"
/usr/bin/python3 -c 'import grpc, grpc_tools' 2>/dev/null || die "python3-grpcio and python3-grpc-tools needed"

if [ "$DO_BUILD" = 1 ]; then
	echo "== building (release) in $BUILD_DIR" >&2
	cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DMON_SANITIZE=OFF -DMON_WERROR=OFF \
		-DMON_BUILD_TESTS=OFF -DMON_BUILD_BENCH=ON >/dev/null
	cmake --build "$BUILD_DIR" -j2 --target monitord monctl ingest_bench >/dev/null
fi
MONITORD=$BUILD_DIR/bin/monitord
INGEST_BENCH=$BUILD_DIR/bin/ingest_bench
MONCTL=$BUILD_DIR/bin/monctl
[ -x "$MONCTL" ] || die "no monctl at \"$MONCTL\""
[ -x "$MONITORD" ] || die "no monitord at \"$MONITORD\""

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
bench_work metrics-scale-bench

DB=$("$REPO/scripts/pgtmp.sh" start "$WORK/pg")
psql -X -q -v ON_ERROR_STOP=1 "$DB" -c "ALTER SYSTEM SET shared_buffers = '1GB'" \
	-c "ALTER SYSTEM SET work_mem = '64MB'" -c "ALTER SYSTEM SET max_wal_size = '8GB'" >/dev/null
"$REPO/scripts/pgtmp.sh" stop "$WORK/pg" >/dev/null
DB=$("$REPO/scripts/pgtmp.sh" start "$WORK/pg")
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$DB" "$@"; }

# start_monitord INTERVAL_MS: monitord with that rollup interval, its log in $WORK/monitord.log.
start_monitord() {
	rm -f "$WORK/port"
	"$MONITORD" --listen 127.0.0.1:0 --port-file "$WORK/port" --database "$DB" --log-level info \
		--rate-limit-per-s 0 --max-streams-per-caller 0 --metrics-rollup-interval-ms "$1" \
		>>"$WORK/monitord.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 600); do
		[ -s "$WORK/port" ] && break
		kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/monitord.log" >&2; die "monitord exited"; }
		sleep 0.1
	done
	[ -s "$WORK/port" ] || die "monitord did not start"
	TARGET=$(head -n 1 "$WORK/port")
}
# wait_ready: until monitord answers a call with the admin key (a new key reaches it through its key cache).
wait_ready() {
	for _ in $(seq 300); do
		"$MONCTL" --target "$TARGET" --api-key "$TOKEN" call monitoring.v1.AccessService/GetCallerIdentity '{}' \
			>/dev/null 2>&1 && return 0
		sleep 0.1
	done
	die "monitord did not accept the admin key within 30 s"
}
start_monitord 1000
[[ "$TARGET" == 127.0.0.1:* ]] || die "monitord listens on \"$TARGET\", not loopback"
TOKEN=$("$MONITORD" admin bootstrap --email bench@example.com --database "$DB" 2>"$WORK/bootstrap.log" | tail -n 1)
[ -n "$TOKEN" ] || { cat "$WORK/bootstrap.log" >&2; die "admin bootstrap failed"; }
wait_ready

echo "== machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
	"$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr)"
echo "== PostgreSQL $(q -c 'SHOW server_version'): $(q -c "SELECT string_agg(name || '=' || setting ||
	coalesce(unit, ''), ' ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers', 'work_mem', 'fsync',
	'max_parallel_workers_per_gather')")"
echo "== monitord $("$MONITORD" --version | awk '{print $2}') ($MONITORD) at $TARGET, $(git -C "$REPO" rev-parse --short HEAD)"

# Partitions for the past days the points and their rollups land in (the job
# makes them ahead, not behind; without them the rows go to the DEFAULT
# partitions, whose inserts are slower).
q -c "SET client_min_messages = warning" -c "SELECT sum(mon_create_partition('tb_performance_metric',
	mon_partition_start(now() - d * interval '1 day', interval '1 day'), interval '1 day'))
	FROM generate_series(0, 7) d" -c "SELECT sum(mon_create_partition('tb_performance_metric_5min',
	mon_partition_start(now() - d * interval '7 days', interval '7 days'), interval '7 days'))
	FROM generate_series(0, 2) d" -c "SELECT sum(mon_create_partition('tb_performance_metric_hourly',
	mon_partition_start(now() - d * interval '1 month', interval '1 month'), interval '1 month'))
	FROM generate_series(0, 1) d" >/dev/null

printf '%-9s %-9s %-7s %-22s %-22s %-16s %-16s %-16s %-16s %s\n' points endpoints load_s \
	"rebuild s (points/s)" "again s (points/s)" "qm_6d_auto" "qm_1h_raw" "summary_24h" "trend_24h" \
	"load avg (1 5 15 min)"
for size in ${SIZES//,/ }; do
	points=$((size * 1000000))
	endpoints=$(((points + 8639) / 8640))
	q -c "TRUNCATE tb_performance_metric, tb_performance_metric_5min, tb_performance_metric_hourly" >/dev/null
	t0=$(date +%s.%N)
	# One day per statement: 1440 minutes x the endpoints, values varying by minute and endpoint.
	for day in 5 4 3 2 1 0; do
		q -c "INSERT INTO tb_performance_metric (time, metric_name, endpoint, method, status_code, p50, p95, p99,
			mean, min, max, request_count, error_count, error_rate, throughput)
			SELECT date_bin('1 minute', now(), TIMESTAMPTZ 'epoch') - (($day * 1440 + m) * interval '1 minute'),
			 'http_request', '/api/endpoint/' || e, 'GET', 200, p50, round(p50 * 2.5, 2), round(p50 * 4, 2),
			 round(p50 * 1.2, 2), round(p50 / 3, 2), round(p50 * 6, 2), req, err,
			 round(err * 100.0 / req, 2), round(req / 60.0, 2)
			FROM generate_series(0, 1439) m, generate_series(1, $endpoints) e,
			 LATERAL (SELECT round((10 + ((m * 31 + e * 17) % 400) / 4.0)::numeric, 2) AS p50,
			          100 + (m * 7 + e * 13) % 900 AS req, (m + e) % 11 AS err) v
			WHERE ($day * 1440 + m) * $endpoints + e <= $points" >/dev/null
	done
	q -c "VACUUM ANALYZE tb_performance_metric" >/dev/null
	load_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
	stored=$(q -c "SELECT count(*) FROM tb_performance_metric")

	# Full rebuilds: the job finds the log not whole and re-aggregates raw
	# retention; first into empty rollups, then over rollups already right
	# (what follows a crash of PostgreSQL: the rollups survive, the log not).
	rebuild() {
		local before line
		before=$(grep -c 'full_refresh=true' "$WORK/monitord.log" || true)
		q -c "DELETE FROM tb_metric_ingest_log_intact" >/dev/null
		for _ in $(seq 36000); do
			[ "$(grep -c 'full_refresh=true' "$WORK/monitord.log" || true)" -gt "$before" ] && break
			sleep 0.1
		done
		line=$(grep 'full_refresh=true' "$WORK/monitord.log" | tail -n 1)
		sed -n 's/.*duration_ms=\([0-9]*\).*/\1/p' <<<"$line"
	}
	rebuild_ms=$(rebuild)
	[ -n "$rebuild_ms" ] || die "no full rebuild logged"
	q -c "VACUUM ANALYZE tb_performance_metric_5min" -c "VACUUM ANALYZE tb_performance_metric_hourly" >/dev/null
	rebuild2_ms=$(rebuild)
	[ -n "$rebuild2_ms" ] || die "no full rebuild logged"
	q -c "ANALYZE tb_performance_metric_5min" -c "ANALYZE tb_performance_metric_hourly" >/dev/null
	rate=$(awk -v n="$stored" -v ms="$rebuild_ms" 'BEGIN { printf "%.0f", n / (ms / 1000.0) }')
	rate2=$(awk -v n="$stored" -v ms="$rebuild2_ms" 'BEGIN { printf "%.0f", n / (ms / 1000.0) }')

	load=$(cut -d' ' -f1-3 /proc/loadavg)
	end=$(q -c "SELECT extract(epoch FROM max(time)) + 1 FROM tb_performance_metric")
	times=$(/usr/bin/python3 "$REPO/bench/metrics_scale/query.py" "$TARGET" "$TOKEN" "$RUNS" "$end")
	printf '%-9s %-9s %-7s %-22s %-22s %s   %s\n' "$stored" "$endpoints" "$load_s" \
		"$(awk -v ms="$rebuild_ms" -v r="$rate" 'BEGIN { printf "%.1f (%d)", ms / 1000, r }')" \
		"$(awk -v ms="$rebuild2_ms" -v r="$rate2" 'BEGIN { printf "%.1f (%d)", ms / 1000, r }')" "$times" "$load"
done
echo "== (query columns: median ms, min-max over $RUNS calls)"

if [ "$SUSTAIN_BATCHES" -gt 0 ]; then
	[ -x "$INGEST_BENCH" ] || die "no ingest_bench at \"$INGEST_BENCH\""
	bench_stop_monitord
	start_monitord 10000
	wait_ready
	echo "== RecordMetrics flat out (ingest_bench --modes rpc --clients 4 --batches $SUSTAIN_BATCHES" \
		"--batch-points 1000 --rounds 1), rollup interval 10 s, lag sampled every second;" \
		"load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
	"$INGEST_BENCH" --target "$TARGET" --token "$TOKEN" --database "$DB" --modes rpc --clients 4 \
		--batches "$SUSTAIN_BATCHES" --batch-points 1000 --rounds 1 >"$WORK/ingest.out" 2>&1 &
	INGEST_PID=$!
	: >"$WORK/lag.tsv"
	# Lag: how long the oldest batch not yet aggregated has been committed (0 when none).
	while kill -0 "$INGEST_PID" 2>/dev/null; do
		q -c "SELECT extract(epoch FROM coalesce(clock_timestamp() - min(committed_at), '0'))::numeric(10,2)
			FROM tb_metric_ingest_log WHERE seq > (SELECT watermark_seq FROM tb_metric_rollup_state)" >>"$WORK/lag.tsv"
		sleep 1
	done
	wait "$INGEST_PID" || { cat "$WORK/ingest.out" >&2; die "ingest_bench failed"; }
	grep -v '^$' "$WORK/ingest.out" | tail -n 8
	sort -g "$WORK/lag.tsv" | awk '{ v[NR] = $1 } END { p = int(NR * 0.95); if (p < 1) p = 1;
		printf "== rollup lag over %d samples (s): median %.2f, p95 %.2f, max %.2f (two intervals: 20)\n",
		NR, v[int((NR + 1) / 2)], v[p], v[NR] }'
	grep 'metric maintenance' "$WORK/monitord.log" | tail -n 2
fi
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
