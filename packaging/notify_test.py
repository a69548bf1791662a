#!/usr/bin/env python3
"""Runs the agent the way systemd runs a Type=notify service, without systemd.

systemd hands a notify service two things: NOTIFY_SOCKET (a Unix datagram
socket it listens on) and, with WatchdogSec=, WATCHDOG_USEC. This script
plays systemd's part: it binds the socket, starts `outlet-agent run` with a
throw-away config (temp data dir, no clock check, no display, a loopback
WhatsApp endpoint on the discard port that refuses connections, so the
agent cycles connecting/reconnecting without any network), records every
datagram with its arrival time, then sends SIGTERM like `systemctl stop`.

Checks (one line each, "PASS name" or "FAIL name: why"; exit status 1 if
any failed):
  ready      READY=1 arrives
  status     at least two different STATUS= texts (state changes reported)
  watchdog   WATCHDOG=1 every ~1 s for WATCHDOG_USEC=2 s (half the interval),
             never a gap that would let systemd's watchdog fire
  stopping   STOPPING=1 after SIGTERM
  exit       exit status 0 after SIGTERM

Usage: notify_test.py AGENT_BINARY [--clock MODE] [--user UID] [--wrap CMD ...]
  --clock: clock.check for the run (default "off"). With "ntp" on a machine
          whose clock is not NTP-synchronised the agent stays in
          waiting_for_clock, so one STATUS= text is enough.
  --user: run the agent under this uid/gid with no supplementary groups
          (via setpriv; needs root), like the service's own user. SQLite,
          for one, behaves differently as root (it chowns its journals).
  --wrap: run the agent under a command (e.g. strace); timing checks are
          then skipped, only the protocol is checked, and SIGTERM goes to
          the agent process itself, not to the wrapper.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

WATCHDOG_USEC = 2_000_000
# Every deadline below is an upper bound on waiting for a condition; the
# loop returns as soon as the condition holds.
READY_DEADLINE = 30.0
OBSERVE_DEADLINE = 30.0
EXIT_DEADLINE = 25.0
WANT_PINGS = 6

CONFIG = """\
[outlet]
id = "notify-test"
name = "Notify test"

[storage]
data_dir = "{data_dir}"

[whatsapp]
# Port 9 (discard) on loopback: nothing listens, every dial is refused.
endpoint = "ws://127.0.0.1:9/ws/chat"

[reconnect]
first_delay_ms = 200
max_delay_secs = 1
connect_timeout_secs = 5

[clock]
check = "{clock}"

[display]
driver = "none"

