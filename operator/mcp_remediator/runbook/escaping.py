"""Where a template's value lands decides how it is written there.

Label values, annotations and step outputs come from alerts and from systems the
runbook's author does not control. Rendered as they are, they could rewrite what the
author wrote around them: break out of a PromQL string
(``mcp-x"} or vector(1) or redis_up{namespace="y``, so that a verification always holds),
post ``<!channel>`` or a disguised link to Slack, or move a URL to another path. So the
params that need it say what they hold (``TemplateContext`` in their type, see
``actions.common``) and each value is escaped for the exact spot of the template it fills:

``promql``
    The template is scanned like the PromQL lexer scans a query. Inside a ``"…"`` or
    ``'…'`` string literal the value is escaped as a string literal's content (``\\``,
    the quote, line breaks and other control characters), so it stays one string; after
    ``=~``/``!~`` (a regex matcher) its regex metacharacters are escaped first, so it
    matches itself only. Inside a ```…``` raw string, where nothing can be escaped, a
    value holding a backtick is refused; in a ``#`` comment, one holding a line break.
    Anywhere else a value may only be a single name, number or duration (``5m``), not a
    keyword (``or``, ``and``, ``unless``, ``offset``, ...); anything else is refused.
    A placeholder right after a backslash is refused.
``slack``
    ``&``, ``<`` and ``>`` become ``&amp;``, ``&lt;``, ``&gt;`` (Slack's own escaping), so a
    value cannot mention ``<!channel>``, a user or a group, nor make a link; the
    runbook's own text is left as written, Slack links included.
``url``
    In the path, query or fragment a value is percent-encoded (``/``, ``?``, ``#``, ``&``
    and ``@`` included), so it stays one segment or one value. In the host (after
    ``scheme://``) it must be a host name or a port. A template that begins the URL
    chooses all of it: the allowed-hosts check after rendering is what guards it.
``namespace``
    The whole rendered value must be a namespace name (a DNS-1123 label).

A refused value fails the step with ``TemplateError``, naming the template and the param.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel

from mcp_remediator.actions.common import TemplateContext
from mcp_remediator.errors import TemplateError
from mcp_remediator.models import DNS_LABEL

Context = Literal["promql", "slack", "url", "namespace"]


@dataclass(frozen=True)
class Fill:
    """One placeholder of a template: its text (for messages) and its rendered value."""

    ref: str
    value: str


@cache
def contexts(params: type[BaseModel]) -> dict[str, str]:
    """Param name (and alias) → the ``TemplateContext`` its type declares."""
    found: dict[str, str] = {}
    for name, field in params.model_fields.items():
        markers = [m for m in field.metadata if isinstance(m, TemplateContext)]
        for arg in typing.get_args(field.annotation):  # Optional[Annotated[str, marker]]
            if typing.get_origin(arg) is typing.Annotated:
                markers.extend(m for m in arg.__metadata__ if isinstance(m, TemplateContext))
        if markers:
            found[name] = markers[0].context
            if field.alias:
                found[field.alias] = markers[0].context
    return found


def fill(context: str, parts: Sequence[str], fills: Sequence[Fill], param: str) -> str:
    """The template ``parts[0] + fills[0] + parts[1] + …`` with each value written for its
    spot in ``context``; raises ``TemplateError`` for a value that cannot be."""
    if context == "promql":
        written = [
            _promql(state, f, param) for state, f in zip(_promql_states(parts), fills, strict=True)
        ]
    elif context == "slack":
        written = [slack(f.value) for f in fills]
    elif context == "url":
        written = [
            _url(state, f, param) for state, f in zip(_url_states(parts), fills, strict=True)
        ]
    else:
        written = [f.value for f in fills]
    text = parts[0] + "".join(w + p for w, p in zip(written, parts[1:], strict=True))
    if context == "namespace":
        namespace(text, param, [f.ref for f in fills])
    return text


def namespace(text: str, where: str = "", refs: Sequence[str] = ()) -> str:
    """``text`` if it is a namespace name (a DNS-1123 label), else ``TemplateError``;
    ``refs``: the templates that made it, for the message."""
    if len(text) <= 63 and re.fullmatch(DNS_LABEL, text):
        return text
    made = f"{' and '.join(refs)} rendered {_shown(text)}" if refs else _shown(text)
    raise TemplateError(
        f"{where + ': ' if where else ''}{made}, which is not a namespace name (a DNS-1123 "
        "label: at most 63 lowercase letters, digits and '-', starting and ending with a "
        "letter or digit)"
    )


def _shown(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _refuse(fill: Fill, param: str, why: str) -> TemplateError:
    return TemplateError(f"{param}: template {fill.ref} rendered {_shown(fill.value)}, {why}")


# -- Slack ----------------------------------------------------------------------------------


def slack(value: str) -> str:
    """Slack's escaping of message text: ``&``, ``<``, ``>``."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- PromQL ---------------------------------------------------------------------------------

