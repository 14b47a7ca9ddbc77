"""What the model is told: base instructions, context messages, tools, the request body.

Pure: builds JSON-ready dicts from plain values, no I/O. The base instructions are this
project's own text. The tool list mirrors what the reference advertises (`exec_command`,
`write_stdin`, `apply_patch`) so that models tuned for Codex use them as they expect; the
descriptions are ours.
"""

from __future__ import annotations

import datetime
import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from codex_trio.records import by_value

BASE_INSTRUCTIONS = """\
You are a coding agent working inside a user's workspace through the codex-trio app server.
You help the user understand, change, build and test their code, and you carry tasks through
to a verified result unless the user asks only for an explanation.

How to work:
- Read before you write. Inspect the relevant files and the project layout with shell
  commands (`rg`, `ls`, `sed -n`, `git status`) before proposing or making changes.
- Make focused changes that fit the existing style. Do not reformat code you are not
  changing, and do not add licence headers or unrelated refactors.
- Edit files with the `apply_patch` tool. Use the shell (`exec_command`) to run builds,
  tests and read-only inspection; do not write files through shell redirection when a
  patch will do.
- Verify what you did: run the narrowest relevant tests or checks, and say plainly when
  you could not.
- Respect the approval and sandbox settings you are given. When a command needs rights the
  sandbox does not grant, ask for escalation with `sandbox_permissions: "require_escalated"`
  and a one-sentence `justification`; never try to work around a refusal.
- Never run destructive commands (`rm -rf`, `git reset --hard`, force pushes) unless the
  user explicitly asked for exactly that.

How to answer:
- Be concise and concrete. Lead with the outcome, then what changed and where (file paths),
  then anything the user must do next.
- Use Markdown sparingly: short bullet lists and `code` spans for paths and commands.
- If the request is ambiguous or risky, ask one short question instead of guessing.
"""

TURN_ABORTED_TEXT = (
    "<turn_aborted>\nThe user interrupted the previous turn on purpose. Processes it started may "
    "still be running. If any tools or commands were aborted, they may have left partial results; "
    "check before relying on them.\n</turn_aborted>"
)

#: the context window assumed for models without known metadata (tokens).
DEFAULT_CONTEXT_WINDOW = 272_000
#: share of the context window reported to clients as usable (the reference reports 95 %).
USABLE_CONTEXT_SHARE = 0.95


@by_value
@attrs.frozen(repr=False, eq=False)
class ModelFamily:
    """What the server knows about a model slug: which tool shapes and options it takes."""

    slug: str
    #: `freeform` (custom grammar tool), `function` (JSON tool with an `input` string) or None.
    apply_patch: str | None = "function"
    reasoning: bool = False
    default_effort: str | None = None
    verbosity: str | None = None
    context_window: int = DEFAULT_CONTEXT_WINDOW
    #: OpenAI-hosted: send prompt_cache_key and ask for encrypted reasoning.
    openai: bool = False


def model_family(slug: str) -> ModelFamily:
    """Known OpenAI families get their native tool shapes; anything else gets plain functions."""
    lower = slug.lower()
    if lower.startswith(("gpt-5", "gpt-6", "codex")) or "codex" in lower:
        return ModelFamily(
            slug, "freeform", reasoning=True, default_effort="medium", verbosity="low", openai=True
        )
    if lower.startswith(("o3", "o4")):
        return ModelFamily(slug, "freeform", reasoning=True, default_effort="medium", openai=True)
    if lower.startswith("gpt-4.1"):
        return ModelFamily(slug, "function", openai=True, context_window=1_000_000)
    if lower.startswith("gpt-oss"):
        return ModelFamily(slug, "function", reasoning=True, context_window=128_000)
    return ModelFamily(slug)


def usable_context_window(family: ModelFamily, configured: int | None = None) -> int:
    window = configured if configured is not None else family.context_window
    return int(window * USABLE_CONTEXT_SHARE)


