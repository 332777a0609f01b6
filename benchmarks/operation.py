"""Benchmark: the operator in production operation, the code before a change and after it,
side by side in one run.

Run by ``make bench-operation`` (``python benchmarks/operation.py --write docs/benchmarks.md``).
"before" is the checkout ``--before`` (default /work/wt-base, today's main), "after" the
checkout ``--after`` (default: the repository this script is in). Each version's operator is
a process, ``python -m mcp_remediator run`` with ``PYTHONPATH=<checkout>/operator``, pointed
by a kubeconfig at the emulated Kubernetes API (``ApiServerEmulator``, in this process, on a
free 127.0.0.1 port) with authentication on and that checkout's CRDs, ``manifests/rbac`` and
``manifests/runner`` applied: the operator runs as its ServiceAccount
``mcp-remediator/mcp-remediator``, each process with a bearer token of its own (as each pod
has one), so that every request a process sends, its impersonated step requests included,
is counted against it. The emulator's ``audit`` list is replaced by that counter (it keeps
nothing) and KMock keeps no request history (``keep_requests``: it would match each request
against all those before it, an emulator's cost that grows with the traffic). Only
stable interfaces are used: the CLI, the ``MCP_*`` settings, ``POD_ID``, the CRDs, the RBAC
manifests and the receiver's HTTP API.

Measures, each on a fresh API:

1. restart cost: ``--records`` finished McpRemediation records (Succeeded five minutes ago,
   named and labelled as the receiver names them) and the runbook catalogue; then (a) the
   first start, (b) a restart (SIGTERM, start again). For each: the operator's requests
   until it is quiet (no request for 3 s), by verb; start → quiet; start → the restart of a
   Deployment by a one-step remediation created right at start; peak (VmHWM) and quiet
   (VmRSS) resident memory; CPU time;
2. alert → first action: ``--alerts`` Deployments, one runbook restarting the Deployment an
   alert's ``deployment`` label names, and as many concurrent webhook POSTs, one alert each:
   POST sent → that Deployment patched (p50, p99), and the operator's requests until quiet
   per alert; the same for the minimal Kopf operator (minimal_operator.py, admin token) and,
   as the floors, for the API alone (a client process creating the record and patching the
   Deployment itself, no webhook hop, no watch; and the same with a safe run's two requests
   in between: its start written, the Deployment read); ``--burst-rounds`` interleaved
   rounds, the median of their percentiles;
3. failover, after only: two replicas (``POD_ID`` ``mcp-remediator-a``/``-b``); the leader
   is the holder of the Lease ``mcp-remediator/mcp-remediator``; ``--runs`` one-step
   remediations; the leader is SIGKILLed at its first run's start; kill → the survivor's first
   restart of a run the leader left, and no Deployment restarted twice. Skipped, saying why,
   when no Lease appears within 15 s of both replicas starting.

Requests on Leases (leader election renews them on a timer) are counted but do not break
the quiet. The floors: request counts from what the work needs at least, times and memory
from a process that starts Python, imports Kopf and lists the records once.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import kmock
from alert_ingest import machine, payload
from report import write_section

from mcp_remediator import records
from mcp_remediator.models import (
    API_VERSION,
    LABEL_ALERTNAME,
    LABEL_FINGERPRINT,
    LABEL_GROUP,
    REMEDIATIONS,
)
from mcp_remediator.testing import authz, emulator
from mcp_remediator.testing.emulator import ApiServerEmulator, complete_rollouts, write_kubeconfig

SECTION = "## Production operation"
HERE = Path(__file__).parent
ROOT = HERE.parent
BASE = Path("/work/wt-base")
NAMESPACE = "mcp"
ACCOUNT = ("mcp-remediator", "mcp-remediator")  # the operator's ServiceAccount (ns, name)
LEASE = ("coordination.k8s.io/v1", "leases", "mcp-remediator", "mcp-remediator")
TOKEN = "bench-token"  # the receivers' bearer token
RUNBOOK = "bench-restart"
ALERTNAME = "BenchRestart"
GROUP_BY = ["alertname", "deployment"]
QUIET = 3.0
LEASE_WAIT = 15.0
VERBS = ("GET", "LIST", "WATCH", "PATCH", "POST", "PUT", "DELETE")
# What a (re)start must send at least: one LIST and one WATCH per kind it has to see
# (McpRunbook, McpRemediation), the probe's restart and its recorded result.
START_FLOOR = Counter({"LIST": 2, "WATCH": 2, "PATCH": 2})
# What an alert must cost at least: its record created, its Deployment patched.
ALERT_FLOOR = Counter({"POST": 1, "PATCH": 1})
# Python started, Kopf imported, the records listed once: the least an operator that must
# see them does before it can act (the harness times it from its own spawn).
FLOOR_PROBE = """
import json, sys, time, urllib.request
import kopf  # noqa: F401
imported = time.monotonic()
request = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
items = json.loads(urllib.request.urlopen(request).read())["items"]
listed = time.monotonic()
with open("/proc/self/status") as status:
    text = status.read()
