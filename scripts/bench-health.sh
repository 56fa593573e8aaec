#!/usr/bin/env bash
# Benchmark of the RPC runtime: h2load against grpc.health.v1.Health/Check
# (a unary call with no database work) on monitord and, in the same run and
# with the same load, on gRPC C++'s default health service
# (bench/health_ref/ref_health_server.cc). Rounds alternate between the two
# servers; the table reports medians. See docs/benchmarks.md.
#
# Usage: scripts/bench-health.sh [options]
#   -b, --build-dir DIR    build tree (default: build). Configured with
#                          -DMON_BUILD_BENCH=ON and built unless --no-build;
#                          if the whole tree does not build, only the
#                          reference server is built (from bench/ alone).
#       --no-build         use the binaries already in the build tree
#   -r, --rounds N         measured rounds per server and load (default 5)
#   -l, --loads "C,M,N ..." loads as h2load -c C -m M -n N
#                          (default "1,1,20000 4,10,100000 16,100,200000")
#       --monitord PATH    monitord binary (default: BUILD/bin/monitord)
#       --database CONNINFO  passed to monitord (default: its embedded
#                          PostgreSQL in a temporary data directory)
#       --monitord-arg ARG one more argument for monitord (repeatable), e.g.
#                          --monitord-arg --log-level=warn
#       --reference-only   measure the reference server alone
#       --calibrate        run a second reference server in monitord's
#                          place: the ratio then shows the noise of the
#                          machine (ideally 1.00)
#       --keep             keep the work directory (h2load logs, server logs)
#
# Everything listens on and talks to 127.0.0.1 only.

set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=$REPO/build
DO_BUILD=1
ROUNDS=5
LOADS="1,1,20000 4,10,100000 16,100,200000"
MONITORD=""
DATABASE=""
MONITORD_EXTRA=()
REFERENCE_ONLY=0
CALIBRATE=0
KEEP=0
WARMUP_REQUESTS=20000
METHOD_PATH=/grpc.health.v1.Health/Check

die() { echo "bench-health: $*" >&2; exit 1; }
note() { echo "bench-health: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    -b|--build-dir) BUILD_DIR=$(realpath -m "$2"); shift 2 ;;
    --no-build) DO_BUILD=0; shift ;;
    -r|--rounds) ROUNDS=$2; shift 2 ;;
    -l|--loads) LOADS=$2; shift 2 ;;
    --monitord) MONITORD=$(realpath -m "$2"); shift 2 ;;
    --database) DATABASE=$2; shift 2 ;;
    --monitord-arg) MONITORD_EXTRA+=("$2"); shift 2 ;;
    --reference-only) REFERENCE_ONLY=1; shift ;;
    --calibrate) CALIBRATE=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown option \"$1\" (see --help)" ;;
  esac
done
case "$ROUNDS" in ''|*[!0-9]*|0) die "rounds: must be a positive integer" ;; esac
for load in $LOADS; do
  [[ "$load" =~ ^[0-9]+,[0-9]+,[0-9]+$ ]] || die "load \"$load\": must be C,M,N"
done
command -v h2load >/dev/null || die "h2load not found (Debian package nghttp2-client)"

WORK=$(mktemp -d -t bench-health.XXXXXX)
chmod 0755 "$WORK"   # a server that drops privileges must reach its data dir
REF_PID=""
MON_PID=""

stop_server() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    note "pid $pid did not stop within 10 s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  stop_server "$MON_PID"
  stop_server "$REF_PID"
  if [ "$KEEP" = 1 ]; then
    note "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build -----------------------------------------------------------------

REF_BIN=""
if [ "$DO_BUILD" = 1 ]; then
  note "building in $BUILD_DIR"
  configure_args=(-DMON_BUILD_BENCH=ON)
  [ -f "$BUILD_DIR/CMakeCache.txt" ] || configure_args+=(-DMON_BUILD_TESTS=OFF)
  if cmake -S "$REPO" -B "$BUILD_DIR" "${configure_args[@]}" >"$WORK/build.log" 2>&1 &&
     cmake --build "$BUILD_DIR" -j"$(nproc)" >>"$WORK/build.log" 2>&1; then
    REF_BIN=$BUILD_DIR/bin/ref_health_server
  else
    note "the full build failed (last lines below); building the reference server alone"
    tail -n 15 "$WORK/build.log" >&2
    if ! { cmake -S "$REPO/bench" -B "$BUILD_DIR/bench-only" >>"$WORK/build.log" 2>&1 &&
           cmake --build "$BUILD_DIR/bench-only" -j"$(nproc)" >>"$WORK/build.log" 2>&1; }; then
      tail -n 30 "$WORK/build.log" >&2
      die "could not build ref_health_server"
    fi
    REF_BIN=$BUILD_DIR/bench-only/bin/ref_health_server
  fi
