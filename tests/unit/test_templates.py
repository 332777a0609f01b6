"""Templates: the three allowed roots, clear errors, nothing rendered as empty."""

import pytest

from mcp_remediator.errors import TemplateError
from mcp_remediator.runbook import templates

INPUTS = templates.Inputs(
    labels={"namespace": "mcp", "deployment": "finbot-api"},
    annotations={"summary": "cache stale"},
    steps={"find": {"module": "mubot"}},
)


def test_renders_labels_annotations_and_step_outputs_in_nested_params() -> None:
    params = {
        "name": "{{ labels.deployment }}",
        "nested": {"msg": "{{annotations.summary}} in {{ labels.namespace }}"},
        "list": ["restart {{ steps.find.outputs.module }}", 3],
    }
    assert templates.render(params, INPUTS) == {
        "name": "finbot-api",
        "nested": {"msg": "cache stale in mcp"},
        "list": ["restart mubot", 3],
    }


def test_missing_label_is_an_error_naming_it_not_an_empty_string() -> None:
    with pytest.raises(TemplateError, match="'pod' is missing from the alert's labels"):
        templates.render("{{ labels.pod }}", INPUTS)


@pytest.mark.parametrize(
    "text",
    ["{{ env.HOME }}", "{{ labels.a | default('x') }}", "{{ steps.x.status }}", "{{ }}"],
)
def test_anything_else_inside_braces_is_invalid(text: str) -> None:
    with pytest.raises(TemplateError, match="invalid template"):
        templates.render(text, INPUTS)


def test_unbalanced_braces_are_invalid() -> None:
    with pytest.raises(TemplateError, match="unbalanced"):
        templates.refs("{{ labels.a")


def test_validate_requires_referenced_steps_to_run_earlier() -> None:
    problems = templates.validate({"x": "{{ steps.later.outputs.k }}"}, ["first"], "second")
    assert problems == [
        "step second: template {{ steps.later.outputs.k }} refers to step 'later', "
        "which does not run before it"
    ]
    assert templates.validate({"x": "{{ steps.first.outputs.k }}"}, ["first"], "second") == []
