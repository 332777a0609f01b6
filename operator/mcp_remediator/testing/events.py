"""Events as kube-apiserver keeps them: one store, served as core ``v1`` and ``events.k8s.io/v1``.

The real server stores every Event once and converts it to the shape of the group a client
asked for, so an Event written in one shape is listed and watched in the other. The two
shapes differ in these fields (the rest, such as ``reason``, ``type``, ``eventTime``,
``series``, ``action``, ``related``, ``reportingInstance``, carry over as they are):

==================== ===========================
core ``v1``          ``events.k8s.io/v1``
==================== ===========================
``involvedObject``   ``regarding``
``message``          ``note``
``source``           ``deprecatedSource``
``firstTimestamp``   ``deprecatedFirstTimestamp``
``lastTimestamp``    ``deprecatedLastTimestamp``
``count``            ``deprecatedCount``
``reportingComponent`` ``reportingController``
==================== ===========================

The emulator stores the core shape. Field selectors follow the real ``GetAttrs`` of each
group: the core one selects on ``involvedObject.*``, ``reason``, ``reportingComponent``,
``source`` (the source component) and ``type``; ``events.k8s.io`` on ``regarding.*``,
``reason``, ``reportingController``, ``source`` (the deprecated source's component, else the
reporting controller) and ``type``; both on ``metadata.name`` and ``metadata.namespace``. Any
other label is the real 400 ``field label not supported: <label>``.

Simplified: the core ``series.state`` field (long deprecated) is dropped in neither direction,
and no validation happens (the real server requires ``eventTime``, ``reportingController``
and ``reportingInstance`` on events.k8s.io writes).
"""

from __future__ import annotations

import copy
from typing import Any

JsonDict = dict[str, Any]

CORE = "v1"
EVENTS_V1 = "events.k8s.io/v1"

# core field -> events.k8s.io field
_RENAMED = (
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
)
_REFERENCE_FIELDS = (
    "kind",
    "namespace",
    "name",
    "uid",
    "apiVersion",
    "resourceVersion",
    "fieldPath",
)


def is_event(api_version: str, plural: str) -> bool:
    """Whether a served resource is one of the two Event shapes."""
    return plural == "events" and api_version in (CORE, EVENTS_V1)


def _rename(obj: JsonDict, pairs: tuple[tuple[str, str], ...], api_version: str) -> JsonDict:
    renamed: JsonDict = {}
    mapping = dict(pairs)
    for key, value in obj.items():
        renamed[mapping.get(key, key)] = copy.deepcopy(value)
    if "apiVersion" in renamed:
        renamed["apiVersion"] = api_version
    return renamed


def to_events_v1(core: JsonDict) -> JsonDict:
    """A core ``v1`` Event in the ``events.k8s.io/v1`` shape."""
    return _rename(core, _RENAMED, EVENTS_V1)


def to_core(event: JsonDict) -> JsonDict:
    """An ``events.k8s.io/v1`` Event in the core ``v1`` shape."""
    return _rename(event, tuple((new, old) for old, new in _RENAMED), CORE)


def convert(obj: JsonDict, api_version: str) -> JsonDict:
    """The stored (core) Event as served in ``api_version``."""
    return to_events_v1(obj) if api_version == EVENTS_V1 else obj


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def core_fields(event: JsonDict) -> dict[str, str]:
    """The selectable fields of a core ``v1`` Event (its ``GetAttrs``)."""
    meta = event.get("metadata") or {}
    involved = event.get("involvedObject") or {}
    fields = {
        "metadata.name": _text(meta.get("name")),
        "metadata.namespace": _text(meta.get("namespace")),
        "reason": _text(event.get("reason")),
        "reportingComponent": _text(event.get("reportingComponent")),
        # source.component, else reportingController, as EventToSelectableFields takes it
        "source": _text(
            (event.get("source") or {}).get("component") or event.get("reportingController")
        ),
        "type": _text(event.get("type")),
    }
    for key in _REFERENCE_FIELDS:
        fields[f"involvedObject.{key}"] = _text(involved.get(key))
    return fields


def events_v1_fields(event: JsonDict) -> dict[str, str]:
    """The selectable fields of an ``events.k8s.io/v1`` Event (its ``GetAttrs``)."""
    meta = event.get("metadata") or {}
    regarding = event.get("regarding") or {}
    controller = _text(event.get("reportingController"))
    source = _text((event.get("deprecatedSource") or {}).get("component")) or controller
    fields = {
        "metadata.name": _text(meta.get("name")),
        "metadata.namespace": _text(meta.get("namespace")),
        "reason": _text(event.get("reason")),
        "reportingController": controller,
        "source": source,
        "type": _text(event.get("type")),
    }
    for key in _REFERENCE_FIELDS:
        fields[f"regarding.{key}"] = _text(regarding.get(key))
    return fields


def selectable_fields(api_version: str, obj: JsonDict) -> dict[str, str]:
    """The selectable fields of an Event as served in ``api_version``."""
    if api_version == EVENTS_V1:
        return events_v1_fields(obj)
    return core_fields(obj)


CORE_FIELD_LABELS = frozenset(core_fields({}))
EVENTS_V1_FIELD_LABELS = frozenset(events_v1_fields({}))
