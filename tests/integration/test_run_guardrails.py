"""Guardrails for every run of a runbook, however it was created: by the receiver, by hand
(an McpRemediation with ``spec.runbookRef``) or by escalation. The real operator (Kopf +
engine, with the receiver where an alert is part of the story) on the emulated API."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from typing import Any

import httpx

from fixtures.cluster import Cluster, OperatorFactory, deployment
from fixtures.daemons import free_port
from mcp_remediator import records
from mcp_remediator.models import (
    ANNOTATION_SKIP_REASON,
    API_VERSION,
    LABEL_ESCALATED_FROM,
    LABEL_GROUP,
    LABEL_RUNBOOK,
)

TOKEN = "s3cret-token"
STARTS = "2026-11-28T01:26:33.953Z"
FINISHED = {"Succeeded", "Failed", "Refused", "Skipped", "Cancelled"}


def restart(name: str = "{{ labels.deployment }}") -> list[dict[str, Any]]:
    return [{"name": "restart", "action": "rolloutRestart", "params": {"name": name}}]


def runbook(
    name: str,
    steps: list[dict[str, Any]] | None = None,
    *,
    alertname: str | None = None,
    suspend: bool = False,
    escalate_to: str | None = None,
    **guardrails: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "suspend": suspend,
        "steps": steps or restart(),
        "guardrails": guardrails,
    }
    if alertname:
        spec["triggers"] = [{"alertname": alertname}]
    if escalate_to:
        spec["onFailure"] = {"escalateTo": escalate_to}
    return {
        "apiVersion": API_VERSION,
        "kind": "McpRunbook",
        "metadata": {"name": name, "namespace": "mcp"},
        "spec": spec,
    }


def by_hand(name: str, runbook_name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "McpRemediation",
        "metadata": {"name": name, "namespace": "mcp"},
        "spec": {"runbookRef": {"name": runbook_name}, "labels": labels},
    }


def outcome(rem: dict[str, Any]) -> tuple[str, str]:
    return rem["status"]["phase"], rem["status"]["reason"]


def firing(fingerprint: str, **labels: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": "ApiErrors", **labels},
        "annotations": {},
        "startsAt": STARTS,
        "fingerprint": fingerprint,
    }


async def wait_ready(client: httpx.AsyncClient, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get("/readyz")).status_code == 200:
                return
        await asyncio.sleep(0.02)
    raise AssertionError("the receiver did not get ready")


async def post_alert(client: httpx.AsyncClient, alert: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/alerts", json={"version": "4", "alerts": [alert]})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_a_run_by_hand_during_the_groups_cooldown_is_skipped_and_counted(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    cluster.seed(deployment("finbot-api"))
    cluster.seed(deployment("finbot-worker"))
    cluster.seed(
        runbook(
            "restart-api",
            alertname="ApiErrors",
            groupBy=["alertname", "deployment"],
            cooldownSeconds=600,
            maxConcurrent=5,
        )
    )
    port = free_port()
    await operator_factory(
        receiver=True, receiver_port=port, receiver_host="127.0.0.1", receiver_token=TOKEN
    )
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        await wait_ready(client)
        alert = firing("a1", deployment="finbot-api")
        assert (await post_alert(client, alert))["created"] == 1
        name = records.remediation_name("restart-api", "a1", STARTS)
        done = await cluster.wait_phase("mcp", name, FINISHED)
        assert done["status"]["phase"] == "Succeeded", done["status"]

        # By hand, same runbook and group (alertname and deployment): in its cooldown.
        cluster.seed(
            by_hand("again", "restart-api", alertname="ApiErrors", deployment="finbot-api")
        )
        again = await cluster.wait_phase("mcp", "again", FINISHED)
        assert outcome(again) == ("Skipped", "Cooldown"), again["status"]
        assert f"run {name} of this group" in again["status"]["message"]
        assert again["metadata"]["annotations"][ANNOTATION_SKIP_REASON] == "Cooldown"
        labels = again["metadata"]["labels"]
        assert labels[LABEL_RUNBOOK] == "restart-api"
        assert labels[LABEL_GROUP] == done["metadata"]["labels"][LABEL_GROUP]
        assert "steps" not in again["status"] or again["status"]["steps"] == []

        # By hand in another group: it runs, and the receiver counts it for that group.
        cluster.seed(
            by_hand("worker", "restart-api", alertname="ApiErrors", deployment="finbot-worker")
        )
        worker = await cluster.wait_phase("mcp", "worker", FINISHED)
        assert worker["status"]["phase"] == "Succeeded", worker["status"]
        answer = await post_alert(client, firing("a2", deployment="finbot-worker"))
        assert answer["skipped"] == 1, answer
        skipped = cluster.remediation("mcp", records.remediation_name("restart-api", "a2", STARTS))
        assert skipped["status"]["reason"] == "Cooldown"
        assert "run worker of this group" in skipped["status"]["message"]
    restarts = [r.name for r in cluster.writes("deployments") if r.method == "PATCH"]
    assert sorted(restarts) == ["finbot-api", "finbot-worker"]


async def test_a_run_by_hand_of_a_suspended_runbook_is_skipped(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    cluster.seed(deployment("finbot-api"))
    cluster.seed(runbook("paused", suspend=True))
    await operator_factory()

    cluster.seed(by_hand("try", "paused", deployment="finbot-api"))

    done = await cluster.wait_phase("mcp", "try", FINISHED)
    assert outcome(done) == ("Skipped", "Suspended")
    assert done["status"]["message"] == "runbook paused is suspended (spec.suspend=true)"
    assert done["metadata"]["labels"][LABEL_RUNBOOK] == "paused"
    assert cluster.writes("deployments") == []


def _created_at(cluster: Cluster, name: str) -> str:
    created: str = cluster.remediation("mcp", name)["metadata"]["creationTimestamp"]
    return created


async def _seed_in_one_second(cluster: Cluster, *bodies: dict[str, Any]) -> None:
    """Seed ``bodies`` early in one second, so that they share a creationTimestamp."""
    while datetime.datetime.now(datetime.UTC).microsecond > 200_000:
        await asyncio.sleep(0.01)
    for body in bodies:
        cluster.seed(body)
    names = [b["metadata"]["name"] for b in bodies]
    assert len({_created_at(cluster, n) for n in names}) == 1, "the seeds straddled a second"


async def test_of_two_runs_by_hand_created_together_the_earlier_runs(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    cluster.seed(deployment("finbot-api"))
    cluster.seed(runbook("one-at-a-time", cooldownSeconds=0, maxConcurrent=1))
    await operator_factory()

    # One after the other: the first created runs.
    cluster.seed(by_hand("first", "one-at-a-time", deployment="finbot-api"))
    cluster.seed(by_hand("second", "one-at-a-time", deployment="finbot-api"))
    first = await cluster.wait_phase("mcp", "first", FINISHED)
    second = await cluster.wait_phase("mcp", "second", FINISHED)
    assert first["status"]["phase"] == "Succeeded", first["status"]
    assert outcome(second) == ("Skipped", "ConcurrencyLimit")
    assert "maxConcurrent=1): first" in second["status"]["message"]

    # In the same second: the name decides, not which one the engine sees first.
    await _seed_in_one_second(
        cluster,
        by_hand("run-b", "one-at-a-time", deployment="finbot-api"),
        by_hand("run-a", "one-at-a-time", deployment="finbot-api"),
    )
    run_a = await cluster.wait_phase("mcp", "run-a", FINISHED)
    run_b = await cluster.wait_phase("mcp", "run-b", FINISHED)
    assert run_a["status"]["phase"] == "Succeeded", run_a["status"]
    assert outcome(run_b) == ("Skipped", "ConcurrencyLimit")
    assert len([r for r in cluster.writes("deployments") if r.method == "PATCH"]) == 2


async def test_an_escalation_into_a_suspended_runbook_is_skipped(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    cluster.seed(runbook("fix", restart("missing"), escalate_to="page"))
    cluster.seed(runbook("page", suspend=True))
    await operator_factory()

    cluster.seed(by_hand("fix-1", "fix"))

    failed = await cluster.wait_phase("mcp", "fix-1", FINISHED)
    assert failed["status"]["phase"] == "Failed", failed["status"]
    escalated = await cluster.wait_for(
        lambda: cluster.remediation("mcp", "fix-1")["status"]["escalatedTo"]["name"],
        what="the escalation",
    )
    done = await cluster.wait_phase("mcp", escalated, FINISHED)
    assert outcome(done) == ("Skipped", "Suspended")
    labels = done["metadata"]["labels"]
    assert labels[LABEL_RUNBOOK] == "page" and labels[LABEL_ESCALATED_FROM] == "fix-1"
    assert labels[LABEL_GROUP] == records.group_key(["alertname"], {})


async def test_an_escalation_counts_against_its_runbooks_guardrails(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    # The on-call page escalated to at most once per group in the cooldown: a run by hand
    # of the page after the escalation is Skipped, so the escalation was counted.
    cluster.seed(runbook("fix", restart("missing"), escalate_to="page"))
    cluster.seed(deployment("pager"))
    cluster.seed(runbook("page", restart("pager"), cooldownSeconds=600, maxConcurrent=5))
    await operator_factory()

    cluster.seed(by_hand("fix-1", "fix"))
    escalated = await cluster.wait_for(
        lambda: cluster.remediation("mcp", "fix-1")["status"]["escalatedTo"]["name"],
        what="the escalation",
    )
    paged = await cluster.wait_phase("mcp", escalated, FINISHED)
    assert paged["status"]["phase"] == "Succeeded", paged["status"]

    cluster.seed(by_hand("page-again", "page"))
    again = await cluster.wait_phase("mcp", "page-again", FINISHED)
    assert outcome(again) == ("Skipped", "Cooldown")
    assert f"run {escalated} of this group" in again["status"]["message"]
