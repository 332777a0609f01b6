"""Black box: `mcp-remediator run` as a process, pointed by kubeconfig at the emulated API."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fixtures.cluster import Cluster, deployment, remediation
from fixtures.daemons import free_port
from mcp_remediator.testing.emulator import write_kubeconfig


@asynccontextmanager
async def running(
    cluster: Cluster, tmp_path: Path, command: list[str], env: dict[str, str]
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``command run --kubeconfig …`` as a process, as the operator's ServiceAccount (the
    token the shipped manifests give its pod), until its watch runs; stopped with SIGTERM
    after the block, which it must survive with exit code 0."""
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, cluster.url, namespace="mcp", token=cluster.connection.token)
    env = {
        **env,
        "MCP_RECEIVER_PORT": str(free_port()),
        "MCP_RECEIVER_HOST": "127.0.0.1",
        "MCP_RECEIVER_INSECURE": "true",
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    path = tmp_path / "operator.log"
    with path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "run", "--kubeconfig", str(kubeconfig)],
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
            assert process.poll() is None, path.read_text()[-3000:]
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
    assert process.returncode == 0, path.read_text()[-3000:]


async def test_run_executes_an_applied_remediation_through_a_kubeconfig(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = {**os.environ, "MCP_POLL_INTERVAL_SECONDS": "0.05"}
    async with running(cluster, tmp_path, [sys.executable, "-m", "mcp_remediator"], env):
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
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.pathsep.join(sys.path)}
    async with running(cluster, tmp_path, [sys.executable, "-c", NO_PASSWD], env):
        pass  # running() checks that it started, watches, and stops cleanly
