"""AlertsService.WatchAlerts end to end, through python3-grpcio against real
monitord processes on one PostgreSQL database: a snapshot of the unresolved
alerts matching the filters, then every matching change in sequence order
(an alert leaving the filtered statuses is shown leaving; exclude_updates
drops UPDATED); a stream resumed with its cursor gets exactly the changes it
missed, on the same replica, on another replica and after a restart (the
stopping server sends RESUME_REQUIRED (SERVER_SHUTDOWN) with the cursor,
then UNAVAILABLE); a
cursor older than the retained change log gets CURSOR_EXPIRED and a fresh
snapshot; heartbeats carry the cursor past filtered changes; a subscriber
that stops reading (server started with --stream-queue-max 4) is told
RESUME_REQUIRED (FELL_BEHIND) and ended with RESOURCE_EXHAUSTED; invalid
requests name the field; 1000 idle subscribers cost little server memory
and all get the next change.

Alerts and their changes are written by SQL as the alert store writes them:
the row of tb_alert, then mon_alert_event_append with the packed AlertChange,
in one transaction; one test changes alerts through AcknowledgeAlert and
ResolveAlert instead. Rules are never due, so the evaluator leaves the
alerts alone. Waits are bounded polls; nothing asserts on timing."""

import os
import queue
import subprocess
import sys
import threading
import time
import unittest

import grpc

import harness


harness.api_stubs()
from google.protobuf import timestamp_pb2  # noqa: E402
from monitoring.v1 import alerts_pb2, alerts_pb2_grpc, common_pb2  # noqa: E402

SC = grpc.StatusCode
ACTIVE = common_pb2.ALERT_STATUS_ACTIVE
ACKNOWLEDGED = common_pb2.ALERT_STATUS_ACKNOWLEDGED
RESOLVED = common_pb2.ALERT_STATUS_RESOLVED
SUPPRESSED = common_pb2.ALERT_STATUS_SUPPRESSED
PENDING = common_pb2.ALERT_STATUS_PENDING
STATUS_LABELS = {ACTIVE: "active", ACKNOWLEDGED: "acknowledged", RESOLVED: "resolved", SUPPRESSED: "suppressed",
                 PENDING: "pending"}
CRITICAL = common_pb2.SEVERITY_LEVEL_CRITICAL
WARNING = common_pb2.SEVERITY_LEVEL_WARNING
SEVERITY_LABELS = {CRITICAL: "critical", WARNING: "warning"}
CREATED = alerts_pb2.ALERT_CHANGE_KIND_CREATED
STATUS_CHANGED = alerts_pb2.ALERT_CHANGE_KIND_STATUS_CHANGED
UPDATED = alerts_pb2.ALERT_CHANGE_KIND_UPDATED
KIND_LABELS = {CREATED: "created", STATUS_CHANGED: "status-changed", UPDATED: "updated"}
K_SNAPSHOT_COMPLETE = common_pb2.STREAM_CONTROL_KIND_SNAPSHOT_COMPLETE
K_CURSOR_EXPIRED = common_pb2.STREAM_CONTROL_KIND_CURSOR_EXPIRED
K_RESUME_REQUIRED = common_pb2.STREAM_CONTROL_KIND_RESUME_REQUIRED
K_HEARTBEAT = common_pb2.STREAM_CONTROL_KIND_HEARTBEAT
WAIT_S = 20


def psql(conninfo, sql):
    r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql], check=True,
                       capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if line != ""]


def quote(text):
    return "'" + text.replace("'", "''") + "'"


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def is_sanitized_build():
    try:
        with open(os.path.join(harness.BUILD_DIR, "CMakeCache.txt")) as f:
            return "MON_SANITIZE:BOOL=ON" in f.read()
    except OSError:
        return True  # unknown: the lenient limit


