"""Property-based fuzzing (hypothesis) of what users and alerts feed the operator.

Generated runbook and remediation specs — random steps, actions, params, URLs,
namespaces, templates, matchers, and values of the wrong type anywhere — go through
runbook validation and ``lint``; generated steps and alert inputs go through the engine's
step preparation (``engine.prepare_step``: render the templates, parse the params,
validate them). The answer is always a list of problems, or params, or ``StepFailed`` /
``Refused`` with a reason: never another exception. Stronger still, the safety nets
(``ValidationFailed``, ``InternalError``) never fire: every input has a foreseen answer.

Examples per property: ``tests/fixtures/hypothesis_profiles.py`` (300 by default,
``HYPOTHESIS_PROFILE=long`` for 5,000).
"""

from __future__ import annotations

import io
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import event, example, given
from hypothesis import strategies as st

from mcp_remediator import redact
from mcp_remediator.actions import REGISTRY
from mcp_remediator.engine import INTERNAL_ERROR, Run, prepare_step
from mcp_remediator.errors import Refused, StepFailed
from mcp_remediator.models import API_VERSION, Step
from mcp_remediator.runbook import templates
from mcp_remediator.runbook.validation import VALIDATION_FAILED, Problem, check_runbook
from mcp_remediator.settings import Settings
from mcp_remediator.tools.lint import lint_paths

SETTINGS = Settings(
    http_allowed_hosts=["finbot", "finbot:8080", "127.0.0.1", "[::1]:9090"],
    module_base_urls={"finbot": "http://finbot:8080", "mubot": "http://[::1]:9090"},
)
REASON = re.compile(r"[A-Z][A-Za-z]+")

# -- the building blocks ------------------------------------------------------------------

TEMPLATES = st.sampled_from(
    [
        "{{ labels.port }}",
        "{{ labels.namespace }}",
        "{{labels.deployment}}",
        "{{ annotations.summary }}",
        "{{ steps.first.outputs.names }}",
        "{{ steps.later.outputs.x }}",
        "{{ secrets.token }}",
        "{{ labels.port ",
        "{{",
        "}}",
        "{{}}",
        "{{ labels.a.b }}",
        "{{ labels.\u00e9 }}",
        "{{\n labels.port }}",
    ]
)
TEXT = st.text(max_size=12)
SHORT = st.one_of(TEXT, TEMPLATES, st.builds("".join, st.lists(st.one_of(TEXT, TEMPLATES))))
NAMESPACES = st.one_of(
    st.sampled_from(
        ["mcp", "team-a", "kube-system", "kube-public", "kyverno", "argocd", "", "A_B", "-x"]
    ),
    TEMPLATES,
    TEXT,
)
HOSTS = st.one_of(
    st.sampled_from(
        [
            "finbot",
            "FinBot",
            "finbot.mcp",
            "127.0.0.1",
            "[::1]",
            "[::1",
            "::1]",
            "::1",
            "[fe80::1%25eth0]",
            "",
            "fin bot",
            "\u00e9t\u00e9.example",
            "x" * 300,
            "169.254.169.254",
        ]
    ),
    TEMPLATES,
    TEXT,
)
PORTS = st.one_of(
    st.just(""),
    st.integers(-5, 200_000).map(lambda port: f":{port}"),
    st.sampled_from([":", ":http", ": 80", ":0x50", ":+80", ":\u0661\u0662"]),
    TEMPLATES.map(lambda t: f":{t}"),
    TEXT.map(lambda t: f":{t}"),
)
USERINFO = st.one_of(
    st.just(""),
    st.sampled_from(["u:p@", "admin:Pr0m/Pass@", "a:b#c@", "a:b?c@", "@", "a@b@", ":@"]),
    TEXT.map(lambda t: f"{t}@"),
)
URLS = st.one_of(
    st.builds(
        lambda scheme, user, host, port, path: f"{scheme}{user}{host}{port}{path}",
        st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "file://", "", "http:/"]),
        USERINFO,
        HOSTS,
        PORTS,
        st.one_of(st.just(""), st.just("/health"), SHORT.map(lambda p: f"/{p}")),
    ),
    SHORT,
)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    SHORT,
    URLS,
)
JSON = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(TEXT, children, max_size=3)
    ),
    max_leaves=8,
)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any] = JSON) -> Any:
    """``good`` nine times in ten, else ``bad`` (by default: any value at all), so that
    most examples get past the schema and reach the checks behind it."""
    # 7: not a bound, which hypothesis draws more often than the other values
    return st.integers(0, 9).flatmap(lambda n: bad if n == 7 else good)


