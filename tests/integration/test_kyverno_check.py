"""``kyvernoPolicyCheck`` against Kyverno policies and policy reports in the emulated API:
the classic kinds, the CEL kinds of Kyverno 1.17+ and openreports.io reports, clusters that
serve only some of them, and the proof that nothing ever writes to Kyverno's API groups."""

from __future__ import annotations

import httpx
import kmock
import pytest

from fixtures.actions import ActionsEnvFactory
from fixtures.cluster import Cluster
from fixtures.gitops import (
    cel_result,
    cluster_policy,
    kyverno_writes,
    open_report,
    policy_report,
    report_result,
    validating_policy,
)
from mcp_remediator.errors import StepFailed
from mcp_remediator.testing.emulator import ApiServerEmulator

DEPLOY = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dese-api", "namespace": "mcp"}
DEPRECATION = (
    "ClusterPolicy is deprecated since Kyverno 1.17, to be removed in 1.20: migrate to "
    "ValidatingPolicy"
)
NEW_GROUPS = ("policies.kyverno.io", "openreports.io")


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
        "notServed": "",
        "deprecation": DEPRECATION,
    }
    assert (
        "blocking: ClusterPolicy require-signed-images (Enforce) rule verify-signature on "
        "Deployment/mcp/dese-api: image registry.local/dese-api:6.8.2 is not signed; change it "
        "in platform/policies/require-signed-images.yaml, never by hand; " + DEPRECATION
    ) in result.message
    assert "2/3 policies ready" in result.message
    assert "not served" not in result.message
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
    groups = ("kyverno.io", "wgpolicyk8s.io", *NEW_GROUPS)
    for resource in [r for r in api.resources if r.group in groups]:
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


def seed_cel_world(cluster: Cluster) -> None:
    """Kyverno 1.17 with --openreportsEnabled, mid-migration: CEL policies beside a
    ClusterPolicy of the same name, results in an openreports.io Report (one per resource,
    as Kyverno 1.10+ writes them, the resource in ``scope``) beside another tool's."""
    cluster.seed(
        validating_policy(
            "require-run-as-non-root",
            actions=["Deny"],
            annotations={"mcp.dese.ai/gitops-path": "platform/policies/run-as-non-root.yaml"},
        )
    )
    # Migrated in Git but still Audit; the ClusterPolicy of the same name enforces.
    cluster.seed(validating_policy("require-signed-images", actions=["Audit", "Warn"]))
    cluster.seed(cluster_policy("require-signed-images", rules=["verify-signature"]))
    cluster.seed(validating_policy("check-image-registry", kind="ImageValidatingPolicy"))
    cluster.seed(
        validating_policy(
            "mcp-team-labels",
            kind="NamespacedValidatingPolicy",
            namespace="mcp",
            actions=["Audit"],
            ready=False,
        )
    )
    cluster.seed(
        open_report(
            "0d1e7c3a-dese-api",
            "mcp",
            [
                cel_result(
                    "require-run-as-non-root",
                    message="pods must set securityContext.runAsNonRoot: true",
                ),
                cel_result("require-signed-images", message="image is not signed (audit)"),
                report_result("require-signed-images", rule="verify-signature",
                              message="image is not signed"),
                cel_result("mcp/mcp-team-labels", message="label team is missing"),
                cel_result("check-image-registry", source="KyvernoImageValidatingPolicy",
                           result="pass"),
                # Another tool's result in the same report is not Kyverno's evidence.
                {"source": "Trivy", "policy": "CVE-2026-0001", "result": "fail",
                 "message": "critical vulnerability"},
            ],
            scope=DEPLOY,
        )
    )  # fmt: skip


