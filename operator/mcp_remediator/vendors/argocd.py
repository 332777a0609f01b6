"""Argo CD: start a sync exactly as Argo CD's own API server does, and read where it stands.

Two ways in, one interface (``ArgoCd``), chosen by ``MCP_ARGOCD_MODE``:

* core (``CoreArgoCd``): like ``argocd --core``, straight on the Application objects through
  the Kubernetes client. ``start_sync`` reproduces the API server's ``Sync`` handler plus
  ``argo.SetAppOperation``: refuse while ``operation`` is set, build the ``Operation`` (sync
  revision, prune, the sync options and retry strategy of the app's sync policy, who
  initiated it, info entries), clear ``status.operationState`` and write both with the
  read ``resourceVersion`` as a precondition (Argo CD's own optimistic update), so that two
  writers can never both start an operation.
* api (``ApiArgoCd``): ``POST /api/v1/applications/{name}/sync`` with a bearer token, and
  ``GET /api/v1/applications/{name}`` to follow it; the server answers with the same
  Application JSON, so one reader (``read_state``) serves both. Server and token are the
  ones the action resolved: ``MCP_ARGOCD_SERVER`` and ``MCP_ARGOCD_TOKEN[_FILE]`` for
  trusted namespaces, else Secrets of the remediation's own namespace
  (``actions/credentials``).

Called by ``actions/argocd.py``. Tokens never appear in messages: errors name the server
by ``redact.safe_host`` only; a server URL that does not read unambiguously
(``ArgoCdBadUrl``) or a token that cannot be sent in a header (``ArgoCdBadToken``: not
visible ASCII) fails the step before anything is sent, naming where it came from.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from mcp_remediator import redact
from mcp_remediator.errors import Refused, StepFailed, TransientFailure
from mcp_remediator.kube import refusals
from mcp_remediator.kube.client import KINDS, ApiError, KubeApi
from mcp_remediator.settings import Settings
from mcp_remediator.vendors import argocd_windows
from mcp_remediator.vendors.argocd_windows import Verdict

# Who the operation says started it. ``automated: false``: the operator syncs on behalf
# of a person's runbook, as ``argocd app sync`` would, so Argo CD judges it by the rules of
# manual syncs (a window's ``manualSync``) and records it as a manual sync in its history;
# ``automated: true`` belongs to Argo CD's own auto-sync, whose retries and self-heal
# bookkeeping would then count our operation as theirs.
USERNAME = "mcp-remediator"
APPLICATION = KINDS["Application"]
APP_PROJECT = KINDS["AppProject"]
COMPLETED_PHASES = frozenset({"Succeeded", "Failed", "Error"})
IN_PROGRESS = "OperationInProgress"
APP_NOT_FOUND = "ApplicationNotFound"
WINDOW_CLOSED = "SyncWindowClosed"
REVISION_OVERRIDE = "RevisionOverrideRefused"
# The controller's message on an operation it holds back (``controller/sync.go``).
PARKED = "blocked by sync window"
# gRPC status codes that Argo CD's REST gateway puts into error bodies.
GRPC_FAILED_PRECONDITION = 9
GRPC_NOT_FOUND = 5


@dataclass(frozen=True)
class AppState:
    """What an Application says about its last operation, its sync and its health."""

    name: str
    operation: dict[str, Any] | None
    phase: str | None
    message: str
    revision: str
    sync_status: str
    health_status: str
    health_message: str
    deleting: bool

    @property
    def in_flight(self) -> bool:
        """An operation is set or not yet finished: Argo CD refuses to start another."""
        return self.operation is not None or (
            self.phase is not None and self.phase not in COMPLETED_PHASES
        )

    @property
    def done(self) -> bool:
        """Synced, healthy and the last operation succeeded: what the sync waits for."""
        return (
            not self.in_flight
            and self.phase == "Succeeded"
            and self.sync_status == "Synced"
            and self.health_status == "Healthy"
        )

    def summary(self) -> str:
        parts = [f"operation {self.phase or 'none'}"]
        if self.message:
            parts[0] += f" ({self.message})"
        parts.append(f"sync {self.sync_status or 'Unknown'}")
        health = f"health {self.health_status or 'Unknown'}"
        if self.health_message:
            health += f" ({self.health_message})"
        parts.append(health)
        return ", ".join(parts)


def read_state(app: dict[str, Any]) -> AppState:
    status = app.get("status") or {}
    op_state = status.get("operationState") or {}
    sync = status.get("sync") or {}
    health = status.get("health") or {}
    # The revision the last operation synced; ``sync.revision`` is what the app was last
    # compared at, which says nothing about a sync still running.
    revision = (op_state.get("syncResult") or {}).get("revision") or ""
    return AppState(
        name=app.get("metadata", {}).get("name", ""),
        operation=app.get("operation") or None,
        phase=op_state.get("phase") or None,
        message=str(op_state.get("message") or ""),
        revision=str(revision),
        sync_status=str(sync.get("status") or ""),
        health_status=str(health.get("status") or ""),
        health_message=str(health.get("message") or ""),
        deleting=bool(app.get("metadata", {}).get("deletionTimestamp")),
    )


def operation_info(app: dict[str, Any]) -> list[dict[str, str]]:
    """The ``info`` entries of the operation that is set, else of the last one that ran."""
    operation = app.get("operation") or ((app.get("status") or {}).get("operationState") or {}).get(
        "operation"
    )
    info = (operation or {}).get("info") or []
    return [i for i in info if isinstance(i, dict)]


def started_by(app: dict[str, Any], info: list[dict[str, str]]) -> bool:
    """Whether the app's current (or last) operation carries all of ``info``: ours."""
    present = {(i.get("name"), i.get("value")) for i in operation_info(app)}
    return all((i["name"], i["value"]) in present for i in info)


