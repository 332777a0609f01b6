"""Property-based fuzzing of the alert receiver (issue 11): whatever is POSTed, the answer
is 2xx or 4xx — never 5xx — a 4xx carries a JSON error, and nothing is written to the
cluster for a 4xx.

Every property runs against one real receiver on a real socket (its runbook cache warm,
the emulated API behind it), with a runbook that takes the fuzzed alerts whose alertname
is ``ALERTNAME``, so accepted payloads really create records. Profiles and strategies:
``fixtures.hypothesis_receiver`` (``HYPOTHESIS_PROFILE=long`` for thousands of examples;
``--hypothesis-show-statistics`` shows the counts and the kinds of input run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import http_exceptions
from hypothesis import event, given
from hypothesis import strategies as st

from fixtures.cluster import Cluster
from fixtures.hypothesis_receiver import (
    RECEIVER,
    json_values,
    mutated_payloads,
    pathological_bodies,
    raw_requests,
    webhook_payloads,
)
from fixtures.receiver import AUTH, runbook, started_receiver
from mcp_remediator.alerts.ingest import OUTCOMES
from mcp_remediator.alerts.receiver import Receiver
from mcp_remediator.models import REMEDIATIONS

# pytest-timeout's 120 s per test is for the default profile; the long one needs more.
pytestmark = pytest.mark.timeout(max(120, RECEIVER.max_examples // 2))
JSON = {"Content-Type": "application/json"}
# The answer each kind of pathological body must get (kinds not listed may be 200 or 400).
EXPECTED = {
    "deep-unclosed": 400,
    "nan-infinity": 400,
    "duplicate-key": 400,
    "invalid-utf8": 400,
    "lone-surrogate": 400,
    "utf8-bom": 400,
    "utf-16": 400,
    "utf-16-le": 400,
    "utf-32": 400,
    "latin-1": 400,
    "raw-control-char": 400,
    "surrogate-pair": 200,
}


class Fuzzed:
    """The receiver under fuzz, a client to it, and the oracle every example checks."""

    def __init__(self, cluster: Cluster, receiver: Receiver, client: httpx.AsyncClient):
        self.cluster = cluster
        self.receiver = receiver
        self.client = client
        self.crashes: list[logging.LogRecord] = []

    def remediation_writes(self) -> list[Any]:
        return list(self.cluster.writes(REMEDIATIONS))

    def server_errors(self) -> dict[str, float]:
        """5xx answers the receiver counted, by path and code."""
        return {
            f"{s.labels['path']} {s.labels['code']}": s.value
            for metric in self.receiver.metrics.requests.collect()
            for s in metric.samples
            if s.name.endswith("_total") and s.labels["code"].startswith("5") and s.value
        }

    def check_clean(self) -> None:
        assert not self.crashes, [r.getMessage() for r in self.crashes]
        assert not self.server_errors(), self.server_errors()

    async def post(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        # Forget the requests so far: the emulator matches each request against all of
        # them, and what this example writes is all there is to check afterwards.
        self.cluster.api.trim_requests()
        response = await self.client.post("/alerts", content=body, headers=headers or JSON)
        event(f"answer {response.status_code}")
        assert response.status_code < 500, response.text[:2000]
        assert 200 <= response.status_code, response.text[:2000]
        if response.status_code >= 400:
            assert response.headers["Content-Type"].startswith("application/json")
            assert response.json()["error"]
            assert not self.remediation_writes(), "a 4xx answer wrote to the cluster"
        else:
            self.check_accounting(body, response.json())
        self.check_clean()
        return response

    def check_accounting(self, body: bytes, summary: dict[str, Any]) -> None:
        """Every alert of an accepted payload is accounted for once (one runbook can match)
        and every record it names exists."""
        alerts = json.loads(body)["alerts"]
        for outcome in OUTCOMES:
            if summary[outcome]:
                event(f"an alert {outcome}")
        assert summary["alerts"] == len(alerts)
        assert sum(summary[outcome] for outcome in OUTCOMES) == len(alerts), summary
        for ref in summary["remediations"]:
            namespace, name = ref.split("/")
            assert self.cluster.remediation(namespace, name)


class _Crashes(logging.Handler):
    """Errors aiohttp logs for requests it answered 500 (or would have, had the
    connection still been open); parse errors of malformed HTTP are answered 400."""

    def __init__(self, into: list[logging.LogRecord]):
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, http_exceptions.HttpProcessingError):
            self.into.append(record)


@contextlib.contextmanager
def crashes_logged(into: list[logging.LogRecord]) -> Iterator[None]:
    handler = _Crashes(into)
    loggers = [logging.getLogger(name) for name in ("aiohttp.server", "aiohttp.web")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.fixture
async def fuzzed(cluster: Cluster) -> AsyncIterator[Fuzzed]:
    # Throttled per `pod` label: a new pod's alert creates a record, a known one's is skipped.
    cluster.seed(runbook(groupBy=["pod"], cooldownSeconds=0, maxPerHour=1000))
    async with (
        started_receiver(cluster) as receiver,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{receiver.port}", headers=AUTH, timeout=60
        ) as client,
    ):
        target = Fuzzed(cluster, receiver, client)
        with crashes_logged(target.crashes):
            yield target


# -- the properties ----------------------------------------------------------------------


@RECEIVER
@given(body=webhook_payloads())
async def test_webhook_payloads_answer_2xx_or_4xx(fuzzed: Fuzzed, body: dict[str, Any]) -> None:
    """Valid-shaped payloads with random labels, annotations, timestamps, statuses,
    fingerprints and counts; about half their alerts match the runbook."""
    await fuzzed.post(json.dumps(body, ensure_ascii=False).encode())


@RECEIVER
@given(body=webhook_payloads(valid=True))
async def test_valid_payloads_answer_200(fuzzed: Fuzzed, body: dict[str, Any]) -> None:
    response = await fuzzed.post(json.dumps(body).encode())
    assert response.status_code == 200, response.text[:2000]


@RECEIVER
@given(body=mutated_payloads() | json_values)
async def test_arbitrary_json_answers_2xx_or_4xx(fuzzed: Fuzzed, body: Any) -> None:
    """Arbitrary JSON, and valid payloads with one node replaced or deleted."""
    await fuzzed.post(json.dumps(body).encode())


@RECEIVER
@given(body=st.binary(max_size=4096), content_type=st.sampled_from(["application/json", "x/y"]))
async def test_arbitrary_bytes_answer_4xx(fuzzed: Fuzzed, body: bytes, content_type: str) -> None:
    response = await fuzzed.post(body, {"Content-Type": content_type})
    assert response.status_code == 400 or body.strip().startswith(b"{")


@RECEIVER
@given(case=pathological_bodies)
async def test_pathological_json_answers_400(fuzzed: Fuzzed, case: tuple[str, bytes]) -> None:
    """Deep nesting, huge numbers, NaN and Infinity, duplicate keys, invalid UTF-8, lone
    surrogates, other encodings and raw control characters."""
    kind, body = case
    event(kind)
    response = await fuzzed.post(body)
    if kind in EXPECTED:
        assert response.status_code == EXPECTED[kind], (kind, response.text[:500])


STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


@RECEIVER
@given(request=raw_requests())
async def test_raw_http_requests_never_answer_5xx(fuzzed: Fuzzed, request: bytes) -> None:
    """Fuzzed request lines, headers and framing on a raw socket: each answer is 4xx or 2xx
    (or the connection closes unanswered), and nothing crashes in the handler."""
    fuzzed.cluster.api.trim_requests()
    reader, writer = await asyncio.open_connection("127.0.0.1", fuzzed.receiver.port)
    try:
        writer.write(request)
        received = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(0.3):
                while chunk := await reader.read(65536):
                    received += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    codes = [int(code) for code in STATUS_LINE.findall(received)]
    event(f"answers {sorted(set(codes)) or 'none'}")
    assert all(code < 500 for code in codes), received[:2000]
    await asyncio.sleep(0)  # let a handler that lost its connection finish and log
    fuzzed.check_clean()
    if codes and min(codes) >= 400:
        assert not fuzzed.remediation_writes(), "a 4xx answer wrote to the cluster"
