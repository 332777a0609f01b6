"""``patchResource`` against the emulated API: allowed kinds, GitOps-managed objects, the
refusal layer and dry-run."""

from __future__ import annotations

from typing import Any

import pytest

from fixtures.actions import ActionsEnvFactory
from fixtures.cluster import Cluster, deployment
from mcp_remediator.actions.resources import merged
from mcp_remediator.errors import Refused, StepFailed
from mcp_remediator.kube.client import ApiError, KubeApi
from mcp_remediator.kube.refusals import (
    GITOPS_MANAGED,
    KIND_NOT_ALLOWED,
    KYVERNO,
    PROTECTED_NAMESPACE,
)

RAISE_TIMEOUT = {"data": {"MCP_PROMETHEUS_TIMEOUT_MS": "8000"}}


def config_map(
    name: str = "dese-api-config",
    namespace: str = "mcp",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "data": {"MCP_PROMETHEUS_TIMEOUT_MS": "3000", "MCP_CACHE_TTL_SECONDS": "60"},
    }


def data(cluster: Cluster, name: str = "dese-api-config") -> dict[str, str]:
    obj = cluster.get("v1", "configmaps", "mcp", name)
    assert obj is not None
    result: dict[str, str] = obj["data"]
    return result


async def test_merge_patches_a_config_map(cluster: Cluster, actions_env: ActionsEnvFactory) -> None:
    cluster.seed(config_map())
    env = await actions_env(cluster.connection)

    result = await env.run(
        "patchResource", {"name": "dese-api-config", "mergePatch": RAISE_TIMEOUT}
    )

    assert data(cluster) == {"MCP_PROMETHEUS_TIMEOUT_MS": "8000", "MCP_CACHE_TTL_SECONDS": "60"}
    assert (
        result.message == "patched data.MCP_PROMETHEUS_TIMEOUT_MS of ConfigMap mcp/dese-api-config"
    )
    assert result.outputs["changed"] == "true"
    [write] = cluster.writes("configmaps")
    assert write.headers["Content-Type"] == "application/merge-patch+json"

    # Another step (the same one again would be a retry: see the tests of retries below).
    again = await env.run(
        "patchResource", {"name": "dese-api-config", "mergePatch": RAISE_TIMEOUT}, step="again"
    )
    assert again.outputs["changed"] == "false"


@pytest.mark.parametrize(
    ("labels", "annotations"),
    [
        ({"app.kubernetes.io/instance": "dese-api"}, {}),
        ({}, {"argocd.argoproj.io/tracking-id": "dese-api:/ConfigMap:mcp/dese-api-config"}),
    ],
    ids=["tracking-label", "tracking-annotation"],
)
async def test_argo_cd_managed_objects_are_refused_unless_drift_is_allowed(
    cluster: Cluster,
    actions_env: ActionsEnvFactory,
    labels: dict[str, str],
    annotations: dict[str, str],
) -> None:
    cluster.seed(config_map(labels=labels, annotations=annotations))
    env = await actions_env(cluster.connection)
    params: dict[str, Any] = {"name": "dese-api-config", "mergePatch": RAISE_TIMEOUT}

    with pytest.raises(Refused) as caught:
        await env.run("patchResource", params)
    assert caught.value.reason == GITOPS_MANAGED
    assert "managed by Argo CD application dese-api" in caught.value.message
    assert cluster.writes() == []

    result = await env.run("patchResource", {**params, "allowGitOpsDrift": True})
    assert data(cluster)["MCP_PROMETHEUS_TIMEOUT_MS"] == "8000"
    assert result.outputs["gitOpsDrift"] == "dese-api"
    assert "drifts from Git" in result.message


async def test_kinds_outside_the_allow_list_are_refused(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.seed(deployment("dese-api"))
    env = await actions_env(cluster.connection)
    params = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dese-api",
              "mergePatch": {"spec": {"replicas": 5}}}  # fmt: skip

    with pytest.raises(Refused) as caught:
        await env.run("patchResource", params)
    assert caught.value.reason == KIND_NOT_ALLOWED

    allowing = await actions_env(
        cluster.connection, patch_allowed_kinds=["ConfigMap", "Deployment"]
    )
    await allowing.run("patchResource", params)
    patched = cluster.get("apps/v1", "deployments", "mcp", "dese-api")
    assert patched is not None and patched["spec"]["replicas"] == 5


@pytest.mark.parametrize(
    ("namespace", "reason"), [("kyverno", KYVERNO), ("kube-system", PROTECTED_NAMESPACE)]
)
async def test_the_refusal_layer_applies(
    cluster: Cluster, actions_env: ActionsEnvFactory, namespace: str, reason: str
) -> None:
    cluster.seed(config_map(namespace=namespace))
    env = await actions_env(cluster.connection)
    with pytest.raises(Refused) as caught:
        await env.run(
            "patchResource",
            {"name": "dese-api-config", "namespace": namespace, "mergePatch": RAISE_TIMEOUT},
        )
    assert caught.value.reason == reason
    assert cluster.writes() == []


