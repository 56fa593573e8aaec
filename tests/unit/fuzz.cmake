# The fuzz targets run in every build through a deterministic driver (no
# libFuzzer needed), so the suite exercises them under the sanitizers.
foreach(t fuzz_request_decode fuzz_wire)
  add_executable(${t}_smoke ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/${t}.c ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/driver.c)
  target_compile_options(${t}_smoke PRIVATE ${MON_C_WARNINGS})
  target_link_libraries(${t}_smoke PRIVATE mon_rpc mon_proto mon_util)
  add_test(NAME ${t}_smoke COMMAND ${t}_smoke -runs=200000)
  set_tests_properties(${t}_smoke PROPERTIES LABELS unit TIMEOUT 300)
endforeach()