SECRET_REFS = st.one_of(
    st.fixed_dictionaries({"name": st.sampled_from(["tokens", "Bad_Name", ""]), "key": TEXT}),
    JSON,
)
DNS_LABELS = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?\Z")

# Field-aware values, so that the validators behind the params see plausible input often.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "url": URLS,
    "path": st.one_of(st.just("/mcp/finbot/events/test"), SHORT),
    "module": st.one_of(st.sampled_from(["finbot", "mubot", "nope", "Fin_Bot"]), SHORT),
    "namespace": NAMESPACES,
    "argocdNamespace": NAMESPACES,
    "name": st.one_of(DNS_LABELS, SHORT),
    "application": st.one_of(DNS_LABELS, SHORT),
    "selector": st.one_of(st.sampled_from(["app=x", "app in (a,b)", "!x", "=", ""]), SHORT),
    "kind": st.one_of(
        st.sampled_from(["Deployment", "StatefulSet", "ConfigMap", "ClusterPolicy", "Secret"]),
        SHORT,
    ),
    "apiVersion": st.sampled_from(["v1", "apps/v1", "kyverno.io/v1", "a/b/c", "/", ""]),
    "pattern": st.one_of(st.sampled_from(["mcp:*", "*", "mcp", "[mcp]:*", "mcp:\\"]), SHORT),
    "query": SHORT,
    "condition": st.one_of(st.sampled_from(["> 0", ">= 0.8", "== 1", "=> 1", "> 1e999"]), SHORT),
    "mergePatch": JSON,
    "method": st.sampled_from(["GET", "POST", "get", "TRACE"]),
    "sections": st.lists(st.sampled_from(["memory", "stats", "keyspace", "x"]), max_size=4),
    "baseUrlSecretRef": SECRET_REFS,
    "redis": st.one_of(st.fixed_dictionaries({"urlSecretRef": SECRET_REFS}), JSON),
    "prometheus": st.one_of(st.fixed_dictionaries({"urlSecretRef": SECRET_REFS}), JSON),
    "argocd": st.one_of(
        st.fixed_dictionaries({"urlSecretRef": SECRET_REFS, "tokenSecretRef": SECRET_REFS}), JSON
    ),
    "webhook": st.one_of(st.fixed_dictionaries({"urlSecretRef": SECRET_REFS}), JSON),
}
NUMBERS = st.one_of(
    st.integers(-10, 100_000), st.floats(allow_nan=True), st.sampled_from(["10", "x"])
)


def plausible(annotation: Any) -> st.SearchStrategy[Any]:
    """A value of the field's type (pydantic's annotation), or else anything."""
    if annotation is bool:
        return st.booleans()
    if annotation is int or annotation == int | None:
        return st.integers(-5, 100_000)
    if annotation is float:
        return st.floats(-1, 400)
    if annotation is str or annotation == str | None:
        return SHORT
    return JSON


def params_for(action: str) -> st.SearchStrategy[dict[str, Any]]:
    """Any subset of the action's params (with a junk key now and then), each value
    plausible for its field nine times in ten, else anything at all."""
    spec = REGISTRY.get(action)
    optional: dict[str, st.SearchStrategy[Any]] = {}
    if spec is not None:
        for name, info in spec.params.model_fields.items():
            field = info.alias or name
            optional[field] = mostly(FIELD_VALUES.get(field, plausible(info.annotation)))
    known = st.fixed_dictionaries({}, optional=optional)
    junk = st.dictionaries(TEXT, JSON, max_size=2)
    return mostly(known, st.builds(lambda a, b: {**b, **a}, known, junk))