print(json.dumps({"imported": imported, "listed": listed, "items": len(items), "status": text}))
"""

# The API alone: each alert's record created, then its Deployment patched, all at once; prints
# when each alert's pair was started (``time.monotonic``, the same clock as the harness's).
FLOOR_WRITES = """
import asyncio, json, sys, time
import aiohttp
job = json.load(sys.stdin)
patch = json.dumps({"spec": {"template": {"metadata": {"annotations": {"floor": "1"}}}}})
smp = {"Content-Type": "application/strategic-merge-patch+json"}
merge = {"Content-Type": "application/merge-patch+json"}
sent = {}
async def main():
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer " + job["token"]}) as s:
        async def one(target, record):
            sent[target] = time.monotonic()
            async with s.post(job["url"] + job["remediations"], json=record) as answer:
                await answer.read()
            where = job["url"] + job["deployments"] + "/" + target
            if job["protocol"]:  # the run's start recorded, the Deployment read, first
                status = job["url"] + job["remediations"] + "/" + target + "/status"
                start = {"status": {"phase": "Running", "executor": "floor"}}
                async with s.patch(status, json=start, headers=merge) as answer:
                    await answer.read()
                async with s.get(where) as answer:
                    await answer.read()
            async with s.patch(where, data=patch, headers=smp) as answer:
                await answer.read()
        await asyncio.gather(*(one(t, r) for t, r in job["records"].items()))
asyncio.run(main())
print(json.dumps(sent))
"""


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": f"registry.local/{name}:1"}]},
            },
        },
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "readyReplicas": 1,
            "updatedReplicas": 1,
            "availableReplicas": 1,
        },  # fmt: skip
    }


def restart_step(name: str) -> dict[str, Any]:
    return {"name": "restart", "action": "rolloutRestart", "params": {"name": name}}


def restart_runbook() -> dict[str, Any]:
    """Restarts the Deployment the alert's ``deployment`` label names; no throttling."""
    return {
        "apiVersion": API_VERSION,
        "kind": "McpRunbook",
        "metadata": {"name": RUNBOOK, "namespace": NAMESPACE},
        "spec": {
            "triggers": [{"alertname": ALERTNAME}],
            "steps": [restart_step("{{ labels.deployment }}")],
            "guardrails": {
                "groupBy": GROUP_BY,
                "cooldownSeconds": 0,
                "maxPerHour": 1_000_000,
                "maxConcurrent": 1000,
            },  # fmt: skip
        },
    }


def one_step(name: str, target: str) -> dict[str, Any]:
    """A remediation as a user writes one: inline, one rolloutRestart."""
    return {
        "apiVersion": API_VERSION,
        "kind": "McpRemediation",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"steps": [restart_step(target)]},
    }


def stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def finished_record(index: int, now: datetime.datetime) -> dict[str, Any]:
    """A record the receiver created and the engine finished: Succeeded five minutes ago."""
    target = f"app-{index % 50:02d}"
    labels = {"alertname": ALERTNAME, "deployment": target, "namespace": NAMESPACE}
    fingerprint = f"{index:016x}"
    starts = stamp(now - datetime.timedelta(minutes=6))
    started = stamp(now - datetime.timedelta(seconds=310))
    finished = stamp(now - datetime.timedelta(minutes=5))
    group = records.group_key(GROUP_BY, labels)
    info = {
        "fingerprint": fingerprint,
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": "benchmark"},
        "startsAt": starts,
        "groupKey": "{}:{}",
    }
    body = records.remediation_body(
        records.remediation_name(RUNBOOK, fingerprint, starts),
        NAMESPACE,
        RUNBOOK,
        spec={"alert": info},
        labels={LABEL_ALERTNAME: ALERTNAME, LABEL_FINGERPRINT: fingerprint, LABEL_GROUP: group},
    )
    outputs = {
        "kind": "Deployment",
        "namespace": NAMESPACE,
        "names": target,
        "restartedAt": started,
    }
    body["apiVersion"] = API_VERSION
    body["status"] = {
        "phase": "Succeeded",
        "message": "1 of 1 steps succeeded",
        "startedAt": started,
        "finishedAt": finished,
        "observedGeneration": 1,
        "plan": {"runbook": RUNBOOK, "runbookGeneration": 1, "namespace": NAMESPACE,
                 "serviceAccountName": "mcp-remediator-runner", "steps": [restart_step(target)]},
        "steps": [{"name": "restart", "action": "rolloutRestart", "phase": "Succeeded",
                   "attempts": 1, "startedAt": started, "finishedAt": finished,
                   "message": f"restarted Deployment {target} in {NAMESPACE}", "outputs": outputs}],
    }  # fmt: skip
    return body


def alert(target: str, nonce: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {
            "alertname": ALERTNAME,
            "deployment": target,
            "namespace": NAMESPACE,
            "severity": "warning",
        },  # fmt: skip
        "annotations": {"summary": "benchmark"},
        "startsAt": stamp(datetime.datetime.now(datetime.UTC)),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": f"{nonce}-{target}",
    }


# -- the emulated cluster and what it counts ----------------------------------------------


@dataclass
class Action:
    """A Deployment patch (a restart), when the API admitted it and from which process."""

    deployment: str
    at: float
    process: str


def verb_of(entry: authz.AuditEntry) -> str:
    if entry.method == "GET":
        return {"list": "LIST", "watch": "WATCH"}.get(entry.verb, "GET")
    return entry.method


class Traffic(list[authz.AuditEntry]):
    """Stands in for the emulator's ``audit`` list: counts each request of a known bearer
    token by verb as the emulator admits it (``time.monotonic``), and keeps none."""

    def __init__(self) -> None:
        super().__init__()
        self.owners: dict[str, str] = {}  # bearer token → process label
        self.counts: dict[str, Counter[str]] = {}
        self.leases: Counter[str] = Counter()  # Lease requests per process
        self.last: dict[str, float] = {}  # each process's last request but Lease ones
        self.actions: list[Action] = []
        self.on_action: Callable[[Action], None] | None = None
        # Told of each remediation status write the API admits: (process, name, when).
        self.on_status: Callable[[str, str, float], None] | None = None

    def append(self, entry: authz.AuditEntry, /) -> None:
        now = time.monotonic()
        headers = entry.request.headers if entry.request is not None else {}
        credential = headers.get("Authorization") or headers.get("authorization") or ""
        owner = self.owners.get(credential.removeprefix("Bearer ").strip())
        if owner is None:
            return
        self.counts.setdefault(owner, Counter())[verb_of(entry)] += 1
        if entry.resource == "leases":
            self.leases[owner] += 1
        else:
            self.last[owner] = now
        if (
            entry.allowed
            and entry.resource == REMEDIATIONS
            and entry.subresource == "status"
            and self.on_status is not None
        ):
            self.on_status(owner, entry.name or "", now)
        if entry.allowed and entry.resource == "deployments" and entry.verb == "patch":
            action = Action(entry.name, now, owner)
            self.actions.append(action)
            if self.on_action is not None:
                self.on_action(action)

    def sent(self, owner: str) -> Counter[str]:
        return Counter(self.counts.get(owner, Counter()))

    def first(self, deployment: str, after: float = 0.0) -> Action | None:
        return next((a for a in self.actions if a.deployment == deployment and a.at > after), None)


