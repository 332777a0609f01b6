"""The operator's in-memory view of its McpRemediations, fed by one list-then-watch.

``RecordIndex`` keeps one compact ``Entry`` per record — enough to deduplicate alert
occurrences, count a group's runs for the guardrails, schedule unfinished runs and expire
finished ones — and the full object only while the run is unfinished (or its escalation
is still to be created). So the cost of a record that has finished is a few hundred bytes
of memory and no API request at all, at restart or ever, until its TTL deletes it.

Fed by ``kube.informer.Informer`` (``apply``/``listed``) and by the writers themselves
(``apply`` of the object a write returned, so that the next decision sees it before the
watch echoes it); of two versions of one object the higher ``resourceVersion`` wins.

When a record may go (``due``): ``ttlSecondsAfterFinished`` (default
``MCP_REMEDIATION_TTL_SECONDS``) after it finished — and, for a record of an alert
occurrence, after its alert resolved too (``status.alertResolvedAt``): Alertmanager
re-sends a firing alert every ``repeat_interval`` with the same fingerprint and
``startsAt``, and as long as its record exists the re-send is a duplicate. Keeping the
record for the alert's lifetime is what makes deduplication survive restarts without a
second store; an alert whose resolution never arrives (``send_resolved: false``) keeps its
record at most ``MCP_REMEDIATION_UNRESOLVED_TTL_SECONDS`` after its creation. A record whose
escalation is not created yet never goes.

Pure bookkeeping, no I/O. Used by the executor (scheduling, admission, the TTL sweeper)
and by the receiver (deduplication and the guardrails' pre-judgement).
"""

from __future__ import annotations

import datetime
import heapq
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mcp_remediator import records
from mcp_remediator.kube.events import parse_time
from mcp_remediator.models import FINISHED_PHASES, GROUP, LABEL_GROUP
from mcp_remediator.runbook import guardrails

Key = tuple[str, str]
LEGACY_FINALIZER = f"{GROUP}/finalizer"
Listener = Callable[["Entry | None", "Entry | None"], None]  # (old, new); new None: deleted


def _version(meta: Mapping[str, Any]) -> int:
    value = str(meta.get("resourceVersion") or "")
    return int(value) if value.isdigit() else 0


@dataclass(slots=True)
class Entry:
    """What the operator needs to know about one McpRemediation."""

    namespace: str
    name: str
    uid: str
    version: int
    runbook: str | None
    group: str | None
    """The ``mcp.dese.ai/group`` label (the receiver's records and admitted runs)."""
    labels: dict[str, str] | None
    """The run's labels, kept only for a runbook run without the group label (a run by
    hand, an escalation not admitted yet), whose group depends on the runbook."""
    record: guardrails.Record
    phase: str
    started: bool
    """Admitted by an executor: ``status.plan`` is set."""
    skip: bool
    alert: bool
    """The receiver's record of an alert occurrence (``records.is_alert_record``)."""
    created: datetime.datetime
    finished_at: datetime.datetime | None
    resolved_at: datetime.datetime | None
    ttl: int | None
    escalation_pending: bool
    finalizers: tuple[str, ...]
    deleting: bool
    body: dict[str, Any] | None
    """The whole object, while there is work left on it."""

    @property
    def legacy_finalizer(self) -> bool:
        """Carries ``mcp.dese.ai/finalizer``, which versions before the executor added
        (Kopf's, for a per-record daemon): removed before the record is deleted."""
        return LEGACY_FINALIZER in self.finalizers

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES

    @property
    def needs_work(self) -> bool:
        return not self.finished or self.escalation_pending

    def due(self, default_ttl: int, unresolved_ttl: int) -> datetime.datetime | None:
        """When the record may be deleted; ``None`` while it must stay."""
        if not self.finished or self.escalation_pending:
            return None
        ttl = default_ttl if self.ttl is None else self.ttl
        finished = self.finished_at or self.created
        if self.alert and self.resolved_at is None:
            kept = datetime.timedelta(seconds=max(unresolved_ttl, ttl))
            return max(self.created + kept, finished + datetime.timedelta(seconds=ttl))
        last = max(finished, self.resolved_at) if self.resolved_at else finished
        return last + datetime.timedelta(seconds=ttl)


def entry_of(body: dict[str, Any], now: datetime.datetime) -> Entry:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    labels = meta.get("labels") or {}
    phase = str(status.get("phase") or "Pending")
    runbook = (spec.get("runbookRef") or {}).get("name") if isinstance(spec, dict) else None
    name = str(meta.get("name") or "")
    group = labels.get(LABEL_GROUP)
    run_labels = None
    if runbook and not group:
        alert_labels = (spec.get("alert") or {}).get("labels") or {}
        run_labels = {**alert_labels, **(spec.get("labels") or {})}
    escalated = status.get("escalatedTo") or {}
    ttl = spec.get("ttlSecondsAfterFinished")
    finished = phase in FINISHED_PHASES
    pending = finished and bool(escalated.get("name")) and not escalated.get("created")
    return Entry(
        namespace=str(meta.get("namespace") or ""),
        name=name,
        uid=str(meta.get("uid") or ""),
        version=_version(meta),
        runbook=str(runbook) if isinstance(runbook, str) and runbook else None,
        group=str(group) if group else None,
        labels=run_labels,
        record=guardrails.record_of(body, now),
        phase=phase,
        started=bool(status.get("plan")),
        skip=guardrails.skip_marked(body),
        alert=records.is_alert_record(name, spec if isinstance(spec, dict) else {}),
        created=parse_time(meta.get("creationTimestamp")) or now,
        finished_at=parse_time(status.get("finishedAt")),
        resolved_at=parse_time(status.get("alertResolvedAt")),
        ttl=int(ttl) if isinstance(ttl, int) else None,
        escalation_pending=pending,
        finalizers=tuple(str(f) for f in meta.get("finalizers") or ()),
        deleting=bool(meta.get("deletionTimestamp")),
        body=body if (not finished or pending) else None,
    )


