"""All wiring, in one place: runs Kopf's reactor and the alert receiver in one event loop.

``run_operator`` builds every part once — clients, metrics, the engine (with the metrics
as its step observer), the receiver — into the typed ``Memo`` the handlers read, runs
the receiver beside Kopf, and closes the clients on exit. httpx's request log lines show
URLs without user info or query (``redact.redact_http_logs``). ``mcp-remediator run`` calls
it; the tests and the demo too (``testing.operator_thread``), with their own flags.
"""

from __future__ import annotations

import asyncio
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
) -> None:
    """Run until ``stop_flag`` is set (or forever); ``receiver=False`` runs Kopf alone.

    The receiver runs beside Kopf for the operator's lifetime: if either ends, both stop,
    and the first error is raised.
    """
    redact.redact_http_logs()
    clients = Clients.build(settings, connection)
    companions: list[asyncio.Task[None]] = []
    try:
        metrics = OperatorMetrics()
        memo = Memo(
            settings=settings,
            connection=connection,
            clients=clients,
            engine=Engine(clients, settings, observers=[metrics.observe_step]),
            receiver=Receiver(settings, clients.kube, metrics=metrics) if receiver else None,
        )
        if memo.receiver is not None:
            companions.append(asyncio.create_task(_serve(memo.receiver)))
        namespaces = settings.watch_namespaces
        operator = asyncio.create_task(
            kopf.operator(
                registry=handlers.registry,
                settings=kopf_settings,
                memo=memo,
                clusterwide=not namespaces,
                namespaces=namespaces,
                standalone=settings.peering is None,
                identity=cast(Any, own_identity()),  # Kopf's Identity: a NewType of str
                peering_name=settings.peering,
                stop_flag=stop_flag,
                ready_flag=ready_flag,
            )
        )
        done, _ = await asyncio.wait([operator, *companions], return_when=asyncio.FIRST_COMPLETED)
        if operator not in done:
            operator.cancel()
            await asyncio.gather(operator, return_exceptions=True)
        for task in done:
            task.result()
    finally:
        for task in companions:
            task.cancel()
        await asyncio.gather(*companions, return_exceptions=True)
        await clients.aclose()


async def _serve(receiver: Receiver) -> None:
    """Serve alerts until cancelled; a receiver that cannot listen ends the operator."""
    await receiver.start()
    try:
        await asyncio.Event().wait()
    finally:
        await receiver.stop()
