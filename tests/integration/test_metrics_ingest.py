"""MetricsService.RecordMetrics end to end, through python3-grpcio against a
real monitord (authentication on) on the throwaway PostgreSQL:

- a batch is stored as sent (values rounded to the columns' 2 decimals,
  error_rate computed from the counts when absent, tags as jsonb), and its
  sequence names the ingest log row whose payload is the points as stored;
- idempotency: the same batch again changes no row and counts duplicates;
  a changed point replaces the stored one and counts as updated;
- atomicity: one bad point anywhere fails the batch and stores nothing;
- every validation rule, each refused with INVALID_ARGUMENT naming
  points[i].field; the batch and message size limits with
  RESOURCE_EXHAUSTED naming the limit; validate_only and allow_partial;
- concurrent writers of overlapping keys all succeed;
- SIGKILL of monitord during sustained ingest: every acknowledged batch is
  stored whole, and no batch is stored in part."""

import math
import os
import signal
import subprocess
import threading
import time
import unittest

import grpc
from google.protobuf import timestamp_pb2, wrappers_pb2

import harness


harness.api_stubs()
from monitoring.v1 import common_pb2, metrics_pb2, metrics_pb2_grpc  # noqa: E402

SC = grpc.StatusCode
D = wrappers_pb2.DoubleValue


def psql(conninfo, sql):
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql],
                       check=True, capture_output=True, text=True)
    return [line.split("\t") for line in r.stdout.splitlines() if line != ""]


def scalar(conninfo, sql):
    return psql(conninfo, sql)[0][0]


def ts(seconds):
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(int(round(seconds * 1e9)))
    return t


def point(name, at, endpoint="/api/orders", **kw):
    p = metrics_pb2.MetricPoint(time=ts(at), metric_name=name, endpoint=endpoint)
    values = dict(method="GET", status_code=wrappers_pb2.Int32Value(value=200), min=D(value=1.0),
                  p50=D(value=10.0), p95=D(value=20.0), p99=D(value=30.0), max=D(value=40.0), mean=D(value=12.0),
                  request_count=100, error_count=5, throughput=D(value=16.5))
    values.update(kw)
    for k, v in values.items():
        if v is None:
            p.ClearField(k)
        elif k == "tags":
            p.tags.update(v)
        elif isinstance(v, (D, wrappers_pb2.Int32Value)):
            getattr(p, k).CopyFrom(v)
        else:
            setattr(p, k, v)
    return p


class RecordMetricsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.db = harness.fresh_database("itest_metrics_ingest")
        cls.srv = harness.Monitord(cls.db)
        cls.srv.wait_serving()
        cls.stub = metrics_pb2_grpc.MetricsServiceStub(cls.srv.channel)
        cls.md = cls.srv.auth()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop_clean()

    def record(self, points, stub=None, **kw):
        stub = stub or self.stub
        return stub.RecordMetrics(metrics_pb2.RecordMetricsRequest(points=points, **kw), metadata=self.md,
                                  timeout=60)

    def rows(self, name):
        return psql(self.db, "SELECT extract(epoch FROM time)::numeric(20,6), metric_name, endpoint, "
                             "coalesce(method, 'NULL'), coalesce(status_code::text, 'NULL'), "
                             "coalesce(p50::text, 'NULL'), coalesce(p95::text, 'NULL'), coalesce(p99::text, 'NULL'), "
                             "coalesce(mean::text, 'NULL'), coalesce(min::text, 'NULL'), coalesce(max::text, 'NULL'), "
                             "request_count, error_count, coalesce(error_rate::text, 'NULL'), "
                             "coalesce(throughput::text, 'NULL'), tags::text, metric_type "
                             "FROM tb_performance_metric WHERE metric_name = '%s' ORDER BY 1, 3" % name)

    def count(self, name):
        return int(scalar(self.db, "SELECT count(*) FROM tb_performance_metric WHERE metric_name = '%s'" % name))

    def assert_invalid(self, points, needle, code=SC.INVALID_ARGUMENT, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            self.record(points, **kw)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        self.assertIn(needle, cm.exception.details())
        return cm.exception.details()

    # ---- storing ----

    def test_batch_is_stored_as_sent_and_logged(self):
        now = time.time()
        pts = [point("ingest.stored", now - 120 + i * 0.001, tags={"region": "eu-1", "quote": 'a"b\\c'},
                     p50=D(value=10.004), p95=D(value=20.006), error_rate=None)
               for i in range(50)]
        pts.append(point("ingest.stored", now - 60, endpoint="", method="", status_code=None, p50=None, p95=None,
                         p99=None, mean=None, min=None, max=None, request_count=0, error_count=0, error_rate=None,
                         throughput=None, metric_type=common_pb2.METRIC_TYPE_COUNTER))
        r = self.record(pts)
        self.assertEqual((r.inserted_count, r.updated_count, r.duplicate_count, r.rejected_count), (51, 0, 0, 0))
        self.assertGreater(r.sequence, 0)
        rows = self.rows("ingest.stored")
        self.assertEqual(len(rows), 51)
        first = [row for row in rows if row[2] == "/api/orders"][0]
        self.assertEqual(first[3:], ["GET", "200", "10.00", "20.01", "30.00", "12.00", "1.00", "40.00", "100", "5",
                                     "5.00", "16.50", '{"quote": "a\\"b\\\\c", "region": "eu-1"}', "gauge"])
        bare = [row for row in rows if row[2] == ""][0]
        self.assertEqual(bare[3:], ["NULL"] * 8 + ["0", "0", "NULL", "NULL", "{}", "counter"])
        # The log row of the sequence holds the batch as stored.
        log = psql(self.db, "SELECT point_count, encode(payload, 'hex'), array_length(buckets, 1) "
                            "FROM tb_metric_ingest_log WHERE seq = %d" % r.sequence)
        self.assertEqual(log[0][0], "51")
        batch = metrics_pb2.MetricBatch.FromString(bytes.fromhex(log[0][1]))
        self.assertEqual(len(batch.points), 51)
        self.assertAlmostEqual(batch.points[0].p95.value, 20.01)
        self.assertAlmostEqual(batch.points[0].error_rate.value, 5.0)
        self.assertEqual(batch.points[0].tags["region"], "eu-1")
        self.assertEqual(batch.points[50].metric_type, common_pb2.METRIC_TYPE_COUNTER)
        self.assertFalse(batch.points[50].HasField("error_rate"))
        self.assertGreaterEqual(int(log[0][2]), 1)

    def test_same_batch_twice_stores_nothing_twice(self):
        now = time.time()
        pts = [point("ingest.idem", now - 200 + i, endpoint="/e%d" % (i % 3)) for i in range(300)]
        first = self.record(pts)
        self.assertEqual(first.inserted_count, 300)
        before = self.rows("ingest.idem")
        again = self.record(pts)
        self.assertEqual((again.inserted_count, again.updated_count, again.duplicate_count), (0, 0, 300))
        self.assertEqual(again.sequence, 0, "a pure retry publishes nothing")
        self.assertEqual(self.rows("ingest.idem"), before)
        # A changed point replaces the stored one.
        pts[7] = point("ingest.idem", now - 200 + 7, endpoint="/e1", p95=D(value=25.0))
        changed = self.record(pts)
        self.assertEqual((changed.inserted_count, changed.updated_count, changed.duplicate_count), (0, 1, 299))
        self.assertGreater(changed.sequence, first.sequence)
        after = self.rows("ingest.idem")
        self.assertEqual(len(after), 300)
        self.assertEqual([r for r in after if r not in before][0][6], "25.00")

    def test_partial_retry_publishes_only_what_changed(self):
        now = time.time()
        first = self.record([point("ingest.pub", now - 30)])
        self.assertEqual(first.inserted_count, 1)

        def published(seq):
            row = psql(self.db, "SELECT point_count, encode(payload, 'hex') FROM tb_metric_ingest_log "
                                "WHERE seq = %d" % seq)[0]
            return int(row[0]), metrics_pb2.MetricBatch.FromString(bytes.fromhex(row[1])).points

        # One stored point again plus a new one: only the new one is published.
        r = self.record([point("ingest.pub", now - 30), point("ingest.pub", now - 29)])
        self.assertEqual((r.inserted_count, r.updated_count, r.duplicate_count), (1, 0, 1))
        n, pts = published(r.sequence)
        self.assertEqual((n, len(pts)), (1, 1))
        self.assertEqual(pts[0].time.ToNanoseconds() // 1000, ts(now - 29).ToNanoseconds() // 1000)
        # One unchanged and one replaced: only the replaced one is published, with its new value.
        r = self.record([point("ingest.pub", now - 30), point("ingest.pub", now - 29, p95=D(value=25.0))])
        self.assertEqual((r.inserted_count, r.updated_count, r.duplicate_count), (0, 1, 1))
        n, pts = published(r.sequence)
        self.assertEqual((n, len(pts)), (1, 1))
        self.assertAlmostEqual(pts[0].p95.value, 25.0)

    def test_one_bad_point_stores_nothing(self):
        now = time.time()
        pts = [point("ingest.atomic", now - 100 + i * 0.01) for i in range(999)]
        pts.append(point("ingest.atomic", now - 1, p95=D(value=-1.0)))
        details = self.assert_invalid(pts, "points[999].p95: must be >= 0")
        self.assertEqual(self.count("ingest.atomic"), 0, details)
        # A batch where only a later database failure could fail is atomic too:
        # a point beyond the table's partitions still goes to the default
        # partition, so force a failure with a deadline instead.
        pts = [point("ingest.atomic2", now - 100 + i * 0.01) for i in range(5000)]
        try:
            self.stub.RecordMetrics(metrics_pb2.RecordMetricsRequest(points=pts), metadata=self.md, timeout=0.005)
        except grpc.RpcError as e:
            self.assertIn(e.code(), (SC.DEADLINE_EXCEEDED, SC.CANCELLED), e.details())
        time.sleep(1.0)
        self.assertIn(self.count("ingest.atomic2"), (0, 5000))

    # ---- validation ----

    def test_every_validation_rule_names_the_field(self):
        now = time.time()
        long_name = "m" * 101
        cases = [
            (dict(metric_name=""), "points[1].metric_name: required"),
            (dict(metric_name="has space"), "points[1].metric_name: only letters"),
            (dict(metric_name=long_name), "points[1].metric_name: longer than 100"),
            (dict(endpoint="/" + "x" * 500), "points[1].endpoint: longer than 500"),
            (dict(endpoint="/a\x01b"), "points[1].endpoint: must be UTF-8 text without control"),
            (dict(method="FETCH"), "points[1].method: must be one of GET, POST"),
            (dict(method="get"), "points[1].method: must be one of"),
            (dict(status_code=wrappers_pb2.Int32Value(value=99)), "points[1].status_code: must be 100-599"),
            (dict(status_code=wrappers_pb2.Int32Value(value=600)), "points[1].status_code: must be 100-599"),
            (dict(request_count=-1, error_count=0), "points[1].request_count: must be >= 0"),
            (dict(error_count=-2), "points[1].error_count: must be >= 0"),
            (dict(request_count=3, error_count=4), "points[1].error_count: must be <= request_count"),
            (dict(error_rate=D(value=-0.5)), "points[1].error_rate: must be >= 0"),
            (dict(error_rate=D(value=100.01)), "points[1].error_rate: must be <= 100"),
            (dict(error_rate=D(value=math.nan)), "points[1].error_rate: must be a finite number"),
            (dict(p95=D(value=math.nan)), "points[1].p95: must be a finite number"),
            (dict(max=D(value=math.inf)), "points[1].max: must be a finite number"),
            (dict(p99=D(value=-math.inf)), "points[1].p99: must be a finite number"),
            (dict(mean=D(value=-3.0)), "points[1].mean: must be >= 0"),
            (dict(throughput=D(value=-1.0)), "points[1].throughput: must be >= 0"),
            (dict(throughput=D(value=1e9)), "points[1].throughput: must be <="),
            (dict(p50=D(value=25.0)), "points[1].p95: must be >= p50"),
            (dict(min=D(value=11.0)), "points[1].p50: must be >= min"),
            (dict(p99=D(value=50.0)), "points[1].max: must be >= p99"),
            (dict(p95=D(value=35.0)), "points[1].p99: must be >= p95"),
            (dict(mean=D(value=41.0)), "points[1].mean: must be <= max"),
            (dict(mean=D(value=0.5)), "points[1].mean: must be >= min"),
            (dict(tags={"k%d" % i: "v" for i in range(33)}), "points[1].tags: more than 32 keys"),
            (dict(tags={"": "v"}), "points[1].tags: a key is empty"),
            (dict(tags={"k": "v" * 501}), "points[1].tags: value of \"k\""),
            (dict(tags={"k" * 101: "v"}), "points[1].tags: key"),
            (dict(metric_type=99), "points[1].metric_type: unknown value 99"),
        ]
        for kw, needle in cases:
            with self.subTest(needle=needle):
                pts = [point("ingest.valid", now - 10), point(kw.pop("metric_name", "ingest.valid"), now - 9, **kw)]
                self.assert_invalid(pts, needle)
        # time: absent, far in the future, older than raw retention.
        base = point("ingest.valid", now - 10)
        no_time = point("ingest.valid", now - 9)
        no_time.ClearField("time")
        self.assert_invalid([base, no_time], "points[1].time: required")
        self.assert_invalid([base, point("ingest.valid", now + 600)], "points[1].time: more than 300 seconds in the")
        self.assert_invalid([base, point("ingest.valid", now - 8 * 86400)], "points[1].time: older than the raw retention allows")
        # two points with one key
        self.assert_invalid([base, point("ingest.valid", now - 10, p95=D(value=21.0))],
                            "points[1].time: same key (time, metric_name, endpoint) as points[0]")
        self.assertEqual(self.count("ingest.valid"), 0)

    def test_batch_limits(self):
        now = time.time()
        self.assert_invalid([], "points: must not be empty")
        pts = [point("ingest.limit", now - 100 + i * 0.001) for i in range(5001)]
        self.assert_invalid(pts, "limit of 5000 per batch", code=SC.RESOURCE_EXHAUSTED)
        # Beyond the 4 MiB message limit (max-recv-message-bytes): refused by size, naming the limit.
        big = [point("ingest.limit", now - 100 + i * 0.001, tags={"k%d" % k: "v" * 400 for k in range(16)})
               for i in range(1000)]
        with self.assertRaises(grpc.RpcError) as cm:
            self.record(big)
        self.assertEqual(cm.exception.code(), SC.RESOURCE_EXHAUSTED, cm.exception.details())
        self.assertIn("4194304", cm.exception.details())
        self.assertEqual(self.count("ingest.limit"), 0)
        # 5000 points is fine.
        r = self.record(pts[:5000])
        self.assertEqual(r.inserted_count, 5000)

    def test_validate_only_and_allow_partial(self):
        now = time.time()
        pts = [point("ingest.partial", now - 50 + i) for i in range(6)]
        pts[1] = point("ingest.partial", now - 49, method="BREW")
        pts[4] = point("ingest.partial", now - 46, p50=D(value=-1.0), error_count=500)
        r = self.record(pts, validate_only=True)
        self.assertEqual(r.rejected_count, 2)
        self.assertEqual(r.inserted_count, 0)
        self.assertEqual(sorted((e.index, e.field) for e in r.errors),
                         [(1, "method"), (4, "error_count"), (4, "p50")])
        self.assertEqual(self.count("ingest.partial"), 0)
        r = self.record(pts, allow_partial=True)
        self.assertEqual((r.inserted_count, r.rejected_count), (4, 2))
        self.assertEqual(sorted({e.index for e in r.errors}), [1, 4])
        self.assertEqual(self.count("ingest.partial"), 4)
        self.assert_invalid(pts, "allow_partial: cannot be combined", validate_only=True, allow_partial=True)

    def test_concurrent_writers_of_the_same_keys(self):
        now = time.time()
        errors = []

        def writer(k):
            stub = metrics_pb2_grpc.MetricsServiceStub(self.srv.channel)
            try:
                for rnd in range(5):
                    pts = [point("ingest.conc", now - 300 + i, endpoint="/e%d" % (i % 4),
                                 p95=D(value=20.0 + (k + rnd) % 3)) for i in range(400)]
                    if k % 2:
                        pts.reverse()
                    self.record(pts, stub=stub)
            except grpc.RpcError as e:
                errors.append("%s %s" % (e.code(), e.details()))

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(self.count("ingest.conc"), 400)


class CrashTest(unittest.TestCase):
    """SIGKILL during sustained ingest: acknowledged means stored, whole."""

    def test_sigkill_loses_no_acknowledged_batch(self):
        db = harness.fresh_database("itest_metrics_crash")
        srv = harness.Monitord(db)
        srv.wait_serving()
        md = srv.auth()
        acked = []
        sent = []
        lock = threading.Lock()
        stop = threading.Event()
        now = time.time()

        def writer(k):
            stub = metrics_pb2_grpc.MetricsServiceStub(srv.channel)
            b = 0
            while not stop.is_set():
                name = "crash.w%d.b%d" % (k, b)
                pts = [point(name, now - 200 + i * 0.01) for i in range(500)]
                with lock:
                    sent.append(name)
                try:
                    stub.RecordMetrics(metrics_pb2.RecordMetricsRequest(points=pts), metadata=md, timeout=30)
                    with lock:
                        acked.append(name)
                except grpc.RpcError:
                    return
                b += 1

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while len(acked) < 20 and time.time() < deadline:
            time.sleep(0.05)
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        stop.set()
        for t in threads:
            t.join()
        srv.log.close()
        self.assertGreaterEqual(len(acked), 20)
        # Sessions of the killed server may still be finishing their transactions.
        for _ in range(100):
            if scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                          "AND pid <> pg_backend_pid() AND state <> 'idle'") == "0":
                break
            time.sleep(0.1)
        counts = dict((r[0], int(r[1])) for r in psql(db, "SELECT metric_name, count(*) FROM tb_performance_metric "
                                                          "GROUP BY metric_name"))
        for name in acked:
            self.assertEqual(counts.get(name, 0), 500, "acknowledged batch %s lost" % name)
        for name in sent:
            self.assertIn(counts.get(name, 0), (0, 500), "batch %s stored in part" % name)
        unacked_stored = [n for n in sent if n not in acked and counts.get(n, 0) == 500]
        print("crash: %d batches acknowledged, %d sent, %d committed without an answer"
              % (len(acked), len(sent), len(unacked_stored)))


if __name__ == "__main__":
    harness.main()
