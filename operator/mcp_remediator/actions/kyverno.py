"""``kyvernoPolicyCheck``: read-only evidence of what Kyverno blocks, and where to fix it.

The guide's rule for a deploy blocked by Kyverno: look at the policies and their reports,
then change the policy in the GitOps repository, never by hand. This action gathers the
first half for the remediation's status:

* Kyverno's policies that can deny a write, with their readiness:
  - the classic kinds ``ClusterPolicy`` and ``Policy`` in the namespace (``kyverno.io/v1``),
    ready by ``status.conditions[Ready]``, or ``status.ready`` of older Kyverno. Kyverno
    1.17 deprecated ClusterPolicy (its removal is announced for 1.20): a blocking one is
    named with the deprecation and the kind to migrate to;
  - the CEL kinds that validate (``policies.kyverno.io/v1``, Kyverno 1.17+):
    ``ValidatingPolicy`` and ``ImageValidatingPolicy``, and their ``Namespaced`` variants
    in the namespace, ready by ``status.conditionStatus.ready`` (Kyverno sets it once
    every condition, such as ``WebhookConfigured`` and ``RBACPermissionsGranted``, is
    true). Mutating, generating and deleting policies deny no write and are not read;
* failing results (``fail``, ``error``) of policy reports, in either group Kyverno writes
  them to: ``PolicyReport``/``ClusterPolicyReport`` (``wgpolicyk8s.io/v1alpha2``) or, when
  Kyverno runs with ``--openreportsEnabled``, ``Report``/``ClusterReport``
  (``openreports.io/v1alpha1``, the same result shape). Only Kyverno's own results count
  (``source`` ``kyverno`` or ``Kyverno…``): other tools write to the same reports. Results
  are for the target resource when one is given (matched on the result's ``resources`` or,
  for Kyverno 1.10+ per-resource reports, the report's ``scope``);
* which policy a result is: Kyverno names it ``name`` (cluster-scoped kinds) or
  ``namespace/name`` (namespaced ones) and gives the engine in ``source`` (``kyverno`` for
  ClusterPolicy/Policy, ``KyvernoValidatingPolicy``, ``KyvernoImageValidatingPolicy``), so
  a ClusterPolicy and the ValidatingPolicy that replaces it may share a name. A
  ValidatingPolicy's results have no rule: the failing validation is named by its index
  (the ``cel.validationIndex`` property of Kyverno 1.19+, or the policy's only validation);
* the blocking policy: the first failing one that enforces (classic:
  ``validationFailureAction: Enforce`` or the rule's ``failureAction``; CEL:
  ``validationActions`` holding ``Deny``, Kyverno's default when empty, with admission
  evaluation enabled), else the first failing one; and the GitOps location to change it,
  from the policy's ``mcp.dese.ai/gitops-path`` annotation, else the Argo CD application
  that tracks it, else ``MCP_GITOPS_POLICY_PATH``.

A kind the cluster does not serve (a 404: Kyverno before 1.17, reports not in openreports,
ClusterPolicy once removed) is skipped and named in the message (``notServed``); only a
cluster that serves none of the policy kinds fails the step (``KyvernoNotInstalled``).

It only ever lists and reads: nothing here calls a write method, and the test suite checks
that no request ever wrote to Kyverno's API groups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from mcp_remediator.actions.common import Namespace
from mcp_remediator.actions.registry import (
    Access,
    ActionContext,
    ActionParams,
    ActionResult,
    action,
)
from mcp_remediator.errors import StepFailed
from mcp_remediator.kube.client import KINDS, ApiError
from mcp_remediator.models import GROUP
from mcp_remediator.settings import Settings

GITOPS_PATH_ANNOTATION = f"{GROUP}/gitops-path"
ARGOCD_TRACKING = "argocd.argoproj.io/tracking-id"
FAILING = frozenset({"fail", "error"})
ENFORCE = "enforce"
DENY = "Deny"

CLASSIC_KINDS = ("ClusterPolicy", "Policy")
VALIDATING_KINDS = ("ValidatingPolicy", "NamespacedValidatingPolicy")
IMAGE_VALIDATING_KINDS = ("ImageValidatingPolicy", "NamespacedImageValidatingPolicy")
CEL_KINDS = VALIDATING_KINDS + IMAGE_VALIDATING_KINDS
POLICY_KINDS = CLASSIC_KINDS + CEL_KINDS
REPORT_KINDS = ("PolicyReport", "ClusterPolicyReport", "Report", "ClusterReport")
# A report result's ``source`` (the Kyverno engine that wrote it) -> the kinds it runs.
SOURCE_KINDS: dict[str, tuple[str, ...]] = {
    "kyverno": CLASSIC_KINDS,
    "KyvernoValidatingPolicy": VALIDATING_KINDS,
    "KyvernoImageValidatingPolicy": IMAGE_VALIDATING_KINDS,
}
VALIDATION_INDEX = "cel.validationIndex"
DEPRECATIONS = {
    "ClusterPolicy": "ClusterPolicy is deprecated since Kyverno 1.17, to be removed in 1.20: "
    "migrate to ValidatingPolicy",
}


class KyvernoPolicyCheckParams(ActionParams):
    namespace: Namespace | None = Field(
        None, description="Namespace of the target; default: the runbook's target."
    )
    resource: str | None = Field(
        None,
        min_length=1,
        pattern=r"^([A-Za-z][A-Za-z0-9]*/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="The target, `Kind/name` or `name` (e.g. `Deployment/dese-api`); "
        "default: every resource in the namespace.",
    )
    policy: str | None = Field(
        None,
        min_length=1,
        description="Only this policy (name of a ClusterPolicy, Policy, ValidatingPolicy, "
        "ImageValidatingPolicy or a Namespaced one of these).",
    )


@dataclass(frozen=True)
class Failure:
    """One failing policy-report result for one resource."""

    policy: str
    rule: str
    result: str
    message: str
    resource: str  # Kind/namespace/name
    source: str = ""  # the Kyverno engine that reported it; "" in old reports
    validation: str = ""  # index of the failing CEL validation, when the report gives it


@dataclass(frozen=True)
class PolicyInfo:
    kind: str
    name: str
    ready: bool
    body: dict[str, Any]

    @property
    def namespace(self) -> str | None:
        found = (self.body.get("metadata") or {}).get("namespace")
        return str(found) if found and KINDS[self.kind].namespaced else None

    @property
    def key(self) -> str:
        """How Kyverno's reports name it: ``namespace/name`` when namespaced."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def spec(self) -> dict[str, Any]:
        return self.body.get("spec") or {}

    def validation_actions(self) -> list[str]:
        return [str(a) for a in self.spec.get("validationActions") or []] or [DENY]

    def admission_enabled(self) -> bool:
        admission = (self.spec.get("evaluation") or {}).get("admission") or {}
        return admission.get("enabled") is not False

    def enforces(self, rule: str) -> bool:
        if self.kind in CEL_KINDS:
            return DENY in self.validation_actions() and self.admission_enabled()
        for item in self.spec.get("rules") or []:
            if item.get("name") == rule:
                action = ((item.get("validate") or {}).get("failureAction") or "").lower()
                if action:
                    return action == ENFORCE
        return str(self.spec.get("validationFailureAction") or "").lower() == ENFORCE

    def mode(self, rule: str) -> str:
        """``Enforce``/``Audit`` for the classic kinds; the CEL kinds' validationActions."""
        if self.kind not in CEL_KINDS:
            return "Enforce" if self.enforces(rule) else "Audit"
        mode = "+".join(self.validation_actions())
        return mode if self.admission_enabled() else f"{mode}, admission disabled"

    def rule_of(self, failure: Failure) -> str:
        """The rule that failed; for a ValidatingPolicy (whose results name no rule) the
        validation, ``validations[i]``, when it is known."""
        if failure.rule or self.kind not in CEL_KINDS:
            return failure.rule
        validations = self.spec.get("validations") or []
        index = failure.validation
        if not index and len(validations) == 1 and failure.result == "fail":
            index = "0"
        return f"validations[{index}]" if index else "validations"

    def expression(self, rule: str) -> str:
        """The CEL expression of ``validations[i]``, or ""."""
        validations = self.spec.get("validations") or []
        if self.kind not in CEL_KINDS or not rule.startswith("validations["):
            return ""
        index = rule.removeprefix("validations[").removesuffix("]")
        if not index.isdigit() or int(index) >= len(validations):
            return ""
        return " ".join(str(validations[int(index)].get("expression") or "").split())


