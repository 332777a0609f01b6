"""Property-based: `lint` answers every document with a list of problems, never with an
exception (issue 11). Documents are generated around the shape of our two kinds (real
field names, wrong types, unknown keys, nesting anywhere, non-string keys, YAML's odd
scalars) and as valid runbooks with one field replaced by anything; arbitrary YAML text
goes through ``lint_paths`` as CI runs it."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from fixtures.hypothesis_lint import FUZZ
from mcp_remediator.actions import REGISTRY
from mcp_remediator.models import API_VERSION
from mcp_remediator.runbook.validation import Problem
from mcp_remediator.settings import Settings
from mcp_remediator.tools.lint import KINDS, Document, check_document, lint_paths

SETTINGS = Settings()
FIELDS = [
    "apiVersion", "kind", "metadata", "name", "namespace", "labels", "annotations", "spec",
    "steps", "action", "params", "retries", "timeoutSeconds", "continueOnFailure", "target",
    "triggers", "alertname", "matchers", "guardrails", "maxPerHour", "maxPerHuor", "dryRun",
    "groupBy", "cooldownSeconds", "maxConcurrent", "requireApproval", "onFailure",
    "escalateTo", "runbookRef", "serviceAccountName", "suspend", "approved", "alert",
    "ttlSecondsAfterFinished", "query", "message", "url", "kind", "mergePatch", "apiVersion",
]  # fmt: skip
TEXTS = [
    "{{ labels.namespace }}", "{{ labels.a | default('x') }}", "{{ steps.a.outputs.b }}",
    "{{", "}}", "kube-system", "kyverno", "kyverno.io/v1", "ClusterPolicy", "mcp", "x",
    'severity=~"warning"', "a=~(", "http://evil/x", "mcp:*", "yes", "2", "",
    *sorted(REGISTRY),
]  # fmt: skip

keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12), st.integers(-3, 3))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.sampled_from(TEXTS),
    st.text(max_size=20),
)
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=5),
    ),
    max_leaves=25,
)


def document(body: dict[Any, Any]) -> Document:
    """The document as lint reads it from a file: through YAML, with its nodes."""
    text = yaml.safe_dump(body, sort_keys=False, allow_unicode=True)
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    loaded = yaml.safe_load(text)
    return Document(Path("fuzz.yaml"), 1, loaded, node)


def lint_one(body: dict[Any, Any]) -> list[Problem]:
    problems = check_document(document(body), SETTINGS, "mcp")
    assert isinstance(problems, list)
    assert all(isinstance(p, Problem) and p.reason and p.message for p in problems)
    return problems


@FUZZ
@given(
    kind=st.sampled_from(KINDS),
    metadata=st.one_of(trees, st.just({"name": "x", "namespace": "mcp"})),
    spec=trees,
)
def test_any_document_of_our_kinds_gets_a_list_of_problems(
    kind: str, metadata: Any, spec: Any
) -> None:
    lint_one({"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec})


VALID = {
    "apiVersion": API_VERSION,
    "kind": "McpRunbook",
    "metadata": {"name": "redis-down", "namespace": "mcp"},
    "spec": {
        "triggers": [{"alertname": "RedisDown", "matchers": ['severity=~"warning|critical"']}],
        "target": {"namespace": "{{ labels.namespace }}"},
        "steps": [
            {"name": "restart", "action": "rolloutRestart",
             "params": {"kind": "StatefulSet", "name": "redis"}, "retries": 1},
            {"name": "verify", "action": "prometheusVerify",
             "params": {"query": 'min(redis_up{namespace="{{ labels.namespace }}"})',
                        "condition": "== 1", "forSeconds": 60}},
            {"name": "note", "action": "notify",
             "params": {"message": "{{ labels.alertname }}: {{ steps.verify.outputs.value }}"}},
        ],
        "guardrails": {"groupBy": ["alertname", "namespace"], "maxPerHour": 6},
        "onFailure": {"escalateTo": "notify-oncall"},
    },
}  # fmt: skip


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, sub in value.items():
            found.extend(paths(sub, (*prefix, key)))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            found.extend(paths(sub, (*prefix, index)))
    return found


def replaced(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(body, dict):
        return {k: replaced(v, rest, value) if k == head else v for k, v in body.items()}
    return [replaced(v, rest, value) if i == head else v for i, v in enumerate(body)]


def test_the_valid_runbook_of_these_tests_is_valid() -> None:
    assert lint_one(VALID) == []


@FUZZ
@given(
    path=st.sampled_from(paths(VALID)[1:]),
    value=trees,
    kind=st.sampled_from(KINDS),
)
def test_a_valid_runbook_with_any_field_replaced_gets_a_list_of_problems(
    path: tuple[Any, ...], value: Any, kind: str
) -> None:
    body = replaced(VALID, path, value)
    problems = lint_one(body)
    if json.dumps(body) == json.dumps(VALID):  # not ==: True == 1, yet not an integer
        assert problems == []
    lint_one({**body, "kind": kind})  # the same spec as an McpRemediation: never raises


@FUZZ
@given(st.text(max_size=300))
def test_any_yaml_text_gets_an_exit_code(text: str) -> None:
    text = f"apiVersion: {API_VERSION}\nkind: McpRunbook\n" + text
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_text(text)
        assert lint_paths([str(path)], SETTINGS, io.StringIO()) in (0, 1, 2)


def test_yaml_odd_scalars_are_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(
        f"apiVersion: {API_VERSION}\nkind: McpRunbook\nmetadata: {{name: x, 1: 2}}\n"
        "spec:\n  steps:\n  - name: r\n    action: rolloutRestart\n    retries: .nan\n"
        "    timeoutSeconds: 2024-01-01\n    params: {name: x}\n"
        "    continueOnFailure: null\n  <<: {description: merged}\n"
    )
    out = io.StringIO()
    assert lint_paths([str(path)], SETTINGS, out) == 1
    text = out.getvalue()
    assert "InvalidType: spec.steps[0].timeoutSeconds: expected integer, got date" in text
    assert "metadata[1]: unknown field" in text
