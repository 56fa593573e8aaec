"""Streams that stop reading must not starve the server's other calls.

A monitord with its default 8 worker threads and 8 pooled PostgreSQL
connections (passed explicitly, so the test keeps its meaning if the
defaults change) gets a backlog of thousands of health changes (made
through ReportHealthCheck) and of alert changes. Sixteen WatchAlerts
streams and sixteen WatchServiceHealth streams (two kinds of the one
stream module, server/stream/) then resume before the backlog on a channel
of their own and never read: the client's per-stream flow-control window
is kept small (no BDP probing), so the server can hand each stream only a
few dozen changes and the rest of the backlog fills the stream's queue of
--stream-queue-max 1024 messages and waits. Four times as many stalled
streams as workers: a server that replayed a backlog on a worker thread
(or held a pooled connection while a client does not read) would have
every worker and connection busy.

While the thirty-two stay stalled, unary calls (HealthService.GetService and
ListServices, which need a worker and a connection, and the standard
grpc.health.v1.Health/Check) are made one after another for several
seconds; every one must answer OK within its deadline of 5 s. Then each
stalled stream is read: it must deliver every change after its cursor, in
sequence order, with no gap and no repeat (the catch-up resumes when the
client reads). The server must exit cleanly (no sanitizer report).

Nothing asserts on latency: the deadline is generous, and what fails is a
call that does not answer at all while the streams are stalled."""

import subprocess
import time
import unittest
from concurrent import futures

import grpc

import harness


harness.api_stubs()
from google.protobuf import timestamp_pb2  # noqa: E402
from monitoring.v1 import alerts_pb2, alerts_pb2_grpc, common_pb2, health_pb2, health_pb2_grpc  # noqa: E402

BACKLOG = 4000        # changes; each stalled stream is sent all of them
REAL_REPORTS = 40     # of them made through ReportHealthCheck (see make_backlog)
MESSAGE_BYTES = 1000  # error_message of each change: the backlog is about 4 MB per stream
STALLED = 16          # twice the default workers and pooled connections
QUEUE_MAX = 1024      # the server's default --stream-queue-max, passed explicitly
PROBE_S = 8           # how long unary calls are made while the streams are stalled
CALL_DEADLINE_S = 5
# A small per-stream window and no BDP probing: a stream that is not read
# stops taking data after 16 KiB, far below the backlog, so the server's
# queue for it fills.
STALLED_CHANNEL_OPTIONS = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16384),
                           ("grpc.use_local_subchannel_pool", 1)]


def psql(conninfo, sql):
    r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql], check=True,
                       capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if line != ""]


