"""Parameter types shared by several actions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field


@dataclass(frozen=True)
class TemplateContext:
    """Marks a string param by what it holds, so that each value a template puts into it
    is escaped (or refused) for the spot it fills: ``runbook.escaping`` says how."""

    context: Literal["promql", "slack", "url", "namespace"]


K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

K8sName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=K8S_NAME_PATTERN,
        description="A Kubernetes object name.",
    ),
]
Namespace = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="A namespace; defaults to the runbook's target namespace.",
    ),
    TemplateContext("namespace"),
]
PromQL = Annotated[str, TemplateContext("promql")]
SlackText = Annotated[str, TemplateContext("slack")]
Url = Annotated[str, TemplateContext("url")]
