"""The silence guardrail's pure rules: matchers, the endsAt bound, finding a run's own
silences again, reading Alertmanager's version (``silences``, ``vendors.alertmanager``)."""

from __future__ import annotations

from mcp_remediator import silences
from mcp_remediator.models import Plan, SilenceGuardrail, Step, StepStatus
from mcp_remediator.settings import Settings
from mcp_remediator.vendors.alertmanager import version_at_least


def plan(*steps: Step, verification: int = 300) -> Plan:
    return Plan(
        steps=list(steps),
        silence=SilenceGuardrail(enabled=True, verificationSeconds=verification),
        groupBy=["alertname", "namespace"],
    )


def test_matchers_are_the_alertname_and_the_group_labels_the_alert_has() -> None:
    labels = {"alertname": "RedisDown", "namespace": "mcp", "instance": "r:6379", "pod": ""}

    assert silences.matchers(labels, ["namespace", "pod", "deployment"]) == {
        "alertname": "RedisDown",
        "namespace": "mcp",
    }
    assert silences.matchers({"namespace": "mcp"}, ["namespace"]) == {"namespace": "mcp"}


def test_the_bound_is_every_attempt_left_with_its_backoffs_plus_the_verification() -> None:
    settings = Settings(retry_backoff_seconds=2.0)
    steps = [
        Step(name="a", action="redisPing", timeoutSeconds=100, retries=2),
        Step(name="b", action="redisPing", timeoutSeconds=10, retries=0),
    ]
    fresh = [StepStatus(name=s.name, action=s.action) for s in steps]

    # a: 3 attempts of 100 s, backoffs 2 + 4; b: one of 10 s; then 300 s of verification.
    assert silences.bound_seconds(plan(*steps), fresh, settings) == 300 + 6 + 10 + 300

    # After a's first attempt failed: two attempts and one backoff (4 s) left.
    fresh[0].attempts, fresh[0].phase = 1, "Running"
    assert silences.bound_seconds(plan(*steps), fresh, settings) == 200 + 4 + 10 + 300
    fresh[0].phase = "Succeeded"
    assert silences.bound_seconds(plan(*steps), fresh, settings) == 10 + 300


def test_the_bound_never_exceeds_the_longest_silence_allowed() -> None:
    settings = Settings(silence_max_seconds=600)
    step = Step(name="slow", action="redisPing", timeoutSeconds=3600, retries=0)

    bound = silences.bound_seconds(
        plan(step), [StepStatus(name="slow", action="redisPing")], settings
    )

    assert bound == 600


def test_a_silence_is_ours_by_its_creator_and_its_comment() -> None:
    ours = {"createdBy": "mcp-remediator", "comment": silences.comment("mcp", "redis-down-0a1b")}

    assert silences.owner(ours) == ("mcp", "redis-down-0a1b")
    assert silences.owner({**ours, "createdBy": "alice"}) is None
    assert silences.owner({**ours, "comment": "maintenance of redis"}) is None


def test_silence_annotations_need_alertmanager_0_32() -> None:
    assert version_at_least("0.32.0", (0, 32))
    assert version_at_least("v0.33.1-rc.0", (0, 32))
    assert version_at_least("1.0.0", (0, 32))
    assert not version_at_least("0.25.0", (0, 32))
    assert not version_at_least("", (0, 32))
