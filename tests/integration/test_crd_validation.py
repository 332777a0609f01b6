"""Custom resources are validated against their CRD's structural schema over real HTTP, and
through the real ``kubectl``, with kube-apiserver 1.32's answers: 422 Invalid naming each
field, unknown fields per ``fieldValidation`` (400 when Strict, ``Warning`` headers when
Warn, the server's default).
"""

from __future__ import annotations

import asyncio
import copy
import json
import pathlib
import shutil
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
import yaml

from mcp_remediator.testing.emulator import (
    MERGE_PATCH,
    ApiError,
    ApiServerEmulator,
    write_kubeconfig,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
GROUP = "mcp.dese.ai"
REMEDIATIONS = f"/apis/{GROUP}/v1alpha1/namespaces/mcp/mcpremediations"
DRY_RUN_MESSAGE = (
    'spec.dryRun: Invalid value: "string": spec.dryRun in body must be of type boolean: "string"'
)


@pytest.fixture
async def em() -> AsyncIterator[ApiServerEmulator]:
    async with ApiServerEmulator() as emulator, kmock.Server(emulator):
        emulator.register_builtins()
        assert emulator.register_crd_dir(ROOT / "crds")
        emulator.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mcp"}})
        yield emulator


async def call(
    em: ApiServerEmulator,
    method: str,
    url: str,
    body: Any = None,
    content_type: str = "application/json",
    **params: str,
) -> tuple[int, Any, str]:
    """Status, decoded body and ``Warning`` header of one request."""
    data = None if body is None else json.dumps(body)
    headers = {"Content-Type": content_type}
    async with em.request(method, url, data=data, headers=headers, params=params) as response:
        text = await response.text()
        warning = response.headers.get("Warning", "")
        return response.status, json.loads(text) if text else None, warning


def remediation(name: str = "x", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "McpRemediation",
        "metadata": {"name": name, "namespace": "mcp"},
        "spec": {"runbookRef": {"name": "book"}, **spec},
    }


def stored(em: ApiServerEmulator, name: str) -> dict[str, Any] | None:
    return em.get(f"{GROUP}/v1alpha1", "mcpremediations", "mcp", name)


# --- 422 Invalid ------------------------------------------------------------------------------


async def test_dry_run_yes_is_422_naming_spec_dry_run(em: ApiServerEmulator) -> None:
    status, body, _ = await call(em, "POST", REMEDIATIONS, remediation(dryRun="yes"))
    assert status == 422
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'McpRemediation.{GROUP} "x" is invalid: {DRY_RUN_MESSAGE}',
        "reason": "Invalid",
        "details": {
            "name": "x",
            "group": GROUP,
            "kind": "McpRemediation",
            "causes": [
                {
                    "reason": "FieldValueTypeInvalid",
                    "message": DRY_RUN_MESSAGE.removeprefix("spec.dryRun: "),
                    "field": "spec.dryRun",
                }
            ],
        },
        "code": 422,
    }
    assert stored(em, "x") is None
    assert em.errors == []


ONE_OF = '<nil>: Invalid value: "object": give exactly one of spec.runbookRef or spec.steps'


async def test_the_crds_cel_rules_are_enforced(em: ApiServerEmulator) -> None:
    """x-kubernetes-validations: a remediation with neither runbookRef nor steps is 422; a
    planned run may still be approved (its rules guard every read with has())."""
    empty = {**remediation("empty"), "spec": {}}
    status, body, _ = await call(em, "POST", REMEDIATIONS, empty)
    assert status == 422, body
    assert body["message"] == f'McpRemediation.{GROUP} "empty" is invalid: {ONE_OF}'
    assert stored(em, "empty") is None

    await call(em, "POST", REMEDIATIONS, remediation("planned"))
    plan = {"status": {"phase": "AwaitingApproval", "plan": {"steps": []}}}
    status, body, _ = await call(
        em, "PATCH", f"{REMEDIATIONS}/planned/status", plan, "application/merge-patch+json"
    )
    assert status == 200, body
    approve = {"spec": {"approved": True}}
    status, body, _ = await call(
        em, "PATCH", f"{REMEDIATIONS}/planned", approve, "application/merge-patch+json"
    )
    assert status == 200, body
    other = {"spec": {"runbookRef": {"name": "other"}}}
    status, body, _ = await call(
        em, "PATCH", f"{REMEDIATIONS}/planned", other, "application/merge-patch+json"
    )
    assert status == 422 and "fixed once the run is planned" in body["message"], body


async def test_several_errors_are_one_aggregate(em: ApiServerEmulator) -> None:
    steps = [{"name": "Ping", "action": "redisPing", "retries": 11}]
    body = remediation(steps=steps)
    del body["spec"]["runbookRef"]
    status, error, _ = await call(em, "POST", REMEDIATIONS, body)
    assert status == 422
    assert error["message"] == (
        f'McpRemediation.{GROUP} "x" is invalid: ['
        'spec.steps[0].name: Invalid value: "Ping": spec.steps[0].name in body should match'
        " '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$', "
        "spec.steps[0].retries: Invalid value: 11: spec.steps[0].retries in body should be"
        " less than or equal to 10]"
    )
    assert [cause["field"] for cause in error["details"]["causes"]] == [
        "spec.steps[0].name",
        "spec.steps[0].retries",
    ]