def cluster(checkout: Path) -> tuple[ApiServerEmulator, Traffic]:
    """A fresh API with the checkout's CRDs and RBAC, auth on, rollouts completing at once."""
    api = ApiServerEmulator()
    api.keep_requests = False  # Traffic counts them; KMock would match each against all
    api.register_builtins()
    lease = kmock.resource(LEASE[0], LEASE[1])
    if lease not in api.resources:  # a built-in kind the emulator may not serve yet
        api.resources[lease] = kmock.ResourceInfo(
            kind="Lease", singular="lease", namespaced=True, verbs=emulator.VERBS
        )
    api.register_crd_dir(checkout / "crds")
    api.enable_auth()
    traffic = Traffic()
    api.audit = traffic
    for part in ("rbac", "runner"):
        api.apply_dir(checkout / "manifests" / part)
    for name in (NAMESPACE, ACCOUNT[0]):
        api.seed(namespace(name))
    api.add_reactor("apps/v1", "deployments", complete_rollouts)
    return api, traffic


@asynccontextmanager
async def serving(api: ApiServerEmulator) -> AsyncIterator[str]:
    """The API on a free 127.0.0.1 port; its URL."""
    async with api, kmock.Server(api) as server:
        yield str(server.url).rstrip("/")


def token_for(api: ApiServerEmulator, traffic: Traffic, label: str, *, admin: bool) -> str:
    """The process's own bearer token: the operator's ServiceAccount, or a cluster-admin."""
    for token, owner in traffic.owners.items():
        if owner == label:
            return token
    token = secrets.token_urlsafe(24)
    if admin:
        api.add_token(token, f"bench-{label}", (authz.MASTERS,))
    else:
        ns, name = ACCOUNT
        api.add_token(
            token, authz.service_account_username(ns, name), authz.service_account_groups(ns)
        )
    traffic.owners[token] = label
    return token


# -- the processes ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Version:
    """A code version: its checkout, and how its operator is started."""

    label: str
    path: Path
    env: dict[str, str] = field(default_factory=dict)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "mcp_remediator", "run"]

    def environment(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.path / "operator"), **self.env}


MINIMAL = Version("minimal", ROOT)


@dataclass
class Process:
    label: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int
    started: float

    def memory_mb(self) -> tuple[float, float]:
        """Peak (VmHWM) and current (VmRSS) resident memory."""
        status = Path(f"/proc/{self.popen.pid}/status").read_text()
        found = [
            re.search(rf"^{key}:\s+(\d+) kB", status, re.MULTILINE) for key in ("VmHWM", "VmRSS")
        ]
        peak, now = (int(f.group(1)) / 1024 if f else math.nan for f in found)
        return peak, now

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def stop(self) -> float:
        """SIGTERM, as Kubernetes stops a pod; the seconds until it exited."""
        sent = time.monotonic()
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.popen.wait, 120)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            await asyncio.to_thread(self.popen.wait)
        return time.monotonic() - sent


def launch(
    version: Version,
    api: ApiServerEmulator,
    traffic: Traffic,
    url: str,
    workdir: Path,
    label: str,
) -> Process:
    """The version's operator as a process (its label is also its ``POD_ID``)."""
    minimal = version is MINIMAL
    token = token_for(api, traffic, label, admin=minimal)
    kubeconfig = write_kubeconfig(workdir / f"{label}.kubeconfig", url, ACCOUNT[0], token=token)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.pop("PYTHONPATH", None)
    env.update(
        MCP_RECEIVER_HOST="127.0.0.1",
        MCP_RECEIVER_PORT=str(port),
        MCP_RECEIVER_TOKEN=TOKEN,
        POD_ID=label,
        POD_NAMESPACE=ACCOUNT[0],
    )
    command = [sys.executable, str(HERE / "minimal_operator.py")] if minimal else version.command()
    if not minimal:
        env.update(version.environment())
    log = workdir / f"{label}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [*command, "--kubeconfig", str(kubeconfig)],
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Process(label, popen, log, port, time.monotonic())


async def until_quiet(
    traffic: Traffic, processes: list[Process], done: Callable[[], bool], timeout: float
) -> bool:
    """Wait until ``done()`` holds and no process has sent a request (but on Leases) for
    ``QUIET`` s, or since it started (a follower may touch nothing but the Lease); false at
    the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if not process.alive():
                raise RuntimeError(f"{process.label} exited:\n{process.tail()}")
        quiet = time.monotonic() - QUIET
        if done() and all(
            max(traffic.last.get(p.label, 0.0), p.started) < quiet for p in processes
        ):
            return True
        await asyncio.sleep(0.05)
    return False


async def wait_ready(process: Process, timeout: float) -> None:
    """Until the receiver answers ``/readyz`` with 200."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{process.port}") as client:
        while time.monotonic() < deadline:
            if not process.alive():
                raise RuntimeError(f"{process.label} exited:\n{process.tail()}")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{process.label}: receiver not ready in {timeout:.0f} s")


