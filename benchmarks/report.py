"""What benchmark scripts compute and print: phases that may fail, statistics, ratios, reports.

Scripts import this as a sibling module.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import trio


def log(message: str) -> None:
    """Progress goes to stderr so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


class Outcome(Protocol):
    """A per-server result that collects failed phases."""

    label: str
    failures: list[str]


async def guarded(result: Outcome, what: str, job: Callable[[], Awaitable[None]], timeout: float) -> None:
    """Run one phase under a deadline; a failure is recorded, so the other server still runs."""
    try:
        with trio.fail_after(timeout):
            await job()
    except Exception as exc:  # a failing server must not stop the other one
        result.failures.append(f"{what}: {type(exc).__name__}: {exc}")
        log(f"  [{result.label}] {what} FAILED: {exc}")


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def percentile_floor(values: list[float], fraction: float) -> float:
    """The sample at index ``floor(fraction * n)`` of the sorted values.

    turns.py's convention, kept so its numbers stay comparable with earlier runs; it is one
    sample above nearest rank when ``fraction * n`` is whole.
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --------------------------------------------------------------------------- reports


def ratio(ours: float | None, ref: float | None) -> float | None:
    """ours / reference, or None when either is missing or the reference is 0."""
    if ours is None or ref is None or ref == 0:
        return None
    return ours / ref


def verdict(value: float | None, limit: float, higher_is_better: bool) -> str:
    """'pass'/'FAIL' for a ratio against its limit."""
    if value is None:
        return "n/a"
    ok = value >= limit if higher_is_better else value <= limit
    return "pass" if ok else "FAIL"


def fmt(value: float | None, unit: str, digits: int = 1) -> str:
    """Format a number with a unit, or an em dash when missing."""
    return "—" if value is None else f"{value:,.{digits}f} {unit}"


def fmt_ratio(value: float | None) -> str:
    """A ratio with its times sign, or an em dash when missing."""
    return "—" if value is None else f"{value:.2f}×"  # noqa: RUF001


def report_header(title: str, ours: list[str], reference: list[str] | None) -> list[str]:
    """Title, date, machine and load, and both commands: numbers mean little without them."""
    lines = [
        f"# {title}",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end",
        f"- ours: `{shlex.join(ours)}`",
    ]
    if reference is not None:
        lines.append(f"- reference: `{shlex.join(reference)}`")
    return lines


def publish(report: str, markdown: Path | None) -> None:
    """The report goes to stdout and, with ``--markdown``, to a file."""
    print(report)
    write_file(markdown, report)


def write_file(path: Path | None, text: str) -> None:
    """Write an optional output file (``--markdown``, ``--json``), creating its folder."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
