"""Whether a runbook's guardrails let a new run start: pure, no I/O.

``evaluate`` decides from the remediation records of one runbook and group (as listed
from the cluster, so the verdict survives restarts and replicas) whether a new run may
start, or which reason the Skipped record carries. Called by ``alerts.ingest``; pure, so
that the engine can judge the runs the receiver did not create by the same rules.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp_remediator.kube.events import parse_time
from mcp_remediator.models import (
    ANNOTATION_SKIP_REASON,
    FINISHED_PHASES,
    Guardrails,
    RunbookSpec,
)

SUSPENDED = "Suspended"
CONCURRENCY_LIMIT = "ConcurrencyLimit"
COOLDOWN = "Cooldown"
RATE_LIMITED = "RateLimited"
HOUR = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class Record:
    """What the guardrails need to know about one remediation of the group."""

    name: str
    created: datetime.datetime
    phase: str
    is_run: bool
    finished: datetime.datetime | None = None

    @property
    def last_activity(self) -> datetime.datetime:
        return max(self.created, self.finished) if self.finished else self.created


def record_of(body: Mapping[str, Any], now: datetime.datetime) -> Record:
    """A ``Record`` from an McpRemediation as the API returns it.

    Not a run: a Skipped record (guardrail hit, marked by its annotation even before its
    status is written) and a run Cancelled before it started (its alert resolved first);
    neither changed anything, so neither may hold back the next alert.
    """
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    phase = status.get("phase") or "Pending"
    skipped = phase == "Skipped" or ANNOTATION_SKIP_REASON in (meta.get("annotations") or {})
    never_started = phase == "Cancelled" and not status.get("startedAt")
    return Record(
        name=meta.get("name", ""),
        created=parse_time(meta.get("creationTimestamp")) or now,
        phase=phase,
        is_run=not skipped and not never_started,
        finished=parse_time(status.get("finishedAt")) if phase in FINISHED_PHASES else None,
    )


@dataclass(frozen=True)
class Verdict:
    """Why a new run must not start: ``reason`` is the Skipped record's reason."""

    reason: str
    message: str


def _at(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def evaluate(
    runbook: str, spec: RunbookSpec, records: Iterable[Record], now: datetime.datetime
) -> Verdict | None:
    """``None`` when a new run of ``runbook`` may start now for this group, else why not.

    Checked in this order, so the reason names the most direct cause:
    ``suspend``; ``maxConcurrent`` unfinished runs; ``cooldownSeconds`` since the latest
    start or end of a run (measured from the end too, so that a run that set off its own
    alert again cannot loop); ``maxPerHour`` runs created in the last hour.
    """
    if spec.suspend:
        return Verdict(SUSPENDED, f"runbook {runbook} is suspended (spec.suspend=true)")
    guard: Guardrails = spec.guardrails
    runs = sorted((r for r in records if r.is_run), key=lambda r: (r.created, r.name))
    unfinished = [r.name for r in runs if r.phase not in FINISHED_PHASES]
    if len(unfinished) >= guard.maxConcurrent:
        return Verdict(
            CONCURRENCY_LIMIT,
            f"{len(unfinished)} run(s) of this group still unfinished "
            f"(maxConcurrent={guard.maxConcurrent}): {', '.join(unfinished[:5])}",
        )
    if runs and guard.cooldownSeconds > 0:
        latest = max(runs, key=lambda r: r.last_activity)
        until = latest.last_activity + datetime.timedelta(seconds=guard.cooldownSeconds)
        if now < until:
            return Verdict(
                COOLDOWN,
                f"run {latest.name} of this group was active at {_at(latest.last_activity)}; "
                f"cooldown of {guard.cooldownSeconds}s lasts until {_at(until)}",
            )
    last_hour = [r for r in runs if r.created > now - HOUR]
    if len(last_hour) >= guard.maxPerHour:
        return Verdict(
            RATE_LIMITED,
            f"{len(last_hour)} run(s) of this group in the last hour "
            f"(maxPerHour={guard.maxPerHour})",
        )
    return None
