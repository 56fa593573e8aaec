# Notification delivery (server/alerts/notify.c) and `monitord admin
# seal-secret`: outbox rows inserted with psql, sent to receivers the test
# serves on loopback (signed webhooks, retries and dead letters, Slack and
# PagerDuty payloads), two replicas on one database.
mon_add_integration_test(NAME itest_alert_notify TIMEOUT 600
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_alert_notify.py)
