"""The real ``kubectl`` drives the emulated cluster through a kubeconfig, as a user of the demo
would: discovery (core kinds, short names, CRDs from crds/, their category), a watch, the
server's Table columns (printer columns of the CRDs, the built-in printers, in a watch too),
``kubectl explain`` from the OpenAPI v3 documents, ``kubectl apply -k`` with its default
validation (which finds ``fieldValidation`` in OpenAPI v3 and leaves it to the server),
Events (``get``, ``events``, ``describe``), the protobuf bodies of ``kubectl create <kind>``,
``scale``, ``apply --server-side`` (conflicts, ``--force-conflicts``) and deletion by label.

kubectl is required: a missing binary fails the test (it comes with the machine image; the
Makefile's deps targets do not install it).
"""

from __future__ import annotations

import asyncio
import pathlib
import re
import shutil
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
import yaml

from mcp_remediator.testing.emulator import ApiServerEmulator, write_kubeconfig
from mcp_remediator.testing.tls import make_certificate, tls_server

ROOT = pathlib.Path(__file__).resolve().parents[2]
MCP_GROUP = "mcp.dese.ai"
RUNBOOKS = f"{MCP_GROUP}/v1alpha1"
TIMEOUT = 30.0


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise RuntimeError(
            "kubectl is not installed: these tests drive the real kubectl against the emulator; "
            "install a recent kubectl (tested with 1.32)"
        )
    return path


def remediation(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{MCP_GROUP}/v1alpha1",
        "kind": "McpRemediation",
        "metadata": {"name": name, "namespace": "mcp"},
        # The CRD's CEL rule: exactly one of runbookRef or (non-empty) steps.
        "spec": {"runbookRef": {"name": "restart"}},
    }


@pytest.fixture
async def emulated(tmp_path: pathlib.Path) -> AsyncIterator[tuple[ApiServerEmulator, list[str]]]:
    binary = kubectl()
    async with ApiServerEmulator() as em, kmock.Server(em):
        em.register_builtins()
        assert em.register_crd_dir(ROOT / "crds")
        for namespace in ("mcp", "apps"):
            em.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        em.seed(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web-0", "namespace": "apps"},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            }
        )
        em.seed(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": "mcp"},
                "data": {"a": "b"},
            }
        )
        em.seed(remediation("existing"))
        config = write_kubeconfig(tmp_path / "kubeconfig", str(em.url).rstrip("/"))
        base = [binary, "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "cache")]
        yield em, base


async def run(base: list[str], *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *base,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"kubectl {' '.join(args)} did not finish in {TIMEOUT}s") from None
    stderr = err.decode()
    assert process.returncode == 0, f"kubectl {' '.join(args)} failed:\n{stderr}"
    # kubectl warns on ambiguous short names (a subresource sharing its parent's names).
    assert "Warning" not in stderr, stderr
    return out.decode()


def names(table: str) -> set[str]:
    """The NAME column of kubectl's table (after NAMESPACE with -A)."""
    lines = table.strip().splitlines()
    assert lines, "kubectl printed no table"
    header = lines[0].split()
    column = header.index("NAME")
    return {line.split()[column] for line in lines[1:]}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("get", "pods", "-A"), {"web-0"}),
        (("get", "po", "-n", "apps"), {"web-0"}),
        (("get", "cm", "-n", "mcp"), {"settings"}),
        (("get", "configmaps", "-n", "mcp"), {"settings"}),
        (("get", "ns"), {"mcp", "apps"}),
        (("get", "mcprem", "-n", "mcp"), {"existing"}),
        (("get", "mcpremediations.mcp.dese.ai", "-n", "mcp"), {"existing"}),
        (("get", "all", "-n", "apps"), {"web-0", "pod/web-0"}),
        (("get", "crd"), {"mcpremediations.mcp.dese.ai", "applications.argoproj.io"}),
    ],
)
async def test_kubectl_gets(
    emulated: tuple[ApiServerEmulator, list[str]], args: tuple[str, ...], expected: set[str]
) -> None:
    _, base = emulated
    found = names(await run(base, *args))
    assert found & expected, (args, found)


