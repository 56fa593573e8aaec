"""AccessService end to end, through python3-grpcio against a real monitord
with authentication on: an admin made with `monitord admin bootstrap`
creates an editor and a viewer and keys for them; each change writes
exactly one audit event in its transaction, without the token; a refused
call leaves an access-denied event; missing, wrong, revoked and expired
keys are UNAUTHENTICATED; and, with the test-only failpoint
MONITORD_FAILPOINTS=access.after_write, a failure after the write leaves
neither the change nor its event."""

import os
import subprocess
import time
import unittest

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

import harness


harness.api_stubs()
from monitoring.v1 import access_pb2, access_pb2_grpc, common_pb2  # noqa: E402

SC = grpc.StatusCode
ROLE_VIEWER = common_pb2.CALLER_ROLE_VIEWER
ROLE_EDITOR = common_pb2.CALLER_ROLE_EDITOR


def psql(conninfo, sql):
    """The rows of sql as a list of lists of text (psql unaligned, tuples only)."""
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql],
                       check=True, capture_output=True, text=True)
    return [line.split("\t") for line in r.stdout.splitlines() if line != ""]


def scalar(conninfo, sql):
    return psql(conninfo, sql)[0][0]


def quote(text):
    return "'" + text.replace("'", "''") + "'"


def bearer(token):
    return (("authorization", "Bearer " + token),)


def secret_of(token):
    """The secret part of "mk_<key id>_<secret>"."""
    return token.split("_", 2)[2]


def ts_in(seconds):
    t = timestamp_pb2.Timestamp()
    t.FromMilliseconds(int((time.time() + seconds) * 1000))
    return t


def eventually(fn, timeout=5.0, interval=0.05):
    """Calls fn until it returns a true value or timeout passes; returns the last value."""
    deadline = time.time() + timeout
    while True:
        value = fn()
        if value or time.time() >= deadline:
            return value
        time.sleep(interval)


def whoami(stub, token, timeout=10):
    return stub.GetCallerIdentity(access_pb2.GetCallerIdentityRequest(), metadata=bearer(token), timeout=timeout)


def wait_key_works(stub, srv, token, timeout=10):
    """The server reloads its keys after a change (NOTIFY); wait until token authenticates."""
    def works():
        try:
            whoami(stub, token, timeout=2)
            return True
        except grpc.RpcError as e:
            if e.code() != SC.UNAUTHENTICATED:
                raise
            return False
    if not eventually(works, timeout):
        raise AssertionError("key %s... never authenticated:\n%s" % (token[:20], srv.read_log()[-4000:]))


