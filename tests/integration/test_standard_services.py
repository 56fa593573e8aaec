"""monitord seen by an independent client (python3-grpcio): the standard
health service, server reflection, every monitoring.v1 RPC answering, bad
input, graceful shutdown and a database outage."""

import os
import signal
import threading
import time
import unittest

import grpc
from google.protobuf import descriptor_pb2

import harness
from harness import health_pb2, reflection_pb2, reflection_pb2_grpc, reflection_v1alpha_pb2, \
    reflection_v1alpha_pb2_grpc

MONITORING_SERVICES = [
    "monitoring.v1.HealthService",
    "monitoring.v1.MetricsService",
    "monitoring.v1.ErrorsService",
    "monitoring.v1.AuditService",
    "monitoring.v1.AlertsService",
    "monitoring.v1.DashboardsService",
    "monitoring.v1.IntegrationsService",
    "monitoring.v1.AccessService",
]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def reflect(channel, requests, alpha=False):
    if alpha:
        stub = reflection_v1alpha_pb2_grpc.ServerReflectionStub(channel)
        return list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    return list(stub.ServerReflectionInfo(iter(requests), timeout=10))


def all_methods(channel):
    """(full method path, is_server_streaming, is_client_streaming) of every service, via reflection."""
    resp = reflect(channel, [reflection_pb2.ServerReflectionRequest(list_services="")])[0]
    names = [s.name for s in resp.list_services_response.service]
    methods = []
    for name in names:
        r = reflect(channel, [reflection_pb2.ServerReflectionRequest(file_containing_symbol=name)])[0]
        files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in r.file_descriptor_response.file_descriptor_proto]
        for fd in files:
            for svc in fd.service:
                full = (fd.package + "." if fd.package else "") + svc.name
                if full != name:
                    continue
                for m in svc.method:
                    methods.append(("/%s/%s" % (full, m.name), m.server_streaming, m.client_streaming))
    return names, methods


