"""``argocdSync``: ``argocd app sync`` done the way Argo CD does it, then verified.

The sync is started through ``vendors.argocd`` (core or api mode) and then followed until
the app's operation ``Succeeded`` and the app is ``Synced`` and ``Healthy``; a ``Failed``
or ``Error`` phase fails the step with the message Argo CD reports.

The operation carries ``info`` entries naming this remediation and step. They make the
sync happen once per step: a retried attempt, or a restarted operator, finds its own
operation on the app (set, or recorded in ``status.operationState``) and follows it
instead of starting another one. Any other operation in flight fails the attempt with
``OperationInProgress``, a transient failure the engine retries with backoff.

Credentials: core mode acts through the Kubernetes API (whose RBAC decides), so it needs
none. Api mode uses ``MCP_ARGOCD_SERVER`` and ``MCP_ARGOCD_TOKEN`` for trusted namespaces
only (``MCP_TRUSTED_NAMESPACES``); elsewhere the step names Secrets of its own namespace
in ``argocd`` or fails ``CredentialsNotAllowed`` before any request (``actions/credentials``).
"""

from __future__ import annotations

import asyncio
import datetime
import time

from pydantic import Field

from mcp_remediator.actions import credentials
from mcp_remediator.actions.common import K8sName, Namespace
from mcp_remediator.actions.credentials import SecretKeyRef
from mcp_remediator.actions.registry import (
    Access,
    ActionContext,
    ActionParams,
    ActionResult,
    action,
)
from mcp_remediator.errors import StepFailed, TransientFailure
from mcp_remediator.kube import refusals
from mcp_remediator.settings import Settings
from mcp_remediator.vendors import argocd


class ArgocdRef(ActionParams):
    urlSecretRef: SecretKeyRef = Field(
        description="Secret key (in the remediation's own namespace) holding the Argo CD API "
        "server URL."
    )
    tokenSecretRef: SecretKeyRef = Field(
        description="Secret key holding the Argo CD API token (the operator's own token is "
        "never sent to a server from a Secret)."
    )


class ArgocdSyncParams(ActionParams):
    application: K8sName = Field(description="The Argo CD Application to sync, e.g. `dese-api`.")
    argocdNamespace: Namespace | None = Field(
        None, description="Namespace of the Application; default `MCP_ARGOCD_NAMESPACE`."
    )
    revision: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="Revision to sync to: accepted only when it is the app's `targetRevision` "
        "(what Git tracks); any other is refused `RevisionOverrideRefused`. Default: the "
        "app's `targetRevision`.",
    )
    prune: bool = Field(
        False,
        description="Delete resources that are no longer in Git; refused for an app that "
        "manages Kyverno objects.",
    )
    wait: bool = Field(True, description="Wait until the app is Synced and Healthy.")
    timeoutSeconds: int = Field(
        300, ge=1, le=86_400, description="How long to wait for Synced and Healthy."
    )
    argocd: ArgocdRef | None = Field(
        None,
        description="Api mode: which Argo CD API, `{urlSecretRef: {name, key}, tokenSecretRef: "
        "{name, key}}`; omitted: `MCP_ARGOCD_SERVER` and `MCP_ARGOCD_TOKEN`, for trusted "
        "namespaces only (`MCP_TRUSTED_NAMESPACES`; elsewhere the step fails "
        "`CredentialsNotAllowed`). Not used in core mode.",
    )


def _validate(params: ArgocdSyncParams, settings: Settings, namespace: str | None) -> None:
    if settings.argocd_mode == "core":
        refusals.check_write(
            settings,
            api_version=argocd.APPLICATION.api_version,
            resource=argocd.APPLICATION.plural,
            namespace=params.argocdNamespace or settings.argocd_namespace,
            name=params.application,
        )


async def _client(params: ArgocdSyncParams, ctx: ActionContext) -> argocd.ArgoCd:
    """The Argo CD client; in api mode with the server and token ``credentials`` allow."""
    if ctx.settings.argocd_mode != "api":
        return argocd.client(ctx.settings, ctx.clients.kube, ctx.clients.http)
    ref = params.argocd
    default = credentials.OperatorEndpoint(
        "the operator-level Argo CD API",
        "MCP_ARGOCD_SERVER",
        ctx.settings.argocd_server,
        "MCP_ARGOCD_TOKEN",
        ctx.settings.argocd_token,
    )
    found = await credentials.endpoint(
        ctx,
        default,
        url_ref=None if ref is None else ref.urlSecretRef,
        url_param="argocd.urlSecretRef",
        token_ref=None if ref is None else ref.tokenSecretRef,
        token_param="argocd.tokenSecretRef",
    )
    return argocd.client(
        ctx.settings,
        ctx.clients.kube,
        ctx.clients.http,
        None if found.url is None else found.url.value,
        None if found.token is None else found.token.value,
        server_source="MCP_ARGOCD_SERVER" if found.url is None else found.url.source,
        token_source="MCP_ARGOCD_TOKEN_FILE" if found.token is None else found.token.source,
    )


