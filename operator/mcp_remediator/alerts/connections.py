"""The receiver's connection limits, beneath aiohttp's HTTP handling.

aiohttp bounds how large a request's line and headers may be, not how long they may take:
by default a connection whose headers trickle in a byte at a time stays open about an
hour (``keepalive_timeout=3630``), and nothing caps how many such connections there are.
``ConnectionGuard`` wraps the protocol of each accepted connection (aiohttp's
``RequestHandler``, which it drives unchanged) in a ``GuardedConnection`` that enforces:

- **a cap** (``MCP_RECEIVER_MAX_CONNECTIONS``): a connection beyond it first closes the
  longest-idle kept-alive connection; with none idle it is answered ``503`` with
  ``Retry-After: 1`` and ``Connection: close`` (a JSON error, as every answer of the
  receiver), half-closed so that the client reads it, and aborted a second later. It
  never reaches aiohttp. In a flood, once a cap's worth of refused connections are still
  reading their 503, further ones are aborted unanswered.
- **a header timeout** (``MCP_RECEIVER_HEADER_TIMEOUT_SECONDS``): a request's line and
  headers must be complete that long after the connection opened or, on a kept-alive
  connection, after the request's first byte. Past it the connection is closed — with a
  ``503`` (``Retry-After: 1``) first when it was the connection's first request. Not a
  ``408``: Alertmanager never retries a 4xx, and headers that came too slowly (a stalled
  network, a buffering proxy) may come in time on a retry.
- **an idle bound** (``MCP_RECEIVER_KEEPALIVE_TIMEOUT_SECONDS``): a kept-alive connection
  with no request for that long is closed.
- **a size bound on the headers** (``MAX_HEADER_BYTES``, 64 KiB in all; aiohttp's limits
  are per line and field): past it the connection is closed, with a ``431`` first when it
  was the connection's first request. So a connection buffers at most that much of them.
  A 4xx, as a retry sends the same headers.

Request boundaries come from the receiver's outermost request handler (``_serve``, around
aiohttp's application): aiohttp calls it as soon as a request's headers are parsed
(``request_started``), and it returns before the response is written
(``request_finished``). The body's time is the handler's to bound (the
receiver reads it under ``MCP_RECEIVER_BODY_TIMEOUT_SECONDS`` and answers ``503``).

Counted in ``mcp_receiver_connections`` (open now) and
``mcp_receiver_dropped_connections_total{reason}`` (``limit``, ``evicted``, ``headers``
for both header bounds; the receiver adds ``body``). Used by ``alerts.receiver`` only.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

from mcp_remediator.metrics import OperatorMetrics
from mcp_remediator.settings import Settings

# How long a closed connection may take to flush its last answer before it is aborted.
CLOSE_GRACE_SECONDS = 1.0
# A request's line and headers in all (Alertmanager's are well under 1 KiB; nginx allows
# 32 KiB by default).
MAX_HEADER_BYTES = 64 * 1024
HEADER_END = b"\r\n\r\n"  # aiohttp accepts no other line ending

Phase = Literal["headers", "active", "idle"]


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    keepalive_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            header_timeout=settings.receiver_header_timeout_seconds,
            keepalive_timeout=settings.receiver_keepalive_timeout_seconds,
            max_connections=settings.receiver_max_connections,
        )


def canned_response(status: int, reason: str, message: str, *headers: str) -> bytes:
    """A complete HTTP/1.1 answer with a JSON error, closing the connection."""
    body = json.dumps({"error": message}).encode()
    lines = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json; charset=utf-8",
        f"Content-Length: {len(body)}",
        *headers,
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class ConnectionGuard:
    """The limits of one receiver's connections; ``factory`` wraps aiohttp's protocol."""

    def __init__(self, limits: Limits, metrics: OperatorMetrics):
        self.limits = limits
        self.metrics = metrics
        self._open: dict[asyncio.BaseTransport, GuardedConnection] = {}
        self._idle: OrderedDict[GuardedConnection, None] = OrderedDict()  # oldest first
        self._refused: set[asyncio.Transport] = set()
        header = limits.header_timeout
        self.header_timeout_answer = canned_response(
            503,
            "Service Unavailable",
            f"request line and headers not received within {header:g}s "
            "(MCP_RECEIVER_HEADER_TIMEOUT_SECONDS); retry",
            "Retry-After: 1",
        )
        self.header_size_answer = canned_response(
            431,
            "Request Header Fields Too Large",
            f"request line and headers over {MAX_HEADER_BYTES} bytes",
        )
        self.limit_answer = canned_response(
            503,
            "Service Unavailable",
            f"the receiver has {limits.max_connections} connections open "
            "(MCP_RECEIVER_MAX_CONNECTIONS); retry later",
            "Retry-After: 1",
        )

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """The protocol factory to serve with: each connection guarded, ``inner`` within."""
        return lambda: GuardedConnection(self, inner)

    @property
    def open(self) -> int:
        return len(self._open)

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        connection = self._open.get(transport) if transport is not None else None
        if connection is not None:
            connection.started()

    def request_finished(self, transport: asyncio.BaseTransport | None) -> None:
        connection = self._open.get(transport) if transport is not None else None
        if connection is not None:
            connection.finished()

    def close_refused(self) -> None:
        """Abort the connections still reading their 503 (aiohttp closes the others)."""
        for transport in list(self._refused):
            transport.abort()

    # -- for GuardedConnection -----------------------------------------------------------

    def _admit(self, connection: GuardedConnection, transport: asyncio.BaseTransport) -> bool:
        if len(self._open) >= self.limits.max_connections:
            if not self._idle:
                return False
            oldest = next(iter(self._idle))
            self.metrics.dropped_connections.labels("evicted").inc()
            oldest.close()
        self._open[transport] = connection
        self.metrics.connections.set(len(self._open))
        return True

    def _forget(self, connection: GuardedConnection, transport: asyncio.BaseTransport) -> None:
        if self._open.get(transport) is connection:
            del self._open[transport]
            self.metrics.connections.set(len(self._open))
        self._idle.pop(connection, None)

    def _set_idle(self, connection: GuardedConnection, idle: bool) -> None:
        if idle:
            self._idle[connection] = None
        else:
            self._idle.pop(connection, None)


class GuardedConnection(asyncio.Protocol):
    """One connection: refused at the cap, else aiohttp's protocol under the timeouts."""

    def __init__(self, guard: ConnectionGuard, inner: Callable[[], asyncio.Protocol]):
        self._guard = guard
        self._make_inner = inner
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._phase: Phase = "headers"
        self._timer: asyncio.TimerHandle | None = None
        self._received = False  # bytes of the awaited request arrived
        self._head_bytes = 0  # of them, before the end of its headers
        self._head_tail = b""  # their last three bytes, for an end split across reads
        self._head_done = False  # the end of its headers arrived
        self._served = 0  # requests begun on this connection

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if not self._guard._admit(self, transport):
            self._refuse()
            return
        self._inner = self._make_inner()
        self._inner.connection_made(transport)
        self._arm(self._guard.limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # refused: whatever comes is discarded
        if self._phase == "idle":
            self._phase = "headers"
            self._guard._set_idle(self, False)
            self._arm(self._guard.limits.header_timeout)
        if self._phase == "headers" and data:
            self._received = True
            if not self._head_done and self._too_much_head(data):
                self._guard.metrics.dropped_connections.labels("headers").inc()
                self.close(self._guard.header_size_answer if self._served == 0 else b"")
                return
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._inner is None else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._transport is not None:
            self._guard._refused.discard(self._transport)
            self._guard._forget(self, self._transport)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # -- what the guard calls ------------------------------------------------------------

    def started(self) -> None:
        self._phase = "active"
        self._served += 1
        self._received = False
        self._head_bytes, self._head_tail, self._head_done = 0, b"", False
        self._disarm()
        self._guard._set_idle(self, False)

    def finished(self) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._phase = "idle"
        self._guard._set_idle(self, True)
        self._arm(self._guard.limits.keepalive_timeout)

    def close(self, answer: bytes = b"") -> None:
        """Close now (after ``answer``); abort if the client has not taken it in time."""
        self._disarm()
        transport = self._transport
        if transport is None:
            return
        if self._inner is not None:
            self._guard._forget(self, transport)
        if answer and not transport.is_closing():
            transport.write(answer)
        transport.close()
        if transport.get_write_buffer_size():
            self._timer = asyncio.get_running_loop().call_later(
                CLOSE_GRACE_SECONDS, transport.abort
            )

    def _too_much_head(self, data: bytes) -> bool:
        """Count ``data`` as header bytes until the headers' end; true past the bound."""
        seen = self._head_tail + data
        end = seen.find(HEADER_END)
        if end >= 0:
            self._head_done = True
            self._head_bytes += end + len(HEADER_END) - len(self._head_tail)
        else:
            self._head_bytes += len(data)
            self._head_tail = seen[-(len(HEADER_END) - 1) :]
        return self._head_bytes > MAX_HEADER_BYTES

    # -- timers --------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._phase == "headers":
            self._guard.metrics.dropped_connections.labels("headers").inc()
            first = self._served == 0 and self._received
            self.close(self._guard.header_timeout_answer if first else b"")
        elif self._phase == "idle":
            self.close()

    def _refuse(self) -> None:
        guard, transport = self._guard, self._transport
        assert transport is not None
        guard.metrics.dropped_connections.labels("limit").inc()
        if len(guard._refused) >= guard.limits.max_connections:
            transport.abort()  # a flood: a cap's worth are reading their 503 already
            return
        guard._refused.add(transport)
        transport.write(guard.limit_answer)
        if transport.can_write_eof():
            transport.write_eof()  # the client reads the 503, then EOF; we read on
        self._timer = asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, transport.abort)
