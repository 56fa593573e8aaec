# The fuzz harnesses (tests/fuzz/harnesses.cmake) run in every build through
# a deterministic driver (no libFuzzer needed), so the suite exercises them
# under the sanitizers: each replays its corpus (tests/fuzz/corpus/<name>/,
# the seeds and every input that once found a bug) and then mutations of it.
include(${CMAKE_SOURCE_DIR}/tests/fuzz/harnesses.cmake)
foreach(t ${MON_FUZZ_HARNESSES})
  mon_fuzz_add_target(${t} ${t}_smoke ${CMAKE_SOURCE_DIR}/tests/fuzz/driver.c)
  add_test(NAME ${t}_smoke COMMAND ${t}_smoke ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${t} -runs=100000)
  set_tests_properties(${t}_smoke PROPERTIES LABELS unit TIMEOUT 300 ENVIRONMENT "${MON_TEST_LSAN}")
endforeach()
