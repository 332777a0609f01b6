"""Alertmanager's label matchers, and runbook triggers compiled from them: pure, no I/O.

Matchers in Alertmanager's syntax (``name="v"``, ``!=``, ``=~``, ``!~``; quoted or
unquoted values; a ``{a="1", b=~"2"}`` list) are parsed like Alertmanager 0.25's
``labels.ParseMatchers`` and matched like it: regexes are anchored at both ends, and a
missing label is the empty string. Runbook validation (``runbook.validation``) parses
them; the receiver's cache (``alerts.cache``) matches with them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from mcp_remediator.models import (
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
