"""fs/* through the server: every error path, large files, and I/O kept off the event loop."""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from codex_trio.api import fs_ops
from codex_trio.api.fs import FS_THREADS, INLINE_READ_LIMIT
from codex_trio.client import ClientConnection
from codex_trio.protocol.errors import RpcError
from codex_trio.server import AppServer

TIMEOUT = 20.0
INVALID_REQUEST, INTERNAL_ERROR = -32600, -32603


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


async def error_of(client: ClientConnection, method: str, params: Any) -> tuple[int, str]:
    with pytest.raises(RpcError) as caught:
        await client.call(method, params)
    return caught.value.code, caught.value.message


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "fs"
    path.mkdir()
    return path


async def test_read_and_write_round_trip_binary_data(client: ClientConnection, ws: Path) -> None:
    data = bytes(range(256)) * 3
    with trio.fail_after(TIMEOUT):
        assert await client.call("fs/writeFile", {"path": str(ws / "a.bin"), "dataBase64": b64(data)}) == {}
        result = await client.call("fs/readFile", {"path": f"{ws}/missing/../a.bin"})
    assert base64.b64decode(result["dataBase64"]) == data


async def test_files_of_tens_of_mebibytes_work_both_ways(client: ClientConnection, ws: Path) -> None:
    data = os.urandom(24 * 1024 * 1024 + 7)
    with trio.fail_after(TIMEOUT * 3):
        await client.call("fs/writeFile", {"path": str(ws / "big.bin"), "dataBase64": b64(data)})
        assert (ws / "big.bin").read_bytes() == data
        result = await client.call("fs/readFile", {"path": str(ws / "big.bin")})
    assert base64.b64decode(result["dataBase64"]) == data


async def test_read_errors_have_the_reference_codes_and_texts(client: ClientConnection, ws: Path) -> None:
    (ws / "broken").symlink_to("nowhere")
    with trio.fail_after(TIMEOUT):
        cases = {
            str(ws / "missing"): (INTERNAL_ERROR, "No such file or directory (os error 2)"),
            str(ws / "broken"): (INTERNAL_ERROR, "No such file or directory (os error 2)"),
            str(ws) + "/": (INVALID_REQUEST, f"path `{ws}` is not a file"),
            "/dev/null": (INVALID_REQUEST, "path `/dev/null` is not a file"),
            "rel.txt": (INVALID_REQUEST, "Invalid request: AbsolutePathBuf deserialized without a base path"),
            "": (INVALID_REQUEST, "Invalid request: AbsolutePathBuf deserialized without a base path"),
        }
        for path, expected in cases.items():
            assert await error_of(client, "fs/readFile", {"path": path}) == expected, path
        assert await error_of(client, "fs/readFile", {"path": 5}) == (
            INVALID_REQUEST,
            "Invalid request: invalid type: integer `5`, expected path string",
        )


async def test_a_nul_byte_in_any_path_is_refused_as_the_reference(client: ClientConnection, ws: Path) -> None:
    (ws / "f").write_text("x")
    bad = f"{ws}/a\u0000b"
    expected = (INVALID_REQUEST, "file name contained an unexpected NUL byte")
    with trio.fail_after(TIMEOUT):
        for method, params in [
            ("fs/readFile", {"path": bad}),
            ("fs/writeFile", {"path": bad, "dataBase64": ""}),
            ("fs/createDirectory", {"path": bad}),
            ("fs/getMetadata", {"path": bad}),
            ("fs/readDirectory", {"path": bad}),
            ("fs/remove", {"path": bad}),
            ("fs/copy", {"sourcePath": bad, "destinationPath": str(ws / "x")}),
            ("fs/copy", {"sourcePath": str(ws / "f"), "destinationPath": bad}),
        ]:
            assert await error_of(client, method, params) == expected, method


async def test_write_errors_leave_nothing_behind(client: ClientConnection, ws: Path) -> None:
    (ws / "keep.txt").write_text("old")
    with trio.fail_after(TIMEOUT):
        assert await error_of(client, "fs/writeFile", {"path": str(ws / "no" / "f"), "dataBase64": ""}) == (
            INTERNAL_ERROR,
            "No such file or directory (os error 2)",
        )
        assert await error_of(client, "fs/writeFile", {"path": str(ws), "dataBase64": ""}) == (
            INTERNAL_ERROR,
            "Is a directory (os error 21)",
        )
        code, message = await error_of(
            client, "fs/writeFile", {"path": str(ws / "keep.txt"), "dataBase64": "YWJ"}
        )
        assert (code, message) == (
            INVALID_REQUEST,
            "fs/writeFile requires valid base64 dataBase64: Invalid padding",
        )
        code, message = await error_of(
            client, "fs/writeFile", {"path": str(ws / "keep.txt"), "dataBase64": 5}
        )
        assert (code, message) == (
            INVALID_REQUEST,
            "Invalid request: invalid type: integer `5`, expected a string",
        )
    assert (ws / "keep.txt").read_text() == "old"
    assert sorted(os.listdir(ws)) == ["keep.txt"]


async def test_directory_methods_and_their_errors(client: ClientConnection, ws: Path) -> None:
    (ws / "file").write_text("")
    with trio.fail_after(TIMEOUT):
        assert await client.call("fs/createDirectory", {"path": str(ws / "a" / "b"), "recursive": None}) == {}
        assert await error_of(client, "fs/createDirectory", {"path": str(ws / "a"), "recursive": False}) == (
            INTERNAL_ERROR,
            "File exists (os error 17)",
        )
        assert await error_of(client, "fs/createDirectory", {"path": str(ws / "file" / "x")}) == (
            INTERNAL_ERROR,
            "Not a directory (os error 20)",
        )
        listing = await client.call("fs/readDirectory", {"path": str(ws)})
        assert sorted(e["fileName"] for e in listing["entries"]) == ["a", "file"]
        assert await error_of(client, "fs/readDirectory", {"path": str(ws / "file")}) == (
            INTERNAL_ERROR,
            "Not a directory (os error 20)",
        )
        meta = await client.call("fs/getMetadata", {"path": str(ws / "a")})
        assert meta["isDirectory"] and not meta["isFile"] and not meta["isSymlink"]
        assert await error_of(client, "fs/getMetadata", {"path": str(ws / "nope")}) == (
            INTERNAL_ERROR,
            "No such file or directory (os error 2)",
        )


