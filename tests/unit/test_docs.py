"""The README's generated tables match the registry and the settings model."""

from pathlib import Path

from mcp_remediator.actions import REGISTRY
from mcp_remediator.tools import docgen

README = Path(__file__).parents[2] / "README.md"


def test_readme_tables_are_current() -> None:
    text = README.read_text()
    assert docgen.render(text) == text, "README tables are stale: run `make docs`"


def test_every_action_and_setting_is_documented() -> None:
    text = README.read_text()
    for name in REGISTRY:
        assert f"| `{name}` |" in text
    assert "`MCP_RECEIVER_TOKEN` / `MCP_RECEIVER_TOKEN_FILE`" in text
