"""Machinery of the fault-injection suite (tests/test_fault_injection.py).

A real `python -m codex_trio` subprocess, JSON-RPC clients that count every reply, clients that
misbehave on purpose, and the checks the suite makes after every fault and at the end.

Runs are seeded: `CODEX_TRIO_FAULT_SEED=N` replays run N (the seed is in the pytest header and
in every failure message); `CODEX_TRIO_FAULTS` sets how many faults a run injects per transport.
Every process a fault starts carries `CODEX_TRIO_FAULT_MARK=<mark>` in its environment, which
its descendants inherit, so a survivor is found wherever it was reparented.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
import trio_websocket

from codex_trio.testing import server_env
from codex_trio.transport.stdio import LineStream
from tests.responses_server import ResponsesServer, Stall, Text
from tests.ws_client import WsClientStream, client_frame, raw_upgrade, request_head

SEED_ENV = "CODEX_TRIO_FAULT_SEED"
COUNT_ENV = "CODEX_TRIO_FAULTS"
MARK_ENV = "CODEX_TRIO_FAULT_MARK"
#: the seed of this pytest run (fixed for the whole session, printed in the header).
SEED = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**31))
#: faults injected per transport in one run.
FAULTS = int(os.environ.get(COUNT_ENV, "100"))
#: seconds within which the watchdog's request must be answered after each fault.
WATCHDOG_LIMIT = float(os.environ.get("CODEX_TRIO_FAULT_WATCHDOG_SECONDS", "1"))
#: the server's shutdown budget (ServerSettings.shutdown_timeout) plus what exiting takes.
EXIT_LIMIT = 3.0 + 2.0
#: fds the server may hold beyond its baseline at the end.
FD_SLACK = 5
#: bytes of resident memory the server may grow by during a run.
RSS_GROWTH_LIMIT = 256 * 1024 * 1024


def replay_hint() -> str:
    return f"replay with {SEED_ENV}={SEED}"


class Mismatch(AssertionError):
    """A guarantee did not hold; the message says how to replay the run."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message} ({replay_hint()})")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Mismatch(message)


# ---------------------------------------------------------------------------- clients
class RpcClient:
    """JSON-RPC over any `MessageStream`, counting the replies to every id it sent.

    Replies are matched by id; `pause()` stops reading (a stalled reader) until `resume()`.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.sent: collections.Counter[Any] = collections.Counter()
        self.replies: collections.Counter[Any] = collections.Counter()
        self.answers: dict[Any, dict[str, Any]] = {}
        self.notifications: list[dict[str, Any]] = []
        self.closed = trio.Event()
        #: set once the first notification arrived.
        self.notified = trio.Event()
        self._arrived = trio.Event()
        self._reading = trio.Event()
        self._reading.set()
        self._ids = iter(range(1, 1 << 62))

    async def run(self) -> None:
        try:
            while True:
                await self._reading.wait()
                data = await self.stream.receive_message()
                message = orjson.loads(data)
                if "id" in message and "method" not in message:
                    self.replies[message["id"]] += 1
                    self.answers[message["id"]] = message
                    self._arrived.set()
                    self._arrived = trio.Event()
                elif "method" in message and "id" not in message:
                    self.notifications.append(message)
                    self.notified.set()
        except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.closed.set()
            self._arrived.set()

    def pause(self) -> None:
        self._reading = trio.Event()

    def resume(self) -> None:
        self._reading.set()

    def next_id(self) -> int:
        return next(self._ids)

    async def send(self, method: str, params: Any = None, *, request_id: Any = None) -> Any:
        request_id = self.next_id() if request_id is None else request_id
        message: dict[str, Any] = {"id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.sent[request_id] += 1
        await self.stream.send_message(orjson.dumps(message))
        return request_id

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_message(data)

    async def notify(self, method: str) -> None:
        await self.stream.send_message(orjson.dumps({"method": method}))

    async def reply(self, request_id: Any, count: int = 1) -> dict[str, Any]:
        while self.replies[request_id] < count:
            if self.closed.is_set():
                raise Mismatch(f"connection closed before the reply to {request_id!r}")
            await self._arrived.wait()
        return self.answers[request_id]

    async def call(self, method: str, params: Any = None) -> dict[str, Any]:
        return await self.reply(await self.send(method, params))

    async def initialize(self, name: str = "fault") -> None:
        answer = await self.call("initialize", {"clientInfo": {"name": name, "version": "1"}})
        check("result" in answer, f"initialize failed: {answer}")
        await self.notify("initialized")

    def exactly_one_reply_each(self) -> list[str]:
        """Ids that got a number of replies other than the number of requests sent with it."""
        wrong = [
            f"{rid!r}: sent {n}, answered {self.replies[rid]}"
            for rid, n in self.sent.items()
            if self.replies[rid] != n
        ]
        wrong += [f"{rid!r}: answered, never sent" for rid in self.replies if rid not in self.sent]
        return wrong


@asynccontextmanager
async def ws_client(port: int, *, read: bool = True) -> AsyncIterator[tuple[RpcClient, trio.SocketStream]]:
    """A websocket client; leaving the block drops the TCP connection without a Close frame."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, "127.0.0.1", "/", max_message_size=256 * 1024 * 1024
        )
        client = RpcClient(WsClientStream(ws))
        if read:
            nursery.start_soon(client.run)
        yield client, stream
        nursery.cancel_scope.cancel()


