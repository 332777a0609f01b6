"""The suite-wide check of ``fixtures.cluster``: configured secrets never in text."""

from __future__ import annotations

import base64

from fixtures.cluster import CRDS, secret_parts, secrets_shown
from mcp_remediator.testing.emulator import ApiServerEmulator


def test_secret_parts_of_tokens_and_urls() -> None:
    assert secret_parts("s3cr3t-token-value") == {"s3cr3t-token-value"}
    assert secret_parts("redis://:Pr0mPassw0rd@redis:6379/0") == {"Pr0mPassw0rd"}
    assert secret_parts("https://hooks.example/x?token=abcdefgh12") == {"token=abcdefgh12"}
    assert secret_parts("http://127.0.0.1:8080") == set()  # a host and port may be named


def test_a_planted_secret_in_a_log_line_a_status_or_an_event_is_found() -> None:
    api = ApiServerEmulator()
    api.register_builtins()
    api.register_crd_dir(CRDS)
    token = "planted-0f9e8d7c"
    data = {"token": base64.b64encode(token.encode()).decode()}
    api.seed({"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "s", "namespace": "mcp"}, "data": data})  # fmt: skip
    assert secrets_shown(api, set(), ["nothing to see"]) == []
    assert secrets_shown(api, set(), [f"Authorization: Bearer {token}"])
    assert secrets_shown(api, {"redis://:0ther-pass@r:1/0"}, ["auth 0ther-pass failed"])
    meta = {"name": "e", "namespace": "mcp"}
    api.seed({"apiVersion": "v1", "kind": "Event", "metadata": meta, "message": f"used {token}"})
    assert secrets_shown(api, set(), [])
