"""The action registry, populated by importing every action module.

Each module under ``actions/`` registers its actions with ``@action``; this package
imports every one of them (found with ``pkgutil``, no list to keep) so that ``REGISTRY``
is complete wherever it is used. A module that registers nothing is a helper and is named
in ``HELPER_MODULES``; a test checks every other module registers at least one action.
"""

import importlib
import pkgutil

from mcp_remediator.actions.registry import (
    REGISTRY,
    Access,
    ActionContext,
    ActionParams,
    ActionResult,
    ActionSpec,
    Reverted,
    action,
)

# Modules of this package that register no action: the registry itself, shared types and
# the credentials helper.
HELPER_MODULES = frozenset({"registry", "common", "credentials"})

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "HELPER_MODULES",
    "REGISTRY",
    "Access",
    "ActionContext",
    "ActionParams",
    "ActionResult",
    "ActionSpec",
    "Reverted",
    "action",
]
