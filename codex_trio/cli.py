"""argv -> ServerSettings -> trio.run(serve), plus signal handling.

Signals belong to the command line, not to the server: embedders keep their own handlers.
The first SIGINT/SIGTERM starts the graceful drain, a second one stops at once.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from codex_trio.logs import configure_logging
from codex_trio.settings import ServerSettings
from codex_trio.transport.listen import (
    ListenUrlError,
    NoListen,
    StdioListen,
    UnixListen,
    WebSocketListen,
    parse_listen_url,
)

if TYPE_CHECKING:
    import argparse

log = logging.getLogger(__name__)

#: allocations between young collections (CPython's default is 700). Every idle connection
#: keeps ~90 objects the collector tracks; with 700, growing to thousands of connections
#: triggers a full pass every few hundred connections (up to ~0.5 s each at 10,000), ~20% of
#: the server's CPU per accepted connection. Cyclic garbage waits at most this many
#: allocations longer.
GC_YOUNG_THRESHOLD = 10_000


def _config_override(text: str) -> tuple[str, str]:
    import argparse

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"invalid override `{text}`: expected key=value")
    return key.strip(), value


def _listen(text: str) -> object:
    import argparse

    try:
        return parse_listen_url(text)
    except ListenUrlError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> int:
    import argparse

    if not text.isdigit():
        raise argparse.ArgumentTypeError("invalid digit found in string")
    return int(text)


def _add_ws_auth_flags(parser: argparse.ArgumentParser) -> None:
    auth = parser.add_argument_group("websocket auth (ws:// listeners)")
    auth.add_argument(
        "--ws-auth",
        choices=["capability-token", "signed-bearer-token"],
        metavar="MODE",
        help="capability-token or signed-bearer-token (required off loopback)",
    )
    auth.add_argument("--ws-token-file", type=Path, metavar="PATH", help="file holding the capability token")
    auth.add_argument("--ws-token-sha256", metavar="HEX", help="SHA-256 (hex) of the capability token")
    auth.add_argument(
        "--ws-shared-secret-file",
        type=Path,
        metavar="PATH",
        help="HS256 secret (at least 32 bytes) for signed bearer tokens (JWT)",
    )
    auth.add_argument("--ws-issuer", metavar="ISSUER", help="required `iss` of signed bearer tokens")
    auth.add_argument("--ws-audience", metavar="AUDIENCE", help="required `aud` of signed bearer tokens")
    auth.add_argument(
        "--ws-max-clock-skew-seconds",
        type=_seconds,
        metavar="SECONDS",
        help="allowed clock skew for `exp`/`nbf` (default 30)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (argparse is imported here: a bare `codex-trio` needs none)."""
    import argparse

    parser = argparse.ArgumentParser(prog="codex-trio", description="A Trio-native Codex app-server.")
    transport = parser.add_mutually_exclusive_group()
    transport.add_argument(
        "--listen", type=_listen, metavar="URL", help="stdio:// (default), ws://IP:PORT, unix://[PATH] or off"
    )
    transport.add_argument("--stdio", action="store_true", help="serve on stdin/stdout (the default)")
    parser.add_argument(
        "-c",
        "--config",
        dest="overrides",
        type=_config_override,
        action="append",
        default=[],
        metavar="key=value",
        help="override a config value (TOML value, raw string fallback)",
    )
    parser.add_argument(
        "--enable", action="append", default=[], metavar="FEATURE", help="features.FEATURE = true"
    )
    parser.add_argument(
        "--disable", action="append", default=[], metavar="FEATURE", help="features.FEATURE = false"
    )
    _add_ws_auth_flags(parser)
    return parser


