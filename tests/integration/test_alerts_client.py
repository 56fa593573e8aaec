"""The client side of AlertsService against a real monitord: the resuming
alerts watcher of libmonitoring, driven through `monctl alerts follow`,
while monitord is killed (SIGKILL) and stopped (SIGTERM, which ends streams
with RESUME_REQUIRED) and started again mid-stream as changes keep being
committed: every change the filter matches arrives exactly once, in
sequence order, and nothing else does; and monctl's other alerts commands
(rules create, get, list, delete; alerts list, ack and resolve with a note).

Alert changes are written by SQL as the alert store writes them (the row of
tb_alert, then mon_alert_event_append with the packed AlertChange, in one
transaction), so the watcher is tested without the evaluator."""

import json
import os
import select
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import harness

harness.api_stubs()
from google.protobuf import timestamp_pb2  # noqa: E402
from monitoring.v1 import alerts_pb2, common_pb2  # noqa: E402

MONCTL = os.path.join(harness.BUILD_DIR, "bin", "monctl")
ACTIVE = common_pb2.ALERT_STATUS_ACTIVE
CRITICAL = common_pb2.SEVERITY_LEVEL_CRITICAL
WAIT_S = 60


def psql(conninfo, sql):
    """Runs sql (read from stdin: it can be longer than an argument); returns the non-empty output lines."""
    r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", conninfo, "-f", "-"], input=sql,
                       check=True, capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if line != ""]


def quote(text):
    return "'" + text.replace("'", "''") + "'"


class Alerts:
    """Rules, alerts and changes written by SQL as the alert store writes them."""

    def __init__(self, db):
        self.db = db
        self.n = 0
        self.lock = threading.Lock()

    def _id(self, prefix):
        with self.lock:
            self.n += 1
            return "%s-%d-%d" % (prefix, os.getpid(), self.n)

    def new_rule(self):
        rid = self._id("rule")
        psql(self.db, "INSERT INTO tb_alert_rule (id, name, severity, metric_name, comparison_operator, threshold,"
                      " created_by) VALUES (%s, %s, 'critical', 'http_request', 'gt', 1, 'test')"
                      % (quote(rid), quote("client test " + rid)))
        return rid

    @staticmethod
    def _append(kind, aid, rid, message):
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        change = alerts_pb2.AlertChange(kind=kind, changed_at=now,
                                        alert=alerts_pb2.Alert(id=aid, alert_rule_id=rid, status=ACTIVE,
                                                               severity=CRITICAL, message=message))
        label = "created" if kind == alerts_pb2.ALERT_CHANGE_KIND_CREATED else "updated"
        prev = "NULL" if label == "created" else "'active'"
        return ("SELECT mon_alert_event_append(%s, %s, '%s', 'active', %s, 'critical', NULL, decode('%s', 'hex'))"
                % (quote(aid), quote(rid), label, prev, change.SerializeToString().hex()))

    def new_alert(self, rid):
        """Creates an ACTIVE alert of rule rid; returns (id, seq)."""
        aid = self._id("alt")
        out = psql(self.db, "BEGIN; INSERT INTO tb_alert (id, alert_rule_id, status, severity, message, current_value,"
                            " threshold) VALUES (%s, %s, 'active', 'critical', 'p95 over 1 ms', 2, 1); %s; COMMIT"
                            % (quote(aid), quote(rid), self._append(alerts_pb2.ALERT_CHANGE_KIND_CREATED, aid, rid,
                                                                     "p95 over 1 ms")))
        return aid, int(out[-1])

    def _update_sql(self, aid, rid, message):
        return ("BEGIN; UPDATE tb_alert SET message = %s, updated_at = now() WHERE id = %s; %s; COMMIT"
                % (quote(message), quote(aid), self._append(alerts_pb2.ALERT_CHANGE_KIND_UPDATED, aid, rid, message)))

    def update(self, aid, rid, message):
        """Refreshes alert aid; returns the change's seq."""
        return int(psql(self.db, self._update_sql(aid, rid, message))[-1])

    def updates(self, aid, rid, messages):
        """Refreshes alert aid once per message, each in its own transaction; returns the seqs."""
        return [int(s) for s in psql(self.db, "; ".join(self._update_sql(aid, rid, m) for m in messages))]


