"""`ws://IP:PORT`: framing, the HTTP surface on the same port, limits, overload, slow consumers,
and the drain, against an in-process server listening on an ephemeral loopback port."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.lowlevel
import trio.testing
import trio_websocket

from codex_trio import connection as connection_module
from codex_trio.connection import MAX_IN_FLIGHT
from codex_trio.protocol.errors import OVERLOADED_MESSAGE, SERVER_OVERLOADED, RpcError
from codex_trio.routing import RequestContext, route
from codex_trio.server import AppServer, open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.transport.auth import AuthConfigError, CapabilityTokenAuth
from codex_trio.transport.listen import WebSocketListen
from codex_trio.transport.websocket import MAX_FRAME_BYTES, WebSocketEndpoint, WebSocketMessageStream, banner
from tests.ws_client import (
    WsClient,
    body_of,
    client_frame,
    connect,
    http,
    raw_upgrade,
    read_until_closed,
    request_head,
    status_of,
)

TIMEOUT = 20


def ws_settings(settings: ServerSettings, **changes: Any) -> ServerSettings:
    return attrs.evolve(settings, listen=WebSocketListen("127.0.0.1", 0), **changes)


@pytest.fixture
async def ws_server(leak_check: Any, server_settings: ServerSettings) -> AsyncIterator[AppServer]:
    async with open_app_server(ws_settings(server_settings)) as server:
        yield server


def port_of(server: AppServer) -> int:
    assert isinstance(server.listening, WebSocketEndpoint)
    return server.listening.port


class Blocker:
    """A `test/block` method that waits until released, recording cancellations."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.started = 0
        self.cancelled: list[int] = []
        self._progress = trio.Event()

    async def wait_started(self, count: int) -> None:
        while self.started < count:
            await self._progress.wait()

    async def handle(self, ctx: RequestContext, params: Any) -> dict[str, Any]:
        self.started += 1
        self._progress.set()
        self._progress = trio.Event()
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.cancelled.append(ctx.connection.id)
            raise
        return {"connection": ctx.connection.id}


def add_blocker(server: AppServer) -> Blocker:
    blocker = Blocker()
    server.router.add([route("test/block", None, blocker.handle)])
    return blocker


# ------------------------------------------------------------------------------ messages
async def test_a_client_initializes_and_is_answered_in_text_frames(ws_server: AppServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with connect(port_of(ws_server), read=False) as client:
            await client.ws.send_message(
                '{"id":1,"method":"initialize","params":{"clientInfo":{"name":"ws-test","version":"1"}}}\n'
            )
            frame = await client.ws.get_message()
            assert isinstance(frame, str) and not frame.endswith("\n")
            response = orjson.loads(frame)
            assert response["id"] == 1 and response["result"]["platformFamily"] == "unix"


async def test_every_connection_needs_its_own_initialize(ws_server: AppServer) -> None:
    add_blocker(ws_server)
    with trio.fail_after(TIMEOUT):
        async with connect(port_of(ws_server)) as first, connect(port_of(ws_server)) as second:
            await first.rpc.initialize("first")
            with pytest.raises(RpcError, match="Not initialized"):
                await second.rpc.call("test/block")
            await second.rpc.initialize("second")
            assert len(ws_server.broadcaster.connections) == 2


async def test_the_same_request_id_on_two_connections_never_crosses_over(ws_server: AppServer) -> None:
    blocker = add_blocker(ws_server)
    with trio.fail_after(TIMEOUT):
        async with connect(port_of(ws_server)) as a, connect(port_of(ws_server)) as b:
            await a.rpc.initialize("a")
            await b.rpc.initialize("b")
            results: dict[str, Any] = {}

            async def call(name: str, client: Any) -> None:
                results[name] = await client.rpc.request("test/block", id=7)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "a", a)
                nursery.start_soon(call, "b", b)
                await blocker.wait_started(2)
                blocker.release.set()
            assert results["a"]["id"] == results["b"]["id"] == 7
            assert results["a"]["result"]["connection"] != results["b"]["result"]["connection"]


