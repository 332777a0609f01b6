"""The run's silence guardrail: an Alertmanager silence of its alert while the run works.

A runbook with ``guardrails.silence.enabled`` silences the alert that started a run, so
that nobody is paged for what is being fixed, and only for as long as the run works:

- **start** (``Silencer.start``, by the engine once a run begins, before its first status
  write, which records the outcome in ``status.silence``): equality matchers on the
  alert's ``alertname`` and the runbook's ``groupBy`` labels (those the alert has;
  ``matchers``), ``createdBy: mcp-remediator``, a comment naming the remediation
  (``namespace/name``), on Alertmanager 0.32 and later annotations naming it too, and an
  ``endsAt`` bounded by the run's remaining step timeouts and retry backoffs plus
  ``verificationSeconds``, at most ``MCP_SILENCE_MAX_SECONDS`` (``bound_seconds``): a
  crashed operator never leaves a long silence.
- **exactly once**: before creating, the silences with these matchers are read; an active
  one whose comment names this run is the one a start that was retried (a conflict, a
  crash before the status write, a takeover) made, and is taken instead of a second.
- **finish** (``Silencer.finish``, by the engine as the run ends, before the final status
  write and before any escalation is created): the silence is expired, so a failure pages
  through the live alert at once, and a success leaves the alert to resolve.
- **restart** (``Silencer.expire_finished``, by the executor when it takes up the runs):
  the silences of this operator (``createdBy`` and the comment) whose run has finished or
  is gone are expired.

Never blocking: Alertmanager unset, unreachable or refusing makes the run go on without a
silence (``NotCreated`` with the reason), or keep its silence until ``endsAt`` (reason
``ExpireFailed``); nothing here raises into the run. Runs without an alert (by hand) and
runs in dry-run are not silenced, and say so. The token never shows in a status or a log.
"""

from __future__ import annotations

import datetime
import logging
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import httpx

from mcp_remediator.kube.events import now
from mcp_remediator.models import (
    FINISHED_STEP_PHASES,
    AlertInfo,
    Plan,
    SilenceStatus,
    StepStatus,
)
from mcp_remediator.settings import Settings
from mcp_remediator.vendors.alertmanager import Alertmanager, AlertmanagerError, version_at_least

log = logging.getLogger(__name__)

CREATED_BY = "mcp-remediator"
ANNOTATIONS_SINCE = (0, 32)  # silence annotations (prometheus/alertmanager#4965)
LIVE_STATES = ("active", "pending")
_COMMENT = re.compile(r"remediation (?P<namespace>[a-z0-9-]+)/(?P<name>[a-z0-9.-]+) is running")


def comment(namespace: str, name: str) -> str:
    """The comment of a run's silence: how it is found again (``owner``)."""
    return (
        f"remediation {namespace}/{name} is running; mcp-remediator expires this silence "
        "the moment the run finishes"
    )


def owner(silence: Mapping[str, Any]) -> tuple[str, str] | None:
    """The run (namespace, name) a silence of this operator belongs to, else None."""
    if silence.get("createdBy") != CREATED_BY:
        return None
    found = _COMMENT.search(str(silence.get("comment") or ""))
    return (found["namespace"], found["name"]) if found else None


def matchers(labels: Mapping[str, str], group_by: Sequence[str]) -> dict[str, str]:
    """The alert's identifying labels: ``alertname`` and the ``groupBy`` labels it has (an
    empty value cannot be an Alertmanager matcher's value)."""
    found = {"alertname": labels.get("alertname", "")}
    found.update({name: labels[name] for name in group_by if labels.get(name)})
    return {name: value for name, value in found.items() if value}


def bound_seconds(plan: Plan, steps: Sequence[StepStatus], settings: Settings) -> int:
    """How long the run may still work: every unfinished step's attempts left at its
    timeout with the backoffs between them, plus the verification window; at most
    ``MCP_SILENCE_MAX_SECONDS``."""
    assert plan.silence is not None
    total = float(plan.silence.verificationSeconds)
    for step, result in zip(plan.steps, steps, strict=False):
        if result.phase in FINISHED_STEP_PHASES:
            continue
        attempts_left = max(step.retries + 1 - result.attempts, 1)
        total += attempts_left * step.timeoutSeconds
        total += sum(
            settings.retry_backoff_seconds * 2 ** (attempt - 1)
            for attempt in range(result.attempts + 1, step.retries + 1)
        )
    return min(math.ceil(total), settings.silence_max_seconds)


def _not_created(reason: str, message: str) -> SilenceStatus:
    return SilenceStatus(state="NotCreated", reason=reason, message=message)


