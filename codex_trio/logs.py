"""Logging to stderr only (stdout is the protocol on stdio).

The level comes from `RUST_LOG` as the reference reads it (`info`, `debug`, or
`target=level,...` lists whose bare entry is the default); `LOG_FORMAT=json` writes one JSON
object per line.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import orjson

LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
}


def level_from_env(value: str | None) -> int:
    """The default level of a RUST_LOG-style directive list; WARNING when unset."""
    level = logging.WARNING
    for directive in (value or "").split(","):
        directive = directive.strip().lower()
        if directive in LEVELS:
            level = LEVELS[directive]
        elif "=" in directive:
            target, _, target_level = directive.partition("=")
            if target.startswith(("codex_trio", "codex_app_server")) and target_level in LEVELS:
                level = min(level, LEVELS[target_level])
    return level


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "target": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("LOG_FORMAT", "").lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # RUST_LOG filters stderr only: the server's log store takes every record.
    handler.setLevel(level_from_env(os.environ.get("RUST_LOG")))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG)