class Watch:
    """A WatchAlerts stream read by a thread into a queue; reading can be paused."""

    def __init__(self, srv, request, channel=None):
        self.call = alerts_pb2_grpc.AlertsServiceStub(channel or srv.channel).WatchAlerts(request,
                                                                                         metadata=srv.auth())
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

    def until_control(self, kind, timeout=WAIT_S):
        """The messages before the first control of kind, and that control."""
        before = []
        while True:
            m = self.get(timeout)
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
            if m.WhichOneof("event") != "change":
                raise AssertionError("expected a change, got %s" % m)
            out.append(m)
        return out

    def assert_quiet(self, test, seconds=1.5):
        """Nothing but heartbeats arrives for a while (no duplicate, nothing filtered let through)."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                m = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            if not isinstance(m, tuple) and m.WhichOneof("event") == "control" and m.control.kind == K_HEARTBEAT:
                continue
            test.fail("unexpected event: %s" % (m,))

    def close(self):
        self.call.cancel()
        self.reading.set()
        self.thread.join(timeout=WAIT_S)


class Alerts:
    """Rules, alerts and changes written by SQL as the alert store writes them."""

    def __init__(self, db):
        self.db = db
        self.n = 0

    def _id(self, prefix):
        self.n += 1
        return "%s-%d-%d" % (prefix, os.getpid(), self.n)

    def new_rule(self, severity=CRITICAL):
        rid = self._id("rule")
        # Never due: the evaluator leaves its alerts to the test.
        psql(self.db, "INSERT INTO tb_alert_rule (id, name, severity, metric_name, comparison_operator, threshold,"
                      " created_by, next_evaluation_at) VALUES (%s, %s, %s, 'http_request', 'gt', 1, 'test',"
                      " 'infinity')"
                      % (quote(rid), quote("watch test " + rid), quote(SEVERITY_LABELS[severity])))
        return rid

    @staticmethod
    def payload(kind, aid, rid, status, previous, severity, message, actor=""):
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        change = alerts_pb2.AlertChange(kind=kind, previous_status=previous or 0, actor=actor, changed_at=now,
                                        alert=alerts_pb2.Alert(id=aid, alert_rule_id=rid, status=status,
                                                               severity=severity, message=message))
        return change.SerializeToString().hex()

    def append_sql(self, kind, aid, rid, status, previous, severity, message, actor=""):
        return ("SELECT mon_alert_event_append(%s, %s, %s, %s, %s, %s, %s, decode('%s', 'hex'))"
                % (quote(aid), quote(rid), quote(KIND_LABELS[kind]), quote(STATUS_LABELS[status]),
                   quote(STATUS_LABELS[previous]) if previous else "NULL", quote(SEVERITY_LABELS[severity]),
                   quote(actor) if actor else "NULL",
                   self.payload(kind, aid, rid, status, previous, severity, message, actor)))

    def new_alert(self, rid, status=ACTIVE, severity=CRITICAL, message="p95 over 1000 ms"):
        """Creates an alert of rule rid; returns (id, seq)."""
        aid = self._id("alt")
        out = psql(self.db, "BEGIN; INSERT INTO tb_alert (id, alert_rule_id, status, severity, message, current_value,"
                            " threshold, group_key) VALUES (%s, %s, %s, %s, %s, 2, 1, %s); %s; COMMIT"
                            % (quote(aid), quote(rid), quote(STATUS_LABELS[status]), quote(SEVERITY_LABELS[severity]),
                               quote(message), quote(aid),  # one open alert per rule and group: a group each
                               self.append_sql(CREATED, aid, rid, status, None, severity, message)))
        return aid, int(out[-1])

    def set_status(self, aid, rid, status, previous, severity=CRITICAL, actor="ops@example.com"):
        """Moves alert aid from previous to status; returns the change's seq."""
        out = psql(self.db, "BEGIN; UPDATE tb_alert SET status = %s, updated_at = now() WHERE id = %s; %s; COMMIT"
                            % (quote(STATUS_LABELS[status]), quote(aid),
                               self.append_sql(STATUS_CHANGED, aid, rid, status, previous, severity, "", actor)))
        return int(out[-1])

    def update(self, aid, rid, status, severity=CRITICAL, message="p95 at 1500 ms"):
        """Refreshes alert aid's value; returns the change's seq."""
        out = psql(self.db, "BEGIN; UPDATE tb_alert SET current_value = 3, message = %s, updated_at = now()"
                            " WHERE id = %s; %s; COMMIT"
                            % (quote(message), quote(aid),
                               self.append_sql(UPDATED, aid, rid, status, status, severity, message)))
        return int(out[-1])

    def top(self):
        return int(psql(self.db, "SELECT coalesce(max(seq), 0) FROM tb_alert_event")[0])