async def test_ping_is_answered_and_binary_frames_are_dropped(ws_server: AppServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with connect(port_of(ws_server)) as client:
            await client.rpc.initialize()
            await client.ws.ping(b"are you there")
            await client.ws.send_message(b'{"id":99,"method":"initialize","params":{}}')
            # the binary frame got no answer, and the connection still works:
            with pytest.raises(RpcError, match="Already initialized"):
                await client.rpc.initialize()
            assert client.ws.closed is None


async def test_a_client_close_frame_ends_the_connection_and_cancels_its_work(ws_server: AppServer) -> None:
    blocker = add_blocker(ws_server)
    with trio.fail_after(TIMEOUT):
        async with connect(port_of(ws_server)) as client:
            await client.rpc.initialize()
            await client.rpc.send_raw(b'{"id":5,"method":"test/block"}')
            await blocker.wait_started(1)
            (server_side,) = ws_server.broadcaster.connections
            await client.ws.aclose()
            await server_side.closed.wait()
    assert blocker.cancelled == [server_side.id]


async def test_requests_beyond_the_in_flight_limit_are_refused_with_overloaded(ws_server: AppServer) -> None:
    blocker = add_blocker(ws_server)
    extra = 5
    with trio.fail_after(TIMEOUT):
        async with connect(port_of(ws_server), read=False) as client:
            await client.ws.send_message(
                '{"id":0,"method":"initialize","params":{"clientInfo":{"name":"x","version":"1"}}}'
            )
            while True:
                if orjson.loads(await client.ws.get_message()).get("id") == 0:
                    break
            for n in range(1, MAX_IN_FLIGHT + extra + 1):
                await client.ws.send_message(f'{{"id":{n},"method":"test/block"}}')
            refused = []
            while len(refused) < extra:
                message = orjson.loads(await client.ws.get_message())
                if "error" in message:
                    refused.append(message)
            assert all(
                m["error"] == {"code": SERVER_OVERLOADED, "message": OVERLOADED_MESSAGE} for m in refused
            )
            assert sorted(m["id"] for m in refused) == list(
                range(MAX_IN_FLIGHT + 1, MAX_IN_FLIGHT + extra + 1)
            )
            blocker.release.set()
            answered = 0
            while answered < MAX_IN_FLIGHT:
                if "result" in orjson.loads(await client.ws.get_message()):
                    answered += 1


# ------------------------------------------------------------------------------ limits
async def test_a_frame_above_16_mib_drops_the_connection(ws_server: AppServer) -> None:
    with trio.fail_after(TIMEOUT):
        stream, _ = await raw_upgrade(port_of(ws_server))
        async with stream:
            await stream.send_all(client_frame(b"{" * 1024, length=MAX_FRAME_BYTES + 1))
            await read_until_closed(stream)


async def test_a_large_message_in_fragments_is_reassembled(ws_server: AppServer) -> None:
    padding = "x" * (17 * 1024 * 1024)
    message = orjson.dumps(
        {
            "id": 1,
            "method": "initialize",
            "params": {"clientInfo": {"name": "big", "version": "1"}, "padding": padding},
        }
    )
    chunk = 1024 * 1024
    pieces = [message[i : i + chunk] for i in range(0, len(message), chunk)]
    with trio.fail_after(TIMEOUT):
        stream, _ = await raw_upgrade(port_of(ws_server))
        async with stream:
            for n, piece in enumerate(pieces):
                last = n == len(pieces) - 1
                await stream.send_all(client_frame(piece, opcode=0x1 if n == 0 else 0x0, fin=last))
            received = b""
            while b'"codexHome"' not in received:
                received += await stream.receive_some(65536)


async def test_invalid_utf8_in_a_text_frame_drops_the_connection(ws_server: AppServer) -> None:
    with trio.fail_after(TIMEOUT):
        stream, _ = await raw_upgrade(port_of(ws_server))
        async with stream:
            await stream.send_all(client_frame(b'{"id":1,"method":"\xff\xfe"}'))
            await read_until_closed(stream)


async def test_a_close_is_echoed_with_its_code_and_reason_then_closed(ws_server: AppServer) -> None:
    with trio.fail_after(TIMEOUT):
        stream, _ = await raw_upgrade(port_of(ws_server))
        async with stream:
            await stream.send_all(client_frame((4000).to_bytes(2, "big") + b"bye", opcode=0x8))
            assert await read_until_closed(stream) == b"\x88\x05" + (4000).to_bytes(2, "big") + b"bye"


async def test_a_ping_between_fragments_is_answered_before_the_reply(ws_server: AppServer) -> None:
    message = b'{"id":1,"method":"initialize","params":{"clientInfo":{"name":"a","version":"1"}}}'
    with trio.fail_after(TIMEOUT):
        stream, _ = await raw_upgrade(port_of(ws_server))
        async with stream:
            await stream.send_all(
                client_frame(message[:10], fin=False)
                + client_frame(b"hi", opcode=0x9)
                + client_frame(message[10:], opcode=0x0)
            )
            received = b""
            while b'"codexHome"' not in received:
                received += await stream.receive_some(65536)
            assert received.startswith(b"\x8a\x02hi\x81")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x81\x02{}", id="unmasked"),
        pytest.param(b"\xc1\x82\0\0\0\0{}", id="reserved bit"),
        pytest.param(b"\x83\x82\0\0\0\0{}", id="unknown opcode"),
    ],
)
async def test_a_protocol_violation_closes_the_socket_without_a_close_frame(
    ws_server: AppServer, data: bytes
) -> None:
    with trio.fail_after(TIMEOUT):
        stream, _ = await raw_upgrade(port_of(ws_server))
        async with stream:
            await stream.send_all(data)
            assert await read_until_closed(stream) == b""


