"""Alertmanager 0.25 and 0.34 payloads make the same remediations.

The payloads are those under ``tests/data`` (see its README): captured from the real
Alertmanager 0.25 that the tests run, and built for 0.34 from its source (0.34 adds
``notification_reason`` and ``routeLabels``). A live capture checks that Alertmanager 0.25
still sends what was captured; the receiver then takes each version's firing and resolved
notification in turn, and the records must be the same but for the one field 0.34 adds,
``spec.alert.notificationReason``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from fixtures.alertmanager import CAPTURE_TOKEN, capture_notifications
from fixtures.cluster import Cluster
from fixtures.receiver import AUTH, started_receiver
from mcp_remediator.kube.client import KubeApi
from mcp_remediator.models import API_VERSION, REMEDIATIONS
from mcp_remediator.settings import Settings

DATA = Path(__file__).parents[1] / "data"
RUNBOOK = {
    "apiVersion": API_VERSION,
    "kind": "McpRunbook",
    "metadata": {"name": "redis-stale-cache", "namespace": "mcp"},
    "spec": {
        "triggers": [
            {"alertname": "RedisLowCacheHitRatio", "matchers": ['severity=~"warning|critical"']}
        ],
        "steps": [{"name": "restart", "action": "rolloutRestart", "params": {"name": "redis"}}],
        # one group per instance: both matching alerts run, whichever the receiver takes first
        "guardrails": {"groupBy": ["alertname", "instance"]},
    },
}


def body(version: str, status: str) -> bytes:
    return (DATA / f"alertmanager-{version}-{status}.json").read_bytes()


def without_external_url(raw: bytes) -> list[tuple[str, Any]]:
    """The body's fields in order, but ``externalURL`` (it names a free port)."""
    return [(k, v) for k, v in json.loads(raw).items() if k != "externalURL"]


def test_alertmanager_025_still_sends_what_was_captured(tmp_path: Path) -> None:
    firing, resolved = capture_notifications(tmp_path)

    for posted, status in ((firing, "firing"), (resolved, "resolved")):
        assert without_external_url(posted.body) == without_external_url(body("0.25", status))
        assert [list(a) for a in posted.json()["alerts"]] == [
            list(a) for a in json.loads(body("0.25", status))["alerts"]
        ]
        assert posted.headers["user-agent"].startswith("Alertmanager/0.25")
        assert posted.headers["content-type"] == "application/json"
        assert posted.headers["authorization"] == f"Bearer {CAPTURE_TOKEN}"


async def post(port: int, raw: bytes) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        response = await client.post(
            "/alerts", content=raw, headers={**AUTH, "Content-Type": "application/json"}
        )
    assert response.status_code == 200, response.text
    summary: dict[str, Any] = response.json()
    summary["remediations"].sort()
    return summary


async def notify(cluster: Cluster, version: str) -> tuple[list[dict[str, Any]], list[Any]]:
    """The records after ``version``'s firing, then resolved notification (each answered
    by a receiver that has not seen the other version), and both answers."""
    async with started_receiver(cluster) as receiver:
        answers = [await post(receiver.port, body(version, "firing"))]
        fired = cluster.api.list_objects(API_VERSION, REMEDIATIONS, "mcp")
        answers.append(await post(receiver.port, body(version, "resolved")))
    resolved = cluster.api.list_objects(API_VERSION, REMEDIATIONS, "mcp")
    assert [r["metadata"]["name"] for r in fired] == [r["metadata"]["name"] for r in resolved]
    return resolved, answers


async def delete_all(cluster: Cluster, records: list[dict[str, Any]]) -> None:
    settings = Settings()
    kube = KubeApi(cluster.admin_connection, settings)
    try:
        for record in records:
            await kube.delete(API_VERSION, REMEDIATIONS, "mcp", record["metadata"]["name"])
    finally:
        await kube.aclose()
    assert cluster.api.list_objects(API_VERSION, REMEDIATIONS, "mcp") == []


def essence(record: dict[str, Any]) -> dict[str, Any]:
    """What a notification decides about a record: not the API's stamps or the times."""
    meta, status = record["metadata"], record.get("status") or {}
    return {
        "name": meta["name"],
        "labels": meta.get("labels"),
        "annotations": meta.get("annotations"),
        "ownerReferences": meta.get("ownerReferences"),
        "spec": record["spec"],
        "phase": status.get("phase"),
        "reason": status.get("reason"),
        "message": status.get("message"),
    }


async def test_a_034_payload_creates_exactly_the_remediations_a_025_one_does(
    cluster: Cluster,
) -> None:
    cluster.seed(RUNBOOK)

    old, old_answers = await notify(cluster, "0.25")
    await delete_all(cluster, old)
    new, new_answers = await notify(cluster, "0.34")

    assert new_answers == old_answers
    firing, resolved = old_answers
    assert (firing["alerts"], firing["created"], firing["unmatched"]) == (3, 2, 1)
    assert (resolved["cancelled"], resolved["unmatched"]) == (2, 1)
    assert [r["metadata"]["name"] for r in new] == [r["metadata"]["name"] for r in old]
    for before, after in zip(old, new, strict=True):
        assert after["spec"]["alert"].pop("notificationReason") == "first notification"
        assert "notificationReason" not in before["spec"]["alert"]
        assert essence(after) == essence(before)
        assert essence(after)["phase"] == "Cancelled"
