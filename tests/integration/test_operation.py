"""Production operation (issue 12): the Lease election, restarts whose cost does not grow
with history, two replicas that never run anything twice, durable escalations, TTL expiry
that keeps deduplication, and a clear failure when no election is possible."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import math
from typing import Any

import httpx
import kmock
import pytest

from fixtures.cluster import (
    FAST,
    OPERATOR_ACCOUNT,
    Cluster,
    OperatorFactory,
    OperatorUnderTest,
    deployment,
    remediation,
    restarts,
)
from fixtures.daemons import free_port
from fixtures.receiver import AUTH, TOKEN, alert, payload
from fixtures.receiver import runbook as receiver_runbook
from mcp_remediator import records
from mcp_remediator.kube.client import KubeApi
from mcp_remediator.kube.informer import PAGE
from mcp_remediator.kube.lease import API_VERSION as LEASE_API
from mcp_remediator.kube.lease import LEASES, LeaderElector, LeaseUnavailable
from mcp_remediator.models import API_VERSION, LABEL_GROUP, LABEL_RUNBOOK, REMEDIATIONS
from mcp_remediator.settings import Settings
from mcp_remediator.testing.emulator import complete_rollouts

OPERATOR_USER = f"system:serviceaccount:{OPERATOR_ACCOUNT[0]}:{OPERATOR_ACCOUNT[1]}"
LEASE_NAMESPACE = "mcp-remediator"
DONE = {"Succeeded", "Failed", "Refused", "Skipped", "Cancelled"}


def restart(name: str) -> list[dict[str, Any]]:
    return [{"name": "restart", "action": "rolloutRestart", "params": {"name": name}}]


def own_requests(cluster: Cluster) -> list[Any]:
    """What the operator asked with its own identity (not a step's impersonated request)."""
    return [e for e in cluster.api.audit if e.user == OPERATOR_USER and e.impersonated_by is None]


def holder(cluster: Cluster) -> str | None:
    lease = cluster.get(LEASE_API, LEASES, LEASE_NAMESPACE, "mcp-remediator")
    return None if lease is None else (lease.get("spec") or {}).get("holderIdentity")


def finished_record(name: str, *, minutes_ago: int = 5, **status: Any) -> dict[str, Any]:
    stamp = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=minutes_ago)
    at = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    body = remediation(name, restart("gone"))
    body["status"] = {"phase": "Succeeded", "reason": "Completed", "startedAt": at,
                      "finishedAt": at, **status}  # fmt: skip
    return body


# -- the election -----------------------------------------------------------------------


async def test_one_of_two_candidates_leads_and_a_release_hands_over_at_once(
    cluster: Cluster,
) -> None:
    kube = KubeApi(cluster.connection, Settings())
    a = LeaderElector(kube, namespace=LEASE_NAMESPACE, name="mcp-remediator", identity="a",
                      duration=5.0)  # fmt: skip
    b = LeaderElector(kube, namespace=LEASE_NAMESPACE, name="mcp-remediator", identity="b",
                      duration=5.0)  # fmt: skip
    task_a = asyncio.create_task(a.run())
    await cluster.wait_for(lambda: a.leader, 5, "a leads")
    task_b = asyncio.create_task(b.run())
    await asyncio.sleep(1.5)
    assert a.leader and not b.leader
    assert holder(cluster) == "a"

    task_a.cancel()  # a graceful stop releases the Lease: b need not wait it out
    await asyncio.gather(task_a, return_exceptions=True)
    loop = asyncio.get_running_loop()
    released = loop.time()
    await cluster.wait_for(lambda: b.leader, 5, "b leads")
    assert loop.time() - released < 5.0  # a retry period (1 s), not the whole duration
    assert holder(cluster) == "b"
    task_b.cancel()
    await asyncio.gather(task_b, return_exceptions=True)
    await kube.aclose()


