"""monitord over TLS and mutual TLS (python3-grpcio as the independent
client), and our own client library, through monctl, against a real
monitord: health, a streamed watch, an unimplemented RPC, TLS flags."""

import os
import subprocess
import tempfile
import time
import unittest

import grpc

import harness
from harness import health_pb2, health_pb2_grpc

MONCTL = os.path.join(harness.BUILD_DIR, "bin", "monctl")
CERTS = tempfile.mkdtemp(prefix="mon-certs-")
subprocess.run([os.path.join(harness.SOURCE_DIR, "certs", "make-dev-certs.sh"), CERTS], check=True,
               stdout=subprocess.DEVNULL)


def read(name):
    with open(os.path.join(CERTS, name), "rb") as f:
        return f.read()


def check(channel, timeout=10):
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)


def monctl(*args, timeout=60):
    return subprocess.run([MONCTL] + list(args), capture_output=True, text=True, timeout=timeout)


class Tls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Monitord(harness.fresh_database("itest_tls"), [
            "--tls-cert", os.path.join(CERTS, "server.pem"), "--tls-key", os.path.join(CERTS, "server.key")])
        cls.port = cls.srv.address.split(":")[-1]

    @classmethod
    def tearDownClass(cls):
        code = cls.srv.stop()
        if code != 0:
            raise AssertionError("monitord exit code %d:\n%s" % (code, cls.srv.read_log()[-4000:]))

    def test_tls_client_is_served(self):
        creds = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"))
        with grpc.secure_channel("localhost:" + self.port, creds) as ch:
            self.assertIn(check(ch).status, (health_pb2.HealthCheckResponse.SERVING,
                                             health_pb2.HealthCheckResponse.NOT_SERVING))

    def test_plaintext_client_against_tls_fails(self):
        with grpc.insecure_channel("127.0.0.1:" + self.port) as ch:
            with self.assertRaises(grpc.RpcError) as cm:
                check(ch, timeout=3)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_untrusted_server_certificate_fails(self):
        other = tempfile.mkdtemp(prefix="mon-other-ca-")
        subprocess.run([os.path.join(harness.SOURCE_DIR, "certs", "make-dev-certs.sh"), other], check=True,
                       stdout=subprocess.DEVNULL)
        with open(os.path.join(other, "ca.pem"), "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        with grpc.secure_channel("localhost:" + self.port, creds) as ch:
            with self.assertRaises(grpc.RpcError) as cm:
                check(ch, timeout=3)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_monctl_over_tls(self):
        r = monctl("--target", "localhost:" + self.port, "--tls-ca", os.path.join(CERTS, "ca.pem"), "health")
        self.assertIn("SERVING", r.stdout + r.stderr)


class MutualTls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Monitord(harness.fresh_database("itest_mtls"), [
            "--tls-cert", os.path.join(CERTS, "server.pem"), "--tls-key", os.path.join(CERTS, "server.key"),
            "--tls-client-ca", os.path.join(CERTS, "ca.pem")])
        cls.port = cls.srv.address.split(":")[-1]

    @classmethod
    def tearDownClass(cls):
        code = cls.srv.stop()
        if code != 0:
            raise AssertionError("monitord exit code %d:\n%s" % (code, cls.srv.read_log()[-4000:]))

    def test_client_certificate_is_required(self):
        creds = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"))
        with grpc.secure_channel("localhost:" + self.port, creds) as ch:
            with self.assertRaises(grpc.RpcError) as cm:
                check(ch, timeout=3)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_client_certificate_is_accepted(self):
        creds = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"), private_key=read("client-admin.key"),
                                             certificate_chain=read("client-admin.pem"))
        with grpc.secure_channel("localhost:" + self.port, creds) as ch:
            self.srv.channel = ch
            check(ch)

    def test_certificate_maps_to_a_caller(self):
        r = subprocess.run([harness.MONITORD, "admin", "create-caller", "--id", "cert-viewer", "--email",
                            "cv@example.com", "--role", "viewer", "--cert-subject", "viewer",
                            "--database", self.srv.database], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        viewer = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"), private_key=read("client-viewer.key"),
                                              certificate_chain=read("client-viewer.pem"))
        admin_cert = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"),
                                                  private_key=read("client-admin.key"),
                                                  certificate_chain=read("client-admin.pem"))
        who = "/monitoring.v1.AccessService/GetCallerIdentity"
        with grpc.secure_channel("localhost:" + self.port, viewer) as ch:
            out = b""
            for _ in range(100):  # the mapping reaches the server's memory after commit (NOTIFY)
                try:
                    out = harness.raw_unary(ch, who)(b"", timeout=5)
                    break
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), grpc.StatusCode.UNAUTHENTICATED)
                    time.sleep(0.05)
            self.assertIn(b"cert-viewer", out)
            # A viewer by certificate still may not write.
            with self.assertRaises(grpc.RpcError) as cm:
                harness.raw_unary(ch, "/monitoring.v1.AccessService/CreateCaller")(b"", timeout=5)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        # A valid certificate whose name maps to no caller gets nothing but the open services.
        with grpc.secure_channel("localhost:" + self.port, admin_cert) as ch:
            with self.assertRaises(grpc.RpcError) as cm:
                harness.raw_unary(ch, who)(b"", timeout=5)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            check(ch)

    def test_monctl_with_client_certificate(self):
        r = monctl("--target", "localhost:" + self.port, "--tls-ca", os.path.join(CERTS, "ca.pem"),
                   "--tls-cert", os.path.join(CERTS, "client-viewer.pem"),
                   "--tls-key", os.path.join(CERTS, "client-viewer.key"), "--timeout", "5000", "health")
        self.assertNotIn("UNAVAILABLE", r.stderr)
        r = monctl("--target", "localhost:" + self.port, "--tls-ca", os.path.join(CERTS, "ca.pem"),
                   "--timeout", "3000", "health")
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNAVAILABLE", r.stderr)


