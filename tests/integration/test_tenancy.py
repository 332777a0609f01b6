"""Tenancy: every request a step makes acts as the run's ServiceAccount, never as the operator.

The real operator (Kopf + engine) against the emulated API: a step's requests carry
``Impersonate-User`` of the account of the remediation's own namespace (the runbook's
``spec.serviceAccountName``, the inline steps' own, else ``MCP_DEFAULT_SERVICE_ACCOUNT``);
the operator's bookkeeping (status, Events) carries none; a missing account is a clear
step failure.
"""

from __future__ import annotations

from typing import Any

import kmock

from fixtures.cluster import Cluster, OperatorUnderTest, deployment, remediation
from mcp_remediator.models import API_VERSION

IMPERSONATE = "Impersonate-User"
RUNNER = "system:serviceaccount:mcp:mcp-remediator-runner"


def restart_step(name: str, namespace: str = "mcp") -> dict[str, Any]:
    params = {"name": name, "namespace": namespace}
    return {"name": "restart", "action": "rolloutRestart", "params": params}


def service_account(name: str, namespace: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace}
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}


RESTART = {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]}


def requests_to(cluster: Cluster, plural: str) -> list[kmock.Request]:
    return [r for r in list(cluster.api) if r.resource is not None and r.resource.plural == plural]


async def test_step_requests_impersonate_the_runner_and_bookkeeping_does_not(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(deployment("finbot"))
    cluster.seed(remediation("restart-finbot", [restart_step("finbot")]))

    done = await cluster.wait_phase("mcp", "restart-finbot", {"Succeeded", "Failed"})

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["plan"]["serviceAccountName"] == "mcp-remediator-runner"
    steps = requests_to(cluster, "deployments")
    assert steps, "the step made no request"
    assert {r.headers.get(IMPERSONATE) for r in steps} == {RUNNER}
    # The operator's own records keep its identity.
    for plural in ("mcpremediations", "events"):
        own = requests_to(cluster, plural)
        assert own and all(IMPERSONATE not in r.headers for r in own), plural


async def test_a_runbooks_service_account_is_used_for_its_runs(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(service_account("restarter", "mcp"))
    cluster.grant("mcp", "restarter", [RESTART])
    cluster.seed(deployment("mubot"))
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRunbook",
            "metadata": {"name": "restart-mubot", "namespace": "mcp"},
            "spec": {"serviceAccountName": "restarter", "steps": [restart_step("mubot")]},
        }
    )
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRemediation",
            "metadata": {"name": "by-hand", "namespace": "mcp"},
            "spec": {"runbookRef": {"name": "restart-mubot"}},
        }
    )

    done = await cluster.wait_phase("mcp", "by-hand", {"Succeeded", "Failed"})

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["plan"]["serviceAccountName"] == "restarter"
    assert {r.headers.get(IMPERSONATE) for r in requests_to(cluster, "deployments")} == {
        "system:serviceaccount:mcp:restarter"
    }


async def test_a_missing_service_account_fails_the_step_clearly(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(deployment("finbot", namespace="team-a"))
    cluster.seed(remediation("no-account", [restart_step("finbot", "team-a")], "team-a"))

    done = await cluster.wait_phase("team-a", "no-account", {"Succeeded", "Failed"})

    assert done["status"]["phase"] == "Failed"
    assert done["status"]["reason"] == "ServiceAccountNotFound"
    [step] = done["status"]["steps"]
    assert step["phase"] == "Failed" and step["reason"] == "ServiceAccountNotFound"
    assert "team-a/mcp-remediator-runner" in step["message"]
    assert requests_to(cluster, "deployments") == []
    # The operator stays healthy: the next run, in a namespace with its account, works.
    cluster.seed(deployment("mubot"))
    cluster.seed(remediation("after", [restart_step("mubot")]))
    after = await cluster.wait_phase("mcp", "after", {"Succeeded", "Failed"})
    assert after["status"]["phase"] == "Succeeded", after["status"]


async def test_a_run_of_a_runbook_cannot_choose_its_own_account(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRunbook",
            "metadata": {"name": "restart-mubot", "namespace": "mcp"},
            "spec": {"steps": [restart_step("mubot")]},
        }
    )
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRemediation",
            "metadata": {"name": "chooses", "namespace": "mcp"},
            "spec": {"runbookRef": {"name": "restart-mubot"}, "serviceAccountName": "admin"},
        }
    )

    done = await cluster.wait_phase("mcp", "chooses", {"Succeeded", "Failed"})

    assert done["status"]["phase"] == "Failed"
    assert done["status"]["reason"] == "InvalidSpec"
    assert "runbook's spec.serviceAccountName" in done["status"]["message"]
