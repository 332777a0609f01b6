"""``kyvernoPolicyCheck`` against Kyverno policies and policy reports in the emulated API,
and the proof that nothing ever writes to Kyverno's API groups."""

from __future__ import annotations

import httpx
import kmock
import pytest

from fixtures.actions import ActionsEnvFactory
from fixtures.cluster import Cluster
from fixtures.gitops import cluster_policy, kyverno_writes, policy_report, report_result
from mcp_remediator.errors import StepFailed
from mcp_remediator.testing.emulator import ApiServerEmulator

DEPLOY = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dese-api", "namespace": "mcp"}


def seed_blocked_deploy(cluster: Cluster) -> None:
    cluster.seed(
        cluster_policy(
            "require-signed-images",
            annotations={"mcp.dese.ai/gitops-path": "platform/policies/require-signed-images.yaml"},
            rules=["verify-signature"],
        )
    )
    cluster.seed(cluster_policy("disallow-latest-tag", action="Audit"))
    cluster.seed(cluster_policy("require-probes", ready=False))
    cluster.seed(
        policy_report(
            "polr-ns-mcp",
            "mcp",
            [
                report_result("disallow-latest-tag", resources=[DEPLOY], message="uses :latest"),
                report_result(
                    "require-signed-images",
                    rule="verify-signature",
                    message="image registry.local/dese-api:6.8.2 is not signed",
                    resources=[DEPLOY],
                ),
                report_result("require-probes", result="pass", resources=[DEPLOY]),
            ],
        )
    )


async def test_reports_the_enforcing_policy_that_blocks_the_target_and_where_to_fix_it(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    seed_blocked_deploy(cluster)
    env = await actions_env(cluster.connection)

    result = await env.run("kyvernoPolicyCheck", {"resource": "Deployment/dese-api"})

    assert result.outputs == {
        "policies": "3",
        "notReady": "ClusterPolicy/require-probes",
        "failing": "2",
        "blockingPolicy": "require-signed-images",
        "blockingKind": "ClusterPolicy",
        "blockingRule": "verify-signature",
        "blockingMode": "Enforce",
        "blockingResource": "Deployment/mcp/dese-api",
        "blockingMessage": "image registry.local/dese-api:6.8.2 is not signed",
        "gitopsPath": "platform/policies/require-signed-images.yaml",
    }
    assert "never by hand" in result.message
    assert "2/3 policies ready" in result.message
    assert cluster.writes() == []


async def test_a_clean_target_and_a_namespaced_policy(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    seed_blocked_deploy(cluster)
    namespaced = cluster_policy("mcp-labels", action="Enforce")
    namespaced["kind"] = "Policy"
    namespaced["metadata"]["namespace"] = "mcp"
    cluster.seed(namespaced)
    other = {**DEPLOY, "name": "finbot"}
    cluster.seed(
        policy_report("finbot-report", "mcp", [report_result("mcp/mcp-labels")], scope=other)
    )
    env = await actions_env(cluster.connection)

    clean = await env.run("kyvernoPolicyCheck", {"resource": "Deployment/mubot"})
    finbot = await env.run("kyvernoPolicyCheck", {"resource": "finbot"})

    assert clean.outputs["failing"] == "0"
    assert clean.outputs["blockingPolicy"] == ""
    assert clean.message.startswith("no failing Kyverno results for Deployment/mubot in mcp")
    assert finbot.outputs["blockingPolicy"] == "mcp/mcp-labels"
    assert finbot.outputs["blockingKind"] == "Policy"
    assert finbot.outputs["gitopsPath"] == "the GitOps repository (policies/kyverno)"


async def test_one_named_policy_and_an_unknown_one(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    seed_blocked_deploy(cluster)
    env = await actions_env(cluster.connection)

    audit = await env.run("kyvernoPolicyCheck", {"policy": "disallow-latest-tag"})
    assert audit.outputs["failing"] == "1"
    assert audit.outputs["blockingMode"] == "Audit"

    with pytest.raises(StepFailed, match="Kyverno policy nope not found") as caught:
        await env.run("kyvernoPolicyCheck", {"policy": "nope"})
    assert caught.value.reason == "PolicyNotFound"


async def test_a_cluster_without_kyverno_says_so(actions_env: ActionsEnvFactory) -> None:
    api = ApiServerEmulator()
    api.register_builtins()
    # The emulator serves Kyverno's CRDs by default; this cluster has none.
    for resource in [r for r in api.resources if r.group in ("kyverno.io", "wgpolicyk8s.io")]:
        del api.resources[resource]
    async with api, kmock.Server(api) as server:
        env = await actions_env(Cluster(api, str(server.url).rstrip("/")).connection)
        with pytest.raises(StepFailed, match="is Kyverno installed") as caught:
            await env.run("kyvernoPolicyCheck", {})
    assert caught.value.reason == "KyvernoNotInstalled"


async def test_the_kyverno_write_guard_sees_a_write_when_one_happens() -> None:
    # The autouse guard (fixtures.gitops) checks every test that uses the cluster; this
    # proves it can fail: a raw write to a Kyverno group shows up in its list.
    api = ApiServerEmulator()
    api.register_builtins()
    async with api, kmock.Server(api) as server:
        async with httpx.AsyncClient(base_url=str(server.url)) as client:
            await client.post(
                "/apis/kyverno.io/v2/namespaces/mcp/policyexceptions",
                json={"apiVersion": "kyverno.io/v2", "kind": "PolicyException",
                      "metadata": {"name": "let-me-in", "namespace": "mcp"}, "spec": {}},
            )  # fmt: skip
            await client.get("/apis/kyverno.io/v1/clusterpolicies")
    assert kyverno_writes(api) == ["POST /apis/kyverno.io/v2/namespaces/mcp/policyexceptions"]
