"""The pure parts of turns: the patch format, approval decisions, the request body."""

from __future__ import annotations

from pathlib import Path

import pytest

from codex_trio.core.apply_patch import (
    AddFile,
    DeleteFile,
    PatchError,
    UpdateFile,
    apply_chunks,
    apply_plan,
    parse_patch,
    plan_patch,
)
from codex_trio.core.approvals import (
    SessionApprovals,
    command_needs_approval,
    is_known_safe,
    patch_needs_approval,
)
from codex_trio.core.exec_tool import command_actions, parse_exec_args
from codex_trio.core.prompt import RequestSpec, model_family, request_body, tools_for
from codex_trio.protocol.items import ApprovalAnswer, parse_approval_answer

FULL = {"type": "dangerFullAccess"}
READ_ONLY = {"type": "readOnly", "networkAccess": False}


# ---------------------------------------------------------------------------- patches
def test_a_patch_with_every_kind_of_hunk_parses() -> None:
    hunks = parse_patch(
        "*** Begin Patch\n"
        "*** Add File: a.txt\n+one\n+two\n"
        "*** Delete File: b.txt\n"
        "*** Update File: c.txt\n*** Move to: d.txt\n@@ def f():\n-    x\n+    y\n"
        "*** End Patch"
    )
    assert hunks[0] == AddFile("a.txt", "one\ntwo\n")
    assert hunks[1] == DeleteFile("b.txt")
    update = hunks[2]
    assert isinstance(update, UpdateFile) and update.move_to == "d.txt"
    assert update.chunks[0].context == "def f():" and update.chunks[0].old == ("    x",)


@pytest.mark.parametrize(
    "text, message",
    [
        ("*** Add File: a\n+x\n*** End Patch", "first line"),
        ("*** Begin Patch\n*** Add File: a\n+x\n", "last line"),
        ("*** Begin Patch\n*** Frobnicate: a\n*** End Patch", "not a valid hunk header"),
        ("*** Begin Patch\n*** Update File: a\nbogus\n*** End Patch", "Unexpected line"),
    ],
)
def test_malformed_patches_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(PatchError, match=message):
        parse_patch(text)


def test_update_chunks_match_despite_trailing_whitespace_and_keep_order() -> None:
    before = "a\nb  \nc\nd\ne\n"
    patch = parse_patch(
        "*** Begin Patch\n*** Update File: f\n@@\n a\n-b\n+B\n@@\n d\n-e\n+E\n*** End Patch\n"
    )
    update = patch[0]
    assert isinstance(update, UpdateFile)
    assert apply_chunks(before, update.chunks, "f") == "a\nB\nc\nd\nE\n"


