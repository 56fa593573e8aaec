# Unit tests of monitord's configuration loader (server/config.c).
foreach(t test_config_load test_config_listen)
  mon_add_unit_test(NAME ${t}
    SOURCES ${CMAKE_SOURCE_DIR}/server/config.c ${CMAKE_CURRENT_LIST_DIR}/${t}.c
    LIBS mon_util)
  target_include_directories(${t} PRIVATE ${CMAKE_SOURCE_DIR})
endforeach()
# The example config file in docs/ must keep loading.
target_compile_definitions(test_config_load PRIVATE
  MON_CONFIG_EXAMPLE="${CMAKE_SOURCE_DIR}/docs/configuration.example")
