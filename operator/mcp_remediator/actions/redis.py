"""``redisPing``, ``redisInspect``, ``redisExpireKeys``: the guide's Redis checks and fixes.

Registered in the action registry (imported by ``actions/__init__``) and run by the
engine; each opens one connection per attempt through ``vendors.redis``, to
``MCP_REDIS_URL`` for trusted namespaces (``MCP_TRUSTED_NAMESPACES``), else to the URL in
the Secret the step names in ``redis.urlSecretRef`` (``actions/credentials``): an untrusted
namespace without one fails ``CredentialsNotAllowed`` before any connection opens.

``redisInspect`` never reports a key name. It samples only under the allowed prefixes
(SCAN with ``MATCH <prefix>*``, so other names never leave the server) and reports key
*shapes* (``key_shapes``): the prefix, then each ``:`` segment kept only when it is plainly
a structural word and else ``*`` (``mcp:user:12345:cart`` → ``mcp:user:*:cart``), with
estimated key counts and bytes per shape.

``redisExpireKeys`` is the guide's "clear the dashboard cache" without ``KEYS`` or
``FLUSHALL``. The keyspace is walked with SCAN + MATCH inside a server-side Lua script:
each call runs SCAN batches and sets the TTL of (or UNLINKs) the matching keys in place,
so no key name crosses the network, and stops after a time slice (``SLICE_MICROSECONDS``)
or a fixed number of SCAN batches, whichever comes first. A script runs atomically, so
the slice is the longest any other client waits behind us; the next slice starts one
round trip later, after Redis has served everyone who queued meanwhile. Progress
(cursor and counters) is checkpointed into the step's outputs, so an attempt cut short
by the step's timeout or an operator restart resumes where the last one stopped.

Its counts are totals over all the step's attempts, and exact whenever they can be
(issue 12: a retried purge reported 291,426 of 400,000 deleted keys). A count and the
cursor are only ever saved together, so the next attempt resumes after exactly the keys
counted: nothing is counted twice. What can be lost is work no checkpoint records: a
deleted key, or under ``onlyWithoutTtl`` one that now has a TTL, is not matched again by a
later SCAN. Hence an attempt that ends early (a Redis error, the engine's timeout, its own
deadline) first saves the counts of every slice whose reply came. While it runs, it
checkpoints every ``WINDOW_KEYS`` matched keys rather than after every slice (an API
write per ~2 ms slice would slow a purge several times over).

Two things stay unknown, and the outputs say so (``exact: false``, and at most how many
keys in ``uncounted``) instead of under-reporting in silence. A slice whose reply never
came (the connection dropped, the socket timed out, the attempt was cancelled) may or
may not have run: it is bounded by its cap, ``SLICE_MAX_KEYS``, as the script takes whole
SCAN batches only while they fit. And an operator that dies leaves unrecorded the slices
since its last checkpoint: each checkpoint declares that window beforehand (``pending``),
and the attempt writes the next one before going past it. A plain expiry (no
``onlyWithoutTtl``) needs neither bound in the end: the next attempt sets those keys'
TTLs again and counts them itself, unless the TTL ran out first (``Progress.settle``).
Keys that may have been changed unseen count against ``maxKeys``, which therefore holds.
A key that SCAN returns twice (it can, when the keyspace's hash table shrinks during the
walk) is counted twice by a plain expiry, which sets its TTL twice, and by a dry run;
deleted, or given a TTL under ``onlyWithoutTtl``, it is not matched again.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio
import redis.exceptions
from pydantic import Field

from mcp_remediator import redact
from mcp_remediator.actions import credentials
from mcp_remediator.actions.credentials import SecretKeyRef
from mcp_remediator.actions.registry import (
    ActionContext,
    ActionParams,
    ActionResult,
    action,
)
from mcp_remediator.errors import StepFailed, TransientFailure
from mcp_remediator.kube import refusals
from mcp_remediator.settings import Settings
from mcp_remediator.vendors import redis as vendor

# One script call stops after this much server time, so that other clients wait at most
# about this long (plus one SCAN batch) behind a purge: the p99 target is 10 ms.
SLICE_MICROSECONDS = 2000
# ... or after this many SCAN batches, should the server's clock not advance in scripts.
MAX_SCANS_PER_SLICE = 32
SCAN_COUNT = 500
# UNLINK takes many keys; chunks stay well below Lua's stack limit for unpack().
UNLINK_CHUNK = 256
CHECKPOINT_SECONDS = 5.0
# What a purge may have done that no checkpoint records yet (see Progress): a slice takes
# SCAN batches whole while the keys it matches stay within its cap (a slice of 2 ms
# matches about 1,000 to 2,500), and an attempt writes a checkpoint before the slices
# since its last one could match more than a window.
SLICE_MAX_KEYS = 8192
WINDOW_KEYS = 65_536
# Primary and replica clocks may differ by this much (Progress.settle compares server
# times taken before and after a failover).
CLOCK_MARGIN_MICROSECONDS = 1_000_000
# An attempt stops and checkpoints this long before the step's deadline, so that the
# next attempt resumes instead of the engine cancelling a slice half-way.
STOP_BEFORE_DEADLINE_SECONDS = 1.0
PINGS = 5
# redisInspect: key names sampled per allowed prefix, SCAN COUNT of its calls and their
# bound per prefix (about 100,000 keys examined), and how it reports shapes (key_shapes).
SAMPLE_KEYS = 1000
INSPECT_SCAN_COUNT = 500
INSPECT_MAX_SCANS = 200
TOP_SHAPES = 5
MIN_SHAPE_KEYS = 2
MAX_SHAPE_SEGMENTS = 6
MAX_WORD_LENGTH = 20
MAX_WORDS_PER_LEVEL = 8
PLACEHOLDER = "*"
_WORD = re.compile(r"[a-z]+(?:[_-][a-z]+)*")
_HEX_LETTERS = re.compile(r"[a-f]{6,}")

# ARGV: cursor, pattern, scan count, mode (expire|unlink|count), ttl (passed on to EXPIRE
# as the string it arrives as, saving a conversion per key), only keys without
# TTL (1|0), how many more keys may match (-1: no limit), slice in µs, max SCAN batches,
# cap (-1: none): a SCAN batch is taken whole, or left whole to the next call when its keys
# would take those matched past the cap. Returns {cursor, scanned, matched, changed,
# stopped, needed, time}: stopped=1 when the limit left keys of the last batch untouched;
# needed=n (cursor unchanged, nothing done) when the first batch alone held n keys, more
# than the cap; time: the server's clock (µs) at the end. Keys come from SCAN, not
# KEYS[]: a standalone server.
PURGE_SCRIPT = """
local call = redis.call
local cursor, pattern, count, mode = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local ttl, only_without_ttl, limit = ARGV[5], ARGV[6] == '1', tonumber(ARGV[7])
local slice, max_scans, cap = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local function now()
  local t = call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local started = now()
