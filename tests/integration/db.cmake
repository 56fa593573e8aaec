# Integration tests of the data layer (src/db) against the throwaway
# cluster; each program creates and drops its own database.
set(MON_DB_INTEGRATION_TESTS
  test_db_bus
  test_db_copy
  test_db_exec
  test_db_migrate
  test_db_read
  test_db_tx
  test_db_unavailable
  test_db_embedded)
foreach(name ${MON_DB_INTEGRATION_TESTS})
  add_executable(${name} ${CMAKE_CURRENT_LIST_DIR}/${name}.c)
  target_compile_options(${name} PRIVATE ${MON_C_WARNINGS})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src ${CMAKE_CURRENT_LIST_DIR})
  target_link_libraries(${name} PRIVATE mon_db PkgConfig::CMOCKA PkgConfig::PQ Threads::Threads)
  mon_add_integration_test(NAME ${name} COMMAND ${name})
endforeach()
