# Unit tests of what every service uses (server/common/): the UTF-8 checker
# and text fields, integers and timestamps, page sizes, tokens and cursors,
# Struct and JSON.
mon_add_unit_test(NAME test_common
  SOURCES ${CMAKE_SOURCE_DIR}/server/common/call.c ${CMAKE_SOURCE_DIR}/server/common/json.c ${CMAKE_SOURCE_DIR}/server/common/page.c
          ${CMAKE_SOURCE_DIR}/server/common/parse.c ${CMAKE_SOURCE_DIR}/server/common/text.c ${CMAKE_SOURCE_DIR}/server/common/idem.c
          ${CMAKE_CURRENT_LIST_DIR}/test_common.c
  LIBS mon_rpc mon_db mon_proto mon_util PkgConfig::JANSSON PkgConfig::SODIUM m)
target_include_directories(test_common PRIVATE ${CMAKE_SOURCE_DIR}/server)
