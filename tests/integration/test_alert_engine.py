"""The alert evaluator end to end: points go in through RecordMetrics
(python3-grpcio), rules are written to tb_alert_rule with psql (and
announced on "mon_alert_rules" as the rule RPCs do), and the alerts the
evaluator raises are read back from PostgreSQL and through
PreviewAlertRule.

Covered: every comparison operator, the pending period (duration_minutes
0 and 1), auto-resolve, the suppression window, the hourly cap (SUPPRESSED
with a reason, never dropped), escalation (next_escalation_at is moved into
the past with psql instead of waiting a minute per level), testing rules,
silences (and the activation of suppressed alerts when a silence ends or
a testing rule is enabled), scope groups, a restart with a pending and a
firing alert, two replicas on one database, event-driven evaluation (an
alert well before the rule's next periodic evaluation), a rule made with
CreateAlertRule, alerts through GetAlert, ListAlerts and WatchAlerts,
alert history retention and PreviewAlertRule.
"""

import json
import subprocess
import threading
import time
import unittest

import grpc
from google.protobuf import timestamp_pb2, wrappers_pb2

import harness

harness.api_stubs()
from monitoring.v1 import alerts_pb2, alerts_pb2_grpc, common_pb2, metrics_pb2, metrics_pb2_grpc  # noqa: E402

D = wrappers_pb2.DoubleValue
TICK_ARGS = ["--alert-tick-ms", "200"]


def psql(conninfo, sql):
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql],
                       check=True, capture_output=True, text=True)
    return [line.split("\t") for line in r.stdout.splitlines() if line != ""]


