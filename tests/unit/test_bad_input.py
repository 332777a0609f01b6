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

import httpx
import pytest
import redis.exceptions
from pydantic import SecretStr

from mcp_remediator import cli, redact
from mcp_remediator.alerts.cache import RunbookCache
from mcp_remediator.engine import Engine, prepare_step
from mcp_remediator.errors import Refused, StepFailed
from mcp_remediator.kube import refusals
from mcp_remediator.models import API_VERSION, Step
from mcp_remediator.runbook import templates
from mcp_remediator.runbook.validation import check_runbook, check_steps
from mcp_remediator.settings import Settings, SettingsError
from mcp_remediator.tools.lint import lint_paths
from mcp_remediator.vendors import redis as redis_vendor
from mcp_remediator.vendors.argocd import ApiArgoCd
from mcp_remediator.vendors.prometheus import Prometheus

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


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kyverno"])
def test_a_runbook_in_a_protected_namespace_is_refused(namespace: str) -> None:
    problems = check_runbook(runbook_spec(health_step("http://finbot/")), SETTINGS, namespace)
    assert [p.reason for p in problems] == [refusals.PROTECTED_NAMESPACE]
    assert check_runbook(runbook_spec(health_step("http://finbot/")), SETTINGS, "mcp") == []


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
    # Each problem at the line of its step (lint shows the field's own line).
    bad = [line for line in lines if "McpRunbook/bad: " in line]
    assert [line.split(": ")[0] for line in bad] == [f"{path}:13", f"{path}:14"]
    assert [line.split(": ")[2:4] for line in bad] == [
        ["HostNotAllowed", "step a"],
        ["HostNotAllowed", "step b"],
    ]
    assert all("not a valid http(s) URL" in line for line in bad)
    assert any(line.startswith(f"{path}:19: McpRemediation/r: HostNotAllowed") for line in lines)
    assert f"{path}:24: McpRunbook/odd: InvalidType: spec: expected object, got array [1, 2]" in (
        lines
    )
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
    first = out.splitlines()[0]
    assert first.startswith(f"{path}:") and ": McpRunbook/bad: HostNotAllowed: step a:" in first


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


# -- secrets never in text ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://finbot:8080/x", "finbot:8080"),
        ("https://finbot/x", "finbot"),
        (f"http://admin:{SECRET}@prom:9090", "prom:9090"),
        (f"http://admin:{SECRET}@@prom:9090/", "prom:9090"),
        (f"http://admin:{SECRET[:4]}/{SECRET[4:]}@prom:9090", None),
        (f"http://admin:{SECRET[:4]}#{SECRET[4:]}@prom", None),
        (f"http://admin:{SECRET[:4]}?{SECRET[4:]}@prom", None),
        (f"http://admin:P[{SECRET}@prom", None),
        (f"admin:{SECRET}@prom:9090", None),
        ("http://[::1]:9090/", "[::1]:9090"),
        ("http://finbot:99999/", None),
        ("http://[::1/", None),
        ("", None),
        (f"redis://:{SECRET}@redis.mcp:6379/0", "redis.mcp:6379"),
    ],
)
def test_safe_host_names_host_and_port_never_userinfo(url: str, shown: str | None) -> None:
    assert redact.safe_host(url, "the URL") == (shown or "the URL")
    assert SECRET not in redact.safe_url(url, "the URL")


def test_safe_url_keeps_the_path_and_drops_userinfo_and_query() -> None:
    assert redact.safe_url(f"http://u:{SECRET}@finbot:8080/mcp/x?token={SECRET}#f") == (
        "http://finbot:8080/mcp/x"
    )


@pytest.mark.parametrize(
    "url",
    [
        f"http://admin:{SECRET}@prom:9090",
        f"http://admin:{SECRET[:4]}/{SECRET[4:]}@prom:9090",
        f"http://admin:{SECRET[:4]}#{SECRET[4:]}@prom",
    ],
)
def test_vendors_name_their_server_without_userinfo(url: str) -> None:
    settings = Settings(argocd_mode="api")
    texts = [Prometheus(settings, SecretStr(url)).where]
    try:
        texts.append(ApiArgoCd(None, settings, SecretStr(url), SecretStr("t")).where)  # type: ignore[arg-type]
    except StepFailed as exc:  # a URL that does not read unambiguously: not used at all
        assert exc.reason == "ArgoCdBadUrl"
        texts.append(exc.message)
    for text in texts:
        assert SECRET[4:] not in text and SECRET[:4] not in text


@pytest.mark.parametrize(
    ("token", "reason"), [(f"{SECRET}\u2019", "BadToken"), (f"{SECRET} x", "BadToken")]
)
def test_vendors_refuse_a_token_that_cannot_be_sent_naming_its_source(
    token: str, reason: str
) -> None:
    settings = Settings(argocd_mode="api")
    source = "Secret mcp/tokens key 'token'"
    with pytest.raises(StepFailed) as prometheus:
        Prometheus(settings, SecretStr("http://prom:9090"), SecretStr(token), token_source=source)
    with pytest.raises(StepFailed) as argocd:
        ApiArgoCd(None, settings, SecretStr("http://argo"), SecretStr(token),  # type: ignore[arg-type]
                  token_source=source)  # fmt: skip
    for caught, vendor in ((prometheus, "Prometheus"), (argocd, "ArgoCd")):
        assert caught.value.reason == f"{vendor}{reason}"
        assert source in caught.value.message and SECRET not in caught.value.message


