"""Which runs this replica executes, and when: the operator's control loop.

Every replica watches its McpRemediations (``kube.informer`` into ``index.RecordIndex``)
and serves alerts; one replica at a time — the holder of the Lease (``kube.lease``) —
executes: it runs the engine on every record with work left, validates the runbooks and
deletes expired records. So:

- **exactly one executor**: a run is advanced only by the leader, and every status write
  of a run in progress is conditional on its ``resourceVersion`` and on ``status.executor``
  still naming this replica (``engine``): a replica that lost the Lease, or whose run was
  taken over, stops at its next write instead of writing over the new owner. A replica
  whose Lease renewal fails steps down (cancels its runs) before any other may take over.
- **takeover**: a new leader waits until its index is synced (one paged LIST), then takes
  up every record with work left: unfinished runs continue from their status (a step
  interrupted mid-attempt resumes from its checkpointed outputs), failed runs whose
  escalation is not created yet get it (``engine``: durable escalation).
- **cost independent of history**: a finished record is one entry of the index; nothing
  is requested for it at start-up, and the only request ever made for it is its deletion.
- **one bounded sweeper** deletes expired records (``Entry.due``), at most ``SWEEP_BATCH``
  per second, each under a ``uid`` precondition, so an object recreated under the same
  name is never deleted by mistake.
- **runbook validation** writes a runbook's ``Valid`` condition only when it differs from
  the stored one, so a restart writes nothing for runbooks either.

Runs are executed one task per record; an event for a record whose task is running marks
it to be reconciled again when the task ends, so no event is lost and no record is
reconciled twice at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from mcp_remediator import redact
from mcp_remediator.engine import Engine, LostOwnership
from mcp_remediator.index import LEGACY_FINALIZER, Entry, Key, RecordIndex, RunbookStore
from mcp_remediator.kube.client import ApiError, KubeApi
from mcp_remediator.kube.events import now
from mcp_remediator.kube.informer import Informer
from mcp_remediator.kube.lease import LeaderElector
from mcp_remediator.kube.status import patch_status
from mcp_remediator.models import API_VERSION, REMEDIATIONS, RUNBOOKS, Condition, set_condition
from mcp_remediator.runbook.validation import check_runbook
from mcp_remediator.settings import Settings

log = logging.getLogger(__name__)

SWEEP_BATCH = 50
RETRY_SECONDS = 5.0


class Executor:
    """Feeds the index, campaigns for the Lease, and executes while it holds it."""

    def __init__(
        self,
        settings: Settings,
        kube: KubeApi,
        engine: Engine,
        index: RecordIndex,
        runbooks: RunbookStore,
        *,
        identity: str,
    ):
        self.settings = settings
        self.kube = kube
        self.engine = engine
        self.index = index
        self.runbooks = runbooks
        self.identity = identity
        self.informer = Informer(
            kube,
            API_VERSION,
            REMEDIATIONS,
            index.apply,
            namespaces=list(settings.watch_namespaces),
            listed=index.listed,
        )
        self.elector = LeaderElector(
            kube,
            namespace=settings.lease_namespace_or_default(),
            name=settings.lease_name,
            identity=identity,
            duration=settings.lease_duration_seconds,
            on_change=self._leadership,
        )
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._again: set[Key] = set()
        self._wake_sweeper = asyncio.Event()
        self._takeover: asyncio.Task[None] | None = None
        self._stopping = False
        self._runner: asyncio.Task[Any] | None = None
        self._chores: set[asyncio.Task[None]] = set()
        index.listeners.append(self._changed)

    @property
    def leader(self) -> bool:
        return self.elector.leader

    async def run(self) -> None:
        """Run until cancelled; raises ``LeaseUnavailable`` at once when no election is
        possible (no Leases served, or forbidden)."""
        await self.elector.check()
        self._runner = asyncio.current_task()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.informer.run())
                group.create_task(self._mark_synced())
                group.create_task(self.elector.run())
                group.create_task(self._sweep())
        finally:
            await self._stop_all()

    async def _mark_synced(self) -> None:
        """Once listed, the index answers the receiver (every replica's, leader or not)."""
        await self.informer.synced.wait()
        self.index.synced = True

    # -- leadership ----------------------------------------------------------------------

    def _leadership(self, leader: bool) -> None:
        if leader:
            self._takeover = asyncio.create_task(self._take_over())
        else:
            if self._takeover is not None:
                self._takeover.cancel()
            for task in list(self._tasks.values()):
                task.cancel()
        self._wake_sweeper.set()

    async def _take_over(self) -> None:
        """Once the index is synced: every record with work left, every runbook."""
        await self.informer.synced.wait()
        working = list(self.index.working())
        if working:
            log.info("executing: taking up %d records with work left", len(working))
        for entry in working:
            self._schedule(entry.key)
        for entry in self.index.legacy():  # deleted under an earlier version: let them go
            await self._release_finalizer(entry)
        self._background(self._expire_finished_silences())
        for body in self.runbooks.all():
            await self.validate_runbook(body)

    async def _expire_finished_silences(self) -> None:
        """The silences of runs that finished while no operator executed (``silences``);
        a run gone from the index (deleted) counts as finished."""

        def finished(namespace: str, name: str) -> bool:
            entry = self.index.get(namespace, name)
            return entry is None or entry.finished

        await self.engine.silencer.expire_finished(finished, self.settings.watch_namespaces)

    async def stop(self) -> None:
        """Stop (the operator is stopping): cancel the runs in progress, which resume from
        their status wherever the Lease goes next, the watch, the sweeper and the campaign,
        and release the Lease, so that the other replica takes over at once. Done from
        Kopf's clean-up: Kopf's exit would otherwise wait 5 s on these tasks."""
        self._stopping = True
        await self._stop_all()
        runner = self._runner
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        if self.elector.releasing is not None:
            await asyncio.gather(self.elector.releasing, return_exceptions=True)

    @property
    def stopped(self) -> bool:
        return self._stopping

    async def _stop_all(self) -> None:
        tasks = [*self._tasks.values(), *self._chores]
        if self._takeover is not None:
            tasks.append(self._takeover)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- runs ----------------------------------------------------------------------------

    def _changed(self, old: Entry | None, new: Entry | None) -> None:
        if new is not None and new.needs_work and self.leader and self.informer.synced.is_set():
            self._schedule(new.key)
        if new is not None and new.finished:
            self._wake_sweeper.set()

    def _schedule(self, key: Key) -> None:
        if self._stopping:
            return
        if key in self._tasks:
            self._again.add(key)
            return
        self._tasks[key] = asyncio.create_task(self._work(key), name=f"run {key[0]}/{key[1]}")

    async def _work(self, key: Key) -> None:
        try:
            while self.leader:
                self._again.discard(key)
                entry = self.index.get(*key)
                if entry is None or not entry.needs_work or entry.body is None:
                    return
                try:
                    await self.engine.reconcile(key[0], key[1], entry.body)
                except LostOwnership as exc:
                    log.warning("remediation %s/%s: %s", *key, exc)
                    return
                except ApiError as exc:
                    log.warning("remediation %s/%s: %s; again in %gs", *key, exc, RETRY_SECONDS)
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                except Exception as exc:  # the engine finishes runs it fails on; not this
                    log.error(
                        "remediation %s/%s: %s\n%s",
                        *key,
                        redact.exception_type(exc),
                        redact.traceback_without_text(exc),
                    )
                    return
                if key not in self._again:
                    return
        finally:
            self._tasks.pop(key, None)

    # -- expiry --------------------------------------------------------------------------

    async def _sweep(self) -> None:
        """Delete expired records while leader, at most ``SWEEP_BATCH`` per second."""
        while True:
            self._wake_sweeper.clear()
            wait = 60.0
            if self.leader and self.informer.synced.is_set():
                moment = datetime.datetime.now(datetime.UTC)
                expired = self.index.expired(moment, SWEEP_BATCH)
                for entry in expired:
                    await self._delete(entry)
                following = self.index.next_due()
                if len(expired) == SWEEP_BATCH:
                    wait = 1.0
                elif following is not None:
                    wait = min(max((following - moment).total_seconds(), 1.0), 60.0)
            try:
                await asyncio.wait_for(self._wake_sweeper.wait(), wait)
            except TimeoutError:
                pass

    async def _release_finalizer(self, entry: Entry) -> None:
        """Remove an earlier version's finalizer (nothing waits on it any more), under the
        version the index holds."""
        others = [f for f in entry.finalizers if f != LEGACY_FINALIZER]
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": str(entry.version)},
            {"op": "replace", "path": "/metadata/finalizers", "value": others},
        ]
        try:
            await self.kube.patch(
                API_VERSION, REMEDIATIONS, entry.namespace, entry.name, patch, patch_type="json"
            )
        except ApiError as exc:
            if exc.status not in (404, 409, 422):
                log.warning("finalizer of %s/%s not removed: %s", *entry.key, exc)

    async def _delete(self, entry: Entry) -> None:
        if entry.legacy_finalizer:
            await self._release_finalizer(entry)
        try:
            await self.kube.delete(
                API_VERSION, REMEDIATIONS, entry.namespace, entry.name, uid=entry.uid or None
            )
            log.info("deleted remediation %s/%s (expired)", entry.namespace, entry.name)
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("could not delete %s/%s: %s", entry.namespace, entry.name, exc)

    # -- runbooks ------------------------------------------------------------------------

    def runbook_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watched runbook: stored, and validated when this replica is the leader."""
        stored = self.runbooks.apply(event_type, body)
        if stored is not None and self.leader and self.informer.synced.is_set():
            self._background(self.validate_runbook(stored))

    def _revalidate(self, namespace: str, name: str) -> None:
        """Validate the runbook again (its status write failed on a transient error)."""
        body = self.runbooks.get(namespace, name)
        if body is not None and self.leader and not self._stopping:
            self._background(self.validate_runbook(body))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in a task kept until it ends (the loop holds tasks only weakly)."""
        task = asyncio.create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def validate_runbook(self, body: Mapping[str, Any]) -> None:
        """Write the runbook's ``Valid`` condition when it differs from the stored one."""
        meta, spec = body.get("metadata") or {}, body.get("spec") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        status = body.get("status") or {}
        problems = check_runbook(dict(spec), self.settings, namespace)
        generation = meta.get("generation")
        if problems:
            reason = problems[0].reason
            message = "; ".join(p.message for p in problems)[:2000]
        else:
            reason, message = "Validated", f"{len(spec.get('steps') or [])} steps validated"
        verdict = "False" if problems else "True"
        previous = [Condition.model_validate(c) for c in status.get("conditions") or []]
        current = next((c for c in previous if c.type == "Valid"), None)
        unchanged = (
            current is not None
            and (current.status, current.reason, current.message, current.observedGeneration)
            == (verdict, reason, message, generation)
            and status.get("observedGeneration") == generation
        )
        if unchanged:
            return
        condition = Condition(
            type="Valid",
            status=verdict,
            reason=reason,
            message=message,
            lastTransitionTime=now(),
            observedGeneration=generation,
        )
        conditions = set_condition(previous, condition)
        try:
            updated = await patch_status(
                self.kube,
                API_VERSION,
                RUNBOOKS,
                namespace,
                name,
                {
                    "observedGeneration": generation,
                    "conditions": [c.model_dump(mode="json") for c in conditions],
                },
            )
        except ApiError as exc:
            log.warning("McpRunbook %s/%s: status not written: %s", namespace, name, exc)
            if exc.transient and exc.status != 409:
                asyncio.get_running_loop().call_later(
                    RETRY_SECONDS, self._revalidate, namespace, name
                )
            return
        self.runbooks.apply("MODIFIED", updated)
        if problems:
            log.warning("McpRunbook %s/%s is invalid: %s", namespace, name, message)
