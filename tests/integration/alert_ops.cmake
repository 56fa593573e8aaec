# AlertsService alert operations end to end through python3-grpcio
# (tests/integration/test_alert_ops.py): GetAlert, ListAlerts against the data
# model's active-alerts query, every acknowledge and resolve transition,
# EscalateAlert through a policy, the outbox, ListAlertNotifications and
# GetAlertStatistics against the data model's statistics query.
mon_add_integration_test(NAME itest_alert_ops TIMEOUT 600
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_alert_ops.py)
