"""McpRemediation end to end: the real operator (Kopf + engine) against the emulated API."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fixtures.cluster import Cluster, OperatorFactory, OperatorUnderTest, deployment, remediation
from mcp_remediator.kube.refusals import KYVERNO, PROTECTED_NAMESPACE
from mcp_remediator.models import ANNOTATION_PROPOSED_BY, API_VERSION, REMEDIATIONS, RUNBOOKS
from mcp_remediator.testing.emulator import complete_rollouts

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}


def restart_step(step: str = "restart", /, **params: Any) -> dict[str, Any]:
    return {"name": step, "action": "rolloutRestart", "params": params}


def annotation(cluster: Cluster, plural: str, name: str, namespace: str = "mcp") -> str | None:
    obj = cluster.get("apps/v1", plural, namespace, name)
    value: str | None = obj["spec"]["template"]["metadata"].get("annotations", {}).get(RESTARTED_AT)
    return value


def events_for(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in cluster.api.list_objects("v1", "events", "mcp")
        if e.get("involvedObject", {}).get("name") == name
    ]


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
async def test_manual_remediation_restarts_each_workload_kind(
    cluster: Cluster, operator: OperatorUnderTest, kind: str
) -> None:
    cluster.seed(deployment("finbot-api", kind=kind))
    cluster.seed(remediation("restart-finbot", [restart_step(kind=kind, name="finbot-api")]))

    done = await cluster.wait_phase("mcp", "restart-finbot", {"Succeeded", "Failed", "Refused"})

    assert done["status"]["phase"] == "Succeeded", done["status"]
    [step] = done["status"]["steps"]
    assert step["phase"] == "Succeeded"
    assert step["attempts"] == 1
    assert step["outputs"]["names"] == "finbot-api"
    assert annotation(cluster, PLURALS[kind], "finbot-api") == step["outputs"]["restartedAt"]
    assert "rollout complete" in step["message"]
    patches = cluster.writes(PLURALS[kind])
    assert len(patches) == 1
    assert patches[0].headers["Content-Type"] == "application/strategic-merge-patch+json"
    # The final Event is posted right after the final status: wait for it.
    await cluster.wait_for(
        lambda: (
            {"Started", "StepSucceeded", "Succeeded"}
            <= {e["reason"] for e in events_for(cluster, "restart-finbot")}
        ),
        what="the remediation's Events",
    )


async def test_selector_restarts_every_matching_deployment_only(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(deployment("finbot-a", labels={"module": "finbot"}))
    cluster.seed(deployment("finbot-b", labels={"module": "finbot"}))
    cluster.seed(deployment("mubot", labels={"module": "mubot"}))
    cluster.seed(remediation("by-selector", [restart_step(selector="module=finbot")]))

    done = await cluster.wait_phase("mcp", "by-selector", {"Succeeded", "Failed"})

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["steps"][0]["outputs"]["names"] == "finbot-a,finbot-b"
    assert annotation(cluster, "deployments", "finbot-a")
    assert annotation(cluster, "deployments", "finbot-b")
    assert annotation(cluster, "deployments", "mubot") is None


async def test_paused_deployment_is_refused_and_not_written(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(deployment("frozen", paused=True))
    cluster.seed(remediation("restart-frozen", [restart_step(name="frozen")]))

    done = await cluster.wait_phase("mcp", "restart-frozen", {"Succeeded", "Failed", "Refused"})

    assert done["status"]["phase"] == "Refused"
    assert done["status"]["reason"] == "DeploymentPaused"
    assert "rollout resume" in done["status"]["steps"][0]["message"]
    assert cluster.writes("deployments") == []


@pytest.mark.parametrize(
    ("namespace", "reason"), [("kyverno", KYVERNO), ("kube-system", PROTECTED_NAMESPACE)]
)
async def test_kyverno_and_protected_targets_are_refused_before_any_write(
    cluster: Cluster, operator: OperatorUnderTest, namespace: str, reason: str
) -> None:
    cluster.seed(deployment("kyverno-admission-controller", namespace=namespace))
    steps = [restart_step(name="kyverno-admission-controller", namespace=namespace)]
    cluster.seed(remediation("override", steps))

    done = await cluster.wait_phase("mcp", "override", {"Succeeded", "Failed", "Refused"})

    assert done["status"]["phase"] == "Refused"
    assert done["status"]["reason"] == reason
    assert cluster.writes("deployments") == []
    if reason == KYVERNO:
        assert "GitOps" in done["status"]["message"]


async def test_runbook_step_targeting_kyverno_policies_is_refused(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRunbook",
            "metadata": {"name": "unblock", "namespace": "mcp"},
            "spec": {
                "target": {"namespace": "kyverno"},
                "steps": [restart_step(name="kyverno-admission-controller")],
            },
        }
    )
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRemediation",
            "metadata": {"name": "unblock-run", "namespace": "mcp"},
            "spec": {"runbookRef": {"name": "unblock"}},
        }
    )

    done = await cluster.wait_phase("mcp", "unblock-run", {"Succeeded", "Failed", "Refused"})

    assert done["status"]["phase"] == "Refused"
    assert done["status"]["reason"] == KYVERNO
    assert cluster.writes(group="kyverno.io") == []
    assert cluster.writes("deployments") == []


@pytest.mark.parametrize("how", ["spec", "global"])
async def test_dry_run_records_what_would_happen_and_writes_nothing(
    cluster: Cluster, operator_factory: OperatorFactory, how: str
) -> None:
    await operator_factory(dry_run=(how == "global"))
    cluster.seed(deployment("finbot-api"))
    cluster.seed(remediation("dry", [restart_step(name="finbot-api")], dryRun=(how == "spec")))

    done = await cluster.wait_phase("mcp", "dry", {"Succeeded", "Failed"})

    assert done["status"]["phase"] == "Succeeded", done["status"]
    [step] = done["status"]["steps"]
    assert step["phase"] == "DryRun"
    assert step["message"] == "would restart Deployment finbot-api in mcp"
    assert cluster.writes("deployments") == []
    assert annotation(cluster, "deployments", "finbot-api") is None


async def test_missing_target_fails_with_a_clear_message(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(remediation("ghost", [restart_step(name="nope"), restart_step("after", name="x")]))

    done = await cluster.wait_phase("mcp", "ghost", {"Succeeded", "Failed"})

    assert done["status"]["phase"] == "Failed"
    first, second = done["status"]["steps"]
    assert first["phase"] == "Failed"
    assert first["message"] == "Deployment nope not found in namespace mcp"
    assert first["attempts"] == 1  # a missing object is not retried
    assert second["phase"] == "Skipped"
    assert "restart: Deployment nope not found" in done["status"]["message"]


async def test_missing_template_label_fails_the_step_with_a_clear_message(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(deployment("finbot-api"))
    cluster.seed(
        remediation(
            "templated",
            [restart_step(name="{{ labels.deployment }}")],
            labels={"namespace": "mcp"},
        )
    )

    done = await cluster.wait_phase("mcp", "templated", {"Succeeded", "Failed"})

    assert done["status"]["phase"] == "Failed"
    assert done["status"]["reason"] == "TemplateError"
    assert done["status"]["steps"][0]["message"] == (
        "template {{ labels.deployment }}: 'deployment' is missing from the alert's labels "
        "or spec.labels"
    )
    assert cluster.writes("deployments") == []


async def test_templates_fill_targets_from_labels_and_earlier_outputs(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(deployment("finbot-api"))
    cluster.seed(deployment("finbot-worker"))
    steps = [
        restart_step("first", name="{{ labels.deployment }}"),
        restart_step("second", name="{{ steps.first.outputs.names }}", waitForRollout=False),
    ]
    cluster.seed(remediation("chained", steps, labels={"deployment": "finbot-api"}))

    done = await cluster.wait_phase("mcp", "chained", {"Succeeded", "Failed"})

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert [s["outputs"]["names"] for s in done["status"]["steps"]] == ["finbot-api"] * 2


async def test_invalid_runbook_is_marked_not_valid_with_the_reason(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed_stale(  # the action's enum refuses it today
        {
            "apiVersion": API_VERSION,
            "kind": "McpRunbook",
            "metadata": {"name": "broken", "namespace": "mcp"},
            "spec": {"steps": [{"name": "oops", "action": "flushEverything"}]},
        }
    )
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRunbook",
            "metadata": {"name": "fine", "namespace": "mcp"},
            "spec": {"steps": [restart_step(name="finbot-api")]},
        }
    )

    def valid(name: str) -> dict[str, Any] | None:
        obj = cluster.get(API_VERSION, RUNBOOKS, "mcp", name)
        conditions = obj.get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "Valid"), None)

    broken = await cluster.wait_for(lambda: valid("broken"), what="Valid condition")
    assert broken["status"] == "False"
    assert broken["reason"] == "UnknownAction"
    assert "unknown action 'flushEverything'" in broken["message"]
    fine = await cluster.wait_for(lambda: valid("fine"), what="Valid condition")
    assert fine["status"] == "True"


async def test_approval_gate_waits_then_runs_once_approved(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(deployment("finbot-api"))
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRunbook",
            "metadata": {"name": "careful", "namespace": "mcp"},
            "spec": {
                "steps": [restart_step(name="finbot-api")],
                "guardrails": {"requireApproval": True},
            },
        }
    )
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRemediation",
            "metadata": {"name": "careful-run", "namespace": "mcp"},
            "spec": {"runbookRef": {"name": "careful"}},
        }
    )
    waiting = await cluster.wait_phase("mcp", "careful-run", {"AwaitingApproval", "Succeeded"})
    assert waiting["status"]["phase"] == "AwaitingApproval"
    assert cluster.writes("deployments") == []

    await cluster.api.patch_object(
        API_VERSION, REMEDIATIONS, "mcp", "careful-run", {"spec": {"approved": True}}
    )

    done = await cluster.wait_phase("mcp", "careful-run", {"Succeeded", "Failed"})
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["plan"]["runbook"] == "careful"


async def test_a_proposal_waits_for_approval_although_its_runbook_does_not_require_it(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(deployment("finbot-api"))
    cluster.seed(
        {
            "apiVersion": API_VERSION,
            "kind": "McpRunbook",
            "metadata": {"name": "eager", "namespace": "mcp"},
            "spec": {"steps": [restart_step(name="finbot-api")]},  # no requireApproval
        }
    )
    proposal = remediation("proposed", [], approved=False)
    del proposal["spec"]["steps"]
    proposal["spec"]["runbookRef"] = {"name": "eager"}
    proposal["metadata"]["annotations"] = {ANNOTATION_PROPOSED_BY: "agent"}
    cluster.seed(proposal)
    inline = remediation("proposed-inline", [restart_step(name="finbot-api")])
    inline["metadata"]["annotations"] = {ANNOTATION_PROPOSED_BY: ""}  # an empty value too
    cluster.seed(inline)

    for name in ("proposed", "proposed-inline"):
        waiting = await cluster.wait_phase("mcp", name, {"AwaitingApproval", "Succeeded"})
        assert waiting["status"]["phase"] == "AwaitingApproval", name
        assert waiting["status"]["plan"]["requireApproval"] is True
    # Removing the marker once planned changes nothing: the plan keeps the decision.
    await cluster.api.patch_object(
        API_VERSION, REMEDIATIONS, "mcp", "proposed",
        {"metadata": {"annotations": {ANNOTATION_PROPOSED_BY: None}}},
    )  # fmt: skip
    await asyncio.sleep(0.5)
    assert cluster.remediation("mcp", "proposed")["status"]["phase"] == "AwaitingApproval"
    assert cluster.writes("deployments") == []

    await cluster.api.patch_object(
        API_VERSION, REMEDIATIONS, "mcp", "proposed", {"spec": {"approved": True}}
    )
    done = await cluster.wait_phase("mcp", "proposed", {"Succeeded", "Failed"})
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert len(cluster.writes("deployments")) == 1


async def test_finished_remediation_is_deleted_after_its_ttl(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(deployment("finbot-api"))
    cluster.seed(
        remediation("short-lived", [restart_step(name="finbot-api")], ttlSecondsAfterFinished=1)
    )
    await cluster.wait_phase("mcp", "short-lived", {"Succeeded"})

    await cluster.wait_for(
        lambda: cluster.get(API_VERSION, REMEDIATIONS, "mcp", "short-lived") is None,
        what="deletion after the TTL",
    )


async def test_operator_restart_mid_run_never_repeats_a_finished_step(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    cluster.api.clear_reactors("apps/v1", "deployments")  # rollouts hang until we finish them
    cluster.seed(deployment("first"))
    cluster.seed(deployment("second"))
    steps = [
        restart_step("restart-first", name="first", waitForRollout=False),
        restart_step("restart-second", name="second"),
    ]
    cluster.seed(remediation("two-steps", steps))
    operator = await operator_factory()

    def second_waiting() -> bool:
        obj = cluster.remediation("mcp", "two-steps")
        step = obj["status"]["steps"][1]
        # restartedAt is recorded before the restart (the attempt's intent): wait for the
        # restart itself too.
        restarted = [w for w in cluster.writes("deployments") if w.name == "second"]
        return step["phase"] == "Running" and "restartedAt" in step["outputs"] and bool(restarted)

    await cluster.wait_for(second_waiting, what="the second step waiting for its rollout")
    await operator.stop()
    assert len(cluster.writes("deployments")) == 2  # one restart each so far

    cluster.api.add_reactor("apps/v1", "deployments", complete_rollouts)
    cluster.api.touch("apps/v1", "deployments", "mcp", "second")
    await operator_factory()

    done = await cluster.wait_phase("mcp", "two-steps", {"Succeeded", "Failed"})
    assert done["status"]["phase"] == "Succeeded", done["status"]
    first, second = done["status"]["steps"]
    assert first["attempts"] == 1
    assert second["attempts"] == 2  # resumed, not restarted
    restarts = [
        r for r in cluster.writes("deployments") if r.subresource is None and r.method == "PATCH"
    ]
    assert [r.name for r in restarts] == ["first", "second"]  # nothing patched twice


async def test_the_restart_answer_is_the_rollouts_first_look_then_one_read_a_poll(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    cluster.api.clear_reactors("apps/v1", "deployments")  # the rollout waits for us
    cluster.seed(deployment("slow"))
    await operator_factory(poll_interval_seconds=3.0)
    cluster.seed(remediation("slow-rollout", [restart_step(name="slow")]))

    def requests() -> list[tuple[str, str]]:
        return [
            (e.verb, e.subresource)
            for e in cluster.api.audit
            if e.resource == "deployments" and e.name == "slow" and e.user != "system:admin"
        ]

    await cluster.wait_for(lambda: ("patch", "") in requests(), what="the restart")
    await asyncio.sleep(0.5)  # well before the next poll, 3 s after the restart
    # The read of the target, the restart: a read right after it would show what its answer
    # showed (no controller has acted yet), so none is sent.
    assert requests() == [("get", ""), ("patch", "")]

    cluster.api.add_reactor("apps/v1", "deployments", complete_rollouts)
    cluster.api.touch("apps/v1", "deployments", "mcp", "slow")
    done = await cluster.wait_phase("mcp", "slow-rollout", {"Succeeded", "Failed"})
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert requests() == [("get", ""), ("patch", ""), ("get", "")]
