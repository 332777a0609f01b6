"""The ``/scale`` subresource, as kube-apiserver serves it (``autoscaling/v1`` Scale).

Deployments, StatefulSets and ReplicaSets (``apps/v1``) have one, and so has every CRD
version that declares ``subresources.scale`` (``specReplicasPath``, ``statusReplicasPath``,
optionally ``labelSelectorPath``). A Scale shows ``spec.replicas``, ``status.replicas`` and
``status.selector`` (the label selector as a string; for a CRD, the string found at
``labelSelectorPath``) and the object's name, namespace, uid, resourceVersion and
creationTimestamp; writing one (PUT, or a patch of the Scale) sets only the object's
replicas, with the Scale's resourceVersion as a precondition.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

JsonDict = dict[str, Any]

SCALE_API_VERSION = "autoscaling/v1"
SCALE_GROUP = "autoscaling"
SCALE_VERSION = "v1"
SCALE_KIND = "Scale"


@dataclass(frozen=True)
class ScalePaths:
    """Where an object keeps what its Scale shows (JSON paths such as ``.spec.replicas``)."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = None  # None: the built-ins' ``spec.selector`` object

    @classmethod
    def of_crd(cls, scale: dict[str, Any]) -> ScalePaths:
        return cls(
            spec_replicas=str(scale.get("specReplicasPath") or ".spec.replicas"),
            status_replicas=str(scale.get("statusReplicasPath") or ".status.replicas"),
            label_selector=str(scale.get("labelSelectorPath") or "") or None,
        )


BUILTIN_SCALED = frozenset(
    {("apps", "deployments"), ("apps", "statefulsets"), ("apps", "replicasets")}
)


def _steps(path: str) -> list[str]:
    return [step for step in path.strip().lstrip(".").split(".") if step]


def _get(obj: Any, path: str) -> Any:
    for step in _steps(path):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(step)
    return obj


def _set(obj: JsonDict, path: str, value: Any) -> None:
    steps = _steps(path)
    for step in steps[:-1]:
        child = obj.get(step)
        if not isinstance(child, dict):
            child = obj[step] = {}
        obj = child
    obj[steps[-1]] = value


def selector_text(selector: Any) -> str:
    """A LabelSelector as ``metav1.FormatLabelSelector`` writes it (``a in (d,e),c=b``): every
    requirement sorted by key, as ``LabelSelectorAsSelector`` sorts them."""
    if not isinstance(selector, dict):
        return ""
    parts = [
        (str(key), f"{key}={value}") for key, value in (selector.get("matchLabels") or {}).items()
    ]
    for expression in selector.get("matchExpressions") or []:
        key, op = str(expression.get("key", "")), expression.get("operator", "")
        values = ",".join(sorted(str(v) for v in expression.get("values") or []))
        text = {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                "Exists": key, "DoesNotExist": f"!{key}"}.get(str(op))  # fmt: skip
        if text is not None:
            parts.append((key, text))
    return ",".join(text for _, text in sorted(parts, key=lambda part: part[0]))


def scale_of(obj: JsonDict, paths: ScalePaths) -> JsonDict:
    """The Scale an object shows."""
    meta = obj.get("metadata") or {}
    scale_meta = {
        key: meta[key]
        for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        if key in meta
    }
    spec_replicas = _get(obj, paths.spec_replicas)
    status: JsonDict = {"replicas": _get(obj, paths.status_replicas) or 0}
    if paths.label_selector is None:
        selector = selector_text(_get(obj, ".spec.selector"))
    else:
        found = _get(obj, paths.label_selector)
        selector = found if isinstance(found, str) else ""
    if selector:
        status["selector"] = selector
    spec: JsonDict = {}
    if spec_replicas is not None:
        spec["replicas"] = spec_replicas
    return {
        "kind": SCALE_KIND,
        "apiVersion": SCALE_API_VERSION,
        "metadata": copy.deepcopy(scale_meta),
        "spec": spec,
        "status": status,
    }


def with_replicas(obj: JsonDict, scale: JsonDict, paths: ScalePaths) -> JsonDict:
    """The object with the replicas a written Scale asks for (and its resourceVersion as a
    precondition, when it gives one).
    """
    updated = copy.deepcopy(obj)
    replicas = (scale.get("spec") or {}).get("replicas", 0)
    _set(updated, paths.spec_replicas, replicas)
    rv = (scale.get("metadata") or {}).get("resourceVersion")
    if rv:
        updated.setdefault("metadata", {})["resourceVersion"] = rv
    return updated


def invalid_replicas(scale: JsonDict) -> str | None:
    """Why a written Scale is invalid, or ``None``."""
    replicas = (scale.get("spec") or {}).get("replicas", 0)
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        return f"spec.replicas: Invalid value: {replicas!r}: must be an integer"
    if replicas < 0:
        return f"spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
    return None
