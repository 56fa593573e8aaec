# The health prober (server/health/prober.c) against targets the test serves
# on loopback: HTTP up, slow, 500, flaky, hanging, redirecting (same host,
# 127.0.0.2), a closed port, and a python3-grpcio grpc.health.v1 server; two replicas on one database; the
# network policy, cross-host redirects and RunHealthCheck's concurrency cap.
mon_add_integration_test(NAME itest_prober TIMEOUT 600
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_prober.py)
