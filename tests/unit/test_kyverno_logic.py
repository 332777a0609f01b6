"""Reading Kyverno policies and policy reports (pure): the classic kinds, the CEL kinds of
Kyverno 1.17+ and openreports.io reports."""

from __future__ import annotations

from typing import Any

from fixtures.gitops import (
    cel_result,
    cluster_policy,
    open_report,
    policy_report,
    report_result,
    validating_policy,
)
from mcp_remediator.actions.kyverno import (
    Failure,
    PolicyInfo,
    failures,
    gitops_location,
    not_served_text,
    policy_of,
    policy_ready,
)
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


def cel(body: dict[str, Any]) -> PolicyInfo:
    return PolicyInfo(body["kind"], body["metadata"]["name"], policy_ready(body), body)


def failure(policy: str, source: str = "", rule: str = "", validation: str = "") -> Failure:
    return Failure(policy, rule, "fail", "m", "Deployment/mcp/dese-api", source, validation)


def test_readiness_of_cel_policies_from_their_condition_status() -> None:
    assert policy_ready(validating_policy("a"))
    assert not policy_ready(validating_policy("a", ready=False))
    # Without ``ready`` (a status written before Kyverno set it): every condition true.
    body = validating_policy("a")
    del body["status"]["conditionStatus"]["ready"]
    assert policy_ready(body)
    body["status"]["conditionStatus"]["conditions"][0]["status"] = "False"
    assert not policy_ready(body)
    body["status"]["conditionStatus"]["conditions"] = []
    assert not policy_ready(body)


def test_cel_enforcement_is_deny_at_admission() -> None:
    assert cel(validating_policy("a")).enforces("")  # no validationActions: Kyverno's Deny
    assert cel(validating_policy("a", actions=["Deny", "Audit"])).enforces("")
    assert not cel(validating_policy("a", actions=["Audit", "Warn"])).enforces("")
    assert cel(validating_policy("a", actions=["Audit", "Warn"])).mode("") == "Audit+Warn"
    # Evaluated in background scans only: it reports, it denies nothing.
    background = cel(validating_policy("a", actions=["Deny"], admission=False))
    assert not background.enforces("")
    assert background.mode("") == "Deny, admission disabled"
    image = cel(validating_policy("b", kind="ImageValidatingPolicy", actions=["Deny"]))
    assert image.enforces("b")


def test_the_failing_validation_of_a_cel_policy() -> None:
    one = cel(validating_policy("a"))
    three = cel(validating_policy("b", validations=3))
    assert one.rule_of(failure("a")) == "validations[0]"
    assert one.expression("validations[0]") == "object.metadata.name != 'forbidden-0'"
    # Kyverno 1.19+ names the failing validation's index in the result's properties.
    assert three.rule_of(failure("b", validation="2")) == "validations[2]"
    assert three.expression("validations[2]") == "object.metadata.name != 'forbidden-2'"
    assert three.rule_of(failure("b")) == "validations"
    assert three.expression("validations") == ""
    assert three.expression("validations[7]") == ""
    # An ImageValidatingPolicy's results name a rule (the policy's name): kept as it is.
    image = cel(validating_policy("c", kind="ImageValidatingPolicy"))
    assert image.rule_of(failure("c", rule="c")) == "c"


def test_a_result_belongs_to_the_policy_of_its_engine() -> None:
    classic = PolicyInfo("ClusterPolicy", "p", True, cluster_policy("p"))
    migrated = cel(validating_policy("p"))
    namespaced = cel(validating_policy("q", kind="NamespacedValidatingPolicy", namespace="mcp"))
    legacy = cluster_policy("r")
    legacy["kind"] = "Policy"
    legacy["metadata"]["namespace"] = "mcp"
    policy = PolicyInfo("Policy", "r", True, legacy)
    policies = [classic, migrated, namespaced, policy]

    assert policy_of(failure("p", "kyverno"), policies) is classic
    assert policy_of(failure("p", "KyvernoValidatingPolicy"), policies) is migrated
    assert policy_of(failure("p"), policies) is classic  # old reports give no source
    assert policy_of(failure("mcp/q", "KyvernoValidatingPolicy"), policies) is namespaced
    assert policy_of(failure("q", "KyvernoValidatingPolicy"), policies) is namespaced
    assert policy_of(failure("mcp/r", "kyverno"), policies) is policy
    assert policy_of(failure("p", "KyvernoImageValidatingPolicy"), policies) is None
    assert policy_of(failure("p", "KyvernoMutatingPolicy"), policies) is None


def test_openreports_results_and_the_report_source() -> None:
    report = open_report(
        "uid-1",
        "mcp",
        [
            cel_result("a", properties={"cel.validationIndex": "1"}),
            {"policy": "trivy-check", "result": "fail", "source": "Trivy"},
            # The report's own ``source`` stands for a result that names none.
            {"policy": "b", "rule": "r", "result": "error"},
        ],
        scope=DEPLOY,
    )
    found = failures([report], "mcp", "Deployment", "dese-api")
    assert [(f.policy, f.source, f.validation) for f in found] == [
        ("a", "KyvernoValidatingPolicy", "1"),
        ("b", "kyverno", ""),
    ]
    report["source"] = "Trivy"
    assert [f.policy for f in failures([report], "mcp", None, None)] == ["a"]


def test_kinds_not_served_are_named_by_api_version() -> None:
    assert not_served_text(["Policy", "ValidatingPolicy", "Report"]) == (
        "Policy (kyverno.io/v1), ValidatingPolicy (policies.kyverno.io/v1), "
        "Report (openreports.io/v1alpha1)"
    )
