"""Wire types and pure shaping rules of the MCP family (no trio, no I/O, no `mcp` import).

Everything here takes and returns plain JSON values, so the MCP runtime (`codex_trio.mcp`)
stays a thin adapter between the `mcp` package's models and what the reference sends:

* params of `mcpServerStatus/list`, `mcpServer/tool/call`, `mcpServer/resource/read`;
* the `mcpToolCall` thread item and its `result`;
* the tools offered to the model: one Responses-API `namespace` tool per server, named
  `mcp__<server>`, whose functions carry the MCP tool names and a trimmed input schema;
* the output the model gets back (`Wall time: …` text, or content items);
* `mcpServer/elicitation/request` params, for a server's elicitation and for the approval of
  a tool call (the reference asks for that as an elicitation with `_meta.codex_approval_kind`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from codex_trio.protocol.converter import WIRE
from codex_trio.records import by_value

#: the prefix of the namespace that holds a server's tools (`mcp__<server>`).
NAMESPACE_PREFIX = "mcp__"
#: separator of a flat `mcp__<server>__<tool>` name (accepted from models that flatten).
NAME_DELIMITER = "__"

ToolCallStatus = Literal["inProgress", "completed", "failed"]
StartupState = Literal["starting", "ready", "failed", "cancelled"]
ElicitationAction = Literal["accept", "decline", "cancel"]


# ---------------------------------------------------------------------------- params
@by_value
@attrs.frozen(repr=False, eq=False)
class McpServerStatusListParams:
    """`mcpServerStatus/list` params (offset cursor paging)."""

    cursor: str | None = None
    limit: int | None = None
    server_name: str | None = None
    thread_id: str | None = None
    detail: Literal["full", "toolsAndAuthOnly"] | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class McpServerToolCallParams:
    """`mcpServer/tool/call` params: a tool call outside any turn."""

    thread_id: str
    server: str
    tool: str
    arguments: Any = None
    meta: Any = attrs.field(default=None, metadata={WIRE: "_meta"})


@by_value
@attrs.frozen(repr=False, eq=False)
class McpResourceReadParams:
    """`mcpServer/resource/read` params."""

    server: str
    uri: str
    thread_id: str | None = None
    connector_id: str | None = None
    origin_call_id: str | None = None
    target: Any = None
    meta: Any = attrs.field(default=None, metadata={WIRE: "_meta"})


# ---------------------------------------------------------------------------- the item
@by_value
@attrs.frozen(repr=False, eq=False)
class McpToolCallError:
    """Why an `mcpToolCall` item failed."""

    message: str


@by_value
@attrs.frozen(repr=False, eq=False)
class McpToolCallItem:
    """The `mcpToolCall` ThreadItem (key order as the reference sends it)."""

    type: Literal["mcpToolCall"] = attrs.field(default="mcpToolCall", kw_only=True)
    id: str
    server: str
    tool: str
    status: ToolCallStatus = attrs.field(default="inProgress", kw_only=True)
    arguments: Any
    app_context: None = attrs.field(default=None, kw_only=True)
    mcp_app_ui: None = attrs.field(default=None, kw_only=True)
    plugin_id: None = attrs.field(default=None, kw_only=True)
    read_only_hint: bool | None = None
    result: dict[str, Any] | None = None
    error: McpToolCallError | None = None
    duration_ms: int | None = None
    started_at_ms: int | None = None
    completed_at_ms: int | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class McpToolCallProgress:
    """`item/mcpToolCall/progress`: a progress message from the server running the call."""

    thread_id: str
    turn_id: str
    item_id: str
    message: str


def item_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """An MCP `CallToolResult` (wire JSON) as the item's `result`: content, structuredContent, _meta."""
    return {
        "content": [content_json(c) for c in result.get("content") or []],
        "structuredContent": result.get("structuredContent"),
        "_meta": result.get("_meta"),
    }


def tool_call_response(result: Mapping[str, Any]) -> dict[str, Any]:
    """An MCP `CallToolResult` as the `mcpServer/tool/call` response (absent fields left out)."""
    out: dict[str, Any] = {"content": [content_json(c) for c in result.get("content") or []]}
    if result.get("structuredContent") is not None:
        out["structuredContent"] = result["structuredContent"]
    out["isError"] = bool(result.get("isError"))
    if result.get("_meta") is not None:
        out["_meta"] = result["_meta"]
    return out


def content_json(content: Any) -> Any:
    """One content block without the keys newer protocol revisions add as null."""
    if not isinstance(content, Mapping):
        return content
    return {k: v for k, v in content.items() if v is not None}


