"""Transports: bytes <-> whole messages, and connection open/close. Nothing else.

A transport never imports an API module; it hands each connection a `MessageStream`.
Imports: `protocol` and the leaves only.
"""
