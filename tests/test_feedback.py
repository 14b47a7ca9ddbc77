"""`feedback/save` and `feedback/upload`: validation, the bundle's layout and contents, uploads."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from codex_trio import log_store
from codex_trio.api.feedback import prompt_hash
from codex_trio.client import ClientConnection
from codex_trio.core import model_client
from codex_trio.core.prompt import BASE_INSTRUCTIONS
from codex_trio.settings import ServerSettings
from tests.http_receiver import HttpReceiver
from tests.responses_server import ResponsesServer, Status, Text

log = logging.getLogger("codex_trio.tests.feedback")


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # An embedding program's logger levels decide what reaches the store; the CLI takes all.
    caplog.set_level(logging.DEBUG, logger="codex_trio")
    monkeypatch.setattr(model_client, "RETRY_BASE_DELAY", 0.001)


@pytest.fixture
def server_settings(server_settings: ServerSettings) -> ServerSettings:
    """Feedback bundles carry the log store's rows: these servers keep one."""
    return attrs.evolve(server_settings, log_store=True)


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> AsyncIterator[HttpReceiver]:
    server = HttpReceiver()
    await nursery.start(server.run)
    yield server


@pytest.fixture
def configured(codex_home: Path, model: ResponsesServer) -> Path:
    (codex_home / "config.toml").write_text(model.config_toml(retries=1))
    return codex_home


async def error_of(client: ClientConnection, method: str, params: Any) -> dict[str, Any]:
    response = await client.request(method, params)
    assert "error" in response, response
    return dict(response["error"])


def entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        return {name: bundle.read(name) for name in bundle.namelist()}


async def test_save_validates_like_the_reference(client: ClientConnection, tmp_path: Path) -> None:
    assert await error_of(client, "feedback/save", {"classification": "bug", "savePath": "rel.zip"}) == {
        "code": -32600,
        "message": "feedback savePath must be an absolute host path",
    }
    missing = await error_of(client, "feedback/save", {"classification": "bug"})
    assert missing == {"code": -32600, "message": "Invalid request: missing field `savePath`"}
    missing = await error_of(client, "feedback/save", {"savePath": str(tmp_path / "x.zip")})
    assert missing == {"code": -32600, "message": "Invalid request: missing field `classification`"}
    bad_id = await error_of(
        client,
        "feedback/save",
        {"classification": "bug", "threadId": "nope", "savePath": str(tmp_path / "y.zip")},
    )
    assert bad_id["code"] == -32600
    assert bad_id["message"].startswith("invalid thread id: invalid character: expected an optional prefix")
    existing = tmp_path / "exists.zip"
    existing.write_bytes(b"mine")
    assert await error_of(client, "feedback/save", {"classification": "bug", "savePath": str(existing)}) == {
        "code": -32603,
        "message": "failed to save feedback: feedback save path already exists",
    }
    assert existing.read_bytes() == b"mine"
    nowhere = await error_of(
        client, "feedback/save", {"classification": "bug", "savePath": "/nonexistent/d/x.zip"}
    )
    assert nowhere["code"] == -32603
    assert nowhere["message"].startswith(
        'failed to save feedback: No such file or directory (os error 2) at path "/nonexistent/d/.tmp'
    )
    missing_upload = await error_of(client, "feedback/upload", {})
    assert missing_upload == {"code": -32600, "message": "Invalid request: missing field `classification`"}


async def test_save_without_a_thread(client: ClientConnection, tmp_path: Path) -> None:
    path = tmp_path / "report.zip"
    result = await client.call("feedback/save", {"classification": "bug", "savePath": str(path)})
    assert result["savedPath"] == str(path)
    assert result["threadId"].startswith("no-active-thread-")
    assert result["promptHash"] is None
    files = entries(path.read_bytes())
    assert list(files) == ["report.json", "manifest.json"]
    assert json.loads(files["manifest.json"]) == []
    report = json.loads(files["report.json"])
    assert report["message"] == f"[Bug]: Codex session {result['threadId']}"
    assert report["tags"]["classification"] == "bug"
    assert "exception" not in report
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp")]