async def small_buffer_socket(port: int, *, unix_path: str | None = None) -> trio.SocketStream:
    """A TCP (or unix) connection with a tiny receive buffer, upgraded by hand: replies back
    up fast."""
    family = trio.socket.AF_UNIX if unix_path is not None else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(unix_path if unix_path is not None else ("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(request_head())
    received = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some(4096)
            check(bool(chunk), "closed during the handshake")
            received += chunk
    return stream


def frame(message: dict[str, Any]) -> bytes:
    return client_frame(orjson.dumps(message))


def initialize_frames() -> bytes:
    return frame(
        {"id": "init", "method": "initialize", "params": {"clientInfo": {"name": "raw", "version": "1"}}}
    ) + frame({"method": "initialized"})


# ---------------------------------------------------------------------------- the server
@attrs.define
class ServerProcess:
    """A running `python -m codex_trio` and what the checks need to know about it."""

    process: trio.Process
    home: Path
    workspace: Path
    stderr_path: Path
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss(self) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def alive(self) -> bool:
        return self.process.poll() is None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@asynccontextmanager
async def run_server(
    tmp_path: Path, args: Sequence[str], *, stdio: bool = False, config: str = ""
) -> AsyncIterator[ServerProcess]:
    """Start the server; its stderr goes to a file (nobody has to keep reading it)."""
    home, workspace = tmp_path / "home", tmp_path / "workspace"
    home.mkdir()
    workspace.mkdir()
    (home / "config.toml").write_text(config)
    for index in range(200):
        (workspace / f"file-{index:03}.txt").write_text("x" * index)
    stderr_path = tmp_path / "server.stderr"
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "codex_trio", *args],
            stdin=subprocess.PIPE if stdio else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdio else subprocess.DEVNULL,
            stderr=stderr,
            cwd=workspace,
            env=server_env(home),
            start_new_session=True,
        )
    server = ServerProcess(process, home, workspace, stderr_path)
    unix = next((arg.removeprefix("unix://") for arg in args if arg.startswith("unix://")), None)
    try:
        if unix is not None:
            with trio.fail_after(30):
                while not await trio.Path(unix).exists():
                    check(server.alive(), f"server did not start: {server.stderr()}")
                    await trio.sleep(0.05)
        elif not stdio:
            with trio.fail_after(30):
                while "listening on: ws://127.0.0.1:" not in server.stderr():
                    check(server.alive(), f"server did not start: {server.stderr()}")
                    await trio.sleep(0.05)
            server.port = int(server.stderr().split("listening on: ws://127.0.0.1:")[1].split()[0])
        yield server
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


def stdio_client(server: ServerProcess) -> RpcClient:
    assert server.process.stdout is not None and server.process.stdin is not None
    return RpcClient(LineStream(server.process.stdout, server.process.stdin))


def marked_processes(mark: str) -> list[int]:
    """Live (or zombie) processes whose environment carries this run's mark."""
    needle = f"{MARK_ENV}={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


async def settle(predicate: Callable[[], bool], limit: float) -> bool:
    """Poll until `predicate()` holds or `limit` seconds pass."""
    with trio.move_on_after(limit):
        while not predicate():  # noqa: ASYNC110 - /proc offers nothing to wait on
            await trio.sleep(0.05)
        return True
    return predicate()


