"""A small async Kubernetes client: the operator's only path to the API.

Connection settings come from the official ``kubernetes`` package's loaders (in-cluster
service account, else kubeconfig), so every auth method it knows works; requests go
through ``aiohttp`` (``_Pool``) so that no call blocks the event loop. Every write of a
step passes the refusal layer first (``refusals.check_write``) and, in dry-run, no write
is sent at all: a bug in an action cannot override Kyverno or write during a dry run. The
one exception is the operator's own bookkeeping: a client acting with the operator's
identity (no ``Identity``) writes its records, their status and Events in any namespace
(``refusals.is_bookkeeping``), so that a record in a protected namespace can be finished
``Refused`` instead of being retried forever; every other write it makes is checked too.

Built once by ``runtime`` (``clients.Clients``) and handed to the engine, actions and the
receiver. ``KubeApi.impersonating(namespace, account)`` gives the client a step uses: the
same connection, every request sent as that ServiceAccount (``Identity``), so Kubernetes
RBAC, not the operator's own role, decides what a step may touch; its 403 answers become
``Forbidden`` step failures naming the account.

The guard before each write (``check_write``) is the static check of the request, the
labels of a create's or replace's body, and, for a ConfigMap, whether a Kyverno policy
reads it (``policy_inputs``: the policies listed with the operator's own identity, cached,
shared by every clone). A patch or delete carries no object: an action that has read its
target calls ``check_write(..., obj=target)`` itself first (``patchResource``,
``rolloutRestart``), before its dry-run ends, so that a dry run is refused as a run would
be.
"""

from __future__ import annotations

import builtins
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import yarl

from mcp_remediator.errors import StepFailed, TransientFailure
from mcp_remediator.kube import refusals
from mcp_remediator.kube.policy_inputs import PolicyInputs
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
    "AppProject": Kind("argoproj.io/v1alpha1", "appprojects"),
    "ClusterPolicy": Kind("kyverno.io/v1", "clusterpolicies", namespaced=False),
    "Policy": Kind("kyverno.io/v1", "policies"),
    "PolicyException": Kind("kyverno.io/v2", "policyexceptions"),
    "PolicyReport": Kind("wgpolicyk8s.io/v1alpha2", "policyreports"),
    "ClusterPolicyReport": Kind(
        "wgpolicyk8s.io/v1alpha2", "clusterpolicyreports", namespaced=False
    ),
    # Kyverno's CEL policy kinds (v1 since Kyverno 1.17) and the openreports.io reports it
    # writes instead of wgpolicyk8s.io ones when run with --openreportsEnabled.
    "ValidatingPolicy": Kind("policies.kyverno.io/v1", "validatingpolicies", namespaced=False),
    "NamespacedValidatingPolicy": Kind("policies.kyverno.io/v1", "namespacedvalidatingpolicies"),
    "ImageValidatingPolicy": Kind(
        "policies.kyverno.io/v1", "imagevalidatingpolicies", namespaced=False
    ),
    "NamespacedImageValidatingPolicy": Kind(
        "policies.kyverno.io/v1", "namespacedimagevalidatingpolicies"
    ),
    "Report": Kind("openreports.io/v1alpha1", "reports"),
    "ClusterReport": Kind("openreports.io/v1alpha1", "clusterreports", namespaced=False),
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


