"""What text may show of values that can hold secrets: URLs, exceptions, tokens.

Every message, status field, Event and log line that names a server uses ``safe_host``
(``host[:port]``) or ``safe_url`` (scheme, host, port and path): never the user info of a
URL (``redis://:PASSWORD@…``, ``http://admin:PASSWORD@prometheus``), never its query or
fragment (``?token=…``). A URL that cannot be read unambiguously — a port that is not a
number, a ``/``, ``?`` or ``#`` inside a pasted password, which moves the host into the
path — is shown as the caller's fallback (where it came from, e.g. ``MCP_PROMETHEUS_URL``),
since what a parser would call its host may be part of the password.

An unexpected exception is told by its type only (``exception_type``, and
``traceback_without_text`` for the log): its text or repr may carry what it failed on,
e.g. a ``UnicodeEncodeError`` holds the whole ``Authorization: Bearer …`` header.

``header_safe`` says whether a token can be sent in an HTTP header at all (settings reject
others at load, vendors before they send), and ``redact_http_logs`` makes httpx's own
request log line (INFO, ``HTTP Request: GET <url> …``) show ``safe_url``. Imports nothing
of the package: every layer may use it.
"""

from __future__ import annotations

import logging
import re
import traceback
from urllib.parse import urlsplit

import httpx

HOST = re.compile(r"[a-z0-9_]([a-z0-9._-]*[a-z0-9_])?")
IPV6 = re.compile(r"[0-9a-f:.]+")
HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def _parts(url: str) -> tuple[str, str, int | None, str] | None:
    """(scheme, host, port, path) of a URL that reads unambiguously, else ``None``."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except (ValueError, TypeError, AttributeError):
        return None
    if not parts.scheme or not host:
        return None
    # An "@" after the authority: a password holding "/", "?" or "#" ended the authority
    # early and moved (part of) itself and the real host there, so that what the parser
    # calls the host is a piece of the password (``http://:a@b/c@finbot`` has host "b").
    if "@" in url.strip()[len(parts.scheme) + 3 + len(parts.netloc) :]:
        return None
    if HOST.fullmatch(host):
        shown = host
    elif ":" in host and IPV6.fullmatch(host):
        shown = f"[{host}]"
    else:
        return None
    return parts.scheme.lower(), shown, port, parts.path


def safe_host(url: str, fallback: str = "an invalid URL") -> str:
    """``host[:port]`` of ``url`` (the port only when the URL names one), or ``fallback``
    when the URL does not read unambiguously; never user info, path or query."""
    parts = _parts(url)
    if parts is None:
        return fallback
    _, host, port, _ = parts
    return host if port is None else f"{host}:{port}"


def safe_url(url: str, fallback: str = "an invalid URL") -> str:
    """``scheme://host[:port]/path`` of ``url``, or ``fallback``: no user info, query or
    fragment."""
    parts = _parts(url)
    if parts is None:
        return fallback
    scheme, host, port, path = parts
    authority = host if port is None else f"{host}:{port}"
    return f"{scheme}://{authority}{path}"


def header_safe(token: str) -> bool:
    """Whether ``token`` can be sent as a bearer token: visible ASCII characters only (no
    space, no control character, nothing like a pasted ``’``)."""
    return HEADER_SAFE.fullmatch(token) is not None


HEADER_SAFE_RULE = (
    "must be visible ASCII characters only (no spaces, line breaks or non-ASCII characters "
    "such as a pasted \u2019)"
)


def exception_type(exc: BaseException) -> str:
    """How a message names an unexpected exception: its type, never its text."""
    return type(exc).__name__


def traceback_without_text(exc: BaseException) -> str:
    """The frames of ``exc`` and of the exceptions it was raised from, with their types but
    neither their messages nor any source line: where it went wrong, for the log."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    lines: list[str] = []
    for item in reversed(chain):
        for frame in traceback.extract_tb(item.__traceback__):
            lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
        kind = type(item)
        lines.append(f"{kind.__module__}.{kind.__qualname__} (its text is not logged)")
    return "\n".join(lines)


class _RedactHttpxUrls(logging.Filter):
    """httpx logs each request with its URL as an argument: show ``safe_url`` of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                safe_url(str(arg), "<URL withheld>") if isinstance(arg, httpx.URL) else arg
                for arg in record.args
            )
        return True


_HTTPX_FILTER = _RedactHttpxUrls()


def redact_http_logs() -> None:
    """Make httpx's request log lines show URLs as ``safe_url`` (idempotent)."""
    logging.getLogger("httpx").addFilter(_HTTPX_FILTER)
