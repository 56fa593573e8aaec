# monitord end to end, through independent clients: python3-grpcio and buf curl.
mon_add_integration_test(NAME itest_standard_services TIMEOUT 600
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_standard_services.py)
mon_add_integration_test(NAME itest_buf_curl TIMEOUT 300
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_buf_curl.sh)
