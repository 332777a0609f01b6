"""Access declarations: group and plurals from KINDS, malformed ones refused."""

import pytest

from mcp_remediator.actions import Access


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
