"""The deployment artefacts, checked with the tools that will consume them.

- manifests/prometheus: ``promtool check rules`` and ``promtool test rules`` on the alerting
  rules (and mutations proving every alert's firing case is really tested); the plain rules
  file and the PrometheusRule carry the same groups; ``amtool check-config`` and
  ``amtool config routes test`` on the Alertmanager route to the operator's receiver.
- manifests/default: built with ``kubectl kustomize``; every object is well formed, the
  operator's ClusterRole covers what the framework needs and nothing more (no write on
  workloads, ConfigMaps or Applications, no Secret read: steps impersonate a runner), no
  role writes to Kyverno's groups, and the pod is locked down; two replicas roll one at a
  time, spread over nodes, with a budget that keeps one; the leader-election Role grants the
  operator exactly create, and get and update of its one Lease.
- manifests/runner: the catalogue's runner account in ``mcp`` is granted exactly what the
  catalogue's steps declare (``@action(..., access=...)``), scoped to ``mcp``, Argo CD's
  Applications by name, and read-only Kyverno evidence.
- manifests/grafana: the dashboard queries only metrics the operator defines, and each query
  parses in a real Prometheus.
- Dockerfile: slim, non-root, runs ``mcp-remediator run``, with the uid the Deployment uses.

promtool, amtool, prometheus and kubectl are required: a missing binary fails the test.
(`make deps` installs the first three from Debian; kubectl comes with the machine image.)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from fixtures.daemons import free_port, http_ok, require_binary, start_daemon
from mcp_remediator.actions import REGISTRY
from mcp_remediator.actions.workloads import RolloutRestartParams
from mcp_remediator.kube import policy_inputs, refusals
from mcp_remediator.kube.client import KINDS
from mcp_remediator.metrics import OperatorMetrics
from mcp_remediator.models import GROUP, REMEDIATIONS, RUNBOOKS
from mcp_remediator.settings import SECRET_SETTINGS, Settings, env_var_name
from mcp_remediator.testing import authz
from mcp_remediator.testing.emulator import ApiServerEmulator

ROOT = Path(__file__).parents[2]
MANIFESTS = ROOT / "manifests"
PROMETHEUS = MANIFESTS / "prometheus"
NAMESPACE = "mcp-remediator"
# The Lease the replicas elect their leader through (MCP_LEASE_NAME's default).
LEASE = "mcp-remediator"
LEADER_ELECTION = "mcp-remediator-leader-election"
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
READ_VERBS = {"get", "list", "watch"}


def no_write_group(group: str) -> bool:
    """Kyverno's API groups (any ``*kyverno.io``, ``wgpolicyk8s.io``, ``openreports.io``) and
    the admission webhooks' group: no role of ours may write to them."""
    return refusals.is_kyverno_group(group) or group == refusals.WEBHOOK_GROUP


def kubectl() -> str:
    """kubectl, whose built-in kustomize builds the manifests; part of the machine image."""
    path = shutil.which("kubectl")
    if path is None:
        raise RuntimeError(
            "kubectl is not installed: it builds manifests/default (`kubectl kustomize`); "
            "install a recent kubectl (tested with 1.32 and its kustomize v5.5)"
        )
    return path


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)


# -- RBAC needs: (API group, resource, verb); the actions' come from the registry --------

Need = tuple[str, str, str]


def needs(api_version: str, resources: list[str], verbs: list[str]) -> set[Need]:
    group = refusals.api_group(api_version)
    return {(group, resource, verb) for resource in resources for verb in verbs}


def kind_needs(kinds: list[str], verbs: list[str]) -> set[Need]:
    return set().union(*(needs(KINDS[k].api_version, [KINDS[k].plural], verbs) for k in kinds))


MCP = f"{GROUP}/v1"

# What each action declares with ``@action(..., access=[...])``.
ACTION_NEEDS: dict[str, set[Need]] = {name: set(spec.grants()) for name, spec in REGISTRY.items()}

