"""Reading Linux's /proc: parent links, process states, memory and open file descriptors.

The one reader of /proc for the leak check (`testing`), the tests and the benchmarks. A
leaf: imports nothing of ours. Every function tolerates a process that exits mid-read.
"""

from __future__ import annotations

import os


def stat_fields(pid: int) -> list[str] | None:
    """`/proc/<pid>/stat` after the command name: `[state, ppid, pgrp, ...]`; None if gone.

    The name is in parentheses and may itself contain spaces, `)` and `) `, so the fields
    start after the *last* `)`.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].decode("ascii", "replace").split()


def process_state(pid: int) -> str | None:
    """The one-letter state (`R`, `S`, `Z` for a zombie, ...), or None if the pid is gone."""
    fields = stat_fields(pid)
    return fields[0] if fields else None


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    return process_state(pid) not in (None, "Z")


def parent_pids() -> dict[int, int]:
    """Every pid in /proc mapped to its parent pid (how descendants are found)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat_fields(int(entry))
        if fields is not None:
            parents[int(entry)] = int(fields[1])
    return parents


def descendants(pid: int) -> set[int]:
    """Every live descendant of `pid` (zombies included: for a leak check they are leaks too)."""
    children: dict[int, list[int]] = {}
    for child, parent in parent_pids().items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def process_tree(root: int) -> list[int]:
    """`root` followed by its descendants (a launcher's children count towards its memory)."""
    return [root, *sorted(descendants(root))]


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 if it is gone or has no memory)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_name(pid: int, missing: str = "?") -> str:
    """The short command name of a process (`missing` if it is gone)."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return missing


def open_fds() -> set[int]:
    """This process's open file descriptors."""
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def fd_target(fd: int) -> str | None:
    """What one of this process's descriptors points at (`pipe:[...]`, a path), or None."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
