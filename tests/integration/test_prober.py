"""The health prober end to end: monitord probes targets that this test
serves on loopback (an HTTP server that is up, slow, failing, flaky or
hanging, a closed port, and a grpc.health.v1 server in python3-grpcio),
records each result as the rules of docs/operations.md say, and, with two
replicas on one database, probes each target once per interval and hands a
dead replica's targets to the live one. Also the network policy (a policy
that denies loopback refuses every target, by address, by name, through a
redirect and over gRPC), redirects to another host (a second HTTP server on
127.0.0.2), and RunHealthCheck's own concurrency cap while a probe is held
in flight by the target.

Services are inserted with psql, so check intervals can be shorter than the
API allows. Every wait is a bounded poll; nothing asserts a duration.
"""

import http.server
import signal
import socket
import subprocess
import threading
import time
import unittest
from concurrent import futures

import grpc
from google.protobuf import field_mask_pb2

import harness
from harness import health_pb2, health_pb2_grpc


harness.api_stubs()
from monitoring.v1 import common_pb2, health_pb2 as mon_health_pb2, health_pb2_grpc as mon_health_pb2_grpc  # noqa

POLL_S = 60


def psql(conninfo, sql):
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql],
                       check=True, capture_output=True, text=True)
    return [line.split("\t") for line in r.stdout.splitlines() if line != ""]


class TargetHandler(http.server.BaseHTTPRequestHandler):
    flaky_count = 0
    lock = threading.Lock()
    other_port = 0  # the server on 127.0.0.2, another host
    blocked = threading.Event()  # set: a probe of /block is in flight
    release = threading.Event()  # set: /block answers

    def do_GET(self):
        if self.path == "/up":
            self.answer(200)
        elif self.path == "/redirect-here":
            self.redirect("http://127.0.0.1:%d/up" % self.server.server_address[1])
        elif self.path == "/redirect-away":
            self.redirect("http://127.0.0.2:%d/up" % TargetHandler.other_port)
        elif self.path == "/block":
            TargetHandler.blocked.set()
            TargetHandler.release.wait(60)
            self.answer(200)
        elif self.path == "/slow":
            time.sleep(1.4)  # over half of a 2 s timeout, under the timeout
            self.answer(200)
        elif self.path == "/fail":
            self.answer(500)
        elif self.path == "/missing":
            self.answer(404)
        elif self.path == "/flaky":
            with TargetHandler.lock:
                TargetHandler.flaky_count += 1
                n = TargetHandler.flaky_count
            self.answer(500 if n % 2 == 1 else 200)  # every probe: 500 first, 200 on the retry
        elif self.path == "/hang":
            time.sleep(4)  # past a 1 s timeout
            self.answer(200)
        else:
            self.answer(404)

    def redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def answer(self, code):
        body = b"ok\n"
        try:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the prober gave up first

    def log_message(self, fmt, *args):
        pass


class HealthServicer(health_pb2_grpc.HealthServicer):
    def Check(self, request, context):
        if request.service in ("", "ok"):
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        if request.service == "down":
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def insert_service(db, sid, url, interval=3, timeout=1, retries=0):
    psql(db, "INSERT INTO tb_service_health (id, name, service_type, health_check_url, check_interval, timeout,"
             " retry_count) VALUES ('%s', '%s', 'api', '%s', %d, %d, %d)" % (sid, sid, url, interval, timeout, retries))


def latest_check(db, sid):
    rows = psql(db, "SELECT status, coalesce(response_time::text, ''), coalesce(error_message, ''),"
                    " coalesce(details->>'attempt_count', '') FROM tb_health_check_log WHERE service_id = '%s'"
                    " ORDER BY checked_at DESC, id DESC LIMIT 1" % sid)
    return rows[0] if rows else None


def check_count(db, sid):
    return int(psql(db, "SELECT count(*) FROM tb_health_check_log WHERE service_id = '%s'" % sid)[0][0])


