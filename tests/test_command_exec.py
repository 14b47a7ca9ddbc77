"""command/exec through the server: modes, limits, process ids, ownership and cleanup.

The in-process server is used throughout (`client` / `app_server` fixtures, which carry the
leak check: no child, zombie, fd or task may outlive a test). Where the relative order of
notifications and the response matters, a raw connection reads the messages exactly as the
server queued them. Grandchildren are watched through pidfds, so their death is awaited.
"""

from __future__ import annotations

import base64
import itertools
import os
import sys
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.lowlevel
import trio.testing

from codex_trio.client import ClientConnection
from codex_trio.procfs import is_alive
from codex_trio.protocol.errors import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, RpcError
from codex_trio.server import AppServer, open_app_server
from codex_trio.settings import ServerSettings
from codex_trio.testing import StdioServer
from codex_trio.transport.memory import MemoryMessageStream, memory_message_stream_pair

TIMEOUT = 20
FULL_ACCESS = {"type": "dangerFullAccess"}
DELTA = "command/exec/outputDelta"


def exec_params(command: list[str], **extra: Any) -> dict[str, Any]:
    return {"command": command, "sandboxPolicy": FULL_ACCESS, **extra}


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


async def wait_gone(pid: int) -> None:
    """Wait for a process that is not our child to exit (a pidfd: no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


class Raw:
    """A client that sees messages in exactly the order the server queued them."""

    def __init__(self, stream: MemoryMessageStream) -> None:
        self.stream = stream
        self.messages: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    @classmethod
    async def open(cls, server: AppServer) -> Raw:
        server_end, client_end = memory_message_stream_pair()
        server.adopt(server_end, "backpressure")
        raw = cls(client_end)
        await raw.request("initialize", {"clientInfo": {"name": "raw", "version": "1"}})
        return raw

    async def send(self, method: str, params: Any) -> int:
        request_id = next(self._ids)
        await self.stream.send_message(orjson.dumps({"id": request_id, "method": method, "params": params}))
        return request_id

    async def until(self, request_id: int) -> dict[str, Any]:
        """Read (and keep) everything up to the response to `request_id`."""
        while True:
            message: dict[str, Any] = orjson.loads(await self.stream.receive_message())
            self.messages.append(message)
            if message.get("id") == request_id and "method" not in message:
                return message

    async def request(self, method: str, params: Any) -> dict[str, Any]:
        return await self.until(await self.send(method, params))

    def deltas(self, process_id: str) -> list[dict[str, Any]]:
        return [
            m["params"]
            for m in self.messages
            if m.get("method") == DELTA and m["params"]["processId"] == process_id
        ]

    def output(self, process_id: str) -> dict[str, bytes]:
        out = {"stdout": b"", "stderr": b""}
        for delta in self.deltas(process_id):
            out[delta["stream"]] += base64.b64decode(delta["deltaBase64"])
        return out


_outputs: weakref.WeakKeyDictionary[ClientConnection, dict[str, bytes]] = weakref.WeakKeyDictionary()


async def collect_output(client: ClientConnection, process_id: str, until: bytes) -> bytes:
    """The stdout so far of one process, once `until` is in it (other processes' deltas are kept)."""
    outputs = _outputs.setdefault(client, {})
    while until not in outputs.get(process_id, b""):
        params = (await client.wait_for(DELTA))["params"]
        outputs[params["processId"]] = outputs.get(params["processId"], b"") + base64.b64decode(
            params["deltaBase64"]
        )
    return outputs[process_id]


class Pending:
    """A request running in the background; `await pending.response()` for its answer."""

    def __init__(self) -> None:
        self._done = trio.Event()
        self._response: dict[str, Any] = {}

    @classmethod
    async def start(
        cls, nursery: trio.Nursery, client: ClientConnection, method: str, params: Any
    ) -> Pending:
        """Send the request; returns once the in-process server has taken it up (registered it)."""
        pending = cls()
        nursery.start_soon(pending._run, client, method, params)
        await trio.testing.wait_all_tasks_blocked()
        return pending

    async def _run(self, client: ClientConnection, method: str, params: Any) -> None:
        try:
            self._response = await client.request(method, params)
        except trio.BrokenResourceError:
            self._response = {"closed": True}
        self._done.set()

    async def response(self) -> dict[str, Any]:
        await self._done.wait()
        return self._response

    async def result(self) -> Any:
        response = await self.response()
        assert "result" in response, response
        return response["result"]


@asynccontextmanager
async def running(client: ClientConnection, params: dict[str, Any]) -> AsyncIterator[Pending]:
    """A `command/exec` running in the background for the body of the block."""
    async with trio.open_nursery() as nursery:
        yield await Pending.start(nursery, client, "command/exec", params)


async def error_of(client: ClientConnection, method: str, params: Any) -> tuple[int, str]:
    with pytest.raises(RpcError) as caught:
        await client.call(method, params)
    return caught.value.code, caught.value.message


@pytest.fixture
async def raw(app_server: AppServer) -> AsyncIterator[Raw]:
    connection = await Raw.open(app_server)
    yield connection
    await connection.stream.aclose()


# ---------------------------------------------------------------------------------- buffered
async def test_buffered_exec_answers_exit_code_stdout_and_stderr_with_stdin_closed(
    client: ClientConnection,
) -> None:
    with trio.fail_after(TIMEOUT):
        result = await client.call(
            "command/exec", exec_params(["sh", "-c", "echo out; echo err >&2; exit 3"])
        )
        assert result == {"exitCode": 3, "stdout": "out\n", "stderr": "err\n"}
        assert await client.call("command/exec", exec_params(["sh", "-c", "cat; echo done"])) == {
            "exitCode": 0,
            "stdout": "done\n",
            "stderr": "",
        }


async def test_output_is_decoded_as_utf8_lossily(client: ClientConnection) -> None:
    with trio.fail_after(TIMEOUT):
        result = await client.call("command/exec", exec_params(["printf", r"h\303\251 \377!"]))
    assert result["stdout"] == "hé \ufffd!"


async def test_signals_give_128_plus_the_signal(client: ClientConnection) -> None:
    with trio.fail_after(TIMEOUT):
        result = await client.call("command/exec", exec_params(["sh", "-c", "kill -TERM $$"]))
    assert result["exitCode"] == 143


async def test_env_overrides_merge_over_the_servers_and_null_unsets(
    client: ClientConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CT_INHERITED", "kept")
    monkeypatch.setenv("CT_REMOVED", "present")
    script = 'echo "$CT_INHERITED ${CT_REMOVED-unset} $CT_NEW"'
    with trio.fail_after(TIMEOUT):
        result = await client.call(
            "command/exec", exec_params(["sh", "-c", script], env={"CT_REMOVED": None, "CT_NEW": "new"})
        )
    assert result["stdout"] == "kept unset new\n"


async def test_cwd_defaults_to_the_server_cwd_and_relative_paths_resolve_there(
    client: ClientConnection, server_settings: ServerSettings
) -> None:
    (server_settings.cwd / "sub").mkdir()
    with trio.fail_after(TIMEOUT):
        default = await client.call("command/exec", exec_params(["pwd", "-P"]))
        relative = await client.call("command/exec", exec_params(["pwd", "-P"], cwd="sub"))
        absolute = await client.call(
            "command/exec", exec_params(["pwd", "-P"], cwd=str(server_settings.cwd / "sub"))
        )
    assert default["stdout"].strip() == str(server_settings.cwd.resolve())
    assert relative["stdout"] == absolute["stdout"] == str((server_settings.cwd / "sub").resolve()) + "\n"


async def test_timeout_kills_the_group_with_124_and_keeps_earlier_output(client: ClientConnection) -> None:
    with trio.fail_after(TIMEOUT):
        result = await client.call(
            "command/exec",
            exec_params(["sh", "-c", "echo before; sleep 300 & echo bg=$! >&2; wait"], timeoutMs=300),
        )
        assert (result["exitCode"], result["stdout"]) == (124, "before\n")
        await wait_gone(int(result["stderr"].strip().removeprefix("bg=")))
        instant = await client.call("command/exec", exec_params(["sleep", "30"], timeoutMs=0))
        assert instant["exitCode"] == 124


async def test_a_background_child_holding_the_output_is_drained_then_killed(client: ClientConnection) -> None:
    with trio.fail_after(TIMEOUT):
        began = trio.current_time()
        result = await client.call("command/exec", exec_params(["sh", "-c", "sleep 300 & echo bg=$!"]))
        assert trio.current_time() - began < 10
        assert result["exitCode"] == 0
        await wait_gone(int(result["stdout"].split("bg=")[-1]))


async def test_output_caps_default_to_1_mib_per_stream_and_can_be_set_or_disabled(
    client: ClientConnection,
) -> None:
    both = "head -c 2000000 /dev/zero | tr '\\0' a; head -c 1500000 /dev/zero | tr '\\0' b >&2"
    with trio.fail_after(TIMEOUT):
        default = await client.call("command/exec", exec_params(["sh", "-c", both]))
        assert (default["stdout"], default["stderr"]) == ("a" * 1048576, "b" * 1048576)
        small = await client.call("command/exec", exec_params(["sh", "-c", both], outputBytesCap=3))
        assert (small["stdout"], small["stderr"]) == ("aaa", "bbb")
        empty = await client.call("command/exec", exec_params(["sh", "-c", both], outputBytesCap=0))
        assert (empty["stdout"], empty["stderr"], empty["exitCode"]) == ("", "", 0)
        full = await client.call("command/exec", exec_params(["sh", "-c", both], disableOutputCap=True))
        assert (len(full["stdout"]), len(full["stderr"])) == (2000000, 1500000)


# ---------------------------------------------------------------------------------- streaming
async def test_streamed_output_comes_as_labelled_deltas_before_the_response(raw: Raw) -> None:
    script = "echo o1; echo e1 >&2; printf o2; exit 7"
    with trio.fail_after(TIMEOUT):
        response = await raw.request(
            "command/exec", exec_params(["sh", "-c", script], processId="s", streamStdoutStderr=True)
        )
    assert response["result"] == {"exitCode": 7, "stdout": "", "stderr": ""}
    assert raw.output("s") == {"stdout": b"o1\no2", "stderr": b"e1\n"}
    assert all(
        d["capReached"] is False and set(d) == {"processId", "stream", "deltaBase64", "capReached"}
        for d in raw.deltas("s")
    )
    assert raw.messages[-1] is response, "the response comes after the last delta"


async def test_large_streams_arrive_whole_in_chunks_of_at_most_64_kib(raw: Raw) -> None:
    size = 5 * 1024 * 1024 + 3
    with trio.fail_after(TIMEOUT):
        await raw.request(
            "command/exec",
            exec_params(
                ["head", "-c", str(size), "/dev/urandom"],
                processId="big",
                streamStdoutStderr=True,
                disableOutputCap=True,
            ),
        )
    assert len(raw.output("big")["stdout"]) == size
    assert max(len(base64.b64decode(d["deltaBase64"])) for d in raw.deltas("big")) <= 65536


async def test_the_streamed_chunk_that_reaches_the_cap_is_cut_and_marked(raw: Raw) -> None:
    script = "printf 0123456789; printf XYZXYZ >&2; sleep 0.05; printf more; printf more >&2"
    with trio.fail_after(TIMEOUT):
        await raw.request(
            "command/exec",
            exec_params(["sh", "-c", script], processId="cap", streamStdoutStderr=True, outputBytesCap=4),
        )
        await raw.request(
            "command/exec",
            exec_params(["printf", "abc"], processId="zero", streamStdoutStderr=True, outputBytesCap=0),
        )
    assert raw.output("cap") == {"stdout": b"0123", "stderr": b"XYZX"}
    for stream in ("stdout", "stderr"):
        flags = [d["capReached"] for d in raw.deltas("cap") if d["stream"] == stream]
        assert flags[-1] is True and not any(flags[:-1])
    assert raw.deltas("zero") == [
        {"processId": "zero", "stream": "stdout", "deltaBase64": "", "capReached": True}
    ]


async def test_the_default_cap_applies_to_streams_too(raw: Raw) -> None:
    with trio.fail_after(TIMEOUT):
        await raw.request(
            "command/exec",
            exec_params(["head", "-c", "3000000", "/dev/zero"], processId="d", streamStdoutStderr=True),
        )
    assert len(raw.output("d")["stdout"]) == 1048576
    assert raw.deltas("d")[-1]["capReached"] is True


async def test_deltas_go_only_to_the_connection_that_started_the_process(app_server: AppServer) -> None:
    owner, other = await Raw.open(app_server), await Raw.open(app_server)
    with trio.fail_after(TIMEOUT):
        await owner.request(
            "command/exec", exec_params(["echo", "mine"], processId="p", streamStdoutStderr=True)
        )
        await other.request("command/exec", exec_params(["true"]))
    assert owner.output("p")["stdout"] == b"mine\n"
    assert not [m for m in other.messages if m.get("method") == DELTA]
    for connection in (owner, other):
        await connection.stream.aclose()


# ---------------------------------------------------------------------------------- stdin
async def test_stdin_streaming_writes_and_closes(client: ClientConnection, tmp_path: Path) -> None:
    release = tmp_path / "release"
    # the child outlives its stdin until `release` exists, so "already closed" is not raced by
    # the process ending (which would make the write "no active command/exec")
    script = 'read line; echo got:$line; cat; echo eof; while [ ! -e "$1" ]; do sleep 0.01; done'
    with trio.fail_after(TIMEOUT):
        async with running(
            client,
            exec_params(
                ["sh", "-c", script, "sh", str(release)],
                processId="in",
                streamStdin=True,
                streamStdoutStderr=True,
            ),
        ) as pending:
            assert (
                await client.call("command/exec/write", {"processId": "in", "deltaBase64": b64("hello\n")})
                == {}
            )
            assert await collect_output(client, "in", b"got:hello\n") == b"got:hello\n"
            await client.call(
                "command/exec/write", {"processId": "in", "deltaBase64": b64("tail\n"), "closeStdin": True}
            )
            await client.call("command/exec/write", {"processId": "in", "closeStdin": True})
            assert await error_of(
                client, "command/exec/write", {"processId": "in", "deltaBase64": b64("x")}
            ) == (INVALID_REQUEST, "stdin is already closed")
            assert await collect_output(client, "in", b"eof\n") == b"got:hello\ntail\neof\n"
            release.touch()
            assert (await pending.result())["exitCode"] == 0


async def test_pipelined_writes_reach_the_child_in_the_order_sent(raw: Raw) -> None:
    words = [f"w{i:03d}" for i in range(200)]
    with trio.fail_after(TIMEOUT):
        exec_id = await raw.send("command/exec", exec_params(["cat"], processId="cat", streamStdin=True))
        for word in words:  # sent back to back, none awaited; the spawn may still be running
            await raw.send("command/exec/write", {"processId": "cat", "deltaBase64": b64(word + "\n")})
        await raw.send("command/exec/write", {"processId": "cat", "closeStdin": True})
        response = await raw.until(exec_id)
    assert response["result"]["stdout"] == "".join(word + "\n" for word in words)
    assert all("error" not in m for m in raw.messages)


async def test_stdin_without_streamed_output_answers_with_buffered_output(client: ClientConnection) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(
            client, exec_params(["sh", "-c", "read l; echo got:$l"], processId="bi", streamStdin=True)
        ) as pending:
            await client.call(
                "command/exec/write", {"processId": "bi", "deltaBase64": b64("abc\n"), "closeStdin": True}
            )
            assert await pending.result() == {"exitCode": 0, "stdout": "got:abc\n", "stderr": ""}


async def test_write_errors(client: ClientConnection) -> None:
    with trio.fail_after(TIMEOUT):
        assert await error_of(client, "command/exec/write", {"processId": "nope"}) == (
            INVALID_PARAMS,
            "command/exec/write requires deltaBase64 or closeStdin",
        )
        assert await error_of(client, "command/exec/write", {"processId": "nope", "deltaBase64": "!!"}) == (
            INVALID_PARAMS,
            "invalid deltaBase64: Invalid symbol 33, offset 0.",
        )
        assert await error_of(client, "command/exec/write", {"processId": "nope", "deltaBase64": "YQ=="}) == (
            INVALID_REQUEST,
            'no active command/exec for process id "nope"',
        )
        async with running(client, exec_params(["sleep", "30"], processId="nostdin")) as pending:
            assert await error_of(
                client, "command/exec/write", {"processId": "nostdin", "deltaBase64": "YQ=="}
            ) == (INVALID_REQUEST, "stdin streaming is not enabled for this command/exec")
            await client.call("command/exec/terminate", {"processId": "nostdin"})
            assert (await pending.result())["exitCode"] == 137


# ---------------------------------------------------------------------------------- tty
async def test_tty_runs_on_a_pty_of_default_or_requested_size_with_one_crlf_stream(raw: Raw) -> None:
    script = "stty size; test -t 0 && echo stdin-is-tty; echo err >&2"
    with trio.fail_after(TIMEOUT):
        first = await raw.request("command/exec", exec_params(["sh", "-c", script], processId="t", tty=True))
        second = await raw.request(
            "command/exec",
            exec_params(["stty", "size"], processId="s", tty=True, size={"rows": 33, "cols": 101}),
        )
    assert first["result"] == second["result"] == {"exitCode": 0, "stdout": "", "stderr": ""}
    assert raw.output("t") == {"stdout": b"24 80\r\nstdin-is-tty\r\nerr\r\n", "stderr": b""}
    assert raw.output("s")["stdout"] == b"33 101\r\n"


async def test_tty_resize_is_seen_by_the_child(client: ClientConnection) -> None:
    script = (  # SIGWINCH is blocked before "ready", so sigwait cannot miss it
        "import os, signal\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH})\n"
        "print('ready', flush=True)\n"
        "signal.sigwait({signal.SIGWINCH})\n"
        "print('winch', *os.get_terminal_size(0), flush=True)\n"
        "input()\n"
        "print('size', *os.get_terminal_size(0), flush=True)\n"
    )
    with trio.fail_after(TIMEOUT):
        async with running(
            client, exec_params([sys.executable, "-c", script], processId="rs", tty=True)
        ) as pending:
            await collect_output(client, "rs", b"ready")
            assert (
                await client.call(
                    "command/exec/resize", {"processId": "rs", "size": {"rows": 50, "cols": 120}}
                )
                == {}
            )
            await collect_output(client, "rs", b"winch 120 50")
            await client.call("command/exec/resize", {"processId": "rs", "size": {"rows": 10, "cols": 20}})
            await client.call("command/exec/write", {"processId": "rs", "deltaBase64": b64("go\n")})
            # the line and its CRLF may arrive in two PTY reads: wait for the whole line
            assert (await collect_output(client, "rs", b"size 20 10\r\n")).endswith(b"size 20 10\r\n")
            assert (await pending.result())["exitCode"] == 0


async def test_tty_close_stdin_sends_eof(raw: Raw) -> None:
    with trio.fail_after(TIMEOUT):
        exec_id = await raw.send(
            "command/exec", exec_params(["sh", "-c", "cat; echo after-cat"], processId="eof", tty=True)
        )
        await raw.send(
            "command/exec/write", {"processId": "eof", "deltaBase64": b64("xyz"), "closeStdin": True}
        )
        response = await raw.until(exec_id)
    assert response["result"]["exitCode"] == 0
    assert raw.output("eof")["stdout"] == b"xyz\r\nxyz\r\nafter-cat\r\n"


async def test_resize_errors(client: ClientConnection) -> None:
    with trio.fail_after(TIMEOUT):
        assert await error_of(
            client, "command/exec/resize", {"processId": "none", "size": {"rows": 5, "cols": 5}}
        ) == (INVALID_REQUEST, 'no active command/exec for process id "none"')
        async with running(client, exec_params(["sleep", "30"], processId="pipe")) as pending:
            assert await error_of(
                client, "command/exec/resize", {"processId": "pipe", "size": {"rows": 5, "cols": 5}}
            ) == (INVALID_REQUEST, "failed to resize PTY: process is not attached to a PTY")
            assert (
                await error_of(
                    client, "command/exec/resize", {"processId": "pipe", "size": {"rows": 0, "cols": 5}}
                )
            )[0] == INVALID_PARAMS
            assert (
                await error_of(
                    client, "command/exec/resize", {"processId": "pipe", "size": {"rows": -1, "cols": 5}}
                )
            )[0] == INVALID_REQUEST
            await client.call("command/exec/terminate", {"processId": "pipe"})
            await pending.result()


# ---------------------------------------------------------------------------------- terminate and ids
async def test_terminate_kills_the_whole_group_at_once(client: ClientConnection) -> None:
    script = "trap 'echo trapped' TERM; sleep 300 & echo bg=$!; while :; do sleep 0.05; done"
    with trio.fail_after(TIMEOUT):
        async with running(
            client,
            exec_params(["sh", "-c", script], processId="term", streamStdoutStderr=True, disableTimeout=True),
        ) as pending:
            output = await collect_output(client, "term", b"\n")
            assert await client.call("command/exec/terminate", {"processId": "term"}) == {}
            assert await pending.result() == {"exitCode": 137, "stdout": "", "stderr": ""}
        await wait_gone(int(output.split(b"=")[1]))
        assert await error_of(client, "command/exec/terminate", {"processId": "term"}) == (
            INVALID_REQUEST,
            'no active command/exec for process id "term"',
        )


async def test_a_terminated_tty_reports_exit_code_1_like_the_reference(client: ClientConnection) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(
            client, exec_params(["sh", "-c", "echo up; exec sleep 300"], processId="tty", tty=True)
        ) as pending:
            await collect_output(client, "tty", b"up")
            await client.call("command/exec/terminate", {"processId": "tty"})
            assert (await pending.result())["exitCode"] == 1


async def test_a_buffered_exec_with_a_process_id_is_terminable(client: ClientConnection) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(
            client, exec_params(["sh", "-c", "echo partial; exec sleep 300"], processId="b")
        ) as pending:
            await client.call("command/exec/terminate", {"processId": "b"})
            result = await pending.result()
    assert result["exitCode"] == 137 and result["stdout"] in ("", "partial\n")


async def test_a_duplicate_id_is_refused_while_running_and_free_again_after(client: ClientConnection) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(client, exec_params(["sleep", "30"], processId="dup")) as pending:
            assert await error_of(client, "command/exec", exec_params(["true"], processId="dup")) == (
                INVALID_REQUEST,
                'duplicate active command/exec process id: "dup"',
            )
            await client.call("command/exec/terminate", {"processId": "dup"})
            await pending.result()
        again = await client.call("command/exec", exec_params(["echo", "again"], processId="dup"))
        assert again["stdout"] == "again\n"


async def test_process_ids_are_scoped_to_their_connection(app_server: AppServer) -> None:
    a, b = await app_server.connect(), await app_server.connect()
    for client in (a, b):
        await client.initialize()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            in_a = await Pending.start(
                nursery,
                a,
                "command/exec",
                exec_params(
                    ["sh", "-c", "echo a-up; exec sleep 300"], processId="p", streamStdoutStderr=True
                ),
            )
            in_b = await Pending.start(
                nursery,
                b,
                "command/exec",
                exec_params(
                    ["sh", "-c", "echo b-up; exec sleep 300"], processId="p", streamStdoutStderr=True
                ),
            )
            await collect_output(a, "p", b"a-up")
            await collect_output(b, "p", b"b-up")
            await b.call("command/exec/terminate", {"processId": "p"})
            assert (await in_b.result())["exitCode"] == 137
            assert await error_of(b, "command/exec/terminate", {"processId": "p"}) == (
                INVALID_REQUEST,
                'no active command/exec for process id "p"',
            )
            await a.call("command/exec/terminate", {"processId": "p"})
            assert (await in_a.result())["exitCode"] == 137
    for client in (a, b):
        await client.aclose()


# ---------------------------------------------------------------------------------- ownership
async def test_disconnect_kills_that_connections_processes_and_no_others(app_server: AppServer) -> None:
    leaving, staying = await app_server.connect(), await app_server.connect()
    for client in (leaving, staying):
        await client.initialize()
    script = "sleep 300 & echo bg=$!; wait"
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for process_id, tty in (("pipe", False), ("tty", True)):
                await Pending.start(
                    nursery,
                    leaving,
                    "command/exec",
                    exec_params(["sh", "-c", script], processId=process_id, tty=tty, streamStdoutStderr=True),
                )
            await Pending.start(
                nursery, leaving, "command/exec", exec_params(["sleep", "300"])
            )  # buffered, no id
            kept = await Pending.start(
                nursery,
                staying,
                "command/exec",
                exec_params(["sh", "-c", script], processId="pipe", streamStdoutStderr=True),
            )
            leaving_bg = [
                int((await collect_output(leaving, pid, b"\n")).split(b"=")[1]) for pid in ("pipe", "tty")
            ]
            staying_bg = int((await collect_output(staying, "pipe", b"\n")).split(b"=")[1])
            await leaving.aclose()
            for pid in leaving_bg:
                await wait_gone(pid)
            assert is_alive(staying_bg)
            await staying.call("command/exec/terminate", {"processId": "pipe"})
            assert (await kept.result())["exitCode"] == 137
            await wait_gone(staying_bg)
    await staying.aclose()


async def test_shutdown_kills_every_running_process(leak_check: Any, server_settings: ServerSettings) -> None:
    script = "sleep 300 & echo bg=$!; wait"
    grandchildren: list[int] = []
    with trio.fail_after(TIMEOUT):
        async with open_app_server(server_settings) as server:
            client = await server.connect()
            await client.initialize()
            async with trio.open_nursery() as nursery:
                for process_id, tty in (("pipe", False), ("tty", True)):
                    await Pending.start(
                        nursery,
                        client,
                        "command/exec",
                        exec_params(
                            ["sh", "-c", script],
                            processId=process_id,
                            tty=tty,
                            streamStdoutStderr=True,
                            disableTimeout=True,
                        ),
                    )
                for process_id in ("pipe", "tty"):
                    grandchildren.append(
                        int((await collect_output(client, process_id, b"\n")).split(b"=")[1])
                    )
                began = trio.current_time()
                server.shutdown()
            await server.stopped.wait()
            assert trio.current_time() - began < 1.0
    for pid in grandchildren:
        await wait_gone(pid)


async def test_stdio_eof_with_running_commands_exits_fast_and_leaves_nothing(
    stdio_server: StdioServer,
) -> None:
    client = stdio_server.client
    with trio.fail_after(TIMEOUT):
        await client.initialize()
        async with trio.open_nursery() as nursery:
            for process_id, tty in (("pipe", False), ("tty", True)):
                await Pending.start(
                    nursery,
                    client,
                    "command/exec",
                    exec_params(
                        ["sh", "-c", "sleep 300 & echo bg=$!; wait"],
                        processId=process_id,
                        tty=tty,
                        streamStdoutStderr=True,
                        disableTimeout=True,
                    ),
                )
            grandchildren = [
                int((await collect_output(client, pid, b"\n")).split(b"=")[1]) for pid in ("pipe", "tty")
            ]
            began = trio.current_time()
            await stdio_server.close_stdin()
            assert await stdio_server.wait() == 0
            assert trio.current_time() - began < 1.5
        for pid in grandchildren:
            await wait_gone(pid)


# ---------------------------------------------------------------------------------- bad input
async def test_bad_input_gets_the_reference_errors_and_the_connection_keeps_working(
    client: ClientConnection, server_settings: ServerSettings
) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        (exec_params([]), INVALID_REQUEST, "command must not be empty"),
        (
            exec_params(["definitely-not-a-command-xyz"]),
            INTERNAL_ERROR,
            "failed to spawn command: No such file or directory (os error 2)",
        ),
        (
            exec_params(["pwd"], cwd=str(server_settings.cwd / "missing")),
            INTERNAL_ERROR,
            "failed to spawn command: No such file or directory (os error 2)",
        ),
        (exec_params([""]), INTERNAL_ERROR, "failed to spawn command: missing program for pipe spawn"),
        (
            exec_params(["nope-xyz"], processId="t", tty=True, env={"PATH": "/nowhere"}),
            INTERNAL_ERROR,
            "failed to spawn command: Unable to spawn nope-xyz because:\n"
            'No viable candidates found in PATH "/nowhere"',
        ),
        (
            exec_params(["true"], processId="z", tty=True, size={"rows": 0, "cols": 0}),
            INVALID_PARAMS,
            "command/exec size rows and cols must be greater than 0",
        ),
        (
            exec_params(["true"], processId="z", tty=True, size={"rows": -1, "cols": 5}),
            INVALID_REQUEST,
            "Invalid request: invalid value: integer `-1`, expected u16",
        ),
        (
            exec_params(["true"], timeoutMs=-5),
            INVALID_PARAMS,
            "command/exec timeoutMs must be non-negative, got -5",
        ),
        (
            {"command": "echo hi", "sandboxPolicy": FULL_ACCESS},
            INVALID_REQUEST,
            'Invalid request: invalid type: string "echo hi", expected a sequence',
        ),
        (
            exec_params(["true"], streamStdoutStderr=True),
            INVALID_REQUEST,
            "command/exec tty or streaming requires a client-supplied processId",
        ),
        (
            exec_params(["true"], sandboxPolicy={"type": "bogus"}),
            INVALID_REQUEST,
            "Invalid request: unknown variant `bogus`, expected one of `dangerFullAccess`, `readOnly`, "
            "`externalSandbox`, `workspaceWrite`",
        ),
        (
            {"command": ["true"], "permissionProfile": ":workspace"},
            INVALID_REQUEST,
            "command/exec.permissionProfile requires experimentalApi capability",
        ),
    ]
    with trio.fail_after(TIMEOUT):
        for params, code, message in cases:
            assert await error_of(client, "command/exec", params) == (code, message), params
        assert (await client.call("command/exec", exec_params(["echo", "still here"])))[
            "stdout"
        ] == "still here\n"


async def test_sandbox_policies_and_permission_profiles_are_accepted(app_server: AppServer) -> None:
    client = await app_server.connect()
    await client.initialize(experimentalApi=True)
    policies: list[Any] = [
        None,
        {"type": "readOnly"},
        {"type": "externalSandbox", "networkAccess": "enabled"},
        {"type": "workspaceWrite", "writableRoots": ["/tmp"], "networkAccess": True},
    ]
    with trio.fail_after(TIMEOUT):
        for policy in policies:
            assert (await client.call("command/exec", {"command": ["true"], "sandboxPolicy": policy}))[
                "exitCode"
            ] == 0
        for profile in (":read-only", ":workspace", ":danger-full-access"):
            assert (await client.call("command/exec", {"command": ["true"], "permissionProfile": profile}))[
                "exitCode"
            ] == 0
        assert (await error_of(client, "command/exec", {"command": ["true"], "permissionProfile": "custom"}))[
            0
        ] == (INVALID_REQUEST)
    await client.aclose()
