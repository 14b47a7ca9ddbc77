"""The pure side of MCP support: config parsing and the shapes sent to clients and the model
(plain synchronous tests, no server, no `mcp` package)."""

from __future__ import annotations

from pathlib import Path

import pytest

from codex_trio.mcp.config import DEFAULT_STARTUP_TIMEOUT, DEFAULT_TOOL_TIMEOUT, parse_servers
from codex_trio.protocol import mcp as wire

RICH_SCHEMA = {
    "type": "object",
    "title": "richArguments",
    "properties": {
        "mode": {"enum": ["fast", "slow"], "title": "Mode", "type": "string"},
        "tags": {"items": {"type": "string"}, "title": "Tags", "type": "array"},
        "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None, "title": "Limit"},
        "note": {
            "default": "none",
            "description": "A note",
            "maxLength": 40,
            "title": "Note",
            "type": "string",
        },
    },
    "required": ["mode", "tags"],
}


def test_tool_schemas_are_trimmed_as_the_reference_sends_them_to_the_model() -> None:
    # (what the reference sent for the same MCP tool, captured from its model request)
    assert wire.model_schema(RICH_SCHEMA) == {
        "type": "object",
        "properties": {
            "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "mode": {"type": "string", "enum": ["fast", "slow"]},
            "note": {"type": "string", "description": "A note"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["mode", "tags"],
    }


def test_a_servers_tools_are_one_namespace_sorted_by_name() -> None:
    tools = [
        {"name": "zeta", "description": "Z", "inputSchema": {"type": "object"}},
        {"name": "alpha", "inputSchema": {"type": "object", "properties": {}}},
    ]
    namespace = wire.namespace_tool("docs", "Docs server.", tools)
    assert namespace["type"] == "namespace" and namespace["name"] == "mcp__docs"
    assert namespace["description"] == "Docs server."
    assert [t["name"] for t in namespace["tools"]] == ["alpha", "zeta"]
    assert namespace["tools"][1] == {
        "type": "function",
        "name": "zeta",
        "description": "Z",
        "strict": False,
        "parameters": {"type": "object", "properties": {}},
    }
    assert wire.namespace_tool("docs", None, [])["description"]


@pytest.mark.parametrize(
    ("name", "namespace", "expected"),
    [
        ("echo", "mcp__fixture", ("fixture", "echo")),
        ("echo", "mcp__fixture__", ("fixture", "echo")),
        ("mcp__fixture__echo", None, ("fixture", "echo")),
        ("exec_command", None, None),
        ("echo", "multi_agent_v1", None),
        ("mcp__fixture", None, None),
    ],
)
def test_a_model_call_names_its_server_and_tool(
    name: str, namespace: str | None, expected: tuple[str, str] | None
) -> None:
    assert wire.split_call_name(name, namespace) == expected


def test_structured_content_reaches_the_model_as_compact_json_text() -> None:
    result = {"content": [{"type": "text", "text": '{\n  "sum": 3\n}'}], "structuredContent": {"sum": 3}}
    assert wire.model_output(result, 0.00441) == 'Wall time: 0.0044 seconds\nOutput:\n{"sum":3}'


def test_other_results_reach_the_model_as_content_items() -> None:
    result = {
        "content": [
            {"type": "text", "text": "plain"},
            {"type": "image", "data": "AAAA", "mimeType": "image/png"},
        ],
        "isError": True,
        "structuredContent": {"ignored": True},
    }
    assert wire.model_output(result, 1.5) == [
        {"type": "input_text", "text": "Wall time: 1.5000 seconds\nOutput:"},
        {"type": "input_text", "text": "plain"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
    ]


def test_the_item_result_and_the_direct_call_response_have_the_reference_keys() -> None:
    result = {"content": [{"type": "text", "text": "x", "annotations": None}], "isError": False}
    assert wire.item_result(result) == {
        "content": [{"type": "text", "text": "x"}],
        "structuredContent": None,
        "_meta": None,
    }
    assert wire.tool_call_response(result) == {"content": [{"type": "text", "text": "x"}], "isError": False}


def test_a_tool_approval_is_an_elicitation_with_the_reference_meta() -> None:
    params = wire.approval_params("t", "u", "fixture", "plain", "Plain.", {"text": "t", "extra": 1})
    assert params["_meta"]["tool_params_display"] == [
        {"name": "extra", "value": 1, "display_name": "extra"},
        {"name": "text", "value": "t", "display_name": "text"},
    ]
    assert params["message"] == 'Allow the fixture MCP server to run tool "plain"?'
    assert params["requestedSchema"] == {"type": "object", "properties": {}}


def test_an_elicitation_form_keeps_only_what_the_client_schema_allows() -> None:
    request = {
        "mode": "form",
        "message": "Name?",
        "requestedSchema": {
            "type": "object",
            "title": "Name",
            "properties": {"name": {"type": "string", "title": "Name"}},
            "required": ["name"],
        },
    }
    params = wire.elicitation_params("t", None, "s", request)
    assert params == {
        "threadId": "t",
        "turnId": None,
        "serverName": "s",
        "mode": "form",
        "_meta": None,
        "message": "Name?",
        "requestedSchema": {
            "type": "object",
            "properties": {"name": {"type": "string", "title": "Name"}},
            "required": ["name"],
        },
    }
    nested = dict(request, requestedSchema={"type": "object", "properties": {"x": {"type": "object"}}})
    with pytest.raises(wire.InvalidForm):
        wire.elicitation_params("t", None, "s", nested)


def test_a_url_elicitation_carries_its_url_and_id() -> None:
    request = {"mode": "url", "message": "Sign in", "url": "https://example.com", "elicitationId": "e1"}
    params = wire.elicitation_params("t", "u", "s", request)
    assert (params["mode"], params["url"], params["elicitationId"]) == ("url", "https://example.com", "e1")
    assert "requestedSchema" not in params


@pytest.mark.parametrize(
    ("result", "mcp"),
    [
        ({"action": "accept", "content": {"name": "Ada"}}, {"action": "accept", "content": {"name": "Ada"}}),
        ({"action": "decline", "content": {"name": "Ada"}}, {"action": "decline"}),
        ({"action": "cancel"}, {"action": "cancel"}),
        ({"action": "maybe"}, {"action": "cancel"}),
        (None, {"action": "cancel"}),
    ],
)
def test_a_clients_answer_is_passed_on_and_anything_unreadable_is_cancel(
    result: object, mcp: dict[str, object]
) -> None:
    assert wire.parse_elicitation_answer(result).to_mcp() == mcp


def test_an_answer_can_ask_not_to_be_asked_again() -> None:
    assert (
        wire.parse_elicitation_answer({"action": "accept", "_meta": {"persist": "session"}}).persist
        == "session"
    )
    assert wire.parse_elicitation_answer({"action": "accept"}).persist is None


def test_server_tables_become_typed_configs_with_the_reference_defaults(tmp_path: Path) -> None:
    table = {
        "web": {
            "url": "https://user:pw@mcp.example.com:8443/mcp?x=1",
            "bearer_token_env_var": "TOKEN",
            "env_http_headers": {"X-Team": "TEAM"},
            "tool_timeout_sec": 5,
        },
        "local": {
            "command": "srv",
            "args": ["--fast"],
            "env": {"A": "1"},
            "env_vars": ["EXTRA"],
            "cwd": "sub",
            "startup_timeout_ms": 2500,
            "disabled_tools": ["rm"],
            "tools": {"ls": {"approval_mode": "approve"}},
        },
        "broken": {"command": 5},
        "off": {"command": "srv", "enabled": False},
    }
    environ = {"PATH": "/bin", "SECRET": "no", "EXTRA": "yes", "TOKEN": "tok", "TEAM": "core"}
    broken, local, off, web = parse_servers(table, environ, tmp_path)
    assert local.env == {"PATH": "/bin", "EXTRA": "yes", "A": "1"}
    assert (local.cwd, local.startup_timeout, local.tool_timeout) == (
        tmp_path / "sub",
        2.5,
        DEFAULT_TOOL_TIMEOUT,
    )
    assert local.offers("ls") and not local.offers("rm") and local.approval_modes == {"ls": "approve"}
    assert local.auth_status == "unsupported" and local.http_origin is None and local.error is None
    assert web.is_http and web.http_origin == "https://mcp.example.com:8443"
    assert (
        web.bearer_token == "tok" and web.headers == {"X-Team": "core"} and web.auth_status == "bearerToken"
    )
    assert (web.startup_timeout, web.tool_timeout) == (DEFAULT_STARTUP_TIMEOUT, 5.0)
    assert broken.error is not None and "`command` must be a string" in broken.error
    assert not off.enabled


def test_status_updates_have_every_key_the_reference_sends() -> None:
    assert wire.startup_status("t", "s", "failed", "boom") == {
        "threadId": "t",
        "name": "s",
        "status": "failed",
        "error": "boom",
        "failureReason": None,
    }
