"""`simulate`: which remediations a payload would create, rendered, changing nothing."""

import json
from pathlib import Path

import yaml

from mcp_remediator import records
from mcp_remediator.settings import Settings
from mcp_remediator.tools.simulate import simulate

RUNBOOKS = """
apiVersion: mcp.dese.ai/v1alpha1
kind: McpRunbook
metadata: {name: redis-stale-cache, namespace: mcp}
spec:
  triggers:
  - alertname: RedisLowCacheHitRatio
    matchers: ['severity=~"warning|critical"', 'env!="dev"']
  target: {namespace: "{{ labels.namespace }}"}
  steps:
  - {name: restart, action: rolloutRestart, params: {name: "{{ labels.deployment }}"}}
  - name: again
    action: rolloutRestart
    params: {name: "{{ steps.restart.outputs.names }}"}
---
apiVersion: mcp.dese.ai/v1alpha1
kind: McpRunbook
metadata: {name: paused, namespace: mcp}
spec:
  suspend: true
  triggers: [{alertname: RedisLowCacheHitRatio}]
  steps: [{name: r, action: rolloutRestart, params: {name: x}}]
"""


def alert(fingerprint: str, **labels: str) -> dict[str, object]:
    return {
        "status": "firing",
        "labels": {"alertname": "RedisLowCacheHitRatio", **labels},
        "annotations": {},
        "startsAt": "2026-11-28T01:26:33.953Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }


def test_simulate_prints_rendered_steps_per_matching_runbook(tmp_path: Path) -> None:
    (tmp_path / "runbooks.yaml").write_text(RUNBOOKS)
    payload = {
        "version": "4",
        "alerts": [
            alert("aa", severity="critical", env="prod", namespace="mcp"),
            alert("bb", severity="critical", env="dev", namespace="mcp", deployment="d"),
        ],
    }
    alerts = tmp_path / "alerts.json"
    alerts.write_text(json.dumps(payload))
    out_path = tmp_path / "out.yaml"
    with out_path.open("w") as out:
        assert simulate(str(alerts), [str(tmp_path / "runbooks.yaml")], Settings(), out) == 0
    first, second = yaml.safe_load(out_path.read_text())
    stale, paused = first["remediations"]
    assert stale["remediation"] == records.remediation_name(
        "redis-stale-cache", "aa", "2026-11-28T01:26:33.953Z"
    )
    assert stale["namespace"] == "mcp"
    assert stale["steps"][1]["params"] == {"name": "{{ steps.restart.outputs.names }}"}
    assert stale["wouldFail"] == [
        "template {{ labels.deployment }}: 'deployment' is missing from the alert's labels "
        "or spec.labels"
    ]
    assert paused["outcome"] == "Skipped (Suspended)"
    assert [r["runbook"] for r in second["remediations"]] == ["paused"]  # env!="dev"


def test_unreadable_payload_exits_2(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.json"
    alerts.write_text('{"version": "3", "alerts": []}')
    out_path = tmp_path / "out.txt"
    with out_path.open("w") as out:
        assert simulate(str(alerts), [str(tmp_path)], Settings(), out) == 2
    assert "unsupported webhook payload version '3'" in out_path.read_text()


TENANT = """
apiVersion: mcp.dese.ai/v1alpha1
kind: McpRunbook
metadata: {name: redis-down, namespace: team-a}
spec:
  triggers: [{alertname: RedisDown}]
  steps: [{name: r, action: rolloutRestart, params: {name: x}}]
"""


def test_simulate_routes_alerts_by_namespace_like_the_receiver(tmp_path: Path) -> None:
    (tmp_path / "runbooks.yaml").write_text(TENANT)
    down = {**alert("aa"), "labels": {"alertname": "RedisDown", "namespace": "mcp"}}
    own = {**alert("bb"), "labels": {"alertname": "RedisDown", "namespace": "team-a"}}
    alerts = tmp_path / "alerts.json"
    alerts.write_text(json.dumps({"version": "4", "alerts": [down, own]}))
    out_path = tmp_path / "out.yaml"
    with out_path.open("w") as out:
        assert simulate(str(alerts), [str(tmp_path / "runbooks.yaml")], Settings(), out) == 0
    other, mine = yaml.safe_load(out_path.read_text())

    assert other["remediations"] == "unmatched: no runbook may take this alert"
    assert other["notRouted"] == [
        "team-a/redis-down: namespace team-a is not trusted (MCP_TRUSTED_NAMESPACES), so it "
        'takes only alerts with namespace="team-a"; this alert has namespace="mcp"'
    ]
    assert [r["runbook"] for r in mine["remediations"]] == ["redis-down"]
    assert "notRouted" not in mine
    trusting = Settings(trusted_namespaces=["mcp", "team-a"])
    with out_path.open("w") as out:
        assert simulate(str(alerts), [str(tmp_path / "runbooks.yaml")], trusting, out) == 0
    other, _ = yaml.safe_load(out_path.read_text())
    assert [r["runbook"] for r in other["remediations"]] == ["redis-down"]


INJECTABLE = """
apiVersion: mcp.dese.ai/v1alpha1
kind: McpRunbook
metadata: {name: redis-down, namespace: mcp}
spec:
  triggers: [{alertname: RedisDown}]
  target: {namespace: "{{ labels.namespace }}"}
  steps:
  - name: find
    action: prometheusQuery
    params: {query: 'max(redis_up{instance="{{ labels.instance }}"})'}
  - name: verify
    action: prometheusVerify
    params:
      query: >-
        min(redis_up{instance="{{ labels.instance }}",
        pod=~"{{ steps.find.outputs.labels.pod }}"})
      condition: "== 1"
  - name: note
    action: notify
    params: {message: "{{ labels.instance }}: {{ steps.verify.outputs.value }}"}
"""


def test_simulate_renders_as_the_engine_does_values_escaped(tmp_path: Path) -> None:
    (tmp_path / "runbooks.yaml").write_text(INJECTABLE)
    injected = 'x"} or vector(1) or redis_up{instance="<!here>'
    payload = {
        "version": "4",
        "alerts": [
            {**alert("aa", namespace="mcp", instance=injected), "labels": {
                "alertname": "RedisDown", "namespace": "kube-system/x", "instance": injected}},
        ],
    }  # fmt: skip
    alerts = tmp_path / "alerts.json"
    alerts.write_text(json.dumps(payload))
    out_path = tmp_path / "out.yaml"
    with out_path.open("w") as out:
        assert simulate(str(alerts), [str(tmp_path / "runbooks.yaml")], Settings(), out) == 0
    [result] = yaml.safe_load(out_path.read_text())
    [run] = result["remediations"]
    find, verify, note = (step["params"] for step in run["steps"])
    escaped = 'x\\"} or vector(1) or redis_up{instance=\\"<!here>'
    assert find["query"] == f'max(redis_up{{instance="{escaped}"}})'
    assert verify["query"] == (
        f'min(redis_up{{instance="{escaped}", pod=~"{{{{ steps.find.outputs.labels.pod }}}}"}})'
    )
    assert note["message"] == (
        'x"} or vector(1) or redis_up{instance="&lt;!here&gt;: {{ steps.verify.outputs.value }}'
    )
    assert run["wouldFail"] == [
        "{{ labels.namespace }} rendered 'kube-system/x', which is not a namespace name (a "
        "DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending "
        "with a letter or digit)"
    ]
