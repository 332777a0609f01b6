"""Benchmark: the alert receiver's ingestion, against the naive receiver.

Run by ``make bench-ingest`` (``python benchmarks/alert_ingest.py --write docs/benchmarks.md``).
Three processes share the machine: the emulated Kubernetes API (``ApiServerEmulator`` on a
free 127.0.0.1 port, its request history trimmed every millisecond as TESTING.md advises),
the receiver under test, and this load generator (httpx, ``--concurrency`` clients posting
Alertmanager webhook payloads, version 4, with the bearer token).

Phases, each on a fresh API and receiver (so that none pays for another's records):

1. latency: ``--latency-alerts`` distinct firing alerts, one per POST, by concurrent
   clients; POST → remediation created is the time until the 200 whose summary says
   ``created: 1`` (the object is created before the answer, so this bounds it from above);
2. sustained: ``--sustained-alerts`` distinct alerts in POSTs of ``--batch`` alerts;
   alerts accepted per second;
3. storm: 10,000 alerts, 10 occurrences sent 1,000 times each (re-sends, HA pairs),
   shuffled, in POSTs of 100: must give exactly 10 remediations, and the answers' summaries
   must account for every alert.

The naive receiver, for comparison, runs phases 1 and 3 on a fresh API: for each alert one
GET (a list by the fingerprint label, filtered by ``startsAt``) and, when nothing is found,
one POST with ``generateName`` (no deterministic name): the usual shape of a webhook
handler. Peak RSS is each receiver process's ``VmHWM``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import os
import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from report import write_section

from mcp_remediator.kube.client import ConnectionConfig, KubeApi
from mcp_remediator.models import API_VERSION, LABEL_FINGERPRINT, REMEDIATIONS
from mcp_remediator.settings import Settings

SECTION = "## Alert ingestion"
TOKEN = "bench-token"
NAMESPACE = "mcp"
STORM_OCCURRENCES = 10
STORM_COPIES = 1_000
STORM_BATCH = 100
CRDS = Path(__file__).parents[1] / "crds"
# Every occurrence its own throttle group and no limits: the phases measure ingestion,
# the guardrail arithmetic is the same list-then-decide either way.
LOOSE = {"groupBy": ["alertname", "instance"], "cooldownSeconds": 0, "maxConcurrent": 1000}


def runbook(name: str, alertname: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "McpRunbook",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "triggers": [{"alertname": alertname}],
            "steps": [{"name": "restart", "action": "rolloutRestart", "params": {"name": "x"}}],
            "guardrails": {**LOOSE, "maxPerHour": 1_000_000},
        },
    }


RUNBOOKS = {
    "latency": runbook("bench-latency", "BenchLatency"),
    "sustained": runbook("bench-sustained", "BenchSustained"),
    "storm": runbook("bench-storm", "BenchStorm"),
}


def alert(alertname: str, index: int) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": alertname, "instance": f"redis-{index}", "severity": "warning"},
        "annotations": {"summary": "benchmark"},
        "startsAt": "2026-11-28T01:26:33.953Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": f"{alertname}-{index:08x}",
    }


def payload(alerts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "mcp-remediator",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "alerts": list(alerts),
    }


# -- the processes ---------------------------------------------------------------------


def serve_api(conn: multiprocessing.connection.Connection) -> None:
    """Child: the emulated API with our CRDs and the runbooks; sends its URL."""
    import kmock

    from mcp_remediator.testing.emulator import ApiServerEmulator

    async def main() -> None:
        api = ApiServerEmulator()
        api.register_builtins()
        api.register_crd_dir(CRDS)
        for body in RUNBOOKS.values():
            api.seed(body)
        async with api, kmock.Server(api) as server:
            conn.send(str(server.url).rstrip("/"))
            while not conn.poll():
                # KMock matches each request against the whole history: keep it short.
                api.trim_requests()
                await asyncio.sleep(0.001)

    asyncio.run(main())


def serve_receiver(conn: multiprocessing.connection.Connection, api_url: str, naive: bool) -> None:
    """Child: our receiver, or the naive one; sends its port, runs until told to stop."""

    async def main() -> None:
        settings = Settings(
            receiver_token=TOKEN,
            receiver_host="127.0.0.1",
            receiver_max_body_bytes=16 * 1024 * 1024,
        )
        kube = KubeApi(ConnectionConfig(server=api_url, insecure=True), settings)
        stop: Callable[[], Awaitable[None]]
        if naive:
            port, stop = await start_naive(kube)
        else:
            from mcp_remediator.alerts.receiver import Receiver

            receiver = Receiver(settings, kube)
            await receiver.start(port=0)
            assert receiver.port is not None
            port, stop = receiver.port, receiver.stop
        conn.send(port)
        while not conn.poll():
            await asyncio.sleep(0.1)
        await stop()
        await kube.aclose()

    asyncio.run(main())


async def start_naive(kube: KubeApi) -> tuple[int, Callable[[], Awaitable[None]]]:
    """The naive receiver: GET then POST per alert, names from ``generateName``."""
    from aiohttp import web

    by_alertname = {b["spec"]["triggers"][0]["alertname"]: b for b in RUNBOOKS.values()}

    async def alerts(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.json()
        created = duplicates = unmatched = 0
        for item in body["alerts"]:
            rb = by_alertname.get(item["labels"].get("alertname", ""))
            if rb is None:
                unmatched += 1
                continue
            name = rb["metadata"]["name"]
            found = await kube.list(
                API_VERSION,
                REMEDIATIONS,
                NAMESPACE,
                label_selector=f"{LABEL_FINGERPRINT}={item['fingerprint']}",
            )
            if any(f["spec"]["alert"]["startsAt"] == item["startsAt"] for f in found):
                duplicates += 1
                continue
            await kube.create(
                API_VERSION,
                REMEDIATIONS,
                NAMESPACE,
                {
                    "kind": "McpRemediation",
                    "metadata": {
                        "generateName": f"{name}-",
                        "labels": {LABEL_FINGERPRINT: item["fingerprint"]},
                    },
                    "spec": {"runbookRef": {"name": name}, "alert": item},
                },
            )
            created += 1
        summary = {"alerts": len(body["alerts"]), "created": created}
        summary.update(duplicates=duplicates, unmatched=unmatched)
        return web.json_response(summary)

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/alerts", alerts)
    app.router.add_get("/readyz", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    return port, runner.cleanup


@dataclass
class Child:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    value: Any

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(found.group(1)) / 1024 if found else float("nan")

    def stop(self) -> None:
        self.conn.send("stop")
        self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)


def start(target: Callable[..., None], *args: Any) -> Child:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=target, args=(child, *args), daemon=True)
    process.start()
    if not parent.poll(60):
        process.terminate()
        raise RuntimeError(f"{target.__name__} did not start")
    return Child(process, parent, parent.recv())


# -- the load --------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    alerts: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    codes: dict[int, int] = field(default_factory=dict)
    remediations: int = 0
    receiver_cpu: float = 0.0
    api_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.alerts / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def post_all(base: str, bodies: list[dict[str, Any]], concurrency: int, phase: Phase) -> None:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=60
    ) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                sent = time.perf_counter()
                response = await client.post("/alerts", json=body)
                elapsed = time.perf_counter() - sent
                phase.codes[response.status_code] = phase.codes.get(response.status_code, 0) + 1
                if response.status_code != 200:
                    continue
                summary = response.json()
                for key, value in summary.items():
                    if isinstance(value, int):
                        phase.totals[key] = phase.totals.get(key, 0) + value
                if summary.get("created") == 1 and len(body["alerts"]) == 1:
                    phase.latencies.append(elapsed)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        phase.seconds = time.perf_counter() - started
    phase.alerts = sum(len(b["alerts"]) for b in bodies)


async def wait_ready(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(600):
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("receiver not ready")


async def count_remediations(api_url: str, runbook_name: str) -> int:
    async with httpx.AsyncClient(base_url=api_url) as client:
        response = await client.get(f"/apis/{API_VERSION}/namespaces/{NAMESPACE}/{REMEDIATIONS}")
        items = response.json()["items"]
    return sum(1 for i in items if i["spec"]["runbookRef"]["name"] == runbook_name)


def storm_bodies() -> list[dict[str, Any]]:
    alerts = [alert("BenchStorm", i % STORM_OCCURRENCES) for i in range(10 * STORM_COPIES)]
    random.Random(0).shuffle(alerts)
    return [payload(alerts[i : i + STORM_BATCH]) for i in range(0, len(alerts), STORM_BATCH)]


@dataclass
class Run:
    """One receiver (ours or naive) on a fresh API."""

    api: Child
    receiver: Child
    concurrency: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.receiver.value}"


async def run_phase(
    phase: Phase, bodies: list[dict[str, Any]], runbook_name: str, run: Run
) -> Phase:
    await wait_ready(run.base)
    receiver_cpu, api_cpu = run.receiver.cpu_seconds(), run.api.cpu_seconds()
    await post_all(run.base, bodies, run.concurrency, phase)
    phase.receiver_cpu = run.receiver.cpu_seconds() - receiver_cpu
    phase.api_cpu = run.api.cpu_seconds() - api_cpu
    phase.remediations = await count_remediations(run.api.value, runbook_name)
    return phase


def phase_bodies(name: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """The POST bodies of a phase and the runbook they match."""
    if name == "latency":
        return [payload([alert("BenchLatency", i)]) for i in range(args.latency_alerts)], (
            "bench-latency"
        )
    if name == "sustained":
        alerts = [alert("BenchSustained", i) for i in range(args.sustained_alerts)]
        step = args.batch
        bodies = [payload(alerts[i : i + step]) for i in range(0, len(alerts), step)]
        return bodies, "bench-sustained"
    return storm_bodies(), "bench-storm"


@dataclass
class Result:
    phases: dict[str, Phase]
    peak_rss_mb: float


def measure(args: argparse.Namespace, naive: bool) -> Result:
    """Each phase on a fresh API and receiver, so that none pays for another's records."""
    phases: dict[str, Phase] = {}
    rss = 0.0
    for name in ("latency", "storm") if naive else ("latency", "sustained", "storm"):
        api = start(serve_api)
        try:
            receiver = start(serve_receiver, api.value, naive)
            try:
                run = Run(api, receiver, args.concurrency)
                bodies, runbook_name = phase_bodies(name, args)
                phases[name] = asyncio.run(run_phase(Phase(name), bodies, runbook_name, run))
                rss = max(rss, receiver.peak_rss_mb())
            finally:
                receiver.stop()
        finally:
            api.stop()
    return Result(phases, rss)


