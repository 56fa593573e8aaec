#!/usr/bin/python3
"""A grpc.health.v1.Health server in python3-grpcio for the client tests.

It is an independent implementation of gRPC, so the client runtime is
tested against something other than itself. It writes its port on stdout
(one line) once it serves, and stops when stdin closes.

The service name in a request selects a behaviour:
  ""            SERVING
  "down"        NOT_SERVING
  "echo-md"     fails FAILED_PRECONDITION with the authorization and
                x-request-id metadata as the message
  "slow"        answers after 2 s (for deadlines)
  "count:N"     Watch: N messages, then OK
  "fail:N"      Watch: N messages, then ABORTED "failed after N"
  "hold"        Watch: one message, then nothing until cancelled
  "gap:MS"      Watch: one message, another after MS ms, then OK
  anything else NOT_FOUND "unknown service <name>"
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

PROTO = "/usr/share/grpc-proto/grpc/health/v1/health.proto"


def load_stubs():
    # A flat folder, so the generated modules do not shadow grpcio's own package.
    tmp = tempfile.mkdtemp(prefix="health-stubs-")
    shutil.copy(PROTO, tmp)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I" + tmp, "--python_out=" + tmp,
                    "--grpc_python_out=" + tmp, os.path.join(tmp, "health.proto")], check=True)
    sys.path.insert(0, tmp)
    import health_pb2
    import health_pb2_grpc
    return tmp, health_pb2, health_pb2_grpc


def main():
    tmp, pb, pb_grpc = load_stubs()
    import grpc

    serving = pb.HealthCheckResponse.SERVING
    not_serving = pb.HealthCheckResponse.NOT_SERVING

    class Health(pb_grpc.HealthServicer):
        def Check(self, request, context):
            name = request.service
            if name == "":
                return pb.HealthCheckResponse(status=serving)
            if name == "down":
                return pb.HealthCheckResponse(status=not_serving)
            if name == "echo-md":
                md = dict(context.invocation_metadata())
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              "authorization=%s x-request-id=%s" % (md.get("authorization", ""),
                                                                    md.get("x-request-id", "")))
            if name == "slow":
                time.sleep(2)
                return pb.HealthCheckResponse(status=serving)
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service %s" % name)

        def Watch(self, request, context):
            name = request.service
            kind, _, arg = name.partition(":")
            if kind == "count":
                for i in range(int(arg)):
                    yield pb.HealthCheckResponse(status=serving if i % 2 == 0 else not_serving)
                return
            if kind == "fail":
                for _ in range(int(arg)):
                    yield pb.HealthCheckResponse(status=serving)
                context.abort(grpc.StatusCode.ABORTED, "failed after %s" % arg)
            if kind == "hold":
                yield pb.HealthCheckResponse(status=serving)
                done = threading.Event()
                context.add_callback(done.set)
                done.wait()
                return
            if kind == "gap":
                yield pb.HealthCheckResponse(status=serving)
                time.sleep(int(arg) / 1000.0)
                yield pb.HealthCheckResponse(status=not_serving)
                return
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service %s" % name)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_HealthServicer_to_server(Health(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    shutil.rmtree(tmp, ignore_errors=True)
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