async def test_an_upgrade_without_host_gets_a_bare_400(ws_server: AppServer) -> None:
    head = request_head().replace(b"Host: ", b"X-Not-Host: ")
    assert b"X-Not-Host" in head
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port_of(ws_server))
        async with stream:
            await stream.send_all(head)
            assert await read_until_closed(stream) == b"HTTP/1.1 400 \r\ncontent-length: 0\r\n\r\n"


# ------------------------------------------------------------------------------ HTTP surface
@pytest.mark.parametrize("path", ["/readyz", "/healthz", "/healthz?probe=1"])
async def test_health_probes_answer_200_with_an_empty_body(ws_server: AppServer, path: str) -> None:
    response = await http(port_of(ws_server), request_head(path, upgrade=False))
    assert status_of(response) == 200
    assert b"content-length: 0" in response and body_of(response) == b""
    head = await http(port_of(ws_server), request_head(path, method="HEAD", upgrade=False))
    assert status_of(head) == 200


async def test_health_probes_keep_the_connection_alive(ws_server: AppServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with await trio.open_tcp_stream("127.0.0.1", port_of(ws_server)) as stream:
            await stream.send_all(
                request_head("/readyz", upgrade=False) + request_head("/healthz", upgrade=False)
            )
            received = b""
            while received.count(b"HTTP/1.1 200 OK") < 2:
                received += await stream.receive_some(65536)


@pytest.mark.parametrize(
    ("raw", "status", "body"),
    [
        (request_head("/healthz", method="POST", upgrade=False), 405, b""),
        (request_head("/", upgrade=False), 400, b"Connection header did not include 'upgrade'"),
        (request_head("/healthz/", upgrade=False), 400, b"Connection header did not include 'upgrade'"),
        (request_head("/", method="POST"), 405, b"Request method must be `GET`"),
        (
            request_head("/").replace(b"Version: 13", b"Version: 8"),
            400,
            b"`Sec-WebSocket-Version` header did not include '13'",
        ),
        (
            request_head("/").replace(b"Sec-WebSocket-Key", b"X-Nothing"),
            400,
            b"`Sec-WebSocket-Key` header missing",
        ),
        (b"HELLO\r\n\r\n", 400, b""),
        (b'{"id":1,"method":"initialize"}\n', 400, b""),
    ],
    ids=[
        "post-health",
        "no-upgrade",
        "health-slash",
        "post-upgrade",
        "version-8",
        "no-key",
        "garbage",
        "json-line",
    ],
)
async def test_other_plain_http_gets_the_reference_status_and_body(
    ws_server: AppServer, raw: bytes, status: int, body: bytes
) -> None:
    response = await http(port_of(ws_server), raw)
    assert status_of(response) == status
    assert body_of(response) == body
    if status == 405 and not body:
        assert b"allow: GET,HEAD" in response


async def test_http_1_0_health_probe_is_answered_in_http_1_0(ws_server: AppServer) -> None:
    response = await http(port_of(ws_server), b"GET /healthz HTTP/1.0\r\n\r\n")
    assert response.startswith(b"HTTP/1.0 200 OK")


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "", "null", "http://localhost", "http://127.0.0.1"]
)
@pytest.mark.parametrize("path", ["/", "/healthz", "/readyz"])
async def test_any_origin_header_is_refused_with_403_before_the_upgrade(
    ws_server: AppServer, origin: str, path: str
) -> None:
    response = await http(port_of(ws_server), request_head(path, Origin=origin))
    assert status_of(response) == 403
    assert body_of(response) == b""
    assert not ws_server.broadcaster.connections


