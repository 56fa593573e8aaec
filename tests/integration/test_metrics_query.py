"""MetricsService queries end to end, through python3-grpcio against a real
monitord (authentication on, an admin key from `monitord admin bootstrap`),
on points written with psql at chosen times (and a few through
RecordMetrics):

- ListMetricPoints and ListMetricNames against the same rows read with
  psql, paged, with every filter;
- QueryMetrics at RAW, FIVE_MINUTES, ONE_HOUR and ONE_DAY from the raw
  points and from the rollups (filled here from the raw points with
  INSERT ... SELECT, and rollup-only rows to show which table answered),
  each statistic and aggregation against SQL run directly, group_by,
  AUTO's choice, the max_points and series limits, paging of series;
- the data model's three performance queries (summary, slowest endpoints,
  hourly trend) against the seed's SQL run with psql;
- every validation rule, refused with INVALID_ARGUMENT naming the field."""

import random
import subprocess
import time
import unittest

import grpc
from google.protobuf import timestamp_pb2, wrappers_pb2

import harness

harness.api_stubs()
from monitoring.v1 import common_pb2, metrics_pb2, metrics_pb2_grpc  # noqa: E402

SC = grpc.StatusCode
MINUTE = 60
HOUR = 3600
DAY = 86400
EPOCH = "timestamptz '1970-01-01 00:00:00+00'"
ENDPOINTS = ["/api/purchase-orders", "/api/invoices", "/api/users", ""]
G = common_pb2
STAT_COLUMN = {G.METRIC_STATISTIC_P50: "p50", G.METRIC_STATISTIC_P95: "p95", G.METRIC_STATISTIC_P99: "p99",
               G.METRIC_STATISTIC_MEAN: "mean", G.METRIC_STATISTIC_MIN: "min", G.METRIC_STATISTIC_MAX: "max",
               G.METRIC_STATISTIC_REQUEST_COUNT: "request_count", G.METRIC_STATISTIC_ERROR_COUNT: "error_count",
               G.METRIC_STATISTIC_ERROR_RATE: "error_rate", G.METRIC_STATISTIC_THROUGHPUT: "throughput"}


def psql(conninfo, sql):
    """Rows of sql as lists of text (unaligned, tuples only, tab-separated); NULL is None."""
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-P", "null=\\N", "-v", "ON_ERROR_STOP=1", conninfo,
                        "-c", sql], check=True, capture_output=True, text=True)
    return [[None if v == "\\N" else v for v in line.split("\t")] for line in r.stdout.splitlines() if line != ""]


def ts(seconds):
    t = timestamp_pb2.Timestamp()
    t.FromMicroseconds(int(round(seconds * 1000000)))
    return t


def at(seconds):
    return "to_timestamp(%d)" % seconds


def opt(msg, field):
    """A wrapper field's value, None when absent."""
    return getattr(msg, field).value if msg.HasField(field) else None


def num(text):
    return None if text is None else float(text)


def time_range(start, end):
    return G.TimeRange(start_time=ts(start), end_time=ts(end))


