"""Server-sent events, parsed from raw bytes as they arrive.

Works on bytes so that a multi-byte UTF-8 character split across network chunks is reassembled
before anything is decoded, and so that nothing is decoded that is never looked at.
"""

from __future__ import annotations

MAX_LINE_BYTES = 32 * 1024 * 1024


class SSEError(ValueError):
    """The byte stream is not a usable event stream (for example one line larger than the cap)."""


class SSEParser:
    """Feed raw chunks; get back complete events as (event_type, data) byte pairs.

    Follows the WHATWG event-stream rules that matter here: lines end in LF or CRLF, a blank line
    dispatches the event, lines starting with ':' are comments, several data lines are joined with
    LF, one space after the colon is dropped. llama.cpp's `error: {...}` lines become events of
    type b"error".
    """

    __slots__ = ("_data", "_event", "_partial", "_partial_len")

    def __init__(self) -> None:
        self._partial: list[bytes] = []  # pieces of a line not yet ended (kept as a list: no O(n^2) joins)
        self._partial_len = 0
        self._data: list[bytes] = []
        self._event = b""

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        if b"\n" not in chunk:
            self._partial.append(chunk)
            self._partial_len += len(chunk)
            if self._partial_len > MAX_LINE_BYTES:
                raise SSEError(f"event-stream line longer than {MAX_LINE_BYTES} bytes")
            return []
        if self._partial:
            self._partial.append(chunk)
            chunk = b"".join(self._partial)
            self._partial = []
        # The block fast path only at an event boundary: no data lines and no `event:` type pending
        # from an earlier chunk (a CRLF chunk that ended after `event: error` must keep its type).
        if not self._data and not self._event and b"\r" not in chunk:
            return self._feed_blocks(chunk)
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if tail:
            self._partial.append(tail)
        self._partial_len = len(tail)
        events: list[tuple[bytes, bytes]] = []
        for line in lines:
            self._line(line, events)
        return events

    def _feed_blocks(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        """The common case, LF line ends: split into events at blank lines; an event that is one
        `data: ` line needs no line-by-line parsing."""
        blocks = chunk.split(b"\n\n")
        tail = blocks.pop()  # an event not yet ended (lines only matter once it is dispatched)
        if tail:
            self._partial.append(tail)
        self._partial_len = len(tail)
        events: list[tuple[bytes, bytes]] = []
        for block in blocks:
            if block[:6] == b"data: " and b"\n" not in block:
                events.append((b"", block[6:]))
            elif block:
                for line in block.split(b"\n"):
                    self._line(line, events)
                self._line(b"", events)
        return events

    def finish(self) -> list[tuple[bytes, bytes]]:
        """The stream ended: flush a last event that had no blank line after it."""
        events: list[tuple[bytes, bytes]] = []
        if self._partial:
            self._line(b"".join(self._partial), events)
            self._partial = []
            self._partial_len = 0
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[tuple[bytes, bytes]]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if self._data:
                events.append((self._event, b"\n".join(self._data)))
                self._data = []
            self._event = b""
            return
        if line[0] == 58:  # b":" comment / keep-alive
            return
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value
        elif field == b"error":
            self._event = b"error"
            self._data.append(value)
