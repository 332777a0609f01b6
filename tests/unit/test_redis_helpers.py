"""Pure parts of the Redis actions: URLs, error mapping, params, key shapes.

No Redis runs here. Secret references are ``actions/credentials``' (test_credentials.py).
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.exceptions
from pydantic import ValidationError

from mcp_remediator.actions import REGISTRY
from mcp_remediator.actions.redis import (
    Progress,
    key_shapes,
    match_pattern,
    sampled_prefixes,
)
from mcp_remediator.errors import StepFailed
from mcp_remediator.settings import Settings
from mcp_remediator.vendors import redis as vendor

PREFIXES = ["mcp:"]


def shapes_of(keys: list[bytes], prefixes: list[str] = PREFIXES) -> dict[str, int]:
    found = key_shapes(keys, [1.0] * len(keys), None, prefixes, top=100)
    return {s.shape: s.sampled for s in found}


@pytest.mark.parametrize(
    ("key", "shape"),
    [
        (b"mcp:dashboard:123", "mcp:dashboard:*"),
        (b"mcp:session:3f2a9c1e-7b4d-4e0a-9c1f-2b6d8e4a1c3f", "mcp:session:*"),
        (b"mcp:user:12345:cart", "mcp:user:*:cart"),
        (b"mcp:token:abcdef0123456789", "mcp:token:*"),
        (b"mcp:token:deadbeefcafe", "mcp:token:*"),  # hex that happens to be letters
        (b"mcp:user:alice@example.com:cart", "mcp:user:*:cart"),
        (b"mcp:user:Alice:prefs", "mcp:user:*:prefs"),
        (b"mcp:tok:eyJhbGciOiJIUzI1NiJ9", "mcp:tok:*"),
        (b"mcp:rate_limit:per-user", "mcp:rate_limit:per-user"),
        (b"mcp:x:aaaaaaaaaaaaaaaaaaaaaaaaaa", "mcp:x:*"),  # too long for a word
        (b"mcp:bin:\xff\xfe:1", "mcp:bin:*:*"),
        (b"mcp:{user42}:cart", "mcp:*:cart"),
        (b"mcp:a:b:c:d:e:f:g:h", "mcp:a:b:c:d:e:f:*"),
        (b"mcp:", "mcp:"),
    ],
)
def test_a_shape_keeps_only_the_prefix_and_structural_words(key: bytes, shape: str) -> None:
    assert shapes_of([key, key]) == {shape: 2}


def test_keys_outside_the_allowed_prefixes_are_never_reported() -> None:
    keys = [b"other:secret", b"other:secret", b"session:tok-4711:a", b"session:tok-4711:b"]
    assert shapes_of(keys + [b"mcp:cache:1", b"mcp:cache:2"]) == {"mcp:cache:*": 2}
    # The longest allowed prefix is the one kept verbatim.
    assert shapes_of([b"app:Cache9:1", b"app:Cache9:2"], ["mcp:", "app:Cache9:"]) == {
        "app:Cache9:*": 2
    }


def test_a_position_with_many_different_words_is_data() -> None:
    users = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan"]
    keys = [f"mcp:user:{name}:cart".encode() for name in users]
    keys += [b"mcp:dashboard:1", b"mcp:dashboard:2"]

    shapes = shapes_of(keys)

    assert shapes == {"mcp:user:*:cart": 9, "mcp:dashboard:*": 2}
    # Eight different words at a position are still structure.
    assert shapes_of([f"mcp:{n}:x".encode() for n in users[:8]] * 2) == {
        f"mcp:{n}:x": 2 for n in users[:8]
    }


def test_shapes_rank_by_memory_scale_by_weight_and_hide_one_offs() -> None:
    keys = [b"mcp:a:%d" % n for n in range(6)] + [b"mcp:b:%d" % n for n in range(3)]
    keys += [b"mcp:once"]
    sizes = [10] * 6 + [100] * 3 + [50]
    weights = [10.0] * len(keys)

    found = key_shapes(keys, weights, sizes, PREFIXES)

    assert [s.shape for s in found] == ["mcp:b:*", "mcp:a:*"]
    assert (found[0].sampled, found[0].estimated_keys, found[0].estimated_bytes) == (3, 30, 3000)
    assert (found[1].estimated_keys, found[1].estimated_bytes) == (60, 600)
    by_count = key_shapes(keys, weights, None, PREFIXES, top=1)
    assert [(s.shape, s.estimated_keys, s.estimated_bytes) for s in by_count] == [
        ("mcp:a:*", 60, None)
    ]
    assert key_shapes([], [], None, PREFIXES) == []


def test_scan_patterns_escape_the_prefix_and_cover_each_key_once() -> None:
    assert match_pattern("mcp:") == "mcp:*"
    assert match_pattern("a*b?[c]\\:") == "a\\*b\\?\\[c\\]\\\\:*"
    assert sampled_prefixes(["mcp:cache:", "mcp:", "app:", "mcp:"]) == ["app:", "mcp:"]


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
