"""``prometheusQuery`` and ``prometheusVerify``: PromQL as evidence, and as proof of recovery.

``prometheusQuery`` runs an instant query and records its top series (highest value), so
a later step can act on it: ``{{ steps.find.outputs.labels.module }}`` names the module
with the highest rejection rate, and the next step restarts it.

``prometheusVerify`` polls a query until a condition (``> 0``, ``>= 0.8``, ``== 1``, ...)
has held for ``forSeconds`` without a break, and fails with ``VerificationFailed`` when
that does not happen within ``timeoutSeconds``. The condition holds when the query
returns at least one series and every series satisfies it: "no data" proves nothing.

Both are read-only and run in dry-run too. Queries go through ``vendors.prometheus``, to
``MCP_PROMETHEUS_URL`` with ``MCP_PROMETHEUS_TOKEN`` for trusted namespaces
(``MCP_TRUSTED_NAMESPACES``), else to the URL and token of the Secrets the step names in
``prometheus`` (``actions/credentials``).
"""

from __future__ import annotations

import asyncio
import math
import operator
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import Field, field_validator, model_validator

from mcp_remediator.actions import credentials
from mcp_remediator.actions.common import PromQL
from mcp_remediator.actions.credentials import SecretKeyRef
from mcp_remediator.actions.registry import ActionContext, ActionParams, ActionResult, action
from mcp_remediator.errors import StepFailed, VerificationFailed
from mcp_remediator.vendors.prometheus import Prometheus, Sample

_CONDITION = re.compile(
    r"^\s*(==|!=|>=|<=|>|<)\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?Inf|NaN)\s*$"
)
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
NO_DATA = "NoData"


@dataclass(frozen=True)
class Condition:
    """A comparison of a sample value with a threshold, e.g. ``>= 0.8``."""

    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.op} {Sample({}, self.threshold).value_text()}"


def parse_condition(text: str) -> Condition:
    """``"> 0"`` → ``Condition(">", 0.0)``; raises ``ValueError`` on anything else."""
    match = _CONDITION.match(text)
    if match is None:
        raise ValueError(
            f"invalid condition {text!r}: expected an operator (==, !=, >, >=, <, <=) and a "
            "number, e.g. '>= 0.8'"
        )
    return Condition(match.group(1), float(match.group(2)))


def top(samples: list[Sample]) -> Sample:
    """The series with the highest value (NaN counts as lowest)."""
    return max(samples, key=lambda s: -math.inf if math.isnan(s.value) else s.value)


def describe(samples: list[Sample], limit: int = 3) -> str:
    shown = [f"{s.selector()} {s.value_text()}" for s in samples[:limit]]
    if len(samples) > limit:
        shown.append(f"and {len(samples) - limit} more")
    return ", ".join(shown) or "no data"


class PrometheusRef(ActionParams):
    urlSecretRef: SecretKeyRef = Field(
        description="Secret key (in the remediation's own namespace) holding Prometheus's base URL."
    )
    tokenSecretRef: SecretKeyRef | None = Field(
        None,
        description="Secret key holding the bearer token; omitted: no token (the operator's "
        "own token is never sent to a URL from a Secret).",
    )


class PrometheusParams(ActionParams):
    """Base of both Prometheus actions' params: which Prometheus, defined once."""

    prometheus: PrometheusRef | None = Field(
        None,
        description="Which Prometheus: `{urlSecretRef: {name, key}, tokenSecretRef?: {name, "
        "key}}`; omitted: `MCP_PROMETHEUS_URL` and `MCP_PROMETHEUS_TOKEN`, for trusted "
        "namespaces only (`MCP_TRUSTED_NAMESPACES`; elsewhere the step fails "
        "`CredentialsNotAllowed`).",
    )


PROMETHEUS_ACCESS = [credentials.SECRET_ACCESS]


async def connect(ref: PrometheusRef | None, ctx: ActionContext) -> Prometheus:
    """The step's Prometheus; ``CredentialsNotAllowed`` before any query when an untrusted
    namespace names no Secret."""
    default = credentials.OperatorEndpoint(
        "the operator-level Prometheus",
        "MCP_PROMETHEUS_URL",
        ctx.settings.prometheus_url,
        "MCP_PROMETHEUS_TOKEN",
        ctx.settings.prometheus_token,
    )
    found = await credentials.endpoint(
        ctx,
        default,
        url_ref=None if ref is None else ref.urlSecretRef,
        url_param="prometheus.urlSecretRef",
        token_ref=None if ref is None else ref.tokenSecretRef,
        token_param="prometheus.tokenSecretRef",
    )
    if found.url is None:
        return Prometheus(ctx.settings, None)  # fails: MCP_PROMETHEUS_URL is not set
    if found.token is not None:
        token, token_source = found.token.value, found.token.source
    else:
        token = None
        token_source = (
            "MCP_PROMETHEUS_TOKEN_FILE" if found.operator_level else "prometheus.tokenSecretRef"
        )
    return Prometheus(
        ctx.settings,
        found.url.value,
        token,
        url_source=found.url.source,
        token_source=token_source,
    )


