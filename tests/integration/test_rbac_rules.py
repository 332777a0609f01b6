"""Every rule of the shipped RBAC is needed: removing any one breaks the scenario naming it.

The operator's ClusterRole (manifests/rbac/role.yaml) and the catalogue runner's roles
(manifests/runner) are least privilege only if each rule is used. ``NEEDED_BY`` names, for
every rule, the scenario that needs it; each scenario runs the real operator, as its
ServiceAccount, against the emulated API with the shipped RBAC. With all rules it ends as
it should and the API refuses nothing; with the named rule removed, the API refuses one of
its requests (the scenario fails fast on the first refusal). A rule added without an entry
here fails ``test_every_rule_is_named``.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.cluster import FAST, Cluster, OperatorUnderTest, deployment, remediation
from mcp_remediator.kube import policy_inputs
from mcp_remediator.models import API_VERSION, REMEDIATIONS, RUNBOOKS
from mcp_remediator.settings import Settings

ROOT = Path(__file__).parents[2]
FILES = [
    ROOT / "manifests" / "rbac" / "role.yaml",
    ROOT / "manifests" / "rbac" / "leader_election_role.yaml",
] + sorted(
    p for p in (ROOT / "manifests" / "runner").glob("*.yaml") if p.name != "kustomization.yaml"
)
ROLE_KINDS = ("Role", "ClusterRole")


def rule_id(role: dict[str, Any], rule: dict[str, Any]) -> str:
    """``role@namespace:resources``, and ``#verbs`` where a role has two rules on them."""
    base = f"{role['metadata']['name']}@{role['metadata'].get('namespace', '-')}:" + ",".join(
        rule["resources"]
    )
    twins = [r for r in role["rules"] if r["resources"] == rule["resources"]]
    return base if len(twins) == 1 else f"{base}#{','.join(rule['verbs'])}"


def shipped_roles() -> list[dict[str, Any]]:
    docs = [d for path in FILES for d in yaml.safe_load_all(path.read_text()) if d]
    return [d for d in docs if d["kind"] in ROLE_KINDS]


RULES = {rule_id(role, rule): role for role in shipped_roles() for rule in role["rules"]}

# Which scenario needs each rule (see the scenarios below).
NEEDED_BY = {
    "mcp-remediator@-:mcprunbooks": "operator",
    "mcp-remediator@-:mcprunbooks/status": "operator",
    "mcp-remediator@-:mcpremediations": "operator",
    "mcp-remediator@-:mcpremediations/status": "operator",
    "mcp-remediator@-:events": "operator",
    "mcp-remediator@-:customresourcedefinitions": "operator",
    "mcp-remediator@-:serviceaccounts": "operator",
    # The refusal layer lists the policies before a ConfigMap is written.
    "mcp-remediator@-:clusterpolicies,policies": "patch-config",
    "mcp-remediator@-:" + ",".join(policy_inputs.LISTED[policy_inputs.CEL_GROUP]): "patch-config",
    "mcp-remediator-leader-election@mcp-remediator:leases#create": "operator",
    "mcp-remediator-leader-election@mcp-remediator:leases#get,update": "operator",
    "mcp-remediator-runner@mcp:deployments,statefulsets,daemonsets": "restart",
    "mcp-remediator-runner@mcp:pods": "pods",
    "mcp-remediator-runner@mcp:configmaps": "patch-config",
    "mcp-remediator-runner@mcp:policies": "kyverno",
    "mcp-remediator-runner@mcp:namespacedvalidatingpolicies,namespacedimagevalidatingpolicies": (
        "kyverno"
    ),
    "mcp-remediator-runner@mcp:policyreports": "kyverno",
    "mcp-remediator-runner@mcp:reports": "kyverno",
    "mcp-remediator-runner-kyverno-evidence@-:clusterpolicies": "kyverno",
    "mcp-remediator-runner-kyverno-evidence@-:validatingpolicies,imagevalidatingpolicies": (
        "kyverno"
    ),
    "mcp-remediator-runner-kyverno-evidence@-:clusterpolicyreports": "kyverno",
    "mcp-remediator-runner-kyverno-evidence@-:clusterreports": "kyverno",
    "mcp-remediator-runner@argocd:applications": "argocd-sync",
    "mcp-remediator-runner@argocd:appprojects": "argocd-sync",
}


class Refused(AssertionError):
    """The API refused a request of the scenario."""


