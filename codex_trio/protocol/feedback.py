"""`feedback/save` and `feedback/upload`: params and results. Pure."""

from __future__ import annotations

import attrs

from codex_trio.records import by_value


@by_value
@attrs.frozen(repr=False, eq=False)
class FeedbackUploadParams:
    classification: str
    reason: str | None = None
    thread_id: str | None = None
    include_logs: bool = False
    extra_log_files: list[str] | None = None
    tags: dict[str, str] | None = None


@by_value
@attrs.frozen(repr=False, eq=False)
class FeedbackSaveParams(FeedbackUploadParams):
    #: absolute, previously unused ZIP path on the server's host.
    save_path: str = attrs.field(kw_only=True)


@by_value
@attrs.frozen(repr=False, eq=False)
class FeedbackSaveResponse:
    saved_path: str
    thread_id: str
    prompt_hash: str | None


@by_value
@attrs.frozen(repr=False, eq=False)
class FeedbackUploadResponse:
    thread_id: str
    prompt_hash: str | None
