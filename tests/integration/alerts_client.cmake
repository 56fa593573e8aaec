# The client side of AlertsService against a real monitord
# (test_alerts_client.py): libmonitoring's resuming alerts watcher through
# `monctl alerts follow` while monitord is killed, stopped and restarted
# mid-stream and while it falls behind (RESUME_REQUIRED, then
# RESOURCE_EXHAUSTED): every matching change exactly once, in sequence
# order; and monctl's alerts commands (rules create/get/list/delete, list,
# ack, resolve).
if(TARGET monctl AND TARGET monitord)
  mon_add_integration_test(NAME itest_alerts_client TIMEOUT 300
    COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_alerts_client.py)
endif()
