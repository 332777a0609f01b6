"""The operations guide's incidents, as the demo replays them.

Each incident breaks something in the demo's world (``world.Faults``, the real Redis,
Argo CD's view of an application), waits until Prometheus shows what the alert's rule
would see, then posts the alert to the operator's receiver as Alertmanager would, follows
every remediation it starts (and those they escalate to) to the end the catalogue
promises, and checks the world afterwards: the fault is gone, nothing else was touched.
An incident returns a ``Verdict``, or raises ``DemoError`` saying what went wrong.

Incidents in one lane run one after another; lanes run side by side. Everything that
touches Redis or restarts ``dese-api`` shares lane 1, so no incident's fix can come from
another's run; lane 3 acts on ``mcp-staging`` only (a timeout change that does not help,
reverted), its verification's full timeout side by side with the others. An AI ops
agent's proposal over MCP acts on ``aiops``, which nothing else touches. Run by
``demo``, which implements ``Stage``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx

from mcp_remediator.demo.agent import CLIENT_NAME, agent_session
from mcp_remediator.demo.world import (
    AGENT,
    CONFIG_MAP,
    NAMESPACE,
    NON_ROOT,
    NON_ROOT_GIT,
    RESTARTED_AT,
    SIGNED_IMAGES,
    SIGNED_IMAGES_GIT,
    STAGING,
    STALE_AUTHZ_KEY,
    TENANT,
    TENANT_RUNBOOK,
    TENANT_RUNNER,
    World,
    pod_status,
)
from mcp_remediator.models import (
    ANNOTATION_PROPOSAL_REASON,
    ANNOTATION_PROPOSED_BY,
    API_VERSION,
    REMEDIATIONS,
)
from mcp_remediator.testing.daemons import DemoError

# The alerts' conditions at the demo's pace: 5 s windows instead of 5 minutes.
HIT_RATIO = (
    'sum(rate(redis_keyspace_hits_total{namespace="mcp"}[5s])) / '
    '(sum(rate(redis_keyspace_hits_total{namespace="mcp"}[5s])) + '
    'sum(rate(redis_keyspace_misses_total{namespace="mcp"}[5s])))'
)
MEMORY_RATIO = "max(redis_memory_used_bytes / (redis_memory_max_bytes > 0))"
AUTH_RATIO = (
    'sum(rate(http_requests_total{service="dese-api", code=~"401|403"}[5s])) / '
    'sum(rate(http_requests_total{service="dese-api"}[5s]))'
)


def rejections(module: str) -> str:
    settled = "mcp_dashboard_promises_settled_total"
    return (
        f'sum(rate({settled}{{module="{module}", status="rejected"}}[5s])) / '
        f'sum(rate({settled}{{module="{module}"}}[5s]))'
    )


@dataclass(frozen=True)
class Expect:
    """How a remediation must end, and what it must escalate to."""

    runbook: str
    phase: str
    escalation: Expect | None = None
    # The demo approves the run when it waits for approval, as on-call would.
    approve: bool = False
    reasons: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Alert:
    """One firing alert, labelled as the rule in manifests/prometheus/rules.yaml labels it."""

    alertname: str
    labels: dict[str, str]
    summary: str
    expect: Expect


@dataclass(frozen=True)
class Verdict:
    kind: Literal["verified", "refused as documented", "reverted as documented"]
    text: str


class Stage(Protocol):
    """What an incident may do; ``demo`` records and prints it."""

    world: World

    def say(self, kind: str, text: str) -> None: ...

    async def confirm(self, promql: str, what: str) -> float: ...

    async def fire(self, *alerts: Alert) -> list[dict[str, Any]]: ...

    async def apply(self, body: dict[str, Any], expect: Expect) -> dict[str, Any]: ...

    async def follow(
        self, name: str, expect: Expect, namespace: str = NAMESPACE
    ) -> dict[str, Any]: ...

    def claim(self, prefix: str) -> None: ...


@dataclass(frozen=True)
class Incident:
    key: str
    title: str
    lane: int
    run: Callable[[Stage], Awaitable[Verdict]] = field(repr=False)


async def value_of(world: World, promql: str) -> float:
    """The single value a query returns now."""
    found = await world.query(promql)
    if len(found) != 1:
        raise DemoError(f"{promql} returned {len(found)} series")
    return found[0][1]


def step(run: dict[str, Any], name: str) -> dict[str, Any]:
    for item in run["status"]["steps"]:
        if item["name"] == name:
            result: dict[str, Any] = item
            return result
    raise DemoError(f"{run['metadata']['name']} has no step {name}")


SILENCE_SECONDS = 60
_SILENCE_OF = re.compile(r"remediation (?P<namespace>[a-z0-9-]+)/(?P<name>[a-z0-9.-]+) is running")


def silence_matchers(silence: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["value"] for m in silence.get("matchers") or [] if m.get("isEqual", True)}


async def watch_silence(stage: Stage, alertname: str) -> dict[str, Any]:
    """The operator's silence of ``alertname`` as Alertmanager shows it while its run works:
    polled from ``GET /api/v2/silences`` until one is active, the run it names Running."""
    world = stage.world
    deadline = time.monotonic() + SILENCE_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            for silence in await world.silences():
                found = _SILENCE_OF.search(str(silence.get("comment") or ""))
                if (
                    silence.get("createdBy") != "mcp-remediator"
                    or silence_matchers(silence).get("alertname") != alertname
                    or (silence.get("status") or {}).get("state") != "active"
                    or found is None
                ):
                    continue
                run = world.api.get(API_VERSION, REMEDIATIONS, found["namespace"], found["name"])
                phase = ((run or {}).get("status") or {}).get("phase")
                matchers = ", ".join(f'{k}="{v}"' for k, v in silence_matchers(silence).items())
                stage.say(
                    "silence",
                    f"Alertmanager: silence {silence['id']} active ({matchers}; endsAt "
                    f"{silence['endsAt']}) while {found['name']} is {phase}: nobody is paged "
                    "for what is being fixed",
                )
                return silence
        await asyncio.sleep(0.05)
    raise DemoError(f"no active silence of {alertname} appeared in Alertmanager")


async def silence_expired(stage: Stage, run: dict[str, Any], active: dict[str, Any]) -> str:
    """Checks that the run's silence is the one seen active, and that Alertmanager shows it
    expired now that the run has ended; says so and returns the verdict's words."""
    recorded = run["status"].get("silence") or {}
    if recorded.get("id") != active["id"] or recorded.get("state") != "Expired":
        raise DemoError(f"the run's status.silence is {recorded}, not {active['id']} Expired")
    now = {s["id"]: s for s in await stage.world.silences()}.get(active["id"]) or {}
    state = (now.get("status") or {}).get("state")
    if state != "expired":
        raise DemoError(f"silence {active['id']} is {state} in Alertmanager after the run")
    stage.say(
        "silence",
        f"Alertmanager: silence {active['id']} expired (endsAt {now['endsAt']}) as "
        f"{run['metadata']['name']} ended {run['status']['phase']}; status.silence: Expired",
    )
    return (
        f"its alert was silenced in Alertmanager while the run worked (silence "
        f"{active['id']}) and the silence expired as the run ended"
    )


