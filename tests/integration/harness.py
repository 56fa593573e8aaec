"""Test harness: starts a real monitord against a real PostgreSQL and gives
tests independent python3-grpcio clients for it.

Environment (set by ctest, see tests/CMakeLists.txt):
  MON_TEST_DATABASE  conninfo of the shared throwaway cluster
  MON_BUILD_DIR      build tree holding bin/monitord
  MON_SOURCE_DIR     source tree (scripts/pgtmp.sh, protos)
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

SOURCE_DIR = os.environ.get("MON_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD_DIR = os.environ.get("MON_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
MONITORD = os.path.join(BUILD_DIR, "bin", "monitord")
PGTMP = os.path.join(SOURCE_DIR, "scripts", "pgtmp.sh")


def _generate_stubs():
    """Generates python modules for the standard health and reflection protos."""
    out = tempfile.mkdtemp(prefix="mon-pystubs-")
    flat = os.path.join(out, "protos")
    os.makedirs(flat)
    # A flat copy, so the generated modules do not shadow the grpc package.
    shutil.copy("/usr/share/grpc-proto/grpc/health/v1/health.proto", os.path.join(flat, "health.proto"))
    shutil.copy("/usr/share/grpc-proto/grpc/reflection/v1/reflection.proto", os.path.join(flat, "reflection.proto"))
    shutil.copy("/usr/share/grpc-proto/grpc/reflection/v1alpha/reflection.proto",
                os.path.join(flat, "reflection_v1alpha.proto"))
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", flat, "--python_out", out,
                    "--grpc_python_out", out, "health.proto", "reflection.proto", "reflection_v1alpha.proto"],
                   check=True)
    sys.path.insert(0, out)
    return out


STUB_DIR = _generate_stubs()


def api_stubs():
    """Makes `from monitoring.v1 import ..._pb2` work: python modules for every
    proto of the API, generated once per process into a temporary directory."""
    global _API_STUBS
    if _API_STUBS is None:
        out = tempfile.mkdtemp(prefix="mon-api-stubs-")
        protos = os.path.join(SOURCE_DIR, "proto")
        api = os.path.join(protos, "monitoring", "v1")
        files = sorted(os.path.join(api, f) for f in os.listdir(api) if f.endswith(".proto"))
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", protos, "-I", "/usr/include",
                        "--python_out", out, "--grpc_python_out", out] + files, check=True)
        sys.path.insert(0, out)
        _API_STUBS = out
    return _API_STUBS


_API_STUBS = None
import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402
import reflection_pb2  # noqa: E402
import reflection_pb2_grpc  # noqa: E402
import reflection_v1alpha_pb2  # noqa: E402
import reflection_v1alpha_pb2_grpc  # noqa: E402


def psql(conninfo, sql):
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


def fresh_database(prefix):
    """Creates an empty database on the shared cluster; returns its conninfo."""
    base = os.environ["MON_TEST_DATABASE"]
    name = "%s_%d_%d" % (prefix, os.getpid(), int(time.time() * 1000) % 1000000)
    psql(base, "CREATE DATABASE %s" % name)
    parts = [p for p in base.split() if not p.startswith("dbname=")]
    return " ".join(parts + ["dbname=" + name])


def psql_value(conninfo, sql):
    """The single value sql returns."""
    r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql], check=True,
                       capture_output=True, text=True)
    return r.stdout.strip()


class LockHolder:
    """An open transaction holding an ACCESS EXCLUSIVE lock on table, so
    monitord's statements on it wait (holding their pooled connections)
    until release()."""

    def __init__(self, conninfo, table):
        self.conninfo = conninfo
        self.proc = subprocess.Popen(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", conninfo],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.proc.stdin.write("BEGIN;\nLOCK TABLE %s IN ACCESS EXCLUSIVE MODE;\nSELECT 'locked';\n" % table)
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "locked":
            raise RuntimeError("could not lock %s" % table)

    def waiter_count(self):
        """monitord sessions waiting for a lock."""
        return int(psql_value(self.conninfo, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                              "current_database() AND wait_event_type = 'Lock' AND application_name = 'monitord'"))

    def wait_waiters(self, n, timeout=60):
        deadline = time.time() + timeout
        while self.waiter_count() < n:
            if time.time() > deadline:
                raise AssertionError("%d monitord sessions never waited for the lock" % n)
            time.sleep(0.05)

    def release(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("ROLLBACK;\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


class PrivateCluster:
    """A PostgreSQL cluster of the test's own, for outage tests. durable: the
    cluster keeps fsync and synchronous_commit on (PGTMP_DURABLE=1), for
    tests that crash it and count what survived."""

    def __init__(self, durable=False):
        self.dir = tempfile.mkdtemp(prefix="mon-pg-")
        os.chmod(self.dir, 0o755)
        self.env = dict(os.environ, PGTMP_DURABLE="1" if durable else "0")
        self.start()
        self.conninfo = "host=%s user=postgres dbname=postgres" % self.dir

    def start(self):
        subprocess.run([PGTMP, "start", self.dir], check=True, stdout=subprocess.DEVNULL, env=self.env)

    def stop(self):
        subprocess.run([PGTMP, "stop", self.dir], check=True, stdout=subprocess.DEVNULL)

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_address(proc, port_file, read_log=lambda: "", timeout=60):
    """The address a monitord started with --port-file listens on, once it has written the file."""
    deadline = time.time() + timeout
    while not os.path.exists(port_file):
        if proc.poll() is not None:
            raise RuntimeError("monitord exited with %d:\n%s" % (proc.returncode, read_log()))
        if time.time() > deadline:
            raise RuntimeError("monitord did not start:\n" + read_log())
        time.sleep(0.05)
    with open(port_file) as f:
        return f.read().strip()


def wait_serving(channel, service="", timeout=30):
    """Waits until the health service on channel answers SERVING for service."""
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
            if last == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError as e:
            last = e.code()
        time.sleep(0.1)
    raise AssertionError("service %r not SERVING after %ss (last: %s)" % (service, timeout, last))


def wait_key_accepted(channel, key, timeout=30):
    """Waits until the server on channel accepts key (UNAUTHENTICATED until its identity store has it)."""
    who = raw_unary(channel, "/monitoring.v1.AccessService/GetCallerIdentity")
    deadline = time.time() + timeout
    while True:
        try:
            who(b"", timeout=5, metadata=(("authorization", "Bearer " + key),))
            return
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAUTHENTICATED or time.time() > deadline:
                raise
            time.sleep(0.05)


class Monitord:
    """A monitord process on an ephemeral loopback port."""

    def __init__(self, database, extra_args=(), env=None):
        self.database = database
        self.tmp = tempfile.mkdtemp(prefix="mon-srv-")
        self.port_file = os.path.join(self.tmp, "port")
        self.log_path = os.path.join(self.tmp, "monitord.log")
        self.log = open(self.log_path, "w")
        args = [MONITORD, "--listen", "127.0.0.1:0", "--port-file", self.port_file, "--database", database]
        if "--log-level" not in extra_args:
            args += ["--log-level", "info"]
        args += list(extra_args)
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        self.address = wait_address(self.proc, self.port_file, self.read_log)
        self.channel = grpc.insecure_channel(self.address)

    def admin_key(self):
        """An admin API key, made once with `monitord admin bootstrap` on the server's database."""
        if getattr(self, "_admin_key", None) is None:
            r = subprocess.run([MONITORD, "admin", "bootstrap", "--email", "admin@example.com",
                                "--database", self.database], capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise RuntimeError("monitord admin bootstrap failed (%d): %s" % (r.returncode, r.stderr))
            self.use_admin_key(r.stdout.strip().splitlines()[-1])
        return self._admin_key

    def use_admin_key(self, key):
        """Authenticates as key (made on this database, e.g. by another replica's
        admin_key()) once this server accepts it: a new key works once the
        server's identity store has reloaded (NOTIFY, then a read), and a
        replica can be SERVING before its first load."""
        wait_key_accepted(self.channel, key)
        self._admin_key = key

    def auth(self):
        """Call metadata authenticating as the admin."""
        return (("authorization", "Bearer " + self.admin_key()),)

    def read_log(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def health(self):
        return health_pb2_grpc.HealthStub(self.channel)

    def wait_serving(self, service="", timeout=30):
        wait_serving(self.channel, service, timeout)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Stops the server; returns its exit code."""
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("monitord did not stop within %ss:\n%s" % (timeout, self.read_log()))
        self.log.close()
        return self.proc.returncode

    def stop_clean(self):
        """For tearDownClass: stops the server if it still runs and asserts a clean exit (code 0, no
        sanitizer report in its log)."""
        if self.proc.poll() is not None:
            return
        code = self.stop()
        log = self.read_log()
        assert code == 0, "monitord exit code %d:\n%s" % (code, log[-6000:])
        assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log[-6000:]

    def assert_clean_exit(self, test):
        code = self.stop()
        log = self.read_log()
        test.assertEqual(code, 0, "monitord exit code %d, log:\n%s" % (code, log[-6000:]))
        test.assertNotIn("ERROR: AddressSanitizer", log)
        test.assertNotIn("runtime error:", log)


def raw_unary(channel, method):
    """A unary callable that sends and returns raw bytes."""
    return channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def raw_stream(channel, method):
    return channel.unary_stream(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def main():
    unittest.main(verbosity=2)
