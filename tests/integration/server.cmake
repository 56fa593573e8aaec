# monitord end to end, through independent clients: python3-grpcio and buf curl.
mon_add_integration_test(NAME itest_standard_services TIMEOUT 600
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_standard_services.py)
mon_add_integration_test(NAME itest_buf_curl TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_buf_curl.sh)
# The RPC runtime in process, with blocking handlers on a real database.
add_executable(test_rpc_server ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_rpc_server.c)
target_compile_options(test_rpc_server PRIVATE ${MON_C_WARNINGS})
target_link_libraries(test_rpc_server PRIVATE mon_rpc mon_rpc_client mon_db mon_proto mon_util PkgConfig::CMOCKA)
mon_add_integration_test(NAME test_rpc_server TIMEOUT 300 COMMAND test_rpc_server)
mon_add_integration_test(NAME itest_tls_and_client TIMEOUT 300
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_tls_and_client.py)
# The README's tour, command by command, as a reader runs it.
mon_add_integration_test(NAME itest_readme_tour TIMEOUT 300
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_readme_tour.py)
