"""The Alertmanager receiver: an aiohttp server in the operator's process, next to Kopf.

Endpoints: ``POST /alerts`` (webhook payload version 4), ``GET /healthz`` (liveness),
``GET /readyz`` (ready once the runbook cache is warm), ``GET /metrics`` (Prometheus text).

``POST /alerts`` answers by Alertmanager's retry contract (``notify.Retrier``, 0.25 to
0.34): a 2xx is delivered, a 5xx is retried with backoff until the notification's time is
up, and every 4xx, 408 and 429 included, is never retried: the notification is dropped
and only Alertmanager's log keeps our message. So a condition that a retry can fix is a
5xx, and a 4xx is kept for what the same request will meet again, with a message that
says what to change:

- 200 with a JSON summary of what became of every alert (``ingest.Summary``): each is a
  remediation, a duplicate, a recorded skip, unmatched, a resolution, or ``failed``
  (logged: an API answer no retry changes, such as RBAC's 403, for that alert alone).
- 401, a missing or wrong bearer token (compared in constant time): the token is read at
  start, so only a change of configuration helps.
- 413, a body over ``MCP_RECEIVER_MAX_BODY_BYTES``: a retry sends the same body; the
  message names the setting and Alertmanager's ``max_alerts``.
- 415, a compressed body (``Content-Encoding``; Alertmanager sends none, and nothing is
  decompressed): a retry sends the same.
- 400, a body that is not strict JSON (``payload.load_json``), JSON that is not a webhook
  payload version 4 (a receiver's custom ``payload`` template: the message says to remove
  it) or a payload with an invalid alert (nothing of it is created), and a body whose
  chunked framing cannot be read: all are in the bytes, which a retry repeats.
- 503 with ``Retry-After``, what a retry can fix: the runbook cache still cold (the
  operator is starting), the Kubernetes API unreachable, overloaded (its 429s and 5xx) or
  slower than ``MCP_RECEIVER_API_TIMEOUT_SECONDS`` over one notification, and a body not
  in within ``MCP_RECEIVER_BODY_TIMEOUT_SECONDS`` of the headers (a stalled network or
  proxy; the connection is closed). Alertmanager ignores ``Retry-After`` and keeps its own
  backoff; the header is for other clients and people.
- 499, a client that closed its connection before its body was complete: nobody reads
  this answer (nginx's code for it); it is counted so, neither as a bad payload nor as an
  outage, and the client's own retry is what follows.
- 500, an unexpected error (a bug, counted and logged with its cause): retried, which
  helps when it was a race, and shows in Alertmanager's log meanwhile.
- aiohttp's own 404 and 405 (a wrong URL in Alertmanager's config) and 417 (an
  ``Expect`` other than ``100-continue``) stay 4xx: no retry changes them.

Every answer but ``/metrics``' is JSON, aiohttp's own and a 500 too. Shutting down needs
no status of its own: a stop (below) closes the listening socket and the idle connections
and cuts a request still running at its end without an answer, and Alertmanager retries a
connection error as it does a 5xx. Connections are refused and cut beneath the app by the
same contract (``connections``: 503 at the cap or past the header timeout, 431 for
oversized headers).

The API bound keeps a hung API from holding Alertmanager's POST until the client's own
timeout: past it the notification's work is cancelled and left to Alertmanager's retry,
which is safe. Records are created under deterministic names, so a create cut off after
the API applied it is found by the retry's list and counted a duplicate; a skip record cut
off before its ``Skipped`` status carries its verdict in annotations, by which the engine
finishes it; a cancellation of a resolved alert cut off is decided again by the retry. A
cut loses only best-effort bookkeeping (a runbook counter tick, a slot of the per-minute
skip window), and the retry counts its alerts' outcomes again in the metrics.

Connections are bounded beneath the app (``connections.ConnectionGuard``): their number,
the time and size of their request headers (64 KiB in all, else 431) and their idle
time. Request lines and header fields are limited to 8190 bytes and 32 fields (aiohttp
answers 400 beyond).

Without a token the receiver refuses to start unless ``MCP_RECEIVER_INSECURE=true``.

A stop (SIGTERM: the operator's clean-up) closes the listening socket first, so new
connections go to the other replica, then lets the requests in flight finish — at most the
body and API timeouts — before it closes what is left.

``runtime.run_operator`` builds the receiver, runs it beside Kopf and puts it in the memo,
where the Kopf event handler of runbooks feeds its runbook cache; it reads the executor's
record index (deduplication, guardrails). Tests and the benchmark run ``Receiver`` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import HttpVersion11, web

from mcp_remediator import redact
from mcp_remediator.alerts.connections import ConnectionGuard, Limits
from mcp_remediator.alerts.ingest import AlertIngestor, ApiUnavailable, Clock, Summary
from mcp_remediator.alerts.payload import PayloadError, WebhookPayload, brief, load_json
from mcp_remediator.index import RecordIndex
from mcp_remediator.kube.client import ApiError, KubeApi
from mcp_remediator.metrics import CONTENT_TYPE, OperatorMetrics
from mcp_remediator.settings import Settings

log = logging.getLogger(__name__)

PATHS = frozenset({"/alerts", "/healthz", "/readyz", "/metrics"})
WARM_RETRY_SECONDS = (0.2, 0.5, 1, 2, 5)
COUNTER_FLUSH_SECONDS = 1.0
# aiohttp's parser limits: a request line or header field of 8190 bytes (its default), and
# 32 fields (Alertmanager sends about 6; proxies add some); the guard bounds their total.
MAX_LINE_SIZE = MAX_FIELD_SIZE = 8190
MAX_HEADERS = 32
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


# Retry-After of every 503: Alertmanager ignores it (its own backoff starts at half a
# second), others learn that a retry soon is welcome.
RETRY_AFTER = {"Retry-After": "1"}
# The status of an answer to a client that closed the connection before its body was
# complete: never sent, only counted (nginx's "client closed request").
CLIENT_CLOSED = 499


class ReceiverConfigError(Exception):
    """The receiver cannot start with these settings."""


MAX_MESSAGE = 2000  # characters of an error message: a payload's problems can be many


def _error(status: int, message: str, **headers: str) -> web.Response:
    if len(message) > MAX_MESSAGE:
        message = f"{message[:MAX_MESSAGE]}... ({len(message) - MAX_MESSAGE} more characters)"
    return web.json_response({"error": message}, status=status, headers=headers)


async def _closing(request: web.Request, response: web.Response) -> web.Response:
    """Send ``response`` and close the connection at once (aiohttp would otherwise go on
    reading the unread body for up to ``lingering_time``)."""
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    if request.transport is not None:
        request.transport.close()
    return response


class Receiver:
    """One receiver: HTTP app, runbook cache, ingestion and metrics."""

    def __init__(
        self,
        settings: Settings,
        kube: KubeApi,
        *,
        metrics: OperatorMetrics | None = None,
        clock: Clock | None = None,
        index: RecordIndex | None = None,
    ):
        token = settings.receiver_token.get_secret_value() if settings.receiver_token else ""
        if not token and not settings.receiver_insecure:
            raise ReceiverConfigError(
                "no receiver token: set MCP_RECEIVER_TOKEN_FILE (a mounted Secret) or "
                "MCP_RECEIVER_TOKEN, or MCP_RECEIVER_INSECURE=true for development"
            )
        self.settings = settings
        self._token = token.encode() if token else None
        self.metrics = metrics or OperatorMetrics()
        extra = {"clock": clock} if clock else {}
        self.ingestor = AlertIngestor(settings, kube, self.metrics, index=index, **extra)
        self.app = web.Application(client_max_size=settings.receiver_max_body_bytes)
        self.app.router.add_post("/alerts", self._alerts)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        self.connections = ConnectionGuard(Limits.from_settings(settings), self.metrics)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port: int | None = None

    @property
    def ready(self) -> bool:
        return self.ingestor.runbooks.warm

    # -- what the Kopf event handlers call ------------------------------------------------

    def runbook_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self.ingestor.runbooks.apply(event_type, body)

    def remediation_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self.metrics.remediations.apply(event_type, body)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Listen (``port=0`` picks a free port, see ``self.port``) and warm the cache."""
        settings = self.settings
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            # The guard closes idle connections; aiohttp's own timer is only a backstop.
            keepalive_timeout=(
                settings.receiver_keepalive_timeout_seconds
                + settings.receiver_header_timeout_seconds
            ),
            max_line_size=MAX_LINE_SIZE,
            max_field_size=MAX_FIELD_SIZE,
            max_headers=MAX_HEADERS,
            auto_decompress=False,
            # A stop waits for the requests in flight (each bounded by the body and API
            # timeouts), then closes what is left: never aiohttp's default 60 s.
            shutdown_timeout=settings.receiver_body_timeout_seconds
            + settings.receiver_api_timeout_seconds
            + 1.0,
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        server.request_handler = functools.partial(self._serve, server.request_handler)
        # Served without an aiohttp site: each connection's protocol is wrapped by the guard.
        self._server = await asyncio.get_running_loop().create_server(
            self.connections.factory(server),
            host or settings.receiver_host,
            settings.receiver_port if port is None else port,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks = [
            asyncio.create_task(self._warm(), name="receiver-warm"),
            asyncio.create_task(self._flush_counters(), name="receiver-counters"),
        ]
        log.info("alert receiver listening on port %s", self.port)

    async def stop(self) -> None:
        """Stop serving and flush the runbook counters; calling it again does nothing."""
        tasks, self._tasks = self._tasks, []
        runner, self._runner = self._runner, None
        server, self._server = self._server, None
        if runner is None:
            return
        if server is not None:
            server.close()  # no new connections; the runner closes aiohttp's
        await runner.cleanup()
        self.connections.close_refused()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(ApiError):
            await self.ingestor.flush_counters()

    async def _warm(self) -> None:
        attempt = 0
        while True:
            try:
                await self.ingestor.warm()
                return
            except ApiError as exc:
                delay = WARM_RETRY_SECONDS[min(attempt, len(WARM_RETRY_SECONDS) - 1)]
                log.warning("runbook cache not warm (%s); retrying in %ss", exc, delay)
            except Exception as exc:
                # Not one runbook (the cache reads each safely): a LIST answer it could not
                # use. Retried as well, so the receiver never stays unready for good.
                delay = WARM_RETRY_SECONDS[min(attempt, len(WARM_RETRY_SECONDS) - 1)]
                log.error(
                    "runbook cache not warm (%s); retrying in %ss\n%s",
                    redact.exception_type(exc),
                    delay,
                    redact.traceback_without_text(exc),
                )
            attempt += 1
            await asyncio.sleep(delay)

    async def _flush_counters(self) -> None:
        while True:
            await asyncio.sleep(COUNTER_FLUSH_SECONDS)
            await self.ingestor.flush_counters()

    # -- HTTP --------------------------------------------------------------------------

    async def _serve(self, app: Handler, request: web.BaseRequest) -> web.StreamResponse:
        """Every request, before aiohttp's routing: the guard learns when it starts and
        ends, its answer is counted, and every answer is JSON (see ``_answer``)."""
        path = request.path if request.path in PATHS else "other"
        self.connections.request_started(request.transport)
        try:
            response = await self._answer(app, request)
        finally:
            self.connections.request_finished(request.transport)
        self.metrics.requests.labels(path, str(response.status)).inc()
        return response

    async def _answer(self, app: Handler, request: web.BaseRequest) -> web.StreamResponse:
        expect = request.headers.get("Expect")
        if (
            expect is not None
            and request.version >= HttpVersion11
            and expect.lower() != "100-continue"
        ):  # aiohttp's own answer fails (a 500) on a value that is not UTF-8
            return _error(417, f"Expect {brief(expect)} not supported; only 100-continue")
        try:
            return await app(request)
        except web.HTTPException as exc:  # aiohttp's routing: 404, 405, ...
            if exc.status < 400:
                raise
            kept = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
            return _error(
                exc.status, f"{exc.reason}: {request.method} {brief(request.path)}", **kept
            )
        except Exception:  # a bug: still a JSON answer, counted, and logged with its cause
            log.exception("%s %s failed", request.method, brief(request.path))
            return _error(500, "internal error in the receiver; see the operator's log")

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self._token
        )

    async def _alerts(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
        limit = self.settings.receiver_max_body_bytes
        too_large = (
            f"body over {limit} bytes (MCP_RECEIVER_MAX_BODY_BYTES): raise it, or set "
            "max_alerts in the Alertmanager webhook_config to send fewer alerts at a time"
        )
        if request.content_length is not None and request.content_length > limit:
            return _error(413, too_large)
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            return _error(
                415, f"Content-Encoding {brief(encoding)} not accepted; send the body as is"
            )
        timeout = self.settings.receiver_body_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, too_large)
        except TimeoutError:
            # Not a 408: Alertmanager drops a notification answered 4xx, and a body that
            # came too slowly (a stalled network, a buffering proxy) may well come in time
            # again. A slow client meant as an attack is cut just the same.
            self.metrics.dropped_connections.labels("body").inc()
            late = (
                f"body not received within {timeout:g}s (MCP_RECEIVER_BODY_TIMEOUT_SECONDS); retry"
            )
            return await _closing(request, _error(503, late, **RETRY_AFTER))
        except web.RequestPayloadError as exc:  # framing (chunks) the parser could not read
            return _error(400, f"body unreadable: {exc}")
        except ConnectionError:  # the client is gone: the answer is only counted
            return _error(CLIENT_CLOSED, "connection closed before the body was complete")
        try:
            payload = WebhookPayload.parse(load_json(raw))
        except PayloadError as exc:
            return _error(400, str(exc))
        if not self.ready:
            return _error(503, "runbook cache not warm yet; Alertmanager will retry", **RETRY_AFTER)
        summary = await self._ingest(payload)
        if isinstance(summary, web.Response):
            return summary
        result = summary.as_dict()
        level = (
            logging.INFO if summary.remediations or summary.counts["cancelled"] else logging.DEBUG
        )
        log.log(level, "notification %s: %s", payload.groupKey, result)
        return web.json_response(result)

    async def _ingest(self, payload: WebhookPayload) -> Summary | web.Response:
        """The notification's summary, or the 503 that leaves it to Alertmanager's retry: the
        API is unreachable, or slower than the bound (see the module docstring on why
        cancelling the work half-way is safe)."""
        bound = self.settings.receiver_api_timeout_seconds
        deadline = asyncio.timeout(bound)
        try:
            async with deadline:
                return await self.ingestor.ingest(payload)
        except ApiUnavailable as exc:
            log.warning("Kubernetes API unavailable; notification left to a retry: %s", exc)
            return _error(503, f"Kubernetes API unavailable, retry later: {exc}", **RETRY_AFTER)
        except TimeoutError:
            if not deadline.expired():
                raise  # not ours: a bug, answered 500 by _answer
            log.warning(
                "Kubernetes API slower than %gs; notification %s left to a retry",
                bound,
                payload.groupKey,
            )
            return _error(
                503,
                f"Kubernetes API did not handle the notification within {bound:g}s "
                "(MCP_RECEIVER_API_TIMEOUT_SECONDS), retry later",
                **RETRY_AFTER,
            )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        if not self.ready:
            return _error(503, "runbook cache not warm yet")
        return web.json_response({"status": "ready", "runbooks": len(self.ingestor.runbooks)})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})
