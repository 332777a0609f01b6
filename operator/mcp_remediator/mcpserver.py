"""``mcp-remediator mcp-server``: a Model Context Protocol server for AI ops agents.

Built on the official ``mcp`` SDK (the ``mcp`` extra). It acts with the caller's own
Kubernetes identity (kubeconfig, else in-cluster), so Kubernetes RBAC decides what an
agent may read and create; the server adds no rights of its own.

Tools: ``list_runbooks``, ``simulate_alert`` (writes nothing), ``propose_remediation``
(an McpRemediation of a runbook, annotated with its proposer and reason, that always waits
for human approval: the engine requires approval of every record carrying
``mcp.dese.ai/proposed-by``, and the guardrails judge it as any run of a runbook by
hand, ``admission``), ``get_remediation``, ``list_remediations``. No tool approves a run,
creates inline steps, edits a runbook or turns dry-run off. A refused or forbidden call
is a tool error whose text is a JSON object: ``{"error": Reason, "status": HTTP status,
"message": ...}``.

Resources: the runbook catalogue (``mcp-remediator://runbooks``, each McpRunbook as YAML,
and ``mcp-remediator://runbooks/{namespace}/{name}``) and the operations guide's digest
(``mcp-remediator://guide``), so that an agent can cite the procedure.

Transports: stdio, or streamable HTTP on 127.0.0.1 (``--http``) behind a bearer token.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from importlib import resources as package_files
from typing import Annotated, Any, Literal

import yaml
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.session import ServerSession
from mcp.types import CallToolResult, ContentBlock, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from mcp_remediator import records
from mcp_remediator.alerts.cache import RunbookCache
from mcp_remediator.alerts.payload import WebhookAlert
from mcp_remediator.errors import Refused
from mcp_remediator.kube.client import ApiError, KubeApi
from mcp_remediator.models import (
    ANNOTATION_PROPOSAL_REASON,
    ANNOTATION_PROPOSED_BY,
    API_VERSION,
    FINISHED_PHASES,
    LABEL_GROUP,
    LABEL_RUNBOOK,
    REMEDIATIONS,
    RUNBOOKS,
    RunbookSpec,
)
from mcp_remediator.runbook import guardrails
from mcp_remediator.runbook.validation import check_runbook, pydantic_message
from mcp_remediator.settings import Settings
from mcp_remediator.tools.simulate import simulate_alert as render_alert

Ctx = Context[ServerSession, Any, Any]
GUIDE = "operations-guide.md"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
PROPOSAL_WAIT_SECONDS = 3.0  # how long a proposal waits for the operator's first word
INSTRUCTIONS = (
    "mcp-remediator runs declared runbooks (McpRunbook) against the MCP layer when alerts "
    "fire. Use list_runbooks and simulate_alert to find what would handle an alert, "
    "propose_remediation to ask a human to approve a run (it never runs before "
    "spec.approved=true is set by a person), and get_remediation / list_remediations to "
    "follow it. Cite the operations guide (resource mcp-remediator://guide)."
)


class ToolFailure(ToolError):
    """A refused or forbidden call: its text is a JSON object an agent can read."""

    def __init__(self, error: str, message: str, status: int | None = None):
        self.body: dict[str, Any] = {"error": error, "message": message}
        if status is not None:
            self.body["status"] = status
        super().__init__(json.dumps(self.body))


class _Server(FastMCP[Any]):
    """FastMCP whose failed tool calls are error results holding only a JSON object
    (``{"error", "message", "status"?}``), not FastMCP's prose around the message."""

    async def call_tool(  # type: ignore[override]  # a CallToolResult is a valid answer
        self, name: str, arguments: dict[str, Any]
    ) -> Sequence[ContentBlock] | dict[str, Any] | CallToolResult:
        try:
            return await super().call_tool(name, arguments)
        except ToolError as exc:
            cause = exc if isinstance(exc, ToolFailure) else exc.__cause__
            if isinstance(cause, ToolFailure):
                body = cause.body
            else:  # malformed arguments, an unknown tool: the SDK's own message
                body = {"error": "InvalidCall", "message": str(exc)}
            text = TextContent(type="text", text=json.dumps(body))
            return CallToolResult(content=[text], isError=True)


