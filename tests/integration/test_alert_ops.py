"""AlertsService alert operations end to end, through python3-grpcio against
a real monitord (authentication on, an admin key from `monitord admin
bootstrap`). Rules, policies and alerts are written with psql, so these
tests depend on nothing but the alert store and the handlers under test:

- GetAlert: every column of the Alert message, the rule's name and metric,
  notifications_sent, labels and metadata decoded; NOT_FOUND naming the id;
- AcknowledgeAlert and ResolveAlert from every status: the legal
  transitions of alerts.proto change the alert, record the caller as
  acknowledged_by / resolved_by, write one audit event and one change
  event (increasing seq, a decodable AlertChange payload); the illegal
  ones are FAILED_PRECONDITION and write nothing; viewers read but may
  not change, and each change records the caller that made it;
- ListAlerts in the data model's "active alerts" order (the seed's SQL run
  with psql), the other orders, filters, default statuses, total_size,
  paging and tokens bound to their filters;
- EscalateAlert through a two-level policy: level, escalated_at,
  next_escalation_at, deliveries queued in the outbox, the last level and
  a rule without policy refused; AcknowledgeAlert skips what is pending;
- ResolveAlert queues "resolved" deliveries to the rule's channels for an
  alert that notified (ACTIVE, ACKNOWLEDGED; none for IN_APP, none for a
  rule in testing), idempotently keyed;
- ListAlertNotifications oldest first, paged, filtered;
- GetAlertStatistics against the seed's "alert statistics by rule" SQL,
  paged, with and without an explicit window."""

import itertools
import json
import os
import subprocess
import threading
import time
import unittest

import grpc
from google.protobuf import timestamp_pb2

import harness


harness.api_stubs()
from monitoring.v1 import access_pb2, access_pb2_grpc, alerts_pb2, alerts_pb2_grpc, common_pb2  # noqa: E402

SC = grpc.StatusCode
A = common_pb2
STATUS_OF = {"active": A.ALERT_STATUS_ACTIVE, "acknowledged": A.ALERT_STATUS_ACKNOWLEDGED,
             "resolved": A.ALERT_STATUS_RESOLVED, "suppressed": A.ALERT_STATUS_SUPPRESSED,
             "pending": A.ALERT_STATUS_PENDING}
SEVERITY_OF = {"debug": A.SEVERITY_LEVEL_DEBUG, "info": A.SEVERITY_LEVEL_INFO, "warning": A.SEVERITY_LEVEL_WARNING,
               "error": A.SEVERITY_LEVEL_ERROR, "fatal": A.SEVERITY_LEVEL_FATAL,
               "critical": A.SEVERITY_LEVEL_CRITICAL}
RULE_STATUS_OF = {"enabled": A.ALERT_RULE_STATUS_ENABLED, "disabled": A.ALERT_RULE_STATUS_DISABLED,
                  "testing": A.ALERT_RULE_STATUS_TESTING}
DAY = 86400

SEED_ACTIVE_ALERTS = """
SELECT
  a.id,
  a.message,
  a.severity,
  a.current_value,
  a.threshold,
  a.triggered_at,
  ar.name AS rule_name,
  ar.metric_name
FROM tb_alert a
JOIN tb_alert_rule ar ON a.alert_rule_id = ar.id
WHERE a.status = 'active'
ORDER BY
  CASE a.severity
    WHEN 'critical' THEN 1
    WHEN 'fatal' THEN 2
    WHEN 'error' THEN 3
    WHEN 'warning' THEN 4
    ELSE 5
  END,
  a.triggered_at DESC;
"""

SEED_STATISTICS = """
SELECT
  ar.id,
  ar.name,
  ar.status,
  COUNT(a.id) AS total_alerts,
  COUNT(a.id) FILTER (WHERE a.status = 'active') AS active_alerts,
  COUNT(a.id) FILTER (WHERE a.status = 'resolved') AS resolved_alerts,
  MAX(a.triggered_at) AS last_triggered,
  ROUND(AVG(EXTRACT(EPOCH FROM (a.resolved_at - a.triggered_at)) / 60), 2) AS avg_resolution_time_minutes
FROM tb_alert_rule ar
LEFT JOIN tb_alert a ON ar.id = a.alert_rule_id
  AND a.triggered_at >= NOW() - INTERVAL '30 days'
GROUP BY ar.id, ar.name, ar.status
ORDER BY total_alerts DESC;
"""


def psql(conninfo, sql):
    """Rows of sql as lists of text (unaligned, tuples only, tab-separated)."""
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql],
                       check=True, capture_output=True, text=True)
    return [line.split("\t") for line in r.stdout.splitlines() if line != ""]


def q(text):
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def us_of(ts):
    return ts.seconds * 1000000 + ts.nanos // 1000


def ts(seconds):
    t = timestamp_pb2.Timestamp()
    t.FromMicroseconds(int(round(seconds * 1000000)))
    return t


