"""``argocdSync`` in core mode (Application objects in the emulated API, with a stand-in
for Argo CD's controller) and in api mode (Argo CD's REST API on a local HTTP mock), whose
operator-level server and token serve trusted namespaces only."""

from __future__ import annotations

import asyncio
import base64
import calendar
import datetime
from typing import Any

import pytest

from fixtures.actions import ActionsEnvFactory
from fixtures.cluster import Cluster
from fixtures.gitops import PARKED, SHA, ArgoCdController, ArgoCdServer, app_project, application
from fixtures.http_mock import HttpMock
from mcp_remediator.errors import Refused, StepFailed
from mcp_remediator.kube.refusals import KYVERNO

APPS = ("argoproj.io/v1alpha1", "applications")


def app_now(cluster: Cluster, name: str = "dese-api") -> dict[str, Any]:
    app = cluster.get(*APPS, "argocd", name)
    assert app is not None
    result: dict[str, Any] = app
    return result


async def test_core_sync_sets_the_operation_as_argo_cd_does_and_waits_for_healthy(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    policy = {"syncOptions": ["CreateNamespace=true"], "retry": {"limit": 2}}
    cluster.seed(application(sync_policy=policy))
    controller = ArgoCdController(cluster.api)
    env = await actions_env(cluster.connection)

    result = await env.run("argocdSync", {"application": "dese-api", "prune": True}, step="sync")

    [operation] = controller.operations
    assert operation == {
        "sync": {"revision": "main", "prune": True, "syncOptions": ["CreateNamespace=true"]},
        "initiatedBy": {"username": "mcp-remediator", "automated": False},
        "info": [
            {"name": "mcp-remediation", "value": "mcp/test-run"},
            {"name": "mcp-step", "value": "sync"},
        ],
        "retry": {"limit": 2},
    }
    assert result.outputs == {
        "application": "dese-api",
        "namespace": "argocd",
        "revision": SHA,
        "operationPhase": "Succeeded",
        "syncStatus": "Synced",
        "healthStatus": "Healthy",
    }
    assert "synced Application dese-api" in result.message
    [write] = cluster.writes("applications")
    assert write.headers["Content-Type"] == "application/merge-patch+json"
    body = write.data
    # The write carries the read resourceVersion (Argo CD's optimistic update) and clears
    # the previous operation's state, as argo.SetAppOperation does.
    assert body["metadata"]["resourceVersion"]
    assert body["status"] == {"operationState": None}
    assert env.checkpoints["sync"]["revision"] == "main"
    assert "operation" not in app_now(cluster)


async def test_a_failed_sync_fails_the_step_with_argo_cds_phase_and_message(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.seed(application())
    ArgoCdController(cluster.api, outcome="Failed", message="one or more objects failed")
    env = await actions_env(cluster.connection)

    with pytest.raises(StepFailed) as caught:
        await env.run("argocdSync", {"application": "dese-api"})

    assert caught.value.reason == "SyncFailed"
    assert not caught.value.transient
    assert caught.value.message == (
        "Argo CD sync of Application dese-api ended Failed: one or more objects failed"
    )


async def test_a_missing_application_fails_clearly_and_writes_nothing(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.tenant("mcp", "step-tester", also_in=("argocd",))  # any Application
    env = await actions_env(cluster.connection)
    with pytest.raises(StepFailed, match="Application ghost not found in namespace argocd") as c:
        await env.run("argocdSync", {"application": "ghost"}, account="step-tester")
    assert c.value.reason == "ApplicationNotFound"
    assert cluster.writes() == []


@pytest.mark.parametrize(
    "app",
    [
        application(operation={"sync": {"revision": "main"}, "initiatedBy": {"username": "bob"}}),
        application(operation_state={"phase": "Running", "operation": {"sync": {}}}),
    ],
    ids=["operation-set", "operation-running"],
)
async def test_another_operation_in_flight_is_a_transient_refusal_without_a_write(
    cluster: Cluster, actions_env: ActionsEnvFactory, app: dict[str, Any]
) -> None:
    cluster.seed(app)
    env = await actions_env(cluster.connection)

    with pytest.raises(StepFailed, match="another operation is already in progress") as caught:
        await env.run("argocdSync", {"application": "dese-api"})

    assert caught.value.reason == "OperationInProgress"
    assert caught.value.transient
    assert cluster.writes("applications") == []


async def test_waits_while_running_and_a_retried_attempt_never_syncs_twice(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.seed(application())
    controller = ArgoCdController(cluster.api, hold=True)
    env = await actions_env(cluster.connection)

    # The first attempt starts the sync and is cut off while Argo CD is still running it
    # (as the engine's step timeout or an operator restart would).
    first = asyncio.create_task(env.run("argocdSync", {"application": "dese-api"}, step="s"))
    await cluster.wait_for(lambda: controller.operations, what="the operation to start")
    await asyncio.sleep(0.2)
    assert not first.done()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first

    second = asyncio.create_task(env.run("argocdSync", {"application": "dese-api"}, step="s"))
    await asyncio.sleep(0.2)
    assert not second.done(), "must keep waiting for the operation already running"
    await controller.finish()
    result = await second

    assert "already started by an earlier attempt" in result.message
    assert len(controller.operations) == 1
    assert len(cluster.writes("applications")) == 1


async def test_succeeded_but_degraded_is_not_done_and_times_out_with_the_state(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.seed(application())
    ArgoCdController(cluster.api, health="Degraded")
    env = await actions_env(cluster.connection)

    with pytest.raises(StepFailed) as caught:
        await env.run("argocdSync", {"application": "dese-api", "timeoutSeconds": 1})

    assert caught.value.reason == "SyncTimeout"
    assert "not Synced and Healthy after 1s" in caught.value.message
    assert "health Degraded" in caught.value.message


async def test_without_wait_the_step_ends_once_the_sync_started(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.seed(application())
    controller = ArgoCdController(cluster.api, hold=True)
    env = await actions_env(cluster.connection)

    result = await env.run("argocdSync", {"application": "dese-api", "wait": False})

    assert result.message == "sync of Application dese-api to main started"
    assert result.outputs["revision"] == "main"
    assert len(controller.operations) == 1
    assert app_now(cluster)["status"]["operationState"]["phase"] == "Running"


async def test_dry_run_reports_the_sync_and_writes_nothing(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.seed(application(sync_status="OutOfSync"))
    env = await actions_env(cluster.connection)

    result = await env.run("argocdSync", {"application": "dese-api"}, dry_run=True)

    assert result.message.startswith("would sync Application dese-api to main")
    assert "sync OutOfSync" in result.message
    assert cluster.writes() == []


async def test_a_revision_git_does_not_track_is_refused_and_nothing_written(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.seed(application(target_revision="main"))
    env = await actions_env(cluster.connection)
    with pytest.raises(Refused) as refused:
        await env.run("argocdSync", {"application": "dese-api", "revision": "some-branch"})
    assert refused.value.reason == "RevisionOverrideRefused"
    assert "change targetRevision in Git" in refused.value.message
    assert cluster.writes() == []


async def test_applications_in_the_kyverno_namespace_are_refused(
    actions_env: ActionsEnvFactory,
) -> None:
    env = await actions_env()
    with pytest.raises(Refused) as caught:
        await env.run("argocdSync", {"application": "policies", "argocdNamespace": "kyverno"})
    assert caught.value.reason == KYVERNO


API_TOKEN = "argocd-token-123"


async def api_env(
    actions_env: ActionsEnvFactory, http_mock: HttpMock, token: str = API_TOKEN
) -> Any:
    return await actions_env(argocd_mode="api", argocd_server=http_mock.url, argocd_token=token)


async def test_api_sync_posts_the_sync_request_with_the_bearer_token_and_waits(
    http_mock: HttpMock, actions_env: ActionsEnvFactory
) -> None:
    server = ArgoCdServer(http_mock, API_TOKEN, application())
    env = await api_env(actions_env, http_mock)

    result = await env.run(
        "argocdSync", {"application": "dese-api", "revision": "main"}, step="sync"
    )

    [post] = http_mock.seen("POST", "/api/v1/applications/dese-api/sync")
    assert post.headers["Authorization"] == f"Bearer {API_TOKEN}"
    assert post.json() == {
        "name": "dese-api",
        "prune": False,
        "revision": "main",
        "infos": [
            {"name": "mcp-remediation", "value": "mcp/test-run"},
            {"name": "mcp-step", "value": "sync"},
        ],
    }
    assert len(server.operations) == 1
    assert result.outputs["operationPhase"] == "Succeeded"
    assert result.outputs["healthStatus"] == "Healthy"
    assert API_TOKEN not in result.message


async def test_api_failures_read_clearly(
    http_mock: HttpMock, actions_env: ActionsEnvFactory
) -> None:
    ArgoCdServer(http_mock, API_TOKEN, application(), outcome="Error", message="ComparisonError")
    env = await api_env(actions_env, http_mock)
    with pytest.raises(StepFailed, match="ended Error: ComparisonError"):
        await env.run("argocdSync", {"application": "dese-api"})

    wrong = await api_env(actions_env, http_mock, token="stale")
    with pytest.raises(StepFailed) as caught:
        await wrong.run("argocdSync", {"application": "dese-api"})
    assert caught.value.reason == "ArgoCdUnauthorized"
    assert "answered 401" in caught.value.message
    assert "stale" not in caught.value.message

    with pytest.raises(StepFailed, match="Application ghost not found") as missing:
        await env.run("argocdSync", {"application": "ghost"}, account="step-tester")
    assert missing.value.reason == "ApplicationNotFound"


async def test_api_in_progress_answer_is_a_transient_refusal(
    http_mock: HttpMock, actions_env: ActionsEnvFactory
) -> None:
    server = ArgoCdServer(http_mock, API_TOKEN, application())
    env = await api_env(actions_env, http_mock)
    # The app reads idle, but by the time our request arrives someone else started one:
    # only the server's answer can tell.
    server.apps["dese-api"]["operation"] = {"sync": {"revision": "main"}}
    http_mock.on("GET", "/api/v1/applications/dese-api", (200, application()))

    with pytest.raises(StepFailed) as caught:
        await env.run("argocdSync", {"application": "dese-api"})

    assert caught.value.reason == "OperationInProgress"
    assert caught.value.transient


async def test_api_server_down_is_transient_and_names_the_host_only(
    actions_env: ActionsEnvFactory,
) -> None:
    env = await actions_env(
        argocd_mode="api", argocd_server="http://127.0.0.1:9", argocd_token=API_TOKEN
    )
    with pytest.raises(StepFailed) as caught:
        await env.run("argocdSync", {"application": "dese-api"})
    assert caught.value.transient
    assert caught.value.reason == "ArgoCdUnavailable"
    assert "Argo CD at 127.0.0.1:9 unreachable" in caught.value.message


async def test_api_mode_without_a_token_is_a_configuration_error(
    actions_env: ActionsEnvFactory, http_mock: HttpMock
) -> None:
    env = await actions_env(argocd_mode="api", argocd_server=http_mock.url)
    with pytest.raises(StepFailed, match="no Argo CD token is configured"):
        await env.run("argocdSync", {"application": "dese-api"})
    assert http_mock.requests == []


# -- tenancy: the Argo CD API server and token serve trusted namespaces only -------------

UNTRUSTED = "team-a/x"


def secret(namespace: str, name: str, **data: str) -> dict[str, Any]:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace}, "data": encoded}  # fmt: skip


async def test_an_untrusted_namespace_may_not_use_the_operators_argo_cd_api(
    http_mock: HttpMock, actions_env: ActionsEnvFactory
) -> None:
    server = ArgoCdServer(http_mock, API_TOKEN, application())
    env = await api_env(actions_env, http_mock)

    for dry_run in (False, True):
        with pytest.raises(StepFailed) as caught:
            await env.run("argocdSync", {"application": "dese-api"}, remediation=UNTRUSTED,
                          dry_run=dry_run)  # fmt: skip
        assert caught.value.reason == "CredentialsNotAllowed"
        assert not caught.value.transient
        assert caught.value.message == (
            "the operator-level Argo CD API (MCP_ARGOCD_SERVER, MCP_ARGOCD_TOKEN) is for "
            "trusted namespaces only (MCP_TRUSTED_NAMESPACES) and team-a is not one: name a "
            "Secret of namespace team-a in argocd.urlSecretRef, or add team-a to "
            "MCP_TRUSTED_NAMESPACES"
        )
    assert http_mock.requests == [] and server.operations == []
    # The trusted namespace (mcp, the default) still uses them.
    result = await env.run("argocdSync", {"application": "dese-api"})
    assert result.outputs["operationPhase"] == "Succeeded"


async def test_an_untrusted_namespace_syncs_through_its_own_argo_cd_secrets(
    http_mock: HttpMock, cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    server = ArgoCdServer(http_mock, "team-a-token", application())
    cluster.seed(secret("team-a", "argocd", server=http_mock.url, token="team-a-token"))
    cluster.tenant("team-a")
    env = await actions_env(
        cluster.connection,
        argocd_mode="api",
        argocd_server="http://127.0.0.1:9",
        argocd_token=API_TOKEN,
    )
    ref = {"urlSecretRef": {"name": "argocd", "key": "server"},
           "tokenSecretRef": {"name": "argocd", "key": "token"}}  # fmt: skip

    result = await env.run(
        "argocdSync", {"application": "dese-api", "argocd": ref}, remediation=UNTRUSTED
    )

    assert result.outputs["healthStatus"] == "Healthy"
    assert len(server.operations) == 1
    assert {r.headers["Authorization"] for r in http_mock.requests} == {"Bearer team-a-token"}
    [post] = http_mock.seen("POST", "/api/v1/applications/dese-api/sync")
    assert {"name": "mcp-remediation", "value": UNTRUSTED} in post.json()["infos"]


async def test_core_mode_needs_no_operator_credentials(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.seed(application())
    controller = ArgoCdController(cluster.api)
    cluster.tenant("team-a", also_in=("argocd",))
    env = await actions_env(cluster.connection)

    result = await env.run("argocdSync", {"application": "dese-api"}, remediation=UNTRUSTED)

    assert result.outputs["operationPhase"] == "Succeeded"
    assert len(controller.operations) == 1


# -- sync windows, revisions, prune ----------------------------------------------------------

# Opened by a schedule that fires every minute, for an hour: open whenever the test runs.
OPEN = {"schedule": "* * * * *", "duration": "1h", "applications": ["dese-*"]}


def project_with(*windows: dict[str, Any]) -> dict[str, Any]:
    return app_project("frozen", list(windows))


def in_project(app: dict[str, Any]) -> dict[str, Any]:
    """``app`` in the project ``project_with`` makes."""
    app["spec"]["project"] = "frozen"
    return app


@pytest.fixture(autouse=True)
def any_app_and_project(request: pytest.FixtureRequest) -> None:
    """The catalogue's runner may read the MCP layer's Applications and project only (by
    name): these tests' other Applications and projects are granted here."""
    if "cluster" in request.fixturenames:
        cluster: Cluster = request.getfixturevalue("cluster")
        rules = [
            {"apiGroups": ["argoproj.io"], "resources": ["applications"],
             "verbs": ["get", "patch"]},
            {"apiGroups": ["argoproj.io"], "resources": ["appprojects"], "verbs": ["get"]},
        ]  # fmt: skip
        cluster.grant("mcp", "mcp-remediator-runner", rules, at="argocd")


async def test_a_deny_window_ends_the_step_sync_window_closed_and_writes_nothing(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.seed(project_with({**OPEN, "kind": "deny", "description": "release freeze"}))
    cluster.seed(in_project(application()))
    ArgoCdController(cluster.api)
    env = await actions_env(cluster.connection)

    with pytest.raises(StepFailed) as failed:
        await env.run("argocdSync", {"application": "dese-api"})

    assert failed.value.reason == "SyncWindowClosed"
    assert not failed.value.transient  # waiting out a window is not a retry's job
    assert "blocked by the active deny window '* * * * *' for 1h" in failed.value.message
    assert "(release freeze)" in failed.value.message and "it closes at" in failed.value.message
    assert "nothing was written" in failed.value.message
    assert cluster.writes("applications") == []


async def test_a_deny_window_open_to_manual_syncs_lets_the_operators_sync_run(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.seed(project_with({**OPEN, "kind": "deny", "manualSync": True}))
    cluster.seed(in_project(application()))
    controller = ArgoCdController(cluster.api)
    env = await actions_env(cluster.connection)

    result = await env.run("argocdSync", {"application": "dese-api"})

    [operation] = controller.operations
    assert operation["initiatedBy"] == {"username": "mcp-remediator", "automated": False}
    assert result.outputs["operationPhase"] == "Succeeded"


async def test_outside_every_allow_window_the_step_says_when_the_next_opens(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    # Open one hour every 29 February (from 00:00 UTC): closed whenever else the test runs.
    closed = {"kind": "allow", "schedule": "0 0 29 2 *", "duration": "1h", "namespaces": ["*"]}
    cluster.seed(project_with(closed))
    cluster.seed(in_project(application()))
    env = await actions_env(cluster.connection)

    with pytest.raises(StepFailed) as failed:
        await env.run("argocdSync", {"application": "dese-api"})

    assert failed.value.reason == "SyncWindowClosed"
    assert "outside every allow window" in failed.value.message
    today = datetime.date.today()
    leap = next(y for y in range(today.year + 1, today.year + 9) if calendar.isleap(y))
    if calendar.isleap(today.year) and today < datetime.date(today.year, 2, 29):
        leap = today.year
    assert f"the next opens at {leap}-02-29T00:00:00Z" in failed.value.message
    assert cluster.writes("applications") == []


async def test_an_operation_parked_by_a_window_is_reported_never_stacked_upon(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    cluster.seed(project_with({**OPEN, "kind": "deny"}))
    cluster.seed(in_project(application()))
    ArgoCdController(cluster.api)
    # What an earlier core mode did: the operation written past the window.
    operation = {"sync": {"revision": "main"}, "initiatedBy": {"username": "someone"}}
    await cluster.api.patch_object(*APPS, "argocd", "dese-api", {"operation": operation})
    parked = app_now(cluster)["status"]["operationState"]
    assert (parked["phase"], parked["message"]) == ("Running", PARKED)  # as the controller does
    before = len(cluster.writes("applications"))
    env = await actions_env(cluster.connection)

    with pytest.raises(StepFailed) as failed:
        await env.run("argocdSync", {"application": "dese-api"})

    assert failed.value.reason == "SyncWindowClosed"
    assert "an operation is parked by a sync window" in failed.value.message
    assert (
        "by someone" in failed.value.message and "argocd app terminate-op" in failed.value.message
    )
    assert len(cluster.writes("applications")) == before


async def test_api_mode_maps_the_servers_window_refusal(
    http_mock: HttpMock, actions_env: ActionsEnvFactory
) -> None:
    server = ArgoCdServer(http_mock, API_TOKEN, application())
    project = project_with({**OPEN, "kind": "deny"})
    server.project = lambda app: project
    env = await api_env(actions_env, http_mock)

    with pytest.raises(StepFailed) as failed:
        await env.run("argocdSync", {"application": "dese-api"})

    assert failed.value.reason == "SyncWindowClosed"
    assert "cannot sync: blocked by sync window" in failed.value.message
    assert server.operations == []


async def test_pruning_an_app_that_manages_kyverno_objects_is_refused(
    cluster: Cluster, actions_env: ActionsEnvFactory
) -> None:
    app = application("kyverno-policies")
    app["status"]["resources"] = [
        {"group": "kyverno.io", "kind": "ClusterPolicy", "name": "require-signed-images"},
        {"group": "", "kind": "ConfigMap", "name": "x"},
    ]
    cluster.seed(app)
    ArgoCdController(cluster.api)
    env = await actions_env(cluster.connection)

    with pytest.raises(Refused) as refused:
        await env.run("argocdSync", {"application": "kyverno-policies", "prune": True})
    assert refused.value.reason == KYVERNO
    assert "ClusterPolicy/require-signed-images" in refused.value.message
    assert cluster.writes("applications") == []
    # Without prune the sync is GitOps: it runs.
    result = await env.run("argocdSync", {"application": "kyverno-policies"})
    assert result.outputs["operationPhase"] == "Succeeded"
