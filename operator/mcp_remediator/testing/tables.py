"""Server-side printing for the emulated API server: ``meta.k8s.io`` Tables, as kubectl asks.

``kubectl get`` sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` (then the
``v1beta1`` Table, then plain JSON) on its list, get and watch, and prints the columns the
server chose. This module negotiates that Accept header (``conversion``) and builds the
Tables (``table``), also the ``PartialObjectMetadata[List]`` conversion the metadata client
asks for (``as=PartialObjectMetadata``):

* custom resources: the ``Name`` column, then the version's ``additionalPrinterColumns``
  (or ``Age`` when it declares none), as apiextensions-apiserver's table convertor does: a
  column's ``jsonPath`` is evaluated on the object (the simple JSONPath subset CRDs may use:
  fields, ``[n]``, ``[*]``, ``['key']`` and ``[?(@.field=="value")]`` filters); ``string``
  cells are the printed value, ``integer``/``number``/``boolean`` cells typed, ``date`` cells
  the age as kubectl shows it (``5m``); a path that finds nothing is a null cell;
* built-in kinds: columns in the manner of kube-apiserver's printers (Pods NAME READY STATUS
  RESTARTS AGE, Deployments READY UP-TO-DATE AVAILABLE AGE, ...), with their ``-o wide``
  columns at priority 1 and their column types (a count in a ``string`` column is still an
  integer cell, as there); kinds without a printer get ``Name`` and ``Created At``.

Rows carry ``object`` as ``includeObject`` asks: ``Metadata`` (the default) a
PartialObjectMetadata, ``Object`` the whole object, ``None`` nothing. In a watch, only the
first event's Table carries ``columnDefinitions``, as the real watch encoder does.

Simplified: the built-in printers compute their cells from what the emulator stores (no
defaults: a Deployment without ``spec.replicas`` counts 1), Pods' STATUS follows the
container states coarsely, rows carry no ``conditions``, and an Accept header that names
nothing the emulator serves gets plain JSON rather than 406.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp_remediator.kube import events
from mcp_remediator.testing import scale

JsonDict = dict[str, Any]
Cell = Any
META_GROUP = "meta.k8s.io"

_NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although "
    "some resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated."
)
_CREATED_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is "
    "in UTC."
)


# --- negotiation ------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversion:
    """What the client asked the answer to be converted to."""

    kind: str  # "Table" or "PartialObjectMetadata" (its List for lists)
    version: str  # "v1" or "v1beta1"

    @property
    def api_version(self) -> str:
        return f"{META_GROUP}/{self.version}"

    @property
    def media_type(self) -> str:
        return f"application/json;as={self.kind};v={self.version};g={META_GROUP}"


_SERVED_AS = {"Table", "PartialObjectMetadata", "PartialObjectMetadataList"}


def conversion(accept: str) -> Conversion | None:
    """The conversion the first servable media range of an Accept header asks for, or
    ``None`` for plain JSON (also when nothing in it is servable).
    """
    for media_range in accept.split(","):
        parts = [part.strip() for part in media_range.split(";")]
        media = parts[0].lower()
        params: dict[str, str] = {}
        for part in parts[1:]:
            key, _, value = part.partition("=")
            params[key.strip()] = value.strip().strip('"')
        if media not in ("application/json", "application/*", "*/*"):
            continue
        target = params.get("as")
        if target is None:
            return None
        if (
            target in _SERVED_AS
            and params.get("g") == META_GROUP
            and params.get("v") in ("v1", "v1beta1")
        ):
            return Conversion(target.removesuffix("List"), params["v"])
    return None


# --- ages -------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime.datetime | None:
    """An RFC 3339 timestamp of an object (``None``: not a time), as kube/events.py reads
    them."""
    return events.parse_time(value) if isinstance(value, str) else None


def human_duration(seconds: float) -> str:
    """A duration as kubectl and the server's printers show ages (``45s``, ``5m3s``,
    ``3h``, ``2d4h``, ``3y20d``).
    """
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    whole = int(seconds)
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // (24 * 365)}y{rest}d" if rest else f"{hours // (24 * 365)}y"
    return f"{hours // (24 * 365)}y"


def age(value: Any, now: datetime.datetime | None = None) -> str:
    """The age of a timestamp as the printers show it; ``<unknown>`` without one."""
    moment = parse_time(value)
    if moment is None:
        return "<unknown>"
    now = now or datetime.datetime.now(datetime.UTC)
    return human_duration((now - moment).total_seconds())


# --- JSONPath (the subset printer columns use) --------------------------------------------

_STEP = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_$-]+)
    |\[(?P<index>-?\d+|\*)\]
    |\[\s*'(?P<quoted>[^']*)'\s*\]
    |\[\s*\?\(\s*@\.(?P<fpath>[A-Za-z0-9_.-]+)\s*(?P<fop>==|!=)\s*(?P<fval>"[^"]*"|'[^']*'|[^)\s]+)\s*\)\s*\]
    |\.\*""",
    re.VERBOSE,
)


