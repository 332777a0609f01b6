"""The refusal layer: what the operator never writes, whoever asks.

Every write a step makes to the Kubernetes API passes ``check_write`` (the Kubernetes
client calls it before sending), and actions call it at validation time for targets they
can already see, so a bad runbook is marked ``Valid=False`` before any alert uses it.
Redis prefixes and HTTP hosts have their own guards here too.

The operator's own bookkeeping (``is_bookkeeping``: its custom resources, their status
and Events, written with its own identity) is not a step's write: a remediation applied
in a protected namespace must still be finished there as ``Refused``
(``check_run_namespace``), or it would be retried forever.

Kyverno policy changes happen only in Git, and so does Argo CD's own configuration (which
decides how the policies reach the cluster): these writes are refused with
``ManualKyvernoOverrideRefused``, each by the cheapest check that can see it.

* ``check_write``, static, from the request alone (apiVersion, resource, namespace, name):
  every API group ending in ``kyverno.io`` (``kyverno.io``, ``policies.kyverno.io`` with
  Kyverno 1.17's CEL policies, ``reports.kyverno.io``...), ``wgpolicyk8s.io`` and
  ``openreports.io``, in any spelling (``normalise_group``: case, percent-encoding,
  trailing dots and slashes, every segment of a malformed apiVersion); any
  PolicyException; admission objects whose name holds ``kyverno`` (all ``kyverno-*``
  webhook configurations); anything in Kyverno's namespace; ConfigMaps and Secrets of
  ``MCP_ARGOCD_NAMESPACE``.
* ``check_object``, from the object a write action has read (or a create's body): objects
  Kyverno manages (``app.kubernetes.io/managed-by: kyverno``: the ValidatingAdmissionPolicies
  and bindings it generates, generated resources, reports; ``webhook.kyverno.io/managed-by``:
  its webhook configurations), Kyverno's own workloads and ConfigMaps by the labels of its
  Helm chart (``app.kubernetes.io/part-of`` / ``app.kubernetes.io/name`` naming kyverno),
  wherever it is installed; Argo CD's ConfigMaps and Secrets by their labels.
* ``kube.policy_inputs``: ConfigMaps that a Kyverno policy reads (``context.configMap``,
  ``apiCall``, CEL ``resource.get``), from the policies listed with the operator's identity.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

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

# A group is Kyverno's when it ends in one of these (after ``normalise_group``): every
# ``*kyverno.io`` group, the policy-report WG's and OpenReports' (where reports may live).
KYVERNO_GROUP_SUFFIXES = ("kyverno.io", "wgpolicyk8s.io", "openreports.io")
# The groups Kyverno serves today (examples of the rule above, which also covers new ones).
KYVERNO_GROUPS = frozenset(
    {
        "kyverno.io",
        "policies.kyverno.io",
        "reports.kyverno.io",
        "wgpolicyk8s.io",
        "openreports.io",
    }
)
WEBHOOK_GROUP = "admissionregistration.k8s.io"
# PolicyException (kyverno.io, policies.kyverno.io), CELPolicyException, in any group.
POLICY_EXCEPTION = "policyexception"
CONFIG_RESOURCES = frozenset({"configmap", "configmaps"})
ARGOCD_CONFIG_RESOURCES = CONFIG_RESOURCES | {"secret", "secrets"}
# Labels (Kyverno's api/kyverno/constants.go and its Helm chart's _labels.tpl).
MANAGED_BY = "app.kubernetes.io/managed-by"  # "kyverno" on what Kyverno itself creates
WEBHOOK_MANAGED_BY = "webhook.kyverno.io/managed-by"  # on Kyverno's webhook configurations
PART_OF = "app.kubernetes.io/part-of"  # the chart's fullname: "kyverno", "<release>-kyverno"
APP_NAME = "app.kubernetes.io/name"  # "kyverno-admission-controller", ...
ARGOCD_SECRET_TYPE = "argocd.argoproj.io/secret-type"  # repository, cluster credentials
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


def normalise_group(group: str) -> str:
    """An API group as the refusal layer compares it: percent-decoded, lower-case, without
    blanks or trailing dots and slashes (``Kyverno.io./`` → ``kyverno.io``), so that no
    spelling a client might send or a server might route is a way past it."""
    return re.sub(r"[\s./]+$", "", unquote(group).strip().lower()).lstrip("/ ")


def api_groups(api_version: str) -> list[str]:
    """Every segment of ``api_version``, normalised: its group and version, and for a
    malformed one (``apps/../kyverno.io/v1``, ``kyverno.io//v1``) every part a request path
    could end up naming."""
    return [part for part in (normalise_group(p) for p in unquote(api_version).split("/")) if part]


def is_kyverno_group(group: str) -> bool:
    """Whether ``group`` (any spelling) is one of Kyverno's: it ends in ``kyverno.io``,
    ``wgpolicyk8s.io`` or ``openreports.io``."""
    return normalise_group(group).endswith(KYVERNO_GROUP_SUFFIXES)


def normalise_resource(resource: str) -> str:
    """A plural or kind as compared here: ``ConfigMaps.`` → ``configmaps``."""
    return normalise_group(resource)


def kyverno_message(settings: Settings, what: str) -> str:
    return (
        f"refused: {what} would override Kyverno by hand; Kyverno policy changes go "
        f"through {settings.gitops_policy_path} and Argo CD, never through the operator"
    )


def argocd_message(settings: Settings, what: str) -> str:
    return (
        f"refused: {what} would change Argo CD's own configuration by hand (what it syncs, "
        f"ignores and who may do it: the path of Kyverno's policies from Git, "
        f"{settings.gitops_policy_path}, to the cluster); it changes through Git, never "
        "through the operator"
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
    groups = api_groups(api_version)
    resource_lc = normalise_resource(resource)
    namespace_lc = normalise_group(namespace or "")
    target = f"{resource}/{name}" if name else resource
    if namespace:
        target = f"{target} in namespace {namespace}"
    kyverno = next((g for g in groups if is_kyverno_group(g)), None)
    if kyverno is not None or POLICY_EXCEPTION in resource_lc:
        shown = f"{kyverno}/{target}" if kyverno else target
        raise Refused(KYVERNO, kyverno_message(settings, f"writing {shown}"))
    if WEBHOOK_GROUP in groups and "kyverno" in normalise_group(name or ""):
        raise Refused(KYVERNO, kyverno_message(settings, f"changing webhook {target}"))
    if (
        namespace_lc
        and namespace_lc == normalise_group(settings.argocd_namespace)
        and resource_lc in ARGOCD_CONFIG_RESOURCES
    ):
        raise Refused(KYVERNO, argocd_message(settings, f"writing {target}"))
    if namespace_lc and namespace_lc == normalise_group(settings.kyverno_namespace):
        raise Refused(KYVERNO, kyverno_message(settings, f"changing {target}"))
    if namespace and namespace in settings.protected_namespaces:
        raise Refused(
            PROTECTED_NAMESPACE,
            f"refused: namespace {namespace} is protected (MCP_PROTECTED_NAMESPACES); "
            f"not writing {target}",
        )


def check_object(
    settings: Settings, *, api_version: str, resource: str, obj: Mapping[str, Any]
) -> None:
    """Raise ``Refused`` when the object, as read (or a create's body), is Kyverno's or Argo
    CD's configuration by its labels, wherever it lives; ``check_write`` has run first.

    Kyverno marks what it creates itself ``app.kubernetes.io/managed-by: kyverno`` (the
    ValidatingAdmissionPolicies and bindings generated from its policies, generated
    resources, reports) and its webhook configurations ``webhook.kyverno.io/managed-by``;
    its Helm chart labels its Deployments, ConfigMaps and the rest
    ``app.kubernetes.io/part-of: <fullname>`` (``kyverno``, or ``<release>-kyverno``) and
    ``app.kubernetes.io/name: kyverno-<component>``. Argo CD labels its ConfigMaps and
    Secrets ``app.kubernetes.io/part-of: argocd``, its repository and cluster credentials
    ``argocd.argoproj.io/secret-type``.
    """
    meta = obj.get("metadata") or {}
    labels = {
        str(key).strip().lower(): str(value).strip().lower()
        for key, value in (meta.get("labels") or {}).items()
    }
    name = meta.get("name") or meta.get("generateName") or "?"
    namespace = meta.get("namespace")
    target = f"{resource}/{name}" + (f" in namespace {namespace}" if namespace else "")
    if labels.get(MANAGED_BY) == "kyverno":
        what = f"changing {target}, which Kyverno manages ({MANAGED_BY}: kyverno),"
        raise Refused(KYVERNO, kyverno_message(settings, what))
    if WEBHOOK_MANAGED_BY in labels:
        what = f"changing {target}, a webhook configuration of Kyverno ({WEBHOOK_MANAGED_BY}),"
        raise Refused(KYVERNO, kyverno_message(settings, what))
    for key in (PART_OF, APP_NAME):
        if "kyverno" in labels.get(key, ""):
            what = f"changing {target}, part of Kyverno ({key}: {labels[key]}),"
            raise Refused(KYVERNO, kyverno_message(settings, what))
    if normalise_resource(resource) in ARGOCD_CONFIG_RESOURCES and (
        labels.get(PART_OF) == "argocd" or ARGOCD_SECRET_TYPE in labels
    ):
        raise Refused(KYVERNO, argocd_message(settings, f"writing {target}"))


def is_config_map(resource: str) -> bool:
    """Whether a write is of a ConfigMap, in any spelling (and, failing closed, any group)."""
    return normalise_resource(resource) in CONFIG_RESOURCES


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