def tracked_revision(app: dict[str, Any]) -> str:
    """The revision the Application tracks in Git (its first source's)."""
    spec = app.get("spec") or {}
    source: dict[str, Any] = spec.get("source") or next(iter(spec.get("sources") or []), {})
    return str(source.get("targetRevision") or "HEAD")


def target_revision(app: dict[str, Any], revision: str | None) -> str:
    """The revision to sync: the one the Application tracks. Another one is a GitOps
    override (a branch nobody reviewed, synced by hand), refused ``RevisionOverrideRefused``:
    what runs changes through Git, by changing ``targetRevision`` there."""
    tracked = tracked_revision(app)
    if revision and revision != tracked:
        name = (app.get("metadata") or {}).get("name")
        raise Refused(
            REVISION_OVERRIDE,
            f"refused: syncing Application {name} to {revision!r} would override Git, which "
            f"has it track {tracked!r}; change targetRevision in Git to deploy another "
            "revision, or omit revision",
        )
    return tracked


def kyverno_resources(app: dict[str, Any]) -> list[str]:
    """The Kyverno objects the Application manages (its ``status.resources``)."""
    found = []
    for item in (app.get("status") or {}).get("resources") or []:
        if refusals.is_kyverno_group(str(item.get("group") or "")):
            found.append(f"{item.get('kind')}/{item.get('name')}")
    return found


def check_prune(app: dict[str, Any], prune: bool) -> None:
    """A pruning sync of an Application that manages Kyverno objects deletes policies that
    left Git without a review of the deletion by Argo CD's own prune rules: refused."""
    managed = kyverno_resources(app) if prune else []
    if managed:
        name = (app.get("metadata") or {}).get("name")
        raise Refused(
            refusals.KYVERNO,
            f"refused: a sync with prune of Application {name} would delete Kyverno objects "
            f"it manages ({', '.join(managed[:5])}{', ...' if len(managed) > 5 else ''}) by "
            "hand; sync without prune, and remove policies through Git",
        )


def parked(app: dict[str, Any]) -> str | None:
    """What an operation the controller holds back in a sync window says, else ``None``."""
    state = (app.get("status") or {}).get("operationState") or {}
    message = str(state.get("message") or "")
    if app.get("operation") and state.get("phase") == "Running" and PARKED in message:
        who = ((app.get("operation") or {}).get("initiatedBy") or {}).get("username") or "?"
        since = state.get("startedAt") or "?"
        return f"{message} (started {since} by {who})"
    return None


def window_closed(name: str, why: str) -> StepFailed:
    return StepFailed(
        f"cannot sync Application {name} now: {why}; nothing was written",
        reason=WINDOW_CLOSED,
    )


def build_operation(
    app: dict[str, Any], revision: str | None, prune: bool, info: list[dict[str, str]]
) -> dict[str, Any]:
    """The ``operation`` Argo CD's API server writes for a sync request."""
    policy = (app.get("spec") or {}).get("syncPolicy") or {}
    sync: dict[str, Any] = {"revision": target_revision(app, revision), "prune": prune}
    if policy.get("syncOptions"):
        sync["syncOptions"] = list(policy["syncOptions"])
    operation: dict[str, Any] = {
        "sync": sync,
        "initiatedBy": {"username": USERNAME, "automated": False},
        "info": info,
    }
    if policy.get("retry"):
        operation["retry"] = policy["retry"]
    return operation


def in_progress_failure(name: str, state: AppState | None = None) -> StepFailed:
    detail = f" (phase {state.phase})" if state is not None and state.phase else ""
    return StepFailed(
        f"another operation is already in progress on Application {name}{detail}",
        reason=IN_PROGRESS,
        transient=True,
    )


