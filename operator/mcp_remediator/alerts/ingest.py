"""From an Alertmanager notification to McpRemediation records: the receiver's logic.

``AlertIngestor.ingest`` takes a parsed webhook payload (version 4) and, for each alert
and each runbook it matches (``RunbookCache``, whose matching also routes by namespace: a
runbook outside the trusted namespaces takes only alerts of its own namespace; an alert no
runbook takes is counted ``unmatched``):

- **firing**: creates one McpRemediation named ``records.remediation_name`` (runbook,
  fingerprint, startsAt) with the labels ``mcp.dese.ai/runbook``, ``/alertname``,
  ``/fingerprint`` and ``/group``, and the alert in ``spec.alert`` with the notification's
  ``groupKey`` and, from Alertmanager 0.32 on, its ``notificationReason``. A name that
  already exists (409, or one this process has already seen) is a *duplicate*:
  Alertmanager re-sends, HA pairs and restarts give exactly one record per alert
  occurrence. The operator's watch-fed index
  (``index.RecordIndex``) answers both questions without a request — does the record
  exist, which records has the group — so a new alert costs one request, the create (the
  API's 409 on the deterministic name stays the backstop for what the watch has not shown
  yet; without an index, or before it is listed, the group's records are listed by
  runbook and group label); ``guardrails.evaluate`` applies the guardrails; a hit
  creates the record anyway, marked with the skip annotations (the engine finishes such
  records as Skipped) and immediately patched to phase ``Skipped``
  with the created resourceVersion as precondition (a 409 means the engine was first).
  Skipped records are bounded per runbook per minute; beyond, the hit is counted in the
  metrics and one Warning Event per minute goes to the runbook.
- **resolved**: a record still Pending or AwaitingApproval becomes ``Cancelled``
  (``AlertResolved``) under a resourceVersion precondition (re-read and decide again on
  409); any other gets ``status.alertResolvedAt``.

Judge-then-create runs under a lock per (runbook, group) so that one process never
admits two runs where the guardrails allow one; two replicas receiving different alerts
of one group in the same instant may both create theirs, and the executor, which judges
every run again over the runs it has started, then starts only what the guardrails allow.

Runbook ``status.lastTriggeredAt`` and ``counters`` (``triggered``: matching alert
occurrences; ``skipped``: those the guardrails stopped) are updated best effort, batched
per runbook by ``flush_counters``.

An unexpected error of one alert × runbook pair is its outcome ``failed`` (logged by the
exception's type), never an error answer: only an unreachable Kubernetes API makes the
notification fail (``ApiUnavailable``, 503), so that Alertmanager retries what a retry can
fix.

Used by ``receiver`` (HTTP) and the ingestion benchmark; the Kopf handlers feed the cache.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from mcp_remediator import records, redact
from mcp_remediator.alerts.cache import CachedRunbook, RunbookCache
from mcp_remediator.alerts.payload import WebhookAlert, WebhookPayload
from mcp_remediator.errors import Refused
from mcp_remediator.index import RecordIndex
from mcp_remediator.kube.client import ApiError, KubeApi
from mcp_remediator.kube.events import now, post_event
from mcp_remediator.kube.status import Conflict, patch_status, retry_on_conflict
from mcp_remediator.metrics import OperatorMetrics
from mcp_remediator.models import (
    ANNOTATION_SKIP_MESSAGE,
    ANNOTATION_SKIP_REASON,
    API_VERSION,
    LABEL_ALERTNAME,
    LABEL_FINGERPRINT,
    LABEL_GROUP,
    LABEL_RUNBOOK,
    REMEDIATIONS,
    RUNBOOKS,
)
from mcp_remediator.runbook import guardrails
from mcp_remediator.settings import Settings

log = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]
Outcome = Literal[
    "created",
    "duplicates",
    "skipped",
    "skippedUnrecorded",
    "unmatched",
    "cancelled",
    "resolved",
    "resolvedWithoutRecord",
    "failed",
]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
CANCELLABLE = frozenset({"Pending", "AwaitingApproval"})
ALERT_RESOLVED = "AlertResolved"
KNOWN_NAMES = 100_000  # names known to exist: about 10 MB, spares the API every re-send
# Alert × runbook pairs in progress at once, over all requests: more only queues in the
# HTTP client's pool, whose bookkeeping grows with the queue (quadratically, in httpcore).
PARALLEL_PAIRS = 8


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# -- ingestion -------------------------------------------------------------------------


class ApiUnavailable(Exception):
    """The Kubernetes API could not be reached; the whole notification must be retried."""


@dataclass
class Summary:
    """What became of a notification's alerts: one outcome per alert × runbook, and
    ``unmatched`` once per alert that matched no runbook."""

    alerts: int = 0
    truncated: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    remediations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "alerts": self.alerts,
            "truncated": self.truncated,
            **self.counts,
            "remediations": self.remediations,
        }


@dataclass
class _Tally:
    triggered: int = 0
    skipped: int = 0
    last: str = ""


class AlertIngestor:
    """Turns notifications into records; one per operator process."""

    def __init__(
        self,
        settings: Settings,
        kube: KubeApi,
        metrics: OperatorMetrics,
        *,
        clock: Clock = utc_now,
        index: RecordIndex | None = None,
    ):
        self.settings = settings
        self.kube = kube
        self.index = index
        self.metrics = metrics
        self.clock = clock
        self.runbooks = RunbookCache(settings)
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._locks: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._skip_windows: dict[tuple[str, str], tuple[datetime.datetime, int]] = {}
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._gate = asyncio.Semaphore(PARALLEL_PAIRS)

    async def warm(self) -> None:
        """Fill the runbook cache from a LIST (raises ``ApiError`` when that fails)."""
        namespaces: list[str | None] = list(self.settings.watch_namespaces) or [None]
        for namespace in namespaces:
            for body in await self.kube.list(API_VERSION, RUNBOOKS, namespace):
                self.runbooks.apply(None, body)
        self.runbooks.warm = True
        log.info("runbook cache warm: %d valid runbooks", len(self.runbooks))

    async def ingest(self, payload: WebhookPayload) -> Summary:
        """Handle one notification; raises ``ApiUnavailable`` when it must be retried."""
        summary = Summary(alerts=len(payload.alerts), truncated=payload.truncatedAlerts)
        if payload.truncatedAlerts:
            self.metrics.truncated.inc(payload.truncatedAlerts)
            log.warning(
                "Alertmanager left %d alerts out of notification %s (max_alerts)",
                payload.truncatedAlerts,
                payload.groupKey,
            )
        notification = payload.record_fields()
        pairs: list[tuple[WebhookAlert, CachedRunbook]] = []
        for alert in payload.alerts:
            matched = self.runbooks.match(alert.labels)
            if not matched:
                self._count(summary, alert.status, "unmatched")
            pairs.extend((alert, runbook) for runbook in matched)

        async def one(alert: WebhookAlert, runbook: CachedRunbook) -> None:
            async with self._gate:
                outcome, name = await self._pair(alert, runbook, notification)
            self._count(summary, alert.status, outcome)
            if outcome == "created":
                summary.remediations.append(f"{runbook.namespace}/{name}")

        results = await asyncio.gather(*(one(a, r) for a, r in pairs), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        unavailable = [e for e in errors if isinstance(e, ApiError)]
        if unavailable:
            raise ApiUnavailable(str(unavailable[0])) from unavailable[0]
        if errors:
            raise errors[0]
        return summary

    def _count(self, summary: Summary, status: str, outcome: Outcome) -> None:
        summary.counts[outcome] += 1
        self.metrics.alerts.labels(status, outcome).inc()

    async def _pair(
        self, alert: WebhookAlert, runbook: CachedRunbook, notification: dict[str, str]
    ) -> tuple[Outcome, str]:
        name = records.remediation_name(runbook.name, alert.fingerprint, alert.startsAt)
        try:
            if alert.status == "firing":
                return await self._fire(alert, runbook, name, notification), name
            return await self._resolve(runbook, name), name
        except ApiError as exc:
            if exc.transient and exc.status != 409:
                raise
            log.error("alert %s, runbook %s: %s", alert.fingerprint, runbook.name, exc)
        except Refused as exc:
            log.error("alert %s, runbook %s: %s", alert.fingerprint, runbook.name, exc.message)
        except Exception as exc:
            # A bug, or a record nobody foresaw: this pair fails, counted and logged by type
            # (its text may hold secrets); a 5xx would only make Alertmanager resend it.
            log.error(
                "alert %s, runbook %s: failed unexpectedly (%s)\n%s",
                alert.fingerprint,
                runbook.name,
                redact.exception_type(exc),
                redact.traceback_without_text(exc),
            )
        return "failed", name

    # -- firing ------------------------------------------------------------------------

    def _remember(self, key: tuple[str, str]) -> None:
        self._known[key] = None
        self._known.move_to_end(key)
        if len(self._known) > KNOWN_NAMES:
            self._known.popitem(last=False)

    def _lock(self, key: tuple[str, str, str]) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def _fire(
        self,
        alert: WebhookAlert,
        runbook: CachedRunbook,
        name: str,
        notification: dict[str, str],
    ) -> Outcome:
        key = (runbook.namespace, name)
        if key in self._known or self._indexed(key):
            return "duplicates"
        group = records.group_key(runbook.spec.guardrails.groupBy, alert.labels)
        async with self._lock((runbook.namespace, runbook.name, group)):
            if self._indexed(key):
                return "duplicates"
            moment = self.clock()
            existing = await self._group_records(runbook, group, moment)
            if any(r.name == name for r in existing):
                self._remember(key)
                return "duplicates"
            verdict = guardrails.evaluate(runbook.name, runbook.spec, existing, moment)
            if verdict is not None and not self._take_skip_slot(runbook, moment):
                await self._unrecorded_skip(runbook, verdict)
                return "skippedUnrecorded"
            labels = {
                LABEL_ALERTNAME: records.label_value(alert.labels.get("alertname", "")),
                LABEL_FINGERPRINT: records.label_value(alert.fingerprint),
                LABEL_GROUP: group,
            }
            skip = None
            if verdict is not None:
                skip = {
                    ANNOTATION_SKIP_REASON: verdict.reason,
                    ANNOTATION_SKIP_MESSAGE: verdict.message,
                }
            info = {**alert.model_dump(mode="json", exclude_none=True), **notification}
            body = records.remediation_body(
                name,
                runbook.namespace,
                runbook.name,
                spec={"alert": info},
                labels=labels,
                annotations=skip,
            )
            try:
                created = await self.kube.create(API_VERSION, REMEDIATIONS, runbook.namespace, body)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                self._remember(key)
                return "duplicates"
            self._remember(key)
            if self.index is not None:
                self.index.apply("ADDED", created)
        self._tally(runbook, skipped=verdict is not None)
        if verdict is None:
            return "created"
        await self._mark_skipped(created, verdict)
        return "skipped"

    def _indexed(self, key: tuple[str, str]) -> bool:
        """Whether the watch-fed index (synced) knows the record: a duplicate, no request."""
        return self.index is not None and self.index.get(*key) is not None

    async def _group_records(
        self, runbook: CachedRunbook, group: str, moment: datetime.datetime
    ) -> list[guardrails.Record]:
        """The group's records, from the index once it is synced (no request: the API's 409
        on the deterministic name stays the backstop for what the watch has not shown
        yet), else listed by the runbook and group labels."""
        if self.index is not None and self.index.synced:
            entries = self.index.of_group(
                runbook.namespace, runbook.name, group, runbook.spec.guardrails.groupBy
            )
            return [entry.record for entry in entries]
        existing = await self.kube.list(
            API_VERSION,
            REMEDIATIONS,
            runbook.namespace,
            label_selector=f"{LABEL_RUNBOOK}={records.label_value(runbook.name)},"
            f"{LABEL_GROUP}={group}",
        )
        return [guardrails.record_of(r, moment) for r in existing]

    async def _mark_skipped(self, created: dict[str, Any], verdict: guardrails.Verdict) -> None:
        meta = created["metadata"]
        status = {
            "phase": "Skipped",
            "reason": verdict.reason,
            "message": verdict.message,
            "finishedAt": now(),
            "observedGeneration": meta.get("generation"),
        }
        try:
            await patch_status(
                self.kube,
                API_VERSION,
                REMEDIATIONS,
                meta["namespace"],
                meta["name"],
                status,
                resource_version=meta["resourceVersion"],
            )
        except Conflict:
            pass  # the engine was first; the skip annotations make it finish as Skipped too
        except ApiError as exc:
            log.warning("could not mark %s Skipped (the engine will): %s", meta["name"], exc)

    def _take_skip_slot(self, runbook: CachedRunbook, moment: datetime.datetime) -> bool:
        """Count a guardrail hit in this minute's window; true while records are allowed."""
        key = (runbook.namespace, runbook.name)
        minute = moment.replace(second=0, microsecond=0)
        start, hits = self._skip_windows.get(key, (minute, 0))
        hits = hits + 1 if start == minute else 1
        self._skip_windows[key] = (minute, hits)
        return hits <= self.settings.receiver_skip_records_per_minute

    async def _unrecorded_skip(self, runbook: CachedRunbook, verdict: guardrails.Verdict) -> None:
        self.metrics.unrecorded_skips.labels(runbook.namespace, runbook.name, verdict.reason).inc()
        self._tally(runbook, skipped=True)
        limit = self.settings.receiver_skip_records_per_minute
        _, hits = self._skip_windows[(runbook.namespace, runbook.name)]
        if hits == limit + 1:  # the first hit beyond the bound in this minute
            await post_event(
                self.kube,
                runbook.ref(),
                "SkipRecordsSuppressed",
                f"more than {limit} alerts skipped by guardrails this minute "
                f"(last: {verdict.reason}); further ones are counted only in the metric "
                "mcp_receiver_unrecorded_skips_total",
                "Warning",
            )

    # -- resolved ----------------------------------------------------------------------

    async def _resolve(self, runbook: CachedRunbook, name: str) -> Outcome:
        namespace = runbook.namespace

        first = True

        async def attempt() -> Outcome:
            nonlocal first
            entry = self.index.get(namespace, name) if first and self.index else None
            first = False
            if entry is not None and entry.finished:  # no read: only the stamp may change
                if entry.resolved_at is None:
                    stamped = {"alertResolvedAt": now()}
                    updated = await patch_status(
                        self.kube, API_VERSION, REMEDIATIONS, namespace, name, stamped
                    )
                    if self.index is not None:
                        self.index.apply("MODIFIED", updated)
                return "resolved"
            body = entry.body if entry is not None else None
            if body is None:
                body = await self.kube.get_or_none(API_VERSION, REMEDIATIONS, namespace, name)
            if body is None:
                return "resolvedWithoutRecord"
            meta, status = body["metadata"], body.get("status") or {}
            if status.get("alertResolvedAt"):
                return "resolved"
            stamp = now()
            skip_record = ANNOTATION_SKIP_REASON in (meta.get("annotations") or {})
            if (status.get("phase") or "Pending") in CANCELLABLE and not skip_record:
                cancelled = {
                    "phase": "Cancelled",
                    "reason": ALERT_RESOLVED,
                    "message": "the alert resolved before the run started",
                    "finishedAt": stamp,
                    "alertResolvedAt": stamp,
                }
                await patch_status(
                    self.kube,
                    API_VERSION,
                    REMEDIATIONS,
                    namespace,
                    name,
                    cancelled,
                    resource_version=meta["resourceVersion"],
                )
                return "cancelled"
            resolved = {"alertResolvedAt": stamp}
            await patch_status(self.kube, API_VERSION, REMEDIATIONS, namespace, name, resolved)
            return "resolved"

        return await retry_on_conflict(attempt, f"remediation {namespace}/{name}")

    # -- runbook counters --------------------------------------------------------------

    def _tally(self, runbook: CachedRunbook, *, skipped: bool) -> None:
        tally = self._tallies.setdefault((runbook.namespace, runbook.name), _Tally())
        tally.triggered += 1
        tally.skipped += int(skipped)
        tally.last = now()

    async def flush_counters(self) -> None:
        """Add the tallies since the last flush to the runbooks' status (best effort: a
        runbook that is gone is dropped, an unreachable API keeps the tally for later)."""
        tallies, self._tallies = self._tallies, {}
        for (namespace, name), tally in tallies.items():
            try:
                await self._add_counters(namespace, name, tally)
            except ApiError as exc:
                log.debug("runbook %s/%s counters not updated: %s", namespace, name, exc)
                if exc.transient:
                    kept = self._tallies.setdefault((namespace, name), _Tally())
                    kept.triggered += tally.triggered
                    kept.skipped += tally.skipped
                    kept.last = max(kept.last, tally.last)
            except Refused as exc:
                log.debug("runbook %s/%s counters not updated: %s", namespace, name, exc)

    async def _add_counters(self, namespace: str, name: str, tally: _Tally) -> None:
        async def attempt() -> None:
            body = await self.kube.get_or_none(API_VERSION, RUNBOOKS, namespace, name)
            if body is None:
                return
            status = body.get("status") or {}
            counters = status.get("counters") or {}
            added = {
                "lastTriggeredAt": max(tally.last, status.get("lastTriggeredAt") or ""),
                "counters": {
                    "triggered": int(counters.get("triggered", 0)) + tally.triggered,
                    "skipped": int(counters.get("skipped", 0)) + tally.skipped,
                },
            }
            await patch_status(
                self.kube,
                API_VERSION,
                RUNBOOKS,
                namespace,
                name,
                added,
                resource_version=body["metadata"]["resourceVersion"],
            )

        await retry_on_conflict(attempt, f"runbook {namespace}/{name}")