class JsonPathError(ValueError):
    pass


def _steps(path: str) -> list[re.Match[str]]:
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    text = text.removeprefix("$")
    steps: list[re.Match[str]] = []
    position = 0
    while position < len(text):
        match = _STEP.match(text, position)
        if match is None:
            raise JsonPathError(f"unsupported JSONPath {path!r} at {text[position:]!r}")
        steps.append(match)
        position = match.end()
    return steps


def _filter_value(raw: str) -> Any:
    if raw[:1] in ("'", '"'):
        return raw[1:-1]
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def find(obj: Any, path: str) -> list[Any]:
    """Every value a JSONPath finds in ``obj``, in order."""
    current = [obj]
    for step in _steps(path):
        found: list[Any] = []
        for value in current:
            if step["field"] is not None or step["quoted"] is not None:
                key = step["field"] if step["field"] is not None else step["quoted"]
                if isinstance(value, Mapping) and key in value:
                    found.append(value[key])
            elif step["index"] is not None:
                if isinstance(value, list):
                    if step["index"] == "*":
                        found.extend(value)
                    elif -len(value) <= int(step["index"]) < len(value):
                        found.append(value[int(step["index"])])
                elif isinstance(value, Mapping) and step["index"] == "*":
                    found.extend(value.values())
            elif step["fpath"] is not None:
                items = value if isinstance(value, list) else []
                wanted = _filter_value(step["fval"])
                for item in items:
                    got = find(item, "." + step["fpath"])
                    equal = bool(got) and got[0] == wanted
                    if equal == (step["fop"] == "=="):
                        found.append(item)
            elif isinstance(value, Mapping):  # .*
                found.extend(value.values())
            elif isinstance(value, list):
                found.extend(value)
        current = found
    return current


def _printed(value: Any) -> str:
    """A value as client-go's ``JSONPath.PrintResults`` writes it for a string column: maps
    and lists as Go's ``json.Marshal`` (sorted keys, compact, ``<>&`` escaped), other values
    as text (null as ``<nil>``).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    if value is None:
        return "<nil>"
    return str(value)


# --- columns and printers -----------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    description: str = ""
    priority: int = 0
    format: str = ""

    def definition(self) -> JsonDict:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


RowFunction = Callable[[JsonDict, datetime.datetime], list[Cell]]


@dataclass(frozen=True)
class Printer:
    columns: tuple[Column, ...]
    row: RowFunction


NAME = Column("Name", format="name", description=_NAME_DESCRIPTION)
_AGE = Column("Age", description=_CREATED_DESCRIPTION)


def _meta(obj: JsonDict) -> JsonDict:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _none(value: Any) -> str:
    return str(value) if value not in (None, "", [], {}) else "<none>"


def _name(obj: JsonDict) -> str:
    return str(_meta(obj).get("name", ""))


def _age_of(obj: JsonDict, now: datetime.datetime) -> str:
    return age(_meta(obj).get("creationTimestamp"), now)


def _selector(selector: Any) -> str:
    """A LabelSelector as FormatLabelSelector prints it, or a Service's plain map."""
    if not isinstance(selector, Mapping):
        return "<none>"
    if "matchLabels" in selector or "matchExpressions" in selector:
        return scale.selector_text(dict(selector)) or "<none>"
    parts = [f"{k}={v}" for k, v in sorted(selector.items()) if isinstance(v, str)]
    return ",".join(parts) or "<none>"


