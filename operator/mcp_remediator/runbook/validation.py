"""Static checks of steps: actions exist, params fit, templates are valid, nothing refused.

Used for McpRunbook ``Valid`` conditions, for ``mcp-remediator lint``, by the receiver's
runbook cache and by the engine before a run starts. Pure: no I/O. Whatever it is given,
it answers a list of problems and never raises: an unexpected error of a check (a bug, or
input no check foresaw) is itself a problem (``ValidationFailed``), named by the
exception's type only, so that one bad runbook can never stop its callers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mcp_remediator import redact
from mcp_remediator.actions import REGISTRY
from mcp_remediator.errors import Refused
from mcp_remediator.kube import refusals
from mcp_remediator.models import RunbookSpec, Step
from mcp_remediator.runbook import matchers, templates
from mcp_remediator.settings import Settings

SAMPLE = templates.Inputs(labels={}, annotations={}, steps={})
VALIDATION_FAILED = "ValidationFailed"


@dataclass(frozen=True)
class Problem:
    """One reason a set of steps cannot run; ``reason`` is CamelCase."""

    reason: str
    message: str


def unexpected(what: str, exc: Exception) -> Problem:
    """The problem of a check that failed unexpectedly: named by type, never by text."""
    return Problem(
        VALIDATION_FAILED,
        f"{what}: could not be validated ({redact.exception_type(exc)}); fix what it "
        "names or report it",
    )


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
        try:
            problems.extend(_check_step(step, seen, settings, namespace))
        except Exception as exc:
            problems.append(unexpected(f"step {step.name} ({step.action})", exc))
        seen.append(step.name)
    return problems


def _check_step(
    step: Step, seen: Sequence[str], settings: Settings, namespace: str | None
) -> list[Problem]:
    problems: list[Problem] = []
    if step.name in seen:
        problems.append(Problem("DuplicateStep", f"step {step.name}: name used twice"))
    problems.extend(
        Problem("InvalidTemplate", text)
        for text in templates.validate(step.params, list(seen), step.name)
    )
    spec = REGISTRY.get(step.action)
    if spec is None:
        known = ", ".join(sorted(REGISTRY))
        problems.append(
            Problem(
                "UnknownAction",
                f"step {step.name}: unknown action {step.action!r} (known: {known})",
            )
        )
        return problems
    templated = bool(templates.PLACEHOLDER.search(repr(step.params)))
    try:
        raw = _sample(step.params) if templated else step.params
        params = spec.parse(raw)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems.append(
            Problem("InvalidParams", f"step {step.name} ({step.action}): {pydantic_message(exc)}")
        )
        return problems
    literal_namespace = None
    if namespace and not templates.PLACEHOLDER.search(namespace):
        literal_namespace = namespace
    try:
        if spec.validate is not None and not templated:
            spec.validate(params, settings, literal_namespace)
    except Refused as exc:
        problems.append(Problem(exc.reason, f"step {step.name}: {exc.message}"))
    return problems


def check_runbook(
    body: Mapping[str, Any], settings: Settings, namespace: str | None = None
) -> list[Problem]:
    """Every problem of an McpRunbook ``spec``; an empty list means ``Valid=True``.

    ``namespace``, when known, is the runbook's own: a runbook in a protected namespace is
    refused, as every run of it would be.
    """
    try:
        return _check_runbook(body, settings, namespace)
    except Exception as exc:
        return [unexpected("spec", exc)]


def _check_runbook(
    body: Mapping[str, Any], settings: Settings, namespace: str | None
) -> list[Problem]:
    if not isinstance(body, Mapping):
        return [Problem("InvalidSpec", "spec must be a mapping")]
    try:
        spec = RunbookSpec.model_validate(dict(body))
    except ValidationError as exc:
        return [Problem("InvalidSpec", pydantic_message(exc))]
    problems: list[Problem] = []
    if namespace is not None:
        try:
            refusals.check_run_namespace(settings, namespace)
        except Refused as exc:
            problems.append(Problem(exc.reason, exc.message))
    problems.extend(check_steps(spec.steps, settings, spec.target.namespace))
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
            except Exception as exc:
                problems.append(unexpected(f"triggers[{index}].matchers", exc))
    return problems
