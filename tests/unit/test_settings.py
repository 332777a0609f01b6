"""Settings from MCP_* variables; secrets from files; secrets never in repr."""

from pathlib import Path

import pytest

from mcp_remediator.settings import Settings, SettingsError


def test_reads_lists_maps_and_secret_files(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    settings = Settings.from_env(
        {
            "MCP_RECEIVER_TOKEN_FILE": str(token),
            "MCP_RECEIVER_TOKEN": "ignored-when-file-given",
            "MCP_REDIS_ALLOWED_PREFIXES": "mcp:, cache:",
            "MCP_MODULE_BASE_URLS": "finbot=http://finbot:8080,mubot=http://mubot:8080",
            "MCP_DRY_RUN": "true",
            "MCP_WATCH_NAMESPACES": "",
        }
    )
    assert settings.receiver_token is not None
    assert settings.receiver_token.get_secret_value() == "s3cret"
    assert settings.redis_allowed_prefixes == ["mcp:", "cache:"]
    assert settings.module_base_urls["mubot"] == "http://mubot:8080"
    assert settings.dry_run is True
    assert settings.watch_namespaces == []
    assert "s3cret" not in repr(settings)


def test_bad_values_are_rejected_with_the_variable_named() -> None:
    with pytest.raises(SettingsError, match="^MCP_RECEIVER_PORT: Input should be a valid int"):
        Settings.from_env({"MCP_RECEIVER_PORT": "eighty"})
    with pytest.raises(SettingsError, match="^MCP_MODULE_BASE_URLS: .*module=url"):
        Settings.from_env({"MCP_MODULE_BASE_URLS": "finbot"})


@pytest.mark.parametrize("value", ["0", "-1"])
def test_the_receivers_api_bound_must_be_positive(value: str) -> None:
    assert Settings().receiver_api_timeout_seconds == 5.0
    tight = Settings.from_env({"MCP_RECEIVER_API_TIMEOUT_SECONDS": "0.5"})
    assert tight.receiver_api_timeout_seconds == 0.5
    with pytest.raises(SettingsError, match="^MCP_RECEIVER_API_TIMEOUT_SECONDS: .*greater than 0"):
        Settings.from_env({"MCP_RECEIVER_API_TIMEOUT_SECONDS": value})
