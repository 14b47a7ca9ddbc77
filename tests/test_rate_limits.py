"""Rate-limit snapshots from Responses headers and from `wham/usage` (pure)."""

from __future__ import annotations

from codex_trio.core.rate_limits import from_headers, from_usage, snapshot


def test_no_headers_give_the_all_null_codex_snapshot() -> None:
    assert from_headers({}) == snapshot() == from_headers({"x-other": "1"})
    assert snapshot()["limitId"] == "codex" and snapshot()["primary"] is None


def test_the_active_limit_names_the_header_family() -> None:
    headers = {
        "X-Codex-Active-Limit": "codex_other",
        "x-codex-other-primary-used-percent": "99.4",
        "x-codex-other-limit-name": " Other ",
        "x-codex-primary-used-percent": "5",
    }
    limits = from_headers(headers)
    assert limits["limitId"] == "codex_other" and limits["limitName"] == "Other"
    assert limits["primary"] == {"usedPercent": 99, "windowDurationMins": None, "resetsAt": None}


def test_unreadable_values_are_left_out() -> None:
    headers = {
        "x-codex-primary-used-percent": "lots",
        "x-codex-secondary-used-percent": "nan",
        "x-codex-credits-has-credits": "maybe",
    }
    assert from_headers(headers) == snapshot()
    limits = from_headers({"x-codex-primary-used-percent": "0.5", "x-codex-primary-window-minutes": "x"})
    assert limits["primary"] == {"usedPercent": 1, "windowDurationMins": None, "resetsAt": None}


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
    assert main["primary"] == {"usedPercent": 10, "windowDurationMins": 60, "resetsAt": None}
    assert main["planType"] == "plus" and main["credits"] is None
    assert set(by_id) == {"codex", "codex_spark"}
    spark = by_id["codex_spark"]
    assert (spark["limitName"], spark["primary"]) == ("Spark", None)
    assert spark["secondary"] == {"usedPercent": 3, "windowDurationMins": 10, "resetsAt": 5}
    assert from_usage("nonsense") == (snapshot(), {"codex": snapshot()})
