"""A small async Kubernetes client: the operator's only path to the API.

Connection settings come from the official ``kubernetes`` package's loaders (in-cluster
service account, else kubeconfig), so every auth method it knows works; requests go
through ``httpx`` so that no call blocks the event loop. Every write of a step passes the
refusal layer first (``refusals.check_write``) and, in dry-run, no write is sent at all: a
bug in an action cannot override Kyverno or write during a dry run. The one exception is
the operator's own bookkeeping: a client acting with the operator's identity (no
``Identity``) writes its records, their status and Events in any namespace
(``refusals.is_bookkeeping``), so that a record in a protected namespace can be finished
``Refused`` instead of being retried forever; every other write it makes is checked too.

Built once by ``runtime`` (``clients.Clients``) and handed to the engine, actions and the
receiver. ``KubeApi.impersonating(namespace, account)`` gives the client a step uses: the
same connection, every request sent as that ServiceAccount (``Identity``), so Kubernetes
RBAC, not the operator's own role, decides what a step may touch; its 403 answers become
``Forbidden`` step failures naming the account.
"""

from __future__ import annotations

import builtins
import json
import logging
import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from mcp_remediator.errors import StepFailed, TransientFailure
from mcp_remediator.kube import refusals
from mcp_remediator.settings import Settings

log = logging.getLogger(__name__)

PatchType = Literal["merge", "strategic", "json"]
CONTENT_TYPES: dict[PatchType, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API."""

    api_version: str
    plural: str
    namespaced: bool = True


KINDS: dict[str, Kind] = {
    "Deployment": Kind("apps/v1", "deployments"),
    "StatefulSet": Kind("apps/v1", "statefulsets"),
    "DaemonSet": Kind("apps/v1", "daemonsets"),
    "ReplicaSet": Kind("apps/v1", "replicasets"),
    "ConfigMap": Kind("v1", "configmaps"),
    "Secret": Kind("v1", "secrets"),
    "Pod": Kind("v1", "pods"),
    "Service": Kind("v1", "services"),
    "Event": Kind("v1", "events"),
    "Application": Kind("argoproj.io/v1alpha1", "applications"),
    "ClusterPolicy": Kind("kyverno.io/v1", "clusterpolicies", namespaced=False),
    "Policy": Kind("kyverno.io/v1", "policies"),
    "PolicyException": Kind("kyverno.io/v2", "policyexceptions"),
    "PolicyReport": Kind("wgpolicyk8s.io/v1alpha2", "policyreports"),
    "ClusterPolicyReport": Kind(
        "wgpolicyk8s.io/v1alpha2", "clusterpolicyreports", namespaced=False
    ),
    "McpRunbook": Kind("mcp.dese.ai/v1alpha1", "mcprunbooks"),
    "McpRemediation": Kind("mcp.dese.ai/v1alpha1", "mcpremediations"),
}


FORBIDDEN = "Forbidden"


@dataclass(frozen=True)
class Identity:
    """A ServiceAccount the client acts as, by impersonation.

    Only ``Impersonate-User`` is sent: for a ``system:serviceaccount:`` user the API server
    itself adds the account's groups (``system:serviceaccounts``,
    ``system:serviceaccounts:<ns>``) and ``system:authenticated``, exactly the identity
    the account's own token would carry. Sending them as ``Impersonate-Group`` headers
    would need ``impersonate`` on ``groups``, which (without resourceNames for every
    namespace) would also let the operator claim ``system:masters``.
    """

    namespace: str
    name: str

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups the API server gives the impersonated account."""
        return (
            "system:serviceaccounts",
            f"system:serviceaccounts:{self.namespace}",
            "system:authenticated",
        )

    def headers(self) -> dict[str, str]:
        return {"Impersonate-User": self.username}

    def __str__(self) -> str:
        return f"ServiceAccount {self.namespace}/{self.name}"


class ApiError(Exception):
    """An error answer of the API server (or no answer at all: status 0)."""

    def __init__(self, status: int, reason: str, message: str, *, identity: Identity | None = None):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.identity = identity

    @property
    def transient(self) -> bool:
        return self.status in (0, 409, 429) or self.status >= 500

    def as_step_failure(self, what: str) -> StepFailed:
        """The step failure this answer means: a 403 is ``Forbidden`` at once (RBAC will
        not change within a retry), naming the account, verb, resource and namespace as
        the API server's message does."""
        if self.status == 403:
            who = f" (acting as {self.identity})" if self.identity else ""
            return StepFailed(f"{what}{who}: {self.message}", reason=FORBIDDEN)
        text = f"{what}: {self.reason or self.status}: {self.message}"
        return TransientFailure(text) if self.transient else StepFailed(text)


SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def strip_bearer(value: str) -> str:
    """The token of an ``Authorization`` value; the in-cluster loader writes ``bearer …``."""
    scheme, _, rest = value.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest else value.strip()


@dataclass(frozen=True)
class ConnectionConfig:
    """How to reach the API server; the token is never logged.

    ``token_file`` (in a pod: the service account's projected token, which the kubelet
    rotates) is read again whenever a token is needed, so a long-running operator never
    goes on with an expired one.
    """

    server: str
    ca_path: str | None = None
    insecure: bool = False
    token: str | None = None
    token_file: str | None = None
    cert_path: str | None = None
    key_path: str | None = None
    default_namespace: str = "default"

    def __repr__(self) -> str:
        secret = "***" if self.token or self.token_file else None
        return f"ConnectionConfig(server={self.server!r}, token={secret})"

    def bearer_token(self) -> str | None:
        """The current token: from ``token_file`` when set (rotated tokens), else ``token``."""
        if self.token_file:
            with open(self.token_file) as f:
                return f.read().strip() or None
        return self.token

    @classmethod
    def load(cls, kubeconfig: str | None = None, context: str | None = None) -> ConnectionConfig:
        """In-cluster config when running in a pod, else the kubeconfig (``KUBECONFIG``)."""
        from kubernetes import client, config  # heavy import, done once at start-up

        cfg = client.Configuration()
        namespace = "default"
        token_file = None
        try:
            if kubeconfig is not None:
                raise config.ConfigException("explicit kubeconfig")
            config.load_incluster_config(client_configuration=cfg)
            token_file = f"{SERVICE_ACCOUNT}/token"
            with open(f"{SERVICE_ACCOUNT}/namespace") as f:
                namespace = f.read().strip()
        except (config.ConfigException, OSError):
            config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=cfg
            )
            _, active = config.list_kube_config_contexts(config_file=kubeconfig)
            if context is None and active:
                namespace = active.get("context", {}).get("namespace", "default")
        auth = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
        return cls(
            server=cfg.host.rstrip("/"),
            ca_path=cfg.ssl_ca_cert,
            insecure=not cfg.verify_ssl,
            token=strip_bearer(auth) if auth and token_file is None else None,
            token_file=token_file,
            cert_path=cfg.cert_file,
            key_path=cfg.key_file,
            default_namespace=namespace,
        )


def resource_path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The REST path of a resource, a collection, or a subresource."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = base
    if namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name:
        path += f"/{quote(name, safe='')}"
        if subresource:
            path += f"/{subresource}"
    return path