class StandardServices(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = harness.fresh_database("itest_std")
        cls.srv = harness.Monitord(cls.db)
        cls.srv.wait_serving()

    @classmethod
    def tearDownClass(cls):
        code = cls.srv.stop()
        log = cls.srv.read_log()
        if code != 0 or "AddressSanitizer" in log or "runtime error:" in log:
            raise AssertionError("monitord did not exit cleanly (%d):\n%s" % (code, log[-6000:]))

    def assert_still_serving(self):
        resp = self.srv.health().Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        self.assertEqual(resp.status, SERVING)

    def test_health_check_whole_server_and_each_service(self):
        self.assert_still_serving()
        for name in MONITORING_SERVICES:
            resp = self.srv.health().Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            self.assertEqual(resp.status, SERVING, name)

    def test_health_check_unknown_service_is_not_found(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.srv.health().Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_health_watch_sends_current_status(self):
        call = self.srv.health().Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        first = next(call)
        self.assertEqual(first.status, SERVING)
        call.cancel()
        unknown = self.srv.health().Watch(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        self.assertEqual(next(unknown).status, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
        unknown.cancel()
        self.assert_still_serving()

    def test_reflection_lists_every_service_v1_and_v1alpha(self):
        expected = set(MONITORING_SERVICES) | {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                                               "grpc.reflection.v1alpha.ServerReflection"}
        r1 = reflect(self.srv.channel, [reflection_pb2.ServerReflectionRequest(list_services="")])[0]
        self.assertEqual(set(s.name for s in r1.list_services_response.service), expected)
        r2 = reflect(self.srv.channel, [reflection_v1alpha_pb2.ServerReflectionRequest(list_services="")],
                     alpha=True)[0]
        self.assertEqual(set(s.name for s in r2.list_services_response.service), expected)

    def test_reflection_symbols_files_and_errors(self):
        reqs = [
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="monitoring.v1.AlertsService"),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.HealthCheckRequest"),
            reflection_pb2.ServerReflectionRequest(file_by_filename="google/protobuf/timestamp.proto"),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol"),
        ]
        alerts, hc, ts, missing = reflect(self.srv.channel, reqs)
        first = descriptor_pb2.FileDescriptorProto.FromString(alerts.file_descriptor_response.file_descriptor_proto[0])
        self.assertEqual(first.package, "monitoring.v1")
        self.assertIn("AlertsService", [s.name for s in first.service])
        # Dependencies come along, so a client can build the whole schema.
        names = {descriptor_pb2.FileDescriptorProto.FromString(b).name
                 for b in alerts.file_descriptor_response.file_descriptor_proto}
        for dep in first.dependency:
            self.assertIn(dep, names)
        hfile = descriptor_pb2.FileDescriptorProto.FromString(hc.file_descriptor_response.file_descriptor_proto[0])
        self.assertEqual(hfile.name, "grpc/health/v1/health.proto")
        tfile = descriptor_pb2.FileDescriptorProto.FromString(ts.file_descriptor_response.file_descriptor_proto[0])
        self.assertEqual(tfile.name, "google/protobuf/timestamp.proto")
        self.assertEqual(missing.error_response.error_code, grpc.StatusCode.NOT_FOUND.value[0])

    def test_every_monitoring_rpc_answers_without_crash(self):
        names, methods = all_methods(self.srv.channel)
        monitoring = [m for m in methods if m[0].startswith("/monitoring.v1.")]
        self.assertGreater(len(monitoring), 50)
        for svc in MONITORING_SERVICES:
            self.assertIn(svc, names)
        for path, server_streaming, client_streaming in monitoring:
            self.assertFalse(client_streaming, path)
            try:
                if server_streaming:
                    call = harness.raw_stream(self.srv.channel, path)(b"", timeout=5, metadata=self.srv.auth())
                    for _ in call:
                        break
                    call.cancel()
                else:
                    harness.raw_unary(self.srv.channel, path)(b"", timeout=5, metadata=self.srv.auth())
            except grpc.RpcError as e:
                self.assertNotIn(e.code(), (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), path)
                if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                    method = path.split("/")[2]
                    self.assertIn(method, e.details())
                    self.assertIn("not implemented yet: ", e.details(), path)
        self.assert_still_serving()

    def test_undecodable_request_is_invalid_argument(self):
        for junk in (b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08"):
            with self.assertRaises(grpc.RpcError) as cm:
                harness.raw_unary(self.srv.channel, "/grpc.health.v1.Health/Check")(junk, timeout=5)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("decoded", cm.exception.details())
        self.assert_still_serving()

    def test_oversized_request_is_resource_exhausted(self):
        big = b"\x0a" + b"\x80\x80\x80\x03" + b"a" * (6 * 1024 * 1024)  # field 1, 6 MiB string
        with self.assertRaises(grpc.RpcError) as cm:
            harness.raw_unary(self.srv.channel, "/grpc.health.v1.Health/Check")(big, timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assert_still_serving()

    def test_unknown_method_is_unimplemented(self):
        for path in ("/monitoring.v1.AlertsService/NoSuchMethod", "/no.Such/Method"):
            with self.assertRaises(grpc.RpcError) as cm:
                harness.raw_unary(self.srv.channel, path)(b"", timeout=5, metadata=self.srv.auth())
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.assert_still_serving()

    def test_api_needs_credentials(self):
        path = "/monitoring.v1.AlertsService/ListAlerts"
        for md in ((), (("authorization", "Bearer mk_0123456789abcdef_" + "A" * 43),),
                   (("authorization", "Basic dXNlcjpwYXNz"),)):
            with self.assertRaises(grpc.RpcError) as cm:
                harness.raw_unary(self.srv.channel, path)(b"", timeout=5, metadata=md)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED, md)
        # Unknown methods do not tell an unauthenticated caller what exists.
        with self.assertRaises(grpc.RpcError) as cm:
            harness.raw_unary(self.srv.channel, "/no.Such/Method")(b"", timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assert_still_serving()

    def test_expired_deadline(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.srv.health().Check(health_pb2.HealthCheckRequest(service=""), timeout=0.000001)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assert_still_serving()

    def test_cancelled_streams_are_released(self):
        calls = [self.srv.health().Watch(health_pb2.HealthCheckRequest(service=""), timeout=30) for _ in range(50)]
        for c in calls:
            self.assertEqual(next(c).status, SERVING)
        for c in calls:
            c.cancel()
        self.assert_still_serving()

    def test_request_id_is_echoed(self):
        _, call = self.srv.health().Check.with_call(health_pb2.HealthCheckRequest(service=""), timeout=5,
                                                    metadata=(("x-request-id", "req-abc-123"),))
        md = dict(call.initial_metadata())
        self.assertEqual(md.get("x-request-id"), "req-abc-123")
        time.sleep(0.2)
        self.assertIn("request_id=req-abc-123", self.srv.read_log())


class Lifecycle(unittest.TestCase):
    def test_reflection_client_that_does_not_read_cannot_grow_server_memory(self):
        # A server of its own, with AddressSanitizer's quarantine of freed
        # memory turned off (when sanitized), so RSS shows live memory.
        asan = os.environ.get("ASAN_OPTIONS", "")
        srv = harness.Monitord(harness.fresh_database("itest_flood"),
                               env={"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=0"})
        srv.wait_serving()

        def rss_kb():
            with open("/proc/%d/status" % srv.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
            return 0

        before = rss_kb()
        stub = reflection_pb2_grpc.ServerReflectionStub(srv.channel)
        req = reflection_pb2.ServerReflectionRequest(file_containing_symbol="monitoring.v1.AlertsService")
        # Each answer is about 23 KB; unread, 40 x 1000 of them would be ~900 MB.
        calls = [stub.ServerReflectionInfo(iter([req] * 1000), timeout=60) for _ in range(40)]
        time.sleep(3)
        grown_mb = (rss_kb() - before) / 1024
        for c in calls:
            c.cancel()
        self.assertLess(grown_mb, 100, "server grew %.0f MB for unread reflection answers" % grown_mb)
        srv.wait_serving()
        srv.assert_clean_exit(self)


    def test_sigterm_ends_streams_with_unavailable_and_exits_cleanly(self):
        srv = harness.Monitord(harness.fresh_database("itest_life"))
        srv.wait_serving()
        watch = srv.health().Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        self.assertEqual(next(watch).status, SERVING)
        codes = []

        def drain():
            try:
                for _ in watch:
                    pass
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())

        t = threading.Thread(target=drain)
        t.start()
        srv.proc.send_signal(signal.SIGTERM)
        t.join(30)
        self.assertEqual(codes, [grpc.StatusCode.UNAVAILABLE])
        srv.proc.wait(60)
        log = srv.read_log()
        self.assertEqual(srv.proc.returncode, 0, log[-4000:])
        self.assertNotIn("AddressSanitizer", log)
        self.assertIn('msg="stopped"', log)

    def test_rate_limit_per_caller_with_retry_hint(self):
        srv = harness.Monitord(harness.fresh_database("itest_rate"),
                               ["--rate-limit-per-s", "1", "--rate-limit-burst", "2"])
        srv.wait_serving()
        who = harness.raw_unary(srv.channel, "/monitoring.v1.AccessService/GetCallerIdentity")
        md = srv.auth()
        codes = []
        trailers = {}
        for _ in range(5):
            try:
                who(b"", timeout=5, metadata=md)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    trailers = dict(e.trailing_metadata() or ())
                    self.assertIn("rate-limit-per-s", e.details())
        # A burst of 2 then 1 per second: five quick calls cannot all pass.
        self.assertIn(grpc.StatusCode.RESOURCE_EXHAUSTED, codes)
        self.assertEqual(codes[0], grpc.StatusCode.OK)
        self.assertGreater(int(trailers.get("grpc-retry-pushback-ms", "0")), 0)
        # The standard health service is not rate limited for it.
        srv.wait_serving()
        srv.assert_clean_exit(self)

    def test_database_outage_and_recovery(self):
        cluster = harness.PrivateCluster()
        try:
            srv = harness.Monitord(cluster.conninfo)
            srv.wait_serving()
            watch = srv.health().Watch(health_pb2.HealthCheckRequest(service="monitoring.v1.AlertsService"),
                                       timeout=120)
            self.assertEqual(next(watch).status, SERVING)
            cluster.stop()
            self.assertEqual(next(watch).status, NOT_SERVING)
            resp = srv.health().Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            self.assertEqual(resp.status, NOT_SERVING)
            cluster.start()
            self.assertEqual(next(watch).status, SERVING)
            watch.cancel()
            srv.wait_serving()
            srv.assert_clean_exit(self)
        finally:
            cluster.destroy()

    def test_migrations_apply_once_with_two_replicas(self):
        db = harness.fresh_database("itest_repl")
        a = harness.Monitord(db)
        b = harness.Monitord(db)
        a.wait_serving()
        b.wait_serving()
        out = os.popen("psql -X -A -t '%s' -c 'SELECT count(*), count(DISTINCT version) FROM schema_migrations'"
                       % db).read().strip()
        total, distinct = out.split("|")
        self.assertEqual(total, distinct)
        self.assertGreater(int(total), 0)
        a.assert_clean_exit(self)
        b.assert_clean_exit(self)


if __name__ == "__main__":
    harness.main()
