"""Verify-then-revert (``onFailure.revert``): ``patchResource``'s snapshot and its revert
against the emulated API, and whole runs of the real operator that fail and revert."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import yaml

from fixtures.actions import ActionEnv, ActionsEnvFactory
from fixtures.cluster import Cluster, OperatorFactory, OperatorUnderTest, deployment
from mcp_remediator.actions.resources import SNAPSHOT, revert_patch
from mcp_remediator.kube.client import KubeApi
from mcp_remediator.models import API_VERSION
from mcp_remediator.settings import Settings
from mcp_remediator.tools.lint import lint_paths

ORIGINAL = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "dese-api-config", "namespace": "mcp", "annotations": {"owner": "team"}},
    "data": {"TIMEOUT_MS": "3000", "CACHE_TTL": "60", "OLD_FLAG": "on"},
}
# Nested fields, a field that was absent (data.NEW), a whole object that was absent
# (metadata.labels), and a null delete (data.OLD_FLAG).
PATCH = {
    "metadata": {"labels": {"tier": "api"}, "annotations": {"owner": "remediator"}},
    "data": {"TIMEOUT_MS": "8000", "NEW": "x", "OLD_FLAG": None},
}


def content(obj: dict[str, Any]) -> dict[str, Any]:
    """What a user sees of the ConfigMap: its data, labels and annotations."""
    meta = obj["metadata"]
    return {"data": obj.get("data"), "labels": meta.get("labels"), "ann": meta.get("annotations")}


def stored(cluster: Cluster, name: str = "dese-api-config") -> dict[str, Any]:
    obj = cluster.get("v1", "configmaps", "mcp", name)
    assert obj is not None
    return content(obj)


def step_kube(env: ActionEnv) -> KubeApi:
    return env.kube.impersonating("mcp", env.settings.default_service_account)


def reverts(cluster: Cluster) -> list[Any]:
    """The revert patches: merge patches carrying a resourceVersion precondition."""
    return [
        w
        for w in cluster.writes("configmaps")
        if "resourceVersion" in (json.loads(w.body or b"{}").get("metadata") or {})
    ]


async def test_snapshot_holds_previous_values_and_revert_restores_exactly(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.seed(copy.deepcopy(ORIGINAL))
    before = stored(cluster)
    env = await actions_env(cluster.connection)

    result = await env.run("patchResource", {"name": "dese-api-config", "mergePatch": PATCH})

    assert stored(cluster)["data"] == {"TIMEOUT_MS": "8000", "CACHE_TTL": "60", "NEW": "x"}
    snapshot = json.loads(result.outputs[SNAPSHOT])
    assert snapshot["paths"] == [
        {"path": ["data", "NEW"], "ours": "x"},
        {"path": ["data", "OLD_FLAG"], "before": "on"},
        {"path": ["data", "TIMEOUT_MS"], "before": "3000", "ours": "8000"},
        {"path": ["metadata", "annotations", "owner"], "before": "team", "ours": "remediator"},
        {"path": ["metadata", "labels"], "ours": {"tier": "api"}},
    ]
    # Durable before the write: the checkpoint the engine persists holds it already.
    assert json.loads(env.checkpoints["step"][SNAPSHOT]) == snapshot

    done = await revert_patch(result.outputs, step_kube(env))

    assert done.phase == "Reverted", done
    assert stored(cluster) == before  # labels absent again, OLD_FLAG back, NEW gone
    assert set(done.restored) == {
        "data.NEW",
        "data.OLD_FLAG",
        "data.TIMEOUT_MS",
        "metadata.annotations.owner",
        "metadata.labels",
    }
    [write] = reverts(cluster)
    assert write.headers["Content-Type"] == "application/merge-patch+json"

    # Run again (a restart that lost the record of the revert): found restored, not
    # written twice.
    again = await revert_patch(result.outputs, step_kube(env))
    assert again.phase == "Reverted"
    assert "already restored" in again.message
    assert len(reverts(cluster)) == 1
    assert stored(cluster) == before


async def test_revert_keeps_a_concurrent_change_and_reports_a_conflict(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.seed(copy.deepcopy(ORIGINAL))
    env = await actions_env(cluster.connection)
    result = await env.run("patchResource", {"name": "dese-api-config", "mergePatch": PATCH})
    theirs = cluster.get("v1", "configmaps", "mcp", "dese-api-config")
    theirs["data"]["TIMEOUT_MS"] = "9000"  # someone changed our field after us
    cluster.api.apply([theirs])
    expected = stored(cluster)

    done = await revert_patch(result.outputs, step_kube(env))

    assert done.phase == "Conflict"
    assert "data.TIMEOUT_MS" in done.message
    assert done.restored == ()
    assert stored(cluster) == expected  # theirs kept, and nothing else written either
    assert reverts(cluster) == []


async def test_revert_of_a_change_made_between_read_and_write_is_judged_again(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    """The revert's PATCH is conditional on the resourceVersion read: a write landing in
    between is a 409, and the object is read and judged again (here: a conflict)."""
    cluster.seed(copy.deepcopy(ORIGINAL))
    env = await actions_env(cluster.connection)
    result = await env.run("patchResource", {"name": "dese-api-config", "mergePatch": PATCH})
    kube = step_kube(env)
    real_get = kube.get_or_none
    raced = False

    async def get_then_someone_writes(*args: Any) -> Any:
        nonlocal raced
        obj = await real_get(*args)
        if not raced:
            raced = True
            theirs = copy.deepcopy(obj)
            theirs["data"]["NEW"] = "theirs"
            cluster.api.apply([theirs])
        return obj

    kube.get_or_none = get_then_someone_writes  # type: ignore[method-assign]

    done = await revert_patch(result.outputs, kube)

    assert done.phase == "Conflict", done
    assert stored(cluster)["data"]["NEW"] == "theirs"
    assert stored(cluster)["data"]["TIMEOUT_MS"] == "8000"
    [refused] = reverts(cluster)  # sent once, answered 409, not sent again
    assert refused.resource.plural == "configmaps"


async def test_a_retry_keeps_the_first_attempts_snapshot_when_its_patch_landed(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    """An attempt whose PATCH landed but whose answer was lost: the retry reads our values,
    and must keep the values from before the step, not take ours as 'before'."""
    cluster.seed(copy.deepcopy(ORIGINAL))
    before = stored(cluster)
    env = await actions_env(cluster.connection)
    await env.run("patchResource", {"name": "dese-api-config", "mergePatch": PATCH})

    retry = await env.run("patchResource", {"name": "dese-api-config", "mergePatch": PATCH})

    done = await revert_patch(retry.outputs, step_kube(env))
    assert done.phase == "Reverted"
    assert stored(cluster) == before


def runbook(name: str, steps: list[dict[str, Any]], **on_failure: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "McpRunbook",
        "metadata": {"name": name, "namespace": "mcp"},
        "spec": {
            "steps": steps,
            "guardrails": {"cooldownSeconds": 0},
            "onFailure": {"revert": True, **on_failure},
        },
    }


def run_of(name: str, runbook_name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "McpRemediation",
        "metadata": {"name": name, "namespace": "mcp"},
        "spec": {"runbookRef": {"name": runbook_name}},
    }


def patch_step(name: str, config_map: str, patch: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "action": "patchResource",
        "params": {"name": config_map, "mergePatch": patch},
        "retries": 0,
    }


# A verification that fails at once: no Prometheus is configured here.
FAILING = {
    "name": "verify",
    "action": "prometheusVerify",
    "params": {"query": "up", "condition": "== 1", "forSeconds": 0, "timeoutSeconds": 1},
    "retries": 0,
}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    [found] = [c for c in obj["status"]["conditions"] if c["type"] == type_]
    return found


async def test_failed_run_reverts_its_patches_in_reverse_order(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(copy.deepcopy(ORIGINAL))
    before = stored(cluster)
    cluster.seed(deployment("dese-api"))
    steps = [
        patch_step("raise", "dese-api-config", {"data": {"TIMEOUT_MS": "5000"}}),
        {"name": "restart", "action": "rolloutRestart", "params": {"name": "dese-api"}},
        patch_step("raise-more", "dese-api-config", {"data": {"TIMEOUT_MS": "8000", "NEW": "x"}}),
        FAILING,
    ]
    cluster.seed(runbook("tune", steps))
    cluster.seed(run_of("tune-run", "tune"))

    done = await cluster.wait_phase("mcp", "tune-run", {"Succeeded", "Failed", "Refused"})

    status = done["status"]
    assert status["phase"] == "Failed", status
    assert status["message"].startswith("step verify:")
    assert stored(cluster) == before
    assert status["plan"]["irreversibleSteps"] == ["restart"]
    reverted = condition(done, "Reverted")
    assert reverted["status"] == "True"
    assert reverted["reason"] == "Reverted"
    assert "raise-more: data.NEW, data.TIMEOUT_MS; raise: data.TIMEOUT_MS" in reverted["message"]
    assert "not reversible: restart" in reverted["message"]
    raise_, restart, more, verify = status["steps"]
    assert raise_["revert"]["phase"] == more["revert"]["phase"] == "Reverted"
    assert restart.get("revert") is None and verify.get("revert") is None
    # Last step first: 8000 → 5000, then 5000 → 3000.
    restores = [json.loads(w.body)["data"]["TIMEOUT_MS"] for w in reverts(cluster)]
    assert restores == ["5000", "3000"]


async def test_failed_run_keeps_a_concurrent_change_and_says_so(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    cluster.seed(copy.deepcopy(ORIGINAL))

    def someone_else(obj: dict[str, Any]) -> dict[str, Any] | None:
        # Right after our patch, another writer changes the same field.
        if (obj.get("data") or {}).get("TIMEOUT_MS") == "8000":
            return {"data": {"TIMEOUT_MS": "9000"}}
        return None

    cluster.api.add_reactor("v1", "configmaps", someone_else)
    steps = [patch_step("raise", "dese-api-config", {"data": {"TIMEOUT_MS": "8000"}}), FAILING]
    cluster.seed(runbook("tune", steps))
    cluster.seed(run_of("tune-run", "tune"))

    done = await cluster.wait_phase("mcp", "tune-run", {"Succeeded", "Failed", "Refused"})

    assert done["status"]["phase"] == "Failed"
    assert stored(cluster)["data"]["TIMEOUT_MS"] == "9000"
    reverted = condition(done, "Reverted")
    assert (reverted["status"], reverted["reason"]) == ("False", "RevertConflict")
    assert "data.TIMEOUT_MS" in reverted["message"]
    assert done["status"]["steps"][0]["revert"]["phase"] == "Conflict"
    assert reverts(cluster) == []


async def test_revert_resumes_after_an_operator_restart(
    cluster: Cluster, operator_factory: OperatorFactory
) -> None:
    """The snapshot is in the status before the ConfigMap is written; an operator stopped
    after the patch, while a later step runs, is replaced by one that fails the run and
    reverts from that snapshot."""
    cluster.api.clear_reactors("apps/v1", "deployments")  # the rollout never completes
    cluster.seed(copy.deepcopy(ORIGINAL))
    before = stored(cluster)
    cluster.seed(deployment("dese-api"))
    steps = [
        patch_step("raise", "dese-api-config", {"data": {"TIMEOUT_MS": "8000"}}),
        {
            "name": "restart",
            "action": "rolloutRestart",
            "params": {"name": "dese-api"},
            "timeoutSeconds": 3,
            "retries": 0,
        },
    ]
    cluster.seed(runbook("tune", steps))
    cluster.seed(run_of("tune-run", "tune"))
    operator = await operator_factory()

    def restarting() -> bool:
        obj = cluster.remediation("mcp", "tune-run")
        steps = (obj.get("status") or {}).get("steps") or []
        return (
            len(steps) == 2
            and steps[1]["phase"] == "Running"
            and bool(cluster.writes("deployments"))
        )

    await cluster.wait_for(restarting, what="the restart under way")
    await operator.stop()
    saved = cluster.remediation("mcp", "tune-run")["status"]["steps"][0]
    assert SNAPSHOT in saved["outputs"]
    assert stored(cluster)["data"]["TIMEOUT_MS"] == "8000"

    await operator_factory()
    done = await cluster.wait_phase("mcp", "tune-run", {"Succeeded", "Failed", "Refused"})

    assert done["status"]["phase"] == "Failed", done["status"]
    assert stored(cluster) == before
    assert condition(done, "Reverted")["status"] == "True"
    assert len(reverts(cluster)) == 1


LINTED = """\
apiVersion: mcp.dese.ai/v1alpha1
kind: McpRunbook
metadata: {{name: restart-only, namespace: mcp}}
spec:
  steps:
    - {{name: restart, action: rolloutRestart, params: {{name: dese-api}}}}{more}
  onFailure:
    revert: true