class Follower:
    """A `monctl alerts follow` process; collects its stdout lines as JSON."""

    def __init__(self, env, *args):
        self.err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([MONCTL, "alerts", "follow"] + list(args), stdout=subprocess.PIPE,
                                     stderr=self.err, env=env, text=True, bufsize=1)
        self.events = []

    def read_until(self, pred, timeout=WAIT_S):
        deadline = time.time() + timeout
        while not pred(self.events):
            left = deadline - time.time()
            if left <= 0:
                return False
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                line = self.proc.stdout.readline()
                if not line:
                    return pred(self.events)
                self.events.append(json.loads(line))
        return True

    def change_seqs(self):
        return [int(e["sequence"]) for e in self.events if "change" in e]

    def controls(self, kind):
        return [e for e in self.events if e.get("control", {}).get("kind") == kind]

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        self.err.seek(0)
        err = self.err.read()
        self.err.close()
        return self.proc.returncode, err


class AlertsClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = harness.fresh_database("itest_aclient")
        cls.srv = harness.Monitord(cls.db)
        cls.srv.wait_serving("monitoring.v1.AlertsService")
        cls.address = cls.srv.address
        cls.env = dict(os.environ, MONITORD_TARGET=cls.address, MONITORD_API_KEY=cls.srv.admin_key())
        cls.extra = None
        cls.alerts = Alerts(cls.db)

    @classmethod
    def tearDownClass(cls):
        cls.stop_server(signal.SIGTERM)

    @classmethod
    def stop_server(cls, sig):
        if cls.extra is not None:
            cls.extra.send_signal(sig)
            cls.extra.wait(timeout=60)
            cls.extra = None
        if cls.srv is not None:
            if sig == signal.SIGKILL:
                cls.srv.channel.close()
                cls.srv.proc.kill()
                cls.srv.proc.wait()
                cls.srv.log.close()
            else:
                cls.srv.stop(sig)
            cls.srv = None

    @classmethod
    def start_server(cls):
        """Starts monitord again on the same address; returns once it serves alerts."""
        tmp = tempfile.mkdtemp(prefix="mon-srv-")
        port_file = os.path.join(tmp, "port")
        deadline = time.time() + WAIT_S
        while True:
            cls.extra = subprocess.Popen([harness.MONITORD, "--listen", cls.address, "--port-file", port_file,
                                          "--database", cls.db, "--log-level", "warn"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while not os.path.exists(port_file) and cls.extra.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            if os.path.exists(port_file):
                return
            if time.time() > deadline:
                raise AssertionError("monitord did not start again on %s" % cls.address)
            # The port can still be held for a moment after a kill: try again.
            cls.extra.wait()
            time.sleep(0.2)

    def monctl(self, *args, stdin=None):
        return subprocess.run([MONCTL] + list(args), input=stdin, capture_output=True, text=True, env=self.env,
                              timeout=120)

    def test_rules_and_alert_commands(self):
        rule = {"name": "cli rule", "metricName": "cli.latency", "statistic": "METRIC_STATISTIC_P95",
                "comparisonOperator": "COMPARISON_OPERATOR_GT", "threshold": 500, "severity": "SEVERITY_LEVEL_CRITICAL"}
        r = self.monctl("alerts", "rules", "create", json.dumps(rule), "--status", "TESTING")
        self.assertEqual(r.returncode, 0, r.stderr)
        created = json.loads(r.stdout)["rule"]
        rid = created["id"]
        self.assertEqual(created["status"], "ALERT_RULE_STATUS_TESTING")
        r = self.monctl("alerts", "rules", "get", rid)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["rule"]["metricName"], "cli.latency")
        r = self.monctl("alerts", "rules", "list", '{"metricNames": ["cli.latency"]}')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([x["id"] for x in json.loads(r.stdout)["rules"]], [rid])

        aid, _ = self.alerts.new_alert(rid)
        r = self.monctl("alerts", "list", '{"alertRuleIds": ["%s"]}' % rid)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([x["id"] for x in json.loads(r.stdout)["alerts"]], [aid])
        r = self.monctl("alerts", "ack", aid, "--note", "on it")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["alert"]["status"], "ALERT_STATUS_ACKNOWLEDGED")
        r = self.monctl("alerts", "ack", aid, "--note", "again")
        self.assertEqual(r.returncode, 1)
        self.assertIn("FAILED_PRECONDITION", r.stderr)
        r = self.monctl("alerts", "resolve", aid, "--note", "fixed")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["alert"]["status"], "ALERT_STATUS_RESOLVED")
        self.assertEqual(psql(self.db, "SELECT status FROM tb_alert WHERE id = %s" % quote(aid)), ["resolved"])

        r = self.monctl("alerts", "rules", "delete", rid)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.monctl("alerts", "rules", "get", rid)
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT_FOUND", r.stderr)

    def test_follow_stops_on_a_failure_resuming_cannot_repair(self):
        env = dict(self.env, MONITORD_API_KEY="not-a-key")
        r = subprocess.run([MONCTL, "alerts", "follow"], capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("monctl: UNAUTHENTICATED", r.stderr)
        self.assertNotIn("resuming", r.stderr)
        r = self.monctl("alerts", "follow", '{"statuses": ["ALERT_STATUS_UNSPECIFIED"]}')
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("monctl: INVALID_ARGUMENT", r.stderr)

    def test_usage_errors(self):
        for args in (["alerts"], ["alerts", "rules", "get"], ["alerts", "ack"], ["alerts", "rules", "create"],
                     ["alerts", "rules", "create", "{}", "--status", "LOUD"], ["alerts", "follow", "--cursor", "x"],
                     ["alerts", "follow", '{"bogus": 1}']):
            r = self.monctl(*args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))

    def test_follow_resumes_after_falling_behind(self):
        """A follower whose output is not read falls behind: the server sends
        RESUME_REQUIRED (FELL_BEHIND) and ends the stream with RESOURCE_EXHAUSTED;
        the watcher resumes from the control's cursor and misses nothing."""
        db = harness.fresh_database("itest_aclient_slow")
        srv = harness.Monitord(db, extra_args=["--stream-queue-max", "4"])
        try:
            srv.wait_serving("monitoring.v1.AlertsService")
            env = dict(os.environ, MONITORD_TARGET=srv.address, MONITORD_API_KEY=srv.admin_key())
            a = Alerts(db)
            rid = a.new_rule()
            aid, _ = a.new_alert(rid)
            f = Follower(env, '{"alertRuleIds": ["%s"]}' % rid)
            try:
                self.assertTrue(f.read_until(lambda ev: f.controls("STREAM_CONTROL_KIND_SNAPSHOT_COMPLETE")))
                # Nobody reads monctl's output now: its writes block, then its
                # stream, then the server's queue of 4 fills. Large messages fill
                # the pipes and windows in between sooner.
                filler = "x" * 4000
                expected = []
                deadline = time.time() + WAIT_S
                while "fell behind" not in srv.read_log():
                    self.assertLess(time.time(), deadline, "the follower never fell behind")
                    expected += a.updates(aid, rid, ["%s %d" % (filler, len(expected) + i) for i in range(100)])
                expected += a.updates(aid, rid, ["after %d" % i for i in range(10)])
                self.assertTrue(f.read_until(lambda ev: expected[-1] in f.change_seqs()), f.events[-3:])
                f.read_until(lambda ev: False, timeout=1.0)
            finally:
                code, err = f.stop()
            self.assertEqual(f.change_seqs(), expected, "gap or duplicate; stderr:\n" + err)
            ends = f.controls("STREAM_CONTROL_KIND_RESUME_REQUIRED")
            self.assertGreaterEqual(len(ends), 1, err)
            self.assertEqual(ends[0]["control"]["reason"], "STREAM_END_REASON_FELL_BEHIND")
            self.assertIn("RESOURCE_EXHAUSTED", err)
            self.assertIn("resuming after sequence %s" % ends[0]["control"]["resumeAfterSequence"], err)
            self.assertEqual(code, 130, err)
        finally:
            srv.stop()

    def test_z_follow_resumes_across_kill_and_stop(self):
        """Changes go on while the server is killed, stopped and restarted; the
        follower sees every matching one once, and none of the other rule's."""
        a = self.alerts
        watched, other = a.new_rule(), a.new_rule()
        aid, first = a.new_alert(watched)
        f = Follower(self.env, '{"alertRuleIds": ["%s"], "heartbeatInterval": 5}' % watched)
        expected = [first]
        errors = []
        done = threading.Event()

        def writer():
            """Commits matching and other changes, interleaved, until told to stop."""
            try:
                oid, _ = a.new_alert(other)
                i = 0
                while not done.is_set():
                    expected.append(a.update(aid, watched, "v%d" % i))
                    a.update(oid, other, "o%d" % i)
                    i += 1
                    time.sleep(0.01)
            except Exception as e:  # reported by the main thread
                errors.append(e)

        t = threading.Thread(target=writer)
        try:
            self.assertTrue(f.read_until(lambda ev: f.controls("STREAM_CONTROL_KIND_SNAPSHOT_COMPLETE")), f.events)
            t.start()
            self.assertTrue(f.read_until(lambda ev: len(f.change_seqs()) >= 20), f.events)
            self.stop_server(signal.SIGKILL)
            time.sleep(1.0)
            self.start_server()
            n = len(f.change_seqs())
            self.assertTrue(f.read_until(lambda ev: len(f.change_seqs()) >= n + 20), f.events[-5:])
            self.stop_server(signal.SIGTERM)
            time.sleep(0.5)
            self.start_server()
            n = len(f.change_seqs())
            self.assertTrue(f.read_until(lambda ev: len(f.change_seqs()) >= n + 20), f.events[-5:])
            done.set()
            t.join(timeout=WAIT_S)
            self.assertEqual(errors, [])
            last = expected[-1]
            self.assertTrue(f.read_until(lambda ev: last in f.change_seqs()), (last, f.events[-5:]))
            time.sleep(1.0)  # a duplicate after the last one would show up now
            f.read_until(lambda ev: False, timeout=0.5)
        finally:
            done.set()
            if t.is_alive():
                t.join(timeout=WAIT_S)
            code, err = f.stop()
        got = f.change_seqs()
        self.assertEqual(got, sorted(expected[1:]), "gap or duplicate; stderr:\n" + err)
        self.assertEqual(len(set(got)), len(got))
        # The filter matches only `watched`, whose changes here are the only ones
        # between the first and the last, besides the other rule's: strictly
        # consecutive once those are left out.
        others = set(int(s) for s in psql(self.db, "SELECT seq FROM tb_alert_event WHERE alert_rule_id = %s"
                                                   % quote(other)))
        span = [s for s in range(got[0], got[-1] + 1) if s not in others]
        self.assertEqual(got, span)
        snapshot = [e for e in f.events if "snapshot" in e]
        self.assertEqual([e["snapshot"]["id"] for e in snapshot], [aid])
        self.assertEqual(code, 130, err)
        self.assertIn("UNAVAILABLE", err)
        self.assertIn("resuming after sequence", err)
        # The cursor printed at the end is at least the last change (a heartbeat
        # may have carried it past the other rule's later changes).
        cursor = [int(line.split()[-1]) for line in err.splitlines() if line.startswith("monctl: alerts cursor ")]
        self.assertEqual(len(cursor), 1, err)
        self.assertGreaterEqual(cursor[0], got[-1])


if __name__ == "__main__":
    unittest.main(verbosity=2)