class Env:
    """One database and server, with the SQL writer and a watch helper."""

    def __init__(self, prefix, extra_args=(), env=None):
        self.db = harness.fresh_database(prefix)
        self.srv = harness.Monitord(self.db, extra_args=extra_args, env=env)
        self.srv.wait_serving("monitoring.v1.AlertsService")
        self.alerts = Alerts(self.db)

    def watch(self, srv=None, channel=None, **kw):
        return Watch(srv or self.srv, alerts_pb2.WatchAlertsRequest(**kw), channel)


class AlertWatchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = Env("alertwatch")
        cls.srv = cls.env.srv
        cls.db = cls.env.db
        cls.a = cls.env.alerts

    @classmethod
    def tearDownClass(cls):
        cls.env.srv.assert_clean_exit(unittest.TestCase())

    def watch(self, srv=None, **kw):
        return self.env.watch(srv, **kw)

    def test_snapshot_with_filters_then_live_changes(self):
        r1, r2 = self.a.new_rule(CRITICAL), self.a.new_rule(WARNING)
        a1, _ = self.a.new_alert(r1, ACTIVE)
        a2, _ = self.a.new_alert(r1, ACKNOWLEDGED)
        a3, _ = self.a.new_alert(r2, ACTIVE, WARNING)
        a4, s4 = self.a.new_alert(r1, ACTIVE)
        s4 = self.a.set_status(a4, r1, RESOLVED, ACTIVE)
        top = self.a.top()
        w = self.watch(alert_rule_ids=[r1, r2], statuses=[ACTIVE], severities=[CRITICAL])
        every = self.watch(alert_rule_ids=[r1, r2], exclude_updates=True)
        try:
            snap, done = w.until_control(K_SNAPSHOT_COMPLETE)
            self.assertEqual([m.snapshot.id for m in snap], [a1])
            self.assertEqual(snap[0].snapshot.status, ACTIVE)
            self.assertEqual(snap[0].sequence, snap[0].snapshot.sequence)
            self.assertGreater(snap[0].sequence, 0)
            self.assertEqual(done.sequence, done.control.resume_after_sequence)
            self.assertGreaterEqual(done.control.resume_after_sequence, top)
            snap_all, _ = every.until_control(K_SNAPSHOT_COMPLETE)
            self.assertEqual(sorted(m.snapshot.id for m in snap_all), sorted([a1, a2, a3]))
            self.assertNotIn(s4, [m.sequence for m in snap_all])

            # Live: leaving ACTIVE is shown; another severity, and a status change that
            # neither enters nor leaves ACTIVE, are not.
            s_ack = self.a.set_status(a1, r1, ACKNOWLEDGED, ACTIVE)
            s_other = self.a.set_status(a3, r2, ACKNOWLEDGED, ACTIVE, WARNING)
            s_res2 = self.a.set_status(a2, r1, RESOLVED, ACKNOWLEDGED)
            a5, s_new = self.a.new_alert(r1, ACTIVE)
            s_upd = self.a.update(a5, r1, ACTIVE)
            s_sup = self.a.set_status(a5, r1, SUPPRESSED, ACTIVE)
            got = w.changes(4)
            self.assertEqual([(m.sequence, m.change.kind, m.change.alert.id) for m in got],
                             [(s_ack, STATUS_CHANGED, a1), (s_new, CREATED, a5), (s_upd, UPDATED, a5),
                              (s_sup, STATUS_CHANGED, a5)])
            self.assertEqual((got[0].change.previous_status, got[0].change.alert.status), (ACTIVE, ACKNOWLEDGED))
            self.assertEqual(got[0].change.actor, "ops@example.com")
            self.assertEqual([m.change.alert.sequence for m in got], [m.sequence for m in got])
            w.assert_quiet(self)

            got = every.changes(5)
            self.assertEqual([m.sequence for m in got], [s_ack, s_other, s_res2, s_new, s_sup])
            self.assertNotIn(UPDATED, [m.change.kind for m in got])
        finally:
            w.close()
            every.close()

    def test_changes_made_through_the_api(self):
        # The alert store's own change records (AcknowledgeAlert, ResolveAlert), not the test's.
        rid = self.a.new_rule()
        aid, _ = self.a.new_alert(rid)
        stub = alerts_pb2_grpc.AlertsServiceStub(self.srv.channel)
        w = self.watch(alert_rule_ids=[rid])
        try:
            w.until_control(K_SNAPSHOT_COMPLETE)
            stub.AcknowledgeAlert(alerts_pb2.AcknowledgeAlertRequest(alert_id=aid, note="on it"),
                                  metadata=self.srv.auth(), timeout=10)
            stub.ResolveAlert(alerts_pb2.ResolveAlertRequest(alert_id=aid, note="fixed"), metadata=self.srv.auth(),
                              timeout=10)
            ack, res = w.changes(2)
            seqs = [int(x) for x in psql(self.db, "SELECT seq FROM tb_alert_event WHERE alert_id = %s ORDER BY seq"
                                                  % quote(aid))]
            self.assertEqual([ack.sequence, res.sequence], seqs[-2:])
            self.assertEqual((ack.change.kind, ack.change.previous_status, ack.change.alert.status),
                             (STATUS_CHANGED, ACTIVE, ACKNOWLEDGED))
            self.assertEqual(ack.change.alert.acknowledgment_note, "on it")
            self.assertEqual((res.change.previous_status, res.change.alert.status), (ACKNOWLEDGED, RESOLVED))
            self.assertEqual(res.change.alert.resolution_note, "fixed")
            self.assertTrue(ack.change.actor)
            self.assertEqual([m.change.alert.sequence for m in (ack, res)], [ack.sequence, res.sequence])
        finally:
            w.close()

    def test_resume_gets_exactly_the_missed_changes(self):
        rid = self.a.new_rule()
        aid, _ = self.a.new_alert(rid)
        w = self.watch(alert_rule_ids=[rid])
        w.until_control(K_SNAPSHOT_COMPLETE)
        seqs = [self.a.update(aid, rid, ACTIVE, message="v%d" % i) for i in range(3)]
        seen = w.changes(3)
        self.assertEqual([m.sequence for m in seen], seqs)
        cursor = seen[-1].sequence
        w.close()  # the connection drops; changes go on meanwhile

        missed = [self.a.set_status(aid, rid, ACKNOWLEDGED, ACTIVE)] + \
                 [self.a.update(aid, rid, ACKNOWLEDGED, message="m%d" % i) for i in range(3)]
        w = self.watch(alert_rule_ids=[rid], resume_after_sequence=cursor)
        try:
            replay = w.changes(len(missed))
            self.assertEqual([m.sequence for m in replay], missed)
            self.assertEqual(replay[0].change.alert.status, ACKNOWLEDGED)
            live = self.a.set_status(aid, rid, RESOLVED, ACKNOWLEDGED)
            (m,) = w.changes(1)
            self.assertEqual((m.sequence, m.change.alert.status), (live, RESOLVED))
            w.assert_quiet(self)
        finally:
            w.close()

    def test_resume_on_another_replica(self):
        other = harness.Monitord(self.db)
        other._admin_key = self.srv.admin_key()  # one database, one bootstrap
        try:
            other.wait_serving("monitoring.v1.AlertsService")
            rid = self.a.new_rule()
            aid, _ = self.a.new_alert(rid)
            w = self.watch(alert_rule_ids=[rid])
            w.until_control(K_SNAPSHOT_COMPLETE)
            first = self.a.update(aid, rid, ACTIVE)
            (m,) = w.changes(1)
            self.assertEqual(m.sequence, first)
            w.close()
            missed = [self.a.update(aid, rid, ACTIVE, message="x%d" % i) for i in range(3)]
            w = self.watch(srv=other, alert_rule_ids=[rid], resume_after_sequence=first)
            try:
                self.assertEqual([c.sequence for c in w.changes(3)], missed)
                live = self.a.set_status(aid, rid, ACKNOWLEDGED, ACTIVE)
                self.assertEqual([c.sequence for c in w.changes(1)], [live])
                w.assert_quiet(self)
            finally:
                w.close()
        finally:
            other.assert_clean_exit(self)

    def test_expired_cursor_gets_a_fresh_snapshot(self):
        rid = self.a.new_rule()
        aid, _ = self.a.new_alert(rid)
        seqs = [self.a.update(aid, rid, ACTIVE, message="e%d" % i) for i in range(3)]
        old_cursor = seqs[0]
        # Retention: everything up to and including the cursor's successor is gone.
        psql(self.db, "DELETE FROM tb_alert_event WHERE seq <= %d" % (old_cursor + 1))
        top = self.a.top()
        w = self.watch(alert_rule_ids=[rid], resume_after_sequence=old_cursor)
        try:
            first = w.get()
            self.assertEqual(first.WhichOneof("event"), "control")
            self.assertEqual(first.control.kind, K_CURSOR_EXPIRED)
            self.assertEqual(first.control.resume_after_sequence, old_cursor)
            snap, done = w.until_control(K_SNAPSHOT_COMPLETE)
            self.assertEqual([m.snapshot.id for m in snap], [aid])
            self.assertEqual(snap[0].snapshot.sequence, seqs[-1])
            self.assertGreaterEqual(done.control.resume_after_sequence, top)
            live = self.a.set_status(aid, rid, RESOLVED, ACTIVE)
            self.assertEqual([c.sequence for c in w.changes(1)], [live])
        finally:
            w.close()
        # A cursor this database never handed out is expired too.
        w = self.watch(alert_rule_ids=[rid], resume_after_sequence=self.a.top() + 1000)
        try:
            self.assertEqual(w.get().control.kind, K_CURSOR_EXPIRED)
            w.until_control(K_SNAPSHOT_COMPLETE)
        finally:
            w.close()

    def test_heartbeat_carries_the_cursor_past_filtered_changes(self):
        quiet_rule, busy_rule = self.a.new_rule(), self.a.new_rule()
        aid, _ = self.a.new_alert(busy_rule)
        w = self.watch(alert_rule_ids=[quiet_rule], heartbeat_interval=1)  # raised to the minimum, 5 s
        try:
            _, done = w.until_control(K_SNAPSHOT_COMPLETE)
            filtered = self.a.update(aid, busy_rule, ACTIVE)
            deadline = time.time() + 30
            while True:
                m = w.get(timeout=30)
                self.assertEqual(m.WhichOneof("event"), "control", m)
                self.assertEqual(m.control.kind, K_HEARTBEAT)
                self.assertEqual(m.sequence, m.control.resume_after_sequence)
                if m.control.resume_after_sequence >= filtered:
                    break
                self.assertLess(time.time(), deadline, "no heartbeat past the filtered change")
            self.assertGreater(m.control.resume_after_sequence, done.control.resume_after_sequence)
        finally:
            w.close()

    def test_invalid_requests_name_the_field(self):
        stub = alerts_pb2_grpc.AlertsServiceStub(self.srv.channel)
        R = alerts_pb2.WatchAlertsRequest
        for req, field in ((R(resume_after_sequence=-1), "resume_after_sequence"),
                           (R(statuses=[common_pb2.ALERT_STATUS_UNSPECIFIED]), "statuses[0]"),
                           (R(severities=[CRITICAL, common_pb2.SEVERITY_LEVEL_UNSPECIFIED]), "severities[1]"),
                           (R(alert_rule_ids=[""]), "alert_rule_ids[0]"),
                           (R(alert_rule_ids=["r"] * 1001), "alert_rule_ids"),
                           (R(heartbeat_interval=-5), "heartbeat_interval")):
            with self.assertRaises(grpc.RpcError) as cm:
                list(stub.WatchAlerts(req, metadata=self.srv.auth(), timeout=10))
            self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT, field)
            self.assertIn(field + ":", cm.exception.details())

    def test_viewer_role_required(self):
        with self.assertRaises(grpc.RpcError) as cm:
            list(alerts_pb2_grpc.AlertsServiceStub(self.srv.channel).WatchAlerts(
                alerts_pb2.WatchAlertsRequest(), timeout=10))
        self.assertEqual(cm.exception.code(), SC.UNAUTHENTICATED)