async def kyverno_policy_block(stage: Stage) -> Verdict:
    world = stage.world
    before = world.kyverno_versions()
    world.blocked_apps.add("dese-api")
    await world.drift("dese-api")
    stage.say(
        "fault",
        "Git asks for dese-api 6.9.0, whose image is not signed and whose pods run as root: "
        f"Kyverno's ClusterPolicy {SIGNED_IMAGES} (Enforce) and its CEL ValidatingPolicy "
        f"{NON_ROOT} (Deny) deny it, and Argo CD shows dese-api OutOfSync",
    )
    page = Expect("notify-oncall", "Succeeded")
    drift = Expect(
        "argocd-sync-drift", "Failed", escalation=Expect("argocd-sync-stuck", "Failed", page)
    )
    blocked, cel_blocked, _ = await stage.fire(
        *(
            Alert(
                "McpKyvernoAdmissionBlocked",
                {"namespace": NAMESPACE, "policy": policy, "severity": "warning"},
                f"Kyverno policy {policy} blocks deploys in {NAMESPACE}",
                Expect("kyverno-policy-block", "Succeeded"),
            )
            for policy in (SIGNED_IMAGES, NON_ROOT)
        ),
        Alert(
            "McpArgoCdAppOutOfSync",
            {"namespace": NAMESPACE, "application": "dese-api", "severity": "warning"},
            "Argo CD application dese-api is OutOfSync",
            drift,
        ),
    )
    # Each run names its policy, its kind and enforcement, and its file in Git; the
    # ClusterPolicy with its deprecation, the ValidatingPolicy with its Deny.
    expected = {
        SIGNED_IMAGES: ("ClusterPolicy", "Enforce", SIGNED_IMAGES_GIT),
        NON_ROOT: ("ValidatingPolicy", "Deny", NON_ROOT_GIT),
    }
    for run, policy in ((blocked, SIGNED_IMAGES), (cel_blocked, NON_ROOT)):
        evidence = step(run, "evidence")["outputs"]
        named = tuple(evidence.get(key) for key in ("blockingKind", "blockingMode", "gitopsPath"))
        if evidence.get("blockingPolicy") != policy or named != expected[policy]:
            raise DemoError(f"the evidence on {policy} named no blocking policy and Git path: "
                            f"{evidence}")  # fmt: skip
    deprecation = step(blocked, "evidence")["outputs"].get("deprecation", "")
    if "deprecated since Kyverno 1.17" not in deprecation:
        raise DemoError(f"the evidence on ClusterPolicy {SIGNED_IMAGES} named no deprecation")
    stage.say(
        "manual",
        "an engineer in a hurry applies McpRemediation relax-signed-images: patchResource of "
        f"ClusterPolicy {SIGNED_IMAGES} to validationFailureAction: Audit",
    )
    override = {
        "apiVersion": API_VERSION,
        "kind": "McpRemediation",
        "metadata": {"name": "relax-signed-images", "namespace": NAMESPACE},
        "spec": {
            "steps": [
                {
                    "name": "relax-policy",
                    "action": "patchResource",
                    "params": {
                        "apiVersion": "kyverno.io/v1",
                        "kind": "ClusterPolicy",
                        "name": SIGNED_IMAGES,
                        "mergePatch": {"spec": {"validationFailureAction": "Audit"}},
                    },
                }
            ]
        },
    }
    refused = await stage.apply(
        override, Expect("", "Refused", reasons=frozenset({"ManualKyvernoOverrideRefused"}))
    )
    if world.kyverno_versions() != before:
        raise DemoError("a Kyverno object was written")
    failed_syncs = [app for app, outcome in world.syncs if outcome == "Failed"]
    pages = [n for n in world.notifications if n.startswith("[McpArgoCdAppOutOfSync]")]
    if not any("#ops-mcp" in page and "failed" in page for page in pages):
        raise DemoError(f"on-call was not paged about dese-api's sync: {pages}")
    return Verdict(
        "refused as documented",
        f"the evidence named ClusterPolicy {SIGNED_IMAGES} ({SIGNED_IMAGES_GIT}; {deprecation}) "
        f"and ValidatingPolicy {NON_ROOT} (Deny, {NON_ROOT_GIT}); dese-api's sync failed "
        f"{len(failed_syncs)} times and on-call was paged; the manual override was refused "
        f"({refused['status']['message']}); no Kyverno object was written",
    )


