"""The API emulator authenticates, impersonates and authorizes like kube-apiserver.

Every test talks real HTTP (httpx) to ``kmock.Server(ApiServerEmulator)`` with
``enable_auth()``; RBAC objects come in through ``em.apply``/``em.apply_dir`` (the shipped
``manifests/rbac`` among them) or through the API itself. The 401/403/500 bodies are compared
word for word with what the real server writes.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import kmock
import kopf
import pytest

from mcp_remediator.testing import authz
from mcp_remediator.testing.emulator import (
    ADMIN_USERNAME,
    MERGE_PATCH,
    ApiServerEmulator,
    write_kubeconfig,
)

ROOT = pathlib.Path(__file__).parents[2]
RBAC = "rbac.authorization.k8s.io/v1"
MCP = "mcp.dese.ai/v1alpha1"
RUNNER = "system:serviceaccount:team-a:runner"
OPERATOR = "system:serviceaccount:mcp-remediator:mcp-remediator"
REMEDIATIONS_PLURAL = "mcpremediations"
REMEDIATIONS = f"/apis/{MCP}/namespaces/team-a/{REMEDIATIONS_PLURAL}"
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SSR = "/apis/authentication.k8s.io/v1/selfsubjectreviews"

Headers = Sequence[tuple[str, str]]


@pytest.fixture
async def em() -> AsyncIterator[ApiServerEmulator]:
    async with ApiServerEmulator() as emulator, kmock.Server(emulator):
        emulator.register_builtins()
        emulator.register_crd_dir(ROOT / "crds")
        emulator.enable_auth()
        yield emulator


@pytest.fixture
async def http(em: ApiServerEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=str(em.url).rstrip("/"), timeout=10) as client:
        yield client


async def call(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    token: str | None = None,
    body: Any = None,
    *,
    headers: Headers = (),
    content_type: str = "application/json",
    **params: str,
) -> tuple[int, Any]:
    sent = [("Content-Type", content_type), *headers]
    if token is not None:
        sent.append(("Authorization", f"Bearer {token}"))
    content = None if body is None else json.dumps(body)
    response = await http.request(method, url, content=content, headers=sent, params=params or None)
    if response.headers.get("Content-Type", "").startswith("application/json"):
        return response.status_code, response.json()
    return response.status_code, response.text


def role(name: str, namespace: str | None, *rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    kind = "Role" if namespace else "ClusterRole"
    meta: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": RBAC, "kind": kind, "metadata": meta, "rules": list(rules), **extra}


def binding(
    name: str, namespace: str | None, role_kind: str, role_name: str, *subjects: dict[str, str]
) -> dict[str, Any]:
    kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    meta: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": RBAC,
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
        "subjects": list(subjects),
    }


def rule(groups: list[str], resources: list[str], verbs: list[str], **extra: Any) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs, **extra}


def sa(name: str, namespace: str | None = None) -> dict[str, str]:
    return {
        "kind": "ServiceAccount",
        "name": name,
        **({"namespace": namespace} if namespace else {}),
    }


def user(name: str) -> dict[str, str]:
    return {"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}


def group(name: str) -> dict[str, str]:
    return {"kind": "Group", "name": name, "apiGroup": "rbac.authorization.k8s.io"}


def configmap(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
    }


def deployment(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": 1},
    }


def remediation(name: str, namespace: str = "team-a") -> dict[str, Any]:
    return {
        "apiVersion": MCP,
        "kind": "McpRemediation",
        "metadata": {"name": name, "namespace": namespace},
        # The CRD's CEL rule: exactly one of runbookRef or (non-empty) steps.
        "spec": {"runbookRef": {"name": "restart"}},
    }


def forbidden(message: str, details: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    }


def impersonating(username: str, *groups: str, **extra: str) -> list[tuple[str, str]]:
    headers = [("Impersonate-User", username)]
    headers += [("Impersonate-Group", name) for name in groups]
    headers += [(f"Impersonate-Extra-{key}", value) for key, value in extra.items()]
    return headers


# --- authentication -------------------------------------------------------------------------


async def test_unknown_or_malformed_credentials_are_401(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    unauthorized = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    assert await call(http, "GET", "/api/v1/pods", "nope") == (401, unauthorized)
    basic = [("Authorization", "Basic dXNlcjpwYXNz")]
    assert await call(http, "GET", "/version", headers=basic) == (401, unauthorized)
    assert [(e.code, e.user, e.allowed) for e in em.audit] == [(401, "", False)] * 2


async def test_anonymous_gets_public_info_only(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    status, version = await call(http, "GET", "/version")
    assert status == 200 and version["major"] == "1"
    assert await call(http, "GET", "/api") == (
        403,
        forbidden('forbidden: User "system:anonymous" cannot get path "/api"', {}),
    )
    status, body = await call(http, "GET", "/api/v1/namespaces/default/pods")
    assert status == 403
    assert body["message"] == (
        'pods is forbidden: User "system:anonymous" cannot list resource "pods"'
        ' in API group "" in the namespace "default"'
    )
    assert em.audit[0].groups == (authz.UNAUTHENTICATED,)
    assert "system:public-info-viewer" in em.audit[0].reason

    em.enable_auth(anonymous=False)  # --anonymous-auth=false
    status, body = await call(http, "GET", "/version")
    assert (status, body["reason"]) == (401, "Unauthorized")


async def test_tokens_and_the_groups_they_carry(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    em.add_token("alice-token", "alice", ["dev"], uid="42")
    status, review = await call(http, "POST", SSR, "alice-token", {})
    assert status == 201
    assert review["status"]["userInfo"] == {
        "username": "alice",
        "uid": "42",
        "groups": ["dev", "system:authenticated"],
    }
    em.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "runner", "namespace": "team-a"},
            }
        ]
    )
    token = em.service_account_token("team-a", "runner")
    assert em.service_account_token("team-a", "runner") == token
    _, review = await call(http, "POST", SSR, token, {})
    info = review["status"]["userInfo"]
    assert info["username"] == RUNNER
    assert info["groups"] == [
        "system:serviceaccounts",
        "system:serviceaccounts:team-a",
        "system:authenticated",
    ]
    stored = em.get("v1", "serviceaccounts", "team-a", "runner")
    assert stored is not None and info["uid"] == stored["metadata"]["uid"]
    # No ServiceAccount object is needed for a token; discovery is open to every user.
    status, _ = await call(http, "GET", "/apis", em.service_account_token("x", "ghost"))
    assert status == 200


# --- RBAC -----------------------------------------------------------------------------------


async def test_role_binding_grants_in_its_own_namespace_only(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    em.apply(
        [
            role("cm-reader", "team-a", rule([""], ["configmaps"], ["get", "list"])),
            role("cm-reader", "team-b", rule([""], ["configmaps"], ["get", "list"])),
            binding("runner-reads", "team-a", "Role", "cm-reader", sa("runner")),
            configmap("c", "team-a"),
            configmap("c", "team-b"),
        ]
    )
    token = em.service_account_token("team-a", "runner")
    status, listed = await call(http, "GET", "/api/v1/namespaces/team-a/configmaps", token)
    assert status == 200 and [c["metadata"]["name"] for c in listed["items"]] == ["c"]
    assert em.audit[-1].reason == (
        'RBAC: allowed by RoleBinding "runner-reads/team-a" of Role "cm-reader"'
        ' to ServiceAccount "runner/team-a"'
    )
    status, body = await call(http, "GET", "/api/v1/namespaces/team-b/configmaps/c", token)
    assert (status, body) == (
        403,
        forbidden(
            f'configmaps "c" is forbidden: User "{RUNNER}" cannot get resource "configmaps"'
            ' in API group "" in the namespace "team-b"',
            {"name": "c", "kind": "configmaps"},
        ),
    )
    status, body = await call(http, "GET", "/api/v1/configmaps", token)
    assert status == 403 and body["message"] == (
        f'configmaps is forbidden: User "{RUNNER}" cannot list resource "configmaps"'
        ' in API group "" at the cluster scope'
    )
    assert body["details"] == {"kind": "configmaps"}
    status, _ = await call(http, "DELETE", "/api/v1/namespaces/team-a/configmaps/c", token)
    assert status == 403


async def test_cluster_role_bound_by_a_role_binding_applies_in_that_namespace(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    em.apply(
        [
            role("deployer", None, rule(["apps"], ["deployments"], ["get", "patch"])),
            binding("deployer", "payments", "ClusterRole", "deployer", sa("runner", "team-a")),
            deployment("api", "payments"),
            deployment("api", "billing"),
        ]
    )
    token = em.service_account_token("team-a", "runner")
    url = "/apis/apps/v1/namespaces/{}/deployments/api"
    patch = {"spec": {"replicas": 3}}
    status, _ = await call(
        http, "PATCH", url.format("payments"), token, patch, content_type=MERGE_PATCH
    )
    assert status == 200
    status, body = await call(
        http, "PATCH", url.format("billing"), token, patch, content_type=MERGE_PATCH
    )
    assert (status, body) == (
        403,
        forbidden(
            f'deployments.apps "api" is forbidden: User "{RUNNER}" cannot patch resource'
            ' "deployments" in API group "apps" in the namespace "billing"',
            {"name": "api", "group": "apps", "kind": "deployments"},
        ),
    )
    billing = em.get("apps/v1", "deployments", "billing", "api")
    assert billing is not None and billing["spec"]["replicas"] == 1  # refused: nothing written
    status, body = await call(
        http,
        "PATCH",
        url.format("payments") + "/status",
        token,
        {"status": {}},
        content_type=MERGE_PATCH,
    )
    assert status == 403 and body["message"] == (
        f'deployments.apps "api" is forbidden: User "{RUNNER}" cannot patch resource'
        ' "deployments/status" in API group "apps" in the namespace "payments"'
    )


async def test_cluster_role_bindings_apply_everywhere(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    em.add_token("t", "auditor", ["auditors"])
    em.apply(
        [
            role(
                "ns-reader",
                None,
                rule([""], ["namespaces", "configmaps"], ["get", "list", "watch"]),
            ),
            binding("auditors", None, "ClusterRole", "ns-reader", group("auditors")),
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}},
            configmap("c", "team-b"),
        ]
    )
    for url in (
        "/api/v1/namespaces",
        "/api/v1/namespaces/team-a",
        "/api/v1/configmaps",
        "/api/v1/namespaces/team-b/configmaps/c",
    ):
        status, _ = await call(http, "GET", url, "t")
        assert status == 200, url
    assert em.audit[0].reason == (
        'RBAC: allowed by ClusterRoleBinding "auditors" of ClusterRole "ns-reader"'
        ' to Group "auditors"'
    )
    status, body = await call(http, "DELETE", "/api/v1/namespaces/team-a", "t")
    assert status == 403 and body["message"] == (
        'namespaces "team-a" is forbidden: User "auditor" cannot delete resource "namespaces"'
        ' in API group "" in the namespace "team-a"'
    )


async def test_resource_names_match_only_requests_that_name_an_object(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    em.add_token("t", "bob")
    em.apply(
        [
            role(
                "one",
                "ns",
                rule([""], ["configmaps"], ["get", "list", "watch", "create"], resourceNames=["a"]),
            ),
            binding("one", "ns", "Role", "one", user("bob")),
            configmap("a", "ns"),
            configmap("b", "ns"),
        ]
    )
    base = "/api/v1/namespaces/ns/configmaps"
    assert (await call(http, "GET", f"{base}/a", "t"))[0] == 200
    assert (await call(http, "GET", f"{base}/b", "t"))[0] == 403
    status, body = await call(http, "GET", base, "t")
    assert status == 403 and body["message"].startswith("configmaps is forbidden:")
    bob = authz.UserInfo("bob", (authz.AUTHENTICATED,))
    assert em.can(bob, "get", "configmaps", namespace="ns", name="a")
    assert not em.can(bob, "get", "configmaps", namespace="ns", name="b")
    assert not em.can(bob, "get", "configmaps", namespace="other", name="a")
    # A list pinned to the name by a field selector carries it, as on the real server.
    status, listed = await call(http, "GET", base, "t", fieldSelector="metadata.name=a")
    assert status == 200 and len(listed["items"]) == 1
    status, _ = await call(http, "POST", base, "t", {"metadata": {"name": "a2"}})
    assert status == 403  # a create carries no name


async def test_subresources_are_separate_from_their_resource(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    em.apply_dir(ROOT / "manifests" / "rbac")
    em.apply(
        [
            remediation("r"),
            binding(
                "ed", "team-a", "ClusterRole", "mcp-remediator-mcpremediation-editor", user("carol")
            ),
        ]
    )
    em.add_token("t", "carol")
    status, _ = await call(
        http,
        "PATCH",
        f"{REMEDIATIONS}/r",
        "t",
        {"spec": {"approved": True}},
        content_type=MERGE_PATCH,
    )
    assert status == 200
    assert (await call(http, "GET", f"{REMEDIATIONS}/r/status", "t"))[0] == 200
    status, body = await call(
        http,
        "PATCH",
        f"{REMEDIATIONS}/r/status",
        "t",
        {"status": {"phase": "Succeeded"}},
        content_type=MERGE_PATCH,
    )
    assert (status, body) == (
        403,
        forbidden(
            'mcpremediations.mcp.dese.ai "r" is forbidden: User "carol" cannot patch resource'
            ' "mcpremediations/status" in API group "mcp.dese.ai" in the namespace "team-a"',
            {"name": "r", "group": "mcp.dese.ai", "kind": "mcpremediations"},
        ),
    )
    # The operator's own ClusterRole (role.yaml) writes the status, as its ServiceAccount.
    operator = em.service_account_token("mcp-remediator", "mcp-remediator")
    status, _ = await call(
        http,
        "PATCH",
        f"{REMEDIATIONS}/r/status",
        operator,
        {"status": {"phase": "Succeeded"}},
        content_type=MERGE_PATCH,
    )
    assert status == 200


@pytest.mark.parametrize(
    ("resources", "allowed", "denied"),
    [
        (["*"], ["configmaps", "configmaps/status", "pods/log"], []),
        (["*/status"], ["configmaps/status", "pods/status"], ["configmaps", "pods/log"]),
        (["pods/*"], [], ["pods/status", "pods"]),  # not a wildcard in real RBAC either
        (["pods"], ["pods"], ["pods/status"]),
    ],
)
def test_resource_wildcards(resources: list[str], allowed: list[str], denied: list[str]) -> None:
    def attributes(combined: str) -> authz.Attributes:
        resource, _, subresource = combined.partition("/")
        return authz.Attributes(
            authz.UserInfo("u"), "get", True, resource=resource, subresource=subresource
        )

    granted = rule([""], resources, ["get"])
    assert [authz.rule_allows(attributes(c), granted) for c in allowed] == [True] * len(allowed)
    assert [authz.rule_allows(attributes(c), granted) for c in denied] == [False] * len(denied)


async def test_wildcard_groups_and_verbs(em: ApiServerEmulator, http: httpx.AsyncClient) -> None:
    em.add_token("t", "dana")
    em.apply(
        [
            role("reader", None, rule(["*"], ["*"], ["get", "list"])),
            role("writer", "ns", rule(["apps"], ["deployments"], ["*"])),
            binding("reader", None, "ClusterRole", "reader", user("dana")),
            binding("writer", "ns", "Role", "writer", user("dana")),
            deployment("d", "ns"),
        ]
    )
    assert (await call(http, "GET", "/apis/apps/v1/deployments", "t"))[0] == 200
    assert (await call(http, "GET", f"/apis/{MCP}/mcprunbooks", "t"))[0] == 200
    assert (await call(http, "DELETE", "/apis/apps/v1/namespaces/ns/deployments/d", "t"))[0] == 200
    status, body = await call(http, "DELETE", "/api/v1/namespaces/ns/configmaps", "t")
    assert status == 403 and "cannot deletecollection resource" in body["message"]
    assert (await call(http, "GET", "/healthz", "t"))[0] != 403  # public info: 404 here
    status, body = await call(http, "GET", "/metrics", "t")
    assert (status, body["message"]) == (403, 'forbidden: User "dana" cannot get path "/metrics"')


async def test_aggregated_cluster_roles_store_the_union_of_their_selected_rules(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    em.apply_dir(ROOT / "manifests" / "rbac")
    view = em.get(RBAC, "clusterroles", None, "view")
    assert view is not None
    assert rule(["mcp.dese.ai"], ["mcpremediations"], ["get", "list", "watch"]) in view["rules"]
    edit = em.get(RBAC, "clusterroles", None, "edit")
    assert edit is not None and all(r in edit["rules"] for r in view["rules"])  # view -> edit

    em.add_token("t", "erin")
    em.apply([binding("erin-edit", "team-a", "ClusterRole", "edit", user("erin"))])
    assert (await call(http, "POST", REMEDIATIONS, "t", remediation("r")))[0] == 201
    status, _ = await call(http, "GET", f"/apis/{MCP}/namespaces/team-b/mcpremediations", "t")
    assert status == 403

    # A new role labelled for aggregation joins view; watchers see the write.
    admin = em.admin_token
    _, roles = await call(http, "GET", f"/apis/{RBAC}/clusterroles", admin)
    params = {
        "watch": "true",
        "resourceVersion": roles["metadata"]["resourceVersion"],
        "fieldSelector": "metadata.name=view",
    }
    headers = {"Authorization": f"Bearer {admin}"}
    labels = {"rbac.authorization.k8s.io/aggregate-to-view": "true"}
    granted = rule(["x.io"], ["widgets"], ["get"])
    extra = role("widgets", None, granted, metadata={"name": "widgets", "labels": labels})
    async with http.stream(
        "GET", f"/apis/{RBAC}/clusterroles", params=params, headers=headers
    ) as watch:
        status, _ = await call(http, "POST", f"/apis/{RBAC}/clusterroles", admin, extra)
        assert status == 201
        event = json.loads(await asyncio.wait_for(anext(watch.aiter_lines()), 5))
        assert event["type"] == "MODIFIED" and granted in event["object"]["rules"]
    status, _ = await call(http, "DELETE", f"/apis/{RBAC}/clusterroles/widgets", em.admin_token)
    assert status == 200
    view = em.get(RBAC, "clusterroles", None, "view")
    assert view is not None and not any("x.io" in r.get("apiGroups", []) for r in view["rules"])


async def test_system_masters_may_do_anything(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    for method, url in [
        ("GET", "/api/v1/secrets"),
        ("DELETE", f"/apis/{RBAC}/clusterroles/cluster-admin"),  # even that
        ("GET", "/nowhere"),  # a 404, not a 403
    ]:
        status, _ = await call(http, method, url, em.admin_token)
        assert status in (200, 404), (method, url)
    assert [e.user for e in em.audit] == [ADMIN_USERNAME] * 3
    assert all(e.allowed and e.reason == "" for e in em.audit)  # the privileged-group authorizer


# --- impersonation --------------------------------------------------------------------------


def operator_may_impersonate_in(namespace: str) -> list[dict[str, Any]]:
    """The tenancy pattern: the operator impersonates the step's ServiceAccount."""
    return [
        role("impersonator", None, rule([""], ["serviceaccounts"], ["impersonate"])),
        binding(
            "impersonator",
            namespace,
            "ClusterRole",
            "impersonator",
            sa("mcp-remediator", "mcp-remediator"),
        ),
        role("deployer", namespace, rule(["apps"], ["deployments"], ["get", "patch"])),
        binding("runner", namespace, "Role", "deployer", sa("runner")),
    ]