def _containers(obj: JsonDict) -> tuple[str, str]:
    containers = _dig(obj, "spec", "template", "spec", "containers") or []
    names = ",".join(str(c.get("name", "")) for c in containers if isinstance(c, Mapping))
    images = ",".join(str(c.get("image", "")) for c in containers if isinstance(c, Mapping))
    return names or "<none>", images or "<none>"


def _pod_row(obj: JsonDict, now: datetime.datetime) -> list[Cell]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    meta = _meta(obj)
    statuses = [s for s in status.get("containerStatuses") or [] if isinstance(s, Mapping)]
    total = len(spec.get("containers") or [])
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(_int(s.get("restartCount")) for s in statuses)
    last_restart: datetime.datetime | None = None
    reason = str(status.get("reason") or status.get("phase") or "")
    running = False
    for container in reversed(statuses):
        state = container.get("state") or {}
        finished = parse_time(_dig(container, "lastState", "terminated", "finishedAt"))
        if finished is not None and (last_restart is None or finished > last_restart):
            last_restart = finished
        if _dig(state, "waiting", "reason"):
            reason = str(state["waiting"]["reason"])
        elif "terminated" in state:
            terminated = state["terminated"] or {}
            if terminated.get("reason"):
                reason = str(terminated["reason"])
            elif terminated.get("signal"):
                reason = f"Signal:{terminated['signal']}"
            else:
                reason = f"ExitCode:{_int(terminated.get('exitCode'))}"
        elif container.get("ready") and "running" in state:
            running = True
    if reason == "Completed" and running:
        reason = "Running"
    if meta.get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    shown_restarts = str(restarts)
    if last_restart is not None:
        shown_restarts = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    gates = spec.get("readinessGates") or []
    return [
        _name(obj),
        f"{ready}/{total}",
        reason,
        shown_restarts,
        _age_of(obj, now),
        _none(status.get("podIP")),
        _none(spec.get("nodeName")),
        _none(status.get("nominatedNodeName")),
        f"0/{len(gates)}" if gates else "<none>",
    ]


def _deployment_row(obj: JsonDict, now: datetime.datetime) -> list[Cell]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(obj)
    return [
        _name(obj),
        f"{_int(status.get('readyReplicas'))}/{_int(spec.get('replicas'), 1)}",
        _int(status.get("updatedReplicas")),
        _int(status.get("availableReplicas")),
        _age_of(obj, now),
        names,
        images,
        _selector(spec.get("selector")),
    ]


def _statefulset_row(obj: JsonDict, now: datetime.datetime) -> list[Cell]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(obj)
    ready = f"{_int(status.get('readyReplicas'))}/{_int(spec.get('replicas'), 1)}"
    return [_name(obj), ready, _age_of(obj, now), names, images]


def _daemonset_row(obj: JsonDict, now: datetime.datetime) -> list[Cell]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(obj)
    node_selector = _dig(spec, "template", "spec", "nodeSelector") or {}
    return [
        _name(obj),
        _int(status.get("desiredNumberScheduled")),
        _int(status.get("currentNumberScheduled")),
        _int(status.get("numberReady")),
        _int(status.get("updatedNumberScheduled")),
        _int(status.get("numberAvailable")),
        ",".join(f"{k}={v}" for k, v in sorted(node_selector.items())) or "<none>",
        _age_of(obj, now),
        names,
        images,
        _selector(spec.get("selector")),
    ]


def _replicaset_row(obj: JsonDict, now: datetime.datetime) -> list[Cell]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(obj)
    return [
        _name(obj),
        _int(spec.get("replicas"), 1),
        _int(status.get("replicas")),
        _int(status.get("readyReplicas")),
        _age_of(obj, now),
        names,
        images,
        _selector(spec.get("selector")),
    ]


