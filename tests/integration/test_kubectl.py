"""The real ``kubectl`` reads the emulated cluster through a kubeconfig, as a user of the demo
would: discovery (core kinds, short names, CRDs from crds/, their category) and a watch.

kubectl is required: a missing binary fails the test (it comes with the machine image; the
Makefile's deps targets do not install it).
"""

from __future__ import annotations

import asyncio
import pathlib
import shutil
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest

from mcp_remediator.testing.emulator import ApiServerEmulator, write_kubeconfig

ROOT = pathlib.Path(__file__).resolve().parents[2]
MCP_GROUP = "mcp.dese.ai"
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
        "spec": {},
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
    ],
)
async def test_kubectl_gets(
    emulated: tuple[ApiServerEmulator, list[str]], args: tuple[str, ...], expected: set[str]
) -> None:
    _, base = emulated
    found = names(await run(base, *args))
    assert found & expected, (args, found)


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