async def argocd_sync_drift(stage: Stage) -> Verdict:
    world = stage.world
    await world.drift("dese-frontend")
    stage.say("fault", "dese-frontend was changed by hand: Argo CD shows it OutOfSync with Git")
    await stage.confirm(
        'argocd_app_info{name="dese-frontend", sync_status="OutOfSync"}',
        "Argo CD's argocd_app_info reports dese-frontend OutOfSync",
    )
    await stage.fire(
        Alert(
            "McpArgoCdAppOutOfSync",
            {"namespace": NAMESPACE, "application": "dese-frontend", "severity": "warning"},
            "Argo CD application dese-frontend is OutOfSync",
            Expect("argocd-sync-drift", "Succeeded"),
        )
    )
    sync, health = world.app_status("dese-frontend")
    if (sync, health) != ("Synced", "Healthy"):
        raise DemoError(f"dese-frontend is {sync} and {health}")
    return Verdict(
        "verified", "dese-frontend is Synced and Healthy again, and argocd_app_info agrees"
    )


async def redis_high_memory(stage: Stage) -> Verdict:
    world = stage.world
    written = await world.fill_memory(0.93)
    stage.say(
        "fault",
        f"a report export wrote {written:,} keys of 3.6 KiB without a TTL under "
        f"mcp:dashboard:export: (Redis at {await world.memory_ratio():.0%} of maxmemory)",
    )
    assert world.exporter is not None
    await stage.confirm(f"{MEMORY_RATIO} > 0.9", "Redis memory above 90 % of maxmemory")
    watch = asyncio.create_task(watch_silence(stage, "RedisHighMemoryUsage"))
    try:
        [run] = await stage.fire(
            Alert(
                "RedisHighMemoryUsage",
                {
                    "namespace": NAMESPACE,
                    "instance": world.exporter.address,
                    "job": "redis",
                    "severity": "critical",
                },  # fmt: skip
                "Redis memory usage above 90 % of maxmemory",
                Expect("redis-high-memory", "Succeeded"),
            )
        )
        active = await asyncio.wait_for(watch, 1)
    finally:
        watch.cancel()
    silenced = await silence_expired(stage, run, active)
    ratio = await world.memory_ratio()
    intact = await world.outside_intact()
    if await world.count("mcp:dashboard:export:*"):
        raise DemoError("export keys are still there")
    return Verdict("verified", f"memory back to {ratio:.0%} of maxmemory; {silenced}; {intact}")


