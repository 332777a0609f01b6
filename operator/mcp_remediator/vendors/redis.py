"""Redis connections for the Redis actions: where the URL comes from, how errors read.

``actions/redis.py`` resolves the URL (the operator default ``MCP_REDIS_URL`` for trusted
namespaces, or a Secret of the remediation's own namespace: ``actions/credentials``), then
calls ``parse_target`` on it, ``connect`` for one connection per step attempt, and
``step_failure`` to turn redis-py's exceptions into step failures that name the cause.

The URL carries the password, so it stays a ``SecretStr`` and is only unwrapped to open
the connection: messages name the server by host, port and db, and where the URL came
from, never by the URL itself. redis-py's own retries are switched off because the
engine owns the retry policy; a hidden retry would also run a purge slice twice.

What the server answered is quoted only when it is a Redis error reply (``-ERR …``) of one
short printable line; a protocol error — the URL points at something that does not speak
Redis, and redis-py quotes the bytes it got — is reported as such, without a byte of what
answered (``RedisProtocolError``): a URL from a Secret must not let a step read the first
line of an arbitrary service.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis.asyncio
import redis.exceptions
from pydantic import SecretStr
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mcp_remediator.errors import StepFailed, TransientFailure
from mcp_remediator.settings import Settings

SCHEMES = ("redis", "rediss")
# Answers a retry may fix: the server is failing over, busy with a script or loading.
TRANSIENT_REPLIES = ("BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "LOADING")
MAX_REPLY = 200


def _short_text(exc: BaseException) -> str | None:
    """The exception's text when it is one short line of printable ASCII, else ``None``."""
    text = str(exc).strip()
    if not text or len(text) > MAX_REPLY or not text.isascii() or not text.isprintable():
        return None
    return text


def server_reply(exc: redis.exceptions.RedisError) -> str:
    """The error reply the server sent (redis-py's text of a ``-ERR …`` line), when it is a
    short printable line; else only the exception's type."""
    return _short_text(exc) or f"an unexpected reply ({type(exc).__name__})"


def protocol_error(exc: BaseException) -> bool:
    """Whether the server did not speak Redis: redis-py raises ``InvalidResponse`` (quoting
    the bytes it got), and wraps it in a ``ConnectionError`` while connecting."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return any(
        isinstance(item, redis.exceptions.InvalidResponse) or "protocol error" in str(item).lower()
        for item in chain
    )


def connect_error(exc: redis.exceptions.ConnectionError) -> str:
    """Why a connection failed: redis-py's own sentence (the operating system's reason, the
    server closed it) when it is short printable text; else the exception's type."""
    return _short_text(exc) or type(exc).__name__


@dataclass(frozen=True)
class RedisTarget:
    """A Redis server to connect to; ``url`` holds the credentials and is never shown."""

    url: SecretStr
    source: str
    host: str
    port: int
    db: int
    tls: bool

    @property
    def address(self) -> str:
        """``host:port/db``: how messages name the server."""
        return f"{self.host}:{self.port}/{self.db}"


def parse_target(url: str, source: str) -> RedisTarget:
    """Check a ``redis://`` / ``rediss://`` URL; errors name ``source``, not the URL."""
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError:
        raise StepFailed(f"{source} is not a valid Redis URL", reason="RedisBadUrl") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise StepFailed(
            f"{source} is not a redis:// or rediss:// URL with a host", reason="RedisBadUrl"
        )
    db_text = parts.path.lstrip("/") or parse_qs(parts.query).get("db", ["0"])[0]
    if not db_text.isdigit():
        raise StepFailed(f"{source}: the database must be a number", reason="RedisBadUrl")
    return RedisTarget(
        url=SecretStr(url),
        source=source,
        host=parts.hostname,
        port=port,
        db=int(db_text),
        tls=parts.scheme == "rediss",
    )


