#!/usr/bin/env bash
# monitord seen by `buf curl`, an independent client that knows nothing of
# our protos: it learns the schema through server reflection (v1 and
# v1alpha), lists services and methods, and calls RPCs from JSON.
set -euo pipefail

src=${MON_SOURCE_DIR:?}
build=${MON_BUILD_DIR:?}
buf="$src/node_modules/.bin/buf"
[ -x "$buf" ] || { echo "buf not installed: run scripts/deps.sh" >&2; exit 1; }

tmp=$(mktemp -d)
db="itest_buf_$$"
psql -X -q -v ON_ERROR_STOP=1 "${MON_TEST_DATABASE:?}" -c "CREATE DATABASE $db" >/dev/null
conninfo="$(echo "$MON_TEST_DATABASE" | sed 's/dbname=[^ ]*//') dbname=$db"

"$build/bin/monitord" --listen 127.0.0.1:0 --port-file "$tmp/port" --database "$conninfo" >"$tmp/log" 2>&1 &
pid=$!
cleanup() {
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
for _ in $(seq 1 600); do
	[ -s "$tmp/port" ] && break
	kill -0 "$pid" 2>/dev/null || { cat "$tmp/log"; exit 1; }
	sleep 0.1
done
addr=$(cat "$tmp/port")
url="http://$addr"
passed=0
failed=0

check() { # name, command...; the command's output must match the last argument (a grep -E pattern)
	local name=$1 pattern=${*: -1}
	local out
	out=$("${@:2:$#-2}" 2>&1 || true)
	if grep -Eq -- "$pattern" <<<"$out"; then
		echo "ok   $name"
		passed=$((passed + 1))
	else
		echo "FAIL $name: expected /$pattern/, got:"
		echo "$out" | head -20
		failed=$((failed + 1))
	fi
}

curl_grpc() { "$buf" curl --protocol grpc --http2-prior-knowledge --timeout 10s "$@"; }

# Wait until the database is ready (SERVING).
for _ in $(seq 1 300); do
	curl_grpc -d '{"service":""}' "$url/grpc.health.v1.Health/Check" 2>/dev/null | grep -q SERVING && break
	sleep 0.1
done

key=$("$build/bin/monitord" admin bootstrap --email admin@example.com --database "$conninfo" | tail -1)
[ -n "$key" ] || { echo "could not bootstrap an admin key" >&2; exit 1; }

services=$(curl_grpc --list-services "$url" 2>&1 || true)
for s in HealthService MetricsService ErrorsService AuditService AlertsService DashboardsService IntegrationsService; do
	check "list-services has $s" echo "$services" "^monitoring\.v1\.$s\$"
done
check "list-services has grpc.health.v1.Health" echo "$services" '^grpc\.health\.v1\.Health$'
check "list-services via v1alpha" curl_grpc --reflect-protocol grpc-v1alpha --list-services "$url" \
	'^monitoring\.v1\.AlertsService$'
check "list-methods has WatchAlerts" curl_grpc --list-methods "$url" \
	'^monitoring\.v1\.AlertsService/WatchAlerts$'
check "list-methods has RecordMetrics" curl_grpc --list-methods "$url" \
	'^monitoring\.v1\.MetricsService/RecordMetrics$'
check "health check without a proto file" curl_grpc -d '{"service":""}' "$url/grpc.health.v1.Health/Check" \
	'"status": *"SERVING"'
check "health check of a monitoring service" curl_grpc -d '{"service":"monitoring.v1.AlertsService"}' \
	"$url/grpc.health.v1.Health/Check" '"status": *"SERVING"'
check "health check via v1alpha reflection" curl_grpc --reflect-protocol grpc-v1alpha -d '{"service":""}' \
	"$url/grpc.health.v1.Health/Check" '"status": *"SERVING"'
check "unknown health service is not_found" curl_grpc -d '{"service":"nope"}' \
	"$url/grpc.health.v1.Health/Check" 'not_found'
check "unimplemented RPC names its capability" curl_grpc -H "authorization: Bearer $key" -d '{}' \
	"$url/monitoring.v1.ErrorsService/ListErrors" 'not implemented yet: '
check "no credentials: unauthenticated" curl_grpc -d '{}' \
	"$url/monitoring.v1.AlertsService/ListAlerts" 'unauthenticated'
check "a wrong key: unauthenticated" curl_grpc -H "authorization: Bearer mk_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" \
	-d '{}' "$url/monitoring.v1.AccessService/GetCallerIdentity" 'unauthenticated'
check "who am I, as the bootstrapped admin" curl_grpc -H "authorization: Bearer $key" -d '{}' \
	"$url/monitoring.v1.AccessService/GetCallerIdentity" 'CALLER_ROLE_ADMIN'
check "JSON with an unknown field is refused by the client schema" curl_grpc -d '{"nope":1}' \
	"$url/grpc.health.v1.Health/Check" 'nope'
check "health watch streams the status" curl_grpc --timeout 2s -d '{"service":""}' \
	"$url/grpc.health.v1.Health/Watch" '"status": *"SERVING"'
check "server still serving" curl_grpc -d '{"service":""}' "$url/grpc.health.v1.Health/Check" '"SERVING"'

kill -TERM "$pid"
code=0
wait "$pid" || code=$?
if [ "$code" = 0 ]; then
	echo "ok   monitord exited 0 on SIGTERM"
	passed=$((passed + 1))
else
	echo "FAIL monitord exited $code on SIGTERM"
	tail -30 "$tmp/log"
	failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
