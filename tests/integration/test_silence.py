"""The silence guardrail against the real Alertmanager (Debian's 0.25): a run of a silencing
runbook holds exactly one silence of its alert while it works, and none once it finished,
whichever way; a restarted operator neither makes a second one nor leaves one behind.

The step under way is an ``httpHealthCheck`` of a local server that answers only when the
test lets it (``Gate``), so the test looks at Alertmanager while the run works."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.alertmanager import WebhookSink, post_alerts, start_alertmanager
from fixtures.cluster import Cluster, OperatorFactory
from fixtures.daemons import Daemon, free_port
from fixtures.http_mock import HttpMock, Recorded
from mcp_remediator import silences
from mcp_remediator.models import (
    API_VERSION,
    REMEDIATIONS,
    AlertInfo,
    Plan,
    SilenceGuardrail,
    Step,
    StepStatus,
)
from mcp_remediator.settings import Settings

ALERT_LABELS = {
    "alertname": "RedisLowCacheHitRatio",
    "namespace": "mcp",
    "instance": "redis-0.redis:6379",
    "severity": "warning",
}
OTHER_INSTANCE = {**ALERT_LABELS, "instance": "redis-1.redis:6379"}
TOKEN = "alertmanager-api-token-for-silences"
STEP_TIMEOUT = 30
VERIFICATION = 60


class Gate:
    """The health endpoint the run's step waits on: answers ``status`` once opened."""

    def __init__(self, http_mock: HttpMock):
        self.opened = asyncio.Event()
        self.status = 200
        self.asked = asyncio.Event()
        http_mock.on("GET", "/mcp/finbot/health", self._answer)

    async def _answer(self, _request: Recorded) -> tuple[int, Any]:
        self.asked.set()
        await self.opened.wait()
        return self.status, {"status": "ok" if self.status == 200 else "down"}

    def open(self, status: int = 200) -> None:
        self.status = status
        self.opened.set()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Daemon]:
    token_file = tmp_path / "webhook-token"
    token_file.write_text("unused")
    with WebhookSink() as sink:
        daemon = start_alertmanager(tmp_path, sink.url, token_file)
        try:
            yield daemon
        finally:
            daemon.stop()


@pytest.fixture
async def am_api(alertmanager: Daemon) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{alertmanager.url}/api/v2", timeout=5) as client:
        yield client


def runbook(*, escalate: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "triggers": [{"alertname": "RedisLowCacheHitRatio"}],
        "steps": [
            {
                "name": "probe",
                "action": "httpHealthCheck",
                "params": {"module": "finbot"},
                "timeoutSeconds": STEP_TIMEOUT,
                "retries": 0,
            }
        ],
        "guardrails": {
            "groupBy": ["alertname", "instance"],
            "silence": {"enabled": True, "verificationSeconds": VERIFICATION},
        },
    }
    if escalate:
        spec["onFailure"] = {"escalateTo": "page-oncall"}
    return {
        "apiVersion": API_VERSION,
        "kind": "McpRunbook",
        "metadata": {"name": "stale-cache", "namespace": "mcp"},
        "spec": spec,
    }


