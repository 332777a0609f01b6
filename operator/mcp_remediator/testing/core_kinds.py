"""More of kube-apiserver's built-in kinds, and the defaults it gives some of them on create.

``register_builtins`` serves ``MORE_BUILTINS`` with its own list: the core kinds the operator
does not touch but clients create (ReplicationControllers, Nodes, PersistentVolumeClaims,
...), Jobs and CronJobs, Ingresses, PodDisruptionBudgets, HorizontalPodAutoscalers,
APIServices and a few cluster-scoped kinds, each in the one version kube-apiserver 1.32
prefers (a second served version would be a second store here). ``IN_CATEGORY_ALL`` are those
of them ``kubectl get all`` shows.

``create_defaults`` fills in, on an HTTP create, what kube-apiserver's defaulting (and, for a
Service, its ClusterIP allocator) would have put in a few kinds' bodies and what their
status starts as: a Service's ``clusterIP``, ``type``, ``sessionAffinity``, port protocols and
target ports and its empty ``loadBalancer`` status; a Namespace's ``kubernetes`` finalizer,
``kubernetes.io/metadata.name`` label and ``Active`` phase; a Pod's ``Pending`` phase and QoS
class. Anything a client sent is kept.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import random
from typing import Any

JsonDict = dict[str, Any]

# (apiVersion, plural, kind, namespaced, status subresource, short names), as _BUILTINS.
MORE_BUILTINS: list[tuple[str, str, str, bool, bool, list[str]]] = [
    ("v1", "replicationcontrollers", "ReplicationController", True, True, ["rc"]),
    ("v1", "nodes", "Node", False, True, ["no"]),
    ("v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, True, ["pvc"]),
    ("v1", "persistentvolumes", "PersistentVolume", False, True, ["pv"]),
    ("v1", "endpoints", "Endpoints", True, False, ["ep"]),
    ("v1", "limitranges", "LimitRange", True, False, ["limits"]),
    ("v1", "resourcequotas", "ResourceQuota", True, True, ["quota"]),
    ("v1", "podtemplates", "PodTemplate", True, False, []),
    ("batch/v1", "jobs", "Job", True, True, []),
    ("batch/v1", "cronjobs", "CronJob", True, True, ["cj"]),
    ("networking.k8s.io/v1", "ingresses", "Ingress", True, True, ["ing"]),
    ("networking.k8s.io/v1", "ingressclasses", "IngressClass", False, False, []),
    ("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True, False, ["netpol"]),
    ("discovery.k8s.io/v1", "endpointslices", "EndpointSlice", True, False, []),
    ("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", True, True, ["pdb"]),
    (
        "autoscaling/v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        True,
        True,
        ["hpa"],
    ),  # fmt: skip
    ("apiregistration.k8s.io/v1", "apiservices", "APIService", False, True, []),
    ("storage.k8s.io/v1", "storageclasses", "StorageClass", False, False, ["sc"]),
    ("scheduling.k8s.io/v1", "priorityclasses", "PriorityClass", False, False, ["pc"]),
]

# Of these, the ones in kube-apiserver's ``all`` category.
IN_CATEGORY_ALL = frozenset(
    {"replicationcontrollers", "jobs", "cronjobs", "horizontalpodautoscalers"}
)

# kube-apiserver's default --service-cluster-ip-range; .0 and .1 (the kubernetes Service)
# are never handed out.
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
NODE_PORTS = (30000, 32767)


# apps/v1's SetDefaults_*: the workload-level fields (not the pod template's).
_ROLLING = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
_WORKLOAD_DEFAULTS: dict[str, JsonDict] = {
    "Deployment": {"replicas": 1, "strategy": _ROLLING, "revisionHistoryLimit": 10,
                   "progressDeadlineSeconds": 600},
    "StatefulSet": {"replicas": 1, "podManagementPolicy": "OrderedReady",
                    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                    "revisionHistoryLimit": 10},
    "DaemonSet": {"updateStrategy": {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                  "revisionHistoryLimit": 10},
    "ReplicaSet": {"replicas": 1},
}  # fmt: skip


def create_defaults(api_version: str, kind: str, obj: JsonDict) -> JsonDict:
    """``obj`` (a body being created) with the defaults kube-apiserver would add."""
    if api_version == "apps/v1" and kind in _WORKLOAD_DEFAULTS:
        return _workload(obj, _WORKLOAD_DEFAULTS[kind])
    if api_version != "v1":
        return obj
    if kind == "Service":
        return _service(obj)
    if kind == "Namespace":
        return _namespace(obj)
    if kind == "Pod":
        return _pod(obj)
    return obj


def fold_string_data(api_version: str, kind: str, obj: JsonDict) -> JsonDict:
    """A Secret as the API server stores it: ``stringData`` is write-only, its entries are
    written into ``data`` (base64), overriding ``data``'s, and never returned."""
    if (api_version, kind) != ("v1", "Secret") or "stringData" not in obj:
        return obj
    result = dict(obj)
    plain = result.pop("stringData") or {}
    if isinstance(plain, dict) and plain:
        data = dict(result.get("data") or {})
        for key, value in plain.items():
            data[key] = base64.b64encode(str(value).encode()).decode("ascii")
        result["data"] = data
    return result


