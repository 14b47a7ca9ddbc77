"""Rollout lines in the reference's (0.169) format: building them and reading metadata back.

A rollout is one JSONL file per thread. Every line is
``{"timestamp": "<UTC ISO ms>Z", "ordinal": N, "type": <kind>, "payload": {...}}``; line 0 is
``session_meta``. Turns are recorded as ``event_msg`` lines (task_started, item_completed,
task_complete, turn_aborted, error) and the model conversation as ``response_item`` lines.
Items are stored in the reference's core TurnItem form (``UserMessage``, ``AgentMessage``…)
and converted to and from the v2 wire form (``userMessage``, ``agentMessage``…) here.

Pure: no trio, no I/O.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import orjson

Line = dict[str, Any]

SESSIONS_DIR = "sessions"
ARCHIVED_DIR = "archived_sessions"
CLI_VERSION = "0.169.0"


# ---------------------------------------------------------------------------- names and times
def iso_ms(ms: int) -> str:
    """`2026-11-25T18:27:46.934Z`: the reference's line and summary timestamps."""
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def iso_s(ms: int) -> str:
    """`2026-11-25T18:27:46Z`: second precision, as in `thread/list` cursors."""
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_ms(text: str) -> int | None:
    """Milliseconds since the epoch from an RFC 3339 UTC timestamp, or None."""
    try:
        value = text[:-1] + "+00:00" if text.endswith("Z") else text
        dt = datetime.fromisoformat(value)
    except (ValueError, TypeError):
        return None
    if dt.tzinfo is None:
        return None
    return int(dt.timestamp() * 1000)


def rollout_relpath(created_at_ms: int, thread_id: str) -> str:
    """`sessions/YYYY/MM/DD/rollout-YYYY-MM-DDTHH-MM-SS-<id>.jsonl` (local time, as the reference)."""
    local = datetime.fromtimestamp(created_at_ms / 1000).astimezone()
    return (
        f"{SESSIONS_DIR}/{local:%Y}/{local:%m}/{local:%d}/rollout-{local:%Y-%m-%dT%H-%M-%S}-{thread_id}.jsonl"
    )


def day_dir_of_filename(filename: str) -> str | None:
    """`sessions/YYYY/MM/DD` from a rollout file name (where unarchive puts it back)."""
    stem = filename.removeprefix("rollout-")
    if len(stem) < 10 or stem[4] != "-" or stem[7] != "-":
        return None
    return f"{SESSIONS_DIR}/{stem[0:4]}/{stem[5:7]}/{stem[8:10]}"


def thread_id_of_filename(filename: str) -> str | None:
    """The thread id at the end of a rollout file name, or None for other files."""
    if not (filename.startswith("rollout-") and filename.endswith(".jsonl")):
        return None
    stem = filename[: -len(".jsonl")]
    if len(stem) < 36:
        return None
    candidate = stem[-36:]
    if candidate.count("-") != 4:
        return None
    return candidate


# ---------------------------------------------------------------------------- line encoding
def full_line(ordinal: int, record: Mapping[str, Any], at_ms: int) -> Line:
    """A record `{"type", "payload"}` with its timestamp and ordinal, in the reference's key order."""
    return {
        "timestamp": iso_ms(at_ms),
        "ordinal": ordinal,
        "type": record["type"],
        "payload": record["payload"],
    }


def next_ordinal(lines: Iterable[Line]) -> int:
    """The ordinal the next appended line gets: one past the highest so far (0 for none)."""
    return max((int(line.get("ordinal", 0) or 0) for line in lines), default=-1) + 1


