"""The agent loop: one turn of a thread, from the user's input to `turn/completed`.

Ownership (task tree):

    server detached nursery
    └── ThreadRuntime.run            one per thread while it has work; ends when idle
        ├── RunningTurn.run          the turn, inside `RunningTurn.scope` (turn/interrupt
        │   │                        cancels it); one turn at a time per thread
        │   └── model stream         `sample_scope` (turn/steer cancels it to re-sample)
        ├── exec sessions            commands the model started (`ExecSessions`); a command
        │                            still running when a tool call yields outlives the call
        └── unload watcher           thread unloaded / archived / deleted → everything stops

A turn: user input → model request (streamed; text deltas, reasoning, tool calls) → tools
(approved when the policy says so) → the next request with the tools' outputs → … until the
model answers without calling a tool. Every finished item goes to the thread's rollout as it
completes; the model conversation (`history`) is rebuilt from the rollout when a thread is
loaded again. Events follow the reference's order (see docs/turns.md).
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import os
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio

from codex_trio import log_store, tracing
from codex_trio.config.effective import ProviderConfig
from codex_trio.core import approvals as approvals_mod
from codex_trio.core import model_client
from codex_trio.core.apply_patch import FilePlan, PatchError, apply_plan, git_diff, parse_patch, plan_patch
from codex_trio.core.approvals import SessionApprovals
from codex_trio.core.exec_tool import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    DEFAULT_POLL_YIELD_MS,
    DEFAULT_WRITE_YIELD_MS,
    MAX_POLL_YIELD_MS,
    MAX_YIELD_MS,
    MIN_YIELD_MS,
    ExecSessions,
    ExecToolError,
    command_actions,
    default_shell,
    parse_exec_args,
    wait_for,
)
from codex_trio.core.model_client import (
    Completed,
    Login,
    ModelError,
    OutputItemAdded,
    OutputItemDone,
    OutputTextDelta,
    ReasoningSummaryDelta,
    ReasoningSummaryPartAdded,
    ResponseEvent,
    TokenUsage,
    open_model_client,
)
from codex_trio.core.prompt import (
    BASE_INSTRUCTIONS,
    TURN_ABORTED_TEXT,
    RequestSpec,
    environment_context,
    message,
    model_family,
    permissions_text,
    request_body,
    tools_for,
    usable_context_window,
)
from codex_trio.core.tools import ToolCall, ToolOutput, ToolProvider, ToolTurn
from codex_trio.protocol.items import (
    AgentMessageItem,
    CommandApprovalParams,
    CommandExecutionItem,
    CommandStatus,
    FileChange,
    FileChangeApprovalParams,
    FileChangeItem,
    ReasoningItem,
    UserMessageItem,
)
from codex_trio.protocol.turns import Turn, TurnError, UserInput
from codex_trio.store import rollout
from codex_trio.threads import LoadedThread

if TYPE_CHECKING:
    from codex_trio.services import Services

log = logging.getLogger(__name__)

#: seconds the end of an interrupted or cancelled turn may take (rollout line, notifications).
FINALIZE_TIMEOUT = 5.0
#: blocking file work of one turn (patches, images) at once.
FILE_WORK = trio.CapacityLimiter(4)

#: tools this engine runs itself; any other call goes to a `ToolProvider` that claims it.
BUILTIN_TOOLS = frozenset({"exec_command", "write_stdin", "apply_patch"})
IDLE = {"type": "idle"}
ACTIVE = {"type": "active", "activeFlags": []}
SYSTEM_ERROR = {"type": "systemError"}
RATE_LIMITS = {
    "rateLimits": {
        "limitId": "codex",
        "limitName": None,
        "normalModelSlug": None,
        "primary": None,
        "secondary": None,
        "credits": None,
        "individualLimit": None,
        "spendControlReached": None,
        "planType": None,
        "rateLimitReachedType": None,
    }
}


def uuid7() -> str:
    """A time-ordered UUID (version 7), as the reference uses for turn and item ids."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    rand_a = (rand >> 62) & 0xFFF
    rand_b = rand & ((1 << 62) - 1)
    value = ((ms & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class TurnInterrupted(Exception):
    """The user cancelled an approval: the turn ends as interrupted."""


@attrs.frozen
class TurnSettings:
    """What a turn runs with (the thread's settings with the turn's overrides applied)."""

    cwd: Path
    model: str
    provider: ProviderConfig
    approval_policy: Any
    sandbox_policy: Mapping[str, Any]
    effort: str | None = None
    summary: str | None = None
    output_schema: Any = None
    base_instructions: str | None = None
    developer_instructions: str | None = None
    context_window: int | None = None
    originator: str = "codex_trio"
    user_agent: str = "codex_trio"
    #: the account's login, for providers that use OpenAI auth.
    login: Login | None = None


# ---------------------------------------------------------------------------- outcomes
@attrs.frozen
class _Completed:
    pass


@attrs.frozen
class _Interrupted:
    pass


@attrs.frozen
class _Failed:
    error: ModelError


Outcome = _Completed | _Interrupted | _Failed


@attrs.define(eq=False)
class _Call:
    """A tool call the model made, in the form it goes back into the history."""

    kind: str  # function_call | custom_tool_call
    call_id: str
    name: str
    arguments: str
    namespace: str | None = None


@attrs.define(eq=False)
class _Sample:
    """What one model response produced, committed to history when it completed."""

    history: list[dict[str, Any]] = attrs.Factory(list)
    rollout: list[dict[str, Any]] = attrs.Factory(list)
    calls: list[_Call] = attrs.Factory(list)
    usage: TokenUsage | None = None
    open_messages: dict[str, AgentMessageItem] = attrs.Factory(dict)
    open_reasoning: dict[str, ReasoningItem] = attrs.Factory(dict)


# ---------------------------------------------------------------------------- the runtime
class ThreadRuntime:
    """A thread's turn machinery, kept in `LoadedThread.turn_state` (see the module docstring)."""

    def __init__(self, thread: LoadedThread, services: Services) -> None:
        self.thread = thread
        self.services = services
        self.history: list[dict[str, Any]] | None = None
        self.approvals = SessionApprovals()
        self.total_usage: TokenUsage | None = None
        self.current: RunningTurn | None = None
        #: turn/start overrides that stick for later turns (cwd, model, policies, effort…).
        self.overrides: dict[str, Any] = {}
        self.sessions: ExecSessions | None = None
        self._running = False
        self._wake = trio.Event()

    @classmethod
    def of(cls, thread: LoadedThread, services: Services) -> ThreadRuntime:
        runtime = thread.turn_state
        if not isinstance(runtime, ThreadRuntime):
            runtime = cls(thread, services)
            thread.turn_state = runtime
        return runtime

    @property
    def active_turn(self) -> RunningTurn | None:
        turn = self.current
        return turn if turn is not None and not turn.finishing else None

    def submit(self, turn: RunningTurn) -> None:
        """Run `turn` next (the caller checked that no other turn is active)."""
        self.current = turn
        if self._running:
            self._wake.set()
            return
        self._running = True
        try:
            self.services.start_detached(self.run, name=f"thread {self.thread.id}")
        except BaseException:
            self._running = False
            self.current = None
            raise

    async def run(self) -> None:
        """The thread's work: turns one after the other, and the sessions they leave running."""
        sessions: ExecSessions | None = None
        try:
            async with trio.open_nursery() as nursery:
                sessions = self.sessions = ExecSessions(nursery)
                nursery.start_soon(self._stop_on_unload, nursery.cancel_scope, name="unload watcher")
                while True:
                    turn = self.current
                    if turn is not None and not turn.done.is_set():
                        await turn.run(self)
                        continue
                    if sessions.running == 0:
                        break
                    self._wake = trio.Event()
                    async with trio.open_nursery() as waiter:
                        waiter.start_soon(_set_when, self._wake.wait, waiter.cancel_scope)
                        waiter.start_soon(_set_when, sessions.wait_changed, waiter.cancel_scope)
                # decided to stop: from here on a new turn starts a new runtime task
                self._running = False
                nursery.cancel_scope.cancel()
        finally:
            self._running = False
            if self.sessions is sessions:
                self.sessions = None

    async def _stop_on_unload(self, scope: trio.CancelScope) -> None:
        await self.thread.unloaded.wait()
        log.info("thread %s unloaded; stopping its turn and commands", self.thread.id)
        scope.cancel()

    async def load_history(self) -> list[dict[str, Any]]:
        """The model conversation so far, rebuilt from the rollout the first time."""
        if self.history is None:
            history: list[dict[str, Any]] = []
            total: TokenUsage | None = None
            for line in await self.thread.read_rollout():
                payload = line.get("payload") or {}
                if line.get("type") == "response_item" and isinstance(payload, dict):
                    history.append(dict(payload))
                elif line.get("type") == "event_msg" and payload.get("type") == "token_count":
                    info = payload.get("info") or {}
                    usage = info.get("total_token_usage") if isinstance(info, dict) else None
                    if isinstance(usage, dict):
                        total = _usage_from_snake(usage)
            self.history = _close_dangling_calls(history)
            if self.total_usage is None:
                self.total_usage = total
        return self.history


async def _set_when(wait: Any, scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


def _usage_from_snake(usage: Mapping[str, Any]) -> TokenUsage:
    def num(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) else 0

    return TokenUsage(
        num("input_tokens"),
        num("cached_input_tokens"),
        num("output_tokens"),
        num("reasoning_output_tokens"),
        num("total_tokens"),
    )


def _close_dangling_calls(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every tool call needs an output before the model sees the history again."""
    answered = {
        i.get("call_id")
        for i in history
        if i.get("type") in ("function_call_output", "custom_tool_call_output")
    }
    out: list[dict[str, Any]] = []
    for item in history:
        out.append(item)
        kind = item.get("type")
        if kind in ("function_call", "custom_tool_call") and item.get("call_id") not in answered:
            out.append(_call_output(kind, str(item.get("call_id")), "aborted"))
    return out


def _call_output(kind: str, call_id: str, text: ToolOutput) -> dict[str, Any]:
    output_type = "custom_tool_call_output" if kind == "custom_tool_call" else "function_call_output"
    return {"type": output_type, "call_id": call_id, "output": text}


def user_input_history_item(inputs: list[UserInput], cwd: Path) -> dict[str, Any] | None:
    """The user message as the model receives it (text, images); None for empty input."""
    content: list[dict[str, Any]] = []
    for entry in inputs:
        wire = entry.wire
        if entry.type == "text":
            content.append({"type": "input_text", "text": wire["text"]})
        elif entry.type == "image" and isinstance(wire.get("url"), str):
            content.append({"type": "input_image", "image_url": wire["url"]})
        elif entry.type == "localImage":
            url = _data_url(Path(wire["path"]) if os.path.isabs(wire["path"]) else cwd / wire["path"])
            if url is not None:
                content.append({"type": "input_image", "image_url": url})
        elif entry.type in ("skill", "mention"):
            content.append({"type": "input_text", "text": f"[{entry.type}: {wire['name']} ({wire['path']})]"})
    if not content:
        return None
    return {"type": "message", "role": "user", "content": content}


#: bytes of a local image sent to the model.
MAX_IMAGE_BYTES = 20 * 1024 * 1024


def _data_url(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_IMAGE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# ---------------------------------------------------------------------------- a turn
class RunningTurn:
    """One turn: its state, its cancel scope, its notifications."""

    def __init__(
        self,
        thread: LoadedThread,
        services: Services,
        settings: TurnSettings,
        inputs: list[UserInput],
        *,
        client_user_message_id: str | None = None,
        turn_id: str | None = None,
        tool_providers: Sequence[ToolProvider] = (),
    ) -> None:
        self.thread = thread
        self.services = services
        self.settings = settings
        #: tool families beyond the built-in ones (MCP servers…), see `codex_trio.core.tools`.
        self.tool_providers = tuple(tool_providers)
        self._extra_tools: list[dict[str, Any]] = []
        self.id = turn_id or uuid7()
        self.scope = trio.CancelScope()
        #: set by the request that started the turn once its response is queued.
        self.ready = trio.Event()
        self.done = trio.Event()
        #: True from the moment the turn stops accepting input (it is being finished).
        self.finishing = False
        self.started_at_ms = now_ms()
        self.completed_at_ms: int | None = None
        self.status = "inProgress"
        self.error: TurnError | None = None
        self.last_agent_message: AgentMessageItem | None = None
        self._pending: list[tuple[list[UserInput], str | None]] = [(inputs, client_user_message_id)]
        self._sample_scope: trio.CancelScope | None = None
        self._runtime: ThreadRuntime | None = None
        self._baselines: dict[Path, str | None] = {}
        self._current_files: dict[Path, Path] = {}
        #: the trace context of the request that started the turn (see `codex_trio.tracing`).
        self._trace = tracing.capture()

    # ------------------------------------------------------------------ control (from requests)
    def interrupt(self) -> None:
        self.scope.cancel()

    def steer(self, inputs: list[UserInput], client_user_message_id: str | None) -> None:
        """Add input to the running turn; an answer being streamed is dropped and re-asked."""
        self._pending.append((inputs, client_user_message_id))
        if self._sample_scope is not None:
            self._sample_scope.cancel()

    def wire(self) -> dict[str, Any]:
        """The Turn as the `turn/start` response shows it."""
        return Turn(self.id).to_wire()

    # ------------------------------------------------------------------ notifications
    async def _notify(self, method: str, params: dict[str, Any]) -> None:
        await self.thread.notify_subscribers(method, params)

    async def _item_started(self, item: Any) -> None:
        await self._notify(
            "item/started",
            {
                "item": item.to_wire(),
                "threadId": self.thread.id,
                "turnId": self.id,
                "startedAtMs": item.started_at_ms,
            },
        )

    async def _item_completed(self, item: Any) -> None:
        await self._notify(
            "item/completed",
            {
                "item": item.to_wire(),
                "threadId": self.thread.id,
                "turnId": self.id,
                "contentTokenCount": None,
                "completedAtMs": item.completed_at_ms,
            },
        )

    def _item_line(self, item: Any) -> dict[str, Any]:
        return rollout.item_completed(
            self.thread.id, self.id, item.to_wire(), item.started_at_ms, item.completed_at_ms
        )

    def _turn(self, **changes: Any) -> dict[str, Any]:
        return Turn(
            self.id,
            status=self.status,
            error=self.error,
            started_at=self.started_at_ms // 1000,
            completed_at=self.completed_at_ms // 1000 if self.completed_at_ms else None,
            duration_ms=self.completed_at_ms - self.started_at_ms if self.completed_at_ms else None,
            **changes,
        ).to_wire()

    # ------------------------------------------------------------------ the task
    async def run(self, runtime: ThreadRuntime) -> None:
        """The whole turn, under the span of the `turn/start` that created it."""
        attributes = {"turn.id": self.id, "model": self.settings.model}
        if self.settings.effort:
            attributes["codex.turn.reasoning_effort"] = self.settings.effort
        with (
            log_store.thread_scope(self.thread.id),
            tracing.attach(self._trace),
            tracing.span("session_task.turn", attributes),
        ):
            await self._run(runtime)

    async def _run(self, runtime: ThreadRuntime) -> None:
        """Always ends with `turn/completed` (unless the server is stopping hard)."""
        self._runtime = runtime
        outcome: Outcome | None = None
        try:
            with self.scope:
                await self.ready.wait()
                outcome = await self._main(runtime)
            if self.scope.cancelled_caught:
                outcome = _Interrupted()
        except TurnInterrupted:
            outcome = _Interrupted()
        except ModelError as exc:
            outcome = _Failed(exc)
        except BaseExceptionGroup as group:
            outcome = _from_group(group)
            if outcome is None:
                raise
        except Exception as exc:
            log.exception("turn %s failed", self.id)
            outcome = _Failed(ModelError(f"internal error: {exc}", "other"))
        finally:
            self.finishing = True
            with trio.CancelScope(shield=True), trio.move_on_after(FINALIZE_TIMEOUT):
                await self._finish(runtime, outcome if outcome is not None else _Interrupted())
            self.done.set()

    async def _main(self, runtime: ThreadRuntime) -> Outcome:
        await self.thread.set_status(ACTIVE)
        await self._notify("turn/started", {"threadId": self.thread.id, "turn": self._turn()})
        await self.thread.append_rollout(
            [
                rollout.task_started(self.id, self.started_at_ms // 1000, self._context_window()),
                rollout.turn_context(self._context_record()),
            ]
        )
        history = await runtime.load_history()
        for provider in self.tool_providers:
            self._extra_tools.extend(await provider.tool_specs(self._tool_turn()))
        async with open_model_client(self.settings.provider, self.settings.login) as client:
            while True:
                await self._absorb_input(history)
                sample = await self._sample_with_retries(client, history)
                if sample is None:
                    continue  # steered while streaming: ask again with the new input
                history.extend(sample.history)
                if sample.rollout:
                    await self.thread.append_rollout(sample.rollout)
                for call in sample.calls:
                    await self._run_tool(runtime, history, call)
                if sample.usage is not None:
                    await self._report_usage(runtime, sample.usage)
                if not sample.calls and not self._pending:
                    return _Completed()

    async def _absorb_input(self, history: list[dict[str, Any]]) -> None:
        """Turn queued user input (the start's, then steers) into items and history."""
        while self._pending:
            inputs, client_id = self._pending.pop(0)
            entry = await trio.to_thread.run_sync(
                user_input_history_item, inputs, self.settings.cwd, limiter=FILE_WORK
            )
            if entry is None:
                continue
            at = now_ms()
            item = UserMessageItem(uuid7(), [i.wire for i in inputs], client_id, at, None)
            await self._item_started(item)
            done = attrs.evolve(item, completed_at_ms=at)
            await self._item_completed(done)
            history.append(entry)
            preview = next((i.text for i in inputs if i.text), None)
            if preview:
                self.thread.mark_user_content(preview)
            await self.thread.append_rollout([rollout.response_item(entry), self._item_line(done)])

    # ------------------------------------------------------------------ sampling
    async def _sample_with_retries(
        self, client: model_client.ModelClient, history: list[dict[str, Any]]
    ) -> _Sample | None:
        retries = self.settings.provider.stream_max_retries
        attempt = 0
        while True:
            try:
                return await self._sample_once(client, history)
            except ModelError as exc:
                if not exc.retryable or attempt >= retries:
                    raise
                attempt += 1
                await self._notify(
                    "error",
                    {
                        "error": TurnError(
                            f"Reconnecting... {attempt}/{retries}",
                            {"responseStreamDisconnected": {"httpStatusCode": exc.http_status}},
                            exc.message,
                        ).to_wire(),
                        "willRetry": True,
                        "threadId": self.thread.id,
                        "turnId": self.id,
                    },
                )
                await trio.sleep(model_client.backoff_delay(attempt))

    async def _sample_once(
        self, client: model_client.ModelClient, history: list[dict[str, Any]]
    ) -> _Sample | None:
        sample = _Sample()
        body = request_body(self._request_spec(history))
        headers = self._request_headers()
        with trio.CancelScope() as scope, tracing.span("codex.sampling", self._span_attributes("sampling")):
            self._sample_scope = scope
            try:
                await client.stream(body, headers, lambda event: self._on_event(sample, event))
            finally:
                self._sample_scope = None
        if scope.cancelled_caught:
            return None
        return sample

    async def _on_event(self, sample: _Sample, event: ResponseEvent) -> None:
        if isinstance(event, OutputTextDelta):
            # The hot path. The final text comes from `output_item.done`, so deltas are only
            # forwarded; one without an opened item is dropped, as the reference does.
            if event.delta and event.item_id in sample.open_messages:
                await self.thread.notify_subscribers(
                    "item/agentMessage/delta",
                    {
                        "threadId": self.thread.id,
                        "turnId": self.id,
                        "itemId": event.item_id,
                        "delta": event.delta,
                    },
                )
                # Let the connections' writers send it now, before this task goes back down
                # through the HTTP stack for the next chunk (shortens the delta's latency).
                await trio.lowlevel.checkpoint()
        elif isinstance(event, OutputItemAdded):
            await self._on_item_added(sample, event.item)
        elif isinstance(event, OutputItemDone):
            await self._on_item_done(sample, event.item)
        elif isinstance(event, ReasoningSummaryDelta | ReasoningSummaryPartAdded):
            reasoning = sample.open_reasoning.get(event.item_id or "")
            if reasoning is not None:
                params: dict[str, Any] = {
                    "threadId": self.thread.id,
                    "turnId": self.id,
                    "itemId": reasoning.id,
                }
                if isinstance(event, ReasoningSummaryDelta):
                    method = "item/reasoning/summaryTextDelta"
                    params["delta"] = event.delta
                else:
                    method = "item/reasoning/summaryPartAdded"
                params["summaryIndex"] = event.summary_index
                await self._notify(method, params)
        elif isinstance(event, Completed):
            sample.usage = event.usage

    async def _on_item_added(self, sample: _Sample, item: dict[str, Any]) -> None:
        kind, item_id = item.get("type"), item.get("id")
        if not isinstance(item_id, str):
            return
        if kind == "message" and item.get("role", "assistant") == "assistant":
            message_item = AgentMessageItem(item_id, started_at_ms=now_ms())
            sample.open_messages[item_id] = message_item
            await self._item_started(message_item)
        elif kind == "reasoning":
            reasoning = ReasoningItem(item_id, started_at_ms=now_ms())
            sample.open_reasoning[item_id] = reasoning
            await self._item_started(reasoning)

    async def _on_item_done(self, sample: _Sample, item: dict[str, Any]) -> None:
        kind = item.get("type")
        raw_id = item.get("id")
        item_id = raw_id if isinstance(raw_id, str) else f"msg_{secrets.token_hex(12)}"
        if kind == "message" and item.get("role", "assistant") == "assistant":
            text = "".join(
                part.get("text", "")
                for part in item.get("content") or []
                if isinstance(part, dict) and part.get("type") in ("output_text", "text")
            )
            opened = sample.open_messages.pop(item_id, None)
            if opened is None:
                opened = AgentMessageItem(item_id, started_at_ms=now_ms())
                await self._item_started(opened)
            phase = item.get("phase") if isinstance(item.get("phase"), str) else None
            done = attrs.evolve(opened, text=text, phase=phase, completed_at_ms=now_ms())
            await self._item_completed(done)
            self.last_agent_message = done
            sample.rollout.append(self._item_line(done))
            sample.history.append(item)
            sample.rollout.append(rollout.response_item(item))
        elif kind == "reasoning":
            summary = [p.get("text", "") for p in item.get("summary") or [] if isinstance(p, dict)]
            content = [p.get("text", "") for p in item.get("content") or [] if isinstance(p, dict)]
            opened_reasoning = sample.open_reasoning.pop(item_id, None)
            if opened_reasoning is None:
                opened_reasoning = ReasoningItem(item_id, started_at_ms=now_ms())
                await self._item_started(opened_reasoning)
            finished = attrs.evolve(
                opened_reasoning, summary=summary, content=content, completed_at_ms=now_ms()
            )
            await self._item_completed(finished)
            sample.rollout.append(self._item_line(finished))
            sample.history.append(item)
            sample.rollout.append(rollout.response_item(item))
        elif kind in ("function_call", "custom_tool_call"):
            call_id = item.get("call_id")
            name = item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                return
            arguments = item.get("arguments") if kind == "function_call" else item.get("input")
            namespace = item.get("namespace") if isinstance(item.get("namespace"), str) else None
            text = arguments if isinstance(arguments, str) else ""
            sample.calls.append(_Call(kind, call_id, name, text, namespace))
            sample.history.append(item)
            sample.rollout.append(rollout.response_item(item))

    def _request_spec(self, history: list[dict[str, Any]]) -> RequestSpec:
        s = self.settings
        family = model_family(s.model)
        context = [message("developer", permissions_text(s.approval_policy, s.sandbox_policy))]
        if s.developer_instructions:
            context.append(message("developer", s.developer_instructions))
        context.append(message("user", environment_context(str(s.cwd), default_shell())))
        return RequestSpec(
            model=s.model,
            family=family,
            thread_id=self.thread.id,
            instructions=s.base_instructions or BASE_INSTRUCTIONS,
            context=context,
            history=history,
            tools=tools_for(family, self._extra_tools),
            effort=s.effort,
            summary=s.summary,
            output_schema=s.output_schema,
            client_metadata={"thread_id": self.thread.id, "turn_id": self.id},
        )

    def _request_headers(self) -> dict[str, str]:
        metadata = orjson.dumps(
            {
                "session_id": self.thread.id,
                "thread_id": self.thread.id,
                "turn_id": self.id,
                "request_kind": "turn",
                "model": self.settings.model,
            }
        ).decode()
        return {
            "originator": self.settings.originator,
            "user-agent": self.settings.user_agent,
            "session-id": self.thread.id,
            "thread-id": self.thread.id,
            "x-client-request-id": self.thread.id,
            "x-codex-turn-metadata": metadata,
        }

    def _context_window(self) -> int:
        return usable_context_window(model_family(self.settings.model), self.settings.context_window)

    def _context_record(self) -> dict[str, Any]:
        s = self.settings
        return {
            "turn_id": self.id,
            "cwd": str(s.cwd),
            "approval_policy": s.approval_policy,
            "sandbox_policy": dict(s.sandbox_policy),
            "model": s.model,
            "effort": s.effort,
            "summary": s.summary,
        }

    async def _report_usage(self, runtime: ThreadRuntime, last: TokenUsage) -> None:
        total = last if runtime.total_usage is None else runtime.total_usage + last
        runtime.total_usage = total
        await self._notify(
            "thread/tokenUsage/updated",
            {
                "threadId": self.thread.id,
                "turnId": self.id,
                "tokenUsage": {
                    "total": _usage_wire(total),
                    "last": _usage_wire(last),
                    "modelContextWindow": self._context_window(),
                },
            },
        )
        self.services.broadcaster.broadcast("account/rateLimits/updated", RATE_LIMITS)
        await self.thread.append_rollout(
            [
                rollout.token_count(
                    {
                        "total_token_usage": _usage_snake(total),
                        "last_token_usage": _usage_snake(last),
                        "model_context_window": self._context_window(),
                    }
                )
            ]
        )

    # ------------------------------------------------------------------ tools
    def _tool_turn(self) -> ToolTurn:
        s = self.settings
        return ToolTurn(self.thread, self.id, s.approval_policy, s.sandbox_policy, s.cwd)

    def _provider_for(self, call: _Call) -> ToolProvider | None:
        if call.namespace is None and call.name in BUILTIN_TOOLS:
            return None
        tool_call = ToolCall(call.call_id, call.name, call.arguments, call.namespace)
        turn = self._tool_turn()
        return next((p for p in self.tool_providers if p.handles(turn, tool_call)), None)

    def _span_attributes(self, phase: str) -> dict[str, str]:
        return {"codex.turn.phase": phase, "conversation.id": self.thread.id, "turn.id": self.id}

    async def _run_tool(self, runtime: ThreadRuntime, history: list[dict[str, Any]], call: _Call) -> None:
        """Run one call (in a span named after the tool, as the reference names it)."""
        attributes = {**self._span_attributes("tool"), "tool_name": call.name, "call_id": call.call_id}
        with tracing.span(call.name, attributes):
            await self._run_tool_traced(runtime, history, call)

    async def _run_tool_traced(
        self, runtime: ThreadRuntime, history: list[dict[str, Any]], call: _Call
    ) -> None:
        """Put the call's output into the history (and the rollout) right away."""
        try:
            text: ToolOutput
            provider = self._provider_for(call)
            if provider is not None:
                text = await provider.call(
                    self._tool_turn(), ToolCall(call.call_id, call.name, call.arguments, call.namespace)
                )
            elif call.name == "exec_command":
                text = await self._exec_command(runtime, call)
            elif call.name == "write_stdin":
                text = await self._write_stdin(runtime, call)
            elif call.name == "apply_patch":
                text = await self._apply_patch(runtime, call)
            else:
                text = f"unsupported call: {call.name}"
        except TurnInterrupted:
            output = _call_output(call.kind, call.call_id, "aborted by user")
            history.append(output)
            with trio.CancelScope(shield=True):
                await self.thread.append_rollout([rollout.response_item(output)])
            raise
        output = _call_output(call.kind, call.call_id, text)
        history.append(output)
        await self.thread.append_rollout([rollout.response_item(output)])

    async def _exec_command(self, runtime: ThreadRuntime, call: _Call) -> str:
        try:
            raw = orjson.loads(call.arguments or "{}")
            args = parse_exec_args(raw if isinstance(raw, dict) else {})
        except (orjson.JSONDecodeError, ExecToolError) as exc:
            return f"failed to parse function arguments: {exc}"
        cwd = args.cwd(self.settings.cwd)
        display = args.display()
        item = CommandExecutionItem(
            call.call_id, display, str(cwd), command_actions(args.cmd), started_at_ms=now_ms()
        )
        argv = args.argv()
        needs = approvals_mod.command_needs_approval(
            self.settings.approval_policy,
            self.settings.sandbox_policy,
            args.cmd,
            argv,
            display,
            escalated=args.escalated,
            approvals=runtime.approvals,
        )
        if needs:
            await self.thread.set_status(approvals_mod.WAITING)
            await self._item_started(item)
            amendment = args.prefix_rule or approvals_mod.proposed_amendment(args.cmd, argv)
            params = CommandApprovalParams(
                self.thread.id,
                self.id,
                call.call_id,
                item.started_at_ms or now_ms(),
                display,
                str(cwd),
                item.command_actions,
                amendment,
                ["accept", {"acceptWithExecpolicyAmendment": {"execpolicy_amendment": amendment}}, "cancel"],
                reason=args.justification,
            ).to_wire()
            answer = await approvals_mod.ask(
                self.thread,
                self.services.broadcaster,
                "item/commandExecution/requestApproval",
                params,
                set_waiting=False,
            )
            await self.thread.set_status(ACTIVE)
            if answer.decision in ("decline", "cancel"):
                declined = attrs.evolve(item, status="declined", completed_at_ms=now_ms())
                await self._item_completed(declined)
                await self.thread.append_rollout([self._item_line(declined)])
                if answer.decision == "cancel":
                    raise TurnInterrupted()
                return "exec_command failed: the user rejected this command"
            if answer.decision == "acceptForSession":
                runtime.approvals.commands.add(display)
            if answer.amendment:
                runtime.approvals.prefixes.append(tuple(answer.amendment))
        else:
            await self._item_started(item)
        sessions = runtime.sessions
        assert sessions is not None, "tools run inside the thread runtime"
        began = time.monotonic()
        output_parts: list[str] = []

        async def stream(text: str) -> None:
            output_parts.append(text)
            await self._notify(
                "item/commandExecution/outputDelta",
                {"threadId": self.thread.id, "turnId": self.id, "itemId": call.call_id, "delta": text},
            )

        try:
            session = await sessions.start(args, cwd)
        except ExecToolError as exc:
            failed = attrs.evolve(item, status="failed", completed_at_ms=now_ms())
            await self._item_completed(failed)
            return f"exec_command failed: {exc}"
        session.listen(stream)
        try:
            result = await wait_for(session, args.yield_time_ms)
        finally:
            session.listen(None)
        duration = int((time.monotonic() - began) * 1000)
        status: CommandStatus = "completed"
        if result.error is not None or result.exit_code not in (None, 0):
            status = "failed"
        done = attrs.evolve(
            item,
            status=status,
            source="unifiedExecStartup",
            process_id=str(session.pid) if session.pid is not None else None,
            aggregated_output=result.output.decode("utf-8", "replace")
            if result.error is None
            else result.error,
            exit_code=result.exit_code,
            duration_ms=duration,
            completed_at_ms=now_ms(),
        )
        await self._item_completed(done)
        await self.thread.append_rollout([self._item_line(done)])
        return result.text_for_model(args.max_output_tokens)

    async def _write_stdin(self, runtime: ThreadRuntime, call: _Call) -> str:
        try:
            raw = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError as exc:
            return f"failed to parse function arguments: {exc}"
        if not isinstance(raw, dict) or not isinstance(raw.get("session_id"), int | float):
            return "failed to parse function arguments: missing field `session_id`"
        sessions = runtime.sessions
        session = sessions.get(int(raw["session_id"])) if sessions is not None else None
        if session is None:
            return f"write_stdin failed: Unknown session id {int(raw['session_id'])}"
        chars = raw.get("chars") if isinstance(raw.get("chars"), str) else ""
        if chars:
            try:
                await session.write(chars)
            except ExecToolError as exc:
                return f"write_stdin failed: {exc}"
            default, high = DEFAULT_WRITE_YIELD_MS, MAX_YIELD_MS
        else:
            default, high = DEFAULT_POLL_YIELD_MS, MAX_POLL_YIELD_MS
        value = raw.get("yield_time_ms")
        yield_ms = int(min(max(value, MIN_YIELD_MS), high)) if isinstance(value, int | float) else default
        tokens = raw.get("max_output_tokens")
        budget = int(tokens) if isinstance(tokens, int | float) and tokens > 0 else DEFAULT_MAX_OUTPUT_TOKENS
        result = await wait_for(session, yield_ms)
        return result.text_for_model(budget)

    async def _apply_patch(self, runtime: ThreadRuntime, call: _Call) -> str:
        text = call.arguments
        if call.kind == "function_call":
            try:
                raw = orjson.loads(text or "{}")
            except orjson.JSONDecodeError as exc:
                return f"failed to parse function arguments: {exc}"
            text = raw.get("input", "") if isinstance(raw, dict) else ""
        began = time.monotonic()
        cwd = self.settings.cwd
        try:
            hunks = parse_patch(text)
            plans = await trio.to_thread.run_sync(plan_patch, hunks, cwd, limiter=FILE_WORK)
        except PatchError as exc:
            return f"apply_patch verification failed: {exc}"
        changes = [_file_change(p) for p in plans]
        item = FileChangeItem(call.call_id, changes, started_at_ms=now_ms())
        await self._item_started(item)
        targets = [p.path for p in plans] + [p.move_to for p in plans if p.move_to is not None]
        if approvals_mod.patch_needs_approval(
            self.settings.approval_policy, self.settings.sandbox_policy, targets, cwd, runtime.approvals
        ):
            params = FileChangeApprovalParams(self.thread.id, self.id, call.call_id, now_ms()).to_wire()
            answer = await approvals_mod.ask(
                self.thread, self.services.broadcaster, "item/fileChange/requestApproval", params
            )
            if answer.decision in ("decline", "cancel"):
                declined = attrs.evolve(item, status="declined", completed_at_ms=now_ms())
                await self._item_completed(declined)
                await self.thread.append_rollout([self._item_line(declined)])
                if answer.decision == "cancel":
                    raise TurnInterrupted()
                return "patch rejected: the user declined these changes"
            if answer.decision == "acceptForSession":
                runtime.approvals.paths.update(targets)
        for plan in plans:
            self._baselines.setdefault(plan.path, plan.old_content)
            if plan.move_to is not None:
                self._baselines.setdefault(plan.move_to, None)
        try:
            summary = await trio.to_thread.run_sync(apply_plan, plans, limiter=FILE_WORK)
        except OSError as exc:
            failed = attrs.evolve(item, status="failed", completed_at_ms=now_ms())
            await self._item_completed(failed)
            await self.thread.append_rollout([self._item_line(failed)])
            return f"apply_patch failed: {exc}"
        done = attrs.evolve(item, status="completed", completed_at_ms=now_ms())
        await self._item_completed(done)
        await self.thread.append_rollout([self._item_line(done)])
        diff = await trio.to_thread.run_sync(_turn_diff, dict(self._baselines), cwd, limiter=FILE_WORK)
        if diff:
            await self._notify(
                "turn/diff/updated", {"threadId": self.thread.id, "turnId": self.id, "diff": diff}
            )
        wall = time.monotonic() - began
        return f"Exit code: 0\nWall time: {wall:.1f} seconds\nOutput:\n{summary}"

    # ------------------------------------------------------------------ the end
    async def _finish(self, runtime: ThreadRuntime, outcome: Outcome) -> None:
        self.completed_at_ms = now_ms()
        started_s, completed_s = self.started_at_ms // 1000, self.completed_at_ms // 1000
        duration = self.completed_at_ms - self.started_at_ms
        thread_id = self.thread.id
        if isinstance(outcome, _Completed):
            self.status = "completed"
            await self.thread.append_rollout(
                [
                    rollout.task_complete(
                        self.id,
                        self.last_agent_message.text if self.last_agent_message else None,
                        started_s,
                        completed_s,
                        duration,
                    )
                ],
                durable=True,
            )
            await self.thread.set_status(IDLE)
            items = [self.last_agent_message.to_wire()] if self.last_agent_message else []
            await self._notify(
                "turn/completed",
                {"threadId": thread_id, "turn": self._turn(items=items, items_view="summary")},
            )
        elif isinstance(outcome, _Interrupted):
            self.status = "interrupted"
            if runtime.history is not None:
                runtime.history[:] = _close_dangling_calls(runtime.history)
                marker = message("user", TURN_ABORTED_TEXT)
                runtime.history.append(marker)
                lines = [rollout.response_item(marker)]
            else:
                lines = []
            lines.append(rollout.turn_aborted(self.id, "interrupted", started_s, completed_s, duration))
            await self.thread.append_rollout(lines, durable=True)
            await self.thread.set_status(IDLE)
            await self._notify("turn/completed", {"threadId": thread_id, "turn": self._turn()})
        else:
            self.status = "failed"
            error = outcome.error
            self.error = TurnError(error.message, error.codex_error_info, error.additional_details)
            await self.thread.append_rollout(
                [
                    rollout.turn_error(self.id, error.message, error.codex_error_info),
                    rollout.task_complete(self.id, None, started_s, completed_s, duration),
                ],
                durable=True,
            )
            await self.thread.set_status(SYSTEM_ERROR)
            await self._notify(
                "error",
                {"error": self.error.to_wire(), "willRetry": False, "threadId": thread_id, "turnId": self.id},
            )
            await self._notify("turn/completed", {"threadId": thread_id, "turn": self._turn()})


def _from_group(group: BaseExceptionGroup[Any]) -> Outcome | None:
    """A single turn-ending exception wrapped by a nursery, as an outcome."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    if any(isinstance(leaf, trio.Cancelled) for leaf in leaves):
        return None
    for leaf in leaves:
        if isinstance(leaf, TurnInterrupted):
            return _Interrupted()
        if isinstance(leaf, ModelError):
            return _Failed(leaf)
    log.error("turn failed", exc_info=group)
    return _Failed(ModelError(f"internal error: {leaves[0] if leaves else group}", "other"))


def _file_change(plan: FilePlan) -> FileChange:
    kind: dict[str, Any] = {"type": plan.kind}
    if plan.kind == "update":
        kind["move_path"] = str(plan.move_to) if plan.move_to is not None else None
    return FileChange(str(plan.path), kind, plan.diff)


def _turn_diff(baselines: dict[Path, str | None], cwd: Path) -> str:
    plans = []
    for path, before in sorted(baselines.items()):
        try:
            after: str | None = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            after = None
        if before == after:
            continue
        if before is None:
            plans.append(FilePlan("add", path, None, after))
        elif after is None:
            plans.append(FilePlan("delete", path, before, None))
        else:
            plans.append(FilePlan("update", path, before, after))
    return git_diff(plans, cwd)


def _usage_wire(usage: TokenUsage) -> dict[str, int]:
    return {
        "totalTokens": usage.total_tokens,
        "inputTokens": usage.input_tokens,
        "cachedInputTokens": usage.cached_input_tokens,
        "cacheWriteInputTokens": 0,
        "outputTokens": usage.output_tokens,
        "reasoningOutputTokens": usage.reasoning_output_tokens,
    }


def _usage_snake(usage: TokenUsage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_input_tokens": 0,
        "output_tokens": usage.output_tokens,
        "reasoning_output_tokens": usage.reasoning_output_tokens,
        "total_tokens": usage.total_tokens,
    }