class ArgoCd(Protocol):
    """Reads Applications and starts syncs; ``where`` names the Argo CD for messages."""

    where: str

    async def get(self, name: str, namespace: str) -> dict[str, Any] | None: ...

    async def sync_window(self, app: dict[str, Any], now: datetime.datetime) -> Verdict:
        """Whether the sync windows let a manual sync of ``app`` start ``now``."""
        ...

    async def start_sync(
        self,
        app: dict[str, Any],
        revision: str | None,
        prune: bool,
        info: list[dict[str, str]],
    ) -> dict[str, Any]: ...


class CoreArgoCd:
    """Core mode: Application objects through the Kubernetes API."""

    def __init__(self, kube: KubeApi, settings: Settings):
        self.kube = kube
        self.where = "the Kubernetes API (core mode)"
        # AppProjects live in Argo CD's own namespace, whatever the Application's.
        self.projects_namespace = settings.argocd_namespace

    async def sync_window(self, app: dict[str, Any], now: datetime.datetime) -> Verdict:
        """The API server's check, which writing the operation directly would skip: the
        windows of the app's AppProject that match it, judged for a manual sync."""
        project = str((app.get("spec") or {}).get("project") or "default")
        where = f"AppProject {self.projects_namespace}/{project}"
        try:
            found = await self.kube.get_or_none(
                APP_PROJECT.api_version, APP_PROJECT.plural, self.projects_namespace, project
            )
        except ApiError as exc:
            raise exc.as_step_failure(f"reading {where} (its sync windows)") from exc
        if found is None:
            raise StepFailed(
                f"{where} of Application {app['metadata']['name']} not found: Argo CD would "
                "not sync it either",
                reason="AppProjectNotFound",
            )
        windows = argocd_windows.matching(argocd_windows.windows_of(found), app)
        return argocd_windows.can_sync(windows, manual=True, now=now)

    async def get(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            app: dict[str, Any] | None = await self.kube.get_or_none(
                APPLICATION.api_version, APPLICATION.plural, namespace, name
            )
        except ApiError as exc:
            raise exc.as_step_failure(f"reading Application {namespace}/{name}") from exc
        return app

    async def start_sync(
        self,
        app: dict[str, Any],
        revision: str | None,
        prune: bool,
        info: list[dict[str, str]],
    ) -> dict[str, Any]:
        meta = app["metadata"]
        if app.get("operation"):
            raise in_progress_failure(meta["name"], read_state(app))
        if meta.get("deletionTimestamp"):
            raise StepFailed(f"Application {meta['name']} is being deleted", reason="AppDeleting")
        patch = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "operation": build_operation(app, revision, prune, info),
            "status": {"operationState": None},
        }
        try:
            updated: dict[str, Any] = await self.kube.patch(
                APPLICATION.api_version,
                APPLICATION.plural,
                meta["namespace"],
                meta["name"],
                patch,
            )
        except ApiError as exc:
            if exc.status == 409:
                # Someone wrote the app since we read it: maybe Argo CD started an
                # operation. The retry reads it again and decides again, as Argo CD does.
                raise TransientFailure(
                    f"Application {meta['name']} changed while starting the sync; retrying",
                    reason=IN_PROGRESS,
                ) from exc
            raise exc.as_step_failure(f"starting the sync of Application {meta['name']}") from exc
        return updated


