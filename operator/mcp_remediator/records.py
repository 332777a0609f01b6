"""McpRemediation records: deterministic names, label values and the body builder.

``remediation_name`` is deterministic in (runbook, fingerprint, startsAt), so
Alertmanager re-sends, HA pairs and operator restarts all land on one object name;
``group_key`` hashes the ``groupBy`` label values into a label value the guardrail
queries select on; ``label_value`` makes any string a valid label value;
``remediation_body`` builds the object to create.

Pure, no I/O. Used by the receiver (``alerts``) and the engine (escalation), which both
create records, neither importing the other; ``is_alert_record`` tells the receiver's
records from the others (``admission``, ``runbook.guardrails``).
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mcp_remediator.models import LABEL_RUNBOOK

MAX_NAME = 63
DIGEST_LENGTH = 10
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:\d{2})$"
)


def canonical_time(value: str) -> str:
    """RFC 3339 in UTC with the fraction's significant digits (nanoseconds survive).

    Alertmanager replicas and re-sends format one ``startsAt`` alike in practice; this
    makes the name independent of the zone offset and trailing zeros anyway.
    """
    found = _TIME.match(value.strip())
    if found is None:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    day, clock, fraction, zone = found.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        moment = datetime.datetime.fromisoformat(f"{day}T{clock}{zone}").astimezone(datetime.UTC)
    except OverflowError:  # in range where written, out of it in UTC (9999-12-31T23:00-01:00)
        raise ValueError(f"not an RFC 3339 time in years 1 to 9999 UTC: {value!r}") from None
    digits = (fraction or "").rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{digits}" if digits else "") + "Z"


def _digest(*parts: str, length: int = DIGEST_LENGTH) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def _shorten(prefix: str, room: int) -> str:
    """``prefix`` cut to ``room`` characters, ending on a letter or digit."""
    return prefix[:room].rstrip("-.")


def remediation_name(runbook: str, fingerprint: str, starts_at: str) -> str:
    """``<runbook>-<10 hex of sha256(runbook, fingerprint, startsAt)>``, at most 63 chars.

    A long runbook name is cut (the digest still covers all of it), so the result is a
    valid DNS label and fits in a label value too.
    """
    digest = _digest(runbook, fingerprint, canonical_time(starts_at))
    return f"{_shorten(runbook, MAX_NAME - DIGEST_LENGTH - 1)}-{digest}"


def label_value(value: str) -> str:
    """``value`` itself when it is a valid label value, else a valid stand-in ending in a
    digest of it (alert names and fingerprints are arbitrary strings in Prometheus)."""
    if len(value) <= MAX_NAME and _LABEL_VALUE.match(value):
        return value
    cleaned = re.sub(r"[^-A-Za-z0-9_.]", "_", value).strip("-_.")
    head = cleaned[: MAX_NAME - DIGEST_LENGTH - 1].rstrip("-_.")
    return f"{head}-{_digest(value)}" if head else _digest(value)


def group_key(group_by: Iterable[str], labels: Mapping[str, str]) -> str:
    """16 hex identifying the throttle group: the ``groupBy`` labels and their values."""
    names = sorted(set(group_by))
    return _digest(*(f"{name}={labels.get(name, '')}" for name in names), length=16)


def is_alert_record(name: str, spec: Mapping[str, Any]) -> bool:
    """Whether ``name`` is the receiver's name for the alert occurrence in ``spec.alert`` of
    the runbook in ``spec.runbookRef``: such a record is the receiver's, judged by the
    guardrails before it was created (a copy under another name, an escalation or a run by
    hand is not)."""
    alert = spec.get("alert") or {}
    runbook = (spec.get("runbookRef") or {}).get("name")
    fingerprint, starts_at = alert.get("fingerprint"), alert.get("startsAt")
    if not all(isinstance(v, str) and v for v in (runbook, fingerprint, starts_at)):
        return False
    try:
        return name == remediation_name(str(runbook), str(fingerprint), str(starts_at))
    except ValueError:
        return False


def escalation_name(runbook: str, failed: str) -> str:
    """The escalation of run ``failed`` to ``runbook``: one name, however often it fails."""
    return f"{runbook[:52]}-{_digest(runbook, failed)}"


def remediation_body(
    name: str,
    namespace: str,
    runbook: str,
    *,
    spec: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An McpRemediation of ``runbook``, ready to create: ``spec`` gets the ``runbookRef``,
    ``labels`` the ``mcp.dese.ai/runbook`` label. Used by the receiver (one per alert
    occurrence) and by escalation."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {**(labels or {}), LABEL_RUNBOOK: label_value(runbook)},
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "kind": "McpRemediation",
        "metadata": metadata,
        "spec": {**(spec or {}), "runbookRef": {"name": runbook}},
    }
