"""Deadlines, end to end: every RPC of every service monitord serves, called
with a 1 ms deadline while every database connection is busy, is answered
(DEADLINE_EXCEEDED, or an answer the server genuinely had first) without
waiting for a connection; afterwards the pool is whole again and the server
healthy."""

import collections
import os
import re
import sys
import threading
import time
import unittest

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor

import harness
from harness import health_pb2
from test_standard_services import all_methods

POOL_SIZE = 3
ATTEMPTS = 4
# Codes the server may log for a call with a 1 ms deadline: answered in
# time (the handler refused or served the request), DEADLINE_EXCEEDED, or
# CANCELLED (the answer was ready as the deadline struck). Never
# RESOURCE_EXHAUSTED ("pool busy": the wait for a connection must end with
# the deadline), UNAVAILABLE, INTERNAL or UNKNOWN. A call that waited for a
# connection past its deadline shows differently: it is not answered while
# the pool stays busy (see below).
ANSWERED = {"OK", "DEADLINE_EXCEEDED", "CANCELLED", "INVALID_ARGUMENT", "NOT_FOUND", "UNIMPLEMENTED",
            "FAILED_PRECONDITION", "PERMISSION_DENIED", "ALREADY_EXISTS", "OUT_OF_RANGE"}
CLIENT_CODES = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.OUT_OF_RANGE}
RPC_LINE = re.compile(r'msg=rpc method=(\S+) code=(\S+) .*request_id=(\S+)')
STARTED_LINE = re.compile(r'msg="rpc started" method=(\S+) request_id=(\S+)')


def load_api():
    harness.api_stubs()
    import importlib
    api = os.path.join(harness.SOURCE_DIR, "proto", "monitoring", "v1")
    for f in sorted(os.listdir(api)):
        if f.endswith(".proto"):
            importlib.import_module("monitoring.v1.%s_pb2" % f[:-6])


def plausible(full_method):
    """A request a caller could send: ids, names and a page size filled in."""
    pool = descriptor_pool.Default()
    service, method = full_method.strip("/").split("/")
    try:
        md = pool.FindServiceByName(service).FindMethodByName(method)
    except KeyError:
        return b""  # the standard services: an empty request is a real one
    msg = message_factory.MessageFactory(pool).GetPrototype(md.input_type)()
    for f in md.input_type.fields:
        if f.label == FieldDescriptor.LABEL_REPEATED or f.containing_oneof is not None:
            continue
        if f.type == FieldDescriptor.TYPE_STRING and (f.name == "id" or f.name.endswith("_id")):
            setattr(msg, f.name, "deadline-probe")
        elif f.type == FieldDescriptor.TYPE_STRING and f.name in ("name", "email", "metric_name"):
            setattr(msg, f.name, "deadline-probe")
        elif f.name == "page_size":
            setattr(msg, f.name, 10)
    if full_method == "/monitoring.v1.MetricsService/RecordMetrics":
        # a point that is stored: the write is what must respect the deadline
        from monitoring.v1 import metrics_pb2
        p = metrics_pb2.MetricPoint(metric_name="deadline.probe", endpoint="/probe", method="GET", request_count=1)
        p.time.GetCurrentTime()
        p.p50.value = 1.0
        msg.points.append(p)
    return msg.SerializeToString()


