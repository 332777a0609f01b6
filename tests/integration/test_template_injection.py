"""Label values cannot rewrite what a runbook's author wrote around them (issue 11): against
a real Prometheus the query injection that would make a verification always pass finds no
data instead; through the real operator a namespace label that is not a namespace name
fails the run before anything runs, and a notification's values reach Slack escaped.
Prometheus's own parser (``/api/v1/format_query``) reads generated values rendered into a
query as the very expression of the template, each string holding its value."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid

from hypothesis import given
from hypothesis import strategies as st

from fixtures.actions import ActionsEnvFactory
from fixtures.cluster import Cluster, OperatorFactory, OperatorUnderTest, remediation
from fixtures.http_mock import HttpMock
from fixtures.hypothesis_lint import FUZZ
from fixtures.prometheus import PrometheusDaemon, PrometheusFixture
from mcp_remediator.actions import REGISTRY
from mcp_remediator.errors import TemplateError, VerificationFailed
from mcp_remediator.models import API_VERSION
from mcp_remediator.runbook import escaping, templates

INJECTION = 'mcp-x"} or vector(1) or redis_up{namespace="y'
FINISHED = {"Succeeded", "Failed", "Refused", "Skipped", "Cancelled"}
WEBHOOK = "/hooks/T0/B0/oncall"
VALUES = st.one_of(
    st.text(min_size=1),
    st.lists(st.sampled_from(['"', "'", "`", "\\", "}", "{", "\n", " or vector(1) or ", "5m",
                              "a", ".*", "|"]), min_size=1, max_size=6).map("".join),
)  # fmt: skip
DURATIONS = st.one_of(
    st.sampled_from(["5m", "1h30m", "2d12h", "250ms", "1w", "1y"]),
    st.from_regex(r"[1-9][0-9]{0,2}(ms|[smhdwy])", fullmatch=True),
)
STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`')


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


def shape(query: str) -> str:
    """A formatted query without its strings' contents or its line breaks (the formatter
    breaks long expressions)."""
    return "".join(STRINGS.sub('""', query).split())


def go_unquote(quoted: str) -> str:
    """A string as Go's strconv.Quote wrote it (Prometheus's formatter), read back."""
    body = quoted[1:-1].encode("latin-1", "backslashreplace")
    return body.decode("unicode_escape")


def format_query(url: str, query: str) -> str | None:
    """Prometheus's own parser: the query as it reads it, or None on a parse error."""
    address = f"{url}/api/v1/format_query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(address, timeout=5) as response:
            formatted: str = json.load(response)["data"]
            return formatted
    except urllib.error.HTTPError as exc:
        assert exc.code == 400, exc
        return None


def test_prometheus_parses_a_rendered_query_as_its_template(
    prometheus_daemon: PrometheusDaemon,
) -> None:
    template = (
        'sum(rate(x{a="{{ labels.a }}", b=~"{{ labels.b }}-[a-z]+", c!~`{{ labels.c }}`}'
        "[{{ labels.d }}])) or on() vector(0)"
    )

    seen = {"parsed": 0, "failed": 0}

    @FUZZ
    @given(a=VALUES, b=VALUES, c=VALUES, d=st.one_of(DURATIONS, DURATIONS, VALUES))
    def check(a: str, b: str, c: str, d: str) -> None:
        labels = templates.Inputs(labels={"a": a, "b": b, "c": c, "d": d}, annotations={}, steps={})
        try:
            rendered = templates.render(
                {"query": template}, labels, REGISTRY["prometheusQuery"].params
            )["query"]
        except TemplateError:
            return
        parsed = format_query(prometheus_daemon.url, rendered)
        seen["parsed" if parsed is not None else "failed"] += 1
        if parsed is None:
            # Outside strings a value is one name, number or duration; only a duration
            # fits a range, and anything else is a query that fails, never another one.
            assert format_query(prometheus_daemon.url, f"x[{d}]") is None, rendered
            return
        # The same expression as with harmless values, but for the strings' contents:
        sample = templates.PLACEHOLDER.sub("x", template).replace("[x]", f"[{d}]")
        expected = format_query(prometheus_daemon.url, sample)
        assert expected is not None, sample
        assert shape(parsed) == shape(expected)
        matchers = dict(re.findall(r'(\w+)(?:=~|!~|=)("(?:[^"\\]|\\.)*"|`[^`]*`)', parsed))
        assert go_unquote(matchers["a"]) == a
        assert go_unquote(matchers["b"]) == escaping.quote_meta(b) + "-[a-z]+"
        assert go_unquote(matchers["c"]) == escaping.quote_meta(c)

    check()
    print(f"format_query: {seen}")
    assert seen["parsed"] > FUZZ.max_examples // 5, seen  # a good share reach the parser