async def test_save_bundles_the_threads_rollout_and_logs(
    configured: Path, client: ClientConnection, model: ResponsesServer, tmp_path: Path
) -> None:
    thread = await client.call("thread/start", {"cwd": str(tmp_path)})
    thread_id = thread["thread"]["id"]
    model.enqueue(Status(500), Text("done"))  # one retried model request: logged in the turn
    turn = await client.call("turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": "go"}]})
    await client.wait_for("turn/completed", lambda p: p["turn"]["id"] == turn["turn"]["id"])
    log.warning("threadless record of this process")
    with log_store.thread_scope("00000000-0000-0000-0000-000000000000"):
        log.warning("another thread's record")
    extra = tmp_path / "extra.log"
    extra.write_text("extra file\n")
    path = tmp_path / "bundle.zip"
    result = await client.call(
        "feedback/save",
        {
            "classification": "bad_result",
            "reason": "it broke",
            "threadId": thread_id,
            "includeLogs": True,
            "extraLogFiles": [str(extra)],
            "tags": {"team": "infra"},
            "savePath": str(path),
        },
    )
    assert result["threadId"] == thread_id
    files = entries(path.read_bytes())
    manifest = json.loads(files["manifest.json"])
    names = [m["filename"] for m in manifest]
    assert names[:2] == ["codex-logs.log", "codex-doctor-report.json"]
    assert names[2].startswith("rollout-") and names[2].endswith(f"{thread_id}.jsonl")
    assert names[3] == "extra.log"
    assert [m["entry"] for m in manifest] == [f"attachments/{i:04d}/{n}" for i, n in enumerate(names)]
    assert list(files) == ["report.json", *[m["entry"] for m in manifest], "manifest.json"]

    logs = files["attachments/0000/codex-logs.log"].decode()
    assert "model request failed" in logs
    assert "threadless record of this process" in logs
    assert "another thread's record" not in logs
    rollout = [json.loads(line) for line in files[manifest[2]["entry"]].splitlines()]
    assert rollout[0]["type"] == "session_meta"
    # no base instructions given at thread/start: the hash is of the ones the turns sent
    assert "base_instructions" not in rollout[0]["payload"]
    text = BASE_INSTRUCTIONS
    assert result["promptHash"] == hashlib.sha256(" ".join(text.split()).encode()).hexdigest()
    assert files["attachments/0003/extra.log"] == b"extra file\n"
    report = json.loads(files["report.json"])
    assert report["message"] == f"[Bad Result]: Codex session {thread_id}"
    assert report["exception"]["values"][0]["value"] == "it broke"
    assert report["tags"]["team"] == "infra" and report["tags"]["prompt_hash"] == result["promptHash"]


async def test_upload_needs_a_configured_endpoint(client: ClientConnection) -> None:
    error = await error_of(client, "feedback/upload", {"classification": "bug"})
    assert error["code"] == -32603
    assert error["message"].startswith("failed to upload feedback:")


async def test_upload_posts_the_bundle_to_the_configured_endpoint(
    codex_home: Path, client: ClientConnection, receiver: HttpReceiver
) -> None:
    (codex_home / "config.toml").write_text(f'[feedback]\nupload_url = "{receiver.url("/feedback")}"\n')
    result = await client.call("feedback/upload", {"classification": "bug", "includeLogs": True})
    assert result["threadId"].startswith("no-active-thread-") and result["promptHash"] is None
    (posted,) = receiver.posts
    assert posted.path == "/feedback" and posted.headers["content-type"] == "application/zip"
    assert posted.headers["x-codex-thread-id"] == result["threadId"]
    files = entries(posted.body)
    assert "report.json" in files and "attachments/0000/codex-logs.log" in files

    receiver.status = 500
    error = await error_of(client, "feedback/upload", {"classification": "bug"})
    assert error["code"] == -32603 and "HTTP 500" in error["message"]


def test_prompt_hash_collapses_whitespace_like_the_reference() -> None:
    meta = {"type": "session_meta", "payload": {"base_instructions": {"text": "You are\n\n  Codex.\t"}}}
    assert prompt_hash([meta]) == hashlib.sha256(b"You are Codex.").hexdigest()
    assert prompt_hash([]) is None
