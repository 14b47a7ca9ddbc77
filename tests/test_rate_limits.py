"""Rate-limit snapshots from Responses headers and from `wham/usage` (pure)."""

from __future__ import annotations

from codex_trio.core.rate_limits import from_headers, from_usage
from codex_trio.protocol.account import RateLimitSnapshot, RateLimitWindow


def test_no_headers_give_the_all_null_codex_snapshot() -> None:
    assert from_headers({}) == RateLimitSnapshot() == from_headers({"x-other": "1"})
    assert RateLimitSnapshot().limit_id == "codex" and RateLimitSnapshot().primary is None


def test_the_active_limit_names_the_header_family() -> None:
    headers = {
        "X-Codex-Active-Limit": "codex_other",
        "x-codex-other-primary-used-percent": "99.4",
        "x-codex-other-limit-name": " Other ",
        "x-codex-primary-used-percent": "5",
    }
    limits = from_headers(headers)
    assert (limits.limit_id, limits.limit_name) == ("codex_other", "Other")
    assert limits.primary == RateLimitWindow(99)


def test_unreadable_values_are_left_out() -> None:
    headers = {
        "x-codex-primary-used-percent": "lots",
        "x-codex-secondary-used-percent": "nan",
        "x-codex-credits-has-credits": "maybe",
    }
    assert from_headers(headers) == RateLimitSnapshot()
    limits = from_headers({"x-codex-primary-used-percent": "0.5", "x-codex-primary-window-minutes": "x"})
    assert limits.primary == RateLimitWindow(1, None, None)


def test_usage_answers_map_every_limit() -> None:
    main, by_id = from_usage(
        {
            "plan_type": "plus",
            "rate_limit": {"primary_window": {"used_percent": 10.2, "limit_window_seconds": 3600}},
            "additional_rate_limits": [
                {"limit_name": "Spark", "metered_feature": "codex_spark", "rate_limit": {"secondary_window": {
                    "used_percent": 3, "limit_window_seconds": 600, "reset_at": 5}}},
                "junk",
            ],
        }
    )  # fmt: skip
    assert main.primary == RateLimitWindow(10, 60, None)
    assert main.plan_type == "plus" and main.credits is None
    assert set(by_id) == {"codex", "codex_spark"}
    spark = by_id["codex_spark"]
    assert (spark.limit_name, spark.primary) == ("Spark", None)
    assert spark.secondary == RateLimitWindow(3, 10, 5)
    assert from_usage("nonsense") == (RateLimitSnapshot(), {"codex": RateLimitSnapshot()})
