"""``rolloutRestart``: exactly what ``kubectl rollout restart`` does, once, then waits.

kubectl sets the pod-template annotation ``kubectl.kubernetes.io/restartedAt`` to the
current time with a strategic merge patch, and refuses paused Deployments. We do the same,
and persist the timestamp in the step's outputs before patching, so that a retry or an
operator restart finds the annotation already set and never restarts a second time.
The wait follows ``kubectl rollout status``'s rules for each kind. Each workload is judged
by the refusal layer as read (its labels: Kyverno's workloads outside its namespace too)
before anything is restarted.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any, Literal, get_args

from pydantic import Field, model_validator

from mcp_remediator.actions.common import K8sName, Namespace
from mcp_remediator.actions.registry import (
    Access,
    ActionContext,
    ActionParams,
    ActionResult,
    action,
)
from mcp_remediator.errors import Refused, StepFailed
from mcp_remediator.kube import refusals
from mcp_remediator.kube.client import KINDS, ApiError
from mcp_remediator.settings import Settings

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
PAUSED = "DeploymentPaused"
WorkloadKind = Literal["Deployment", "StatefulSet", "DaemonSet"]
WORKLOAD_KINDS: tuple[WorkloadKind, ...] = get_args(WorkloadKind)


class RolloutRestartParams(ActionParams):
    kind: WorkloadKind = Field("Deployment", description="Workload kind.")
    name: K8sName | None = Field(None, description="Workload name (or `selector`).")
    selector: str | None = Field(
        None, min_length=1, description="Label selector choosing the workloads (or `name`)."
    )
    namespace: Namespace | None = Field(
        None, description="Namespace of the workloads; default: the runbook's target."
    )
    waitForRollout: bool = Field(True, description="Wait until the rollout is complete.")
    rolloutTimeoutSeconds: int = Field(600, ge=1, description="How long to wait for it.")

    @model_validator(mode="after")
    def _name_or_selector(self) -> RolloutRestartParams:
        if (self.name is None) == (self.selector is None):
            raise ValueError("give exactly one of name or selector")
        return self


def _validate(params: RolloutRestartParams, settings: Settings, namespace: str | None) -> None:
    target_ns = params.namespace or namespace
    if target_ns:
        kind = KINDS[params.kind]
        refusals.check_write(
            settings,
            api_version=kind.api_version,
            resource=kind.plural,
            namespace=target_ns,
            name=params.name,
        )


def rollout_progress(kind: str, obj: dict[str, Any]) -> tuple[bool, str]:
    """(complete, what is left), by the rules of ``kubectl rollout status``."""
    spec, status = obj.get("spec", {}), obj.get("status", {})
    generation = obj.get("metadata", {}).get("generation", 0)
    if status.get("observedGeneration", 0) < generation:
        return False, "waiting for the controller to observe the new generation"
    if kind == "Deployment":
        for condition in status.get("conditions", []):
            if condition.get("reason") == "ProgressDeadlineExceeded":
                raise StepFailed(
                    f"rollout exceeded its progress deadline: {condition.get('message', '')}",
                    reason="RolloutFailed",
                )
        want = spec.get("replicas", 1)
        updated = status.get("updatedReplicas", 0)
        if updated < want:
            return False, f"{updated} of {want} replicas updated"
        if status.get("replicas", 0) > updated:
            return False, f"{status.get('replicas', 0) - updated} old replicas pending termination"
        if status.get("availableReplicas", 0) < updated:
            return (
                False,
                f"{status.get('availableReplicas', 0)} of {updated} updated replicas available",
            )
        return True, f"{updated} replicas updated and available"
    if kind == "StatefulSet":
        want = spec.get("replicas", 1)
        partition = spec.get("updateStrategy", {}).get("rollingUpdate", {}).get("partition", 0)
        if status.get("readyReplicas", 0) < want:
            return False, f"{status.get('readyReplicas', 0)} of {want} pods ready"
        if partition:
            updated = status.get("updatedReplicas", 0)
            if updated < want - partition:
                return False, f"{updated} of {want - partition} pods updated"
            return True, f"partitioned roll out complete: {updated} pods updated"
        if status.get("updateRevision") != status.get("currentRevision"):
            return False, f"{status.get('updatedReplicas', 0)} of {want} pods at the new revision"
        return True, f"{want} pods at revision {status.get('currentRevision', '?')}"
    desired = status.get("desiredNumberScheduled", 0)
    updated = status.get("updatedNumberScheduled", 0)
    if updated < desired:
        return False, f"{updated} of {desired} pods updated"
    if status.get("numberAvailable", 0) < desired:
        return False, f"{status.get('numberAvailable', 0)} of {desired} updated pods available"
    return True, f"{desired} pods updated and available"


async def _targets(params: RolloutRestartParams, ctx: ActionContext, ns: str) -> list[Any]:
    kind = KINDS[params.kind]
    try:
        if params.name is not None:
            obj = await ctx.clients.kube.get_or_none(kind.api_version, kind.plural, ns, params.name)
            if obj is None:
                raise StepFailed(f"{params.kind} {params.name} not found in namespace {ns}")
            return [obj]
        found = await ctx.clients.kube.list(
            kind.api_version, kind.plural, ns, label_selector=params.selector
        )
    except ApiError as exc:
        raise exc.as_step_failure(f"reading {params.kind} in {ns}") from exc
    if not found:
        raise StepFailed(f"no {params.kind} in namespace {ns} matches selector {params.selector}")
    return sorted(found, key=lambda o: o["metadata"]["name"])


def restart_intent() -> dict[str, str]:
    """The restart's timestamp, chosen before anything is written: the engine records it
    with the attempt's start, so a retry (or the next leader) sets the same value, which the
    workloads that already have it show as done — never a second restart."""
    return {"restartedAt": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


@action(
    "rolloutRestart",
    RolloutRestartParams,
    "Restart a Deployment, StatefulSet or DaemonSet exactly as `kubectl rollout restart` "
    "does; refuses paused Deployments; never restarts twice for one step; waits for the "
    "rollout.",
    writes=True,
    intent=restart_intent,
    prepare=lambda params, ctx: _targets(params, ctx, params.namespace or ctx.namespace),
    access=[
        Access.on_kinds(
            WORKLOAD_KINDS,
            ["get", "list", "patch"],
            why="reads the workloads (by name or selector), sets the restartedAt pod-template "
            "annotation with a strategic merge patch and polls the rollout.",
        )
    ],
    validate=_validate,
)
async def rollout_restart(params: RolloutRestartParams, ctx: ActionContext) -> ActionResult:
    ns = params.namespace or ctx.namespace
    _validate(params, ctx.settings, ns)
    kind = KINDS[params.kind]
    targets = await ctx.prepared(lambda: _targets(params, ctx, ns))
    names = [t["metadata"]["name"] for t in targets]
    for target, name in zip(targets, names, strict=True):
        # Kyverno's own workloads by their labels, wherever installed; in dry-run too.
        await ctx.clients.kube.check_write(kind.api_version, kind.plural, ns, name, obj=target)
    paused = [n for t, n in zip(targets, names, strict=True) if t.get("spec", {}).get("paused")]
    if params.kind == "Deployment" and paused:
        raise Refused(
            PAUSED,
            f"refused: Deployment {', '.join(paused)} in {ns} is paused; resume it first "
            "(kubectl rollout resume), as kubectl itself requires",
        )
    outputs = {"kind": params.kind, "namespace": ns, "names": ",".join(names)}
    if ctx.dry_run:
        return ActionResult(f"would restart {params.kind} {', '.join(names)} in {ns}", outputs)

    restarted_at = ctx.outputs.get("restartedAt")
    if not restarted_at:  # not written with the attempt's start (``restart_intent``): now
        restarted_at = restart_intent()["restartedAt"]
        await ctx.checkpoint({**outputs, "restartedAt": restarted_at})
    patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: restarted_at}}}}}
    already = 0
    # What each workload looked like last: the rollout's first observation, without a read.
    seen: dict[str, dict[str, Any]] = {}
    for target, name in zip(targets, names, strict=True):
        template_meta = target.get("spec", {}).get("template", {}).get("metadata", {})
        if (template_meta.get("annotations") or {}).get(RESTARTED_AT) == restarted_at:
            already += 1
            seen[name] = target
            continue
        try:
            seen[name] = await ctx.clients.kube.patch(
                kind.api_version, kind.plural, ns, name, patch, patch_type="strategic"
            )
        except ApiError as exc:
            raise exc.as_step_failure(f"restarting {params.kind} {name}") from exc
    outputs["restartedAt"] = restarted_at
    done = f"restarted {params.kind} {', '.join(names)} in {ns} at {restarted_at}"
    if already:
        done += f" ({already} already restarted by an earlier attempt)"
    if not params.waitForRollout:
        return ActionResult(done, outputs)
    summary = await _wait_for_rollouts(params, ctx, ns, names, seen)
    return ActionResult(f"{done}; rollout complete: {summary}", outputs)


async def _wait_for_rollouts(
    params: RolloutRestartParams,
    ctx: ActionContext,
    ns: str,
    names: list[str],
    seen: dict[str, dict[str, Any]],
) -> str:
    """Poll until every rollout is complete. ``seen``: each workload as the restart's own
    answer showed it, its first observation (a read right after the write would show the
    same: no controller has acted yet)."""
    kind = KINDS[params.kind]
    deadline = time.monotonic() + min(params.rolloutTimeoutSeconds, ctx.remaining())
    pending = list(names)
    summaries: list[str] = []
    left = ""
    while pending:
        name = pending[0]
        obj: dict[str, Any] | None = seen.pop(name, None)
        if obj is None:
            try:
                obj = await ctx.clients.kube.get(kind.api_version, kind.plural, ns, name)
            except ApiError as exc:
                if not exc.transient:
                    what = f"watching the rollout of {params.kind} {name}"
                    raise exc.as_step_failure(what) from exc
        if obj is not None:
            complete, left = rollout_progress(params.kind, obj)
            if complete:
                summaries.append(f"{name}: {left}")
                pending.pop(0)
                continue
        if time.monotonic() >= deadline:
            raise StepFailed(
                f"rollout of {params.kind} {name} not complete after "
                f"{params.rolloutTimeoutSeconds}s: {left}",
                reason="RolloutTimeout",
            )
        await asyncio.sleep(ctx.settings.poll_interval_seconds)
    return "; ".join(summaries)


class PodStatusParams(ActionParams):
    selector: str = Field(min_length=1, description="Label selector of the pods, e.g. `app=redis`.")
    namespace: Namespace | None = Field(
        None, description="Namespace of the pods; default: the runbook's target."
    )
    minReady: int = Field(
        0, ge=0, description="Fail the step when fewer pods than this are ready (0: never fail)."
    )


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@action(
    "podStatus",
    PodStatusParams,
    'Evidence on pods by label selector (the guide\'s "check the Redis pods"): how many are '
    "ready, which are not, restarts and waiting reasons such as CrashLoopBackOff.",
    writes=False,
    access=[
        Access.on_kinds(["Pod"], ["list"], why="read-only evidence on pods by label selector.")
    ],
)
async def pod_status(params: PodStatusParams, ctx: ActionContext) -> ActionResult:
    ns = params.namespace or ctx.namespace
    try:
        pods = await ctx.clients.kube.list("v1", "pods", ns, label_selector=params.selector)
    except ApiError as exc:
        raise exc.as_step_failure(f"listing pods {params.selector} in {ns}") from exc
    ready = sorted(p["metadata"]["name"] for p in pods if _pod_ready(p))
    not_ready = sorted(p["metadata"]["name"] for p in pods if not _pod_ready(p))
    restarts = 0
    reasons: dict[str, int] = {}
    for pod in pods:
        for container in pod.get("status", {}).get("containerStatuses", []):
            restarts += int(container.get("restartCount", 0))
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason"):
                reasons[waiting["reason"]] = reasons.get(waiting["reason"], 0) + 1
    outputs = {
        "total": str(len(pods)),
        "ready": str(len(ready)),
        "notReady": ",".join(not_ready),
        "restarts": str(restarts),
        "waitingReasons": ",".join(f"{r}:{n}" for r, n in sorted(reasons.items())),
    }
    summary = f"{len(ready)}/{len(pods)} pods ready for {params.selector} in {ns}"
    if not_ready:
        summary += f"; not ready: {', '.join(not_ready)}"
    if reasons:
        summary += f"; waiting: {outputs['waitingReasons']}"
    if len(ready) < params.minReady:
        raise StepFailed(f"{summary} (fewer than {params.minReady})", reason="PodsNotReady")
    return ActionResult(summary, outputs)
