#!/usr/bin/env bash
# Runs monitord from a fresh checkout: installs what is missing
# (scripts/deps.sh), builds an optimised binary with debug info in build/,
# and replaces itself with build/bin/monitord in the foreground, so Ctrl-C
# and SIGTERM reach the server and it shuts down gracefully.
#
#   scripts/start.sh [monitord flags...]     e.g. --listen 127.0.0.1:0 --port-file /tmp/port
#
# Without --database (or MONITORD_DATABASE / DATABASE_URL) monitord starts
# its own PostgreSQL cluster in .data/postgres. The server runs from the
# repository root, so relative paths in flags and in the config file are
# relative to it. See docs/operations.md for every setting.
#
# Environment: MON_BUILD_DIR (default build), MON_BUILD_TYPE (default
# RelWithDebInfo).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
build_dir=${MON_BUILD_DIR:-build}
build_type=${MON_BUILD_TYPE:-RelWithDebInfo}

# The server needs no npm tools, but the README's tour runs `npx buf curl`
# against it right after this command, so they are installed here too.
scripts/deps.sh

# A build tree configured from another checkout path cannot be reused.
cache=$build_dir/CMakeCache.txt
if [ -f "$cache" ] && ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$root" "$cache"; then
	echo "start.sh: $build_dir/ was configured for another checkout; reconfiguring" >&2
	rm -rf "$build_dir/CMakeCache.txt" "$build_dir/CMakeFiles"
fi

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE="$build_type" -DMON_BUILD_TESTS=OFF >/dev/null
cmake --build "$build_dir" --target monitord monctl -j "$(nproc)"

exec "$build_dir/bin/monitord" "$@"
