"""Server-sent events, parsed from raw bytes as they arrive.

Works on bytes so that a multi-byte UTF-8 character split across network chunks is reassembled
before anything is decoded, and so that nothing is decoded that is never looked at.
"""

from __future__ import annotations

MAX_EVENT_BYTES = 32 * 1024 * 1024  # one event's data lines, and the line being read, together


class SSEError(ValueError):
    """The byte stream is not a usable event stream."""


class EventTooLarge(SSEError):
    """One event (its data lines so far, plus the line being read) passed the cap."""


class SSEParser:
    """Feed raw chunks; get back complete events as (event_type, data) byte pairs.

    Follows the WHATWG event-stream rules that matter here: lines end in LF or CRLF, a blank line
    dispatches the event, lines starting with ':' are comments, several data lines are joined with
    LF, one space after the colon is dropped. llama.cpp's `error: {...}` lines become events of
    type b"error".

    Bounded and linear: an event may hold at most `max_event_bytes` (EventTooLarge beyond, however
    it is split into lines and chunks), and every byte is copied a fixed number of times: complete
    lines are parsed as soon as they arrive, and only the line still being read is kept, in one
    growing buffer (a list of the chunks cost ~20x their bytes when a server trickled 2-byte ones).
    """

    __slots__ = ("_data", "_data_len", "_event", "_max", "_partial")

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._partial = bytearray()  # the line still being read (amortized appends)
        self._data: list[bytes] = []  # data lines of the event being read
        self._data_len = 0
        self._event = b""
        self._max = MAX_EVENT_BYTES if max_event_bytes is None else max_event_bytes

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        if b"\n" not in chunk:
            self._partial += chunk
            if len(self._partial) + self._data_len > self._max:
                raise self._too_large()
            return []
        if self._partial:
            self._partial += chunk
            chunk = bytes(self._partial)
            self._partial.clear()
        events: list[tuple[bytes, bytes]] = []
        # The block fast path only at an event boundary: no data lines and no `event:` type pending
        # from an earlier chunk (a CRLF chunk that ended after `event: error` must keep its type).
        if not self._data and not self._event and b"\r" not in chunk:
            tail = self._feed_blocks(chunk, events)
            if not tail:  # the usual case: the chunk ended with its last event
                return events
        else:
            tail = chunk
        lines = tail.split(b"\n")
        self._keep(lines.pop())
        for line in lines:
            self._line(line, events)
        return events

    def _feed_blocks(self, chunk: bytes, events: list[tuple[bytes, bytes]]) -> bytes:
        """The common case, LF line ends: split into events at blank lines; an event that is one
        `data: ` line needs no line-by-line parsing. Returns what follows the last whole event."""
        blocks = chunk.split(b"\n\n")
        tail = blocks.pop()
        for block in blocks:
            if block[:6] == b"data: " and b"\n" not in block:
                if len(block) - 6 > self._max:
                    raise self._too_large()
                events.append((b"", block[6:]))
            elif block:
                for line in block.split(b"\n"):
                    self._line(line, events)
                self._line(b"", events)
        return tail

    def _keep(self, tail: bytes) -> None:
        """Keep the line still being read."""
        if tail:
            self._partial += tail
            if len(self._partial) + self._data_len > self._max:
                raise self._too_large()

    def _too_large(self) -> EventTooLarge:
        return EventTooLarge(f"event-stream event larger than {self._max} bytes")

    def finish(self) -> list[tuple[bytes, bytes]]:
        """The stream ended: flush a last event that had no blank line after it."""
        events: list[tuple[bytes, bytes]] = []
        if self._partial:
            self._line(bytes(self._partial), events)
            self._partial.clear()
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[tuple[bytes, bytes]]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if self._data:
                events.append((self._event, b"\n".join(self._data)))
                self._data = []
                self._data_len = 0
            self._event = b""
            return
        if line[0] == 58:  # b":" comment / keep-alive
            return
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._append(value)
        elif field == b"event":
            self._event = value
        elif field == b"error":
            self._event = b"error"
            self._append(value)

    def _append(self, value: bytes) -> None:
        self._data.append(value)
        self._data_len += len(value) + 1
        if self._data_len > self._max:
            raise self._too_large()