async def redis_low_cache_hit_ratio(stage: Stage) -> Verdict:
    world = stage.world
    world.faults.cache_cold = True
    stage.say("fault", "a dese-api release builds its cache keys wrongly: every lookup misses")
    await stage.confirm(f"{HIT_RATIO} < 0.8", "cache hit ratio below 80 %")
    labels = {"namespace": NAMESPACE, "severity": "warning"}
    await stage.fire(
        Alert(
            "RedisLowCacheHitRatio",
            labels,
            "Redis cache hit ratio below 80 %",
            Expect("redis-low-cache-hit-ratio", "Succeeded"),
        )
    )
    stage.say("alias", "the same condition also arrives under the guide's other name")
    await stage.fire(
        Alert(
            "RedisCacheHitRateLow",
            labels,
            "Redis cache hit ratio below 80 %",
            Expect("redis-low-cache-hit-ratio", "Skipped", reasons=frozenset({"Cooldown"})),
        )
    )
    ratio = await value_of(world, HIT_RATIO)
    intact = await world.outside_intact()
    return Verdict(
        "verified",
        f"hit ratio back to {ratio:.0%}; the alias alert was skipped by the cooldown; {intact}",
    )


async def promise_rejections(stage: Stage) -> Verdict:
    world = stage.world
    world.faults.failing_modules.add("mubot")
    stage.say(
        "fault",
        "mubot's database times out: /mcp/mubot/health answers 503 and half of the "
        "dashboard's mubot calls are rejected",
    )
    await stage.confirm(f"{rejections('mubot')} > 0.1", "mubot rejects over 10 % of requests")
    [run] = await stage.fire(
        Alert(
            "McpPromiseRejectionRateHigh",
            {"namespace": NAMESPACE, "module": "mubot", "severity": "warning"},
            "Dashboard data source mubot rejects over 10 % of requests",
            Expect("promise-rejections", "Succeeded"),
        )
    )
    found = step(run, "find")["outputs"].get("labels.module")
    if found != "mubot" or "mubot" not in [name for name, _ in world.restarts]:
        raise DemoError(f"the failing module found was {found}; restarted: {world.restarts}")
    ratio = await value_of(world, rejections("mubot"))
    intact = await world.outside_intact()
    return Verdict(
        "verified",
        f"Prometheus named mubot, mubot was restarted, its rejections are down to {ratio:.0%}; "
        f"{intact}",
    )


