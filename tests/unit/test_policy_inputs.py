"""Which ConfigMaps Kyverno policies read (``policy_inputs.inputs_of``), and the cache that
refuses writes to them: read with the operator's identity, at most every TTL, failing
closed."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_remediator.errors import Refused
from mcp_remediator.kube import policy_inputs
from mcp_remediator.kube.policy_inputs import PolicyInputs, inputs_of
from mcp_remediator.kube.refusals import KYVERNO
from mcp_remediator.settings import Settings

SETTINGS = Settings()


def cluster_policy(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": name},
        "spec": {"rules": rules},
    }


def context_rule(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"name": "check", "context": list(entries), "validate": {"message": "x"}}


def reads(kind: str, policy: dict[str, Any], namespace: str, name: str) -> bool:
    return any(item.matches(namespace, name) for item in inputs_of(kind, policy))


def test_a_context_config_map_names_one_config_map() -> None:
    policy = cluster_policy(
        "require-registry",
        [context_rule({"name": "registries",
                       "configMap": {"name": "allowed-registries", "namespace": "platform"}})],
    )  # fmt: skip
    [found] = inputs_of("ClusterPolicy", policy)
    assert (found.policy, found.how) == ("ClusterPolicy require-registry", "context.configMap")
    assert reads("ClusterPolicy", policy, "platform", "allowed-registries")
    assert not reads("ClusterPolicy", policy, "mcp", "allowed-registries")
    assert not reads("ClusterPolicy", policy, "platform", "allowed-registries-2")
    assert not reads("ClusterPolicy", policy, "platform", "dese-api-config")


def test_without_a_namespace_the_policys_own_or_default() -> None:
    entry = {"name": "limits", "configMap": {"name": "limits"}}
    cluster = cluster_policy("limits", [context_rule(entry)])
    assert reads("ClusterPolicy", cluster, "default", "limits")
    assert not reads("ClusterPolicy", cluster, "team-a", "limits")
    namespaced = {
        **cluster,
        "kind": "Policy",
        "metadata": {"name": "limits", "namespace": "team-a"},
    }
    # Kyverno reads the Policy's own namespace (older versions: default): both count.
    assert reads("Policy", namespaced, "team-a", "limits")
    assert reads("Policy", namespaced, "default", "limits")
    assert inputs_of("Policy", namespaced)[0].policy == "Policy team-a/limits"


def test_variables_match_anything_they_could_become() -> None:
    entry = {"name": "per-app",
             "configMap": {"name": "{{ request.object.metadata.labels.app }}-limits",
                           "namespace": "{{request.namespace}}"}}  # fmt: skip
    policy = cluster_policy("per-app-limits", [context_rule(entry)])
    assert reads("ClusterPolicy", policy, "mcp", "dese-api-limits")
    assert reads("ClusterPolicy", policy, "team-a", "x-limits")
    assert not reads("ClusterPolicy", policy, "mcp", "dese-api-config")


def test_contexts_inside_foreach_and_mutate_count_too() -> None:
    rule = {
        "name": "images",
        "mutate": {
            "foreach": [
                {
                    "list": "request.object.spec.containers",
                    "context": [
                        {"name": "m", "configMap": {"name": "mirrors", "namespace": "ops"}}
                    ],
                }
            ]
        },
    }
    assert reads("ClusterPolicy", cluster_policy("mirror", [rule]), "ops", "mirrors")


@pytest.mark.parametrize(
    ("url_path", "namespace", "name", "expected"),
    [
        ("/api/v1/namespaces/platform/configmaps/allowed", "platform", "allowed", True),
        ("/api/v1/namespaces/platform/configmaps/allowed", "platform", "other", False),
        ("/api/v1/namespaces/platform/configmaps", "platform", "anything", True),
        ("/api/v1/namespaces/platform/configmaps?labelSelector=a", "platform", "x", True),
        ("/api/v1/namespaces/platform/configmaps", "mcp", "dese-api-config", False),
        ("/api/v1/namespaces/{{request.namespace}}/configmaps/limits", "mcp", "limits", True),
        ("/api/v1/configmaps", "mcp", "dese-api-config", True),
        ("/api/v1/namespaces/mcp/pods", "mcp", "dese-api-config", False),
        ("/apis/apps/v1/namespaces/mcp/deployments", "mcp", "dese-api-config", False),
    ],
)
def test_api_calls_that_read_config_maps(
    url_path: str, namespace: str, name: str, expected: bool
) -> None:
    entry = {"name": "cms", "apiCall": {"urlPath": url_path, "jmesPath": "items"}}
    assert reads("ClusterPolicy", cluster_policy("p", [context_rule(entry)]), namespace, name) == (
        expected
    )


def cel_policy(kind: str, expression: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "registries"}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "policies.kyverno.io/v1",
        "kind": kind,
        "metadata": meta,
        "spec": {
            "variables": [{"name": "cm", "expression": expression}],
            "validations": [{"expression": "true", "message": "x"}],
        },
    }


@pytest.mark.parametrize(
    ("expression", "namespace", "name", "expected"),
    [
        ('resource.get("v1", "configmaps", "platform", "registries").data', "platform",
         "registries", True),
        ('resource.get("v1", "configmaps", "platform", "registries").data', "platform",
         "other", False),
        ("resource.Get('v1', 'configmaps', 'platform', 'registries')", "platform",
         "registries", True),
        ('resource.get("v1", "configmaps", object.metadata.namespace, "policy-cm")', "mcp",
         "policy-cm", True),
        ('resource.get("v1", "configmaps", object.metadata.namespace, "policy-cm")', "mcp",
         "dese-api-config", False),
        ('resource.get("v1", "configmaps", "platform", variables.name + "-x")', "platform",
         "a-x", True),
        ('resource.List("v1", "configmaps", "platform").items', "platform", "anything", True),
        ('resource.List("v1", "configmaps", "").items', "mcp", "dese-api-config", True),
        ('resource.get("v1", "secrets", "platform", "registries")', "platform", "registries",
         False),
        ('resource.get("apps/v1", "deployments", "platform", "registries")', "platform",
         "registries", False),
        ('resource.get(variables.gv, variables.kind, "platform", "registries")', "platform",
         "registries", True),
        ("object.metadata.name == 'resource.get'", "platform", "registries", False),
    ],
)  # fmt: skip
def test_cel_policies_read_with_the_resource_library(
    expression: str, namespace: str, name: str, expected: bool
) -> None:
    for kind, own in (("ValidatingPolicy", None), ("NamespacedMutatingPolicy", "team-a")):
        policy = cel_policy(kind, expression, own)
        assert reads(kind, policy, namespace, name) == expected, (kind, expression)


def test_a_policy_without_inputs_reads_nothing() -> None:
    policy = cluster_policy(
        "require-signed-images", [{"name": "verify", "verifyImages": [{"imageReferences": ["*"]}]}]
    )
    assert inputs_of("ClusterPolicy", policy) == []


# -- the cache ---------------------------------------------------------------------------


class FakeApi:
    """Answers the cache's lists from a dict; counts them; fails when told to."""

    def __init__(self, policies: dict[str, list[dict[str, Any]]], cel_version: str | None = "v1"):
        self.policies = policies
        self.cel_version = cel_version
        self.lists: list[str] = []
        self.error: Exception | None = None

    async def list(self, api_version: str, plural: str) -> list[dict[str, Any]] | None:
        self.lists.append(f"{api_version}/{plural}")
        if self.error is not None:
            raise self.error
        return self.policies.get(plural)  # None: not served (a 404), so no such policies

    async def preferred_version(self, group: str) -> str | None:
        assert group == policy_inputs.CEL_GROUP
        return self.cel_version


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


