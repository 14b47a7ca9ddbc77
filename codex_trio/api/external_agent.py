"""`externalAgentConfig/detect`: what another agent's setup could be imported from.

This server implements no importer (`externalAgentConfig/import` is unknown here), so it
never offers anything to import: the answer is the reference's "nothing found" shape, and
the TUI's `/import` then says that there is no compatible setup.
"""

from __future__ import annotations

from typing import Any

from codex_trio.protocol.catalog import ExternalAgentConfigDetectParams
from codex_trio.routing import RequestContext, Route, route


class ExternalAgentApi:
    """The external-agent family: detection only, and it finds nothing it could import."""

    def routes(self) -> list[Route]:
        """The family's methods."""
        return [route("externalAgentConfig/detect", ExternalAgentConfigDetectParams, self.detect)]

    async def detect(self, ctx: RequestContext, params: ExternalAgentConfigDetectParams) -> dict[str, Any]:
        """`externalAgentConfig/detect`: no importable items (no importer exists here)."""
        return {"items": [], "connectors": []}
