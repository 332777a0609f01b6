"""The emulator's structural-schema checks (testing/schema.py), keyword by keyword, with
kube-apiserver 1.32's wording: kube-openapi's messages (``in body must be of type``...) in
``field.Error``s, aggregated as ``apierrors.NewInvalid`` aggregates them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_remediator.testing import schema

CRDS = Path(__file__).parents[2] / "crds"


def crd_schema(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / name).read_text())
    found: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return found


REMEDIATION = crd_schema("mcp.dese.ai_mcpremediations.yaml")
RUNBOOK = crd_schema("mcp.dese.ai_mcprunbooks.yaml")


def messages(value: Any, structural: dict[str, Any], **kwargs: Any) -> list[str]:
    return [str(error) for error in schema.validate(value, structural, **kwargs)]


def one(value: Any, structural: dict[str, Any]) -> str:
    found = messages({"x": value}, {"type": "object", "properties": {"x": structural}})
    assert len(found) == 1, found
    return found[0]


# --- keyword by keyword ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "actual"),
    [
        ("yes", "boolean", "string"),
        (1, "string", "integer"),
        (1.5, "integer", "number"),
        ([], "object", "array"),
        ({}, "array", "object"),
        (True, "number", "boolean"),
        (None, "string", "null"),
    ],
)
def test_a_wrong_type_names_the_type_it_got(value: Any, kind: str, actual: str) -> None:
    assert one(value, {"type": kind}) == (
        f'x: Invalid value: "{actual}": x in body must be of type {kind}: "{actual}"'
    )


@pytest.mark.parametrize(
    ("value", "kind"),
    [(3, "number"), (2.0, "integer"), ("a", "string"), (False, "boolean"), ({}, "object")],
)
def test_types_accept_what_go_accepts(value: Any, kind: str) -> None:
    assert messages({"x": value}, {"type": "object", "properties": {"x": {"type": kind}}}) == []


def test_nullable_accepts_null() -> None:
    assert messages({"x": None}, {"properties": {"x": {"type": "string", "nullable": True}}}) == []


def test_int_or_string() -> None:
    structural = {"x-kubernetes-int-or-string": True}
    assert messages({"x": 80}, {"properties": {"x": structural}}) == []
    assert messages({"x": "80%"}, {"properties": {"x": structural}}) == []
    assert one(1.5, structural) == (
        'x: Invalid value: "number": x in body must be of type integer,string: "number"'
    )


def test_enum_lists_the_supported_values() -> None:
    assert one("c", {"type": "string", "enum": ["a", "b"]}) == (
        'x: Unsupported value: "c": supported values: "a", "b"'
    )
    assert one(3, {"type": "integer", "enum": [1, 2]}) == (
        'x: Unsupported value: 3: supported values: "1", "2"'
    )


def test_required_is_a_required_value() -> None:
    found = schema.validate({}, {"type": "object", "required": ["spec"]})
    assert [str(error) for error in found] == ["spec: Required value"]
    assert found[0].cause() == {
        "reason": "FieldValueRequired",
        "message": "Required value",
        "field": "spec",
    }


def test_numbers_bounds() -> None:
    assert one(0, {"type": "integer", "minimum": 1}) == (
        "x: Invalid value: 0: x in body should be greater than or equal to 1"
    )
    assert one(1, {"type": "integer", "minimum": 1, "exclusiveMinimum": True}) == (
        "x: Invalid value: 1: x in body should be greater than 1"
    )
    assert one(11, {"type": "integer", "maximum": 10}) == (
        "x: Invalid value: 11: x in body should be less than or equal to 10"
    )
    assert one(10.5, {"type": "number", "maximum": 10, "exclusiveMaximum": True}) == (
        "x: Invalid value: 10.5: x in body should be less than 10"
    )
    assert one(7, {"type": "integer", "multipleOf": 5}) == (
        "x: Invalid value: 7: x in body should be a multiple of 5"
    )


def test_strings_length_and_pattern() -> None:
    assert one("abcd", {"type": "string", "maxLength": 3}) == (
        "x: Too long: may not be more than 3 bytes"
    )
    assert one("", {"type": "string", "minLength": 1}) == (
        'x: Invalid value: "": x in body should be at least 1 chars long'
    )
    assert one("A", {"type": "string", "pattern": "^[a-z]+$"}) == (
        "x: Invalid value: \"A\": x in body should match '^[a-z]+$'"
    )
    # Lengths in runes, the pattern searched (Go's MatchString).
    assert messages({"x": "ééé"}, {"properties": {"x": {"type": "string", "maxLength": 3}}}) == []
    assert messages({"x": "xay"}, {"properties": {"x": {"type": "string", "pattern": "a"}}}) == []


def test_arrays_items_and_sizes() -> None:
    assert one([], {"type": "array", "minItems": 1}) == (
        "x: Invalid value: 0: x in body should have at least 1 items"
    )
    assert one([1, 2, 3], {"type": "array", "maxItems": 2}) == (
        "x: Too many: 3: must have at most 2 items"
    )
    assert one(["a", 1], {"type": "array", "items": {"type": "string"}}) == (
        'x[1]: Invalid value: "integer": x[1] in body must be of type string: "integer"'
    )


def test_objects_additional_properties_and_sizes() -> None:
    assert one({"a": 1}, {"type": "object", "additionalProperties": {"type": "string"}}) == (
        'x.a: Invalid value: "integer": x.a in body must be of type string: "integer"'
    )
    assert one({}, {"type": "object", "minProperties": 1}) == (
        "x: Invalid value: 0: x in body should have at least 1 properties"
    )
    assert one({"a": 1, "b": 2}, {"type": "object", "maxProperties": 1}) == (
        "x: Too many: 2: must have at most 1 items"
    )


def test_formats_apiextensions_keeps() -> None:
    assert one("yesterday", {"type": "string", "format": "date-time"}) == (
        'x: Invalid value: "yesterday": x in body must be of type date-time: "yesterday"'
    )
    good = {"properties": {"x": {"type": "string", "format": "date-time"}}}
    assert messages({"x": "2026-12-01T03:00:00Z"}, good) == []
    assert one("300.1.1.1", {"type": "string", "format": "ipv4"}).endswith(
        'x in body must be of type ipv4: "300.1.1.1"'
    )
    # int32/int64 are stripped by apiextensions: they constrain nothing.
    assert (
        messages({"x": 2**40}, {"properties": {"x": {"type": "integer", "format": "int32"}}}) == []
    )


def test_combinators() -> None:
    one_of = {"oneOf": [{"required": ["a"]}, {"required": ["b"]}]}
    found = messages({"a": 1, "b": 2}, {"type": "object", **one_of})
    assert found == [
        '<nil>: Invalid value: "": "" must validate one and only one schema (oneOf).'
        " Found 2 valid alternatives"
    ]
    any_of = {"anyOf": [{"required": ["a"]}, {"required": ["b"]}]}
    found = messages({"c": 1}, {"type": "object", **any_of})
    assert found[0] == '<nil>: Invalid value: "": "" must validate at least one schema (anyOf)'
    assert "a: Required value" in found
    assert messages({"a": 1}, {"type": "object", "not": {"required": ["a"]}}) == [
        '<nil>: Invalid value: "": "" must not validate the schema (not)'
    ]
    assert messages({"a": 1}, {"type": "object", "allOf": [{"required": ["b"]}]}) == [
        "b: Required value",
        '<nil>: Invalid value: "": "" must validate all the schemas (allOf). None validated',
    ]


def test_list_type_set_and_map_uniqueness() -> None:
    structural = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "ports": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}}},
            },
        },
    }
    found = messages(
        {"tags": ["a", "b", "a", "a"], "ports": [{"name": "h"}, {"name": "h"}]}, structural
    )
    assert found == [
        'tags[2]: Duplicate value: "a"',
        'ports[1]: Duplicate value: map[string]interface {}{"name":"h"}',
    ]


def test_embedded_resources_carry_api_version_and_kind() -> None:
    structural = {
        "type": "object",
        "properties": {
            "template": {
                "type": "object",
                "x-kubernetes-embedded-resource": True,
                "x-kubernetes-preserve-unknown-fields": True,
            }
        },
    }
    assert messages({"template": {"kind": ""}}, structural) == [
        "template.apiVersion: Required value: must not be empty",
        'template.kind: Invalid value: "": must not be empty',
    ]


# --- the CRDs of crds/ ------------------------------------------------------------------------


def remediation(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mcp.dese.ai/v1alpha1",
        "kind": "McpRemediation",
        "metadata": {"name": "x", "namespace": "mcp"},
        "spec": {"runbookRef": {"name": "book"}, **spec},
    }


def test_dry_run_yes_is_refused_as_the_real_server_refuses_it() -> None:
    errors = schema.validate(remediation(dryRun="yes"), REMEDIATION)
    status = schema.invalid_status("mcp.dese.ai", "McpRemediation", "x", errors)
    assert status == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'McpRemediation.mcp.dese.ai "x" is invalid: spec.dryRun: Invalid value:'
        ' "string": spec.dryRun in body must be of type boolean: "string"',
        "reason": "Invalid",
        "details": {
            "name": "x",
            "group": "mcp.dese.ai",
            "kind": "McpRemediation",
            "causes": [
                {
                    "reason": "FieldValueTypeInvalid",
                    "message": 'Invalid value: "string": spec.dryRun in body must be of type'
                    ' boolean: "string"',
                    "field": "spec.dryRun",
                }
            ],
        },
        "code": 422,
    }


def test_several_errors_aggregate_in_brackets_with_list_indices() -> None:
    steps = [{"name": "ok", "action": "redisPing"}, {"name": "Bad", "action": "nope"}]
    errors = schema.validate(remediation(steps=steps, approved=1), REMEDIATION)
    assert schema.aggregate(errors) == (
        '[spec.steps[1].name: Invalid value: "Bad": spec.steps[1].name in body should match'
        " '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$', spec.steps[1].action: Unsupported value: \"nope\":"
        ' supported values: "argocdSync", "httpHealthCheck", "httpRequest",'
        ' "kyvernoPolicyCheck", "notify", "patchResource", "podStatus", "prometheusQuery",'
        ' "prometheusVerify", "redisExpireKeys", "redisInspect", "redisPing", "rolloutRestart",'
        ' spec.approved: Invalid value: "integer": spec.approved in body must be of type'
        ' boolean: "integer"]'
    )


def test_a_runbook_without_steps_is_refused() -> None:
    runbook = {"apiVersion": "mcp.dese.ai/v1alpha1", "kind": "McpRunbook", "spec": {}}
    assert messages(runbook, RUNBOOK) == ["spec.steps: Required value"]
    runbook["spec"] = {"steps": []}
    assert messages(runbook, RUNBOOK) == [
        "spec.steps: Invalid value: 0: spec.steps in body should have at least 1 items"
    ]


def test_status_is_checked_with_the_status_schema_under_status() -> None:
    status_schema = REMEDIATION["properties"]["status"]
    found = messages(
        {"phase": "Done", "steps": [{"name": "a"}]},
        status_schema,
        old=None,
        prefix="status",
        ratchet=False,
    )
    assert found == [
        'status.phase: Unsupported value: "Done": supported values: "Pending",'
        ' "AwaitingApproval", "Running", "Succeeded", "Failed", "Refused", "Cancelled",'
        ' "Skipped"',
        "status.steps[0].action: Required value",
    ]
    # The detail names the field from the status schema's root, as the real server does.
    assert messages({"observedGeneration": "1"}, status_schema, prefix="status") == [
        'status.observedGeneration: Invalid value: "string": observedGeneration in body must'
        ' be of type integer: "string"'
    ]


def test_updates_ratchet_unchanged_values() -> None:
    old = remediation(ttlSecondsAfterFinished=-1)
    assert messages(old, REMEDIATION) != []
    new = remediation(ttlSecondsAfterFinished=-1, approved=True)
    assert messages(new, REMEDIATION, old=old) == []
    changed = remediation(ttlSecondsAfterFinished=-2)
    assert messages(changed, REMEDIATION, old=old) == [
        "spec.ttlSecondsAfterFinished: Invalid value: -2: spec.ttlSecondsAfterFinished in body"
        " should be greater than or equal to 0"
    ]
    assert messages(new, REMEDIATION, old=old, ratchet=False) != []


# --- pruning, defaults, unknown fields ----------------------------------------------------------


def test_prune_reports_unknown_fields_sorted_with_indices() -> None:
    obj = remediation(
        foo=1,
        steps=[{"name": "a", "action": "notify", "params": {"free": 1}, "bar": 2}],
    )
    obj["metadata"]["nonsense"] = True
    normalized, unknown = schema.normalize(obj, REMEDIATION)
    assert unknown == ["metadata.nonsense", "spec.foo", "spec.steps[0].bar"]
    step = normalized["spec"]["steps"][0]
    assert step == {
        "name": "a",
        "action": "notify",
        "params": {"free": 1},
        "timeoutSeconds": 300,
        "retries": 2,
        "continueOnFailure": False,
    }
    assert "nonsense" not in normalized["metadata"]
    assert normalized["spec"]["dryRun"] is False


def test_non_nullable_nulls_are_dropped_or_defaulted() -> None:
    normalized, unknown = schema.normalize(
        remediation(dryRun=None, serviceAccountName=None), REMEDIATION
    )
    assert unknown == []
    assert normalized["spec"]["dryRun"] is False
    assert "serviceAccountName" not in normalized["spec"]


def test_strict_errors_and_warnings_are_worded_as_the_real_server() -> None:
    assert schema.strict_decoding_error(["spec.a", "spec.b"]) == (
        'strict decoding error: unknown field "spec.a", unknown field "spec.b"'
    )
    assert schema.warning_header(schema.unknown_messages(["spec.a"])) == (
        '299 - "unknown field \\"spec.a\\""'
    )
    refused = schema.field_validation_error("CreateOptions", "Loud")
    assert refused is not None
    assert refused["message"] == (
        'CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "Loud":'
        ' supported values: "", "Ignore", "Strict", "Warn"'
    )
    assert schema.field_validation_error("CreateOptions", "Strict") is None