FRAMEWORK_NEEDS: dict[str, set[Need]] = {
    "kopf watches and finalizers": needs(MCP, [RUNBOOKS, REMEDIATIONS], ["list", "watch", "patch"])
    | needs("apiextensions.k8s.io/v1", ["customresourcedefinitions"], ["list", "watch"]),
    "runbook validation": needs(MCP, [f"{RUNBOOKS}/status"], ["patch"]),
    "engine": needs(MCP, [RUNBOOKS, REMEDIATIONS], ["get"])
    | needs(MCP, [REMEDIATIONS], ["create"])
    | needs(MCP, [f"{REMEDIATIONS}/status"], ["patch"]),
    "events": kind_needs(["Event"], ["create"]),
    "receiver": needs(MCP, [RUNBOOKS], ["get", "list"])
    | needs(MCP, [REMEDIATIONS], ["get", "list", "create"])
    | needs(MCP, [f"{REMEDIATIONS}/status", f"{RUNBOOKS}/status"], ["patch"]),
    "ttl of finished remediations": needs(MCP, [REMEDIATIONS], ["delete"]),
    "acting as a runbook's service account": needs("v1", ["serviceaccounts"], ["get"])
    | needs("v1", ["serviceaccounts"], ["impersonate"]),
    # ConfigMaps that Kyverno policies read are refused: the policies, listed read-only.
    "refusal layer": {
        (group, plural, "list")
        for group, plurals in policy_inputs.LISTED.items()
        for plural in plurals
    },
}
RUNNER = "mcp-remediator-runner"
CATALOGUE_NAMESPACE = "mcp"
ARGOCD_NAMESPACE = "argocd"


def step_needs(step: dict[str, Any]) -> set[Need]:
    """What one catalogue step needs: its action's declared access, less the Secret read of
    a step that names no Secret (the catalogue's namespace is trusted: it uses the
    operator-level credentials)."""
    found = set(REGISTRY[step["action"]].grants())
    if not any(key.endswith("SecretRef") for key in _keys(step.get("params") or {})):
        found.discard(("", "secrets", "get"))
    return found


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)