def policy_ready(policy: dict[str, Any]) -> bool:
    status = policy.get("status") or {}
    cel = status.get("conditionStatus")
    if isinstance(cel, dict):
        # policies.kyverno.io kinds: Kyverno sets ``ready`` from its conditions.
        if isinstance(cel.get("ready"), bool):
            return bool(cel["ready"])
        conditions = cel.get("conditions") or []
        return bool(conditions) and all(c.get("status") == "True" for c in conditions)
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return bool(status.get("ready"))


def from_kyverno(source: str) -> bool:
    """Whether a report result is Kyverno's (old reports leave ``source`` out)."""
    return source in ("", "kyverno") or source.startswith("Kyverno")


def _matches(ref: dict[str, Any], kind: str | None, name: str | None, namespace: str) -> bool:
    if name is not None and ref.get("name") != name:
        return False
    if kind is not None and str(ref.get("kind", "")).lower() != kind.lower():
        return False
    return ref.get("namespace") in (None, "", namespace)


def failures(
    reports: list[dict[str, Any]], namespace: str, kind: str | None, name: str | None
) -> list[Failure]:
    """Kyverno's failing results for the target, from reports of either group."""
    found: list[Failure] = []
    for report in reports:
        scope = report.get("scope") or {}
        for result in report.get("results") or []:
            outcome = str(result.get("result") or "")
            source = str(result.get("source") or report.get("source") or "")
            if outcome not in FAILING or not from_kyverno(source):
                continue
            properties = result.get("properties") or {}
            refs = result.get("resources") or ([scope] if scope else [])
            for ref in refs:
                if _matches(ref, kind, name, namespace):
                    where = ref.get("namespace") or namespace
                    found.append(
                        Failure(
                            policy=str(result.get("policy") or ""),
                            rule=str(result.get("rule") or ""),
                            result=outcome,
                            message=" ".join(str(result.get("message") or "").split())[:300],
                            resource=f"{ref.get('kind', '?')}/{where}/{ref.get('name', '?')}",
                            source=source,
                            validation=str(properties.get(VALIDATION_INDEX) or ""),
                        )
                    )
    return sorted(set(found), key=lambda f: (f.policy, f.rule, f.resource, f.source))


