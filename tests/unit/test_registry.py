"""The registry finds every action module by itself, and the access declarations hold."""

import importlib
import pkgutil

import pytest

from mcp_remediator import actions
from mcp_remediator.actions import HELPER_MODULES, REGISTRY, Access

ACTIONS = {
    "rolloutRestart",
    "podStatus",
    "redisPing",
    "redisInspect",
    "redisExpireKeys",
    "argocdSync",
    "kyvernoPolicyCheck",
    "httpHealthCheck",
    "httpRequest",
    "prometheusQuery",
    "prometheusVerify",
    "patchResource",
    "notify",
}


def test_every_action_is_registered() -> None:
    assert ACTIONS <= set(REGISTRY), sorted(ACTIONS - set(REGISTRY))


def test_every_module_but_the_helpers_registers_an_action() -> None:
    modules = {m.name for m in pkgutil.iter_modules(actions.__path__)}
    assert HELPER_MODULES <= modules, sorted(HELPER_MODULES - modules)
    registering = {spec.fn.__module__.rpartition(".")[2] for spec in REGISTRY.values()}
    assert registering <= modules
    silent = sorted(modules - HELPER_MODULES - registering)
    assert not silent, (
        f"actions/{silent} register no action: give them an @action, or name them in "
        "HELPER_MODULES if they only hold shared helpers"
    )
    for helper in sorted(HELPER_MODULES & registering):
        pytest.fail(f"actions/{helper} registers actions but is listed in HELPER_MODULES")


def test_the_package_imports_every_module() -> None:
    for module in pkgutil.iter_modules(actions.__path__):
        assert hasattr(actions, module.name), f"actions/{module.name} was not imported"
        assert getattr(actions, module.name) is importlib.import_module(
            f"mcp_remediator.actions.{module.name}"
        )


def test_access_on_kinds_takes_group_and_plurals_from_kinds() -> None:
    access = Access.on_kinds(["Deployment", "StatefulSet"], ["get", "patch"], why="x")
    assert (access.group, access.resources, access.verbs) == (
        "apps",
        ("deployments", "statefulsets"),
        ("get", "patch"),
    )
    assert Access.on_kinds(["Secret"], ["get"], why="x").grants() == {("", "secrets", "get")}


@pytest.mark.parametrize(
    ("kinds", "verbs", "why", "error"),
    [
        (["Deployment", "Pod"], ["get"], "x", "span API groups"),
        (["Gadget"], ["get"], "x", "not in kube.client.KINDS"),
        (["Pod"], ["read"], "x", "unknown verbs"),
        (["Pod"], [], "x", "at least one"),
        (["Pod"], ["get", "get"], "x", "twice"),
        (["Pod"], ["get"], " ", "say why"),
    ],
)
def test_access_refuses_malformed_declarations(
    kinds: list[str], verbs: list[str], why: str, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        Access.on_kinds(kinds, verbs, why)
