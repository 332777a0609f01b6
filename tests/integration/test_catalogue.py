"""The runbook catalogue (manifests/runbooks): the operations guide's procedures as McpRunbooks.

Checks what a GitOps repo's CI and a reviewer would: ``mcp-remediator lint`` passes (and
fails, with a precise message, on a Kyverno write, an unknown action or a bad template);
every procedure of the guide (seed/RUNBOOKS.md) has its runbook with evidence, a fix and a
verification; every trigger names an alert of manifests/prometheus/rules.yaml and reads
only labels that alert carries (as its promtool tests show them); ``simulate`` sends a
payload of each alert to the expected runbook with every template rendered. (That the
copy the package ships for the demo is identical is checked with every generated file,
tests/unit/test_generate.py.)
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_remediator.actions import REGISTRY
from mcp_remediator.models import RunbookSpec
from mcp_remediator.runbook import templates
from mcp_remediator.settings import Settings
from mcp_remediator.tools.lint import lint_paths
from mcp_remediator.tools.simulate import simulate

ROOT = Path(__file__).parents[2]
CATALOGUE = ROOT / "manifests" / "runbooks"
PROMETHEUS = ROOT / "manifests" / "prometheus"

# seed/RUNBOOKS.md: each procedure, the runbook that carries it, and whether a metric can
# prove the recovery (then the runbook ends in a verification before its note).
PROCEDURES = {
    "RedisDown": ("redis-down", True),
    "RedisHighMemoryUsage": ("redis-high-memory", True),
    "RedisLowCacheHitRatio": ("redis-low-cache-hit-ratio", True),
    "Prometheus timeout": ("prometheus-timeout", True),
    "Argo CD sync drift": ("argocd-sync-drift", True),
    "Kyverno policy block": ("kyverno-policy-block", False),
    "API 401/403": ("api-auth-errors", True),
    "Promise rejection analysis": ("promise-rejections", True),
    "WebSocket connections": ("websocket-no-connections", True),
    "WebSocket event publishing": ("websocket-events-not-published", True),
}
# Runbooks no alert starts: other runbooks escalate to them.
ESCALATIONS = {"argocd-sync-stuck", "notify-oncall"}
# The guide's other name for RedisLowCacheHitRatio; rules.yaml defines only the latter.
ALIASES = {"RedisCacheHitRateLow": "RedisLowCacheHitRatio"}
VERIFIERS = {"prometheusVerify", "redisPing", "argocdSync"}


def runbooks() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(CATALOGUE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "McpRunbook":
                found[doc["metadata"]["name"]] = doc
    return found


def alert_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "rules.yaml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def alert_labels() -> dict[str, dict[str, str]]:
    """Each alert's labels as its promtool unit tests expect them when it fires."""
    labels: dict[str, dict[str, str]] = {}
    for test in yaml.safe_load((PROMETHEUS / "tests.yaml").read_text())["tests"]:
        for check in test["alert_rule_test"]:
            for expected in check["exp_alerts"]:
                labels.setdefault(check["alertname"], dict(expected["exp_labels"]))
    return labels


def label_refs(spec: dict[str, Any]) -> set[str]:
    """Alert labels a runbook reads: templates, groupBy and trigger matchers."""
    refs = {ref.key for ref in templates.refs(spec) if ref.root == "labels"}
    refs.update(spec.get("guardrails", {}).get("groupBy", []))
    for trigger in spec.get("triggers", []):
        for matcher in trigger.get("matchers", []):
            refs.add(matcher.split("=")[0].split("!")[0].strip())
    return refs


def lint(*paths: Path) -> tuple[int, str]:
    out = io.StringIO()
    code = lint_paths([str(p) for p in paths], Settings(), out)
    return code, out.getvalue()


def test_mcp_remediator_lint_passes_on_the_catalogue() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mcp_remediator", "lint", str(CATALOGUE)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == f"{len(runbooks())} checked, 0 invalid"


