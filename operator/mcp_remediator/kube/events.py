"""Kubernetes Events on our objects, and the clock format the API uses.

Posting an Event is best effort: a failure is logged, never fails a remediation.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any, Literal

from mcp_remediator.kube.client import ApiError, KubeApi

log = logging.getLogger(__name__)
COMPONENT = "mcp-remediator"


def now() -> str:
    """The current time in RFC 3339, second precision, UTC: as Kubernetes writes it."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


async def post_event(
    kube: KubeApi,
    obj: dict[str, Any],
    reason: str,
    message: str,
    type_: Literal["Normal", "Warning"] = "Normal",
) -> None:
    """Post a core/v1 Event about ``obj``."""
    meta = obj.get("metadata", {})
    namespace = meta.get("namespace") or "default"
    stamp = now()
    event = {
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": namespace,
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
    }
    try:
        await kube.create("v1", "events", namespace, event)
    except ApiError as exc:
        log.warning(
            "could not post event %s on %s/%s: %s", reason, namespace, meta.get("name"), exc
        )
