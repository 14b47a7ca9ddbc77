"""Rate-limit snapshots, as `account/rateLimits/updated` and `account/rateLimits/read` carry them.

Two sources, both as the reference reads them:

* the `x-<limit>-*` headers of a Responses answer (`x-codex-primary-used-percent`, `…-window-minutes`,
  `…-reset-at`, the same for `secondary`, `x-codex-credits-*`, `x-<limit>-limit-name`); the
  snapshot of the active limit (`x-codex-active-limit`, default `codex`) is announced after each
  response. `codex.rate_limits` events in an HTTP event stream are ignored, as the reference
  ignores them there;
* the ChatGPT backend's `wham/usage` answer (`rate_limit.primary_window.used_percent`, …), which
  `account/rateLimits/read` fetches.

Percentages are whole numbers on the wire (the reference rounds `12.5` to `13`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from codex_trio.protocol.account import CreditsSnapshot, RateLimitSnapshot, RateLimitWindow

DEFAULT_LIMIT_ID = "codex"
ACTIVE_LIMIT_HEADER = "x-codex-active-limit"


def window(used_percent: float, window_minutes: int | None, resets_at: int | None) -> RateLimitWindow:
    return RateLimitWindow(math.floor(used_percent + 0.5), window_minutes, resets_at)


# ---------------------------------------------------------------------------- headers
def from_headers(headers: Mapping[str, str]) -> RateLimitSnapshot:
    """The active limit's snapshot from a Responses answer's headers (all null without any)."""
    lower = {k.lower(): v for k, v in headers.items()}
    active = (lower.get(ACTIVE_LIMIT_HEADER) or "").strip() or DEFAULT_LIMIT_ID
    limit_id = active.lower().replace("-", "_")
    prefix = "x-" + limit_id.replace("_", "-")
    name = (lower.get(f"{prefix}-limit-name") or "").strip() or None
    return RateLimitSnapshot(
        limit_id,
        limit_name=name,
        primary=_header_window(lower, f"{prefix}-primary"),
        secondary=_header_window(lower, f"{prefix}-secondary"),
        credits=_header_credits(lower, "x-codex-credits"),
    )


def _header_window(headers: Mapping[str, str], prefix: str) -> RateLimitWindow | None:
    used = _float(headers.get(f"{prefix}-used-percent"))
    if used is None:
        return None
    minutes, reset_at = _int(headers.get(f"{prefix}-window-minutes")), _int(headers.get(f"{prefix}-reset-at"))
    return window(used, minutes, reset_at)


def _header_credits(headers: Mapping[str, str], prefix: str) -> CreditsSnapshot | None:
    has_credits = _bool(headers.get(f"{prefix}-has-credits"))
    if has_credits is None:
        return None
    balance = (headers.get(f"{prefix}-balance") or "").strip() or None
    return CreditsSnapshot(has_credits, bool(_bool(headers.get(f"{prefix}-unlimited"))), balance)


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _int(value: str | None) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def _bool(value: str | None) -> bool | None:
    text = (value or "").strip().lower()
    return {"true": True, "1": True, "false": False, "0": False}.get(text)


# ---------------------------------------------------------------------------- wham/usage
def from_usage(payload: Any) -> tuple[RateLimitSnapshot, dict[str, RateLimitSnapshot]]:
    """(the `codex` snapshot, every snapshot by limit id) from a `wham/usage` answer."""
    body = payload if isinstance(payload, dict) else {}
    plan = body.get("plan_type") if isinstance(body.get("plan_type"), str) else None
    credits = _usage_credits(body.get("credits"))
    main = _usage_snapshot(DEFAULT_LIMIT_ID, None, body.get("rate_limit"), credits, plan)
    by_id = {DEFAULT_LIMIT_ID: main}
    extra = body.get("additional_rate_limits")
    for entry in extra if isinstance(extra, list) else []:
        if not isinstance(entry, dict):
            continue
        limit_id = entry.get("metered_feature") or entry.get("limit_name")
        if isinstance(limit_id, str) and limit_id:
            name = entry.get("limit_name") if isinstance(entry.get("limit_name"), str) else None
            by_id[limit_id] = _usage_snapshot(limit_id, name, entry.get("rate_limit"), None, plan)
    return main, by_id


def _usage_snapshot(
    limit_id: str, name: str | None, limits: Any, credits: CreditsSnapshot | None, plan: str | None
) -> RateLimitSnapshot:
    limits = limits if isinstance(limits, dict) else {}
    return RateLimitSnapshot(
        limit_id,
        limit_name=name,
        primary=_usage_window(limits.get("primary_window")),
        secondary=_usage_window(limits.get("secondary_window")),
        credits=credits,
        plan_type=plan,
    )


def _usage_window(value: Any) -> RateLimitWindow | None:
    if not isinstance(value, dict) or not isinstance(value.get("used_percent"), int | float):
        return None
    seconds = value.get("limit_window_seconds")
    reset_at = value.get("reset_at")
    return window(
        float(value["used_percent"]),
        int(seconds) // 60 if isinstance(seconds, int | float) else None,
        int(reset_at) if isinstance(reset_at, int | float) else None,
    )


def _usage_credits(value: Any) -> CreditsSnapshot | None:
    if not isinstance(value, dict) or not isinstance(value.get("has_credits"), bool):
        return None
    balance = value.get("balance")
    return CreditsSnapshot(
        value["has_credits"], bool(value.get("unlimited")), balance if isinstance(balance, str) else None
    )
