"""The README documents every action and setting.

That its generated tables are current is checked with every generated file (test_generate).
"""

from pathlib import Path

from mcp_remediator.actions import REGISTRY

README = Path(__file__).parents[2] / "README.md"


def test_every_action_and_setting_is_documented() -> None:
    text = README.read_text()
    for name in REGISTRY:
        assert f"| `{name}` |" in text
    assert "`MCP_RECEIVER_TOKEN` / `MCP_RECEIVER_TOKEN_FILE`" in text
