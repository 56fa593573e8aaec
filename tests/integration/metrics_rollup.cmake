# Metric rollups, retention and partition maintenance (server/metrics/rollup.c) against the
# throwaway cluster: rollups equal the data model's aggregates computed on the raw points, late
# points, exact hourly averages, the watermark, a lost ingest log, one replica at a time,
# partition retention and ingest log pruning.
add_executable(test_metrics_rollup ${CMAKE_CURRENT_LIST_DIR}/test_metrics_rollup.c
  ${CMAKE_SOURCE_DIR}/server/metrics/rollup.c)
target_compile_options(test_metrics_rollup PRIVATE ${MON_C_WARNINGS})
target_include_directories(test_metrics_rollup PRIVATE ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/server
  ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(test_metrics_rollup PRIVATE mon_db mon_proto mon_util PkgConfig::CMOCKA PkgConfig::PQ
  Threads::Threads)
mon_add_integration_test(NAME test_metrics_rollup TIMEOUT 300 COMMAND test_metrics_rollup)
