"""The MCP layer the demo remediates: an emulated cluster, real Redis and Prometheus, and
in-process stand-ins for the services around them.

``World`` starts and holds:

* the emulated Kubernetes API (``emulator.ApiServerEmulator``) with the MCP layer's
  Deployments (carrying Argo CD's tracking label) and their pods (labelled
  ``app=<name>``), the Argo CD Applications, Kyverno 1.17's policies (ClusterPolicies and
  a CEL ValidatingPolicy) with an openreports.io Report on ``dese-api`` whose new version
  both fail, and the API's ConfigMap; ``mcp-staging`` with its own dese-api and ConfigMap,
  where the runner of ``mcp`` may patch that ConfigMap and restart dese-api; reactors
  stand in for the controllers: rollouts complete at once, Argo CD's controller runs sync
  operations (failing those Kyverno blocks), and a restarted Deployment "restarts" what it
  runs: the fault that lived in it goes away, and restarting ``redis`` starts the real
  redis-server again;
* a real ``redis-server`` with a realistic cache (``mcp:dashboard:*`` and other ``mcp:``
  keys, and keys outside the prefix that must survive every remediation), the dashboard
  API's traffic against it, and ``prometheus-redis-exporter`` on it;
* one local HTTP server standing in for the modules (``/mcp/<module>/health``,
  ``/mcp/<module>/events/test``), for the on-call webhook (``/hooks/ops-mcp``) and for
  the MCP services' metrics (``/metrics``: Promise.allSettled outcomes, WebSocket events
  and connections, API status codes, Argo CD's ``argocd_app_info``), whose values follow
  the faults and the fixes;
* a real Prometheus scraping the exporter, those metrics and itself every second;
* a real Alertmanager (API v2), in which the operator silences the alerts of the runs of
  runbooks with ``guardrails.silence`` while they work.

``Faults`` is the state the incidents break and the operator's actions repair. Used by
``demo.director`` and ``demo.incidents``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import kmock
import redis.asyncio
import redis.exceptions
import yaml
from aiohttp import web
from pydantic import SecretStr

from mcp_remediator.models import API_VERSION
from mcp_remediator.settings import Settings
from mcp_remediator.testing.daemons import (
    Daemon,
    DemoError,
    Supervisor,
    free_port,
    redis_ready,
    start_alertmanager,
    start_prometheus,
    start_redis,
    start_redis_exporter,
)
from mcp_remediator.testing.emulator import (
    ApiServerEmulator,
    complete_rollouts,
    write_kubeconfig,
)
from mcp_remediator.testing.tls import make_certificate, tls_server
from mcp_remediator.tools import crdgen

NAMESPACE = "mcp"
# The MCP layer's staging copy: its own dese-api and dese-api-config, which the catalogue's
# runner of ``mcp`` may act on (a Role and RoleBinding there, as in ``tenant``'s recipe).
STAGING = "mcp-staging"
# The operator's and the runner's RBAC as shipped (copied by `make generate`).
RBAC_DIR = Path(__file__).parent / "rbac"
OPERATOR_ACCOUNT = ("mcp-remediator", "mcp-remediator")
ARGOCD_NAMESPACE = "argocd"
# A team with `edit` rights in its own namespace only; its runner may act there, nowhere else.
TENANT = "team-a"
TENANT_RUNNER = "mcp-remediator-runner"
ARGOCD_RBAC = "argocd-rbac-cm"
TENANT_RUNBOOK = "team-a-redis-down"
# The AI ops agent's ServiceAccount: what `mcp-remediator mcp-server` acts as for it.
AGENT = "triage-agent"
KYVERNO_NAMESPACE = "kyverno"
MODULES = ("finbot", "mubot", "aiops", "observability")
EVENT_TYPES = {"finbot": "portfolio", "mubot": "ledger", "aiops": "incidents",
               "observability": "metrics"}  # fmt: skip
PUBLISHERS = ("finbot", "mubot", "aiops")
# Deployment: (replicas, the Argo CD application that tracks it)
WORKLOADS = {
    "dese-api": (2, "dese-api"),
    "dese-frontend": (2, "dese-frontend"),
    "finbot": (2, "dese-finbot"),
    "mubot": (2, "dese-mubot"),
    "aiops": (1, "observability"),
    "websocket-server": (2, "mcp-platform"),
    "redis": (1, "mcp-platform"),
}
APPLICATIONS = ("dese-api", "dese-frontend", "dese-finbot", "dese-mubot", "observability")
SYNCED_REVISION = "2b7e0c4d9a1f3e5c7b9d1f3a5c7e9b1d3f5a7c9e"
NEW_REVISION = "9c1f0e2b7d4a6c8e0f1a3b5d7c9e1f2a4b6c8d0e"
CONFIG_MAP = "dese-api-config"
SIGNED_IMAGES = "require-signed-images"
SIGNED_IMAGES_GIT = "platform-gitops/policies/kyverno/require-signed-images.yaml"
GITOPS_POLICY_PATH = "the platform-gitops repository (policies/kyverno/)"
# A CEL ValidatingPolicy (Kyverno 1.17+) that denies dese-api 6.9.0 too: its pods run as root.
NON_ROOT = "require-run-as-non-root"
NON_ROOT_GIT = "platform-gitops/policies/kyverno/require-run-as-non-root.yaml"
NON_ROOT_MESSAGE = "pods must run as non-root (securityContext.runAsNonRoot: true)"
SIGNED_IMAGES_MESSAGE = "image registry.dese.ai/dese-api:6.9.0 is not signed by the release key"
KYVERNO_DENIAL = (
    'one or more objects failed to apply, reason: admission webhook "validate.kyverno.svc-fail" '
    f"denied the request: policy {SIGNED_IMAGES}/check-signature: {SIGNED_IMAGES_MESSAGE}; "
    f"policy {NON_ROOT}: {NON_ROOT_MESSAGE}"
)
STALE_AUTHZ_KEY = "mcp:dashboard:authz:role-snapshot"
REDIS_MAXMEMORY = 32 * 1024 * 1024
WIDGETS = 200
# Keys outside the allowed prefix, by pattern; no remediation may touch them.
OUTSIDE_PREFIX = ("session:*", "bull:mcp-ingest:*", "rbac:roles:*")
WEBHOOK_PATH = "/hooks/ops-mcp"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hash(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def pod_names(deployment: str, replicas: int) -> list[str]:
    """Pod names as a ReplicaSet gives them: ``<deployment>-<template hash>-<suffix>``."""
    template = _hash(deployment, 9)
    return [f"{deployment}-{template}-{_hash(f'{template}/{i}', 5)}" for i in range(replicas)]


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def deployment(name: str, replicas: int, instance: str) -> dict[str, Any]:
    labels = {"app": name, "app.kubernetes.io/instance": instance,
              "app.kubernetes.io/part-of": "mcp"}  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": f"registry.dese.ai/{name}:6.8.1"}]},
            },
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        },
    }


def pod_status(ready: bool, waiting: str | None = None, restarts: int = 0) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {"startedAt": _now()}}
    if waiting:
        state = {"waiting": {"reason": waiting, "message": "back-off restarting failed container"}}
    return {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [
            {"name": "main", "ready": ready, "restartCount": restarts, "state": state}
        ],
    }


def pod(name: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": f"registry.dese.ai/{app}:6.8.1"}]},
        "status": pod_status(True),
    }


def application(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": ARGOCD_NAMESPACE},
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://git.dese.ai/platform/mcp-deploy.git",
                "path": f"apps/{name}",
                "targetRevision": "main",
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": NAMESPACE},
        },
        "status": {
            "sync": {"status": "Synced", "revision": SYNCED_REVISION},
            "health": {"status": "Healthy"},
        },
    }


def app_project() -> dict[str, Any]:
    """The Applications' AppProject: a weekend freeze of automated syncs only (a manual
    sync, as the operator's, may run, so the demo works on any day)."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "default", "namespace": ARGOCD_NAMESPACE},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"server": "*", "namespace": "*"}],
            "syncWindows": [
                {
                    "kind": "deny",
                    "schedule": "0 0 * * 6",
                    "duration": "48h",
                    "applications": ["*"],
                    "manualSync": True,
                    "description": "weekend freeze of automated syncs",
                }
            ],
        },
    }


