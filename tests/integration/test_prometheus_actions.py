"""``prometheusQuery`` and ``prometheusVerify`` against a real Prometheus scraping a target
the test controls; the bearer token against an HTTP mock; every failure mode; the
operator-level Prometheus for trusted namespaces only, Secrets (in the emulated cluster)
elsewhere."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import pytest

from fixtures.actions import ActionsEnvFactory
from fixtures.cluster import Cluster
from fixtures.http_mock import HttpMock
from fixtures.prometheus import PrometheusFixture
from mcp_remediator.errors import StepFailed, VerificationFailed

SETTLED = "mcp_dashboard_promises_settled_total"


def run_id() -> str:
    """A label value of this test only: series of earlier tests cannot match."""
    return uuid.uuid4().hex[:8]


def present(count: int) -> Any:
    return lambda result: len(result) == count


async def test_query_outputs_the_top_series_labels_and_value(
    prometheus: PrometheusFixture, actions_env: ActionsEnvFactory
) -> None:
    run = run_id()
    for module, rejected in (("finbot", 2), ("mubot", 40), ("aiops", 7)):
        prometheus.target.set(SETTLED, rejected, module=module, status="rejected", run=run)
    query = f'sum by (module) ({SETTLED}{{status="rejected", run="{run}"}})'
    await prometheus.wait_until(query, present(3))
    env = await actions_env(prometheus_url=prometheus.url)

    result = await env.run("prometheusQuery", {"query": query})

    assert result.outputs == {
        "value": "40",
        "series": "3",
        "labels": '{module="mubot"}',
        "labels.module": "mubot",
    }
    assert result.message == '3 series; top: {module="mubot"} 40, and 2 more'


async def test_query_failure_modes_read_clearly(
    prometheus: PrometheusFixture, actions_env: ActionsEnvFactory
) -> None:
    env = await actions_env(prometheus_url=prometheus.url)

    with pytest.raises(StepFailed) as bad:
        await env.run("prometheusQuery", {"query": "sum(rate(x[5m]"})
    assert bad.value.reason == "BadQuery"
    assert not bad.value.transient
    assert bad.value.message.startswith("Prometheus rejected the query: ")
    assert "parse error" in bad.value.message

    with pytest.raises(StepFailed, match="query returned no data") as empty:
        await env.run("prometheusQuery", {"query": f'up{{job="nothing-{run_id()}"}}'})
    assert empty.value.reason == "NoData"

    with pytest.raises(StepFailed, match="range vector"):
        await env.run("prometheusQuery", {"query": "up[1m]"})

    scalar = await env.run("prometheusQuery", {"query": "scalar(vector(0.25))"})
    assert scalar.outputs["value"] == "0.25"


async def test_prometheus_down_is_transient(actions_env: ActionsEnvFactory) -> None:
    env = await actions_env(prometheus_url="http://127.0.0.1:9")
    for action, params in (
        ("prometheusQuery", {"query": "up"}),
        ("prometheusVerify", {"query": "up", "condition": "== 1", "forSeconds": 0}),
    ):
        with pytest.raises(StepFailed) as caught:
            await env.run(action, params)
        assert caught.value.transient
        assert caught.value.reason == "PrometheusUnavailable"
        assert caught.value.message.startswith("Prometheus at 127.0.0.1:9 unreachable")

    unset = await actions_env()
    with pytest.raises(StepFailed, match="MCP_PROMETHEUS_URL is not set"):
        await unset.run("prometheusQuery", {"query": "up"})


async def test_verify_passes_once_the_condition_held_for_the_whole_window(
    prometheus: PrometheusFixture, actions_env: ActionsEnvFactory
) -> None:
    run = run_id()
    query = f'redis_up{{run="{run}"}}'
    prometheus.target.set("redis_up", 0, run=run)
    await prometheus.wait_until(query, lambda r: r and r[0]["value"][1] == "0")
    env = await actions_env(prometheus_url=prometheus.url)

    verify = asyncio.create_task(
        env.run(
            "prometheusVerify",
            {"query": query, "condition": "== 1", "forSeconds": 1, "timeoutSeconds": 20},
        )
    )
    # Still down: the verification must not pass on "no recovery yet".
    await prometheus.wait_until(query, lambda r: r and r[0]["value"][1] == "0")
    assert not verify.done()
    prometheus.target.set("redis_up", 1, run=run)
    result = await verify

    assert result.outputs["value"] == "1"
    assert result.outputs["heldSeconds"] == "1"
    assert result.message.startswith(f"{query} == 1 held for 1s")


async def test_verify_fails_with_verification_failed_at_the_timeout(
    prometheus: PrometheusFixture, actions_env: ActionsEnvFactory
) -> None:
    run = run_id()
    query = f'rate_like{{run="{run}"}}'
    prometheus.target.set("rate_like", 0.5, run=run)
    await prometheus.wait_until(query, present(1))
    env = await actions_env(prometheus_url=prometheus.url)

    with pytest.raises(VerificationFailed) as caught:
        await env.run(
            "prometheusVerify",
            {"query": query, "condition": ">= 0.8", "forSeconds": 0, "timeoutSeconds": 1},
        )

    assert caught.value.reason == "VerificationFailed"
    assert f"{query} >= 0.8 did not hold for 0s within 1s" in caught.value.message
    assert f'run="{run}"}} 0.5' in caught.value.message


async def test_verify_treats_no_data_as_not_holding(
    prometheus: PrometheusFixture, actions_env: ActionsEnvFactory
) -> None:
    env = await actions_env(prometheus_url=prometheus.url)
    with pytest.raises(VerificationFailed, match="last: no data"):
        await env.run(
            "prometheusVerify",
            {"query": f'up{{job="gone-{run_id()}"}}', "condition": "< 1", "forSeconds": 0,
             "timeoutSeconds": 1},
        )  # fmt: skip


async def test_verify_bad_query_fails_at_once(
    prometheus: PrometheusFixture, actions_env: ActionsEnvFactory
) -> None:
    env = await actions_env(prometheus_url=prometheus.url)
    with pytest.raises(StepFailed) as caught:
        await env.run(
            "prometheusVerify", {"query": "up ==", "condition": "== 1", "timeoutSeconds": 60}
        )
    assert caught.value.reason == "BadQuery"


async def test_the_bearer_token_and_timeout_reach_prometheus(
    http_mock: HttpMock, actions_env: ActionsEnvFactory
) -> None:
    def answer(request: Any) -> tuple[int, Any]:
        if request.headers.get("Authorization") != "Bearer prom-token":
            return 401, "unauthorized"
        return 200, {"status": "success",
                     "data": {"resultType": "vector",
                              "result": [{"metric": {"job": "x"}, "value": [1, "1"]}]}}  # fmt: skip

    http_mock.on("GET", "/api/v1/query", answer)
    env = await actions_env(prometheus_url=http_mock.url, prometheus_token="prom-token")
    result = await env.run("prometheusQuery", {"query": "up"})
    assert result.outputs["labels.job"] == "x"
    [request] = http_mock.requests
    assert request.query == {"query": "up"}

    wrong = await actions_env(prometheus_url=http_mock.url, prometheus_token="wrong")
    with pytest.raises(StepFailed) as caught:
        await wrong.run("prometheusQuery", {"query": "up"})
    assert caught.value.reason == "PrometheusUnauthorized"
    assert "wrong" not in caught.value.message


async def test_a_failing_or_slow_prometheus_is_transient(
    http_mock: HttpMock, actions_env: ActionsEnvFactory
) -> None:
    http_mock.on("GET", "/api/v1/query", (503, {"status": "error", "error": "overloaded"}))
    env = await actions_env(prometheus_url=http_mock.url)
    with pytest.raises(StepFailed) as failing:
        await env.run("prometheusQuery", {"query": "up"})
    assert failing.value.transient
    assert failing.value.message == f"Prometheus at {http_mock.host} answered 503: overloaded"

    release = asyncio.Event()

    async def slow(_request: Any) -> tuple[int, Any]:
        await release.wait()
        return 200, {"status": "success", "data": {"resultType": "vector", "result": []}}

    http_mock.on("GET", "/api/v1/query", slow)
    impatient = await actions_env(prometheus_url=http_mock.url, prometheus_timeout_seconds=0.2)
    try:
        with pytest.raises(StepFailed) as slow_answer:
            await impatient.run("prometheusQuery", {"query": "up"})
    finally:
        release.set()
    assert slow_answer.value.transient
    assert slow_answer.value.message == f"Prometheus at {http_mock.host} did not answer within 0.2s"


# -- tenancy: MCP_PROMETHEUS_URL and its token serve trusted namespaces only -------------

VECTOR = {"status": "success",
          "data": {"resultType": "vector",
                   "result": [{"metric": {"job": "x"}, "value": [1, "1"]}]}}  # fmt: skip
BOTH = [
    ("prometheusQuery", {"query": "up"}),
    ("prometheusVerify", {"query": "up", "condition": "== 1", "forSeconds": 0}),
]


def secret(namespace: str, name: str, **data: str) -> dict[str, Any]:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace}, "data": encoded}  # fmt: skip


@pytest.mark.parametrize(("action", "params"), BOTH)
async def test_an_untrusted_namespace_may_not_use_the_operators_prometheus(
    http_mock: HttpMock, actions_env: ActionsEnvFactory, action: str, params: dict[str, Any]
) -> None:
    http_mock.on("GET", "/api/v1/query", (200, VECTOR))
    env = await actions_env(prometheus_url=http_mock.url, prometheus_token="prom-token")

    with pytest.raises(StepFailed) as caught:
        await env.run(action, params, remediation="team-a/x")

    assert caught.value.reason == "CredentialsNotAllowed"
    assert not caught.value.transient
    assert caught.value.message == (
        "the operator-level Prometheus (MCP_PROMETHEUS_URL, MCP_PROMETHEUS_TOKEN) is for "
        "trusted namespaces only (MCP_TRUSTED_NAMESPACES) and team-a is not one: name a "
        "Secret of namespace team-a in prometheus.urlSecretRef, or add team-a to "
        "MCP_TRUSTED_NAMESPACES"
    )
    assert http_mock.requests == []
    # The trusted namespace (the default remediation, mcp/test-run) still uses it.
    trusted = await env.run(action, params)
    assert trusted.outputs["value"] == "1"
    assert http_mock.requests[-1].headers["Authorization"] == "Bearer prom-token"


@pytest.mark.parametrize(("action", "params"), BOTH)
async def test_an_untrusted_namespace_uses_prometheus_from_its_own_secrets(
    http_mock: HttpMock,
    cluster: Cluster,
    actions_env: ActionsEnvFactory,
    action: str,
    params: dict[str, Any],
) -> None:
    def answer(request: Any) -> tuple[int, Any]:
        if request.headers.get("Authorization") != "Bearer team-token":
            return 401, "unauthorized"
        return 200, VECTOR

    http_mock.on("GET", "/api/v1/query", answer)
    cluster.seed(secret("team-a", "prom", url=http_mock.url, token="team-token"))
    cluster.tenant("team-a")
    env = await actions_env(
        cluster.connection, prometheus_url="http://127.0.0.1:9", prometheus_token="prom-token"
    )
    ref = {"urlSecretRef": {"name": "prom", "key": "url"},
           "tokenSecretRef": {"name": "prom", "key": "token"}}  # fmt: skip

    result = await env.run(action, {**params, "prometheus": ref}, remediation="team-a/x")

    assert result.outputs["value"] == "1"
    assert [r.headers["Authorization"] for r in http_mock.requests] == ["Bearer team-token"]

    # Without tokenSecretRef no token is sent: never the operator's.
    without_token = {"urlSecretRef": {"name": "prom", "key": "url"}}
    with pytest.raises(StepFailed) as caught:
        await env.run(action, {**params, "prometheus": without_token}, remediation="team-a/x")
    assert caught.value.reason == "PrometheusUnauthorized"
    assert "check prometheus.tokenSecretRef" in caught.value.message
    assert "Authorization" not in http_mock.requests[-1].headers
