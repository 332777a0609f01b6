"""Argo CD sync windows (vendors.argocd_windows) against Argo CD 3.x's own rules.

The cases follow Argo CD's documentation of sync windows and the behaviour of its code
(``SyncWindows.Matches``, ``Active``, ``InactiveAllows``, ``CanSync`` in
``pkg/apis/application/v1alpha1/types.go``; robfig/cron v3's parser and ``Next``; Go's
``time.ParseDuration``), quirks included: a schedule that never fires counts as active,
and a window is open strictly after the instant it starts, until the instant it ends.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from mcp_remediator.vendors.argocd_windows import (
    ZERO,
    Schedule,
    Window,
    WindowError,
    can_sync,
    glob_match,
    matching,
    parse_duration,
)

UTC = datetime.UTC
# A Tuesday, noon UTC.
NOON = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("0 22 * * *", "2026-12-01T21:59:30Z", "2026-12-01T22:00:00Z"),
        # strictly after: at the very minute, the next day's
        ("0 22 * * *", "2026-12-01T22:00:00Z", "2026-12-02T22:00:00Z"),
        ("*/15 * * * *", "2026-12-01T10:07:00Z", "2026-12-01T10:15:00Z"),
        ("5/20 * * * *", "2026-12-01T10:26:00Z", "2026-12-01T10:45:00Z"),  # N/step: N-59/step
        ("0 0 * * 6", "2026-12-01T00:00:00Z", "2026-12-05T00:00:00Z"),  # next Saturday
        ("0 0 * * SAT", "2026-12-01T00:00:00Z", "2026-12-05T00:00:00Z"),
        # day of month and day of week both restricted: either matches (Monday the 7th)
        ("0 0 1 * 1", "2026-12-01T00:00:01Z", "2026-12-07T00:00:00Z"),
        # one of them * (even written ?): both must match
        ("0 0 1 * *", "2026-12-01T00:00:01Z", "2027-01-01T00:00:00Z"),
        ("0 0 1 * ?", "2026-12-01T00:00:01Z", "2027-01-01T00:00:00Z"),
        # */1 is a step of 1: still "*" for the day rule
        ("0 0 1 * */1", "2026-12-01T00:00:01Z", "2027-01-01T00:00:00Z"),
        # a step over 1 is not "*": day of month OR day of week
        ("0 0 1 * */2", "2026-12-01T00:00:01Z", "2026-12-03T00:00:00Z"),
        ("30 9 * jan-mar mon-fri", "2026-12-01T00:00:00Z", "2027-01-01T09:30:00Z"),
        ("0 12 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T12:00:00Z"),
    ],
)
def test_next_is_robfigs(schedule: str, after: str, expected: str) -> None:
    assert Schedule.parse(schedule).next(at(after)) == at(expected)


def test_a_schedule_that_never_fires_answers_zero_as_robfig_does() -> None:
    assert Schedule.parse("0 0 30 2 *").next(NOON) == ZERO


@pytest.mark.parametrize(
    "schedule",
    ["61 * * * *", "* * * *", "* * * * * *", "@daily", "0 24 * * *", "5-1 * * * *",
     "0 0 0 * *", "0 0 * 13 *", "0 0 * * 7", "*/0 * * * *", "a * * * *", "1-2-3 * * * *"],
)  # fmt: skip
def test_schedules_robfig_refuses(schedule: str) -> None:
    with pytest.raises(WindowError):
        Schedule.parse(schedule)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h30m", 5400), ("1.5h", 5400), ("90m", 5400), ("300ms", 0.3), ("-2h", -7200),
     ("0", 0), ("1h0m0s", 3600), ("2h45m30.5s", 9930.5), ("1µs", 0.000001)],
)  # fmt: skip
def test_durations_read_as_go_reads_them(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "1d", "h", "1h-", ".h", "+"])
def test_durations_go_refuses(text: str) -> None:
    with pytest.raises(WindowError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [("*", "anything", True), ("dese-*", "dese-api", True), ("dese-*", "observability", False),
     ("dese-?pi", "dese-api", True), ("{dese-api,observability}", "observability", True),
     ("[a-c]pp", "bpp", True), ("[!a-c]pp", "bpp", False), ("mcp", "mcp-x", False),
     ("[unclosed", "[unclosed", False)],
)  # fmt: skip
def test_globs_as_gobwas_reads_them(pattern: str, value: str, matches: bool) -> None:
    assert glob_match(pattern, value) is matches


def app(name: str = "dese-api", namespace: str = "mcp", **cluster: str) -> dict[str, Any]:
    """An Application; ``cluster``: its destination's ``server`` or ``name`` (as ``dest``)."""
    destination = {"namespace": namespace, **cluster}
    if "dest" in destination:
        destination["name"] = destination.pop("dest")
    return {"metadata": {"name": name}, "spec": {"destination": destination}}


def window(**scope: Any) -> Window:
    return Window.of({"kind": "deny", "schedule": "0 10 * * *", "duration": "4h", **scope})


