# Robustness end to end: expired deadlines on every RPC.
mon_add_integration_test(NAME itest_deadlines TIMEOUT 300
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_deadlines.py)
# The logger with stderr a pipe nobody reads: calls keep answering, drops are counted.
mon_add_integration_test(NAME itest_log_backpressure TIMEOUT 300
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_log_backpressure.py)
# Eight servers and admin commands migrating one empty database at once.
mon_add_integration_test(NAME itest_concurrent_start TIMEOUT 300
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_concurrent_start.py)