class AlertOps(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = harness.fresh_database("itest_alert_ops")
        cls.srv = harness.Monitord(cls.db)
        cls.srv.wait_serving()
        cls.stub = alerts_pb2_grpc.AlertsServiceStub(cls.srv.channel)
        cls.md = cls.srv.auth()
        who = access_pb2_grpc.AccessServiceStub(cls.srv.channel).GetCallerIdentity(
            access_pb2.GetCallerIdentityRequest(), metadata=cls.md, timeout=20)
        cls.caller = who.caller.id
        cls.counter = itertools.count(1)
        cls.now = time.time()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop_clean()

    # ---- helpers ----

    def sql(self, text):
        return psql(self.db, text)

    def call(self, method, request, timeout=20):
        return getattr(self.stub, method)(request, metadata=self.md, timeout=timeout)

    def assert_code(self, code, method, request, naming=None):
        with self.assertRaises(grpc.RpcError) as cm:
            self.call(method, request)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        if naming is not None:
            self.assertIn(naming, cm.exception.details())
        return cm.exception.details()

    def uid(self, prefix):
        return "%s-%d-%d" % (prefix, os.getpid(), next(self.counter))

    def make_policy(self, levels, repeat=False):
        pid = self.uid("pol")
        self.sql("INSERT INTO tb_escalation_policy (id, name, levels, is_repeat_last_level, created_by)"
                 " VALUES (%s, %s, %s::jsonb, %s, 'test')" % (q(pid), q("policy " + pid), q(json.dumps(levels)),
                                                              "true" if repeat else "false"))
        return pid

    def make_rule(self, status="enabled", severity="warning", channels=("email",), recipients=None, policy=None,
                  name=None):
        rid = self.uid("rule")
        recipients = recipients if recipients is not None else {"emails": ["oncall@example.com"]}
        # next_evaluation_at 'infinity': the evaluator never takes these rules.
        self.sql("INSERT INTO tb_alert_rule (id, name, severity, status, metric_name, comparison_operator, threshold,"
                 " notification_channels, notification_recipients, escalation_policy_id, created_by,"
                 " next_evaluation_at) VALUES (%s, %s, %s, %s, 'api.latency', 'gt', 500, %s::text[], %s::jsonb, %s,"
                 " 'test', 'infinity')"
                 % (q(rid), q(name or "rule " + rid), q(severity), q(status),
                    q("{" + ",".join('"%s"' % c for c in channels) + "}"), q(json.dumps(recipients)),
                    q(policy) if policy else "NULL"))
        return rid

    def make_alert(self, rule_id, status="active", severity="warning", age_s=60.0, resolved_after_s=None,
                   extra_cols=None):
        """An alert triggered age_s seconds before the test class started (plus a unique millisecond)."""
        aid = self.uid("alt")
        at = self.now - age_s - next(self.counter) / 1000.0
        cols = {"id": q(aid), "alert_rule_id": q(rule_id), "status": q(status), "severity": q(severity),
                "message": q("value above threshold"), "current_value": "612.5", "threshold": "500",
                "triggered_at": "to_timestamp(%.6f)" % at, "group_key": q(aid)}
        if status == "pending":
            cols["condition_since"] = "to_timestamp(%.6f)" % at
        if resolved_after_s is not None:
            cols["resolved_at"] = "to_timestamp(%.6f)" % (at + resolved_after_s)
        if status == "acknowledged":
            cols["acknowledged_at"] = "now()"
            cols["acknowledged_by"] = q("someone")
        cols.update(extra_cols or {})
        self.sql("INSERT INTO tb_alert (%s) VALUES (%s)" % (", ".join(cols), ", ".join(cols.values())))
        return aid

    def events(self, alert_id):
        return self.sql("SELECT seq, kind, status, coalesce(previous_status::text, ''), coalesce(actor, ''),"
                        " encode(payload, 'hex') FROM tb_alert_event WHERE alert_id = %s ORDER BY seq" % q(alert_id))

    def audit_rows(self, alert_id):
        return self.sql("SELECT action_type::text, user_id, module, coalesce(before_data->>'status', ''),"
                        " coalesce(after_data->>'status', ''), description FROM tb_audit_event"
                        " WHERE resource_type = 'alert' AND resource_id = %s ORDER BY time, id" % q(alert_id))

    def outbox(self, alert_id):
        return self.sql("SELECT channel::text, recipient, trigger, escalation_level, idempotency_key, status,"
                        " payload::text FROM tb_notification_outbox WHERE alert_id = %s"
                        " ORDER BY created_at, id" % q(alert_id))

    def list_all(self, method, request, field, page_size):
        """Every item of a paged list, and the number of pages."""
        items, pages, token = [], 0, ""
        while True:
            request.page_size = page_size
            request.page_token = token
            resp = self.call(method, request)
            items.extend(getattr(resp, field))
            pages += 1
            token = resp.next_page_token
            if not token:
                return items, pages, resp

    # ---- GetAlert ----

    def test_get_alert_every_column(self):
        rid = self.make_rule(severity="critical", name="Checkout latency")
        sent = [{"id": "ntf-1", "channel": "email", "recipient": "a@example.com", "status": "sent",
                 "attempt_count": 1, "created_at": "2026-11-25T10:00:00.000000Z",
                 "delivered_at": "2026-11-25T10:00:01.5+01:00", "idempotency_key": "k1", "escalation_level": 0,
                 "trigger": "fired", "response_status_code": 202}]
        aid = self.make_alert(rid, status="suppressed", severity="critical", extra_cols={
            "notifications_sent": q(json.dumps(sent)) + "::jsonb",
            "metadata": q(json.dumps({"group": {"endpoint": "/api/pay"}, "n": 3})) + "::jsonb",
            "labels": q(json.dumps({"endpoint": "/api/pay", "method": "POST"})) + "::jsonb",
            "suppression_reason": q("silence"), "silence_id": q("sil-1"), "escalation_level": "2",
            "escalated_at": "to_timestamp(1795600000)"})
        a = self.call("GetAlert", alerts_pb2.GetAlertRequest(alert_id=aid)).alert
        self.assertEqual((a.id, a.alert_rule_id, a.rule_name, a.metric_name), (aid, rid, "Checkout latency",
                                                                               "api.latency"))
        self.assertEqual((a.status, a.severity), (A.ALERT_STATUS_SUPPRESSED, A.SEVERITY_LEVEL_CRITICAL))
        self.assertEqual((a.current_value, a.threshold, a.message), (612.5, 500.0, "value above threshold"))
        self.assertEqual(a.suppression_reason, alerts_pb2.SUPPRESSION_REASON_SILENCE)
        self.assertEqual((a.silence_id, a.escalation_level, a.escalated_at.seconds), ("sil-1", 2, 1795600000))
        self.assertEqual(dict(a.labels), {"endpoint": "/api/pay", "method": "POST"})
        self.assertEqual(a.metadata["n"], 3)
        self.assertEqual(a.metadata["group"]["endpoint"], "/api/pay")
        self.assertEqual(len(a.notifications_sent), 1)
        d = a.notifications_sent[0]
        self.assertEqual((d.id, d.channel, d.recipient, d.status, d.attempt_count, d.trigger, d.idempotency_key),
                         ("ntf-1", A.NOTIFICATION_CHANNEL_EMAIL, "a@example.com", alerts_pb2.DELIVERY_STATUS_SENT,
                          1, "fired", "k1"))
        self.assertEqual(d.response_status_code.value, 202)
        self.assertEqual(us_of(d.delivered_at) - us_of(d.created_at), -3600 * 1000000 + 1500000)
        at = self.sql("SELECT (extract(epoch FROM triggered_at) * 1000000)::bigint FROM tb_alert WHERE id = %s"
                      % q(aid))[0][0]
        self.assertEqual(us_of(a.triggered_at), int(at))
        self.assertFalse(a.HasField("acknowledged_at") or a.HasField("resolved_at"))
        self.assertEqual((a.acknowledged_by, a.resolved_by, a.sequence), ("", "", 0))
        self.assert_code(SC.NOT_FOUND, "GetAlert", alerts_pb2.GetAlertRequest(alert_id="alt-none"), naming="alt-none")
        self.assert_code(SC.INVALID_ARGUMENT, "GetAlert", alerts_pb2.GetAlertRequest(), naming="alert_id")

    # ---- AcknowledgeAlert / ResolveAlert ----

    def check_change_event(self, alert_id, previous, status, kind, resp_alert, events_before):
        events = self.events(alert_id)
        self.assertEqual(len(events), events_before + 1)
        seq, ekind, estatus, eprev, actor, payload = events[-1]
        self.assertEqual((ekind, estatus, eprev, actor), (kind, status, previous, self.caller))
        if events_before:
            self.assertGreater(int(seq), int(events[-2][0]))
        change = alerts_pb2.AlertChange.FromString(bytes.fromhex(payload))
        self.assertEqual(change.actor, self.caller)
        self.assertEqual(change.previous_status, STATUS_OF[previous])
        self.assertEqual(change.alert.id, alert_id)
        self.assertEqual(change.alert.status, STATUS_OF[status])
        self.assertEqual(change.alert.sequence, 0)
        self.assertGreater(change.changed_at.seconds, 0)
        self.assertEqual(resp_alert.sequence, int(seq))
        self.assertEqual(self.call("GetAlert", alerts_pb2.GetAlertRequest(alert_id=alert_id)).alert.sequence,
                         int(seq))
        return change

    def test_transitions_from_every_status(self):
        legal = {("active", "ack"), ("suppressed", "ack"), ("active", "resolve"), ("suppressed", "resolve"),
                 ("acknowledged", "resolve")}
        rid = self.make_rule(status="testing")  # testing: nothing is queued on resolve
        for status in ("pending", "active", "suppressed", "acknowledged", "resolved"):
            for op in ("ack", "resolve"):
                with self.subTest(status=status, op=op):
                    extra = {"resolved_at": "now()"} if status == "resolved" else None
                    aid = self.make_alert(rid, status=status, extra_cols=extra)
                    note = "note %s %s" % (status, op)
                    method = "AcknowledgeAlert" if op == "ack" else "ResolveAlert"
                    request = (alerts_pb2.AcknowledgeAlertRequest if op == "ack" else alerts_pb2.ResolveAlertRequest)(
                        alert_id=aid, note=note)
                    if (status, op) not in legal:
                        details = self.assert_code(SC.FAILED_PRECONDITION, method, request)
                        self.assertIn(aid, details)
                        self.assertEqual(self.events(aid), [])
                        self.assertEqual(self.audit_rows(aid), [])
                        got = self.call("GetAlert", alerts_pb2.GetAlertRequest(alert_id=aid)).alert
                        self.assertEqual(got.status, STATUS_OF[status])
                        continue
                    a = getattr(self, "call")(method, request).alert
                    if op == "ack":
                        self.assertEqual(a.status, A.ALERT_STATUS_ACKNOWLEDGED)
                        self.assertEqual((a.acknowledged_by, a.acknowledgment_note), (self.caller, note))
                        self.assertTrue(a.HasField("acknowledged_at"))
                        self.assertEqual(a.suppression_reason, alerts_pb2.SUPPRESSION_REASON_UNSPECIFIED)
                        new = "acknowledged"
                    else:
                        self.assertEqual(a.status, A.ALERT_STATUS_RESOLVED)
                        self.assertEqual((a.resolved_by, a.resolution_note), (self.caller, note))
                        self.assertTrue(a.HasField("resolved_at"))
                        new = "resolved"
                    self.check_change_event(aid, status, new, "status-changed", a, 0)
                    audit = self.audit_rows(aid)
                    self.assertEqual(len(audit), 1)
                    self.assertEqual(audit[0][:5], ["execute", self.caller, "alerts", status, new])
                    self.assertEqual(self.outbox(aid), [])

    def test_acknowledge_then_resolve_records_both(self):
        rid = self.make_rule(status="testing")
        aid = self.make_alert(rid, status="active")
        a = self.call("AcknowledgeAlert", alerts_pb2.AcknowledgeAlertRequest(alert_id=aid, note="looking")).alert
        self.check_change_event(aid, "active", "acknowledged", "status-changed", a, 0)
        a = self.call("ResolveAlert", alerts_pb2.ResolveAlertRequest(alert_id=aid)).alert
        self.check_change_event(aid, "acknowledged", "resolved", "status-changed", a, 1)
        self.assertEqual((a.acknowledged_by, a.acknowledgment_note, a.resolved_by, a.resolution_note),
                         (self.caller, "looking", self.caller, ""))
        self.assertEqual([r[0] for r in self.audit_rows(aid)], ["execute", "execute"])
        self.assert_code(SC.FAILED_PRECONDITION, "ResolveAlert", alerts_pb2.ResolveAlertRequest(alert_id=aid))
        self.assertEqual(len(self.events(aid)), 2)

    def test_concurrent_acknowledgments_one_wins(self):
        rid = self.make_rule(status="testing")
        aid = self.make_alert(rid)
        results = []

        def ack(i):
            try:
                self.call("AcknowledgeAlert", alerts_pb2.AcknowledgeAlertRequest(alert_id=aid, note="n%d" % i))
                results.append("ok")
            except grpc.RpcError as e:
                results.append(e.code())

        threads = [threading.Thread(target=ack, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sorted(results, key=str), sorted(["ok"] + [SC.FAILED_PRECONDITION] * 5, key=str))
        self.assertEqual(len(self.events(aid)), 1)
        self.assertEqual(len(self.audit_rows(aid)), 1)

    def test_note_limits_and_unknown_ids(self):
        rid = self.make_rule(status="testing")
        aid = self.make_alert(rid)
        for method, req in (("AcknowledgeAlert", alerts_pb2.AcknowledgeAlertRequest),
                            ("ResolveAlert", alerts_pb2.ResolveAlertRequest),
                            ("EscalateAlert", alerts_pb2.EscalateAlertRequest)):
            self.assert_code(SC.INVALID_ARGUMENT, method, req(alert_id=aid, note="\u00e9" * 10001), naming="note")
            self.assert_code(SC.INVALID_ARGUMENT, method, req(note="x"), naming="alert_id")
            self.assert_code(SC.NOT_FOUND, method, req(alert_id="alt-missing"), naming="alt-missing")
        self.assertEqual(self.events(aid), [])
        a = self.call("AcknowledgeAlert", alerts_pb2.AcknowledgeAlertRequest(alert_id=aid, note="\u00e9" * 10000))
        self.assertEqual(len(a.alert.acknowledgment_note), 10000)

    def key_for(self, caller_id, role):
        """An API key of a new caller with role, once the server accepts it."""
        access = access_pb2_grpc.AccessServiceStub(self.srv.channel)
        access.CreateCaller(access_pb2.CreateCallerRequest(caller=access_pb2.Caller(
            id=caller_id, email=caller_id + "@example.com", role=role)), metadata=self.md, timeout=20)
        token = access.CreateApiKey(access_pb2.CreateApiKeyRequest(caller_id=caller_id, description="alert ops"),
                                    metadata=self.md, timeout=20).token
        md = (("authorization", "Bearer " + token),)
        deadline = time.time() + 30
        while True:
            try:
                access.GetCallerIdentity(access_pb2.GetCallerIdentityRequest(), metadata=md, timeout=5)
                return md
            except grpc.RpcError as e:
                if e.code() != SC.UNAUTHENTICATED or time.time() > deadline:
                    raise
                time.sleep(0.05)

    def test_roles_and_the_callers_identity(self):
        suffix = str(os.getpid())
        editor = self.key_for("oncall-" + suffix, A.CALLER_ROLE_EDITOR)
        viewer = self.key_for("watcher-" + suffix, A.CALLER_ROLE_VIEWER)
        rid = self.make_rule(status="testing")
        aid = self.make_alert(rid)
        # A viewer reads but cannot change.
        self.assertEqual(self.stub.GetAlert(alerts_pb2.GetAlertRequest(alert_id=aid), metadata=viewer,
                                            timeout=20).alert.id, aid)
        self.stub.ListAlerts(alerts_pb2.ListAlertsRequest(), metadata=viewer, timeout=20)
        self.stub.GetAlertStatistics(alerts_pb2.GetAlertStatisticsRequest(), metadata=viewer, timeout=20)
        for method, req in (("AcknowledgeAlert", alerts_pb2.AcknowledgeAlertRequest(alert_id=aid)),
                            ("ResolveAlert", alerts_pb2.ResolveAlertRequest(alert_id=aid)),
                            ("EscalateAlert", alerts_pb2.EscalateAlertRequest(alert_id=aid))):
            with self.assertRaises(grpc.RpcError) as cm:
                getattr(self.stub, method)(req, metadata=viewer, timeout=20)
            self.assertEqual(cm.exception.code(), SC.PERMISSION_DENIED, cm.exception.details())
        self.assertEqual(self.events(aid), [])
        # An editor acknowledges, the admin resolves: each is recorded as itself.
        a = self.stub.AcknowledgeAlert(alerts_pb2.AcknowledgeAlertRequest(alert_id=aid, note="mine"),
                                       metadata=editor, timeout=20).alert
        self.assertEqual(a.acknowledged_by, "oncall-" + suffix)
        a = self.call("ResolveAlert", alerts_pb2.ResolveAlertRequest(alert_id=aid)).alert
        self.assertEqual((a.acknowledged_by, a.resolved_by), ("oncall-" + suffix, self.caller))
        self.assertEqual([e[4] for e in self.events(aid)], ["oncall-" + suffix, self.caller])
        self.assertEqual([r[1] for r in self.audit_rows(aid)], ["oncall-" + suffix, self.caller])

    # ---- ListAlerts ----

    def test_list_matches_seed_active_alerts_order(self):
        rid = self.make_rule(status="testing")
        for sev in ("critical", "fatal", "error", "warning", "info", "debug", "critical", "warning"):
            self.make_alert(rid, severity=sev, age_s=3600)
        self.make_alert(rid, status="pending", severity="critical")
        self.make_alert(rid, status="resolved", severity="critical", resolved_after_s=5)
        seed = [r[0] for r in self.sql(SEED_ACTIVE_ALERTS)]
        got, pages, last = self.list_all("ListAlerts", alerts_pb2.ListAlertsRequest(statuses=[A.ALERT_STATUS_ACTIVE]),
                                         "alerts", 3)
        self.assertEqual([a.id for a in got], seed)
        self.assertGreaterEqual(len(seed), 8)
        self.assertEqual(pages, (len(seed) + 2) // 3)
        self.assertEqual(last.total_size, len(seed))
        # The explicit order is the same.
        again, _, _ = self.list_all("ListAlerts", alerts_pb2.ListAlertsRequest(
            statuses=[A.ALERT_STATUS_ACTIVE], order_by=alerts_pb2.ALERT_ORDER_SEVERITY_THEN_NEWEST), "alerts", 4)
        self.assertEqual([a.id for a in again], seed)
        # Every row as the seed shows it.
        rows = {r[0]: r for r in self.sql("SELECT a.id, ar.name, ar.metric_name, a.severity::text, a.message"
                                            " FROM tb_alert a JOIN tb_alert_rule ar ON a.alert_rule_id = ar.id")}
        for a in got:
            self.assertEqual([a.rule_name, a.metric_name, a.message], [rows[a.id][1], rows[a.id][2], rows[a.id][4]])
            self.assertEqual(a.severity, SEVERITY_OF[rows[a.id][3]])

    def test_list_defaults_orders_filters_and_tokens(self):
        rid = self.make_rule(status="testing")
        other = self.make_rule(status="testing")
        ids = {}
        for st in ("active", "acknowledged", "suppressed", "pending", "resolved"):
            ids[st] = self.make_alert(rid, status=st, severity="error", age_s=7200,
                                      extra_cols={"resolved_at": "now()"} if st == "resolved" else None)
        old = self.make_alert(rid, status="active", severity="info", age_s=40 * DAY)
        o = self.make_alert(other, status="active", severity="fatal", age_s=10)
        # Without statuses: active, acknowledged, suppressed (the seed's unresolved, PENDING excluded).
        mine, _, last = self.list_all("ListAlerts", alerts_pb2.ListAlertsRequest(alert_rule_ids=[rid]), "alerts", 2)
        self.assertEqual({a.id for a in mine}, {ids["active"], ids["acknowledged"], ids["suppressed"], old})
        self.assertEqual(last.total_size, 4)
        everything = self.sql("SELECT count(*) FROM tb_alert WHERE status IN ('active', 'acknowledged', 'suppressed')")
        self.assertEqual(self.call("ListAlerts", alerts_pb2.ListAlertsRequest(page_size=1)).total_size,
                         int(everything[0][0]))
        # Orders by time.
        both = alerts_pb2.ListAlertsRequest(alert_rule_ids=[rid, other], statuses=[A.ALERT_STATUS_ACTIVE])
        both.order_by = alerts_pb2.ALERT_ORDER_NEWEST
        newest, _, _ = self.list_all("ListAlerts", both, "alerts", 1)
        self.assertEqual([a.id for a in newest], [o, ids["active"], old])
        both.order_by = alerts_pb2.ALERT_ORDER_OLDEST
        oldest, _, _ = self.list_all("ListAlerts", both, "alerts", 2)
        self.assertEqual([a.id for a in oldest], [old, ids["active"], o])
        # Filters.
        r = self.call("ListAlerts", alerts_pb2.ListAlertsRequest(alert_rule_ids=[rid, other],
                                                                 severities=[A.SEVERITY_LEVEL_FATAL]))
        self.assertEqual([a.id for a in r.alerts], [o])
        r = self.call("ListAlerts", alerts_pb2.ListAlertsRequest(
            alert_rule_ids=[rid], statuses=[A.ALERT_STATUS_PENDING, A.ALERT_STATUS_RESOLVED]))
        self.assertEqual({a.id for a in r.alerts}, {ids["pending"], ids["resolved"]})
        window = common_pb2.TimeRange(start_time=ts(self.now - 30 * DAY))
        r = self.call("ListAlerts", alerts_pb2.ListAlertsRequest(alert_rule_ids=[rid], time_range=window))
        self.assertEqual({a.id for a in r.alerts}, {ids["active"], ids["acknowledged"], ids["suppressed"]})
        window = common_pb2.TimeRange(end_time=ts(self.now - 30 * DAY))
        r = self.call("ListAlerts", alerts_pb2.ListAlertsRequest(alert_rule_ids=[rid], time_range=window))
        self.assertEqual([a.id for a in r.alerts], [old])
        r = self.call("ListAlerts", alerts_pb2.ListAlertsRequest(alert_rule_ids=[rid], acknowledged_by="someone"))
        self.assertEqual([a.id for a in r.alerts], [ids["acknowledged"]])
        # Refusals.
        L = alerts_pb2.ListAlertsRequest
        self.assert_code(SC.INVALID_ARGUMENT, "ListAlerts", L(statuses=[A.ALERT_STATUS_UNSPECIFIED]), "statuses")
        self.assert_code(SC.INVALID_ARGUMENT, "ListAlerts", L(severities=[A.SEVERITY_LEVEL_UNSPECIFIED]), "severities")
        self.assert_code(SC.INVALID_ARGUMENT, "ListAlerts", L(page_size=-1), "page_size")
        self.assert_code(SC.INVALID_ARGUMENT, "ListAlerts",
                         L(time_range=common_pb2.TimeRange(start_time=ts(self.now), end_time=ts(self.now - 1))),
                         "time_range")
        token = self.call("ListAlerts", L(alert_rule_ids=[rid], page_size=1)).next_page_token
        self.assertTrue(token)
        self.assert_code(SC.INVALID_ARGUMENT, "ListAlerts", L(alert_rule_ids=[other], page_token=token), "page_token")
        self.assert_code(SC.INVALID_ARGUMENT, "ListAlerts",
                         L(alert_rule_ids=[rid], order_by=alerts_pb2.ALERT_ORDER_OLDEST, page_token=token),
                         "page_token")
        self.assert_code(SC.INVALID_ARGUMENT, "ListAlerts", L(page_token="garbage"), "page_token")

    # ---- EscalateAlert ----

    def test_escalate_through_policy_levels(self):
        pid = self.make_policy([
            {"delay_minutes": 5, "channels": ["email"], "recipients": {"emails": ["l1@example.com"]}},
            {"delay_minutes": 15, "channels": ["email", "sms", "in-app"],
             "recipients": {"emails": ["l2@example.com", "boss@example.com"], "phone_numbers": ["+4915112345678"],
                            "user_ids": ["u1"]}}])
        rid = self.make_rule(policy=pid, severity="critical")
        aid = self.make_alert(rid, status="active", severity="critical")
        r = self.call("EscalateAlert", alerts_pb2.EscalateAlertRequest(alert_id=aid, note="paging l1"))
        self.assertEqual(r.alert.escalation_level, 1)
        self.assertTrue(r.alert.HasField("escalated_at"))
        self.assertEqual([(d.channel, d.recipient, d.trigger, d.escalation_level) for d in r.queued],
                         [(A.NOTIFICATION_CHANNEL_EMAIL, "l1@example.com", "escalated", 1)])
        self.assertEqual(r.queued[0].idempotency_key, "%s:escalated:1:email:l1@example.com" % aid)
        self.check_change_event(aid, "active", "active", "updated", r.alert, 0)
        nxt = self.sql("SELECT round(extract(epoch FROM next_escalation_at - escalated_at)) FROM tb_alert"
                       " WHERE id = %s" % q(aid))[0][0]
        self.assertEqual(float(nxt), 15 * 60)
        r = self.call("EscalateAlert", alerts_pb2.EscalateAlertRequest(alert_id=aid))
        self.assertEqual(r.alert.escalation_level, 2)
        self.assertEqual(sorted((d.channel, d.recipient) for d in r.queued),
                         [(A.NOTIFICATION_CHANNEL_EMAIL, "boss@example.com"), (A.NOTIFICATION_CHANNEL_EMAIL,
                                                                                "l2@example.com"),
                          (A.NOTIFICATION_CHANNEL_SMS, "+4915112345678")])
        self.assertEqual(self.sql("SELECT next_escalation_at IS NULL FROM tb_alert WHERE id = %s" % q(aid))[0][0], "t")
        rows = self.outbox(aid)
        self.assertEqual(len(rows), 4)
        self.assertEqual(rows[0][:4], ["email", "l1@example.com", "escalated", "1"])
        self.assertEqual(sorted((r_[0], r_[2], r_[3]) for r_ in rows[1:]),
                         [("email", "escalated", "2"), ("email", "escalated", "2"), ("sms", "escalated", "2")])
        self.assertNotIn("in-app", [r_[0] for r_ in rows])
        body = json.loads(rows[0][6])
        self.assertEqual((body["id"], body["rule"]["id"], body["trigger"], body["level"], body["severity"]),
                         (aid, rid, "escalated", 1, "critical"))
        for key in ("status", "message", "value", "threshold", "labels", "triggered_at"):
            self.assertIn(key, body)
        self.assertEqual(len(self.call("GetAlert", alerts_pb2.GetAlertRequest(alert_id=aid)).alert.notifications_sent),
                         4)
        details = self.assert_code(SC.FAILED_PRECONDITION, "EscalateAlert",
                                   alerts_pb2.EscalateAlertRequest(alert_id=aid))
        self.assertIn("last level", details)
        audit = self.audit_rows(aid)
        self.assertEqual(len(audit), 2)
        self.assertIn("level 1", audit[0][5])
        self.assertEqual(len(self.events(aid)), 2)
        # Acknowledging stops the escalation: nothing pending is left.
        self.call("AcknowledgeAlert", alerts_pb2.AcknowledgeAlertRequest(alert_id=aid))
        left = self.sql("SELECT count(*) FROM tb_notification_outbox WHERE alert_id = %s"
                        " AND status IN ('pending', 'retrying')" % q(aid))[0][0]
        self.assertEqual(left, "0")
        self.assertEqual(self.sql("SELECT next_escalation_at IS NULL FROM tb_alert WHERE id = %s" % q(aid))[0][0], "t")
        self.assert_code(SC.FAILED_PRECONDITION, "EscalateAlert", alerts_pb2.EscalateAlertRequest(alert_id=aid))

    def test_escalate_refusals(self):
        no_policy = self.make_rule()
        aid = self.make_alert(no_policy)
        self.assertIn("no escalation policy", self.assert_code(SC.FAILED_PRECONDITION, "EscalateAlert",
                                                               alerts_pb2.EscalateAlertRequest(alert_id=aid)))
        pid = self.make_policy([{"delay_minutes": 1, "channels": ["email"],
                                 "recipients": {"emails": ["x@example.com"]}}])
        rid = self.make_rule(policy=pid)
        for status in ("pending", "acknowledged", "resolved"):
            aid = self.make_alert(rid, status=status)
            self.assert_code(SC.FAILED_PRECONDITION, "EscalateAlert", alerts_pb2.EscalateAlertRequest(alert_id=aid))
            self.assertEqual(self.events(aid), [])
        aid = self.make_alert(rid, status="suppressed")
        self.assertEqual(self.call("EscalateAlert", alerts_pb2.EscalateAlertRequest(alert_id=aid)).alert
                         .escalation_level, 1)

    # ---- ResolveAlert deliveries ----

    def test_resolve_queues_resolved_deliveries(self):
        rid = self.make_rule(channels=("email", "slack", "in-app"),
                             recipients={"emails": ["a@example.com", "b@example.com"], "slack_channels": ["#ops"],
                                         "user_ids": ["u1"]})
        aid = self.make_alert(rid, status="active")
        a = self.call("ResolveAlert", alerts_pb2.ResolveAlertRequest(alert_id=aid, note="fixed")).alert
        rows = self.outbox(aid)
        self.assertEqual(sorted((r[0], r[1], r[2], r[3], r[4]) for r in rows), [
            ("email", "a@example.com", "resolved", "0", "%s:resolved:0:email:a@example.com" % aid),
            ("email", "b@example.com", "resolved", "0", "%s:resolved:0:email:b@example.com" % aid),
            ("slack", "#ops", "resolved", "0", "%s:resolved:0:slack:#ops" % aid)])
        body = json.loads(rows[0][6])
        self.assertEqual((body["status"], body["trigger"], body["level"]), ("resolved", "resolved", 0))
        self.assertIn("resolved_at", body)
        self.assertEqual(len(a.notifications_sent), 3)
        # Acknowledged alerts were told too; a suppressed one told nobody, so nobody hears it resolved.
        acked = self.make_alert(rid, status="acknowledged")
        self.call("ResolveAlert", alerts_pb2.ResolveAlertRequest(alert_id=acked))
        self.assertEqual(len(self.outbox(acked)), 3)
        muted = self.make_alert(rid, status="suppressed")
        self.call("ResolveAlert", alerts_pb2.ResolveAlertRequest(alert_id=muted))
        self.assertEqual(self.outbox(muted), [])
        # A rule in testing notifies nobody.
        testing = self.make_rule(status="testing", channels=("email",))
        tid = self.make_alert(testing, status="active")
        self.call("ResolveAlert", alerts_pb2.ResolveAlertRequest(alert_id=tid))
        self.assertEqual(self.outbox(tid), [])

    # ---- ListAlertNotifications ----

    def test_list_notifications_paged_and_filtered(self):
        rid = self.make_rule(status="testing")
        aid = self.make_alert(rid)
        statuses = ["sent", "failed", "skipped", "sent", "pending"]
        for i, st in enumerate(statuses):
            self.sql("INSERT INTO tb_notification_outbox (id, alert_id, channel, recipient, trigger, status,"
                     " attempt_count, idempotency_key, payload, created_at, next_attempt_at, error_message,"
                     " response_status_code) VALUES (%s, %s, 'webhook', 'int-1', 'fired', %s, %d, %s, '{}',"
                     " to_timestamp(%d), 'infinity', %s, %s)"
                     % (q("ntf-%s-%d" % (aid, i)), q(aid), q(st), i, q("%s:%d" % (aid, i)), 1795600000 + i,
                        q("HTTP 503 from receiver") if st == "failed" else "NULL", "503" if st == "failed" else "NULL"))
        R = alerts_pb2.ListAlertNotificationsRequest
        got, pages, _ = self.list_all("ListAlertNotifications", R(alert_id=aid), "deliveries", 2)
        self.assertEqual(pages, 3)
        self.assertEqual([d.id for d in got], ["ntf-%s-%d" % (aid, i) for i in range(5)])
        self.assertEqual([d.attempt_count for d in got], list(range(5)))
        self.assertEqual(got[1].status, alerts_pb2.DELIVERY_STATUS_FAILED)
        self.assertEqual((got[1].error_message, got[1].response_status_code.value), ("HTTP 503 from receiver", 503))
        self.assertFalse(got[0].HasField("response_status_code"))
        self.assertEqual(got[0].created_at.seconds, 1795600000)
        sent, _, _ = self.list_all("ListAlertNotifications", R(alert_id=aid, statuses=[alerts_pb2.DELIVERY_STATUS_SENT]),
                                   "deliveries", 1)
        self.assertEqual([d.id for d in sent], ["ntf-%s-0" % aid, "ntf-%s-3" % aid])
        self.assert_code(SC.NOT_FOUND, "ListAlertNotifications", R(alert_id="alt-nope"), "alt-nope")
        self.assert_code(SC.INVALID_ARGUMENT, "ListAlertNotifications", R(), "alert_id")
        self.assert_code(SC.INVALID_ARGUMENT, "ListAlertNotifications",
                         R(alert_id=aid, statuses=[alerts_pb2.DELIVERY_STATUS_UNSPECIFIED]), "statuses")
        self.assert_code(SC.INVALID_ARGUMENT, "ListAlertNotifications", R(alert_id=aid, page_size=-5), "page_size")

    # ---- GetAlertStatistics ----

    def stats_rows(self, resp_rules):
        out = []
        for s in resp_rules:
            out.append((s.id, s.name, s.status, s.total_alerts, s.active_alerts, s.resolved_alerts,
                        us_of(s.last_triggered) if s.HasField("last_triggered") else None,
                        s.avg_resolution_time_minutes.value if s.HasField("avg_resolution_time_minutes") else None))
        return out

    def test_statistics_match_seed_query(self):
        busy = self.make_rule(name="busy")
        self.make_rule(status="disabled", name="silent")
        quiet = self.make_rule(status="testing", name="quiet")
        self.make_alert(busy, status="resolved", age_s=600, resolved_after_s=90)
        self.make_alert(busy, status="resolved", age_s=1200, resolved_after_s=301)
        self.make_alert(busy, status="active", age_s=30)
        self.make_alert(busy, status="active", age_s=31 * DAY)  # outside the window
        self.make_alert(quiet, status="suppressed", age_s=100)
        seed = []
        for r in self.sql(SEED_STATISTICS.replace("MAX(a.triggered_at)",
                                                  "(extract(epoch FROM MAX(a.triggered_at)) * 1000000)::bigint")):
            seed.append((r[0], r[1], RULE_STATUS_OF[r[2]], int(r[3]), int(r[4]), int(r[5]),
                         int(r[6]) if r[6] else None, float(r[7]) if r[7] else None))
        got, pages, _ = self.list_all("GetAlertStatistics", alerts_pb2.GetAlertStatisticsRequest(), "rules", 2)
        got = self.stats_rows(got)
        # The seed orders by total_alerts only; the API breaks ties by id.
        self.assertEqual([g[3] for g in got], sorted([g[3] for g in got], reverse=True))
        self.assertEqual(sorted(got, key=lambda g: (-g[3], g[0])), sorted(seed, key=lambda g: (-g[3], g[0])))
        self.assertEqual(got, sorted(got, key=lambda g: (-g[3], g[0])))
        self.assertEqual(pages, (len(seed) + 1) // 2)
        mine = {g[0]: g for g in got}
        self.assertEqual(mine[busy][3:6], (3, 1, 2))
        self.assertAlmostEqual(mine[busy][7], round((90 + 301) / 2 / 60, 2))
        # An explicit window reaches the old alert; a rule-status filter narrows.
        wide = alerts_pb2.GetAlertStatisticsRequest(time_range=common_pb2.TimeRange(start_time=ts(self.now - 60 * DAY)),
                                                    rule_statuses=[A.ALERT_RULE_STATUS_ENABLED])
        got, _, _ = self.list_all("GetAlertStatistics", wide, "rules", 50)
        rows = {g[0]: g for g in self.stats_rows(got)}
        self.assertEqual(rows[busy][3], 4)
        self.assertNotIn(quiet, rows)
        self.assertTrue(all(g[2] == A.ALERT_RULE_STATUS_ENABLED for g in rows.values()))
        # Only an end: the 30 days before it, which hold the old alert alone.
        before = alerts_pb2.GetAlertStatisticsRequest(time_range=common_pb2.TimeRange(end_time=ts(self.now - 20 * DAY)))
        got, _, _ = self.list_all("GetAlertStatistics", before, "rules", 500)
        rows = {g[0]: g for g in self.stats_rows(got)}
        self.assertEqual(rows[busy][3:6], (1, 1, 0))
        self.assertEqual(rows[quiet][3], 0)
        self.assertIsNone(rows[quiet][6])
        self.assert_code(SC.INVALID_ARGUMENT, "GetAlertStatistics",
                         alerts_pb2.GetAlertStatisticsRequest(rule_statuses=[A.ALERT_RULE_STATUS_UNSPECIFIED]),
                         "rule_statuses")
        self.assert_code(SC.INVALID_ARGUMENT, "GetAlertStatistics",
                         alerts_pb2.GetAlertStatisticsRequest(page_size=-1), "page_size")


if __name__ == "__main__":
    harness.main()
