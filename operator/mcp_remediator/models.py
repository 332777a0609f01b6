"""Typed models of the two custom resources, McpRunbook and McpRemediation.

These models are the single source of the CRD schemas: ``tools.crdgen`` renders them into
``crds/*.yaml`` (``make generate``) and a test fails when the files drift. Field names
are the API's own camelCase names, so a body parses without aliases.

Imported by everything that reads or writes the resources; imports nothing of ours
beyond the constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

GROUP = "mcp.dese.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
RUNBOOKS = "mcprunbooks"
REMEDIATIONS = "mcpremediations"

LABEL_RUNBOOK = f"{GROUP}/runbook"
LABEL_ALERTNAME = f"{GROUP}/alertname"
LABEL_FINGERPRINT = f"{GROUP}/fingerprint"
LABEL_GROUP = f"{GROUP}/group"
LABEL_ESCALATED_FROM = f"{GROUP}/escalated-from"
# Set by the receiver on records of alerts it skipped (guardrails, suspend): the engine
# finishes such a record as Skipped instead of running it.
ANNOTATION_SKIP_REASON = f"{GROUP}/skip-reason"
ANNOTATION_SKIP_MESSAGE = f"{GROUP}/skip-message"
# Set by the MCP server (``mcpserver``) on the records an agent proposes: who proposed it
# (the MCP client's name) and why. A record carrying it always waits for approval, whatever
# its runbook says (``Engine._make_plan``).
ANNOTATION_PROPOSED_BY = f"{GROUP}/proposed-by"
ANNOTATION_PROPOSAL_REASON = f"{GROUP}/proposal-reason"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
SERVICE_ACCOUNT_DESCRIPTION = (
    "ServiceAccount of this object's own namespace that every step acts as (the operator "
    "impersonates it, so Kubernetes RBAC decides what a step may touch); empty: "
    "MCP_DEFAULT_SERVICE_ACCOUNT."
)

RemediationPhase = Literal[
    "Pending",
    "AwaitingApproval",
    "Running",
    "Succeeded",
    "Failed",
    "Refused",
    "Cancelled",
    "Skipped",
]
FINISHED_PHASES: frozenset[str] = frozenset(
    {"Succeeded", "Failed", "Refused", "Cancelled", "Skipped"}
)
StepPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Skipped", "DryRun"]
FINISHED_STEP_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Skipped", "DryRun"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Step(_Model):
    """One step of a runbook: an action with its parameters."""

    name: str = Field(
        description="Step name, a DNS label unique in the runbook.",
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL,
    )
    action: str = Field(description="The action to run (see the action reference).")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Action parameters; string values may hold templates "
        "({{ labels.X }}, {{ annotations.X }}, {{ steps.S.outputs.K }}).",
    )
    timeoutSeconds: int = Field(300, ge=1, le=86_400, description="Timeout of one attempt.")
    retries: int = Field(
        2, ge=0, le=10, description="Retries after a transient failure (exponential backoff)."
    )
    continueOnFailure: bool = Field(
        False, description="Carry on with the next step when this one fails."
    )


class Trigger(_Model):
    """An alert that starts the runbook: its name plus Alertmanager matchers."""

    alertname: str = Field(min_length=1, description="The alert's `alertname` label.")
    matchers: list[str] = Field(
        default_factory=list,
        description="Alertmanager matchers on the alert's labels, "
        'e.g. `severity=~"warning|critical"`.',
    )


class Target(_Model):
    """Defaults that steps inherit."""

    namespace: str | None = Field(
        None, description="Default namespace of the steps' targets (templated)."
    )


class SilenceGuardrail(_Model):
    """An Alertmanager silence of the run's alert while the run works (``silences``)."""

    enabled: bool = Field(
        False,
        description="Silence the alert that started a run (its alertname and groupBy labels, "
        "equality matchers) in MCP_ALERTMANAGER_URL while the run works; the silence is "
        "expired the moment the run finishes, so a failure pages at once. Runs without an "
        "alert (by hand) are not silenced.",
    )
    verificationSeconds: int = Field(
        300,
        ge=0,
        le=86_400,
        description="Added to the run's remaining step timeouts (and retry backoffs) to bound "
        "the silence's endsAt: time for the run's verification and its finish to be written. "
        "A crashed operator leaves no silence beyond it.",
    )


