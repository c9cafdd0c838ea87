"""The listener: the aiohttp application on one TCP (or TLS) socket, behind a ConnectionGate, with aiohttp's
own complaints about malformed requests logged as what they are (a client's fault, one line).
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from remediator.server.limits import BACKLOG, ConnectionGate, connection_limit

logger = logging.getLogger(__name__)
http_logger = logging.getLogger("remediator.server.http")
"""aiohttp's own request handling logs here (malformed requests, handler errors), through ClientErrorFilter."""


class ClientErrorFilter(logging.Filter):
    """aiohttp logs every request it cannot parse (a client's garbage, a port scan) at ERROR with a
    traceback. That is the client's fault: one INFO line with the reason, no traceback. Errors in our own
    handlers (500s) stay ERROR with their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500:
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "malformed request from %s: %s %s"
            # One line: aiohttp's message quotes the offending bytes (escaped) on lines of their own.
            reason = " ".join(str(exc.message).split()) or type(exc).__name__
            record.args = (peer, exc.code, reason[:300])
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = None
            record.exc_text = None
        return True


class HttpServer:
    """The aiohttp application on one TCP (or TLS) listener, behind a ConnectionGate. The application's
    middleware (``server.edge``) holds a connection busy while its request is in a handler."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        header_timeout_s: float,
        open_files: int,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.header_timeout_s = header_timeout_s
        self.max_connections = connection_limit(max_connections, open_files)
        if self.max_connections < max_connections:
            logger.warning(
                "at most %d connections (not %d): the open-files limit is %d",
                self.max_connections,
                max_connections,
                open_files,
            )
        self._app = app
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.gate: ConnectionGate | None = None

    async def start(self) -> int:
        """Listen; the port actually bound (``port`` 0 picks a free one)."""
        if not any(isinstance(f, ClientErrorFilter) for f in http_logger.filters):
            http_logger.addFilter(ClientErrorFilter())
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False, logger=http_logger)
        self._runner = runner
        await runner.setup()
        assert runner.server is not None
        self.gate = gate = ConnectionGate(runner.server, self.max_connections, self.header_timeout_s)
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            gate,
            self.host,
            self.port,
            ssl=self.ssl_context,
            backlog=BACKLOG,
            reuse_address=True,
            ssl_handshake_timeout=self.header_timeout_s if self.ssl_context is not None else None,
        )
        self._sweeper = asyncio.create_task(gate.run(), name="http-connection-sweeper")
        sockets = self._listener.sockets
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        logger.info(
            "at most %d connections; request heads within %g s",
            self.max_connections,
            self.header_timeout_s,
        )
        return self.port

    async def cleanup(self) -> None:
        """Stop listening, finish the requests in handlers (aiohttp's graceful shutdown), close the rest."""
        if self._listener is not None:
            self._listener.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.gate is not None:
            self.gate.close_all()
        if self._listener is not None:
            await self._listener.wait_closed()
