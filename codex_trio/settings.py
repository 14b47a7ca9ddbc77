"""What the server is started with: the transport, CODEX_HOME and command-line config.

Imports `transport` (listen targets, auth) and `config.sources` only: the config layers read it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from codex_trio.records import by_value
from codex_trio.transport.listen import ListenTarget, StdioListen

if TYPE_CHECKING:  # names for annotations only: a stdio cold start loads neither module
    from codex_trio.config.sources import ThreadConfigLoader
    from codex_trio.transport.auth import WebSocketAuth


def default_codex_home() -> Path:
    """`$CODEX_HOME`, else `~/.codex`, as the reference resolves it."""
    env = os.environ.get("CODEX_HOME")
    return Path(env).absolute() if env else Path.home() / ".codex"


@by_value
@attrs.frozen(repr=False, eq=False)
class ServerSettings:
    """Start-up settings; config files are read by the config layer, not here."""

    codex_home: Path = attrs.field(factory=default_codex_home)
    listen: ListenTarget = attrs.field(factory=StdioListen)
    #: `-c key=value` overrides, in command-line order.
    config_overrides: tuple[tuple[str, str], ...] = ()
    enable_features: tuple[str, ...] = ()
    disable_features: tuple[str, ...] = ()
    cwd: Path = attrs.field(factory=Path.cwd)
    #: seconds detached work (running turns) may take to finish once a drain starts.
    drain_grace: float = 0.5
    #: seconds the whole shutdown may take, every stage included (the drain grace, flushing
    #: each connection's queued output, closing transports); then what is left is cancelled.
    shutdown_timeout: float = 3.0
    #: `--ws-auth ...` (checked during every websocket upgrade on `ws://`); None = no auth.
    ws_auth: WebSocketAuth | None = None
    #: session-owned, thread-scoped config layers (see `codex_trio.config.sources`); embedders
    #: set one so clients cannot override e.g. the provider; None adds nothing.
    thread_config_loader: ThreadConfigLoader | None = None
    #: the bubblewrap program that confines sandboxed commands (a name looked up in PATH).
    bwrap: str = "bwrap"
    #: files sandboxed commands must not read (the `--ws-*` secret files), beside CODEX_HOME's
    #: credential files.
    secret_files: tuple[Path, ...] = ()
    #: an OpenTelemetry `TracerProvider` to trace with instead of the one `[otel]` in
    #: config.toml configures; it stays the caller's (the server neither flushes nor closes it).
    tracer_provider: Any = None
    #: keep every log record in the SQLite log store under CODEX_HOME (for feedback bundles).
    log_store: bool = True
