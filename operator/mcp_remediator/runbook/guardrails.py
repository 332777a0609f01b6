"""Whether a runbook's guardrails let a new run start: pure, no I/O.

``evaluate`` decides from the remediation records of one runbook and group (as listed
from the cluster, so the verdict survives restarts and replicas) whether a new run may
start, or which reason the Skipped record carries. Called by ``alerts.ingest`` for each
alert occurrence, now, before it creates the record.

``admit`` judges by the same rules a run that already exists but that the receiver did
not judge (created by hand or by escalation; see ``admission``): as the receiver would
have judged it when it was created, against the records created before it (by
``creationTimestamp``, then name) as they stood then.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from mcp_remediator import records
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
    judged: bool = True
    """False for a run not admitted by anyone yet (by hand or escalated, still Pending
    without a plan): ``admit`` judges it before counting it."""

    @property
    def last_activity(self) -> datetime.datetime:
        return max(self.created, self.finished) if self.finished else self.created

    @property
    def order(self) -> tuple[datetime.datetime, str]:
        """Which of two records came first: creation time, then name (unique)."""
        return (self.created, self.name)

    def as_of(self, moment: datetime.datetime) -> Record:
        """The record as it stood at ``moment``: one that finished then or later (times
        have whole seconds) was still unfinished."""
        if self.finished is not None and self.finished < moment:
            return self
        if self.phase in FINISHED_PHASES:
            return replace(self, phase="Running", finished=None)
        return self


def skip_marked(body: Mapping[str, Any]) -> bool:
    """Whether the record carries the skip annotations (a guardrail hit, decided before its
    status was written)."""
    return ANNOTATION_SKIP_REASON in ((body.get("metadata") or {}).get("annotations") or {})


def record_of(body: Mapping[str, Any], now: datetime.datetime) -> Record:
    """A ``Record`` from an McpRemediation as the API returns it.

    Not a run: a Skipped record (guardrail hit, marked by its annotation even before its
    status is written) and a run Cancelled before it started (its alert resolved first);
    neither changed anything, so neither may hold back the next alert.

    Not judged yet: a record still Pending without a plan that is none of the receiver's
    (``records.is_alert_record``) and carries no skip annotation.
    """
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    phase = status.get("phase") or "Pending"
    skipped = phase == "Skipped" or ANNOTATION_SKIP_REASON in (meta.get("annotations") or {})
    never_started = phase == "Cancelled" and not status.get("startedAt")
    name = meta.get("name", "")
    judged = (
        skipped
        or phase != "Pending"
        or bool(status.get("plan"))
        or records.is_alert_record(name, body.get("spec") or {})
    )
    return Record(
        name=name,
        created=parse_time(meta.get("creationTimestamp")) or now,
        phase=phase,
        is_run=not skipped and not never_started,
        finished=parse_time(status.get("finishedAt")) if phase in FINISHED_PHASES else None,
        judged=judged,
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


def _at_creation(
    runbook: str, spec: RunbookSpec, earlier: Iterable[Record], record: Record
) -> Verdict | None:
    """``evaluate`` for ``record`` at its creation, the ``earlier`` records as they were."""
    as_then = [r.as_of(record.created) for r in earlier]
    return evaluate(runbook, spec, as_then, record.created)


def _decided_alongside(record: Record, candidate: Record) -> bool:
    """A record judged already, created in the candidate's second (times have whole
    seconds: which came first is unknown, but it did not wait for the candidate)."""
    return record.judged and record.created == candidate.created and record.name != candidate.name


def admit(
    runbook: str, spec: RunbookSpec, others: Iterable[Record], candidate: Record
) -> Verdict | None:
    """``None`` when ``candidate``, an existing run of ``runbook`` and its group that the
    receiver did not judge, may start; else why not.

    It is judged as the receiver would have judged it when it was created: against those
    of the group's ``others`` created before it (``Record.order``: creation time, then
    name, so that of two runs created in the same second the same one counts as the
    earlier, whichever is judged first), as each stood then (``Record.as_of``), at its
    creation time. An earlier run not judged yet is judged first, the same way, and counts
    only if it may start: the verdicts do not depend on the order the engine takes them in.
    A record judged already (the receiver's) that was created in the same second counts
    too, whatever its name: it was admitted without counting the candidate.
    """
    earlier = sorted(
        (r for r in others if r.order < candidate.order or _decided_alongside(r, candidate)),
        key=lambda r: r.order,
    )
    decided: list[Record] = []
    for record in earlier:
        if record.is_run and not record.judged:
            if _at_creation(runbook, spec, decided, record) is not None:
                record = replace(record, is_run=False)
        decided.append(record)
    return _at_creation(runbook, spec, decided, candidate)
