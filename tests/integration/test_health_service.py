"""HealthService end to end, through python3-grpcio against a real monitord
(authentication on, an admin key from `monitord admin bootstrap`):

- CreateService, GetService, ListServices (paging, filters, tokens bound to
  the filters), UpdateService (field mask), DeleteService (the check log
  goes with it), each change with its audit event and change event;
- every validation rule, each refused with INVALID_ARGUMENT naming the field;
- ReportHealthCheck updates status and last_check in the transaction of
  the log row: a failure after the log insert leaves no row, and no
  snapshot ever shows a log row without its status;
- ListHealthChecks by time range and status, newest first, paged;
- GetSystemHealthSummary and ListServicesWithRecentChecks against the data
  model's two sample queries computed independently with psql;
- GetServiceUptime on a check history written with psql at chosen times,
  against the time-weighted figures computed here.

WatchServiceHealth and RunHealthCheck have their own tests
(test_health_watch.py, the prober's)."""

import os
import subprocess
import threading
import time
import unittest

import grpc
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2, wrappers_pb2

import harness


harness.api_stubs()
from monitoring.v1 import common_pb2, health_pb2, health_pb2_grpc  # noqa: E402

SC = grpc.StatusCode
HEALTHY = common_pb2.SERVICE_STATUS_HEALTHY
DEGRADED = common_pb2.SERVICE_STATUS_DEGRADED
DOWN = common_pb2.SERVICE_STATUS_DOWN
UNKNOWN = common_pb2.SERVICE_STATUS_UNKNOWN
STATUS_NAMES = {HEALTHY: "healthy", DEGRADED: "degraded", DOWN: "down", UNKNOWN: "unknown"}
STATUS_OF = {v: k for k, v in STATUS_NAMES.items()}
HOUR = 3600
DAY = 86400


def psql(conninfo, sql):
    """Rows of sql as lists of text (unaligned, tuples only, tab-separated)."""
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql],
                       check=True, capture_output=True, text=True)
    return [line.split("\t") for line in r.stdout.splitlines() if line != ""]


def scalar(conninfo, sql):
    return psql(conninfo, sql)[0][0]


def ts(seconds):
    t = timestamp_pb2.Timestamp()
    t.FromMilliseconds(int(round(seconds * 1000)))
    return t


def sql_time(seconds):
    return "to_timestamp(%.3f)" % seconds


def uptime_model(checks, start, end, now):
    """Time-weighted up and down seconds of [start, end): each check's status
    holds until the next check, the latest one until now; healthy and
    degraded are up, down is down, unknown and no data are neither."""
    checks = sorted(checks)
    up = down = 0.0
    for i, (at, status) in enumerate(checks):
        nxt = checks[i + 1][0] if i + 1 < len(checks) else max(now, at)
        a, b = max(at, start), min(nxt, end)
        if b <= a:
            continue
        if status in ("healthy", "degraded"):
            up += b - a
        elif status == "down":
            down += b - a
    count = sum(1 for at, _ in checks if start <= at < end)
    incidents = 0
    for i, (at, status) in enumerate(checks):
        prev = checks[i - 1][1] if i > 0 else None
        if start <= at < end and status == "down" and prev != "down":
            incidents += 1
    return up, down, count, incidents