# -- 1. restart cost ---------------------------------------------------------------------


@dataclass
class Start:
    requests: Counter[str]
    quiet: float  # start → its last request before the quiet
    act: float  # start → the probe's Deployment patched (nan: never)
    peak_mb: float
    rss_mb: float
    cpu: float  # the operator's CPU time until quiet
    api_cpu: float  # this process's (the emulated API's) CPU time meanwhile
    quieted: bool  # false: still busy (or the probe not acted on) at the timeout
    stop: float = math.nan  # SIGTERM → exit of the process before (a restart)


@dataclass
class Floor:
    listed: float  # spawn → Python up, Kopf imported, the records listed
    imported: float  # spawn → Kopf imported
    peak_mb: float
    items: int


async def floor_probe(url: str, api: ApiServerEmulator, traffic: Traffic) -> Floor:
    token = token_for(api, traffic, "floor", admin=True)
    target = f"{url}/apis/{API_VERSION}/namespaces/{NAMESPACE}/{REMEDIATIONS}"
    spawned = time.monotonic()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOOR_PROBE, target, token, stdout=subprocess.PIPE
    )
    out, _ = await child.communicate()
    found = json.loads(out)
    peak = re.search(r"^VmHWM:\s+(\d+) kB", found["status"], re.MULTILINE)
    return Floor(
        found["listed"] - spawned,
        found["imported"] - spawned,
        int(peak.group(1)) / 1024 if peak else math.nan,
        found["items"],
    )


async def start_once(
    version: Version,
    api: ApiServerEmulator,
    traffic: Traffic,
    url: str,
    workdir: Path,
    probe: str,
    timeout: float,
) -> tuple[Process, Start]:
    """Start the operator, create the probe remediation right away, wait for the quiet."""
    before, api_cpu = traffic.sent(version.label), time.process_time()
    process = launch(version, api, traffic, url, workdir, version.label)
    api.seed(one_step(probe, probe))
    quieted = await until_quiet(
        traffic, [process], lambda: traffic.first(probe) is not None, timeout
    )
    action = traffic.first(probe)
    peak, rss = process.memory_mb()
    start = Start(
        requests=traffic.sent(version.label) - before,
        quiet=traffic.last.get(version.label, math.nan) - process.started,
        act=action.at - process.started if action else math.nan,
        peak_mb=peak,
        rss_mb=rss,
        cpu=process.cpu_seconds(),
        api_cpu=time.process_time() - api_cpu,
        quieted=quieted,
    )
    print(
        f"  {probe}: {start.requests.total():,} requests, acts {seconds(start.act)}, quiet "
        f"{seconds(start.quiet)}{'' if quieted else ' (timed out)'}, CPU {start.cpu:.1f} s, "
        f"API CPU {start.api_cpu:.1f} s, {peak:,.0f} MiB",
        flush=True,
    )
    return process, start


def records_of(version: Version, args: argparse.Namespace) -> int:
    """The history the version starts on: ``--before-records`` may be smaller, as the code
    before takes about an hour at 10,000 records on two cores."""
    return int(args.before_records) if version.label == "before" else int(args.records)


async def restart_cost(
    version: Version, args: argparse.Namespace, workdir: Path, *, floor: bool
) -> tuple[Start, Start, Floor | None]:
    api, traffic = cluster(version.path)
    now = datetime.datetime.now(datetime.UTC)
    for index in range(records_of(version, args)):
        api.seed(finished_record(index, now))
    api.apply_dir(version.path / "manifests" / "runbooks", namespace=NAMESPACE)
    api.seed(restart_runbook())
    for probe in ("probe-first", "probe-restart"):
        api.seed(deployment(probe))
    async with serving(api) as url:
        measured = await floor_probe(url, api, traffic) if floor else None
        process, first = await start_once(
            version, api, traffic, url, workdir, "probe-first", args.timeout
        )
        stopped = await process.stop()
        process, again = await start_once(
            version, api, traffic, url, workdir, "probe-restart", args.timeout
        )
        again.stop = stopped
        await process.stop()
    return first, again, measured


# -- 2. alert → first action -------------------------------------------------------------


@dataclass
class Burst:
    latencies: list[float]  # POST sent → its Deployment patched, of those patched
    requests: Counter[str]
    alerts: int
    codes: Counter[int]
    peak_mb: float = math.nan
    api_cpu: float = math.nan  # this process's (the emulated API's) CPU time, until quiet
    quieted: bool = True
    rounds: list[list[float]] = field(default_factory=list)  # every round's latencies

    def percentile(self, q: float) -> float:
        """Of each round, its percentile; of the rounds, the median (in ms)."""
        values = [_percentile(r, q) for r in self.rounds or [self.latencies] if r]
        return statistics.median(values) * 1000 if values else math.nan


def _percentile(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rounds_of(bursts: list[Burst]) -> Burst:
    """Several rounds of one burst as one: the first round's counts (the same in every
    round), every round's latencies."""
    first = bursts[0]
    first.rounds = [b.latencies for b in bursts]
    first.quieted = all(b.quieted for b in bursts)
    return first


async def post_alerts(port: int, targets: list[str]) -> tuple[dict[str, float], Counter[int]]:
    """One webhook POST per target, all at once; when each was sent, the answer codes."""
    sent: dict[str, float] = {}
    codes: Counter[int] = Counter()
    nonce = secrets.token_hex(4)
    limits = httpx.Limits(max_connections=len(targets))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits, timeout=120
    ) as client:

        async def post(target: str) -> None:
            body = payload([alert(target, nonce)])
            sent[target] = time.monotonic()
            codes[(await client.post("/alerts", json=body)).status_code] += 1

        await asyncio.gather(*(post(t) for t in targets))
    return sent, codes


