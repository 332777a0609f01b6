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
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

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
