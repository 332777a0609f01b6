"""Static checks of steps: actions exist, params fit, templates are valid, nothing refused.

Used for McpRunbook ``Valid`` conditions, for ``mcp-remediator lint`` and by the engine
before a run starts. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mcp_remediator.actions import REGISTRY
from mcp_remediator.errors import Refused
from mcp_remediator.models import RunbookSpec, Step
from mcp_remediator.runbook import matchers, templates
from mcp_remediator.settings import Settings

SAMPLE = templates.Inputs(labels={}, annotations={}, steps={})


@dataclass(frozen=True)
class Problem:
    """One reason a set of steps cannot run; ``reason`` is CamelCase."""

    reason: str
    message: str


def pydantic_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(item) for item in error["loc"]) or "params"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)


def _sample(value: object) -> object:
    """Params with every placeholder replaced by a harmless valid name."""
    if isinstance(value, str):
        return templates.PLACEHOLDER.sub("x", value)
    if isinstance(value, dict):
        return {k: _sample(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sample(v) for v in value]
    return value


def check_steps(
    steps: Sequence[Step], settings: Settings, namespace: str | None = None
) -> list[Problem]:
    """Every problem found in ``steps``, in order.

    ``namespace`` is the runbook's default target namespace when it is literal: writing
    steps that inherit it are checked against the protected namespaces.
    """
    problems: list[Problem] = []
    seen: list[str] = []
    for step in steps:
        if step.name in seen:
            problems.append(Problem("DuplicateStep", f"step {step.name}: name used twice"))
        problems.extend(
            Problem("InvalidTemplate", text)
            for text in templates.validate(step.params, seen, step.name)
        )
        seen.append(step.name)
        spec = REGISTRY.get(step.action)
        if spec is None:
            known = ", ".join(sorted(REGISTRY))
            problems.append(
                Problem(
                    "UnknownAction",
                    f"step {step.name}: unknown action {step.action!r} (known: {known})",
                )
            )
            continue
        templated = bool(templates.PLACEHOLDER.search(repr(step.params)))
        try:
            raw = _sample(step.params) if templated else step.params
            params = spec.parse(raw)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems.append(
                Problem(
                    "InvalidParams", f"step {step.name} ({step.action}): {pydantic_message(exc)}"
                )
            )
            continue
        literal_namespace = None
        if namespace and not templates.PLACEHOLDER.search(namespace):
            literal_namespace = namespace
        try:
            if spec.validate is not None and not templated:
                spec.validate(params, settings, literal_namespace)
        except Refused as exc:
            problems.append(Problem(exc.reason, f"step {step.name}: {exc.message}"))
    return problems


def check_runbook(body: Mapping[str, Any], settings: Settings) -> list[Problem]:
    """Every problem of an McpRunbook ``spec``; an empty list means ``Valid=True``."""
    try:
        spec = RunbookSpec.model_validate(dict(body))
    except ValidationError as exc:
        return [Problem("InvalidSpec", pydantic_message(exc))]
    problems = check_steps(spec.steps, settings, spec.target.namespace)
    if spec.target.namespace:
        problems.extend(
            Problem("InvalidTemplate", f"target.namespace: {text}")
            for text in templates.validate(spec.target.namespace, [], "target")
        )
    for index, trigger in enumerate(spec.triggers):
        for text in trigger.matchers:
            try:
                matchers.parse_matchers(text)
            except matchers.MatcherError as exc:
                problems.append(Problem("InvalidMatcher", f"triggers[{index}].matchers: {exc}"))
    return problems