class Guardrails(_Model):
    """Limits on how often and how the runbook runs: they apply to every run of it, whether
    an alert, a user (``spec.runbookRef``) or an escalation started it."""

    groupBy: list[str] = Field(
        default_factory=lambda: ["alertname"],
        description="Alert labels forming the throttle group, like Alertmanager's group_by.",
    )
    cooldownSeconds: int = Field(
        600, ge=0, description="No new run for the same group within this time."
    )
    maxPerHour: int = Field(6, ge=0, description="Runs per group in any hour.")
    maxConcurrent: int = Field(1, ge=1, description="Unfinished runs per group at once.")
    dryRun: bool = Field(False, description="Record what would be done, change nothing.")
    requireApproval: bool = Field(
        False, description="Wait in AwaitingApproval until spec.approved is true."
    )
    silence: SilenceGuardrail = Field(
        default_factory=SilenceGuardrail,
        description="Silence the run's alert in Alertmanager while the run works.",
    )


class OnFailure(_Model):
    """What to do when a run fails."""

    escalateTo: str | None = Field(
        None, description="Runbook started with the same inputs when a run fails."
    )
    revert: bool = Field(
        False,
        description="When a step fails and ends the run, undo what the reversible steps "
        "(patchResource) changed, in reverse order, each only where the object still holds "
        "the step's values (a later change by someone else is kept and reported); the run "
        "ends with the condition Reverted. Steps that cannot be undone (a restart, a purge, "
        "a sync) are named in status.plan.irreversibleSteps.",
    )


class RunbookSpec(_Model):
    """McpRunbook: when to act, which steps, with which guardrails."""

    description: str = Field("", description="What the runbook is for.")
    serviceAccountName: str | None = Field(
        None, max_length=253, pattern=DNS_SUBDOMAIN, description=SERVICE_ACCOUNT_DESCRIPTION
    )
    suspend: bool = Field(
        False,
        description="Every run (from an alert, by hand or by escalation) is recorded as "
        "Skipped; nothing runs.",
    )
    triggers: list[Trigger] = Field(
        default_factory=list,
        description="Any trigger matching an alert starts a run. A runbook outside "
        "MCP_TRUSTED_NAMESPACES takes only alerts whose `namespace` label is its own namespace.",
    )
    target: Target = Field(default_factory=Target, description="Defaults inherited by steps.")
    steps: list[Step] = Field(min_length=1, description="Steps, run in order.")
    guardrails: Guardrails = Field(default_factory=Guardrails, description="Run limits.")
    onFailure: OnFailure = Field(default_factory=OnFailure, description="Failure handling.")


class Condition(_Model):
    """A Kubernetes-convention condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    lastTransitionTime: str | None = None
    observedGeneration: int | None = None


def set_condition(conditions: Sequence[Condition], new: Condition) -> list[Condition]:
    """``conditions`` with ``new`` in place of the one of its type, like apimachinery's
    ``meta.SetStatusCondition``: the previous ``lastTransitionTime`` is kept unless the
    status flips."""
    previous = next((c for c in conditions if c.type == new.type), None)
    if previous is not None and previous.status == new.status:
        kept = previous.lastTransitionTime or new.lastTransitionTime
        new = new.model_copy(update={"lastTransitionTime": kept})
    return [*(c for c in conditions if c.type != new.type), new]


class RunbookCounters(_Model):
    """How the runbook's runs ended, counted by the operator."""

    triggered: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0


class RunbookStatus(_Model):
    """McpRunbook status."""

    observedGeneration: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    lastTriggeredAt: str | None = None
    counters: RunbookCounters = Field(default_factory=RunbookCounters)


class RunbookRef(_Model):
    """A runbook in the remediation's namespace."""

    name: str = Field(min_length=1, max_length=253)


class AlertInfo(_Model):
    """The Alertmanager alert that started the run (set by the receiver)."""

    fingerprint: str = ""
    status: str = "firing"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None
    endsAt: str | None = None
    generatorURL: str | None = None
    groupKey: str | None = None
    notificationReason: str | None = Field(
        None,
        description="Why Alertmanager sent the notification that created this record (its "
        "notification_reason, from 0.32 on: 'first notification', 'new alerts added', "
        "'repeat interval elapsed', ...); absent with older Alertmanagers.",
    )