def _outputs(state: argocd.AppState, namespace: str, revision: str) -> dict[str, str]:
    return {
        "application": state.name,
        "namespace": namespace,
        "revision": state.revision or revision,
        "operationPhase": state.phase or "",
        "syncStatus": state.sync_status,
        "healthStatus": state.health_status,
    }


@action(
    "argocdSync",
    ArgocdSyncParams,
    "Start a sync of an Argo CD Application exactly as Argo CD's API does (core mode: sets "
    "the Application's `operation`; api mode: `POST /api/v1/applications/{name}/sync`); "
    "honours the AppProject's sync windows (`SyncWindowClosed`); syncs only the revision "
    "Git tracks (`RevisionOverrideRefused`) and never prunes Kyverno objects; refuses while "
    "another operation is running; waits for `Succeeded`, `Synced` and `Healthy`.",
    writes=True,
    access=[
        Access.on_kinds(
            ["Application"],
            ["get", "patch"],
            why="(core mode) reads the Application and starts a sync by setting its "
            "`operation`, then polls its sync and health status; api mode talks HTTP only.",
        ),
        Access.on_kinds(
            ["AppProject"],
            ["get"],
            why="(core mode) reads the Application's AppProject for its sync windows, which "
            "Argo CD's API server would check before starting a sync.",
        ),
        credentials.SECRET_ACCESS,
    ],
    validate=_validate,
)
async def argocd_sync(params: ArgocdSyncParams, ctx: ActionContext) -> ActionResult:
    namespace = params.argocdNamespace or ctx.settings.argocd_namespace
    _validate(params, ctx.settings, namespace)
    client = await _client(params, ctx)
    name = params.application
    info = [
        {"name": "mcp-remediation", "value": ctx.remediation},
        {"name": "mcp-step", "value": ctx.step},
    ]
    app = await client.get(name, namespace)
    if app is None:
        raise StepFailed(
            f"Application {name} not found in namespace {namespace} ({client.where})",
            reason=argocd.APP_NOT_FOUND,
        )
    state = argocd.read_state(app)
    # GitOps first: another revision than Git's, or a prune that would delete Kyverno
    # objects, is an override whatever the windows say.
    revision = argocd.target_revision(app, params.revision)
    argocd.check_prune(app, params.prune)
    outputs = _outputs(state, namespace, revision)
    resumed = argocd.started_by(app, info)
    held = argocd.parked(app)
    if held is not None:
        # Held by the controller until a window opens: never stacked upon; ours or not,
        # waiting here would only run into the step's timeout.
        whose = "this step's sync (an earlier attempt)" if resumed else "an operation"
        raise argocd.window_closed(
            name, f"{whose} is parked by a sync window: {held}; Argo CD runs it when the "
            f"window opens, or `argocd app terminate-op {name}` drops it",
        )  # fmt: skip
    if not resumed:
        if state.in_flight:
            raise argocd.in_progress_failure(name, state)
        verdict = await client.sync_window(app, datetime.datetime.now(datetime.UTC))
        if not verdict.allowed:
            raise argocd.window_closed(name, verdict.reason)
    if ctx.dry_run:
        return ActionResult(
            f"would sync Application {name} to {revision} (now: {state.summary()})", outputs
        )
    if not resumed:
        await ctx.checkpoint({"application": name, "namespace": namespace, "revision": revision})
        app = await client.start_sync(app, params.revision, params.prune, info)
        state = argocd.read_state(app)
    started = f"sync of Application {name} to {revision} " + (
        "already started by an earlier attempt" if resumed else "started"
    )
    if not params.wait:
        return ActionResult(started, _outputs(state, namespace, revision))
    state = await _wait(client, params, ctx, namespace, state)
    note = " (sync already started by an earlier attempt)" if resumed else ""
    return ActionResult(
        f"synced Application {name} to {state.revision or revision}: {state.summary()}{note}",
        _outputs(state, namespace, revision),
    )


async def _wait(
    client: argocd.ArgoCd,
    params: ArgocdSyncParams,
    ctx: ActionContext,
    namespace: str,
    state: argocd.AppState,
) -> argocd.AppState:
    name = params.application
    deadline = time.monotonic() + min(params.timeoutSeconds, ctx.remaining())
    unavailable = ""
    while True:
        if not state.in_flight and state.phase in ("Failed", "Error"):
            raise StepFailed(
                f"Argo CD sync of Application {name} ended {state.phase}: "
                f"{state.message or 'no message'}",
                reason="SyncFailed",
            )
        if state.done:
            return state
        if time.monotonic() >= deadline:
            detail = f"; last poll failed: {unavailable}" if unavailable else ""
            raise StepFailed(
                f"Application {name} not Synced and Healthy after {params.timeoutSeconds}s: "
                f"{state.summary()}{detail}",
                reason="SyncTimeout",
            )
        await asyncio.sleep(ctx.settings.poll_interval_seconds)
        try:
            app = await client.get(name, namespace)
        except TransientFailure as exc:
            # A blip of the API must not end a sync that is running fine: poll again.
            unavailable = exc.message
            continue
        unavailable = ""
        if app is None:
            raise StepFailed(
                f"Application {name} disappeared while syncing", reason=argocd.APP_NOT_FOUND
            )
        state = argocd.read_state(app)
