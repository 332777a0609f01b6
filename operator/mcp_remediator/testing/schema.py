"""Custom resources checked against their CRD's structural schema, as kube-apiserver 1.32 does.

Pure functions the emulator (``emulator.py``) calls on every write of a custom resource:

* ``prune`` drops the fields the schema does not know and reports their paths
  (``spec.steps[0].foo``, sorted, as apiextensions-apiserver's pruning does), which a write
  with ``fieldValidation=Strict`` turns into a 400 (``strict_decoding_error``) and the
  default (``Warn``) into ``Warning: 299 - "unknown field \\"spec.foo\\""`` headers
  (``warning_header``); ``null`` values of non-nullable fields are dropped with them, and
  ``default`` fills ``default`` values in. A write is pruned, then defaulted, then validated.
* ``validate`` is kube-openapi's schema validator over the subset structural schemas use:
  ``type`` (an integer is a number; a whole float an integer), ``nullable``, ``enum``,
  ``required``, ``properties``, ``additionalProperties``, ``items``, ``minimum``/``maximum``
  and their ``exclusive*`` flags, ``multipleOf``, ``minLength``/``maxLength`` (in runes),
  ``pattern`` (searched, unanchored, as Go's ``MatchString``), ``minItems``/``maxItems``,
  ``minProperties``/``maxProperties``, the string ``format``s apiextensions keeps
  (``date-time``, ``date``, ``uuid``..., see ``_FORMATS``; the rest, ``int32`` and
  ``int64`` among them, are stripped as the real server strips them),
  ``x-kubernetes-int-or-string``, ``allOf``/``anyOf``/``oneOf``/``not``, the ``apiVersion``
  and ``kind`` an ``x-kubernetes-embedded-resource`` must carry, and the uniqueness of
  ``x-kubernetes-list-type: set`` items and ``map`` keys (``x-kubernetes-list-map-keys``).
  Updates ratchet (the ``CRDValidationRatcheting`` gate, on by default in 1.32): an error in
  a value the update left as it was (an object's field, a map-list item by its keys; the
  whole object) is dropped; ``/status`` writes ratchet against the stored status, as
  ``statusStrategy`` does.
* the errors are ``FieldError``s worded as ``field.Error`` renders them
  (``spec.dryRun: Invalid value: "string": spec.dryRun in body must be of type boolean:
  "string"``) and ``invalid_status`` answers them as kube-apiserver's 422 ``Status``
  (``McpRemediation.mcp.dese.ai "x" is invalid: [a, b]``, causes with their reasons).

Left out here: ``x-kubernetes-validations`` (CEL rules: ``cel.py`` evaluates them),
``uniqueItems`` and ``patternProperties`` (a structural schema may not use them), the
ObjectMeta checks of an embedded resource's ``metadata``, and Go's random map order (errors
come in the schema's property order; the real server's order among sibling fields varies
from call to call).
Of ``anyOf``/``oneOf`` failures, the errors of the first failing branch are shown, where
kube-openapi picks the branch that matched the most.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mcp_remediator.testing.authz import go_quote as _go_quote

JsonDict = dict[str, Any]

REQUIRED: Final = "FieldValueRequired"
INVALID: Final = "FieldValueInvalid"
NOT_SUPPORTED: Final = "FieldValueNotSupported"
DUPLICATE: Final = "FieldValueDuplicate"
TOO_LONG: Final = "FieldValueTooLong"
TOO_MANY: Final = "FieldValueTooMany"
TYPE_INVALID: Final = "FieldValueTypeInvalid"
FORBIDDEN: Final = "FieldValueForbidden"

_LABELS: Final = {
    REQUIRED: "Required value",
    INVALID: "Invalid value",
    NOT_SUPPORTED: "Unsupported value",
    DUPLICATE: "Duplicate value",
    TOO_LONG: "Too long",
    TOO_MANY: "Too many",
    TYPE_INVALID: "Invalid value",
    FORBIDDEN: "Forbidden",
}
_NO_VALUE: Final = (REQUIRED, TOO_LONG, FORBIDDEN)  # field.Error shows no value for these

FIELD_VALIDATION: Final = ("Ignore", "Warn", "Strict")
IN: Final = "body"

# ObjectMeta's fields: any other key of ``metadata`` is an unknown field.
_OBJECT_META: Final = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
_TYPE_META: Final = ("apiVersion", "kind", "metadata")


MISSING: Final = object()  # no value (not even null)


@dataclass(frozen=True)
class FieldError:
    """One ``field.Error``: its type (the cause's ``reason``), field path, value and detail."""

    type: str
    field: str
    value: Any = ""
    detail: str = ""

    def body(self) -> str:
        """``ErrorBody()``: the message without the field (a cause's ``message``)."""
        text = _LABELS[self.type]
        if self.type not in _NO_VALUE:
            text = f"{text}: {_go_value(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> JsonDict:
        return {"reason": self.type, "message": self.body(), "field": self.field}


def aggregate(errors: Sequence[FieldError]) -> str:
    """The message of ``ErrorList.ToAggregate()``: one error as is, more as ``[a, b]``,
    repeated messages once.
    """
    messages = list(dict.fromkeys(str(error) for error in errors))
    return messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"


def invalid_status(group: str, kind: str, name: str, errors: Sequence[FieldError]) -> JsonDict:
    """kube-apiserver's 422 ``Status`` for ``errors`` (``apierrors.NewInvalid``)."""
    qualified = f"{kind}.{group}" if group else kind
    message = f'{qualified} "{name}" is invalid'
    if errors:
        message += f": {aggregate(errors)}"
    details: JsonDict = {"name": name, "group": group, "kind": kind}
    if errors:
        details["causes"] = [error.cause() for error in errors]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Invalid",
        "details": {key: value for key, value in details.items() if value},
        "code": 422,
    }


