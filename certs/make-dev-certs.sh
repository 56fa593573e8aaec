#!/usr/bin/env bash
# Makes a development PKI for monitord: a CA, a server certificate for
# localhost / 127.0.0.1 / ::1, and client certificates for mutual TLS.
# For development and tests only; private keys are written next to the
# certificates (mode 0600) and never belong in git.
#
#   certs/make-dev-certs.sh [OUT_DIR] [CLIENT_NAME...]
#
# OUT_DIR defaults to certs/dev; client names default to "admin" and "viewer".
# Existing files are kept, so running it again is harmless.
set -euo pipefail

out=${1:-"$(cd "$(dirname "$0")" && pwd)/dev"}
shift || true
clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=(admin viewer)
days=825
mkdir -p "$out"
umask 077

if [ ! -f "$out/ca.pem" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$out/ca.key" -out "$out/ca.pem" -days "$days" \
		-subj "/CN=monitord development CA" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

issue() { # name, subject, extensions
	local name=$1 subj=$2 ext=$3
	[ -f "$out/$name.pem" ] && return 0
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$out/$name.key" -out "$out/$name.csr" -subj "$subj" 2>/dev/null
	openssl x509 -req -in "$out/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial \
		-out "$out/$name.pem" -days "$days" -extfile <(printf '%s\n' "$ext") 2>/dev/null
	rm -f "$out/$name.csr"
}

issue server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature"
for c in "${clients[@]}"; do
	issue "client-$c" "/CN=$c" "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
done
chmod 0644 "$out"/*.pem
echo "$out"