def test_a_chunk_that_is_not_in_the_file_fails_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x\n")
    (tmp_path / "f.txt").write_text("1\n2\n")
    hunks = parse_patch(
        "*** Begin Patch\n*** Update File: keep.txt\n-x\n+y\n*** Update File: f.txt\n-9\n+0\n*** End Patch\n"
    )
    with pytest.raises(PatchError, match="Failed to find expected lines"):
        plan_patch(hunks, tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "x\n"


def test_a_planned_patch_applies_adds_deletes_and_moves(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("gone\n")
    (tmp_path / "src.txt").write_text("v1\n")
    hunks = parse_patch(
        "*** Begin Patch\n*** Add File: sub/new.txt\n+hi\n*** Delete File: old.txt\n"
        "*** Update File: src.txt\n*** Move to: dst.txt\n-v1\n+v2\n*** End Patch\n"
    )
    summary = apply_plan(plan_patch(hunks, tmp_path))
    assert summary == "Success. Updated the following files:\nA sub/new.txt\nD old.txt\nM dst.txt\n"
    assert (tmp_path / "sub/new.txt").read_text() == "hi\n"
    assert not (tmp_path / "old.txt").exists() and not (tmp_path / "src.txt").exists()
    assert (tmp_path / "dst.txt").read_text() == "v2\n"


# ---------------------------------------------------------------------------- approvals
@pytest.mark.parametrize(
    "cmd, safe",
    [
        ("ls -la", True),
        ("rg foo src", True),
        ("sed -n 1,20p x.py", True),
        ("sed -n '1,5p' x.py", True),
        ("echo hi", True),
        ("ls | wc -l", True),
        ("ls && pwd", True),
        ("grep -R foo -n || true", True),
        ("find . -name x.py", True),
        ("git status", False),
        ("git push", False),
        ("'git status'", False),
        ("ls; rm -rf x", False),
        ("cat a > b", False),
        ("cat < a", False),
        ("ls 2>/dev/null", False),
        ("(ls)", False),
        ("ls &", False),
        ("echo $(pwd)", False),
        ("echo $HOME", False),
        ("ls *.py", False),
        ("find . -delete", False),
        ("find . -fprint out", False),
        ("rg --pre=cat foo", False),
        ("rg -z foo", False),
        ("base64 -o out x", False),
        ("sed -n p x.py", False),
        ("sed -i 1d x.py", False),
        ("python3 -c 1", False),
        ("", False),
    ],
)
def test_known_safe_commands(cmd: str, safe: bool) -> None:
    assert is_known_safe(cmd) is safe


def test_policies_decide_when_a_command_asks() -> None:
    argv, none = ["/bin/bash", "-lc", "touch x"], SessionApprovals()

    def asks(policy: str, sandbox: dict[str, object], escalated: bool = False) -> bool:
        return command_needs_approval(
            policy, sandbox, "touch x", argv, "d", escalated=escalated, approvals=none
        )

    assert asks("untrusted", FULL)
    for safe in ("true", "ls", "echo hi", "cat README"):
        assert command_needs_approval(
            "untrusted", FULL, safe, ["/bin/bash", "-lc", safe], "d", escalated=False, approvals=none
        ), "as the reference, untrusted asks before every command"
    assert not command_needs_approval(
        "on-request", READ_ONLY, "ls", ["/bin/bash", "-lc", "ls"], "d", escalated=False, approvals=none
    )
    assert not asks("never", READ_ONLY)
    assert not asks("on-request", FULL)
    assert asks("on-request", FULL, escalated=True)
    assert asks("on-request", READ_ONLY), "no OS sandbox here: a writing command is asked about"
    remembered = SessionApprovals(prefixes=[("touch",)])
    assert not command_needs_approval(
        "untrusted", FULL, "touch x", argv, "d", escalated=False, approvals=remembered
    )


def test_policies_decide_when_a_patch_asks(tmp_path: Path) -> None:
    inside, outside = tmp_path / "a.txt", Path("/etc/elsewhere.txt")
    workspace = {"type": "workspaceWrite", "writableRoots": []}
    assert patch_needs_approval("untrusted", FULL, [inside], tmp_path, SessionApprovals())
    assert not patch_needs_approval("on-request", workspace, [inside], tmp_path, SessionApprovals())
    assert patch_needs_approval("on-request", workspace, [outside], tmp_path, SessionApprovals())
    assert not patch_needs_approval("untrusted", FULL, [inside], tmp_path, SessionApprovals(paths={inside}))


@pytest.mark.parametrize(
    "result, answer",
    [
        ({"decision": "accept"}, ApprovalAnswer("accept")),
        ({"decision": "acceptForSession"}, ApprovalAnswer("acceptForSession")),
        ({"decision": "cancel"}, ApprovalAnswer("cancel")),
        (
            {"decision": {"acceptWithExecpolicyAmendment": {"execpolicy_amendment": ["git", "pull"]}}},
            ApprovalAnswer("accept", ["git", "pull"]),
        ),
        ({"decision": "approved"}, ApprovalAnswer("accept")),
        ({"nonsense": True}, ApprovalAnswer("decline")),
    ],
)
def test_approval_answers_are_read_leniently(result: object, answer: ApprovalAnswer) -> None:
    assert parse_approval_answer(result) == answer


# ---------------------------------------------------------------------------- tools and requests
def test_exec_arguments_are_clamped_and_displayed_shell_wrapped() -> None:
    args = parse_exec_args({"cmd": "echo 'a b'", "yield_time_ms": 10, "login": False, "shell": "/bin/sh"})
    assert args.yield_time_ms == 250 and args.argv() == ["/bin/sh", "-c", "echo 'a b'"]
    assert args.display() == "/bin/sh -c 'echo '\"'\"'a b'\"'\"''"
    assert command_actions("ls src") == [{"type": "listFiles", "command": "ls src", "path": "src"}]
    assert command_actions("cat a | wc") == [{"type": "unknown", "command": "cat a | wc"}]


def spec(model: str, **kw: object) -> RequestSpec:
    family = model_family(model)
    return RequestSpec(model, family, "thr", "be helpful", [], [], tools_for(family), **kw)  # type: ignore[arg-type]


def test_openai_models_get_the_reference_request_shape() -> None:
    body = request_body(spec("gpt-5.5"))
    assert list(body) == [
        "model",
        "stream",
        "input",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning",
        "store",
        "include",
        "prompt_cache_key",
        "text",
    ]
    assert body["reasoning"] == {"effort": "medium"} and body["text"] == {"verbosity": "low"}
    assert body["input"][0] == {
        "type": "message",
        "role": "developer",
        "content": [{"type": "input_text", "text": "be helpful"}],
    }
    patch_tool = next(t for t in body["tools"] if t["name"] == "apply_patch")
    assert patch_tool["type"] == "custom" and patch_tool["format"]["syntax"] == "lark"


def test_local_models_get_plain_function_tools_and_no_openai_extras() -> None:
    body = request_body(spec("qwen3-coder:30b"))
    assert "include" not in body and "prompt_cache_key" not in body and "reasoning" not in body
    assert all(t["type"] == "function" for t in body["tools"])
    assert request_body(spec("qwen3", effort="high"))["reasoning"] == {"effort": "high"}


def test_an_output_schema_becomes_a_json_schema_text_format() -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    body = request_body(spec("gpt-5.5", output_schema=schema))
    assert body["text"]["format"] == {
        "type": "json_schema",
        "strict": True,
        "schema": schema,
        "name": "codex_output_schema",
    }