# --- unknown fields -------------------------------------------------------------------------


def field_validation_error(options_kind: str, value: str) -> JsonDict | None:
    """The 422 of a ``fieldValidation`` the server does not know (``CreateOptions``,
    ``UpdateOptions`` or ``PatchOptions`` is the kind it names), ``None`` for a good one.
    """
    if value in ("", *FIELD_VALIDATION):
        return None
    supported = ", ".join(_go_quote(choice) for choice in sorted(("", *FIELD_VALIDATION)))
    error = FieldError(NOT_SUPPORTED, "fieldValidation", value, f"supported values: {supported}")
    return invalid_status("meta.k8s.io", options_kind, "", [error])


def unknown_messages(paths: Iterable[str]) -> list[str]:
    return [f'unknown field "{path}"' for path in paths]


def strict_decoding_error(paths: Iterable[str]) -> str:
    """``runtime.NewStrictDecodingError(...).Error()`` for unknown fields."""
    return "strict decoding error: " + ", ".join(unknown_messages(paths))


def warning_header(messages: Iterable[str]) -> str:
    """One ``Warning`` header value for several warnings (``299 - "text"``, comma-joined)."""
    return ", ".join(f'299 - "{_escape_warning(text)}"' for text in messages)


def _escape_warning(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def go_json(value: Any) -> str:
    """``json.Marshal`` of an unstructured object: sorted keys, no spaces, HTML-safe."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# --- prune and default ----------------------------------------------------------------------


def normalize(obj: JsonDict, schema: JsonDict | None) -> tuple[JsonDict, list[str]]:
    """Prune unknown fields (and non-nullable nulls), then apply defaults, as the CRD's
    structural schema says; the paths of the unknown fields come back with the object.
    ``apiVersion``, ``kind`` and ``metadata`` are kept (unknown ObjectMeta fields dropped).
    """
    if schema is None:
        return obj, []
    unknown: list[str] = []
    head = {key: obj[key] for key in _TYPE_META if key in obj}
    meta = head.get("metadata")
    if isinstance(meta, dict):
        for key in sorted(meta):
            if key not in _OBJECT_META:
                unknown.append(f"metadata.{key}")
        head["metadata"] = {key: value for key, value in meta.items() if key in _OBJECT_META}
    body = {key: value for key, value in obj.items() if key not in head}
    found: list[str] = []
    pruned = prune(body, schema, "", found)
    unknown.extend(sorted(found))
    return {**head, **default(pruned, schema)}, unknown


def _child_schema(schema: Mapping[str, Any], key: str) -> JsonDict | None:
    properties: JsonDict = schema.get("properties") or {}
    if key in properties:
        sub: JsonDict = properties[key]
        return sub
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        return additional
    if additional is True:
        return {"x-kubernetes-preserve-unknown-fields": True}
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def prune(value: Any, schema: JsonDict | None, path: str, unknown: list[str]) -> Any:
    """A copy of ``value`` without the fields ``schema`` does not know (their paths are
    appended to ``unknown``) and without ``null``s of non-nullable, non-defaulted fields.
    """
    preserve = bool(schema and schema.get("x-kubernetes-preserve-unknown-fields"))
    embedded = bool(schema and schema.get("x-kubernetes-embedded-resource"))
    if isinstance(value, dict):
        kept: JsonDict = {}
        for key, item in value.items():
            if embedded and key in _TYPE_META:
                kept[key] = item
                continue
            sub = _child_schema(schema, key) if schema is not None else None
            if sub is None:
                if preserve:
                    kept[key] = item
                else:
                    unknown.append(_join(path, key))
                continue
            if item is None and not sub.get("nullable") and "default" not in sub:
                continue
            kept[key] = prune(item, sub, _join(path, key), unknown)
        return kept
    if isinstance(value, list):
        items = schema.get("items") if schema is not None else None
        item_schema = items if isinstance(items, dict) else None
        if item_schema is None and preserve:
            return list(value)
        return [
            prune(item, item_schema, f"{path}[{index}]", unknown)
            for index, item in enumerate(value)
        ]
    return value


def default(value: Any, schema: JsonDict) -> Any:
    """``value`` with the schema's ``default``s filled in (for absent and ``null`` fields)."""
    if isinstance(value, dict):
        properties: JsonDict = schema.get("properties") or {}
        result = dict(value)
        for key, sub in properties.items():
            missing = key not in result or (result[key] is None and not sub.get("nullable"))
            if "default" in sub and missing:
                result[key] = copy.deepcopy(sub["default"])
        for key, item in list(result.items()):
            sub = _child_schema(schema, key)
            if sub is not None:
                result[key] = default(item, sub)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [default(item, schema["items"]) for item in value]
    return value


# --- validation -----------------------------------------------------------------------------


def validate(
    obj: Any, schema: JsonDict, old: Any = MISSING, *, prefix: str = "", ratchet: bool = True
) -> list[FieldError]:
    """The errors of ``obj`` against ``schema``: kube-openapi's validator (named from the
    schema's root, ``prefix`` put before the field paths, as ``/status`` writes are
    checked with the status schema under ``status``), then the embedded resources'
    ``apiVersion``/``kind`` and the uniqueness of list-type sets and maps. With ``old``
    (an update) and ``ratchet``, errors in values the update left unchanged are dropped;
    list-type errors count only when ``old`` had none.
    """
    correlated = old is not MISSING and ratchet
    errors = _Validator(prefix).node(obj, schema, "", old if correlated else MISSING)
    errors += _embedded(obj, schema, prefix)
    list_errors = _list_types(obj, schema, prefix)
    if list_errors and old is not MISSING and _list_types(old, schema, prefix):
        list_errors = []
    return errors + list_errors


def _field(prefix: str, name: str) -> str:
    name = name.removeprefix(".")
    if not prefix:
        return name
    return f"{prefix}.{name}" if name else prefix


class _Validator:
    """kube-openapi's ``SchemaValidator`` for one write, as apiextensions maps its errors."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    # Errors, worded as kube-openapi's and turned into field errors as
    # ``kubeOpenAPIResultToFieldErrors`` turns them.

    def _at(self, name: str) -> str:
        return _field(self.prefix, name)

    def type_error(self, name: str, expected: str, value: Any) -> FieldError:
        # ``%q`` of the data only when it is a string (always, here: a type or format name,
        # or the string that fails a format).
        detail = f"{name} in {IN} must be of type {expected}: {_go_quote(str(value))}"
        return FieldError(TYPE_INVALID, self._at(name), value, detail)

    def invalid(self, name: str, value: Any, message: str) -> FieldError:
        return FieldError(INVALID, self._at(name), value, f"{name} in {IN} {message}")

    def composite(self, message: str) -> FieldError:
        # Not a ``*errors.Validation``: reported at the prefix, ``<nil>`` at the root.
        return FieldError(INVALID, self.prefix or "<nil>", "", message)

    # The validators, in kube-openapi's order: type, allOf/anyOf/oneOf/not, string, format,
    # number, slice, enum, object.

    def node(self, value: Any, schema: JsonDict, name: str, old: Any) -> list[FieldError]:
        errors = self._node(value, schema, name, old)
        if errors and old is not MISSING and _json_equal(old, value):
            return []  # ratcheting: an unchanged value keeps its errors to itself
        return errors

    def _node(self, value: Any, schema: JsonDict, name: str, old: Any) -> list[FieldError]:
        types = _types(schema)
        if value is None:
            errors = self._type(value, schema, types, name)
            errors += self._enum(value, schema, name)
            return errors
        errors = self._type(value, schema, types, name)
        errors += self._combinators(value, schema, name)
        if isinstance(value, str):
            errors += self._string(value, schema, name)
            errors += self._format(value, schema, name)
        if _is_number(value):
            errors += self._number(value, schema, name)
        if isinstance(value, list):
            errors += self._slice(value, schema, name, old)
        errors += self._enum(value, schema, name)
        if isinstance(value, dict):
            errors += self._object(value, schema, name, old)
        return errors

    def _type(self, value: Any, schema: JsonDict, types: list[str], name: str) -> list[FieldError]:
        fmt = _format_of(schema)
        if not types and not fmt:
            return []
        if value is None:
            if types and "null" not in types and not schema.get("nullable"):
                return [self.type_error(name, ",".join(types), "null")]
            return []
        actual, actual_format = _json_type(value)
        float_int = actual == "number" and float(value).is_integer() and "integer" in types
        int_float = actual == "integer" and "number" in types
        if (
            not isinstance(value, (str, list))
            and fmt
            and not (actual in types or actual_format == fmt or float_int or int_float)
        ):
            return [self.type_error(name, fmt, actual_format)]
        if not ("number" in types or "integer" in types) and fmt and isinstance(value, (str, list)):
            return []
        if not (actual in types or float_int or int_float):
            return [self.type_error(name, ",".join(types), actual)]
        return []

    def _combinators(self, value: Any, schema: JsonDict, name: str) -> list[FieldError]:
        errors: list[FieldError] = []
        quoted = _go_quote(name)
        any_of = schema.get("anyOf") or []
        if any_of:
            results = [self._node(value, sub, name, MISSING) for sub in any_of]
            if all(results):
                errors.append(self.composite(f"{quoted} must validate at least one schema (anyOf)"))
                errors += results[0]
        one_of = schema.get("oneOf") or []
        if one_of:
            results = [self._node(value, sub, name, MISSING) for sub in one_of]
            valid = sum(1 for result in results if not result)
            if valid != 1:
                found = "Found none valid" if valid == 0 else f"Found {valid} valid alternatives"
                errors.append(
                    self.composite(
                        f"{quoted} must validate one and only one schema (oneOf). {found}"
                    )
                )
                if valid == 0:
                    errors += results[0]
        all_of = schema.get("allOf") or []
        if all_of:
            results = [self._node(value, sub, name, MISSING) for sub in all_of]
            for result in results:
                errors += result
            failed = sum(1 for result in results if result)
            if failed:
                tail = ". None validated" if failed == len(all_of) else ""
                errors.append(
                    self.composite(f"{quoted} must validate all the schemas (allOf){tail}")
                )
        not_schema = schema.get("not")
        if isinstance(not_schema, dict) and not self._node(value, not_schema, name, MISSING):
            errors.append(self.composite(f"{quoted} must not validate the schema (not)"))
        return errors

    def _string(self, value: str, schema: JsonDict, name: str) -> list[FieldError]:
        length = len(value)
        if "maxLength" in schema and length > schema["maxLength"]:
            return [
                FieldError(
                    TOO_LONG,
                    self._at(name),
                    "",
                    f"may not be more than {schema['maxLength']} bytes",
                )
            ]
        if "minLength" in schema and length < schema["minLength"]:
            return [
                self.invalid(name, value, f"should be at least {schema['minLength']} chars long")
            ]
        pattern = schema.get("pattern")
        if pattern:
            try:
                matched = _search(pattern, value)
            except re.error as exc:
                return [
                    self.invalid(
                        name, value, f"should match '{pattern}, but pattern is invalid: {exc}'"
                    )
                ]
            if not matched:
                return [self.invalid(name, value, f"should match '{pattern}'")]
        return []

    def _format(self, value: str, schema: JsonDict, name: str) -> list[FieldError]:
        fmt = _format_of(schema)
        check = _FORMATS.get(fmt.replace("-", "")) if fmt else None
        if check is None or check(value):
            return []
        return [self.type_error(name, fmt, value)]

    def _number(self, value: float, schema: JsonDict, name: str) -> list[FieldError]:
        errors: list[FieldError] = []
        factor = schema.get("multipleOf")
        if factor is not None:
            if factor <= 0:
                message = f"factor MultipleOf declared for {name} must be positive: "
                errors.append(
                    FieldError(INVALID, self._at(name), factor, message + _go_number(factor))
                )
            elif not _is_multiple(value, factor):
                errors.append(
                    self.invalid(name, value, f"should be a multiple of {_go_number(factor)}")
                )
        minimum = schema.get("minimum")
        if minimum is not None:
            exclusive = bool(schema.get("exclusiveMinimum"))
            bound = int(minimum) if isinstance(value, int) else minimum
            if value < bound or (exclusive and value == bound):
                word = "greater than" if exclusive else "greater than or equal to"
                errors.append(self.invalid(name, value, f"should be {word} {_go_number(bound)}"))
        maximum = schema.get("maximum")
        if maximum is not None:
            exclusive = bool(schema.get("exclusiveMaximum"))
            bound = int(maximum) if isinstance(value, int) else maximum
            if value > bound or (exclusive and value == bound):
                word = "less than" if exclusive else "less than or equal to"
                errors.append(self.invalid(name, value, f"should be {word} {_go_number(bound)}"))
        return errors

    def _slice(self, value: list[Any], schema: JsonDict, name: str, old: Any) -> list[FieldError]:
        errors: list[FieldError] = []
        items = schema.get("items")
        if isinstance(items, dict):
            olds = correlated_items(schema, value, old)
            for index, (item, old_item) in enumerate(zip(value, olds, strict=True)):
                errors += self.node(item, items, f"{name}[{index}]", old_item)
        size = len(value)
        if "minItems" in schema and size < schema["minItems"]:
            errors.append(
                self.invalid(name, size, f"should have at least {schema['minItems']} items")
            )
        if "maxItems" in schema and size > schema["maxItems"]:
            errors.append(
                FieldError(
                    TOO_MANY, self._at(name), size, f"must have at most {schema['maxItems']} items"
                )
            )
        return errors

    def _enum(self, value: Any, schema: JsonDict, name: str) -> list[FieldError]:
        allowed = schema.get("enum")
        if not allowed or any(_json_equal(value, choice) for choice in allowed):
            return []
        shown = [choice if isinstance(choice, str) else go_json(choice) for choice in allowed]
        detail = "supported values: " + ", ".join(_go_quote(choice) for choice in shown)
        return [FieldError(NOT_SUPPORTED, self._at(name), value, detail)]

    def _object(self, value: JsonDict, schema: JsonDict, name: str, old: Any) -> list[FieldError]:
        errors: list[FieldError] = []
        size = len(value)
        if "minProperties" in schema and size < schema["minProperties"]:
            errors.append(
                self.invalid(
                    name, size, f"should have at least {schema['minProperties']} properties"
                )
            )
        if "maxProperties" in schema and size > schema["maxProperties"]:
            errors.append(
                FieldError(
                    TOO_MANY,
                    self._at(name),
                    size,
                    f"must have at most {schema['maxProperties']} items",
                )
            )
        properties: JsonDict = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        old_map = old if isinstance(old, dict) else {}
        if additional is False:
            for key in value:
                if key not in properties:
                    errors.append(
                        FieldError(
                            INVALID,
                            self._at(name),
                            key,
                            f"{name}.{key} in {IN} is a forbidden property",
                        )
                    )
        elif isinstance(additional, dict):
            for key, item in value.items():
                if key not in properties:
                    errors += self.node(
                        item, additional, f"{name}.{key}", old_map.get(key, MISSING)
                    )
        for key, sub in properties.items():
            if key in value:
                child = _join(name, key)
                child_old = (
                    MISSING
                    if (not name and key in ("apiVersion", "kind"))
                    else old_map.get(key, MISSING)
                )
                errors += self.node(value[key], sub, child, child_old)
        for key in schema.get("required") or []:
            if key not in value:
                errors.append(FieldError(REQUIRED, self._at(f"{name}.{key}")))
        return errors


def _types(schema: Mapping[str, Any]) -> list[str]:
    if schema.get("x-kubernetes-int-or-string"):
        return ["integer", "string"]
    kind = schema.get("type")
    if isinstance(kind, list):
        return [str(item) for item in kind]
    return [kind] if isinstance(kind, str) and kind else []


def _format_of(schema: Mapping[str, Any]) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt.replace("-", "") in _FORMATS:
        return fmt
    return ""  # apiextensions strips the formats it does not support


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_type(value: Any) -> tuple[str, str]:
    """The OpenAPI type of a decoded JSON value and the format kube-openapi gives it."""
    if isinstance(value, bool):
        return "boolean", ""
    if isinstance(value, int):
        return "integer", "int64"
    if isinstance(value, float):
        return "number", "double"
    if isinstance(value, str):
        return "string", ""
    if isinstance(value, list):
        return "array", ""
    return "object", ""


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of decoded JSON values (``True`` is not ``1``; ``1`` is ``1.0``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _is_multiple(value: float, factor: float) -> bool:
    if isinstance(value, int) and isinstance(factor, int):
        return value % factor == 0
    try:
        quotient = value / factor if factor >= 1 else (1 / factor) * value
    except OverflowError:  # an integer beyond float64: the server decoded it as +Inf
        return False
    return math.isfinite(quotient) and float(quotient).is_integer()


def correlated_items(schema: JsonDict, items: list[Any], old: Any) -> list[Any]:
    """For each item of a ``map`` list, the item of the old list it stands for (by its keys),
    else ``MISSING``; items of other lists are not correlated, as ratcheting correlates them.
    One pass over the old list, whatever its length."""
    keys = schema.get("x-kubernetes-list-map-keys") or []
    if not isinstance(old, list) or schema.get("x-kubernetes-list-type") != "map" or not keys:
        return [MISSING] * len(items)

    def key_of(item: Any) -> str | None:
        if not isinstance(item, dict):
            return None
        # A missing key is told apart from a null one, as the real correlation does.
        parts = [[key in item, item.get(key)] for key in keys]
        return json.dumps(parts, sort_keys=True, separators=(",", ":"))

    by_key: dict[str, Any] = {}
    for candidate in old:
        found = key_of(candidate)
        if found is not None:
            by_key.setdefault(found, candidate)
    return [by_key.get(key, MISSING) if (key := key_of(item)) else MISSING for item in items]


def _python_pattern(pattern: str) -> str:
    """An RE2 pattern (Go's regexp) as Python reads it the same way: RE2's ``$`` (without
    the ``m`` flag) and ``\\z`` are the end of the text, where Python's ``$`` also matches
    before a final newline; with ``re.ASCII`` (see ``_search``), ``\\d``, ``\\w``, ``\\s``
    are ASCII as in RE2."""
    out: list[str] = []
    in_class = escaped = False
    for char in pattern:
        if escaped:
            out.append("Z" if char == "z" else char)
            escaped = False
        elif char == "\\":
            out.append(char)
            escaped = True
        elif in_class:
            out.append(char)
            in_class = char != "]"
        elif char == "[":
            out.append(char)
            in_class = True
        elif char == "$":
            out.append("\\Z")
        else:
            out.append(char)
    return "".join(out)


def _search(pattern: str, value: str) -> bool:
    return re.search(_python_pattern(pattern), value, re.ASCII) is not None


# --- embedded resources and list types --------------------------------------------------------


def _walk(value: Any, schema: JsonDict | None, path: str) -> Iterable[tuple[Any, JsonDict, str]]:
    """Every value with its schema and field path (``Key`` paths for map entries)."""
    if schema is None:
        return
    yield value, schema, path
    if isinstance(value, dict):
        properties: JsonDict = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                yield from _walk(item, properties[key], _join(path, key))
            elif isinstance(additional, dict):
                yield from _walk(item, additional, f"{path}[{key}]")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _walk(item, schema["items"], f"{path}[{index}]")


def _embedded(obj: Any, schema: JsonDict, prefix: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for value, sub, path in _walk(obj, schema, prefix):
        if not (isinstance(value, dict) and sub.get("x-kubernetes-embedded-resource")):
            continue
        for key in ("apiVersion", "kind"):
            if key not in value:
                errors.append(FieldError(REQUIRED, _join(path, key), "", "must not be empty"))
            elif not isinstance(value[key], str):
                errors.append(FieldError(INVALID, _join(path, key), value[key], "must be a string"))
            elif not value[key]:
                errors.append(FieldError(INVALID, _join(path, key), "", "must not be empty"))
    return errors


def _list_types(obj: Any, schema: JsonDict, prefix: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for value, sub, path in _walk(obj, schema, prefix):
        if not isinstance(value, list):
            continue
        list_type = sub.get("x-kubernetes-list-type")
        if list_type == "set":
            for index in _duplicates(value):
                errors.append(FieldError(DUPLICATE, f"{path}[{index}]", value[index]))
        elif list_type == "map":
            errors += _map_list(value, sub, path)
    return errors


def _duplicates(values: Sequence[Any]) -> list[int]:
    """The index of each value's second occurrence (``validateListSet``)."""
    seen: dict[str, int] = {}
    found: list[int] = []
    for index, value in enumerate(values):
        key = go_json(value) if not isinstance(value, _Key) else value.text
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 2:
            found.append(index)
    return found


@dataclass(frozen=True)
class _Key:
    text: str


def _map_list(value: list[Any], schema: JsonDict, path: str) -> list[FieldError]:
    for index, item in enumerate(value):
        if item is not None and not isinstance(item, dict):
            return [
                FieldError(
                    INVALID,
                    f"{path}[{index}]",
                    item,
                    "must be an object for an array of list-type map",
                )
            ]
    if len(value) <= 1:
        return []
    keys: list[str] = list(schema.get("x-kubernetes-list-map-keys") or [])
    identities: list[JsonDict] = [
        {key: item[key] for key in keys if key in item} if isinstance(item, dict) else {}
        for item in value
    ]
    if len(keys) == 1:
        marked = [
            identity[keys[0]] if keys[0] in identity else _Key("<unspecified>")
            for identity in identities
        ]
        return [
            FieldError(DUPLICATE, f"{path}[{index}]", _GoMap(identities[index]))
            for index in _duplicates(marked)
        ]
    return [
        FieldError(DUPLICATE, f"{path}[{index}]", _GoMap(identities[index]))
        for index in _duplicates(identities)
    ]


@dataclass(frozen=True)
class _GoMap:
    """A ``map[string]interface{}`` value, shown as Go's ``%#v`` shows it."""

    items: JsonDict


# --- Go's formatting ------------------------------------------------------------------------


def _go_number(value: float) -> str:
    """Go's ``%v`` of an int64 or a float64."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    mantissa, _, exponent = text.partition("e")
    if not exponent:
        return text
    exp = int(exponent)
    if -4 <= exp < 21:
        return format(value, "f").rstrip("0").rstrip(".")
    return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _go_value(value: Any) -> str:
    """How ``field.Error`` shows a bad value."""
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_number(value):
        return _go_number(value)
    if isinstance(value, str):
        return _go_quote(value)
    return _go_syntax(value)


def _go_syntax(value: Any) -> str:
    """Go's ``%#v`` of an unstructured value."""
    if isinstance(value, _GoMap):
        value = value.items
    if value is None:
        return "interface {}(nil)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_number(value)
    if isinstance(value, str):
        return _go_quote(value)
    if isinstance(value, list):
        return "[]interface {}{" + ", ".join(_go_syntax(item) for item in value) + "}"
    items = ", ".join(f"{_go_quote(key)}:{_go_syntax(value[key])}" for key in sorted(value))
    return "map[string]interface {}{" + items + "}"


# --- formats (strfmt's checks for those apiextensions keeps) ----------------------------------

_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)?$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UUID = re.compile(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$")
_HOSTNAME = re.compile(
    r"^([a-zA-Z0-9]((-?[a-zA-Z0-9]{0,62})?)|"
    r"([a-zA-Z0-9](([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.)){1,}([a-zA-Z]){2,63})$"
)
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$|^([0-9A-Fa-f]{4}\.){2}[0-9A-Fa-f]{4}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_DURATION = re.compile(r"^(\s*[-+]?\d+(\.\d+)?\s*[a-zA-Zµ]+\s*)+$")


def _ip(version: int) -> Any:
    def check(text: str) -> bool:
        try:
            return ipaddress.ip_address(text).version == version
        except ValueError:
            return False

    return check


def _cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return "/" in text


def _byte(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _uuid_version(version: int) -> Any:
    def check(text: str) -> bool:
        if not _UUID.match(text):
            return False
        return uuid.UUID(text.replace("-", "")).version == version

    return check


def _uri(text: str) -> bool:
    return bool(re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|/)\S*$", text))


_FORMATS: Final[dict[str, Any]] = {
    "datetime": lambda text: bool(_DATE_TIME.match(text)),
    "date": lambda text: bool(_DATE.match(text)),
    "uuid": lambda text: bool(_UUID.match(text)),
    "uuid3": _uuid_version(3),
    "uuid4": _uuid_version(4),
    "uuid5": _uuid_version(5),
    "ipv4": _ip(4),
    "ipv6": _ip(6),
    "cidr": _cidr,
    "mac": lambda text: bool(_MAC.match(text)),
    "hostname": lambda text: bool(_HOSTNAME.match(text)),
    "email": lambda text: bool(_EMAIL.match(text)),
    "byte": _byte,
    "uri": _uri,
    "duration": lambda text: bool(_DURATION.match(text)),
    "password": lambda text: True,
    "bsonobjectid": lambda text: bool(re.fullmatch(r"[0-9a-fA-F]{24}", text)),
    "isbn": lambda text: True,
    "isbn10": lambda text: True,
    "isbn13": lambda text: True,
    "creditcard": lambda text: True,
    "ssn": lambda text: bool(re.fullmatch(r"\d{3}[- ]?\d{2}[- ]?\d{4}", text)),
    "hexcolor": lambda text: bool(re.fullmatch(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})", text)),
    "rgbcolor": lambda text: bool(
        re.fullmatch(r"rgb\(\s*\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}\s*\)", text)
    ),
}
