"""The Responses-API client against a real HTTP server on 127.0.0.1, and the SSE decoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from codex_trio.config.effective import ProviderConfig
from codex_trio.core import model_client
from codex_trio.core.model_client import (
    Completed,
    Login,
    ModelError,
    OutputItemDone,
    OutputTextDelta,
    ResponseEvent,
    open_model_client,
    resolve_auth,
)
from codex_trio.core.sse import SseDecoder, SseEvent
from tests.responses_server import Dropped, Failed, ResponsesServer, Stall, Status, Text

pytestmark = pytest.mark.usefixtures("fast_backoff")


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_client, "RETRY_BASE_DELAY", 0.001)


def provider(server: ResponsesServer, **kw: Any) -> ProviderConfig:
    return ProviderConfig("scripted", "Scripted", base_url=server.base_url, **kw)


async def run(server: ResponsesServer, tmp_path: Path, **kw: Any) -> tuple[list[ResponseEvent], Completed]:
    events: list[ResponseEvent] = []

    async def on_event(event: ResponseEvent) -> None:
        events.append(event)

    with trio.fail_after(10):
        async with open_model_client(provider(server, **kw)) as client:
            done = await client.stream({"model": "m", "stream": True, "input": []}, {"x-test": "1"}, on_event)
    return events, done


# ---------------------------------------------------------------------------- SSE
def test_sse_decoder_handles_split_chunks_and_crlf() -> None:
    decoder = SseDecoder()
    stream = b'event: a\r\ndata: {"x":\r\ndata: 1}\r\n\r\n: comment\n\nevent: b\ndata: two\n\n'
    events: list[SseEvent] = []
    for i in range(len(stream)):
        events += decoder.feed(stream[i : i + 1])
    assert events == [SseEvent("a", '{"x":\n1}'), SseEvent("b", "two")]


def test_sse_decoder_drops_events_without_data() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"event: x\n\ndata: y\n\n") == [SseEvent("message", "y")]


# ---------------------------------------------------------------------------- streaming
async def test_a_text_reply_streams_deltas_then_the_item_then_completed(
    model: ResponsesServer, tmp_path: Path
) -> None:
    model.enqueue(Text("Hello there", pieces=3))
    events, done = await run(model, tmp_path)
    deltas = [e.delta for e in events if isinstance(e, OutputTextDelta)]
    assert "".join(deltas) == "Hello there" and len(deltas) == 3
    items = [e.item for e in events if isinstance(e, OutputItemDone)]
    assert items[0]["content"][0]["text"] == "Hello there"
    assert done.usage is not None and done.usage.total_tokens == 120
    request = model.posts[0]
    assert request.headers["x-test"] == "1" and request.headers["accept"] == "text/event-stream"
    assert "authorization" not in request.headers


async def test_env_key_becomes_a_bearer_token(
    model: ResponsesServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRIPTED_KEY", "sk-test")
    await run(model, tmp_path, env_key="SCRIPTED_KEY", http_headers={"x-extra": "yes"})
    assert model.posts[0].headers["authorization"] == "Bearer sk-test"
    assert model.posts[0].headers["x-extra"] == "yes"


def test_a_missing_env_key_is_reported_by_name() -> None:
    with pytest.raises(ModelError, match="Missing environment variable: `NOPE_KEY`"):
        resolve_auth(ProviderConfig("x", "x", env_key="NOPE_KEY"), None, {})


def test_openai_auth_prefers_the_accounts_login_over_the_environment() -> None:
    openai = ProviderConfig("openai", "OpenAI", requires_openai_auth=True)
    auth = resolve_auth(openai, Login("apikey", "sk-stored"), {"OPENAI_API_KEY": "sk-env"})
    assert auth.headers == {"authorization": "Bearer sk-stored"}
    assert resolve_auth(openai, None, {"OPENAI_API_KEY": "sk-env"}).headers == {
        "authorization": "Bearer sk-env"
    }
    chatgpt = resolve_auth(openai, Login("chatgpt", "tok", "acct-1"), {})
    assert chatgpt.headers == {"authorization": "Bearer tok", "chatgpt-account-id": "acct-1"}


# ---------------------------------------------------------------------------- failures
async def test_a_500_is_retried_and_then_succeeds(model: ResponsesServer, tmp_path: Path) -> None:
    model.enqueue(Status(500), Text("recovered"))
    events, _ = await run(model, tmp_path, request_max_retries=1)
    assert len(model.posts) == 2
    assert any(isinstance(e, OutputItemDone) for e in events)


async def test_a_500_without_retries_fails_with_the_high_demand_message(
    model: ResponsesServer, tmp_path: Path
) -> None:
    model.enqueue(Status(500))
    with pytest.raises(ModelError) as caught:
        await run(model, tmp_path, request_max_retries=0)
    assert caught.value.codex_error_info == "internalServerError" and caught.value.retryable
    assert "high demand" in caught.value.message


async def test_a_429_is_retried_then_reported_with_its_status(model: ResponsesServer, tmp_path: Path) -> None:
    model.enqueue(Status(429, headers={"retry-after": "0"}), Status(429, headers={"retry-after": "0"}))
    with pytest.raises(ModelError) as caught:
        await run(model, tmp_path, request_max_retries=1)
    assert len(model.posts) == 2
    assert caught.value.message == "exceeded retry limit, last status: 429 Too Many Requests"
    assert caught.value.codex_error_info == {"responseTooManyFailedAttempts": {"httpStatusCode": 429}}


async def test_a_401_is_not_retried(model: ResponsesServer, tmp_path: Path) -> None:
    model.enqueue(Status(401, "bad key"))
    with pytest.raises(ModelError) as caught:
        await run(model, tmp_path, request_max_retries=3)
    assert len(model.posts) == 1
    assert caught.value.message.startswith("unexpected status 401 Unauthorized: bad key")


async def test_a_stream_that_ends_early_is_a_retryable_disconnect(
    model: ResponsesServer, tmp_path: Path
) -> None:
    model.enqueue(Dropped())
    with pytest.raises(ModelError) as caught:
        await run(model, tmp_path)
    assert caught.value.retryable
    assert (
        caught.value.message
        == "stream disconnected before completion: stream closed before response.completed"
    )


async def test_response_failed_carries_the_models_message(model: ResponsesServer, tmp_path: Path) -> None:
    model.enqueue(Failed("boom"))
    with pytest.raises(ModelError, match="stream disconnected before completion: boom"):
        await run(model, tmp_path)


async def test_an_unreachable_server_is_a_connection_failure(tmp_path: Path) -> None:
    unreachable = ProviderConfig("x", "x", base_url="http://127.0.0.1:9/v1", request_max_retries=0)
    with pytest.raises(ModelError) as caught, trio.fail_after(10):
        async with open_model_client(unreachable) as client:
            await client.stream({}, {}, _ignore)
    assert caught.value.codex_error_info == {"httpConnectionFailed": {"httpStatusCode": None}}


async def test_cancelling_the_stream_drops_the_http_connection(
    model: ResponsesServer, tmp_path: Path
) -> None:
    stall = Stall()
    model.enqueue(stall)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                async with open_model_client(provider(model)) as client:
                    await client.stream({}, {}, _ignore)

            nursery.start_soon(consume)
            await stall.streaming.wait()
            nursery.cancel_scope.cancel()
        await model.posts[0].finished.wait()
    assert model.posts[0].dropped


async def _ignore(event: ResponseEvent) -> None:
    return None


async def test_a_stream_that_goes_quiet_times_out_as_a_disconnect(
    model: ResponsesServer, tmp_path: Path
) -> None:
    stall = Stall()
    model.enqueue(stall)
    with pytest.raises(ModelError) as caught:
        await run(model, tmp_path, stream_idle_timeout_ms=200)
    assert caught.value.retryable and "idle timeout" in caught.value.message
    with trio.fail_after(10):
        await model.posts[0].finished.wait()
    assert model.posts[0].dropped
