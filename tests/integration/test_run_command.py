"""Black box: `mcp-remediator run` as a process, pointed by kubeconfig at the emulated API."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from fixtures.cluster import Cluster, deployment, remediation
from fixtures.daemons import free_port
from mcp_remediator.testing.emulator import write_kubeconfig


async def test_run_executes_an_applied_remediation_through_a_kubeconfig(
    cluster: Cluster, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    # The operator's ServiceAccount token, as the shipped manifests give its pod.
    write_kubeconfig(kubeconfig, cluster.url, namespace="mcp", token=cluster.connection.token)
    env = {
        **os.environ,
        "MCP_RECEIVER_PORT": str(free_port()),
        "MCP_RECEIVER_HOST": "127.0.0.1",
        "MCP_RECEIVER_INSECURE": "true",
        "MCP_POLL_INTERVAL_SECONDS": "0.05",
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    log = (tmp_path / "operator.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_remediator", "run", "--kubeconfig", str(kubeconfig)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        await cluster.wait_for(
            lambda: "mcpremediations" in cluster.api.watched_plurals() or process.poll(),
            30,
            "the operator's watch",
        )
        assert process.poll() is None, (tmp_path / "operator.log").read_text()
        cluster.seed(deployment("finbot-api"))
        cluster.seed(
            remediation(
                "from-kubectl",
                [{"name": "restart", "action": "rolloutRestart", "params": {"name": "finbot-api"}}],
            )
        )

        done = await cluster.wait_phase("mcp", "from-kubectl", {"Succeeded", "Failed"}, 30)

        assert done["status"]["phase"] == "Succeeded", done["status"]
        template = cluster.get("apps/v1", "deployments", "mcp", "finbot-api")["spec"]["template"]
        restarted = template["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
        assert restarted == done["status"]["steps"][0]["outputs"]["restartedAt"]

        def reasons() -> set[str]:
            return {
                e["reason"]
                for e in cluster.api.list_objects("v1", "events", "mcp")
                if e["involvedObject"]["name"] == "from-kubectl"
            }

        # The final Event is posted right after the final status: wait for it.
        await cluster.wait_for(lambda: "Succeeded" in reasons(), what="the Succeeded Event")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        log.close()
    assert process.returncode == 0, (tmp_path / "operator.log").read_text()[-3000:]


# Python run as the image's uid: no passwd entry (pwd raises, as it does for uid 65532 in
# the slim image), and no USER, LOGNAME or HOME in the environment.
NO_PASSWD = """
import pwd, sys
def missing(uid):
    raise KeyError(f"getpwuid(): uid not found: {uid}")
pwd.getpwuid = missing
from mcp_remediator.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def test_run_starts_without_a_passwd_entry_or_a_user_in_the_environment(
    cluster: Cluster, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, cluster.url, namespace="mcp", token=cluster.connection.token)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join(sys.path),
        "MCP_RECEIVER_PORT": str(free_port()),
        "MCP_RECEIVER_HOST": "127.0.0.1",
        "MCP_RECEIVER_INSECURE": "true",
    }
    log = (tmp_path / "operator.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", NO_PASSWD, "run", "--kubeconfig", str(kubeconfig)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        await cluster.wait_for(
            lambda: "mcpremediations" in cluster.api.watched_plurals() or process.poll(),
            30,
            "the operator's watch",
        )
        assert process.poll() is None, (tmp_path / "operator.log").read_text()[-3000:]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        log.close()
    assert process.returncode == 0, (tmp_path / "operator.log").read_text()[-3000:]