def _service(obj: JsonDict) -> JsonDict:
    result = copy.deepcopy(obj)
    spec = result.get("spec")
    spec = result["spec"] = dict(spec) if isinstance(spec, dict) else {}
    kind = spec.setdefault("type", "ClusterIP")
    if kind != "ExternalName":
        spec.setdefault("sessionAffinity", "None")
        if not spec.get("clusterIP"):
            spec["clusterIP"] = _cluster_ip()
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        if spec["clusterIP"] != "None":
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if kind in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if kind == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    ports = []
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port = dict(port)
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])
            if kind in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
                port["nodePort"] = random.randint(*NODE_PORTS)
        ports.append(port)
    if ports:
        spec["ports"] = ports
    result.setdefault("status", {"loadBalancer": {}})
    return result


_ALLOCATED = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")


def keep_allocated(api_version: str, kind: str, obj: JsonDict, old: JsonDict) -> JsonDict:
    """An update of a Service that leaves out what the server allocated (its cluster IPs,
    its ports' node ports) keeps them, as the real Service strategy does."""
    if (api_version, kind) != ("v1", "Service"):
        return obj
    spec, old_spec = obj.get("spec"), old.get("spec")
    if not isinstance(spec, dict) or not isinstance(old_spec, dict):
        return obj
    result = copy.deepcopy(obj)
    spec = result["spec"]
    for key in _ALLOCATED:
        if not spec.get(key) and old_spec.get(key):
            spec[key] = copy.deepcopy(old_spec[key])
    old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in old_spec.get("ports") or []
                 if isinstance(p, dict)}  # fmt: skip
    for port in spec.get("ports") or []:
        if isinstance(port, dict) and not port.get("nodePort"):
            before = old_ports.get((port.get("port"), port.get("protocol", "TCP"))) or {}
            if before.get("nodePort") and spec.get("type") in ("NodePort", "LoadBalancer"):
                port["nodePort"] = before["nodePort"]
    return result


def _cluster_ip() -> str:
    offset = random.randrange(2, SERVICE_CIDR.num_addresses - 1)
    return str(SERVICE_CIDR.network_address + offset)


def _workload(obj: JsonDict, defaults: JsonDict) -> JsonDict:
    """A workload's spec with the fields it leaves out set as apps/v1 defaults them (a
    strategy's type given without its parameters gets the parameters of that type only)."""
    result = copy.deepcopy(obj)
    spec = result.get("spec")
    if not isinstance(spec, dict):
        return result
    for key, value in defaults.items():
        given = spec.get(key)
        if given is None:
            spec[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(given, dict):
            if given.get("type", value.get("type")) == value.get("type"):
                for inner, inner_value in value.items():
                    given.setdefault(inner, copy.deepcopy(inner_value))
    return result


def _namespace(obj: JsonDict) -> JsonDict:
    result = copy.deepcopy(obj)
    meta = result.setdefault("metadata", {})
    name = meta.get("name")
    if name:
        labels = meta.get("labels")
        labels = meta["labels"] = dict(labels) if isinstance(labels, dict) else {}
        labels["kubernetes.io/metadata.name"] = name
    spec = result.get("spec")
    spec = result["spec"] = dict(spec) if isinstance(spec, dict) else {}
    spec.setdefault("finalizers", ["kubernetes"])
    result.setdefault("status", {"phase": "Active"})
    return result


def _pod(obj: JsonDict) -> JsonDict:
    result = copy.deepcopy(obj)
    spec = result.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    result.setdefault("status", {"phase": "Pending", "qosClass": qos_class(spec)})
    return result


def qos_class(spec: JsonDict) -> str:
    """A Pod's QoS class from its containers' requests and limits (cpu and memory)."""
    containers = [
        c for key in ("initContainers", "containers") for c in spec.get(key) or []
        if isinstance(c, dict)
    ]  # fmt: skip
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits") or {}, r.get("requests") or {}
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits[name]) != limits[name]:
                return "Burstable"
    return "Guaranteed"
