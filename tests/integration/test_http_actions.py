"""``httpHealthCheck``, ``httpRequest`` and ``notify`` against local HTTP servers; the
allowed-hosts guard (SSRF), the secrecy of the webhook URL, and the module base URLs and
webhook of the operator for trusted namespaces only (Secrets in the emulated cluster
elsewhere)."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
from pydantic import ValidationError

from fixtures.actions import ActionsEnvFactory
from fixtures.cluster import Cluster
from fixtures.http_mock import HttpMock
from mcp_remediator.actions import REGISTRY
from mcp_remediator.errors import Refused, StepFailed
from mcp_remediator.kube.refusals import HOST_NOT_ALLOWED
from mcp_remediator.models import Step
from mcp_remediator.runbook.validation import check_steps
from mcp_remediator.settings import Settings


async def test_module_health_uses_the_modules_base_url(
    http_mock: HttpMock, actions_env: ActionsEnvFactory
) -> None:
    http_mock.on("GET", "/mcp/finbot/health", (200, {"status": "ok"}))
    env = await actions_env(module_base_urls={"finbot": f"{http_mock.url}/"})

    result = await env.run("httpHealthCheck", {"module": "finbot"})

    assert result.outputs["status"] == "200"
    assert result.outputs["health"] == "ok"
    assert result.outputs["url"] == f"{http_mock.url}/mcp/finbot/health"
    assert result.message.startswith(f"GET {http_mock.url}/mcp/finbot/health answered 200")
    assert len(http_mock.seen("GET", "/mcp/finbot/health")) == 1


async def test_unhealthy_answers_fail_and_5xx_is_worth_a_retry(
    http_mock: HttpMock, actions_env: ActionsEnvFactory
) -> None:
    http_mock.on("GET", "/mcp/mubot/health", (503, {"status": "degraded"}))
    http_mock.on("GET", "/mcp/aiops/health", (404, "not here"))
    bases = {"mubot": http_mock.url, "aiops": http_mock.url}
    env = await actions_env(module_base_urls=bases)

    with pytest.raises(StepFailed) as unavailable:
        await env.run("httpHealthCheck", {"module": "mubot"})
    assert unavailable.value.reason == "HealthCheckFailed"
    assert unavailable.value.transient
    assert "answered 503 (status 'degraded'), expected 200" in unavailable.value.message

    with pytest.raises(StepFailed) as missing:
        await env.run("httpHealthCheck", {"module": "aiops"})
    assert not missing.value.transient

    accepted = await env.run("httpHealthCheck", {"module": "aiops", "expectStatus": 404})
    assert accepted.outputs["status"] == "404"


async def test_unknown_module_and_unreachable_service(actions_env: ActionsEnvFactory) -> None:
    env = await actions_env(
        module_base_urls={"finbot": "http://127.0.0.1:9"}, http_allowed_hosts=["127.0.0.1"]
    )
    with pytest.raises(StepFailed, match="module mubot has no base URL") as unknown:
        await env.run("httpHealthCheck", {"module": "mubot"})
    assert unknown.value.reason == "UnknownModule"

    with pytest.raises(StepFailed, match="unreachable") as down:
        await env.run("httpHealthCheck", {"module": "finbot"})
    assert down.value.transient


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:6443/api",
        "file:///etc/passwd",
        "http://allowed.example.evil.test/",
    ],
)
async def test_urls_outside_the_allowed_hosts_are_refused_before_any_request(
    http_mock: HttpMock, actions_env: ActionsEnvFactory, url: str
) -> None:
    env = await actions_env(http_allowed_hosts=["allowed.example", http_mock.host])
    for action, params in (
        ("httpHealthCheck", {"url": url}),
        ("httpRequest", {"url": url, "method": "POST", "json": {"x": 1}}),
    ):
        with pytest.raises(Refused) as caught:
            await env.run(action, params)
        assert caught.value.reason == HOST_NOT_ALLOWED
    assert http_mock.requests == []


def test_literal_disallowed_urls_make_the_runbook_invalid() -> None:
    steps = [
        Step(name="probe", action="httpHealthCheck", params={"url": "http://10.0.0.1/health"}),
        Step(name="post", action="httpRequest", params={"url": "http://metadata/x"}),
        Step(name="ok", action="httpHealthCheck", params={"url": "http://finbot:8080/health"}),
    ]
    problems = check_steps(steps, Settings(http_allowed_hosts=["finbot:8080"]))
    assert [p.reason for p in problems] == [HOST_NOT_ALLOWED, HOST_NOT_ALLOWED]


async def test_redirects_are_not_followed_off_the_allowed_host(
    http_mock: HttpMock, actions_env: ActionsEnvFactory
) -> None:
    http_mock.on("GET", "/health", (302, "http://169.254.169.254/latest/meta-data/"))
    env = await actions_env(http_allowed_hosts=[http_mock.host])
    with pytest.raises(StepFailed, match="answered 302, expected 200"):
        await env.run("httpHealthCheck", {"url": f"{http_mock.url}/health"})
    assert [r.path for r in http_mock.requests] == ["/health"]


async def test_http_request_sends_json_and_checks_the_status(
    http_mock: HttpMock, actions_env: ActionsEnvFactory
) -> None:
    http_mock.on("POST", "/api/events/test", (202, {"id": "evt-1"}))
    env = await actions_env(http_allowed_hosts=[http_mock.host])
    event = {"module": "finbot", "type": "test", "labels": ["a", "b"]}

    result = await env.run(
        "httpRequest",
        {"method": "POST", "url": f"{http_mock.url}/api/events/test?token=abc", "json": event},
    )

    [sent] = http_mock.seen("POST", "/api/events/test")
    assert sent.json() == event
    assert result.outputs["status"] == "202"
    assert "token=abc" not in result.message
    with pytest.raises(StepFailed, match="answered 202, expected 201") as caught:
        await env.run(
            "httpRequest",
            {"method": "POST", "url": f"{http_mock.url}/api/events/test", "expectStatus": 201},
        )
    assert caught.value.reason == "HttpRequestFailed"


async def test_http_request_sends_nothing_in_dry_run(
    http_mock: HttpMock, actions_env: ActionsEnvFactory
) -> None:
    env = await actions_env(http_allowed_hosts=[http_mock.host])
    result = await env.run(
        "httpRequest", {"method": "DELETE", "url": f"{http_mock.url}/cache"}, dry_run=True
    )
    assert result.message == f"would send DELETE {http_mock.url}/cache"
    assert http_mock.requests == []


async def test_http_request_to_a_path_under_a_modules_base_url(
    http_mock: HttpMock, actions_env: ActionsEnvFactory
) -> None:
    http_mock.on("POST", "/mcp/finbot/events/test", (202, {"id": "evt-2"}))
    env = await actions_env(module_base_urls={"finbot": f"{http_mock.url}/"})

    result = await env.run(
        "httpRequest",
        {"method": "POST", "module": "finbot", "path": "/mcp/finbot/events/test", "json": {}},
    )

    assert len(http_mock.seen("POST", "/mcp/finbot/events/test")) == 1
    assert result.outputs["url"] == f"{http_mock.url}/mcp/finbot/events/test"
    with pytest.raises(StepFailed, match="module mubot has no base URL") as unknown:
        await env.run("httpRequest", {"module": "mubot", "path": "/x"})
    assert unknown.value.reason == "UnknownModule"
    problems = check_steps(
        [
            Step(name="both", action="httpRequest", params={"url": "http://a/", "module": "a"}),
            Step(name="no-path", action="httpRequest", params={"module": "finbot"}),
        ],
        Settings(),
    )
    assert [p.message.split(": ", 2)[2] for p in problems] == [
        "Value error, give exactly one of url or module (with path)",
        "Value error, module and path go together",
    ]


async def test_notify_posts_the_text_to_the_webhook(
    http_mock: HttpMock, actions_env: ActionsEnvFactory, caplog: pytest.LogCaptureFixture
) -> None:
    path = "/services/T000/B000/XXXXSECRETXXXX"
    http_mock.on("POST", path, (200, "ok"))
    env = await actions_env(notify_webhook_url=f"{http_mock.url}{path}")
    caplog.set_level(logging.DEBUG)

    result = await env.run("notify", {"message": "OBS: RedisDown on mcp, restarted redis"})

    [post] = http_mock.seen("POST", path)
    assert post.json() == {"text": "OBS: RedisDown on mcp, restarted redis"}
    assert result.outputs["status"] == "200"
    assert "XXXXSECRETXXXX" not in result.message + str(result.outputs) + caplog.text


async def test_notify_failures_never_show_the_webhook_url(
    http_mock: HttpMock, actions_env: ActionsEnvFactory, caplog: pytest.LogCaptureFixture
) -> None:
    secret_path = "/hooks/XXXXSECRETXXXX"
    http_mock.on("POST", secret_path, (500, {"error": "boom"}))
    env = await actions_env(notify_webhook_url=f"{http_mock.url}{secret_path}")
    caplog.set_level(logging.DEBUG)

    with pytest.raises(StepFailed) as failing:
        await env.run("notify", {"message": "hello"})
    assert failing.value.transient
    assert failing.value.message == "notification webhook at 127.0.0.1 answered 500"

    down = await actions_env(notify_webhook_url="http://127.0.0.1:9/hooks/XXXXSECRETXXXX")
    with pytest.raises(StepFailed) as unreachable:
        await down.run("notify", {"message": "hello"})
    assert unreachable.value.transient
    assert unreachable.value.__suppress_context__  # the httpx error may quote the URL
    for text in (failing.value.message, unreachable.value.message, caplog.text):
        assert "XXXXSECRETXXXX" not in text

    unset = await actions_env()
    with pytest.raises(StepFailed, match="no notification webhook configured"):
        await unset.run("notify", {"message": "hello"})


async def test_notify_sends_nothing_in_dry_run(
    http_mock: HttpMock, actions_env: ActionsEnvFactory
) -> None:
    env = await actions_env(notify_webhook_url=f"{http_mock.url}/hook")
    result = await env.run("notify", {"message": "would be posted"}, dry_run=True)
    assert result.message == "would notify: would be posted"
    assert http_mock.requests == []


# -- tenancy: module base URLs and the webhook serve trusted namespaces only --------------

UNTRUSTED = "team-a/x"


def secret(namespace: str, name: str, **data: str) -> dict[str, Any]:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace}, "data": encoded}  # fmt: skip


def not_allowed_message(what: str, param: str) -> str:
    return (
        f"{what} is for trusted namespaces only (MCP_TRUSTED_NAMESPACES) and team-a is not "
        f"one: name a Secret of namespace team-a in {param}, or add team-a to "
        "MCP_TRUSTED_NAMESPACES"
    )


MODULE_STEPS = [
    ("httpHealthCheck", {"module": "finbot"}),
    ("httpRequest", {"method": "POST", "module": "finbot", "path": "/mcp/finbot/health"}),
]


@pytest.mark.parametrize(("action", "params"), MODULE_STEPS)
async def test_module_base_urls_serve_trusted_namespaces_only(
    http_mock: HttpMock, actions_env: ActionsEnvFactory, action: str, params: dict[str, Any]
) -> None:
    http_mock.on("GET", "/mcp/finbot/health", (200, {"status": "ok"}))
    http_mock.on("POST", "/mcp/finbot/health", (200, {"status": "ok"}))
    env = await actions_env(module_base_urls={"finbot": http_mock.url})

    with pytest.raises(StepFailed) as caught:
        await env.run(action, params, remediation=UNTRUSTED)
    # Nor does an unknown module tell an untrusted namespace which modules exist.
    with pytest.raises(StepFailed) as unknown:
        await env.run(action, {**params, "module": "mubot"}, remediation=UNTRUSTED)
    # A plain URL on a host allowed only as a module base URL is the same endpoint.
    url = {"url": f"{http_mock.url}/mcp/finbot/health"}
    plain = {**{k: v for k, v in params.items() if k not in ("module", "path")}, **url}
    with pytest.raises(StepFailed) as by_url:
        await env.run(action, plain, remediation=UNTRUSTED)

    assert caught.value.reason == unknown.value.reason == by_url.value.reason
    assert caught.value.reason == "CredentialsNotAllowed" and not caught.value.transient
    assert caught.value.message == not_allowed_message(
        "the operator-level base URL of module finbot (MCP_MODULE_BASE_URLS)", "baseUrlSecretRef"
    )
    assert by_url.value.message.startswith(f"host {http_mock.host}, allowed as a module base URL")
    assert http_mock.requests == []
    # The trusted namespace (mcp, the default) still uses them.
    assert (await env.run(action, params)).outputs["status"] == "200"
    assert (await env.run(action, plain)).outputs["status"] == "200"
    assert len(http_mock.requests) == 2


@pytest.mark.parametrize(("action", "params"), MODULE_STEPS)
async def test_an_untrusted_namespace_names_its_modules_base_url_in_a_secret(
    http_mock: HttpMock,
    cluster: Cluster,
    actions_env: ActionsEnvFactory,
    action: str,
    params: dict[str, Any],
) -> None:
    http_mock.on("GET", "/mcp/finbot/health", (200, {"status": "ok"}))
    http_mock.on("POST", "/mcp/finbot/health", (200, {"status": "ok"}))
    cluster.seed(secret("team-a", "finbot", url=f"{http_mock.url}/"))
    cluster.tenant("team-a")
    env = await actions_env(
        cluster.connection,
        module_base_urls={"finbot": "http://finbot.mcp:8080"},
        http_allowed_hosts=[http_mock.host],
    )
    ref = {"baseUrlSecretRef": {"name": "finbot", "key": "url"}}

    result = await env.run(action, {**params, **ref}, remediation=UNTRUSTED)

    assert result.outputs["url"] == f"{http_mock.url}/mcp/finbot/health"
    assert len(http_mock.requests) == 1
    # The Secret's URL still has to be on an allowed host.
    restricted = await actions_env(cluster.connection, http_allowed_hosts=["elsewhere"])
    with pytest.raises(Refused) as refused:
        await restricted.run(action, {**params, **ref}, remediation=UNTRUSTED)
    assert refused.value.reason == HOST_NOT_ALLOWED
    assert len(http_mock.requests) == 1
    with pytest.raises(ValidationError, match="baseUrlSecretRef goes with module"):
        REGISTRY[action].parse({"url": "http://x/", **ref})


async def test_an_untrusted_namespace_may_not_use_the_operators_webhook(
    http_mock: HttpMock, actions_env: ActionsEnvFactory
) -> None:
    http_mock.on("POST", "/hooks/XXXXSECRETXXXX", (200, "ok"))
    env = await actions_env(notify_webhook_url=f"{http_mock.url}/hooks/XXXXSECRETXXXX")

    for dry_run in (False, True):
        with pytest.raises(StepFailed) as caught:
            await env.run("notify", {"message": "hi"}, remediation=UNTRUSTED, dry_run=dry_run)
        assert caught.value.reason == "CredentialsNotAllowed"
        assert caught.value.message == not_allowed_message(
            "the operator-level notification webhook (MCP_NOTIFY_WEBHOOK_URL)",
            "webhook.urlSecretRef",
        )
    assert http_mock.requests == []
    assert (await env.run("notify", {"message": "hi"})).outputs["status"] == "200"
    assert len(http_mock.requests) == 1


async def test_an_untrusted_namespace_notifies_through_its_own_webhook(
    http_mock: HttpMock,
    cluster: Cluster,
    actions_env: ActionsEnvFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    http_mock.on("POST", "/hooks/TEAMSECRET", (200, "ok"))
    cluster.seed(secret("team-a", "oncall", url=f"{http_mock.url}/hooks/TEAMSECRET"))
    cluster.tenant("team-a")
    env = await actions_env(
        cluster.connection, notify_webhook_url=f"{http_mock.url}/hooks/OPERATORSECRET"
    )
    caplog.set_level(logging.DEBUG)
    webhook = {"webhook": {"urlSecretRef": {"name": "oncall", "key": "url"}}}

    result = await env.run("notify", {"message": "team-a: restarted", **webhook},
                           remediation=UNTRUSTED)  # fmt: skip

    [post] = http_mock.seen("POST", "/hooks/TEAMSECRET")
    assert post.json() == {"text": "team-a: restarted"}
    assert [r.path for r in http_mock.requests] == ["/hooks/TEAMSECRET"]
    assert "TEAMSECRET" not in result.message + str(result.outputs) + caplog.text
    with pytest.raises(StepFailed) as missing:
        await env.run(
            "notify",
            {"message": "x", "webhook": {"urlSecretRef": {"name": "absent", "key": "url"}}},
            remediation=UNTRUSTED,
        )
    assert missing.value.reason == "SecretNotFound"
    assert missing.value.message == "Secret team-a/absent (webhook.urlSecretRef) not found"
