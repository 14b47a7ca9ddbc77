"""The command line, logging configuration and the `serve` entry point."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import trio

from codex_trio import ServerSettings, serve
from codex_trio.cli import build_parser, settings_from_args
from codex_trio.logs import JsonFormatter, level_from_env
from codex_trio.server import AppServer
from codex_trio.testing import LeakCheck, server_env
from codex_trio.transport.listen import NoListen, StdioListen, UnixListen, WebSocketListen


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (None, logging.WARNING),
        ("", logging.WARNING),
        ("info", logging.INFO),
        ("debug", logging.DEBUG),
        ("warn,codex_trio=debug", logging.DEBUG),
        ("codex_app_server=info", logging.INFO),
        ("hyper=debug", logging.WARNING),
        ("off", logging.CRITICAL + 10),
    ],
)
def test_the_level_comes_from_rust_log_directives(value: str | None, level: int) -> None:
    assert level_from_env(value) == level


def test_json_logs_are_one_object_per_line() -> None:
    record = logging.LogRecord("codex_trio.x", logging.ERROR, __file__, 1, "bad %s", ("thing",), None)
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["level"] == "ERROR" and entry["target"] == "codex_trio.x" and entry["message"] == "bad thing"


def test_arguments_become_settings() -> None:
    args = build_parser().parse_args(
        ["--listen", "ws://127.0.0.1:0", "-c", "model=x", "--enable", "a", "--disable", "b"]
    )
    settings = settings_from_args(args)
    assert settings.listen == WebSocketListen("127.0.0.1", 0)
    assert settings.config_overrides == (("model", "x"),)
    assert (settings.enable_features, settings.disable_features) == (("a",), ("b",))
    assert settings_from_args(build_parser().parse_args([])).listen == StdioListen()
    assert settings_from_args(build_parser().parse_args(["--listen", "unix://"])).listen == UnixListen(None)
    assert settings_from_args(build_parser().parse_args(["--listen", "off"])).listen == NoListen()


def test_a_bare_command_line_is_the_default_settings() -> None:
    """`main` skips the parser when there are no arguments: that must change nothing."""
    assert settings_from_args(build_parser().parse_args([])) == ServerSettings()


#: what a stdio server answering `initialize` must not load (the start-up budget, issue 17):
#: the converter's cattrs, the command line's parser, the sandbox and the process layer.
NOT_ON_THE_INITIALIZE_PATH = (
    "cattrs",
    "typing_extensions",
    "argparse",
    "gettext",
    "trio_util",
    "async_generator",
    "codex_trio.sandbox",
    "codex_trio.process",
    "codex_trio.protocol.sandbox",
    "codex_trio.config",
    "codex_trio.store",
    "codex_trio.core",
    "codex_trio.threads",
)


async def test_a_stdio_start_to_initialize_and_exit_imports_only_what_it_needs(
    codex_home: Path, tmp_path: Path
) -> None:
    """`python -X importtime -m codex_trio`, initialize, EOF: every module the whole run loaded
    (worker threads and shutdown included) is listed on stderr."""
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-X", "importtime", "-m", "codex_trio"],
            stdin=b'{"id":0,"method":"initialize","params":{"clientInfo":{"name":"t","version":"1"}}}\n',
            env=server_env(codex_home),
            cwd=tmp_path,
            capture_stdout=True,
            capture_stderr=True,
        )
    assert result.stdout.startswith(b'{"id":0,"result":{"userAgent":"t/')
    imported = {
        line.split("|")[-1].strip()
        for line in result.stderr.decode().splitlines()
        if line.startswith("import time:") and "self [us]" not in line
    }
    assert {"trio", "codex_trio.api.session", "codex_trio.protocol.initialize"} <= imported
    loaded = sorted(
        name
        for name in imported
        if any(name == banned or name.startswith(banned + ".") for banned in NOT_ON_THE_INITIALIZE_PATH)
    )
    assert loaded == []
    families = sorted(name for name in imported if name.startswith("codex_trio.api."))
    assert families == ["codex_trio.api.session"]


@pytest.mark.parametrize("url", ["wss://127.0.0.1:1", "bogus", "ws://localhost:1", "stdio://foo"])
def test_bad_listen_urls_are_argument_errors(url: str) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["--listen", url])
    assert caught.value.code == 2


async def test_serve_runs_under_nursery_start_and_drains(server_settings: ServerSettings) -> None:
    check = LeakCheck()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve, server_settings)
            assert isinstance(server, AppServer)
            client = await server.connect()
            await client.initialize()
            server.shutdown()
    await check.check()


async def test_listen_off_is_refused_at_startup(codex_home: Path) -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-m", "codex_trio", "--listen", "off"],
            env=server_env(codex_home),
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    assert b"no transport configured" in result.stderr


async def test_a_second_signal_stops_a_draining_server_at_once(codex_home: Path, tmp_path: Path) -> None:
    """The first SIGTERM drains (with a command running); a second one ends it; no child is left."""
    check = LeakCheck()
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "codex_trio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=server_env(codex_home),
        cwd=tmp_path,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        with trio.fail_after(30):
            await process.stdin.send_all(
                b'{"id":1,"method":"initialize","params":{"clientInfo":{"name":"t","version":"1"}}}\n'
                b'{"id":2,"method":"command/exec","params":{"command":["sleep","60"],"processId":"s",'
                b'"streamStdoutStderr":true,"sandboxPolicy":{"type":"dangerFullAccess"}}}\n'
                b'{"id":3,"method":"fs/getMetadata","params":{"path":"/"}}\n'
            )
            seen = b""
            while b'"id":3' not in seen:
                seen += await process.stdout.receive_some()
            process.send_signal(signal.SIGTERM)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.stdin.aclose()
            await process.stdout.aclose()
    await check.check()


@pytest.mark.parametrize("command", ["proxy", "migrate-threads"])
def test_subcommands_run_with_the_collector_on(command: str) -> None:
    """`python -m codex_trio` turns the collector off for the server's start-up only: the
    long-running proxy (and the migration) must not live without it."""
    import gc

    from codex_trio.cli import main

    gc.disable()
    try:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert gc.isenabled()
    finally:
        gc.enable()
