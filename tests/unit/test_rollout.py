"""Rollout completeness by kubectl's rules."""

import pytest

from mcp_remediator.actions.workloads import rollout_progress
from mcp_remediator.errors import StepFailed


def deploy(generation: int = 2, **status: int) -> dict[str, object]:
    return {"metadata": {"generation": generation}, "spec": {"replicas": 3}, "status": status}


def test_deployment_rollout_stages() -> None:
    assert rollout_progress("Deployment", deploy(observedGeneration=1))[0] is False
    done, left = rollout_progress("Deployment", deploy(observedGeneration=2, updatedReplicas=1))
    assert (done, left) == (False, "1 of 3 replicas updated")
    old = deploy(observedGeneration=2, updatedReplicas=3, replicas=4)
    assert rollout_progress("Deployment", old) == (False, "1 old replicas pending termination")
    ready = deploy(observedGeneration=2, updatedReplicas=3, replicas=3, availableReplicas=3)
    assert rollout_progress("Deployment", ready)[0] is True


def test_deployment_past_its_progress_deadline_fails() -> None:
    stuck = deploy(observedGeneration=2)
    condition = {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "slow"}
    stuck["status"] = {"observedGeneration": 2, "conditions": [condition]}
    with pytest.raises(StepFailed, match="progress deadline"):
        rollout_progress("Deployment", stuck)


def test_statefulset_and_daemonset_rules() -> None:
    sts = {"metadata": {"generation": 1}, "spec": {"replicas": 2},
           "status": {"observedGeneration": 1, "readyReplicas": 2, "currentRevision": "a",
                      "updateRevision": "b", "updatedReplicas": 1}}  # fmt: skip
    assert rollout_progress("StatefulSet", sts)[0] is False
    sts["status"]["currentRevision"] = "b"  # type: ignore[index]
    assert rollout_progress("StatefulSet", sts)[0] is True
    ds = {"metadata": {"generation": 1}, "spec": {},
          "status": {"observedGeneration": 1, "desiredNumberScheduled": 3,
                     "updatedNumberScheduled": 3, "numberAvailable": 2}}  # fmt: skip
    assert rollout_progress("DaemonSet", ds) == (False, "2 of 3 updated pods available")