class RolledBackSequenceTest(unittest.TestCase):
    def test_resume_behind_a_rolled_back_sequence_is_not_expired(self):
        """One stream resumes at a sequence that was handed out and rolled back
        (no row has it) and goes live, so the hub's position is that sequence.
        A second stream resumes behind it with nothing in the log between: it
        is sent back to read the difference, finds nothing, and must go live
        too, not get CURSOR_EXPIRED (nothing was pruned). Both then get the
        next change, once."""
        t = Env("alertwatchrollback")
        try:
            a = t.alerts
            rid = a.new_rule()
            aid, first = a.new_alert(rid)
            psql(t.db, "BEGIN; %s; ROLLBACK" % a.append_sql(UPDATED, aid, rid, ACTIVE, ACTIVE, CRITICAL, "gone"))
            gone = int(psql(t.db, "SELECT last_value FROM seq_alert_event")[0])
            self.assertEqual(gone, first + 1)
            ahead = t.watch(alert_rule_ids=[rid], resume_after_sequence=gone, heartbeat_interval=5)
            behind = None
            try:
                # Its first heartbeat says it is live, at the rolled-back sequence.
                before, hb = ahead.until_control(K_HEARTBEAT, timeout=30)
                self.assertEqual((before, hb.control.resume_after_sequence), ([], gone))
                behind = t.watch(alert_rule_ids=[rid], resume_after_sequence=first, heartbeat_interval=5)
                before, hb = behind.until_control(K_HEARTBEAT, timeout=30)
                self.assertEqual([m.control.kind for m in before if m.WhichOneof("event") == "control"], [],
                                 "no CURSOR_EXPIRED, no snapshot")
                self.assertEqual((before, hb.control.resume_after_sequence), ([], gone))
                live = a.update(aid, rid, ACTIVE, message="after")
                for w in (ahead, behind):
                    (m,) = w.changes(1)
                    self.assertEqual(m.sequence, live)
                    w.assert_quiet(self)
            finally:
                ahead.close()
                if behind is not None:
                    behind.close()
        finally:
            t.srv.assert_clean_exit(self)


