"""`unix://` control socket: file layout and modes, stale and occupied paths, websocket framing
without an HTTP surface, and cleanup at exit."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from codex_trio.server import AppServer, open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.transport.listen import UnixListen
from codex_trio.transport.unix import ControlSocket, ControlSocketError, connectable_path, private_dir
from tests.ws_client import connect, request_head, status_of

TIMEOUT = 15


def unix_settings(settings: ServerSettings, path: Path | None) -> ServerSettings:
    return attrs.evolve(settings, listen=UnixListen(path))


def files_of(server: AppServer) -> ControlSocket:
    assert isinstance(server.listening, ControlSocket)
    return server.listening


async def serve_and_initialize(server_settings: ServerSettings, path: Path) -> None:
    """Serve on `path` and initialize a client through it."""
    with trio.fail_after(TIMEOUT):
        async with (
            open_app_server(unix_settings(server_settings, path)),
            connect(unix_path=connectable_path(path), resource="/rpc") as client,
        ):
            await client.rpc.initialize()


def assert_private_socket_layout(path: Path, files: ControlSocket) -> None:
    assert path.is_symlink()
    real = Path(os.path.realpath(path))
    assert real == files.real_path == private_dir() / hashlib.sha256(os.fsencode(path)).hexdigest()
    assert stat.S_ISSOCK(real.stat().st_mode)
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert stat.S_IMODE(real.parent.stat().st_mode) == 0o700


def assert_removed(files: ControlSocket) -> None:
    for leftover in (files.path, files.real_path, files.lock_path):
        assert not os.path.lexists(leftover), f"{leftover} was left behind"


async def raw_exchange(path: Path, raw: bytes) -> bytes:
    """Send `raw` on the socket; everything received until the server closes or answers a head."""
    async with await trio.open_unix_socket(connectable_path(path)) as stream:
        await stream.send_all(raw)
        received = bytearray()
        with trio.fail_after(5):
            while b"\r\n\r\n" not in received:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                received += chunk
        return bytes(received)


async def test_the_socket_path_links_to_a_0600_socket_in_a_private_directory(
    leak_check: Any, server_settings: ServerSettings, tmp_path: Path
) -> None:
    path = tmp_path / "ctl.sock"
    with trio.fail_after(TIMEOUT):
        async with open_app_server(unix_settings(server_settings, path)) as server:
            files = files_of(server)
            assert_private_socket_layout(path, files)
            async with connect(unix_path=connectable_path(path), resource="/rpc") as client:
                result = await client.rpc.initialize("unix-test")
                assert result["codexHome"] == str(server_settings.codex_home)
    assert_removed(files)


async def test_the_default_path_is_under_codex_home_in_a_0700_directory(
    leak_check: Any, server_settings: ServerSettings
) -> None:
    expected = server_settings.codex_home / "app-server-control" / "app-server-control.sock"
    with trio.fail_after(TIMEOUT):
        async with open_app_server(unix_settings(server_settings, None)) as server:
            assert files_of(server).path == expected
            assert expected.is_symlink()
            assert stat.S_IMODE(expected.parent.stat().st_mode) == 0o700
            async with connect(unix_path=connectable_path(expected), resource="/rpc") as client:
                await client.rpc.initialize()
    assert_removed(ControlSocket(expected, expected, expected))


async def test_a_relative_path_is_taken_against_the_working_directory_and_parents_are_created(
    leak_check: Any, server_settings: ServerSettings
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_app_server(unix_settings(server_settings, Path("run/sub/ctl.sock"))) as server:
            expected = server_settings.cwd / "run" / "sub" / "ctl.sock"
            assert files_of(server).path == expected and expected.is_symlink()
            assert stat.S_IMODE(expected.parent.stat().st_mode) & 0o077 == 0


async def test_a_path_longer_than_the_kernel_limit_still_works(
    leak_check: Any, server_settings: ServerSettings, tmp_path: Path
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = deep / "control.sock"
    assert len(os.fsencode(path)) > 108
    with trio.fail_after(TIMEOUT):
        async with (
            open_app_server(unix_settings(server_settings, path)),
            connect(unix_path=connectable_path(path), resource="/rpc") as client,
        ):
            await client.rpc.initialize()


@pytest.mark.parametrize("kind", ["socket", "dangling-link"])
async def test_a_stale_socket_is_replaced(
    leak_check: Any, server_settings: ServerSettings, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "stale.sock"
    if kind == "socket":
        with socket.socket(socket.AF_UNIX) as stale:
            stale.bind(os.fspath(path))  # bound, never listening: connect is refused
    else:
        path.symlink_to(tmp_path / "gone")
    await serve_and_initialize(server_settings, path)


async def test_a_live_server_on_the_path_is_an_error(
    leak_check: Any, server_settings: ServerSettings, tmp_path: Path
) -> None:
    path = tmp_path / "busy.sock"
    with trio.fail_after(TIMEOUT):
        async with open_app_server(unix_settings(server_settings, path)):
            second = AppServer(unix_settings(server_settings, path))
            with pytest.RaisesGroup(
                pytest.RaisesExc(
                    ControlSocketError, match=f"^app-server control socket is already in use at {path}$"
                ),
                flatten_subgroups=True,
            ):
                async with trio.open_nursery() as nursery:
                    await nursery.start(second.run)
            assert path.is_symlink()  # the first server's socket is untouched


async def test_a_regular_file_on_the_path_is_an_error_and_left_alone(
    leak_check: Any, server_settings: ServerSettings, tmp_path: Path
) -> None:
    path = tmp_path / "occupied.sock"
    path.write_text("not a socket")
    server = AppServer(unix_settings(server_settings, path))
    with pytest.RaisesGroup(
        pytest.RaisesExc(
            ControlSocketError, match=f"^app-server control socket path exists and is not a socket: {path}$"
        ),
        flatten_subgroups=True,
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
    assert path.read_text() == "not a socket"


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b'{"id":1,"method":"initialize"}\n',
    ],
    ids=["healthz", "plain-get", "json-line"],
)
async def test_anything_but_an_upgrade_is_closed_without_a_byte(
    leak_check: Any, server_settings: ServerSettings, tmp_path: Path, raw: bytes
) -> None:
    path = tmp_path / "ctl.sock"
    with trio.fail_after(TIMEOUT):
        async with open_app_server(unix_settings(server_settings, path)):
            assert await raw_exchange(path, raw) == b""


async def test_origin_and_authorization_are_ignored_and_the_frame_limit_is_advertised(
    leak_check: Any, server_settings: ServerSettings, tmp_path: Path
) -> None:
    path = tmp_path / "ctl.sock"
    with trio.fail_after(TIMEOUT):
        async with open_app_server(unix_settings(server_settings, path)):
            head = await raw_exchange(
                path, request_head("/anything", Origin="http://evil", Authorization="Basic x")
            )
            assert status_of(head) == 101
            assert b"x-codex-websocket-max-unfragmented-message-bytes: 16777216" in head


async def test_the_drain_closes_unix_connections_and_removes_the_files(
    leak_check: Any, server_settings: ServerSettings, tmp_path: Path
) -> None:
    path = tmp_path / "ctl.sock"
    server = AppServer(unix_settings(server_settings, path))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            files = files_of(server)
            async with connect(unix_path=connectable_path(path), resource="/rpc") as client:
                await client.rpc.initialize()
                server.shutdown()
                await client.rpc.closed.wait()
            await server.stopped.wait()
    assert_removed(files)


@pytest.mark.parametrize(
    ("mode", "owner"),
    [(0o777, None), (0o775, None), (0o757, None), (0o755, 4321)],
    ids=["world-writable", "group-writable", "other-writable", "someone-elses"],
)
async def test_a_parent_other_users_could_write_to_is_refused_as_the_reference_does(
    leak_check: Any, server_settings: ServerSettings, tmp_path: Path, mode: int, owner: int | None
) -> None:
    """Issue 11 finding 6: in such a directory another user can swap PATH for a link to their
    own listener; the reference refuses to start, with this message."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    if owner is not None:
        os.chown(shared, owner, -1)
    planted = shared / "ctl.sock"
    planted.symlink_to(tmp_path / "attacker.sock")
    with (
        trio.fail_after(TIMEOUT),
        pytest.RaisesGroup(
            pytest.RaisesExc(
                ControlSocketError,
                match="^socket parent must be owned by the user or root and prevent other users from "
                "replacing socket entries$",
            ),
            flatten_subgroups=True,
        ),
    ):
        async with open_app_server(unix_settings(server_settings, planted)):
            pass
    assert planted.is_symlink(), "the planted link must be left alone"


async def test_a_sticky_shared_parent_is_accepted(
    leak_check: Any, server_settings: ServerSettings, tmp_path: Path
) -> None:
    shared = tmp_path / "sticky"
    shared.mkdir()
    shared.chmod(0o1777)
    await serve_and_initialize(server_settings, shared / "ctl.sock")


async def test_every_missing_parent_is_created_private(
    leak_check: Any, server_settings: ServerSettings, tmp_path: Path
) -> None:
    path = tmp_path / "a" / "b" / "c" / "ctl.sock"
    with trio.fail_after(TIMEOUT):
        async with open_app_server(unix_settings(server_settings, path)):
            for directory in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
                assert stat.S_IMODE(directory.stat().st_mode) == 0o700