class _BearerAuth(httpx.Auth):
    """Sets the bearer token per request, re-reading a rotated token file at most every
    minute (as the official client does)."""

    REREAD_SECONDS = 60.0

    def __init__(self, connection: ConnectionConfig):
        self.connection = connection
        self._token: str | None = None
        self._read_at = float("-inf")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        now = time.monotonic()
        if now - self._read_at >= self.REREAD_SECONDS or not self.connection.token_file:
            self._token = self.connection.bearer_token()
            self._read_at = now
        if self._token:
            request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class KubeApi:
    """Async CRUD on any resource by ``api_version`` + plural."""

    def __init__(
        self,
        connection: ConnectionConfig,
        settings: Settings,
        *,
        dry_run: bool = False,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.connection = connection
        self.settings = settings
        self.dry_run = dry_run
        self.identity: Identity | None = None
        verify: Any = False if connection.insecure else (connection.ca_path or True)
        cert: str | tuple[str, str] | None = None
        if connection.cert_path:
            cert = (
                (connection.cert_path, connection.key_path)
                if connection.key_path
                else connection.cert_path
            )
        headers = {"Accept": "application/json", "User-Agent": "mcp-remediator"}
        self._client = httpx.AsyncClient(
            base_url=connection.server,
            verify=verify,
            cert=cert,
            headers=headers,
            auth=_BearerAuth(connection),
            timeout=timeout,
            transport=transport,
        )

    def _clone(self, **changes: Any) -> KubeApi:
        clone = object.__new__(KubeApi)
        clone.__dict__.update(self.__dict__)
        clone.__dict__.update(changes)
        return clone

    def with_dry_run(self) -> KubeApi:
        """A client sharing this one's connection that refuses to send any write."""
        return self._clone(dry_run=True)

    def impersonating(self, namespace: str, service_account: str) -> KubeApi:
        """A client sharing this one's connection whose every request acts as the
        ServiceAccount ``namespace/service_account`` (the operator's own token
        authenticates; the account's RBAC authorizes)."""
        return self._clone(identity=Identity(namespace, service_account))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content is not None else {}
        if self.identity is not None:
            headers.update(self.identity.headers())
        try:
            response = await self._client.request(
                method, path, params=params, content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            raise ApiError(
                0, "Unreachable", f"{method} {path}: {exc!r}", identity=self.identity
            ) from exc
        if response.status_code >= 400:
            reason, message = str(response.status_code), response.text[:500]
            try:
                status = response.json()
                reason = status.get("reason") or reason
                message = status.get("message") or message
            except ValueError:
                pass
            raise ApiError(response.status_code, reason, message, identity=self.identity)
        return response.json() if response.content else {}

    def _guard(
        self, api_version: str, plural: str, namespace: str | None, name: str | None
    ) -> None:
        # Steps always impersonate (``impersonating``); only the operator's own identity
        # writes its bookkeeping, which the refusal layer does not judge.
        own_bookkeeping = self.identity is None and refusals.is_bookkeeping(api_version, plural)
        if not own_bookkeeping:
            refusals.check_write(
                self.settings,
                api_version=api_version,
                resource=plural,
                namespace=namespace,
                name=name,
            )
        if self.dry_run:
            raise RuntimeError(
                f"dry-run client asked to write {api_version}/{plural} {namespace}/{name}"
            )

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> Any:
        return await self._request("GET", resource_path(api_version, plural, namespace, name))

    async def get_or_none(
        self, api_version: str, plural: str, namespace: str | None, name: str
    ) -> Any:
        try:
            return await self.get(api_version, plural, namespace, name)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        params = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        result = await self._request(
            "GET", resource_path(api_version, plural, namespace), params=params
        )
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    async def served(self, api_version: str, plural: str) -> bool:
        """Whether the API serves ``plural`` in ``api_version`` (API discovery)."""
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            found = await self._request("GET", prefix)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return any(r.get("name") == plural for r in found.get("resources") or [])

    async def list_page(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        limit: int,
        continue_token: str | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], dict[str, Any]]:
        """One page of a list: its items and the list's metadata (``resourceVersion``,
        ``continue``)."""
        params = {"limit": str(limit)}
        if continue_token:
            params["continue"] = continue_token
        result = await self._request(
            "GET", resource_path(api_version, plural, namespace), params=params
        )
        return list(result.get("items") or []), dict(result.get("metadata") or {})

    async def watch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        *,
        resource_version: str,
        timeout_seconds: int,
    ) -> AsyncIterator[dict[str, Any]]:
        """The watch events after ``resource_version`` until the server ends the stream
        (``timeout_seconds``); an ``ERROR`` event (410 Gone) is yielded like the others."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        path = resource_path(api_version, plural, namespace)
        headers = self.identity.headers() if self.identity is not None else {}
        timeout = httpx.Timeout(self._client.timeout.connect, read=timeout_seconds + 30)
        try:
            async with self._client.stream(
                "GET", path, params=params, headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    text = (await response.aread()).decode(errors="replace")
                    raise ApiError(response.status_code, str(response.status_code), text[:500])
                async for line in response.aiter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise ApiError(0, "Unreachable", f"WATCH {path}: {exc!r}") from exc

    async def create(
        self, api_version: str, plural: str, namespace: str | None, body: dict[str, Any]
    ) -> Any:
        self._guard(api_version, plural, namespace, body.get("metadata", {}).get("name"))
        body = {"apiVersion": api_version, **body}
        return await self._request("POST", resource_path(api_version, plural, namespace), body=body)

    async def patch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
    ) -> Any:
        self._guard(api_version, plural, namespace, name)
        return await self._request(
            "PATCH",
            resource_path(api_version, plural, namespace, name, subresource),
            body=patch,
            content_type=CONTENT_TYPES[patch_type],
        )

    async def replace(
        self, api_version: str, plural: str, namespace: str | None, body: dict[str, Any]
    ) -> Any:
        """PUT the whole object; its ``metadata.resourceVersion`` makes it conditional."""
        name = body["metadata"]["name"]
        self._guard(api_version, plural, namespace, name)
        body = {"apiVersion": api_version, **body}
        path = resource_path(api_version, plural, namespace, name)
        return await self._request("PUT", path, body=body)

    async def delete(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> Any:
        """DELETE; with ``uid``/``resource_version``, only that very object (409 otherwise)."""
        self._guard(api_version, plural, namespace, name)
        preconditions = {
            key: value
            for key, value in (("uid", uid), ("resourceVersion", resource_version))
            if value is not None
        }
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": preconditions}
        path = resource_path(api_version, plural, namespace, name)
        return await self._request("DELETE", path, body=body if preconditions else None)
