# WatchMetrics end to end through python3-grpcio (tests/integration/test_metrics_watch.py):
# filters, batching, downsampling, a slow subscriber's exact gap with bounded memory,
# resume, an expired cursor, two replicas, validation and heartbeats.
mon_add_integration_test(NAME itest_metrics_watch TIMEOUT 900
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_metrics_watch.py)
