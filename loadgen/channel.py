"""Messages between a pool's parent and its workers (workers.py, worker.py): pickled objects with a
length prefix, over one end of a socket pair each, on the event loop (asyncio streams: a send never
blocks the loop, a read waits for the whole message).

Only a parent and the children it started use a channel, so the pickles come from this program;
a message longer than MAX_MESSAGE_BYTES is refused all the same (a worker's tick is a few KiB, a
phase's final stats some hundred KiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import socket

__all__ = ["MAX_MESSAGE_BYTES", "Channel", "ChannelClosed"]

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_HEADER = 8


class ChannelClosed(Exception):
    """The other side has gone (its end closed, or it sent what is not a message)."""


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self.bytes_sent = 0

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    def send(self, message: object) -> None:
        """Queue one message (sent as the loop gets to it); nothing once the other side has gone."""
        if self._writer.is_closing():
            return
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(len(data).to_bytes(_HEADER, "big") + data)
        self.bytes_sent += _HEADER + len(data)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.drain()

    async def recv(self) -> object:
        try:
            size = int.from_bytes(await self._reader.readexactly(_HEADER), "big")
            if size > MAX_MESSAGE_BYTES:
                raise ChannelClosed(f"a message of {size} bytes (at most {MAX_MESSAGE_BYTES})")
            return pickle.loads(await self._reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError, OSError, pickle.UnpicklingError) as exc:
            raise ChannelClosed(str(exc) or type(exc).__name__) from exc

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