class RecordIndex:
    """Every McpRemediation the operator watches, as an ``Entry``."""

    def __init__(self, *, default_ttl: int, unresolved_ttl: int):
        self.default_ttl = default_ttl
        self.unresolved_ttl = unresolved_ttl
        self._entries: dict[Key, Entry] = {}
        self._groups: dict[tuple[str, str, str | None], set[Key]] = {}
        self._due: list[tuple[datetime.datetime, str, str, int]] = []
        self.listeners: list[Listener] = []
        self.synced = False

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, namespace: str, name: str) -> Entry | None:
        return self._entries.get((namespace, name))

    def apply(self, event_type: str | None, body: dict[str, Any]) -> Entry | None:
        """Take a listed or watched object, or one a write returned (newest wins)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        old = self._entries.get(key)
        version = _version(meta)
        if old is not None and (version < old.version or (version == old.version > 0)):
            return old  # older, or the watch's echo of a write already applied
        if event_type == "DELETED":
            self._remove(key)
            return None
        entry = entry_of(body, datetime.datetime.now(datetime.UTC))
        if old is not None:
            self._ungroup(old)
        self._entries[key] = entry
        self._groups.setdefault(self._bucket(entry), set()).add(key)
        due = entry.due(self.default_ttl, self.unresolved_ttl)
        if due is not None:
            heapq.heappush(self._due, (due, key[0], key[1], entry.version))
        for listener in self.listeners:
            listener(old, entry)
        return entry

    def listed(self, namespace: str | None, keys: set[Key]) -> None:
        """A (re)list found ``keys`` (in ``namespace``, or all): the others are gone."""
        gone = [
            key
            for key in self._entries
            if key not in keys and (namespace is None or key[0] == namespace)
        ]
        for key in gone:
            self._remove(key)

    def _remove(self, key: Key) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._ungroup(old)
            for listener in self.listeners:
                listener(old, None)

    @staticmethod
    def _bucket(entry: Entry) -> tuple[str, str, str | None]:
        return (entry.namespace, entry.runbook or "", entry.group)

    def _ungroup(self, entry: Entry) -> None:
        bucket = self._groups.get(self._bucket(entry))
        if bucket is not None:
            bucket.discard(entry.key)
            if not bucket:
                del self._groups[self._bucket(entry)]

    def of_group(
        self, namespace: str, runbook: str, group: str, group_by: list[str]
    ) -> list[Entry]:
        """The records of ``runbook``'s ``group``: labelled with it, or unlabelled runs of
        the runbook whose labels make that group."""
        keys = set(self._groups.get((namespace, runbook, group), ()))
        for key in self._groups.get((namespace, runbook, None), ()):
            entry = self._entries[key]
            if records.group_key(group_by, entry.labels or {}) == group:
                keys.add(key)
        return [self._entries[key] for key in keys]

    def legacy(self) -> list[Entry]:
        """Records still held by the finalizer of an earlier version while being deleted."""
        return [e for e in self._entries.values() if e.legacy_finalizer and e.deleting]

    def working(self) -> Iterator[Entry]:
        """The records with work left: unfinished runs, escalations to create."""
        return (entry for entry in list(self._entries.values()) if entry.needs_work)

    def expired(self, now: datetime.datetime, limit: int) -> list[Entry]:
        """Up to ``limit`` records due for deletion at ``now`` (each returned once)."""
        found: list[Entry] = []
        while self._due and self._due[0][0] <= now and len(found) < limit:
            _, namespace, name, version = heapq.heappop(self._due)
            entry = self._entries.get((namespace, name))
            if entry is not None and entry.version == version:
                found.append(entry)
        return found

    def next_due(self) -> datetime.datetime | None:
        return self._due[0][0] if self._due else None


class RunbookStore:
    """The watched McpRunbooks as the API returned them (a few, so whole objects): the
    engine plans runs from them and the executor validates them, without a GET each."""

    def __init__(self) -> None:
        self._bodies: dict[Key, dict[str, Any]] = {}
        self._gone: dict[Key, int] = {}

    def apply(self, event_type: str | None, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Store a watched or written runbook (newest wins); the stored one, ``None`` when
        deleted or older than what is stored."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        version = _version(meta)
        known = self._bodies.get(key)
        floor = _version(known["metadata"]) if known is not None else self._gone.get(key, -1)
        if version and version < floor:
            return None
        if event_type == "DELETED":
            self._bodies.pop(key, None)
            self._gone[key] = version
            return None
        self._gone.pop(key, None)
        self._bodies[key] = dict(body)
        return self._bodies[key]

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._bodies.get((namespace, name))

    def all(self) -> list[dict[str, Any]]:
        return list(self._bodies.values())