# ---------------------------------------------------------------------------- what the model sees
def namespace_name(server: str) -> str:
    return f"{NAMESPACE_PREFIX}{server}"


def split_call_name(name: str, namespace: str | None) -> tuple[str, str] | None:
    """(server, tool) of a model call: `namespace="mcp__<server>"` + name, or a flat
    `mcp__<server>__<tool>` name; None when the call is not an MCP call."""
    if namespace is not None:
        if not namespace.startswith(NAMESPACE_PREFIX):
            return None
        server = namespace[len(NAMESPACE_PREFIX) :].removesuffix(NAME_DELIMITER)
        return (server, name) if server else None
    if not name.startswith(NAMESPACE_PREFIX):
        return None
    server, sep, tool = name[len(NAMESPACE_PREFIX) :].partition(NAME_DELIMITER)
    return (server, tool) if sep and server and tool else None


def namespace_tool(
    server: str, description: str | None, tools: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The Responses-API `namespace` tool that offers one server's tools (sorted by name)."""
    return {
        "type": "namespace",
        "name": namespace_name(server),
        "description": description or f"Tools provided by the `{server}` MCP server.",
        "tools": [model_function(t) for t in sorted(tools, key=lambda t: str(t.get("name", "")))],
    }


def model_function(tool: Mapping[str, Any]) -> dict[str, Any]:
    schema = tool.get("inputSchema")
    parameters = model_schema(schema if isinstance(schema, Mapping) else {"type": "object"})
    if "type" not in parameters:
        parameters = {"type": "object", **parameters}
    if parameters.get("type") == "object" and "properties" not in parameters:
        parameters["properties"] = {}
    return {
        "type": "function",
        "name": str(tool.get("name", "")),
        "description": str(tool.get("description") or ""),
        "strict": False,
        "parameters": parameters,
    }


def model_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON schema trimmed to what the model is sent: types, descriptions, enums, shapes.

    Titles, defaults and validation keywords are dropped, as the reference does.
    """
    out: dict[str, Any] = {}
    if "type" in schema:
        out["type"] = schema["type"]
    if isinstance(schema.get("description"), str):
        out["description"] = schema["description"]
    if isinstance(schema.get("enum"), list):
        out["enum"] = list(schema["enum"])
    items = schema.get("items")
    if isinstance(items, Mapping):
        out["items"] = model_schema(items)
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        out["properties"] = {
            str(k): model_schema(v) for k, v in sorted(properties.items()) if isinstance(v, Mapping)
        }
    if isinstance(schema.get("required"), list):
        out["required"] = list(schema["required"])
    for key in ("anyOf", "oneOf"):
        variants = schema.get(key)
        if isinstance(variants, list):
            out[key] = [model_schema(v) for v in variants if isinstance(v, Mapping)]
    if isinstance(schema.get("additionalProperties"), bool):
        out["additionalProperties"] = schema["additionalProperties"]
    return out


ModelOutput = str | list[dict[str, Any]]


def _wall(seconds: float) -> str:
    return f"Wall time: {seconds:.4f} seconds\nOutput:"


def model_output(result: Mapping[str, Any], seconds: float) -> ModelOutput:
    """The function_call_output of a finished call: the structured content as compact JSON
    text, else the content blocks as input items after a `Wall time` header."""
    structured = result.get("structuredContent")
    if structured is not None and not result.get("isError"):
        return f"{_wall(seconds)}\n{json.dumps(structured, separators=(',', ':'), ensure_ascii=False)}"
    items: list[dict[str, Any]] = [{"type": "input_text", "text": _wall(seconds)}]
    items.extend(_input_item(c) for c in result.get("content") or [])
    return items


def error_output(message: str, seconds: float) -> list[dict[str, Any]]:
    """The function_call_output of a call that did not run or failed outside the server."""
    return [{"type": "input_text", "text": _wall(seconds)}, {"type": "input_text", "text": message}]


def _input_item(content: Any) -> dict[str, Any]:
    if isinstance(content, Mapping):
        kind = content.get("type")
        if kind == "text" and isinstance(content.get("text"), str):
            return {"type": "input_text", "text": content["text"]}
        if kind == "image" and isinstance(content.get("data"), str):
            mime = content.get("mimeType") or "image/png"
            return {"type": "input_image", "image_url": f"data:{mime};base64,{content['data']}"}
    return {"type": "input_text", "text": json.dumps(content, ensure_ascii=False)}


# ---------------------------------------------------------------------------- elicitation
#: top-level keys of a form schema the client accepts (`McpElicitationSchema`).
_FORM_KEYS = ("$schema", "type", "properties", "required")
_PRIMITIVE_TYPES = ("string", "number", "integer", "boolean", "array")


class InvalidForm(ValueError):
    """A form schema the client protocol cannot carry (the elicitation is cancelled)."""


def form_schema(schema: Any) -> dict[str, Any]:
    """A server's `requestedSchema` in the client's typed form shape.

    Keys the client schema has no room for at the top level (a `title`, say) are dropped;
    a property that is not a primitive (or an enum array) makes the form unusable.
    """
    if not isinstance(schema, Mapping) or schema.get("type", "object") != "object":
        raise InvalidForm("requestedSchema must be an object schema")
    properties = schema.get("properties") or {}
    if not isinstance(properties, Mapping):
        raise InvalidForm("requestedSchema.properties must be an object")
    for name, prop in properties.items():
        primitive = isinstance(prop, Mapping) and (
            prop.get("type") in _PRIMITIVE_TYPES or isinstance(prop.get("enum"), list)
        )
        if not primitive:
            raise InvalidForm(f"property `{name}` is not a primitive")
    out = {k: schema[k] for k in _FORM_KEYS if k in schema}
    out["type"] = "object"
    out["properties"] = dict(properties)
    return out


def elicitation_params(
    thread_id: str, turn_id: str | None, server: str, request: Mapping[str, Any]
) -> dict[str, Any]:
    """`mcpServer/elicitation/request` params for an MCP `elicitation/create` (wire JSON).

    Raises InvalidForm for a form the client cannot be shown.
    """
    params: dict[str, Any] = {"threadId": thread_id, "turnId": turn_id, "serverName": server}
    mode = request.get("mode") or "form"
    params["mode"] = mode
    params["_meta"] = request.get("_meta")
    params["message"] = str(request.get("message", ""))
    if mode == "url":
        params["url"] = str(request.get("url", ""))
        params["elicitationId"] = str(request.get("elicitationId", ""))
    else:
        params["requestedSchema"] = form_schema(request.get("requestedSchema"))
    return params


def approval_params(
    thread_id: str,
    turn_id: str | None,
    server: str,
    tool: str,
    description: str | None,
    arguments: Any,
) -> dict[str, Any]:
    """The elicitation that asks the user to allow a tool call (the reference's shape)."""
    args = arguments if isinstance(arguments, Mapping) else {}
    return {
        "threadId": thread_id,
        "turnId": turn_id,
        "serverName": server,
        "mode": "form",
        "_meta": {
            "codex_approval_kind": "mcp_tool_call",
            "persist": ["session", "always"],
            "tool_name": tool,
            "tool_description": description,
            "tool_params": dict(args),
            "tool_params_display": [
                {"name": name, "value": args[name], "display_name": name} for name in sorted(args)
            ],
        },
        "message": f'Allow the {server} MCP server to run tool "{tool}"?',
        "requestedSchema": {"type": "object", "properties": {}},
    }


@by_value
@attrs.frozen(repr=False, eq=False)
class ElicitationAnswer:
    """The client's answer to `mcpServer/elicitation/request`."""

    action: ElicitationAction
    content: Any = None
    meta: Any = None

    def to_mcp(self) -> dict[str, Any]:
        """The MCP `ElicitResult` (content only with accept)."""
        out: dict[str, Any] = {"action": self.action}
        if self.action == "accept" and isinstance(self.content, Mapping):
            out["content"] = dict(self.content)
        return out

    @property
    def persist(self) -> str | None:
        """`session` / `always` when an approval answer asks not to be asked again."""
        value = self.meta.get("persist") if isinstance(self.meta, Mapping) else None
        return value if value in ("session", "always") else None


CANCELLED = ElicitationAnswer("cancel")
DECLINED = ElicitationAnswer("decline")


def parse_elicitation_answer(result: Any) -> ElicitationAnswer:
    """A client's result; anything unreadable counts as `cancel` (nothing is consented to)."""
    if not isinstance(result, Mapping):
        return CANCELLED
    action = result.get("action")
    if action not in ("accept", "decline", "cancel"):
        return CANCELLED
    return ElicitationAnswer(action, result.get("content"), result.get("_meta"))


# ---------------------------------------------------------------------------- status
def startup_status(
    thread_id: str | None, name: str, status: StartupState, error: str | None = None
) -> dict[str, Any]:
    """`mcpServer/startupStatus/updated` params."""
    return {"threadId": thread_id, "name": name, "status": status, "error": error, "failureReason": None}


def server_info_wire(info: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {
        "name": info.get("name", ""),
        "title": info.get("title"),
        "version": info.get("version", ""),
        "description": info.get("description"),
        "icons": info.get("icons"),
        "websiteUrl": info.get("websiteUrl"),
    }
