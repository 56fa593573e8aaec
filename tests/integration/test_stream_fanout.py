"""Subscribers that leave during a large fan-out do not disturb the others.

A monitord (default workers and pooled connections, passed explicitly)
gets SUBSCRIBERS WatchServiceHealth streams on a few connections, all
watching one service with include_every_check, so that every reported
check is an event for every one of them. Then a burst of EVENTS checks is
reported, a few calls in flight at once, while:

- VICTIMS of the subscribers cancel their stream as soon as they have
  their k-th change of the burst, k spread over the first half of it, so
  that streams close while the hub is sending to everyone;
- unary calls (HealthService.GetService and grpc.health.v1.Health/Check)
  are made one after another, each with a deadline of 5 s.

Asserted: every remaining subscriber receives every change of the burst
exactly as the log holds it (the sequences PostgreSQL numbered, in order,
no gap, no repeat); every cancelled one received an unbroken prefix of it;
every unary call answered OK; no subscriber was told it fell behind; the
server answers afterwards and exits cleanly (no sanitizer report).

The streams run on grpc.aio, one event loop for all of them, in a child
process (this file run with --client): grpc.aio waits for its poller when
its last object is freed, which hangs once thousands of calls have run in
a loop that has ended, so the child prints its results and exits without
tearing grpc down. Nothing asserts on timing."""

import asyncio
import faulthandler
import json
import os
import subprocess
import sys
import time
import unittest

import grpc

import harness


harness.api_stubs()
from monitoring.v1 import common_pb2, health_pb2, health_pb2_grpc  # noqa: E402

SUBSCRIBERS = 2000
CHANNELS = 4             # 500 streams a connection, below the server's max-concurrent-streams
VICTIMS = 400            # every fifth subscriber cancels during the burst
EVENTS = 200             # checks reported in the burst
REPORTS_IN_FLIGHT = 4
CALL_DEADLINE_S = 5
WAIT_S = 120             # bound on each wait of the client (streams ready, burst delivered)
K_SNAPSHOT_COMPLETE = common_pb2.STREAM_CONTROL_KIND_SNAPSHOT_COMPLETE


def psql(conninfo, sql):
    r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql], check=True,
                       capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if line != ""]


# ---- the client (child process) ----

class Subscriber:
    """One stream read by a task: the burst's sequences it got; a victim has cancel_at > 0."""

    def __init__(self, stub, request, auth, cancel_at):
        self.call = stub.WatchServiceHealth(request, metadata=auth)
        self.cancel_at = cancel_at
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self.seqs = []
        self.error = None

    async def run(self, events_n):
        try:
            async for m in self.call:
                kind = m.WhichOneof("event")
                if kind == "control" and m.control.kind == K_SNAPSHOT_COMPLETE:
                    self.ready.set()
                elif kind == "change":
                    self.seqs.append(m.sequence)
                    if len(self.seqs) == self.cancel_at:
                        self.call.cancel()  # leaves while the fan-out goes on
                        break
                    if len(self.seqs) == events_n:
                        break
                elif kind == "control":
                    self.error = "control %d reason %d" % (m.control.kind, m.control.reason)
                    break
        except grpc.aio.AioRpcError as e:
            self.error = "%s %s" % (e.code(), e.details())
        finally:
            self.ready.set()
            self.done.set()


async def burst(channel, auth, sid):
    """EVENTS checks of sid, alternating DOWN and HEALTHY, REPORTS_IN_FLIGHT at a time."""
    stub = health_pb2_grpc.HealthServiceStub(channel)
    sem = asyncio.Semaphore(REPORTS_IN_FLIGHT)

    async def one(i):
        status = common_pb2.SERVICE_STATUS_DOWN if i % 2 == 0 else common_pb2.SERVICE_STATUS_HEALTHY
        check = health_pb2.HealthCheck(service_id=sid, status=status, error_message="burst %d" % i)
        async with sem:
            await stub.ReportHealthCheck(health_pb2.ReportHealthCheckRequest(check=check), metadata=auth, timeout=60)

    await asyncio.gather(*(one(i) for i in range(EVENTS)))


async def probe(channel, auth, sid, stop):
    """Unary calls one after another until stop; how many answered, and the failures."""
    stub = health_pb2_grpc.HealthServiceStub(channel)
    health = harness.health_pb2_grpc.HealthStub(channel)
    answered, failures, i = 0, [], 0
    while not stop.is_set():
        try:
            if i % 2 == 0:
                await stub.GetService(health_pb2.GetServiceRequest(service_id=sid), metadata=auth,
                                      timeout=CALL_DEADLINE_S)
            else:
                await health.Check(harness.health_pb2.HealthCheckRequest(service="monitoring.v1.HealthService"),
                                   timeout=CALL_DEADLINE_S)
            answered += 1
        except grpc.aio.AioRpcError as e:
            failures.append("call %d: %s %s" % (i, e.code(), e.details()))
        i += 1
    return answered, failures


