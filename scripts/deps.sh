#!/usr/bin/env bash
# Installs what monitord needs to build, run and test on Debian 12, and
# nothing that is already there: each apt package is checked with dpkg-query
# and only the missing ones are installed (after one apt-get update), with
# sudo when not run as root. Then the npm tool @bufbuild/buf (the `buf curl`
# client the interop tests use) is installed into node_modules/ from the
# committed package-lock.json when node_modules/.bin/buf is missing.
# Idempotent: a second run checks and does nothing. Used by scripts/start.sh
# and scripts/test.sh; safe to run on its own.
#
# Environment: MON_SKIP_NPM=1 skips the npm step.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

APT_PACKAGES=(
	# build
	build-essential cmake pkg-config
	# gRPC and protobuf (C core, protoc-c, protoc and the descriptor protos)
	libgrpc-dev libgrpc++-dev grpc-proto
	protobuf-c-compiler libprotobuf-c-dev
	protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libprotoc-dev
	# PostgreSQL 15 (client library, server binaries for the embedded and test clusters)
	libpq-dev postgresql-15 postgresql-15-partman
	# libraries
	libsodium-dev libssl-dev libjansson-dev libcurl4-openssl-dev
	# tests and independent clients
	libcmocka-dev python3-grpcio python3-grpc-tools nghttp2-client openssl clang-format git
	# libFuzzer harnesses (scripts/fuzz.sh): clang and its sanitizer and fuzzer runtimes
	clang libclang-rt-14-dev
	# HTTPS trust for npm (not pulled in with --no-install-recommends)
	ca-certificates
)

log() {
	printf 'deps.sh: %s\n' "$*" >&2
}

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		log "not running as root and sudo is not installed: run this as root once"
		exit 1
	fi
	SUDO=(sudo)
fi

is_installed() {
	local status
	status=$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) || return 1
	[ "$status" = installed ]
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
	is_installed "$pkg" || missing+=("$pkg")
done

# Node.js and npm: any node with npm already on PATH will do (Debian's, or a
# vendor build whose nodejs package bundles npm, where installing Debian's
# npm package would conflict). Otherwise Debian's nodejs and npm.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	for pkg in nodejs npm; do
		is_installed "$pkg" || missing+=("$pkg")
	done
fi

if [ "${#missing[@]}" -gt 0 ]; then
	log "installing ${missing[*]}"
	# Wait for another apt/dpkg (unattended upgrades on a fresh machine) instead of failing.
	APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
	"${SUDO[@]}" apt-get "${APT_OPTS[@]}" update
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y \
		--no-install-recommends "${missing[@]}"
else
	log "apt packages: all ${#APT_PACKAGES[@]} present"
fi

if [ "${MON_SKIP_NPM:-0}" != 1 ]; then
	if [ ! -x node_modules/.bin/buf ]; then
		log "installing @bufbuild/buf into node_modules/"
		if [ -f package-lock.json ]; then
			npm ci --no-audit --no-fund
		else
			npm install --no-audit --no-fund
		fi
	fi
	if ! node_modules/.bin/buf --version >/dev/null 2>&1; then
		log "node_modules/.bin/buf does not run; remove node_modules/ and retry"
		exit 1
	fi
fi
