"""``actions/credentials``: operator-level credentials for trusted namespaces only, Secrets
of the remediation's own namespace elsewhere.

The Kubernetes API is ``KubeApi`` over an ``httpx.MockTransport`` that records every
request; nothing else is contacted by the helper.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from fixtures.stub_api import stub_apis
from mcp_remediator.actions import ActionContext
from mcp_remediator.actions.credentials import (
    CREDENTIALS_NOT_ALLOWED,
    OperatorEndpoint,
    SecretKeyRef,
    check_url,
    endpoint,
    read_secret,
)
from mcp_remediator.clients import Clients
from mcp_remediator.errors import Refused, StepFailed
from mcp_remediator.kube.client import ConnectionConfig, KubeApi
from mcp_remediator.kube.refusals import HOST_NOT_ALLOWED
from mcp_remediator.settings import Settings

PROMETHEUS = OperatorEndpoint(
    "the operator-level Prometheus",
    "MCP_PROMETHEUS_URL",
    "http://prometheus.mcp:9090",
    "MCP_PROMETHEUS_TOKEN",
    SecretStr("operator-token"),
)


def encoded(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


class Api:
    """Answers GETs of Secrets from ``secrets`` (``(namespace, name) -> data``)."""

    def __init__(self, secrets: dict[tuple[str, str], dict[str, str]] | None = None):
        self.secrets = secrets or {}
        self.requests: list[str] = []
        self.answer: tuple[int, dict[str, Any]] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        if self.answer is not None:
            return httpx.Response(self.answer[0], json=self.answer[1])
        parts = request.url.path.split("/")  # /api/v1/namespaces/<ns>/secrets/<name>
        data = self.secrets.get((parts[4], parts[6]))
        if data is None:
            return httpx.Response(404, json={"kind": "Status", "reason": "NotFound", "code": 404})
        return httpx.Response(200, json={"kind": "Secret", "data": data})


ContextFactory = Callable[..., ActionContext]


@pytest.fixture
async def make_ctx() -> AsyncIterator[ContextFactory]:
    made: list[Clients] = []
    async with stub_apis() as apis:

        def make(api: Api, remediation: str = "team-a/x", **settings: Any) -> ActionContext:
            values = Settings(**settings)
            kube = KubeApi(ConnectionConfig(server=apis.add(api)), values)
            clients = Clients(values, kube, httpx.AsyncClient())
            made.append(clients)
            return ActionContext(
                clients=clients,
                settings=values,
                namespace="target-from-alert",
                dry_run=False,
                remediation=remediation,
                step="s",
            )

        yield make
        for clients in made:
            await clients.aclose()


async def test_an_untrusted_namespace_without_a_secret_fails_before_any_request(
    make_ctx: ContextFactory,
) -> None:
    api = Api()
    ctx = make_ctx(api)

    with pytest.raises(StepFailed) as caught:
        await endpoint(ctx, PROMETHEUS, url_ref=None, url_param="prometheus.urlSecretRef")

    assert caught.value.reason == CREDENTIALS_NOT_ALLOWED
    assert not caught.value.transient
    assert caught.value.message == (
        "the operator-level Prometheus (MCP_PROMETHEUS_URL, MCP_PROMETHEUS_TOKEN) is for "
        "trusted namespaces only (MCP_TRUSTED_NAMESPACES) and team-a is not one: name a "
        "Secret of namespace team-a in prometheus.urlSecretRef, or add team-a to "
        "MCP_TRUSTED_NAMESPACES"
    )
    assert "\n" not in caught.value.message and "operator-token" not in caught.value.message
    assert api.requests == []


async def test_a_trusted_namespace_uses_the_operator_level_settings(
    make_ctx: ContextFactory,
) -> None:
    api = Api()
    for remediation, trusted in (("mcp/x", ["mcp"]), ("ops/x", ["mcp", "ops"])):
        ctx = make_ctx(api, remediation, trusted_namespaces=trusted)

        found = await endpoint(ctx, PROMETHEUS, url_ref=None, url_param="p")

        assert found.operator_level
        assert found.url is not None and found.token is not None
        assert (found.url.source, found.url.value.get_secret_value()) == (
            "MCP_PROMETHEUS_URL",
            "http://prometheus.mcp:9090",
        )
        assert (found.token.source, found.token.value.get_secret_value()) == (
            "MCP_PROMETHEUS_TOKEN",
            "operator-token",
        )
    unset = await endpoint(
        make_ctx(api, "mcp/x"),
        OperatorEndpoint("the operator-level Redis", "MCP_REDIS_URL", None),
        url_ref=None,
        url_param="redis.urlSecretRef",
    )
    assert unset.url is None  # the action says what to configure
    assert api.requests == []


@pytest.mark.parametrize("remediation", ["team-a/x", "mcp/x"])
async def test_a_secret_of_the_own_namespace_never_mixes_with_the_operators_token(
    make_ctx: ContextFactory, remediation: str
) -> None:
    namespace = remediation.split("/")[0]
    api = Api({(namespace, "prom"): {"url": encoded("http://prom.team-a:9090\n")}})
    ctx = make_ctx(api, remediation)
    ref = SecretKeyRef(name="prom", key="url")

    found = await endpoint(ctx, PROMETHEUS, url_ref=ref, url_param="prometheus.urlSecretRef")

    assert not found.operator_level
    assert found.url is not None
    assert found.url.value.get_secret_value() == "http://prom.team-a:9090"
    assert found.url.source == f"Secret {namespace}/prom key 'url'"
    assert found.token is None  # never the operator's token, even in a trusted namespace
    assert api.requests == [f"GET /api/v1/namespaces/{namespace}/secrets/prom"]

    api.secrets[namespace, "prom"]["token"] = encoded("team-token")
    with_token = await endpoint(
        ctx,
        PROMETHEUS,
        url_ref=ref,
        url_param="prometheus.urlSecretRef",
        token_ref=SecretKeyRef(name="prom", key="token"),
        token_param="prometheus.tokenSecretRef",
    )
    assert with_token.token is not None
    assert with_token.token.value.get_secret_value() == "team-token"


async def test_secrets_are_read_from_the_remediations_namespace_only(
    make_ctx: ContextFactory,
) -> None:
    # The target namespace (from an alert) holds a Secret of that name: it is not read.
    api = Api({("target-from-alert", "prom"): {"url": encoded("http://evil")}})
    ctx = make_ctx(api)

    with pytest.raises(StepFailed) as caught:
        await read_secret(ctx, SecretKeyRef(name="prom", key="url"), "prometheus.urlSecretRef")

    assert caught.value.reason == "SecretNotFound"
    assert caught.value.message == "Secret team-a/prom (prometheus.urlSecretRef) not found"
    assert api.requests == ["GET /api/v1/namespaces/team-a/secrets/prom"]


@pytest.mark.parametrize(
    ("status", "body", "reason", "transient"),
    [
        (200, {"data": {"url": encoded("  ")}}, "SecretUnreadable", False),
        (200, {"data": {"url": "@@not base64@@"}}, "SecretUnreadable", False),
        (200, {"data": {}}, "SecretNotFound", False),
        (200, {}, "SecretNotFound", False),
        (404, {"reason": "NotFound", "message": "secrets not found"}, "SecretNotFound", False),
        (403, {"reason": "Forbidden", "message": "cannot get secrets"}, "Forbidden", False),
        (503, {"reason": "ServiceUnavailable", "message": "etcd"}, "StepFailed", True),
    ],
)
async def test_secret_failures_name_the_secret_never_a_value(
    make_ctx: ContextFactory,
    status: int,
    body: dict[str, Any],
    reason: str,
    transient: bool,
) -> None:
    api = Api()
    api.answer = (status, body)

    with pytest.raises(StepFailed) as caught:
        await read_secret(make_ctx(api), SecretKeyRef(name="hook", key="url"), "webhook")

    assert (caught.value.reason, caught.value.transient) == (reason, transient)
    assert "Secret team-a/hook" in caught.value.message


async def test_the_failure_reasons_of_secrets_can_be_the_actions_own(
    make_ctx: ContextFactory,
) -> None:
    api = Api()
    with pytest.raises(StepFailed) as caught:
        await endpoint(
            make_ctx(api),
            PROMETHEUS,
            url_ref=SecretKeyRef(name="absent", key="url"),
            url_param="redis.urlSecretRef",
            not_found="RedisSecretNotFound",
        )
    assert caught.value.reason == "RedisSecretNotFound"


async def test_module_base_url_hosts_are_allowed_hosts_of_trusted_namespaces_only(
    make_ctx: ContextFactory,
) -> None:
    settings: dict[str, Any] = {
        "module_base_urls": {"finbot": "http://finbot.mcp:8080"},
        "http_allowed_hosts": ["status.example"],
    }
    trusted, untrusted = make_ctx(Api(), "mcp/x", **settings), make_ctx(Api(), **settings)

    check_url(trusted, "http://finbot.mcp:8080/mcp/finbot/health")
    check_url(untrusted, "http://status.example/health")
    with pytest.raises(StepFailed) as caught:
        check_url(untrusted, "http://finbot.mcp:8080/mcp/finbot/health")
    assert caught.value.reason == CREDENTIALS_NOT_ALLOWED
    assert caught.value.message.startswith(
        "host finbot.mcp:8080, allowed as a module base URL (MCP_MODULE_BASE_URLS), is for "
        "trusted namespaces only"
    )
    assert "add the host to MCP_HTTP_ALLOWED_HOSTS, or add team-a to" in caught.value.message
    with pytest.raises(Refused) as refused:
        check_url(untrusted, "http://169.254.169.254/")
    assert refused.value.reason == HOST_NOT_ALLOWED
