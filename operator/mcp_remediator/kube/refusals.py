"""The refusal layer: what the operator never writes, whoever asks.

Every write a step makes to the Kubernetes API passes ``check_write`` (the Kubernetes
client calls it before sending), and actions call it at validation time for targets they
can already see, so a bad runbook is marked ``Valid=False`` before any alert uses it.
Redis prefixes and HTTP hosts have their own guards here too.

The operator's own bookkeeping (``is_bookkeeping``: its custom resources, their status
and Events, written with its own identity) is not a step's write: a remediation applied
in a protected namespace must still be finished there as ``Refused``
(``check_run_namespace``), or it would be retried forever.

Kyverno policy changes happen only in Git: any write to Kyverno's API groups, to its
admission webhooks, to workloads in its namespace, or any PolicyException is refused
with ``ManualKyvernoOverrideRefused``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from mcp_remediator import redact
from mcp_remediator.errors import Refused
from mcp_remediator.models import GROUP, REMEDIATIONS, RUNBOOKS
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
# (API group, plural) of what the operator writes for itself: its records and Events.
BOOKKEEPING = frozenset(
    {
        (GROUP, REMEDIATIONS),
        (GROUP, RUNBOOKS),
        ("", "events"),
        ("events.k8s.io", "events"),
        ("coordination.k8s.io", "leases"),  # the executor's election (``kube.lease``)
    }
)


def api_group(api_version: str) -> str:
    """``apps/v1`` → ``apps``; ``v1`` → the core group ``""``."""
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def kyverno_message(settings: Settings, what: str) -> str:
    return (
        f"refused: {what} would override Kyverno by hand; Kyverno policy changes go "
        f"through {settings.gitops_policy_path} and Argo CD, never through the operator"
    )


def is_bookkeeping(api_version: str, resource: str) -> bool:
    """Whether a write is of the operator's own records (McpRemediation, McpRunbook, their
    status), an Event or its election Lease: what the operator writes with its own
    identity."""
    return (api_group(api_version), resource.lower()) in BOOKKEEPING


def check_run_namespace(settings: Settings, namespace: str) -> None:
    """Raise ``Refused`` for a remediation whose own namespace is protected (or Kyverno's):
    its steps would act as an account of that namespace and inherit it as their target,
    so none runs there."""
    if namespace in settings.protected_namespaces or namespace == settings.kyverno_namespace:
        raise Refused(
            PROTECTED_NAMESPACE,
            f"refused: namespace {namespace} is protected (MCP_PROTECTED_NAMESPACES, "
            "MCP_KYVERNO_NAMESPACE): no remediation runs there; create it in the namespace "
            "of the team whose workloads it remediates",
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


def _http_host_port(url: str) -> tuple[str, int] | None:
    """(host, port) of an http(s) URL; ``None`` when it is not one or does not parse."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # a port out of range or not a number, a broken IPv6 address
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    return host.lower(), port or (443 if parts.scheme == "https" else 80)


def check_url(settings: Settings, url: str) -> None:
    """HTTP actions may call only ``MCP_HTTP_ALLOWED_HOSTS`` (and the module base URLs).

    A URL that does not parse (a port out of range, a broken IPv6 address) is refused like
    one of another scheme; messages name the host as ``redact.safe_host`` shows it.
    """
    found = _http_host_port(url)
    if found is None:
        raise Refused(
            HOST_NOT_ALLOWED,
            f"refused: {redact.safe_url(url, 'the URL')} is not a valid http(s) URL (a "
            "scheme http or https, a host, and a port from 0 to 65535 if any)",
        )
    host, port = found
    allowed = {h.lower() for h in settings.http_allowed_hosts}
    for base in settings.module_base_urls.values():
        if (base_found := _http_host_port(base)) is not None:
            allowed.add("{}:{}".format(*base_found))
    if host in allowed or f"{host}:{port}" in allowed:
        return
    shown = redact.safe_host(url, "")
    if shown and ":" not in shown.rpartition("]")[2]:
        shown = f"{shown}:{port}"  # as the allow-list may name it
    raise Refused(
        HOST_NOT_ALLOWED,
        f"refused: host {shown or 'of the URL'} is not in the allowed hosts "
        "(MCP_HTTP_ALLOWED_HOSTS)",
    )
