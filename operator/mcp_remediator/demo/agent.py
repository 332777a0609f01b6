"""The AI ops agent of the demo's MCP incident, scripted: an MCP client (the official SDK's
``ClientSession``) that starts ``mcp-remediator mcp-server`` over stdio with its own
kubeconfig, as Claude Desktop or any agent framework would, and calls its tools.

No language model is involved: the calls an agent would make are played in order, so the
demo shows exactly what reaches the cluster through that door (nothing but a proposal,
which waits for a human).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_remediator
from mcp_remediator.testing.daemons import DemoError

CLIENT_NAME = "triage-agent"
CLIENT_VERSION = "0.1-demo"


class Agent:
    """One MCP session; ``call`` returns a tool's structured answer or raises DemoError
    with the tool's error."""

    def __init__(self, session: Any):
        self._session = session

    async def tools(self) -> list[str]:
        listed = await self._session.list_tools()
        return sorted(tool.name for tool in listed.tools)

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = await self._session.call_tool(tool, arguments)
        if result.isError:
            text = " ".join(getattr(part, "text", "") for part in result.content)
            raise DemoError(f"the agent's {tool} call failed: {text}")
        found = result.structuredContent
        if found is None:  # an SDK that only sends text: the same JSON
            found = json.loads(result.content[0].text)
        answer: dict[str, Any] = found
        return answer


@asynccontextmanager
async def agent_session(kubeconfig: Path, log: Path) -> AsyncIterator[Agent]:
    """``mcp-remediator mcp-server --kubeconfig <kubeconfig>`` as a stdio subprocess (its
    stderr into ``log``), and an initialized client session on it."""
    try:
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client
        from mcp.types import Implementation
    except ImportError as exc:  # pragma: no cover - the demo extra brings it
        raise DemoError(
            f"the MCP SDK is not installed ({exc}): pip install 'mcp-remediator[demo]'"
        ) from None
    # The server runs from the same code as the demo, installed or not.
    package_root = str(Path(mcp_remediator.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_remediator", "mcp-server", "--kubeconfig", str(kubeconfig)],
        env={**os.environ, "PYTHONPATH": path},
    )
    info = Implementation(name=CLIENT_NAME, version=CLIENT_VERSION)
    try:
        with log.open("a", encoding="utf-8") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write, client_info=info) as session:
                    await session.initialize()
                    yield Agent(session)
    except BaseExceptionGroup as group:
        # The SDK's task groups wrap what the incident raised: give the incident its error.
        raise _first_leaf(group) from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return next((exc for exc in leaves if isinstance(exc, DemoError)), leaves[0])
