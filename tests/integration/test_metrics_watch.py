"""MetricsService.WatchMetrics end to end, through python3-grpcio against
real monitord processes on one PostgreSQL database: points recorded with
RecordMetrics reach a subscriber whose filter (metric name, endpoint, tags,
method, status code) they match, and no other; many points arrive in few
messages; downsampling sends one aggregate per series and interval; a
subscriber that stops reading while many points are committed (server
started with --stream-queue-max 4) gets a FELL_BEHIND gap whose count, with
the points it did receive, is exactly what was committed, and the server's
memory stays bounded; a resumed stream replays exactly the commits after its
cursor; a cursor older than the log gets a gap of -1 and then what the log
holds, and so do commits pruned from the log before the hub read them; a
stream resumed before a sequence that has no row is handed over at once;
points recorded on one replica reach a subscriber of another, whose stream, when that replica shuts down, is told RESUME_REQUIRED
(SERVER_SHUTDOWN) with the cursor of its last batch and ends with
UNAVAILABLE, and resumes from that cursor on the first replica with no gap
and no repeat; invalid requests name the
field; heartbeats carry the cursor when nothing matches; seventy
subscribers (the hub's two-thread fan-out) each get every point.

Bulk commits for the slow subscriber are made with mon_metrics_commit in
SQL, with payloads packed here, as RecordMetrics would log them. Waits are
bounded polls; nothing asserts on timing beyond generous delays."""

import datetime
import os
import queue
import subprocess
import sys
import threading
import time
import unittest

import grpc
from google.protobuf import duration_pb2, timestamp_pb2, wrappers_pb2

import harness


harness.api_stubs()
from monitoring.v1 import common_pb2, metrics_pb2, metrics_pb2_grpc  # noqa: E402

SC = grpc.StatusCode
K_HEARTBEAT = common_pb2.STREAM_CONTROL_KIND_HEARTBEAT
K_RESUME_REQUIRED = common_pb2.STREAM_CONTROL_KIND_RESUME_REQUIRED
FELL_BEHIND = common_pb2.STREAM_END_REASON_FELL_BEHIND
WAIT_S = 30


def psql(conninfo, sql):
    # On stdin: a packed payload is larger than one command-line argument may be.
    r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", conninfo, "-f", "-"], input=sql,
                       check=True, capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if line != ""]


def ts(us):
    t = timestamp_pb2.Timestamp()
    t.seconds, rem = divmod(us, 1000000)
    t.nanos = rem * 1000
    return t


def ts_us(t):
    return t.seconds * 1000000 + t.nanos // 1000


def now_us():
    return int(time.time() * 1000000)


def dur(seconds):
    d = duration_pb2.Duration()
    d.seconds = int(seconds)
    d.nanos = int(round((seconds - int(seconds)) * 1e9))
    return d


def point(name, t_us, endpoint="/api/orders", method="GET", status=200, p95=10.0, requests=10, errors=0,
          tags=None, **kw):
    return metrics_pb2.MetricPoint(time=ts(t_us), metric_name=name, endpoint=endpoint, method=method,
                                   status_code=wrappers_pb2.Int32Value(value=status),
                                   p95=wrappers_pb2.DoubleValue(value=p95), request_count=requests,
                                   error_count=errors, tags=tags or {}, **kw)


class Watch:
    """A WatchMetrics stream read by a thread into a queue; reading can be paused."""

    def __init__(self, srv, request, channel=None, is_paused=False):
        stub = metrics_pb2_grpc.MetricsServiceStub(channel or srv.channel)
        self.call = stub.WatchMetrics(request, metadata=srv.auth())
        self.q = queue.Queue()
        self.reading = threading.Event()
        if not is_paused:
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
            m = self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no stream event within %ss" % timeout)
        return m

    def live(self):
        """Waits for the first heartbeat (the stream is served live from its cursor); returns the cursor."""
        m = self.get()
        if isinstance(m, tuple) or m.WhichOneof("event") != "control" or m.control.kind != K_HEARTBEAT:
            raise AssertionError("expected the first heartbeat, got %s" % (m,))
        self.assertCursor(m)
        return m.sequence

    @staticmethod
    def assertCursor(m):
        if m.control.resume_after_sequence != m.sequence:
            raise AssertionError("control cursor %d != sequence %d" % (m.control.resume_after_sequence, m.sequence))

    def until_sequence(self, seq):
        """Messages (heartbeats left out) until one carries sequence >= seq."""
        out = []
        while True:
            m = self.get()
            if isinstance(m, tuple):
                raise AssertionError("stream ended (%s) before sequence %d" % (m, seq))
            if m.WhichOneof("event") != "control":
                out.append(m)
            if m.sequence >= seq:
                return out

    def close(self):
        self.call.cancel()
        self.reading.set()
        self.thread.join(timeout=WAIT_S)


