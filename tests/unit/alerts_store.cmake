# Unit tests of the alert store's pure parts (server/alerts/store.c): enum
# labels both ways, the transition table of alerts.proto, times of
# notifications_sent, channels and recipients columns, the outbox payload, ids.
mon_add_unit_test(NAME test_alerts_store
  SOURCES ${CMAKE_SOURCE_DIR}/server/alerts/store.c ${CMAKE_SOURCE_DIR}/server/common/json.c ${CMAKE_SOURCE_DIR}/server/common/parse.c ${CMAKE_CURRENT_LIST_DIR}/test_alerts_store.c
  LIBS mon_db mon_proto mon_util PkgConfig::JANSSON PkgConfig::SODIUM)
target_include_directories(test_alerts_store PRIVATE ${CMAKE_SOURCE_DIR}/server)