class RestartTest(unittest.TestCase):
    def test_resume_after_a_restart(self):
        t = Env("alertwatchrestart")
        rid = t.alerts.new_rule()
        aid, _ = t.alerts.new_alert(rid)
        # A channel of its own: stopping the server closes the harness's channel first.
        channel = grpc.insecure_channel(t.srv.address)
        w = t.watch(alert_rule_ids=[rid], channel=channel)
        w.until_control(K_SNAPSHOT_COMPLETE)
        first = t.alerts.update(aid, rid, ACTIVE)
        self.assertEqual([c.sequence for c in w.changes(1)], [first])
        key = t.srv.admin_key()
        code = t.srv.stop()
        self.assertEqual(code, 0, t.srv.read_log()[-4000:])
        # The stream is told where to resume (the last change it got), then ends with UNAVAILABLE.
        before, notice = w.until_control(K_RESUME_REQUIRED)
        self.assertEqual([m.control.kind for m in before], [K_HEARTBEAT] * len(before))
        self.assertEqual(notice.control.reason, common_pb2.STREAM_END_REASON_SERVER_SHUTDOWN)
        self.assertEqual(notice.control.resume_after_sequence, first)
        self.assertEqual(notice.sequence, first)
        end = w.get()
        self.assertEqual(end[0], "error")
        self.assertEqual(end[1].code(), SC.UNAVAILABLE)
        channel.close()

        missed = [t.alerts.update(aid, rid, ACTIVE, message="while down %d" % i) for i in range(3)]
        srv = harness.Monitord(t.db)
        srv._admin_key = key
        try:
            srv.wait_serving("monitoring.v1.AlertsService")
            w = t.watch(srv=srv, alert_rule_ids=[rid], resume_after_sequence=notice.control.resume_after_sequence)
            try:
                self.assertEqual([c.sequence for c in w.changes(3)], missed)
                live = t.alerts.set_status(aid, rid, ACKNOWLEDGED, ACTIVE)
                self.assertEqual([c.sequence for c in w.changes(1)], [live])
                w.assert_quiet(self)
            finally:
                w.close()
        finally:
            srv.assert_clean_exit(self)


