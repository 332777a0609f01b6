"""The alert receiver against the emulated API: dedup, guardrails, resolved alerts, storms,
every bad-input class, and the answers Alertmanager's retry logic depends on."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import kmock
import pytest

from fixtures.cluster import CRDS, Cluster, OperatorFactory, deployment
from fixtures.daemons import free_port
from mcp_remediator import records
from mcp_remediator.alerts.receiver import Receiver, ReceiverConfigError
from mcp_remediator.kube.client import ConnectionConfig, KubeApi
from mcp_remediator.models import (
    ANNOTATION_SKIP_MESSAGE,
    ANNOTATION_SKIP_REASON,
    API_VERSION,
    LABEL_ALERTNAME,
    LABEL_FINGERPRINT,
    LABEL_GROUP,
    LABEL_RUNBOOK,
    REMEDIATIONS,
    RUNBOOKS,
)
from mcp_remediator.runtime import run_operator
from mcp_remediator.settings import Settings
from mcp_remediator.testing.emulator import ApiServerEmulator, complete_rollouts

TOKEN = "s3cret-token"
STARTS = "2026-11-28T01:26:33.953Z"
REMEDIATIONS_PATH = f"/apis/{API_VERSION}/namespaces/mcp/{REMEDIATIONS}"
# Guardrails that let every occurrence run, for tests about something else.
LOOSE = {"cooldownSeconds": 0, "maxConcurrent": 100, "maxPerHour": 1000}


def runbook(
    name: str = "redis-cache",
    alertname: str = "RedisLowCacheHitRatio",
    matchers: list[str] | None = None,
    namespace: str = "mcp",
    steps: list[dict[str, Any]] | None = None,
    suspend: bool = False,
    **guardrails: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "McpRunbook",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "suspend": suspend,
            "triggers": [{"alertname": alertname, "matchers": matchers or []}],
            "steps": steps
            or [{"name": "restart", "action": "rolloutRestart", "params": {"name": "x"}}],
            "guardrails": guardrails,
        },
    }


def alert(
    fingerprint: str = "347dfda9cb670ac3",
    status: str = "firing",
    starts_at: str = STARTS,
    **labels: str,
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "RedisLowCacheHitRatio", "severity": "warning", **labels},
        "annotations": {"summary": "hit ratio below 80%"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-28T02:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="RedisLowCacheHitRatio"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "mcp-remediator",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "alerts": list(alerts),
        **extra,
    }


def remediations(cluster: Cluster) -> list[dict[str, Any]]:
    return cluster.api.list_objects(API_VERSION, REMEDIATIONS)


def creates(cluster: Cluster) -> int:
    return len([r for r in cluster.writes(REMEDIATIONS) if r.method.value == "POST"])


ReceiverFactory = Callable[..., Awaitable[Receiver]]


@pytest.fixture
async def receiver_factory(cluster: Cluster) -> AsyncIterator[ReceiverFactory]:
    made: list[tuple[Receiver, KubeApi]] = []

    async def make(
        connection: ConnectionConfig | None = None,
        clock: Callable[[], datetime.datetime] | None = None,
        wait_ready: bool = True,
        **overrides: Any,
    ) -> Receiver:
        settings = Settings(**{"receiver_token": TOKEN, "receiver_host": "127.0.0.1", **overrides})
        kube = KubeApi(connection or cluster.connection, settings)
        receiver = Receiver(settings, kube, clock=clock)
        made.append((receiver, kube))
        await receiver.start(port=0)
        if wait_ready:
            await cluster.wait_for(lambda: receiver.ready, what="a warm runbook cache")
        return receiver

    yield make
    for receiver, kube in made:
        await receiver.stop()
        await kube.aclose()


@pytest.fixture
async def receiver(cluster: Cluster, receiver_factory: ReceiverFactory) -> Receiver:
    cluster.seed(runbook())
    return await receiver_factory()


async def post(
    receiver: Receiver,
    body: Any,
    *,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    # Generous: a storm POST on a loaded 2-core machine can take seconds; no test asserts time.
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{receiver.port}", timeout=60
    ) as client:
        if isinstance(body, bytes):
            return await client.post("/alerts", content=body, headers=all_headers)
        return await client.post("/alerts", json=body, headers=all_headers)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    """Poll an async ``check`` until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def get(receiver: Receiver, path: str) -> httpx.Response:
    # Generous: a storm POST on a loaded 2-core machine can take seconds; no test asserts time.
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{receiver.port}", timeout=60
    ) as client:
        return await client.get(path)


