"""The refusal layer against the emulated API, with the shipped RBAC.

A write to any of Kyverno's kinds, in any spelling of its group, never leaves the client;
Kyverno's objects found by their labels (wherever it is installed), the ConfigMaps that
Kyverno policies read (classic ``context.configMap`` and ``apiCall``, CEL
``resource.get``) and Argo CD's own configuration are refused by ``patchResource`` and
``rolloutRestart``, in dry-run too, even to an account whose RBAC allows the write; the
policies are listed with the operator's own identity, and a list that fails refuses the
write. Ordinary writes (the demo's ``mcp/dese-api-config``) still happen.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.actions import ActionsEnvFactory
from fixtures.cluster import Cluster, deployment
from mcp_remediator.errors import Refused
from mcp_remediator.kube.client import KubeApi
from mcp_remediator.kube.refusals import KYVERNO
from mcp_remediator.settings import Settings

ROLE = Path(__file__).parents[2] / "manifests" / "rbac" / "role.yaml"
OPERATOR = "system:serviceaccount:mcp-remediator:mcp-remediator"
RUNNER = "mcp-remediator-runner"
PATCH = {"data": {"registry": "registry.evil.example"}}
CONFIG_MAPS = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch"]}
WORKLOADS = {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "patch"]}


def config_map(namespace: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, "labels": labels or {}}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"registry": "a"}}


# -- the client: nothing is sent --------------------------------------------------------

Write = Callable[[KubeApi], Awaitable[Any]]
BODY = {"metadata": {"name": "x", "namespace": "mcp"}, "spec": {}}
VAP = {"metadata": {"name": "cpol-require-labels",
                    "labels": {"app.kubernetes.io/managed-by": "kyverno"}}, "spec": {}}  # fmt: skip
WRITES: dict[str, Write] = {
    "create-Kyverno.io": lambda k: k.create("Kyverno.io/v1", "policies", "mcp", BODY),
    "patch-kyverno.io.": lambda k: k.patch("kyverno.io./v1", "clusterpolicies", None, "x", {}),
    "replace-kyverno.io/v1/": lambda k: k.replace("kyverno.io/v1/", "policies", "mcp", BODY),
    "delete-KYVERNO.IO": lambda k: k.delete("KYVERNO.IO/V1", "clusterpolicies", None, "x"),
    "create-policyexception": lambda k: k.create("kyverno.io/v2", "policyexceptions", "mcp", BODY),
    "patch-Policies.Kyverno.io": lambda k: k.patch(
        "Policies.Kyverno.io/v1", "validatingpolicies", None, "x", {}
    ),
    "delete-cel-exception": lambda k: k.delete(
        "policies.kyverno.io//v1", "policyexceptions", "mcp", "x"
    ),
    "patch-reports.kyverno.io": lambda k: k.patch(
        "reports.kyverno.io/v1", "ephemeralreports", "mcp", "x", {}
    ),
    "create-openreports.io": lambda k: k.create("openreports.io/v1alpha1", "reports", "mcp", BODY),
    "delete-wgpolicyk8s.io.": lambda k: k.delete(
        "wgpolicyk8s.io./v1alpha2", "policyreports", "mcp", "x"
    ),
    "patch-kyverno-webhook": lambda k: k.patch(
        "admissionregistration.k8s.io/v1",
        "validatingwebhookconfigurations",
        None,
        "kyverno-resource-validating-webhook-cfg",
        {},
    ),
    "create-kyverno-webhook-by-generate-name": lambda k: k.create(
        "admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
        None,
        {"metadata": {"generateName": "kyverno-"}, "webhooks": []},
    ),
    "create-kyverno-managed-vap": lambda k: k.create(
        "admissionregistration.k8s.io/v1", "validatingadmissionpolicies", None, VAP
    ),
    "patch-argocd-cm": lambda k: k.patch("v1", "configmaps", "argocd", "argocd-cm", {}),
    "delete-argocd-secret": lambda k: k.delete("v1", "secrets", "argocd", "argocd-secret"),
}


@pytest.mark.parametrize("write", sorted(WRITES))
async def test_the_client_sends_no_write_to_kyverno_or_argo_cd_config(
    cluster: Cluster, write: str
) -> None:
    kube = KubeApi(cluster.connection, Settings())
    try:
        with pytest.raises(Refused) as caught:
            await WRITES[write](kube.impersonating("mcp", RUNNER))
    finally:
        await kube.aclose()
    assert caught.value.reason == KYVERNO
    assert cluster.writes() == []


# -- ConfigMaps that policies read -------------------------------------------------------


def classic(kind: str, entry: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "require-registry"}
    if namespace:
        meta["namespace"] = namespace
    rule = {"name": "registry", "context": [entry], "validate": {"message": "x"}}
    return {"apiVersion": "kyverno.io/v1", "kind": kind, "metadata": meta,
            "spec": {"rules": [rule]}}  # fmt: skip


def cel(kind: str, expression: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "require-registry"}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "policies.kyverno.io/v1",
        "kind": kind,
        "metadata": meta,
        "spec": {
            "variables": [{"name": "registries", "expression": expression}],
            "validations": [{"expression": "true", "message": "x"}],
        },
    }


READERS: dict[str, tuple[dict[str, Any], str]] = {
    "context.configMap": (
        classic("ClusterPolicy", {"name": "r", "configMap": {"name": "registries",
                                                             "namespace": "platform"}}),
        "ClusterPolicy require-registry reads (context.configMap)",
    ),
    "context.configMap-variable-namespace": (
        classic("Policy", {"name": "r", "configMap": {"name": "registries",
                                                      "namespace": "{{request.namespace}}"}},
                "team-a"),
        "Policy team-a/require-registry reads (context.configMap)",
    ),
    "apiCall": (
        classic("ClusterPolicy", {"name": "r", "apiCall": {
            "urlPath": "/api/v1/namespaces/platform/configmaps/registries", "jmesPath": "data"}}),
        "ClusterPolicy require-registry reads (apiCall)",
    ),
    "ValidatingPolicy": (
        cel("ValidatingPolicy", 'resource.get("v1", "configmaps", "platform", "registries")'),
        "ValidatingPolicy require-registry reads (resource.get)",
    ),
    "NamespacedImageValidatingPolicy": (
        cel("NamespacedImageValidatingPolicy",
            "resource.List('v1', 'configmaps', 'platform').items", "team-a"),
        "NamespacedImageValidatingPolicy team-a/require-registry reads (resource.list)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("reader", sorted(READERS))
async def test_config_maps_that_kyverno_policies_read_are_refused(
    cluster: Cluster, actions_env: ActionsEnvFactory, reader: str
) -> None:
    policy, read = READERS[reader]
    cluster.seed(policy)
    cluster.seed(config_map("platform", "registries"))
    # RBAC would allow it: the account may patch ConfigMaps in platform.
    cluster.grant("mcp", "platform-runner", [CONFIG_MAPS], at="platform")
    env = await actions_env(cluster.connection)
    params = {"namespace": "platform", "name": "registries", "mergePatch": PATCH}

    for dry_run in (True, False):
        with pytest.raises(Refused) as caught:
            await env.run("patchResource", params, account="platform-runner", dry_run=dry_run)
        assert caught.value.reason == KYVERNO
        assert f"writing ConfigMap platform/registries, which {read}" in caught.value.message
        assert "the GitOps repository (policies/kyverno)" in caught.value.message

    assert cluster.writes() == []
    # The policies were read by the operator itself, not by the step's account.
    listed = [
        e for e in cluster.api.audit if e.verb == "list" and e.api_group.endswith("kyverno.io")
    ]
    assert listed and {e.user for e in listed} == {OPERATOR}
    assert not [e for e in listed if e.impersonate_user]


async def test_ordinary_config_maps_are_still_patched(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    for number, (policy, _) in enumerate(READERS.values()):  # each reads another ConfigMap
        cluster.seed({**policy, "metadata": {**policy["metadata"], "name": f"reader-{number}"}})
    cluster.seed(config_map("mcp", "dese-api-config"))
    env = await actions_env(cluster.connection)

    result = await env.run("patchResource", {"name": "dese-api-config", "mergePatch": PATCH})

    assert result.outputs["changed"] == "true"
    patched = cluster.get("v1", "configmaps", "mcp", "dese-api-config")
    assert patched["data"]["registry"] == "registry.evil.example"
    assert cluster.denied() == []


async def test_an_unreadable_policy_list_refuses_every_config_map_write(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    # The operator's ClusterRole without its list of Kyverno's policies.
    role = copy.deepcopy(yaml.safe_load(ROLE.read_text()))
    role["rules"] = [r for r in role["rules"] if not r["apiGroups"][0].endswith("kyverno.io")]
    cluster.api.apply([role])
    cluster.seed(config_map("mcp", "dese-api-config"))
    env = await actions_env(cluster.connection)

    with pytest.raises(Refused) as caught:
        await env.run("patchResource", {"name": "dese-api-config", "mergePatch": PATCH})

    assert caught.value.reason == KYVERNO
    message = caught.value.message
    assert "cannot tell whether ConfigMap mcp/dese-api-config is an input of a Kyverno" in message
    assert "403" in message and "manifests/rbac/role.yaml" in message
    assert cluster.writes() == []
    assert cluster.get("v1", "configmaps", "mcp", "dese-api-config")["data"]["registry"] == "a"


# -- Kyverno's objects by their labels, Argo CD's configuration ----------------------------

KYVERNO_CHART = {"app.kubernetes.io/part-of": "kyverno", "app.kubernetes.io/instance": "kyverno"}


async def test_kyverno_installed_elsewhere_is_found_by_its_labels(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    # Kyverno in namespace "security", not MCP_KYVERNO_NAMESPACE: its chart's labels tell.
    cluster.seed(
        config_map(
            "security", "kyverno", {**KYVERNO_CHART, "app.kubernetes.io/component": "config"}
        )
    )
    controller = deployment("kyverno-admission-controller", "security", labels={
        **KYVERNO_CHART, "app.kubernetes.io/component": "admission-controller"})  # fmt: skip
    cluster.seed(controller)
    cluster.grant("mcp", "platform-runner", [CONFIG_MAPS, WORKLOADS], at="security")
    env = await actions_env(cluster.connection)
    steps: list[tuple[str, dict[str, Any], str]] = [
        ("patchResource", {"namespace": "security", "name": "kyverno", "mergePatch": PATCH},
         "configmaps/kyverno in namespace security, part of Kyverno"),
        ("rolloutRestart", {"namespace": "security", "name": "kyverno-admission-controller"},
         "deployments/kyverno-admission-controller in namespace security, part of Kyverno"),
        ("rolloutRestart", {"namespace": "security",
                            "selector": "app.kubernetes.io/component=admission-controller"},
         "deployments/kyverno-admission-controller in namespace security, part of Kyverno"),
    ]  # fmt: skip

    for action, params, what in steps:
        for dry_run in (True, False):
            with pytest.raises(Refused) as caught:
                await env.run(action, params, account="platform-runner", dry_run=dry_run)
            assert caught.value.reason == KYVERNO
            assert what in caught.value.message
            assert "the GitOps repository (policies/kyverno)" in caught.value.message
    assert cluster.writes() == []


@pytest.mark.parametrize(
    ("kind", "name"), [("ConfigMap", "argocd-cm"), ("ConfigMap", "argocd-rbac-cm"),
                       ("Secret", "argocd-secret")]
)  # fmt: skip
async def test_argo_cd_configuration_is_refused_to_a_granted_account(
    cluster: Cluster, actions_env: ActionsEnvFactory, kind: str, name: str
) -> None:
    plural = f"{kind.lower()}s"
    cluster.seed({"apiVersion": "v1", "kind": kind, "data": {},
                  "metadata": {"name": name, "namespace": "argocd"}})  # fmt: skip
    rights = {"apiGroups": [""], "resources": [plural], "verbs": ["get", "patch"]}
    cluster.grant("mcp", "platform-runner", [rights], at="argocd")
    env = await actions_env(cluster.connection, patch_allowed_kinds=["ConfigMap", "Secret"])

    with pytest.raises(Refused) as caught:
        await env.run(
            "patchResource",
            {"kind": kind, "namespace": "argocd", "name": name,
             "mergePatch": {"data": {"policy.default": "cm9sZTphZG1pbg=="}}},
            account="platform-runner",
        )  # fmt: skip

    assert caught.value.reason == KYVERNO
    assert f"writing {kind}/{name} in namespace argocd" in caught.value.message
    assert "Argo CD's own configuration" in caught.value.message
    assert cluster.writes() == []
