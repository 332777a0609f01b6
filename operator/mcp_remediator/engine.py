"""The remediation engine: runs an McpRemediation's steps and records every result.

``Engine.reconcile(namespace, name)`` is the one entry point (called by the Kopf handlers
on create, resume and approval). It reads the object fresh from the API and continues
from its status, so it can be called any number of times, by a restarted operator too:
a step whose phase is finished never runs again, and a step interrupted mid-attempt runs
its next attempt with the outputs it checkpointed (``rolloutRestart`` uses them to never
restart twice).

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
guardrails first (``admission``), so that every run of a runbook is counted and limited.

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
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from mcp_remediator import admission, records, redact
from mcp_remediator.actions import REGISTRY, ActionContext, ActionParams, ActionResult, ActionSpec
from mcp_remediator.clients import Clients
from mcp_remediator.errors import Refused, StepFailed
from mcp_remediator.kube import refusals
from mcp_remediator.kube.client import ApiError, KubeApi
from mcp_remediator.kube.events import now, post_event
from mcp_remediator.kube.status import Conflict, patch_status, retry_on_conflict
from mcp_remediator.models import (
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
from mcp_remediator.runbook import templates
from mcp_remediator.runbook.validation import check_steps, pydantic_message
from mcp_remediator.settings import Settings

log = logging.getLogger(__name__)
INTERNAL_ERROR = "InternalError"


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
        self, clients: Clients, settings: Settings, *, observers: Sequence[StepObserver] = ()
    ):
        self.clients = clients
        self.settings = settings
        self.kube = clients.kube
        self.observers = tuple(observers)

    async def reconcile(self, namespace: str, name: str) -> None:
        """Advance the remediation as far as it can go now."""

        async def attempt() -> None:
            body = await self.kube.get_or_none(API_VERSION, REMEDIATIONS, namespace, name)
            if body is None:
                return
            run = Run(body)
            try:
                await self._advance(run)
            except (ApiError, Conflict):
                raise  # transient: Kopf (or retry_on_conflict) tries again
            except Exception as exc:
                await self._internal_error(run, exc)

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
            return
        if run.invalid is not None:
            await self._finish(run, "Failed", *run.invalid, precondition=True)
            return
        if status.plan is None:
            try:
                refusals.check_run_namespace(self.settings, run.namespace)
            except Refused as exc:
                await self._finish(run, "Refused", exc.reason, exc.message, precondition=True)
                return
            await self._admit(run)
        annotations = run.body["metadata"].get("annotations") or {}
        if status.plan is None and ANNOTATION_SKIP_REASON in annotations:
            reason = annotations[ANNOTATION_SKIP_REASON]
            message = annotations.get(ANNOTATION_SKIP_MESSAGE, reason)
            await self._finish(run, "Skipped", reason, message, precondition=True)
            return
        if status.plan is None:
            try:
                status.plan = await self._make_plan(run)
            except Refused as exc:
                await self._finish(run, "Refused", exc.reason, exc.message, precondition=True)
                return
            except PlanError as exc:
                await self._finish(run, "Failed", exc.reason, exc.message, precondition=True)
                return
            status.steps = [StepStatus(name=s.name, action=s.action) for s in status.plan.steps]
            escalated_from = run.body["metadata"].get("labels", {}).get(LABEL_ESCALATED_FROM)
            if escalated_from:
                status.escalatedFrom = Escalation(name=escalated_from)
            if status.plan.requireApproval and not run.spec.approved:
                status.phase, status.reason = "AwaitingApproval", "ApprovalRequired"
                status.message = "set spec.approved=true to run the steps"
                await self._save(run, precondition=True)
                await self._event(run, "AwaitingApproval", status.message)
                return
        elif status.phase == "AwaitingApproval":
            if not run.spec.approved:
                return
        if status.phase != "Running":
            status.phase, status.reason = "Running", "Started"
            status.message = f"running {len(run.plan.steps)} steps"
            if self._dry_run(run):
                status.message += " in dry-run: nothing will be changed"
            status.startedAt = now()
            self._set_condition(run, "Running", "True", "Started", status.message)
            await self._save(run, precondition=True)
            await self._event(run, "Started", status.message)
        await self._run_steps(run)

    async def _admit(self, run: Run) -> None:
        """The runbook's guardrails for a run the receiver did not judge (by hand or by
        escalation; see ``admission``): labels it with its runbook and group, and on a hit
        adds the skip annotations, with which ``_advance`` finishes it as Skipped."""
        metadata = await admission.admit(self.kube, run.body)
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
        dry_run, approval, escalate = spec.dryRun, False, None
        account = spec.serviceAccountName
        if spec.runbookRef is not None and spec.serviceAccountName:
            raise PlanError(
                "InvalidSpec",
                "spec.serviceAccountName is for inline steps; a run of a runbook acts as the "
                "runbook's spec.serviceAccountName",
            )
        if spec.runbookRef is not None:
            runbook_name = spec.runbookRef.name
            body = await self.kube.get_or_none(API_VERSION, RUNBOOKS, run.namespace, runbook_name)
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
            account = runbook.serviceAccountName
        else:
            steps = spec.steps
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
        try:
            found = await self.kube.get_or_none("v1", "serviceaccounts", run.namespace, account)
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
            result.attempts += 1
            result.phase = "Running"
            result.startedAt = result.startedAt or now()
            result.message = f"attempt {result.attempts} of {step.retries + 1}"
            await self._save(run)
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
            try:
                done = await self._attempt(spec, params, ctx, step.timeoutSeconds)
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
                await self._save(run)
                await self._event(run, "StepSucceeded", f"{step.name}: {done.message}")
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
        await self._save(run)
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
        status = run.status
        status.phase, status.reason, status.message = phase, reason, message
        status.finishedAt = now()
        status.currentStep = None
        self._set_condition(run, "Running", "False", reason, message)
        self._set_condition(
            run, "Succeeded", "True" if phase == "Succeeded" else "False", reason, message
        )
        await self._save(run, precondition=precondition)
        good = phase in ("Succeeded", "Skipped")
        await self._event(run, phase, message, "Normal" if good else "Warning")
        if phase == "Failed" and status.plan is not None and status.plan.escalateTo:
            await self._escalate(run, status.plan.escalateTo)

    async def _escalate(self, run: Run, runbook: str) -> None:
        name = records.escalation_name(runbook, run.name)
        labels = {**(run.body["metadata"].get("labels") or {}), LABEL_ESCALATED_FROM: run.name}
        labels.pop(LABEL_GROUP, None)  # the failed run's group; _admit sets the target's
        spec = run.spec.model_dump(mode="json", exclude_none=True, exclude={"approved"})
        body = records.remediation_body(name, run.namespace, runbook, spec=spec, labels=labels)
        try:
            await self.kube.create(API_VERSION, REMEDIATIONS, run.namespace, body)
        except ApiError as exc:
            if exc.status != 409:
                log.error("could not escalate %s to %s: %s", run.name, runbook, exc)
                await self._event(run, "EscalationFailed", str(exc), "Warning")
                return
        run.status.escalatedTo = Escalation(name=name, runbook=runbook)
        await self._save(run)
        await self._event(run, "Escalated", f"started {name} from runbook {runbook}", "Warning")

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
        """Write the run's status; with ``precondition``, only onto the version read
        (``Conflict`` otherwise)."""
        run.status.observedGeneration = run.body["metadata"].get("generation")
        # alertResolvedAt belongs to the receiver, which may set it while a run is under
        # way: writing back the value read earlier would erase it.
        status = run.status.model_dump(mode="json", exclude={"alertResolvedAt"})
        updated = await patch_status(
            self.kube,
            API_VERSION,
            REMEDIATIONS,
            run.namespace,
            run.name,
            status,
            resource_version=run.resource_version if precondition else None,
        )
        run.resource_version = updated.get("metadata", {}).get("resourceVersion")

    async def _event(
        self, run: Run, reason: str, message: str, type_: Literal["Normal", "Warning"] = "Normal"
    ) -> None:
        await post_event(self.kube, run.body, reason, message, type_)
