"""Issue 11, hardening, against the emulated API with the real operator: a bad runbook, a
bad label, a record in a protected namespace or a failing vendor gets a clear answer,
nothing wedges, and no planted secret reaches a status, an Event or a log line."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest

from fixtures.cluster import Cluster, OperatorFactory
from fixtures.daemons import free_port
from mcp_remediator.kube import refusals
from mcp_remediator.models import API_VERSION, RUNBOOKS

TOKEN = "receiver-token"
HOSTS = ["finbot", "finbot:8080", "127.0.0.1"]


def runbook(name: str, steps: list[dict[str, Any]], namespace: str = "mcp") -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "McpRunbook",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "triggers": [{"alertname": "FinbotDown"}],
            "steps": steps,
            "guardrails": {"cooldownSeconds": 0, "maxConcurrent": 1, "maxPerHour": 100},
        },
    }


def probe(url: str, name: str = "probe", **extra: Any) -> dict[str, Any]:
    return {"name": name, "action": "httpHealthCheck", "params": {"url": url}, **extra}


def valid_condition(cluster: Cluster, name: str, namespace: str = "mcp") -> dict[str, Any] | None:
    obj = cluster.get(API_VERSION, RUNBOOKS, namespace, name) or {}
    found = [c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "Valid"]
    return found[0] if found else None


def events(cluster: Cluster, namespace: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in cluster.api.list_objects("v1", "events", namespace)
        if name is None or e.get("involvedObject", {}).get("name") == name
    ]


def alert(**labels: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": "FinbotDown", **labels},
        "annotations": {},
        "startsAt": "2026-11-28T01:26:33.953Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "347dfda9cb670ac3",
    }


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
            "receiver": "mcp-remediator", "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://alertmanager",
            "alerts": list(alerts)}  # fmt: skip


async def eventually_ready(client: httpx.AsyncClient, timeout: float = 20) -> httpx.Response:
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            last = await client.get("/readyz")
            if last.status_code == 200:
                return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz never answered 200; last: {last and last.text}")


# -- one bad runbook does not stop the receiver ------------------------------------------


@pytest.mark.parametrize("url", ["http://finbot:99999/", "http://[::1/"])
async def test_a_runbook_with_a_malformed_url_is_invalid_and_the_receiver_stays_ready(
    cluster: Cluster, operator_factory: OperatorFactory, url: str
) -> None:
    # Present before the operator starts: the receiver's first LIST warms the cache with it.
    cluster.seed(runbook("bad-url", [probe(url)]))
    cluster.seed(runbook("good", [probe("http://finbot:8080/health")]))
    port = free_port()
    await operator_factory(
        receiver=True, receiver_port=port, receiver_host="127.0.0.1", receiver_token=TOKEN,
        http_allowed_hosts=HOSTS,
    )  # fmt: skip

    condition = await cluster.wait_for(
        lambda: valid_condition(cluster, "bad-url"), what="the bad runbook's Valid condition"
    )
    assert condition["status"] == "False"
    assert condition["reason"] == refusals.HOST_NOT_ALLOWED
    assert "not a valid http(s) URL" in condition["message"]
    good = await cluster.wait_for(lambda: valid_condition(cluster, "good"), what="good: Valid")
    assert good["status"] == "True"
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        ready = await eventually_ready(client)
        answer = await client.post("/alerts", json=payload(alert()))
    assert ready.json()["runbooks"] == 1
    assert answer.status_code == 200, answer.text
    assert answer.json()["created"] == 1
    assert answer.json()["remediations"][0].startswith("mcp/good-")
