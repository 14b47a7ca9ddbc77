"""API families: one module per method family, each owning its state and cancel scopes.

A family imports the layers below it (`routing`, `services`, `threads`, `core`, `mcp`, `config`,
`store`, `process`, `connection`, `protocol`); never `dispatch` or `server`, and never another
family (helpers such as `fs_ops`, `fs_watch`, `fuzzy` belong to the family that imports them).
The import-linter contracts in pyproject.toml enforce this.
"""
