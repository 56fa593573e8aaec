# Resumable event streams (server/stream/) under load, through python3-grpcio.
# test_stream_stalled.py: sixteen WatchAlerts and sixteen WatchServiceHealth
# streams replaying a large backlog that never read (twice the default workers and pooled connections)
# do not keep unary calls from answering, and each later gets the whole
# backlog in order.
mon_add_integration_test(NAME itest_stream_stalled TIMEOUT 300
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_stream_stalled.py)
# test_stream_fanout.py: 2000 WatchServiceHealth subscribers get a burst of 200
# changes while 400 of them cancel mid-burst and unary calls are made; every
# remaining subscriber gets every change in order, no gap, no repeat.
mon_add_integration_test(NAME itest_stream_fanout TIMEOUT 600
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_stream_fanout.py)