async def test_a_holder_that_vanishes_is_replaced_after_the_lease_duration(
    cluster: Cluster,
) -> None:
    kube = KubeApi(cluster.connection, Settings())
    cluster.api.apply([{
        "apiVersion": LEASE_API, "kind": "Lease",
        "metadata": {"name": "mcp-remediator", "namespace": LEASE_NAMESPACE},
        "spec": {"holderIdentity": "crashed", "leaseDurationSeconds": 2,
                 "renewTime": "2026-01-01T00:00:00.000000Z"},
    }])  # fmt: skip
    b = LeaderElector(kube, namespace=LEASE_NAMESPACE, name="mcp-remediator", identity="b",
                      duration=2.0)  # fmt: skip
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(b.run())
    await asyncio.sleep(1.0)
    assert not b.leader  # the renewTime is never compared with our clock: we wait it out
    await cluster.wait_for(lambda: b.leader, 6, "b takes over")
    assert loop.time() - started >= 2.0
    lease = cluster.get(LEASE_API, LEASES, LEASE_NAMESPACE, "mcp-remediator")
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await kube.aclose()


async def test_a_leader_cut_off_from_the_api_steps_down_before_its_lease_expires(
    cluster: Cluster,
) -> None:
    kube = KubeApi(cluster.connection, Settings())
    changes: list[bool] = []
    a = LeaderElector(kube, namespace=LEASE_NAMESPACE, name="mcp-remediator", identity="a",
                      duration=3.0, on_change=changes.append)  # fmt: skip
    task = asyncio.create_task(a.run())
    await cluster.wait_for(lambda: a.leader, 5, "a leads")
    path = f"/apis/{LEASE_API}/namespaces/{LEASE_NAMESPACE}/{LEASES}/mcp-remediator"
    cluster.api[kmock.path(path)] << 503  # every renewal fails from now on
    loop = asyncio.get_running_loop()
    cut = loop.time()
    await cluster.wait_for(lambda: not a.leader, 5, "a steps down")
    # Two thirds of the duration after its last renewal began: before anyone may take over
    # (the others wait out the whole duration from their last sight of a change).
    assert loop.time() - cut < 3.0
    # The listener (the executor, which cancels its runs) hears of it at the deadline too.
    await cluster.wait_for(lambda: changes == [True, False], 5, "the listener told")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await kube.aclose()


async def test_without_the_lease_role_the_operator_stops_at_start_up_with_why(
    cluster: Cluster,
) -> None:
    admin = KubeApi(cluster.admin_connection, Settings())
    await admin.delete("rbac.authorization.k8s.io/v1", "rolebindings", LEASE_NAMESPACE,
                       "mcp-remediator-leader-election")  # fmt: skip
    await admin.aclose()
    operator = OperatorUnderTest(Settings(**FAST), cluster.connection, receiver=False)
    operator.start()
    await cluster.wait_for(lambda: not operator.thread.is_alive(), 20, "the operator to stop")
    assert isinstance(operator.error, LeaseUnavailable), operator.error
    message = str(operator.error)
    assert "not allowed" in message and "mcp-remediator-leader-election" in message


def test_peering_is_refused_with_what_replaced_it() -> None:
    with pytest.raises(ValueError, match="MCP_LEASE_NAME"):
        Settings.from_env({"MCP_PEERING": "mcp-remediator"})


# -- restart cost -------------------------------------------------------------------------