def _service_row(obj: JsonDict, now: datetime.datetime) -> list[Cell]:
    spec = obj.get("spec") or {}
    ports = [
        f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}"
        f"/{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []
        if isinstance(p, Mapping)
    ]
    ingress = _dig(obj, "status", "loadBalancer", "ingress") or []
    external = [*(spec.get("externalIPs") or [])]
    external += [i.get("ip") or i.get("hostname") for i in ingress if isinstance(i, Mapping)]
    service_type = str(spec.get("type") or "ClusterIP")
    shown_external = ",".join(str(e) for e in external if e)
    if not shown_external:
        if service_type == "ExternalName":
            shown_external = str(spec.get("externalName") or "<none>")
        else:
            shown_external = "<pending>" if service_type == "LoadBalancer" else "<none>"
    return [
        _name(obj),
        service_type,
        _none(spec.get("clusterIP")),
        shown_external,
        ",".join(ports) or "<none>",
        _age_of(obj, now),
        _selector(spec.get("selector")) if spec.get("selector") else "<none>",
    ]


def _configmap_row(obj: JsonDict, now: datetime.datetime) -> list[Cell]:
    count = len(obj.get("data") or {}) + len(obj.get("binaryData") or {})
    return [_name(obj), count, _age_of(obj, now)]


def _secret_row(obj: JsonDict, now: datetime.datetime) -> list[Cell]:
    # The real server has written stringData into data by then.
    count = len({*(obj.get("data") or {}), *(obj.get("stringData") or {})})
    return [_name(obj), str(obj.get("type") or "Opaque"), count, _age_of(obj, now)]


def _namespace_row(obj: JsonDict, now: datetime.datetime) -> list[Cell]:
    # A real namespace is Active from its creation on (the emulator sets no status).
    phase = _dig(obj, "status", "phase") or "Active"
    return [_name(obj), str(phase), _age_of(obj, now)]


def _event_row(obj: JsonDict, now: datetime.datetime) -> list[Cell]:
    """Core v1 and events.k8s.io/v1 Events (the real server prints both the same way)."""
    core = "involvedObject" in obj or "message" in obj or "lastTimestamp" in obj
    regarding = obj.get("involvedObject" if core else "regarding") or {}
    source = obj.get("source" if core else "deprecatedSource") or {}
    reporter = source.get("component") or obj.get("reportingController") or ""
    if source.get("host"):
        reporter = f"{reporter}, {source['host']}"
    last = (
        _dig(obj, "series", "lastObservedTime")
        or obj.get("lastTimestamp" if core else "deprecatedLastTimestamp")
        or obj.get("eventTime")
        or _meta(obj).get("creationTimestamp")
    )
    first = obj.get("firstTimestamp" if core else "deprecatedFirstTimestamp") or obj.get(
        "eventTime"
    )
    count = _int(obj.get("count" if core else "deprecatedCount"))
    count = count or _int(_dig(obj, "series", "count"), 1)
    kind = str(regarding.get("kind") or "").lower()
    return [
        age(last, now),
        str(obj.get("type") or ""),
        str(obj.get("reason") or ""),
        f"{kind}/{regarding.get('name', '')}",
        str(regarding.get("fieldPath") or ""),
        reporter,
        str(obj.get("message" if core else "note") or "").strip(),
        age(first, now) if first else "<unknown>",
        count,
        _name(obj),
    ]


def _lease_row(obj: JsonDict, now: datetime.datetime) -> list[Cell]:
    return [_name(obj), str(_dig(obj, "spec", "holderIdentity") or ""), _age_of(obj, now)]


def _binding_row(obj: JsonDict, now: datetime.datetime) -> list[Cell]:
    ref = obj.get("roleRef") or {}
    subjects = [s for s in obj.get("subjects") or [] if isinstance(s, Mapping)]

    def of(kind: str) -> str:
        if kind == "ServiceAccount":
            names = [
                f"{s.get('namespace', '')}/{s.get('name')}"
                for s in subjects
                if s.get("kind") == kind
            ]
        else:
            names = [str(s.get("name")) for s in subjects if s.get("kind") == kind]
        return ",".join(names)

    return [
        _name(obj),
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        _age_of(obj, now),
        of("User"),
        of("Group"),
        of("ServiceAccount"),
    ]


def _serviceaccount_row(obj: JsonDict, now: datetime.datetime) -> list[Cell]:
    return [_name(obj), len(obj.get("secrets") or []), _age_of(obj, now)]