# ---------------------------------------------------------------------------- tools
_EXEC_COMMAND = {
    "type": "function",
    "name": "exec_command",
    "description": (
        "Run a shell command in the workspace. Returns its output, or a session id when it is "
        "still running after yield_time_ms (continue it with write_stdin)."
    ),
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {
            "cmd": {"type": "string", "description": "The shell command line to run."},
            "justification": {
                "type": "string",
                "description": "Why the command needs to leave the sandbox; only with require_escalated.",
            },
            "login": {"type": "boolean", "description": "Run the shell as a login shell (default true)."},
            "max_output_tokens": {
                "type": "number",
                "description": "Most output to return, in tokens (default 10000).",
            },
            "prefix_rule": {
                "type": "array",
                "items": {"type": "string"},
                "description": 'A command prefix to approve for later calls, e.g. ["git", "pull"]; '
                "only with require_escalated.",
            },
            "sandbox_permissions": {
                "type": "string",
                "enum": ["use_default", "require_escalated"],
                "description": "use_default (the default) or require_escalated to run outside the sandbox.",
            },
            "shell": {
                "type": "string",
                "description": "Shell to run the command with (default: the user's).",
            },
            "tty": {"type": "boolean", "description": "Attach a pseudo-terminal (default false)."},
            "workdir": {"type": "string", "description": "Working directory (default: the turn's cwd)."},
            "yield_time_ms": {
                "type": "number",
                "description": "How long to wait for output before returning (250-30000, default 10000).",
            },
        },
        "required": ["cmd"],
        "additionalProperties": False,
    },
}

_WRITE_STDIN = {
    "type": "function",
    "name": "write_stdin",
    "description": "Send characters to a running exec_command session and return its recent output.",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {
            "session_id": {"type": "number", "description": "The session id exec_command returned."},
            "chars": {"type": "string", "description": "Characters to write; empty just polls for output."},
            "yield_time_ms": {"type": "number", "description": "How long to wait for output."},
            "max_output_tokens": {"type": "number", "description": "Most output to return, in tokens."},
        },
        "required": ["session_id"],
        "additionalProperties": False,
    },
}

APPLY_PATCH_GRAMMAR = r"""
start: "*** Begin Patch" NL operation+ "*** End Patch" NL?
operation: add_file | delete_file | update_file
add_file: "*** Add File: " PATH NL added+
added: "+" TEXT? NL
delete_file: "*** Delete File: " PATH NL
update_file: "*** Update File: " PATH NL moved? section*
moved: "*** Move to: " PATH NL
section: header? body_line+ end_of_file?
header: "@@" (" " TEXT)? NL
body_line: MARK TEXT? NL
end_of_file: "*** End of File" NL
MARK: /[ +-]/
PATH: /[^\n]+/
TEXT: /[^\n]+/
NL: "\n"
"""

_APPLY_PATCH_HELP = (
    "Edit files with a patch. The patch starts with '*** Begin Patch' and ends with '*** End Patch'. "
    "Each file section is '*** Add File: <path>' followed by '+' lines, '*** Delete File: <path>', or "
    "'*** Update File: <path>' (optionally '*** Move to: <path>') followed by '@@' sections of ' ' "
    "(unchanged), '-' (removed) and '+' (added) lines with about three lines of context. Paths are "
    "relative to the working directory."
)

_APPLY_PATCH_FREEFORM = {
    "type": "custom",
    "name": "apply_patch",
    "description": _APPLY_PATCH_HELP + " This is a freeform tool: send the patch text itself, not JSON.",
    "format": {"type": "grammar", "syntax": "lark", "definition": APPLY_PATCH_GRAMMAR},
}

_APPLY_PATCH_FUNCTION = {
    "type": "function",
    "name": "apply_patch",
    "description": _APPLY_PATCH_HELP,
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The whole patch text."}},
        "required": ["input"],
        "additionalProperties": False,
    },
}