def encode_lines(lines: Iterable[Line]) -> bytes:
    """Compact JSON, one line each (the reference writes no spaces; metadata scans rely on it)."""
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def session_meta(
    *,
    thread_id: str,
    created_at_ms: int,
    cwd: str,
    originator: str,
    model_provider: str,
    source: str = "vscode",
    base_instructions: str | None = None,
    model: str | None = None,
    git: Mapping[str, Any] | None = None,
    forked_from_id: str | None = None,
    forked_from_ordinal: int | None = None,
) -> Line:
    """The first line's record: the thread's identity and where it ran."""
    payload: dict[str, Any] = {"account_scoped": True, "session_id": thread_id, "id": thread_id}
    if forked_from_id is not None:
        payload["forked_from_id"] = forked_from_id
        if forked_from_ordinal is not None:
            payload["forked_from_ordinal_exclusive"] = forked_from_ordinal
    payload.update(
        {
            "timestamp": iso_ms(created_at_ms),
            "cwd": cwd,
            "runtime_workspace_roots": [cwd],
            "originator": originator,
            "cli_version": CLI_VERSION,
            "source": source,
            "model_provider": model_provider,
        }
    )
    if base_instructions is not None:
        payload["base_instructions"] = {
            "text": base_instructions,
            "provenance": {"type": "model", "model": model},
        }
    payload["history_mode"] = "paginated"
    if git:
        payload["git"] = dict(git)
    return {"type": "session_meta", "payload": payload}


# ---------------------------------------------------------------------------- records for turns
def event(payload: dict[str, Any]) -> Line:
    return {"type": "event_msg", "payload": payload}


def task_started(turn_id: str, started_at_s: int, model_context_window: int | None = None) -> Line:
    return event(
        {
            "type": "task_started",
            "turn_id": turn_id,
            "root_turn_id": turn_id,
            "started_at": started_at_s,
            "model_context_window": model_context_window,
            "collaboration_mode_kind": "default",
        }
    )


def task_complete(
    turn_id: str, last_agent_message: str | None, started_at_s: int, completed_at_s: int, duration_ms: int
) -> Line:
    return event(
        {
            "type": "task_complete",
            "root_turn_id": turn_id,
            "turn_id": turn_id,
            "last_agent_message": last_agent_message,
            "started_at": started_at_s,
            "completed_at": completed_at_s,
            "duration_ms": duration_ms,
        }
    )


def turn_aborted(turn_id: str, reason: str, started_at_s: int, completed_at_s: int, duration_ms: int) -> Line:
    return event(
        {
            "type": "turn_aborted",
            "root_turn_id": turn_id,
            "turn_id": turn_id,
            "reason": reason,
            "started_at": started_at_s,
            "completed_at": completed_at_s,
            "duration_ms": duration_ms,
        }
    )


def turn_error(turn_id: str, message: str, codex_error_info: Any = None) -> Line:
    return event(
        {"type": "error", "turn_id": turn_id, "message": message, "codex_error_info": codex_error_info}
    )


def item_completed(
    thread_id: str,
    turn_id: str,
    item: Mapping[str, Any],
    started_at_ms: int | None,
    completed_at_ms: int | None,
) -> Line:
    """A finished item (v2 form in, the reference's core form on disk)."""
    return event(
        {
            "type": "item_completed",
            "thread_id": thread_id,
            "turn_id": turn_id,
            "item": core_item(item),
            "started_at_ms": started_at_ms,
            "completed_at_ms": completed_at_ms,
        }
    )


def response_item(payload: Mapping[str, Any]) -> Line:
    return {"type": "response_item", "payload": dict(payload)}


def compacted(message: str, replacement_history: list[dict[str, Any]]) -> Line:
    """The history replaced by a summary: what the model sees from here on."""
    return {"type": "compacted", "payload": {"message": message, "replacement_history": replacement_history}}


def thread_reverted(before_turn_id: str) -> Line:
    """`thread/revert`: the turn `before_turn_id` and every later one leave the model's history."""
    return event({"type": "thread_reverted", "before_turn_id": before_turn_id})


def token_count(info: Mapping[str, Any]) -> Line:
    return event({"type": "token_count", "info": dict(info)})


def turn_context(payload: Mapping[str, Any]) -> Line:
    return {"type": "turn_context", "payload": dict(payload)}


# ---------------------------------------------------------------------------- item conversion
def _snake(name: str) -> str:
    out = []
    for char in name:
        if char.isupper():
            out.append("_")
            out.append(char.lower())
        else:
            out.append(char)
    return "".join(out)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


_V2_ONLY_KEYS = ("startedAtMs", "completedAtMs")
_COMMAND_SOURCES = ("agent", "userShell", "unifiedExecStartup", "unifiedExecInteraction")


def _core_input(entry: Mapping[str, Any]) -> dict[str, Any]:
    kind = entry.get("type")
    if kind == "image":
        return {"type": "image", "image_url": entry.get("url")}
    if kind == "localImage":
        return {"type": "local_image", "path": entry.get("path")}
    return dict(entry)