ACTIONS = mostly(st.sampled_from(sorted(REGISTRY)), st.one_of(st.just("nukeIt"), TEXT))
STEP_NAMES = st.one_of(st.sampled_from(["first", "later"]), DNS_LABELS)


@st.composite
def step_dicts(draw: st.DrawFn) -> dict[str, Any]:
    action = draw(ACTIONS)
    step: dict[str, Any] = {"name": draw(STEP_NAMES), "action": action}
    step["params"] = draw(params_for(action))
    extra = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "timeoutSeconds": NUMBERS,
                "retries": NUMBERS,
                "continueOnFailure": st.one_of(st.booleans(), JSON),
                "name": st.one_of(SHORT, JSON),
                "params": JSON,
                "unknown": JSON,
            },
        )
    )
    if draw(st.integers(0, 9)) == 7:  # now and then (7: not a bound): the wrong type somewhere
        step.update(extra)
    return step


TARGET_NAMES = mostly(st.one_of(DNS_LABELS, TEMPLATES), SHORT)
# Well-formed steps whose targets (URL, namespace, pattern) come from templates and alert
# labels: what reaches the refusal checks after rendering.
FOCUSED_PARAMS = st.one_of(
    st.tuples(st.just("httpHealthCheck"), st.fixed_dictionaries({"url": URLS})),
    st.tuples(
        st.just("httpRequest"),
        st.fixed_dictionaries({"url": URLS}, optional={"method": FIELD_VALUES["method"]}),
    ),
    st.tuples(
        st.just("rolloutRestart"),
        st.fixed_dictionaries({"name": TARGET_NAMES}, optional={"namespace": NAMESPACES}),
    ),
    st.tuples(
        st.just("patchResource"),
        st.fixed_dictionaries(
            {"name": TARGET_NAMES, "mergePatch": st.just({"data": {"a": "b"}})},
            optional={
                "namespace": NAMESPACES,
                "kind": FIELD_VALUES["kind"],
                "apiVersion": FIELD_VALUES["apiVersion"],
            },
        ),
    ),
    st.tuples(
        st.just("argocdSync"),
        st.fixed_dictionaries(
            {"application": TARGET_NAMES}, optional={"argocdNamespace": NAMESPACES}
        ),
    ),
    st.tuples(
        st.just("redisExpireKeys"),
        st.fixed_dictionaries(
            {
                "pattern": st.one_of(FIELD_VALUES["pattern"], TEMPLATES.map(lambda t: f"mcp:{t}")),
                "ttlSeconds": st.integers(0, 10),
            }
        ),
    ),  # fmt: skip
    st.tuples(
        st.just("kyvernoPolicyCheck"),
        st.fixed_dictionaries({}, optional={"namespace": NAMESPACES, "resource": SHORT}),
    ),
)


@st.composite
def focused_step_dicts(draw: st.DrawFn) -> dict[str, Any]:
    action, params = draw(FOCUSED_PARAMS)
    return {"name": draw(STEP_NAMES), "action": action, "params": params}