def batch_points(msgs):
    pts = []
    for m in msgs:
        if m.WhichOneof("event") == "batch":
            pts.extend(m.batch.points)
    return pts


class Env:
    def __init__(self, prefix, extra_args=(), env=None):
        self.db = harness.fresh_database(prefix)
        self.srv = harness.Monitord(self.db, extra_args=extra_args, env=env)
        self.srv.wait_serving("monitoring.v1.MetricsService")
        self.stub = metrics_pb2_grpc.MetricsServiceStub(self.srv.channel)

    def record(self, points, srv=None):
        """RecordMetrics; returns the commit's sequence."""
        srv = srv or self.srv
        r = metrics_pb2_grpc.MetricsServiceStub(srv.channel).RecordMetrics(
            metrics_pb2.RecordMetricsRequest(points=points), metadata=srv.auth(), timeout=30)
        assert r.sequence > 0, r
        return r.sequence

    def watch(self, srv=None, channel=None, is_paused=False, **kw):
        return Watch(srv or self.srv, metrics_pb2.WatchMetricsRequest(**kw), channel, is_paused)

    def commit_sql(self, points, times=1):
        """Logs `times` commits of points with mon_metrics_commit, in one transaction; returns the last sequence."""
        payload = metrics_pb2.MetricBatch(points=points).SerializeToString().hex()
        us = [ts_us(p.time) for p in points]
        lo = datetime.datetime.fromtimestamp(min(us) / 1e6, datetime.timezone.utc).isoformat()
        hi = datetime.datetime.fromtimestamp(max(us) / 1e6, datetime.timezone.utc).isoformat()
        sql = ("SELECT max(mon_metrics_commit(%d, '%s', '%s', ARRAY['%s']::timestamptz[], decode('%s', 'hex'))) "
               "FROM generate_series(1, %d)" % (len(points), lo, hi, lo, payload, times))
        return int(psql(self.db, sql)[0])


class MetricsWatchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = Env("metricswatch")
        cls.srv = cls.env.srv
        cls.db = cls.env.db
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        cls.env.srv.assert_clean_exit(unittest.TestCase())

    def name(self):
        MetricsWatchTest.n += 1
        return "watch.m%d_%d" % (os.getpid(), MetricsWatchTest.n)

    def test_filters(self):
        m, other = self.name(), self.name()
        t = now_us() - 60 * 1000000
        w = self.env.watch(filter=common_pb2.MetricFilter(metric_names=[m], endpoints=["/api/orders", ""],
                                                          tags={"env": "prod"}))
        w2 = self.env.watch(filter=common_pb2.MetricFilter(metric_names=[m], methods=["POST"],
                                                           status_codes=[500, 503]))
        try:
            w.live()
            w2.live()
            pts = [
                point(m, t + 1, tags={"env": "prod", "zone": "a"}),             # w
                point(m, t + 2, tags={"env": "dev"}),                           # wrong tag
                point(m, t + 3, endpoint="/api/other", tags={"env": "prod"}),   # wrong endpoint
                point(other, t + 4, tags={"env": "prod"}),                      # wrong name
                point(m, t + 5, endpoint="", tags={"env": "prod"}, requests=8, errors=2),  # w
                point(m, t + 6),                                                # no tag
                point(m, t + 7, method="POST", status=503),                     # w2
                point(m, t + 8, method="POST", status=200),                     # wrong status
            ]
            seq = self.env.record(pts)
            got = batch_points(w.until_sequence(seq))
            self.assertEqual([ts_us(p.time) - t for p in got], [1, 5])
            self.assertEqual(got[0].tags, {"env": "prod", "zone": "a"})
            self.assertEqual(got[0].metric_type, common_pb2.METRIC_TYPE_GAUGE)  # filled in as stored
            self.assertEqual(got[1].endpoint, "")
            self.assertAlmostEqual(got[1].error_rate.value, 25.0)  # computed on ingest
            got2 = batch_points(w2.until_sequence(seq))
            self.assertEqual([ts_us(p.time) - t for p in got2], [7])
            self.assertEqual(got2[0].status_code.value, 503)
        finally:
            w.close()
            w2.close()

    def test_batching(self):
        m = self.name()
        t = now_us() - 120 * 1000000
        w = self.env.watch(filter=common_pb2.MetricFilter(metric_names=[m]), max_batch_points=100,
                           max_batch_delay=dur(3))
        try:
            w.live()
            # One commit of 1000 points: ten full batches; only the last covers the whole commit.
            seq = self.env.record([point(m, t + i) for i in range(1000)])
            msgs = w.until_sequence(seq)
            self.assertEqual([len(x.batch.points) for x in msgs], [100] * 10)
            self.assertEqual([ts_us(p.time) - t for p in batch_points(msgs)], list(range(1000)))
            self.assertTrue(all(x.sequence < seq for x in msgs[:-1]), [x.sequence for x in msgs])
            self.assertFalse(msgs[-1].batch.is_downsampled)
            # Twenty small commits within the batch delay: a few messages, not twenty.
            t2 = t + 10000
            seqs = [self.env.record([point(m, t2 + 10 * i + j) for j in range(10)]) for i in range(20)]
            msgs = w.until_sequence(seqs[-1])
            pts = batch_points(msgs)
            self.assertEqual(len(pts), 200)
            self.assertLessEqual(len(msgs), 10)
            self.assertEqual([ts_us(p.time) - t2 for p in pts], list(range(200)))
            self.assertEqual(msgs[-1].sequence, seqs[-1])
        finally:
            w.close()

    def test_downsampling(self):
        m = self.name()
        minute = 60 * 1000000
        b0 = (now_us() // minute - 10) * minute  # a closed interval, ten minutes ago
        b1 = b0 + minute
        # The delay is the time late points get: both commits below fall well within it.
        common = dict(downsample_interval=dur(60), max_batch_delay=dur(8),
                      filter=common_pb2.MetricFilter(metric_names=[m]))
        w = self.env.watch(**common)
        wmax = self.env.watch(downsample_aggregation=common_pb2.AGGREGATION_MAX, **common)
        try:
            w.live()
            wmax.live()
            # Two series (endpoints a and b) over two intervals, in two commits.
            s1 = self.env.record([point(m, b0 + 1000000, endpoint="/a", p95=10, requests=10, errors=1),
                                  point(m, b0 + 20000000, endpoint="/a", p95=30, requests=30, errors=3),
                                  point(m, b0 + 5000000, endpoint="/b", p95=5, requests=1, errors=1)])
            s2 = self.env.record([point(m, b0 + 40000000, endpoint="/a", p95=50, requests=60, errors=0),
                                  point(m, b1 + 1000000, endpoint="/a", p95=7, requests=4, errors=2)])
            for watch, agg in ((w, "natural"), (wmax, "max")):
                msgs = watch.until_sequence(s2)
                pts = batch_points(msgs)
                self.assertTrue(all(x.batch.is_downsampled for x in msgs))
                got = {(ts_us(p.time), p.endpoint): p for p in pts}
                self.assertEqual(sorted(got), [(b0, "/a"), (b0, "/b"), (b1, "/a")], agg)
                a0 = got[(b0, "/a")]
                if agg == "natural":
                    self.assertAlmostEqual(a0.p95.value, 30.0)        # mean of 10, 30, 50
                    self.assertEqual(a0.request_count, 100)           # sum
                    self.assertEqual(a0.error_count, 4)
                    self.assertAlmostEqual(a0.error_rate.value, 4.0)  # 4 errors of 100 requests
                else:
                    self.assertAlmostEqual(a0.p95.value, 50.0)
                    self.assertEqual(a0.request_count, 60)
                self.assertEqual(got[(b1, "/a")].request_count, 4)
                self.assertEqual(got[(b0, "/b")].p95.value, 5.0)
                self.assertFalse(a0.HasField("p50"))  # no point had one
                self.assertGreaterEqual(s2, s1)
        finally:
            w.close()
            wmax.close()

    def test_many_subscribers_each_get_every_point(self):
        # Enough subscribers for the hub to split its work between two threads.
        m = self.name()
        t = now_us() - 300 * 1000000
        watches = [self.env.watch(filter=common_pb2.MetricFilter(metric_names=[m]), max_batch_delay=dur(0))
                   for _ in range(70)]
        try:
            for w in watches:
                w.live()
            seqs = [self.env.record([point(m, t + 10 * i + j) for j in range(10)]) for i in range(3)]
            for w in watches:
                pts = batch_points(w.until_sequence(seqs[-1]))
                self.assertEqual([ts_us(p.time) - t for p in pts], list(range(30)))
        finally:
            for w in watches:
                w.close()

    def test_resume_replays_missed_commits(self):
        m = self.name()
        t = now_us() - 180 * 1000000
        w = self.env.watch(filter=common_pb2.MetricFilter(metric_names=[m]), max_batch_delay=dur(0))
        w.live()
        first = self.env.record([point(m, t)])
        msgs = w.until_sequence(first)
        cursor = msgs[-1].sequence
        self.assertEqual(cursor, first)
        w.close()  # the connection drops; commits go on meanwhile
        missed = [self.env.record([point(m, t + 100 * i + j) for j in range(3)]) for i in range(1, 4)]
        self.env.record([point(self.name(), t)])  # another metric: filtered out
        w = self.env.watch(filter=common_pb2.MetricFilter(metric_names=[m]), resume_after_sequence=cursor,
                           heartbeat_interval=1, max_batch_delay=dur(0))
        try:
            msgs = w.until_sequence(missed[-1])
            pts = batch_points(msgs)
            self.assertEqual([ts_us(p.time) - t for p in pts], [100 * i + j for i in range(1, 4) for j in range(3)])
            seqs = [x.sequence for x in msgs]
            self.assertEqual(seqs, sorted(seqs))
            self.assertGreater(seqs[0], cursor)
            # Then live, with nothing repeated: the next messages are heartbeats and the next commit.
            live = self.env.record([point(m, t + 1000)])
            rest = w.until_sequence(live)
            self.assertEqual([ts_us(p.time) - t for p in batch_points(rest)], [1000])
        finally:
            w.close()

    def test_expired_cursor_gets_unknown_gap(self):
        m = self.name()
        t = now_us() - 240 * 1000000
        self.env.record([point(self.name(), t)])  # so that the cursor below is not 0 (which starts live)
        seqs = [self.env.record([point(m, t + i)]) for i in range(4)]
        # The maintenance job's retention: the log rows up to the second commit are gone.
        psql(self.db, "DELETE FROM tb_metric_ingest_log WHERE seq <= %d" % seqs[1])
        w = self.env.watch(filter=common_pb2.MetricFilter(metric_names=[m]), resume_after_sequence=seqs[0] - 1,
                           max_batch_delay=dur(0))
        try:
            first = w.get()
            self.assertEqual(first.WhichOneof("event"), "gap", first)
            self.assertEqual(first.gap.skipped_count, -1)
            self.assertEqual(first.gap.reason, common_pb2.STREAM_END_REASON_UNSPECIFIED)
            self.assertTrue(first.gap.time_range.HasField("end_time"))
            lo = int(psql(self.db, "SELECT min(seq) FROM tb_metric_ingest_log")[0])
            self.assertEqual(first.sequence, lo - 1)
            pts = batch_points(w.until_sequence(seqs[-1]))
            self.assertEqual([ts_us(p.time) - t for p in pts], [2, 3])
        finally:
            w.close()

    def test_rows_pruned_before_the_hub_read_them_are_a_gap(self):
        # The maintenance job pruned the log's oldest rows, among them a commit the hub had not read yet
        # (as when its replica was cut off for longer than the replay window): an unknown gap, then the rest.
        m = self.name()
        t = now_us() - 270 * 1000000
        w = self.env.watch(filter=common_pb2.MetricFilter(metric_names=[m]), max_batch_delay=dur(0))
        try:
            start = w.live()
            commits = []
            for us in (t + 1, t + 2):
                at = datetime.datetime.fromtimestamp(us / 1e6, datetime.timezone.utc).isoformat()
                payload = metrics_pb2.MetricBatch(points=[point(m, us)]).SerializeToString().hex()
                commits.append("SELECT mon_metrics_commit(1, '%s', '%s', ARRAY['%s']::timestamptz[],"
                               " decode('%s', 'hex'));" % (at, at, at, payload))
            # Both commits and the pruning in one transaction: the hub never sees the first one's row.
            out = psql(self.db, "BEGIN;\n%s\n%s\n"
                       "DELETE FROM tb_metric_ingest_log WHERE seq < currval('seq_metric_ingest');\nCOMMIT;\n"
                       % tuple(commits))
            s1, s2 = int(out[0]), int(out[1])
            self.assertGreater(s1, start)
            msgs = w.until_sequence(s2)
            self.assertEqual(msgs[0].WhichOneof("event"), "gap", msgs)
            self.assertEqual(msgs[0].gap.skipped_count, -1)
            self.assertEqual(msgs[0].gap.reason, common_pb2.STREAM_END_REASON_UNSPECIFIED)
            self.assertFalse(msgs[0].gap.time_range.HasField("start_time"))
            self.assertTrue(msgs[0].gap.time_range.HasField("end_time"))
            self.assertEqual(msgs[0].sequence, s2 - 1)
            self.assertEqual([ts_us(p.time) - t for p in batch_points(msgs[1:])], [2])
            self.assertEqual(msgs[-1].sequence, s2)
        finally:
            w.close()

    def test_resume_past_a_sequence_without_row(self):
        # The hub's place is a sequence that has no row (a batch numbered, then rolled back): a stream
        # resumed before it has nothing to replay and is handed over at once, with no busy loop.
        m = self.name()
        t = now_us() - 280 * 1000000
        time.sleep(1.5)  # nobody listens: the hub forgets its place, so the next stream sets it
        cursor = self.env.record([point(m, t)])
        burned = int(psql(self.db, "SELECT nextval('seq_metric_ingest')")[0])
        psql(self.db, "NOTIFY mon_metrics, '%d'" % burned)
        w1 = self.env.watch(filter=common_pb2.MetricFilter(metric_names=[m]), heartbeat_interval=1)
        w2 = None
        try:
            self.assertEqual(w1.live(), burned)
            w2 = self.env.watch(filter=common_pb2.MetricFilter(metric_names=[m]), resume_after_sequence=cursor,
                                heartbeat_interval=1, max_batch_delay=dur(0))
            first = w2.get(timeout=10)
            self.assertEqual(first.WhichOneof("event"), "control", first)
            self.assertEqual(first.control.kind, K_HEARTBEAT)
            self.assertEqual(first.sequence, burned)
            live = self.env.record([point(m, t + 1)])
            self.assertEqual([ts_us(p.time) - t for p in batch_points(w2.until_sequence(live))], [1])
        finally:
            w1.close()
            if w2 is not None:
                w2.close()

    def test_heartbeat_carries_cursor(self):
        w = self.env.watch(filter=common_pb2.MetricFilter(metric_names=["watch.never"]), heartbeat_interval=1)
        try:
            start = w.live()
            seq = self.env.record([point(self.name(), now_us() - 1000000)])  # filtered out
            deadline = time.time() + WAIT_S
            while True:
                m = w.get()
                self.assertEqual(m.WhichOneof("event"), "control", m)
                self.assertEqual(m.control.kind, K_HEARTBEAT)
                Watch.assertCursor(m)
                self.assertGreaterEqual(m.sequence, start)
                if m.sequence >= seq:
                    break
                self.assertLess(time.time(), deadline, "the heartbeat cursor never passed the filtered commit")
        finally:
            w.close()

    def test_invalid_requests_name_the_field(self):
        R = metrics_pb2.WatchMetricsRequest
        cases = [
            (R(downsample_interval=dur(0.5)), "downsample_interval"),
            (R(downsample_interval=dur(3601)), "downsample_interval"),
            (R(max_batch_points=-1), "max_batch_points"),
            (R(max_batch_points=10001), "max_batch_points"),
            (R(resume_after_sequence=-1), "resume_after_sequence"),
            (R(heartbeat_interval=-1), "heartbeat_interval"),
            (R(max_batch_delay=dur(-1)), "max_batch_delay"),
            (R(max_batch_delay=dur(61)), "max_batch_delay"),
            (R(downsample_aggregation=common_pb2.AGGREGATION_MAX), "downsample_aggregation"),
            (R(filter=common_pb2.MetricFilter(metric_names=[""])), "filter.metric_names[0]"),
            (R(filter=common_pb2.MetricFilter(status_codes=[99])), "filter.status_codes[0]"),
        ]
        for req, field in cases:
            with self.assertRaises(grpc.RpcError, msg=field) as cm:
                list(self.env.stub.WatchMetrics(req, metadata=self.srv.auth(), timeout=10))
            self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT, field)
            self.assertIn(field, cm.exception.details())
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.env.stub.WatchMetrics(R(), timeout=10))  # no credentials
        self.assertEqual(cm.exception.code(), SC.UNAUTHENTICATED)

    def test_other_replica(self):
        other = harness.Monitord(self.db)
        stopped = False
        try:
            other.wait_serving("monitoring.v1.MetricsService")
            other.use_admin_key(self.srv.admin_key())  # one database, one bootstrap
            m = self.name()
            # A channel of its own: stopping the server closes its channel, which would cancel the call here.
            channel = grpc.insecure_channel(other.address)
            w = self.env.watch(srv=other, channel=channel, filter=common_pb2.MetricFilter(metric_names=[m]),
                               max_batch_delay=dur(0))
            try:
                w.live()
                seq = self.env.record([point(m, now_us() - 1000000, endpoint="/x")], srv=self.srv)
                pts = batch_points(w.until_sequence(seq))
                self.assertEqual([p.endpoint for p in pts], ["/x"])
                # Shutdown: RESUME_REQUIRED (SERVER_SHUTDOWN) with the last batch's cursor, then UNAVAILABLE.
                other.assert_clean_exit(self)
                stopped = True
                rest = []
                end = w.get()
                while not isinstance(end, tuple):
                    rest.append(end)
                    end = w.get()
                self.assertEqual(end[0], "error")
                self.assertEqual(end[1].code(), SC.UNAVAILABLE)
                notices = [x for x in rest if x.WhichOneof("event") != "control" or x.control.kind != K_HEARTBEAT]
                self.assertEqual(len(notices), 1, rest)
                notice = notices[0]
                self.assertEqual(notice.control.kind, K_RESUME_REQUIRED)
                self.assertEqual(notice.control.reason, common_pb2.STREAM_END_REASON_SERVER_SHUTDOWN)
                self.assertEqual(notice.control.resume_after_sequence, seq)
                Watch.assertCursor(notice)
            finally:
                w.close()
                channel.close()
            # Resumed on the other replica from that cursor: what came after it, no gap, nothing repeated.
            later = self.env.record([point(m, now_us() - 500000, endpoint="/y")])
            w = self.env.watch(filter=common_pb2.MetricFilter(metric_names=[m]),
                               resume_after_sequence=notice.control.resume_after_sequence, max_batch_delay=dur(0))
            try:
                msgs = w.until_sequence(later)
                self.assertEqual([x.WhichOneof("event") for x in msgs], ["batch"])
                self.assertEqual([p.endpoint for p in batch_points(msgs)], ["/y"])
            finally:
                w.close()
        finally:
            if not stopped:
                other.assert_clean_exit(self)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class SlowSubscriberTest(unittest.TestCase):
    """A subscriber that stops reading, against a server with --stream-queue-max 4."""

    def test_slow_subscriber_gets_exact_gap(self):
        # A small allocator quarantine, so that freed memory is given back under AddressSanitizer too.
        asan = (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=16").lstrip(":")
        t = Env("metricswatchslow", extra_args=["--stream-queue-max", "4"], env={"ASAN_OPTIONS": asan})
        srv = t.srv
        try:
            m = "watch.slow"
            w = t.watch(filter=common_pb2.MetricFilter(metric_names=[m]), max_batch_points=500)
            start = w.live()
            marker = t.watch(filter=common_pb2.MetricFilter(metric_names=["watch.marker"]), max_batch_delay=dur(0))
            marker.live()
            w.reading.clear()  # the reader thread may take one more message, then stops
            base = now_us() - 3600 * 1000000
            tags = {"host": "host-%03d" % 7, "detail": "x" * 120}
            per_commit, rounds, commits_per_round = 2000, 10, 20
            pts = [point(m, base + i, tags=tags) for i in range(per_commit)]
            noise = [point("watch.noise", base + i) for i in range(100)]
            before_bulk = t.commit_sql(noise)
            rss = []
            last = 0
            for _ in range(rounds):
                last = t.commit_sql(pts, times=commits_per_round)
                rss.append(rss_kb(srv.proc.pid))
            total = per_commit * rounds * commits_per_round  # 400000 points, about 100 MB as sent
            # The hub offers each commit to every subscriber in turn: once the marker subscriber has
            # the commit after the bulk, the slow one has been offered all of it.
            mark = t.commit_sql([point("watch.marker", base)])
            batch_points(marker.until_sequence(mark))
            marker.close()
            w.reading.set()
            got, skipped, gaps = self.drain(w, m, last, base, base + per_commit)
            print("slow subscriber: received %d, skipped %d in %d gap(s), server RSS (kB) %s"
                  % (got, skipped, len(gaps), rss), file=sys.stderr)
            self.assertEqual(got + skipped, total, "received %d + skipped %d" % (got, skipped))
            self.assertGreater(skipped, total // 2)
            # Bounded: the server did not keep what the subscriber could not take (that would be
            # hundreds of MB); allow for the decoded reads and the allocator.
            growth_mb = (max(rss) - rss[0]) / 1024
            self.assertLess(growth_mb, 150, "server RSS grew by %d MB: %s" % (growth_mb, rss))
            self.assertGreater(last, start)
            # The stream goes on live.
            live_us = now_us() - 1000000
            seq = t.record([point(m, live_us)])
            pts_live = batch_points(w.until_sequence(seq))
            self.assertEqual(len(pts_live), 1)
            srv.wait_serving("monitoring.v1.MetricsService")
            w.close()

            # A replay of all of it to a client that does not read for a while: the replay waits for
            # the client's reads (paced by its stream's write completions, holding no thread and no
            # connection meanwhile), so the client gets every point from the log, no gap, and the
            # server's memory does not grow with what is still to send.
            began = time.time()
            rss_before = rss_kb(srv.proc.pid)
            w = t.watch(filter=common_pb2.MetricFilter(metric_names=[m]), max_batch_points=500,
                        resume_after_sequence=before_bulk, is_paused=True)
            time.sleep(10)
            rss_paused = rss_kb(srv.proc.pid)
            # Meanwhile unary calls answer: the paused replay holds no worker.
            srv.wait_serving("monitoring.v1.MetricsService")
            w.reading.set()
            got, skipped, gaps = self.drain(w, m, seq, base, live_us + 1, expect_gap=False)
            self.assertEqual((got, skipped), (total + 1, 0), "replay: received %d, skipped %d" % (got, skipped))
            growth_mb = (rss_paused - rss_before) / 1024
            self.assertLess(growth_mb, 150, "server RSS grew by %d MB while the replay waited" % growth_mb)
            self.assertLess(time.time() - began, 120)
            w.close()
        finally:
            srv.assert_clean_exit(self)

    def drain(self, w, m, last, lo_us, hi_us, expect_gap=True):
        """Reads w until a batch or gap covers sequence last; returns (points, skipped, gaps)."""
        got, gaps = 0, []
        deadline = time.time() + 300
        while True:
            msg = w.get(timeout=60)
            self.assertFalse(isinstance(msg, tuple), msg)
            kind = msg.WhichOneof("event")
            if kind == "batch":
                got += len(msg.batch.points)
                self.assertTrue(all(p.metric_name == m for p in msg.batch.points))
            elif kind == "gap":
                gaps.append(msg.gap)
            if msg.sequence >= last and kind != "control":
                break
            self.assertLess(time.time(), deadline)
        if expect_gap:
            self.assertTrue(gaps, "no gap although the subscriber fell behind")
        for g in gaps:
            self.assertEqual(g.reason, FELL_BEHIND)
            self.assertGreater(g.skipped_count, 0)
            self.assertGreaterEqual(ts_us(g.time_range.start_time), lo_us)
            self.assertLessEqual(ts_us(g.time_range.end_time), hi_us)
        return got, sum(g.skipped_count for g in gaps), gaps


if __name__ == "__main__":
    harness.main()