# -- one alert, one record --------------------------------------------------------------


async def test_firing_alert_creates_one_labelled_remediation(
    cluster: Cluster, receiver: Receiver
) -> None:
    response = await post(receiver, payload(alert()))

    assert response.status_code == 200, response.text
    summary = response.json()
    name = records.remediation_name("redis-cache", "347dfda9cb670ac3", STARTS)
    assert summary["created"] == 1 and summary["remediations"] == [f"mcp/{name}"]
    [rem] = remediations(cluster)
    assert rem["metadata"]["name"] == name
    assert re.fullmatch(r"redis-cache-[0-9a-f]{10}", name)
    labels = rem["metadata"]["labels"]
    assert labels[LABEL_RUNBOOK] == "redis-cache"
    assert labels[LABEL_ALERTNAME] == "RedisLowCacheHitRatio"
    assert labels[LABEL_FINGERPRINT] == "347dfda9cb670ac3"
    assert labels[LABEL_GROUP] == records.group_key(["alertname"], alert()["labels"])
    assert ANNOTATION_SKIP_REASON not in rem["metadata"].get("annotations", {})
    spec = rem["spec"]
    assert spec["runbookRef"] == {"name": "redis-cache"}
    assert spec["alert"]["fingerprint"] == "347dfda9cb670ac3"
    assert spec["alert"]["startsAt"] == STARTS
    assert spec["alert"]["labels"]["severity"] == "warning"
    assert spec["alert"]["annotations"] == {"summary": "hit ratio below 80%"}
    assert spec["alert"]["groupKey"] == '{}:{alertname="RedisLowCacheHitRatio"}'


async def test_resends_are_duplicates_without_another_write(
    cluster: Cluster, receiver: Receiver
) -> None:
    first = await post(receiver, payload(alert()))
    again = [await post(receiver, payload(alert())) for _ in range(3)]

    assert first.json()["created"] == 1
    assert [r.json()["duplicates"] for r in again] == [1, 1, 1]
    assert [r.json()["created"] for r in again] == [0, 0, 0]
    assert len(remediations(cluster)) == 1
    assert creates(cluster) == 1


