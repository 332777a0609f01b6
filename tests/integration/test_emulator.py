"""The Kubernetes API emulator behaves like a real API server over real HTTP.

Every test talks to ``ApiServerEmulator`` through KMock's aiohttp client (``em.get(url)``,
``em.patch(url, ...)``); one test runs a real Kopf operator against it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import kmock
import kopf
import pytest
import yaml

from fixtures.emulated import call, create
from mcp_remediator.testing.emulator import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    ApiError,
    ApiServerEmulator,
    complete_rollouts,
    write_kubeconfig,
)

GROUP = "test.example.com"
WIDGETS = f"/apis/{GROUP}/v1/namespaces/ns/widgets"
DEPLOYMENTS = "/apis/apps/v1/namespaces/ns/deployments"
CONFIGMAPS = "/api/v1/namespaces/ns/configmaps"
APPLICATIONS = "/apis/argoproj.io/v1alpha1/namespaces/ns/applications"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/ns/leases"

WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "size": {"type": "integer", "default": 3},
                "color": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "limits": {"type": "object", "additionalProperties": {"type": "integer"}},
                "parts": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "count": {"type": "integer", "default": 1},
                        },
                    },
                },
                "logging": {
                    "type": "object",
                    "default": {},
                    "properties": {"level": {"type": "string", "default": "info"}},
                },
                "optional": {
                    "type": "object",
                    "properties": {"inner": {"type": "string", "default": "x"}},
                },
            },
        },
        "status": {
            "type": "object",
            "properties": {"phase": {"type": "string"}, "observed": {"type": "integer"}},
        },
    },
}


def widget_crd(*, versions: tuple[str, ...] = ("v1",), storage: str = "v1") -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": version == storage,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": WIDGET_SCHEMA},
                }
                for version in versions
            ],
        },
    }


@pytest.fixture
async def em() -> AsyncIterator[ApiServerEmulator]:
    async with ApiServerEmulator() as emulator, kmock.Server(emulator):
        emulator.register_builtins()
        emulator.register_crd(widget_crd())
        yield emulator


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


def deployment(name: str, replicas: int = 2, **meta: Any) -> dict[str, Any]:
    container = {"name": "app", "image": "app:1", "ports": [{"containerPort": 80}]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ns", **meta},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [container]}}},
    }


class Watch:
    """The events of one open watch stream, read line by line."""

    def __init__(self, response: aiohttp.ClientResponse):
        self.response = response

    async def next(self, timeout: float = 5) -> dict[str, Any]:
        line = await asyncio.wait_for(self.response.content.readline(), timeout)
        assert line, "the watch stream ended"
        event: dict[str, Any] = json.loads(line)
        return event

    async def take(self, count: int) -> list[tuple[str, str]]:
        return [summary(await self.next()) for _ in range(count)]


def summary(event: dict[str, Any]) -> tuple[str, str]:
    return event["type"], event["object"]["metadata"].get("name", "")


async def open_watch(em: ApiServerEmulator, url: str, **params: str) -> aiohttp.ClientResponse:
    response = await em.get(url, params={"watch": "true", **params})
    assert response.status == 200
    return response


async def poll(check: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# --- discovery ------------------------------------------------------------------------------


async def test_discovery_lists_builtins_and_crds(em: ApiServerEmulator) -> None:
    _, apps = await call(em, "GET", "/apis/apps/v1")
    names = {r["name"] for r in apps["resources"]}
    assert {"deployments", "deployments/status", "statefulsets", "daemonsets"} <= names
    assert "replicasets/status" in names

    _, core = await call(em, "GET", "/api/v1")
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["namespaces"]["namespaced"] is False
    assert by_name["configmaps"]["namespaced"] is True
    assert {"list", "watch", "patch"} <= set(by_name["configmaps"]["verbs"])

    _, argo = await call(em, "GET", "/apis/argoproj.io/v1alpha1")
    # no status subresource
    assert sorted(r["name"] for r in argo["resources"]) == ["applications", "appprojects"]

    _, kyverno = await call(em, "GET", "/apis/kyverno.io/v1")
    namespaced = {r["name"]: r["namespaced"] for r in kyverno["resources"]}
    assert (namespaced["clusterpolicies"], namespaced["policies"]) == (False, True)
    _, groups = await call(em, "GET", "/apis")
    assert {GROUP, "kyverno.io", "wgpolicyk8s.io", "events.k8s.io"} <= {
        g["name"] for g in groups["groups"]
    }
    _, widgets = await call(em, "GET", f"/apis/{GROUP}/v1")
    assert {r["name"]: r["kind"] for r in widgets["resources"]} == {
        "widgets": "Widget",
        "widgets/status": "Widget",
    }


async def test_discovery_is_shaped_as_kube_apiserver_serves_it(em: ApiServerEmulator) -> None:
    _, api = await call(em, "GET", "/api")
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    _, core = await call(em, "GET", "/api/v1")
    assert core["groupVersion"] == "v1"  # not "/v1": kubectl would find no core kind
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["configmaps"]["shortNames"] == ["cm"]
    assert "all" in by_name["pods"]["categories"]
    assert "categories" not in by_name["configmaps"]
    # Subresources have no short names and no categories (else ``ns`` or a category would
    # also resolve to ``namespaces/status``), and only the verbs of a status subresource.
    status = by_name["namespaces/status"]
    assert "shortNames" not in status and "categories" not in status
    assert status["verbs"] == ["get", "patch", "update"] and status["kind"] == "Namespace"
    _, apps = await call(em, "GET", "/apis/apps/v1")
    assert apps["groupVersion"] == "apps/v1"
    em.register_crd(
        {
            **widget_crd(),
            "spec": {
                **widget_crd()["spec"],
                "names": {
                    "plural": "widgets",
                    "kind": "Widget",
                    "shortNames": ["wd"],
                    "categories": ["toys"],
                },
            },
        }
    )
    _, widgets = await call(em, "GET", f"/apis/{GROUP}/v1")
    by_name = {r["name"]: r for r in widgets["resources"]}
    assert (by_name["widgets"]["shortNames"], by_name["widgets"]["categories"]) == (
        ["wd"],
        ["toys"],
    )
    assert "shortNames" not in by_name["widgets/status"]
    assert "categories" not in by_name["widgets/status"]


async def test_discovery_prefers_versions_as_kube_apiserver_does(em: ApiServerEmulator) -> None:
    em.register_crd(widget_crd(versions=("v1beta1", "v2alpha1", "v1", "v1beta2"), storage="v1"))
    _, group = await call(em, "GET", f"/apis/{GROUP}")
    assert [v["version"] for v in group["versions"]] == ["v1", "v1beta2", "v1beta1", "v2alpha1"]
    assert group["preferredVersion"] == {"groupVersion": f"{GROUP}/v1", "version": "v1"}
    _, groups = await call(em, "GET", "/apis")
    kyverno = next(g for g in groups["groups"] if g["name"] == "kyverno.io")
    assert kyverno["preferredVersion"]["version"] == "v2"
    status, _ = await call(em, "GET", "/apis/nothing.example.com")
    assert status == 404


# --- create ---------------------------------------------------------------------------------


KUBECTL_DISCOVERY = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
    "application/json"
)


async def discover(em: ApiServerEmulator, path: str, accept: str) -> tuple[str, Any]:
    async with em.request("GET", path, headers={"Accept": accept}) as response:
        assert response.status == 200
        return response.headers["Content-Type"], json.loads(await response.text())


async def test_aggregated_discovery_as_kubectl_asks_for_it(em: ApiServerEmulator) -> None:
    content_type, apis = await discover(em, "/apis", KUBECTL_DISCOVERY)
    assert content_type == ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    assert (apis["kind"], apis["apiVersion"]) == (
        "APIGroupDiscoveryList",
        "apidiscovery.k8s.io/v2",
    )
    groups = {item["metadata"]["name"]: item["versions"] for item in apis["items"]}
    [apps_v1] = groups["apps"]
    deployments = next(r for r in apps_v1["resources"] if r["resource"] == "deployments")
    assert deployments["responseKind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert deployments["scope"] == "Namespaced" and "deploy" in deployments["shortNames"]
    subresources = {s["subresource"]: s["responseKind"] for s in deployments["subresources"]}
    assert subresources["scale"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    assert subresources["status"]["kind"] == "Deployment"
    widgets = next(r for r in groups[GROUP][0]["resources"] if r["resource"] == "widgets")
    assert widgets["singularResource"] == "widget"

    _, core = await discover(em, "/api", KUBECTL_DISCOVERY)
    [item] = core["items"]
    assert item["metadata"]["name"] == "" and item["versions"][0]["version"] == "v1"
    namespaces = next(r for r in item["versions"][0]["resources"] if r["resource"] == "namespaces")
    assert namespaces["scope"] == "Cluster"

    # v2beta1 when only that is asked for; the plain documents when JSON comes first.
    v2beta1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
    _, older = await discover(em, "/apis", v2beta1)
    assert older["apiVersion"] == "apidiscovery.k8s.io/v2beta1"
    content_type, plain = await discover(em, "/apis", "application/json")
    assert content_type.startswith("application/json") and plain["kind"] == "APIGroupList"
    _, versions = await discover(em, "/api", "application/json")
    assert versions["kind"] == "APIVersions"


CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


async def test_registered_crds_are_stored_established(em: ApiServerEmulator) -> None:
    status, crd = await call(em, "GET", f"{CRDS}/widgets.{GROUP}")
    assert status == 200, crd
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd["status"]["acceptedNames"]["kind"] == "Widget"
    assert crd["status"]["storedVersions"] == ["v1"]
    _, listed = await call(em, "GET", CRDS)
    # The third-party CRDs the operator touches are there too, as in a cluster.
    assert {f"widgets.{GROUP}", "applications.argoproj.io"} <= {
        item["metadata"]["name"] for item in listed["items"]
    }


async def test_a_crd_created_through_the_api_is_served_until_deleted(
    em: ApiServerEmulator,
) -> None:
    gadgets = widget_crd()
    gadgets["metadata"]["name"] = f"gadgets.{GROUP}"
    gadgets["spec"]["names"] = {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"}
    created = await create(em, CRDS, gadgets)
    assert "status" not in created or not created["status"].get("conditions")
    _, discovery = await call(em, "GET", f"/apis/{GROUP}/v1")
    assert "gadgets" in {r["name"] for r in discovery["resources"]}
    gadget = {**widget("g1"), "kind": "Gadget"}
    stored = await create(em, f"/apis/{GROUP}/v1/namespaces/ns/gadgets", gadget)
    assert stored["spec"]["size"] == 3  # the schema's default: the CRD's schema is in force
    _, crd = await call(em, "GET", f"{CRDS}/gadgets.{GROUP}")
    assert {c["type"] for c in crd["status"]["conditions"]} == {"NamesAccepted", "Established"}

    status, _ = await call(em, "DELETE", f"{CRDS}/gadgets.{GROUP}")
    assert status == 200
    status, body = await call(em, "GET", f"/apis/{GROUP}/v1/namespaces/ns/gadgets/g1")
    assert status == 404, body
    _, discovery = await call(em, "GET", f"/apis/{GROUP}/v1")
    assert "gadgets" not in {r["name"] for r in discovery["resources"]}


async def test_create_stamps_server_metadata(em: ApiServerEmulator) -> None:
    first = await create(em, CONFIGMAPS, {"metadata": {"name": "a", "uid": "mine"}, "data": {}})
    second = await create(em, CONFIGMAPS, {"metadata": {"name": "b"}})
    meta = first["metadata"]
    assert first["apiVersion"] == "v1" and first["kind"] == "ConfigMap"
    assert meta["namespace"] == "ns"
    assert uuid.UUID(meta["uid"]).version == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert meta["generation"] == 1
    assert int(second["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert em.objects["v1/configmaps", "ns", "a"] >= {"metadata": {"uid": meta["uid"]}}


async def test_generate_name_appends_five_random_characters(em: ApiServerEmulator) -> None:
    names = set()
    for _ in range(3):
        obj = await create(em, CONFIGMAPS, {"metadata": {"generateName": "cm-"}})
        names.add(obj["metadata"]["name"])
    assert len(names) == 3
    assert all(re.fullmatch(r"cm-[a-z0-9]{5}", name) for name in names)
    status, error = await call(em, "POST", CONFIGMAPS, {"metadata": {}})
    assert (status, error["reason"]) == (422, "Invalid")


async def test_create_of_an_existing_object_is_409_already_exists(em: ApiServerEmulator) -> None:
    await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})
    status, error = await call(em, "POST", CONFIGMAPS, {"metadata": {"name": "a"}})
    assert status == 409
    assert error["kind"] == "Status" and error["code"] == 409
    assert error["reason"] == "AlreadyExists"
    assert error["message"] == 'configmaps "a" already exists'
    assert em.errors == []  # API errors are answers, not failures of the mock


async def test_unknown_resources_and_objects_are_404(em: ApiServerEmulator) -> None:
    status, error = await call(em, "POST", "/apis/nope.io/v1/namespaces/ns/things", {})
    assert (status, error["reason"]) == (404, "NotFound")
    status, error = await call(em, "GET", f"{CONFIGMAPS}/missing")
    assert (status, error["reason"]) == (404, "NotFound")
    assert error["message"] == 'configmaps "missing" not found'
    status, _ = await call(em, "GET", "/apis/kyverno.io/v1/namespaces/ns/clusterpolicies")
    assert status == 404  # cluster-scoped resources have no namespaced URLs


async def test_create_drops_status_only_with_a_status_subresource(em: ApiServerEmulator) -> None:
    made = await create(em, WIDGETS, {**widget("w"), "status": {"phase": "Faked"}})
    assert "status" not in made
    app = {"metadata": {"name": "app"}, "spec": {}, "status": {"sync": {"status": "Synced"}}}
    made = await create(em, APPLICATIONS, app)
    assert made["status"] == {"sync": {"status": "Synced"}}


async def test_invalid_names_are_422(em: ApiServerEmulator) -> None:
    status, error = await call(em, "POST", CONFIGMAPS, {"metadata": {"name": "Not_Valid"}})
    assert (status, error["reason"]) == (422, "Invalid")


# --- structural schema ----------------------------------------------------------------------


async def test_schema_prunes_unknown_fields_and_applies_defaults(em: ApiServerEmulator) -> None:
    body = widget(
        "w",
        color="red",
        bogus=True,
        extra={"anything": {"goes": 1}},
        limits={"cpu": 2},
        parts=[{"name": "a", "junk": 1}],
        optional=None,
    )
    made = await create(em, WIDGETS, {**body, "junk": "top-level"})
    assert "junk" not in made
    assert made["spec"] == {
        "size": 3,
        "color": "red",
        "extra": {"anything": {"goes": 1}},
        "limits": {"cpu": 2},
        "parts": [{"name": "a", "count": 1}],
        "logging": {"level": "info"},  # the default object, defaulted inside too
    }

    patch = {"spec": {"optional": {}, "bogus": 1}, "status": {"phase": "x"}}
    status, patched = await call(em, "PATCH", f"{WIDGETS}/w", patch, MERGE_PATCH)
    assert status == 200
    assert patched["spec"]["optional"] == {"inner": "x"}
    assert "bogus" not in patched["spec"]

    status_patch = {"status": {"phase": "Ready", "unknown": 1}}
    status, patched = await call(em, "PATCH", f"{WIDGETS}/w/status", status_patch, MERGE_PATCH)
    assert status == 200
    assert patched["status"] == {"phase": "Ready"}


async def test_served_versions_share_one_storage(em: ApiServerEmulator) -> None:
    em.register_crd(widget_crd(versions=("v1", "v2"), storage="v1"))
    await create(em, WIDGETS.replace("/v1/", "/v2/"), widget("w"))
    status, obj = await call(em, "GET", f"{WIDGETS}/w")
    assert status == 200 and obj["apiVersion"] == f"{GROUP}/v1"
    status, obj = await call(em, "GET", f"{WIDGETS.replace('/v1/', '/v2/')}/w")
    assert status == 200 and obj["apiVersion"] == f"{GROUP}/v2"
    assert em.objects[f"{GROUP}/v1/widgets", "ns", "w"] >= {"apiVersion": f"{GROUP}/v1"}


# --- patch and replace ----------------------------------------------------------------------


async def test_merge_patch_deletes_on_null_and_replaces_lists(em: ApiServerEmulator) -> None:
    await create(em, CONFIGMAPS, {"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}})
    await call(em, "PATCH", f"{CONFIGMAPS}/a", {"data": {"k": "v", "l": "w"}}, MERGE_PATCH)
    patch = {"metadata": {"labels": {"x": None}}, "data": {"k": None}}
    status, obj = await call(em, "PATCH", f"{CONFIGMAPS}/a", patch, MERGE_PATCH)
    assert status == 200
    assert obj["metadata"]["labels"] == {"y": "2"}
    assert obj["data"] == {"l": "w"}

    await create(em, WIDGETS, widget("w", tags=["a", "b"]))
    status, obj = await call(em, "PATCH", f"{WIDGETS}/w", {"spec": {"tags": ["c"]}}, MERGE_PATCH)
    assert obj["spec"]["tags"] == ["c"]


async def test_json_patch_operations(em: ApiServerEmulator) -> None:
    cm = {"metadata": {"name": "a", "annotations": {"a/b": "1", "t~x": "2"}}, "data": {"k": "v"}}
    made = await create(em, CONFIGMAPS, cm)
    rv = made["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "test", "path": "/metadata/annotations/a~1b", "value": "1"},
        {"op": "replace", "path": "/metadata/annotations/t~0x", "value": "3"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["f1"]},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "f3"},
        {"op": "add", "path": "/metadata/finalizers/1", "value": "f2"},
        {"op": "copy", "from": "/data/k", "path": "/data/copied"},
        {"op": "move", "from": "/data/k", "path": "/data/moved"},
        {"op": "remove", "path": "/metadata/annotations/a~1b"},
    ]  # fmt: skip
    status, obj = await call(em, "PATCH", f"{CONFIGMAPS}/a", ops, JSON_PATCH)
    assert status == 200, obj
    assert obj["metadata"]["annotations"] == {"t~x": "3"}
    assert obj["metadata"]["finalizers"] == ["f1", "f2", "f3"]
    assert obj["data"] == {"copied": "v", "moved": "v"}


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/metadata/resourceVersion", "value": "0"}],
        [{"op": "test", "path": "/data/n", "value": 1}],  # the value is "1", a string
        [{"op": "remove", "path": "/data/missing"}],
        [{"op": "replace", "path": "/metadata/finalizers/5", "value": "x"}],
        [{"op": "frobnicate", "path": "/data"}],
    ],
)
async def test_json_patch_failures_are_422_and_change_nothing(
    em: ApiServerEmulator, ops: list[dict[str, Any]]
) -> None:
    made = await create(em, CONFIGMAPS, {"metadata": {"name": "a"}, "data": {"n": "1"}})
    status, error = await call(em, "PATCH", f"{CONFIGMAPS}/a", ops, JSON_PATCH)
    assert (status, error["kind"], error["reason"]) == (422, "Status", "Invalid")
    assert em.get("v1", "configmaps", "ns", "a") == made


async def test_stale_resource_version_is_409_conflict(em: ApiServerEmulator) -> None:
    made = await create(em, CONFIGMAPS, {"metadata": {"name": "a"}, "data": {"k": "1"}})
    stale = made["metadata"]["resourceVersion"]
    await call(em, "PATCH", f"{CONFIGMAPS}/a", {"data": {"k": "2"}}, MERGE_PATCH)

    patch = {"metadata": {"resourceVersion": stale}, "data": {"k": "3"}}
    status, error = await call(em, "PATCH", f"{CONFIGMAPS}/a", patch, MERGE_PATCH)
    assert (status, error["reason"]) == (409, "Conflict")
    assert "the object has been modified" in error["message"]

    status, error = await call(em, "PUT", f"{CONFIGMAPS}/a", {**made, "data": {"k": "3"}})
    assert (status, error["reason"]) == (409, "Conflict")
    assert em.get("v1", "configmaps", "ns", "a")["data"] == {"k": "2"}  # type: ignore[index]


async def test_put_replaces_the_object(em: ApiServerEmulator) -> None:
    made = await create(em, CONFIGMAPS, {"metadata": {"name": "a"}, "data": {"k": "1", "l": "2"}})
    body = {"metadata": {"name": "a", "resourceVersion": made["metadata"]["resourceVersion"]}}
    status, obj = await call(em, "PUT", f"{CONFIGMAPS}/a", {**body, "data": {"m": "3"}})
    assert status == 200
    assert obj["data"] == {"m": "3"}
    assert obj["metadata"]["uid"] == made["metadata"]["uid"]
    assert obj["metadata"]["creationTimestamp"] == made["metadata"]["creationTimestamp"]
    status, obj = await call(em, "PUT", f"{CONFIGMAPS}/a", {"metadata": {"name": "b"}})
    assert (status, obj["reason"]) == (400, "BadRequest")
    status, obj = await call(em, "PUT", f"{CONFIGMAPS}/nope", {"metadata": {"name": "nope"}})
    assert status == 404


async def test_strategic_merge_patch_merges_named_lists(em: ApiServerEmulator) -> None:
    await create(em, DEPLOYMENTS, deployment("d"))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}}
    status, obj = await call(em, "PATCH", f"{DEPLOYMENTS}/d", patch, STRATEGIC_MERGE_PATCH)
    assert status == 200
    assert obj["spec"]["template"]["spec"]["containers"] == [
        {"name": "app", "image": "app:2", "ports": [{"containerPort": 80}]}
    ]
    await create(em, WIDGETS, widget("w"))
    status, error = await call(
        em, "PATCH", f"{WIDGETS}/w", {"spec": {"size": 1}}, STRATEGIC_MERGE_PATCH
    )
    assert (status, error["reason"]) == (415, "UnsupportedMediaType")  # as for real CRs


# --- status, generation, immutability -------------------------------------------------------


async def test_status_subresource_isolation(em: ApiServerEmulator) -> None:
    await create(em, WIDGETS, widget("w", size=1))
    status, obj = await call(
        em, "PATCH", f"{WIDGETS}/w/status", {"status": {"phase": "Ready"}}, MERGE_PATCH
    )
    assert obj["status"] == {"phase": "Ready"} and obj["metadata"]["generation"] == 1

    # A main-resource write cannot change the status...
    patch = {"spec": {"size": 2}, "status": {"phase": "Hacked"}}
    status, obj = await call(em, "PATCH", f"{WIDGETS}/w", patch, MERGE_PATCH)
    assert obj["status"] == {"phase": "Ready"} and obj["spec"]["size"] == 2
    assert obj["metadata"]["generation"] == 2

    # ... and a status write cannot change anything else.
    patch = {"spec": {"size": 5}, "metadata": {"labels": {"a": "b"}}, "status": {"observed": 2}}
    status, obj = await call(em, "PATCH", f"{WIDGETS}/w/status", patch, MERGE_PATCH)
    assert obj["spec"]["size"] == 2 and "labels" not in obj["metadata"]
    assert obj["status"] == {"phase": "Ready", "observed": 2}
    assert obj["metadata"]["generation"] == 2

    stale = {"metadata": {"resourceVersion": "1"}, "status": {"phase": "Old"}}
    status, error = await call(em, "PATCH", f"{WIDGETS}/w/status", stale, MERGE_PATCH)
    assert (status, error["reason"]) == (409, "Conflict")

    status, error = await call(em, "PATCH", f"{CONFIGMAPS}/x/status", {}, MERGE_PATCH)
    assert status == 404  # no status subresource for configmaps


async def test_without_a_status_subresource_status_is_an_ordinary_field(
    em: ApiServerEmulator,
) -> None:
    await create(em, APPLICATIONS, {"metadata": {"name": "app"}, "spec": {"project": "p"}})
    patch = {"status": {"health": {"status": "Healthy"}}}
    status, obj = await call(em, "PATCH", f"{APPLICATIONS}/app", patch, MERGE_PATCH)
    assert status == 200 and obj["status"] == {"health": {"status": "Healthy"}}
    assert obj["metadata"]["generation"] == 2  # CRDs without /status count it as content
    status, _ = await call(em, "PATCH", f"{APPLICATIONS}/app/status", patch, MERGE_PATCH)
    assert status == 404


async def test_generation_and_resource_version_rules(em: ApiServerEmulator) -> None:
    made = await create(em, WIDGETS, widget("w", size=1))
    rv = made["metadata"]["resourceVersion"]
    watch = Watch(await open_watch(em, WIDGETS, resourceVersion=rv))

    _, labelled = await call(
        em, "PATCH", f"{WIDGETS}/w", {"metadata": {"labels": {"a": "b"}}}, MERGE_PATCH
    )
    assert labelled["metadata"]["generation"] == 1
    assert int(labelled["metadata"]["resourceVersion"]) > int(rv)

    # A write that changes nothing: same resourceVersion, no event.
    _, same = await call(em, "PATCH", f"{WIDGETS}/w", {"spec": {"size": 1}}, MERGE_PATCH)
    assert same == labelled

    _, resized = await call(em, "PATCH", f"{WIDGETS}/w", {"spec": {"size": 2}}, MERGE_PATCH)
    assert resized["metadata"]["generation"] == 2

    patch = {"metadata": {"uid": "forged", "creationTimestamp": "2000-01-01T00:00:00Z"}}
    _, forged = await call(em, "PATCH", f"{WIDGETS}/w", patch, MERGE_PATCH)
    assert forged == resized  # immutable fields are kept, so nothing changed at all

    first, second = await watch.next(), await watch.next()
    assert first["object"]["metadata"]["labels"] == {"a": "b"}
    assert second["object"]["metadata"]["generation"] == 2  # nothing in between
    watch.response.close()

    status, error = await call(
        em, "PATCH", f"{WIDGETS}/w", {"metadata": {"namespace": "other"}}, MERGE_PATCH
    )
    assert (status, error["reason"]) == (400, "BadRequest")


# --- delete ---------------------------------------------------------------------------------


async def test_delete_without_finalizers_removes_at_once(em: ApiServerEmulator) -> None:
    await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})
    status, obj = await call(em, "DELETE", f"{CONFIGMAPS}/a")
    assert status == 200 and obj["metadata"]["name"] == "a"
    assert em.get("v1", "configmaps", "ns", "a") is None
    assert em.objects["v1/configmaps", "ns", "a"].deleted
    status, error = await call(em, "DELETE", f"{CONFIGMAPS}/a")
    assert (status, error["reason"]) == (404, "NotFound")
    await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})  # the name is free again


async def test_delete_with_finalizers_waits_for_them(em: ApiServerEmulator) -> None:
    made = await create(
        em, WIDGETS, {**widget("w"), "metadata": {"name": "w", "finalizers": ["f"]}}
    )
    watch = Watch(
        await open_watch(em, WIDGETS, resourceVersion=made["metadata"]["resourceVersion"])
    )

    status, obj = await call(em, "DELETE", f"{WIDGETS}/w")
    assert status == 200 and obj["metadata"]["deletionTimestamp"]
    assert obj["metadata"]["generation"] == 2
    assert em.get(f"{GROUP}/v1", "widgets", "ns", "w") is not None
    status, again = await call(em, "DELETE", f"{WIDGETS}/w")
    assert again == obj  # already being deleted: nothing changes

    patch = {"metadata": {"finalizers": ["f", "new"]}}
    status, error = await call(em, "PATCH", f"{WIDGETS}/w", patch, MERGE_PATCH)
    assert (status, error["reason"]) == (422, "Invalid")

    status, obj = await call(
        em, "PATCH", f"{WIDGETS}/w", {"metadata": {"finalizers": None}}, MERGE_PATCH
    )
    assert status == 200
    assert em.get(f"{GROUP}/v1", "widgets", "ns", "w") is None
    assert await watch.take(2) == [("MODIFIED", "w"), ("DELETED", "w")]
    watch.response.close()


async def test_delete_preconditions(em: ApiServerEmulator) -> None:
    await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})
    options = {"kind": "DeleteOptions", "preconditions": {"resourceVersion": "0"}}
    status, error = await call(em, "DELETE", f"{CONFIGMAPS}/a", options)
    assert (status, error["reason"]) == (409, "Conflict")
    assert em.get("v1", "configmaps", "ns", "a") is not None


# --- list -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", {"web-prod", "web-dev"}),
        ("app==web,env=prod", {"web-prod"}),
        ("app!=web", {"db", "bare"}),
        ("env in (prod, staging)", {"web-prod", "db"}),
        ("env notin (prod)", {"web-dev", "db", "bare"}),
        ("env", {"web-prod", "web-dev", "db"}),
        ("!env", {"bare"}),
        ("app in (web,db),!tier", {"web-dev", "db"}),
    ],
)
async def test_label_selectors(em: ApiServerEmulator, selector: str, expected: set[str]) -> None:
    labels = {
        "web-prod": {"app": "web", "env": "prod", "tier": "front"},
        "web-dev": {"app": "web", "env": "dev"},
        "db": {"app": "db", "env": "staging"},
        "bare": {},
    }
    for name, label_set in labels.items():
        await create(em, CONFIGMAPS, {"metadata": {"name": name, "labels": label_set}})
    status, listing = await call(em, "GET", CONFIGMAPS, labelSelector=selector)
    assert status == 200
    assert {item["metadata"]["name"] for item in listing["items"]} == expected


async def test_field_selectors_and_bad_selectors(em: ApiServerEmulator) -> None:
    for name in ("a", "b"):
        await create(em, CONFIGMAPS, {"metadata": {"name": name}})
    await create(em, "/api/v1/namespaces/other/configmaps", {"metadata": {"name": "a"}})
    _, listing = await call(em, "GET", "/api/v1/configmaps", fieldSelector="metadata.name=a")
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in listing["items"]] == [
        ("ns", "a"),
        ("other", "a"),
    ]
    selector = "metadata.namespace!=ns,metadata.name==a"
    _, listing = await call(em, "GET", "/api/v1/configmaps", fieldSelector=selector)
    assert [i["metadata"]["namespace"] for i in listing["items"]] == ["other"]

    status, error = await call(em, "GET", CONFIGMAPS, fieldSelector="spec.x=1")
    assert (status, error["reason"]) == (400, "BadRequest")
    status, error = await call(em, "GET", CONFIGMAPS, labelSelector="a in b")
    assert (status, error["reason"]) == (400, "BadRequest")


async def test_list_shape_and_cluster_wide_listing(em: ApiServerEmulator) -> None:
    await create(em, DEPLOYMENTS, deployment("d1"))
    other = deployment("d2")
    other["metadata"]["namespace"] = "other"
    await create(em, "/apis/apps/v1/namespaces/other/deployments", other)
    status, error = await call(em, "POST", DEPLOYMENTS, other)
    assert (status, error["reason"]) == (400, "BadRequest")  # body and URL disagree
    status, listing = await call(em, "GET", "/apis/apps/v1/deployments")
    assert status == 200
    assert listing["kind"] == "DeploymentList" and listing["apiVersion"] == "apps/v1"
    assert [i["metadata"]["name"] for i in listing["items"]] == ["d1", "d2"]
    newest = max(int(i["metadata"]["resourceVersion"]) for i in listing["items"])
    assert listing["metadata"]["resourceVersion"] == str(newest)
    _, listing = await call(em, "GET", DEPLOYMENTS)
    assert [i["metadata"]["name"] for i in listing["items"]] == ["d1"]


async def test_cluster_scoped_namespaces(em: ApiServerEmulator) -> None:
    made = await create(em, "/api/v1/namespaces", {"metadata": {"name": "team"}})
    assert "namespace" not in made["metadata"]
    status, obj = await call(em, "GET", "/api/v1/namespaces/team")
    assert status == 200 and obj["kind"] == "Namespace"
    _, listing = await call(em, "GET", "/api/v1/namespaces")
    assert [i["metadata"]["name"] for i in listing["items"]] == ["team"]
    status, _ = await call(
        em, "PATCH", "/api/v1/namespaces/team", {"metadata": {"labels": {"a": "b"}}}, MERGE_PATCH
    )
    assert status == 200
    status, _ = await call(em, "GET", "/api/v1/namespaces/team/configmaps")
    assert status == 200  # still a list of configmaps in that namespace
    assert em.objects["v1/namespaces", None, "team"] >= {"metadata": {"labels": {"a": "b"}}}
    assert [r.name for r in em.write_requests() if r.resource == "v1/namespaces"] == [
        None,
        "team",
    ]


# --- watch ----------------------------------------------------------------------------------


async def test_watch_resumes_after_the_listed_resource_version(em: ApiServerEmulator) -> None:
    await create(em, CONFIGMAPS, {"metadata": {"name": "before"}})
    _, listing = await call(em, "GET", CONFIGMAPS)
    await create(em, CONFIGMAPS, {"metadata": {"name": "between"}})
    response = await open_watch(
        em, CONFIGMAPS, resourceVersion=listing["metadata"]["resourceVersion"]
    )
    watch = Watch(response)
    await create(em, CONFIGMAPS, {"metadata": {"name": "after"}})
    await call(em, "DELETE", f"{CONFIGMAPS}/before")
    assert await watch.take(3) == [("ADDED", "between"), ("ADDED", "after"), ("DELETED", "before")]
    response.close()


async def test_watch_without_resource_version_starts_with_a_snapshot(
    em: ApiServerEmulator,
) -> None:
    await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})
    await create(em, "/api/v1/namespaces/other/configmaps", {"metadata": {"name": "b"}})
    response = await open_watch(em, CONFIGMAPS)
    watch = Watch(response)
    assert await watch.take(1) == [("ADDED", "a")]  # only the namespace of the URL
    await call(em, "PATCH", f"{CONFIGMAPS}/a", {"data": {"k": "v"}}, MERGE_PATCH)
    await create(em, "/api/v1/namespaces/other/configmaps", {"metadata": {"name": "c"}})
    await create(em, CONFIGMAPS, {"metadata": {"name": "d"}})
    assert await watch.take(2) == [("MODIFIED", "a"), ("ADDED", "d")]
    assert em.watched_plurals() == {"configmaps"}
    response.close()
    await poll(lambda: not em.watched_plurals(), what="the closed stream to be released")

    status, error = await call(em, "GET", "/apis/nope.io/v1/things", watch="true")
    assert (status, error["reason"]) == (404, "NotFound")


async def test_concurrent_writes_during_watch_start_are_neither_lost_nor_duplicated(
    em: ApiServerEmulator,
) -> None:
    count = 60
    some_written = asyncio.Event()

    async def writer(first: int) -> None:
        for index in range(first, count, 3):
            await create(em, CONFIGMAPS, {"metadata": {"name": f"cm-{index}"}})
            if index >= count // 4:
                some_written.set()

    async def watcher() -> aiohttp.ClientResponse:
        await some_written.wait()  # start the watch while the writers are busy
        return await open_watch(em, CONFIGMAPS)

    *_, response = await asyncio.gather(writer(0), writer(1), writer(2), watcher())
    watch = Watch(response)
    seen = [summary(await watch.next()) for _ in range(count)]
    assert sorted(seen) == sorted(("ADDED", f"cm-{index}") for index in range(count))
    await create(em, CONFIGMAPS, {"metadata": {"name": "last"}})
    assert await watch.take(1) == [("ADDED", "last")]  # no leftover duplicates before it
    response.close()


async def test_watch_timeout_seconds_ends_the_stream(em: ApiServerEmulator) -> None:
    started = time.monotonic()
    async with em.get(CONFIGMAPS, params={"watch": "true", "timeoutSeconds": "1"}) as response:
        assert await response.read() == b""  # the server ended the stream
    assert time.monotonic() - started >= 0.9
    await poll(lambda: not em.watched_plurals(), what="the stream to be released")


async def test_watch_with_a_label_selector_sees_objects_enter_and_leave(
    em: ApiServerEmulator,
) -> None:
    await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})
    response = await open_watch(em, CONFIGMAPS, labelSelector="team=x")
    watch = Watch(response)
    label = {"metadata": {"labels": {"team": "x"}}}
    await call(em, "PATCH", f"{CONFIGMAPS}/a", label, MERGE_PATCH)
    await call(em, "PATCH", f"{CONFIGMAPS}/a", {"data": {"k": "v"}}, MERGE_PATCH)
    await call(em, "PATCH", f"{CONFIGMAPS}/a", {"metadata": {"labels": None}}, MERGE_PATCH)
    assert await watch.take(3) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    response.close()


async def test_watch_from_a_compacted_resource_version_is_410_gone() -> None:
    async with ApiServerEmulator(event_log_limit=2) as em, kmock.Server(em):
        em.register_builtins()
        first = await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})
        for name in ("b", "c", "d"):
            await create(em, CONFIGMAPS, {"metadata": {"name": name}})
        rv = first["metadata"]["resourceVersion"]
        async with em.get(CONFIGMAPS, params={"watch": "true", "resourceVersion": rv}) as response:
            events = [json.loads(line) for line in (await response.read()).splitlines()]
        assert [e["type"] for e in events] == ["ERROR"]
        assert events[0]["object"]["code"] == 410
        assert events[0]["object"]["reason"] == "Expired"


@pytest.mark.parametrize("flag", ["true", "1", "t", "T", "TRUE", "True"])
async def test_watch_flags_as_go_parses_them_stream_as_json(
    em: ApiServerEmulator, flag: str
) -> None:
    await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})
    response = await em.get(CONFIGMAPS, params={"watch": flag, "timeoutSeconds": "0.2"})
    async with response:
        # kubectl refuses application/octet-stream ("no stream serializers registered").
        assert response.headers["Content-Type"].split(";")[0] == "application/json"
        events = [json.loads(line) for line in (await response.read()).splitlines()]
    assert [summary(e) for e in events] == [("ADDED", "a")]


@pytest.mark.parametrize("flag", ["false", "0", "no"])
async def test_watch_flags_that_are_not_true_list(em: ApiServerEmulator, flag: str) -> None:
    await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})
    status, body = await call(em, "GET", CONFIGMAPS, watch=flag)
    assert status == 200 and body["kind"] == "ConfigMapList"


async def test_watch_bookmarks_only_when_allowed(em: ApiServerEmulator) -> None:
    await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})
    params = {"watch": "true", "sendInitialEvents": "true", "timeoutSeconds": "0.2"}
    async with em.get(CONFIGMAPS, params=params) as response:
        events = [json.loads(line) for line in (await response.read()).splitlines()]
    assert [e["type"] for e in events] == ["ADDED"]


async def test_watch_with_initial_events_ends_them_with_a_bookmark(em: ApiServerEmulator) -> None:
    await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})
    params = {"sendInitialEvents": "true", "allowWatchBookmarks": "true"}
    response = await open_watch(em, CONFIGMAPS, **params)
    watch = Watch(response)
    assert summary(await watch.next()) == ("ADDED", "a")
    bookmark = await watch.next()
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    response.close()


# --- leases (leader election) ---------------------------------------------------------------


def lease(holder: str, renewed: str, resource_version: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "leader"}
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    spec = {"holderIdentity": holder, "leaseDurationSeconds": 10, "renewTime": renewed}
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}


async def test_leases_are_served_without_a_status_subresource(em: ApiServerEmulator) -> None:
    _, coordination = await call(em, "GET", "/apis/coordination.k8s.io/v1")
    assert [(r["name"], r["kind"], r["namespaced"]) for r in coordination["resources"]] == [
        ("leases", "Lease", True)
    ]
    _, groups = await call(em, "GET", "/apis")
    assert "coordination.k8s.io" in {g["name"] for g in groups["groups"]}


async def test_a_lease_changes_hands_only_with_its_current_resource_version(
    em: ApiServerEmulator,
) -> None:
    """Two candidates read the same Lease; the first PUT wins, the second is 409 Conflict, as
    the operator's leader election relies on."""
    watch = Watch(await open_watch(em, LEASES))
    made = await create(em, LEASES, lease("a", "2030-01-01T00:00:00.000000Z"))
    assert made["spec"]["holderIdentity"] == "a"
    status, error = await call(em, "POST", LEASES, lease("b", "2030-01-01T00:00:01.000000Z"))
    assert (status, error["reason"]) == (409, "AlreadyExists")

    read_by_both = made["metadata"]["resourceVersion"]
    renewal = lease("a", "2030-01-01T00:00:02.000000Z", read_by_both)
    status, renewed = await call(em, "PUT", f"{LEASES}/leader", renewal)
    assert status == 200 and renewed["spec"]["holderIdentity"] == "a"
    assert int(renewed["metadata"]["resourceVersion"]) > int(read_by_both)
    assert renewed["metadata"]["uid"] == made["metadata"]["uid"]

    takeover = lease("b", "2030-01-01T00:00:03.000000Z", read_by_both)
    status, error = await call(em, "PUT", f"{LEASES}/leader", takeover)
    assert (status, error["reason"]) == (409, "Conflict")
    status, current = await call(em, "GET", f"{LEASES}/leader")
    assert status == 200 and current == renewed

    status, listed = await call(em, "GET", LEASES)
    assert status == 200 and listed["kind"] == "LeaseList"
    assert [item["spec"]["holderIdentity"] for item in listed["items"]] == ["a"]
    assert await watch.take(2) == [("ADDED", "leader"), ("MODIFIED", "leader")]
    watch.response.close()


