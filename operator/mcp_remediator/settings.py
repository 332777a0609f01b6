"""Operator settings: one typed object read from the ``MCP_*`` environment variables.

Every setting is documented once, here (the README's settings table is generated from
``Settings.model_fields``). Secrets may come from ``<NAME>_FILE`` (a mounted Secret) or
from ``<NAME>``; the file wins. Secret values are ``pydantic.SecretStr`` so that they
never appear in a ``repr``, a log line or a status field, and no validation error shows an
input value (``hide_input_in_errors``): ``from_env`` raises ``SettingsError``, which names
each bad variable and what is wrong with it, never its value. Bearer tokens must be
header-safe (``redact.header_safe``: visible ASCII), so that a pasted ``’`` is rejected at
start-up instead of failing every request later with an error holding the whole header.

Called by ``cli`` once at start-up; everything else receives the object explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from mcp_remediator import redact

SECRET_SETTINGS = (
    "receiver_token",
    "prometheus_token",
    "argocd_token",
    "notify_webhook_url",
    "redis_url",
    "alertmanager_token",
)


# Sent as ``Authorization: Bearer <token>`` (or compared with what Alertmanager sends).
TOKEN_SETTINGS = ("receiver_token", "prometheus_token", "argocd_token", "alertmanager_token")


class SettingsError(ValueError):
    """Invalid settings: names each bad variable and what is wrong, never a value."""


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.replace("\n", ",").split(",") if item.strip()]


class Settings(BaseModel):
    """All operator settings; the env var of field ``foo_bar`` is ``MCP_FOO_BAR``."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    receiver_port: int = Field(8080, description="Port of the alert receiver (HTTP).")
    receiver_host: str = Field("0.0.0.0", description="Address the receiver binds to.")
    receiver_token: SecretStr | None = Field(
        None, description="Bearer token Alertmanager must send (or `MCP_RECEIVER_TOKEN_FILE`)."
    )
    receiver_insecure: bool = Field(
        False, description="Start the receiver without a token (development only)."
    )
    receiver_max_body_bytes: int = Field(
        1_048_576, description="Largest accepted webhook body; larger ones answer 413."
    )
    receiver_header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Time a client has to send a request's line and headers: from the "
        "connection's opening, or on a kept-alive connection from the request's first byte. "
        "Past it the connection is closed (a first request gets a 503 first, so that "
        "Alertmanager retries).",
    )
    receiver_body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Time a client has to send a webhook body once its headers are in; "
        "past it the receiver answers 503 (Alertmanager retries) and closes the connection.",
    )
    receiver_api_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="Time the receiver gives the Kubernetes API to handle one notification "
        "(its lists, creates and status writes); past it the work is cancelled and the "
        "answer is 503, so that Alertmanager retries (records have deterministic names: "
        "the retry creates no second one).",
    )
    receiver_keepalive_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="How long a kept-alive connection may stay idle between requests "
        "before the receiver closes it.",
    )
    receiver_max_connections: int = Field(
        256,
        gt=0,
        description="Open connections the receiver keeps at most. At the cap a new "
        "connection first closes the longest-idle kept-alive one; with none idle it is "
        "answered 503 (`Retry-After: 1`) and closed, so Alertmanager retries.",
    )
    receiver_skip_records_per_minute: int = Field(
        60,
        description="Skipped-remediation records written per runbook per minute; beyond "
        "that only metrics and an Event count them.",
    )
    redis_url: SecretStr | None = Field(
        None,
        description="Default Redis for Redis actions (`redis://`, `rediss://`); trusted "
        "namespaces only, elsewhere a step names a Secret (`redis.urlSecretRef`).",
    )
    redis_allowed_prefixes: list[str] = Field(
        ["mcp:"],
        description="Key prefixes Redis actions may touch (comma-separated); `redisInspect` "
        "samples only keys under them.",
    )
    redis_timeout_seconds: float = Field(5.0, description="Redis connect and read timeout.")
    prometheus_url: str | None = Field(
        None,
        description="Prometheus base URL; trusted namespaces only, elsewhere a step names a "
        "Secret (`prometheus.urlSecretRef`).",
    )
    prometheus_token: SecretStr | None = Field(
        None,
        description="Bearer token for `MCP_PROMETHEUS_URL` (or `MCP_PROMETHEUS_TOKEN_FILE`); "
        "never sent to a URL from a Secret.",
    )
    prometheus_timeout_seconds: float = Field(10.0, description="Prometheus query timeout.")
    alertmanager_url: str | None = Field(
        None,
        description="Alertmanager base URL (API v2) for runbooks with `guardrails.silence`; "
        "unset: such runs go on without a silence, and say so in their status.",
    )
    alertmanager_token: SecretStr | None = Field(
        None,
        description="Bearer token for `MCP_ALERTMANAGER_URL` (or "
        "`MCP_ALERTMANAGER_TOKEN_FILE`), e.g. for an authenticating proxy in front of it.",
    )
    alertmanager_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="Timeout of one request to Alertmanager; an unreachable Alertmanager "
        "never blocks or fails a run.",
    )
    silence_max_seconds: int = Field(
        7200,
        ge=60,
        description="Longest a run's silence may last, whatever its steps' timeouts: a "
        "crashed operator never leaves a longer one.",
    )
    argocd_mode: Literal["core", "api"] = Field(
        "core", description="`core`: write Application objects; `api`: Argo CD's REST API."
    )
    argocd_namespace: str = Field("argocd", description="Namespace of Argo CD Applications.")
    argocd_server: str | None = Field(
        None,
        description="Argo CD API URL (api mode); trusted namespaces only, elsewhere a step "
        "names Secrets (`argocd.urlSecretRef`, `argocd.tokenSecretRef`).",
    )
    argocd_token: SecretStr | None = Field(
        None,
        description="Argo CD API token for `MCP_ARGOCD_SERVER` (or `MCP_ARGOCD_TOKEN_FILE`); "
        "never sent to a server from a Secret.",
    )
    default_service_account: str = Field(
        "mcp-remediator-runner",
        description="ServiceAccount (of the remediation's own namespace) a step acts as "
        "when neither the runbook nor the remediation names one.",
    )
    trusted_namespaces: list[str] = Field(
        ["mcp"],
        description="Namespaces whose remediations may use the operator-level credentials "
        "and endpoints (Redis URL, Prometheus, Argo CD API, notify webhook, module base "
        "URLs) and whose runbooks match alerts of any namespace (comma-separated); "
        "elsewhere a step names a Secret of its own namespace or fails "
        "`CredentialsNotAllowed`.",
    )
    protected_namespaces: list[str] = Field(
        ["kube-system", "kube-public", "kyverno"],
        description="Namespaces no action may write to (comma-separated).",
    )
    kyverno_namespace: str = Field(
        "kyverno", description="Kyverno's own namespace: its workloads are never touched."
    )
    gitops_policy_path: str = Field(
        "the GitOps repository (policies/kyverno)",
        description="Where Kyverno policy changes belong; quoted in refusals.",
    )
    http_allowed_hosts: list[str] = Field(
        [], description="Hosts (`host` or `host:port`) HTTP actions may call (comma-separated)."
    )
    module_base_urls: dict[str, str] = Field(
        {},
        description="Base URL per MCP module for `/mcp/<module>/health`, as "
        "`finbot=http://finbot:8080,mubot=...`; trusted namespaces only, elsewhere a step "
        "names a Secret (`baseUrlSecretRef`) and these hosts are not allowed hosts.",
    )
    notify_webhook_url: SecretStr | None = Field(
        None,
        description="Slack-compatible webhook (or `MCP_NOTIFY_WEBHOOK_URL_FILE`); trusted "
        "namespaces only, elsewhere a step names a Secret (`webhook.urlSecretRef`).",
    )
    patch_allowed_kinds: list[str] = Field(
        ["ConfigMap"], description="Kinds `patchResource` may patch (comma-separated)."
    )
    dry_run: bool = Field(False, description="Global kill switch: record, change nothing.")
    remediation_ttl_seconds: int = Field(
        604_800, description="Default `ttlSecondsAfterFinished` of remediations."
    )
    watch_namespaces: list[str] = Field(
        [], description="Namespaces to watch (comma-separated); empty means all."
    )
    remediation_unresolved_ttl_seconds: int = Field(
        2_592_000,
        ge=0,
        description="How long a finished record of an alert occurrence is kept at most while "
        "its alert has not been seen resolved (re-sends of it stay duplicates meanwhile).",
    )
    peering: str | None = Field(
        None,
        description="No longer used (Kopf peering): replicas elect the one that executes "
        "runs through the Lease `MCP_LEASE_NAME`; setting it is an error.",
    )
    lease_name: str = Field(
        "mcp-remediator",
        min_length=1,
        description="The `coordination.k8s.io` Lease through which replicas elect the one "
        "that executes runs (every replica receives alerts).",
    )
    lease_namespace: str = Field(
        "",
        description="Namespace of the Lease; empty: `POD_NAMESPACE` (the Deployment passes "
        "the pod's), else `mcp-remediator`.",
    )
    lease_duration_seconds: float = Field(
        10.0,
        ge=1.0,
        description="A leader that stops renewing is replaced after this long (it renews "
        "every fifth of it and steps down after two thirds).",
    )
    retry_backoff_seconds: float = Field(
        2.0, description="First retry delay of a failed step; doubles per attempt."
    )
    poll_interval_seconds: float = Field(
        2.0, description="How often waits (rollouts, Argo CD, PromQL) poll."
    )

    @field_validator(
        "redis_allowed_prefixes",
        "protected_namespaces",
        "trusted_namespaces",
        "http_allowed_hosts",
        "patch_allowed_kinds",
        "watch_namespaces",
        mode="before",
    )
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _split(value) if isinstance(value, str) else value

    @field_validator("module_base_urls", mode="before")
    @classmethod
    def _split_mapping(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = [item.split("=", 1) for item in _split(value)]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError("expected module=url pairs separated by commas")
            return {key.strip(): url.strip() for key, url in pairs}
        return value

    @field_validator("redis_allowed_prefixes")
    @classmethod
    def _no_empty_prefix(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one allowed prefix is required")
        return value

    @field_validator(*TOKEN_SETTINGS)
    @classmethod
    def _header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not redact.header_safe(value.get_secret_value()):
            raise ValueError(f"a bearer token {redact.HEADER_SAFE_RULE}")
        return value

    @field_validator("peering")
    @classmethod
    def _no_peering(cls, value: str | None) -> str | None:
        if value:
            raise ValueError(
                "Kopf peering is no longer used: every replica receives alerts and the "
                "replicas elect the one that executes runs through a Lease (MCP_LEASE_NAME, "
                "MCP_LEASE_NAMESPACE); unset MCP_PEERING"
            )
        return None

    def lease_namespace_or_default(self, environ: Mapping[str, str] | None = None) -> str:
        env = os.environ if environ is None else environ
        return self.lease_namespace or env.get("POD_NAMESPACE") or "mcp-remediator"

    def is_trusted(self, namespace: str) -> bool:
        """Whether remediations of ``namespace`` may use operator-level credentials."""
        return namespace in self.trusted_namespaces

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every field from ``MCP_<FIELD>``; secrets also from ``MCP_<FIELD>_FILE``."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        sources: dict[str, str] = {}
        for field in cls.model_fields:
            key = f"MCP_{field.upper()}"
            if field in SECRET_SETTINGS and env.get(f"{key}_FILE"):
                values[field] = Path(env[f"{key}_FILE"]).read_text().strip()
                sources[field] = f"{key}_FILE"
            elif env.get(key, "") != "":
                values[field] = env[key]
                sources[field] = key
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = []
            for error in exc.errors(include_input=False, include_url=False):
                field = str(error["loc"][0]) if error["loc"] else ""
                where = sources.get(field, env_var_name(field) if field else "settings")
                problems.append(f"{where}: {error['msg']}")
            raise SettingsError("; ".join(problems)) from None


def env_var_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return f"MCP_{field.upper()}"