async def test_origin_is_refused_even_with_a_valid_token(
    leak_check: Any, server_settings: ServerSettings
) -> None:
    import hashlib

    auth = CapabilityTokenAuth(hashlib.sha256(b"secret-token").digest())
    async with open_app_server(ws_settings(server_settings, ws_auth=auth)) as server:
        port = port_of(server)
        refused = await http(
            port, request_head(Authorization="Bearer secret-token", Origin="http://localhost")
        )
        assert status_of(refused) == 403
        with pytest.RaisesGroup(trio_websocket.ConnectionRejected, flatten_subgroups=True):
            async with connect(port, headers=[(b"Authorization", b"Bearer secret-token"), (b"Origin", b"x")]):
                pass
        async with connect(port, headers=[(b"Authorization", b"Bearer secret-token")]) as client:
            await client.rpc.initialize()


# ------------------------------------------------------------------------------ slow consumers
async def initialize_then_stall(client: WsClient) -> None:
    """Initialize as client "s", read up to the response, then read nothing more."""
    await client.ws.send_message(
        '{"id":1,"method":"initialize","params":{"clientInfo":{"name":"s","version":"1"}}}'
    )
    while orjson.loads(await client.ws.get_message()).get("id") != 1:
        pass


async def stall_and_broadcast(server: AppServer, payload_size: int, rounds: int) -> tuple[Any, int]:
    """A reader keeps up with `rounds` broadcasts while a stalled client does not read at all.

    Returns the stalled client's server-side connection and how many broadcasts the reader got.
    """
    port = port_of(server)
    async with connect(port) as reader, connect(port, read=False) as stalled:
        await reader.rpc.initialize("reader")
        await initialize_then_stall(stalled)
        stalled_side = next(c for c in server.broadcaster.connections if c.session.client_name == "s")
        received = 0
        payload = "y" * payload_size
        for n in range(rounds):
            server.broadcaster.broadcast("thread/name/updated", {"threadId": str(n), "threadName": payload})
            message = await reader.rpc.wait_for("thread/name/updated")
            assert message["params"]["threadId"] == str(n)
            received += 1
            if stalled_side.closed.is_set():
                break
        return stalled_side, received


async def test_a_stalled_client_is_dropped_when_its_backlog_overflows_and_others_get_everything(
    ws_server: AppServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_module, "BROADCAST_BACKLOG", 16)
    monkeypatch.setattr(connection_module, "FLUSH_TIMEOUT", 0.1)
    with trio.fail_after(TIMEOUT):
        stalled_side, received = await stall_and_broadcast(ws_server, 64 * 1024, rounds=3000)
        assert stalled_side.closed.is_set(), "the stalled client was never disconnected"
        assert received < 3000


async def test_a_client_stalled_past_the_grace_period_is_dropped(
    ws_server: AppServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_module, "SLOW_CONSUMER_GRACE", 0.3)
    monkeypatch.setattr(connection_module, "OUTBOUND_CAPACITY", 4)
    monkeypatch.setattr(connection_module, "FLUSH_TIMEOUT", 0.1)
    with trio.fail_after(TIMEOUT):
        port = port_of(ws_server)
        async with connect(port, read=False) as stalled:
            await initialize_then_stall(stalled)
            (stalled_side,) = ws_server.broadcaster.connections
            payload = "z" * (128 * 1024)
            # fill the kernel buffers and the outbound queue, leaving work in the backlog
            for n in range(200):
                ws_server.broadcaster.broadcast(
                    "thread/name/updated", {"threadId": str(n), "threadName": payload}
                )
                await trio.lowlevel.checkpoint()
                if stalled_side.closed.is_set():
                    break
            await stalled_side.closed.wait()