def cluster_policy(name: str, action: str, rule: str, gitops_path: str) -> dict[str, Any]:
    return {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": name, "annotations": {"mcp.dese.ai/gitops-path": gitops_path}},
        "spec": {
            "validationFailureAction": action,
            "background": True,
            "rules": [{"name": rule, "validate": {"message": f"{name}/{rule}"}}],
        },
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded"}]},
    }


def validating_policy(name: str, actions: list[str], gitops_path: str) -> dict[str, Any]:
    """A CEL ValidatingPolicy (``policies.kyverno.io/v1``), with the status Kyverno writes."""
    conditions = [
        {"type": kind, "status": "True", "reason": "Succeeded", "message": message}
        for kind, message in (
            ("WebhookConfigured", "Webhook configured."),
            ("RBACPermissionsGranted", "Policy is ready for reporting."),
        )
    ]
    rule = {"apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"],
            "operations": ["CREATE", "UPDATE"]}  # fmt: skip
    expression = "object.spec.template.spec.?securityContext.?runAsNonRoot.orValue(false)"
    return {
        "apiVersion": "policies.kyverno.io/v1",
        "kind": "ValidatingPolicy",
        "metadata": {"name": name, "annotations": {"mcp.dese.ai/gitops-path": gitops_path}},
        "spec": {
            "validationActions": actions,
            "matchConstraints": {"resourceRules": [rule]},
            "validations": [{"expression": expression, "message": NON_ROOT_MESSAGE}],
        },
        "status": {"conditionStatus": {"ready": True, "conditions": conditions, "message": ""}},
    }