# ---------------------------------------------------------------------------- faults
@attrs.define
class Target:
    """What a fault needs: where the server is, a seeded generator, the process mark."""

    server: ServerProcess
    rng: random.Random
    mark: str
    #: the scripted model the server's turns talk to (None: no turn faults).
    model: ResponsesServer | None = None
    #: model streams left hanging by faults; released before the end checks.
    stalls: list[Stall] = attrs.Factory(list)

    def release_stalls(self) -> None:
        for stall in self.stalls:
            stall.release.set()

    def stall_next_turn(self) -> None:
        assert self.model is not None
        stall = Stall()
        self.stalls.append(stall)
        self.model.enqueue(stall)

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    def command(
        self, script: str, *, tty: bool = False, stream: bool = True, process_id: str | None = None
    ) -> dict[str, Any]:
        """`command/exec` params for a marked shell script."""
        params: dict[str, Any] = {
            "command": ["sh", "-c", script],
            "env": {MARK_ENV: self.mark},
            "cwd": str(self.server.workspace),
            "disableTimeout": True,
        }
        if stream or tty:
            params["processId"] = process_id or f"p{self.rng.randrange(10**9)}"
            params["streamStdoutStderr"] = True
            params["tty"] = tty
        return params

    def flood(self) -> str:
        """A script that floods output and leaves a grandchild behind if nobody kills its group."""
        return "sleep 300 & yes 'flooding output for the fault-injection suite' | head -c 200000000"

    def directory_request(self) -> dict[str, Any]:
        return {
            "id": self.rng.randrange(10**9),
            "method": "fs/readDirectory",
            "params": {"path": str(self.server.workspace)},
        }


async def handshake_close(t: Target) -> None:
    """Abrupt close during the HTTP handshake."""
    head = request_head()
    async with await trio.open_tcp_stream("127.0.0.1", t.port) as stream:
        await stream.send_all(head[: t.rng.randrange(1, len(head))])


async def slowloris(t: Target) -> None:
    """An upgrade request dribbled a byte at a time, abandoned half way."""
    head = request_head()
    async with await trio.open_tcp_stream("127.0.0.1", t.port) as stream:
        with trio.move_on_after(t.rng.uniform(0.1, 0.4)):
            for byte in head:
                await stream.send_all(bytes([byte]))
                await trio.sleep(0.01)


async def partial_http(t: Target) -> None:
    """A health probe cut short, or a whole one (which gets exactly one response)."""
    async with await trio.open_tcp_stream("127.0.0.1", t.port) as stream:
        probe = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        if t.rng.random() < 0.5:
            await stream.send_all(probe[: t.rng.randrange(1, len(probe) - 1)])
            return
        await stream.send_all(probe)
        received = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                received += chunk
        check(
            received.count(b"HTTP/1.1 ") == 1 and b" 200 " in received.split(b"\r\n")[0],
            f"probe: {received!r}",
        )


async def mid_frame(t: Target) -> None:
    """A websocket frame cut in the middle, then the connection dropped."""
    stream, _ = await raw_upgrade(t.port)
    async with stream:
        data = initialize_frames() + frame(t.directory_request())
        await stream.send_all(data[: t.rng.randrange(1, len(data))])


async def garbage_frames(t: Target) -> None:
    """Garbage, binary and non-JSON frames are dropped; a valid request after them is answered
    once; then an invalid-UTF-8 frame."""
    async with ws_client(t.port) as (client, socket_stream):
        ws = client.stream.ws
        for _ in range(t.rng.randrange(1, 6)):
            junk = bytes(t.rng.randrange(32, 127) for _ in range(t.rng.randrange(0, 200)))
            await ws.send_message(
                t.rng.choice([junk.decode(), "[]", "null", '{"id":', '{"id": true, "method": 5}'])
            )
            if t.rng.random() < 0.3:
                await ws.send_message(bytes(t.rng.randrange(256) for _ in range(50)))
        await client.call("fs/getMetadata", {"path": "/"})  # before initialize: -32600, once
        await client.initialize()
        await client.call("fs/getMetadata", {"path": "/"})
        check(not client.exactly_one_reply_each(), f"garbage: {client.exactly_one_reply_each()}")
        await socket_stream.send_all(client_frame(b'{"id": 1, "method": "\xff\xfe"}'))
        await trio.sleep(0.05)


async def oversized_frame(t: Target) -> None:
    """A frame announcing more than 16 MiB: the server drops the connection."""
    stream, _ = await raw_upgrade(t.port)
    async with stream:
        await stream.send_all(client_frame(b"x" * 100, length=17 * 1024 * 1024))
        with trio.fail_after(5):
            try:
                while await stream.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                pass