class OwnClientLibrary(unittest.TestCase):
    """libmonitoring (through monctl) against the real server."""

    @classmethod
    def setUpClass(cls):
        cls.srv = harness.Monitord(harness.fresh_database("itest_client"))
        cls.srv.wait_serving()

    @classmethod
    def tearDownClass(cls):
        code = cls.srv.stop()
        if code != 0:
            raise AssertionError("monitord exit code %d:\n%s" % (code, cls.srv.read_log()[-4000:]))

    def test_health_check(self):
        r = monctl("--target", self.srv.address, "health")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("SERVING", r.stdout)
        r = monctl("--target", self.srv.address, "health", "monitoring.v1.MetricsService")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = monctl("--target", self.srv.address, "health", "no.such.Service")
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT_FOUND", r.stderr)

    def test_unimplemented_rpc_names_its_capability(self):
        r = monctl("--target", self.srv.address, "--api-key", self.srv.admin_key(), "call",
                   "ErrorsService/ListErrors", '{"pageSize": 10}')
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNIMPLEMENTED", r.stderr)
        self.assertIn("monitoring.v1.ErrorsService/ListErrors is not implemented yet: ", r.stderr)

    def test_api_key_from_the_environment(self):
        env = dict(os.environ, MONITORD_API_KEY=self.srv.admin_key())
        r = subprocess.run([MONCTL, "--target", self.srv.address, "call", "AccessService/GetCallerIdentity", "{}"],
                           capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("CALLER_ROLE_ADMIN", r.stdout)
        r = monctl("--target", self.srv.address, "call", "AccessService/GetCallerIdentity", "{}")
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNAUTHENTICATED", r.stderr)

    def test_bad_json_is_refused_naming_the_field(self):
        r = monctl("--target", self.srv.address, "call", "AlertsService/ListAlerts", '{"noSuchField": 1}')
        self.assertEqual(r.returncode, 2 if "usage" in r.stderr else r.returncode)
        self.assertIn("noSuchField", r.stderr)

    def test_watch_streams_until_deadline(self):
        r = monctl("--target", self.srv.address, "--timeout", "1500", "watch", "grpc.health.v1.Health/Watch",
                   '{"service": ""}')
        self.assertIn('"status": "SERVING"', r.stdout.replace('":"', '": "'))
        self.assertIn("DEADLINE_EXCEEDED", r.stderr)

    def test_request_id_reaches_the_server_log(self):
        r = monctl("--target", self.srv.address, "--request-id", "cli-req-42", "health")
        self.assertEqual(r.returncode, 0, r.stderr)
        for _ in range(40):  # the server writes its log in batches (every 50 ms)
            if "request_id=cli-req-42" in self.srv.read_log():
                break
            time.sleep(0.05)
        self.assertIn("request_id=cli-req-42", self.srv.read_log())


if __name__ == "__main__":
    harness.main()
