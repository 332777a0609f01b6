"""The emulator's further built-in kinds and the defaults kube-apiserver gives on create
(``mcp_remediator.testing.core_kinds``)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest

from fixtures.emulated import call, create
from mcp_remediator.testing.core_kinds import NODE_PORTS, SERVICE_CIDR, qos_class
from mcp_remediator.testing.emulator import ApiServerEmulator


@pytest.fixture
async def em() -> AsyncIterator[ApiServerEmulator]:
    async with ApiServerEmulator() as emulator, kmock.Server(emulator):
        emulator.register_builtins()
        yield emulator


def service(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


async def test_more_builtin_kinds_are_served(em: ApiServerEmulator) -> None:
    status, batch = await call(em, "GET", "/apis/batch/v1")
    assert status == 200
    assert {r["name"]: r["kind"] for r in batch["resources"]} == {
        "cronjobs": "CronJob",
        "cronjobs/status": "CronJob",
        "jobs": "Job",
        "jobs/status": "Job",
    }
    status, core = await call(em, "GET", "/api/v1")
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["replicationcontrollers"]["shortNames"] == ["rc"]
    assert by_name["replicationcontrollers"]["categories"] == ["all"]
    assert by_name["nodes"]["namespaced"] is False
    status, groups = await call(em, "GET", "/apis")
    names = {group["name"] for group in groups["groups"]}
    assert {"batch", "apiregistration.k8s.io", "networking.k8s.io", "policy"} <= names


async def test_a_job_is_created_read_and_deleted(em: ApiServerEmulator) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        "status": {"succeeded": 1},
    }
    created = await create(em, "/apis/batch/v1/namespaces/default/jobs", job)
    assert "status" not in created  # a status subresource: the create's status is dropped
    status, read = await call(em, "GET", "/apis/batch/v1/namespaces/default/jobs/once")
    assert status == 200 and read["spec"] == job["spec"]
    status, _ = await call(em, "DELETE", "/apis/batch/v1/namespaces/default/jobs/once")
    assert status == 200
    assert em.get("batch/v1", "jobs", "default", "once") is None


async def test_a_service_gets_kube_apiserver_defaults(em: ApiServerEmulator) -> None:
    ports = [{"name": "web", "port": 80}, {"name": "tls", "port": 443, "targetPort": "https"}]
    created = await create(em, "/api/v1/namespaces/default/services", service("web", ports=ports))
    spec = created["spec"]
    assert ipaddress.ip_address(spec["clusterIP"]) in SERVICE_CIDR
    assert spec["clusterIPs"] == [spec["clusterIP"]]
    assert spec["type"] == "ClusterIP"
    assert spec["sessionAffinity"] == "None"
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert spec["ports"] == [
        {"name": "web", "port": 80, "protocol": "TCP", "targetPort": 80},
        {"name": "tls", "port": 443, "targetPort": "https", "protocol": "TCP"},
    ]
    assert created["status"] == {"loadBalancer": {}}
    assert em.get("v1", "services", "default", "web") == created


async def test_a_service_keeps_what_the_client_sent(em: ApiServerEmulator) -> None:
    headless = service("db", clusterIP="None", ports=[{"port": 5432, "protocol": "UDP"}])
    spec = (await create(em, "/api/v1/namespaces/default/services", headless))["spec"]
    assert spec["clusterIP"] == "None" and spec["clusterIPs"] == ["None"]
    assert "ipFamilies" not in spec
    assert spec["ports"] == [{"port": 5432, "protocol": "UDP", "targetPort": 5432}]
    node_port = service("edge", type="NodePort", ports=[{"port": 80}])
    spec = (await create(em, "/api/v1/namespaces/default/services", node_port))["spec"]
    assert NODE_PORTS[0] <= spec["ports"][0]["nodePort"] <= NODE_PORTS[1]
    assert spec["externalTrafficPolicy"] == "Cluster"
    external = service("out", type="ExternalName", externalName="example.org")
    spec = (await create(em, "/api/v1/namespaces/default/services", external))["spec"]
    assert spec == {"type": "ExternalName", "externalName": "example.org"}


async def test_a_namespace_is_active_and_labelled_with_its_name(em: ApiServerEmulator) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"generateName": "team-"}}
    created = await create(em, "/api/v1/namespaces", body)
    name = created["metadata"]["name"]
    assert created["metadata"]["labels"] == {"kubernetes.io/metadata.name": name}
    assert created["spec"] == {"finalizers": ["kubernetes"]}
    assert created["status"] == {"phase": "Active"}


async def test_a_pod_is_pending_with_its_qos_class(em: ApiServerEmulator) -> None:
    container = {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "1"}}}
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [container]},
        "status": {"phase": "Running"},  # dropped: status is written through /status
    }
    created = await create(em, "/api/v1/namespaces/default/pods", body)
    assert created["status"] == {"phase": "Pending", "qosClass": "Burstable"}


def test_seeded_objects_get_no_defaults() -> None:
    em = ApiServerEmulator()
    em.register_builtins()
    seeded = em.seed(service("plain", ports=[{"port": 80}]))
    assert seeded["spec"] == {"ports": [{"port": 80}]}
    assert "status" not in seeded


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ([{}], "BestEffort"),
        ([{"requests": {"cpu": "1"}}], "Burstable"),
        ([{"limits": {"cpu": "1", "memory": "1Gi"}}], "Guaranteed"),
        ([{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1"}}], "Guaranteed"),
        ([{"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}], "Burstable"),
        ([{"limits": {"cpu": "1", "memory": "1Gi"}}, {}], "Burstable"),
    ],
)
def test_qos_class(resources: list[dict[str, Any]], expected: str) -> None:
    containers = [{"name": f"c{i}", "resources": r} for i, r in enumerate(resources)]
    assert qos_class({"containers": containers}) == expected


async def test_a_secrets_string_data_is_written_into_data_and_never_returned(
    em: ApiServerEmulator,
) -> None:
    secrets = "/api/v1/namespaces/default/secrets"
    created = await create(
        em,
        secrets,
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "jwt"},
         "data": {"OLD": "b2xk"}, "stringData": {"JWT_SECRET": "s3cr3t"}},
    )  # fmt: skip
    assert "stringData" not in created
    assert created["data"] == {"OLD": "b2xk", "JWT_SECRET": "czNjcjN0"}
    async with em.request(
        "PATCH",
        f"{secrets}/jwt",
        data='{"stringData": {"OLD": "new"}}',
        headers={"Content-Type": "application/merge-patch+json"},
    ) as response:
        assert response.status == 200
    stored = em.get("v1", "secrets", "default", "jwt")
    assert stored is not None and "stringData" not in stored
    assert stored["data"] == {"OLD": "bmV3", "JWT_SECRET": "czNjcjN0"}


async def test_workloads_get_apps_v1_defaults_on_create(em: ApiServerEmulator) -> None:
    template = {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}}  # fmt: skip
    selector = {"matchLabels": {"app": "web"}}
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": selector, "template": template}}  # fmt: skip
    created = await create(em, "/apis/apps/v1/namespaces/default/deployments", body)
    spec = created["spec"]
    assert spec["replicas"] == 1 and spec["revisionHistoryLimit"] == 10
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert spec["progressDeadlineSeconds"] == 600
    status, scale = await call(em, "GET", "/apis/apps/v1/namespaces/default/deployments/web/scale")
    assert status == 200 and scale["spec"]["replicas"] == 1
    # A Recreate strategy gets no rolling parameters.
    body["metadata"]["name"] = "batch"
    body["spec"]["strategy"] = {"type": "Recreate"}
    created = await create(em, "/apis/apps/v1/namespaces/default/deployments", body)
    assert created["spec"]["strategy"] == {"type": "Recreate"}


async def test_a_service_keeps_its_allocated_addresses_on_update(em: ApiServerEmulator) -> None:
    services = "/api/v1/namespaces/default/services"
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
            "spec": {"type": "NodePort", "ports": [{"port": 80}]}}  # fmt: skip
    created = await create(em, services, body)
    allocated = created["spec"]["clusterIP"], created["spec"]["ports"][0]["nodePort"]
    # kubectl replace of the manifest as written: no clusterIP, no nodePort.
    body["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    status, replaced = await call(em, "PUT", f"{services}/api", body)
    assert status == 200, replaced
    assert (replaced["spec"]["clusterIP"], replaced["spec"]["ports"][0]["nodePort"]) == allocated
