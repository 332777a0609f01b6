"""Real daemons for ``mcp-remediator demo``: redis-server, redis_exporter, Prometheus and
Alertmanager.

Each binary comes from its Debian package (``make deps`` installs them). Every daemon binds
to 127.0.0.1 on a free port, keeps its data and log under the demo's temporary directory,
is watched until it answers (a PING, an HTTP 200; polled, never slept on), and is stopped
by its own PID: ``Supervisor.stop_all`` terminates exactly the processes it started, also
when the demo is interrupted. Process starts and waits run in worker threads so that the
event loop (the emulated API, the operator) never blocks.

Used by the demo's world (``demo.world``) and the test fixtures.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio
import redis.exceptions

Ready = Callable[[], Awaitable[bool]]
STOP_TIMEOUT = 10.0


class DemoError(Exception):
    """The demo cannot go on; the message says why and what to do."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DemoError(f"{name} is not installed: `make deps` installs the Debian {package}")
    return path


def http_ready(url: str) -> Ready:
    async def check() -> bool:
        async with httpx.AsyncClient(timeout=1) as client:
            return (await client.get(url)).status_code == 200

    return check


def redis_ready(port: int) -> Ready:
    async def check() -> bool:
        client = redis.asyncio.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        try:
            return bool(await client.ping())
        finally:
            await client.aclose()

    return check


@dataclass
class Daemon:
    """One running process."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


@dataclass
class Supervisor:
    """Starts daemons and remembers each one, so that every one is stopped at the end."""

    directory: Path
    daemons: list[Daemon] = field(default_factory=list)

    async def start(
        self, name: str, argv: Sequence[str], port: int, ready: Ready, timeout: float = 30
    ) -> Daemon:
        log_path = self.directory / f"{name}.log"

        def spawn() -> subprocess.Popen[bytes]:
            with log_path.open("ab") as log:
                return subprocess.Popen(
                    list(argv),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.directory,
                )

        process = await asyncio.to_thread(spawn)
        daemon = Daemon(name, list(argv), port, log_path, process)
        self.daemons.append(daemon)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DemoError(f"{name} exited with {process.returncode}:\n{daemon.log_tail()}")
            try:
                if await ready():
                    return daemon
            except (OSError, httpx.HTTPError, redis.exceptions.RedisError):
                pass
            await asyncio.sleep(0.05)
        raise DemoError(f"{name} did not become ready within {timeout:g}s:\n{daemon.log_tail()}")

    async def restart(self, daemon: Daemon, ready: Ready) -> Daemon:
        """Start the same command again (the old process has died), on the same port."""
        await asyncio.to_thread(daemon.stop)
        self.daemons.remove(daemon)
        return await self.start(daemon.name, daemon.argv, daemon.port, ready)

    def stop_all(self) -> None:
        """Stop every daemon started here, newest first; blocking, for the very end. All are
        asked to stop at once, so the wait is the slowest one's, not their sum."""
        for daemon in reversed(self.daemons):
            if daemon.process.poll() is None:
                daemon.process.terminate()
        while self.daemons:
            self.daemons.pop().stop()


async def start_redis(supervisor: Supervisor, maxmemory: str) -> Daemon:
    port = free_port()
    argv = [
        binary("redis-server", "package redis-server"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(supervisor.directory),
        "--maxmemory",
        maxmemory,
        "--maxmemory-policy",
        "noeviction",
    ]
    return await supervisor.start("redis-server", argv, port, redis_ready(port))


async def start_redis_exporter(supervisor: Supervisor, redis_port: int) -> Daemon:
    port = free_port()
    argv = [
        binary("prometheus-redis-exporter", "package prometheus-redis-exporter"),
        f"-redis.addr=redis://127.0.0.1:{redis_port}",
        f"-web.listen-address=127.0.0.1:{port}",
    ]
    return await supervisor.start(
        "redis-exporter", argv, port, http_ready(f"http://127.0.0.1:{port}/metrics")
    )


async def start_prometheus(supervisor: Supervisor, port: int, config: str) -> Daemon:
    config_path = supervisor.directory / "prometheus.yml"
    config_path.write_text(config)
    data = supervisor.directory / "prometheus-data"
    data.mkdir(exist_ok=True)
    argv = [
        binary("prometheus", "package prometheus"),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url=http://127.0.0.1:{port}",
    ]
    return await supervisor.start(
        "prometheus", argv, port, http_ready(f"http://127.0.0.1:{port}/-/ready")
    )


async def start_alertmanager(supervisor: Supervisor) -> Daemon:
    """Alertmanager with one receiver that sends nothing: the demo's operator silences
    alerts in it (``guardrails.silence``); the demo posts its alerts to the operator."""
    directory = supervisor.directory
    config_path = directory / "alertmanager.yml"
    config_path.write_text(
        "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n", encoding="utf-8"
    )
    data = directory / "alertmanager-data"
    data.mkdir(exist_ok=True)
    port = free_port()
    argv = [
        binary("prometheus-alertmanager", "package prometheus-alertmanager"),
        f"--config.file={config_path}",
        f"--storage.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url=http://127.0.0.1:{port}",
        # One instance: no gossip port.
        "--cluster.listen-address=",
    ]
    return await supervisor.start(
        "alertmanager", argv, port, http_ready(f"http://127.0.0.1:{port}/-/ready")
    )