async def burst(version: Version, args: argparse.Namespace, workdir: Path) -> Burst:
    api, traffic = cluster(version.path)
    api.seed(restart_runbook())
    targets = [f"bench-{i:03d}" for i in range(args.alerts)]
    for target in targets:
        api.seed(deployment(target))
    async with serving(api) as url:
        label = f"{version.label}-burst"
        process = launch(version, api, traffic, url, workdir, label)
        try:
            await wait_ready(process, args.timeout)
            await until_quiet(traffic, [process], lambda: True, args.timeout)
            before, api_cpu = traffic.sent(label), time.process_time()
            sent, codes = await post_alerts(process.port, targets)
            quieted = await until_quiet(
                traffic, [process], lambda: all(traffic.first(t) for t in targets), args.timeout
            )
            acted = {t: traffic.first(t) for t in targets}
            latencies = [a.at - sent[t] for t, a in acted.items() if a is not None]
            result = Burst(latencies, traffic.sent(label) - before, len(targets), codes)
            result.peak_mb = process.memory_mb()[0]
            result.api_cpu, result.quieted = time.process_time() - api_cpu, quieted
            print(
                f"  {len(latencies)} of {len(targets)} patched, p50 {ms(result.percentile(0.5))}, "
                f"p99 {ms(result.percentile(0.99))}, {result.requests.total() / len(targets):.1f} "
                "requests per alert",
                flush=True,
            )
        finally:
            await process.stop()
    return result


async def api_floor(checkout: Path, args: argparse.Namespace, *, protocol: bool) -> Burst:
    """The API alone: per alert its record created and its Deployment patched, all alerts
    at once, by a process of its own (``FLOOR_WRITES``) as the operators are. With
    ``protocol``, between the two the requests our run makes before it acts: its start
    written (with the restart's intent) and the Deployment read (kubectl's paused check)."""
    api, traffic = cluster(checkout)
    targets = [f"bench-{i:03d}" for i in range(args.alerts)]
    for target in targets:
        api.seed(deployment(target))
    async with serving(api) as url:
        job = {
            "url": url,
            "token": token_for(api, traffic, "floor", admin=True),
            "remediations": f"/apis/{API_VERSION}/namespaces/{NAMESPACE}/{REMEDIATIONS}",
            "deployments": f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
            "records": {
                t: {**one_step(t, t), "spec": {"alert": alert(t, "floor")}} for t in targets
            },
            "protocol": protocol,
        }
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOOR_WRITES, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        out, _ = await child.communicate(json.dumps(job).encode())
    sent: dict[str, float] = json.loads(out)
    acted = {t: traffic.first(t) for t in targets}
    latencies = [a.at - sent[t] for t, a in acted.items() if a is not None]
    return Burst(latencies, traffic.sent("floor"), len(targets), Counter())


# -- 3. failover -------------------------------------------------------------------------


@dataclass
class Failover:
    skipped: str = ""
    runs: int = 0
    remaining: int = 0  # runs whose Deployment the leader had not restarted
    by_survivor: int = 0
    twice: int = 0  # Deployments restarted more than once
    restarted: int = 0
    succeeded: int = 0
    act: float = math.nan  # kill → the survivor's first restart of a remaining run
    takeover: float = math.nan  # kill → the survivor holds the Lease
    lease_left: float = math.nan  # kill → the Lease's expiry (renewTime + duration)


def holder(api: ApiServerEmulator) -> str | None:
    lease = api.get(LEASE[0], LEASE[1], LEASE[2], LEASE[3])
    return None if lease is None else (lease.get("spec") or {}).get("holderIdentity")


def lease_left(api: ApiServerEmulator) -> float:
    """Seconds from now until the Lease expires, if nobody renews it."""
    spec = (api.get(LEASE[0], LEASE[1], LEASE[2], LEASE[3]) or {}).get("spec") or {}
    renewed, duration = (
        spec.get("renewTime") or spec.get("acquireTime"),
        spec.get("leaseDurationSeconds"),
    )
    if not renewed or duration is None:
        return math.nan
    expiry = datetime.datetime.fromisoformat(renewed) + datetime.timedelta(seconds=duration)
    return (expiry - datetime.datetime.now(datetime.UTC)).total_seconds()