MATCHERS = st.one_of(
    st.sampled_from(
        ['severity=~"warning|critical"', 'env!="dev"', 'a=~"(oops"', "a=", "=b", '{a="b"}', ""]
    ),
    SHORT,
)
RUNBOOK_SPECS = mostly(
    st.fixed_dictionaries(
        {
            "steps": st.lists(
                mostly(st.one_of(step_dicts(), focused_step_dicts())), min_size=1, max_size=4
            )
        },
        optional={
            "triggers": st.lists(
                mostly(
                    st.fixed_dictionaries(
                        {"alertname": SHORT}, optional={"matchers": st.lists(MATCHERS, max_size=3)}
                    )
                ),
                max_size=3,
            ),
            "target": mostly(st.fixed_dictionaries({"namespace": NAMESPACES})),
            "guardrails": mostly(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "groupBy": st.lists(SHORT, max_size=3),
                        "cooldownSeconds": st.integers(0, 10_000),
                        "maxPerHour": st.integers(0, 100),
                        "maxConcurrent": st.integers(1, 10),
                    },
                )
            ),
            "onFailure": mostly(st.fixed_dictionaries({"escalateTo": DNS_LABELS})),
            "serviceAccountName": mostly(DNS_LABELS),
            "suspend": mostly(st.booleans()),
            "description": mostly(TEXT),
        },
    )
)


def assert_problems(problems: Any) -> None:
    assert isinstance(problems, list)
    for problem in problems:
        assert isinstance(problem, Problem)
        assert REASON.fullmatch(problem.reason), problem
        assert problem.message, problem
        assert problem.reason != VALIDATION_FAILED, problem  # the safety net never fired


# -- (a) runbook validation and lint -----------------------------------------------------


@given(spec=RUNBOOK_SPECS, namespace=st.one_of(st.none(), NAMESPACES))
def test_any_runbook_spec_is_valid_or_a_list_of_problems(spec: Any, namespace: str | None) -> None:
    problems = check_runbook(spec, SETTINGS, namespace)
    assert_problems(problems)
    event(f"first problem: {problems[0].reason if problems else 'none (Valid)'}")


PROBLEM = re.compile(r": [A-Z][A-Za-z]+: \S")


