"""TLS for the local servers of the tests and the demo: a self-signed certificate for
127.0.0.1 (made with the ``openssl`` command, a Debian package the Makefile installs) and
a KMock server that answers HTTPS with it.

kubectl sends a kubeconfig's credentials (a bearer token, a client certificate) only over
TLS: against a plain-http server it is anonymous. So an emulated API that enforces
authentication, as the demo's does, is handed to kubectl over HTTPS.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.test_utils
import kmock
import yarl


def make_certificate(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA): ``(cert, key)``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed: apt-get install openssl (make deps does)")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def tls_server(handler: Any, cert: Path, key: Path) -> kmock.Server:
    """A KMock server (not yet entered) on 127.0.0.1 answering HTTPS with ``cert``; its own
    client (``handler.get(url)`` and the like) trusts that certificate."""
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    class _TlsServer(aiohttp.test_utils.RawTestServer):
        async def start_server(
            self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any
        ) -> None:
            await super().start_server(loop, ssl=serving, **kwargs)

    def client(url: yarl.URL) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(ssl=trusting))

    return kmock.Server(handler, server_cls=_TlsServer, client_fct=client)
