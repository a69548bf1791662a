#!/usr/bin/env python3
"""Checks that every system call the agent made is allowed by the unit.

The unit's SystemCallFilter= (with SystemCallErrorNumber=EPERM) turns any
other system call into an EPERM error at run time: the agent would not
crash, but a feature would silently stop working (that is how ProtectClock=
would have broken clock.check = "ntp"). Without a running systemd this
cannot be observed directly, so this script compares an strace log of a
real run with the allow list systemd would build from the unit.

systemd's rules: the first SystemCallFilter= line decides the list type (an
allow list unless it starts with "~"); later plain lines add to it, later
"~" lines remove from it. Groups (@system-service, ...) are expanded with
`systemd-analyze syscall-filter`, recursively.

Usage: syscall_check.py UNIT_FILE STRACE_LOG
Prints "PASS syscalls" or "FAIL syscalls: ..." and exits 0 or 1.
"""

import re
import subprocess
import sys

_group_cache = {}


def expand(name):
    """A syscall name or @group -> set of syscall names."""
    if not name.startswith("@"):
        return {name}
    if name in _group_cache:
        return _group_cache[name]
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager", name],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = set()
    for line in out.splitlines()[1:]:  # the first line is the group's name
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        result |= expand(item)
    _group_cache[name] = result
    return result


# Sandbox switches that add their own seccomp deny filter (systemd.exec(5)).
IMPLICIT_DENY = {
    "ProtectClock": ["@clock"],
    "ProtectKernelModules": ["@module"],
    "ProtectKernelLogs": ["syslog"],
    "ProtectHostname": ["sethostname", "setdomainname"],
}
TRUE = {"yes", "true", "on", "1"}


def allowed_from_unit(path):
    allow = None
    implicit = set()
    with open(path) as f:
        for line in f:
            line = line.strip()
            key, _, value = line.partition("=")
            if key in IMPLICIT_DENY and value.strip().lower() in TRUE:
                for word in IMPLICIT_DENY[key]:
                    implicit |= expand(word)
            if not line.startswith("SystemCallFilter="):
                continue
            value = line.split("=", 1)[1].strip()
            deny = value.startswith("~")
            names = set()
            for word in value.lstrip("~").split():
                names |= expand(word)
            if allow is None:
                if deny:
                    raise SystemExit("syscall_check: deny-list filters are not handled")
                allow = names
            elif deny:
                allow -= names
            else:
                allow |= names
    if allow is None:
        raise SystemExit(f"syscall_check: no SystemCallFilter= in {path}")
    # A separate filter: it applies whatever the allow list says.
    return allow - implicit


CALL = re.compile(r"^(?:\[pid\s+)?\d*\]?\s*([a-z_][a-z0-9_]*)\(")


def used_from_strace(path):
    used = set()
    with open(path, errors="replace") as f:
        for line in f:
            # "123 name(args...) = r", "123 name(args <unfinished ...>"; skip
            # "<... name resumed>", signals and exits.
            m = CALL.match(line.split(" ", 1)[1] if line[:1].isdigit() else line)
            if m:
                used.add(m.group(1))
    return used


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    allow = allowed_from_unit(sys.argv[1])
    used = used_from_strace(sys.argv[2])
    if not used:
        print("FAIL syscalls: the strace log lists no system calls")
        return 1
    denied = sorted(used - allow)
    print(f"  {len(used)} distinct system calls used, {len(allow)} allowed by the unit")
    if denied:
        print("FAIL syscalls: used but not allowed by SystemCallFilter=: " + " ".join(denied))
        return 1
    print("PASS syscalls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
