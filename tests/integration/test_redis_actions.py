"""The Redis actions against a real redis-server, called through the action registry.

Each test puts keys into Redis, runs an action as the engine would (params parsed by the
registry, the ``validate`` hook, then the function with an ``ActionContext``), and checks
the outputs against Redis itself. The Secret-reference path reads the Secret through the
real ``KubeApi`` over an ``httpx.MockTransport``, or from the emulated cluster's API for
the tenancy tests (``MCP_REDIS_URL`` serves trusted namespaces only).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis.exceptions

from fixtures import cluster as cluster_fixtures
from fixtures.cluster import Cluster, OperatorFactory
from fixtures.daemons import free_port
from fixtures.redis_server import RedisFactory, RedisServer
from fixtures.stub_api import Answer, serving
from mcp_remediator.actions import REGISTRY, ActionContext, ActionResult
from mcp_remediator.actions import redis as redis_actions
from mcp_remediator.clients import Clients
from mcp_remediator.errors import Refused, StepFailed
from mcp_remediator.kube.client import ConnectionConfig, KubeApi
from mcp_remediator.kube.refusals import PREFIX_NOT_ALLOWED
from mcp_remediator.settings import Settings
from mcp_remediator.vendors import redis as vendor

PASSWORD = "s3cret-Pa55/word"  # the slash must be %-quoted in a URL
QUOTED_PASSWORD = quote(PASSWORD, safe="")
NAMESPACE = "mcp"


def settings_for(server: RedisServer | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"redis_timeout_seconds": 2.0, **overrides}
    if server is not None and "redis_url" not in values:
        values["redis_url"] = server.url()
    return Settings.model_validate(values)


async def run_action(
    name: str,
    params: Mapping[str, Any],
    settings: Settings,
    *,
    dry_run: bool = False,
    api: Answer | None = None,
    outputs: dict[str, str] | None = None,
    attempt: int = 1,
    deadline: float | None = None,
    checkpoints: list[dict[str, str]] | None = None,
    on_checkpoint: Callable[[dict[str, str]], Awaitable[None]] | None = None,
    validate: bool = True,
    remediation: str = f"{NAMESPACE}/test",
    connection: ConnectionConfig | None = None,
) -> ActionResult:
    """Run an action the way the engine does: parse, validate (unless told not to), call.

    Each checkpoint is appended to ``checkpoints``, then ``on_checkpoint`` sees it (and may
    stand for an API server that hangs or an operator that dies right after it).
    """
    spec = REGISTRY[name]
    parsed = spec.parse(params)
    if validate and spec.validate is not None:
        spec.validate(parsed, settings, NAMESPACE)
    # Only the Secret-reference tests reach the API; elsewhere nothing listens there.
    connection = connection or ConnectionConfig(server="http://127.0.0.1:9")
    # As the engine does: the steps' client acts as the runner of the remediation's namespace.
    runner = settings.default_service_account
    async with contextlib.AsyncExitStack() as stack:
        if api is not None:
            connection = ConnectionConfig(server=await stack.enter_async_context(serving(api)))
        kube = KubeApi(connection, settings).impersonating(remediation.split("/", 1)[0], runner)
        clients = Clients(settings, kube, httpx.AsyncClient())
        stack.push_async_callback(clients.aclose)

        async def checkpoint(values: Mapping[str, str]) -> None:
            if checkpoints is not None:
                checkpoints.append(dict(values))
            if on_checkpoint is not None:
                await on_checkpoint(dict(values))

        ctx = ActionContext(
            clients=clients,
            settings=settings,
            # The target namespace may come from an alert's labels; Secrets are read from the
            # remediation's own namespace only, which the Secret-reference tests check.
            namespace="target-from-alert",
            dry_run=dry_run,
            remediation=remediation,
            step="redis",
            attempt=attempt,
            outputs=dict(outputs or {}),
            checkpoint_fn=checkpoint,
        )
        if deadline is not None:
            ctx.deadline = deadline
        return await spec.fn(parsed, ctx)


# The test's own helpers run inside Redis: loading and checking 60,000 keys stays fast.
FILL_SCRIPT = "for n = 0, tonumber(ARGV[2]) - 1 do redis.call('SET', ARGV[1] .. n, ARGV[3]) end"
TTL_SUMMARY_SCRIPT = """
local cursor, keys, with_ttl, longest = '0', 0, 0, -1
repeat
  local reply = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = reply[1]
  for _, key in ipairs(reply[2]) do
    local ttl = redis.call('TTL', key)
    keys = keys + 1
    if ttl > 0 then with_ttl = with_ttl + 1 end
    if ttl > longest then longest = ttl end
  end
until cursor == '0'
return {keys, with_ttl, longest}
"""


async def fill(server: RedisServer, prefix: str, count: int, *, value: bytes = b"v") -> None:
    """``count`` string keys ``<prefix><n>``, n from 0."""
    client = server.client()
    try:
        await client.eval(FILL_SCRIPT, 0, prefix, count, value)
    finally:
        await client.aclose()


async def ttl_summary(server: RedisServer, pattern: str) -> tuple[int, int, int]:
    """(keys matching, how many have a TTL, the longest TTL or -1)."""
    client = server.client()
    try:
        keys, with_ttl, longest = await client.eval(TTL_SUMMARY_SCRIPT, 0, pattern)
        return int(keys), int(with_ttl), int(longest)
    finally:
        await client.aclose()


async def ttls(server: RedisServer, pattern: str) -> dict[str, int]:
    """Every key matching ``pattern`` with its TTL (-1: none), by the test's own SCAN."""
    client = server.client()
    try:
        keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.ttl(key)
        values = await pipe.execute()
        return {key.decode(): int(ttl) for key, ttl in zip(keys, values, strict=True)}
    finally:
        await client.aclose()


async def reset_stats(server: RedisServer) -> None:
    """Zero the command counters (the fixture's readiness probe sent a PING)."""
    client = server.client()
    try:
        await client.config_resetstat()
    finally:
        await client.aclose()


async def info(server: RedisServer, section: str) -> dict[str, Any]:
    client = server.client()
    try:
        result: dict[str, Any] = await client.info(section)
        return result
    finally:
        await client.aclose()


# -- redisPing ---------------------------------------------------------------------------


