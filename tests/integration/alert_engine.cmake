# The alert evaluator end to end through python3-grpcio (tests/integration/test_alert_engine.py):
# operators, pending period, auto-resolve, suppression window, hourly cap, escalation, testing rules,
# silences, restart, two replicas, event-driven latency, alerts through the API, retention and
# PreviewAlertRule.
mon_add_integration_test(NAME itest_alert_engine TIMEOUT 900
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_alert_engine.py)
