# HealthService end to end through python3-grpcio (tests/integration/test_health_service.py):
# services, reported checks, check history, the data model's two system-health
# queries against psql, uptime on a constructed history, every validation rule.
mon_add_integration_test(NAME itest_health_service TIMEOUT 600
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_health_service.py)
# Retention of the health check log (server/health/retention.c) and of idempotency keys
# (server/common/idem.c) against the throwaway cluster.
add_executable(test_health_retention ${CMAKE_CURRENT_LIST_DIR}/test_health_retention.c
  ${CMAKE_SOURCE_DIR}/server/health/retention.c ${CMAKE_SOURCE_DIR}/server/common/idem.c
  ${CMAKE_SOURCE_DIR}/server/common/parse.c ${CMAKE_SOURCE_DIR}/server/common/text.c
  ${CMAKE_SOURCE_DIR}/src/rpc/idem.c)
target_compile_options(test_health_retention PRIVATE ${MON_C_WARNINGS})
target_include_directories(test_health_retention PRIVATE ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/server
  ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(test_health_retention PRIVATE mon_db mon_proto mon_util PkgConfig::CMOCKA PkgConfig::PQ PkgConfig::SODIUM
  Threads::Threads)
mon_add_integration_test(NAME test_health_retention TIMEOUT 120 COMMAND test_health_retention)
