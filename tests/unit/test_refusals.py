"""The refusal layer: Kyverno, Argo CD's configuration, protected namespaces, Redis
prefixes, HTTP hosts."""

from collections.abc import Callable
from typing import Any

import pytest

from mcp_remediator.errors import Refused
from mcp_remediator.kube import refusals
from mcp_remediator.settings import Settings

SETTINGS = Settings(
    http_allowed_hosts=["health.local", "127.0.0.1:9000"],
    module_base_urls={"finbot": "http://finbot.mcp:8080"},
)


@pytest.mark.parametrize(
    ("api_version", "resource", "namespace", "name"),
    [
        ("kyverno.io/v1", "clusterpolicies", None, "require-labels"),
        ("kyverno.io/v2", "policyexceptions", "mcp", "allow-me"),
        ("wgpolicyk8s.io/v1alpha2", "policyreports", "mcp", "r"),
        ("admissionregistration.k8s.io/v1", "validatingwebhookconfigurations", None,
         "kyverno-resource-validating-webhook-cfg"),
        ("apps/v1", "deployments", "kyverno", "kyverno-admission-controller"),
        ("v1", "PolicyException", "mcp", "x"),
    ],
)  # fmt: skip
def test_kyverno_writes_are_refused_pointing_to_git(
    api_version: str, resource: str, namespace: str | None, name: str
) -> None:
    with pytest.raises(Refused) as caught:
        refusals.check_write(
            SETTINGS, api_version=api_version, resource=resource, namespace=namespace, name=name
        )
    assert caught.value.reason == "ManualKyvernoOverrideRefused"
    assert "GitOps" in caught.value.message