class StalledStreamsTest(unittest.TestCase):
    def setUp(self):
        self.db = harness.fresh_database("streamstalled")
        # The worker and pool defaults explicitly; no per-caller rate limit,
        # so that making the backlog is not throttled.
        self.srv = harness.Monitord(self.db, extra_args=[
            "--worker-threads", "8", "--db-pool-size", "8", "--stream-queue-max", str(QUEUE_MAX),
            "--rate-limit-per-s", "0"])
        self.srv.wait_serving("monitoring.v1.HealthService")
        self.stub = health_pb2_grpc.HealthServiceStub(self.srv.channel)
        self.auth = self.srv.auth()

    def tearDown(self):
        self.srv.assert_clean_exit(self)

    def make_backlog(self, sid):
        """BACKLOG changes of sid: REAL_REPORTS made through ReportHealthCheck,
        alternating DOWN and HEALTHY, then copies of the last two of the rows
        the server wrote for them (alternating too), inserted under the
        server's event lock so that sequence order stays commit order.
        Reporting thousands of checks one by one takes minutes on a busy
        machine; the copies are rows exactly as the server writes them."""
        big = "x" * MESSAGE_BYTES
        for i in range(REAL_REPORTS):
            status = common_pb2.SERVICE_STATUS_DOWN if i % 2 == 0 else common_pb2.SERVICE_STATUS_HEALTHY
            check = health_pb2.HealthCheck(service_id=sid, status=status, error_message=big)
            self.stub.ReportHealthCheck(health_pb2.ReportHealthCheckRequest(check=check), metadata=self.auth,
                                        timeout=30)
        columns = "service_id, kind, previous_status, status, check_id, response_time, error_message, checked_at"
        psql(self.db, "BEGIN; SELECT pg_advisory_xact_lock(7206001);"
                      " WITH last2 AS (SELECT row_number() OVER (ORDER BY seq) - 1 AS k, %(c)s"
                      "   FROM (SELECT * FROM tb_service_health_event WHERE service_id = '%(sid)s'"
                      "         ORDER BY seq DESC LIMIT 2) t)"
                      " INSERT INTO tb_service_health_event (%(c)s)"
                      " SELECT %(c)s FROM generate_series(1, %(n)d) g JOIN last2 ON last2.k = g %% 2 ORDER BY g;"
                      " COMMIT" % {"c": columns, "sid": sid, "n": BACKLOG - REAL_REPORTS})

    def make_alert_backlog(self, rid, aid):
        """BACKLOG changes of one ACTIVE alert of rule rid, appended in one
        transaction through mon_alert_event_append, as the alert store
        appends them (each payload an AlertChange with a large message)."""
        psql(self.db, "INSERT INTO tb_alert_rule (id, name, severity, metric_name, comparison_operator, threshold,"
                      " created_by) VALUES ('%s', 'stalled streams', 'critical', 'http_request', 'gt', 1, 'test');"
                      " INSERT INTO tb_alert (id, alert_rule_id, status, severity, message, current_value, threshold)"
                      " VALUES ('%s', '%s', 'active', 'critical', 'over', 2, 1)" % (rid, aid, rid))
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        change = alerts_pb2.AlertChange(
            kind=alerts_pb2.ALERT_CHANGE_KIND_UPDATED, changed_at=now,
            alert=alerts_pb2.Alert(id=aid, alert_rule_id=rid, status=common_pb2.ALERT_STATUS_ACTIVE,
                                   severity=common_pb2.SEVERITY_LEVEL_CRITICAL, message="y" * MESSAGE_BYTES))
        payload = change.SerializeToString().hex()
        # The first change is where the streams resume from; the backlog is every change after it.
        first = int(psql(self.db, "BEGIN; SELECT mon_alert_event_append('%s', '%s', 'created', 'active', NULL,"
                                  " 'critical', NULL, decode('%s', 'hex')); COMMIT" % (aid, rid, payload))[-1])
        psql(self.db, "BEGIN; SELECT count(mon_alert_event_append('%s', '%s', 'updated', 'active', 'active',"
                      " 'critical', NULL, decode('%s', 'hex'))) FROM generate_series(1, %d); COMMIT"
                      % (aid, rid, payload, BACKLOG))
        return first

    def probe(self, sid, stop_at):
        """Unary calls one after another until stop_at; returns how many answered, and the failures."""
        health = harness.health_pb2_grpc.HealthStub(self.srv.channel)
        calls = [
            lambda: self.stub.GetService(health_pb2.GetServiceRequest(service_id=sid), metadata=self.auth,
                                         timeout=CALL_DEADLINE_S),
            lambda: self.stub.ListServices(health_pb2.ListServicesRequest(), metadata=self.auth,
                                           timeout=CALL_DEADLINE_S),
            lambda: health.Check(harness.health_pb2.HealthCheckRequest(service="monitoring.v1.HealthService"),
                                 timeout=CALL_DEADLINE_S),
        ]
        answered, failures = 0, []
        i = 0
        while time.time() < stop_at:
            try:
                calls[i % len(calls)]()
                answered += 1
            except grpc.RpcError as e:
                failures.append("call %d: %s %s" % (i % len(calls), e.code(), e.details()))
            i += 1
        return answered, failures

    def test_stalled_streams_do_not_starve_unary_calls(self):
        sid = "stalled-%d" % int(time.time() * 1000)
        svc = health_pb2.MonitoredService(id=sid, name="stalled streams", service_type="api")
        self.stub.CreateService(health_pb2.CreateServiceRequest(service=svc), metadata=self.auth, timeout=10)
        self.make_backlog(sid)
        expected = [int(s) for s in psql(self.db, "SELECT seq FROM tb_service_health_event"
                                                  " WHERE service_id = '%s' AND seq > 1 ORDER BY seq" % sid)]
        self.assertGreaterEqual(len(expected), BACKLOG)
        rid, aid = "rule-" + sid, "alt-" + sid
        first = self.make_alert_backlog(rid, aid)
        alert_expected = [int(s) for s in psql(self.db, "SELECT seq FROM tb_alert_event WHERE alert_id = '%s'"
                                                        " AND seq > %d ORDER BY seq" % (aid, first))]
        self.assertEqual(len(alert_expected), BACKLOG)

        stalled_channel = grpc.insecure_channel(self.srv.address, options=STALLED_CHANNEL_OPTIONS)
        stalled_stub = health_pb2_grpc.HealthServiceStub(stalled_channel)
        req = health_pb2.WatchServiceHealthRequest(service_ids=[sid], include_every_check=True,
                                                   resume_after_sequence=1)
        streams = [stalled_stub.WatchServiceHealth(req, metadata=self.auth) for _ in range(STALLED)]
        alerts_stub = alerts_pb2_grpc.AlertsServiceStub(stalled_channel)
        alert_req = alerts_pb2.WatchAlertsRequest(alert_rule_ids=[rid], resume_after_sequence=first)
        alert_streams = [alerts_stub.WatchAlerts(alert_req, metadata=self.auth) for _ in range(STALLED)]
        try:
            # Initial metadata comes with the first changes: every stream's
            # replay has begun (and, not being read, stalls).
            for s in streams + alert_streams:
                s.initial_metadata()
            answered, failures = self.probe(sid, time.time() + PROBE_S)
            self.assertEqual(failures, [], "unary calls failed while %d streams were stalled" % (2 * STALLED))
            self.assertGreater(answered, 0)
            for s in streams + alert_streams:
                self.assertTrue(s.is_active(), "a stalled stream was ended: %s" % s)

            # Reading now: each gets the whole backlog after its cursor, in order.
            def read_until(last):
                def read(s):
                    got = []
                    for m in s:
                        if m.WhichOneof("event") == "change":
                            got.append(m.sequence)
                            if m.sequence >= last:
                                break
                    return got
                return read

            with futures.ThreadPoolExecutor(max_workers=4) as pool:
                for k, got in enumerate(pool.map(read_until(expected[-1]), streams)):
                    self.assertEqual(len(got), len(expected), "stream %d" % k)
                    self.assertEqual(got, expected, "stream %d: a gap, a repeat or out of order" % k)
                for k, got in enumerate(pool.map(read_until(alert_expected[-1]), alert_streams)):
                    self.assertEqual(got, alert_expected, "alerts stream %d: a gap, a repeat or out of order" % k)
        finally:
            for s in streams + alert_streams:
                s.cancel()
            stalled_channel.close()
        # The server answers after the streams are gone, too.
        self.srv.wait_serving("monitoring.v1.HealthService")


if __name__ == "__main__":
    harness.main()
