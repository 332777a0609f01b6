"""Pure parts of the Redis actions: URLs, error mapping, params, sampling.

No Redis runs here. Secret references are ``actions/credentials``' (test_credentials.py).
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.exceptions
from pydantic import ValidationError

from mcp_remediator.actions import REGISTRY
from mcp_remediator.actions.redis import Progress, key_prefix, largest_prefixes
from mcp_remediator.errors import StepFailed
from mcp_remediator.settings import Settings
from mcp_remediator.vendors import redis as vendor


def test_key_prefix_is_the_first_two_segments() -> None:
    assert key_prefix(b"mcp:dashboard:123") == "mcp:dashboard:"
    assert key_prefix(b"mcp:dashboard:finbot:7") == "mcp:dashboard:"
    assert key_prefix(b"user:42") == "user:"
    assert key_prefix(b"plain") == ""
    assert key_prefix(b"bin:\xff:1") == "bin:\\xff:"


def test_largest_prefixes_rank_by_memory_and_hide_one_off_prefixes() -> None:
    keys = [b"a:x:%d" % n for n in range(6)] + [b"b:y:%d" % n for n in range(3)]
    keys += [b"session:token-1:data"]
    sizes = [10] * 6 + [100] * 3 + [50]

    found = largest_prefixes(keys, sizes, dbsize=100)

    assert [p.prefix for p in found] == ["b:y:", "a:x:"]
    assert (found[0].sampled, found[0].estimated_keys, found[0].estimated_bytes) == (3, 30, 3000)
    assert found[1].share == pytest.approx(0.6)
    assert not any("token" in p.prefix for p in found)


def test_largest_prefixes_by_count_without_sizes() -> None:
    keys = [b"a:x:%d" % n for n in range(2)] + [b"b:y:%d" % n for n in range(5)]

    found = largest_prefixes(keys, None, dbsize=7, top=1)

    assert [(p.prefix, p.estimated_keys, p.estimated_bytes) for p in found] == [("b:y:", 5, None)]
    assert largest_prefixes([], None, dbsize=0) == []


@pytest.mark.parametrize(
    ("url", "host", "port", "db", "tls"),
    [
        ("redis://localhost", "localhost", 6379, 0, False),
        ("redis://:pw@10.0.0.5:6380/4", "10.0.0.5", 6380, 4, False),
        (
            "rediss://user:pw@redis.example:6390/0?ssl_cert_reqs=none",
            "redis.example",
            6390,
            0,
            True,
        ),
        ("redis://redis?db=2", "redis", 6379, 2, False),
    ],
)
def test_parse_target(url: str, host: str, port: int, db: int, tls: bool) -> None:
    target = vendor.parse_target(url, "MCP_REDIS_URL")

    assert (target.host, target.port, target.db, target.tls) == (host, port, db, tls)
    assert target.url.get_secret_value() == url
    assert "pw" not in repr(target) and "pw" not in target.address


@pytest.mark.parametrize(
    "url",
    [
        "http://:pw@redis:6379/0",
        "unix:///var/run/redis.sock?password=pw",
        "redis://:pw@redis:notaport/0",
        "redis://:pw@redis:6379/zero",
        "redis://:p/w@redis:6379/0",
        "pw",
    ],
)
def test_bad_urls_fail_without_showing_the_url(url: str) -> None:
    with pytest.raises(StepFailed) as failed:
        vendor.parse_target(url, "MCP_REDIS_URL")

    assert failed.value.reason == "RedisBadUrl"
    assert failed.value.message.startswith("MCP_REDIS_URL")
    assert "pw" not in failed.value.message


async def test_an_unknown_url_option_is_a_clear_failure() -> None:
    target = vendor.parse_target("redis://:pw@127.0.0.1:9/0?no_such_option=1", "MCP_REDIS_URL")

    with pytest.raises(StepFailed) as failed:
        async with vendor.connect(target, Settings()):
            pass

    assert failed.value.reason == "RedisBadUrl"
    assert "no_such_option" in failed.value.message and "pw" not in failed.value.message


@pytest.mark.parametrize(
    ("error", "reason", "transient"),
    [
        (redis.exceptions.AuthenticationError("invalid password"), "RedisAuthFailed", False),
        (redis.exceptions.NoPermissionError("no permissions"), "RedisNoPermission", False),
        (redis.exceptions.ReadOnlyError("read only replica"), "RedisReadOnly", True),
        (redis.exceptions.OutOfMemoryError("command not allowed"), "RedisOutOfMemory", False),
        (redis.exceptions.TimeoutError("Timeout reading"), "RedisTimeout", True),
        (redis.exceptions.BusyLoadingError("loading"), "RedisBusy", True),
        (redis.exceptions.ConnectionError("Connection closed"), "RedisUnavailable", True),
        (redis.exceptions.ResponseError("BUSY running a script"), "RedisBusy", True),
        (redis.exceptions.ResponseError("MASTERDOWN link down"), "RedisBusy", True),
        (redis.exceptions.ResponseError("MOVED 3999 10.0.0.1:6379"), "RedisError", False),
        (redis.exceptions.ResponseError("ERR unknown command"), "RedisError", False),
    ],
)
def test_redis_errors_become_step_failures(
    error: redis.exceptions.RedisError, reason: str, transient: bool
) -> None:
    target = vendor.parse_target("redis://:pw@cache:6379/1", "MCP_REDIS_URL")

    failure = vendor.step_failure(error, target, "expiring keys", timeout=1.5)

    assert (failure.reason, failure.transient) == (reason, transient)
    assert "cache:6379/1" in failure.message or "MCP_REDIS_URL" in failure.message
    assert "pw@" not in failure.message


@pytest.mark.parametrize(
    "params",
    [
        {"pattern": "mcp:*", "ttlSeconds": -1},
        {"pattern": "mcp:*"},
        {"pattern": "", "ttlSeconds": 0},
        {"pattern": "mcp:*", "ttlSeconds": 0, "maxKeys": 0},
        {"pattern": "mcp:*", "ttlSeconds": 0, "match": "x"},
        {"pattern": "mcp:*", "ttlSeconds": 0, "redis": {"url": "redis://x"}},
        {"pattern": "mcp:*", "ttlSeconds": 0, "redis": {"urlSecretRef": {"name": "Bad_Name"}}},
    ],
)
def test_expire_params_are_checked(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        REGISTRY["redisExpireKeys"].parse(params)


def test_inspect_sections_default_to_all_and_are_checked() -> None:
    spec = REGISTRY["redisInspect"]
    assert spec.parse({}).sections == ["memory", "stats", "keyspace"]
    with pytest.raises(ValidationError):
        spec.parse({"sections": ["clients"]})
    with pytest.raises(ValidationError):
        spec.parse({"sections": []})


def test_progress_resumes_only_the_same_purge() -> None:
    saved = {**Progress("mcp:*", "expire", "1234", 10, 8, 8, 0.5).outputs(), "cursor": "1234"}

    resumed = Progress.resume(saved, "mcp:*", "expire")

    assert (resumed.cursor, resumed.scanned, resumed.changed, resumed.seconds) == (
        "1234",
        10,
        8,
        0.5,
    )
    assert Progress.resume(saved, "mcp:dashboard:*", "expire").cursor == "0"
    assert Progress.resume(saved, "mcp:*", "unlink").cursor == "0"
    assert Progress.resume({**saved, "cursor": "x"}, "mcp:*", "expire").cursor == "0"
    finished = {key: value for key, value in saved.items() if key != "cursor"}
    assert Progress.resume(finished, "mcp:*", "expire").scanned == 0
