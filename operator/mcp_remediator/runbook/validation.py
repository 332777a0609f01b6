"""Static checks of steps: actions exist, params fit, templates are valid, nothing refused.

Used for McpRunbook ``Valid`` conditions, for ``mcp-remediator lint`` and by the engine
before a run starts. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mcp_remediator import redact
from mcp_remediator.actions import REGISTRY, ActionSpec
from mcp_remediator.errors import Refused, TemplateError
from mcp_remediator.kube import refusals
from mcp_remediator.models import RunbookSpec, Step
from mcp_remediator.runbook import escaping, matchers, templates
from mcp_remediator.settings import Settings

SAMPLE = templates.Inputs(labels={}, annotations={}, steps={})
VALIDATION_FAILED = "ValidationFailed"


@dataclass(frozen=True)
class Problem:
    """One reason a set of steps cannot run; ``reason`` is CamelCase."""

    reason: str
    message: str
    # The field of the checked spec it is about, when known: ``("steps", 2)``; ``lint``
    # shows that field's line.
    path: tuple[str | int, ...] = ()


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


# Harmless valid names that stand for templated values when a templated step is checked:
# no refusal rule singles either out (not a Kyverno or protected namespace, API group or
# name), and any name, namespace or label pattern of a param accepts both.
SAMPLES = ("x", "y")
# A third sample for the "same refusal whatever renders" rule: a number, so that a template
# where a port or a count belongs is not refused because a word cannot be a port.
NUMERIC_SAMPLE = "1"
# Refusals that a sample value cannot cause (a sample is never Kyverno's nor protected):
# raised for a templated step, they hold for whatever its templates render.
LITERAL_REFUSALS = frozenset({refusals.KYVERNO, refusals.PROTECTED_NAMESPACE})


def _sample(value: object, sample: str = SAMPLES[0]) -> object:
    """Params with every placeholder replaced by a harmless valid name."""
    if isinstance(value, str):
        return templates.PLACEHOLDER.sub(sample, value)
    if isinstance(value, dict):
        return {k: _sample(v, sample) for k, v in value.items()}
    if isinstance(value, list):
        return [_sample(v, sample) for v in value]
    return value


def _refusal(
    spec: ActionSpec[Any], raw: object, settings: Settings, namespace: str | None
) -> Refused | None:
    """What ``spec.validate`` refuses in ``raw`` params, if anything."""
    if spec.validate is None:
        return None
    try:
        spec.validate(spec.parse(raw), settings, namespace)  # type: ignore[arg-type]
    except Refused as exc:
        return exc
    except ValidationError:
        return None
    return None


def _templated_refusal(
    spec: ActionSpec[Any], params: object, settings: Settings, namespace: str | None
) -> Refused | None:
    """The refusal a templated step meets whatever its templates render, if any.

    The step is checked with its placeholders replaced by each of two samples. A refusal
    counts when no sample can have caused it: one of ``LITERAL_REFUSALS`` raised for both
    samples, or the very same refusal (reason and message) for both and for a numeric
    sample (a templated port is no reason to refuse), as when a literal
    ``kind`` or host is refused while the name or the path is templated. A refusal that
    names the sample (a templated kind or host outside an allow-list) is left to the run,
    which checks the rendered params again.
    """
    first, second = (_refusal(spec, _sample(params, s), settings, namespace) for s in SAMPLES)
    if first is None or second is None or first.reason != second.reason:
        return None
    if first.reason in LITERAL_REFUSALS:
        return Refused(first.reason, _unsampled(first.message, params))
    numeric = _refusal(spec, _sample(params, NUMERIC_SAMPLE), settings, namespace)
    if numeric is not None and first.message == second.message == numeric.message:
        return Refused(first.reason, _unsampled(first.message, params))
    return None


def _templated_strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value] if templates.PLACEHOLDER.search(value) else []
    if isinstance(value, dict):
        return [text for v in value.values() for text in _templated_strings(v)]
    if isinstance(value, list):
        return [text for v in value for text in _templated_strings(v)]
    return []


def _unsampled(message: str, params: object) -> str:
    """A message about sampled params, with each sampled value shown as its template
    (``deployments/{{ labels.deployment }}``, not ``deployments/x``)."""
    for text in sorted(set(_templated_strings(params)), key=len, reverse=True):
        sampled = re.escape(str(_sample(text)))
        parts = re.split(rf"(?<![\w.-]){sampled}(?![\w.-])", message)
        message = text.join(parts)
    return message


def check_steps(
    steps: Sequence[Step], settings: Settings, namespace: str | None = None
) -> list[Problem]:
    """Every problem found in ``steps``, in order.

    ``namespace`` is the runbook's default target namespace when it is literal: writing
    steps that inherit it are checked against the protected namespaces.
    """
    problems: list[Problem] = []
    seen: list[str] = []
    literal_namespace = None
    if namespace and not templates.PLACEHOLDER.search(namespace):
        literal_namespace = namespace
    for index, step in enumerate(steps):
        try:
            problems.extend(_check_step(index, step, seen, settings, literal_namespace))
        except Exception as exc:
            problems.append(unexpected(f"step {step.name} ({step.action})", exc))
        seen.append(step.name)
    return problems


def _check_step(
    index: int, step: Step, seen: Sequence[str], settings: Settings, literal_namespace: str | None
) -> list[Problem]:
    problems: list[Problem] = []
    where = ("steps", index)
    if step.name in seen:
        problems.append(
            Problem("DuplicateStep", f"step {step.name}: name used twice", (*where, "name"))
        )
    template_problems = [
        Problem("InvalidTemplate", text, (*where, "params"))
        for text in templates.validate(step.params, list(seen), step.name)
    ]
    problems.extend(template_problems)
    spec = REGISTRY.get(step.action)
    if spec is not None and not template_problems:
        problems.extend(
            Problem("InvalidTemplate", f"step {step.name}: {text}", (*where, "params"))
            for text in templates.check_placement(step.params, spec.params)
        )
    if spec is None:
        known = ", ".join(sorted(REGISTRY))
        problems.append(
            Problem(
                "UnknownAction",
                f"step {step.name}: unknown action {step.action!r} (known: {known})",
                (*where, "action"),
            )
        )
        return problems
    templated = bool(templates.PLACEHOLDER.search(repr(step.params)))
    try:
        spec.parse(_sample(step.params) if templated else step.params)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems.append(
            Problem(
                "InvalidParams",
                f"step {step.name} ({step.action}): {pydantic_message(exc)}",
                (*where, "params"),
            )
        )
        return problems
    if templated:
        refused = _templated_refusal(spec, step.params, settings, literal_namespace)
    else:
        refused = _refusal(spec, step.params, settings, literal_namespace)
    if refused is not None:
        problems.append(Problem(refused.reason, f"step {step.name}: {refused.message}", where))
    return problems


def check_runbook(
    body: Mapping[str, Any], settings: Settings, namespace: str | None = None
) -> list[Problem]:
    """Every problem of an McpRunbook ``spec``; an empty list means ``Valid=True``.

    ``namespace`` is the runbook's own: the target of its steps when ``target.namespace``
    is not set (as the engine runs them), so their writes are checked against it; and a
    runbook in a protected namespace is refused, as every run of it would be. Never
    raises: a check that fails unexpectedly is a ``ValidationFailed`` problem.
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
        spec = RunbookSpec.model_validate(dict(body), strict=True)
    except ValidationError as exc:
        return [Problem("InvalidSpec", pydantic_message(exc))]
    problems: list[Problem] = []
    if namespace is not None:
        try:
            refusals.check_run_namespace(settings, namespace)
        except Refused as exc:
            problems.append(Problem(exc.reason, exc.message))
    problems.extend(check_steps(spec.steps, settings, spec.target.namespace or namespace))
    target = spec.target.namespace
    if target and templates.PLACEHOLDER.search(target):
        problems.extend(
            Problem("InvalidTemplate", f"target.namespace: {text}", ("target", "namespace"))
            for text in templates.validate(target, [], "target")
        )
    elif target:
        try:
            escaping.namespace(target, "target.namespace")
        except TemplateError as exc:
            problems.append(Problem("InvalidSpec", exc.message, ("target", "namespace")))
    for index, trigger in enumerate(spec.triggers):
        for text in trigger.matchers:
            try:
                matchers.parse_matchers(text)
            except matchers.MatcherError as exc:
                problems.append(
                    Problem(
                        "InvalidMatcher",
                        f"triggers[{index}].matchers: {exc}",
                        ("triggers", index, "matchers"),
                    )
                )
            except Exception as exc:
                problems.append(unexpected(f"triggers[{index}].matchers", exc))
    return problems