WS_AUTH_ARGS = (
    "ws_auth",
    "ws_token_file",
    "ws_token_sha256",
    "ws_shared_secret_file",
    "ws_issuer",
    "ws_audience",
    "ws_max_clock_skew_seconds",
)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """Raises AuthConfigError for unusable `--ws-*` flags or secret files."""
    ws_auth = None
    if any(getattr(args, name) is not None for name in WS_AUTH_ARGS):
        # Only a server given --ws-* flags loads the auth code (and, for JWTs, PyJWT).
        from codex_trio.transport.auth import load_auth

        ws_auth = load_auth(
            args.ws_auth,
            token_file=args.ws_token_file,
            token_sha256=args.ws_token_sha256,
            shared_secret_file=args.ws_shared_secret_file,
            issuer=args.ws_issuer,
            audience=args.ws_audience,
            max_clock_skew_seconds=args.ws_max_clock_skew_seconds,
        )
    return ServerSettings(
        listen=args.listen if args.listen is not None else StdioListen(),
        config_overrides=tuple(args.overrides),
        enable_features=tuple(args.enable),
        disable_features=tuple(args.disable),
        ws_auth=ws_auth,
        secret_files=tuple(
            Path(path).absolute()
            for path in (args.ws_token_file, args.ws_shared_secret_file)
            if path is not None
        ),
    )


async def run_server(settings: ServerSettings) -> None:
    """Serve with signal handling: first signal drains, second forces."""
    from codex_trio.server import AppServer

    server = AppServer(settings)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            if isinstance(settings.listen, WebSocketListen):
                from codex_trio.transport.websocket import WebSocketEndpoint, write_banner

                assert isinstance(server.listening, WebSocketEndpoint)
                write_banner(server.listening, settings.ws_auth)
            # Everything alive now lives as long as the server: keep it out of the collector's
            # full passes, which otherwise show up as latency spikes under load. `python -m
            # codex_trio` starts with the collector off (nothing built during start-up is
            # garbage); from here on it runs.
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
            gc.enable()

            async def watch_signals() -> None:
                count = 0
                async for signum in signals:
                    count += 1
                    if count == 1:
                        log.info("received %s; draining", signal.Signals(signum).name)
                        server.shutdown()
                    else:
                        log.info("received a second shutdown signal; stopping now")
                        server.force_shutdown()

            nursery.start_soon(watch_signals)
            await server.stopped.wait()
            nursery.cancel_scope.cancel()


def _startup_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} (os error {exc.errno})"
    return str(exc)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["proxy"], ["migrate-threads"]):
        gc.enable()  # `__main__` turned it off for the server's start-up only
    if argv[:1] == ["proxy"]:
        from codex_trio.proxy import main as proxy_main

        sys.exit(proxy_main(argv[1:]))
    if argv[:1] == ["migrate-threads"]:
        from codex_trio.migrate import main as migrate_main

        sys.exit(migrate_main(argv[1:]))
    # A bare command line is the default stdio server: no parser to build (argparse and
    # gettext are a measurable share of a start-up that answers `initialize` and exits).
    args = build_parser().parse_args(argv) if argv else None
    configure_logging()
    try:
        settings = settings_from_args(args) if args is not None else ServerSettings()
    except ValueError as exc:  # AuthConfigError
        sys.stderr.write(f"Error: {exc}\n")
        sys.exit(1)
    if isinstance(settings.listen, NoListen):
        sys.stderr.write("Error: no transport configured; use --listen or enable remote control\n")
        sys.exit(1)
    startup_errors: tuple[type[Exception], ...] = (OSError,)
    if isinstance(settings.listen, WebSocketListen):
        from codex_trio.transport.auth import AuthConfigError

        startup_errors += (AuthConfigError,)
    elif isinstance(settings.listen, UnixListen):
        from codex_trio.transport.unix import ControlSocketError

        startup_errors += (ControlSocketError,)
    failure: BaseException | None = None
    try:
        trio.run(run_server, settings)
    except* startup_errors as group:
        failure = group.exceptions[0]
        while isinstance(failure, BaseExceptionGroup):
            failure = failure.exceptions[0]
    if failure is not None:
        sys.stderr.write(f"Error: {_startup_error(failure)}\n")
        sys.exit(1)
    _exit_now(0)


def _exit_now(code: int) -> None:
    """Exit without the interpreter's teardown.

    By now structured concurrency has closed every task, process and descriptor the server
    owned; what is left is the interpreter freeing its own objects, which only delays the exit
    a supervisor is waiting for. Flush what we wrote, then leave.
    """
    logging.shutdown()
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(code)
