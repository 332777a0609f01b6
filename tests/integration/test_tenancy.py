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
from fixtures.gitops import app_project
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
    # Only Impersonate-User is sent; the API server gives the account its own groups.
    assert not any("Impersonate-Group" in r.headers for r in steps)
    authorized = [e for e in cluster.api.audit if e.resource == "deployments"]
    assert {(e.user, e.groups) for e in authorized} == {
        (RUNNER, ("system:serviceaccounts", "system:serviceaccounts:mcp", "system:authenticated"))
    }
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


# -- the attack of a namespace editor (issue: tenancy) ------------------------------------

ARGO = "argoproj.io/v1alpha1"
WRITES = {"create", "update", "patch", "delete", "deletecollection"}


def config_map(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def pod(namespace: str, name: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": "registry.local/api:1"}]},
        "status": {"phase": "Running"},
    }


def platform(cluster: Cluster) -> None:
    """What a tenant must never reach: Argo CD's RBAC, a ConfigMap Kyverno policies read,
    another team's Deployment and pods, the Kyverno policies' Application."""
    cluster.seed(config_map("argocd", "argocd-rbac-cm", {"policy.default": "role:readonly"}))
    cluster.seed(config_map("platform", "kyverno-settings", {"registry": "registry.dese.ai"}))
    cluster.seed(deployment("api", "payments"))
    cluster.seed(pod("payments", "api-1", "api"))
    cluster.seed(
        {
            "apiVersion": ARGO,
            "kind": "Application",
            "metadata": {"name": "kyverno-policies", "namespace": "argocd"},
            "spec": {
                "project": "platform",
                "source": {"repoURL": "https://git.dese.ai/platform-gitops", "path": "kyverno"},
                "destination": {"server": "https://kubernetes.default.svc", "namespace": "kyverno"},
            },
            "status": {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}},
        }
    )
    cluster.seed(app_project("platform"))


# Argo CD's own configuration is not among them: the refusal layer refuses it before RBAC
# is asked, whoever the account (see the last test).
ARGOCD_ADMIN = {"name": "argocd-admin", "action": "patchResource",
                "params": {"namespace": "argocd", "name": "argocd-rbac-cm",
                           "mergePatch": {"data": {"policy.default": "role:admin"}}}}  # fmt: skip
ATTACK = [
    {"name": "kyverno-config", "action": "patchResource",
     "params": {"namespace": "platform", "name": "kyverno-settings",
                "mergePatch": {"data": {"registry": "registry.evil.example"}}}},
    {"name": "restart-payments", "action": "rolloutRestart",
     "params": {"namespace": "payments", "name": "api"}},
    {"name": "list-payments-pods", "action": "podStatus",
     "params": {"namespace": "payments", "selector": "app=api"}},
    {"name": "prune-policies", "action": "argocdSync",
     "params": {"application": "kyverno-policies", "prune": True, "wait": False}},
]  # fmt: skip


def versions(cluster: Cluster) -> dict[str, str]:
    objs = {
        "argocd-rbac-cm": cluster.get("v1", "configmaps", "argocd", "argocd-rbac-cm"),
        "kyverno-settings": cluster.get("v1", "configmaps", "platform", "kyverno-settings"),
        "payments/api": cluster.get("apps/v1", "deployments", "payments", "api"),
        "kyverno-policies": cluster.get(ARGO, "applications", "argocd", "kyverno-policies"),
    }
    return {key: obj["metadata"]["resourceVersion"] for key, obj in objs.items()}


