"""``notify``: a message to the on-call channel through a Slack-compatible webhook.

The guide's alert procedure ends with a note on the incident; this action posts it. The
message is templated by the engine like every string param (alert labels, earlier steps'
outputs); the webhook URL is never written in a runbook: it comes from
``MCP_NOTIFY_WEBHOOK_URL[_FILE]`` for trusted namespaces (``MCP_TRUSTED_NAMESPACES``), else
from a Secret of the remediation's own namespace named in ``webhook.urlSecretRef``
(``actions/credentials``; without one the step fails ``CredentialsNotAllowed``, in dry-run
too). That URL is itself the credential (Slack puts the token in the path), so it never
appears in a message, an output or a log line: failures name only the webhook's host,
and httpx's own request log line (INFO, with the full URL) is redacted while we post.

The body is ``{"text": ...}``, which Slack, Mattermost, Rocket.Chat and Teams' Slack-
compatible connectors all accept. Nothing is sent in dry-run.
"""

from __future__ import annotations

import logging
import time

import httpx
from pydantic import Field

from mcp_remediator import redact
from mcp_remediator.actions import credentials
from mcp_remediator.actions.common import SlackText
from mcp_remediator.actions.credentials import SecretKeyRef
from mcp_remediator.actions.registry import ActionContext, ActionParams, ActionResult, action
from mcp_remediator.errors import StepFailed

NOTIFY_FAILED = "NotifyFailed"
MAX_MESSAGE = 4000  # Slack truncates longer text; better to cut it ourselves, visibly


class _RedactUrl(logging.Filter):
    """Replaces one URL in the httpx logger's records by its host."""

    def __init__(self, url: str, host: str):
        super().__init__()
        full = str(httpx.URL(url))
        # As it is logged, or as ``redact.redact_http_logs`` has already shown it.
        self.urls = {full, redact.safe_url(full, full)}
        self.shown = f"<notification webhook at {host}>"

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.shown if str(a) in self.urls else a for a in record.args)
        if isinstance(record.msg, str):
            for url in self.urls:
                record.msg = record.msg.replace(url, self.shown)
        return True


class WebhookRef(ActionParams):
    urlSecretRef: SecretKeyRef = Field(
        description="Secret key (in the remediation's own namespace) holding the "
        "Slack-compatible webhook URL."
    )


class NotifyParams(ActionParams):
    message: SlackText = Field(
        min_length=1,
        description="The text to post (templated: `{{ labels.alertname }}`, step outputs...); "
        "`&`, `<` and `>` in template values are escaped, the runbook's own text (Slack "
        "links too) is sent as written.",
    )
    webhook: WebhookRef | None = Field(
        None,
        description="Which webhook: `{urlSecretRef: {name, key}}`; omitted: "
        "`MCP_NOTIFY_WEBHOOK_URL`, for trusted namespaces only (`MCP_TRUSTED_NAMESPACES`; "
        "elsewhere the step fails `CredentialsNotAllowed`).",
    )


@action(
    "notify",
    NotifyParams,
    "Post `message` to a Slack-compatible webhook: `webhook.urlSecretRef`, else "
    "`MCP_NOTIFY_WEBHOOK_URL` (trusted namespaces only). The incident note of the alert "
    "procedure. Nothing is sent in dry-run.",
    writes=True,
    access=[credentials.SECRET_ACCESS],
)
async def notify(params: NotifyParams, ctx: ActionContext) -> ActionResult:
    text = params.message
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    outputs = {"characters": str(len(text))}
    # Before the dry-run answer: a dry run shows a step that could not post.
    found = await credentials.endpoint(
        ctx,
        credentials.OperatorEndpoint(
            "the operator-level notification webhook",
            "MCP_NOTIFY_WEBHOOK_URL",
            ctx.settings.notify_webhook_url,
        ),
        url_ref=None if params.webhook is None else params.webhook.urlSecretRef,
        url_param="webhook.urlSecretRef",
    )
    if ctx.dry_run:
        return ActionResult(f"would notify: {text[:200]}", outputs)
    if found.url is None:
        raise StepFailed(
            "no notification webhook configured (MCP_NOTIFY_WEBHOOK_URL_FILE or "
            "MCP_NOTIFY_WEBHOOK_URL)",
            reason="NotConfigured",
        )
    url = found.url.value.get_secret_value()
    try:
        host = httpx.URL(url).host or ""
    except httpx.InvalidURL:
        host = ""
    if not host:
        raise StepFailed(f"{found.url.source} is not a valid URL", reason="NotConfigured")
    started = time.monotonic()
    httpx_log = logging.getLogger("httpx")
    redact = _RedactUrl(url, host)
    httpx_log.addFilter(redact)
    try:
        response = await ctx.clients.http.post(url, json={"text": text}, follow_redirects=False)
    except httpx.HTTPError as exc:
        # ``from None``: the exception's own text may hold the URL, and with it the token.
        raise StepFailed(
            f"notification webhook at {host} unreachable ({type(exc).__name__})",
            reason=NOTIFY_FAILED,
            transient=isinstance(exc, httpx.ConnectError),
        ) from None
    finally:
        httpx_log.removeFilter(redact)
    millis = (time.monotonic() - started) * 1000
    code = response.status_code
    if not 200 <= code < 300:
        raise StepFailed(
            f"notification webhook at {host} answered {code}",
            reason=NOTIFY_FAILED,
            transient=code >= 500 or code == 429,
        )
    outputs.update({"status": str(code), "latencyMs": f"{millis:.0f}"})
    return ActionResult(f"notified via webhook at {host}: {text[:200]}", outputs)