def lit(value):
    """A SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


_last_us = [0]
_clock = threading.Lock()


def now_ts():
    """The current time as a Timestamp, strictly increasing (points of one metric and endpoint need distinct times)."""
    with _clock:
        us = max(int(time.time() * 1e6), _last_us[0] + 1)
        _last_us[0] = us
    t = timestamp_pb2.Timestamp()
    t.FromMicroseconds(us)
    return t


def point(name, p95=10.0, endpoint="/api/orders", **kw):
    p = metrics_pb2.MetricPoint(time=now_ts(), metric_name=name, endpoint=endpoint, method="GET",
                                request_count=kw.pop("requests", 100), error_count=kw.pop("errors", 0))
    p.p95.CopyFrom(D(value=p95))
    for k, v in kw.items():
        if k == "tags":
            p.tags.update(v)
        else:
            getattr(p, k).CopyFrom(v)
    return p


def wait_for(what, fn, timeout=20, interval=0.05):
    deadline = time.time() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("timed out after %ss waiting for %s (last: %r)" % (timeout, what, value))
        time.sleep(interval)


def accept_key(srv, key):
    """Waits until srv (a replica or a restarted server) accepts an API key made on its database."""
    who = harness.raw_unary(srv.channel, "/monitoring.v1.AccessService/GetCallerIdentity")
    deadline = time.time() + 30
    while True:
        try:
            who(b"", timeout=5, metadata=(("authorization", "Bearer " + key),))
            srv._admin_key = key
            return
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAUTHENTICATED or time.time() > deadline:
                raise
            time.sleep(0.05)


class AlertEngineTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.db = harness.fresh_database("itest_alert_engine")
        cls.srv = harness.Monitord(cls.db, TICK_ARGS)
        cls.srv.wait_serving()
        cls.key = cls.srv.admin_key()
        cls.servers = [cls.srv]

    @classmethod
    def tearDownClass(cls):
        for srv in cls.servers:
            srv.stop_clean()

    # ---- helpers ----

    def md(self):
        return (("authorization", "Bearer " + self.key),)

    def record(self, points, srv=None):
        stub = metrics_pb2_grpc.MetricsServiceStub((srv or self.srv).channel)
        stub.RecordMetrics(metrics_pb2.RecordMetricsRequest(points=points), metadata=self.md(), timeout=30)

    def sql(self, text):
        return psql(self.db, text)

    def rule(self, metric, op, threshold, stat="p95", agg=None, duration=0, interval=10, auto_resolve=True,
             suppress=None, cap=None, status="enabled", group_by=None, text_match=None, channels=(),
             recipients=None, policy=None, escalation_delay=None, tags=None):
        """Writes a rule as the rule RPCs store it (statistic, aggregation and text_match in scope)."""
        rid = "rule-" + metric
        scope = {"statistic": stat}
        if agg:
            scope["aggregation"] = agg
        if group_by:
            scope["group_by"] = list(group_by)
        if text_match:
            scope["text_match"] = {"field": text_match[0], "substring": text_match[1]}
        chans = "ARRAY[%s]::text[]" % ", ".join(lit(c) for c in channels) if channels else "'{}'::text[]"
        self.sql("INSERT INTO tb_alert_rule (id, name, severity, status, metric_name, comparison_operator,"
                 " threshold, duration_minutes, evaluation_interval, scope, notification_channels,"
                 " notification_recipients, auto_resolve, suppress_duration, max_alerts_per_hour,"
                 " escalation_policy_id, escalation_delay, tags, created_by) VALUES (%s, %s, 'critical', %s, %s,"
                 " %s, %s, %s, %s, %s::jsonb, %s, %s::jsonb, %s, %s, %s, %s, %s, %s::jsonb, 'itest');"
                 " SELECT pg_notify('mon_alert_rules', %s)"
                 % (lit(rid), lit("rule on " + metric), lit(status), lit(metric), lit(op), lit(threshold),
                    lit(duration), lit(interval), lit(json.dumps(scope)), chans, lit(json.dumps(recipients or {})),
                    lit(auto_resolve), lit(suppress), lit(cap), lit(policy), lit(escalation_delay),
                    lit(json.dumps(tags or {})), lit(rid)))
        time.sleep(0.5)  # the engines reload their rule map on the NOTIFY
        return rid

    def alerts(self, rid):
        """The rule's alerts, oldest first, as dicts."""
        cols = ["id", "status", "suppression_reason", "silence_id", "current_value", "group_key", "labels",
                "escalation_level", "escalated", "next_escalation", "resolution_note", "condition_since",
                "triggered_at"]
        rows = self.sql("SELECT id, status, coalesce(suppression_reason, ''), coalesce(silence_id, ''),"
                        " current_value::float8, group_key, labels::text, escalation_level,"
                        " escalated_at IS NOT NULL, coalesce(extract(epoch FROM next_escalation_at - now())::int::text,"
                        " ''), coalesce(resolution_note, ''), extract(epoch FROM condition_since)::numeric(20,6),"
                        " extract(epoch FROM triggered_at)::numeric(20,6)"
                        " FROM tb_alert WHERE alert_rule_id = %s ORDER BY created_at, id" % lit(rid))
        return [dict(zip(cols, r)) for r in rows]

    def statuses(self, rid):
        return [(a["status"], a["suppression_reason"]) for a in self.alerts(rid)]

    def wait_statuses(self, rid, expected, timeout=20):
        return wait_for("%s alerts %r" % (rid, expected), lambda: self.statuses(rid) == expected and
                        self.alerts(rid), timeout)

    def outbox(self, alert_id):
        return self.sql("SELECT trigger, escalation_level, channel, recipient FROM tb_notification_outbox"
                        " WHERE alert_id = %s ORDER BY created_at, id" % lit(alert_id))

    def start_replica(self):
        srv = harness.Monitord(self.db, TICK_ARGS)
        self.servers.append(srv)
        srv.wait_serving()
        accept_key(srv, self.key)
        return srv

    # ---- the tests ----

    def test_comparison_operators(self):
        # (operator, threshold, value that meets it, value that does not)
        cases = [("gt", 100, 150.0, 100.0), ("gte", 100, 100.0, 99.9), ("lt", 50, 49.0, 50.0),
                 ("lte", 50, 50.0, 50.1), ("eq", 42, 42.0, 42.1), ("ne", 42, 41.0, 42.0)]
        rules = []
        for op, thr, hit, miss in cases:
            rules.append((self.rule("op_%s_hit" % op, op, thr), "op_%s_hit" % op, hit, True))
            rules.append((self.rule("op_%s_miss" % op, op, thr), "op_%s_miss" % op, miss, False))
        # Text operators count the points whose label contains the substring (threshold 0 means 1).
        for op, hit_ep, miss_ep in [("contains", "/api/checkout", "/api/orders"),
                                    ("not-contains", "/api/orders", "/api/checkout")]:
            name = op.replace("-", "_")
            rules.append((self.rule("op_%s_hit" % name, op, 0, text_match=("endpoint", "checkout")),
                          "op_%s_hit" % name, hit_ep, True))
            rules.append((self.rule("op_%s_miss" % name, op, 0, text_match=("endpoint", "checkout")),
                          "op_%s_miss" % name, miss_ep, False))
        pts = []
        for rid, metric, value, _ in rules:
            if isinstance(value, str):
                pts.append(point(metric, endpoint=value))
            else:
                pts.append(point(metric, p95=value))
        self.record(pts)
        for rid, metric, value, is_hit in rules:
            if is_hit:
                got = self.wait_statuses(rid, [("active", "")])
                if not isinstance(value, str):
                    self.assertAlmostEqual(float(got[0]["current_value"]), value, 3)
        time.sleep(1.0)
        for rid, metric, value, is_hit in rules:
            if not is_hit:
                self.assertEqual(self.alerts(rid), [], rid)

    def test_pending_period_and_restart(self):
        # duration 1: PENDING while the condition holds for less than a minute, ACTIVE after it; a
        # restart of monitord in between keeps the pending alert (same id, same condition_since), and
        # a firing alert of another rule is neither lost nor raised twice.
        pending = self.rule("pending_1m", "gt", 100, duration=1)
        firing = self.rule("firing_0m", "gt", 100, duration=0)
        self.record([point("pending_1m", p95=500.0), point("firing_0m", p95=500.0)])
        first = self.wait_statuses(pending, [("pending", "")])[0]
        fired = self.wait_statuses(firing, [("active", "")])[0]
        started = time.time()
        srv = self.srv
        self.assertEqual(srv.stop(), 0, srv.read_log()[-4000:])
        restarted = harness.Monitord(self.db, TICK_ARGS)
        self.servers.append(restarted)
        restarted.wait_serving()
        accept_key(restarted, self.key)
        type(self).srv = restarted
        # Keep the condition true (the window is 10 s) until the minute has passed.
        while time.time() - started < 80:
            self.record([point("pending_1m", p95=500.0), point("firing_0m", p95=500.0)])
            if self.statuses(pending) == [("active", "")]:
                break
            time.sleep(2)
        got = self.alerts(pending)
        self.assertEqual([(a["status"], a["id"], a["condition_since"]) for a in got],
                         [("active", first["id"], first["condition_since"])])
        self.assertGreaterEqual(float(got[0]["triggered_at"]) - float(got[0]["condition_since"]), 59.0)
        self.assertEqual([(a["status"], a["id"]) for a in self.alerts(firing)], [("active", fired["id"])])
        events = self.sql("SELECT kind, status FROM tb_alert_event WHERE alert_id = %s ORDER BY seq" %
                          lit(first["id"]))
        self.assertEqual(events[0], ["created", "pending"])
        self.assertIn(["status-changed", "active"], events)

    def test_pending_alert_resolves_when_condition_clears(self):
        rid = self.rule("pending_clears", "gt", 100, agg="last", duration=5, auto_resolve=False)
        self.record([point("pending_clears", p95=500.0)])
        self.wait_statuses(rid, [("pending", "")])
        self.record([point("pending_clears", p95=5.0)])
        got = self.wait_statuses(rid, [("resolved", "")])
        self.assertEqual(got[0]["resolution_note"], "auto-resolved: condition cleared")

    def test_auto_resolve(self):
        on = self.rule("autoresolve_on", "gt", 100, agg="last", suppress=None)
        off = self.rule("autoresolve_off", "gt", 100, agg="last", auto_resolve=False)
        self.record([point("autoresolve_on", p95=500.0), point("autoresolve_off", p95=500.0)])
        self.wait_statuses(on, [("active", "")])
        self.wait_statuses(off, [("active", "")])
        self.record([point("autoresolve_on", p95=5.0), point("autoresolve_off", p95=5.0)])
        got = self.wait_statuses(on, [("resolved", "")])
        self.assertEqual(got[0]["resolution_note"], "auto-resolved: condition cleared")
        # Without auto_resolve the alert stays, its value follows the metric.
        wait_for("value refresh", lambda: float(self.alerts(off)[0]["current_value"]) == 5.0)
        self.assertEqual(self.statuses(off), [("active", "")])
        # The condition returns: a new alert (the resolved one is final).
        self.record([point("autoresolve_on", p95=600.0)])
        self.wait_statuses(on, [("resolved", ""), ("active", "")])

    def test_suppression_window(self):
        rid = self.rule("suppress_window", "gt", 100, agg="last", suppress=300)
        self.record([point("suppress_window", p95=500.0)])
        self.wait_statuses(rid, [("active", "")])
        self.record([point("suppress_window", p95=5.0)])
        self.wait_statuses(rid, [("resolved", "")])
        self.record([point("suppress_window", p95=500.0)])
        self.wait_statuses(rid, [("resolved", ""), ("suppressed", "suppress-window")])

    def test_hourly_cap_suppresses_and_keeps(self):
        rid = self.rule("hourly_cap", "gt", 100, agg="last", cap=2)
        expected = []
        for i in range(4):
            self.record([point("hourly_cap", p95=500.0)])
            state = ("active", "") if i < 2 else ("suppressed", "hourly-cap")
            self.wait_statuses(rid, expected + [state])
            self.record([point("hourly_cap", p95=5.0)])
            expected.append(("resolved", state[1]))  # a resolved alert keeps why it was suppressed
            self.wait_statuses(rid, expected)
        # Every alert is recorded: two notified, two suppressed by the cap, none dropped.
        self.assertEqual(len(self.alerts(rid)), 4)
        reasons = self.sql("SELECT count(*) FILTER (WHERE suppression_reason = 'hourly-cap') FROM tb_alert"
                           " WHERE alert_rule_id = %s" % lit(rid))
        self.assertEqual(reasons, [["2"]])

    def test_escalation(self):
        # escalation_delay and level delays are whole minutes; the test moves next_escalation_at into
        # the past with psql rather than waiting for each level.
        levels = [{"delay_minutes": 1, "channels": ["email"], "recipients": {"emails": ["oncall@example.com"]}},
                  {"delay_minutes": 2, "channels": ["slack"], "recipients": {"slack_channels": ["#ops"]}}]
        self.sql("INSERT INTO tb_escalation_policy (id, name, levels, created_by) VALUES ('pol-itest', 'itest',"
                 " %s::jsonb, 'itest')" % lit(json.dumps(levels)))
        rid = self.rule("escalates", "gt", 100, channels=["email"], recipients={"emails": ["team@example.com"]},
                        policy="pol-itest")
        self.record([point("escalates", p95=500.0)])
        alert = self.wait_statuses(rid, [("active", "")])[0]
        # First escalation after the policy's first level delay (no escalation_delay on the rule).
        self.assertTrue(30 <= int(alert["next_escalation"]) <= 60, alert)
        self.assertIn(["fired", "0", "email", "team@example.com"], self.outbox(alert["id"]))

        def escalate_now(level):
            self.sql("UPDATE tb_alert SET next_escalation_at = now() - interval '1 second' WHERE id = %s" %
                     lit(alert["id"]))
            return wait_for("escalation level %d" % level,
                            lambda: [a for a in self.alerts(rid) if a["escalation_level"] == str(level)])[0]

        a1 = escalate_now(1)
        self.assertEqual(a1["escalated"], "t")
        self.assertTrue(90 <= int(a1["next_escalation"]) <= 120, a1)  # the next level's delay
        self.assertIn(["escalated", "1", "email", "oncall@example.com"], self.outbox(alert["id"]))
        a2 = escalate_now(2)
        self.assertEqual(a2["next_escalation"], "")  # last level, not repeated
        self.assertIn(["escalated", "2", "slack", "#ops"], self.outbox(alert["id"]))
        # Acknowledged alerts are not escalated.
        other = self.rule("escalates_ack", "gt", 100, policy="pol-itest", escalation_delay=5)
        self.record([point("escalates_ack", p95=500.0)])
        acked = self.wait_statuses(other, [("active", "")])[0]
        self.assertTrue(270 <= int(acked["next_escalation"]) <= 300, acked)  # the rule's escalation_delay
        self.sql("UPDATE tb_alert SET status = 'acknowledged', acknowledged_at = now(),"
                 " next_escalation_at = now() - interval '1 second' WHERE id = %s" % lit(acked["id"]))
        # Neither are suppressed ones (a silence pages nobody).
        self.sql("UPDATE tb_alert SET status = 'suppressed', suppression_reason = 'silence' WHERE id = (SELECT id"
                 " FROM tb_alert WHERE alert_rule_id = %s) ; UPDATE tb_alert SET next_escalation_at = now() -"
                 " interval '1 second' WHERE alert_rule_id = %s" % (lit(rid), lit(rid)))
        time.sleep(1.5)
        self.assertEqual(self.alerts(other)[0]["escalation_level"], "0")
        untouched = self.alerts(rid)[0]
        self.assertEqual(untouched["escalation_level"], "2")
        self.assertNotEqual(untouched["next_escalation"], "")  # not even looked at (an active one would be cleared)

    def test_testing_rule_records_but_notifies_nobody(self):
        rid = self.rule("testing_rule", "gt", 100, status="testing", channels=["email"],
                        recipients={"emails": ["team@example.com"]})
        self.record([point("testing_rule", p95=500.0)])
        got = self.wait_statuses(rid, [("suppressed", "rule-testing")])
        time.sleep(0.5)
        self.assertEqual(self.outbox(got[0]["id"]), [])
        # Enabled while the condition holds: the alert becomes ACTIVE and notifies.
        self.sql("UPDATE tb_alert_rule SET status = 'enabled' WHERE id = %s; SELECT pg_notify('mon_alert_rules', %s)"
                 % (lit(rid), lit(rid)))
        self.record([point("testing_rule", p95=500.0)])
        now = self.wait_statuses(rid, [("active", "")])
        self.assertEqual(now[0]["id"], got[0]["id"])
        self.assertEqual(self.outbox(got[0]["id"]), [["fired", "0", "email", "team@example.com"]])

    def test_rule_made_through_the_api(self):
        # CreateAlertRule announces the rule: a point recorded right after it raises the alert at once;
        # disabling it stops the evaluation.
        stub = alerts_pb2_grpc.AlertsServiceStub(self.srv.channel)
        rule = alerts_pb2.AlertRule(name="made through the api", metric_name="api_made",
                                    statistic=common_pb2.METRIC_STATISTIC_ERROR_RATE,
                                    comparison_operator=common_pb2.COMPARISON_OPERATOR_GTE, threshold=10,
                                    evaluation_interval=10, duration_minutes=wrappers_pb2.Int32Value(value=0),
                                    severity=common_pb2.SEVERITY_LEVEL_ERROR,
                                    notification_channels=[common_pb2.NOTIFICATION_CHANNEL_EMAIL],
                                    notification_recipients=alerts_pb2.NotificationRecipients(
                                        emails=["oncall@example.com"]))
        rid = stub.CreateAlertRule(alerts_pb2.CreateAlertRuleRequest(rule=rule), metadata=self.md(),
                                   timeout=10).rule.id
        # ERROR_RATE over the window: SUM(error_count) / SUM(request_count) * 100 = 30 / 200 = 15 %.
        self.record([point("api_made", requests=100, errors=25, endpoint="/a"),
                     point("api_made", requests=100, errors=5, endpoint="/b")])
        got = self.wait_statuses(rid, [("active", "")])
        self.assertAlmostEqual(float(got[0]["current_value"]), 15.0, 3)
        self.assertEqual(self.outbox(got[0]["id"]), [["fired", "0", "email", "oncall@example.com"]])
        stub.SetAlertRuleStatus(alerts_pb2.SetAlertRuleStatusRequest(
            rule_id=rid, status=common_pb2.ALERT_RULE_STATUS_DISABLED), metadata=self.md(), timeout=10)
        wait_for("resolution by disabling", lambda: self.statuses(rid) == [("resolved", "")])
        self.record([point("api_made", requests=100, errors=50)])
        time.sleep(1.0)
        self.assertEqual(self.statuses(rid), [("resolved", "")])

    def test_silence(self):
        rid = self.rule("silenced", "gt", 100, channels=["email"], recipients={"emails": ["team@example.com"]})
        self.sql("INSERT INTO tb_silence (id, alert_rule_ids, ends_at, comment, created_by) VALUES"
                 " ('sil-itest', ARRAY[%s], now() + interval '1 hour', 'maintenance', 'itest')" % lit(rid))
        self.record([point("silenced", p95=500.0)])
        got = self.wait_statuses(rid, [("suppressed", "silence")])
        self.assertEqual(got[0]["silence_id"], "sil-itest")
        self.assertEqual(self.outbox(got[0]["id"]), [])
        stub = alerts_pb2_grpc.AlertsServiceStub(self.srv.channel)

        def preview():
            self.record([point("silenced", p95=500.0)])  # data in the window
            e = stub.PreviewAlertRule(alerts_pb2.PreviewAlertRuleRequest(rule_id=rid), metadata=self.md(),
                                      timeout=10).evaluations[0]
            return e.would_be_status, e.would_be_suppression_reason

        self.assertEqual(preview(), (common_pb2.ALERT_STATUS_SUPPRESSED, alerts_pb2.SUPPRESSION_REASON_SILENCE))
        # Once the silence ends, the alert (still firing) becomes ACTIVE and notifies.
        self.sql("UPDATE tb_silence SET ends_at = now(), expired_by = 'itest' WHERE id = 'sil-itest'")
        self.assertEqual(preview(), (common_pb2.ALERT_STATUS_ACTIVE, alerts_pb2.SUPPRESSION_REASON_UNSPECIFIED))
        now = self.wait_statuses(rid, [("active", "")])
        self.assertEqual(now[0]["id"], got[0]["id"])
        self.assertEqual(now[0]["silence_id"], "")
        self.assertEqual(self.outbox(got[0]["id"]), [["fired", "0", "email", "team@example.com"]])

    def test_event_driven_evaluation(self):
        # An hour between periodic evaluations: only the recorded point can raise the alert in time.
        rid = self.rule("event_driven", "gt", 100, agg="last", interval=3600)
        wait_for("first periodic evaluation", lambda: self.sql(
            "SELECT 1 FROM tb_alert_rule WHERE id = %s AND last_evaluated_at IS NOT NULL" % lit(rid)))
        open_sql = "SELECT status FROM tb_alert WHERE alert_rule_id = %s AND status <> 'resolved'" % lit(rid)
        delays = []
        for _ in range(10):
            self.record([point("event_driven", p95=500.0)])
            returned = time.time()
            wait_for("alert", lambda: self.sql(open_sql) == [["active"]], timeout=5, interval=0.01)
            # When the alert's change was committed, against when RecordMetrics returned (one clock).
            changed = self.sql("SELECT extract(epoch FROM e.changed_at) FROM tb_alert_event e JOIN tb_alert a"
                               " ON a.id = e.alert_id WHERE a.alert_rule_id = %s AND a.status = 'active'"
                               " AND e.kind = 'created'" % lit(rid))
            delays.append(float(changed[0][0]) - returned)
            self.record([point("event_driven", p95=5.0)])
            wait_for("resolution", lambda: self.sql(open_sql) == [], timeout=5, interval=0.01)
        delays.sort()
        print("RecordMetrics returned -> alert change committed (ms): %s" %
              ", ".join("%.1f" % (d * 1000) for d in delays))
        # With an hour between periodic evaluations, an alert within wait_for's 5 s can only come from
        # the recorded point. Speed itself is measured by bench/alerts, not asserted here.

    def test_alerts_through_the_api(self):
        # The evaluator's alerts as GetAlert, ListAlerts and WatchAlerts show them, and the time from
        # RecordMetrics returning to the change arriving on a WatchAlerts stream.
        rid = self.rule("through_api", "gt", 100, agg="last", group_by=["endpoint"], interval=3600)
        stub = alerts_pb2_grpc.AlertsServiceStub(self.srv.channel)
        stream = stub.WatchAlerts(alerts_pb2.WatchAlertsRequest(alert_rule_ids=[rid]), metadata=self.md(),
                                  timeout=120)
        events = []
        ready = threading.Event()
        arrived = threading.Condition()

        def read():
            try:
                for ev in stream:
                    if ev.WhichOneof("event") == "control" and \
                            ev.control.kind == common_pb2.STREAM_CONTROL_KIND_SNAPSHOT_COMPLETE:
                        ready.set()
                    elif ev.WhichOneof("event") == "change":
                        with arrived:
                            events.append((time.time(), ev.change))
                            arrived.notify_all()
            except grpc.RpcError:
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        self.assertTrue(ready.wait(30), "no SNAPSHOT_COMPLETE")
        delays = []
        for i in range(5):
            self.record([point("through_api", p95=500.0 + i, endpoint="/api/w%d" % i)])
            returned = time.time()
            with arrived:
                self.assertTrue(arrived.wait_for(lambda: any(
                    c.kind == alerts_pb2.ALERT_CHANGE_KIND_CREATED and c.alert.labels.get("endpoint") == "/api/w%d" % i
                    for _, c in events), timeout=10))
                at = [t for t, c in events if c.alert.labels.get("endpoint") == "/api/w%d" % i][0]
            delays.append(at - returned)
        stream.cancel()
        delays.sort()
        print("RecordMetrics returned -> WatchAlerts change (ms): %s" % ", ".join("%.1f" % (d * 1000) for d in delays))
        created = [c for _, c in events if c.kind == alerts_pb2.ALERT_CHANGE_KIND_CREATED]
        self.assertEqual(len(created), 5)
        a = created[0].alert
        self.assertEqual(a.status, common_pb2.ALERT_STATUS_ACTIVE)
        self.assertEqual(a.alert_rule_id, rid)
        self.assertEqual(a.metric_name, "through_api")
        self.assertEqual(a.threshold, 100)
        self.assertEqual(a.current_value, 500.0)
        self.assertEqual(dict(a.labels), {"endpoint": "/api/w0"})
        got = stub.GetAlert(alerts_pb2.GetAlertRequest(alert_id=a.id), metadata=self.md(), timeout=10).alert
        self.assertEqual((got.status, got.severity, got.rule_name), (common_pb2.ALERT_STATUS_ACTIVE,
                                                                     common_pb2.SEVERITY_LEVEL_CRITICAL,
                                                                     "rule on through_api"))
        listed = stub.ListAlerts(alerts_pb2.ListAlertsRequest(alert_rule_ids=[rid]), metadata=self.md(), timeout=10)
        self.assertEqual(sorted(x.labels["endpoint"] for x in listed.alerts), ["/api/w%d" % i for i in range(5)])

    def test_two_replicas_raise_each_alert_once(self):
        other = self.start_replica()
        rid = self.rule("replicas", "gt", 100, group_by=["endpoint"], interval=10)
        endpoints = ["/api/e%d" % i for i in range(6)]
        errors = []

        def feed(srv):
            try:
                for _ in range(10):
                    self.record([point("replicas", p95=500.0, endpoint=e) for e in endpoints], srv=srv)
                    time.sleep(0.05)
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        threads = [threading.Thread(target=feed, args=(s,)) for s in (self.srv, other, self.srv, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        wait_for("one alert per endpoint", lambda: len(self.alerts(rid)) == len(endpoints))
        time.sleep(1.5)  # further evaluations on both replicas (events and ticks)
        got = self.alerts(rid)
        self.assertEqual(sorted(json.loads(a["labels"])["endpoint"] for a in got), endpoints)
        self.assertEqual({a["status"] for a in got}, {"active"})
        created = self.sql("SELECT count(*) FROM tb_alert_event WHERE alert_rule_id = %s AND kind = 'created'" %
                           lit(rid))
        self.assertEqual(created, [[str(len(endpoints))]])
        self.assertEqual(other.stop(), 0, other.read_log()[-4000:])

    def test_retention(self):
        # Alert history older than alert-retention-days (90) goes: resolved alerts with their deliveries,
        # and change events. Open alerts stay, however old. A replica runs retention 5 s after it starts.
        rid = self.rule("retention", "gt", 100, interval=3600)
        rows = [("alt-ret-old", "resolved", "100 days"), ("alt-ret-new", "resolved", "1 day"),
                ("alt-ret-open", "active", "100 days")]
        for aid, status, age in rows:
            self.sql("INSERT INTO tb_alert (id, alert_rule_id, status, severity, message, current_value, threshold,"
                     " triggered_at, resolved_at, group_key) VALUES (%s, %s, %s, 'critical', 'old', 1, 1,"
                     " now() - interval %s, CASE WHEN %s = 'resolved' THEN now() - interval %s END, %s)"
                     % (lit(aid), lit(rid), lit(status), lit(age), lit(status), lit(age), lit(aid)))
        self.sql("INSERT INTO tb_notification_outbox (id, alert_id, channel, recipient, trigger, idempotency_key,"
                 " payload) VALUES ('ntf-ret-old', 'alt-ret-old', 'email', 'a@example.com', 'fired', 'ret-old', '{}')")
        self.sql("INSERT INTO tb_alert_event (seq, alert_id, alert_rule_id, kind, status, severity, changed_at,"
                 " payload) VALUES (nextval('seq_alert_event'), 'alt-ret-old', %s, 'created', 'active', 'critical',"
                 " now() - interval '100 days', ''), (nextval('seq_alert_event'), 'alt-ret-new', %s, 'created',"
                 " 'active', 'critical', now() - interval '1 day', '')" % (lit(rid), lit(rid)))
        other = self.start_replica()
        wait_for("retention", lambda: not self.sql("SELECT 1 FROM tb_alert WHERE id = 'alt-ret-old'"), timeout=30)
        self.assertEqual(self.sql("SELECT id FROM tb_alert WHERE alert_rule_id = %s ORDER BY id" % lit(rid)),
                         [["alt-ret-new"], ["alt-ret-open"]])
        self.assertEqual(self.sql("SELECT count(*) FROM tb_notification_outbox WHERE id = 'ntf-ret-old'"), [["0"]])
        self.assertEqual(self.sql("SELECT alert_id FROM tb_alert_event WHERE alert_rule_id = %s" % lit(rid)),
                         [["alt-ret-new"]])
        self.assertEqual(other.stop(), 0, other.read_log()[-4000:])

    def test_preview(self):
        rid = self.rule("preview", "gt", 100, group_by=["endpoint"], duration=5)
        self.record([point("preview", p95=500.0, endpoint="/a"), point("preview", p95=5.0, endpoint="/b")])
        self.wait_statuses(rid, [("pending", "")])
        stub = alerts_pb2_grpc.AlertsServiceStub(self.srv.channel)
        resp = stub.PreviewAlertRule(alerts_pb2.PreviewAlertRuleRequest(rule_id=rid), metadata=self.md(), timeout=10)
        by = {dict(e.labels)["endpoint"]: e for e in resp.evaluations}
        self.assertEqual(sorted(by), ["/a", "/b"])
        self.assertTrue(by["/a"].is_condition_met)
        self.assertEqual(by["/a"].current_value.value, 500.0)
        self.assertEqual(by["/a"].sample_count, 1)
        self.assertEqual(by["/a"].would_be_status, common_pb2.ALERT_STATUS_PENDING)
        self.assertFalse(by["/b"].is_condition_met)
        self.assertEqual(by["/b"].would_be_status, common_pb2.ALERT_STATUS_UNSPECIFIED)
        window = resp.window.end_time.ToMilliseconds() - resp.window.start_time.ToMilliseconds()
        self.assertEqual(window, 10000)
        # An inline rule with duration 0 would fire at once; the stored rule is untouched.
        inline = alerts_pb2.AlertRule(name="inline", metric_name="preview",
                                      comparison_operator=common_pb2.COMPARISON_OPERATOR_GT, threshold=100,
                                      statistic=common_pb2.METRIC_STATISTIC_P95, evaluation_interval=30,
                                      duration_minutes=wrappers_pb2.Int32Value(value=0))
        resp = stub.PreviewAlertRule(alerts_pb2.PreviewAlertRuleRequest(rule=inline), metadata=self.md(), timeout=10)
        self.assertEqual(len(resp.evaluations), 1)
        self.assertEqual(resp.evaluations[0].sample_count, 2)
        self.assertEqual(resp.evaluations[0].current_value.value, 252.5)
        self.assertEqual(resp.evaluations[0].would_be_status, common_pb2.ALERT_STATUS_ACTIVE)
        # Before the points: no data, no value.
        past = timestamp_pb2.Timestamp()
        past.FromSeconds(int(time.time()) - 3600)
        resp = stub.PreviewAlertRule(alerts_pb2.PreviewAlertRuleRequest(rule=inline, as_of=past), metadata=self.md(),
                                     timeout=10)
        self.assertEqual(len(resp.evaluations), 1)
        self.assertFalse(resp.evaluations[0].HasField("current_value"))
        self.assertEqual(resp.evaluations[0].sample_count, 0)
        # Errors.
        for req, code in [(alerts_pb2.PreviewAlertRuleRequest(), grpc.StatusCode.INVALID_ARGUMENT),
                          (alerts_pb2.PreviewAlertRuleRequest(rule_id="rule-nope"), grpc.StatusCode.NOT_FOUND),
                          (alerts_pb2.PreviewAlertRuleRequest(rule=alerts_pb2.AlertRule(name="x")),
                           grpc.StatusCode.INVALID_ARGUMENT)]:
            with self.assertRaises(grpc.RpcError) as cm:
                stub.PreviewAlertRule(req, metadata=self.md(), timeout=10)
            self.assertEqual(cm.exception.code(), code, cm.exception.details())


if __name__ == "__main__":
    harness.main()