@pytest.mark.parametrize(
    "token", [f"{SECRET}\u2019", f"{SECRET} x", f"{SECRET}\n", "tab\tbed", "\u00e9t\u00e9"]
)
@pytest.mark.parametrize(
    "setting", ["MCP_RECEIVER_TOKEN", "MCP_PROMETHEUS_TOKEN", "MCP_ARGOCD_TOKEN"]
)
def test_a_token_that_is_not_header_safe_is_rejected_naming_the_setting(
    tmp_path: Path, setting: str, token: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({setting: token})
    assert setting in str(caught.value)
    assert "visible ASCII" in str(caught.value)
    assert SECRET not in str(caught.value) and token not in str(caught.value)
    if redact.header_safe(token.strip()):  # files are read stripped: fine there
        return
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({f"{setting}_FILE": str(token_file)})
    assert f"{setting}_FILE" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_no_settings_error_shows_a_secret_value() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"MCP_RECEIVER_PORT": "eighty", "MCP_ARGOCD_TOKEN": f"{SECRET}\u2019"})
    text = str(caught.value)
    assert "MCP_RECEIVER_PORT" in text and "MCP_ARGOCD_TOKEN" in text
    assert SECRET not in text


def test_the_commands_name_a_bad_setting_but_never_its_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_PROMETHEUS_TOKEN", f"{SECRET}\u2019")
    (tmp_path / "empty.yaml").write_text("")

    with pytest.raises(SystemExit) as caught:
        cli.main(["lint", str(tmp_path)])

    out, err = capsys.readouterr()
    assert str(caught.value.code).startswith(
        "mcp-remediator: invalid settings: MCP_PROMETHEUS_TOKEN"
    )
    assert SECRET not in str(caught.value.code) + out + err


def test_a_header_safe_token_is_accepted() -> None:
    settings = Settings.from_env({"MCP_ARGOCD_TOKEN": "eyJhbGciOi.JIUzI1-NiJ9_x+/="})
    assert settings.argocd_token is not None


def wrapped(exc: Exception) -> redis.exceptions.ConnectionError:
    """As redis-py raises what went wrong while connecting: ``ConnectionError(exc)``."""
    try:
        raise redis.exceptions.ConnectionError(exc) from exc
    except redis.exceptions.ConnectionError as outer:
        return outer


@pytest.mark.parametrize(
    "exc",
    [
        redis.exceptions.InvalidResponse(f"Protocol Error: b'HTTP/1.1 400 {SECRET}'"),
        wrapped(redis.exceptions.InvalidResponse(f"Protocol Error: b'HTTP/1.1 400 {SECRET}'")),
        redis.exceptions.ConnectionError(f"Protocol error, got 'H' as reply type byte {SECRET}"),
    ],
)
def test_redis_protocol_errors_never_echo_what_answered(exc: redis.exceptions.RedisError) -> None:
    target = redis_vendor.parse_target("redis://cache:6379/0", "MCP_REDIS_URL")
    failure = redis_vendor.step_failure(exc, target, "pinging", timeout=5)
    assert failure.reason == "RedisProtocolError"
    assert SECRET not in failure.message
    assert "cache:6379/0" in failure.message


@pytest.mark.parametrize(
    "exc",
    [
        redis.exceptions.ResponseError(f"ERR \x1b[2J{SECRET}"),
        redis.exceptions.AuthenticationError(f"{SECRET}\u2019"),
        redis.exceptions.ConnectionError(f"Error reading {SECRET} " + "x" * 300),
    ],
)
def test_redis_error_texts_are_quoted_only_when_short_and_printable(
    exc: redis.exceptions.RedisError,
) -> None:
    target = redis_vendor.parse_target("redis://cache:6379/0", "MCP_REDIS_URL")
    failure = redis_vendor.step_failure(exc, target, "pinging", timeout=5)
    assert SECRET not in failure.message
    assert type(exc).__name__ in failure.message


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(502, text=f"<html>{SECRET}</html>"),
        httpx.Response(400, json={"detail": SECRET}),
        httpx.Response(500, json={"message": {"nested": SECRET}}),
    ],
)
async def test_argo_cd_errors_quote_only_argo_cds_own_message(answer: httpx.Response) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: answer)) as http:
        argocd = ApiArgoCd(http, Settings(argocd_mode="api"), SecretStr("http://argo"),
                           SecretStr("token"))  # fmt: skip
        with pytest.raises(StepFailed) as caught:
            await argocd.start_sync({"metadata": {"name": "a"}}, None, False, [])
    assert f"answered {answer.status_code}" in caught.value.message
    assert SECRET not in caught.value.message