def _time(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Silencer:
    """Creates and expires the silences of runs in ``MCP_ALERTMANAGER_URL``."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient):
        self.settings = settings
        self.alertmanager: Alertmanager | None = None
        if settings.alertmanager_url:
            self.alertmanager = Alertmanager(
                http,
                settings.alertmanager_url,
                settings.alertmanager_token,
                settings.alertmanager_timeout_seconds,
            )
        self._annotations: bool | None = None  # Alertmanager takes silence annotations

    async def start(
        self,
        namespace: str,
        name: str,
        alert: AlertInfo | None,
        plan: Plan,
        steps: Sequence[StepStatus],
        *,
        dry_run: bool,
    ) -> SilenceStatus | None:
        """The silence of a run that begins (None: its runbook does not silence)."""
        if plan.silence is None:
            return None
        match = matchers(alert.labels, plan.groupBy) if alert is not None else {}
        if not match:
            return _not_created(
                "NoAlert", "not silenced: this run has no alert (runs by hand have none)"
            )
        if dry_run:
            return _not_created("DryRun", "not silenced: the run is a dry-run")
        if self.alertmanager is None:
            return _not_created(
                "NotConfigured",
                "not silenced: guardrails.silence needs MCP_ALERTMANAGER_URL; the run goes on",
            )
        try:
            found = await self._find(namespace, name, match)
            if found is not None:
                return found
            return await self._create(namespace, name, match, plan, steps)
        except AlertmanagerError as exc:
            log.warning("remediation %s/%s: not silenced: %s", namespace, name, exc)
            return _not_created(
                "AlertmanagerUnavailable", f"not silenced, the run goes on without: {exc}"
            )

    async def _find(self, namespace: str, name: str, match: dict[str, str]) -> SilenceStatus | None:
        """The live silence this run created already (a retried start), if any."""
        assert self.alertmanager is not None
        for silence in await self.alertmanager.find(match):
            state = (silence.get("status") or {}).get("state")
            if owner(silence) == (namespace, name) and state in LIVE_STATES:
                return SilenceStatus(
                    state="Active",
                    id=str(silence.get("id") or ""),
                    matchers=match,
                    endsAt=str(silence.get("endsAt") or "") or None,
                    message="silencing the alert while the run works (found again after a "
                    "retried start)",
                )
        return None

    async def _create(
        self,
        namespace: str,
        name: str,
        match: dict[str, str],
        plan: Plan,
        steps: Sequence[StepStatus],
    ) -> SilenceStatus:
        assert self.alertmanager is not None
        starts = datetime.datetime.now(datetime.UTC)
        ends = starts + datetime.timedelta(seconds=bound_seconds(plan, steps, self.settings))
        body: dict[str, Any] = {
            "matchers": [
                {"name": label, "value": value, "isRegex": False, "isEqual": True}
                for label, value in match.items()
            ],
            "startsAt": _time(starts),
            "endsAt": _time(ends),
            "createdBy": CREATED_BY,
            "comment": comment(namespace, name),
        }
        if await self._takes_annotations():
            body["annotations"] = {"remediation": f"{namespace}/{name}"}
            if plan.runbook:
                body["annotations"]["runbook"] = f"{namespace}/{plan.runbook}"
        silence_id = await self.alertmanager.create(body)
        log.info("remediation %s/%s: silenced its alert (silence %s)", namespace, name, silence_id)
        return SilenceStatus(
            state="Active",
            id=silence_id,
            matchers=match,
            endsAt=_time(ends),
            message="silencing the alert while the run works",
        )

    async def _takes_annotations(self) -> bool:
        """Whether Alertmanager is 0.32 or later (asked once; older ones do not know them)."""
        assert self.alertmanager is not None
        if self._annotations is None:
            version = await self.alertmanager.version()
            self._annotations = version_at_least(version, ANNOTATIONS_SINCE)
        return self._annotations

    async def finish(self, silence: SilenceStatus) -> SilenceStatus:
        """The silence of a run that ends, expired now (unchanged when not active)."""
        if silence.state != "Active" or not silence.id:
            return silence
        try:
            if self.alertmanager is None:
                raise AlertmanagerError("MCP_ALERTMANAGER_URL is no longer set")
            await self.alertmanager.expire(silence.id)
        except AlertmanagerError as exc:
            log.warning("silence %s not expired: %s", silence.id, exc)
            return silence.model_copy(
                update={
                    "reason": "ExpireFailed",
                    "message": f"not expired ({exc}); it ends at {silence.endsAt} at the "
                    "latest, or when the operator next starts",
                }
            )
        return silence.model_copy(
            update={
                "state": "Expired",
                "reason": "",
                "expiredAt": now(),
                "message": "expired when the run finished",
            }
        )

    async def expire_finished(
        self, finished: Callable[[str, str], bool], namespaces: Collection[str] = ()
    ) -> int:
        """Expire this operator's live silences whose run ``finished`` (or is gone), in
        ``namespaces`` (empty: all); how many. Called when the operator takes up the runs."""
        if self.alertmanager is None:
            return 0
        expired = 0
        try:
            for silence in await self.alertmanager.find():
                run = owner(silence)
                state = (silence.get("status") or {}).get("state")
                if run is None or state not in LIVE_STATES or not silence.get("id"):
                    continue
                if namespaces and run[0] not in namespaces:
                    continue  # another operator's namespace: its run is not in our index
                if finished(*run):
                    await self.alertmanager.expire(str(silence["id"]))
                    log.info("expired silence %s of finished run %s/%s", silence["id"], *run)
                    expired += 1
        except AlertmanagerError as exc:
            log.warning("silences of finished runs not expired: %s", exc)
        return expired
