"""PromQL conditions, answer parsing and error reading of the Prometheus actions (pure)."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from mcp_remediator.actions.prometheus import (
    PrometheusVerifyParams,
    describe,
    parse_condition,
    top,
)
from mcp_remediator.errors import StepFailed
from mcp_remediator.vendors.prometheus import Sample, _answer, parse_result


@pytest.mark.parametrize(
    ("text", "value", "holds"),
    [
        ("> 0", 0.5, True),
        ("> 0", 0.0, False),
        (">= 0.8", 0.8, True),
        (">= 0.8", 0.79, False),
        ("== 1", 1.0, True),
        ("==1", 2.0, False),
        ("< 5", 4.9, True),
        ("<= -1.5e2", -150.0, True),
        ("!= 0", 0.0, False),
        ("> 0", math.nan, False),
        ("< +Inf", 1e300, True),
    ],
)
def test_conditions_compare_values_like_promql(text: str, value: float, holds: bool) -> None:
    assert parse_condition(text).holds(value) is holds


@pytest.mark.parametrize("text", ["", "0", "> ", "=> 1", "> one", "> 1 or 2", "~= 1", "> 1s"])
def test_malformed_conditions_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="invalid condition"):
        parse_condition(text)


def test_verify_params_reject_a_bad_condition_and_a_hold_longer_than_the_timeout() -> None:
    with pytest.raises(ValidationError, match="invalid condition"):
        PrometheusVerifyParams.model_validate({"query": "up", "condition": "is one"})
    with pytest.raises(ValidationError, match="forSeconds must not exceed"):
        PrometheusVerifyParams.model_validate(
            {"query": "up", "condition": "== 1", "forSeconds": 60, "timeoutSeconds": 30}
        )
    with pytest.raises(ValidationError, match="condition"):
        PrometheusVerifyParams.model_validate({"query": "up"})


def test_vector_and_scalar_answers_parse_into_samples() -> None:
    vector = [
        {"metric": {"__name__": "up", "job": "a"}, "value": [1.5, "1"]},
        {"metric": {"job": "b"}, "value": [1.5, "NaN"]},
    ]
    samples = parse_result(vector)
    assert samples[0] == Sample({"__name__": "up", "job": "a"}, 1.0)
    assert samples[0].selector() == 'up{job="a"}'
    assert samples[1].selector() == '{job="b"}'
    assert samples[1].value_text() == "NaN"
    assert parse_result([1700000000.1, "0.25"]) == [Sample({}, 0.25)]
    assert parse_result([]) == []


def test_a_range_vector_answer_is_refused_with_advice() -> None:
    with pytest.raises(StepFailed, match="range vector") as caught:
        parse_result([{"metric": {}, "values": [[1, "1"], [2, "2"]]}])
    assert caught.value.reason == "BadQuery"


def test_top_picks_the_highest_value_and_ignores_nan() -> None:
    samples = [
        Sample({"module": "mubot"}, math.nan),
        Sample({"module": "finbot"}, 0.4),
        Sample({"module": "aiops"}, 0.1),
    ]
    assert top(samples).labels == {"module": "finbot"}
    assert describe(samples, limit=1) == '{module="mubot"} NaN, and 2 more'
    assert describe([]) == "no data"


def test_the_error_prometheus_sent_is_read_out_of_the_library_exception() -> None:
    text = (
        'HTTP Status Code 400 (b\'{"status":"error","errorType":"bad_data",'
        '"error":"1:6: parse error: unexpected end of input"}\')'
    )
    assert _answer(text) == (400, "1:6: parse error: unexpected end of input")
    # Not Prometheus's JSON: whatever answered is not quoted.
    assert _answer("HTTP Status Code 502 (b'<html>bad gateway</html>')") == (502, "")
    assert _answer('HTTP Status Code 404 (b\'{"detail": "internal"}\')') == (404, "")
    assert _answer("something else") == (0, "something else")