def _v2_input(entry: Mapping[str, Any]) -> dict[str, Any]:
    kind = entry.get("type")
    if kind == "image":
        return {"type": "image", "url": entry.get("image_url")}
    if kind == "local_image":
        return {"type": "localImage", "path": entry.get("path")}
    if kind == "text":
        return {
            "type": "text",
            "text": entry.get("text", ""),
            "text_elements": entry.get("text_elements", []),
        }
    return dict(entry)


def _core_action(action: Mapping[str, Any]) -> dict[str, Any]:
    out = {_snake(k): v for k, v in action.items() if k != "command"}
    out["type"] = _snake(str(action.get("type", "unknown")))
    out["cmd"] = action.get("command", "")
    return out


def _v2_action(action: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": _camel(str(action.get("type", "unknown"))),
        "command": action.get("cmd", ""),
    }
    out.update({_camel(k): v for k, v in action.items() if k not in ("type", "cmd")})
    return out


def core_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A v2 ThreadItem in the reference's core TurnItem form (what rollouts store)."""
    kind = item.get("type")
    if kind == "userMessage":
        out: dict[str, Any] = {"type": "UserMessage", "id": item.get("id")}
        if item.get("clientId") is not None:
            out["client_id"] = item["clientId"]
        out["content"] = [_core_input(c) for c in item.get("content") or []]
        return out
    if kind == "agentMessage":
        out = {
            "type": "AgentMessage",
            "id": item.get("id"),
            "content": [{"type": "Text", "text": item.get("text", "")}],
        }
        if item.get("phase") is not None:
            out["phase"] = item["phase"]
        if item.get("memoryCitation") is not None:
            out["memory_citation"] = item["memoryCitation"]
        return out
    if kind == "reasoning":
        return {
            "type": "Reasoning",
            "id": item.get("id"),
            "summary_text": list(item.get("summary") or []),
            "raw_content": list(item.get("content") or []),
        }
    if kind == "plan":
        return {"type": "Plan", "id": item.get("id"), "text": item.get("text", "")}
    if kind == "commandExecution":
        return _core_command(item)
    if kind == "fileChange":
        return _core_file_change(item)
    # Anything else keeps its fields, snake_cased at the top level, under a PascalCase tag.
    out = {"type": _pascal(str(kind))}
    out.update({_snake(k): v for k, v in item.items() if k != "type" and k not in _V2_ONLY_KEYS})
    return out


