"""The blocking half of fs/*: atomic writes, safe copies and the reference's file rules."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from codex_trio.api import fs_ops
from codex_trio.protocol.errors import RpcError

KILL_TIMEOUT = 30.0


def temp_files(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if fs_ops.is_temp_name(name)]


# ---------------------------------------------------------------------- write
def test_a_new_file_gets_the_umask_mode_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        fs_ops.write_file(str(tmp_path / "new.txt"), b"hello")
    finally:
        os.umask(umask)
    assert (tmp_path / "new.txt").read_bytes() == b"hello"
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644
    assert temp_files(tmp_path) == []


def test_replacing_a_file_keeps_its_permission_bits(tmp_path: Path) -> None:
    target = tmp_path / "script.sh"
    target.write_text("old")
    target.chmod(0o751)
    fs_ops.write_file(str(target), b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o751


def test_a_write_replaces_the_file_by_rename_so_readers_never_see_it_torn(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    before = target.stat().st_ino
    with target.open("rb") as reader:
        fs_ops.write_file(str(target), b"new content")
        assert reader.read() == b"old", "an open reader keeps the complete old file"
    assert target.stat().st_ino != before
    assert target.read_bytes() == b"new content"


def test_a_write_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "t.txt"
    target.write_text("old")
    (tmp_path / "link").symlink_to("real/t.txt")
    (tmp_path / "link2").symlink_to(tmp_path / "link")
    fs_ops.write_file(str(tmp_path / "link2"), b"through links")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link2").is_symlink()
    assert target.read_bytes() == b"through links"
    assert temp_files(tmp_path / "real") == []


def test_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to("created.txt")
    fs_ops.write_file(str(tmp_path / "dangling"), b"x")
    assert (tmp_path / "created.txt").read_bytes() == b"x"
    assert (tmp_path / "dangling").is_symlink()


def test_write_errors_are_the_reference_errnos(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "file").write_text("")
    cases = {
        str(tmp_path / "missing" / "f"): errno.ENOENT,
        str(tmp_path): errno.EISDIR,
        str(tmp_path / "loop"): errno.ELOOP,
        str(tmp_path / "file" / "below"): errno.ENOTDIR,
    }
    for path, code in cases.items():
        with pytest.raises(OSError) as caught:
            fs_ops.write_file(path, b"data")
        assert caught.value.errno == code, path
    assert temp_files(tmp_path) == []


def test_a_failed_write_leaves_the_old_content_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old content")
    real_write_all = fs_ops._write_all

    def disk_full(fd: int, data: bytes) -> None:
        real_write_all(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fs_ops, "_write_all", disk_full)
    with pytest.raises(OSError) as caught:
        fs_ops.write_file(str(target), b"n" * 100_000)
    assert caught.value.errno == errno.ENOSPC
    assert target.read_text() == "old content"
    assert temp_files(tmp_path) == []


def test_devices_are_written_in_place_and_a_fifo_without_reader_does_not_hang(tmp_path: Path) -> None:
    fs_ops.write_file("/dev/null", b"discarded")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError) as caught:
        fs_ops.write_file(str(tmp_path / "fifo"), b"x")
    assert caught.value.errno == errno.ENXIO
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo").st_mode)


KILL_DURING_WRITE = textwrap.dedent(
    """
    import os, sys, time
    from codex_trio.api import fs_ops

    stage, target = sys.argv[1], sys.argv[2]

    def pause():
        sys.stdout.write("paused\\n")
        sys.stdout.flush()
        time.sleep(60)

    if stage == "mid-write":
        real = fs_ops._write_all
        def half_then_pause(fd, data):
            real(fd, data[: len(data) // 2])
            pause()
        fs_ops._write_all = half_then_pause
    else:
        real_rename = os.rename
        def rename_then_pause(src, dst):
            real_rename(src, dst)
            pause()
        fs_ops.os.rename = rename_then_pause
    fs_ops.write_file(target, b"N" * 4_000_000)
    """
)


@pytest.mark.parametrize(("stage", "survivor"), [("mid-write", "old"), ("after-rename", "new")])
def test_a_server_killed_during_a_write_leaves_the_old_or_the_new_file_never_a_torn_one(
    tmp_path: Path, stage: str, survivor: str
) -> None:
    expected = {"old": b"O" * 1000, "new": b"N" * 4_000_000}[survivor]
    target = tmp_path / "precious.bin"
    target.write_bytes(b"O" * 1000)
    target.chmod(0o640)
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_DURING_WRITE, stage, str(target)],
        stdout=subprocess.PIPE,
        cwd=Path(fs_ops.__file__).parents[2],
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"paused\n"
        child.send_signal(signal.SIGKILL)
        child.wait(KILL_TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(KILL_TIMEOUT)
        if child.stdout is not None:
            child.stdout.close()
    content = target.read_bytes()
    assert (len(content), content == expected) == (len(expected), True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


# ---------------------------------------------------------------------- read / metadata / listing
def test_read_refuses_anything_but_a_regular_file_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    for path in (tmp_path / "fifo", tmp_path / "dir", Path("/dev/null")):
        with pytest.raises(RpcError) as caught:
            fs_ops.read_file(str(path))
        assert caught.value.message == f"path `{path}` is not a file"
    (tmp_path / "link").symlink_to("dir")
    with pytest.raises(RpcError):
        fs_ops.read_file(str(tmp_path / "link"))


def test_metadata_describes_the_target_and_flags_the_link(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "l").symlink_to("f")
    meta = fs_ops.get_metadata(str(tmp_path / "l"))
    assert (meta.is_file, meta.is_directory, meta.is_symlink, meta.created_at_ms) == (True, False, True, 0)
    assert meta.modified_at_ms == (tmp_path / "f").stat().st_mtime_ns // 1_000_000
    os.utime(tmp_path / "f", ns=(0, -5_000_000_000))
    assert fs_ops.get_metadata(str(tmp_path / "f")).modified_at_ms == 0, "before 1970 is reported as 0"
    special = fs_ops.get_metadata("/dev/null")
    assert (special.is_file, special.is_directory) == (False, False)


def test_listing_skips_broken_links_and_decodes_bad_names_lossily(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "f").write_text("")
    (tmp_path / "dirlink").symlink_to("sub")
    (tmp_path / "broken").symlink_to("nowhere")
    (tmp_path / "loop").symlink_to("loop")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / os.fsdecode(b"bad\xffname")).write_text("")
    entries = {e.file_name: (e.is_directory, e.is_file) for e in fs_ops.read_directory(str(tmp_path))}
    assert entries == {
        "sub": (True, False),
        "f": (False, True),
        "dirlink": (True, False),
        "fifo": (False, False),
        "bad\ufffdname": (False, True),
    }


# ---------------------------------------------------------------------- remove / create
def test_remove_follows_the_reference_flags(tmp_path: Path) -> None:
    (tmp_path / "tree" / "a").mkdir(parents=True)
    (tmp_path / "tree" / "a" / "f").write_text("")
    with pytest.raises(OSError) as caught:
        fs_ops.remove(str(tmp_path / "tree"), recursive=False, force=True)
    assert caught.value.errno == errno.ENOTEMPTY
    fs_ops.remove(str(tmp_path / "tree"), recursive=True, force=True)
    assert not (tmp_path / "tree").exists()
    fs_ops.remove(str(tmp_path / "gone"), recursive=True, force=True)
    with pytest.raises(FileNotFoundError):
        fs_ops.remove(str(tmp_path / "gone"), recursive=True, force=False)
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        fs_ops.remove(str(tmp_path / "f" / "x"), recursive=True, force=True)
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "inside").write_text("")
    (tmp_path / "link").symlink_to("keep")
    fs_ops.remove(str(tmp_path / "link"), recursive=True, force=True)
    assert (tmp_path / "keep" / "inside").exists() and not (tmp_path / "link").is_symlink()


def test_create_directory_recursive_and_not(tmp_path: Path) -> None:
    fs_ops.create_directory(str(tmp_path / "a" / "b"), recursive=True)
    fs_ops.create_directory(str(tmp_path / "a" / "b"), recursive=True)
    with pytest.raises(FileExistsError):
        fs_ops.create_directory(str(tmp_path / "a" / "b"), recursive=False)
    with pytest.raises(FileNotFoundError):
        fs_ops.create_directory(str(tmp_path / "x" / "y"), recursive=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):
        fs_ops.create_directory(str(tmp_path / "file"), recursive=True)
    with pytest.raises(NotADirectoryError):
        fs_ops.create_directory(str(tmp_path / "file" / "sub"), recursive=True)


# ---------------------------------------------------------------------- copy
def test_copying_a_file_onto_itself_under_any_name_keeps_it(tmp_path: Path) -> None:
    source = tmp_path / "self.txt"
    source.write_text("precious data")
    (tmp_path / "alias").symlink_to("self.txt")
    os.link(source, tmp_path / "hard")
    for destination in ("self.txt", "alias", "hard"):
        fs_ops.copy(str(source), str(tmp_path / destination), recursive=False)
        assert source.read_text() == "precious data", destination


def test_a_file_copy_overwrites_in_place_with_the_source_mode(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.write_text("new")
    source.chmod(0o700)
    destination = tmp_path / "dst"
    destination.write_text("a much longer old content")
    (tmp_path / "dstlink").symlink_to("dst")
    fs_ops.copy(str(source), str(tmp_path / "dstlink"), recursive=True)
    assert destination.read_text() == "new"
    assert stat.S_IMODE(destination.stat().st_mode) == 0o700
    assert (tmp_path / "dstlink").is_symlink()
    with pytest.raises(IsADirectoryError):
        fs_ops.copy(str(source), str(tmp_path), recursive=False)


def test_copy_refuses_what_the_reference_refuses(tmp_path: Path) -> None:
    (tmp_path / "dir" / "inner").mkdir(parents=True)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dirlink").symlink_to("dir")
    refusals = [
        (tmp_path / "dir", tmp_path / "other", False, "requires recursive: true"),
        (tmp_path / "dir", tmp_path / "dir", True, "to itself or one of its descendants"),
        (tmp_path / "dir", tmp_path / "dir" / "inner" / "new" / "deeper", True, "descendants"),
        (tmp_path / "dir", tmp_path / "dirlink" / "x", True, "descendants"),
        (tmp_path / "fifo", tmp_path / "fifo2", False, "only supports regular files"),
    ]
    for source, destination, recursive, message in refusals:
        with pytest.raises(RpcError) as caught:
            fs_ops.copy(str(source), str(destination), recursive)
        assert caught.value.code == -32600 and message in caught.value.message
    assert not (tmp_path / "other").exists()


def test_copy_tree_merges_keeps_links_and_skips_special_files(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("from source")
    (source / "sub" / "b.txt").write_text("deep")
    (source / "link").symlink_to("a.txt")
    os.mkfifo(source / "fifo")
    destination = tmp_path / "dst"
    destination.mkdir()
    (destination / "a.txt").write_text("old")
    (destination / "keep.txt").write_text("untouched")
    fs_ops.copy(str(source), str(destination), recursive=True)
    assert sorted(os.listdir(destination)) == ["a.txt", "keep.txt", "link", "sub"]
    assert (destination / "a.txt").read_text() == "from source"
    assert (destination / "keep.txt").read_text() == "untouched"
    assert (destination / "sub" / "b.txt").read_text() == "deep"
    assert os.readlink(destination / "link") == "a.txt"
    with pytest.raises(FileExistsError):
        fs_ops.copy(str(source), str(destination), recursive=True)  # the link exists now
    (tmp_path / "afile").write_text("")
    with pytest.raises(FileExistsError):
        fs_ops.copy(str(source), str(tmp_path / "afile"), recursive=True)


def test_a_symlink_source_is_copied_as_a_link(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "l").symlink_to("d")
    fs_ops.copy(str(tmp_path / "l"), str(tmp_path / "l2"), recursive=False)
    assert os.readlink(tmp_path / "l2") == "d"


def test_a_tree_deeper_than_the_recursion_limit_is_copied_and_removed(tmp_path: Path) -> None:
    limit = 150  # a low limit keeps the tree (and the test) small; the code must not recurse
    depth = limit + 50
    os.mkdir(tmp_path / "src")
    fd = os.open(tmp_path / "src", os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        fs_ops.copy(str(tmp_path / "src"), str(tmp_path / "dst"), recursive=True)
        copied = os.path.isfile(str(tmp_path / "dst") + "/d" * depth + "/leaf")
        fs_ops.remove(str(tmp_path / "dst"), recursive=True, force=False)
        fs_ops.remove(str(tmp_path / "src"), recursive=True, force=False)
    finally:
        sys.setrecursionlimit(saved)
    assert copied
    assert os.listdir(tmp_path) == []


def test_removing_a_tree_never_follows_symlinks_inside_it(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep").write_text("")
    (tmp_path / "tree" / "a").mkdir(parents=True)
    (tmp_path / "tree" / "a" / "link").symlink_to(tmp_path / "outside")
    (tmp_path / "tree" / "f").write_text("")
    fs_ops.remove(str(tmp_path / "tree"), recursive=True, force=True)
    assert not (tmp_path / "tree").exists()
    assert (tmp_path / "outside" / "keep").exists()


# ---------------------------------------------------------------------- permissions
UNPRIVILEGED_UID = 65534


def outcomes_as_unprivileged_user(base: Path) -> dict[str, object]:
    """Run a few operations in a forked child that is not root (root ignores permissions)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, so the interpreter's own location does not matter
        status = 1
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgid(UNPRIVILEGED_UID)
                os.setuid(UNPRIVILEGED_UID)
            outcome: dict[str, object] = {}
            for name, function, args in [
                ("read secret", fs_ops.read_file, (f"{base}/secret",)),
                ("rewrite shared file in locked dir", fs_ops.write_file, (f"{base}/locked/shared", b"new")),
                ("create in locked dir", fs_ops.write_file, (f"{base}/locked/new", b"x")),
                ("metadata of secret", fs_ops.get_metadata, (f"{base}/secret",)),
            ]:
                try:
                    function(*args)  # type: ignore[operator]
                    outcome[name] = "ok"
                except OSError as exc:
                    outcome[name] = exc.errno
            os.write(write_end, json.dumps(outcome).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        data = reader.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    result: dict[str, object] = json.loads(data)
    return result


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory outside pytest's private tmp tree, so another user can reach it."""
    path = Path(tempfile.mkdtemp(prefix="codex-trio-fs-"))
    path.chmod(0o755)
    yield path
    if (path / "locked").exists():
        (path / "locked").chmod(0o755)
    shutil.rmtree(path)


def test_permission_errors_and_a_locked_directory_as_an_unprivileged_user(shared_dir: Path) -> None:
    """EACCES is an errno like any other; a writable file in a directory that refuses new
    files is rewritten in place (no temporary file can be made there), as the reference would."""
    (shared_dir / "secret").write_text("no")
    (shared_dir / "secret").chmod(0o000)
    locked = shared_dir / "locked"
    locked.mkdir()
    (locked / "shared").write_text("old")
    (locked / "shared").chmod(0o666)
    locked.chmod(0o555)
    assert outcomes_as_unprivileged_user(shared_dir) == {
        "read secret": errno.EACCES,
        "rewrite shared file in locked dir": "ok",
        "create in locked dir": errno.EACCES,
        "metadata of secret": "ok",
    }
    assert (locked / "shared").read_text() == "new"
    assert os.listdir(locked) == ["shared"]


def test_a_file_that_grows_while_it_is_read_is_read_to_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "growing"
    target.write_bytes(b"a" * 5000)
    real_fstat = os.fstat

    def stale_fstat(fd: int) -> os.stat_result:
        info = real_fstat(fd)
        return os.stat_result((*info[:6], 10, *info[7:10]))  # as if it had been 10 bytes

    monkeypatch.setattr(os, "fstat", stale_fstat)
    assert fs_ops.read_file(str(target)) == b"a" * 5000