class AccessService(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = harness.fresh_database("itest_access")
        cls.srv = harness.Monitord(cls.db)
        cls.srv.wait_serving()
        cls.stub = access_pb2_grpc.AccessServiceStub(cls.srv.channel)
        cls.admin = cls.srv.admin_key()
        cls.wait_key_works(cls.admin)
        cls.tokens = [cls.admin]
        suffix = str(os.getpid())
        cls.editor_id = "editor-" + suffix
        cls.viewer_id = "viewer-" + suffix
        for cid, email, role in ((cls.editor_id, "ed@example.com", ROLE_EDITOR),
                                 (cls.viewer_id, "vi@example.com", ROLE_VIEWER)):
            cls.stub.CreateCaller(access_pb2.CreateCallerRequest(
                caller=access_pb2.Caller(id=cid, email=email, team="ops", role=role)),
                metadata=bearer(cls.admin), timeout=10)
        cls.editor = cls.new_key(cls.editor_id, "editor's first key")
        cls.viewer = cls.new_key(cls.viewer_id, "viewer's first key")

    @classmethod
    def tearDownClass(cls):
        code = cls.srv.stop()
        if code != 0:
            raise AssertionError("monitord exit code %d:\n%s" % (code, cls.srv.read_log()[-6000:]))

    @classmethod
    def new_key(cls, caller_id, description, expires_at=None):
        """An admin-made key for caller_id, once it authenticates."""
        resp = cls.stub.CreateApiKey(access_pb2.CreateApiKeyRequest(
            caller_id=caller_id, description=description, expires_at=expires_at),
            metadata=bearer(cls.admin), timeout=10)
        cls.tokens.append(resp.token)
        cls.wait_key_works(resp.token)
        return resp.token

    @classmethod
    def whoami(cls, token, timeout=10):
        return whoami(cls.stub, token, timeout)

    @classmethod
    def wait_key_works(cls, token, timeout=10):
        wait_key_works(cls.stub, cls.srv, token, timeout)

    def assert_code(self, code, fn, *args, **kwargs):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kwargs)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception.details()

    def audit_count(self, where):
        return int(scalar(self.db, "SELECT count(*) FROM tb_audit_event WHERE " + where))

    # ---- identity and roles ----

    def test_whoami(self):
        me = self.whoami(self.editor)
        self.assertEqual(me.caller.id, self.editor_id)
        self.assertEqual(me.caller.role, ROLE_EDITOR)
        self.assertEqual(me.caller.team, "ops")
        self.assertEqual(me.auth_method, access_pb2.AUTH_METHOD_API_KEY)
        self.assertEqual(me.key_id, self.editor.split("_")[1])
        self.assertTrue(me.caller.HasField("created_at"))
        self.assertFalse(me.caller.HasField("disabled_at"))

    def test_editor_creates_a_key_for_itself_with_one_audit_event(self):
        resp = self.stub.CreateApiKey(access_pb2.CreateApiKeyRequest(description="ci deploys"),
                                      metadata=bearer(self.editor), timeout=10)
        self.tokens.append(resp.token)
        key = resp.api_key
        self.assertTrue(resp.token.startswith("mk_" + key.id + "_"))
        self.assertEqual(key.caller_id, self.editor_id)
        self.assertFalse(key.HasField("expires_at"))
        rows = psql(self.db, "SELECT user_id, user_role, action_type, resource_type, outcome, module,"
                             " before_data IS NULL, after_data->>'description', after_data::text, changes::text,"
                             " request_id IS NOT NULL, host(ip_address)"
                             " FROM tb_audit_event WHERE resource_id = " + quote(key.id))
        self.assertEqual(len(rows), 1, rows)
        user, role, action, rtype, outcome, module, no_before, desc, after, changes, has_req, ip = rows[0]
        self.assertEqual((user, role, action, rtype, outcome, module), (self.editor_id, "editor", "create",
                                                                        "api-key", "success", "access"))
        self.assertEqual((no_before, desc, has_req, ip), ("t", "ci deploys", "t", "127.0.0.1"))
        for text in (after, changes):
            self.assertNotIn(secret_of(resp.token), text)
            self.assertNotIn("mk_", text)
            self.assertNotIn("token", text)

    def test_editor_cannot_create_a_key_for_another_caller(self):
        details = self.assert_code(SC.PERMISSION_DENIED, self.stub.CreateApiKey,
                                   access_pb2.CreateApiKeyRequest(caller_id=self.viewer_id),
                                   metadata=bearer(self.editor), timeout=10)
        self.assertIn("caller_id", details)

    def test_viewer_calling_create_caller_is_denied_and_audited(self):
        before = self.audit_count("action_type = 'access-denied' AND user_id = " + quote(self.viewer_id))
        self.assert_code(SC.PERMISSION_DENIED, self.stub.CreateCaller,
                         access_pb2.CreateCallerRequest(caller=access_pb2.Caller(
                             id="nobody", email="n@example.com", role=ROLE_VIEWER)),
                         metadata=bearer(self.viewer), timeout=10)
        where = ("action_type = 'access-denied' AND outcome = 'failure' AND resource_type = 'rpc-method'"
                 " AND resource_id = '/monitoring.v1.AccessService/CreateCaller'"
                 " AND user_id = " + quote(self.viewer_id) + " AND user_role = 'viewer'"
                 " AND failure_reason <> ''")
        self.assertTrue(eventually(lambda: self.audit_count(where) >= 1 and
                                   self.audit_count("action_type = 'access-denied' AND user_id = " +
                                                    quote(self.viewer_id)) > before),
                        "no access-denied event within 5 s")
        self.assertEqual(int(scalar(self.db, "SELECT count(*) FROM tb_caller WHERE id = 'nobody'")), 0)

    def test_missing_wrong_revoked_and_expired_keys_are_unauthenticated(self):
        call = self.stub.GetCallerIdentity
        req = access_pb2.GetCallerIdentityRequest()
        self.assert_code(SC.UNAUTHENTICATED, call, req, timeout=10)
        self.assert_code(SC.UNAUTHENTICATED, call, req, metadata=bearer("not-a-key"), timeout=10)
        wrong = "mk_0123456789abcdef_" + "A" * 43
        self.assert_code(SC.UNAUTHENTICATED, call, req, metadata=bearer(wrong), timeout=10)
        # a real key id with the wrong secret
        forged = self.viewer[:len("mk_0123456789abcdef_")] + "B" * 43
        self.assert_code(SC.UNAUTHENTICATED, call, req, metadata=bearer(forged), timeout=10)

        revoked = self.new_key(self.viewer_id, "to revoke")
        key_id = revoked.split("_")[1]
        resp = self.stub.RevokeApiKey(access_pb2.RevokeApiKeyRequest(key_id=key_id), metadata=bearer(self.viewer),
                                      timeout=10)
        self.assertTrue(resp.api_key.HasField("revoked_at"))
        self.assertTrue(eventually(lambda: self._is_unauthenticated(revoked)), "revoked key still works")

        expiring = self.new_key(self.viewer_id, "short-lived", expires_at=ts_in(3))
        self.assertTrue(eventually(lambda: self._is_unauthenticated(expiring), timeout=10), "expired key works")
        # Refusals are audited too, naming the key by its public id only.
        self.assertTrue(eventually(lambda: self.audit_count(
            "action_type = 'access-denied' AND metadata->>'key_id' = " + quote(key_id)) >= 1))

    def _is_unauthenticated(self, token):
        try:
            self.whoami(token, timeout=2)
            return False
        except grpc.RpcError as e:
            return e.code() == SC.UNAUTHENTICATED

    # ---- keys ----

    def test_revoke_twice_is_failed_precondition_and_others_keys_are_not_found(self):
        token = self.new_key(self.viewer_id, "revoke twice")
        key_id = token.split("_")[1]
        self.assert_code(SC.NOT_FOUND, self.stub.RevokeApiKey, access_pb2.RevokeApiKeyRequest(key_id=key_id),
                         metadata=bearer(self.editor), timeout=10)
        self.stub.RevokeApiKey(access_pb2.RevokeApiKeyRequest(key_id=key_id), metadata=bearer(self.admin),
                               timeout=10)
        self.assert_code(SC.FAILED_PRECONDITION, self.stub.RevokeApiKey,
                         access_pb2.RevokeApiKeyRequest(key_id=key_id), metadata=bearer(self.admin), timeout=10)
        self.assertEqual(self.audit_count("action_type = 'execute' AND resource_type = 'api-key' AND resource_id = " +
                                          quote(key_id)), 1)

    def test_update_api_key_records_the_change(self):
        token = self.new_key(self.editor_id, "old words")
        key_id = token.split("_")[1]
        resp = self.stub.UpdateApiKey(access_pb2.UpdateApiKeyRequest(
            api_key=access_pb2.ApiKey(id=key_id, description="new words", expires_at=ts_in(3600)),
            update_mask=field_mask_pb2.FieldMask(paths=["description", "expires_at"])),
            metadata=bearer(self.editor), timeout=10)
        self.assertEqual(resp.api_key.description, "new words")
        self.assertTrue(resp.api_key.HasField("expires_at"))
        rows = psql(self.db, "SELECT changes->'description'->>'from', changes->'description'->>'to',"
                             " changes ? 'expires_at', changes ? 'id' FROM tb_audit_event"
                             " WHERE action_type = 'update' AND resource_id = " + quote(key_id))
        self.assertEqual(rows, [["old words", "new words", "t", "f"]])
        self.assert_code(SC.INVALID_ARGUMENT, self.stub.UpdateApiKey, access_pb2.UpdateApiKeyRequest(
            api_key=access_pb2.ApiKey(id=key_id), update_mask=field_mask_pb2.FieldMask(paths=["caller_id"])),
            metadata=bearer(self.editor), timeout=10)
        self.assert_code(SC.INVALID_ARGUMENT, self.stub.UpdateApiKey, access_pb2.UpdateApiKeyRequest(
            api_key=access_pb2.ApiKey(id=key_id, expires_at=ts_in(-60)),
            update_mask=field_mask_pb2.FieldMask(paths=["expires_at"])), metadata=bearer(self.editor), timeout=10)

    def test_list_api_keys_pages_and_scopes(self):
        pager = "pager-" + str(os.getpid())
        self.stub.CreateCaller(access_pb2.CreateCallerRequest(
            caller=access_pb2.Caller(id=pager, email="p@example.com", role=ROLE_VIEWER)),
            metadata=bearer(self.admin), timeout=10)
        made = []
        for i in range(5):
            made.append(self.stub.CreateApiKey(access_pb2.CreateApiKeyRequest(caller_id=pager, description=str(i)),
                                               metadata=bearer(self.admin), timeout=10).api_key.id)
        seen, token, pages = [], "", 0
        while True:
            resp = self.stub.ListApiKeys(access_pb2.ListApiKeysRequest(caller_id=pager, page_size=2,
                                                                       page_token=token),
                                         metadata=bearer(self.admin), timeout=10)
            seen += [k.id for k in resp.api_keys]
            pages += 1
            token = resp.next_page_token
            if not token:
                break
            self.assertLessEqual(pages, 3)
            # a token from other filters is refused
            self.assert_code(SC.INVALID_ARGUMENT, self.stub.ListApiKeys, access_pb2.ListApiKeysRequest(
                caller_id=pager, page_size=2, page_token=token, show_revoked=True),
                metadata=bearer(self.admin), timeout=10)
        self.assertEqual(seen, made)
        # A viewer sees its own keys only, and may not name another caller.
        mine = self.stub.ListApiKeys(access_pb2.ListApiKeysRequest(), metadata=bearer(self.viewer), timeout=10)
        self.assertTrue(mine.api_keys)
        self.assertEqual({k.caller_id for k in mine.api_keys}, {self.viewer_id})
        self.assert_code(SC.PERMISSION_DENIED, self.stub.ListApiKeys, access_pb2.ListApiKeysRequest(caller_id=pager),
                         metadata=bearer(self.viewer), timeout=10)
        self.assert_code(SC.INVALID_ARGUMENT, self.stub.ListApiKeys, access_pb2.ListApiKeysRequest(page_size=-1),
                         metadata=bearer(self.viewer), timeout=10)

    def test_create_api_key_validates(self):
        self.assert_code(SC.INVALID_ARGUMENT, self.stub.CreateApiKey,
                         access_pb2.CreateApiKeyRequest(expires_at=ts_in(-10)), metadata=bearer(self.editor),
                         timeout=10)
        details = self.assert_code(SC.INVALID_ARGUMENT, self.stub.CreateApiKey,
                                   access_pb2.CreateApiKeyRequest(description="x" * 300),
                                   metadata=bearer(self.editor), timeout=10)
        self.assertIn("description", details)
        self.assert_code(SC.NOT_FOUND, self.stub.CreateApiKey, access_pb2.CreateApiKeyRequest(caller_id="ghost"),
                         metadata=bearer(self.admin), timeout=10)

    # ---- callers ----

    def test_create_caller_validates(self):
        bad = [
            (access_pb2.Caller(id="Bad Id", email="a@example.com", role=ROLE_VIEWER), "caller.id"),
            (access_pb2.Caller(id="x" * 51, email="a@example.com", role=ROLE_VIEWER), "caller.id"),
            (access_pb2.Caller(id="ok", email="not-an-address", role=ROLE_VIEWER), "caller.email"),
            (access_pb2.Caller(id="ok", email="a@localhost", role=ROLE_VIEWER), "caller.email"),
            (access_pb2.Caller(id="ok", email="a@example.com"), "caller.role"),
            (access_pb2.Caller(id="ok", email="a@example.com", role=ROLE_VIEWER, team="t" * 101), "caller.team"),
        ]
        for caller, field in bad:
            details = self.assert_code(SC.INVALID_ARGUMENT, self.stub.CreateCaller,
                                       access_pb2.CreateCallerRequest(caller=caller), metadata=bearer(self.admin),
                                       timeout=10)
            self.assertIn(field, details)
        self.assert_code(SC.ALREADY_EXISTS, self.stub.CreateCaller, access_pb2.CreateCallerRequest(
            caller=access_pb2.Caller(id=self.editor_id, email="x@example.com", role=ROLE_VIEWER)),
            metadata=bearer(self.admin), timeout=10)

    def test_update_and_list_callers(self):
        cid = "mover-" + str(os.getpid())
        self.stub.CreateCaller(access_pb2.CreateCallerRequest(
            caller=access_pb2.Caller(id=cid, email="m@example.com", team="red", role=ROLE_VIEWER)),
            metadata=bearer(self.admin), timeout=10)
        resp = self.stub.UpdateCaller(access_pb2.UpdateCallerRequest(
            caller=access_pb2.Caller(id=cid, team="blue", role=ROLE_EDITOR, email="ignored@example.com"),
            update_mask=field_mask_pb2.FieldMask(paths=["team", "role"])), metadata=bearer(self.admin), timeout=10)
        self.assertEqual((resp.caller.team, resp.caller.role, resp.caller.email), ("blue", ROLE_EDITOR,
                                                                                    "m@example.com"))
        rows = psql(self.db, "SELECT changes->'team'->>'from', changes->'team'->>'to', changes->'role'->>'to',"
                             " changes ? 'email' FROM tb_audit_event WHERE action_type = 'update'"
                             " AND resource_type = 'caller' AND resource_id = " + quote(cid))
        self.assertEqual(rows, [["red", "blue", "editor", "f"]])
        listed = self.stub.ListCallers(access_pb2.ListCallersRequest(team="blue", roles=[ROLE_EDITOR]),
                                       metadata=bearer(self.admin), timeout=10)
        self.assertIn(cid, [c.id for c in listed.callers])
        self.assertEqual(listed.total_size, len(listed.callers))
        self.assert_code(SC.INVALID_ARGUMENT, self.stub.UpdateCaller, access_pb2.UpdateCallerRequest(
            caller=access_pb2.Caller(id=cid), update_mask=field_mask_pb2.FieldMask()), metadata=bearer(self.admin),
            timeout=10)

    def test_disable_caller_stops_its_keys(self):
        cid = "leaver-" + str(os.getpid())
        self.stub.CreateCaller(access_pb2.CreateCallerRequest(
            caller=access_pb2.Caller(id=cid, email="l@example.com", role=ROLE_VIEWER)),
            metadata=bearer(self.admin), timeout=10)
        token = self.new_key(cid, "leaver's key")
        resp = self.stub.DisableCaller(access_pb2.DisableCallerRequest(caller_id=cid), metadata=bearer(self.admin),
                                       timeout=10)
        self.assertTrue(resp.caller.HasField("disabled_at"))
        self.assertTrue(eventually(lambda: self._is_unauthenticated(token)), "a disabled caller's key still works")
        self.assert_code(SC.FAILED_PRECONDITION, self.stub.DisableCaller,
                         access_pb2.DisableCallerRequest(caller_id=cid), metadata=bearer(self.admin), timeout=10)
        me = self.whoami(self.admin).caller.id
        self.assert_code(SC.FAILED_PRECONDITION, self.stub.DisableCaller,
                         access_pb2.DisableCallerRequest(caller_id=me), metadata=bearer(self.admin), timeout=10)

    # ---- secrets ----

    def test_no_token_is_stored_or_audited(self):
        """The database holds no API key in clear, in the key table or in the audit trail."""
        keys = "\n".join(r[0] for r in psql(self.db, "SELECT t::text FROM tb_api_key t"))
        audit = "\n".join(r[0] for r in psql(self.db, "SELECT t::text FROM tb_audit_event t"))
        self.assertTrue(keys)
        for token in self.tokens:
            for text in (keys, audit):
                self.assertNotIn(token, text)
                self.assertNotIn(secret_of(token), text)
        log = self.srv.read_log()
        for token in self.tokens:
            self.assertNotIn(secret_of(token), log)