class SlowSubscriberTest(unittest.TestCase):
    """A subscriber that stops reading, against a server with --stream-queue-max 4."""

    def test_slow_subscriber_is_told_to_resume(self):
        t = Env("alertwatchslow", extra_args=["--stream-queue-max", "4"])
        srv, db, a = t.srv, t.db, t.alerts
        try:
            rid = a.new_rule()
            aid, _ = a.new_alert(rid)
            w = t.watch(alert_rule_ids=[rid])
            w.until_control(K_SNAPSHOT_COMPLETE)
            w.reading.clear()  # the reader thread may take one more message, then stops
            # Big changes fill the transport's flow-control window, then the queue of 4.
            append = a.append_sql(UPDATED, aid, rid, ACTIVE, ACTIVE, CRITICAL, "x" * 4000)
            fell_behind = False
            for _ in range(60):
                psql(db, append + " FROM generate_series(1, 50)")
                if "alerts watch subscriber fell behind" in srv.read_log():
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
            seqs = [m.sequence for m in changes]
            self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))), "no gap before the end")

            # The server is healthy, and the cursor resumes with the next change, no gap.
            srv.wait_serving("monitoring.v1.AlertsService")
            w2 = t.watch(alert_rule_ids=[rid], resume_after_sequence=control.control.resume_after_sequence)
            try:
                nxt = w2.changes(1)[0]
                self.assertEqual(nxt.sequence, control.control.resume_after_sequence + 1)
            finally:
                w2.close()
        finally:
            srv.assert_clean_exit(self)


