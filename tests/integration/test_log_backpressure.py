"""The logger never blocks a request: monitord runs with stderr a pipe that
nobody reads, every call logs a line, and calls keep answering; once the
pipe is read again the log says how many lines it dropped, and the server
still stops cleanly."""

import os
import re
import signal
import subprocess
import tempfile
import threading
import unittest

import grpc

import harness
from harness import health_pb2

CALLS = 1000
# An unknown method's call is logged with its (long) name: about 2 KiB a
# line, so these calls log twice the logger's buffer and the pipe together.
LONG_METHOD = "/monitoring.v1.NoSuchService/" + "x" * 1800


class LogBackpressure(unittest.TestCase):
    def test_unread_stderr_does_not_block_calls(self):
        db = harness.fresh_database("itest_logbp")
        tmp = tempfile.mkdtemp(prefix="mon-logbp-")
        port_file = os.path.join(tmp, "port")
        proc = subprocess.Popen([harness.MONITORD, "--listen", "127.0.0.1:0", "--port-file", port_file,
                                 "--database", db, "--log-level", "info"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        drained = []
        reader = threading.Thread(target=lambda: drained.append(proc.stderr.read()))
        try:
            channel = grpc.insecure_channel(harness.wait_address(proc, port_file))
            health = harness.health_pb2_grpc.HealthStub(channel)
            unknown = harness.raw_unary(channel, LONG_METHOD)

            serving = health_pb2.HealthCheckResponse.SERVING
            harness.wait_serving(channel, timeout=60)

            # Nobody reads stderr from here on; every call must still be answered.
            for i in range(CALLS):
                with self.assertRaises(grpc.RpcError) as cm:
                    unknown(b"", timeout=30)
                # refused before the method is looked up: no credentials
                self.assertIn(cm.exception.code(), (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED))
                if i % 100 == 0:
                    self.assertEqual(health.Check(health_pb2.HealthCheckRequest(), timeout=30).status, serving)
            channel.close()

            reader.start()
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(timeout=60), 0)
            reader.join(timeout=60)
            self.assertFalse(reader.is_alive())
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
        log = drained[0].decode("utf-8", "replace")
        notices = re.findall(r"level=warn msg=\"log lines dropped[^\"]*\" dropped=(\d+)", log)
        self.assertTrue(notices, log[-3000:])
        dropped = sum(int(n) for n in notices)
        kept = log.count("method=" + LONG_METHOD + " ")
        self.assertGreater(dropped, 0)
        self.assertGreater(kept, 0)
        # Every call's line was either written or counted; the others logged
        # meanwhile (start-up, health checks, background work) were counted too.
        self.assertGreaterEqual(kept + dropped, CALLS)
        self.assertLess(kept, CALLS)
        self.assertIn('msg="stopped"', log)


if __name__ == "__main__":
    harness.main()
