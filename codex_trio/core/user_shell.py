"""`thread/shellCommand`: a command the user typed (`!cmd` in the TUI), run for the thread.

As the reference: the command line goes to the user's shell (`$SHELL -lc`, pipes and quoting
kept) in the thread's cwd, *without* the model's sandbox or approvals (the user ran it, not the
model). It shows as a `commandExecution` item with `source: "userShell"` and streamed output,
and the model's next request sees it as a `<user_shell_command>` user message with the exit
code, duration and output. On an idle thread it is a turn of its own (`UserShellCommand`); while
a turn runs it belongs to that turn (`run_user_shell`).

The process is owned by the task that runs it: cancelled (interrupt, unload, shutdown) or past
its timeout, its process group is killed (`codex_trio.process.run_to_exit`).
"""

from __future__ import annotations

import codecs
import math
import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from codex_trio.core import item_events
from codex_trio.core.exec_tool import COMMAND_ENV, command_actions, default_shell
from codex_trio.core.prompt import message
from codex_trio.ids import now_ms, uuid7
from codex_trio.process import SpawnError, SpawnSpec, StreamName, run_to_exit, spawn
from codex_trio.protocol.items import CommandExecutionItem, CommandStatus, ItemDelta
from codex_trio.records import by_value
from codex_trio.store import rollout

if TYPE_CHECKING:
    from codex_trio.core.turn import RunningTurn, ThreadRuntime

#: milliseconds a user shell command may run when the request gives no timeout (one hour).
DEFAULT_TIMEOUT_MS = 60 * 60 * 1000
#: bytes of output kept for the item and the model's message (the rest is cut in the middle).
MAX_KEPT_OUTPUT = 256 * 1024
#: exit code reported when the timeout stopped the command (as `timeout(1)` reports it).
TIMEOUT_EXIT_CODE = 124


def shell_message(command: str, exit_code: int, duration_s: float, output: str) -> str:
    """The user message the model's next request carries (the reference's layout)."""
    return (
        f"<user_shell_command>\n<command>\n{command}\n</command>\n<result>\n"
        f"Exit code: {exit_code}\nDuration: {duration_s:.4f} seconds\nOutput:\n{output}\n"
        "</result>\n</user_shell_command>"
    )


def _kept(text: str) -> str:
    if len(text) <= MAX_KEPT_OUTPUT:
        return text
    half = MAX_KEPT_OUTPUT // 2
    return f"{text[:half]}\n…{len(text) - 2 * half} characters cut…\n{text[-half:]}"


async def run_user_shell(
    runtime: ThreadRuntime, turn_id: str, command: str, cwd: str, timeout_ms: int | None
) -> None:
    """Run `command` as the user's, as an item of turn `turn_id`, and record it for the model."""
    thread = runtime.thread
    argv = [default_shell(), "-lc", command]
    item = CommandExecutionItem(
        str(uuid7()),
        shlex.join(argv),
        cwd,
        command_actions(command),
        source="userShell",
        started_at_ms=now_ms(),
    )
    await item_events.started(thread, turn_id, item)
    began = time.monotonic()
    chunks: list[str] = []
    decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in ("stdout", "stderr")}

    async def on_output(name: StreamName, data: bytes) -> None:
        text = decoders[name].decode(data)
        if text:
            chunks.append(text)
            await thread.notify_subscribers(
                "item/commandExecution/outputDelta", ItemDelta(thread.id, turn_id, item.id, text)
            )

    timeout = DEFAULT_TIMEOUT_MS if timeout_ms is None else max(timeout_ms, 0)
    stop = trio.CancelScope(deadline=trio.current_time() + timeout / 1000 if timeout else -math.inf)
    exit_code: int
    try:
        spec = SpawnSpec(argv, cwd=Path(cwd), env={**os.environ, **COMMAND_ENV})
        async with spawn(spec) as child:
            finished = await run_to_exit(child, on_output, stop=stop)
        if finished.stopped:
            chunks.append(f"\ncommand timed out after {timeout} ms\n")
            exit_code = TIMEOUT_EXIT_CODE
        else:
            exit_code = finished.exit_code if finished.exit_code is not None else -1
    except SpawnError as exc:
        chunks.append(str(exc))
        exit_code = -1
    output = _kept("".join(chunks))
    duration_s = time.monotonic() - began
    status: CommandStatus = "completed" if exit_code == 0 else "failed"
    done = attrs.evolve(
        item,
        status=status,
        aggregated_output=output,
        exit_code=exit_code,
        duration_ms=int(duration_s * 1000),
        completed_at_ms=now_ms(),
    )
    await item_events.completed(thread, turn_id, done)
    entry = message("user", shell_message(command, exit_code, duration_s, output))
    history = await runtime.load_history()
    history.append(entry)
    await thread.append_rollout(
        [item_events.rollout_line(thread.id, turn_id, done), rollout.response_item(entry)], durable=True
    )


@by_value
@attrs.frozen(repr=False, eq=False)
class UserShellCommand:
    """The body of a `thread/shellCommand` turn on an idle thread."""

    command: str
    timeout_ms: int | None = None

    async def run(self, turn: RunningTurn, runtime: ThreadRuntime) -> None:
        await run_user_shell(runtime, turn.id, self.command, str(turn.settings.cwd), self.timeout_ms)
