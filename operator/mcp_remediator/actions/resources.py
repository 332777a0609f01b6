"""``patchResource``: a JSON merge patch of an allowed kind, e.g. a ConfigMap setting.

The guide's fix for Prometheus timeouts is raising ``MCP_PROMETHEUS_TIMEOUT_MS`` in a
ConfigMap. Only kinds in ``MCP_PATCH_ALLOWED_KINDS`` (ConfigMap by default) may be patched,
and every write still passes the refusal layer (Kyverno, protected namespaces) in the
Kubernetes client.

Once the target is read, the refusal layer judges it whole (``KubeApi.check_write`` with
the object), also in dry-run: Kyverno's and Argo CD's objects found by their labels
wherever they live, and ConfigMaps that a Kyverno policy reads (``context.configMap``).

Objects that Argo CD manages (its tracking label ``app.kubernetes.io/instance`` or
annotation ``argocd.argoproj.io/tracking-id``) are refused unless the step says
``allowGitOpsDrift: true``: a self-healing Argo CD would revert the patch, and the lasting
fix belongs in Git. Messages name the patched keys, never their values (the kind may be
a Secret).

``changed`` says whether the step changed the object, over all its attempts. A PATCH
whose answer was lost (a timeout, a dropped connection, a 504 from a proxy) may have been
applied, and the retry's identical PATCH then changes nothing: alone, it would report
``changed: false`` for a change the step made. So each attempt first checkpoints the
resourceVersion it read and whether the patch changes the object as read
(``merged``); the next attempt, finding another version and its own patch a no-op, knows
that patch landed (``changed_earlier``). It can say so wrongly only when someone else
wrote the object meanwhile and either wrote the patch's very values, or the patch was a
no-op all along although the object as read did not show its values (a write-only field,
such as a Secret's ``stringData``): nothing the API keeps tells these apart.

Reversible (``onFailure.revert``): the same checkpoint, durable before the PATCH is sent,
holds ``revertSnapshot`` (``snapshot``): per path the patch touches, the value before and
the value the patch leaves, either absent as the object has it. ``revert`` puts the
previous values back with one merge patch, conditional on the object's resourceVersion,
and only when every changed path still holds the step's value; a path someone changed
since is theirs: nothing is written, and the conflict is reported. A retry of the step
keeps the first attempt's snapshot when the object holds its values (that attempt's patch
landed, its answer was lost), so the values before the step are never lost. A Secret gets
no snapshot: its values would be shown in the remediation's status; its revert fails,
saying so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from mcp_remediator.actions.common import K8sName, Namespace
from mcp_remediator.actions.registry import (
    Access,
    ActionContext,
    ActionParams,
    ActionResult,
    Reverted,
    action,
)
from mcp_remediator.errors import Refused, StepFailed
from mcp_remediator.kube import refusals
from mcp_remediator.kube.client import KINDS, ApiError, KubeApi
from mcp_remediator.settings import Settings

TRACKING_LABEL = "app.kubernetes.io/instance"
TRACKING_ANNOTATION = "argocd.argoproj.io/tracking-id"
# The RBAC rule covers the default of MCP_PATCH_ALLOWED_KINDS only: the role cannot follow
# a setting chosen at deploy time, so whoever allows more kinds grants them as well.
DEFAULT_PATCH_KINDS: list[str] = Settings.model_fields["patch_allowed_kinds"].default


class PatchResourceParams(ActionParams):
    apiVersion: str = Field("v1", min_length=1, description="API version of the object.")
    kind: str = Field(
        "ConfigMap", min_length=1, description="Kind; must be in `MCP_PATCH_ALLOWED_KINDS`."
    )
    name: K8sName = Field(description="Name of the object.")
    namespace: Namespace | None = Field(
        None, description="Namespace of the object; default: the runbook's target."
    )
    mergePatch: dict[str, Any] = Field(
        min_length=1,
        description="JSON merge patch (RFC 7386), e.g. "
        '`{data: {MCP_PROMETHEUS_TIMEOUT_MS: "8000"}}`.',
    )
    allowGitOpsDrift: bool = Field(
        False,
        description="Patch objects Argo CD manages anyway (Argo CD may revert the change).",
    )


def plural(api_version: str, kind: str) -> str:
    known = KINDS.get(kind)
    if known is not None and known.api_version == api_version:
        return known.plural
    return f"{kind.lower()}s"


def _validate(params: PatchResourceParams, settings: Settings, namespace: str | None) -> None:
    # The Kyverno refusal comes first: its message points to Git, which is what someone
    # trying to relax a policy by hand needs to read, whatever the allowed kinds are.
    refusals.check_write(
        settings,
        api_version=params.apiVersion,
        resource=params.kind,
        namespace=params.namespace or namespace,
        name=params.name,
    )
    if params.kind not in settings.patch_allowed_kinds:
        allowed = ", ".join(settings.patch_allowed_kinds)
        raise Refused(
            refusals.KIND_NOT_ALLOWED,
            f"refused: patchResource may patch only {allowed} (MCP_PATCH_ALLOWED_KINDS), "
            f"not {params.kind}",
        )


def key_paths(patch: dict[str, Any], prefix: str = "") -> list[str]:
    """The leaf paths a merge patch sets or removes (``data.MCP_PROMETHEUS_TIMEOUT_MS``)."""
    paths: list[str] = []
    for key, value in sorted(patch.items()):
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            paths.extend(key_paths(value, f"{path}."))
        else:
            paths.append(path)
    return paths


def merged(target: Any, patch: Any) -> Any:
    """``target`` with the JSON merge patch ``patch`` applied (RFC 7386)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merged(result.get(key), value)
    return result