# --- reactors -------------------------------------------------------------------------------


async def test_complete_rollouts_finishes_each_workload_kind(em: ApiServerEmulator) -> None:
    for plural in ("deployments", "statefulsets", "daemonsets"):
        em.add_reactor("apps/v1", plural, complete_rollouts)
    made = await create(em, DEPLOYMENTS, deployment("d", replicas=3))
    assert "status" not in made  # the reactor's write is a separate one
    d = em.get("apps/v1", "deployments", "ns", "d")
    assert d is not None and d["status"]["observedGeneration"] == 1
    assert {k: d["status"][k] for k in ("replicas", "updatedReplicas", "availableReplicas")} == {
        "replicas": 3,
        "updatedReplicas": 3,
        "availableReplicas": 3,
    }
    progressing = [c for c in d["status"]["conditions"] if c["type"] == "Progressing"]
    assert progressing[0]["reason"] == "NewReplicaSetAvailable"
    assert int(d["metadata"]["resourceVersion"]) > int(made["metadata"]["resourceVersion"])

    annotate = {"spec": {"template": {"metadata": {"annotations": {"restarted": "now"}}}}}
    _, patched = await call(em, "PATCH", f"{DEPLOYMENTS}/d", annotate, MERGE_PATCH)
    assert patched["metadata"]["generation"] == 2
    d = em.get("apps/v1", "deployments", "ns", "d")
    assert d is not None and d["status"]["observedGeneration"] == 2

    await call(
        em, "PATCH", f"{DEPLOYMENTS}/d", {"spec": {"paused": True, "replicas": 1}}, MERGE_PATCH
    )
    d = em.get("apps/v1", "deployments", "ns", "d")
    assert d is not None and d["status"]["observedGeneration"] == 2  # paused: no rollout

    sts = {**deployment("s"), "kind": "StatefulSet"}
    await create(em, "/apis/apps/v1/namespaces/ns/statefulsets", sts)
    s = em.get("apps/v1", "statefulsets", "ns", "s")
    assert s is not None and s["status"]["readyReplicas"] == 2
    assert s["status"]["currentRevision"] == s["status"]["updateRevision"]

    ds = {**deployment("ds"), "kind": "DaemonSet"}
    await create(em, "/apis/apps/v1/namespaces/ns/daemonsets", ds)
    daemons = em.get("apps/v1", "daemonsets", "ns", "ds")
    assert daemons is not None and daemons["status"]["numberAvailable"] == 1
    assert daemons["status"]["desiredNumberScheduled"] == 1