async def until(cluster: Cluster, check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    """Poll ``check``; fail at once when the API refuses any request."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        denied = cluster.denied()
        if denied:
            first = denied[0]
            raise Refused(f"{first.code} {first.verb} {first.path} as {first.user}")
        found = check()
        if found:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def start_operator(cluster: Cluster, operator: OperatorUnderTest) -> None:
    operator.start()
    await until(
        cluster,
        lambda: (
            operator.error is None
            and operator.ready.is_set()
            and {RUNBOOKS, REMEDIATIONS} <= cluster.api.watched_plurals()
        ),
        "the operator's watches",
    )


async def run_steps(cluster: Cluster, name: str, steps: list[dict[str, Any]]) -> None:
    """One inline remediation in mcp that must succeed, as the catalogue's runner."""
    cluster.seed(remediation(name, steps))

    def phase() -> str | None:
        obj = cluster.get(API_VERSION, REMEDIATIONS, "mcp", name)
        found: str | None = (obj.get("status") or {}).get("phase") if obj else None
        return found if found not in (None, "Pending", "Running") else None

    assert await until(cluster, phase, f"{name} to finish") == "Succeeded"


# -- scenarios ---------------------------------------------------------------------------


async def operator_scenario(cluster: Cluster) -> None:
    """A runbook validated, run by hand, its Events posted, its record deleted by the TTL."""
    cluster.seed(deployment("finbot"))
    step = {"name": "restart", "action": "rolloutRestart", "params": {"name": "finbot"}}
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRunbook",
            "metadata": {"name": "restart-finbot", "namespace": "mcp"},
            "spec": {"steps": [step]},
        }
    )
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRemediation",
            "metadata": {"name": "by-hand", "namespace": "mcp"},
            "spec": {"runbookRef": {"name": "restart-finbot"}, "ttlSecondsAfterFinished": 0},
        }
    )

    def valid() -> bool:
        runbook = cluster.get(API_VERSION, RUNBOOKS, "mcp", "restart-finbot")
        conditions = (runbook.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Valid" and c["status"] == "True" for c in conditions)

    await until(cluster, valid, "the runbook's Valid condition")
    await until(
        cluster,
        lambda: any(
            e.get("reason") == "Succeeded" for e in cluster.api.list_objects("v1", "events", "mcp")
        ),
        "the run's Succeeded Event",
    )
    await until(
        cluster,
        lambda: cluster.get(API_VERSION, REMEDIATIONS, "mcp", "by-hand") is None,
        "the TTL to delete the record",
    )


async def restart_scenario(cluster: Cluster) -> None:
    cluster.seed(deployment("dese-api", labels={"app.kubernetes.io/instance": "dese-api"}))
    selector = "app.kubernetes.io/instance=dese-api"
    await run_steps(
        cluster,
        "restart",
        [{"name": "restart", "action": "rolloutRestart", "params": {"selector": selector}}],
    )


async def pods_scenario(cluster: Cluster) -> None:
    await run_steps(
        cluster, "pods", [{"name": "pods", "action": "podStatus", "params": {"selector": "app=x"}}]
    )


async def patch_config_scenario(cluster: Cluster) -> None:
    meta = {"name": "dese-api-config", "namespace": "mcp"}
    cluster.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": "1"}})
    params = {"name": "dese-api-config", "mergePatch": {"data": {"a": "2"}}}
    await run_steps(
        cluster, "patch", [{"name": "patch", "action": "patchResource", "params": params}]
    )


async def kyverno_scenario(cluster: Cluster) -> None:
    await run_steps(cluster, "evidence", [{"name": "evidence", "action": "kyvernoPolicyCheck"}])


async def argocd_sync_scenario(cluster: Cluster) -> None:
    cluster.seed(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": "dese-api", "namespace": "argocd"},
            "spec": {"source": {"targetRevision": "main"}},
            "status": {"sync": {"status": "OutOfSync"}, "health": {"status": "Healthy"}},
        }
    )
    params = {"application": "dese-api", "wait": False}
    await run_steps(cluster, "sync", [{"name": "sync", "action": "argocdSync", "params": params}])


SCENARIOS: dict[str, Callable[[Cluster], Awaitable[None]]] = {
    "operator": operator_scenario,
    "restart": restart_scenario,
    "pods": pods_scenario,
    "patch-config": patch_config_scenario,
    "kyverno": kyverno_scenario,
    "argocd-sync": argocd_sync_scenario,
}


async def play(cluster: Cluster, scenario: str) -> None:
    operator = OperatorUnderTest(Settings(**FAST), cluster.connection, receiver=False)
    try:
        await start_operator(cluster, operator)
        await SCENARIOS[scenario](cluster)
    finally:
        operator.stop_flag.set()
        await asyncio.to_thread(operator.thread.join, 30)
        assert not operator.thread.is_alive(), "the operator did not stop"


def test_every_rule_is_named() -> None:
    assert sorted(RULES) == sorted(NEEDED_BY), "name the scenario that needs each rule"
    assert set(NEEDED_BY.values()) <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_each_scenario_passes_with_the_shipped_rbac(cluster: Cluster, scenario: str) -> None:
    await play(cluster, scenario)
    assert cluster.denied() == []


@pytest.mark.parametrize("rule", sorted(NEEDED_BY))
async def test_removing_a_rule_breaks_the_scenario_naming_it(cluster: Cluster, rule: str) -> None:
    role = copy.deepcopy(RULES[rule])
    role["rules"] = [r for r in role["rules"] if rule_id(role, r) != rule]
    cluster.api.apply([role])

    with pytest.raises(Refused):
        await play(cluster, NEEDED_BY[rule])
