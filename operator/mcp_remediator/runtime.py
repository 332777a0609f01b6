"""All wiring, in one place: runs Kopf's reactor, the executor and the alert receiver in
one event loop.

``run_operator`` builds every part once — clients, metrics, the record index, the engine
(with the metrics as its step observer), the executor (the remediations' watch, the Lease
election, the runs, the TTL sweeper), the receiver — into the typed ``Memo`` the handlers
read, runs the executor and the receiver beside Kopf, and closes the clients on exit.
httpx's request log lines show URLs without user info or query
(``redact.redact_http_logs``). ``mcp-remediator run`` calls it; the tests and the demo too
(``testing.operator_thread``), with their own flags.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any, cast

import kopf

from mcp_remediator import handlers, redact
from mcp_remediator.alerts.receiver import Receiver
from mcp_remediator.clients import Clients
from mcp_remediator.engine import Engine
from mcp_remediator.executor import Executor
from mcp_remediator.index import Entry, RecordIndex, RunbookStore
from mcp_remediator.kube.client import ConnectionConfig
from mcp_remediator.memo import Memo
from mcp_remediator.metrics import OperatorMetrics
from mcp_remediator.settings import Settings

log = logging.getLogger(__name__)

Flag = asyncio.Event | threading.Event | asyncio.Future[None]


def own_identity(environ: Mapping[str, str] | None = None) -> str:
    """Who this operator process is, for Kopf's peering and progress annotations.

    ``POD_ID`` (the Deployment passes the pod's name), else ``<hostname>-<pid>``. Never the
    user name: Kopf's own default asks the passwd database, which has no entry for the
    image's uid (65532) and would stop the operator at start-up.
    """
    env = os.environ if environ is None else environ
    return env.get("POD_ID") or f"{socket.gethostname()}-{os.getpid()}"


async def run_operator(
    settings: Settings,
    connection: ConnectionConfig,
    *,
    receiver: bool = True,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
    kopf_settings: kopf.OperatorSettings | None = None,
    identity: str | None = None,
) -> None:
    """Run until ``stop_flag`` is set (or forever); ``receiver=False`` runs Kopf alone.

    The receiver and the executor run beside Kopf for the operator's lifetime: if any
    ends, all stop, and the first error is raised (``LeaseUnavailable`` at start-up when
    the replicas cannot elect an executor). ``identity``: this replica's name in the Lease
    and in ``status.executor`` (default ``own_identity()``).
    """
    redact.redact_http_logs()
    clients = Clients.build(settings, connection)
    companions: list[asyncio.Task[None]] = []
    me = identity or own_identity()
    try:
        metrics = OperatorMetrics()
        index = RecordIndex(
            default_ttl=settings.remediation_ttl_seconds,
            unresolved_ttl=settings.remediation_unresolved_ttl_seconds,
        )
        index.listeners.append(functools.partial(_gauge, metrics))
        runbooks = RunbookStore()
        leader = _Leadership()
        engine = Engine(
            clients,
            settings,
            observers=[metrics.observe_step],
            index=index,
            runbooks=runbooks,
            identity=me,
            may_act=leader,
        )
        executor = Executor(settings, clients.kube, engine, index, runbooks, identity=me)
        leader.executor = executor
        memo = Memo(
            settings=settings,
            connection=connection,
            clients=clients,
            engine=engine,
            executor=executor,
            receiver=Receiver(settings, clients.kube, metrics=metrics, index=index)
            if receiver
            else None,
        )
        await executor.elector.check()  # no election possible: fail now, never idle
        companions.append(asyncio.create_task(executor.run()))
        if memo.receiver is not None:
            companions.append(asyncio.create_task(_serve(memo.receiver)))
        namespaces = settings.watch_namespaces
        # Kopf is stopped by its own flag, never cancelled: a cancelled Kopf skips its
        # clean-up and leaves its HTTP session open. The caller's flag is relayed to it.
        halt = asyncio.Event()
        relay = None
        if stop_flag is not None:
            relay = asyncio.create_task(_relay(stop_flag, halt))
            companions.append(relay)
        operator = asyncio.create_task(
            kopf.operator(
                registry=handlers.registry,
                settings=kopf_settings,
                memo=memo,
                clusterwide=not namespaces,
                namespaces=namespaces,
                standalone=True,  # Kopf's peering is not used: see executor
                identity=cast(Any, me),  # Kopf's Identity: a NewType of str
                stop_flag=halt,
                ready_flag=ready_flag,
            )
        )
        parts = [operator, *companions]
        done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
        if relay in done and relay.exception() is None:
            done.discard(relay)  # the stop flag: stop Kopf by its own flag, below
        if operator not in done and executor.stopped:
            done = set()  # stopped by Kopf's clean-up (a SIGTERM): Kopf finishes itself
        if operator not in done:
            # A SIGTERM reaches Kopf directly; a companion that ended (an error, the stop
            # flag) stops Kopf by its flag, and Kopf's clean-up stops the rest.
            halt.set()
            try:
                await asyncio.wait_for(asyncio.shield(operator), KOPF_STOP_SECONDS)
            except TimeoutError:
                log.error("Kopf did not stop within %gs; cancelled", KOPF_STOP_SECONDS)
                operator.cancel()
            await asyncio.gather(operator, return_exceptions=True)
            if not operator.cancelled():
                done.add(operator)  # Kopf's own failure, if it had one, is raised too
        for task in done:
            task.result()
    finally:
        for task in companions:
            task.cancel()
        await asyncio.gather(*companions, return_exceptions=True)
        await clients.aclose()


KOPF_STOP_SECONDS = 30.0  # Kopf's own clean-up (the receiver drains, the Lease is released)


async def _relay(flag: Flag, halt: asyncio.Event) -> None:
    """Set ``halt`` once ``flag`` is set."""
    if isinstance(flag, asyncio.Event):
        await flag.wait()
    elif isinstance(flag, asyncio.Future):
        await asyncio.shield(flag)
    else:
        while not flag.is_set():
            await asyncio.sleep(0.1)
    halt.set()


def _gauge(metrics: OperatorMetrics, old: Entry | None, new: Entry | None) -> None:
    """Keep the ``mcp_remediations`` gauge in step with the index."""
    entry = new or old
    if entry is not None:
        metrics.remediations.track(entry.key, entry.runbook, new.phase if new else None)


class _Leadership:
    """Whether this replica may act on runs now (the engine asks before each attempt)."""

    executor: Executor | None = None

    def __call__(self) -> bool:
        return self.executor is not None and self.executor.leader


async def _serve(receiver: Receiver) -> None:
    """Serve alerts until cancelled; a receiver that cannot listen ends the operator."""
    await receiver.start()
    try:
        await asyncio.Event().wait()
    finally:
        await receiver.stop()
