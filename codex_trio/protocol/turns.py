"""`turn/start`, `turn/steer`, `turn/interrupt`: params, the `Turn` object, turn notifications.

Pure: attrs classes the one converter (un)structures. `UserInput` keeps each input as the
client sent it (the wire form is what items echo back), after checking its `type` and
required fields the way serde would.
"""

from __future__ import annotations

from typing import Any

import attrs

from codex_trio.protocol.converter import WireError, describe, expected_variants, register_structure_hook
from codex_trio.records import by_value

USER_INPUT_TYPES = ("text", "image", "localImage", "audio", "localAudio", "skill", "mention")
_REQUIRED = {
    "text": ("text",),
    "localImage": ("path",),
    "localAudio": ("path",),
    "skill": ("name", "path"),
    "mention": ("name", "path"),
}


@by_value
@attrs.frozen(repr=False, eq=False)
class UserInput:
    """One `UserInput` of a request, validated; `wire` is what items carry."""

    type: str
    wire: dict[str, Any]

    @property
    def text(self) -> str | None:
        value = self.wire.get("text")
        return value if self.type == "text" and isinstance(value, str) else None


def _structure_user_input(value: Any, _: type) -> UserInput:
    if not isinstance(value, dict):
        raise WireError(f"invalid type: {describe(value)}, expected internally tagged enum UserInput")
    kind = value.get("type")
    if kind is None:
        raise WireError("missing field `type`")
    if kind not in USER_INPUT_TYPES:
        raise WireError(f"unknown variant `{kind}`, {expected_variants(USER_INPUT_TYPES)}")
    for key in _REQUIRED.get(kind, ()):
        if key not in value:
            raise WireError(f"missing field `{key}`")
        if not isinstance(value[key], str):
            raise WireError(f"invalid type: {describe(value[key])}, expected a string")
    wire = dict(value)
    if kind == "text":
        elements = wire.get("text_elements")
        wire = {
            "type": "text",
            "text": wire["text"],
            "text_elements": elements if isinstance(elements, list) else [],
        }
    return UserInput(kind, wire)


register_structure_hook(UserInput, _structure_user_input)


@by_value
@attrs.frozen(repr=False, eq=False)
class TurnStartParams:
    """`turn/start` params: the input and per-turn overrides that stick for later turns."""

    thread_id: str
    input: list[UserInput]
    client_user_message_id: str | None = None
    cwd: str | None = None
    approval_policy: Any = None
    approvals_reviewer: str | None = None
    sandbox_policy: Any = None
    model: str | None = None
    effort: str | None = None
    summary: str | None = None
    output_schema: Any = None
    collaboration_mode: Any = None
    service_tier: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class TurnSteerParams:
    """`turn/steer` params: more input for the running turn `expectedTurnId`."""

    thread_id: str
    input: list[UserInput]
    expected_turn_id: str
    client_user_message_id: str | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class TurnInterruptParams:
    """`turn/interrupt` params."""

    thread_id: str
    turn_id: str


@by_value
@attrs.frozen(repr=False, eq=False)
class TurnError:
    """Why a turn failed (also carried by `error` notifications)."""

    message: str
    codex_error_info: Any = None
    additional_details: str | None = None
    misalignment: None = attrs.field(default=None, kw_only=True)


@by_value
@attrs.frozen(repr=False, eq=False)
class Turn:
    """The wire `Turn`; `started_at` / `completed_at` are Unix seconds, `items` attrs items
    or wire dicts."""

    id: str
    root_turn_id: str = attrs.field(
        default=attrs.Factory(lambda self: self.id, takes_self=True), kw_only=True
    )
    items: list[Any] = attrs.Factory(list)
    items_view: str = "notLoaded"
    status: str = "inProgress"
    error: TurnError | None = None
    started_at: int | None = None
    completed_at: int | None = None
    duration_ms: int | None = None


# ---------------------------------------------------------------------------- notifications
@by_value
@attrs.frozen(repr=False, eq=False)
class TurnNotification:
    """`turn/started` and `turn/completed`."""

    thread_id: str
    turn: Turn


@by_value
@attrs.frozen(repr=False, eq=False)
class ErrorNotification:
    """`error`: a turn's failure, or a retry about to happen (`will_retry`)."""

    error: TurnError
    will_retry: bool
    thread_id: str
    turn_id: str


@by_value
@attrs.frozen(repr=False, eq=False)
class TurnDiffUpdated:
    """`turn/diff/updated`: the turn's changes so far as one unified diff."""

    thread_id: str
    turn_id: str
    diff: str


@by_value
@attrs.frozen(repr=False, eq=False)
class TokenUsageBreakdown:
    """Token counts of one request (`last`) or of the thread so far (`total`)."""

    total_tokens: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_input_tokens: int
    output_tokens: int
    reasoning_output_tokens: int


@by_value
@attrs.frozen(repr=False, eq=False)
class ThreadTokenUsage:
    """The thread's token usage: the whole thread, the last request, the context window."""

    total: TokenUsageBreakdown
    last: TokenUsageBreakdown
    model_context_window: int | None


@by_value
@attrs.frozen(repr=False, eq=False)
class TokenUsageUpdated:
    """`thread/tokenUsage/updated`, after every model response."""

    thread_id: str
    turn_id: str
    token_usage: ThreadTokenUsage