async def test_remove_errors(client: ClientConnection, ws: Path) -> None:
    (ws / "full").mkdir()
    (ws / "full" / "f").write_text("")
    with trio.fail_after(TIMEOUT):
        assert await client.call("fs/remove", {"path": str(ws / "gone"), "force": None}) == {}
        assert await error_of(client, "fs/remove", {"path": str(ws / "gone"), "force": False}) == (
            INTERNAL_ERROR,
            "No such file or directory (os error 2)",
        )
        assert await error_of(client, "fs/remove", {"path": str(ws / "full"), "recursive": False}) == (
            INTERNAL_ERROR,
            "Directory not empty (os error 39)",
        )
        assert await error_of(client, "fs/remove", {"path": str(ws / "full" / "f" / "x")}) == (
            INTERNAL_ERROR,
            "Not a directory (os error 20)",
        )
        assert await client.call("fs/remove", {"path": str(ws / "full")}) == {}
    assert os.listdir(ws) == []


async def test_copy_errors_and_copying_a_file_onto_itself(client: ClientConnection, ws: Path) -> None:
    (ws / "dir").mkdir()
    (ws / "self.txt").write_text("precious")
    os.mkfifo(ws / "fifo")
    with trio.fail_after(TIMEOUT):
        cases: list[tuple[dict[str, Any], tuple[int, str]]] = [
            (
                {"sourcePath": str(ws / "dir"), "destinationPath": str(ws / "d2")},
                (INVALID_REQUEST, "fs/copy requires recursive: true when sourcePath is a directory"),
            ),
            (
                {"sourcePath": str(ws / "dir"), "destinationPath": str(ws / "dir" / "in"), "recursive": True},
                (INVALID_REQUEST, "fs/copy cannot copy a directory to itself or one of its descendants"),
            ),
            (
                {"sourcePath": str(ws / "fifo"), "destinationPath": str(ws / "f2")},
                (INVALID_REQUEST, "fs/copy only supports regular files, directories, and symlinks"),
            ),
            (
                {"sourcePath": str(ws / "self.txt"), "destinationPath": str(ws / "f2"), "recursive": None},
                (INVALID_REQUEST, "Invalid request: invalid type: null, expected a boolean"),
            ),
            (
                {"sourcePath": str(ws / "self.txt")},
                (INVALID_REQUEST, "Invalid request: missing field `destinationPath`"),
            ),
            (
                {"sourcePath": str(ws / "missing"), "destinationPath": str(ws / "m2")},
                (INTERNAL_ERROR, "No such file or directory (os error 2)"),
            ),
            (
                {"sourcePath": str(ws / "self.txt"), "destinationPath": str(ws / "dir")},
                (INTERNAL_ERROR, "Is a directory (os error 21)"),
            ),
        ]
        for params, expected in cases:
            assert await error_of(client, "fs/copy", params) == expected, params
        same = {"sourcePath": str(ws / "self.txt"), "destinationPath": f"{ws}/dir/../self.txt"}
        assert await client.call("fs/copy", same) == {}
    assert (ws / "self.txt").read_text() == "precious"


async def test_metadata_is_answered_inline_while_every_worker_thread_is_busy(
    app_server: AppServer, client: ClientConnection, ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read stuck in the kernel (a hung network share) occupies a thread, never the loop."""
    release = threading.Event()
    entered = 0
    all_entered = trio.Event()
    real_read = fs_ops.read_file

    def stuck_read(path: str) -> bytes:
        nonlocal entered

        def arrived() -> None:
            nonlocal entered
            entered += 1
            if entered == FS_THREADS:
                all_entered.set()

        trio.from_thread.run_sync(arrived)
        release.wait(TIMEOUT)
        return real_read(path)

    content = b"x" * (INLINE_READ_LIMIT + 1)  # large enough to be read in a worker thread
    (ws / "f.txt").write_bytes(content)
    monkeypatch.setattr(fs_ops, "read_file", stuck_read)
    other = await app_server.connect()
    await other.initialize()
    results: list[Any] = []
    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    results.append(await client.call("fs/readFile", {"path": str(ws / "f.txt")}))

                for _ in range(FS_THREADS + 2):
                    nursery.start_soon(read)
                await all_entered.wait()
                for _ in range(20):
                    meta = await other.call("fs/getMetadata", {"path": str(ws / "f.txt")})
                    assert meta["isFile"]
                await trio.testing.wait_all_tasks_blocked()
                assert entered == FS_THREADS, "the limiter bounds the threads"
                assert results == []
                release.set()
    finally:
        release.set()
        await other.aclose()
    assert len(results) == FS_THREADS + 2
    assert {r["dataBase64"] for r in results} == {b64(content)}


async def test_files_on_both_sides_of_the_inline_read_limit_read_whole(
    client: ClientConnection, ws: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        for size in (0, INLINE_READ_LIMIT, INLINE_READ_LIMIT + 1):
            data = os.urandom(size)
            (ws / f"f{size}").write_bytes(data)
            result = await client.call("fs/readFile", {"path": str(ws / f"f{size}")})
            assert base64.b64decode(result["dataBase64"]) == data, size
