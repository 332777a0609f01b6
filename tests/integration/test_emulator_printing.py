"""The emulated API server answers Table reads and serves its OpenAPI documents over HTTP, as
kube-apiserver does for kubectl (tests/integration/test_kubectl.py drives kubectl itself).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator

import aiohttp
import httpx
import kmock
import pytest

from mcp_remediator.testing.emulator import ApiServerEmulator

ROOT = pathlib.Path(__file__).parents[2]
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
KUBECTL_GET = f"{TABLE},application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
REMEDIATIONS = "/apis/mcp.dese.ai/v1alpha1/namespaces/mcp/mcpremediations"


@pytest.fixture
async def em() -> AsyncIterator[ApiServerEmulator]:
    async with ApiServerEmulator() as emulator, kmock.Server(emulator):
        emulator.register_builtins()
        emulator.register_crd_dir(ROOT / "crds")
        emulator.seed(
            {
                "apiVersion": "mcp.dese.ai/v1alpha1",
                "kind": "McpRemediation",
                "metadata": {"name": "run", "namespace": "mcp"},
                "spec": {"runbookRef": {"name": "redis-down"}},
                "status": {"phase": "Running"},
            }
        )
        yield emulator


@pytest.fixture
async def http(em: ApiServerEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=str(em.url).rstrip("/"), timeout=10) as client:
        yield client


async def test_list_and_get_as_tables(http: httpx.AsyncClient) -> None:
    response = await http.get(REMEDIATIONS, headers={"Accept": KUBECTL_GET})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == TABLE
    body = response.json()
    assert body["kind"] == "Table" and body["metadata"]["resourceVersion"]
    assert [c["name"] for c in body["columnDefinitions"]][:4] == [
        "Name",
        "Runbook",
        "Phase",
        "Step",
    ]
    assert body["rows"][0]["cells"][:4] == ["run", "redis-down", "Running", None]
    assert body["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    one = await http.get(
        f"{REMEDIATIONS}/run", headers={"Accept": TABLE}, params={"includeObject": "Object"}
    )
    assert one.json()["rows"][0]["object"]["spec"]["runbookRef"] == {"name": "redis-down"}
    # The next plain read is plain JSON again (KMock would keep the Table's Content-Type).
    plain = await http.get(REMEDIATIONS)
    assert plain.headers["Content-Type"].startswith("application/json")
    assert "as=Table" not in plain.headers["Content-Type"]
    assert plain.json()["kind"] == "McpRemediationList"
    missing = await http.get(f"{REMEDIATIONS}/nope", headers={"Accept": TABLE})
    assert missing.status_code == 404 and missing.json()["kind"] == "Status"


async def test_watch_as_tables(em: ApiServerEmulator) -> None:
    url = str(em.url).rstrip("/") + REMEDIATIONS
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            url, params={"watch": "true", "timeoutSeconds": "1"}, headers={"Accept": KUBECTL_GET}
        ) as response,
    ):
        events = [json.loads(line) async for line in response.content if line.strip()]
    assert events[0]["type"] == "ADDED"
    assert events[0]["object"]["kind"] == "Table"
    assert events[0]["object"]["rows"][0]["cells"][0] == "run"


async def test_openapi_documents(http: httpx.AsyncClient) -> None:
    # kubectl asks for protobuf only: a JSON-only server says 406, and kubectl goes on.
    refused = await http.get(
        "/openapi/v2",
        headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"},
    )
    assert refused.status_code == 406 and refused.json()["reason"] == "NotAcceptable"
    v2 = await http.get("/openapi/v2", headers={"Accept": "application/json"})
    assert v2.status_code == 200 and v2.json()["swagger"] == "2.0"
    index = await http.get("/openapi/v3")
    assert index.status_code == 200  # not the 406 before it (KMock would keep that status)
    paths = index.json()["paths"]
    assert {"api/v1", "apis/apps/v1", "apis/mcp.dese.ai/v1alpha1"} <= set(paths)
    document = await http.get(paths["apis/mcp.dese.ai/v1alpha1"]["serverRelativeURL"])
    schemas = document.json()["components"]["schemas"]
    assert "ai.dese.mcp.v1alpha1.McpRunbook" in schemas
    core = await http.get("/openapi/v3/api/v1")
    assert "io.k8s.api.core.v1.Pod" in core.json()["components"]["schemas"]
    missing = await http.get("/openapi/v3/apis/example.com/v1")
    assert missing.status_code == 404


async def test_openapi_is_discovery_under_auth(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    em.enable_auth()
    em.add_token("reader-token", "reader")
    allowed = await http.get("/openapi/v3", headers={"Authorization": "Bearer reader-token"})
    assert allowed.status_code == 200
    # system:discovery is bound to system:authenticated only.
    anonymous = await http.get("/openapi/v3")
    assert anonymous.status_code == 403
    assert anonymous.json()["message"].startswith('forbidden: User "system:anonymous"')
