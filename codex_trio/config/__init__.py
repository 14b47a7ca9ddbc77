"""Configuration: the layer stack (`layers`) and the typed effective view (`effective`).

Import names from the module that owns them: `codex_trio.config.layers` for sources, layers,
merging and `ThreadConfigLoader`; `codex_trio.config.effective` for `load_config` and
`EffectiveConfig`. Neither module imports trio; reads are plain file I/O, so per-request
callers wrap them in `trio.to_thread.run_sync`.
"""
