"""Alertmanager's webhook payload (version 4) as typed models, and the body's JSON.

``load_json`` reads a body as JSON strictly (RFC 8259: UTF-8, no NaN or Infinity, no
number beyond a double's range) and refuses what it could only read one way among
several (duplicate keys) or what no later step could encode (lone UTF-16 surrogates) or
survive (nesting deep enough to exhaust the recursion limit). ``WebhookPayload.parse``
checks the shape. Both raise ``PayloadError`` (answered 400) for a body Alertmanager
should not retry. Used by ``alerts.receiver``, ``alerts.ingest`` and ``tools.simulate``.

Alertmanager's body (``Message`` in its ``notify/webhook``) is the same version "4" from
0.25 to 0.34; later versions only added fields: ``notification_reason`` (0.32: why this
notification went out, e.g. "first notification", "repeat interval elapsed") and
``routeLabels`` (0.34). Fields the models do not declare are ignored, never refused: a
field a newer Alertmanager adds must not cost a notification (a 4xx is never retried).
What a receiver's custom ``payload`` template sends instead (Alertmanager 0.32 and later)
is JSON of any shape; a body without ``version`` and ``alerts`` is refused with a message
that says so, since no retry could make it readable.
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


def _not_webhook_v4(what: str) -> PayloadError:
    return PayloadError(
        f"the body is JSON but not an Alertmanager webhook payload (version 4): {what}. "
        "If the Alertmanager receiver's webhook_config sets `payload` (a custom template), "
        "remove it: this receiver reads only the body Alertmanager sends by default"
    )


class WebhookPayload(BaseModel):
    """Alertmanager's webhook body, version 4 (the fields the receiver uses)."""

    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    alerts: list[WebhookAlert]
    groupKey: str = ""
    truncatedAlerts: int = Field(0, ge=0, le=UINT64_MAX)
    status: str = ""
    receiver: str = ""
    notification_reason: str | None = None  # Alertmanager's own (snake_case) name

    @field_validator("notification_reason", mode="before")
    @classmethod
    def _reason_or_nothing(cls, value: Any) -> str | None:
        """Only recorded, never acted on: a value of another type is dropped, not refused."""
        return value if isinstance(value, str) else None

    def record_fields(self) -> dict[str, str]:
        """What each record of this notification keeps beside its alert in ``spec.alert``,
        under the names of our API (camelCase: ``notificationReason``)."""
        fields = {"groupKey": self.groupKey}
        if self.notification_reason is not None:
            fields["notificationReason"] = self.notification_reason
        return fields

    @classmethod
    def parse(cls, data: Any) -> WebhookPayload:
        if not isinstance(data, dict):
            raise _not_webhook_v4(f"it is {brief(data)}, not an object")
        missing = [field for field in ("version", "alerts") if field not in data]
        if missing:
            raise _not_webhook_v4(f"it has no {' and no '.join(map(repr, missing))} field")
        if data["version"] != "4":
            raise PayloadError(
                f'unsupported webhook payload version {brief(data["version"])}; expected "4"'
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise PayloadError(f"invalid webhook payload: {pydantic_message(exc)}") from exc