@asynccontextmanager
async def connect(target: RedisTarget, settings: Settings) -> AsyncIterator[redis.asyncio.Redis]:
    """One connection to ``target`` with the configured timeouts, open on entry, closed on exit.

    Connection errors surface as redis-py exceptions; an option in the URL's query that
    redis-py rejects is a ``StepFailed`` naming the option, never the URL.
    """
    try:
        client = redis.asyncio.Redis.from_url(
            target.url.get_secret_value(),
            socket_connect_timeout=settings.redis_timeout_seconds,
            socket_timeout=settings.redis_timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            single_connection_client=True,
        )
    except ValueError as exc:
        raise StepFailed(f"{target.source}: {exc}", reason="RedisBadUrl") from None
    try:
        try:
            await client.initialize()
        except TypeError as exc:
            # redis-py hands unknown query options to the connection class's constructor.
            raise StepFailed(
                f"{target.source} has an option redis-py does not know: {exc}",
                reason="RedisBadUrl",
            ) from None
        yield client
    finally:
        await client.aclose()


class Script:
    """A Lua script run with EVALSHA straight on the connection that ``connect`` opened.

    ``Redis.evalsha`` costs about 200 µs of Python per call (locks, retry and event
    hooks); the connection's own send and read about 85 µs (redis-py 8, measured on the
    2-core benchmark machine). A purge makes one call per time slice, about a thousand
    per million keys, so this is several percent of a whole purge. Errors are redis-py's
    exceptions, as through the client.
    """

    def __init__(self, client: redis.asyncio.Redis, source: str):
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, *args: str | int) -> Any:
        connection = self.client.connection
        if connection is None:
            raise RuntimeError("Script needs the single connection that connect() opens")
        try:
            return await self._evalsha(connection, args)
        except redis.exceptions.NoScriptError:
            # First use on this server, or its script cache was flushed by a restart.
            await connection.send_command("SCRIPT", "LOAD", self.source)
            await connection.read_response()
            return await self._evalsha(connection, args)

    async def _evalsha(self, connection: Any, args: tuple[str | int, ...]) -> Any:
        await connection.send_command("EVALSHA", self.sha, 0, *args)
        return await connection.read_response()


def step_failure(
    exc: redis.exceptions.RedisError, target: RedisTarget, doing: str, *, timeout: float
) -> StepFailed:
    """The step failure for a redis-py error while ``doing`` something on ``target``.

    ``timeout`` is the socket timeout that applied (redis-py's messages carry none).
    """
    where = f"Redis at {target.address}"
    if protocol_error(exc):
        return StepFailed(
            f"{where} did not answer as a Redis server while {doing} (protocol error): check "
            f"{target.source}",
            reason="RedisProtocolError",
        )
    detail = server_reply(exc)
    if isinstance(exc, redis.exceptions.AuthenticationError):
        return StepFailed(
            f"{where} rejected the credentials from {target.source} while {doing}: {detail}",
            reason="RedisAuthFailed",
        )
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return StepFailed(
            f"the Redis user of {target.source} may not do this while {doing}: {detail}",
            reason="RedisNoPermission",
        )
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        # Right after a failover the address may still reach the old primary; a retry
        # reconnects and may reach the new one.
        return TransientFailure(
            f"{where} is a read-only replica; {doing} needs the primary", reason="RedisReadOnly"
        )
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return StepFailed(
            f"{where} is out of memory (used memory above maxmemory) and refused {doing}",
            reason="RedisOutOfMemory",
        )
    if isinstance(exc, redis.exceptions.TimeoutError):
        return TransientFailure(
            f"{where} did not answer within {timeout:g}s while {doing}",
            reason="RedisTimeout",
        )
    if isinstance(exc, redis.exceptions.BusyLoadingError):
        return TransientFailure(f"{where} is loading its dataset while {doing}", reason="RedisBusy")
    if isinstance(exc, redis.exceptions.ConnectionError):
        return TransientFailure(
            f"cannot reach {where} while {doing}: {connect_error(exc)}",
            reason="RedisUnavailable",
        )
    if isinstance(exc, redis.exceptions.ResponseError):
        text = str(exc).strip()
        if text.startswith(("MOVED", "ASK ")):
            return StepFailed(
                f"{where} is a Redis Cluster node; the Redis actions need a standalone server",
                reason="RedisError",
            )
        if text.upper().startswith(TRANSIENT_REPLIES):
            return TransientFailure(f"{where} is busy while {doing}: {detail}", reason="RedisBusy")
    return StepFailed(f"{where} answered an error while {doing}: {detail}", reason="RedisError")