async def test_a_restart_makes_no_request_per_finished_record(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    names = [f"old-{i:04d}" for i in range(1000)]
    for name in names:
        cluster.seed(finished_record(name))
    cluster.seed(deployment("api"))

    operator = await operator_factory()
    await cluster.wait_for(lambda: holder(cluster) == operator.identity, 10, "leadership")
    cluster.seed(remediation("new-run", restart("api")))
    done = await cluster.wait_phase("mcp", "new-run", DONE)
    assert done["status"]["phase"] == "Succeeded", done["status"]

    seen = set(names)
    per_record = [e for e in own_requests(cluster) if e.name in seen]
    assert per_record == []
    verbs = collections.Counter(
        e.verb for e in own_requests(cluster) if e.resource == REMEDIATIONS and not e.name
    )
    # One list, in pages of PAGE, and one watch: nothing else of the kind.
    assert verbs == {"list": math.ceil(len(names) / PAGE), "watch": 1}, verbs
    assert all(cluster.get(API_VERSION, REMEDIATIONS, "mcp", n) for n in names[:5])


async def test_a_new_run_costs_four_requests_to_its_first_action_its_events_after(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    cluster.seed(deployment("api"))
    cluster.seed(remediation("warm", restart("api")))  # the account check is cached after it
    await operator_factory()
    await cluster.wait_phase("mcp", "warm", DONE)
    await asyncio.sleep(0.5)
    cluster.seed(deployment("web"))
    before = len(cluster.api.audit)
    cluster.api.apply([remediation("measured", restart("web"))])
    await cluster.wait_for(lambda: restarts(cluster, "web") == 1, 10, "the restart")
    upto = [e for e in cluster.api.audit[before:] if e.user != "system:admin"]
    first_action = next(i for i, e in enumerate(upto) if e.verb == "patch" and e.name == "web")
    lease = [e for e in upto[: first_action + 1] if e.resource == LEASES]
    counted = [e for e in upto[: first_action + 1] if e.resource != LEASES]
    # + the create (by the test here, by the receiver in production): 4 in all, the issue
    # asked for at most 6. Its start (with the restart's intent) and, beside it, the read
    # (kubectl's paused check); then the restart; the Started Event after it.
    sent = [(e.verb, e.resource, e.subresource) for e in counted]
    assert sorted(sent[:2]) == [("get", "deployments", ""), ("patch", REMEDIATIONS, "status")]
    assert sent[2:] == [("patch", "deployments", "")]
    assert len(lease) <= 2  # renewals happen on their own clock
    await cluster.wait_phase("mcp", "measured", DONE)
    events = sorted(
        (e for e in cluster.api.list_objects("v1", "events", "mcp")
         if e["involvedObject"]["name"] == "measured"),
        key=lambda e: int(e["metadata"]["resourceVersion"]),
    )  # fmt: skip
    assert [e["reason"] for e in events] == ["Started", "StepSucceeded", "Succeeded"]


async def test_runs_that_start_together_read_their_service_account_once(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    names = [f"app-{i}" for i in range(8)]
    for name in names:
        cluster.seed(deployment(name))
    await operator_factory()
    cluster.api.apply([remediation(f"run-{name}", restart(name)) for name in names])
    for name in names:
        done = await cluster.wait_phase("mcp", f"run-{name}", DONE)
        assert done["status"]["phase"] == "Succeeded", done["status"]

    reads = [e for e in own_requests(cluster) if e.resource == "serviceaccounts"]
    assert len(reads) == 1, [(e.verb, e.name) for e in reads]


# -- two replicas ---------------------------------------------------------------------------


async def test_two_replicas_run_each_remediation_once_and_the_survivor_takes_over(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    cluster.api.add_reactor("apps/v1", "deployments", complete_rollouts)
    first = await operator_factory(lease_duration_seconds=5.0)
    await cluster.wait_for(lambda: holder(cluster) == first.identity, 10, "first leads")
    second = await operator_factory(lease_duration_seconds=5.0)
    names = [f"api-{i:02d}" for i in range(20)]
    for name in names:
        cluster.seed(deployment(name))
    for name in names[:10]:
        cluster.api.apply([remediation(f"run-{name}", restart(name))])
    await cluster.wait_for(
        lambda: sum(restarts(cluster, n) for n in names[:10]) >= 5, 20, "some restarts"
    )
    await first.stop()  # a rolling update: the Lease is released, the second takes over
    for name in names[10:]:
        cluster.api.apply([remediation(f"run-{name}", restart(name))])
    for name in names:
        done = await cluster.wait_phase("mcp", f"run-{name}", DONE, timeout=30)
        assert done["status"]["phase"] == "Succeeded", (name, done["status"])
    assert holder(cluster) == second.identity
    assert {n: restarts(cluster, n) for n in names} == dict.fromkeys(names, 1)
    executors = collections.Counter(
        cluster.remediation("mcp", f"run-{n}")["status"]["executor"] for n in names
    )
    assert set(executors) <= {first.identity, second.identity}
    assert executors[second.identity] >= 10


# -- escalation and expiry ----------------------------------------------------------------


async def test_an_escalation_whose_create_fails_is_created_later_exactly_once(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    cluster.api.apply([
        {"apiVersion": API_VERSION, "kind": "McpRunbook",
         "metadata": {"name": "broken", "namespace": "mcp"},
         "spec": {"triggers": [{"alertname": "X"}], "steps": restart("missing"),
                  "onFailure": {"escalateTo": "page"}}},
        {"apiVersion": API_VERSION, "kind": "McpRunbook",
         "metadata": {"name": "page", "namespace": "mcp"},
         "spec": {"triggers": [{"alertname": "Y"}], "steps": restart("api")}},
    ])  # fmt: skip
    cluster.seed(deployment("api"))
    escalation = records.escalation_name("page", "run-broken")
    # The first two creates of a remediation (the escalation's) answer 503.
    path = f"/apis/{API_VERSION}/namespaces/mcp/{REMEDIATIONS}"
    cluster.api[kmock.method.POST, kmock.path(path)][:2] << 503
    await operator_factory()
    cluster.api.apply([{"apiVersion": API_VERSION, "kind": "McpRemediation",
                        "metadata": {"name": "run-broken", "namespace": "mcp"},
                        "spec": {"runbookRef": {"name": "broken"}}}])  # fmt: skip
    failed = await cluster.wait_phase("mcp", "run-broken", DONE)
    assert failed["status"]["phase"] == "Failed"
    await cluster.wait_for(
        lambda: (cluster.remediation("mcp", "run-broken")["status"].get("escalatedTo") or {}).get(
            "created"
        ),
        30,
        "the escalation to be created",
    )
    escalated = [
        r for r in cluster.api.list_objects(API_VERSION, REMEDIATIONS, "mcp")
        if r["metadata"].get("labels", {}).get("mcp.dese.ai/escalated-from") == "run-broken"
    ]  # fmt: skip
    assert [r["metadata"]["name"] for r in escalated] == [escalation]


async def test_expired_records_go_but_an_unresolved_alerts_record_stays(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    alert_name = records.remediation_name("rb", "fp1", "2026-11-30T10:00:00Z")
    resolved_name = records.remediation_name("rb", "fp2", "2026-11-30T10:00:00Z")
    for name, fingerprint, resolved in ((alert_name, "fp1", None), (resolved_name, "fp2", True)):
        body = finished_record(name)
        body["metadata"]["labels"] = {LABEL_RUNBOOK: "rb", LABEL_GROUP: "g"}
        body["spec"] = {"runbookRef": {"name": "rb"}, "ttlSecondsAfterFinished": 1,
                        "alert": {"fingerprint": fingerprint, "status": "firing",
                                  "startsAt": "2026-11-30T10:00:00Z", "labels": {}}}  # fmt: skip
        if resolved:
            body["status"]["alertResolvedAt"] = body["status"]["finishedAt"]
        cluster.seed(body)
    cluster.seed(finished_record("by-hand", ttlSecondsAfterFinished=None))
    by_hand = cluster.remediation("mcp", "by-hand")
    by_hand["spec"]["ttlSecondsAfterFinished"] = 1
    cluster.api.apply([by_hand])

    await operator_factory()
    await cluster.wait_for(
        lambda: (
            cluster.get(API_VERSION, REMEDIATIONS, "mcp", resolved_name) is None
            and cluster.get(API_VERSION, REMEDIATIONS, "mcp", "by-hand") is None
        ),
        20,
        "the expired records to go",
    )
    await asyncio.sleep(1.5)
    assert cluster.get(API_VERSION, REMEDIATIONS, "mcp", alert_name) is not None
    deletes = [e for e in own_requests(cluster) if e.verb == "delete"]
    assert sorted(e.name for e in deletes) == sorted([resolved_name, "by-hand"])


async def test_a_resent_alert_stays_a_duplicate_after_its_ttl_and_a_restart(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    cluster.seed(deployment("x"))
    cluster.api.apply([receiver_runbook("rb")])
    port = free_port()
    options = {"receiver": True, "receiver_port": port, "receiver_host": "127.0.0.1",
               "receiver_token": TOKEN, "remediation_ttl_seconds": 1}  # fmt: skip

    async def post(body: dict[str, Any]) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as c:
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await c.get("/readyz")).status_code == 200:
                        break
                assert asyncio.get_running_loop().time() < deadline, "receiver not ready"
                await asyncio.sleep(0.05)
            answer = await c.post("/alerts", json=body)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    first = await operator_factory(**options)
    assert (await post(payload(alert())))["created"] == 1
    name = records.remediation_name("rb", alert()["fingerprint"], alert()["startsAt"])
    assert (await cluster.wait_phase("mcp", name, DONE))["status"]["phase"] == "Succeeded"
    await asyncio.sleep(2.5)  # past its TTL: kept, as its alert has not resolved
    assert cluster.get(API_VERSION, REMEDIATIONS, "mcp", name) is not None
    await first.stop()

    await operator_factory(**options)  # a restart: nothing in memory
    assert (await post(payload(alert())))["duplicates"] == 1
    assert restarts(cluster, "x") == 1
    resolved = {**alert(), "status": "resolved", "endsAt": "2026-11-28T02:00:00Z"}
    assert (await post(payload(resolved, status="resolved")))["resolved"] == 1
    await cluster.wait_for(
        lambda: cluster.get(API_VERSION, REMEDIATIONS, "mcp", name) is None, 20, "expiry"
    )


async def test_records_of_an_earlier_version_lose_its_finalizer_when_they_go(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    """Versions before the executor kept a Kopf finalizer on every record: the sweeper
    removes it before it deletes, and records already being deleted are let go at once."""
    expired = finished_record("expired")
    expired["spec"]["ttlSecondsAfterFinished"] = 1
    expired["metadata"]["finalizers"] = ["mcp.dese.ai/finalizer", "example.com/keep"]
    cluster.seed(expired)
    stuck = finished_record("stuck")
    stuck["metadata"]["finalizers"] = ["mcp.dese.ai/finalizer"]
    cluster.seed(stuck)
    admin = KubeApi(cluster.admin_connection, Settings())
    await admin.delete(API_VERSION, REMEDIATIONS, "mcp", "stuck")  # held by the finalizer
    await admin.aclose()
    assert cluster.remediation("mcp", "stuck")["metadata"]["deletionTimestamp"]

    await operator_factory()

    await cluster.wait_for(
        lambda: cluster.get(API_VERSION, REMEDIATIONS, "mcp", "stuck") is None, 20, "stuck"
    )
    await cluster.wait_for(
        lambda: (
            (cluster.get(API_VERSION, REMEDIATIONS, "mcp", "expired") or {})
            .get("metadata", {})
            .get("finalizers")
            == ["example.com/keep"]
        ),
        20,
        "the earlier finalizer removed, another kept",
    )
    await cluster.wait_for(  # deleted: the other finalizer holds it
        lambda: cluster.remediation("mcp", "expired")["metadata"].get("deletionTimestamp"),
        20,
        "the deletion",
    )


async def test_an_api_without_leases_stops_the_operator_at_start_up_with_why(
    cluster: Cluster,
) -> None:
    cluster.api[kmock.path(f"/apis/{LEASE_API}")] << 404
    operator = OperatorUnderTest(Settings(**FAST), cluster.connection, receiver=False)
    operator.start()
    await cluster.wait_for(lambda: not operator.thread.is_alive(), 20, "the operator to stop")
    assert isinstance(operator.error, LeaseUnavailable), operator.error
    assert "cannot find the API" in str(operator.error)


async def test_a_run_left_with_a_failed_step_ends_failed_when_taken_over(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    """Found by the chaos test: an operator killed between recording a step's failure and
    ending the run left it Running; the next one must end it Failed, not run on."""
    steps = [restart("a")[0], {**restart("b")[0], "name": "second"}]
    body = remediation("left", steps)
    body["status"] = {
        "phase": "Running", "reason": "Started", "executor": "gone-replica",
        "plan": {"namespace": "mcp", "serviceAccountName": "mcp-remediator-runner",
                 "steps": steps},
        "steps": [
            {"name": "restart", "action": "rolloutRestart", "phase": "Failed",
             "reason": "NotFound", "message": "no Deployment a", "attempts": 1},
            {"name": "second", "action": "rolloutRestart", "phase": "Pending"},
        ],
    }  # fmt: skip
    cluster.seed(body)
    cluster.seed(deployment("b"))
    await operator_factory()
    done = await cluster.wait_phase("mcp", "left", DONE)
    assert done["status"]["phase"] == "Failed", done["status"]
    assert done["status"]["reason"] == "NotFound"
    assert done["status"]["steps"][1]["phase"] == "Skipped"
    assert restarts(cluster, "b") == 0
