"""HealthService.WatchServiceHealth end to end, through python3-grpcio
against real monitord processes on one PostgreSQL database: a status change
reaches a subscriber; a change reported on one replica reaches a subscriber
of another; a stream resumed after a dropped connection gets exactly the
changes it missed, then live ones; a cursor older than the retained change
log (rows deleted as retention would) gets CURSOR_EXPIRED and a fresh
snapshot; a subscriber that stops reading (server started with
--stream-queue-max 4) is told RESUME_REQUIRED (FELL_BEHIND) and ended with
RESOURCE_EXHAUSTED, and the server stays healthy; a server that stops tells
its streams RESUME_REQUIRED (SERVER_SHUTDOWN) with the cursor of the last
change sent, then ends them with UNAVAILABLE, and resuming from that cursor
on a new server gets the changes made meanwhile, no more, no less.

Services are created and checks reported through CreateService and
ReportHealthCheck. Waits are bounded polls; nothing asserts on timing."""

import os
import queue
import subprocess
import threading
import time
import unittest

import grpc

import harness


harness.api_stubs()
from monitoring.v1 import common_pb2, health_pb2, health_pb2_grpc  # noqa: E402

SC = grpc.StatusCode
HEALTHY = common_pb2.SERVICE_STATUS_HEALTHY
DEGRADED = common_pb2.SERVICE_STATUS_DEGRADED
DOWN = common_pb2.SERVICE_STATUS_DOWN
UNKNOWN = common_pb2.SERVICE_STATUS_UNKNOWN
STATUS_NAMES = {HEALTHY: "healthy", DEGRADED: "degraded", DOWN: "down", UNKNOWN: "unknown"}
K_SNAPSHOT_COMPLETE = common_pb2.STREAM_CONTROL_KIND_SNAPSHOT_COMPLETE
K_CURSOR_EXPIRED = common_pb2.STREAM_CONTROL_KIND_CURSOR_EXPIRED
K_RESUME_REQUIRED = common_pb2.STREAM_CONTROL_KIND_RESUME_REQUIRED
K_HEARTBEAT = common_pb2.STREAM_CONTROL_KIND_HEARTBEAT
STATUS_CHANGED = health_pb2.SERVICE_CHANGE_KIND_STATUS_CHANGED
WAIT_S = 20


def psql(conninfo, sql):
    r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql], check=True,
                       capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if line != ""]


def quote(text):
    return "'" + text.replace("'", "''") + "'"


class Watch:
    """A WatchServiceHealth stream read by a thread into a queue; reading can be paused."""

    def __init__(self, srv, request, channel=None):
        self.call = health_pb2_grpc.HealthServiceStub(channel or srv.channel).WatchServiceHealth(
            request, metadata=srv.auth())
        self.q = queue.Queue()
        self.reading = threading.Event()
        self.reading.set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while True:
                self.reading.wait()
                self.q.put(next(self.call))
        except StopIteration:
            self.q.put(("end", None))
        except grpc.RpcError as e:
            self.q.put(("error", e))

    def get(self, timeout=WAIT_S):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no stream event within %ss" % timeout)

    def until_control(self, kind):
        """The messages before the first control of kind, and that control."""
        before = []
        while True:
            m = self.get()
            if isinstance(m, tuple):
                raise AssertionError("stream ended (%s) before control %d" % (m, kind))
            if m.WhichOneof("event") == "control" and m.control.kind == kind:
                return before, m
            before.append(m)

    def changes(self, n):
        """The next n change events (heartbeats skipped)."""
        out = []
        while len(out) < n:
            m = self.get()
            if isinstance(m, tuple):
                raise AssertionError("stream ended (%s) after %d changes" % (m, len(out)))
            if m.WhichOneof("event") == "control" and m.control.kind == K_HEARTBEAT:
                continue
            kind = m.WhichOneof("event")
            if kind != "change":
                raise AssertionError("expected a change, got %s" % m)
            out.append(m)
        return out

    def close(self):
        self.call.cancel()
        self.reading.set()
        self.thread.join(timeout=WAIT_S)


