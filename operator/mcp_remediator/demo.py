"""``mcp-remediator demo``: the operator on an embedded, emulated MCP cluster.

Starts an emulated Kubernetes API (``emulator.ApiServerEmulator``) holding the MCP
layer's workloads, runs the real operator against it in the same event loop, applies
remediations and prints a timeline of what happened: each phase change and each step's
result, as an operator on call would read them. Exits 0 when every scenario ended as
expected.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import kmock
import yaml

from mcp_remediator import crdgen
from mcp_remediator.emulator import ApiServerEmulator, complete_rollouts
from mcp_remediator.kube import ConnectionConfig
from mcp_remediator.models import API_VERSION, FINISHED_PHASES, REMEDIATIONS, RUNBOOKS
from mcp_remediator.runtime import run_operator
from mcp_remediator.settings import Settings

NAMESPACE = "mcp"
WORKLOADS = ("dese-api", "finbot", "mubot", "aiops", "websocket-server")


def workload(name: str, namespace: str = NAMESPACE, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": name, "app.kubernetes.io/part-of": "mcp"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": f"dese/{name}:6.8.1"}]},
            },
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        },
    }


@dataclass
class Scenario:
    """One incident: objects to apply, and the phase we expect the remediation to end in."""

    title: str
    remediation: dict[str, Any]
    expect: str
    setup: list[dict[str, Any]]


def scenarios() -> list[Scenario]:
    restart = {
        "apiVersion": API_VERSION,
        "kind": "McpRemediation",
        "metadata": {"name": "finbot-restart", "namespace": NAMESPACE},
        "spec": {
            "labels": {"deployment": "finbot"},
            "steps": [
                {
                    "name": "restart",
                    "action": "rolloutRestart",
                    "params": {"name": "{{ labels.deployment }}"},
                }
            ],
        },
    }
    kyverno = {
        "apiVersion": API_VERSION,
        "kind": "McpRemediation",
        "metadata": {"name": "kyverno-override", "namespace": NAMESPACE},
        "spec": {
            "steps": [
                {
                    "name": "restart-kyverno",
                    "action": "rolloutRestart",
                    "params": {"name": "kyverno-admission-controller", "namespace": "kyverno"},
                }
            ]
        },
    }
    return [
        Scenario("FinBot unhealthy: restart it", restart, "Succeeded", []),
        Scenario(
            "Deploy blocked by Kyverno: a manual override is refused",
            kyverno,
            "Refused",
            [workload("kyverno-admission-controller", "kyverno", 1)],
        ),
    ]


class Timeline:
    """Prints status changes of remediations as they happen."""

    def __init__(self, out: TextIO):
        self.out = out
        self.start = time.monotonic()
        self.seen: dict[str, str] = {}

    def line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:6.2f}s] {text}", file=self.out, flush=True)

    def observe(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        phase = status.get("phase", "Pending")
        key = f"{name}:phase"
        if self.seen.get(key) != phase:
            self.seen[key] = phase
            reason = f" ({status['reason']})" if status.get("reason") else ""
            self.line(f"{name}: {phase}{reason} {status.get('message', '')}".rstrip())
        for step in status.get("steps", []):
            key = f"{name}:{step['name']}"
            if step["phase"] in ("Succeeded", "Failed", "DryRun", "Skipped"):
                if self.seen.get(key) != step["phase"]:
                    self.seen[key] = step["phase"]
                    self.line(
                        f"  step {step['name']} [{step['action']}] {step['phase']}: "
                        f"{step.get('message', '')}"
                    )


async def _wait(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return False


def build_emulator() -> ApiServerEmulator:
    api = ApiServerEmulator()
    api.register_builtins()
    for text in crdgen.render_all().values():
        api.register_crd(yaml.safe_load(text))
    for plural in ("deployments", "statefulsets", "daemonsets"):
        api.add_reactor("apps/v1", plural, complete_rollouts)
    return api


async def run_demo(out: TextIO = sys.stdout, timeout: float = 60) -> int:
    """Run every scenario; 0 when each ended in its expected phase."""
    logging.getLogger("kopf").setLevel(logging.WARNING)
    api = build_emulator()
    for name in WORKLOADS:
        api.seed(workload(name))
    timeline = Timeline(out)
    failures = 0
    async with api, kmock.Server(api) as server:
        url = str(server.url).rstrip("/")
        timeline.line(f"emulated cluster at {url} with {', '.join(WORKLOADS)} in {NAMESPACE}")
        settings = Settings(poll_interval_seconds=0.2, retry_backoff_seconds=0.5)
        stop = asyncio.Event()
        ready = asyncio.Event()
        operator = asyncio.create_task(
            run_operator(
                settings,
                ConnectionConfig(server=url, insecure=True),
                stop_flag=stop,
                ready_flag=ready,
                companions=[],
            )
        )
        await _wait(ready.is_set, 30)
        await _wait(lambda: {REMEDIATIONS, RUNBOOKS} <= api.watched_plurals(), 30)
        timeline.line("operator running")
        for scenario in scenarios():
            timeline.line(f"== {scenario.title}")
            for obj in scenario.setup:
                api.seed(obj)
            api.seed(scenario.remediation)
            meta = scenario.remediation["metadata"]

            def finished(meta: dict[str, Any] = meta) -> bool:
                obj = api.get(API_VERSION, REMEDIATIONS, meta["namespace"], meta["name"])
                if obj is None:
                    return False
                timeline.observe(obj)
                return (obj.get("status") or {}).get("phase") in FINISHED_PHASES

            await _wait(finished, timeout)
            final = api.get(API_VERSION, REMEDIATIONS, meta["namespace"], meta["name"])
            phase = ((final or {}).get("status") or {}).get("phase", "Pending")
            verdict = "as expected" if phase == scenario.expect else f"expected {scenario.expect}"
            failures += phase != scenario.expect
            timeline.line(f"-> {meta['name']} ended {phase}: {verdict}")
        stop.set()
        await operator
    timeline.line(f"demo finished: {len(scenarios()) - failures} of {len(scenarios())} as expected")
    return 1 if failures else 0
