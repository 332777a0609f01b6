"""All Kopf handlers, in one place; the only module that knows Kopf's decorators.

Each handler runs its guards and calls one plain function with the parts in the
operator's typed memo (``memo.Memo``, built by ``runtime``): the engine for remediations,
validation for runbooks, the receiver's cache and gauges for what the watches see.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import kopf

from mcp_remediator import redact
from mcp_remediator.kube.client import ApiError
from mcp_remediator.kube.events import now, parse_time
from mcp_remediator.kube.status import patch_status
from mcp_remediator.memo import Memo
from mcp_remediator.models import (
    API_VERSION,
    FINISHED_PHASES,
    GROUP,
    REMEDIATIONS,
    RUNBOOKS,
    VERSION,
    Condition,
    set_condition,
)
from mcp_remediator.runbook.validation import check_runbook

log = logging.getLogger(__name__)
registry = kopf.OperatorRegistry()


@kopf.on.startup(registry=registry)
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # We post our own, meaningful Events; Kopf's per-handler ones would only be noise.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300


@kopf.on.login(registry=registry)
def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    connection = Memo.of(memo).connection
    return kopf.ConnectionInfo(
        server=connection.server,
        ca_path=connection.ca_path,
        insecure=connection.insecure,
        token=connection.bearer_token(),
        certificate_path=connection.cert_path,
        private_key_path=connection.key_path,
        default_namespace=connection.default_namespace,
    )


# -- McpRemediation --------------------------------------------------------------------


def _transient(exc: ApiError) -> kopf.TemporaryError:
    return kopf.TemporaryError(f"Kubernetes API: {exc}", delay=5)


@kopf.on.resume(GROUP, VERSION, REMEDIATIONS, registry=registry)
@kopf.on.create(GROUP, VERSION, REMEDIATIONS, registry=registry)
@kopf.on.update(GROUP, VERSION, REMEDIATIONS, field="spec.approved", registry=registry)
async def run_remediation(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    assert namespace is not None  # McpRemediation is namespaced
    try:
        await Memo.of(memo).engine.reconcile(namespace, name)
    except ApiError as exc:
        if exc.transient:
            raise _transient(exc) from exc
        raise kopf.PermanentError(str(exc)) from exc
    except Exception as exc:
        # The engine finishes a run it fails on; this is what even that could not do. Kopf
        # would log the exception's text (which may hold secrets) and retry it forever.
        kind = redact.exception_type(exc)
        log.error("remediation %s/%s: %s\n%s", namespace, name, kind,
                  redact.traceback_without_text(exc))  # fmt: skip
        raise kopf.PermanentError(f"internal error ({kind})") from None


def _finished(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") in FINISHED_PHASES and bool(status.get("finishedAt"))


@kopf.daemon(GROUP, VERSION, REMEDIATIONS, when=_finished, registry=registry)
async def expire_remediation(
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    status: kopf.Status,
    stopped: kopf.DaemonStopped,
    memo: Any,
    **_: Any,
) -> None:
    """Delete a finished record ``ttlSecondsAfterFinished`` after it finished."""
    assert namespace is not None
    m = Memo.of(memo)
    ttl = spec.get("ttlSecondsAfterFinished")
    ttl = m.settings.remediation_ttl_seconds if ttl is None else int(ttl)
    finished = parse_time(status.get("finishedAt")) or datetime.datetime.now(datetime.UTC)
    due = finished + datetime.timedelta(seconds=ttl)
    delay = (due - datetime.datetime.now(datetime.UTC)).total_seconds()
    if delay > 0:
        await stopped.wait(delay)
    if stopped:
        return
    try:
        await m.clients.kube.delete(API_VERSION, REMEDIATIONS, namespace, name)
        log.info("deleted remediation %s/%s (ttl %ss after it finished)", namespace, name, ttl)
    except ApiError as exc:
        if exc.status != 404:
            raise _transient(exc) from exc
    while not stopped:  # the daemon ends when the object disappears
        await stopped.wait(60)


# -- McpRunbook ------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, RUNBOOKS, registry=registry)
@kopf.on.create(GROUP, VERSION, RUNBOOKS, registry=registry)
@kopf.on.update(GROUP, VERSION, RUNBOOKS, field="spec", registry=registry)
async def validate_runbook(
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: Any,
    **_: Any,
) -> None:
    assert namespace is not None
    m = Memo.of(memo)
    problems = check_runbook(dict(spec), m.settings, namespace)
    generation = meta.get("generation")
    if problems:
        reason = problems[0].reason
        message = "; ".join(p.message for p in problems)[:2000]
    else:
        reason, message = "Validated", f"{len(spec.get('steps', []))} steps validated"
    condition = Condition(
        type="Valid",
        status="False" if problems else "True",
        reason=reason,
        message=message,
        lastTransitionTime=now(),
        observedGeneration=generation,
    )
    previous = [Condition.model_validate(c) for c in status.get("conditions", [])]
    conditions = set_condition(previous, condition)
    try:
        await patch_status(
            m.clients.kube,
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
        raise _transient(exc) from exc
    if problems:
        log.warning("McpRunbook %s/%s is invalid: %s", namespace, name, message)


# -- Alert receiver ----------------------------------------------------------------------
# The watches already see every runbook and remediation: the receiver's runbook cache and
# remediation gauges are fed from them, at no API call of their own.


@kopf.on.event(GROUP, VERSION, RUNBOOKS, registry=registry)
async def feed_runbook(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    if (receiver := Memo.of(memo).receiver) is not None:
        receiver.runbook_event(event.get("type"), event["object"])


@kopf.on.event(GROUP, VERSION, REMEDIATIONS, registry=registry)
async def feed_remediation(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    if (receiver := Memo.of(memo).receiver) is not None:
        receiver.remediation_event(event.get("type"), event["object"])


@kopf.on.cleanup(registry=registry)
async def stop_receiver(memo: Any, **_: Any) -> None:
    # Stop taking alerts as the operator begins to stop: Alertmanager retries elsewhere, and
    # Kopf's exit does not wait on the receiver's connections and background tasks.
    if (receiver := Memo.of(memo).receiver) is not None:
        await receiver.stop()