class MetricsQuery(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = harness.fresh_database("itest_metrics_query")
        # The rollup job runs once shortly after start, then not for a day:
        # the rollups hold what this test writes into them.
        cls.srv = harness.Monitord(cls.db, extra_args=["--metrics-rollup-interval-ms", "86400000"])
        cls.srv.wait_serving()
        cls.stub = metrics_pb2_grpc.MetricsServiceStub(cls.srv.channel)
        cls.md = cls.srv.auth()
        deadline = time.time() + 10
        while time.time() < deadline and not psql(cls.db, "SELECT 1 FROM tb_metric_rollup_state"
                                                  " WHERE refreshed_at IS NOT NULL"):
            time.sleep(0.2)
        now = time.time()
        cls.t0 = int(now // 300) * 300 - 300  # a 5-minute boundary, in the past
        cls.write_points()
        cls.fill_rollups()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop_clean()

    @classmethod
    def write_points(cls):
        rnd = random.Random(7)
        rows = []

        def point(t, name, endpoint, method=None, status=None, tags=None, mtype="gauge", nulls=False):
            p50 = round(rnd.uniform(5, 300), 2)
            p95 = round(p50 * rnd.uniform(1.5, 9), 2)
            p99 = None if nulls or rnd.random() < 0.1 else round(p95 * 1.3, 2)
            req = rnd.choice([0, rnd.randint(1, 3000)])
            err = rnd.randint(0, req // 10) if req else 0
            rate = None if req == 0 else round(err * 100.0 / req, 2)
            rows.append("(%s, '%s', '%s', %s, %s, %s, %s, %s, %s, %s, %s, %d, %d, %s, %s, %s, '%s')" % (
                at(t), name, endpoint, "'%s'" % method if method else "NULL", status or "NULL", p50, p95,
                "NULL" if p99 is None else p99, round(p50 * 1.2, 2), round(p50 / 2, 2), round(p95 * 2, 2), req, err,
                "NULL" if rate is None else rate, round(rnd.uniform(0, 50), 2),
                "'%s'" % tags if tags is not None else "'{}'", mtype))

        for k in range(145):
            t = cls.t0 - 600 * k
            for i, e in enumerate(ENDPOINTS):
                region = "eu" if (k + i) % 2 else "us"
                point(t, "http_request", e, method="GET" if (k + i) % 3 else "POST",
                      status=500 if (k + i) % 7 == 0 else 200, tags='{"region": "%s", "tier": "web"}' % region)
            point(t - 170, "db.query", "/api/purchase-orders", mtype="histogram", tags='{"db": "orders"}')
            point(t - 170, "db.query", "", mtype="histogram", nulls=True)
        for d in (2, 3, 5):
            for h in range(24):
                point(cls.t0 - d * DAY - h * HOUR, "http_request", "/api/purchase-orders", method="GET", status=200)
        for i in range(600):
            point(cls.t0 - 3 * HOUR - i, "many_series", "", tags='{"id": "s%03d"}' % i)
        # More points than a page of ListMetricPoints may hold.
        psql(cls.db, "INSERT INTO tb_performance_metric (time, metric_name, endpoint, p50, request_count)"
             " SELECT %s - i * interval '1 second', 'bulk.points', '', i %% 100, 1 FROM generate_series(1, 5100) i"
             % at(cls.t0 - 4 * DAY))
        for chunk in range(0, len(rows), 500):
            psql(cls.db, "INSERT INTO tb_performance_metric (time, metric_name, endpoint, method, status_code, p50,"
                 " p95, p99, mean, min, max, request_count, error_count, error_rate, throughput, tags, metric_type)"
                 " VALUES " + ", ".join(rows[chunk:chunk + 500]))

    @classmethod
    def fill_rollups(cls):
        """Both rollups from the raw points, as the rollup job would make them."""
        for table, width in (("tb_performance_metric_5min", "5 minutes"), ("tb_performance_metric_hourly", "1 hour")):
            psql(cls.db, """
                INSERT INTO %s (bucket, metric_name, endpoint, avg_p50, avg_p95, avg_p99, total_requests,
                  total_errors, avg_error_rate, data_points, p50_sum, p50_n, p95_sum, p95_n, p99_sum, p99_n,
                  error_rate_sum, error_rate_n)
                SELECT date_bin('%s', time, %s), metric_name, endpoint, avg(p50), avg(p95), avg(p99),
                  sum(request_count), sum(error_count), avg(error_rate), count(*), sum(p50), count(p50), sum(p95),
                  count(p95), sum(p99), count(p99), sum(error_rate), count(error_rate)
                FROM tb_performance_metric GROUP BY 1, 2, 3
                ON CONFLICT (bucket, metric_name, endpoint) DO UPDATE SET avg_p50 = excluded.avg_p50,
                  avg_p95 = excluded.avg_p95, avg_p99 = excluded.avg_p99, total_requests = excluded.total_requests,
                  total_errors = excluded.total_errors, avg_error_rate = excluded.avg_error_rate,
                  data_points = excluded.data_points, p50_sum = excluded.p50_sum, p50_n = excluded.p50_n,
                  p95_sum = excluded.p95_sum, p95_n = excluded.p95_n, p99_sum = excluded.p99_sum,
                  p99_n = excluded.p99_n, error_rate_sum = excluded.error_rate_sum,
                  error_rate_n = excluded.error_rate_n""" % (table, width, EPOCH))
        cls.fill_rollups_by_name()

    @classmethod
    def fill_rollups_by_name(cls):
        """The rollups summed over endpoints from the per-endpoint ones, as the rollup job makes them."""
        for table in ("tb_performance_metric_5min", "tb_performance_metric_hourly"):
            psql(cls.db, """
                DELETE FROM {t}_by_name;
                INSERT INTO {t}_by_name SELECT bucket, metric_name, sum(data_points), sum(total_requests),
                  sum(total_errors), sum(p50_sum), sum(p50_n), sum(p95_sum), sum(p95_n), sum(p99_sum), sum(p99_n),
                  sum(error_rate_sum), sum(error_rate_n) FROM {t} GROUP BY 1, 2""".format(t=table))

    # ---- helpers ----

    def call(self, method, request, timeout=30):
        return getattr(self.stub, method)(request, metadata=self.md, timeout=timeout)

    def assert_invalid(self, method, request, field):
        with self.assertRaises(grpc.RpcError) as cm:
            self.call(method, request)
        self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT, cm.exception.details())
        self.assertTrue(cm.exception.details().startswith(field),
                        "%r does not name %r" % (cm.exception.details(), field))

    def assert_code(self, code, method, request):
        with self.assertRaises(grpc.RpcError) as cm:
            self.call(method, request)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception.details()

    def pages(self, method, request, field):
        """Every item of a paged list, and the number of pages."""
        items, n = [], 0
        while True:
            r = self.call(method, request)
            items += list(getattr(r, field))
            n += 1
            if not r.next_page_token:
                return items, n
            request.page_token = r.next_page_token

    def stable(self, rpc, sql):
        """rpc() and psql(sql) with the clock moving: retried until psql gives the same before and after."""
        for _ in range(5):
            before = psql(self.db, sql)
            got = rpc()
            if psql(self.db, sql) == before:
                return got, before
        self.fail("data kept crossing the window's edge")

    def filter_validation(self, method, make):
        """Every rule of MetricFilter, through a request made by make(filter)."""
        M = G.MetricFilter
        self.assert_invalid(method, make(M(metric_names=[""])), "filter.metric_names[0]")
        self.assert_invalid(method, make(M(metric_names=["ok", "x" * 101])), "filter.metric_names[1]")
        self.assert_invalid(method, make(M(metric_names=["m%d" % i for i in range(101)])), "filter.metric_names")
        self.assert_invalid(method, make(M(endpoints=["/" + "e" * 500])), "filter.endpoints[0]")
        self.assert_invalid(method, make(M(methods=[""])), "filter.methods[0]")
        self.assert_invalid(method, make(M(methods=["GET", "VERYLONGMETHOD"])), "filter.methods[1]")
        self.assert_invalid(method, make(M(status_codes=[200, 99])), "filter.status_codes[1]")
        self.assert_invalid(method, make(M(status_codes=[600])), "filter.status_codes[0]")
        self.assert_invalid(method, make(M(tags={"": "x"})), "filter.tags")
        self.assert_invalid(method, make(M(tags={"k" * 101: "x"})), "filter.tags")
        self.assert_invalid(method, make(M(tags={"k": "v" * 501})), "filter.tags")
        self.assert_invalid(method, make(M(tags={"k%d" % i: "v" for i in range(33)})), "filter.tags")

    def range_validation(self, method, make):
        self.assert_invalid(method, make(time_range(self.t0, self.t0 - 1)), "time_range")
        bad = G.TimeRange(start_time=timestamp_pb2.Timestamp(seconds=1, nanos=-1))
        self.assert_invalid(method, make(bad), "time_range.start_time")
        bad = G.TimeRange(end_time=timestamp_pb2.Timestamp(seconds=253402300800))
        self.assert_invalid(method, make(bad), "time_range.end_time")

    # ---- ListMetricPoints ----

    def test_points_paged_against_psql(self):
        start, end = self.t0 - 6 * HOUR, self.t0 + 1
        req = metrics_pb2.ListMetricPointsRequest(time_range=time_range(start, end), page_size=7,
                                                  filter=G.MetricFilter(metric_names=["http_request", "db.query"]))
        got, pages = self.pages("ListMetricPoints", req, "points")
        want = psql(self.db, "SELECT (extract(epoch FROM time) * 1000000)::bigint, metric_name, endpoint,"
                    " coalesce(method, ''), status_code, p50::float8, p95::float8, p99::float8, mean::float8,"
                    " min::float8, max::float8, request_count, error_count, error_rate::float8, throughput::float8,"
                    " metric_type::text, (SELECT string_agg(k || '=' || v, ',' ORDER BY k) FROM jsonb_each_text(tags)"
                    " AS t(k, v)) FROM tb_performance_metric WHERE time >= %s AND time < %s"
                    " AND metric_name IN ('http_request', 'db.query') ORDER BY time DESC, metric_name, endpoint"
                    % (at(start), at(end)))
        self.assertGreater(pages, 10)
        self.assertEqual(len(got), len(want))
        types = {"gauge": G.METRIC_TYPE_GAUGE, "histogram": G.METRIC_TYPE_HISTOGRAM}
        for p, w in zip(got, want):
            tags = ",".join("%s=%s" % kv for kv in sorted(p.tags.items())) or None
            self.assertEqual((p.time.ToMicroseconds(), p.metric_name, p.endpoint, p.method,
                              opt(p, "status_code"), opt(p, "p50"), opt(p, "p95"), opt(p, "p99"), opt(p, "mean"),
                              opt(p, "min"), opt(p, "max"), p.request_count, p.error_count, opt(p, "error_rate"),
                              opt(p, "throughput"), p.metric_type, tags),
                             (int(w[0]), w[1], w[2], w[3], None if w[4] is None else int(w[4]), num(w[5]), num(w[6]),
                              num(w[7]), num(w[8]), num(w[9]), num(w[10]), int(w[11]), int(w[12]), num(w[13]),
                              num(w[14]), types[w[15]], w[16]))

    def test_points_paged_with_the_longest_names(self):
        # A cursor holds the metric name and the endpoint: at their limits (100 characters, 500 of four bytes
        # each) the page token is over 3,000 characters, and it must still read back.
        name = "n" * 100
        endpoint = "\U0001F600" * 500
        t = self.t0 - 30 * DAY
        psql(self.db, "INSERT INTO tb_performance_metric (time, metric_name, endpoint, p50, request_count)"
             " SELECT %s + s * interval '1 second', '%s', '%s', 1, 1 FROM generate_series(0, 4) AS s"
             % (at(t), name, endpoint))
        req = metrics_pb2.ListMetricPointsRequest(time_range=time_range(t, t + 10), page_size=2,
                                                  filter=G.MetricFilter(metric_names=[name]))
        got, pages = self.pages("ListMetricPoints", req, "points")
        self.assertEqual(pages, 3)
        self.assertEqual([(p.metric_name, p.endpoint) for p in got], [(name, endpoint)] * 5)
        self.assertEqual(len({p.time.ToMicroseconds() for p in got}), 5)

    def test_points_filters(self):
        start, end = self.t0 - 12 * HOUR, self.t0 + 1
        cases = [
            (G.MetricFilter(methods=["POST"]), "method = 'POST'"),
            (G.MetricFilter(status_codes=[500]), "status_code = 500"),
            (G.MetricFilter(endpoints=["", "/api/users"]), "endpoint IN ('', '/api/users')"),
            (G.MetricFilter(tags={"region": "eu", "tier": "web"}), "tags @> '{\"region\": \"eu\", \"tier\": \"web\"}'"),
            (G.MetricFilter(metric_names=["http_request"], methods=["GET"], status_codes=[200, 500],
                            tags={"region": "us"}),
             "metric_name = 'http_request' AND method = 'GET' AND status_code IN (200, 500)"
             " AND tags @> '{\"region\": \"us\"}'"),
        ]
        for f, where in cases:
            got, _ = self.pages("ListMetricPoints", metrics_pb2.ListMetricPointsRequest(
                time_range=time_range(start, end), filter=f, page_size=1000), "points")
            want = psql(self.db, "SELECT (extract(epoch FROM time) * 1000000)::bigint, metric_name, endpoint"
                        " FROM tb_performance_metric WHERE time >= %s AND time < %s AND %s"
                        " ORDER BY time DESC, metric_name, endpoint" % (at(start), at(end), where))
            self.assertGreater(len(want), 0, where)
            self.assertEqual([(p.time.ToMicroseconds(), p.metric_name, p.endpoint) for p in got],
                             [(int(w[0]), w[1], w[2]) for w in want], where)

    def test_points_default_window_and_tokens(self):
        got, want = self.stable(
            lambda: self.pages("ListMetricPoints", metrics_pb2.ListMetricPointsRequest(page_size=5), "points")[0],
            "SELECT metric_name, endpoint FROM tb_performance_metric WHERE time >= now() - interval '1 hour'"
            " AND time < now() ORDER BY time DESC, metric_name, endpoint")
        self.assertEqual([[p.metric_name, p.endpoint] for p in got], want)
        first = self.call("ListMetricPoints", metrics_pb2.ListMetricPointsRequest(page_size=1))
        self.assertTrue(first.next_page_token)
        # An empty filter is no filter: the token still fits.
        self.call("ListMetricPoints", metrics_pb2.ListMetricPointsRequest(
            page_size=1, page_token=first.next_page_token, filter=G.MetricFilter()))
        self.assert_invalid("ListMetricPoints", metrics_pb2.ListMetricPointsRequest(
            page_token=first.next_page_token, filter=G.MetricFilter(methods=["GET"])), "page_token")
        self.assert_invalid("ListMetricPoints", metrics_pb2.ListMetricPointsRequest(page_token="garbage!"),
                            "page_token")
        self.assert_invalid("ListMetricPoints", metrics_pb2.ListMetricPointsRequest(page_size=-1), "page_size")
        self.range_validation("ListMetricPoints", lambda tr: metrics_pb2.ListMetricPointsRequest(time_range=tr))
        self.filter_validation("ListMetricPoints", lambda f: metrics_pb2.ListMetricPointsRequest(filter=f))
        # page_size is capped to 5000.
        r = self.call("ListMetricPoints", metrics_pb2.ListMetricPointsRequest(
            time_range=time_range(self.t0 - 10 * DAY, self.t0 + 1), page_size=100000))
        self.assertEqual(len(r.points), 5000)

    # ---- ListMetricNames ----

    def test_names_against_psql(self):
        got, pages = self.pages("ListMetricNames", metrics_pb2.ListMetricNamesRequest(page_size=1), "metrics")
        self.assertEqual(pages, 4)
        want = psql(self.db, """
            SELECT n.metric_name, (SELECT metric_type::text FROM tb_performance_metric p WHERE p.metric_name =
              n.metric_name ORDER BY time DESC, endpoint LIMIT 1),
              (extract(epoch FROM min(time)) * 1000000)::bigint, (extract(epoch FROM max(time)) * 1000000)::bigint,
              count(DISTINCT endpoint) FILTER (WHERE endpoint <> '' AND time >= now() - interval '24 hours'),
              (SELECT string_agg(DISTINCT k, ',') FROM tb_performance_metric p, jsonb_object_keys(p.tags) k
               WHERE p.metric_name = n.metric_name AND p.time >= now() - interval '24 hours')
            FROM tb_performance_metric n GROUP BY n.metric_name ORDER BY n.metric_name""")
        types = {"gauge": G.METRIC_TYPE_GAUGE, "histogram": G.METRIC_TYPE_HISTOGRAM}
        self.assertEqual([(d.metric_name, d.metric_type, d.first_seen.ToMicroseconds(), d.last_seen.ToMicroseconds(),
                           d.endpoint_count, ",".join(d.tag_keys) or None) for d in got],
                         [(w[0], types[w[1]], int(w[2]), int(w[3]), int(w[4]), w[5]) for w in want])
        r = self.call("ListMetricNames", metrics_pb2.ListMetricNamesRequest(name_prefix="http"))
        self.assertEqual([d.metric_name for d in r.metrics], ["http_request"])
        self.assertEqual(r.next_page_token, "")
        first = self.call("ListMetricNames", metrics_pb2.ListMetricNamesRequest(page_size=1))
        self.assert_invalid("ListMetricNames", metrics_pb2.ListMetricNamesRequest(
            page_token=first.next_page_token, name_prefix="db"), "page_token")
        self.assert_invalid("ListMetricNames", metrics_pb2.ListMetricNamesRequest(page_token="%%%"), "page_token")
        self.assert_invalid("ListMetricNames", metrics_pb2.ListMetricNamesRequest(page_size=-1), "page_size")
        self.assert_invalid("ListMetricNames", metrics_pb2.ListMetricNamesRequest(name_prefix="x" * 101),
                            "name_prefix")

    # ---- QueryMetrics ----

    def query(self, start, end, stats, **kw):
        return self.call("QueryMetrics", metrics_pb2.QueryMetricsRequest(
            time_range=time_range(start, end), statistics=stats, **kw))

    def series_map(self, resp):
        """{(metric_name, labels tuple, statistic): [(time_us, value or None, sample_count)]}"""
        out = {}
        for s in resp.series:
            key = (s.metric_name, tuple(sorted(s.labels.items())), s.statistic)
            self.assertNotIn(key, out)
            out[key] = [(p.time.ToMicroseconds(), opt(p, "value"), p.sample_count) for p in s.points]
        return out

    def check_series(self, resp, rows, nkeys, label_names, stats, fill=None):
        """Compares resp with rows of (keys..., time_us, count, value per stat)."""
        want = {}
        for r in rows:
            keys = r[:nkeys]
            labels = tuple(sorted((name, keys[i]) for name, i in label_names))
            for si, st in enumerate(stats):
                want.setdefault((keys[0], labels, st), []).append(
                    (int(r[nkeys]), num(r[nkeys + 2 + si]), int(r[nkeys + 1])))
        if fill is not None:
            lo, hi, width = fill
            for key, pts in want.items():
                have = {p[0]: p for p in pts}
                want[key] = [have.get(t * 1000000, (t * 1000000, None, 0)) for t in range(lo, hi, width)]
        got = self.series_map(resp)
        self.assertEqual(sorted(got.keys()), sorted(want.keys()))
        for key in want:
            self.assertEqual(got[key], sorted(want[key]), key)

    def sql_series(self, table, where, stats_sql, keys, bucket):
        cols = "".join(", (%s)::float8" % a for a in stats_sql)
        count = "sum(data_points)" if table != "tb_performance_metric" else "count(*)"
        keylist = ", ".join("(%s)::text" % k for k in keys)
        return psql(self.db, "SELECT %s, (extract(epoch FROM %s) * 1000000)::bigint, %s%s FROM %s WHERE %s"
                    " GROUP BY %s, %d ORDER BY %s, %d" % (keylist, bucket, count, cols, table, where, keylist,
                                                         len(keys) + 1, keylist, len(keys) + 1))

    def test_query_raw_grouped_by_endpoint(self):
        start, end = self.t0 - 2 * HOUR, self.t0 + 1
        stats = [G.METRIC_STATISTIC_P95, G.METRIC_STATISTIC_REQUEST_COUNT, G.METRIC_STATISTIC_ERROR_RATE]
        r = self.query(start, end, stats, granularity=G.GRANULARITY_RAW, group_by=["endpoint"],
                       filter=G.MetricFilter(metric_names=["http_request"]))
        self.assertEqual(r.granularity, G.GRANULARITY_RAW)
        self.assertEqual(r.bucket_width.seconds, 0)
        rows = self.sql_series("tb_performance_metric", "metric_name = 'http_request' AND time >= %s AND time < %s"
                               % (at(start), at(end)),
                               ["avg(p95)", "sum(request_count)",
                                "sum(error_count)::numeric / nullif(sum(request_count), 0) * 100"],
                               ["metric_name", "endpoint"], "time")
        self.check_series(r, rows, 2, [("endpoint", 1)], stats)
        aggs = {s.statistic: s.aggregation for s in r.series}
        self.assertEqual(aggs, {G.METRIC_STATISTIC_P95: G.AGGREGATION_AVG,
                                G.METRIC_STATISTIC_REQUEST_COUNT: G.AGGREGATION_SUM,
                                G.METRIC_STATISTIC_ERROR_RATE: G.AGGREGATION_AVG})

    def test_query_raw_merges_per_metric(self):
        # No group_by: one series per metric and statistic, points at the same time combined.
        start, end = self.t0 - 3 * HOUR, self.t0 + 1
        stats = [G.METRIC_STATISTIC_P50, G.METRIC_STATISTIC_ERROR_COUNT]
        r = self.query(start, end, stats, granularity=G.GRANULARITY_RAW,
                       filter=G.MetricFilter(metric_names=["http_request", "db.query"]))
        rows = self.sql_series("tb_performance_metric", "metric_name IN ('http_request', 'db.query')"
                               " AND time >= %s AND time < %s" % (at(start), at(end)),
                               ["avg(p50)", "sum(error_count)"], ["metric_name"], "time")
        self.check_series(r, rows, 1, [], stats)
        self.assertEqual(len(r.series), 4)

    def test_query_aggregations_from_raw(self):
        start, end = self.t0 - 5 * HOUR, self.t0 + 1
        lo, hi = (start // 300) * 300, ((end + 299) // 300) * 300
        where = "metric_name = 'http_request' AND time >= %s AND time < %s" % (at(lo), at(hi))
        bucket = "date_bin('5 minutes', time, %s)" % EPOCH
        for agg, fn in ((G.AGGREGATION_SUM, "sum(%s)"), (G.AGGREGATION_MIN, "min(%s)"), (G.AGGREGATION_MAX, "max(%s)"),
                        (G.AGGREGATION_COUNT, "count(%s)"),
                        (G.AGGREGATION_LAST, "(array_agg(%s ORDER BY time DESC, endpoint) FILTER"
                                             " (WHERE %s IS NOT NULL))[1]")):
            stats = [G.METRIC_STATISTIC_P99, G.METRIC_STATISTIC_THROUGHPUT, G.METRIC_STATISTIC_MEAN]
            r = self.query(start, end, stats, granularity=G.GRANULARITY_FIVE_MINUTES, aggregation=agg,
                           filter=G.MetricFilter(metric_names=["http_request"]))
            self.assertEqual(r.bucket_width.seconds, 300)
            exprs = [fn.replace("%s", STAT_COLUMN[s]) for s in stats]
            rows = self.sql_series("tb_performance_metric", where, exprs, ["metric_name"], bucket)
            self.check_series(r, rows, 1, [], stats, fill=(lo, hi, 300))
            self.assertEqual({s.aggregation for s in r.series}, {agg})

    def test_query_group_by_method_status_and_tags(self):
        start, end = self.t0 - 4 * HOUR, self.t0 + 1
        lo, hi = (start // HOUR) * HOUR, ((end + HOUR - 1) // HOUR) * HOUR
        stats = [G.METRIC_STATISTIC_P95, G.METRIC_STATISTIC_REQUEST_COUNT]
        r = self.query(start, end, stats, granularity=G.GRANULARITY_ONE_HOUR,
                       group_by=["method", "status_code", "tags.region", "metric_name"],
                       filter=G.MetricFilter(metric_names=["http_request"], tags={"tier": "web"}))
        rows = self.sql_series("tb_performance_metric", "metric_name = 'http_request' AND tags @> '{\"tier\": \"web\"}'"
                               " AND time >= %s AND time < %s" % (at(lo), at(hi)),
                               ["avg(p95)", "sum(request_count)"],
                               ["metric_name", "coalesce(method, '')", "coalesce(status_code::text, '')",
                                "coalesce(tags ->> 'region', '')"], "date_bin('1 hour', time, %s)" % EPOCH)
        self.check_series(r, rows, 4, [("method", 1), ("status_code", 2), ("tags.region", 3), ("metric_name", 0)],
                          stats, fill=(lo, hi, HOUR))
        self.assertGreater(len(r.series), 8)

    def test_query_rollups_exact_and_used(self):
        # Within raw retention, the rollups give what the raw points give.
        start, end = self.t0 - 20 * HOUR, self.t0 + 1
        stats = [G.METRIC_STATISTIC_P50, G.METRIC_STATISTIC_P99, G.METRIC_STATISTIC_REQUEST_COUNT,
                 G.METRIC_STATISTIC_ERROR_RATE]
        raw_sql = ["avg(p50)", "avg(p99)", "sum(request_count)",
                   "sum(error_count)::numeric / nullif(sum(request_count), 0) * 100"]
        for gran, width in ((G.GRANULARITY_FIVE_MINUTES, 300), (G.GRANULARITY_ONE_HOUR, HOUR),
                            (G.GRANULARITY_ONE_DAY, DAY)):
            lo, hi = (start // width) * width, ((end + width - 1) // width) * width
            r = self.query(start, end, stats, granularity=gran, group_by=["endpoint"], max_points=10000,
                           filter=G.MetricFilter(metric_names=["http_request"],
                                                 endpoints=["/api/purchase-orders", "/api/invoices"]))
            rows = self.sql_series("tb_performance_metric", "metric_name = 'http_request' AND endpoint IN"
                                   " ('/api/purchase-orders', '/api/invoices') AND time >= %s AND time < %s"
                                   % (at(lo), at(hi)), raw_sql, ["metric_name", "endpoint"],
                                   "date_bin('%d seconds', time, %s)" % (width, EPOCH))
            self.check_series(r, rows, 2, [("endpoint", 1)], stats, fill=(lo, hi, width))
        # Beyond raw retention only the rollups know: rows written there alone show which table answered.
        old = ((self.t0 - 20 * DAY) // HOUR) * HOUR
        psql(self.db, "INSERT INTO tb_performance_metric_5min (bucket, metric_name, endpoint, total_requests,"
             " total_errors, data_points, p50_sum, p50_n, p95_sum, p95_n, p99_sum, p99_n, error_rate_sum,"
             " error_rate_n) VALUES (%s, 'http_request', '/api/x', 100, 5, 2, 30, 2, 90, 2, NULL, 0, 8, 2),"
             " (%s, 'http_request', '/api/x', 300, 0, 1, 40, 1, 50, 1, 70, 1, 0, 1)"
             % (at(old), at(old + 600)))
        psql(self.db, "INSERT INTO tb_performance_metric_hourly (bucket, metric_name, endpoint, total_requests,"
             " total_errors, data_points, p50_sum, p50_n, p95_sum, p95_n, p99_sum, p99_n, error_rate_sum,"
             " error_rate_n) VALUES (%s, 'http_request', '/api/x', 400, 5, 3, 70, 3, 140, 3, 70, 1, 8, 3)"
             % at(old))
        f = G.MetricFilter(endpoints=["/api/x"])
        r = self.query(old, old + HOUR, [G.METRIC_STATISTIC_P50, G.METRIC_STATISTIC_ERROR_RATE],
                       granularity=G.GRANULARITY_FIVE_MINUTES, filter=f)
        got = self.series_map(r)
        p50 = got[("http_request", (), G.METRIC_STATISTIC_P50)]
        self.assertEqual(len(p50), 12)
        self.assertEqual(p50[0], (old * 1000000, 15.0, 2))
        self.assertEqual(p50[1], ((old + 300) * 1000000, None, 0))
        self.assertEqual(p50[2], ((old + 600) * 1000000, 40.0, 1))
        self.assertEqual(got[("http_request", (), G.METRIC_STATISTIC_ERROR_RATE)][0][1], 5.0)
        r = self.query(old, old + HOUR, [G.METRIC_STATISTIC_P50, G.METRIC_STATISTIC_REQUEST_COUNT],
                       granularity=G.GRANULARITY_ONE_HOUR, filter=f, aggregation=G.AGGREGATION_COUNT)
        got = self.series_map(r)
        self.assertEqual(got[("http_request", (), G.METRIC_STATISTIC_P50)], [(old * 1000000, 3.0, 3)])
        self.assertEqual(got[("http_request", (), G.METRIC_STATISTIC_REQUEST_COUNT)], [(old * 1000000, 3.0, 3)])
        # A statistic the rollups lack is read from the raw points: nothing there.
        r = self.query(old, old + HOUR, [G.METRIC_STATISTIC_THROUGHPUT], granularity=G.GRANULARITY_ONE_HOUR,
                       filter=f)
        self.assertEqual(len(r.series), 0)

    def test_query_auto_granularity(self):
        f = G.MetricFilter(metric_names=["http_request"], endpoints=["/api/users"])
        stats = [G.METRIC_STATISTIC_P95]
        r = self.query(self.t0 - HOUR, self.t0 + 1, stats, filter=f)
        self.assertEqual(r.granularity, G.GRANULARITY_RAW)
        self.assertEqual(len(r.series[0].points), 7)
        r = self.query(self.t0 - HOUR, self.t0 + 1, stats, filter=f, max_points=5)
        self.assertEqual((r.granularity, r.bucket_width.seconds), (G.GRANULARITY_ONE_HOUR, HOUR))
        # 12 raw points fit 12, not 11; beyond raw retention RAW is not a choice.
        r = self.query(self.t0 - 2 * HOUR, self.t0, stats, filter=f, max_points=12, granularity=G.GRANULARITY_AUTO)
        self.assertEqual((r.granularity, len(r.series[0].points)), (G.GRANULARITY_RAW, 12))
        r = self.query(self.t0 - 2 * HOUR, self.t0, stats, filter=f, max_points=11, granularity=G.GRANULARITY_AUTO)
        hours = (self.t0 + HOUR - 1) // HOUR - (self.t0 - 2 * HOUR) // HOUR
        self.assertEqual((r.granularity, len(r.series[0].points)), (G.GRANULARITY_ONE_HOUR, hours))
        old = self.t0 - 8 * DAY
        r = self.query(old - 2 * HOUR, old, stats, max_points=24, filter=G.MetricFilter(endpoints=["/api/x"]))
        self.assertEqual((r.granularity, r.bucket_width.seconds), (G.GRANULARITY_FIVE_MINUTES, 300))
        r = self.query(self.t0 - 30 * DAY, self.t0, stats, filter=f)
        self.assertEqual(r.granularity, G.GRANULARITY_ONE_HOUR)
        r = self.query(self.t0 - 100 * DAY, self.t0, stats, filter=f, max_points=10000)
        self.assertEqual(r.granularity, G.GRANULARITY_ONE_HOUR)
        r = self.query(self.t0 - 400 * DAY, self.t0, stats, filter=f)
        self.assertEqual((r.granularity, r.bucket_width.seconds), (G.GRANULARITY_ONE_DAY, DAY))
        details = self.assert_code(SC.RESOURCE_EXHAUSTED, "QueryMetrics", metrics_pb2.QueryMetricsRequest(
            time_range=time_range(self.t0 - 400 * DAY, self.t0), statistics=stats, max_points=10))
        self.assertTrue(details.startswith("max_points"), details)

    def test_query_limits(self):
        stats = [G.METRIC_STATISTIC_P95]
        details = self.assert_code(SC.RESOURCE_EXHAUSTED, "QueryMetrics", metrics_pb2.QueryMetricsRequest(
            time_range=time_range(self.t0 - DAY, self.t0), statistics=stats,
            granularity=G.GRANULARITY_FIVE_MINUTES, max_points=100))
        self.assertTrue(details.startswith("max_points"), details)
        details = self.assert_code(SC.RESOURCE_EXHAUSTED, "QueryMetrics", metrics_pb2.QueryMetricsRequest(
            time_range=time_range(self.t0 - DAY, self.t0), statistics=stats, granularity=G.GRANULARITY_RAW,
            filter=G.MetricFilter(metric_names=["http_request"]), max_points=100))
        self.assertTrue(details.startswith("max_points"), details)
        # 600 tag values and 2 statistics: 1200 series.
        details = self.assert_code(SC.RESOURCE_EXHAUSTED, "QueryMetrics", metrics_pb2.QueryMetricsRequest(
            time_range=time_range(self.t0 - 4 * HOUR, self.t0), statistics=stats + [G.METRIC_STATISTIC_P50],
            filter=G.MetricFilter(metric_names=["many_series"]), group_by=["tags.id"]))
        self.assertTrue(details.startswith("series"), details)
        r = self.query(self.t0 - 4 * HOUR, self.t0, stats, filter=G.MetricFilter(metric_names=["many_series"]),
                       group_by=["tags.id"], page_size=1000)
        self.assertEqual(len(r.series), 600)
        self.assertEqual(r.series[0].labels["tags.id"], "s000")

    def test_query_paging(self):
        start, end = self.t0 - 6 * HOUR, self.t0
        stats = [G.METRIC_STATISTIC_P95, G.METRIC_STATISTIC_REQUEST_COUNT, G.METRIC_STATISTIC_ERROR_RATE]
        base = dict(time_range=time_range(start, end), statistics=stats, group_by=["endpoint", "tags.region"],
                    granularity=G.GRANULARITY_FIVE_MINUTES)
        whole = self.call("QueryMetrics", metrics_pb2.QueryMetricsRequest(**base))
        self.assertEqual(whole.next_page_token, "")
        paged, pages = self.pages("QueryMetrics", metrics_pb2.QueryMetricsRequest(page_size=2, **base), "series")
        self.assertEqual(pages, (len(whole.series) + 1) // 2)
        self.assertEqual(list(paged), list(whole.series))
        # AUTO is resolved once: later pages keep the first page's granularity.
        auto = dict(base, granularity=G.GRANULARITY_AUTO)
        paged, _ = self.pages("QueryMetrics", metrics_pb2.QueryMetricsRequest(page_size=4, **auto), "series")
        self.assertEqual(list(paged), list(self.call("QueryMetrics", metrics_pb2.QueryMetricsRequest(**auto)).series))
        first = self.call("QueryMetrics", metrics_pb2.QueryMetricsRequest(page_size=1, **base))
        other = dict(base, statistics=stats[:2])
        self.assert_invalid("QueryMetrics", metrics_pb2.QueryMetricsRequest(page_token=first.next_page_token,
                                                                            **other), "page_token")
        self.assert_invalid("QueryMetrics", metrics_pb2.QueryMetricsRequest(page_token="abc", **base), "page_token")

    def test_query_validation(self):
        Q = metrics_pb2.QueryMetricsRequest
        p95 = [G.METRIC_STATISTIC_P95]
        self.assert_invalid("QueryMetrics", Q(), "statistics")
        self.assert_invalid("QueryMetrics", Q(statistics=[G.METRIC_STATISTIC_UNSPECIFIED]), "statistics[0]")
        self.assert_invalid("QueryMetrics", Q(statistics=[G.METRIC_STATISTIC_P95, 42]), "statistics[1]")
        self.assert_invalid("QueryMetrics", Q(statistics=[G.METRIC_STATISTIC_P95, G.METRIC_STATISTIC_P95]),
                            "statistics[1]")
        self.assert_invalid("QueryMetrics", Q(statistics=p95, granularity=42), "granularity")
        self.assert_invalid("QueryMetrics", Q(statistics=p95, aggregation=42), "aggregation")
        self.assert_invalid("QueryMetrics", Q(statistics=p95, group_by=["host"]), "group_by[0]")
        self.assert_invalid("QueryMetrics", Q(statistics=p95, group_by=["endpoint", "endpoint"]), "group_by[1]")
        self.assert_invalid("QueryMetrics", Q(statistics=p95, group_by=["tags."]), "group_by[0]")
        self.assert_invalid("QueryMetrics", Q(statistics=p95, group_by=["tags." + "k" * 101]), "group_by[0]")
        self.assert_invalid("QueryMetrics", Q(statistics=p95, group_by=["tags.k%d" % i for i in range(9)]),
                            "group_by")
        self.assert_invalid("QueryMetrics", Q(statistics=p95, max_points=-1), "max_points")
        self.assert_invalid("QueryMetrics", Q(statistics=p95, page_size=-1), "page_size")
        self.assert_invalid("QueryMetrics", Q(statistics=p95, granularity=G.GRANULARITY_RAW,
                                              time_range=time_range(self.t0 - 8 * DAY, self.t0)), "granularity")
        self.range_validation("QueryMetrics", lambda tr: Q(statistics=p95, time_range=tr))
        self.filter_validation("QueryMetrics", lambda f: Q(statistics=p95, filter=f))

    # ---- the data model's performance queries ----

    def test_performance_summary_is_the_seed_query(self):
        sql = ("SELECT endpoint, count(*), sum(request_count), round(avg(p50)::numeric, 2), round(avg(p95)::numeric, 2),"
               " round(avg(p99)::numeric, 2), round(avg(error_rate)::numeric, 2), sum(error_count)"
               " FROM tb_performance_metric WHERE time >= NOW() - INTERVAL '24 hours' AND time < NOW()"
               " AND endpoint <> '' %s GROUP BY endpoint ORDER BY sum(request_count) DESC, count(*) DESC, endpoint"
               " LIMIT %d")

        def rows(resp):
            return [[e.endpoint, str(e.data_points), str(e.total_requests)] +
                    [opt(e, f) for f in ("avg_p50", "avg_p95", "avg_p99", "avg_error_rate")] + [str(e.total_errors)]
                    for e in resp.endpoints]

        def norm(want):
            return [w[:3] + [num(v) for v in w[3:7]] + [w[7]] for w in want]

        got, want = self.stable(lambda: self.call("GetPerformanceSummary", metrics_pb2.GetPerformanceSummaryRequest()),
                                sql % ("", 20))
        self.assertEqual(rows(got), norm(want))
        self.assertEqual(len(want), 3)
        self.assertAlmostEqual(got.time_range.end_time.seconds - got.time_range.start_time.seconds, DAY, delta=1)
        got, want = self.stable(lambda: self.call("GetPerformanceSummary", metrics_pb2.GetPerformanceSummaryRequest(
            limit=2, filter=G.MetricFilter(methods=["GET"], metric_names=["http_request"]))),
            sql % ("AND method = 'GET' AND metric_name = 'http_request'", 2))
        self.assertEqual(rows(got), norm(want))
        start, end = self.t0 - 6 * DAY, self.t0 - DAY
        got = self.call("GetPerformanceSummary", metrics_pb2.GetPerformanceSummaryRequest(
            time_range=time_range(start, end)))
        want = psql(self.db, (sql % ("", 20)).replace("NOW() - INTERVAL '24 hours'", at(start))
                    .replace("time < NOW()", "time < %s" % at(end)))
        self.assertEqual(rows(got), norm(want))
        self.assertEqual(len(want), 1)
        self.assertEqual(got.time_range, time_range(start, end))
        S = metrics_pb2.GetPerformanceSummaryRequest
        self.assert_invalid("GetPerformanceSummary", S(limit=-1), "limit")
        self.assert_invalid("GetPerformanceSummary", S(limit=1001), "limit")
        self.range_validation("GetPerformanceSummary", lambda tr: S(time_range=tr))
        self.filter_validation("GetPerformanceSummary", lambda f: S(filter=f))

    def test_slowest_endpoints_is_the_seed_query(self):
        sql = ("SELECT endpoint, AVG(p95)::float8, MAX(p99)::float8, COUNT(*), ROUND(AVG(error_rate)::numeric, 2)"
               " FROM tb_performance_metric WHERE time >= NOW() - INTERVAL '24 hours' AND time < NOW()"
               " AND p95 > %s GROUP BY endpoint ORDER BY avg(p95) DESC, endpoint")

        def rows(items):
            return [[e.endpoint, e.avg_p95, opt(e, "max_p99"), e.data_points, opt(e, "avg_error_rate")] for e in items]

        def norm(want):
            return [[w[0], float(w[1]), num(w[2]), int(w[3]), num(w[4])] for w in want]

        L = metrics_pb2.ListSlowestEndpointsRequest
        got, want = self.stable(lambda: self.pages("ListSlowestEndpoints", L(page_size=1), "endpoints"),
                                sql % 1000)
        self.assertEqual(rows(got[0]), norm(want))
        self.assertEqual(got[1], len(want) + (0 if len(want) == 0 else 0))
        self.assertGreaterEqual(len(want), 4)
        got, want = self.stable(lambda: self.call("ListSlowestEndpoints", L(
            p95_threshold_ms=wrappers_pb2.DoubleValue(value=1500.5))).endpoints, sql % 1500.5)
        self.assertEqual(rows(got), norm(want))
        got, want = self.stable(lambda: self.pages("ListSlowestEndpoints", L(
            page_size=2, p95_threshold_ms=wrappers_pb2.DoubleValue(value=0),
            filter=G.MetricFilter(metric_names=["db.query"])), "endpoints")[0],
            (sql % 0).replace("GROUP BY", "AND metric_name = 'db.query' GROUP BY"))
        self.assertEqual(rows(got), norm(want))
        first = self.call("ListSlowestEndpoints", L(page_size=1))
        self.assert_invalid("ListSlowestEndpoints", L(page_token=first.next_page_token,
                                                      p95_threshold_ms=wrappers_pb2.DoubleValue(value=1)),
                            "page_token")
        self.assert_invalid("ListSlowestEndpoints", L(page_token="Zm9v"), "page_token")
        self.assert_invalid("ListSlowestEndpoints", L(page_size=-1), "page_size")
        self.assert_invalid("ListSlowestEndpoints", L(p95_threshold_ms=wrappers_pb2.DoubleValue(value=-1)),
                            "p95_threshold_ms")
        self.assert_invalid("ListSlowestEndpoints", L(p95_threshold_ms=wrappers_pb2.DoubleValue(value=float("nan"))),
                            "p95_threshold_ms")
        self.range_validation("ListSlowestEndpoints", lambda tr: L(time_range=tr))
        self.filter_validation("ListSlowestEndpoints", lambda f: L(filter=f))

    def test_performance_trend_is_the_seed_query(self):
        seed = ("SELECT (extract(epoch FROM bucket) * 1000000)::bigint AS hour, endpoint, avg_p50, avg_p95, avg_p99,"
                " total_requests, total_errors,"
                " ROUND((total_errors::numeric / NULLIF(total_requests, 0) * 100), 2) AS error_rate_percent"
                " FROM tb_performance_metric_hourly WHERE bucket >= NOW() - INTERVAL '7 days' AND bucket < NOW()"
                " AND endpoint = '/api/purchase-orders' AND metric_name = 'http_request' ORDER BY bucket DESC")

        def rows(resp):
            return [[b.bucket.ToMicroseconds(), b.endpoint, opt(b, "avg_p50"), opt(b, "avg_p95"), opt(b, "avg_p99"),
                     b.total_requests, b.total_errors, opt(b, "error_rate_percent")] for b in resp.buckets]

        def norm(want):
            return [[int(w[0]), w[1], num(w[2]), num(w[3]), num(w[4]), int(w[5]), int(w[6]), num(w[7])]
                    for w in want]

        T = metrics_pb2.GetPerformanceTrendRequest
        got, want = self.stable(lambda: self.call("GetPerformanceTrend", T(
            endpoint="/api/purchase-orders", filter=G.MetricFilter(metric_names=["http_request"]))), seed)
        self.assertEqual(got.granularity, G.GRANULARITY_ONE_HOUR)
        self.assertEqual(rows(got), norm(want))
        self.assertGreater(len(want), 24 + 3 * 24 - 5)
        self.assertEqual({b.metric_name for b in got.buckets}, {""})
        # The seed's query as written (no metric filter): one row per hour and metric_name.
        seed_all = seed.replace(" AND metric_name = 'http_request'", "").replace(
            "ORDER BY bucket DESC", "ORDER BY bucket DESC, metric_name")
        got, want = self.stable(lambda: self.call("GetPerformanceTrend", T(
            endpoint="/api/purchase-orders", group_by_metric_name=True)), seed_all.replace(
            " AS error_rate_percent", " AS error_rate_percent, metric_name"))
        self.assertEqual([r + [b.metric_name] for r, b in zip(rows(got), got.buckets)],
                         [n + [w[8]] for n, w in zip(norm(want), want)])
        self.assertEqual(len(got.buckets), len(want))
        self.assertGreater(len({w[8] for w in want}), 1)
        # Every endpoint and metric: rows of one bucket and endpoint combine through their sums and counts.
        start, end = self.t0 - 2 * DAY, self.t0
        combined = ("SELECT (extract(epoch FROM {b}) * 1000000)::bigint, endpoint, {p50}, {p95}, {p99},"
                    " sum(total_requests), sum(total_errors),"
                    " round(sum(total_errors)::numeric / nullif(sum(total_requests), 0) * 100, 2)"
                    " FROM {table} WHERE bucket >= %s AND bucket < %s GROUP BY 1, 2 ORDER BY 1 DESC, 2"
                    % (at(start), at(end)))

        def avg_expr(p):
            return ("(CASE WHEN count(*) = 1 THEN min(avg_{p}) ELSE sum({p}_sum) / nullif(sum({p}_n), 0)"
                    " END)::float8".format(p=p))
        for gran, table, b in ((G.GRANULARITY_ONE_HOUR, "tb_performance_metric_hourly", "bucket"),
                               (G.GRANULARITY_FIVE_MINUTES, "tb_performance_metric_5min", "bucket"),
                               (G.GRANULARITY_ONE_DAY, "tb_performance_metric_hourly",
                                "date_bin('1 day', bucket, %s)" % EPOCH)):
            got = self.call("GetPerformanceTrend", T(time_range=time_range(start, end), granularity=gran))
            want = psql(self.db, combined.format(b=b, table=table, p50=avg_expr("p50"), p95=avg_expr("p95"),
                                                 p99=avg_expr("p99")))
            self.assertEqual(got.granularity, gran)
            self.assertEqual(rows(got), norm(want), gran)
        # Methods, status codes and tags are not in the rollups: from the raw points.
        lo, hi = ((start + HOUR - 1) // HOUR) * HOUR, ((end + HOUR - 1) // HOUR) * HOUR
        got = self.call("GetPerformanceTrend", T(time_range=time_range(start, end),
                                                 filter=G.MetricFilter(tags={"region": "eu"})))
        want = psql(self.db, "SELECT (extract(epoch FROM date_bin('1 hour', time, %s)) * 1000000)::bigint, endpoint,"
                    " avg(p50)::float8, avg(p95)::float8, avg(p99)::float8, sum(request_count), sum(error_count),"
                    " round(sum(error_count)::numeric / nullif(sum(request_count), 0) * 100, 2)"
                    " FROM tb_performance_metric WHERE time >= %s AND time < %s AND tags @> '{\"region\": \"eu\"}'"
                    " GROUP BY 1, 2 ORDER BY 1 DESC, 2" % (EPOCH, at(lo), at(hi)))
        self.assertEqual(rows(got), norm(want))
        self.assertGreater(len(want), 20)
        self.assert_invalid("GetPerformanceTrend", T(granularity=G.GRANULARITY_RAW), "granularity")
        self.assert_invalid("GetPerformanceTrend", T(granularity=42), "granularity")
        self.assert_invalid("GetPerformanceTrend", T(endpoint="/" + "e" * 500), "endpoint")
        self.range_validation("GetPerformanceTrend", lambda tr: T(time_range=tr))
        self.filter_validation("GetPerformanceTrend", lambda f: T(filter=f))

    # ---- rollups against the raw points ----

    SUMMARY_RAW = ("SELECT endpoint, count(*), sum(request_count), round(avg(p50)::numeric, 2),"
                   " round(avg(p95)::numeric, 2), round(avg(p99)::numeric, 2), round(avg(error_rate)::numeric, 2),"
                   " sum(error_count) FROM tb_performance_metric WHERE time >= %s AND time < %s AND endpoint <> ''"
                   " GROUP BY endpoint ORDER BY sum(request_count) DESC, count(*) DESC, endpoint LIMIT 20")

    def summary_rows(self, start, end):
        """GetPerformanceSummary over [start, end) and the seed's summary of the raw points, alike."""
        got = self.call("GetPerformanceSummary", metrics_pb2.GetPerformanceSummaryRequest(
            time_range=time_range(start, end)))
        want = psql(self.db, self.SUMMARY_RAW % (at(start), at(end)))
        return ([[e.endpoint, e.data_points, e.total_requests] +
                 [opt(e, f) for f in ("avg_p50", "avg_p95", "avg_p99", "avg_error_rate")] + [e.total_errors]
                 for e in got.endpoints],
                [[w[0], int(w[1]), int(w[2])] + [num(v) for v in w[3:7]] + [int(w[7])] for w in want])

    def trend_rows(self, start, end, gran, width):
        """GetPerformanceTrend (every endpoint) and the same buckets computed from the raw points."""
        got = self.call("GetPerformanceTrend", metrics_pb2.GetPerformanceTrendRequest(
            time_range=time_range(start, end), granularity=gran))
        lo, hi = ((start + width - 1) // width) * width, ((end + width - 1) // width) * width
        want = psql(self.db, "SELECT (extract(epoch FROM date_bin('%d seconds', time, %s)) * 1000000)::bigint,"
                    " endpoint, avg(p50)::float8, avg(p95)::float8, avg(p99)::float8, sum(request_count),"
                    " sum(error_count), round(sum(error_count)::numeric / nullif(sum(request_count), 0) * 100, 2)"
                    " FROM tb_performance_metric WHERE time >= %s AND time < %s GROUP BY 1, 2 ORDER BY 1 DESC, 2"
                    % (width, EPOCH, at(lo), at(hi)))
        return ([[b.bucket.ToMicroseconds(), b.endpoint, opt(b, "avg_p50"), opt(b, "avg_p95"), opt(b, "avg_p99"),
                  b.total_requests, b.total_errors, opt(b, "error_rate_percent")] for b in got.buckets],
                [[int(w[0]), w[1], num(w[2]), num(w[3]), num(w[4]), int(w[5]), int(w[6]), num(w[7])] for w in want])

    def hourly_from_raw(self, start, end, by_endpoint=True):
        """QueryMetrics ONE_HOUR (by endpoint, or over every endpoint) and what the raw points give for the
        same hours."""
        stats = [G.METRIC_STATISTIC_P50, G.METRIC_STATISTIC_REQUEST_COUNT, G.METRIC_STATISTIC_ERROR_RATE]
        r = self.query(start, end, stats, granularity=G.GRANULARITY_ONE_HOUR,
                       group_by=["endpoint"] if by_endpoint else [],
                       filter=G.MetricFilter(metric_names=["http_request"]))
        lo, hi = (start // HOUR) * HOUR, ((end + HOUR - 1) // HOUR) * HOUR
        rows = self.sql_series("tb_performance_metric", "metric_name = 'http_request' AND time >= %s AND time < %s"
                               % (at(lo), at(hi)), ["avg(p50)", "sum(request_count)",
                                                    "sum(error_count)::numeric / nullif(sum(request_count), 0) * 100"],
                               ["metric_name", "endpoint"] if by_endpoint else ["metric_name"],
                               "date_bin('1 hour', time, %s)" % EPOCH)
        return r, rows, stats, (lo, hi, HOUR)

    def test_summary_from_rollups_with_unaligned_edges(self):
        # Windows whose edges fall inside 5-minute buckets and hours: the rollups give the whole buckets, the
        # raw points the edges, and together the raw points' answer, value for value.
        for start, end in ((self.t0 - 20 * HOUR + 37, self.t0 - 3 * HOUR + 101),
                           (self.t0 - 50 * MINUTE + 7, self.t0 - 10 * MINUTE + 3),
                           (self.t0 - 2 * HOUR - 1, self.t0 - 2 * HOUR + 250),
                           (self.t0 - 5 * HOUR, self.t0), (self.t0 - 6 * DAY + 1234, self.t0 - DAY - 17)):
            got, want = self.summary_rows(start, end)
            self.assertEqual(got, want, (start, end))
            self.assertGreaterEqual(len(want), 1)
        # The hours inside the window come from the hourly rollup: a change there alone shows in the answer.
        start, end = self.t0 - 20 * HOUR + 37, self.t0 - 3 * HOUR + 101
        hour = ((self.t0 - 10 * HOUR) // HOUR) * HOUR
        bump = ("UPDATE tb_performance_metric_hourly SET total_requests = total_requests + %d"
                " WHERE bucket = %s AND endpoint = '/api/invoices' AND metric_name = 'http_request'")
        psql(self.db, bump % (1000000, at(hour)))
        try:
            got, want = self.summary_rows(start, end)
            self.assertEqual({g[0]: g[2] - w[2] for g, w in zip(sorted(got), sorted(want))},
                             {"/api/invoices": 1000000, "/api/purchase-orders": 0, "/api/users": 0})
        finally:
            psql(self.db, bump % (-1000000, at(hour)))

    def test_rollups_behind_are_read_from_raw(self):
        # Rollup rows from `behind` on are made wrong; while the rollups are marked behind from there (a batch
        # not yet aggregated, then a full rebuild under way), every answer is still the raw points' answer.
        behind = self.t0 - 2 * HOUR - 100
        corrupt = ("UPDATE %s SET total_requests = total_requests + (%d), total_errors = total_errors + (%d),"
                   " p50_sum = p50_sum + (%d) WHERE bucket >= date_bin('%s', %s, %s)")
        tables = (("tb_performance_metric_5min", "5 minutes"), ("tb_performance_metric_hourly", "1 hour"),
                  ("tb_performance_metric_5min_by_name", "5 minutes"),
                  ("tb_performance_metric_hourly_by_name", "1 hour"))

        def check_all():
            for start, end in ((self.t0 - 6 * HOUR + 37, self.t0 + 1), (self.t0 - 3 * HOUR, self.t0 - HOUR + 5)):
                got, want = self.summary_rows(start, end)
                self.assertEqual(got, want, (start, end))
                r, rows, stats, fill = self.hourly_from_raw(start, end)
                self.check_series(r, rows, 2, [("endpoint", 1)], stats, fill=fill)
                r, rows, stats, fill = self.hourly_from_raw(start, end, by_endpoint=False)
                self.check_series(r, rows, 1, [], stats, fill=fill)
                for gran, width in ((G.GRANULARITY_ONE_HOUR, HOUR), (G.GRANULARITY_FIVE_MINUTES, 300)):
                    got, want = self.trend_rows(start, end, gran, width)
                    self.assertEqual(got, want, (start, end, gran))

        seq = psql(self.db, "INSERT INTO tb_metric_ingest_log (seq, point_count, min_time, max_time, buckets, payload)"
                   " SELECT greatest(nextval('seq_metric_ingest'), watermark_seq + 1), 1, %s, %s, '{}', '\\x'"
                   " FROM tb_metric_rollup_state RETURNING seq" % (at(behind), at(behind)))[0][0]
        for table, width in tables:
            psql(self.db, corrupt % (table, 1000000, 1000, 500, width, at(behind), EPOCH))
        try:
            check_all()
            # Only the batch's part is read from the raw points: the hours before it still come from the rollup.
            got, want = self.summary_rows(self.t0 - 6 * HOUR, self.t0)
            self.assertEqual(got, want)
            psql(self.db, "DELETE FROM tb_metric_ingest_log WHERE seq = %s" % seq)
            got, _ = self.summary_rows(self.t0 - 6 * HOUR, self.t0)
            self.assertNotEqual(got, want, "the wrong rows were not read once the rollups were marked current")
            # A full rebuild under way (the log lost rows): rebuilt up to an hour before `behind`.
            psql(self.db, "DELETE FROM tb_metric_ingest_log_intact")
            psql(self.db, "INSERT INTO tb_metric_rollup_progress (rebuilt_before) VALUES (%s)" % at(behind - HOUR))
            check_all()
            # No progress yet: everything within raw retention from the raw points.
            psql(self.db, "DELETE FROM tb_metric_rollup_progress")
            check_all()
        finally:
            psql(self.db, "DELETE FROM tb_metric_ingest_log WHERE seq = %s" % seq)
            psql(self.db, "DELETE FROM tb_metric_rollup_progress")
            psql(self.db, "INSERT INTO tb_metric_ingest_log_intact DEFAULT VALUES ON CONFLICT DO NOTHING")
            for table, width in tables:
                psql(self.db, corrupt % (table, -1000000, -1000, -500, width, at(behind), EPOCH))

    # ---- through RecordMetrics ----

    def test_recorded_points_are_queryable(self):
        t = self.t0 - 90
        points = [metrics_pb2.MetricPoint(time=ts(t + i), metric_name="recorded.latency", endpoint="/api/rec",
                                          method="PUT", status_code=wrappers_pb2.Int32Value(value=201),
                                          p50=wrappers_pb2.DoubleValue(value=10 + i),
                                          p95=wrappers_pb2.DoubleValue(value=20 + i), request_count=10 * i,
                                          error_count=i, tags={"zone": "a"}, metric_type=G.METRIC_TYPE_COUNTER)
                  for i in range(1, 4)]
        r = self.call("RecordMetrics", metrics_pb2.RecordMetricsRequest(points=points))
        self.assertEqual(r.inserted_count, 3)
        got = self.call("ListMetricPoints", metrics_pb2.ListMetricPointsRequest(
            time_range=time_range(t, t + 10), filter=G.MetricFilter(metric_names=["recorded.latency"]))).points
        self.assertEqual([(p.time.seconds, p.p95.value, p.request_count, p.status_code.value, dict(p.tags),
                           p.metric_type) for p in got],
                         [(t + i, 20.0 + i, 10 * i, 201, {"zone": "a"}, G.METRIC_TYPE_COUNTER) for i in (3, 2, 1)])
        q = self.query(t, t + 10, [G.METRIC_STATISTIC_ERROR_RATE], granularity=G.GRANULARITY_RAW,
                       filter=G.MetricFilter(metric_names=["recorded.latency"]))
        self.assertEqual([opt(p, "value") for p in q.series[0].points], [10.0, 10.0, 10.0])


class RollupsOfTheJob(unittest.TestCase):
    """The rollups as the maintenance job makes them from recorded points answer
    QueryMetrics and GetPerformanceTrend exactly as the raw points do."""

    @classmethod
    def setUpClass(cls):
        cls.db = harness.fresh_database("itest_metrics_rollup_query")
        cls.srv = harness.Monitord(cls.db, extra_args=["--metrics-rollup-interval-ms", "1000"])
        cls.srv.wait_serving()
        cls.stub = metrics_pb2_grpc.MetricsServiceStub(cls.srv.channel)
        cls.md = cls.srv.auth()

    @classmethod
    def tearDownClass(cls):
        MetricsQuery.tearDownClass.__func__(cls)

    def call(self, method, request):
        return getattr(self.stub, method)(request, metadata=self.md, timeout=30)

    def test_job_rollups_answer_exactly(self):
        rnd = random.Random(11)
        end = int(time.time()) - 60
        start = end - 5 * HOUR
        points = []
        for i, t in enumerate(range(start, end, 37)):
            for e in ("/api/a", "/api/b"):
                p50 = round(rnd.uniform(1, 100), 2)
                req = rnd.randint(0, 500)
                points.append(metrics_pb2.MetricPoint(
                    time=ts(t + rnd.random()), metric_name="job.latency", endpoint=e,
                    p50=wrappers_pb2.DoubleValue(value=p50), p95=wrappers_pb2.DoubleValue(value=round(p50 * 3, 2)),
                    request_count=req, error_count=rnd.randint(0, req // 5) if req else 0))
        seq = 0
        for chunk in range(0, len(points), 400):
            seq = max(seq, self.call("RecordMetrics", metrics_pb2.RecordMetricsRequest(
                points=points[chunk:chunk + 400])).sequence)
        deadline = time.time() + 60
        while int(psql(self.db, "SELECT watermark_seq FROM tb_metric_rollup_state")[0][0]) < seq:
            self.assertLess(time.time(), deadline, "the rollup job did not catch up")
            time.sleep(0.2)
        stats = [G.METRIC_STATISTIC_P50, G.METRIC_STATISTIC_P95, G.METRIC_STATISTIC_REQUEST_COUNT,
                 G.METRIC_STATISTIC_ERROR_COUNT, G.METRIC_STATISTIC_ERROR_RATE]
        # By endpoint (the per-endpoint rollups) and over both endpoints (the rollups summed over endpoints).
        for gran, width, by in ((G.GRANULARITY_FIVE_MINUTES, 300, True), (G.GRANULARITY_ONE_HOUR, HOUR, True),
                                (G.GRANULARITY_FIVE_MINUTES, 300, False), (G.GRANULARITY_ONE_HOUR, HOUR, False)):
            r = self.call("QueryMetrics", metrics_pb2.QueryMetricsRequest(
                time_range=time_range(start, end), statistics=stats, granularity=gran,
                group_by=["endpoint"] if by else []))
            lo, hi = (start // width) * width, ((end + width - 1) // width) * width
            rows = psql(self.db, "SELECT %s, (extract(epoch FROM date_bin('%d seconds', time, %s)) * 1000000)"
                        "::bigint, count(*), avg(p50)::float8, avg(p95)::float8, sum(request_count)::float8,"
                        " sum(error_count)::float8, (sum(error_count)::numeric / nullif(sum(request_count), 0)"
                        " * 100)::float8 FROM tb_performance_metric WHERE time >= %s AND time < %s"
                        " GROUP BY 1, 2 ORDER BY 1, 2" % ("endpoint" if by else "'*'", width, EPOCH, at(lo), at(hi)))
            want = {}
            for row in rows:
                for si, st in enumerate(stats):
                    want.setdefault((row[0], st), {})[int(row[1])] = (num(row[3 + si]), int(row[2]))
            got = {(s.labels["endpoint"] if by else "*", s.statistic): {
                p.time.ToMicroseconds(): (opt(p, "value"), p.sample_count) for p in s.points if p.sample_count}
                for s in r.series}
            self.assertEqual(got, want, (gran, by))
        # The seed's trend query on the job's hourly rollup.
        seed = psql(self.db, "SELECT (extract(epoch FROM bucket) * 1000000)::bigint, endpoint, avg_p50, avg_p95,"
                    " total_requests, total_errors, ROUND((total_errors::numeric / NULLIF(total_requests, 0) * 100),"
                    " 2) FROM tb_performance_metric_hourly WHERE bucket >= %s AND bucket < %s"
                    " AND endpoint = '/api/a' ORDER BY bucket DESC" % (at(start), at(end)))
        r = self.call("GetPerformanceTrend", metrics_pb2.GetPerformanceTrendRequest(
            time_range=time_range(start, end), endpoint="/api/a"))
        self.assertEqual([[b.bucket.ToMicroseconds(), b.endpoint, opt(b, "avg_p50"), opt(b, "avg_p95"),
                           b.total_requests, b.total_errors, opt(b, "error_rate_percent")] for b in r.buckets],
                         [[int(w[0]), w[1], num(w[2]), num(w[3]), int(w[4]), int(w[5]), num(w[6])] for w in seed])
        self.assertGreaterEqual(len(seed), 4)


if __name__ == "__main__":
    harness.main()
