"""``mcp-remediator simulate --alerts FILE --runbooks DIR``: what an alert payload would do.

Reads an Alertmanager webhook payload (JSON or YAML) and a directory of runbooks, and
prints, for each alert, the remediations the receiver would create — with their names
and the steps rendered from the alert's labels as the engine renders them (each value
escaped for its spot, ``runbook.escaping``; step outputs stay placeholders) — or why none
would be. Guardrails that
need the cluster's history (cooldown, rates, concurrency) are not evaluated offline;
``suspend``, invalid runbooks and template errors are. Matching routes by namespace as the
receiver does (``alerts.cache``: a runbook outside ``MCP_TRUSTED_NAMESPACES`` takes only
alerts of its own namespace); runbooks whose triggers match but that the routing rules out
are listed under ``notRouted``. Changes nothing.

Exit codes: 0 printed, 2 unreadable input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from mcp_remediator import records
from mcp_remediator.actions import REGISTRY
from mcp_remediator.alerts.cache import RunbookCache
from mcp_remediator.alerts.payload import PayloadError, WebhookAlert, WebhookPayload
from mcp_remediator.errors import TemplateError
from mcp_remediator.runbook import templates
from mcp_remediator.runbook.validation import check_runbook
from mcp_remediator.settings import Settings
from mcp_remediator.tools.lint import documents, yaml_files


@dataclass(frozen=True)
class _Known(templates.Inputs):
    """The alert's labels and annotations; each step output renders as a stand-in that is
    valid wherever it lands, mapped back to its placeholder in ``stand_ins``."""

    stand_ins: dict[str, str] = field(default_factory=dict)

    def lookup(self, ref: templates.Ref) -> str:
        if ref.step is None:
            return super().lookup(ref)
        token = f"mcpstepoutput{len(self.stand_ins)}x"
        self.stand_ins[token] = str(ref)
        return token


def _render(
    value: Any, inputs: templates.Inputs, problems: list[str], action: str | None = None
) -> Any:
    """What the engine would render from the alert (each value escaped for its spot, see
    ``runbook.escaping``), step outputs left as placeholders; on a problem, the problems
    of every placeholder, with labels put in as they are."""
    known = _Known(inputs.labels, inputs.annotations, {})
    spec = REGISTRY.get(action) if action else None
    try:
        if action is None:
            rendered: Any = templates.render_namespace(value, known)
        else:
            rendered = templates.render(value, known, spec.params if spec else None)
    except TemplateError as exc:
        missing: list[str] = []
        shown = _render_known(value, inputs, missing)
        problems.extend(missing or [exc.message])
        return shown
    return _restore(rendered, known.stand_ins)


def _restore(value: Any, stand_ins: dict[str, str]) -> Any:
    if isinstance(value, str):
        for token, placeholder in stand_ins.items():
            value = value.replace(token, placeholder)
        return value
    if isinstance(value, dict):
        return {k: _restore(v, stand_ins) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, stand_ins) for v in value]
    return value


def _render_known(value: Any, inputs: templates.Inputs, problems: list[str]) -> Any:
    """Render labels and annotations; keep step-output placeholders for run time."""
    if isinstance(value, str):

        def replace(match: Any) -> str:
            ref = templates.parse_ref(match.group(1))
            if ref.step is not None:
                return str(match.group(0))
            try:
                return inputs.lookup(ref)
            except TemplateError as exc:
                problems.append(exc.message)
                return str(match.group(0))

        try:
            return templates.PLACEHOLDER.sub(replace, value)
        except TemplateError as exc:
            problems.append(exc.message)
            return value
    if isinstance(value, dict):
        return {k: _render_known(v, inputs, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_known(v, inputs, problems) for v in value]
    return value


def load_runbooks(
    paths: Sequence[str], settings: Settings, out: TextIO, namespace: str
) -> RunbookCache:
    cache = RunbookCache(settings)
    for path in yaml_files(paths):
        for doc in documents(path):
            if doc.body.get("kind") != "McpRunbook":
                continue
            body = dict(doc.body)
            meta = dict(body.get("metadata") or {})
            meta.setdefault("namespace", namespace)
            body["metadata"] = meta
            problems = check_runbook(body.get("spec") or {}, settings)
            if problems:
                print(f"# {doc.label}: invalid, never matched: {problems[0].message}", file=out)
            cache.apply("ADDED", body)
    return cache


def simulate_alert(alert: WebhookAlert, cache: RunbookCache) -> list[dict[str, Any]]:
    """The remediations one alert would lead to, as printable dicts."""
    results: list[dict[str, Any]] = []
    for runbook in cache.match(alert.labels):
        name = records.remediation_name(runbook.name, alert.fingerprint, alert.startsAt)
        entry: dict[str, Any] = {"runbook": runbook.name, "remediation": name}
        if alert.status == "resolved":
            entry["outcome"] = "resolved: a Pending run would be Cancelled (AlertResolved)"
        elif runbook.spec.suspend:
            entry["outcome"] = "Skipped (Suspended)"
        else:
            guard = runbook.spec.guardrails
            entry["outcome"] = (
                "created"
                + (" (dry-run)" if guard.dryRun else "")
                + (", awaiting approval" if guard.requireApproval else "")
            )
            entry["group"] = records.group_key(guard.groupBy, alert.labels)
            inputs = templates.Inputs(alert.labels, alert.annotations, {})
            problems: list[str] = []
            namespace = runbook.spec.target.namespace
            if namespace:
                entry["namespace"] = _render(namespace, inputs, problems)
            entry["steps"] = [
                {
                    "name": step.name,
                    "action": step.action,
                    "params": _render(step.params, inputs, problems, step.action),
                }
                for step in runbook.spec.steps
            ]
            if problems:
                entry["wouldFail"] = sorted(set(problems))
        results.append(entry)
    return results


def not_routed(alert: WebhookAlert, cache: RunbookCache) -> list[str]:
    """Why runbooks whose triggers match the alert do not take it (routing by namespace)."""
    namespace = alert.labels.get("namespace")
    shown = f'namespace="{namespace}"' if namespace is not None else "no namespace label"
    return [
        f"{runbook.namespace}/{runbook.name}: namespace {runbook.namespace} is not trusted "
        f"(MCP_TRUSTED_NAMESPACES), so it takes only alerts with "
        f'namespace="{runbook.namespace}"; this alert has {shown}'
        for runbook in cache.routed_out(alert.labels)
    ]


def simulate(
    alerts_path: str,
    runbook_paths: Sequence[str],
    settings: Settings,
    out: TextIO,
    namespace: str = "default",
) -> int:
    try:
        text = Path(alerts_path).read_text()
        raw = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
        payload = WebhookPayload.parse(raw)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        message = str(exc) if isinstance(exc, PayloadError) else repr(exc)
        print(f"cannot read alerts from {alerts_path}: {message}", file=out)
        return 2
    cache = load_runbooks(runbook_paths, settings, out, namespace)
    report = []
    for alert in payload.alerts:
        remediations = simulate_alert(alert, cache)
        entry: dict[str, Any] = {
            "alert": alert.labels.get("alertname", "?"),
            "status": alert.status,
            "fingerprint": alert.fingerprint,
            "remediations": remediations or "unmatched: no runbook's trigger matches",
        }
        routed_out = not_routed(alert, cache)
        if routed_out:
            entry["notRouted"] = routed_out
            if not remediations:
                entry["remediations"] = "unmatched: no runbook may take this alert"
        report.append(entry)
    yaml.safe_dump(report, out, sort_keys=False, width=100)
    return 0
