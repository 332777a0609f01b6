"""Verify-then-revert: undo a failed run's reversible steps (``onFailure.revert``).

Called by the engine on its failure path only (``Engine._revert``), once the step that ends
the run has failed and before the run is finished: every step whose action has a
``revert`` (``patchResource``) and whose outputs hold the snapshot it checkpointed before
writing is undone, last step first, with the step's own client (its ServiceAccount,
dry-run, the refusal layer), exactly as the step wrote. Each step's outcome is recorded in
its ``status.steps[].revert`` and saved at once, so a restart resumes with the steps not
yet undone; a step found undone already (its revert landed, its record did not) is
recorded without a second write, as the action's revert sees its previous values in place.

The outcome is the run's ``Reverted`` condition: True when every change was undone (or
there was none to undo), False with reason ``RevertConflict`` or ``RevertFailed``
otherwise, its message listing what was restored and what was not.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from mcp_remediator.actions import REGISTRY
from mcp_remediator.errors import Refused
from mcp_remediator.kube.client import ApiError, KubeApi
from mcp_remediator.kube.events import now
from mcp_remediator.models import Plan, Step, StepRevert, StepStatus

log = logging.getLogger(__name__)
# Final: not tried again after a restart. Failed is tried again (a 503, a lost Lease).
REVERT_DONE: frozenset[str] = frozenset({"Reverted", "Unchanged", "Conflict"})


@dataclass(frozen=True)
class Outcome:
    """The ``Reverted`` condition of the run."""

    status: Literal["True", "False"]
    reason: str
    message: str


def irreversible_steps(steps: list[Step]) -> list[str]:
    """The steps that change something and cannot be undone: their actions write and have
    no ``revert`` (a restart, a purge, a sync, a notification)."""
    names = []
    for step in steps:
        spec = REGISTRY.get(step.action)
        if spec is not None and spec.writes and spec.revert is None:
            names.append(step.name)
    return names


def reversible(step: Step, result: StepStatus) -> bool:
    spec = REGISTRY.get(step.action)
    # Steps that ran (a failed one may have written before failing); Pending, Skipped and
    # DryRun steps changed nothing.
    return spec is not None and spec.revert is not None and result.phase in ("Succeeded", "Failed")


async def revert_steps(
    plan: Plan,
    results: list[StepStatus],
    kube: KubeApi,
    save: Callable[[], Awaitable[None]],
) -> Outcome:
    """Undo the reversible steps of a failed run, last first; ``save`` persists the status
    after each step (``results`` is the run's status.steps, recorded in place)."""
    for step, result in reversed(list(zip(plan.steps, results, strict=True))):
        if not reversible(step, result):
            continue
        if result.revert is not None and result.revert.phase in REVERT_DONE:
            continue  # done before a restart
        spec = REGISTRY[step.action]
        assert spec.revert is not None
        try:
            done = await spec.revert(result.outputs, kube)
            result.revert = StepRevert(
                phase=done.phase, message=done.message, restored=list(done.restored)
            )
        except Refused as exc:
            result.revert = StepRevert(phase="Failed", message=exc.message)
        except ApiError as exc:
            # Recorded, not retried: a 403 or a refusal would fail again; the run ends
            # with what could not be restored named in its condition.
            result.revert = StepRevert(phase="Failed", message=f"{exc.reason}: {exc}")
        result.revert.finishedAt = now()
        log.info("revert of step %s: %s", step.name, result.revert.message)
        await save()
    return outcome(plan, results)


def outcome(plan: Plan, results: list[StepStatus]) -> Outcome:
    """The run's ``Reverted`` condition from the steps' revert records."""
    restored, kept, failed = [], [], []
    for result in reversed(results):
        revert = result.revert
        if revert is None:
            continue
        if revert.phase == "Reverted":
            restored.append(f"{result.name}: {', '.join(revert.restored)}")
        elif revert.phase == "Conflict":
            kept.append(f"{result.name}: {revert.message}")
        elif revert.phase == "Failed":
            failed.append(f"{result.name}: {revert.message}")
    parts = [f"restored {'; '.join(restored)}" if restored else "nothing to restore"]
    if kept:
        parts.append(f"conflicts: {'; '.join(kept)}")
    if failed:
        parts.append(f"failed: {'; '.join(failed)}")
    if plan.irreversibleSteps:
        parts.append(f"not reversible: {', '.join(plan.irreversibleSteps)}")
    message = "; ".join(parts)
    if failed:
        return Outcome("False", "RevertFailed", message)
    if kept:
        return Outcome("False", "RevertConflict", message)
    return Outcome("True", "Reverted" if restored else "NothingToRevert", message)
