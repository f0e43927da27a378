"""The per-request JSONL file (`--output-jsonl`), written in whole lines.

A run appends one line per finished request. The lines are kept in a small buffer and written with
one `write()` of whole lines at a time, so that the workers of a pool (workers.py) can all append to
the one file their parent created: with O_APPEND, each write lands at the end of the file at once
(Linux, local file systems), and no line is ever split between two writes, so lines of different
workers interleave but never mix. Memory stays at the buffer's size however long the run.
"""

from __future__ import annotations

import os

__all__ = ["JsonlWriter"]

FLUSH_BYTES = 16 * 1024


class JsonlWriter:
    def __init__(self, path: str, append: bool = False) -> None:
        """`append`: add to the file (a pool's worker); otherwise it is created or emptied."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
        self._fd = os.open(path, flags, 0o644)
        self._buffer = bytearray()

    def write(self, line: bytes) -> None:
        """One whole line, newline included."""
        self._buffer += line
        if len(self._buffer) >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        view = memoryview(self._buffer)
        while view:
            view = view[os.write(self._fd, view) :]
        view.release()
        self._buffer.clear()

    def close(self) -> None:
        if self._fd >= 0:
            self.flush()
            os.close(self._fd)
            self._fd = -1