async def test_a_blocking_cel_policy_from_an_openreports_report(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    seed_cel_world(cluster)
    env = await actions_env(cluster.connection)

    result = await env.run("kyvernoPolicyCheck", {"policy": "require-run-as-non-root"})

    assert result.outputs == {
        "policies": "1",
        "notReady": "",
        "failing": "1",
        "blockingPolicy": "require-run-as-non-root",
        "blockingKind": "ValidatingPolicy",
        # A ValidatingPolicy's results name no rule: its only validation failed.
        "blockingRule": "validations[0]",
        "blockingMode": "Deny",
        "blockingResource": "Deployment/mcp/dese-api",
        "blockingMessage": "pods must set securityContext.runAsNonRoot: true",
        "blockingExpression": "object.metadata.name != 'forbidden-0'",
        "gitopsPath": "platform/policies/run-as-non-root.yaml",
        "notServed": "",
        "deprecation": "",
    }
    assert (
        "blocking: ValidatingPolicy require-run-as-non-root (Deny) rule validations[0] on "
        "Deployment/mcp/dese-api: pods must set securityContext.runAsNonRoot: true; change it "
        "in platform/policies/run-as-non-root.yaml, never by hand; 1/1 policies ready"
    ) in result.message
    assert "deprecated" not in result.message
    assert cluster.writes() == []


async def test_every_kind_its_readiness_and_which_engine_a_result_is_from(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    seed_cel_world(cluster)
    env = await actions_env(cluster.connection)

    result = await env.run("kyvernoPolicyCheck", {"resource": "Deployment/dese-api"})

    # ClusterPolicy, ValidatingPolicy x2, ImageValidatingPolicy, NamespacedValidatingPolicy.
    assert result.outputs["policies"] == "5"
    assert result.outputs["notReady"] == "NamespacedValidatingPolicy/mcp-team-labels"
    # The Trivy result and the passing one are left out.
    assert result.outputs["failing"] == "4"
    # Sorted by policy name; the enforcing results are the ClusterPolicy's (source kyverno)
    # and require-run-as-non-root's; the ValidatingPolicy of the same name only audits.
    assert result.outputs["blockingPolicy"] == "require-run-as-non-root"
    assert result.outputs["blockingKind"] == "ValidatingPolicy"
    assert "also blocking: ClusterPolicy require-signed-images (Enforce)" in result.message
    assert "ValidatingPolicy require-signed-images (Audit+Warn)" not in result.message
    assert "4/5 policies ready (not ready: NamespacedValidatingPolicy/mcp-team-labels)" in (
        result.message
    )

    named = await env.run("kyvernoPolicyCheck", {"policy": "require-signed-images"})
    assert named.outputs["policies"] == "2"
    assert named.outputs["failing"] == "2"
    assert (named.outputs["blockingKind"], named.outputs["blockingMode"]) == (
        "ClusterPolicy",
        "Enforce",
    )
    assert named.outputs["deprecation"] == DEPRECATION
    assert DEPRECATION in named.message

    team = await env.run("kyvernoPolicyCheck", {"policy": "mcp-team-labels"})
    assert team.outputs["blockingPolicy"] == "mcp/mcp-team-labels"
    assert (team.outputs["blockingKind"], team.outputs["blockingMode"]) == (
        "NamespacedValidatingPolicy",
        "Audit",
    )
    assert team.outputs["gitopsPath"] == "the GitOps repository (policies/kyverno)"


async def test_a_cluster_without_the_cel_kinds_and_openreports_is_read_as_before(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    # Kyverno before 1.17, reporting to wgpolicyk8s.io: neither new group is served.
    for resource in [r for r in cluster.api.resources if r.group in NEW_GROUPS]:
        del cluster.api.resources[resource]
    seed_blocked_deploy(cluster)
    env = await actions_env(cluster.connection)

    result = await env.run("kyvernoPolicyCheck", {"resource": "Deployment/dese-api"})

    assert result.outputs["blockingPolicy"] == "require-signed-images"
    assert result.outputs["policies"] == "3"
    assert result.outputs["notServed"] == (
        "ValidatingPolicy,NamespacedValidatingPolicy,ImageValidatingPolicy,"
        "NamespacedImageValidatingPolicy,Report,ClusterReport"
    )
    assert result.message.endswith(
        "2/3 policies ready (not ready: ClusterPolicy/require-probes); not served by this "
        "cluster, skipped: ValidatingPolicy, NamespacedValidatingPolicy, ImageValidatingPolicy, "
        "NamespacedImageValidatingPolicy (policies.kyverno.io/v1), Report, ClusterReport "
        "(openreports.io/v1alpha1)"
    )


async def test_a_cluster_with_only_cel_policies_and_openreports(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    # As Kyverno 1.20 will be: ClusterPolicy and Policy gone, reports in openreports.io.
    gone = ("kyverno.io", "wgpolicyk8s.io")
    for resource in [r for r in cluster.api.resources if r.group in gone]:
        del cluster.api.resources[resource]
    cluster.seed(validating_policy("require-run-as-non-root", actions=["Warn"]))
    cluster.seed(
        open_report(
            "cluster-wide",
            None,
            [cel_result("require-run-as-non-root", resources=[DEPLOY],
                        properties={"cel.validationIndex": "0"})],
        )
    )  # fmt: skip
    env = await actions_env(cluster.connection)

    result = await env.run("kyvernoPolicyCheck", {"resource": "dese-api"})

    assert result.outputs["blockingKind"] == "ValidatingPolicy"
    # Warn only: not blocking, yet the only failing result, so it is named with its mode.
    assert result.outputs["blockingMode"] == "Warn"
    assert result.outputs["blockingRule"] == "validations[0]"
    assert result.outputs["notServed"] == ("ClusterPolicy,Policy,PolicyReport,ClusterPolicyReport")
    assert "not served by this cluster, skipped: ClusterPolicy, Policy (kyverno.io/v1), " in (
        result.message
    )


async def test_a_kind_the_account_may_not_read_fails_the_step_it_is_not_skipped(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    # Only a 404 means "not served": a 403 is missing RBAC, and evidence read without some
    # kinds would name the wrong blocking policy, or none.
    cluster.grant("mcp", "classic-only", [
        {"apiGroups": ["kyverno.io"], "resources": ["policies"], "verbs": ["list"]},
        {"apiGroups": ["wgpolicyk8s.io"], "resources": ["policyreports"], "verbs": ["list"]},
    ])  # fmt: skip
    seed_blocked_deploy(cluster)
    env = await actions_env(cluster.connection)

    with pytest.raises(StepFailed, match="listing ClusterPolicy") as caught:
        await env.run("kyvernoPolicyCheck", {}, account="classic-only")
    assert caught.value.reason == "Forbidden"
