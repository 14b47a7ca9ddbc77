"""A scripted OpenAI Responses API on 127.0.0.1 for the project's own tests and benchmarks.

Real HTTP/1.1 on a Trio socket, real server-sent events, no mocks inside the server under
test. Tests queue replies; each `POST …/responses` takes the next one (or `DEFAULT`):

* `Text(text, pieces)`      an assistant message streamed as deltas
* `Reasoning(summary, text)` a reasoning summary item, then a message
* `Shell(cmd)`              an `exec_command` function call
* `Patch(patch)`            a freeform `apply_patch` custom tool call
* `Stall(before)`           one delta, then the stream hangs until `release` (or the peer leaves)
* `Status(code)`            a plain HTTP error answer
* `Failed(message)`         a `response.failed` event
* `Dropped(before)`         the stream ends after one delta, without `response.completed`
* `Paced(pieces, gap)`      deltas sent `gap` seconds apart, each send time recorded (benchmarks)
* `WithEvents(events, then)` raw events after `response.created`, then `then` (a `Text`)

`headers` go with every event stream, `authorize` may refuse a request with a 401, and
`json_routes` answer other paths (the ChatGPT backend's `wham/*`) with fixed JSON.

Every request is recorded (`requests`) with its headers and JSON body.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

#: bytes of request head the server accepts.
MAX_HEAD = 64 * 1024


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


@attrs.define(eq=False)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    #: set once the reply was sent in full or abandoned.
    finished: trio.Event = attrs.Factory(trio.Event)
    #: the client went away before the reply was complete.
    dropped: bool = False

    @property
    def input(self) -> list[dict[str, Any]]:
        items = self.body.get("input") if isinstance(self.body, dict) else None
        return items if isinstance(items, list) else []

    def items_of_type(self, kind: str) -> list[dict[str, Any]]:
        return [i for i in self.input if i.get("type") == kind]

    def texts(self, role: str) -> list[str]:
        out = []
        for item in self.input:
            if item.get("type", "message") == "message" and item.get("role") == role:
                content = item.get("content")
                if isinstance(content, str):
                    out.append(content)
                else:
                    out.append("".join(p.get("text", "") for p in content or [] if isinstance(p, dict)))
        return out

    def tool_names(self) -> list[str]:
        tools = self.body.get("tools") if isinstance(self.body, dict) else None
        return [t.get("name") or t.get("type") for t in tools or []]


class SseWriter:
    """Writes one chunked `text/event-stream` response."""

    def __init__(self, stream: trio.abc.Stream, model: str) -> None:
        self.stream = stream
        self.model = model
        self.response_id = new_id("resp")
        self.output: list[dict[str, Any]] = []
        self._seq = itertools.count()
        self._index = itertools.count()

    async def event(self, kind: str, data: dict[str, Any]) -> None:
        payload = json.dumps({"type": kind, "sequence_number": next(self._seq), **data})
        body = f"event: {kind}\ndata: {payload}\n\n".encode()
        await self.stream.send_all(b"%X\r\n%s\r\n" % (len(body), body))

    def _response(self, status: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "id": self.response_id,
            "object": "response",
            "status": status,
            "model": self.model,
            "output": self.output if status == "completed" else [],
            "usage": usage,
        }

    async def created(self) -> None:
        await self.event("response.created", {"response": self._response("in_progress")})

    async def completed(self, input_tokens: int = 100, output_tokens: int = 20) -> None:
        usage = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }
        await self.event("response.completed", {"response": self._response("completed", usage)})

    async def open_message(self) -> tuple[str, int]:
        item_id, index = new_id("msg"), next(self._index)
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        await self.event("response.output_item.added", {"output_index": index, "item": item})
        return item_id, index

    async def delta(self, item_id: str, index: int, text: str) -> None:
        await self.event(
            "response.output_text.delta",
            {"item_id": item_id, "output_index": index, "content_index": 0, "delta": text},
        )

    async def close_message(self, item_id: str, index: int, text: str) -> None:
        part = {"type": "output_text", "text": text, "annotations": []}
        item = {
            "id": item_id,
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [part],
        }
        self.output.append(item)
        await self.event("response.output_item.done", {"output_index": index, "item": item})

    async def item(self, item: dict[str, Any]) -> None:
        index = next(self._index)
        await self.event(
            "response.output_item.added", {"output_index": index, "item": {**item, "status": "in_progress"}}
        )
        done = {**item, "status": "completed"}
        self.output.append(done)
        await self.event("response.output_item.done", {"output_index": index, "item": done})


def split(text: str, pieces: int) -> list[str]:
    if pieces <= 1 or len(text) < pieces:
        return [text]
    size = -(-len(text) // pieces)
    return [text[i : i + size] for i in range(0, len(text), size)]


# ---------------------------------------------------------------------------- replies
@attrs.define
class Text:
    text: str
    pieces: int = 3

    async def send(self, sse: SseWriter, request: RecordedRequest) -> None:
        await sse.created()
        item_id, index = await sse.open_message()
        for piece in split(self.text, self.pieces):
            await sse.delta(item_id, index, piece)
        await sse.close_message(item_id, index, self.text)
        await sse.completed()


@attrs.define
class Reasoning:
    summary: str
    text: str

    async def send(self, sse: SseWriter, request: RecordedRequest) -> None:
        await sse.created()
        item_id = new_id("rs")
        index = 0
        await sse.event(
            "response.output_item.added",
            {"output_index": index, "item": {"id": item_id, "type": "reasoning", "summary": []}},
        )
        await sse.event(
            "response.reasoning_summary_part.added",
            {
                "item_id": item_id,
                "output_index": index,
                "summary_index": 0,
                "part": {"type": "summary_text", "text": ""},
            },
        )
        for piece in split(self.summary, 2):
            await sse.event(
                "response.reasoning_summary_text.delta",
                {"item_id": item_id, "output_index": index, "summary_index": 0, "delta": piece},
            )
        item = {
            "id": item_id,
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": self.summary}],
            "encrypted_content": "opaque",
        }
        sse.output.append(item)
        next(sse._index)
        await sse.event("response.output_item.done", {"output_index": index, "item": item})
        message_id, message_index = await sse.open_message()
        await sse.delta(message_id, message_index, self.text)
        await sse.close_message(message_id, message_index, self.text)
        await sse.completed()


@attrs.define
class Shell:
    cmd: str
    call_id: str = attrs.Factory(lambda: new_id("call"))
    extra: dict[str, Any] = attrs.Factory(dict)

    async def send(self, sse: SseWriter, request: RecordedRequest) -> None:
        await sse.created()
        arguments = json.dumps({"cmd": self.cmd, "yield_time_ms": 2000, **self.extra})
        await sse.item(
            {
                "id": new_id("fc"),
                "type": "function_call",
                "name": "exec_command",
                "call_id": self.call_id,
                "arguments": arguments,
            }
        )
        await sse.completed()


@attrs.define
class FunctionCall:
    name: str
    arguments: dict[str, Any]
    call_id: str = attrs.Factory(lambda: new_id("call"))

    async def send(self, sse: SseWriter, request: RecordedRequest) -> None:
        await sse.created()
        await sse.item(
            {
                "id": new_id("fc"),
                "type": "function_call",
                "name": self.name,
                "call_id": self.call_id,
                "arguments": json.dumps(self.arguments),
            }
        )
        await sse.completed()


@attrs.define
class Patch:
    patch: str
    call_id: str = attrs.Factory(lambda: new_id("call"))

    async def send(self, sse: SseWriter, request: RecordedRequest) -> None:
        await sse.created()
        await sse.item(
            {
                "id": new_id("ctc"),
                "type": "custom_tool_call",
                "name": "apply_patch",
                "call_id": self.call_id,
                "input": self.patch,
            }
        )
        await sse.completed()


def add_file(path: str, *lines: str) -> str:
    return (
        "*** Begin Patch\n*** Add File: "
        + path
        + "\n"
        + "".join(f"+{line}\n" for line in lines)
        + "*** End Patch\n"
    )


@attrs.define
class Stall:
    before: str = "partial "
    after: str = "rest"
    release: trio.Event = attrs.Factory(trio.Event)
    streaming: trio.Event = attrs.Factory(trio.Event)

    async def send(self, sse: SseWriter, request: RecordedRequest) -> None:
        await sse.created()
        item_id, index = await sse.open_message()
        await sse.delta(item_id, index, self.before)
        self.streaming.set()
        if not await wait_unless_peer_leaves(sse.stream, self.release):
            request.dropped = True
            return
        await sse.delta(item_id, index, self.after)
        await sse.close_message(item_id, index, self.before + self.after)
        await sse.completed()


@attrs.define
class Status:
    code: int = 500
    message: str = "scripted failure"
    headers: dict[str, str] = attrs.Factory(dict)


@attrs.define
class Failed:
    message: str = "scripted failure"
    code: str = "server_error"

    async def send(self, sse: SseWriter, request: RecordedRequest) -> None:
        await sse.created()
        await sse.event(
            "response.failed",
            {
                "response": {
                    "id": sse.response_id,
                    "status": "failed",
                    "output": [],
                    "error": {"code": self.code, "message": self.message},
                }
            },
        )


@attrs.define
class Dropped:
    before: str = "partial"

    async def send(self, sse: SseWriter, request: RecordedRequest) -> None:
        await sse.created()
        item_id, index = await sse.open_message()
        await sse.delta(item_id, index, self.before)


@attrs.define
class Paced:
    """Deltas `gap` seconds apart; `sent_at[i]` is `trio.current_time()`-free wall time (perf_counter)."""

    pieces: list[str]
    gap: float = 0.01
    sent_at: list[float] = attrs.Factory(list)

    async def send(self, sse: SseWriter, request: RecordedRequest) -> None:
        import time

        await sse.created()
        item_id, index = await sse.open_message()
        for piece in self.pieces:
            await trio.sleep(self.gap)
            self.sent_at.append(time.perf_counter())
            await sse.delta(item_id, index, piece)
        await sse.close_message(item_id, index, "".join(self.pieces))
        await sse.completed()


@attrs.define
class WithEvents:
    """Raw events (`{"type": ..., ...}`) right after `response.created`, then `then`'s stream."""

    events: list[dict[str, Any]]
    then: Text

    async def send(self, sse: SseWriter, request: RecordedRequest) -> None:
        original = sse.created

        async def created() -> None:
            await original()
            for event in self.events:
                await sse.event(event["type"], {k: v for k, v in event.items() if k != "type"})

        sse.created = created  # type: ignore[method-assign]
        await self.then.send(sse, request)


