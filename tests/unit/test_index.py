"""The record index: newest version wins, groups, work left, and when a record may go."""

from __future__ import annotations

import datetime
from typing import Any

from mcp_remediator import records
from mcp_remediator.index import RecordIndex, RunbookStore
from mcp_remediator.models import LABEL_GROUP

NOW = datetime.datetime.now(datetime.UTC)


def at(seconds_ago: float) -> str:
    return (NOW - datetime.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def record(
    name: str,
    version: int,
    *,
    phase: str | None = None,
    finished: float | None = None,
    resolved: float | None = None,
    ttl: int | None = None,
    alert: bool = False,
    group: str | None = "g",
    **status: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"runbookRef": {"name": "rb"}}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    if alert:
        spec["alert"] = {"fingerprint": name, "startsAt": "2026-11-30T10:00:00Z", "labels": {}}
        name = records.remediation_name("rb", name, "2026-11-30T10:00:00Z")
    body: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "mcp",
            "uid": f"uid-{name}",
            "resourceVersion": str(version),
            "creationTimestamp": at(3600),
            "labels": {LABEL_GROUP: group} if group else {},
        },
        "spec": spec,
        "status": dict(status),
    }
    if phase:
        body["status"]["phase"] = phase
    if finished is not None:
        body["status"]["finishedAt"] = at(finished)
    if resolved is not None:
        body["status"]["alertResolvedAt"] = at(resolved)
    return body


def index() -> RecordIndex:
    return RecordIndex(default_ttl=600, unresolved_ttl=86_400)


def test_an_older_version_never_replaces_a_newer_one() -> None:
    idx = index()
    idx.apply(None, record("a", 5, phase="Running"))
    idx.apply("MODIFIED", record("a", 4, phase="Pending"))
    entry = idx.get("mcp", "a")
    assert entry is not None and entry.phase == "Running" and entry.version == 5
    idx.apply("DELETED", record("a", 6))
    assert idx.get("mcp", "a") is None


def test_finished_records_keep_no_body_and_need_no_work() -> None:
    idx = index()
    idx.apply(None, record("done", 1, phase="Succeeded", finished=10))
    idx.apply(None, record("busy", 2, phase="Running"))
    done, busy = idx.get("mcp", "done"), idx.get("mcp", "busy")
    assert done is not None and done.body is None and not done.needs_work
    assert busy is not None and busy.body is not None
    assert [e.name for e in idx.working()] == ["busy"]


def test_a_failed_run_whose_escalation_is_not_created_has_work_left_and_stays() -> None:
    idx = index()
    pending = {"name": "x-esc", "runbook": "page", "created": False}
    idx.apply(None, record("f", 1, phase="Failed", finished=10_000, escalatedTo=pending))
    entry = idx.get("mcp", "f")
    assert entry is not None and entry.needs_work and entry.body is not None
    assert entry.due(600, 86_400) is None


def test_due_times() -> None:
    idx = index()
    idx.apply(None, record("plain", 1, phase="Succeeded", finished=700))
    idx.apply(None, record("young", 2, phase="Succeeded", finished=10))
    idx.apply(None, record("own-ttl", 3, phase="Succeeded", finished=10, ttl=5))
    idx.apply(None, record("firing", 4, phase="Succeeded", finished=700, alert=True))
    idx.apply(None, record("resolved", 5, phase="Succeeded", finished=700, resolved=650,
                           alert=True))  # fmt: skip
    idx.apply(None, record("late", 6, phase="Succeeded", finished=700, resolved=10,
                           alert=True))  # fmt: skip
    expired = {e.name for e in idx.expired(NOW, 100)}
    firing = records.remediation_name("rb", "firing", "2026-11-30T10:00:00Z")
    resolved = records.remediation_name("rb", "resolved", "2026-11-30T10:00:00Z")
    assert expired == {"plain", "own-ttl", resolved}
    assert firing not in expired  # its alert may still be re-sent: the record stays
    assert idx.expired(NOW, 100) == []  # each is returned once
    later = NOW + datetime.timedelta(days=2)
    assert {e.name for e in idx.expired(later, 100)} >= {"young", firing}


def test_groups_count_labelled_records_and_unlabelled_runs_by_their_labels() -> None:
    idx = index()
    idx.apply(None, record("a", 1, phase="Running", group="g1"))
    idx.apply(None, record("b", 2, phase="Running", group="g2"))
    unlabelled = record("c", 3, group=None)
    unlabelled["spec"]["labels"] = {"alertname": "X"}
    idx.apply(None, unlabelled)
    g_of_c = records.group_key(["alertname"], {"alertname": "X"})
    assert {e.name for e in idx.of_group("mcp", "rb", "g1", ["alertname"])} == {"a"}
    assert {e.name for e in idx.of_group("mcp", "rb", g_of_c, ["alertname"])} == {"c"}
    idx.apply("MODIFIED", record("a", 4, phase="Running", group="g2"))
    assert {e.name for e in idx.of_group("mcp", "rb", "g2", ["alertname"])} == {"a", "b"}


def test_a_relist_drops_what_is_gone_and_tells_the_listeners() -> None:
    idx = index()
    seen: list[tuple[str | None, str | None]] = []
    idx.listeners.append(lambda old, new: seen.append((old and old.name, new and new.name)))
    idx.apply(None, record("a", 1))
    idx.apply(None, record("b", 2))
    idx.listed(None, {("mcp", "a")})
    assert idx.get("mcp", "b") is None and len(idx) == 1
    assert seen[-1] == ("b", None)


def test_runbook_store_keeps_the_newest_and_remembers_deletions() -> None:
    store = RunbookStore()
    store.apply(None, {"metadata": {"namespace": "mcp", "name": "r", "resourceVersion": "3"}})
    assert store.apply(None, {"metadata": {"namespace": "mcp", "name": "r",
                                           "resourceVersion": "2"}}) is None  # fmt: skip
    store.apply("DELETED", {"metadata": {"namespace": "mcp", "name": "r", "resourceVersion": "4"}})
    assert store.get("mcp", "r") is None
    store.apply(None, {"metadata": {"namespace": "mcp", "name": "r", "resourceVersion": "3"}})
    assert store.get("mcp", "r") is None  # a list answered before the deletion
