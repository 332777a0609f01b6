"""The CRDs the models and the action registry render: names, columns, structural schemas.

That the files in crds/ are current is checked with every generated file (test_generate).
"""

from pathlib import Path

import yaml

from mcp_remediator.actions import REGISTRY
from mcp_remediator.tools import crdgen

CRDS = Path(__file__).parents[2] / "crds"


def test_crds_carry_contract_names_columns_and_status_subresource() -> None:
    remediation = yaml.safe_load((CRDS / "mcp.dese.ai_mcpremediations.yaml").read_text())
    version = remediation["spec"]["versions"][0]
    assert remediation["spec"]["names"]["shortNames"] == ["mcprem"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Runbook", "Phase", "Step", "Reason", "Age",
    ]  # fmt: skip
    schema = version["schema"]["openAPIV3Schema"]
    step = schema["properties"]["spec"]["properties"]["steps"]["items"]
    assert step["properties"]["action"]["enum"] == sorted(REGISTRY)
    assert step["properties"]["params"]["x-kubernetes-preserve-unknown-fields"] is True
    outputs = schema["properties"]["status"]["properties"]["steps"]["items"]["properties"]
    assert outputs["outputs"]["additionalProperties"] == {"type": "string"}
    assert len(schema["x-kubernetes-validations"]) == 2
    runbook = yaml.safe_load((CRDS / "mcp.dese.ai_mcprunbooks.yaml").read_text())
    assert runbook["spec"]["names"]["shortNames"] == ["mcprb"]
    guardrails = runbook["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["guardrails"]["properties"]
    assert guardrails["cooldownSeconds"]["default"] == 600
    assert guardrails["groupBy"]["items"] == {"type": "string"}


def test_every_schema_node_is_structural() -> None:
    def walk(node: object) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node and "allOf" not in node
            if "properties" in node:
                assert node.get("type") == "object"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for text in crdgen.render_all().values():
        walk(yaml.safe_load(text))