class ApiArgoCd:
    """API mode: Argo CD's REST API with a bearer token.

    ``server`` and ``token`` come with where they came from (``server_source``,
    ``token_source``: a setting or a Secret), which messages name instead of the values.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: Settings,
        server: SecretStr | None,
        token: SecretStr | None,
        *,
        server_source: str = "MCP_ARGOCD_SERVER",
        token_source: str = "MCP_ARGOCD_TOKEN_FILE",
    ):
        if server is None or not server.get_secret_value():
            raise StepFailed(
                f"MCP_ARGOCD_MODE is api but {server_source} is not set", reason="NotConfigured"
            )
        if token is None:
            raise StepFailed(
                "MCP_ARGOCD_MODE is api but no Argo CD token is configured "
                "(MCP_ARGOCD_TOKEN_FILE or MCP_ARGOCD_TOKEN)",
                reason="NotConfigured",
            )
        self.http = http
        self.base = server.get_secret_value().rstrip("/")
        self.token_source = token_source
        # The URL may carry credentials; name the host, or else the URL's source.
        host = redact.safe_host(self.base, "")
        self.where = f"Argo CD at {host or server_source}"
        try:
            scheme = httpx.URL(self.base).scheme
        except httpx.InvalidURL:
            scheme = ""
        if not host or scheme not in ("http", "https"):
            raise StepFailed(
                f"{server_source} is not a valid http(s) URL of the Argo CD API server",
                reason="ArgoCdBadUrl",
            )
        if not redact.header_safe(token.get_secret_value()):
            raise StepFailed(
                f"{token_source} is not a usable Argo CD token: it {redact.HEADER_SAFE_RULE}",
                reason="ArgoCdBadToken",
            )
        self.headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
        self.default_namespace = settings.argocd_namespace

    async def sync_window(self, app: dict[str, Any], now: datetime.datetime) -> Verdict:
        """The API server judges the windows itself when the sync is asked for (its
        refusal is mapped to ``SyncWindowClosed``)."""
        return Verdict(True, "")

    def _url(self, name: str, suffix: str = "") -> str:
        return f"{self.base}/api/v1/applications/{quote(name, safe='')}{suffix}"

    def _params(self, namespace: str) -> dict[str, str]:
        return {} if namespace == self.default_namespace else {"appNamespace": namespace}

    async def _call(
        self, method: str, url: str, what: str, **kwargs: Any
    ) -> tuple[int, dict[str, Any]]:
        try:
            response = await self.http.request(method, url, headers=self.headers, **kwargs)
        except httpx.HTTPError as exc:
            raise TransientFailure(
                f"{what}: {self.where} unreachable ({type(exc).__name__})",
                reason="ArgoCdUnavailable",
            ) from exc
        except httpx.InvalidURL:
            # ``from None``: the exception's text quotes the URL, and with it the token.
            raise StepFailed(f"{what}: not a valid URL for {self.where}") from None
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}  # not Argo CD's JSON: whatever answered is not quoted
        if not isinstance(body, dict):
            body = {}
        return response.status_code, body

    def _error(self, what: str, status: int, body: dict[str, Any]) -> StepFailed:
        said = [body.get(key) for key in ("message", "error")]
        message = next((v[:300] for v in said if isinstance(v, str) and v), f"HTTP {status}")
        if "blocked by sync window" in message or "invalid sync window" in message:
            # PermissionDenied (403) from the server's CanSync: not the token's fault.
            return StepFailed(
                f"{what}: {self.where} answered: {message}; nothing was started",
                reason=WINDOW_CLOSED,
            )
        if status in (401, 403):
            return StepFailed(
                f"{what}: {self.where} answered {status} ({message}); check the token's "
                f"account and its RBAC ({self.token_source})",
                reason="ArgoCdUnauthorized",
            )
        if status == 429 or status >= 500:
            return TransientFailure(
                f"{what}: {self.where} answered {status}: {message}", reason="ArgoCdUnavailable"
            )
        return StepFailed(f"{what}: {self.where} answered {status}: {message}")

    async def get(self, name: str, namespace: str) -> dict[str, Any] | None:
        what = f"reading Application {name}"
        status, body = await self._call(
            "GET", self._url(name), what, params=self._params(namespace)
        )
        if status == 404 or body.get("code") == GRPC_NOT_FOUND:
            return None
        if status != 200:
            raise self._error(what, status, body)
        return body

    async def start_sync(
        self,
        app: dict[str, Any],
        revision: str | None,
        prune: bool,
        info: list[dict[str, str]],
    ) -> dict[str, Any]:
        name = app["metadata"]["name"]
        namespace = app["metadata"].get("namespace") or self.default_namespace
        request: dict[str, Any] = {"name": name, "prune": prune, "infos": info}
        if revision:
            request["revision"] = revision
        if namespace != self.default_namespace:
            request["appNamespace"] = namespace
        what = f"starting the sync of Application {name}"
        status, body = await self._call("POST", self._url(name, "/sync"), what, json=request)
        if status == 200:
            return body
        text = str(body.get("message") or body.get("error") or "")
        if body.get("code") == GRPC_FAILED_PRECONDITION and "in progress" in text:
            raise in_progress_failure(name)
        if status == 404 or body.get("code") == GRPC_NOT_FOUND:
            raise StepFailed(f"Application {name} not found in {self.where}", reason=APP_NOT_FOUND)
        raise self._error(what, status, body)


def client(
    settings: Settings,
    kube: KubeApi,
    http: httpx.AsyncClient,
    server: SecretStr | None = None,
    token: SecretStr | None = None,
    *,
    server_source: str = "MCP_ARGOCD_SERVER",
    token_source: str = "MCP_ARGOCD_TOKEN_FILE",
) -> ArgoCd:
    """The Argo CD client of the configured mode; ``server`` and ``token`` serve api mode."""
    if settings.argocd_mode == "api":
        return ApiArgoCd(
            http, settings, server, token, server_source=server_source, token_source=token_source
        )
    return CoreArgoCd(kube, settings)