def _failure(exc: Exception) -> ToolFailure:
    if isinstance(exc, ApiError):
        reason = {403: "Forbidden", 401: "Unauthorized", 404: "NotFound", 409: "Conflict"}
        name = reason.get(exc.status, exc.reason or "ApiError")
        if exc.status == 0:
            name = "ApiUnreachable"
        return ToolFailure(name, exc.message, exc.status)
    if isinstance(exc, Refused):
        return ToolFailure(exc.reason, exc.message)
    return ToolFailure("Invalid", str(exc))


# -- typed outputs -----------------------------------------------------------------------


class TriggerOut(BaseModel):
    alertname: str
    matchers: Annotated[list[str], Field(default_factory=list)]


class StepSummary(BaseModel):
    name: str
    action: str
    summary: Annotated[str, Field(description="The action and its parameters, in one line.")]


class RunbookOut(BaseModel):
    namespace: str
    name: str
    description: str
    suspend: bool
    triggers: list[TriggerOut]
    steps: list[StepSummary]
    guardrails: Annotated[
        dict[str, Any], Field(description="The runbook's guardrails, defaults filled.")
    ]
    valid: Annotated[bool, Field(description="Whether the operator would run it.")]
    problems: Annotated[list[str], Field(default_factory=list, description="Why it is invalid.")]


class RunbookList(BaseModel):
    runbooks: list[RunbookOut]


class GuardrailDecision(BaseModel):
    decision: Literal["allowed", "skipped", "not-evaluated"]
    reason: str = ""
    message: str = ""


class RenderedStep(BaseModel):
    name: str
    action: str
    params: dict[str, Any]


class SimulatedRemediation(BaseModel):
    runbook: str
    runbookNamespace: str
    remediation: Annotated[str, Field(description="The name the receiver would give the record.")]
    outcome: str
    targetNamespace: str | None = None
    steps: Annotated[list[RenderedStep], Field(default_factory=list)]
    wouldFail: Annotated[list[str], Field(default_factory=list)]
    guardrails: GuardrailDecision


class Simulation(BaseModel):
    remediations: list[SimulatedRemediation]
    notRouted: Annotated[
        list[str],
        Field(
            default_factory=list, description="Runbooks whose triggers match but may not take it."
        ),
    ]
    note: str = "nothing was written"


class Proposal(BaseModel):
    name: str
    namespace: str
    runbook: str
    phase: Annotated[str, Field(description="AwaitingApproval once the operator planned it.")]
    reason: str = ""
    message: str = ""
    approveWith: Annotated[str, Field(description="What a human runs to approve it.")]


class StepOut(BaseModel):
    name: str
    action: str
    phase: str
    attempts: int = 0
    message: str = ""
    reason: str = ""
    outputs: Annotated[dict[str, str], Field(default_factory=dict)]


class EventOut(BaseModel):
    type: str
    reason: str
    message: str
    count: int = 1
    time: str | None = None


class RemediationSummary(BaseModel):
    namespace: str
    name: str
    runbook: str | None
    phase: str
    reason: str = ""
    message: str = ""
    approved: bool = False
    dryRun: bool = False
    proposedBy: str | None = None
    proposalReason: str | None = None
    createdAt: str | None = None
    startedAt: str | None = None
    finishedAt: str | None = None


class RemediationOut(RemediationSummary):
    labels: Annotated[dict[str, str], Field(default_factory=dict)]
    alert: dict[str, Any] | None = None
    steps: Annotated[list[StepOut], Field(default_factory=list)]
    events: Annotated[list[EventOut], Field(default_factory=list)]
    eventsError: str | None = None


class RemediationList(BaseModel):
    remediations: list[RemediationSummary]


# -- helpers ------------------------------------------------------------------------------


def _summary(params: Mapping[str, Any]) -> str:
    shown = ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in params.items())
    return shown[:300]


