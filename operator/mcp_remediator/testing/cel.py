"""The ``x-kubernetes-validations`` (CEL) rules of a CRD's schema, evaluated as kube-apiserver
evaluates them on a write of a custom resource, with the ``cel-python`` library.

``errors(obj, schema, old)`` walks the object with its schema and, at every node that
declares rules, evaluates each with ``self`` bound to the node's value and, on an update,
``oldSelf`` to the value the node had (object fields by name, the items of
``x-kubernetes-list-type: map`` lists by their keys; other list items are not correlated).
As in Kubernetes:

* a rule that reads ``oldSelf`` (a transition rule) is evaluated only when the node has an
  old value; on a create it is skipped;
* reading a field that is not set is an error (``no such key``: rules must guard with
  ``has()``), and an error fails the write like a false rule;
* with ratcheting (``CRDValidationRatcheting``, on by default since 1.30), a node whose
  value the update left unchanged keeps its rules to itself;
* a failed rule is ``<path>: Invalid value: "<schema type>": <message>`` (its ``message``,
  or ``failed rule: <rule>``), at the node's path or ``<nil>`` at the root, its ``reason``
  and ``fieldPath`` honoured.

Simplified: the Kubernetes CEL libraries beyond standard CEL (``isURL``, ``quantity``,
``format``...) are not there (a rule calling one fails with the library's error), no cost
budget, ``messageExpression`` is evaluated but an error in it falls back to ``message``,
and an evaluation error's text is cel-python's. Without ``cel-python`` installed (it comes
with the ``test`` and ``demo`` extras) the rules are not evaluated at all:
``AVAILABLE`` says which.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

from mcp_remediator.testing.schema import DUPLICATE, FORBIDDEN, INVALID, REQUIRED, FieldError

celpy: Any
try:
    import celpy
    from celpy.adapter import json_to_cel
except ImportError:  # pragma: no cover - the test and demo extras bring it
    celpy = None

AVAILABLE = celpy is not None
JsonDict = dict[str, Any]
_MISSING: Any = object()
_REASONS = {reason: reason for reason in (INVALID, FORBIDDEN, REQUIRED, DUPLICATE)}
_OLD_SELF = re.compile(r"\boldSelf\b")


def errors(
    obj: Any, schema: JsonDict, old: Any = _MISSING, *, prefix: str = ""
) -> list[FieldError]:
    """The errors of the CEL rules of ``schema`` on ``obj`` (``old``: the stored object of
    an update)."""
    if not AVAILABLE:
        return []
    found: list[FieldError] = []
    for value, old_value, sub, path in _nodes(obj, old, schema, prefix):
        rules = sub.get("x-kubernetes-validations")
        if not rules:
            continue
        if old_value is not _MISSING and old_value == value:
            continue  # ratcheting: an unchanged value keeps its rules to itself
        for rule in rules:
            failure = _evaluate(str(rule.get("rule") or ""), value, old_value)
            if failure is not None:
                found.append(_error(rule, sub, path, failure, value, old_value))
    return found


def _nodes(
    value: Any, old: Any, schema: JsonDict | None, path: str
) -> Iterator[tuple[Any, Any, JsonDict, str]]:
    if schema is None:
        return
    yield value, old, schema, path
    if isinstance(value, dict):
        properties: JsonDict = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        old_map = old if isinstance(old, dict) else {}
        for key, item in value.items():
            child_old = old_map.get(key, _MISSING)
            if key in properties:
                child = f"{path}.{key}" if path else key
                yield from _nodes(item, child_old, properties[key], child)
            elif isinstance(additional, dict):
                yield from _nodes(item, child_old, additional, f"{path}[{key}]")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _nodes(
                item, _correlated(schema, item, old), schema["items"], f"{path}[{index}]"
            )


def _correlated(schema: JsonDict, item: Any, old: Any) -> Any:
    """The old item a ``map`` list's item stands for, by its keys (nothing for other lists)."""
    keys = schema.get("x-kubernetes-list-map-keys") or []
    if schema.get("x-kubernetes-list-type") != "map" or not keys or not isinstance(old, list):
        return _MISSING
    if not isinstance(item, dict):
        return _MISSING
    for candidate in old:
        if isinstance(candidate, dict) and all(candidate.get(k) == item.get(k) for k in keys):
            return candidate
    return _MISSING


@functools.lru_cache(maxsize=512)
def _program(expression: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(expression))


def _run(expression: str, value: Any, old: Any) -> Any:
    """The expression's value, or the exception that stopped it."""
    activation = {"self": json_to_cel(value)}
    if old is not _MISSING:
        activation["oldSelf"] = json_to_cel(old)
    try:
        return _program(expression).evaluate(activation)
    except Exception as exc:  # a compile error, or CELEvalError raised
        return exc


def _evaluate(expression: str, value: Any, old: Any) -> str | None:
    """``None`` when the rule holds (or does not apply); else why it failed: ``""`` for a
    false rule, the error's text for an error."""
    if _OLD_SELF.search(expression) is None:
        old = _MISSING
    elif old is _MISSING:
        return None  # a transition rule, and nothing to compare with
    result = _run(expression, value, old)
    if isinstance(result, BaseException):  # cel-python may also return its error
        return _error_text(result)
    return None if bool(result) else ""


def _error_text(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    text = str(args[0]) if args else str(exc)
    return text or type(exc).__name__


def _error(
    rule: JsonDict, schema: JsonDict, path: str, failure: str, value: Any, old: Any
) -> FieldError:
    where = path
    if rule.get("fieldPath"):
        where = f"{path}{rule['fieldPath']}" if path else str(rule["fieldPath"]).lstrip(".")
    message = str(rule.get("message") or f"failed rule: {rule.get('rule', '')}")
    if rule.get("messageExpression") and not failure:
        expression = str(rule["messageExpression"])
        said = _run(expression, value, old if _OLD_SELF.search(expression) else _MISSING)
        if isinstance(said, str) and said.strip():
            message = str(said)
    if failure:
        message = f"{failure} evaluating rule: {message}"
    kind = _REASONS.get(str(rule.get("reason") or "FieldValueInvalid"), INVALID)
    shown = str(schema.get("type") or "object")
    return FieldError(kind, where or "<nil>", shown, message)
