#!/bin/sh
# Checks that libmonitoring.so exports only its public API: the mon_*
# functions and the protobuf-c code of the API's messages (whose names all
# contain "__"), and that its SONAME is libmonitoring.so.0.
set -eu
lib=$1
soname=$(objdump -p "$lib" | awk '$1 == "SONAME" { print $2 }')
if [ "$soname" != "libmonitoring.so.0" ]; then
	echo "unexpected SONAME: '$soname'" >&2
	exit 1
fi
# (__odr_asan.* are AddressSanitizer's markers in sanitizer builds.)
bad=$(nm -D --defined-only "$lib" | awk '{ print $3 }' | grep -v -E '^__odr_asan\.' |
	grep -v -E '^(mon_[a-z0-9_]+|[a-z0-9_]+__[a-z0-9_]+)$' || true)
if [ -n "$bad" ]; then
	echo "symbols exported that are not public API:" >&2
	echo "$bad" >&2
	exit 1
fi
for sym in mon_client_open mon_client_close mon_call_unary mon_stream_open mon_stream_next mon_stream_close \
	mon_message_free mon_status_code_name mon_client_options_from_env; do
	if ! nm -D --defined-only "$lib" | awk '{ print $3 }' | grep -qx "$sym"; then
		echo "public symbol missing: $sym" >&2
		exit 1
	fi
done
if nm -D --defined-only "$lib" | awk '{ print $3 }' | grep -q -E '^rpc_|^mon_error_'; then
	echo "internal symbols exported" >&2
	exit 1
fi
echo "exports ok"