async def test_ha_pair_posting_at_once_gives_one_remediation(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    cluster.seed(runbook())
    replicas = [await receiver_factory(), await receiver_factory()]
    body = payload(*(alert(fingerprint=f"fp{i:02d}", instance=f"i{i}") for i in range(5)))

    responses = await asyncio.gather(*(post(r, body) for r in replicas for _ in range(3)))

    assert {r.status_code for r in responses} == {200}
    created = sum(r.json()["created"] for r in responses)
    duplicates = sum(r.json()["duplicates"] for r in responses)
    skipped = sum(r.json()["skipped"] for r in responses)
    assert created + skipped == 5  # one record per occurrence, across both replicas
    assert created + skipped + duplicates == 6 * 5
    assert len(remediations(cluster)) == 5


async def test_a_restarted_receiver_finds_the_record_in_the_cluster(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    cluster.seed(runbook())
    before = await receiver_factory()
    assert (await post(before, payload(alert()))).json()["created"] == 1
    await before.stop()

    after = await receiver_factory()
    response = await post(after, payload(alert()))

    assert response.json()["duplicates"] == 1
    assert creates(cluster) == 1  # found by the group listing, not by a failed create


async def test_a_new_occurrence_of_the_same_alert_is_a_new_record(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    cluster.seed(runbook(**LOOSE))
    receiver = await receiver_factory()
    await post(receiver, payload(alert()))
    response = await post(receiver, payload(alert(starts_at="2026-11-28T03:00:00Z")))

    assert response.json()["created"] == 1
    assert len(remediations(cluster)) == 2


# -- matching ---------------------------------------------------------------------------


async def test_an_alert_starts_every_matching_runbook_and_matchers_filter(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    cluster.seed(runbook("inspect", matchers=['severity=~"warning|critical"'], **LOOSE))
    cluster.seed(runbook("purge", matchers=["env!=dev"], **LOOSE))
    cluster.seed(runbook("critical-only", matchers=['severity="critical"'], **LOOSE))
    cluster.seed(runbook("elsewhere", namespace="other", **LOOSE))
    receiver = await receiver_factory()

    prod = await post(receiver, payload(alert(fingerprint="a1", env="prod", namespace="other")))
    dev = await post(receiver, payload(alert(fingerprint="a2", env="dev")))
    other = await post(receiver, payload(alert(fingerprint="a3", alertname="Unrelated")))

    assert prod.json()["created"] == 3  # inspect, purge, and the runbook in "other"
    assert dev.json()["created"] == 1  # inspect; "other" takes only its own namespace's
    assert other.json()["unmatched"] == 1 and other.json()["created"] == 0
    by_runbook = sorted(
        (r["metadata"]["namespace"], r["metadata"]["labels"][LABEL_RUNBOOK])
        for r in remediations(cluster)
    )
    assert by_runbook == [
        ("mcp", "inspect"),
        ("mcp", "inspect"),
        ("mcp", "purge"),
        ("other", "elsewhere"),
    ]


async def test_a_tenant_runbook_takes_only_alerts_of_its_own_namespace(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    # The issue's case: a team-a runbook copying the platform runbook's trigger.
    cluster.seed(runbook("redis-down", alertname="RedisDown", **LOOSE))
    cluster.seed(runbook("redis-down", alertname="RedisDown", namespace="team-a", **LOOSE))
    receiver = await receiver_factory()

    platform = await post(receiver, payload(alert("p1", alertname="RedisDown", namespace="mcp")))
    tenant = await post(receiver, payload(alert("t1", alertname="RedisDown", namespace="team-a")))

    assert platform.json()["created"] == 1  # the mcp runbook only
    assert platform.json()["remediations"] == [
        f"mcp/{records.remediation_name('redis-down', 'p1', STARTS)}"
    ]
    assert tenant.json()["created"] == 2  # a trusted runbook takes any namespace's alerts
    assert sorted(tenant.json()["remediations"]) == [
        f"mcp/{records.remediation_name('redis-down', 't1', STARTS)}",
        f"team-a/{records.remediation_name('redis-down', 't1', STARTS)}",
    ]
    team_a = [r for r in remediations(cluster) if r["metadata"]["namespace"] == "team-a"]
    assert [r["spec"]["alert"]["fingerprint"] for r in team_a] == ["t1"]


async def test_an_alert_only_a_foreign_tenant_runbook_triggers_on_is_unmatched(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    cluster.seed(runbook("redis-down", alertname="RedisDown", namespace="team-a", suspend=True))
    receiver = await receiver_factory()
    firing = alert("p1", alertname="RedisDown", namespace="mcp")

    fired = await post(receiver, payload(firing))
    resolved = await post(receiver, payload({**firing, "status": "resolved"}, status="resolved"))
    await receiver.ingestor.flush_counters()

    assert fired.json()["unmatched"] == 1 and fired.json()["skipped"] == 0
    assert resolved.json()["unmatched"] == 1 and resolved.json()["resolvedWithoutRecord"] == 0
    assert remediations(cluster) == []  # not even a Skipped record
    assert cluster.writes() == []  # nor the runbook's counters


async def test_invalid_runbooks_are_not_matched(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    # The action's enum refuses it today: stored under an older CRD.
    cluster.seed_stale(runbook("unknown-action", steps=[{"name": "x", "action": "nukeIt"}]))
    cluster.seed(runbook("bad-matcher", matchers=['severity=~"(oops"']))
    marked = runbook("marked-invalid")
    marked["status"] = {
        "conditions": [
            {"type": "Valid", "status": "False", "reason": "Refused", "observedGeneration": 1}
        ]
    }
    cluster.seed(marked)
    receiver = await receiver_factory()

    response = await post(receiver, payload(alert()))

    assert response.json()["unmatched"] == 1
    assert remediations(cluster) == []


async def test_cache_follows_runbook_events_and_ignores_stale_ones(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    receiver = await receiver_factory()
    assert (await post(receiver, payload(alert(fingerprint="a")))).json()["unmatched"] == 1

    seeded = cluster.seed(runbook())
    receiver.runbook_event("ADDED", seeded)
    assert (await post(receiver, payload(alert(fingerprint="b")))).json()["created"] == 1

    receiver.runbook_event(
        "DELETED",
        {
            **seeded,
            "metadata": {
                **seeded["metadata"],
                "resourceVersion": str(int(seeded["metadata"]["resourceVersion"]) + 5),
            },
        },
    )
    receiver.runbook_event(None, seeded)  # an older state arriving late changes nothing
    assert (await post(receiver, payload(alert(fingerprint="c")))).json()["unmatched"] == 1


# -- guardrails -------------------------------------------------------------------------


def skip_state(rem: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    return (
        rem.get("status", {}).get("phase"),
        rem.get("status", {}).get("reason"),
        rem["metadata"].get("annotations", {}).get(ANNOTATION_SKIP_REASON),
    )


async def test_a_second_occurrence_while_one_is_unfinished_is_recorded_as_skipped(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    cluster.seed(runbook(groupBy=["alertname", "instance"]))
    receiver = await receiver_factory()

    first = await post(receiver, payload(alert(fingerprint="a", instance="r1")))
    second = await post(receiver, payload(alert(fingerprint="b", instance="r1")))
    other_group = await post(receiver, payload(alert(fingerprint="c", instance="r2")))

    assert first.json()["created"] == 1
    assert second.json()["skipped"] == 1
    assert other_group.json()["created"] == 1
    name = records.remediation_name("redis-cache", "b", STARTS)
    skipped = cluster.remediation("mcp", name)
    assert skip_state(skipped) == ("Skipped", "ConcurrencyLimit", "ConcurrencyLimit")
    message = skipped["metadata"]["annotations"][ANNOTATION_SKIP_MESSAGE]
    assert "maxConcurrent=1" in message and skipped["status"]["message"] == message
    assert skipped["status"]["finishedAt"]
    again = await post(receiver, payload(alert(fingerprint="b", instance="r1")))
    assert again.json()["duplicates"] == 1  # a skipped occurrence is not reconsidered


async def test_cooldown_after_a_finished_run_of_the_group(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    cluster.seed(runbook(cooldownSeconds=600))
    receiver = await receiver_factory()
    await post(receiver, payload(alert(fingerprint="a")))
    [done] = remediations(cluster)
    finished = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    await cluster.api.patch_object(
        API_VERSION,
        REMEDIATIONS,
        "mcp",
        done["metadata"]["name"],
        {"status": {"phase": "Succeeded", "startedAt": finished, "finishedAt": finished}},
        subresource="status",
    )

    response = await post(receiver, payload(alert(fingerprint="b")))

    assert response.json()["skipped"] == 1
    rem = cluster.remediation("mcp", records.remediation_name("redis-cache", "b", STARTS))
    assert skip_state(rem)[:2] == ("Skipped", "Cooldown")
    assert "cooldown of 600s" in rem["status"]["message"]


async def test_max_per_hour_counts_runs_of_the_group(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    cluster.seed(runbook(cooldownSeconds=0, maxConcurrent=10, maxPerHour=2))
    receiver = await receiver_factory()

    response = await post(receiver, payload(*(alert(fingerprint=f"f{i}") for i in range(4))))

    assert (response.json()["created"], response.json()["skipped"]) == (2, 2)
    reasons = sorted(str(skip_state(r)[1]) for r in remediations(cluster) if skip_state(r)[1])
    assert reasons == ["RateLimited", "RateLimited"]


async def test_suspended_runbook_records_skipped_suspended(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    cluster.seed(runbook(suspend=True))
    receiver = await receiver_factory()

    response = await post(receiver, payload(alert()))

    assert response.json()["skipped"] == 1
    [rem] = remediations(cluster)
    assert skip_state(rem) == ("Skipped", "Suspended", "Suspended")


async def test_skip_records_are_bounded_per_minute_then_counted_and_reported_once(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    cluster.seed(runbook())
    fixed = datetime.datetime.now(datetime.UTC).replace(second=30)
    receiver = await receiver_factory(clock=lambda: fixed, receiver_skip_records_per_minute=2)

    response = await post(receiver, payload(*(alert(fingerprint=f"f{i}") for i in range(6))))

    summary = response.json()
    assert (summary["created"], summary["skipped"], summary["skippedUnrecorded"]) == (1, 2, 3)
    assert len(remediations(cluster)) == 3
    events = [
        e
        for e in cluster.api.list_objects("v1", "events", "mcp")
        if e["reason"] == "SkipRecordsSuppressed"
    ]
    assert len(events) == 1
    assert events[0]["involvedObject"]["name"] == "redis-cache"
    assert events[0]["involvedObject"]["kind"] == "McpRunbook"
    metrics = (await get(receiver, "/metrics")).text
    assert (
        'mcp_receiver_unrecorded_skips_total{namespace="mcp",reason="ConcurrencyLimit",'
        'runbook="redis-cache"} 3.0' in metrics
    )


async def test_runbook_counters_and_last_triggered(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    cluster.seed(runbook())
    receiver = await receiver_factory()
    await post(receiver, payload(*(alert(fingerprint=f"f{i}") for i in range(3))))

    await receiver.ingestor.flush_counters()

    status = cluster.get(API_VERSION, RUNBOOKS, "mcp", "redis-cache")["status"]
    assert status["counters"]["triggered"] == 3
    assert status["counters"]["skipped"] == 2
    assert status["lastTriggeredAt"]


# -- resolved alerts --------------------------------------------------------------------


async def test_resolved_alert_cancels_a_remediation_that_has_not_started(
    cluster: Cluster, receiver: Receiver
) -> None:
    await post(receiver, payload(alert()))

    response = await post(receiver, payload(alert(status="resolved"), status="resolved"))

    assert response.json()["cancelled"] == 1
    [rem] = remediations(cluster)
    assert rem["status"]["phase"] == "Cancelled"
    assert rem["status"]["reason"] == "AlertResolved"
    assert rem["status"]["alertResolvedAt"] and rem["status"]["finishedAt"]
    again = await post(receiver, payload(alert(status="resolved"), status="resolved"))
    assert again.json()["resolved"] == 1
    assert cluster.remediation("mcp", rem["metadata"]["name"])["status"] == rem["status"]


@pytest.mark.parametrize("phase", ["Running", "Succeeded", "Failed"])
async def test_resolved_alert_only_marks_a_started_or_finished_run(
    cluster: Cluster, receiver: Receiver, phase: str
) -> None:
    await post(receiver, payload(alert()))
    [rem] = remediations(cluster)
    name = rem["metadata"]["name"]
    await cluster.api.patch_object(
        API_VERSION, REMEDIATIONS, "mcp", name, {"status": {"phase": phase}}, subresource="status"
    )

    response = await post(receiver, payload(alert(status="resolved"), status="resolved"))

    assert response.json()["resolved"] == 1
    status = cluster.remediation("mcp", name)["status"]
    assert status["phase"] == phase
    assert status["alertResolvedAt"]


async def test_resolved_alert_races_with_the_engine_starting_the_run(
    cluster: Cluster, receiver: Receiver
) -> None:
    await post(receiver, payload(alert()))
    [rem] = remediations(cluster)
    name = rem["metadata"]["name"]
    kube = receiver.ingestor.kube
    real_get = kube.get_or_none
    calls = 0

    async def get_then_engine_starts(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        body = await real_get(*args)
        if calls == 1:  # the engine moves Pending → Running right after our read
            await cluster.api.patch_object(
                API_VERSION,
                REMEDIATIONS,
                "mcp",
                name,
                {"status": {"phase": "Running"}},
                subresource="status",
            )
        return body

    kube.get_or_none = get_then_engine_starts  # type: ignore[method-assign]
    response = await post(receiver, payload(alert(status="resolved"), status="resolved"))

    assert response.json()["resolved"] == 1 and response.json()["cancelled"] == 0
    assert calls == 2  # the stale cancel answered 409, the second read saw Running
    status = cluster.remediation("mcp", name)["status"]
    assert status["phase"] == "Running" and status["alertResolvedAt"]


async def test_resolved_alert_without_a_record_is_accounted_for(
    cluster: Cluster, receiver: Receiver
) -> None:
    response = await post(receiver, payload(alert(status="resolved"), status="resolved"))

    assert response.json()["resolvedWithoutRecord"] == 1
    assert remediations(cluster) == []


# -- storms -----------------------------------------------------------------------------


async def test_storm_of_duplicates_gives_one_record_per_occurrence(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    cluster.seed(runbook(groupBy=["alertname", "instance"]))
    receiver = await receiver_factory()
    occurrences = [alert(fingerprint=f"fp{i:02d}", instance=f"redis-{i}") for i in range(10)]
    batches = [payload(*(occurrences[(b + i) % 10] for i in range(50))) for b in range(20)]

    responses = await asyncio.gather(*(post(receiver, body) for body in batches))

    assert {r.status_code for r in responses} == {200}
    total = {key: sum(r.json()[key] for r in responses) for key in ("created", "duplicates")}
    assert total == {"created": 10, "duplicates": 990}
    assert sum(r.json()["alerts"] for r in responses) == 1000
    assert len(remediations(cluster)) == 10
    assert creates(cluster) == 10


async def test_storm_within_one_group_admits_one_run_and_skips_the_rest(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    cluster.seed(runbook())
    receiver = await receiver_factory()
    body = payload(*(alert(fingerprint=f"fp{i:02d}", instance=f"redis-{i}") for i in range(10)))

    responses = await asyncio.gather(*(post(receiver, body) for _ in range(5)))

    created = sum(r.json()["created"] for r in responses)
    skipped = sum(r.json()["skipped"] for r in responses)
    assert (created, skipped) == (1, 9)
    phases = sorted(str(r.get("status", {}).get("phase")) for r in remediations(cluster))
    assert phases == ["None"] + ["Skipped"] * 9


# -- bad input: the right code, nothing written ------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body is not JSON"),
        (b"\xff\xfe", "body is not JSON"),
        (b"[]", "not an Alertmanager webhook payload (version 4): it is a JSON array"),
        (b'{"alerts": []}', "it has no 'version' field"),
        (b'{"version": "3", "alerts": []}', "unsupported webhook payload version '3'"),
        (b'{"version": 4, "alerts": []}', "unsupported webhook payload version 4"),
        (b'{"version": "4"}', "it has no 'alerts' field"),
        (b'{"version": "4", "alerts": {}}', "alerts: Input should be a valid list"),
    ],
)
async def test_malformed_bodies_answer_400(
    cluster: Cluster, receiver: Receiver, body: bytes, message: str
) -> None:
    response = await post(receiver, body, headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert cluster.writes() == []


async def test_a_custom_payload_answers_400_saying_to_remove_it(
    cluster: Cluster, receiver: Receiver
) -> None:
    """What Alertmanager 0.32+ posts for a webhook_config with a `payload` template: JSON of
    the template's shape, no version, no alerts. No retry can read it (a 4xx: dropped)."""
    custom = {"title": "[FIRING:1] RedisLowCacheHitRatio", "text": "hit ratio below 80%"}

    response = await post(receiver, custom)

    assert response.status_code == 400
    error = response.json()["error"]
    assert "not an Alertmanager webhook payload" in error
    assert "webhook_config sets `payload`" in error and "remove it" in error
    assert cluster.writes() == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fingerprint": None}, "alerts.1.fingerprint"),
        ({"fingerprint": ""}, "alerts.1.fingerprint"),
        ({"startsAt": None}, "alerts.1.startsAt"),
        ({"startsAt": "yesterday"}, "not an RFC 3339 time"),
        ({"status": "pending"}, "alerts.1.status"),
        ({"labels": None}, "alerts.1.labels"),
        ({"labels": {"alertname": 3}}, "alerts.1.labels.alertname"),
    ],
)
async def test_alerts_missing_fields_answer_400_and_nothing_of_the_batch_is_created(
    cluster: Cluster, receiver: Receiver, change: dict[str, Any], message: str
) -> None:
    broken = alert(fingerprint="broken")
    for key, value in change.items():
        if value is None:
            del broken[key]
        else:
            broken[key] = value

    response = await post(receiver, payload(alert(fingerprint="good"), broken))

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert cluster.writes() == []


async def test_oversize_body_answers_413(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    cluster.seed(runbook())
    receiver = await receiver_factory(receiver_max_body_bytes=2048)
    big = payload(*(alert(fingerprint=f"f{i}") for i in range(20)))

    declared = await post(receiver, big)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1024

    # Generous: a storm POST on a loaded 2-core machine can take seconds; no test asserts time.
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{receiver.port}", timeout=60
    ) as client:
        streamed = await client.post(
            "/alerts", content=chunks(), headers={"Authorization": f"Bearer {TOKEN}"}
        )

    assert declared.status_code == 413 and "2048 bytes" in declared.json()["error"]
    assert "max_alerts" in declared.json()["error"]
    assert streamed.status_code == 413
    assert cluster.writes() == []
    small = await post(receiver, payload(alert()))
    assert small.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
async def test_missing_or_wrong_token_answers_401(
    cluster: Cluster, receiver: Receiver, headers: dict[str, str]
) -> None:
    response = await post(receiver, payload(alert()), token=None, headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert TOKEN not in response.text
    assert cluster.writes() == []


async def test_no_token_refuses_to_start_unless_insecure(
    cluster: Cluster, receiver_factory: ReceiverFactory
) -> None:
    with pytest.raises(ReceiverConfigError, match="MCP_RECEIVER_INSECURE"):
        Receiver(Settings(), KubeApi(cluster.connection, Settings()))
    cluster.seed(runbook())
    insecure = await receiver_factory(receiver_token=None, receiver_insecure=True)

    response = await post(insecure, payload(alert()), token=None)

    assert response.status_code == 200 and response.json()["created"] == 1


# -- the Kubernetes API unreachable: 503 so that Alertmanager retries ---------------------


async def test_api_down_answers_503_and_a_retry_after_recovery_creates_it(
    receiver_factory: ReceiverFactory,
) -> None:
    api = ApiServerEmulator()
    api.register_builtins()
    api.register_crd_dir(CRDS)
    port = free_port()
    api.seed(runbook())
    async with api:
        server = kmock.Server(api, port=port)
        await server.__aenter__()
        own = Cluster(api, f"http://127.0.0.1:{port}")
        receiver = await receiver_factory(connection=own.connection, wait_ready=False)
        await own.wait_for(lambda: receiver.ready, what="a warm runbook cache")
        await server.__aexit__(None, None, None)

        down = await post(receiver, payload(alert()))

        assert down.status_code == 503 and down.headers["Retry-After"] == "1"
        assert "Kubernetes API unavailable" in down.json()["error"]
        async with kmock.Server(api, port=port):
            retried = await post(receiver, payload(alert()))
        assert retried.status_code == 200 and retried.json()["created"] == 1
        assert len(api.list_objects(API_VERSION, REMEDIATIONS)) == 1


async def test_api_errors_answer_503(cluster: Cluster, receiver: Receiver) -> None:
    cluster.api[kmock.method.POST, kmock.path(REMEDIATIONS_PATH)] << 503

    response = await post(receiver, payload(alert()))

    assert response.status_code == 503
    assert remediations(cluster) == []


async def test_cold_cache_answers_503_and_readyz_tells(
    receiver_factory: ReceiverFactory,
) -> None:
    dead = ConnectionConfig(server=f"http://127.0.0.1:{free_port()}", insecure=True)
    receiver = await receiver_factory(connection=dead, wait_ready=False)

    ready = await get(receiver, "/readyz")
    alive = await get(receiver, "/healthz")
    response = await post(receiver, payload(alert()))

    assert ready.status_code == 503 and alive.status_code == 200
    assert response.status_code == 503 and "not warm" in response.json()["error"]
    assert response.headers["Retry-After"] == "1"


# -- metrics ----------------------------------------------------------------------------


async def test_metrics_count_requests_and_alert_outcomes(
    cluster: Cluster, receiver: Receiver
) -> None:
    await post(receiver, payload(alert()))
    await post(receiver, payload(alert()))
    await post(receiver, payload(alert(fingerprint="x", alertname="Other")))
    await post(receiver, b"nope")
    await post(receiver, payload(alert()), token="bad")
    receiver.remediation_event(None, remediations(cluster)[0])

    response = await get(receiver, "/metrics")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'mcp_receiver_requests_total{code="200",path="/alerts"} 3.0' in text
    assert 'mcp_receiver_requests_total{code="400",path="/alerts"} 1.0' in text
    assert 'mcp_receiver_requests_total{code="401",path="/alerts"} 1.0' in text
    assert 'mcp_receiver_alerts_total{outcome="created",status="firing"} 1.0' in text
    assert 'mcp_receiver_alerts_total{outcome="duplicates",status="firing"} 1.0' in text
    assert 'mcp_receiver_alerts_total{outcome="unmatched",status="firing"} 1.0' in text
    assert 'mcp_remediations{namespace="mcp",phase="Pending",runbook="redis-cache"} 1.0' in text
    assert TOKEN not in text


# -- in the operator: Kopf feeds the cache, the engine runs what the receiver created ----


async def test_operator_serves_the_receiver_and_runs_what_it_creates(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    cluster.seed(deployment("finbot-api"))
    steps = [
        {
            "name": "restart",
            "action": "rolloutRestart",
            "params": {"name": "{{ labels.deployment }}"},
        }
    ]
    cluster.seed(runbook("restart-api", alertname="ApiErrors", steps=steps))
    port = free_port()
    await operator_factory(
        receiver=True,
        receiver_port=port,
        receiver_host="127.0.0.1",
        receiver_token=TOKEN,
    )
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async with httpx.AsyncClient(base_url=base, headers=auth) as client:

        async def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return (await client.get("/readyz")).status_code == 200
            return False

        await eventually(ready, "readyz")
        firing = alert(alertname="ApiErrors", deployment="finbot-api")
        created = await client.post("/alerts", json=payload(firing))
        assert created.json()["created"] == 1, created.text
        name = records.remediation_name("restart-api", firing["fingerprint"], STARTS)
        done = await cluster.wait_phase("mcp", name, {"Succeeded", "Failed", "Refused"})
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert done["status"]["steps"][0]["outputs"]["names"] == "finbot-api"

        resolved = await client.post("/alerts", json=payload({**firing, "status": "resolved"}))
        assert resolved.json()["resolved"] == 1
        assert cluster.remediation("mcp", name)["status"]["alertResolvedAt"]

        # A runbook applied while the operator runs reaches the cache through the watch.
        cluster.seed(runbook("inspect-later", alertname="LateAlert", steps=steps, **LOOSE))

        async def late_alert_matches() -> bool:
            late = alert(fingerprint="late", alertname="LateAlert", deployment="finbot-api")
            return bool((await client.post("/alerts", json=payload(late))).json()["created"])

        await eventually(late_alert_matches, "the late runbook in the cache")

        def counted() -> bool:
            status = cluster.get(API_VERSION, RUNBOOKS, "mcp", "restart-api").get("status", {})
            return bool(status.get("counters", {}).get("triggered") == 1)

        await cluster.wait_for(counted, what="runbook counters")
        metrics = (await client.get("/metrics")).text

    assert (
        'mcp_action_duration_seconds_count{action="rolloutRestart",outcome="succeeded"}' in metrics
    )
    assert (
        'mcp_remediations{namespace="mcp",phase="Succeeded",runbook="restart-api"} 1.0' in metrics
    )
    runbook_status = cluster.get(API_VERSION, RUNBOOKS, "mcp", "restart-api")["status"]
    assert runbook_status["lastTriggeredAt"]
    assert [c["status"] for c in runbook_status["conditions"] if c["type"] == "Valid"] == ["True"]


async def test_operator_without_a_receiver_token_stops_with_the_reason(
    cluster: Cluster,
) -> None:
    settings = Settings(receiver_port=free_port(), receiver_host="127.0.0.1")

    def run() -> None:
        asyncio.run(run_operator(settings, cluster.connection, receiver=True))

    with pytest.raises(ReceiverConfigError, match="MCP_RECEIVER_TOKEN_FILE"):
        await asyncio.wait_for(asyncio.to_thread(run), 30)


async def test_alert_resolved_mid_run_survives_the_engine_finishing_the_run(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    cluster.seed(deployment("finbot-api"))
    cluster.api.clear_reactors("apps/v1", "deployments")  # the rollout hangs until we say
    steps = [{"name": "restart", "action": "rolloutRestart", "params": {"name": "finbot-api"}}]
    cluster.seed(runbook("restart-api", alertname="ApiErrors", steps=steps))
    port = free_port()
    await operator_factory(
        receiver=True,
        receiver_port=port,
        receiver_host="127.0.0.1",
        receiver_token=TOKEN,
    )
    firing = alert(alertname="ApiErrors")
    name = records.remediation_name("restart-api", firing["fingerprint"], STARTS)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:

        async def created() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                response = await client.post("/alerts", json=payload(firing))
                return response.status_code == 200 and response.json()["created"] == 1
            return False

        await eventually(created, "the remediation")
        await cluster.wait_phase("mcp", name, {"Running"})
        resolved = await client.post("/alerts", json=payload({**firing, "status": "resolved"}))
        assert resolved.json()["resolved"] == 1
        marked = cluster.remediation("mcp", name)["status"]["alertResolvedAt"]

        cluster.api.add_reactor("apps/v1", "deployments", complete_rollouts)
        cluster.api.touch("apps/v1", "deployments", "mcp", "finbot-api")
        done = await cluster.wait_phase("mcp", name, {"Succeeded", "Failed"})

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["alertResolvedAt"] == marked