def policy_of(failure: Failure, policies: Sequence[PolicyInfo]) -> PolicyInfo | None:
    """The policy a failing result belongs to, among those read.

    By the result's engine (``source``) first, then by name: ``namespace/name`` or, as
    some reports name a namespaced policy, ``name``. A result of another Kyverno engine
    (mutating, generating, …) belongs to no kind read here.
    """
    kinds = SOURCE_KINDS.get(failure.source, () if failure.source else POLICY_KINDS)
    candidates = [p for p in policies if p.kind in kinds]
    return next((p for p in candidates if p.key == failure.policy), None) or next(
        (p for p in candidates if p.namespace and p.name == failure.policy), None
    )


def gitops_location(policy: PolicyInfo | None, settings: Settings) -> str:
    if policy is not None:
        annotations = policy.body.get("metadata", {}).get("annotations") or {}
        if annotations.get(GITOPS_PATH_ANNOTATION):
            return str(annotations[GITOPS_PATH_ANNOTATION])
        if annotations.get(ARGOCD_TRACKING):
            app = str(annotations[ARGOCD_TRACKING]).split(":", 1)[0]
            return f"the Git source of Argo CD application {app}"
    return settings.gitops_policy_path


def not_served_text(kinds: Sequence[str]) -> str:
    """``A, B (group/version), C (group/version)``: the kinds skipped, by API version."""
    by_version: dict[str, list[str]] = {}
    for kind in kinds:
        by_version.setdefault(KINDS[kind].api_version, []).append(kind)
    return ", ".join(f"{', '.join(names)} ({version})" for version, names in by_version.items())


