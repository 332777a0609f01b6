"""The protobuf bodies ``kubectl create <kind>`` sends (``application/vnd.kubernetes.protobuf``).

kubectl 1.32 posts the objects its ``create`` generators build (``create namespace``,
``create configmap``, ``create secret``, ``create deployment``...) as protobuf, and does not
fall back to JSON on a 415, so the emulator reads those: the ``k8s\\x00`` envelope (a
``runtime.Unknown`` with the TypeMeta and the raw message) and the messages of the kinds
below, with the field numbers of the Kubernetes ``generated.proto`` files.

Simplified: only these kinds, and of them only the fields listed (fields of other numbers are
skipped); as gogo-protobuf writes every non-pointer field, zero values (``""``, ``0``,
``false``, empty messages) are read as absent, except where the Go field is a pointer whose
zero means something (``replicas``). Anything else is ``None``, which the emulator answers
with 415.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

JsonDict = dict[str, Any]

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

# A message schema: field number -> (JSON name, type, repeated). A type is a scalar name,
# a nested schema, or ("map", value type).
Schema = dict[int, tuple[str, Any, bool]]


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ProtobufError("varint too long")


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(number, wire type, raw value) of every field of a message."""
    fields: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value = data[pos : pos + length]
            if len(value) != length:
                raise ProtobufError("truncated field")
            pos += length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        fields.append((number, wire, value))
    return fields


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _scalar(kind: str, raw: Any) -> Any:
    match kind:
        case "string":
            return bytes(raw).decode("utf-8")
        case "bytes":
            return base64.b64encode(bytes(raw)).decode("ascii")
        case "int":
            return _signed(int(raw))
        case "bool":
            return bool(raw)
        case "quantity":
            return decode_message(bytes(raw), _QUANTITY).get("string", "")
        case "intorstring":
            value = decode_message(bytes(raw), _INT_OR_STRING, keep_zero=True)
            return value.get("strVal", "") if value.get("type") == 1 else value.get("intVal", 0)
        case "time":
            seconds = decode_message(bytes(raw), _TIME).get("seconds")
            if not seconds:
                return None
            moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
            return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    raise ProtobufError(f"unknown scalar type {kind}")


def _is_zero(value: Any) -> bool:
    return value is None or value == "" or value == 0 or value is False or value in ({}, [])


def decode_message(data: bytes, schema: Schema, *, keep_zero: bool = False) -> JsonDict:
    """A protobuf message as the JSON object of its Kubernetes type."""
    result: JsonDict = {}
    for number, wire, raw in _fields(data):
        if number not in schema:
            continue
        name, kind, repeated = schema[number]
        # Strings, bytes and messages are length-delimited, ints and bools varints: any other
        # wire type is a malformed body (and a varint where bytes belong must not become
        # ``bytes(n)``, n zero bytes).
        expected = 0 if kind in ("int", "bool") else 2
        if wire != expected:
            raise ProtobufError(f"field {number} ({name}) has wire type {wire}")
        value: Any
        if isinstance(kind, tuple) and kind[0] == "map":
            entry = decode_message(
                bytes(raw),
                {1: ("key", "string", False), 2: ("value", kind[1], False)},
                keep_zero=True,
            )
            result.setdefault(name, {})[entry.get("key", "")] = entry.get(
                "value", "" if kind[1] in ("string", "bytes", "quantity") else None
            )
            continue
        if isinstance(kind, dict):
            value = decode_message(bytes(raw), kind)
        else:
            value = _scalar(kind, raw)
        if repeated:
            result.setdefault(name, []).append(value)
        else:
            result[name] = value
    if keep_zero:
        return result
    return {k: v for k, v in result.items() if k in _POINTERS or not _is_zero(v)}


# Pointer fields whose zero is meaningful.
_POINTERS = frozenset({"replicas"})

_QUANTITY: Schema = {1: ("string", "string", False)}
_INT_OR_STRING: Schema = {
    1: ("type", "int", False),
    2: ("intVal", "int", False),
    3: ("strVal", "string", False),
}
_TIME: Schema = {1: ("seconds", "int", False), 2: ("nanos", "int", False)}

