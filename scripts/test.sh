#!/usr/bin/env bash
# Builds and runs monitord's whole test suite: installs what is missing
# (scripts/deps.sh), configures build-test/ with warnings as errors,
# AddressSanitizer + UndefinedBehaviorSanitizer and the tests, builds with
# every core, and runs ctest (the suite starts its own throwaway PostgreSQL
# through a ctest fixture). Then runs every libFuzzer harness for a few
# seconds (scripts/fuzz.sh, clang, ASan+UBSan); each counts as one test.
# Exits non-zero when anything fails, and ends with a plain "N passed, N
# failed" line read from ctest's summary and the fuzz runs.
#
# Environment:
#   MON_FUZZ_SECONDS=N     seconds per fuzz harness (default 5; 0 skips fuzzing)
#   MON_SANITIZE=0         build without the sanitizers (faster)
#   MON_TEST_FILTER=REGEX  run only the tests whose names match (ctest -R), no fuzzing
#   MON_TEST_JOBS=N        tests run at once (default: the number of cores)
#   MON_BUILD_DIR          build tree (default build-test)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
build_dir=${MON_BUILD_DIR:-build-test}
jobs=$(nproc)
test_jobs=${MON_TEST_JOBS:-$jobs}
sanitize=ON
if [ "${MON_SANITIZE:-1}" = 0 ]; then
	sanitize=OFF
fi

scripts/deps.sh

cache=$build_dir/CMakeCache.txt
if [ -f "$cache" ] && ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$root" "$cache"; then
	echo "test.sh: $build_dir/ was configured for another checkout; reconfiguring" >&2
	rm -rf "$build_dir/CMakeCache.txt" "$build_dir/CMakeFiles"
fi

echo "test.sh: configuring $build_dir/ (sanitizers $sanitize)" >&2
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	-DMON_WERROR=ON -DMON_SANITIZE="$sanitize" -DMON_BUILD_TESTS=ON
if ! cmake --build "$build_dir" -j "$jobs"; then
	echo "test.sh: the build failed (see the first error above); no test was run" >&2
	exit 1
fi

# Sanitizer reports fail the test that triggers them, with a stack.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

ctest_args=(--test-dir "$build_dir" --output-on-failure --no-tests=error -j "$test_jobs")
if [ -n "${MON_TEST_FILTER:-}" ]; then
	ctest_args+=(-R "$MON_TEST_FILTER")
fi

log=$build_dir/ctest.log
set +e
ctest "${ctest_args[@]}" 2>&1 | tee "$log"
ctest_rc=${PIPESTATUS[0]}
set -e

# A few seconds of libFuzzer per harness; a crash fails the run (scripts/fuzz.sh).
fuzz_total=0
fuzz_failed=0
if [ "${MON_FUZZ_SECONDS:-5}" != 0 ] && [ -z "${MON_TEST_FILTER:-}" ]; then
	fuzz_log=$build_dir/fuzz.log
	set +e
	MON_FUZZ_SECONDS=${MON_FUZZ_SECONDS:-5} scripts/fuzz.sh 2>&1 | tee "$fuzz_log"
	set -e
	fuzz_line=$(grep -E '^fuzz: [0-9]+ harnesses, [0-9]+ failed$' "$fuzz_log" | tail -n 1 || true)
	if [ -n "$fuzz_line" ]; then
		fuzz_total=$(sed -E 's/^fuzz: ([0-9]+) harnesses, ([0-9]+) failed$/\1/' <<<"$fuzz_line")
		fuzz_failed=$(sed -E 's/^fuzz: ([0-9]+) harnesses, ([0-9]+) failed$/\2/' <<<"$fuzz_line")
	else
		fuzz_total=1
		fuzz_failed=1
	fi
fi

# "90% tests passed, 1 tests failed out of 10", and the skipped ones listed
# under "The following tests did not run:".
summary=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
if [ -z "$summary" ]; then
	echo "test.sh: ctest printed no summary (exit code $ctest_rc)" >&2
	echo "0 passed, 1 failed"
	exit $((ctest_rc != 0 ? ctest_rc : 1))
fi
failed=$(sed -E 's/^[0-9]+% tests passed, ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$summary")
total=$(sed -E 's/^[0-9]+% tests passed, ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$summary")
# ctest's total counts skipped tests (as passed) but not disabled ones.
skipped=$(grep -cE '^[[:space:]]*[0-9]+ - .* \(Skipped\)$' "$log" || true)
disabled=$(grep -cE '^[[:space:]]*[0-9]+ - .* \(Disabled\)$' "$log" || true)
passed=$((total - failed - skipped + fuzz_total - fuzz_failed))
failed=$((failed + fuzz_failed))
skipped=$((skipped + disabled))

if [ "$skipped" -gt 0 ]; then
	echo "$passed passed, $failed failed, $skipped skipped"
else
	echo "$passed passed, $failed failed"
fi
if [ "$ctest_rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
	exit $((ctest_rc != 0 ? ctest_rc : 1))
fi
