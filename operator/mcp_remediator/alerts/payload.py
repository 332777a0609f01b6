"""Alertmanager's webhook payload (version 4) as typed models, and the body's JSON.

``load_json`` reads a body as JSON strictly (RFC 8259: UTF-8, no NaN or Infinity, no
number beyond a double's range) and refuses what it could only read one way among
several (duplicate keys) or what no later step could encode (lone UTF-16 surrogates) or
survive (nesting deep enough to exhaust the recursion limit). ``WebhookPayload.parse``
checks the shape. Both raise ``PayloadError`` (answered 400) for a body Alertmanager
should not retry. Used by ``alerts.receiver``, ``alerts.ingest`` and ``tools.simulate``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mcp_remediator import records
from mcp_remediator.runbook.validation import pydantic_message

UINT64_MAX = 2**64 - 1  # Alertmanager's truncatedAlerts is a uint64
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class PayloadError(ValueError):
    """A webhook body we cannot accept (answered 400: Alertmanager does not retry it)."""


def brief(value: Any, limit: int = 40) -> str:
    """A short rendering of a JSON value for an error message."""
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise PayloadError(f"body is ambiguous JSON: duplicate key {brief(key)}")
            seen.add(key)
    return data


def _no_constant(name: str) -> Any:
    raise PayloadError(f"body is not JSON: {name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise PayloadError(f"body is not JSON we accept: number {brief(text)} is out of range")
    return value


def _has_lone_surrogate(data: Any) -> bool:
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def load_json(raw: bytes) -> Any:
    """The JSON value of a webhook body; raises ``PayloadError`` saying what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(
            f"body is not JSON: not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    if text.startswith("\ufeff"):
        raise PayloadError("body is not JSON: it starts with a byte order mark")
    try:
        data = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite,
        )
    except PayloadError:
        raise
    except RecursionError:
        raise PayloadError("body is not JSON we accept: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"body is not JSON: {exc}") from None
    except ValueError as exc:  # an integer beyond Python's 4300 digits
        raise PayloadError(f"body is not JSON we accept: {str(exc).split(';')[0]}") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(data):
        raise PayloadError("body is not JSON: a \\u escape is a lone UTF-16 surrogate")
    return data


class WebhookAlert(BaseModel):
    """One alert of an Alertmanager notification."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str
    endsAt: str | None = None
    generatorURL: str | None = None
    fingerprint: str = Field(min_length=1)

    @field_validator("startsAt")
    @classmethod
    def _rfc3339(cls, value: str) -> str:
        records.canonical_time(value)
        return value


class WebhookPayload(BaseModel):
    """Alertmanager's webhook body, version 4."""

    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    alerts: list[WebhookAlert]
    groupKey: str = ""
    truncatedAlerts: int = Field(0, ge=0, le=UINT64_MAX)
    status: str = ""
    receiver: str = ""

    @classmethod
    def parse(cls, data: Any) -> WebhookPayload:
        if not isinstance(data, dict):
            raise PayloadError("the body must be a JSON object (Alertmanager webhook payload)")
        if "version" not in data:
            raise PayloadError("missing field 'version' (Alertmanager sends version \"4\")")
        if data["version"] != "4":
            raise PayloadError(
                f'unsupported webhook payload version {brief(data["version"])}; expected "4"'
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise PayloadError(f"invalid webhook payload: {pydantic_message(exc)}") from exc
