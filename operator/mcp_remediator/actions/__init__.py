"""The action registry, populated by importing every action module.

Each module under ``actions/`` registers its actions with ``@action``; this package
imports them all so that ``REGISTRY`` is complete wherever it is used.
"""

from mcp_remediator.actions import redis, workloads
from mcp_remediator.actions.registry import (
    REGISTRY,
    ActionContext,
    ActionParams,
    ActionResult,
    ActionSpec,
    action,
)

__all__ = [
    "REGISTRY",
    "ActionContext",
    "ActionParams",
    "ActionResult",
    "ActionSpec",
    "action",
    "redis",
    "workloads",
]