class _Pool:
    """The connection pool of a ``KubeApi`` and its clones: one aiohttp session, opened on
    first use (in the running event loop), and the bearer token, re-read from a rotated
    token file at most every minute (as the official client does).

    aiohttp, not httpx: measured here (50 requests at once against a local server), httpx
    spent 2.4 ms of CPU per request and aiohttp 0.16 ms — in a burst of alerts the
    operator's own CPU, not the API server, was what held the first actions back.
    """

    REREAD_SECONDS = 60.0
    SIZE = 100  # connections kept open at most (idle ones too, for 30 s)

    def __init__(self, connection: ConnectionConfig, timeout: float):
        self.connection = connection
        self.base = connection.server.rstrip("/")  # a path prefix (a proxy's) is kept
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._token: str | None = None
        self._read_at = float("-inf")

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self._closed:
                raise ApiError(0, "Closed", "the Kubernetes API client was closed")
            connector = aiohttp.TCPConnector(limit=self.SIZE, keepalive_timeout=30, ssl=self._tls())
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"Accept": "application/json", "User-Agent": "mcp-remediator"},
                timeout=self.timeout,
            )
        return self._session

    def _tls(self) -> ssl.SSLContext | bool:
        connection = self.connection
        if not self.base.startswith("https:"):
            return True  # plain HTTP: nothing to verify
        if connection.insecure:
            return False
        context = ssl.create_default_context(cafile=connection.ca_path)
        if connection.cert_path:
            context.load_cert_chain(connection.cert_path, connection.key_path)
        return context

    def authorization(self) -> dict[str, str]:
        now = time.monotonic()
        if now - self._read_at >= self.REREAD_SECONDS or not self.connection.token_file:
            self._token = self.connection.bearer_token()
            self._read_at = now
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def url(self, path: str) -> yarl.URL:
        # ``resource_path`` quotes each name already: sent as it is, never quoted twice.
        return yarl.URL(self.base + path, encoded=True)

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class KubeApi:
    """Async CRUD on any resource by ``api_version`` + plural."""

    def __init__(
        self,
        connection: ConnectionConfig,
        settings: Settings,
        *,
        dry_run: bool = False,
        timeout: float = 30.0,
    ):
        self.connection = connection
        self.settings = settings
        self.dry_run = dry_run
        self.identity: Identity | None = None
        self._pool = _Pool(connection, timeout)
        # Shared by every clone; it reads with this client's own identity (the operator's).
        self._policy_inputs = PolicyInputs(self._list_own, self._preferred_version)

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
        await self._pool.close()

    def _headers(self) -> dict[str, str]:
        headers = self._pool.authorization()
        if self.identity is not None:
            headers.update(self.identity.headers())
        return headers

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
        headers = self._headers()
        if content is not None:
            headers["Content-Type"] = content_type
        try:
            async with self._pool.session().request(
                method, self._pool.url(path), params=params, data=content, headers=headers
            ) as response:
                status, payload = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(
                0, "Unreachable", f"{method} {path}: {exc!r}", identity=self.identity
            ) from exc
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s: %d", method, path, status)
        if status >= 400:
            text = payload.decode(errors="replace")
            reason, message = str(status), text[:500]
            try:
                answer = json.loads(text)
                reason = answer.get("reason") or reason
                message = answer.get("message") or message
            except (ValueError, AttributeError):
                pass
            raise ApiError(status, reason, message, identity=self.identity)
        return json.loads(payload) if payload else {}

    async def check_write(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str | None,
        *,
        obj: dict[str, Any] | None = None,
    ) -> None:
        """Raise ``Refused`` when this write must not happen: the static check first (cheap,
        from the request alone), then the labels of ``obj`` (the target as read, or the
        body of a create or replace), then, for a ConfigMap, the policies that read it."""
        refusals.check_write(
            self.settings, api_version=api_version, resource=plural, namespace=namespace, name=name
        )
        if obj is not None:
            refusals.check_object(self.settings, api_version=api_version, resource=plural, obj=obj)
        if refusals.is_config_map(plural) and namespace and name:
            await self._policy_inputs.check(self.settings, namespace, name)

    async def _list_own(
        self, api_version: str, plural: str
    ) -> builtins.list[dict[str, Any]] | None:
        """Every object of a kind, read with the operator's own identity; ``None`` when the
        API does not serve the kind (for the refusal layer: no such policies)."""
        try:
            return await self._clone(identity=None).list(api_version, plural)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def _preferred_version(self, group: str) -> str | None:
        """The version of ``group`` the API server prefers; ``None`` when not served."""
        try:
            found = await self._clone(identity=None)._request("GET", f"/apis/{quote(group)}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        version = (found.get("preferredVersion") or {}).get("version")
        return str(version) if version else None

    async def _guard(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str | None,
        body: dict[str, Any] | None = None,
    ) -> None:
        # Steps always impersonate (``impersonating``); only the operator's own identity
        # writes its bookkeeping, which the refusal layer does not judge.
        own_bookkeeping = self.identity is None and refusals.is_bookkeeping(api_version, plural)
        if not own_bookkeeping:
            await self.check_write(api_version, plural, namespace, name, obj=body)
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
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self._pool.timeout.connect,
            sock_connect=self._pool.timeout.sock_connect,
            sock_read=timeout_seconds + 30,
        )
        try:
            async with self._pool.session().get(
                self._pool.url(path), params=params, headers=self._headers(), timeout=timeout
            ) as response:
                if response.status >= 400:
                    text = (await response.read()).decode(errors="replace")
                    raise ApiError(response.status, str(response.status), text[:500])
                # Split by hand: an event is one line, however long (aiohttp's readline
                # stops at 64 KiB, less than one large object).
                pending = bytearray()
                async for chunk in response.content.iter_any():
                    pending += chunk
                    *lines, rest = pending.split(b"\n")
                    pending = bytearray(rest)
                    for line in lines:
                        if line.strip():
                            yield json.loads(line)
                if pending.strip():
                    yield json.loads(pending)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, "Unreachable", f"WATCH {path}: {exc!r}") from exc
        except ValueError as exc:
            raise ApiError(0, "BadWatchEvent", f"WATCH {path}: not JSON: {exc}") from exc

    async def create(
        self, api_version: str, plural: str, namespace: str | None, body: dict[str, Any]
    ) -> Any:
        meta = body.get("metadata") or {}
        # A generated name is judged by its prefix (``kyverno-`` webhooks).
        await self._guard(
            api_version, plural, namespace, meta.get("name") or meta.get("generateName"), body
        )
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
        await self._guard(api_version, plural, namespace, name)
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
        await self._guard(api_version, plural, namespace, name, body)
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
        await self._guard(api_version, plural, namespace, name)
        preconditions = {
            key: value
            for key, value in (("uid", uid), ("resourceVersion", resource_version))
            if value is not None
        }
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": preconditions}
        path = resource_path(api_version, plural, namespace, name)
        return await self._request("DELETE", path, body=body if preconditions else None)