async def test_kubectl_discovers_in_two_requests(
    emulated: tuple[ApiServerEmulator, list[str]],
) -> None:
    """Aggregated discovery: /api and /apis answer every group's resources at once."""
    em, base = emulated
    await run(base, "get", "deployments,mcprem", "-A")
    paths = [r.url.path for r in list(em) if r.method == kmock.method.GET]
    discovery = [p for p in paths if re.fullmatch(r"/api(/v1)?|/apis(/[^/]+){0,2}", p)]
    assert sorted(set(discovery)) == ["/api", "/apis"], paths


async def test_kubectl_gets_the_crds_category(
    emulated: tuple[ApiServerEmulator, list[str]],
) -> None:
    em, base = emulated
    categories = {
        tuple(info.categories)
        for resource, info in em.resources.items()
        if resource.group == MCP_GROUP
    }
    assert categories == {("mcp",)}, "crds/ declare the category `mcp`"
    em.seed(
        {
            "apiVersion": f"{MCP_GROUP}/v1alpha1",
            "kind": "McpRunbook",
            "metadata": {"name": "book", "namespace": "mcp"},
            "spec": {"steps": [{"name": "ping", "action": "redisPing"}]},
        }
    )
    output = await run(base, "get", "mcp", "-A")
    # Two kinds: kubectl prints kind/name.
    assert "existing" in output and "book" in output, output