async def prometheus_timeout(stage: Stage) -> Verdict:
    world = stage.world
    world.faults.prometheus_timeout = True
    stage.say(
        "fault",
        "Prometheus answers the dashboard's queries slower than MCP_PROMETHEUS_TIMEOUT_MS=3000: "
        '"Failed to fetch MCP dashboard data", seen as observability rejections',
    )
    await stage.confirm(
        f"{rejections('observability')} > 0.1", "observability rejects over 10 % of requests"
    )
    await stage.fire(
        Alert(
            "McpPromiseRejectionRateHigh",
            {"namespace": NAMESPACE, "module": "observability", "severity": "warning"},
            "Dashboard data source observability rejects over 10 % of requests",
            Expect("prometheus-timeout", "Succeeded", approve=True),
        )
    )
    config = world.api.get("v1", "configmaps", NAMESPACE, CONFIG_MAP) or {}
    timeout = (config.get("data") or {}).get("MCP_PROMETHEUS_TIMEOUT_MS")
    if timeout != "8000":
        raise DemoError(f"MCP_PROMETHEUS_TIMEOUT_MS is {timeout}")
    ratio = await value_of(world, rejections("observability"))
    return Verdict(
        "verified",
        f"after approval MCP_PROMETHEUS_TIMEOUT_MS went from 3000 to {timeout} in ConfigMap "
        f"{NAMESPACE}/{CONFIG_MAP} and dese-api was restarted; observability rejections are "
        f"down to {ratio:.0%}",
    )


def staging_rejections() -> str:
    settled = "mcp_dashboard_promises_settled_total"
    return (
        f'sum(rate({settled}{{namespace="{STAGING}", module="observability", '
        f'status="rejected"}}[5s])) / '
        f'sum(rate({settled}{{namespace="{STAGING}", module="observability"}}[5s]))'
    )


async def prometheus_timeout_reverted(stage: Stage) -> Verdict:
    world = stage.world
    api = world.api
    before = copy.deepcopy((api.get("v1", "configmaps", STAGING, CONFIG_MAP) or {}).get("data"))
    world.faults.staging_prometheus_overloaded = True
    stage.say(
        "fault",
        f"{STAGING}'s Prometheus is overloaded: its queries take longer than any timeout, so "
        "staging's observability calls are rejected; raising MCP_PROMETHEUS_TIMEOUT_MS "
        "cannot help",
    )
    await stage.confirm(
        f"{staging_rejections()} > 0.1", f"{STAGING}'s observability rejects over 10 %"
    )
    [run] = await stage.fire(
        Alert(
            "McpPromiseRejectionRateHigh",
            {"namespace": STAGING, "module": "observability", "severity": "warning"},
            "Dashboard data source observability rejects over 10 % of requests",
            Expect(
                "prometheus-timeout",
                "Failed",
                escalation=Expect("notify-oncall", "Succeeded"),
                approve=True,
            ),
        )
    )
    steps = {item["name"]: item for item in run["status"]["steps"]}
    if steps["verify"]["phase"] != "Failed":
        raise DemoError(f"the verification did not fail: {steps['verify']}")
    revert = steps["timeout"].get("revert") or {}
    if revert.get("phase") != "Reverted":
        raise DemoError(f"the timeout change was not reverted: {revert}")
    stage.say("revert", f"timeout [patchResource] {revert['phase']}: {revert.get('message', '')}")
    reverted = [c for c in run["status"].get("conditions") or [] if c.get("type") == "Reverted"]
    if not reverted or reverted[0].get("status") != "True":
        raise DemoError(f"the run has no Reverted condition True: {reverted}")
    stage.say(
        "revert",
        f"condition Reverted=True ({reverted[0].get('reason', '')}): "
        f"{reverted[0].get('message', '')}",
    )
    after = (api.get("v1", "configmaps", STAGING, CONFIG_MAP) or {}).get("data")
    if after != before:
        raise DemoError(f"{STAGING}/{CONFIG_MAP} is {after}, was {before}")
    timeout = (after or {}).get("MCP_PROMETHEUS_TIMEOUT_MS")
    return Verdict(
        "reverted as documented",
        f"after approval MCP_PROMETHEUS_TIMEOUT_MS went to 8000 and {STAGING}/dese-api was "
        "restarted, but the rejections stayed: the verification failed, the run ended Failed "
        f"with Reverted=True, ConfigMap {STAGING}/{CONFIG_MAP} is back exactly as before "
        f"(MCP_PROMETHEUS_TIMEOUT_MS={timeout}), and on-call was notified",
    )


