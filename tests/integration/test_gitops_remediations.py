"""GitOps and observability remediations end to end: the real operator (Kopf + engine)
against the emulated API, with a stand-in Argo CD controller, a real Prometheus and a
local webhook.

The issue's "done when": "sync dese-api, then verify with PromQL" succeeds; the same with
a failing sync ends Failed and escalates once, recorded in both statuses.
"""

from __future__ import annotations

import uuid
from typing import Any

from fixtures.cluster import Cluster, OperatorFactory, deployment
from fixtures.gitops import (
    SHA,
    ArgoCdController,
    application,
    cluster_policy,
    policy_report,
    report_result,
)
from fixtures.http_mock import HttpMock
from fixtures.prometheus import PrometheusFixture
from mcp_remediator.models import API_VERSION, LABEL_ESCALATED_FROM, REMEDIATIONS

FINISHED = {"Succeeded", "Failed", "Refused", "Skipped", "Cancelled"}
WEBHOOK = "/hooks/T0/B0/oncall"


def runbook(name: str, steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "McpRunbook",
        "metadata": {"name": name, "namespace": "mcp"},
        "spec": {"target": {"namespace": "mcp"}, "steps": steps, **spec},
    }


def run(name: str, runbook_name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "McpRemediation",
        "metadata": {"name": name, "namespace": "mcp"},
        "spec": {"runbookRef": {"name": runbook_name}, "labels": labels or {}},
    }


def sync_then_verify(run_label: str) -> list[dict[str, Any]]:
    return [
        {"name": "sync", "action": "argocdSync",
         "params": {"application": "{{ labels.application }}"}, "retries": 0},
        {"name": "verify", "action": "prometheusVerify",
         "params": {"query": f'min(mcp_api_up{{run="{run_label}"}})', "condition": "== 1",
                    "forSeconds": 1, "timeoutSeconds": 30}},
    ]  # fmt: skip


async def test_sync_dese_api_then_verify_with_promql(
    cluster: Cluster,
    operator_factory: OperatorFactory,
    prometheus: PrometheusFixture,
) -> None:
    label = uuid.uuid4().hex[:8]
    prometheus.target.set("mcp_api_up", 1, run=label, pod="dese-api-0")
    prometheus.target.set("mcp_api_up", 1, run=label, pod="dese-api-1")
    await prometheus.wait_until(f'mcp_api_up{{run="{label}"}}', lambda r: len(r) == 2)
    cluster.seed(application("dese-api"))
    argocd = ArgoCdController(cluster.api)
    cluster.seed(runbook("sync-and-verify", sync_then_verify(label)))
    await operator_factory(prometheus_url=prometheus.url)

    cluster.seed(run("drift-1", "sync-and-verify", {"application": "dese-api"}))
    done = await cluster.wait_phase("mcp", "drift-1", FINISHED, timeout=60)

    status = done["status"]
    assert status["phase"] == "Succeeded", status
    sync, verify = status["steps"]
    assert sync["phase"] == verify["phase"] == "Succeeded"
    assert sync["outputs"]["revision"] == SHA
    assert sync["outputs"]["healthStatus"] == "Healthy"
    assert verify["outputs"]["value"] == "1"
    assert "held for 1s" in verify["message"]
    [operation] = argocd.operations
    assert operation["info"] == [
        {"name": "mcp-remediation", "value": "mcp/drift-1"},
        {"name": "mcp-step", "value": "sync"},
    ]
    assert operation["initiatedBy"] == {"username": "mcp-remediator", "automated": False}


async def test_a_failing_sync_ends_failed_and_escalates_once(
    cluster: Cluster,
    operator_factory: OperatorFactory,
    prometheus: PrometheusFixture,
    http_mock: HttpMock,
) -> None:
    http_mock.on("POST", WEBHOOK, (200, "ok"))
    cluster.seed(application("dese-api"))
    argocd = ArgoCdController(
        cluster.api, outcome="Failed", message="one or more synchronization tasks are not valid"
    )
    cluster.seed(
        runbook(
            "sync-and-verify",
            sync_then_verify(uuid.uuid4().hex[:8]),
            onFailure={"escalateTo": "notify-oncall"},
        )
    )
    note = "OBS: sync of {{ labels.application }} failed; on-call please look (#ops-mcp)"
    cluster.seed(runbook("notify-oncall", [
        {"name": "page", "action": "notify", "params": {"message": note}}
    ]))  # fmt: skip
    await operator_factory(
        prometheus_url=prometheus.url, notify_webhook_url=f"{http_mock.url}{WEBHOOK}"
    )

    cluster.seed(run("drift-2", "sync-and-verify", {"application": "dese-api"}))
    failed = await cluster.wait_phase("mcp", "drift-2", FINISHED, timeout=60)

    status = failed["status"]
    assert status["phase"] == "Failed", status
    assert status["reason"] == "SyncFailed"
    assert status["message"] == (
        "step sync: Argo CD sync of Application dese-api ended Failed: "
        "one or more synchronization tasks are not valid"
    )
    assert status["steps"][1]["phase"] == "Skipped"
    escalated_name = await cluster.wait_for(
        lambda: cluster.remediation("mcp", "drift-2")["status"]["escalatedTo"]["name"],
        what="escalatedTo in the failed run's status",
    )
    assert cluster.remediation("mcp", "drift-2")["status"]["escalatedTo"]["runbook"] == (
        "notify-oncall"
    )
    escalated = await cluster.wait_phase("mcp", escalated_name, FINISHED, timeout=30)
    assert escalated["status"]["phase"] == "Succeeded", escalated["status"]
    assert escalated["status"]["escalatedFrom"]["name"] == "drift-2"
    assert escalated["metadata"]["labels"][LABEL_ESCALATED_FROM] == "drift-2"
    [page] = http_mock.seen("POST", WEBHOOK)
    assert page.json() == {"text": "OBS: sync of dese-api failed; on-call please look (#ops-mcp)"}
    escalations = [
        r
        for r in cluster.api.list_objects(API_VERSION, REMEDIATIONS, "mcp")
        if r["metadata"].get("labels", {}).get(LABEL_ESCALATED_FROM) == "drift-2"
    ]
    assert [r["metadata"]["name"] for r in escalations] == [escalated_name]
    # A failed sync is final: no second sync was started by a retry.
    assert len(argocd.operations) == 1