_OWNER_REFERENCE: Schema = {
    1: ("kind", "string", False),
    3: ("name", "string", False),
    4: ("uid", "string", False),
    5: ("apiVersion", "string", False),
    6: ("controller", "bool", False),
    7: ("blockOwnerDeletion", "bool", False),
}
_OBJECT_META: Schema = {
    1: ("name", "string", False),
    2: ("generateName", "string", False),
    3: ("namespace", "string", False),
    8: ("creationTimestamp", "time", False),
    11: ("labels", ("map", "string"), False),
    12: ("annotations", ("map", "string"), False),
    13: ("ownerReferences", _OWNER_REFERENCE, True),
    14: ("finalizers", "string", True),
}
_OBJECT_REFERENCE: Schema = {
    1: ("kind", "string", False),
    2: ("namespace", "string", False),
    3: ("name", "string", False),
    4: ("uid", "string", False),
    5: ("apiVersion", "string", False),
    6: ("resourceVersion", "string", False),
    7: ("fieldPath", "string", False),
}
_LOCAL_REFERENCE: Schema = {1: ("name", "string", False)}
_LABEL_SELECTOR: Schema = {
    1: ("matchLabels", ("map", "string"), False),
    2: (
        "matchExpressions",
        {
            1: ("key", "string", False),
            2: ("operator", "string", False),
            3: ("values", "string", True),
        },
        True,
    ),
}
_CONTAINER_PORT: Schema = {
    1: ("name", "string", False),
    2: ("hostPort", "int", False),
    3: ("containerPort", "int", False),
    4: ("protocol", "string", False),
    5: ("hostIP", "string", False),
}
_ENV_VAR: Schema = {1: ("name", "string", False), 2: ("value", "string", False)}
_RESOURCES: Schema = {
    1: ("limits", ("map", "quantity"), False),
    2: ("requests", ("map", "quantity"), False),
}
_CONTAINER: Schema = {
    1: ("name", "string", False),
    2: ("image", "string", False),
    3: ("command", "string", True),
    4: ("args", "string", True),
    5: ("workingDir", "string", False),
    6: ("ports", _CONTAINER_PORT, True),
    7: ("env", _ENV_VAR, True),
    8: ("resources", _RESOURCES, False),
    14: ("imagePullPolicy", "string", False),
}
_POD_SPEC: Schema = {
    2: ("containers", _CONTAINER, True),
    3: ("restartPolicy", "string", False),
    7: ("nodeSelector", ("map", "string"), False),
    8: ("serviceAccountName", "string", False),
    15: ("imagePullSecrets", _LOCAL_REFERENCE, True),
    20: ("initContainers", _CONTAINER, True),
}
_POD_TEMPLATE: Schema = {1: ("metadata", _OBJECT_META, False), 2: ("spec", _POD_SPEC, False)}
_DEPLOYMENT_STRATEGY: Schema = {
    1: ("type", "string", False),
    2: (
        "rollingUpdate",
        {1: ("maxUnavailable", "intorstring", False), 2: ("maxSurge", "intorstring", False)},
        False,
    ),
}
_DEPLOYMENT_SPEC: Schema = {
    1: ("replicas", "int", False),
    2: ("selector", _LABEL_SELECTOR, False),
    3: ("template", _POD_TEMPLATE, False),
    4: ("strategy", _DEPLOYMENT_STRATEGY, False),
    5: ("minReadySeconds", "int", False),
    6: ("revisionHistoryLimit", "int", False),
    7: ("paused", "bool", False),
    9: ("progressDeadlineSeconds", "int", False),
}
_SERVICE_SPEC: Schema = {
    1: (
        "ports",
        {
            1: ("name", "string", False),
            2: ("protocol", "string", False),
            3: ("port", "int", False),
            4: ("targetPort", "intorstring", False),
            5: ("nodePort", "int", False),
        },
        True,
    ),
    2: ("selector", ("map", "string"), False),
    3: ("clusterIP", "string", False),
    4: ("type", "string", False),
    10: ("externalName", "string", False),
}
_POLICY_RULE: Schema = {
    1: ("verbs", "string", True),
    2: ("apiGroups", "string", True),
    3: ("resources", "string", True),
    4: ("resourceNames", "string", True),
    5: ("nonResourceURLs", "string", True),
}
_SUBJECT: Schema = {
    1: ("kind", "string", False),
    2: ("apiGroup", "string", False),
    3: ("name", "string", False),
    4: ("namespace", "string", False),
}
_ROLE_REF: Schema = {
    1: ("apiGroup", "string", False),
    2: ("kind", "string", False),
    3: ("name", "string", False),
}
_META = (1, ("metadata", _OBJECT_META, False))

