"""The command line around the network transports, as subprocesses: start-up errors and exit
codes, the banner, SIGTERM, and the `proxy` byte pipe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio_websocket

from codex_trio.client import ClientConnection
from codex_trio.server import open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.transport.listen import UnixListen
from tests.ws_client import WsClientStream, connect

TIMEOUT = 20


def env_for(codex_home: Path) -> dict[str, str]:
    return {**os.environ, "CODEX_HOME": str(codex_home)}


async def run_cli(args: list[str], codex_home: Path, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            [sys.executable, "-m", "codex_trio", *args],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env_for(codex_home),
            cwd=cwd,
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--listen", "ws://0.0.0.0:0"],
            "Error: refusing to start non-loopback websocket listener 0.0.0.0:0 without "
            "auth; configure `--ws-auth capability-token` or `--ws-auth signed-bearer-token`",
        ),
        (
            ["--listen", "ws://127.0.0.1:0", "--ws-auth", "capability-token"],
            "Error: `--ws-token-file` or `--ws-token-sha256` is required when "
            "`--ws-auth capability-token` is set",
        ),
        (
            [
                "--listen",
                "ws://127.0.0.1:0",
                "--ws-auth",
                "signed-bearer-token",
                "--ws-shared-secret-file",
                "short",
            ],
            "Error: signed websocket bearer secret short must be at least 32 bytes",
        ),
        (
            ["--listen", "unix://occupied"],
            "Error: app-server control socket path exists and is not a socket: ",
        ),
    ],
    ids=["non-loopback", "token-missing", "short-secret", "regular-file"],
)
async def test_start_up_errors_exit_1_with_a_clear_message(
    codex_home: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "short").write_text("x" * 31 + "\n")
    (tmp_path / "occupied").write_text("data")
    result = await run_cli(args, codex_home, tmp_path)
    assert result.returncode == 1
    assert message in result.stderr.decode()
    assert result.stdout == b""


async def test_a_port_in_use_exits_1(codex_home: Path, tmp_path: Path) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        result = await run_cli(["--listen", f"ws://127.0.0.1:{port}"], codex_home, tmp_path)
    finally:
        for listener in listeners:
            await listener.aclose()
    assert result.returncode == 1
    assert "Error: Address already in use (os error 98)" in result.stderr.decode()


@pytest.mark.parametrize("value", ["abc", "-1"])
async def test_a_bad_clock_skew_is_an_argument_error(codex_home: Path, tmp_path: Path, value: str) -> None:
    result = await run_cli(
        [
            "--listen",
            "ws://127.0.0.1:0",
            "--ws-auth",
            "signed-bearer-token",
            "--ws-max-clock-skew-seconds",
            value,
        ],
        codex_home,
        tmp_path,
    )
    assert result.returncode == 2


async def test_the_banner_goes_to_stderr_and_sigterm_exits_0(codex_home: Path, tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "codex_trio", "--listen", "ws://127.0.0.1:0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env_for(codex_home),
            cwd=tmp_path,
        )
        assert process.stderr is not None and process.stdout is not None and process.stdin is not None
        banner = b""
        while b"note:" not in banner:
            chunk = await process.stderr.receive_some(4096)
            assert chunk, banner
            banner += chunk
        port = int(banner.split(b"listening on: ws://127.0.0.1:")[1].split(b"\n")[0])
        assert b"auth: off" in banner and b"readyz: http://127.0.0.1:" in banner
        async with connect(port) as client:
            await client.rpc.initialize()
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
            await client.rpc.closed.wait()
        assert await process.stdout.receive_some(1) == b""
        for stream in (process.stdin, process.stdout, process.stderr):
            await stream.aclose()


# ------------------------------------------------------------------------------ proxy
async def test_the_proxy_pipes_a_websocket_session_and_exits_0_on_stdin_eof(
    leak_check: Any, server_settings: ServerSettings, tmp_path: Path
) -> None:
    path = tmp_path / "ctl.sock"
    with trio.fail_after(TIMEOUT):
        async with open_app_server(attrs.evolve(server_settings, listen=UnixListen(path))):
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "codex_trio", "proxy", "--sock", str(path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert process.stdin is not None and process.stdout is not None
            pipe = trio.StapledStream(process.stdin, process.stdout)
            async with trio.open_nursery() as nursery:
                ws = await trio_websocket.wrap_client_stream(nursery, pipe, "localhost", "/rpc")
                rpc = ClientConnection(WsClientStream(ws))
                nursery.start_soon(rpc.run)
                result = await rpc.initialize("through-the-proxy")
                assert result["codexHome"] == str(server_settings.codex_home)
                await process.stdin.aclose()
                assert await process.wait() == 0
                nursery.cancel_scope.cancel()
            await process.stdout.aclose()


async def test_the_proxy_uses_the_default_socket_under_codex_home(
    leak_check: Any, server_settings: ServerSettings
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_app_server(attrs.evolve(server_settings, listen=UnixListen(None))):
            handshake = (
                b"GET /rpc HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "codex_trio", "proxy"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env_for(server_settings.codex_home),
            )
            assert process.stdin is not None and process.stdout is not None
            await process.stdin.send_all(handshake)
            received = b""
            while b"\r\n\r\n" not in received:
                received += await process.stdout.receive_some(4096)
            assert received.startswith(b"HTTP/1.1 101")
            await process.stdin.aclose()
            assert await process.wait() == 0
            await process.stdout.aclose()


async def test_the_proxy_exits_1_when_nothing_listens(codex_home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nobody.sock"
    result = await run_cli(["proxy", "--sock", str(missing)], codex_home, tmp_path)
    assert result.returncode == 1
    assert f"Error: failed to connect to socket at {missing}" in result.stderr.decode()
    assert "No such file or directory (os error 2)" in result.stderr.decode()