"""


def test_lint_warns_when_revert_is_set_on_a_runbook_with_nothing_reversible(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runbook.yaml"
    path.write_text(LINTED.format(more=""))
    out = io.StringIO()

    assert lint_paths([str(path)], Settings(), out) == 0  # a warning, not a problem
    assert out.getvalue().splitlines() == [
        f"{path}:8: McpRunbook/restart-only: warning: RevertNothingReversible: "
        "onFailure.revert: none of the steps can be reverted (reversible actions: "
        "patchResource): a failed run reverts nothing",
        f"{path}:1: McpRunbook/restart-only: ok",
        "1 checked, 0 invalid",
    ]

    patch = (
        "\n    - {name: raise, action: patchResource, "
        "params: {name: c, mergePatch: {data: {A: b}}}}"
    )
    path.write_text(LINTED.format(more=patch))
    out = io.StringIO()
    assert lint_paths([str(path)], Settings(), out) == 0
    assert "warning" not in out.getvalue()


CATALOGUE_RUNBOOK = Path(__file__).parents[2] / "manifests" / "runbooks" / "prometheus-timeout.yaml"


async def test_prometheus_timeout_run_whose_verification_fails_leaves_the_config_as_before(
    cluster: Cluster, operator: OperatorUnderTest
) -> None:
    """The catalogue's runbook as shipped; its verification fails (no Prometheus answers
    here), so the raised timeout is reverted and the run escalates as before."""
    cluster.seed(yaml.safe_load(CATALOGUE_RUNBOOK.read_text()))
    cluster.seed(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "dese-api-config", "namespace": "mcp"},
            "data": {"MCP_PROMETHEUS_TIMEOUT_MS": "3000", "MCP_CACHE_TTL_SECONDS": "60"},
        }
    )
    before = stored(cluster, "dese-api-config")
    cluster.seed(deployment("dese-api"))
    run = run_of("timeout-run", "prometheus-timeout")
    run["spec"].update(labels={"namespace": "mcp"}, approved=True)
    cluster.seed(run)

    done = await cluster.wait_phase("mcp", "timeout-run", {"Succeeded", "Failed", "Refused"})

    status = done["status"]
    assert status["phase"] == "Failed", status
    assert status["message"].startswith("step verify:")
    assert stored(cluster, "dese-api-config") == before
    reverted = condition(done, "Reverted")
    assert reverted["status"] == "True"
    assert reverted["message"] == (
        "restored timeout: data.MCP_PROMETHEUS_TIMEOUT_MS; not reversible: restart, note"
    )
    assert status["escalatedTo"]["runbook"] == "notify-oncall"


async def test_a_secret_is_never_snapshotted_and_its_revert_says_so(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.seed(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "jwt", "namespace": "mcp"},
         "data": {"JWT_SECRET": "b2xk"}}
    )  # fmt: skip
    secrets = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "patch"]}
    cluster.grant("mcp", "secret-rotator", [secrets])
    env = await actions_env(cluster.connection, patch_allowed_kinds=["Secret"])
    patch = {"stringData": {"JWT_SECRET": "s3cr3t"}}
    result = await env.run(
        "patchResource",
        {"kind": "Secret", "name": "jwt", "mergePatch": patch},
        account="secret-rotator",
    )
    assert SNAPSHOT not in result.outputs and SNAPSHOT not in env.checkpoints["step"]

    done = await revert_patch(result.outputs, env.kube.impersonating("mcp", "secret-rotator"))

    assert done.phase == "Failed"
    assert done.message == "not reverted: a Secret's previous values are never kept in the status"
