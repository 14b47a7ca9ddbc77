"""Configuration: the layer stack (`layers`) and the typed effective view (`effective`).

Import names from the module that owns them: `codex_trio.config.sources` for sources, layers
and `ThreadConfigLoader`; `codex_trio.config.layers` for the stack and merging;
`codex_trio.config.effective` for `load_config` and `EffectiveConfig`. None imports trio;
reads are plain file I/O, so per-request callers wrap them in `trio.to_thread.run_sync`.
"""
