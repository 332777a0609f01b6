"""The README's YAML examples of our kinds pass the operator's own lint."""

import re
from pathlib import Path

import yaml

from mcp_remediator.settings import Settings
from mcp_remediator.tools.lint import Document, check_document

README = Path(__file__).parents[2] / "README.md"


def test_every_runbook_and_remediation_example_in_the_readme_is_valid() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.DOTALL)
    checked = 0
    for block in blocks:
        for body in yaml.safe_load_all(block):
            if isinstance(body, dict) and body.get("kind") in ("McpRunbook", "McpRemediation"):
                assert check_document(Document(README, 0, body), Settings()) == [], body
                checked += 1
    assert checked >= 2