async def failover(version: Version, args: argparse.Namespace, workdir: Path) -> Failover:
    api, traffic = cluster(version.path)
    targets = [f"failover-{i:02d}" for i in range(args.runs)]
    for target in targets:
        api.seed(deployment(target))
    result = Failover(runs=len(targets))
    async with serving(api) as url:
        pods = [launch(version, api, traffic, url, workdir, f"mcp-remediator-{x}") for x in "ab"]
        try:
            deadline = time.monotonic() + LEASE_WAIT
            while holder(api) is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            found = holder(api)
            labels = [p.label for p in pods]
            if found is None:
                result.skipped = (
                    f"no Lease {LEASE[2]}/{LEASE[3]} appeared within {LEASE_WAIT:.0f} s of two "
                    "replicas starting (no Lease-based leader election in this code)"
                )
                return result
            if found not in labels:
                result.skipped = f"the Lease's holder {found!r} is neither POD_ID {labels}"
                return result
            await until_quiet(traffic, pods, lambda: True, args.timeout)
            leader = next(p for p in pods if p.label == found)
            survivor = next(p for p in pods if p is not leader)
            killed: list[float] = []

            def kill_leader(process: str, name: str, at: float) -> None:
                # At its first run's start: the runs it has started, and maybe restarted,
                # and those it has not, are the survivor's to finish.
                if process == leader.label and not killed:
                    leader.popen.kill()
                    killed.append(at)
                    result.lease_left = lease_left(api)

            def finished() -> bool:
                phases = [
                    (r.get("status") or {}).get("phase")
                    for r in api.list_objects(API_VERSION, REMEDIATIONS, NAMESPACE)
                ]
                return all(p in ("Succeeded", "Failed") for p in phases)

            traffic.on_status = kill_leader
            for target in targets:
                api.seed(one_step(target, target))
            await asyncio.wait_for(until_killed(killed), args.timeout)
            taken = asyncio.create_task(until_holder(api, survivor.label))
            await until_quiet(
                traffic,
                [survivor],
                lambda: all(traffic.first(t) for t in targets) and taken.done() and finished(),
                args.timeout,
            )
            if taken.done():
                result.takeover = taken.result() - killed[0]
            taken.cancel()
            led = {a.deployment for a in traffic.actions if a.process == leader.label}
            mine = [a for a in traffic.actions if a.process == survivor.label and a.at > killed[0]]
            left = [a for a in mine if a.deployment not in led]
            result.remaining = len(set(targets) - led)
            result.by_survivor = len({a.deployment for a in mine})
            result.act = left[0].at - killed[0] if left else math.nan
            restarts = Counter(a.deployment for a in traffic.actions)
            result.restarted = len(restarts)
            result.twice = sum(1 for n in restarts.values() if n > 1)
            phases = Counter(
                (r.get("status") or {}).get("phase")
                for r in api.list_objects(API_VERSION, REMEDIATIONS, NAMESPACE)
            )
            result.succeeded = phases["Succeeded"]
        finally:
            traffic.on_status = None
            for pod in pods:
                await pod.stop()
    return result


async def until_killed(killed: list[float]) -> None:
    while not killed:
        await asyncio.sleep(0.01)


async def until_holder(api: ApiServerEmulator, label: str) -> float:
    while holder(api) != label:
        await asyncio.sleep(0.02)
    return time.monotonic()


# -- the run -----------------------------------------------------------------------------


@dataclass
class Results:
    starts: dict[str, tuple[Start, Start]]
    floor: Floor
    bursts: dict[str, Burst]
    api: Burst
    protocol: Burst  # the API alone, doing the four requests of a safe run
    failover: Failover


async def measure(args: argparse.Namespace, workdir: Path) -> Results:
    before = Version("before", args.before)
    after = Version("after", args.after, dict(item.split("=", 1) for item in args.after_env))
    for version in (before, after):
        # Bytecode first, as an image has it: a fresh checkout's first start would compile.
        command = [sys.executable, "-m", "compileall", "-q", str(version.path / "operator")]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    starts: dict[str, tuple[Start, Start]] = {}
    floor: Floor | None = None
    for version in (before, after):
        print(f"restart cost, {version.label} ({records_of(version, args):,} records)", flush=True)
        first, again, measured = await restart_cost(version, args, workdir, floor=floor is None)
        starts[version.label] = first, again
        floor = floor or measured
    assert floor is not None
    # Interleaved rounds: the machine's other work shifts each round, not one side.
    runs: dict[str, list[Burst]] = {"before": [], "after": [], "minimal": [], "2": [], "4": []}
    for round_ in range(1, args.burst_rounds + 1):
        for version in (before, after, MINIMAL):
            print(f"alerts, {version.label} ({args.alerts} at once), round {round_}", flush=True)
            runs[version.label].append(await burst(version, args, workdir))
        runs["2"].append(await api_floor(after.path, args, protocol=False))
        runs["4"].append(await api_floor(after.path, args, protocol=True))
    bursts = {label: rounds_of(runs[label]) for label in ("before", "after", "minimal")}
    api, protocol = rounds_of(runs["2"]), rounds_of(runs["4"])
    print("failover, after", flush=True)
    return Results(starts, floor, bursts, api, protocol, await failover(after, args, workdir))


# -- the report --------------------------------------------------------------------------


def requests(counts: Counter[str], per: int = 1) -> str:
    """``total (VERB n · …)``, the verbs sent; per alert with one decimal (``<0.1``)."""

    def figure(n: int) -> str:
        if per == 1:
            return f"{n:,}"
        return f"{n / per:,.1f}" if n / per >= 0.05 or not n else "<0.1"

    parts = [f"{v} {figure(counts[v])}" for v in VERBS if counts[v]]
    other = sum(n for v, n in counts.items() if v not in VERBS)
    if other:
        parts.append(f"other {figure(other)}")
    return f"{figure(counts.total())} ({' · '.join(parts)})"


def seconds(value: float) -> str:
    return "not seen" if math.isnan(value) else f"{value:,.2f} s"


def ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.0f} ms"


