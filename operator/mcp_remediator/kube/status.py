"""Writing our objects' status safely: one helper per pattern, used by every writer.

- ``patch_status``: a merge patch of the ``status`` subresource, optionally under a
  ``resourceVersion`` precondition; a precondition that no longer holds raises
  ``Conflict`` (the API's 409), nothing else does.
- ``retry_on_conflict``: client-go's ``retry.RetryOnConflict`` — run a read → decide →
  write attempt again while it raises ``Conflict``, a bounded number of times.

Used by the engine (remediation runs), the receiver's ingestion (cancel on resolve,
Skipped marks, runbook counters) and the runbook validation handler.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from mcp_remediator.kube.client import ApiError, KubeApi

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_CONFLICT_RETRIES = 5


class Conflict(Exception):
    """The object changed since it was read; read it again and decide again."""


async def patch_status(
    kube: KubeApi,
    api_version: str,
    plural: str,
    namespace: str,
    name: str,
    status: Mapping[str, Any],
    *,
    resource_version: str | None = None,
) -> Any:
    """Merge-patch ``status``; with ``resource_version``, only if the object is unchanged."""
    patch: dict[str, Any] = {"status": dict(status)}
    if resource_version is not None:
        patch["metadata"] = {"resourceVersion": resource_version}
    try:
        return await kube.patch(api_version, plural, namespace, name, patch, subresource="status")
    except ApiError as exc:
        if exc.status == 409 and resource_version is not None:
            raise Conflict(f"{plural} {namespace}/{name} changed meanwhile") from exc
        raise


async def retry_on_conflict(
    attempt: Callable[[], Awaitable[T]], what: str, *, retries: int = MAX_CONFLICT_RETRIES
) -> T:
    """``await attempt()`` until it does not raise ``Conflict``; after ``retries`` tries,
    an ``ApiError`` 409 saying that ``what`` keeps changing."""
    for _ in range(retries):
        try:
            return await attempt()
        except Conflict:
            log.info("%s changed meanwhile; reading it again", what)
    raise ApiError(409, "Conflict", f"{what} keeps changing")