async def test_impersonating_a_service_account(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    em.apply_dir(ROOT / "manifests" / "rbac")
    em.apply(
        [
            *operator_may_impersonate_in("team-a"),
            deployment("api", "team-a"),
            deployment("api", "team-b"),
        ]
    )
    operator = em.service_account_token("mcp-remediator", "mcp-remediator")
    as_runner = impersonating(RUNNER)
    patch = {"spec": {"replicas": 2}}
    url = "/apis/apps/v1/namespaces/team-a/deployments/api"
    status, _ = await call(
        http, "PATCH", url, operator, patch, headers=as_runner, content_type=MERGE_PATCH
    )
    assert status == 200
    entry = em.audit[-1]
    assert (entry.user, entry.impersonated_by, entry.verb, entry.resource) == (
        RUNNER,
        OPERATOR,
        "patch",
        "deployments",
    )
    assert entry.groups == (
        "system:serviceaccounts",
        "system:serviceaccounts:team-a",
        "system:authenticated",
    )

    # The runner may not touch configmaps (nor may the operator's own role).
    status, body = await call(
        http, "GET", "/api/v1/namespaces/team-a/configmaps/x", operator, headers=as_runner
    )
    assert status == 403 and body["message"].startswith(
        f'configmaps "x" is forbidden: User "{RUNNER}"'
    )

    # A user without `impersonate` cannot act as a ServiceAccount.
    em.add_token("alice-token", "alice")
    other = impersonating("system:serviceaccount:team-b:runner")
    status, body = await call(
        http,
        "PATCH",
        "/apis/apps/v1/namespaces/team-b/deployments/api",
        "alice-token",
        patch,
        headers=other,
        content_type=MERGE_PATCH,
    )
    assert (status, body) == (
        403,
        forbidden(
            'serviceaccounts "runner" is forbidden: User "alice" cannot impersonate'
            ' resource "serviceaccounts" in API group "" in the namespace "team-b"',
            {"name": "runner", "kind": "serviceaccounts"},
        ),
    )
    refused = em.audit[-1]
    assert (refused.user, refused.impersonated_by, refused.code) == ("alice", None, 403)
    assert refused.impersonate_user == "system:serviceaccount:team-b:runner"
    assert (refused.verb, refused.namespace, refused.resource) == ("patch", "team-b", "deployments")

    # What a caller asserts: every deployment patch went out as some step's ServiceAccount.
    patches = [e for e in em.audit if e.verb == "patch" and e.resource == "deployments"]
    assert patches and all(e.impersonate_user for e in patches)


async def test_impersonated_identity_shows_in_self_subject_reviews(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    admin = em.admin_token
    _, review = await call(http, "POST", SSR, admin, {}, headers=impersonating(RUNNER))
    assert review["status"]["userInfo"] == {
        "username": RUNNER,
        "groups": [
            "system:serviceaccounts",
            "system:serviceaccounts:team-a",
            "system:authenticated",
        ],
    }
    # Groups given: they replace the ServiceAccount's own; system:authenticated is still added.
    _, review = await call(http, "POST", SSR, admin, {}, headers=impersonating(RUNNER, "ops"))
    assert review["status"]["userInfo"]["groups"] == ["ops", "system:authenticated"]
    headers = [
        *impersonating("frank", "a", "b", scopes="read"),
        ("Impersonate-Extra-Scopes", "write"),
        ("Impersonate-Uid", "u-1"),
    ]
    _, review = await call(http, "POST", SSR, admin, {}, headers=headers)
    assert review["status"]["userInfo"] == {
        "username": "frank",
        "uid": "u-1",
        "groups": ["a", "b", "system:authenticated"],
        "extra": {"scopes": ["read", "write"]},
    }
    # Anonymous may not even review itself (system:basic-user is for the authenticated).
    anonymous = impersonating("system:anonymous")
    assert (await call(http, "POST", SSR, admin, {}, headers=anonymous))[0] == 403
    assert (await call(http, "GET", "/version", admin, headers=anonymous))[0] == 200
    assert em.audit[-1].groups == ("system:unauthenticated",)


async def test_impersonating_users_groups_uids_and_extras_needs_each_right(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    em.add_token("t", "gina")
    em.apply(
        [
            role(
                "imp",
                None,
                rule([""], ["users"], ["impersonate"], resourceNames=["frank"]),
                rule([""], ["groups"], ["impersonate"], resourceNames=["ops"]),
            ),
            binding("imp", None, "ClusterRole", "imp", user("gina")),
        ]
    )
    assert (await call(http, "GET", "/apis", "t", headers=impersonating("frank", "ops")))[0] == 200
    status, body = await call(http, "GET", "/apis", "t", headers=impersonating("henry"))
    assert (status, body) == (
        403,
        forbidden(
            'users "henry" is forbidden: User "gina" cannot impersonate resource "users"'
            ' in API group "" at the cluster scope',
            {"name": "henry", "kind": "users"},
        ),
    )
    status, body = await call(
        http, "GET", "/apis", "t", headers=impersonating("frank", "ops", "system:masters")
    )
    assert status == 403 and body["message"].startswith('groups "system:masters" is forbidden:')
    status, body = await call(http, "GET", "/apis", "t", headers=impersonating("frank", scopes="x"))
    assert (status, body) == (
        403,
        forbidden(
            'userextras.authentication.k8s.io "x" is forbidden: User "gina" cannot impersonate'
            ' resource "userextras/scopes" in API group "authentication.k8s.io"'
            " at the cluster scope",
            {"name": "x", "group": "authentication.k8s.io", "kind": "userextras"},
        ),
    )
    status, body = await call(
        http, "GET", "/apis", "t", headers=[*impersonating("frank"), ("Impersonate-Uid", "1")]
    )
    assert status == 403 and body["message"].startswith(
        'uids.authentication.k8s.io "1" is forbidden:'
    )

    # Impersonate-Group without Impersonate-User: the real server's plain-text 500.
    status, text = await call(
        http, "GET", "/api/v1/pods?limit=1", "t", headers=[("Impersonate-Group", "ops")]
    )
    assert (status, text) == (
        500,
        'Internal Server Error: "/api/v1/pods?limit=1": requested [{Group  ops    }]'
        " without impersonating a user\n",
    )
    assert em.audit[-1].code == 500


# --- access reviews -------------------------------------------------------------------------


async def test_self_subject_access_reviews(em: ApiServerEmulator, http: httpx.AsyncClient) -> None:
    em.apply_dir(ROOT / "manifests" / "rbac")
    operator = em.service_account_token("mcp-remediator", "mcp-remediator")

    async def review(attributes: dict[str, Any], token: str = operator) -> dict[str, Any]:
        key = "resourceAttributes" if "resource" in attributes else "nonResourceAttributes"
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {key: attributes},
        }
        status, answer = await call(http, "POST", SSAR, token, body)
        assert status == 201 and answer["spec"] == body["spec"]
        result: dict[str, Any] = answer["status"]
        return result

    assert await review(
        {"verb": "impersonate", "resource": "serviceaccounts", "namespace": "x", "name": "r"}
    ) == {
        "allowed": True,
        "reason": 'RBAC: allowed by ClusterRoleBinding "mcp-remediator" of ClusterRole'
        ' "mcp-remediator" to ServiceAccount "mcp-remediator/mcp-remediator"',
    }
    # The operator itself may not touch workloads: its steps act as runner accounts.
    assert await review(
        {"verb": "patch", "group": "apps", "resource": "deployments", "namespace": "x"}
    ) == {"allowed": False}
    assert await review(
        {"verb": "patch", "group": "kyverno.io", "resource": "clusterpolicies"}
    ) == {"allowed": False}
    assert (await review({"verb": "get", "path": "/apis"}))["allowed"] is True
    assert (await review({"verb": "get", "resource": "pods"}, em.admin_token)) == {"allowed": True}

    status, body = await call(http, "POST", SSAR, operator, {"spec": {}})
    assert (status, body["reason"]) == (422, "Invalid")
    status, body = await call(http, "GET", SSAR, em.admin_token)
    assert (status, body["reason"]) == (405, "MethodNotAllowed")


async def test_subject_access_reviews_and_rules_reviews(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    em.apply(operator_may_impersonate_in("team-a"))
    sar = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    spec = {
        "user": RUNNER,
        "groups": ["system:serviceaccounts"],
        "resourceAttributes": {
            "verb": "patch",
            "group": "apps",
            "resource": "deployments",
            "namespace": "team-a",
            "name": "api",
        },
    }
    status, answer = await call(http, "POST", sar, em.admin_token, {"spec": spec})
    assert status == 201 and answer["status"]["allowed"] is True
    assert answer["status"]["reason"].startswith('RBAC: allowed by RoleBinding "runner/team-a"')
    status, answer = await call(
        http, "POST", sar, em.admin_token, {"spec": {**spec, "user": "nobody"}}
    )
    assert answer["status"] == {"allowed": False}
    status, body = await call(
        http, "POST", sar, em.admin_token, {"spec": {"resourceAttributes": {}}}
    )
    assert status == 422

    # Creating SubjectAccessReviews is itself a right that plain users lack.
    token = em.service_account_token("team-a", "runner")
    status, body = await call(http, "POST", sar, token, {"spec": spec})
    assert status == 403 and body["message"] == (
        f'subjectaccessreviews.authorization.k8s.io is forbidden: User "{RUNNER}" cannot create'
        ' resource "subjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope'
    )

    local = "/apis/authorization.k8s.io/v1/namespaces/team-a/localsubjectaccessreviews"
    status, answer = await call(http, "POST", local, em.admin_token, {"spec": spec})
    assert status == 201 and answer["status"]["allowed"] is True
    status, _ = await call(
        http, "POST", local.replace("team-a", "team-b"), em.admin_token, {"spec": spec}
    )
    assert status == 400

    rules_review = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
    status, answer = await call(
        http, "POST", rules_review, token, {"spec": {"namespace": "team-a"}}
    )
    assert status == 201 and answer["status"]["incomplete"] is False
    assert {
        "verbs": ["get", "patch"],
        "apiGroups": ["apps"],
        "resources": ["deployments"],
    } in answer["status"]["resourceRules"]
    assert {
        "verbs": ["get"],
        "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
    } in answer["status"]["nonResourceRules"]


async def test_a_binding_to_a_missing_role_is_named_in_the_reason(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    em.add_token("t", "ivan")
    em.apply([binding("b", "ns", "Role", "missing", user("ivan"))])
    status, body = await call(http, "GET", "/api/v1/namespaces/ns/pods", "t")
    assert status == 403 and body["message"] == (
        'pods is forbidden: User "ivan" cannot list resource "pods" in API group ""'
        ' in the namespace "ns": RBAC: role.rbac.authorization.k8s.io "missing" not found'
    )


# --- watches, reactions, audit --------------------------------------------------------------


async def test_watches_are_authorized_before_the_stream_starts(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    em.add_token("t", "jo")
    em.apply(
        [
            role("lister", "ns", rule([""], ["configmaps"], ["list"])),
            binding("jo", "ns", "Role", "lister", user("jo")),
        ]
    )
    base = "/api/v1/namespaces/ns/configmaps"
    assert (await call(http, "GET", base, "t"))[0] == 200
    status, body = await call(http, "GET", base, "t", watch="true")
    assert status == 403 and body["message"] == (
        'configmaps is forbidden: User "jo" cannot watch resource "configmaps"'
        ' in API group "" in the namespace "ns"'
    )
    assert em.watched_plurals() == set()
    em.apply([role("lister", "ns", rule([""], ["configmaps"], ["list", "watch"]))])  # updates it
    headers = {"Authorization": "Bearer t"}
    async with http.stream("GET", base, params={"watch": "true"}, headers=headers) as response:
        assert response.status_code == 200
        em.seed(configmap("c", "ns"))
        event = json.loads(await asyncio.wait_for(anext(response.aiter_lines()), 5))
        assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "c")
    assert [e.verb for e in em.audit] == ["list", "watch", "watch"]
    # One object watched by its URL: streamed by the emulator, so authorized as a watch.
    status, _ = await call(http, "GET", f"{base}/c", "t", watch="true", timeoutSeconds="0.1")
    assert status == 200 and (em.audit[-1].verb, em.audit[-1].name) == ("watch", "c")
    assert (await call(http, "GET", f"{base}/c", "t"))[0] == 403  # get: never granted


async def test_reactions_answer_only_after_authorization(
    em: ApiServerEmulator, http: httpx.AsyncClient
) -> None:
    url = "/api/v1/namespaces/ns/configmaps/c"
    em[f"get {url}"] << 503
    em.add_token("t", "kim")
    assert (await call(http, "GET", url, "t"))[0] == 403
    assert (await call(http, "GET", url, em.admin_token))[0] == 503
    assert len(em[f"get {url}"]) == 2  # both recorded as requests


async def test_kopf_runs_as_a_service_account_with_just_enough_rbac(
    em: ApiServerEmulator,
) -> None:
    em.apply(
        [
            role(
                "kopf-widgets",
                None,
                rule(["mcp.dese.ai"], ["mcpremediations"], ["get", "list", "watch", "patch"]),
                rule([""], ["events"], ["create"]),
                # Kopf's resource observer notices CRDs installed while it runs.
                rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["list", "watch"]),
            ),
            binding("kopf", None, "ClusterRole", "kopf-widgets", sa("kopf", "ops")),
            remediation("r"),
        ]
    )
    token = em.service_account_token("ops", "kopf")
    url = str(em.url).rstrip("/")
    registry = kopf.OperatorRegistry()
    handled: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True, token=token)

    @kopf.on.create("mcp.dese.ai", "v1alpha1", "mcpremediations", registry=registry)
    def created(name: str, **_: Any) -> None:
        handled.append(name)

    settings = kopf.OperatorSettings()
    settings.process.ultimate_exiting_timeout = None
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
        for _ in range(1000):
            if handled or errors:
                break
            await asyncio.sleep(0.02)
        assert handled == ["r"] and not errors
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
    kopf_entries = [e for e in em.audit if e.user == "system:serviceaccount:ops:kopf"]
    assert {e.verb for e in kopf_entries} >= {"get", "watch", "patch"}
    verbs = {(e.verb, e.resource) for e in kopf_entries}
    assert {("list", REMEDIATIONS_PLURAL), ("watch", REMEDIATIONS_PLURAL)} <= verbs
    assert ("patch", REMEDIATIONS_PLURAL) in verbs  # its finalizer and progress annotations
    assert {"/api", "/apis"} <= {e.path for e in kopf_entries if e.verb == "get"}  # discovery
    assert all(e.allowed for e in em.audit), [e for e in em.audit if not e.allowed]


# --- switching off, applying, kubeconfig ----------------------------------------------------


async def test_with_auth_off_every_request_is_served_as_before() -> None:
    async with ApiServerEmulator() as em, kmock.Server(em):
        em.register_builtins()
        async with httpx.AsyncClient(base_url=str(em.url).rstrip("/")) as http:
            status, _ = await call(http, "GET", "/api/v1/namespaces/a/configmaps", "garbage")
            assert status == 200
            spec = {"resourceAttributes": {"verb": "delete", "resource": "nodes"}}
            status, answer = await call(http, "POST", SSAR, None, {"spec": spec})
            assert (status, answer["status"]) == (201, {"allowed": True})
            _, review = await call(http, "POST", SSR, None, {})
            assert review["status"]["userInfo"]["username"] == "system:anonymous"
            em.enable_auth()
            assert (await call(http, "GET", "/api/v1/namespaces/a/configmaps", "garbage"))[0] == 401
            em.disable_auth()
            assert (await call(http, "GET", "/api/v1/namespaces/a/configmaps", "garbage"))[0] == 200
        assert len(em.audit) == 1 and not em.auth_enabled


def test_apply_places_and_updates_objects(tmp_path: pathlib.Path) -> None:
    em = ApiServerEmulator()
    em.register_builtins()
    (tmp_path / "a.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\n---\n"
        "kind: Kustomization\nresources: [a.yaml]\n---\n"
        "apiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: v1, kind: ServiceAccount, metadata: {name: sa, namespace: own}}\n"
    )
    applied = em.apply_dir(tmp_path)
    assert [(o["kind"], o["metadata"]["namespace"]) for o in applied] == [
        ("ConfigMap", "default"),
        ("ServiceAccount", "own"),
    ]
    bare = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    assert em.apply([bare], namespace="team")[0]["metadata"]["namespace"] == "team"
    with pytest.raises(ValueError, match="does not match"):
        em.apply([configmap("y", "own")], namespace="team")
    updated = em.apply([{**configmap("plain", "default"), "data": {"k": "v"}}])[0]
    assert (
        updated["data"] == {"k": "v"}
        and updated["metadata"]["resourceVersion"] != applied[0]["metadata"]["resourceVersion"]
    )
    assert em.write_count() == 0  # no HTTP


async def test_kubeconfig_with_a_token(em: ApiServerEmulator, tmp_path: pathlib.Path) -> None:
    from kubernetes import client, config

    em.apply(
        [
            role("r", "ns", rule([""], ["configmaps"], ["get"])),
            binding("r", "ns", "Role", "r", sa("app")),
            configmap("a", "ns"),
        ]
    )
    path = write_kubeconfig(
        tmp_path / "kubeconfig",
        str(em.url).rstrip("/"),
        "ns",
        token=em.service_account_token("ns", "app"),
    )
    configuration = client.Configuration()
    await asyncio.to_thread(
        config.load_kube_config, config_file=str(path), client_configuration=configuration
    )

    def read(name: str) -> Any:
        with client.ApiClient(configuration) as api:
            return client.CoreV1Api(api).read_namespaced_config_map(name, "ns")

    assert (await asyncio.to_thread(read, "a")).metadata.name == "a"
    assert em.audit[-1].user == "system:serviceaccount:ns:app"


# --- request attributes (pure) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/ns/pods/p", {}, ("get", "", "pods", "", "ns", "p")),
        ("GET", "/api/v1/namespaces/ns/pods", {}, ("list", "", "pods", "", "ns", "")),
        ("GET", "/api/v1/pods", {"watch": "true"}, ("watch", "", "pods", "", "", "")),
        ("GET", "/api/v1/pods", {"watch": "0"}, ("list", "", "pods", "", "", "")),
        (
            "GET",
            "/api/v1/namespaces/ns/pods",
            {"fieldSelector": "metadata.name=p"},
            ("list", "", "pods", "", "ns", "p"),
        ),
        (
            "POST",
            "/apis/apps/v1/namespaces/ns/deployments",
            {},
            ("create", "apps", "deployments", "", "ns", ""),
        ),
        (
            "PUT",
            "/apis/apps/v1/namespaces/ns/deployments/d/status",
            {},
            ("update", "apps", "deployments", "status", "ns", "d"),
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/ns/deployments/d/scale",
            {},
            ("patch", "apps", "deployments", "scale", "ns", "d"),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/ns/configmaps/c",
            {},
            ("delete", "", "configmaps", "", "ns", "c"),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/ns/configmaps",
            {},
            ("deletecollection", "", "configmaps", "", "ns", ""),
        ),
        ("GET", "/api/v1/namespaces/ns", {}, ("get", "", "namespaces", "", "ns", "ns")),
        (
            "PUT",
            "/api/v1/namespaces/ns/finalize",
            {},
            ("update", "", "namespaces", "finalize", "ns", "ns"),
        ),
        ("GET", "/api/v1/namespaces", {}, ("list", "", "namespaces", "", "", "")),
        ("GET", "/api/v1/watch/namespaces/ns/pods", {}, ("watch", "", "pods", "", "ns", "")),
    ],
)
def test_request_attributes(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    a = authz.request_attributes(authz.UserInfo("u"), method, path, query)
    assert a.resource_request
    assert (a.verb, a.api_group, a.resource, a.subresource, a.namespace, a.name) == expected


@pytest.mark.parametrize(
    "path",
    ["/", "/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/version", "/openapi/v2"],
)
def test_non_resource_paths(path: str) -> None:
    a = authz.request_attributes(authz.UserInfo("u"), "GET", path, {})
    assert (a.resource_request, a.verb, a.path) == (False, "get", path)
    discovery = rule(
        [], [], ["get"], nonResourceURLs=["/api", "/api/*", "/apis", "/apis/*", "/version"]
    )
    assert authz.rule_allows(a, discovery) == (path not in ("/", "/openapi/v2"))