def report(results: Results, args: argparse.Namespace, about: str, command: str) -> str:
    before, after = results.starts["before"], results.starts["after"]
    floor = results.floor
    records_ = (
        f"{args.records:,}"
        if args.before_records == args.records
        else f"{args.before_records:,} (before) and {args.records:,} (after)"
    )

    def row(name: str, fn: Callable[[Start], str], limit: str) -> str:
        return f"| {name} | {fn(before[0])} | {fn(after[0])} | {limit} |"

    def again(name: str, fn: Callable[[Start], str], limit: str) -> str:
        return f"| {name} | {fn(before[1])} | {fn(after[1])} | {limit} |"

    def memory(s: Start) -> str:
        return f"{s.peak_mb:,.0f} / {s.rss_mb:,.0f} MiB"

    def quiet(s: Start) -> str:
        return seconds(s.quiet) + ("" if s.quieted else " (still busy at the timeout)")

    def cpu(s: Start) -> str:
        return f"{s.cpu:,.1f} s / {s.api_cpu:,.1f} s"

    listed = f"{floor.listed:.2f} s (Python + `import kopf` {floor.imported:.2f} s, one LIST)"
    start_rows = [
        row(f"first start on {records_} finished records: requests until quiet",
            lambda s: requests(s.requests), requests(START_FLOOR)),
        row("first start: start → quiet", quiet, listed),
        row("first start: start → acts on a remediation created at start",
            lambda s: seconds(s.act), listed),
        row("first start: peak (VmHWM) / quiet (VmRSS) memory", memory,
            f"{floor.peak_mb:,.0f} MiB (peak of that process)"),
        row("first start: CPU time until quiet, operator / emulated API", cpu, "—"),
        again("restart: SIGTERM → exit of the running operator", lambda s: seconds(s.stop), "—"),
        again("restart: requests until quiet", lambda s: requests(s.requests),
              requests(START_FLOOR)),
        again("restart: start → quiet", quiet, listed),
        again("restart: start → acts on a remediation created at start",
              lambda s: seconds(s.act), listed),
        again("restart: peak (VmHWM) / quiet (VmRSS) memory", memory,
              f"{floor.peak_mb:,.0f} MiB"),
        again("restart: CPU time until quiet, operator / emulated API", cpu, "—"),
    ]  # fmt: skip

    bursts, api, protocol = results.bursts, results.api, results.protocol
    n = args.alerts
    minimal = bursts["minimal"]

    def ratio(b: Burst, q: float) -> str:
        return f"{b.percentile(q) / minimal.percentile(q):.1f}×" if minimal.latencies else "—"

    def acted(b: Burst) -> str:
        codes = ", ".join(f"{c}: {k}" for c, k in sorted(b.codes.items()))
        busy = "" if b.quieted else ", still busy at the timeout"
        return f"{len(b.latencies)} of {b.alerts} (answers {codes}{busy})"

    def line(name: str, fn: Callable[[Burst], str], limit: str) -> str:
        cells = " | ".join(fn(bursts[k]) for k in ("before", "after", "minimal"))
        return f"| {name} | {cells} | {limit} |"

    burst_rows = [
        line(f"{n} concurrent alerts: POST sent → its Deployment patched, p50",
             lambda b: ms(b.percentile(0.5)),
             f"{ms(api.percentile(0.5))} (the API alone, 2 requests) · "
             f"{ms(protocol.percentile(0.5))} (the API alone, a safe run's 4)"),
        line("p99", lambda b: ms(b.percentile(0.99)),
             f"{ms(api.percentile(0.99))} · {ms(protocol.percentile(0.99))}"),
        f"| ours / minimal, p50 · p99 | {ratio(bursts['before'], 0.5)} · "
        f"{ratio(bursts['before'], 0.99)} | {ratio(bursts['after'], 0.5)} · "
        f"{ratio(bursts['after'], 0.99)} | 1.0× | {ratio(api, 0.5)} · {ratio(api, 0.99)} "
        f"(2) · {ratio(protocol, 0.5)} · {ratio(protocol, 0.99)} (4) |",
        line("API requests per alert, until quiet", lambda b: requests(b.requests, n),
             requests(ALERT_FLOOR)),
        line("Deployments patched", acted, f"{n} of {n}"),
        line("emulated API CPU time per alert, until quiet",
             lambda b: f"{b.api_cpu / n * 1000:,.1f} ms", "—"),
        line("peak memory (VmHWM)", lambda b: f"{b.peak_mb:,.0f} MiB", "—"),
    ]  # fmt: skip

    fo = results.failover
    na = "n/a (no failover: no leader election; two replicas both run every remediation)"
    if fo.skipped:
        failover_rows = [
            f"| kill the leader → the survivor's first action | {na} | skipped: {fo.skipped} | — |"
        ]
    else:
        failover_rows = [
            f"| kill the leader (SIGKILL at its first run's start) → the survivor's first restart "
            f"of a run it left | {na} | {seconds(fo.act)} | {seconds(fo.lease_left)} (the "
            "Lease's expiry) |",
            f"| kill → the survivor holds the Lease | n/a | {seconds(fo.takeover)} | "
            f"{seconds(fo.lease_left)} |",
            f"| runs the leader left / restarted by the survivor | n/a | {fo.remaining} / "
            f"{fo.by_survivor} | — |",
            f"| Deployments restarted twice (of {fo.runs}; restarted at all: {fo.restarted}) | "
            f"n/a | **{fo.twice}** | 0 |",
            f"| remediations Succeeded | n/a | {fo.succeeded} of {fo.runs} | {fo.runs} |",
        ]

    counts = (max(args.before_records, 1), max(args.records, 1))
    per_first = [s[0].requests.total() / n for s, n in zip((before, after), counts, strict=True)]
    busy = [s.api_cpu / s.quiet for pair in (before, after) for s in pair if s.quiet > 0]
    per_again = [s[1].requests.total() / n for s, n in zip((before, after), counts, strict=True)]
    mins = [bursts[k].percentile(0.5) for k in ("before", "after")]
    lines = [
        SECTION,
        "",
        f"Command: `make bench-operation` (`{command}`): one run, before and after side by side, "
        f"each measure on a fresh emulated API. before = `{args.before}`, after = "
        f"`{args.after}`. Machine: {about}. The emulated API (KMock-based, in the benchmark's "
        "process, authentication and the checkout's `manifests/rbac` and `manifests/runner` "
        "enforced) and each operator process (`python -m mcp_remediator run` with "
        "`PYTHONPATH=<checkout>/operator`, default settings, running as its ServiceAccount) "
        "share these CPUs, with other work on the machine meanwhile: times move by tens of "
        "percent between runs, request counts do not. Requests are every request the "
        "operator process sent, its impersonated step requests included, counted by the API "
        "as it admitted them (a connection the API could not accept in time, which the "
        "client retries, is not a request); quiet = no request (Lease renewals aside) for 3 s, "
        "and "
        '"start → quiet" ends at the last request before it. "Acts" is the API admitting '
        "the PATCH that sets the Deployment's restartedAt. The floors: request counts are what "
        "the work needs at least; times and memory are those of a process that starts Python, "
        f"imports Kopf and lists the {floor.items:,} records once.",
        "",
        f"Restart cost: {records_} finished McpRemediation records (Succeeded five minutes "
        "ago, named and labelled as the receiver's), the runbook catalogue and a one-step "
        "remediation (rolloutRestart) created the moment the process starts; then the same "
        "after a restart (SIGTERM, start again).",
        "",
        "| measure | before | after | floor / physical limit |",
        "|---|---|---|---|",
        *start_rows,
        "",
        f"Alert → first action: {n} Deployments, one runbook restarting the Deployment named "
        f"by the alert's `deployment` label, {n} webhook POSTs (one alert each) sent at once "
        "after the operator is ready and quiet. The minimal Kopf operator "
        "(`benchmarks/minimal_operator.py`: an aiohttp receiver creating one McpRemediation "
        "per alert, an `on.create` handler patching the Deployment, nothing else) runs the "
        "same way with an admin token; the API alone is a client process (aiohttp) creating "
        f"each record and then patching its Deployment, {n} at once: no webhook hop, no "
        "watch; and the same doing, between the two, what a run must before it acts (its "
        "start and the restart's intent written, so that no replica restarts twice; the "
        "Deployment read, to refuse a paused one as kubectl does): four requests, the least "
        f"a safe run needs. p99 of {n} is their maximum. Each is measured "
        f"{args.burst_rounds} times, the rounds interleaved; the latencies are the median of "
        "the rounds' own, the counts those of the first round (they do not vary).",
        "",
        "| measure | before | after | minimal Kopf operator | floor / physical limit |",
        "|---|---|---|---|---|",
        *burst_rows,
        "",
        f"Failover (after only): two replicas (`POD_ID` mcp-remediator-a, -b); the leader is "
        f"the holder of the Lease {LEASE[2]}/{LEASE[3]}; {args.runs} one-step remediations; "
        "the leader is SIGKILLed the moment the API admits its first run's start (with aiohttp "
        "the leader restarts all 20 within milliseconds: a kill at its first restart left the "
        "survivor nothing to take over); the survivor finishes every run.",
        "",
        "| measure | before | after | floor / physical limit |",
        "|---|---|---|---|",
        *failover_rows,
        "",
        f"Reading: a first start on {records_} finished records costs "
        f"{per_first[0]:.1f} (before) / {per_first[1]:.1f} (after) requests per record, a "
        f"restart {per_again[0]:.1f} / {per_again[1]:.1f}; the floor is "
        f"{START_FLOOR.total()} requests whatever the number of records, since a finished "
        "record needs nothing. A remediation created at start is acted on after "
        f"{seconds(before[0].act)} / {seconds(after[0].act)} (first start) and "
        f"{seconds(before[1].act)} / {seconds(after[1].act)} (restart), against "
        f"{floor.listed:.2f} s to start Python, import Kopf and list the records once. The "
        "emulated API (one Python thread, in the benchmark's process) was busy "
        f"{min(busy, default=0):.0%} to {max(busy, default=0):.0%} of each start's time until "
        "quiet: where that nears 100 %, the API set the pace, and the request counts and the "
        "operator's own CPU time say more about the operator than the times do. Under "
        f"{n} concurrent alerts the first action comes after {ms(mins[0])} / {ms(mins[1])} "
        f"(p50), the minimal Kopf operator's after {ms(minimal.percentile(0.5))}, the API's "
        f"own two writes after {ms(api.percentile(0.5))}. "
        + (
            "Failover was not measured: " + fo.skipped + "."
            if fo.skipped
            else f"After a SIGKILL of the leader the survivor first acts after "
            f"{seconds(fo.act)}, the Lease allowing it after {seconds(fo.lease_left)}; "
            f"Deployments restarted twice: {fo.twice}."
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, default=BASE, help="checkout of the code before")
    parser.add_argument("--after", type=Path, default=ROOT, help="checkout of the code after")
    parser.add_argument(
        "--after-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the after-code's processes (repeatable)",
    )
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument(
        "--before-records", type=int, help="history of the code before (default: --records)"
    )
    parser.add_argument("--alerts", type=int, default=50)
    parser.add_argument(
        "--burst-rounds", type=int, default=5, help="rounds of the concurrent alerts (median)"
    )
    parser.add_argument("--runs", type=int, default=20, help="remediations of the failover")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per wait")
    parser.add_argument("--write", type=Path, help="update this Markdown file's section")
    args = parser.parse_args()
    if args.before_records is None:
        args.before_records = args.records
    args.before, args.after = args.before.resolve(), args.after.resolve()
    about = machine()
    print(about, flush=True)
    command = "python benchmarks/operation.py" + "".join(f" {arg}" for arg in sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="bench-operation-") as tmp:
        results = asyncio.run(measure(args, Path(tmp)))
    section = report(results, args, about, command)
    print("\n" + section)
    if args.write:
        write_section(args.write, SECTION, section)
        print(f"wrote {args.write}")
    starts = [s for pair in results.starts.values() for s in pair]
    complete = all(not math.isnan(s.act) for s in starts) and all(
        len(b.latencies) == b.alerts for b in results.bursts.values()
    )
    return 0 if complete and results.failover.twice == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
