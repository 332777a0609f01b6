"""``mcp-remediator demo``: the operations guide's incidents, remediated on a laptop.

Builds the demo's world (``demo.world``: an emulated cluster of the MCP layer, a real
redis-server, redis_exporter and Prometheus, local stand-ins for the modules and the
on-call webhook), loads the runbook catalogue the package ships (a copy of
manifests/runbooks, with PromQL windows and verification holds shortened to the demo's
pace), runs the real operator against it (Kopf, the engine and the alert receiver, in
this process), and replays each incident of ``demo.incidents``: the fault, the alert
POSTed to the receiver with its bearer token, every remediation step as the operator
records it, and the verdict. Prints the timeline, one block per incident, and exits 0
only when every incident reached its verified end (or its documented refusal or revert).

``--keep-running`` leaves the world and the receiver up afterwards for curl experiments;
Ctrl-C stops everything. Every daemon is stopped by its PID on the way out, also when the
demo is interrupted. Called by ``cli`` (``mcp-remediator demo``, ``make demo``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import hashlib
import importlib.resources
import json
import logging
import re
import secrets
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml

from mcp_remediator import records
from mcp_remediator.demo.incidents import INCIDENTS, Alert, Expect, Incident, Verdict
from mcp_remediator.demo.world import NAMESPACE, World
from mcp_remediator.kube.client import ConnectionConfig
from mcp_remediator.models import (
    API_VERSION,
    FINISHED_PHASES,
    FINISHED_STEP_PHASES,
    REMEDIATIONS,
    RUNBOOKS,
)
from mcp_remediator.records import escalation_name
from mcp_remediator.testing.daemons import DemoError, free_port
from mcp_remediator.testing.operator_thread import OperatorThread

WINDOW = re.compile(r"\[\d+[smhd]\]")
DEMO_WINDOW = "[5s]"
DEMO_HOLD_SECONDS = 1
DEMO_WAIT_SECONDS = 40
DEMO_STEP_SECONDS = 60
CONFIRM_SECONDS = 40
FOLLOW_SECONDS = 90
WIDTH = 110
MARKS = {"Succeeded": "ok", "Failed": "FAILED", "Skipped": "skipped", "DryRun": "dry-run"}


def load_catalogue() -> list[dict[str, Any]]:
    """The McpRunbooks the package ships (manifests/runbooks, copied by ``make generate``)."""
    folder = importlib.resources.files("mcp_remediator.demo") / "runbooks"
    runbooks = []
    for item in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if item.name.endswith(".yaml"):
            for doc in yaml.safe_load_all(item.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "McpRunbook":
                    runbooks.append(doc)
    if not runbooks:
        raise DemoError("the package ships no runbooks (mcp_remediator/demo/runbooks)")
    return runbooks


def at_demo_pace(runbook: dict[str, Any]) -> dict[str, Any]:
    """The runbook with PromQL windows of seconds and short holds and timeouts: what takes
    minutes in a cluster takes seconds here. Nothing else changes."""
    body = copy.deepcopy(runbook)
    for step in body["spec"]["steps"]:
        step["timeoutSeconds"] = min(step.get("timeoutSeconds", 300), DEMO_STEP_SECONDS)
        params = step.get("params") or {}
        if isinstance(params.get("query"), str):
            params["query"] = WINDOW.sub(DEMO_WINDOW, params["query"])
        if "forSeconds" in params:
            params["forSeconds"] = min(params["forSeconds"], DEMO_HOLD_SECONDS)
        for key in ("timeoutSeconds", "rolloutTimeoutSeconds"):
            if key in params:
                params[key] = min(params[key], DEMO_WAIT_SECONDS)
    return body


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def alert_entry(alert: Alert, starts_at: str, generator: str) -> dict[str, Any]:
    """The alert as Alertmanager puts it into a webhook payload (version 4)."""
    labels = {"alertname": alert.alertname, **alert.labels}
    fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {
            "summary": alert.summary,
            "runbook_url": "https://github.com/dese-ai/mcp-remediator/tree/main/manifests/runbooks",
        },
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": generator,
        "fingerprint": fingerprint,
    }


def payload(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    names = sorted({a["labels"]["alertname"] for a in alerts})
    return {
        "version": "4",
        "groupKey": '{}/{alertname=~"Redis.+|Mcp.+"}:{alertname=~"' + "|".join(names) + '"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "mcp-remediator",
        "groupLabels": {"alertname": names[0]},
        "commonLabels": {"namespace": NAMESPACE},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.demo.local",
        "alerts": alerts,
    }


def _selector(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


class Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def stamp(self) -> str:
        return f"[{time.monotonic() - self.start:6.2f}s]"


@dataclass
class Block:
    """The lines of one incident (or of one curl experiment), printed together."""

    title: str
    lines: list[str] = field(default_factory=list)


class Printer:
    """Formats timeline lines; incidents print their block once it is complete."""

    def __init__(self, out: TextIO, clock: Clock):
        self.out = out
        self.clock = clock

    def line(self, kind: str, text: str) -> str:
        head = f"{self.clock.stamp()} {kind:<9} "
        return textwrap.fill(
            text,
            WIDTH,
            initial_indent=head,
            subsequent_indent=" " * (len(head) + 2),
            # Never split a name or a URL: a reader (or a test) can join the lines again.
            break_on_hyphens=False,
            break_long_words=False,
        )

    def emit(self, *lines: str) -> None:
        for text in lines:
            print(text, file=self.out, flush=True)


class Director:
    """Runs the world, the operator and the incidents, and watches the remediations."""

    def __init__(self, out: TextIO, directory: Path):
        self.clock = Clock()
        self.printer = Printer(out, self.clock)
        self.directory = directory
        self.world = World(directory)
        self.token = secrets.token_urlsafe(24)
        self.receiver_port = free_port()
        self.owners: dict[str, Block] = {}
        # Runs whose names are known only once created (an agent's proposals), by prefix.
        self.claims: dict[str, Block] = {}
        self.operator: OperatorThread | None = None
        self.http = httpx.AsyncClient(timeout=10)
        self._seen: dict[str, Any] = {}

    @property
    def receiver(self) -> str:
        return f"http://127.0.0.1:{self.receiver_port}"

    # -- watching remediations -----------------------------------------------------------

    async def observe(self) -> None:
        """Turn every change of a remediation's status into timeline lines."""
        last_trim = time.monotonic()
        while True:
            for obj in self.world.api.list_objects(API_VERSION, REMEDIATIONS):
                self._diff(obj)
            if time.monotonic() - last_trim > 2:
                # KMock matches each request against all earlier ones: forget them.
                self.world.api.trim_requests()
                last_trim = time.monotonic()
            await asyncio.sleep(0.05)

    def _diff(self, obj: dict[str, Any]) -> None:
        name = display_name(obj["metadata"]["namespace"], obj["metadata"]["name"])
        status = obj.get("status") or {}
        phase = status.get("phase", "Pending")
        lines = []
        if name not in self._seen:
            spec = obj.get("spec") or {}
            runbook = (spec.get("runbookRef") or {}).get("name")
            origin = f"runbook {runbook}" if runbook else "inline steps"
            escalated = (obj["metadata"].get("labels") or {}).get("mcp.dese.ai/escalated-from")
            if escalated:
                origin += f", escalated from {escalated}"
            lines.append(self.printer.line("run", f"{name}: created ({origin})"))
        for item in status.get("steps") or []:
            key = f"{name}/{item['name']}"
            message = item.get("message", "")
            if item["phase"] in FINISHED_STEP_PHASES:
                if self._seen.get(key) != item["phase"]:
                    self._seen[key] = item["phase"]
                    mark = MARKS.get(item["phase"], item["phase"])
                    lines.append(
                        self.printer.line(
                            f"  {mark}", f"{item['name']} [{item['action']}] {message}"
                        )
                    )
            elif item["phase"] == "Running" and "failed" in message:
                if self._seen.get(key) != message:
                    self._seen[key] = message
                    lines.append(self.printer.line("  retry", f"{item['name']}: {message}"))
        state = (phase, status.get("reason", ""))
        if self._seen.get(name) != state:
            self._seen[name] = state
            if phase != "Pending":
                reason = f" ({state[1]})" if state[1] else ""
                text = f"{name}: {phase}{reason}"
                if phase in FINISHED_PHASES or phase == "AwaitingApproval":
                    text += f" {status.get('message', '')}"
                lines.append(self.printer.line("run", text.rstrip()))
        if not lines:
            return
        owner = self.owners.get(name) or next(
            (block for prefix, block in self.claims.items() if name.startswith(prefix)), None
        )
        if owner is None:
            self.printer.emit(*lines)
        else:
            owner.lines.extend(lines)

    # -- the operator ----------------------------------------------------------------

    async def start_operator(self) -> OperatorThread:
        operator = OperatorThread(
            self.world.settings(self.receiver_port, self.token),
            # As in a pod: the operator's ServiceAccount token, the shipped RBAC applied.
            ConnectionConfig(
                server=self.world.api_url, insecure=True, token=self.world.operator_token()
            ),
        )
        operator.start()
        self.operator = operator

        async def started() -> bool:
            watched = self.world.api.watched_plurals()
            if not operator.ready.is_set() or not {RUNBOOKS, REMEDIATIONS} <= watched:
                return False
            answer = await self.http.get(f"{self.receiver}/readyz")
            return answer.status_code == 200

        await self._until(started, 30, "the operator and its receiver to be ready")
        return operator

    async def _until(self, check: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.operator is not None and self.operator.error is not None:
                raise DemoError(f"the operator stopped: {self.operator.error!r}")
            with contextlib.suppress(httpx.HTTPError):
                result = await check()
                if result:
                    return result
            await asyncio.sleep(0.1)
        raise DemoError(f"timed out after {timeout:g}s waiting for {what}")

    async def load_runbooks(self) -> int:
        runbooks = [at_demo_pace(r) for r in load_catalogue()]
        for runbook in runbooks:
            runbook["metadata"]["namespace"] = NAMESPACE
            self.world.api.seed(runbook)
        return len(runbooks)

    async def runbooks_valid(self, count: int) -> None:
        async def valid() -> bool:
            found = self.world.api.list_objects(API_VERSION, RUNBOOKS, NAMESPACE)
            conditions = [
                c
                for runbook in found
                for c in (runbook.get("status") or {}).get("conditions") or []
                if c.get("type") == "Valid"
            ]
            invalid = [c for c in conditions if c.get("status") == "False"]
            if invalid:
                raise DemoError(f"a runbook of the catalogue is invalid: {invalid[0]}")
            return len(conditions) == count

        await self._until(valid, 30, "the operator to validate the runbooks")

    # -- incidents -------------------------------------------------------------------

    async def run_incident(self, number: int, incident: Incident) -> Verdict | None:
        block = Block(f"== {number}. {incident.title} ({incident.key})")
        stage = IncidentStage(self, block)
        verdict: Verdict | None = None
        try:
            verdict = await asyncio.wait_for(incident.run(stage), 120)
        except (DemoError, TimeoutError, httpx.HTTPError) as exc:
            detail = str(exc) or "timed out"
            block.lines.append(self.printer.line("=>", f"NOT VERIFIED {incident.key}: {detail}"))
        else:
            label = verdict.kind.upper()
            block.lines.append(self.printer.line("=>", f"{label} {incident.key}: {verdict.text}"))
        self.printer.emit("", block.title, *block.lines)
        return verdict

    async def run_lane(self, incidents: list[tuple[int, Incident]]) -> list[Verdict | None]:
        return [await self.run_incident(number, incident) for number, incident in incidents]


class IncidentStage:
    """``incidents.Stage``: what one incident does, recorded into its block."""

    def __init__(self, director: Director, block: Block):
        self.director = director
        self.block = block
        self.world = director.world

    def say(self, kind: str, text: str) -> None:
        self.block.lines.append(self.director.printer.line(kind, text))

    async def confirm(self, promql: str, what: str) -> float:
        async def shows() -> list[tuple[dict[str, str], float]]:
            return await self.world.query(promql)

        found = await self.director._until(shows, CONFIRM_SECONDS, f"Prometheus to show {what}")
        self.say("check", f"Prometheus shows {what}: {promql} -> {found[0][1]:.3g}")
        value: float = found[0][1]
        return value

    async def fire(self, *alerts: Alert) -> list[dict[str, Any]]:
        assert self.world.prometheus is not None
        starts_at = _rfc3339(datetime.datetime.now(datetime.UTC))
        entries = [
            alert_entry(alert, starts_at, f"{self.world.prometheus.url}/graph") for alert in alerts
        ]
        names = []
        for alert, entry in zip(alerts, entries, strict=True):
            name = records.remediation_name(alert.expect.runbook, entry["fingerprint"], starts_at)
            names.append(name)
            self._own(name, alert.expect)
            self.say("alert", f"{alert.alertname}{_selector(alert.labels)} firing")
        response = await self.director.http.post(
            f"{self.director.receiver}/alerts",
            json=payload(entries),
            headers={"Authorization": f"Bearer {self.director.token}"},
        )
        summary = response.json()
        counts = ", ".join(
            f"{value} {key}"
            for key, value in summary.items()
            if isinstance(value, int) and value and key not in ("alerts", "truncated")
        )
        self.say("receiver", f"POST /alerts (bearer token) -> {response.status_code}: {counts}")
        if response.status_code != 200:
            raise DemoError(f"the receiver answered {response.status_code}: {summary}")
        follows = [self.follow(n, a.expect) for n, a in zip(names, alerts, strict=True)]
        return list(await asyncio.gather(*follows))

    async def apply(self, body: dict[str, Any], expect: Expect) -> dict[str, Any]:
        name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
        self._own(display_name(namespace, name), expect)
        self.world.api.seed(body)
        return await self.follow(name, expect, namespace)

    def claim(self, prefix: str) -> None:
        """Route the timeline lines of runs named ``prefix…`` here (names not known yet)."""
        self.director.claims[prefix] = self.block

    def _own(self, name: str, expect: Expect | None) -> None:
        """Route the timeline lines of this run, and of the runs it escalates to, here."""
        while expect is not None:
            self.director.owners[name] = self.block
            if expect.escalation is not None:
                name = escalation_name(expect.escalation.runbook, name)
            expect = expect.escalation

    async def follow(self, name: str, expect: Expect, namespace: str = NAMESPACE) -> dict[str, Any]:
        """Wait until the remediation ends, approving it when asked; check how it ended
        and follow its escalation."""
        self._own(display_name(namespace, name), expect)
        api = self.world.api
        approved = False

        async def finished() -> dict[str, Any] | None:
            nonlocal approved
            obj = api.get(API_VERSION, REMEDIATIONS, namespace, name)
            if obj is None:
                return None
            phase = (obj.get("status") or {}).get("phase")
            if phase == "AwaitingApproval" and expect.approve and not approved:
                approved = True
                # Shown before the approval: the observer polls on its own clock, and the
                # run may be past this state by its next look.
                self.director._diff(obj)
                self.say(
                    "approve",
                    f"on-call reviews the plan and approves: kubectl -n {NAMESPACE} patch mcprem "
                    f'{name} --type merge -p \'{{"spec":{{"approved":true}}}}\'',
                )
                await api.patch_object(
                    API_VERSION, REMEDIATIONS, NAMESPACE, name, {"spec": {"approved": True}}
                )
            return obj if phase in FINISHED_PHASES else None

        obj: dict[str, Any] = await self.director._until(
            finished, FOLLOW_SECONDS, f"remediation {name} to finish"
        )
        # The observer polls on its own clock: print how the run ended before the verdict.
        self.director._diff(obj)
        status = obj["status"]
        if status["phase"] != expect.phase or (
            expect.reasons and status.get("reason") not in expect.reasons
        ):
            raise DemoError(
                f"{name} ended {status['phase']} ({status.get('reason')}): "
                f"{status.get('message')}; expected {expect.phase}"
            )
        if expect.escalation is not None:
            await self.follow(escalation_name(expect.escalation.runbook, name), expect.escalation)
        return obj


OPERATOR_STOP_SECONDS = 15
SLOW_STOP_SECONDS = 5.0


def display_name(namespace: str, name: str) -> str:
    """A remediation's name in the timeline: qualified outside the MCP layer's namespace."""
    return name if namespace == NAMESPACE else f"{namespace}/{name}"


def _lanes() -> list[list[tuple[int, Incident]]]:
    lanes: dict[int, list[tuple[int, Incident]]] = {}
    for number, incident in enumerate(INCIDENTS, start=1):
        lanes.setdefault(incident.lane, []).append((number, incident))
    return [lanes[key] for key in sorted(lanes)]


def _quiet_logs(path: Path, verbose: bool) -> tuple[list[logging.Handler], int]:
    """Send every log line to a file: the terminal shows the timeline."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return saved


async def run_demo(out: TextIO, *, keep_running: bool = False, verbose: bool = False) -> int:
    """Run the demo; 0 when every incident reached its verified end."""
    directory = Path(tempfile.mkdtemp(prefix="mcp-remediator-demo-"))
    saved_handlers, saved_level = _quiet_logs(directory / "operator.log", verbose)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    if main is not None:
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
    director = Director(out, directory)
    world = director.world
    printer = director.printer
    operator: OperatorThread | None = None
    observer: asyncio.Task[None] | None = None
    # Logs stay for a run that failed; an interrupted or successful one leaves nothing.
    failed = False
    try:
        printer.emit("mcp-remediator demo: the operations guide's incidents, remediated")
        await world.start()
        assert world.redis_daemon and world.exporter and world.prometheus
        assert world.alertmanager
        count = await director.load_runbooks()
        printer.emit(
            printer.line(
                "cluster",
                f"emulated Kubernetes API at {world.api_url}: Deployments dese-api, "
                "dese-frontend, finbot, mubot, aiops, websocket-server, redis (namespace mcp); "
                "Argo CD applications dese-api, dese-frontend, dese-finbot, dese-mubot, "
                "observability; Kyverno ClusterPolicies require-signed-images (Enforce) and "
                "require-requests-limits (Audit)",
            ),
            printer.line(
                "redis",
                f"redis-server pid {world.redis_daemon.pid} at {world.redis_daemon.address}: "
                f"{world.cache.dashboard} mcp:dashboard:* keys, {world.cache.other_mcp} other "
                f"mcp: keys, {sum(world.cache.outside.values())} keys outside mcp: "
                "(sessions, job queue, roles) that must survive",
            ),
            printer.line(
                "metrics",
                f"prometheus pid {world.prometheus.pid} at {world.prometheus.url} (scrape 1s), "
                f"redis_exporter pid {world.exporter.pid}, the MCP services' metrics and "
                f"module stand-ins at {world.http_url}",
            ),
            printer.line(
                "silences",
                f"alertmanager pid {world.alertmanager.pid} at {world.alertmanager.url} "
                "(MCP_ALERTMANAGER_URL): runbooks with guardrails.silence silence their alert "
                "there while their run works",
            ),
        )
        observer = asyncio.create_task(director.observe(), name="observer")
        operator = await director.start_operator()
        await director.runbooks_valid(count)
        printer.emit(
            printer.line(
                "operator",
                f"running; receiver at {director.receiver}/alerts (bearer token); {count} "
                "runbooks of manifests/runbooks loaded and Valid (at the demo's pace: PromQL "
                f"windows {DEMO_WINDOW}, verification holds {DEMO_HOLD_SECONDS}s)",
            )
        )
        results = await asyncio.gather(*(director.run_lane(lane) for lane in _lanes()))
        verdicts = [verdict for lane in results for verdict in lane]
        done = sum(1 for verdict in verdicts if verdict is not None)
        failed = done != len(INCIDENTS)
        printer.emit(
            "",
            f"demo finished in {time.monotonic() - director.clock.start:.1f}s: {done} of "
            f"{len(INCIDENTS)} incidents reached their verified end"
            + (f"; logs in {directory}" if failed else ""),
        )
        if keep_running:
            await keep_serving(director)
    except DemoError as exc:
        failed = True
        printer.emit(f"mcp-remediator demo: {exc}", f"logs in {directory}")
    finally:
        stopping = time.monotonic()
        try:
            if observer is not None:
                observer.cancel()
                await asyncio.gather(observer, return_exceptions=True)
            # Closed first: a kept-alive connection would hold the receiver's shutdown up.
            await director.http.aclose()
            if operator is not None:
                # Bounded: a Kopf stop that stalls must not hold a Ctrl-C up (the operator
                # thread is a daemon thread; the daemons below are stopped regardless).
                await operator.stop(timeout=OPERATOR_STOP_SECONDS)
            world.stop_times["operator"] = time.monotonic() - stopping
            await world.stop()
        finally:
            took = time.monotonic() - stopping
            if took > SLOW_STOP_SECONDS:  # say where the time went
                parts = ", ".join(f"{k} {v:.1f}s" for k, v in world.stop_times.items())
                print(f"stopping took {took:.1f}s: {parts}", file=sys.stderr, flush=True)
            world.stop_daemons_now()
            root = logging.getLogger()
            for handler in root.handlers:
                handler.close()
            root.handlers, root.level = saved_handlers, saved_level
            if main is not None:
                loop.remove_signal_handler(signal.SIGTERM)
            if not failed:
                shutil.rmtree(directory, ignore_errors=True)
    return 1 if failed else 0


async def keep_serving(director: Director) -> None:
    """Leave everything up for experiments until Ctrl-C."""
    world = director.world
    token_file = director.directory / "receiver-token"
    token_file.write_text(director.token)
    token_file.chmod(0o600)
    kubeconfig = world.user_kubeconfig("admin", world.api.admin_token)
    now = _rfc3339(datetime.datetime.now(datetime.UTC))
    example = {
        "version": "4",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "McpPromiseRejectionRateHigh", "namespace": NAMESPACE,
                           "module": "aiops", "severity": "warning"},
                "annotations": {"summary": "Dashboard data source aiops rejects requests"},
                "startsAt": now,
                "fingerprint": "c0ffee0000000001",
            }
        ],
    }  # fmt: skip
    director.printer.emit(
        "",
        "Still running (Ctrl-C stops everything). Post an alert yourself (the same fingerprint"
        " and startsAt again is a duplicate; the same group again within the cooldown, Skipped):",
        f'  curl -s -H "Authorization: Bearer $(cat {token_file})" \\',
        "    -H 'Content-Type: application/json' \\",
        f"    -d '{json.dumps(example)}' \\",
        f"    {director.receiver}/alerts",
        "Look at the records with kubectl:",
        f"  kubectl --kubeconfig {kubeconfig} -n {NAMESPACE} get mcpremediations",
        f"Prometheus: {world.prometheus.url if world.prometheus else '-'}; the operator's "
        f"metrics: {director.receiver}/metrics",
    )
    await asyncio.Event().wait()
