"""Times MetricsService queries over real gRPC for bench/metrics_scale/run.sh.

Usage: query.py TARGET TOKEN RUNS END

END: the end of every window, in seconds since the epoch (just after the
latest point).

Each query is called once to warm up, then RUNS times; prints, per query,
the median and the range in milliseconds, tab-separated, in this order:
QueryMetrics 6 days AUTO (P95, AVG), QueryMetrics 1 hour RAW (P95, AVG),
GetPerformanceSummary 24 hours, GetPerformanceTrend 24 hours (hourly, one
endpoint). Every answer is checked for being non-empty and, for AUTO, for
the granularity it chose (ONE_HOUR)."""

import os
import statistics
import sys
import time

import grpc
from google.protobuf import timestamp_pb2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "integration"))
import harness  # noqa: E402

harness.api_stubs()
from monitoring.v1 import common_pb2 as G, metrics_pb2, metrics_pb2_grpc  # noqa: E402


def ts(seconds):
    t = timestamp_pb2.Timestamp()
    t.FromMicroseconds(int(seconds * 1000000))
    return t


def main():
    target, token, runs, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    md = (("authorization", "Bearer " + token),)
    channel = grpc.insecure_channel(target)
    stub = metrics_pb2_grpc.MetricsServiceStub(channel)
    def tr(seconds):
        return G.TimeRange(start_time=ts(end - seconds), end_time=ts(end))

    def qm_auto():
        r = stub.QueryMetrics(metrics_pb2.QueryMetricsRequest(time_range=tr(6 * 86400),
                                                              statistics=[G.METRIC_STATISTIC_P95]),
                              metadata=md, timeout=120)
        assert r.granularity == G.GRANULARITY_ONE_HOUR, r.granularity
        assert len(r.series) == 1 and len(r.series[0].points) >= 144, len(r.series)

    def qm_raw():
        r = stub.QueryMetrics(metrics_pb2.QueryMetricsRequest(time_range=tr(3600), statistics=[G.METRIC_STATISTIC_P95],
                                                              granularity=G.GRANULARITY_RAW),
                              metadata=md, timeout=120)
        assert len(r.series) == 1 and len(r.series[0].points) >= 59, len(r.series)

    def summary():
        r = stub.GetPerformanceSummary(metrics_pb2.GetPerformanceSummaryRequest(time_range=tr(86400)),
                                       metadata=md, timeout=120)
        assert len(r.endpoints) == 20, len(r.endpoints)

    def trend():
        r = stub.GetPerformanceTrend(metrics_pb2.GetPerformanceTrendRequest(time_range=tr(86400),
                                                                            endpoint="/api/endpoint/1"),
                                     metadata=md, timeout=120)
        assert len(r.buckets) >= 24, len(r.buckets)

    out = []
    for fn in (qm_auto, qm_raw, summary, trend):
        fn()
        ms = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            ms.append((time.perf_counter() - t0) * 1000)
        out.append("%-16s" % ("%.1f (%.0f-%.0f)" % (statistics.median(ms), min(ms), max(ms))))
    print(" ".join(out))


if __name__ == "__main__":
    main()