async def test_reactors_can_be_added_and_cleared_while_serving(em: ApiServerEmulator) -> None:
    seen: list[str] = []

    def stamp(obj: dict[str, Any]) -> dict[str, Any] | None:
        seen.append(obj["metadata"]["resourceVersion"])
        if obj.get("data", {}).get("stamped"):
            return None
        return {"data": {"stamped": "yes"}}

    await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})
    em.add_reactor("v1", "configmaps", stamp)
    await call(em, "PATCH", f"{CONFIGMAPS}/a", {"data": {"k": "v"}}, MERGE_PATCH)
    assert em.objects["v1/configmaps", "ns", "a"] >= {"data": {"k": "v", "stamped": "yes"}}
    assert len(seen) == 2  # after the client's write, and after its own

    em.clear_reactors("v1", "configmaps")
    await call(em, "PATCH", f"{CONFIGMAPS}/a", {"data": {"stamped": None}}, MERGE_PATCH)
    assert len(seen) == 2
    em.add_reactor("v1", "configmaps", stamp)
    touched = em.touch("v1", "configmaps", "ns", "a")
    assert em.get("v1", "configmaps", "ns", "a")["data"]["stamped"] == "yes"  # type: ignore[index]
    assert int(touched["metadata"]["resourceVersion"]) < int(
        em.get("v1", "configmaps", "ns", "a")["metadata"]["resourceVersion"]  # type: ignore[index]
    )


