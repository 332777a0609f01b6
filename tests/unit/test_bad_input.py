"""Issue 11, hardening: every bad input gets a clear answer and nothing wedges (pure parts).

Malformed URLs end as refusals or problems, never as exceptions; the runbook cache and
``lint`` survive any runbook; step preparation fails the step with a reason; secrets
(userinfo, tokens, whatever a non-Redis server answers) never reach a message.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest

from mcp_remediator import cli
from mcp_remediator.alerts.cache import RunbookCache
from mcp_remediator.engine import Engine, prepare_step
from mcp_remediator.errors import Refused, StepFailed
from mcp_remediator.kube import refusals
from mcp_remediator.models import API_VERSION, Step
from mcp_remediator.runbook import templates
from mcp_remediator.runbook.validation import check_runbook, check_steps
from mcp_remediator.settings import Settings
from mcp_remediator.tools.lint import lint_paths

SETTINGS = Settings(http_allowed_hosts=["finbot", "finbot:8080"])
BAD_URLS = [
    "http://finbot:99999/",
    "http://[::1/",
    "http://finbot:port/",
    "http://finbot:-1/",
    "http://:80/",
    "https://finbot:8080:9090/",
]
SECRET = "Pr0mPassw0rd"


def health_step(url: str, name: str = "probe") -> dict[str, Any]:
    return {"name": name, "action": "httpHealthCheck", "params": {"url": url}}


def runbook_spec(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"triggers": [{"alertname": "FinbotDown"}], "steps": list(steps)}


# -- malformed URLs: refused, never raised -----------------------------------------------


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_malformed_url_is_refused_not_raised(url: str) -> None:
    with pytest.raises(Refused) as caught:
        refusals.check_url(SETTINGS, url)
    assert caught.value.reason == refusals.HOST_NOT_ALLOWED
    assert "not a valid http(s) URL" in caught.value.message


def test_a_refused_url_is_named_by_its_host_only() -> None:
    for url in (f"ftp://admin:{SECRET}@finbot/x?token={SECRET}", f"http://admin:{SECRET}@evil/"):
        with pytest.raises(Refused) as caught:
            refusals.check_url(SETTINGS, url)
        assert SECRET not in caught.value.message


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_runbook_with_a_malformed_url_is_invalid_with_a_reason(url: str) -> None:
    problems = check_runbook(runbook_spec(health_step(url)), SETTINGS)
    assert [p.reason for p in problems] == [refusals.HOST_NOT_ALLOWED]
    assert problems[0].message.startswith("step probe: refused:")


def test_an_unexpected_error_of_a_validator_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any) -> None:
        raise KeyError("secret-detail")

    monkeypatch.setattr(refusals, "check_url", broken)
    [problem] = check_steps([Step.model_validate(health_step("http://finbot/"))], SETTINGS)
    assert problem.reason == "ValidationFailed"
    assert "KeyError" in problem.message and "secret-detail" not in problem.message


@pytest.mark.parametrize(
    "spec",
    [
        "not a mapping",
        ["a", "list"],
        {"steps": "nope"},
        {"steps": [None]},
        {"steps": [health_step("http://x/")], "triggers": [{"alertname": "A", "matchers": [7]}]},
        {"steps": [{"name": "a", "action": "httpRequest", "params": {"url": {"x": 1}}}]},
    ],
)
def test_check_runbook_answers_problems_for_any_shape(spec: Any) -> None:
    problems = check_runbook(spec, SETTINGS)
    assert problems and all(p.reason and p.message for p in problems)


def test_the_runbook_cache_keeps_a_bad_runbook_out_and_goes_on() -> None:
    cache = RunbookCache(SETTINGS)
    for index, url in enumerate([*BAD_URLS, "http://finbot/"]):
        cache.apply(
            None,
            {
                "apiVersion": API_VERSION,
                "kind": "McpRunbook",
                "metadata": {"name": f"rb{index}", "namespace": "mcp", "resourceVersion": "1"},
                "spec": runbook_spec(health_step(url)),
            },
        )
    cache.apply(None, {"metadata": {"name": "garbage", "namespace": "mcp"}, "spec": "x"})
    cache.apply(None, {"metadata": "not a mapping"})
    assert [r.name for r in cache.match({"alertname": "FinbotDown"})] == [f"rb{len(BAD_URLS)}"]


def test_lint_reports_file_line_and_reason_for_a_malformed_url(tmp_path: Path) -> None:
    path = tmp_path / "runbooks.yaml"
    path.write_text(
        "apiVersion: mcp.dese.ai/v1alpha1\nkind: McpRunbook\nmetadata: {name: good}\n"
        "spec:\n  steps:\n  - {name: a, action: httpHealthCheck, params: {url: 'http://finbot/'}}\n"
        "---\napiVersion: mcp.dese.ai/v1alpha1\nkind: McpRunbook\nmetadata: {name: bad}\n"
        "spec:\n  steps:\n"
        "  - {name: a, action: httpHealthCheck, params: {url: 'http://finbot:99999/'}}\n"
        "  - {name: b, action: httpRequest, params: {url: 'http://[::1/'}}\n"
        "---\napiVersion: mcp.dese.ai/v1alpha1\nkind: McpRemediation\nmetadata: {name: r}\n"
        "spec: {steps: [{name: a, action: httpRequest, params: {url: 'http://x:-1/'}}]}\n"
        "---\napiVersion: mcp.dese.ai/v1alpha1\nkind: McpRunbook\nmetadata: {name: odd}\n"
        "spec: [1, 2]\n"
        "---\n[not, a, mapping]\n"
        "---\napiVersion: mcp.dese.ai/v1alpha1\nkind: [McpRunbook]\nmetadata: {name: k}\n"
    )
    out = io.StringIO()

    assert lint_paths([str(path)], SETTINGS, out) == 1

    lines = out.getvalue().splitlines()
    assert f"{path}:1: McpRunbook/good: ok" in lines
    bad = [line for line in lines if line.startswith(f"{path}:8: McpRunbook/bad: ")]
    assert [line.split(": ")[2:4] for line in bad] == [
        ["HostNotAllowed", "step a"],
        ["HostNotAllowed", "step b"],
    ]
    assert all("not a valid http(s) URL" in line for line in bad)
    assert any(line.startswith(f"{path}:16: McpRemediation/r: HostNotAllowed") for line in lines)
    assert f"{path}:21: McpRunbook/odd: InvalidSpec: spec must be a mapping" in lines
    assert lines[-1] == "4 checked, 3 invalid"
    assert len(lines) == 6


def test_the_lint_command_exits_1_with_a_line_per_problem_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_HTTP_ALLOWED_HOSTS", "finbot")
    path = tmp_path / "bad.yaml"
    path.write_text(
        "apiVersion: mcp.dese.ai/v1alpha1\nkind: McpRunbook\nmetadata: {name: bad}\n"
        "spec:\n  steps:\n"
        "  - {name: a, action: httpHealthCheck, params: {url: 'http://finbot:99999/'}}\n"
    )

    assert cli.main(["lint", str(path)]) == 1

    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert out.splitlines()[0].startswith(f"{path}:1: McpRunbook/bad: HostNotAllowed: step a:")


def test_lint_of_unreadable_yaml_says_where_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("a: [unclosed\n")
    out = io.StringIO()
    assert lint_paths([str(path)], SETTINGS, out) == 2
    assert out.getvalue().startswith(f"{path}: cannot read:")


# -- step preparation: a reason, never an escape -----------------------------------------


def inputs(**labels: str) -> templates.Inputs:
    return templates.Inputs(labels=labels, annotations={}, steps={})


def test_a_label_that_renders_a_bad_port_fails_the_step_with_a_reason() -> None:
    step = Step.model_validate(health_step("http://finbot:{{ labels.port }}/health"))
    with pytest.raises(Refused) as caught:
        prepare_step(step, inputs(port="99999"), SETTINGS, "mcp")
    assert caught.value.reason == refusals.HOST_NOT_ALLOWED
    _, params = prepare_step(step, inputs(port="8080"), SETTINGS, "mcp")
    assert params.url == "http://finbot:8080/health"


def test_an_unexpected_error_in_preparation_names_its_type_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: Any) -> None:
        raise UnicodeEncodeError("ascii", f"Bearer {SECRET}\u2019", 7, 8, "no")

    monkeypatch.setattr(refusals, "check_url", broken)
    step = Step.model_validate(health_step("http://finbot/"))
    with pytest.raises(StepFailed) as caught:
        prepare_step(step, inputs(), SETTINGS, "mcp")
    assert caught.value.reason == "InternalError"
    assert "UnicodeEncodeError" in caught.value.message
    assert SECRET not in caught.value.message


def test_an_unexpected_action_error_is_reported_by_type_and_logged_without_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exc = UnicodeEncodeError("ascii", f"Bearer {SECRET}\u2019", 19, 20, "ordinal not in range")
    with caplog.at_level(logging.DEBUG):
        failure = Engine._failure("argocdSync", 30, exc)
    assert failure.reason == "InternalError"
    assert "UnicodeEncodeError" in failure.message and SECRET not in failure.message
    assert "UnicodeEncodeError" in caplog.text
    assert SECRET not in caplog.text