local scanned, matched, changed, stopped, scans, needed = 0, 0, 0, 0, 0, 0
repeat
  local reply = call('SCAN', cursor, 'MATCH', pattern, 'COUNT', count)
  scans = scans + 1
  local keys, victims = reply[2], {}
  if cap >= 0 and matched + #keys > cap then
    if scans == 1 then
      needed = #keys
    end
    break
  end
  cursor = reply[1]
  for i = 1, #keys do
    if limit >= 0 and matched >= limit then
      stopped = 1
      break
    end
    local key = keys[i]
    scanned = scanned + 1
    if not only_without_ttl or call('PTTL', key) == -1 then
      matched = matched + 1
      if mode == 'expire' then
        changed = changed + call('EXPIRE', key, ttl)
      elseif mode == 'unlink' then
        victims[#victims + 1] = key
      end
    end
  end
  for i = 1, #victims, CHUNK do
    changed = changed + call('UNLINK', unpack(victims, i, math.min(i + CHUNK - 1, #victims)))
  end
until cursor == '0' or stopped == 1 or (limit >= 0 and matched >= limit)
  or scans >= max_scans or now() - started >= slice
return {cursor, scanned, matched, changed, stopped, needed, now()}
""".replace("CHUNK", str(UNLINK_CHUNK))

Section = Literal["memory", "stats", "keyspace"]
SECTIONS: tuple[Section, ...] = ("memory", "stats", "keyspace")


class RedisRef(ActionParams):
    urlSecretRef: SecretKeyRef = Field(
        description="Secret key (in the remediation's own namespace) holding a `redis://` or "
        "`rediss://` URL (password, db)."
    )


class RedisParams(ActionParams):
    """Base of every Redis action's params: which Redis, defined once."""

    redis: RedisRef | None = Field(
        None,
        description="Which Redis: `{urlSecretRef: {name, key}}`; omitted: `MCP_REDIS_URL`, "
        "for trusted namespaces only (`MCP_TRUSTED_NAMESPACES`; elsewhere the step fails "
        "`CredentialsNotAllowed`).",
    )


# Every Redis action may read its URL from a Secret (`redis.urlSecretRef`).
REDIS_ACCESS = [credentials.SECRET_ACCESS]


class RedisPingParams(RedisParams):
    pass


class RedisInspectParams(RedisParams):
    sections: list[Section] = Field(
        default_factory=lambda: list(SECTIONS),
        min_length=1,
        description="What to report: `memory` (used/max, ratio, policy), `stats` (hits, "
        "misses, hit ratio, evictions), `keyspace` (keys per db, largest key shapes under "
        "the allowed prefixes by sampling).",
    )


class RedisExpireKeysParams(RedisParams):
    pattern: str = Field(
        min_length=1,
        max_length=1024,
        description="SCAN MATCH glob, e.g. `mcp:dashboard:*`; must begin with an allowed "
        "prefix (`MCP_REDIS_ALLOWED_PREFIXES`).",
    )
    ttlSeconds: int = Field(
        ge=0, le=2**31 - 1, description="TTL to set on each key; 0 deletes them with UNLINK."
    )
    onlyWithoutTtl: bool = Field(False, description="Touch only keys that have no TTL yet.")
    maxKeys: int | None = Field(
        None, ge=1, description="Stop after this many keys (a budget); unset: no limit."
    )


def _validate_pattern(params: RedisExpireKeysParams, settings: Settings, _: str | None) -> None:
    refusals.check_redis_pattern(settings, params.pattern)


@asynccontextmanager
async def _connection(
    ref: RedisRef | None, ctx: ActionContext, doing: str
) -> AsyncIterator[redis.asyncio.Redis]:
    """A connection to the step's Redis; redis-py errors become step failures.

    The URL is resolved first (``credentials.endpoint``): an untrusted namespace without
    ``redis.urlSecretRef`` fails ``CredentialsNotAllowed`` before any connection opens.
    """
    target = await _target(ref, ctx)
    try:
        async with vendor.connect(target, ctx.settings) as client:
            yield client
    except redis.exceptions.RedisError as exc:
        # ``from None``: the chained redis-py exception is not needed to explain the cause.
        raise vendor.step_failure(
            exc, target, doing, timeout=ctx.settings.redis_timeout_seconds
        ) from None


async def _target(ref: RedisRef | None, ctx: ActionContext) -> vendor.RedisTarget:
    """The server to use: ``redis.urlSecretRef`` of the remediation's namespace, else
    ``MCP_REDIS_URL`` (trusted namespaces only)."""
    default = credentials.OperatorEndpoint(
        "the operator-level Redis", "MCP_REDIS_URL", ctx.settings.redis_url
    )
    found = await credentials.endpoint(
        ctx,
        default,
        url_ref=None if ref is None else ref.urlSecretRef,
        url_param="redis.urlSecretRef",
        not_found="RedisSecretNotFound",
        unreadable="RedisBadUrl",
    )
    if found.url is None:
        raise StepFailed(
            "no Redis configured: set MCP_REDIS_URL or give the step redis.urlSecretRef",
            reason="RedisNotConfigured",
        )
    return vendor.parse_target(found.url.value.get_secret_value(), found.url.source)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


@action(
    "redisPing",
    RedisPingParams,
    "PING the Redis server and report the round-trip latency. Outputs `latencyMs` (median "
    "of 5), `maxLatencyMs`.",
    writes=False,
    access=REDIS_ACCESS,
)
async def redis_ping(params: RedisPingParams, ctx: ActionContext) -> ActionResult:
    async with _connection(params.redis, ctx, "sending PING") as client:
        rounds = []
        for _ in range(PINGS):
            started = time.perf_counter()
            await client.ping()
            rounds.append(time.perf_counter() - started)
    outputs = {"latencyMs": _ms(statistics.median(rounds)), "maxLatencyMs": _ms(max(rounds))}
    return ActionResult(f"PONG; median latency {outputs['latencyMs']} ms over {PINGS}", outputs)


def _ratio(part: float, whole: float) -> str:
    return f"{part / whole:.4f}"


def key_segments(key: bytes, prefixes: Sequence[str]) -> tuple[str, list[str]] | None:
    """The allowed prefix ``key`` begins with (the longest) and the rest of its segments,
    each kept when it is a structural word (``is_word``) and else ``*``; None for a key
    outside the allowed prefixes. Segments past ``MAX_SHAPE_SEGMENTS`` become one ``*``."""
    text = key.decode("utf-8", "replace")  # U+FFFD is no word: undecodable bytes become *
    prefix = max((p for p in prefixes if text.startswith(p)), key=len, default=None)
    if prefix is None:
        return None
    segments = text[len(prefix) :].split(":")
    tokens = [s if s == "" or is_word(s) else PLACEHOLDER for s in segments[:MAX_SHAPE_SEGMENTS]]
    if len(segments) > MAX_SHAPE_SEGMENTS:
        tokens.append(PLACEHOLDER)
    return prefix, tokens


def is_word(segment: str) -> bool:
    """A plainly structural segment: lowercase letters, possibly joined by ``_`` or ``-``,
    at most ``MAX_WORD_LENGTH`` long, and not six or more hex letters (``deadbeef``).
    Anything else (digits, capitals, ``@``, ``.``, ``=``, UUIDs, tokens) may carry an id."""
    return (
        len(segment) <= MAX_WORD_LENGTH
        and _WORD.fullmatch(segment) is not None
        and _HEX_LETTERS.fullmatch(segment.replace("-", "").replace("_", "")) is None
    )


def _collapse_fan_out(parsed: list[tuple[str, list[str]]]) -> None:
    """Replace by ``*`` the words of a position where more than ``MAX_WORDS_PER_LEVEL``
    different ones follow the same parent shape: that position holds data (user names,
    tenants), not structure, however word-like its values look."""
    depth = 0
    while True:
        words: dict[tuple[str, tuple[str, ...]], set[str]] = {}
        deeper = False
        for prefix, tokens in parsed:
            if len(tokens) > depth:
                deeper = True
                if tokens[depth] != PLACEHOLDER:
                    words.setdefault((prefix, tuple(tokens[:depth])), set()).add(tokens[depth])
        if not deeper:
            return
        crowded = {parent for parent, seen in words.items() if len(seen) > MAX_WORDS_PER_LEVEL}
        for prefix, tokens in parsed:
            if len(tokens) > depth and (prefix, tuple(tokens[:depth])) in crowded:
                tokens[depth] = PLACEHOLDER
        depth += 1


@dataclass(frozen=True)
class ShapeStats:
    """A key shape of a sample and what it holds, scaled up to the whole database."""

    shape: str
    sampled: int
    estimated_keys: int
    estimated_bytes: int | None


def key_shapes(
    keys: Sequence[bytes],
    weights: Sequence[float],
    sizes: Sequence[int] | None,
    prefixes: Sequence[str],
    top: int = TOP_SHAPES,
) -> list[ShapeStats]:
    """The key shapes holding the most memory (or keys, without ``sizes``) in a sample.

    ``weights[i]``: how many keys of the database ``keys[i]`` stands for. A shape is the
    allowed prefix, then each further ``:`` segment kept only when it is a structural word
    and else ``*`` (``mcp:user:12345:cart`` → ``mcp:user:*:cart``); see ``is_word`` and
    ``_collapse_fan_out``. Keys outside ``prefixes`` are ignored; a shape of fewer than
    ``MIN_SHAPE_KEYS`` sampled keys is left out. A shape is also a SCAN MATCH glob of
    its keys, for ``redisExpireKeys``.
    """
    parsed: list[tuple[str, list[str]]] = []
    indexes: list[int] = []
    for index, key in enumerate(keys):
        found = key_segments(key, prefixes)
        if found is not None:
            parsed.append(found)
            indexes.append(index)
    _collapse_fan_out(parsed)
    counts: Counter[str] = Counter()
    estimated: dict[str, float] = {}
    size_sums: dict[str, float] = {}
    for index, (prefix, tokens) in zip(indexes, parsed, strict=True):
        shape = prefix + ":".join(tokens)
        counts[shape] += 1
        estimated[shape] = estimated.get(shape, 0.0) + weights[index]
        if sizes is not None:
            size_sums[shape] = size_sums.get(shape, 0.0) + sizes[index] * weights[index]
    found_shapes = [
        ShapeStats(
            shape=shape,
            sampled=count,
            estimated_keys=round(estimated[shape]),
            estimated_bytes=None if sizes is None else round(size_sums[shape]),
        )
        for shape, count in counts.items()
        if count >= MIN_SHAPE_KEYS
    ]
    found_shapes.sort(key=lambda s: (-(s.estimated_bytes or 0), -s.estimated_keys, s.shape))
    return found_shapes[:top]


def match_pattern(prefix: str) -> str:
    """The SCAN MATCH glob of the keys under ``prefix``, its glob characters escaped."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", prefix) + "*"


def sampled_prefixes(prefixes: Sequence[str]) -> list[str]:
    """The allowed prefixes that no other one covers (``mcp:`` covers ``mcp:cache:``), so
    that each key is sampled once."""
    unique = sorted(set(prefixes))
    return [p for p in unique if not any(q != p and p.startswith(q) for q in unique)]


async def _sample_prefix(
    client: redis.asyncio.Redis, prefix: str, dbsize: int
) -> tuple[list[bytes], float]:
    """About ``SAMPLE_KEYS`` key names under ``prefix`` by SCAN with MATCH (hash order, so
    a fair sample), and how many keys of the database each one stands for.

    The server filters by MATCH: names outside the prefix never reach the operator. Each
    SCAN call examines about COUNT keys of the whole keyspace, matching or not, which is
    how a scan cut short (enough keys, or ``INSPECT_MAX_SCANS``) scales up.
    """
    keys: list[bytes] = []
    cursor, scans = 0, 0
    pattern = match_pattern(prefix)
    while True:
        cursor, batch = await client.scan(cursor, match=pattern, count=INSPECT_SCAN_COUNT)
        scans += 1
        keys.extend(key if isinstance(key, bytes) else key.encode() for key in batch)
        if cursor == 0 or len(keys) >= SAMPLE_KEYS or scans >= INSPECT_MAX_SCANS:
            break
    if cursor == 0:
        return keys, 1.0
    examined = max(len(keys), scans * INSPECT_SCAN_COUNT)
    return keys, max(1.0, dbsize / examined)


async def _sample_keys(
    client: redis.asyncio.Redis, prefixes: Sequence[str], dbsize: int
) -> tuple[list[bytes], list[float], list[int] | None]:
    """Sampled key names under the allowed prefixes, their weights, and their sizes."""
    keys: list[bytes] = []
    weights: list[float] = []
    for prefix in sampled_prefixes(prefixes):
        found, weight = await _sample_prefix(client, prefix, dbsize)
        keys.extend(found)
        weights.extend([weight] * len(found))
    if not keys:
        return keys, weights, None
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    try:
        sizes = await pipe.execute(raise_on_error=True)
    except redis.exceptions.ResponseError:
        # MEMORY may be denied by ACL or disabled by a managed Redis: rank by key count.
        return keys, weights, None
    return keys, weights, [int(size or 0) for size in sizes]


@action(
    "redisInspect",
    RedisInspectParams,
    "Report used/max memory and ratio, `maxmemory-policy`, hits/misses and hit ratio, "
    "keys per db, and the largest key shapes found by sampling. Outputs `usedMemory`, "
    "`maxMemory`, `memoryRatio` (with a maxmemory), `maxmemoryPolicy`, `hits`, `misses`, "
    "`hitRatio`, `evictedKeys`, `expiredKeys`, `keys`, `db<N>Keys`, `db<N>Expires`, "
    "`sampledKeys`, `topShapes`, and `shape<R>`, `shape<R>Share`, `shape<R>Keys`, "
    "`shape<R>Bytes` for the 5 largest (estimated). Key names never leave it: it samples "
    "only under the allowed prefixes (`MCP_REDIS_ALLOWED_PREFIXES`; SCAN with `MATCH "
    "<prefix>*`, never KEYS) and reports key shapes, in which every segment after the "
    "prefix that is not a short lowercase word (letters, `_`, `-`; no digits, no run of 6+ "
    "hex letters) is replaced by `*`, as is a position with more than 8 different words "
    "(`mcp:user:12345:cart` → `mcp:user:*:cart`, `mcp:session:<uuid>` → `mcp:session:*`); "
    "a shape of fewer than 2 sampled keys is left out.",
    writes=False,
    access=REDIS_ACCESS,
)
async def redis_inspect(params: RedisInspectParams, ctx: ActionContext) -> ActionResult:
    outputs: dict[str, str] = {}
    summary: list[str] = []
    async with _connection(params.redis, ctx, "reading INFO") as client:
        if "memory" in params.sections:
            summary.append(_memory(await client.info("memory"), outputs))
        if "stats" in params.sections:
            summary.append(_stats(await client.info("stats"), outputs))
        if "keyspace" in params.sections:
            keyspace = await client.info("keyspace")
            dbsize = int(await client.dbsize())
            prefixes = ctx.settings.redis_allowed_prefixes
            keys, weights, sizes = await _sample_keys(client, prefixes, dbsize)
            shapes = key_shapes(keys, weights, sizes, prefixes)
            summary.append(_keyspace(keyspace, dbsize, len(keys), shapes, outputs))
    return ActionResult("; ".join(summary), outputs)


def _memory(info: dict[str, Any], outputs: dict[str, str]) -> str:
    used, limit = int(info["used_memory"]), int(info.get("maxmemory", 0))
    policy = str(info.get("maxmemory_policy", "unknown"))
    outputs.update(usedMemory=str(used), maxMemory=str(limit), maxmemoryPolicy=policy)
    if limit <= 0:
        return f"memory {used} bytes used, no maxmemory set (policy {policy})"
    outputs["memoryRatio"] = _ratio(used, limit)
    return f"memory {used} of {limit} bytes used ({used / limit:.0%}, policy {policy})"


def _stats(info: dict[str, Any], outputs: dict[str, str]) -> str:
    hits, misses = int(info["keyspace_hits"]), int(info["keyspace_misses"])
    outputs.update(hits=str(hits), misses=str(misses))
    outputs["evictedKeys"] = str(info.get("evicted_keys", 0))
    outputs["expiredKeys"] = str(info.get("expired_keys", 0))
    if hits + misses == 0:
        return "no keyspace lookups yet"
    outputs["hitRatio"] = _ratio(hits, hits + misses)
    return f"hit ratio {hits / (hits + misses):.2f} ({hits} hits, {misses} misses)"


def _keyspace(
    info: dict[str, Any],
    dbsize: int,
    sampled: int,
    shapes: list[ShapeStats],
    outputs: dict[str, str],
) -> str:
    total = 0
    for db, stats in sorted(info.items()):
        if db.startswith("db") and isinstance(stats, dict):
            total += int(stats.get("keys", 0))
            outputs[f"{db}Keys"] = str(stats.get("keys", 0))
            outputs[f"{db}Expires"] = str(stats.get("expires", 0))
    outputs["keys"] = str(total)
    outputs["sampledKeys"] = str(sampled)
    outputs["topShapes"] = ",".join(s.shape for s in shapes)
    for rank, found in enumerate(shapes, start=1):
        outputs[f"shape{rank}"] = found.shape
        outputs[f"shape{rank}Share"] = _ratio(found.estimated_keys, max(dbsize, 1))
        outputs[f"shape{rank}Keys"] = str(found.estimated_keys)
        if found.estimated_bytes is not None:
            outputs[f"shape{rank}Bytes"] = str(found.estimated_bytes)
    text = f"{total} keys"
    if shapes:
        top = shapes[0]
        share = top.estimated_keys / max(dbsize, 1)
        text += f", largest key shape {top.shape} (about {share:.0%} of the keys)"
    return text


UNKNOWN = "unknown"


@dataclass
class Progress:
    """How far a purge got over all its attempts, and how exactly it knows.

    Saved in the step's outputs by ``checkpoint``: the counts, with the SCAN cursor they
    belong to (the next attempt resumes there, so no key is counted twice), and
    ``pending``: at most how many keys the attempt that wrote it may match after it,
    should it end without writing another (a killed operator; a final checkpoint says 0,
    or the cap of the slice whose reply never came). ``resume`` adds that to
    ``uncounted``: keys which earlier attempts may have matched and changed (and, in
    unlink mode, scanned) without counting them. A slice that only sets TTLs is done
    again by the next attempt, which counts it; ``settle`` drops what it thereby counted.

    ``uncounted`` is ``None`` when unknown: a checkpoint of an earlier version (which did
    not say what its attempt did after it), or one that cannot be read.
    ``uncounted_since``: the server's clock (µs) at the earliest moment an attempt may have
    changed a key it did not count; ``server_time``: the server's clock at the end of the
    last slice (or when the attempt began).
    """

    pattern: str
    mode: str
    cursor: str = "0"
    scanned: int = 0
    matched: int = 0
    changed: int = 0
    seconds: float = 0.0
    uncounted: int | None = 0
    uncounted_since: int | None = None
    server_time: int = 0

    @classmethod
    def resume(cls, outputs: dict[str, str], pattern: str, mode: str) -> Progress:
        """Continue from a checkpoint of the same purge, else start afresh (not knowing,
        from a checkpoint that cannot be read, what the attempts before did)."""
        fresh = cls(pattern, mode)
        if outputs.get("pattern") != pattern or outputs.get("mode") != mode:
            return fresh
        try:
            progress = cls(
                pattern,
                mode,
                cursor=str(int(outputs["cursor"])),
                scanned=int(outputs["scanned"]),
                matched=int(outputs["matched"]),
                changed=int(outputs["changed"]),
                seconds=int(outputs["durationMs"]) / 1000,
            )
            if mode == "count":
                return progress  # a dry run changes nothing; what it counted, it redoes
            if "pending" not in outputs or outputs.get("uncounted") == UNKNOWN:
                progress.uncounted = None
                return progress
            pending = int(outputs["pending"])
            progress.uncounted = int(outputs["uncounted"]) + pending
            since = outputs.get("uncountedSince")
            candidates = [int(since)] if since else []
            if pending > 0:
                candidates.append(int(outputs["at"]))
            progress.uncounted_since = min(candidates, default=None)
            if pending < 0 or progress.uncounted < 0:
                raise ValueError("a negative count")
        except (KeyError, ValueError):
            # A finished step's outputs have no cursor: nothing is lost starting afresh.
            if "cursor" in outputs and mode != "count":
                fresh.uncounted = None
            return fresh
        return progress

    def record(self, reply: Sequence[Any]) -> tuple[int, bool, int]:
        """Add a slice's reply; returns (keys it matched, stopped, keys needed)."""
        cursor, scanned, matched, changed, stopped, needed, server_time = reply
        self.cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        self.scanned += int(scanned)
        self.matched += int(matched)
        self.changed += int(changed)
        self.server_time = int(server_time)
        return int(matched), bool(stopped), int(needed)

    def checkpoint(self, pending: int) -> dict[str, str]:
        """What to save so that the next attempt resumes here (see the class)."""
        return {
            **self.outputs(),
            "cursor": self.cursor,
            "pending": str(pending),
            "at": str(self.server_time),
            "uncountedSince": "" if self.uncounted_since is None else str(self.uncounted_since),
        }

    def settle(self, ttl_seconds: int, complete: bool) -> None:
        """Drop the uncounted keys of a plain expiry that later attempts counted.

        Such a purge sets the TTL of every key it finds, so an attempt resuming before an
        unseen slice sets (and counts) its keys again, provided they still exist: each got a
        TTL of ``ttl_seconds`` no earlier than ``uncounted_since``, so none can have expired
        before a walk that reached the end of the keyspace before that TTL ran out. (One
        that another client deleted meanwhile is not counted: the purge's TTL on it did
        nothing.)
        """
        if (
            self.mode == "expire"
            and complete
            and self.uncounted
            and self.uncounted_since is not None
            and self.server_time + CLOCK_MARGIN_MICROSECONDS
            < self.uncounted_since + ttl_seconds * 1_000_000
        ):
            self.uncounted, self.uncounted_since = 0, None

    def outputs(self) -> dict[str, str]:
        return {
            "pattern": self.pattern,
            "mode": self.mode,
            "scanned": str(self.scanned),
            "matched": str(self.matched),
            "changed": str(self.changed),
            "exact": str(self.uncounted == 0).lower(),
            "uncounted": UNKNOWN if self.uncounted is None else str(self.uncounted),
            "durationMs": str(round(self.seconds * 1000)),
        }


@action(
    "redisExpireKeys",
    RedisExpireKeysParams,
    "Set a TTL on (or, with `ttlSeconds: 0`, UNLINK) the keys matching `pattern`: "
    "cursor-based SCAN in short server-side slices, never KEYS/FLUSHDB/FLUSHALL; the "
    "pattern must begin with an allowed prefix. Outputs `scanned` (keys matching the "
    "pattern), `matched` (of those, the keys to change), `changed` (0 in a dry run), "
    "`durationMs`, `complete` (`false` when `maxKeys` stopped it), all over every attempt "
    "of the step; `exact` (`false` when an interrupted attempt may have changed keys it "
    "could not count: its last slice's reply was lost, or the operator died) and "
    "`uncounted` (at most how many: `changed` is then a lower bound, `changed + "
    "uncounted` an upper one; `maxKeys` counts them as spent).",
    writes=True,
    access=REDIS_ACCESS,
    validate=_validate_pattern,
)
async def redis_expire_keys(params: RedisExpireKeysParams, ctx: ActionContext) -> ActionResult:
    refusals.check_redis_pattern(ctx.settings, params.pattern)
    if ctx.dry_run:
        mode = "count"
    else:
        mode = "unlink" if params.ttlSeconds == 0 else "expire"
    progress = Progress.resume(ctx.outputs, params.pattern, mode)
    async with _connection(params.redis, ctx, f"expiring keys matching {params.pattern}") as client:
        complete = await _purge(params, ctx, client, progress)
    if not params.onlyWithoutTtl:
        # Only a plain expiry redoes an unseen slice: a deleted key, or one that now has a
        # TTL under onlyWithoutTtl, is not matched again.
        progress.settle(params.ttlSeconds, complete)
    outputs = {**progress.outputs(), "complete": str(complete).lower()}
    return ActionResult(_purge_message(params, progress, complete), outputs)


async def _purge(
    params: RedisExpireKeysParams,
    ctx: ActionContext,
    client: redis.asyncio.Redis,
    progress: Progress,
) -> bool:
    """Run slices from ``progress`` on; True when the keyspace was walked to its end.

    Counts stay exact because the durable record (the checkpoint) always covers what the
    server did: before a slice that could take the keys matched since the last checkpoint
    past the window that checkpoint declared (``pending``), a new one is written; and an
    attempt that ends early, by an error, the engine's timeout (a cancellation) or its
    deadline, first saves the counts of every slice whose reply came, with ``pending``
    the cap of a slice still awaiting its reply (it may have run), else 0.
    """
    writes = progress.mode != "count"
    script = vendor.Script(client, PURGE_SCRIPT)
    if writes:
        seconds, micros = await client.time()
        progress.server_time = int(seconds) * 1_000_000 + int(micros)
    window = 0  # keys this attempt may still match before it must checkpoint again
    needed = 0
    in_flight = 0  # the cap of the slice awaiting its reply
    saved_final = False
    earlier, started = progress.seconds, time.perf_counter()
    last_checkpoint = time.monotonic()

    async def save(pending: int) -> None:
        progress.seconds = earlier + time.perf_counter() - started
        await ctx.checkpoint(progress.checkpoint(pending))

    try:
        while not _budget_spent(params, progress):
            limit = -1 if params.maxKeys is None else params.maxKeys - _spent(progress)
            cap = max(SLICE_MAX_KEYS, needed) if writes else -1
            bound = 0 if not writes else cap if limit < 0 else min(cap, limit)
            if bound > window:
                window = max(WINDOW_KEYS, bound)
                await save(window)
                last_checkpoint = time.monotonic()
            in_flight = bound
            reply = await script(
                progress.cursor,
                params.pattern,
                SCAN_COUNT,
                progress.mode,
                params.ttlSeconds,
                int(params.onlyWithoutTtl),
                limit,
                SLICE_MICROSECONDS,
                MAX_SCANS_PER_SLICE,
                cap,
            )
            matched, stopped, needed = progress.record(reply)
            in_flight = 0
            window -= matched
            progress.seconds = earlier + time.perf_counter() - started
            if progress.cursor == "0" and not stopped and not needed:
                return True
            if stopped or _budget_spent(params, progress):
                return False
            if ctx.remaining() < STOP_BEFORE_DEADLINE_SECONDS:
                await save(0)
                saved_final = True
                raise TransientFailure(
                    f"{progress.changed} keys matching {params.pattern} done when the step's "
                    "time ran out; the next attempt resumes from the saved SCAN cursor",
                    reason="Timeout",
                )
            if time.monotonic() - last_checkpoint >= CHECKPOINT_SECONDS:
                window = WINDOW_KEYS if writes else 0
                await save(window)
                last_checkpoint = time.monotonic()
        return False
    except (Exception, asyncio.CancelledError):
        if not saved_final:
            try:
                await save(in_flight)
            except Exception as exc:
                # The last checkpoint stands: its window covers everything done since.
                ctx.log.warning(
                    "could not save the purge's progress (%s)", redact.exception_type(exc)
                )
        raise


def _spent(progress: Progress) -> int:
    """Keys counted against ``maxKeys``: those matched and those possibly matched unseen."""
    return progress.matched + (progress.uncounted or 0)


def _budget_spent(params: RedisExpireKeysParams, progress: Progress) -> bool:
    return params.maxKeys is not None and _spent(progress) >= params.maxKeys


def _purge_message(params: RedisExpireKeysParams, progress: Progress, complete: bool) -> str:
    which = "keys without a TTL" if params.onlyWithoutTtl else "keys"
    what = f"{which} matching {params.pattern}"
    if progress.mode == "count":
        verb = "delete" if params.ttlSeconds == 0 else f"set a {params.ttlSeconds}s TTL on"
        text = f"dry run: would {verb} {progress.matched} {what}; changed nothing"
    elif progress.mode == "unlink":
        text = f"deleted {progress.changed} {what}"
    else:
        text = f"set a {params.ttlSeconds}s TTL on {progress.changed} {what}"
    if progress.uncounted is None:
        text += (
            ", and an unknown number more: a checkpoint of an earlier attempt (written by an "
            "earlier version, or unreadable) does not say what it did after it"
        )
    elif progress.uncounted:
        text += (
            f", and at most {progress.uncounted} more that interrupted attempts may have "
            "changed unseen"
        )
    text += f" ({progress.scanned} scanned in {progress.seconds * 1000:.0f} ms)"
    if not complete:
        text += f"; stopped at the budget of maxKeys={params.maxKeys}, more keys may match"
    return text