# --- KMock's DSL and helpers ----------------------------------------------------------------


async def test_user_reactions_win_over_the_emulation(em: ApiServerEmulator) -> None:
    await create(em, DEPLOYMENTS, deployment("x"))
    em[f"get {DEPLOYMENTS}/x"] << 503
    em[kmock.method.PATCH, kmock.resource("apps/v1/deployments")] << 503 << {"kind": "Status"}

    status, _ = await call(em, "GET", f"{DEPLOYMENTS}/x")
    assert status == 503
    status, _ = await call(em, "PATCH", f"{DEPLOYMENTS}/x", {"spec": {"replicas": 9}}, MERGE_PATCH)
    assert status == 503
    d = em.get("apps/v1", "deployments", "ns", "x")
    assert d is not None and d["spec"]["replicas"] == 2  # the intercepted write changed nothing
    assert len(em[f"get {DEPLOYMENTS}/x"]) == 1  # recorded as usual


async def test_write_requests_show_which_groups_were_written(em: ApiServerEmulator) -> None:
    em.seed({"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "p"}})
    await call(em, "GET", "/apis/kyverno.io/v1/clusterpolicies/p")
    await create(em, DEPLOYMENTS, deployment("d"))
    await call(em, "PATCH", f"{DEPLOYMENTS}/d/status", {"status": {"replicas": 1}}, MERGE_PATCH)
    await call(em, "DELETE", f"{DEPLOYMENTS}/d")

    writes = [(r.method.value, r.resource, r.name, r.subresource) for r in em.write_requests()]
    deployments = kmock.resource("apps/v1/deployments")
    assert writes == [
        ("POST", deployments, None, None),
        ("PATCH", deployments, "d", "status"),
        ("DELETE", deployments, "d", None),
    ]
    assert (
        em.write_count(lambda r: r.resource is not None and r.resource.group == "kyverno.io") == 0
    )
    assert em.write_count() == 3
    em.trim_requests()
    assert em.write_count() == 0 and len(em) == 0


async def test_an_emulator_that_keeps_no_requests_still_answers_each(
    em: ApiServerEmulator,
) -> None:
    em.keep_requests = False  # as a load test sets it
    await create(em, DEPLOYMENTS, deployment("d"))
    for replicas in (2, 3):
        await call(em, "PATCH", f"{DEPLOYMENTS}/d", {"spec": {"replicas": replicas}}, MERGE_PATCH)
    status, found = await call(em, "GET", f"{DEPLOYMENTS}/d")

    assert status == 200 and found["spec"]["replicas"] == 3
    assert [r.method.value for r in em] == ["GET"]  # only the last one


async def test_sync_helpers(em: ApiServerEmulator) -> None:
    watch = Watch(await open_watch(em, CONFIGMAPS))
    seeded = em.seed({**widget("w", bogus=1), "status": {"phase": "Seeded"}})
    assert seeded["metadata"]["namespace"] == "default"  # like kubectl's default context
    assert seeded["status"] == {"phase": "Seeded"}  # seeding keeps the status
    assert seeded["spec"] == {"size": 3, "logging": {"level": "info"}}
    with pytest.raises(ApiError, match="AlreadyExists"):
        em.seed(widget("w"))

    em.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})  # "default"
    em.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}})
    assert [c["metadata"]["namespace"] for c in em.list_objects("v1", "configmaps")] == [
        "default",
        "ns",
    ]
    assert await watch.take(1) == [("ADDED", "c")]  # seeding is seen by watchers
    watch.response.close()

    widgets = f"{GROUP}/v1", "widgets", "default", "w"
    patched = await em.patch_object(*widgets, {"spec": {"size": 7}, "status": None})
    assert patched["spec"]["size"] == 7 and patched["metadata"]["generation"] == 2
    assert patched["status"] == {"phase": "Seeded"}  # the main resource cannot touch it
    patched = await em.patch_object(*widgets, {"status": {"phase": "Done"}}, subresource="status")
    assert patched["status"] == {"phase": "Done"}
    assert em.get(f"{GROUP}/v1", "widgets", "ns", "w") is None
    assert em.write_count() == 0  # helpers are not requests
    with pytest.raises(ApiError, match="NotFound"):
        em.get("nope.io/v1", "things", "ns", "x")


