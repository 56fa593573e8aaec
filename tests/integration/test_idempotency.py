"""Idempotency keys (AIP-155) end to end, through python3-grpcio against a
real monitord (authentication on, an admin key from `monitord admin
bootstrap`):

- a retried AcknowledgeAlert with the same request_id answers the first
  success (not FAILED_PRECONDITION) and writes one audit row and one change
  event; without a key the retry is refused, as before;
- a retried create whose id the server generates (an alert rule, a
  monitored service, an API key) makes one row and answers the same id;
  the API key's token is not kept, so its replay answers without it;
- a retried delete answers the first success, not NOT_FOUND;
- concurrent duplicates (threads) make one change;
- the same key with a different request is INVALID_ARGUMENT naming
  request_id, and changes nothing;
- the same key from another caller is independent;
- a failed call keeps nothing: its retry runs again;
- a pruned key runs again;
- a key over 128 bytes is refused naming the field;
- RecordMetrics, whose write has its own transaction, answers a retry with
  the first counts;
- RunHealthCheck answers a retry without probing or recording again;
- monctl --idempotency-key: the same command run twice acknowledges once."""

import http.server
import itertools
import os
import subprocess
import threading
import time
import unittest
import uuid

import grpc
from google.protobuf import timestamp_pb2

import harness

harness.api_stubs()
from monitoring.v1 import access_pb2, access_pb2_grpc, alerts_pb2, alerts_pb2_grpc, common_pb2  # noqa: E402
from monitoring.v1 import health_pb2 as mhealth_pb2, health_pb2_grpc as mhealth_pb2_grpc  # noqa: E402
from monitoring.v1 import metrics_pb2, metrics_pb2_grpc  # noqa: E402

SC = grpc.StatusCode
A = common_pb2


def psql(conninfo, sql):
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql],
                       check=True, capture_output=True, text=True)
    return [line.split("\t") for line in r.stdout.splitlines() if line != ""]


def q(text):
    return "'" + text.replace("'", "''") + "'"


def key():
    return str(uuid.uuid4())


