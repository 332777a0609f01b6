"""Renders ``manifests/tenant/step-actions.yaml`` from the registry: a ClusterRole that
grants, per action, what its steps need from the Kubernetes API.

Steps never run with the operator's rights: each impersonates a ServiceAccount of its
remediation's namespace. This ClusterRole is what a team binds, with a RoleBinding in its
own namespace (so it grants nothing beyond that namespace), to the account its runbooks act
as, when it wants every action available there; a team that wants less writes its own Role
from the per-action comments. It binds nothing by itself.

One rule per distinct need the actions declare with ``@action(..., access=[...])``, merged
where several actions need the same API group, resources and verbs, each under a comment
naming the action(s) and why they need it. Adding an action never means editing the file:
``make generate`` (``tools.generate``) rewrites it, and a test fails while it is stale.
"""

from __future__ import annotations

import textwrap

from mcp_remediator.actions import REGISTRY
from mcp_remediator.actions.registry import VERBS, Verb

PATH = "manifests/tenant/step-actions.yaml"
NAME = "mcp-remediator-step-actions"
WIDTH = 92

HEADER = f"""\
# Generated from each action's @action(..., access=[...]) by tools/rbacgen.py
# (`make generate`); do not edit by hand.
#
# Everything mcp-remediator's actions may need from the Kubernetes API, per action. It
# binds nothing by itself: a team grants its runner account these rights in its OWN
# namespace with a RoleBinding (a ClusterRole bound by a RoleBinding grants nothing outside
# that namespace), e.g.
#   kubectl -n team-a create serviceaccount mcp-remediator-runner
#   kubectl -n team-a create rolebinding mcp-remediator-runner \\
#     --clusterrole={NAME} --serviceaccount=team-a:mcp-remediator-runner
# or copies the rules it wants into a Role of its own (least privilege: only the actions
# its runbooks use, with resourceNames where it can). Cluster-scoped kinds in it
# (ClusterPolicy, ValidatingPolicy, ImageValidatingPolicy, ClusterPolicyReport,
# ClusterReport) are granted only by a ClusterRoleBinding.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {NAME}
  labels:
    app.kubernetes.io/name: mcp-remediator
    app.kubernetes.io/component: runner
rules:
"""

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


def _flow(items: tuple[str, ...], key: str = "") -> str:
    """A YAML flow sequence after ``key``, continued on more-indented lines past ``WIDTH``."""
    text = "[" + ", ".join(item or '""' for item in items) + "]"
    lines = textwrap.wrap(
        text,
        WIDTH,
        initial_indent=key,
        subsequent_indent=" " * (len(key) - len(key.lstrip()) + 2),
        break_on_hyphens=False,
        break_long_words=False,
    )
    return "\n".join(lines)[len(key) :] if key else text


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
            f"    resources: {_flow(resources, '    resources: ')}",
            f"    verbs: {_flow(verbs)}",
        ]
    return "".join(f"{line}\n" for line in lines)


def render() -> str:
    """The whole file."""
    return HEADER + render_rules()