async def test_replace_and_patch_are_validated_and_change_nothing(em: ApiServerEmulator) -> None:
    status, made, _ = await call(em, "POST", REMEDIATIONS, remediation())
    assert status == 201
    rv = made["metadata"]["resourceVersion"]

    status, error, _ = await call(
        em, "PATCH", f"{REMEDIATIONS}/x", {"spec": {"approved": "sure"}}, MERGE_PATCH
    )
    assert (status, error["details"]["causes"][0]["field"]) == (422, "spec.approved")

    replaced = copy.deepcopy(made)
    replaced["spec"]["ttlSecondsAfterFinished"] = -5
    status, error, _ = await call(em, "PUT", f"{REMEDIATIONS}/x", replaced)
    assert status == 422
    assert error["message"].endswith(
        "spec.ttlSecondsAfterFinished: Invalid value: -5: spec.ttlSecondsAfterFinished in body"
        " should be greater than or equal to 0"
    )
    current = stored(em, "x")
    assert current is not None and current["metadata"]["resourceVersion"] == rv


async def test_status_writes_are_validated_against_the_status_schema(
    em: ApiServerEmulator,
) -> None:
    await call(em, "POST", REMEDIATIONS, remediation())
    patch = {"status": {"phase": "Done", "observedGeneration": "1"}}
    status, error, _ = await call(em, "PATCH", f"{REMEDIATIONS}/x/status", patch, MERGE_PATCH)
    assert status == 422
    assert error["message"] == (
        f'McpRemediation.{GROUP} "x" is invalid: ['
        'status.phase: Unsupported value: "Done": supported values: "Pending",'
        ' "AwaitingApproval", "Running", "Succeeded", "Failed", "Refused", "Cancelled",'
        ' "Skipped", status.observedGeneration: Invalid value: "string": observedGeneration'
        ' in body must be of type integer: "string"]'
    )
    patch = {"status": {"phase": "Running", "observedGeneration": 1}}
    status, body, _ = await call(em, "PATCH", f"{REMEDIATIONS}/x/status", patch, MERGE_PATCH)
    assert status == 200, body
    assert body["status"]["phase"] == "Running"


async def test_updates_ratchet_values_a_tightened_schema_refuses(em: ApiServerEmulator) -> None:
    crd = yaml.safe_load((ROOT / "crds" / "mcp.dese.ai_mcpremediations.yaml").read_text())
    loose = copy.deepcopy(crd)
    spec_schema = loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    del spec_schema["properties"]["ttlSecondsAfterFinished"]["minimum"]
    em.register_crd(loose)
    status, _, _ = await call(em, "POST", REMEDIATIONS, remediation(ttlSecondsAfterFinished=-1))
    assert status == 201
    em.register_crd(crd)  # the schema tightens: the stored object is now invalid
    patch = {"spec": {"approved": True}}
    status, body, _ = await call(em, "PATCH", f"{REMEDIATIONS}/x", patch, MERGE_PATCH)
    assert status == 200, body  # the invalid value did not change: it ratchets
    patch = {"spec": {"ttlSecondsAfterFinished": -2}}
    status, body, _ = await call(em, "PATCH", f"{REMEDIATIONS}/x", patch, MERGE_PATCH)
    assert status == 422


async def test_status_writes_ratchet_against_the_stored_status(em: ApiServerEmulator) -> None:
    """statusStrategy validates with ratcheting too: a stored status value a tightened
    schema refuses does not block a status write that leaves it alone."""
    crd = yaml.safe_load((ROOT / "crds" / "mcp.dese.ai_mcpremediations.yaml").read_text())
    loose = copy.deepcopy(crd)
    root = loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    del root["properties"]["status"]["properties"]["phase"]["enum"]
    em.register_crd(loose)
    await call(em, "POST", REMEDIATIONS, remediation())
    legacy = {"status": {"phase": "Legacy"}}
    status, body, _ = await call(em, "PATCH", f"{REMEDIATIONS}/x/status", legacy, MERGE_PATCH)
    assert status == 200, body
    em.register_crd(crd)
    note = {"status": {"message": "still here"}}
    status, body, _ = await call(em, "PATCH", f"{REMEDIATIONS}/x/status", note, MERGE_PATCH)
    assert status == 200, body
    other = {"status": {"phase": "Older"}}
    status, body, _ = await call(em, "PATCH", f"{REMEDIATIONS}/x/status", other, MERGE_PATCH)
    assert status == 422, body