def test_the_kustomization_applies_every_runbook() -> None:
    kustomization = yaml.safe_load((CATALOGUE / "kustomization.yaml").read_text())
    files = {p.name for p in CATALOGUE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    built = subprocess.run(
        ["kubectl", "kustomize", str(CATALOGUE)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    names = sorted(d["metadata"]["name"] for d in yaml.safe_load_all(built.stdout) if d)
    assert names == sorted(runbooks())


@pytest.mark.parametrize("procedure", PROCEDURES)
def test_every_procedure_of_the_guide_has_its_runbook(procedure: str) -> None:
    name, verifiable = PROCEDURES[procedure]
    runbook = runbooks()[name]
    spec = RunbookSpec.model_validate(runbook["spec"])
    actions = [step.action for step in spec.steps]
    assert spec.triggers, f"{name}: no alert starts it"
    # CHECK: evidence comes first, from a read-only action.
    assert not REGISTRY[actions[0]].writes, f"{name}: the first step should gather evidence"
    # HUMAN steps are only ever text in a note, never actions of their own.
    assert "notify" in actions or spec.onFailure.escalateTo == "notify-oncall"
    # AUTO: something is done (the Kyverno procedure's only "fix" is the note to Git).
    fixes = [a for a in actions if REGISTRY[a].writes and a != "notify"]
    assert fixes or procedure == "Kyverno policy block"
    if verifiable:
        last_fix = max(i for i, a in enumerate(actions) if a in fixes)
        checks = [a for a in actions[last_fix + 1 :] if a in VERIFIERS] or [actions[last_fix]]
        assert checks[-1] in VERIFIERS, f"{name}: nothing proves the recovery"
    assert spec.onFailure.escalateTo in ESCALATIONS, f"{name}: a failure must reach people"


def test_guardrails_are_explicit_and_risky_changes_need_approval() -> None:
    for name, runbook in runbooks().items():
        spec = runbook["spec"]
        if name == "notify-oncall":
            assert "guardrails" not in spec and "triggers" not in spec
            continue
        guardrails = spec["guardrails"]
        assert {"groupBy", "cooldownSeconds", "maxPerHour"} <= set(guardrails), name
        actions = {step["action"] for step in spec["steps"]}
        # A configuration change outside Git waits for a person.
        assert ("patchResource" in actions) == bool(guardrails.get("requireApproval")), name
        for step in spec["steps"]:
            if step["action"] == "redisExpireKeys":
                assert step["params"]["pattern"].startswith("mcp:"), name
            if step["action"] == "patchResource":
                assert step["params"]["kind"] == "ConfigMap"
                assert not step["params"].get("allowGitOpsDrift"), name


def test_escalations_and_step_outputs_refer_to_what_exists() -> None:
    catalogue = runbooks()
    assert ESCALATIONS <= set(catalogue)
    for name, runbook in catalogue.items():
        spec = runbook["spec"]
        target = spec.get("onFailure", {}).get("escalateTo")
        assert target is None or target in catalogue, f"{name} escalates to {target}"
        assert bool(spec.get("triggers")) == (name not in ESCALATIONS), name
        # A template may only read the outputs of an earlier step that must have succeeded:
        # a step allowed to fail leaves no outputs, and the reading step would fail too.
        may_fail = {s["name"] for s in spec["steps"] if s.get("continueOnFailure")}
        for step in spec["steps"]:
            read = {ref.step for ref in templates.refs(step.get("params", {})) if ref.step}
            assert not read & may_fail, f"{name}/{step['name']} reads {read & may_fail}"
    # The guide's "find the failing module, then restart it".
    steps = {s["name"]: s for s in catalogue["promise-rejections"]["spec"]["steps"]}
    assert steps["restart"]["params"]["name"] == "{{ steps.find.outputs.labels.module }}"


def test_every_trigger_names_an_alert_of_the_rules_and_reads_only_its_labels() -> None:
    rules, labels = alert_rules(), alert_labels()
    triggered: dict[str, set[str]] = {}
    for name, runbook in runbooks().items():
        for trigger in runbook["spec"].get("triggers", []):
            alertname = ALIASES.get(trigger["alertname"], trigger["alertname"])
            assert alertname in rules, f"{name}: no alert {trigger['alertname']} in rules.yaml"
            triggered.setdefault(name, set()).add(trigger["alertname"])
            carried = set(labels[alertname]) | {"alertname"}
            missing = label_refs(runbook["spec"]) - carried
            assert not missing, f"{name} reads {missing}, which {alertname} does not carry"
    assert triggered["redis-low-cache-hit-ratio"] == {"RedisLowCacheHitRatio", *ALIASES}


def payload(*alerts: tuple[str, dict[str, str]]) -> dict[str, Any]:
    rules = alert_rules()
    return {
        "version": "4",
        "status": "firing",
        "receiver": "mcp-remediator",
        "groupKey": "{}:{}",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": alertname, **labels},
                "annotations": {
                    "summary": rules[ALIASES.get(alertname, alertname)]["annotations"]["summary"]
                },
                "startsAt": "2026-11-28T01:26:33.953Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": f"{index:016x}",
            }
            for index, (alertname, labels) in enumerate(alerts)
        ],
    }


def test_simulate_sends_each_alert_to_its_runbook_with_every_template_rendered(
    tmp_path: Path,
) -> None:
    labels = alert_labels()
    cases = [(name, labels[name]) for name in alert_rules()]
    cases.append(("McpPromiseRejectionRateHigh", {**labels["McpPromiseRejectionRateHigh"],
                                                  "module": "observability"}))  # fmt: skip
    cases.append(("RedisCacheHitRateLow", labels["RedisLowCacheHitRatio"]))
    (tmp_path / "alerts.json").write_text(json.dumps(payload(*cases)))
    out = io.StringIO()

    code = simulate(str(tmp_path / "alerts.json"), [str(CATALOGUE)], Settings(), out)

    assert code == 0, out.getvalue()
    report = yaml.safe_load(out.getvalue())
    matched = {}
    for (alertname, alert), entry in zip(cases, report, strict=True):
        key = f"{alertname}/{alert.get('module', '')}"
        remediations = entry["remediations"]
        if isinstance(remediations, str):
            matched[key] = remediations
            continue
        matched[key] = ",".join(r["runbook"] for r in remediations)
        for remediation in remediations:
            assert remediation["outcome"].startswith("created"), remediation
            assert "wouldFail" not in remediation, remediation
            assert remediation["namespace"] == "mcp"
    unmatched = "unmatched: no runbook's trigger matches"
    assert matched == {
        "RedisDown/": "redis-down",
        "RedisHighMemoryUsage/": "redis-high-memory",
        "RedisLowCacheHitRatio/": "redis-low-cache-hit-ratio",
        "RedisCacheHitRateLow/": "redis-low-cache-hit-ratio",
        "McpPromiseRejectionRateHigh/finbot": "promise-rejections",
        "McpPromiseRejectionRateHigh/observability": "prometheus-timeout",
        "McpWebSocketNoConnections/": "websocket-no-connections",
        "McpWebSocketEventsNotPublished/finbot": "websocket-events-not-published",
        "McpApiAuthErrors/": "api-auth-errors",
        "McpArgoCdAppOutOfSync/": "argocd-sync-drift",
        "McpKyvernoAdmissionBlocked/": "kyverno-policy-block",
        # No procedure of the guide: these alerts stay with people.
        "RedisHighLatency/": unmatched,
        "McpHighCpuUsage/": unmatched,
        "McpHighMemoryUsage/": unmatched,
    }
    websocket = next(e for e in report if e["alert"] == "McpWebSocketEventsNotPublished")
    event = websocket["remediations"][0]["steps"][2]
    assert event["params"]["path"] == "/mcp/finbot/events/test"


BROKEN = """\
apiVersion: mcp.dese.ai/v1alpha1
kind: McpRunbook
metadata: {{name: broken, namespace: mcp}}
spec:
  triggers: [{{alertname: McpKyvernoAdmissionBlocked}}]
  target: {{namespace: "{{{{ labels.namespace }}}}"}}
  steps:
    - {step}
"""


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (
            "{name: relax-policy, action: patchResource, params: {apiVersion: kyverno.io/v1, "
            "kind: ClusterPolicy, name: require-signed-images, "
            "mergePatch: {spec: {validationFailureAction: Audit}}}}",
            "ManualKyvernoOverrideRefused: step relax-policy: refused: writing "
            "kyverno.io/ClusterPolicy/require-signed-images would override Kyverno by hand; "
            "Kyverno policy changes go through the GitOps repository (policies/kyverno) and "
            "Argo CD, never through the operator",
        ),
        (
            "{name: fix-it, action: restartEverything, params: {}}",
            "UnknownAction: spec.steps[0].action: unknown action 'restartEverything' (known: "
            + ", ".join(sorted(REGISTRY))
            + ")",
        ),
        (
            '{name: restart, action: rolloutRestart, params: {name: "{{ labels.deployment '
            "| default('dese-api') }}\"}}",
            "InvalidTemplate: step restart: invalid template "
            "{{ labels.deployment | default('dese-api') }}: only labels.NAME, "
            "annotations.NAME and steps.STEP.outputs.KEY are allowed",
        ),
    ],
    ids=["kyverno-write", "unknown-action", "bad-template"],
)
def test_lint_fails_with_a_precise_message(tmp_path: Path, step: str, expected: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN.format(step=step))

    code, output = lint(path)

    assert code == 1
    assert output.splitlines() == [
        f"{path}:8: McpRunbook/broken: {expected}",  # the step's line
        "1 checked, 1 invalid",
    ]
