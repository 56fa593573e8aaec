# The RPC runtime's string check (src/rpc/validate.c) over every string field of every implemented
# RPC, generated from the descriptors (tests/integration/test_request_strings.py).
mon_add_integration_test(NAME itest_request_strings TIMEOUT 600
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_request_strings.py)
