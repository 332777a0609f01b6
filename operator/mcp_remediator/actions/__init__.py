"""The action registry, populated by importing every action module.

Each module under ``actions/`` registers its actions with ``@action``; this package
imports them all so that ``REGISTRY`` is complete wherever it is used.
"""

from mcp_remediator.actions import (
    argocd,
    http,
    kyverno,
    notify,
    prometheus,
    redis,
    resources,
    workloads,
)
from mcp_remediator.actions.registry import (
    REGISTRY,
    Access,
    ActionContext,
    ActionParams,
    ActionResult,
    ActionSpec,
    action,
)

__all__ = [
    "REGISTRY",
    "Access",
    "ActionContext",
    "ActionParams",
    "ActionResult",
    "ActionSpec",
    "action",
    "argocd",
    "http",
    "kyverno",
    "notify",
    "prometheus",
    "redis",
    "resources",
    "workloads",
]