async def close_mid_request(t: Target) -> None:
    """Requests (some running commands) in flight when the client vanishes."""
    stream, _ = await raw_upgrade(t.port)
    async with stream:
        data = initialize_frames()
        for _ in range(t.rng.randrange(1, 20)):
            if t.rng.random() < 0.2:
                data += frame(
                    {"id": t.rng.randrange(10**9), "method": "command/exec", "params": t.command("sleep 300")}
                )
            else:
                data += frame(t.directory_request())
        await stream.send_all(data)
        await trio.sleep(t.rng.uniform(0, 0.2))


async def pipelined_not_reading(t: Target) -> None:
    """Issue 11's reproduction: a small receive buffer, hundreds of pipelined requests, no
    reading, then an abrupt close while the server's replies are backed up."""
    stream = await small_buffer_socket(t.port)
    async with stream:
        data = initialize_frames() if t.rng.random() < 0.7 else b""
        data += b"".join(frame(t.directory_request()) for _ in range(t.rng.randrange(200, 500)))
        with trio.move_on_after(t.rng.uniform(0.2, 1.0)):
            await stream.send_all(data)
            await trio.sleep_forever()


async def exec_stream_close(t: Target) -> None:
    """A streaming `command/exec` (pipes or a PTY) whose client drops mid-stream."""
    async with ws_client(t.port) as (client, _):
        await client.initialize()
        await client.send("command/exec", t.command(t.flood(), tty=t.rng.random() < 0.5))
        with trio.fail_after(10):
            await client.notified.wait()
        await trio.sleep(t.rng.uniform(0, 0.2))


async def stalled_large_output(t: Target) -> None:
    """A client that floods itself with command output and never reads it."""
    stream = await small_buffer_socket(t.port)
    async with stream:
        await stream.send_all(
            initialize_frames()
            + frame(
                {"id": 1, "method": "command/exec", "params": t.command(t.flood(), tty=t.rng.random() < 0.3)}
            )
        )
        await trio.sleep(t.rng.uniform(0.2, 0.8))


async def backlogged_broadcasts(t: Target) -> None:
    """Broadcasts to a client whose queue is full go to its backlog; it then drops."""
    stalled = await small_buffer_socket(t.port)
    async with stalled, ws_client(t.port) as (busy, _):
        await stalled.send_all(initialize_frames())
        await busy.initialize()
        with trio.move_on_after(0.5):
            await stalled.send_all(b"".join(frame(t.directory_request()) for _ in range(300)))
        for _ in range(t.rng.randrange(2, 6)):
            answer = await busy.call("thread/start", {"cwd": str(t.server.workspace)})
            check("result" in answer, f"thread/start: {answer}")
        check(not busy.exactly_one_reply_each(), f"broadcasts: {busy.exactly_one_reply_each()}")


async def duplicate_ids(t: Target) -> None:
    """The same id in flight several times: each request is answered once."""
    async with ws_client(t.port) as (client, _):
        await client.initialize()
        request_id = t.rng.choice([7, "dup", 0])
        for _ in range(t.rng.randrange(2, 5)):
            if t.rng.random() < 0.3:
                await client.send(
                    "command/exec", t.command("sleep 0.05", stream=False), request_id=request_id
                )
            else:
                await client.send("fs/getMetadata", {"path": "/"}, request_id=request_id)
        with trio.fail_after(10):
            await client.reply(request_id, client.sent[request_id])
        await trio.sleep(0.1)
        check(not client.exactly_one_reply_each(), f"duplicates: {client.exactly_one_reply_each()}")


async def burst(t: Target) -> None:
    """Hundreds of pipelined requests from a reading client: exactly one reply each (results
    or -32001 overloaded)."""
    async with ws_client(t.port) as (client, _):
        await client.initialize()
        ids = []
        for _ in range(t.rng.randrange(100, 400)):
            request = (
                t.directory_request()
                if t.rng.random() < 0.5
                else {"method": "fs/getMetadata", "params": {"path": "/"}}
            )
            ids.append(await client.send(request["method"], request["params"]))
        with trio.fail_after(20):
            for request_id in ids:
                await client.reply(request_id)
        check(not client.exactly_one_reply_each(), f"burst: {client.exactly_one_reply_each()}")


async def huge_number(t: Target) -> None:
    """A number of 10^5 digits in a field the method ignores still gets its reply."""
    async with ws_client(t.port) as (client, _):
        await client.initialize()
        digits = "9" * t.rng.randrange(400, 100_000)
        client.sent[99] += 1
        await client.send_raw(
            f'{{"id": 99, "method": "fs/getMetadata", "params": {{"path": "/", "x": {digits}}}}}'.encode()
        )
        with trio.fail_after(10):
            answer = await client.reply(99)
        check("result" in answer, f"huge number: {answer}")