_ACCESS_REVIEW_SPEC: Schema = {
    1: (
        "resourceAttributes",
        {
            1: ("namespace", "string", False),
            2: ("verb", "string", False),
            3: ("group", "string", False),
            4: ("version", "string", False),
            5: ("resource", "string", False),
            6: ("subresource", "string", False),
            7: ("name", "string", False),
        },
        False,
    ),
    2: (
        "nonResourceAttributes",
        {1: ("path", "string", False), 2: ("verb", "string", False)},
        False,
    ),
}

SCHEMAS: dict[tuple[str, str], Schema] = {
    ("v1", "Namespace"): {
        _META[0]: _META[1],
        2: ("spec", {1: ("finalizers", "string", True)}, False),
    },
    ("v1", "ConfigMap"): {
        _META[0]: _META[1],
        2: ("data", ("map", "string"), False),
        3: ("binaryData", ("map", "bytes"), False),
        4: ("immutable", "bool", False),
    },
    ("v1", "Secret"): {
        _META[0]: _META[1],
        2: ("data", ("map", "bytes"), False),
        3: ("type", "string", False),
        4: ("stringData", ("map", "string"), False),
        5: ("immutable", "bool", False),
    },
    ("v1", "ServiceAccount"): {
        _META[0]: _META[1],
        2: ("secrets", _OBJECT_REFERENCE, True),
        3: ("imagePullSecrets", _LOCAL_REFERENCE, True),
        4: ("automountServiceAccountToken", "bool", False),
    },
    ("v1", "Service"): {_META[0]: _META[1], 2: ("spec", _SERVICE_SPEC, False)},
    ("apps/v1", "Deployment"): {_META[0]: _META[1], 2: ("spec", _DEPLOYMENT_SPEC, False)},
    ("rbac.authorization.k8s.io/v1", "Role"): {
        _META[0]: _META[1],
        2: ("rules", _POLICY_RULE, True),
    },
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): {
        _META[0]: _META[1],
        2: ("rules", _POLICY_RULE, True),
        3: ("aggregationRule", {1: ("clusterRoleSelectors", _LABEL_SELECTOR, True)}, False),
    },
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): {
        _META[0]: _META[1],
        2: ("subjects", _SUBJECT, True),
        3: ("roleRef", _ROLE_REF, False),
    },
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): {
        _META[0]: _META[1],
        2: ("subjects", _SUBJECT, True),
        3: ("roleRef", _ROLE_REF, False),
    },
    # kubectl auth can-i [--list], kubectl auth whoami
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): {
        _META[0]: _META[1],
        2: ("spec", _ACCESS_REVIEW_SPEC, False),
    },
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): {
        _META[0]: _META[1],
        2: ("spec", {1: ("namespace", "string", False)}, False),
    },
    ("authentication.k8s.io/v1", "SelfSubjectReview"): {_META[0]: _META[1]},
}

_UNKNOWN: Schema = {
    1: ("typeMeta", {1: ("apiVersion", "string", False), 2: ("kind", "string", False)}, False),
}


def decode(body: bytes) -> JsonDict | None:
    """The JSON object a protobuf request body stands for, or ``None`` if it cannot be read
    (not an envelope, or a kind left out here).
    """
    if not body.startswith(MAGIC):
        return None
    try:
        envelope = _fields(body[len(MAGIC) :])
        type_meta = decode_message(body[len(MAGIC) :], _UNKNOWN).get("typeMeta") or {}
        api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
        schema = SCHEMAS.get((api_version, kind))
        raw = next(
            (bytes(value) for number, wire, value in envelope if number == 2 and wire == 2), b""
        )
        if schema is None:
            return None
        obj = decode_message(raw, schema)
    except (ProtobufError, UnicodeDecodeError, ValueError, OverflowError, OSError):
        return None  # unreadable (out-of-range times among them): the emulator answers 415
    return {"apiVersion": api_version, "kind": kind, **obj}