class IdleSubscribersTest(unittest.TestCase):
    """1000 idle subscribers: the server's memory per subscriber, and a change reaches them all."""

    SUBSCRIBERS = 1000

    def test_idle_subscribers(self):
        # AddressSanitizer's quarantine of freed memory off (when sanitized), so RSS shows live memory.
        asan = os.environ.get("ASAN_OPTIONS", "")
        t = Env("alertwatchidle", extra_args=["--max-concurrent-streams", "5000", "--max-streams-per-caller", "5000"],
                env={"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=0"})
        srv, a = t.srv, t.alerts
        calls = []
        try:
            rid = a.new_rule()
            aid, _ = a.new_alert(rid)
            stub = alerts_pb2_grpc.AlertsServiceStub(srv.channel)
            req = alerts_pb2.WatchAlertsRequest(alert_rule_ids=[rid])

            def open_streams(n):
                batch = [stub.WatchAlerts(req, metadata=srv.auth()) for _ in range(n)]
                for c in batch:  # snapshot, then SNAPSHOT_COMPLETE: the stream is registered and idle
                    while True:
                        m = next(c)
                        if m.WhichOneof("event") == "control":
                            break
                calls.extend(batch)

            open_streams(50)  # warm-up: threads, pools and caches the first streams bring
            time.sleep(1)
            before = rss_kb(srv.proc.pid)
            open_streams(self.SUBSCRIBERS - 50)
            time.sleep(2)
            after = rss_kb(srv.proc.pid)
            per_sub = (after - before) * 1024 / (self.SUBSCRIBERS - 50)
            print("idle WatchAlerts subscribers: %d, server RSS %d -> %d kB, %.1f KB per subscriber"
                  % (self.SUBSCRIBERS, before, after, per_sub / 1024), file=sys.stderr)
            # The goal is 20 KB in a release build, where this measures about 20.3 KB, nearly all of it
            # the RPC runtime's stream (WatchServiceHealth measures the same); sanitized builds pad
            # every allocation (about 38 KB).
            limit_kb = 60 if is_sanitized_build() else 24
            self.assertLess(per_sub / 1024, limit_kb)

            seq = a.update(aid, rid, ACTIVE)
            for c in calls:  # the change reaches every one (through the two-thread fan-out)
                while True:
                    m = next(c)
                    if m.WhichOneof("event") == "change":
                        break
                self.assertEqual(m.sequence, seq)
        finally:
            for c in calls:
                c.cancel()
            srv.assert_clean_exit(self)


if __name__ == "__main__":
    harness.main()
