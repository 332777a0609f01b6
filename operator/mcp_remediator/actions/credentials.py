"""Where a step's credentials come from: the operator's own, or a Secret of its namespace.

The operator-level credentials and endpoints (``MCP_REDIS_URL``, ``MCP_PROMETHEUS_URL``
and its token, ``MCP_ARGOCD_SERVER`` and its token, ``MCP_NOTIFY_WEBHOOK_URL``,
``MCP_MODULE_BASE_URLS``) serve only remediations whose own namespace is trusted
(``MCP_TRUSTED_NAMESPACES``, ``ctx.trusted``). Elsewhere a step names a Secret of its own
namespace in the action's ``*SecretRef`` param, or it fails with ``CredentialsNotAllowed``
(not retried) before anything is contacted. Every action resolves them here:

* ``endpoint(ctx, default, param=..., url_ref=..., token_ref=...)``: the URL (and token)
  to use. With ``url_ref`` both come from Secrets of ``ctx.own_namespace`` and nothing of
  ``default`` is used: the operator's token is never sent to a URL a runbook chose. Without
  it, ``default`` (the settings) serves trusted namespaces only.
* ``read_secret(ctx, ref, param)``: one key of a Secret of the remediation's own namespace,
  never of the target namespace (which an alert's labels may choose).
* ``check_url(ctx, url)``: ``refusals.check_url``, and hosts allowed only because they are
  module base URLs (``MCP_MODULE_BASE_URLS``) are for trusted namespaces only.

Values stay ``SecretStr``; messages name where a value came from (``MCP_REDIS_URL``,
``Secret team-a/redis key 'url'``), never the value.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from pydantic import Field, SecretStr

from mcp_remediator import redact
from mcp_remediator.actions.common import K8sName
from mcp_remediator.actions.registry import Access, ActionContext, ActionParams
from mcp_remediator.errors import Refused, StepFailed
from mcp_remediator.kube import refusals
from mcp_remediator.kube.client import ApiError

CREDENTIALS_NOT_ALLOWED = "CredentialsNotAllowed"
SECRET_NOT_FOUND = "SecretNotFound"
SECRET_UNREADABLE = "SecretUnreadable"
TRUSTED_SETTING = "MCP_TRUSTED_NAMESPACES"

# Every action that takes a ``*SecretRef`` param declares this one need, so that the
# role renders a single rule for all of them.
SECRET_ACCESS = Access.on_kinds(
    ["Secret"],
    ["get"],
    why="read the Secret a step names in a `*SecretRef` param (Redis URL, Prometheus, Argo "
    "CD API, webhook, module base URL), in the remediation's own namespace only; get by "
    "name only: no list or watch, so the runner account cannot enumerate Secrets.",
)


class SecretKeyRef(ActionParams):
    """One key of a Secret in the remediation's own namespace."""

    name: K8sName = Field(description="Name of the Secret, in the remediation's own namespace.")
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key of the Secret's data that holds the value.",
    )


@dataclass(frozen=True)
class Credential:
    """A value and where it came from (``source``: what messages name instead of it)."""

    value: SecretStr
    source: str


@dataclass(frozen=True)
class OperatorEndpoint:
    """An operator-level endpoint from the settings: the default of trusted namespaces.

    ``what`` names it in messages (``the operator-level Prometheus``); ``url_setting`` and
    ``token_setting`` are the environment variables that set ``url`` and ``token``.
    """

    what: str
    url_setting: str
    url: str | SecretStr | None
    token_setting: str | None = None
    token: SecretStr | None = None

    @property
    def settings(self) -> str:
        return ", ".join(s for s in (self.url_setting, self.token_setting) if s)


@dataclass(frozen=True)
class Endpoint:
    """What a step connects to. ``url`` is None only for a trusted namespace whose
    operator-level setting is unset: the action says what to configure."""

    url: Credential | None
    token: Credential | None
    operator_level: bool


def not_allowed(ctx: ActionContext, what: str, fix: str) -> StepFailed:
    """The ``CredentialsNotAllowed`` failure: ``what`` the step tried to use, ``fix``."""
    namespace = ctx.own_namespace
    return StepFailed(
        f"{what} is for trusted namespaces only ({TRUSTED_SETTING}) and {namespace} is not "
        f"one: {fix}, or add {namespace} to {TRUSTED_SETTING}",
        reason=CREDENTIALS_NOT_ALLOWED,
    )


