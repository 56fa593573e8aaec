# Idempotency keys (AIP-155) end to end through python3-grpcio
# (tests/integration/test_idempotency.py): retried acknowledgements,
# creates and deletes answer the first outcome and change nothing,
# concurrent duplicates, a key reused with another request, keys per
# caller, failed calls keep nothing, pruned keys run again, key
# validation, RecordMetrics, RunHealthCheck, monctl --idempotency-key.
mon_add_integration_test(NAME itest_idempotency TIMEOUT 300
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_idempotency.py)