async def api_auth_errors(stage: Stage) -> Verdict:
    world = stage.world
    await world.set_stale_authz()
    stage.say(
        "fault",
        f"a stale role snapshot in the dashboard cache ({STALE_AUTHZ_KEY}) makes dese-api "
        "answer 401/403",
    )
    await stage.confirm(f"{AUTH_RATIO} > 0.05", "dese-api answers 401/403 to over 5 %")
    await stage.fire(
        Alert(
            "McpApiAuthErrors",
            {"namespace": NAMESPACE, "service": "dese-api", "severity": "warning"},
            "MCP API dese-api answers 401/403 to over 5 % of requests",
            Expect("api-auth-errors", "Succeeded"),
        )
    )
    ratio = await value_of(world, AUTH_RATIO)
    intact = await world.outside_intact()
    return Verdict("verified", f"401/403 down to {ratio:.1%} of requests; {intact}")


async def websocket_no_connections(stage: Stage) -> Verdict:
    world = stage.world
    world.faults.websocket_down = True
    stage.say("fault", "websocket-server's event loop is wedged: no client can connect")
    connections = 'sum(mcp_websocket_active_connections{pod=~"websocket-server-.+"})'
    await stage.confirm(f"{connections} == 0", "no active WebSocket connection")
    await stage.fire(
        Alert(
            "McpWebSocketNoConnections",
            {"namespace": NAMESPACE, "deployment": "websocket-server", "severity": "critical"},
            "No active WebSocket connections for 15 minutes",
            Expect("websocket-no-connections", "Succeeded"),
        )
    )
    count = await value_of(world, connections)
    return Verdict("verified", f"websocket-server restarted; {count:.0f} clients connected again")


async def websocket_events_not_published(stage: Stage) -> Verdict:
    world = stage.world
    world.faults.stalled_modules.add("finbot")
    stage.say("fault", "finbot's ingestion worker died: finbot publishes no WebSocket events")
    published = 'sum(rate(mcp_websocket_events_published_total{module="finbot"}[5s]))'
    await stage.confirm(f"{published} == 0", "finbot's event counter stopped growing")
    await stage.fire(
        Alert(
            "McpWebSocketEventsNotPublished",
            {"namespace": NAMESPACE, "module": "finbot", "severity": "warning"},
            "Module finbot publishes no WebSocket events",
            Expect("websocket-events-not-published", "Succeeded"),
        )
    )
    events = [body for module, body in world.test_events if module == "finbot"]
    if not events:
        raise DemoError("no test event reached finbot")
    rate = await value_of(world, published)
    return Verdict(
        "verified",
        f"finbot restarted, its test event was accepted, events flow again at {rate:.1f}/s",
    )


async def redis_down(stage: Stage) -> Verdict:
    world = stage.world
    pid = world.crash_redis()
    world.set_pods("redis", pod_status(False, "CrashLoopBackOff", restarts=4))
    stage.say("fault", f"redis-server (pid {pid}) crashed (SIGKILL); its pod: CrashLoopBackOff")
    assert world.exporter is not None
    await stage.confirm("max(redis_up) == 0", "the exporter reports redis_up 0")
    await stage.fire(
        Alert(
            "RedisDown",
            {
                "namespace": NAMESPACE,
                "instance": world.exporter.address,
                "job": "redis",
                "severity": "critical",
            },  # fmt: skip
            "Redis is down",
            Expect("redis-down", "Succeeded"),
        )
    )
    if len(world.redis_pids) < 2:
        raise DemoError("redis-server was not started again")
    tenant_runs = [
        run
        for run in world.api.list_objects(API_VERSION, REMEDIATIONS, TENANT)
        if (run["spec"].get("runbookRef") or {}).get("name") == TENANT_RUNBOOK
    ]
    if tenant_runs:
        raise DemoError(f"{TENANT}'s runbook took the platform's alert: {tenant_runs[0]}")
    return Verdict(
        "verified",
        f"the Deployment restart started redis-server again (pid {pid} -> "
        f"{world.redis_pids[-1]}); it answers PING and redis_up is 1; {TENANT}'s own "
        f"RedisDown runbook took nothing (the alert is labelled namespace={NAMESPACE})",
    )


