"""A PostgreSQL crash while every write RPC is being called: nothing that was
acknowledged is lost, nothing is half stored.

The test's own cluster keeps fsync and synchronous_commit on (the shared test
cluster runs with both off) and a long wal_writer_delay, so that a commit
acknowledged before its WAL was flushed stays unflushed until the crash and
is caught. The crash comes right after a RecordMetrics batch was
acknowledged (the moment a batch answered before its flush is most exposed),
as `pg_ctl stop -m immediate` does it: SIGQUIT to the postmaster. Concurrent writers call RecordMetrics, ReportHealthCheck,
CreateService, AcknowledgeAlert and ResolveAlert, CreateAlertRule and
UpdateAlertRule, and CreateApiKey (these at a slower pace: each of their
commits flushes the WAL, hiding a commit that did not); PostgreSQL crashes
while they write (what is not flushed is gone) and is started again. The writers see errors during the outage; only
the calls answered OK count. After the restart, every acknowledged write is
there with its audit event, and every RecordMetrics batch, acknowledged or
not, is there whole or not at all. Without a crash: RecordMetrics answers
only once the WAL is flushed past a write committed before it, for a new
batch and for a batch of duplicates alike. Also: monitord warns at start about a
database that is not crash-safe (fsync or synchronous_commit off), and not
about this one."""

import os
import signal
import subprocess
import threading
import time
import unittest

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2, wrappers_pb2

import harness

harness.api_stubs()
from monitoring.v1 import access_pb2, access_pb2_grpc, alerts_pb2, alerts_pb2_grpc, common_pb2  # noqa: E402
from monitoring.v1 import health_pb2, health_pb2_grpc, metrics_pb2, metrics_pb2_grpc  # noqa: E402

POINTS_PER_BATCH = 20
ALERTS = 2000
CALL_TIMEOUT_S = 5


def psql(conninfo, sql):
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql],
                       check=True, capture_output=True, text=True)
    return [line.split("\t") for line in r.stdout.splitlines() if line != ""]


def ts(seconds):
    t = timestamp_pb2.Timestamp()
    t.FromMicroseconds(int(seconds * 1000000))
    return t


def sql_list(values):
    return ",".join("'%s'" % v.replace("'", "''") for v in values) or "NULL"


class Writer(threading.Thread):
    """Calls one kind of write until told to stop; keeps what was acknowledged."""

    def __init__(self, name, step, pause_s=0.0):
        super().__init__(name=name, daemon=True)
        self.step = step
        self.pause_s = pause_s
        self.stop_flag = threading.Event()
        self.acked = []
        self.attempted = []
        self.errors = 0
        self.ok_after_restart = threading.Event()
        self.restarted = False
        self.failure = None

    def run(self):
        n = 0
        while not self.stop_flag.is_set():
            n += 1
            try:
                self.step(self, n)
                if self.restarted:
                    self.ok_after_restart.set()
                if self.pause_s:
                    time.sleep(self.pause_s)
            except grpc.RpcError:
                self.errors += 1
                time.sleep(0.02)
            except Exception as e:  # a bug in the test itself: report it
                self.failure = e
                return


