"""The shared clients handed to the engine, the actions and the receiver.

Built once at start-up (``Clients.build``) and closed at shutdown; tests build their own
and pass them in. Vendor clients that need per-call settings (Redis, Prometheus) are
opened by the actions themselves from ``settings`` and a Secret reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from mcp_remediator.kube.client import ConnectionConfig, KubeApi
from mcp_remediator.settings import Settings


@dataclass
class Clients:
    """Kubernetes plus a pooled HTTP client for health checks, Argo CD's API and webhooks."""

    settings: Settings
    kube: KubeApi
    http: httpx.AsyncClient

    @classmethod
    def build(cls, settings: Settings, connection: ConnectionConfig) -> Clients:
        return cls(
            settings=settings,
            kube=KubeApi(connection, settings),
            http=httpx.AsyncClient(timeout=30.0, follow_redirects=False),
        )

    async def aclose(self) -> None:
        await self.kube.aclose()
        await self.http.aclose()
