"""API credentials: kubeconfig tokens, the in-cluster `bearer` form, rotated token files."""

import json
import ssl
from pathlib import Path

import httpx
import pytest

from fixtures.redis_server import make_certificate
from fixtures.stub_api import serving
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
    monkeypatch.setattr(kube._Pool, "REREAD_SECONDS", 0.0)
    token = tmp_path / "token"
    token.write_text("first\n")
    seen: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={"kind": "ConfigMap"})

    async with serving(api) as url:
        client = KubeApi(ConnectionConfig(server=url, token_file=str(token)), Settings())
        await client.get("v1", "configmaps", "mcp", "x")
        token.write_text("second\n")
        await client.get("v1", "configmaps", "mcp", "x")
        await client.aclose()
    assert seen == ["Bearer first", "Bearer second"]


async def test_a_watch_reads_events_of_any_size_whole() -> None:
    big = {"type": "ADDED", "object": {"metadata": {"name": "big"}, "data": {"x": "y" * 300_000}}}
    small = {"type": "MODIFIED", "object": {"metadata": {"name": "small"}}}
    stream = (json.dumps(big) + "\n\n" + json.dumps(small)).encode()  # no final newline

    def api(request: httpx.Request) -> httpx.Response:
        assert request.url.params["watch"] == "true"
        return httpx.Response(200, content=stream)

    async with serving(api) as url:
        client = KubeApi(ConnectionConfig(server=url), Settings())
        events = [
            e
            async for e in client.watch(
                "v1", "configmaps", "mcp", resource_version="1", timeout_seconds=5
            )
        ]
        await client.aclose()
    assert events == [big, small]


async def test_tls_is_verified_against_the_kubeconfigs_ca_and_sends_the_client_cert(
    tmp_path: Path,
) -> None:
    cert, key = make_certificate(tmp_path)  # its own CA, for 127.0.0.1
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(cert))
    server.load_cert_chain(cert, key)
    server.verify_mode = ssl.CERT_REQUIRED  # a client certificate, as kind's kubeconfig has

    def api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"kind": "ConfigMap"})

    async with serving(api, tls=server) as url:
        trusted = ConnectionConfig(
            server=url, ca_path=str(cert), cert_path=str(cert), key_path=str(key)
        )
        untrusted = ConnectionConfig(server=url, cert_path=str(cert), key_path=str(key))
        no_client_cert = ConnectionConfig(server=url, ca_path=str(cert))
        answers = []
        for connection in (trusted, untrusted, no_client_cert):
            client = KubeApi(connection, Settings())
            try:
                answers.append(await client.get("v1", "configmaps", "mcp", "x"))
            except kube.ApiError as exc:
                answers.append(exc.reason)
            finally:
                await client.aclose()
    assert answers == [{"kind": "ConfigMap"}, "Unreachable", "Unreachable"]
