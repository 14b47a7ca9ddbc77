"""Tracing: request spans, their parents, context carried into turns, tools and model requests.

Unit tests trace into the SDK's in-memory exporter (`ServerSettings.tracer_provider`); the
end-to-end tests configure `[otel]` as a user would and export over real OTLP/HTTP to a
receiver on 127.0.0.1 (`tests/http_receiver.py`), with a scripted Responses server as the model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from codex_trio import tracing
from codex_trio.client import ClientConnection
from codex_trio.server import open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.testing import LineStream, server_env
from tests.http_receiver import HttpReceiver, ReceivedSpan
from tests.responses_server import ResponsesServer, Shell, Text

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
CARRIER = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "k=v"}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


@pytest.fixture
def traced_settings(server_settings: ServerSettings, exporter: InMemorySpanExporter) -> ServerSettings:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    import attrs

    return attrs.evolve(server_settings, tracer_provider=provider)


@pytest.fixture
async def traced(traced_settings: ServerSettings, model: ResponsesServer) -> AsyncIterator[ClientConnection]:
    (traced_settings.codex_home / "config.toml").write_text(model.config_toml())
    async with open_app_server(traced_settings) as server:
        client = await server.connect()
        yield client
        await client.aclose()


async def call_traced(client: ClientConnection, method: str, params: Any, trace: Any = None) -> Any:
    """A request with a top-level `trace` member (ClientConnection does not send one)."""
    message: dict[str, Any] = {"id": f"t-{method}", "method": method, "params": params}
    if trace is not None:
        message["trace"] = trace
    waiter_send, waiter_receive = trio.open_memory_channel[Any](1)
    client._waiters[message["id"]] = waiter_send
    await client.send_raw(json.dumps(message).encode())
    response = await waiter_receive.receive()
    assert "result" in response, response
    return response["result"]


def hex_id(value: int, size: int) -> str:
    return f"{value:0{size * 2}x}"


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def ancestors(spans: tuple[ReadableSpan, ...], span: ReadableSpan) -> list[str]:
    by_id = {s.context.span_id: s for s in spans}
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span.name)
    return chain


# ---------------------------------------------------------------------------- request spans
async def test_request_span_has_the_reference_attributes_and_the_carrier_parent(
    traced: ClientConnection, exporter: InMemorySpanExporter
) -> None:
    client_info = {"clientInfo": {"name": "probe", "version": "9.9"}}
    await call_traced(traced, "initialize", client_info, CARRIER)
    await traced.call("fs/getMetadata", {"path": "/"})
    spans = exporter.get_finished_spans()
    (init,) = named(spans, "initialize")
    assert init.kind is SpanKind.SERVER
    assert init.instrumentation_scope is not None and init.instrumentation_scope.name == "codex-app-server"
    assert hex_id(init.context.trace_id, 16) == TRACE_ID
    assert init.parent is not None and hex_id(init.parent.span_id, 8) == PARENT_ID
    assert dict(init.attributes or {}) == {
        "rpc.system": "jsonrpc",
        "rpc.method": "initialize",
        "rpc.transport": "in-process",
        "rpc.request_id": "t-initialize",
        "app_server.connection_id": "0",
        "app_server.api_version": "v2",
        "app_server.client_name": "probe",
        "app_server.client_version": "9.9",
    }
    (meta,) = named(spans, "fs/getMetadata")
    # no carrier and no TRACEPARENT: a new root, with the client the session remembers
    assert meta.parent is None and meta.context.trace_id != init.context.trace_id
    assert meta.attributes is not None
    assert meta.attributes["app_server.client_name"] == "probe"
    assert meta.attributes["rpc.request_id"] == "1"


async def test_an_invalid_carrier_is_ignored(
    traced: ClientConnection, exporter: InMemorySpanExporter
) -> None:
    await call_traced(
        traced, "initialize", {"clientInfo": {"name": "x", "version": "1"}}, {"traceparent": "junk"}
    )
    (init,) = named(exporter.get_finished_spans(), "initialize")
    assert init.parent is None


async def test_traceparent_of_the_process_is_the_default_parent(
    traced_settings: ServerSettings, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACEPARENT", f"00-{TRACE_ID}-{PARENT_ID}-01")
    async with open_app_server(traced_settings) as server:
        client = await server.connect()
        await client.initialize("env")
        other = "00-11111111111111111111111111111111-2222222222222222-01"
        await call_traced(client, "fs/getMetadata", {"path": "/"}, {"traceparent": other})
        await client.aclose()
    spans = exporter.get_finished_spans()
    (init,) = named(spans, "initialize")
    assert hex_id(init.context.trace_id, 16) == TRACE_ID
    assert init.parent is not None and hex_id(init.parent.span_id, 8) == PARENT_ID
    (meta,) = named(spans, "fs/getMetadata")  # the request's own carrier wins
    assert hex_id(meta.context.trace_id, 16) == "1" * 32


async def test_an_error_answer_is_recorded_on_the_span(
    traced: ClientConnection, exporter: InMemorySpanExporter
) -> None:
    await traced.initialize("x")
    response = await traced.request("thread/read", {"threadId": "nope"})
    assert "error" in response
    (span,) = named(exporter.get_finished_spans(), "thread/read")
    assert span.attributes is not None
    assert span.attributes["rpc.jsonrpc.error_code"] == response["error"]["code"]


# ---------------------------------------------------------------------------- turns
async def run_turn(client: ClientConnection, thread_id: str, prompt: str, trace: Any) -> str:
    params = {"threadId": thread_id, "input": [{"type": "text", "text": prompt}]}
    result = await call_traced(client, "turn/start", params, trace)
    turn_id = str(result["turn"]["id"])
    await client.wait_for("turn/completed", lambda p: p["turn"]["id"] == turn_id)
    return turn_id


async def test_a_turn_is_traced_under_its_turn_start_request(
    traced: ClientConnection, exporter: InMemorySpanExporter, model: ResponsesServer, tmp_path: Path
) -> None:
    await traced.initialize("x")
    thread = await traced.call(
        "thread/start", {"cwd": str(tmp_path), "sandbox": "danger-full-access", "approvalPolicy": "never"}
    )
    thread_id = thread["thread"]["id"]
    model.enqueue(Shell("echo hi"), Text("done"))
    first = await run_turn(traced, thread_id, "go", CARRIER)
    # A second turn runs in the same thread task: it must still be under its own request.
    model.enqueue(Text("again"))
    second_trace = {"traceparent": "00-33333333333333333333333333333333-4444444444444444-01"}
    second = await run_turn(traced, thread_id, "more", second_trace)
    spans = exporter.get_finished_spans()

    starts = named(spans, "turn/start")
    assert [s.attributes["turn.id"] for s in starts if s.attributes] == [first, second]
    turns = named(spans, "session_task.turn")
    assert [ancestors(spans, t) for t in turns] == [["turn/start"], ["turn/start"]]
    assert hex_id(turns[0].context.trace_id, 16) == TRACE_ID
    assert hex_id(turns[1].context.trace_id, 16) == "3" * 32

    requests = named(spans, "responses.stream_request")
    assert len(requests) == 3
    for span in requests:
        assert ancestors(spans, span) == ["codex.sampling", "session_task.turn", "turn/start"]
    (tool,) = named(spans, "exec_command")
    assert ancestors(spans, tool) == ["session_task.turn", "turn/start"]
    assert tool.attributes is not None and tool.attributes["turn.id"] == first

    # Each model request carried the traceparent of its own span.
    sent = [p.headers["traceparent"] for p in model.posts]
    expected = [f"00-{hex_id(s.context.trace_id, 16)}-{hex_id(s.context.span_id, 8)}-01" for s in requests]
    assert sorted(sent) == sorted(expected)
    assert model.posts[0].headers["tracestate"] == "k=v"


async def test_thread_start_up_work_stays_under_thread_start(
    traced: ClientConnection, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    await traced.initialize("x")
    await call_traced(traced, "thread/start", {"cwd": str(tmp_path)}, CARRIER)
    (span,) = named(exporter.get_finished_spans(), "thread/start")
    assert hex_id(span.context.trace_id, 16) == TRACE_ID


# ---------------------------------------------------------------------------- configuration
def test_exporter_config_reads_the_reference_forms(tmp_path: Path) -> None:
    assert tracing.exporter_config(tmp_path, ()) is None
    (tmp_path / "config.toml").write_text(
        '[otel]\nenvironment = "staging"\n'
        'trace_exporter = { otlp-http = { endpoint = "http://c:4318/v1/traces", protocol = "json", '
        'headers = { "x-api-key" = "k" } } }\n'
    )
    assert tracing.exporter_config(tmp_path, ()) == {
        "endpoint": "http://c:4318/v1/traces",
        "protocol": "json",
        "headers": {"x-api-key": "k"},
        "environment": "staging",
    }
    (tmp_path / "config.toml").write_text(
        '[otel.trace_exporter.otlp-http]\nendpoint = "http://c:4318/v1/traces"\nprotocol = "binary"\n'
    )
    config = tracing.exporter_config(tmp_path, ())
    assert config is not None and config["protocol"] == "binary" and config["environment"] == "dev"
    overridden = tracing.exporter_config(
        tmp_path, [("otel.trace_exporter.otlp-http.endpoint", "http://d/v1/traces")]
    )
    assert overridden is not None and overridden["endpoint"] == "http://d/v1/traces"
    (tmp_path / "config.toml").write_text('[otel]\ntrace_exporter = "none"\n')
    assert tracing.exporter_config(tmp_path, ()) is None


def test_without_an_exporter_opentelemetry_is_never_imported(tmp_path: Path) -> None:
    script = (
        "import sys, trio\nfrom pathlib import Path\n"
        "from codex_trio.server import open_app_server\n"
        "from codex_trio.settings import ServerSettings\n"
        "from codex_trio.transport.listen import NoListen\n"
        "async def main():\n"
        f"    settings = ServerSettings(codex_home=Path({str(tmp_path)!r}), listen=NoListen())\n"
        "    async with open_app_server(settings) as s:\n"
        "        c = await s.connect()\n"
        "        await c.initialize('x')\n"
        "        await c.call('fs/getMetadata', {'path': '/'})\n"
        "        await c.aclose()\n"
        "trio.run(main)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- OTLP/HTTP end to end
def otel_toml(receiver: HttpReceiver, protocol: str) -> str:
    return (
        '[otel]\nenvironment = "test"\n[otel.trace_exporter.otlp-http]\n'
        f'endpoint = "{receiver.url("/v1/traces")}"\nprotocol = "{protocol}"\n'
        'headers = { "x-test" = "yes" }\n'
    )


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> AsyncIterator[HttpReceiver]:
    server = HttpReceiver()
    await nursery.start(server.run)
    yield server


def exporter_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "BatchSpanProcessor" in t.name or "Otel" in t.name]


async def test_in_process_server_flushes_and_joins_its_exporter(
    server_settings: ServerSettings, receiver: HttpReceiver
) -> None:
    (server_settings.codex_home / "config.toml").write_text(otel_toml(receiver, "binary"))
    async with open_app_server(server_settings) as server:
        client = await server.connect()
        await client.initialize("flush")
        assert exporter_threads()
        await client.aclose()
    # the span of the last request was exported before the server returned
    assert [s.name for s in receiver.spans] == ["initialize"]
    assert receiver.posts[0].headers["x-test"] == "yes"
    assert not exporter_threads()
    assert not tracing.enabled()


@pytest.mark.parametrize("protocol", ["binary", "json"])
async def test_turn_spans_reach_a_real_otlp_receiver(
    protocol: str,
    codex_home: Path,
    tmp_path: Path,
    receiver: HttpReceiver,
    model: ResponsesServer,
    nursery: trio.Nursery,
) -> None:
    (codex_home / "config.toml").write_text(
        model.config_toml(extra='approval_policy = "never"\nsandbox_mode = "danger-full-access"')
        + otel_toml(receiver, protocol)
    )
    model.enqueue(Shell("echo traced"), Text("done"))
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "codex_trio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=tmp_path,
        env=server_env(codex_home),
    )
    assert process.stdin is not None and process.stdout is not None
    client = ClientConnection(LineStream(process.stdout, process.stdin))
    nursery.start_soon(client.run)
    with trio.fail_after(60):
        await client.initialize("e2e")
        thread = await client.call("thread/start", {"cwd": str(tmp_path)})
        await run_turn(client, thread["thread"]["id"], "go", CARRIER)
        await process.stdin.aclose()  # stdin EOF: the server drains, flushes its spans and exits
        assert await process.wait() == 0
    await client.aclose()

    spans = receiver.spans
    assert {p.headers["content-type"] for p in receiver.posts} == {
        "application/json" if protocol == "json" else "application/x-protobuf"
    }
    assert spans[0].resource["service.name"] == "codex-app-server"
    assert spans[0].resource["env"] == "test"
    (start,) = receiver.by_name("turn/start")
    assert start.kind == 2 and start.trace_id == TRACE_ID and start.parent_span_id == PARENT_ID
    assert start.scope == "codex-app-server"
    descendants: list[ReceivedSpan] = [
        *receiver.by_name("responses.stream_request"),
        *receiver.by_name("exec_command"),
    ]
    assert len(descendants) == 3
    for span in descendants:
        assert start in receiver.ancestors(span)
    sent = {p.headers["traceparent"].split("-")[2] for p in model.posts}
    assert sent == {s.span_id for s in receiver.by_name("responses.stream_request")}


async def test_approvals_and_thread_start_up_are_traced_under_their_requests(
    traced: ClientConnection, exporter: InMemorySpanExporter, model: ResponsesServer, tmp_path: Path
) -> None:
    await traced.initialize("x")
    params = {"cwd": str(tmp_path), "sandbox": "danger-full-access", "approvalPolicy": "untrusted"}
    thread = await call_traced(traced, "thread/start", params, CARRIER)
    model.enqueue(Shell("touch approved.txt"), Text("done"))
    turn = await call_traced(
        traced, "turn/start", {"threadId": thread["thread"]["id"], "input": [{"type": "text", "text": "go"}]}
    )
    request = await traced.wait_for("item/commandExecution/requestApproval")
    await traced.respond(request["id"], {"decision": "accept"})
    await traced.wait_for("turn/completed", lambda p: p["turn"]["id"] == turn["turn"]["id"])
    spans = exporter.get_finished_spans()
    (git,) = named(spans, "app_server.thread_start.git_info")  # detached start-up work
    assert ancestors(spans, git) == ["thread/start"]
    assert hex_id(git.context.trace_id, 16) == TRACE_ID
    (approval,) = named(spans, "codex.approval")
    assert ancestors(spans, approval) == ["exec_command", "session_task.turn", "turn/start"]
    assert approval.attributes is not None and approval.attributes["approval.decision"] == "accept"