async def test_register_crd_files_and_dirs(tmp_path: pathlib.Path) -> None:
    gadget = widget_crd()
    gadget["metadata"]["name"] = f"gadgets.{GROUP}"
    gadget["spec"]["names"] = {"plural": "gadgets", "kind": "Gadget", "shortNames": ["gd"]}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump_all([widget_crd(), None, gadget]))
    kustomization = {"kind": "Kustomization", "resources": ["a.yaml"]}
    (tmp_path / "kustomization.yml").write_text(yaml.safe_dump(kustomization))
    (tmp_path / "notes.txt").write_text("not YAML: {")
    em = ApiServerEmulator()
    assert em.register_crd_dir(tmp_path) == [f"widgets.{GROUP}", f"gadgets.{GROUP}"]
    assert em.resources[f"{GROUP}/v1/gadgets"].shortnames == {"gd"}
    assert em.resources[f"{GROUP}/v1/widgets"].subresources == {"status"}
    assert em.register_crd_file(tmp_path / "kustomization.yml") == []


async def test_kubeconfig_reaches_the_emulator(
    em: ApiServerEmulator, tmp_path: pathlib.Path
) -> None:
    from kubernetes import client, config

    await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})
    url = str(em.url).rstrip("/")
    path = write_kubeconfig(tmp_path / "kubeconfig", url, namespace="ns")
    configuration = client.Configuration()
    await asyncio.to_thread(
        config.load_kube_config, config_file=str(path), client_configuration=configuration
    )
    assert configuration.host == url
    contexts, active = config.list_kube_config_contexts(config_file=str(path))
    assert active["context"]["namespace"] == "ns"

    def read() -> Any:
        with client.ApiClient(configuration) as api:
            return client.CoreV1Api(api).read_namespaced_config_map("a", "ns")

    configmap = await asyncio.to_thread(read)
    assert configmap.metadata.name == "a"