def require_trusted(ctx: ActionContext, what: str, param: str) -> None:
    """Raise ``CredentialsNotAllowed`` unless the remediation's namespace is trusted."""
    if not ctx.trusted:
        raise not_allowed(ctx, what, f"name a Secret of namespace {ctx.own_namespace} in {param}")


async def read_secret(
    ctx: ActionContext,
    ref: SecretKeyRef,
    param: str,
    *,
    not_found: str = SECRET_NOT_FOUND,
    unreadable: str = SECRET_UNREADABLE,
) -> Credential:
    """Key ``ref.key`` of the Secret ``ref.name`` of the remediation's own namespace.

    ``param`` names the reference in messages; ``not_found`` and ``unreadable`` are the
    reasons of a missing Secret or key and of a value that is not base64 UTF-8 text.
    """
    where = f"Secret {ctx.own_namespace}/{ref.name}"
    try:
        obj = await ctx.clients.kube.get("v1", "secrets", ctx.own_namespace, ref.name)
    except ApiError as exc:
        if exc.status == 404:
            raise StepFailed(f"{where} ({param}) not found", reason=not_found) from None
        raise exc.as_step_failure(f"reading {where} ({param})") from None
    encoded = (obj.get("data") or {}).get(ref.key)
    if encoded is None:
        raise StepFailed(f"{where} has no key {ref.key!r} ({param})", reason=not_found)
    source = f"{where} key {ref.key!r}"
    try:
        text = base64.b64decode(encoded, validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        raise StepFailed(f"{source} is not base64-encoded UTF-8", reason=unreadable) from None
    if not text:
        raise StepFailed(f"{source} is empty", reason=unreadable)
    return Credential(SecretStr(text), source)


async def endpoint(
    ctx: ActionContext,
    default: OperatorEndpoint,
    *,
    url_ref: SecretKeyRef | None,
    url_param: str,
    token_ref: SecretKeyRef | None = None,
    token_param: str = "",
    not_found: str = SECRET_NOT_FOUND,
    unreadable: str = SECRET_UNREADABLE,
) -> Endpoint:
    """The URL and token a step uses; nothing is contacted here but the Kubernetes API.

    ``url_ref`` given: the URL, and the token when ``token_ref`` is given, come from
    Secrets of the remediation's own namespace; the operator-level token is never used
    with them. ``url_ref`` omitted: ``default``, for trusted namespaces only
    (``CredentialsNotAllowed`` elsewhere, naming ``url_param`` as the way out).
    ``url_param`` and ``token_param`` name the params in messages.
    """
    if url_ref is not None:
        reasons = {"not_found": not_found, "unreadable": unreadable}
        url = await read_secret(ctx, url_ref, url_param, **reasons)
        token = None
        if token_ref is not None:
            token = await read_secret(ctx, token_ref, token_param or url_param, **reasons)
        return Endpoint(url, token, operator_level=False)
    require_trusted(ctx, f"{default.what} ({default.settings})", url_param)
    url_value = default.url
    found_url = None
    if url_value is not None:
        secret = url_value if isinstance(url_value, SecretStr) else SecretStr(url_value)
        found_url = Credential(secret, default.url_setting)
    found_token = None
    if default.token is not None and default.token_setting is not None:
        found_token = Credential(default.token, default.token_setting)
    return Endpoint(found_url, found_token, operator_level=True)


def check_url(ctx: ActionContext, url: str) -> None:
    """``refusals.check_url``; for an untrusted namespace, also no host that is allowed
    only as a module base URL (``MCP_MODULE_BASE_URLS`` serves trusted namespaces only)."""
    refusals.check_url(ctx.settings, url)
    if ctx.trusted or not ctx.settings.module_base_urls:
        return
    try:
        refusals.check_url(ctx.settings.model_copy(update={"module_base_urls": {}}), url)
    except Refused:
        raise not_allowed(
            ctx,
            f"host {redact.safe_host(url, 'of the URL')}, allowed as a module base URL "
            "(MCP_MODULE_BASE_URLS),",
            "add the host to MCP_HTTP_ALLOWED_HOSTS",
        ) from None