@given(
    kind=st.sampled_from(["McpRunbook", "McpRemediation"]),
    metadata=st.one_of(
        st.fixed_dictionaries(
            {"name": st.one_of(DNS_LABELS, SHORT)}, optional={"namespace": NAMESPACES}
        ),
        JSON,
    ),
    spec=st.one_of(
        RUNBOOK_SPECS,
        st.fixed_dictionaries(
            {},
            optional={
                "steps": st.lists(st.one_of(step_dicts(), JSON), max_size=3),
                "runbookRef": st.one_of(st.fixed_dictionaries({"name": SHORT}), JSON),
                "labels": st.one_of(st.dictionaries(TEXT, SHORT, max_size=3), JSON),
                "serviceAccountName": st.one_of(SHORT, JSON),
            },
        ),
    ),
)
# Found by this property: a name with a line break broke lint's one line per problem.
@example(kind="McpRunbook", metadata={"name": "\r"}, spec={})
def test_lint_answers_a_line_per_problem_for_any_document(
    kind: str, metadata: Any, spec: Any
) -> None:
    document = {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "doc.yaml"
        path.write_text(yaml.safe_dump(document, allow_unicode=True))
        out = io.StringIO()
        code = lint_paths([str(path)], SETTINGS, out)
    lines = out.getvalue().splitlines()
    assert code in (0, 1), lines
    assert lines[-1] == f"1 checked, {code} invalid"
    for line in lines[:-1]:
        # The document's line, or the line of the field a problem is about.
        assert re.match(rf"{re.escape(str(path))}:\d+: {kind}/", line), line
        assert line.endswith(": ok") or PROBLEM.search(line), line
        assert line.isprintable() and ": ValidationFailed: " not in line, line
    assert (code == 0) == (len(lines) == 2 and lines[0].endswith(": ok"))
    event(f"lint exit {code}")


# -- (c) what messages show of a URL ------------------------------------------------------

PASSWORDS = st.text(alphabet="Q/?#@:[]%-_.~ \u2019", min_size=1, max_size=12).map(
    lambda text: f"Q{text}Q"
)


@given(
    scheme=st.sampled_from(["http", "https", "redis", "rediss"]),
    user=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", max_size=5),
    password=PASSWORDS,
    host=st.sampled_from(["finbot", "finbot.mcp", "127.0.0.1", "[::1]", "redis-0.redis"]),
    port=st.one_of(st.just(""), st.integers(0, 70_000).map(lambda p: f":{p}")),
    path=st.text(alphabet="abcdefghijklmnopqrstuvwxyz/@?=#", max_size=12),
)
# Found by this test: the "/" ended the authority inside the password, whose second piece
# then read as the host ("http://:Q@Q/Q@finbot" showed "http://q/Q@finbot").
@example(scheme="http", user="", password="Q@Q/Q", host="finbot", port="", path="")
def test_no_part_of_a_password_is_ever_shown(
    scheme: str, user: str, password: str, host: str, port: str, path: str
) -> None:
    url = f"{scheme}://{user}:{password}@{host}{port}{path}"
    for shown in (redact.safe_host(url, "-"), redact.safe_url(url, "-")):
        assert "Q" not in shown, (url, shown)
        assert "\u2019" not in shown, (url, shown)
    event("shown" if redact.safe_host(url, "-") != "-" else "fallback")


# -- (b) the engine's step preparation ----------------------------------------------------

LABEL_VALUES = st.one_of(
    st.sampled_from(
        ["99999", "-1", "8080", "[::1", "kube-system", "mcp", "finbot", "", "a/b", "\u2019"]
    ),
    TEXT,
)
INPUTS = st.builds(
    templates.Inputs,
    labels=st.dictionaries(
        st.sampled_from(["port", "namespace", "deployment", "path", "x"]), LABEL_VALUES
    ),
    annotations=st.dictionaries(st.sampled_from(["summary", "x"]), LABEL_VALUES),
    steps=st.dictionaries(
        st.sampled_from(["first", "later"]),
        st.dictionaries(st.sampled_from(["names", "x"]), LABEL_VALUES, max_size=2),
        max_size=2,
    ),
)


@st.composite
def any_steps(draw: st.DrawFn) -> Step:
    action = draw(ACTIONS)
    return Step(name=draw(STEP_NAMES), action=action, params=draw(params_for(action)))


@st.composite
def focused_steps(draw: st.DrawFn) -> Step:
    action, params = draw(FOCUSED_PARAMS)
    return Step(name=draw(STEP_NAMES), action=action, params=params)


steps = st.one_of(any_steps(), focused_steps())


@given(step=steps, inputs=INPUTS, namespace=NAMESPACES)
def test_step_preparation_gives_params_or_a_step_failure_or_a_refusal(
    step: Step, inputs: templates.Inputs, namespace: str
) -> None:
    try:
        spec, params = prepare_step(step, inputs, SETTINGS, namespace)
    except (StepFailed, Refused) as exc:
        assert REASON.fullmatch(exc.reason), exc
        assert exc.message
        assert exc.reason != INTERNAL_ERROR, exc.message  # the safety net never fired
        event(f"{type(exc).__name__}: {exc.reason}")
    else:
        assert spec.name == step.action
        assert isinstance(params, spec.params)
        event("params")


@given(
    spec=st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "steps": st.lists(st.one_of(step_dicts(), JSON), max_size=2),
                "runbookRef": JSON,
                "labels": JSON,
                "alert": JSON,
                "dryRun": JSON,
            },
        ),
        JSON,
    ),
    status=st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "phase": st.one_of(st.sampled_from(["Running", "Succeeded", "Bogus"]), JSON),
                "steps": JSON,
                "plan": JSON,
            },
        ),
        JSON,
    ),
)
# Found by this property: a status phase of the wrong type raised TypeError in Run().
@example(spec={}, status={"phase": []})
def test_a_remediation_of_any_shape_is_read_or_marked_invalid(spec: Any, status: Any) -> None:
    body = {"metadata": {"name": "r", "namespace": "mcp"}, "spec": spec, "status": status}
    run = Run(body)
    if run.invalid is not None:
        assert run.invalid[0] in ("InvalidSpec", "InvalidStatus") and run.invalid[1]