# --- a real Kopf operator -------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_kopf_operator_handles_each_object_exactly_once(
    em: ApiServerEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kopf.objects")  # the level Kopf posts Events from
    url = str(em.url).rstrip("/")
    registry = kopf.OperatorRegistry()
    handled: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True)

    @kopf.on.create(GROUP, "v1", "widgets", registry=registry)
    def created(name: str, patch: kopf.Patch, **_: Any) -> None:
        handled.append(name)
        patch.status["phase"] = "Handled"

    @kopf.on.delete(GROUP, "v1", "widgets", registry=registry)
    def deleted(name: str, **_: Any) -> None:
        handled.append(f"deleted {name}")

    settings = kopf.OperatorSettings()
    settings.process.ultimate_exiting_timeout = None
    settings.posting.loggers = True  # post the handlers' log lines as Events
    ready, stop = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    settings=settings,
                    clusterwide=True,
                    standalone=True,
                    ready_flag=ready,
                    stop_flag=stop,
                )
            )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="kopf", daemon=True)
    thread.start()
    try:
        await poll(lambda: ready.is_set() or errors, 30, "the operator")
        await poll(lambda: "widgets" in em.watched_plurals() or errors, 30, "the watch")
        assert not errors

        await create(em, WIDGETS, widget("w1"))

        def done() -> bool:
            obj = em.get(f"{GROUP}/v1", "widgets", "ns", "w1")
            annotations = (obj or {}).get("metadata", {}).get("annotations", {})
            return bool(obj and obj.get("status", {}).get("phase") == "Handled" and annotations)

        await poll(done, 20, "the handler")
        obj = em.get(f"{GROUP}/v1", "widgets", "ns", "w1")
        assert obj is not None and obj["metadata"]["finalizers"]
        assert "kopf.zalando.org/last-handled-configuration" in obj["metadata"]["annotations"]

        # Deletion goes through Kopf's finalizer; by then a second handling would have shown.
        await call(em, "DELETE", f"{WIDGETS}/w1")
        await poll(lambda: em.get(f"{GROUP}/v1", "widgets", "ns", "w1") is None, 20, "deletion")
        assert handled == ["w1", "deleted w1"]

        events = await poll(
            lambda: [
                e
                for e in em.list_objects("v1", "events", "ns")
                if e["involvedObject"]["name"] == "w1"
            ],
            20,
            "Kopf's events",
        )
        assert any("succeeded" in e["message"] for e in events)
        assert len({e["metadata"]["name"] for e in events}) == len(events) >= 2
        assert all(re.fullmatch(r"kopf-event-[a-z0-9]{5}", e["metadata"]["name"]) for e in events)
        json_patches = [r for r in em.write_requests() if r.headers["Content-Type"] == JSON_PATCH]
        tests = [op for r in json_patches for op in json.loads(r.body) if op["op"] == "test"]
        assert tests and all(op["path"] == "/metadata/resourceVersion" for op in tests)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
    assert not thread.is_alive()
    assert not errors


