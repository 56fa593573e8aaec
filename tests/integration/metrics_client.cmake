# The client side of MetricsService against a real monitord: the batching
# writer of libmonitoring (test_metrics_writer: flush on size and on time,
# retries across a server restart without duplicate rows, invalid points
# reported, a full buffer, close) and monctl's metrics commands
# (test_metrics_monctl.py: send from a file and from stdin, follow and resume
# after a restart, the generic watch on WatchMetrics).
if(TARGET monitoring AND TARGET monitord)
  add_executable(test_metrics_writer ${CMAKE_CURRENT_LIST_DIR}/test_metrics_writer.c)
  target_compile_options(test_metrics_writer PRIVATE ${MON_C_WARNINGS})
  target_include_directories(test_metrics_writer PRIVATE ${CMAKE_SOURCE_DIR}/src ${CMAKE_CURRENT_LIST_DIR})
  target_link_libraries(test_metrics_writer PRIVATE monitoring PkgConfig::CMOCKA PkgConfig::PQ Threads::Threads)
  add_dependencies(test_metrics_writer monitord)
  mon_add_integration_test(NAME test_metrics_writer TIMEOUT 300 COMMAND test_metrics_writer)
  if(TARGET monctl)
    mon_add_integration_test(NAME itest_metrics_monctl TIMEOUT 300
      COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_metrics_monctl.py)
  endif()
endif()
