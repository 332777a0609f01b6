"""Reading Kyverno policies and policy reports (pure)."""

from __future__ import annotations

from fixtures.gitops import cluster_policy, policy_report, report_result
from mcp_remediator.actions.kyverno import PolicyInfo, failures, gitops_location, policy_ready
from mcp_remediator.settings import Settings

DEPLOY = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dese-api", "namespace": "mcp"}


def test_readiness_from_conditions_and_from_the_legacy_flag() -> None:
    assert policy_ready(cluster_policy("a"))
    assert not policy_ready(cluster_policy("a", ready=False))
    assert policy_ready(cluster_policy("a", legacy_status=True))
    assert not policy_ready(cluster_policy("a", ready=False, legacy_status=True))
    assert not policy_ready({"metadata": {"name": "no-status"}})


def test_failures_match_the_target_in_results_and_in_report_scopes() -> None:
    other = {**DEPLOY, "name": "finbot"}
    classic = policy_report(
        "polr-mcp",
        "mcp",
        [
            report_result("require-labels", resources=[DEPLOY]),
            report_result("require-labels", resources=[other]),
            report_result("disallow-latest", result="pass", resources=[DEPLOY]),
            report_result("check-image", result="error", resources=[DEPLOY]),
        ],
    )
    scoped = policy_report("uid-1", "mcp", [report_result("require-probes")], scope=DEPLOY)

    found = failures([classic, scoped], "mcp", "Deployment", "dese-api")

    assert [(f.policy, f.result) for f in found] == [
        ("check-image", "error"),
        ("require-labels", "fail"),
        ("require-probes", "fail"),
    ]
    assert found[0].resource == "Deployment/mcp/dese-api"
    assert len(failures([classic, scoped], "mcp", None, None)) == 4
    assert failures([classic], "mcp", "StatefulSet", "dese-api") == []
    assert failures([classic], "other", "Deployment", "dese-api") == []


def test_enforcement_per_policy_and_per_rule() -> None:
    enforce = PolicyInfo("ClusterPolicy", "a", True, cluster_policy("a", action="Enforce"))
    audit = PolicyInfo("ClusterPolicy", "b", True, cluster_policy("b", action="Audit"))
    assert enforce.enforces("check")
    assert not audit.enforces("check")
    body = cluster_policy("c", action="Audit")
    body["spec"]["rules"][0]["validate"]["failureAction"] = "Enforce"
    assert PolicyInfo("ClusterPolicy", "c", True, body).enforces("check")


def test_gitops_location_prefers_the_annotation_then_argo_cd_then_the_setting() -> None:
    settings = Settings(gitops_policy_path="git@git.example:platform/policies")
    annotated = cluster_policy(
        "a", annotations={"mcp.dese.ai/gitops-path": "policies/kyverno/require-labels.yaml"}
    )
    tracked = cluster_policy(
        "b", annotations={"argocd.argoproj.io/tracking-id": "kyverno-policies:kyverno.io/..."}
    )
    assert (
        gitops_location(PolicyInfo("ClusterPolicy", "a", True, annotated), settings)
        == "policies/kyverno/require-labels.yaml"
    )
    assert "Argo CD application kyverno-policies" in gitops_location(
        PolicyInfo("ClusterPolicy", "b", True, tracked), settings
    )
    assert gitops_location(None, settings) == "git@git.example:platform/policies"
