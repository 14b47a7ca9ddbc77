"""argv -> ServerSettings -> trio.run(serve), plus signal handling.

Signals belong to the command line, not to the server: embedders keep their own handlers.
The first SIGINT/SIGTERM starts the graceful drain, a second one stops at once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from codex_trio.logs import configure_logging
from codex_trio.server import AppServer
from codex_trio.settings import ServerSettings
from codex_trio.transport.listen import ListenUrlError, NoListen, StdioListen, parse_listen_url

log = logging.getLogger(__name__)


def _config_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"invalid override `{text}`: expected key=value")
    return key.strip(), value


def _listen(text: str) -> object:
    try:
        return parse_listen_url(text)
    except ListenUrlError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codex-trio", description="A Trio-native Codex app-server.")
    transport = parser.add_mutually_exclusive_group()
    transport.add_argument("--listen", type=_listen, metavar="URL", help="stdio:// (default), ws://IP:PORT, unix://[PATH] or off")
    transport.add_argument("--stdio", action="store_true", help="serve on stdin/stdout (the default)")
    parser.add_argument("-c", "--config", dest="overrides", type=_config_override, action="append", default=[],
                        metavar="key=value", help="override a config value (TOML value, raw string fallback)")
    parser.add_argument("--enable", action="append", default=[], metavar="FEATURE", help="features.FEATURE = true")
    parser.add_argument("--disable", action="append", default=[], metavar="FEATURE", help="features.FEATURE = false")
    return parser


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    return ServerSettings(
        listen=args.listen if args.listen is not None else StdioListen(),
        config_overrides=tuple(args.overrides),
        enable_features=tuple(args.enable),
        disable_features=tuple(args.disable),
    )


async def run_server(settings: ServerSettings) -> None:
    """Serve with signal handling: first signal drains, second forces."""
    server = AppServer(settings)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)

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


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging()
    settings = settings_from_args(args)
    if isinstance(settings.listen, NoListen):
        sys.stderr.write("Error: no transport configured; use --listen or enable remote control\n")
        sys.exit(1)
    trio.run(run_server, settings)
    sys.exit(0)
