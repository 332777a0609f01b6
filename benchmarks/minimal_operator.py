"""The minimal Kopf operator that benchmarks/operation.py compares ours with.

One process, as ``mcp-remediator run`` is: an aiohttp receiver whose ``POST /alerts`` (the
bearer token of ``MCP_RECEIVER_TOKEN``, on ``MCP_RECEIVER_HOST``:``MCP_RECEIVER_PORT``)
creates one McpRemediation per alert, and a Kopf ``on.create`` handler that patches the
Deployment the remediation's alert names (label ``deployment``) with the restartedAt
pod-template annotation, as ``kubectl rollout restart`` does. Nothing else: no runbook
matching, no guardrails, no deduplication, no status, no Events, no rollout wait. Kopf's own
bookkeeping stays (its annotations on each handled object), its Events are off as ours are.

Run as ``python benchmarks/minimal_operator.py --kubeconfig PATH`` (the kubeconfig's first
cluster and its user's bearer token); the remediations go to ``--namespace`` (default
``mcp``); SIGTERM stops it, as it stops ours.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import yaml
from aiohttp import web

GROUP, VERSION, PLURAL = "mcp.dese.ai", "v1alpha1", "mcpremediations"
RUNBOOK = "bench-restart"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


class Api:
    """The few requests the operator makes, over one aiohttp session."""

    def __init__(self, server: str, token: str, namespace: str) -> None:
        self.server, self.namespace = server.rstrip("/"), namespace
        self.headers = {"Authorization": f"Bearer {token}"}
        self.session: aiohttp.ClientSession | None = None

    async def send(self, method: str, path: str, body: Any, content_type: str) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(headers=self.headers)
        headers = {"Content-Type": content_type}
        url = self.server + path
        async with self.session.request(method, url, json=body, headers=headers) as response:
            if response.status >= 400:
                raise kopf.TemporaryError(f"{method} {path}: {response.status}", delay=1)

    async def create_remediation(self, alert: dict[str, Any]) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "McpRemediation",
            "metadata": {"generateName": f"{RUNBOOK}-", "namespace": self.namespace},
            "spec": {"runbookRef": {"name": RUNBOOK}, "alert": alert},
        }
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}"
        await self.send("POST", path, body, "application/json")

    async def restart(self, namespace: str, name: str) -> None:
        moment = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: moment}}}}}
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        await self.send("PATCH", path, patch, "application/strategic-merge-patch+json")

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()


def build(api: Api, server: str, token: str) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Annotations only: the status subresource would drop Kopf's status.kopf field.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
        settings.posting.enabled = False

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server, token=token, insecure=True)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    async def restart(spec: kopf.Spec, namespace: str | None, **_: Any) -> None:
        deployment = (spec.get("alert") or {}).get("labels", {}).get("deployment")
        if deployment and namespace:
            await api.restart(namespace, deployment)

    return registry


async def serve(api: Api) -> web.AppRunner:
    """The receiver: one remediation per alert of each POST."""
    expected = f"Bearer {os.environ.get('MCP_RECEIVER_TOKEN', '')}"

    async def alerts(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.json()
        await asyncio.gather(*(api.create_remediation(a) for a in body["alerts"]))
        return web.json_response({"alerts": len(body["alerts"]), "created": len(body["alerts"])})

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.router.add_post("/alerts", alerts)
    app.router.add_get("/readyz", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host = os.environ.get("MCP_RECEIVER_HOST", "127.0.0.1")
    await web.TCPSite(runner, host, int(os.environ.get("MCP_RECEIVER_PORT", "8080"))).start()
    return runner


async def main(kubeconfig: Path, namespace: str) -> None:
    config = yaml.safe_load(kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    token = config["users"][0]["user"]["token"]
    api = Api(server, token, namespace)
    runner = await serve(api)
    try:
        await kopf.operator(registry=build(api, server, token), clusterwide=True, standalone=True)
    finally:
        await runner.cleanup()
        await api.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--namespace", default="mcp")
    args = parser.parse_args()
    asyncio.run(main(args.kubeconfig, args.namespace))
    sys.exit(0)