async def tenant_isolation(stage: Stage) -> Verdict:
    world = stage.world
    api = world.api

    def versions() -> tuple[str, str]:
        config = api.get("v1", "configmaps", NAMESPACE, CONFIG_MAP)
        dese_api = api.get("apps/v1", "deployments", NAMESPACE, "dese-api")
        if config is None or dese_api is None:
            raise DemoError(f"the world lacks {CONFIG_MAP} or dese-api")
        restarted = dese_api["spec"]["template"]["metadata"].get("annotations", {})
        return config["metadata"]["resourceVersion"], str(restarted.get(RESTARTED_AT))

    # Not Argo CD's RBAC (argocd/argocd-rbac-cm) any more: the refusal layer refuses Argo
    # CD's own configuration to every account before RBAC is asked; this shows RBAC.
    before = versions()
    stage.say(
        "manual",
        f"a {TENANT} editor (`edit` in {TENANT} only, which includes McpRemediations) applies "
        f"McpRemediation {TENANT}/take-over: patch the platform's {NAMESPACE}/{CONFIG_MAP} "
        f"(no Prometheus timeout, no cache), then restart {NAMESPACE}/dese-api; its steps "
        f"act as {TENANT}/{TENANT_RUNNER}",
    )
    sabotage = {"data": {"MCP_PROMETHEUS_TIMEOUT_MS": "1", "MCP_CACHE_TTL_SECONDS": "0"}}
    take_over = {
        "apiVersion": API_VERSION,
        "kind": "McpRemediation",
        "metadata": {"name": "take-over", "namespace": TENANT},
        "spec": {
            "steps": [
                {"name": "platform-config", "action": "patchResource", "continueOnFailure": True,
                 "params": {"namespace": NAMESPACE, "name": CONFIG_MAP,
                            "mergePatch": sabotage}},
                {"name": "restart-platform", "action": "rolloutRestart",
                 "params": {"namespace": NAMESPACE, "name": "dese-api"}},
            ]
        },
    }  # fmt: skip
    run = await stage.apply(take_over, Expect("", "Failed", reasons=frozenset({"Forbidden"})))
    reasons = [s.get("reason") for s in run["status"]["steps"]]
    if reasons != ["Forbidden", "Forbidden"]:
        raise DemoError(f"expected both steps Forbidden, got {reasons}")
    if versions() != before:
        raise DemoError("a tenant's step wrote outside its namespace")
    return Verdict(
        "refused as documented",
        f"both steps failed Forbidden, as {TENANT}/{TENANT_RUNNER}: Kubernetes RBAC, not the "
        f"operator's rights, decided; {NAMESPACE}/{CONFIG_MAP} and {NAMESPACE}/dese-api were "
        "not written",
    )


