"""API credentials: kubeconfig tokens, the in-cluster `bearer` form, rotated token files."""

from pathlib import Path

import httpx
import pytest

from mcp_remediator.kube import client as kube
from mcp_remediator.kube.client import ConnectionConfig, KubeApi, strip_bearer
from mcp_remediator.settings import Settings


def test_strip_bearer_accepts_any_case_as_the_in_cluster_loader_writes_it() -> None:
    assert strip_bearer("bearer abc") == "abc"
    assert strip_bearer("Bearer abc ") == "abc"
    assert strip_bearer("abc") == "abc"


def test_kubeconfig_token_is_loaded_without_its_scheme(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443', "
        "insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: s3cret}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: mcp}}]\n"
    )
    connection = ConnectionConfig.load(str(config))
    assert connection.server == "https://127.0.0.1:6443"
    assert connection.bearer_token() == "s3cret"
    assert connection.default_namespace == "mcp"
    assert "s3cret" not in repr(connection)


async def test_a_rotated_token_file_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube._BearerAuth, "REREAD_SECONDS", 0.0)
    token = tmp_path / "token"
    token.write_text("first\n")
    seen: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={"kind": "ConfigMap"})

    connection = ConnectionConfig(server="https://api.local", token_file=str(token))
    client = KubeApi(connection, Settings(), transport=httpx.MockTransport(api))
    await client.get("v1", "configmaps", "mcp", "x")
    token.write_text("second\n")
    await client.get("v1", "configmaps", "mcp", "x")
    await client.aclose()
    assert seen == ["Bearer first", "Bearer second"]
