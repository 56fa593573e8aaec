# MetricsService queries end to end through python3-grpcio (tests/integration/test_metrics_query.py):
# ListMetricPoints, ListMetricNames and QueryMetrics (raw and rollup paths, AUTO, limits, paging)
# against SQL run with psql, the data model's three performance queries against the seed's SQL,
# and every validation rule.
mon_add_integration_test(NAME itest_metrics_query TIMEOUT 600
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_metrics_query.py)
