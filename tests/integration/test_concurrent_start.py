"""Eight processes starting together on one empty database: monitord
servers and `monitord admin` commands all migrate it at once. Every one
succeeds (admin commands exit 0, servers reach SERVING and accept the key
the bootstrap made), and each migration is applied exactly once."""

import os
import re
import subprocess
import tempfile
import unittest

import grpc

import harness

SERVERS = 4
LIST_KEYS = 3  # plus one bootstrap: eight processes


class ConcurrentStart(unittest.TestCase):
    def test_servers_and_admin_commands_on_an_empty_database(self):
        db = harness.fresh_database("itest_cstart")
        tmp = tempfile.mkdtemp(prefix="mon-cstart-")
        migrations = sorted(f for f in os.listdir(os.path.join(harness.SOURCE_DIR, "sql")) if f.endswith(".sql"))

        servers, admins = [], []
        for i in range(SERVERS):
            log = open(os.path.join(tmp, "server%d.log" % i), "w")
            port_file = os.path.join(tmp, "port%d" % i)
            proc = subprocess.Popen([harness.MONITORD, "--listen", "127.0.0.1:0", "--port-file", port_file,
                                     "--database", db, "--log-level", "info"], stdout=log, stderr=subprocess.STDOUT)
            servers.append((proc, log, port_file))
        commands = [["bootstrap", "--email", "admin@example.com"]] + [["list-keys"]] * LIST_KEYS
        for args in commands:
            proc = subprocess.Popen([harness.MONITORD, "admin"] + args + ["--database", db, "--log-level", "info"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            admins.append((args[0], proc))

        try:
            outputs = []
            for name, proc in admins:
                out, err = proc.communicate(timeout=120)
                self.assertEqual(proc.returncode, 0, "admin %s failed:\n%s" % (name, err))
                outputs.append((name, out, err))
            key = outputs[0][1].strip().splitlines()[-1]

            channels = []
            for proc, log, port_file in servers:
                channel = grpc.insecure_channel(harness.wait_address(proc, port_file))
                channels.append(channel)
                harness.wait_serving(channel, timeout=60)
            # Each server knows the admin the bootstrap created (its identity store loaded after migrating).
            for channel in channels:
                harness.wait_key_accepted(channel, key)
                channel.close()
        finally:
            codes = []
            for proc, log, _ in servers:
                if proc.poll() is None:
                    proc.terminate()
                try:
                    codes.append(proc.wait(timeout=60))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    codes.append(proc.wait())
                log.close()
        self.assertEqual(codes, [0] * SERVERS)

        # Exactly once: one row per migration, and one "migration applied" among all eight logs.
        rows = harness.psql_value(db, "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations")
        self.assertEqual(rows, ",".join(str(int(m[:4])) for m in migrations))
        text = "".join(err for _, _, err in outputs)
        for i in range(SERVERS):
            with open(os.path.join(tmp, "server%d.log" % i)) as f:
                text += f.read()
        applied = re.findall(r'msg="migration applied" version=(\d+)', text)
        self.assertEqual(sorted(int(v) for v in applied), [int(m[:4]) for m in migrations])
        self.assertNotIn("migration failed", text)
        # Nothing ran against a half-built schema (undefined table or column),
        # where it could deadlock with a migration.
        self.assertNotRegex(text, r"sqlstate=(42P01|42703)")


if __name__ == "__main__":
    harness.main()
