#!/bin/sh
# monctl against the python3-grpcio health server: every command, the exit
# codes (0 ok, 1 RPC error, 2 usage, 130 interrupted), the error format on
# stderr, and flags overriding the environment.
# usage: test_client_monctl.sh MONCTL SERVER_SCRIPT
set -u
monctl=$1
server=$2
tmp=$(mktemp -d)
fifo=$tmp/stdin
mkfifo "$fifo"
/usr/bin/python3 "$server" < "$fifo" > "$tmp/port" &
server_pid=$!
exec 3> "$fifo"
cleanup() {
	exec 3>&-
	wait "$server_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
	[ -s "$tmp/port" ] && break
	sleep 0.1
done
port=$(head -n 1 "$tmp/port")
[ -n "$port" ] || { echo "server did not start" >&2; exit 1; }
target=127.0.0.1:$port
failures=0

# expect NAME WANT_RC WANT_STDOUT WANT_STDERR_SUBSTRING -- monctl args...
expect() {
	name=$1 want_rc=$2 want_out=$3 want_err=$4
	shift 5
	out=$("$monctl" "$@" 2> "$tmp/err")
	rc=$?
	err=$(cat "$tmp/err")
	err_ok=1
	if [ -n "$want_err" ] && ! printf '%s\n' "$err" | grep -qF -- "$want_err"; then
		err_ok=0
	fi
	if [ "$rc" != "$want_rc" ] || [ "$out" != "$want_out" ] || [ "$err_ok" = 0 ]; then
		echo "FAIL $name: rc=$rc (want $want_rc)" >&2
		echo "  stdout: $out" >&2
		echo "  want:   $want_out" >&2
		echo "  stderr: $err (want to contain: $want_err)" >&2
		failures=$((failures + 1))
	else
		echo "ok   $name"
	fi
}

nl='
'
expect help 0 "$("$monctl" --help)" "" -- --help
expect list_has_health 0 "$("$monctl" list)" "" -- list
"$monctl" list | grep -q '^grpc.health.v1.Health$' || { echo "FAIL list: no grpc.health.v1.Health" >&2; failures=$((failures + 1)); }
expect health_serving 0 "SERVING" "" -- --target "$target" health
expect health_not_serving 1 "NOT_SERVING" "" -- --target "$target" health down
expect health_unknown 1 "" "monctl: NOT_FOUND: unknown service nope" -- --target "$target" health nope
expect call_short_name 0 "{$nl  \"status\": \"SERVING\"$nl}" "" -- --target "$target" call Health/Check '{"service": ""}'
expect call_full_path 0 "{$nl  \"status\": \"NOT_SERVING\"$nl}" "" -- --target "$target" call /grpc.health.v1.Health/Check '{"service": "down"}'
expect call_emit_defaults 0 "{$nl  \"status\": \"SERVING\"$nl}" "" -- --target "$target" --emit-defaults call Health/Check
expect call_rpc_error 1 "" "monctl: NOT_FOUND: unknown service x" -- --target "$target" call Health/Check '{"service": "x"}'
expect call_unknown_field 2 "" 'monctl: INVALID_ARGUMENT: request (grpc.health.v1.HealthCheckRequest): unknown field "servic"' -- --target "$target" call Health/Check '{"servic": ""}'
expect call_bad_json 2 "" "monctl: INVALID_ARGUMENT: request: invalid JSON" -- --target "$target" call Health/Check '{'
expect call_streaming 2 "" "use monctl watch" -- --target "$target" call Health/Watch
expect call_unknown_service 2 "" 'unknown service "Nope"' -- --target "$target" call Nope/Check
expect call_unknown_method 2 "" 'has no method "Nope"' -- --target "$target" call Health/Nope
expect call_deadline 1 "" "monctl: DEADLINE_EXCEEDED:" -- --target "$target" --timeout 200 call Health/Check '{"service": "slow"}'
expect call_unavailable 1 "" "monctl: UNAVAILABLE:" -- --target 127.0.0.1:1 call Health/Check
expect bad_tls_file 2 "" 'monctl: INVALID_ARGUMENT: tls_ca_file: could not open "/nonexistent.pem"' -- --tls-ca /nonexistent.pem health
expect bad_timeout 2 "" "--timeout" -- --timeout 1s health
expect unknown_command 2 "" 'unknown command "frobnicate"' -- frobnicate
expect watch_ends_ok 0 "{\"status\":\"SERVING\"}$nl{\"status\":\"NOT_SERVING\"}$nl{\"status\":\"SERVING\"}" "" -- --target "$target" watch Health/Watch '{"service": "count:3"}'
expect watch_fails 1 '{"status":"SERVING"}' "monctl: ABORTED: failed after 1" -- --target "$target" watch Health/Watch '{"service": "fail:1"}'
expect watch_deadline 1 '{"status":"SERVING"}' "monctl: DEADLINE_EXCEEDED:" -- --target "$target" --timeout 300 watch Health/Watch '{"service": "hold"}'
expect watch_unary 2 "" "use monctl call" -- --target "$target" watch Health/Check
expect stdin_request 0 "{$nl  \"status\": \"NOT_SERVING\"$nl}" "" -- --target "$target" call Health/Check - <<EOF2
{"service": "down"}
EOF2

# The environment, and flags over it.
out=$(MONITORD_TARGET=$target MONITORD_API_KEY=env-key "$monctl" --request-id r-1 health echo-md 2>&1)
case $out in
*"authorization=Bearer env-key x-request-id=r-1"*) echo "ok   env" ;;
*) echo "FAIL env: $out" >&2; failures=$((failures + 1)) ;;
esac
out=$(MONITORD_TARGET=127.0.0.1:1 MONITORD_API_KEY=env-key "$monctl" --target "$target" --api-key flag-key health echo-md 2>&1)
case $out in
*"authorization=Bearer flag-key"*) echo "ok   flags_override_env" ;;
*) echo "FAIL flags_override_env: $out" >&2; failures=$((failures + 1)) ;;
esac

# Ctrl-C ends a watch with 130.
"$monctl" --target "$target" watch Health/Watch '{"service": "hold"}' > "$tmp/watch" 2>&1 &
watch_pid=$!
for _ in $(seq 1 50); do
	[ -s "$tmp/watch" ] && break
	sleep 0.1
done
kill -INT "$watch_pid"
wait "$watch_pid"
rc=$?
if [ "$rc" = 130 ] && [ "$(cat "$tmp/watch")" = '{"status":"SERVING"}' ]; then
	echo "ok   watch_interrupted"
else
	echo "FAIL watch_interrupted: rc=$rc output=$(cat "$tmp/watch")" >&2
	failures=$((failures + 1))
fi

[ "$failures" = 0 ] || { echo "$failures failure(s)" >&2; exit 1; }
echo "all monctl tests passed"