def policy_report(target: dict[str, Any]) -> dict[str, Any]:
    """Kyverno's report on the Deployment ``target``, as Kyverno 1.17 run with
    ``--openreportsEnabled`` writes it: an openreports.io Report named after the resource's
    uid, the resource in ``scope``; a CEL policy's result names no rule."""
    meta = target["metadata"]
    scope = {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
             "namespace": meta["namespace"], "uid": meta["uid"]}  # fmt: skip
    results = [
        {
            "policy": SIGNED_IMAGES,
            "rule": "check-signature",
            "result": "fail",
            "message": SIGNED_IMAGES_MESSAGE,
            "source": "kyverno",
            "scored": True,
        },
        {
            "policy": "require-requests-limits",
            "rule": "check-resources",
            "result": "pass",
            "message": "validation rule 'check-resources' passed.",
            "source": "kyverno",
            "scored": True,
        },
        {
            "policy": NON_ROOT,
            "result": "fail",
            "message": NON_ROOT_MESSAGE,
            "source": "KyvernoValidatingPolicy",
            "scored": True,
            "properties": {"process": "admission review"},
        },
    ]
    return {
        "apiVersion": "openreports.io/v1alpha1",
        "kind": "Report",
        "metadata": {"name": meta["uid"], "namespace": meta["namespace"]},
        "source": "kyverno",
        "scope": scope,
        "results": results,
        "summary": {"pass": 1, "fail": 2, "warn": 0, "error": 0, "skip": 0},
    }


def argocd_rbac() -> dict[str, Any]:
    """Argo CD's RBAC: who may do what in Argo CD (a tenant must never reach it)."""
    meta = {"name": ARGOCD_RBAC, "namespace": ARGOCD_NAMESPACE}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {"policy.default": "role:readonly"}}  # fmt: skip