async def test_a_namespace_editor_cannot_act_beyond_the_namespace(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    platform(cluster)
    cluster.tenant("team-a")  # team-a's runner: every action's rights, in team-a only
    before = versions(cluster)
    steps = [{**step, "continueOnFailure": True} for step in ATTACK]
    cluster.seed(remediation("take-over", steps, "team-a"))

    done = await cluster.wait_phase("team-a", "take-over", {"Succeeded", "Failed", "Refused"})

    results = {s["name"]: s for s in done["status"]["steps"]}
    assert {name: s["reason"] for name, s in results.items()} == dict.fromkeys(
        results, "Forbidden"
    ), done["status"]
    account = "system:serviceaccount:team-a:mcp-remediator-runner"
    assert (
        f'User "{account}" cannot get resource "configmaps"'
        in (results["kyverno-config"]["message"])
    )
    assert 'in the namespace "platform"' in results["kyverno-config"]["message"]
    assert 'cannot list resource "pods"' in results["list-payments-pods"]["message"]
    assert (
        "acting as ServiceAccount team-a/mcp-remediator-runner"
        in (results["restart-payments"]["message"])
    )
    # Each was refused at its first request: no retry of a 403.
    assert {s["attempts"] for s in results.values()} == {1}
    assert versions(cluster) == before
    # No write of a step reached any namespace; every step request acted as team-a's runner.
    step_requests = [e for e in cluster.api.audit if e.impersonate_user]
    assert {e.impersonate_user for e in step_requests} == {account}
    assert not [e for e in step_requests if e.verb in WRITES and e.allowed]


async def test_the_same_steps_from_a_trusted_runbook_whose_account_is_granted_them_succeed(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    platform(cluster)
    patch = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch"]}
    restart = {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]}
    pods = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
    sync = {"apiGroups": ["argoproj.io"], "resources": ["applications"], "verbs": ["get", "patch"]}
    windows = {"apiGroups": ["argoproj.io"], "resources": ["appprojects"], "verbs": ["get"]}
    # argocd-rbac-cm too (patch): refused all the same, see the last test.
    cluster.grant("mcp", "platform-runner", [patch, sync, windows], at="argocd")
    cluster.grant("mcp", "platform-runner", [patch], at="platform")
    cluster.grant("mcp", "platform-runner", [restart, pods], at="payments")
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRunbook",
            "metadata": {"name": "platform-admin", "namespace": "mcp"},
            "spec": {"serviceAccountName": "platform-runner", "steps": ATTACK},
        }
    )
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRemediation",
            "metadata": {"name": "platform-admin-by-hand", "namespace": "mcp"},
            "spec": {"runbookRef": {"name": "platform-admin"}},
        }
    )

    done = await cluster.wait_phase("mcp", "platform-admin-by-hand", {"Succeeded", "Failed"})

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert [s["phase"] for s in done["status"]["steps"]] == ["Succeeded"] * len(ATTACK)
    settings = cluster.get("v1", "configmaps", "platform", "kyverno-settings")
    assert settings["data"]["registry"] == "registry.evil.example"
    step_requests = [e for e in cluster.api.audit if e.impersonate_user]
    assert {e.impersonate_user for e in step_requests} == {
        "system:serviceaccount:mcp:platform-runner"
    }


async def test_argo_cd_configuration_is_refused_even_to_an_account_granted_it(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    # RBAC would allow it (the account may patch ConfigMaps in argocd); the refusal layer
    # does not: Argo CD's configuration changes through Git, like Kyverno's policies.
    platform(cluster)
    patch = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch"]}
    cluster.grant("mcp", "platform-runner", [patch], at="argocd")
    before = versions(cluster)
    cluster.seed(
        remediation("argocd-admin", [ARGOCD_ADMIN], "mcp", serviceAccountName="platform-runner")
    )

    done = await cluster.wait_phase("mcp", "argocd-admin", {"Succeeded", "Failed", "Refused"})

    assert done["status"]["phase"] == "Refused", done["status"]
    assert done["status"]["reason"] == "ManualKyvernoOverrideRefused"
    assert "Argo CD's own configuration" in done["status"]["message"]
    assert "through Git" in done["status"]["message"]
    assert versions(cluster) == before
    assert cluster.writes("configmaps") == []
