"""The refusal layer: Kyverno, protected namespaces, Redis prefixes, HTTP hosts."""

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