class HealthService(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = harness.fresh_database("itest_health_service")
        cls.srv = harness.Monitord(cls.db)
        cls.srv.wait_serving()
        cls.stub = health_pb2_grpc.HealthServiceStub(cls.srv.channel)
        cls.md = cls.srv.auth()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop_clean()

    # ---- helpers ----

    def call(self, method, request, timeout=20):
        return getattr(self.stub, method)(request, metadata=self.md, timeout=timeout)

    def create(self, name, service_type="api", **kw):
        svc = health_pb2.MonitoredService(name=name, service_type=service_type, **kw)
        return self.call("CreateService", health_pb2.CreateServiceRequest(service=svc)).service

    def report(self, service_id, status, at=None, response_time=None, **kw):
        check = health_pb2.HealthCheck(service_id=service_id, status=status)
        if at is not None:
            check.checked_at.CopyFrom(ts(at))
        if response_time is not None:
            check.response_time.value = response_time
        return self.call("ReportHealthCheck", health_pb2.ReportHealthCheckRequest(check=check, **kw))

    def assert_invalid(self, method, request, field):
        with self.assertRaises(grpc.RpcError) as cm:
            self.call(method, request)
        self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT, cm.exception.details())
        self.assertTrue(cm.exception.details().startswith(field),
                        "%r does not name %r" % (cm.exception.details(), field))

    def assert_code(self, code, method, request):
        with self.assertRaises(grpc.RpcError) as cm:
            self.call(method, request)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception.details()

    def audit_rows(self, resource_type, resource_id):
        return psql(self.db, "SELECT action_type::text, coalesce(before_data::text, ''), coalesce(after_data::text, '')"
                    " FROM tb_audit_event WHERE resource_type = '%s' AND resource_id = '%s' ORDER BY time, id"
                    % (resource_type, resource_id))

    def events(self, service_id):
        return [r[0] for r in psql(self.db, "SELECT kind FROM tb_service_health_event WHERE service_id = '%s'"
                                   " ORDER BY seq" % service_id)]

    # ---- CreateService / GetService ----

    def test_create_and_get_with_defaults(self):
        s = self.create("Orders DB", "database", description="primary", health_check_url="https://db.example.com:8443/h")
        self.assertTrue(s.id.startswith("svc-"), s.id)
        self.assertEqual((s.check_interval, s.timeout, s.retry_count.value), (300, 30, 3))
        self.assertEqual(s.status, UNKNOWN)
        self.assertFalse(s.HasField("uptime_24h"))
        got = self.call("GetService", health_pb2.GetServiceRequest(service_id=s.id)).service
        self.assertEqual(got, s)
        self.assertEqual(self.audit_rows("service", s.id)[0][0], "create")
        self.assertEqual(self.events(s.id), ["created"])
        # Short intervals get a timeout below them by default; explicit fields are kept.
        t = self.create("short", "cache", id="short-%d" % os.getpid(), check_interval=20,
                        retry_count=wrappers_pb2.Int32Value(value=0),
                        metrics=struct_pb2.Struct(fields={"connections": struct_pb2.Value(number_value=12)}))
        self.assertEqual((t.id, t.check_interval, t.timeout, t.retry_count.value), ("short-%d" % os.getpid(), 20, 19, 0))
        self.assertEqual(t.metrics["connections"], 12)
        for url in ("grpc://10.0.0.7:50051", "http://[::1]:8080/healthz?x=1", "https://example.com"):
            self.create("url ok", health_check_url=url)

    def test_create_validation(self):
        def bad(field, **kw):
            fields = dict(name="n", service_type="api")
            fields.update(kw)
            self.assert_invalid("CreateService",
                                health_pb2.CreateServiceRequest(service=health_pb2.MonitoredService(**fields)), field)
        self.assert_invalid("CreateService", health_pb2.CreateServiceRequest(), "service")
        bad("service.name", name="")
        bad("service.name", name="x" * 101)
        bad("service.name", name="tab\there")
        bad("service.service_type", service_type="")
        bad("service.service_type", service_type="queue")
        bad("service.id", id="has space")
        bad("service.id", id="x" * 51)
        bad("service.description", description="bell\x07")
        for url in ("ftp://example.com", "http://", "http:///path", "example.com", "http://exa mple.com",
                    "http://user:pw@example.com", "http://example.com:0", "http://example.com:70000",
                    "http://example.com:80a", "http://-bad.example.com", "http://a..b", "http://[zz]:80",
                    "https://" + "a" * 490 + ".com"):
            bad("service.health_check_url", health_check_url=url)
        bad("service.check_interval", check_interval=5)
        bad("service.check_interval", check_interval=86401)
        bad("service.check_interval", check_interval=-1)
        bad("service.timeout", check_interval=60, timeout=60)
        bad("service.timeout", check_interval=60, timeout=90)
        bad("service.timeout", check_interval=7200, timeout=3601)
        bad("service.timeout", timeout=-3)
        bad("service.retry_count", retry_count=wrappers_pb2.Int32Value(value=11))
        bad("service.retry_count", retry_count=wrappers_pb2.Int32Value(value=-1))
        self.assert_invalid("GetService", health_pb2.GetServiceRequest(), "service_id")
        self.assert_invalid("GetService", health_pb2.GetServiceRequest(service_id="a/b"), "service_id")

    def test_create_conflict_and_not_found(self):
        sid = "dup-%d" % os.getpid()
        self.create("dup", id=sid)
        details = self.assert_code(SC.ALREADY_EXISTS, "CreateService", health_pb2.CreateServiceRequest(
            service=health_pb2.MonitoredService(id=sid, name="again", service_type="api")))
        self.assertIn("service.id", details)
        self.assert_code(SC.NOT_FOUND, "GetService", health_pb2.GetServiceRequest(service_id="nope"))

    # ---- ListServices ----

    def test_list_paging_and_filters(self):
        tag = "lst%d" % os.getpid()
        made = [self.create("%s-%02d" % (tag, i), "storage" if i % 2 else "email") for i in range(7)]
        self.report(made[0].id, DOWN)
        self.report(made[1].id, HEALTHY)
        want = psql(self.db, "SELECT id FROM tb_service_health WHERE service_type IN ('storage', 'email')"
                    " ORDER BY name, id")
        seen, token, pages = [], "", 0
        while True:
            r = self.call("ListServices", health_pb2.ListServicesRequest(page_size=3, page_token=token,
                                                                         service_types=["storage", "email"]))
            self.assertEqual(r.total_size, len(want))
            seen += [s.id for s in r.services]
            pages += 1
            token = r.next_page_token
            if not token:
                break
        self.assertEqual(seen, [w[0] for w in want])
        self.assertGreater(pages, 1)
        r = self.call("ListServices", health_pb2.ListServicesRequest(statuses=[DOWN, HEALTHY]))
        want = psql(self.db, "SELECT id FROM tb_service_health WHERE status IN ('down', 'healthy') ORDER BY name, id")
        self.assertEqual([s.id for s in r.services], [w[0] for w in want])
        self.assertEqual(r.total_size, len(want))
        first = self.call("ListServices", health_pb2.ListServicesRequest(page_size=1))
        self.assertTrue(first.next_page_token)
        self.assert_invalid("ListServices", health_pb2.ListServicesRequest(page_token=first.next_page_token,
                                                                           service_types=["api"]), "page_token")
        self.assert_invalid("ListServices", health_pb2.ListServicesRequest(page_token="garbage!"), "page_token")
        self.assert_invalid("ListServices", health_pb2.ListServicesRequest(page_size=-1), "page_size")
        self.assert_invalid("ListServices", health_pb2.ListServicesRequest(statuses=[0]), "statuses[0]")
        self.assert_invalid("ListServices", health_pb2.ListServicesRequest(service_types=["api", "queue"]),
                            "service_types[1]")

    # ---- UpdateService ----

    def test_update_with_mask(self):
        s = self.create("before", "api", check_interval=60, timeout=10, description="d")
        req = health_pb2.UpdateServiceRequest(
            service=health_pb2.MonitoredService(id=s.id, name="after", timeout=50, description="ignored"),
            update_mask=field_mask_pb2.FieldMask(paths=["name", "timeout"]))
        u = self.call("UpdateService", req).service
        self.assertEqual((u.name, u.timeout, u.description, u.check_interval), ("after", 50, "d", 60))
        self.assertGreaterEqual(u.updated_at.ToMicroseconds(), s.updated_at.ToMicroseconds())
        rows = self.audit_rows("service", s.id)
        self.assertEqual([r[0] for r in rows], ["create", "update"])
        self.assertIn('"name": "before"', rows[1][1].replace('":"', '": "'))
        self.assertIn('"name": "after"', rows[1][2].replace('":"', '": "'))
        self.assertEqual(self.events(s.id), ["created", "updated"])

        def bad(field, paths, **kw):
            self.assert_invalid("UpdateService", health_pb2.UpdateServiceRequest(
                service=health_pb2.MonitoredService(id=s.id, **kw),
                update_mask=field_mask_pb2.FieldMask(paths=paths)), field)
        bad("update_mask", [])
        bad("update_mask", ["status"])
        bad("update_mask", ["uptime_24h"])
        bad("update_mask", ["colour"])
        bad("service.name", ["name"])
        bad("service.timeout", ["timeout"], timeout=60)             # not below the stored interval of 60
        bad("service.timeout", ["check_interval"], check_interval=30)  # below the stored timeout of 50
        bad("service.health_check_url", ["health_check_url"], health_check_url="mailto:x@example.com")
        bad("service.service_type", ["service_type"], service_type="queue")
        self.assert_invalid("UpdateService", health_pb2.UpdateServiceRequest(), "service")
        self.assert_code(SC.NOT_FOUND, "UpdateService", health_pb2.UpdateServiceRequest(
            service=health_pb2.MonitoredService(id="nope", name="x"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"])))
        # Nothing changed by the refusals.
        self.assertEqual(self.call("GetService", health_pb2.GetServiceRequest(service_id=s.id)).service, u)
        # Clearing: empty url and absent retry_count (default) through the mask.
        c = self.call("UpdateService", health_pb2.UpdateServiceRequest(
            service=health_pb2.MonitoredService(id=s.id),
            update_mask=field_mask_pb2.FieldMask(paths=["description", "health_check_url", "retry_count"]))).service
        self.assertEqual((c.description, c.health_check_url, c.retry_count.value), ("", "", 3))
        self.assertEqual(scalar(self.db, "SELECT description IS NULL FROM tb_service_health WHERE id = '%s'" % s.id), "t")

    # ---- DeleteService ----

    def test_delete_takes_the_check_log(self):
        s = self.create("doomed")
        for st in (HEALTHY, DOWN, HEALTHY):
            self.report(s.id, st)
        r = self.call("DeleteService", health_pb2.DeleteServiceRequest(service_id=s.id))
        self.assertEqual(r.deleted_check_count, 3)
        self.assertEqual(scalar(self.db, "SELECT count(*) FROM tb_health_check_log WHERE service_id = '%s'" % s.id), "0")
        self.assertEqual(scalar(self.db, "SELECT count(*) FROM tb_service_uptime_hourly WHERE service_id = '%s'" % s.id),
                         "0")
        self.assert_code(SC.NOT_FOUND, "GetService", health_pb2.GetServiceRequest(service_id=s.id))
        self.assert_code(SC.NOT_FOUND, "DeleteService", health_pb2.DeleteServiceRequest(service_id=s.id))
        self.assert_invalid("DeleteService", health_pb2.DeleteServiceRequest(), "service_id")
        rows = self.audit_rows("service", s.id)
        self.assertEqual(rows[-1][0], "delete")
        self.assertIn(s.id, rows[-1][1])
        self.assertEqual(self.events(s.id)[-1], "deleted")

    # ---- ReportHealthCheck ----

    def test_report_updates_status_and_last_check(self):
        s = self.create("reported")
        at = time.time() - 5
        r = self.report(s.id, DOWN, at=at, response_time=120, service_metrics=struct_pb2.Struct(
            fields={"queue": struct_pb2.Value(number_value=3)}))
        self.assertTrue(r.is_status_changed)
        self.assertEqual(r.previous_status, UNKNOWN)
        self.assertEqual((r.check.status, r.check.response_time.value), (DOWN, 120))
        self.assertEqual(r.check.checked_at.ToMilliseconds(), int(round(at * 1000)))
        self.assertEqual((r.service.status, r.service.last_check.ToMilliseconds()), (DOWN, int(round(at * 1000))))
        self.assertEqual(r.service.metrics["queue"], 3)
        self.assertEqual(r.service.uptime_24h.value, 0.0)
        row = psql(self.db, "SELECT s.status::text, s.last_check = l.checked_at, l.id FROM tb_service_health s"
                   " JOIN tb_health_check_log l ON l.service_id = s.id WHERE s.id = '%s'" % s.id)
        self.assertEqual(row, [["down", "t", str(r.check.id)]])
        same = self.report(s.id, DOWN)
        self.assertFalse(same.is_status_changed)
        self.assertEqual(same.service.metrics["queue"], 3)  # absent service_metrics keep them
        # A late report (older than the latest check) is logged but leaves status and last_check alone.
        late = self.report(s.id, HEALTHY, at=at - 60)
        self.assertFalse(late.is_status_changed)
        self.assertEqual(late.service.status, DOWN)
        self.assertEqual(self.events(s.id), ["created", "status_changed", "checked", "checked"])
        self.assertEqual(self.audit_rows("health-check", str(r.check.id))[0][0], "create")

        def bad(field, check, **kw):
            self.assert_invalid("ReportHealthCheck", health_pb2.ReportHealthCheckRequest(check=check, **kw), field)
        bad("check", None)
        bad("check.service_id", health_pb2.HealthCheck(status=HEALTHY))
        bad("check.status", health_pb2.HealthCheck(service_id=s.id))
        bad("check.status", health_pb2.HealthCheck(service_id=s.id, status=9))
        bad("check.response_time", health_pb2.HealthCheck(service_id=s.id, status=HEALTHY,
                                                          response_time=wrappers_pb2.Int32Value(value=-1)))
        bad("check.checked_at", health_pb2.HealthCheck(service_id=s.id, status=HEALTHY, checked_at=ts(time.time() + 600)))
        bad("check.error_message", health_pb2.HealthCheck(service_id=s.id, status=DOWN, error_message="x" * 5000))
        self.assert_code(SC.NOT_FOUND, "ReportHealthCheck", health_pb2.ReportHealthCheckRequest(
            check=health_pb2.HealthCheck(service_id="nope", status=HEALTHY)))
        # Within five minutes ahead is accepted (clock skew of the reporter).
        self.report(s.id, HEALTHY, at=time.time() + 120)

    def test_report_is_one_transaction(self):
        s = self.create("atomic")
        self.report(s.id, HEALTHY)
        # A failure after the log row is written (the service update) must take the row with it.
        psql(self.db, "CREATE FUNCTION refuse_fail_metrics() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
             " IF NEW.metrics ? 'fail' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$;"
             " CREATE TRIGGER refuse_fail_metrics BEFORE UPDATE ON tb_service_health FOR EACH ROW"
             " EXECUTE FUNCTION refuse_fail_metrics()")
        try:
            before = scalar(self.db, "SELECT count(*) FROM tb_health_check_log WHERE service_id = '%s'" % s.id)
            with self.assertRaises(grpc.RpcError):
                self.report(s.id, DOWN, service_metrics=struct_pb2.Struct(fields={"fail": struct_pb2.Value(bool_value=True)}))
            self.assertEqual(scalar(self.db, "SELECT count(*) FROM tb_health_check_log WHERE service_id = '%s'" % s.id),
                             before)
            self.assertEqual(scalar(self.db, "SELECT status::text FROM tb_service_health WHERE id = '%s'" % s.id),
                             "healthy")
        finally:
            psql(self.db, "DROP TRIGGER refuse_fail_metrics ON tb_service_health; DROP FUNCTION refuse_fail_metrics()")
        # Under concurrent reports, no snapshot shows a latest log row whose status or time the service lacks.
        stop = threading.Event()
        errors = []

        def reporter(statuses):
            i = 0
            while not stop.is_set():
                try:
                    self.report(s.id, statuses[i % len(statuses)])
                except grpc.RpcError as e:
                    errors.append(e)
                i += 1
        threads = [threading.Thread(target=reporter, args=([HEALTHY, DOWN, DEGRADED],)) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for _ in range(40):
                row = psql(self.db, "SELECT s.status = l.status AND s.last_check = l.checked_at"
                           " FROM tb_service_health s, LATERAL (SELECT status, checked_at FROM tb_health_check_log"
                           " WHERE service_id = s.id ORDER BY checked_at DESC, id DESC LIMIT 1) l"
                           " WHERE s.id = '%s'" % s.id)
                self.assertEqual(row, [["t"]])
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(errors, [])

    # ---- ListHealthChecks ----

    def test_list_health_checks(self):
        s = self.create("history")
        now = time.time()
        plan = [(now - 3 * HOUR, HEALTHY), (now - 2 * HOUR, DOWN), (now - 90 * 60, DEGRADED), (now - HOUR, DOWN),
                (now - 30 * 60, HEALTHY), (now - 26 * HOUR, DOWN)]
        ids = {}
        for at, st in plan:
            ids[round(at * 1000)] = self.report(s.id, st, at=at).check.id
        r = self.call("ListHealthChecks", health_pb2.ListHealthChecksRequest(service_id=s.id))
        got = [c.checked_at.ToMilliseconds() for c in r.checks]
        want = sorted((round(at * 1000) for at, _ in plan if at >= now - DAY), reverse=True)
        self.assertEqual(got, want)  # default window: the last 24 hours, newest first
        tr = common_pb2.TimeRange(start_time=ts(now - 2 * HOUR), end_time=ts(now - HOUR))
        r = self.call("ListHealthChecks", health_pb2.ListHealthChecksRequest(service_id=s.id, time_range=tr))
        self.assertEqual([c.status for c in r.checks], [DEGRADED, DOWN])  # [start, end)
        r = self.call("ListHealthChecks", health_pb2.ListHealthChecksRequest(
            service_id=s.id, statuses=[DOWN], time_range=common_pb2.TimeRange(start_time=ts(now - 2 * DAY))))
        self.assertEqual(len(r.checks), 3)
        self.assertTrue(all(c.status == DOWN for c in r.checks))
        paged, token = [], ""
        while True:
            r = self.call("ListHealthChecks", health_pb2.ListHealthChecksRequest(
                service_id=s.id, page_size=2, page_token=token,
                time_range=common_pb2.TimeRange(start_time=ts(now - 2 * DAY))))
            paged += [c.id for c in r.checks]
            token = r.next_page_token
            if not token:
                break
        self.assertEqual(paged, [ids[k] for k in sorted(ids, reverse=True)])
        first = self.call("ListHealthChecks", health_pb2.ListHealthChecksRequest(service_id=s.id, page_size=1))
        self.assert_invalid("ListHealthChecks", health_pb2.ListHealthChecksRequest(
            service_id=s.id, page_token=first.next_page_token, statuses=[DOWN]), "page_token")
        self.assert_invalid("ListHealthChecks", health_pb2.ListHealthChecksRequest(), "service_id")
        self.assert_invalid("ListHealthChecks", health_pb2.ListHealthChecksRequest(
            service_id=s.id, time_range=common_pb2.TimeRange(start_time=ts(now), end_time=ts(now - 1))), "time_range")
        self.assert_invalid("ListHealthChecks", health_pb2.ListHealthChecksRequest(service_id=s.id, page_size=-5),
                            "page_size")
        self.assert_invalid("ListHealthChecks", health_pb2.ListHealthChecksRequest(service_id=s.id, statuses=[0]),
                            "statuses[0]")
        self.assert_code(SC.NOT_FOUND, "ListHealthChecks", health_pb2.ListHealthChecksRequest(service_id="nope"))

    # ---- the data model's two system-health queries ----

    def test_summary_matches_the_sample_query(self):
        a = self.create("sum-a", "cache")
        b = self.create("sum-b", "cache")
        self.report(a.id, HEALTHY)
        self.report(b.id, DEGRADED)
        for types, where in (([], ""), (["cache"], " WHERE service_type IN ('cache')")):
            r = self.call("GetSystemHealthSummary", health_pb2.GetSystemHealthSummaryRequest(service_types=types))
            row = psql(self.db, "SELECT COUNT(*) AS total_services,"
                       " COUNT(*) FILTER (WHERE status = 'healthy') AS healthy_count,"
                       " COUNT(*) FILTER (WHERE status = 'degraded') AS degraded_count,"
                       " COUNT(*) FILTER (WHERE status = 'down') AS down_count,"
                       " ROUND(AVG(uptime_24h), 2) AS avg_uptime_24h,"
                       " COUNT(*) FILTER (WHERE status = 'unknown')"
                       " FROM tb_service_health" + where)[0]
            self.assertEqual([r.total_services, r.healthy_count, r.degraded_count, r.down_count, r.unknown_count],
                             [int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[5])])
            if row[4] == "":
                self.assertFalse(r.HasField("avg_uptime_24h"))
            else:
                self.assertAlmostEqual(r.avg_uptime_24h.value, float(row[4]), places=6)
            worst = DOWN if int(row[3]) else DEGRADED if int(row[2]) else UNKNOWN if (int(row[5]) or not int(row[0])) \
                else HEALTHY
            self.assertEqual(r.overall_status, worst)
            self.assertLess(abs(r.computed_at.ToMilliseconds() / 1000 - time.time()), 60)
        self.assert_invalid("GetSystemHealthSummary", health_pb2.GetSystemHealthSummaryRequest(service_types=["x"]),
                            "service_types[0]")

    def test_recent_checks_match_the_sample_query(self):
        s = self.create("recent-many")
        now = time.time()
        for i in range(13):
            self.report(s.id, [HEALTHY, DOWN, DEGRADED][i % 3], at=now - 100 + i, response_time=10 + i)
        self.create("recent-none")
        rows = psql(self.db, """
SELECT s.id, s.name, s.status, coalesce(s.uptime_24h::text, ''), (
    SELECT jsonb_agg(jsonb_build_object(
        'status', l.status, 'response_time', l.response_time,
        'checked_at', (extract(epoch FROM l.checked_at) * 1000)::bigint) ORDER BY l.checked_at DESC)
    FROM (SELECT * FROM tb_health_check_log WHERE service_id = s.id ORDER BY checked_at DESC LIMIT 10) l
  ) AS recent_checks
FROM tb_service_health s ORDER BY s.name, s.id""")
        import json
        got, token = [], ""
        while True:
            r = self.call("ListServicesWithRecentChecks",
                          health_pb2.ListServicesWithRecentChecksRequest(page_size=4, page_token=token))
            got += r.services
            token = r.next_page_token
            if not token:
                break
        self.assertEqual(len(got), len(rows))
        for item, row in zip(got, rows):
            self.assertEqual([item.service.id, item.service.name, STATUS_NAMES[item.service.status]], row[:3])
            if row[3]:
                self.assertAlmostEqual(item.service.uptime_24h.value, float(row[3]), places=6)
            else:
                self.assertFalse(item.service.HasField("uptime_24h"))
            want = json.loads(row[4]) if row[4] else []
            self.assertEqual([(STATUS_NAMES[c.status], c.response_time.value if c.HasField("response_time") else None,
                               c.checked_at.ToMilliseconds()) for c in item.recent_checks],
                             [(w["status"], w["response_time"], w["checked_at"]) for w in want])
        one = self.call("ListServicesWithRecentChecks", health_pb2.ListServicesWithRecentChecksRequest(
            recent_check_count=3, statuses=[DEGRADED, DOWN, HEALTHY]))
        mine = [x for x in one.services if x.service.id == s.id][0]
        self.assertEqual(len(mine.recent_checks), 3)
        self.assertTrue(all(x.service.status != UNKNOWN for x in one.services))
        self.assert_invalid("ListServicesWithRecentChecks",
                            health_pb2.ListServicesWithRecentChecksRequest(recent_check_count=101), "recent_check_count")
        self.assert_invalid("ListServicesWithRecentChecks",
                            health_pb2.ListServicesWithRecentChecksRequest(recent_check_count=-1), "recent_check_count")
        self.assert_invalid("ListServicesWithRecentChecks",
                            health_pb2.ListServicesWithRecentChecksRequest(page_size=-1), "page_size")
        self.assert_invalid("ListServicesWithRecentChecks",
                            health_pb2.ListServicesWithRecentChecksRequest(statuses=[0]), "statuses[0]")
        self.assert_invalid("ListServicesWithRecentChecks",
                            health_pb2.ListServicesWithRecentChecksRequest(page_token="x"), "page_token")

    # ---- uptime ----

    def check_window(self, w, checks, start, end, now):
        up, down, count, incidents = uptime_model(checks, start, end, now)
        self.assertAlmostEqual(w.up_seconds, up, delta=2)
        self.assertAlmostEqual(w.down_seconds, down, delta=2)
        self.assertAlmostEqual(w.unknown_seconds, (end - start) - up - down, delta=3)
        self.assertEqual((w.check_count, w.incident_count), (count, incidents))
        if up + down > 0:
            self.assertAlmostEqual(w.uptime_percent.value, 100.0 * up / (up + down), delta=0.02)
        else:
            self.assertFalse(w.HasField("uptime_percent"))

    def test_uptime_of_a_constructed_history(self):
        s = self.create("uptime")
        t = time.time()
        history = [(t - 3 * DAY, "down"), (t - 10 * HOUR - 17, "healthy"), (t - 6 * HOUR - 1234, "down"),
                   (t - 3 * HOUR - 59, "degraded"), (t - 95 * 60, "unknown"), (t - 80 * 60 + 7, "healthy"),
                   (t - 8 * DAY, "healthy"), (t - 40 * DAY, "down")]
        # Written with psql at chosen times, out of order and in one statement.
        psql(self.db, "INSERT INTO tb_health_check_log (service_id, status, checked_at) VALUES "
             + ", ".join("('%s', '%s', %s)" % (s.id, st, sql_time(at)) for at, st in history))
        r = self.call("GetServiceUptime", health_pb2.GetServiceUptimeRequest(service_id=s.id))
        now = time.time()
        self.assertEqual(r.service_id, s.id)
        for w, label, length in ((r.uptime_24h, "24h", DAY), (r.uptime_7d, "7d", 7 * DAY), (r.uptime_30d, "30d", 30 * DAY)):
            self.assertEqual(w.window, label)
            end = w.time_range.end_time.ToMilliseconds() / 1000
            self.assertAlmostEqual(end, now, delta=5)
            self.assertAlmostEqual(w.time_range.start_time.ToMilliseconds() / 1000, end - length, delta=0.01)
            self.check_window(w, history, end - length, end, end)
        self.assertFalse(r.HasField("custom"))
        # Exact custom windows: whole hours from the rollup and edges from the log, or all from the log.
        for start, end in ((t - 20 * HOUR + 11, t - 2 * HOUR - 5), (t - 100 * 60, t - 70 * 60), (t - 9 * DAY, t - DAY)):
            r = self.call("GetServiceUptime", health_pb2.GetServiceUptimeRequest(
                service_id=s.id, custom_range=common_pb2.TimeRange(start_time=ts(start), end_time=ts(end))))
            self.assertEqual(r.custom.window, "custom")
            self.check_window(r.custom, history, round(start * 1000) / 1000, round(end * 1000) / 1000, now)
        # Stored uptime after a reported check equals the computed 24h figure.
        rep = self.report(s.id, HEALTHY)
        r = self.call("GetServiceUptime", health_pb2.GetServiceUptimeRequest(service_id=s.id))
        self.assertAlmostEqual(rep.service.uptime_24h.value, r.uptime_24h.uptime_percent.value, delta=0.02)
        self.assertAlmostEqual(rep.service.uptime_7d.value, r.uptime_7d.uptime_percent.value, delta=0.02)
        self.assertAlmostEqual(rep.service.uptime_30d.value, r.uptime_30d.uptime_percent.value, delta=0.02)
        empty = self.create("no checks")
        r = self.call("GetServiceUptime", health_pb2.GetServiceUptimeRequest(service_id=empty.id))
        self.assertFalse(r.uptime_24h.HasField("uptime_percent"))
        self.assertEqual(r.uptime_24h.unknown_seconds, DAY)

        def bad(field, **kw):
            self.assert_invalid("GetServiceUptime", health_pb2.GetServiceUptimeRequest(**kw), field)
        bad("service_id")
        bad("custom_range", service_id=s.id, custom_range=common_pb2.TimeRange(start_time=ts(t), end_time=ts(t - 5)))
        bad("custom_range.start_time", service_id=s.id, custom_range=common_pb2.TimeRange(start_time=ts(t - 31 * DAY)))
        bad("custom_range.end_time", service_id=s.id, custom_range=common_pb2.TimeRange(end_time=ts(t + DAY)))
        self.assert_code(SC.NOT_FOUND, "GetServiceUptime", health_pb2.GetServiceUptimeRequest(service_id="nope"))

    def test_uptime_of_reports_out_of_order(self):
        s = self.create("uptime-reports")
        t = time.time()
        history = [(t - 5 * HOUR + 3, "healthy"), (t - 1 * HOUR - 7, "down"), (t - 3 * HOUR + 400, "down"),
                   (t - 4 * HOUR - 100, "degraded"), (t - 2 * HOUR, "healthy"), (t - 30 * HOUR, "down")]
        for at, st in history:
            self.report(s.id, STATUS_OF[st], at=at)
        history = [(round(at * 1000) / 1000, st) for at, st in history]
        r = self.call("GetServiceUptime", health_pb2.GetServiceUptimeRequest(
            service_id=s.id, custom_range=common_pb2.TimeRange(start_time=ts(t - 29 * HOUR - 123),
                                                               end_time=ts(t - 20))))
        self.check_window(r.custom, history, round((t - 29 * HOUR - 123) * 1000) / 1000, round((t - 20) * 1000) / 1000,
                          time.time())
        self.assertEqual(r.uptime_24h.check_count, 5)


if __name__ == "__main__":
    harness.main()
