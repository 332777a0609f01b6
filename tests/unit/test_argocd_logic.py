"""The Argo CD operation we write and how we read an Application's state (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from fixtures.gitops import application
from mcp_remediator.errors import Refused
from mcp_remediator.vendors.argocd import (
    USERNAME,
    build_operation,
    read_state,
    started_by,
    target_revision,
)

INFO = [{"name": "mcp-remediation", "value": "mcp/run"}, {"name": "mcp-step", "value": "sync"}]


def test_operation_matches_what_argo_cds_api_server_writes() -> None:
    policy = {
        "syncOptions": ["CreateNamespace=true", "ServerSideApply=true"],
        "retry": {"limit": 2, "backoff": {"duration": "5s"}},
    }
    app = application(sync_policy=policy)

    operation = build_operation(app, None, True, INFO)

    assert operation == {
        "sync": {
            "revision": "main",
            "prune": True,
            "syncOptions": ["CreateNamespace=true", "ServerSideApply=true"],
        },
        "initiatedBy": {"username": USERNAME, "automated": False},
        "info": INFO,
        "retry": {"limit": 2, "backoff": {"duration": "5s"}},
    }


def test_without_a_sync_policy_there_are_no_sync_options_and_no_retry() -> None:
    operation = build_operation(application(target_revision="v1.2.3"), "v1.2.3", False, INFO)
    assert operation["sync"] == {"revision": "v1.2.3", "prune": False}
    assert "retry" not in operation
    assert target_revision(application(target_revision=""), None) == "HEAD"


@pytest.mark.parametrize("policy", [None, {"automated": {"selfHeal": True}}])
def test_only_the_revision_git_tracks_is_synced_auto_sync_or_not(
    policy: dict[str, Any] | None,
) -> None:
    app = application(sync_policy=policy)
    assert target_revision(app, "main") == "main"
    assert target_revision(app, None) == "main"
    for other in ("feature-x", "attacker/unreviewed", "HEAD", "Main"):
        with pytest.raises(Refused, match="would override Git, which has it track 'main'") as no:
            target_revision(app, other)
        assert no.value.reason == "RevisionOverrideRefused"


@pytest.mark.parametrize(
    ("operation", "state", "in_flight", "done"),
    [
        (None, None, False, False),
        ({"sync": {}}, None, True, False),
        (None, {"phase": "Running"}, True, False),
        (None, {"phase": "Terminating"}, True, False),
        (None, {"phase": "Failed"}, False, False),
        (None, {"phase": "Succeeded"}, False, True),
    ],
)
def test_in_flight_and_done_follow_argo_cds_phases(
    operation: dict[str, Any] | None, state: dict[str, Any] | None, in_flight: bool, done: bool
) -> None:
    app = application(sync_status="Synced", operation=operation, operation_state=state)
    assert read_state(app).in_flight is in_flight
    assert read_state(app).done is done


def test_done_needs_synced_and_healthy_too() -> None:
    succeeded = {"phase": "Succeeded", "syncResult": {"revision": "abc"}}
    assert not read_state(application(sync_status="OutOfSync", operation_state=succeeded)).done
    degraded = application(sync_status="Synced", health="Degraded", operation_state=succeeded)
    state = read_state(degraded)
    assert not state.done
    assert state.revision == "abc"
    assert state.summary() == "operation Succeeded, sync Synced, health Degraded"


def test_our_operation_is_recognised_while_set_and_after_it_finished() -> None:
    mine = {"sync": {"revision": "main"}, "info": INFO}
    theirs = {"sync": {"revision": "main"}, "info": [{"name": "reason", "value": "manual"}]}
    assert started_by(application(operation=mine), INFO)
    assert started_by(application(operation_state={"phase": "Failed", "operation": mine}), INFO)
    assert not started_by(application(operation=theirs), INFO)
    assert not started_by(application(), INFO)
    other_step = [INFO[0], {"name": "mcp-step", "value": "other"}]
    assert not started_by(application(operation=mine), other_step)