async def test_broadcasts_written_straight_to_the_socket_arrive_whole_and_in_order(
    ws_server: AppServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broadcasts skip the writer task while it is idle; once the socket is full (a partial
    write) the rest queue behind the unwritten tail and still arrive whole and in order."""
    results: list[str] = []
    direct = WebSocketMessageStream.send_messages_nowait

    def recording(self: WebSocketMessageStream, batch: Any) -> Any:
        results.append(direct(self, batch))
        return results[-1]

    monkeypatch.setattr(WebSocketMessageStream, "send_messages_nowait", recording)
    rounds, payload = 1200, "p" * (8 * 1024)  # ~10 MB: more than the socket buffers hold
    with trio.fail_after(TIMEOUT):
        async with connect(port_of(ws_server), read=False) as slow:
            await initialize_then_stall(slow)
            for n in range(rounds):
                ws_server.broadcaster.broadcast(
                    "thread/name/updated", {"threadId": str(n), "threadName": payload}
                )
                await trio.lowlevel.checkpoint()
            seen = []
            while len(seen) < rounds:
                message = orjson.loads(await slow.ws.get_message())
                if message.get("method") == "thread/name/updated":
                    assert message["params"]["threadName"] == payload
                    seen.append(message["params"]["threadId"])
    assert seen == [str(n) for n in range(rounds)]
    assert "sent" in results and "partial" in results


# ------------------------------------------------------------------------------ drain and start-up
async def test_the_drain_closes_connections_without_a_close_frame_and_stops_listening(
    leak_check: Any, server_settings: ServerSettings
) -> None:
    server = AppServer(ws_settings(server_settings))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            port = port_of(server)
            async with connect(port) as client:
                await client.rpc.initialize()
                server.shutdown()
                await client.rpc.closed.wait()
                assert client.ws.closed is not None and client.ws.closed.code == 1006
            await server.stopped.wait()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_a_non_loopback_listener_without_auth_is_refused(
    leak_check: Any, server_settings: ServerSettings
) -> None:
    server = AppServer(attrs.evolve(server_settings, listen=WebSocketListen("0.0.0.0", 0)))
    with pytest.RaisesGroup(
        pytest.RaisesExc(AuthConfigError, match="refusing to start non-loopback"), flatten_subgroups=True
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)


async def test_a_non_loopback_listener_with_auth_starts_and_takes_loopback_clients(
    leak_check: Any, server_settings: ServerSettings
) -> None:
    import hashlib

    auth = CapabilityTokenAuth(hashlib.sha256(b"tok").digest())
    settings = attrs.evolve(server_settings, listen=WebSocketListen("0.0.0.0", 0), ws_auth=auth)
    with trio.fail_after(TIMEOUT):
        async with (
            open_app_server(settings) as server,
            connect(port_of(server), headers=[(b"Authorization", b"Bearer tok")]) as client,
        ):
            await client.rpc.initialize()


def test_the_banner_says_where_to_connect_and_whether_auth_is_on() -> None:
    text = banner(WebSocketEndpoint("127.0.0.1", 4321), None)
    assert "listening on: ws://127.0.0.1:4321" in text
    assert "readyz: http://127.0.0.1:4321/readyz" in text and "healthz: http://127.0.0.1:4321/healthz" in text
    assert "auth: off" in text and "binds localhost only" in text
    remote = banner(WebSocketEndpoint("::", 80), CapabilityTokenAuth(b"\0" * 32))
    assert "ws://[::]:80" in remote and "auth: capability-token" in remote
    assert "websocket auth is required for non-localhost listeners" in remote


async def test_accepted_sockets_send_without_nagle_delay(ws_server: AppServer) -> None:
    """Issue 17: a reply must not wait for the client's delayed ACK. Every reply is one write
    of one whole frame (`WebSocketMessageStream._send_frame`), and the accepted socket has TCP_NODELAY."""
    with trio.fail_after(TIMEOUT):
        async with connect(port_of(ws_server)) as client:
            await client.rpc.initialize()
            [connection] = ws_server.broadcaster.connections
            stream = connection.stream
            assert isinstance(stream, WebSocketMessageStream)
            socket_stream = stream._stream
            assert isinstance(socket_stream, trio.SocketStream)
            assert socket_stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def frame_readers() -> list[trio.lowlevel.Task]:
    found, stack = [], [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task.name.endswith(("_run_frames", "_reader_task")):
            found.append(task)
        stack.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return found


async def test_a_client_that_pipelines_and_leaves_leaves_no_frame_reader_behind(ws_server: AppServer) -> None:
    """Issue 11: a frame reader parked handing a message to a connection that has gone must
    end with it (it used to stay until the server stopped: one task per such client)."""
    with trio.fail_after(TIMEOUT):
        stream, _ = await raw_upgrade(port_of(ws_server))
        await trio.testing.wait_all_tasks_blocked()
        [connection] = ws_server.broadcaster.connections
        request = {"method": "fs/getMetadata", "params": {"path": "/"}}
        frames = b"".join(client_frame(orjson.dumps({"id": index, **request})) for index in range(300))
        async with stream:
            with trio.move_on_after(0.5):
                await stream.send_all(frames)
        await connection.closed.wait()
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert frame_readers() == []
