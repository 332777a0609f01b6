"""The receiver's runbook cache: valid McpRunbooks with their triggers compiled.

Fed by the Kopf watch events (``handlers``) and an initial LIST (``AlertIngestor.warm``);
``RunbookCache.match`` answers which runbooks an alert's labels start. Used by
``alerts.ingest`` and ``tools.simulate``.

Routing by namespace (tenancy): a runbook in a trusted namespace
(``MCP_TRUSTED_NAMESPACES``) takes alerts of any namespace; a runbook elsewhere takes only
alerts whose ``namespace`` label is its own namespace, so a tenant cannot start runs on
another namespace's alerts. A runbook the routing rules out is not matched at all: no
record, not even a Skipped one.

No runbook can stop the cache: an object that cannot be read or validated, whatever the
reason, is an invalid runbook (kept out, logged by the exception's type), and the next
object is read as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mcp_remediator import redact
from mcp_remediator.models import API_VERSION, RunbookSpec
from mcp_remediator.runbook import matchers
from mcp_remediator.runbook.validation import check_runbook
from mcp_remediator.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedRunbook:
    """A runbook as the receiver needs it: parsed, validated, triggers compiled."""

    namespace: str
    name: str
    uid: str | None
    spec: RunbookSpec
    triggers: tuple[matchers.CompiledTrigger, ...]
    alert_namespace: str | None = None
    """The only ``namespace`` label the runbook takes alerts of; ``None``: any (trusted)."""

    def triggered_by(self, labels: Mapping[str, str]) -> bool:
        """Whether a trigger matches, whatever the alert's namespace."""
        return any(trigger.matches(labels) for trigger in self.triggers)

    def routed(self, labels: Mapping[str, str]) -> bool:
        """Whether the runbook may take an alert of the ``namespace`` label in ``labels``."""
        return self.alert_namespace is None or labels.get("namespace", "") == self.alert_namespace

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.routed(labels) and self.triggered_by(labels)

    def ref(self) -> dict[str, Any]:
        """Enough of the object to post an Event about it."""
        meta = {"name": self.name, "namespace": self.namespace, "uid": self.uid}
        return {"apiVersion": API_VERSION, "kind": "McpRunbook", "metadata": meta}


def _newer(new: str, old: str | None) -> bool:
    """Whether ``new`` is at least as recent as ``old``; resourceVersions are compared
    as numbers when both are (as etcd's are), otherwise the newest arrival wins."""
    if old is None or not (new.isdigit() and old.isdigit()):
        return True
    return int(new) >= int(old)


class RunbookCache:
    """Valid McpRunbooks with triggers, fed by the watch and an initial LIST.

    Invalid runbooks (what ``runbook.validation.check_runbook`` rejects, or ``Valid=False``
    for the current generation) are kept out. A deletion leaves its resourceVersion
    behind, so a LIST answered before the deletion cannot bring the runbook back.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.warm = False
        self._runbooks: dict[tuple[str, str], CachedRunbook] = {}
        self._versions: dict[tuple[str, str], str] = {}
        self._by_alertname: dict[str, list[CachedRunbook]] | None = None

    def __len__(self) -> int:
        return len(self._runbooks)

    def apply(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") if isinstance(body, Mapping) else None
        if not isinstance(meta, Mapping):
            log.warning("runbook event without metadata: ignored")
            return
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        version = str(meta.get("resourceVersion") or "")
        if not _newer(version, self._versions.get(key)):
            return
        self._versions[key] = version
        self._by_alertname = None
        entry = None if event_type == "DELETED" else self._entry(key, body)
        if entry is None:
            self._runbooks.pop(key, None)
        else:
            self._runbooks[key] = entry

    def _entry(self, key: tuple[str, str], body: Mapping[str, Any]) -> CachedRunbook | None:
        """The runbook as the receiver matches it; ``None`` when it is invalid or cannot be
        read at all."""
        try:
            return self._read(key, body)
        except Exception as exc:
            log.warning(
                "runbook %s/%s cannot be read (%s): not matched",
                *key,
                redact.exception_type(exc),
            )
            return None

    def _read(self, key: tuple[str, str], body: Mapping[str, Any]) -> CachedRunbook | None:
        meta = body.get("metadata") or {}
        raw_spec = body.get("spec") or {}
        invalid = bool(check_runbook(raw_spec, self.settings, key[0])) or any(
            c.get("type") == "Valid"
            and c.get("status") == "False"
            and c.get("observedGeneration") == meta.get("generation")
            for c in (body.get("status") or {}).get("conditions") or []
        )
        if invalid:
            log.debug("runbook %s/%s is invalid: not matched", *key)
            return None
        spec = RunbookSpec.model_validate(raw_spec)
        triggers = tuple(matchers.CompiledTrigger.compile(t) for t in spec.triggers)
        routed = None if self.settings.is_trusted(key[0]) else key[0]
        return CachedRunbook(key[0], key[1], meta.get("uid"), spec, triggers, routed)

    def _candidates(self, labels: Mapping[str, str]) -> list[CachedRunbook]:
        if self._by_alertname is None:
            index: dict[str, list[CachedRunbook]] = {}
            for runbook in self._runbooks.values():
                for name in {t.alertname for t in runbook.triggers}:
                    index.setdefault(name, []).append(runbook)
            self._by_alertname = index
        return self._by_alertname.get(labels.get("alertname", ""), [])

    def match(self, labels: Mapping[str, str]) -> list[CachedRunbook]:
        """The runbooks an alert with ``labels`` starts: a trigger matches and the routing
        by namespace lets the runbook take the alert."""
        return [runbook for runbook in self._candidates(labels) if runbook.matches(labels)]

    def routed_out(self, labels: Mapping[str, str]) -> list[CachedRunbook]:
        """The runbooks whose triggers match but which may not take the alert, being in an
        untrusted namespace other than the alert's (``tools.simulate`` tells why)."""
        return [
            runbook
            for runbook in self._candidates(labels)
            if not runbook.routed(labels) and runbook.triggered_by(labels)
        ]
