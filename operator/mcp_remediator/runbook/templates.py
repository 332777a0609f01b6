"""Step parameter templates: ``{{ labels.X }}``, ``{{ annotations.X }}``,
``{{ steps.S.outputs.K }}``.

Nothing else may stand inside ``{{ }}``: no expressions, no filters, no defaults, so a
runbook in Git can be checked completely offline. A missing value is an error naming the
template, never an empty string.

Used by runbook validation (``validate``) and by the engine before each step
(``render``), which writes each value for where it lands (``runbook.escaping``): escaped
inside a PromQL string, Slack-escaped in a notification, percent-encoded in a URL path; a
rendered namespace must be a namespace name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from mcp_remediator.errors import TemplateError
from mcp_remediator.runbook import escaping

PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
LABEL_REF = re.compile(r"^(labels|annotations)\.([A-Za-z_][A-Za-z0-9_]*)$")
STEP_REF = re.compile(r"^steps\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.outputs\.([A-Za-z0-9_.-]+)$")


@dataclass(frozen=True)
class Ref:
    """One parsed placeholder."""

    root: str  # labels | annotations | steps
    key: str
    step: str | None = None

    def __str__(self) -> str:
        if self.step is not None:
            return f"{{{{ steps.{self.step}.outputs.{self.key} }}}}"
        return f"{{{{ {self.root}.{self.key} }}}}"


def parse_ref(expression: str) -> Ref:
    text = expression.strip()
    if match := LABEL_REF.match(text):
        return Ref(match.group(1), match.group(2))
    if match := STEP_REF.match(text):
        return Ref("steps", match.group(3), step=match.group(1))
    raise TemplateError(
        f"invalid template {{{{{expression}}}}}: only labels.NAME, annotations.NAME and "
        "steps.STEP.outputs.KEY are allowed"
    )


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, Mapping):
        return [item for k, v in value.items() for item in _strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in _strings(v, f"{path}[{i}]")]
    return []


def refs(value: Any) -> list[Ref]:
    """Every placeholder in a params tree; raises ``TemplateError`` on an invalid one."""
    found: list[Ref] = []
    for _, text in _strings(value, "params"):
        if text.count("{{") != len(PLACEHOLDER.findall(text)):
            raise TemplateError(f"unbalanced template braces in {text!r}")
        found.extend(parse_ref(m.group(1)) for m in PLACEHOLDER.finditer(text))
    return found


def validate(params: Any, earlier_steps: list[str], step: str) -> list[str]:
    """Problems with the templates of one step's params (empty when they are fine)."""
    try:
        found = refs(params)
    except TemplateError as exc:
        return [f"step {step}: {exc.message}"]
    return [
        f"step {step}: template {ref} refers to step {ref.step!r}, which does not run before it"
        for ref in found
        if ref.step is not None and ref.step not in earlier_steps
    ]


@dataclass(frozen=True)
class Inputs:
    """The values templates read."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    steps: Mapping[str, Mapping[str, str]]

    def lookup(self, ref: Ref) -> str:
        if ref.root == "labels":
            source: Mapping[str, str] = self.labels
            where = "the alert's labels or spec.labels"
        elif ref.root == "annotations":
            source, where = self.annotations, "the alert's annotations"
        else:
            assert ref.step is not None
            if ref.step not in self.steps:
                raise TemplateError(f"template {ref}: step {ref.step!r} has no outputs yet")
            source, where = self.steps[ref.step], f"the outputs of step {ref.step!r}"
        value = source.get(ref.key)
        if value is None or value == "":
            raise TemplateError(f"template {ref}: {ref.key!r} is missing from {where}")
        return value


class _Samples(Inputs):
    """Inputs in which every template renders ``x``: a valid value in every spot."""

    def lookup(self, ref: Ref) -> str:
        return "x"


def check_placement(params: Any, model: type[BaseModel]) -> list[str]:
    """Problems with where templates sit in params that escape their values (a spot no
    value could fill, such as right after a backslash in a PromQL string)."""
    try:
        render(params, _Samples({}, {}, {}), model)
    except TemplateError as exc:
        return [exc.message]
    return []


def render(value: Any, inputs: Inputs, params: type[BaseModel] | None = None) -> Any:
    """Render every placeholder in a params tree.

    With the action's ``params`` model, each value is written for where it lands in a
    param that declares a ``TemplateContext`` (PromQL, Slack text, a URL, a namespace:
    ``runbook.escaping``); elsewhere it is put in as it is.
    """
    if params is not None and isinstance(value, Mapping):
        where = escaping.contexts(params)
        return {k: _render(v, inputs, where.get(k), f"params.{k}") for k, v in value.items()}
    return _render(value, inputs, None, "params")


def render_namespace(text: str, inputs: Inputs) -> str:
    """A rendered namespace (``target.namespace``): ``TemplateError`` unless it is a
    namespace name, which a template must not make into anything else."""
    refs(text)
    rendered = PLACEHOLDER.sub(lambda m: inputs.lookup(parse_ref(m.group(1))), text)
    return escaping.namespace(rendered, refs=[m.group(0) for m in PLACEHOLDER.finditer(text)])


def _render(value: Any, inputs: Inputs, context: str | None, where: str) -> Any:
    if isinstance(value, str):
        refs(value)  # validates the whole string first
        if context is None or not PLACEHOLDER.search(value):
            return PLACEHOLDER.sub(lambda m: inputs.lookup(parse_ref(m.group(1))), value)
        parts = PLACEHOLDER.split(value)[::2]
        fills = [
            escaping.Fill(m.group(0), inputs.lookup(parse_ref(m.group(1))))
            for m in PLACEHOLDER.finditer(value)
        ]
        return escaping.fill(context, parts, fills, where)
    if isinstance(value, Mapping):
        return {k: _render(v, inputs, context, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, inputs, context, f"{where}[{i}]") for i, v in enumerate(value)]
    return value
