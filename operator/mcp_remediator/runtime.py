"""Runs the operator: Kopf's reactor plus the alert receiver, in one event loop.

``run_operator`` is what ``mcp-remediator run`` calls; tests and the demo call it too,
with their own stop and ready flags. Clients are built here, once, and closed on exit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine

import kopf

from mcp_remediator import handlers
from mcp_remediator.alerts import receiver
from mcp_remediator.clients import Clients
from mcp_remediator.engine import Engine
from mcp_remediator.kube.client import ConnectionConfig
from mcp_remediator.settings import Settings

log = logging.getLogger(__name__)

Flag = asyncio.Event | threading.Event | asyncio.Future[None]
# Extra coroutines started beside Kopf (the receiver); each gets the memo. They run until
# the operator stops: one that ends earlier has failed, and stops the operator with it.
Companion = Callable[[handlers.Memo, asyncio.Event], Coroutine[None, None, None]]
COMPANIONS: list[Companion] = [receiver.serve]


async def run_operator(
    settings: Settings,
    connection: ConnectionConfig,
    *,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
    companions: list[Companion] | None = None,
    kopf_settings: kopf.OperatorSettings | None = None,
) -> None:
    """Run until ``stop_flag`` is set (or forever)."""
    clients = Clients.build(settings, connection)
    memo = handlers.Memo(
        settings=settings,
        connection=connection,
        clients=clients,
        engine=Engine(clients, settings),
    )
    stopping = asyncio.Event()
    tasks: list[asyncio.Task[None]] = [
        asyncio.create_task(companion(memo, stopping))
        for companion in (COMPANIONS if companions is None else companions)
    ]
    namespaces = settings.watch_namespaces
    operator = asyncio.create_task(
        kopf.operator(
            registry=handlers.registry,
            settings=kopf_settings,
            memo=memo,
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=settings.peering is None,
            peering_name=settings.peering,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    )
    try:
        done, _ = await asyncio.wait([operator, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if operator not in done:
            operator.cancel()
            await asyncio.gather(operator, return_exceptions=True)
        for task in done:
            task.result()
    finally:
        stopping.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await clients.aclose()
