"""Notification delivery (server/alerts/notify.c) against receivers the test
serves on loopback: outbox rows are inserted with psql (an alert and its rule
first), monitord sends them, and the receiver checks what arrives.

  * a webhook is POSTed with a JSON body, Idempotency-Key, and an HMAC-SHA256
    signature (X-Monitord-Signature: v1=hex(hmac(secret, timestamp "." body)))
    that verifies with the secret sealed by `monitord admin seal-secret`;
  * a receiver answering 500 is retried with growing waits, with the same
    idempotency key, then dead-lettered (failed) after --notify-max-attempts;
  * a 400 fails at once; a 429 is retried;
  * every outcome lands on the outbox row and in the alert's notifications_sent;
  * two replicas deliver each row once; a dead replica's claim expires;
  * Slack (incoming webhook) and PagerDuty (Events API v2) payload shapes;
  * a 'fired' row whose alert was resolved first is skipped; email stays pending
    for the relay; a secret sealed for another integration does not open.
"""

import hashlib
import hmac
import http.server
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MAX_ATTEMPTS = 3


class Receiver:
    """A loopback HTTP server recording every request. Answers by path:
    /ok 200, /e500 500, /e400 400, /slow429 429 then 200, /after503 503
    with Retry-After: 4 then 200 (per idempotency key), /slack 200 "ok",
    /pd 202."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        self.seen_429 = set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                path = self.path
                with outer.lock:
                    outer.requests.append({"path": path, "headers": dict(self.headers), "body": body,
                                           "at": time.monotonic()})
                    key = self.headers.get("Idempotency-Key")
                    extra = {}
                    if path in ("/slow429", "/after503") and key not in outer.seen_429:
                        outer.seen_429.add(key)
                        code = 429 if path == "/slow429" else 503
                        if path == "/after503":
                            extra["Retry-After"] = "4"
                    else:
                        code = {"/ok": 200, "/e500": 500, "/e400": 400, "/slow429": 200, "/after503": 200,
                                "/slack": 200, "/pd": 202}.get(path, 404)
                out = b'{"status":"success"}' if path == "/pd" else b"ok"
                self.send_response(code)
                self.send_header("Content-Length", str(len(out)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def by_key(self, key):
        with self.lock:
            return [r for r in self.requests if r["headers"].get("Idempotency-Key") == key]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def query(conninfo, sql):
    r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql], check=True,
                       capture_output=True, text=True)
    return r.stdout.strip()


def q(s):
    return "'" + s.replace("'", "''") + "'"


def wait_for(what, fn, timeout=30):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.1)


class AlertNotifyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = harness.fresh_database("alert_notify")
        cls.tmp = tempfile.mkdtemp(prefix="mon-notify-")
        cls.key_file = os.path.join(cls.tmp, "master.key")
        with open(cls.key_file, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        os.chmod(cls.key_file, 0o600)
        cls.args = ["--secrets-key-file", cls.key_file, "--notify-max-attempts", str(MAX_ATTEMPTS),
                    "--notify-timeout-ms", "3000"]
        cls.srv = harness.Monitord(cls.db, cls.args)
        cls.srv.wait_serving()
        cls.rx = Receiver()
        cls.secret = "whsec-" + secrets.token_hex(16)
        # Webhook integrations, one per receiver behaviour, all with the same signing secret.
        for name in ("ok", "e500", "e400", "slow429", "after503"):
            cls.add_integration("int-" + name, "webhook", webhook_url=cls.rx.url("/" + name),
                                webhook_secret=cls.seal("int-" + name, "webhook_secret", cls.secret))
        # A Slack incoming webhook for channel #ops.
        cls.add_integration("int-slack", "webhook", webhook_url=cls.rx.url("/slack"),
                            settings='{"slack_channel": "#ops"}')
        # PagerDuty: routing key in the sealed authentication, URL from endpoint_url.
        cls.add_integration("int-pd", "webhook", endpoint_url=cls.rx.url("/pd"),
                            authentication=cls.seal("int-pd", "authentication", '{"routing_key": "R0UTINGKEY"}'))
        # A secret sealed for another integration: must not open here.
        cls.add_integration("int-moved", "webhook", webhook_url=cls.rx.url("/ok"),
                            webhook_secret=cls.seal("int-ok", "webhook_secret", cls.secret))
        harness.psql(cls.db, "INSERT INTO tb_alert_rule (id, name, severity, status, metric_name, "
                             "comparison_operator, threshold, created_by) VALUES ('rul-notify', 'CPU high', "
                             "'critical', 'disabled', 'cpu.usage', 'gt', 90, 'test')")

    @classmethod
    def tearDownClass(cls):
        cls.rx.close()
        code = cls.srv.stop()
        log = cls.srv.read_log()
        if code != 0 or "ERROR: AddressSanitizer" in log or "runtime error:" in log:
            raise AssertionError("monitord exit code %d, log:\n%s" % (code, log[-6000:]))

    @classmethod
    def seal(cls, integration, column, secret):
        r = subprocess.run([harness.MONITORD, "admin", "seal-secret", "--integration", integration, "--column",
                            column, "--secrets-key-file", cls.key_file], input=secret + "\n", capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("seal-secret failed: " + r.stderr)
        sealed = r.stdout.strip()
        assert sealed.startswith("v1:") and secret not in sealed, sealed
        return sealed

    @classmethod
    def add_integration(cls, id, type, webhook_url=None, endpoint_url=None, webhook_secret=None,
                        authentication=None, settings="{}"):
        def lit(v):
            return "NULL" if v is None else q(v)
        harness.psql(cls.db, "INSERT INTO tb_integration_health (id, name, integration_type, configured_at, "
                             "webhook_url, endpoint_url, webhook_secret, authentication, settings) VALUES "
                             "(%s, %s, %s, now(), %s, %s, %s, %s, %s::jsonb)"
                     % (q(id), q(id), q(type), lit(webhook_url), lit(endpoint_url), lit(webhook_secret),
                        "NULL" if authentication is None else "to_jsonb(%s::text)" % q(authentication),
                        q(settings)))

    def new_alert(self, status="active"):
        alert_id = "alt-" + secrets.token_hex(8)
        harness.psql(self.db, "INSERT INTO tb_alert (id, alert_rule_id, group_key, status, severity, message, "
                              "current_value, threshold) VALUES (%s, 'rul-notify', %s, %s, 'critical', "
                              "'cpu at 97%%', 97, 90)" % (q(alert_id), q(alert_id), q(status)))
        return alert_id

    def payload(self, alert_id, trigger="fired", status="active"):
        return {"id": alert_id, "rule": {"id": "rul-notify", "name": "CPU high", "metric_name": "cpu.usage"},
                "status": status, "severity": "critical", "message": "cpu at 97%", "value": 97.0,
                "threshold": 90.0, "labels": {"host": "web-1"}, "triggered_at": "2026-01-02T03:04:05.000000Z",
                "trigger": trigger, "level": 0}

    def enqueue(self, alert_id, channel, recipient, trigger="fired", payload=None, wake=True, lease_s=None):
        """Inserts one outbox row as the alert store does; returns (id, idempotency key).
        With lease_s, the row is inserted as claimed by a replica (one attempt
        counted) whose lease ends in lease_s seconds."""
        row_id = "ntf-" + secrets.token_hex(8)
        key = "%s:%s:0:%s:%s" % (alert_id, trigger, channel, recipient)
        body = json.dumps(payload or self.payload(alert_id, trigger))
        sql = ("INSERT INTO tb_notification_outbox (id, alert_id, channel, recipient, trigger, idempotency_key, "
               "payload) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)"
               % (q(row_id), q(alert_id), q(channel), q(recipient), q(trigger), q(key), q(body)))
        if lease_s is not None:
            sql += ("; UPDATE tb_notification_outbox SET attempt_count = 1, last_attempt_at = now(), "
                    "next_attempt_at = now() + interval '%d seconds' WHERE id = %s" % (lease_s, q(row_id)))
        sql = "BEGIN; " + sql + ("; NOTIFY mon_alerts, '0'" if wake else "") + "; COMMIT"
        harness.psql(self.db, sql)
        return row_id, key

    def row(self, row_id):
        out = query(self.db, "SELECT row_to_json(o) FROM (SELECT status, attempt_count, error_message, "
                             "response_status_code, delivered_at, last_attempt_at, next_attempt_at FROM "
                             "tb_notification_outbox WHERE id = %s) o" % q(row_id))
        return json.loads(out)

    def wait_status(self, row_id, statuses, timeout=30):
        try:
            return wait_for("delivery %s in %s" % (row_id, statuses),
                            lambda: (lambda r: r if r["status"] in statuses else None)(self.row(row_id)), timeout)
        except AssertionError as e:
            raise AssertionError("%s; row %s; server log:\n%s" % (e, self.row(row_id), self.srv.read_log()[-4000:]))

    def sent_entry(self, alert_id, row_id):
        sent = json.loads(query(self.db, "SELECT notifications_sent FROM tb_alert WHERE id = %s" % q(alert_id)))
        for d in sent:
            if d.get("id") == row_id:
                return d
        self.fail("delivery %s not in notifications_sent of %s: %s" % (row_id, alert_id, sent))

    def assert_signed(self, req, secret):
        h = req["headers"]
        ts = h.get("X-Monitord-Timestamp")
        sig = h.get("X-Monitord-Signature")
        self.assertIsNotNone(ts, h)
        self.assertLess(abs(int(ts) - time.time()), 300)
        want = "v1=" + hmac.new(secret.encode(), ts.encode() + b"." + req["body"], hashlib.sha256).hexdigest()
        self.assertEqual(sig, want)

    # ---- tests ----

    def test_webhook_signed_and_recorded(self):
        alert_id = self.new_alert()
        row_id, key = self.enqueue(alert_id, "webhook", "int-ok")
        r = self.wait_status(row_id, ("sent",))
        self.assertEqual(r["attempt_count"], 1)
        self.assertEqual(r["response_status_code"], 200)
        self.assertIsNotNone(r["delivered_at"])
        self.assertIsNone(r["error_message"])
        reqs = self.rx.by_key(key)
        self.assertEqual(len(reqs), 1)
        req = reqs[0]
        self.assertEqual(req["path"], "/ok")
        self.assertEqual(req["headers"]["Content-Type"], "application/json")
        self.assertEqual(req["headers"]["X-Monitord-Delivery"], row_id)
        self.assert_signed(req, self.secret)
        # A tampered body does not verify.
        forged = dict(req, body=req["body"].replace(b"97", b"12"))
        with self.assertRaises(AssertionError):
            self.assert_signed(forged, self.secret)
        body = json.loads(req["body"])
        self.assertEqual(body["idempotency_key"], key)
        self.assertEqual(body["delivery_id"], row_id)
        self.assertEqual(body["trigger"], "fired")
        self.assertEqual(body["alert"]["id"], alert_id)
        self.assertEqual(body["alert"]["rule"]["name"], "CPU high")
        d = self.sent_entry(alert_id, row_id)
        self.assertEqual(d["status"], "sent")
        self.assertEqual(d["attempt_count"], 1)
        self.assertEqual(d["response_status_code"], 200)
        self.assertEqual(d["idempotency_key"], key)
        self.assertEqual(d["channel"], "webhook")
        # The integration's outbound event is recorded.
        n = query(self.db, "SELECT count(*) FROM tb_integration_event WHERE integration_id = 'int-ok' "
                           "AND event_type = 'webhook-delivery' AND success")
        self.assertGreaterEqual(int(n), 1)

    def test_server_error_retried_then_dead_lettered(self):
        alert_id = self.new_alert()
        row_id, key = self.enqueue(alert_id, "webhook", "int-e500")
        r = self.wait_status(row_id, ("failed",), timeout=60)
        self.assertEqual(r["attempt_count"], MAX_ATTEMPTS)
        self.assertEqual(r["response_status_code"], 500)
        self.assertIn("HTTP 500", r["error_message"])
        time.sleep(3)  # no attempt after the last
        reqs = self.rx.by_key(key)
        self.assertEqual(len(reqs), MAX_ATTEMPTS)
        for i, req in enumerate(reqs):
            self.assertEqual(req["headers"]["Idempotency-Key"], key)
            self.assertEqual(req["headers"]["X-Monitord-Attempt"], str(i + 1))
            self.assert_signed(req, self.secret)
            self.assertEqual(json.loads(req["body"])["idempotency_key"], key)
        # Backoff: the first retry after 1-2 s, the second after 2-4 s (plus up to a poll).
        gaps = [reqs[i + 1]["at"] - reqs[i]["at"] for i in range(len(reqs) - 1)]
        self.assertGreaterEqual(gaps[0], 0.9, gaps)
        self.assertGreaterEqual(gaps[1], 1.9, gaps)
        self.assertLess(gaps[0], 10, gaps)
        d = self.sent_entry(alert_id, row_id)
        self.assertEqual(d["status"], "failed")
        self.assertEqual(d["attempt_count"], MAX_ATTEMPTS)
        self.assertEqual(d["response_status_code"], 500)

    def test_client_error_fails_at_once(self):
        alert_id = self.new_alert()
        row_id, key = self.enqueue(alert_id, "webhook", "int-e400")
        r = self.wait_status(row_id, ("failed",))
        self.assertEqual(r["attempt_count"], 1)
        self.assertEqual(r["response_status_code"], 400)
        time.sleep(3)
        self.assertEqual(len(self.rx.by_key(key)), 1)
        self.assertEqual(self.sent_entry(alert_id, row_id)["status"], "failed")

    def test_too_many_requests_retried(self):
        alert_id = self.new_alert()
        row_id, key = self.enqueue(alert_id, "webhook", "int-slow429")
        r = self.wait_status(row_id, ("retrying", "sent"))
        if r["status"] == "retrying":
            self.assertEqual(r["response_status_code"], 429)
            self.assertEqual(self.sent_entry(alert_id, row_id)["status"], "retrying")
        r = self.wait_status(row_id, ("sent",))
        self.assertEqual(r["attempt_count"], 2)
        reqs = self.rx.by_key(key)
        self.assertEqual([q["headers"]["Idempotency-Key"] for q in reqs], [key, key])

    def test_retry_after_honoured(self):
        alert_id = self.new_alert()
        row_id, key = self.enqueue(alert_id, "webhook", "int-after503")
        r = self.wait_status(row_id, ("sent",))
        self.assertEqual(r["attempt_count"], 2)
        reqs = self.rx.by_key(key)
        self.assertEqual(len(reqs), 2)
        # The first backoff is 1-2 s; Retry-After asks for 4.
        self.assertGreaterEqual(reqs[1]["at"] - reqs[0]["at"], 3.9)

    def test_secret_of_another_integration_does_not_open(self):
        alert_id = self.new_alert()
        row_id, key = self.enqueue(alert_id, "webhook", "int-moved")
        r = self.wait_status(row_id, ("failed",))
        self.assertEqual(r["attempt_count"], 1)
        self.assertIn("could not open", r["error_message"])
        self.assertEqual(self.rx.by_key(key), [])

    def test_unknown_integration_fails(self):
        alert_id = self.new_alert()
        row_id, _ = self.enqueue(alert_id, "webhook", "int-nope")
        r = self.wait_status(row_id, ("failed",))
        self.assertIn("does not exist", r["error_message"])

    def test_slack_payload(self):
        alert_id = self.new_alert()
        row_id, key = self.enqueue(alert_id, "slack", "#ops")
        self.wait_status(row_id, ("sent",))
        req = self.rx.by_key(key)[0]
        self.assertEqual(req["path"], "/slack")
        self.assertNotIn("X-Monitord-Signature", req["headers"])
        body = json.loads(req["body"])
        self.assertEqual(body["channel"], "#ops")
        self.assertIn("Alert fired", body["text"])
        self.assertIn("CRITICAL", body["text"])
        self.assertIn("CPU high", body["text"])
        self.assertEqual(body["blocks"][0]["type"], "section")
        self.assertEqual(body["blocks"][0]["text"]["type"], "mrkdwn")
        self.assertIn(alert_id, body["blocks"][1]["elements"][0]["text"])
        # A channel nothing posts to fails at once.
        row2, _ = self.enqueue(alert_id, "slack", "#nowhere")
        self.assertIn("Slack channel", self.wait_status(row2, ("failed",))["error_message"])

    def test_pagerduty_payload(self):
        alert_id = self.new_alert()
        row_id, key = self.enqueue(alert_id, "pagerduty", "int-pd")
        self.wait_status(row_id, ("sent",))
        self.assertEqual(self.row(row_id)["response_status_code"], 202)
        body = json.loads(self.rx.by_key(key)[0]["body"])
        self.assertEqual(body["routing_key"], "R0UTINGKEY")
        self.assertEqual(body["event_action"], "trigger")
        self.assertEqual(body["dedup_key"], alert_id)
        self.assertEqual(body["payload"]["severity"], "critical")
        self.assertEqual(body["payload"]["source"], "monitord")
        self.assertIn("CPU high", body["payload"]["summary"])
        self.assertEqual(body["payload"]["custom_details"]["id"], alert_id)
        # Resolution: event_action resolve, same dedup_key.
        harness.psql(self.db, "UPDATE tb_alert SET status = 'resolved', resolved_at = now() WHERE id = %s"
                     % q(alert_id))
        row2, key2 = self.enqueue(alert_id, "pagerduty", "int-pd", trigger="resolved",
                                  payload=self.payload(alert_id, "resolved", "resolved"))
        self.wait_status(row2, ("sent",))
        body = json.loads(self.rx.by_key(key2)[0]["body"])
        self.assertEqual(body["event_action"], "resolve")
        self.assertEqual(body["dedup_key"], alert_id)
        self.assertEqual(body["routing_key"], "R0UTINGKEY")

    def test_stale_fired_skipped_and_relay_channels_left_pending(self):
        alert_id = self.new_alert(status="resolved")
        fired, fired_key = self.enqueue(alert_id, "webhook", "int-ok")
        resolved, _ = self.enqueue(alert_id, "webhook", "int-ok", trigger="resolved",
                                   payload=self.payload(alert_id, "resolved", "resolved"))
        r = self.wait_status(fired, ("skipped",))
        self.assertIn("resolved", r["error_message"])
        self.wait_status(resolved, ("sent",))
        self.assertEqual(self.rx.by_key(fired_key), [])
        self.assertEqual(self.sent_entry(alert_id, fired)["status"], "skipped")
        # Email and SMS wait for the relay.
        live = self.new_alert()
        email, _ = self.enqueue(live, "email", "oncall@example.com")
        sms, _ = self.enqueue(live, "sms", "+15550100")
        time.sleep(3)
        self.assertEqual(self.row(email)["status"], "pending")
        self.assertEqual(self.row(email)["attempt_count"], 0)
        self.assertEqual(self.row(sms)["status"], "pending")

    def test_claim_of_a_dead_replica_expires(self):
        """A row claimed by a replica that died (attempt counted, lease running)
        is left alone until the lease ends, then sent by a live one."""
        alert_id = self.new_alert()
        row_id, key = self.enqueue(alert_id, "webhook", "int-ok", lease_s=3)
        time.sleep(1.5)
        self.assertEqual(self.row(row_id)["status"], "pending")
        self.assertEqual(self.rx.by_key(key), [])
        r = self.wait_status(row_id, ("sent",))
        self.assertEqual(r["attempt_count"], 2)
        reqs = self.rx.by_key(key)
        self.assertEqual(len(reqs), 1)
        self.assertEqual(reqs[0]["headers"]["X-Monitord-Attempt"], "2")

    def test_two_replicas_deliver_each_once(self):
        second = harness.Monitord(self.db, self.args)
        try:
            second.wait_serving()
            alert_id = self.new_alert()
            rows = []
            for i in range(40):
                rows.append(self.enqueue(alert_id, "webhook", "int-ok", trigger="test-%d" % i, wake=(i % 4 == 0)))
            for row_id, _ in rows:
                self.wait_status(row_id, ("sent",), timeout=60)
            time.sleep(1)
            for row_id, key in rows:
                self.assertEqual(len(self.rx.by_key(key)), 1, key)
                self.assertEqual(self.row(row_id)["attempt_count"], 1)
            sent = json.loads(query(self.db, "SELECT notifications_sent FROM tb_alert WHERE id = %s" % q(alert_id)))
            # notifications_sent keeps the latest 50 deliveries, all of them here, each as recorded.
            self.assertEqual(sorted(d["id"] for d in sent), sorted(r for r, _ in rows))
            self.assertTrue(all(d["status"] == "sent" for d in sent))
        finally:
            second.assert_clean_exit(self)


if __name__ == "__main__":
    unittest.main(verbosity=2)
