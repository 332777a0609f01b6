"""The receiver cannot be held open, and every bad input gets a clear answer (issue 11).

Raw sockets play the slow clients: a slow loris on the headers and on the body is cut
within its timeout (measured, asserted with a margin for a loaded machine), idle kept-alive
connections close, connections beyond the cap are answered 503 at once, and 200 slow
clients at a time neither stay nor stop the receiver serving. A hung Kubernetes API holds a
notification no longer than ``MCP_RECEIVER_API_TIMEOUT_SECONDS`` (503, and Alertmanager's
retry makes one record). Pathological bodies answer 400 with the reason and write nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest

from fixtures.cluster import Cluster, OperatorFactory
from fixtures.daemons import free_port
from fixtures.receiver import TOKEN, alert, payload, runbook, started_receiver
from mcp_remediator.alerts.receiver import Receiver
from mcp_remediator.models import API_VERSION, REMEDIATIONS

# What a loaded 2-core machine may add to a timeout before the close is seen.
MARGIN = 1.5
FIRST_LINE = b"POST /alerts HTTP/1.1\r\nHost: 127.0.0.1\r\n"
AUTH_HEADER = f"Authorization: Bearer {TOKEN}\r\n".encode()


def metric(receiver: Receiver, name: str, **labels: str) -> float:
    value = receiver.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def request(method: str, path: str, body: bytes = b"", *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Client:
    """A raw connection to the receiver that knows when it opened."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.opened = asyncio.get_running_loop().time()
        self.dripping: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def drip(self, data: bytes, interval: float) -> None:
        """Send ``data`` a byte every ``interval`` seconds, until the server closes."""

        async def run() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in data:
                    self.writer.write(bytes([byte]))
                    await self.writer.drain()
                    await asyncio.sleep(interval)

        self.dripping = asyncio.create_task(run())

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """One response: status, headers (lower-case names) and body."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines if line)
        }
        body = await self.reader.readexactly(int(headers.get("content-length", 0)))
        return int(status_line.split()[1]), headers, body

    async def until_closed(self, timeout: float = 30) -> tuple[float, bytes]:
        """Seconds from opening until the server closed, and what it sent meanwhile."""
        received = b""
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(timeout):
                while chunk := await self.reader.read(65536):
                    received += chunk
        return asyncio.get_running_loop().time() - self.opened, received

    async def close(self) -> None:
        if self.dripping is not None:
            self.dripping.cancel()
            await asyncio.gather(self.dripping, return_exceptions=True)
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def answer(received: bytes) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of the one answer in ``received``."""
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Raw clients a test opens, closed at its end."""
    opened: list[Client] = []
    yield opened
    await asyncio.gather(*(client.close() for client in opened))


async def connect(clients: list[Client], port: int) -> Client:
    client = await Client.connect(port)
    clients.append(client)
    return client


# -- slow clients ------------------------------------------------------------------------


async def test_a_slow_loris_on_the_headers_is_cut_within_the_header_timeout(
    cluster: Cluster, clients: list[Client]
) -> None:
    async with started_receiver(cluster, receiver_header_timeout_seconds=1) as receiver:
        silent = await connect(clients, receiver.port)
        slow = await connect(clients, receiver.port)
        slow.send(FIRST_LINE)
        slow.drip(b"X-Padding: " + b"a" * 100, interval=0.2)

        (quiet_after, nothing), (slow_after, received) = await asyncio.gather(
            silent.until_closed(), slow.until_closed()
        )

        assert nothing == b""  # no request begun: closed without a word
        status, body = answer(received)
        assert status == 503  # not a 408: Alertmanager retries a 5xx, never a 4xx
        assert b"\r\nretry-after: 1\r\n" in received.lower()
        assert "MCP_RECEIVER_HEADER_TIMEOUT_SECONDS" in body["error"]
        for elapsed in (quiet_after, slow_after):
            assert 1 - 0.05 <= elapsed <= 1 + MARGIN
        assert metric(receiver, "mcp_receiver_dropped_connections_total", reason="headers") == 2


@pytest.mark.parametrize("authorized", [True, False])
async def test_a_slow_loris_on_the_body_is_cut_within_the_body_timeout(
    cluster: Cluster, clients: list[Client], authorized: bool
) -> None:
    """With the token the body is awaited up to the body timeout, then answered 503 (a
    retry may well come in time: not a 408, which Alertmanager would drop); without, the
    401 comes at once and the unread body may not trickle on either."""
    cluster.seed(runbook())
    async with started_receiver(
        cluster, receiver_body_timeout_seconds=1, receiver_header_timeout_seconds=1
    ) as receiver:
        client = await connect(clients, receiver.port)
        client.send(FIRST_LINE + (AUTH_HEADER if authorized else b""))
        client.send(b"Content-Length: 10000\r\n\r\n")
        client.drip(json.dumps(payload(alert())).encode(), interval=0.2)

        elapsed, received = await client.until_closed()

        status, body = answer(received)
        if authorized:
            assert status == 503
            assert b"\r\nretry-after: 1\r\n" in received.lower()
            assert "MCP_RECEIVER_BODY_TIMEOUT_SECONDS" in body["error"]
            assert metric(receiver, "mcp_receiver_dropped_connections_total", reason="body") == 1
        else:
            assert status == 401
        # headers are in at once: the body timeout, or the header timeout from the first
        # byte after the 401 (aiohttp reads an unread body on, for up to 10 s)
        assert 1 - 0.05 <= elapsed <= 1 + MARGIN
        assert cluster.writes(REMEDIATIONS) == []


async def test_a_client_gone_before_its_body_is_counted_499_not_as_a_bad_payload(
    cluster: Cluster, clients: list[Client]
) -> None:
    """Nobody reads that answer: it counts as neither a malformed payload (400) nor an
    outage (5xx); the client's own retry follows its connection error."""
    cluster.seed(runbook())
    async with started_receiver(cluster) as receiver:
        client = await connect(clients, receiver.port)
        body = json.dumps(payload(alert())).encode()
        head = f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        client.send(FIRST_LINE + AUTH_HEADER + head)
        # aiohttp answers 100 Continue on its way to the handler: the request is in.
        assert await client.reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(body[: len(body) // 2])
        await client.close()

        def counted() -> bool:
            return metric(receiver, "mcp_receiver_requests_total", path="/alerts", code="499") == 1

        await cluster.wait_for(counted, what="the cut request counted")
        assert metric(receiver, "mcp_receiver_requests_total", path="/alerts", code="400") == 0
        assert cluster.writes(REMEDIATIONS) == []


async def test_kept_alive_connections_close_after_the_idle_bound(
    cluster: Cluster, clients: list[Client]
) -> None:
    async with started_receiver(
        cluster, receiver_keepalive_timeout_seconds=1, receiver_header_timeout_seconds=0.5
    ) as receiver:
        idle, reused = await connect(clients, receiver.port), await connect(clients, receiver.port)
        idle.send(request("GET", "/healthz"))
        assert (await idle.response())[0] == 200
        answered = asyncio.get_running_loop().time()
        reused.send(request("GET", "/healthz"))
        assert (await reused.response())[0] == 200
        await asyncio.sleep(0.6)  # idle, but within the bound: the connection serves again
        reused.send(request("GET", "/healthz"))
        assert (await reused.response())[0] == 200
        reused_at = asyncio.get_running_loop().time()
        reused.send(b"GET /healthz HTTP/1.1\r\n")  # a next request begun, never finished

        (idle_after, nothing), (reused_after, more) = await asyncio.gather(
            idle.until_closed(), reused.until_closed()
        )

        assert nothing == more == b""  # after a request, closed without a word
        idle_for = idle.opened + idle_after - answered  # the bound began as the answer left
        assert 1 - 0.1 <= idle_for <= 1 + MARGIN
        # the next request's headers: the header timeout from their first byte
        headers_for = reused.opened + reused_after - reused_at
        assert 0.5 - 0.05 <= headers_for <= 0.5 + MARGIN


async def test_connections_beyond_the_cap_are_answered_503_at_once(
    cluster: Cluster, clients: list[Client]
) -> None:
    async with started_receiver(
        cluster, receiver_max_connections=3, receiver_header_timeout_seconds=30
    ) as receiver:
        busy = [await connect(clients, receiver.port) for _ in range(3)]
        for client in busy:
            client.send(FIRST_LINE)  # a request under way: not idle, not evictable
        await asyncio.sleep(0.1)

        extra = await connect(clients, receiver.port)
        extra.send(request("GET", "/healthz"))
        elapsed, received = await extra.until_closed()

        assert elapsed < MARGIN
        status, body = answer(received)
        assert status == 503 and "MCP_RECEIVER_MAX_CONNECTIONS" in body["error"]
        assert b"Retry-After: 1\r\n" in received and b"Connection: close\r\n" in received
        assert metric(receiver, "mcp_receiver_dropped_connections_total", reason="limit") == 1
        assert metric(receiver, "mcp_receiver_connections") == 3

        await busy[0].close()
        await asyncio.sleep(0.1)
        again = await connect(clients, receiver.port)
        again.send(request("GET", "/healthz"))
        assert (await again.response())[0] == 200


async def test_at_the_cap_the_longest_idle_connection_makes_room(
    cluster: Cluster, clients: list[Client]
) -> None:
    async with started_receiver(cluster, receiver_max_connections=3) as receiver:
        kept = [await connect(clients, receiver.port) for _ in range(3)]
        for client in kept:
            client.send(request("GET", "/healthz"))
            assert (await client.response())[0] == 200

        newcomer = await connect(clients, receiver.port)
        newcomer.send(request("GET", "/healthz"))

        assert (await newcomer.response())[0] == 200
        elapsed, _ = await kept[0].until_closed(timeout=5)
        assert elapsed < 5  # the oldest idle one was closed ...
        kept[1].send(request("GET", "/healthz"))  # ... the others still serve
        assert (await kept[1].response())[0] == 200
        assert metric(receiver, "mcp_receiver_dropped_connections_total", reason="evicted") == 1


async def test_two_hundred_slow_clients_are_all_cut_and_the_receiver_serves_meanwhile(
    cluster: Cluster, clients: list[Client]
) -> None:
    cluster.seed(runbook())
    async with started_receiver(cluster, receiver_header_timeout_seconds=2) as receiver:
        slow = [await connect(clients, receiver.port) for _ in range(200)]
        for client in slow:
            client.send(FIRST_LINE)
            client.drip(b"X-Padding: " + b"a" * 100, interval=0.5)
        closing = asyncio.gather(*(client.until_closed() for client in slow))
        await asyncio.sleep(0.5)
        assert metric(receiver, "mcp_receiver_connections") == 200

        served = await connect(clients, receiver.port)
        body = json.dumps(payload(alert())).encode()
        served.send(request("POST", "/alerts", body, f"Authorization: Bearer {TOKEN}"))
        status, _, answer_body = await served.response()
        assert status == 200 and json.loads(answer_body)["created"] == 1

        times = [elapsed for elapsed, _ in await closing]
        assert 2 - 0.05 <= min(times) and max(times) <= 2 + MARGIN, (min(times), max(times))
        assert metric(receiver, "mcp_receiver_dropped_connections_total", reason="headers") == 200


# -- a hung Kubernetes API ---------------------------------------------------------------

REMEDIATIONS_PATH = f"/apis/{API_VERSION}/namespaces/mcp/{REMEDIATIONS}"


@pytest.mark.parametrize("applied_late", [False, True], ids=["lost", "applied-late"])
async def test_a_hung_api_answers_503_within_the_bound_and_the_retry_makes_one_record(
    cluster: Cluster, clients: list[Client], applied_late: bool
) -> None:
    """The record's create hangs in the API. The receiver gives up at its bound (not the
    HTTP client's 30 s) and answers 503; the hung create is then lost, or applied after all
    (as an API may commit a write whose answer never came back). Either way Alertmanager's
    retry, once the API answers again, leaves exactly one record."""
    cluster.seed(runbook())
    hung, released = True, asyncio.Event()

    async def create_while_hung() -> object:
        if not hung:
            return NotImplemented  # no reaction: the emulated API serves the request
        await released.wait()  # the receiver hangs up first, which ends this request
        return 503

    creates = cluster.api[kmock.method.POST, kmock.path(REMEDIATIONS_PATH)]
    creates << create_while_hung
    body = json.dumps(payload(alert())).encode()
    notification = request("POST", "/alerts", body, f"Authorization: Bearer {TOKEN}")
    bound = 1.0
    try:
        async with started_receiver(cluster, receiver_api_timeout_seconds=bound) as receiver:
            client = await connect(clients, receiver.port)
            sent = asyncio.get_running_loop().time()
            client.send(notification)
            status, headers, text = await client.response()
            elapsed = asyncio.get_running_loop().time() - sent

            assert status == 503, text
            assert headers["retry-after"] == "1"
            assert elapsed <= bound + MARGIN
            assert "MCP_RECEIVER_API_TIMEOUT_SECONDS" in json.loads(text)["error"]
            (hung_create,) = creates
            assert cluster.api.list_objects(API_VERSION, REMEDIATIONS) == []

            hung = False
            if applied_late:
                cluster.api.seed(json.loads(hung_create.body))
            client.send(notification)
            status, _, text = await client.response()

            assert status == 200, text
            summary = json.loads(text)
            assert summary["duplicates" if applied_late else "created"] == 1
            assert len(cluster.api.list_objects(API_VERSION, REMEDIATIONS)) == 1
    finally:
        released.set()


async def test_a_stop_lets_the_request_in_flight_finish_and_refuses_new_connections(
    cluster: Cluster, clients: list[Client]
) -> None:
    """SIGTERM (the operator's clean-up stops the receiver): a notification being handled
    gets its answer — its record is created — and only then does the receiver go."""
    cluster.seed(runbook())
    released = asyncio.Event()

    async def slow_create() -> object:
        await released.wait()
        return NotImplemented  # then the emulated API serves it

    cluster.api[kmock.method.POST, kmock.path(REMEDIATIONS_PATH)] << slow_create
    body = json.dumps(payload(alert())).encode()
    async with started_receiver(cluster) as receiver:
        client = await connect(clients, receiver.port)
        client.send(request("POST", "/alerts", body, f"Authorization: Bearer {TOKEN}"))
        await asyncio.sleep(0.3)  # the notification is in the handler, its create pending
        stopping = asyncio.create_task(receiver.stop())
        await asyncio.sleep(0.3)
        assert not stopping.done()  # waiting for the request in flight
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", receiver.port)
        released.set()
        status, _, text = await client.response()
        await stopping
    assert status == 200, text
    assert json.loads(text)["created"] == 1
    assert len(cluster.api.list_objects(API_VERSION, REMEDIATIONS)) == 1


# -- bad input: a clear answer, nothing written -------------------------------------------


async def test_deeply_nested_json_answers_400_and_writes_nothing(
    cluster: Cluster, clients: list[Client]
) -> None:
    cluster.seed(runbook())
    async with started_receiver(cluster) as receiver:
        for body in (b"[" * 100_000, b'{"version": "4", "alerts": ' + b"[" * 50_000):
            client = await connect(clients, receiver.port)
            client.send(request("POST", "/alerts", body, f"Authorization: Bearer {TOKEN}"))
            status, _, text = await client.response()
            assert status == 400
            assert json.loads(text)["error"] == "body is not JSON we accept: nested too deeply"
        assert cluster.writes(REMEDIATIONS) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"version": "4", "version": "4", "alerts": []}', "duplicate key 'version'"),
        (b'{"version": "4", "alerts": [], "x": NaN}', "NaN is not a JSON number"),
        (b'{"version": "4", "alerts": [], "x": 1e999}', "number '1e999' is out of range"),
        (b'{"version": "4", "alerts": [], "x": "\xed\xa0\x80"}', "not UTF-8"),
        (b'{"version": "4", "alerts": [], "x": "\\udfff"}', "lone UTF-16 surrogate"),
    ],
)
async def test_ambiguous_or_unencodable_json_answers_400(
    cluster: Cluster, clients: list[Client], body: bytes, message: str
) -> None:
    async with started_receiver(cluster) as receiver:
        client = await connect(clients, receiver.port)
        client.send(request("POST", "/alerts", body, f"Authorization: Bearer {TOKEN}"))
        status, _, text = await client.response()
        assert status == 400 and message in json.loads(text)["error"]


