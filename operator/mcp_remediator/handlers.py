"""All Kopf handlers, in one place; the only module that knows Kopf's decorators.

Each handler runs its guards and calls one plain function with the clients from the
operator's memo (``Memo``): the engine for remediations, validation for runbooks.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import kopf

from mcp_remediator.clients import Clients
from mcp_remediator.engine import Engine
from mcp_remediator.kube.client import ApiError, ConnectionConfig
from mcp_remediator.kube.events import now, parse_time
from mcp_remediator.models import (
    API_VERSION,
    FINISHED_PHASES,
    GROUP,
    REMEDIATIONS,
    RUNBOOKS,
    VERSION,
)
from mcp_remediator.runbook.validation import check_runbook
from mcp_remediator.settings import Settings

log = logging.getLogger(__name__)
registry = kopf.OperatorRegistry()


@dataclass
class Memo:
    """What the handlers share: built once per operator run."""

    settings: Settings
    connection: ConnectionConfig
    clients: Clients
    engine: Engine
    extras: dict[str, Any] = field(default_factory=dict)


def _memo(memo: Any) -> Memo:
    assert isinstance(memo, Memo), "the operator must be started with a Memo"
    return memo


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
    connection = _memo(memo).connection
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
        await _memo(memo).engine.reconcile(namespace, name)
    except ApiError as exc:
        if exc.transient:
            raise _transient(exc) from exc
        raise kopf.PermanentError(str(exc)) from exc


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
    m = _memo(memo)
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
    m = _memo(memo)
    problems = check_runbook(dict(spec), m.settings)
    generation = meta.get("generation")
    if problems:
        condition: dict[str, Any] = {
            "type": "Valid",
            "status": "False",
            "reason": problems[0].reason,
            "message": "; ".join(p.message for p in problems)[:2000],
        }
    else:
        condition = {
            "type": "Valid",
            "status": "True",
            "reason": "Validated",
            "message": f"{len(spec.get('steps', []))} steps validated",
        }
    previous = next((c for c in status.get("conditions", []) if c.get("type") == "Valid"), None)
    same = previous is not None and previous.get("status") == condition["status"]
    condition["lastTransitionTime"] = (
        previous.get("lastTransitionTime", now()) if same and previous else now()
    )
    condition["observedGeneration"] = generation
    others = [c for c in status.get("conditions", []) if c.get("type") != "Valid"]
    patch = {"status": {"observedGeneration": generation, "conditions": [*others, condition]}}
    try:
        await m.clients.kube.patch(
            API_VERSION, RUNBOOKS, namespace, name, patch, subresource="status"
        )
    except ApiError as exc:
        raise _transient(exc) from exc
    if problems:
        log.warning("McpRunbook %s/%s is invalid: %s", namespace, name, condition["message"])


# -- Alert receiver hooks --------------------------------------------------------------
# The receiver (``receiver.serve``, a companion of Kopf) registers itself in
# ``memo.extras`` under this key. The event handlers pass it what the watches see anyway,
# so its runbook cache and remediation gauges cost no API call of their own.

RECEIVER_KEY = "receiver"


class ReceiverHooks(Protocol):
    def runbook_event(self, event_type: str | None, body: Mapping[str, Any]) -> None: ...

    def remediation_event(self, event_type: str | None, body: Mapping[str, Any]) -> None: ...

    async def stop(self) -> None: ...


def _receiver(memo: Any) -> ReceiverHooks | None:
    hooks: ReceiverHooks | None = _memo(memo).extras.get(RECEIVER_KEY)
    return hooks


@kopf.on.event(GROUP, VERSION, RUNBOOKS, registry=registry)
async def feed_runbook(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    if (receiver := _receiver(memo)) is not None:
        receiver.runbook_event(event.get("type"), event["object"])


@kopf.on.event(GROUP, VERSION, REMEDIATIONS, registry=registry)
async def feed_remediation(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    if (receiver := _receiver(memo)) is not None:
        receiver.remediation_event(event.get("type"), event["object"])


@kopf.on.cleanup(registry=registry)
async def stop_receiver(memo: Any, **_: Any) -> None:
    # Stop taking alerts as the operator begins to stop: Alertmanager retries elsewhere, and
    # Kopf's exit does not wait on the receiver's connections and background tasks.
    if (receiver := _receiver(memo)) is not None:
        await receiver.stop()