async def test_kubectl_watch_sees_an_object_created_after_it_started(
    emulated: tuple[ApiServerEmulator, list[str]],
) -> None:
    em, base = emulated
    process = await asyncio.create_subprocess_exec(
        *base,
        "get",
        "mcprem",
        "-n",
        "mcp",
        "-w",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    seen: list[str] = []
    try:

        async def read_until(name: str) -> None:
            assert process.stdout is not None
            while True:
                line = (await process.stdout.readline()).decode()
                if not line:
                    raise AssertionError(f"kubectl's watch ended before {name!r}: {seen}")
                seen.append(line)
                if name in line.split():
                    return

        async def watching() -> None:
            while "mcpremediations" not in em.watched_plurals():
                await asyncio.sleep(0.05)

        await asyncio.wait_for(read_until("existing"), TIMEOUT)
        await asyncio.wait_for(watching(), TIMEOUT)
        em.seed(remediation("created-later"))
        await asyncio.wait_for(read_until("created-later"), TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"kubectl's watch did not show the object; stdout: {seen}") from None
    finally:
        if process.returncode is None:
            process.kill()
        _, err = await process.communicate()
    stderr = err.decode()
    assert "Warning" not in stderr and "error" not in stderr.lower(), stderr


def table(output: str) -> tuple[list[str], list[list[str]]]:
    """kubectl's table: the header's column names and each row split on 2+ spaces."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "kubectl printed no table"
    split = [re.split(r"\s{2,}", line.strip()) for line in lines]
    return split[0], split[1:]


async def test_kubectl_get_shows_the_crds_printer_columns(
    emulated: tuple[ApiServerEmulator, list[str]],
) -> None:
    em, base = emulated
    running = remediation("running")
    running["spec"] = {"runbookRef": {"name": "redis-down"}}
    running["status"] = {"phase": "Running", "currentStep": "restart", "reason": "Started"}
    em.seed(running)
    header, rows = table(await run(base, "get", "mcprem", "-n", "mcp"))
    assert header == ["NAME", "RUNBOOK", "PHASE", "STEP", "AGE"], header
    assert ["running", "redis-down", "Running", "restart"] == rows[-1][:4], rows
    assert re.fullmatch(r"\d+s", rows[-1][4]), rows  # the server's age, as kubectl shows it
    # REASON is a priority-1 column: -o wide only.
    header, rows = table(await run(base, "get", "mcprem", "running", "-n", "mcp", "-o", "wide"))
    assert header == ["NAME", "RUNBOOK", "PHASE", "STEP", "REASON", "AGE"], header
    assert rows[0][:5] == ["running", "redis-down", "Running", "restart", "Started"], rows


async def test_kubectl_get_shows_built_in_columns(
    emulated: tuple[ApiServerEmulator, list[str]],
) -> None:
    em, base = emulated
    header, rows = table(await run(base, "get", "pods", "-n", "apps"))
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], header
    em.seed(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
                },
            },
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
        }
    )
    header, rows = table(await run(base, "get", "deploy", "-n", "apps"))
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], header
    assert rows[0][:4] == ["web", "2/3", "3", "2"], rows
    header, rows = table(await run(base, "get", "cm", "-n", "mcp"))
    assert header == ["NAME", "DATA", "AGE"] and rows[0][:2] == ["settings", "1"], rows
    header, rows = table(await run(base, "get", "ns"))
    assert header == ["NAME", "STATUS", "AGE"], header
    # Kinds without a printer: Name and Created At.
    em.seed(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "reader", "namespace": "mcp"},
            "rules": [],
        }
    )
    header, rows = table(await run(base, "get", "roles", "-n", "mcp"))
    assert header == ["NAME", "CREATED AT"] and rows[0][0] == "reader", (header, rows)
    # -o yaml still gets the objects themselves.
    assert "kind: ConfigMap" in await run(base, "get", "cm", "settings", "-n", "mcp", "-o", "yaml")


async def test_kubectl_explain_reads_the_crds_openapi_schema(
    emulated: tuple[ApiServerEmulator, list[str]],
) -> None:
    _, base = emulated
    output = await run(base, "explain", "mcprem.spec")
    assert "KIND:       McpRemediation" in output and "runbookRef" in output, output
    recursive = await run(base, "explain", "mcprem.spec", "--recursive")
    assert re.search(r"^\s+runbookRef\s+<Object>", recursive, re.MULTILINE), recursive
    assert re.search(r"^\s+name\s+<string>", recursive, re.MULTILINE), recursive
    metadata = await run(base, "explain", "mcprunbooks.metadata")
    assert "<ObjectMeta>" in metadata, metadata
    pods = await run(base, "explain", "pods.spec.containers")
    assert "<[]Container>" in pods and "image" in pods, pods
    # The client names these models CoreV1Event and EventsV1Event; the API does not.
    involved = await run(base, "explain", "events.involvedObject")
    assert "<ObjectReference>" in involved and "uid" in involved, involved
    regarding = await run(base, "explain", "events.regarding", "--api-version=events.k8s.io/v1")
    assert "<ObjectReference>" in regarding, regarding


async def test_kubectl_apply_k_runbooks_with_server_side_field_validation(
    emulated: tuple[ApiServerEmulator, list[str]],
) -> None:
    em, base = emulated
    expected = {
        doc["metadata"]["name"]
        for path in (ROOT / "manifests" / "runbooks").glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and doc.get("kind") == "McpRunbook"
    }
    assert expected, "manifests/runbooks holds McpRunbooks"
    output = await run(base, "apply", "-k", str(ROOT / "manifests" / "runbooks"))
    assert output.count(" created") == len(expected), output
    stored = {obj["metadata"]["name"] for obj in em.list_objects(RUNBOOKS, "mcprunbooks", "mcp")}
    assert stored == expected
    # kubectl found fieldValidation in the OpenAPI v3 document: the server validates.
    creates = [r for r in list(em) if r.method == kmock.method.POST]
    assert creates and all(r.params.get("fieldValidation") == "Strict" for r in creates)
    # Again: client-side apply patches what is there (GET, then a merge patch).
    output = await run(base, "apply", "-k", str(ROOT / "manifests" / "runbooks"))
    assert "created" not in output, output
    header, rows = table(await run(base, "get", "mcprunbooks", "-n", "mcp"))
    assert header == ["NAME", "VALID", "SUSPENDED", "LAST-TRIGGERED", "AGE"], header
    assert {row[0] for row in rows} == expected


async def test_kubectl_watch_prints_table_rows(
    emulated: tuple[ApiServerEmulator, list[str]],
) -> None:
    em, base = emulated
    process = await asyncio.create_subprocess_exec(
        *base,
        "get",
        "pods",
        "-n",
        "apps",
        "-w",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:

        async def read_until(name: str) -> list[str]:
            assert process.stdout is not None
            while True:
                line = (await process.stdout.readline()).decode()
                if not line:
                    raise AssertionError(f"kubectl's watch ended before {name!r}: {lines}")
                lines.append(line)
                if line.split()[:1] == [name]:
                    return line.split()

        await asyncio.wait_for(read_until("web-0"), TIMEOUT)
        while "pods" not in em.watched_plurals():
            await asyncio.wait_for(asyncio.sleep(0.05), TIMEOUT)
        em.seed(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web-1", "namespace": "apps"},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]},
                "status": {
                    "phase": "Running",
                    "containerStatuses": [
                        {"name": "web", "ready": True, "restartCount": 2, "state": {"running": {}}}
                    ],
                },
            }
        )
        row = await asyncio.wait_for(read_until("web-1"), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
        await process.communicate()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], lines
    assert row[:4] == ["web-1", "1/1", "Running", "2"], row
    # One header: later events' Tables carry no column definitions.
    assert sum(1 for line in lines if line.startswith("NAME")) == 1, lines


async def run_failing(base: list[str], *args: str) -> str:
    """Run kubectl expecting it to fail; its stderr."""
    process = await asyncio.create_subprocess_exec(
        *base, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode != 0, f"kubectl {' '.join(args)} succeeded"
    return err.decode()


def seed_events(em: ApiServerEmulator) -> None:
    """An Event about the ``existing`` McpRemediation in each shape: core ``v1`` (as the
    operator's ``kube.events.post_event`` writes it) and ``events.k8s.io/v1``.
    """
    target = em.get(f"{MCP_GROUP}/v1alpha1", "mcpremediations", "mcp", "existing")
    assert target is not None
    reference = {
        "apiVersion": f"{MCP_GROUP}/v1alpha1",
        "kind": "McpRemediation",
        "name": "existing",
        "namespace": "mcp",
        "uid": target["metadata"]["uid"],
    }
    em.seed(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "existing.core", "namespace": "mcp"},
            "involvedObject": reference,
            "reason": "Planned",
            "message": "the plan is ready",
            "type": "Normal",
            "firstTimestamp": "2025-01-01T00:00:00Z",
            "lastTimestamp": "2025-01-01T00:00:00Z",
            "count": 1,
            "source": {"component": "mcp-remediator"},
            "reportingComponent": "mcp-remediator",
        }
    )
    em.seed(
        {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "existing.new", "namespace": "mcp"},
            "regarding": reference,
            "reason": "Refused",
            "note": "a step was refused",
            "type": "Warning",
            "eventTime": "2025-01-01T00:00:01.000000Z",
            "reportingController": "mcp.dese.ai/remediator",
            "reportingInstance": "remediator-0",
            "action": "Refuse",
        }
    )
    em.seed(  # about another object: describe must not show it
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "other", "namespace": "mcp"},
            "involvedObject": {**reference, "name": "other", "uid": "another-uid"},
            "reason": "Elsewhere",
            "message": "not about existing",
            "type": "Normal",
        }
    )


async def test_kubectl_gets_events_of_both_shapes(
    emulated: tuple[ApiServerEmulator, list[str]],
) -> None:
    em, base = emulated
    seed_events(em)
    listed = await run(base, "get", "events", "-n", "mcp", "-o", "name")
    assert {"event/existing.core", "event/existing.new"} <= set(listed.split()), listed
    # kubectl's own columns for Events (no NAME), from the server's Table.
    header = (await run(base, "get", "events", "-n", "mcp")).splitlines()[0].split()
    assert header == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], header
    output = await run(
        base, "get", "events.events.k8s.io", "-n", "mcp", "-o", "jsonpath={.items[*].note}"
    )
    assert "the plan is ready" in output and "a step was refused" in output
    selected = await run(
        base,
        "get",
        "events",
        "-n",
        "mcp",
        "--field-selector",
        "involvedObject.name=other",
        "-o",
        "name",
    )
    assert selected.split() == ["event/other"]
    listed = await run(base, "events", "-n", "mcp", "--for", "mcpremediation/existing")
    assert "the plan is ready" in listed and "a step was refused" in listed
    assert "not about existing" not in listed


async def test_kubectl_describe_shows_the_events_of_an_object(
    emulated: tuple[ApiServerEmulator, list[str]],
) -> None:
    em, base = emulated
    seed_events(em)
    output = await run(base, "describe", "mcprem", "existing", "-n", "mcp")
    events = output.split("Events:", 1)[1]
    assert "Planned" in events and "the plan is ready" in events
    assert "Refused" in events and "a step was refused" in events
    assert "Elsewhere" not in events


async def test_kubectl_create_sends_protobuf_that_the_emulator_reads(
    emulated: tuple[ApiServerEmulator, list[str]],
) -> None:
    em, base = emulated
    await run(base, "create", "namespace", "extra")
    await run(base, "create", "configmap", "made", "-n", "mcp", "--from-literal=a=b")
    await run(base, "create", "secret", "generic", "key", "-n", "mcp", "--from-literal=k=v")
    await run(base, "create", "deployment", "web", "-n", "apps", "--image=nginx", "--port=80")
    await run(base, "create", "serviceaccount", "robot", "-n", "mcp")
    await run(base, "create", "role", "reader", "-n", "mcp", "--verb=get", "--resource=pods")
    await run(base, "create", "rolebinding", "reader", "-n", "mcp", "--role=reader", "--user=u")
    await run(base, "create", "service", "clusterip", "web", "-n", "apps", "--tcp=80:8080")
    service = em.get("v1", "services", "apps", "web")
    assert service is not None and service["spec"]["ports"][0]["targetPort"] == 8080
    assert em.get("v1", "namespaces", None, "extra") is not None
    made = em.get("v1", "configmaps", "mcp", "made")
    assert made is not None and made["data"] == {"a": "b"}
    assert made["metadata"]["managedFields"][0]["manager"] == "kubectl-create"
    secret = em.get("v1", "secrets", "mcp", "key")
    assert secret is not None and secret["data"] == {"k": "dg=="}
    web = em.get("apps/v1", "deployments", "apps", "web")
    assert web is not None
    container = web["spec"]["template"]["spec"]["containers"][0]
    assert (container["image"], container["ports"]) == ("nginx", [{"containerPort": 80}])
    assert web["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    binding = em.get("rbac.authorization.k8s.io/v1", "rolebindings", "mcp", "reader")
    assert binding is not None and binding["roleRef"]["name"] == "reader"
    assert binding["subjects"][0]["name"] == "u"


async def test_kubectl_scale(emulated: tuple[ApiServerEmulator, list[str]]) -> None:
    em, base = emulated
    await run(base, "create", "deployment", "web", "-n", "apps", "--image=nginx")
    output = await run(base, "scale", "deployment", "web", "-n", "apps", "--replicas=3")
    assert "scaled" in output
    web = em.get("apps/v1", "deployments", "apps", "web")
    assert web is not None and web["spec"]["replicas"] == 3


APPLIED = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: apps
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: api}}
  template:
    metadata:
      labels: {{app: api}}
    spec:
      containers:
      - name: api
        image: api:{tag}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: api-settings
  namespace: apps
data:
  level: {level}
"""


async def test_kubectl_apply_server_side(
    emulated: tuple[ApiServerEmulator, list[str]], tmp_path: pathlib.Path
) -> None:
    em, base = emulated
    manifest = tmp_path / "app.yaml"
    # Default validation: kubectl reads /openapi/v3 and leaves it to the server (Strict).
    apply = ("apply", "--server-side", "-f", str(manifest))
    manifest.write_text(APPLIED.format(replicas=2, tag=1, level="info"))
    output = await run(base, *apply)
    assert "deployment.apps/api serverside-applied" in output
    assert "configmap/api-settings serverside-applied" in output
    api = em.get("apps/v1", "deployments", "apps", "api")
    assert api is not None and api["spec"]["replicas"] == 2
    [entry] = api["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"]) == ("kubectl", "Apply")

    await run(base, "scale", "deployment", "api", "-n", "apps", "--replicas=5")
    manifest.write_text(APPLIED.format(replicas=2, tag=2, level="debug"))
    error = await run_failing(base, *apply)
    assert "Apply failed with 1 conflict" in error and ".spec.replicas" in error, error

    await run(base, *apply, "--force-conflicts")
    api = em.get("apps/v1", "deployments", "apps", "api")
    assert api is not None and api["spec"]["replicas"] == 2
    assert api["spec"]["template"]["spec"]["containers"][0]["image"] == "api:2"
    settings = em.get("v1", "configmaps", "apps", "api-settings")
    assert settings is not None and settings["data"] == {"level": "debug"}


async def test_kubectl_deletes_by_label_and_all(
    emulated: tuple[ApiServerEmulator, list[str]],
) -> None:
    em, base = emulated
    for name, labels in (("a", {"a": "b"}), ("b", {"a": "b"}), ("c", {"a": "c"})):
        em.seed(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "apps", "labels": labels},
            }
        )
    output = await run(base, "delete", "cm", "-n", "apps", "-l", "a=b")
    assert 'configmap "a" deleted' in output and 'configmap "b" deleted' in output
    assert [cm["metadata"]["name"] for cm in em.list_objects("v1", "configmaps", "apps")] == ["c"]
    await run(base, "delete", "cm", "-n", "apps", "--all")
    assert em.list_objects("v1", "configmaps", "apps") == []