def alert_run(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A run as the receiver creates it: of the runbook, with its alert."""
    return {
        "apiVersion": API_VERSION,
        "kind": "McpRemediation",
        "metadata": {"name": name, "namespace": "mcp"},
        "spec": {
            "runbookRef": {"name": "stale-cache"},
            "alert": {
                "fingerprint": "347dfda9cb670ac3",
                "status": "firing",
                "labels": labels or ALERT_LABELS,
                "startsAt": "2026-11-28T01:26:33.953Z",
            },
        },
    }


async def live_silences(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    answer = await api.get("/silences")
    answer.raise_for_status()
    return [s for s in answer.json() if s["status"]["state"] in ("active", "pending")]


async def start(
    cluster: Cluster,
    operator_factory: OperatorFactory,
    http_mock: HttpMock,
    alertmanager_url: str,
) -> Any:
    return await operator_factory(
        alertmanager_url=alertmanager_url,
        alertmanager_token=TOKEN,
        module_base_urls={"finbot": http_mock.url},
    )


def parse(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_silence_holds_the_alert_while_the_run_works_and_ends_with_its_success(
    cluster: Cluster,
    operator_factory: OperatorFactory,
    http_mock: HttpMock,
    alertmanager: Daemon,
    am_api: httpx.AsyncClient,
) -> None:
    gate = Gate(http_mock)
    # The alert itself, and one of another instance that the silence must not touch.
    firing = "2099-01-01T00:00:00Z"
    post_alerts(
        alertmanager,
        [{"labels": labels, "endsAt": firing} for labels in (ALERT_LABELS, OTHER_INSTANCE)],
    )
    cluster.seed(runbook())
    await start(cluster, operator_factory, http_mock, alertmanager.url)
    cluster.seed(alert_run("stale-cache-run"))
    await asyncio.wait_for(gate.asked.wait(), 20)

    [silence] = await live_silences(am_api)
    matchers = {(m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in silence["matchers"]}
    assert matchers == {
        ("alertname", "RedisLowCacheHitRatio", True, False),
        ("instance", "redis-0.redis:6379", True, False),
    }
    assert silence["createdBy"] == "mcp-remediator"
    assert "remediation mcp/stale-cache-run" in silence["comment"]
    # Bounded: the step's one attempt plus the verification window, from its start.
    length = parse(silence["endsAt"]) - parse(silence["startsAt"])
    assert abs(length.total_seconds() - (STEP_TIMEOUT + VERIFICATION)) <= 2, silence
    status = cluster.remediation("mcp", "stale-cache-run")["status"]
    assert status["silence"]["state"] == "Active"
    assert status["silence"]["id"] == silence["id"]
    assert status["silence"]["matchers"] == {
        "alertname": "RedisLowCacheHitRatio",
        "instance": "redis-0.redis:6379",
    }
    # Alertmanager itself silences exactly the alert of the run.
    alerts = (await am_api.get("/alerts")).json()
    states = {a["labels"]["instance"]: a["status"] for a in alerts}
    assert states["redis-0.redis:6379"]["silencedBy"] == [silence["id"]]
    assert states["redis-1.redis:6379"]["silencedBy"] == []

    gate.open(200)
    done = await cluster.wait_phase("mcp", "stale-cache-run", {"Succeeded", "Failed"})

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["silence"]["state"] == "Expired"
    assert done["status"]["silence"]["expiredAt"]
    assert await live_silences(am_api) == []
    [expired] = (await am_api.get(f"/silence/{silence['id']}")).json()["status"].values()
    assert expired == "expired"


async def test_a_failed_run_expires_its_silence_before_it_escalates(
    cluster: Cluster,
    operator_factory: OperatorFactory,
    http_mock: HttpMock,
    alertmanager: Daemon,
    am_api: httpx.AsyncClient,
) -> None:
    gate = Gate(http_mock)
    cluster.seed(runbook(escalate=True))
    page = {
        "apiVersion": API_VERSION,
        "kind": "McpRunbook",
        "metadata": {"name": "page-oncall", "namespace": "mcp"},
        "spec": {
            "steps": [{"name": "note", "action": "prometheusQuery", "params": {"query": "up"}}]
        },
    }
    cluster.seed(page)
    await start(cluster, operator_factory, http_mock, alertmanager.url)
    seen_at_escalation: list[list[dict[str, Any]]] = []
    cluster.seed(alert_run("stale-cache-fails"))
    await asyncio.wait_for(gate.asked.wait(), 20)
    assert len(await live_silences(am_api)) == 1

    gate.open(503)
    done = await cluster.wait_phase("mcp", "stale-cache-fails", {"Succeeded", "Failed"})
    seen_at_escalation.append(await live_silences(am_api))

    assert done["status"]["phase"] == "Failed", done["status"]
    assert done["status"]["silence"]["state"] == "Expired"
    assert seen_at_escalation == [[]]
    # The failure's own write holds the expiry: the escalation is created after it.
    escalation = await cluster.wait_for(
        lambda: [
            r
            for r in cluster.api.list_objects(API_VERSION, REMEDIATIONS, "mcp")
            if r["spec"].get("runbookRef", {}).get("name") == "page-oncall"
        ],
        what="the escalation",
    )
    assert escalation
    history = cluster.api.objects[
        cluster.api.resource(API_VERSION, REMEDIATIONS), "mcp", "stale-cache-fails"
    ].history
    failed = next(v for v in history if (v.get("status") or {}).get("phase") == "Failed")
    assert failed["status"]["silence"]["state"] == "Expired"
    assert failed["status"]["escalatedTo"]["created"] is False


async def test_a_restarted_operator_keeps_the_one_silence_and_expires_it_at_the_end(
    cluster: Cluster,
    operator_factory: OperatorFactory,
    http_mock: HttpMock,
    alertmanager: Daemon,
    am_api: httpx.AsyncClient,
) -> None:
    gate = Gate(http_mock)
    cluster.seed(runbook())
    first = await start(cluster, operator_factory, http_mock, alertmanager.url)
    cluster.seed(alert_run("stale-cache-restart"))
    await asyncio.wait_for(gate.asked.wait(), 20)
    [silence] = await live_silences(am_api)

    await first.stop()  # killed mid-step: the silence stays, bounded by its endsAt
    assert [s["id"] for s in await live_silences(am_api)] == [silence["id"]]
    gate.asked.clear()
    await start(cluster, operator_factory, http_mock, alertmanager.url)
    await asyncio.wait_for(gate.asked.wait(), 20)
    assert [s["id"] for s in await live_silences(am_api)] == [silence["id"]]

    gate.open(200)
    done = await cluster.wait_phase("mcp", "stale-cache-restart", {"Succeeded", "Failed"})

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["silence"]["id"] == silence["id"]
    assert await live_silences(am_api) == []
    assert len((await am_api.get("/silences")).json()) == 1  # never a second one


async def test_a_start_that_is_retried_finds_the_silence_it_made(
    cluster: Cluster,
    operator_factory: OperatorFactory,
    http_mock: HttpMock,
    alertmanager: Daemon,
    am_api: httpx.AsyncClient,
) -> None:
    """A silence made for the run before an operator stopped ahead of its status write:
    the run's start takes it (by ``createdBy`` and comment) instead of making another."""
    gate = Gate(http_mock)
    cluster.seed(runbook())
    cluster.seed(alert_run("stale-cache-again"))  # not started yet: no status
    made = await am_api.post(
        "/silences",
        json={
            "matchers": [
                {"name": "alertname", "value": "RedisLowCacheHitRatio", "isRegex": False},
                {"name": "instance", "value": "redis-0.redis:6379", "isRegex": False},
            ],
            "startsAt": datetime.datetime.now(datetime.UTC).isoformat(),
            "endsAt": (
                datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
            ).isoformat(),
            "createdBy": silences.CREATED_BY,
            "comment": silences.comment("mcp", "stale-cache-again"),
        },
    )
    made.raise_for_status()
    await start(cluster, operator_factory, http_mock, alertmanager.url)
    await asyncio.wait_for(gate.asked.wait(), 20)

    assert [s["id"] for s in await live_silences(am_api)] == [made.json()["silenceID"]]
    status = cluster.remediation("mcp", "stale-cache-again")["status"]
    assert status["silence"]["id"] == made.json()["silenceID"]
    gate.open(200)
    await cluster.wait_phase("mcp", "stale-cache-again", {"Succeeded", "Failed"})
    assert await live_silences(am_api) == []


async def test_silences_of_finished_runs_are_expired_when_the_operator_starts(
    cluster: Cluster,
    operator_factory: OperatorFactory,
    http_mock: HttpMock,
    alertmanager: Daemon,
    am_api: httpx.AsyncClient,
) -> None:
    now = datetime.datetime.now(datetime.UTC)

    async def silence(name: str, created_by: str = silences.CREATED_BY) -> str:
        answer = await am_api.post(
            "/silences",
            json={
                "matchers": [{"name": "alertname", "value": name, "isRegex": False}],
                "startsAt": now.isoformat(),
                "endsAt": (now + datetime.timedelta(minutes=10)).isoformat(),
                "createdBy": created_by,
                "comment": silences.comment("mcp", name),
            },
        )
        answer.raise_for_status()
        silence_id: str = answer.json()["silenceID"]
        return silence_id

    # Finished while its expiry could not reach Alertmanager (the run's silence lives on).
    finished = alert_run("finished-run")
    finished["status"] = {
        "phase": "Failed",
        "reason": "StepFailed",
        "finishedAt": "2026-11-28T01:30:00Z",
    }
    cluster.seed(runbook())
    cluster.seed(finished)
    of_finished = await silence("finished-run")
    of_deleted = await silence("deleted-run")
    of_someone = await silence("finished-run", created_by="alice")

    await start(cluster, operator_factory, http_mock, alertmanager.url)

    async def expired() -> set[str]:
        return {s["id"] for s in await live_silences(am_api)}

    deadline = asyncio.get_running_loop().time() + 20
    while await expired() != {of_someone}:
        assert asyncio.get_running_loop().time() < deadline, await live_silences(am_api)
        await asyncio.sleep(0.1)
    assert of_finished not in await expired() and of_deleted not in await expired()


async def test_unreachable_alertmanager_never_holds_a_run_back(
    cluster: Cluster, operator_factory: OperatorFactory, http_mock: HttpMock
) -> None:
    gate = Gate(http_mock)
    gate.open(200)
    cluster.seed(runbook())
    await start(cluster, operator_factory, http_mock, f"http://127.0.0.1:{free_port()}")
    cluster.seed(alert_run("no-alertmanager"))
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRemediation",
            "metadata": {"name": "by-hand", "namespace": "mcp"},
            "spec": {"runbookRef": {"name": "stale-cache"}},
        }
    )

    done = await cluster.wait_phase("mcp", "no-alertmanager", {"Succeeded", "Failed"})
    by_hand = await cluster.wait_phase("mcp", "by-hand", {"Succeeded", "Failed", "Skipped"})

    assert done["status"]["phase"] == "Succeeded", done["status"]
    silence = done["status"]["silence"]
    assert (silence["state"], silence["reason"]) == ("NotCreated", "AlertmanagerUnavailable")
    assert "unreachable" in silence["message"] and "goes on" in silence["message"]
    assert by_hand["status"]["phase"] == "Succeeded", by_hand["status"]
    assert by_hand["status"]["silence"]["state"] == "NotCreated"
    assert by_hand["status"]["silence"]["reason"] == "NoAlert"


