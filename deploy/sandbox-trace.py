#!/usr/bin/env python3
"""Checks strace logs of hypod (deploy/sandbox-check.sh) against deploy/hypod.service: every
system call in SystemCallFilter's allowed set, every socket of an allowed family, no memory
made writable and executable at once. Usage: sandbox-trace.py HYPOD_BINARY TRACE..."""
import re
import subprocess
import sys

UNIT = __file__.rsplit("/", 1)[0] + "/hypod.service"


def expand(group, seen=None):
    """The system calls of a systemd group (@name), nested groups expanded."""
    seen = seen if seen is not None else set()
    out = subprocess.run(["systemd-analyze", "syscall-filter", group],
                         capture_output=True, text=True, check=True).stdout
    calls = set()
    for line in out.splitlines()[1:]:
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        if word.startswith("@"):
            if word not in seen:
                seen.add(word)
                calls |= expand(word, seen)
        else:
            calls.add(word)
    return calls


def allowed_by_unit():
    allowed, denied, families = set(), set(), set()
    for line in open(UNIT):
        line = line.strip()
        if line.startswith("SystemCallFilter="):
            value = line.split("=", 1)[1]
            target = allowed
            if value.startswith("~"):
                target, value = denied, value[1:]
            for word in value.split():
                target |= expand(word) if word.startswith("@") else {word}
        if line.startswith("RestrictAddressFamilies="):
            families |= set(line.split("=", 1)[1].split())
    return allowed - denied, families


def main():
    binary, traces = sys.argv[1], sys.argv[2:]
    allowed, families = allowed_by_unit()
    used, bad_sockets, wx, writes = {}, [], [], set()
    for trace in traces:
        lines = []
        for line in open(trace, errors="replace"):
            m = re.match(r"^(\d+)\s+(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)", line)
            if m:
                lines.append((int(m.group(1)), m.group(2), line))
        # hypod's process and threads: the pid that exec'd it, from its exec on, and every pid
        # first seen after that exec (its threads: clone's return value is a pid of the
        # sandbox's PID namespace, not the one strace logs, so threads are told by when they
        # appear; nothing else starts in the sandbox once hypod runs).
        start = next((i for i, (pid, call, line) in enumerate(lines)
                      if call == "execve" and f'"{binary}"' in line
                      and line.rstrip().endswith("= 0")), None)
        if start is None:
            sys.exit(f"{trace}: no execve of {binary} found")
        before = {pid for pid, _, _ in lines[:start]}
        mine = {lines[start][0]}
        for pid, call, line in lines[start:]:
            if pid not in mine and pid in before:
                continue
            mine.add(pid)
            used.setdefault(call, trace.rsplit(".", 1)[-1])
            if call == "socket":
                family = re.search(r"socket\((AF_[A-Z0-9]+)", line)
                if family and family.group(1) not in families:
                    bad_sockets.append(line.strip())
            if call in ("open", "openat", "creat") and re.search(r"O_(WRONLY|RDWR|CREAT)", line):
                path = re.search(r'"([^"]*)"', line)
                if path:
                    writes.add(path.group(1))
            if call in ("mkdir", "mkdirat", "unlink", "unlinkat", "rename", "renameat",
                        "renameat2", "link", "linkat", "symlink", "symlinkat"):
                writes.update(re.findall(r'"([^"]*)"', line))
            if call in ("mmap", "mprotect", "pkey_mprotect"):
                prot = " ".join(re.findall(r"PROT_[A-Z]+", line))
                if "PROT_WRITE" in prot and "PROT_EXEC" in prot:
                    wx.append(line.strip())
    outside = sorted(c for c in used if c not in allowed)
    print(f"system calls hypod made: {len(used)}: {' '.join(sorted(used))}")
    print(f"outside SystemCallFilter: {outside or 'none'}")
    print(f"sockets of a family outside RestrictAddressFamilies: {bad_sockets or 'none'}")
    print(f"writable+executable mappings (MemoryDenyWriteExecute): {wx or 'none'}")
    elsewhere = sorted(p for p in writes
                       if not (p + "/").startswith("/var/lib/hypod/") and p != "/dev/null")
    print(f"paths written: {sorted(writes)}")
    print(f"written outside the StateDirectory: {elsewhere or 'none'}")
    if outside or bad_sockets or wx or elsewhere:
        sys.exit(1)


main()
