"""The emulated API server's Table and OpenAPI builders (testing/tables.py, testing/openapi.py),
without a server: what kubectl reads from them.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import pathlib
from typing import Any

import pytest
import yaml

from mcp_remediator.testing import openapi, tables

ROOT = pathlib.Path(__file__).parents[2]
NOW = datetime.datetime(2026, 1, 2, 12, 0, 0, tzinfo=datetime.UTC)


def crd_version(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / f"mcp.dese.ai_{name}.yaml").read_text(encoding="utf-8"))
    version: dict[str, Any] = crd["spec"]["versions"][0]
    return version


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;"
            "g=meta.k8s.io,application/json",
            tables.Conversion("Table", "v1"),
        ),
        (
            "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
            tables.Conversion("Table", "v1beta1"),
        ),
        (
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            tables.Conversion("PartialObjectMetadata", "v1"),
        ),
        ("application/json", None),
        ("application/json, */*", None),
        ("", None),
        # An unknown conversion is skipped for the next media range.
        ("application/json;as=Table;v=v9;g=meta.k8s.io,application/json", None),
        ("application/vnd.kubernetes.protobuf,application/json", None),
    ],
)
def test_accept_negotiation(accept: str, expected: tables.Conversion | None) -> None:
    assert tables.conversion(accept) == expected


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"),
        (0, "0s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (10 * 3600, "10h"),
        (3 * 86400 + 3600, "3d1h"),
        (30 * 86400, "30d"),
        (3 * 365 * 86400 + 86400, "3y1d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_ages_are_shown_as_kubectl_shows_them(seconds: int, shown: str) -> None:
    assert tables.human_duration(seconds) == shown


@pytest.mark.parametrize(
    ("path", "found"),
    [
        (".spec.runbookRef.name", ["book"]),
        ('.status.conditions[?(@.type=="Valid")].status', ["True"]),
        (".status.conditions[*].type", ["Ready", "Valid"]),
        (".status.conditions[1].reason", ["Checked"]),
        (".metadata.labels['app.kubernetes.io/name']", ["web"]),
        ("{.spec.missing}", []),
    ],
)
def test_jsonpath_subset(path: str, found: list[Any]) -> None:
    obj = {
        "metadata": {"labels": {"app.kubernetes.io/name": "web"}},
        "spec": {"runbookRef": {"name": "book"}},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "Valid", "status": "True", "reason": "Checked"},
            ]
        },
    }
    assert tables.find(obj, path) == found


def test_crd_table_has_name_then_the_printer_columns() -> None:
    printer = tables.crd_printer(crd_version("mcpremediations")["additionalPrinterColumns"])
    obj = {
        "apiVersion": "mcp.dese.ai/v1alpha1",
        "kind": "McpRemediation",
        "metadata": {
            "name": "run",
            "namespace": "mcp",
            "resourceVersion": "7",
            "creationTimestamp": "2026-01-02T11:55:00Z",
        },
        "spec": {"runbookRef": {"name": "redis-down"}},
        "status": {"phase": "Running"},
    }
    body = tables.table(printer, [obj], list_meta={"resourceVersion": "9"}, now=NOW)
    assert body["kind"] == "Table" and body["apiVersion"] == "meta.k8s.io/v1"
    columns = [(c["name"], c["type"], c["priority"]) for c in body["columnDefinitions"]]
    assert columns == [
        ("Name", "string", 0),
        ("Runbook", "string", 0),
        ("Phase", "string", 0),
        ("Step", "string", 0),
        ("Reason", "string", 1),
        ("Age", "date", 0),
    ]
    assert body["columnDefinitions"][0]["format"] == "name"
    row = body["rows"][0]
    assert row["cells"] == ["run", "redis-down", "Running", None, None, "5m"]
    assert row["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }
    assert body["metadata"] == {"resourceVersion": "9"}


def test_crd_cells_are_typed_by_their_column() -> None:
    printer = tables.crd_printer(crd_version("mcprunbooks")["additionalPrinterColumns"])
    obj = {
        "metadata": {"name": "book", "creationTimestamp": "2026-01-01T12:00:00Z"},
        "spec": {"suspend": False},
        "status": {
            "conditions": [{"type": "Valid", "status": "True"}],
            "lastTriggeredAt": "2026-01-02T11:59:30Z",
        },
    }
    assert printer.row(obj, NOW) == ["book", "True", False, "30s", "24h"]
    # No printer columns: Name and Age.
    default = tables.crd_printer(None)
    assert [c.name for c in default.columns] == ["Name", "Age"]
    integer = tables.crd_printer([{"name": "N", "type": "integer", "jsonPath": ".spec.n"}])
    assert integer.row({"metadata": {"name": "x"}, "spec": {"n": 3.0}}, NOW) == ["x", 3]
    number = tables.crd_printer([{"name": "F", "type": "number", "jsonPath": ".spec.f"}])
    assert number.row({"metadata": {"name": "x"}, "spec": {"f": 2}}, NOW) == ["x", 2.0]
    date = tables.crd_printer([{"name": "D", "type": "date", "jsonPath": ".spec.d"}])
    assert date.row({"metadata": {"name": "x"}, "spec": {"d": "yesterday"}}, NOW) == [
        "x",
        "<invalid>",
    ]
    text = tables.crd_printer([{"name": "M", "type": "string", "jsonPath": ".spec"}])
    spec = {"b": None, "a": [1, "two", True]}
    assert text.row({"metadata": {"name": "x"}, "spec": spec}, NOW) == [
        "x",
        '{"a":[1,"two",true],"b":null}',
    ]


def test_include_object_and_watch_headers() -> None:
    printer = tables.builtin_printer("", "configmaps")
    cm = {
        "kind": "ConfigMap",
        "metadata": {"name": "c", "resourceVersion": "3"},
        "data": {"a": "b"},
    }
    target = tables.Conversion("Table", "v1")
    whole = tables.convert(target, printer, cm, include_object="Object")
    assert whole["rows"][0]["object"] is cm and whole["metadata"] == {"resourceVersion": "3"}
    assert whole["rows"][0]["cells"][:2] == ["c", 1]
    assert tables.convert(target, printer, cm, include_object="None")["rows"][0]["object"] is None
    listed = {"kind": "ConfigMapList", "metadata": {"resourceVersion": "4"}, "items": [cm]}
    partial = tables.convert(tables.Conversion("PartialObjectMetadata", "v1"), printer, listed)
    assert partial["kind"] == "PartialObjectMetadataList" and partial["items"][0]["metadata"]

    async def events() -> Any:
        for kind in ("ADDED", "MODIFIED", "BOOKMARK"):
            yield {"type": kind, "object": cm}

    async def collect() -> list[Any]:
        return [e async for e in tables.convert_events(events(), target, printer)]

    added, modified, bookmark = asyncio.run(collect())
    assert "columnDefinitions" in added["object"]
    assert "columnDefinitions" not in modified["object"] and modified["object"]["rows"]
    assert bookmark["object"] is cm


def test_built_in_printers() -> None:
    pod = {
        "metadata": {"name": "web-0", "creationTimestamp": "2026-01-02T11:00:00Z"},
        "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "node-1"},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.1",
            "containerStatuses": [
                {"name": "a", "ready": True, "restartCount": 1, "state": {"running": {}}},
                {
                    "name": "b",
                    "ready": False,
                    "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"finishedAt": "2026-01-02T11:58:00Z"}},
                },
            ],
        },
    }
    printer = tables.builtin_printer("", "pods")
    assert [c.name for c in printer.columns if c.priority == 0] == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
    ]
    assert printer.row(pod, NOW)[:7] == [
        "web-0",
        "1/2",
        "CrashLoopBackOff",
        "3 (2m ago)",
        "60m",
        "10.0.0.1",
        "node-1",
    ]
    pod["metadata"]["deletionTimestamp"] = "2026-01-02T11:59:00Z"
    assert printer.row(pod, NOW)[2] == "Terminating"
    secret = tables.builtin_printer("", "secrets").row(
        {"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "", "b": ""}}, NOW
    )
    assert secret == ["s", "Opaque", 2, "<unknown>"]
    fallback = tables.builtin_printer("example.com", "things")
    assert [c.name for c in fallback.columns] == ["Name", "Created At"]
    created = fallback.row(
        {"metadata": {"name": "t", "creationTimestamp": "2026-01-02T11:00:00Z"}}, NOW
    )
    assert created == ["t", "2026-01-02T11:00:00Z"]
    event = tables.builtin_printer("", "events").row(
        {
            "metadata": {"name": "e"},
            "involvedObject": {"kind": "Pod", "name": "web-0"},
            "reason": "BackOff",
            "type": "Warning",
            "message": "Back-off",
            "lastTimestamp": "2026-01-02T11:50:00Z",
            "count": 4,
        },
        NOW,
    )
    assert event[:4] == ["10m", "Warning", "BackOff", "pod/web-0"] and event[8] == 4


def remediations_kind() -> openapi.Kind:
    version = crd_version("mcpremediations")
    return openapi.Kind(
        group="mcp.dese.ai",
        version="v1alpha1",
        plural="mcpremediations",
        kind="McpRemediation",
        namespaced=True,
        has_status=True,
        custom=True,
        verbs=frozenset({"create", "delete", "get", "list", "patch", "update", "watch"}),
        schema=version["schema"]["openAPIV3Schema"],
    )


def test_v3_document_of_a_crd() -> None:
    document = openapi.v3_document([remediations_kind()])
    schemas = document["components"]["schemas"]
    schema = schemas["ai.dese.mcp.v1alpha1.McpRemediation"]
    gvk = {"group": "mcp.dese.ai", "version": "v1alpha1", "kind": "McpRemediation"}
    assert schema["x-kubernetes-group-version-kind"] == [gvk]
    assert schema["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    ]
    assert "runbookRef" in schema["properties"]["spec"]["properties"]
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in schemas
    assert "ai.dese.mcp.v1alpha1.McpRemediationList" in schemas
    item = "/apis/mcp.dese.ai/v1alpha1/namespaces/{namespace}/mcpremediations/{name}"
    patch = document["paths"][item]["patch"]
    # What kubectl's field-validation check looks for.
    assert patch["x-kubernetes-group-version-kind"] == gvk
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
    assert "application/strategic-merge-patch+json" not in patch["requestBody"]["content"]
    assert f"{item}/status" in document["paths"]
    assert "/apis/mcp.dese.ai/v1alpha1/mcpremediations" in document["paths"]
    # Every reference resolves.
    refs = set(openapi._references(document))
    assert refs <= set(schemas), refs - set(schemas)


def test_v3_index_hashes_each_document() -> None:
    body = openapi.encode(openapi.v3_document([remediations_kind()]))
    index = openapi.v3_index({openapi.document_path("mcp.dese.ai/v1alpha1"): body})
    url = index["paths"]["apis/mcp.dese.ai/v1alpha1"]["serverRelativeURL"]
    assert url == (
        "/openapi/v3/apis/mcp.dese.ai/v1alpha1?hash=" + hashlib.sha512(body).hexdigest().upper()
    )
    assert openapi.document_path("v1") == "api/v1"


def test_built_in_schemas_come_from_the_client_models() -> None:
    pods = openapi.Kind("", "v1", "pods", "Pod", True, True, False, frozenset({"get", "patch"}))
    document = openapi.v3_document([pods])
    schemas = document["components"]["schemas"]
    pod = schemas["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "version": "v1", "kind": "Pod"}]
    container = schemas["io.k8s.api.core.v1.Container"]
    assert "name" in container["required"] and container["properties"]["image"]["type"] == "string"
    assert "Attributes" not in container["description"]
    patch = document["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert patch["operationId"] == "patchNamespacedPod"
    refs = set(openapi._references(document))
    assert refs <= set(schemas), refs - set(schemas)


def test_v2_document_refers_to_definitions() -> None:
    document = openapi.v2_document([remediations_kind()])
    text = json.dumps(document)
    assert document["swagger"] == "2.0" and "#/components/" not in text
    metadata = document["definitions"]["ai.dese.mcp.v1alpha1.McpRemediation"]["properties"][
        "metadata"
    ]
    assert metadata["$ref"] == "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    assert openapi.accepts_json("application/json, */*")
    assert not openapi.accepts_json(openapi.PROTOBUF_V2)