@pytest.mark.parametrize(
    ("scope", "target", "matches"),
    [
        ({"applications": ["dese-*"]}, app(), True),
        ({"applications": ["observability"]}, app(), False),
        ({"namespaces": ["mcp"]}, app(), True),
        ({"clusters": ["in-cluster"]}, app(dest="other-cluster"), False),
        ({"clusters": ["in-*"]}, app(dest="in-cluster"), True),
        ({"clusters": ["https://kubernetes.default.svc"]},
         app(server="https://kubernetes.default.svc"), True),
        ({"clusters": ["in-*"]}, app(), False),  # no destination name or server
        # OR (the default): any of the set lists
        ({"applications": ["dese-*"], "namespaces": ["prod"]}, app(), True),
        ({"applications": ["other"], "namespaces": ["mcp"]}, app(), True),
        # AND: all that are set
        ({"applications": ["dese-*"], "namespaces": ["prod"], "andOperator": True}, app(), False),
        ({"applications": ["dese-*"], "namespaces": ["mcp"], "andOperator": True}, app(), True),
        ({"applications": ["dese-*"], "andOperator": True}, app(), True),
        ({}, app(), False),  # a window naming nothing applies to nothing
    ],
)  # fmt: skip
def test_which_windows_apply_to_an_app(
    scope: dict[str, Any], target: dict[str, Any], matches: bool
) -> None:
    assert (matching([window(**scope)], target) != []) is matches


# Noon UTC on a Tuesday: a 10:00 window of 4h is open, a 20:00 window of 2h is not.
OPEN_DENY = {"kind": "deny", "schedule": "0 10 * * *", "duration": "4h"}
OPEN_ALLOW = {**OPEN_DENY, "kind": "allow"}
SHUT_ALLOW = {"kind": "allow", "schedule": "0 20 * * *", "duration": "2h"}
SHUT_DENY = {**SHUT_ALLOW, "kind": "deny"}


@pytest.mark.parametrize(
    ("windows", "manual", "allowed", "says"),
    [
        ([], True, True, ""),
        ([OPEN_DENY], True, False, "closes at 2026-12-01T14:00:00Z"),
        ([OPEN_DENY], False, False, "an automated sync"),
        ([{**OPEN_DENY, "manualSync": True}], True, True, ""),
        ([{**OPEN_DENY, "manualSync": True}], False, False, ""),
        # every active deny window must allow manual syncs
        ([{**OPEN_DENY, "manualSync": True}, {**OPEN_DENY, "schedule": "0 11 * * *"}], True,
         False, "closes at 2026-12-01T15:00:00Z"),
        ([OPEN_ALLOW], False, True, ""),
        ([SHUT_ALLOW], True, False, "the next opens at 2026-12-01T20:00:00Z"),
        ([{**SHUT_ALLOW, "manualSync": True}], True, True, ""),
        ([{**SHUT_ALLOW, "manualSync": True}], False, False, ""),
        # an active deny wins over an active allow
        ([OPEN_DENY, OPEN_ALLOW], True, False, "blocked by the active deny"),
        # an active allow makes the inactive allows irrelevant
        ([OPEN_ALLOW, SHUT_ALLOW], False, True, ""),
        ([SHUT_DENY], False, True, ""),
        # open strictly after its start, until its end (excluded)
        ([{**OPEN_DENY, "schedule": "0 12 * * *", "duration": "1m"}], True, True, ""),
        ([{**OPEN_DENY, "schedule": "59 11 * * *", "duration": "2m"}], True, False, ""),
        ([{**OPEN_DENY, "schedule": "59 11 * * *", "duration": "1m"}], True, True, ""),
        ([{**OPEN_DENY, "schedule": "0 8 * * *"}], True, True, ""),
        # a schedule that never fires counts as active (robfig's zero time is in the past)
        ([{**OPEN_DENY, "schedule": "0 0 30 2 *"}], True, False, "closes at never"),
        ([{**OPEN_DENY, "schedule": "not cron"}], True, False, "invalid sync window"),
        ([{**OPEN_DENY, "duration": "4 hours"}], True, False, "cannot parse duration"),
        # syncOverrun concerns running operations: a new sync is judged as without it
        ([{**OPEN_DENY, "syncOverrun": True}], True, False, ""),
    ],
)  # fmt: skip
def test_can_sync_as_argo_cd_decides(
    windows: list[dict[str, Any]], manual: bool, allowed: bool, says: str
) -> None:
    verdict = can_sync([Window.of(w) for w in windows], manual=manual, now=NOON)
    assert verdict.allowed is allowed, verdict.reason
    assert says in verdict.reason
    assert (verdict.reason == "") is allowed


def test_a_time_zone_shifts_the_schedule_by_its_offset_now() -> None:
    # 13:00 in Istanbul (UTC+3) is 10:00 UTC: open at 11:30 UTC, closed again at 12:00 UTC.
    istanbul = {**OPEN_DENY, "schedule": "0 13 * * *", "duration": "2h",
                "timeZone": "Europe/Istanbul"}  # fmt: skip
    early = can_sync([Window.of(istanbul)], manual=True, now=at("2026-12-01T11:30:00Z"))
    assert not early.allowed and "closes at 2026-12-01T12:00:00Z" in early.reason
    assert "(Europe/Istanbul)" in early.reason
    assert can_sync([Window.of(istanbul)], manual=True, now=NOON).allowed
    # An unknown zone is UTC, as in Argo CD.
    unknown = {**OPEN_DENY, "timeZone": "Mars/Olympus"}
    assert not can_sync([Window.of(unknown)], manual=True, now=NOON).allowed


def test_the_reason_names_the_window() -> None:
    described = {**OPEN_DENY, "applications": ["dese-*"], "description": "release freeze"}
    verdict = can_sync([Window.of(described)], manual=True, now=NOON)
    assert verdict.reason.startswith(
        "blocked by the active deny window '0 10 * * *' for 4h [applications dese-*] "
        "(release freeze)"
    )