def _core_command(item: Mapping[str, Any]) -> dict[str, Any]:
    command = item.get("command") or ""
    try:
        argv = shlex.split(command)
    except ValueError:
        argv = [command]
    out: dict[str, Any] = {"type": "CommandExecution", "id": item.get("id")}
    if item.get("processId") is not None:
        out["process_id"] = item["processId"]
    out["command"] = argv
    cwd = item.get("cwd")
    out["cwd"] = f"file://{cwd}" if isinstance(cwd, str) and cwd.startswith("/") else cwd
    out["parsed_cmd"] = [_core_action(a) for a in item.get("commandActions") or []]
    out["source"] = _snake(str(item.get("source") or "agent"))
    out["status"] = item.get("status", "completed")
    if item.get("aggregatedOutput") is not None:
        out["aggregated_output"] = item["aggregatedOutput"]
    if item.get("exitCode") is not None:
        out["exit_code"] = item["exitCode"]
    duration = item.get("durationMs")
    if isinstance(duration, int):
        out["duration"] = {"secs": duration // 1000, "nanos": (duration % 1000) * 1_000_000}
    for key in ("pluginId", "scriptPath"):
        if item.get(key) is not None:
            out[_snake(key)] = item[key]
    return out


def _core_file_change(item: Mapping[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for change in item.get("changes") or []:
        kind = (change.get("kind") or {}).get("type", "update")
        diff = change.get("diff", "")
        if kind in ("add", "delete"):
            changes[change.get("path", "")] = {"type": kind, "content": diff}
        else:
            changes[change.get("path", "")] = {
                "type": "update",
                "unified_diff": diff,
                "move_path": (change.get("kind") or {}).get("move_path"),
            }
    out: dict[str, Any] = {"type": "FileChange", "id": item.get("id"), "changes": changes}
    if item.get("status") is not None:
        out["status"] = item["status"]
    return out


def v2_item(
    core: Mapping[str, Any], started_at_ms: int | None, completed_at_ms: int | None
) -> dict[str, Any]:
    """A stored core TurnItem back in v2 form, with its start/completion times."""
    kind = core.get("type")
    out: dict[str, Any]
    if kind == "UserMessage":
        out = {
            "type": "userMessage",
            "id": core.get("id"),
            "clientId": core.get("client_id"),
            "content": [_v2_input(c) for c in core.get("content") or []],
        }
    elif kind == "AgentMessage":
        text = "".join(str(c.get("text", "")) for c in core.get("content") or [] if isinstance(c, dict))
        out = {
            "type": "agentMessage",
            "moderation": None,
            "id": core.get("id"),
            "text": text,
            "phase": core.get("phase"),
            "memoryCitation": core.get("memory_citation"),
            "delivery": None,
            "questions": None,
        }
    elif kind == "Reasoning":
        out = {
            "type": "reasoning",
            "id": core.get("id"),
            "summary": list(core.get("summary_text") or []),
            "content": list(core.get("raw_content") or []),
        }
    elif kind == "Plan":
        out = {"type": "plan", "id": core.get("id"), "text": core.get("text", "")}
    elif kind == "CommandExecution":
        out = _v2_command(core)
    elif kind == "FileChange":
        out = _v2_file_change(core)
    else:
        out = {"type": str(kind)[:1].lower() + str(kind)[1:]}
        out.update({_camel(k): v for k, v in core.items() if k != "type"})
    out["startedAtMs"] = started_at_ms
    out["completedAtMs"] = completed_at_ms
    return out


def _v2_command(core: Mapping[str, Any]) -> dict[str, Any]:
    argv = core.get("command") or []
    command = shlex.join(argv) if isinstance(argv, list) else str(argv)
    cwd = core.get("cwd")
    if isinstance(cwd, str) and cwd.startswith("file://"):
        cwd = cwd[len("file://") :]
    duration = core.get("duration")
    duration_ms = None
    if isinstance(duration, dict):
        duration_ms = int(duration.get("secs", 0)) * 1000 + int(duration.get("nanos", 0)) // 1_000_000
    source = _camel(str(core.get("source") or "agent"))
    return {
        "type": "commandExecution",
        "id": core.get("id"),
        "pluginId": core.get("plugin_id"),
        "scriptPath": core.get("script_path"),
        "command": command,
        "cwd": cwd,
        "processId": core.get("process_id"),
        "source": source if source in _COMMAND_SOURCES else "agent",
        "status": core.get("status", "completed"),
        "commandActions": [_v2_action(a) for a in core.get("parsed_cmd") or []],
        "aggregatedOutput": core.get("aggregated_output"),
        "exitCode": core.get("exit_code"),
        "durationMs": duration_ms,
    }


def _v2_file_change(core: Mapping[str, Any]) -> dict[str, Any]:
    changes = []
    raw = core.get("changes") or {}
    for path, change in raw.items() if isinstance(raw, dict) else ():
        kind = change.get("type", "update")
        if kind in ("add", "delete"):
            changes.append({"path": path, "kind": {"type": kind}, "diff": change.get("content", "")})
        else:
            changes.append(
                {
                    "path": path,
                    "kind": {"type": "update", "move_path": change.get("move_path")},
                    "diff": change.get("unified_diff", ""),
                }
            )
    return {
        "type": "fileChange",
        "id": core.get("id"),
        "changes": changes,
        "status": core.get("status", "completed"),
    }


def user_message_text(core: Mapping[str, Any]) -> str:
    """The text of a stored UserMessage (its text inputs joined), used as the preview."""
    return "".join(
        str(c.get("text", ""))
        for c in core.get("content") or []
        if isinstance(c, dict) and c.get("type") == "text"
    )


def user_preview_of(record: Mapping[str, Any]) -> str | None:
    """The preview a record contributes if it is the thread's first user message, else None."""
    payload = record.get("payload")
    if record.get("type") != "event_msg" or not isinstance(payload, dict):
        return None
    kind = payload.get("type")
    if kind == "item_completed":
        item = payload.get("item")
        if isinstance(item, dict) and item.get("type") == "UserMessage":
            return user_message_text(item)
    elif kind == "user_message":
        return str(payload.get("message", ""))
    return None


# ---------------------------------------------------------------------------- metadata scan
@attrs.define
class ScannedRollout:
    """Thread metadata recovered from a rollout file's lines (for index repair)."""

    thread_id: str | None = None
    created_at_ms: int | None = None
    cwd: str = ""
    originator: str = ""
    cli_version: str = ""
    source: str = "vscode"
    model_provider: str = ""
    model: str | None = None
    forked_from_id: str | None = None
    preview: str | None = None
    git: dict[str, Any] | None = None
    first_turn_id: str | None = None
    last_ordinal: int = -1

    @property
    def complete(self) -> bool:
        """Everything the index needs is known: further lines cannot change it."""
        return self.preview is not None and self.model is not None and self.first_turn_id is not None


_USER_MARKERS = (b'"UserMessage"', b'"user_message"')
_MODEL_MARKERS = (b'"thread_settings_applied"', b'"turn_context"')
_TURN_MARKERS = (b'"task_started"', b'"turn_started"')


def scan_lines(lines: Iterable[bytes], scanned: ScannedRollout | None = None) -> ScannedRollout:
    """Fold raw lines into metadata; stops parsing JSON once nothing more can be learnt.

    Only lines that can matter are decoded (the first line, user messages, settings), so a
    long rollout is mostly skipped by a cheap byte search.
    """
    out = scanned if scanned is not None else ScannedRollout()
    for raw in lines:
        if out.thread_id is None:
            line = _loads(raw)
            payload = line.get("payload") if isinstance(line, dict) else None
            if (
                not isinstance(line, dict)
                or line.get("type") != "session_meta"
                or not isinstance(payload, dict)
            ):
                return out
            _apply_session_meta(out, payload)
            out.last_ordinal = int(line.get("ordinal", 0) or 0)
            continue
        if out.complete:
            continue
        wants_preview = out.preview is None and any(m in raw for m in _USER_MARKERS)
        wants_model = out.model is None and any(m in raw for m in _MODEL_MARKERS)
        wants_turn = out.first_turn_id is None and any(m in raw for m in _TURN_MARKERS)
        if not (wants_preview or wants_model or wants_turn):
            continue
        line = _loads(raw)
        if not isinstance(line, dict):
            continue
        payload = line.get("payload")
        if (
            wants_turn
            and isinstance(payload, dict)
            and payload.get("type") in ("task_started", "turn_started")
        ):
            turn_id = payload.get("turn_id")
            out.first_turn_id = turn_id if isinstance(turn_id, str) else None
        if wants_preview:
            preview = user_preview_of(line)
            if preview is not None:
                out.preview = preview
        if wants_model and isinstance(payload, dict):
            settings = (
                payload.get("thread_settings")
                if payload.get("type") == "thread_settings_applied"
                else payload
            )
            if isinstance(settings, dict) and isinstance(settings.get("model"), str):
                out.model = settings["model"]
    return out


def _apply_session_meta(out: ScannedRollout, payload: Mapping[str, Any]) -> None:
    out.thread_id = str(payload.get("id") or payload.get("session_id") or "") or None
    ts = payload.get("timestamp")
    out.created_at_ms = parse_iso_ms(ts) if isinstance(ts, str) else None
    out.cwd = str(payload.get("cwd") or "")
    out.originator = str(payload.get("originator") or "")
    out.cli_version = str(payload.get("cli_version") or "")
    source = payload.get("source")
    out.source = source if isinstance(source, str) else "vscode"
    out.model_provider = str(payload.get("model_provider") or "openai")
    forked = payload.get("forked_from_id")
    out.forked_from_id = forked if isinstance(forked, str) else None
    git = payload.get("git")
    out.git = git if isinstance(git, dict) else None
    instructions = payload.get("base_instructions")
    if isinstance(instructions, dict):
        provenance = instructions.get("provenance")
        if isinstance(provenance, dict) and isinstance(provenance.get("model"), str):
            out.model = provenance["model"]


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def parse_lines(data: bytes) -> list[Line]:
    """Every well-formed line of a rollout; a torn last line (a crash mid-write) is skipped."""
    out: list[Line] = []
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        line = _loads(raw)
        if isinstance(line, dict) and "type" in line:
            out.append(line)
    return out
