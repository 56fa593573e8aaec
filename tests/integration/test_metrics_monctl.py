"""monctl's metrics commands against a real monitord: `metrics send` from a
file and from standard input (batched through the client library's metrics
writer; counts, per-line and per-point errors, exit codes, rows checked in
PostgreSQL), `metrics follow` (WatchMetrics, resuming after the server
restarts), and the generic `watch` on WatchMetrics."""

import datetime
import json
import os
import select
import signal
import subprocess
import tempfile
import time
import unittest

import harness

MONCTL = os.path.join(harness.BUILD_DIR, "bin", "monctl")


def points(name, n, start_ms=0, endpoint="/api/cli"):
    """n JSON lines of MetricPoint, a millisecond apart, a minute ago."""
    base = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=60)
    out = []
    for i in range(start_ms, start_ms + n):
        t = (base + datetime.timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out.append(json.dumps({"time": t, "metricName": name, "endpoint": endpoint, "method": "GET",
                               "p95": 12.5, "requestCount": 3, "errorCount": 1, "tags": {"env": "test"}}))
    return out


def sql_value(conninfo, sql):
    r = subprocess.run(["psql", "-X", "-A", "-t", conninfo, "-c", sql], capture_output=True, text=True, check=True)
    return r.stdout.strip()


class Follower:
    """A monctl process following a stream; collects its stdout lines."""

    def __init__(self, env, *args):
        self.proc = subprocess.Popen([MONCTL] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, text=True, bufsize=1)
        self.events = []

    def read_until(self, pred, timeout=30):
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

    def points(self, name):
        return [p for e in self.events if "batch" in e for p in e["batch"].get("points", [])
                if p.get("metricName") == name]

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


class MetricsMonctl(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = harness.fresh_database("itest_mmonctl")
        cls.srv = harness.Monitord(cls.db)
        cls.env = dict(os.environ, MONITORD_TARGET=cls.srv.address, MONITORD_API_KEY=cls.srv.admin_key())
        cls.extra = None

    @classmethod
    def tearDownClass(cls):
        cls.stop_server()

    @classmethod
    def stop_server(cls):
        if cls.extra is not None:
            cls.extra.send_signal(signal.SIGTERM)
            cls.extra.wait(timeout=60)
            cls.extra = None
        if cls.srv is not None:
            cls.srv.stop()
            cls.srv = None

    @classmethod
    def restart_server(cls):
        """Stops monitord and starts it again on the same address."""
        cls.stop_server()
        tmp = tempfile.mkdtemp(prefix="mon-srv-")
        port_file = os.path.join(tmp, "port")
        cls.extra = subprocess.Popen([harness.MONITORD, "--listen", cls.env["MONITORD_TARGET"], "--port-file",
                                      port_file, "--database", cls.db, "--log-level", "warn"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not os.path.exists(port_file):
            if cls.extra.poll() is not None or time.time() > deadline:
                raise AssertionError("monitord did not start again")
            time.sleep(0.05)

    def monctl(self, *args, stdin=None, timeout=120):
        return subprocess.run([MONCTL] + list(args), input=stdin, capture_output=True, text=True,
                              env=self.env, timeout=timeout)

    def rows(self, name):
        return int(sql_value(self.db, "SELECT count(*) FROM tb_performance_metric WHERE metric_name = '%s'" % name))

    def test_send_file_with_bad_lines(self):
        lines = points("cli.file", 2500)
        lines += ["", '{"time": "2020-01-01T00:00:00Z", "metricName": "cli.file"}', '{"bogus": 1}', "not json"]
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            f.write("\n".join(lines) + "\n")
        r = self.monctl("metrics", "send", f.name, "--batch-points", "1000")
        self.assertEqual(r.returncode, 1, r.stderr)
        summary = json.loads(r.stdout)
        self.assertEqual(summary["points"], 2501)
        self.assertEqual(summary["inserted"], 2500)
        self.assertEqual(summary["notRecorded"], 1)
        self.assertEqual(summary["invalidLines"], 2)
        self.assertIn("line 2503: unknown field \"bogus\"", r.stderr)
        self.assertIn("line 2504: invalid JSON", r.stderr)
        self.assertIn("time 2020-01-01T00:00:00Z): time:", r.stderr)
        self.assertEqual(self.rows("cli.file"), 2500)

    def test_send_stdin_twice_is_idempotent(self):
        data = "\n".join(points("cli.stdin", 300)) + "\n"
        r = self.monctl("metrics", "send", "-", stdin=data)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["inserted"], 300)
        r = self.monctl("metrics", "send", stdin=data)
        self.assertEqual(r.returncode, 0, r.stderr)
        summary = json.loads(r.stdout)
        self.assertEqual((summary["inserted"], summary["duplicate"]), (0, 300))
        self.assertEqual(self.rows("cli.stdin"), 300)

    def test_send_usage_errors(self):
        r = self.monctl("metrics", "send", "/nonexistent/points.jsonl")
        self.assertEqual(r.returncode, 2)
        self.assertIn("could not open", r.stderr)
        r = self.monctl("metrics", "send", "--batch-points", "6000")
        self.assertEqual(r.returncode, 2)
        r = self.monctl("metrics", "frobnicate")
        self.assertEqual(r.returncode, 2)

    def test_generic_watch_on_watch_metrics(self):
        f = Follower(self.env, "watch", "monitoring.v1.MetricsService/WatchMetrics",
                     '{"filter": {"metricNames": ["cli.watch"]}, "maxBatchDelay": "0.1s"}')
        try:
            time.sleep(1)
            r = self.monctl("metrics", "send", stdin="\n".join(points("cli.watch", 20)) + "\n")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(f.read_until(lambda ev: len(f.points("cli.watch")) >= 20), f.events)
            self.assertEqual(len(f.points("cli.watch")), 20)
        finally:
            code, err = f.stop()
        self.assertEqual(code, 130, err)

    def test_z_follow_resumes_after_restart(self):
        f = Follower(self.env, "metrics", "follow",
                     '{"filter": {"metricNames": ["cli.follow"]}, "maxBatchDelay": "0.1s"}')
        try:
            time.sleep(1)
            r = self.monctl("metrics", "send", stdin="\n".join(points("cli.follow", 50)) + "\n")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(f.read_until(lambda ev: len(f.points("cli.follow")) >= 50), f.events)
            self.restart_server()
            r = self.monctl("metrics", "send", stdin="\n".join(points("cli.follow", 50, start_ms=50)) + "\n")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(f.read_until(lambda ev: len(f.points("cli.follow")) >= 100, timeout=60), f.events)
            got = sorted(p["time"] for p in f.points("cli.follow"))
            self.assertEqual(len(got), 100)
            self.assertEqual(len(set(got)), 100)
        finally:
            code, err = f.stop()
        self.assertEqual(code, 130, err)
        self.assertIn("UNAVAILABLE", err)
        self.assertIn("resuming after sequence", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