Reply = (
    WithEvents | Text | Reasoning | Shell | FunctionCall | Patch | Stall | Status | Failed | Dropped | Paced
)
DEFAULT = Text("Hello from the scripted model.")


async def wait_unless_peer_leaves(stream: trio.abc.Stream, release: trio.Event) -> bool:
    """Wait for `release`; False as soon as the peer closes its side."""
    released = False
    async with trio.open_nursery() as nursery:

        async def on_release() -> None:
            nonlocal released
            await release.wait()
            released = True
            nursery.cancel_scope.cancel()

        async def on_close() -> None:
            try:
                while await stream.receive_some(4096):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(on_release)
        nursery.start_soon(on_close)
    return released


# ---------------------------------------------------------------------------- server
class _Reader:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def until(self, marker: bytes) -> bytes | None:
        while (end := self.buffer.find(marker)) < 0:
            if len(self.buffer) > MAX_HEAD:
                return None
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return None
            self.buffer += chunk
        data = bytes(self.buffer[:end])
        del self.buffer[: end + len(marker)]
        return data

    async def request_head(self) -> tuple[str, str, dict[str, str]] | None:
        """(method, path, lower-cased headers) of the next request, None at the end."""
        head = await self.until(b"\r\n\r\n")
        if head is None:
            return None
        line, *lines = head.decode("latin-1").split("\r\n")
        method, path, _ = line.split(" ", 2)
        headers = {}
        for header in lines:
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        return method, path, headers

    async def exactly(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return None
            self.buffer += chunk
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


class LoopbackHttpServer:
    """HTTP/1.1 on 127.0.0.1, keep-alive: `_one` reads and answers one request (False: close)."""

    port: int | None = None
    errors: list[BaseException]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        reader = _Reader(stream)
        try:
            async with stream:
                while await self._one(reader):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception as exc:
            self.errors.append(exc)

    async def _one(self, reader: _Reader) -> bool:
        raise NotImplementedError


class ResponsesServer(LoopbackHttpServer):
    """Start with `await nursery.start(server.run)`; `base_url` is then usable."""

    def __init__(self, model: str = "gpt-5.5") -> None:
        self.model = model
        self.port: int | None = None
        self.requests: list[RecordedRequest] = []
        self.replies: deque[Reply] = deque()
        self.errors: list[BaseException] = []
        self._arrived = trio.Event()
        #: called with each request before it is answered (tests may block here).
        self.on_request: Callable[[RecordedRequest], Awaitable[None]] | None = None
        #: extra headers of every event-stream answer (rate-limit headers...).
        self.headers: dict[str, str] = {}
        #: a request this refuses gets a 401 without using up a scripted reply.
        self.authorize: Callable[[RecordedRequest], bool] | None = None
        #: JSON answers to other requests, by path without the query (`/backend-api/wham/usage`).
        self.json_routes: dict[str, Any] = {}

    @property
    def base_url(self) -> str:
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def posts(self) -> list[RecordedRequest]:
        return [
            r for r in self.requests if r.method == "POST" and r.path.split("?")[0].endswith("/responses")
        ]

    async def wait_posts(self, count: int) -> RecordedRequest:
        while len(self.posts) < count:
            await self._arrived.wait()
        return self.posts[count - 1]

    def config_toml(self, *, model: str | None = None, retries: int = 0, extra: str = "") -> str:
        return (
            f'model = "{model or self.model}"\nmodel_provider = "scripted"\n{extra}\n'
            "[model_providers.scripted]\n"
            'name = "Scripted"\n'
            f'base_url = "{self.base_url}"\n'
            'wire_api = "responses"\n'
            f"request_max_retries = {retries}\n"
            f"stream_max_retries = {retries}\n"
        )

    async def _one(self, reader: _Reader) -> bool:
        request = await reader.request_head()
        if request is None:
            return False
        method, path, headers = request
        raw = await reader.exactly(int(headers.get("content-length", "0")))
        if raw is None:
            return False
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        request = RecordedRequest(method, path, headers, body)
        self.requests.append(request)
        self._arrived.set()
        self._arrived = trio.Event()
        try:
            if self.on_request is not None:
                await self.on_request(request)
            if method == "POST" and path.split("?")[0].endswith("/responses"):
                keep_alive = await self._reply(reader.stream, request)
            elif path.split("?")[0] in self.json_routes:
                await _send_json(reader.stream, 200, self.json_routes[path.split("?")[0]])
                keep_alive = True
            else:
                await _send_json(reader.stream, 404, {"error": {"message": f"no route {method} {path}"}})
                keep_alive = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            request.dropped = True
            return False
        finally:
            request.finished.set()
        return keep_alive and not request.dropped

    async def _reply(self, stream: trio.abc.Stream, request: RecordedRequest) -> bool:
        """Answer with the next scripted reply; False when the connection must close after it."""
        if self.authorize is not None and not self.authorize(request):
            error = {"message": "Your authentication token has expired.", "type": "invalid_request_error"}
            await _send_json(stream, 401, {"error": {**error, "code": "token_expired"}})
            return True
        reply = self.replies.popleft() if self.replies else DEFAULT
        if isinstance(reply, Status):
            await _send_json(
                stream,
                reply.code,
                {"error": {"message": reply.message, "type": "server_error", "code": None}},
                reply.headers,
            )
            return True
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()).encode()
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\n" + extra + b"transfer-encoding: chunked\r\n\r\n"
        )
        model = request.body.get("model", self.model) if isinstance(request.body, dict) else self.model
        await reply.send(SseWriter(stream, model), request)
        if not request.dropped:
            # a Dropped reply ends the body cleanly, but without response.completed
            await stream.send_all(b"0\r\n\r\n")
        return not isinstance(reply, Dropped)


async def _send_json(
    stream: trio.abc.Stream, status: int, payload: Any, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(payload).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"HTTP/1.1 {status} Status\r\ncontent-type: application/json\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    await stream.send_all(head + body)
