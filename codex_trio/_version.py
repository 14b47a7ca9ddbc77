"""Version numbers, in one place (pyproject.toml carries VERSION too)."""

#: this package's release.
VERSION = "0.1.0"
#: the reference release whose wire protocol we speak. Clients read it from `userAgent` and
#: gate features on it (the Python SDK refuses some params below 0.151.0), so it, not VERSION,
#: goes on the wire.
PROTOCOL_VERSION = "0.169.0"
