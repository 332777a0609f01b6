"""Strict validation of a document against its CRD's own schema, as ``lint`` runs it.

The API server checks a custom resource against the CRD's ``openAPIV3Schema``: wrong
types, enums, bounds and missing fields are refused (HTTP 422), and unknown fields are
pruned without a word (``x-kubernetes-preserve-unknown-fields`` aside), so a misspelled
guardrail (``maxPerHuor``) is never applied. ``lint`` is at least that strict: every
document is validated with ``jsonschema`` against the schema ``tools.crdgen`` renders from
the models (the very schema of ``crds/*.yaml``), translated from OpenAPI v3 to JSON
Schema with unknown fields made an error, and ``metadata`` checked as the API server
checks ``ObjectMeta``. Each problem names its field path (``spec.steps[0].retries``) and
the line of that field in the YAML file (from the composed node tree, ``lines``).

OpenAPI v3 versus JSON Schema: ``nullable: true`` becomes a ``null`` type,
``x-kubernetes-int-or-string`` an ``anyOf``, boolean ``exclusiveMinimum``/``Maximum``
(OpenAPI 3.0) the numeric form; other ``x-kubernetes-*`` keys, ``format``, ``default``
and descriptions do not constrain here (the CEL rules of ``x-kubernetes-validations`` are
the operator's own checks, which ``lint`` runs after this one).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from mcp_remediator.actions import REGISTRY
from mcp_remediator.models import DNS_LABEL, DNS_SUBDOMAIN
from mcp_remediator.tools import crdgen

Path = tuple[str | int, ...]

# What the API server accepts in ``metadata`` (ObjectMeta), with its own syntax rules;
# anything else there is dropped by the API server, so it is an error here.
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": DNS_SUBDOMAIN},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": DNS_LABEL},
        "labels": {
            **_STRINGS,
            "propertyNames": {"maxLength": 316, "pattern": _QUALIFIED_NAME},
            "additionalProperties": {"type": "string", "maxLength": 63, "pattern": _LABEL_VALUE},
        },
        "annotations": {**_STRINGS, "propertyNames": {"pattern": _QUALIFIED_NAME}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "uid": {"type": "string"},
        "resourceVersion": {"type": "string"},
        "generation": {"type": "integer"},
        "creationTimestamp": {},
        "deletionTimestamp": {},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "managedFields": {"type": "array"},
        "selfLink": {"type": "string"},
    },
    "additionalProperties": False,
}
_IGNORED = {"description", "default", "format", "nullable", "example", "externalDocs", "title"}


def json_schema(openapi: Mapping[str, Any]) -> dict[str, Any]:
    """A structural OpenAPI v3 schema as a strict JSON Schema (unknown fields refused)."""
    out: dict[str, Any] = {}
    for key, value in openapi.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, Mapping):
            out[key] = json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [json_schema(sub) for sub in value]
        elif key.startswith("x-kubernetes-") or key in _IGNORED:
            continue
        else:
            out[key] = value
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), bool):
            if out.pop(bound) and limit in out:
                out[bound] = out.pop(limit)
    if openapi.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if openapi.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        out.get("type") == "object"
        and "additionalProperties" not in out
        and not openapi.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def validator(kind: str) -> Draft202012Validator:
    """The strict validator of ``kind`` (McpRunbook or McpRemediation)."""
    crd = crdgen.runbook_crd() if kind == "McpRunbook" else crdgen.remediation_crd()
    schema = json_schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = OBJECT_META
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return Draft202012Validator(schema)


@dataclass(frozen=True)
class Violation:
    """One way a document breaks its schema: where, why (CamelCase) and what."""

    path: Path
    reason: str
    message: str


def show(path: Path) -> str:
    """``("spec", "steps", 0, "retries")`` → ``spec.steps[0].retries``."""
    text = ""
    for item in path:
        if isinstance(item, int):
            text += f"[{item}]"
        elif isinstance(item, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", item):
            text += f".{item}" if text else item
        else:
            text += f"[{item!r}]"
    return text or "(document)"


def _kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__  # e.g. a YAML timestamp: datetime


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _violations(error: SchemaError) -> Iterator[Violation]:
    path: Path = tuple(error.absolute_path)
    keyword, value = error.validator, error.instance
    expected: Any = error.validator_value
    if keyword == "additionalProperties" and isinstance(value, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
        for key in value:
            if key not in known:
                yield Violation((*path, key), "UnknownField", "unknown field")
    elif keyword == "required" and isinstance(value, dict):
        for key in expected:
            if key not in value:
                yield Violation((*path, key), "MissingField", "required field missing")
    elif keyword == "type":
        types = " or ".join(expected) if isinstance(expected, list) else expected
        yield Violation(
            path, "InvalidType", f"expected {types}, got {_kind_of(value)} {_shown(value)}"
        )
    elif keyword == "enum" and path[-1:] == ("action",):
        known = ", ".join(sorted(REGISTRY))
        yield Violation(path, "UnknownAction", f"unknown action {value!r} (known: {known})")
    elif keyword == "enum":
        choices = ", ".join(repr(v) for v in expected)
        yield Violation(path, "InvalidValue", f"must be one of {choices}, got {_shown(value)}")
    elif keyword in _BOUNDS:
        yield Violation(path, "InvalidValue", f"{_BOUNDS[keyword]} {expected}, got {_shown(value)}")
    elif keyword == "pattern":
        yield Violation(path, "InvalidValue", f"must match {expected}, got {_shown(value)}")
    elif keyword == "propertyNames":
        yield Violation(path, "InvalidValue", f"invalid key {_shown(value)}")
    else:
        yield Violation(path, "InvalidValue", error.message)


_BOUNDS = {
    "minimum": "must be at least",
    "maximum": "must be at most",
    "exclusiveMinimum": "must be more than",
    "exclusiveMaximum": "must be less than",
    "minLength": "must be at least this many characters:",
    "maxLength": "must be at most this many characters:",
    "minItems": "must have at least this many items:",
    "maxItems": "must have at most this many items:",
}


def violations(body: Mapping[str, Any]) -> list[Violation]:
    """Every way ``body`` (an McpRunbook or McpRemediation) breaks its CRD's schema."""
    found: dict[tuple[Path, str], Violation] = {}
    kind = "McpRunbook" if body.get("kind") == "McpRunbook" else "McpRemediation"
    for error in validator(kind).iter_errors(body):
        for violation in _violations(error):
            found.setdefault((violation.path, violation.message), violation)
    return sorted(found.values(), key=lambda v: [str(item) for item in v.path])


