"""The method table's pure half: which params type a method takes and what gates it.

`MethodSpec` says how to read a request; the dispatcher pairs each spec with a handler.
"""

from __future__ import annotations

from typing import Any

import attrs

from codex_trio.protocol.converter import WireError, expected_variants, structure
from codex_trio.protocol.envelope import MISSING
from codex_trio.protocol.errors import RpcError, invalid_request
from codex_trio.records import by_value


@by_value
@attrs.frozen(repr=False, eq=False)
class MethodSpec:
    """One client->server method.

    `params` is None for methods that take no params (absent, `null` or anything else is
    accepted); otherwise `params` must be present and deserialize into that type.
    """

    name: str
    params: type[Any] | None
    experimental: bool = False

    def read_params(self, raw: Any) -> Any:
        if self.params is None:
            return None
        if raw is MISSING or raw is None:
            raise invalid_request("Invalid request: missing field `params`")
        try:
            return structure(raw, self.params)
        except WireError as exc:
            raise invalid_request(f"Invalid request: {exc}") from None


def unknown_method(method: str, known: list[str]) -> RpcError:
    """The reference's answer to a method it has no variant for (serde's enum wording)."""
    return invalid_request(f"Invalid request: unknown variant `{method}`, {expected_variants(known)}")


def experimental_required(method: str) -> RpcError:
    return invalid_request(f"{method} requires experimentalApi capability")