class Deadlines(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        load_api()
        cls.db = harness.fresh_database("itest_deadline")
        # debug: each call also logs when it arrives, so the test knows which reached the server
        cls.srv = harness.Monitord(cls.db, extra_args=["--db-pool-size", str(POOL_SIZE), "--log-level", "debug"])
        cls.srv.wait_serving()
        cls.auth = cls.srv.auth()

    @classmethod
    def tearDownClass(cls):
        code = cls.srv.stop()
        log = cls.srv.read_log()
        if code != 0 or "AddressSanitizer" in log or "runtime error:" in log:
            raise AssertionError("monitord did not exit cleanly (%d):\n%s" % (code, log[-6000:]))

    def lines_by_request_id(self):
        """{request id: (method, code, line)} of the calls answered, and the ids of the calls that arrived."""
        out, started = {}, set()
        for line in self.srv.read_log().splitlines():
            m = RPC_LINE.search(line)
            if m:
                out[m.group(3)] = (m.group(1), m.group(2), line)
            m = STARTED_LINE.search(line)
            if m:
                started.add(m.group(2))
        return out, started

    def call_expired(self, path, server_streaming, client_streaming, request_id):
        """Calls path with a 1 ms deadline; returns the client's status code."""
        md = self.auth + (("x-request-id", request_id),)
        req = plausible(path)
        ch = self.srv.channel
        ser = dict(request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            if client_streaming:
                call = ch.stream_stream(path, **ser)(iter([req]), timeout=0.001, metadata=md)
                list(call)
            elif server_streaming:
                list(ch.unary_stream(path, **ser)(req, timeout=0.001, metadata=md))
            else:
                ch.unary_unary(path, **ser)(req, timeout=0.001, metadata=md)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()

    def test_every_rpc_with_an_expired_deadline(self):
        names, methods = all_methods(self.srv.channel)
        self.assertIn("grpc.health.v1.Health", names)
        self.assertIn("grpc.reflection.v1.ServerReflection", names)
        self.assertGreaterEqual(len([n for n in names if n.startswith("monitoring.v1.")]), 7)

        # Every pool connection is held by a statement blocked on a table
        # lock (the calls below, and background work on the same table): a
        # call that waited for a connection past its deadline would not be
        # answered until the lock goes.
        locker = harness.LockHolder(self.db, "tb_alert")
        blocked_codes = []
        list_alerts = harness.raw_unary(self.srv.channel, "/monitoring.v1.AlertsService/ListAlerts")

        def list_alerts_into(codes, timeout):
            """A thread's body: one ListAlerts, its status code appended to codes."""
            try:
                list_alerts(plausible("/monitoring.v1.AlertsService/ListAlerts"), timeout=timeout,
                            metadata=self.auth)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())

        threads = [threading.Thread(target=list_alerts_into, args=(blocked_codes, 120)) for _ in range(POOL_SIZE)]
        try:
            for t in threads:
                t.start()
            locker.wait_waiters(POOL_SIZE)

            # A call whose millisecond ran out in the client never reaches
            # the server, so each method is tried a few times; every method
            # must be answered by the server at least once.
            sent = {}
            for attempt in range(ATTEMPTS):
                for i, (path, ss, cs) in enumerate(methods):
                    rid = "deadline-%d-%d" % (i, attempt)
                    sent[rid] = path
                    code = self.call_expired(path, ss, cs, rid)
                    self.assertIn(code, CLIENT_CODES, path)

            # A marker sent after them all: once the server logged its
            # arrival, every call before it that reached the server has too.
            harness.raw_unary(self.srv.channel, "/grpc.health.v1.Health/Check")(
                b"", timeout=30, metadata=(("x-request-id", "deadline-marker"),))

            # The server answered every call that reached it, and every
            # method at least once, while the pool was still full.
            deadline = time.time() + 60
            while True:
                seen, started = self.lines_by_request_id()
                if "deadline-marker" not in started:
                    missing = ["the marker"]
                else:
                    answered = set(sent[r] for r in sent if r in seen)
                    missing = sorted(set(path for path, _, _ in methods) - answered)
                    missing += sorted(sent[r] + " (" + r + ")" for r in started if r in sent and r not in seen)
                if not missing:
                    break
                self.assertLess(time.time(), deadline, "never answered with the pool busy: %s\n%s" %
                                (missing, self.srv.read_log()[-4000:]))
                time.sleep(0.05)
            self.assertGreaterEqual(locker.waiter_count(), POOL_SIZE, "the connections were freed early")
        finally:
            locker.release()
            for t in threads:
                t.join()
        self.assertEqual(blocked_codes, [grpc.StatusCode.OK] * POOL_SIZE)

        expired_early = 0
        for rid, path in sent.items():
            if rid not in seen:
                continue  # never reached the server
            method, code, line = seen[rid]
            self.assertEqual(method, path)
            self.assertIn(code, ANSWERED, line)
            if code == "DEADLINE_EXCEEDED" and "before the call started" in line:
                expired_early += 1
        print("server answers: %s" % collections.Counter(seen[r][1] for r in sent if r in seen), file=sys.stderr)
        # Most calls arrive with their millisecond already gone; those were
        # answered before their handler ran (the rest by the layer that saw
        # the deadline pass, or by a handler that had its answer first).
        self.assertGreater(expired_early, 0)

        # Healthy afterwards: every connection free again, many calls at once succeed.
        self.assertEqual(self.srv.health().Check(health_pb2.HealthCheckRequest(), timeout=5).status,
                         health_pb2.HealthCheckResponse.SERVING)
        codes = []
        many = [threading.Thread(target=list_alerts_into, args=(codes, 30)) for _ in range(POOL_SIZE * 8)]
        for t in many:
            t.start()
        for t in many:
            t.join()
        self.assertEqual(codes, [grpc.StatusCode.OK] * len(many))
        self.assertIsNone(self.srv.proc.poll())


if __name__ == "__main__":
    harness.main()