# -- line numbers ---------------------------------------------------------------------------

_MERGE = "tag:yaml.org,2002:merge"


def _entries(node: yaml.MappingNode) -> Iterator[tuple[yaml.Node, yaml.Node]]:
    """A mapping's (key, value) nodes, merge keys (``<<: *anchor``) expanded."""
    for key, value in node.value:
        if key.tag == _MERGE:
            merged = value.value if isinstance(value, yaml.SequenceNode) else [value]
            for item in merged:
                if isinstance(item, yaml.MappingNode):
                    yield from _entries(item)
        else:
            yield key, value


_LOADER = yaml.SafeLoader("")


def _key(node: yaml.Node) -> object:
    """The Python value of a scalar key node, as PyYAML's safe loader builds it."""
    if not isinstance(node, yaml.ScalarNode):
        return None
    try:
        return _LOADER.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError):
        return node.value
    finally:
        _LOADER.constructed_objects.clear()


def line(node: yaml.Node | None, path: Path, default: int) -> int:
    """The 1-based line of ``path`` in the document ``node``: of the key for an unknown
    or missing-from-its-parent field, else of the value; the nearest known ancestor's
    line when the path is not found there."""
    if node is None:
        return default
    found = node.start_mark.line + 1
    current: yaml.Node = node
    for item in path:
        if isinstance(current, yaml.MappingNode):
            match = [(k, v) for k, v in _entries(current) if _key(k) == item]
            if not match:
                return found
            key, current = match[-1]  # the last one wins, as when loading
            found = key.start_mark.line + 1
        elif isinstance(current, yaml.SequenceNode) and isinstance(item, int):
            if not 0 <= item < len(current.value):
                return found
            current = current.value[item]
            found = current.start_mark.line + 1
        else:
            return found
    return found


def duplicate_keys(node: yaml.Node | None, path: Path = ()) -> Iterator[tuple[Path, int]]:
    """Fields given twice in one mapping (YAML loaders keep the last silently; the API
    server refuses them): (path, line of the second)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key_node, value in node.value:
            if key_node.tag == _MERGE:
                continue
            key = _key(key_node)
            sub: Path = (*path, key if isinstance(key, str | int) else str(key))
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the loader fails on it anyway
                duplicate = False
            if duplicate:
                yield sub, key_node.start_mark.line + 1
            yield from duplicate_keys(value, sub)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from duplicate_keys(item, (*path, index))
