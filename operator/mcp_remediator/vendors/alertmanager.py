"""Alertmanager's silences, through its API v2 and the shared ``httpx`` client.

A thin client: ``create`` (``POST /api/v2/silences``), ``find`` (``GET
/api/v2/silences?filter=...``), ``expire`` (``DELETE /api/v2/silence/{id}``) and
``version`` (``GET /api/v2/status``). Every request carries ``MCP_ALERTMANAGER_TOKEN``
as a bearer token when one is set and has its own timeout
(``MCP_ALERTMANAGER_TIMEOUT_SECONDS``).

Every failure (unreachable, a timeout, an error answer, an answer that is not the API's)
is one ``AlertmanagerError`` whose message names the server by ``redact.safe_host`` only,
never its user info or the token, and quotes at most a short piece of an error answer.

Called by ``silences``, the run's silence guardrail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import SecretStr

from mcp_remediator import redact

API = "/api/v2"
# Alertmanager answers a DELETE of a silence that already ended with a 500 whose text says
# so (silence.ErrNotFound is 404): both mean nothing is left to expire.
_ALREADY_EXPIRED = re.compile(r"already expired")


class AlertmanagerError(Exception):
    """Alertmanager could not be asked, or refused; the message holds no secret."""


class Alertmanager:
    """One Alertmanager's API v2."""

    def __init__(self, http: httpx.AsyncClient, url: str, token: SecretStr | None, timeout: float):
        self.http = http
        self.base = url.rstrip("/")
        self.host = redact.safe_host(url, "MCP_ALERTMANAGER_URL")
        self.token = token
        self.timeout = timeout

    async def _request(
        self,
        method: str,
        path: str,
        *,
        filters: list[str] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.get_secret_value()}"
        try:
            return await self.http.request(
                method,
                f"{self.base}{API}{path}",
                params={"filter": filters} if filters else None,
                json=json,
                headers=headers,
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            # The exception's text may hold the URL with its user info: named by type only.
            raise AlertmanagerError(
                f"Alertmanager at {self.host} unreachable ({type(exc).__name__})"
            ) from None

    def _error(self, what: str, response: httpx.Response) -> AlertmanagerError:
        text = " ".join(response.text.split())[:200]
        return AlertmanagerError(
            f"Alertmanager at {self.host}: {what} answered {response.status_code}: {text}"
        )

    async def version(self) -> str:
        """Its version (``versionInfo.version`` of ``/api/v2/status``), "" when unknown."""
        response = await self._request("GET", "/status")
        if response.status_code != 200:
            raise self._error("status", response)
        try:
            version = response.json()["versionInfo"]["version"]
        except (ValueError, KeyError, TypeError):
            return ""
        return version if isinstance(version, str) else ""

    async def create(self, silence: Mapping[str, Any]) -> str:
        """Create ``silence`` (a PostableSilence); its id."""
        response = await self._request("POST", "/silences", json=dict(silence))
        if response.status_code != 200:
            raise self._error("creating a silence", response)
        try:
            silence_id = response.json()["silenceID"]
        except (ValueError, KeyError, TypeError):
            raise self._error("creating a silence", response) from None
        if not isinstance(silence_id, str) or not silence_id:
            raise self._error("creating a silence", response)
        return silence_id

    async def find(self, matchers: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """The silences (every state) with equality ``matchers`` among their own, or all."""
        filters = [f'{name}="{_quoted(value)}"' for name, value in (matchers or {}).items()]
        response = await self._request("GET", "/silences", filters=filters)
        if response.status_code != 200:
            raise self._error("listing silences", response)
        try:
            found = response.json()
        except ValueError:
            raise self._error("listing silences", response) from None
        if not isinstance(found, list):
            raise self._error("listing silences", response)
        return [s for s in found if isinstance(s, dict)]

    async def expire(self, silence_id: str) -> None:
        """Expire the silence now; one that ended already, or is gone, is fine."""
        response = await self._request("DELETE", f"/silence/{silence_id}")
        if response.status_code in (200, 404):
            return
        if response.status_code == 500 and _ALREADY_EXPIRED.search(response.text):
            return
        raise self._error(f"expiring silence {silence_id}", response)


def _quoted(value: str) -> str:
    """A label value inside a double-quoted matcher (Alertmanager's own escaping)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def version_at_least(version: str, wanted: tuple[int, int]) -> bool:
    """Whether ``version`` ("0.32.1", "v0.33.0-rc.0") is ``wanted`` (major, minor) or later;
    false when it cannot be read."""
    found = re.match(r"v?(\d+)\.(\d+)", version)
    return found is not None and (int(found[1]), int(found[2])) >= wanted
