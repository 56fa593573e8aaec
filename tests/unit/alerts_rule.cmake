# Unit tests of the alert rule's pure parts (server/alerts/rule.c): whole-rule
# validation naming the field, recipients checks, the scope and recipients JSON.
mon_add_unit_test(NAME test_alerts_rule
  SOURCES ${CMAKE_SOURCE_DIR}/server/alerts/rule.c ${CMAKE_SOURCE_DIR}/server/alerts/store.c
    ${CMAKE_SOURCE_DIR}/server/common/json.c ${CMAKE_SOURCE_DIR}/server/common/parse.c ${CMAKE_SOURCE_DIR}/server/common/text.c
    ${CMAKE_CURRENT_LIST_DIR}/test_alerts_rule.c
  LIBS mon_db mon_proto mon_util PkgConfig::JANSSON PkgConfig::SODIUM)
target_include_directories(test_alerts_rule PRIVATE ${CMAKE_SOURCE_DIR}/server)
