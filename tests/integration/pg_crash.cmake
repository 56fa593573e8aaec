# A PostgreSQL crash (pg_ctl stop -m immediate) while every write RPC is
# called concurrently, on a cluster of the test's own with fsync and
# synchronous_commit on (tests/integration/test_pg_crash.py): every
# acknowledged write survives, no batch is half stored.
mon_add_integration_test(NAME itest_pg_crash TIMEOUT 180
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_pg_crash.py)
