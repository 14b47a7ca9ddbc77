"""End to end over real stdio: `python -m codex_trio` as a subprocess."""

from __future__ import annotations

import signal

import orjson
import pytest
import trio
import trio.testing

from codex_trio.protocol.errors import RpcError
from codex_trio.testing import StdioServer


async def test_stdio_server_answers_initialize_and_exits_zero_on_stdin_eof(stdio_server: StdioServer) -> None:
    client = stdio_server.client
    with trio.fail_after(20):
        result = await client.initialize("stdio-test")
        assert result["codexHome"] == str(stdio_server.codex_home)
        await stdio_server.close_stdin()
        assert await stdio_server.wait() == 0
        await client.closed.wait()


async def test_a_stdout_pipe_is_widened_so_a_large_message_crosses_it_in_one_hand_off(
    stdio_server: StdioServer,
) -> None:
    import fcntl

    from codex_trio.pipes import PIPE_BUFFER

    F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
    assert stdio_server.process.stdout is not None
    with trio.fail_after(20):
        await stdio_server.client.initialize("stdio-test")
        # the client's read end shares the kernel buffer the server widened
        assert fcntl.fcntl(stdio_server.process.stdout.fileno(), F_GETPIPE_SZ) == PIPE_BUFFER
        await stdio_server.close_stdin()
        assert await stdio_server.wait() == 0


async def test_malformed_lines_and_invalid_utf8_get_no_reply_and_keep_the_server(
    stdio_server: StdioServer,
) -> None:
    client = stdio_server.client
    with trio.fail_after(20):
        await client.initialize()
        for line in [
            b"{not json",
            b"[]",
            b"42",
            b'{"id": 902}',
            b"\xff\xfe garbage",
            b'{"id": 903, "result": {}}',
        ]:
            await client.send_raw(line)
        await client.send_raw(b'  {"id": "crlf", "method": "nope/x", "params": {}}  \r')
        reply = await client.receive()
        while "method" in reply:
            reply = await client.receive()
        assert reply["id"] == "crlf" and "unknown variant `nope/x`" in reply["error"]["message"]
        with pytest.raises(RpcError, match="unknown variant `nope/y`"):
            await client.call("nope/y", {})
        assert stdio_server.process.returncode is None
        await stdio_server.close_stdin()
        assert await stdio_server.wait() == 0


async def test_sigterm_drains_and_exits_zero(stdio_server: StdioServer) -> None:
    with trio.fail_after(20):
        await stdio_server.client.initialize()
        stdio_server.process.send_signal(signal.SIGTERM)
        assert await stdio_server.wait() == 0


async def test_sigint_drains_and_exits_zero_unlike_the_reference(stdio_server: StdioServer) -> None:
    with trio.fail_after(20):
        await stdio_server.client.initialize()
        stdio_server.process.send_signal(signal.SIGINT)
        assert await stdio_server.wait() == 0


async def test_a_pipelined_burst_is_answered_in_full(stdio_server: StdioServer) -> None:
    """The reference loses a quarter of a 20k burst; backpressure makes us lose none."""
    client = stdio_server.client
    total = 5000
    with trio.fail_after(60):
        await client.initialize()
        answered: set[int] = set()

        async def collect() -> None:
            while len(answered) < total:
                message = await client.receive()
                answered.add(message["id"]) if "id" in message and "method" not in message else None

        line = b"".join(
            orjson.dumps({"id": n, "method": "unknown/method", "params": {}}) + b"\n" for n in range(total)
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            # One write of every request: the server must not drop any while its writer is behind.
            await client.send_raw(line.rstrip(b"\n"))
        assert answered == set(range(total))
        await stdio_server.close_stdin()
        assert await stdio_server.wait() == 0


async def test_lines_written_from_the_sending_task_stay_whole_and_in_order_on_a_full_pipe() -> None:
    """`send_messages_nowait` writes a line at once while the pipe has room; once the pipe is
    full a partial line's rest is written by `finish_send`, and later lines wait for it."""
    import os

    from codex_trio.transport.stdio import LineStream

    read_fd, write_fd = os.pipe()
    reader = trio.lowlevel.FdStream(read_fd)
    stream = LineStream(trio.lowlevel.FdStream(os.dup(0)), trio.lowlevel.FdStream(write_fd))
    # lines above PIPE_BUF (4 KiB) can be written in part; 400 KB is more than a pipe holds
    lines = [orjson.dumps({"n": n, "pad": "x" * 10_000}) for n in range(40)]
    results: list[str] = []
    received = bytearray()
    start_reading = trio.Event()

    async def read_all() -> None:
        await start_reading.wait()
        while chunk := await reader.receive_some(1 << 16):
            received.extend(chunk)

    async def send_rest(rest: list[bytes]) -> None:
        await stream.send_messages(rest)  # must wait for the unwritten tail
        await stream.aclose()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            for line in lines:
                results.append(stream.send_messages_nowait([line]))
                if results[-1] != "sent":
                    break
            assert results[-1] == "partial", results
            nursery.start_soon(send_rest, lines[len(results) :])
            nursery.start_soon(stream.finish_send)
            await trio.testing.wait_all_tasks_blocked()
            start_reading.set()
    await reader.aclose()
    assert bytes(received).split(b"\n")[:-1] == lines
    assert results[0] == "sent"
