"""All Kopf handlers, in one place; the only module that knows Kopf's decorators.

Kopf is the operator's frame: it logs in, runs the start-up and clean-up, and watches the
McpRunbooks, whose events feed the receiver's cache and the executor (which validates
them). McpRemediations are not Kopf's: their number grows with history, so the executor
watches them itself into a compact index (``executor``, ``index``) — no per-object worker,
finalizer or annotation for a finished record. Kopf keeps no state on any object: there are
only event handlers.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from mcp_remediator.memo import Memo
from mcp_remediator.models import GROUP, RUNBOOKS, VERSION

log = logging.getLogger(__name__)
registry = kopf.OperatorRegistry()


@kopf.on.startup(registry=registry)
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # We post our own, meaningful Events; Kopf's per-handler ones would only be noise.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    # A per-object worker lingers this long after its last event, and Kopf's exit waits
    # for them: 5 s by default, which a rolling update would spend with the receiver down.
    settings.queueing.idle_timeout = 1.0
    settings.queueing.exit_timeout = 1.0


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


# -- McpRunbook ------------------------------------------------------------------------
# One watch feeds the receiver's runbook cache and the executor's store, which validates
# the runbooks on the leader (``Executor.validate_runbook``): no Kopf state is kept on them.


@kopf.on.event(GROUP, VERSION, RUNBOOKS, registry=registry)
async def feed_runbook(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    m = Memo.of(memo)
    if m.receiver is not None:
        m.receiver.runbook_event(event.get("type"), event["object"])
    m.executor.runbook_event(event.get("type"), event["object"])


@kopf.on.cleanup(registry=registry)
async def stop_receiver(memo: Any, **_: Any) -> None:
    # Stop taking alerts as the operator begins to stop: Alertmanager retries elsewhere, and
    # Kopf's exit does not wait on the receiver's connections and background tasks. The
    # runs in progress stop too, before Kopf's exit sweeps the loop's remaining tasks.
    m = Memo.of(memo)
    if m.receiver is not None:
        await m.receiver.stop()
    await m.executor.stop()
