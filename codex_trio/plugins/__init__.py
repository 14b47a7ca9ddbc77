"""Plugins and marketplaces: marketplace files on disk, git checkouts of them, the install cache
under CODEX_HOME, and the remote catalog (`remote_plugin`). The API family is
`codex_trio.api.plugins`; see docs/plugins.md.
"""
