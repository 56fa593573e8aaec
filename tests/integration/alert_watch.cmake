# WatchAlerts end to end through python3-grpcio (tests/integration/test_alert_watch.py):
# snapshot with filters and live changes, resume without gap or duplicate (same
# replica, another replica, after a restart), an expired cursor, heartbeats, a
# subscriber that stops reading, validation, and 1000 idle subscribers.
mon_add_integration_test(NAME itest_alert_watch TIMEOUT 900
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_alert_watch.py)
