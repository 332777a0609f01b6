"""Chaos: two `mcp-remediator run` processes, the leader killed (SIGKILL) at a random point
while 50 remediations run. Nothing may be done twice, lost, or left unfinished; every
failed run escalates exactly once. ``make chaos`` repeats it (``CHAOS_ROUNDS``)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fixtures.cluster import Cluster, deployment, remediation, restarts
from fixtures.daemons import free_port
from mcp_remediator.kube.lease import API_VERSION as LEASE_API
from mcp_remediator.kube.lease import LEASES
from mcp_remediator.models import API_VERSION, REMEDIATIONS
from mcp_remediator.testing.emulator import complete_rollouts, write_kubeconfig

ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "1"))
GUARDRAILS = {"cooldownSeconds": 0, "maxPerHour": 1000, "maxConcurrent": 100}
DONE = {"Succeeded", "Failed", "Refused", "Skipped", "Cancelled"}


def runbook(name: str, target: str, escalate: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "triggers": [{"alertname": f"Never{name}"}],
        "guardrails": GUARDRAILS,
        "steps": [{"name": "restart", "action": "rolloutRestart", "params": {"name": target}}],
    }
    if escalate:
        spec["onFailure"] = {"escalateTo": escalate}
    return {"apiVersion": API_VERSION, "kind": "McpRunbook",
            "metadata": {"name": name, "namespace": "mcp"}, "spec": spec}  # fmt: skip


def start(cluster: Cluster, tmp_path: Path, pod: str) -> subprocess.Popen[bytes]:
    kubeconfig = tmp_path / f"kubeconfig-{pod}"
    write_kubeconfig(kubeconfig, cluster.url, namespace="mcp", token=cluster.connection.token)
    env = {
        **os.environ,
        "POD_ID": pod,
        "POD_NAMESPACE": "mcp-remediator",
        "MCP_LEASE_DURATION_SECONDS": "6",
        "MCP_POLL_INTERVAL_SECONDS": "0.2",
        "MCP_RETRY_BACKOFF_SECONDS": "0.05",
        "MCP_RECEIVER_PORT": str(free_port()),
        "MCP_RECEIVER_HOST": "127.0.0.1",
        "MCP_RECEIVER_INSECURE": "true",
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    with (tmp_path / f"{pod}.log").open("wb") as log:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, "-m", "mcp_remediator", "run", "--kubeconfig", str(kubeconfig)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def trim(cluster: Cluster) -> None:
    """KMock matches each request against its whole history: keep it short."""
    while True:
        await asyncio.sleep(0.5)
        cluster.api.trim_requests()


def holder(cluster: Cluster) -> str | None:
    lease = cluster.get(LEASE_API, LEASES, "mcp-remediator", "mcp-remediator")
    return None if lease is None else lease["spec"].get("holderIdentity") or None


@pytest.mark.parametrize("round_", range(ROUNDS))
async def test_killing_the_leader_mid_runs_repeats_nothing_and_loses_nothing(
    cluster: Cluster, tmp_path: Path, round_: int
) -> None:
    rng = random.Random(round_)
    cluster.api.add_reactor("apps/v1", "deployments", complete_rollouts)
    names = [f"api-{i:02d}" for i in range(40)]
    for name in [*names, "pager"]:
        cluster.seed(deployment(name))
    cluster.api.apply([runbook("fragile", "missing", escalate="page"), runbook("page", "pager")])
    processes = {pod: start(cluster, tmp_path, pod) for pod in ("a", "b")}
    trimmer = asyncio.create_task(trim(cluster))
    try:
        await cluster.wait_for(lambda: holder(cluster), 30, "a leader")
        leader = holder(cluster)
        assert leader is not None
        runs = [remediation(f"run-{n}", [{"name": "restart", "action": "rolloutRestart",
                                          "params": {"name": n}}]) for n in names]  # fmt: skip
        runs += [
            {"apiVersion": API_VERSION, "kind": "McpRemediation",
             "metadata": {"name": f"fragile-{i}", "namespace": "mcp"},
             "spec": {"runbookRef": {"name": "fragile"}, "labels": {"n": str(i)}}}
            for i in range(10)
        ]  # fmt: skip
        rng.shuffle(runs)
        cluster.api.apply(runs)
        await asyncio.sleep(rng.uniform(0.05, 1.5))
        processes[leader].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await asyncio.to_thread(processes[leader].wait, 10)
        survivor = "b" if leader == "a" else "a"

        def finished() -> bool:
            return all(
                (cluster.get(API_VERSION, REMEDIATIONS, "mcp", r["metadata"]["name"]) or {})
                .get("status", {})
                .get("phase")
                in DONE
                for r in runs
            )

        try:
            await cluster.wait_for(finished, 60, "every run to finish")
        except AssertionError:
            left = {
                r["metadata"]["name"]: (cluster.get(API_VERSION, REMEDIATIONS, "mcp",
                                        r["metadata"]["name"]) or {}).get("status")
                for r in runs
            }  # fmt: skip
            left = {k: v for k, v in left.items() if (v or {}).get("phase") not in DONE}
            log = (tmp_path / f"{'b' if leader == 'a' else 'a'}.log").read_text()[-4000:]
            raise AssertionError(f"unfinished: {list(left.items())[:3]}\n{log}") from None
        await cluster.wait_for(lambda: holder(cluster) == survivor, 5, "the survivor to lead")
        took_over = time.monotonic() - killed
        # Every restart exactly once, whoever ran it and wherever the kill fell.
        assert {n: restarts(cluster, n) for n in names} == dict.fromkeys(names, 1)
        for run in runs:
            status = cluster.remediation("mcp", run["metadata"]["name"])["status"]
            expected = "Failed" if run["metadata"]["name"].startswith("fragile") else "Succeeded"
            assert status["phase"] == expected, (run["metadata"]["name"], status)

        def escalated() -> bool:
            return all(
                (cluster.remediation("mcp", f"fragile-{i}")["status"].get("escalatedTo") or {}).get(
                    "created"
                )
                for i in range(10)
            )

        await cluster.wait_for(escalated, 30, "every escalation")
        escalations = [
            r for r in cluster.api.list_objects(API_VERSION, REMEDIATIONS, "mcp")
            if r["spec"].get("runbookRef", {}).get("name") == "page"
        ]  # fmt: skip
        sources = sorted(r["metadata"]["labels"]["mcp.dese.ai/escalated-from"] for r in escalations)
        assert sources == sorted(f"fragile-{i}" for i in range(10))  # one each, none twice
        print(f"round {round_}: leader {leader} killed; all done {took_over:.1f}s after")
    finally:
        trimmer.cancel()
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(process.wait, 20)
                except subprocess.TimeoutExpired:
                    process.kill()