# Every Kyverno kind (group, version, plural, namespace): Kyverno 1.17's classic and CEL
# policies, exceptions, cleanup policies, global context entries, update requests, its
# ephemeral reports, and the reports of the policy-report WG and of OpenReports.
KYVERNO_KINDS: list[tuple[str, str, str, str | None]] = [
    ("kyverno.io", "v1", "clusterpolicies", None),
    ("kyverno.io", "v1", "policies", "mcp"),
    ("kyverno.io", "v2", "policyexceptions", "mcp"),
    ("kyverno.io", "v2", "cleanuppolicies", "mcp"),
    ("kyverno.io", "v2", "clustercleanuppolicies", None),
    ("kyverno.io", "v2alpha1", "globalcontextentries", None),
    ("kyverno.io", "v2", "updaterequests", "mcp"),
    # Kyverno 1.17's CEL policies, written out here rather than taken from the code.
    *(
        ("policies.kyverno.io", "v1", f"{prefix}{kind}policies", "mcp" if prefix else None)
        for kind in ("validating", "imagevalidating", "mutating", "generating", "deleting")
        for prefix in ("", "namespaced")
    ),
    ("policies.kyverno.io", "v1", "policyexceptions", "mcp"),
    ("reports.kyverno.io", "v1", "ephemeralreports", "mcp"),
    ("reports.kyverno.io", "v1", "clusterephemeralreports", None),
    ("wgpolicyk8s.io", "v1alpha2", "policyreports", "mcp"),
    ("wgpolicyk8s.io", "v1alpha2", "clusterpolicyreports", None),
    ("openreports.io", "v1alpha1", "reports", "mcp"),
    ("openreports.io", "v1alpha1", "clusterreports", None),
]
# The ways a group may be spelled in an apiVersion: a server or a proxy may route some
# of them; none may slip past the refusal.
SPELLINGS: dict[str, Callable[[str, str], str]] = {
    "as-is": lambda group, version: f"{group}/{version}",
    "capitalised": lambda group, version: f"{group.capitalize()}/{version}",
    "upper-case": lambda group, version: f"{group.upper()}/{version.upper()}",
    "trailing-dot": lambda group, version: f"{group}./{version}",
    "trailing-slash": lambda group, version: f"{group}//{version}",
    "trailing-slashes-everywhere": lambda group, version: f"{group}/{version}/",
    "dots-and-slashes": lambda group, version: f"{group.title()}.././{version}",
    "percent-encoded": lambda group, version: f"{group.replace('.', '%2E')}/{version}",
    "blanks": lambda group, version: f" {group} /{version}",
    "no-version": lambda group, version: group,
    "path-segments": lambda group, version: f"apps/../{group}/{version}",
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize(
    ("group", "version", "plural", "namespace"),
    KYVERNO_KINDS,
    ids=[f"{group}:{plural}" for group, _, plural, _ in KYVERNO_KINDS],
)
def test_every_kyverno_kind_in_every_spelling_is_refused(
    group: str, version: str, plural: str, namespace: str | None, spelling: str
) -> None:
    api_version = SPELLINGS[spelling](group, version)
    for resource in (plural, plural.upper(), f"{plural}."):
        with pytest.raises(Refused) as caught:
            refusals.check_write(
                SETTINGS,
                api_version=api_version,
                resource=resource,
                namespace=namespace,
                name="x",
            )
        assert caught.value.reason == refusals.KYVERNO
        assert "through the GitOps repository (policies/kyverno)" in caught.value.message
        assert f"{group}/{resource}/x" in caught.value.message


@pytest.mark.parametrize("group", sorted(refusals.KYVERNO_GROUPS))
def test_every_group_ending_in_a_kyverno_suffix_is_kyverno(group: str) -> None:
    for spelled in (group, group.upper(), f"{group}.", f"{group}/", f"{group}./", "x." + group):
        assert refusals.is_kyverno_group(spelled), spelled
    for other in ("apps", "", "argoproj.io", "mcp.dese.ai", "kyverno.io.evil.com"):
        assert not refusals.is_kyverno_group(other), other


# Kyverno's pkg/config/config.go; CEL policies are webhooks inside the resource ones.
KYVERNO_WEBHOOKS = [
    "kyverno-policy-validating-webhook-cfg",
    "kyverno-resource-validating-webhook-cfg",
    "kyverno-exception-validating-webhook-cfg",
    "kyverno-cel-exception-validating-webhook-cfg",
    "kyverno-global-context-validating-webhook-cfg",
    "kyverno-cleanup-validating-webhook-cfg",
    "kyverno-ttl-validating-webhook-cfg",
    "kyverno-policy-mutating-webhook-cfg",
    "kyverno-resource-mutating-webhook-cfg",
    "kyverno-verify-mutating-webhook-cfg",
]


@pytest.mark.parametrize("name", KYVERNO_WEBHOOKS)
@pytest.mark.parametrize(
    "api_version",
    [
        "admissionregistration.k8s.io/v1",
        "Admissionregistration.K8s.io./v1",
        "admissionregistration.k8s.io/v1/",
    ],
)
def test_kyverno_webhook_configurations_are_refused(name: str, api_version: str) -> None:
    for plural in ("validatingwebhookconfigurations", "MutatingWebhookConfiguration"):
        with pytest.raises(Refused) as caught:
            refusals.check_write(
                SETTINGS, api_version=api_version, resource=plural, namespace=None, name=name
            )
        assert caught.value.reason == refusals.KYVERNO
        assert f"changing webhook {plural}/{name}" in caught.value.message


@pytest.mark.parametrize(
    ("resource", "name"),
    [
        ("configmaps", "argocd-cm"),
        ("configmaps", "argocd-rbac-cm"),
        ("ConfigMap", "argocd-cmd-params-cm"),
        ("secrets", "argocd-secret"),
        ("Secret", "repo-platform-gitops"),
    ],
)
def test_argo_cd_configuration_is_refused_pointing_to_git(resource: str, name: str) -> None:
    with pytest.raises(Refused) as caught:
        refusals.check_write(
            SETTINGS, api_version="v1", resource=resource, namespace="argocd", name=name
        )
    assert caught.value.reason == refusals.KYVERNO
    assert f"writing {resource}/{name} in namespace argocd" in caught.value.message
    assert "Argo CD's own configuration" in caught.value.message
    assert "through Git" in caught.value.message
    # MCP_ARGOCD_NAMESPACE says where Argo CD lives.
    elsewhere = Settings(argocd_namespace="gitops")
    refusals.check_write(
        elsewhere, api_version="v1", resource=resource, namespace="argocd", name=name
    )
    with pytest.raises(Refused):
        refusals.check_write(
            elsewhere, api_version="v1", resource=resource, namespace="gitops", name=name
        )


def labelled(
    api_version: str, kind: str, name: str, namespace: str | None, labels: dict[str, str]
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


KYVERNO_MANAGED = {"app.kubernetes.io/managed-by": "kyverno"}
ADMISSION = "admissionregistration.k8s.io/v1"
# Kyverno's Helm chart: part-of is the chart's fullname ("kyverno", or "<release>-kyverno").
CHART = {"app.kubernetes.io/part-of": "kyverno", "app.kubernetes.io/instance": "kyverno"}

# Refused by their labels alone, wherever they live.
BY_LABELS: dict[str, tuple[str, dict[str, Any]]] = {
    "generated-vap": ("validatingadmissionpolicies", labelled(
        ADMISSION, "ValidatingAdmissionPolicy", "cpol-require-labels", None, KYVERNO_MANAGED)),
    "generated-vap-binding": ("validatingadmissionpolicybindings", labelled(
        ADMISSION, "ValidatingAdmissionPolicyBinding", "cpol-require-labels-binding", None,
        KYVERNO_MANAGED)),
    "generated-map": ("mutatingadmissionpolicies", labelled(
        "admissionregistration.k8s.io/v1beta1", "MutatingAdmissionPolicy", "mpol-add-labels",
        None, KYVERNO_MANAGED)),
    "generated-map-binding": ("mutatingadmissionpolicybindings", labelled(
        "admissionregistration.k8s.io/v1beta1", "MutatingAdmissionPolicyBinding",
        "mpol-add-labels-binding", None, {"App.Kubernetes.io/Managed-By": "Kyverno"})),
    "renamed-webhook": ("validatingwebhookconfigurations", labelled(
        ADMISSION, "ValidatingWebhookConfiguration", "policy-engine-cfg", None,
        {"webhook.kyverno.io/managed-by": "kyverno"})),
    "generated-resource": ("networkpolicies", labelled(
        "networking.k8s.io/v1", "NetworkPolicy", "default-deny", "team-a", KYVERNO_MANAGED)),
    "admission-controller": ("deployments", labelled(
        "apps/v1", "Deployment", "kyverno-admission-controller", "security",
        {**CHART, "app.kubernetes.io/component": "admission-controller",
         "app.kubernetes.io/name": "kyverno-admission-controller"})),
    "renamed-release": ("deployments", labelled(
        "apps/v1", "Deployment", "policy-reports-controller", "policy",
        {"app.kubernetes.io/part-of": "policy-kyverno",
         "app.kubernetes.io/component": "reports-controller"})),
    "name-label-only": ("statefulsets", labelled(
        "apps/v1", "StatefulSet", "cleanup", "policy",
        {"app.kubernetes.io/name": "kyverno-cleanup-controller"})),
    "config": ("configmaps", labelled(
        "v1", "ConfigMap", "kyverno", "security",
        {**CHART, "app.kubernetes.io/component": "config"})),
    "metrics-config": ("ConfigMap", labelled(
        "v1", "ConfigMap", "kyverno-metrics", "security", CHART)),
    "argocd-config-elsewhere": ("configmaps", labelled(
        "v1", "ConfigMap", "argocd-cm", "gitops", {"app.kubernetes.io/part-of": "argocd"})),
    "argocd-repository": ("secrets", labelled(
        "v1", "Secret", "repo-platform", "gitops",
        {"argocd.argoproj.io/secret-type": "repository"})),
}  # fmt: skip

# Not Kyverno's or Argo CD's configuration: allowed (their owners' RBAC decides).
ORDINARY: dict[str, tuple[str, dict[str, Any]]] = {
    "dese-api-config": ("configmaps", labelled(
        "v1", "ConfigMap", "dese-api-config", "mcp", {"app.kubernetes.io/instance": "dese-api"})),
    "helm-managed": ("deployments", labelled(
        "apps/v1", "Deployment", "dese-api", "mcp",
        {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/part-of": "mcp"})),
    "argocd-workload": ("deployments", labelled(
        "apps/v1", "Deployment", "argocd-repo-server", "argocd",
        {"app.kubernetes.io/part-of": "argocd"})),
    "unlabelled-vap": ("validatingadmissionpolicies", labelled(
        ADMISSION, "ValidatingAdmissionPolicy", "team-limits", None, {})),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BY_LABELS))
def test_kyverno_and_argo_cd_objects_are_refused_by_their_labels(case: str) -> None:
    resource, obj = BY_LABELS[case]
    api_version, meta = obj["apiVersion"], obj["metadata"]
    # Nothing in the request names Kyverno: only the object does.
    refusals.check_write(
        SETTINGS,
        api_version=api_version,
        resource=resource,
        namespace=meta.get("namespace"),
        name=meta["name"],
    )
    with pytest.raises(Refused) as caught:
        refusals.check_object(SETTINGS, api_version=api_version, resource=resource, obj=obj)
    assert caught.value.reason == refusals.KYVERNO
    assert f"{resource}/{meta['name']}" in caught.value.message
    assert "GitOps repository" in caught.value.message or "through Git" in caught.value.message


@pytest.mark.parametrize("case", sorted(ORDINARY))
def test_ordinary_objects_are_allowed(case: str) -> None:
    resource, obj = ORDINARY[case]
    api_version, meta = obj["apiVersion"], obj["metadata"]
    namespace, name = meta.get("namespace"), meta["name"]
    refusals.check_write(
        SETTINGS, api_version=api_version, resource=resource, namespace=namespace, name=name
    )
    refusals.check_object(SETTINGS, api_version=api_version, resource=resource, obj=obj)


def test_argo_cd_applications_stay_writable_here() -> None:
    # argocdSync writes Applications in MCP_ARGOCD_NAMESPACE: not Argo CD's configuration.
    refusals.check_write(
        SETTINGS,
        api_version="argoproj.io/v1alpha1",
        resource="applications",
        namespace="argocd",
        name="dese-api",
    )


def test_protected_namespace_is_refused_and_ordinary_one_allowed() -> None:
    with pytest.raises(Refused) as caught:
        refusals.check_write(
            SETTINGS, api_version="apps/v1", resource="deployments", namespace="kube-system"
        )
    assert caught.value.reason == "ProtectedNamespace"
    refusals.check_write(SETTINGS, api_version="apps/v1", resource="deployments", namespace="mcp")


def test_redis_pattern_must_begin_with_an_allowed_prefix() -> None:
    refusals.check_redis_pattern(SETTINGS, "mcp:dashboard:*")
    for pattern in ("*", "session:*", "mc*", "?cp:x"):
        with pytest.raises(Refused) as caught:
            refusals.check_redis_pattern(SETTINGS, pattern)
        assert caught.value.reason == "RedisPrefixNotAllowed"


def test_urls_only_to_allowed_hosts_and_module_bases() -> None:
    refusals.check_url(SETTINGS, "http://health.local/x")
    refusals.check_url(SETTINGS, "http://127.0.0.1:9000/mcp/finbot/health")
    refusals.check_url(SETTINGS, "http://finbot.mcp:8080/mcp/finbot/health")
    for url in (
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:9001/",
        "file:///etc/passwd",
        "http://health.local.evil.com/",
    ):
        with pytest.raises(Refused):
            refusals.check_url(SETTINGS, url)