class Env:
    """One database and server, with helpers to create services, report checks and watch."""

    def __init__(self, prefix, extra_args=()):
        self.db = harness.fresh_database(prefix)
        self.srv = harness.Monitord(self.db, extra_args=extra_args)
        self.srv.wait_serving("monitoring.v1.HealthService")
        self.stub = health_pb2_grpc.HealthServiceStub(self.srv.channel)
        self.n = 0
        first = next(self.stub.WatchServiceHealth(health_pb2.WatchServiceHealthRequest(service_ids=["none"]),
                                                  metadata=self.srv.auth(), timeout=10))
        assert first.control.kind == K_SNAPSHOT_COMPLETE, first

    def new_service(self):
        self.n += 1
        sid = "svc-%d-%d" % (os.getpid(), self.n)
        svc = health_pb2.MonitoredService(id=sid, name="watch test %s" % sid, service_type="api")
        self.stub.CreateService(health_pb2.CreateServiceRequest(service=svc), metadata=self.srv.auth(), timeout=10)
        return sid

    def report(self, sid, status, error="", srv=None):
        """Records a check that sets sid's status (through srv, by default the env's server)."""
        srv = srv or self.srv
        check = health_pb2.HealthCheck(service_id=sid, status=status, error_message=error)
        health_pb2_grpc.HealthServiceStub(srv.channel).ReportHealthCheck(
            health_pb2.ReportHealthCheckRequest(check=check), metadata=srv.auth(), timeout=10)

    def watch(self, srv=None, channel=None, **kw):
        return Watch(srv or self.srv, health_pb2.WatchServiceHealthRequest(**kw), channel)


class HealthWatchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = Env("healthwatch")
        cls.srv = cls.env.srv
        cls.db = cls.env.db
        cls.stub = cls.env.stub

    @classmethod
    def tearDownClass(cls):
        cls.env.srv.assert_clean_exit(unittest.TestCase())

    def new_service(self):
        return self.env.new_service()

    def report(self, sid, status, error="", srv=None):
        self.env.report(sid, status, error, srv)

    def watch(self, srv=None, **kw):
        return self.env.watch(srv, **kw)

    def test_change_reaches_subscriber(self):
        sid = self.new_service()
        w = self.watch(service_ids=[sid])
        try:
            snap, done = w.until_control(K_SNAPSHOT_COMPLETE)
            self.assertEqual([m.snapshot.id for m in snap], [sid])
            self.assertEqual(done.sequence, done.control.resume_after_sequence)
            self.report(sid, DOWN, "connection refused")
            (c,) = w.changes(1)
            self.assertEqual(c.change.kind, STATUS_CHANGED)
            self.assertEqual(c.change.service.id, sid)
            self.assertEqual(c.change.service.status, DOWN)
            self.assertEqual(c.change.previous_status, snap[0].snapshot.status)
            self.assertEqual(c.change.check.error_message, "connection refused")
            self.assertGreater(c.sequence, done.control.resume_after_sequence)
        finally:
            w.close()

    def test_many_subscribers_each_get_every_change(self):
        # Enough subscribers for the hub to split its fan-out between two threads.
        sid = self.new_service()
        watches = [self.watch(service_ids=[sid]) for _ in range(100)]
        try:
            for w in watches:
                w.until_control(K_SNAPSHOT_COMPLETE)
            self.report(sid, DOWN, "down for all")
            self.report(sid, HEALTHY)
            for w in watches:
                a, b = w.changes(2)
                self.assertEqual((a.change.service.status, b.change.service.status), (DOWN, HEALTHY))
                self.assertLess(a.sequence, b.sequence)
        finally:
            for w in watches:
                w.close()

    def test_filters_and_invalid_requests(self):
        a, b = self.new_service(), self.new_service()
        w = self.watch(service_ids=[a], statuses=[DOWN])
        try:
            w.until_control(K_SNAPSHOT_COMPLETE)
            self.report(b, DOWN)     # another service: filtered out
            self.report(a, HEALTHY)  # neither entering nor leaving DOWN
            self.report(a, DOWN)     # entering DOWN
            (c,) = w.changes(1)
            self.assertEqual((c.change.service.id, c.change.service.status), (a, DOWN))
        finally:
            w.close()
        for req, field in ((health_pb2.WatchServiceHealthRequest(resume_after_sequence=-1), "resume_after_sequence"),
                           (health_pb2.WatchServiceHealthRequest(statuses=[common_pb2.SERVICE_STATUS_UNSPECIFIED]),
                            "statuses")):
            with self.assertRaises(grpc.RpcError) as cm:
                list(self.stub.WatchServiceHealth(req, metadata=self.srv.auth(), timeout=10))
            self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT)
            self.assertIn(field, cm.exception.details())

    def test_change_on_one_replica_reaches_another(self):
        other = harness.Monitord(self.db)
        try:
            other.wait_serving("monitoring.v1.HealthService")
            other.use_admin_key(self.srv.admin_key())  # one database, one bootstrap
            sid = self.new_service()
            w = self.watch(srv=other, service_ids=[sid])
            try:
                w.until_control(K_SNAPSHOT_COMPLETE)
                self.report(sid, DEGRADED, srv=self.srv)
                (c,) = w.changes(1)
                self.assertEqual((c.change.service.id, c.change.service.status), (sid, DEGRADED))
            finally:
                w.close()
        finally:
            other.assert_clean_exit(self)

    def test_resume_after_dropped_connection(self):
        sid = self.new_service()
        w = self.watch(service_ids=[sid])
        _, done = w.until_control(K_SNAPSHOT_COMPLETE)
        statuses = [DOWN, HEALTHY, DEGRADED]
        for st in statuses:
            self.report(sid, st)
        seen = w.changes(3)
        self.assertEqual([m.change.service.status for m in seen], statuses)
        cursor = seen[-1].sequence
        w.close()  # the connection drops; changes go on meanwhile

        missed = [DOWN, DEGRADED, HEALTHY, DOWN]
        for st in missed:
            self.report(sid, st)
        w = self.watch(service_ids=[sid], resume_after_sequence=cursor)
        try:
            replay = w.changes(len(missed))
            self.assertEqual([m.change.service.status for m in replay], missed)
            seqs = [m.sequence for m in replay]
            self.assertEqual(seqs, sorted(set(seqs)))
            self.assertGreater(seqs[0], cursor)
            self.report(sid, HEALTHY)
            (live,) = w.changes(1)
            self.assertEqual(live.change.service.status, HEALTHY)
            self.assertGreater(live.sequence, seqs[-1])
            self.assertTrue(w.q.empty(), "no duplicate after the live change")
        finally:
            w.close()

    def test_expired_cursor_gets_snapshot(self):
        sid = self.new_service()
        for st in (DOWN, HEALTHY, DOWN):
            self.report(sid, st)
        top = int(psql(self.db, "SELECT max(seq) FROM tb_service_health_event")[0])
        old_cursor = max(1, top - 2)
        # Retention: everything up to and including the cursor's successor is gone.
        psql(self.db, "DELETE FROM tb_service_health_event WHERE seq <= %d" % (old_cursor + 1))
        w = self.watch(service_ids=[sid], resume_after_sequence=old_cursor)
        try:
            first = w.get()
            self.assertEqual(first.WhichOneof("event"), "control")
            self.assertEqual(first.control.kind, K_CURSOR_EXPIRED)
            snap, done = w.until_control(K_SNAPSHOT_COMPLETE)
            self.assertEqual([(m.snapshot.id, m.snapshot.status) for m in snap], [(sid, DOWN)])
            self.assertGreaterEqual(done.control.resume_after_sequence, top)
            self.report(sid, HEALTHY)
            (c,) = w.changes(1)
            self.assertEqual(c.change.service.status, HEALTHY)
        finally:
            w.close()