async def test_ping_reports_latency(redis_server: RedisServer) -> None:
    await reset_stats(redis_server)

    result = await run_action("redisPing", {}, settings_for(redis_server))

    latency, worst = float(result.outputs["latencyMs"]), float(result.outputs["maxLatencyMs"])
    assert 0 < latency <= worst
    assert result.message.startswith("PONG")
    commands = await info(redis_server, "commandstats")
    assert commands["cmdstat_ping"]["calls"] == redis_actions.PINGS


async def test_ping_through_a_secret_reference_with_a_password(
    redis_factory: RedisFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_factory(password=PASSWORD)
    requests: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.method} {request.url.path}")
        if request.url.path == f"/api/v1/namespaces/{NAMESPACE}/secrets/redis-auth":
            encoded = base64.b64encode(server.url(db=2).encode()).decode()
            return httpx.Response(200, json={"kind": "Secret", "data": {"url": encoded}})
        return httpx.Response(404, json={"kind": "Status", "reason": "NotFound", "code": 404})

    caplog.set_level(logging.DEBUG)
    await reset_stats(server)
    # The operator default points elsewhere: only the Secret leads to this server.
    settings = settings_for(None, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    ref = {"redis": {"urlSecretRef": {"name": "redis-auth", "key": "url"}}}

    result = await run_action("redisPing", ref, settings, api=api)

    assert requests == [f"GET /api/v1/namespaces/{NAMESPACE}/secrets/redis-auth"]
    assert float(result.outputs["latencyMs"]) > 0
    assert (await info(server, "commandstats"))["cmdstat_ping"]["calls"] == redis_actions.PINGS
    assert PASSWORD not in caplog.text + result.message + str(result.outputs)

    missing = {"redis": {"urlSecretRef": {"name": "absent", "key": "url"}}}
    with pytest.raises(StepFailed) as not_found:
        await run_action("redisPing", missing, settings, api=api)
    assert not_found.value.reason == "RedisSecretNotFound"
    assert f"Secret {NAMESPACE}/absent" in not_found.value.message

    wrong_key = {"redis": {"urlSecretRef": {"name": "redis-auth", "key": "uri"}}}
    with pytest.raises(StepFailed) as no_key:
        await run_action("redisPing", wrong_key, settings, api=api)
    assert no_key.value.reason == "RedisSecretNotFound"
    assert "has no key 'uri'" in no_key.value.message


async def test_ping_over_tls(redis_factory: RedisFactory) -> None:
    server = redis_factory(tls=True, password=PASSWORD)
    assert server.url().startswith("rediss://")

    result = await run_action("redisPing", {}, settings_for(server))

    assert float(result.outputs["latencyMs"]) > 0
    plain = settings_for(None, redis_url=f"redis://:{QUOTED_PASSWORD}@{server.address}/0")
    with pytest.raises(StepFailed) as failed:
        await run_action("redisPing", {}, plain)
    assert failed.value.reason in ("RedisUnavailable", "RedisTimeout")


# -- redisInspect ------------------------------------------------------------------------


async def test_inspect_reports_memory_stats_and_keyspace(redis_server: RedisServer) -> None:
    client = redis_server.client()
    await client.config_set("maxmemory", str(100 * 1024 * 1024))
    await client.config_set("maxmemory-policy", "allkeys-lru")
    await fill(redis_server, "mcp:dashboard:", 300, value=b"x" * 1024)
    await fill(redis_server, "other:small:", 200)
    for n in range(50):
        await client.expire(f"other:small:{n}", 3600)
    # Keys outside the allowed prefixes: never sampled, never reported.
    await client.set("session:tok-4711:data", "v")
    await client.set("tok-0815", "v")
    for n in range(30):
        assert await client.get(f"mcp:dashboard:{n}") is not None
    for n in range(10):
        assert await client.get(f"mcp:absent:{n}") is None
    await client.aclose()

    result = await run_action("redisInspect", {}, settings_for(redis_server))
    out = result.outputs

    assert out["maxMemory"] == str(100 * 1024 * 1024)
    assert out["maxmemoryPolicy"] == "allkeys-lru"
    used = int(out["usedMemory"])
    assert used > 300 * 1024
    assert float(out["memoryRatio"]) == pytest.approx(used / (100 * 1024 * 1024), abs=1e-4)
    assert (out["hits"], out["misses"], out["hitRatio"]) == ("30", "10", "0.7500")
    assert (out["keys"], out["db0Keys"], out["db0Expires"]) == ("502", "502", "50")
    # Only mcp: keys are sampled; the scan under mcp: ran to its end, so counts are exact.
    assert out["sampledKeys"] == "300"
    assert out["topShapes"] == "mcp:dashboard:*"
    assert (out["shape1"], out["shape1Keys"], out["shape1Share"]) == (
        "mcp:dashboard:*",
        "300",
        "0.5976",
    )
    assert int(out["shape1Bytes"]) > 300 * 1024
    assert "shape2" not in out
    assert not any("tok-" in value or "other" in value for value in out.values())
    assert "hit ratio 0.75" in result.message
    assert "largest key shape mcp:dashboard:* (about 60% of the keys)" in result.message


async def test_inspect_reports_no_identifier_and_nothing_outside_the_prefixes(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    sessions = [str(uuid.uuid4()) for _ in range(40)]
    users = [str(12345 + n) for n in range(30)]
    tokens = [secrets.token_hex(8) for _ in range(20)]
    names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan"]
    for session in sessions:
        await client.set(f"mcp:session:{session}", "v")
        await client.set(f"mcp:session:{session}:data", "v")
    for user in users:
        await client.set(f"mcp:user:{user}:cart", "v")
    for token in tokens:
        await client.set(f"mcp:token:{token}", "v")
    for name in names:
        await client.set(f"mcp:profile:{name}:prefs", "v")
    for n in range(5):
        await client.set(f"mcp:mail:user{n}@example.com", "v")
    await client.set("mcp:token:abcdef0123456789", "v")
    await client.set("other:secret", "s3cr3t")
    await client.set("other:secret:2", "s3cr3t")
    # Every command with its arguments, to check how the keyspace was walked.
    await client.config_set("slowlog-log-slower-than", "0")
    await client.config_set("slowlog-max-len", "100000")
    await client.slowlog_reset()

    result = await run_action(
        "redisInspect", {"sections": ["keyspace"]}, settings_for(redis_server)
    )

    out = result.outputs
    assert out["topShapes"].split(",") == [
        "mcp:session:*",
        "mcp:session:*:data",
        "mcp:user:*:cart",
        "mcp:token:*",
        "mcp:profile:*:prefs",
    ]
    assert (out["shape1Keys"], out["shape3Keys"], out["shape4Keys"]) == ("40", "30", "21")
    assert out["sampledKeys"] == str(40 * 2 + 30 + 21 + 9 + 5)
    reported = result.message + " ".join(f"{k}={v}" for k, v in out.items())
    identifiers = [*sessions, *users, *tokens, *names, "abcdef0123456789", "example.com"]
    for value in [*identifiers, "other", "secret", "s3cr3t"]:
        assert value not in reported, value
    log = await client.slowlog_get(100000)
    await client.aclose()
    commands = [[bytes(a) for a in entry["command"].split()] for entry in log]
    scans = [c for c in commands if c[0].upper() == b"SCAN"]
    assert scans and all(c[2:4] == [b"MATCH", b"mcp:*"] for c in scans)
    assert not any(c[0].upper() in (b"KEYS", b"RANDOMKEY") for c in commands)
    assert not any(b"other:secret" in part for c in commands for part in c)


async def test_inspect_samples_each_allowed_prefix_with_its_own_match(
    redis_server: RedisServer,
) -> None:
    await fill(redis_server, "cache:page:", 50)
    await fill(redis_server, "mcp:dashboard:", 40)
    await fill(redis_server, "mcp:cache:v", 30)  # under mcp: as well: sampled once
    await fill(redis_server, "private:", 60)
    settings = settings_for(redis_server, redis_allowed_prefixes="mcp:,cache:,mcp:cache:")

    result = await run_action("redisInspect", {"sections": ["keyspace"]}, settings)

    out = result.outputs
    assert out["sampledKeys"] == "120"
    assert {out[f"shape{r}"]: out[f"shape{r}Keys"] for r in (1, 2, 3)} == {
        "cache:page:*": "50",
        "mcp:dashboard:*": "40",
        "mcp:cache:*": "30",
    }
    assert "private" not in str(out)


async def test_inspect_only_the_asked_sections(redis_server: RedisServer) -> None:
    result = await run_action("redisInspect", {"sections": ["memory"]}, settings_for(redis_server))

    assert result.outputs["maxMemory"] == "0"
    assert "memoryRatio" not in result.outputs  # no maxmemory: no ratio to report
    assert "hits" not in result.outputs and "keys" not in result.outputs
    assert "no maxmemory" in result.message


async def test_inspect_estimates_shapes_from_a_sample(redis_server: RedisServer) -> None:
    await fill(redis_server, "mcp:dashboard:", 6000)
    await fill(redis_server, "mcp:session:", 2000)

    result = await run_action(
        "redisInspect", {"sections": ["keyspace"]}, settings_for(redis_server)
    )
    out = result.outputs

    # Sampling stops after the SCAN call that reached SAMPLE_KEYS names.
    sampled = int(out["sampledKeys"])
    assert redis_actions.SAMPLE_KEYS <= sampled < redis_actions.SAMPLE_KEYS + 200
    assert out["shape1"] == "mcp:dashboard:*"
    # A fair sample of about 1,000 out of 8,000 keys: the estimate is near the true 6,000.
    assert 5000 <= int(out["shape1Keys"]) <= 7000
    assert int(out["shape1Keys"]) + int(out["shape2Keys"]) == pytest.approx(8000, abs=2)


async def test_inspect_scales_a_sparse_prefix_by_the_keys_examined(
    redis_server: RedisServer,
) -> None:
    await fill(redis_server, "other:", 30_000)
    await fill(redis_server, "mcp:dashboard:", 10_000)

    result = await run_action(
        "redisInspect", {"sections": ["keyspace"]}, settings_for(redis_server)
    )

    out = result.outputs
    assert int(out["sampledKeys"]) < 10_000  # cut short: an estimate
    assert out["topShapes"] == "mcp:dashboard:*"
    assert 8000 <= int(out["shape1Keys"]) <= 12_000
    assert float(out["shape1Share"]) == pytest.approx(0.25, abs=0.05)


# -- redisExpireKeys ---------------------------------------------------------------------


async def test_expire_sets_the_ttl_of_matching_keys_only(redis_server: RedisServer) -> None:
    await fill(redis_server, "mcp:dashboard:", 300)
    await fill(redis_server, "mcp:session:", 200)
    await fill(redis_server, "app:dashboard:", 100)
    params = {"pattern": "mcp:dashboard:*", "ttlSeconds": 600}

    result = await run_action("redisExpireKeys", params, settings_for(redis_server))

    out = result.outputs
    assert (out["scanned"], out["matched"], out["changed"], out["complete"]) == (
        "300",
        "300",
        "300",
        "true",
    )
    assert int(out["durationMs"]) >= 0
    assert all(0 < ttl <= 600 for ttl in (await ttls(redis_server, "mcp:dashboard:*")).values())
    assert set((await ttls(redis_server, "mcp:session:*")).values()) == {-1}
    assert set((await ttls(redis_server, "app:*")).values()) == {-1}
    assert result.message.startswith("set a 600s TTL on 300 keys matching mcp:dashboard:*")


async def test_ttl_zero_deletes_with_unlink(redis_server: RedisServer) -> None:
    await fill(redis_server, "mcp:dashboard:", 1500)
    await fill(redis_server, "mcp:session:", 200)

    result = await run_action(
        "redisExpireKeys",
        {"pattern": "mcp:dashboard:*", "ttlSeconds": 0},
        settings_for(redis_server),
    )

    assert (result.outputs["matched"], result.outputs["changed"]) == ("1500", "1500")
    assert await ttls(redis_server, "mcp:dashboard:*") == {}
    assert len(await ttls(redis_server, "mcp:session:*")) == 200
    commands = await info(redis_server, "commandstats")
    assert "cmdstat_unlink" in commands and "cmdstat_del" not in commands
    assert "cmdstat_expire" not in commands


@pytest.mark.parametrize("ttl", [60, 0])
async def test_only_keys_without_a_ttl(redis_server: RedisServer, ttl: int) -> None:
    await fill(redis_server, "mcp:dashboard:", 300)
    client = redis_server.client()
    for n in range(100):
        await client.expire(f"mcp:dashboard:{n}", 5000)
    await client.aclose()
    params = {"pattern": "mcp:dashboard:*", "ttlSeconds": ttl, "onlyWithoutTtl": True}

    result = await run_action("redisExpireKeys", params, settings_for(redis_server))

    out = result.outputs
    assert (out["scanned"], out["matched"], out["changed"]) == ("300", "200", "200")
    after = await ttls(redis_server, "mcp:dashboard:*")
    kept = {f"mcp:dashboard:{n}" for n in range(100)}
    assert all(after[key] > 4000 for key in kept)  # keys that had a TTL keep theirs
    others = {key: value for key, value in after.items() if key not in kept}
    if ttl:
        assert len(others) == 200 and all(0 < value <= 60 for value in others.values())
    else:
        assert others == {}
    assert "keys without a TTL" in result.message


async def test_max_keys_is_a_budget(redis_server: RedisServer) -> None:
    await fill(redis_server, "mcp:dashboard:", 1000)
    params = {"pattern": "mcp:dashboard:*", "ttlSeconds": 600, "maxKeys": 250}

    result = await run_action("redisExpireKeys", params, settings_for(redis_server))

    assert (result.outputs["matched"], result.outputs["changed"]) == ("250", "250")
    assert result.outputs["complete"] == "false"
    after = await ttls(redis_server, "mcp:dashboard:*")
    assert sum(1 for value in after.values() if value > 0) == 250
    assert "budget of maxKeys=250" in result.message


async def test_dry_run_counts_and_changes_nothing(redis_server: RedisServer) -> None:
    await fill(redis_server, "mcp:dashboard:", 300)
    client = redis_server.client()
    for n in range(100):
        await client.expire(f"mcp:dashboard:{n}", 5000)
    await client.config_resetstat()
    await client.aclose()
    params = {"pattern": "mcp:dashboard:*", "ttlSeconds": 0, "onlyWithoutTtl": True}

    result = await run_action("redisExpireKeys", params, settings_for(redis_server), dry_run=True)

    out = result.outputs
    assert (out["scanned"], out["matched"], out["changed"]) == ("300", "200", "0")
    assert len(await ttls(redis_server, "mcp:dashboard:*")) == 300
    commands = await info(redis_server, "commandstats")
    assert not {"cmdstat_unlink", "cmdstat_expire", "cmdstat_del"} & set(commands)
    assert result.message.startswith("dry run: would delete 200 keys without a TTL")


@pytest.mark.parametrize("pattern", ["app:*", "*", "mc*", "MCP:x", "[m]cp:*"])
async def test_patterns_outside_the_allowed_prefixes_are_refused(
    redis_server: RedisServer, pattern: str
) -> None:
    await fill(redis_server, "app:", 10)
    await fill(redis_server, "mcp:", 10)
    settings = settings_for(redis_server)
    params = {"pattern": pattern, "ttlSeconds": 0}
    await reset_stats(redis_server)

    with pytest.raises(Refused) as at_validation:
        await run_action("redisExpireKeys", params, settings)
    # Called past validation, the action refuses again before it connects.
    with pytest.raises(Refused) as at_run:
        await run_action("redisExpireKeys", params, settings, validate=False)

    assert at_validation.value.reason == at_run.value.reason == PREFIX_NOT_ALLOWED
    commands = await info(redis_server, "commandstats")
    assert not {"cmdstat_evalsha", "cmdstat_eval", "cmdstat_scan"} & set(commands)
    assert len(await ttls(redis_server, "*")) == 20


async def test_allowed_prefixes_come_from_settings(redis_server: RedisServer) -> None:
    await fill(redis_server, "cache:", 40)
    settings = settings_for(redis_server, redis_allowed_prefixes="cache:,mcp:")

    result = await run_action("redisExpireKeys", {"pattern": "cache:*", "ttlSeconds": 0}, settings)

    assert result.outputs["changed"] == "40"
    with pytest.raises(Refused):
        await run_action(
            "redisExpireKeys", {"pattern": "cache:*", "ttlSeconds": 0}, settings_for(redis_server)
        )


async def test_never_keys_flushdb_or_flushall(redis_server: RedisServer) -> None:
    await fill(redis_server, "mcp:dashboard:", 2000)
    settings = settings_for(redis_server)
    await run_action("redisPing", {}, settings)
    await run_action("redisInspect", {}, settings)
    await run_action("redisExpireKeys", {"pattern": "mcp:*", "ttlSeconds": 60}, settings)
    await run_action("redisExpireKeys", {"pattern": "mcp:*", "ttlSeconds": 0}, settings)

    commands = await info(redis_server, "commandstats")
    assert "cmdstat_scan" in commands and "cmdstat_evalsha" in commands
    assert not {"cmdstat_keys", "cmdstat_flushdb", "cmdstat_flushall"} & set(commands)


async def test_a_large_purge_runs_in_bounded_slices(redis_server: RedisServer) -> None:
    await fill(redis_server, "mcp:dashboard:", 30_000)
    await fill(redis_server, "other:", 30_000)

    params = {"pattern": "mcp:dashboard:*", "ttlSeconds": 600}

    result = await run_action("redisExpireKeys", params, settings_for(redis_server))

    commands = await info(redis_server, "commandstats")
    assert result.outputs["changed"] == "30000"
    assert commands["cmdstat_expire"]["calls"] == 30_000
    slices, scans = commands["cmdstat_evalsha"]["calls"], commands["cmdstat_scan"]["calls"]
    # A script call runs at most MAX_SCANS_PER_SLICE SCAN batches of about SCAN_COUNT
    # keys each: 60,000 keys cannot be covered by one call.
    assert slices >= 2
    assert scans <= slices * redis_actions.MAX_SCANS_PER_SLICE
    keys, with_ttl, longest = await ttl_summary(redis_server, "mcp:dashboard:*")
    assert (keys, with_ttl) == (30_000, 30_000) and 0 < longest <= 600
    assert await ttl_summary(redis_server, "other:*") == (30_000, 0, -1)


async def test_an_attempt_out_of_time_checkpoints_and_the_next_resumes(
    redis_server: RedisServer,
) -> None:
    await fill(redis_server, "mcp:dashboard:", 30_000)
    await fill(redis_server, "other:", 30_000)
    settings = settings_for(redis_server)
    params = {"pattern": "mcp:dashboard:*", "ttlSeconds": 600}
    saved: list[dict[str, str]] = []

    # No time left: the first attempt runs one slice, saves its cursor and gives up.
    with pytest.raises(StepFailed) as out_of_time:
        await run_action(
            "redisExpireKeys", params, settings, deadline=time.monotonic(), checkpoints=saved
        )
    assert out_of_time.value.transient and out_of_time.value.reason == "Timeout"
    # Before its first slice it declared how far it might go unrecorded; stopping, it
    # recorded everything it did: nothing is pending.
    declared, checkpoint = saved
    assert (declared["cursor"], declared["changed"]) == ("0", "0")
    assert declared["pending"] == str(redis_actions.WINDOW_KEYS)
    assert checkpoint["pending"] == "0"
    first = int(checkpoint["changed"])
    assert 0 < first < 30_000 and checkpoint["cursor"] != "0"
    keys, with_ttl, longest = await ttl_summary(redis_server, "mcp:dashboard:*")
    assert (keys, with_ttl) == (30_000, first) and 0 < longest <= 600

    result = await run_action("redisExpireKeys", params, settings, outputs=checkpoint, attempt=2)

    assert result.outputs["changed"] == "30000"  # counted across both attempts
    assert (result.outputs["exact"], result.outputs["uncounted"]) == ("true", "0")
    assert result.outputs["complete"] == "true" and "cursor" not in result.outputs
    assert not {"pending", "at", "uncountedSince"} & set(result.outputs)
    keys, with_ttl, longest = await ttl_summary(redis_server, "mcp:dashboard:*")
    assert (keys, with_ttl) == (30_000, 30_000) and 0 < longest <= 600
    commands = await info(redis_server, "commandstats")
    assert commands["cmdstat_expire"]["calls"] == 30_000  # no key was done twice


async def test_progress_is_checkpointed_while_a_purge_runs(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(redis_server, "mcp:dashboard:", 30_000)
    await fill(redis_server, "other:", 30_000)
    monkeypatch.setattr(redis_actions, "CHECKPOINT_SECONDS", 0.0)  # after every slice
    saved: list[dict[str, str]] = []
    params = {"pattern": "mcp:dashboard:*", "ttlSeconds": 600}

    result = await run_action(
        "redisExpireKeys", params, settings_for(redis_server), checkpoints=saved
    )

    assert result.outputs["changed"] == "30000"
    declared, *periodic = saved
    assert (declared["cursor"], declared["changed"]) == ("0", "0")
    assert periodic, "a purge of several slices saves its progress"
    done = [int(checkpoint["changed"]) for checkpoint in periodic]
    assert done == sorted(set(done)) and 0 < done[0] and done[-1] < 30_000
    assert all(c["cursor"] != "0" and c["pattern"] == "mcp:dashboard:*" for c in periodic)
    # Each opens a window: the most the attempt may match before it writes the next one.
    assert {c["pending"] for c in saved} == {str(redis_actions.WINDOW_KEYS)}


# -- exact counts over interrupted attempts (issue 12) -----------------------------------

# One event per slice reply, as the server sent it, and per checkpoint, in their order.
Events = list[tuple[str, Any]]


class OperatorKilled(BaseException):
    """Where the operator's process dies: no code of the action runs after it (the
    action's own handler catches exceptions and cancellations, not this)."""


def watch_slices(
    monkeypatch: pytest.MonkeyPatch,
    events: Events,
    fault: Callable[[int], BaseException | None] = lambda _: None,
) -> None:
    """Record each purge slice's reply in ``events``; after the server ran slice ``n``
    (from 1), raise ``fault(n)`` if it is an exception: the reply is lost to the action."""
    original = vendor.Script.__call__

    async def call(self: vendor.Script, *args: str | int) -> Any:
        reply = await original(self, *args)
        events.append(("slice", reply))
        failure = fault(sum(1 for kind, _ in events if kind == "slice"))
        if failure is not None:
            raise failure
        return reply

    monkeypatch.setattr(vendor.Script, "__call__", call)


def slice_changes(events: Events) -> list[int]:
    return [int(reply[3]) for kind, reply in events if kind == "slice"]


def unrecorded(events: Events) -> int:
    """Keys changed by the slices after the last checkpoint."""
    last = max(i for i, (kind, _) in enumerate(events) if kind == "checkpoint")
    return sum(int(reply[3]) for kind, reply in events[last:] if kind == "slice")


def lost_reply(at: int) -> Callable[[int], BaseException | None]:
    """The connection drops after the server ran slice ``at``, before its reply arrived."""

    def fault(n: int) -> BaseException | None:
        return redis.exceptions.ConnectionError("Connection reset by peer") if n == at else None

    return fault


KEYS = 100_000
DELETE = {"pattern": "mcp:dashboard:*", "ttlSeconds": 0}
ONLY_WITHOUT_TTL = {"pattern": "mcp:dashboard:*", "ttlSeconds": 600, "onlyWithoutTtl": True}


async def changed_on_server(server: RedisServer, params: Mapping[str, Any]) -> int:
    """How many of the KEYS keys the purge ``params`` changed, by the server's own count."""
    keys, with_ttl, _ = await ttl_summary(server, "mcp:dashboard:*")
    return KEYS - keys if params["ttlSeconds"] == 0 else with_ttl


@pytest.mark.parametrize("cap", [700, 100], ids=["whole-batches", "one-batch-over-the-cap"])
async def test_a_slice_never_matches_more_than_its_cap(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, cap: int
) -> None:
    # The cap bounds what a slice whose reply is lost may have done. SCAN batches of about
    # SCAN_COUNT (500) keys are taken whole: at 700, one per slice; a batch bigger than the
    # cap is only named (needed), and the next call, with the cap raised to it, takes it.
    monkeypatch.setattr(redis_actions, "SLICE_MAX_KEYS", cap)
    await fill(redis_server, "mcp:dashboard:", 20_000)
    calls: list[tuple[int, list[Any]]] = []
    original = vendor.Script.__call__

    async def call(self: vendor.Script, *args: str | int) -> Any:
        reply = await original(self, *args)
        calls.append((int(args[-1]), reply))
        return reply

    monkeypatch.setattr(vendor.Script, "__call__", call)

    result = await run_action("redisExpireKeys", DELETE, settings_for(redis_server))

    assert (result.outputs["changed"], result.outputs["exact"]) == ("20000", "true")
    assert await ttl_summary(redis_server, "mcp:dashboard:*") == (0, 0, -1)
    assert all(int(reply[2]) <= given for given, reply in calls)
    named = [int(reply[5]) for _, reply in calls if int(reply[5])]
    if cap < redis_actions.SCAN_COUNT:
        assert named and all(n > cap for n in named)
        for (_, reply), (given, _) in zip(calls, calls[1:], strict=False):
            if int(reply[5]):
                assert given == int(reply[5])  # nothing done; the next call may take it
                assert (int(reply[2]), int(reply[3])) == (0, 0)
    else:
        assert not named
        assert max(int(reply[2]) for _, reply in calls) > redis_actions.SCAN_COUNT // 2


@pytest.mark.parametrize("params", [DELETE, ONLY_WITHOUT_TTL], ids=["unlink", "onlyWithoutTtl"])
async def test_a_lost_reply_is_reported_as_at_most_one_slice_uncounted(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, params: dict[str, Any]
) -> None:
    # The issue's case: a retried purge, its first attempt cut off mid-way. Every slice
    # whose reply arrived is counted; the one whose reply was lost deleted keys no later
    # SCAN can see, so the outputs say so, and by how many keys at most.
    await fill(redis_server, "mcp:dashboard:", KEYS)
    await fill(redis_server, "other:", 10_000)
    settings = settings_for(redis_server)
    events: Events = []
    watch_slices(monkeypatch, events, lost_reply(at=5))
    saved: list[dict[str, str]] = []

    with pytest.raises(StepFailed) as dropped:
        await run_action("redisExpireKeys", params, settings, checkpoints=saved)

    assert dropped.value.transient and dropped.value.reason == "RedisUnavailable"
    *seen, unseen = slice_changes(events)
    assert len(seen) == 4 and unseen > 0
    final = saved[-1]
    # Saved on the way out: every slice the action saw, and the one it did not as pending.
    assert int(final["changed"]) == sum(seen)
    assert final["pending"] == str(redis_actions.SLICE_MAX_KEYS)
    assert await changed_on_server(redis_server, params) == sum(seen) + unseen

    result = await run_action("redisExpireKeys", params, settings, outputs=final, attempt=2)

    out = result.outputs
    truth = await changed_on_server(redis_server, params)
    assert truth == KEYS
    assert int(out["changed"]) == KEYS - unseen  # before the fix: KEYS - sum(seen) - unseen
    assert (out["exact"], out["uncounted"]) == ("false", str(redis_actions.SLICE_MAX_KEYS))
    assert int(out["changed"]) <= truth <= int(out["changed"]) + int(out["uncounted"])
    assert out["complete"] == "true"
    assert f"and at most {redis_actions.SLICE_MAX_KEYS} more that interrupted attempts" in (
        result.message
    )
    assert await ttl_summary(redis_server, "other:*") == (10_000, 0, -1)


async def test_the_engine_retries_a_purge_and_reports_its_total(
    redis_server: RedisServer,
    cluster: Cluster,
    operator_factory: OperatorFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same through the engine's retries (engine._attempts): the second attempt resumes
    # from what the first saved in the step's status, and its outputs replace them.
    await fill(redis_server, "mcp:dashboard:", KEYS)
    events: Events = []
    watch_slices(monkeypatch, events, lost_reply(at=5))
    await operator_factory(redis_url=redis_server.url())
    step = {"name": "purge", "action": "redisExpireKeys", "params": DELETE, "retries": 2}
    cluster.seed(cluster_fixtures.remediation("purge-cache", [step]))

    done = await cluster.wait_phase("mcp", "purge-cache", {"Succeeded", "Failed"})

    assert done["status"]["phase"] == "Succeeded", done["status"]
    [purge] = done["status"]["steps"]
    assert purge["attempts"] == 2
    unseen = slice_changes(events)[4]
    assert await changed_on_server(redis_server, DELETE) == KEYS
    out = purge["outputs"]
    assert int(out["changed"]) == KEYS - unseen
    assert (out["exact"], out["uncounted"]) == ("false", str(redis_actions.SLICE_MAX_KEYS))
    assert not {"cursor", "pending", "at", "uncountedSince"} & set(out)
    assert f"and at most {redis_actions.SLICE_MAX_KEYS} more" in purge["message"]


async def test_a_timeout_between_slices_loses_no_count(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine's timeout cancels the attempt while it writes a checkpoint (an API server
    # that hangs): no slice is in flight, so the saved counts are exact, and so is the total.
    monkeypatch.setattr(redis_actions, "SLICE_MAX_KEYS", 3000)
    monkeypatch.setattr(redis_actions, "WINDOW_KEYS", 12_000)
    await fill(redis_server, "mcp:dashboard:", KEYS)
    settings = settings_for(redis_server)
    events: Events = []
    watch_slices(monkeypatch, events)
    saved: list[dict[str, str]] = []

    async def hang_on_the_third(values: dict[str, str]) -> None:
        events.append(("checkpoint", values))
        if len(saved) == 3:
            await asyncio.sleep(3600)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            run_action(
                "redisExpireKeys",
                DELETE,
                settings,
                checkpoints=saved,
                on_checkpoint=hang_on_the_third,
            ),
            timeout=2,
        )

    assert len(saved) == 4  # three windows, then the last word of the cancelled attempt
    final = saved[-1]
    assert final["pending"] == "0" and final["exact"] == "true"
    assert int(final["changed"]) == sum(slice_changes(events)) > 0
    assert await changed_on_server(redis_server, DELETE) == int(final["changed"])

    result = await run_action("redisExpireKeys", DELETE, settings, outputs=final, attempt=2)

    assert await changed_on_server(redis_server, DELETE) == KEYS
    assert (result.outputs["changed"], result.outputs["exact"]) == (str(KEYS), "true")
    assert result.outputs["uncounted"] == "0"
    assert result.message.startswith(f"deleted {KEYS} keys matching mcp:dashboard:* (")


async def test_an_operator_killed_mid_window_is_bounded_by_its_window(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The operator dies right after a slice: nothing runs on the way out, so the slices
    # since the last checkpoint are unrecorded; that checkpoint's window bounds them.
    monkeypatch.setattr(redis_actions, "SLICE_MAX_KEYS", 3000)
    monkeypatch.setattr(redis_actions, "WINDOW_KEYS", 12_000)
    await fill(redis_server, "mcp:dashboard:", KEYS)
    settings = settings_for(redis_server)
    events: Events = []
    watch_slices(monkeypatch, events, lambda n: OperatorKilled() if n == 10 else None)
    saved: list[dict[str, str]] = []

    async def record(values: dict[str, str]) -> None:
        events.append(("checkpoint", values))

    with pytest.raises(OperatorKilled):
        await run_action(
            "redisExpireKeys", DELETE, settings, checkpoints=saved, on_checkpoint=record
        )

    lost = unrecorded(events)
    last = saved[-1]
    assert 0 < lost <= int(last["pending"]) == 12_000
    assert await changed_on_server(redis_server, DELETE) == int(last["changed"]) + lost

    result = await run_action("redisExpireKeys", DELETE, settings, outputs=last, attempt=2)

    out = result.outputs
    assert await changed_on_server(redis_server, DELETE) == KEYS
    assert int(out["changed"]) == KEYS - lost
    assert (out["exact"], out["uncounted"]) == ("false", "12000")
    assert int(out["changed"]) <= KEYS <= int(out["changed"]) + int(out["uncounted"])


async def test_a_plain_expiry_redoes_an_unseen_slice_and_counts_it_once(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Setting TTLs is done again by the retry, which resumes before the unseen slice and
    # counts its keys itself; their new TTL cannot have run out meanwhile, so it is exact.
    await fill(redis_server, "mcp:dashboard:", 30_000)
    settings = settings_for(redis_server)
    params = {"pattern": "mcp:dashboard:*", "ttlSeconds": 600}
    events: Events = []
    watch_slices(monkeypatch, events, lost_reply(at=3))
    saved: list[dict[str, str]] = []
    with pytest.raises(StepFailed):
        await run_action("redisExpireKeys", params, settings, checkpoints=saved)
    unseen = slice_changes(events)[-1]
    assert saved[-1]["pending"] == str(redis_actions.SLICE_MAX_KEYS)
    await reset_stats(redis_server)

    result = await run_action("redisExpireKeys", params, settings, outputs=saved[-1], attempt=2)

    out = result.outputs
    assert (out["changed"], out["exact"], out["uncounted"]) == ("30000", "true", "0")
    assert await ttl_summary(redis_server, "mcp:dashboard:*") == (30_000, 30_000, 600)
    commands = await info(redis_server, "commandstats")
    # The retry set the TTL of the unseen slice's keys again: counted once, by it.
    assert commands["cmdstat_expire"]["calls"] == 30_000 - sum(slice_changes(events)[:2])
    assert unseen > 0


async def test_a_plain_expiry_whose_ttl_ran_out_before_the_retry_says_so(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a TTL shorter than the pause before the retry, the unseen slice's keys are gone
    # when it resumes: it cannot count them, and says it may have missed that many.
    await fill(redis_server, "mcp:dashboard:", 30_000)
    settings = settings_for(redis_server)
    params = {"pattern": "mcp:dashboard:*", "ttlSeconds": 1}
    events: Events = []
    watch_slices(monkeypatch, events, lost_reply(at=2))
    saved: list[dict[str, str]] = []
    with pytest.raises(StepFailed):
        await run_action("redisExpireKeys", params, settings, checkpoints=saved)
    seen, unseen = slice_changes(events)
    while (await ttl_summary(redis_server, "mcp:dashboard:*"))[0] > 30_000 - seen - unseen:
        await asyncio.sleep(0.1)  # both slices' keys expire

    result = await run_action("redisExpireKeys", params, settings, outputs=saved[-1], attempt=2)

    out = result.outputs
    assert int(out["changed"]) == 30_000 - unseen
    assert (out["exact"], out["uncounted"]) == ("false", str(redis_actions.SLICE_MAX_KEYS))


async def test_keys_possibly_changed_unseen_count_against_max_keys(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(redis_server, "mcp:dashboard:", KEYS)
    settings = settings_for(redis_server)
    params = {**DELETE, "maxKeys": 20_000}
    events: Events = []
    watch_slices(monkeypatch, events, lost_reply(at=3))
    saved: list[dict[str, str]] = []
    with pytest.raises(StepFailed):
        await run_action("redisExpireKeys", params, settings, checkpoints=saved)

    result = await run_action("redisExpireKeys", params, settings, outputs=saved[-1], attempt=2)

    out = result.outputs
    truth = await changed_on_server(redis_server, DELETE)
    assert truth <= 20_000  # the budget holds, whatever the unseen slice did
    assert int(out["matched"]) + int(out["uncounted"]) == 20_000
    assert int(out["changed"]) <= truth <= int(out["changed"]) + int(out["uncounted"])
    assert out["complete"] == "false"


# -- tenancy: MCP_REDIS_URL serves trusted namespaces only --------------------------------

UNTRUSTED = "team-a/x"
EVERY_ACTION: list[tuple[str, dict[str, Any]]] = [
    ("redisPing", {}),
    ("redisInspect", {}),
    ("redisExpireKeys", {"pattern": "mcp:*", "ttlSeconds": 0}),
    ("redisExpireKeys", {"pattern": "mcp:dashboard:*", "ttlSeconds": 60}),
]


def redis_secret(namespace: str, url: str, name: str = "redis-auth") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"url": base64.b64encode(url.encode()).decode()},
    }


@pytest.mark.parametrize(("action", "params"), EVERY_ACTION)
async def test_an_untrusted_namespace_may_not_use_the_operators_redis(
    redis_server: RedisServer, action: str, params: dict[str, Any]
) -> None:
    await fill(redis_server, "mcp:dashboard:", 100)
    await fill(redis_server, "other:", 10)
    client = redis_server.client()
    try:
        await client.config_resetstat()
        connections = (await client.info("stats"))["total_connections_received"]

        with pytest.raises(StepFailed) as caught:
            await run_action(action, params, settings_for(redis_server), remediation=UNTRUSTED)

        # Nothing reached Redis: no connection, no command but the test's own.
        assert (await client.info("stats"))["total_connections_received"] == connections
        assert set(await client.info("commandstats")) <= {
            "cmdstat_info",
            "cmdstat_config|resetstat",
        }
    finally:
        await client.aclose()

    assert caught.value.reason == "CredentialsNotAllowed"
    assert not caught.value.transient
    assert caught.value.message == (
        "the operator-level Redis (MCP_REDIS_URL) is for trusted namespaces only "
        "(MCP_TRUSTED_NAMESPACES) and team-a is not one: name a Secret of namespace team-a "
        "in redis.urlSecretRef, or add team-a to MCP_TRUSTED_NAMESPACES"
    )
    # Every key as it was.
    assert len(await ttls(redis_server, "mcp:dashboard:*")) == 100
    assert set((await ttls(redis_server, "*")).values()) == {-1}


async def test_an_untrusted_namespace_uses_a_secret_of_its_own(
    redis_factory: RedisFactory, cluster: Cluster
) -> None:
    server = redis_factory(password=PASSWORD)
    await fill(server, "mcp:dashboard:", 100)
    cluster.seed(redis_secret("team-a", server.url()))
    cluster.tenant("team-a")
    # The same name in the trusted namespace and in the target namespace: neither is read.
    cluster.seed(redis_secret("mcp", f"redis://127.0.0.1:{free_port()}/0"))
    cluster.seed(redis_secret("target-from-alert", f"redis://127.0.0.1:{free_port()}/0"))
    # The operator default leads nowhere either.
    settings = settings_for(None, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    ref = {"redis": {"urlSecretRef": {"name": "redis-auth", "key": "url"}}}

    pinged = await run_action(
        "redisPing", ref, settings, remediation=UNTRUSTED, connection=cluster.connection
    )
    expired = await run_action(
        "redisExpireKeys",
        {**ref, "pattern": "mcp:dashboard:*", "ttlSeconds": 0},
        settings,
        remediation=UNTRUSTED,
        connection=cluster.connection,
    )

    assert float(pinged.outputs["latencyMs"]) > 0
    assert expired.outputs["changed"] == "100"
    assert await ttls(server, "mcp:*") == {}
    assert PASSWORD not in pinged.message + expired.message
    with pytest.raises(StepFailed) as missing:
        await run_action(
            "redisPing",
            {"redis": {"urlSecretRef": {"name": "absent", "key": "url"}}},
            settings,
            remediation=UNTRUSTED,
            connection=cluster.connection,
        )
    assert missing.value.reason == "RedisSecretNotFound"
    assert "Secret team-a/absent" in missing.value.message


async def test_trusted_namespaces_use_the_operators_redis(redis_server: RedisServer) -> None:
    await fill(redis_server, "mcp:dashboard:", 10)
    settings = settings_for(redis_server, trusted_namespaces="mcp,ops")

    for remediation in ("mcp/x", "ops/x"):
        result = await run_action(
            "redisExpireKeys",
            {"pattern": "mcp:dashboard:*", "ttlSeconds": 60},
            settings,
            remediation=remediation,
        )
        assert result.outputs["changed"] == "10"


# -- failures ----------------------------------------------------------------------------


async def test_wrong_or_missing_password_fails_clearly(
    redis_factory: RedisFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_factory(password=PASSWORD)
    caplog.set_level(logging.DEBUG)
    for url in (server.url(password="wrong-one"), server.url(password="")):
        settings = settings_for(None, redis_url=url)
        with pytest.raises(StepFailed) as failed:
            await run_action("redisExpireKeys", {"pattern": "mcp:*", "ttlSeconds": 0}, settings)
        assert failed.value.reason == "RedisAuthFailed"
        assert not failed.value.transient
        assert f"Redis at {server.address}/0 rejected the credentials from MCP_REDIS_URL" in (
            failed.value.message
        )
        assert "wrong-one" not in failed.value.message
    assert PASSWORD not in caplog.text


async def test_redis_down_is_a_transient_failure() -> None:
    port = free_port()
    settings = settings_for(None, redis_url=f"redis://:{QUOTED_PASSWORD}@127.0.0.1:{port}/0")

    with pytest.raises(StepFailed) as failed:
        await run_action("redisInspect", {}, settings)

    assert failed.value.transient and failed.value.reason == "RedisUnavailable"
    assert f"cannot reach Redis at 127.0.0.1:{port}/0" in failed.value.message
    assert PASSWORD not in failed.value.message and QUOTED_PASSWORD not in failed.value.message


async def test_server_killed_mid_purge(redis_server: RedisServer) -> None:
    client = redis_server.client()
    # 400,000 keys written by the server itself: fast to load, long enough to purge.
    await client.eval("for i = 1, 400000 do redis.call('SET', 'mcp:dashboard:' .. i, 'v') end", 0)
    settings = settings_for(redis_server)
    purge = asyncio.create_task(
        run_action("redisExpireKeys", {"pattern": "mcp:dashboard:*", "ttlSeconds": 600}, settings)
    )
    while (await client.info("keyspace"))["db0"].get("expires", 0) == 0:
        assert not purge.done()
        await asyncio.sleep(0.001)
    redis_server.kill()
    await client.aclose()

    with pytest.raises(StepFailed) as failed:
        await purge

    assert failed.value.transient and failed.value.reason == "RedisUnavailable"
    assert f"Redis at {redis_server.address}/0" in failed.value.message


async def test_a_server_that_does_not_answer_times_out(redis_server: RedisServer) -> None:
    redis_server.pause()
    settings = settings_for(redis_server, redis_timeout_seconds=0.2)

    with pytest.raises(StepFailed) as failed:
        await run_action("redisPing", {}, settings)

    assert failed.value.transient and failed.value.reason == "RedisTimeout"
    assert "did not answer within 0.2s" in failed.value.message


async def test_a_read_only_replica_refuses_the_purge(redis_factory: RedisFactory) -> None:
    # no diskless-sync delay: the replica gets the data at once
    primary = redis_factory(args=["--repl-diskless-sync-delay", "0"])
    await fill(primary, "mcp:dashboard:", 100)
    replica = redis_factory(replica_of=primary)
    replica_client = replica.client()
    while (await replica_client.info("keyspace")).get("db0", {}).get("keys", 0) < 100:
        await asyncio.sleep(0.01)
    await replica_client.aclose()
    params = {"pattern": "mcp:dashboard:*", "ttlSeconds": 0}

    with pytest.raises(StepFailed) as failed:
        await run_action("redisExpireKeys", params, settings_for(replica))
    counted = await run_action("redisExpireKeys", params, settings_for(replica), dry_run=True)

    assert failed.value.transient and failed.value.reason == "RedisReadOnly"
    assert "read-only replica" in failed.value.message
    assert len(await ttls(primary, "mcp:dashboard:*")) == 100
    assert counted.outputs["matched"] == "100"  # a dry run only reads: fine on a replica


async def test_a_purge_still_works_when_redis_is_out_of_memory(
    redis_factory: RedisFactory,
) -> None:
    server = redis_factory(args=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"])
    client = server.client()
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for n in range(10_000):
            await client.set(f"mcp:dashboard:{n}", b"x" * 1024)
    settings = settings_for(server)
    inspected = await run_action("redisInspect", {"sections": ["memory"]}, settings)
    assert float(inspected.outputs["memoryRatio"]) >= 1.0

    result = await run_action(
        "redisExpireKeys", {"pattern": "mcp:dashboard:*", "ttlSeconds": 0}, settings
    )

    assert int(result.outputs["changed"]) > 1000
    assert await client.set("mcp:after", "v")  # memory was freed: writes work again
    await client.aclose()
