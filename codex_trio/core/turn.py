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

This module is the loop and the mapping of model stream events to items. Tools are
`ToolProvider`s (`core.tools`): the built-in ones (`core.builtin_tools`) first, then the
families given to the turn (MCP); the conversation and token usage in their stored and wire
shapes are `core.history`'s; item notifications and rollout lines are `core.item_events`'s.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import orjson
import trio

from codex_trio import log_store, tracing
from codex_trio.config.effective import ProviderConfig
from codex_trio.config.shell_env import ShellEnvironmentPolicy
from codex_trio.core import collaboration, compaction, item_events, model_client
from codex_trio.core import history as conversation
from codex_trio.core.approvals import SessionApprovals
from codex_trio.core.builtin_tools import BuiltinTools
from codex_trio.core.exec_tool import ExecSessions, default_shell
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
    usable_context_window,
)
from codex_trio.core.tools import FILE_WORK, ToolCall, ToolOutput, ToolProvider, ToolTurn, TurnInterrupted
from codex_trio.ids import now_ms, uuid7
from codex_trio.protocol.account import RateLimitSnapshot, RateLimitsUpdated
from codex_trio.protocol.converter import unstructure
from codex_trio.protocol.items import (
    AgentMessageItem,
    ItemDelta,
    ReasoningItem,
    ReasoningSummaryTextDelta,
    UserMessageItem,
)
from codex_trio.protocol.items import (
    ReasoningSummaryPartAdded as SummaryPartAddedNotification,
)
from codex_trio.protocol.thread import ACTIVE, IDLE, SYSTEM_ERROR
from codex_trio.protocol.turns import (
    ErrorNotification,
    ThreadTokenUsage,
    TokenUsageUpdated,
    Turn,
    TurnError,
    TurnNotification,
    UserInput,
)
from codex_trio.records import by_value
from codex_trio.store import rollout
from codex_trio.threads import LoadedThread, TurnEnd

if TYPE_CHECKING:
    from codex_trio.services import Services

log = logging.getLogger(__name__)

#: seconds the end of an interrupted or cancelled turn may take (rollout line, notifications).
FINALIZE_TIMEOUT = 5.0


@by_value
@attrs.frozen(repr=False, eq=False)
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
    #: the collaboration mode (`{"mode", "settings"}`) whose instructions every request carries.
    collaboration_mode: Mapping[str, Any] | None = None
    service_tier: str | None = None
    #: tokens of context after which the conversation is compacted (None: the model's default).
    auto_compact_limit: int | None = None
    #: the variables of the server's environment that commands see.
    shell_environment: ShellEnvironmentPolicy = attrs.field(factory=ShellEnvironmentPolicy)


# ---------------------------------------------------------------------------- outcomes
@by_value
@attrs.frozen(repr=False, eq=False)
class _Completed:
    pass


@by_value
@attrs.frozen(repr=False, eq=False)
class _Interrupted:
    pass


@by_value
@attrs.frozen(repr=False, eq=False)
class _Failed:
    error: ModelError


Outcome = _Completed | _Interrupted | _Failed


class TurnBody(Protocol):
    """What a turn does instead of answering user input: compaction, a review, a user shell
    command. It runs between `turn/started` and `turn/completed`; raising ends the turn as the
    regular body would (TurnInterrupted, ModelError)."""

    async def run(self, turn: RunningTurn, runtime: ThreadRuntime) -> None: ...


@attrs.define(eq=False)
class _Sample:
    """What one model response produced, committed to history when it completed."""

    history: list[dict[str, Any]] = attrs.Factory(list)
    rollout: list[dict[str, Any]] = attrs.Factory(list)
    calls: list[ToolCall] = attrs.Factory(list)
    usage: TokenUsage | None = None
    rate_limits: RateLimitSnapshot | None = None
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
        #: usage of the last model response: how full the context is (auto-compaction).
        self.last_usage: TokenUsage | None = None
        self.current: RunningTurn | None = None
        #: turn/start overrides that stick for later turns (cwd, model, policies, effort…).
        self.overrides: dict[str, Any] = {}
        self.sessions: ExecSessions | None = None
        self._running = False
        self._wake = trio.Event()

    @classmethod
    def of(cls, thread: LoadedThread, services: Services) -> ThreadRuntime:
        """The thread's runtime, created on first use."""
        runtime = thread.turn_state
        if not isinstance(runtime, ThreadRuntime):
            runtime = cls(thread, services)
            thread.turn_state = runtime
        return runtime

    @property
    def active_turn(self) -> RunningTurn | None:
        """The turn still accepting input (None once it is finishing)."""
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
            self.history, total = conversation.from_rollout(await self.thread.read_rollout())
            if self.total_usage is None:
                self.total_usage = total
        return self.history


