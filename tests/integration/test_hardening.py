"""Issue 11, hardening, against the emulated API with the real operator: a bad runbook, a
bad label, a record in a protected namespace or a failing vendor gets a clear answer,
nothing wedges, and no planted secret reaches a status, an Event or a log line."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fixtures.cluster import Cluster, OperatorFactory, remediation
from fixtures.daemons import free_port
from fixtures.http_mock import HttpMock
from mcp_remediator.alerts.receiver import Receiver
from mcp_remediator.kube import refusals
from mcp_remediator.kube.client import KubeApi
from mcp_remediator.kube.events import now
from mcp_remediator.models import API_VERSION, REMEDIATIONS, RUNBOOKS
from mcp_remediator.runbook import guardrails
from mcp_remediator.settings import Settings

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


async def test_an_unexpected_error_of_one_alert_is_counted_failed_not_a_5xx(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any) -> None:
        raise KeyError("planted-record-detail")

    monkeypatch.setattr(guardrails, "evaluate", broken)
    cluster.seed(runbook("good", [probe("http://finbot:8080/health")]))
    settings = Settings(receiver_token=TOKEN, receiver_host="127.0.0.1", http_allowed_hosts=HOSTS)
    kube = KubeApi(cluster.connection, settings)
    receiver = Receiver(settings, kube)
    await receiver.start(port=0)
    try:
        await cluster.wait_for(lambda: receiver.ready, what="a warm runbook cache")
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{receiver.port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as client:
            answer = await client.post("/alerts", json=payload(alert()))
    finally:
        await receiver.stop()
        await kube.aclose()

    assert answer.status_code == 200, answer.text
    assert answer.json()["failed"] == 1 and answer.json()["created"] == 0
    assert "failed unexpectedly (KeyError)" in caplog.text
    assert "planted-record-detail" not in caplog.text


# -- a bad label fails one run; the group goes on ---------------------------------------


async def test_a_label_rendering_a_bad_port_ends_the_run_and_frees_its_group(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    cluster.seed(runbook("probe", [probe("http://finbot:{{ labels.port }}/health")]))
    await operator_factory(http_allowed_hosts=HOSTS)
    await cluster.wait_for(lambda: valid_condition(cluster, "probe"), what="probe: Valid")
    bad = remediation("bad-port", [], labels={"port": "99999"})
    del bad["spec"]["steps"]
    bad["spec"]["runbookRef"] = {"name": "probe"}
    cluster.seed(bad)

    done = await cluster.wait_phase("mcp", "bad-port", {"Succeeded", "Failed", "Refused"})

    assert done["status"]["phase"] == "Refused", done["status"]
    assert done["status"]["reason"] == refusals.HOST_NOT_ALLOWED
    [step] = done["status"]["steps"]
    assert step["phase"] == "Failed" and step["reason"] == refusals.HOST_NOT_ALLOWED
    assert "not a valid http(s) URL" in step["message"]
    # The group (maxConcurrent 1) is free again: the next run of the runbook is not Skipped.
    # (Runs are judged as their group stood at their creation, in whole seconds.)
    finished = done["status"]["finishedAt"]
    await cluster.wait_for(lambda: now() > finished, what="the second after the run finished")
    good = {**bad, "metadata": {"name": "next-run", "namespace": "mcp"}}
    good["spec"] = {"runbookRef": {"name": "probe"}, "labels": {"port": "1"}}
    cluster.seed(good)
    after = await cluster.wait_phase("mcp", "next-run", {"Succeeded", "Failed", "Skipped"})
    assert after["status"]["phase"] == "Failed", after["status"]
    assert after["status"]["steps"][0]["reason"] == "HealthCheckFailed"


async def test_an_unexpected_error_in_step_preparation_fails_the_step_by_type(
    cluster: Cluster, operator_factory: OperatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = refusals.check_url

    def broken(settings: Any, url: str, *args: Any) -> None:
        # Only for the rendered value: runbook validation checks samples, and passes.
        if url.endswith("/health"):
            raise LookupError("planted-internal-detail")
        real(settings, url, *args)

    monkeypatch.setattr(refusals, "check_url", broken)
    await operator_factory(http_allowed_hosts=HOSTS)
    steps = [probe("http://finbot/{{ labels.path }}"),
             {"name": "after", "action": "notify", "params": {"message": "x"}}]  # fmt: skip
    cluster.seed(remediation("internal", steps, labels={"path": "health"}))

    done = await cluster.wait_phase("mcp", "internal", {"Succeeded", "Failed", "Refused"})

    assert done["status"]["phase"] == "Failed", done["status"]
    first, after = done["status"]["steps"]
    assert first["phase"] == "Failed" and first["reason"] == "InternalError"
    assert "LookupError" in first["message"]
    assert "planted-internal-detail" not in json.dumps(done["status"])
    assert after["phase"] == "Skipped"


# -- records in protected namespaces finish once -----------------------------------------


@pytest.mark.parametrize("namespace", ["kube-system", "kyverno"])
async def test_a_remediation_in_a_protected_namespace_is_refused_once(
    cluster: Cluster, operator_factory: OperatorFactory, namespace: str
) -> None:
    await operator_factory()
    steps = [{"name": "inspect", "action": "podStatus", "params": {"selector": "app=x"}}]
    cluster.seed(remediation("in-protected", steps, namespace=namespace))
    cluster.seed(runbook("protected-rb", steps, namespace=namespace))
    by_ref = remediation("by-ref", [], namespace=namespace)
    by_ref["spec"] = {"runbookRef": {"name": "protected-rb"}}
    cluster.seed(by_ref)

    for name in ("in-protected", "by-ref"):
        done = await cluster.wait_phase(namespace, name, {"Succeeded", "Failed", "Refused"})
        assert done["status"]["phase"] == "Refused", done["status"]
        assert done["status"]["reason"] == refusals.PROTECTED_NAMESPACE
        assert f"namespace {namespace} is protected" in done["status"]["message"]
        assert done["status"]["finishedAt"]
        await cluster.wait_for(
            lambda name=name: [
                e for e in events(cluster, namespace, name) if e["reason"] == "Refused"
            ],
            what=f"the Refused Event of {name}",
        )
    # The runbook there is invalid, and says why.
    condition = await cluster.wait_for(
        lambda: valid_condition(cluster, "protected-rb", namespace), what="its Valid condition"
    )
    assert (condition["status"], condition["reason"]) == ("False", refusals.PROTECTED_NAMESPACE)
    # No step ran: nothing was requested as the namespace's accounts.
    assert not [e for e in cluster.api.audit if e.impersonate_user]
    # Finished once: one finishing status write each, no retry loop writing on.
    finished = [
        r
        for r in cluster.writes(REMEDIATIONS)
        if r.method.value == "PATCH" and r.subresource == "status" and '"Refused"' in r.text
    ]
    assert len(finished) == 2, [r.path for r in finished]


# -- planted secrets never reach a status, an Event or a log line -------------------------

PLANTED = {
    "receiver": "PLANTED-RECEIVER-TOKEN-1f4e",
    "prom_pass": "PLANTED-PROM-PASS-77a1",
    "prom_token": "PLANTED-PROM-TOKEN-9c2b",
    "argo_pass": "PLANTED-ARGO-PASS-3d0e",
    "argo_token": "PLANTED-ARGO-TOKEN-5b6f",
    "secret_pass": "PLANTED-SECRET-PASS-a0c3",
    "secret_token": "PLANTED-SECRET-TOKEN-8e1a",
    "redis_pass": "PLANTED-REDIS-PASS-2c9d",
    "banner": "PLANTED-BANNER-4a7c",
    "hook": "PLANTED-HOOK-6d3f",
    "http_pass": "PLANTED-HTTP-PASS-0b8e",
}


def halves(key: str) -> tuple[str, str]:
    """The distinctive part of a planted value, cut in two (each must stay out of text
    too: a URL with a `/` in its password is parsed as a host and a port)."""
    distinctive = PLANTED[key].removeprefix("PLANTED-")
    middle = len(distinctive) // 2
    return distinctive[:middle], distinctive[middle:]


def slashed(key: str) -> str:
    """The planted value with a `/` in its middle, as a pasted password may have one."""
    first, second = halves(key)
    return f"PLANTED-{first}/{second}"


@contextlib.asynccontextmanager
async def not_redis() -> AsyncIterator[int]:
    """A TCP server that answers whatever it is sent with an HTTP line holding a banner."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.read(1024)
            writer.write(f"HTTP/1.1 400 {PLANTED['banner']}\r\n\r\n".encode())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_planted_secrets_never_reach_status_events_or_logs(
    cluster: Cluster,
    operator_factory: OperatorFactory,
    http_mock: HttpMock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    dead = free_port()
    data = {
        "argocd-server": f"http://a:{PLANTED['secret_pass']}@127.0.0.1:{dead}",
        "argocd-token": f"{PLANTED['secret_token']}\u2019",  # a pasted quote
        "base-url": f"http://u:{PLANTED['secret_pass']}@127.0.0.1:{dead}",
        "slashed-url": f"http://u:{slashed('secret_pass')}@127.0.0.1",
    }
    cluster.seed({"apiVersion": "v1", "kind": "Secret",
                  "metadata": {"name": "tokens", "namespace": "mcp"},
                  "data": {key: b64(value) for key, value in data.items()}})  # fmt: skip
    cluster.grant("mcp", "mcp-remediator-runner",
                  [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}])  # fmt: skip

    def ref(key: str) -> dict[str, str]:
        return {"name": "tokens", "key": key}

    each = {"continueOnFailure": True, "retries": 0}
    steps = [
        {"name": "query", "action": "prometheusQuery", "params": {"query": "up"}},
        {"name": "sync", "action": "argocdSync", "params": {"application": "a"}},
        {"name": "sync-own", "action": "argocdSync", "params": {
            "application": "a",
            "argocd": {"urlSecretRef": ref("argocd-server"),
                       "tokenSecretRef": ref("argocd-token")}}},
        {"name": "ping", "action": "redisPing", "params": {}},
        {"name": "tell", "action": "notify", "params": {"message": "hi"}},
        # Answered (404): httpx logs the request line, which must not show the user info.
        {"name": "health", "action": "httpHealthCheck", "params": {"module": "finbot"}},
        {"name": "health-own", "action": "httpHealthCheck",
         "params": {"module": "mubot", "baseUrlSecretRef": ref("base-url")}},
        # Last: a refusal (the host cannot be read) ends the run.
        {"name": "health-slash", "action": "httpHealthCheck",
         "params": {"module": "finbot", "baseUrlSecretRef": ref("slashed-url")}},
    ]  # fmt: skip
    async with not_redis() as redis_port:
        await operator_factory(
            receiver=True,
            receiver_port=free_port(),
            receiver_host="127.0.0.1",
            receiver_token=PLANTED["receiver"],
            http_allowed_hosts=HOSTS,
            module_base_urls={"finbot": f"http://u:{PLANTED['http_pass']}@{http_mock.host}"},
            prometheus_url=f"http://admin:{PLANTED['prom_pass']}@127.0.0.1:{dead}",
            prometheus_token=PLANTED["prom_token"],
            argocd_mode="api",
            argocd_server=f"http://admin:{slashed('argo_pass')}@127.0.0.1:{dead}",
            argocd_token=PLANTED["argo_token"],
            redis_url=f"redis://:{PLANTED['redis_pass']}@127.0.0.1:{redis_port}/0",
            notify_webhook_url=f"http://hook:{PLANTED['hook']}@127.0.0.1:{dead}/{PLANTED['hook']}",
        )
        cluster.seed(remediation("leaky", [{**step, **each} for step in steps]))
        done = await cluster.wait_phase("mcp", "leaky", {"Succeeded", "Failed", "Refused"}, 60)
        await cluster.wait_for(
            lambda: [e for e in events(cluster, "mcp", "leaky") if e["reason"] == "Refused"],
            what="the final Event",
        )

    assert done["status"]["phase"] == "Refused", done["status"]
    by_name = {s["name"]: s for s in done["status"]["steps"]}
    reasons = {name: (step["phase"], step["reason"]) for name, step in by_name.items()}
    assert reasons == {
        "query": ("Failed", "PrometheusUnavailable"),
        "sync": ("Failed", "ArgoCdBadUrl"),
        "sync-own": ("Failed", "ArgoCdBadToken"),
        "ping": ("Failed", "RedisProtocolError"),
        "tell": ("Failed", "NotifyFailed"),
        "health": ("Failed", "HealthCheckFailed"),
        "health-own": ("Failed", "HealthCheckFailed"),
        "health-slash": ("Failed", refusals.HOST_NOT_ALLOWED),
    }, done["status"]
    assert f"Prometheus at 127.0.0.1:{dead}" in by_name["query"]["message"]
    assert "MCP_ARGOCD_SERVER is not a valid" in by_name["sync"]["message"]
    assert "Secret mcp/tokens key 'argocd-token'" in by_name["sync-own"]["message"]
    assert f"Redis at 127.0.0.1:{redis_port}/0" in by_name["ping"]["message"]
    health = by_name["health"]["message"]
    assert f"GET http://{http_mock.host}/mcp/finbot/health answered 404" in health
    assert [r.path for r in http_mock.requests] == ["/mcp/finbot/health"]
    texts = {
        "status": json.dumps(done["status"]),
        "events": json.dumps(events(cluster, "mcp")),
        "logs": caplog.text,
    }
    assert f"HTTP Request: GET http://{http_mock.host}/mcp/finbot/health" in caplog.text
    for where, text in texts.items():
        for key, planted in PLANTED.items():
            for part in (planted, *halves(key)):
                assert part not in text, f"{key} ({part}) leaked into {where}"
