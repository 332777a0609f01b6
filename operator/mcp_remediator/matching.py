"""Which runbooks an alert starts, under which name, and whether guardrails let it run.

Three pure parts, no I/O:

- **Matchers** in Alertmanager's syntax (``name="v"``, ``!=``, ``=~``, ``!~``; quoted or
  unquoted values; a ``{a="1", b=~"2"}`` list), parsed like Alertmanager 0.25's
  ``labels.ParseMatchers`` and matched like it: regexes are anchored at both ends, and a
  missing label is the empty string. Runbook validation (``validation.check_runbook``)
  parses them; the receiver matches with them.
- **Names**: ``remediation_name`` is deterministic in (runbook, fingerprint, startsAt), so
  Alertmanager re-sends, HA pairs and operator restarts all land on one object name;
  ``group_key`` hashes the ``groupBy`` label values into a label value the guardrail
  queries select on.
- **Guardrails**: ``evaluate`` decides from the remediation records of one runbook and
  group (as listed from the cluster, so the verdict survives restarts and replicas)
  whether a new run may start, or which reason the Skipped record carries.

Called by ``ingest`` (the receiver's logic) and ``validation``.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mcp_remediator.events import parse_time
from mcp_remediator.models import (
    ANNOTATION_SKIP_REASON,
    FINISHED_PHASES,
    Guardrails,
    RunbookSpec,
    Trigger,
)

# -- matchers --------------------------------------------------------------------------

MatchOp = Literal["=", "!=", "=~", "!~"]
_OPS: dict[str, MatchOp] = {"=": "=", "!=": "!=", "=~": "=~", "!~": "!~"}
# Alertmanager's own pattern: '=~' and '!~' before '=' so the '~' is not read as the value.
_MATCHER = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|=|!=|!~)\s*(.*?)\s*$", re.DOTALL)


class MatcherError(ValueError):
    """A matcher that Alertmanager would not accept either."""


@dataclass(frozen=True)
class Matcher:
    """One label matcher; ``value`` is unquoted and unescaped."""

    name: str
    op: MatchOp
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op}"{escaped}"'


def _unquote(raw: str, original: str) -> str:
    """Alertmanager's unescaping: ``\\n``, ``\\"``, ``\\\\``; other backslashes stay."""
    quoted = raw.startswith('"')
    text = raw[1:] if quoted else raw
    out: list[str] = []
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
            out.append({"n": "\n", '"': '"', "\\": "\\"}.get(char, "\\" + char))
            continue
        if char == "\\":
            if index < len(text) - 1:
                escaped = True
            else:
                out.append(char)
        elif char == '"':
            if not quoted or index < len(text) - 1:
                raise MatcherError(f"matcher value contains an unescaped double quote: {original}")
            quoted = False
        else:
            out.append(char)
    if quoted:
        raise MatcherError(f"matcher value lacks its closing double quote: {original}")
    return "".join(out)


def parse_matcher(text: str) -> Matcher:
    """One matcher, e.g. ``severity=~"warning|critical"`` or ``env!=dev``."""
    found = _MATCHER.match(text)
    if found is None:
        raise MatcherError(
            f"bad matcher format: {text!r} (expected NAME=VALUE, NAME!=VALUE, NAME=~REGEX "
            "or NAME!~REGEX)"
        )
    name, op, raw = found.group(1), _OPS[found.group(2)], found.group(3)
    value = _unquote(raw, text)
    pattern = None
    if op in ("=~", "!~"):
        try:
            pattern = re.compile(f"(?:{value})")
        except re.error as exc:
            raise MatcherError(f"invalid regular expression in {text!r}: {exc}") from exc
    return Matcher(name, op, value, pattern)


def parse_matchers(text: str) -> list[Matcher]:
    """A matcher or a comma-separated list of them, optionally in braces."""
    body = text.strip()
    body = body.removeprefix("{").removesuffix("}")
    tokens: list[str] = []
    token: list[str] = []
    inside_quotes = escaped = False
    for char in body:
        if char == "," and not inside_quotes:
            tokens.append("".join(token))
            token = []
            continue
        if char == '"':
            if escaped:
                escaped = False
            else:
                inside_quotes = not inside_quotes
        elif char == "\\":
            escaped = not escaped
        else:
            escaped = False
        token.append(char)
    if "".join(token).strip():
        tokens.append("".join(token))
    if not tokens:
        raise MatcherError(f"no matcher in {text!r}")
    return [parse_matcher(t) for t in tokens]


@dataclass(frozen=True)
class CompiledTrigger:
    """A trigger with its matchers parsed once."""

    alertname: str
    matchers: tuple[Matcher, ...]

    @classmethod
    def compile(cls, trigger: Trigger) -> CompiledTrigger:
        matchers = tuple(m for text in trigger.matchers for m in parse_matchers(text))
        return cls(trigger.alertname, matchers)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get("alertname") == self.alertname and all(
            m.matches(labels) for m in self.matchers
        )


# -- names -----------------------------------------------------------------------------

MAX_NAME = 63
DIGEST_LENGTH = 10
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:\d{2})$"
)


def canonical_time(value: str) -> str:
    """RFC 3339 in UTC with the fraction's significant digits (nanoseconds survive).

    Alertmanager replicas and re-sends format one ``startsAt`` alike in practice; this
    makes the name independent of the zone offset and trailing zeros anyway.
    """
    found = _TIME.match(value.strip())
    if found is None:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    day, clock, fraction, zone = found.groups()
    zone = "+00:00" if zone in ("Z", "z") else zone
    moment = datetime.datetime.fromisoformat(f"{day}T{clock}{zone}").astimezone(datetime.UTC)
    digits = (fraction or "").rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{digits}" if digits else "") + "Z"


