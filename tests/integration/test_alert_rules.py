"""AlertsService rules, escalation policies and silences end to end, through
python3-grpcio against a real monitord (authentication on, an admin key):

- CreateAlertRule with the proto's defaults and the caller as created_by,
  the scope column's JSON shape (statistic, aggregation, text_match inside),
  GetAlertRule, ListAlertRules (status, severity, metric, tag and creator
  filters, keyset pages, tokens bound to the filters, total_size),
  UpdateAlertRule (field mask; status and output-only paths refused; the
  merged rule validated), DeleteAlertRule (refused with unresolved alerts
  unless force; one DELETED change per alert), SetAlertRuleStatus
  (disabling resolves open alerts, each change in the change log);
- every validation rule, refused with INVALID_ARGUMENT naming the field;
- each change with its audit event; a rule change NOTIFYs mon_alert_rules
  with the rule id (a LISTENing psql session sees it) and makes the rule
  due at once (next_evaluation_at);
- roles: an editor's rule names it as creator, a viewer only reads;
- escalation policies: CRUD, validation, a policy in use refused;
- silences: CreateSilence suppressing matching active alerts,
  validation, listing by state, DeleteSilence releasing them."""

import os
import subprocess
import time
import unittest

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2, wrappers_pb2

import harness


harness.api_stubs()
from monitoring.v1 import access_pb2, access_pb2_grpc, alerts_pb2, alerts_pb2_grpc, common_pb2  # noqa: E402

SC = grpc.StatusCode
P95 = common_pb2.METRIC_STATISTIC_P95
GT = common_pb2.COMPARISON_OPERATOR_GT
CONTAINS = common_pb2.COMPARISON_OPERATOR_CONTAINS
NOT_CONTAINS = common_pb2.COMPARISON_OPERATOR_NOT_CONTAINS
ENABLED = common_pb2.ALERT_RULE_STATUS_ENABLED
DISABLED = common_pb2.ALERT_RULE_STATUS_DISABLED
TESTING = common_pb2.ALERT_RULE_STATUS_TESTING
EMAIL = common_pb2.NOTIFICATION_CHANNEL_EMAIL
SLACK = common_pb2.NOTIFICATION_CHANNEL_SLACK
SMS = common_pb2.NOTIFICATION_CHANNEL_SMS
WEBHOOK = common_pb2.NOTIFICATION_CHANNEL_WEBHOOK
IN_APP = common_pb2.NOTIFICATION_CHANNEL_IN_APP
WARNING = common_pb2.SEVERITY_LEVEL_WARNING
ERROR = common_pb2.SEVERITY_LEVEL_ERROR
CRITICAL = common_pb2.SEVERITY_LEVEL_CRITICAL


def psql(conninfo, sql):
    """Rows of sql as lists of text (unaligned, tuples only, tab-separated)."""
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql],
                       check=True, capture_output=True, text=True)
    return [line.split("\t") for line in r.stdout.splitlines() if line != ""]


def scalar(conninfo, sql):
    return psql(conninfo, sql)[0][0]


def ts(seconds):
    t = timestamp_pb2.Timestamp()
    t.FromMilliseconds(int(round(seconds * 1000)))
    return t


