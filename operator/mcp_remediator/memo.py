"""What the Kopf handlers share: one typed memo, built once per operator run.

``runtime.run_operator`` builds every part (settings, clients, engine, receiver) and
hands the memo to Kopf; the handlers read it, nothing registers itself into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcp_remediator.alerts.receiver import Receiver
from mcp_remediator.clients import Clients
from mcp_remediator.engine import Engine
from mcp_remediator.executor import Executor
from mcp_remediator.kube.client import ConnectionConfig
from mcp_remediator.settings import Settings


@dataclass(frozen=True)
class Memo:
    """The operator's parts; ``receiver`` is None when it runs without one (tests)."""

    settings: Settings
    connection: ConnectionConfig
    clients: Clients
    engine: Engine
    executor: Executor
    receiver: Receiver | None = None

    @staticmethod
    def of(memo: Any) -> Memo:
        """The memo Kopf hands a handler (typed ``Any`` by Kopf)."""
        assert isinstance(memo, Memo), "the operator must be started with a Memo"
        return memo
