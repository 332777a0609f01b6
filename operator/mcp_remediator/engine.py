"""The remediation engine: runs an McpRemediation's steps and records every result.

``Engine.reconcile(namespace, name, body)`` is the one entry point, called by the executor
(``executor``) on the replica that holds the Lease, with the object as its index last saw
it (read again after a conflict). It continues from the status, so it can be called any
number of times, by a restarted operator or a new leader too: a step whose phase is
finished never runs again, and a step interrupted mid-attempt runs its next attempt with
the outputs it checkpointed (``rolloutRestart`` uses them to never restart twice).

Ownership: every status write is conditional on the ``resourceVersion`` last read or
written, and names this replica in ``status.executor``; a run found under another
executor's name is taken over with a conditional write first. A 409 on a transition
(Pending → Running, → Skipped, …) re-reads and decides again; a 409 on a run in progress
re-reads and writes again if ``status.executor`` still names this replica, else the run
stops (``LostOwnership``) without writing anything more. Before each attempt the engine
checks that this replica still holds the Lease (``may_act``).

Cheap by construction: the runbook comes from the executor's store, the run's
ServiceAccount check is cached for a minute, and the start of a run is written together
with its first attempt, so a one-step run makes at most six requests up to its first
action, the receiver's create included (its Events among them).

Every request a step makes to the Kubernetes API impersonates the run's ServiceAccount
(``Plan.serviceAccountName``, of the remediation's own namespace: the runbook's, or the
inline steps' own, else ``MCP_DEFAULT_SERVICE_ACCOUNT``), so Kubernetes RBAC decides what a
step may touch; the engine's own bookkeeping (the remediation's status, Events,
escalations) keeps the operator's identity.

The run's plan (steps, namespace, account, dry-run, approval, escalation) is frozen into
``status.plan`` when the run starts, so editing the runbook in Git does not change a run
already under way. Transitions that race with the receiver (Pending → Running versus
Pending → Cancelled) are written with a ``resourceVersion`` precondition. A run of a
runbook that the receiver did not create (by hand, by escalation) passes the runbook's
guardrails first (``admission``), so that every run of a runbook is counted and limited;
every run of a runbook is then judged once more over the runs this executor has started
(``_started_runs_verdict``), which keeps the guardrails exact when two replicas' receivers
each let one alert of a group in. A failed run with ``onFailure.escalateTo`` records its
escalation (a deterministic name, ``created: false``) in the same write as the failure,
then creates it; the executor retries that until ``created`` is true.

Nothing wedges a run: a step whose preparation (templating, params, validation) or action
fails unexpectedly fails with reason ``InternalError`` and a message naming the exception's
type only (its text may hold a secret, e.g. a ``UnicodeEncodeError`` holds the whole
``Authorization`` header); the log gets its frames, without text. An unexpected error of
the engine itself finishes the run ``Failed`` the same way, instead of being retried
forever. A remediation in a protected namespace is finished ``Refused`` before anything
else (``refusals.check_run_namespace``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from mcp_remediator import admission, records, redact, reverts, silences
from mcp_remediator.actions import REGISTRY, ActionContext, ActionParams, ActionResult, ActionSpec
from mcp_remediator.clients import Clients
from mcp_remediator.errors import Refused, StepFailed
from mcp_remediator.index import RecordIndex, RunbookStore
from mcp_remediator.kube import refusals
from mcp_remediator.kube.client import ApiError, KubeApi
from mcp_remediator.kube.events import now, post_event
from mcp_remediator.kube.status import Conflict, patch_status, retry_on_conflict
from mcp_remediator.models import (
    ANNOTATION_PROPOSAL_REASON,
    ANNOTATION_PROPOSED_BY,
    ANNOTATION_SKIP_MESSAGE,
    ANNOTATION_SKIP_REASON,
    API_VERSION,
    FINISHED_PHASES,
    FINISHED_STEP_PHASES,
    LABEL_ESCALATED_FROM,
    LABEL_GROUP,
    REMEDIATIONS,
    RUNBOOKS,
    Condition,
    Escalation,
    Plan,
    RemediationSpec,
    RemediationStatus,
    RunbookSpec,
    Step,
    StepStatus,
    set_condition,
)
from mcp_remediator.runbook import guardrails, templates
from mcp_remediator.runbook.validation import check_steps, pydantic_message
from mcp_remediator.settings import Settings

log = logging.getLogger(__name__)
INTERNAL_ERROR = "InternalError"
ACCOUNT_CACHE_SECONDS = 60.0
SAVE_RETRIES = 5
NOTICE_DELAY_SECONDS = 1.0  # at most this late, a progress Event (``Engine._notice``)
EVENTS_AT_ONCE = 2  # Events being posted at once (``Engine._event``)


class LostOwnership(Exception):
    """Another replica executes this run now (or this one is no longer the leader): stop,
    and write nothing more."""


class PlanError(Exception):
    """The remediation cannot start: a missing or invalid runbook, invalid steps."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class Run:
    """One remediation being executed: its spec, its status, and how to save it."""

    def __init__(self, body: dict[str, Any]):
        self.body = body
        meta = body["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.resource_version: str | None = meta.get("resourceVersion")
        # What cannot be read ends the run with a reason (``Engine._advance``), never in an
        # exception that Kopf would retry forever.
        self.invalid: tuple[str, str] | None = None
        try:
            self.spec = RemediationSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            self.spec = RemediationSpec()
            self.invalid = ("InvalidSpec", f"spec: {pydantic_message(exc)}")
        raw_status = body.get("status") or {}
        try:
            self.status = RemediationStatus.model_validate(raw_status)
        except ValidationError as exc:
            self.status = RemediationStatus()
            phase = raw_status.get("phase") if isinstance(raw_status, dict) else None
            if isinstance(phase, str) and phase in FINISHED_PHASES:
                self.status.phase = phase  # type: ignore[assignment]
            self.invalid = ("InvalidStatus", f"status: {pydantic_message(exc)}")
        self.account_found = False  # the plan's ServiceAccount was seen in this pass
        # A transition decided but not written yet: the next save carries it, under the
        # resourceVersion read (a Conflict means: read again and decide again), and then
        # posts its Events. So the start of a run and its first step's attempt are one write.
        self.transition = False
        self.deferred_events: list[tuple[str, str]] = []
        # Progress Events written but not posted yet (``Engine._notice``), and those posted.
        self.pending_notices: list[tuple[str, str]] = []
        self.notice_timer: asyncio.TimerHandle | None = None
        self.notices: list[asyncio.Task[None]] = []

    @property
    def plan(self) -> Plan:
        assert self.status.plan is not None
        return self.status.plan


@dataclass(frozen=True)
class StepOutcome:
    """How one step ended: ``Refused`` ends the whole run as Refused; the step itself is
    recorded ``Failed`` then."""

    phase: Literal["Succeeded", "DryRun", "Failed", "Refused"]
    reason: str
    message: str

    @property
    def ok(self) -> bool:
        return self.phase in ("Succeeded", "DryRun")


# Told of every action attempt: (action, outcome, seconds); the receiver's metrics use it.
StepObserver = Callable[[str, str, float], None]


async def _drop(ctx: ActionContext) -> None:
    """Forget a ``prepare`` answer the action did not take (its error too)."""
    if ctx.ahead is not None:
        ahead, ctx.ahead = ctx.ahead, None
        ahead.cancel()
        await asyncio.gather(ahead, return_exceptions=True)


def unexpected_failure(what: str, exc: BaseException) -> StepFailed:
    """The step failure of an exception nobody expected: reason ``InternalError``, named by
    its type only; its frames (without any text) go to the log."""
    kind = redact.exception_type(exc)
    log.error("%s failed unexpectedly (%s)\n%s", what, kind, redact.traceback_without_text(exc))
    return StepFailed(
        f"internal error: {kind} (the exception's text is not shown, as it may hold secrets)",
        reason=INTERNAL_ERROR,
    )


def prepare_step(
    step: Step, inputs: templates.Inputs, settings: Settings, namespace: str
) -> tuple[ActionSpec[Any], ActionParams]:
    """A step's action and its params: rendered from ``inputs``, parsed and validated for
    the target ``namespace``. Raises ``StepFailed`` or ``Refused``, nothing else: an
    unexpected error is a ``StepFailed`` with reason ``InternalError``."""
    try:
        spec = REGISTRY.get(step.action)
        if spec is None:
            raise StepFailed(f"unknown action {step.action!r}", reason="UnknownAction")
        rendered = templates.render(step.params, inputs, spec.params)
        try:
            params = spec.parse(rendered)
        except ValidationError as exc:
            raise StepFailed(
                f"invalid params after templating: {pydantic_message(exc)}",
                reason="InvalidParams",
            ) from exc
        if spec.validate is not None:
            spec.validate(params, settings, namespace)
        return spec, params
    except (StepFailed, Refused):
        raise
    except Exception as exc:
        raise unexpected_failure(f"preparing step {step.name} ({step.action})", exc) from None


class Engine:
    """Executes remediations with the given clients and settings."""

    def __init__(
        self,
        clients: Clients,
        settings: Settings,
        *,
        observers: Sequence[StepObserver] = (),
        index: RecordIndex | None = None,
        runbooks: RunbookStore | None = None,
        identity: str = "",
        may_act: Callable[[], bool] = lambda: True,
    ):
        self.clients = clients
        self.settings = settings
        self.kube = clients.kube
        self.observers = tuple(observers)
        self.index = index
        self.runbooks = runbooks
        self.identity = identity
        self.may_act = may_act
        self._accounts: dict[tuple[str, str], float] = {}
        self._account_reads: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._admissions: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._reserved: set[tuple[str, str]] = set()  # admitted, start not written yet
        self._event_slots = asyncio.Semaphore(EVENTS_AT_ONCE)
        self.silencer = silences.Silencer(settings, clients.http)

    async def reconcile(
        self, namespace: str, name: str, body: dict[str, Any] | None = None
    ) -> None:
        """Advance the remediation as far as it can go now; ``body``: the object as last
        seen (the executor's index), else it is read. After a conflict it is read again."""
        seen = body

        async def attempt() -> None:
            nonlocal seen
            current = seen
            seen = None
            if current is None:
                current = await self.kube.get_or_none(API_VERSION, REMEDIATIONS, namespace, name)
            if current is None:
                return
            run = Run(copy.deepcopy(current))
            try:
                await self._advance(run)
            except (ApiError, Conflict, LostOwnership):
                raise  # transient: the executor (or retry_on_conflict) tries again
            except Exception as exc:
                await self._internal_error(run, exc)
            finally:
                self._reserved.discard((namespace, name))
                self._post_notices(run)
                await asyncio.gather(*run.notices, return_exceptions=True)

        await retry_on_conflict(attempt, f"remediation {namespace}/{name}")

    async def _internal_error(self, run: Run, exc: Exception) -> None:
        """Finish a run the engine failed on unexpectedly: ``Failed``, reason
        ``InternalError``, named by the exception's type (its text may hold secrets)."""
        kind = redact.exception_type(exc)
        log.error(
            "remediation %s/%s: the engine failed unexpectedly (%s)\n%s",
            run.namespace,
            run.name,
            kind,
            redact.traceback_without_text(exc),
        )
        if run.status.phase in FINISHED_PHASES:
            return
        for result in run.status.steps:
            if result.phase == "Running":
                result.phase, result.reason = "Failed", INTERNAL_ERROR
                result.message = f"internal error: {kind}"
                result.finishedAt = now()
            elif result.phase == "Pending":
                result.phase, result.message = "Skipped", "not run: internal error"
        await self._finish(
            run,
            "Failed",
            INTERNAL_ERROR,
            f"the operator failed unexpectedly ({kind}); the exception's text is not shown, "
            "as it may hold secrets",
        )

    # -- state transitions -------------------------------------------------------------

    async def _advance(self, run: Run) -> None:
        status = run.status
        if status.phase in FINISHED_PHASES:
            if status.escalatedTo is not None and status.escalatedTo.created is False:
                await self._create_escalation(run)
            return
        if run.invalid is not None:
            await self._finish(run, "Failed", *run.invalid, precondition=True)
            return
        if status.plan is None:
            async with self._admission(run):
                if not await self._start(run):
                    return
        else:
            await self._own(run)
            if status.phase == "AwaitingApproval" and not run.spec.approved:
                return
        if status.phase != "Running":
            self._begin(run)
        if status.silence is None:  # written with the start (``silences``: exactly once)
            status.silence = await self.silencer.start(
                run.namespace, run.name, run.spec.alert, run.plan, status.steps,
                dry_run=self._dry_run(run),
            )  # fmt: skip
        await self._run_steps(run)

    async def _start(self, run: Run) -> bool:
        """Judge, plan and start a run that has no plan yet; false when it ended or waits
        for approval. Runs under the admission lock of its runbook and group, so that this
        executor's decisions on one group are made one at a time, each seeing the last."""
        status = run.status
        try:
            refusals.check_run_namespace(self.settings, run.namespace)
        except Refused as exc:
            await self._finish(run, "Refused", exc.reason, exc.message, precondition=True)
            return False
        await self._admit(run)
        annotations = run.body["metadata"].get("annotations") or {}
        if ANNOTATION_SKIP_REASON in annotations:
            reason = annotations[ANNOTATION_SKIP_REASON]
            message = annotations.get(ANNOTATION_SKIP_MESSAGE, reason)
            await self._finish(run, "Skipped", reason, message, precondition=True)
            return False
        verdict = self._started_runs_verdict(run)
        if verdict is not None:
            await self._finish(run, "Skipped", verdict.reason, verdict.message, precondition=True)
            return False
        try:
            status.plan = await self._make_plan(run)
        except Refused as exc:
            await self._finish(run, "Refused", exc.reason, exc.message, precondition=True)
            return False
        except PlanError as exc:
            await self._finish(run, "Failed", exc.reason, exc.message, precondition=True)
            return False
        status.steps = [StepStatus(name=s.name, action=s.action) for s in status.plan.steps]
        escalated_from = run.body["metadata"].get("labels", {}).get(LABEL_ESCALATED_FROM)
        if escalated_from:
            status.escalatedFrom = Escalation(name=escalated_from)
        if status.plan.requireApproval and not run.spec.approved:
            status.phase, status.reason = "AwaitingApproval", "ApprovalRequired"
            status.message = "set spec.approved=true to run the steps"
            await self._save(run, precondition=True)
            await self._event(run, "AwaitingApproval", status.message)
            return False
        # Admitted: the next save (the first step's attempt) writes the start; until then
        # the run is reserved, so that the next decision on the group counts it.
        self._reserved.add((run.namespace, run.name))
        self._begin(run)
        return True

    def _begin(self, run: Run) -> None:
        """Pending or AwaitingApproval → Running; written by the next save."""
        status = run.status
        status.phase, status.reason = "Running", "Started"
        status.message = f"running {len(run.plan.steps)} steps"
        if self._dry_run(run):
            status.message += " in dry-run: nothing will be changed"
        status.startedAt = now()
        self._set_condition(run, "Running", "True", "Started", status.message)
        run.transition = True
        run.deferred_events.append(("Started", status.message))

    @contextlib.asynccontextmanager
    async def _admission(self, run: Run) -> AsyncIterator[None]:
        runbook = run.spec.runbookRef.name if run.spec.runbookRef else ""
        if not runbook or self.index is None:
            yield
            return
        group = run.body["metadata"].get("labels", {}).get(LABEL_GROUP) or ""
        lock = self._admissions.setdefault((run.namespace, runbook, group), asyncio.Lock())
        async with lock:
            yield

    def _started_runs_verdict(self, run: Run) -> guardrails.Verdict | None:
        """The guardrails over the runs of the group this executor has started: the final
        word on a run of a runbook, exact however many replicas created records at once
        (the receiver judged from its own view; two replicas may each have let one in)."""
        if self.index is None or run.spec.runbookRef is None:
            return None
        runbook = run.spec.runbookRef.name
        body = self._runbook_body(run.namespace, runbook)
        if body is None:
            return None
        try:
            spec = RunbookSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return None  # _make_plan fails the run with the reason
        group = run.body["metadata"].get("labels", {}).get(LABEL_GROUP) or admission.group_of(
            run.body, spec.guardrails.groupBy
        )
        started = [
            entry.record
            for entry in self.index.of_group(run.namespace, runbook, group, spec.guardrails.groupBy)
            if (entry.started or entry.key in self._reserved) and entry.name != run.name
        ]
        return guardrails.evaluate(runbook, spec, started, datetime.datetime.now(datetime.UTC))

    def _runbook_body(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.runbooks.get(namespace, name) if self.runbooks is not None else None

    async def _own(self, run: Run) -> None:
        """Take over a run another replica was executing (it stopped, or lost the Lease):
        our name in ``status.executor``, written under the version read, so that the
        previous executor's next write fails instead of overwriting ours."""
        if not self.identity or run.status.executor == self.identity:
            return
        previous = run.status.executor or "an earlier operator"
        run.status.executor = self.identity
        await self._save(run, precondition=True)
        log.info("remediation %s/%s: taken over from %s", run.namespace, run.name, previous)

    async def _admit(self, run: Run) -> None:
        """The runbook's guardrails for a run the receiver did not judge (by hand or by
        escalation; see ``admission``): labels it with its runbook and group, and on a hit
        adds the skip annotations, with which ``_advance`` finishes it as Skipped."""
        metadata = await admission.admit(
            self.kube, run.body, index=self.index, runbooks=self.runbooks
        )
        if metadata is not None:
            run.body["metadata"] = metadata
            run.resource_version = metadata.get("resourceVersion")

    async def _make_plan(self, run: Run) -> Plan:
        spec = run.spec
        if (spec.runbookRef is None) == (not spec.steps):
            raise PlanError("InvalidSpec", "give exactly one of spec.runbookRef or spec.steps")
        runbook_name: str | None = None
        generation: int | None = None
        namespace: str | None = None
        dry_run, approval, escalate, revert = spec.dryRun, False, None, False
        silence, group_by = None, []
        account = spec.serviceAccountName
        if spec.runbookRef is not None and spec.serviceAccountName:
            raise PlanError(
                "InvalidSpec",
                "spec.serviceAccountName is for inline steps; a run of a runbook acts as the "
                "runbook's spec.serviceAccountName",
            )
        if spec.runbookRef is not None:
            runbook_name = spec.runbookRef.name
            body = self._runbook_body(run.namespace, runbook_name)
            if body is None:  # not seen by the watch (yet): ask
                body = await self.kube.get_or_none(
                    API_VERSION, RUNBOOKS, run.namespace, runbook_name
                )
            if body is None:
                raise PlanError(
                    "RunbookNotFound", f"McpRunbook {runbook_name} not found in {run.namespace}"
                )
            try:
                runbook = RunbookSpec.model_validate(body.get("spec") or {})
            except ValidationError as exc:
                raise PlanError(
                    "InvalidRunbook", f"McpRunbook {runbook_name}: {pydantic_message(exc)}"
                ) from exc
            generation = body["metadata"].get("generation")
            steps = runbook.steps
            namespace = runbook.target.namespace
            dry_run = dry_run or runbook.guardrails.dryRun
            approval = runbook.guardrails.requireApproval
            escalate = runbook.onFailure.escalateTo
            revert = runbook.onFailure.revert
            account = runbook.serviceAccountName
            silence = runbook.guardrails.silence if runbook.guardrails.silence.enabled else None
            group_by = list(runbook.guardrails.groupBy)
        else:
            steps = spec.steps
        # A proposal (an agent's, through the MCP server) waits for a human, whatever the
        # runbook says; the plan keeps the decision, so removing the marker later changes
        # nothing, and a record created without it is no proposal.
        proposed = ANNOTATION_PROPOSED_BY in (run.body["metadata"].get("annotations") or {})
        approval = approval or proposed
        if namespace is not None:
            try:
                namespace = templates.render_namespace(namespace, self._inputs(run, {}))
            except StepFailed as exc:
                raise PlanError("TemplateError", f"target.namespace: {exc.message}") from exc
        problems = check_steps(steps, self.settings, namespace or run.namespace)
        for problem in problems:
            if problem.reason in ("ManualKyvernoOverrideRefused", "ProtectedNamespace"):
                raise Refused(problem.reason, problem.message)
        if problems:
            raise PlanError(problems[0].reason, "; ".join(p.message for p in problems))
        return Plan(
            runbook=runbook_name,
            runbookGeneration=generation,
            namespace=namespace or run.namespace,
            serviceAccountName=account or self.settings.default_service_account,
            steps=list(steps),
            dryRun=dry_run,
            requireApproval=approval,
            escalateTo=escalate,
            revert=revert,
            irreversibleSteps=reverts.irreversible_steps(list(steps)) if revert else None,
            silence=silence,
            groupBy=group_by,
        )

    def _dry_run(self, run: Run) -> bool:
        return self.settings.dry_run or run.plan.dryRun

    @staticmethod
    def _inputs(run: Run, outputs: dict[str, dict[str, str]]) -> templates.Inputs:
        alert = run.spec.alert
        labels = {**(alert.labels if alert else {}), **run.spec.labels}
        return templates.Inputs(
            labels=labels, annotations=alert.annotations if alert else {}, steps=outputs
        )

    async def _run_steps(self, run: Run) -> None:
        plan, status = run.plan, run.status
        failed: list[str] = []
        for index, step in enumerate(plan.steps):
            result = status.steps[index]
            if result.phase in FINISHED_STEP_PHASES:
                if result.phase == "Failed" and not step.continueOnFailure:
                    # Recorded failed by an operator that stopped before ending the run
                    # (versions that wrote the two apart): end it as it would have.
                    for later in status.steps[index + 1 :]:
                        later.phase = "Skipped"
                        later.message = f"not run: step {step.name} did not succeed"
                    message = f"step {step.name}: {result.message}"
                    await self._revert(run)
                    await self._finish(run, "Failed", result.reason or "StepFailed", message)
                    return
                if result.phase == "Failed":
                    failed.append(step.name)
                continue
            status.currentStep = step.name
            outcome = await self._run_step(run, index)
            if outcome.ok:
                continue
            if outcome.phase == "Failed" and step.continueOnFailure:
                failed.append(step.name)
                continue
            for later in status.steps[index + 1 :]:
                later.phase, later.message = "Skipped", f"not run: step {step.name} did not succeed"
            await self._revert(run)
            if outcome.phase == "Refused":
                await self._finish(run, "Refused", outcome.reason, outcome.message)
            else:
                await self._finish(
                    run, "Failed", outcome.reason, f"step {step.name}: {outcome.message}"
                )
            return
        if failed:
            await self._finish(
                run,
                "Succeeded",
                "CompletedWithFailures",
                f"all steps ran; {', '.join(failed)} failed (continueOnFailure)",
            )
        else:
            verb = "recorded in dry-run" if self._dry_run(run) else "succeeded"
            await self._finish(run, "Succeeded", "Completed", f"all {len(plan.steps)} steps {verb}")

    async def _revert(self, run: Run) -> None:
        """With ``onFailure.revert``, undo the reversible steps of a run that a step ends
        (``reverts``), as the steps' ServiceAccount; the outcome is the ``Reverted``
        condition, written with the run's end. Resumes after a restart: each step's revert
        is saved as it is done."""
        if not run.plan.revert or self._dry_run(run):
            return
        if not self.may_act():
            raise LostOwnership("this replica no longer holds the Lease")
        run.status.message = "a step failed: reverting the reversible steps"
        outcome = await reverts.revert_steps(
            run.plan, run.status.steps, self.step_kube(run), lambda: self._save(run)
        )
        self._set_condition(run, "Reverted", outcome.status, outcome.reason, outcome.message)
        self._notice(run, outcome.reason, outcome.message)

    async def _run_step(self, run: Run, index: int) -> StepOutcome:
        """Prepare the step's params, then attempt it until it succeeds or may not retry."""
        try:
            await self._check_account(run)
            spec, params = self._prepare(run, index)
        except Refused as exc:
            return await self._end_step(run, index, StepOutcome("Refused", exc.reason, exc.message))
        except StepFailed as exc:
            return await self._end_step(run, index, StepOutcome("Failed", exc.reason, exc.message))
        except Exception as exc:
            error = unexpected_failure(f"preparing step {run.plan.steps[index].name}", exc)
            return await self._end_step(
                run, index, StepOutcome("Failed", error.reason, error.message)
            )
        return await self._attempts(run, index, spec, params)

    def _account(self, run: Run) -> str:
        return run.plan.serviceAccountName or self.settings.default_service_account

    async def _check_account(self, run: Run) -> None:
        """Fail the step clearly when the ServiceAccount it would act as does not exist
        (impersonating a missing account is allowed, and would only end in 403s)."""
        if run.account_found:
            return
        account = self._account(run)
        loop = asyncio.get_running_loop()
        if self._accounts.get((run.namespace, account), 0.0) > loop.time():
            run.account_found = True  # seen a moment ago: a missing one ends in a 403 anyway
            return
        key = (run.namespace, account)
        read = self._account_reads.get(key)
        if read is None:  # one read for the runs that start together, not one each
            read = asyncio.ensure_future(
                self.kube.get_or_none("v1", "serviceaccounts", run.namespace, account)
            )
            self._account_reads[key] = read
            read.add_done_callback(lambda done: self._account_done(key, done))
        try:
            found = await asyncio.shield(read)
        except ApiError as exc:
            raise exc.as_step_failure(f"reading ServiceAccount {run.namespace}/{account}") from exc
        if found is None:
            raise StepFailed(
                f"ServiceAccount {run.namespace}/{account}, which the steps act as, does not "
                "exist: create it (with the RBAC the steps need), or name another in the "
                "runbook's spec.serviceAccountName",
                reason="ServiceAccountNotFound",
            )
        run.account_found = True
        self._accounts[(run.namespace, account)] = loop.time() + ACCOUNT_CACHE_SECONDS

    def _account_done(self, key: tuple[str, str], read: asyncio.Future[Any]) -> None:
        self._account_reads.pop(key, None)
        if not read.cancelled():
            read.exception()  # retrieved here: every waiter may have gone

    def step_kube(self, run: Run) -> KubeApi:
        """The Kubernetes client of the run's steps: acting as its ServiceAccount, and
        unable to write in dry-run."""
        kube = self.kube.impersonating(run.namespace, self._account(run))
        return kube.with_dry_run() if self._dry_run(run) else kube

    def _prepare(self, run: Run, index: int) -> tuple[ActionSpec[Any], ActionParams]:
        """The step's action and its params, rendered from the run's inputs and validated;
        raises ``StepFailed`` or ``Refused``."""
        outputs = {
            s.name: s.outputs
            for s in run.status.steps[:index]
            if s.phase in ("Succeeded", "DryRun")
        }
        return prepare_step(
            run.plan.steps[index],
            self._inputs(run, outputs),
            self.settings,
            run.plan.namespace or run.namespace,
        )

    async def _attempts(
        self, run: Run, index: int, spec: ActionSpec[Any], params: ActionParams
    ) -> StepOutcome:
        """Attempt the step; transient failures are retried with exponential backoff."""
        step = run.plan.steps[index]
        result = run.status.steps[index]
        dry_run = self._dry_run(run)
        clients = Clients(self.settings, self.step_kube(run), self.clients.http)

        async def checkpoint(values: Any) -> None:
            result.outputs = dict(values)
            await self._save(run)

        while True:
            if not self.may_act():
                raise LostOwnership("this replica no longer holds the Lease")
            result.attempts += 1
            result.phase = "Running"
            result.startedAt = result.startedAt or now()
            result.message = f"attempt {result.attempts} of {step.retries + 1}"
            if spec.intent is not None and not dry_run:
                # What the action would checkpoint before its first change, durable now
                # with the attempt's start: a retry or the next leader reuses it.
                result.outputs = {**spec.intent(), **result.outputs}
            ctx = ActionContext(
                clients=clients,
                settings=self.settings,
                namespace=run.plan.namespace or run.namespace,
                dry_run=dry_run,
                remediation=f"{run.namespace}/{run.name}",
                step=step.name,
                attempt=result.attempts,
                deadline=asyncio.get_running_loop().time() + step.timeoutSeconds,
                outputs=dict(result.outputs),
                log=logging.LoggerAdapter(log, {"remediation": run.name, "step": step.name}),
                checkpoint_fn=checkpoint,
                service_account=self._account(run),
            )
            if spec.prepare is not None:
                # The action's first reads go beside the start write (they change nothing).
                ctx.ahead = asyncio.ensure_future(spec.prepare(params, ctx))
            try:
                await self._save(run)
            except BaseException:
                await _drop(ctx)
                raise
            try:
                try:
                    done = await self._attempt(spec, params, ctx, step.timeoutSeconds)
                finally:
                    await _drop(ctx)
                    self._post_notices(run)
            except Refused as exc:
                return await self._end_step(
                    run, index, StepOutcome("Refused", exc.reason, exc.message)
                )
            except Exception as exc:
                error = self._failure(step.action, step.timeoutSeconds, exc)
            else:
                phase: Literal["Succeeded", "DryRun"] = "DryRun" if dry_run else "Succeeded"
                result.phase = phase
                result.reason = ""
                result.outputs = {str(k): str(v) for k, v in done.outputs.items()}
                result.message = done.message
                result.finishedAt = now()
                self._notice(run, "StepSucceeded", f"{step.name}: {done.message}")
                if index < len(run.plan.steps) - 1:
                    await self._save(run)
                # The last step's success is written with the end of the run (one write):
                # a crash in between re-runs its attempt, which its checkpoint makes safe.
                return StepOutcome(phase, "", done.message)
            if not error.transient or result.attempts > step.retries:
                return await self._end_step(
                    run, index, StepOutcome("Failed", error.reason, error.message)
                )
            delay = self.settings.retry_backoff_seconds * 2 ** (result.attempts - 1)
            result.message = (
                f"attempt {result.attempts} failed: {error.message}; retrying in {delay:g}s"
            )
            await self._save(run)
            await asyncio.sleep(delay)

    @staticmethod
    def _failure(action: str, timeout: float, exc: Exception) -> StepFailed:
        """What an exception from an attempt means for the step."""
        if isinstance(exc, StepFailed):
            return exc
        if isinstance(exc, TimeoutError):
            return StepFailed(f"timed out after {timeout}s", reason="Timeout", transient=True)
        if isinstance(exc, ApiError):
            return exc.as_step_failure("Kubernetes API")
        return unexpected_failure(f"action {action}", exc)

    async def _attempt(
        self, spec: ActionSpec[Any], params: Any, ctx: ActionContext, timeout: float
    ) -> ActionResult:
        """One timed attempt of an action; the step observers learn how it went."""
        loop = asyncio.get_running_loop()
        started, outcome = loop.time(), "failed"
        try:
            result = await asyncio.wait_for(spec.fn(params, ctx), timeout=timeout)
            outcome = "succeeded"
            return result
        except Refused:
            outcome = "refused"
            raise
        except TimeoutError:
            outcome = "timeout"
            raise
        finally:
            for observe in self.observers:
                observe(spec.name, outcome, loop.time() - started)

    async def _end_step(self, run: Run, index: int, outcome: StepOutcome) -> StepOutcome:
        """Record a step that failed or was refused; the run decides what follows."""
        result = run.status.steps[index]
        result.phase = "Failed"
        result.reason = outcome.reason
        result.message = outcome.message
        result.startedAt = result.startedAt or now()
        result.finishedAt = now()
        if outcome.phase == "Failed" and run.plan.steps[index].continueOnFailure:
            await self._save(run)
        # Otherwise the run ends now, and the step's end is written with the run's (one
        # write): a step can never be found failed in a run that went on without it.
        await self._event(
            run,
            "StepRefused" if outcome.phase == "Refused" else "StepFailed",
            f"{result.name}: {outcome.message}",
            "Warning",
        )
        return outcome

    async def _finish(
        self,
        run: Run,
        phase: Literal["Succeeded", "Failed", "Refused", "Skipped"],
        reason: str,
        message: str,
        *,
        precondition: bool = False,
    ) -> None:
        """End the run. Its Event is posted before the status is written when the run is
        ours (a crash in between re-runs the finish: the Event may show twice, never
        not at all); a run that never started gets it after (its write may lose a race).
        A failed run with ``onFailure.escalateTo`` records its escalation in the same
        write, then creates it (``_create_escalation``)."""
        status = run.status
        status.phase, status.reason, status.message = phase, reason, message
        status.finishedAt = now()
        status.currentStep = None
        self._set_condition(run, "Running", "False", reason, message)
        self._set_condition(
            run, "Succeeded", "True" if phase == "Succeeded" else "False", reason, message
        )
        if status.silence is not None:  # before the escalation: a failure pages at once
            status.silence = await self.silencer.finish(status.silence)
        escalate = status.plan.escalateTo if phase == "Failed" and status.plan else None
        if escalate and status.escalatedTo is None:
            name = records.escalation_name(escalate, run.name)
            status.escalatedTo = Escalation(name=name, runbook=escalate, created=False)
        good = phase in ("Succeeded", "Skipped")
        type_: Literal["Normal", "Warning"] = "Normal" if good else "Warning"
        # The progress Events first, so that the run's last Event is its end.
        self._post_notices(run)
        await asyncio.gather(*run.notices, return_exceptions=True)
        if precondition:
            await self._save(run, precondition=True)
            await self._event(run, phase, message, type_)
        else:
            await self._event(run, phase, message, type_)
            await self._save(run)
        if status.escalatedTo is not None and status.escalatedTo.created is False:
            await self._create_escalation(run)

    async def _create_escalation(self, run: Run) -> None:
        """Create the escalation recorded in ``status.escalatedTo`` (under its deterministic
        name: a 409 means it exists), then mark it created. An error is raised to the
        executor, which tries again, after a restart or a takeover too."""
        escalation = run.status.escalatedTo
        assert escalation is not None and escalation.runbook is not None
        labels = {**(run.body["metadata"].get("labels") or {}), LABEL_ESCALATED_FROM: run.name}
        labels.pop(LABEL_GROUP, None)  # the failed run's group; _admit sets the target's
        spec = run.spec.model_dump(mode="json", exclude_none=True, exclude={"approved"})
        # An agent's proposal escalates to another proposal: it waits for a human too.
        annotations = {
            key: value
            for key, value in (run.body["metadata"].get("annotations") or {}).items()
            if key in (ANNOTATION_PROPOSED_BY, ANNOTATION_PROPOSAL_REASON)
        }
        body = records.remediation_body(
            escalation.name,
            run.namespace,
            escalation.runbook,
            spec=spec,
            labels=labels,
            annotations=annotations,
        )
        try:
            await self.kube.create(API_VERSION, REMEDIATIONS, run.namespace, body)
        except ApiError as exc:
            if exc.status != 409:
                log.error("could not escalate %s to %s: %s", run.name, escalation.runbook, exc)
                await self._event(run, "EscalationFailed", f"{exc}; trying again", "Warning")
                raise ApiError(503, "EscalationPending", str(exc)) from exc
        message = f"started {escalation.name} from runbook {escalation.runbook}"
        await self._event(run, "Escalated", message, "Warning")
        escalation.created = True
        await self._save(run)

    # -- persistence -------------------------------------------------------------------

    def _set_condition(
        self, run: Run, type_: str, status: Literal["True", "False"], reason: str, message: str
    ) -> None:
        condition = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message[:1000],
            lastTransitionTime=now(),
            observedGeneration=run.body["metadata"].get("generation"),
        )
        run.status.conditions = set_condition(run.status.conditions, condition)

    async def _save(self, run: Run, *, precondition: bool = False) -> None:
        """Write the run's status, always under the resourceVersion last read or written.

        With ``precondition`` (or a transition pending, ``Run.transition``), a 409 raises
        ``Conflict``: the run is read again and decided again. Otherwise the run is ours
        and a 409 means someone wrote something else (the receiver's ``alertResolvedAt``,
        an approval): read again, and write again if ``status.executor`` still names this
        replica — else ``LostOwnership``.
        """
        precondition = precondition or run.transition
        if self.identity:
            run.status.executor = self.identity
        run.status.observedGeneration = run.body["metadata"].get("generation")
        # alertResolvedAt belongs to the receiver, which may set it while a run is under
        # way: writing back the value read earlier would erase it.
        status = run.status.model_dump(mode="json", exclude={"alertResolvedAt"})
        for _ in range(SAVE_RETRIES):
            try:
                updated = await patch_status(
                    self.kube,
                    API_VERSION,
                    REMEDIATIONS,
                    run.namespace,
                    run.name,
                    status,
                    resource_version=run.resource_version,
                )
                break
            except Conflict:
                if precondition:
                    raise
            fresh = await self.kube.get_or_none(API_VERSION, REMEDIATIONS, run.namespace, run.name)
            if fresh is None:
                raise LostOwnership("the record was deleted")
            owner = (fresh.get("status") or {}).get("executor")
            if owner and owner != self.identity:
                raise LostOwnership(f"{owner} executes it now")
            run.resource_version = fresh["metadata"].get("resourceVersion")
        else:
            raise ApiError(
                409, "Conflict", f"remediation {run.namespace}/{run.name} keeps changing"
            )
        run.resource_version = updated.get("metadata", {}).get("resourceVersion")
        if self.index is not None:
            self.index.apply("MODIFIED", updated)
        run.transition = False
        events, run.deferred_events = run.deferred_events, []
        for reason, message in events:
            self._notice(run, reason, message)

    async def _event(
        self, run: Run, reason: str, message: str, type_: Literal["Normal", "Warning"] = "Normal"
    ) -> None:
        # A few at a time, first come first served: under a burst of alerts the Events queue
        # here, and the runs' own requests (their starts, their actions) go first.
        async with self._event_slots:
            await post_event(self.kube, run.body, reason, message, type_)

    def _notice(self, run: Run, reason: str, message: str) -> None:
        """Post a progress Event (Started, StepSucceeded) beside the run, off its path to
        the next action: once the attempt under way ends, or ``NOTICE_DELAY_SECONDS`` from
        now if that comes first (so a long step's Started is not held up). Under a burst of
        alerts the Events then queue at the API behind the actions, not before them.
        ``reconcile`` posts what is left and waits for them all before it returns."""
        run.pending_notices.append((reason, message))
        if run.notice_timer is None:
            loop = asyncio.get_running_loop()
            run.notice_timer = loop.call_later(NOTICE_DELAY_SECONDS, self._post_notices, run)

    def _post_notices(self, run: Run) -> None:
        if run.notice_timer is not None:
            run.notice_timer.cancel()
            run.notice_timer = None
        notices, run.pending_notices = run.pending_notices, []
        for reason, message in notices:
            run.notices.append(asyncio.create_task(self._event(run, reason, message)))