async def test_a_time_or_count_out_of_range_answers_400_not_500(
    cluster: Cluster, clients: list[Client]
) -> None:
    cluster.seed(runbook())
    late = {**alert(), "startsAt": "9999-12-31T23:59:59-01:00"}
    async with started_receiver(cluster) as receiver:
        for body in (payload(late), payload(alert(), truncatedAlerts=10**400)):
            client = await connect(clients, receiver.port)
            data = json.dumps(body).encode()
            client.send(request("POST", "/alerts", data, f"Authorization: Bearer {TOKEN}"))
            assert (await client.response())[0] == 400
        assert cluster.writes(REMEDIATIONS) == []


async def test_a_compressed_body_answers_415_unread(
    cluster: Cluster, clients: list[Client]
) -> None:
    cluster.seed(runbook())
    async with started_receiver(cluster) as receiver:
        client = await connect(clients, receiver.port)
        body = gzip.compress(json.dumps(payload(alert())).encode())
        headers = (f"Authorization: Bearer {TOKEN}", "Content-Encoding: gzip")
        client.send(request("POST", "/alerts", body, *headers))
        status, _, text = await client.response()
        assert status == 415 and "Content-Encoding 'gzip'" in json.loads(text)["error"]
        assert cluster.writes(REMEDIATIONS) == []


