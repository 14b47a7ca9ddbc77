"""The agent: the Responses-API model client, the turn loop, tools and approvals.

Imports `threads`, `services`, `store`, `config`, `process`, `outgoing`, `connection`,
`protocol` and the leaves; never `mcp` or an API family (they plug in as `ToolProvider`s).
"""