def catalogue_steps() -> list[dict[str, Any]]:
    steps = []
    for path in sorted((MANIFESTS / "runbooks").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "McpRunbook":
                steps.extend(doc["spec"]["steps"])
    return steps


def granted(role: dict[str, Any]) -> set[Need]:
    return {
        (group, resource, verb)
        for rule in role.get("rules", [])
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


# -- the kustomize build ------------------------------------------------------------------


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    result = run(kubectl(), "kustomize", str(MANIFESTS / "default"))
    assert result.returncode == 0, f"kubectl kustomize manifests/default failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def roles(objs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (o for o in objs if o["kind"] in ("Role", "ClusterRole"))


@pytest.fixture(scope="module")
def runner() -> list[dict[str, Any]]:
    result = run(kubectl(), "kustomize", str(MANIFESTS / "runner"))
    assert result.returncode == 0, f"kubectl kustomize manifests/runner failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def test_every_object_parses_and_is_named_and_placed(built: list[dict[str, Any]]) -> None:
    kinds = sorted(o.get("kind", "?") for o in built)
    for obj in built:
        assert obj.get("apiVersion") and obj.get("kind"), obj
        meta = obj.get("metadata") or {}
        assert meta.get("name"), f"{obj['kind']} without metadata.name"
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, f"{obj['kind']}/{meta['name']} is cluster-scoped"
        else:
            assert meta.get("namespace") == NAMESPACE, f"{obj['kind']}/{meta['name']}"
    for kind in (
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ):
        assert kind in kinds, f"manifests/default builds no {kind}"


def test_the_build_installs_exactly_the_generated_crds(built: list[dict[str, Any]]) -> None:
    files = {
        p.name: yaml.safe_load(p.read_text())
        for p in (ROOT / "crds").glob("*.yaml")
        if p.name != "kustomization.yaml"
    }
    in_build = [o for o in built if o["kind"] == "CustomResourceDefinition"]
    assert sorted(o["metadata"]["name"] for o in in_build) == sorted(
        f["metadata"]["name"] for f in files.values()
    )
    for crd in in_build:
        assert crd == files[f"{crd['spec']['group']}_{crd['spec']['names']['plural']}.yaml"]


# -- RBAC ---------------------------------------------------------------------------------


def test_declared_access_covers_what_the_params_can_target() -> None:
    """Each declaration, checked against the code's own list of targets where there is one."""
    workload_kinds = list(get_args(RolloutRestartParams.model_fields["kind"].annotation))
    assert kind_needs(workload_kinds, ["get", "list", "patch"]) <= ACTION_NEEDS["rolloutRestart"]
    assert (
        kind_needs(Settings().patch_allowed_kinds, ["get", "patch"])
        <= ACTION_NEEDS["patchResource"]
    )
    # These talk HTTP to Prometheus, module endpoints or a webhook: of the Kubernetes API
    # they only read the Secret a step names (`*SecretRef`), by name.
    for name in ("httpHealthCheck", "httpRequest", "prometheusQuery", "prometheusVerify", "notify"):
        assert ACTION_NEEDS[name] == {("", "secrets", "get")}, name


def test_no_action_declares_a_write_on_kyverno_or_admission_webhooks() -> None:
    for name, spec in REGISTRY.items():
        for access in spec.access:
            if no_write_group(access.group):
                writes = set(access.verbs) - READ_VERBS
                assert not writes, f"{name} declares {sorted(writes)} on {access.group}"


@pytest.mark.parametrize("who", sorted(FRAMEWORK_NEEDS), ids=lambda who: who.replace(" ", "-"))
def test_the_cluster_role_grants_what_the_framework_needs(
    built: list[dict[str, Any]], who: str
) -> None:
    required = FRAMEWORK_NEEDS[who]
    have = granted(one(built, "ClusterRole", "mcp-remediator"))
    assert not sorted(required - have), f"{who} lacks {sorted(required - have)}"


def test_the_cluster_role_grants_nothing_beyond_those_needs(built: list[dict[str, Any]]) -> None:
    needed = set().union(*FRAMEWORK_NEEDS.values())
    extra = granted(one(built, "ClusterRole", "mcp-remediator")) - needed
    assert not extra, f"granted but needed by no framework part: {sorted(extra)}"


def test_the_operator_itself_cannot_touch_what_steps_touch(built: list[dict[str, Any]]) -> None:
    """Steps act as runner accounts: the operator's own role reaches no workload, ConfigMap,
    Secret or Application, only lists Kyverno's policies (the refusal layer: which
    ConfigMaps they read), and impersonates no user or group."""
    have = granted(one(built, "ClusterRole", "mcp-remediator"))
    step_resources = {r for spec in REGISTRY.values() for _, r, _ in spec.grants()}
    touched = {g for g in have if g[1] in step_resources}
    assert touched <= FRAMEWORK_NEEDS["refusal layer"], sorted(touched)
    assert not {g for g in have if g[1] in ("users", "groups", "uids", "userextras")}
    assert {g for g in have if g[2] == "impersonate"} == {("", "serviceaccounts", "impersonate")}


def test_the_runner_grants_exactly_what_the_catalogue_steps_need(
    runner: list[dict[str, Any]],
) -> None:
    needed = set().union(*(step_needs(step) for step in catalogue_steps()))
    have = set().union(*(granted(role) for role in roles(runner)))
    assert not sorted(needed - have), f"the runner lacks {sorted(needed - have)}"
    assert not sorted(have - needed), (
        f"granted to the runner, needed by no step: {sorted(have - needed)}"
    )


def test_the_runner_is_bound_in_its_namespaces_only(runner: list[dict[str, Any]]) -> None:
    account = one(runner, "ServiceAccount", RUNNER)
    assert account["metadata"]["namespace"] == CATALOGUE_NAMESPACE
    subject = {"kind": "ServiceAccount", "name": RUNNER, "namespace": CATALOGUE_NAMESPACE}
    bindings = [o for o in runner if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert {o["metadata"].get("namespace") for o in bindings} == {
        CATALOGUE_NAMESPACE,
        ARGOCD_NAMESPACE,
        None,
    }
    for binding in bindings:
        assert binding["subjects"] == [subject]
    # The cluster-wide binding is read-only and reaches cluster-scoped Kyverno kinds only.
    cluster = one(runner, "ClusterRole")
    assert {(g, r) for g, r, _ in granted(cluster)} == {
        ("kyverno.io", "clusterpolicies"),
        ("policies.kyverno.io", "validatingpolicies"),
        ("policies.kyverno.io", "imagevalidatingpolicies"),
        ("wgpolicyk8s.io", "clusterpolicyreports"),
        ("openreports.io", "clusterreports"),
    }
    assert {v for _, _, v in granted(cluster)} <= READ_VERBS
    # Argo CD: only the catalogue's Applications, by name.
    argocd = next(o for o in roles(runner) if o["metadata"].get("namespace") == ARGOCD_NAMESPACE)
    for rule in argocd["rules"]:
        assert rule.get("resourceNames"), rule


def test_the_operator_runs_with_its_cluster_role(built: list[dict[str, Any]]) -> None:
    binding = one(built, "ClusterRoleBinding", "mcp-remediator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "mcp-remediator",
    }
    pod = one(built, "Deployment", "mcp-remediator")["spec"]["template"]["spec"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}
    ]
    one(built, "ServiceAccount", pod["serviceAccountName"])


def test_the_leader_election_role_grants_one_lease_only(built: list[dict[str, Any]]) -> None:
    """Create (which cannot name the Lease), and get and update of the Lease by name: what a
    candidate needs to read it, take it and renew it, and no other Lease."""
    role = one(built, "Role", LEADER_ELECTION)
    assert role["metadata"]["namespace"] == NAMESPACE
    rules = sorted(
        (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r.get("resourceNames", ())), v)
        for r in role["rules"]
        for v in r["verbs"]
    )
    leases = (("coordination.k8s.io",), ("leases",))
    assert rules == [
        (*leases, (), "create"),
        (*leases, (LEASE,), "get"),
        (*leases, (LEASE,), "update"),
    ]
    # ... and nothing about Leases anywhere else.
    others = [o for o in roles(built) if o is not role]
    assert not [g for o in others for g in granted(o) if g[0] == "coordination.k8s.io"]


def test_the_leader_election_role_is_bound_to_the_operator(built: list[dict[str, Any]]) -> None:
    binding = one(built, "RoleBinding", LEADER_ELECTION)
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": LEADER_ELECTION,
    }
    pod = one(built, "Deployment", "mcp-remediator")["spec"]["template"]["spec"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}
    ]