class AlertRules(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = harness.fresh_database("itest_alert_rules")
        cls.srv = harness.Monitord(cls.db)
        cls.srv.wait_serving()
        cls.stub = alerts_pb2_grpc.AlertsServiceStub(cls.srv.channel)
        cls.md = cls.srv.auth()
        cls.seq = 0

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop_clean()

    # ---- helpers ----

    def call(self, method, request, timeout=20):
        return getattr(self.stub, method)(request, metadata=self.md, timeout=timeout)

    def unique(self, prefix):
        AlertRules.seq += 1
        return "%s-%d-%d" % (prefix, os.getpid(), AlertRules.seq)

    def rule(self, **kw):
        fields = dict(name=self.unique("rule"), metric_name="http_request", statistic=P95, comparison_operator=GT,
                      threshold=1000)
        fields.update(kw)
        return alerts_pb2.AlertRule(**fields)

    def create(self, status=0, **kw):
        return self.call("CreateAlertRule", alerts_pb2.CreateAlertRuleRequest(rule=self.rule(**kw),
                                                                              initial_status=status)).rule

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

    def audit_rows(self, resource_type, resource_id):
        return psql(self.db, "SELECT action_type::text, user_id, coalesce(before_data::text, ''),"
                    " coalesce(after_data::text, '') FROM tb_audit_event WHERE resource_type = '%s'"
                    " AND resource_id = '%s' ORDER BY time, id" % (resource_type, resource_id))

    def add_alert(self, rule_id, status="active", group=""):
        alert_id = self.unique("alt")
        psql(self.db, "INSERT INTO tb_alert (id, alert_rule_id, status, severity, message, current_value, threshold,"
             " group_key) VALUES ('%s', '%s', '%s', 'warning', 'm', 1, 1, '%s')" % (alert_id, rule_id, status, group))
        return alert_id

    def alert_events(self, alert_id):
        return psql(self.db, "SELECT kind, status::text, coalesce(previous_status::text, ''), coalesce(actor, '')"
                    " FROM tb_alert_event WHERE alert_id = '%s' ORDER BY seq" % alert_id)

    # ---- CreateAlertRule / GetAlertRule ----

    def test_create_with_defaults_and_get(self):
        r = self.create()
        self.assertTrue(r.id.startswith("rule-"), r.id)
        self.assertEqual(r.severity, WARNING)
        self.assertEqual(r.status, ENABLED)
        self.assertEqual((r.duration_minutes.value, r.evaluation_interval), (5, 60))
        self.assertTrue(r.auto_resolve.value)
        self.assertEqual((r.suppress_duration.value, r.max_alerts_per_hour.value), (300, 10))
        self.assertFalse(r.HasField("escalation_delay"))
        self.assertFalse(r.HasField("last_triggered"))
        self.assertEqual(r.statistic, P95)
        got = self.call("GetAlertRule", alerts_pb2.GetAlertRuleRequest(rule_id=r.id)).rule
        self.assertEqual(got, r)
        audit = self.audit_rows("alert-rule", r.id)
        self.assertEqual(audit[0][0], "create")
        self.assertEqual(r.created_by, audit[0][1])
        self.assertNotIn(r.created_by, ("", "anonymous"))
        self.assertEqual(scalar(self.db, "SELECT scope::text FROM tb_alert_rule WHERE id = '%s'" % r.id),
                         '{"statistic": "p95"}')
        self.assert_code(SC.NOT_FOUND, "GetAlertRule", alerts_pb2.GetAlertRuleRequest(rule_id="rule-none"))
        self.assert_invalid("GetAlertRule", alerts_pb2.GetAlertRuleRequest(), "rule_id")
        # TESTING as the initial status; a chosen id, then ALREADY_EXISTS for it.
        t = self.create(status=TESTING, id=self.unique("my-rule"))
        self.assertEqual(t.status, TESTING)
        self.assert_code(SC.ALREADY_EXISTS, "CreateAlertRule",
                         alerts_pb2.CreateAlertRuleRequest(rule=self.rule(id=t.id)))

    def test_create_full_rule_and_scope_json(self):
        scope = alerts_pb2.AlertScope(endpoints=["/api/orders", "/api/items"], methods=["GET"], status_codes=[500],
                                      tags={"region": "eu"}, group_by=["endpoint", "tags.region"])
        recipients = alerts_pb2.NotificationRecipients(emails=["oncall@example.com"], slack_channels=["#ops"],
                                                       user_ids=["u-1"])
        r = self.create(severity=CRITICAL, comparison_operator=NOT_CONTAINS, threshold=3,
                        text_match=alerts_pb2.TextMatch(field="endpoint", substring="/v2/"),
                        aggregation=common_pb2.AGGREGATION_COUNT, scope=scope, description="d",
                        notification_channels=[EMAIL, SLACK, IN_APP], notification_recipients=recipients,
                        notification_template="short", duration_minutes=wrappers_pb2.Int32Value(value=0),
                        auto_resolve=wrappers_pb2.BoolValue(value=False),
                        suppress_duration=wrappers_pb2.Int32Value(value=0), evaluation_interval=10,
                        tags={"team": "payments"})
        self.assertEqual(r.scope, scope)
        self.assertEqual(r.notification_recipients, recipients)
        self.assertEqual(list(r.notification_channels), [EMAIL, SLACK, IN_APP])
        self.assertEqual((r.duration_minutes.value, r.auto_resolve.value, r.suppress_duration.value), (0, False, 0))
        self.assertEqual(r.text_match.substring, "/v2/")
        self.assertEqual(dict(r.tags), {"team": "payments"})
        row = psql(self.db, "SELECT scope->>'statistic', scope->>'aggregation', scope->'text_match'->>'field',"
                   " scope->'text_match'->>'substring', scope->'group_by'->>1, scope->'tags'->>'region',"
                   " notification_channels::text, notification_recipients->'emails'->>0, comparison_operator::text"
                   " FROM tb_alert_rule WHERE id = '%s'" % r.id)[0]
        self.assertEqual(row, ["p95", "count", "endpoint", "/v2/", "tags.region", "eu", "{email,slack,in-app}",
                               "oncall@example.com", "not-contains"])

    def test_validation_names_the_field(self):
        cases = [
            (dict(name=""), "rule.name"),
            (dict(name="x" * 201), "rule.name"),
            (dict(name="a\nb"), "rule.name"),
            (dict(metric_name=""), "rule.metric_name"),
            (dict(metric_name="has space"), "rule.metric_name"),
            (dict(metric_name="m" * 101), "rule.metric_name"),
            (dict(statistic=0), "rule.statistic"),
            (dict(statistic=99), "rule.statistic"),
            (dict(aggregation=42), "rule.aggregation"),
            (dict(comparison_operator=0), "rule.comparison_operator"),
            (dict(threshold=float("nan")), "rule.threshold"),
            (dict(threshold=float("inf")), "rule.threshold"),
            (dict(threshold=1e12), "rule.threshold"),
            (dict(comparison_operator=CONTAINS), "rule.text_match"),
            (dict(comparison_operator=CONTAINS, threshold=1.5,
                  text_match=alerts_pb2.TextMatch(field="endpoint", substring="x")), "rule.threshold"),
            (dict(comparison_operator=CONTAINS, threshold=-1,
                  text_match=alerts_pb2.TextMatch(field="endpoint", substring="x")), "rule.threshold"),
            (dict(comparison_operator=CONTAINS, aggregation=common_pb2.AGGREGATION_AVG,
                  text_match=alerts_pb2.TextMatch(field="endpoint", substring="x")), "rule.aggregation"),
            (dict(comparison_operator=CONTAINS, threshold=1,
                  text_match=alerts_pb2.TextMatch(field="host", substring="x")), "rule.text_match.field"),
            (dict(comparison_operator=CONTAINS, threshold=1,
                  text_match=alerts_pb2.TextMatch(field="tags.", substring="x")), "rule.text_match.field"),
            (dict(comparison_operator=NOT_CONTAINS, threshold=1,
                  text_match=alerts_pb2.TextMatch(field="method", substring="")), "rule.text_match.substring"),
            (dict(comparison_operator=CONTAINS, threshold=1,
                  text_match=alerts_pb2.TextMatch(field="method", substring="s" * 201)),
             "rule.text_match.substring"),
            (dict(text_match=alerts_pb2.TextMatch(field="endpoint", substring="x")), "rule.text_match"),
            (dict(evaluation_interval=5), "rule.evaluation_interval"),
            (dict(evaluation_interval=3601), "rule.evaluation_interval"),
            (dict(duration_minutes=wrappers_pb2.Int32Value(value=-1)), "rule.duration_minutes"),
            (dict(duration_minutes=wrappers_pb2.Int32Value(value=1441)), "rule.duration_minutes"),
            (dict(suppress_duration=wrappers_pb2.Int32Value(value=-1)), "rule.suppress_duration"),
            (dict(max_alerts_per_hour=wrappers_pb2.Int32Value(value=0)), "rule.max_alerts_per_hour"),
            (dict(escalation_delay=wrappers_pb2.Int32Value(value=5)), "rule.escalation_delay"),
            (dict(escalation_policy_id="bad id"), "rule.escalation_policy_id"),
            (dict(notification_channels=[EMAIL]), "rule.notification_recipients.emails"),
            (dict(notification_channels=[WEBHOOK]), "rule.notification_recipients.webhook_integration_ids"),
            (dict(notification_channels=[IN_APP]), "rule.notification_recipients.user_ids"),
            (dict(notification_channels=[0]), "rule.notification_channels[0]"),
            (dict(notification_channels=[EMAIL, EMAIL],
                  notification_recipients=alerts_pb2.NotificationRecipients(emails=["a@b.c"])),
             "rule.notification_channels[1]"),
            (dict(notification_recipients=alerts_pb2.NotificationRecipients(emails=["not-an-address"])),
             "rule.notification_recipients.emails[0]"),
            (dict(notification_recipients=alerts_pb2.NotificationRecipients(phone_numbers=["555-1234"])),
             "rule.notification_recipients.phone_numbers[0]"),
            (dict(notification_recipients=alerts_pb2.NotificationRecipients(emails=["a@b.c"] * 51)),
             "rule.notification_recipients.emails"),
            (dict(notification_template="t" * 51), "rule.notification_template"),
            (dict(scope=alerts_pb2.AlertScope(group_by=["host"])), "rule.scope.group_by[0]"),
            (dict(scope=alerts_pb2.AlertScope(group_by=["endpoint", "endpoint"])), "rule.scope.group_by[1]"),
            (dict(scope=alerts_pb2.AlertScope(group_by=["tags.%d" % i for i in range(9)])), "rule.scope.group_by"),
            (dict(scope=alerts_pb2.AlertScope(status_codes=[99])), "rule.scope.status_codes[0]"),
            (dict(scope=alerts_pb2.AlertScope(endpoints=[""])), "rule.scope.endpoints[0]"),
            (dict(scope=alerts_pb2.AlertScope(methods=["X" * 11])), "rule.scope.methods[0]"),
            (dict(tags={"k%d" % i: "v" for i in range(33)}), "rule.tags"),
            (dict(tags={"": "v"}), "rule.tags"),
            (dict(id="bad id"), "rule.id"),
        ]
        for fields, field in cases:
            with self.subTest(field=field, fields=str(fields)[:80]):
                self.assert_invalid("CreateAlertRule", alerts_pb2.CreateAlertRuleRequest(rule=self.rule(**fields)),
                                    field)
        self.assert_invalid("CreateAlertRule", alerts_pb2.CreateAlertRuleRequest(), "rule")
        self.assert_invalid("CreateAlertRule", alerts_pb2.CreateAlertRuleRequest(rule=self.rule(), initial_status=9),
                            "initial_status")

    def test_references_must_exist(self):
        d = self.assert_code(SC.NOT_FOUND, "CreateAlertRule", alerts_pb2.CreateAlertRuleRequest(
            rule=self.rule(escalation_policy_id="esc-none")))
        self.assertTrue(d.startswith("rule.escalation_policy_id"), d)
        d = self.assert_code(SC.NOT_FOUND, "CreateAlertRule", alerts_pb2.CreateAlertRuleRequest(
            rule=self.rule(notification_channels=[WEBHOOK], notification_recipients=alerts_pb2.NotificationRecipients(
                webhook_integration_ids=["int-none"]))))
        self.assertTrue(d.startswith("rule.notification_recipients.webhook_integration_ids"), d)

    # ---- ListAlertRules ----

    def test_list_filters_and_pages(self):
        suite = self.unique("list")
        made = []
        for i, (status, sev, metric) in enumerate([(ENABLED, ERROR, "m_a"), (DISABLED, ERROR, "m_b"),
                                                   (TESTING, WARNING, "m_a"), (ENABLED, CRITICAL, "m_c"),
                                                   (ENABLED, ERROR, "m_a")]):
            made.append(self.create(status=status, name="%s %d" % (suite, 4 - i), severity=sev, metric_name=metric,
                                    tags={"suite": suite, "n": str(i)}))
        by_name = sorted(made, key=lambda r: (r.name, r.id))

        def list_all(page_size, **kw):
            out, token, pages = [], "", 0
            while True:
                resp = self.call("ListAlertRules", alerts_pb2.ListAlertRulesRequest(
                    tags={"suite": suite}, page_size=page_size, page_token=token, **kw))
                out += list(resp.rules)
                pages += 1
                token = resp.next_page_token
                if not token:
                    return out, pages, resp.total_size

        rules, pages, total = list_all(2)
        self.assertEqual([r.id for r in rules], [r.id for r in by_name])
        self.assertEqual((pages, total), (3, 5))
        rules, _, total = list_all(10, statuses=[ENABLED])
        self.assertEqual(sorted(r.id for r in rules), sorted(r.id for r in made if r.status == ENABLED))
        self.assertEqual(total, 3)
        rules, _, _ = list_all(10, severities=[ERROR], metric_names=["m_a"])
        self.assertEqual(sorted(r.id for r in rules), sorted([made[0].id, made[4].id]))
        rules, _, _ = list_all(10, created_by=made[0].created_by)
        self.assertEqual(len(rules), 5)
        rules, _, total = list_all(10, created_by="someone-else")
        self.assertEqual((rules, total), ([], 0))
        # A token is bound to its filters.
        first = self.call("ListAlertRules", alerts_pb2.ListAlertRulesRequest(tags={"suite": suite}, page_size=1))
        self.assert_invalid("ListAlertRules", alerts_pb2.ListAlertRulesRequest(
            tags={"suite": suite}, statuses=[ENABLED], page_size=1, page_token=first.next_page_token), "page_token")
        self.assert_invalid("ListAlertRules", alerts_pb2.ListAlertRulesRequest(page_token="garbage"), "page_token")
        self.assert_invalid("ListAlertRules", alerts_pb2.ListAlertRulesRequest(statuses=[0]), "statuses[0]")
        self.assert_invalid("ListAlertRules", alerts_pb2.ListAlertRulesRequest(severities=[ERROR, 0]),
                            "severities[1]")
        self.assert_invalid("ListAlertRules", alerts_pb2.ListAlertRulesRequest(page_size=-1), "page_size")

    # ---- UpdateAlertRule ----

    def update(self, rule, *paths):
        return self.call("UpdateAlertRule", alerts_pb2.UpdateAlertRuleRequest(
            rule=rule, update_mask=field_mask_pb2.FieldMask(paths=list(paths)))).rule

    def test_update_with_mask(self):
        r = self.create(description="before", max_alerts_per_hour=wrappers_pb2.Int32Value(value=4))
        psql(self.db, "UPDATE tb_alert_rule SET next_evaluation_at = now() + interval '1 hour' WHERE id = '%s'" % r.id)
        u = self.update(alerts_pb2.AlertRule(id=r.id, threshold=250.5, name="renamed " + r.id, description="ignored"),
                        "threshold", "name")
        self.assertEqual((u.threshold, u.name, u.description), (250.5, "renamed " + r.id, "before"))
        self.assertEqual(u.max_alerts_per_hour.value, 4)
        self.assertGreater(u.updated_at.ToMicroseconds(), r.updated_at.ToMicroseconds())
        self.assertEqual(u.created_at, r.created_at)
        # Due again at once (the evaluator may already have evaluated it and set the next time an interval on).
        self.assertEqual(scalar(self.db, "SELECT next_evaluation_at <= now() + interval '60 seconds'"
                                " FROM tb_alert_rule WHERE id = '%s'" % r.id), "t")
        audit = self.audit_rows("alert-rule", r.id)
        self.assertEqual([a[0] for a in audit], ["create", "update"])
        self.assertIn("before", audit[1][2])
        # Absent wrappers: NULL where the column may be NULL, the default where it may not.
        u = self.update(alerts_pb2.AlertRule(id=r.id), "max_alerts_per_hour", "duration_minutes", "auto_resolve")
        self.assertFalse(u.HasField("max_alerts_per_hour"))
        self.assertEqual((u.duration_minutes.value, u.auto_resolve.value), (5, True))
        # To a text rule: the merged rule must hold together.
        self.assert_invalid("UpdateAlertRule", alerts_pb2.UpdateAlertRuleRequest(
            rule=alerts_pb2.AlertRule(id=r.id, comparison_operator=CONTAINS),
            update_mask=field_mask_pb2.FieldMask(paths=["comparison_operator"])), "rule.threshold")
        self.assert_invalid("UpdateAlertRule", alerts_pb2.UpdateAlertRuleRequest(
            rule=alerts_pb2.AlertRule(id=r.id, comparison_operator=CONTAINS, threshold=2),
            update_mask=field_mask_pb2.FieldMask(paths=["comparison_operator", "threshold"])), "rule.text_match")
        u = self.update(alerts_pb2.AlertRule(id=r.id, comparison_operator=CONTAINS, threshold=0,
                                             text_match=alerts_pb2.TextMatch(field="tags.region", substring="eu")),
                        "comparison_operator", "text_match", "threshold")
        self.assertEqual((u.comparison_operator, u.text_match.field, u.threshold), (CONTAINS, "tags.region", 0))
        self.assertEqual(u.statistic, P95)
        for paths, field in [(["status"], "update_mask"), (["created_at"], "update_mask"), (["id"], "update_mask"),
                             (["nope"], "update_mask"), ([], "update_mask"), (["name"], "rule.name")]:
            with self.subTest(paths=paths):
                self.assert_invalid("UpdateAlertRule", alerts_pb2.UpdateAlertRuleRequest(
                    rule=alerts_pb2.AlertRule(id=r.id), update_mask=field_mask_pb2.FieldMask(paths=paths)), field)
        self.assert_code(SC.NOT_FOUND, "UpdateAlertRule", alerts_pb2.UpdateAlertRuleRequest(
            rule=alerts_pb2.AlertRule(id="rule-none", name="x"), update_mask=field_mask_pb2.FieldMask(paths=["name"])))

    # ---- SetAlertRuleStatus ----

    def test_set_status_disabling_resolves_open_alerts(self):
        r = self.create()
        open1 = self.add_alert(r.id, "active", "a")
        open2 = self.add_alert(r.id, "pending", "b")
        done = self.add_alert(r.id, "resolved", "a")
        d = self.assert_code(SC.FAILED_PRECONDITION, "SetAlertRuleStatus",
                             alerts_pb2.SetAlertRuleStatusRequest(rule_id=r.id, status=ENABLED))
        self.assertIn("already enabled", d)
        self.assert_invalid("SetAlertRuleStatus", alerts_pb2.SetAlertRuleStatusRequest(rule_id=r.id), "status")
        psql(self.db, "UPDATE tb_alert_rule SET next_evaluation_at = now() + interval '1 hour' WHERE id = '%s'" % r.id)
        resp = self.call("SetAlertRuleStatus", alerts_pb2.SetAlertRuleStatusRequest(rule_id=r.id, status=DISABLED,
                                                                                    note="maintenance"))
        self.assertEqual((resp.rule.status, resp.resolved_alert_count), (DISABLED, 2))
        actor = resp.rule.created_by
        rows = psql(self.db, "SELECT id, status::text, coalesce(resolved_by, ''), coalesce(resolution_note, ''),"
                    " resolved_at IS NOT NULL FROM tb_alert WHERE alert_rule_id = '%s' ORDER BY id" % r.id)
        by_id = {row[0]: row[1:] for row in rows}
        self.assertEqual(by_id[open1], ["resolved", actor, "rule disabled", "t"])
        self.assertEqual(by_id[open2], ["resolved", actor, "rule disabled", "t"])
        self.assertEqual(by_id[done][0], "resolved")
        self.assertEqual(self.alert_events(open1), [["status-changed", "resolved", "active", actor]])
        self.assertEqual(self.alert_events(open2), [["status-changed", "resolved", "pending", actor]])
        self.assertEqual(self.alert_events(done), [])
        self.assertEqual(scalar(self.db, "SELECT next_evaluation_at <= now() FROM tb_alert_rule WHERE id = '%s'"
                                % r.id), "t")
        audit = self.audit_rows("alert-rule", r.id)
        self.assertEqual(audit[-1][0], "execute")
        t = self.call("SetAlertRuleStatus", alerts_pb2.SetAlertRuleStatusRequest(rule_id=r.id, status=TESTING))
        self.assertEqual((t.rule.status, t.resolved_alert_count), (TESTING, 0))
        self.assert_code(SC.NOT_FOUND, "SetAlertRuleStatus",
                         alerts_pb2.SetAlertRuleStatusRequest(rule_id="rule-none", status=ENABLED))

    # ---- DeleteAlertRule ----

    def test_delete_refused_with_unresolved_alerts_unless_forced(self):
        r = self.create()
        a1 = self.add_alert(r.id, "acknowledged", "x")
        a2 = self.add_alert(r.id, "resolved", "x")
        d = self.assert_code(SC.FAILED_PRECONDITION, "DeleteAlertRule", alerts_pb2.DeleteAlertRuleRequest(rule_id=r.id))
        self.assertIn("unresolved", d)
        resp = self.call("DeleteAlertRule", alerts_pb2.DeleteAlertRuleRequest(rule_id=r.id, force=True))
        self.assertEqual(resp.deleted_alert_count, 2)
        self.assertEqual(scalar(self.db, "SELECT count(*) FROM tb_alert WHERE alert_rule_id = '%s'" % r.id), "0")
        actor = r.created_by
        self.assertEqual(self.alert_events(a1), [["deleted", "acknowledged", "acknowledged", actor]])
        self.assertEqual(self.alert_events(a2), [["deleted", "resolved", "resolved", actor]])
        self.assertEqual([a[0] for a in self.audit_rows("alert-rule", r.id)], ["create", "delete"])
        self.assert_code(SC.NOT_FOUND, "GetAlertRule", alerts_pb2.GetAlertRuleRequest(rule_id=r.id))
        self.assert_code(SC.NOT_FOUND, "DeleteAlertRule", alerts_pb2.DeleteAlertRuleRequest(rule_id=r.id))
        # Without open alerts no force is needed.
        q = self.create()
        self.assertEqual(self.call("DeleteAlertRule", alerts_pb2.DeleteAlertRuleRequest(rule_id=q.id))
                         .deleted_alert_count, 0)

    # ---- NOTIFY ----

    def test_rule_changes_notify_the_evaluators(self):
        """Every rule change NOTIFYs mon_alert_rules with the rule id at commit (a psql session LISTENs)."""
        listener = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", self.db], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        listener.stdin.write("LISTEN mon_alert_rules;\nSELECT 'listening';\n")
        listener.stdin.flush()
        while "listening" not in listener.stdout.readline():
            pass
        r = self.create()
        self.update(alerts_pb2.AlertRule(id=r.id, threshold=5), "threshold")
        self.call("SetAlertRuleStatus", alerts_pb2.SetAlertRuleStatusRequest(rule_id=r.id, status=DISABLED))
        self.call("DeleteAlertRule", alerts_pb2.DeleteAlertRuleRequest(rule_id=r.id))
        # A refused change notifies nobody.
        self.assert_code(SC.NOT_FOUND, "DeleteAlertRule", alerts_pb2.DeleteAlertRuleRequest(rule_id=r.id))
        out, _ = listener.communicate("SELECT 1;\n", timeout=30)
        payloads = [line for line in out.splitlines() if 'notification "mon_alert_rules"' in line]
        self.assertEqual(len(payloads), 4, out)
        for line in payloads:
            self.assertIn('payload "%s"' % r.id, line)

    # ---- roles ----

    def key_for(self, role):
        """A bearer token of a new caller with role, once the server accepts it."""
        access = access_pb2_grpc.AccessServiceStub(self.srv.channel)
        caller_id = self.unique("caller")
        access.CreateCaller(access_pb2.CreateCallerRequest(caller=access_pb2.Caller(
            id=caller_id, email="%s@example.com" % caller_id, team="ops", role=role)), metadata=self.md, timeout=10)
        token = access.CreateApiKey(access_pb2.CreateApiKeyRequest(caller_id=caller_id, description="alert rules"),
                                    metadata=self.md, timeout=10).token
        md = (("authorization", "Bearer " + token),)
        deadline = time.time() + 30
        while True:
            try:
                access.GetCallerIdentity(access_pb2.GetCallerIdentityRequest(), metadata=md, timeout=5)
                return caller_id, md
            except grpc.RpcError as e:
                if e.code() != SC.UNAUTHENTICATED or time.time() > deadline:
                    raise
                time.sleep(0.05)

    def test_roles_and_creator(self):
        editor_id, editor = self.key_for(common_pb2.CALLER_ROLE_EDITOR)
        viewer_id, viewer = self.key_for(common_pb2.CALLER_ROLE_VIEWER)
        r = self.stub.CreateAlertRule(alerts_pb2.CreateAlertRuleRequest(rule=self.rule()), metadata=editor,
                                      timeout=20).rule
        self.assertEqual(r.created_by, editor_id)
        self.assertEqual(self.audit_rows("alert-rule", r.id)[0][:2], ["create", editor_id])
        self.assertEqual(self.stub.GetAlertRule(alerts_pb2.GetAlertRuleRequest(rule_id=r.id), metadata=viewer,
                                                timeout=20).rule, r)
        for method, request in [("CreateAlertRule", alerts_pb2.CreateAlertRuleRequest(rule=self.rule())),
                                ("SetAlertRuleStatus", alerts_pb2.SetAlertRuleStatusRequest(rule_id=r.id,
                                                                                           status=DISABLED)),
                                ("DeleteAlertRule", alerts_pb2.DeleteAlertRuleRequest(rule_id=r.id)),
                                ("CreateSilence", alerts_pb2.CreateSilenceRequest())]:
            with self.subTest(method=method):
                with self.assertRaises(grpc.RpcError) as cm:
                    getattr(self.stub, method)(request, metadata=viewer, timeout=20)
                self.assertEqual(cm.exception.code(), SC.PERMISSION_DENIED, cm.exception.details())
        listed = self.stub.ListAlertRules(alerts_pb2.ListAlertRulesRequest(created_by=editor_id), metadata=viewer,
                                          timeout=20)
        self.assertEqual([x.id for x in listed.rules], [r.id])
        self.assertNotEqual(viewer_id, editor_id)

    # ---- escalation policies ----

    def level(self, delay=10, channels=(EMAIL,), **recipients):
        recipients = recipients or {"emails": ["lead@example.com"]}
        return alerts_pb2.EscalationLevel(delay_minutes=delay, channels=list(channels),
                                          recipients=alerts_pb2.NotificationRecipients(**recipients))

    def test_escalation_policies(self):
        p = self.call("CreateEscalationPolicy", alerts_pb2.CreateEscalationPolicyRequest(
            policy=alerts_pb2.EscalationPolicy(name=self.unique("policy"), levels=[
                self.level(5), self.level(15, (SMS, SLACK), phone_numbers=["+4915112345678"],
                                          slack_channels=["#oncall"])]))).policy
        self.assertTrue(p.id.startswith("esc-"), p.id)
        self.assertEqual(len(p.levels), 2)
        self.assertEqual(list(p.levels[1].channels), [SMS, SLACK])
        self.assertEqual(p, self.call("GetEscalationPolicy", alerts_pb2.GetEscalationPolicyRequest(policy_id=p.id))
                         .policy)
        self.assertEqual(scalar(self.db, "SELECT levels->1->'channels'->>0 FROM tb_escalation_policy WHERE id = '%s'"
                                % p.id), "sms")
        for policy, field in [
                (alerts_pb2.EscalationPolicy(levels=[self.level()]), "policy.name"),
                (alerts_pb2.EscalationPolicy(name="x"), "policy.levels"),
                (alerts_pb2.EscalationPolicy(name="x", levels=[self.level(0)]), "policy.levels[0].delay_minutes"),
                (alerts_pb2.EscalationPolicy(name="x", levels=[self.level(), self.level(5, ())]),
                 "policy.levels[1].channels"),
                (alerts_pb2.EscalationPolicy(name="x", levels=[self.level(5, (SLACK,))]),
                 "policy.levels[0].recipients.slack_channels")]:
            with self.subTest(field=field):
                self.assert_invalid("CreateEscalationPolicy", alerts_pb2.CreateEscalationPolicyRequest(policy=policy),
                                    field)
        # Update by mask.
        u = self.call("UpdateEscalationPolicy", alerts_pb2.UpdateEscalationPolicyRequest(
            policy=alerts_pb2.EscalationPolicy(id=p.id, is_repeat_last_level=True, name="ignored"),
            update_mask=field_mask_pb2.FieldMask(paths=["is_repeat_last_level"]))).policy
        self.assertTrue(u.is_repeat_last_level)
        self.assertEqual(u.name, p.name)
        self.assert_invalid("UpdateEscalationPolicy", alerts_pb2.UpdateEscalationPolicyRequest(
            policy=alerts_pb2.EscalationPolicy(id=p.id), update_mask=field_mask_pb2.FieldMask(paths=["levels"])),
            "policy.levels")
        self.assert_invalid("UpdateEscalationPolicy", alerts_pb2.UpdateEscalationPolicyRequest(
            policy=alerts_pb2.EscalationPolicy(id=p.id), update_mask=field_mask_pb2.FieldMask(paths=["created_by"])),
            "update_mask")
        # A rule using it keeps it.
        r = self.create(escalation_policy_id=p.id, escalation_delay=wrappers_pb2.Int32Value(value=3))
        self.assertEqual((r.escalation_policy_id, r.escalation_delay.value), (p.id, 3))
        d = self.assert_code(SC.FAILED_PRECONDITION, "DeleteEscalationPolicy",
                             alerts_pb2.DeleteEscalationPolicyRequest(policy_id=p.id))
        self.assertIn(r.id, d)
        self.update(alerts_pb2.AlertRule(id=r.id), "escalation_policy_id", "escalation_delay")
        self.call("DeleteEscalationPolicy", alerts_pb2.DeleteEscalationPolicyRequest(policy_id=p.id))
        self.assert_code(SC.NOT_FOUND, "GetEscalationPolicy", alerts_pb2.GetEscalationPolicyRequest(policy_id=p.id))
        self.assertEqual([a[0] for a in self.audit_rows("escalation-policy", p.id)], ["create", "update", "delete"])

    def test_escalation_policy_pages(self):
        base = self.unique("zz-pages")
        ids = [self.call("CreateEscalationPolicy", alerts_pb2.CreateEscalationPolicyRequest(
            policy=alerts_pb2.EscalationPolicy(name="%s-%d" % (base, i), levels=[self.level()]))).policy.id
            for i in range(3)]
        seen, token = [], ""
        while True:
            resp = self.call("ListEscalationPolicies", alerts_pb2.ListEscalationPoliciesRequest(page_size=2,
                                                                                                page_token=token))
            seen += [p.id for p in resp.policies]
            token = resp.next_page_token
            if not token:
                break
        names = [n[0] for n in psql(self.db, "SELECT id FROM tb_escalation_policy ORDER BY name, id")]
        self.assertEqual(seen, names)
        for i in ids:
            self.assertIn(i, seen)

    # ---- silences ----

    def test_silences(self):
        r = self.create(tags={"team": "silenced"})
        other = self.create()
        hit = self.add_alert(r.id, "active")
        acked = self.add_alert(r.id, "acknowledged", "g")
        miss = self.add_alert(other.id, "active")
        now = time.time()
        resp = self.call("CreateSilence", alerts_pb2.CreateSilenceRequest(silence=alerts_pb2.Silence(
            alert_rule_ids=[r.id], ends_at=ts(now + 3600), comment="deploy")))
        s = resp.silence
        self.assertEqual(resp.suppressed_alert_count, 1)
        self.assertEqual(s.state, alerts_pb2.SILENCE_STATE_ACTIVE)
        self.assertEqual(list(s.alert_rule_ids), [r.id])
        row = psql(self.db, "SELECT status::text, coalesce(suppression_reason, ''), coalesce(silence_id, '')"
                   " FROM tb_alert WHERE id = '%s'" % hit)[0]
        self.assertEqual(row, ["suppressed", "silence", s.id])
        self.assertEqual(scalar(self.db, "SELECT status::text FROM tb_alert WHERE id = '%s'" % acked), "acknowledged")
        self.assertEqual(scalar(self.db, "SELECT status::text FROM tb_alert WHERE id = '%s'" % miss), "active")
        self.assertEqual([e[:3] for e in self.alert_events(hit)], [["status-changed", "suppressed", "active"]])
        self.assertEqual(self.call("GetSilence", alerts_pb2.GetSilenceRequest(silence_id=s.id)).silence, s)
        # A scheduled one, matching by tag and severity; listing by state and rule.
        later = self.call("CreateSilence", alerts_pb2.CreateSilenceRequest(silence=alerts_pb2.Silence(
            tags={"team": "silenced"}, severities=[WARNING], starts_at=ts(now + 600), ends_at=ts(now + 7200),
            comment="later"))).silence
        self.assertEqual(later.state, alerts_pb2.SILENCE_STATE_SCHEDULED)
        listed = self.call("ListSilences", alerts_pb2.ListSilencesRequest(alert_rule_id=r.id)).silences
        self.assertEqual([x.id for x in listed], [s.id])
        listed = self.call("ListSilences", alerts_pb2.ListSilencesRequest(
            states=[alerts_pb2.SILENCE_STATE_SCHEDULED])).silences
        self.assertIn(later.id, [x.id for x in listed])
        self.assertNotIn(s.id, [x.id for x in listed])
        # Ending it early releases what it muted.
        ended = self.call("DeleteSilence", alerts_pb2.DeleteSilenceRequest(silence_id=s.id)).silence
        self.assertEqual(ended.state, alerts_pb2.SILENCE_STATE_EXPIRED)
        self.assertEqual(ended.expired_by, r.created_by)
        self.assertEqual(scalar(self.db, "SELECT status::text FROM tb_alert WHERE id = '%s'" % hit), "active")
        self.assertEqual([e[:3] for e in self.alert_events(hit)][-1], ["status-changed", "active", "suppressed"])
        self.assert_code(SC.FAILED_PRECONDITION, "DeleteSilence", alerts_pb2.DeleteSilenceRequest(silence_id=s.id))
        expired = self.call("ListSilences", alerts_pb2.ListSilencesRequest(
            states=[alerts_pb2.SILENCE_STATE_EXPIRED], alert_rule_id=r.id)).silences
        self.assertEqual([x.id for x in expired], [s.id])
        self.assertEqual([a[0] for a in self.audit_rows("silence", s.id)], ["create", "delete"])
        self.assert_code(SC.NOT_FOUND, "GetSilence", alerts_pb2.GetSilenceRequest(silence_id="sil-none"))

    def test_silence_overlap_and_escalation(self):
        r = self.create(severity=ERROR)
        hit = self.add_alert(r.id, "active")
        psql(self.db, "UPDATE tb_alert SET next_escalation_at = now() + interval '5 minutes' WHERE id = '%s'" % hit)
        now = time.time()
        first = self.call("CreateSilence", alerts_pb2.CreateSilenceRequest(silence=alerts_pb2.Silence(
            alert_rule_ids=[r.id], ends_at=ts(now + 600), comment="first"))).silence
        # A muted alert does not escalate.
        self.assertEqual(scalar(self.db, "SELECT coalesce(next_escalation_at::text, 'none') FROM tb_alert"
                                " WHERE id = '%s'" % hit), "none")
        second = self.call("CreateSilence", alerts_pb2.CreateSilenceRequest(silence=alerts_pb2.Silence(
            severities=[WARNING], alert_rule_ids=[r.id], ends_at=ts(now + 1200), comment="second")))
        self.assertEqual(second.suppressed_alert_count, 0)
        # Ending the first hands the alert to the second, still suppressed.
        self.call("DeleteSilence", alerts_pb2.DeleteSilenceRequest(silence_id=first.id))
        self.assertEqual(psql(self.db, "SELECT status::text, silence_id FROM tb_alert WHERE id = '%s'" % hit)[0],
                         ["suppressed", second.silence.id])
        self.assertEqual(self.alert_events(hit)[-1][:3], ["updated", "suppressed", "suppressed"])
        self.call("DeleteSilence", alerts_pb2.DeleteSilenceRequest(silence_id=second.silence.id))
        self.assertEqual(psql(self.db, "SELECT status::text, coalesce(silence_id, ''), coalesce(suppression_reason,"
                              " '') FROM tb_alert WHERE id = '%s'" % hit)[0], ["active", "", ""])

    def test_silence_pages(self):
        r = self.create()
        now = time.time()

        def silence(ends, comment):
            return self.call("CreateSilence", alerts_pb2.CreateSilenceRequest(silence=alerts_pb2.Silence(
                alert_rule_ids=[r.id], ends_at=ts(now + ends), comment=comment))).silence.id

        late, ended, soon = silence(900, "late"), silence(300, "ended"), silence(600, "soon")
        self.call("DeleteSilence", alerts_pb2.DeleteSilenceRequest(silence_id=ended))
        seen, token = [], ""
        states = [alerts_pb2.SILENCE_STATE_EXPIRED, alerts_pb2.SILENCE_STATE_ACTIVE]
        while True:
            resp = self.call("ListSilences", alerts_pb2.ListSilencesRequest(
                states=states, alert_rule_id=r.id, page_size=1, page_token=token))
            seen += [x.id for x in resp.silences]
            token = resp.next_page_token
            if not token:
                break
        # In effect first by end time, then the expired ones.
        self.assertEqual(seen, [soon, late, ended])
        self.assert_invalid("ListSilences", alerts_pb2.ListSilencesRequest(states=[0]), "states[0]")
        first = self.call("ListSilences", alerts_pb2.ListSilencesRequest(states=states, alert_rule_id=r.id,
                                                                         page_size=1))
        self.assert_invalid("ListSilences", alerts_pb2.ListSilencesRequest(alert_rule_id=r.id, page_size=1,
                                                                           page_token=first.next_page_token),
                            "page_token")

    def test_silence_validation(self):
        now = time.time()
        r = self.create()
        for silence, field in [
                (alerts_pb2.Silence(ends_at=ts(now + 60), comment="c"), "silence"),
                (alerts_pb2.Silence(severities=[ERROR], comment="c"), "silence.ends_at"),
                (alerts_pb2.Silence(severities=[ERROR], ends_at=ts(now + 60)), "silence.comment"),
                (alerts_pb2.Silence(severities=[ERROR], starts_at=ts(now + 120), ends_at=ts(now + 60), comment="c"),
                 "silence.ends_at"),
                (alerts_pb2.Silence(severities=[ERROR], ends_at=ts(now + 91 * 86400), comment="c"),
                 "silence.ends_at"),
                (alerts_pb2.Silence(severities=[0], ends_at=ts(now + 60), comment="c"), "silence.severities[0]"),
                (alerts_pb2.Silence(alert_rule_ids=["bad id"], ends_at=ts(now + 60), comment="c"),
                 "silence.alert_rule_ids[0]")]:
            with self.subTest(field=field):
                self.assert_invalid("CreateSilence", alerts_pb2.CreateSilenceRequest(silence=silence), field)
        d = self.assert_code(SC.NOT_FOUND, "CreateSilence", alerts_pb2.CreateSilenceRequest(silence=alerts_pb2.Silence(
            alert_rule_ids=[r.id, "rule-none"], ends_at=ts(now + 60), comment="c")))
        self.assertTrue(d.startswith("silence.alert_rule_ids[1]"), d)


if __name__ == "__main__":
    harness.main()