class PgCrash(unittest.TestCase):
    def setUp(self):
        self.pg = harness.PrivateCluster(durable=True)
        self.db = self.pg.conninfo
        # A flush that waits for the WAL writer would mostly wait ten
        # seconds: a commit answered before its flush is still volatile at
        # the crash.
        psql(self.db, "ALTER SYSTEM SET wal_writer_delay = '10s'")
        psql(self.db, "SELECT pg_reload_conf()")
        self.assertEqual(psql(self.db, "SHOW fsync")[0][0], "on")
        self.assertEqual(psql(self.db, "SHOW synchronous_commit")[0][0], "on")
        # The rollup job runs once at start, then not again for an hour:
        # after the crash the rollups lack every batch, and the queries must
        # know it (check_trend_after_crash).
        self.srv = harness.Monitord(self.db, extra_args=["--metrics-rollup-interval-ms", "3600000"])
        self.srv.wait_serving()
        self.md = self.srv.auth()
        ch = self.srv.channel
        self.metrics = metrics_pb2_grpc.MetricsServiceStub(ch)
        self.health = health_pb2_grpc.HealthServiceStub(ch)
        self.alerts = alerts_pb2_grpc.AlertsServiceStub(ch)
        self.access = access_pb2_grpc.AccessServiceStub(ch)
        self.tag = "c%d" % os.getpid()
        self.writers = []
        self.crashed = threading.Event()

    def tearDown(self):
        try:
            if self.srv.proc.poll() is None:
                self.srv.stop()
        finally:
            self.pg.destroy()

    def call(self, stub, method, request):
        return getattr(stub, method)(request, metadata=self.md, timeout=CALL_TIMEOUT_S)

    # ---- the writers ----

    def record_metrics(self, w, n):
        name = "%s.%s.b%d" % (self.tag, w.name, n)
        now = time.time()
        points = [metrics_pb2.MetricPoint(time=ts(now - 60), metric_name=name, endpoint="/e%d" % i,
                                          request_count=1) for i in range(POINTS_PER_BATCH)]
        w.attempted.append(name)
        self.call(self.metrics, "RecordMetrics", metrics_pb2.RecordMetricsRequest(points=points))
        w.acked.append(name)
        if w.name == "m1" and not self.crashed.is_set() and all(len(x.acked) >= 5 for x in self.writers):
            self.crash()

    def crash(self):
        """What pg_ctl stop -m immediate does, without its start-up delay."""
        with open(os.path.join(self.pg.dir, "data", "postmaster.pid")) as f:
            os.kill(int(f.readline()), signal.SIGQUIT)
        self.crashed.set()

    def report_health(self, w, n):
        check = health_pb2.HealthCheck(service_id=self.service_id, status=common_pb2.SERVICE_STATUS_HEALTHY)
        check.checked_at.CopyFrom(ts(time.time()))
        resp = self.call(self.health, "ReportHealthCheck", health_pb2.ReportHealthCheckRequest(check=check))
        w.acked.append(str(resp.check.id))

    def create_service(self, w, n):
        svc = health_pb2.MonitoredService(name="%s-svc-%d" % (self.tag, n), service_type="api")
        resp = self.call(self.health, "CreateService", health_pb2.CreateServiceRequest(service=svc))
        w.acked.append(resp.service.id)

    def ack_resolve_alert(self, w, n):
        alert_id = "%s-alt-%d" % (self.tag, (n + 1) // 2)
        if n % 2 == 1:
            try:
                self.call(self.alerts, "AcknowledgeAlert", alerts_pb2.AcknowledgeAlertRequest(alert_id=alert_id))
                w.acked.append(("acknowledged", alert_id))
            except grpc.RpcError as e:
                # a retry after an unanswered success finds it acknowledged
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
        else:
            try:
                self.call(self.alerts, "ResolveAlert", alerts_pb2.ResolveAlertRequest(alert_id=alert_id))
                w.acked.append(("resolved", alert_id))
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise

    def edit_rule(self, w, n):
        if n % 2 == 1:
            rule = alerts_pb2.AlertRule(name="%s-rule-%d" % (self.tag, n), metric_name="http_request",
                                        statistic=common_pb2.METRIC_STATISTIC_P95,
                                        comparison_operator=common_pb2.COMPARISON_OPERATOR_GT, threshold=1000)
            resp = self.call(self.alerts, "CreateAlertRule", alerts_pb2.CreateAlertRuleRequest(rule=rule))
            w.acked.append(("created", resp.rule.id, 0))
        else:
            # thresholds only grow: the stored one is at least the last acknowledged
            rule = alerts_pb2.AlertRule(id=self.rule_id, threshold=float(n))
            self.call(self.alerts, "UpdateAlertRule", alerts_pb2.UpdateAlertRuleRequest(
                rule=rule, update_mask=field_mask_pb2.FieldMask(paths=["threshold"])))
            w.acked.append(("updated", self.rule_id, n))

    def create_api_key(self, w, n):
        resp = self.call(self.access, "CreateApiKey",
                         access_pb2.CreateApiKeyRequest(description="%s key %d" % (self.tag, n)))
        w.acked.append(resp.api_key.id)

    # ---- the test ----

    def prepare(self):
        svc = health_pb2.MonitoredService(name=self.tag + "-reported", service_type="api")
        self.service_id = self.call(self.health, "CreateService",
                                    health_pb2.CreateServiceRequest(service=svc)).service.id
        rule = alerts_pb2.AlertRule(name=self.tag + "-edited", metric_name="http_request",
                                    statistic=common_pb2.METRIC_STATISTIC_P95,
                                    comparison_operator=common_pb2.COMPARISON_OPERATOR_GT, threshold=1)
        self.rule_id = self.call(self.alerts, "CreateAlertRule",
                                 alerts_pb2.CreateAlertRuleRequest(rule=rule)).rule.id
        psql(self.db, "UPDATE tb_alert_rule SET next_evaluation_at = 'infinity' WHERE id = '%s'" % self.rule_id)
        psql(self.db, "INSERT INTO tb_alert (id, alert_rule_id, status, severity, message, current_value, threshold,"
                      " triggered_at, group_key) SELECT '%s-alt-' || i, '%s', 'active', 'warning', 'x', 2, 1,"
                      " now() - interval '1 minute', '%s-alt-' || i FROM generate_series(1, %d) i"
                      % (self.tag, self.rule_id, self.tag, ALERTS))

    def test_acknowledged_writes_survive_a_crash(self):
        self.prepare()
        slow = 0.05
        writers = [Writer("m1", self.record_metrics), Writer("m2", self.record_metrics),
                   Writer("health", self.report_health, slow), Writer("service", self.create_service, slow),
                   Writer("alert", self.ack_resolve_alert, slow), Writer("rule", self.edit_rule, slow),
                   Writer("key", self.create_api_key, slow)]
        self.writers = writers
        for w in writers:
            w.start()
        # m1 crashes the server once every writer has had writes acknowledged
        self.assertTrue(self.crashed.wait(60), {w.name: len(w.acked) for w in writers})
        self.pg.stop()  # waits until the crashed server is gone
        deadline = time.time() + 30
        while sum(w.errors for w in writers) == 0:  # the writers meet the outage
            self.assertLess(time.time(), deadline, "no writer met the outage")
            time.sleep(0.02)
        self.pg.start()
        for w in writers:
            w.restarted = True
        for w in writers:
            self.assertTrue(w.ok_after_restart.wait(60), "%s: no write acknowledged after the restart" % w.name)
        for w in writers:
            w.stop_flag.set()
        for w in writers:
            w.join(CALL_TIMEOUT_S * 3)
            self.assertIsNone(w.failure, w.name)
        self.check_trend_after_crash()
        self.srv.stop()
        self.assertNotIn("not crash-safe", self.srv.read_log())
        self.check(writers)

    def check_trend_after_crash(self):
        """GetPerformanceTrend by the hour (whole hourly buckets, the rollups' own
        shape) counts every point stored: the crash emptied the ingest log, so
        the rollups may be behind everywhere and the answer comes from the raw
        points, not from rollups that never saw these batches."""
        hour = int(time.time()) // 3600 * 3600
        start, end = hour - 3600, hour + 3600
        r = self.call(self.metrics, "GetPerformanceTrend", metrics_pb2.GetPerformanceTrendRequest(
            time_range=common_pb2.TimeRange(start_time=ts(start), end_time=ts(end)), endpoint="/e0",
            granularity=common_pb2.GRANULARITY_ONE_HOUR))
        stored = int(psql(self.db, "SELECT coalesce(sum(request_count), 0) FROM tb_performance_metric"
                                   " WHERE endpoint = '/e0' AND time >= to_timestamp(%d) AND time < to_timestamp(%d)"
                                   % (start, end))[0][0])
        self.assertGreater(stored, 0)
        self.assertEqual(sum(b.total_requests for b in r.buckets), stored)

    def unflushed_lsn(self):
        """Commits a write asynchronously; returns a WAL position past it that
        nothing has flushed yet (the WAL writer waits 10 s)."""
        psql(self.db, "CREATE TABLE IF NOT EXISTS unflushed (x integer)")
        for _ in range(20):  # a background commit of the server's may flush it first: try again
            lsn, is_unflushed = psql(self.db, "SET synchronous_commit = off; INSERT INTO unflushed VALUES (1);"
                                              " SELECT pg_current_wal_insert_lsn(),"
                                              " pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn()")[0]
            if is_unflushed == "t":
                return lsn
        self.fail("every asynchronous commit was flushed at once")

    def test_acknowledged_batch_is_flushed(self):
        """The WAL is flushed before RecordMetrics answers, also when every
        point of the batch was stored already (a retry whose first attempt
        committed but was not answered)."""
        now = time.time()
        points = [metrics_pb2.MetricPoint(time=ts(now - 60), metric_name=self.tag + ".flushed", endpoint="/e%d" % i,
                                          request_count=1) for i in range(POINTS_PER_BATCH)]
        for attempt in ("new", "duplicate"):
            lsn = self.unflushed_lsn()
            resp = self.call(self.metrics, "RecordMetrics", metrics_pb2.RecordMetricsRequest(points=points))
            self.assertEqual(resp.duplicate_count, 0 if attempt == "new" else POINTS_PER_BATCH)
            self.assertEqual(psql(self.db, "SELECT pg_current_wal_flush_lsn() >= '%s'" % lsn)[0][0], "t", attempt)

    def check(self, writers):
        by = {w.name: w for w in writers}
        lost = {}

        # RecordMetrics: acknowledged batches whole, the others whole or absent
        attempted = by["m1"].attempted + by["m2"].attempted
        acked = set(by["m1"].acked + by["m2"].acked)
        counts = dict((name, int(c)) for name, c in psql(
            self.db, "SELECT metric_name, count(*) FROM tb_performance_metric WHERE metric_name LIKE '%s.%%'"
                     " GROUP BY 1" % self.tag))
        partial = {n: c for n, c in counts.items() if c != POINTS_PER_BATCH}
        self.assertEqual(partial, {}, "half-stored batches")
        lost["RecordMetrics"] = sorted(n for n in acked if counts.get(n, 0) != POINTS_PER_BATCH)
        self.assertLessEqual(set(counts), set(attempted))

        def missing(sql_fmt, ids):
            ids = list(ids)
            if not ids:
                return []
            found = set(r[0] for r in psql(self.db, sql_fmt % sql_list(ids)))
            return sorted(set(ids) - found)

        lost["ReportHealthCheck"] = missing("SELECT id::text FROM tb_health_check_log WHERE id::text IN (%s)",
                                            by["health"].acked)
        lost["CreateService"] = missing("SELECT id FROM tb_service_health WHERE id IN (%s)", by["service"].acked)
        lost["CreateApiKey"] = missing("SELECT id FROM tb_api_key WHERE id IN (%s)", by["key"].acked)
        created = [rid for kind, rid, _ in by["rule"].acked if kind == "created"]
        lost["CreateAlertRule"] = missing("SELECT id FROM tb_alert_rule WHERE id IN (%s)", created)
        updates = [v for kind, _, v in by["rule"].acked if kind == "updated"]
        stored = float(psql(self.db, "SELECT threshold FROM tb_alert_rule WHERE id = '%s'" % self.rule_id)[0][0])
        lost["UpdateAlertRule"] = [max(updates)] if updates and stored < max(updates) else []
        status = dict(psql(self.db, "SELECT id, status FROM tb_alert WHERE id IN (%s)"
                                    % sql_list(a for _, a in by["alert"].acked)))
        lost["AcknowledgeAlert/ResolveAlert"] = sorted(
            a for want, a in by["alert"].acked
            if status.get(a) not in (("acknowledged", "resolved") if want == "acknowledged" else ("resolved",)))

        # every acknowledged change came with its audit event
        audited = created + by["service"].acked + by["key"].acked + [a for _, a in by["alert"].acked]
        lost["audit events"] = missing("SELECT DISTINCT resource_id FROM tb_audit_event WHERE resource_id IN (%s)",
                                       audited)

        summary = ", ".join("%s %d acknowledged" % (w.name, len(w.acked)) for w in writers)
        print("crash test: %s; batches stored %d of %d attempted" % (summary, len(counts), len(attempted)))
        self.assertEqual({k: v for k, v in lost.items() if v}, {}, "acknowledged writes lost in the crash")


class DurabilityWarning(unittest.TestCase):
    """monitord warns at start when the database would lose acknowledged
    writes in a crash: the shared test cluster runs with fsync and
    synchronous_commit off."""

    def test_warns_about_a_database_that_is_not_crash_safe(self):
        srv = harness.Monitord(harness.fresh_database("itest_pg_crash_warn"))
        try:
            srv.wait_serving()
            deadline = time.time() + 30
            while "synchronous_commit is off" not in srv.read_log() and time.time() < deadline:
                time.sleep(0.05)
            log = srv.read_log()
            self.assertIn('level=warn msg="the database is not crash-safe: fsync is off', log)
            self.assertIn('level=warn msg="the database is not crash-safe: synchronous_commit is off', log)
        finally:
            self.assertEqual(srv.stop(), 0)


if __name__ == "__main__":
    harness.main()