async def test_kubectl_auth_over_tls_with_rbac(tmp_path: pathlib.Path) -> None:
    """With authentication on, kubectl sends its token (only over https): ``auth whoami``
    and ``auth can-i`` (protobuf reviews) answer as RBAC decides, as on a cluster."""
    binary = kubectl()
    async with ApiServerEmulator() as em:
        cert, key = make_certificate(tmp_path, "api")
        async with tls_server(em, cert, key) as server:
            em.register_builtins()
            em.register_crd_dir(ROOT / "crds")
            em.enable_auth()
            rbac = "rbac.authorization.k8s.io"
            em.apply(
                [
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mcp"}},
                    {"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {"name": "viewer", "namespace": "mcp"}},
                    {"apiVersion": f"{rbac}/v1", "kind": "RoleBinding",
                     "metadata": {"name": "viewer", "namespace": "mcp"},
                     "subjects": [{"kind": "ServiceAccount", "name": "viewer",
                                   "namespace": "mcp"}],
                     "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "view"}},
                ]
            )  # fmt: skip
            url = str(server.url).rstrip("/")
            token = em.service_account_token("mcp", "viewer")
            config = write_kubeconfig(
                tmp_path / "viewer", url, "mcp", token=token, certificate_authority=cert
            )
            base = [binary, "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "c")]
            whoami = await run(base, "auth", "whoami")
            assert "system:serviceaccount:mcp:viewer" in whoami, whoami
            assert (await run(base, "auth", "can-i", "list", "configmaps")).strip() == "yes"
            process = await asyncio.create_subprocess_exec(
                *base, "auth", "can-i", "patch", "deployments", stdout=asyncio.subprocess.PIPE
            )
            out, _ = await asyncio.wait_for(process.communicate(), TIMEOUT)
            assert (process.returncode, out.decode().strip()) == (1, "no")
            rules = await run(base, "auth", "can-i", "--list", "-n", "mcp")
            assert "configmaps" in rules, rules
            forbidden = await run_failing(base, "create", "configmap", "x", "-n", "mcp")
            assert 'User "system:serviceaccount:mcp:viewer" cannot create' in forbidden


async def test_kubectl_server_dry_run_changes_nothing(
    emulated: tuple[ApiServerEmulator, list[str]], tmp_path: pathlib.Path
) -> None:
    em, base = emulated
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: planned, namespace: mcp}\ndata: {a: b}\n"
    )
    output = await run(base, "apply", "--dry-run=server", "-f", str(manifest))
    assert "configmap/planned created (server dry run)" in output, output
    assert em.get("v1", "configmaps", "mcp", "planned") is None
    output = await run(base, "delete", "cm", "settings", "-n", "mcp", "--dry-run=server")
    assert "(server dry run)" in output, output
    assert em.get("v1", "configmaps", "mcp", "settings") is not None
    output = await run(
        base, "patch", "mcprem", "existing", "-n", "mcp", "--type", "merge",
        "-p", '{"spec":{"approved":true}}', "--dry-run=server",
    )  # fmt: skip
    assert "existing patched" in output, output
    [sent] = [r for r in list(em) if r.method == kmock.method.PATCH]
    assert sent.params.get("dryRun") == "All"
    existing = em.get("mcp.dese.ai/v1alpha1", "mcpremediations", "mcp", "existing")
    assert existing is not None and existing["spec"]["approved"] is False
