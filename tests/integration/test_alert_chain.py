"""End to end with the real chain: Redis faults → redis_exporter → Prometheus rules →
Alertmanager (bearer token) → our receiver → McpRemediations in the emulated cluster → the
engine runs Redis actions against that same Redis → the alerts resolve."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import redis.asyncio

from fixtures.alert_chain import MAXMEMORY_BYTES, AlertChain
from fixtures.cluster import Cluster, OperatorFactory
from mcp_remediator import records
from mcp_remediator.models import (
    API_VERSION,
    LABEL_ALERTNAME,
    LABEL_RUNBOOK,
    REMEDIATIONS,
    RUNBOOKS,
)

BLOB = b"x" * 1024
STALE_KEYS = 50
SESSION_KEYS = 10


def runbook(name: str, alertname: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "McpRunbook",
        "metadata": {"name": name, "namespace": "mcp"},
        "spec": {
            "description": f"the guide's procedure for {alertname}",
            "triggers": [{"alertname": alertname, "matchers": ['severity=~"warning|critical"']}],
            "steps": steps,
        },
    }


HIGH_MEMORY = runbook(
    "redis-high-memory",
    "RedisHighMemoryUsage",
    [
        {"name": "inspect", "action": "redisInspect", "params": {"sections": ["memory"]}},
        {
            "name": "purge",
            "action": "redisExpireKeys",
            "params": {"pattern": "mcp:dashboard:blob:*", "ttlSeconds": 0},
        },
    ],
)
LOW_HIT_RATIO = runbook(
    "redis-stale-cache",
    "RedisLowCacheHitRatio",
    [
        {"name": "inspect", "action": "redisInspect", "params": {"sections": ["stats"]}},
        {
            "name": "add-ttl",
            "action": "redisExpireKeys",
            "params": {
                "pattern": "mcp:dashboard:stale:*",
                "ttlSeconds": 300,
                "onlyWithoutTtl": True,
            },
        },
    ],
)


async def fill_memory(client: redis.asyncio.Redis) -> int:
    """1 KiB SETs until used memory passes 92 % of maxmemory; the number of blobs."""
    written = 0
    while True:
        info = await client.info("memory")
        if info["used_memory"] / MAXMEMORY_BYTES > 0.92:
            return written
        pipe = client.pipeline(transaction=False)
        for i in range(written, written + 100):
            pipe.set(f"mcp:dashboard:blob:{i}", BLOB)
        results = await pipe.execute(raise_on_error=False)
        written += sum(1 for r in results if r is True)


async def traffic(client: redis.asyncio.Redis, key: str, stop: asyncio.Event) -> None:
    """GETs of ``key`` in batches until ``stop``: misses for a missing key, else hits."""
    while not stop.is_set():
        pipe = client.pipeline(transaction=False)
        for _ in range(200):
            pipe.get(key)
        await pipe.execute()
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(client: redis.asyncio.Redis, key: str) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(traffic(client, key, stop))
    try:
        yield
    finally:
        stop.set()
        await task


def by_runbook(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {
        r["metadata"]["labels"][LABEL_RUNBOOK]: r
        for r in cluster.api.list_objects(API_VERSION, REMEDIATIONS, "mcp")
    }


def step(rem: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in rem["status"]["steps"] if s["name"] == name)
    return found


async def test_redis_alerts_from_prometheus_are_remediated_and_resolve(
    alert_chain: AlertChain, cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    client = alert_chain.redis.client()
    try:
        await client.set("mcp:dashboard:hot", b"fresh")
        for i in range(STALE_KEYS):
            await client.set(f"mcp:dashboard:stale:{i}", b"old")
        for i in range(SESSION_KEYS):
            await client.set(f"session:{i}", b"keep")
        cluster.seed(HIGH_MEMORY)
        cluster.seed(LOW_HIT_RATIO)
        await operator_factory(
            receiver=True,
            receiver_port=alert_chain.receiver_port,
            receiver_host="127.0.0.1",
            receiver_token=alert_chain.token,
            redis_url=alert_chain.redis.url(),
        )

        # Faults, for real: memory over 90 % of maxmemory, and a stream of cache misses.
        blobs = await fill_memory(client)
        async with running(client, "mcp:dashboard:missing"):
            await cluster.wait_for(
                lambda: len(by_runbook(cluster)) == 2, 30, "a remediation for each alert"
            )
            remediations = by_runbook(cluster)
            for rem in remediations.values():
                await cluster.wait_phase("mcp", rem["metadata"]["name"], {"Succeeded", "Failed"})
        # The fix of the traffic pattern: the application reads from the cache again.
        async with running(client, "mcp:dashboard:hot"):
            done = await cluster.wait_for(
                lambda: (
                    all(r["status"].get("alertResolvedAt") for r in by_runbook(cluster).values())
                    and by_runbook(cluster)
                ),
                30,
                "both alerts resolved",
            )

        memory, ratio = done["redis-high-memory"], done["redis-stale-cache"]
        for rem, alertname in ((memory, "RedisHighMemoryUsage"), (ratio, "RedisLowCacheHitRatio")):
            assert rem["status"]["phase"] == "Succeeded", (rem["status"], alert_chain.logs())
            assert rem["metadata"]["labels"][LABEL_ALERTNAME] == alertname
            alert = rem["spec"]["alert"]
            assert alert["status"] == "firing" and alert["labels"]["alertname"] == alertname
            assert alert["generatorURL"].startswith(alert_chain.prometheus.url)
            assert alert["groupKey"] == f'{{}}:{{alertname="{alertname}"}}'
            runbook_name = rem["spec"]["runbookRef"]["name"]
            expected = records.remediation_name(
                runbook_name, alert["fingerprint"], alert["startsAt"]
            )
            assert rem["metadata"]["name"] == expected
            assert rem["status"]["alertResolvedAt"] >= rem["status"]["finishedAt"]

        inspect = step(memory, "inspect")["outputs"]
        assert float(inspect["memoryRatio"]) > 0.9
        assert inspect["maxMemory"] == str(MAXMEMORY_BYTES)
        purge = step(memory, "purge")["outputs"]
        assert (purge["matched"], purge["changed"]) == (str(blobs), str(blobs))
        stats = step(ratio, "inspect")["outputs"]
        assert float(stats["hitRatio"]) < 0.8 and int(stats["misses"]) > 0
        add_ttl = step(ratio, "add-ttl")["outputs"]
        assert (add_ttl["matched"], add_ttl["changed"]) == (str(STALE_KEYS), str(STALE_KEYS))

        # The effect in Redis: blobs gone, stale keys expiring, nothing else touched.
        assert [k async for k in client.scan_iter("mcp:dashboard:blob:*")] == []
        ttls = [await client.ttl(f"mcp:dashboard:stale:{i}") for i in range(STALE_KEYS)]
        assert all(0 < ttl <= 300 for ttl in ttls), ttls
        assert [await client.ttl(f"session:{i}") for i in range(SESSION_KEYS)] == [-1] * 10
        assert await client.get("mcp:dashboard:hot") == b"fresh"
        assert (await client.info("memory"))["used_memory"] / MAXMEMORY_BYTES < 0.9

        assert alert_chain.firing() == set()
        for runbook_name in ("redis-high-memory", "redis-stale-cache"):

            def counted(name: str = runbook_name) -> bool:
                status = cluster.get(API_VERSION, RUNBOOKS, "mcp", name).get("status", {})
                return bool(status.get("counters", {}).get("triggered") == 1)

            await cluster.wait_for(counted, 10, f"{runbook_name} counters")
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{alert_chain.receiver_port}/metrics")).text
        assert 'mcp_receiver_alerts_total{outcome="created",status="firing"} 2.0' in metrics
        assert 'mcp_receiver_alerts_total{outcome="resolved",status="resolved"}' in metrics
        assert re.search(
            r'mcp_action_duration_seconds_count\{action="redisExpireKeys",outcome="succeeded"\} 2',
            metrics,
        )
    finally:
        await client.aclose()