SNAPSHOT = "revertSnapshot"  # the output holding the snapshot, JSON
# Kinds whose values must never reach a status (or a log): patched, never snapshotted.
UNSNAPSHOTTED_KINDS = frozenset({"Secret"})
REVERT_CONFLICT_RETRIES = 5


def snapshot_paths(
    target: Any, patch: dict[str, Any], prefix: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """What the merge patch ``patch`` changes in ``target``: one entry per path it touches,
    ``{"path": [...], "before": v, "ours": v}``, where a key left out means absent.

    The paths are the patch's leaves (a null: a delete). A nested object is followed only
    where ``target`` has an object too: where the object had nothing (or a scalar), the
    entry is that path as a whole, so that the revert removes what the patch created
    (``data`` created by the patch goes again, not just its keys)."""
    entries: list[dict[str, Any]] = []
    for key, value in sorted(patch.items()):
        path = (*prefix, key)
        here = target.get(key) if isinstance(target, dict) else None
        present = isinstance(target, dict) and key in target
        if isinstance(value, dict) and value and isinstance(here, dict):
            entries.extend(snapshot_paths(here, value, path))
            continue
        entry: dict[str, Any] = {"path": list(path)}
        if present:
            entry["before"] = here
        if value is not None:
            entry["ours"] = merged(here, value)
        entries.append(entry)
    return entries


def _at(obj: Any, path: list[str]) -> tuple[bool, Any]:
    """(present, value) of ``path`` in ``obj``."""
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return False, None
        obj = obj[key]
    return True, obj


def _holds(obj: Any, entry: dict[str, Any], which: str) -> bool:
    """Whether ``obj`` has at the entry's path its ``which`` value (``before``/``ours``),
    absence included."""
    present, value = _at(obj, entry["path"])
    return present == (which in entry) and (not present or value == entry[which])


def _changed(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e for e in entries if ("before" in e) != ("ours" in e) or e.get("before") != e.get("ours")
    ]


def _show(entry: dict[str, Any]) -> str:
    return ".".join(entry["path"])


def take_snapshot(
    params: PatchResourceParams, namespace: str, obj: dict[str, Any], earlier: str | None
) -> dict[str, Any]:
    """The snapshot of this attempt: the earlier attempt's when the object still holds all
    of that snapshot's values (its patch landed: the values before it are in it alone),
    else one of ``obj`` as read now."""
    if earlier:
        previous: dict[str, Any] = json.loads(earlier)
        changed = _changed(previous["paths"])
        if changed and all(_holds(obj, e, "ours") for e in changed):
            return previous
    return {
        "apiVersion": params.apiVersion,
        "kind": params.kind,
        "namespace": namespace,
        "name": params.name,
        "paths": snapshot_paths(obj, params.mergePatch),
    }


async def revert_patch(outputs: Mapping[str, str], kube: KubeApi) -> Reverted:
    """Undo a ``patchResource`` step from its snapshot (see the module's docstring)."""
    raw = outputs.get(SNAPSHOT)
    if not raw and outputs.get("kind") in UNSNAPSHOTTED_KINDS:
        return Reverted(
            "Failed",
            f"not reverted: a {outputs['kind']}'s previous values are never kept in the status",
        )
    if not raw:
        return Reverted("Unchanged", "nothing to revert: no snapshot (the step wrote nothing)")
    snapshot: dict[str, Any] = json.loads(raw)
    changed = _changed(snapshot["paths"])
    target = f"{snapshot['kind']} {snapshot['namespace']}/{snapshot['name']}"
    if not changed:
        return Reverted("Unchanged", f"nothing to revert: the patch changed nothing in {target}")
    api_version, namespace, name = snapshot["apiVersion"], snapshot["namespace"], snapshot["name"]
    resource = plural(api_version, snapshot["kind"])
    paths = tuple(_show(e) for e in changed)
    for _ in range(REVERT_CONFLICT_RETRIES):
        obj = await kube.get_or_none(api_version, resource, namespace, name)
        if obj is None:
            return Reverted("Conflict", f"{target} is gone: nothing restored")
        if all(_holds(obj, e, "before") for e in changed):
            # Restored already: by an earlier pass whose record was lost (a restart), or
            # by someone else; either way there is nothing left to write.
            return Reverted("Reverted", f"{', '.join(paths)} of {target} already restored", paths)
        theirs = [_show(e) for e in changed if not _holds(obj, e, "ours")]
        if theirs:
            return Reverted(
                "Conflict",
                f"not reverted: {', '.join(theirs)} of {target} changed since the step; "
                "the newer values are kept",
            )
        await kube.check_write(api_version, resource, namespace, name, obj=obj)
        restore: dict[str, Any] = {
            "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}
        }
        for entry in changed:
            node = restore
            for key in entry["path"][:-1]:
                node = node.setdefault(key, {})
            node[entry["path"][-1]] = entry.get("before")
        try:
            await kube.patch(api_version, resource, namespace, name, restore)
        except ApiError as exc:
            if exc.status == 409:
                continue  # written meanwhile: read again, judge again
            raise
        return Reverted("Reverted", f"restored {', '.join(paths)} of {target}", paths)
    return Reverted("Conflict", f"not reverted: {target} kept changing")


def changed_earlier(outputs: dict[str, str], version: str) -> bool:
    """Whether an earlier attempt's patch changed the object, by its checkpoint: one said
    so, or the last read another ``version`` of it, one its patch would change (the caller
    uses this only when its own patch changes nothing: the values are in place)."""
    return outputs.get("changedEarlier") == "true" or (
        outputs.get("readVersion", version) != version and outputs.get("wouldChange") == "true"
    )


def argocd_manager(obj: dict[str, Any]) -> str | None:
    """The Argo CD application that tracks this object, if any."""
    meta = obj.get("metadata") or {}
    tracking = (meta.get("annotations") or {}).get(TRACKING_ANNOTATION)
    if tracking:
        return str(tracking).split(":", 1)[0]
    instance = (meta.get("labels") or {}).get(TRACKING_LABEL)
    return str(instance) if instance else None


@action(
    "patchResource",
    PatchResourceParams,
    "JSON merge patch of an allowed kind (`MCP_PATCH_ALLOWED_KINDS`, ConfigMap by default); "
    "refuses objects Argo CD manages unless `allowGitOpsDrift: true`. Outputs `keys`, "
    "`resourceVersion`, `changed` (whether the step changed the object, counting an earlier "
    "attempt's patch whose answer was lost).",
    writes=True,
    access=[
        Access.on_kinds(
            [kind],
            ["get", "patch"],
            why="JSON merge patch of the allowed kinds (MCP_PATCH_ALLOWED_KINDS, default "
            "ConfigMap); allowing more kinds there also needs get and patch on them for the "
            "runner accounts that patch them.",
        )
        for kind in DEFAULT_PATCH_KINDS
    ],
    validate=_validate,
    revert=revert_patch,
)
async def patch_resource(params: PatchResourceParams, ctx: ActionContext) -> ActionResult:
    namespace = params.namespace or ctx.namespace
    _validate(params, ctx.settings, namespace)
    resource = plural(params.apiVersion, params.kind)
    target = f"{params.kind} {namespace}/{params.name}"
    kube = ctx.clients.kube
    try:
        obj = await kube.get_or_none(params.apiVersion, resource, namespace, params.name)
    except ApiError as exc:
        raise exc.as_step_failure(f"reading {target}") from exc
    if obj is None:
        raise StepFailed(f"{target} not found", reason="NotFound")
    # Before the GitOps check, whose way out (allowGitOpsDrift) must not reach Kyverno.
    await kube.check_write(params.apiVersion, resource, namespace, params.name, obj=obj)
    app = argocd_manager(obj)
    if app is not None and not params.allowGitOpsDrift:
        raise Refused(
            refusals.GITOPS_MANAGED,
            f"refused: {target} is managed by Argo CD application {app}; a self-healing "
            "Argo CD would revert the patch. Change it in Git, or set allowGitOpsDrift: true",
        )
    keys = ", ".join(key_paths(params.mergePatch))
    outputs = {"kind": params.kind, "namespace": namespace, "name": params.name, "keys": keys}
    if app is not None:
        outputs["gitOpsDrift"] = app
    if ctx.dry_run:
        return ActionResult(f"would patch {keys} of {target}", outputs)
    before = str(obj["metadata"].get("resourceVersion") or "")
    earlier = changed_earlier(ctx.outputs, before)
    if params.kind not in UNSNAPSHOTTED_KINDS:
        snapshot = take_snapshot(params, namespace, obj, ctx.outputs.get(SNAPSHOT))
        outputs[SNAPSHOT] = json.dumps(snapshot, separators=(",", ":"))
    await ctx.checkpoint(
        {
            **outputs,
            "readVersion": before,
            "wouldChange": str(merged(obj, params.mergePatch) != obj).lower(),
            "changedEarlier": str(earlier).lower(),
        }
    )
    try:
        patched = await kube.patch(
            params.apiVersion, resource, namespace, params.name, params.mergePatch
        )
    except ApiError as exc:
        raise exc.as_step_failure(f"patching {target}") from exc
    after = str(patched.get("metadata", {}).get("resourceVersion") or "")
    outputs["resourceVersion"] = after
    outputs["changed"] = str(after != before or earlier).lower()
    drift = f" (drifts from Git: Argo CD application {app})" if app else ""
    if after != before:
        text = f"patched {keys} of {target}"
    elif earlier:
        text = f"patched {keys} of {target} (by an earlier attempt, whose answer was lost)"
    else:
        text = f"patch changed nothing in {keys} of {target}"
    return ActionResult(f"{text}{drift}", outputs)