async def test_requests_with_too_many_or_too_long_headers_answer_400(
    cluster: Cluster, clients: list[Client]
) -> None:
    async with started_receiver(cluster) as receiver:
        many = [f"X-H{i}: v" for i in range(40)]
        for headers in (many, ["X-Long: " + "a" * 9000]):
            client = await connect(clients, receiver.port)
            client.send(request("GET", "/healthz", b"", *headers))
            assert (await client.response())[0] == 400


async def test_an_unexpected_error_is_a_json_500_counted_and_logged(
    cluster: Cluster, clients: list[Client], caplog: pytest.LogCaptureFixture
) -> None:
    async with started_receiver(cluster) as receiver:

        async def broken(*args: Any) -> Any:
            raise RuntimeError("a bug")

        receiver.ingestor.ingest = broken  # type: ignore[method-assign]
        client = await connect(clients, receiver.port)
        body = json.dumps(payload(alert())).encode()
        client.send(request("POST", "/alerts", body, f"Authorization: Bearer {TOKEN}"))
        status, headers, text = await client.response()

        assert status == 500 and headers["content-type"].startswith("application/json")
        assert "internal error" in json.loads(text)["error"] and "a bug" not in text.decode()
        labels = {"path": "/alerts", "code": "500"}
        assert metric(receiver, "mcp_receiver_requests_total", **labels) == 1
        assert "RuntimeError: a bug" in caplog.text


