"""The CEL rules (``x-kubernetes-validations``) the emulator evaluates on writes of custom
resources (testing/cel.py), on our own CRD's rules and on the rule shapes Kubernetes
documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mcp_remediator.testing import cel

ROOT = Path(__file__).resolve().parents[2]


def test_cel_python_is_installed() -> None:
    """The test extra brings cel-python: without it the emulator would skip every rule."""
    assert cel.AVAILABLE, "cel-python is missing: pip install -e '.[test]' (make deps does)"


def remediation_schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / "mcp.dese.ai_mcpremediations.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def run(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "mcp.dese.ai/v1alpha1", "kind": "McpRemediation",
                           "metadata": {"name": "r"}, "spec": spec}  # fmt: skip
    if status is not None:
        obj["status"] = status
    return obj


def messages(obj: Any, schema: dict[str, Any], old: Any = None) -> list[str]:
    found = cel.errors(obj, schema) if old is None else cel.errors(obj, schema, old)
    return [str(error) for error in found]


REF = {"runbookRef": {"name": "redis-down"}}
STEP = {"name": "restart", "action": "rolloutRestart", "params": {"name": "redis"}}


def test_a_remediation_names_exactly_one_of_runbook_or_steps() -> None:
    schema = remediation_schema()
    assert messages(run(REF), schema) == []
    assert messages(run({"steps": [STEP]}), schema) == []
    expected = ['<nil>: Invalid value: "object": give exactly one of spec.runbookRef or spec.steps']
    assert messages(run({}), schema) == expected
    assert messages(run({"steps": []}), schema) == expected
    assert messages(run({**REF, "steps": [STEP]}), schema) == expected


def test_a_planned_run_may_be_approved_and_its_status_written() -> None:
    """Both write every planned run's spec or status: before the has() guards, the rule read
    spec.steps of a runbookRef run ("no such key"), which fails the write on a real API
    server — approvals and every status write after the plan would have been refused."""
    schema = remediation_schema()
    planned = run(REF, {"plan": {"steps": []}, "phase": "AwaitingApproval"})
    approved = run({**REF, "approved": True}, planned["status"])
    assert messages(approved, schema, planned) == []
    running = run(REF, {"plan": {"steps": []}, "phase": "Running"})
    assert messages(running, schema, planned) == []
    inline = run({"steps": [STEP]}, {"plan": {"steps": []}})
    assert (
        messages(run({"steps": [STEP], "approved": True}, inline["status"]), schema, inline) == []
    )


def test_a_planned_run_keeps_its_runbook_and_its_number_of_steps() -> None:
    schema = remediation_schema()
    fixed = '<nil>: Invalid value: "object": spec.runbookRef and spec.steps are fixed once the run is planned (status.plan)'  # noqa: E501
    planned = run(REF, {"plan": {"steps": []}})
    assert messages(run({"runbookRef": {"name": "other"}}, planned["status"]), schema, planned) == [
        fixed
    ]
    inline = run({"steps": [STEP]}, {"plan": {"steps": []}})
    more = run({"steps": [STEP, {**STEP, "name": "again"}]}, inline["status"])
    assert messages(more, schema, inline) == [fixed]
    # Before the plan, the spec may still change.
    assert messages(run({"runbookRef": {"name": "other"}}), schema, run(REF)) == []


FIELD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "size": {
                    "type": "integer",
                    "x-kubernetes-validations": [
                        {"rule": "self >= oldSelf", "message": "size may only grow"}
                    ],
                },
                "mode": {"type": "string"},
                "limits": {
                    "type": "object",
                    "x-kubernetes-validations": [
                        {
                            "rule": "self.max >= self.min",
                            "messageExpression": "'max ' + string(self.max) + ' < min'",
                            "fieldPath": ".max",
                            "reason": "FieldValueForbidden",
                        }
                    ],
                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                },
            },
            "x-kubernetes-validations": [{"rule": "self.mode == 'fast' || self.size < 10"}],
        }
    },
}


def test_rules_on_fields_transitions_messages_and_missing_keys() -> None:
    obj = {"spec": {"size": 3, "mode": "slow", "limits": {"min": 1, "max": 2}}}
    assert messages(obj, FIELD_SCHEMA) == []
    # A transition rule is skipped on a create, judged on an update.
    shrunk = {"spec": {**obj["spec"], "size": 2}}
    assert messages(shrunk, FIELD_SCHEMA) == []
    assert messages(shrunk, FIELD_SCHEMA, obj) == [
        'spec.size: Invalid value: "integer": size may only grow'
    ]
    # messageExpression, fieldPath and reason.
    swapped = {"spec": {**obj["spec"], "limits": {"min": 5, "max": 2}}}
    assert messages(swapped, FIELD_SCHEMA) == ["spec.limits.max: Forbidden: max 2 < min"]
    # No message: the rule itself; a field that is not set is an error, not false.
    assert messages({"spec": {"size": 12, "mode": "slow"}}, FIELD_SCHEMA) == [
        "spec: Invalid value: \"object\": failed rule: self.mode == 'fast' || self.size < 10"
    ]
    [missing] = messages({"spec": {"size": 12}}, FIELD_SCHEMA)
    assert missing.startswith('spec: Invalid value: "object": ') and "mode" in missing
    assert "evaluating rule: self.mode == 'fast'" in missing


def test_an_unchanged_value_keeps_its_rules_to_itself() -> None:
    """Ratcheting: a value stored before a rule existed stays writable elsewhere."""
    old = {"spec": {"size": 12, "mode": "slow", "limits": {"min": 5, "max": 2}}}
    assert messages(old, FIELD_SCHEMA) != []
    assert messages(old, FIELD_SCHEMA, old) == []


def test_ratcheting_lets_only_false_plain_rules_through() -> None:
    """On an unchanged value, a rule without oldSelf that is false is let through; a
    transition rule still counts."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {"gen": {"type": "integer"}, "note": {"type": "string"}},
                "x-kubernetes-validations": [
                    {"rule": "self.gen > oldSelf.gen", "message": "gen must increase"}
                ],
            },
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    old = {"spec": {"gen": 1}, "status": {}}
    assert messages({"spec": {"gen": 1}, "status": {"x": 1}}, schema, old) == [
        'spec: Invalid value: "object": gen must increase'
    ]
    assert messages({"spec": {"gen": 2}}, schema, old) == []


def test_an_integer_beyond_int64_is_a_double_not_a_crash() -> None:
    schema = remediation_schema()
    huge = {"name": "s", "action": "notify", "params": {"n": 18446744073709551616}}
    assert messages(run({"steps": [huge]}), schema) == []