async def _set_when(wait: Any, scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


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
        body: TurnBody | None = None,
        hidden_items: Sequence[dict[str, Any]] = (),
    ) -> None:
        """`hidden_items` go into the model's history at the start without user-message
        items (a goal continuation's context); such a turn counts as automatic."""
        self.thread = thread
        #: None: the regular turn (the user's input, the model, tools); else see `TurnBody`.
        self.body = body
        #: False while a review converses: the reviewer's raw answer is not shown as a message.
        self.show_messages = True
        #: built-in tools this turn does not offer (a review does not edit files).
        self.excluded_tools: frozenset[str] = frozenset()
        self.services = services
        self.settings = settings
        #: tool families beyond the built-in ones (MCP servers…), see `codex_trio.core.tools`.
        self.tool_providers = tuple(tool_providers)
        #: the built-in tools, then `tool_providers`; a call goes to the first that handles it.
        self._providers: tuple[ToolProvider, ...] = ()
        self._tools: list[dict[str, Any]] = []
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
        self._hidden = list(hidden_items)
        #: total tokens of this turn's model responses (goal accounting).
        self.tokens_used = 0
        self._sample_scope: trio.CancelScope | None = None
        self._runtime: ThreadRuntime | None = None
        #: the trace context of the request that started the turn (see `codex_trio.tracing`).
        self._trace = tracing.capture()

    # ------------------------------------------------------------------ control (from requests)
    def interrupt(self) -> None:
        """Cancel the turn (`turn/interrupt`); it ends as interrupted."""
        self.scope.cancel()

    def steer(self, inputs: list[UserInput], client_user_message_id: str | None) -> None:
        """Add input to the running turn; an answer being streamed is dropped and re-asked."""
        self._pending.append((inputs, client_user_message_id))
        if self._sample_scope is not None:
            self._sample_scope.cancel()

    def wire(self) -> dict[str, Any]:
        """The Turn as the `turn/start` response shows it."""
        wire: dict[str, Any] = unstructure(Turn(self.id))
        return wire

    # ------------------------------------------------------------------ notifications
    async def _notify(self, method: str, params: Any) -> None:
        await self.thread.notify_subscribers(method, params)

    def _turn(self, **changes: Any) -> Turn:
        return Turn(
            self.id,
            status=self.status,
            error=self.error,
            started_at=self.started_at_ms // 1000,
            completed_at=self.completed_at_ms // 1000 if self.completed_at_ms else None,
            duration_ms=self.completed_at_ms - self.started_at_ms if self.completed_at_ms else None,
            **changes,
        )

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
                final = outcome if outcome is not None else _Interrupted()
                if isinstance(final, _Interrupted) and runtime.sessions is not None:
                    # The commands this turn started die with it, before turn/completed.
                    await runtime.sessions.stop_owned(self.id)
                try:
                    await self._finish(runtime, final)
                except Exception as exc:
                    # The store refused the turn's end (disk full, a lost lease): say so, never crash.
                    log.exception("turn %s: writing its end failed", self.id)
                    await self._finish_unwritten(exc)
            self.done.set()

    async def _main(self, runtime: ThreadRuntime) -> Outcome:
        await self.thread.set_status(ACTIVE)
        await self._notify("turn/started", TurnNotification(self.thread.id, self._turn()))
        await self.thread.append_rollout(
            [
                rollout.task_started(self.id, self.started_at_ms // 1000, self._context_window()),
                rollout.turn_context(self._context_record()),
            ]
        )
        if self.body is not None:
            await self.body.run(self, runtime)
            return _Completed()
        history = await runtime.load_history()
        if self._hidden:
            history.extend(self._hidden)
            await self.thread.append_rollout([rollout.response_item(i) for i in self._hidden])
        await self.converse(runtime, history)
        return _Completed()

    async def converse(self, runtime: ThreadRuntime, history: list[dict[str, Any]]) -> None:
        """Sample, run tools and sample again until the model answers without a call."""
        assert runtime.sessions is not None, "turns run inside the thread runtime"
        builtin = BuiltinTools(
            sessions=runtime.sessions,
            approvals=runtime.approvals,
            broadcaster=self.services.broadcaster,
            family=model_family(self.settings.model),
            settings=self.services.settings,
            shell_environment=self.settings.shell_environment,
        )
        self._providers = (builtin, *self.tool_providers)
        tool_turn = self._tool_turn()
        for provider in self._providers:
            specs = await provider.tool_specs(tool_turn)
            self._tools.extend(t for t in specs if t.get("name") not in self.excluded_tools)
        async with open_model_client(self.settings.provider, self.settings.login) as client:
            if history is runtime.history and compaction.needs_compaction(self, runtime):
                await compaction.compact(self, runtime, client, trigger="auto")
            while True:
                await self._absorb_input(history)
                sample = await self._sample_with_retries(client, history)
                if sample is None:
                    continue  # steered while streaming: ask again with the new input
                history.extend(sample.history)
                if sample.rollout:
                    await self.thread.append_rollout(sample.rollout)
                for call in sample.calls:
                    await self._run_tool(history, call)
                if sample.usage is not None:
                    await self.report_usage(runtime, sample.usage, sample.rate_limits)
                if not sample.calls and not self._pending:
                    return
                if history is runtime.history and compaction.needs_compaction(self, runtime):
                    await compaction.compact(self, runtime, client, trigger="auto")

    async def _absorb_input(self, history: list[dict[str, Any]]) -> None:
        """Turn queued user input (the start's, then steers) into items and history."""
        while self._pending:
            inputs, client_id = self._pending.pop(0)
            entry = await trio.to_thread.run_sync(
                conversation.user_input_item, inputs, self.settings.cwd, limiter=FILE_WORK
            )
            if entry is None:
                continue
            at = now_ms()
            item = UserMessageItem(uuid7(), [i.wire for i in inputs], client_id=client_id, started_at_ms=at)
            await item_events.started(self.thread, self.id, item)
            done = attrs.evolve(item, completed_at_ms=at)
            await item_events.completed(self.thread, self.id, done)
            history.append(entry)
            preview = next((i.text for i in inputs if i.text), None)
            if preview:
                self.thread.mark_user_content(preview)
            line = item_events.rollout_line(self.thread.id, self.id, done)
            await self.thread.append_rollout([rollout.response_item(entry), line])

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
                error = TurnError(
                    f"Reconnecting... {attempt}/{retries}",
                    {"responseStreamDisconnected": {"httpStatusCode": exc.http_status}},
                    exc.message,
                )
                await self._notify("error", ErrorNotification(error, True, self.thread.id, self.id))
                await trio.sleep(model_client.backoff_delay(attempt))

    async def _sample_once(
        self, client: model_client.ModelClient, history: list[dict[str, Any]]
    ) -> _Sample | None:
        sample = _Sample()
        body = request_body(self.request_spec(history))
        headers = self.request_headers()
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
            if event.delta and event.item_id in sample.open_messages and self.show_messages:
                await self.thread.notify_subscribers(
                    "item/agentMessage/delta", ItemDelta(self.thread.id, self.id, event.item_id, event.delta)
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
                ids = (self.thread.id, self.id, reasoning.id)
                if isinstance(event, ReasoningSummaryDelta):
                    await self._notify(
                        "item/reasoning/summaryTextDelta",
                        ReasoningSummaryTextDelta(*ids, event.delta, event.summary_index),
                    )
                else:
                    await self._notify(
                        "item/reasoning/summaryPartAdded",
                        SummaryPartAddedNotification(*ids, event.summary_index),
                    )
        elif isinstance(event, Completed):
            sample.usage = event.usage
            sample.rate_limits = event.rate_limits

    async def _on_item_added(self, sample: _Sample, item: dict[str, Any]) -> None:
        kind, item_id = item.get("type"), item.get("id")
        if not isinstance(item_id, str):
            return
        if kind == "message" and item.get("role", "assistant") == "assistant":
            message_item = AgentMessageItem(item_id, started_at_ms=now_ms())
            sample.open_messages[item_id] = message_item
            if self.show_messages:
                await item_events.started(self.thread, self.id, message_item)
        elif kind == "reasoning":
            reasoning = ReasoningItem(item_id, started_at_ms=now_ms())
            sample.open_reasoning[item_id] = reasoning
            await item_events.started(self.thread, self.id, reasoning)

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
                if self.show_messages:
                    await item_events.started(self.thread, self.id, opened)
            phase = item.get("phase") if isinstance(item.get("phase"), str) else None
            done = attrs.evolve(opened, text=text, phase=phase, completed_at_ms=now_ms())
            self.last_agent_message = done
            if self.show_messages:
                await item_events.completed(self.thread, self.id, done)
                sample.rollout.append(item_events.rollout_line(self.thread.id, self.id, done))
            sample.history.append(item)
            sample.rollout.append(rollout.response_item(item))
        elif kind == "reasoning":
            summary = [p.get("text", "") for p in item.get("summary") or [] if isinstance(p, dict)]
            content = [p.get("text", "") for p in item.get("content") or [] if isinstance(p, dict)]
            opened_reasoning = sample.open_reasoning.pop(item_id, None)
            if opened_reasoning is None:
                opened_reasoning = ReasoningItem(item_id, started_at_ms=now_ms())
                await item_events.started(self.thread, self.id, opened_reasoning)
            finished = attrs.evolve(
                opened_reasoning, summary=summary, content=content, completed_at_ms=now_ms()
            )
            await item_events.completed(self.thread, self.id, finished)
            sample.rollout.append(item_events.rollout_line(self.thread.id, self.id, finished))
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
            sample.calls.append(ToolCall(call_id, name, text, namespace, kind))
            sample.history.append(item)
            sample.rollout.append(rollout.response_item(item))

    def request_spec(self, history: list[dict[str, Any]]) -> RequestSpec:
        s = self.settings
        family = model_family(s.model)
        context = [message("developer", permissions_text(s.approval_policy, s.sandbox_policy))]
        if s.developer_instructions:
            context.append(message("developer", s.developer_instructions))
        mode_text = collaboration.developer_text(s.collaboration_mode)
        if mode_text is not None:
            context.append(message("developer", mode_text))
        context.append(message("user", environment_context(str(s.cwd), default_shell())))
        return RequestSpec(
            model=s.model,
            family=family,
            thread_id=self.thread.id,
            instructions=s.base_instructions or BASE_INSTRUCTIONS,
            context=context,
            history=history,
            tools=[dict(t) for t in self._tools],
            effort=s.effort,
            summary=s.summary,
            output_schema=s.output_schema,
            client_metadata={"thread_id": self.thread.id, "turn_id": self.id},
        )

    def request_headers(self, request_kind: str = "turn") -> dict[str, str]:
        metadata = orjson.dumps(
            {
                "session_id": self.thread.id,
                "thread_id": self.thread.id,
                "turn_id": self.id,
                "request_kind": request_kind,
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

    async def report_usage(
        self, runtime: ThreadRuntime, last: TokenUsage, limits: RateLimitSnapshot | None = None
    ) -> None:
        total = last if runtime.total_usage is None else runtime.total_usage + last
        runtime.total_usage = total
        runtime.last_usage = last
        self.tokens_used += last.total_tokens
        usage = ThreadTokenUsage(
            conversation.usage_breakdown(total), conversation.usage_breakdown(last), self._context_window()
        )
        await self._notify("thread/tokenUsage/updated", TokenUsageUpdated(self.thread.id, self.id, usage))
        # As the reference: after every response with usage, the limits its headers reported.
        self.services.broadcaster.broadcast(
            "account/rateLimits/updated", RateLimitsUpdated(limits or RateLimitSnapshot())
        )
        await self.thread.append_rollout(
            [
                rollout.token_count(
                    {
                        "total_token_usage": conversation.usage_record(total),
                        "last_token_usage": conversation.usage_record(last),
                        "model_context_window": self._context_window(),
                    }
                )
            ]
        )

    # ------------------------------------------------------------------ tools
    def _tool_turn(self) -> ToolTurn:
        s = self.settings
        return ToolTurn(self.thread, self.id, s.approval_policy, s.sandbox_policy, s.cwd)

    def _span_attributes(self, phase: str) -> dict[str, str]:
        return {"codex.turn.phase": phase, "conversation.id": self.thread.id, "turn.id": self.id}

    async def _run_tool(self, history: list[dict[str, Any]], call: ToolCall) -> None:
        """Run one call (in a span named after the tool, as the reference names it)."""
        attributes = {**self._span_attributes("tool"), "tool_name": call.name, "call_id": call.call_id}
        with tracing.span(call.name, attributes):
            await self._run_tool_traced(history, call)

    async def _run_tool_traced(self, history: list[dict[str, Any]], call: ToolCall) -> None:
        """Put the call's output into the history (and the rollout) right away."""
        turn = self._tool_turn()
        provider = next((p for p in self._providers if p.handles(turn, call)), None)
        try:
            output: ToolOutput
            if provider is not None:
                output = await provider.call(turn, call)
            else:
                output = f"unsupported call: {call.name}"
        except TurnInterrupted:
            aborted = conversation.call_output(call.kind, call.call_id, "aborted by user")
            history.append(aborted)
            with trio.CancelScope(shield=True):
                await self.thread.append_rollout([rollout.response_item(aborted)])
            raise
        item = conversation.call_output(call.kind, call.call_id, output)
        history.append(item)
        await self.thread.append_rollout([rollout.response_item(item)])

    # ------------------------------------------------------------------ the end
    async def _turn_ended(self) -> None:
        duration = (self.completed_at_ms or now_ms()) - self.started_at_ms
        end = TurnEnd(self.id, self.status, self.tokens_used, bool(self._hidden), duration)
        await self.thread.manager.turn_ended(self.thread, end)

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
            await self._turn_ended()
            await self.thread.set_status(IDLE)
            items = [self.last_agent_message] if self.last_agent_message else []
            # a turn without a model answer (compaction, a shell command) lists no items
            view = "notLoaded" if self.body is not None and not items else "summary"
            await self._notify(
                "turn/completed", TurnNotification(thread_id, self._turn(items=items, items_view=view))
            )
        elif isinstance(outcome, _Interrupted):
            self.status = "interrupted"
            if runtime.history is not None:
                runtime.history[:] = conversation.close_dangling_calls(runtime.history)
                marker = message("user", TURN_ABORTED_TEXT)
                runtime.history.append(marker)
                lines = [rollout.response_item(marker)]
            else:
                lines = []
            lines.append(rollout.turn_aborted(self.id, "interrupted", started_s, completed_s, duration))
            await self.thread.append_rollout(lines, durable=True)
            await self._turn_ended()
            await self.thread.set_status(IDLE)
            await self._notify("turn/completed", TurnNotification(thread_id, self._turn()))
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
            await self._turn_ended()
            await self.thread.set_status(SYSTEM_ERROR)
            await self._notify("error", ErrorNotification(self.error, False, thread_id, self.id))
            await self._notify("turn/completed", TurnNotification(thread_id, self._turn()))

    async def _finish_unwritten(self, exc: Exception) -> None:
        """The turn's end could not be stored: it failed, and the client is told why."""
        self.status = "failed"
        self.error = TurnError(f"the thread's history could not be saved: {exc}", "other", None)
        thread_id = self.thread.id
        await self.thread.set_status(SYSTEM_ERROR)
        await self._notify("error", ErrorNotification(self.error, False, thread_id, self.id))
        await self._notify("turn/completed", TurnNotification(thread_id, self._turn()))


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