# -- the report ------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), "
        f"Python {platform.python_version()}"
    )


def accounted(phase: Phase) -> int:
    keys = ("created", "duplicates", "skipped", "skippedUnrecorded", "unmatched", "failed")
    return sum(phase.totals.get(k, 0) for k in keys)


def median(results: list[Result], phase: str, fn: Callable[[Phase], float]) -> float:
    return statistics.median(fn(r.phases[phase]) for r in results)


def cpu_ms(phase: Phase, which: str) -> float:
    used = phase.receiver_cpu if which == "receiver" else phase.api_cpu
    return used / phase.alerts * 1000 if phase.alerts else 0.0


def codes(results: list[Result]) -> str:
    merged: dict[int, int] = {}
    for result in results:
        for phase in result.phases.values():
            for code, count in phase.codes.items():
                merged[code] = merged.get(code, 0) + count
    return ", ".join(f"{code}: {count:,}" for code, count in sorted(merged.items()))


def report(ours: list[Result], naive: list[Result], args: argparse.Namespace, about: str) -> str:
    storm_alerts = STORM_OCCURRENCES * STORM_COPIES

    def both(phase: str, fn: Callable[[Phase], float], fmt: str) -> str:
        return f"{fmt.format(median(ours, phase, fn))} | {fmt.format(median(naive, phase, fn))}"

    def cpu(results: list[Result], phase: str, digits: int) -> str:
        receiver = median(results, phase, lambda p: cpu_ms(p, "receiver"))
        api = median(results, phase, lambda p: cpu_ms(p, "api"))
        return f"{receiver:.{digits}f} / {api:.{digits}f} ms"

    def worst_p99(results: list[Result]) -> str:
        return f"{max(r.phases['latency'].percentile(0.99) for r in results):.1f} ms"

    def storm_counts(results: list[Result]) -> str:
        return ", ".join(str(r.phases["storm"].remediations) for r in results)

    def storm_tally(results: list[Result]) -> str:
        storms = [r.phases["storm"] for r in results]
        done = ", ".join(f"{accounted(s):,}" for s in storms)
        created = ", ".join(str(s.totals.get("created", 0)) for s in storms)
        return f"{done} of {storm_alerts:,} (created {created}; the rest duplicates)"

    own = median(ours, "latency", lambda p: cpu_ms(p, "receiver"))
    api_new = median(ours, "latency", lambda p: cpu_ms(p, "api"))
    api_sustained = median(ours, "sustained", lambda p: cpu_ms(p, "api"))
    limit = (
        "the emulated API, not the receiver, limits the rates of new alerts above."
        if api_new > own
        else "the receiver's own CPU limits the rates of new alerts above."
    )
    lines = [
        SECTION,
        "",
        "Command: `make bench-ingest` (`python benchmarks/alert_ingest.py --write "
        f"docs/benchmarks.md`): {len(ours)} rounds, ours and the naive one interleaved, each "
        "phase on a fresh API and receiver; medians, p99 from the worst round. Machine: "
        f"{about}. The emulated API (KMock-based, its request history trimmed every "
        f"millisecond), the receiver and the load generator ({args.concurrency} concurrent "
        "clients) are three processes sharing these CPUs, with other work on the machine "
        "meanwhile, so rates move by tens of percent between rounds; CPU time per alert is "
        "the steadier figure. This is the receiver plus an in-memory API server whose "
        "label-selected lists scan every stored object, not a real cluster.",
        "",
        "| measure | our receiver | naive (GET, then POST with generateName) |",
        "|---|---|---|",
        f"| alerts/s, one new alert per POST ({args.latency_alerts:,} alerts) | "
        + both("latency", lambda p: p.rate, "{:,.0f}")
        + " |",
        "| POST → remediation created, p50 | "
        + both("latency", lambda p: p.percentile(0.5), "{:.1f} ms")
        + " |",
        f"| POST → remediation created, p99 | {worst_p99(ours)} | {worst_p99(naive)} |",
        f"| receiver / API CPU per new alert | {cpu(ours, 'latency', 2)} | "
        f"{cpu(naive, 'latency', 2)} |",
        f"| sustained alerts/s, {args.batch} new alerts per POST ({args.sustained_alerts:,} "
        f"alerts) | {median(ours, 'sustained', lambda p: p.rate):,.0f} | — |",
        f"| sustained: receiver / API CPU per alert | {cpu(ours, 'sustained', 2)} | — |",
        f"| storm of {storm_alerts:,} alerts = {STORM_OCCURRENCES} occurrences × "
        f"{STORM_COPIES:,} copies, shuffled, POSTs of {STORM_BATCH}: alerts/s | "
        + both("storm", lambda p: p.rate, "{:,.0f}")
        + " |",
        f"| storm: receiver / API CPU per alert | {cpu(ours, 'storm', 3)} | "
        f"{cpu(naive, 'storm', 3)} |",
        f"| storm: remediations created, each round (must be {STORM_OCCURRENCES}) | "
        f"**{storm_counts(ours)}** | **{storm_counts(naive)}** |",
        f"| storm: alerts accounted for in the 200 answers, each round | "
        f"{storm_tally(ours)} | {storm_tally(naive)} |",
        f"| answer codes, all rounds and phases | {codes(ours)} | {codes(naive)} |",
        f"| receiver peak RSS (VmHWM), worst round | "
        f"{max(r.peak_rss_mb for r in ours):.0f} MiB | "
        f"{max(r.peak_rss_mb for r in naive):.0f} MiB |",
        "",
        "For a new alert both make the same two API calls (one label-selected list, one "
        "create). Ours answers a re-send of an occurrence it has created or seen from memory, "
        "otherwise from that list, and creates under the deterministic name, so concurrent "
        "copies meet at the API's 409 AlreadyExists. The naive handler's list and create "
        "race: copies that arrive together all find nothing and all create; and every copy "
        "costs it a list.",
        "",
        f"Where the time goes: our receiver spends {own:.1f} ms of CPU per new alert (about "
        f"{1000 / own:,.0f} new alerts/s per core, mostly in the HTTP client), the emulated "
        f"API {api_new:.1f} ms, and {api_sustained:.1f} ms once its lists scan the "
        f"{args.sustained_alerts:,} records of the sustained phase: {limit} Re-sends cost "
        "the receiver tens of microseconds and the API nothing.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-alerts", type=int, default=1_000)
    parser.add_argument("--sustained-alerts", type=int, default=3_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--write", type=Path, help="update this Markdown file's section")
    args = parser.parse_args()
    about = machine()
    print(about, flush=True)
    ours: list[Result] = []
    naive: list[Result] = []
    for round_ in range(1, args.rounds + 1):
        # Interleaved, so that whatever else loads the machine hits both alike.
        ours.append(measure(args, naive=False))
        naive.append(measure(args, naive=True))
        print(
            f"round {round_}: storm remediations: ours {ours[-1].phases['storm'].remediations}, "
            f"naive {naive[-1].phases['storm'].remediations}",
            flush=True,
        )
    section = report(ours, naive, args, about)
    print("\n" + section)
    if args.write:
        write_section(args.write, SECTION, section)
        print(f"wrote {args.write}")
    exact = all(r.phases["storm"].remediations == STORM_OCCURRENCES for r in ours)
    complete = all(accounted(r.phases["storm"]) == STORM_OCCURRENCES * STORM_COPIES for r in ours)
    return 0 if exact and complete else 1


if __name__ == "__main__":
    sys.exit(main())