class PrometheusQueryParams(PrometheusParams):
    query: PromQL = Field(
        min_length=1,
        description="PromQL instant query, e.g. "
        '`topk(1, rate(mcp_dashboard_promises_settled_total{status="rejected"}[5m]))`. '
        "Template values are escaped inside quotes (and regex-quoted after `=~`); "
        "outside quotes a value must be one name, number or duration.",
    )


@action(
    "prometheusQuery",
    PrometheusQueryParams,
    "Instant PromQL query; outputs the top series' value (`value`), its labels (`labels` and "
    "one `labels.<name>` per label) and the number of series (`series`). Fails when the "
    "query returns no data.",
    writes=False,
    access=PROMETHEUS_ACCESS,
)
async def prometheus_query(params: PrometheusQueryParams, ctx: ActionContext) -> ActionResult:
    prometheus = await connect(params.prometheus, ctx)
    samples = await prometheus.query(params.query)
    if not samples:
        raise StepFailed(f"query returned no data: {params.query}", reason=NO_DATA)
    best = top(samples)
    outputs = {
        "value": best.value_text(),
        "series": str(len(samples)),
        "labels": best.selector(),
    }
    outputs.update({f"labels.{k}": v for k, v in best.labels.items()})
    ordered = sorted(samples, key=lambda s: s is not best)
    return ActionResult(f"{len(samples)} series; top: {describe(ordered, 1)}", outputs)


class PrometheusVerifyParams(PrometheusParams):
    query: PromQL = Field(
        min_length=1,
        description="PromQL instant query to check; template values are escaped as in "
        "`prometheusQuery`.",
    )
    condition: str = Field(
        description="What every returned series must satisfy: `> 0`, `>= 0.8`, `== 1`, ..."
    )
    forSeconds: int = Field(
        60, ge=0, le=86_400, description="How long the condition must hold without a break."
    )
    timeoutSeconds: int = Field(
        300, ge=1, le=86_400, description="Fail when it has not held long enough by then."
    )

    @field_validator("condition")
    @classmethod
    def _valid_condition(cls, value: str) -> str:
        parse_condition(value)
        return value

    @model_validator(mode="after")
    def _hold_fits(self) -> PrometheusVerifyParams:
        if self.forSeconds > self.timeoutSeconds:
            raise ValueError("forSeconds must not exceed timeoutSeconds")
        return self


@action(
    "prometheusVerify",
    PrometheusVerifyParams,
    "Poll a PromQL query until `condition` has held for `forSeconds` for every returned "
    "series; fails with `VerificationFailed` at `timeoutSeconds`.",
    writes=False,
    access=PROMETHEUS_ACCESS,
)
async def prometheus_verify(params: PrometheusVerifyParams, ctx: ActionContext) -> ActionResult:
    prometheus = await connect(params.prometheus, ctx)
    condition = parse_condition(params.condition)
    start = time.monotonic()
    # The step's own timeout may be shorter: fail with the verdict rather than be cancelled.
    limit = min(params.timeoutSeconds, ctx.remaining())
    deadline = start + limit
    held_since: float | None = None
    longest = 0.0
    samples: list[Sample] = []
    while True:
        samples = await prometheus.query(params.query)
        now = time.monotonic()
        if samples and all(condition.holds(s.value) for s in samples):
            held_since = now if held_since is None else held_since
            longest = max(longest, now - held_since)
            if now - held_since >= params.forSeconds:
                return ActionResult(
                    f"{params.query} {condition} held for {params.forSeconds}s: "
                    f"{describe(samples)}",
                    {
                        "value": samples[0].value_text(),
                        "series": str(len(samples)),
                        "heldSeconds": str(params.forSeconds),
                        "waitedSeconds": f"{now - start:.0f}",
                    },
                )
        else:
            held_since = None
        if now >= deadline:
            raise VerificationFailed(
                f"{params.query} {condition} did not hold for {params.forSeconds}s within "
                f"{limit:.0f}s (longest hold {longest:.0f}s); last: "
                f"{describe(samples)}"
            )
        pause = ctx.settings.poll_interval_seconds
        if held_since is not None:
            pause = min(pause, max(0.0, held_since + params.forSeconds - now))
        await asyncio.sleep(min(pause, max(0.0, deadline - now)))
