#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz/ with clang (build-fuzz/,
# MON_FUZZ=ON: coverage, AddressSanitizer and UndefinedBehaviorSanitizer in
# all our code) and runs each for a few seconds, starting from its corpus
# in tests/fuzz/corpus/<harness>/ (read only: new inputs go to
# build-fuzz/corpus/<harness>/). A crash, leak, sanitizer report or timeout
# fails the harness; its input is saved in build-fuzz/findings/<harness>/
# and the log in build-fuzz/logs/<harness>.log. Exits non-zero when any
# harness failed, after a last line "fuzz: N harnesses, N failed".
# docs/fuzzing.md tells how to reproduce a finding and keep it as a test.
#
# Environment:
#   MON_FUZZ_SECONDS=N     seconds per harness (default 5)
#   MON_FUZZ_FILTER=REGEX  run only the harnesses whose names match
#   MON_FUZZ_BUILD_DIR     build tree (default build-fuzz)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
build_dir=${MON_FUZZ_BUILD_DIR:-build-fuzz}
seconds=${MON_FUZZ_SECONDS:-5}

if ! command -v clang >/dev/null 2>&1; then
	echo "fuzz.sh: clang is not installed (scripts/deps.sh installs it)" >&2
	exit 1
fi

mapfile -t harnesses < <(sed -n 's/^mon_fuzz_harness(NAME \([a-z0-9_]*\).*/\1/p' tests/fuzz/harnesses.cmake)
if [ -n "${MON_FUZZ_FILTER:-}" ]; then
	mapfile -t harnesses < <(printf '%s\n' "${harnesses[@]}" | grep -E -- "$MON_FUZZ_FILTER" || true)
fi
if [ "${#harnesses[@]}" -eq 0 ]; then
	echo "fuzz.sh: no harness matches" >&2
	exit 1
fi

# Warnings are the gcc build's to enforce (-Werror there); clang's -Wformat=2 differs.
echo "fuzz.sh: configuring $build_dir/ (clang, libFuzzer, ASan+UBSan)" >&2
cmake -S . -B "$build_dir" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
	-DCMAKE_BUILD_TYPE=RelWithDebInfo -DMON_WERROR=ON -DMON_FUZZ=ON -DMON_BUILD_TESTS=OFF >/dev/null
targets=()
for h in "${harnesses[@]}"; do
	targets+=("${h}_libfuzzer")
done
if ! cmake --build "$build_dir" -j "$(nproc)" --target "${targets[@]}" >"$build_dir/fuzz-build.log" 2>&1; then
	tail -n 40 "$build_dir/fuzz-build.log" >&2
	echo "fuzz.sh: the build failed (log: $build_dir/fuzz-build.log)" >&2
	echo "fuzz: ${#harnesses[@]} harnesses, ${#harnesses[@]} failed"
	exit 1
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

mkdir -p "$build_dir/logs"
failed=0
for h in "${harnesses[@]}"; do
	work=$build_dir/corpus/$h
	findings=$build_dir/findings/$h
	log=$build_dir/logs/$h.log
	mkdir -p "$work" "$findings"
	if "$build_dir/fuzz/${h}_libfuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
		-max_len=4096 -artifact_prefix="$findings/" "$work" "tests/fuzz/corpus/$h" >"$log" 2>&1; then
		runs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 || true)
		echo "fuzz.sh: $h: ok (${runs#\#} runs in ${seconds}s)" >&2
	else
		failed=$((failed + 1))
		grep -E 'ERROR: |SUMMARY: |runtime error: |Test unit written' "$log" | head -n 10 >&2 || true
		echo "fuzz.sh: $h: FAILED (log: $log, input: $findings/)" >&2
	fi
done
echo "fuzz: ${#harnesses[@]} harnesses, $failed failed"
[ "$failed" -eq 0 ]
