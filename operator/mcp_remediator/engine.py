"""The remediation engine: runs an McpRemediation's steps and records every result.

``Engine.reconcile(namespace, name)`` is the one entry point (called by the Kopf handlers
on create, resume and approval). It reads the object fresh from the API and continues
from its status, so it can be called any number of times, by a restarted operator too:
a step whose phase is finished never runs again, and a step interrupted mid-attempt runs
its next attempt with the outputs it checkpointed (``rolloutRestart`` uses them to never
restart twice).

The run's plan (steps, namespace, dry-run, approval, escalation) is frozen into
``status.plan`` when the run starts, so editing the runbook in Git does not change a run
already under way. Transitions that race with the receiver (Pending → Running versus
Pending → Cancelled) are written with a ``resourceVersion`` precondition.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any, Literal

from pydantic import ValidationError

from mcp_remediator.actions import REGISTRY, ActionContext, ActionResult, ActionSpec
from mcp_remediator.clients import Clients
from mcp_remediator.errors import Refused, StepFailed
from mcp_remediator.kube.client import ApiError
from mcp_remediator.kube.events import now, post_event
from mcp_remediator.models import (
    ANNOTATION_SKIP_MESSAGE,
    ANNOTATION_SKIP_REASON,
    API_VERSION,
    FINISHED_PHASES,
    FINISHED_STEP_PHASES,
    LABEL_ESCALATED_FROM,
    LABEL_RUNBOOK,
    REMEDIATIONS,
    RUNBOOKS,
    Condition,
    Escalation,
    Plan,
    RemediationSpec,
    RemediationStatus,
    RunbookSpec,
    StepStatus,
)
from mcp_remediator.runbook import templates
from mcp_remediator.runbook.validation import check_steps, pydantic_message
from mcp_remediator.settings import Settings

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 5


class PlanError(Exception):
    """The remediation cannot start: a missing or invalid runbook, invalid steps."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class Conflict(Exception):
    """The object changed under us; read it again and decide again."""


