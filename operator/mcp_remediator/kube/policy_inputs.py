"""ConfigMaps that Kyverno policies read: policy inputs, refused like the policies.

A ClusterPolicy that takes its allowed registries from a ConfigMap (``context.configMap``)
is relaxed as surely by editing that ConfigMap as by editing the policy, and the ConfigMap
often lives outside Kyverno's namespace. So a write to a ConfigMap that any Kyverno policy
reads is refused with ``ManualKyvernoOverrideRefused``, like a write to the policy.

What counts as reading (``inputs_of``), anywhere in a policy's spec:

* classic ``ClusterPolicy``/``Policy`` (``kyverno.io``): ``context[].configMap {name,
  namespace}`` wherever a context is (rules, foreach); without a namespace Kyverno reads
  the policy's own namespace (a Policy's; older Kyverno: ``default``) or ``default`` (a
  ClusterPolicy's), and both are counted. ``context[].apiCall.urlPath`` naming a ConfigMap
  (``/api/v1/namespaces/<ns>/configmaps/<name>``) or all of a namespace's;
* Kyverno 1.17's CEL policies (``policies.kyverno.io``: ValidatingPolicy,
  ImageValidatingPolicy, MutatingPolicy, GeneratingPolicy, DeletingPolicy and their
  Namespaced variants) have no ``context``: they read with the CEL resource library,
  ``resource.get("v1", "configmaps", <ns>, <name>)`` or ``resource.List("v1", "configmaps",
  <ns>)``, in any expression.

A part the policy computes (a ``{{ request.namespace }}`` variable, a CEL expression)
matches anything: when the layer cannot tell which ConfigMap is read, it assumes this one.

The policies are listed with the operator's own identity (its ClusterRole grants ``list``
on exactly these kinds, read-only; a runner account need not read policies for the
refusal to hold), at most every ``TTL_SECONDS``; a kind the API does not serve (404: that
Kyverno is not installed, or too old for CEL policies) has no policies. Any other failure
refuses the write (fail closed): the layer cannot tell, so it does not allow. Failures are
not cached: the next write tries again.

The listing functions are handed in (``kube.client`` passes its own), so that this module
needs nothing of the client.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mcp_remediator.errors import Refused
from mcp_remediator.kube.refusals import KYVERNO, kyverno_message
from mcp_remediator.settings import Settings

# (apiVersion, plural, kind) of the classic policies: kyverno.io/v1 since Kyverno 1.0.
CLASSIC_KINDS = (
    ("kyverno.io/v1", "clusterpolicies", "ClusterPolicy"),
    ("kyverno.io/v1", "policies", "Policy"),
)
# The CEL policies' group; its version (v1 since Kyverno 1.17, v1alpha1/v1beta1 before) is
# the one the API server prefers (API discovery).
CEL_GROUP = "policies.kyverno.io"
CEL_KINDS = (
    ("validatingpolicies", "ValidatingPolicy"),
    ("namespacedvalidatingpolicies", "NamespacedValidatingPolicy"),
    ("imagevalidatingpolicies", "ImageValidatingPolicy"),
    ("namespacedimagevalidatingpolicies", "NamespacedImageValidatingPolicy"),
    ("mutatingpolicies", "MutatingPolicy"),
    ("namespacedmutatingpolicies", "NamespacedMutatingPolicy"),
    ("generatingpolicies", "GeneratingPolicy"),
    ("namespacedgeneratingpolicies", "NamespacedGeneratingPolicy"),
    ("deletingpolicies", "DeletingPolicy"),
    ("namespaceddeletingpolicies", "NamespacedDeletingPolicy"),
)
# What the operator's ClusterRole must let it list (manifests/rbac/role.yaml): group → plurals.
LISTED: dict[str, tuple[str, ...]] = {
    "kyverno.io": tuple(plural for _, plural, _ in CLASSIC_KINDS),
    CEL_GROUP: tuple(plural for plural, _ in CEL_KINDS),
}

ANY = re.compile(".*", re.DOTALL)
_VARIABLE = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_HOLE = "\x00"  # a computed part, while a path is parsed
_CONFIG_MAPS_URL = re.compile(
    r"/api/v1/(?:namespaces/(?P<ns>[^/]+)/)?configmaps(?:/(?P<name>[^/]+))?/?", re.IGNORECASE
)
_RESOURCE_CALL = re.compile(r"\bresource\s*\.\s*(get|list)\s*\(", re.IGNORECASE)
_STRING_LITERAL = re.compile(r"\"([^\"\\]*)\"|'([^'\\]*)'")

# Lists every object of (apiVersion, plural) in all namespaces; None when not served.
Lister = Callable[[str, str], Awaitable[list[dict[str, Any]] | None]]
# The version of an API group the server prefers; None when the group is not served.
Discoverer = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True)
class PolicyInput:
    """ConfigMaps one policy reads: patterns over namespace and name (``ANY`` for what the
    policy computes)."""

    policy: str  # "ClusterPolicy require-registry", "Policy team-a/limits"
    how: str  # "context.configMap", "apiCall", "resource.get", "resource.list"
    namespace: re.Pattern[str]
    name: re.Pattern[str]

    def matches(self, namespace: str, name: str) -> bool:
        return bool(self.namespace.fullmatch(namespace) and self.name.fullmatch(name))


def _pattern(text: str | None) -> re.Pattern[str]:
    """A Kyverno string as a pattern: its ``{{ variables }}`` (and computed holes) match
    anything, the rest itself; ``None`` or an empty string matches anything."""
    if not text or not text.strip():
        return ANY
    parts = re.split(f"{_VARIABLE.pattern}|{_HOLE}", text.strip(), flags=re.DOTALL)
    return re.compile(".*".join(re.escape(part) for part in parts), re.DOTALL)


def _dicts(value: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        yield value
        for item in value.values():
            yield from _dicts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _dicts(item)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _api_call(policy: str, url_path: str) -> Iterator[PolicyInput]:
    """The ConfigMaps an ``apiCall.urlPath`` reads, if it reads any."""
    path = _VARIABLE.sub(_HOLE, url_path).split("?", 1)[0].strip()
    if "configmaps" not in path.lower():
        return
    found = _CONFIG_MAPS_URL.fullmatch(path)
    if found is None:  # it reads ConfigMaps in a way this parser does not follow: any
        yield PolicyInput(policy, "apiCall", ANY, ANY)
        return
    yield PolicyInput(policy, "apiCall", _pattern(found["ns"]), _pattern(found["name"]))


def _arguments(text: str, start: int) -> list[str | None] | None:
    """The arguments of a CEL call whose ``(`` ends at ``start``: each a string literal's
    value, or ``None`` for anything computed; ``None`` when the call is not closed."""
    args: list[str | None] = []
    current: list[str] = []
    depth, i = 0, start
    while i < len(text):
        char = text[i]
        if char in "\"'":
            end = i + 1
            while end < len(text) and text[end] != char:
                end += 2 if text[end] == "\\" else 1
            current.append(text[i : end + 1])
            i = end + 1
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                args.append(_literal("".join(current)))
                return args
            depth -= 1
        elif char == "," and depth == 0:
            args.append(_literal("".join(current)))
            current = []
            i += 1
            continue
        current.append(char)
        i += 1
    return None


def _literal(raw: str) -> str | None:
    found = _STRING_LITERAL.fullmatch(raw.strip())
    if found is None:
        return None
    return found[1] if found[1] is not None else found[2]


def _cel_reads(policy: str, text: str) -> Iterator[PolicyInput]:
    """The ConfigMaps CEL ``resource.get``/``resource.List`` calls in ``text`` read."""
    for call in _RESOURCE_CALL.finditer(text):
        verb = call[1].lower()
        args = _arguments(text, call.end())
        if args is None or len(args) < (4 if verb == "get" else 3):
            continue  # not a call of the resource library (CEL would not compile it)
        version, resource = args[0], args[1]
        if resource is not None and resource.strip().lower() != "configmaps":
            continue
        if version is not None and version.strip().strip("/").lower() != "v1":
            continue  # ConfigMaps are served by the core group only
        name = args[3] if verb == "get" else None
        # A computed (or, for a list, empty: every namespace) part matches anything.
        yield PolicyInput(
            policy, f"resource.{verb}", _pattern(args[2]), ANY if name is None else _pattern(name)
        )


def inputs_of(kind: str, policy: Mapping[str, Any]) -> list[PolicyInput]:
    """Every ConfigMap ``policy`` (of ``kind``) reads, as patterns."""
    meta = policy.get("metadata") or {}
    own = str(meta.get("namespace") or "")
    label = f"{kind} {own}/{meta.get('name', '?')}" if own else f"{kind} {meta.get('name', '?')}"
    spec = policy.get("spec") or {}
    found: list[PolicyInput] = []
    for node in _dicts(spec):
        config_map = node.get("configMap")
        if isinstance(config_map, Mapping) and isinstance(config_map.get("name"), str):
            namespace = config_map.get("namespace")
            if isinstance(namespace, str) and namespace.strip():
                namespaces = [namespace]
            else:  # the policy's own namespace (a Policy's), or "default"
                namespaces = sorted({own, "default"} - {""})
            found.extend(
                PolicyInput(label, "context.configMap", _pattern(ns), _pattern(config_map["name"]))
                for ns in namespaces
            )
        call = node.get("apiCall")
        if isinstance(call, Mapping) and isinstance(call.get("urlPath"), str):
            found.extend(_api_call(label, call["urlPath"]))
    for text in _strings(spec):
        found.extend(_cel_reads(label, text))
    return found


class PolicyListError(Exception):
    """The policies could not be listed: which kind, and the API's answer."""


class PolicyInputs:
    """The ConfigMaps Kyverno's policies read, listed with the operator's identity and
    cached for ``TTL_SECONDS``; ``check`` refuses a write to one of them."""

    TTL_SECONDS = 10.0

    def __init__(
        self,
        list_fn: Lister,
        preferred_version: Discoverer,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._list = list_fn
        self._preferred_version = preferred_version
        self._clock = clock
        self._inputs: list[PolicyInput] = []
        self._read_at = float("-inf")
        self._lock: asyncio.Lock | None = None

    def _fresh(self) -> bool:
        return self._clock() - self._read_at < self.TTL_SECONDS

    async def current(self) -> list[PolicyInput]:
        """The inputs, read again when older than ``TTL_SECONDS`` (one read at a time: the
        checks waiting meanwhile share it); raises ``PolicyListError``."""
        if self._fresh():
            return self._inputs
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._fresh():
                self._inputs = await self._read()
                self._read_at = self._clock()
        return self._inputs

    async def _read(self) -> list[PolicyInput]:
        kinds = list(CLASSIC_KINDS)
        try:
            version = await self._preferred_version(CEL_GROUP)
        except Exception as exc:  # any failure: the caller refuses (fail closed)
            raise PolicyListError(f"discovering {CEL_GROUP}: {exc}") from exc
        if version:
            kinds += [(f"{CEL_GROUP}/{version}", plural, kind) for plural, kind in CEL_KINDS]
        answers = await asyncio.gather(
            *(self._list(api_version, plural) for api_version, plural, _ in kinds),
            return_exceptions=True,
        )
        found: list[PolicyInput] = []
        for (api_version, _, kind), answer in zip(kinds, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer  # cancelled: not an answer about the policies
                raise PolicyListError(f"listing {kind} ({api_version}): {answer}") from answer
            for policy in answer or []:
                found.extend(inputs_of(kind, policy))
        return found

    async def check(self, settings: Settings, namespace: str, name: str) -> None:
        """Raise ``Refused`` when a policy reads ConfigMap ``namespace/name``, or when the
        policies cannot be read (fail closed)."""
        try:
            inputs = await self.current()
        except PolicyListError as exc:
            raise Refused(
                KYVERNO,
                f"refused: cannot tell whether ConfigMap {namespace}/{name} is an input of a "
                f"Kyverno policy (context.configMap): {str(exc)[:400]}. A ConfigMap a policy "
                f"reads changes only through {settings.gitops_policy_path} and Argo CD, so "
                "no ConfigMap is written while the policies cannot be read (the operator's "
                "ClusterRole lists them: manifests/rbac/role.yaml)",
            ) from exc
        for item in inputs:
            if item.matches(namespace, name):
                what = (
                    f"writing ConfigMap {namespace}/{name}, which {item.policy} reads ({item.how}),"
                )
                raise Refused(KYVERNO, kyverno_message(settings, what))
