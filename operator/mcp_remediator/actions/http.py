"""``httpHealthCheck`` and ``httpRequest``: HTTP calls to the MCP layer, allowed hosts only.

``httpHealthCheck`` probes a module's ``/mcp/<module>/health`` (base URL per module from
``MCP_MODULE_BASE_URLS``) or a given URL; ``httpRequest`` sends one request, e.g. to
publish a test event, to a URL or to a path under a module's base URL (so that a runbook
in Git names the module, and each installation configures where the module lives).

Every URL passes ``refusals.check_url`` first (``Refused`` with ``HostNotAllowed`` outside
``MCP_HTTP_ALLOWED_HOSTS`` and the module base URLs), at validation time when the URL is
literal and again after templating; redirects are not followed, so an allowed host cannot
bounce a request elsewhere.

``MCP_MODULE_BASE_URLS`` serves trusted namespaces only (``MCP_TRUSTED_NAMESPACES``,
``actions/credentials``): elsewhere a ``module`` step names its base URL in a Secret of
its own namespace (``baseUrlSecretRef``) or fails ``CredentialsNotAllowed``, and a ``url``
whose host is allowed only as a module base URL fails the same way (the allow-list of
untrusted namespaces is ``MCP_HTTP_ALLOWED_HOSTS``).

Messages show URLs as ``redact.safe_url``: without user info, query or fragment, which may
carry credentials.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import httpx
from pydantic import Field, JsonValue, model_validator

from mcp_remediator import redact
from mcp_remediator.actions import credentials
from mcp_remediator.actions.common import Url
from mcp_remediator.actions.credentials import SecretKeyRef
from mcp_remediator.actions.registry import ActionContext, ActionParams, ActionResult, action
from mcp_remediator.errors import StepFailed
from mcp_remediator.kube import refusals
from mcp_remediator.settings import Settings

HEALTH_FAILED = "HealthCheckFailed"
REQUEST_FAILED = "HttpRequestFailed"
MODULE_PATTERN = r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$"
BASE_URL_SECRET_REF = (
    "Secret key (in the remediation's own namespace) holding the module's base URL, instead "
    "of `MCP_MODULE_BASE_URLS` (which serves trusted namespaces only); its host must be in "
    "`MCP_HTTP_ALLOWED_HOSTS`. Only with `module`."
)


def shown(url: str) -> str:
    """The URL without user info, query or fragment: safe to put into a message."""
    return redact.safe_url(url, "the URL")


async def _send(
    ctx: ActionContext,
    method: str,
    url: str,
    *,
    timeout: float,
    reason: str,
    json: JsonValue | None = None,
) -> tuple[httpx.Response, float]:
    """Send one request; (response, milliseconds).

    Failures to connect are transient. A timeout is transient only for idempotent methods:
    the server may have acted on a POST or PATCH it did not answer, and a retry would
    act twice (publish a second test event).
    """
    started = time.monotonic()
    try:
        response = await ctx.clients.http.request(
            method, url, json=json, timeout=timeout, follow_redirects=False
        )
    except httpx.TimeoutException as exc:
        raise StepFailed(
            f"{method} {shown(url)}: no answer within {timeout:g}s",
            reason=reason,
            transient=method not in ("POST", "PATCH"),
        ) from exc
    except httpx.HTTPError as exc:
        raise StepFailed(
            f"{method} {shown(url)}: unreachable ({type(exc).__name__})",
            reason=reason,
            transient=True,
        ) from exc
    except httpx.InvalidURL:
        # ``from None``: the exception's text quotes the URL, with any credentials in it.
        raise StepFailed(f"{method} {shown(url)}: not a valid URL", reason=reason) from None
    return response, (time.monotonic() - started) * 1000


def _status_detail(response: httpx.Response) -> str:
    """The ``status`` a JSON health answer reports, if it reports one."""
    try:
        body: Any = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and isinstance(body.get("status"), str | int | bool):
        return str(body["status"])
    return ""


class HttpHealthCheckParams(ActionParams):
    url: Url | None = Field(
        None,
        min_length=1,
        description="URL to probe (or `module`); must be an allowed host. Template values "
        "are percent-encoded in the path and query, a host name or port in the host.",
    )
    module: str | None = Field(
        None,
        pattern=MODULE_PATTERN,
        description="MCP module (`finbot`, `mubot`, `aiops`, `observability`): probes "
        "`<base URL>/mcp/<module>/health` with the base URL from `MCP_MODULE_BASE_URLS` "
        "(trusted namespaces only) or `baseUrlSecretRef`.",
    )
    baseUrlSecretRef: SecretKeyRef | None = Field(None, description=BASE_URL_SECRET_REF)
    expectStatus: int = Field(200, ge=100, le=599, description="The healthy HTTP status.")
    timeoutSeconds: float = Field(10.0, gt=0, le=300, description="Timeout of the probe.")

    @model_validator(mode="after")
    def _url_or_module(self) -> HttpHealthCheckParams:
        if (self.url is None) == (self.module is None):
            raise ValueError("give exactly one of url or module")
        if self.baseUrlSecretRef is not None and self.module is None:
            raise ValueError("baseUrlSecretRef goes with module")
        return self


async def health_url(params: HttpHealthCheckParams, ctx: ActionContext) -> str:
    if params.url is not None:
        return params.url
    assert params.module is not None
    base = await module_base_url(params.module, params.baseUrlSecretRef, ctx)
    return f"{base.rstrip('/')}/mcp/{params.module}/health"


async def module_base_url(module: str, ref: SecretKeyRef | None, ctx: ActionContext) -> str:
    """The base URL of ``module``: from ``ref`` (a Secret of the remediation's namespace),
    else from ``MCP_MODULE_BASE_URLS`` for trusted namespaces only."""
    settings = ctx.settings
    default = credentials.OperatorEndpoint(
        f"the operator-level base URL of module {module}",
        "MCP_MODULE_BASE_URLS",
        settings.module_base_urls.get(module),
    )
    found = await credentials.endpoint(ctx, default, url_ref=ref, url_param="baseUrlSecretRef")
    if found.url is None:
        known = ", ".join(sorted(settings.module_base_urls)) or "none"
        raise StepFailed(
            f"module {module} has no base URL in MCP_MODULE_BASE_URLS (known: {known})",
            reason="UnknownModule",
        )
    return found.url.value.get_secret_value()


def _validate_health(params: HttpHealthCheckParams, settings: Settings, _: str | None) -> None:
    if params.url is not None:
        refusals.check_url(settings, params.url)


@action(
    "httpHealthCheck",
    HttpHealthCheckParams,
    "Probe `/mcp/<module>/health` (base URL per module from `MCP_MODULE_BASE_URLS`, for "
    "trusted namespaces only, or from `baseUrlSecretRef`) or a URL on an allowed host; "
    "fails unless it answers `expectStatus`.",
    writes=False,
    access=[credentials.SECRET_ACCESS],
    validate=_validate_health,
)
async def http_health_check(params: HttpHealthCheckParams, ctx: ActionContext) -> ActionResult:
    url = await health_url(params, ctx)
    credentials.check_url(ctx, url)
    response, millis = await _send(
        ctx, "GET", url, timeout=params.timeoutSeconds, reason=HEALTH_FAILED
    )
    health = _status_detail(response)
    outputs = {"url": shown(url), "status": str(response.status_code), "latencyMs": f"{millis:.0f}"}
    if health:
        outputs["health"] = health
    said = f" (status {health!r})" if health else ""
    if response.status_code != params.expectStatus:
        raise StepFailed(
            f"GET {shown(url)} answered {response.status_code}{said}, expected "
            f"{params.expectStatus}",
            reason=HEALTH_FAILED,
            transient=response.status_code >= 500 or response.status_code == 429,
        )
    return ActionResult(
        f"GET {shown(url)} answered {response.status_code}{said} in {millis:.0f} ms", outputs
    )


class HttpRequestParams(ActionParams):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = Field(
        "GET", description="HTTP method."
    )
    url: Url | None = Field(
        None,
        min_length=1,
        description="URL on an allowed host (templated: values percent-encoded in the path "
        "and query); or `module`.",
    )
    module: str | None = Field(
        None,
        pattern=MODULE_PATTERN,
        description="MCP module whose base URL (`MCP_MODULE_BASE_URLS`, trusted namespaces "
        "only, or `baseUrlSecretRef`) `path` is appended to.",
    )
    baseUrlSecretRef: SecretKeyRef | None = Field(None, description=BASE_URL_SECRET_REF)
    path: Url | None = Field(
        None,
        pattern=r"^/",
        description="Path under the module's base URL, e.g. `/mcp/finbot/events/test` "
        "(template values percent-encoded).",
    )
    json_body: JsonValue | None = Field(
        None, alias="json", description="JSON body to send (templated strings inside)."
    )
    expectStatus: int | None = Field(
        None, ge=100, le=599, description="Required HTTP status; default: any 2xx."
    )
    timeoutSeconds: float = Field(30.0, gt=0, le=300, description="Timeout of the request.")

    @model_validator(mode="after")
    def _url_or_module(self) -> HttpRequestParams:
        if (self.url is None) == (self.module is None):
            raise ValueError("give exactly one of url or module (with path)")
        if (self.module is None) != (self.path is None):
            raise ValueError("module and path go together")
        if self.baseUrlSecretRef is not None and self.module is None:
            raise ValueError("baseUrlSecretRef goes with module")
        return self


async def request_url(params: HttpRequestParams, ctx: ActionContext) -> str:
    if params.url is not None:
        return params.url
    assert params.module is not None and params.path is not None
    base = await module_base_url(params.module, params.baseUrlSecretRef, ctx)
    return f"{base.rstrip('/')}{params.path}"


def _validate_request(params: HttpRequestParams, settings: Settings, _: str | None) -> None:
    if params.url is not None:
        refusals.check_url(settings, params.url)


@action(
    "httpRequest",
    HttpRequestParams,
    "Send one HTTP request (e.g. publish a test event) to an allowed host, or to `path` under "
    "a module's base URL (`MCP_MODULE_BASE_URLS`, trusted namespaces only, or "
    "`baseUrlSecretRef`); fails unless the answer is `expectStatus` (default: any 2xx). "
    "Nothing is sent in dry-run.",
    writes=True,
    access=[credentials.SECRET_ACCESS],
    validate=_validate_request,
)
async def http_request(params: HttpRequestParams, ctx: ActionContext) -> ActionResult:
    url = await request_url(params, ctx)
    credentials.check_url(ctx, url)
    what = f"{params.method} {shown(url)}"
    if ctx.dry_run:
        return ActionResult(f"would send {what}", {"url": shown(url)})
    response, millis = await _send(
        ctx,
        params.method,
        url,
        timeout=params.timeoutSeconds,
        reason=REQUEST_FAILED,
        json=params.json_body,
    )
    code = response.status_code
    outputs = {
        "url": shown(url),
        "status": str(code),
        "latencyMs": f"{millis:.0f}",
        "bodyBytes": str(len(response.content)),
    }
    ok = code == params.expectStatus if params.expectStatus is not None else 200 <= code < 300
    if not ok:
        expected = params.expectStatus if params.expectStatus is not None else "2xx"
        raise StepFailed(
            f"{what} answered {code}, expected {expected}",
            reason=REQUEST_FAILED,
            transient=code >= 500 or code == 429,
        )
    return ActionResult(f"{what} answered {code} in {millis:.0f} ms", outputs)