class FailureAfterWrite(unittest.TestCase):
    """MONITORD_FAILPOINTS=access.after_write (test only): the change and its event roll back together."""

    @classmethod
    def setUpClass(cls):
        cls.db = harness.fresh_database("itest_access_fp")
        cls.srv = harness.Monitord(cls.db, env={"MONITORD_FAILPOINTS": "access.after_write"})
        cls.srv.wait_serving()
        cls.stub = access_pb2_grpc.AccessServiceStub(cls.srv.channel)
        cls.admin = cls.srv.admin_key()
        wait_key_works(cls.stub, cls.srv, cls.admin)

    @classmethod
    def tearDownClass(cls):
        code = cls.srv.stop()
        if code != 0:
            raise AssertionError("monitord exit code %d:\n%s" % (code, cls.srv.read_log()[-6000:]))

    def test_failure_after_write_leaves_neither_change_nor_event(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.CreateApiKey(access_pb2.CreateApiKeyRequest(description="failpoint"),
                                   metadata=bearer(self.admin), timeout=10)
        self.assertEqual(cm.exception.code(), SC.INTERNAL)
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.CreateCaller(access_pb2.CreateCallerRequest(caller=access_pb2.Caller(
                id="fp-caller", email="fp@example.com", role=ROLE_VIEWER)), metadata=bearer(self.admin), timeout=10)
        self.assertEqual(cm.exception.code(), SC.INTERNAL)
        self.assertEqual(scalar(self.db, "SELECT count(*) FROM tb_api_key WHERE description = 'failpoint'"), "0")
        self.assertEqual(scalar(self.db, "SELECT count(*) FROM tb_caller WHERE id = 'fp-caller'"), "0")
        self.assertEqual(scalar(self.db, "SELECT count(*) FROM tb_audit_event WHERE module = 'access'"), "0")
        # Reads are unaffected.
        self.stub.GetCallerIdentity(access_pb2.GetCallerIdentityRequest(), metadata=bearer(self.admin), timeout=10)


if __name__ == "__main__":
    harness.main()