# The lexer's states at a placeholder: code, a string (its quote; a regex or not), a
# comment, or right after a backslash inside a string.
_CODE, _COMMENT, _ESCAPE = "code", "comment", "escape"
_TOKEN = re.compile(
    r"[A-Za-z_][A-Za-z0-9_:]*"  # a metric, label or function name
    r"|[0-9]+(\.[0-9]+)?"  # a number
    r"|([0-9]+(ms|[smhdwy]))+"  # a duration
)
KEYWORDS = frozenset(
    {
        "and", "or", "unless", "atan2", "by", "without", "on", "ignoring", "group_left",
        "group_right", "bool", "offset", "start", "end",
    }
)  # fmt: skip
_REGEX_META = frozenset("\\.+*?()|[]{}^$")


@dataclass(frozen=True)
class _String:
    quote: str
    regex: bool


def _promql_states(parts: Sequence[str]) -> list[str | _String]:
    """The lexer's state at each placeholder between ``parts``."""
    states: list[str | _String] = []
    state: str | _String = _CODE
    escaped = False  # right after a backslash in a string
    code = ""  # the code so far, to tell a regex matcher's string
    for index, part in enumerate(parts):
        if index:
            states.append(_ESCAPE if escaped else state)
            escaped = False
            if state == _CODE:
                code += "x"  # the value is one token
        for char in part:
            if isinstance(state, _String):
                if escaped:
                    escaped = False
                elif char == "\\" and state.quote != "`":
                    escaped = True
                elif char == state.quote:
                    state = _CODE
            elif state == _COMMENT:
                if char in "\r\n":
                    state = _CODE
            elif char == "#":
                state = _COMMENT
            elif char in "\"'`":
                state = _String(char, code.rstrip().endswith(("=~", "!~")))
            else:
                code += char
    return states


def quote_meta(value: str) -> str:
    """RE2's ``QuoteMeta``: the regex that matches ``value`` literally."""
    return "".join("\\" + c if c in _REGEX_META else c for c in value)


def promql_string(value: str, quote: str) -> str:
    """``value`` as the content of a PromQL string literal in ``quote`` (Go's escapes)."""
    out = []
    for char in value:
        if char == "\\" or char == quote:
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        elif 0xD800 <= ord(char) <= 0xDFFF:
            raise ValueError("a lone surrogate is not valid UTF-8")
        else:
            out.append(char)
    return "".join(out)


def _promql(state: str | _String, fill: Fill, param: str) -> str:
    value = fill.value
    if state == _ESCAPE:
        raise _refuse(fill, param, "right after a backslash in a PromQL string")
    if isinstance(state, _String):
        if state.regex:
            value = quote_meta(value)
        if state.quote == "`":
            if "`" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
                raise _refuse(fill, param, "which a PromQL raw string (`...`) cannot hold")
            return value
        try:
            return promql_string(value, state.quote)
        except ValueError as exc:
            raise _refuse(fill, param, f"which a PromQL string cannot hold ({exc})") from None
    if state == _COMMENT:
        if "\n" in value or "\r" in value:
            raise _refuse(fill, param, "a line break in a PromQL comment")
        return value
    if _TOKEN.fullmatch(value) and value.lower() not in KEYWORDS:
        return value
    raise _refuse(
        fill,
        param,
        "outside a PromQL string, where a value may only be a name, a number or a duration; "
        'put the template inside quotes (label="{{ ... }}") to match any value',
    )


# -- URLs -----------------------------------------------------------------------------------

_BEGIN, _AUTHORITY, _PATH = "begin", "authority", "path"
_HOST_PART = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


def _url_states(parts: Sequence[str]) -> list[str]:
    """Where each placeholder between ``parts`` sits: the start of the URL (``begin``,
    with nothing before it), its scheme or host (``authority``) or after it (``path``)."""
    states: list[str] = []
    state = _BEGIN
    before = ""
    for index, part in enumerate(parts):
        if index:
            states.append(state if (state != _BEGIN or before) else "whole")
            before += "x"
        for char in part:
            before += char
            if state == _BEGIN and before.endswith("://"):
                state = _AUTHORITY
            elif state in (_BEGIN, _AUTHORITY) and char in "/?#" and not before.endswith(":/"):
                state = _PATH
    return states


def _url(state: str, fill: Fill, param: str) -> str:
    if state == "whole":
        return fill.value
    if state == _PATH:
        try:
            return quote(fill.value, safe="")
        except UnicodeEncodeError:
            raise _refuse(fill, param, "which is not valid UTF-8") from None
    if _HOST_PART.fullmatch(fill.value):
        return fill.value
    raise _refuse(
        fill, param, "in a URL's scheme or host, where it may only be a host name or a port"
    )