def test_rbac_lets_the_operator_take_its_lease_and_no_other(built: list[dict[str, Any]]) -> None:
    """The built RBAC, decided by the emulator's RBAC authorizer as kube-apiserver would."""
    em = ApiServerEmulator()
    em.register_builtins()
    em.apply([o for o in built if o["apiVersion"].startswith("rbac.authorization.k8s.io/")])
    operator = authz.UserInfo(
        authz.service_account_username(NAMESPACE, "mcp-remediator"),
        (*authz.service_account_groups(NAMESPACE), authz.AUTHENTICATED),
    )

    def can(verb: str, name: str = "", namespace: str = NAMESPACE) -> bool:
        lease = {"group": "coordination.k8s.io", "namespace": namespace, "name": name}
        return em.can(operator, verb, "leases", **lease)

    assert can("create") and can("get", LEASE) and can("update", LEASE)
    assert not can("get", "other") and not can("update", "other")
    assert not can("create", namespace="default") and not can("get", LEASE, "default")
    for verb in ("list", "watch", "patch", "delete"):
        assert not can(verb, LEASE), verb


def test_no_role_writes_to_kyverno_or_admission_webhooks(
    built: list[dict[str, Any]], runner: list[dict[str, Any]]
) -> None:
    for role in roles(built + runner):
        for rule in role.get("rules", []):
            if any(no_write_group(group) for group in rule.get("apiGroups", [])):
                writes = set(rule["verbs"]) - READ_VERBS
                assert not writes, f"{role['metadata']['name']} may {writes} on {rule}"