def runbook_out(body: Mapping[str, Any], settings: Settings) -> RunbookOut:
    meta = body.get("metadata") or {}
    raw = body.get("spec") or {}
    problems = [p.message for p in check_runbook(raw, settings)]
    try:
        spec = RunbookSpec.model_validate(raw)
    except ValidationError as exc:
        return RunbookOut(
            namespace=meta.get("namespace", ""), name=meta.get("name", ""),
            description=str(raw.get("description", "")), suspend=bool(raw.get("suspend")),
            triggers=[], steps=[], guardrails={}, valid=False,
            problems=problems or [pydantic_message(exc)],
        )  # fmt: skip
    return RunbookOut(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        description=spec.description,
        suspend=spec.suspend,
        triggers=[
            TriggerOut(alertname=t.alertname, matchers=list(t.matchers)) for t in spec.triggers
        ],
        steps=[
            StepSummary(name=s.name, action=s.action, summary=f"{s.action}({_summary(s.params)})")
            for s in spec.steps
        ],
        guardrails=spec.guardrails.model_dump(mode="json"),
        valid=not problems,
        problems=problems,
    )


def _remediation_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    annotations = meta.get("annotations") or {}
    return {
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "runbook": (spec.get("runbookRef") or {}).get("name"),
        "phase": status.get("phase") or "Pending",
        "reason": status.get("reason") or "",
        "message": status.get("message") or "",
        "approved": bool(spec.get("approved")),
        "dryRun": bool(spec.get("dryRun")),
        "proposedBy": annotations.get(ANNOTATION_PROPOSED_BY),
        "proposalReason": annotations.get(ANNOTATION_PROPOSAL_REASON),
        "createdAt": meta.get("creationTimestamp"),
        "startedAt": status.get("startedAt"),
        "finishedAt": status.get("finishedAt"),
    }


def _client_name(ctx: Ctx) -> str:
    """The MCP client's own name and version, as it introduced itself."""
    params = ctx.session.client_params
    if params is None:
        return "unknown-mcp-client"
    info = params.clientInfo
    return f"{info.name} {info.version}".strip()[:200] or "unknown-mcp-client"


def _proposal_name(runbook: str) -> str:
    return f"{runbook[:44].rstrip('-.')}-proposal-{secrets.token_hex(4)}"


def _fingerprint(labels: Mapping[str, str]) -> str:
    text = "\0".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- the server ---------------------------------------------------------------------------