async def agent_proposal(stage: Stage) -> Verdict:
    world = stage.world
    module = "aiops"
    world.faults.stalled_modules.add(module)
    stage.say(
        "fault",
        f"{module}'s (Jarvis AIOps) ingestion worker is stuck: it publishes no WebSocket "
        "events; its alert waits out its 15 minutes, and an AI ops agent triaging the "
        "dashboards sees it first",
    )
    published = f'sum(rate(mcp_websocket_events_published_total{{module="{module}"}}[5s]))'
    value = await stage.confirm(f"{published} == 0", f"{module}'s event counter stopped growing")
    labels = {"alertname": "McpWebSocketEventsNotPublished", "namespace": NAMESPACE,
              "module": module, "severity": "warning"}  # fmt: skip

    def records() -> list[str]:
        """The runs of the runbook the agent will look at (other lanes run other ones)."""
        return sorted(
            r["metadata"]["name"]
            for r in world.api.list_objects(API_VERSION, REMEDIATIONS, NAMESPACE)
            if (r["spec"].get("runbookRef") or {}).get("name") == "websocket-events-not-published"
        )

    before = records()
    stage.claim("websocket-events-not-published-proposal-")
    log = world.directory / "mcp-server.log"
    async with agent_session(world.agent_kubeconfig(), log) as agent:
        tools = await agent.tools()
        stage.say(
            "agent",
            f"{CLIENT_NAME} starts `mcp-remediator mcp-server` over stdio as ServiceAccount "
            f"{NAMESPACE}/{AGENT} (read runbooks, create remediations; no patch): tools "
            f"{', '.join(tools)}",
        )
        listed = (await agent.call("list_runbooks", {"namespace": NAMESPACE}))["runbooks"]
        chosen = [rb for rb in listed if any(
            t.get("alertname") == labels["alertname"] for t in rb.get("triggers") or []
        )]  # fmt: skip
        stage.say(
            "agent",
            f"list_runbooks -> {len(listed)} runbooks; for its finding: "
            f"{', '.join(rb['name'] for rb in chosen) or 'none'}",
        )
        simulation = await agent.call("simulate_alert", {"labels": labels})
        [would] = simulation["remediations"]
        steps = ", ".join(f"{s['name']}[{s['action']}]" for s in would["steps"])
        restart = next(s for s in would["steps"] if s["action"] == "rolloutRestart")
        stage.say(
            "agent",
            f"simulate_alert{_labels(labels)} -> runbook {would['runbook']}: {steps}; "
            f"restart of {restart['params'].get('name')}; guardrails "
            f"{would['guardrails']['decision']}; {simulation['note']}",
        )
        if records() != before:
            raise DemoError("simulate_alert wrote a remediation")
        reason = (
            f"{published} has been {value:g} since the stall; runbook {would['runbook']} "
            f"restarts {module}'s ingestion and checks the counter grows again"
        )
        proposal = await agent.call(
            "propose_remediation",
            {"runbook": would["runbook"], "namespace": NAMESPACE, "labels": labels,
             "reason": reason},
        )  # fmt: skip
        name = proposal["name"]
        stage.say(
            "agent",
            f"propose_remediation -> {name}: {proposal['phase']}; a human approves with: "
            f"{proposal['approveWith']}",
        )
    run = world.api.get(API_VERSION, REMEDIATIONS, NAMESPACE, name) or {}
    annotations = run.get("metadata", {}).get("annotations") or {}
    by = annotations.get(ANNOTATION_PROPOSED_BY, "")
    if not by.startswith(CLIENT_NAME) or annotations.get(ANNOTATION_PROPOSAL_REASON) != reason:
        raise DemoError(f"the proposal does not carry its proposer and reason: {annotations}")
    # The proposal is held: nothing runs until a person approves, whatever the runbook says.
    await asyncio.sleep(1.0)
    run = world.api.get(API_VERSION, REMEDIATIONS, NAMESPACE, name) or {}
    status = run.get("status") or {}
    started = [s["name"] for s in status.get("steps") or [] if s.get("phase") != "Pending"]
    if status.get("phase") != "AwaitingApproval" or started or module in dict(world.restarts):
        raise DemoError(f"the proposal did not wait for approval: {status}")
    stage.say(
        "review",
        f'{name} is held AwaitingApproval, no step run; proposed-by "{by}", reason: "{reason}"',
    )
    run = await stage.follow(name, Expect(would["runbook"], "Succeeded", approve=True))
    if module not in dict(world.restarts):
        raise DemoError(f"{module} was not restarted: {world.restarts}")
    rate = await value_of(world, published)
    return Verdict(
        "verified",
        f"the agent listed, simulated (writing nothing) and proposed; the run waited for a "
        f"human, who approved it; {module} was restarted and publishes events again at "
        f"{rate:.1f}/s; the record names its proposer ({by}) and reason",
    )


def _labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


INCIDENTS = [
    Incident("kyverno-policy-block", "Kyverno policy block", 1, kyverno_policy_block),
    Incident("redis-high-memory", "RedisHighMemoryUsage", 1, redis_high_memory),
    Incident("redis-low-cache-hit-ratio", "RedisLowCacheHitRatio", 1, redis_low_cache_hit_ratio),
    Incident("promise-rejections", "Promise rejection analysis", 1, promise_rejections),
    Incident("prometheus-timeout", "Prometheus timeout", 1, prometheus_timeout),
    Incident("api-auth-errors", "API 401/403", 1, api_auth_errors),
    Incident("redis-down", "RedisDown", 1, redis_down),
    Incident("argocd-sync-drift", "Argo CD sync drift", 2, argocd_sync_drift),
    Incident("websocket-no-connections", "WebSocket connections", 2, websocket_no_connections),
    Incident(
        "websocket-events-not-published",
        "WebSocket event publishing",
        2,
        websocket_events_not_published,
    ),
    Incident("tenant-isolation", "A tenant reaches beyond its namespace", 2, tenant_isolation),
    Incident(
        "prometheus-timeout-reverted",
        "Prometheus timeout that the timeout does not fix",
        3,
        prometheus_timeout_reverted,
    ),
    Incident(
        "agent-proposal",
        "An AI ops agent proposes over MCP; a human approves",
        2,
        agent_proposal,
    ),
]