def test_no_role_uses_wildcards(built: list[dict[str, Any]], runner: list[dict[str, Any]]) -> None:
    for role in roles(built + runner):
        for rule in role.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), f"{role['metadata']['name']}: {rule}"
            assert "nonResourceURLs" not in rule, f"{role['metadata']['name']}: {rule}"


def test_every_rbac_rule_says_who_needs_it() -> None:
    folders = ("rbac", "runner", "tenant")
    for path in sorted(p for folder in folders for p in (MANIFESTS / folder).glob("*.yaml")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.lstrip().startswith("- apiGroups:"):
                above = lines[number - 1].strip()
                assert above.startswith("#"), f"{path.name}:{number + 1}: rule without a comment"


@pytest.mark.parametrize("plural", [RUNBOOKS, REMEDIATIONS])
def test_users_get_editor_and_viewer_roles(built: list[dict[str, Any]], plural: str) -> None:
    kind = plural.removeprefix("mcp").removesuffix("s")
    editor = one(built, "ClusterRole", f"mcp-remediator-mcp{kind}-editor")
    viewer = one(built, "ClusterRole", f"mcp-remediator-mcp{kind}-viewer")
    assert editor["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    editing = granted(editor)
    assert {(GROUP, plural, v) for v in ("create", "update", "patch", "delete")} <= editing
    assert {(GROUP, plural, v) for v in READ_VERBS} == {
        g for g in granted(viewer) if g[1] == plural
    }
    # Status is the operator's record: users read it and never write it.
    for role in (editor, viewer):
        assert {v for g, r, v in granted(role) if r == f"{plural}/status"} == {"get"}
        assert {r for g, r, v in granted(role)} == {plural, f"{plural}/status"}


# -- the operator's pod -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pod_spec(built: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(built, "Deployment", "mcp-remediator")["spec"]["template"]["spec"]
    return spec


def test_the_pod_is_locked_down(pod_spec: dict[str, Any]) -> None:
    pod_security = pod_spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] > 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod_spec.get("hostNetwork") and not pod_spec.get("hostPID")
    for container in pod_spec["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert not security.get("privileged")
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), bound


def test_the_pod_knows_its_name_and_namespace(pod_spec: dict[str, Any]) -> None:
    """The image's uid has no passwd entry: the replica's identity comes from POD_ID, the pod
    name; the Lease's namespace defaults to POD_NAMESPACE, the pod's own."""
    (container,) = pod_spec["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_two_replicas_roll_one_at_a_time_on_different_nodes(built: list[dict[str, Any]]) -> None:
    """Every replica receives alerts: an update adds a pod before it removes one, and the
    scheduler prefers to keep the two on different nodes (preferred: one node still runs)."""
    spec = one(built, "Deployment", "mcp-remediator")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod_labels = spec["template"]["metadata"]["labels"]
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    (preferred,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    term = preferred["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"] == {"matchLabels": spec["selector"]["matchLabels"]}
    assert term["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 30


def test_the_disruption_budget_keeps_one_replica(built: list[dict[str, Any]]) -> None:
    deployment = one(built, "Deployment", "mcp-remediator")
    budget = one(built, "PodDisruptionBudget", "mcp-remediator")["spec"]
    assert budget["minAvailable"] == 1 and "maxUnavailable" not in budget
    assert budget["minAvailable"] < deployment["spec"]["replicas"], "a drain would hang"
    assert budget["selector"] == deployment["spec"]["selector"]


def test_kopf_peering_is_gone(built: list[dict[str, Any]]) -> None:
    """MCP_PEERING fails the operator at start-up: leader election replaced Kopf's peering."""
    assert "MCP_PEERING" not in yaml.safe_dump_all(built)
    for path in sorted(MANIFESTS.rglob("*")):
        if path.is_file():
            assert "MCP_PEERING" not in path.read_text(), path


def test_probes_ask_the_receiver(pod_spec: dict[str, Any]) -> None:
    (container,) = pod_spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": Settings().receiver_port}
    liveness, readiness = container["livenessProbe"]["httpGet"], container["readinessProbe"]
    assert (liveness["path"], ports[liveness["port"]]) == ("/healthz", 8080)
    assert (readiness["httpGet"]["path"], ports[readiness["httpGet"]["port"]]) == ("/readyz", 8080)


def test_secrets_come_from_secrets_and_the_token_from_a_mounted_file(
    pod_spec: dict[str, Any],
) -> None:
    (container,) = pod_spec["containers"]
    env = {e["name"]: e for e in container["env"]}
    secret_vars = {env_var_name(field) for field in SECRET_SETTINGS}
    for name in secret_vars & set(env):
        assert "secretKeyRef" in env[name]["valueFrom"], f"{name} must come from a Secret"
    token_file = Path(env["MCP_RECEIVER_TOKEN_FILE"]["value"])
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    mounts = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == token_file.parent]
    assert len(mounts) == 1 and mounts[0]["readOnly"] is True
    secret = volumes[mounts[0]["name"]]["secret"]
    assert secret["secretName"] == "mcp-remediator-receiver-token"
    assert {"key": "token", "path": token_file.name} in secret["items"]
    assert not secret.get("optional"), "without a token the receiver must not start"


def test_the_settings_config_map_holds_valid_non_secret_settings(
    built: list[dict[str, Any]], pod_spec: dict[str, Any]
) -> None:
    (container,) = pod_spec["containers"]
    (source,) = container["envFrom"]
    config = one(built, "ConfigMap", source["configMapRef"]["name"])["data"]
    known = {env_var_name(field) for field in Settings.model_fields}
    secret = {env_var_name(field) for field in SECRET_SETTINGS}
    assert set(config) <= known - secret, sorted(set(config) - (known - secret))
    settings = Settings.from_env(config)
    assert settings.receiver_port == 8080 and settings.dry_run is False


def test_service_monitor_policy_and_budget_select_the_operator(
    built: list[dict[str, Any]],
) -> None:
    deployment = one(built, "Deployment", "mcp-remediator")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selects = deployment["spec"]["selector"]["matchLabels"]
    assert selects.items() <= pod_labels.items()
    service = one(built, "Service", "mcp-remediator")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    monitor = one(built, "ServiceMonitor", "mcp-remediator")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    budget = one(built, "PodDisruptionBudget", "mcp-remediator")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    policy = one(built, "NetworkPolicy", "mcp-remediator")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_network_policy_admits_only_the_monitoring_namespace(
    built: list[dict[str, Any]],
) -> None:
    spec = one(built, "NetworkPolicy", "mcp-remediator")["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    for rule in spec["ingress"]:
        assert rule["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]
        assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    egress_ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
    assert {53, 443, 6379, 9090} <= egress_ports
    assert all(rule.get("ports") for rule in spec["egress"]), "egress to every port"


def test_samples_pass_lint_and_build() -> None:
    result = run(sys.executable, "-m", "mcp_remediator", "lint", str(MANIFESTS / "samples"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 checked, 0 invalid" in result.stdout
    built = run(kubectl(), "kustomize", str(MANIFESTS / "samples"))
    assert built.returncode == 0, built.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(built.stdout) if d)
    assert kinds == ["McpRemediation", "McpRunbook"]


# -- Prometheus rules ---------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "rules.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


ALERTS = [rule["alert"] for rule in alert_rules()]


def test_the_guides_alerts_are_all_there() -> None:
    assert {
        "RedisDown",
        "RedisHighMemoryUsage",
        "RedisLowCacheHitRatio",
        "RedisHighLatency",
        "McpPromiseRejectionRateHigh",
        "McpWebSocketNoConnections",
        "McpWebSocketEventsNotPublished",
        "McpApiAuthErrors",
        "McpArgoCdAppOutOfSync",
        "McpKyvernoAdmissionBlocked",
        "McpHighCpuUsage",
        "McpHighMemoryUsage",
    } == set(ALERTS)


def test_promtool_accepts_the_rules_file_and_the_prometheus_rule(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    spec = yaml.safe_load((PROMETHEUS / "prometheusrule.yaml").read_text())["spec"]
    (tmp_path / "from-prometheusrule.yaml").write_text(yaml.safe_dump(spec))
    for path in (PROMETHEUS / "rules.yaml", tmp_path / "from-prometheusrule.yaml"):
        result = run(promtool, "check", "rules", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = {"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "rate(redis_up[5m]"}]}]}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    assert run(
        require_binary("promtool"), "check", "rules", str(tmp_path / "broken.yaml")
    ).returncode


def test_the_rules_file_and_the_prometheus_rule_carry_the_same_groups() -> None:
    rule = yaml.safe_load((PROMETHEUS / "prometheusrule.yaml").read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((PROMETHEUS / "rules.yaml").read_text()), (
        "prometheusrule.yaml's spec must equal rules.yaml: copy the groups over"
    )


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_says_what_it_is_and_how_severe(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
    assert rule["annotations"]["runbook_url"].startswith("https://")


def test_promtool_unit_tests_pass() -> None:
    result = run(require_binary("promtool"), "test", "rules", "tests.yaml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def promtool_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load((PROMETHEUS / "tests.yaml").read_text())["tests"]
    return tests


@pytest.mark.parametrize("alert", ALERTS)
def test_unit_tests_expect_each_alert_firing_with_its_labels_and_silent_below(alert: str) -> None:
    checks = [c for t in promtool_tests() for c in t["alert_rule_test"] if c["alertname"] == alert]
    firing = [a for c in checks for a in c["exp_alerts"]]
    assert firing, f"no test case expects {alert} to fire"
    assert any(not c["exp_alerts"] for c in checks), f"no test case expects {alert} silent"
    for expected in firing:
        # The runbooks target `namespace`; per-workload alerts also carry the workload.
        assert "namespace" in expected["exp_labels"], expected
    rule = next(r for r in alert_rules() if r["alert"] == alert)
    for label in ("deployment", "module"):
        if label in rule["expr"]:
            assert all(label in e["exp_labels"] for e in firing), f"{alert} lacks {label}"


@pytest.mark.parametrize("alert", ALERTS)
def test_unit_tests_fail_when_an_alert_never_fires(tmp_path: Path, alert: str) -> None:
    """Mutation: an alert whose expression matches nothing must make promtool fail."""
    rules = yaml.safe_load((PROMETHEUS / "rules.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = "vector(1) == 2"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests.yaml").write_text((PROMETHEUS / "tests.yaml").read_text())
    result = run(require_binary("promtool"), "test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert f"alertname: {alert}," in result.stdout + result.stderr


# -- Alertmanager -------------------------------------------------------------------------

ALERTMANAGER_CONFIG = PROMETHEUS / "alertmanager-receiver.yaml"


def test_amtool_accepts_the_receiver_config() -> None:
    result = run(require_binary("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_rejects_a_token_given_twice(tmp_path: Path) -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    (receiver,) = [r for r in config["receivers"] if r["name"] == "mcp-remediator"]
    webhook = receiver["webhook_configs"][0]
    webhook["http_config"]["authorization"]["credentials"] = "inline-too"
    (tmp_path / "am.yaml").write_text(yaml.safe_dump(config))
    assert run(require_binary("amtool"), "check-config", str(tmp_path / "am.yaml")).returncode


def test_the_route_posts_to_the_operators_service_with_a_token_file(
    built: list[dict[str, Any]],
) -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    (receiver,) = [r for r in config["receivers"] if r["name"] == "mcp-remediator"]
    (webhook,) = receiver["webhook_configs"]
    service = one(built, "Service", "mcp-remediator")
    meta, (port,) = service["metadata"], service["spec"]["ports"]
    assert webhook["url"] == f"http://{meta['name']}.{meta['namespace']}.svc:{port['port']}/alerts"
    assert webhook["send_resolved"] is True
    authorization = webhook["http_config"]["authorization"]
    assert authorization["type"] == "Bearer"
    assert authorization["credentials_file"].startswith("/")
    assert "credentials" not in authorization


@pytest.mark.parametrize("alert", ALERTS)
def test_every_alert_is_routed_to_the_operator(alert: str) -> None:
    result = run(
        require_binary("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"alertname={alert}",
        "namespace=mcp",
        "severity=warning",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # ... and, with `continue`, still to the routes that handled it before.
    assert result.stdout.strip() == "mcp-remediator,default", result.stdout


def test_other_alerts_do_not_reach_the_operator() -> None:
    result = run(
        require_binary("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        "alertname=KubeNodeNotReady",
    )
    assert result.stdout.strip() == "default", result.stdout + result.stderr


# -- Grafana dashboard --------------------------------------------------------------------

DASHBOARD = MANIFESTS / "grafana" / "mcp-remediator-dashboard.json"


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def defined_series() -> dict[str, str]:
    """Every series name the operator's metrics expose, mapped to its metric family."""
    suffixes = {
        "counter": ["_total", "_created"],
        "histogram": ["_bucket", "_sum", "_count", "_created"],
        "gauge": [""],
    }
    return {
        family.name + suffix: family.name
        for family in OperatorMetrics().registry.collect()
        for suffix in suffixes[family.type]
    }


def test_the_dashboard_queries_only_metrics_the_operator_defines() -> None:
    queried = {
        name for expr in dashboard_queries() for name in re.findall(r"\bmcp_[a-z0-9_]+", expr)
    }
    defined = defined_series()
    assert not queried - set(defined), f"not defined by the operator: {queried - set(defined)}"
    # ... and every metric the operator defines has a panel.
    assert {defined[name] for name in queried} == set(defined.values())


def test_the_dashboard_queries_parse_in_prometheus(tmp_path: Path) -> None:
    prometheus = require_binary("prometheus")
    (tmp_path / "prometheus.yml").write_text("global: {}\n")
    port = free_port()
    daemon = start_daemon(
        "prometheus",
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        port=port,
        log_dir=tmp_path,
        ready=http_ok(f"http://127.0.0.1:{port}/-/ready"),
    )
    try:
        for expr in dashboard_queries():
            query = expr.replace("$namespace", ".*")
            url = f"{daemon.url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert json.load(response)["status"] == "success", expr
    finally:
        daemon.stop()


# -- the image ----------------------------------------------------------------------------


def test_the_image_is_slim_non_root_and_runs_the_operator(pod_spec: dict[str, Any]) -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    uid, _, gid = users[-1].partition(":")
    assert int(uid) > 0 and int(gid or uid) > 0
    assert int(uid) == pod_spec["securityContext"]["runAsUser"]
    assert 'ENTRYPOINT ["mcp-remediator"]' in lines and 'CMD ["run"]' in lines
    assert any(re.search(r"pip install \.$", line) for line in lines)
    # Everything `pip install .` reads is sent in the build context.
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in ("pyproject.toml", "README.md", "operator/"):
        assert f"!{needed}" in ignored, f".dockerignore leaves out {needed}"