async def start_turn(t: Target, client: RpcClient) -> str:
    """A thread and a running turn (the model streams or hangs mid-stream); the turn's id."""
    answer = await client.call(
        "thread/start",
        {"cwd": str(t.server.workspace), "sandbox": "danger-full-access", "approvalPolicy": "never"},
    )
    check("result" in answer, f"thread/start: {answer}")
    thread_id = answer["result"]["thread"]["id"]
    assert t.model is not None
    if t.rng.random() < 0.5:
        t.stall_next_turn()
    else:
        t.model.enqueue(Text("a reply streamed in pieces", pieces=t.rng.randrange(1, 20)))
    prompt = [{"type": "text", "text": "hello", "text_elements": []}]
    answer = await client.call("turn/start", {"threadId": thread_id, "input": prompt})
    check("result" in answer, f"turn/start: {answer}")
    return str(answer["result"]["turn"]["id"])


async def turn_then_drop(t: Target) -> None:
    """A client starts a turn and vanishes while it streams (the turn is the server's)."""
    if t.model is None:
        return
    async with ws_client(t.port) as (client, _):
        await client.initialize()
        await start_turn(t, client)
        await trio.sleep(t.rng.uniform(0, 0.2))


WS_FAULTS: list[Callable[[Target], Any]] = [
    handshake_close,
    slowloris,
    partial_http,
    mid_frame,
    garbage_frames,
    oversized_frame,
    close_mid_request,
    pipelined_not_reading,
    exec_stream_close,
    stalled_large_output,
    backlogged_broadcasts,
    duplicate_ids,
    burst,
    huge_number,
    turn_then_drop,
]


# ---------------------------------------------------------------------------- stdio faults
async def stdio_garbage(t: Target, client: RpcClient) -> None:
    """Junk lines, invalid UTF-8, a line of several MiB: each is logged and dropped."""
    for _ in range(t.rng.randrange(1, 5)):
        kind = t.rng.randrange(4)
        if kind == 0:
            await client.send_raw(
                bytes(t.rng.randrange(1, 256) for _ in range(t.rng.randrange(1, 300))).replace(b"\n", b" ")
            )
        elif kind == 1:
            await client.send_raw(b'{"id": 5, "method": "fs/getMetadata", "params": {"path": "\xff"}}')
        elif kind == 2:
            await client.send_raw(b"[" * t.rng.randrange(1, 5000))
        else:
            await client.send_raw(b"x" * t.rng.randrange(1 << 20, 4 << 20))


async def stdio_duplicates(t: Target, client: RpcClient) -> None:
    request_id = t.rng.choice([3, "same"])
    for _ in range(t.rng.randrange(2, 5)):
        await client.send("fs/getMetadata", {"path": "/"}, request_id=request_id)
    with trio.fail_after(10):
        await client.reply(request_id, client.sent[request_id])


async def stdio_burst(t: Target, client: RpcClient) -> None:
    ids = [
        await client.send("fs/readDirectory", {"path": str(t.server.workspace)})
        for _ in range(t.rng.randrange(50, 300))
    ]
    with trio.fail_after(20):
        for request_id in ids:
            await client.reply(request_id)


async def stdio_stalled_reader(t: Target, client: RpcClient) -> None:
    """The only client stops reading while a command floods it, then terminates the command."""
    params = t.command(t.flood(), tty=t.rng.random() < 0.5)
    request_id = await client.send("command/exec", params)
    client.pause()
    await trio.sleep(t.rng.uniform(0.1, 0.5))
    client.resume()
    await client.call("command/exec/terminate", {"processId": params["processId"]})
    with trio.fail_after(10):
        await client.reply(request_id)


async def stdio_huge_number(t: Target, client: RpcClient) -> None:
    client.sent["huge"] += 1
    digits = "1" * t.rng.randrange(400, 100_000)
    await client.send_raw(
        f'{{"id": "huge", "method": "fs/getMetadata", "params": {{"path": "/", "n": -{digits}}}}}'.encode()
    )
    with trio.fail_after(10):
        answer = await client.reply("huge", client.sent["huge"])
    check("result" in answer, f"huge number: {answer}")


STDIO_FAULTS: list[Callable[[Target, RpcClient], Any]] = [
    stdio_garbage,
    stdio_duplicates,
    stdio_burst,
    stdio_stalled_reader,
    stdio_huge_number,
]