def wait_for(what, fn, timeout=POLL_S):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError("%s not seen within %ss (last: %r)" % (what, timeout, last))


def migrated(db):
    return psql(db, "SELECT count(*) FROM information_schema.columns"
                    " WHERE table_name = 'tb_service_health' AND column_name = 'next_probe_at'")[0][0] == "1"


class ProberTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TargetHandler)
        cls.http.daemon_threads = True
        cls.http_port = cls.http.server_address[1]
        threading.Thread(target=cls.http.serve_forever, daemon=True).start()
        cls.other = http.server.ThreadingHTTPServer(("127.0.0.2", 0), TargetHandler)
        cls.other.daemon_threads = True
        TargetHandler.other_port = cls.other.server_address[1]
        threading.Thread(target=cls.other.serve_forever, daemon=True).start()
        cls.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), cls.grpc_server)
        cls.grpc_port = cls.grpc_server.add_insecure_port("127.0.0.1:0")
        cls.grpc_server.start()

    @classmethod
    def tearDownClass(cls):
        TargetHandler.release.set()
        cls.http.shutdown()
        cls.other.shutdown()
        cls.grpc_server.stop(0)

    def start(self, db, env=None):
        srv = harness.Monitord(db, env=env)
        srv.wait_serving()
        wait_for("migrations", lambda: migrated(db))
        wait_for("the prober", lambda: "health prober started" in srv.read_log())
        return srv

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.http_port, path)

    def test_rules_for_http_and_grpc_targets(self):
        db = harness.fresh_database("prober_rules")
        srv = self.start(db)
        try:
            refused = closed_port()
            grpc_base = "grpc://127.0.0.1:%d" % self.grpc_port
            cases = {
                # id: (url, timeout, retries, expected status, text in the error)
                "up": (self.url("/up"), 2, 0, "healthy", ""),
                "slow": (self.url("/slow"), 2, 0, "degraded", "slow answer"),
                "fail": (self.url("/fail"), 1, 1, "down", "HTTP 500"),
                "missing": (self.url("/missing"), 1, 2, "degraded", "HTTP 404"),
                "flaky": (self.url("/flaky"), 1, 1, "degraded", "healthy only after 2 attempts"),
                "refused": ("http://127.0.0.1:%d/" % refused, 1, 1, "down", "could not connect"),
                "hang": (self.url("/hang"), 1, 0, "down", "no answer within the timeout"),
                "grpc-ok": (grpc_base, 2, 0, "healthy", ""),
                "grpc-named": (grpc_base + "/ok", 2, 0, "healthy", ""),
                "grpc-down": (grpc_base + "/down", 1, 1, "down", "NOT_SERVING"),
                "grpc-unknown": (grpc_base + "/nope", 1, 0, "degraded", "SERVICE_UNKNOWN"),
                "grpc-refused": ("grpc://127.0.0.1:%d" % refused, 1, 0, "down", "could not connect"),
            }
            for sid, (url, timeout, retries, _, _) in cases.items():
                insert_service(db, sid, url, interval=timeout + 2, timeout=timeout, retries=retries)
            for sid, (url, timeout, retries, status, error) in cases.items():
                with self.subTest(service=sid):
                    row = wait_for("a probe of %s" % sid, lambda: latest_check(db, sid))
                    self.assertEqual(row[0], status, "%s: %r" % (sid, row))
                    self.assertIn(error, row[2], "%s: %r" % (sid, row))
                    if status == "healthy":
                        self.assertEqual(row[2], "")
                    if sid in ("refused", "hang", "grpc-refused"):
                        self.assertEqual(row[1], "", "no response, no response time: %r" % row)
                    else:
                        self.assertNotEqual(row[1], "", "a response time: %r" % row)
                    if sid in ("fail", "refused", "grpc-down"):
                        self.assertEqual(row[3], "2", "one retry after a failure: %r" % row)
                    if sid == "missing":
                        self.assertEqual(row[3], "1", "a 4xx is not retried: %r" % row)
                    state = psql(db, "SELECT status FROM tb_service_health WHERE id = '%s'" % sid)[0][0]
                    self.assertEqual(state, status)
            # Each target is probed again after its interval, and its claim is given back.
            wait_for("second probes", lambda: all(check_count(db, sid) >= 2 for sid in ("up", "grpc-ok")))
            wait_for("claims given back", lambda: psql(
                db, "SELECT count(*) FROM tb_service_health WHERE id = 'up' AND probe_claimed_by IS NULL")[0][0] == "1")
            log = srv.read_log()
            self.assertNotIn("127.0.0.1:%d" % self.http_port, log.split("health prober started")[-1],
                             "probe URLs stay out of the log")
        finally:
            srv.assert_clean_exit(self)

    def test_run_health_check(self):
        db = harness.fresh_database("prober_run")
        srv = self.start(db)
        try:
            insert_service(db, "on-demand", self.url("/up"), interval=3600, timeout=2)
            insert_service(db, "no-url", "", interval=3600)
            psql(db, "UPDATE tb_service_health SET health_check_url = NULL WHERE id = 'no-url'")
            # The regular prober probes on-demand once at once; wait for it so its count is known.
            wait_for("the first probe", lambda: check_count(db, "on-demand") >= 1)
            stub = mon_health_pb2_grpc.HealthServiceStub(srv.channel)
            req = mon_health_pb2.RunHealthCheckRequest(service_id="on-demand")
            resp = stub.RunHealthCheck(req, metadata=srv.auth(), timeout=30)
            self.assertEqual(resp.check.status, common_pb2.SERVICE_STATUS_HEALTHY)
            self.assertEqual(resp.attempt_count, 1)
            self.assertGreater(resp.check.id, 0)
            self.assertTrue(resp.check.HasField("response_time"))
            self.assertEqual(resp.service.id, "on-demand")
            self.assertEqual(resp.service.status, common_pb2.SERVICE_STATUS_HEALTHY)
            self.assertEqual(check_count(db, "on-demand"), 2)
            with self.assertRaises(grpc.RpcError) as cm:
                stub.RunHealthCheck(mon_health_pb2.RunHealthCheckRequest(service_id="no-url"), metadata=srv.auth(),
                                    timeout=30)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            with self.assertRaises(grpc.RpcError) as cm:
                stub.RunHealthCheck(mon_health_pb2.RunHealthCheckRequest(service_id="nobody"), metadata=srv.auth(),
                                    timeout=30)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
            with self.assertRaises(grpc.RpcError) as cm:
                stub.RunHealthCheck(req, metadata=srv.auth(), timeout=1.5)  # shorter than timeout 2 s
            self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
            # The default policy refuses link-local addresses (instance metadata), in either family.
            for url in ("http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/",
                        "http://[fe80::1]:8080/"):
                with self.subTest(url=url):
                    self.assert_url_denied(srv, url)
        finally:
            srv.assert_clean_exit(self)

    def assert_url_denied(self, srv, url):
        """CreateService refuses url up front: its address is one the probe network policy denies."""
        stub = mon_health_pb2_grpc.HealthServiceStub(srv.channel)
        with self.assertRaises(grpc.RpcError) as cm:
            stub.CreateService(mon_health_pb2.CreateServiceRequest(service=mon_health_pb2.MonitoredService(
                name="denied", service_type="api", health_check_url=url)), metadata=srv.auth(), timeout=30)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("service.health_check_url", cm.exception.details())
        self.assertIn("probe network policy", cm.exception.details())

    def test_redirects_to_another_host(self):
        db = harness.fresh_database("prober_redirect")
        srv = self.start(db)
        try:
            insert_service(db, "here", self.url("/redirect-here"), interval=3600, timeout=2)
            insert_service(db, "away", self.url("/redirect-away"), interval=3600, timeout=2)
            here = wait_for("a probe of here", lambda: latest_check(db, "here"))
            self.assertEqual(here[0], "healthy", "a redirect within the host is followed: %r" % here)
            away = wait_for("a probe of away", lambda: latest_check(db, "away"))
            self.assertEqual(away[0], "degraded", away)
            self.assertIn("redirect to another host not followed", away[2])
        finally:
            srv.assert_clean_exit(self)
        srv = self.start(db, env={"MONITORD_PROBE_FOLLOW_CROSS_HOST_REDIRECTS": "true"})
        try:
            stub = mon_health_pb2_grpc.HealthServiceStub(srv.channel)
            resp = stub.RunHealthCheck(mon_health_pb2.RunHealthCheckRequest(service_id="away"), metadata=srv.auth(),
                                       timeout=30)
            self.assertEqual(resp.check.status, common_pb2.SERVICE_STATUS_HEALTHY, resp.check.error_message)
        finally:
            srv.assert_clean_exit(self)

    def test_network_policy_denies_loopback(self):
        db = harness.fresh_database("prober_policy")
        srv = self.start(db, env={"MONITORD_PROBE_DENY_NETWORKS": "127.0.0.0/8, ::1/128"})
        try:
            cases = {
                "ip": self.url("/up"),
                "name": "http://localhost:%d/up" % self.http_port,
                "via-redirect": "http://localhost:%d/redirect-here" % self.http_port,
                "grpc": "grpc://127.0.0.1:%d" % self.grpc_port,
                "grpc-name": "grpc://localhost:%d" % self.grpc_port,
            }
            for sid, url in cases.items():
                insert_service(db, sid, url, interval=3600, timeout=1)
            for sid in cases:
                with self.subTest(service=sid):
                    row = wait_for("a probe of %s" % sid, lambda: latest_check(db, sid))
                    self.assertEqual(row[0], "unknown", row)
                    self.assertIn("denied by the probe network policy", row[2])
            stub = mon_health_pb2_grpc.HealthServiceStub(srv.channel)
            resp = stub.RunHealthCheck(mon_health_pb2.RunHealthCheckRequest(service_id="ip"), metadata=srv.auth(),
                                       timeout=30)
            self.assertEqual(resp.check.status, common_pb2.SERVICE_STATUS_UNKNOWN)
            self.assertIn("denied by the probe network policy", resp.check.error_message)
            self.assertEqual(resp.attempt_count, 1, "a denied target is not retried")
            # A denied address written as such is refused up front; a host name is judged when probed.
            for url in (self.url("/up"), "http://[::1]:%d/" % self.http_port, "grpc://127.0.0.9:50051"):
                with self.subTest(url=url):
                    self.assert_url_denied(srv, url)
            created = stub.CreateService(mon_health_pb2.CreateServiceRequest(service=mon_health_pb2.MonitoredService(
                name="by-name", service_type="api", check_interval=3600,
                health_check_url="http://localhost:%d/up" % self.http_port)), metadata=srv.auth(), timeout=30)
            with self.assertRaises(grpc.RpcError) as cm:
                stub.UpdateService(mon_health_pb2.UpdateServiceRequest(
                    service=mon_health_pb2.MonitoredService(id=created.service.id, health_check_url=self.url("/up")),
                    update_mask=field_mask_pb2.FieldMask(paths=["health_check_url"])), metadata=srv.auth(), timeout=30)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("probe network policy", cm.exception.details())
        finally:
            srv.assert_clean_exit(self)

    def test_run_health_check_concurrency_limit(self):
        db = harness.fresh_database("prober_runcap")
        # One worker: a probe held on it would stall every other call.
        srv = self.start(db, env={"MONITORD_PROBE_RUN_CONCURRENCY": "1", "MONITORD_WORKER_THREADS": "1"})
        try:
            for sid, path, timeout in (("blocking", "/block", 30), ("quick", "/up", 5)):
                psql(db, "INSERT INTO tb_service_health (id, name, service_type, health_check_url, check_interval,"
                         " timeout, next_probe_at) VALUES ('%s', '%s', 'api', '%s', 3600, %d,"
                         " now() + interval '1 hour')" % (sid, sid, self.url(path), timeout))
            stub = mon_health_pb2_grpc.HealthServiceStub(srv.channel)
            TargetHandler.release.clear()
            TargetHandler.blocked.clear()
            first = stub.RunHealthCheck.future(mon_health_pb2.RunHealthCheckRequest(service_id="blocking"),
                                               metadata=srv.auth(), timeout=60)
            try:
                self.assertTrue(TargetHandler.blocked.wait(30), "the probe reached the target")
                with self.assertRaises(grpc.RpcError) as cm:
                    stub.RunHealthCheck(mon_health_pb2.RunHealthCheckRequest(service_id="quick"),
                                        metadata=srv.auth(), timeout=30)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                self.assertIn("probe-run-concurrency", cm.exception.details())
                trailers = dict(cm.exception.trailing_metadata() or ())
                self.assertIn("grpc-retry-pushback-ms", trailers)
                # The probe in flight holds no worker: other calls are answered meanwhile.
                got = stub.GetService(mon_health_pb2.GetServiceRequest(service_id="quick"), metadata=srv.auth(),
                                      timeout=30)
                self.assertEqual(got.service.id, "quick")
                self.assertFalse(first.done())
            finally:
                TargetHandler.release.set()
            resp = first.result(timeout=60)
            self.assertEqual(resp.check.status, common_pb2.SERVICE_STATUS_HEALTHY)
            # The slot is free again.
            resp = stub.RunHealthCheck(mon_health_pb2.RunHealthCheckRequest(service_id="quick"), metadata=srv.auth(),
                                       timeout=30)
            self.assertEqual(resp.check.status, common_pb2.SERVICE_STATUS_HEALTHY)
        finally:
            srv.assert_clean_exit(self)

    def test_two_replicas_probe_once_and_hand_over(self):
        db = harness.fresh_database("prober_replicas")
        a = self.start(db)
        b = self.start(db)
        try:
            ids = ["r%d" % i for i in range(6)]
            for sid in ids:
                insert_service(db, sid, self.url("/up"), interval=2, timeout=1)
            insert_service(db, "r-hang", self.url("/hang"), interval=3, timeout=1)
            wait_for("probes of every target", lambda: all(check_count(db, sid) >= 3 for sid in ids))
            # Once per interval: consecutive checks of a target are about 2 s apart, never two
            # replicas' results in one interval.
            for sid in ids:
                gaps = psql(db, "SELECT extract(epoch FROM checked_at - lag(checked_at) OVER (ORDER BY checked_at))"
                                " FROM tb_health_check_log WHERE service_id = '%s' ORDER BY checked_at" % sid)
                gaps = [float(g[0]) for g in gaps if g[0] != ""]
                self.assertTrue(gaps and min(gaps) > 1.0, "%s probed more than once per interval: %r" % (sid, gaps))
            # Kill one replica; the other takes over every target, the hanging one after its lease.
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait()
            a.log.close()
            a.channel.close()
            killed_at = psql(db, "SELECT now()")[0][0]
            for sid in ids + ["r-hang"]:
                wait_for("a probe of %s after the kill" % sid, lambda: int(psql(
                    db, "SELECT count(*) FROM tb_health_check_log WHERE service_id = '%s'"
                        " AND checked_at > '%s'" % (sid, killed_at))[0][0]) >= 2)
            self.assertEqual(psql(db, "SELECT status FROM tb_service_health WHERE id = 'r-hang'")[0][0], "down")
        finally:
            if a.proc.poll() is None:
                a.stop()
            b.assert_clean_exit(self)


if __name__ == "__main__":
    harness.main()