async def test_alertmanager_0_32_gets_annotations_naming_the_run_and_the_token(
    http_mock: HttpMock,
) -> None:
    """Silence annotations came with Alertmanager 0.32 (Debian's 0.25 has none): a local
    server answering as 0.32 gets them; every request carries the bearer token."""
    http_mock.on("GET", "/api/v2/status", (200, {"versionInfo": {"version": "0.32.0"}}))
    http_mock.on("GET", "/api/v2/silences", (200, []))
    http_mock.on("POST", "/api/v2/silences", (200, {"silenceID": "0a1b"}))
    settings = Settings(alertmanager_url=http_mock.url, alertmanager_token=TOKEN)
    plan = Plan(
        runbook="stale-cache",
        steps=[Step(name="probe", action="httpHealthCheck", timeoutSeconds=30, retries=0)],
        silence=SilenceGuardrail(enabled=True, verificationSeconds=60),
        groupBy=["instance"],
    )
    async with httpx.AsyncClient() as http:
        silencer = silences.Silencer(settings, http)
        status = await silencer.start(
            "mcp",
            "stale-cache-run",
            AlertInfo(labels=ALERT_LABELS),
            plan,
            [StepStatus(name="probe", action="httpHealthCheck")],
            dry_run=False,
        )

    assert status is not None and (status.state, status.id) == ("Active", "0a1b")
    [posted] = http_mock.seen("POST", "/api/v2/silences")
    assert posted.json()["annotations"] == {
        "remediation": "mcp/stale-cache-run",
        "runbook": "mcp/stale-cache",
    }
    [listed] = http_mock.seen("GET", "/api/v2/silences")
    assert listed.query["filter"] in {
        'alertname="RedisLowCacheHitRatio"',
        'instance="redis-0.redis:6379"',
    }
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in http_mock.requests)
