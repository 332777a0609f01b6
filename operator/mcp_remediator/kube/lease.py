"""Leader election through a ``coordination.k8s.io/v1`` Lease: which replica executes runs.

Every replica of the operator receives alerts; exactly one, the holder of the Lease
``MCP_LEASE_NAME`` in ``MCP_LEASE_NAMESPACE``, executes runs (``executor``). The protocol
is client-go's ``leaderelection`` with a Lease lock:

- a candidate takes the Lease when it is free (no holder), released, or expired: its
  record has not changed for ``leaseDurationSeconds`` *as observed by the candidate's own
  clock* (the holder's ``renewTime`` is never compared with the local clock, so clock skew
  between nodes does not matter);
- every write is a PUT carrying the ``resourceVersion`` read (or a create), so of two
  candidates exactly one wins (the other gets 409);
- the holder renews every ``retry`` seconds and considers itself leader only until
  ``renew_deadline`` (two thirds of the duration) after its last successful renewal began:
  a holder cut off from the API steps down before anyone else may take over;
- a holder that stops gracefully releases the Lease (empty holder, one-second duration),
  so a rolling update hands over at once instead of after the duration.

The elector fails loudly at start-up when the Lease cannot be used at all — the API does
not serve Leases, or RBAC forbids them — instead of idling (``LeaseUnavailable``).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from typing import Any

from mcp_remediator.kube.client import ApiError, KubeApi

log = logging.getLogger(__name__)

API_VERSION = "coordination.k8s.io/v1"
LEASES = "leases"
Listener = Callable[[bool], None]


class LeaseUnavailable(Exception):
    """The Lease cannot be read or written at all: no election is possible."""


def _micro_time(moment: datetime.datetime | None = None) -> str:
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Campaigns for the Lease while ``run`` runs; ``leader`` tells whether we hold it now."""

    def __init__(
        self,
        kube: KubeApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        duration: float,
        on_change: Listener | None = None,
    ):
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.renew_deadline = duration * 2 / 3
        self.retry = max(duration / 5, 0.05)
        self.on_change = on_change
        self._valid_until = 0.0  # loop time until which we may act as leader
        self._observed: tuple[str, float] | None = None  # (resourceVersion, local time seen)
        self._was_leader = False
        # The release a stopped campaign started: its owner may await it (``Executor.stop``).
        self.releasing: asyncio.Future[None] | None = None

    @property
    def leader(self) -> bool:
        return asyncio.get_running_loop().time() < self._valid_until

    @property
    def where(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    async def check(self) -> None:
        """Fail at start-up when the Lease cannot be used at all (``LeaseUnavailable``)."""
        try:
            if not await self.kube.served(API_VERSION, LEASES):
                raise LeaseUnavailable(self._unusable(ApiError(404, "NotFound", "not served")))
            await self.kube.get_or_none(API_VERSION, LEASES, self.namespace, self.name)
        except ApiError as exc:
            if exc.status in (401, 403, 404):
                raise LeaseUnavailable(self._unusable(exc)) from exc
            raise

    def _unusable(self, exc: ApiError) -> str:
        what = "is not allowed to use" if exc.status in (401, 403) else "cannot find the API of"
        return (
            f"the operator {what} its {self.where} ({exc.status} {exc.reason}): replicas "
            f"elect the one that executes runs through it. Apply manifests/rbac (the Role "
            f"mcp-remediator-leader-election), or set MCP_LEASE_NAMESPACE to the operator's "
            f"namespace; coordination.k8s.io/v1 is served by every Kubernetes since 1.14"
        )

    async def run(self) -> None:
        """Campaign and renew until cancelled; release the Lease when cancelled as holder."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                try:
                    if await self._try_acquire_or_renew(started):
                        self._valid_until = started + self.renew_deadline
                except ApiError as exc:
                    if exc.status in (401, 403):
                        raise LeaseUnavailable(self._unusable(exc)) from exc
                    log.warning("%s: %s", self.where, exc)
                self._notify()
                # Wake up in time to step down exactly at the deadline when renewals fail.
                wait = self.retry
                if self._was_leader:
                    wait = min(wait, max(self._valid_until - loop.time(), 0.0) + 0.001)
                await asyncio.sleep(wait)
        finally:
            if self._was_leader:
                self._valid_until = 0.0
                self._notify()
                self.releasing = asyncio.ensure_future(self._release())

    def _notify(self) -> None:
        leader = self.leader
        if leader != self._was_leader:
            self._was_leader = leader
            log.info("%s: %s", self.where, "this replica now executes runs" if leader else "lost")
            if self.on_change is not None:
                self.on_change(leader)

    async def _try_acquire_or_renew(self, now: float) -> bool:
        lease = await self.kube.get_or_none(API_VERSION, LEASES, self.namespace, self.name)
        stamp = _micro_time()
        if lease is None:
            body = self._body({}, stamp, transitions=0)
            try:
                await self.kube.create(API_VERSION, LEASES, self.namespace, body)
            except ApiError as exc:
                if exc.status == 409:
                    return False  # another replica created it first
                if exc.status == 404:
                    raise LeaseUnavailable(self._unusable(exc)) from exc
                raise
            return True
        meta, spec = lease["metadata"], lease.get("spec") or {}
        version = str(meta.get("resourceVersion"))
        if self._observed is None or self._observed[0] != version:
            self._observed = (version, now)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.duration)
        expired = now >= self._observed[1] + duration
        if holder and holder != self.identity and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (holder != self.identity)
        body = self._body(lease, stamp, transitions=transitions)
        if holder == self.identity:
            body["spec"]["acquireTime"] = spec.get("acquireTime") or stamp
        try:
            await self.kube.replace(API_VERSION, LEASES, self.namespace, body)
        except ApiError as exc:
            if exc.status == 409:
                return False  # someone else wrote it since we read it
            raise
        return True

    def _body(self, current: dict[str, Any], stamp: str, *, transitions: int) -> dict[str, Any]:
        metadata = dict(current.get("metadata") or {"name": self.name})
        metadata["namespace"] = self.namespace
        return {
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(int(round(self.duration)), 1),
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": transitions,
            },
        }

    async def _release(self) -> None:
        """Give the Lease up (best effort): the next candidate need not wait it out."""
        try:
            lease = await self.kube.get_or_none(API_VERSION, LEASES, self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = dict(lease["spec"])
            spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=_micro_time())
            await self.kube.replace(API_VERSION, LEASES, self.namespace, {**lease, "spec": spec})
            log.info("%s released", self.where)
        except (ApiError, OSError) as exc:
            log.warning("%s not released: %s", self.where, exc)
