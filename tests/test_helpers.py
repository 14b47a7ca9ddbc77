"""The one-owner helpers: atomic writes, /proc parsing, ids."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from codex_trio import procfs
from codex_trio.atomic_files import write_atomic
from codex_trio.ids import now_ms, uuid7


def test_write_atomic_replaces_keeps_the_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.txt"
    write_atomic(target, "one\r\n")
    assert target.read_bytes() == b"one\r\n", "newlines are written as given"
    target.chmod(0o640)
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(target.parent) == ["file.txt"]


def test_write_atomic_sets_a_secret_mode(tmp_path: Path) -> None:
    target = tmp_path / "auth.json"
    target.write_text("old")
    target.chmod(0o644)
    write_atomic(target, "secret", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == "secret"


def test_a_failed_write_atomic_leaves_the_target_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    target.write_text("kept")

    class Boom(str):
        def encode(self, *args: object, **kwargs: object) -> bytes:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, Boom("x"))
    assert target.read_text() == "kept"
    assert os.listdir(tmp_path) == ["config.toml"]


def test_procfs_reads_a_process_whose_name_contains_a_closing_parenthesis(tmp_path: Path) -> None:
    """`stat`'s fields start after the *last* `)`: a name like `a) b` must not shift them."""
    program = tmp_path / "a) S 1 b"
    program.symlink_to(sys.executable)
    child = subprocess.Popen([str(program), "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while procfs.process_name(child.pid) != program.name[:15] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert procfs.process_name(child.pid) == program.name[:15]
        fields = procfs.stat_fields(child.pid)
        assert fields is not None
        assert int(fields[1]) == os.getpid(), "the parent pid is read from the right field"
        assert procfs.is_alive(child.pid)
        assert child.pid in procfs.descendants(os.getpid())
        assert procfs.rss_kib(child.pid) > 0
    finally:
        child.kill()
    child.wait()
    assert not procfs.is_alive(child.pid)
    assert procfs.process_state(child.pid) is None
    assert procfs.process_name(child.pid) == "?"


def test_uuid7_is_a_time_ordered_version_7_uuid() -> None:
    before = now_ms()
    value = uuid.UUID(uuid7())
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= now_ms()
