"""The field labels each resource can be selected by (``?fieldSelector=``), as kube-apiserver's
``GetAttrs`` of each kind gives them.

Every kind has ``metadata.name`` and ``metadata.namespace``; Events have their own (see
events.py); Pods, Secrets, Namespaces, ReplicaSets, ReplicationControllers, Nodes and Jobs
the few their registries add; a custom
resource the ``selectableFields`` of its CRD version (``jsonPath`` of a string, integer or
boolean field, shown as Go formats it). Any other label is the real 400 ``field label not
supported: <label>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mcp_remediator.testing import events

JsonDict = dict[str, Any]

_META = ("metadata.name", "metadata.namespace")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _at(obj: Any, path: str) -> Any:
    for step in path.strip().lstrip(".").split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(step)
    return obj


# (apiVersion, plural) -> the extra field labels, each a JSON path into the object.
_BUILTIN: dict[tuple[str, str], tuple[str, ...]] = {
    ("v1", "pods"): (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    ("v1", "secrets"): ("type",),
    ("v1", "namespaces"): ("status.phase",),
    ("apps/v1", "replicasets"): ("status.replicas",),
    ("v1", "replicationcontrollers"): ("status.replicas",),
    ("v1", "nodes"): ("spec.unschedulable",),
    ("batch/v1", "jobs"): ("status.successful",),
}
# Fields of built-in kinds Go prints as "false"/"0" when absent (non-pointer types); a
# custom resource's absent field is "".
_ZERO = {"spec.hostNetwork": False, "status.replicas": 0, "spec.unschedulable": False,
         "status.successful": 0}  # fmt: skip


def labels(api_version: str, plural: str, custom: Iterable[str] = ()) -> frozenset[str]:
    """The field labels a resource takes (``custom``: a CRD's selectable fields)."""
    if events.is_event(api_version, plural):
        if api_version == events.EVENTS_V1:
            return events.EVENTS_V1_FIELD_LABELS
        return events.CORE_FIELD_LABELS
    return frozenset((*_META, *_BUILTIN.get((api_version, plural), ()), *custom))


def values(
    api_version: str, plural: str, obj: JsonDict, custom: Iterable[str] = ()
) -> dict[str, str]:
    """The field set of an object as served in ``api_version`` (Events converted already)."""
    if events.is_event(api_version, plural):
        return events.selectable_fields(api_version, obj)
    meta = obj.get("metadata") or {}
    found = {
        "metadata.name": _text(meta.get("name")),
        "metadata.namespace": _text(meta.get("namespace")),
    }
    for path in _BUILTIN.get((api_version, plural), ()):
        value = _at(obj, path)
        found[path] = _text(_ZERO.get(path) if value is None else value)
    for path in custom:
        found[path] = _text(_at(obj, path))
    return found


def crd_selectable(version: JsonDict) -> tuple[str, ...]:
    """The field labels a CRD version declares in ``selectableFields``."""
    declared = version.get("selectableFields") or []
    return tuple(
        str(item["jsonPath"]).lstrip(".")
        for item in declared
        if isinstance(item, dict) and item.get("jsonPath")
    )
