"""A purge's counts over attempts that end in every way (issue 12), without a Redis.

``redisExpireKeys`` runs against an in-memory keyspace and a model of its Lua script
(``ModelScript``: the same SCAN batches, cap, limit and reply). Each attempt may lose a
slice's reply, fail before sending one, run out of time, be cancelled at a checkpoint, or
die (``Killed``: nothing of the action runs after it) after a slice or a checkpoint; the
next attempt resumes from the last checkpoint, as the engine's does, until one completes.
Whatever happened, the outputs bracket the truth (the keys the model server changed):
``changed <= truth <= changed + uncounted``, exact when no reply went missing and no
operator died, and ``maxKeys`` holds. ``Progress`` itself is checked first: a checkpoint
carries every attempt's counts, and folds in what each may have done after it, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast
from unittest import mock

import pytest
import redis.exceptions
from hypothesis import event, example, given
from hypothesis import strategies as st

from mcp_remediator.actions import REGISTRY, ActionContext
from mcp_remediator.actions import redis as redis_actions
from mcp_remediator.actions.redis import CLOCK_MARGIN_MICROSECONDS, UNKNOWN, Progress
from mcp_remediator.clients import Clients
from mcp_remediator.errors import TransientFailure
from mcp_remediator.settings import Settings
from mcp_remediator.vendors import redis as vendor

PATTERN = "mcp:*"
SETTINGS = Settings()
NOW = 1_700_000_000 * 1_000_000  # µs: a server clock

# -- Progress: what a checkpoint carries --------------------------------------------------

# One attempt: what it added (scanned, matched, changed), the window it declared last
# (pending), and the server's clock then.
ATTEMPT = st.tuples(
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 100_000),
    st.integers(NOW, NOW + 10**9),
)


@given(mode=st.sampled_from(["expire", "unlink"]), attempts=st.lists(ATTEMPT, max_size=8))
def test_checkpoints_carry_every_attempts_counts_and_pending_once(
    mode: str, attempts: list[tuple[int, int, int, int, int]]
) -> None:
    saved: dict[str, str] = {}
    totals, pendings, since = (0, 0, 0), 0, None
    for number, (scanned, matched, changed, pending, at) in enumerate(attempts, start=1):
        progress = Progress.resume(saved, PATTERN, mode)
        # An attempt that ends before it saves anything leaves the same for the next.
        assert Progress.resume(saved, PATTERN, mode) == progress
        assert (progress.scanned, progress.matched, progress.changed) == totals
        assert (progress.uncounted, progress.uncounted_since) == (pendings, since)
        progress.cursor = str(number)
        progress.scanned += scanned
        progress.matched += matched
        progress.changed += changed
        progress.server_time = at
        # ActionContext.checkpoint merges into the outputs saved so far.
        saved = {**saved, **progress.checkpoint(pending)}
        totals = (totals[0] + scanned, totals[1] + matched, totals[2] + changed)
        pendings += pending
        if pending:
            since = at if since is None else min(since, at)

    final = Progress.resume(saved, PATTERN, mode)

    assert (final.scanned, final.matched, final.changed) == totals
    assert (final.uncounted, final.uncounted_since) == (pendings, since)
    assert final.outputs()["exact"] == str(pendings == 0).lower()
    assert final.outputs()["uncounted"] == str(pendings)


def test_a_dry_run_has_nothing_uncounted() -> None:
    progress = Progress(PATTERN, "count", cursor="42", scanned=10, matched=7)
    resumed = Progress.resume(progress.checkpoint(pending=5), PATTERN, "count")
    assert (resumed.cursor, resumed.matched, resumed.uncounted) == ("42", 7, 0)


def test_an_unreadable_or_older_checkpoint_leaves_the_count_unknown() -> None:
    older = {**Progress(PATTERN, "unlink", cursor="42", changed=9).outputs(), "cursor": "42"}
    del older["exact"], older["uncounted"]  # written before the purge declared its windows

    resumed = Progress.resume(older, PATTERN, "unlink")

    assert (resumed.cursor, resumed.changed, resumed.uncounted) == ("42", 9, None)
    assert resumed.outputs()["exact"] == "false"
    assert resumed.outputs()["uncounted"] == UNKNOWN
    # Unknown stays unknown, attempt after attempt.
    assert Progress.resume(resumed.checkpoint(0), PATTERN, "unlink").uncounted is None
    for broken in ({"cursor": "x"}, {"pending": "-1"}, {"changed": ""}):
        saved = {**Progress(PATTERN, "unlink", cursor="42").checkpoint(0), **broken}
        again = Progress.resume(saved, PATTERN, "unlink")
        assert (again.cursor, again.changed, again.uncounted) == ("0", 0, None)
    # A finished step's outputs (no cursor): a new purge, nothing lost.
    assert Progress.resume(Progress(PATTERN, "unlink").outputs(), PATTERN, "unlink").uncounted == 0
    assert Progress.resume(older, PATTERN, "count").uncounted == 0


@pytest.mark.parametrize(
    ("complete", "ended", "settled"),
    [
        (True, NOW + 60_000_000 - CLOCK_MARGIN_MICROSECONDS - 1, True),
        (True, NOW + 60_000_000 - CLOCK_MARGIN_MICROSECONDS, False),  # a TTL may have run out
        (False, NOW + 1, False),  # the budget stopped it: unseen keys may lie beyond
    ],
)
def test_a_plain_expiry_settles_what_later_attempts_counted_again(
    complete: bool, ended: int, settled: bool
) -> None:
    progress = Progress(PATTERN, "expire", changed=10, uncounted=5, uncounted_since=NOW)
    progress.server_time = ended

    progress.settle(ttl_seconds=60, complete=complete)

    assert progress.uncounted == (0 if settled else 5)
    deleted = Progress(PATTERN, "unlink", uncounted=5, uncounted_since=NOW, server_time=NOW)
    deleted.settle(ttl_seconds=60, complete=True)
    assert deleted.uncounted == 5  # a deleted key is not found again


# -- the purge loop against a model server ------------------------------------------------


class Killed(BaseException):
    """The operator's process dies here: nothing of the action runs after it."""


