"""`mcp-remediator mcp-server` over stdio, driven by the official SDK's own client
(``ClientSession``), against the emulated cluster (RBAC enforced) and the real operator."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult, TextContent

from fixtures.cluster import ROOT, Cluster, OperatorFactory, deployment
from mcp_remediator.models import (
    ANNOTATION_PROPOSAL_REASON,
    ANNOTATION_PROPOSED_BY,
    API_VERSION,
    REMEDIATIONS,
)

AGENT_RULES = [
    {"apiGroups": ["mcp.dese.ai"], "resources": ["mcprunbooks"], "verbs": ["get", "list"]},
    {
        "apiGroups": ["mcp.dese.ai"],
        "resources": ["mcpremediations"],
        "verbs": ["get", "list", "create"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
]
READER_RULES = [
    {"apiGroups": ["mcp.dese.ai"], "resources": ["mcprunbooks", "mcpremediations"],
     "verbs": ["get", "list"]},
]  # fmt: skip


def runbook(name: str = "restart-finbot", **guardrails: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "McpRunbook",
        "metadata": {"name": name, "namespace": "mcp"},
        "spec": {
            "description": "Restart a stuck MCP module",
            "triggers": [{"alertname": "McpModuleDown", "matchers": ['severity="critical"']}],
            "steps": [
                {
                    "name": "restart",
                    "action": "rolloutRestart",
                    "params": {"name": "{{ labels.deployment }}"},
                }
            ],
            "guardrails": {"groupBy": ["deployment"], "cooldownSeconds": 600, **guardrails},
        },
    }


def kubeconfig(cluster: Cluster, token: str, path: Path) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulated", "cluster": {"server": cluster.url}}],
        "users": [{"name": "agent", "user": {"token": token}}],
        "contexts": [
            {
                "name": "agent",
                "context": {"cluster": "emulated", "user": "agent", "namespace": "mcp"},
            }
        ],
        "current-context": "agent",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@asynccontextmanager
async def mcp_session(
    cluster: Cluster, tmp_path: Path, account: str, rules: list[dict[str, Any]]
) -> AsyncIterator[ClientSession]:
    """The server as an agent's MCP client starts it: a stdio subprocess, with the
    kubeconfig of the ServiceAccount ``mcp/<account>`` holding ``rules``."""
    cluster.grant("mcp", account, rules)
    token = cluster.api.service_account_token("mcp", account)
    config = kubeconfig(cluster, token, tmp_path / f"{account}.kubeconfig")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_remediator", "mcp-server", "--kubeconfig", str(config)],
        env=env,
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


def error_of(result: CallToolResult) -> dict[str, Any]:
    assert result.isError, result
    [content] = result.content
    assert isinstance(content, TextContent)
    found: dict[str, Any] = json.loads(content.text)
    return found


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.isError, result.content
    assert result.structuredContent is not None
    return result.structuredContent


async def test_tools_are_listed_with_typed_schemas_and_none_approves(
    cluster: Cluster, tmp_path: Path
) -> None:
    async with mcp_session(cluster, tmp_path, "agent", AGENT_RULES) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) == {
            "list_runbooks",
            "simulate_alert",
            "propose_remediation",
            "get_remediation",
            "list_remediations",
        }
        for tool in tools.values():
            assert tool.description and len(tool.description) > 40, tool.name
            assert tool.outputSchema is not None, tool.name
        propose = tools["propose_remediation"].inputSchema
        assert set(propose["required"]) == {"runbook", "namespace", "reason"}
        # No way to approve, give inline steps or turn dry-run off.
        assert not {"approved", "steps"} & set(propose["properties"])
        assert propose["properties"]["dryRun"]["default"] is False
        assert tools["simulate_alert"].inputSchema["required"] == ["labels"]
        assert tools["list_runbooks"].annotations is not None
        assert tools["list_runbooks"].annotations.readOnlyHint is True

        resources = {str(r.uri) for r in (await session.list_resources()).resources}
        assert {"mcp-remediator://runbooks", "mcp-remediator://guide"} <= resources
        guide = await session.read_resource("mcp-remediator://guide")  # type: ignore[arg-type]
        assert "AUTO" in guide.contents[0].text  # type: ignore[union-attr]


async def test_list_and_simulate_write_nothing(cluster: Cluster, tmp_path: Path) -> None:
    cluster.seed(runbook())
    broken = runbook("broken")
    broken["spec"]["steps"][0]["action"] = "flushEverything"
    cluster.seed_stale(broken)  # the action's enum refuses it today
    writes = len(cluster.api.write_requests())
    async with mcp_session(cluster, tmp_path, "agent", AGENT_RULES) as session:
        listed = structured(await session.call_tool("list_runbooks", {"namespace": "mcp"}))
        by_name = {r["name"]: r for r in listed["runbooks"]}
        fine = by_name["restart-finbot"]
        assert fine["valid"] is True
        assert fine["triggers"] == [
            {"alertname": "McpModuleDown", "matchers": ['severity="critical"']}
        ]
        assert fine["steps"][0]["action"] == "rolloutRestart"
        assert fine["guardrails"]["cooldownSeconds"] == 600
        assert by_name["broken"]["valid"] is False
        assert "flushEverything" in by_name["broken"]["problems"][0]

        labels = {"alertname": "McpModuleDown", "severity": "critical", "deployment": "finbot-api"}
        simulated = structured(
            await session.call_tool("simulate_alert", {"labels": labels, "namespace": "mcp"})
        )
        [one] = simulated["remediations"]
        assert one["runbook"] == "restart-finbot"
        assert one["steps"][0]["params"]["name"] == "finbot-api"
        assert one["guardrails"]["decision"] == "allowed"
        assert one["remediation"].startswith("restart-finbot-")

        catalogue = await session.read_resource("mcp-remediator://runbooks")  # type: ignore[arg-type]
        docs = list(yaml.safe_load_all(catalogue.contents[0].text))  # type: ignore[union-attr]
        assert {d["metadata"]["name"] for d in docs} == {"restart-finbot", "broken"}
    assert len(cluster.api.write_requests()) == writes  # by the server: nothing


async def test_a_proposal_waits_for_approval_then_runs_and_a_second_is_cooled_down(
    cluster: Cluster, operator_factory: OperatorFactory, tmp_path: Path
) -> None:
    await operator_factory()
    cluster.seed(deployment("finbot-api"))
    cluster.seed(runbook())  # requireApproval is false: the proposal waits all the same
    args = {
        "runbook": "restart-finbot",
        "namespace": "mcp",
        "labels": {"deployment": "finbot-api"},
        "reason": "finbot-api answers 502 since 10:02; the guide's §2 says restart",
    }
    async with mcp_session(cluster, tmp_path, "agent", AGENT_RULES) as session:
        proposal = structured(await session.call_tool("propose_remediation", args))
        name = proposal["name"]
        assert proposal["phase"] in {"Pending", "AwaitingApproval"}
        waiting = await cluster.wait_phase(
            "mcp", name, {"AwaitingApproval", "Running", "Succeeded"}
        )
        assert waiting["status"]["phase"] == "AwaitingApproval"
        annotations = waiting["metadata"]["annotations"]
        assert annotations[ANNOTATION_PROPOSED_BY].startswith("mcp")  # the SDK client's name
        assert annotations[ANNOTATION_PROPOSAL_REASON] == args["reason"]
        assert waiting["spec"]["approved"] is False
        assert cluster.writes("deployments") == []

        got = structured(
            await session.call_tool("get_remediation", {"namespace": "mcp", "name": name})
        )
        assert got["phase"] == "AwaitingApproval"
        assert got["proposalReason"] == args["reason"]
        assert "AwaitingApproval" in {e["reason"] for e in got["events"]}

        # A human approves.
        await cluster.api.patch_object(
            API_VERSION, REMEDIATIONS, "mcp", name, {"spec": {"approved": True}}
        )
        done = await cluster.wait_phase("mcp", name, {"Succeeded", "Failed"})
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert len(cluster.writes("deployments")) == 1
        got = structured(
            await session.call_tool("get_remediation", {"namespace": "mcp", "name": name})
        )
        assert got["steps"][0]["phase"] == "Succeeded"
        assert got["steps"][0]["outputs"]["names"] == "finbot-api"

        # Proposed again: the runbook's cooldown holds for proposals as for alerts. (In the
        # second the first run finished it still counts as unfinished: times have whole
        # seconds, so the guardrails would say ConcurrencyLimit; wait that second out.)
        await asyncio.sleep(1.1)
        again = structured(await session.call_tool("propose_remediation", args))
        skipped = await cluster.wait_phase("mcp", again["name"], {"Skipped", "AwaitingApproval"})
        assert skipped["status"]["phase"] == "Skipped"
        assert skipped["status"]["reason"] == "Cooldown"
        assert len(cluster.writes("deployments")) == 1

        listed = structured(
            await session.call_tool("list_remediations", {"namespace": "mcp", "phase": "Skipped"})
        )
        assert [r["name"] for r in listed["remediations"]] == [again["name"]]


async def test_forbidden_and_malformed_calls_are_tool_errors_and_the_server_lives(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.seed(runbook())
    async with mcp_session(cluster, tmp_path, "reader", READER_RULES) as session:
        args = {"runbook": "restart-finbot", "namespace": "mcp", "reason": "x"}
        error = error_of(await session.call_tool("propose_remediation", args))
        assert error["error"] == "Forbidden"
        assert error["status"] == 403
        assert any(entry.resource == "mcpremediations" for entry in cluster.denied())
        assert cluster.api.list_objects(API_VERSION, REMEDIATIONS, "mcp") == []

        missing = error_of(
            await session.call_tool("propose_remediation", {**args, "runbook": "nope"})
        )
        assert missing["error"] == "RunbookNotFound"

        malformed = error_of(await session.call_tool("propose_remediation", {"runbook": 5}))
        assert malformed["error"] == "InvalidCall"
        assert "validation error" in malformed["message"]
        bad_alert = await session.call_tool("simulate_alert", {"labels": {"severity": "x"}})
        assert error_of(bad_alert)["error"] == "Invalid"

        # Still serving.
        listed = structured(await session.call_tool("list_runbooks", {}))
        assert [r["name"] for r in listed["runbooks"]] == ["restart-finbot"]


async def test_http_transport_needs_the_bearer_token(
    cluster: Cluster, tmp_path: Path, free_tcp_port: int
) -> None:
    import httpx
    from mcp.client.streamable_http import streamable_http_client

    cluster.seed(runbook())
    cluster.grant("mcp", "agent", AGENT_RULES)
    config = kubeconfig(
        cluster, cluster.api.service_account_token("mcp", "agent"), tmp_path / "k.yaml"
    )
    secret = "s3cret-token-for-the-test"
    (tmp_path / "token").write_text(secret + "\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcp_remediator", "mcp-server", "--kubeconfig", str(config),
        "--http", "--port", str(free_tcp_port), "--token-file", str(tmp_path / "token"),
        env={**os.environ, "PYTHONPATH": str(ROOT / "operator")},
    )  # fmt: skip
    url = f"http://127.0.0.1:{free_tcp_port}/mcp"
    try:
        async with httpx.AsyncClient() as http:

            async def refused() -> bool:
                try:
                    answer = await http.post(url, json={})
                except httpx.TransportError:
                    return False
                return answer.status_code == 401

            for _ in range(200):
                if await refused():
                    break
                await asyncio.sleep(0.05)
            wrong = await http.post(url, json={}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        headers = {"Authorization": f"Bearer {secret}"}
        async with (
            httpx.AsyncClient(headers=headers) as authorized,
            streamable_http_client(url, http_client=authorized) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            listed = structured(await session.call_tool("list_runbooks", {}))
            assert [r["name"] for r in listed["runbooks"]] == ["restart-finbot"]
    finally:
        process.terminate()
        await process.wait()


def test_without_the_mcp_extra_the_command_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mcp_remediator import cli

    for name in [n for n in sys.modules if n == "mcp" or n.startswith("mcp.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.delitem(sys.modules, "mcp_remediator.mcpserver", raising=False)
    assert cli.main(["mcp-server"]) == 2
    assert "pip install 'mcp-remediator[mcp]'" in capsys.readouterr().err