REGISTRIES = cluster_policy(
    "require-registry",
    [context_rule({"name": "r", "configMap": {"name": "registries", "namespace": "platform"}})],
)
CEL = cel_policy("ValidatingPolicy", 'resource.get("v1", "configmaps", "ops", "mirrors")')


async def test_the_cache_refuses_inputs_and_reads_again_after_its_ttl() -> None:
    api, clock = FakeApi({"clusterpolicies": [REGISTRIES], "validatingpolicies": [CEL]}), Clock()
    cache = PolicyInputs(api.list, api.preferred_version, clock=clock)

    for namespace, name in (("platform", "registries"), ("ops", "mirrors")):
        with pytest.raises(Refused) as caught:
            await cache.check(SETTINGS, namespace, name)
        assert caught.value.reason == KYVERNO
        assert f"writing ConfigMap {namespace}/{name}, which " in caught.value.message
        assert "would override Kyverno by hand" in caught.value.message
    await cache.check(SETTINGS, "mcp", "dese-api-config")
    # Classic and CEL kinds, each listed once for the three checks.
    assert len(api.lists) == len(policy_inputs.CLASSIC_KINDS) + len(policy_inputs.CEL_KINDS)
    assert "policies.kyverno.io/v1/namespaceddeletingpolicies" in api.lists

    api.policies = {}  # the policies are removed in Git
    clock.now += PolicyInputs.TTL_SECONDS - 1
    with pytest.raises(Refused):
        await cache.check(SETTINGS, "platform", "registries")
    clock.now += 1
    await cache.check(SETTINGS, "platform", "registries")
    assert len(api.lists) == 2 * (len(policy_inputs.CLASSIC_KINDS) + len(policy_inputs.CEL_KINDS))


async def test_without_cel_policies_served_only_the_classic_kinds_are_listed() -> None:
    api = FakeApi({"clusterpolicies": [REGISTRIES]}, cel_version=None)
    cache = PolicyInputs(api.list, api.preferred_version)
    with pytest.raises(Refused):
        await cache.check(SETTINGS, "platform", "registries")
    assert api.lists == ["kyverno.io/v1/clusterpolicies", "kyverno.io/v1/policies"]


async def test_policies_that_cannot_be_read_refuse_every_config_map_write() -> None:
    api, clock = FakeApi({}), Clock()
    cache = PolicyInputs(api.list, api.preferred_version, clock=clock)
    api.error = RuntimeError("403 Forbidden: cannot list clusterpolicies.kyverno.io")

    with pytest.raises(Refused) as caught:
        await cache.check(SETTINGS, "mcp", "dese-api-config")

    assert caught.value.reason == KYVERNO
    message = caught.value.message
    assert message.startswith(
        "refused: cannot tell whether ConfigMap mcp/dese-api-config is an input of a Kyverno policy"
    )
    assert "403 Forbidden: cannot list clusterpolicies.kyverno.io" in message
    assert "the GitOps repository (policies/kyverno)" in message
    # A failure is not cached: once the policies can be read, the write is judged on them.
    api.error = None
    await cache.check(SETTINGS, "mcp", "dese-api-config")


async def test_a_failed_discovery_fails_closed_too() -> None:
    api = FakeApi({})

    async def broken(group: str) -> str | None:
        raise RuntimeError("500 InternalError")

    cache = PolicyInputs(api.list, broken)
    with pytest.raises(Refused, match="discovering policies.kyverno.io: 500 InternalError"):
        await cache.check(SETTINGS, "mcp", "dese-api-config")
