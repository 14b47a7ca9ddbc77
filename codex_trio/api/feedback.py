"""`feedback/save` and `feedback/upload`: a ZIP bundle a user can send when a turn goes wrong.

The bundle has the reference's layout: `report.json` (the report: classification, reason,
tags), `manifest.json` (one entry per attachment) and `attachments/NNNN/<name>` files. With
`includeLogs` it attaches the log store's rows for the thread plus this process's threadless
rows (`codex-logs.log`, newest first within LOG_BUDGET, written oldest first), a diagnostics
report, the thread's rollout and any `extraLogFiles`. `feedback/save` writes it to a new file
at `savePath`; `feedback/upload` POSTs it to `[feedback] upload_url` from config.toml, so a
company collects its own reports (the reference only knows its vendor's endpoint).
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio

from codex_trio import tracing
from codex_trio._version import VERSION
from codex_trio.config.effective import load_config
from codex_trio.core.prompt import BASE_INSTRUCTIONS
from codex_trio.ids import uuid7
from codex_trio.log_store import LogStore
from codex_trio.protocol.errors import INTERNAL_ERROR, RpcError, invalid_request
from codex_trio.protocol.feedback import (
    FeedbackSaveParams,
    FeedbackSaveResponse,
    FeedbackUploadParams,
    FeedbackUploadResponse,
)
from codex_trio.routing import RequestContext, Route, route
from codex_trio.services import Services
from codex_trio.threads import parse_thread_id

#: estimated bytes of log rows one bundle carries.
LOG_BUDGET = 4 * 1024 * 1024
#: bytes of one extra log file that are attached (its tail).
EXTRA_FILE_LIMIT = 10 * 1024 * 1024
UPLOAD_TIMEOUT = 30.0

Attachment = tuple[str, str, bytes]
RolloutOf = Callable[[str], Awaitable[tuple[str | None, list[dict[str, Any]]]]]


def prompt_hash(lines: list[dict[str, Any]]) -> str | None:
    """SHA-256 of the session's base instructions, whitespace runs collapsed (as the reference);
    None without a rollout."""
    for line in lines:
        if line.get("type") == "session_meta":
            payload = line.get("payload") or {}
            base = payload.get("base_instructions") if isinstance(payload, dict) else None
            text = base.get("text") if isinstance(base, dict) else None
            if not isinstance(text, str):
                text = BASE_INSTRUCTIONS  # what this server's turns send when none were given
            return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()
    return None


def _title(classification: str) -> str:
    return " ".join(word.capitalize() for word in classification.replace("_", " ").split()) or "Feedback"


def _log_text(rows: list[tuple[Any, ...]]) -> bytes:
    out = []
    for ts, nanos, level, target, body, _thread, _size in reversed(rows):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{nanos // 1000:06d}Z"
        out.append(f"{stamp} {level:>5} {target}: {body}\n")
    return "".join(out).encode()


def build_zip(report: dict[str, Any], attachments: list[Attachment]) -> bytes:
    """`report.json`, then `attachments/NNNN/<name>`, then `manifest.json`."""
    buffer = io.BytesIO()
    manifest = []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("report.json", orjson.dumps(report))
        for index, (name, content_type, data) in enumerate(attachments):
            entry = f"attachments/{index:04d}/{name}"
            bundle.writestr(entry, data)
            manifest.append({"entry": entry, "filename": name, "contentType": content_type})
        bundle.writestr("manifest.json", orjson.dumps(manifest))
    return buffer.getvalue()


def _write_new(path: Path, data: bytes) -> None:
    """Write `data` to a new file at `path` (never replacing one): a temp file, then a link."""
    if os.path.lexists(path):
        raise FileExistsError("feedback save path already exists")
    fd, tmp = tempfile.mkstemp(prefix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError("feedback save path already exists") from None
    finally:
        os.unlink(tmp)


def _os_error(exc: OSError) -> str:
    if isinstance(exc, FileExistsError) and exc.args and not exc.strerror:
        return str(exc.args[0])
    where = f' at path "{exc.filename}"' if exc.filename else ""
    return f"{exc.strerror} (os error {exc.errno}){where}"


def _read_tail(path: str) -> bytes:
    with open(path, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        source.seek(max(0, size - EXTRA_FILE_LIMIT))
        return source.read()


class FeedbackApi:
    """The feedback family: see the module docstring."""

    def __init__(self, services: Services, rollout_of: RolloutOf, log_store: LogStore | None) -> None:
        """`rollout_of(thread_id)` is the thread family's (rollout file name, lines) of a thread."""
        self.services = services
        self.rollout_of = rollout_of
        self.log_store = log_store

    def routes(self) -> list[Route]:
        return [
            route("feedback/save", FeedbackSaveParams, self.feedback_save),
            route("feedback/upload", FeedbackUploadParams, self.feedback_upload),
        ]

    async def feedback_save(self, ctx: RequestContext, params: FeedbackSaveParams) -> FeedbackSaveResponse:
        path = Path(params.save_path)
        if not path.is_absolute():
            raise invalid_request("feedback savePath must be an absolute host path")
        thread_id, data, hashed = await self._bundle(params)
        try:
            await trio.to_thread.run_sync(_write_new, path, data)
        except OSError as exc:
            raise RpcError(INTERNAL_ERROR, f"failed to save feedback: {_os_error(exc)}") from None
        return FeedbackSaveResponse(str(path), thread_id, hashed)

    async def feedback_upload(
        self, ctx: RequestContext, params: FeedbackUploadParams
    ) -> FeedbackUploadResponse:
        thread_id, data, hashed = await self._bundle(params)
        url = await self._upload_url()
        if url is None:
            raise RpcError(
                INTERNAL_ERROR,
                "failed to upload feedback: no feedback endpoint is configured "
                "(set `upload_url` under [feedback] in config.toml)",
            )
        headers = tracing.with_trace_headers(
            {
                "content-type": "application/zip",
                "x-codex-thread-id": thread_id,
                "user-agent": f"codex-trio/{VERSION}",
            }
        )
        try:
            async with httpx.AsyncClient(timeout=UPLOAD_TIMEOUT) as client:
                response = await client.post(url, content=data, headers=headers)
        except httpx.HTTPError as exc:
            raise RpcError(
                INTERNAL_ERROR, f"failed to upload feedback: error sending request for url ({url}): {exc}"
            ) from None
        if response.status_code >= 300:
            raise RpcError(
                INTERNAL_ERROR, f"failed to upload feedback: {url} answered HTTP {response.status_code}"
            )
        return FeedbackUploadResponse(thread_id, hashed)

    async def _upload_url(self) -> str | None:
        settings = self.services.settings
        try:
            config = await trio.to_thread.run_sync(lambda: load_config(settings, None))
        except (OSError, ValueError) as exc:
            raise invalid_request(f"failed to load configuration: {exc}") from None
        table = config.raw.get("feedback")
        url = table.get("upload_url") if isinstance(table, dict) else None
        return url if isinstance(url, str) and url else None

    async def _bundle(self, params: FeedbackUploadParams) -> tuple[str, bytes, str | None]:
        """(thread id, ZIP bytes, prompt hash) of the report `params` describe."""
        if params.thread_id is not None:
            thread_id = parse_thread_id(params.thread_id)
            rollout_name, lines = await self.rollout_of(thread_id)
        else:
            thread_id = f"no-active-thread-{uuid7()}"
            rollout_name, lines = None, []
        hashed = prompt_hash(lines)
        title = f"[{_title(params.classification)}]: Codex session {thread_id}"
        tags = {
            **(params.tags or {}),
            "classification": params.classification,
            "cli_version": VERSION,
            "server": "codex-trio",
            "thread_id": thread_id,
        }
        if params.reason is not None:
            tags["reason"] = params.reason
        if hashed is not None:
            tags["prompt_hash"] = hashed
        report: dict[str, Any] = {"event_id": uuid.uuid4().hex, "message": title, "timestamp": time.time()}
        if params.reason:
            report["exception"] = {"values": [{"type": title, "value": params.reason}]}
        report["tags"] = tags
        attachments: list[Attachment] = []
        if params.include_logs:
            attachments = await self._attachments(params, thread_id, rollout_name, lines)
        data = await trio.to_thread.run_sync(build_zip, report, attachments)
        return thread_id, data, hashed

    async def _attachments(
        self,
        params: FeedbackUploadParams,
        thread_id: str,
        rollout_name: str | None,
        lines: list[dict[str, Any]],
    ) -> list[Attachment]:
        attachments: list[Attachment] = []
        if self.log_store is not None:
            real_thread = None if thread_id.startswith("no-active-thread-") else thread_id
            rows = await self.log_store.rows_for_feedback(real_thread, LOG_BUDGET)
            attachments.append(("codex-logs.log", "text/plain", _log_text(rows)))
        attachments.append(("codex-doctor-report.json", "application/json", self._diagnostics()))
        if rollout_name is not None and lines:
            body = b"".join(orjson.dumps(line) + b"\n" for line in lines)
            attachments.append((rollout_name, "text/plain", body))
        for extra in params.extra_log_files or ():
            try:
                data = await trio.to_thread.run_sync(_read_tail, extra)
            except OSError as exc:
                raise RpcError(
                    INTERNAL_ERROR, f"failed to read extra log file {extra}: {_os_error(exc)}"
                ) from None
            name = os.path.basename(extra) or "extra.log"
            kind = "text/x-toml" if name.endswith(".toml") else "text/plain"
            attachments.append((name, kind, data))
        return attachments

    def _diagnostics(self) -> bytes:
        store = self.log_store
        return orjson.dumps(
            {
                "schemaVersion": 1,
                "generatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "codexVersion": VERSION,
                "server": "codex-trio",
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "codexHome": str(self.services.settings.codex_home),
                "tracing": tracing.enabled(),
                "logStore": None
                if store is None
                else {
                    "path": str(store.path),
                    "processUuid": store.process_uuid,
                    "droppedRecords": store.dropped,
                },
            },
            option=orjson.OPT_INDENT_2,
        )