def build_server(kube: KubeApi, settings: Settings, **options: Any) -> FastMCP[Any]:
    """The MCP server over ``kube`` (the caller's identity)."""
    server: FastMCP[Any] = _Server("mcp-remediator", instructions=INSTRUCTIONS, **options)
    read_only = ToolAnnotations(readOnlyHint=True, destructiveHint=False, openWorldHint=False)

    async def call(pending: Awaitable[Any]) -> Any:
        try:
            return await pending
        except (ApiError, Refused) as exc:
            raise _failure(exc) from None

    async def list_scoped(
        plural: str, namespace: str | None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        """One namespace, or all the caller may list: all namespaces, else (forbidden, as a
        namespaced agent is) the kubeconfig's or the pod's own namespace, as kubectl does."""
        if namespace:
            found: list[dict[str, Any]] = await call(
                kube.list(API_VERSION, plural, namespace, label_selector=selector)
            )
            return found
        try:
            return await kube.list(API_VERSION, plural, None, label_selector=selector)
        except ApiError as exc:
            if exc.status != 403:
                raise _failure(exc) from None
        own = kube.connection.default_namespace
        found = await call(kube.list(API_VERSION, plural, own, label_selector=selector))
        return found

    async def runbook_bodies(namespace: str | None) -> list[dict[str, Any]]:
        items = await list_scoped(RUNBOOKS, namespace)
        return sorted(items, key=lambda b: (b["metadata"]["namespace"], b["metadata"]["name"]))

    @server.tool(
        annotations=read_only,
        description="List the McpRunbooks (declared in Git) the caller may read: for each, "
        "its description, the alerts that trigger it, a summary of its steps, its "
        "guardrails (cooldown, rate limits, approval, dry-run) and whether it is valid. "
        "Give `namespace` to list one namespace only.",
    )
    async def list_runbooks(
        namespace: Annotated[
            str | None, Field(description="Only this namespace; all if omitted.")
        ] = None,
    ) -> RunbookList:
        bodies = await runbook_bodies(namespace)
        return RunbookList(runbooks=[runbook_out(body, settings) for body in bodies])

    @server.tool(
        annotations=read_only,
        description="Which remediations an alert would create, as the operator's receiver "
        "would decide it now: the matching runbooks, the remediation names, the steps "
        "rendered from the alert's labels and annotations, and the guardrail decision "
        "(cooldown, rate, concurrency, suspend) over the runs recorded in the cluster. "
        "Writes nothing.",
    )
    async def simulate_alert(
        labels: Annotated[
            dict[str, str], Field(description="The alert's labels; `alertname` required.")
        ],
        annotations: Annotated[
            dict[str, str] | None, Field(description="The alert's annotations.")
        ] = None,
        namespace: Annotated[
            str | None, Field(description="Only runbooks of this namespace.")
        ] = None,
        startsAt: Annotated[str | None, Field(description="RFC 3339; default: now.")] = None,
        fingerprint: Annotated[
            str | None, Field(description="Default: a hash of the labels.")
        ] = None,
    ) -> Simulation:
        if not labels.get("alertname"):
            raise ToolFailure("Invalid", "labels must include a non-empty alertname")
        try:
            alert = WebhookAlert(
                status="firing",
                labels=labels,
                annotations=annotations or {},
                startsAt=startsAt or datetime.datetime.now(datetime.UTC).isoformat(),
                fingerprint=fingerprint or _fingerprint(labels),
            )
        except ValidationError as exc:
            raise ToolFailure("Invalid", pydantic_message(exc)) from None
        cache = RunbookCache(settings)
        bodies = await runbook_bodies(namespace)
        for body in bodies:
            cache.apply("ADDED", body)
        matched = cache.match(alert.labels)
        now = datetime.datetime.now(datetime.UTC)
        found = []
        for runbook, entry in zip(matched, render_alert(alert, cache), strict=True):
            decision = GuardrailDecision(decision="not-evaluated")
            if "group" in entry:
                selector = f"{LABEL_RUNBOOK}={records.label_value(runbook.name)},"
                selector += f"{LABEL_GROUP}={entry['group']}"
                runs = await call(
                    kube.list(API_VERSION, REMEDIATIONS, runbook.namespace, label_selector=selector)
                )
                verdict = guardrails.evaluate(
                    runbook.name,
                    runbook.spec,
                    [guardrails.record_of(r, now) for r in runs],
                    now,
                )
                decision = (
                    GuardrailDecision(decision="allowed")
                    if verdict is None
                    else GuardrailDecision(
                        decision="skipped", reason=verdict.reason, message=verdict.message
                    )
                )
            elif runbook.spec.suspend:
                decision = GuardrailDecision(
                    decision="skipped", reason=guardrails.SUSPENDED, message=entry["outcome"]
                )
            found.append(
                SimulatedRemediation(
                    runbook=runbook.name,
                    runbookNamespace=runbook.namespace,
                    remediation=entry["remediation"],
                    outcome=entry["outcome"],
                    targetNamespace=entry.get("namespace"),
                    steps=[RenderedStep(**step) for step in entry.get("steps", [])],
                    wouldFail=entry.get("wouldFail", []),
                    guardrails=decision,
                )
            )
        routed_out = [
            f"{rb.namespace}/{rb.name}: untrusted namespace, takes only alerts with "
            f'namespace="{rb.namespace}"'
            for rb in cache.routed_out(alert.labels)
        ]
        return Simulation(remediations=found, notRouted=routed_out)

    @server.tool(
        annotations=ToolAnnotations(
            readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=False
        ),
        description="Propose a run of an McpRunbook for a human to approve: creates an "
        "McpRemediation (with the caller's Kubernetes rights) that waits in "
        "AwaitingApproval until a person sets spec.approved=true, whatever the runbook "
        "says; the runbook's guardrails apply as for any run (a proposal in a cooldown is "
        "Skipped). It records you (the MCP client) and your reason. Returns its name and "
        "phase. `labels` are the template inputs (e.g. namespace, deployment).",
    )
    async def propose_remediation(
        ctx: Ctx,
        runbook: Annotated[str, Field(description="The McpRunbook's name.", pattern=NAME_PATTERN)],
        namespace: Annotated[
            str, Field(description="The runbook's namespace.", pattern=NAME_PATTERN)
        ],
        reason: Annotated[
            str,
            Field(
                description="Why, for the approver: the evidence.", min_length=1, max_length=2000
            ),
        ],
        labels: Annotated[
            dict[str, str] | None,
            Field(description="Template inputs, as an alert's labels would be."),
        ] = None,
        dryRun: Annotated[
            bool, Field(description="Also ask for a dry run (changes nothing).")
        ] = False,
    ) -> Proposal:
        found = await call(kube.get_or_none(API_VERSION, RUNBOOKS, namespace, runbook))
        if found is None:
            raise ToolFailure("RunbookNotFound", f"McpRunbook {runbook} not found in {namespace}")
        spec: dict[str, Any] = {"labels": dict(labels or {}), "approved": False}
        if dryRun:
            spec["dryRun"] = True
        body = records.remediation_body(
            _proposal_name(runbook),
            namespace,
            runbook,
            spec=spec,
            annotations={
                ANNOTATION_PROPOSED_BY: _client_name(ctx),
                ANNOTATION_PROPOSAL_REASON: reason,
            },
        )
        created = await call(kube.create(API_VERSION, REMEDIATIONS, namespace, body))
        name = created["metadata"]["name"]
        # The operator's first word (AwaitingApproval, or Skipped by a guardrail), briefly.
        deadline = asyncio.get_running_loop().time() + PROPOSAL_WAIT_SECONDS
        current = created
        while not (current.get("status") or {}).get("phase"):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
            current = (
                await call(kube.get_or_none(API_VERSION, REMEDIATIONS, namespace, name)) or current
            )
        summary = _remediation_summary(current)
        return Proposal(
            name=name,
            namespace=namespace,
            runbook=runbook,
            phase=summary["phase"],
            reason=summary["reason"],
            message=summary["message"],
            approveWith=f"kubectl -n {namespace} patch mcpremediation {name} --type merge "
            '-p \'{"spec":{"approved":true}}\'',
        )

    @server.tool(
        annotations=read_only,
        description="One McpRemediation: phase, reason, who proposed it and why, each "
        "step's phase, message and outputs, and its Kubernetes Events.",
    )
    async def get_remediation(
        namespace: Annotated[str, Field(pattern=NAME_PATTERN)],
        name: Annotated[str, Field(pattern=NAME_PATTERN)],
    ) -> RemediationOut:
        body = await call(kube.get_or_none(API_VERSION, REMEDIATIONS, namespace, name))
        if body is None:
            raise ToolFailure("NotFound", f"McpRemediation {name} not found in {namespace}", 404)
        status = body.get("status") or {}
        spec = body.get("spec") or {}
        out = RemediationOut(
            **_remediation_summary(body),
            labels=spec.get("labels") or {},
            alert=spec.get("alert"),
            steps=[
                StepOut(
                    name=s.get("name", ""),
                    action=s.get("action", ""),
                    phase=s.get("phase", "Pending"),
                    attempts=s.get("attempts") or 0,
                    message=s.get("message") or "",
                    reason=s.get("reason") or "",
                    outputs=s.get("outputs") or {},
                )  # fmt: skip
                for s in status.get("steps") or []
            ],
        )
        try:
            events = await kube.list("v1", "events", namespace)
        except ApiError as exc:
            out.eventsError = f"{exc.status} {exc.reason}: {exc.message}"
            return out
        mine = [
            e
            for e in events
            if (e.get("involvedObject") or {}).get("name") == name
            and (e.get("involvedObject") or {}).get("kind") == "McpRemediation"
        ]
        mine.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        out.events = [
            EventOut(
                type=e.get("type") or "Normal",
                reason=e.get("reason") or "",
                message=e.get("message") or "",
                count=e.get("count") or 1,
                time=e.get("lastTimestamp") or e.get("eventTime"),
            )  # fmt: skip
            for e in mine
        ]
        return out

    @server.tool(
        annotations=read_only,
        description="List McpRemediations (runs), newest first, optionally of one "
        "namespace, runbook or phase (e.g. AwaitingApproval).",
    )
    async def list_remediations(
        namespace: Annotated[str | None, Field(description="Only this namespace.")] = None,
        runbook: Annotated[str | None, Field(description="Only runs of this runbook.")] = None,
        phase: Annotated[str | None, Field(description="Only runs in this phase.")] = None,
        unfinished: Annotated[bool, Field(description="Only runs not finished yet.")] = False,
        limit: Annotated[int, Field(ge=1, le=500)] = 50,
    ) -> RemediationList:
        selector = f"{LABEL_RUNBOOK}={records.label_value(runbook)}" if runbook else None
        items = await list_scoped(REMEDIATIONS, namespace, selector)
        found = [_remediation_summary(b) for b in items]
        if phase:
            found = [r for r in found if r["phase"] == phase]
        if unfinished:
            found = [r for r in found if r["phase"] not in FINISHED_PHASES]
        found.sort(key=lambda r: (r["createdAt"] or "", r["name"]), reverse=True)
        return RemediationList(remediations=[RemediationSummary(**r) for r in found[:limit]])

    @server.resource(
        "mcp-remediator://runbooks",
        name="runbook-catalogue",
        description="Every McpRunbook the caller may read, as YAML documents.",
        mime_type="application/yaml",
    )
    async def catalogue() -> str:
        bodies = await _resource_call(runbook_bodies(None))
        return yaml.safe_dump_all([_manifest(b) for b in bodies], sort_keys=False)

    @server.resource(
        "mcp-remediator://runbooks/{namespace}/{name}",
        name="runbook",
        description="One McpRunbook as YAML.",
        mime_type="application/yaml",
    )
    async def one_runbook(namespace: str, name: str) -> str:
        body = await _resource_call(kube.get(API_VERSION, RUNBOOKS, namespace, name))
        return yaml.safe_dump(_manifest(body), sort_keys=False)

    @server.resource(
        "mcp-remediator://guide",
        name="operations-guide",
        description="The operations guide's digest: every procedure of the MCP layer, "
        "marked AUTO (the operator does it), CHECK (evidence) or HUMAN.",
        mime_type="text/markdown",
    )
    def guide() -> str:
        return guide_text()

    del list_runbooks, simulate_alert, propose_remediation, get_remediation
    del list_remediations, catalogue, one_runbook, guide
    return server


async def _resource_call(pending: Awaitable[Any]) -> Any:
    try:
        return await pending
    except ToolFailure:
        raise
    except (ApiError, Refused) as exc:
        raise ValueError(str(_failure(exc))) from None


def _manifest(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    keep = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
    out: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "McpRunbook", "metadata": keep}
    out["spec"] = body.get("spec") or {}
    if body.get("status"):
        out["status"] = body["status"]
    return out


def guide_text() -> str:
    return (package_files.files("mcp_remediator") / "data" / GUIDE).read_text(encoding="utf-8")


# -- transports ---------------------------------------------------------------------------


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def bearer_protected(app: ASGIApp, token: str) -> ASGIApp:
    """``app`` answering 401 to any HTTP request without ``Authorization: Bearer <token>``."""
    expected = f"Bearer {token}".encode()

    async def guarded(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": b'{"error":"Unauthorized"}'})
                return
        await app(scope, receive, send)

    return guarded


async def serve(
    kube: KubeApi,
    settings: Settings,
    *,
    http: bool = False,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
) -> None:
    """Serve until the client hangs up (stdio) or the process is stopped (HTTP)."""
    try:
        if not http:
            await build_server(kube, settings).run_stdio_async()
            return
        import uvicorn

        if not token:
            raise SystemExit("mcp-remediator mcp-server --http: needs a token (see --help)")
        server = build_server(kube, settings, host=host, port=port)
        app = bearer_protected(server.streamable_http_app(), token)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning")
        await uvicorn.Server(config).serve()
    finally:
        await kube.aclose()
