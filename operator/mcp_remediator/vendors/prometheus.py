"""Prometheus instant queries, through prometheus-api-client's ``PrometheusConnect``.

The library is synchronous (``requests``), so every query runs in a worker thread
(``asyncio.to_thread``) and never blocks the event loop. It is built per query with the
URL and bearer token the action resolved (``MCP_PROMETHEUS_URL`` and
``MCP_PROMETHEUS_TOKEN[_FILE]`` for trusted namespaces, else Secrets of the remediation's
own namespace: ``actions/credentials``) and ``MCP_PROMETHEUS_TIMEOUT_SECONDS``,
and with its own retries switched off: the engine owns the retry policy, and a query
that must be retried should be retried where it shows in the step's status.

Errors become step failures that say what went wrong: Prometheus unreachable or failing
(transient), the query rejected (``BadQuery``, with Prometheus's own parser message; an
answer that is not Prometheus's JSON error is not quoted),
credentials refused, a token that cannot be sent (not header-safe: ``PrometheusBadToken``).
Messages name the server by ``redact.safe_host`` only, never its user info or the token.

Called by ``actions/prometheus.py``.
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.exceptions
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from pydantic import SecretStr
from urllib3.util.retry import Retry

from mcp_remediator import redact
from mcp_remediator.errors import StepFailed, TransientFailure
from mcp_remediator.settings import Settings

BAD_QUERY = "BadQuery"
UNAVAILABLE = "PrometheusUnavailable"
# PrometheusApiClientException's only carrier of the answer: "HTTP Status Code 400 (b'...')".
_STATUS_ERROR = re.compile(r"^HTTP Status Code (\d+) \((.*)\)$", re.DOTALL)


@dataclass(frozen=True)
class Sample:
    """One series of an instant query's answer (or its scalar, with no labels)."""

    labels: dict[str, str]
    value: float

    def selector(self) -> str:
        """The series as Prometheus prints it: ``name{label="value", ...}``."""
        labels = dict(self.labels)
        name = labels.pop("__name__", "")
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return f"{name}{{{inner}}}" if inner or not name else name

    def value_text(self) -> str:
        if math.isnan(self.value):
            return "NaN"
        if math.isinf(self.value):
            return "+Inf" if self.value > 0 else "-Inf"
        return f"{self.value:g}"


def parse_result(result: Any) -> list[Sample]:
    """The samples of an instant query's ``data.result`` (vector or scalar)."""
    if (
        isinstance(result, list)
        and len(result) == 2
        and isinstance(result[0], int | float)
        and isinstance(result[1], str)
    ):
        return [Sample({}, float(result[1]))]
    if not isinstance(result, list):
        raise StepFailed(f"unexpected Prometheus answer: {str(result)[:200]}", reason=BAD_QUERY)
    samples = []
    for item in result:
        if not isinstance(item, dict) or "value" not in item:
            raise StepFailed(
                "the query returns a range vector; use an instant vector (no [range] selector "
                "at the top level)",
                reason=BAD_QUERY,
            )
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        samples.append(Sample(labels, float(item["value"][1])))
    return samples


def _answer(text: str) -> tuple[int, str]:
    """(HTTP status, Prometheus's error text) out of the library's exception message."""
    match = _STATUS_ERROR.match(text)
    if match is None:
        return 0, text[:300]
    status, raw = int(match.group(1)), match.group(2)
    try:
        content = ast.literal_eval(raw)
        body = json.loads(content.decode() if isinstance(content, bytes) else content)
        error = body.get("error")
    except (ValueError, SyntaxError, AttributeError):
        return status, ""  # not Prometheus's JSON: whatever answered is not quoted
    return status, error[:300] if isinstance(error, str) else ""


class Prometheus:
    """Instant queries against one Prometheus.

    ``url`` and ``token`` come with where they came from (``url_source``,
    ``token_source``: a setting or a Secret), which messages name instead of the values.
    """

    def __init__(
        self,
        settings: Settings,
        url: SecretStr | None,
        token: SecretStr | None = None,
        *,
        url_source: str = "MCP_PROMETHEUS_URL",
        token_source: str = "MCP_PROMETHEUS_TOKEN_FILE",
    ):
        if url is None or not url.get_secret_value():
            raise StepFailed(f"{url_source} is not set", reason="NotConfigured")
        self.url = url.get_secret_value().rstrip("/")
        self.timeout = settings.prometheus_timeout_seconds
        self.headers: dict[str, str] = {}
        self.token_source = token_source
        # The URL may carry credentials; name the host, or else the URL's source.
        self.where = f"Prometheus at {redact.safe_host(self.url, url_source)}"
        if token is not None:
            if not redact.header_safe(token.get_secret_value()):
                raise StepFailed(
                    f"{token_source} is not a usable bearer token: it {redact.HEADER_SAFE_RULE}",
                    reason="PrometheusBadToken",
                )
            self.headers["Authorization"] = f"Bearer {token.get_secret_value()}"

    async def query(self, promql: str) -> list[Sample]:
        """Run an instant query; the samples of its answer."""
        return await asyncio.to_thread(self._query, promql)

    def _query(self, promql: str) -> list[Sample]:
        connection = PrometheusConnect(
            url=self.url,
            headers=self.headers,
            # False: no retry, and urllib3's own error comes through (a read timeout stays
            # a timeout instead of becoming "max retries exceeded").
            retry=Retry(total=False),
            # requests takes float seconds; the library's hint says int.
            timeout=self.timeout,  # type: ignore[arg-type]
        )
        try:
            result = connection.custom_query(promql)
        except PrometheusApiClientException as exc:
            raise self._failure(str(exc)) from exc
        except requests.Timeout as exc:
            raise TransientFailure(
                f"{self.where} did not answer within {self.timeout:g}s", reason=UNAVAILABLE
            ) from exc
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise TransientFailure(
                f"{self.where} unreachable ({type(exc).__name__})", reason=UNAVAILABLE
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientFailure(
                f"{self.where} answered something that is not a Prometheus API response",
                reason=UNAVAILABLE,
            ) from exc
        finally:
            connection.close()
        return parse_result(result)

    def _failure(self, text: str) -> StepFailed:
        status, error = _answer(text)
        said = f": {error}" if error else " (not a Prometheus API error)"
        if status in (400, 422):
            return StepFailed(f"Prometheus rejected the query{said}", reason=BAD_QUERY)
        if status in (401, 403):
            return StepFailed(
                f"{self.where} answered {status}: check {self.token_source}",
                reason="PrometheusUnauthorized",
            )
        return TransientFailure(f"{self.where} answered {status}{said}", reason=UNAVAILABLE)
