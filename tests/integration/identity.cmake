# Integration tests of callers and API keys (server/access/identity.c) against the
# throwaway cluster; each program creates and drops its own database.
add_executable(test_identity_store ${CMAKE_CURRENT_LIST_DIR}/test_identity_store.c
  ${CMAKE_SOURCE_DIR}/server/access/identity.c
  ${CMAKE_SOURCE_DIR}/server/common/parse.c)
target_compile_options(test_identity_store PRIVATE ${MON_C_WARNINGS})
target_include_directories(test_identity_store PRIVATE ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/server
  ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(test_identity_store PRIVATE mon_db mon_proto mon_util PkgConfig::SODIUM PkgConfig::CMOCKA
  PkgConfig::PQ PkgConfig::PROTOBUFC Threads::Threads)
mon_add_integration_test(NAME test_identity_store TIMEOUT 120 COMMAND test_identity_store)
# `monitord admin` as a subprocess against a fresh database.
mon_add_integration_test(NAME itest_identity_admin TIMEOUT 300
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_identity_admin.py)
