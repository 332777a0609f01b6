"""The operator in a thread of its own, for the demo and the tests.

``OperatorThread`` runs ``runtime.run_operator`` in its own event loop, as it would run
in a pod, so a caller's loop (the emulated API, pytest's) never blocks on it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading

import kopf

from mcp_remediator.kube.client import ConnectionConfig
from mcp_remediator.runtime import own_identity, run_operator
from mcp_remediator.settings import Settings

_numbers = itertools.count(1)


class OperatorThread:
    """The operator in a thread with its own event loop, for the demo and the tests.

    Kopf in a caller's main loop would take over Ctrl-C and, when it stops, cancel every
    task the caller started after it; in its own loop it keeps to itself, as in a pod.
    ``error`` holds what ended the operator early, if anything did. Each has an identity
    of its own (the Lease, ``status.executor``), as each replica has its pod's name.
    """

    def __init__(
        self,
        settings: Settings,
        connection: ConnectionConfig,
        *,
        receiver: bool = True,
        identity: str | None = None,
    ):
        self.identity = identity or f"{own_identity()}-{next(_numbers)}"
        self.settings = settings
        self.connection = connection
        self.receiver = receiver
        self.stop_flag = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="operator", daemon=True)

    def _main(self) -> None:
        kopf_settings = kopf.OperatorSettings()
        # Kopf's per-object workers linger 5 s after their last event before exiting, and
        # the stop waits for them; the demo and the tests stop the operator often.
        kopf_settings.queueing.idle_timeout = 0.5
        kopf_settings.queueing.exit_timeout = 0.5
        # Not the main thread: no signal handlers, so nothing to force an exit after.
        kopf_settings.process.ultimate_exiting_timeout = None
        try:
            asyncio.run(
                run_operator(
                    self.settings,
                    self.connection,
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready,
                    receiver=self.receiver,
                    kopf_settings=kopf_settings,
                    identity=self.identity,
                )
            )
        except BaseException as exc:  # handed to whoever stops or watches the thread
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    async def stop(self, timeout: float = 30) -> None:
        """Stop the operator and wait for its thread (without blocking the caller's loop)."""
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, timeout)
