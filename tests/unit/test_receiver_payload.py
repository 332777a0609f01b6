"""A webhook body is read as strict JSON: every pathological text is a PayloadError that
says what is wrong (the receiver answers it 400), never another exception (a 500)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mcp_remediator import records
from mcp_remediator.alerts.payload import PayloadError, WebhookPayload, load_json

ALERT = {
    "status": "firing",
    "labels": {"alertname": "A"},
    "startsAt": "2026-11-28T01:26:33.953Z",
    "fingerprint": "0123456789abcdef",
}


def body(**changes: object) -> dict[str, object]:
    return {"version": "4", "alerts": [{**ALERT, **changes}]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested too deeply"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"n": NaN}', "NaN is not a JSON number"),
        (b'{"n": [Infinity]}', "Infinity is not a JSON number"),
        (b'{"n": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"n": 1e400}', "number '1e400' is out of range"),
        (b'{"n": -1' + b"0" * 400 + b".5}", "is out of range"),
        (b'{"n": ' + b"9" * 5000 + b"}", "Exceeds the limit (4300 digits)"),
        (b'{"version": "4", "version": "3"}', "duplicate key 'version'"),
        (b'{"a": {"k": 1, "k": 1}}', "duplicate key 'k'"),
        (b'{"a": "\xff"}', "not UTF-8 (invalid start byte at byte 7)"),
        (b'{"a": "\xed\xa0\x80"}', "not UTF-8"),  # an encoded surrogate
        (b'{"a": "\xc0\xaf"}', "not UTF-8"),  # overlong
        (b"\xef\xbb\xbf{}", "byte order mark"),
        ('{"a": "b"}'.encode("utf-16"), "not UTF-8"),
        ('{"a": "b"}'.encode("utf-16-le"), "body is not JSON"),
        (b'{"a": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"a": "\\udc00\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"\\ud800": 1}', "lone UTF-16 surrogate"),
        (b'{"a": "x\ny"}', "Invalid control character"),
        (b"", "Expecting value"),
    ],
)
def test_pathological_json_is_a_payload_error_saying_why(raw: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match="body is") as caught:
        load_json(raw)
    assert message in str(caught.value)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}),  # a surrogate pair is a character
        (b'{"a": "\\\\ud800"}', {"a": "\\ud800"}),  # an escaped backslash, not an escape
        (b'{"n": 1e308, "m": -0.0}', {"n": 1e308, "m": -0.0}),
        (b'{"n": ' + b"9" * 4000 + b"}", {"n": int("9" * 4000)}),
        ('{"a": "é€"}'.encode(), {"a": "é€"}),
        (b'[{"k": 1}, {"k": 2}]', [{"k": 1}, {"k": 2}]),  # one key per object
        (b"[" * 200 + b"]" * 200, json.loads("[" * 200 + "]" * 200)),
    ],
)
def test_strict_json_still_reads_every_valid_text(raw: bytes, value: object) -> None:
    assert load_json(raw) == value


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (body(startsAt="9999-12-31T23:59:59-01:00"), "years 1 to 9999 UTC"),
        (body(startsAt="0001-01-01T00:00:00+01:00"), "years 1 to 9999 UTC"),
        ({**body(), "truncatedAlerts": 2**64}, "truncatedAlerts: Input should be less than"),
        ({**body(), "truncatedAlerts": 10**400}, "truncatedAlerts"),
        ({"version": [[[]]], "alerts": []}, "unsupported webhook payload version a JSON array"),
        ({"version": "x" * 1000, "alerts": []}, "version '" + "x" * 36 + "...;"),
    ],
)
def test_out_of_range_payloads_are_payload_errors(payload: object, message: str) -> None:
    with pytest.raises(PayloadError) as caught:
        WebhookPayload.parse(payload)
    assert message in str(caught.value)


def test_the_largest_counts_and_times_are_accepted() -> None:
    parsed = WebhookPayload.parse(
        {**body(startsAt="9999-12-31T23:59:59+01:00"), "truncatedAlerts": 2**64 - 1}
    )
    assert parsed.truncatedAlerts == 2**64 - 1
    assert records.canonical_time("0001-01-01T00:00:00-01:00").endswith("-01-01T01:00:00Z")


def test_times_out_of_range_in_utc_are_value_errors() -> None:
    with pytest.raises(ValueError, match="years 1 to 9999 UTC"):
        records.canonical_time("9999-12-31T23:59:59-00:01")


# -- what Alertmanager 0.25 to 0.34 sends, and what it sends with a custom payload --------

DATA = Path(__file__).parents[1] / "data"
# v0.34.0's webhook Message: the embedded template.Data's JSON fields, then its own.
V034_FIELDS = [
    "receiver",
    "status",
    "alerts",
    "notification_reason",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "routeLabels",
    "externalURL",
    "version",
    "groupKey",
    "truncatedAlerts",
]
ALERT_FIELDS = [
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "generatorURL",
    "fingerprint",
]


def captured(version: str, status: str) -> Any:
    return load_json((DATA / f"alertmanager-{version}-{status}.json").read_bytes())


@pytest.mark.parametrize("status", ["firing", "resolved"])
def test_the_034_payloads_are_the_025_captures_with_the_fields_034_added(status: str) -> None:
    old, new = captured("0.25", status), captured("0.34", status)

    assert list(new) == V034_FIELDS
    assert list(old) == [f for f in V034_FIELDS if f not in ("notification_reason", "routeLabels")]
    assert {k: v for k, v in new.items() if k in old} == old
    assert all(list(alert) == ALERT_FIELDS for alert in old["alerts"])


@pytest.mark.parametrize(
    ("version", "status", "reason"),
    [
        ("0.25", "firing", None),
        ("0.25", "resolved", None),
        ("0.34", "firing", "first notification"),
        ("0.34", "resolved", "all alerts resolved"),
    ],
)
def test_payloads_of_both_versions_parse_to_the_same_alerts(
    version: str, status: str, reason: str | None
) -> None:
    parsed = WebhookPayload.parse(captured(version, status))
    reference = WebhookPayload.parse(captured("0.25", status))

    assert parsed.alerts == reference.alerts and parsed.groupKey == reference.groupKey
    assert parsed.notification_reason == reason
    fields = parsed.record_fields()
    assert fields == {"groupKey": '{}:{alertname="RedisLowCacheHitRatio"}'} | (
        {"notificationReason": reason} if reason else {}
    )


def test_fields_a_later_alertmanager_may_add_are_ignored_not_refused() -> None:
    later = {
        **body(extra={"nested": [1, {"deep": None}]}, silencedBy=["x"]),
        "routeLabels": {"team": "sre"},
        "routeLabelsV2": [{"name": "team"}],
        "someFutureFlag": True,
        "notification_reason": {"code": 5, "text": "a new shape"},
    }

    parsed = WebhookPayload.parse(later)

    assert [a.fingerprint for a in parsed.alerts] == [ALERT["fingerprint"]]
    assert parsed.notification_reason is None  # only recorded: a changed type is dropped
    assert "notificationReason" not in parsed.record_fields()


@pytest.mark.parametrize(
    ("data", "what"),
    [
        ([{"text": "RedisDown firing"}], "it is a JSON array, not an object"),
        ("RedisDown firing", "it is 'RedisDown firing', not an object"),
        ({"text": "RedisDown firing", "channel": "#ops"}, "no 'version' and no 'alerts' field"),
        ({"version": "4", "text": "RedisDown firing"}, "it has no 'alerts' field"),
        ({"alerts": [ALERT]}, "it has no 'version' field"),
    ],
)
def test_a_custom_payload_is_refused_with_the_advice_to_remove_it(data: Any, what: str) -> None:
    with pytest.raises(PayloadError) as caught:
        WebhookPayload.parse(data)

    message = str(caught.value)
    assert message.startswith("the body is JSON but not an Alertmanager webhook payload")
    assert what in message
    assert "webhook_config sets `payload`" in message and "remove it" in message
