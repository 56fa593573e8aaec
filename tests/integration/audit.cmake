# The audit trail (server/audit/audit.c) against the throwaway cluster:
# audit_write_tx in a transaction, and the writer of refused calls.
add_executable(test_audit_writer ${CMAKE_CURRENT_LIST_DIR}/test_audit_writer.c ${CMAKE_SOURCE_DIR}/server/audit/audit.c
  ${CMAKE_SOURCE_DIR}/server/common/text.c)
target_compile_options(test_audit_writer PRIVATE ${MON_C_WARNINGS})
target_include_directories(test_audit_writer PRIVATE ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/server
  ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(test_audit_writer PRIVATE mon_rpc mon_db mon_util PkgConfig::JANSSON PkgConfig::SODIUM
  PkgConfig::CMOCKA PkgConfig::PQ Threads::Threads)
mon_add_integration_test(NAME test_audit_writer TIMEOUT 120 COMMAND test_audit_writer)
