"""Bounds on client connections: how many may be open, and how long a client may take to send a request head.

asyncio accepts every connection it can, and aiohttp waits for a request's headers as long as the client
likes. Under the common soft limit of 1,024 open files, 1,100 idle half-open requests left no descriptor for
/healthz, the store or Docker, and asyncio logged its accept() error in a tight loop (issue 12). So every
connection passes a ConnectionGate: at the limit the oldest connection with no request in a handler makes
room (an idle keep-alive or a client still "sending" headers), and a connection that has not sent a
complete request head within header_timeout_s is closed. (The body's time is bounded where it is read:
server.state.read_body.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import cast

from aiohttp import web

logger = logging.getLogger(__name__)

FD_RESERVE = 256
"""Open files kept for everything but client connections: the store, Docker and notifier sockets, the
descriptors asyncio accepts in one burst before the gate sees them (the listen backlog)."""
BACKLOG = 128


def connection_limit(configured: int, open_files: int) -> int:
    """How many client connections may be open at once: the configured number, within the open-files limit
    minus FD_RESERVE (half the limit when that is tiny)."""
    return max(1, min(configured, max(open_files - FD_RESERVE, open_files // 2)))


class _Connection(asyncio.Protocol):
    """One client connection: aiohttp's handler for it, and what the gate needs to bound it. The transport's
    protocol is this object, so a route finds it with ``request.transport.get_protocol()``."""

    __slots__ = ("busy", "deadline", "gate", "handler", "transport")

    def __init__(self, gate: ConnectionGate, handler: asyncio.Protocol, deadline: float) -> None:
        self.gate = gate
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.busy = False
        """A request is in a handler: never closed for the limit or the header timeout."""
        self.deadline: float | None = deadline
        """When the request head being received must be complete; None while idle between requests."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.forget(self)
        self.handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.deadline is None and not self.busy:
            # The first bytes of the next request on a kept-alive connection: its head has the same time.
            self.deadline = self.gate.now() + self.gate.header_timeout_s
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def close(self) -> None:
        if self.transport is not None:
            # close() first sends what was written; a client that does not even read it gets abort(), which
            # frees the descriptor at once.
            if self.transport.get_write_buffer_size():
                self.transport.abort()
            else:
                self.transport.close()


class _Refused(asyncio.Protocol):
    """A connection over the limit while every open one is busy: a 503 and closed, before reading anything."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n"
        )
        transport.close()


class ConnectionGate:
    """The protocol factory of the listener: wraps aiohttp's, counts connections, evicts and times them out."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        limit: int,
        header_timeout_s: float,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.factory = factory
        self.limit = limit
        self.header_timeout_s = header_timeout_s
        self.now = now
        self._open: dict[_Connection, None] = {}  # oldest first
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    @property
    def open(self) -> int:
        return len(self._open)

    def __call__(self) -> asyncio.Protocol:
        if len(self._open) >= self.limit and not self._evict_one():
            self.refused += 1
            logger.warning(
                "connection limit (%d) reached and every connection is busy: refusing one", self.limit
            )
            return _Refused()
        connection = _Connection(self, self.factory(), self.now() + self.header_timeout_s)
        self._open[connection] = None
        return connection

    def _evict_one(self) -> bool:
        for connection in self._open:
            # A connection still in its TLS handshake has no transport yet: asyncio's handshake timeout
            # (header_timeout_s too) ends it.
            if not connection.busy and connection.transport is not None:
                self.forget(connection)
                connection.close()
                self.evicted += 1
                logger.info("connection limit (%d) reached: closed the oldest idle connection", self.limit)
                return True
        return False

    def forget(self, connection: _Connection) -> None:
        self._open.pop(connection, None)

    def sweep(self) -> None:
        """Close the connections whose request head is overdue."""
        now = self.now()
        closed = 0
        for connection in list(self._open):
            if connection.busy or connection.deadline is None or connection.deadline > now:
                continue
            if connection.transport is None:
                # A TLS handshake that failed never reaches connection_made or connection_lost.
                if now > connection.deadline + self.header_timeout_s:
                    self.forget(connection)
                continue
            self.forget(connection)
            connection.close()
            closed += 1
        if closed:
            self.timed_out += closed
            logger.info(
                "closed %d connections that sent no complete request head within %g s",
                closed,
                self.header_timeout_s,
            )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.header_timeout_s / 4))
            self.sweep()

    def close_all(self) -> None:
        for connection in list(self._open):
            self.forget(connection)
            if connection.transport is not None:
                connection.transport.abort()


def hold(request: web.Request) -> _Connection | None:
    """Marks the request's connection busy while the request is in a handler, so neither the limit nor the
    header timeout closes it; ``release`` it when the handler returns. (The handler reads the body within
    body_timeout_s; the response is written right after it returns, in the same step, before anything could
    evict the connection.) None when the connection is not behind a gate."""
    transport = request.transport
    connection = transport.get_protocol() if transport is not None else None
    if not isinstance(connection, _Connection):
        return None
    connection.busy = True
    connection.deadline = None
    return connection


def release(connection: _Connection | None) -> None:
    if connection is not None:
        connection.busy = False