def test_the_sync_helpers_refuse_invalid_objects_too(em: ApiServerEmulator) -> None:
    with pytest.raises(ApiError) as refused:
        em.seed(remediation(dryRun="yes"))
    assert refused.value.code == 422
    assert refused.value.message == f'McpRemediation.{GROUP} "x" is invalid: {DRY_RUN_MESSAGE}'


# --- unknown fields and fieldValidation -------------------------------------------------------


async def test_unknown_fields_warn_by_default(em: ApiServerEmulator) -> None:
    body = remediation(foo=1, steps=None)
    body["spec"]["alert"] = {"bar": 2}
    status, made, warning = await call(em, "POST", REMEDIATIONS, body)
    assert status == 201, made
    assert warning == (
        '299 - "unknown field \\"spec.alert.bar\\"", 299 - "unknown field \\"spec.foo\\""'
    )
    assert "foo" not in made["spec"] and made["spec"]["alert"] == {
        "fingerprint": "",
        "status": "firing",
    }
    status, _, warning = await call(
        em, "POST", REMEDIATIONS, remediation("y", foo=1), fieldValidation="Ignore"
    )
    assert (status, warning) == (201, "")


async def test_strict_field_validation_refuses_unknown_fields(em: ApiServerEmulator) -> None:
    body = remediation(foo=1)
    status, error, _ = await call(em, "POST", REMEDIATIONS, body, fieldValidation="Strict")
    assert status == 400
    assert error["reason"] == "BadRequest"
    assert error["message"] == (
        'McpRemediation in version "v1alpha1" cannot be handled as a McpRemediation:'
        ' strict decoding error: unknown field "spec.foo"'
    )
    assert stored(em, "x") is None

    await call(em, "POST", REMEDIATIONS, remediation())
    patch = {"spec": {"bar": 1}}
    status, error, _ = await call(
        em, "PATCH", f"{REMEDIATIONS}/x", patch, MERGE_PATCH, fieldValidation="Strict"
    )
    assert status == 422
    assert error["message"].startswith(' "" is invalid: patch: Invalid value: "{')
    assert error["message"].endswith('strict decoding error: unknown field "spec.bar"')
    assert error["details"]["causes"][0]["field"] == "patch"


async def test_an_unknown_field_validation_value_is_422(em: ApiServerEmulator) -> None:
    status, error, _ = await call(em, "POST", REMEDIATIONS, remediation(), fieldValidation="Loud")
    assert status == 422
    assert error["message"] == (
        'CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "Loud":'
        ' supported values: "", "Ignore", "Strict", "Warn"'
    )


# --- the real kubectl -------------------------------------------------------------------------


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise RuntimeError("kubectl is not installed: these tests drive the real kubectl")
    return path


async def run(base: list[str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *base, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def kubectl_base(em: ApiServerEmulator, tmp_path: pathlib.Path) -> list[str]:
    config = write_kubeconfig(tmp_path / "kubeconfig", str(em.url).rstrip("/"))
    return [kubectl(), "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "cache")]


def manifest(tmp_path: pathlib.Path, doc: dict[str, Any]) -> str:
    path = tmp_path / "remediation.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return str(path)


async def test_kubectl_apply_shows_the_invalid_field(
    kubectl_base: list[str], tmp_path: pathlib.Path
) -> None:
    # --validate=false: kubectl sends fieldValidation=Ignore and needs no OpenAPI document.
    path = manifest(tmp_path, remediation(dryRun="yes"))
    code, _, err = await run(kubectl_base, "apply", "--validate=false", "-f", path)
    assert code == 1
    assert err == f'The McpRemediation "x" is invalid: {DRY_RUN_MESSAGE}\n'


async def served_openapi(em: ApiServerEmulator) -> bool:
    status, _, _ = await call(em, "GET", "/openapi/v3")
    return status == 200


async def test_kubectl_strict_validation_is_the_servers(
    em: ApiServerEmulator, kubectl_base: list[str], tmp_path: pathlib.Path
) -> None:
    # Plain ``kubectl apply`` (--validate=strict) first asks the OpenAPI document whether
    # the server validates fields, then sends fieldValidation=Strict.
    if not await served_openapi(em):
        pytest.skip("the emulator serves no OpenAPI v3 document, which kubectl's strict mode reads")
    path = manifest(tmp_path, remediation(dryRun="yes"))
    code, _, err = await run(kubectl_base, "apply", "-f", path)
    assert (code, err) == (1, f'The McpRemediation "x" is invalid: {DRY_RUN_MESSAGE}\n')

    path = manifest(tmp_path, remediation(foo=1))
    code, _, err = await run(kubectl_base, "apply", "-f", path)
    assert code == 1
    assert err == (
        f'Error from server (BadRequest): error when creating "{path}": McpRemediation in'
        ' version "v1alpha1" cannot be handled as a McpRemediation: strict decoding error:'
        ' unknown field "spec.foo"\n'
    )
    code, out, err = await run(kubectl_base, "apply", "--validate=warn", "-f", path)
    assert code == 0, err
    assert err == 'Warning: unknown field "spec.foo"\n'
