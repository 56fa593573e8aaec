# Unit tests of AccessService's pure checks (server/access/service.c):
# caller ids, e-mail addresses, free text, page tokens.
mon_add_unit_test(NAME test_access_checks
  SOURCES ${CMAKE_SOURCE_DIR}/server/access/service.c ${CMAKE_SOURCE_DIR}/server/common/call.c ${CMAKE_SOURCE_DIR}/server/common/page.c
          ${CMAKE_SOURCE_DIR}/server/common/parse.c ${CMAKE_SOURCE_DIR}/server/common/text.c ${CMAKE_SOURCE_DIR}/server/common/idem.c ${CMAKE_SOURCE_DIR}/server/audit/audit.c
          ${CMAKE_SOURCE_DIR}/server/access/identity.c ${CMAKE_CURRENT_LIST_DIR}/test_access_checks.c
  LIBS mon_rpc mon_db mon_proto mon_util PkgConfig::JANSSON PkgConfig::SODIUM)
target_include_directories(test_access_checks PRIVATE ${CMAKE_SOURCE_DIR}/server)