# A fault of one attempt: at the n-th slice (the reply is lost after the server ran it;
# the command never reached it; the operator dies after it; the step's time runs out
# after it) or at the n-th checkpoint (the attempt is cancelled, or dies, once it is saved).
SLICE_FAULTS = ("lost", "unsent", "killed", "deadline")
CHECKPOINT_FAULTS = ("cancelled", "killed at checkpoint")
UNSEEN = ("lost", "unsent", "killed", "killed at checkpoint")  # may leave work uncounted
Fault = tuple[str, int] | None
FAULT = st.one_of(
    st.tuples(st.sampled_from(SLICE_FAULTS), st.integers(1, 8)),
    st.tuples(st.sampled_from(CHECKPOINT_FAULTS), st.integers(1, 6)),
)


@dataclass
class Model:
    """A keyspace in SCAN order, each key with or without a TTL, and what the purge did."""

    order: list[str]
    ttl: dict[str, bool]
    changed: set[str] = field(default_factory=set)
    clock: int = NOW
    fault: Fault = None
    slices: int = 0
    checkpoints: int = 0
    ctx: ActionContext | None = None

    async def time(self) -> tuple[int, int]:
        return divmod(self.clock, 1_000_000)

    def script(self, *argv: str | int) -> list[Any]:
        """PURGE_SCRIPT, in Python: cursor = position in ``order``."""
        cursor, _, count, mode, _, only, limit, _, max_scans, cap = argv
        position, count, limit, cap = int(cursor), int(count), int(limit), int(cap)
        scanned = matched = changed = stopped = scans = needed = 0
        while True:
            batch = [k for k in self.order[position : position + count] if k in self.ttl]
            scans += 1
            if cap >= 0 and matched + len(batch) > cap:
                needed = len(batch) if scans == 1 else 0
                break
            position = position + count if position + count < len(self.order) else 0
            victims = []
            for key in batch:
                if limit >= 0 and matched >= limit:
                    stopped = 1
                    break
                scanned += 1
                if not only or not self.ttl[key]:
                    matched += 1
                    if mode == "expire":
                        self.ttl[key] = True
                        self.changed.add(key)
                        changed += 1
                    elif mode == "unlink":
                        victims.append(key)
            for key in victims:
                del self.ttl[key]
                self.changed.add(key)
                changed += 1
            if position == 0 or stopped or 0 <= limit <= matched or scans >= int(max_scans):
                break
        self.clock += 2000
        return [str(position).encode(), scanned, matched, changed, stopped, needed, self.clock]


class ModelScript:
    """Stands in for ``vendors.redis.Script``: runs the model, with the attempt's fault."""

    def __init__(self, client: Model, source: str):
        self.model = client

    async def __call__(self, *args: str | int) -> Any:
        model = self.model
        model.slices += 1
        kind, at = model.fault or ("", 0)
        if (kind, at) == ("unsent", model.slices):
            raise redis.exceptions.ConnectionError("Connection refused")
        reply = model.script(*args)
        if at == model.slices:
            if kind == "lost":
                raise redis.exceptions.ConnectionError("Connection reset by peer")
            if kind == "killed":
                raise Killed
            if kind == "deadline":
                assert model.ctx is not None
                model.ctx.deadline = 0.0
        return reply


@dataclass
class Run:
    outputs: dict[str, str]
    truth: int
    unseen: int  # attempts that ended with work possibly uncounted


