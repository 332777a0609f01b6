"""``kyvernoPolicyCheck``: read-only evidence of what Kyverno blocks, and where to fix it.

The guide's rule for a deploy blocked by Kyverno: look at the policies and their reports,
then change the policy in the GitOps repository, never by hand. This action gathers the
first half for the remediation's status:

* Kyverno policies (``ClusterPolicy``, and ``Policy`` in the namespace) with their
  readiness (``status.conditions[Ready]``, or ``status.ready`` of older Kyverno);
* failing results (``fail``, ``error``) of ``PolicyReport``s in the namespace and of
  ``ClusterPolicyReport``s, for the target resource when one is given (matched on the
  result's ``resources`` or, for Kyverno 1.10+ per-resource reports, the report's
  ``scope``);
* the blocking policy: the first failing one that enforces (``validationFailureAction:
  Enforce``, or the rule's ``failureAction``), else the first failing one; and the GitOps
  location to change it, from the policy's ``mcp.dese.ai/gitops-path`` annotation, else
  the Argo CD application that tracks it, else ``MCP_GITOPS_POLICY_PATH``.

It only ever lists and reads: nothing here calls a write method, and the test suite checks
that no request ever wrote to Kyverno's API groups.
"""

from __future__ import annotations

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
        None, min_length=1, description="Only this policy (ClusterPolicy or Policy name)."
    )


@dataclass(frozen=True)
class Failure:
    """One failing policy-report result for one resource."""

    policy: str
    rule: str
    result: str
    message: str
    resource: str  # Kind/namespace/name


@dataclass(frozen=True)
class PolicyInfo:
    kind: str
    name: str
    ready: bool
    body: dict[str, Any]

    def enforces(self, rule: str) -> bool:
        spec = self.body.get("spec") or {}
        for item in spec.get("rules") or []:
            if item.get("name") == rule:
                action = ((item.get("validate") or {}).get("failureAction") or "").lower()
                if action:
                    return action == ENFORCE
        return str(spec.get("validationFailureAction") or "").lower() == ENFORCE


def policy_ready(policy: dict[str, Any]) -> bool:
    status = policy.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return bool(status.get("ready"))


def _matches(ref: dict[str, Any], kind: str | None, name: str | None, namespace: str) -> bool:
    if name is not None and ref.get("name") != name:
        return False
    if kind is not None and str(ref.get("kind", "")).lower() != kind.lower():
        return False
    return ref.get("namespace") in (None, "", namespace)


def failures(
    reports: list[dict[str, Any]], namespace: str, kind: str | None, name: str | None
) -> list[Failure]:
    """Failing results for the target, from PolicyReports and ClusterPolicyReports."""
    found: list[Failure] = []
    for report in reports:
        scope = report.get("scope") or {}
        for result in report.get("results") or []:
            outcome = str(result.get("result") or "")
            if outcome not in FAILING:
                continue
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
                        )
                    )
    return sorted(set(found), key=lambda f: (f.policy, f.rule, f.resource))


def gitops_location(policy: PolicyInfo | None, settings: Settings) -> str:
    if policy is not None:
        annotations = policy.body.get("metadata", {}).get("annotations") or {}
        if annotations.get(GITOPS_PATH_ANNOTATION):
            return str(annotations[GITOPS_PATH_ANNOTATION])
        if annotations.get(ARGOCD_TRACKING):
            app = str(annotations[ARGOCD_TRACKING]).split(":", 1)[0]
            return f"the Git source of Argo CD application {app}"
    return settings.gitops_policy_path


async def _list(ctx: ActionContext, kind: str, namespace: str | None) -> list[dict[str, Any]]:
    info = KINDS[kind]
    try:
        return await ctx.clients.kube.list(info.api_version, info.plural, namespace)
    except ApiError as exc:
        if exc.status == 404:
            raise StepFailed(
                f"{kind} ({info.api_version}) is not served by the API: is Kyverno installed?",
                reason="KyvernoNotInstalled",
            ) from exc
        raise exc.as_step_failure(f"listing {kind}") from exc


async def _reports(ctx: ActionContext, namespace: str) -> list[dict[str, Any]]:
    """Policy reports; a cluster without the report CRDs simply has none."""
    found: list[dict[str, Any]] = []
    for kind, scope in (("PolicyReport", namespace), ("ClusterPolicyReport", None)):
        try:
            found.extend(await _list(ctx, kind, scope))
        except StepFailed as exc:
            if exc.reason != "KyvernoNotInstalled":
                raise
    return found


@action(
    "kyvernoPolicyCheck",
    KyvernoPolicyCheckParams,
    "Read-only evidence: Kyverno policies (ClusterPolicy, Policy) and their readiness, "
    "failing policy-report results for the target; outputs the blocking policy "
    "(`blockingPolicy`) and where to change it in Git (`gitopsPath`). Never writes.",
    writes=False,
    access=[
        Access.on_kinds(
            ["ClusterPolicy", "Policy"],
            ["list"],
            why="READ-ONLY evidence on Kyverno policies and their readiness (it lists them "
            "once per step; nothing watches them).",
        ),
        Access.on_kinds(
            ["PolicyReport", "ClusterPolicyReport"],
            ["list"],
            why="READ-ONLY failing policy-report results for the target.",
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
    policies = [
        PolicyInfo("ClusterPolicy", p["metadata"]["name"], policy_ready(p), p)
        for p in await _list(ctx, "ClusterPolicy", None)
    ] + [
        PolicyInfo("Policy", p["metadata"]["name"], policy_ready(p), p)
        for p in await _list(ctx, "Policy", namespace)
    ]
    if params.policy is not None:
        policies = [p for p in policies if p.name == params.policy]
        if not policies:
            raise StepFailed(
                f"Kyverno policy {params.policy} not found (neither a ClusterPolicy nor a "
                f"Policy in {namespace})",
                reason="PolicyNotFound",
            )
    # Reports name a namespaced Policy either by name or as namespace/name.
    by_name = {p.name: p for p in policies}
    by_name.update({f"{namespace}/{p.name}": p for p in policies if p.kind == "Policy"})
    failing = [
        f
        for f in failures(await _reports(ctx, namespace), namespace, kind, name)
        if params.policy is None or by_name.get(f.policy) is not None
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
    }
    readiness = f"{len(policies) - len(not_ready)}/{len(policies)} policies ready"
    if not_ready:
        readiness += f" (not ready: {', '.join(not_ready)})"
    if not failing:
        return ActionResult(f"no failing Kyverno results for {target}; {readiness}", outputs)

    def enforcing(failure: Failure) -> bool:
        policy = by_name.get(failure.policy)
        return policy is not None and policy.enforces(failure.rule)

    blocking = next((f for f in failing if enforcing(f)), failing[0])
    policy = by_name.get(blocking.policy)
    location = gitops_location(policy, ctx.settings)
    mode = "Enforce" if enforcing(blocking) else "Audit"
    outputs.update(
        {
            "blockingPolicy": blocking.policy,
            "blockingKind": policy.kind if policy else "",
            "blockingRule": blocking.rule,
            "blockingMode": mode,
            "blockingResource": blocking.resource,
            "blockingMessage": blocking.message,
            "gitopsPath": location,
        }
    )
    return ActionResult(
        f"{len(failing)} failing Kyverno result(s) for {target}; blocking: "
        f"{policy.kind if policy else 'policy'} {blocking.policy} ({mode}) rule "
        f"{blocking.rule} on {blocking.resource}: {blocking.message}; change it in "
        f"{location}, never by hand; {readiness}",
        outputs,
    )