else
  for candidate in "$BUILD_DIR/bin/ref_health_server" "$BUILD_DIR/bench-only/bin/ref_health_server"; do
    if [ -x "$candidate" ]; then REF_BIN=$candidate; break; fi
  done
  [ -n "$REF_BIN" ] || die "no ref_health_server in \"$BUILD_DIR\" (build with -DMON_BUILD_BENCH=ON)"
fi
[ -x "$REF_BIN" ] || die "\"$REF_BIN\" was not built"

[ -n "$MONITORD" ] || MONITORD=$BUILD_DIR/bin/monitord
HAVE_MONITORD=0
SECOND_NAME=monitord
if [ "$CALIBRATE" = 1 ]; then
  HAVE_MONITORD=1
  SECOND_NAME="reference, 2nd instance"
elif [ "$REFERENCE_ONLY" = 0 ]; then
  if [ -x "$MONITORD" ]; then
    HAVE_MONITORD=1
  else
    note "no monitord at \"$MONITORD\": measuring the reference server alone"
  fi
fi

# --- servers ---------------------------------------------------------------

# wait_for_port FILE PID SECONDS: prints the port once FILE holds
# "[host:]port", fails if PID exits first or time runs out.
wait_for_port() {
  local file=$1 pid=$2 tenths=$(($3 * 10)) content
  for _ in $(seq "$tenths"); do
    if [ -s "$file" ]; then
      content=$(head -n 1 "$file")
      if [[ "$content" =~ ^(.*:)?([0-9]+)$ ]]; then
        echo "${BASH_REMATCH[2]}"
        return 0
      fi
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

"$REF_BIN" 127.0.0.1:0 >"$WORK/ref.port" 2>"$WORK/ref.log" &
REF_PID=$!
REF_PORT=$(wait_for_port "$WORK/ref.port" "$REF_PID" 10) ||
  { cat "$WORK/ref.log" >&2; die "the reference server did not start"; }
REF_ADDR=127.0.0.1:$REF_PORT
note "reference server (pid $REF_PID) on $REF_ADDR"

if [ "$CALIBRATE" = 1 ]; then
  "$REF_BIN" 127.0.0.1:0 >"$WORK/monitord.port" 2>"$WORK/monitord.log" &
  MON_PID=$!
  MON_PORT=$(wait_for_port "$WORK/monitord.port" "$MON_PID" 10) ||
    { cat "$WORK/monitord.log" >&2; die "the second reference server did not start"; }
  MON_ADDR=127.0.0.1:$MON_PORT
  note "second reference server (pid $MON_PID) on $MON_ADDR"
elif [ "$HAVE_MONITORD" = 1 ]; then
  mon_args=(--listen 127.0.0.1:0 --port-file "$WORK/monitord.port" --data-dir "$WORK/monitord-data")
  [ -z "$DATABASE" ] || mon_args+=(--database "$DATABASE")
  mon_args+=("${MONITORD_EXTRA[@]}")
  mkdir -p "$WORK/monitord-data"
  "$MONITORD" "${mon_args[@]}" >"$WORK/monitord.log" 2>&1 &
  MON_PID=$!
  MON_PORT=$(wait_for_port "$WORK/monitord.port" "$MON_PID" 120) ||
    { tail -n 30 "$WORK/monitord.log" >&2; die "monitord did not start"; }
  MON_ADDR=127.0.0.1:$MON_PORT
  note "monitord (pid $MON_PID) on $MON_ADDR"
fi

# --- checks with a real gRPC client ------------------------------------------

# check_serving ADDR: Check calls with an independent gRPC client until one
# ends with status OK and answers SERVING (a server may answer NOT_SERVING
# while it starts, e.g. monitord until its schema is migrated); fails after
# SERVING_WAIT_S seconds.
SERVING_WAIT_S=120
check_serving() {
  local addr=$1 buf_bin=""
  if /usr/bin/python3 -c 'import grpc' 2>/dev/null; then
    /usr/bin/python3 - "$addr" "$METHOD_PATH" "$SERVING_WAIT_S" <<'PY'
import sys
import time
import grpc

addr, method, wait_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + wait_s
with grpc.insecure_channel(addr) as channel:
    # Raw bytes both ways: the request is an empty HealthCheckRequest
    # (service ""); any status but OK raises.
    check = channel.unary_unary(method)
    while True:
        try:
            reply = check(b"", timeout=10)
            # HealthCheckResponse{status: SERVING}: field 1, varint 1.
            if reply == b"\x08\x01":
                break
            last = "HealthCheckResponse bytes %r" % reply
        except grpc.RpcError as e:
            last = "status %s: %s" % (e.code().name, e.details())
        if time.monotonic() > deadline:
            sys.exit("%s: no SERVING answer within %g s, last: %s" % (addr, wait_s, last))
        time.sleep(0.2)
print("grpc status OK, SERVING")
PY
    return
  fi
  if [ -x "$REPO/node_modules/.bin/buf" ]; then buf_bin=$REPO/node_modules/.bin/buf;
  elif command -v buf >/dev/null; then buf_bin=$(command -v buf); fi
  [ -n "$buf_bin" ] || die "need python3-grpcio or buf to check the servers with a real client"
  for _ in $(seq $((SERVING_WAIT_S * 5))); do
    if "$buf_bin" curl --protocol grpc --http2-prior-knowledge \
         --schema /usr/share/grpc-proto/grpc/health/v1/health.proto -d '{}' \
         "http://$addr$METHOD_PATH" 2>/dev/null | grep -q '"SERVING"'; then
      echo "grpc status OK, SERVING"
      return 0
    fi
    sleep 0.2
  done
  die "$addr: no SERVING answer within $SERVING_WAIT_S s"
}

verdict=$(check_serving "$REF_ADDR") || die "reference: the health check failed"
note "reference: $verdict"
if [ "$HAVE_MONITORD" = 1 ]; then
  verdict=$(check_serving "$MON_ADDR") || die "$SECOND_NAME: the health check failed"
  note "$SECOND_NAME: $verdict"
fi

# --- load ------------------------------------------------------------------

# The gRPC frame h2load posts: flag 0 (uncompressed), length 0 (4 bytes, big
# endian), then the serialized HealthCheckRequest{service: ""}, which is
# empty.
BODY=$WORK/check.body
printf '\000\000\000\000\000' >"$BODY"
[ "$(od -An -tx1 "$BODY" | tr -d ' \n')" = "0000000000" ] || die "bad request body"

# h2load_run ADDR C M N PREFIX: one bounded h2load run; leaves the report in
# PREFIX.out and per-request timings in PREFIX.tsv; fails unless every call
# got HTTP 200 and exactly one 7-byte gRPC message (prefix + SERVING).
h2load_run() {
  local addr=$1 c=$2 m=$3 n=$4 prefix=$5
  h2load -n "$n" -c "$c" -m "$m" -t 1 \
    --header 'content-type: application/grpc' --header 'te: trailers' \
    -d "$BODY" --log-file "$prefix.tsv" "http://$addr$METHOD_PATH" >"$prefix.out" 2>&1 ||
    { cat "$prefix.out" >&2; die "h2load failed against $addr"; }
  local ok ok2xx data
  ok=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$prefix.out")
  ok2xx=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' "$prefix.out")
  data=$(sed -n 's/^traffic: .*(\([0-9]*\)) data.*/\1/p' "$prefix.out")
  if [ "$ok" != "$n" ] || [ "$ok2xx" != "$n" ] || [ "$data" != "$((7 * n))" ]; then
    cat "$prefix.out" >&2
    die "$addr: $ok of $n calls succeeded, $ok2xx 2xx, $data response bytes (want $((7 * n)))"
  fi
}

# summarize PREFIX: prints "calls/s p50 p90 p99" (latencies in ms).
summarize() {
  local prefix=$1 rps
  rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' "$prefix.out")
  awk -F'\t' '$2 == 200 { print $3 }' "$prefix.tsv" | sort -n |
    awk -v rps="$rps" '
      { v[NR] = $1 }
      function pct(p,  i) { i = int(NR * p + 0.999999); if (i < 1) i = 1; return v[i] / 1000 }
      END { printf "%.0f %.3f %.3f %.3f\n", rps, pct(0.50), pct(0.90), pct(0.99) }'
}

servers="ref"
[ "$HAVE_MONITORD" = 0 ] || servers="ref monitord"
addr_of() { if [ "$1" = ref ]; then echo "$REF_ADDR"; else echo "$MON_ADDR"; fi; }

for s in $servers; do
  note "warm-up: $s"
  h2load_run "$(addr_of "$s")" 4 10 "$WARMUP_REQUESTS" "$WORK/warmup-$s"
done

RESULTS=$WORK/results.tsv
: >"$RESULTS"
for round in $(seq "$ROUNDS"); do
  order=$servers
  [ $((round % 2)) = 1 ] || order=$(echo "$servers" | tr ' ' '\n' | tac | tr '\n' ' ')
  for load in $LOADS; do
    IFS=, read -r c m n <<<"$load"
    for s in $order; do
      prefix=$WORK/run-$s-c$c-m$m-r$round
      h2load_run "$(addr_of "$s")" "$c" "$m" "$n" "$prefix"
      line=$(summarize "$prefix")
      printf '%s\t%s\t%s\t%s\n' "$s" "$load" "$round" "${line// /$'\t'}" >>"$RESULTS"
      note "round $round/$ROUNDS -c $c -m $m -n $n $s: $line"
    done
  done
done

# --- report ----------------------------------------------------------------

# median COLUMN SERVER LOAD: median over rounds of one results column.
median() {
  awk -F'\t' -v col="$1" -v s="$2" -v l="$3" '$1 == s && $2 == l { print $col }' "$RESULTS" |
    sort -g | awk '{ v[NR] = $1 }
      END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
rounds_of() {
  awk -F'\t' -v s="$1" -v l="$2" '$1 == s && $2 == l { printf "%s%s", sep, $4; sep = " " }' "$RESULTS"
}

grpc_version=$(pkg-config --modversion grpc++ 2>/dev/null || echo unknown)
echo
echo "grpc.health.v1.Health/Check, h2load $(h2load --version | awk '{ print $2; exit }'), $ROUNDS rounds, medians"
echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), Linux $(uname -r), gRPC C++ $grpc_version"
echo
echo "| load (h2load) | server | calls/s | p50 ms | p90 ms | p99 ms | calls/s per round |"
echo "|---|---|---:|---:|---:|---:|---|"
for load in $LOADS; do
  IFS=, read -r c m n <<<"$load"
  for s in ref monitord; do
    if [ "$s" = ref ]; then name="gRPC C++ default health"; else name=$SECOND_NAME; fi
    if ! grep -q "^$s"$'\t' "$RESULTS"; then
      echo "| -c $c -m $m -n $n | $name | not measured | | | | |"
      continue
    fi
    printf '| -c %s -m %s -n %s | %s | %.0f | %.3f | %.3f | %.3f | %s |\n' "$c" "$m" "$n" "$name" \
      "$(median 4 "$s" "$load")" "$(median 5 "$s" "$load")" "$(median 6 "$s" "$load")" \
      "$(median 7 "$s" "$load")" "$(rounds_of "$s" "$load")"
  done
done
echo
if [ "$HAVE_MONITORD" = 1 ]; then
  # Two views of the same runs: the ratio of the medians, and the median of
  # the ratios within each round (the two runs of a round are back to back,
  # so background load that drifts between rounds cancels out).
  echo "ratio $SECOND_NAME/reference of calls/s (ratio of medians; median of per-round ratios):"
  for load in $LOADS; do
    IFS=, read -r c m n <<<"$load"
    paired=$(awk -F'\t' -v l="$load" '$2 == l { rps[$1, $3] = $4; r[$3] = 1 }
        END { for (i in r) print rps["monitord", i] / rps["ref", i] }' "$RESULTS" |
      sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    awk -v a="$(median 4 monitord "$load")" -v b="$(median 4 ref "$load")" -v p="$paired" \
      -v l="-c $c -m $m" 'BEGIN { printf "  %-16s %.2f  %.2f\n", l, a / b, p }'
  done
else
  echo "ratio monitord/reference: not measured (no monitord)"
fi
