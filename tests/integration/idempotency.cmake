# Idempotency keys (AIP-155) end to end through python3-grpcio
# (tests/integration/test_idempotency.py): retried acknowledgements and
# creates answer the first outcome and change nothing, concurrent
# duplicates, a key reused with another request, keys per caller, failed
# calls keep nothing, pruned keys run again, RecordMetrics.
mon_add_integration_test(NAME itest_idempotency TIMEOUT 300
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_idempotency.py)