class Run:
    """One remediation being executed: its spec, its status, and how to save it."""

    def __init__(self, body: dict[str, Any]):
        self.body = body
        meta = body["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.resource_version: str | None = meta.get("resourceVersion")
        self.spec = RemediationSpec.model_validate(body.get("spec") or {})
        self.status = RemediationStatus.model_validate(body.get("status") or {})
        self.failure_reason = "StepFailed"

    @property
    def plan(self) -> Plan:
        assert self.status.plan is not None
        return self.status.plan


def escalation_name(runbook: str, failed: str) -> str:
    digest = hashlib.sha256(f"{runbook}\0{failed}".encode()).hexdigest()[:10]
    return f"{runbook[:52]}-{digest}"


# Told of every action attempt: (action, outcome, seconds); the receiver's metrics use it.
StepObserver = Callable[[str, str, float], None]


class Engine:
    """Executes remediations with the given clients and settings."""

    def __init__(self, clients: Clients, settings: Settings):
        self.clients = clients
        self.settings = settings
        self.kube = clients.kube
        self.step_observers: list[StepObserver] = []

    async def reconcile(self, namespace: str, name: str) -> None:
        """Advance the remediation as far as it can go now."""
        for _ in range(MAX_CONFLICT_RETRIES):
            body = await self.kube.get_or_none(API_VERSION, REMEDIATIONS, namespace, name)
            if body is None:
                return
            try:
                await self._advance(Run(body))
                return
            except Conflict:
                log.info("remediation %s/%s changed meanwhile; reading it again", namespace, name)
        raise ApiError(409, "Conflict", f"remediation {namespace}/{name} keeps changing")

    # -- state transitions -------------------------------------------------------------

    async def _advance(self, run: Run) -> None:
        status = run.status
        if status.phase in FINISHED_PHASES:
            return
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

    async def _make_plan(self, run: Run) -> Plan:
        spec = run.spec
        if (spec.runbookRef is None) == (not spec.steps):
            raise PlanError("InvalidSpec", "give exactly one of spec.runbookRef or spec.steps")
        runbook_name: str | None = None
        generation: int | None = None
        namespace: str | None = None
        dry_run, approval, escalate = spec.dryRun, False, None
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
        else:
            steps = spec.steps
        if namespace is not None:
            try:
                namespace = templates.render(namespace, self._inputs(run, {}))
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
            if outcome == "ok":
                continue
            if outcome == "failed" and step.continueOnFailure:
                failed.append(step.name)
                continue
            for later in status.steps[index + 1 :]:
                later.phase, later.message = "Skipped", f"not run: step {step.name} did not succeed"
            if outcome == "refused":
                await self._finish(run, "Refused", run.failure_reason, result.message)
            else:
                await self._finish(
                    run, "Failed", run.failure_reason, f"step {step.name}: {result.message}"
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

    async def _run_step(self, run: Run, index: int) -> Literal["ok", "failed", "refused"]:
        step = run.plan.steps[index]
        result = run.status.steps[index]
        spec = REGISTRY.get(step.action)
        outputs = {
            s.name: s.outputs
            for s in run.status.steps[:index]
            if s.phase in ("Succeeded", "DryRun")
        }
        dry_run = self._dry_run(run)
        namespace = run.plan.namespace or run.namespace
        try:
            if spec is None:
                raise StepFailed(f"unknown action {step.action!r}", reason="UnknownAction")
            rendered = templates.render(step.params, self._inputs(run, outputs))
            try:
                params = spec.parse(rendered)
            except ValidationError as exc:
                raise StepFailed(
                    f"invalid params after templating: {pydantic_message(exc)}",
                    reason="InvalidParams",
                ) from exc
            if spec.validate is not None:
                spec.validate(params, self.settings, namespace)
        except Refused as exc:
            return await self._end_step(run, index, "refused", exc.reason, exc.message)
        except StepFailed as exc:
            return await self._end_step(run, index, "failed", exc.reason, exc.message)

        clients = self.clients
        if dry_run:
            clients = Clients(self.settings, clients.kube.with_dry_run(), clients.http)

        async def checkpoint(values: Any) -> None:
            result.outputs = dict(values)
            await self._save(run)

        while True:
            result.attempts += 1
            result.phase = "Running"
            result.startedAt = result.startedAt or now()
            result.message = f"attempt {result.attempts} of {step.retries + 1}"
            await self._save(run)
            loop = asyncio.get_running_loop()
            ctx = ActionContext(
                clients=clients,
                settings=self.settings,
                namespace=namespace,
                dry_run=dry_run,
                remediation=f"{run.namespace}/{run.name}",
                step=step.name,
                attempt=result.attempts,
                deadline=loop.time() + step.timeoutSeconds,
                outputs=dict(result.outputs),
                log=logging.LoggerAdapter(log, {"remediation": run.name, "step": step.name}),
                checkpoint_fn=checkpoint,
            )
            try:
                done = await self._attempt(spec, params, ctx, step.timeoutSeconds)
            except Refused as exc:
                return await self._end_step(run, index, "refused", exc.reason, exc.message)
            except StepFailed as exc:
                error: StepFailed = exc
            except TimeoutError:
                error = StepFailed(
                    f"timed out after {step.timeoutSeconds}s", reason="Timeout", transient=True
                )
            except ApiError as exc:
                error = exc.as_step_failure("Kubernetes API")
            except Exception as exc:
                log.exception("action %s failed unexpectedly", step.action)
                error = StepFailed(f"internal error: {exc!r}", reason="InternalError")
            else:
                result.phase = "DryRun" if dry_run else "Succeeded"
                result.outputs = {str(k): str(v) for k, v in done.outputs.items()}
                result.message = done.message
                result.finishedAt = now()
                await self._save(run)
                await self._event(run, "StepSucceeded", f"{step.name}: {done.message}")
                return "ok"
            if not error.transient or result.attempts > step.retries:
                return await self._end_step(run, index, "failed", error.reason, error.message)
            delay = self.settings.retry_backoff_seconds * 2 ** (result.attempts - 1)
            result.message = (
                f"attempt {result.attempts} failed: {error.message}; retrying in {delay:g}s"
            )
            await self._save(run)
            await asyncio.sleep(delay)

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
            for observe in self.step_observers:
                observe(spec.name, outcome, loop.time() - started)

    async def _end_step(
        self, run: Run, index: int, outcome: Literal["failed", "refused"], reason: str, message: str
    ) -> Literal["failed", "refused"]:
        result = run.status.steps[index]
        result.phase = "Failed"
        result.message = message
        result.startedAt = result.startedAt or now()
        result.finishedAt = now()
        run.failure_reason = reason
        await self._save(run)
        await self._event(
            run,
            "StepRefused" if outcome == "refused" else "StepFailed",
            f"{result.name}: {message}",
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
        name = escalation_name(runbook, run.name)
        labels = dict(run.body["metadata"].get("labels") or {})
        labels[LABEL_RUNBOOK] = runbook
        labels[LABEL_ESCALATED_FROM] = run.name
        spec = run.spec.model_dump(mode="json", exclude_none=True)
        spec["runbookRef"] = {"name": runbook}
        spec.pop("approved", None)
        body = {
            "kind": "McpRemediation",
            "metadata": {"name": name, "namespace": run.namespace, "labels": labels},
            "spec": spec,
        }
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

    def _set_condition(self, run: Run, type_: str, status: str, reason: str, message: str) -> None:
        conditions = [c for c in run.status.conditions if c.type != type_]
        previous = next((c for c in run.status.conditions if c.type == type_), None)
        changed = previous is None or previous.status != status
        conditions.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message[:1000],
                lastTransitionTime=now()
                if changed or previous is None
                else previous.lastTransitionTime,
                observedGeneration=run.body["metadata"].get("generation"),
            )
        )
        run.status.conditions = conditions

    async def _save(self, run: Run, *, precondition: bool = False) -> None:
        run.status.observedGeneration = run.body["metadata"].get("generation")
        # alertResolvedAt belongs to the receiver, which may set it while a run is under
        # way: writing back the value read earlier would erase it.
        status = run.status.model_dump(mode="json", exclude={"alertResolvedAt"})
        patch: dict[str, Any] = {"status": status}
        if precondition:
            patch["metadata"] = {"resourceVersion": run.resource_version}
        try:
            updated = await self.kube.patch(
                API_VERSION,
                REMEDIATIONS,
                run.namespace,
                run.name,
                patch,
                subresource="status",
            )
        except ApiError as exc:
            if exc.status == 409 and precondition:
                raise Conflict() from exc
            raise
        run.resource_version = updated.get("metadata", {}).get("resourceVersion")

    async def _event(
        self, run: Run, reason: str, message: str, type_: Literal["Normal", "Warning"] = "Normal"
    ) -> None:
        await post_event(self.kube, run.body, reason, message, type_)