async def client(address, key, sid):
    auth = (("authorization", "Bearer " + key),)
    # A subchannel pool per channel: a connection each.
    channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(CHANNELS + 1)]
    unary = channels[-1]
    req = health_pb2.WatchServiceHealthRequest(service_ids=[sid], include_every_check=True)
    subs = []
    for i in range(SUBSCRIBERS):
        is_victim = i % (SUBSCRIBERS // VICTIMS) == 0
        cancel_at = 1 + (i * 7) % (EVENTS // 2) if is_victim else 0
        subs.append(Subscriber(health_pb2_grpc.HealthServiceStub(channels[i % CHANNELS]), req, auth, cancel_at))
    tasks = [asyncio.create_task(s.run(EVENTS)) for s in subs]
    await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subs)), WAIT_S)
    early = [s.error for s in subs if s.error is not None]
    answered, failures = 0, []
    if not early:
        stop = asyncio.Event()
        prober = asyncio.create_task(probe(unary, auth, sid, stop))
        await burst(unary, auth, sid)
        try:
            await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in subs)), WAIT_S)
        finally:
            stop.set()
            answered, failures = await prober
    for s in subs:
        s.call.cancel()
    await asyncio.gather(*tasks)
    _KEEP.append((channels, subs, tasks))  # never freed: see client_main
    return {"early_errors": early, "answered": answered, "failures": failures,
            "subscribers": [{"cancel_at": s.cancel_at, "seqs": s.seqs, "error": s.error} for s in subs]}


_KEEP = []


def client_main(address, key, sid):
    """Runs the client and prints its results as JSON. Neither the loop nor a
    grpc.aio object is ever freed (see the file comment); the process ends
    with os._exit. A hang prints the stacks and exits."""
    faulthandler.dump_traceback_later(3 * WAIT_S, exit=True)
    loop = asyncio.new_event_loop()
    out = loop.run_until_complete(client(address, key, sid))
    sys.stdout.write(json.dumps(out))
    sys.stdout.flush()
    os._exit(0)


# ---- the test ----

class FanoutTest(unittest.TestCase):
    def setUp(self):
        self.db = harness.fresh_database("streamfanout")
        # Default workers and pool; all subscribers are one caller, so the
        # per-caller stream and rate limits are lifted.
        self.srv = harness.Monitord(self.db, extra_args=[
            "--worker-threads", "8", "--db-pool-size", "8", "--max-streams-per-caller", "0",
            "--rate-limit-per-s", "0"])
        self.srv.wait_serving("monitoring.v1.HealthService")

    def tearDown(self):
        self.srv.assert_clean_exit(self)

    def test_cancels_during_fanout(self):
        sid = "fanout-%d" % int(time.time() * 1000)
        stub = health_pb2_grpc.HealthServiceStub(self.srv.channel)
        svc = health_pb2.MonitoredService(id=sid, name="fan-out", service_type="api")
        stub.CreateService(health_pb2.CreateServiceRequest(service=svc), metadata=self.srv.auth(), timeout=10)
        r = subprocess.run([sys.executable, __file__, "--client", self.srv.address, self.srv.admin_key(), sid],
                           capture_output=True, text=True, timeout=4 * WAIT_S)
        self.assertEqual(r.returncode, 0, "the client failed:\n%s" % r.stderr[-4000:])
        out = json.loads(r.stdout)

        self.assertEqual(out["early_errors"], [], "streams failed before the burst")
        self.assertEqual(out["failures"], [], "unary calls failed during the fan-out")
        self.assertGreater(out["answered"], 0)
        expected = [int(s) for s in psql(self.db, "SELECT seq FROM tb_service_health_event"
                                                  " WHERE service_id = '%s' AND kind IN ('checked', 'status_changed')"
                                                  " ORDER BY seq" % sid)]
        self.assertEqual(len(expected), EVENTS)
        subs = out["subscribers"]
        kept = [s for s in subs if s["cancel_at"] == 0]
        victims = [s for s in subs if s["cancel_at"] > 0]
        self.assertEqual((len(kept), len(victims)), (SUBSCRIBERS - VICTIMS, VICTIMS))
        for i, s in enumerate(kept):
            self.assertIsNone(s["error"], "subscriber %d" % i)
            self.assertEqual(s["seqs"], expected, "subscriber %d: a gap, a repeat or out of order" % i)
        for i, s in enumerate(victims):
            self.assertIsNone(s["error"], "cancelled subscriber %d" % i)
            self.assertEqual(s["seqs"], expected[:s["cancel_at"]], "cancelled subscriber %d" % i)
        # Still serving, and nobody was told to resume.
        self.srv.wait_serving("monitoring.v1.HealthService")
        self.assertNotIn("fell behind", self.srv.read_log())


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        client_main(*sys.argv[2:])
    harness.main()
