# AccessService end to end through python3-grpcio (tests/integration/test_access.py):
# callers, keys, roles, audit events, refusals, and the after-write failpoint.
mon_add_integration_test(NAME itest_access TIMEOUT 600
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_access.py)
