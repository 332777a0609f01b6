"""The emulator's other verbs and stores, over real HTTP, as kube-apiserver 1.32 answers them:
Events in one store for both API groups (and their field selectors), deletecollection, the
``/scale`` subresource, server-side apply with ``managedFields``, request media types
(protobuf and YAML bodies, 415) and the shapes of error Status bodies.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
import yaml

from fixtures.emulated import call, create
from mcp_remediator.testing import apply as ssa
from mcp_remediator.testing import authz
from mcp_remediator.testing.emulator import ApiServerEmulator

GROUP = "test.example.com"
CONFIGMAPS = "/api/v1/namespaces/ns/configmaps"
DEPLOYMENTS = "/apis/apps/v1/namespaces/ns/deployments"
STATEFULSETS = "/apis/apps/v1/namespaces/ns/statefulsets"
CORE_EVENTS = "/api/v1/namespaces/ns/events"
EVENTS_V1 = "/apis/events.k8s.io/v1/namespaces/ns/events"
GADGETS = f"/apis/{GROUP}/v1/namespaces/ns/gadgets"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"

GADGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"gadgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.size",
                        "statusReplicasPath": ".status.size",
                        "labelSelectorPath": ".status.selector",
                    },
                },
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "size": {"type": "integer"},
                                    "owner": {"type": "string"},
                                    "parts": {
                                        "type": "array",
                                        "x-kubernetes-list-type": "map",
                                        "x-kubernetes-list-map-keys": ["name"],
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "name": {"type": "string"},
                                                "count": {"type": "integer"},
                                            },
                                        },
                                    },
                                    "tags": {"type": "array", "items": {"type": "string"}},
                                },
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
async def em() -> AsyncIterator[ApiServerEmulator]:
    async with ApiServerEmulator() as emulator, kmock.Server(emulator):
        emulator.register_builtins()
        emulator.register_crd(GADGET_CRD)
        yield emulator


def core_event(name: str, about: str, **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": about,
            "namespace": "ns",
            "uid": f"uid-{about}",
        },
        "reason": "Started",
        "message": f"about {about}",
        "type": "Normal",
        "source": {"component": "mcp-remediator"},
        "reportingComponent": "mcp-remediator",
        "firstTimestamp": "2025-01-01T00:00:00Z",
        "lastTimestamp": "2025-01-01T00:00:01Z",
        "count": 2,
        **fields,
    }


def new_event(name: str, about: str, **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": name},
        "regarding": {"apiVersion": "v1", "kind": "Secret", "name": about, "namespace": "ns"},
        "reason": "Rotated",
        "note": f"about {about}",
        "type": "Warning",
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "example.com/rotator",
        "reportingInstance": "rotator-1",
        "action": "Rotate",
        **fields,
    }


def names(listed: dict[str, Any]) -> list[str]:
    return [item["metadata"]["name"] for item in listed["items"]]


# --- Events -----------------------------------------------------------------------------------


async def test_an_event_written_in_one_shape_is_listed_in_both(em: ApiServerEmulator) -> None:
    await create(em, CORE_EVENTS, core_event("old", "settings"))
    await create(em, EVENTS_V1, new_event("new", "token"))

    status, listed = await call(em, "GET", EVENTS_V1)
    assert status == 200 and listed["kind"] == "EventList"
    by_name = {item["metadata"]["name"]: item for item in listed["items"]}
    old = by_name["old"]
    assert old["apiVersion"] == "events.k8s.io/v1"
    assert old["regarding"]["name"] == "settings" and "involvedObject" not in old
    assert old["note"] == "about settings" and "message" not in old
    assert old["deprecatedSource"] == {"component": "mcp-remediator"}
    assert old["reportingController"] == "mcp-remediator"
    assert (old["deprecatedFirstTimestamp"], old["deprecatedLastTimestamp"]) == (
        "2025-01-01T00:00:00Z",
        "2025-01-01T00:00:01Z",
    )
    assert old["deprecatedCount"] == 2

    status, listed = await call(em, "GET", CORE_EVENTS)
    core = {item["metadata"]["name"]: item for item in listed["items"]}["new"]
    assert core["apiVersion"] == "v1"
    assert core["involvedObject"]["name"] == "token" and core["message"] == "about token"
    assert core["reportingComponent"] == "example.com/rotator"
    assert (core["action"], core["reportingInstance"]) == ("Rotate", "rotator-1")
    # One object: the same uid and resourceVersion through both groups.
    status, fetched = await call(em, "GET", f"{EVENTS_V1}/new")
    assert fetched["metadata"]["uid"] == core["metadata"]["uid"]
    assert fetched["metadata"]["resourceVersion"] == core["metadata"]["resourceVersion"]


async def test_writes_through_events_k8s_io_change_the_core_event(em: ApiServerEmulator) -> None:
    await create(em, CORE_EVENTS, core_event("e", "settings"))
    status, patched = await call(em, "PATCH", f"{EVENTS_V1}/e", {"note": "changed"}, MERGE)
    assert status == 200 and patched["note"] == "changed"
    status, core = await call(em, "GET", f"{CORE_EVENTS}/e")
    assert core["message"] == "changed" and "note" not in core


async def test_a_core_watch_sees_events_written_as_events_k8s_io(em: ApiServerEmulator) -> None:
    response = await em.get(CORE_EVENTS, params={"watch": "true"})
    try:
        await create(em, EVENTS_V1, new_event("watched", "token"))
        line = await asyncio.wait_for(response.content.readline(), 5)
        event = json.loads(line)
        assert event["type"] == "ADDED"
        assert event["object"]["apiVersion"] == "v1"
        assert event["object"]["involvedObject"]["name"] == "token"
    finally:
        response.close()


@pytest.mark.parametrize(
    ("url", "selector", "expected"),
    [
        (CORE_EVENTS, "involvedObject.name=settings", ["a"]),
        (CORE_EVENTS, "involvedObject.kind=Secret", ["c"]),
        (CORE_EVENTS, "involvedObject.uid=uid-other", ["b"]),
        (CORE_EVENTS, "involvedObject.namespace=ns,involvedObject.apiVersion=v1", ["a", "b", "c"]),
        (CORE_EVENTS, "reason=Rotated", ["c"]),
        (CORE_EVENTS, "type!=Normal", ["c"]),
        (CORE_EVENTS, "source=mcp-remediator", ["a", "b"]),
        (CORE_EVENTS, "reportingComponent=example.com/rotator", ["c"]),
        (CORE_EVENTS, "involvedObject.fieldPath=,involvedObject.resourceVersion=", ["a", "b", "c"]),
        (CORE_EVENTS, "metadata.name=b", ["b"]),
        (EVENTS_V1, "regarding.name=settings", ["a"]),
        (EVENTS_V1, "regarding.kind=Secret,type=Warning", ["c"]),
        (EVENTS_V1, "reportingController=mcp-remediator", ["a", "b"]),
        # events.k8s.io's "source": the deprecated source, else the reporting controller.
        (EVENTS_V1, "source=example.com/rotator", ["c"]),
        (EVENTS_V1, "reason=Started,regarding.uid=uid-settings", ["a"]),
    ],
)
async def test_event_field_selectors(
    em: ApiServerEmulator, url: str, selector: str, expected: list[str]
) -> None:
    await create(em, CORE_EVENTS, core_event("a", "settings"))
    await create(em, CORE_EVENTS, core_event("b", "other"))
    await create(em, EVENTS_V1, new_event("c", "token"))
    status, listed = await call(em, "GET", url, fieldSelector=selector)
    assert status == 200, listed
    assert names(listed) == expected


@pytest.mark.parametrize(
    ("url", "label"),
    [
        (CORE_EVENTS, "regarding.name"),
        (CORE_EVENTS, "note"),
        (EVENTS_V1, "involvedObject.name"),
        (EVENTS_V1, "reportingComponent"),
        (CONFIGMAPS, "data.a"),
    ],
)
async def test_unknown_field_labels_are_400(em: ApiServerEmulator, url: str, label: str) -> None:
    status, error = await call(em, "GET", url, fieldSelector=f"{label}=x")
    assert status == 400
    assert error == {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": f"field label not supported: {label}",
        "reason": "BadRequest",
        "code": 400,
    }


async def test_a_watch_selects_events_by_involved_object(em: ApiServerEmulator) -> None:
    response = await em.get(
        CORE_EVENTS, params={"watch": "true", "fieldSelector": "involvedObject.name=token"}
    )
    try:
        await create(em, CORE_EVENTS, core_event("skipped", "settings"))
        await create(em, EVENTS_V1, new_event("seen", "token"))
        line = await asyncio.wait_for(response.content.readline(), 5)
        assert json.loads(line)["object"]["metadata"]["name"] == "seen"
    finally:
        response.close()


async def test_field_selectors_of_other_kinds(em: ApiServerEmulator) -> None:
    pods = "/api/v1/namespaces/ns/pods"
    await create(em, pods, {"metadata": {"name": "idle"}, "spec": {"nodeName": "n1"}})
    await create(em, pods, {"metadata": {"name": "busy"}, "spec": {"hostNetwork": True}})
    await call(em, "PATCH", f"{pods}/busy/status", {"status": {"phase": "Running"}}, MERGE)
    status, listed = await call(em, "GET", pods, fieldSelector="status.phase=Running")
    assert names(listed) == ["busy"]
    status, listed = await call(em, "GET", pods, fieldSelector="spec.hostNetwork=false")
    assert names(listed) == ["idle"]
    status, listed = await call(em, "GET", pods, fieldSelector="spec.nodeName=n1")
    assert names(listed) == ["idle"]
    secrets = "/api/v1/namespaces/ns/secrets"
    await create(em, secrets, {"metadata": {"name": "tls"}, "type": "kubernetes.io/tls"})
    await create(em, secrets, {"metadata": {"name": "plain"}, "type": "Opaque"})
    status, listed = await call(em, "GET", secrets, fieldSelector="type=kubernetes.io/tls")
    assert names(listed) == ["tls"]
    status, error = await call(em, "GET", secrets, fieldSelector="status.phase=x")
    assert (status, error["message"]) == (400, "field label not supported: status.phase")


async def test_a_crd_version_selects_by_its_selectable_fields(em: ApiServerEmulator) -> None:
    crd = json.loads(json.dumps(GADGET_CRD))
    crd["spec"]["versions"][0]["selectableFields"] = [{"jsonPath": ".spec.owner"}]
    em.register_crd(crd)
    await create(em, GADGETS, {"metadata": {"name": "a"}, "spec": {"owner": "ann"}})
    await create(em, GADGETS, {"metadata": {"name": "b"}, "spec": {"owner": "bob"}})
    status, listed = await call(em, "GET", GADGETS, fieldSelector="spec.owner=bob")
    assert names(listed) == ["b"]
    status, error = await call(em, "GET", GADGETS, fieldSelector="spec.size=1")
    assert status == 400


# --- deletecollection ---------------------------------------------------------------------------


async def test_deletecollection_deletes_what_the_selectors_list(em: ApiServerEmulator) -> None:
    for name, labels in (("a", {"app": "x"}), ("b", {"app": "x"}), ("c", {"app": "y"})):
        await create(em, CONFIGMAPS, {"metadata": {"name": name, "labels": labels}})
    held = await create(
        em,
        CONFIGMAPS,
        {"metadata": {"name": "held", "labels": {"app": "x"}, "finalizers": ["example.com/f"]}},
    )
    since = held["metadata"]["resourceVersion"]
    response = await em.get(CONFIGMAPS, params={"watch": "true", "resourceVersion": since})
    try:
        status, answer = await call(em, "DELETE", CONFIGMAPS, labelSelector="app=x")
        assert status == 200
        assert answer["kind"] == "ConfigMapList" and answer["apiVersion"] == "v1"
        assert names(answer) == ["a", "b", "held"]
        types = []
        for _ in range(3):
            line = await asyncio.wait_for(response.content.readline(), 5)
            event = json.loads(line)
            types.append((event["type"], event["object"]["metadata"]["name"]))
        assert types == [("DELETED", "a"), ("DELETED", "b"), ("MODIFIED", "held")]
    finally:
        response.close()
    status, listed = await call(em, "GET", CONFIGMAPS)
    assert names(listed) == ["c", "held"]
    held = listed["items"][1]
    assert held["metadata"]["deletionTimestamp"]  # finalizers honoured

    status, answer = await call(em, "DELETE", CONFIGMAPS, fieldSelector="metadata.name=c")
    assert names(answer) == ["c"]
    assert names((await call(em, "GET", CONFIGMAPS))[1]) == ["held"]


async def test_deletecollection_of_a_namespaced_kind_needs_a_namespace(
    em: ApiServerEmulator,
) -> None:
    status, error = await call(em, "DELETE", "/api/v1/configmaps")
    assert (status, error["reason"]) == (405, "MethodNotAllowed")


async def test_deletecollection_is_authorized_as_its_own_verb(em: ApiServerEmulator) -> None:
    em.enable_auth()
    em.apply(
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "deleter", "namespace": "ns"},
                "rules": [
                    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["delete", "list"]}
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "deleter", "namespace": "ns"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "deleter",
                },
                "subjects": [{"kind": "User", "name": "dana"}],
            },
        ]
    )
    em.add_token("dana-token", "dana")
    em.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "ns"}})
    auth = {"Authorization": "Bearer dana-token"}
    status, error = await call(em, "DELETE", CONFIGMAPS, headers=auth)
    assert status == 403 and "cannot deletecollection resource" in error["message"]
    assert em.get("v1", "configmaps", "ns", "a") is not None
    status, _ = await call(em, "DELETE", f"{CONFIGMAPS}/a", headers=auth)
    assert status == 200


# --- /scale -------------------------------------------------------------------------------------


def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {
                "matchLabels": {"app": name, "tier": "web"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["b", "a"]}],
            },
            "template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}},
        },
    }


async def test_deployment_scale_reads_and_writes_replicas(em: ApiServerEmulator) -> None:
    made = await create(em, DEPLOYMENTS, deployment("web"))
    status, got = await call(em, "GET", f"{DEPLOYMENTS}/web/scale")
    assert status == 200
    assert got == {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": "web",
            "namespace": "ns",
            "uid": made["metadata"]["uid"],
            "resourceVersion": made["metadata"]["resourceVersion"],
            "creationTimestamp": made["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": 2},
        "status": {"replicas": 0, "selector": "app=web,env in (a,b),tier=web"},
    }
    status, patched = await call(
        em, "PATCH", f"{DEPLOYMENTS}/web/scale", {"spec": {"replicas": 5}}, MERGE
    )
    assert status == 200 and patched["spec"]["replicas"] == 5
    status, obj = await call(em, "GET", f"{DEPLOYMENTS}/web")
    assert obj["spec"]["replicas"] == 5 and obj["metadata"]["generation"] == 2
    assert patched["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]

    put = {**got, "spec": {"replicas": 1}}
    status, error = await call(em, "PUT", f"{DEPLOYMENTS}/web/scale", put)
    assert (status, error["reason"]) == (409, "Conflict")  # the Scale's resourceVersion is old
    put["metadata"] = {**got["metadata"], "resourceVersion": obj["metadata"]["resourceVersion"]}
    status, replaced = await call(em, "PUT", f"{DEPLOYMENTS}/web/scale", put)
    assert status == 200 and replaced["spec"]["replicas"] == 1

    status, error = await call(
        em, "PATCH", f"{DEPLOYMENTS}/web/scale", {"spec": {"replicas": -1}}, MERGE
    )
    assert (status, error["reason"]) == (422, "Invalid")


async def test_statefulset_and_custom_resource_scales(em: ApiServerEmulator) -> None:
    await create(
        em,
        STATEFULSETS,
        {
            "metadata": {"name": "db"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"a": "b"}}},
        },
    )
    status, got = await call(em, "GET", f"{STATEFULSETS}/db/scale")
    assert (got["spec"], got["status"]) == ({"replicas": 3}, {"replicas": 0, "selector": "a=b"})

    await create(em, GADGETS, {"metadata": {"name": "g"}, "spec": {"size": 2}})
    await call(
        em,
        "PATCH",
        f"{GADGETS}/g/status",
        {"status": {"size": 2, "selector": "app=g"}},
        MERGE,
    )
    status, got = await call(em, "GET", f"{GADGETS}/g/scale")
    assert (got["spec"], got["status"]) == ({"replicas": 2}, {"replicas": 2, "selector": "app=g"})
    status, patched = await call(
        em, "PATCH", f"{GADGETS}/g/scale", {"spec": {"replicas": 4}}, MERGE
    )
    assert status == 200 and patched["spec"]["replicas"] == 4
    assert em.get(f"{GROUP}/v1", "gadgets", "ns", "g")["spec"]["size"] == 4  # type: ignore[index]


async def test_only_scalable_kinds_have_a_scale(em: ApiServerEmulator) -> None:
    await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})
    status, error = await call(em, "GET", f"{CONFIGMAPS}/a/scale")
    assert (status, error["reason"]) == (404, "NotFound")
    status, discovery = await call(em, "GET", "/apis/apps/v1")
    by_name = {entry["name"]: entry for entry in discovery["resources"]}
    scale_entry = by_name["deployments/scale"]
    assert (scale_entry["group"], scale_entry["version"], scale_entry["kind"]) == (
        "autoscaling",
        "v1",
        "Scale",
    )
    assert "daemonsets/scale" not in by_name
    assert "deletecollection" in by_name["deployments"]["verbs"]
    status, discovery = await call(em, "GET", f"/apis/{GROUP}/v1")
    assert "gadgets/scale" in {entry["name"] for entry in discovery["resources"]}


# --- media types --------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def protobuf_body(api_version: str, kind: str, message: bytes) -> bytes:
    type_meta = _field(1, api_version.encode()) + _field(2, kind.encode())
    return b"k8s\x00" + _field(1, type_meta) + _field(2, message)


async def test_protobuf_bodies_of_known_kinds_are_read(em: ApiServerEmulator) -> None:
    meta = _field(1, b"from-proto") + _field(3, b"") + _field(11, _field(1, b"a") + _field(2, b"b"))
    data = _field(2, _field(1, b"key") + _field(2, b"value")) + _field(2, _field(1, b"empty"))
    body = protobuf_body("v1", "ConfigMap", _field(1, meta) + data)
    status, made = await call(
        em, "POST", CONFIGMAPS, raw=body, content_type="application/vnd.kubernetes.protobuf"
    )
    assert status == 201, made
    assert made["metadata"]["labels"] == {"a": "b"}
    assert made["data"] == {"key": "value", "empty": ""}


async def test_unreadable_bodies_are_415(em: ApiServerEmulator) -> None:
    body = protobuf_body("v1", "Pod", _field(1, _field(1, b"p")))
    status, error = await call(
        em,
        "POST",
        "/api/v1/namespaces/ns/pods",
        raw=body,
        content_type="application/vnd.kubernetes.protobuf",
    )
    assert status == 415
    assert error == {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": "the body of the request was in an unknown format - accepted media types"
        " include: application/json, application/yaml",
        "reason": "UnsupportedMediaType",
        "code": 415,
    }
    status, error = await call(em, "POST", CONFIGMAPS, raw="a=b", content_type="text/plain")
    assert status == 415
    await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})
    status, error = await call(em, "PATCH", f"{CONFIGMAPS}/a", {}, "text/plain")
    assert status == 415 and error["message"].endswith(
        "include: application/json-patch+json, application/merge-patch+json,"
        " application/strategic-merge-patch+json, application/apply-patch+yaml"
    )
    await create(em, GADGETS, {"metadata": {"name": "g"}})
    status, error = await call(
        em, "PATCH", f"{GADGETS}/g", {}, "application/strategic-merge-patch+json"
    )
    assert status == 415 and "strategic" not in error["message"]


async def test_yaml_bodies_are_read(em: ApiServerEmulator) -> None:
    text = yaml.safe_dump({"metadata": {"name": "from-yaml"}, "data": {"a": "1"}})
    status, made = await call(em, "POST", CONFIGMAPS, raw=text, content_type="application/yaml")
    assert status == 201 and made["data"] == {"a": "1"}


# --- server-side apply --------------------------------------------------------------------------


def applied_cm(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "ns", "labels": {"team": "a"}},
        "data": data,
    }


async def apply(
    em: ApiServerEmulator, url: str, body: dict[str, Any], manager: str, **params: str
) -> tuple[int, Any]:
    return await call(em, "PATCH", url, body, APPLY, fieldManager=manager, **params)


def managers(obj: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["manager"], e["operation"]) for e in obj["metadata"].get("managedFields", [])]


def fields_of(obj: dict[str, Any], manager: str, operation: str = "Apply") -> dict[str, Any]:
    for entry in obj["metadata"]["managedFields"]:
        if (entry["manager"], entry["operation"]) == (manager, operation):
            assert entry["fieldsType"] == "FieldsV1"
            fields: dict[str, Any] = entry["fieldsV1"]
            return fields
    raise AssertionError(f"no {operation} entry of {manager}")


async def test_apply_creates_and_then_owns_exactly_the_applied_fields(
    em: ApiServerEmulator,
) -> None:
    status, made = await apply(em, f"{CONFIGMAPS}/cfg", applied_cm(one="1", two="2"), "tool")
    assert status == 201, made
    assert made["data"] == {"one": "1", "two": "2"}
    assert fields_of(made, "tool") == {
        "f:data": {"f:one": {}, "f:two": {}},
        "f:metadata": {"f:labels": {"f:team": {}}},
    }
    entry = made["metadata"]["managedFields"][0]
    assert (entry["apiVersion"], entry["operation"]) == ("v1", "Apply") and entry["time"]

    # Someone else adds a key: theirs is an Update entry, and survives the next apply.
    status, _ = await call(
        em, "PATCH", f"{CONFIGMAPS}/cfg", {"data": {"three": "3"}}, MERGE, fieldManager="editor"
    )
    assert status == 200
    status, again = await apply(em, f"{CONFIGMAPS}/cfg", applied_cm(one="1"), "tool")
    assert status == 200
    assert again["data"] == {"one": "1", "three": "3"}  # "two" was the tool's only: gone
    assert sorted(managers(again)) == [("editor", "Update"), ("tool", "Apply")]
    assert fields_of(again, "editor", "Update") == {"f:data": {"f:three": {}}}

    # The same apply once more changes nothing: same resourceVersion.
    status, same = await apply(em, f"{CONFIGMAPS}/cfg", applied_cm(one="1"), "tool")
    assert same["metadata"]["resourceVersion"] == again["metadata"]["resourceVersion"]


async def test_apply_conflicts_with_another_manager_unless_forced(em: ApiServerEmulator) -> None:
    await apply(em, f"{CONFIGMAPS}/cfg", applied_cm(one="1"), "first")
    status, shared = await apply(em, f"{CONFIGMAPS}/cfg", applied_cm(one="1"), "second")
    assert status == 200  # the same value: both own it
    assert "f:one" in fields_of(shared, "first")["f:data"]
    assert "f:one" in fields_of(shared, "second")["f:data"]

    status, error = await apply(em, f"{CONFIGMAPS}/cfg", applied_cm(one="2"), "third")
    assert status == 409 and error["reason"] == "Conflict"
    assert error["message"] == (
        'Apply failed with 2 conflicts: conflicts with "first":\n- .data.one\n'
        'conflicts with "second":\n- .data.one'
    )
    assert error["details"]["causes"][0] == {
        "type": "FieldManagerConflict",
        "message": 'conflict with "first"',
        "field": ".data.one",
    }
    status, forced = await apply(
        em, f"{CONFIGMAPS}/cfg", applied_cm(one="2"), "third", force="true"
    )
    assert status == 200 and forced["data"]["one"] == "2"
    assert "f:data" not in fields_of(forced, "first")  # taken over
    assert "f:one" in fields_of(forced, "third")["f:data"]


async def test_apply_conflict_with_an_update_names_its_version_and_time(
    em: ApiServerEmulator,
) -> None:
    await create(em, DEPLOYMENTS, {**deployment("web"), "metadata": {"name": "web"}})
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 3},
    }
    status, error = await apply(em, f"{DEPLOYMENTS}/web", body, "kubectl")
    assert status == 409
    made = em.get("apps/v1", "deployments", "ns", "web")
    assert made is not None
    stamp = made["metadata"]["managedFields"][0]["time"]
    manager = made["metadata"]["managedFields"][0]["manager"]
    assert error["message"] == (
        f'Apply failed with 1 conflict: conflict with "{manager}" using apps/v1 at {stamp}:'
        " .spec.replicas"
    )


async def test_apply_merges_keyed_lists_item_by_item(em: ApiServerEmulator) -> None:
    def with_container(name: str, image: str, env: str) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": name, "image": image, "env": [{"name": env, "value": "1"}]}
                        ]
                    }
                }
            },
        }

    await apply(em, f"{DEPLOYMENTS}/web", with_container("app", "app:1", "A"), "one")
    status, both = await apply(
        em, f"{DEPLOYMENTS}/web", with_container("side", "side:1", "B"), "two"
    )
    assert status == 200, both
    containers = both["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "side"]
    owned = fields_of(both, "two")["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert owned == {
        'k:{"name":"side"}': {
            ".": {},
            "f:env": {'k:{"name":"B"}': {".": {}, "f:name": {}, "f:value": {}}},
            "f:image": {},
            "f:name": {},
        }
    }
    # "one" stops applying its container: it goes, "two"'s stays.
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}
    status, after = await apply(em, f"{DEPLOYMENTS}/web", body, "one")
    assert [c["name"] for c in after["spec"]["template"]["spec"]["containers"]] == ["side"]


async def test_apply_refuses_a_keyed_item_without_its_key(em: ApiServerEmulator) -> None:
    """An item that omits its key fields could stand for any item: the real server refuses
    it, where a merge would overwrite the first container."""
    containers: list[dict[str, Any]] = [{"name": "web", "image": "nginx"}]
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": containers}}}}  # fmt: skip
    status, _ = await apply(em, f"{DEPLOYMENTS}/web", body, "one")
    assert status == 201
    containers.append({"image": "sidecar"})
    status, error = await apply(em, f"{DEPLOYMENTS}/web", body, "one")
    assert status == 400, error
    assert (
        'element 1: associative list with keys has an element that omits key field "name"'
        in (error["message"])
    )
    stored = em.get("apps/v1", "deployments", "ns", "web")
    assert stored is not None
    assert stored["spec"]["template"]["spec"]["containers"] == [{"name": "web", "image": "nginx"}]


async def test_apply_of_an_empty_map_conflicts_with_nobody(em: ApiServerEmulator) -> None:
    await create(em, CONFIGMAPS, {"metadata": {"name": "cfg", "labels": {"a": "b"}}})
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "labels": {}}}
    status, applied = await apply(em, f"{CONFIGMAPS}/cfg", body, "m1")
    assert status == 200, applied
    assert applied["metadata"]["labels"] == {"a": "b"}


async def test_apply_refuses_a_body_namespace_other_than_the_urls(em: ApiServerEmulator) -> None:
    body = applied_cm(a="1")
    body["metadata"]["namespace"] = "other"
    status, error = await apply(em, f"{CONFIGMAPS}/cfg", body, "m1")
    assert status == 400 and "namespace" in error["message"], error
    assert em.get("v1", "configmaps", "ns", "cfg") is None


async def test_apply_to_a_custom_resource_follows_its_list_types(em: ApiServerEmulator) -> None:
    def gadget(**spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/v1",
            "kind": "Gadget",
            "metadata": {"name": "g"},
            "spec": spec,
        }

    await apply(em, f"{GADGETS}/g", gadget(parts=[{"name": "a", "count": 1}], tags=["x"]), "one")
    status, obj = await apply(
        em,
        f"{GADGETS}/g",
        gadget(parts=[{"name": "b", "count": 2}], tags=["y"]),
        "two",
        force="true",
    )
    assert status == 200, obj
    assert obj["spec"]["parts"] == [{"name": "a", "count": 1}, {"name": "b", "count": 2}]
    assert obj["spec"]["tags"] == ["y"]  # atomic: replaced, and now "two"'s
    assert "f:tags" not in fields_of(obj, "one")["f:spec"]


async def test_apply_ignores_status_on_the_main_resource(em: ApiServerEmulator) -> None:
    body = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gadget",
        "metadata": {"name": "g"},
        "spec": {"size": 1},
        "status": {"size": 9},
    }
    status, made = await apply(em, f"{GADGETS}/g", body, "tool")
    assert status == 201 and "status" not in made
    assert "f:status" not in fields_of(made, "tool")


async def test_apply_to_status_applies_the_status_alone(em: ApiServerEmulator) -> None:
    await create(em, GADGETS, {"metadata": {"name": "g"}, "spec": {"size": 1}})
    body = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gadget",
        "metadata": {"name": "g"},
        "spec": {"size": 7},
        "status": {"size": 1},
    }
    status, obj = await apply(em, f"{GADGETS}/g/status", body, "controller")
    assert status == 200, obj
    assert (obj["spec"], obj["status"]) == ({"size": 1}, {"size": 1})
    [entry] = [e for e in obj["metadata"]["managedFields"] if e["manager"] == "controller"]
    assert entry["subresource"] == "status"
    assert entry["fieldsV1"] == {"f:status": {"f:size": {}}}


async def test_apply_needs_a_field_manager_and_force_needs_an_apply(
    em: ApiServerEmulator,
) -> None:
    status, error = await call(em, "PATCH", f"{CONFIGMAPS}/cfg", applied_cm(), APPLY)
    assert status == 422
    assert error["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value:'
        " is required for apply patch"
    )
    assert error["details"]["kind"] == "PatchOptions"
    await create(em, CONFIGMAPS, {"metadata": {"name": "cfg"}})
    status, error = await call(em, "PATCH", f"{CONFIGMAPS}/cfg", {}, MERGE, force="true")
    assert status == 422
    assert error["message"].endswith("force: Forbidden: may not be specified for non-apply patch")
    status, error = await apply(em, f"{CONFIGMAPS}/cfg", {**applied_cm(), "kind": "Secret"}, "tool")
    assert (status, error["reason"]) == (400, "BadRequest")


async def test_updates_record_their_field_manager(em: ApiServerEmulator) -> None:
    status, made = await call(
        em,
        "POST",
        CONFIGMAPS,
        {"metadata": {"name": "a"}, "data": {"x": "1"}},
        headers={"User-Agent": "my-client/1.0 (linux)"},
    )
    assert managers(made) == [("my-client", "Update")]
    assert fields_of(made, "my-client", "Update") == {"f:data": {".": {}, "f:x": {}}}
    status, patched = await call(
        em, "PATCH", f"{CONFIGMAPS}/a", {"data": {"x": "2"}}, MERGE, fieldManager="other"
    )
    # "other" took x over; the creator keeps the map it added.
    assert managers(patched) == [("my-client", "Update"), ("other", "Update")]
    assert fields_of(patched, "my-client", "Update") == {"f:data": {}}
    assert fields_of(patched, "other", "Update") == {"f:data": {"f:x": {}}}
    # A write that changes nothing keeps the resourceVersion and the entries' times.
    status, again = await call(
        em, "PATCH", f"{CONFIGMAPS}/a", {"data": {"x": "2"}}, MERGE, fieldManager="third"
    )
    assert again["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]
    assert again["metadata"]["managedFields"] == patched["metadata"]["managedFields"]


def test_fields_v1_round_trips() -> None:
    paths = {
        ("f:data", "f:a"),
        ("f:spec", "f:containers", 'k:{"name":"web"}'),
        ("f:spec", "f:containers", 'k:{"name":"web"}', "f:image"),
        ("f:metadata", "f:finalizers", 'v:"x"'),
    }
    tree = ssa.to_fields_v1(paths)
    assert tree["f:spec"]["f:containers"]['k:{"name":"web"}'] == {".": {}, "f:image": {}}
    assert ssa.from_fields_v1(tree) == paths
    assert ssa.path_text(("f:spec", "f:containers", 'k:{"name":"web"}', "f:image")) == (
        '.spec.containers[name="web"].image'
    )
    assert ssa.manager_of(None, "kubectl/v1.32.0 (linux/amd64)") == "kubectl"


# --- error Status bodies ------------------------------------------------------------------------


async def test_error_bodies_are_shaped_as_kube_apiserver_answers(em: ApiServerEmulator) -> None:
    status, error = await call(em, "GET", f"{CONFIGMAPS}/missing")
    assert (status, error) == (
        404,
        {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": 'configmaps "missing" not found',
            "reason": "NotFound",
            "details": {"name": "missing", "kind": "configmaps"},
            "code": 404,
        },
    )
    status, error = await call(em, "GET", f"{DEPLOYMENTS}/missing")
    assert error["details"] == {"name": "missing", "group": "apps", "kind": "deployments"}
    assert error["message"] == 'deployments.apps "missing" not found'
    await create(em, CONFIGMAPS, {"metadata": {"name": "a"}})
    status, error = await call(em, "POST", CONFIGMAPS, {"metadata": {"name": "a"}})
    assert (status, error["reason"], error["details"]) == (
        409,
        "AlreadyExists",
        {"name": "a", "kind": "configmaps"},
    )
    status, error = await call(em, "DELETE", f"{DEPLOYMENTS}/web/status")
    assert (status, error["reason"], error["details"]) == (405, "MethodNotAllowed", {})
    status, error = await call(em, "GET", "/apis/nope.io/v1/things")
    assert (status, error["details"]) == (404, {})
    status, error = await call(em, "POST", f"{CONFIGMAPS}/a", {"metadata": {"name": "b"}})
    assert (status, error["reason"], error["details"]) == (405, "MethodNotAllowed", {})
    status, error = await call(em, "PATCH", CONFIGMAPS, {}, MERGE)
    assert (status, error["reason"]) == (405, "MethodNotAllowed")
    status, error = await call(em, "POST", "/apis/nope.io/v1/namespaces/ns/things/x", {})
    assert (status, error["reason"]) == (404, "NotFound")
    status, error = await call(em, "GET", CONFIGMAPS, labelSelector="a in (")
    assert status == 400 and "details" not in error and error["reason"] == "BadRequest"


async def test_auth_kinds_stay_served(em: ApiServerEmulator) -> None:
    # The review kinds answer their create; a deletecollection of them is not allowed.
    status, _ = await call(
        em, "DELETE", f"/apis/{authz.AUTHORIZATION_GROUP}/v1/subjectaccessreviews"
    )
    assert status == 405
