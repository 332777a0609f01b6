"""Renders the operator's ClusterRole, ``manifests/rbac/role.yaml``, from the registry.

The file has two parts. Above ``MARKER``: the header and the framework's rules (its
custom resources, Events, CRDs), written by hand and kept exactly as they are. Below it:
one rule per distinct need the actions declare with ``@action(..., access=[...])``,
merged where several actions need the same API group, resources and verbs, each under a
comment naming the action(s) and why they need it. So adding an action never means
editing the role: ``make generate`` (``tools.generate``) rewrites the file, and a test
fails while it is stale.

The role cannot follow settings chosen at deploy time: ``patchResource`` declares the
default of ``MCP_PATCH_ALLOWED_KINDS`` (ConfigMap); whoever allows more kinds grants
``get`` and ``patch`` on them too, e.g. in a kustomize overlay.
"""

from __future__ import annotations

import textwrap

from mcp_remediator.actions import REGISTRY
from mcp_remediator.actions.registry import VERBS, Verb

PATH = "manifests/rbac/role.yaml"
MARKER = (
    "  # ---- Below: rendered from each action's @action(..., access=[...]) by\n"
    "  # ---- tools/rbacgen.py (`make generate`); do not edit by hand.\n"
)
WIDTH = 92

Rule = tuple[str, tuple[str, ...], tuple[Verb, ...]]


def action_rules() -> dict[Rule, list[tuple[str, str]]]:
    """Each distinct rule the actions need, with the (action, why) pairs that need it.

    In the order of the sorted action names and, within an action, of its declaration;
    verbs in the conventional order (get, list, watch, create, ...).
    """
    rules: dict[Rule, list[tuple[str, str]]] = {}
    for name in sorted(REGISTRY):
        for access in REGISTRY[name].access:
            verbs = tuple(verb for verb in VERBS if verb in access.verbs)
            rules.setdefault((access.group, access.resources, verbs), []).append((name, access.why))
    return rules


def _comment(text: str) -> list[str]:
    return [
        f"  # {line}"
        for line in textwrap.wrap(" ".join(text.split()), WIDTH - 4, break_on_hyphens=False)
    ]


def _flow(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(item or '""' for item in items) + "]"


def render_rules() -> str:
    lines: list[str] = []
    for (group, resources, verbs), needed_by in action_rules().items():
        whys = list(dict.fromkeys(why for _, why in needed_by))
        if len(whys) == 1:
            lines += _comment(f"{', '.join(name for name, _ in needed_by)}: {whys[0]}")
        else:
            for name, why in needed_by:
                lines += _comment(f"{name}: {why}")
        lines += [
            f"  - apiGroups: {_flow((group,))}",
            f"    resources: {_flow(resources)}",
            f"    verbs: {_flow(verbs)}",
        ]
    return "".join(f"{line}\n" for line in lines)


def render_role(current: str) -> str:
    """The whole role.yaml: ``current``'s hand-written part, then the actions' rules."""
    head, found, _ = current.partition(MARKER)
    if not found:
        raise ValueError(f"{PATH}: the marker line is missing:\n{MARKER}")
    return head + MARKER + render_rules()
