"""Rollout records and the turns rebuilt from them (pure: plain sync tests)."""

from __future__ import annotations

from typing import Any

from codex_trio.store import history, rollout

THREAD = "01a213f6-bc53-7150-a5c0-0de64950714e"


def numbered(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rollout.full_line(n, r, 1_795_631_266_000 + n) for n, r in enumerate(records)]


def test_v2_items_survive_the_round_trip_through_the_reference_core_form() -> None:
    items: list[dict[str, Any]] = [
        {
            "type": "userMessage",
            "id": "u",
            "clientId": None,
            "content": [{"type": "text", "text": "hi", "text_elements": []}],
        },
        {
            "type": "agentMessage",
            "moderation": None,
            "id": "m",
            "text": "hello",
            "phase": None,
            "memoryCitation": None,
            "delivery": None,
            "questions": None,
        },
        {"type": "reasoning", "id": "r", "summary": ["s"], "content": ["c"]},
        {
            "type": "commandExecution",
            "id": "call_1",
            "pluginId": None,
            "scriptPath": None,
            "command": "/bin/bash -lc 'echo hi'",
            "cwd": "/ws",
            "processId": "42",
            "source": "unifiedExecStartup",
            "status": "completed",
            "commandActions": [{"type": "unknown", "command": "echo hi"}],
            "aggregatedOutput": "hi\n",
            "exitCode": 0,
            "durationMs": 12,
        },
        {
            "type": "fileChange",
            "id": "call_2",
            "changes": [{"path": "/ws/a.txt", "kind": {"type": "add"}, "diff": "a\n"}],
            "status": "completed",
        },
        {"type": "webSearch", "id": "w", "query": "q", "action": None},
    ]
    for item in items:
        core = rollout.core_item(item)
        assert core["type"][0].isupper()
        back = rollout.v2_item(core, 1, 2)
        assert back == {**item, "startedAtMs": 1, "completedAtMs": 2}


def test_the_core_form_matches_what_the_reference_writes() -> None:
    core = rollout.core_item(
        {
            "type": "commandExecution",
            "id": "call_1",
            "command": "/bin/bash -lc 'echo hi'",
            "cwd": "/ws",
            "processId": "1",
            "source": "unifiedExecStartup",
            "status": "completed",
            "commandActions": [{"type": "unknown", "command": "echo hi"}],
            "aggregatedOutput": "hi\n",
            "exitCode": 0,
            "durationMs": 0,
        }
    )
    assert core["command"] == ["/bin/bash", "-lc", "echo hi"]
    assert core["cwd"] == "file:///ws"
    assert core["parsed_cmd"] == [{"type": "unknown", "cmd": "echo hi"}]
    assert core["source"] == "unified_exec_startup"
    agent = rollout.core_item({"type": "agentMessage", "id": "m", "text": "x"})
    assert agent == {"type": "AgentMessage", "id": "m", "content": [{"type": "Text", "text": "x"}]}


def test_turns_are_rebuilt_with_their_statuses() -> None:
    user = {"type": "userMessage", "id": "u", "content": [{"type": "text", "text": "q", "text_elements": []}]}
    lines = numbered(
        [
            rollout.session_meta(
                thread_id=THREAD, created_at_ms=0, cwd="/", originator="o", model_provider="p"
            ),
            rollout.task_started("t1", 10),
            rollout.item_completed(THREAD, "t1", user, 1, 1),
            rollout.item_completed(THREAD, "t1", {"type": "agentMessage", "id": "a", "text": "x"}, 2, 3),
            rollout.task_complete("t1", "x", 10, 11, 1000),
            rollout.task_started("t2", 12),
            rollout.item_completed(THREAD, "t2", user, 4, 4),
            rollout.turn_aborted("t2", "interrupted", 12, 13, 500),
            rollout.task_started("t3", 14),
            rollout.turn_error("t3", "boom"),
            rollout.task_complete("t3", None, 14, 15, 10),
            rollout.task_started("t4", 16),
        ]
    )
    turns = history.build_turns(lines)
    assert [(t.id, t.status) for t in turns] == [
        ("t1", "completed"),
        ("t2", "interrupted"),
        ("t3", "failed"),
        ("t4", "interrupted"),
    ]
    assert turns[2].error is not None and turns[2].error["message"] == "boom"
    assert history.build_turns(lines, running=True)[-1].status == "inProgress"
    wire = turns[0].to_wire("full")
    assert [i["type"] for i in wire["items"]] == ["userMessage", "agentMessage"]
    assert wire["completedAt"] == 11 and wire["durationMs"] == 1000


def test_history_pages_follow_ordinals_in_both_directions() -> None:
    rows = list(range(1, 8))
    page = history.paginate(
        rows, lambda r: r, thread_id=THREAD, scope="turns", direction="desc", limit=3, cursor=None
    )
    assert page.rows == [7, 6, 5] and page.next_cursor is not None and page.backwards_cursor is not None
    cursor = history.decode_cursor(page.next_cursor, THREAD, "turns")
    second = history.paginate(
        rows, lambda r: r, thread_id=THREAD, scope="turns", direction="desc", limit=3, cursor=cursor
    )
    assert second.rows == [4, 3, 2]
    back = history.decode_cursor(page.backwards_cursor, THREAD, "turns")
    forward = history.paginate(
        rows, lambda r: r, thread_id=THREAD, scope="turns", direction="asc", limit=None, cursor=back
    )
    assert forward.rows == [7] and forward.next_cursor is None


def test_metadata_scan_reads_only_what_it_needs() -> None:
    user = {
        "type": "userMessage",
        "id": "u",
        "content": [{"type": "text", "text": "first words", "text_elements": []}],
    }
    lines = numbered(
        [
            rollout.session_meta(
                thread_id=THREAD,
                created_at_ms=1_795_631_266_903,
                cwd="/ws",
                originator="o",
                model_provider="mock",
                base_instructions="x",
                model="gpt-5.5",
            ),
            rollout.task_started("t1", 10),
            rollout.item_completed(THREAD, "t1", user, 1, 1),
        ]
    )
    raw = rollout.encode_lines(lines).splitlines()
    scanned = rollout.scan_lines([*raw, b"not json at all"])
    assert scanned.thread_id == THREAD
    assert scanned.created_at_ms == 1_795_631_266_903
    assert (scanned.preview, scanned.model, scanned.first_turn_id) == ("first words", "gpt-5.5", "t1")
    assert scanned.model_provider == "mock" and scanned.cwd == "/ws"