[log]
level = "info"
format = "text"
"""

# Added when the binary knows [mqtt]: the dashboard link dials a refused
# loopback port too (through the resolver: "localhost"), so its code paths
# run without a broker and the run never touches a real one.
MQTT = """
[mqtt]
enabled = true
broker = "mqtt://localhost:9"
"""


class Recorder:
    def __init__(self, sock):
        self.sock = sock
        self.messages = []  # (monotonic time, line)

    def pump(self, timeout):
        """Reads datagrams for up to `timeout` seconds (at least one poll)."""
        self.sock.settimeout(max(timeout, 0.0) or 0.01)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return
        now = time.monotonic()
        for line in data.decode("utf-8", "replace").split("\n"):
            if line:
                self.messages.append((now, line))

    def lines(self, prefix):
        return [(t, m) for t, m in self.messages if m.startswith(prefix)]

    def wait_for(self, condition, deadline_s, proc):
        end = time.monotonic() + deadline_s
        while not condition():
            left = end - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                return condition()
            self.pump(min(left, 0.2))
        return True


def agent_pid(root, binary):
    """The process running `binary` among `root` and its descendants."""
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            if os.path.realpath(f"/proc/{pid}/exe") == binary:
                return pid
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return None


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = os.path.realpath(sys.argv[1])
    args = sys.argv[2:]
    user = None
    clock = "off"
    wrap = []
    while args:
        if args[0] == "--clock" and len(args) > 1:
            clock = args[1]
            args = args[2:]
        elif args[0] == "--user" and len(args) > 1:
            user = int(args[1])
            args = args[2:]
        elif args[0] == "--wrap":
            wrap = args[1:]
            args = []
        else:
            print(__doc__, file=sys.stderr)
            return 2
    timing = not wrap
    if user is not None:
        setpriv = shutil.which("setpriv")
        if setpriv is None or os.geteuid() != 0:
            print("notify_test: --user needs root and setpriv (util-linux)", file=sys.stderr)
            return 2
        # Like User=/Group= with NoNewPrivileges=: no way back to root.
        wrap = [setpriv, f"--reuid={user}", f"--regid={user}", "--clear-groups",
                "--no-new-privs"] + wrap

    results = []

    def check(name, ok, why=""):
        results.append(ok)
        print(f"PASS {name}" if ok else f"FAIL {name}: {why}", flush=True)

    with tempfile.TemporaryDirectory(prefix="outlet-notify-") as tmp:
        data_dir = os.path.join(tmp, "data")
        config = os.path.join(tmp, "agent.toml")
        text = CONFIG.format(data_dir=data_dir, clock=clock)
        with open(config, "w") as f:
            f.write(text)
        resolved = subprocess.run(
            [binary, "check-config", "--config", config], capture_output=True, text=True
        ).stdout
        if "[mqtt]" in resolved:
            with open(config, "w") as f:
                f.write(text + MQTT)
        os.chmod(config, 0o644)
        sock_path = os.path.join(tmp, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(sock_path)
        if user is not None:
            # The data directory belongs to the agent's user (StateDirectory=
            # does the same); the notify socket must be writable for it.
            os.chmod(tmp, 0o755)
            os.mkdir(data_dir, 0o700)
            os.chown(data_dir, user, user)
            os.chmod(sock_path, 0o666)
        rec = Recorder(sock)

        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTLET_AGENT")}
        env.update(
            NOTIFY_SOCKET=sock_path,
            WATCHDOG_USEC=str(WATCHDOG_USEC),
            RUST_LOG="info",
        )
        env.pop("JOURNAL_STREAM", None)
        log_path = os.path.join(tmp, "agent.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                wrap + [binary, "run", "--config", config],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                ready = rec.wait_for(lambda: rec.lines("READY=1"), READY_DEADLINE, proc)
                check("ready", bool(ready), f"no READY=1 within {READY_DEADLINE:.0f} s")

                want_statuses = 2 if clock == "off" else 1

                def enough():
                    statuses = {m for _, m in rec.lines("STATUS=")}
                    return (len(rec.lines("WATCHDOG=1")) >= WANT_PINGS
                            and len(statuses) >= want_statuses)

                rec.wait_for(enough, OBSERVE_DEADLINE, proc)
                statuses = sorted({m for _, m in rec.lines("STATUS=")})
                check(
                    "status",
                    len(statuses) >= want_statuses,
                    f"distinct STATUS= seen: {statuses}",
                )
                print("  statuses: " + "; ".join(s[len("STATUS="):] for s in statuses[:6]))

                pings = [t for t, _ in rec.lines("WATCHDOG=1")]
                gaps = [b - a for a, b in zip(pings, pings[1:])]
                if len(pings) < WANT_PINGS:
                    check("watchdog", False, f"{len(pings)} WATCHDOG=1 in {OBSERVE_DEADLINE:.0f} s")
                elif not timing:
                    check("watchdog", True)
                else:
                    mean = sum(gaps) / len(gaps)
                    # Half of 2 s, at the supervisor's 0.5 s tick: 1.0-1.5 s.
                    # Never 2 s or more: systemd would kill the service.
                    ok = 0.8 <= mean <= 1.6 and max(gaps) < 2.0 and min(gaps) >= 0.9
                    check(
                        "watchdog",
                        ok,
                        f"gaps {['%.2f' % g for g in gaps]} (want mean 0.8-1.6 s, each 0.9-2.0 s)",
                    )
                    print(f"  watchdog: {len(pings)} pings, mean gap {mean:.2f} s, "
                          f"min {min(gaps):.2f} s, max {max(gaps):.2f} s")

                alive = proc.poll() is None
                if alive:
                    target = agent_pid(proc.pid, binary) if wrap else proc.pid
                    if target is None:
                        check("exit", False, "cannot find the agent's process under the wrapper")
                        return 1
                    os.kill(target, signal.SIGTERM)
                end = time.monotonic() + EXIT_DEADLINE
                while proc.poll() is None and time.monotonic() < end:
                    rec.pump(0.2)
                # Datagrams sent just before exit are still queued.
                rec.pump(0.05)
                code = proc.poll()
                check("stopping", bool(rec.lines("STOPPING=1")), "no STOPPING=1 after SIGTERM")
                check(
                    "exit",
                    alive and code == 0,
                    "agent had exited before SIGTERM" if not alive
                    else f"exit status {code} (None: still running after {EXIT_DEADLINE:.0f} s)",
                )
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                sock.close()
        if not all(results):
            with open(log_path, "rb") as log:
                tail = log.read()[-4000:].decode("utf-8", "replace")
            print("--- agent output (tail) ---\n" + tail + "\n---")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