class RemediationSpec(_Model):
    """McpRemediation: one execution of a runbook or of inline steps."""

    runbookRef: RunbookRef | None = Field(None, description="The runbook to run.")
    steps: list[Step] = Field(
        default_factory=list, description="Inline steps (instead of runbookRef)."
    )
    serviceAccountName: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="With inline steps: " + SERVICE_ACCOUNT_DESCRIPTION + " With runbookRef "
        "the runbook's serviceAccountName applies and this must be empty.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Template labels; overlay the alert's labels."
    )
    alert: AlertInfo | None = Field(None, description="The alert behind this run.")
    dryRun: bool = Field(False, description="Record what would be done, change nothing.")
    approved: bool = Field(False, description="Approval for runbooks that require it.")
    ttlSecondsAfterFinished: int | None = Field(
        None, ge=0, description="Delete the record this long after it finished."
    )


class Plan(_Model):
    """The steps and policy frozen when the run started (runbook edits do not change it)."""

    runbook: str | None = None
    runbookGeneration: int | None = None
    namespace: str | None = None
    serviceAccountName: str | None = Field(
        None, description="The ServiceAccount (of the remediation's namespace) steps act as."
    )
    steps: list[Step] = Field(default_factory=list)
    dryRun: bool = False
    requireApproval: bool = False
    escalateTo: str | None = None
    silence: SilenceGuardrail | None = Field(
        None, description="The runbook's silence guardrail, when enabled."
    )
    groupBy: list[str] = Field(
        default_factory=list,
        description="The runbook's groupBy labels: with alertname, the silence's matchers.",
    )
    revert: bool = Field(False, description="onFailure.revert of the runbook.")
    irreversibleSteps: list[str] | None = Field(
        None,
        description="With revert: the steps that change something and cannot be undone "
        "(their actions have no revert).",
    )


RevertPhase = Literal["Reverted", "Unchanged", "Conflict", "Failed"]


class StepRevert(_Model):
    """How a reversible step's change was undone after the run failed (onFailure.revert)."""

    phase: RevertPhase = Field(
        description="Reverted: the previous values are back; Unchanged: the step had "
        "changed nothing; Conflict: someone changed the object after the step, their values "
        "are kept; Failed: the revert could not be written."
    )
    message: str = ""
    restored: list[str] = Field(
        default_factory=list, description="The paths restored (absent ones removed again)."
    )
    finishedAt: str | None = None


class StepStatus(_Model):
    """The result of one step."""

    name: str
    action: str
    phase: StepPhase = "Pending"
    reason: str = Field("", description="Why a step failed (e.g. Forbidden, Timeout).")
    attempts: int = 0
    startedAt: str | None = None
    finishedAt: str | None = None
    message: str = ""
    outputs: dict[str, str] = Field(default_factory=dict)
    revert: StepRevert | None = Field(
        None, description="With onFailure.revert, after the run failed: what was undone."
    )


class Escalation(_Model):
    """A link between a failed run and the run it escalated to."""

    name: str
    runbook: str | None = None
    created: bool | None = Field(
        None,
        description="On escalatedTo: the escalation exists (false: recorded, to be created; "
        "the executor creates it, under this deterministic name, until it is).",
    )


SilenceState = Literal["Active", "Expired", "NotCreated"]


class SilenceStatus(_Model):
    """The Alertmanager silence of the run's alert (``guardrails.silence``)."""

    state: SilenceState = Field(
        description="Active: silencing while the run works; Expired: ended when the run "
        "finished; NotCreated: the run went on without one (reason says why)."
    )
    reason: str = Field(
        "",
        description="Why not created or not expired (NoAlert, DryRun, NotConfigured, "
        "AlertmanagerUnavailable, ExpireFailed).",
    )
    id: str = Field("", description="The silence's id in Alertmanager.")
    matchers: dict[str, str] = Field(
        default_factory=dict, description="The equality matchers (label: value) it silences."
    )
    endsAt: str | None = Field(None, description="When Alertmanager ends it at the latest.")
    expiredAt: str | None = None
    message: str = ""


class RemediationStatus(_Model):
    """McpRemediation status."""

    phase: RemediationPhase = "Pending"
    reason: str = ""
    message: str = ""
    startedAt: str | None = None
    finishedAt: str | None = None
    alertResolvedAt: str | None = None
    observedGeneration: int | None = None
    currentStep: str | None = None
    steps: list[StepStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    plan: Plan | None = None
    escalatedTo: Escalation | None = None
    escalatedFrom: Escalation | None = None
    silence: SilenceStatus | None = Field(
        None, description="The Alertmanager silence of the run's alert (guardrails.silence)."
    )
    executor: str | None = Field(
        None,
        description="The replica executing (or that executed) the run: status writes of a "
        "run in progress are made only by it; a new leader takes a run over by writing its "
        "own name here.",
    )