async def purge(model: Model, params: dict[str, Any], dry_run: bool, faults: list[Fault]) -> Run:
    spec = REGISTRY["redisExpireKeys"]
    parsed = spec.parse(params)
    saved: dict[str, str] = {}
    unseen = 0

    @asynccontextmanager
    async def connection(*_: Any) -> AsyncIterator[Model]:
        yield model

    async def checkpoint(values: Any) -> None:
        saved.clear()
        saved.update(values)  # as the engine's status, and durably
        model.checkpoints += 1
        kind, at = model.fault or ("", 0)
        if at == model.checkpoints and kind == "cancelled":
            raise asyncio.CancelledError
        if at == model.checkpoints and kind == "killed at checkpoint":
            raise Killed

    with mock.patch.object(redis_actions, "_connection", connection):
        for fault in [*faults, None]:
            model.fault, model.slices, model.checkpoints = fault, 0, 0
            model.ctx = ActionContext(
                clients=cast(Clients, None),  # the purge only talks to Redis
                settings=SETTINGS,
                namespace="mcp",
                dry_run=dry_run,
                remediation="mcp/x",
                step="purge",
                outputs=dict(saved),
                checkpoint_fn=checkpoint,
            )
            try:
                result = await spec.fn(parsed, model.ctx)
            except (Killed, redis.exceptions.RedisError, TransientFailure, asyncio.CancelledError):
                fired = fault is not None and (
                    fault[1] <= (model.slices if fault[0] in SLICE_FAULTS else model.checkpoints)
                )
                unseen += fired and fault is not None and fault[0] in UNSEEN
                continue
            return Run(result.outputs, len(model.changed), unseen)
    raise AssertionError("the last attempt has no fault")


@given(
    keys=st.integers(0, 300),
    with_ttl=st.frozensets(st.integers(0, 299)),
    params=st.sampled_from(
        [
            {"ttlSeconds": 0},
            {"ttlSeconds": 600},
            {"ttlSeconds": 0, "onlyWithoutTtl": True},
            {"ttlSeconds": 600, "onlyWithoutTtl": True},
        ]
    ),
    max_keys=st.none() | st.integers(1, 300),
    dry_run=st.booleans(),
    faults=st.lists(FAULT, max_size=5),
    sizes=st.sampled_from([(3, 10, 25), (7, 10, 25), (15, 10, 40), (7, 20, 20)]),
    every_slice=st.booleans(),
)
# Always tried: an operator dead several slices after its last checkpoint; a lost reply,
# then a retry that dies at its first checkpoint; a lost reply under a budget; a cap below
# one SCAN batch.
@example(200, frozenset(), {"ttlSeconds": 0}, None, False, [("killed", 5)], (3, 10, 25), False)
@example(
    200,
    frozenset(range(0, 200, 3)),
    {"ttlSeconds": 600, "onlyWithoutTtl": True},
    None,
    False,
    [("lost", 2), ("killed at checkpoint", 1)],
    (7, 10, 25),
    False,
)
@example(200, frozenset(), {"ttlSeconds": 0}, 50, False, [("lost", 2)], (7, 10, 25), False)
@example(200, frozenset(), {"ttlSeconds": 600}, None, False, [("unsent", 3)], (15, 10, 40), True)
def test_counts_bracket_what_the_server_did_and_are_exact_unless_work_went_unseen(
    keys: int,
    with_ttl: frozenset[int],
    params: dict[str, Any],
    max_keys: int | None,
    dry_run: bool,
    faults: list[Fault],
    sizes: tuple[int, int, int],
    every_slice: bool,
) -> None:
    order = [f"mcp:{n}" for n in range(keys)]
    model = Model(order, {key: n in with_ttl for n, key in enumerate(order)})
    eligible = sum(1 for key in order if not params.get("onlyWithoutTtl") or not model.ttl[key])
    scan_count, slice_keys, window = sizes
    params = {**params, "pattern": PATTERN, "maxKeys": max_keys}
    constants = {
        "SCAN_COUNT": scan_count,
        "MAX_SCANS_PER_SLICE": 3,
        "SLICE_MAX_KEYS": slice_keys,
        "WINDOW_KEYS": window,
        "CHECKPOINT_SECONDS": 0.0 if every_slice else 3600.0,
    }
    with ExitStack() as stack:
        for name, value in constants.items():
            stack.enter_context(mock.patch.object(redis_actions, name, value))
        stack.enter_context(mock.patch.object(vendor, "Script", ModelScript))
        run = asyncio.run(purge(model, params, dry_run, faults))

    out = {key: int(value) for key, value in run.outputs.items() if value.isdigit()}
    complete = run.outputs["complete"] == "true"
    event(f"dry run: {dry_run}; attempts ended unseen: {min(run.unseen, 2)}")
    event(f"exact: {run.outputs['exact']}; complete: {complete}")
    if dry_run:
        assert model.changed == set()
        assert out["matched"] == min(eligible, max_keys or eligible)
        assert run.outputs["exact"] == "true"
        return
    assert out["changed"] <= run.truth <= out["changed"] + out["uncounted"]
    assert run.truth <= (max_keys or eligible)
    if complete:  # every key it should change, it did
        assert run.truth == eligible
    plain_expiry = params["ttlSeconds"] > 0 and not params.get("onlyWithoutTtl")
    if run.unseen == 0 or (plain_expiry and complete):
        assert (run.outputs["exact"], out["changed"]) == ("true", run.truth)
    # Each attempt that ended unseen adds at most a window (a slice's cap if it said so).
    assert out["uncounted"] <= run.unseen * max(window, slice_keys, scan_count)