def _created_row(obj: JsonDict, now: datetime.datetime) -> list[Cell]:
    created = parse_time(_meta(obj).get("creationTimestamp"))
    return [_name(obj), created.strftime("%Y-%m-%dT%H:%M:%SZ") if created else None]


def _wide(*names: str) -> tuple[Column, ...]:
    return tuple(Column(name, priority=1) for name in names)


_INT = "integer"
_BUILTIN_PRINTERS: dict[tuple[str, str], Printer] = {
    ("", "pods"): Printer(
        (
            NAME,
            Column("Ready"),
            Column("Status"),
            Column("Restarts"),
            _AGE,
            *_wide("IP", "Node", "Nominated Node", "Readiness Gates"),
        ),
        _pod_row,
    ),
    ("apps", "deployments"): Printer(
        (
            NAME,
            Column("Ready"),
            Column("Up-to-date"),
            Column("Available"),
            _AGE,
            *_wide("Containers", "Images", "Selector"),
        ),
        _deployment_row,
    ),
    ("apps", "statefulsets"): Printer(
        (NAME, Column("Ready"), _AGE, *_wide("Containers", "Images")), _statefulset_row
    ),
    ("apps", "daemonsets"): Printer(
        (
            NAME,
            Column("Desired", _INT),
            Column("Current", _INT),
            Column("Ready", _INT),
            Column("Up-to-date", _INT),
            Column("Available", _INT),
            Column("Node Selector"),
            _AGE,
            *_wide("Containers", "Images", "Selector"),
        ),
        _daemonset_row,
    ),
    ("apps", "replicasets"): Printer(
        (
            NAME,
            Column("Desired", _INT),
            Column("Current", _INT),
            Column("Ready", _INT),
            _AGE,
            *_wide("Containers", "Images", "Selector"),
        ),
        _replicaset_row,
    ),
    ("", "services"): Printer(
        (
            NAME,
            Column("Type"),
            Column("Cluster-IP"),
            Column("External-IP"),
            Column("Port(s)"),
            _AGE,
            *_wide("Selector"),
        ),
        _service_row,
    ),
    ("", "configmaps"): Printer((NAME, Column("Data"), _AGE), _configmap_row),
    ("", "secrets"): Printer((NAME, Column("Type"), Column("Data"), _AGE), _secret_row),
    ("", "namespaces"): Printer((NAME, Column("Status"), _AGE), _namespace_row),
    ("", "serviceaccounts"): Printer((NAME, Column("Secrets"), _AGE), _serviceaccount_row),
    ("coordination.k8s.io", "leases"): Printer((NAME, Column("Holder"), _AGE), _lease_row),
}
_EVENT_PRINTER = Printer(
    (
        Column("Last Seen"),
        Column("Type"),
        Column("Reason"),
        Column("Object"),
        Column("Subobject", priority=1),
        Column("Source", priority=1),
        Column("Message"),
        Column("First Seen", priority=1),
        Column("Count", priority=1),
        Column("Name", priority=1, format="name"),
    ),
    _event_row,
)
_BUILTIN_PRINTERS[("", "events")] = _EVENT_PRINTER
_BUILTIN_PRINTERS[("events.k8s.io", "events")] = _EVENT_PRINTER
for _binding in ("rolebindings", "clusterrolebindings"):
    _BUILTIN_PRINTERS[("rbac.authorization.k8s.io", _binding)] = Printer(
        (NAME, Column("Role"), _AGE, *_wide("Users", "Groups", "ServiceAccounts")), _binding_row
    )
DEFAULT_PRINTER = Printer((NAME, Column("Created At", "date", _CREATED_DESCRIPTION)), _created_row)
_DEFAULT_CRD_COLUMNS: list[JsonDict] = [
    {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
        "description": _CREATED_DESCRIPTION,
    }
]


def builtin_printer(group: str, plural: str) -> Printer:
    return _BUILTIN_PRINTERS.get((group, plural), DEFAULT_PRINTER)


