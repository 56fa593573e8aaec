# Unit tests of the audit trail's pure parts (server/audit/audit.c): peer
# addresses, the changes diff, event ids, text clipping.
mon_add_unit_test(NAME test_audit_format
  SOURCES ${CMAKE_SOURCE_DIR}/server/audit/audit.c ${CMAKE_SOURCE_DIR}/server/common/text.c ${CMAKE_CURRENT_LIST_DIR}/test_audit_format.c
  LIBS mon_rpc mon_db mon_util PkgConfig::JANSSON PkgConfig::SODIUM)
target_include_directories(test_audit_format PRIVATE ${CMAKE_SOURCE_DIR}/server)
