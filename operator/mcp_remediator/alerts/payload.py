"""Alertmanager's webhook payload (version 4) as typed models.

``WebhookPayload.parse`` raises ``PayloadError`` (answered 400) for a body Alertmanager
should not retry. Used by ``alerts.receiver``, ``alerts.ingest`` and ``tools.simulate``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mcp_remediator import records
from mcp_remediator.runbook.validation import pydantic_message


class PayloadError(ValueError):
    """A webhook body we cannot accept (answered 400: Alertmanager does not retry it)."""


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
    truncatedAlerts: int = Field(0, ge=0)
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
                f'unsupported webhook payload version {data["version"]!r}; expected "4"'
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise PayloadError(f"invalid webhook payload: {pydantic_message(exc)}") from exc
