"""Mailbox RPC over TCP: the supernode's server and the peers' client (thin asyncio adapters).

Frames are a 4-byte big-endian length and one ``mailbox_wire`` message. The
server decodes, asks ``MailboxCore.handle`` with the injected clock, encodes
the answer; it never interprets a request itself.

Invariants:
- Bounded: at most ``MAX_CONNECTIONS`` connections, ``MAX_FRAME_BYTES`` a frame,
  ``IDLE_TIMEOUT`` seconds of silence; an undecodable frame is counted by
  reason, logged at most once a minute per reason, and closes that connection
  (nothing else is affected).
- Retention runs every ``EXPIRE_EVERY`` seconds (``MailboxCore.expire``).
- The client sends one request at a time per connection and reconnects on any
  failure; each call has a timeout and raises ``MailboxUnavailableError``, so the
  outbox sees "this mailbox did not take it" and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import Counter
from collections.abc import Callable

from p2pnode.sessions.mailbox import MailboxCore
from p2pnode.sessions.mailbox_wire import (
    MAX_FRAME_BYTES,
    MailboxDecodeError,
    MailboxResponse,
    Request,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

__all__ = [
    "EXPIRE_EVERY",
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "MailboxClient",
    "MailboxServer",
    "MailboxUnavailableError",
]

MAX_CONNECTIONS = 256
IDLE_TIMEOUT = 60.0
EXPIRE_EVERY = 3600.0
REQUEST_TIMEOUT = 5.0
_LOG_EVERY = 60.0
_LENGTH = struct.Struct(">I")
log = logging.getLogger(__name__)


class MailboxUnavailableError(ConnectionError):
    """The mailbox did not answer (refused connection, timeout, bad frame)."""


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(_LENGTH.size)
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise MailboxDecodeError("frame too large")
    return await reader.readexactly(length)


def _frame(data: bytes) -> bytes:
    return _LENGTH.pack(len(data)) + data


class MailboxServer:
    """Serves one ``MailboxCore`` on a TCP port (port 0 picks one)."""

    def __init__(self, core: MailboxCore, clock: Callable[[], float]) -> None:
        self.core = core
        self.clock = clock
        self.dropped: Counter[str] = Counter()
        self._logged_at: dict[str, float] = {}
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()  # owned: close() waits for them

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)

    async def run_expiry(self) -> None:
        """Expire old items forever (own it in the caller's TaskGroup)."""
        while True:
            self.core.expire(self.clock())
            await asyncio.sleep(EXPIRE_EVERY)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        now = self.clock()
        if now - self._logged_at.get(reason, -_LOG_EVERY) >= _LOG_EVERY:
            self._logged_at[reason] = now
            log.info("mailbox: dropped a connection: %s (%d so far)", reason, self.dropped[reason])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= MAX_CONNECTIONS:
            self._drop("too-many-connections")
            writer.close()
            return
        self._writers.add(writer)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        try:
            while True:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT):
                        data = await _read_frame(reader)
                    request = decode_request(data)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                except MailboxDecodeError:
                    self._drop("malformed")
                    return
                response = self.core.handle(request, self.clock())
                writer.write(_frame(encode_response(response)))
                await writer.drain()
        finally:
            self._writers.discard(writer)
            if handler is not None:
                self._handlers.discard(handler)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class MailboxClient:
    """One peer's connection to one mailbox; requests are serialised."""

    def __init__(self, host: str, port: int, timeout: float = REQUEST_TIMEOUT) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def request(self, request: Request) -> MailboxResponse:
        async with self._lock:
            try:
                async with asyncio.timeout(self.timeout):  # wait_for may swallow a cancel
                    return await self._exchange(request)
            except (
                OSError,
                TimeoutError,
                asyncio.IncompleteReadError,
                MailboxDecodeError,
            ) as error:
                await self.close()
                raise MailboxUnavailableError(f"mailbox {self.host}:{self.port}: {error}") from None

    async def _exchange(self, request: Request) -> MailboxResponse:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        writer.write(_frame(encode_request(request)))
        await writer.drain()
        response = decode_response(await _read_frame(reader))
        if response.rid != request.rid:
            raise MailboxDecodeError("response to another request")
        return response

    async def close(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