def _typed_cell(column_type: str, value: Any, now: datetime.datetime) -> Cell:
    if column_type == "string":
        return _printed(value)
    if column_type == "integer":
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return int(value)
        return None
    if column_type == "number":
        if isinstance(value, bool):
            return None
        return float(value) if isinstance(value, (int, float)) else None
    if column_type == "boolean":
        return value if isinstance(value, bool) else None
    if column_type == "date":
        if not isinstance(value, str):
            return None
        if value and parse_time(value) is None:
            return "<invalid>"
        return age(value, now)
    return None


def crd_printer(columns: list[JsonDict] | None) -> Printer:
    """Name, then a CRD version's ``additionalPrinterColumns`` (``Age`` when it has none)."""
    declared = columns or _DEFAULT_CRD_COLUMNS
    shown = tuple(
        Column(
            str(c["name"]),
            str(c.get("type", "string")),
            str(c.get("description", "")),
            int(c.get("priority", 0)),
            str(c.get("format", "")),
        )
        for c in declared
    )
    paths = [str(c.get("jsonPath", "")) for c in declared]

    def row(obj: JsonDict, now: datetime.datetime) -> list[Cell]:
        cells: list[Cell] = [_name(obj)]
        for column, path in zip(shown, paths, strict=True):
            try:
                found = find(obj, path)
            except JsonPathError:
                found = []
            cells.append(_typed_cell(column.type, found[0], now) if found else None)
        return cells

    return Printer((NAME, *shown), row)


# --- tables -------------------------------------------------------------------------------


def partial_metadata(obj: JsonDict, version: str = "v1") -> JsonDict:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": f"{META_GROUP}/{version}",
        "metadata": _meta(obj),
    }


def _row_object(obj: JsonDict, include: str, version: str) -> JsonDict | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return partial_metadata(obj, version)


def table(
    printer: Printer,
    objects: list[JsonDict],
    *,
    list_meta: JsonDict,
    include_object: str = "Metadata",
    version: str = "v1",
    headers: bool = True,
    now: datetime.datetime | None = None,
) -> JsonDict:
    """A ``meta.k8s.io`` Table of ``objects``."""
    now = now or datetime.datetime.now(datetime.UTC)
    body: JsonDict = {"kind": "Table", "apiVersion": f"{META_GROUP}/{version}"}
    body["metadata"] = list_meta
    if headers:
        body["columnDefinitions"] = [column.definition() for column in printer.columns]
    body["rows"] = [
        {"cells": printer.row(obj, now), "object": _row_object(obj, include_object, version)}
        for obj in objects
    ]
    return body


def convert(
    target: Conversion,
    printer: Printer,
    body: JsonDict,
    *,
    include_object: str = "Metadata",
    headers: bool = True,
) -> JsonDict:
    """A list or an object (as served) converted to what ``target`` asks for."""
    is_list = isinstance(body.get("items"), list)
    objects: list[JsonDict] = body["items"] if is_list else [body]
    if is_list:
        list_meta = dict(body.get("metadata") or {})
    else:
        list_meta = {"resourceVersion": _meta(body).get("resourceVersion", "")}
    if target.kind == "PartialObjectMetadata":
        if not is_list:
            return partial_metadata(body, target.version)
        return {
            "kind": "PartialObjectMetadataList",
            "apiVersion": target.api_version,
            "metadata": list_meta,
            "items": [partial_metadata(obj, target.version) for obj in objects],
        }
    return table(
        printer,
        objects,
        list_meta=list_meta,
        include_object=include_object,
        version=target.version,
        headers=headers,
    )


async def convert_events(
    events: AsyncIterator[Any],
    target: Conversion,
    printer: Printer,
    include_object: str = "Metadata",
) -> AsyncIterator[Any]:
    """A watch stream with each event's object converted; only the first Table carries the
    column definitions. BOOKMARK and ERROR events pass unchanged.
    """
    headers = True
    async for event in events:
        if (
            isinstance(event, dict)
            and event.get("type") in ("ADDED", "MODIFIED", "DELETED")
            and isinstance(event.get("object"), dict)
        ):
            converted = convert(
                target, printer, event["object"], include_object=include_object, headers=headers
            )
            headers = False
            yield {**event, "object": converted}
        else:
            yield event
