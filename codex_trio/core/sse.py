"""An incremental decoder for `text/event-stream` (server-sent events).

Pure: bytes in, events out, no I/O. It follows the WHATWG rules that matter for the
Responses API: lines end in LF, CRLF or CR; `event:` names the event, `data:` lines are
joined with LF, `id:`/`retry:` are kept, comments (`:`) are skipped, and a blank line
dispatches. An event with no data is dropped, as browsers do.
"""

from __future__ import annotations

import attrs

from codex_trio.records import by_value

#: bytes a single event may hold before the stream is declared broken (a runaway line).
MAX_EVENT_BYTES = 16 * 1024 * 1024


class SseError(Exception):
    """The stream is not valid SSE (an event larger than MAX_EVENT_BYTES)."""


@by_value
@attrs.frozen(repr=False, eq=False)
class SseEvent:
    """One dispatched event: `event` defaults to "message" as the spec says."""

    event: str
    data: str
    id: str | None = None
    retry: int | None = None


class SseDecoder:
    """Feed it chunks as they arrive; it returns the events each chunk completed."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_event_bytes
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None
        self._pending = 0
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if not self._buffer and not self._skip_lf and b"\r" not in chunk:
            return self._feed_lf(chunk)
        return self._feed_general(chunk)

    def _feed_lf(self, chunk: bytes) -> list[SseEvent]:
        """The common case (LF line ends, nothing buffered): split whole lines at once."""
        events: list[SseEvent] = []
        lines = chunk.split(b"\n")
        rest = lines.pop()
        for raw in lines:
            event = self._line(raw)
            if event is not None:
                events.append(event)
        if rest:
            self._buffer += rest
            if len(self._buffer) + self._pending > self._max:
                raise SseError(f"server-sent event larger than {self._max} bytes")
        return events

    def _feed_general(self, chunk: bytes) -> list[SseEvent]:
        events: list[SseEvent] = []
        buffer = self._buffer
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buffer += chunk
        start = 0
        size = len(buffer)
        while start < size:
            lf = buffer.find(b"\n", start)
            cr = buffer.find(b"\r", start, lf if lf != -1 else size)
            if cr != -1:
                end, nxt = cr, cr + 1
                if nxt < size and buffer[nxt] == 0x0A:
                    nxt += 1
                elif nxt == size:
                    # a CR at the end of the chunk may be the first half of CRLF
                    self._skip_lf = True
            elif lf != -1:
                end, nxt = lf, lf + 1
            else:
                break
            event = self._line(bytes(buffer[start:end]))
            if event is not None:
                events.append(event)
            start = nxt
        del buffer[:start]
        if len(buffer) + self._pending > self._max:
            raise SseError(f"server-sent event larger than {self._max} bytes")
        return events

    def _line(self, raw: bytes) -> SseEvent | None:
        if not raw:
            return self._dispatch()
        self._pending += len(raw)
        if self._pending > self._max:
            raise SseError(f"server-sent event larger than {self._max} bytes")
        line = raw.decode("utf-8", "replace")
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        self._pending = 0
        if not self._data:
            self._event = ""
            return None
        event = SseEvent(self._event or "message", "\n".join(self._data), self._id, self._retry)
        self._event = ""
        self._data = []
        self._retry = None
        return event

    def close(self) -> list[SseEvent]:
        """End of stream: an unterminated final event is discarded, per the spec."""
        self._buffer.clear()
        self._data = []
        self._event = ""
        return []