async def test_the_operator_serves_the_receiver_with_its_limits(
    cluster: Cluster, operator_factory: OperatorFactory, clients: list[Client]
) -> None:
    port = free_port()
    await operator_factory(
        receiver=True,
        receiver_port=port,
        receiver_host="127.0.0.1",
        receiver_token=TOKEN,
        receiver_header_timeout_seconds=0.5,
        receiver_max_connections=2,
    )
    for _ in range(300):
        with contextlib.suppress(ConnectionError):
            probe = await connect(clients, port)
            break
        await asyncio.sleep(0.05)
    probe.send(request("GET", "/healthz"))
    assert (await probe.response())[0] == 200
    slow = await connect(clients, port)
    slow.send(FIRST_LINE)
    refused = await connect(clients, port)  # the probe (idle) makes room for it
    refused.send(FIRST_LINE)
    third = await connect(clients, port)  # none idle now: 503

    (_, to_third), (slow_after, _) = await asyncio.gather(third.until_closed(), slow.until_closed())

    assert answer(to_third)[0] == 503
    assert 0.5 - 0.05 <= slow_after <= 0.5 + MARGIN


@pytest.mark.parametrize(
    ("head", "status", "message"),
    [
        (b"GET /nowhere HTTP/1.1\r\n", 404, "Not Found: GET '/nowhere'"),
        (b"GET /alerts HTTP/1.1\r\n", 405, "Method Not Allowed: GET '/alerts'"),
        (b"POST /alerts HTTP/1.1\r\nExpect: \x80\xff\r\n", 417, "only 100-continue"),
        (b"GET /healthz HTTP/1.1\r\nExpect: 200-ok\r\n", 417, "Expect '200-ok' not supported"),
    ],
)
async def test_routing_and_expect_errors_are_json_too(
    cluster: Cluster, clients: list[Client], head: bytes, status: int, message: str
) -> None:
    async with started_receiver(cluster) as receiver:
        client = await connect(clients, receiver.port)
        client.send(head + b"Host: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        got, headers, text = await client.response()
        assert got == status and message in json.loads(text)["error"]
        if status == 405:
            assert headers["allow"] == "POST"
        client.send(request("GET", "/healthz"))  # and the connection serves on
        assert (await client.response())[0] == 200


async def test_headers_over_64_kib_in_all_answer_431_and_big_bodies_pass(
    cluster: Cluster, clients: list[Client]
) -> None:
    """Fields each within aiohttp's limits, too many bytes together; the count stops at the
    headers' end, however the reads split it, so a large body is no header."""
    cluster.seed(runbook())
    async with started_receiver(cluster) as receiver:
        stuffed = await connect(clients, receiver.port)
        stuffed.send(request("GET", "/healthz", b"", *(f"X-F{i}: {'a' * 4000}" for i in range(20))))
        elapsed, received = await stuffed.until_closed()
        status, body = answer(received)
        assert status == 431 and "over 65536 bytes" in body["error"]
        assert metric(receiver, "mcp_receiver_dropped_connections_total", reason="headers") == 1

        big = payload(alert(), padding="x" * 900_000)
        data = request("POST", "/alerts", json.dumps(big).encode(), AUTH_HEADER.decode().strip())
        at_once = await connect(clients, receiver.port)
        at_once.send(data)
        assert (await at_once.response())[0] == 200
        split = await connect(clients, receiver.port)
        head, _, rest = data.partition(b"\r\n\r\n")
        split.drip(head + b"\r\n\r", interval=0.001)  # the end split across reads ...
        assert split.dripping is not None
        await split.dripping
        split.send(b"\n" + rest)  # ... and 900 KB of body after it
        assert (await split.response())[0] == 200