def _digest(*parts: str, length: int = DIGEST_LENGTH) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def _shorten(prefix: str, room: int) -> str:
    """``prefix`` cut to ``room`` characters, ending on a letter or digit."""
    return prefix[:room].rstrip("-.")


def remediation_name(runbook: str, fingerprint: str, starts_at: str) -> str:
    """``<runbook>-<10 hex of sha256(runbook, fingerprint, startsAt)>``, at most 63 chars.

    A long runbook name is cut (the digest still covers all of it), so the result is a
    valid DNS label and fits in a label value too.
    """
    digest = _digest(runbook, fingerprint, canonical_time(starts_at))
    return f"{_shorten(runbook, MAX_NAME - DIGEST_LENGTH - 1)}-{digest}"


def label_value(value: str) -> str:
    """``value`` itself when it is a valid label value, else a valid stand-in ending in a
    digest of it (alert names and fingerprints are arbitrary strings in Prometheus)."""
    if len(value) <= MAX_NAME and _LABEL_VALUE.match(value):
        return value
    cleaned = re.sub(r"[^-A-Za-z0-9_.]", "_", value).strip("-_.")
    head = cleaned[: MAX_NAME - DIGEST_LENGTH - 1].rstrip("-_.")
    return f"{head}-{_digest(value)}" if head else _digest(value)


def group_key(group_by: Iterable[str], labels: Mapping[str, str]) -> str:
    """16 hex identifying the throttle group: the ``groupBy`` labels and their values."""
    names = sorted(set(group_by))
    return _digest(*(f"{name}={labels.get(name, '')}" for name in names), length=16)


# -- guardrails ------------------------------------------------------------------------

SUSPENDED = "Suspended"
CONCURRENCY_LIMIT = "ConcurrencyLimit"
COOLDOWN = "Cooldown"
RATE_LIMITED = "RateLimited"
HOUR = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class Record:
    """What the guardrails need to know about one remediation of the group."""

    name: str
    created: datetime.datetime
    phase: str
    is_run: bool
    finished: datetime.datetime | None = None

    @property
    def last_activity(self) -> datetime.datetime:
        return max(self.created, self.finished) if self.finished else self.created


def record_of(body: Mapping[str, Any], now: datetime.datetime) -> Record:
    """A ``Record`` from an McpRemediation as the API returns it.

    Not a run: a Skipped record (guardrail hit, marked by its annotation even before its
    status is written) and a run Cancelled before it started (its alert resolved first);
    neither changed anything, so neither may hold back the next alert.
    """
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    phase = status.get("phase") or "Pending"
    skipped = phase == "Skipped" or ANNOTATION_SKIP_REASON in (meta.get("annotations") or {})
    never_started = phase == "Cancelled" and not status.get("startedAt")
    return Record(
        name=meta.get("name", ""),
        created=parse_time(meta.get("creationTimestamp")) or now,
        phase=phase,
        is_run=not skipped and not never_started,
        finished=parse_time(status.get("finishedAt")) if phase in FINISHED_PHASES else None,
    )


@dataclass(frozen=True)
class Verdict:
    """Why a new run must not start: ``reason`` is the Skipped record's reason."""

    reason: str
    message: str


def _at(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def evaluate(
    runbook: str, spec: RunbookSpec, records: Iterable[Record], now: datetime.datetime
) -> Verdict | None:
    """``None`` when a new run of ``runbook`` may start now for this group, else why not.

    Checked in this order, so the reason names the most direct cause:
    ``suspend``; ``maxConcurrent`` unfinished runs; ``cooldownSeconds`` since the latest
    start or end of a run (measured from the end too, so that a run that set off its own
    alert again cannot loop); ``maxPerHour`` runs created in the last hour.
    """
    if spec.suspend:
        return Verdict(SUSPENDED, f"runbook {runbook} is suspended (spec.suspend=true)")
    guard: Guardrails = spec.guardrails
    runs = sorted((r for r in records if r.is_run), key=lambda r: (r.created, r.name))
    unfinished = [r.name for r in runs if r.phase not in FINISHED_PHASES]
    if len(unfinished) >= guard.maxConcurrent:
        return Verdict(
            CONCURRENCY_LIMIT,
            f"{len(unfinished)} run(s) of this group still unfinished "
            f"(maxConcurrent={guard.maxConcurrent}): {', '.join(unfinished[:5])}",
        )
    if runs and guard.cooldownSeconds > 0:
        latest = max(runs, key=lambda r: r.last_activity)
        until = latest.last_activity + datetime.timedelta(seconds=guard.cooldownSeconds)
        if now < until:
            return Verdict(
                COOLDOWN,
                f"run {latest.name} of this group was active at {_at(latest.last_activity)}; "
                f"cooldown of {guard.cooldownSeconds}s lasts until {_at(until)}",
            )
    last_hour = [r for r in runs if r.created > now - HOUR]
    if len(last_hour) >= guard.maxPerHour:
        return Verdict(
            RATE_LIMITED,
            f"{len(last_hour)} run(s) of this group in the last hour "
            f"(maxPerHour={guard.maxPerHour})",
        )
    return None