def account(namespace: str, name: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A ServiceAccount with a Role of ``rules`` in its own namespace, bound to it."""
    rbac = "rbac.authorization.k8s.io/v1"
    meta = {"name": name, "namespace": namespace}
    subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": rbac, "kind": "Role", "metadata": meta, "rules": rules},
        {"apiVersion": rbac, "kind": "RoleBinding", "metadata": meta, "subjects": [subject],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}},
    ]  # fmt: skip


def tenant() -> list[dict[str, Any]]:
    """team-a: its namespace, its runner account with the rights of its own namespace (as the
    README's recipe grants them), and a runbook of its own on the platform's RedisDown alert,
    which must only ever match alerts labelled with team-a."""
    rules = [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch"]},
    ]
    restart = {"name": "restart", "action": "rolloutRestart", "params": {"name": "redis"}}
    return [
        namespace(TENANT),
        *account(TENANT, TENANT_RUNNER, rules),
        {"apiVersion": API_VERSION, "kind": "McpRunbook",
         "metadata": {"name": TENANT_RUNBOOK, "namespace": TENANT},
         "spec": {"triggers": [{"alertname": "RedisDown"}], "steps": [restart]}},
    ]  # fmt: skip


def agent() -> list[dict[str, Any]]:
    """The AI ops agent's identity in ``mcp``: it may read the runbooks, read and create
    McpRemediations, and list Events; nothing else (no patch: it cannot approve)."""
    return account(
        NAMESPACE,
        AGENT,
        [
            {"apiGroups": ["mcp.dese.ai"], "resources": ["mcprunbooks"], "verbs": ["get", "list"]},
            {"apiGroups": ["mcp.dese.ai"], "resources": ["mcpremediations"],
             "verbs": ["get", "list", "create"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
        ],
    )  # fmt: skip


def staging() -> list[dict[str, Any]]:
    """mcp-staging: its dese-api (one replica) and dese-api-config, and the rights of the
    runner of ``mcp`` there: what prometheus-timeout needs (read and patch that one
    ConfigMap, restart the Deployment), nothing else."""
    rbac = "rbac.authorization.k8s.io/v1"
    meta = {"name": "mcp-remediator-runner", "namespace": STAGING}
    rules = [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [CONFIG_MAP],
         "verbs": ["get", "patch"]},
    ]  # fmt: skip
    subject = {"kind": "ServiceAccount", "name": "mcp-remediator-runner", "namespace": NAMESPACE}
    api = deployment("dese-api", 1, "dese-api-staging")
    api["metadata"]["namespace"] = STAGING
    return [
        namespace(STAGING),
        api,
        config_map(STAGING),
        {"apiVersion": rbac, "kind": "Role", "metadata": meta, "rules": rules},
        {"apiVersion": rbac, "kind": "RoleBinding", "metadata": meta, "subjects": [subject],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "mcp-remediator-runner"}},
    ]  # fmt: skip


def config_map(namespace: str = NAMESPACE) -> dict[str, Any]:
    # Runtime tuning, deliberately left out of Argo CD's tracking: GitOps-safe to patch.
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "namespace": namespace},
        "data": {
            "MCP_PROMETHEUS_TIMEOUT_MS": "3000",
            "MCP_CACHE_TTL_SECONDS": "120",
            "MCP_PROMETHEUS_BASE_URL": "http://prometheus.monitoring.svc:9090",
        },
    }


@dataclass
class Faults:
    """What is broken right now; the demo's incidents set these, restarts clear them."""

    cache_cold: bool = False
    failing_modules: set[str] = field(default_factory=set)
    prometheus_timeout: bool = False
    websocket_down: bool = False
    stalled_modules: set[str] = field(default_factory=set)
    # Read from Redis at every scrape: the API refuses users while a stale role
    # snapshot sits in the dashboard cache.
    authz_stale: bool = False
    # Staging's Prometheus is overloaded: its queries take longer than any client timeout,
    # so staging's observability calls are rejected whatever MCP_PROMETHEUS_TIMEOUT_MS is.
    staging_prometheus_overloaded: bool = False


@dataclass
class Counter:
    value: float = 0.0
    rate: float = 0.0


Labels = tuple[tuple[str, str], ...]


class Metrics:
    """The MCP services' metrics: counters advance at rates that follow the faults."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, Labels], Counter] = {}
        self.last = time.monotonic()

    def add(self, name: str, amount: float, **labels: str) -> None:
        self._counter(name, labels).value += amount

    def _counter(self, name: str, labels: dict[str, str]) -> Counter:
        key = (name, tuple(sorted(labels.items())))
        return self.counters.setdefault(key, Counter())

    def advance(self, faults: Faults) -> None:
        """Count what happened since the last scrape, then set the rates from now on."""
        now = time.monotonic()
        for counter in self.counters.values():
            counter.value += counter.rate * (now - self.last)
        self.last = now
        settled = "mcp_dashboard_promises_settled_total"
        for module in MODULES:
            failing = module in faults.failing_modules or (
                module == "observability" and faults.prometheus_timeout
            )
            share = 0.5 if failing else 0.01
            labels = {"namespace": NAMESPACE, "module": module, "eventType": EVENT_TYPES[module]}
            self._counter(settled, {**labels, "status": "rejected"}).rate = 20 * share
            self._counter(settled, {**labels, "status": "fulfilled"}).rate = 20 * (1 - share)
        staging = 0.5 if faults.staging_prometheus_overloaded else 0.01
        labels = {"namespace": STAGING, "module": "observability", "eventType": "metrics"}
        self._counter(settled, {**labels, "status": "rejected"}).rate = 20 * staging
        self._counter(settled, {**labels, "status": "fulfilled"}).rate = 20 * (1 - staging)
        for module in PUBLISHERS:
            rate = 0.0 if module in faults.stalled_modules else 3.0
            labels = {"namespace": NAMESPACE, "module": module}
            self._counter("mcp_websocket_events_published_total", labels).rate = rate
        codes = {"200": 30.0, "401": 0.05, "403": 0.02}
        if faults.authz_stale:
            codes.update({"401": 6.0, "403": 2.0})
        for code, rate in codes.items():
            labels = {"namespace": NAMESPACE, "service": "dese-api", "code": code}
            self._counter("http_requests_total", labels).rate = rate

    def render(self, gauges: list[tuple[str, dict[str, str], float]]) -> str:
        lines = []
        for (name, pairs), counter in sorted(self.counters.items()):
            lines.append(f"{name}{_labels(dict(pairs))} {counter.value:.3f}")
        for gauge, labels, value in gauges:
            lines.append(f"{gauge}{_labels(labels)} {value:g}")
        return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{{{inner}}}"


@dataclass
class CacheContents:
    """What the demo loaded into Redis, to check later that the right keys survived."""

    dashboard: int = 0
    other_mcp: int = 0
    outside: dict[str, int] = field(default_factory=dict)


class World:
    """Everything the demo's operator acts on; ``start`` it, ``stop`` it."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.supervisor = Supervisor(directory)
        self.faults = Faults()
        self.metrics = Metrics()
        self.api = ApiServerEmulator()
        self.api_url = ""  # plain http: the demo's own clients
        self.api_tls_url = ""  # https, for kubectl (``user_kubeconfig``)
        self.api_ca = Path()
        self.http_url = ""
        self.redis_daemon: Daemon | None = None
        self.exporter: Daemon | None = None
        self.prometheus: Daemon | None = None
        self.alertmanager: Daemon | None = None
        self.cache = CacheContents()
        self.notifications: list[str] = []
        self.test_events: list[tuple[str, dict[str, Any]]] = []
        self.restarts: list[tuple[str, str]] = []  # (deployment, restartedAt)
        self.syncs: list[tuple[str, str]] = []  # (application, outcome)
        self.blocked_apps: set[str] = set()
        self.redis_pids: list[int] = []
        self._restarted_at: dict[str, str] = {}
        self._stack = contextlib.AsyncExitStack()
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._redis: redis.asyncio.Redis | None = None
        self._http = httpx.AsyncClient(timeout=5)
        self.stop_times: dict[str, float] = {}

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Cluster, HTTP stand-ins and daemons; returns once Prometheus serves queries."""
        self._build_cluster()
        await self._stack.enter_async_context(self.api)
        server = await self._stack.enter_async_context(kmock.Server(self.api))
        self.api_url = str(server.url).rstrip("/")
        # kubectl sends a token only over TLS: users' kubeconfigs name this listener.
        self.api_ca, key = make_certificate(self.directory, "api")
        secure = await self._stack.enter_async_context(tls_server(self.api, self.api_ca, key))
        self.api_tls_url = str(secure.url).rstrip("/")
        await self._start_http()
        self.redis_daemon = await start_redis(self.supervisor, str(REDIS_MAXMEMORY))
        self.redis_pids.append(self.redis_daemon.pid)
        self._redis = redis.asyncio.Redis(
            host="127.0.0.1", port=self.redis_daemon.port, socket_timeout=2
        )
        self.exporter = await start_redis_exporter(self.supervisor, self.redis_daemon.port)
        prometheus_port = free_port()
        self.prometheus = await start_prometheus(
            self.supervisor, prometheus_port, self._prometheus_config(prometheus_port)
        )
        self.alertmanager = await start_alertmanager(self.supervisor)
        await self.load_cache()
        self._spawn(self._traffic())

    async def stop(self) -> None:
        """Stop everything; how long each part took is kept in ``stop_times``."""
        clock = time.monotonic()

        def lap(part: str) -> None:
            nonlocal clock
            now = time.monotonic()
            self.stop_times[part] = now - clock
            clock = now

        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        lap("tasks")
        if self._redis is not None:
            with contextlib.suppress(redis.exceptions.RedisError):
                await self._redis.aclose()
        await self._http.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
        lap("stand-ins")
        await asyncio.to_thread(self.supervisor.stop_all)
        lap("daemons")
        self.api.end_watches()  # else the servers' shutdown waits on watches nobody reads
        await self._stack.aclose()
        lap("api")

    def stop_daemons_now(self) -> None:
        """The blocking last resort (an interrupted demo): stop every daemon by its PID."""
        self.supervisor.stop_all()

    def settings(self, receiver_port: int, token: str) -> Settings:
        """The operator's settings for this world (secrets as an installation has them)."""
        assert self.redis_daemon is not None and self.prometheus is not None
        assert self.alertmanager is not None
        return Settings(
            receiver_host="127.0.0.1",
            receiver_port=receiver_port,
            receiver_token=SecretStr(token),
            redis_url=SecretStr(f"redis://127.0.0.1:{self.redis_daemon.port}/0"),
            prometheus_url=self.prometheus.url,
            alertmanager_url=self.alertmanager.url,
            argocd_mode="core",
            argocd_namespace=ARGOCD_NAMESPACE,
            module_base_urls=dict.fromkeys(MODULES, self.http_url),
            notify_webhook_url=SecretStr(f"{self.http_url}{WEBHOOK_PATH}"),
            gitops_policy_path=GITOPS_POLICY_PATH,
            poll_interval_seconds=0.2,
            retry_backoff_seconds=0.3,
        )

    def agent_kubeconfig(self) -> Path:
        """A kubeconfig for the AI ops agent's ServiceAccount (``agent()``), as its MCP
        client would hand to ``mcp-remediator mcp-server``."""
        return self.user_kubeconfig(AGENT, self.api.service_account_token(NAMESPACE, AGENT))

    def user_kubeconfig(self, name: str, token: str) -> Path:
        """A kubeconfig with ``token`` for the API's https listener (kubectl sends no token
        over plain http), trusting its certificate."""
        return write_kubeconfig(
            self.directory / f"{name}.kubeconfig",
            self.api_tls_url,
            NAMESPACE,
            token=token,
            certificate_authority=self.api_ca,
        )

    def operator_token(self) -> str:
        """The bearer token of the operator's ServiceAccount (manifests/rbac)."""
        return self.api.service_account_token(*OPERATOR_ACCOUNT)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the emulated cluster ----------------------------------------------------------

    def _build_cluster(self) -> None:
        api = self.api
        api.register_builtins()
        for text in crdgen.render_all().values():
            api.register_crd(yaml.safe_load(text))
        # Authentication and RBAC as a cluster has them, with the shipped RBAC applied: the
        # operator runs as its ServiceAccount; the catalogue's steps act as the runner.
        api.enable_auth()
        api.apply_dir(RBAC_DIR)
        for name in (NAMESPACE, ARGOCD_NAMESPACE, KYVERNO_NAMESPACE):
            api.seed(namespace(name))
        seeded = {}
        for name, (replicas, instance) in WORKLOADS.items():
            seeded[name] = api.seed(deployment(name, replicas, instance))
            for pod_name in pod_names(name, replicas):
                api.seed(pod(pod_name, name))
        kyverno = deployment("kyverno-admission-controller", 1, "kyverno")
        kyverno["metadata"]["namespace"] = KYVERNO_NAMESPACE
        api.seed(kyverno)
        for app in APPLICATIONS:
            api.seed(application(app))
        api.seed(cluster_policy(SIGNED_IMAGES, "Enforce", "check-signature", SIGNED_IMAGES_GIT))
        api.seed(
            cluster_policy(
                "require-requests-limits",
                "Audit",
                "check-resources",
                "platform-gitops/policies/kyverno/require-requests-limits.yaml",
            )
        )
        api.seed(validating_policy(NON_ROOT, ["Deny"], NON_ROOT_GIT))
        api.seed(policy_report(seeded["dese-api"]))
        api.seed(config_map())
        api.seed(argocd_rbac())
        api.seed(app_project())
        api.apply(tenant())
        api.apply(staging())
        api.apply(agent())
        api.add_reactor("apps/v1", "deployments", complete_rollouts)
        api.add_reactor("apps/v1", "deployments", self._on_deployment)
        api.add_reactor("argoproj.io/v1alpha1", "applications", self._argocd_controller)

    def _on_deployment(self, obj: dict[str, Any]) -> None:
        """A reactor: a new restartedAt annotation restarts what the Deployment runs."""
        name = obj["metadata"]["name"]
        template = obj.get("spec", {}).get("template", {}).get("metadata", {})
        restarted = (template.get("annotations") or {}).get(RESTARTED_AT)
        where = obj["metadata"].get("namespace")
        key = name if where == NAMESPACE else f"{where}/{name}"
        if not restarted or self._restarted_at.get(key) == restarted:
            return None
        self._restarted_at[key] = restarted
        self.restarts.append((key, restarted))
        if where != NAMESPACE:
            # Staging's fault is its Prometheus, which no restart of its API repairs.
            return None
        faults = self.faults
        if name == "dese-api":
            faults.cache_cold = False
            data = (self.api.get("v1", "configmaps", NAMESPACE, CONFIG_MAP) or {}).get("data", {})
            if int(data.get("MCP_PROMETHEUS_TIMEOUT_MS", "0")) >= 8000:
                faults.prometheus_timeout = False
        if name == "websocket-server":
            faults.websocket_down = False
        faults.failing_modules.discard(name)
        faults.stalled_modules.discard(name)
        self.set_pods(name, pod_status(True))
        if name == "redis":
            self._spawn(self._restart_redis())
        return None

    def set_pods(self, app: str, status: dict[str, Any]) -> None:
        for item in self.api.list_objects("v1", "pods", NAMESPACE):
            if (item["metadata"].get("labels") or {}).get("app") == app:
                self._spawn(
                    self.api.patch_object(
                        "v1",
                        "pods",
                        NAMESPACE,
                        item["metadata"]["name"],
                        {"status": status},
                        subresource="status",
                    )  # fmt: skip
                )

    def _argocd_controller(self, app: dict[str, Any]) -> dict[str, Any] | None:
        """A reactor standing in for Argo CD's application controller (sync operations)."""
        operation = app.get("operation")
        state = (app.get("status") or {}).get("operationState") or {}
        if not operation:
            return None
        name = app["metadata"]["name"]
        if state.get("phase") != "Running":
            return {
                "status": {
                    "operationState": {
                        "operation": operation,
                        "phase": "Running",
                        "message": "",
                        "startedAt": _now(),
                    }
                }
            }
        requested = str((operation.get("sync") or {}).get("revision") or "")
        revision = requested if len(requested) == 40 else NEW_REVISION
        blocked = name in self.blocked_apps
        self.syncs.append((name, "Failed" if blocked else "Succeeded"))
        finished = {
            "phase": "Failed" if blocked else "Succeeded",
            "message": KYVERNO_DENIAL if blocked else "successfully synced (all tasks run)",
            "finishedAt": _now(),
            "syncResult": {"revision": revision},
        }
        if blocked:
            return {"operation": None, "status": {"operationState": finished}}
        return {
            "operation": None,
            "status": {
                "operationState": finished,
                "sync": {"status": "Synced", "revision": revision},
                "health": {"status": "Healthy"},
            },
        }

    async def drift(self, app: str) -> None:
        """Argo CD notices that the app differs from Git (a new revision to deploy)."""
        await self.api.patch_object(
            "argoproj.io/v1alpha1", "applications", ARGOCD_NAMESPACE, app,
            {"status": {"sync": {"status": "OutOfSync", "revision": NEW_REVISION}}},
        )  # fmt: skip

    def app_status(self, app: str) -> tuple[str, str]:
        status = (self.api.get("argoproj.io/v1alpha1", "applications", ARGOCD_NAMESPACE, app)
                  or {}).get("status") or {}  # fmt: skip
        return (status.get("sync") or {}).get("status", ""), (status.get("health") or {}).get(
            "status", ""
        )

    def kyverno_versions(self) -> dict[str, str]:
        """resourceVersion of every Kyverno object, to prove later that none was written."""
        versions = {}
        for api_version, plural in (
            ("kyverno.io/v1", "clusterpolicies"),
            ("kyverno.io/v1", "policies"),
            ("kyverno.io/v2", "policyexceptions"),
            ("policies.kyverno.io/v1", "validatingpolicies"),
            ("wgpolicyk8s.io/v1alpha2", "policyreports"),
            ("openreports.io/v1alpha1", "reports"),
        ):
            for obj in self.api.list_objects(api_version, plural):
                meta = obj["metadata"]
                versions[f"{plural}/{meta['name']}"] = str(meta.get("resourceVersion"))
        return versions

    # -- HTTP stand-ins and metrics ----------------------------------------------------

    async def _start_http(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/mcp/{module}/health", self._health)
        app.router.add_post("/mcp/{module}/events/test", self._test_event)
        app.router.add_post(WEBHOOK_PATH, self._webhook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.http_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _metrics(self, request: web.Request) -> web.Response:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            self.faults.authz_stale = bool(await self._client().exists(STALE_AUTHZ_KEY))
        self.metrics.advance(self.faults)
        gauges: list[tuple[str, dict[str, str], float]] = []
        for item in self.api.list_objects("v1", "pods", NAMESPACE):
            meta = item["metadata"]
            if (meta.get("labels") or {}).get("app") == "websocket-server":
                connected = 0.0 if self.faults.websocket_down else 40.0
                labels = {"namespace": NAMESPACE, "pod": meta["name"]}
                gauges.append(("mcp_websocket_active_connections", labels, connected))
        for app in APPLICATIONS:
            sync, health = self.app_status(app)
            info = {"namespace": ARGOCD_NAMESPACE, "name": app, "project": "default",
                      "dest_namespace": NAMESPACE, "sync_status": sync,
                      "health_status": health}  # fmt: skip
            gauges.append(("argocd_app_info", info, 1.0))
        return web.Response(text=self.metrics.render(gauges), content_type="text/plain")

    async def _health(self, request: web.Request) -> web.Response:
        module = request.match_info["module"]
        if module not in MODULES:
            return web.json_response({"error": f"no module {module}"}, status=404)
        if module in self.faults.failing_modules:
            return web.json_response(
                {"status": "degraded", "error": f"upstream {module}-db timed out after 5000 ms"},
                status=503,
            )
        return web.json_response({"status": "ok", "module": module})

    async def _test_event(self, request: web.Request) -> web.Response:
        module = request.match_info["module"]
        if module not in PUBLISHERS:
            return web.json_response({"error": f"{module} publishes no events"}, status=404)
        if module in self.faults.stalled_modules:
            return web.json_response({"error": "ingestion worker is not running"}, status=503)
        body = await request.json()
        self.test_events.append((module, body))
        self.metrics.add(
            "mcp_websocket_events_published_total", 1, namespace=NAMESPACE, module=module
        )
        return web.json_response({"id": f"evt-{uuid.uuid4().hex[:8]}"}, status=202)

    async def _webhook(self, request: web.Request) -> web.Response:
        self.notifications.append(str((await request.json()).get("text", "")))
        return web.Response(text="ok")

    def _prometheus_config(self, port: int) -> str:
        assert self.exporter is not None
        http_target = self.http_url.removeprefix("http://")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "redis",
                    "static_configs": [
                        {"targets": [self.exporter.address], "labels": {"namespace": NAMESPACE}}
                    ],
                },
                {
                    "job_name": "mcp",
                    "honor_labels": True,
                    "static_configs": [{"targets": [http_target]}],
                },
                {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
            ],
        }
        return yaml.safe_dump(config)

    async def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: (labels, value) per series; empty while there is no data."""
        assert self.prometheus is not None
        response = await self._http.get(
            f"{self.prometheus.url}/api/v1/query", params={"query": promql}
        )
        response.raise_for_status()
        return [
            (dict(item["metric"]), float(item["value"][1]))
            for item in response.json()["data"]["result"]
        ]

    async def silences(self) -> list[dict[str, Any]]:
        """Every silence Alertmanager holds (``GET /api/v2/silences``), expired ones too."""
        assert self.alertmanager is not None
        response = await self._http.get(f"{self.alertmanager.url}/api/v2/silences")
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()
        return found

    # -- Redis -------------------------------------------------------------------------

    def _client(self) -> redis.asyncio.Redis:
        assert self._redis is not None
        return self._redis

    async def load_cache(self) -> None:
        """A dashboard cache as the MCP layer keeps it, and neighbours that must survive."""
        rng = random.Random(7)
        client = self._client()
        pipe = client.pipeline(transaction=False)
        cache = CacheContents()
        dashboard = [
            ("finbot:portfolio:user", 300, 300),
            ("mubot:ledger:company", 200, 300),
            ("aiops:incidents:team", 40, 120),
            ("observability:panel", 90, 60),
        ]
        for prefix, count, ttl in dashboard:
            for index in range(count):
                value = {"id": index, "generatedAt": _now(), "rows": rng.sample(range(999), 40)}
                pipe.set(f"mcp:dashboard:{prefix}-{index}", json.dumps(value), ex=ttl * 10)
                cache.dashboard += 1
        for index in range(WIDGETS):
            pipe.set(f"mcp:dashboard:widget:{index}", json.dumps({"widget": index}), ex=600)
            cache.dashboard += 1
        for currency in ("USD", "EUR", "TRY", "GBP", "JPY", "CHF"):
            pipe.set(f"mcp:finbot:fx-rates:{currency}", str(rng.uniform(0.5, 40)))
            cache.other_mcp += 1
        for year in range(2021, 2027):
            pipe.set(f"mcp:mubot:tax-tables:{year}", json.dumps({"year": year}))
            cache.other_mcp += 1
        for _ in range(250):
            pipe.set(f"session:{uuid.UUID(int=rng.getrandbits(128)).hex}", "{}", ex=86_400)
        for index in range(120):
            pipe.hset(f"bull:mcp-ingest:{index}", mapping={"name": "ingest", "attempts": "0"})
        for role in ("admin", "analyst", "finance", "viewer", "oncall", "auditor"):
            pipe.sadd(f"rbac:roles:{role}", "dashboard:read", "reports:read")
        await pipe.execute()
        cache.outside = {"session:*": 250, "bull:mcp-ingest:*": 120, "rbac:roles:*": 6}
        self.cache = cache

    async def count(self, pattern: str) -> int:
        return len([key async for key in self._client().scan_iter(match=pattern, count=1000)])

    async def outside_intact(self) -> str:
        """Raises ``DemoError`` unless every key outside ``mcp:`` is still there, untouched."""
        client = self._client()
        for pattern, expected in self.cache.outside.items():
            found = await self.count(pattern)
            if found != expected:
                raise DemoError(f"{expected - found} keys matching {pattern} were lost")
        for key in ("bull:mcp-ingest:0", "rbac:roles:admin"):
            if await client.ttl(key) != -1:
                raise DemoError(f"{key} got a TTL: a key outside mcp: was touched")
        total = sum(self.cache.outside.values())
        return f"all {total} keys outside mcp: (sessions, job queue, roles) untouched"

    async def memory_ratio(self) -> float:
        info = await self._client().info("memory")
        return int(info["used_memory"]) / REDIS_MAXMEMORY

    async def fill_memory(self, target: float) -> int:
        """A report export writes 4 KiB keys without a TTL until memory passes ``target``."""
        client = self._client()
        written = 0
        payload = json.dumps({"rows": ["x" * 60] * 60})
        while await self.memory_ratio() < target:
            pipe = client.pipeline(transaction=False)
            for _ in range(250):
                pipe.set(f"mcp:dashboard:export:{written}", payload)
                written += 1
            await pipe.execute()
        return written

    async def set_stale_authz(self) -> None:
        await self._client().set(STALE_AUTHZ_KEY, json.dumps({"roles": "v41"}))

    def crash_redis(self) -> int:
        assert self.redis_daemon is not None
        pid = self.redis_daemon.pid
        self.redis_daemon.kill()
        return pid

    async def _restart_redis(self) -> None:
        assert self.redis_daemon is not None
        daemon = await self.supervisor.restart(
            self.redis_daemon, redis_ready(self.redis_daemon.port)
        )
        self.redis_daemon = daemon
        self.redis_pids.append(daemon.pid)
        # Without persistence Redis comes back empty, as a cache does: the API re-warms it.
        await self.load_cache()

    async def _traffic(self) -> None:
        """The dashboard API's lookups: cache-aside on a fixed set of widgets; while the
        cache is "cold" (a release that builds keys wrongly) every lookup misses."""
        rng = random.Random(11)
        while True:
            await asyncio.sleep(0.05)
            try:
                client = self._client()
                if self.faults.cache_cold:
                    pipe = client.pipeline(transaction=False)
                    for _ in range(10):
                        pipe.get(f"mcp:dashboard:widget:v2:{uuid.uuid4().hex}")
                    await pipe.execute()
                    continue
                keys = [f"mcp:dashboard:widget:{rng.randrange(WIDGETS)}" for _ in range(10)]
                values = await client.mget(keys)
                missing = [k for k, v in zip(keys, values, strict=True) if v is None]
                if missing:
                    pipe = client.pipeline(transaction=False)
                    for key in missing:
                        pipe.set(key, json.dumps({"widget": key}), ex=600)
                    await pipe.execute()
            except (redis.exceptions.RedisError, OSError):
                # Redis is down (an incident); the API keeps trying, as it would.
                await asyncio.sleep(0.2)
