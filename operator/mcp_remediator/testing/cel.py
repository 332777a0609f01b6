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
* with ratcheting (``CRDValidationRatcheting``, on by default since 1.30), a rule without
  ``oldSelf`` that is false on a value the update left unchanged is let through (transition
  rules and evaluation errors still count);
* a failed rule is ``<path>: Invalid value: "<schema type>": <message>`` (its ``message``,
  or ``failed rule: <rule>``), at the node's path or ``<nil>`` at the root, its ``reason``
  and ``fieldPath`` honoured; an evaluation error is ``<error> evaluating rule: <message or
  rule>`` at the node; an integer beyond int64 is a double, as the server decodes JSON.

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

from mcp_remediator.testing.schema import (
    DUPLICATE,
    FORBIDDEN,
    INVALID,
    MISSING,
    REQUIRED,
    FieldError,
    correlated_items,
)

celpy: Any
try:
    import celpy
    from celpy.adapter import json_to_cel
except ImportError:  # pragma: no cover - the test and demo extras bring it
    celpy = None

AVAILABLE = celpy is not None
JsonDict = dict[str, Any]
_REASONS = {
    reason: reason for reason in (INVALID, FORBIDDEN, REQUIRED, DUPLICATE)
}  # others: Invalid
_OLD_SELF = re.compile(r"\boldSelf\b")


def errors(obj: Any, schema: JsonDict, old: Any = MISSING, *, prefix: str = "") -> list[FieldError]:
    """The errors of the CEL rules of ``schema`` on ``obj`` (``old``: the stored object of
    an update)."""
    if not AVAILABLE:
        return []
    found: list[FieldError] = []
    for value, old_value, sub, path in _nodes(obj, old, schema, prefix):
        rules = sub.get("x-kubernetes-validations")
        if not rules:
            continue
        unchanged = old_value is not MISSING and old_value == value
        for rule in rules:
            expression = str(rule.get("rule") or "")
            failure = _evaluate(expression, value, old_value)
            if failure is None:
                continue
            if unchanged and failure == "" and not _OLD_SELF.search(expression):
                continue  # ratcheting: a value the update left as it was may keep failing
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
            child_old = old_map.get(key, MISSING)
            if key in properties:
                child = f"{path}.{key}" if path else key
                yield from _nodes(item, child_old, properties[key], child)
            elif isinstance(additional, dict):
                yield from _nodes(item, child_old, additional, f"{path}[{key}]")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        olds = correlated_items(schema, value, old)
        for index, (item, old_item) in enumerate(zip(value, olds, strict=True)):
            yield from _nodes(item, old_item, schema["items"], f"{path}[{index}]")


@functools.lru_cache(maxsize=512)
def _program(expression: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(expression))


def _run(expression: str, value: Any, old: Any) -> Any:
    """The expression's value, or the exception that stopped it."""
    try:
        activation = {"self": json_to_cel(_as_decoded(value))}
        if old is not MISSING:
            activation["oldSelf"] = json_to_cel(_as_decoded(old))
        return _program(expression).evaluate(activation)
    except Exception as exc:  # a compile error, CELEvalError, a value CEL cannot hold
        return exc


def _as_decoded(value: Any) -> Any:
    """JSON as the API server decodes it: an integer beyond int64 is a float64."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return float(value)
    if isinstance(value, dict):
        return {key: _as_decoded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_decoded(item) for item in value]
    return value


def _evaluate(expression: str, value: Any, old: Any) -> str | None:
    """``None`` when the rule holds (or does not apply); else why it failed: ``""`` for a
    false rule, the error's text for an error."""
    if _OLD_SELF.search(expression) is None:
        old = MISSING
    elif old is MISSING:
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
    shown = str(schema.get("type") or "object")
    if failure:  # an evaluation error: at the node, naming the message or else the rule
        said = str(rule.get("message") or rule.get("rule", ""))
        return FieldError(INVALID, path or "<nil>", shown, f"{failure} evaluating rule: {said}")
    where = path
    if rule.get("fieldPath"):
        where = f"{path}{rule['fieldPath']}" if path else str(rule["fieldPath"]).lstrip(".")
    message = str(rule.get("message") or f"failed rule: {rule.get('rule', '')}")
    if rule.get("messageExpression") and not failure:
        expression = str(rule["messageExpression"])
        said = _run(expression, value, old if _OLD_SELF.search(expression) else MISSING)
        if isinstance(said, str) and said.strip():
            message = str(said)
    kind = _REASONS.get(str(rule.get("reason") or "FieldValueInvalid"), INVALID)
    return FieldError(kind, where or "<nil>", shown, message)
