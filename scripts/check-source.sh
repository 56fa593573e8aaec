#!/usr/bin/env bash
# Source checks that the compiler does not make:
#  - no banned function (sprintf, strcpy, strcat, strtok, atoi, gets) in our C;
#  - our C is laid out as .clang-format says;
#  - every header compiles on its own (it includes what it uses).
# Usage: scripts/check-source.sh BUILD_DIR   (generated headers live in BUILD_DIR/gen)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: check-source.sh BUILD_DIR}
failed=0
passed=0

mapfile -t sources < <(git ls-files 'src/*.c' 'src/*.h' 'server/*.c' 'server/*.h' 'clients/*.c' 'clients/*.h' \
	'tests/*.c' 'tests/*.h' 'bench/*.c' 'bench/*.h' 2>/dev/null || true)

# 1. Banned functions (comments and strings are not exempt: write around them).
banned=$(grep -nE '\b(sprintf|vsprintf|strcpy|strcat|strtok|atoi|atol|gets)[[:space:]]*\(' "${sources[@]}" || true)
if [ -n "$banned" ]; then
	echo "FAIL banned functions (use snprintf, bounded copies, strtol with checks):"
	echo "$banned"
	failed=$((failed + 1))
else
	echo "ok   no banned function in ${#sources[@]} files"
	passed=$((passed + 1))
fi

# 2. Layout.
if command -v clang-format >/dev/null; then
	if clang-format --dry-run -Werror "${sources[@]}" 2>/tmp/check-source-format.$$; then
		echo "ok   clang-format"
		passed=$((passed + 1))
	else
		echo "FAIL clang-format (run: clang-format -i FILE):"
		grep -E '^[^ ].*(warning|error):' /tmp/check-source-format.$$ | cut -d: -f1 | sort -u | head -20
		failed=$((failed + 1))
	fi
	rm -f /tmp/check-source-format.$$
else
	echo "FAIL clang-format is not installed (scripts/deps.sh installs it)"
	failed=$((failed + 1))
fi

# 3. Headers compile on their own.
mapfile -t headers < <(git ls-files 'src/*.h' 'server/*.h' 'clients/include/*.h')
bad=0
for h in "${headers[@]}"; do
	if ! echo "#include \"$PWD/$h\"" | cc -std=c11 -D_GNU_SOURCE -fsyntax-only -Wall -Wextra -Werror \
		-I src -I server -I clients/include -I "$build/gen" -I "$build/clients/include" -I "$build/src/codegen/pb" $(pkg-config --cflags grpc libprotobuf-c libpq) \
		-x c - 2>/tmp/check-source-hdr.$$; then
		echo "FAIL $h does not compile on its own:"
		head -5 /tmp/check-source-hdr.$$
		bad=1
	fi
done
rm -f /tmp/check-source-hdr.$$
if [ $bad = 0 ]; then
	echo "ok   ${#headers[@]} headers compile on their own"
	passed=$((passed + 1))
else
	failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ $failed = 0 ]
