"""Property-based: whatever an alert's labels hold, a rendered param keeps the structure its
author wrote (issue 11). Generated values go through templates into every kind of field
the engine renders (PromQL, notify text, URLs, namespaces, names), and each result is
checked with an independent reading of its syntax: a PromQL lexer of this module, Go's
string unquoting, ``urllib.parse``, the namespace pattern, the params model."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from pydantic import ValidationError

from fixtures.hypothesis_lint import FUZZ
from mcp_remediator.actions import REGISTRY
from mcp_remediator.actions.common import K8S_NAME_PATTERN
from mcp_remediator.errors import TemplateError
from mcp_remediator.models import DNS_LABEL
from mcp_remediator.runbook import escaping, templates

# Pieces that break out of a string, a matcher, a comment or a query, mixed with any text.
NASTY = [
    '"', "'", "`", "\\", "}", "{", ")", "(", "]", "[", "#", "\n", "\r", ",", "=~", "|",
    " or vector(1) or ", "and", "offset", "5m", "1.5", "<!channel>", "<@U1>", "&", ">",
    "/", "?", "#", "@", ":", "%", "..", " ", "\x00", "\u2028", "é",
]  # fmt: skip
values = st.one_of(
    st.text(),
    st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=5)), max_size=8).map("".join),
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
).filter(bool)  # an empty label is a missing one: an error naming it (test_templates)


def inputs(**labels: str) -> templates.Inputs:
    return templates.Inputs(labels=labels, annotations={}, steps={})


def render(action: str, param: str, template: str, **labels: str) -> Any:
    params = {param: template}
    if action == "httpRequest" and param == "path":
        params["module"] = "finbot"
    return templates.render(params, inputs(**labels), REGISTRY[action].params)[param]


# -- PromQL ---------------------------------------------------------------------------------

_LEXER = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\r\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<atom>(?:[0-9]+(?:ms|[smhdwy]))+|[0-9]+(?:\.[0-9]+)?|[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>,(){}\[\]@])
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
KEYWORDS = {"and", "or", "unless", "atan2", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "offset", "start", "end"}  # fmt: skip


def lex(query: str) -> list[tuple[str, str]]:
    """PromQL tokens as (kind, text); names, numbers and durations are ``atom``s, keywords
    are their own kind, whitespace is dropped."""
    tokens = []
    for match in _LEXER.finditer(query):
        kind, text = match.lastgroup or "other", match.group(0)
        if kind == "ws":
            continue
        if kind == "atom" and text.lower() in KEYWORDS:
            kind = f"keyword {text.lower()}"
        if kind in ("op", "other"):
            kind = f"{kind} {text}"
        tokens.append((kind, text))
    return tokens


_GO_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def go_unquote(token: str) -> str:
    """What Prometheus reads in a string literal (Go's strconv.Unquote)."""
    quote, body = token[0], token[1:-1]
    if quote == "`":
        return body
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _GO_ESCAPES:
            out.append(_GO_ESCAPES[nxt])
            i += 2
        elif nxt == "x":
            out.append(chr(int(body[i + 2 : i + 4], 16)))
            i += 4
        else:
            out.append(nxt)  # \\, \" and \'
            i += 2
    return "".join(out)


# Each template: its placeholders' labels and, per label, what the value must read as
# inside the string it fills ("string", "regex") or "atom"/"comment" outside strings.
PROMQL = [
    ('min(redis_up{namespace="{{ labels.a }}"})', {"a": "string"}),
    ("sum(rate(x{job='{{ labels.a }}', pod=~\"{{ labels.b }}-[a-z0-9]+\"}[5m]))",
     {"a": "string", "b": "regex"}),
    ("x{a=`{{ labels.a }}`} # note {{ labels.b }}\n/ y", {"a": "raw", "b": "comment"}),
    ('rate(x{a="{{ labels.a }}"}[{{ labels.b }}])', {"a": "string", "b": "atom"}),
    ('topk({{ labels.a }}, {{ labels.b }}{c!~"{{ labels.c }}"})',
     {"a": "atom", "b": "atom", "c": "regex"}),
    ('x{a="\\"{{ labels.a }}\\\\"} or y{b=~`{{ labels.b }}`}', {"a": "string", "b": "raw-regex"}),
]  # fmt: skip


@FUZZ
@given(
    case=st.sampled_from(PROMQL),
    a=values,
    b=values,
    c=values,
)
def test_promql_keeps_the_templates_structure(
    case: tuple[str, dict[str, str]], a: str, b: str, c: str
) -> None:
    template, spots = case
    labels = {"a": a, "b": b, "c": c}
    try:
        rendered = render("prometheusQuery", "query", template, **labels)
    except TemplateError as exc:
        # Refused only where no escaping can help: outside a string (not one plain
        # name, number or duration), in a raw string or a comment (its end character).
        assert exc.reason == "TemplateError"
        event(f"refused: {exc.message.split(', ', 1)[1][:40]}")
        return
    event("rendered")
    sample = lex(templates.PLACEHOLDER.sub("x", template))
    tokens = lex(rendered)
    assert [kind for kind, _ in tokens] == [kind for kind, _ in sample], rendered
    strings = iter(text for kind, text in tokens if kind == "string")
    sample_strings = iter(text for kind, text in sample if kind == "string")
    for label, spot in spots.items():
        value = labels[label]
        if spot in ("string", "regex", "raw", "raw-regex"):
            read = go_unquote(next(strings))
            around = go_unquote(next(sample_strings)).split("x", 1)
            if "regex" in spot:
                assert read == around[0] + escaping.quote_meta(value) + around[1]
                assert re.fullmatch(escaping.quote_meta(value), value)
            else:
                assert read == around[0] + value + around[1]
        elif spot == "atom":
            assert [kind for kind, _ in lex(value)] == ["atom"]
        elif spot == "comment":
            assert "\n" not in value and "\r" not in value


@FUZZ
@given(value=values)
def test_the_issues_injection_never_leaves_its_string(value: str) -> None:
    template = 'min(redis_up{namespace="{{ labels.a }}"}) or vector(0)'
    for payload in (value, f'{value}"}} or vector(1) or redis_up{{namespace="{value}'):
        rendered = render("prometheusVerify", "query", template, a=payload)
        kinds = [kind for kind, _ in lex(rendered)]
        assert kinds == [kind for kind, _ in lex(templates.PLACEHOLDER.sub("x", template))]
        assert kinds.count("keyword or") == 1


# -- notify ---------------------------------------------------------------------------------

SLACK = "[{{ labels.a }}] <https://grafana.example/d/x|dashboard>: {{ labels.b }} & {{ labels.c }}"


@FUZZ
@given(a=values, b=values, c=values)
def test_notify_text_holds_no_control_sequence_from_values(a: str, b: str, c: str) -> None:
    rendered = render("notify", "message", SLACK, a=a, b=b, c=c)
    # The author's link is the only < and > there is.
    assert rendered.count("<") == rendered.count(">") == 1
    assert "<https://grafana.example/d/x|dashboard>" in rendered
    prefix, rest = rendered.split("] <https://grafana.example/d/x|dashboard>: ", 1)

    def unescape(text: str) -> str:
        return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")

    assert unescape(prefix) == f"[{a}"
    assert unescape(rest) == f"{b} & {c}"


# -- URLs -----------------------------------------------------------------------------------


@FUZZ
@given(a=values, b=values, c=values)
def test_url_values_stay_in_their_segment(a: str, b: str, c: str) -> None:
    template = "http://finbot:8080/mcp/{{ labels.a }}/x?module={{ labels.b }}#{{ labels.c }}"
    try:
        rendered = render("httpRequest", "url", template, a=a, b=b, c=c)
    except TemplateError as exc:
        assert "is not valid UTF-8" in exc.message  # a lone surrogate
        return
    parts = urlsplit(rendered)
    assert (parts.scheme, parts.hostname, parts.port) == ("http", "finbot", 8080)
    segments = parts.path.split("/")
    assert len(segments) == 4 and segments[:2] == ["", "mcp"] and segments[3] == "x"
    assert unquote(segments[2]) == a
    assert parse_qsl(parts.query, keep_blank_values=True) == [("module", b)]
    assert unquote(parts.fragment) == c


@FUZZ
@given(a=values)
def test_a_path_param_value_is_one_segment(a: str) -> None:
    try:
        rendered = render("httpRequest", "path", "/mcp/{{ labels.a }}/events/test", a=a)
    except TemplateError:
        return
    assert rendered.split("/")[3:] == ["events", "test"]
    assert unquote(rendered.split("/")[2]) == a
    assert "?" not in rendered and "#" not in rendered


@FUZZ
@given(a=values)
def test_a_host_value_is_a_host_or_refused(a: str) -> None:
    try:
        rendered = render("httpHealthCheck", "url", "http://{{ labels.a }}:8080/health", a=a)
    except TemplateError:
        return
    parts = urlsplit(rendered)
    assert (parts.hostname, parts.port, parts.path) == (a.lower(), 8080, "/health")


# -- namespaces and names -------------------------------------------------------------------


@FUZZ
@given(a=values, template=st.sampled_from(["{{ labels.a }}", "team-{{ labels.a }}"]))
def test_a_rendered_namespace_is_a_namespace_name_or_an_error(a: str, template: str) -> None:
    for render_one in (
        lambda: templates.render_namespace(template, inputs(a=a)),
        lambda: render("rolloutRestart", "namespace", template, a=a),
    ):
        try:
            namespace = render_one()
        except TemplateError:
            continue
        assert len(namespace) <= 63 and re.fullmatch(DNS_LABEL, namespace)


@FUZZ
@given(a=values)
def test_a_rendered_name_is_a_kubernetes_name_or_invalid_params(a: str) -> None:
    spec = REGISTRY["rolloutRestart"]
    rendered = templates.render({"name": "{{ labels.a }}"}, inputs(a=a), spec.params)
    try:
        params = spec.parse(rendered)
    except ValidationError:
        return
    assert params.name is not None and re.fullmatch(K8S_NAME_PATTERN, params.name)


def test_the_lexer_of_these_tests_reads_the_injection_as_the_issue_says() -> None:
    raw = 'min(redis_up{namespace="mcp-x"} or vector(1) or redis_up{namespace="y"})'
    assert [kind for kind, _ in lex(raw)].count("keyword or") == 2
    assert go_unquote('"a\\"b\\\\c\\n\\x00"') == 'a"b\\c\n\x00'


@pytest.mark.parametrize("template", [t for t, _ in PROMQL])
def test_every_template_here_passes_lint(template: str) -> None:
    assert templates.check_placement({"query": template}, REGISTRY["prometheusQuery"].params) == []