def tools_for(family: ModelFamily, extra: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = [dict(_EXEC_COMMAND), dict(_WRITE_STDIN)]
    if family.apply_patch == "freeform":
        tools.append(dict(_APPLY_PATCH_FREEFORM))
    elif family.apply_patch == "function":
        tools.append(dict(_APPLY_PATCH_FUNCTION))
    tools.extend(dict(t) for t in extra)
    return tools


# ---------------------------------------------------------------------------- context messages
def message(role: str, text: str) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def permissions_text(approval_policy: Any, sandbox_policy: Mapping[str, Any]) -> str:
    sandbox = sandbox_policy.get("type", "readOnly")
    if sandbox == "dangerFullAccess":
        files = "Commands run without a sandbox: you can read and write anywhere the user can."
    elif sandbox == "workspaceWrite":
        files = "Commands may write inside the working directory and the writable roots only."
    else:
        files = "The sandbox is read-only: commands may read files but not change them."
    policy = approval_policy if isinstance(approval_policy, str) else "on-request"
    approvals = {
        "never": "Approval is never asked for: do not request escalation; work within what is allowed.",
        "untrusted": "The user approves commands that are not known to be read-only before they run.",
        "on-failure": "Commands run first; if one fails because of the sandbox, the user is asked to "
        "allow running it without one.",
        "on-request": "Commands run in the sandbox; ask for escalation (require_escalated) when one "
        "needs more rights, and the user decides.",
    }.get(policy, "")
    return f"<permissions instructions>\n{files}\n{approvals}\n</permissions instructions>"


def environment_context(cwd: str, shell: str, now: datetime.datetime | None = None) -> str:
    current = now or datetime.datetime.now().astimezone()
    zone = os.environ.get("TZ") or _zone_name(current)
    return (
        "<environment_context>\n"
        f"  <cwd>{cwd}</cwd>\n"
        f"  <shell>{os.path.basename(shell)}</shell>\n"
        f"  <current_date>{current:%Y-%m-%d}</current_date>\n"
        f"  <timezone>{zone}</timezone>\n"
        "</environment_context>"
    )


def _zone_name(now: datetime.datetime) -> str:
    return _system_zone() or str(now.tzname())


@functools.cache
def _system_zone() -> str | None:
    """The machine's IANA zone name, read once (every model request names it)."""
    try:
        with open("/etc/timezone") as f:
            return f.read().strip() or None
    except OSError:
        link = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in link:
            return link.split("zoneinfo/", 1)[1]
        return None


# ---------------------------------------------------------------------------- the request
@by_value
@attrs.frozen(repr=False, eq=False)
class RequestSpec:
    """Everything one sampling request depends on."""

    model: str
    family: ModelFamily
    thread_id: str
    instructions: str
    context: list[dict[str, Any]]
    history: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    effort: str | None = None
    summary: str | None = None
    verbosity: str | None = None
    output_schema: Any = None
    client_metadata: dict[str, str] | None = None


def request_body(spec: RequestSpec) -> dict[str, Any]:
    """The Responses-API body, keys in the reference's order."""
    body: dict[str, Any] = {
        "model": spec.model,
        "stream": True,
        "input": [message("developer", spec.instructions), *spec.context, *spec.history],
        "tools": spec.tools,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    reasoning: dict[str, Any] = {}
    # an explicitly configured effort is sent to any model; the family's default only to its own
    effort = spec.effort or (spec.family.default_effort if spec.family.reasoning else None)
    if effort and effort != "none":
        reasoning["effort"] = effort
    if spec.summary and spec.summary != "none":
        reasoning["summary"] = spec.summary
    if reasoning:
        body["reasoning"] = reasoning
    body["store"] = False
    if spec.family.openai and spec.family.reasoning:
        body["include"] = ["reasoning.encrypted_content"]
    if spec.family.openai:
        body["prompt_cache_key"] = spec.thread_id
    text: dict[str, Any] = {}
    verbosity = spec.verbosity or spec.family.verbosity
    if verbosity:
        text["verbosity"] = verbosity
    if spec.output_schema is not None:
        text["format"] = {
            "type": "json_schema",
            "strict": True,
            "schema": spec.output_schema,
            "name": "codex_output_schema",
        }
    if text:
        body["text"] = text
    if spec.client_metadata:
        body["client_metadata"] = dict(spec.client_metadata)
    return body
