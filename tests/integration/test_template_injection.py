"""Label values cannot rewrite what a runbook's author wrote around them (issue 11): against
a real Prometheus the query injection that would make a verification always pass finds no
data instead; through the real operator a namespace label that is not a namespace name
fails the run before anything runs, and a notification's values reach Slack escaped."""

from __future__ import annotations

import uuid

from fixtures.actions import ActionsEnvFactory
from fixtures.cluster import Cluster, OperatorFactory, OperatorUnderTest, remediation
from fixtures.http_mock import HttpMock
from fixtures.prometheus import PrometheusFixture
from mcp_remediator.actions import REGISTRY
from mcp_remediator.errors import VerificationFailed
from mcp_remediator.models import API_VERSION
from mcp_remediator.runbook import templates

INJECTION = 'mcp-x"} or vector(1) or redis_up{namespace="y'
FINISHED = {"Succeeded", "Failed", "Refused", "Skipped", "Cancelled"}
WEBHOOK = "/hooks/T0/B0/oncall"


async def test_an_injected_label_cannot_make_a_verification_pass(
    prometheus: PrometheusFixture, actions_env: ActionsEnvFactory
) -> None:
    run = uuid.uuid4().hex[:8]
    prometheus.target.set("redis_up", 0, namespace="mcp", run=run)  # Redis is down
    await prometheus.wait_until(f'redis_up{{run="{run}"}}', lambda r: len(r) == 1)
    template = {
        "query": f'min(redis_up{{run="{run}", namespace="{{{{ labels.namespace }}}}"}})',
        "condition": "== 1",
        "forSeconds": 0,
        "timeoutSeconds": 2,
    }
    env = await actions_env(prometheus_url=prometheus.url)
    labels = templates.Inputs(labels={"namespace": INJECTION}, annotations={}, steps={})

    # Put in as it is, the label would prove a recovery that did not happen:
    naive = {**template, "query": template["query"].replace("{{ labels.namespace }}", INJECTION)}
    assert (await env.run("prometheusVerify", naive)).outputs["value"] == "1"
    # Rendered as the engine renders it, the whole value is one label value: no such series.
    rendered = templates.render(template, labels, REGISTRY["prometheusVerify"].params)
    try:
        await env.run("prometheusVerify", rendered)
    except VerificationFailed as exc:
        assert "last: no data" in exc.message
    else:
        raise AssertionError("the verification passed on an injected label")


async def test_a_namespace_label_that_is_no_namespace_fails_the_run(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRunbook",
            "metadata": {"name": "restart", "namespace": "mcp"},
            "spec": {
                "target": {"namespace": "{{ labels.namespace }}"},
                "steps": [{"name": "r", "action": "rolloutRestart", "params": {"name": "finbot"}}],
            },
        }
    )
    run = remediation("injected", [], runbookRef={"name": "restart"})
    del run["spec"]["steps"]
    run["spec"]["labels"] = {"namespace": "kube-system/../mcp"}
    cluster.seed(run)

    done = await cluster.wait_phase("mcp", "injected", FINISHED)

    assert done["status"]["phase"] == "Failed", done["status"]
    assert done["status"]["reason"] == "TemplateError"
    assert done["status"]["message"].startswith(
        "target.namespace: {{ labels.namespace }} rendered 'kube-system/../mcp', which is not "
        "a namespace name"
    )
    assert cluster.writes("deployments") == []


async def test_values_reach_slack_escaped_and_the_authors_link_intact(
    cluster: Cluster, operator_factory: OperatorFactory, http_mock: HttpMock
) -> None:
    http_mock.on("POST", WEBHOOK, (200, "ok"))
    await operator_factory(notify_webhook_url=f"{http_mock.url}{WEBHOOK}")
    message = "<https://grafana.example/d/redis|dashboard>: {{ labels.summary }}"
    cluster.seed(
        remediation(
            "note",
            [{"name": "page", "action": "notify", "params": {"message": message}}],
            labels={"summary": "<!channel> <https://evil.example|click> & done"},
        )
    )

    done = await cluster.wait_phase("mcp", "note", FINISHED)

    assert done["status"]["phase"] == "Succeeded", done["status"]
    [note] = http_mock.seen("POST", WEBHOOK)
    assert note.json()["text"] == (
        "<https://grafana.example/d/redis|dashboard>: &lt;!channel&gt; "
        "&lt;https://evil.example|click&gt; &amp; done"
    )
