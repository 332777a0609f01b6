"""Renders the CRDs from the typed models, so the YAML cannot drift from the code.

``make generate`` (``tools.generate``) writes them to ``crds/mcp.dese.ai_<plural>.yaml``;
its check, run by a test, renders them again and compares. Pydantic's
JSON Schema is turned into a structural OpenAPI v3 schema: references inlined,
``Optional`` unwrapped, free-form maps marked ``x-kubernetes-preserve-unknown-fields``.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from mcp_remediator.actions import REGISTRY
from mcp_remediator.models import (
    GROUP,
    REMEDIATIONS,
    RUNBOOKS,
    VERSION,
    RemediationSpec,
    RemediationStatus,
    RunbookSpec,
    RunbookStatus,
)

KEEP = {
    "type", "description", "default", "enum", "minimum", "maximum", "minLength",
    "maxLength", "pattern", "minItems", "maxItems", "format", "items", "properties",
    "additionalProperties", "required", "nullable",
}  # fmt: skip


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        if len(options) == 1:
            return _structural({**options[0], **rest}, defs)
        raise ValueError(f"cannot express anyOf {schema['anyOf']} structurally")
    if "const" in schema:
        schema = {**schema, "enum": [schema["const"]]}
    out: dict[str, Any] = {k: v for k, v in schema.items() if k in KEEP}
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "properties" in out:
        out["type"] = "object"
        out["properties"] = {
            name: _structural(prop, defs) for name, prop in schema["properties"].items()
        }
    if out.get("type") == "object" and "properties" not in out:
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra.get("type") in ("string", "integer", "boolean"):
            out["additionalProperties"] = {"type": extra["type"]}
        else:
            out.pop("additionalProperties", None)
            out["x-kubernetes-preserve-unknown-fields"] = True
    else:
        out.pop("additionalProperties", None)
    if "items" in out:
        out["items"] = _structural(schema["items"], defs)
    if "default" in out and out["default"] is None:
        del out["default"]
    if out.get("required") is not None and not out["required"]:
        del out["required"]
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model as a structural OpenAPI v3 schema."""
    raw = model.model_json_schema(mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def _with_action_enum(spec: dict[str, Any], path: list[str]) -> None:
    node = spec
    for key in path:
        node = node[key]
    node["enum"] = sorted(REGISTRY)
    node["description"] = "The action to run; one of the registered actions."


def _crd(
    kind: str,
    plural: str,
    short: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    columns: list[dict[str, Any]],
    rules: list[dict[str, str]],
    description: str,
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
    }
    if rules:
        schema["x-kubernetes-validations"] = rules
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["mcp"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def runbook_crd() -> dict[str, Any]:
    spec = model_schema(RunbookSpec)
    _with_action_enum(spec, ["properties", "steps", "items", "properties", "action"])
    return _crd(
        "McpRunbook",
        RUNBOOKS,
        "mcprb",
        spec,
        model_schema(RunbookStatus),
        [
            {"name": "Valid", "type": "string",
             "jsonPath": '.status.conditions[?(@.type=="Valid")].status'},
            {"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspend"},
            {"name": "Last-Triggered", "type": "date", "jsonPath": ".status.lastTriggeredAt"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        [],
        "Declared policy (kept in Git): which alerts start which steps, with guardrails.",
    )  # fmt: skip


def remediation_crd() -> dict[str, Any]:
    spec = model_schema(RemediationSpec)
    _with_action_enum(spec, ["properties", "steps", "items", "properties", "action"])
    status = model_schema(RemediationStatus)
    _with_action_enum(
        status,
        ["properties", "plan", "properties", "steps", "items", "properties", "action"],
    )
    return _crd(
        "McpRemediation",
        REMEDIATIONS,
        "mcprem",
        spec,
        status,
        [
            {"name": "Runbook", "type": "string", "jsonPath": ".spec.runbookRef.name"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Step", "type": "string", "jsonPath": ".status.currentStep"},
            {"name": "Reason", "type": "string", "jsonPath": ".status.reason",
             "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        [
            {
                "rule": "has(self.spec.runbookRef) != (has(self.spec.steps) && "
                "size(self.spec.steps) > 0)",
                "message": "give exactly one of spec.runbookRef or spec.steps",
            },
            # A field that is not set cannot be read in CEL ("no such key" fails the write):
            # every read is guarded with has(). Cheap by design (no list equality, whose
            # estimated cost over unbounded steps could exceed the CRD's CEL budget): the
            # run follows status.plan anyway, so this only keeps spec telling the truth.
            {
                "rule": "!has(oldSelf.status) || !has(oldSelf.status.plan) || "
                "(has(self.spec.runbookRef) == has(oldSelf.spec.runbookRef) && "
                "has(self.spec.steps) == has(oldSelf.spec.steps) && "
                "(!has(self.spec.runbookRef) || "
                "self.spec.runbookRef.name == oldSelf.spec.runbookRef.name) && "
                "(!has(self.spec.steps) || size(self.spec.steps) == size(oldSelf.spec.steps)))",
                "message": "spec.runbookRef and spec.steps are fixed once the run is planned "
                "(status.plan)",
            },
        ],
        "One execution of a runbook (or of inline steps), with every step's result.",
    )  # fmt: skip


def render_all() -> dict[str, str]:
    """File name → YAML text of every CRD."""
    out = {}
    for crd in (runbook_crd(), remediation_crd()):
        name = f"{GROUP}_{crd['spec']['names']['plural']}.yaml"
        out[name] = "# Generated by `make generate` from mcp_remediator.models; do not edit.\n" + (
            yaml.safe_dump(crd, sort_keys=False, width=100)
        )
    return out
