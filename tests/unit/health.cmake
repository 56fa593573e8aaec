# Unit tests of HealthService's pure checks and uptime arithmetic
# (server/health/services_api.c): ids, names, URLs, service types, timing, percent.
mon_add_unit_test(NAME test_health_checks
  SOURCES ${CMAKE_SOURCE_DIR}/server/health/services_api.c ${CMAKE_SOURCE_DIR}/server/common/json.c ${CMAKE_SOURCE_DIR}/server/common/call.c ${CMAKE_SOURCE_DIR}/server/common/page.c
          ${CMAKE_SOURCE_DIR}/server/common/parse.c ${CMAKE_SOURCE_DIR}/server/common/text.c ${CMAKE_SOURCE_DIR}/server/common/idem.c ${CMAKE_SOURCE_DIR}/server/health/store.c
          ${CMAKE_SOURCE_DIR}/server/health/netpolicy.c ${CMAKE_SOURCE_DIR}/server/audit/audit.c ${CMAKE_CURRENT_LIST_DIR}/test_health_checks.c
  LIBS mon_rpc mon_db mon_proto mon_util PkgConfig::JANSSON PkgConfig::SODIUM)
target_include_directories(test_health_checks PRIVATE ${CMAKE_SOURCE_DIR}/server)
# The prober's network policy (server/health/netpolicy.c): CIDR lists,
# IPv4/IPv6 and IPv4-mapped matching, the link-local default, deny over allow.
mon_add_unit_test(NAME test_health_netpolicy
  SOURCES ${CMAKE_SOURCE_DIR}/server/health/netpolicy.c ${CMAKE_CURRENT_LIST_DIR}/test_health_netpolicy.c
  LIBS mon_util)
target_include_directories(test_health_netpolicy PRIVATE ${CMAKE_SOURCE_DIR}/server)
