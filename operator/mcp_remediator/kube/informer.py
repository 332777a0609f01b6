"""A list-then-watch loop over one kind: the operator's own view of its McpRemediations.

Kopf serves the runbooks; the remediations, whose number grows with history, are watched
here instead, so that a finished record costs nothing but its compact entry in the
``index`` — no per-object worker, no handler call, no finalizer, no annotation write.

``Informer.run`` lists in pages of ``PAGE`` (so that memory holds one page of full
objects at a time, whatever the history), hands each object to ``apply(None, obj)``,
sets ``synced`` once the whole list is in, then watches from the list's
``resourceVersion`` and hands on each event (``ADDED``/``MODIFIED``/``DELETED``). A watch
that the server ends is resumed from the last version seen; a 410 Gone (the version was
compacted away) relists. Errors are logged and retried with a capped backoff: the loop
never ends on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from mcp_remediator.kube.client import ApiError, KubeApi

log = logging.getLogger(__name__)

PAGE = 500
WATCH_SECONDS = 300
Apply = Callable[[str | None, dict[str, Any]], object]
Listed = Callable[[str | None, set[tuple[str, str]]], None]


class Informer:
    """Lists and watches ``api_version``/``plural`` (all namespaces, or the given ones)."""

    def __init__(
        self,
        kube: KubeApi,
        api_version: str,
        plural: str,
        apply: Apply,
        *,
        namespaces: list[str] | None = None,
        listed: Listed | None = None,
    ):
        self.kube = kube
        self.api_version = api_version
        self.plural = plural
        self.apply = apply
        self.listed = listed  # told which objects a (re)list found: the others are gone
        self.namespaces: list[str | None] = list(namespaces or []) or [None]
        self.synced = asyncio.Event()

    async def run(self) -> None:
        if len(self.namespaces) == 1:
            await self._follow(self.namespaces[0], self.synced)
            return
        flags = [asyncio.Event() for _ in self.namespaces]

        async def all_synced() -> None:
            await asyncio.gather(*(flag.wait() for flag in flags))
            self.synced.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(all_synced())
            for namespace, flag in zip(self.namespaces, flags, strict=True):
                group.create_task(self._follow(namespace, flag))

    async def _follow(self, namespace: str | None, synced: asyncio.Event) -> None:
        backoff = 0.5
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._list(namespace)
                    synced.set()
                version = await self._watch(namespace, version)
                backoff = 0.5
            except ApiError as exc:
                log.warning("watching %s: %s; again in %.1fs", self.plural, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _list(self, namespace: str | None) -> str:
        token: str | None = None
        seen: set[tuple[str, str]] = set()
        while True:
            items, metadata = await self.kube.list_page(
                self.api_version, self.plural, namespace, limit=PAGE, continue_token=token
            )
            for item in items:
                meta = item.get("metadata") or {}
                seen.add((str(meta.get("namespace") or ""), str(meta.get("name") or "")))
                self.apply(None, item)
            token = metadata.get("continue") or None
            if token is None:
                if self.listed is not None:
                    self.listed(namespace, seen)
                return str(metadata.get("resourceVersion") or "")

    async def _watch(self, namespace: str | None, version: str) -> str | None:
        """Follow events from ``version``; the version to resume from, ``None`` to relist."""
        async for event in self.kube.watch(
            self.api_version,
            self.plural,
            namespace,
            resource_version=version,
            timeout_seconds=WATCH_SECONDS,
        ):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    log.info("watching %s: version %s expired; listing again", self.plural, version)
                    return None
                raise ApiError(int(obj.get("code") or 0), str(obj.get("reason")), str(obj))
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind != "BOOKMARK":
                self.apply(str(kind), obj)
        return version
