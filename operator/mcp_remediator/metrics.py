"""The operator's Prometheus metrics, served by the receiver on ``GET /metrics``.

Each ``OperatorMetrics`` owns its own ``CollectorRegistry`` (never the process-global
one), so two receivers in one process (tests, HA simulations, benchmarks) keep apart.
Fed by the receiver (requests, alerts, connections), by the engine as its step observer
(action durations) and by the record index (``RemediationGauges.track``: what the
operator's watch already sees, at no extra API cost).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mcp_remediator.models import LABEL_RUNBOOK

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# From a PING to a rollout or an Argo CD sync that waits for health.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class RemediationIndex(Collector):
    """Current McpRemediations by namespace, runbook and phase, as the watch reports them."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], tuple[str, str]] = {}

    def apply(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        if event_type == "DELETED":
            self._phases.pop(key, None)
            return
        runbook = (meta.get("labels") or {}).get(LABEL_RUNBOOK)
        if runbook is None:
            runbook = ((body.get("spec") or {}).get("runbookRef") or {}).get("name", "")
        phase = (body.get("status") or {}).get("phase") or "Pending"
        self._phases[key] = (runbook, phase)

    def track(self, key: tuple[str, str], runbook: str | None, phase: str | None) -> None:
        """One record's runbook and phase (``phase`` None: the record is gone)."""
        if phase is None:
            self._phases.pop(key, None)
        else:
            self._phases[key] = (runbook or "", phase)

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "mcp_remediations",
            "McpRemediation objects by runbook and phase ('' for inline steps).",
            labels=["namespace", "runbook", "phase"],
        )
        counts = Tally((ns, rb, ph) for (ns, _), (rb, ph) in self._phases.items())
        for (namespace, runbook, phase), count in sorted(counts.items()):
            gauge.add_metric([namespace, runbook, phase], count)
        yield gauge


class OperatorMetrics:
    """All metrics of one operator process (one receiver)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mcp_receiver_requests",
            "HTTP requests to the receiver by path and answer code.",
            ["path", "code"],
            registry=self.registry,
        )
        self.alerts = Counter(
            "mcp_receiver_alerts",
            "Alerts received, by alert status and outcome (per matching runbook; "
            "'unmatched' once per alert).",
            ["status", "outcome"],
            registry=self.registry,
        )
        self.truncated = Counter(
            "mcp_receiver_truncated_alerts",
            "Alerts Alertmanager left out of its notifications (truncatedAlerts).",
            registry=self.registry,
        )
        self.unrecorded_skips = Counter(
            "mcp_receiver_unrecorded_skips",
            "Guardrail hits beyond the per-minute bound of Skipped records: counted only here.",
            ["namespace", "runbook", "reason"],
            registry=self.registry,
        )
        self.connections = Gauge(
            "mcp_receiver_connections",
            "Connections open to the receiver (at most MCP_RECEIVER_MAX_CONNECTIONS).",
            registry=self.registry,
        )
        self.dropped_connections = Counter(
            "mcp_receiver_dropped_connections",
            "Connections the receiver ended early, by reason: limit (answered 503 at the "
            "cap), evicted (idle, closed to make room at the cap), headers (header timeout), "
            "body (body timeout, answered 503).",
            ["reason"],
            registry=self.registry,
        )
        self.action_duration = Histogram(
            "mcp_action_duration_seconds",
            "Duration of one action attempt by action and outcome.",
            ["action", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.remediations = RemediationIndex()
        self.registry.register(self.remediations)

    def observe_step(self, action: str, outcome: str, seconds: float) -> None:
        """The engine's step observer: one action attempt ended."""
        self.action_duration.labels(action, outcome).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