class Idempotency(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = harness.fresh_database("itest_idempotency")
        cls.srv = harness.Monitord(cls.db)
        cls.srv.wait_serving()
        cls.md = cls.srv.auth()
        cls.alerts = alerts_pb2_grpc.AlertsServiceStub(cls.srv.channel)
        cls.health = mhealth_pb2_grpc.HealthServiceStub(cls.srv.channel)
        cls.access = access_pb2_grpc.AccessServiceStub(cls.srv.channel)
        cls.metrics = metrics_pb2_grpc.MetricsServiceStub(cls.srv.channel)
        cls.counter = itertools.count(1)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop_clean()

    # ---- helpers ----

    def sql(self, text):
        return psql(self.db, text)

    def count(self, text):
        return int(self.sql(text)[0][0])

    def uid(self, prefix):
        return "%s-%d-%d" % (prefix, os.getpid(), next(self.counter))

    def make_alert(self, status="active"):
        rid = self.uid("rule")
        self.sql("INSERT INTO tb_alert_rule (id, name, severity, status, metric_name, comparison_operator, threshold,"
                 " created_by, next_evaluation_at) VALUES (%s, %s, 'warning', 'enabled', 'api.latency', 'gt', 500,"
                 " 'test', 'infinity')" % (q(rid), q("rule " + rid)))
        aid = self.uid("alt")
        extra = ", condition_since" if status == "pending" else ""
        extra_v = ", now()" if status == "pending" else ""
        self.sql("INSERT INTO tb_alert (id, alert_rule_id, status, severity, message, current_value, threshold,"
                 " triggered_at, group_key%s) VALUES (%s, %s, %s, 'warning', 'above', 612.5, 500, now(), %s%s)"
                 % (extra, q(aid), q(rid), q(status), q(aid), extra_v))
        return aid

    def audit_count(self, resource_type, resource_id):
        return self.count("SELECT count(*) FROM tb_audit_event WHERE resource_type = %s AND resource_id = %s"
                          % (q(resource_type), q(resource_id)))

    def assert_refused(self, code, fn, request, naming, md=None):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(request, metadata=md or self.md, timeout=20)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        self.assertIn(naming, cm.exception.details())
        return cm.exception.details()

    def key_for(self, caller_id, role):
        """An API key of a new caller with role, once the server accepts it."""
        self.access.CreateCaller(access_pb2.CreateCallerRequest(caller=access_pb2.Caller(
            id=caller_id, email=caller_id + "@example.com", role=role)), metadata=self.md, timeout=20)
        token = self.access.CreateApiKey(access_pb2.CreateApiKeyRequest(caller_id=caller_id),
                                         metadata=self.md, timeout=20).token
        md = (("authorization", "Bearer " + token),)
        deadline = time.time() + 30
        while True:
            try:
                self.access.GetCallerIdentity(access_pb2.GetCallerIdentityRequest(), metadata=md, timeout=5)
                return md
            except grpc.RpcError as e:
                if e.code() != SC.UNAUTHENTICATED or time.time() > deadline:
                    raise
                time.sleep(0.05)

    def rule_request(self, name, request_id):
        return alerts_pb2.CreateAlertRuleRequest(rule=alerts_pb2.AlertRule(
            name=name, metric_name="http_request", statistic=A.METRIC_STATISTIC_P95,
            comparison_operator=A.COMPARISON_OPERATOR_GT, threshold=1000), request_id=request_id)

    def service_request(self, name, request_id):
        return mhealth_pb2.CreateServiceRequest(service=mhealth_pb2.MonitoredService(name=name, service_type="api"),
                                                request_id=request_id)

    # ---- tests ----

    def test_retried_acknowledge_answers_the_first_success(self):
        aid = self.make_alert()
        k = key()
        req = alerts_pb2.AcknowledgeAlertRequest(alert_id=aid, note="on it", request_id=k)
        first = self.alerts.AcknowledgeAlert(req, metadata=self.md, timeout=20)
        again = self.alerts.AcknowledgeAlert(req, metadata=self.md, timeout=20)
        self.assertEqual(first.alert.status, A.ALERT_STATUS_ACKNOWLEDGED)
        self.assertEqual(again, first)
        self.assertEqual(self.audit_count("alert", aid), 1)
        self.assertEqual(self.count("SELECT count(*) FROM tb_alert_event WHERE alert_id = %s" % q(aid)), 1)
        # Without a key (or with a new one) the same retry is a second acknowledgement: refused.
        self.assert_refused(SC.FAILED_PRECONDITION, self.alerts.AcknowledgeAlert,
                            alerts_pb2.AcknowledgeAlertRequest(alert_id=aid, note="on it"), "")
        self.assert_refused(SC.FAILED_PRECONDITION, self.alerts.AcknowledgeAlert,
                            alerts_pb2.AcknowledgeAlertRequest(alert_id=aid, note="on it", request_id=key()), "")
        self.assertEqual(self.audit_count("alert", aid), 1)

    def test_retried_create_with_a_generated_id_makes_one_row(self):
        name = self.uid("idem rule")
        req = self.rule_request(name, key())
        first = self.alerts.CreateAlertRule(req, metadata=self.md, timeout=20).rule
        again = self.alerts.CreateAlertRule(req, metadata=self.md, timeout=20).rule
        self.assertTrue(first.id.startswith("rule-"))
        self.assertEqual(again, first)
        self.assertEqual(self.count("SELECT count(*) FROM tb_alert_rule WHERE name = %s" % q(name)), 1)
        self.assertEqual(self.audit_count("alert-rule", first.id), 1)

        name = self.uid("idem svc")
        req = self.service_request(name, key())
        first = self.health.CreateService(req, metadata=self.md, timeout=20).service
        again = self.health.CreateService(req, metadata=self.md, timeout=20).service
        self.assertEqual(again.id, first.id)
        self.assertEqual(self.count("SELECT count(*) FROM tb_service_health WHERE name = %s" % q(name)), 1)

    def test_api_key_replay_keeps_no_token(self):
        k = key()
        req = access_pb2.CreateApiKeyRequest(description=self.uid("idem key"), request_id=k)
        first = self.access.CreateApiKey(req, metadata=self.md, timeout=20)
        again = self.access.CreateApiKey(req, metadata=self.md, timeout=20)
        self.assertTrue(first.token)
        self.assertEqual(again.api_key.id, first.api_key.id)
        self.assertEqual(again.token, "")
        self.assertEqual(self.count("SELECT count(*) FROM tb_api_key WHERE description = %s" % q(req.description)), 1)
        stored = self.sql("SELECT encode(response, 'hex') FROM tb_idempotency_key WHERE idempotency_key = %s" % q(k))
        self.assertEqual(len(stored), 1)
        self.assertNotIn(first.token.encode().hex(), stored[0][0])

    def test_retried_delete_answers_the_first_success(self):
        level = alerts_pb2.EscalationLevel(delay_minutes=10, channels=[A.NOTIFICATION_CHANNEL_EMAIL],
                                           recipients=alerts_pb2.NotificationRecipients(emails=["a@example.com"]))
        policy = self.alerts.CreateEscalationPolicy(alerts_pb2.CreateEscalationPolicyRequest(
            policy=alerts_pb2.EscalationPolicy(name=self.uid("idem policy"), levels=[level]), request_id=key()),
            metadata=self.md, timeout=20).policy
        req = alerts_pb2.DeleteEscalationPolicyRequest(policy_id=policy.id, request_id=key())
        self.alerts.DeleteEscalationPolicy(req, metadata=self.md, timeout=20)
        self.alerts.DeleteEscalationPolicy(req, metadata=self.md, timeout=20)
        self.assert_refused(SC.NOT_FOUND, self.alerts.DeleteEscalationPolicy,
                            alerts_pb2.DeleteEscalationPolicyRequest(policy_id=policy.id), policy.id)
        self.assertEqual(self.count("SELECT count(*) FROM tb_audit_event WHERE resource_id = %s AND action_type ="
                                    " 'delete'" % q(policy.id)), 1)

    def test_concurrent_duplicates_make_one_change(self):
        name = self.uid("idem concurrent")
        req = self.service_request(name, key())
        results, errors = [], []
        start = threading.Barrier(8)

        def worker():
            start.wait()
            try:
                results.append(self.health.CreateService(req, metadata=self.md, timeout=30).service.id)
            except grpc.RpcError as e:
                errors.append((e.code(), e.details()))

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 8)
        self.assertEqual(len(set(results)), 1)
        self.assertEqual(self.count("SELECT count(*) FROM tb_service_health WHERE name = %s" % q(name)), 1)
        self.assertEqual(self.audit_count("service", results[0]), 1)

    def test_same_key_with_another_request_is_refused(self):
        k = key()
        name = self.uid("idem first")
        self.alerts.CreateAlertRule(self.rule_request(name, k), metadata=self.md, timeout=20)
        other = self.uid("idem other")
        details = self.assert_refused(SC.INVALID_ARGUMENT, self.alerts.CreateAlertRule, self.rule_request(other, k),
                                      "request_id")
        self.assertIn("different", details)
        self.assertEqual(self.count("SELECT count(*) FROM tb_alert_rule WHERE name = %s" % q(other)), 0)
        # The key is per method: the same key on another method is another key.
        svc = self.health.CreateService(self.service_request(self.uid("idem svc"), k), metadata=self.md, timeout=20)
        self.assertTrue(svc.service.id)

    def test_same_key_from_another_caller_is_independent(self):
        editor = self.key_for(self.uid("idem-editor"), A.CALLER_ROLE_EDITOR)
        k = key()
        name = self.uid("idem shared")
        mine = self.health.CreateService(self.service_request(name, k), metadata=self.md, timeout=20).service
        theirs = self.health.CreateService(self.service_request(name, k), metadata=editor, timeout=20).service
        self.assertNotEqual(mine.id, theirs.id)
        self.assertEqual(self.count("SELECT count(*) FROM tb_service_health WHERE name = %s" % q(name)), 2)

    def test_a_failed_call_keeps_nothing(self):
        aid = self.make_alert(status="pending")
        req = alerts_pb2.ResolveAlertRequest(alert_id=aid, request_id=key())
        self.assert_refused(SC.FAILED_PRECONDITION, self.alerts.ResolveAlert, req, "")
        self.assertEqual(self.count("SELECT count(*) FROM tb_idempotency_key WHERE idempotency_key = %s"
                                    % q(req.request_id)), 0)
        self.sql("UPDATE tb_alert SET status = 'active', condition_since = NULL WHERE id = %s" % q(aid))
        a = self.alerts.ResolveAlert(req, metadata=self.md, timeout=20).alert
        self.assertEqual(a.status, A.ALERT_STATUS_RESOLVED)

    def test_a_pruned_key_runs_again(self):
        name = self.uid("idem pruned")
        req = self.service_request(name, key())
        first = self.health.CreateService(req, metadata=self.md, timeout=20).service
        self.sql("DELETE FROM tb_idempotency_key WHERE idempotency_key = %s" % q(req.request_id))
        again = self.health.CreateService(req, metadata=self.md, timeout=20).service
        self.assertNotEqual(again.id, first.id)
        self.assertEqual(self.count("SELECT count(*) FROM tb_service_health WHERE name = %s" % q(name)), 2)

    def test_key_validation(self):
        name = self.uid("idem long")
        self.assert_refused(SC.INVALID_ARGUMENT, self.health.CreateService, self.service_request(name, "k" * 129),
                            "request_id")
        self.assert_refused(SC.INVALID_ARGUMENT, self.health.CreateService,
                            self.service_request(name, "tab\there"), "request_id")
        self.assertEqual(self.count("SELECT count(*) FROM tb_service_health WHERE name = %s" % q(name)), 0)
        self.health.CreateService(self.service_request(name, "k" * 128), metadata=self.md, timeout=20)

    def test_record_metrics_answers_a_retry_with_the_first_counts(self):
        at = timestamp_pb2.Timestamp()
        at.FromSeconds(int(time.time()) - 60)
        points = [metrics_pb2.MetricPoint(time=at, metric_name=self.uid("idem.metric"), endpoint="/e%d" % i,
                                          method="GET", request_count=1) for i in range(3)]
        req = metrics_pb2.RecordMetricsRequest(points=points, request_id=key())
        first = self.metrics.RecordMetrics(req, metadata=self.md, timeout=20)
        again = self.metrics.RecordMetrics(req, metadata=self.md, timeout=20)
        self.assertEqual(first.inserted_count, 3)
        self.assertEqual(again, first)
        # Without the key the same batch is counted as duplicates.
        plain = metrics_pb2.RecordMetricsRequest(points=points)
        self.assertEqual(self.metrics.RecordMetrics(plain, metadata=self.md, timeout=20).duplicate_count, 3)

    def test_run_health_check_retry_neither_probes_nor_records_again(self):
        hits = []

        class Target(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)
        target.daemon_threads = True
        threading.Thread(target=target.serve_forever, daemon=True).start()
        try:
            sid = self.uid("svc-run")
            self.sql("INSERT INTO tb_service_health (id, name, service_type, health_check_url, check_interval,"
                     " timeout, retry_count) VALUES (%s, %s, 'api', %s, 3600, 2, 0)"
                     % (q(sid), q(sid), q("http://127.0.0.1:%d/up" % target.server_address[1])))
            checks = "SELECT count(*) FROM tb_health_check_log WHERE service_id = %s" % q(sid)
            # The prober probes a new service once at once; wait for it so the counts are known.
            deadline = time.time() + 60
            while self.count(checks) < 1 and time.time() < deadline:
                time.sleep(0.1)
            self.assertEqual(self.count(checks), 1)
            before = len(hits)
            req = mhealth_pb2.RunHealthCheckRequest(service_id=sid, request_id=key())
            first = self.health.RunHealthCheck(req, metadata=self.md, timeout=30)
            again = self.health.RunHealthCheck(req, metadata=self.md, timeout=30)
            self.assertEqual(first.check.status, A.SERVICE_STATUS_HEALTHY)
            self.assertEqual(again, first)
            self.assertEqual(self.count(checks), 2)
            self.assertEqual(len(hits) - before, 1)
            self.assertEqual(self.audit_count("health-check", str(first.check.id)), 1)
            self.assertEqual(self.count("SELECT count(*) FROM tb_audit_event WHERE resource_type = 'health-check'"
                                        " AND resource_name = %s" % q(sid)), 1)
        finally:
            target.shutdown()
            target.server_close()

    def test_monctl_retries_a_command_with_its_key(self):
        aid = self.make_alert()
        monctl = os.path.join(harness.BUILD_DIR, "bin", "monctl")
        env = dict(os.environ, MONITORD_TARGET=self.srv.address, MONITORD_API_KEY=self.srv.admin_key())
        cmd = [monctl, "--idempotency-key", key(), "alerts", "ack", aid, "--note", "from monctl"]
        first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual((first.returncode, again.returncode), (0, 0), first.stderr + again.stderr)
        self.assertEqual(again.stdout, first.stdout)
        self.assertEqual(self.audit_count("alert", aid), 1)
        # A read takes no key.
        r = subprocess.run([monctl, "--idempotency-key", key(), "alerts", "list"], env=env, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--idempotency-key", r.stderr)


if __name__ == "__main__":
    harness.main()
