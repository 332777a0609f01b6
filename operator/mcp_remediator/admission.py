"""The runbook's guardrails for the runs the receiver did not create: by hand, by escalation.

The receiver judges each alert occurrence before it creates the record (``alerts.ingest``).
A run of a runbook created otherwise — an McpRemediation applied by hand with
``spec.runbookRef``, or the engine's escalation of a failed run to ``onFailure.escalateTo``
— is judged here, by the engine, before its plan is made (``Engine._admit``), by the same
rules (``runbook.guardrails``: suspend, maxConcurrent, cooldownSeconds, maxPerHour) over
the same records:

- its group is the runbook's ``groupBy`` over the run's labels (``spec.alert.labels``
  overlaid by ``spec.labels``, as the templates see them); an escalation carries the
  failed run's labels but not its group (``Engine._escalate``): it gets its own here;
- the records counted are those of the runbook and group (from the executor's index, or
  listed by the runbook and group labels) and the runs of the runbook not labelled yet (other
  runs by hand), of which only those created before the run: by ``creationTimestamp``,
  then by name (``guardrails.admit``), each as it stood at the run's creation. Creation
  times have whole seconds, so the run is judged only once its second is over (a wait of
  at most ``SETTLE``): every run that may count as earlier exists by then, and of two runs
  created together one starts, whichever the engine takes first.

The run then gets the labels ``mcp.dese.ai/runbook`` and ``mcp.dese.ai/group``, so that
later runs, the receiver's included, count it; on a hit also the skip annotations, with
which the engine finishes it ``Skipped`` with the guardrail's reason, as it finishes the
receiver's. The receiver's own records (named after their alert occurrence,
``records.is_alert_record``) are not judged twice.

Whoever may create McpRemediations in a namespace can also create a run with inline steps,
which no runbook guards: these guardrails stop accidents and storms, not a determined user.
A run by hand and an alert of its group arriving in the same instant, before the run is
labelled, may both start.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from mcp_remediator import records
from mcp_remediator.index import RecordIndex, RunbookStore
from mcp_remediator.kube.client import KubeApi
from mcp_remediator.models import (
    ANNOTATION_SKIP_MESSAGE,
    ANNOTATION_SKIP_REASON,
    API_VERSION,
    LABEL_GROUP,
    LABEL_RUNBOOK,
    REMEDIATIONS,
    RUNBOOKS,
    RunbookSpec,
)
from mcp_remediator.runbook import guardrails

# From a run's creationTimestamp (whole seconds) until every run created in the same second
# exists: the second itself, and a margin for the API server's and the operator's clocks.
SETTLE = datetime.timedelta(seconds=1.25)


def runbook_to_judge(body: Mapping[str, Any]) -> str | None:
    """The runbook whose guardrails the run ``body`` must pass before it starts, or ``None``:
    inline steps, a record of the receiver's, already marked skipped, or already started."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    runbook = (spec.get("runbookRef") or {}).get("name")
    if not runbook or ANNOTATION_SKIP_REASON in (meta.get("annotations") or {}):
        return None
    if status.get("plan") or (status.get("phase") or "Pending") != "Pending":
        return None
    if records.is_alert_record(meta.get("name", ""), spec):
        return None
    return str(runbook)


def group_of(body: Mapping[str, Any], group_by: Iterable[str]) -> str:
    """The run's group: ``groupBy`` over its alert's labels overlaid by ``spec.labels``."""
    spec = body.get("spec") or {}
    labels = {**((spec.get("alert") or {}).get("labels") or {}), **(spec.get("labels") or {})}
    return records.group_key(group_by, labels)


def _of_runbook_and_group(
    bodies: Iterable[Mapping[str, Any]], runbook: str, spec: RunbookSpec, group: str
) -> Iterator[Mapping[str, Any]]:
    for body in bodies:
        ref = ((body.get("spec") or {}).get("runbookRef") or {}).get("name")
        if ref == runbook and group_of(body, spec.guardrails.groupBy) == group:
            yield body


async def admit(
    kube: KubeApi,
    body: Mapping[str, Any],
    *,
    index: RecordIndex | None = None,
    runbooks: RunbookStore | None = None,
) -> dict[str, Any] | None:
    """Judge the run ``body`` by its runbook's guardrails and label it (see the module).

    The runbook and the group's records come from the executor's ``runbooks`` and ``index``
    when given (the index once synced), else from the API.

    Returns the patched object's metadata, or ``None`` when nothing was written: nothing to
    judge, or a runbook that is missing or invalid (the engine then fails the run).
    """
    runbook = runbook_to_judge(body)
    if runbook is None:
        return None
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    found = runbooks.get(namespace, runbook) if runbooks is not None else None
    if found is None:
        found = await kube.get_or_none(API_VERSION, RUNBOOKS, namespace, runbook)
    if found is None:
        return None
    try:
        spec = RunbookSpec.model_validate(found.get("spec") or {})
    except ValidationError:
        return None
    group = group_of(body, spec.guardrails.groupBy)
    labels = {LABEL_RUNBOOK: records.label_value(runbook), LABEL_GROUP: group}
    metadata: dict[str, Any] | None = None
    if any((meta.get("labels") or {}).get(k) != v for k, v in labels.items()):
        # Labelled at once, so that the receiver counts the run while it is judged.
        metadata = await _patch_metadata(kube, namespace, name, {"labels": labels})
    candidate = guardrails.record_of(body, datetime.datetime.now(datetime.UTC))
    wait = candidate.created + SETTLE - datetime.datetime.now(datetime.UTC)
    if wait.total_seconds() > 0:
        await asyncio.sleep(wait.total_seconds())
    moment = datetime.datetime.now(datetime.UTC)
    if index is not None and index.synced:
        counted = {
            entry.name: entry.record
            for entry in index.of_group(namespace, runbook, group, spec.guardrails.groupBy)
        }
    else:
        counted = {
            name: guardrails.record_of(other, moment)
            for name, other in (await _listed(kube, namespace, runbook, spec, group)).items()
        }
    counted.pop(name, None)
    verdict = guardrails.admit(runbook, spec, counted.values(), candidate)
    if verdict is not None:
        skip = {ANNOTATION_SKIP_REASON: verdict.reason, ANNOTATION_SKIP_MESSAGE: verdict.message}
        metadata = await _patch_metadata(kube, namespace, name, {"annotations": skip})
    return metadata


async def _listed(
    kube: KubeApi, namespace: str, runbook: str, spec: RunbookSpec, group: str
) -> dict[str, Mapping[str, Any]]:
    """The group's records from the API: labelled with it, and unlabelled runs of it."""
    selector = f"{LABEL_RUNBOOK}={records.label_value(runbook)},{LABEL_GROUP}={group}"
    counted: dict[str, Mapping[str, Any]] = {
        r["metadata"]["name"]: r
        for r in await kube.list(API_VERSION, REMEDIATIONS, namespace, label_selector=selector)
    }
    unlabelled = await kube.list(
        API_VERSION, REMEDIATIONS, namespace, label_selector=f"!{LABEL_GROUP}"
    )
    for other in _of_runbook_and_group(unlabelled, runbook, spec, group):
        counted.setdefault(other["metadata"]["name"], other)
    return counted


async def _patch_metadata(
    kube: KubeApi, namespace: str, name: str, patch: dict[str, Any]
) -> dict[str, Any]:
    updated = await kube.patch(API_VERSION, REMEDIATIONS, namespace, name, {"metadata": patch})
    metadata: dict[str, Any] = updated["metadata"]
    return metadata
