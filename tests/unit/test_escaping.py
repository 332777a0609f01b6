"""Each value a template renders is written for where it lands: escaped inside a PromQL
string (and as a literal in a regex matcher), refused where it could change a query's
structure, Slack-escaped in a notification, percent-encoded in a URL path; a rendered
namespace is a namespace name or the run fails."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_remediator.actions import REGISTRY
from mcp_remediator.errors import TemplateError
from mcp_remediator.runbook import escaping, templates
from mcp_remediator.runbook.validation import check_runbook
from mcp_remediator.settings import Settings

INJECTION = 'mcp-x"} or vector(1) or redis_up{namespace="y'


def inputs(**labels: str) -> templates.Inputs:
    return templates.Inputs(labels=labels, annotations={}, steps={})


def render(action: str, params: dict[str, Any], **labels: str) -> Any:
    return templates.render(params, inputs(**labels), REGISTRY[action].params)


def query(template: str, **labels: str) -> str:
    result: str = render("prometheusVerify", {"query": template}, **labels)["query"]
    return result


# -- PromQL ---------------------------------------------------------------------------------


def test_the_injection_stays_inside_its_string() -> None:
    rendered = query('min(redis_up{namespace="{{ labels.ns }}"})', ns=INJECTION)
    assert rendered == (
        'min(redis_up{namespace="mcp-x\\"} or vector(1) or redis_up{namespace=\\"y"})'
    )


@pytest.mark.parametrize(
    ("template", "value", "expected"),
    [
        ('{a="{{ labels.v }}"}', 'back\\slash "quote"', '{a="back\\\\slash \\"quote\\""}'),
        ('{a="{{ labels.v }}"}', "two\nlines\r\t\x00", '{a="two\\nlines\\r\\t\\x00"}'),
        ("{a='{{ labels.v }}'}", "it's \"fine\"", "{a='it\\'s \"fine\"'}"),
        ('{a="{{ labels.v }}"}', "{{ braces }} and 'single'", '{a="{{ braces }} and \'single\'"}'),
        ('{pod=~"{{ labels.v }}-[a-z0-9]+"}', "a.b|c*", '{pod=~"a\\\\.b\\\\|c\\\\*-[a-z0-9]+"}'),
        ('{pod!~ "{{ labels.v }}"}', "(x)", '{pod!~ "\\\\(x\\\\)"}'),
        ("{pod=~`{{ labels.v }}`}", "a.b", "{pod=~`a\\.b`}"),
        ("rate(x[{{ labels.v }}])", "5m", "rate(x[5m])"),
        ("topk({{ labels.v }}, x)", "3", "topk(3, x)"),
        ("{{ labels.v }}{job='a'}", "redis_up", "redis_up{job='a'}"),
        ("x # {{ labels.v }}\n", "or vector(1)", "x # or vector(1)\n"),
        ('{a="#"} / {{ labels.v }}', "b", '{a="#"} / b'),
        ('{a="\\"{{ labels.v }}"}', "q", '{a="\\"q"}'),
    ],
    ids=[
        "backslash-and-quote", "control-characters", "single-quotes", "braces-and-quotes",
        "regex-matcher", "negative-regex-matcher", "raw-regex", "duration", "number",
        "metric-name", "comment", "hash-in-a-string", "after-an-escaped-quote",
    ],
)  # fmt: skip
def test_each_spot_of_a_query_gets_its_escaping(template: str, value: str, expected: str) -> None:
    assert query(template, v=value) == expected


@pytest.mark.parametrize(
    ("template", "value", "why"),
    [
        ("rate(x[{{ labels.v }}])", "5m]) or vector(1) or (x[5m", "outside a PromQL string"),
        ("up {{ labels.v }} vector(1)", "or", "outside a PromQL string"),
        ("up {{ labels.v }} vector(1)", "UNLESS", "outside a PromQL string"),
        ("x{{ labels.v }}", '{a="b"}', "outside a PromQL string"),
        ("{a=`{{ labels.v }}`}", "x` or vector(1) or `", "a PromQL raw string"),
        ("x # {{ labels.v }}", "a\nor vector(1)", "a line break in a PromQL comment"),
        ('{a="\\{{ labels.v }}"}', "x", "right after a backslash"),
        ('{a="{{ labels.v }}"}', "\ud800", "cannot hold"),
    ],
)
def test_a_value_that_could_change_the_query_is_refused(
    template: str, value: str, why: str
) -> None:
    with pytest.raises(TemplateError, match=why) as caught:
        query(template, v=value)
    assert caught.value.reason == "TemplateError"
    assert caught.value.message.startswith("params.query: template {{ labels.v }} rendered ")


def test_quote_meta_escapes_re2s_metacharacters_only() -> None:
    assert escaping.quote_meta("a-b_c.d*e+f?g(h)i|j[k]l{m}n^o$p\\q") == (
        "a-b_c\\.d\\*e\\+f\\?g\\(h\\)i\\|j\\[k\\]l\\{m\\}n\\^o\\$p\\\\q"
    )


def test_lint_flags_a_placeholder_no_value_could_fill() -> None:
    spec = {
        "steps": [
            {"name": "q", "action": "prometheusQuery",
             "params": {"query": 'up{a="\\{{ labels.v }}"}'}},
        ]
    }  # fmt: skip
    [problem] = check_runbook(spec, Settings())
    assert problem.reason == "InvalidTemplate"
    assert "right after a backslash in a PromQL string" in problem.message


# -- Slack ----------------------------------------------------------------------------------


def test_values_in_a_notification_cannot_mention_or_link() -> None:
    message = "<https://grafana.example/d/redis|dashboard> {{ labels.alertname }}: {{ labels.v }}"
    rendered = render(
        "notify",
        {"message": message},
        alertname="RedisDown",
        v="<!channel> see <https://evil.example|the fix> & <@U123>",
    )
    assert rendered["message"] == (
        "<https://grafana.example/d/redis|dashboard> RedisDown: &lt;!channel&gt; see "
        "&lt;https://evil.example|the fix&gt; &amp; &lt;@U123&gt;"
    )


# -- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "template", "value", "expected"),
    [
        ("path", "/mcp/{{ labels.v }}/events/test", "fin/../admin?x=1#y",
         "/mcp/fin%2F..%2Fadmin%3Fx%3D1%23y/events/test"),
        ("url", "http://finbot:8080/health?module={{ labels.v }}", "a&b=c d",
         "http://finbot:8080/health?module=a%26b%3Dc%20d"),
        ("url", "http://{{ labels.v }}:8080/health", "finbot", "http://finbot:8080/health"),
        ("url", "http://finbot:{{ labels.v }}/health", "8080", "http://finbot:8080/health"),
        ("url", "{{ labels.v }}", "http://finbot:8080/x", "http://finbot:8080/x"),
    ],
    ids=["path", "query", "host", "port", "whole-url"],
)  # fmt: skip
def test_values_in_urls_stay_one_segment(
    param: str, template: str, value: str, expected: str
) -> None:
    params = {"module": "finbot", param: template} if param == "path" else {param: template}
    assert render("httpRequest", params, v=value)[param] == expected


@pytest.mark.parametrize("value", ["evil.example@finbot", "finbot/x", "finbot:1", "a b"])
def test_a_value_in_a_urls_host_must_be_a_host_name(value: str) -> None:
    with pytest.raises(TemplateError, match="scheme or host"):
        render("httpHealthCheck", {"url": "http://{{ labels.v }}:8080/health"}, v=value)


# -- namespaces -----------------------------------------------------------------------------


def test_a_rendered_target_namespace_must_be_a_namespace_name() -> None:
    assert templates.render_namespace("team-{{ labels.ns }}", inputs(ns="a")) == "team-a"
    for bad in [INJECTION, "Team", "a.b", "x" * 64, "-a"]:
        with pytest.raises(TemplateError, match="which is not a namespace name") as caught:
            templates.render_namespace("{{ labels.ns }}", inputs(ns=bad))
        assert caught.value.message.startswith("{{ labels.ns }} rendered ")


def test_a_rendered_namespace_param_must_be_a_namespace_name() -> None:
    with pytest.raises(TemplateError, match="params.namespace: {{ labels.ns }} rendered 'a/b'"):
        render("rolloutRestart", {"name": "x", "namespace": "{{ labels.ns }}"}, ns="a/b")
    assert render("rolloutRestart", {"name": "x", "namespace": "{{ labels.ns }}"}, ns="mcp") == {
        "name": "x",
        "namespace": "mcp",
    }


def test_a_literal_target_namespace_must_be_a_namespace_name() -> None:
    spec = {
        "target": {"namespace": "Team_A"},
        "steps": [{"name": "r", "action": "rolloutRestart", "params": {"name": "x"}}],
    }
    [problem] = check_runbook(spec, Settings())
    assert problem.reason == "InvalidSpec"
    assert problem.message.startswith("target.namespace: 'Team_A', which is not a namespace")


def test_params_that_escape_nothing_are_rendered_as_they_are() -> None:
    params = {"name": "{{ labels.v }}", "mergePatch": {"data": {"k": "{{ labels.w }}"}}}
    assert render("patchResource", params, v="a", w='"<x>"') == {
        "name": "a",
        "mergePatch": {"data": {"k": '"<x>"'}},
    }