async def test_the_module_prometheus_finds_is_the_one_restarted(
    cluster: Cluster,
    operator_factory: OperatorFactory,
    prometheus: PrometheusFixture,
) -> None:
    label = uuid.uuid4().hex[:8]
    settled = "mcp_dashboard_promises_settled_total"
    for module, rejected in (("finbot", 3), ("mubot", 90), ("aiops", 1)):
        prometheus.target.set(settled, rejected, module=module, status="rejected", run=label)
    query = f'topk(1, sum by (module) ({settled}{{status="rejected", run="{label}"}}))'
    await prometheus.wait_until(query, lambda r: len(r) == 1)
    for module in ("finbot", "mubot", "aiops"):
        cluster.seed(deployment(module))
    cluster.seed(runbook("promise-rejections", [
        {"name": "find", "action": "prometheusQuery", "params": {"query": query}},
        {"name": "restart", "action": "rolloutRestart",
         "params": {"name": "{{ steps.find.outputs.labels.module }}"}},
    ]))  # fmt: skip
    await operator_factory(prometheus_url=prometheus.url)

    cluster.seed(run("rejections-1", "promise-rejections"))
    done = await cluster.wait_phase("mcp", "rejections-1", FINISHED, timeout=60)

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["steps"][0]["outputs"]["labels.module"] == "mubot"
    restarted = [
        name
        for name in ("finbot", "mubot", "aiops")
        if (cluster.get("apps/v1", "deployments", "mcp", name) or {})["spec"]["template"][
            "metadata"
        ].get("annotations")
    ]
    assert restarted == ["mubot"]


async def test_kyverno_evidence_goes_into_the_incident_note_and_nothing_is_written(
    cluster: Cluster, operator_factory: OperatorFactory, http_mock: HttpMock
) -> None:
    http_mock.on("POST", WEBHOOK, (200, "ok"))
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dese-api",
              "namespace": "mcp"}  # fmt: skip
    cluster.seed(
        cluster_policy(
            "require-signed-images",
            annotations={"mcp.dese.ai/gitops-path": "platform/policies/signed-images.yaml"},
        )
    )
    cluster.seed(policy_report("polr", "mcp", [
        report_result("require-signed-images", message="image is not signed", resources=[target])
    ]))  # fmt: skip
    message = (
        "deploy of {{ labels.deployment }} blocked by "
        "{{ steps.evidence.outputs.blockingPolicy }}; fix it in "
        "{{ steps.evidence.outputs.gitopsPath }}"
    )
    cluster.seed(runbook("kyverno-block", [
        {"name": "evidence", "action": "kyvernoPolicyCheck",
         "params": {"resource": "Deployment/{{ labels.deployment }}"}},
        {"name": "note", "action": "notify", "params": {"message": message}},
    ]))  # fmt: skip
    await operator_factory(notify_webhook_url=f"{http_mock.url}{WEBHOOK}")

    cluster.seed(run("blocked-1", "kyverno-block", {"deployment": "dese-api"}))
    done = await cluster.wait_phase("mcp", "blocked-1", FINISHED, timeout=30)

    assert done["status"]["phase"] == "Succeeded", done["status"]
    evidence = done["status"]["steps"][0]["outputs"]
    assert evidence["blockingPolicy"] == "require-signed-images"
    [note] = http_mock.seen("POST", WEBHOOK)
    assert note.json()["text"] == (
        "deploy of dese-api blocked by require-signed-images; fix it in "
        "platform/policies/signed-images.yaml"
    )
    # Only the operator's own records were written: no policy, report or workload.
    written = {(w.resource.group, w.resource.plural) for w in cluster.writes()}
    own = {("mcp.dese.ai", "mcpremediations"), ("mcp.dese.ai", "mcprunbooks"), ("", "events"),
           ("coordination.k8s.io", "leases")}  # fmt: skip
    assert written <= own, written