async def test_missing_object_and_dry_run(cluster: Cluster, actions_env: ActionsEnvFactory) -> None:
    # The catalogue's runner may read dese-api-config only: a team's runner, any ConfigMap.
    cluster.tenant("mcp", "team-runner")
    env = await actions_env(cluster.connection)
    with pytest.raises(StepFailed, match="ConfigMap mcp/nope not found"):
        await env.run(
            "patchResource", {"name": "nope", "mergePatch": RAISE_TIMEOUT}, account="team-runner"
        )

    cluster.seed(config_map())
    result = await env.run(
        "patchResource", {"name": "dese-api-config", "mergePatch": RAISE_TIMEOUT}, dry_run=True
    )
    assert result.message.startswith("would patch data.MCP_PROMETHEUS_TIMEOUT_MS")
    assert data(cluster)["MCP_PROMETHEUS_TIMEOUT_MS"] == "3000"
    assert cluster.writes() == []


async def test_messages_name_keys_never_values(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.seed(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "jwt", "namespace": "mcp"},
         "data": {"JWT_SECRET": "b2xk"}}
    )  # fmt: skip
    # Allowing a kind in MCP_PATCH_ALLOWED_KINDS needs the rights on it for the runner too.
    secrets = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "patch"]}
    cluster.grant("mcp", "secret-rotator", [secrets])
    env = await actions_env(cluster.connection, patch_allowed_kinds=["Secret"])
    result = await env.run(
        "patchResource",
        {"kind": "Secret", "name": "jwt", "mergePatch": {"stringData": {"JWT_SECRET": "s3cr3t"}}},
        account="secret-rotator",
    )
    assert "s3cr3t" not in result.message
    assert "s3cr3t" not in str(result.outputs)
    assert result.outputs["keys"] == "stringData.JWT_SECRET"


def lose_the_first_answer(monkeypatch: pytest.MonkeyPatch, *, applied: bool) -> None:
    """The first PATCH fails as a timeout would: after the API server applied it, or
    before it reached the server."""
    original = KubeApi.patch
    calls: list[str] = []

    async def patch(self: KubeApi, *args: Any, **kwargs: Any) -> Any:
        calls.append(args[3])
        if len(calls) == 1 and not applied:
            raise ApiError(0, "Unreachable", "PATCH: ConnectTimeout()")
        answer = await original(self, *args, **kwargs)
        if len(calls) == 1:
            raise ApiError(0, "Unreachable", "PATCH: ReadTimeout()")
        return answer

    monkeypatch.setattr(KubeApi, "patch", patch)


@pytest.mark.parametrize("applied", [True, False], ids=["answer-lost", "never-arrived"])
async def test_a_retried_patch_reports_the_change_its_first_attempt_made(
    cluster: Cluster,
    actions_env: ActionsEnvFactory,
    monkeypatch: pytest.MonkeyPatch,
    applied: bool,
) -> None:
    # Issue 12, for patchResource: the retry's PATCH changes nothing when the first one
    # landed; the step still changed the object, and says so.
    cluster.seed(config_map())
    env = await actions_env(cluster.connection)
    lose_the_first_answer(monkeypatch, applied=applied)
    params = {"name": "dese-api-config", "mergePatch": RAISE_TIMEOUT}

    with pytest.raises(StepFailed) as first:
        await env.run("patchResource", params)
    assert first.value.transient
    assert data(cluster)["MCP_PROMETHEUS_TIMEOUT_MS"] == ("8000" if applied else "3000")

    retry = await env.run("patchResource", params)

    assert data(cluster)["MCP_PROMETHEUS_TIMEOUT_MS"] == "8000"
    assert retry.outputs["changed"] == "true"
    assert not {"readVersion", "wouldChange", "changedEarlier"} & set(retry.outputs)
    if applied:
        assert retry.message == (
            "patched data.MCP_PROMETHEUS_TIMEOUT_MS of ConfigMap mcp/dese-api-config "
            "(by an earlier attempt, whose answer was lost)"
        )
    else:
        assert retry.message.startswith("patched data.MCP_PROMETHEUS_TIMEOUT_MS of")
        assert "earlier attempt" not in retry.message


async def test_a_retried_patch_that_changed_nothing_still_says_so(
    cluster: Cluster, actions_env: ActionsEnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.seed({**config_map(), "data": {"MCP_PROMETHEUS_TIMEOUT_MS": "8000"}})
    env = await actions_env(cluster.connection)
    lose_the_first_answer(monkeypatch, applied=True)
    params = {"name": "dese-api-config", "mergePatch": RAISE_TIMEOUT}
    with pytest.raises(StepFailed):
        await env.run("patchResource", params)
    # Someone else writes the object meanwhile: its version moves, not because of us.
    await cluster.api.patch_object(
        "v1", "configmaps", "mcp", "dese-api-config", {"metadata": {"labels": {"team": "a"}}}
    )

    retry = await env.run("patchResource", params)

    assert retry.outputs["changed"] == "false"
    assert retry.message.startswith("patch changed nothing in")


def test_merged_applies_a_json_merge_patch() -> None:
    # RFC 7386's own examples, in part.
    assert merged({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merged({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merged({"a": "b"}, {"a": None}) == {}
    assert merged({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merged({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merged(["a", "b"], {"a": "c"}) == {"a": "c"}
    assert merged({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert merged({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}