async def _read(
    ctx: ActionContext, kinds: Sequence[str], namespace: str
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Every kind listed at once (cluster-scoped ones cluster-wide, namespaced ones in
    ``namespace``): the objects by kind, and the kinds the API does not serve (404)."""

    async def listing(kind: str) -> list[dict[str, Any]]:
        info = KINDS[kind]
        scope = namespace if info.namespaced else None
        return await ctx.clients.kube.list(info.api_version, info.plural, scope)

    answers = await asyncio.gather(*(listing(kind) for kind in kinds), return_exceptions=True)
    found: dict[str, list[dict[str, Any]]] = {}
    not_served: list[str] = []
    for kind, answer in zip(kinds, answers, strict=True):
        if isinstance(answer, ApiError):
            if answer.status != 404:
                raise answer.as_step_failure(f"listing {kind}") from answer
            not_served.append(kind)
        elif isinstance(answer, BaseException):
            raise answer
        else:
            found[kind] = answer
    return found, not_served


@action(
    "kyvernoPolicyCheck",
    KyvernoPolicyCheckParams,
    "Read-only evidence: Kyverno policies (ClusterPolicy, Policy, and the CEL "
    "ValidatingPolicy, ImageValidatingPolicy and their Namespaced variants) and their "
    "readiness, failing results of policy reports (wgpolicyk8s.io or openreports.io) for the "
    "target; outputs the blocking policy (`blockingPolicy`) and where to change it in Git "
    "(`gitopsPath`); kinds the cluster does not serve are skipped (`notServed`). Never writes.",
    writes=False,
    access=[
        Access.on_kinds(
            CLASSIC_KINDS,
            ["list"],
            why="READ-ONLY evidence on Kyverno policies and their readiness (it lists them "
            "once per step; nothing watches them).",
        ),
        Access.on_kinds(
            CEL_KINDS,
            ["list"],
            why="READ-ONLY evidence on Kyverno's CEL validating policies and their readiness "
            "(Kyverno 1.17+).",
        ),
        Access.on_kinds(
            ["PolicyReport", "ClusterPolicyReport"],
            ["list"],
            why="READ-ONLY failing policy-report results for the target.",
        ),
        Access.on_kinds(
            ["Report", "ClusterReport"],
            ["list"],
            why="READ-ONLY failing results for the target where Kyverno reports to openreports.io.",
        ),
    ],
)
async def kyverno_policy_check(
    params: KyvernoPolicyCheckParams, ctx: ActionContext
) -> ActionResult:
    namespace = params.namespace or ctx.namespace
    kind, name = None, params.resource
    if params.resource and "/" in params.resource:
        kind, name = params.resource.split("/", 1)
    found, not_served = await _read(ctx, POLICY_KINDS + REPORT_KINDS, namespace)
    served_policy_kinds = [k for k in POLICY_KINDS if k not in not_served]
    if not served_policy_kinds:
        raise StepFailed(
            f"none of Kyverno's policy kinds is served by the API ({not_served_text(POLICY_KINDS)})"
            ": is Kyverno installed?",
            reason="KyvernoNotInstalled",
        )
    policies = [
        PolicyInfo(k, p["metadata"]["name"], policy_ready(p), p)
        for k in served_policy_kinds
        for p in found[k]
    ]
    if params.policy is not None:
        policies = [p for p in policies if params.policy in (p.name, p.key)]
        if not policies:
            raise StepFailed(
                f"Kyverno policy {params.policy} not found (no {', '.join(served_policy_kinds)} "
                f"of that name; namespaced kinds in {namespace})",
                reason="PolicyNotFound",
            )
    reports = [report for k in REPORT_KINDS for report in found.get(k, [])]
    failing = [
        f
        for f in failures(reports, namespace, kind, name)
        if params.policy is None or policy_of(f, policies) is not None
    ]
    not_ready = sorted(f"{p.kind}/{p.name}" for p in policies if not p.ready)
    target = f"{params.resource} in {namespace}" if params.resource else f"namespace {namespace}"
    outputs = {
        "policies": str(len(policies)),
        "notReady": ",".join(not_ready),
        "failing": str(len(failing)),
        "blockingPolicy": "",
        "blockingRule": "",
        "gitopsPath": "",
        "notServed": ",".join(not_served),
    }
    # Readiness and skipped kinds close every message.
    summary = f"{len(policies) - len(not_ready)}/{len(policies)} policies ready"
    if not_ready:
        summary += f" (not ready: {', '.join(not_ready)})"
    if not_served:
        summary += f"; not served by this cluster, skipped: {not_served_text(not_served)}"
    if not failing:
        return ActionResult(f"no failing Kyverno results for {target}; {summary}", outputs)

    def enforcing(failure: Failure) -> PolicyInfo | None:
        policy = policy_of(failure, policies)
        return policy if policy is not None and policy.enforces(failure.rule) else None

    blocking = next((f for f in failing if enforcing(f)), failing[0])
    policy = policy_of(blocking, policies)
    location = gitops_location(policy, ctx.settings)
    rule = policy.rule_of(blocking) if policy else blocking.rule
    mode = policy.mode(blocking.rule) if policy else "Audit"
    deprecation = DEPRECATIONS.get(policy.kind, "") if policy else ""
    outputs.update(
        {
            "blockingPolicy": blocking.policy,
            "blockingKind": policy.kind if policy else "",
            "blockingRule": rule,
            "blockingMode": mode,
            "blockingResource": blocking.resource,
            "blockingMessage": blocking.message,
            "gitopsPath": location,
            "deprecation": deprecation,
        }
    )
    expression = policy.expression(rule) if policy else ""
    if expression:
        outputs["blockingExpression"] = expression
    # Other policies that deny the target too: fixing the first alone unblocks nothing.
    others: list[str] = []
    for failure in failing:
        other = enforcing(failure)
        if other is not None and other is not policy:
            text = f"{other.kind} {other.key} ({other.mode(failure.rule)})"
            others += [text] if text not in others else []
    tail = f"; {deprecation}" if deprecation else ""
    tail += f"; also blocking: {', '.join(others)}" if others else ""
    return ActionResult(
        f"{len(failing)} failing Kyverno result(s) for {target}; blocking: "
        f"{policy.kind if policy else 'policy'} {blocking.policy} ({mode}) rule "
        f"{rule} on {blocking.resource}: {blocking.message}; change it in "
        f"{location}, never by hand{tail}; {summary}",
        outputs,
    )