async def test_dry_run_all_answers_the_write_and_stores_nothing(em: ApiServerEmulator) -> None:
    stored = await create(em, WIDGETS, widget("kept", color="red"))
    rv = stored["metadata"]["resourceVersion"]
    watch = await open_watch(em, WIDGETS, resourceVersion=rv)
    try:
        status, created = await call(em, "POST", WIDGETS, widget("ghost"), dryRun="All")
        assert status == 201 and created["spec"]["size"] == 3  # defaulted, validated
        assert "resourceVersion" not in created["metadata"] and created["metadata"]["uid"]
        status, patched = await call(
            em, "PATCH", f"{WIDGETS}/kept", {"spec": {"color": "blue"}}, MERGE_PATCH,
            dryRun="All",
        )  # fmt: skip
        assert status == 200 and patched["spec"]["color"] == "blue"
        assert patched["metadata"]["resourceVersion"] == rv
        status, _ = await call(em, "DELETE", f"{WIDGETS}/kept", dryRun="All")
        assert status == 200
        # An invalid write is refused as it would be without dryRun.
        status, refused = await call(
            em, "PATCH", f"{WIDGETS}/kept", {"spec": {"size": "big"}}, MERGE_PATCH,
            dryRun="All",
        )  # fmt: skip
        assert status == 422, refused
        status, bad = await call(em, "POST", WIDGETS, widget("x"), dryRun="yes")
        assert status == 422 and bad["details"]["causes"][0]["field"] == "dryRun", bad
        # Nothing changed, and no watcher heard of any of it.
        assert em.get(f"{GROUP}/v1", "widgets", "ns", "ghost") is None
        kept = em.get(f"{GROUP}/v1", "widgets", "ns", "kept")
        assert kept is not None and kept["spec"]["color"] == "red"
        assert kept["metadata"]["resourceVersion"] == rv
        await create(em, WIDGETS, widget("later"))
        watched = Watch(watch)
        assert summary(await watched.next()) == ("ADDED", "later")
    finally:
        watch.close()


async def test_end_watches_ends_every_open_stream(em: ApiServerEmulator) -> None:
    """Before the servers close (the demo's Ctrl-C): a watch nobody reads any more would
    hold the server's shutdown until its next event."""
    watch = await open_watch(em, WIDGETS)
    try:
        em.end_watches()
        assert await asyncio.wait_for(watch.content.read(), 5) == b""
    finally:
        watch.close()
