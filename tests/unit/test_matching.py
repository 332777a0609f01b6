"""Matchers as Alertmanager parses and applies them; deterministic names; guardrail rules."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest

from mcp_remediator import records
from mcp_remediator.alerts.cache import RunbookCache
from mcp_remediator.models import ANNOTATION_SKIP_REASON, RunbookSpec, Trigger
from mcp_remediator.runbook import guardrails, matchers
from mcp_remediator.runbook.guardrails import Record, Verdict, evaluate
from mcp_remediator.runbook.matchers import CompiledTrigger, MatcherError
from mcp_remediator.runbook.validation import check_runbook
from mcp_remediator.settings import Settings

NOW = datetime.datetime(2026, 11, 28, 12, 0, 0, tzinfo=datetime.UTC)
LABELS = {"alertname": "RedisLowCacheHitRatio", "severity": "warning", "env": "prod"}


def matches(text: str, labels: dict[str, str] = LABELS) -> bool:
    return all(m.matches(labels) for m in matchers.parse_matchers(text))


# -- matchers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('severity="warning"', True),
        ("severity=warning", True),
        ("severity = warning", True),
        ('severity!="warning"', False),
        ("env!=dev", True),
        ('severity=~"warning|critical"', True),
        ('severity=~"warn"', False),  # anchored: a substring is not a match
        ('severity=~"warn.*"', True),
        ('severity!~"info|debug"', True),
        ('severity!~"warn.*"', False),
        ('team=""', True),  # a missing label is the empty string
        ('team!=""', False),
        ('team=~".*"', True),
        ('team=~".+"', False),
        ('{severity="warning", env=~"prod|staging"}', True),
        ('{severity="warning", env="dev"}', False),
    ],
)
def test_matchers_follow_alertmanager_semantics(text: str, expected: bool) -> None:
    assert matches(text) is expected


def test_quoted_values_unescape_like_alertmanager() -> None:
    [m] = matchers.parse_matchers(r'summary="say \"hi\", then\\leave\n"')
    assert m.value == 'say "hi", then\\leave\n'
    [spurious] = matchers.parse_matchers(r'path="a\d"')
    assert spurious.value == r"a\d"  # a spurious escape keeps its backslash
    assert str(m) == r'summary="say \"hi\", then\\leave\n"'


def test_comma_inside_quotes_does_not_split() -> None:
    [m] = matchers.parse_matchers('msg="a,b"')
    assert (m.name, m.op, m.value) == ("msg", "=", "a,b")


def test_regex_does_not_match_across_a_trailing_newline() -> None:
    [m] = matchers.parse_matchers('severity=~"warning"')
    assert not m.matches({"severity": "warning\n"})


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("severity", "bad matcher format"),
        ("1abc=x", "bad matcher format"),
        ('severity="warn', "lacks its closing double quote"),
        ('severity="a"b"', "unescaped double quote"),
        ('severity=~"(unclosed"', "invalid regular expression"),
        ("{}", "no matcher"),
    ],
)
def test_bad_matchers_are_rejected_with_the_cause(text: str, error: str) -> None:
    with pytest.raises(MatcherError, match=re.escape(error)):
        matchers.parse_matchers(text)


def test_trigger_needs_the_alertname_and_every_matcher() -> None:
    trigger = CompiledTrigger.compile(
        Trigger(
            alertname="RedisLowCacheHitRatio",
            matchers=['severity=~"warning|critical"', 'env!="dev"'],
        )
    )
    assert trigger.matches(LABELS)
    assert not trigger.matches({**LABELS, "env": "dev"})
    assert not trigger.matches({**LABELS, "alertname": "RedisDown"})
    assert not trigger.matches({k: v for k, v in LABELS.items() if k != "alertname"})


# -- routing by namespace --------------------------------------------------------------


def cached_runbooks(settings: Settings, *where: tuple[str, str]) -> RunbookCache:
    cache = RunbookCache(settings)
    for version, (namespace, name) in enumerate(where, start=1):
        body = {
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(version)},
            "spec": {
                "triggers": [{"alertname": "RedisDown"}],
                "steps": [{"name": "s", "action": "rolloutRestart", "params": {"name": "x"}}],
            },
        }
        cache.apply("ADDED", body)
    return cache


def matched(cache: RunbookCache, **labels: str) -> list[str]:
    found = cache.match({"alertname": "RedisDown", **labels})
    return sorted(f"{r.namespace}/{r.name}" for r in found)


def test_a_tenant_runbook_takes_only_alerts_of_its_own_namespace() -> None:
    cache = cached_runbooks(Settings(), ("mcp", "platform"), ("team-a", "tenant"))

    assert matched(cache, namespace="mcp") == ["mcp/platform"]
    assert matched(cache, namespace="team-a") == ["mcp/platform", "team-a/tenant"]
    assert matched(cache, namespace="team-b") == ["mcp/platform"]
    assert matched(cache) == ["mcp/platform"]  # no namespace label: trusted runbooks only
    assert [r.name for r in cache.routed_out({"alertname": "RedisDown"})] == ["tenant"]
    assert cache.routed_out({"alertname": "RedisDown", "namespace": "team-a"}) == []
    assert cache.routed_out({"alertname": "Other", "namespace": "mcp"}) == []


def test_trusted_namespaces_come_from_the_settings() -> None:
    settings = Settings(trusted_namespaces=["platform", "team-a"])
    cache = cached_runbooks(settings, ("mcp", "old"), ("team-a", "tenant"))

    assert matched(cache, namespace="mcp") == ["mcp/old", "team-a/tenant"]
    assert matched(cache, namespace="team-b") == ["team-a/tenant"]
    assert matched(cache, namespace="team-a") == ["team-a/tenant"]


# -- names -----------------------------------------------------------------------------

STARTS = "2026-11-28T01:26:33.953Z"


def test_name_is_deterministic_and_depends_on_every_input() -> None:
    name = records.remediation_name("redis-stale-cache", "347dfda9cb670ac3", STARTS)
    assert re.fullmatch(r"redis-stale-cache-[0-9a-f]{10}", name)
    assert name == records.remediation_name("redis-stale-cache", "347dfda9cb670ac3", STARTS)
    others = {
        records.remediation_name("redis-other", "347dfda9cb670ac3", STARTS),
        records.remediation_name("redis-stale-cache", "ffffffffffffffff", STARTS),
        records.remediation_name("redis-stale-cache", "347dfda9cb670ac3", "2026-11-28T01:26:34Z"),
    }
    assert name not in others and len(others) == 3


def test_name_ignores_the_zone_and_trailing_zeros_of_starts_at() -> None:
    a = records.remediation_name("rb", "fp", "2026-11-28T01:26:33.953Z")
    b = records.remediation_name("rb", "fp", "2026-11-28T04:26:33.953000000+03:00")
    assert a == b
    assert records.canonical_time("2026-11-28T01:26:33.123456789Z") == (
        "2026-11-28T01:26:33.123456789Z"
    )
    assert records.canonical_time("2026-11-28T01:26:33Z") == "2026-11-28T01:26:33Z"
    with pytest.raises(ValueError, match="RFC 3339"):
        records.canonical_time("yesterday")


def test_long_runbook_names_are_cut_to_a_valid_63_character_name() -> None:
    runbook = "a" * 51 + "-" + "b" * 100  # the cut falls right after the hyphen
    name = records.remediation_name(runbook, "fp", STARTS)
    assert re.fullmatch("a" * 51 + "-[0-9a-f]{10}", name)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    other = records.remediation_name(runbook[:-1] + "c", "fp", STARTS)
    assert other != name  # the digest covers the whole runbook name


@pytest.mark.parametrize("value", ["RedisDown", "347dfda9cb670ac3", "a.b_c-d"])
def test_valid_label_values_are_kept(value: str) -> None:
    assert records.label_value(value) == value


@pytest.mark.parametrize("value", ["High CPU!", "x" * 80, "-leading", "ünïcode"])
def test_other_strings_become_distinct_valid_label_values(value: str) -> None:
    result = records.label_value(value)
    assert len(result) <= 63
    assert re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", result)
    assert result != records.label_value(value + "?")


def test_group_key_depends_only_on_the_group_by_labels() -> None:
    base = records.group_key(["alertname", "namespace"], {**LABELS, "namespace": "mcp"})
    assert base == records.group_key(
        ["namespace", "alertname"], {**LABELS, "namespace": "mcp", "pod": "x"}
    )
    assert base != records.group_key(["alertname", "namespace"], {**LABELS, "namespace": "b"})
    assert re.fullmatch(r"[0-9a-f]{16}", base)


# -- guardrails ------------------------------------------------------------------------


def spec(suspend: bool = False, **guardrails: Any) -> RunbookSpec:
    return RunbookSpec.model_validate(
        {
            "suspend": suspend,
            "steps": [{"name": "s", "action": "rolloutRestart"}],
            "guardrails": guardrails,
        }
    )


def run(
    name: str,
    minutes_ago: float,
    phase: str = "Succeeded",
    finished_minutes_ago: float | None = None,
    is_run: bool = True,
) -> Record:
    finished = None
    if finished_minutes_ago is not None:
        finished = NOW - datetime.timedelta(minutes=finished_minutes_ago)
    return Record(name, NOW - datetime.timedelta(minutes=minutes_ago), phase, is_run, finished)


def reason(verdict: Verdict | None) -> str | None:
    return verdict.reason if verdict else None


def test_first_run_of_a_group_is_admitted() -> None:
    assert evaluate("rb", spec(), [], NOW) is None


def test_suspend_wins_over_everything() -> None:
    verdict = evaluate("rb", spec(suspend=True), [], NOW)
    assert verdict == Verdict("Suspended", "runbook rb is suspended (spec.suspend=true)")


def test_unfinished_runs_up_to_max_concurrent() -> None:
    running = [run("a", 1, "Running"), run("b", 2, "Pending")]
    assert reason(evaluate("rb", spec(maxConcurrent=2, cooldownSeconds=0), running, NOW)) == (
        "ConcurrencyLimit"
    )
    admitted = evaluate("rb", spec(maxConcurrent=3, cooldownSeconds=0), running, NOW)
    assert admitted is None
    awaiting = [run("c", 1, "AwaitingApproval")]
    assert reason(evaluate("rb", spec(cooldownSeconds=0), awaiting, NOW)) == "ConcurrencyLimit"


def test_cooldown_counts_from_the_later_of_start_and_end() -> None:
    long_run = [run("a", 30, "Succeeded", finished_minutes_ago=5)]
    verdict = evaluate("rb", spec(cooldownSeconds=600), long_run, NOW)
    assert reason(verdict) == "Cooldown"
    assert verdict is not None and "until 2026-11-28T12:05:00Z" in verdict.message
    assert evaluate("rb", spec(cooldownSeconds=299), long_run, NOW) is None
    started_only = [run("b", 9, "Failed")]
    assert reason(evaluate("rb", spec(cooldownSeconds=600), started_only, NOW)) == "Cooldown"
    assert evaluate("rb", spec(cooldownSeconds=539), started_only, NOW) is None


def test_cooldown_boundary_is_exclusive() -> None:
    exactly = [run("a", 10, "Succeeded", finished_minutes_ago=10)]
    assert evaluate("rb", spec(cooldownSeconds=600), exactly, NOW) is None
    assert reason(evaluate("rb", spec(cooldownSeconds=601), exactly, NOW)) == "Cooldown"


def test_max_per_hour_counts_runs_created_in_the_last_hour() -> None:
    runs = [run(f"r{i}", 10 * i + 1, "Succeeded", 10 * i + 1) for i in range(6)]  # 1..51 min
    assert reason(evaluate("rb", spec(cooldownSeconds=0, maxPerHour=6), runs, NOW)) == (
        "RateLimited"
    )
    assert evaluate("rb", spec(cooldownSeconds=0, maxPerHour=7), runs, NOW) is None
    older = [run(f"r{i}", 61 + i, "Succeeded", 61) for i in range(10)]
    assert evaluate("rb", spec(cooldownSeconds=0, maxPerHour=1), older, NOW) is None
    assert reason(evaluate("rb", spec(cooldownSeconds=0, maxPerHour=0), [], NOW)) == ("RateLimited")


def test_concurrency_is_reported_before_cooldown_and_rate() -> None:
    runs = [run("a", 1, "Running")]
    assert reason(evaluate("rb", spec(maxPerHour=1), runs, NOW)) == "ConcurrencyLimit"


def test_skipped_records_and_runs_cancelled_before_starting_do_not_count() -> None:
    skips = [run(f"s{i}", 1, "Skipped", 1, is_run=False) for i in range(20)]
    assert evaluate("rb", spec(), skips, NOW) is None


def body(phase: str | None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x", "creationTimestamp": "2026-11-28T11:50:00Z"}
    meta.update(extra.pop("meta", {}))
    return {"metadata": meta, "status": {"phase": phase, **extra} if phase else {}}


def test_record_of_reads_what_guardrails_need_from_an_api_object() -> None:
    fresh = guardrails.record_of(body(None), NOW)
    assert (fresh.phase, fresh.is_run, fresh.finished) == ("Pending", True, None)
    assert fresh.created == NOW - datetime.timedelta(minutes=10)
    done = guardrails.record_of(body("Failed", finishedAt="2026-11-28T11:55:00Z"), NOW)
    assert done.last_activity == NOW - datetime.timedelta(minutes=5)
    marked = body(None, meta={"annotations": {ANNOTATION_SKIP_REASON: "Cooldown"}})
    assert not guardrails.record_of(marked, NOW).is_run  # before its status is written
    assert not guardrails.record_of(body("Skipped"), NOW).is_run
    assert not guardrails.record_of(body("Cancelled"), NOW).is_run
    started = body("Cancelled", startedAt="2026-11-28T11:51:00Z")
    assert guardrails.record_of(started, NOW).is_run


def test_runbook_validation_reports_bad_trigger_matchers() -> None:
    steps = [{"name": "restart", "action": "rolloutRestart", "params": {"name": "x"}}]
    good = {"alertname": "RedisDown", "matchers": ['severity=~"warning|critical"', "env!=dev"]}
    assert check_runbook({"triggers": [good], "steps": steps}, Settings()) == []
    bad = {"alertname": "RedisDown", "matchers": ['severity=~"(oops"']}
    [problem] = check_runbook({"triggers": [good, bad], "steps": steps}, Settings())
    assert problem.reason == "InvalidMatcher"
    assert problem.message.startswith("triggers[1].matchers: invalid regular expression")


# -- admission of runs the receiver did not judge (by hand, escalations) -------------------


def pending(name: str, minutes_ago: float, judged: bool = False) -> Record:
    return Record(
        name, NOW - datetime.timedelta(minutes=minutes_ago), "Pending", True, None, judged
    )


def test_a_record_as_it_stood_at_a_moment() -> None:
    done = run("a", 10, "Succeeded", finished_minutes_ago=5)
    assert done.as_of(NOW - datetime.timedelta(minutes=4)) == done
    then = done.as_of(NOW - datetime.timedelta(minutes=5))  # finished that very second
    assert (then.phase, then.finished) == ("Running", None)
    assert run("b", 1, "Running").as_of(NOW) == run("b", 1, "Running")


def test_admit_counts_only_earlier_records_as_they_stood_at_the_runs_creation() -> None:
    guard = spec(cooldownSeconds=0)
    candidate = pending("hand", 10)
    # Finished after the run was created: it was unfinished then.
    later_done = run("a", 20, "Succeeded", finished_minutes_ago=1)
    assert reason(guardrails.admit("rb", guard, [later_done], candidate)) == "ConcurrencyLimit"
    earlier_done = run("a", 20, "Succeeded", finished_minutes_ago=15)
    assert guardrails.admit("rb", guard, [earlier_done], candidate) is None
    # Created after it: not counted, whatever its state.
    assert guardrails.admit("rb", guard, [run("b", 5, "Running")], candidate) is None
    cooling = spec(cooldownSeconds=600, maxConcurrent=5)
    verdict = guardrails.admit("rb", cooling, [earlier_done], candidate)
    assert reason(verdict) == "Cooldown"  # 5 minutes after the end, at its creation
    assert guardrails.admit("rb", spec(suspend=True), [], candidate) == Verdict(
        "Suspended", "runbook rb is suspended (spec.suspend=true)"
    )


def test_two_runs_created_together_are_ordered_by_name_whoever_is_judged_first() -> None:
    first, second = pending("hand-1", 1), pending("hand-2", 1)
    guard = spec(cooldownSeconds=0)

    assert guardrails.admit("rb", guard, [second], first) is None
    assert reason(guardrails.admit("rb", guard, [first], second)) == "ConcurrencyLimit"


def test_a_judged_record_of_the_same_second_counts_whatever_its_name() -> None:
    # The receiver's record was admitted without counting the run by hand: it counts.
    receivers = pending("zz-receiver", 1, judged=True)
    verdict = guardrails.admit("rb", spec(cooldownSeconds=0), [receivers], pending("hand", 1))
    assert reason(verdict) == "ConcurrencyLimit"
    assert guardrails.admit("rb", spec(), [pending("zz-hand", 1)], pending("hand", 1)) is None


def test_an_earlier_run_not_judged_yet_counts_only_if_it_may_start() -> None:
    guard = spec(cooldownSeconds=0)
    # r ran from 11:30 to 11:45; hand-1 came at 11:40, hand-2 at 11:50.
    r = run("r", 30, "Succeeded", finished_minutes_ago=15)
    hand_1, hand_2 = pending("hand-1", 20), pending("hand-2", 10)

    # hand-1 met r running: it will be skipped, so it does not hold hand-2 back.
    assert reason(guardrails.admit("rb", guard, [r], hand_1)) == "ConcurrencyLimit"
    assert guardrails.admit("rb", guard, [r, hand_1], hand_2) is None
    # Once hand-1 is judged (started, or the receiver's), it counts as it is.
    started = pending("hand-1", 20, judged=True)
    assert reason(guardrails.admit("rb", guard, [r, started], hand_2)) == "ConcurrencyLimit"


def test_record_of_tells_which_records_are_judged() -> None:
    by_hand = {
        "metadata": {"name": "hand", "creationTimestamp": "2026-11-28T11:50:00Z"},
        "spec": {"runbookRef": {"name": "rb"}},
    }
    assert not guardrails.record_of(by_hand, NOW).judged
    name = records.remediation_name("rb", "fp", STARTS)
    alert = {"fingerprint": "fp", "startsAt": STARTS}
    receivers = {"metadata": {"name": name}, "spec": {"runbookRef": {"name": "rb"}, "alert": alert}}
    assert guardrails.record_of(receivers, NOW).judged
    copied = {**receivers, "metadata": {"name": "rb-copy"}}
    assert not guardrails.record_of(copied, NOW).judged
    assert guardrails.record_of({**by_hand, "status": {"phase": "Running"}}, NOW).judged
    planned = {**by_hand, "status": {"plan": {"runbook": "rb"}}}
    assert guardrails.record_of(planned, NOW).judged
    marked = {**by_hand, "metadata": {"name": "h", "annotations": {ANNOTATION_SKIP_REASON: "x"}}}
    assert guardrails.record_of(marked, NOW).judged


def test_is_alert_record_needs_the_receivers_name_for_the_occurrence() -> None:
    spec = {"runbookRef": {"name": "rb"}, "alert": {"fingerprint": "fp", "startsAt": STARTS}}
    assert records.is_alert_record(records.remediation_name("rb", "fp", STARTS), spec)
    assert not records.is_alert_record("rb-0123456789", spec)
    assert not records.is_alert_record(records.remediation_name("other", "fp", STARTS), spec)
    assert not records.is_alert_record("x", {"runbookRef": {"name": "rb"}})
    broken = {"runbookRef": {"name": "rb"}, "alert": {"fingerprint": "fp", "startsAt": "never"}}
    assert not records.is_alert_record("x", broken)
