# WatchServiceHealth end to end through python3-grpcio (tests/integration/test_health_watch.py):
# a change reaches a subscriber, across replicas, resume without gap or duplicate,
# an expired cursor, and a subscriber that stops reading.
mon_add_integration_test(NAME itest_health_watch TIMEOUT 600
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_health_watch.py)
