"""The wire protocol: pure data and rules, no I/O and no trio import.

Everything here can be tested synchronously; the async layers above it only move bytes.
Imports: the leaves `ids` and `os_errors` only (the import-linter layers in pyproject.toml).
"""
