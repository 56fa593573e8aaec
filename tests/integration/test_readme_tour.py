"""The README's short tour, run as written, command by command.

Every `sh` block between "## A short tour" and the next section of README.md
is split into commands (a command continues over a trailing backslash and
over an open single-quoted string) and run with bash from the repository
root, as a reader would after `scripts/start.sh`. Three substitutions
only: the server's address for 127.0.0.1:50051, the build tree's bin/ for
build/bin/, and the test database through MONITORD_DATABASE (which
`monitord admin bootstrap` reads, as it would find the embedded cluster).

- a foreground command must exit 0 (a stream that never ends on its own,
  Health/Watch, must have printed SERVING when it is stopped);
- `export NAME=$(...)` sets NAME for the commands after it;
- a command ending in `&` runs in the background until the tour is over,
  and must then have printed at least one event with a `sequence`; the
  next command runs once it has printed its first line (the stream is
  open, as a reader would wait to see).
"""
import os
import re
import subprocess
import sys
import time
import unittest

from harness import BUILD_DIR, SOURCE_DIR, Monitord, fresh_database, main

README = os.path.join(SOURCE_DIR, "README.md")


def output_of(out):
    """What a background command has printed so far."""
    out.seek(0)
    return out.read()


def wait_printed(out, pred, timeout=30):
    """Waits, bounded, until what out holds satisfies pred; returns it."""
    deadline = time.monotonic() + timeout
    text = output_of(out)
    while not pred(text) and time.monotonic() < deadline:
        time.sleep(0.05)
        text = output_of(out)
    return text


def tour_blocks(text):
    """The sh code blocks of the README's "A short tour" section."""
    section = text.split("## A short tour", 1)[1]
    section = re.split(r"^## ", section, maxsplit=1, flags=re.M)[0]
    return re.findall(r"^```sh\n(.*?)^```", section, flags=re.M | re.S)


def commands(block):
    """The block's commands: comment lines dropped, continuations joined."""
    out, cur = [], ""
    for line in block.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        cur = cur + "\n" + line if cur else line
        if cur.count("'") % 2 == 1 or cur.endswith("\\"):
            continue
        out.append(cur)
        cur = ""
    if cur:
        out.append(cur)
    return out


def strip_comment(cmd):
    """Drops a trailing `# comment` outside quotes from the command's last line."""
    lines = cmd.split("\n")
    last, quote = lines[-1], None
    for i, ch in enumerate(last):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or last[i - 1] in " \t"):
            last = last[:i].rstrip()
            break
    lines[-1] = last
    return "\n".join(lines)


class ReadmeTourTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.db = fresh_database("itest_tour")
        cls.server = Monitord(cls.db)
        cls.server.wait_serving()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_tour_runs_as_written(self):
        with open(README) as f:
            blocks = tour_blocks(f.read())
        cmds = [strip_comment(c) for b in blocks for c in commands(b)]
        self.assertGreater(len(cmds), 15, "the tour's commands were not found")
        env = dict(os.environ)
        env.update({"MONITORD_DATABASE": self.db, "MONITORD_TARGET": self.server.address})
        env.pop("MONITORD_API_KEY", None)
        background = []
        try:
            for cmd in cmds:
                cmd = cmd.replace("127.0.0.1:50051", self.server.address)
                cmd = re.sub(r"(?<![\w/])build/bin/", BUILD_DIR + "/bin/", cmd)
                m = re.match(r"export (\w+)=(.*)$", cmd, flags=re.S)
                if m:
                    r = subprocess.run(["bash", "-c", "set -o pipefail; %s=%s; printf %%s \"$%s\"" % (
                        m.group(1), m.group(2), m.group(1))], cwd=SOURCE_DIR, env=env, capture_output=True,
                        text=True, timeout=120)
                    self.assertEqual(r.returncode, 0, "%s\n%s" % (cmd, r.stderr))
                    self.assertTrue(r.stdout, cmd)
                    env[m.group(1)] = r.stdout
                    continue
                if cmd.rstrip().endswith("&"):
                    out = open(os.path.join(self.server.tmp, "bg%d.out" % len(background)), "w+")
                    p = subprocess.Popen(["bash", "-c", cmd.rstrip()[:-1]], cwd=SOURCE_DIR, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
                    background.append((cmd, p, out))
                    self.assertTrue(wait_printed(out, bool), "%s printed nothing" % cmd)
                    continue
                is_endless = "/grpc.health.v1.Health/Watch" in cmd
                try:
                    r = subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], cwd=SOURCE_DIR, env=env,
                                       capture_output=True, text=True, timeout=5 if is_endless else 120)
                except subprocess.TimeoutExpired as e:
                    self.assertTrue(is_endless, cmd)
                    printed = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
                    self.assertIn("SERVING", printed, cmd)
                    continue
                self.assertEqual(r.returncode, 0, "%s\nstdout: %s\nstderr: %s" % (cmd, r.stdout, r.stderr))
                self.assertNotIn("error", r.stderr.lower(), cmd)
            for cmd, p, out in background:
                wait_printed(out, lambda text: '"sequence"' in text)
        finally:
            for cmd, p, out in background:
                os.killpg(p.pid, 15)
                p.wait(timeout=30)
        for cmd, p, out in background:
            text = output_of(out)
            out.close()
            self.assertIn('"sequence"', text, "%s printed no event:\n%s" % (cmd, text))


if __name__ == "__main__":
    sys.exit(main())
