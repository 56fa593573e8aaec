# MetricsService.RecordMetrics end to end through python3-grpcio
# (tests/integration/test_metrics_ingest.py): storage as sent, idempotency,
# atomicity, every validation rule, limits, concurrent writers, SIGKILL during
# sustained ingest.
mon_add_integration_test(NAME itest_metrics_ingest TIMEOUT 600
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_metrics_ingest.py)
