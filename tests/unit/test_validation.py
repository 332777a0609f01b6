"""Static checks of runbooks and steps, shared by the operator and `lint`."""

from pathlib import Path

from mcp_remediator.runbook.validation import check_runbook
from mcp_remediator.settings import Settings
from mcp_remediator.tools.lint import lint_paths

SETTINGS = Settings()


def reasons(spec: dict[str, object]) -> list[str]:
    return [p.reason for p in check_runbook(spec, SETTINGS)]


def test_a_good_runbook_has_no_problems() -> None:
    spec = {
        "target": {"namespace": "{{ labels.namespace }}"},
        "steps": [{"name": "restart", "action": "rolloutRestart",
                   "params": {"name": "{{ labels.deployment }}"}}],
    }  # fmt: skip
    assert check_runbook(spec, SETTINGS) == []


def test_each_problem_class_is_reported_with_its_reason() -> None:
    assert reasons({"steps": [{"name": "a", "action": "nukeIt"}]}) == ["UnknownAction"]
    assert reasons({"steps": [{"name": "a", "action": "rolloutRestart", "params": {}}]}) == [
        "InvalidParams"
    ]
    assert reasons(
        {"steps": [{"name": "a", "action": "rolloutRestart",
                    "params": {"name": "x", "replicas": 3}}]}
    ) == ["InvalidParams"]  # fmt: skip
    assert reasons(
        {"steps": [{"name": "a", "action": "rolloutRestart",
                    "params": {"name": "{{ secrets.token }}"}}]}
    ) == ["InvalidTemplate"]  # fmt: skip
    assert reasons({"steps": []}) == ["InvalidSpec"]
    assert reasons({"steps": [{"name": "Not_A_Label", "action": "rolloutRestart"}]}) == [
        "InvalidSpec"
    ]
    twice = {"name": "a", "action": "rolloutRestart", "params": {"name": "x"}}
    assert reasons({"steps": [twice, twice]}) == ["DuplicateStep"]


def test_literal_targets_in_kyverno_or_protected_namespaces_are_refused_statically() -> None:
    step = {"name": "a", "action": "rolloutRestart", "params": {"name": "x"}}
    assert reasons({"target": {"namespace": "kyverno"}, "steps": [step]}) == [
        "ManualKyvernoOverrideRefused"
    ]
    param_ns = {**step, "params": {"name": "x", "namespace": "kube-system"}}
    assert reasons({"steps": [param_ns]}) == ["ProtectedNamespace"]


def test_lint_exit_codes_and_messages(tmp_path: Path, capsys: object) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "apiVersion: mcp.dese.ai/v1alpha1\nkind: McpRunbook\nmetadata: {name: ok}\n"
        "spec:\n  steps:\n  - {name: r, action: rolloutRestart, params: {name: finbot}}\n"
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: mcp.dese.ai/v1alpha1\nkind: McpRunbook\nmetadata: {name: bad}\n"
        "spec:\n  steps:\n  - {name: r, action: flushAll}\n"
    )
    out = tmp_path / "out.txt"
    with out.open("w") as stream:
        assert lint_paths([str(good)], SETTINGS, stream) == 0
        assert lint_paths([str(tmp_path)], SETTINGS, stream) == 1
        assert lint_paths([str(tmp_path / "none.yaml")], SETTINGS, stream) == 2
    text = out.read_text()
    assert (
        f"{bad}:6: McpRunbook/bad: UnknownAction: spec.steps[0].action: unknown action "
        "'flushAll' (known: argocdSync, " in text
    )
    assert "1 checked, 0 invalid" in text


def test_a_templated_port_is_not_refused_but_a_literal_bad_port_is() -> None:
    settings = Settings(http_allowed_hosts=["finbot"])

    def problems(url: str) -> list[str]:
        step = {"name": "probe", "action": "httpHealthCheck", "params": {"url": url}}
        return [p.reason for p in check_runbook({"steps": [step]}, settings)]

    assert problems("http://finbot:{{ labels.port }}/health") == []
    assert problems("http://finbot:99999/{{ labels.path }}") == ["HostNotAllowed"]