class RestartTest(unittest.TestCase):
    def test_shutdown_tells_where_to_resume(self):
        t = Env("healthwatchrestart")
        sid = t.new_service()
        # A channel of its own: stopping the server closes the harness's channel first.
        channel = grpc.insecure_channel(t.srv.address)
        w = t.watch(service_ids=[sid], channel=channel)
        w.until_control(K_SNAPSHOT_COMPLETE)
        t.report(sid, DOWN)
        (last,) = w.changes(1)
        key = t.srv.admin_key()
        code = t.srv.stop()
        self.assertEqual(code, 0, t.srv.read_log()[-4000:])
        # Told where to resume (the last change it got), then UNAVAILABLE.
        before, notice = w.until_control(K_RESUME_REQUIRED)
        self.assertEqual([m.control.kind for m in before], [K_HEARTBEAT] * len(before))
        self.assertEqual(notice.control.reason, common_pb2.STREAM_END_REASON_SERVER_SHUTDOWN)
        self.assertEqual(notice.control.resume_after_sequence, last.sequence)
        self.assertEqual(notice.sequence, last.sequence)
        end = w.get()
        self.assertEqual(end[0], "error")
        self.assertEqual(end[1].code(), SC.UNAVAILABLE)
        channel.close()

        srv = harness.Monitord(t.db)
        srv._admin_key = key
        try:
            srv.wait_serving("monitoring.v1.HealthService")
            missed = [HEALTHY, DEGRADED]
            for st in missed:
                t.report(sid, st, srv=srv)
            w = t.watch(srv=srv, service_ids=[sid], resume_after_sequence=notice.control.resume_after_sequence)
            try:
                replay = w.changes(len(missed))
                self.assertEqual([m.change.service.status for m in replay], missed)
                self.assertGreater(replay[0].sequence, last.sequence)
                t.report(sid, DOWN, srv=srv)
                (live,) = w.changes(1)
                self.assertEqual(live.change.service.status, DOWN)
                time.sleep(1)
                self.assertTrue(w.q.empty(), "no duplicate after the live change")
            finally:
                w.close()
        finally:
            srv.assert_clean_exit(self)


class SlowSubscriberTest(unittest.TestCase):
    """A subscriber that stops reading, against a server with --stream-queue-max 4."""

    def test_slow_subscriber_is_told_to_resume(self):
        t = Env("healthwatchslow", extra_args=["--stream-queue-max", "4"])
        srv, db = t.srv, t.db
        try:
            sid = t.new_service()
            w = t.watch(srv=srv, service_ids=[sid])
            w.until_control(K_SNAPSHOT_COMPLETE)
            w.reading.clear()  # the reader thread may take one more message, then stops
            # Big changes fill the transport's flow-control window, then the queue of 4.
            big = "x" * 4000
            fell_behind = False
            for i in range(3000):
                t.report(sid, DOWN if i % 2 == 0 else HEALTHY, big)
                if i % 20 == 19 and "health watch subscriber fell behind" in srv.read_log():
                    fell_behind = True
                    break
            self.assertTrue(fell_behind, "the subscriber never fell behind")
            w.reading.set()
            got = []
            while True:
                m = w.get()
                if isinstance(m, tuple):
                    end = m
                    break
                got.append(m)
            self.assertEqual(end[0], "error")
            self.assertEqual(end[1].code(), SC.RESOURCE_EXHAUSTED)
            control = got[-1]
            self.assertEqual(control.control.kind, K_RESUME_REQUIRED)
            self.assertEqual(control.control.reason, common_pb2.STREAM_END_REASON_FELL_BEHIND)
            changes = [m for m in got if m.WhichOneof("event") == "change"]
            self.assertTrue(changes)
            self.assertEqual(control.control.resume_after_sequence, changes[-1].sequence)

            # The server is healthy, and the cursor resumes with the next change, no gap.
            srv.wait_serving("monitoring.v1.HealthService")
            w2 = t.watch(srv=srv, service_ids=[sid], resume_after_sequence=control.control.resume_after_sequence)
            try:
                nxt = w2.changes(1)[0]
                self.assertEqual(nxt.sequence, int(psql(db, "SELECT min(seq) FROM tb_service_health_event WHERE "
                                                        "service_id = %s AND kind = 'status_changed' AND seq > %d"
                                                        % (quote(sid), control.control.resume_after_sequence))[0]))
            finally:
                w2.close()
        finally:
            srv.assert_clean_exit(self)


if __name__ == "__main__":
    harness.main()
