# AlertsService rules, escalation policies and silences end to end through python3-grpcio
# (tests/integration/test_alert_rules.py): every RPC, every validation rule, paging and
# filters, field masks, audit rows, the rule change log and next_evaluation_at checked with psql.
mon_add_integration_test(NAME itest_alert_rules TIMEOUT 600
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_alert_rules.py)
