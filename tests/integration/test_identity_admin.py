"""`monitord admin` as an operator runs it, against a fresh database:
bootstrap prints one token and nothing else on stdout and refuses a second
time; create-caller, create-key, list-keys, revoke-key and expire-key do
what they say; every change has its audit row (local-admin, admin-cli);
and neither tb_api_key nor the audit trail holds a token or a secret.

Environment (set by ctest): MON_TEST_DATABASE, MON_BUILD_DIR.
"""

import base64
import os
import re
import subprocess
import sys
import time
import unittest

BUILD_DIR = os.environ.get("MON_BUILD_DIR", "build")
MONITORD = os.path.join(BUILD_DIR, "bin", "monitord")
TOKEN_RE = re.compile(r"^mk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


def psql(conninfo, sql):
    out = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql], check=True,
                         capture_output=True, text=True)
    return out.stdout


class AdminCli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        base = os.environ["MON_TEST_DATABASE"]
        cls.dbname = "identity_admin_%d_%d" % (os.getpid(), int(time.time() * 1000) % 1000000)
        psql(base, "CREATE DATABASE %s" % cls.dbname)
        parts = [p for p in base.split() if not p.startswith("dbname=")]
        cls.db = " ".join(parts + ["dbname=" + cls.dbname])
        cls.admin_conninfo = base

    @classmethod
    def tearDownClass(cls):
        psql(cls.admin_conninfo, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % cls.dbname)

    def admin(self, *args):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("MONITORD_") or k == "DATABASE_URL":
                del env[k]
        env["MONITORD_DATABASE"] = self.db  # configured as the server would be
        return subprocess.run([MONITORD, "admin"] + list(args), capture_output=True, text=True, env=env,
                              timeout=120)

    def token_of(self, res):
        self.assertEqual(res.returncode, 0, res.stderr)
        lines = res.stdout.splitlines()
        self.assertEqual(len(lines), 1, "stdout must hold the token alone: %r" % res.stdout)
        m = TOKEN_RE.match(lines[0])
        self.assertIsNotNone(m, "not a token: %r" % lines[0])
        return lines[0], m.group(1), m.group(2)

    def key_status(self, key_id):
        res = self.admin("list-keys")
        self.assertEqual(res.returncode, 0, res.stderr)
        for line in res.stdout.splitlines():
            cols = line.split()
            if cols and cols[0] == key_id:
                return cols[2]
        self.fail("key %s not listed:\n%s" % (key_id, res.stdout))

    def test_flow(self):
        # The first admin.
        token1, id1, secret1 = self.token_of(self.admin("bootstrap", "--email", "root@example.com"))
        again = self.admin("bootstrap", "--email", "other@example.com")
        self.assertEqual(again.returncode, 1)
        self.assertEqual(again.stdout, "")
        self.assertIn("exists already", again.stderr)
        self.assertEqual(psql(self.db, "SELECT role FROM tb_caller WHERE id = 'admin'").strip(), "admin")

        # A caller and a key of its own.
        res = self.admin("create-caller", "--id", "alice", "--email", "alice@example.com", "--role", "editor",
                         "--team", "sre", "--cert-subject", "alice.example.com")
        self.assertEqual(res.returncode, 0, res.stderr)
        dup = self.admin("create-caller", "--id", "alice", "--email", "a@example.com", "--role", "viewer")
        self.assertEqual(dup.returncode, 1)
        bad_role = self.admin("create-caller", "--id", "bob", "--email", "b@example.com", "--role", "root")
        self.assertEqual(bad_role.returncode, 1)
        self.assertIn("--role", bad_role.stderr)
        token2, id2, secret2 = self.token_of(self.admin("create-key", "--caller", "alice", "--description",
                                                        "ci deploys", "--expires-in-days", "7"))
        self.assertNotEqual(id1, id2)
        missing = self.admin("create-key", "--caller", "nobody")
        self.assertEqual(missing.returncode, 1)
        self.assertEqual(missing.stdout, "")

        # Listing shows ids, never secrets.
        res = self.admin("list-keys")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn(id1, res.stdout)
        self.assertIn(id2, res.stdout)
        self.assertIn("ci deploys", res.stdout)
        for s in (secret1, secret2):
            self.assertNotIn(s, res.stdout + res.stderr)
        only = self.admin("list-keys", "--caller", "alice")
        self.assertNotIn(id1, only.stdout)
        self.assertIn(id2, only.stdout)
        self.assertEqual(self.key_status(id2), "active")

        # Revoke, twice; expire.
        res = self.admin("revoke-key", id2)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(self.key_status(id2), "revoked")
        res = self.admin("revoke-key", id2)
        self.assertEqual(res.returncode, 1)
        self.assertIn("already revoked", res.stderr)
        self.assertEqual(self.admin("revoke-key", "0000000000000000").returncode, 1)
        res = self.admin("expire-key", id1, "--at", "now")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(self.key_status(id1), "expired")
        res = self.admin("expire-key", id1, "--at", "2099-01-01T00:00:00Z")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(self.key_status(id1), "active")
        self.assertEqual(self.admin("expire-key", id1, "--at", "next week").returncode, 1)

        # Every change is audited, by local-admin from the command line.
        rows = psql(self.db, "SELECT user_id, module, host(ip_address), action_type, resource_type, resource_id "
                             "FROM tb_audit_event ORDER BY id").splitlines()
        self.assertEqual(len(rows), 7, rows)  # caller+key (bootstrap), caller, key, revoke, expire x2
        for row in rows:
            user, module, ip = row.split("|")[:3]
            self.assertEqual((user, module, ip), ("local-admin", "admin-cli", "127.0.0.1"))
        self.assertIn("local-admin|admin-cli|127.0.0.1|update|api-key|%s" % id2, rows)

        # The database holds no key in clear: not the token, not the secret in any encoding.
        dump = psql(self.db, "SELECT row_to_json(k)::text, encode(secret_hash, 'hex'), "
                             "encode(secret_hash, 'base64') FROM tb_api_key k")
        dump += psql(self.db, "SELECT row_to_json(a)::text FROM tb_audit_event a")
        dump += psql(self.db, "SELECT row_to_json(c)::text FROM tb_caller c")
        for secret in (secret1, secret2):
            raw = base64.urlsafe_b64decode(secret + "=")
            for needle in (secret, secret[:16], raw.hex(), base64.b64encode(raw).decode()):
                self.assertNotIn(needle, dump)
        self.assertNotIn("secret_hash", psql(self.db, "SELECT row_to_json(a)::text FROM tb_audit_event a"))

    def test_usage(self):
        self.assertEqual(self.admin().returncode, 2)
        self.assertEqual(self.admin("no-such-command").returncode, 2)
        res = self.admin("create-key")
        self.assertEqual(res.returncode, 2)
        self.assertIn("--caller: required", res.stderr)
        self.assertEqual(self.admin("revoke-key").returncode, 2)
        self.assertEqual(self.admin("list-keys", "--no-such-option", "x").returncode, 2)
        for cmd in ("create-caller", "create-key", "bootstrap", "list-keys", "revoke-key", "expire-key"):
            res = self.admin(cmd, "--help")
            self.assertEqual(res.returncode, 0)
            self.assertIn("Usage: monitord admin " + cmd, res.stdout)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
