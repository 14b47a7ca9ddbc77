"""API families: one module per method family, each owning its state and cancel scopes."""
