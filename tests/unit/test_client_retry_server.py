#!/usr/bin/python3
"""A fake monitoring.v1.AlertsService in python3-grpcio for the client
library's retries (test_client_retry.c). It writes its port on stdout (one
line) once it serves, and stops when stdin closes.

Calls are counted per (alert id, request_id). The alert id selects a
behaviour:
  AcknowledgeAlert "flaky:N"    UNAVAILABLE for the first N attempts, then
                                OK with acknowledgment_note
                                "<request_id> attempts=<n>"
  AcknowledgeAlert "unknown:N"  the same with UNKNOWN "outcome unknown: ..."
  AcknowledgeAlert "other"      UNKNOWN "something else" every time
  GetAlert "flaky"              UNAVAILABLE every time (a read)
  RecordMetrics                 UNAVAILABLE every time, counted per
                                request_id
Every failure's message ends with "(attempt <n>)".
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent import futures

SOURCE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def load_stubs():
    out = tempfile.mkdtemp(prefix="retry-stubs-")
    protos = os.path.join(SOURCE_DIR, "proto")
    api = os.path.join(protos, "monitoring", "v1")
    files = sorted(os.path.join(api, f) for f in os.listdir(api) if f.endswith(".proto"))
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", protos, "-I", "/usr/include",
                    "--python_out", out, "--grpc_python_out", out] + files, check=True)
    sys.path.insert(0, out)
    return out


def main():
    tmp = load_stubs()
    import grpc
    from monitoring.v1 import alerts_pb2, alerts_pb2_grpc, metrics_pb2_grpc

    counts = {}
    lock = threading.Lock()

    def attempt(alert_id, request_id):
        with lock:
            n = counts.get((alert_id, request_id), 0) + 1
            counts[(alert_id, request_id)] = n
            return n

    class Alerts(alerts_pb2_grpc.AlertsServiceServicer):
        def AcknowledgeAlert(self, request, context):
            kind, _, arg = request.alert_id.partition(":")
            n = attempt(request.alert_id, request.request_id)
            if kind == "flaky" and n <= int(arg):
                context.abort(grpc.StatusCode.UNAVAILABLE, "database unavailable (attempt %d)" % n)
            if kind == "unknown" and n <= int(arg):
                context.abort(grpc.StatusCode.UNKNOWN, "outcome unknown: retry with the same key (attempt %d)" % n)
            if kind == "other":
                context.abort(grpc.StatusCode.UNKNOWN, "something else (attempt %d)" % n)
            note = "%s attempts=%d" % (request.request_id, n)
            return alerts_pb2.AcknowledgeAlertResponse(alert=alerts_pb2.Alert(id=request.alert_id,
                                                                              acknowledgment_note=note))

        def GetAlert(self, request, context):
            n = attempt(request.alert_id, "")
            context.abort(grpc.StatusCode.UNAVAILABLE, "database unavailable (attempt %d)" % n)

    class Metrics(metrics_pb2_grpc.MetricsServiceServicer):
        def RecordMetrics(self, request, context):
            n = attempt("record", request.request_id)
            context.abort(grpc.StatusCode.UNAVAILABLE, "database unavailable (attempt %d)" % n)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    alerts_pb2_grpc.add_AlertsServiceServicer_to_server(Alerts(), server)
    metrics_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    shutil.rmtree(tmp, ignore_errors=True)
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
