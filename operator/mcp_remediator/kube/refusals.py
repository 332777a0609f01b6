"""The refusal layer: what the operator never writes, whoever asks.

Every write the operator makes to the Kubernetes API passes ``check_write`` (the
Kubernetes client calls it before sending), and actions call it at validation time for
targets they can already see, so a bad runbook is marked ``Valid=False`` before any alert
uses it. Redis prefixes and HTTP hosts have their own guards here too.

Kyverno policy changes happen only in Git: any write to Kyverno's API groups, to its
admission webhooks, to workloads in its namespace, or any PolicyException is refused
with ``ManualKyvernoOverrideRefused``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from mcp_remediator.errors import Refused
from mcp_remediator.settings import Settings

KYVERNO = "ManualKyvernoOverrideRefused"
PROTECTED_NAMESPACE = "ProtectedNamespace"
PREFIX_NOT_ALLOWED = "RedisPrefixNotAllowed"
HOST_NOT_ALLOWED = "HostNotAllowed"
KIND_NOT_ALLOWED = "KindNotAllowed"
GITOPS_MANAGED = "GitOpsManaged"

KYVERNO_GROUPS = frozenset(
    {"kyverno.io", "wgpolicyk8s.io", "reports.kyverno.io", "policies.kyverno.io"}
)
WEBHOOK_GROUP = "admissionregistration.k8s.io"
POLICY_EXCEPTION_KINDS = frozenset({"policyexception", "policyexceptions"})


def api_group(api_version: str) -> str:
    """``apps/v1`` → ``apps``; ``v1`` → the core group ``""``."""
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def kyverno_message(settings: Settings, what: str) -> str:
    return (
        f"refused: {what} would override Kyverno by hand; Kyverno policy changes go "
        f"through {settings.gitops_policy_path} and Argo CD, never through the operator"
    )


def check_write(
    settings: Settings,
    *,
    api_version: str,
    resource: str,
    namespace: str | None,
    name: str | None = None,
) -> None:
    """Raise ``Refused`` when a write to this object must not happen.

    ``resource`` is the plural (``deployments``) or the kind (``Deployment``); both are
    recognised, case-insensitively.
    """
    group = api_group(api_version)
    resource_lc = resource.lower()
    target = f"{resource}/{name}" if name else resource
    if namespace:
        target = f"{target} in namespace {namespace}"
    if group in KYVERNO_GROUPS or resource_lc in POLICY_EXCEPTION_KINDS:
        raise Refused(KYVERNO, kyverno_message(settings, f"writing {group}/{target}"))
    if group == WEBHOOK_GROUP and "kyverno" in (name or "").lower():
        raise Refused(KYVERNO, kyverno_message(settings, f"changing webhook {target}"))
    if namespace and namespace == settings.kyverno_namespace:
        raise Refused(KYVERNO, kyverno_message(settings, f"changing {target}"))
    if namespace and namespace in settings.protected_namespaces:
        raise Refused(
            PROTECTED_NAMESPACE,
            f"refused: namespace {namespace} is protected (MCP_PROTECTED_NAMESPACES); "
            f"not writing {target}",
        )


def check_redis_pattern(settings: Settings, pattern: str) -> None:
    """Redis key patterns must start with an allowed prefix, literally (no glob in it)."""
    for prefix in settings.redis_allowed_prefixes:
        if pattern.startswith(prefix) and not any(c in prefix for c in "*?[\\"):
            return
    allowed = ", ".join(repr(p) for p in settings.redis_allowed_prefixes)
    raise Refused(
        PREFIX_NOT_ALLOWED,
        f"refused: Redis pattern {pattern!r} does not begin with an allowed prefix ({allowed}; "
        "MCP_REDIS_ALLOWED_PREFIXES)",
    )


def check_url(settings: Settings, url: str) -> None:
    """HTTP actions may call only ``MCP_HTTP_ALLOWED_HOSTS`` (and the module base URLs)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(HOST_NOT_ALLOWED, f"refused: {url!r} is not an http(s) URL")
    host = parts.hostname.lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    allowed = {h.lower() for h in settings.http_allowed_hosts}
    for base in settings.module_base_urls.values():
        base_parts = urlsplit(base)
        if base_parts.hostname:
            base_port = base_parts.port or (443 if base_parts.scheme == "https" else 80)
            allowed.add(f"{base_parts.hostname.lower()}:{base_port}")
    if host in allowed or f"{host}:{port}" in allowed:
        return
    raise Refused(
        HOST_NOT_ALLOWED,
        f"refused: host {host}:{port} is not in the allowed hosts (MCP_HTTP_ALLOWED_HOSTS)",
    )
