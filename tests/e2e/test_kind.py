"""End to end on a real cluster (kind): the image, ``manifests/default``, one remediation.

Opt-in with ``make e2e`` (``MCP_E2E=1``). The module fixture creates a throw-away kind
cluster, builds the Dockerfile's image under the tag ``manifests/default`` deploys and loads
it into kind, applies ``manifests/default`` with a receiver-token Secret, and waits for the
operator to be ready (its readiness probe is the receiver's ``/readyz``). The test then
restarts a Deployment through an McpRemediation and waits for ``Succeeded``. The cluster is
deleted at the end, also when the test fails.

Skipped, with the reason, unless ``MCP_E2E=1`` and both kind and a reachable Docker daemon
exist (the build machines have neither).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[2]
NAMESPACE = "mcp-remediator"
SCENARIO_NAMESPACE = "mcp-e2e"
# The ServiceMonitor in manifests/default needs the Prometheus Operator's CRD; kind has none,
# and the operator does not depend on it, so a schemaless stand-in lets the install apply.
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "names": {"kind": "ServiceMonitor", "plural": "servicemonitors"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def skip_reason() -> str | None:
    if os.environ.get("MCP_E2E") != "1":
        return "end-to-end tests on kind are opt-in: run `make e2e` (sets MCP_E2E=1)"
    if shutil.which("kind") is None:
        return "kind is not installed (https://kind.sigs.k8s.io/docs/user/quick-start/)"
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker daemon is reachable (`docker info` fails)"
    return None


SKIP_REASON = skip_reason()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
    # Creating a cluster and building an image take minutes, not the suite's two.
    pytest.mark.timeout(1200),
]


@dataclass
class Kind:
    name: str
    kubeconfig: Path

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
        kubectl = shutil.which("kubectl")
        assert kubectl is not None, "kubectl is required for the end-to-end tests"
        result = subprocess.run(
            [kubectl, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"kubectl {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    def apply(self, *objs: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objs))

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(
            self.kubectl("get", kind, name, "-n", namespace, "-o=json")
        )
        return obj

    def operator_logs(self) -> str:
        try:
            return self.kubectl("logs", "-n", NAMESPACE, "deployment/mcp-remediator", "--tail=80")
        except AssertionError as exc:
            return str(exc)


def check(*argv: str, timeout: float = 900) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout}\n{result.stderr}"


def deployed_image() -> str:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is required for the end-to-end tests"
    built = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "manifests" / "default")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (deployment,) = [d for d in yaml.safe_load_all(built) if d and d["kind"] == "Deployment"]
    image: str = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    return image


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kind]:
    kind = Kind(
        f"mcp-remediator-e2e-{secrets.token_hex(3)}",
        tmp_path_factory.mktemp("kind") / "kubeconfig",
    )
    check(
        "kind",
        "create",
        "cluster",
        f"--name={kind.name}",
        f"--kubeconfig={kind.kubeconfig}",
        "--wait=180s",
    )
    try:
        image = deployed_image()
        check("docker", "build", "-t", image, str(ROOT))
        check("kind", "load", "docker-image", image, f"--name={kind.name}")
        kind.apply(SERVICE_MONITOR_CRD)
        kind.kubectl(
            "wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com"
        )
        kind.kubectl("apply", "-k", str(ROOT / "manifests" / "default"))
        kind.kubectl(
            "create",
            "secret",
            "generic",
            "mcp-remediator-receiver-token",
            "-n",
            NAMESPACE,
            f"--from-literal=token={secrets.token_hex(32)}",
        )
        try:
            kind.kubectl(
                "rollout",
                "status",
                "-n",
                NAMESPACE,
                "deployment/mcp-remediator",
                "--timeout=300s",
                timeout=330,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noperator log:\n{kind.operator_logs()}") from exc
        yield kind
    finally:
        check("kind", "delete", "cluster", f"--name={kind.name}")


def test_a_remediation_restarts_a_deployment_on_a_real_cluster(cluster: Kind) -> None:
    labels = {"app": "finbot"}
    cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SCENARIO_NAMESPACE}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "finbot", "namespace": SCENARIO_NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [{"name": "finbot", "image": "registry.k8s.io/pause:3.9"}]
                    },
                },
            },
        },
    )
    cluster.kubectl(
        "rollout",
        "status",
        "-n",
        SCENARIO_NAMESPACE,
        "deployment/finbot",
        "--timeout=300s",
        timeout=330,
    )
    cluster.apply(
        {
            "apiVersion": "mcp.dese.ai/v1alpha1",
            "kind": "McpRemediation",
            "metadata": {"name": "restart-finbot", "namespace": SCENARIO_NAMESPACE},
            "spec": {
                "steps": [
                    {
                        "name": "restart",
                        "action": "rolloutRestart",
                        "params": {"name": "finbot", "rolloutTimeoutSeconds": 300},
                    }
                ]
            },
        }
    )
    deadline = time.monotonic() + 400
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = cluster.get("mcpremediation", "restart-finbot", SCENARIO_NAMESPACE).get(
            "status", {}
        )
        if status.get("phase") in ("Succeeded", "Failed", "Refused"):
            break
        time.sleep(2)
    assert status.get("phase") == "Succeeded", (
        f"status: {json.dumps(status, indent=2)}\noperator log:\n{cluster.operator_logs()}"
    )
    (step,) = status["steps"]
    deployment = cluster.get("deployment", "finbot", SCENARIO_NAMESPACE)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["kubectl.kubernetes.io/restartedAt"] == step["outputs"]["restartedAt"]
    assert deployment["status"]["updatedReplicas"] == 1
